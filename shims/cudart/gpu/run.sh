#!/usr/bin/env bash
# On a GPU machine: build suite.cu two ways with nvcc, run each natively (NVIDIA's
# libcudart.so.13) and through vgpu (our libcudart.so.13 and libcuda.so.1 against
# `vgpu serve --backend cuda`, the client inside no-gpu.sh), and compare the outputs.
#
#   shims/cudart/gpu/run.sh CARRY      CARRY holds bin/vgpu, lib/ (the shims under their real
#                                      names) and no-gpu.sh; results go to $OUT (or /tmp/out)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
C=$(cd "$1" && pwd)
OUT=${OUT:-/tmp/out}
W=/tmp/cudart-gpu
mkdir -p "$OUT" "$W"
export PATH=/usr/local/cuda/bin:$PATH
chmod +x "$C/bin/vgpu" "$C/no-gpu.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
nvcc --version | tail -1
flags=(-O2 -arch=sm_90 -cudart shared -ldl)
nvcc -Xcompiler -Wno-deprecated-declarations "${flags[@]}" -o "$W/suite" "$here/suite.cu" &
nvcc -Xcompiler -Wno-deprecated-declarations "${flags[@]}" --default-stream per-thread -o "$W/suite_pt" "$here/suite.cu" &
wait
nm -D --undefined-only "$W/suite_pt" | grep -c _pt[sd] | sed 's/^/per-thread imports: /'

sock=/tmp/vgpu-cudart.sock
VGPU_LOG=warn setsid "$C/bin/vgpu" serve --backend cuda --listen unix:$sock >"$OUT/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -S $sock ] && break; sleep 0.1; done
for t in suite suite_pt; do
  timeout 120 "$W/$t" >"$W/$t.native" 2>"$W/$t.native.err"; echo "rc=$?" >>"$W/$t.native"
  VGPU_SERVER=unix:$sock LD_LIBRARY_PATH="$C/lib" timeout 300 "$C/no-gpu.sh" "$W/$t" >"$W/$t.vgpu" 2>"$W/$t.vgpu.err"
  echo "rc=$?" >>"$W/$t.vgpu"
  sort -u "$W/$t.vgpu.err" | head -20
  if diff <(grep -v '^time' "$W/$t.native") <(grep -v '^time' "$W/$t.vgpu") >"$W/$t.diff"; then
    echo "SAME $t"
  else
    echo "DIFF $t"; head -40 "$W/$t.diff"
  fi
  grep '^time\|^FAIL\|^rc=' "$W/$t.native" "$W/$t.vgpu"
done
kill $server 2>/dev/null
tar -C "$W" -czf "$OUT/cudart-gpu.tgz" suite.native suite.vgpu suite_pt.native suite_pt.vgpu
tail -20 "$OUT/server.log"
