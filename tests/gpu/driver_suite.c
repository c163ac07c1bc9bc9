/* Driver-API suite, run natively and through vgpu; both runs must print the same lines
 * (lines starting with "time" are timings and are not compared).
 *   driver_suite DIR    (DIR holds vecadd.cubin, vecadd.fatbin, vecadd.ptx) */
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { const char *n_ = "?"; \
    cuGetErrorName(r_, &n_); printf("FAIL %s -> %s (line %d)\n", #x, n_, __LINE__); exit(1); } } while (0)

static unsigned long long fnv(const void *p, size_t n) {
    const unsigned char *b = p; unsigned long long h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ull; }
    return h;
}

static void *read_file(const char *path, size_t *len, int nul) {
    FILE *f = fopen(path, "rb"); if (!f) { printf("FAIL open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END); *len = ftell(f); fseek(f, 0, SEEK_SET);
    char *b = malloc(*len + 1); if (fread(b, 1, *len, f) != *len) exit(1); fclose(f);
    if (nul) b[(*len)++] = 0;
    return b;
}

static void run_vecadd(CUmodule m, const char *label) {
    CUfunction f; CHECK(cuModuleGetFunction(&f, m, "vecadd"));
    int n = 1 << 20; size_t bytes = n * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
    for (int i = 0; i < n; i++) { a[i] = (float)i * 0.5f; b[i] = (float)(n - i); }
    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, bytes)); CHECK(cuMemAlloc(&db, bytes)); CHECK(cuMemAlloc(&dc, bytes));
    CHECK(cuMemcpyHtoD(da, a, bytes)); CHECK(cuMemcpyHtoD(db, b, bytes));
    void *args[] = {&da, &db, &dc, &n};
    CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, args, NULL));
    CHECK(cuMemcpyDtoH(c, dc, bytes));
    int bad = 0; for (int i = 0; i < n; i++) if (c[i] != a[i] + b[i]) bad++;
    printf("vecadd %s: %d wrong, hash %016llx\n", label, bad, fnv(c, bytes));
    /* the same through `extra` */
    struct { CUdeviceptr a, b, c; int n; } packed = {da, db, dc, n};
    size_t size = 3 * sizeof(CUdeviceptr) + sizeof(int); /* the kernel's parameter bytes, no tail padding */
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
    CHECK(cuMemsetD32(dc, 0, n));
    CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, NULL, extra));
    CHECK(cuMemcpyDtoH(c, dc, bytes));
    bad = 0; for (int i = 0; i < n; i++) if (c[i] != a[i] + b[i]) bad++;
    printf("vecadd %s extra: %d wrong\n", label, bad);
    cuMemFree(da); cuMemFree(db); cuMemFree(dc); free(a); free(b); free(c);
}

