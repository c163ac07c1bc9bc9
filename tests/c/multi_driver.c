/* Several devices on several servers through the driver API: the device list (one line per
 * device, compared with NVML's by the test), then for every ordered pair of devices a
 * device-to-device copy with cuMemcpyPeer and one with cuMemcpy (unified addressing, with
 * the first device's context current whatever the pair), each checked byte for byte, and
 * the routing of handles and pointers of another server than the current context's.
 * Usage: multi_driver [MiB per copy, default 64]. No NVIDIA headers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

int cuDeviceCanAccessPeer(int *, CUdevice, CUdevice);
int cuMemcpy(CUdeviceptr, CUdeviceptr, size_t);
int cuMemcpyPeer(CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t);
typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch, dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch, WidthInBytes, Height;
} CUDA_MEMCPY2D;
int cuMemcpy2D_v2(const CUDA_MEMCPY2D *);
typedef struct { int type, id; } CUmemLocation;
typedef struct {
    int type, requestedHandleTypes;
    CUmemLocation location;
    void *win32HandleMetaData;
    unsigned char allocFlags[8];
} CUmemAllocationProp;
typedef struct { CUmemLocation location; int flags; } CUmemAccessDesc;
int cuMemGetAllocationGranularity(size_t *, const CUmemAllocationProp *, int);
int cuMemAddressReserve(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
int cuMemAddressFree(CUdeviceptr, size_t);
int cuMemCreate(unsigned long long *, size_t, const CUmemAllocationProp *, unsigned long long);
int cuMemRelease(unsigned long long);
int cuMemMap(CUdeviceptr, size_t, size_t, unsigned long long, unsigned long long);
int cuMemUnmap(CUdeviceptr, size_t);
int cuMemSetAccess(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
int cuStreamWaitEvent(CUstream, CUevent, unsigned);
int cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                   void **, void **);

#define CHECK(x) do { int r_ = (x); if (r_) { const char *n_ = "?"; cuGetErrorName(r_, &n_); \
    printf("FAIL %s -> %d %s (line %d)\n", #x, r_, n_, __LINE__); return 1; } } while (0)
#define EXPECT(x, want) do { int r_ = (x); if (r_ != (want)) { \
    printf("FAIL %s -> %d, expected %d (line %d)\n", #x, r_, (want), __LINE__); return 1; } } while (0)

enum { MAXDEV = 8, INVALID_HANDLE = 400, ATTR_DEVICE_ORDINAL = 9 };

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The bytes device `d`'s source buffer holds. */
static void pattern(uint64_t *w, size_t words, int d) {
    for (size_t i = 0; i < words; i++) w[i] = mix(((uint64_t)d << 40) + i);
}

