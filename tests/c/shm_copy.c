/* Copies both ways between device memory and pinned (cuMemAllocHost) or pageable (malloc)
 * host memory, 1 B to 64 MiB of random bytes, synchronous and asynchronous (then the stream
 * is synchronized), every pairing of source and destination kinds, checked byte for byte.
 * Over shm: the pinned buffers lie in the shared segment and large pageable copies go
 * through its ring; over unix: the same results through the socket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { const char *n_ = "?"; cuGetErrorName(r_, &n_); \
    printf("FAIL %s -> %d %s (line %d)\n", #x, r_, n_, __LINE__); return 1; } } while (0)

#define MAX (64u << 20)

static unsigned long long seed = 0x243f6a8885a308d3ull;
static void fill(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        p[i] = (unsigned char)(seed >> 32);
    }
}

int main(void) {
    static const size_t sizes[] = {1, 7, 4096, 65537, (256u << 10) - 1, 256u << 10, (1u << 20) + 13,
                                   (8u << 20) + 1, MAX};
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    CUdeviceptr d;
    unsigned char *pinned[2], *pageable[2];
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&d, MAX + 64));
    CHECK(cuMemAllocHost_v2((void **)&pinned[0], MAX));
    CHECK(cuMemHostAlloc((void **)&pinned[1], MAX, 0));
    pageable[0] = malloc(MAX);
    pageable[1] = malloc(MAX);
    if (!pageable[0] || !pageable[1]) { printf("FAIL malloc\n"); return 1; }

    int copies = 0;
    for (unsigned z = 0; z < sizeof sizes / sizeof *sizes; z++) {
        size_t n = sizes[z];
        CUdeviceptr at = d + (z % 3);  /* unaligned device offsets too */
        for (int form = 0; form < 2; form++) {          /* 0: synchronous, 1: async + sync */
            for (int from = 0; from < 2; from++) {      /* 0: pinned, 1: pageable */
                for (int to = 0; to < 2; to++) {
                    unsigned char *src = from ? pageable[0] : pinned[0];
                    unsigned char *dst = to ? pageable[1] : pinned[1];
                    /* Offsets inside the buffers, so that copies start mid-allocation. */
                    size_t so = n < MAX ? (z * 37) % (MAX - n + 1) : 0, dso = n < MAX ? (z * 101) % (MAX - n + 1) : 0;
                    fill(src + so, n);
                    memset(dst + dso, 0, n);
                    CHECK(cuMemsetD8_v2(at, 0, n));
                    if (form == 0) {
                        CHECK(cuMemcpyHtoD_v2(at, src + so, n));
                        CHECK(cuMemcpyDtoH_v2(dst + dso, at, n));
                    } else {
                        CHECK(cuMemcpyHtoDAsync_v2(at, src + so, n, s));
                        CHECK(cuMemcpyDtoHAsync_v2(dst + dso, at, n, s));
                        CHECK(cuStreamSynchronize(s));
                    }
                    if (memcmp(src + so, dst + dso, n) != 0) {
                        size_t i = 0;
                        while (src[so + i] == dst[dso + i]) i++;
                        printf("FAIL %zu bytes form %d from %s to %s: first difference at %zu\n", n, form,
                               from ? "pageable" : "pinned", to ? "pageable" : "pinned", i);
                        return 1;
                    }
                    copies++;
                }
            }
        }
    }
    printf("%d copies ok\n", copies);

    /* An async copy out of pinned memory and a change of that memory after the
     * synchronize: the device holds what was there when the copy ran. */
    memset(pinned[0], 0x11, 4096);
    CHECK(cuMemcpyHtoDAsync_v2(d, pinned[0], 4096, s));
    CHECK(cuStreamSynchronize(s));
    memset(pinned[0], 0x22, 4096);
    CHECK(cuMemcpyDtoH_v2(pageable[1], d, 4096));
    for (int i = 0; i < 4096; i++)
        if (pageable[1][i] != 0x11) { printf("FAIL ordering at %d: %#x\n", i, pageable[1][i]); return 1; }

    CHECK(cuMemFreeHost(pinned[0]));
    CHECK(cuMemFreeHost(pinned[1]));
    /* Freed blocks are handed out again. */
    CHECK(cuMemAllocHost_v2((void **)&pinned[0], MAX));
    CHECK(cuMemFreeHost(pinned[0]));
    CHECK(cuCtxSynchronize());
    CHECK(cuStreamDestroy_v2(s));
    CHECK(cuMemFree_v2(d));
    free(pageable[0]);
    free(pageable[1]);
    printf("shm copy done\n");
    return 0;
}
