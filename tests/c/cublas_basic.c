/* cuBLAS through vgpu against the sim backend: handles and their settings, status texts,
 * versions, a deferred (asynchronous) error, and SGEMMs that the sim computes on the CPU
 * with host and device scalars (so arguments and scalars are checked end to end). Declares
 * only what it calls, with plain C types (no NVIDIA headers). Linked with
 * -l:libcublas.so.N -l:libcublasLt.so.N -l:libcuda.so.1 (the test checks N in the output). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *cublasHandle_t, *cublasLtHandle_t, *CUcontext, *CUstream;
typedef unsigned long long CUdeviceptr;

int cuCtxGetCurrent(CUcontext *);
int cuCtxSynchronize(void);
int cuMemAlloc_v2(CUdeviceptr *, size_t);
int cuMemFree_v2(CUdeviceptr);
int cuMemcpyHtoD_v2(CUdeviceptr, const void *, size_t);
int cuMemcpyDtoH_v2(void *, CUdeviceptr, size_t);
int cuStreamCreate(CUstream *, unsigned);
int cuStreamSynchronize(CUstream);
int cuStreamDestroy_v2(CUstream);

int cublasCreate_v2(cublasHandle_t *);
int cublasDestroy_v2(cublasHandle_t);
int cublasGetVersion_v2(cublasHandle_t, int *);
int cublasGetProperty(int, int *);
size_t cublasGetCudartVersion(void);
int cublasSetStream_v2(cublasHandle_t, CUstream);
int cublasGetStream_v2(cublasHandle_t, CUstream *);
int cublasSetMathMode(cublasHandle_t, int);
int cublasGetMathMode(cublasHandle_t, int *);
int cublasSetPointerMode_v2(cublasHandle_t, int);
int cublasGetPointerMode_v2(cublasHandle_t, int *);
int cublasSetAtomicsMode(cublasHandle_t, int);
int cublasGetAtomicsMode(cublasHandle_t, int *);
int cublasSetWorkspace_v2(cublasHandle_t, void *, size_t);
int cublasLoggerConfigure(int, int, int, const char *);
const char *cublasGetStatusString(int);
const char *cublasGetStatusName(int);
int cublasSgemm_v2(cublasHandle_t, int, int, int, int, int, const float *, const float *, int, const float *, int,
                   const float *, float *, int);
int cublasSgemmStridedBatched(cublasHandle_t, int, int, int, int, int, const float *, const float *, int, long long,
                              const float *, int, long long, const float *, float *, int, long long, int);
int cublasGemmEx(cublasHandle_t, int, int, int, int, int, const void *, const void *, int, int, const void *, int, int,
                 const void *, void *, int, int, int, int);
int cublasSnrm2_v2(cublasHandle_t, int, const float *, int, float *);

int cublasLtCreate(cublasLtHandle_t *);
int cublasLtDestroy(cublasLtHandle_t);
size_t cublasLtGetVersion(void);

#define CU(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> CUDA %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)
#define BL(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %s (line %d)\n", #x, cublasGetStatusName(r_), __LINE__); return 1; } } while (0)

enum { OP_N = 0, OP_T = 1, CUDA_R_16F = 2, CUDA_R_32F = 0, COMPUTE_32F = 68, GEMM_DEFAULT = -1 };

static int check(const char *what, const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {
            printf("FAIL %s: element %d is %g, want %g\n", what, i, got[i], want[i]);
            return 1;
        }
    printf("%s ok\n", what);
    return 0;
}

int main(void) {
    cublasHandle_t h;
    CUcontext ctx = 0;
    /* No cuInit, no context: cublasCreate sets one up (the primary context of device 0). */
    BL(cublasCreate_v2(&h));
    CU(cuCtxGetCurrent(&ctx));
    if (!h || !ctx) { printf("FAIL handle %p context %p\n", h, ctx); return 1; }

    int ver = 0, major = -1, minor = -1;
    BL(cublasGetVersion_v2(h, &ver));
    BL(cublasGetProperty(0, &major));
    BL(cublasGetProperty(1, &minor));
    printf("version %d major %d minor %d cudart %zu lt %zu\n", ver, major, minor, cublasGetCudartVersion(),
           cublasLtGetVersion());
    if (ver / 10000 != major || ver % 10000 / 100 != minor || cublasGetCudartVersion() / 1000 != (size_t)major ||
        cublasLtGetVersion() != (size_t)ver) {
        printf("FAIL version\n");
        return 1;
    }
    printf("status 0 %s: %s\n", cublasGetStatusName(0), cublasGetStatusString(0));
    printf("status 15 %s: %s\n", cublasGetStatusName(15), cublasGetStatusString(15));
    BL(cublasLoggerConfigure(1, 0, 0, NULL));

    CUstream s, got = 0;
    CU(cuStreamCreate(&s, 1));
    BL(cublasSetStream_v2(h, s));
    BL(cublasGetStream_v2(h, &got));
    if (got != s) { printf("FAIL stream %p != %p\n", got, s); return 1; }
    int mode = -1;
    BL(cublasSetMathMode(h, 1 /* CUBLAS_TENSOR_OP_MATH */));
    BL(cublasGetMathMode(h, &mode));
    if (mode != 1) { printf("FAIL math mode %d\n", mode); return 1; }
    BL(cublasSetAtomicsMode(h, 1));
    BL(cublasGetAtomicsMode(h, &mode));
    if (mode != 1) { printf("FAIL atomics mode %d\n", mode); return 1; }
    if (cublasSetPointerMode_v2(h, 7) != 7) { printf("FAIL bad pointer mode accepted\n"); return 1; }
    printf("settings ok\n");

    /* A = [1 2 3; 4 5 6] (2x3, column-major), B = [1 0; 0 1; 1 1] (3x2): A B = [4 5; 10 11] */
    const float A[6] = {1, 4, 2, 5, 3, 6}, B[6] = {1, 0, 1, 0, 1, 1};
    float C[4] = {1, 1, 1, 1}, out[8];
    CUdeviceptr dA, dB, dC, dS, ws;
    CU(cuMemAlloc_v2(&dA, sizeof A * 2));
    CU(cuMemAlloc_v2(&dB, sizeof B * 2));
    CU(cuMemAlloc_v2(&dC, sizeof C * 2));
    CU(cuMemAlloc_v2(&dS, 2 * sizeof(float)));
    CU(cuMemAlloc_v2(&ws, 1 << 20));
    BL(cublasSetWorkspace_v2(h, (void *)ws, 1 << 20));
    CU(cuMemcpyHtoD_v2(dA, A, sizeof A));
    CU(cuMemcpyHtoD_v2(dB, B, sizeof B));
    CU(cuMemcpyHtoD_v2(dC, C, sizeof C));

    /* host scalars: C = 2 A B + 1 C */
    float alpha = 2, beta = 1;
    BL(cublasSgemm_v2(h, OP_N, OP_N, 2, 2, 3, &alpha, (float *)dA, 2, (float *)dB, 3, &beta, (float *)dC, 2));
    alpha = 1000; /* the call took the value: changing it now must not matter */
    CU(cuStreamSynchronize(s));
    CU(cuMemcpyDtoH_v2(out, dC, sizeof C));
    if (check("sgemm host scalars", out, (float[]){9, 21, 11, 23}, 4)) return 1;

    /* device scalars: C = 1 op(At) op(Bt) + 0 C, with A and B stored transposed */
    const float At[6] = {1, 2, 3, 4, 5, 6}, Bt[6] = {1, 0, 0, 1, 1, 1}, ab[2] = {1, 0};
    CU(cuMemcpyHtoD_v2(dA, At, sizeof At));
    CU(cuMemcpyHtoD_v2(dB, Bt, sizeof Bt));
    CU(cuMemcpyHtoD_v2(dS, ab, sizeof ab));
    BL(cublasSetPointerMode_v2(h, 1));
    BL(cublasGetPointerMode_v2(h, &mode));
    if (mode != 1) { printf("FAIL pointer mode %d\n", mode); return 1; }
    BL(cublasSgemm_v2(h, OP_T, OP_T, 2, 2, 3, (float *)dS, (float *)dA, 3, (float *)dB, 2, (float *)dS + 1, (float *)dC,
                      2));
    CU(cuMemcpyDtoH_v2(out, dC, sizeof C));
    if (check("sgemm device scalars", out, (float[]){4, 10, 5, 11}, 4)) return 1;
    BL(cublasSetPointerMode_v2(h, 0));

    /* strided batched: batch 1 is batch 0 with A doubled */
    const float A2[12] = {1, 4, 2, 5, 3, 6, 2, 8, 4, 10, 6, 12}, B2[12] = {1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1};
    CU(cuMemcpyHtoD_v2(dA, A2, sizeof A2));
    CU(cuMemcpyHtoD_v2(dB, B2, sizeof B2));
    alpha = 1, beta = 0;
    BL(cublasSgemmStridedBatched(h, OP_N, OP_N, 2, 2, 3, &alpha, (float *)dA, 2, 6, (float *)dB, 3, 6, &beta,
                                 (float *)dC, 2, 4, 2));
    CU(cuMemcpyDtoH_v2(out, dC, sizeof out));
    if (check("sgemm strided batched", out, (float[]){4, 10, 5, 11, 8, 20, 10, 22}, 8)) return 1;

    /* GemmEx with half inputs and float compute: the sim accepts it (no effect) */
    BL(cublasGemmEx(h, OP_N, OP_N, 2, 2, 3, &alpha, (void *)dA, CUDA_R_16F, 2, (void *)dB, CUDA_R_16F, 3, &beta,
                    (void *)dC, CUDA_R_32F, 2, COMPUTE_32F, GEMM_DEFAULT));
    /* an unknown compute type: the shim cannot size the scalars */
    if (cublasGemmEx(h, OP_N, OP_N, 2, 2, 3, &alpha, (void *)dA, CUDA_R_16F, 2, (void *)dB, CUDA_R_16F, 3, &beta,
                     (void *)dC, CUDA_R_32F, 2, 4242, GEMM_DEFAULT) != 7) {
        printf("FAIL unknown compute type accepted\n");
        return 1;
    }
    CU(cuCtxSynchronize());
    printf("gemmex ok\n");

    if (cublasSetMathMode(h, 99) != 7) { printf("FAIL math mode 99 accepted\n"); return 1; }
    /* A one-way failure (a stream that is not ours) surfaces at the next synchronous call. */
    BL(cublasSetStream_v2(h, (CUstream)0xdead0000));
    int r = cuCtxSynchronize();
    printf("deferred error %d\n", r);
    if (r == 0) { printf("FAIL deferred error lost\n"); return 1; }
    CU(cuCtxSynchronize());
    BL(cublasSetStream_v2(h, 0));

    /* Not forwarded: not supported, logged once. */
    float nrm = 0;
    r = cublasSnrm2_v2(h, 3, (float *)dA, 1, &nrm);
    printf("snrm2 -> %d\n", r);
    if (r != 15) return 1;

    cublasLtHandle_t lt;
    BL(cublasLtCreate(&lt));
    BL(cublasLtDestroy(lt));

    BL(cublasDestroy_v2(h));
    if (cublasDestroy_v2(h) != 1) { printf("FAIL double destroy\n"); return 1; }
    if (cublasSetStream_v2(h, s) != 1) { printf("FAIL destroyed handle accepted\n"); return 1; }
    CU(cuStreamDestroy_v2(s));
    CU(cuMemFree_v2(dA));
    CU(cuMemFree_v2(dB));
    CU(cuMemFree_v2(dC));
    CU(cuMemFree_v2(dS));
    CU(cuMemFree_v2(ws));
    printf("done\n");
    return 0;
}
