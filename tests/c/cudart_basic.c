/* The CUDA runtime through vgpu against the sim backend: what nvcc's host code does
 * (registration in a constructor, <<<>>> as push/stub/pop/launch, both the CUDA 12 and the
 * CUDA 13 launch paths), device queries, copies of every kind, streams, events, errors.
 * Declares only what it calls, with plain C types (no NVIDIA headers); cudaDeviceProp fields
 * are read at the offsets the abi crate's layout tests pin, per major (-DRT12 for 12). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned x, y, z; } dim3;
typedef void *cudaStream_t, *cudaEvent_t, *cudaGraph_t;
typedef int cudaError_t;
enum { H2H = 0, H2D = 1, D2H = 2, D2D = 3, DEFAULT = 4 };

void **__cudaRegisterFatBinary(void *);
void __cudaRegisterFatBinaryEnd(void **);
void __cudaUnregisterFatBinary(void **);
void __cudaRegisterFunction(void **, const char *, char *, const char *, int, void *, void *, void *, void *, int *);
void __cudaRegisterVar(void **, char *, char *, const char *, int, size_t, int, int);
unsigned __cudaPushCallConfiguration(dim3, dim3, size_t, cudaStream_t);
cudaError_t __cudaPopCallConfiguration(dim3 *, dim3 *, size_t *, void *);
cudaError_t cudaLaunchKernel(const void *, dim3, dim3, void **, size_t, cudaStream_t);
cudaError_t __cudaGetKernel(void **, const void *);
cudaError_t __cudaLaunchKernel(void *, dim3, dim3, void **, size_t, cudaStream_t);
cudaError_t cudaRuntimeGetVersion(int *);
cudaError_t cudaDriverGetVersion(int *);
cudaError_t cudaGetDeviceCount(int *);
cudaError_t cudaSetDevice(int);
cudaError_t cudaGetDevice(int *);
#ifdef RT12
cudaError_t cudaGetDeviceProperties_v2(void *, int);
#define cudaGetDeviceProperties cudaGetDeviceProperties_v2
#else
cudaError_t cudaGetDeviceProperties(void *, int);
#endif
cudaError_t cudaDeviceGetAttribute(int *, int, int);
cudaError_t cudaDeviceGetPCIBusId(char *, int, int);
cudaError_t cudaMemGetInfo(size_t *, size_t *);
cudaError_t cudaMalloc(void **, size_t);
cudaError_t cudaFree(void *);
typedef void *cudaMemPool_t;
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *, int);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, int, void *);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, int, void *);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t);
cudaError_t cudaMallocFromPoolAsync(void **, size_t, cudaMemPool_t, cudaStream_t);
cudaError_t cudaFreeAsync(void *, cudaStream_t);
cudaError_t cudaMallocHost(void **, size_t);
cudaError_t cudaFreeHost(void *);
cudaError_t cudaMallocPitch(void **, size_t *, size_t, size_t);
cudaError_t cudaMemcpy(void *, const void *, size_t, int);
cudaError_t cudaMemcpyAsync(void *, const void *, size_t, int, cudaStream_t);
cudaError_t cudaMemcpy2D(void *, size_t, const void *, size_t, size_t, size_t, int);
cudaError_t cudaMemset(void *, int, size_t);
cudaError_t cudaMemsetAsync(void *, int, size_t, cudaStream_t);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *, unsigned);
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaStreamDestroy(cudaStream_t);
cudaError_t cudaStreamIsCapturing(cudaStream_t, int *);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *, unsigned);
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t);
cudaError_t cudaEventSynchronize(cudaEvent_t);
cudaError_t cudaEventElapsedTime(float *, cudaEvent_t, cudaEvent_t);
cudaError_t cudaEventDestroy(cudaEvent_t);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorName(cudaError_t);
const char *cudaGetErrorString(cudaError_t);
cudaError_t cudaMemcpyToSymbol(const void *, const void *, size_t, size_t, int);

#ifdef RT12
enum { P_SIZE = 1032, P_SMS = 388, P_INTEGRATED = 396, P_BUS = 584, P_OPTIN = 696 };
#else
enum { P_SIZE = 1008, P_SMS = 384, P_INTEGRATED = 388, P_BUS = 568, P_OPTIN = 672 };
#endif

#define CHECK(x) do { cudaError_t r_ = (x); if (r_) { \
    printf("FAIL %s -> %d %s (line %d)\n", #x, r_, cudaGetErrorName(r_), __LINE__); return 1; } } while (0)

/* What nvcc puts in .nv_fatbin and .nvFatBinSegment: a fatbin (header + 16 payload bytes)
 * and its wrapper. The sim backend stores images without looking inside. */
