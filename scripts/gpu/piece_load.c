/* A model load as Ollama's own engine does it: the file read 128 KiB at a time by several
 * threads, each piece copied to its place in device memory (cudaMemcpyAsync and a
 * synchronize, through ggml_backend_tensor_set), which makes one small copy per piece.
 * Prints the seconds the copies took and a checksum of the device memory read back, so
 * that a load through vgpu can be compared with a native one.
 *   piece_load FILE [THREADS]                                      (driver API, plain C) */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../tests/c/cuda_decls.h"

#define PIECE (128 * 1024)

static int fd;
static size_t size;
static CUdeviceptr dev;
static CUcontext ctx;
static int threads;
static int failed;

static void *loader(void *arg) {
    long t = (long)arg;
    CUstream s;
    unsigned char *buf = malloc(PIECE);
    if (cuCtxSetCurrent(ctx) || cuStreamCreate(&s, 1)) { failed = 1; return NULL; }
    for (size_t at = (size_t)t * PIECE; at < size; at += (size_t)threads * PIECE) {
        size_t n = size - at < PIECE ? size - at : PIECE;
        if (pread(fd, buf, n, (off_t)at) != (ssize_t)n) { failed = 1; break; }
        if (cuMemcpyHtoDAsync_v2(dev + at, buf, n, s) || cuStreamSynchronize(s)) { failed = 1; break; }
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    threads = argc > 2 ? atoi(argv[2]) : 8;
    struct stat st;
    fd = open(argv[1], O_RDONLY);
    if (fd < 0 || fstat(fd, &st)) return 2;
    size = (size_t)st.st_size;
    CUdevice d;
    if (cuInit(0) || cuDeviceGet(&d, 0) || cuDevicePrimaryCtxRetain(&ctx, d) || cuCtxSetCurrent(ctx)) return 3;
    if (cuMemAlloc_v2(&dev, size)) return 4;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t th[64];
    for (long t = 0; t < threads && t < 64; t++) pthread_create(&th[t], NULL, loader, (void *)t);
    for (long t = 0; t < threads && t < 64; t++) pthread_join(th[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (failed) { printf("FAIL\n"); return 5; }
    /* A checksum of what landed, 64 KiB samples every 16 MiB. */
    unsigned long long sum = 0;
    static unsigned char back[65536];
    for (size_t at = 0; at + sizeof back <= size; at += 16u << 20) {
        if (cuMemcpyDtoH_v2(back, dev + at, sizeof back)) return 6;
        for (size_t j = 0; j < sizeof back; j++) sum = sum * 31 + back[j];
    }
    fprintf(stderr, "%.2f s\n", (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    printf("pieces landed, checksum %016llx\n", sum);
    return 0;
}