static void copies(void) {
    size_t sizes[] = {1, 3, 4096, 65537, 1 << 20, (8 << 20) + 5, 64 << 20, 256 << 20, 1u << 30};
    unsigned char *h = malloc(1u << 30), *back = malloc(1u << 30);
    for (size_t i = 0; i < (1u << 30); i++) h[i] = (unsigned char)(i * 2654435761u >> 13);
    for (int k = 0; k < 9; k++) {
        size_t n = sizes[k]; CUdeviceptr d; CHECK(cuMemAlloc(&d, n));
        memset(back, 0, n);
        struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK(cuMemcpyHtoD(d, h, n)); CHECK(cuMemcpyDtoH(back, d, n));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("copy %zu bytes: %s hash %016llx\n", n, memcmp(h, back, n) ? "DIFFERENT" : "same", fnv(back, n));
        printf("time copy %zu: %.3f ms\n", n, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
        CHECK(cuMemFree(d));
    }
    /* pinned + async */
    void *p; CHECK(cuMemAllocHost(&p, 64 << 20)); CUstream s; CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr d; CHECK(cuMemAlloc(&d, 64 << 20));
    memcpy(p, h, 64 << 20); CHECK(cuMemcpyHtoDAsync(d, p, 64 << 20, s)); CHECK(cuStreamSynchronize(s));
    memset(p, 0, 64 << 20); CHECK(cuMemcpyDtoHAsync(p, d, 64 << 20, s)); CHECK(cuStreamSynchronize(s));
    printf("pinned async 64MiB: %s\n", memcmp(p, h, 64 << 20) ? "DIFFERENT" : "same");
    /* 2D */
    size_t pitch; CUdeviceptr d2; CHECK(cuMemAllocPitch(&d2, &pitch, 1000, 300, 4));
    CUDA_MEMCPY2D c = {0};
    c.srcMemoryType = CU_MEMORYTYPE_HOST; c.srcHost = h; c.srcPitch = 1200;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE; c.dstDevice = d2; c.dstPitch = pitch; c.WidthInBytes = 1000; c.Height = 300;
    CHECK(cuMemcpy2D(&c));
    memset(back, 0, 1000 * 300);
    CUDA_MEMCPY2D r = {0};
    r.srcMemoryType = CU_MEMORYTYPE_DEVICE; r.srcDevice = d2; r.srcPitch = pitch;
    r.dstMemoryType = CU_MEMORYTYPE_HOST; r.dstHost = back; r.dstPitch = 1000; r.WidthInBytes = 1000; r.Height = 300;
    CHECK(cuMemcpy2DAsync(&r, s)); CHECK(cuStreamSynchronize(s));
    int bad = 0; for (int y = 0; y < 300; y++) if (memcmp(back + y * 1000, h + y * 1200, 1000)) bad++;
    printf("2D copy: %d rows wrong\n", bad);
    cuMemFree(d2); cuMemFree(d); cuMemFreeHost(p); cuStreamDestroy(s); free(h); free(back);
}

/* What NVIDIA's libraries ask about memory and streams: address ranges, buffer ids (cuFFT),
   a stream's context, and the device's stream-ordered pool (PyTorch's cudaMallocAsync
   backend, CuPy's async pool). */
static void memory_queries(CUdevice dev) {
    CUdeviceptr d1, d2, base; size_t span;
    CHECK(cuMemAlloc(&d1, 1 << 20)); CHECK(cuMemAlloc(&d2, 4096));
    CHECK(cuMemGetAddressRange(&base, &span, d1 + 4000));
    printf("address range: start %s, size %zu\n", base == d1 ? "same" : "OTHER", span);
    unsigned long long id1, id1b, id2, id3;
    CHECK(cuPointerGetAttribute(&id1, CU_POINTER_ATTRIBUTE_BUFFER_ID, d1));
    CHECK(cuPointerGetAttribute(&id1b, CU_POINTER_ATTRIBUTE_BUFFER_ID, d1 + 100));
    CHECK(cuPointerGetAttribute(&id2, CU_POINTER_ATTRIBUTE_BUFFER_ID, d2));
    CHECK(cuMemFree(d2)); CHECK(cuMemAlloc(&d2, 4096));
    CHECK(cuPointerGetAttribute(&id3, CU_POINTER_ATTRIBUTE_BUFFER_ID, d2));
    printf("buffer ids: %s\n", id1 && id1 == id1b && id1 != id2 && id3 != id2 && id3 != id1 ? "ok" : "WRONG");
    CUstream s; CUcontext sc, cur;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamGetCtx(s, &sc)); CHECK(cuCtxGetCurrent(&cur));
    printf("stream context: %s\n", sc == cur ? "current" : "OTHER");
    CUmemoryPool pool, now;
    CHECK(cuDeviceGetDefaultMemPool(&pool, dev)); CHECK(cuDeviceGetMemPool(&now, dev));
    printf("pools: current is default %s\n", pool == now ? "yes" : "no");
    cuuint64_t threshold = 64ull << 20, got = 0;
    CHECK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
    CHECK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &got));
    int reuse = -1;
    CHECK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, &reuse));
    printf("pool threshold %llu, opportunistic reuse %d\n", (unsigned long long)got, reuse);
    CUdeviceptr a; unsigned char *h = malloc(1 << 20);
    CHECK(cuMemAllocFromPoolAsync(&a, 1 << 20, pool, s));
    CHECK(cuMemsetD8Async(a, 0x3c, 1 << 20, s));
    CHECK(cuMemcpyDtoHAsync(h, a, 1 << 20, s));
    CHECK(cuStreamSynchronize(s));
    cuuint64_t used = 0;
    CHECK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
    CHECK(cuMemFreeAsync(a, s)); CHECK(cuStreamSynchronize(s));
    CHECK(cuMemPoolTrimTo(pool, 0));
    printf("pool allocation: bytes %s, in use %s\n", h[0] == 0x3c && h[(1 << 20) - 1] == 0x3c ? "ok" : "WRONG",
           used >= (1 << 20) ? ">= 1 MiB" : "LESS");
    /* A pool of the program's own (RAPIDS RMM's async resource). */
    CUmemPoolProps props; memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE; props.location.id = dev;
    CUmemoryPool mine; CHECK(cuMemPoolCreate(&mine, &props));
    CHECK(cuMemAllocFromPoolAsync(&a, 1 << 20, mine, s));
    CHECK(cuMemsetD8Async(a, 0x5a, 1 << 20, s));
    CHECK(cuMemcpyDtoHAsync(h, a, 1 << 20, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemPoolGetAttribute(mine, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &used));
    CHECK(cuMemFreeAsync(a, s)); CHECK(cuStreamSynchronize(s));
    CHECK(cuMemPoolDestroy(mine));
    printf("created pool: bytes %s, reserved %s\n", h[0] == 0x5a && h[(1 << 20) - 1] == 0x5a ? "ok" : "WRONG",
           used >= (1 << 20) ? ">= 1 MiB" : "LESS");
    free(h); CHECK(cuStreamDestroy(s)); CHECK(cuMemFree(d1)); CHECK(cuMemFree(d2));
}

