/* A process that uses the GPU, forks, and has both parent and child go on using it: the
 * child starts a session of its own (the parent's contexts and connection are not the
 * child's to touch), the parent's session is unharmed. Pinned memory too, which over shm:
 * lies in each process's own segment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d, pid %d)\n", #x, r_, __LINE__, (int)getpid()); return 1; } } while (0)

/* Set up a context, then copy `n` bytes there and back through pinned memory, 3 times. */
static int round_trip(const char *who, unsigned char tag) {
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    size_t n = 1 << 20;
    unsigned char *host, *back;
    CUdeviceptr d;
    CHECK(cuMemAllocHost_v2((void **)&host, n));
    CHECK(cuMemAllocHost_v2((void **)&back, n));
    CHECK(cuMemAlloc_v2(&d, n));
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(i * 7 + tag + k);
        CHECK(cuMemcpyHtoD_v2(d, host, n));
        memset(back, 0, n);
        CHECK(cuMemcpyDtoH_v2(back, d, n));
        if (memcmp(host, back, n)) { printf("FAIL %s: bytes differ\n", who); return 1; }
    }
    CHECK(cuMemFree_v2(d));
    CHECK(cuMemFreeHost(host));
    CHECK(cuMemFreeHost(back));
    return 0;
}

int main(void) {
    if (round_trip("parent before fork", 1)) return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { printf("FAIL fork\n"); return 1; }
    if (pid == 0) {
        alarm(20);
        int r = round_trip("child", 2);
        printf("child %s\n", r ? "failed" : "ok");
        fflush(stdout);
        exit(r); /* atexit handlers run: the child's own trace summary */
    }
    /* The parent goes on while the child works. */
    int r = round_trip("parent during child", 3);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
        printf("FAIL child status %#x\n", status);
        return 1;
    }
    if (r || round_trip("parent after child", 4)) return 1;
    printf("fork ok\n");
    return 0;
}
