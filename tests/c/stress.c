/* One client of the stress test: CYCLES rounds of allocate, fill (synchronous or
 * asynchronous copy, sometimes a memset over part of it), read back, verify every byte,
 * free. Sizes 4-64 KiB vary with SEED. Prints "ok cycles=N bytes=B" or the first bad byte.
 * Declares only what it calls (no NVIDIA headers). Usage: stress CYCLES SEED */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (cycle %d)\n", #x, r_, c); return 1; } } while (0)

static unsigned long long rng;
static unsigned next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (unsigned)rng; }

int main(int argc, char **argv) {
    int cycles = argc > 1 ? atoi(argv[1]) : 1000, c = -1;
    rng = 0x9e3779b97f4a7c15ULL ^ (unsigned long long)(argc > 2 ? atoi(argv[2]) : 1) * 0x100000001b3ULL;
    enum { MAX = 64 << 10 };
    unsigned char *src = malloc(MAX), *dst = malloc(MAX), *want = malloc(MAX);
    CUcontext ctx;
    CUstream s;
    CHECK(cuInit(0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 0));
    unsigned long long bytes = 0;
    for (c = 0; c < cycles; c++) {
        size_t n = 4096 + next() % (MAX - 4096 + 1);
        for (size_t i = 0; i < n; i++) src[i] = (unsigned char)next();
        memcpy(want, src, n);
        CUdeviceptr p, q;
        CHECK(cuMemAlloc_v2(&p, n));
        if (c % 2) {
            CHECK(cuMemcpyHtoDAsync_v2(p, src, n, s));
            size_t at = next() % n, len = 1 + next() % (n - at);
            unsigned char v = (unsigned char)next();
            CHECK(cuMemsetD8Async(p + at, v, len, s));
            memset(want + at, v, len);
            CHECK(cuStreamSynchronize(s));
        } else {
            CHECK(cuMemcpyHtoD_v2(p, src, n));
        }
        if (c % 5 == 0) { /* through a second buffer, device to device */
            CHECK(cuMemAlloc_v2(&q, n));
            CHECK(cuMemcpyDtoD_v2(q, p, n));
            CHECK(cuMemFree_v2(p));
            p = q;
        }
        memset(dst, 0, n);
        CHECK(cuMemcpyDtoH_v2(dst, p, n));
        for (size_t i = 0; i < n; i++)
            if (dst[i] != want[i]) {
                printf("CORRUPT cycle %d byte %zu of %zu: got %u want %u\n", c, i, n, dst[i], want[i]);
                return 2;
            }
        CHECK(cuMemFree_v2(p));
        bytes += n;
    }
    printf("ok cycles=%d bytes=%llu\n", cycles, bytes);
    return 0;
}
