// cuBLAS GEMMs as llama.cpp uses them, run natively and through vgpu on the same GPU: every
// result is printed as an FNV-1a digest of its bytes (and a few values), so the two runs can
// be diffed bit for bit. Exits nonzero on any error.
//
//   nvcc -O2 -arch=sm_90 -cudart shared -o cublas_gemm cublas_gemm.cu -lcublas
//
// Covered: cublasSgemm_v2 (host and device alpha/beta, transposes), cublasGemmEx with F16
// inputs and F32 compute (F16 and F32 output) and with BF16 inputs, cublasGemmEx with
// COMPUTE_16F (half scalars), cublasSgemmStridedBatched, cublasGemmStridedBatchedEx,
// cublasGemmBatchedEx and cublasSgemmBatched with device arrays of device pointers,
// cublasStrsmBatched, a non-default stream and math mode, a user workspace, and the
// 64-bit form cublasSgemm_v2_64. Inputs are small integers scaled by powers of two, so
// the exact results are also checked against a CPU reference where every format can
// represent them.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static int failures = 0;

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            printf("FAIL %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__);            \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)
#define BL(x)                                                                                   \
    do {                                                                                        \
        cublasStatus_t s_ = (x);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                      \
            printf("FAIL %s: %s (line %d)\n", #x, cublasGetStatusName(s_), __LINE__);           \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

// Print the digest of `n` bytes of device memory at `d`, and return them.
static std::vector<unsigned char> digest(const char *name, const void *d, size_t n, cudaStream_t s) {
    std::vector<unsigned char> h(n);
    CK(cudaMemcpyAsync(h.data(), d, n, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    printf("%-34s %zu bytes fnv1a %016llx\n", name, n, (unsigned long long)fnv(h.data(), n));
    return h;
}

// Column-major reference: C = alpha op(A) op(B) + beta C, in double.
static void ref_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const std::vector<float> &A, int lda,
                     const std::vector<float> &B, int ldb, double beta, std::vector<double> &C, int ldc) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int l = 0; l < k; l++) {
                double x = ta ? A[l + (size_t)i * lda] : A[i + (size_t)l * lda];
                double y = tb ? B[j + (size_t)l * ldb] : B[l + (size_t)j * ldb];
                acc += x * y;
            }
            C[i + (size_t)j * ldc] = alpha * acc + beta * C[i + (size_t)j * ldc];
        }
}

static void compare(const char *name, const float *got, const std::vector<double> &want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if ((double)got[i] != want[i]) {
            if (!bad) printf("  %s: first mismatch at %zu: %.9g vs %.9g\n", name, i, got[i], want[i]);
            bad++;
        }
    printf("%-34s exact %s (%zu of %zu differ)\n", name, bad ? "NO" : "yes", bad, n);
    if (bad) failures++;
}

// Small integers in [-4, 4] times 1/4: exact in half, bfloat16 and float; products and sums
// of a few hundred stay exact in float.
static std::vector<float> values(size_t n, unsigned seed) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        v[i] = (float)((int)((seed >> 16) % 9) - 4) * 0.25f;
    }
    return v;
}

