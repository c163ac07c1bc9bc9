#!/usr/bin/env bash
# Here (no GPU): build the release and lay out what the GPU machine needs in devcarry/
# (git-ignored; named in the device tool's `carry`, 64 MiB at most). The GPU machine has
# no network and no Rust toolchain.
#   devcarry/dist.tgz       scripts/dist.sh output, compressed
#   devcarry/tools/         no-gpu.sh, build-llama-gpu.sh, gen_gguf.py
#   devcarry/llama-bin/     a llama.cpp build saved by run.sh's savellama stage (split
#                           archive), else devcarry/llama/ with sources to build there
#   devcarry/llama/tools/ui  the CMake files llama-server needs (llamaserver stage)
#   devcarry/cu12.txz       CUDA 12.9 headers and NVIDIA's libcudart.so.12 (cu12 stage), packed
#   devcarry/tc/            Debian's tc and its libraries (link stage; the GPU machine has none)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/dist.sh >/dev/null
mkdir -p devcarry/tools
rm -rf devcarry/dist && tar czf devcarry/dist.tgz dist
for t in no-gpu.sh build-llama-gpu.sh gen_gguf.py; do cp ../shared/tools/$t devcarry/tools/; done
if ! ls devcarry/llama-bin/llama-bin.tgz.part* >/dev/null 2>&1; then
  [ -d devcarry/llama ] || ../shared/tools/prepare-llama.sh devcarry/llama
fi
if [ -d devcarry/llama ] && [ ! -f devcarry/llama/tools/ui/CMakeLists.txt ]; then
  # prepare-llama.sh leaves out tools/ui and scripts/; llama-server (run.sh llamaserver) needs
  # their CMake files to build without an embedded UI. From the same sdist.
  t=$(mktemp -d)
  if pip download --no-deps --no-binary llama-cpp-python -q -d "$t" 'llama-cpp-python==0.3.36' >/dev/null 2>&1; then
    v=llama_cpp_python-0.3.36/vendor/llama.cpp
    tar xzf "$t"/llama_cpp_python-0.3.36.tar.gz -C "$t" "$v/tools/ui/CMakeLists.txt" "$v/tools/ui/ui.cpp.in" \
      "$v/tools/ui/ui.h.in" "$v/tools/ui/sources.cmake" "$v/scripts/ui-assets.cmake" &&
      mkdir -p devcarry/llama/tools/ui devcarry/llama/scripts &&
      cp "$t/$v"/tools/ui/* devcarry/llama/tools/ui/ && cp "$t/$v/scripts/ui-assets.cmake" devcarry/llama/scripts/
  else
    echo "pack.sh: no llama-server UI files for the llamaserver stage (pip download failed)"
  fi
  rm -rf "$t"
fi
if [ ! -f devcarry/cu12.txz ]; then
  # NVIDIA's CUDA 12.9 runtime wheel: its headers and libcudart.so.12, for the cu12 stage.
  t=$(mktemp -d)
  if pip download --no-deps -q -d "$t" 'nvidia-cuda-runtime-cu12==12.9.*' >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$t"/*.whl "$t/x"
    mkdir -p "$t/cu12" && cp -r "$t/x/nvidia/cuda_runtime/include" "$t/cu12/" &&
      cp "$t/x/nvidia/cuda_runtime/lib/libcudart.so.12" "$t/cu12/" && tar cJf devcarry/cu12.txz -C "$t" cu12
  else
    echo "pack.sh: no CUDA 12 runtime for the cu12 stage (pip download failed)"
  fi
  rm -rf "$t"
fi
if [ ! -x devcarry/tc/tc ]; then
  t=$(mktemp -d)
  if (cd "$t" && apt-get download iproute2 libbpf1 libelf1 libmnl0 libcap2 libxtables12 libbsd0 libmd0 >/dev/null 2>&1); then
    for d in "$t"/*.deb; do dpkg-deb -x "$d" "$t/root"; done
    mkdir -p devcarry/tc && cp "$t/root/sbin/tc" devcarry/tc/
    for l in libbpf.so.1 libelf.so.1 libmnl.so.0 libcap.so.2 libxtables.so.12 libbsd.so.0 libmd.so.0; do
      cp -L "$(find "$t/root" -name "$l" | head -1)" devcarry/tc/
    done
  else
    echo "pack.sh: no tc for the link stage (apt-get download failed)"
  fi
  rm -rf "$t"
fi
du -sh devcarry/* | sort -h
du -sh devcarry