static const unsigned long long fatbin[4] = {0x00100001BA55ED50ull, 16, 0x1111, 0x2222};
static struct { int magic, version; const void *data; void *filename; } wrapper = {0x466243B1, 1, fatbin, 0};
static void **handle;
static float table[4]; /* host shadow of a __device__ variable */

/* The stub nvcc generates for __global__ void kernel(float *, int). */
static void kernel(float *a, int n) {
    void *args[] = {&a, &n};
    dim3 g, b;
    size_t shmem;
    cudaStream_t st;
    if (__cudaPopCallConfiguration(&g, &b, &shmem, &st)) return;
#ifdef RT12
    cudaLaunchKernel((const void *)kernel, g, b, args, shmem, st);
#else
    static void *k;
    __cudaGetKernel(&k, (const void *)kernel);
    __cudaLaunchKernel(k, g, b, args, shmem, st);
#endif
}
static void not_registered(void) {}

static void unregister(void) { __cudaUnregisterFatBinary(handle); }
__attribute__((constructor)) static void registration(void) {
    handle = __cudaRegisterFatBinary(&wrapper);
    __cudaRegisterFunction(handle, (const char *)kernel, "_Z6kernelPfi", "_Z6kernelPfi", -1, 0, 0, 0, 0, 0);
    __cudaRegisterVar(handle, (char *)table, "table", "table", 0, sizeof table, 0, 0);
    __cudaRegisterFatBinaryEnd(handle);
    atexit(unregister);
}

