/* Small host-to-device copies on one stream while another is being captured in global
 * mode. The vgpu server gives copies of up to 64 KiB to the driver from its own
 * (pageable) memory: that must neither fail nor invalidate the application's capture,
 * and a copy on the capturing stream itself must copy, at every launch, what its pinned
 * memory holds then (through vgpu over a socket the client sends those bytes again before
 * each launch). Runs natively and through vgpu on the GPU machine (run.sh's driver stage);
 * plain C types, no NVIDIA headers. */
#include <stdio.h>
#include <string.h>

#include "cuda_decls.h"

typedef void *CUgraph, *CUgraphExec;
int cuStreamBeginCapture_v2(CUstream, int);
int cuStreamEndCapture(CUstream, CUgraph *);
int cuGraphInstantiateWithFlags(CUgraphExec *, CUgraph, unsigned long long);
int cuGraphLaunch(CUgraphExec, CUstream);
int cuGraphExecDestroy(CUgraphExec);
int cuGraphDestroy(CUgraph);
int cuMemsetD32Async(CUdeviceptr, unsigned, size_t, CUstream);

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)
#define GLOBAL 0
#define SMALL (60 << 10)

static unsigned char plain[SMALL], back[SMALL];

static int same(const unsigned char *want, size_t n, const char *what) {
    for (size_t j = 0; j < n; j++)
        if (back[j] != want[j]) {
            printf("FAIL %s: byte %zu is %d, not %d\n", what, j, back[j], want[j]);
            return 1;
        }
    printf("%s: %zu bytes ok\n", what, n);
    return 0;
}

int main(void) {
    CUdevice dev;
    CUcontext ctx;
    CUstream cap, side;
    CUdeviceptr d_side, d_cap;
    unsigned char *pinned;
    CUgraph g;
    CUgraphExec x;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&cap, 1));
    CHECK(cuStreamCreate(&side, 1));
    CHECK(cuMemAlloc_v2(&d_side, 3 * SMALL));
    CHECK(cuMemAlloc_v2(&d_cap, SMALL));
    CHECK(cuMemHostAlloc((void **)&pinned, SMALL, 0));
    for (size_t j = 0; j < SMALL; j++) {
        pinned[j] = (unsigned char)(j * 7 + 1);
        plain[j] = (unsigned char)(j * 13 + 5);
    }

    CHECK(cuStreamBeginCapture_v2(cap, GLOBAL));
    /* Beside the capture: a few bytes, a few KiB and 60 KiB, from pinned and from plain memory. */
    CHECK(cuMemcpyHtoDAsync_v2(d_side, pinned, 4, side));
    CHECK(cuMemcpyHtoDAsync_v2(d_side + 4, pinned + 4, 4092, side));
    CHECK(cuMemcpyHtoDAsync_v2(d_side + SMALL, pinned, SMALL, side));
    CHECK(cuMemcpyHtoDAsync_v2(d_side + 2 * SMALL, plain, SMALL, side));
    /* In the capture: a copy from pinned memory, read again at each launch. */
    CHECK(cuMemcpyHtoDAsync_v2(d_cap, pinned, 4096, cap));
    CHECK(cuStreamEndCapture(cap, &g));
    CHECK(cuGraphInstantiateWithFlags(&x, g, 0));
    CHECK(cuStreamSynchronize(side));
    CHECK(cuMemcpyDtoH_v2(back, d_side, 4096));
    if (same(pinned, 4096, "beside the capture, small")) return 1;
    CHECK(cuMemcpyDtoH_v2(back, d_side + SMALL, SMALL));
    if (same(pinned, SMALL, "beside the capture, pinned 60 KiB")) return 1;
    CHECK(cuMemcpyDtoH_v2(back, d_side + 2 * SMALL, SMALL));
    if (same(plain, SMALL, "beside the capture, plain 60 KiB")) return 1;

    for (int round = 1; round <= 3; round++) {
        CHECK(cuMemsetD32Async(d_cap, 0, 1024, cap));
        if (round > 1) memset(pinned, round, 4096); /* the first launch copies what was captured */
        CHECK(cuGraphLaunch(x, cap));
        CHECK(cuStreamSynchronize(cap));
        CHECK(cuMemcpyDtoH_v2(back, d_cap, 4096));
        char what[64];
        snprintf(what, sizeof what, "captured copy, launch %d", round);
        if (same(pinned, 4096, what)) return 1;
    }
    CHECK(cuGraphExecDestroy(x));
    CHECK(cuGraphDestroy(g));
    printf("capture side copy ok\n");
    return 0;
}