template <typename T> static T *upload(const std::vector<T> &h) {
    T *d;
    CK(cudaMalloc(&d, h.size() * sizeof(T)));
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

int main() {
    int ver = 0;
    cublasHandle_t h;
    BL(cublasCreate(&h));
    BL(cublasGetVersion(h, &ver));
    int rt = 0;
    CK(cudaRuntimeGetVersion(&rt));
    printf("cublas %d runtime %d status-string-13 \"%s\"\n", ver, rt, cublasGetStatusString(CUBLAS_STATUS_EXECUTION_FAILED));

    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    BL(cublasSetStream(h, s));
    void *ws;
    CK(cudaMalloc(&ws, 32 << 20));
    BL(cublasSetWorkspace(h, ws, 32 << 20));

    const int M = 96, N = 80, K = 128;  // not multiples of the tile sizes on purpose
    std::vector<float> A = values((size_t)M * K, 1), B = values((size_t)K * N, 2), C0 = values((size_t)M * N, 3);
    float *dA = upload(A), *dB = upload(B), *dC = upload(C0);
    std::vector<double> want(C0.begin(), C0.end());

    // 1. Sgemm, host scalars, pedantic math (exact float)
    BL(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
    float alpha = 0.5f, beta = -1.0f;
    BL(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, dA, M, dB, K, &beta, dC, M));
    auto r1 = digest("sgemm NN host scalars", dC, (size_t)M * N * 4, s);
    ref_gemm(false, false, M, N, K, 0.5, A, M, B, K, -1.0, want, M);
    compare("sgemm NN host scalars", (const float *)r1.data(), want, (size_t)M * N);

    // 2. Sgemm, device scalars, transposed operands (A^T stored K x M, B^T stored N x K)
    float *dScal = upload(std::vector<float>{2.0f, 0.0f});
    BL(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE));
    BL(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_T, M, N, K, dScal, dA, K, dB, N, dScal + 1, dC, M));
    BL(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    auto r2 = digest("sgemm TT device scalars", dC, (size_t)M * N * 4, s);
    std::vector<double> want2((size_t)M * N, 0.0);
    ref_gemm(true, true, M, N, K, 2.0, A, K, B, N, 0.0, want2, M);
    compare("sgemm TT device scalars", (const float *)r2.data(), want2, (size_t)M * N);

    // 3. 64-bit form
    BL(cublasSgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, dA, M, dB, K, &beta, dC, M));
    digest("sgemm_64 NN", dC, (size_t)M * N * 4, s);

    // 4. GemmEx: F16 inputs, F32 compute, F32 and F16 outputs; BF16 inputs
    BL(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    std::vector<__half> Ah(A.size()), Bh(B.size());
    std::vector<__nv_bfloat16> Ab(A.size()), Bb(B.size());
    for (size_t i = 0; i < A.size(); i++) Ah[i] = __float2half(A[i]), Ab[i] = __float2bfloat16(A[i]);
    for (size_t i = 0; i < B.size(); i++) Bh[i] = __float2half(B[i]), Bb[i] = __float2bfloat16(B[i]);
    __half *dAh = upload(Ah), *dBh = upload(Bh);
    __nv_bfloat16 *dAb = upload(Ab), *dBb = upload(Bb);
    float one = 1.0f, zero = 0.0f;
    std::vector<double> wantp((size_t)M * N, 0.0);
    ref_gemm(false, false, M, N, K, 1.0, A, M, B, K, 0.0, wantp, M);
    BL(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, dAh, CUDA_R_16F, M, dBh, CUDA_R_16F, K, &zero, dC,
                    CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    auto r4 = digest("gemmex f16->f32 compute32f", dC, (size_t)M * N * 4, s);
    compare("gemmex f16->f32 compute32f", (const float *)r4.data(), wantp, (size_t)M * N);
    __half *dCh;
    CK(cudaMalloc(&dCh, (size_t)M * N * 2));
    BL(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, dAh, CUDA_R_16F, K, dBh, CUDA_R_16F, K, &zero, dCh,
                    CUDA_R_16F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP));
    digest("gemmex f16 TN -> f16", dCh, (size_t)M * N * 2, s);
    __half hone = __float2half(1.0f), hzero = __float2half(0.0f);
    BL(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &hone, dAh, CUDA_R_16F, M, dBh, CUDA_R_16F, K, &hzero, dCh,
                    CUDA_R_16F, M, CUBLAS_COMPUTE_16F, CUBLAS_GEMM_DEFAULT));
    digest("gemmex f16 compute16f half scalars", dCh, (size_t)M * N * 2, s);
    BL(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, dAb, CUDA_R_16BF, M, dBb, CUDA_R_16BF, K, &zero, dC,
                    CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    auto r5 = digest("gemmex bf16->f32", dC, (size_t)M * N * 4, s);
    compare("gemmex bf16->f32", (const float *)r5.data(), wantp, (size_t)M * N);

    // 5. Strided batched (float and Ex), 3 batches
    const int BATCH = 3;
    std::vector<float> As = values((size_t)M * K * BATCH, 4), Bs = values((size_t)K * N * BATCH, 5);
    float *dAs = upload(As), *dBs = upload(Bs), *dCs;
    CK(cudaMalloc(&dCs, (size_t)M * N * BATCH * 4));
    BL(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
    BL(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, dAs, M, (long long)M * K, dBs, K,
                                 (long long)K * N, &zero, dCs, M, (long long)M * N, BATCH));
    auto r6 = digest("sgemm strided batched x3", dCs, (size_t)M * N * BATCH * 4, s);
    for (int b = 0; b < BATCH; b++) {
        std::vector<float> Ab1(As.begin() + (size_t)b * M * K, As.begin() + (size_t)(b + 1) * M * K);
        std::vector<float> Bb1(Bs.begin() + (size_t)b * K * N, Bs.begin() + (size_t)(b + 1) * K * N);
        std::vector<double> w((size_t)M * N, 0.0);
        ref_gemm(false, false, M, N, K, 1.0, Ab1, M, Bb1, K, 0.0, w, M);
        char name[64];
        snprintf(name, sizeof name, "sgemm strided batched [%d]", b);
        compare(name, (const float *)r6.data() + (size_t)b * M * N, w, (size_t)M * N);
    }
    BL(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    std::vector<__half> Ash(As.size()), Bsh(Bs.size());
    for (size_t i = 0; i < As.size(); i++) Ash[i] = __float2half(As[i]);
    for (size_t i = 0; i < Bs.size(); i++) Bsh[i] = __float2half(Bs[i]);
    __half *dAsh = upload(Ash), *dBsh = upload(Bsh);
    BL(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, dAsh, CUDA_R_16F, M, (long long)M * K,
                                  dBsh, CUDA_R_16F, K, (long long)K * N, &zero, dCs, CUDA_R_32F, M, (long long)M * N,
                                  BATCH, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP));
    digest("gemm strided batched ex f16->f32", dCs, (size_t)M * N * BATCH * 4, s);

    // 6. Batched with device arrays of device pointers (as llama.cpp builds them on the GPU)
    std::vector<const void *> pa(BATCH), pb(BATCH);
    std::vector<void *> pc(BATCH);
    for (int b = 0; b < BATCH; b++) {
        pa[b] = dAsh + (size_t)b * M * K;
        pb[b] = dBsh + (size_t)b * K * N;
        pc[b] = dCs + (size_t)(BATCH - 1 - b) * M * N;  // reversed: the pointers matter
    }
    const void **dpa = upload(pa), **dpb = upload(pb);
    void **dpc = upload(pc);
    CK(cudaMemsetAsync(dCs, 0, (size_t)M * N * BATCH * 4, s));
    BL(cublasGemmBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, dpa, CUDA_R_16F, M, dpb, CUDA_R_16F, K, &zero,
                           dpc, CUDA_R_32F, M, BATCH, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP));
    digest("gemm batched ex f16 (ptr arrays)", dCs, (size_t)M * N * BATCH * 4, s);
    std::vector<const float *> fa(BATCH), fb(BATCH);
    std::vector<float *> fc(BATCH);
    for (int b = 0; b < BATCH; b++) {
        fa[b] = dAs + (size_t)b * M * K;
        fb[b] = dBs + (size_t)b * K * N;
        fc[b] = dCs + (size_t)b * M * N;
    }
    const float **dfa = upload(fa), **dfb = upload(fb);
    float **dfc = upload(fc);
    BL(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
    BL(cublasSgemmBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, dfa, M, dfb, K, &zero, dfc, M, BATCH));
    auto r7 = digest("sgemm batched (ptr arrays)", dCs, (size_t)M * N * BATCH * 4, s);
    if (memcmp(r7.data(), r6.data(), r6.size()) != 0) {
        printf("FAIL sgemm batched differs from strided batched\n");
        failures++;
    }

    // 7. StrsmBatched: solve U X = B for unit upper-triangular U, X known
    const int TM = 16, TN = 8;
    std::vector<float> U((size_t)TM * TM * BATCH, 0.0f), X = values((size_t)TM * TN * BATCH, 6), Bt((size_t)TM * TN * BATCH);
    for (int b = 0; b < BATCH; b++) {
        float *u = U.data() + (size_t)b * TM * TM;
        for (int j = 0; j < TM; j++)
            for (int i = 0; i <= j; i++) u[i + j * TM] = i == j ? 1.0f : (float)(((i + j + b) % 3) - 1) * 0.5f;
        for (int c = 0; c < TN; c++)
            for (int i = 0; i < TM; i++) {
                double acc = 0;
                for (int l = i; l < TM; l++) acc += (double)u[i + l * TM] * X[(size_t)b * TM * TN + l + c * TM];
                Bt[(size_t)b * TM * TN + i + c * TM] = (float)acc;
            }
    }
    float *dU = upload(U), *dBt = upload(Bt);
    std::vector<const float *> pu(BATCH);
    std::vector<float *> pbt(BATCH);
    for (int b = 0; b < BATCH; b++) pu[b] = dU + (size_t)b * TM * TM, pbt[b] = dBt + (size_t)b * TM * TN;
    const float **dpu = upload(pu);
    float **dpbt = upload(pbt);
    BL(cublasStrsmBatched(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, CUBLAS_DIAG_UNIT, TM, TN, &one, dpu,
                          TM, dpbt, TM, BATCH));
    auto r8 = digest("strsm batched", dBt, (size_t)TM * TN * BATCH * 4, s);
    double worst = 0;
    for (size_t i = 0; i < X.size(); i++) {
        double d = ((const float *)r8.data())[i] - (double)X[i];
        worst = d < 0 ? (-d > worst ? -d : worst) : (d > worst ? d : worst);
    }
    printf("%-34s max error %s\n", "strsm batched", worst < 1e-3 ? "< 1e-3" : "TOO LARGE");
    if (worst >= 1e-3) failures++;

    // 8. Errors (only with CUBLAS_GEMM_ERRORS=1: NVIDIA's cuBLAS prints its own
    // "** On entry to SGEMM parameter number 3 had an illegal value" on the application's
    // stdout, which a vgpu run prints on the server instead). Natively the invalid argument
    // is status 7 at once; through vgpu the call is one-way, so it answers 0 and the next
    // synchronous call reports cudaErrorInvalidValue (the server's deferred error). Either
    // way the handle stays usable. 'time' lines are left out of the native/vgpu diff.
    if (getenv("CUBLAS_GEMM_ERRORS")) {
        cublasStatus_t bad = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, N, K, &one, dA, M, dB, K, &zero, dC, M);
        cudaError_t after = cudaStreamSynchronize(s);
        printf("time invalid m: status %d then sync %d\n", (int)bad, (int)after);
        (void)cudaGetLastError();
    }
    BL(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, dA, M, dB, K, &zero, dC, M));
    digest("sgemm after error", dC, (size_t)M * N * 4, s);

    BL(cublasDestroy(h));
    CK(cudaDeviceSynchronize());
    printf("cublas_gemm %s\n", failures ? "FAILED" : "done");
    return failures ? 1 : 0;
}
