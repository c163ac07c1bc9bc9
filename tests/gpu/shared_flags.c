/* A GPU shared with another session: while one runs (`shared_flags busy`), the server makes
 * this session's contexts wait blocking (transport::crowd, contexts::set_shared). What the
 * application reads of its primary context's flags must stay what it set, before and after
 * it sets them again. Run natively and through vgpu; the outputs must match. */
#include <cuda.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { printf("%s failed: %d\n", #x, (int)r_); return 1; } } while (0)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Requests to the server for `ms` milliseconds, one a millisecond. */
static int ask_for(int ms) {
    size_t free_b, total_b;
    for (double end = now_ms() + ms; now_ms() < end; usleep(1000))
        CHECK(cuMemGetInfo(&free_b, &total_b));
    return 0;
}

static int state(CUdevice d, const char *when) {
    unsigned flags;
    int active;
    CHECK(cuDevicePrimaryCtxGetState(d, &flags, &active));
    printf("%s: scheduling %u, active %d\n", when, flags & CU_CTX_SCHED_MASK, active);
    return 0;
}

int main(int argc, char **argv) {
    CUdevice d;
    CUcontext c;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&d, 0));
    int busy = argc > 1 && strcmp(argv[1], "busy") == 0;
    if (!busy)
        CHECK(cuDevicePrimaryCtxSetFlags(d, CU_CTX_SCHED_SPIN));
    CHECK(cuDevicePrimaryCtxRetain(&c, d));
    CHECK(cuCtxSetCurrent(c));
    if (busy)
        return ask_for(3000);
    if (ask_for(500)) return 1;
    if (state(d, "shared")) return 1;
    CHECK(cuDevicePrimaryCtxSetFlags(d, CU_CTX_SCHED_YIELD));
    if (ask_for(100)) return 1;
    if (state(d, "set again while shared")) return 1;
    /* The other session is done by now: alone again. */
    if (ask_for(3000)) return 1;
    if (state(d, "alone")) return 1;
    CHECK(cuDevicePrimaryCtxRelease(d));
    printf("ok\n");
    return 0;
}