int main(void) {
    int rt, drv, n, dev = -1, v;
    CHECK(cudaRuntimeGetVersion(&rt));
    CHECK(cudaDriverGetVersion(&drv));
    CHECK(cudaGetDeviceCount(&n));
    CHECK(cudaGetDevice(&dev));
    unsigned char prop[P_SIZE + 64];
    memset(prop, 0xee, sizeof prop);
    CHECK(cudaGetDeviceProperties(prop, 0));
    for (int i = P_SIZE; i < P_SIZE + 64; i++) if (prop[i] != 0xee) { printf("FAIL props overran\n"); return 1; }
    int major = *(int *)(prop + 360), minor = *(int *)(prop + 364), sms = *(int *)(prop + P_SMS);
    int cc_major;
    CHECK(cudaDeviceGetAttribute(&cc_major, 75, 0));
    char bus[32];
    CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, 0));
    printf("runtime %d driver %d devices %d current %d name=%s total=%zu cc=%d.%d attr-cc=%d sms=%d integrated=%d "
           "pci=%d optin=%zu bus=%s\n",
           rt, drv, n, dev, (char *)prop, *(size_t *)(prop + 288), major, minor, cc_major, sms,
           *(int *)(prop + P_INTEGRATED), *(int *)(prop + P_BUS), *(size_t *)(prop + P_OPTIN), bus);
    if (cudaSetDevice(n) != 101 || cudaGetLastError() != 101 || cudaGetLastError() != 0) {
        printf("FAIL bad device or last error\n");
        return 1;
    }
    if (cudaDeviceGetAttribute(&v, 75, n) != 101) { printf("FAIL attribute of a bad device\n"); return 1; }
    cudaGetLastError();
    CHECK(cudaSetDevice(n - 1));
    CHECK(cudaGetDevice(&dev));
    if (dev != n - 1) { printf("FAIL current device %d\n", dev); return 1; }
    CHECK(cudaSetDevice(0));

    const size_t N = 8u << 20;
    unsigned char *a = malloc(N), *b = malloc(N);
    for (size_t i = 0; i < N; i++) a[i] = (unsigned char)(i * 7 + 3);
    void *d1, *d2, *pinned;
    size_t free_b, total_b;
    CHECK(cudaFree(0));
    CHECK(cudaMalloc(&d1, N));
    CHECK(cudaMalloc(&d2, N));
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    CHECK(cudaMemcpy(d1, a, N, H2D));
    CHECK(cudaMemcpy(d2, d1, N, D2D));
    CHECK(cudaMemcpy(b, d2, N, D2H));
    if (memcmp(a, b, N)) { printf("FAIL explicit-kind round trip\n"); return 1; }
    memset(b, 0, N);
    CHECK(cudaMemcpy(d2, a, N, DEFAULT));
    CHECK(cudaMemcpy(b, d2, N, DEFAULT));
    if (memcmp(a, b, N)) { printf("FAIL default-kind round trip\n"); return 1; }
    CHECK(cudaMemcpy(b, a, 16, H2H));
    printf("copies ok\n");

    CHECK(cudaMemset(d1, 0x5a, 4096));
    CHECK(cudaMemcpy(b, d1, 4096, D2H));
    for (int i = 0; i < 4096; i++) if (b[i] != 0x5a) { printf("FAIL memset at %d\n", i); return 1; }
    void *pitched;
    size_t pitch;
    CHECK(cudaMallocPitch(&pitched, &pitch, 100, 8));
    if (pitch < 100) { printf("FAIL pitch %zu\n", pitch); return 1; }
    CHECK(cudaMemcpy2D(pitched, pitch, a, 100, 100, 8, H2D));
    CHECK(cudaMemcpy2D(b, 100, pitched, pitch, 100, 8, D2H));
    if (memcmp(a, b, 800)) { printf("FAIL 2D round trip\n"); return 1; }
    if (cudaMemcpy2D(b, 50, pitched, pitch, 100, 8, D2H) != 12) { printf("FAIL pitch check\n"); return 1; }
    cudaGetLastError();
    printf("memset and 2D ok\n");

    cudaStream_t s;
    cudaEvent_t e0, e1;
    int capturing = -1;
    CHECK(cudaStreamCreateWithFlags(&s, 1));
    CHECK(cudaEventCreateWithFlags(&e0, 0));
    CHECK(cudaEventCreateWithFlags(&e1, 0));
    CHECK(cudaMallocHost(&pinned, 1 << 20));
    memset(pinned, 0x33, 1 << 20);
    CHECK(cudaEventRecord(e0, s));
    CHECK(cudaMemcpyAsync(d2, pinned, 1 << 20, H2D, s));
    CHECK(cudaMemsetAsync((char *)d2 + 100, 0x44, 10, s));
    CHECK(cudaEventRecord(e1, s));
    /* The copy from pinned memory may run later (it does over shm:, as natively). */
    CHECK(cudaEventSynchronize(e1));
    memset(pinned, 0, 1 << 20);
    CHECK(cudaMemcpyAsync(pinned, d2, 1 << 20, D2H, s));
    CHECK(cudaStreamIsCapturing(s, &capturing));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaEventSynchronize(e1));
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    unsigned char *p = pinned;
    if (p[99] != 0x33 || p[100] != 0x44 || p[109] != 0x44 || p[110] != 0x33 || capturing != 0) {
        printf("FAIL async order or capture status\n");
        return 1;
    }
    /* cudaStreamPerThread (0x2) passes through to the driver. */
    CHECK(cudaMemcpyAsync(b, d2, 64, D2H, (cudaStream_t)0x2));
    CHECK(cudaStreamSynchronize((cudaStream_t)0x2));
    printf("streams ok\n");

    /* <<<2, 64, 0, s>>> kernel(d1, 5): the module is uploaded and the function found; the
     * sim cannot run kernels, and says so at the next synchronous call (launches are sent
     * without waiting). */
    __cudaPushCallConfiguration((dim3){2, 1, 1}, (dim3){64, 1, 1}, 0, s);
    kernel(d1, 5);
    cudaError_t launch = cudaGetLastError();
    cudaError_t sync = cudaStreamSynchronize(s);
    cudaGetLastError();
    cudaError_t sym = cudaMemcpyToSymbol(table, a, sizeof table, 0, H2D);
    cudaGetLastError();
    void *args[] = {0};
    cudaError_t unknown = cudaLaunchKernel((const void *)not_registered, (dim3){1, 1, 1}, (dim3){1, 1, 1}, args, 0, 0);
    cudaError_t zero = cudaLaunchKernel((const void *)kernel, (dim3){0, 1, 1}, (dim3){1, 1, 1}, args, 0, 0);
    cudaError_t peek = cudaPeekAtLastError();
    printf("launch %d, then %s; symbol copy %d; unregistered %d %s; zero grid %d; peek %d\n", launch,
           cudaGetErrorName(sync), sym, unknown, cudaGetErrorString(unknown), zero, peek);
    cudaGetLastError();

    CHECK(cudaDeviceSynchronize());
    CHECK(cudaEventDestroy(e0));
    CHECK(cudaEventDestroy(e1));
    /* The device's stream-ordered pool (PyTorch's cudaMallocAsync backend). */
    cudaMemPool_t pool;
    unsigned long long threshold = 1ull << 28, got = 0;
    void *pooled = 0;
    CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    CHECK(cudaMemPoolSetAttribute(pool, 4 /* cudaMemPoolAttrReleaseThreshold */, &threshold));
    CHECK(cudaMemPoolGetAttribute(pool, 4, &got));
    CHECK(cudaMallocFromPoolAsync(&pooled, 1 << 16, pool, s));
    CHECK(cudaFreeAsync(pooled, s));
    CHECK(cudaMemPoolTrimTo(pool, 0));
    printf("pool threshold %s\n", got == threshold && pooled ? "kept" : "LOST");
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
    CHECK(cudaFree(pitched));
    printf("strings: %s | %s | %s\n", cudaGetErrorString(2), cudaGetErrorName(801), cudaGetErrorString(12345));
    printf("done\n");
    return 0;
}
