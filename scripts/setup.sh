#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: the rustup targets of the
# ARM64 reference workspace and of the x86_64 port (for the default toolchain, and for
# an installed nightly, which the nightly-pinned test workspace uses), and the
# emulators (Debian packages). Every step is skipped when already done; what is
# installed is said on stderr.
set -euo pipefail

say() { echo "setup: $*" >&2; }

targets=(aarch64-unknown-none x86_64-unknown-none)
rustup target add "${targets[@]}" >/dev/null
if rustup toolchain list | grep -q '^nightly'; then
  rustup target add --toolchain nightly "${targets[@]}" >/dev/null 2>&1 \
    || say "could not add ${targets[*]} to the nightly toolchain; the nightly-pinned test workspace will be skipped"
fi

# Emulators. --no-install-recommends keeps the install small and avoids replacing an
# existing qemu-utils from another release.
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
  say "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
