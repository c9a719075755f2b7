#!/usr/bin/env bash
# The main job on the bundled reference workspace, with no API key (README "Set up").
# Works on a fresh copy of tests/fixtures/eterna-arm64; the checked-in fixture is never
# touched. The chain so far: plan; index and search the workspace with the local
# embedder (no network); port (offline engine); cargo check of the port for
# x86_64-unknown-none; then booting it: QEMU (TCG: the VMX-unavailable verdict) and
# Bochs with VT-x, its guest trace compared with the ARM64 original's. The fix loop
# joins later.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d "${TMPDIR:-/tmp}/eterna-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -R tests/fixtures/eterna-arm64 "$work/eterna-arm64"
rm -rf "$work/eterna-arm64/target"
manifest="$work/eterna-arm64/Cargo.toml"

cargo build --quiet --release
bin="target/release/cargo-eterna-port"

echo "== cargo eterna-port plan (fixture copy in $work)"
"$bin" eterna-port plan --manifest-path "$manifest"

echo
echo "== cargo eterna-port index"
"$bin" eterna-port index --manifest-path "$manifest"

echo
echo "== cargo eterna-port search \"interrupt controller initialisation\" -n 5"
"$bin" eterna-port search "interrupt controller initialisation" -n 5 --manifest-path "$manifest"

echo
echo "== cargo eterna-port (offline port of the copy; it is not a git repository)"
"$bin" eterna-port --manifest-path "$manifest" --allow-no-vcs

echo
echo "== cargo check --target x86_64-unknown-none -p eterna (the ported hypervisor)"
(cd "$work/eterna-arm64" && cargo check --quiet --target x86_64-unknown-none -p eterna)
echo "x86_64 port checks clean"

echo
echo "== cargo eterna-port qemu (QEMU TCG: boots, reports VT-x unavailable, status 33)"
"$bin" eterna-port qemu --manifest-path "$manifest"

echo
echo "== cargo eterna-port qemu --emulator bochs --compare (the guest under VT-x vs ARM64)"
"$bin" eterna-port qemu --manifest-path "$manifest" --emulator bochs --compare
