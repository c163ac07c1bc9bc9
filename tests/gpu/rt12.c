/* A CUDA 12 runtime program: built with gcc against the CUDA 12.9 headers and linked to
 * libcudart.so.12; its kernel comes from a fatbin (KERNEL_FATBIN, a C array made by
 * scripts/gpu/run.sh) registered the way nvcc 12's generated host code does it
 * (__cudaRegisterFatBinary / __cudaRegisterFunction / cudaLaunchKernel). */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include "k12.h" /* unsigned char k12_fatbin[]; */

typedef struct { int magic; int version; const void *data; void *filename_or_fatbins; } wrapper_t;
void **__cudaRegisterFatBinary(void *);
void __cudaRegisterFatBinaryEnd(void **);
void __cudaRegisterFunction(void **, const char *, char *, const char *, int, void *, void *, void *, void *, int *);
unsigned __cudaPushCallConfiguration(dim3, dim3, size_t, void *);
cudaError_t __cudaPopCallConfiguration(dim3 *, dim3 *, size_t *, void *);

static void add_stub(const float *a, const float *b, float *c, int n) { (void)a; (void)b; (void)c; (void)n; }
static wrapper_t wrapper;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s: %s\n", #x, cudaGetErrorString(e_)); return 1; } } while (0)
int main(void) {
    wrapper.magic = 0x466243b1; wrapper.version = 1; wrapper.data = k12_fatbin;
    void **h = __cudaRegisterFatBinary(&wrapper);
    __cudaRegisterFunction(h, (const char *)add_stub, (char *)"add12", "add12", -1, 0, 0, 0, 0, 0);
    __cudaRegisterFatBinaryEnd(h);
    int rt = 0, n = 0;
    CK(cudaRuntimeGetVersion(&rt)); CK(cudaGetDeviceCount(&n));
    struct cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, 0)); /* cudaGetDeviceProperties_v2 in 12.x headers */
    printf("runtime %d devices %d name %s cc %d.%d sms %d mem %zu optin %zu pciBus %d\n", rt, n, p.name, p.major, p.minor,
           p.multiProcessorCount, p.totalGlobalMem, p.sharedMemPerBlockOptin, p.pciBusID);
    const int N = 1 << 16; size_t bytes = N * sizeof(float);
    float *a, *b, *c, *ha = malloc(bytes), *hc = malloc(bytes);
    for (int i = 0; i < N; i++) ha[i] = (float)i;
    CK(cudaMalloc((void **)&a, bytes)); CK(cudaMalloc((void **)&b, bytes)); CK(cudaMalloc((void **)&c, bytes));
    CK(cudaMemcpy(a, ha, bytes, cudaMemcpyHostToDevice)); CK(cudaMemcpy(b, ha, bytes, cudaMemcpyHostToDevice));
    int nn = N; void *args[] = {&a, &b, &c, &nn};
    dim3 grid = {N / 256, 1, 1}, block = {256, 1, 1};
    CK(cudaLaunchKernel((const void *)add_stub, grid, block, args, 0, 0));
    CK(cudaMemcpy(hc, c, bytes, cudaMemcpyDeviceToHost));
    int bad = 0; for (int i = 0; i < N; i++) if (hc[i] != 2.f * i) bad++;
    printf("add12: %d wrong\n", bad);
    return bad != 0;
}
