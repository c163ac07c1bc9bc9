/* Host-to-device copies of runs of a word (attention masks) are sent packed; every shape
 * must land byte for byte: a causal f32 mask, one whose length is not a whole number of
 * words at an odd device offset, runs that start only after a stretch of varied bytes,
 * varied bytes (not packed), and one word over a whole copy (which the server has the GPU
 * fill). Plain C types, no NVIDIA headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)
#define KV 512
#define TOKENS 512
#define N (KV * TOKENS * 4 + 3)

static unsigned char back[N];

static void mask(unsigned char *p) {
    float *f = (float *)p;
    for (int t = 0; t < TOKENS; t++)
        for (int c = 0; c < KV; c++) f[t * KV + c] = c <= t ? 0.0f : -__builtin_inff();
    p[N - 3] = 1, p[N - 2] = 2, p[N - 1] = 3;
}

static int same(const unsigned char *want, size_t n, const char *what) {
    for (size_t j = 0; j < n; j++)
        if (back[j] != want[j]) {
            printf("FAIL %s: byte %zu is %d, not %d\n", what, j, back[j], want[j]);
            return 1;
        }
    printf("%s ok\n", what);
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
    CHECK(cuMemAlloc_v2(&d, N + 1));
    CHECK(cuMemHostAlloc((void **)&host, N, 0));

    mask(host);
    CHECK(cuMemcpyHtoDAsync_v2(d, host, N - 3, s));
    CHECK(cuStreamSynchronize(s));
    memset(host, 0x77, N); /* after a synchronize the memory is the application's again */
    CHECK(cuMemcpyDtoH_v2(back, d, N - 3));
    mask(host);
    if (same(host, N - 3, "mask")) return 1;

    CHECK(cuMemcpyHtoDAsync_v2(d + 1, host, N, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH_v2(back, d + 1, N));
    if (same(host, N, "odd mask")) return 1;

    /* Varied bytes first: the copy goes as it is. */
    for (size_t j = 0; j < N; j++) host[j] = (unsigned char)(j * 131 + (j >> 9));
    CHECK(cuMemcpyHtoDAsync_v2(d, host, N, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH_v2(back, d, N));
    if (same(host, N, "varied")) return 1;

    /* Runs after a short varied stretch, through the runtime's usual path (the legacy
     * stream). */
    mask(host);
    for (size_t j = 0; j < 200; j++) host[j] = (unsigned char)(j * 7);
    CHECK(cuMemcpyHtoDAsync_v2(d, host, N, 0));
    CHECK(cuCtxSynchronize());
    CHECK(cuMemcpyDtoH_v2(back, d, N));
    if (same(host, N, "late runs")) return 1;

    /* One word over a whole copy: zeros at an odd address, 1.0f at an aligned and at an
     * unaligned one. */
    memset(host, 0, N);
    CHECK(cuMemcpyHtoDAsync_v2(d + 1, host, N, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH_v2(back, d + 1, N));
    if (same(host, N, "zeros")) return 1;
    for (size_t j = 0; j < (N - 3) / 4; j++) ((float *)host)[j] = 1.0f;
    for (int off = 0; off <= 2; off += 2) {
        CHECK(cuMemcpyHtoDAsync_v2(d + off, host, N - 3, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemcpyDtoH_v2(back, d + off, N - 3));
        if (same(host, N - 3, off ? "ones unaligned" : "ones")) return 1;
    }
    printf("packed copies ok\n");
    return 0;
}
