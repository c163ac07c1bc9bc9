/* A model load as llama.cpp and Ollama do it: weights copied once each into device memory
 * (one tensor of 9 MiB + 5 bytes in one copy, another in 128 KiB pieces, each copy followed
 * by a synchronize), then a prompt batch's inputs copied to one place three times with new
 * bytes each time (new in every run too). Every byte must land, whether the server sent or already had it.
 * The weights' bytes depend on argv[1] (a seed), so a run can load "another model".
 * Plain C types, no NVIDIA headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)
#define BIG (9 * 1024 * 1024 + 5)
#define PIECES 6
#define PIECE (128 * 1024)
#define BATCH (512 * 1024)

static unsigned char host[BIG], back[BIG];

static void fill(unsigned char *p, size_t n, unsigned seed) {
    unsigned x = seed * 2654435761u + 1;
    for (size_t j = 0; j < n; j++) {
        x = x * 1103515245u + 12345u;
        p[j] = (unsigned char)(x >> 16);
    }
}

static int same(CUdeviceptr d, const unsigned char *want, size_t n, const char *what) {
    if (cuMemcpyDtoH_v2(back, d, n)) return printf("FAIL read back %s\n", what), 1;
    for (size_t j = 0; j < n; j++)
        if (back[j] != want[j]) return printf("FAIL %s: byte %zu is %d, not %d\n", what, j, back[j], want[j]), 1;
    return 0;
}

int main(int argc, char **argv) {
    unsigned seed = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    CUdeviceptr big, pieces, batch;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&big, BIG));
    CHECK(cuMemAlloc_v2(&pieces, PIECES * PIECE));
    CHECK(cuMemAlloc_v2(&batch, BATCH));

    fill(host, BIG, seed);
    CHECK(cuMemcpyHtoDAsync_v2(big, host, BIG, s));
    CHECK(cuStreamSynchronize(s));
    memset(host, 0x55, BIG); /* the application's memory again after the synchronize */
    fill(host, BIG, seed);
    if (same(big, host, BIG, "big tensor")) return 1;

    for (int i = 0; i < PIECES; i++) {
        fill(host, PIECE, seed * 100 + i);
        CHECK(cuMemcpyHtoDAsync_v2(pieces + (CUdeviceptr)i * PIECE, host, PIECE, s));
        CHECK(cuStreamSynchronize(s));
    }
    for (int i = 0; i < PIECES; i++) {
        fill(host, PIECE, seed * 100 + i);
        if (same(pieces + (CUdeviceptr)i * PIECE, host, PIECE, "piece")) return 1;
    }

    for (int b = 0; b < 3; b++) {
        fill(host, BATCH, (unsigned)getpid() * 3 + b);
        CHECK(cuMemcpyHtoDAsync_v2(batch, host, BATCH, s));
        CHECK(cuStreamSynchronize(s));
        if (same(batch, host, BATCH, "batch")) return 1;
    }
    printf("weights ok\n");
    return 0;
}
