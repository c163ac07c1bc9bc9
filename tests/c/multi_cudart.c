/* Several devices on several servers through the CUDA runtime (libcudart.so.13): one line
 * per device (UUID from cudaDeviceProp, PCI bus id), then for every ordered pair a 64 MiB
 * cudaMemcpyPeer and a cudaMemcpy(cudaMemcpyDefault) with device 0 current, each checked
 * byte for byte, and a cudaMemcpyPeerAsync on the source device's stream.
 * Usage: multi_cudart [MiB per copy, default 64]. No NVIDIA headers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *cudaStream_t;
typedef int cudaError_t;
enum { D2H = 2, DEFAULT = 4, MAXDEV = 8 };
cudaError_t cudaGetDeviceCount(int *);
cudaError_t cudaSetDevice(int);
cudaError_t cudaGetDeviceProperties(void *, int);
cudaError_t cudaDeviceGetPCIBusId(char *, int, int);
cudaError_t cudaDeviceCanAccessPeer(int *, int, int);
cudaError_t cudaMalloc(void **, size_t);
cudaError_t cudaFree(void *);
cudaError_t cudaMemcpy(void *, const void *, size_t, int);
cudaError_t cudaMemset(void *, int, size_t);
cudaError_t cudaMemcpyPeer(void *, int, const void *, int, size_t);
cudaError_t cudaMemcpyPeerAsync(void *, int, const void *, int, size_t, cudaStream_t);
cudaError_t cudaStreamCreate(cudaStream_t *);
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaStreamDestroy(cudaStream_t);
cudaError_t cudaDeviceSynchronize(void);
const char *cudaGetErrorName(cudaError_t);

#define CHECK(x) do { cudaError_t r_ = (x); if (r_) { \
    printf("FAIL %s -> %d %s (line %d)\n", #x, r_, cudaGetErrorName(r_), __LINE__); return 1; } } while (0)

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void pattern(uint64_t *w, size_t words, int d) {
    for (size_t i = 0; i < words; i++) w[i] = mix(((uint64_t)d << 40) + i);
}

static int same(const uint64_t *w, size_t words, int d) {
    for (size_t i = 0; i < words; i++)
        if (w[i] != mix(((uint64_t)d << 40) + i)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 64;
    size_t N = mib << 20, words = N / 8;
    int n;
    CHECK(cudaGetDeviceCount(&n));
    if (n < 2 || n > MAXDEV) { printf("FAIL %d devices\n", n); return 1; }
    printf("devices %d\n", n);
    void *src[MAXDEV], *dst[MAXDEV];
    cudaStream_t s[MAXDEV];
    uint64_t *host = malloc(N);
    static unsigned char prop[4096]; /* cudaDeviceProp: name[256], then the 16 UUID bytes */
    for (int d = 0; d < n; d++) {
        char bus[32];
        CHECK(cudaGetDeviceProperties(prop, d));
        CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, d));
        const unsigned char *u = prop + 256;
        printf("dev %d uuid=GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x bus=%s\n", d,
               u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15],
               bus);
        CHECK(cudaSetDevice(d));
        CHECK(cudaMalloc(&src[d], N));
        CHECK(cudaMalloc(&dst[d], N));
        CHECK(cudaStreamCreate(&s[d]));
        pattern(host, words, d);
        CHECK(cudaMemcpy(src[d], host, N, DEFAULT));
    }
    CHECK(cudaSetDevice(0));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j) continue;
            int can = -1;
            CHECK(cudaDeviceCanAccessPeer(&can, i, j));
            CHECK(cudaMemset(dst[j], 0, N));
            CHECK(cudaMemcpyPeer(dst[j], j, src[i], i, N));
            memset(host, 0, N);
            CHECK(cudaMemcpy(host, dst[j], N, D2H));
            if (!same(host, words, i)) { printf("FAIL cudaMemcpyPeer %d -> %d differs\n", i, j); return 1; }
            CHECK(cudaMemset(dst[j], 0, N));
            CHECK(cudaMemcpy(dst[j], src[i], N, DEFAULT));
            memset(host, 0, N);
            CHECK(cudaMemcpy(host, dst[j], N, DEFAULT));
            if (!same(host, words, i)) { printf("FAIL cudaMemcpy(Default) %d -> %d differs\n", i, j); return 1; }
            printf("pair %d->%d ok peer-access=%d\n", i, j, can);
        }
    /* Asynchronous peer copies on the source device's stream, a small one per pair. */
    size_t small = 1 << 20;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j) continue;
            CHECK(cudaMemset(dst[j], 0, small));
            CHECK(cudaMemcpyPeerAsync(dst[j], j, src[i], i, small, s[i]));
            CHECK(cudaStreamSynchronize(s[i]));
            CHECK(cudaMemcpy(host, dst[j], small, D2H));
            if (!same(host, small / 8, i)) { printf("FAIL cudaMemcpyPeerAsync %d -> %d differs\n", i, j); return 1; }
        }
    printf("copies ok\n");
    for (int d = 0; d < n; d++) {
        CHECK(cudaSetDevice(d));
        CHECK(cudaStreamDestroy(s[d]));
        CHECK(cudaFree(src[d]));
        CHECK(cudaFree(dst[d]));
        CHECK(cudaDeviceSynchronize());
    }
    printf("done\n");
    return 0;
}
