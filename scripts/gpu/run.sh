#!/usr/bin/env bash
# On the GPU machine: every check that needs the GPU, native and through vgpu in the same
# run, the vgpu client always inside no-gpu.sh (GPU and driver libraries hidden).
#
#   scripts/gpu/run.sh STAGE...     stages: smi driver rt threads cu12 cublas llama bench exp ab timeline h2dlat
#                                   srvstats ppstats stalls latab trace vbench ollama faults twoservers multigpu micro cpu percpu frames replybench writesize concurrent asides sharedflags nvrt nvrt12 darktrace calltrace
#                                   mgtrace shmtext ttft shmfile link loadlink pieceload textlink firstuse savellama pollcost topo pyextra (or all: smi..bench)
#
# Two builds in one call: DIST_B=<another dist/> starts that build's server too (its own
# socket and port; SERVER_B_ENV: settings for it; SERVER_B_WRAP: a command it runs under, such
# as "nice -n -10"), and a configuration named with @b
# (unix@b, tcp@b, shm@b) runs with that build's client libraries against that server.
#
# Expects (carried in devcarry/, see scripts/gpu/pack.sh): dist/ (scripts/dist.sh output),
# tools/ (no-gpu.sh, build-llama-gpu.sh, gen_gguf.py), llama/ (prepare-llama.sh output),
# cu12/ (a CUDA 12 runtime test binary and NVIDIA's libcudart.so.12 for its native run).
# Logs go to $OUT (one file per stage) and a summary to $OUT/summary.txt.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
C=$ROOT/devcarry
# The build travels packed (devcarry/dist.txz, distb.txz: a second build for DIST_B); unpack
# what came, so a call cannot run without it.
[ -f "$C/dist.txz" ] && tar xJf "$C/dist.txz" -C "$C"
[ -f "$C/distb.txz" ] && mkdir -p "$C/b" && tar xJf "$C/distb.txz" -C "$C/b"
[ -f "$C/cu12.txz" ] && tar xJf "$C/cu12.txz" -C "$C"
OUT=${OUT:-/tmp/vgpu-out}
mkdir -p "$OUT"
W=/tmp/vgpu-work
mkdir -p "$W"
export PATH=/usr/local/cuda/bin:$PATH
NOGPU="$C/tools/no-gpu.sh"
# The carried folder holds the libraries compressed, and maybe a llama.cpp build saved by
# an earlier call (see scripts/gpu/pack.sh).
[ -f "$C/dist.tgz" ] && tar xzf "$C/dist.tgz" -C "$C"
if ls "$C"/llama-bin/llama-bin.tgz.part* >/dev/null 2>&1 && [ ! -x /tmp/llama-build/bin/llama-completion ]; then
  mkdir -p /tmp/llama-build && cat "$C"/llama-bin/llama-bin.tgz.part* | tar xzf - -C /tmp/llama-build
