#!/usr/bin/env bash
# Build vgpu, start a server, and run a sample client through the shims.
# On a machine with an NVIDIA GPU the server uses it (--backend cuda); elsewhere it uses the
# CPU stand-in (--backend sim), so this works on any Linux machine with Rust and a C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dist.sh >/dev/null
backend=sim
if [ -e /dev/nvidiactl ] && ldconfig -p | grep -q 'libcuda.so.1 '; then backend=cuda; fi
sock=$(mktemp -u /tmp/vgpu-demo-XXXX.sock)
VGPU_LOG=warn dist/bin/vgpu serve --backend "$backend" --listen "unix:$sock" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
export VGPU_SERVER="unix:$sock"
echo "== vgpu devices (backend $backend)"
dist/bin/vgpu devices
echo "== a C program using NVML and the CUDA driver API through dist/lib"
tmp=$(mktemp -d)
cc -O1 -o "$tmp/nvml" tests/c/nvml_basic.c -Ldist/lib -l:libnvidia-ml.so.1
cc -O1 -o "$tmp/driver" tests/c/driver_basic.c -Ldist/lib -l:libcuda.so.1
LD_LIBRARY_PATH=dist/lib "$tmp/nvml"
LD_LIBRARY_PATH=dist/lib "$tmp/driver"
rm -rf "$tmp"
