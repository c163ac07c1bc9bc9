/* The per-session memory quota (`vgpu serve --memory-limit`) as NVML and the driver API
 * report and enforce it. Prints what each reports, then the results of allocations at and
 * past the limit. Declares only what it calls (no NVIDIA headers). */
#include <stdio.h>

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } mem_v1;
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } mem_v2;
int nvmlInit_v2(void);
int nvmlDeviceGetHandleByIndex_v2(unsigned, nvmlDevice_t *);
int nvmlDeviceGetMemoryInfo(nvmlDevice_t, mem_v1 *);
int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, mem_v2 *);

#include "cuda_decls.h"

int cuDeviceTotalMem_v2(size_t *, int);

int main(void) {
    nvmlDevice_t d;
    mem_v1 m1;
    mem_v2 m2 = {.version = (unsigned)sizeof(mem_v2) | (2u << 24)};
    if (nvmlInit_v2() || nvmlDeviceGetHandleByIndex_v2(0, &d)) return 3;
    if (nvmlDeviceGetMemoryInfo(d, &m1)) return 4;
    printf("nvml total=%llu free=%llu used=%llu\n", m1.total, m1.free, m1.used);
    int r2 = nvmlDeviceGetMemoryInfo_v2(d, &m2);
    printf("nvml_v2 %d total=%llu free=%llu used=%llu\n", r2, m2.total, m2.free, m2.used);

    CUcontext ctx;
    size_t devtotal, free_b, total_b;
    if (cuInit(0) || cuDeviceTotalMem_v2(&devtotal, 0) || cuDevicePrimaryCtxRetain(&ctx, 0) || cuCtxSetCurrent(ctx))
        return 5;
    if (cuMemGetInfo_v2(&free_b, &total_b)) return 6;
    printf("cuda devtotal=%zu total=%zu free=%zu\n", devtotal, total_b, free_b);

    size_t half = total_b / 2;
    CUdeviceptr a, b, c, e;
    printf("alloc half -> %d\n", cuMemAlloc_v2(&a, half));
    cuMemGetInfo_v2(&free_b, &total_b);
    printf("after half free=%zu total=%zu\n", free_b, total_b);
    printf("alloc rest+1 -> %d\n", cuMemAlloc_v2(&b, total_b - half + 1));
    printf("alloc rest -> %d\n", cuMemAlloc_v2(&b, total_b - half));
    cuMemGetInfo_v2(&free_b, &total_b);
    printf("when full free=%zu\n", free_b);
    printf("alloc 1 more -> %d\n", cuMemAlloc_v2(&c, 1));
    printf("free both -> %d %d\n", cuMemFree_v2(a), cuMemFree_v2(b));
    printf("alloc all -> %d\n", cuMemAlloc_v2(&e, total_b));
    printf("alloc past -> %d\n", cuMemAlloc_v2(&c, total_b + 1));
    printf("free all -> %d\n", cuMemFree_v2(e));
    cuMemGetInfo_v2(&free_b, &total_b);
    printf("at end free=%zu total=%zu\n", free_b, total_b);
    return 0;
}