fi
chmod +x "$C"/tools/*.sh "$C"/dist/bin/vgpu 2>/dev/null
SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

SOCK=/tmp/vgpu.sock
TOKEN=/tmp/vgpu.token
# What a VM's shared memory is on its host: a file in /dev/shm that the server shares
# (--shm-file) and a client over TCP names (VGPU_SHM_FILE; the tcpfile configuration).
SHMFILE=/dev/shm/vgpu-vm.shm
vsock_loopback() {
  modprobe vsock_loopback 2>/dev/null
  python3 -c 'import socket as s; l=s.socket(s.AF_VSOCK, s.SOCK_STREAM); l.bind((s.VMADDR_CID_ANY, 7099)); l.listen(); c=s.socket(s.AF_VSOCK, s.SOCK_STREAM); c.settimeout(2); c.connect((1, 7099))' 2>/dev/null
}
# A test CA and a certificate it signed for 127.0.0.1, for the tls configuration (openssl,
# where the machine has it).
TLSDIR=/tmp/vgpu-tls
make_tls() {
  command -v openssl >/dev/null || return 1
  [ -f $TLSDIR/srv.pem ] && return 0
  mkdir -p $TLSDIR && cd $TLSDIR || return 1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=vgpu-test-ca 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null &&
    echo "subjectAltName=IP:127.0.0.1" >ext && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext 2>/dev/null &&
    chmod 600 srv.key; local r=$?; cd - >/dev/null; return $r
}
start_server() {
  echo "bench-token-$$" > $TOKEN; chmod 600 $TOKEN
  local tl=(); make_tls && tl=(--listen tls://127.0.0.1:7443 --tls-cert $TLSDIR/srv.pem --tls-key $TLSDIR/srv.key) && TLS_OK=1
  rm -f $SOCK # an earlier server's socket would look like this one's before it listens
  rm -f $SHMFILE && truncate -s "${SHMFILE_MB:-256}M" $SHMFILE
  # vsock through the kernel's loopback (CID 1), where it has one: the vsock and vsockfile
  # configurations.
  local vs=(); vsock_loopback && vs=(--listen vsock://4294967295:7072) && VSOCK_OK=1
  VGPU_STATS=1 VGPU_LOG=${VGPU_SERVER_LOG:-info} setsid ${SERVER_CPUS:+taskset -c $SERVER_CPUS} "$C/dist/bin/vgpu" serve --backend cuda --listen unix:$SOCK \
    --listen tcp://127.0.0.1:7070 "${vs[@]}" "${tl[@]}" --token-file $TOKEN --shm-file $SHMFILE "$@" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  if [ -n "${DIST_B:-}" ]; then # a second build's server, for @b configurations (SERVER_B_ENV: its settings)
    rm -f $SOCK.b
    env ${SERVER_B_ENV:-} VGPU_STATS=1 VGPU_LOG=${VGPU_SERVER_LOG:-info} setsid ${SERVER_B_WRAP:-} "$DIST_B/bin/vgpu" serve --backend cuda --listen unix:$SOCK.b \
      --listen tcp://127.0.0.1:7071 ${TLS_OK:+--listen tls://127.0.0.1:7444 --tls-cert $TLSDIR/srv.pem --tls-key $TLSDIR/srv.key} --token-file $TOKEN "$@" >"$OUT/server-b.log" 2>&1 &
    SERVER_B_PID=$!
  fi
  for _ in $(seq 100); do [ -S $SOCK ] && { [ -z "${DIST_B:-}" ] || [ -S $SOCK.b ]; } && break; sleep 0.1; done
}
stop_server() { kill "$SERVER_PID" ${SERVER_B_PID:-} 2>/dev/null; wait "$SERVER_PID" ${SERVER_B_PID:-} 2>/dev/null; }
# Run a command as a GPU-less client would: through vgpu only (VG_SCHEME=shm: the same
# stages over shared memory). VGSOCK/VGPORT: another server's.
vg() { VGPU_SERVER=${VG_SCHEME:-unix}:${VGSOCK:-$SOCK} LD_LIBRARY_PATH="${VGLIB:-$C/dist/lib}${EXTRA_LD:+:$EXTRA_LD}" "$NOGPU" "$@"; }
vg_tcp() { VGPU_SERVER=tcp://127.0.0.1:${VGPORT:-7070} VGPU_TOKEN=$(cat $TOKEN) LD_LIBRARY_PATH="${VGLIB:-$C/dist/lib}${EXTRA_LD:+:$EXTRA_LD}" "$NOGPU" "$@"; }
vg_tls() { VGPU_SERVER=tls://127.0.0.1:${VGTLSPORT:-7443} VGPU_TLS_CA=$TLSDIR/ca.pem VGPU_TOKEN=$(cat $TOKEN) LD_LIBRARY_PATH="${VGLIB:-$C/dist/lib}${EXTRA_LD:+:$EXTRA_LD}" "$NOGPU" "$@"; }
vg_vsock() { VGPU_SERVER=vsock://1:7072 VGPU_TOKEN=$(cat $TOKEN) LD_LIBRARY_PATH="${VGLIB:-$C/dist/lib}${EXTRA_LD:+:$EXTRA_LD}" "$NOGPU" "$@"; }
vg_shm() { VGPU_SERVER=shm:${VGSOCK:-$SOCK} LD_LIBRARY_PATH="${VGLIB:-$C/dist/lib}${EXTRA_LD:+:$EXTRA_LD}" "$NOGPU" "$@"; }
as_cfg() { # CFG CMD...: CMD natively or through a transport, with settings: native, unix, tcp, shm, unix+VGPU_LANES=0;
  # a transport named with @b (shm@b) uses the build in $DIST_B instead: its client libraries and its server
  local c=$1 t=${1%%+*} e=() lib=$C/dist/lib sock=$SOCK port=7070 tport=7443; shift
  [ "$t" != "$c" ] && IFS=+ read -ra e <<<"${c#*+}"
  [ "${t%@b}" != "$t" ] && t=${t%@b} && lib=$DIST_B/lib && sock=$SOCK.b && port=7071 && tport=7444
  case $t in
    native) env "${e[@]}" LD_LIBRARY_PATH="${EXTRA_LD:-}" "$@" ;;
    unix) VGSOCK=$sock VGLIB=$lib vg env "${e[@]}" "$@" ;;
    tcp) VGPORT=$port VGLIB=$lib vg_tcp env "${e[@]}" "$@" ;;
    tcpfile) VGPORT=$port VGLIB=$lib vg_tcp env VGPU_SHM_FILE=$SHMFILE "${e[@]}" "$@" ;;
    tls) VGTLSPORT=$tport VGLIB=$lib vg_tls env "${e[@]}" "$@" ;;
    vsock) VGLIB=$lib vg_vsock env "${e[@]}" "$@" ;;
    vsockfile) VGLIB=$lib vg_vsock env VGPU_SHM_FILE=$SHMFILE "${e[@]}" "$@" ;;
    shm) VGSOCK=$sock VGLIB=$lib vg_shm env "${e[@]}" "$@" ;;
  esac
}
compare() { # name native-file vgpu-file: same lines, minus timings and vgpu's own warnings (an entry point it logs once)
  if diff <(grep -v '^time' "$2") <(grep -v '^time' "$3" | grep -v '^ WARN vgpu: ') >"$OUT/$1.diff"; then say "SAME  $1"; else say "DIFF  $1 (see $1.diff)"; fi
}

driver_only() { # a folder with vgpu's libcuda.so.1 and libnvidia-ml.so.1 alone (what `vgpu install system` gives), printed
  local D=$W/driver-only; mkdir -p "$D"; ln -sf "$C/dist/lib/libcuda.so.1" "$C/dist/lib/libnvidia-ml.so.1" "$D/"; echo "$D"
}

stage_smi() {
  nvidia-smi >"$W/smi.native" 2>&1; vg nvidia-smi >"$W/smi.vgpu" 2>&1; echo "rc=$?" >>"$W/smi.vgpu"
  cp "$W/smi.native" "$OUT/smi-native.txt"; cp "$W/smi.vgpu" "$OUT/smi-vgpu.txt"
  nvidia-smi -L >"$W/L.n" 2>&1; vg nvidia-smi -L >"$W/L.v" 2>&1; compare smi-L "$W/L.n" "$W/L.v"
  q=index,name,uuid,pci.bus_id,memory.total,driver_version,compute_cap
  nvidia-smi --query-gpu=$q --format=csv >"$W/q.n" 2>&1; vg nvidia-smi --query-gpu=$q --format=csv >"$W/q.v" 2>&1
  compare smi-query "$W/q.n" "$W/q.v"
  nvidia-smi -q >"$OUT/smi-q-native.txt" 2>&1; vg nvidia-smi -q >"$OUT/smi-q-vgpu.txt" 2>&1; say "smi -q through vgpu exit $?, $(wc -l <"$OUT/smi-q-vgpu.txt") lines (native $(wc -l <"$OUT/smi-q-native.txt"))"
  say "smi -q N/A through vgpu: $(grep -c ': N/A' "$OUT/smi-q-vgpu.txt"), native: $(grep -c ': N/A' "$OUT/smi-q-native.txt")"
}

build_gpu_tests() {
  [ -x "$W/driver_suite" ] && return
  cd "$ROOT/tests/gpu"
  nvcc -arch=sm_90 -cubin -o "$W/vecadd.cubin" vecadd.cu
  nvcc -arch=sm_90 -fatbin -o "$W/vecadd.fatbin" vecadd.cu
  nvcc -arch=sm_90 -ptx -o "$W/vecadd.ptx" vecadd.cu
  gcc -O1 -o "$W/driver_suite" driver_suite.c -I/usr/local/cuda/include -L/usr/local/cuda/lib64/stubs -lcuda -lpthread
  gcc -O1 -o "$W/probe" probe.c -ldl
  gcc -O1 -o "$W/ipc" ipc.c -I/usr/local/cuda/include -L/usr/local/cuda/lib64/stubs -lcuda
  nvcc -O2 -arch=sm_90 -cudart shared -o "$W/rt_vecadd" rt_vecadd.cu
  nvcc -O2 -arch=sm_90 -cudart shared -o "$W/launch_bench" launch_bench.cu
  cd "$ROOT"
}

stage_driver() {
  build_gpu_tests
  "$W/probe" >"$W/probe.n" 2>&1; vg "$W/probe" >"$W/probe.v" 2>&1; compare probe "$W/probe.n" "$W/probe.v"
  cp "$W/probe.n" "$OUT/probe-native.txt"; cp "$W/probe.v" "$OUT/probe-vgpu.txt"
  timeout 120 "$W/driver_suite" "$W" >"$W/ds.n" 2>&1; echo "rc=$?" >>"$W/ds.n"
  vg timeout 120 "$W/driver_suite" "$W" >"$W/ds.v" 2>&1; echo "rc=$?" >>"$W/ds.v"
  compare driver-suite "$W/ds.n" "$W/ds.v"; cp "$W/ds.n" "$OUT/driver-native.txt"; cp "$W/ds.v" "$OUT/driver-vgpu.txt"
  # Inter-process sharing: the child the parent spawns is a second session of the server.
  "$W/ipc" >"$W/ipc.n" 2>&1; echo "rc=$?" >>"$W/ipc.n"; vg "$W/ipc" >"$W/ipc.v" 2>&1; echo "rc=$?" >>"$W/ipc.v"
  compare ipc "$W/ipc.n" "$W/ipc.v"; cp "$W/ipc.n" "$OUT/ipc-native.txt"; cp "$W/ipc.v" "$OUT/ipc-vgpu.txt"
  for t in packed_copy pinned_reuse capture_side_copy; do # C programs of tests/c, on the GPU
    gcc -O1 -o "$W/$t" "$ROOT/tests/c/$t.c" -I"$ROOT/tests/c" -L/usr/local/cuda/lib64/stubs -lcuda || { say "FAIL $t build"; continue; }
    "$W/$t" >"$W/$t.n" 2>&1; vg env VGPU_TRACE=summary "$W/$t" >"$W/$t.v" 2>"$OUT/$t-vgpu.err"
    compare "$t" "$W/$t.n" "$W/$t.v"
  done
  # packed copies (over links by default, not to the loopback address): over TCP and unix with VGPU_PACK=1
  vg_tcp env VGPU_PACK=1 VGPU_TRACE=summary "$W/packed_copy" >"$W/pc.tcp" 2>"$OUT/packed_copy-tcp.err"
  compare packed_copy-tcp "$W/packed_copy.n" "$W/pc.tcp"
  vg env VGPU_PACK=1 VGPU_TRACE=summary "$W/packed_copy" >"$W/pc.unix1" 2>"$OUT/packed_copy-pack1.err"
  compare packed_copy-unix-pack1 "$W/packed_copy.n" "$W/pc.unix1"
  say "packed_copy over TCP: $(grep -h -E '^  (htod_runs|memset|cuMemcpyHtoDAsync_v2) ' "$OUT/packed_copy-tcp.err" | tr -s ' ' | tr '\n' ';')"
}

stage_rt() {
  build_gpu_tests
  "$W/rt_vecadd" >"$W/rt.n" 2>&1; vg "$W/rt_vecadd" >"$W/rt.v" 2>&1; echo "rc=$?" >>"$W/rt.v"; echo "rc=0" >>"$W/rt.n"
  compare rt13 "$W/rt.n" "$W/rt.v"; cp "$W/rt.v" "$OUT/rt13-vgpu.txt"
  "$W/launch_bench" >"$W/lb.n" 2>&1; vg "$W/launch_bench" >"$W/lb.v" 2>&1
  say "launch native: $(cat "$W/lb.n")"; say "launch vgpu:   $(cat "$W/lb.v" | tail -3)"
}

stage_threads() { # DESIGN Threads on the GPU: another thread's calls go on while one waits for a long kernel
  nvcc -O2 -arch=sm_90 -cudart shared -o "$W/threads" "$ROOT/tests/gpu/threads.cu" || { say "FAIL threads build"; return; }
  "$W/threads" >"$W/th.n" 2>&1; vg "$W/threads" >"$W/th.v" 2>&1; echo "rc=$?" >>"$W/th.v"; echo "rc=0" >>"$W/th.n"
  compare threads "$W/th.n" "$W/th.v"; say "threads native: $(grep ^time "$W/th.n")"; say "threads vgpu:   $(grep ^time "$W/th.v")"
}

stage_cu12() {
  # A CUDA 12 runtime program: gcc against the CUDA 12.9 headers (the runtime wheel has no crt/:
  # those come from the machine's toolkit), libcudart.so.12, a fatbin.
  nvcc -arch=sm_90 -fatbin -o "$W/k12.fatbin" "$ROOT/tests/gpu/k12.cu"
  python3 -c "import sys; d=open(sys.argv[1],'rb').read(); print('__attribute__((aligned(8))) unsigned char k12_fatbin[] = {' + ','.join(map(str, d)) + '};')" "$W/k12.fatbin" >"$W/k12.h"
  gcc -O1 -o "$W/rt12" "$ROOT/tests/gpu/rt12.c" -I"$W" -I"$C/cu12/include" -I/usr/local/cuda/include "$C/cu12/libcudart.so.12" -Wl,-rpath,'$ORIGIN' || { say "FAIL cu12 build"; return; }
  LD_LIBRARY_PATH=$C/cu12 "$W/rt12" >"$W/r12.n" 2>&1; echo "rc=$?" >>"$W/r12.n"
  vg "$W/rt12" >"$W/r12.v" 2>&1; echo "rc=$?" >>"$W/r12.v"
  compare rt12 "$W/r12.n" "$W/r12.v"; cp "$W/r12.v" "$OUT/rt12-vgpu.txt"; cp "$W/r12.n" "$OUT/rt12-native.txt"
}

stage_cublas() {
  nvcc -O2 -arch=sm_90 -cudart shared -o "$W/cublas_gemm" "$ROOT/tests/gpu/cublas_gemm.cu" -lcublas || { say "FAIL cublas build"; return; }
  "$W/cublas_gemm" >"$W/cb.n" 2>&1; echo "rc=$?" >>"$W/cb.n"
  vg "$W/cublas_gemm" >"$W/cb.v" 2>&1; echo "rc=$?" >>"$W/cb.v"
  compare cublas "$W/cb.n" "$W/cb.v"; cp "$W/cb.v" "$OUT/cublas-vgpu.txt"; cp "$W/cb.n" "$OUT/cublas-native.txt"
}

# The build goes outside the carried folder: a warm machine keeps /tmp between calls, while
# a carried folder is replaced on every call.
LB=/tmp/llama-build
build_llama() {
  [ -x "$LB/bin/llama-completion" ] && return
  ( time { cmake -S "$C/llama" -B "$LB" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF >/dev/null &&
    cmake --build "$LB" -j"$(nproc)" --target llama-bench llama-completion; } ) >"$OUT/llama-build.log" 2>&1 || say "llama build FAILED"
}
models() {
  [ -f $W/q8.gguf ] || python3 "$C/tools/gen_gguf.py" $W/q8.gguf --preset 1b --dtype q8_0 >/dev/null
  [ -f $W/f16.gguf ] || python3 "$C/tools/gen_gguf.py" $W/f16.gguf --preset 1b --dtype f16 >/dev/null
  # q8v: the same with Llama 3's 128256-token vocabulary (Ollama's llama3.2:1b), whose logits
  # are 501 KiB a token instead of 125; written only where a stage asks for it (AB_MODELS,
  # VB_MODELS, TL_MODEL, CONC_MODEL).
  case " ${AB_MODELS:-} ${VB_MODELS:-} ${TL_MODEL:-} ${CONC_MODEL-q8v} " in *" q8v "*)
    [ -f $W/q8v.gguf ] || python3 "$C/tools/gen_gguf.py" $W/q8v.gguf --preset 1b --vocab 128256 --dtype q8_0 >/dev/null ;;
  esac
}
# Median tokens/s of each test in a llama-bench -o json file (a slow outlier run moves the
# mean a lot).
medians() {
  python3 -c 'import json,sys,statistics as s; print(" ".join("%s %.1f" % ("pp" if t["n_prompt"] else "tg", s.median(t["samples_ts"])) for t in json.load(open(sys.argv[1]))))' "$1" 2>&1
}
complete() { # native|vgpu model [VAR=value...]
  local how=$1 m=$2; shift 2
  local args=(-m "$m" -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv)
  if [ "$how" = native ]; then env "$@" LD_LIBRARY_PATH=$B "$B/llama-completion" "${args[@]}" 2>"$W/err" </dev/null
  else vg env "$@" "$B/llama-completion" "${args[@]}" 2>"$W/err" </dev/null; fi
}
stage_llama() {
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for m in q8 f16; do
    for g in off on; do
      envs=(); [ $g = off ] && envs=(GGML_CUDA_DISABLE_GRAPHS=1)
      complete native $W/$m.gguf "${envs[@]}" >"$W/c.$m.$g.n"; cp "$W/err" "$OUT/llama-$m-$g-native.err"
      complete vgpu $W/$m.gguf "${envs[@]}" >"$W/c.$m.$g.v"; cp "$W/err" "$OUT/llama-$m-$g-vgpu.err"
      say "text $m graphs=$g native: $(head -c 120 "$W/c.$m.$g.n" | tr '\n' ' ')"
      compare "llama-$m-graphs-$g" "$W/c.$m.$g.n" "$W/c.$m.$g.v"
    done
  done
  # A prompt of some 600 tokens: its input embeddings (4 MiB a batch) go over the lanes.
  local long=(-m $W/q8.gguf -p "$(seq 1 300 | tr '\n' ' ')" -n 16 --temp 0 --seed 1 -ngl 99 -no-cnv)
  LD_LIBRARY_PATH=$B "$B/llama-completion" "${long[@]}" >"$W/long.n" 2>/dev/null </dev/null
  vg env VGPU_TRACE=summary "$B/llama-completion" "${long[@]}" >"$W/long.unix" 2>"$OUT/long-unix.err" </dev/null
  vg_tcp env VGPU_TRACE=summary "$B/llama-completion" "${long[@]}" >"$W/long.tcp" 2>"$OUT/long-tcp.err" </dev/null
  compare llama-q8-long-prompt-unix "$W/long.n" "$W/long.unix"
  compare llama-q8-long-prompt-tcp "$W/long.n" "$W/long.tcp"
  if [ -n "${TLS_OK:-}" ]; then
    vg_tls env VGPU_TRACE=summary "$B/llama-completion" "${long[@]}" >"$W/long.tls" 2>"$OUT/long-tls.err" </dev/null
    compare llama-q8-long-prompt-tls "$W/long.n" "$W/long.tls"
    say "tls lanes (llama): $(grep -h 'lanes' "$OUT/long-tls.err" | tr -s ' ' | tr '\n' ';')"
  else
    say "no openssl: no tls configuration"
  fi
}
stage_shmfile() { # a VM's shared memory, stood in for by $SHMFILE: TCP (and vsock, where the kernel loops it back) for the calls, the file for the bytes
  build_gpu_tests; build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  say "vsock loopback: ${VSOCK_OK:-no}"
  "$W/driver_suite" "$W" >"$W/ds.n" 2>&1; echo "rc=0" >>"$W/ds.n"
  local long=(-m $W/q8.gguf -p "$(seq 1 300 | tr '\n' ' ')" -n 16 --temp 0 --seed 1 -ngl 99 -no-cnv)
  LD_LIBRARY_PATH=$B "$B/llama-completion" "${long[@]}" >"$W/long.n" 2>/dev/null </dev/null
  for c in tcpfile ${VSOCK_OK:+vsock vsockfile}; do
    as_cfg $c env VGPU_TRACE=summary "$W/driver_suite" "$W" >"$W/ds.f" 2>"$OUT/driver-$c.err"; echo "rc=$?" >>"$W/ds.f"
    compare driver-suite-$c "$W/ds.n" "$W/ds.f"
    as_cfg $c env VGPU_TRACE=summary "$B/llama-completion" "${long[@]}" >"$W/long.f" 2>"$OUT/long-$c.err" </dev/null
    compare llama-q8-long-prompt-$c "$W/long.n" "$W/long.f"
    say "$c segment copies (llama): $(grep -E 'shm_(htod|dtoh)' "$OUT/long-$c.err" | tr -s ' ' | tr '\n' ';')"
  done
  grep -E 'shared segment|through rings' "$OUT/server.log" | tail -4 >>"$SUMMARY"
}
stage_bench() {
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for m in q8 f16; do
    LD_LIBRARY_PATH=$B $B/llama-bench -m $W/$m.gguf -p 512 -n 128 -ngl 99 -r 3 -o md >"$OUT/bench-$m-native.md" 2>"$W/be"
    vg $B/llama-bench -m $W/$m.gguf -p 512 -n 128 -ngl 99 -r 3 -o md >"$OUT/bench-$m-unix.md" 2>"$W/be" || tail -5 "$W/be" >>"$SUMMARY"
    vg_tcp $B/llama-bench -m $W/$m.gguf -p 512 -n 128 -ngl 99 -r 3 -o md >"$OUT/bench-$m-tcp.md" 2>"$W/be" || tail -5 "$W/be" >>"$SUMMARY"
    for t in native unix tcp; do say "bench $m $t: $(grep -E 'pp512|tg128' "$OUT/bench-$m-$t.md" | awk -F'|' '{print $(NF-2), $(NF-1)}' | tr '\n' ' ')"; done
  done
  # Diagnostic rows: native without programmatic dependent launch; vgpu without answering
  # synchronizes locally, and without polling for replies: what each is worth.
  GGML_CUDA_PDL=0 LD_LIBRARY_PATH=$B $B/llama-bench -m $W/q8.gguf -p 512 -n 128 -ngl 99 -r 3 -o md >"$OUT/bench-q8-native-nopdl.md" 2>/dev/null
  vg env VGPU_ELIDE=0 $B/llama-bench -m $W/q8.gguf -p 512 -n 128 -ngl 99 -r 3 -o md >"$OUT/bench-q8-unix-noelide.md" 2>/dev/null
  vg env VGPU_SPIN_US=0 $B/llama-bench -m $W/q8.gguf -p 512 -n 128 -ngl 99 -r 3 -o md >"$OUT/bench-q8-unix-nospin.md" 2>/dev/null
  for t in native-nopdl unix-noelide unix-nospin; do say "bench q8 $t: $(grep -E 'pp512|tg128' "$OUT/bench-q8-$t.md" | awk -F'|' '{print $(NF-2), $(NF-1)}' | tr '\n' ' ')"; done
}

# Only a few files come back from $OUT: everything goes into one archive beside the
# summary, also when the run is cut short.
finish() {
  trap - EXIT TERM INT
  stop_server
  cp "$W"/*.n "$W"/*.v "$OUT/" 2>/dev/null
  tar czf /tmp/results.tgz -C "$OUT" --exclude='llama-bin.tgz.part*' . &&
    find "$OUT" -mindepth 1 ! -name summary.txt ! -name 'llama-bin.tgz.part*' -delete && mv /tmp/results.tgz "$OUT/"
  exit 0
}
trap finish EXIT TERM INT
stage_masks() { # the host-to-device copies of pp512 and pp2048 runs through vgpu, their sizes, and which went packed
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for p in 512 2048; do
    vg env VGPU_TRACE=1 "$B/llama-bench" -m $W/q8.gguf -p $p -n 0 -ngl 99 -r 1 >/dev/null 2>"$W/masks.log"
    grep ^vgpu-trace "$W/masks.log" | tail -400 | gzip >"$OUT/masks-pp$p.trace.gz"
    say "pp$p, one run after warm-up: host-to-device copies by kind and size (last $((p / 512 * 20)) lines):"
    grep -E "^vgpu-trace (htod_runs|cuMemcpyHtoDAsync_v2) " "$W/masks.log" | tail -$((p / 512 * 20)) | python3 -c '
import re, sys, collections
n = collections.Counter()
for l in sys.stdin:
    op = l.split()[1]; ln = re.search(r"len: (\d+)", l); b = re.search(r"bulk_in=(\d+)", l)
    n[op + (" len=" + ln.group(1) if ln else "") + " sent=" + (b.group(1) if b else "?")] += 1
for k, v in n.most_common(20): print("  %4d  %s" % (v, k))' | tee -a "$SUMMARY"
  done
}
stage_trace() { # where a decode step's time goes: client calls (VGPU_TRACE=summary) and server time per call
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  vg env VGPU_TRACE=summary "$B/llama-completion" -m $W/q8.gguf -p "hello world" -n 128 --temp 0 --seed 1 -ngl 99 -no-cnv \
    >/dev/null 2>"$W/trace.log" </dev/null
  sed -n '/vgpu-trace summary/,$p' "$W/trace.log" >"$OUT/trace-client.txt"
  head -25 "$OUT/trace-client.txt" >>"$SUMMARY"
  # The server logs its own time per call (VGPU_STATS=1) when that session ends.
  sleep 1; grep -A25 'time per call' "$OUT/server.log" | tail -26 >"$OUT/trace-server.txt"
  # Every call of the last decode steps, one line each.
  vg env VGPU_TRACE=1 "$B/llama-completion" -m $W/q8.gguf -p "hello world" -n 8 --temp 0 --seed 1 -ngl 99 -no-cnv \
    >/dev/null 2>"$W/trace1.log" </dev/null
  grep vgpu-trace "$W/trace1.log" | tail -300 >"$OUT/trace-lines.txt"
  # Prompt processing alone: each call of one run, and per-call times for both models.
  vg env VGPU_TRACE=1 "$B/llama-bench" -m $W/${TRACE_MODEL:-q8}.gguf -p 512 -n 0 -r 1 -ngl 99 >/dev/null 2>"$W/trace-pp1.log"
  grep vgpu-trace "$W/trace-pp1.log" | cut -c1-200 >"$OUT/trace-pp-lines.txt"
  for m in q8 f16; do
    vg env VGPU_TRACE=summary "$B/llama-bench" -m $W/$m.gguf -p 512 -n 0 -r 3 -ngl 99 >/dev/null 2>"$W/trace-pp.log"
    sed -n '/vgpu-trace summary/,$p' "$W/trace-pp.log" >"$OUT/trace-pp-$m-client.txt"
    sleep 1; grep -A40 'time per call' "$OUT/server.log" | tail -41 >"$OUT/trace-pp-$m-server.txt"
  done
}
stage_perf() { # where a launch's client time goes
  build_gpu_tests
  command -v perf >/dev/null || { say "perf: not installed"; return; }
  vg perf record -F 10000 -g -o "$W/perf.data" "$W/launch_bench" >"$W/perf.out" 2>&1
  say "perf run: $(tail -1 "$W/perf.out")"
  perf report -i "$W/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null | grep -v '^$' | head -120 >"$OUT/perf-launch.txt"
}
stage_vbench() { # `vgpu bench`: micro-benchmarks (native, unix, tcp, shm) and llama-bench rows, as ratios (VB_CLIENTS: that many llama-bench processes at once; VB_MIXED=1: one of them prompting, VB_PROMPT_REPS times)
  build_llama; models
  local m; m=$(for x in ${VB_MODELS:-q8 f16}; do printf '%s,' "$W/$x.gguf"; done); m=${m%,} # VB_MODELS: which of models
  if [ -n "${VB_8B:-}" ]; then # and an 8B-class Q8 model (7.2 GB; about two minutes to write)
    [ -f $W/q8b.gguf ] || python3 "$C/tools/gen_gguf.py" $W/q8b.gguf --preset 1b --embd 4096 --layers 32 \
      --ff 14336 --heads 32 --kv-heads 8 --dtype q8_0 >/dev/null
    m="$m,$W/q8b.gguf"
  fi
  "$C/dist/bin/vgpu" bench --wrap "$NOGPU" --dist-lib "$C/dist/lib" --llama-bin "$LB/bin" \
    --models "$m" --llama-reps "${VB_REPS:-5}" --llama-rounds "${VB_ROUNDS:-8}" ${VB_CLIENTS:+--clients $VB_CLIENTS} \
    ${VB_MIXED:+--mixed --mixed-prompt-reps ${VB_PROMPT_REPS:-60}} --out "$OUT/vbench" || say "vgpu bench failed"
  grep -E '^\|' "$OUT"/vbench/*.md | head -40 >>"$SUMMARY"
}
stage_ollama() { # issue 7: the llama.cpp build laid out as an Ollama tree, vgpu install/doctor/uninstall
  build_llama; models
  T=/tmp/ollama-tree; rm -rf $T; mkdir -p $T/bin $T/lib/ollama/cuda_v13
  cp "$LB/bin/llama-completion" $T/bin/
  for f in "$LB"/bin/lib*.so*; do case $f in *ggml-cuda*) cp -P "$f" $T/lib/ollama/cuda_v13/ ;; *) cp -P "$f" $T/lib/ollama/ ;; esac; done
  cp -P /usr/local/cuda/lib64/libcudart.so.13* /usr/local/cuda/lib64/libcublas.so.13* /usr/local/cuda/lib64/libcublasLt.so.13* $T/lib/ollama/cuda_v13/
  (cd $T && find . -type f -exec sha256sum {} + | sort; find . -type l -printf '%p -> %l\n' | sort) >"$W/tree.before"
  # As after `vgpu install system`: the tree's own NVIDIA runtime and cuBLAS over vgpu's
  # driver and NVML alone.
  local D m; D=$(driver_only)
  for m in q8 f16; do
    local sargs=(-m $W/$m.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv)
    VGPU_SERVER=unix:$SOCK LD_LIBRARY_PATH=$D:$T/lib/ollama/cuda_v13:$T/lib/ollama "$NOGPU" $T/bin/llama-completion "${sargs[@]}" >"$W/sys-$m.v" 2>"$OUT/ollama-system-$m.err" </dev/null
    LD_LIBRARY_PATH=$T/lib/ollama/cuda_v13:$T/lib/ollama $T/bin/llama-completion "${sargs[@]}" >"$W/sys-$m.n" 2>/dev/null </dev/null
    compare ollama-system-$m "$W/sys-$m.n" "$W/sys-$m.v"
  done
  "$C/dist/bin/vgpu" install ollama --ollama-dir $T/lib/ollama --lib-dir "$C/dist/lib" >"$OUT/ollama-install.txt" 2>&1; say "install ollama exit $?"
  local ld=$T/lib/ollama/cuda_v13:$T/lib/ollama args=(-m $W/q8.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv)
  VGPU_SERVER=unix:$SOCK LD_LIBRARY_PATH=$ld "$NOGPU" $T/bin/llama-completion "${args[@]}" >"$W/ollama.v" 2>"$OUT/ollama-run.err" </dev/null
  LD_LIBRARY_PATH=$LB/bin "$LB/bin/llama-completion" "${args[@]}" >"$W/ollama.n" 2>/dev/null </dev/null
  compare ollama-tree-text "$W/ollama.n" "$W/ollama.v"
  VGPU_SERVER=unix:$SOCK LD_LIBRARY_PATH=$ld "$NOGPU" "$C/dist/bin/vgpu" doctor --ollama-dir $T/lib/ollama >"$OUT/doctor.txt" 2>&1
  say "doctor exit $? ($(grep -c '^FAIL' "$OUT/doctor.txt") FAIL, $(grep -c '^WARN' "$OUT/doctor.txt") WARN)"
  "$C/dist/bin/vgpu" uninstall ollama --ollama-dir $T/lib/ollama >>"$OUT/ollama-install.txt" 2>&1
  (cd $T && find . -type f -exec sha256sum {} + | sort; find . -type l -printf '%p -> %l\n' | sort) >"$W/tree.after"
  compare ollama-uninstall-restores "$W/tree.before" "$W/tree.after"
}

stage_faults() { # issue 8 on the GPU: quota in nvidia-smi, client kill frees memory, server kill ends clients
  gcc -O1 -o "$W/quota" "$ROOT/tests/c/quota.c" -L"$C/dist/lib" -l:libnvidia-ml.so.1 -l:libcuda.so.1
  gcc -O1 -o "$W/faults" "$ROOT/tests/c/faults.c" -L"$C/dist/lib" -l:libcuda.so.1
  VGPU_LOG=warn setsid "$C/dist/bin/vgpu" serve --backend cuda --listen unix:/tmp/vq.sock --memory-limit 8G >"$OUT/quota-server.log" 2>&1 &
  local qs=$!; for _ in $(seq 100); do [ -S /tmp/vq.sock ] && break; sleep 0.1; done
  VGPU_SERVER=unix:/tmp/vq.sock LD_LIBRARY_PATH=$C/dist/lib "$NOGPU" nvidia-smi --query-gpu=memory.total --format=csv >"$OUT/quota-smi.txt" 2>&1
  VGPU_SERVER=unix:/tmp/vq.sock LD_LIBRARY_PATH=$C/dist/lib "$NOGPU" "$W/quota" >"$OUT/quota.txt" 2>&1
  say "quota 8G: nvidia-smi says $(tail -1 "$OUT/quota-smi.txt"); $(grep -E 'alloc past|cuda devtotal' "$OUT/quota.txt" | tr '\n' ' ')"
  kill $qs
  used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
  local base; base=$(used)
  VGPU_SERVER=unix:$SOCK LD_LIBRARY_PATH=$C/dist/lib "$NOGPU" "$W/faults" loop >"$W/fl.out" 2>&1 &
  local cp=$!; for _ in $(seq 100); do grep -q ready "$W/fl.out" && break; sleep 0.1; done
  # vgpu sessions names the worker that nvidia-smi shows holding the client's memory (after its
  # worker has told the listener, twice a second at most)
  sleep 1
  "$C/dist/bin/vgpu" sessions --server unix:$SOCK >"$OUT/sessions.txt" 2>&1
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader >>"$OUT/sessions.txt" 2>&1
  local wp; wp=$(awk '/ faults \(pid/ {print $2}' "$OUT/sessions.txt" | head -1)
  say "sessions: client faults (pid $cp) served by worker ${wp:-none}; nvidia-smi: $(grep -E "^${wp:-none}," "$OUT/sessions.txt" | head -1)"
  say "sessions row: $(grep ' faults (pid' "$OUT/sessions.txt" | tr -s ' ')"
  local during; during=$(used); local t0=$EPOCHREALTIME; kill -9 $cp
  local after=$during; while [ "$after" -gt $((base + 64)) ]; do sleep 0.05; after=$(used); [ "$(elapsed "$t0" | cut -d. -f1)" -ge 5 ] && break; done
  say "kill client: used MiB base $base, during $during, back to $after after $(elapsed "$t0") s"
  VGPU_LOG=warn setsid "$C/dist/bin/vgpu" serve --backend cuda --listen unix:/tmp/vk.sock >/dev/null 2>&1 &
  local ks=$!; for _ in $(seq 100); do [ -S /tmp/vk.sock ] && break; sleep 0.1; done
  if [ -x "$LB/bin/llama-completion" ]; then
    VGPU_SERVER=unix:/tmp/vk.sock LD_LIBRARY_PATH=$C/dist/lib:$LB/bin "$NOGPU" "$LB/bin/llama-completion" -m $W/q8.gguf \
      -p "hello" -n 100000 --ignore-eos -ngl 99 -no-cnv >/dev/null 2>"$W/kill.err" </dev/null &
    local lp=$!; sleep 3; t0=$EPOCHREALTIME; kill -9 $ks; wait $lp; local rc=$?
    say "kill server under llama-completion: exit $rc after $(elapsed "$t0") s"
  fi
}

stage_twoservers() { # issue 9 on one GPU: two servers, two devices, llama.cpp -sm layer across them
  build_llama; models
  for x in a b; do VGPU_LOG=warn setsid "$C/dist/bin/vgpu" serve --backend cuda --listen unix:/tmp/v2$x.sock >"$OUT/two-$x.log" 2>&1 & done
  for _ in $(seq 100); do [ -S /tmp/v2a.sock ] && [ -S /tmp/v2b.sock ] && break; sleep 0.1; done
  VGPU_SERVER=unix:/tmp/v2a.sock,unix:/tmp/v2b.sock LD_LIBRARY_PATH=$C/dist/lib "$NOGPU" nvidia-smi -L >"$OUT/two-smi.txt" 2>&1
  local args=(-m $W/q8.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv)
  VGPU_SERVER=unix:/tmp/v2a.sock,unix:/tmp/v2b.sock LD_LIBRARY_PATH=$C/dist/lib:$LB/bin "$NOGPU" "$LB/bin/llama-completion" "${args[@]}" -sm layer >"$W/two.v" 2>"$OUT/two.err" </dev/null
  LD_LIBRARY_PATH=$LB/bin "$LB/bin/llama-completion" "${args[@]}" >"$W/two.n" 2>/dev/null </dev/null
  compare two-servers-sm-layer "$W/two.n" "$W/two.v"
  say "two servers: $(grep -c GPU "$OUT/two-smi.txt") GPUs in nvidia-smi -L; $(grep -m1 -o 'using device CUDA1' "$OUT/two.err")"
  pkill -f 'unix:/tmp/v2[ab].sock'
}

stage_multigpu() { # issue 9 on a machine with several GPUs: one server, every GPU, llama.cpp -sm layer
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  nvidia-smi -L >"$OUT/mg-smi-native.txt" 2>&1; vg nvidia-smi -L >"$OUT/mg-smi-vgpu.txt" 2>&1
  compare multigpu-smi-L "$OUT/mg-smi-native.txt" "$OUT/mg-smi-vgpu.txt"
  local args=(-m $W/q8.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv -sm layer)
  LD_LIBRARY_PATH=$B "$B/llama-completion" "${args[@]}" >"$W/mg.n" 2>"$OUT/mg-native.err" </dev/null
  vg "$B/llama-completion" "${args[@]}" >"$W/mg.v" 2>"$OUT/mg-vgpu.err" </dev/null
  compare multigpu-sm-layer-text "$W/mg.n" "$W/mg.v"
  say "CUDA1 mentioned: native $(grep -c CUDA1 "$OUT/mg-native.err"), vgpu $(grep -c CUDA1 "$OUT/mg-vgpu.err")"
  for m in ${MG_MODELS:-q8 f16}; do
    local bargs=(-m $W/$m.gguf -sm layer -p 512 -n 128 -ngl 99 -r "${MG_REPS:-10}" -o json)
    LD_LIBRARY_PATH=$B $B/llama-bench "${bargs[@]}" >"$OUT/mgbench-$m-native.json" 2>/dev/null
    vg $B/llama-bench "${bargs[@]}" >"$OUT/mgbench-$m-unix.json" 2>"$W/be" || tail -3 "$W/be" >>"$SUMMARY"
    vg_shm $B/llama-bench "${bargs[@]}" >"$OUT/mgbench-$m-shm.json" 2>"$W/be" || tail -3 "$W/be" >>"$SUMMARY"
    vg_tcp $B/llama-bench "${bargs[@]}" >"$OUT/mgbench-$m-tcp.json" 2>"$W/be" || tail -3 "$W/be" >>"$SUMMARY"
    LD_LIBRARY_PATH=$B $B/llama-bench "${bargs[@]}" >"$OUT/mgbench-$m-native2.json" 2>/dev/null
    for t in native unix shm tcp native2; do say "multi-GPU bench $m $t (median): $(medians "$OUT/mgbench-$m-$t.json")"; done
  done
}

stage_mgtrace() { # every call of the last decode steps across two GPUs
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  vg env VGPU_TRACE=1 "$B/llama-completion" -m $W/q8.gguf -p "hello world" -n 8 --temp 0 --seed 1 -ngl 99 -no-cnv -sm layer \
    >/dev/null 2>"$W/mgtrace.log" </dev/null
  grep vgpu-trace "$W/mgtrace.log" | tail -400 | cut -c1-220 >"$OUT/mgtrace-lines.txt"
}

stage_stalls() { # prompt runs that take far longer than the others: which calls wait, client and server side
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  local m=${STALL_MODEL:-f16}
  local via=(vg); [ "${STALL_VIA:-unix}" = shm ] && via=(env VGPU_SERVER=shm:$SOCK LD_LIBRARY_PATH="$C/dist/lib:$B" "$NOGPU")
  "${via[@]}" env VGPU_TRACE=1 $B/llama-bench -m $W/$m.gguf -p 512 -n 0 -ngl 99 -r 10 -o json ${STALL_ARGS:-} >"$W/st.json" 2>"$W/st.log"
  say "stalls $m ${STALL_ARGS:-}: pp samples $(python3 -c 'import json,sys; print(" ".join("%.0f" % x for t in json.load(open(sys.argv[1])) for x in t["samples_ts"]))' "$W/st.json" 2>&1)"
  grep vgpu-trace "$W/st.log" | cut -c1-240 >"$OUT/stalls-$m-lines.txt"
  LD_LIBRARY_PATH=$B $B/llama-bench -m $W/$m.gguf -p 512 -n 0 -ngl 99 -r 10 -o json ${STALL_ARGS:-} >"$W/st.json" 2>/dev/null
  say "stalls $m native: pp samples $(python3 -c 'import json,sys; print(" ".join("%.0f" % x for t in json.load(open(sys.argv[1])) for x in t["samples_ts"]))' "$W/st.json" 2>&1)"
  python3 - "$OUT/stalls-$m-lines.txt" <<'PY' | tee -a "$SUMMARY"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
for i, l in enumerate(lines):
    m = re.search(r" ([0-9.]+)us", l)
    if m and float(m.group(1)) > float(__import__("os").environ.get("STALL_US", "2000")):
        print("slow call (%s us), with the 4 before:" % m.group(1))
        for k in range(max(0, i - 4), i + 1):
            print("   ", lines[k][:200])
PY
  grep " took " "$OUT/server.log" | tail -30 | sed 's/^.*INFO[^:]*: //' >>"$SUMMARY"
}
stage_shmtext() { # the llama stage's texts over the shared-memory transport, and a 600-token prompt's (SHMTEXT_BUSY=1: beside another client decoding, so that the GPU is shared)
  build_llama; models
  B=$LB/bin
  local other= # (a bare `wait` would wait for the server too)
  if [ -n "${SHMTEXT_BUSY:-}" ]; then
    EXTRA_LD=$B vg $B/llama-bench -m $W/q8.gguf -p 0 -n 128 -r 100 -ngl 99 >/dev/null 2>&1 & other=$!; sleep 3
  fi
  local long=(-m $W/q8.gguf -p "$(seq 1 300 | tr '\n' ' ')" -n 16 --temp 0 --seed 1 -ngl 99 -no-cnv)
  LD_LIBRARY_PATH=$B "$B/llama-completion" "${long[@]}" >"$W/shm.long.n" 2>/dev/null </dev/null
  VGPU_SERVER=shm:$SOCK LD_LIBRARY_PATH="$C/dist/lib:$B" "$NOGPU" env VGPU_TRACE=summary "$B/llama-completion" "${long[@]}" \
    >"$W/shm.long.v" 2>"$OUT/shm-long.err" </dev/null
  compare "llama-q8-long-prompt-over-shm${SHMTEXT_BUSY:+-beside-a-decoder}" "$W/shm.long.n" "$W/shm.long.v"
  say "shm calls, long prompt: $(grep -E '^  shm_' "$OUT/shm-long.err" | awk '{print $1, $2}' | tr '\n' ' ')"
  for m in q8 f16; do
    LD_LIBRARY_PATH=$B "$B/llama-completion" -m $W/$m.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv >"$W/shm.$m.n" 2>/dev/null </dev/null
    VGPU_SERVER=shm:$SOCK LD_LIBRARY_PATH="$C/dist/lib:$B" "$NOGPU" env VGPU_TRACE=summary "$B/llama-completion" -m $W/$m.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv \
      >"$W/shm.$m.v" 2>"$OUT/shm-$m.err" </dev/null
    compare "llama-$m-over-shm" "$W/shm.$m.n" "$W/shm.$m.v"
  done
  say "shm calls: $(grep -E '^  shm_' "$OUT/shm-q8.err" | awk '{print $1, $2}' | tr '\n' ' ')"
  [ -n "$other" ] && kill "$other" 2>/dev/null && wait "$other" 2>/dev/null
}

stage_exp() { # issue 6: one model over every transport; then with other lane counts (EXP_LANES) and poll budgets (EXP_SPINS)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  local m=${EXP_MODEL:-q8}
  local args=(-m $W/$m.gguf -p 512 -n 128 -ngl 99 -r "${EXP_REPS:-5}" -o json)
  row() { say "exp $m $1: $(medians "$W/exp.md")"; }
  LD_LIBRARY_PATH=$B $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row native
  vg $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row unix
  vg_shm $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row shm
  vg_tcp $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row tcp
  for n in ${EXP_LANES-}; do
    vg env VGPU_LANES=$n $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row "unix lanes=$n"
    vg_tcp env VGPU_LANES=$n $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row "tcp lanes=$n"
  done
  for us in ${EXP_SPINS-20000}; do
    vg env VGPU_SPIN_US=$us $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row "unix client-spin=${us}us"
    vg_shm env VGPU_SPIN_US=$us $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row "shm client-spin=${us}us"
    vg_tcp env VGPU_SPIN_US=$us $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row "tcp client-spin=${us}us"
  done
  LD_LIBRARY_PATH=$B $B/llama-bench "${args[@]}" >"$W/exp.md" 2>/dev/null; row "native again"
}
stage_ab() { # issue 6: prompt (AB_TEST=tg: decode) speed, native and vgpu alternated AB_ROUNDS times; medians of every sample
  # (AB_CPUS: llama-bench pinned to those cores, natively and through vgpu; SERVER_CPUS pins the server)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  local cfgs=(${AB_CFGS:-native unix tcp unix+VGPU_LANES=0 tcp+VGPU_LANES=0})
  for m in ${AB_MODELS:-q8 f16}; do
    local test=(-p "${AB_PP:-512}" -n 0); [ "${AB_TEST:-pp}" = tg ] && test=(-p 0 -n 128)
    local args=(-m $W/$m.gguf "${test[@]}" -ngl 99 -r "${AB_REPS:-3}" -o json ${AB_ARGS:-})
    rm -f "$W"/ab.$m.*
    # Many short runs rather than a few long ones: each process draws its own CPU speed
    # (about ±6%, session 18), so a column is as steady as its number of processes.
    for _ in $(seq "${AB_ROUNDS:-12}"); do
      for c in "${cfgs[@]}"; do
        as_cfg "$c" ${AB_CPUS:+taskset -c $AB_CPUS} $B/llama-bench "${args[@]}" 2>/dev/null | python3 -c 'import json,sys; print("\n".join(str(x) for t in json.load(sys.stdin) for x in t["samples_ts"]))' >>"$W/ab.$m.$c"
      done
    done
    mkdir -p "$OUT/ab-samples" && cp "$W"/ab.$m.* "$OUT/ab-samples/" # every sample, in run order (AB_REPS a run)
    for c in "${cfgs[@]}"; do
      say "ab $m ${AB_TEST:-pp} ${AB_ARGS:+($AB_ARGS) }$c: $(python3 -c 'import sys,statistics as s; a=[float(x) for x in open(sys.argv[1])]; n=[float(x) for x in open(sys.argv[2])]; print("median %.0f t/s of %d samples, ratio %.3f" % (s.median(a), len(a), s.median(a)/s.median(n)))' "$W/ab.$m.$c" "$W/ab.$m.native")"
    done
  done
}
# The GPU machine has no tc: pack.sh's devcarry/tc holds Debian's, with its libraries.
tc() { if type -P tc >/dev/null; then command tc "$@"; else LD_LIBRARY_PATH=$C/tc "$C/tc/tc" "$@"; fi; }
link_up() { # RATE: loopback limited to RATE by tc (tbf), standing in for a network link; fails where it cannot be
  tc qdisc replace dev lo root tbf rate "$1" burst "${LINK_BURST:-2mb}" latency 10ms 2>&1 | tee -a "$SUMMARY"
  say "link: $(tc qdisc show dev lo 2>&1 | head -1)"
  tc qdisc show dev lo | grep -q tbf
}
link_down() { tc qdisc del dev lo root 2>/dev/null; }
stage_link() { # a network link stood in for: TCP over lo limited to LINK_RATE, then ab (AB_CFGS: tcp ones) over it
  link_up "${LINK_RATE:-25gbit}" || return
  export VGPU_PACK=${VGPU_PACK:-1} # packed as over a real link (loopback alone packs nothing)
  stage_ab
  link_down
}
settle() { # until every worker has ended (and written what it was given to keep), at most 30 s
  for _ in $(seq 300); do pgrep -f 'vgpu worker' >/dev/null || return 0; sleep 0.1; done
}
stage_loadlink() { # issue 6: start to first token over LOAD_VIA (tcp; vsock) limited to each of LOAD_RATES (none: as
  # it is): the weights' first load, later loads (the server keeps them: server::blobs) and loads without that
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  local blobs=/var/cache/vgpu/blobs t0 n c w1 w2 off via=${LOAD_VIA:-tcp}
  [ "$via" = vsock ] && [ -z "${VSOCK_OK:-}" ] && { say "loadlink: no vsock here"; return; }
  for rate in ${LOAD_RATES:-10gbit none}; do
    if [ "$rate" != none ]; then link_up "$rate" || continue; fi
    for m in ${LOAD_MODELS:-q8 f16}; do
      local args=(-m $W/$m.gguf -p "hello" -n 1 --temp 0 --seed 1 -ngl 99 -no-cnv)
      t0=$EPOCHREALTIME; LD_LIBRARY_PATH=$B "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; n=$(elapsed "$t0")
      rm -rf "$blobs"
      t0=$EPOCHREALTIME; as_cfg $via+VGPU_BLOBS=1 "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; c=$(elapsed "$t0")
      settle # the worker writes what it was given to keep as its session ends
      t0=$EPOCHREALTIME; as_cfg $via+VGPU_BLOBS=1+VGPU_TRACE=summary "$B/llama-completion" "${args[@]}" >/dev/null 2>"$OUT/load-$m-$rate-second.err" </dev/null; w1=$(elapsed "$t0")
      t0=$EPOCHREALTIME; as_cfg $via+VGPU_BLOBS=1 "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; w2=$(elapsed "$t0")
      t0=$EPOCHREALTIME; as_cfg $via+VGPU_BLOBS=0 "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; off=$(elapsed "$t0")
      say "start to first token, $via, link $rate, $m: native $n s; first load $c s, second $w1 s, third $w2 s, without kept weights $off s ($(du -sm "$blobs" 2>/dev/null | cut -f1) MiB kept)"
    done
    # The text of a load from kept weights is native's.
    local targs=(-m $W/q8.gguf -p "hello world" -n 32 --temp 0 --seed 1 -ngl 99 -no-cnv)
    LD_LIBRARY_PATH=$B "$B/llama-completion" "${targs[@]}" >"$W/lk.n" 2>/dev/null </dev/null
    as_cfg $via+VGPU_BLOBS=1 "$B/llama-completion" "${targs[@]}" >"$W/lk.v" 2>/dev/null </dev/null
    compare "kept-weights-text-$via-$rate" "$W/lk.n" "$W/lk.v"
    [ "$rate" != none ] && link_down
  done
}
stage_pieceload() { # issue 6: a load as Ollama's own engine makes it (piece_load.c: 128 KiB copies from 8 threads) over
  # TCP limited to each of LOAD_RATES: native, a first load, a second (weights kept: server::blobs), one without
  models
  gcc -O1 -o "$W/piece_load" "$ROOT/scripts/gpu/piece_load.c" -L/usr/local/cuda/lib64/stubs -lcuda -lpthread || return
  local blobs=/var/cache/vgpu/blobs f=$W/${PIECE_MODEL:-q8}.gguf
  for rate in ${LOAD_RATES:-1gbit 10gbit none}; do
    if [ "$rate" != none ]; then link_up "$rate" || continue; fi
    "$W/piece_load" "$f" 8 >"$W/pl.n" 2>"$W/pl.n.t"
    rm -rf "$blobs"
    as_cfg tcp+VGPU_BLOBS=1 "$W/piece_load" "$f" 8 >"$W/pl.c" 2>"$W/pl.c.t"; settle
    as_cfg tcp+VGPU_BLOBS=1+VGPU_TRACE=summary "$W/piece_load" "$f" 8 >"$W/pl.w" 2>"$W/pl.w.t"
    as_cfg tcp+VGPU_BLOBS=0 "$W/piece_load" "$f" 8 >"$W/pl.o" 2>"$W/pl.o.t"
    compare "pieces-first-$rate" "$W/pl.n" "$W/pl.c"; compare "pieces-kept-$rate" "$W/pl.n" "$W/pl.w"
    cp "$W/pl.w.t" "$OUT/pieceload-$rate-second.txt"
    local t; t() { grep -E '^[0-9.]+ s$' "$1" | tail -1; }
    say "pieces (128 KiB, 8 threads) of ${f##*/}, link $rate: native $(t "$W/pl.n.t"), first load $(t "$W/pl.c.t"), second $(t "$W/pl.w.t"), without kept weights $(t "$W/pl.o.t")"
    [ "$rate" != none ] && link_down
  done
}
# llama-completion's prompt time and token count from its log: "MS TOKENS".
ptime() { grep -o 'prompt eval time = *[0-9.]* ms / *[0-9]* tokens' "$1" | tail -1 | awk '{print $5, $8}'; }
stage_textlink() { # issue 6: a long prompt of real text (this repository's docs) over TCP limited to each of
  # TEXT_RATES: prompt time natively, and through vgpu with repeated rows sent whole, in kept pieces (client::pages),
  # and as the client decides by the link's rate (the kernel's estimate). Weights kept (VGPU_BLOBS=1): loads stay short.
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  # Prose, markdown tables stripped, cut to fit the 4096-token context with this vocabulary.
  cat "$ROOT"/README.md "$ROOT"/docs/performance.md "$ROOT"/docs/trust.md | grep -v '^|' | tr -s ' \n' | head -c "${TEXT_BYTES:-8000}" >"$W/text.txt"
  local args=(-m $W/${TEXT_MODEL:-q8}.gguf -f "$W/text.txt" -c 4096 -b 512 -ub 512 -n 8 --temp 0 --seed 1 -ngl 99 -no-cnv)
  local cfgs=(${TEXT_CFGS:-native tcp+VGPU_PAGES=0 tcp+VGPU_PAGES=1 tcp}) c i # TEXT_CFGS: native first
  for rate in ${TEXT_RATES:-10gbit 25gbit none}; do
    if [ "$rate" != none ]; then link_up "$rate" || continue; fi
    for i in $(seq "${TEXT_ROUNDS:-3}"); do
      for c in "${cfgs[@]}"; do
        as_cfg "$c"+VGPU_TRACE=summary+VGPU_BLOBS=1 "$B/llama-completion" "${args[@]}" >"$W/tx.$c.$i" 2>"$W/tx.$c.$i.err" </dev/null
        echo "$rate $c round $i: $(ptime "$W/tx.$c.$i.err") $(grep -o '[0-9]* of [0-9]* pieces' "$W/tx.$c.$i.err") $(grep -o 'estimate of its rate: [0-9]* MB/s' "$W/tx.$c.$i.err")" >>"$OUT/textlink-runs.txt"
      done
    done
    cp "$W/tx.tcp.1.err" "$OUT/textlink-$rate-auto.err"
    for c in "${cfgs[@]:1}"; do compare "text-prompt-$c-$rate" "$W/tx.native.1" "$W/tx.$c.1"; done
    for c in "${cfgs[@]}"; do
      say "text prompt, link $rate, $c: $(python3 -c 'import sys,statistics as s; r=[l.split() for l in open(sys.argv[1])]; r=[w for w in r if w[0]==sys.argv[2] and w[1]==sys.argv[3] and len(w)>5]; ms=[float(w[4]) for w in r]; n=[w[5] for w in r]; print("median %.1f ms for %s tokens (%s)" % (s.median(ms), n[0] if n else "?", " ".join("%.1f" % m for m in ms)))' "$OUT/textlink-runs.txt" "$rate" "$c") $(grep -o '[0-9]* of [0-9]* pieces' "$W/tx.$c.1.err") $(grep -o 'rate: [0-9]* MB/s' "$W/tx.$c.1.err")"
    done
    [ "$rate" != none ] && link_down
  done
}
stage_firstuse() { # a long prompt's time natively and over TCP for two prompt lengths (a fixed cost or one per batch?),
  # and where the module loads and function lookups of one vgpu run fall (before or after prompt processing starts)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  cat "$ROOT"/README.md "$ROOT"/docs/performance.md "$ROOT"/docs/trust.md | grep -v '^|' | tr -s ' \n' >"$W/alltext.txt"
  local bytes c i
  for bytes in 2000 8000; do
    head -c $bytes "$W/alltext.txt" >"$W/t$bytes.txt"
    for i in $(seq "${FU_ROUNDS:-4}"); do
      for c in native tcp unix; do
        as_cfg $c "$B/llama-completion" -m $W/q8.gguf -f "$W/t$bytes.txt" -c 4096 -b 512 -ub 512 -n 4 --temp 0 --seed 1 -ngl 99 -no-cnv >/dev/null 2>"$W/fu.err" </dev/null
        echo "$bytes $c $(ptime "$W/fu.err")" >>"$OUT/firstuse-runs.txt"
      done
    done
    for c in native tcp unix; do
      say "prompt of $bytes bytes, $c: $(awk -v b=$bytes -v c=$c '$1==b && $2==c {printf "%s ", $3; n=$4} END {print "ms for", n, "tokens"}' "$OUT/firstuse-runs.txt")"
    done
  done
  as_cfg tcp+VGPU_TRACE=1 "$B/llama-completion" -m $W/q8.gguf -f "$W/t8000.txt" -c 4096 -b 512 -ub 512 -n 4 --temp 0 --seed 1 -ngl 99 -no-cnv >/dev/null 2>"$W/fu-trace.err" </dev/null
  local start; start=$(grep -n 'generate: n_ctx' "$W/fu-trace.err" | head -1 | cut -d: -f1)
  say "module loads before / after prompt processing starts (line $start): $(awk -F: -v s="$start" '/vgpu-trace module_load/ {if (NR < s) a++; else b++} END {print a+0, "/", b+0}' "$W/fu-trace.err")"
  grep -n 'vgpu-trace module_load\|vgpu-trace cuModuleGetFunction\|vgpu-trace cuLibrary\|generate: n_ctx\|prompt eval time' "$W/fu-trace.err" | awk '{print substr($0, 1, 200)}' >"$OUT/firstuse-loads.txt"
}
# For the timeline and frames stages: timeline.c built to preload, and llama-bench's test
# in `test` (the caller's local): a 512-token prompt, or with TL_TEST=tg decode steps.
timeline_prep() { gcc -O2 -shared -fPIC -o "$W/timeline.so" "$ROOT/scripts/gpu/timeline.c" -ldl; }
tl_test() { test=(-p 512 -n 0); [ "${TL_TEST:-pp}" = tg ] && test=(-p 0 -n 64); } # tg: each decode step a batch
stage_timeline() { # issue 6: where a prompt batch's time goes (timeline.c/.py), native and vgpu configurations TL_CFGS (TL_GPU=1: the GPU's side too)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  timeline_prep || return
  local test; tl_test
  local args=(-m $W/${TL_MODEL:-q8}.gguf "${test[@]}" -ngl 99 -r "${TL_REPS:-60}")
  for round in $(seq "${TL_ROUNDS:-2}"); do
    for c in ${TL_CFGS:-native unix tcp shm unix+VGPU_LANES=0}; do
      rm -f "$W/tl.txt" # a run that fails must not report the one before it
      as_cfg "$c" env TL_OUT="$W/tl.txt" LD_PRELOAD="$W/timeline.so" $B/llama-bench "${args[@]}" >/dev/null 2>&1
      [ -n "${TL_KEEP:-}" ] && mkdir -p "$OUT/tl" && gzip -c "$W/tl.txt" >"$OUT/tl/$c.$round.txt.gz" # every call, for later
      say "timeline $(python3 "$ROOT/scripts/gpu/timeline.py" "$W/tl.txt" "$c" ${TL_DUMP:+--dump} 2>&1)"
    done
  done
}
cpu_ticks() { # busy CPU ticks of the whole machine, and of the servers (DIST_B's too) with their reaped workers
  awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat
  cat /proc/$SERVER_PID/stat ${SERVER_B_PID:+/proc/$SERVER_B_PID/stat} | awk '{sub(/.*\) /,""); t+=$12+$13+$14+$15} END {print t}'
}
stage_concurrent() { # a shared GPU: CONC_N llama-bench runs at once (CONC_TEST tg|pp|mix, CONC_MODEL, CONC_REPS), natively and through CONC_CFGS, CONC_ROUNDS rounds in turns; summed t/s, and the cores busy (all; the server's). mix: the first run prompts (pp512, CONC_PP_REPS, from CONC_PP_DELAY s on, through CONC_PP_CFG if set), the others decode
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  local n=${CONC_N:-4} test=(-p 0 -n 128); [ "${CONC_TEST:-tg}" = pp ] && test=(-p 512 -n 0)
  local args=(-m $W/${CONC_MODEL:-q8v}.gguf "${test[@]}" -ngl 99 -r "${CONC_REPS:-3}" -o json)
  for r in $(seq "${CONC_ROUNDS:-3}"); do
    for c in ${CONC_CFGS:-native unix tcp}; do
      settle; local a=($(cpu_ticks)) t0=$EPOCHREALTIME pids=()
      for i in $(seq "$n"); do
        local a_i=("${args[@]}") # mix: the first prompts while the others decode
        # (it starts CONC_PP_DELAY s late and does fewer repetitions, so that all of its
        # samples fall while the others decode)
        if [ "${CONC_TEST:-tg}" = mix ] && [ "$i" = 1 ]; then
          a_i=(-m $W/${CONC_MODEL:-q8v}.gguf -p 512 -n 0 -ngl 99 -r "${CONC_PP_REPS:-60}" -o json)
          (sleep "${CONC_PP_DELAY:-2}"; as_cfg "${CONC_PP_CFG:-$c}" $B/llama-bench "${a_i[@]}") >"$W/conc.$i.json" 2>/dev/null & pids+=($!)
          continue
        fi
        as_cfg "$c" $B/llama-bench "${a_i[@]}" >"$W/conc.$i.json" 2>/dev/null & pids+=($!)
      done
      # CONC_THREADS=1: every thread's CPU while the last run lives (threadcpu.py)
      [ -n "${CONC_THREADS:-}" ] && python3 "$ROOT/scripts/gpu/threadcpu.py" "${pids[-1]}" llama-bench "vgpu worker" "vgpu serve" >"$OUT/conc-threads-$c-$r.txt"
      wait "${pids[@]}"; local secs; secs=$(elapsed "$t0"); settle; local b=($(cpu_ticks))
      # summed medians; mix: the prompt's and the decoders' apart
      local sum; sum=$(python3 -c 'import json,sys,statistics as s
d = [t for f in sys.argv[1:] for t in json.load(open(f))]
r = [(t["n_prompt"] > 0, s.median(t["samples_ts"])) for t in d]
pp, tg = sum(v for p, v in r if p), sum(v for p, v in r if not p)
q = [v for t in d if t["n_prompt"] > 0 for v in t["samples_ts"]]
q = s.quantiles(q, n=10) if len(q) > 1 else [0] * 9
print("%.0f" % (pp + tg) if not (pp and tg) else "prompt %.0f (p10 %.0f, p90 %.0f), decoders %.1f" % (pp, q[0], q[8], tg))' "$W"/conc.*.json 2>&1)
      local tick; tick=$(getconf CLK_TCK)
      say "concurrent $n x ${CONC_MODEL:-q8v} ${CONC_TEST:-tg} $c round $r: $sum t/s summed, ${secs} s, cores busy $(awk -v d=$((b[0]-a[0])) -v s="$secs" -v t=$tick 'BEGIN{printf "%.1f", d/t/s}') (server $(awk -v d=$((b[1]-a[1])) -v s="$secs" -v t=$tick 'BEGIN{printf "%.1f", d/t/s}'))"
      rm -f "$W"/conc.*.json
    done
  done
}
stage_sharedflags() { # tests/gpu/shared_flags.c beside a second session: the flags an application reads while the server blocks its waits (native and vgpu must match), and the server's log of it
  gcc -O1 -o "$W/shared_flags" "$ROOT/tests/gpu/shared_flags.c" -I/usr/local/cuda/include -L/usr/local/cuda/lib64/stubs -lcuda || { say "FAIL shared_flags build"; return; }
  local other # (a bare `wait` would wait for the server too)
  "$W/shared_flags" busy & other=$!; timeout 30 "$W/shared_flags" >"$W/sf.n" 2>&1; wait $other
  stop_server; VGPU_SERVER_LOG=debug start_server
  vg "$W/shared_flags" busy & other=$!; timeout 30 "$NOGPU" env VGPU_SERVER=unix:$SOCK LD_LIBRARY_PATH="$C/dist/lib" "$W/shared_flags" >"$W/sf.v" 2>&1; wait $other
  compare shared-flags "$W/sf.n" "$W/sf.v"; cp "$W/sf.n" "$OUT/shared-flags-native.txt"; cp "$W/sf.v" "$OUT/shared-flags-vgpu.txt"
  stop_server; cp "$OUT/server.log" "$OUT/server-sharedflags.log" # the restart below starts a new one
  say "shared-flags server: $(grep -c 'the GPU is shared' "$OUT/server-sharedflags.log") times shared, $(grep -c 'alone again' "$OUT/server-sharedflags.log") alone again"
  start_server
}
stage_nvrt() { # NVIDIA's own runtime and cuBLAS over vgpu's libcuda.so.1 and libnvidia-ml.so.1 alone (what `vgpu install system` gives every program): nvcc's default static runtime, cuBLAS, PyTorch and CuPy (scripts/gpu/py_probe.py)
  local D; D=$(driver_only)
  nvcc -O2 -arch=sm_90 -o "$W/rt_static" "$ROOT/tests/gpu/rt_vecadd.cu" || { say "FAIL rt_static build"; return; }
  "$W/rt_static" >"$W/rs.n" 2>&1; echo "rc=$?" >>"$W/rs.n"
  VGLIB=$D vg "$W/rt_static" >"$W/rs.v" 2>&1; echo "rc=$?" >>"$W/rs.v"
  compare nvrt-static "$W/rs.n" "$W/rs.v"; cp "$W/rs.v" "$OUT/nvrt-static-vgpu.txt"
  if [ -n "${NVRT_GDB:-}" ]; then
    say "gdb: $(command -v gdb || echo none)"
    VGLIB=$D vg gdb -batch -ex run -ex bt -ex "info threads" -ex "thread apply all bt 8" --args "$W/rt_static" >"$OUT/gdb-static.txt" 2>&1
  fi
  nvcc -O2 -arch=sm_90 -o "$W/cublas_static" "$ROOT/tests/gpu/cublas_gemm.cu" -lcublas || { say "FAIL cublas_static build"; return; }
  "$W/cublas_static" >"$W/cs.n" 2>&1; echo "rc=$?" >>"$W/cs.n"
  VGLIB=$D vg "$W/cublas_static" >"$W/cs.v" 2>&1; echo "rc=$?" >>"$W/cs.v"
  compare nvrt-cublas "$W/cs.n" "$W/cs.v"; cp "$W/cs.v" "$OUT/nvrt-cublas-vgpu.txt"
  [ -n "${NVRT_TRACE:-}" ] && VGLIB=$D vg env VGPU_TRACE=1 CUBLASLT_LOG_LEVEL=5 CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG=stderr "$W/cublas_static" >"$OUT/nvrt-cublas-trace.txt" 2>&1
  for m in cupy torch; do
    local t0=$EPOCHREALTIME
    timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$W/py-$m.n" 2>"$OUT/py-$m-native.err"; echo "rc=$?" >>"$W/py-$m.n"
    local tn; tn=$(elapsed "$t0"); t0=$EPOCHREALTIME
    VGLIB=$D vg timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$W/py-$m.v" 2>"$OUT/py-$m-vgpu.err"; echo "rc=$?" >>"$W/py-$m.v"
    say "py-$m probe wall time: native ${tn}s, vgpu $(elapsed "$t0")s"
    [ -n "${NVRT_TRACE:-}" ] && VGLIB=$D vg env VGPU_TRACE=1 timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >/dev/null 2>"$OUT/py-$m-trace.txt"
    cp "$W/py-$m.n" "$OUT/py-$m-native.txt"; cp "$W/py-$m.v" "$OUT/py-$m-vgpu.txt"
    compare nvrt-$m "$W/py-$m.n" "$W/py-$m.v"
    # The same with vgpu's cuBLAS preloaded: the library's name is taken, so the framework's
    # own copy is not loaded.
    VGLIB=$D vg env LD_PRELOAD="$C/dist/lib/libcublas.so.13 $C/dist/lib/libcublasLt.so.13" timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$W/py-$m.b" 2>"$OUT/py-$m-vgpublas.err"; echo "rc=$?" >>"$W/py-$m.b"
    cp "$W/py-$m.b" "$OUT/py-$m-vgpublas.txt"; compare nvrt-$m-vgpublas "$W/py-$m.n" "$W/py-$m.b"
  done
  # NVRT_LOADTRACE=1: how many module and library loads the probes make natively and what
  # the driver takes for them (scripts/gpu/loadtrace.c), beside the server's load cost line.
  if [ -n "${NVRT_LOADTRACE:-}" ] && gcc -O1 -shared -fPIC -o "$W/loadtrace.so" "$ROOT/scripts/gpu/loadtrace.c" -ldl -lpthread; then
    for m in torch cupy; do
      local t0=$EPOCHREALTIME
      LOADTRACE_OUT=$OUT/loadtrace-$m.txt LD_PRELOAD=$W/loadtrace.so timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$OUT/loadtrace-$m.out" 2>&1
      say "loadtrace $m: $(elapsed "$t0")s natively; $(grep -h 'cuLibraryLoadData:' "$OUT/loadtrace-$m.txt" | tr '\n' ' ')"
    done
    say "server's loads: $(grep -o 'module images: .*' "$OUT/server.log" | tr '\n' ';')"
  fi
}
stage_pyextra() { # Python beyond the probes, over vgpu's libcuda.so.1 alone: numba, Triton (its launcher, a TMA descriptor, torch.compile), a CUDA tensor shared with another process (torch.multiprocessing: CUDA IPC), PyTorch's cudaMallocAsync backend (stream-ordered pools) and its expandable segments (virtual memory management)
  local D; D=$(driver_only)
  if python3 -c "import numba.cuda" 2>/dev/null; then
    timeout 300 python3 "$ROOT/scripts/gpu/numba_probe.py" >"$W/nb.n" 2>"$OUT/numba-native.err"; echo "rc=$?" >>"$W/nb.n"
    VGLIB=$D vg timeout 300 python3 "$ROOT/scripts/gpu/numba_probe.py" >"$W/nb.v" 2>"$OUT/numba-vgpu.err"; echo "rc=$?" >>"$W/nb.v"
    cp "$W/nb.n" "$OUT/numba-native.txt"; cp "$W/nb.v" "$OUT/numba-vgpu.txt"; compare numba "$W/nb.n" "$W/nb.v"
  else
    say "numba: not installed here ($(python3 -c 'import numba' 2>&1 | tail -1))"
  fi
  timeout 300 python3 "$ROOT/scripts/gpu/triton_probe.py" >"$W/tr.n" 2>"$OUT/triton-native.err"; echo "rc=$?" >>"$W/tr.n"
  # Triton finds libcuda through `ldconfig -p` first, whose cache here still names the
  # driver's hidden files (a VM without NVIDIA's driver names none and falls back to
  # LD_LIBRARY_PATH): TRITON_LIBCUDA_PATH says where. It also links against libcuda.so.
  ln -sf "$C/dist/lib/libcuda.so" "$D/"
  VGLIB=$D vg env TRITON_LIBCUDA_PATH=$D timeout 300 python3 "$ROOT/scripts/gpu/triton_probe.py" >"$W/tr.v" 2>"$OUT/triton-vgpu.err"; echo "rc=$?" >>"$W/tr.v"
  cp "$W/tr.n" "$OUT/triton-native.txt"; cp "$W/tr.v" "$OUT/triton-vgpu.txt"; compare triton "$W/tr.n" "$W/tr.v"
  timeout 300 python3 "$ROOT/scripts/gpu/torch_ipc.py" >"$W/ti.n" 2>"$OUT/torch-ipc-native.err"; echo "rc=$?" >>"$W/ti.n"
  VGLIB=$D vg timeout 300 python3 "$ROOT/scripts/gpu/torch_ipc.py" >"$W/ti.v" 2>"$OUT/torch-ipc-vgpu.err"; echo "rc=$?" >>"$W/ti.v"
  cp "$W/ti.n" "$OUT/torch-ipc-native.txt"; cp "$W/ti.v" "$OUT/torch-ipc-vgpu.txt"; compare torch-ipc "$W/ti.n" "$W/ti.v"
  export PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync
  timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" torch >"$W/ta.n" 2>"$OUT/torch-async-native.err"; echo "rc=$?" >>"$W/ta.n"
  VGLIB=$D vg timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" torch >"$W/ta.v" 2>"$OUT/torch-async-vgpu.err"; echo "rc=$?" >>"$W/ta.v"
  unset PYTORCH_CUDA_ALLOC_CONF
  cp "$W/ta.n" "$OUT/torch-async-native.txt"; cp "$W/ta.v" "$OUT/torch-async-vgpu.txt"; compare torch-mallocasync "$W/ta.n" "$W/ta.v"
  # The caching allocator's expandable segments (virtual memory management), as vLLM sets.
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" torch >"$W/te.n" 2>"$OUT/torch-expandable-native.err"; echo "rc=$?" >>"$W/te.n"
  VGLIB=$D vg timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" torch >"$W/te.v" 2>"$OUT/torch-expandable-vgpu.err"; echo "rc=$?" >>"$W/te.v"
  unset PYTORCH_CUDA_ALLOC_CONF
  cp "$W/te.n" "$OUT/torch-expandable-native.txt"; cp "$W/te.v" "$OUT/torch-expandable-vgpu.txt"; compare torch-expandable "$W/te.n" "$W/te.v"
}
stage_calltrace() { # issue: cuFFT over vgpu's driver. Every driver call PyTorch's probe makes from cuFFT's first request for table 6E163FBE on, natively and through vgpu (scripts/gpu/calltrace.c), side by side
  gcc -O1 -shared -fPIC -o "$W/calltrace.so" "$ROOT/scripts/gpu/calltrace.c" -ldl -lpthread || { say "FAIL calltrace build"; return; }
  local D; D=$(driver_only)
  local a=${CALLTRACE_AFTER:-6E163FBEB958444D835CE182AFF1991E} m=${CALLTRACE_PROBE:-torch}
  CALLTRACE_OUT=$OUT/calls-native.txt CALLTRACE_AFTER=$a LD_PRELOAD=$W/calltrace.so timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$OUT/calls-native.out" 2>&1
  VGLIB=$D vg env CALLTRACE_OUT=$OUT/calls-vgpu.txt CALLTRACE_AFTER=$a LD_PRELOAD=$W/calltrace.so timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$OUT/calls-vgpu.out" 2>&1
  say "calltrace: native $(wc -l <"$OUT/calls-native.txt") calls, vgpu $(wc -l <"$OUT/calls-vgpu.txt")"
  # The calls by name in order, without their arguments: where the two part.
  diff <(sed 's/(.*) = / = /' "$OUT/calls-native.txt" | grep -v '^cuGetProcAddress') <(sed 's/(.*) = / = /' "$OUT/calls-vgpu.txt" | grep -v '^cuGetProcAddress') | head -60 >"$OUT/calls.diff"
  say "$(head -40 "$OUT/calls.diff")"
}
stage_darktrace() { # issue: NVIDIA's cuBLAS/cuFFT over vgpu's driver. Natively, which slots of the driver's tables 21318C60 and DA9151D3 NVIDIA's libraries call, with what (scripts/gpu/darktrace.c)
  gcc -O1 -shared -fPIC -o "$W/darktrace.so" "$ROOT/scripts/gpu/darktrace.c" -ldl -lpthread || { say "FAIL darktrace build"; return; }
  local u=${DARK_UUIDS:-21318C60971432488CA641FF7324C8F2,DA9151D33AE6CC41A5C04F26D533E328}
  nvcc -O2 -arch=sm_90 -o "$W/cublas_static" "$ROOT/tests/gpu/cublas_gemm.cu" -lcublas || { say "FAIL cublas_static build"; return; }
  nvcc -O2 -arch=sm_90 -o "$W/cublas_shared" "$ROOT/tests/gpu/cublas_gemm.cu" -lcublas -cudart shared
  DARKTRACE_OUT=$OUT/dark-cublas-static.txt DARKTRACE_UUIDS=$u LD_PRELOAD=$W/darktrace.so "$W/cublas_static" >"$OUT/dark-cublas-static.out" 2>&1
  DARKTRACE_OUT=$OUT/dark-cublas-shared.txt DARKTRACE_UUIDS=$u LD_PRELOAD=$W/darktrace.so "$W/cublas_shared" >"$OUT/dark-cublas-shared.out" 2>&1
  # DARK_VGPU=1: the torch probe through vgpu's driver too, its function objects trapped
  # (DARKTRACE_TRAP): which fields of the object cuFFT reads.
  if [ -n "${DARK_VGPU:-}" ]; then
    local D; D=$(driver_only)
    VGLIB=$D vg env DARKTRACE_OUT=$OUT/dark-vgpu-torch.txt DARKTRACE_UUIDS=$u DARKTRACE_TRAP=1 LD_PRELOAD=$W/darktrace.so timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" torch >"$OUT/dark-vgpu-torch.out" 2>&1
    say "dark-vgpu-torch: $(grep -c 'read +' "$OUT/dark-vgpu-torch.txt") reads; $(grep 'read +' "$OUT/dark-vgpu-torch.txt" | sort | uniq -c | sort -rn | head -20 | tr '\n' ';')"
  fi
  for m in torch cupy; do
    DARKTRACE_OUT=$OUT/dark-$m.txt DARKTRACE_UUIDS=$u LD_PRELOAD=$W/darktrace.so timeout 300 python3 "$ROOT/scripts/gpu/py_probe.py" $m >"$OUT/dark-$m.out" 2>&1
  done
  [ -n "${DARK_NO_LLAMA:-}" ] || { build_llama; models
  DARKTRACE_OUT=$OUT/dark-llama-f16.txt DARKTRACE_UUIDS=$u LD_PRELOAD=$W/darktrace.so LD_LIBRARY_PATH=$LB/bin "$LB/bin/llama-completion" -m $W/f16.gguf -p "hello world" -n 8 --temp 0 --seed 1 -ngl 99 -no-cnv >"$OUT/dark-llama.out" 2>&1 </dev/null; }
  for f in "$OUT"/dark-*.txt; do say "$(basename "$f"): $(grep -c '^[0-9A-F]\{8\}\[' "$f") calls, slots $(grep -o '^[0-9A-F]\{8\}\[[0-9]*\]' "$f" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"; done
}
stage_nvrt12() { # NVIDIA's CUDA 12.9 runtime (devcarry/cu12) over vgpu's libcuda.so.1 alone: tests/gpu/rt12.c as in stage cu12
  local D; D=$(driver_only)
  nvcc -arch=sm_90 -fatbin -o "$W/k12.fatbin" "$ROOT/tests/gpu/k12.cu"
  python3 -c "import sys; d=open(sys.argv[1],'rb').read(); print('__attribute__((aligned(8))) unsigned char k12_fatbin[] = {' + ','.join(map(str, d)) + '};')" "$W/k12.fatbin" >"$W/k12.h"
  gcc -O1 -o "$W/rt12" "$ROOT/tests/gpu/rt12.c" -I"$W" -I"$C/cu12/include" -I/usr/local/cuda/include "$C/cu12/libcudart.so.12" -Wl,-rpath,'$ORIGIN' || { say "FAIL cu12 build"; return; }
  LD_LIBRARY_PATH=$C/cu12 "$W/rt12" >"$W/n12.n" 2>&1; echo "rc=$?" >>"$W/n12.n"
  VGLIB=$D EXTRA_LD=$C/cu12 vg "$W/rt12" >"$W/n12.v" 2>&1; echo "rc=$?" >>"$W/n12.v"
  compare nvrt12 "$W/n12.n" "$W/n12.v"; cp "$W/n12.v" "$OUT/nvrt12-vgpu.txt"
  [ -n "${NVRT_TRACE:-}" ] && VGLIB=$D EXTRA_LD=$C/cu12 vg env VGPU_TRACE=1 "$W/rt12" >"$OUT/nvrt12-trace.txt" 2>&1
}
stage_frames() { # one batch as the application and the server saw it: timeline.c and the worker's frame log (frames.py) for FL_CFGS (TL_TEST=tg: decode)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  timeline_prep || return
  local test; tl_test
  local fl=/tmp/vgpu-frames
  stop_server; rm -rf $fl; mkdir -p $fl; VGPU_FRAME_LOG=$fl/f start_server
  for c in native ${FL_CFGS:-unix tcp}; do
    rm -f $fl/w.* # the client's writes (VGPU_WRITE_LOG), one file a process
    as_cfg "$c" env TL_OUT="$W/fl.$c" LD_PRELOAD="$W/timeline.so" VGPU_WRITE_LOG=$fl/w $B/llama-bench -m $W/${TL_MODEL:-q8}.gguf "${test[@]}" -ngl 99 -r "${TL_REPS:-20}" >/dev/null 2>&1
    say "timeline $(python3 "$ROOT/scripts/gpu/timeline.py" "$W/fl.$c" "$c" 2>&1)"
    [ "$c" = native ] && continue
    sleep 0.5; local f w; f=$(ls -t $fl/f.* 2>/dev/null | head -1); [ -n "$f" ] || continue
    w=$(ls -S $fl/w.* 2>/dev/null | head -1)
    python3 "$ROOT/scripts/gpu/frames.py" "$W/fl.$c" "$f" $w >"$OUT/frames-$c.txt" 2>&1; mv "$f" "$OUT/framelog-$c"
    [ -n "$w" ] && mv "$w" "$OUT/writelog-$c"
  done
  stop_server; start_server
}
stage_micro() { # issue 6: does a pageable copy wait for its stream (pgsync.cu); socket against process_vm_readv for 4 MiB (cmabench.c)
  nvcc -O2 -o "$W/pgsync" "$ROOT/scripts/gpu/pgsync.cu" && "$W/pgsync" | tee -a "$SUMMARY"
  gcc -O2 -o "$W/cmabench" "$ROOT/scripts/gpu/cmabench.c" -lpthread || return
  for s in 0 16; do for l in 1 4 8; do timeout 60 "$W/cmabench" $s $l | tee -a "$SUMMARY"; done; done
  # socket write against vmsplice + splice (one copy), unix and TCP; threads that sleep, with a shorter scheduler slice or not
  gcc -O2 -o "$W/splicebench" "$ROOT/scripts/gpu/splicebench.c" -lpthread || return
  for s in 0 15; do for l in 4 8; do for f in unix tcp; do timeout 60 "$W/splicebench" $s $l $f | tee -a "$SUMMARY"; done; done; done
  for sl in "" 100 300; do for f in unix tcp; do BLOCK=1 SLICE_US=$sl timeout 60 "$W/splicebench" 15 4 $f | tee -a "$SUMMARY"; done; done
}
stage_topo() { # issue 6: the host's CPU topology (L3 domains, SMT), and 4 MiB over four sockets with the copying threads placed within one L3 domain or across two (splicebench.c)
  lscpu | tee -a "$SUMMARY"
  for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "$(basename $c) l3=$(cat $c/cache/index3/shared_cpu_list 2>/dev/null) smt=$(cat $c/topology/thread_siblings_list) pkg=$(cat $c/topology/physical_package_id) die=$(cat $c/topology/die_id 2>/dev/null)"; done | tee -a "$SUMMARY"
  gcc -O2 -o "$W/splicebench" "$ROOT/scripts/gpu/splicebench.c" -lpthread || return
  # cpu0's L3 domain and the CPUs outside it, each as a list of numbers ("0,1,2").
  local a b; { read -r a; read -r b; } < <(python3 - /sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list <<'PY'
import os, sys
def expand(s):
    out = []
    for part in s.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out
mine = expand(open(sys.argv[1]).read().strip())
print(",".join(map(str, mine)))
print(",".join(str(c) for c in sorted(os.sched_getaffinity(0)) if c not in set(mine)))
PY
)
  say "topo: L3 of cpu0: $a; the others: ${b:-none}"
  local A4 B4 A4b; A4=$(echo "$a" | cut -d, -f2-5); A4b=$(echo "$a" | cut -d, -f6-9); B4=$(echo "$b" | cut -d, -f1-4)
  for f in unix tcp; do for r in 1 2; do
    WRITE_ONLY=1 timeout 60 "$W/splicebench" 0 4 $f | tee -a "$SUMMARY"
    WRITE_ONLY=1 MAIN_CPU=0 SEND_CPUS=$A4 RECV_CPUS=$A4b timeout 60 "$W/splicebench" 0 4 $f | tee -a "$SUMMARY"
    [ -n "$b" ] || continue
    WRITE_ONLY=1 MAIN_CPU=0 SEND_CPUS=$A4 RECV_CPUS=$B4 timeout 60 "$W/splicebench" 0 4 $f | tee -a "$SUMMARY"
    WRITE_ONLY=1 MAIN_CPU=0 SEND_CPUS=$B4 RECV_CPUS=$A4b timeout 60 "$W/splicebench" 0 4 $f | tee -a "$SUMMARY"
  done; done
}
stage_replybench() { # issue 6: what writing 128 KB of logits costs: reading them fresh from the GPU's DMA, and writing them to a polled socket (replybench.cu)
  nvcc -O2 -o "$W/replybench" "$ROOT/scripts/gpu/replybench.cu" || return
  for n in 128000 524288; do timeout 120 "$W/replybench" $n | tee -a "$SUMMARY"; done
}
stage_writesize() { # issue 6: one write of a decode step's frames by its size, whole or in pieces, the writer sleeping or polling between (writesize.c)
  gcc -O2 -o "$W/writesize" "$ROOT/scripts/gpu/writesize.c" -lpthread || return
  for f in unix tcp; do
    for s in 64 4000 8281 16384 131072; do timeout 30 "$W/writesize" $f $s $s 1000 | tee -a "$SUMMARY"; done
    timeout 30 "$W/writesize" $f 8281 4000 1000 | tee -a "$SUMMARY"
    timeout 30 "$W/writesize" $f 8281 8281 0 | tee -a "$SUMMARY"
    for s in 64 8281; do SPIN=1 timeout 30 "$W/writesize" $f $s $s 1000 | tee -a "$SUMMARY"; done
  done
}
stage_asides() { # issue 6: how often a prompt run's lanes were set aside for lagging (ASIDE_CFGS; VGPU_TRACE=summary), ASIDE_RUNS runs each; ASIDE_TEST=load: model loads (llama-completion) instead
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for _ in $(seq "${ASIDE_RUNS:-3}"); do
    for c in ${ASIDE_CFGS:-unix tcp}; do
      if [ "${ASIDE_TEST:-pp}" = load ]; then # a model's load and one token (llama-completion), as a start of Ollama's runner would
        local t0=$EPOCHREALTIME
        as_cfg "$c+VGPU_TRACE=summary" $B/llama-completion -m $W/q8.gguf -p hello -n 1 --temp 0 --seed 1 -ngl 99 -no-cnv >/dev/null 2>"$W/as.err" </dev/null
        say "asides $c load: $(elapsed "$t0") s; $(grep -h 'set aside' "$W/as.err" | tr -s ' ' | tr '\n' ';')"
        continue
      fi
      as_cfg "$c+VGPU_TRACE=summary" $B/llama-bench -m $W/q8.gguf -p 512 -n 0 -ngl 99 -r 20 -o json >"$W/as.json" 2>"$W/as.err"
      say "asides $c: pp $(python3 -c 'import json,sys,statistics as s; print("%.0f" % s.median(x for t in json.load(open(sys.argv[1])) for x in t["samples_ts"]))' "$W/as.json" 2>&1) t/s; $(grep -h 'set aside' "$W/as.err" | tr -s ' ' | tr '\n' ';')"
    done
  done
}
stage_pollcost() { # issue 6: what K polling threads (as the lanes poll: poll + sched_yield; or pause-spinning) cost a working thread; the VM's CPU topology
  lscpu | grep -E '^(CPU\(s\)|Thread|Core|Socket|Model name|NUMA node0|L2|L3)' | tee -a "$SUMMARY"
  gcc -O2 -o "$W/pollcost" "$ROOT/scripts/gpu/pollcost.c" -lpthread || return
  for m in yield pause; do for k in 0 4 8 12 15; do "$W/pollcost" $m $k | tee -a "$SUMMARY"; done; done
}
stage_percpu() { # issue 6: native pp512 with llama-bench pinned to each core in turn, PERCPU_PASSES times: do some cores run slower?
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for pass in $(seq "${PERCPU_PASSES:-2}"); do
    local row=""
    for k in $(seq 0 $(( $(nproc) - 1 ))); do
      taskset -c $k env LD_LIBRARY_PATH=$B $B/llama-bench -m $W/q8.gguf -p 512 -n 0 -ngl 99 -r 3 -o json >"$W/percpu.json" 2>/dev/null
      row+=" $k:$(medians "$W/percpu.json")"
    done
    say "percpu pass $pass (core:test t/s):$row"
  done
}
stage_cpu() { # issue 6: CPU time of each thread of llama-bench pp512 and of the server, natively and through CPU_CFGS
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for c in ${CPU_CFGS:-native tcp unix}; do
    as_cfg "$c" $B/llama-bench -m $W/q8.gguf -p 512 -n 0 -ngl 99 -r "${CPU_REPS:-300}" ${CPU_ARGS:-} -o json >"$W/cpu.json" 2>/dev/null &
    local bp=$!
    say "cpu $c: $(python3 "$ROOT/scripts/gpu/threadcpu.py" $bp llama-bench "vgpu worker" "vgpu serve" | tee "$OUT/cpu-$c.txt" | head -1), pp512 $(medians "$W/cpu.json")"
    cat "$OUT/cpu-$c.txt" >>"$SUMMARY"
  done
}
stage_h2dlat() { # host-to-device copy + synchronize latency by size, from pinned memory, natively and through vgpu (LAT_CFGS, LAT_GAP_US)
  nvcc -O2 -arch=sm_90 -cudart shared -o "$W/h2dlat" "$ROOT/scripts/gpu/h2dlat.cu" || return
  for c in ${LAT_CFGS:-native unix tcp shm}; do
    say "h2dlat $c:"; as_cfg "$c" "$W/h2dlat" "${LAT_GAP_US:-1000}" 2>&1 | tee -a "$SUMMARY"
  done
}
# The rows of the last "time per call" table (VGPU_STATS=1) a server log holds: the session
# that ended last.
last_call_table() { awk '/time per call/ {buf=""} {buf=buf $0 "\n"} END {printf "%s", buf}' "$1" | grep -E '^  [a-zA-Z_]'; }
stage_ppstats() { # issue 6: server time per call of prompt processing alone: a run of 1 and one of 6, subtracted
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for m in ${PP_MODELS:-f16}; do
    for r in 1 6; do
      vg $B/llama-bench -m $W/$m.gguf -p 512 -n 0 -ngl 99 -r $r >/dev/null 2>&1
      sleep 1; last_call_table "$OUT/server.log" >"$W/pps.$m.$r"
    done
    say "pp512 $m: server time of 5 more runs, per run:"
    awk 'NR==FNR {t[$1]=$4; n[$1]=$2; next} {d=($4-t[$1])/5; if (d>0.05) printf "  %-28s %6.1f calls %8.3f ms\n", $1, ($2-n[$1])/5, d}' "$W/pps.$m.1" "$W/pps.$m.6" | sort -k4 -rn | head -15 | tee -a "$SUMMARY"
  done
}
stage_srvstats() { # server time per call kind of one pp512 run (q8, SS_REPS reps) per configuration SS_CFGS (@b: the second server's)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  for c in ${SS_CFGS:-unix unix@b}; do
    local log=$OUT/server.log
    case $c in *@b*) log=$OUT/server-b.log ;; esac
    as_cfg "$c" $B/llama-bench -m $W/q8.gguf -p 512 -n 0 -ngl 99 -r "${SS_REPS:-30}" >/dev/null 2>&1
    sleep 1
    say "server time per call, pp512 q8 x${SS_REPS:-30} + warm-up, $c:"
    last_call_table "$log" | head -12 | tee -a "$SUMMARY"
  done
}
stage_bands() { # per-process speed bands: per-run medians of BANDS_RUNS pp512 runs, natively and over unix, free and pinned to cores (BANDS_CPUS)
  build_llama; models
  B=$LB/bin; export EXTRA_LD=$B
  local med='import json,sys,statistics as s; print("%.0f" % s.median([x for t in json.load(sys.stdin) for x in t["samples_ts"]]))'
  for pin in "" "taskset -c ${BANDS_CPUS:-0-7}"; do
    for c in native unix; do
      local runs=()
      for _ in $(seq "${BANDS_RUNS:-10}"); do
        runs+=("$(as_cfg "$c" $pin $B/llama-bench -m $W/q8.gguf -p 512 -n 0 -ngl 99 -r 5 -o json 2>/dev/null | python3 -c "$med")")
      done
      say "bands ${pin:-free} $c: ${runs[*]}"
    done
  done
}
stage_ttft() { # issue 6: process start to first generated token (one token, then exit), twice
  build_llama; models
  B=$LB/bin
  local args=(-m $W/q8.gguf -p "hello" -n 1 --temp 0 --seed 1 -ngl 99 -no-cnv) t0 n v s
  for i in 1 2 3; do
    t0=$EPOCHREALTIME; LD_LIBRARY_PATH=$B "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; n=$(elapsed "$t0")
    t0=$EPOCHREALTIME; EXTRA_LD=$B vg "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; v=$(elapsed "$t0")
    t0=$EPOCHREALTIME; VGPU_SERVER=shm:$SOCK LD_LIBRARY_PATH="$C/dist/lib:$B" "$NOGPU" "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; s=$(elapsed "$t0")
    local tl=n/a; if [ -n "${TLS_OK:-}" ]; then t0=$EPOCHREALTIME; EXTRA_LD=$B vg_tls "$B/llama-completion" "${args[@]}" >/dev/null 2>&1 </dev/null; tl=$(elapsed "$t0"); fi
    say "start to first token, start $i: native $n s, vgpu unix $v s, vgpu shm $s s, vgpu tls $tl s"
  done
}

