#!/usr/bin/env bash
# The whole test suite that needs no GPU (what CI runs): formatting, lints, unit tests,
# export/ABI checks, and the shims driven end to end against `vgpu serve --backend sim`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null || { echo "a C compiler (cc) is needed for the end-to-end tests" >&2; exit 1; }
cargo fmt --all --check
cargo clippy --workspace --all-targets --features shim-build/check -- -D warnings
# Doc comments' links resolve (they name the code that explains a choice).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace --features shim-build/check
# A client inside a QEMU virtual machine through its shared-memory device (scripts/vm-test.sh;
# it says SKIP where QEMU, a kernel or busybox cannot be had). VGPU_VM_TEST=0 leaves it out.
if [ "${VGPU_VM_TEST:-1}" != 0 ]; then
  if ! command -v qemu-system-x86_64 >/dev/null || ! command -v busybox >/dev/null \
    || ! ls /boot/vmlinuz-*cloud-amd64 >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 linux-image-cloud-amd64 busybox-static \
      >/tmp/vgpu-vm-apt.log 2>&1 || echo "vm-test: could not install QEMU and a kernel (see /tmp/vgpu-vm-apt.log)"
  fi
  # The test build's server and shims, laid out and checked as dist.sh does a release (a
  # release build here would add 3 minutes on CI's two cores).
  DIST="$PWD/target/vm-dist" DIST_PROFILE=debug scripts/dist.sh --skip-build >/dev/null
  DIST="$PWD/target/vm-dist" scripts/vm-test.sh
fi
