// Runtime-API program (nvcc <<<>>> launches, registration, events, memcpy kinds); built
// against CUDA 13 and CUDA 12 headers, run natively and through vgpu.
#include <cstdio>
#include <cstring>
__device__ float bias[4] = {1.f, 2.f, 3.f, 4.f};
__global__ void add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i] + bias[i % 4];
}
static int host_calls[4]; static int host_n; static int cb_status = -1; static cudaStream_t cb_stream;
static void CUDART_CB host_note(void *p) { host_calls[host_n++] = (int)(long)p; }
static void CUDART_CB host_callback(cudaStream_t s, cudaError_t st, void *p) {
    cb_stream = s; cb_status = st; host_calls[host_n++] = (int)(long)p;
}
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s: %s\n", #x, cudaGetErrorString(e_)); return 1; } } while (0)
int main() {
    int rt = 0, drv = 0, n = 0;
    CK(cudaRuntimeGetVersion(&rt)); CK(cudaDriverGetVersion(&drv)); CK(cudaGetDeviceCount(&n));
    cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, 0));
    char bus[32]; CK(cudaDeviceGetPCIBusId(bus, 32, 0));
    printf("runtime %d devices %d name %s cc %d.%d sms %d mem %zu bus %s optin %zu\n", rt, n, p.name, p.major, p.minor,
           p.multiProcessorCount, p.totalGlobalMem, bus, p.sharedMemPerBlockOptin);
    const int N = 1 << 20; size_t bytes = N * sizeof(float);
    float *a, *b, *c, *ha = (float *)malloc(bytes), *hc;
    CK(cudaMallocHost(&hc, bytes));
    for (int i = 0; i < N; i++) ha[i] = (float)i;
    CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes)); CK(cudaMalloc(&c, bytes));
    CK(cudaMemcpy(a, ha, bytes, cudaMemcpyHostToDevice)); CK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    CK(cudaEventRecord(e0, s));
    add<<<(N + 255) / 256, 256, 0, s>>>(a, b, c, N);
    CK(cudaGetLastError());
    CK(cudaEventRecord(e1, s));
    CK(cudaMemcpyAsync(hc, c, bytes, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    int bad = 0; for (int i = 0; i < N; i++) if (hc[i] != 2.f * i + (float)(i % 4 + 1)) bad++;
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
    cudaFuncAttributes fa; CK(cudaFuncGetAttributes(&fa, add));
    printf("add: %d wrong, ptxVersion %d binaryVersion %d\n", bad, fa.ptxVersion, fa.binaryVersion);
    // Stream-ordered pools: the device's own and one the program creates (RMM's way).
    cudaMemPool_t dp, mine; CK(cudaDeviceGetDefaultMemPool(&dp, 0));
    unsigned long long thr = 64ull << 20, got = 0, used = 0;
    CK(cudaMemPoolSetAttribute(dp, cudaMemPoolAttrReleaseThreshold, &thr));
    CK(cudaMemPoolGetAttribute(dp, cudaMemPoolAttrReleaseThreshold, &got));
    cudaMemPoolProps pp; memset(&pp, 0, sizeof pp);
    pp.allocType = cudaMemAllocationTypePinned; pp.location.type = cudaMemLocationTypeDevice; pp.location.id = 0;
    CK(cudaMemPoolCreate(&mine, &pp));
    float *pa, *pb;
    CK(cudaMallocFromPoolAsync((void **)&pa, bytes, mine, s)); CK(cudaMallocFromPoolAsync((void **)&pb, bytes, dp, s));
    CK(cudaMemcpyAsync(pa, a, bytes, cudaMemcpyDeviceToDevice, s));
    add<<<(N + 255) / 256, 256, 0, s>>>(pa, b, pb, N);
    CK(cudaMemcpyAsync(hc, pb, bytes, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaMemPoolGetAttribute(mine, cudaMemPoolAttrUsedMemCurrent, &used));
    bad = 0; for (int i = 0; i < N; i++) if (hc[i] != 2.f * i + (float)(i % 4 + 1)) bad++;
    CK(cudaFreeAsync(pa, s)); CK(cudaFreeAsync(pb, s)); CK(cudaStreamSynchronize(s));
    CK(cudaMemPoolTrimTo(mine, 0)); CK(cudaMemPoolDestroy(mine));
    printf("pools: default threshold %llu, through the program's pool %d wrong, its use %s\n", got, bad,
           used >= bytes ? ">= the allocation" : "LESS");
    // Handles for another process (tests/gpu/ipc.c opens them in one).
    cudaIpcMemHandle_t mh; cudaIpcEventHandle_t eh; cudaEvent_t ie;
    CK(cudaEventCreateWithFlags(&ie, cudaEventInterprocess | cudaEventDisableTiming));
    CK(cudaIpcGetMemHandle(&mh, a)); CK(cudaIpcGetEventHandle(&eh, ie)); CK(cudaEventDestroy(ie));
    printf("ipc handles: made\n");
    // Host functions and callbacks, in stream order.
    cudaStream_t hs; CK(cudaStreamCreateWithFlags(&hs, cudaStreamNonBlocking));
    CK(cudaLaunchHostFunc(hs, host_note, (void *)1));
    CK(cudaStreamAddCallback(hs, host_callback, (void *)2, 0));
    CK(cudaLaunchHostFunc(hs, host_note, (void *)3));
    CK(cudaStreamSynchronize(hs));
    printf("host funcs: %d calls %d %d %d, callback status %d on %s\n", host_n, host_calls[0], host_calls[1],
           host_calls[2], cb_status, cb_stream == hs ? "its stream" : "another stream");
    unsigned long long sid = 0; int sdev = -1; CK(cudaStreamGetId(hs, &sid)); CK(cudaStreamGetDevice(hs, &sdev));
    cudaLaunchAttributeValue pol = {}; pol.syncPolicy = cudaSyncPolicyYield;
    CK(cudaStreamSetAttribute(hs, cudaLaunchAttributeSynchronizationPolicy, &pol));
    cudaLaunchAttributeValue pval = {}; CK(cudaStreamGetAttribute(hs, cudaLaunchAttributeSynchronizationPolicy, &pval));
    printf("stream: id nonzero %d, device %d, sync policy %d\n", sid != 0, sdev, (int)pval.syncPolicy);
    CK(cudaStreamDestroy(hs));
    add<<<1, 1>>>(nullptr, nullptr, nullptr, 0);
    CK(cudaDeviceSynchronize());
    printf("rt done\n");
    return 0;
}