stage_latab() { # launch + synchronize latency (launch_bench), configurations AB_CFGS taken in turns AB_ROUNDS times
  build_gpu_tests
  local cfgs=(${AB_CFGS:-native unix shm shm+VGPU_SHM_RING=0})
  for _ in $(seq "${AB_ROUNDS:-5}"); do
    for c in "${cfgs[@]}"; do as_cfg "$c" "$W/launch_bench" | tail -1 | sed "s/^/$c /" >>"$W/latab.txt"; done
  done
  cp "$W/latab.txt" "$OUT/"
  for c in "${cfgs[@]}"; do
    say "latab $c: launch_sync_us median $(grep "^$c " "$W/latab.txt" | sed 's/.*launch_sync_us=\([0-9.]*\).*/\1/' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " of " NR}')"
  done
}

stage_llamaserver() { # Ollama >= 0.30 runs llama.cpp's llama-server to list the GPUs and to serve: its device list and a completion over HTTP, natively and through vgpu (unix, TCP)
  [ -f "$C/llama/tools/ui/CMakeLists.txt" ] || { say "SKIP llamaserver: devcarry/llama lacks tools/ui (scripts/gpu/pack.sh adds it)"; return; }
  models
  local SB=/tmp/llama-server-build
  if [ ! -x $SB/bin/llama-server ]; then
    ( time { cmake -S "$C/llama" -B $SB -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null &&
      cmake --build $SB -j"$(nproc)" --target llama-server; } ) >"$OUT/llama-server-build.log" 2>&1 || { say "FAIL llama-server build"; return; }
  fi
  local B=$SB/bin
  # Free memory moves between runs: the list is compared with it masked.
  local mask='s/[0-9]+ MiB free/N MiB free/'
  LD_LIBRARY_PATH=$B $B/llama-server --list-devices 2>&1 | sed -E "$mask" >"$W/ls.n"
  EXTRA_LD=$B vg $B/llama-server --list-devices 2>&1 | sed -E "$mask" >"$W/ls.v"
  compare llama-server-devices "$W/ls.n" "$W/ls.v"; say "llama-server --list-devices through vgpu: $(grep -m1 CUDA0 "$W/ls.v")"
  local port=8090 how
  for how in native unix tcp; do
    port=$((port + 1))
    case $how in
      native) LD_LIBRARY_PATH=$B $B/llama-server -m $W/q8.gguf -ngl 99 -c 2048 --host 127.0.0.1 --port $port >"$OUT/llama-server-$how.log" 2>&1 & ;;
      unix) EXTRA_LD=$B vg $B/llama-server -m $W/q8.gguf -ngl 99 -c 2048 --host 127.0.0.1 --port $port >"$OUT/llama-server-$how.log" 2>&1 & ;;
      tcp) EXTRA_LD=$B vg_tcp $B/llama-server -m $W/q8.gguf -ngl 99 -c 2048 --host 127.0.0.1 --port $port >"$OUT/llama-server-$how.log" 2>&1 & ;;
    esac
    local pid=$!
    python3 - $port >"$W/srv.$how" 2>&1 <<'PY'
