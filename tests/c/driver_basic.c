/* The driver API through vgpu against the sim backend: device queries, contexts, a random
 * 64 MiB round trip (byte-exact), memsets, async copies on a stream, events. Declares only
 * what it calls, with plain C types (no NVIDIA headers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

int cuDriverGetVersion(int *);
int cuDeviceGetAttribute(int *, int, CUdevice);
int cuDeviceTotalMem_v2(size_t *, CUdevice);
int cuCtxGetCurrent(CUcontext *);
int cuMemsetD32_v2(CUdeviceptr, unsigned, size_t);

#define CHECK(x) do { int r_ = (x); if (r_) { const char *n_ = "?"; cuGetErrorName(r_, &n_); \
    printf("FAIL %s -> %d %s (line %d)\n", #x, r_, n_, __LINE__); return 1; } } while (0)

int cuStreamWaitValue32(CUstream, CUdeviceptr, unsigned, unsigned);
int cuStreamWriteValue32(CUstream, CUdeviceptr, unsigned, unsigned);
int cuStreamWriteValue64(CUstream, CUdeviceptr, unsigned long long, unsigned);
int main(void) {
    int n, ver, v;
    CUdevice dev;
    char name[256], bus[32];
    unsigned char uuid[16];
    size_t total, free_b, total_b;
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&ver));
    CHECK(cuDeviceGetCount(&n));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    CHECK(cuDeviceTotalMem_v2(&total, dev));
    CHECK(cuDeviceGetPCIBusId(bus, sizeof bus, dev));
    CHECK(cuDeviceGetUuid_v2(uuid, dev));
    int major, minor, sms;
    CHECK(cuDeviceGetAttribute(&major, 75, dev));
    CHECK(cuDeviceGetAttribute(&minor, 76, dev));
    CHECK(cuDeviceGetAttribute(&sms, 16, dev));
    printf("driver %d devices %d name=%s total=%zu bus=%s cc=%d.%d sms=%d uuid0=%02x\n", ver, n, name, total, bus,
           major, minor, sms, uuid[0]);
    if (cuDeviceGetAttribute(&v, 100000, dev) == 0) { printf("FAIL bad attribute accepted\n"); return 1; }
    if (cuDeviceGet(&dev, n) == 0) { printf("FAIL bad ordinal accepted\n"); return 1; }
    CHECK(cuDeviceGet(&dev, 0));

    CUcontext ctx, cur;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuCtxGetCurrent(&cur));
    if (cur != ctx) { printf("FAIL current context\n"); return 1; }
    CUdevice cd;
    CHECK(cuCtxGetDevice(&cd));

    const size_t N = 64u << 20;
    unsigned char *a = malloc(N), *b = malloc(N);
    srand(1234);
    for (size_t i = 0; i < N; i++) a[i] = (unsigned char)rand();
    CUdeviceptr d1, d2;
    CHECK(cuMemAlloc_v2(&d1, N));
    CHECK(cuMemAlloc_v2(&d2, N));
    CHECK(cuMemGetInfo_v2(&free_b, &total_b));
    if (total_b - free_b < 2 * N) { printf("FAIL mem info does not count allocations\n"); return 1; }
    CHECK(cuMemcpyHtoD_v2(d1, a, N));
    CHECK(cuMemcpyDtoD_v2(d2, d1, N));
    CHECK(cuMemcpyDtoH_v2(b, d2, N));
    if (memcmp(a, b, N)) { printf("FAIL 64 MiB round trip differs\n"); return 1; }
    printf("roundtrip 64MiB ok\n");

    unsigned *w = malloc(4096);
    CHECK(cuMemsetD32_v2(d1, 0xdeadbeef, 1024));
    CHECK(cuMemcpyDtoH_v2(w, d1, 4096));
    for (int i = 0; i < 1024; i++) if (w[i] != 0xdeadbeef) { printf("FAIL memset32 at %d\n", i); return 1; }

    CUstream s;
    CUevent e0, e1;
    void *pinned;
    CHECK(cuStreamCreate(&s, 1));
    CUcontext sctx = 0, here = 0;
    CHECK(cuStreamGetCtx(s, &sctx));
    CHECK(cuCtxGetCurrent(&here));
    if (!sctx || sctx != here) { printf("FAIL stream context\n"); return 1; }
    CUdeviceptr base = 0;
    size_t span = 0;
    CHECK(cuMemGetAddressRange_v2(&base, &span, d1 + 100));
    if (base != d1 || span != N) { printf("FAIL address range\n"); return 1; }
    printf("stream context and address range ok\n");
    CUmemoryPool pool;
    CHECK(cuDeviceGetDefaultMemPool(&pool, 0));
    unsigned long long threshold = 1ull << 30, got = 0;
    CHECK(cuMemPoolSetAttribute(pool, 4 /* RELEASE_THRESHOLD */, &threshold));
    CHECK(cuMemPoolGetAttribute(pool, 4, &got));
    CUdeviceptr pooled;
    CHECK(cuMemAllocFromPoolAsync(&pooled, 1 << 16, pool, s));
    CHECK(cuMemFreeAsync(pooled, s));
    if (got != threshold) { printf("FAIL pool threshold %llu\n", got); return 1; }
    printf("pool ok\n");
    /* Stream memory operations: the sim runs a stream's work as it comes, so the wait only
     * has its word checked; the writes land. */
    unsigned long long words[2] = {0, 0};
    CHECK(cuStreamWriteValue32(s, d1, 7, 0));
    CHECK(cuStreamWriteValue64(s, d1 + 8, 0x1122334455667788ull, 0));
    CHECK(cuStreamWaitValue32(s, d1, 7, 0));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH_v2(words, d1, 16));
    if ((unsigned)words[0] != 7 || words[1] != 0x1122334455667788ull) { printf("FAIL stream memory ops\n"); return 1; }
    /* A word outside this session's memory: refused (the one-way error comes with the sync). */
    int wr = cuStreamWaitValue32(s, 0x10, 7, 0), sr = cuStreamSynchronize(s);
    if (wr == 0 && sr == 0) { printf("FAIL wait outside memory\n"); return 1; }
    printf("stream memory ops ok\n");
    CHECK(cuEventCreate(&e0, 0));
    CHECK(cuEventCreate(&e1, 0));
    CHECK(cuMemAllocHost_v2(&pinned, 1 << 20));
    if (((size_t)pinned) % 256) { printf("FAIL pinned alignment\n"); return 1; }
    int mt = 0;
    CHECK(cuPointerGetAttribute(&mt, 2, (CUdeviceptr)pinned));
    int mtd = 0;
    CHECK(cuPointerGetAttribute(&mtd, 2, d1 + 10));
    if (mt != 1 || mtd != 2) { printf("FAIL pointer memory types %d %d\n", mt, mtd); return 1; }
    /* Buffer ids (cuFFT asks for one of each buffer it allocates): one per allocation, the
       same anywhere inside it, never given again, also not to a later one at the same place. */
    unsigned long long id1 = 0, id1b = 0, id2 = 0, id3 = 0;
    CHECK(cuPointerGetAttribute(&id1, 7, d1));
    CHECK(cuPointerGetAttribute(&id1b, 7, d1 + 10));
    CHECK(cuPointerGetAttribute(&id2, 7, d2));
    CUdeviceptr d3;
    CHECK(cuMemAlloc_v2(&d3, 4096));
    CHECK(cuPointerGetAttribute(&id3, 7, d3));
    CHECK(cuMemFree_v2(d3));
    CUdeviceptr d4;
    unsigned long long id4 = 0;
    CHECK(cuMemAlloc_v2(&d4, 4096));
    CHECK(cuPointerGetAttribute(&id4, 7, d4));
    CHECK(cuMemFree_v2(d4));
    if (!id1 || id1 != id1b || id1 == id2 || id3 == id4 || id4 == id1 || id4 == id2) {
        printf("FAIL buffer ids %llu %llu %llu %llu %llu\n", id1, id1b, id2, id3, id4);
        return 1;
    }
    printf("buffer ids ok\n");
    memset(pinned, 0x5a, 1 << 20);
    CHECK(cuEventRecord(e0, s));
    CHECK(cuMemcpyHtoDAsync_v2(d2, pinned, 1 << 20, s));
    CHECK(cuMemsetD8Async(d2 + 100, 0x11, 10, s));
    CHECK(cuEventRecord(e1, s));
    /* The copy from pinned memory may run later (it does over shm:, as natively). */
    CHECK(cuEventSynchronize(e1));
    memset(pinned, 0, 1 << 20);
    CHECK(cuMemcpyDtoHAsync_v2(pinned, d2, 1 << 20, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuEventSynchronize(e1));
    float ms = -1;
    CHECK(cuEventElapsedTime(&ms, e0, e1));
    unsigned char *p = pinned;
    if (p[0] != 0x5a || p[99] != 0x5a || p[100] != 0x11 || p[109] != 0x11 || p[110] != 0x5a) {
        printf("FAIL async copy/memset order\n");
        return 1;
    }
    printf("streams ok\n");
    if (cuMemcpyHtoD_v2(d1 + N - 8, a, 64) == 0) { printf("FAIL out-of-range copy accepted\n"); return 1; }
    CHECK(cuCtxSynchronize());
    CHECK(cuEventDestroy_v2(e0));
    CHECK(cuEventDestroy_v2(e1));
    CHECK(cuStreamDestroy_v2(s));
    CHECK(cuMemFreeHost(pinned));
    CHECK(cuMemFree_v2(d1));
    CHECK(cuMemFree_v2(d2));
    printf("done\n");
    return 0;
}
