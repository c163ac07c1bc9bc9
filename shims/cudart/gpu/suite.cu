// The runtime API as nvcc-built programs use it, for a GPU machine: run once natively and once
// through vgpu, and compare the outputs (lines starting with "time" may differ). Built two
// ways by run.sh: default (the CUDA 13 launch path, __cudaGetKernel + __cudaLaunchKernel) and
// --default-stream per-thread (the _ptsz/_ptds exports). cudaLaunchKernel, the CUDA 12 stub
// path, is called directly.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>

__device__ int dev_var[16];
__constant__ float coeffs[4];

__global__ void axpy(float *y, const float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i] + coeffs[i % 4];
}
__global__ void fill_var(int v) { dev_var[threadIdx.x] = v + (int)threadIdx.x; }
extern __shared__ float dyn[];
__global__ void big_smem(float *out) {
    dyn[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = dyn[blockDim.x - 1 - threadIdx.x];
}
__global__ void pdl_add(int *p, int v) {
#if __CUDA_ARCH__ >= 900
    cudaGridDependencySynchronize();
#endif
    p[threadIdx.x] += v;
}

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    printf("FAIL line %d %s: %s %s\n", __LINE__, #x, cudaGetErrorName(e_), cudaGetErrorString(e_)); return 1; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); return 1; } } while (0)

static void hexdump(const char *tag, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i += 32) {
        printf("%s %04zx:", tag, i);
        for (size_t j = i; j < i + 32 && j < n; j++) printf("%02x", b[j]);
        printf("\n");
    }
}

int main() {
    Dl_info info;
    if (dladdr((void *)&cudaGetErrorString, &info)) printf("time libcudart: %s\n", info.dli_fname);
    int rt = 0, n = 0, dev = -1;
    CK(cudaRuntimeGetVersion(&rt));
    CK(cudaGetDeviceCount(&n));
    CK(cudaGetDevice(&dev));
    printf("runtime %d devices %d current %d\n", rt, n, dev);
    int drv = 0;
    CK(cudaDriverGetVersion(&drv));
    printf("time driver %d\n", drv);

    // Every byte of the properties and every attribute, as the native runtime gives them.
    cudaDeviceProp p;
    memset(&p, 0, sizeof p);
    CK(cudaGetDeviceProperties(&p, 0));
    printf("name %s cc %d.%d sms %d optin %zu\n", p.name, p.major, p.minor, p.multiProcessorCount, p.sharedMemPerBlockOptin);
    hexdump("prop", &p, sizeof p);
    for (int a = 1; a < 150; a++) {
        int v = 0;
        cudaError_t e = cudaDeviceGetAttribute(&v, (cudaDeviceAttr)a, 0);
        printf("attr %d %s %d\n", a, e ? cudaGetErrorName(e) : "ok", e ? 0 : v);
    }
    cudaGetLastError();
    char bus[32];
    CK(cudaDeviceGetPCIBusId(bus, sizeof bus, 0));
    int bydev = -1;
    CK(cudaDeviceGetByPCIBusId(&bydev, bus));
    printf("bus %s -> %d\n", bus, bydev);
    size_t fr, tot;
    CK(cudaMemGetInfo(&fr, &tot));
    printf("total %zu\n", tot);
    int lo, hi;
    CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    size_t stack;
    CK(cudaDeviceGetLimit(&stack, cudaLimitStackSize));
    printf("priorities %d %d stack %zu\n", lo, hi, stack);
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPoint("cuMemAlloc", &fn, cudaEnableDefault, &q));
    printf("entry point %d %d\n", q, fn != nullptr);

    // Function attributes (ptxVersion/binaryVersion must be the real ones) and occupancy.
    const void *ks[] = {(const void *)axpy, (const void *)fill_var, (const void *)big_smem, (const void *)pdl_add};
    for (const void *k : ks) {
        cudaFuncAttributes fa;
        CK(cudaFuncGetAttributes(&fa, k));
        printf("func regs %d ptx %d bin %d maxthreads %d shared %zu const %zu local %zu maxdyn %d\n", fa.numRegs,
               fa.ptxVersion, fa.binaryVersion, fa.maxThreadsPerBlock, fa.sharedSizeBytes, fa.constSizeBytes,
               fa.localSizeBytes, fa.maxDynamicSharedSizeBytes);
        int blocks = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, k, 256, 0));
        printf("occupancy %d\n", blocks);
    }

    // Kernels, symbols, constant memory.
    const int N = 1 << 20;
    float *x, *y, *hx = (float *)malloc(N * 4), *hy = (float *)malloc(N * 4);
    for (int i = 0; i < N; i++) hx[i] = (float)(i % 1000);
    CK(cudaMalloc(&x, N * 4));
    CK(cudaMalloc(&y, N * 4));
    CK(cudaMemcpy(x, hx, N * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(y, 0, N * 4));
    float c[4] = {0.5f, 1.5f, 2.5f, 3.5f};
    CK(cudaMemcpyToSymbol(coeffs, c, sizeof c));
    axpy<<<N / 256, 256>>>(y, x, 2.0f, N);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hy, y, N * 4, cudaMemcpyDefault));
    for (int i = 0; i < N; i++) EXPECT(hy[i] == 2.0f * (float)(i % 1000) + c[i % 4]);
    fill_var<<<1, 16>>>(100);
    int hv[16];
    CK(cudaMemcpyFromSymbol(hv, dev_var, sizeof hv));
    for (int i = 0; i < 16; i++) EXPECT(hv[i] == 100 + i);
    size_t vsize = 0;
    void *vaddr = nullptr;
    CK(cudaGetSymbolSize(&vsize, dev_var));
    CK(cudaGetSymbolAddress(&vaddr, dev_var));
    EXPECT(vsize == 64 && vaddr != nullptr);
    printf("kernels and symbols ok\n");

    // More dynamic shared memory than the default 48 KiB.
    int optin = (int)p.sharedMemPerBlockOptin;
    CK(cudaFuncSetAttribute(big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    big_smem<<<1, 1024, optin>>>(y);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hy, y, 1024 * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 1024; i++) EXPECT(hy[i] == (float)(1023 - i));
    // Launch errors, reported at once.
    big_smem<<<1, 2048>>>(y);
    printf("block of 2048: %s\n", cudaGetErrorName(cudaGetLastError()));
    big_smem<<<1, dim3(32, 32, 2)>>>(y);
    printf("block of 32x32x2: %s\n", cudaGetErrorName(cudaGetLastError()));
    big_smem<<<1, dim3(1, 1, 128)>>>(y);
    printf("block z 128: %s\n", cudaGetErrorName(cudaGetLastError()));
    big_smem<<<dim3(1, 65536), 1>>>(y);
    printf("grid y 65536: %s\n", cudaGetErrorName(cudaGetLastError()));
    big_smem<<<0, 1>>>(y);
    printf("grid 0: %s\n", cudaGetErrorName(cudaGetLastError()));
    // The CUDA 12 stub path, the cooperative path, names and driver handles.
    float a2 = 1.0f;
    int n2 = N;
    void *args[] = {&y, &x, &a2, &n2};
    CK(cudaMemset(y, 0, N * 4));
    CK(cudaLaunchKernel((const void *)axpy, dim3(N / 256), dim3(256), args, 0, 0));
    CK(cudaLaunchCooperativeKernel((const void *)axpy, dim3(132), dim3(256), args, 0, 0));
    CK(cudaMemcpy(hy, y, 4 * 4, cudaMemcpyDeviceToHost));
    EXPECT(hy[1] == 2.0f * (1.0f + c[1]));
    const char *fname = nullptr;
    CK(cudaFuncGetName(&fname, axpy));
    cudaFunction_t cf = nullptr;
    CK(cudaGetFuncBySymbol(&cf, (const void *)axpy));
    printf("name %s handle %d\n", fname, cf != nullptr);

    // PDL through cudaLaunchKernelEx.
    int *ip;
    CK(cudaMalloc(&ip, 32 * 4));
    CK(cudaMemset(ip, 0, 32 * 4));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1);
    cfg.blockDim = dim3(32);
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    for (int i = 0; i < 4; i++) CK(cudaLaunchKernelEx(&cfg, pdl_add, ip, i + 1));
    int hi32[32];
    CK(cudaMemcpyAsync(hi32, ip, sizeof hi32, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    for (int i = 0; i < 32; i++) EXPECT(hi32[i] == 10);
    printf("launch ex ok\n");

    // Capture, instantiate, launch, update (kernels, a fill and a device copy: what ggml puts
    // in its graphs).
    cudaGraph_t g, g2;
    cudaGraphExec_t ge;
    cudaStreamCaptureStatus cs;
    float *z;
    CK(cudaMalloc(&z, N * 4));
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    CK(cudaStreamIsCapturing(s, &cs));
    EXPECT(cs == cudaStreamCaptureStatusActive);
    unsigned long long cid = 0;
    cudaGraph_t cg = nullptr;
    const cudaGraphNode_t *deps = nullptr;
    size_t ndeps = 99;
    CK(cudaStreamGetCaptureInfo(s, &cs, &cid, &cg, &deps, nullptr, &ndeps));
    printf("capture info %d graph %d deps %zu\n", cs, cg != nullptr, ndeps);
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    CK(cudaThreadExchangeStreamCaptureMode(&mode));
    CK(cudaThreadExchangeStreamCaptureMode(&mode));
    printf("capture mode %d\n", mode);
    CK(cudaMemsetAsync(y, 0, N * 4, s));
    for (int i = 0; i < 3; i++) axpy<<<N / 256, 256, 0, s>>>(y, x, 1.0f, N);
    CK(cudaMemcpyAsync(z, y, N * 4, cudaMemcpyDeviceToDevice, s));
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaStreamIsCapturing(s, &cs));
    EXPECT(cs == cudaStreamCaptureStatusNone);
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(hy, z, N * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < N; i++) EXPECT(hy[i] == 3.0f * ((float)(i % 1000) + c[i % 4]));
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    CK(cudaMemsetAsync(y, 0, N * 4, s));
    for (int i = 0; i < 3; i++) axpy<<<N / 256, 256, 0, s>>>(y, x, 2.0f, N);
    CK(cudaMemcpyAsync(z, y, N * 4, cudaMemcpyDeviceToDevice, s));
    CK(cudaStreamEndCapture(s, &g2));
    cudaGraphExecUpdateResultInfo ui;
    CK(cudaGraphExecUpdate(ge, g2, &ui));
    CK(cudaGraphLaunch(ge, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(hy, z, N * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < N; i++) EXPECT(hy[i] == 3.0f * (2.0f * (float)(i % 1000) + c[i % 4]));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaGraphDestroy(g2));
    CK(cudaFree(z));
    printf("graphs ok (update result %d)\n", ui.result);

    // 2D copies and fills, default-kind copies, pointer attributes, pinned memory.
    void *pd;
    size_t pitch;
    CK(cudaMallocPitch(&pd, &pitch, 1000, 64));
    printf("pitch %zu\n", pitch);
    unsigned char *h2 = (unsigned char *)malloc(1000 * 64), *h3 = (unsigned char *)malloc(1000 * 64);
    for (int i = 0; i < 1000 * 64; i++) h2[i] = (unsigned char)(i * 13);
    CK(cudaMemcpy2D(pd, pitch, h2, 1000, 1000, 64, cudaMemcpyHostToDevice));
    CK(cudaMemset2D((char *)pd + 10, pitch, 0xab, 5, 64));
    CK(cudaMemcpy2D(h3, 1000, pd, pitch, 1000, 64, cudaMemcpyDeviceToHost));
    for (int r = 0; r < 64; r++)
        for (int i = 0; i < 1000; i++)
            EXPECT(h3[r * 1000 + i] == ((i >= 10 && i < 15) ? 0xab : h2[r * 1000 + i]));
    printf("2d ok\n");
    void *pin;
    CK(cudaMallocHost(&pin, 1 << 20));
    memset(pin, 7, 1 << 20);
    CK(cudaMemcpyAsync(pd, pin, 4096, cudaMemcpyDefault, cudaStreamPerThread));
    CK(cudaMemcpyAsync(h3, pd, 4096, cudaMemcpyDefault, cudaStreamPerThread));
    CK(cudaStreamSynchronize(cudaStreamPerThread));
    for (int i = 0; i < 4096; i++) EXPECT(h3[i] == 7);
    cudaPointerAttributes pa;
    CK(cudaPointerGetAttributes(&pa, pd));
    printf("pointer device: type %d device %d same %d\n", pa.type, pa.device, pa.devicePointer == pd);
    CK(cudaPointerGetAttributes(&pa, pin));
    printf("pointer pinned: type %d\n", pa.type);
    CK(cudaPointerGetAttributes(&pa, h2));
    printf("pointer pageable: type %d\n", pa.type);
    void *mapped = nullptr, *mapped_dev = nullptr;
    CK(cudaHostAlloc(&mapped, 4096, cudaHostAllocMapped | cudaHostAllocPortable));
    cudaError_t me = cudaHostGetDevicePointer(&mapped_dev, mapped, 0);
    printf("time mapped host memory: %s\n", cudaGetErrorName(me));
    cudaGetLastError();
    CK(cudaFreeHost(mapped));
    printf("memory ok\n");

    // Peer copies on one device, stream-ordered allocation, stream queries.
    void *q1, *q2;
    CK(cudaMallocAsync(&q1, 1 << 20, s));
    CK(cudaMallocAsync(&q2, 1 << 20, s));
    CK(cudaMemsetAsync(q1, 9, 1 << 20, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpyPeer(q2, 0, q1, 0, 1 << 20));
    CK(cudaMemcpyPeerAsync(q1, 0, q2, 0, 1 << 20, s));
    CK(cudaMemcpyAsync(h3, q1, 4096, cudaMemcpyDeviceToHost, s));
    CK(cudaFreeAsync(q1, s));
    CK(cudaFreeAsync(q2, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaStreamQuery(s));
    for (int i = 0; i < 4096; i++) EXPECT(h3[i] == 9);
    int prio = -1;
    unsigned sflags = 99;
    CK(cudaStreamGetPriority(s, &prio));
    CK(cudaStreamGetFlags(s, &sflags));
    int can = -1;
    CK(cudaDeviceCanAccessPeer(&can, 0, 0));
    printf("stream priority %d flags %u peer %d\n", prio, sflags, can);

    // Events and timing.
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreateWithFlags(&e1, cudaEventBlockingSync));
    CK(cudaEventRecord(e0, s));
    for (int i = 0; i < 10; i++) axpy<<<N / 256, 256, 0, s>>>(y, x, 1.0f, N);
    CK(cudaEventRecordWithFlags(e1, s, cudaEventRecordDefault));
    CK(cudaStreamWaitEvent(cudaStreamPerThread, e1, 0));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventQuery(e1));
    float ms = -1;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    printf("time 10 axpy %.3f ms\n", ms);
    EXPECT(ms > 0);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaStreamDestroy(s));

    // Reset, then carry on.
    CK(cudaDeviceSynchronize());
    CK(cudaDeviceReset());
    CK(cudaMalloc(&x, 4096));
    CK(cudaMemset(x, 1, 4096));
    fill_var<<<1, 16>>>(7);
    CK(cudaMemcpyFromSymbol(hv, dev_var, sizeof hv));
    EXPECT(hv[3] == 10);
    CK(cudaFree(x));
    printf("after reset ok\n");
    printf("strings %s | %s\n", cudaGetErrorString(cudaErrorInvalidValue), cudaGetErrorName(cudaErrorIllegalAddress));
    printf("done\n");
    return 0;
}
