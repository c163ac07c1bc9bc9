/* The CUDA driver API as the C tests call it, in plain C types (no NVIDIA headers): the
 * declarations several tests share. A test declares the rest it needs itself. */
#ifndef VGPU_TEST_CUDA_DECLS_H
#define VGPU_TEST_CUDA_DECLS_H
#include <stddef.h>

typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext, *CUstream, *CUevent, *CUmodule, *CUfunction;

int cuCtxGetDevice(CUdevice *);
int cuCtxSetCurrent(CUcontext);
int cuCtxSynchronize(void);
int cuDeviceGet(CUdevice *, int);
int cuDeviceGetCount(int *);
int cuDeviceGetName(char *, int, CUdevice);
int cuDeviceGetPCIBusId(char *, int, CUdevice);
int cuDeviceGetUuid_v2(unsigned char *, CUdevice);
int cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
int cuEventCreate(CUevent *, unsigned);
int cuEventDestroy_v2(CUevent);
int cuEventElapsedTime(float *, CUevent, CUevent);
int cuEventRecord(CUevent, CUstream);
int cuEventSynchronize(CUevent);
int cuStreamQuery(CUstream);
int cuGetErrorName(int, const char **);
int cuInit(unsigned);
int cuMemAllocHost_v2(void **, size_t);
int cuMemAlloc_v2(CUdeviceptr *, size_t);
int cuMemFreeHost(void *);
int cuMemFree_v2(CUdeviceptr);
int cuMemGetInfo_v2(size_t *, size_t *);
int cuMemHostAlloc(void **, size_t, unsigned);
int cuMemcpyDtoD_v2(CUdeviceptr, CUdeviceptr, size_t);
int cuMemcpyDtoHAsync_v2(void *, CUdeviceptr, size_t, CUstream);
int cuMemcpyDtoH_v2(void *, CUdeviceptr, size_t);
int cuMemcpyHtoDAsync_v2(CUdeviceptr, const void *, size_t, CUstream);
int cuMemcpyHtoD_v2(CUdeviceptr, const void *, size_t);
int cuMemsetD8Async(CUdeviceptr, unsigned char, size_t, CUstream);
int cuMemsetD8_v2(CUdeviceptr, unsigned char, size_t);
int cuModuleGetFunction(CUfunction *, CUmodule, const char *);
int cuModuleLoadData(CUmodule *, const void *);
int cuPointerGetAttribute(void *, int, CUdeviceptr);
int cuMemGetAddressRange_v2(CUdeviceptr *, size_t *, CUdeviceptr);
typedef void *CUmemoryPool;
int cuDeviceGetDefaultMemPool(CUmemoryPool *, int);
int cuMemPoolSetAttribute(CUmemoryPool, int, void *);
int cuMemPoolGetAttribute(CUmemoryPool, int, void *);
int cuMemAllocFromPoolAsync(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
int cuMemFreeAsync(CUdeviceptr, CUstream);
int cuStreamGetCtx(CUstream, CUcontext *);
int cuCtxGetCurrent(CUcontext *);
int cuStreamCreate(CUstream *, unsigned);
int cuStreamDestroy_v2(CUstream);
int cuStreamSynchronize(CUstream);

#endif
