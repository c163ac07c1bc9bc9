// DESIGN, Threads, on a real GPU: while the main thread waits in cudaStreamSynchronize for
// a long kernel, another thread's calls go on (natively they do). Prints the same lines
// natively and through vgpu; the line starting with "time" holds the timings.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

__global__ void spin(long long cycles, int *out) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
    *out = 42;
}

static double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int main() {
    cudaStream_t s;
    cudaStreamCreate(&s);
    int *d;
    cudaMalloc(&d, sizeof(int));
    cudaMemset(d, 0, sizeof(int));
    cudaDeviceSynchronize();
    spin<<<1, 1, 0, s>>>(1000000000LL, d);  // about half a second
    double other_ms = 0;
    int ok_calls = 0;
    auto t0 = std::chrono::steady_clock::now();
    std::thread other([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        auto t1 = std::chrono::steady_clock::now();
        for (int i = 0; i < 100; i++) {
            size_t f, t;
            if (cudaMemGetInfo(&f, &t) == cudaSuccess) ok_calls++;
        }
        other_ms = ms_since(t1);
    });
    cudaError_t e = cudaStreamSynchronize(s);
    double wait_ms = ms_since(t0);
    other.join();
    int h = 0;
    cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
    printf("synchronize=%d value=%d other-thread calls ok=%d\n", (int)e, h, ok_calls);
    printf("other thread done while the synchronize waited: %s\n", other_ms + 20 < wait_ms ? "yes" : "no");
    printf("time other_thread_ms=%.2f wait_ms=%.1f\n", other_ms, wait_ms);
    return 0;
}
