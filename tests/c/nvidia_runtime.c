// NVIDIA's own runtime (libcudart.so.13 from NVIDIA's wheel, argv[1]) over vgpu's libcuda.so.1:
// device count, memory, copies both ways, exit.
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
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
    return 0;
}
