// 100 000 empty-kernel launches: client-side cost per launch and time until the GPU is done.
#include <cstdio>
#include <chrono>
__global__ void empty_kernel() {}
int main() {
    const int N = 100000;
    cudaStream_t s; cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    for (int i = 0; i < 1000; i++) empty_kernel<<<1, 1, 0, s>>>();
    cudaStreamSynchronize(s);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < N; i++) empty_kernel<<<1, 1, 0, s>>>();
    auto t1 = std::chrono::steady_clock::now();
    cudaError_t e = cudaStreamSynchronize(s);
    auto t2 = std::chrono::steady_clock::now();
    double submit = std::chrono::duration<double, std::micro>(t1 - t0).count() / N;
    double total = std::chrono::duration<double, std::milli>(t2 - t0).count();
    // launch + synchronize round trip on an idle stream
    auto t3 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; i++) { empty_kernel<<<1, 1, 0, s>>>(); cudaStreamSynchronize(s); }
    auto t4 = std::chrono::steady_clock::now();
    auto t5 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; i++) cudaStreamSynchronize(s);
    auto t6 = std::chrono::steady_clock::now();
    printf("launch_bench status=%d submit_us_per_launch=%.3f total_ms=%.2f launch_sync_us=%.2f idle_sync_us=%.2f\n", (int)e, submit,
           total, std::chrono::duration<double, std::micro>(t4 - t3).count() / 1000,
           std::chrono::duration<double, std::micro>(t6 - t5).count() / 1000);
    return e != cudaSuccess;
}