import json, sys, time, urllib.request
base = "http://127.0.0.1:%s" % sys.argv[1]
for _ in range(240):
    try:
        if json.load(urllib.request.urlopen(base + "/health", timeout=2)).get("status") == "ok":
            break
    except Exception:
        pass
    time.sleep(0.25)
body = json.dumps({"prompt": "hello world", "n_predict": 32, "temperature": 0, "seed": 1, "cache_prompt": False}).encode()
req = urllib.request.Request(base + "/completion", body, {"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=60))["content"])
PY
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
  done
  say "llama-server text native: $(head -c 100 "$W/srv.native" | tr '\n' ' ')"
  compare llama-server-text-unix "$W/srv.native" "$W/srv.unix"
  compare llama-server-text-tcp "$W/srv.native" "$W/srv.tcp"
}

stage_savellama() { # the llama.cpp build, so later calls can carry it instead of rebuilding
  tar czf "$W/llama-bin.tgz" -C "$LB" bin && split -b 15m "$W/llama-bin.tgz" "$OUT/llama-bin.tgz.part"
  say "llama build saved: $(du -h "$W/llama-bin.tgz" | cut -f1)"
}

stages=("$@"); [ ${#stages[@]} -eq 0 ] || [ "${stages[0]}" = all ] && stages=(smi driver rt cu12 cublas llama bench)
nvidia-smi --query-gpu=name,driver_version,uuid --format=csv,noheader | tee -a "$SUMMARY"
start_server
# The llama.cpp build takes minutes: start it first, next to the other stages.
case " ${stages[*]} " in *" llama "*|*" bench "*|*" trace "*|*" vbench "*|*" ollama "*|*" faults "*|*" twoservers "*|*" multigpu "*|*" shmfile "*) build_llama & LLAMA_BUILD=$! ;; esac
for s in "${stages[@]}"; do
  case $s in llama|bench|exp|ab|cpu|percpu|timeline|frames|ppstats|srvstats|bands|stalls|trace|vbench|ollama|faults|twoservers|multigpu|mgtrace|shmtext|ttft|shmfile|loadlink|textlink|firstuse|link|savellama) [ -n "${LLAMA_BUILD:-}" ] && wait "$LLAMA_BUILD"; LLAMA_BUILD= ;; esac
  t0=$(date +%s); "stage_$s" >>"$OUT/$s.log" 2>&1; say "stage $s took $(( $(date +%s) - t0 ))s"
done
finish
