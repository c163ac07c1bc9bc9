// NVIDIA's own runtime (libcudart.so.13 from NVIDIA's wheel, argv[1]) over vgpu's libcuda.so.1:
// device count, memory, copies both ways, a kernel registered as nvcc's code does and launched,
// exit.
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef struct { unsigned x, y, z; } dim3_t;
// A fat binary with no entries: the sim takes any image, and its functions are names.
static unsigned char fat[64] __attribute__((aligned(8)));
static struct { int magic, version; const void *data; void *unused; } wrapper = {0x466243B1, 1, fat, 0};
static void stub(void) {}
typedef int (*count_t)(int *);
typedef int (*malloc_t)(void **, size_t);
typedef int (*free_t)(void *);
typedef int (*memcpy_t)(void *, const void *, size_t, int);
typedef const char *(*err_t)(int);
int main(int argc, char **argv) {
    void *rt = dlopen(argv[1], RTLD_NOW);
    if (!rt) { printf("FAIL dlopen %s\n", dlerror()); return 1; }
    count_t count = (count_t)dlsym(rt, "cudaGetDeviceCount");
    malloc_t cmalloc = (malloc_t)dlsym(rt, "cudaMalloc");
    free_t cfree = (free_t)dlsym(rt, "cudaFree");
    memcpy_t cmemcpy = (memcpy_t)dlsym(rt, "cudaMemcpy");
    err_t err = (err_t)dlsym(rt, "cudaGetErrorString");
    int n = -1, r = count(&n);
    printf("devices %d (%s)\n", n, err(r));
    if (r) return 2;
    void *d = 0; r = cmalloc(&d, 1 << 20); printf("malloc %s\n", err(r)); if (r) return 3;
    static char a[1 << 20], b[1 << 20];
    for (int i = 0; i < (1 << 20); i++) a[i] = (char)(i * 7);
    r = cmemcpy(d, a, sizeof a, 1); printf("htod %s\n", err(r)); if (r) return 4;
    r = cmemcpy(b, d, sizeof b, 2); printf("dtoh %s\n", err(r)); if (r) return 5;
    printf("same %d\n", memcmp(a, b, sizeof a) == 0);
    r = cfree(d); printf("free %s\n", err(r));

    // What nvcc's host code does at start, then a launch: the runtime loads the image and
    // finds the kernel its own way (CUDA 13: cuLibraryGetKernel; 12: cuLibraryGetModule).
    uint32_t *h = (uint32_t *)fat;
    h[0] = 0xBA55ED50;
    ((uint16_t *)fat)[2] = 1;
    ((uint16_t *)fat)[3] = 16;
    *(uint64_t *)(fat + 8) = 48;
    void **(*reg)(void *) = dlsym(rt, "__cudaRegisterFatBinary");
    void (*regend)(void **) = dlsym(rt, "__cudaRegisterFatBinaryEnd");
    void (*regfn)(void **, const void *, char *, const char *, int, void *, void *, void *, void *, int *) =
        dlsym(rt, "__cudaRegisterFunction");
    int (*launch)(const void *, dim3_t, dim3_t, void **, size_t, void *) = dlsym(rt, "cudaLaunchKernel");
    void **m = reg(&wrapper);
    regfn(m, (const void *)stub, "k", "k", -1, 0, 0, 0, 0, 0);
    if (regend) regend(m);
    dim3_t one = {1, 1, 1};
    r = launch((const void *)stub, one, one, 0, 0, 0);
    printf("launch %s\n", err(r));
    return 0;
}
