#!/usr/bin/env bash
# The whole test suite that needs no GPU (what CI runs): formatting, lints, unit tests,
# export/ABI checks, and the shims driven end to end against `vgpu serve --backend sim`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null || { echo "a C compiler (cc) is needed for the end-to-end tests" >&2; exit 1; }
cargo fmt --all --check
cargo clippy --workspace --all-targets --features shim-build/check -- -D warnings
cargo test --workspace --features shim-build/check