static void vmm(CUdevice dev) {
    int supported = 0;
    CHECK(cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev));
    CUmemAllocationProp prop = {0};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED; prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE; prop.location.id = dev;
    size_t gran; CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
    CUdeviceptr va; size_t reserve = 32ull << 30;
    CHECK(cuMemAddressReserve(&va, reserve, 0, 0, 0));
    size_t sz = 4 * gran; CUmemGenericAllocationHandle hdl;
    CHECK(cuMemCreate(&hdl, sz, &prop, 0));
    CHECK(cuMemMap(va, sz, 0, hdl, 0));
    CUmemAccessDesc acc = {0}; acc.location = prop.location; acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    CHECK(cuMemSetAccess(va, sz, &acc, 1));
    unsigned *buf = malloc(sz); for (size_t i = 0; i < sz / 4; i++) buf[i] = (unsigned)i * 7u;
    CHECK(cuMemcpyHtoD(va, buf, sz)); memset(buf, 0, sz); CHECK(cuMemcpyDtoH(buf, va, sz));
    int bad = 0; for (size_t i = 0; i < sz / 4; i++) if (buf[i] != (unsigned)i * 7u) bad++;
    printf("vmm supported=%d granularity=%zu mapped %zu bytes: %d wrong\n", supported, gran, sz, bad);
    /* The allocation behind the mapping (PyTorch's expandable segments ask), released twice. */
    CUmemGenericAllocationHandle again; CHECK(cuMemRetainAllocationHandle(&again, (void *)(va + gran)));
    CUmemAllocationProp got; memset(&got, 0, sizeof got); CHECK(cuMemGetAllocationPropertiesFromHandle(&got, again));
    printf("vmm retained same %d; type %d location %d/%d\n", again == hdl, (int)got.type, (int)got.location.type,
           got.location.id);
    CHECK(cuMemRelease(again));
    CHECK(cuMemUnmap(va, sz)); CHECK(cuMemRelease(hdl)); CHECK(cuMemAddressFree(va, reserve)); free(buf);
}

