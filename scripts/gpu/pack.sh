#!/usr/bin/env bash
# Here (no GPU): build the release and lay out what the GPU machine needs in devcarry/
# (git-ignored; named in the device tool's `carry`). The GPU machine has no network and no
# Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/dist.sh >/dev/null
mkdir -p devcarry/tools
rm -rf devcarry/dist && cp -a dist devcarry/dist
for t in no-gpu.sh build-llama-gpu.sh gen_gguf.py; do cp ../shared/tools/$t devcarry/tools/; done
[ -d devcarry/llama ] || ../shared/tools/prepare-llama.sh devcarry/llama
du -sh devcarry/* | sort -h