static int same(const uint64_t *w, size_t words, int d) {
    for (size_t i = 0; i < words; i++)
        if (w[i] != mix(((uint64_t)d << 40) + i)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 64;
    size_t N = mib << 20, words = N / 8;
    int n;
    CHECK(cuInit(0));
    CHECK(cuDeviceGetCount(&n));
    if (n < 2 || n > MAXDEV) { printf("FAIL %d devices\n", n); return 1; }
    printf("devices %d\n", n);
    CUcontext ctx[MAXDEV];
    CUdeviceptr src[MAXDEV], dst[MAXDEV];
    uint64_t *host = malloc(N);
    for (int d = 0; d < n; d++) {
        char name[128], bus[32];
        unsigned char u[16];
        CHECK(cuDeviceGetName(name, sizeof name, d));
        CHECK(cuDeviceGetPCIBusId(bus, sizeof bus, d));
        CHECK(cuDeviceGetUuid_v2(u, d));
        printf("dev %d uuid=GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x bus=%s\n", d,
               u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15],
               bus);
        CHECK(cuDevicePrimaryCtxRetain(&ctx[d], d));
        CHECK(cuCtxSetCurrent(ctx[d]));
        CUdevice cd;
        CHECK(cuCtxGetDevice(&cd));
        if (cd != d) { printf("FAIL context of device %d says %d\n", d, cd); return 1; }
        CHECK(cuMemAlloc_v2(&src[d], N));
        CHECK(cuMemAlloc_v2(&dst[d], N));
        pattern(host, words, d);
        CHECK(cuMemcpyHtoD_v2(src[d], host, N));
    }
    /* Every allocation is distinct and knows its device, whatever context is current. */
    CHECK(cuCtxSetCurrent(ctx[0]));
    for (int d = 0; d < n; d++) {
        for (int e = 0; e < d; e++)
            if (src[d] == src[e] || dst[d] == dst[e] || src[d] == dst[e] || dst[d] == src[e]) {
                printf("FAIL devices %d and %d share an address\n", e, d);
                return 1;
            }
        int ord = -1;
        CHECK(cuPointerGetAttribute(&ord, ATTR_DEVICE_ORDINAL, dst[d] + 100));
        if (ord != d) { printf("FAIL pointer of device %d says device %d\n", d, ord); return 1; }
    }
    printf("buffers ok\n");

    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j) continue;
            int can = -1;
            CHECK(cuDeviceCanAccessPeer(&can, i, j));
            CHECK(cuMemsetD8_v2(dst[j], 0, N));
            CHECK(cuMemcpyPeer(dst[j], ctx[j], src[i], ctx[i], N));
            memset(host, 0, N);
            CHECK(cuMemcpyDtoH_v2(host, dst[j], N));
            if (!same(host, words, i)) { printf("FAIL cuMemcpyPeer %d -> %d differs\n", i, j); return 1; }
            /* Unified addressing: no contexts named, device 0's current. */
            CHECK(cuMemsetD8_v2(dst[j], 0, N));
            CHECK(cuMemcpy(dst[j], src[i], N));
            memset(host, 0, N);
            CHECK(cuMemcpy((CUdeviceptr)host, dst[j], N));
            if (!same(host, words, i)) { printf("FAIL cuMemcpy %d -> %d differs\n", i, j); return 1; }
            printf("pair %d->%d ok peer-access=%d\n", i, j, can);
        }
    /* An odd length at odd offsets, from the last device to the first (another server on
     * the sim), by both routes: the staging's last chunk is a short one. */
    size_t odd = N / 2 + 12345;
    for (int route = 0; route < 2; route++) {
        CHECK(cuMemsetD8_v2(dst[0], 0, N));
        if (route == 0) CHECK(cuMemcpyPeer(dst[0] + 3, ctx[0], src[n - 1] + 8, ctx[n - 1], odd));
        else CHECK(cuMemcpy(dst[0] + 3, src[n - 1] + 8, odd));
        unsigned char *got = (unsigned char *)host;
        CHECK(cuMemcpyDtoH_v2(got, dst[0], N));
        uint64_t *want = malloc(N);
        pattern(want, words, n - 1);
        const unsigned char *w = (const unsigned char *)want + 8;
        if (got[0] || got[1] || got[2] || memcmp(got + 3, w, odd) || got[3 + odd]) {
            printf("FAIL odd-sized copy %d -> 0 (route %d)\n", n - 1, route);
            return 1;
        }
        free(want);
    }
    /* A 2D rectangle between the same two devices. */
    {
        CUDA_MEMCPY2D c;
        memset(&c, 0, sizeof c);
        c.srcMemoryType = c.dstMemoryType = 2; /* CU_MEMORYTYPE_DEVICE */
        c.srcDevice = src[n - 1], c.srcXInBytes = 3, c.srcY = 2, c.srcPitch = 512;
        c.dstDevice = dst[0], c.dstXInBytes = 5, c.dstY = 1, c.dstPitch = 256;
        c.WidthInBytes = 100, c.Height = 50;
        CHECK(cuMemsetD8_v2(dst[0], 0, N));
        CHECK(cuMemcpy2D_v2(&c));
        unsigned char *got = (unsigned char *)host;
        CHECK(cuMemcpyDtoH_v2(got, dst[0], 256 * 64));
        uint64_t want[4096];
        pattern(want, 4096, n - 1);
        const unsigned char *w = (const unsigned char *)want;
        for (size_t r = 0; r < 50; r++)
            if (memcmp(got + (1 + r) * 256 + 5, w + (2 + r) * 512 + 3, 100) || got[(1 + r) * 256 + 4] ||
                got[(1 + r) * 256 + 105]) {
                printf("FAIL 2D copy %d -> 0, row %zu\n", n - 1, r);
                return 1;
            }
    }
    /* Virtual memory management on the last device, as llama.cpp's pool does it (the
     * location names a device of this process), then a copy into it with device 0 current. */
    {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = 1; /* CU_MEM_ALLOCATION_TYPE_PINNED */
        prop.location.type = 1, prop.location.id = n - 1; /* CU_MEM_LOCATION_TYPE_DEVICE */
        size_t gran = 0, size = 4u << 20;
        CHECK(cuMemGetAllocationGranularity(&gran, &prop, 0));
        if (!gran || size % gran) { printf("FAIL granularity %zu\n", gran); return 1; }
        CUdeviceptr va;
        unsigned long long h;
        CHECK(cuCtxSetCurrent(ctx[n - 1]));
        CHECK(cuMemAddressReserve(&va, 2 * size, 0, 0, 0));
        CHECK(cuMemCreate(&h, size, &prop, 0));
        CHECK(cuMemMap(va, size, 0, h, 0));
        CUmemAccessDesc acc = {{1, n - 1}, 3 /* READWRITE */};
        CHECK(cuMemSetAccess(va, size, &acc, 1));
        CHECK(cuCtxSetCurrent(ctx[0]));
        size_t part = size < N ? size : N;
        CHECK(cuMemcpy(va, src[0], part));
        CHECK(cuMemcpyDtoH_v2(host, va, part));
        if (!same(host, part / 8, 0)) { printf("FAIL copy into mapped memory of device %d\n", n - 1); return 1; }
        int ord = -1;
        CHECK(cuPointerGetAttribute(&ord, ATTR_DEVICE_ORDINAL, va + 64));
        if (ord != n - 1) { printf("FAIL mapped memory says device %d\n", ord); return 1; }
        CHECK(cuMemUnmap(va, size));
        CHECK(cuMemRelease(h));
        CHECK(cuMemAddressFree(va, 2 * size));
        printf("vmm ok\n");
    }
    printf("copies ok\n");

    /* Handles of another device (possibly another server) than the current context's. */
    CUstream s0, sl;
    CUevent e0, el;
    int last = n - 1;
    CHECK(cuCtxSetCurrent(ctx[last]));
    CHECK(cuStreamCreate(&sl, 1));
    CHECK(cuEventCreate(&el, 0));
    CHECK(cuCtxSetCurrent(ctx[0]));
    CHECK(cuStreamCreate(&s0, 1));
    CHECK(cuEventCreate(&e0, 0));
    if (s0 == sl || e0 == el) { printf("FAIL handles of two devices are equal\n"); return 1; }
    /* A copy into device `last`'s memory on its own stream, with device 0 current. */
    memset(host, 0x5a, 1 << 20);
    CHECK(cuMemcpyHtoDAsync_v2(dst[last], host, 1 << 20, sl));
    CHECK(cuEventRecord(el, sl));
    CHECK(cuStreamSynchronize(sl));
    CHECK(cuEventSynchronize(el));
    /* A copy into device 0's memory ordered on device `last`'s stream. */
    CHECK(cuMemcpyHtoDAsync_v2(dst[0], host, 1 << 20, sl));
    CHECK(cuStreamSynchronize(sl));
    memset(host, 0, 1 << 20);
    CHECK(cuMemcpyDtoH_v2(host, dst[0], 1 << 20));
    if (((unsigned char *)host)[(1 << 20) - 1] != 0x5a) { printf("FAIL copy on another device's stream\n"); return 1; }
    /* Waiting on another device's event is allowed. */
    CHECK(cuEventRecord(e0, s0));
    CHECK(cuStreamWaitEvent(sl, e0, 0));
    CHECK(cuStreamWaitEvent(s0, el, 0));
    CHECK(cuStreamSynchronize(s0));
    /* Between servers (no peer access on the sim) recording an event on another device's
     * stream, timing two devices' events or launching on another device's stream is
     * refused here; on one server the server's driver decides. */
    int peer = 1;
    CHECK(cuDeviceCanAccessPeer(&peer, 0, last));
    if (!peer) {
        EXPECT(cuEventRecord(e0, sl), INVALID_HANDLE);
        float ms;
        EXPECT(cuEventElapsedTime(&ms, e0, el), INVALID_HANDLE);
        CUmodule m;
        CUfunction f;
        static const char ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\nret;\n}\n";
        CHECK(cuModuleLoadData(&m, ptx));
        CHECK(cuModuleGetFunction(&f, m, "k"));
        EXPECT(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, sl, NULL, NULL), INVALID_HANDLE);
        printf("cross-server handles refused\n");
    }
    CHECK(cuEventDestroy_v2(el));
    CHECK(cuStreamDestroy_v2(sl));
    CHECK(cuEventDestroy_v2(e0));
    CHECK(cuStreamDestroy_v2(s0));
    printf("handles ok\n");

    for (int d = 0; d < n; d++) {
        CHECK(cuMemFree_v2(src[d]));
        CHECK(cuMemFree_v2(dst[d]));
    }
    CHECK(cuCtxSynchronize());
    printf("done\n");
    return 0;
}
