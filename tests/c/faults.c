/* Faults seen from a client (driver API through vgpu). Usage:
 *   faults loop    work (copy in, copy out, verify) until a call fails; "ready" after the
 *                  first round; on failure print "lost <code> after <s> s" and exit 0
 *   faults stall   set up, print "ready", wait for a line on stdin, then time one
 *                  synchronous call after another (the server is stopped or killed by
 *                  then) and print "<call> -> <code> after <s> s" for each; exit 0
 * Declares only what it calls (no NVIDIA headers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_decls.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

#define N (1 << 20)

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "loop";
    static unsigned char a[N], b[N];
    CUcontext ctx;
    CUdeviceptr p;
    int r;
    if ((r = cuInit(0)) || (r = cuDevicePrimaryCtxRetain(&ctx, 0)) || (r = cuCtxSetCurrent(ctx)) ||
        (r = cuMemAlloc_v2(&p, N))) {
        printf("setup failed %d\n", r);
        return 1;
    }
    for (int i = 0; i < N; i++) a[i] = (unsigned char)(i * 31 + 7);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "loop")) {
        double t0 = now();
        for (long round = 0;; round++) {
            double t = now();
            if ((r = cuMemcpyHtoD_v2(p, a, N)) || (r = cuMemcpyDtoH_v2(b, p, N))) {
                printf("lost %d after %.2f s (round %ld)\n", r, now() - t, round);
                return 0;
            }
            if (memcmp(a, b, N)) {
                printf("CORRUPT round %ld\n", round);
                return 2;
            }
            if (round == 0) printf("ready\n");
            (void)t0;
        }
    }
    if ((r = cuMemcpyHtoD_v2(p, a, N))) {
        printf("setup failed %d\n", r);
        return 1;
    }
    printf("ready\n");
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    double t = now();
    r = cuMemcpyDtoH_v2(b, p, N);
    printf("cuMemcpyDtoH -> %d after %.2f s\n", r, now() - t);
    t = now();
    r = cuCtxSynchronize();
    printf("cuCtxSynchronize -> %d after %.2f s\n", r, now() - t);
    size_t fr, tot;
    t = now();
    r = cuMemGetInfo_v2(&fr, &tot);
    printf("cuMemGetInfo -> %d after %.2f s\n", r, now() - t);
    t = now();
    r = cuMemFree_v2(p);
    printf("cuMemFree -> %d after %.2f s\n", r, now() - t);
    printf("exiting\n");
    return 0;
}
