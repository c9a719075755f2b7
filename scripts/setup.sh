#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: the rustup targets of the
# ARM64 reference workspace and of the x86_64 port (for the default toolchain, and for
# an installed nightly, which the nightly-pinned test workspace uses), and the
# emulators and headless Chromium (Debian packages). Every step is skipped when already
# done; each decision (installed, or already there) is said on stderr, so a run on a new
# machine shows what it added.
#
# SETUP_DRY_RUN=1: say what would be installed, change nothing (the decisions are
# tested this way: tests/integration/setup.rs).
set -euo pipefail

say() { echo "setup: $*" >&2; }
dry=${SETUP_DRY_RUN:-}
run() {
  if [ -n "$dry" ]; then say "would run: $*"; else "$@"; fi
}

targets=(aarch64-unknown-none x86_64-unknown-none)

# The targets a toolchain lacks ("" for the default toolchain).
missing_targets() {
  local installed
  if [ -n "$1" ]; then
    installed=$(rustup target list --installed --toolchain "$1" 2>/dev/null || true)
  else
    installed=$(rustup target list --installed 2>/dev/null || true)
  fi
  local t
  for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || echo "$t"
  done
}

command -v rustup >/dev/null || {
  say "rustup is not installed: install it from https://rustup.rs, then run this again"
  exit 2
}
mapfile -t add < <(missing_targets "")
if [ ${#add[@]} -gt 0 ]; then
  say "installing the rustup targets ${add[*]}"
  run rustup target add "${add[@]}" >/dev/null
else
  say "rustup targets ${targets[*]}: already installed"
fi
if rustup toolchain list | grep -q '^nightly'; then
  mapfile -t add < <(missing_targets nightly)
  if [ ${#add[@]} -gt 0 ]; then
    say "installing the rustup targets ${add[*]} for nightly"
    run rustup target add --toolchain nightly "${add[@]}" >/dev/null 2>&1 \
      || say "could not add ${add[*]} to the nightly toolchain; the nightly-pinned test workspace will be skipped"
  fi
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
# Headless Chromium loads serve's dashboard in tests/integration/dashboard.rs.
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  say "installing the Debian packages ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  run $sudo apt-get update -qq
  run $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  say "emulators (QEMU, Bochs, GRUB tools) and Chromium: already installed"
fi
