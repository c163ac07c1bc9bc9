/* Synchronizes the client answers itself (crates/client/src/idle.rs): small copies then a
 * synchronize (a one-way barrier), a memset then a synchronize (a real one), a copy back
 * then a synchronize (answered locally), and an error that an answered synchronize hides
 * coming back with the next synchronous call. Plain C types, no NVIDIA headers. */
#include <stdio.h>
#include <string.h>

#include "cuda_decls.h"

int cuStreamQuery(CUstream);
int cuOccupancyMaxActiveBlocksPerMultiprocessor(int *, CUfunction, int, size_t);
int cuOccupancyMaxPotentialBlockSize(int *, int *, CUfunction, size_t (*)(int), size_t, int);
static size_t smem_of(int block) { return (size_t)block * 4; }

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)

int main(void) {
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    CUdeviceptr d;
    unsigned char buf[4096], back[4096];
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&d, 1 << 20));
    /* Inputs for 100 "tokens": each a small copy, then a synchronize. */
    for (int i = 0; i < 100; i++) {
        memset(buf, i, sizeof buf);
        CHECK(cuMemcpyHtoDAsync_v2(d, buf, sizeof buf, s));
        CHECK(cuStreamSynchronize(s));
    }
    /* Work on the device: a real synchronize. */
    CHECK(cuMemsetD8Async(d + 100, 0xee, 10, s));
    CHECK(cuStreamSynchronize(s));
    /* The copy back waited for the stream: nothing left to wait for. */
    CHECK(cuMemcpyDtoHAsync_v2(back, d, sizeof back, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuStreamQuery(s));
    /* An event recorded on an idle stream: waited for (the GPU has still to pass it). */
    CUevent ev;
    CHECK(cuEventCreate(&ev, 0));
    CHECK(cuEventRecord(ev, s));
    CHECK(cuEventSynchronize(ev));
    CHECK(cuCtxSynchronize());
    if (back[0] != 99 || back[99] != 99 || back[100] != 0xee || back[109] != 0xee || back[110] != 99) {
        printf("FAIL bytes %d %d %d\n", back[0], back[100], back[110]);
        return 1;
    }
    printf("elided ok\n");
    /* Occupancy is a pure function of its arguments: asked once per distinct question. */
    static const char ptx[] = ".version 8.0\n.target sm_52\n.address_size 64\n.visible .entry empty()\n{\nret;\n}\n";
    CUmodule m;
    CUfunction f;
    int blocks = 0, again = 0, other = 0;
    CHECK(cuModuleLoadData(&m, ptx));
    CHECK(cuModuleGetFunction(&f, m, "empty"));
    CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, f, 256, 0));
    for (int i = 0; i < 10; i++) CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&again, f, 256, 0));
    CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&other, f, 1024, 0));
    printf("occupancy %d %d %d\n", blocks, again, other);
    /* The block size of highest occupancy, searched by the client over those answers. */
    int grid = 0, block = 0, grid2 = 0, block2 = 0;
    CHECK(cuOccupancyMaxPotentialBlockSize(&grid, &block, f, 0, 0, 0));
    CHECK(cuOccupancyMaxPotentialBlockSize(&grid2, &block2, f, smem_of, 0, 200));
    printf("potential %d %d, at most 200: %d %d\n", grid, block, grid2, block2);
    /* A copy past the allocation fails on the server; the barrier does not wait for it,
     * so the next synchronous call reports it. */
    CHECK(cuMemcpyHtoDAsync_v2(d + (1 << 20) - 16, buf, 64, s));
    int rs = cuStreamSynchronize(s);
    int r = cuMemcpyDtoH_v2(back, d, 16);
    printf("sync %d then %d\n", rs, r);
    return 0;
}
