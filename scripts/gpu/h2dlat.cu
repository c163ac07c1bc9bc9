// H2D copy latency from pinned memory: cudaMemcpyAsync + cudaStreamSynchronize, medians.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <algorithm>
#include <vector>
static double now() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec * 1e-3; }
int main(int argc, char **argv) {
  int gap_us = argc > 1 ? atoi(argv[1]) : 1000;
  char *h, *d; cudaStream_t s;
  cudaMallocHost(&h, 8 << 20); cudaMalloc(&d, 8 << 20);
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  for (size_t i = 0; i < (8u << 20); i++) h[i] = (char)i;
  size_t sizes[] = {128 << 10, 512 << 10, 1 << 20, 4 << 20};
  for (size_t sz : sizes) {
    std::vector<double> call, total;
    for (int i = 0; i < 220; i++) {
      usleep(gap_us);
      double t0 = now();
      cudaMemcpyAsync(d, h, sz, cudaMemcpyHostToDevice, s);
      double t1 = now();
      cudaStreamSynchronize(s);
      double t2 = now();
      if (i >= 20) { call.push_back(t1 - t0); total.push_back(t2 - t0); }
    }
    std::sort(call.begin(), call.end()); std::sort(total.begin(), total.end());
    printf("gap %d us, %7zu B: call p50 %6.1f us, call+sync p50 %6.1f p90 %6.1f us\n", gap_us, sz, call[call.size() / 2], total[total.size() / 2], total[total.size() * 9 / 10]);
  }
  return 0;
}