static void graphs(CUmodule m) {
    CUfunction f; CHECK(cuModuleGetFunction(&f, m, "scale"));
    int n = 4096; CUdeviceptr x; CHECK(cuMemAlloc(&x, n * 4));
    float *h = malloc(n * 4); for (int i = 0; i < n; i++) h[i] = 1.0f;
    CHECK(cuMemcpyHtoD(x, h, n * 4));
    CUstream s; CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
    CUstreamCaptureStatus st; CHECK(cuStreamIsCapturing(s, &st));
    float two = 2.0f; void *args[] = {&x, &two, &n};
    for (int k = 0; k < 3; k++) CHECK(cuLaunchKernel(f, n / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CUgraph g; CHECK(cuStreamEndCapture(s, &g));
    CUgraphExec e; CHECK(cuGraphInstantiateWithFlags(&e, g, 0));
    CHECK(cuGraphUpload(e, s));
    size_t nn = 0; CHECK(cuGraphGetNodes(g, NULL, &nn));
    CUgraphNode few[2] = {0}, many[5]; size_t n2 = 2, n5 = 5;
    CHECK(cuGraphGetNodes(g, few, &n2)); CHECK(cuGraphGetNodes(g, many, &n5));
    printf("graph nodes: %zu; asked 2 got %zu (%d); asked 5 got %zu, rest null %d %d\n", nn, n2, few[1] != NULL, n5,
           many[3] == NULL, many[4] == NULL);
    /* An empty capture in thread-local mode, as PyTorch's cudagraph trees make first. */
    CUgraph empty; CUgraphExec empty_exec; size_t ne = 7;
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)); CHECK(cuStreamEndCapture(s, &empty));
    CHECK(cuGraphGetNodes(empty, NULL, &ne)); CHECK(cuGraphInstantiateWithFlags(&empty_exec, empty, 0));
    CHECK(cuGraphLaunch(empty_exec, s)); CHECK(cuStreamSynchronize(s));
    printf("empty graph: %zu nodes, launched\n", ne);
    CHECK(cuGraphExecDestroy(empty_exec)); CHECK(cuGraphDestroy(empty));
    for (int k = 0; k < 4; k++) CHECK(cuGraphLaunch(e, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH(h, x, n * 4));
    printf("graph: capturing=%d x[0]=%g x[n-1]=%g\n", (int)st, h[0], h[n - 1]);
    /* update with an identical topology */
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
    for (int k = 0; k < 3; k++) CHECK(cuLaunchKernel(f, n / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CUgraph g2; CHECK(cuStreamEndCapture(s, &g2));
    CUgraphExecUpdateResultInfo info; CHECK(cuGraphExecUpdate(e, g2, &info));
    printf("graph update result %d\n", (int)info.result);
    CUevent e0, e1; CHECK(cuEventCreate(&e0, 0)); CHECK(cuEventCreate(&e1, 0));
    CHECK(cuEventRecord(e0, s)); CHECK(cuGraphLaunch(e, s)); CHECK(cuEventRecord(e1, s)); CHECK(cuEventSynchronize(e1));
    float ms; CHECK(cuEventElapsedTime(&ms, e0, e1));
    printf("event elapsed positive: %d\n", ms > 0.0f);
    cuGraphExecDestroy(e); cuGraphDestroy(g); cuGraphDestroy(g2); cuMemFree(x); cuStreamDestroy(s); free(h);
}

static CUdevice g_dev; static CUmodule g_dummy;
static void *thread_main(void *arg) {
    long id = (long)arg; CUcontext c; CHECK(cuCtxCreate(&c, NULL, 0, g_dev));
    CUdeviceptr d; CHECK(cuMemAlloc(&d, 1 << 20));
    unsigned v = 0x1000u + (unsigned)id; CHECK(cuMemsetD32(d, v, 1 << 18));
    unsigned out[4]; CHECK(cuMemcpyDtoH(out, d + 4096, sizeof out));
    CUcontext cur; CHECK(cuCtxGetCurrent(&cur));
    int ok = out[0] == v && out[3] == v && cur == c;
    cuMemFree(d); CHECK(cuCtxDestroy(c));
    return (void *)(long)ok;
}

/* A driver log on one line (the lines of ptxas's verbose output joined by '|'), without
 * the lines that time the compile. */
static const char *one_line(char *log) {
    char *out = log;
    for (char *line = log; *line;) {
        char *end = strchr(line, '\n'); size_t n = end ? (size_t)(end - line) : strlen(line);
        if (!strstr(line, "Compile time") || (end && strstr(line, "Compile time") > end)) {
            if (out != log) *out++ = '|';
            memmove(out, line, n); out += n;
        }
        line += n + (end ? 1 : 0);
    }
    *out = 0;
    return log;
}

static char g_info[4096], g_err[4096];

/* Values for numba's options (both logs, verbose) and `extra` more, buffers refilled. */
static void jit_values(void **v, void *extra) {
    memset(g_info, 0x7f, sizeof g_info); memset(g_err, 0x7f, sizeof g_err);
    g_info[sizeof g_info - 1] = g_err[sizeof g_err - 1] = 0;
    v[0] = g_info; v[1] = (void *)sizeof g_info; v[2] = g_err; v[3] = (void *)sizeof g_err;
    v[4] = (void *)1; v[5] = extra;
}

/* JIT options as numba passes them, a register cap and a thread count: the logs (also of
 * PTX that does not compile) and the values the driver writes back, as natively. */
static void jit_options(void *ptx, size_t len) {
    static const char bad[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                              ".visible .entry broken()\n{\n bogus_instruction;\n}\n";
    CUjit_option o[] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES, CU_JIT_ERROR_LOG_BUFFER,
                        CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_LOG_VERBOSE, CU_JIT_MAX_REGISTERS};
    void *v[6]; CUmodule m; CUfunction f; int regs;
    /* A comment of this process's own, so that the driver's JIT cache (which the native run
     * fills for the vgpu server's driver, or the other way) compiles it and logs. */
    char *fresh = malloc(len + 64);
    snprintf(fresh, len + 64, "%s// run %d %ld\n", (const char *)ptx, (int)getpid(), (long)time(NULL));
    jit_values(v, (void *)16);
    CHECK(cuModuleLoadDataEx(&m, fresh, 6, o, v));
    CHECK(cuModuleGetFunction(&f, m, "vecadd")); CHECK(cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, f));
    size_t info_len = strlen(g_info);
    printf("jit load, at most 16 registers: %d registers, info %s bytes '%s', error %zu bytes '%s'\n", regs,
           (size_t)v[1] == info_len ? "all its" : "OTHER", one_line(g_info), (size_t)v[3], g_err);
    free(fresh);
    run_vecadd(m, "jit options");
    o[5] = CU_JIT_THREADS_PER_BLOCK; jit_values(v, (void *)1024);
    CHECK(cuModuleLoadDataEx(&m, ptx, 6, o, v));
    printf("jit load for 1024 threads: targeted %zu\n", (size_t)v[5]);
    jit_values(v, (void *)0);
    CUresult r = cuModuleLoadDataEx(&m, bad, 5, o, v); const char *name = "?"; cuGetErrorName(r, &name);
    printf("jit load of bad ptx: %s, error %zu bytes '%s'\n", name, (size_t)v[3], one_line(g_err));
    CUlinkState link; void *linked; size_t linked_len;
    jit_values(v, (void *)0);
    CHECK(cuLinkCreate(5, o, v, &link));
    CHECK(cuLinkAddData(link, CU_JIT_INPUT_PTX, ptx, len, "vecadd.ptx", 0, NULL, NULL));
    CHECK(cuLinkComplete(link, &linked, &linked_len));
    printf("jit link: info %zu bytes '%s'\n", (size_t)v[1], one_line(g_info));
    CHECK(cuLinkDestroy(link));
    jit_values(v, (void *)0);
    CHECK(cuLinkCreate(5, o, v, &link));
    r = cuLinkAddData(link, CU_JIT_INPUT_PTX, (void *)bad, sizeof bad, "bad.ptx", 0, NULL, NULL); cuGetErrorName(r, &name);
    printf("jit link of bad ptx: %s, error '%s'\n", name, one_line(g_err));
    CHECK(cuLinkDestroy(link));
}

/* Tensor maps (TMA descriptors): the same bytes as natively for an address of no
 * allocation (the encoding reads none), twice the same, one for real memory, and one with
 * its address replaced. */
static void tensor_maps(void) {
    CUdeviceptr d; CHECK(cuMemAlloc(&d, 1 << 20));
    cuuint64_t dims[2] = {128, 256}, strides[1] = {256}; cuuint32_t box[2] = {64, 32}, steps[2] = {1, 1};
    CUtensorMap a, b, c;
#define TILED(m, at) cuTensorMapEncodeTiled(&(m), CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, (void *)(at), dims, strides, box, \
    steps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, \
    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    const unsigned long long fake = 0x7f0000000000ull;
    CHECK(TILED(a, fake)); CHECK(TILED(b, fake));
    printf("tensor map tiled: hash %016llx, twice the same: %s\n", fnv(&a, sizeof a), memcmp(&a, &b, sizeof a) ? "NO" : "yes");
    CHECK(TILED(c, d));
    CHECK(cuTensorMapReplaceAddress(&c, (void *)fake));
    printf("tensor map of memory, its address replaced: %s\n", memcmp(&a, &c, sizeof a) ? "OTHER" : "as encoded there");
    CUresult r = TILED(c, fake + 3); const char *name = "?"; cuGetErrorName(r, &name);
    printf("tensor map at a misaligned address: %s\n", name);
    cuuint64_t dims3[3] = {64, 32, 32}, strides3[2] = {128, 4096}; cuuint32_t steps3[3] = {1, 1, 1};
    int lower[1] = {0}, upper[1] = {0};
    r = cuTensorMapEncodeIm2col(&c, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, (void *)fake, dims3, strides3, lower, upper,
        64, 32, steps3, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    cuGetErrorName(r, &name);
    printf("tensor map im2col: %s, hash %016llx\n", name, r == CUDA_SUCCESS ? fnv(&c, sizeof c) : 0ull);
    CHECK(cuMemFree(d));
}

/* The block size of highest occupancy, as the driver searches it (vgpu's client searches
 * over the server's occupancy answers), with and without dynamic shared memory per block. */
static size_t smem_per_block(int block) { return (size_t)block * 96; }
static void potential_block_size(CUmodule m) {
    CUfunction f; CHECK(cuModuleGetFunction(&f, m, "vecadd"));
    int g0, b0, g1, b1, g2, b2;
    CHECK(cuOccupancyMaxPotentialBlockSize(&g0, &b0, f, NULL, 0, 0));
    CHECK(cuOccupancyMaxPotentialBlockSize(&g1, &b1, f, smem_per_block, 0, 0));
    CHECK(cuOccupancyMaxPotentialBlockSizeWithFlags(&g2, &b2, f, NULL, 40000, 200, CU_OCCUPANCY_DEFAULT));
    printf("potential block size: %d x %d; with 96 B a thread %d x %d; 40000 B, at most 200: %d x %d\n", g0, b0,
           g1, b1, g2, b2);
}

/* Stream memory operations: a stream held at a word until another stream writes it. */
static void memory_ops(void) {
    CUstream a, b; CUdeviceptr w, out;
    CHECK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING)); CHECK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
    CHECK(cuMemAlloc(&w, 16)); CHECK(cuMemsetD8(w, 0, 16)); CHECK(cuMemAlloc(&out, 4)); CHECK(cuMemsetD8(out, 0, 4));
    CHECK(cuStreamWaitValue32(a, w, 7, CU_STREAM_WAIT_VALUE_EQ));
    CHECK(cuMemsetD32Async(out, 0xabc, 1, a));
    CHECK(cuStreamWriteValue64(b, w + 8, 0x1122334455667788ull, CU_STREAM_WRITE_VALUE_DEFAULT));
    CHECK(cuStreamWriteValue32(b, w, 7, CU_STREAM_WRITE_VALUE_DEFAULT));
    CHECK(cuStreamSynchronize(a));
    CHECK(cuStreamWaitValue64(a, w + 8, 0x1122334455667788ull, CU_STREAM_WAIT_VALUE_GEQ));
    CHECK(cuStreamSynchronize(a));
    unsigned long long words[2]; unsigned o;
    CHECK(cuMemcpyDtoH(words, w, 16)); CHECK(cuMemcpyDtoH(&o, out, 4));
    printf("stream memory ops: words %llx %llx, held work %x\n", words[0], words[1], o);
    CHECK(cuStreamDestroy(a)); CHECK(cuStreamDestroy(b)); CHECK(cuMemFree(w)); CHECK(cuMemFree(out));
}

/* Host functions: in stream order, after the work before them (a copy into pinned memory
 * they read), before the work after them; synchronizes (of a stream, of the context, a
 * synchronous copy on the legacy stream) return after them; captured into a graph they run
 * at every launch. */
static int g_calls[2048]; static volatile int g_ncalls; static float g_seen;
static CUstream g_cb_stream; static int g_cb_status = -1; static void *g_cb_data;
static void CUDA_CB hf_note(void *p) { g_calls[g_ncalls++] = (int)(long)p; }
static void CUDA_CB hf_slow(void *p) { usleep(50000); g_calls[g_ncalls++] = (int)(long)p; }
static void CUDA_CB hf_read(void *p) { g_seen = *(volatile float *)p; }
static void CUDA_CB hf_callback(CUstream s, CUresult st, void *p) { g_cb_stream = s; g_cb_status = st; g_cb_data = p; }
static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static void host_funcs(CUmodule m) {
    CUfunction f; CHECK(cuModuleGetFunction(&f, m, "scale"));
    int n = 1 << 20; CUdeviceptr x; CHECK(cuMemAlloc(&x, n * 4)); CHECK(cuMemsetD32(x, 0x3f800000u, n)); /* 1.0f */
    float *pinned; CHECK(cuMemAllocHost((void **)&pinned, 16)); pinned[0] = -1;
    CUstream s; CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    float two = 2.0f; void *args[] = {&x, &two, &n};
    for (int k = 0; k < 20; k++) CHECK(cuLaunchKernel(f, n / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CHECK(cuMemcpyDtoHAsync(pinned, x + 4 * (n - 1), 4, s));
    CHECK(cuLaunchHostFunc(s, hf_read, pinned));
    CHECK(cuLaunchHostFunc(s, hf_slow, (void *)1));
    CHECK(cuLaunchHostFunc(s, hf_note, (void *)2));
    CHECK(cuStreamSynchronize(s));
    printf("host funcs: read %g after the copy; calls %d: %d %d\n", g_seen, g_ncalls, g_calls[0], g_calls[1]);
    CHECK(cuLaunchHostFunc(NULL, hf_slow, (void *)3));
    CHECK(cuCtxSynchronize());
    CHECK(cuLaunchHostFunc(NULL, hf_slow, (void *)4));
    float last; CHECK(cuMemcpyDtoH(&last, x, 4));
    printf("host funcs: context synchronize after %d, synchronous copy after %d (calls %d)\n", g_calls[2], g_calls[3],
           g_ncalls);
    CHECK(cuStreamAddCallback(s, hf_callback, (void *)0x77, 0));
    CHECK(cuStreamSynchronize(s));
    printf("host funcs: callback stream %s status %d data %p\n", g_cb_stream == s ? "same" : "other", g_cb_status,
           g_cb_data);
    /* Captured: one run per launch of the graph. */
    g_ncalls = 0;
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
    CHECK(cuLaunchKernel(f, n / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CHECK(cuLaunchHostFunc(s, hf_note, (void *)9));
    CUgraph g; CHECK(cuStreamEndCapture(s, &g));
    CUgraphExec e; CHECK(cuGraphInstantiateWithFlags(&e, g, 0));
    for (int k = 0; k < 3; k++) CHECK(cuGraphLaunch(e, s));
    CHECK(cuStreamSynchronize(s));
    printf("host funcs: graph launched 3 times ran %d: %d %d %d\n", g_ncalls, g_calls[0], g_calls[1], g_calls[2]);
    /* Many, in order; timed (not compared). */
    g_ncalls = 0;
    double t0 = now_ms();
    for (long k = 0; k < 1000; k++) CHECK(cuLaunchHostFunc(s, hf_note, (void *)k));
    CHECK(cuStreamSynchronize(s));
    double t1 = now_ms();
    int order = 1; for (int k = 0; k < 1000; k++) order &= g_calls[k] == k;
    printf("host funcs: 1000 in order %d (calls %d)\n", order, g_ncalls);
    printf("time host funcs: 1000 in %.2f ms\n", t1 - t0);
    cuGraphExecDestroy(e); cuGraphDestroy(g); CHECK(cuStreamDestroy(s)); cuMemFreeHost(pinned); cuMemFree(x);
}

/* A stream's id, device and attributes (an L2 access-policy window, a sync policy),
 * copied to another stream. */
static void stream_attributes(void) {
    CUstream a, b; CHECK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING)); CHECK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
    unsigned long long ia, ib; CHECK(cuStreamGetId(a, &ia)); CHECK(cuStreamGetId(b, &ib));
    CUdevice d = -1; CHECK(cuStreamGetDevice(a, &d));
    CUdeviceptr x; CHECK(cuMemAlloc(&x, 1 << 20));
    CUstreamAttrValue v; memset(&v, 0, sizeof v);
    v.accessPolicyWindow.base_ptr = (void *)x; v.accessPolicyWindow.num_bytes = 1 << 20;
    v.accessPolicyWindow.hitRatio = 0.5f; v.accessPolicyWindow.hitProp = CU_ACCESS_PROPERTY_PERSISTING;
    v.accessPolicyWindow.missProp = CU_ACCESS_PROPERTY_STREAMING;
    CHECK(cuStreamSetAttribute(a, CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW, &v));
    CUstreamAttrValue sp; memset(&sp, 0, sizeof sp); sp.syncPolicy = CU_SYNC_POLICY_BLOCKING_SYNC;
    CHECK(cuStreamSetAttribute(a, CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY, &sp));
    CHECK(cuStreamCopyAttributes(b, a));
    CUstreamAttrValue w, p, q; memset(&w, 0, sizeof w); memset(&p, 0, sizeof p); memset(&q, 0, sizeof q);
    CHECK(cuStreamGetAttribute(b, CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW, &w));
    CHECK(cuStreamGetAttribute(b, CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY, &p));
    CHECK(cuStreamGetAttribute(a, CU_STREAM_ATTRIBUTE_PRIORITY, &q));
    printf("stream attributes: ids distinct %d, device %d, window same base %d bytes %zu hit %.2f props %d %d, "
           "sync policy %d, priority %d\n", ia != ib, d, w.accessPolicyWindow.base_ptr == (void *)x,
           w.accessPolicyWindow.num_bytes, w.accessPolicyWindow.hitRatio, (int)w.accessPolicyWindow.hitProp,
           (int)w.accessPolicyWindow.missProp, (int)p.syncPolicy, q.priority);
    CHECK(cuStreamDestroy(a)); CHECK(cuStreamDestroy(b)); CHECK(cuMemFree(x));
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    char path[1024]; size_t len;
    CHECK(cuInit(0));
    int ver, n; CHECK(cuDriverGetVersion(&ver)); CHECK(cuDeviceGetCount(&n));
    CUdevice dev; CHECK(cuDeviceGet(&dev, 0)); g_dev = dev;
    char name[256]; CHECK(cuDeviceGetName(name, 256, dev));
    printf("driver %d devices %d %s\n", ver, n, name);
    CUcontext ctx; CHECK(cuDevicePrimaryCtxRetain(&ctx, dev)); CHECK(cuCtxSetCurrent(ctx));
    CUmodule mc, mf, mp;
    snprintf(path, sizeof path, "%s/vecadd.cubin", dir); void *cubin = read_file(path, &len, 0);
    CHECK(cuModuleLoadData(&mc, cubin)); run_vecadd(mc, "cubin");
    snprintf(path, sizeof path, "%s/vecadd.fatbin", dir); void *fat = read_file(path, &len, 0);
    CHECK(cuModuleLoadFatBinary(&mf, fat)); run_vecadd(mf, "fatbin");
    snprintf(path, sizeof path, "%s/vecadd.ptx", dir); void *ptx = read_file(path, &len, 1);
    CHECK(cuModuleLoadData(&mp, ptx)); run_vecadd(mp, "ptx");
    /* The same PTX through the JIT linker (numba's way), from memory and from its file. */
    CUlinkState link; void *linked; size_t linked_len; CUmodule ml, mlf;
    CHECK(cuLinkCreate(0, NULL, NULL, &link));
    CHECK(cuLinkAddData(link, CU_JIT_INPUT_PTX, ptx, len, "vecadd.ptx", 0, NULL, NULL));
    CHECK(cuLinkComplete(link, &linked, &linked_len));
    CHECK(cuModuleLoadData(&ml, linked));
    CHECK(cuLinkDestroy(link));
    run_vecadd(ml, "linked ptx");
    CHECK(cuLinkCreate(0, NULL, NULL, &link));
    CHECK(cuLinkAddFile(link, CU_JIT_INPUT_PTX, path, 0, NULL, NULL));
    CHECK(cuLinkComplete(link, &linked, &linked_len));
    CHECK(cuModuleLoadData(&mlf, linked));
    CHECK(cuLinkDestroy(link));
    run_vecadd(mlf, "linked ptx file");
    jit_options(ptx, len);
    tensor_maps();
    memory_ops();
    host_funcs(mc);
    stream_attributes();
    /* A name no driver has: success, no function, and the status says why. */
    void *nothing = (void *)1; CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
    CUresult pr = cuGetProcAddress("cuNoSuchEntryPoint", &nothing, 12000, 0, &st);
    printf("proc address of an unknown name: %d, null %d, status %d\n", (int)pr, nothing == NULL, (int)st);
    potential_block_size(mc);
    copies();
    memory_queries(dev);
    vmm(dev);
    graphs(mc);
    pthread_t t[4]; long okc = 0;
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, thread_main, (void *)i);
    for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); okc += (long)r; }
    printf("threads with own contexts ok: %ld/4\n", okc);
    (void)g_dummy;
    printf("suite done\n");
    return 0;
}
