/* Over shm, a synchronize after a pageable upload through the segment's staging ring needs
 * no wait for the GPU: the bytes are in the ring, so the caller may reuse its buffer, and
 * a slot is refilled only after its copy is done. Twenty 1 MiB uploads (more than the
 * ring's slots) from one buffer, rewritten after each synchronize, must all land intact.
 * An upload from pinned memory is read by the server's DMA later: its synchronize waits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)

#define N 20
#define SIZE (1u << 20)

int main(void) {
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    CUdeviceptr d;
    unsigned char *buf = malloc(SIZE), *back = malloc((size_t)N * SIZE), *pinned;
    if (!buf || !back) return 1;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&d, (size_t)N * SIZE));
    for (int i = 0; i < N; i++) {
        memset(buf, 0x40 + i, SIZE);
        CHECK(cuMemcpyHtoDAsync_v2(d + (size_t)i * SIZE, buf, SIZE, s));
        CHECK(cuStreamSynchronize(s));
    }
    memset(buf, 0, SIZE); /* none of it may reach the device now */
    CHECK(cuMemcpyDtoH_v2(back, d, (size_t)N * SIZE));
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < SIZE; j += 4093)
            if (back[(size_t)i * SIZE + j] != 0x40 + i) {
                printf("FAIL copy %d byte %zu: %d\n", i, j, back[(size_t)i * SIZE + j]);
                return 1;
            }
    CHECK(cuMemAllocHost_v2((void **)&pinned, SIZE));
    memset(pinned, 0x7f, SIZE);
    CHECK(cuMemcpyHtoDAsync_v2(d, pinned, SIZE, s));
    CHECK(cuStreamSynchronize(s));
    memset(pinned, 0, SIZE);
    CHECK(cuMemcpyDtoH_v2(back, d, SIZE));
    if (back[0] != 0x7f || back[SIZE - 1] != 0x7f) {
        printf("FAIL pinned copy: %d %d\n", back[0], back[SIZE - 1]);
        return 1;
    }
    printf("staged uploads ok\n");
    return 0;
}
