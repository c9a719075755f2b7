#!/usr/bin/env bash
# The project's test command (README "Set up"): installs what the tests need, then runs
# them. Safe to run again: every install step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust targets for the ARM64 reference fixture and the x86_64 port.
rustup target add aarch64-unknown-none x86_64-unknown-none >/dev/null

# Emulators (Debian packages). --no-install-recommends keeps the install small and
# avoids replacing an existing qemu-utils from another release.
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# Bochs with VMX runs the x86_64 port's guest; GRUB tools build its boot ISO.
command -v bochs >/dev/null || need+=(bochs bochsbios vgabios)
dpkg -s bochs-term >/dev/null 2>&1 || need+=(bochs-term)
command -v grub-mkrescue >/dev/null || need+=(grub-pc-bin grub-common)
command -v xorriso >/dev/null || need+=(xorriso)
command -v mformat >/dev/null || need+=(mtools)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Unit, integration and benchmark-smoke tests (benches run once on a small input).
cargo test --all-targets "$@"
