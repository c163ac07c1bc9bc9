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

#define NEXT(name, fn_t) static fn_t real; if (!real) real = (fn_t)dlsym(RTLD_NEXT, name)

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, cudaStream_t s) {
  typedef cudaError_t (*fn_t)(void *, const void *, size_t, int, cudaStream_t);
  NEXT("cudaMemcpyAsync", fn_t);
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

// With TL_GPU set, the GPU's own time for each graph: events recorded on its stream just
// before and after it (through vgpu the server records them, after whatever the stream
// waits for), read at the next launch, when the application has long synchronized; a
// "graphGpu" event whose `took` is that time in µs.
typedef void *cudaEvent_t;
static void gpu_times(cudaStream_t s, int before) {
  typedef cudaError_t (*create_t)(cudaEvent_t *);
  typedef cudaError_t (*record_t)(cudaEvent_t, cudaStream_t);
  typedef cudaError_t (*elapsed_t)(float *, cudaEvent_t, cudaEvent_t);
  typedef cudaError_t (*sync_t)(cudaEvent_t);
  static create_t create; static record_t rec; static elapsed_t elapsed; static sync_t esync;
  static cudaEvent_t ev_before, ev_after;
  static int recorded;
  if (!create) {
    create = (create_t)dlsym(RTLD_DEFAULT, "cudaEventCreate");
    rec = (record_t)dlsym(RTLD_DEFAULT, "cudaEventRecord");
    elapsed = (elapsed_t)dlsym(RTLD_DEFAULT, "cudaEventElapsedTime");
    esync = (sync_t)dlsym(RTLD_DEFAULT, "cudaEventSynchronize");
    if (!create || !rec || !elapsed || !esync) return;
    create(&ev_before); create(&ev_after);
  }
  if (!before) {
    rec(ev_after, s);
    recorded = 1;
    return;
  }
  if (recorded) {
    float ms = 0;
    esync(ev_after);
    elapsed(&ms, ev_before, ev_after);
    record(now_us(), "graphGpu", 0, 0);
    events[n_events - 1].took = ms * 1000.0;
  }
  rec(ev_before, s);
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
