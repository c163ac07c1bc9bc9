// Does a pageable host-to-device cudaMemcpyAsync wait for earlier work on its stream?
#include <cstdio>
#include <cstdlib>
#include <chrono>
__global__ void spin(long long cycles) { long long s = clock64(); while (clock64() - s < cycles) {} }
int main() {
  cudaStream_t s; cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  char *d; cudaMalloc(&d, 1 << 20); char *h = (char *)malloc(1 << 20);
  size_t sizes[] = {4, 4096, 8192, 65536, 65537, 262144};
  for (size_t n : sizes) {
    spin<<<1, 1, 0, s>>>(40000000LL); // ~20 ms
    auto t = std::chrono::steady_clock::now();
    cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s);
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count();
    printf("pageable H2D %zu bytes behind a 20 ms kernel: call took %.1f us\n", n, us);
    cudaStreamSynchronize(s);
  }
}
