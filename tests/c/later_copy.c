/* Device-to-host copies into pinned memory return before their bytes arrive (over sockets
 * vgpu sends them without waiting for the stream); every way an application learns that a
 * copy completed must find the bytes in place: a stream synchronize, a stream query, an
 * event synchronize in another thread, a synchronous call of another kind, and freeing the
 * memory right after the copy. Plain C types, no NVIDIA headers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); exit(1); } } while (0)
#define N (128 * 1024)

static CUcontext ctx;
static CUdeviceptr dev;
static unsigned char want[N];

static void fill(unsigned char *p, int seed) {
    for (int i = 0; i < N; i++) p[i] = (unsigned char)(i * 7 + seed);
}

static void same(const unsigned char *got, const char *what) {
    if (memcmp(got, want, N)) {
        printf("FAIL %s: the bytes are not there\n", what);
        exit(1);
    }
    printf("%s ok\n", what);
}

struct waiter {
    CUevent e;
    unsigned char *buf;
};

static void *wait_event(void *arg) {
    struct waiter *w = arg;
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuEventSynchronize(w->e));
    same(w->buf, "event in another thread");
    return NULL;
}

int main(void) {
    CUdevice d;
    CUstream s;
    unsigned char *pinned;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&d, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&dev, N));
    CHECK(cuMemHostAlloc((void **)&pinned, N, 0));

    for (int round = 0; round < 3; round++) {
        fill(want, round);
        CHECK(cuMemcpyHtoD_v2(dev, want, N));

        memset(pinned, 0, N);
        CHECK(cuMemcpyDtoHAsync_v2(pinned, dev, N, s));
        CHECK(cuStreamSynchronize(s));
        same(pinned, "stream synchronize");

        memset(pinned, 0, N);
        CHECK(cuMemcpyDtoHAsync_v2(pinned, dev, N, s));
        int r;
        while ((r = cuStreamQuery(s)) == 600 /* not ready */) {
        }
        CHECK(r);
        same(pinned, "stream query");

        memset(pinned, 0, N);
        CUevent e;
        CHECK(cuEventCreate(&e, 0));
        CHECK(cuMemcpyDtoHAsync_v2(pinned, dev, N, s));
        CHECK(cuEventRecord(e, s));
        struct waiter w = {e, pinned};
        pthread_t t;
        pthread_create(&t, NULL, wait_event, &w);
        pthread_join(t, NULL);
        CHECK(cuEventDestroy_v2(e));

        /* Two copies in flight, then a synchronous call of another kind. */
        unsigned char *second;
        CHECK(cuMemHostAlloc((void **)&second, N, 0));
        memset(pinned, 0, N);
        CHECK(cuMemcpyDtoHAsync_v2(pinned, dev, N, s));
        CHECK(cuMemcpyDtoHAsync_v2(second, dev, N, 0));
        size_t free_b, total_b;
        CHECK(cuMemGetInfo_v2(&free_b, &total_b));
        same(pinned, "another synchronous call");
        same(second, "a second copy on another stream");
        /* Freed right after a copy into it: the copy lands first, nothing is written later. */
        CHECK(cuMemcpyDtoHAsync_v2(second, dev, N, s));
        CHECK(cuMemFreeHost(second));
    }
    /* A copy that fails reports it, at once or at the next synchronous call. */
    int now = cuMemcpyDtoHAsync_v2(pinned, dev + N - 16, 64, s);
    int late = cuStreamSynchronize(s);
    printf("failed copy reported: %s\n", now != 0 || late != 0 ? "yes" : "no");
    CHECK(cuMemFreeHost(pinned));
    printf("later copies ok\n");
    return 0;
}
