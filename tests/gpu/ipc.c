/* Inter-process sharing (cuIpc*), run natively and through vgpu; both runs must print the
 * same lines. The parent exports memory and an event; a child process (exec'd: CUDA does not
 * survive fork) opens both, waits for the event on its stream, checks the parent's bytes and
 * writes its own, which the parent then reads. Through vgpu the child is a second session of
 * the same server.
 *   ipc                          (the parent)
 *   ipc child MEMHEX EVENTHEX    (the child) */
#include <cuda.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

#define CHECK(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { const char *n_ = "?"; \
    cuGetErrorName(r_, &n_); printf("FAIL %s -> %s (line %d)\n", #x, n_, __LINE__); exit(1); } } while (0)

enum { N = 1 << 18 }; /* 32-bit words: 1 MiB */

static void hex(const char *b, char *out) { for (int i = 0; i < 64; i++) sprintf(out + 2 * i, "%02x", (unsigned char)b[i]); }
static void unhex(const char *s, char *b) { for (int i = 0; i < 64; i++) { unsigned v; sscanf(s + 2 * i, "%2x", &v); b[i] = (char)v; } }
static const char *name(CUresult r) { const char *n = "?"; cuGetErrorName(r, &n); return n; }

static int child(const char *mem, const char *ev) {
    CUdevice dev; CUcontext ctx; CUstream s; CUevent e; CUdeviceptr p;
    CHECK(cuInit(0)); CHECK(cuDeviceGet(&dev, 0)); CHECK(cuDevicePrimaryCtxRetain(&ctx, dev)); CHECK(cuCtxSetCurrent(ctx));
    CUipcMemHandle mh; CUipcEventHandle eh; unhex(mem, mh.reserved); unhex(ev, eh.reserved);
    CHECK(cuIpcOpenEventHandle(&e, eh));
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamWaitEvent(s, e, 0));
    CHECK(cuIpcOpenMemHandle(&p, mh, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
    unsigned *h = malloc(N * 4);
    CHECK(cuMemcpyDtoHAsync(h, p, N * 4, s)); CHECK(cuStreamSynchronize(s));
    int bad = 0; for (int i = 0; i < N; i++) if (h[i] != 0x11223344u) bad++;
    printf("child: the event %s, the parent's words: %d wrong\n", name(cuEventQuery(e)), bad);
    CUdeviceptr base; size_t size; CHECK(cuMemGetAddressRange(&base, &size, p + 4096));
    printf("child: the opened range starts at its pointer %s, %zu bytes\n", base == p ? "yes" : "NO", size);
    CHECK(cuMemsetD8(p, 0x5a, N * 4)); CHECK(cuCtxSynchronize());
    CHECK(cuIpcCloseMemHandle(p));
    printf("child: closed; closing again: %s\n", name(cuIpcCloseMemHandle(p)));
    CHECK(cuEventDestroy(e)); CHECK(cuStreamDestroy(s));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "child")) return child(argv[2], argv[3]);
    CUdevice dev; CUcontext ctx; CUstream s; CUevent e, plain; CUdeviceptr d;
    CHECK(cuInit(0)); CHECK(cuDeviceGet(&dev, 0)); CHECK(cuDevicePrimaryCtxRetain(&ctx, dev)); CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CHECK(cuMemAlloc(&d, N * 4));
    CHECK(cuMemsetD32Async(d, 0x11223344u, N, s));
    CHECK(cuEventCreate(&e, CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventRecord(e, s));
    CUipcMemHandle mh; CUipcEventHandle eh;
    CHECK(cuIpcGetMemHandle(&mh, d)); CHECK(cuIpcGetEventHandle(&eh, e));
    CHECK(cuEventCreate(&plain, 0));
    printf("parent: a handle of an event without CU_EVENT_INTERPROCESS: %s\n", name(cuIpcGetEventHandle(&eh, plain)));
    CHECK(cuIpcGetEventHandle(&eh, e));
    char mem[129], ev[129]; hex(mh.reserved, mem); hex(eh.reserved, ev);
    fflush(stdout);
    char *args[] = {argv[0], "child", mem, ev, NULL};
    pid_t pid; int st = 0;
    if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ) != 0) { printf("FAIL spawn\n"); return 1; }
    waitpid(pid, &st, 0);
    printf("parent: child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    unsigned char *h = malloc(N * 4);
    CHECK(cuMemcpyDtoH(h, d, N * 4));
    int bad = 0; for (int i = 0; i < N * 4; i++) if (h[i] != 0x5a) bad++;
    printf("parent: the child's bytes: %d wrong\n", bad);
    CHECK(cuMemFree(d)); CHECK(cuEventDestroy(e)); CHECK(cuEventDestroy(plain));
    printf("ipc done\n");
    return 0;
}
