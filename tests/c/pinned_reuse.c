/* Pinned memory copied over lanes (large copies) is the application's again once a
 * synchronize returns: overwritten at once, the server must still have copied the old
 * bytes. Then a copy queued right before its memory is freed. Plain C types, no NVIDIA
 * headers. */
#include <stdio.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)
#define N (3 << 20)

static unsigned char back[N];

/* Bytes that vary word to word, so that the copies are not sent packed as runs. */
static unsigned char at(int round, size_t j) { return (unsigned char)(round + j * 31); }

static void fill(unsigned char *p, int round) {
    for (size_t j = 0; j < N; j++) p[j] = at(round, j);
}

static int check(int round) {
    for (size_t j = 0; j < N; j++)
        if (back[j] != at(round, j)) {
            printf("FAIL round %d: byte %zu is %d, not %d\n", round, j, back[j], at(round, j));
            return 1;
        }
    return 0;
}

int main(void) {
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    CUdeviceptr d;
    unsigned char *host;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&d, N));
    CHECK(cuMemHostAlloc((void **)&host, N, 0));
    for (int i = 1; i <= 20; i++) {
        fill(host, i);
        CHECK(cuMemcpyHtoDAsync_v2(d, host, N, s));
        CHECK(cuStreamSynchronize(s));
        memset(host, 0xee, N);
        CHECK(cuMemcpyDtoH_v2(back, d, N));
        if (check(i)) return 1;
    }
    fill(host, 21);
    CHECK(cuMemcpyHtoDAsync_v2(d, host, N, s));
    CHECK(cuMemFreeHost(host));
    CHECK(cuMemcpyDtoH_v2(back, d, N));
    if (check(21)) return 1;
    printf("pinned reuse ok\n");
    return 0;
}
