/* Prompt batches as llama.cpp uploads them: rows of a token table gathered into pinned
 * memory and copied to the same device buffer batch after batch, tokens repeating as text
 * repeats them. Two threads do it at once, each with its own stream and buffer, so that
 * pieces kept for one are named by the other. Every batch is read back and compared; a
 * batch whose length is not a whole number of pieces (a shorter last piece) comes last.
 * Usage: paged_copy ROWS WIDTH_FLOATS BATCHES TOKENS. Plain C types, no NVIDIA headers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_decls.h"

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return (void *)1; } } while (0)

static int rows, width, batches, tokens;
static float *table;
static CUcontext ctx;

/* A token drawn with a heavy head, as in text: small ids far more often. */
static int token(unsigned *state) {
    *state = *state * 1103515245u + 12345u;
    unsigned r = (*state >> 8) % 1000u;
    unsigned span = r < 700 ? (unsigned)rows / 16 + 1 : (unsigned)rows;
    *state = *state * 1103515245u + 12345u;
    return (int)((*state >> 8) % span);
}

static void *run(void *arg) {
    long id = (long)arg;
    size_t row = (size_t)width * sizeof(float), len = row * (size_t)tokens;
    CUstream s;
    CUdeviceptr d;
    unsigned char *host, *back = malloc(len + 7);
    unsigned state = 7u + (unsigned)id * 7919u;
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuStreamCreate(&s, 1));
    CHECK(cuMemAlloc_v2(&d, len + 7));
    CHECK(cuMemHostAlloc((void **)&host, len + 7, 0));
    for (int b = 0; b < batches; b++) {
        size_t n = b + 1 == batches ? len + 7 : len;
        for (int t = 0; t < tokens; t++) memcpy(host + (size_t)t * row, table + (size_t)token(&state) * width, row);
        memset(host + len, 0x5a + b, 7);
        CHECK(cuMemcpyHtoDAsync_v2(d, host, n, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemcpyDtoH_v2(back, d, n));
        if (memcmp(back, host, n)) {
            printf("FAIL thread %ld batch %d: the bytes read back differ\n", id, b);
            return (void *)1;
        }
    }
    CHECK(cuMemFreeHost(host));
    CHECK(cuMemFree_v2(d));
    free(back);
    return NULL;
}

int main(int argc, char **argv) {
    CUdevice dev;
    if (argc != 5) return 2;
    rows = atoi(argv[1]), width = atoi(argv[2]), batches = atoi(argv[3]), tokens = atoi(argv[4]);
    table = malloc((size_t)rows * width * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * width; i++) table[i] = (float)((i * 2654435761u) % 100003u) / 7.0f;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev)) {
        printf("FAIL init\n");
        return 1;
    }
    pthread_t th[2];
    for (long i = 0; i < 2; i++) pthread_create(&th[i], NULL, run, (void *)i);
    int failed = 0;
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(th[i], &r);
        failed |= r != NULL;
    }
    if (failed) return 1;
    printf("paged ok\n");
    return 0;
}
