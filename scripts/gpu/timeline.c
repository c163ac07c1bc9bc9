// LD_PRELOAD'ed into llama-bench (natively and through vgpu alike): records when each CUDA
// runtime copy, synchronize and graph launch starts and how long it takes, and writes them
// to $TL_OUT at exit. scripts/gpu/timeline.py turns them into per-batch segments.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int cudaError_t;
typedef void *cudaStream_t;

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

#define MAX_EVENTS 200000
static struct { double start, took; const char *op; size_t bytes; int kind; } events[MAX_EVENTS];
static int n_events;

static void record(double start, const char *op, size_t bytes, int kind) {
  if (n_events < MAX_EVENTS)
    events[n_events++] = (typeof(events[0])){start, now_us() - start, op, bytes, kind};
}

__attribute__((destructor)) static void dump(void) {
  const char *path = getenv("TL_OUT");
  FILE *f = fopen(path ? path : "/tmp/timeline.txt", "w");
  if (!f) return;
  for (int i = 0; i < n_events; i++)
    fprintf(f, "%.1f %.1f %s %zu %d\n", events[i].start, events[i].took, events[i].op, events[i].bytes, events[i].kind);
  fclose(f);
}

static void gpu_first_copy(void *stream);

#define NEXT(name, fn_t) static fn_t real; if (!real) real = (fn_t)dlsym(RTLD_NEXT, name)

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, cudaStream_t s) {
  typedef cudaError_t (*fn_t)(void *, const void *, size_t, int, cudaStream_t);
  NEXT("cudaMemcpyAsync", fn_t);
  if (kind == 1) gpu_first_copy(s);
  double t = now_us();
  cudaError_t r = real(dst, src, n, kind, s);
  record(t, "memcpyAsync", n, kind);
  return r;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  typedef cudaError_t (*fn_t)(cudaStream_t);
  NEXT("cudaStreamSynchronize", fn_t);
  double t = now_us();
  cudaError_t r = real(s);
  record(t, "streamSync", 0, 0);
  return r;
}

// With TL_GPU set, GPU-side times of each even step from events on its stream (through
// vgpu the server records them, in the stream's order): "graphGpu" the graph's own time,
// "gpuPre" from the step's first host-to-device copy to the graph's start (the copies, and
// any time the GPU waits for work in between), "gpuGap" from the previous graph's end to
// the step's first copy. Read at the next (odd) step's first copy, when the application
// has long synchronized, so that the reads (round trips through vgpu) fall in no measured
// span; each an event whose `took` is that time in µs.
typedef void *cudaEvent_t;
typedef cudaError_t (*ev_create_t)(cudaEvent_t *);
typedef cudaError_t (*ev_record_t)(cudaEvent_t, cudaStream_t);
typedef cudaError_t (*ev_elapsed_t)(float *, cudaEvent_t, cudaEvent_t);
typedef cudaError_t (*ev_sync_t)(cudaEvent_t);
static ev_create_t ev_create; static ev_record_t ev_rec; static ev_elapsed_t ev_elapsed; static ev_sync_t ev_sync;
static cudaEvent_t ev_first, ev_before, ev_after[2];
static long step = -1;
static int in_step;

static int gpu_ready(void) {
  static int ready = -1;
  if (ready >= 0) return ready;
  ready = 0;
  if (!getenv("TL_GPU")) return 0;
  ev_create = (ev_create_t)dlsym(RTLD_DEFAULT, "cudaEventCreate");
  ev_rec = (ev_record_t)dlsym(RTLD_DEFAULT, "cudaEventRecord");
  ev_elapsed = (ev_elapsed_t)dlsym(RTLD_DEFAULT, "cudaEventElapsedTime");
  ev_sync = (ev_sync_t)dlsym(RTLD_DEFAULT, "cudaEventSynchronize");
  if (!ev_create || !ev_rec || !ev_elapsed || !ev_sync) return 0;
  ev_create(&ev_first); ev_create(&ev_before); ev_create(&ev_after[0]); ev_create(&ev_after[1]);
  return ready = 1;
}

static void gpu_record_elapsed(const char *name, cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  if (ev_elapsed(&ms, a, b) != 0) return;
  record(now_us(), name, 0, 0);
  events[n_events - 1].took = ms * 1000.0;
}

// The first host-to-device copy of a step.
static void gpu_first_copy(void *s) {
  if (in_step || !gpu_ready()) return;
  in_step = 1;
  step++;
  if (step % 2 == 1 && step >= 3) {
    ev_sync(ev_after[0]);
    gpu_record_elapsed("graphGpu", ev_before, ev_after[0]);
    gpu_record_elapsed("gpuPre", ev_first, ev_before);
    gpu_record_elapsed("gpuGap", ev_after[1], ev_first);
  }
  ev_rec(ev_first, s);
}

static void gpu_times(cudaStream_t s, int before) {
  if (!in_step || !gpu_ready()) return;
  if (before) { ev_rec(ev_before, s); return; }
  ev_rec(ev_after[step % 2], s);
  in_step = 0;
}

cudaError_t cudaGraphLaunch(void *exec, cudaStream_t s) {
  typedef cudaError_t (*fn_t)(void *, cudaStream_t);
  NEXT("cudaGraphLaunch", fn_t);
  if (getenv("TL_GPU")) gpu_times(s, 1);
  double t = now_us();
  cudaError_t r = real(exec, s);
  record(t, "graphLaunch", 0, 0);
  if (getenv("TL_GPU")) gpu_times(s, 0);
  return r;
}
