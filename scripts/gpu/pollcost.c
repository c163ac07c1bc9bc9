// What polling threads cost the threads that work (run.sh micro): one thread times a memory
// copy of 1 MiB and a short arithmetic loop, 2000 times each, while K other threads poll as
// vgpu's lane threads do (MODE yield: poll() with no timeout, then sched_yield) or spin on
// an atomic with the CPU's pause hint (MODE pause), or nothing runs beside it (K = 0).
// usage: pollcost MODE K; prints the medians in µs.
#define _GNU_SOURCE
#include <immintrin.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;
static int pipefd[2];
static int mode; // 0 yield, 1 pause

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void *poller(void *arg) {
  (void)arg;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    if (mode == 0) {
      struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
      poll(&p, 1, 0);
      sched_yield();
    } else {
      for (int i = 0; i < 64; i++) _mm_pause();
    }
  }
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 3) return fprintf(stderr, "usage: pollcost yield|pause K\n"), 2;
  mode = strcmp(argv[1], "pause") == 0;
  int k = atoi(argv[2]);
  if (pipe(pipefd)) return perror("pipe"), 1;
  pthread_t th[64];
  for (int i = 0; i < k && i < 64; i++) pthread_create(&th[i], NULL, poller, NULL);
  usleep(20000);
  enum { REPS = 2000, SZ = 1 << 20 };
  char *src = malloc(SZ), *dst = malloc(SZ);
  memset(src, 1, SZ);
  memset(dst, 2, SZ);
  static double cp[REPS], ar[REPS];
  volatile double acc = 0;
  for (int r = 0; r < REPS; r++) {
    double t0 = now();
    memcpy(dst, src, SZ);
    double t1 = now();
    double x = 1.0;
    for (int i = 0; i < 20000; i++) x = x * 1.0000001 + 1e-9;
    acc += x + dst[r % SZ];
    double t2 = now();
    cp[r] = t1 - t0;
    ar[r] = t2 - t1;
    usleep(50); // a gap, as between a batch's copies
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < k && i < 64; i++) pthread_join(th[i], NULL);
  qsort(cp, REPS, sizeof cp[0], cmp);
  qsort(ar, REPS, sizeof ar[0], cmp);
  printf("pollcost %s K=%2d: memcpy 1 MiB p50 %.1f p90 %.1f µs, arithmetic p50 %.1f p90 %.1f µs\n", argv[1], k,
         cp[REPS / 2], cp[REPS * 9 / 10], ar[REPS / 2], ar[REPS * 9 / 10]);
  return acc < 0;
}
