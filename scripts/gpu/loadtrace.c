// loadtrace: how many module and library loads a program makes through NVIDIA's real
// driver, and how long the driver takes for them, to set beside the server's VGPU_STATS
// for the same program through vgpu. Preloaded (LD_PRELOAD) into a native run: it wraps
// dlsym, so that the driver entry points NVIDIA's libraries fetch through cuGetProcAddress
// pass through timing wrappers. At exit one line per entry point goes to LOADTRACE_OUT
// (appended), and the options of the first library loads. A diagnostic for the GPU
// machine, not part of vgpu.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int R;
static void *(*real_dlsym)(void *, const char *);

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

enum { LIB_LOAD, MOD_DATA, MOD_DATA_EX, MOD_FATBIN, LIB_MODULE, LIB_KERNEL, MOD_FUNC, N };
static const char *names[N] = {"cuLibraryLoadData", "cuModuleLoadData", "cuModuleLoadDataEx", "cuModuleLoadFatBinary",
                               "cuLibraryGetModule", "cuLibraryGetKernel", "cuModuleGetFunction"};
static void *orig[N];
static uint64_t count[N], ns[N];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *detail;

static void add(int i, uint64_t t0) {
    uint64_t d = now_ns() - t0;
    pthread_mutex_lock(&lock);
    count[i]++;
    ns[i] += d;
    pthread_mutex_unlock(&lock);
}

static R w_lib_load(void **l, const void *code, int *jo, void **jv, unsigned nj, int *lo, void **lv, unsigned nl) {
    uint64_t t0 = now_ns();
    R r = ((R(*)(void **, const void *, int *, void **, unsigned, int *, void **, unsigned))orig[LIB_LOAD])(l, code, jo, jv, nj, lo, lv, nl);
    add(LIB_LOAD, t0);
    pthread_mutex_lock(&lock);
    if (detail && count[LIB_LOAD] <= 20) {
        fprintf(detail, "pid %d cuLibraryLoadData #%lu r=%d %luus jit=%u lib=%u", getpid(), (unsigned long)count[LIB_LOAD], r,
                (unsigned long)((now_ns() - t0) / 1000), nj, nl);
        for (unsigned i = 0; i < nl && lo && lv; i++) fprintf(detail, " [%d]=%p", lo[i], lv[i]);
        for (unsigned i = 0; i < nj && jo && jv; i++) fprintf(detail, " jit[%d]=%p", jo[i], jv[i]);
        const uint32_t *h = code;
        if (h) fprintf(detail, " magic=%08x", h[0]);
        fprintf(detail, "\n");
    }
    pthread_mutex_unlock(&lock);
    return r;
}
#define W2(NAME, I)                                                                     \
    static R NAME(void *a, void *b) {                                                   \
        uint64_t t0 = now_ns();                                                         \
        R r = ((R(*)(void *, void *))orig[I])(a, b);                                    \
        add(I, t0);                                                                     \
        return r;                                                                       \
    }
#define W3(NAME, I)                                                                     \
    static R NAME(void *a, void *b, void *c) {                                          \
        uint64_t t0 = now_ns();                                                         \
        R r = ((R(*)(void *, void *, void *))orig[I])(a, b, c);                         \
        add(I, t0);                                                                     \
        return r;                                                                       \
    }
W2(w_mod_data, MOD_DATA)
W2(w_mod_fatbin, MOD_FATBIN)
W3(w_lib_module, LIB_MODULE)
W3(w_lib_kernel, LIB_KERNEL)
W3(w_mod_func, MOD_FUNC)
static R w_mod_data_ex(void *a, void *b, unsigned n, void *c, void *d) {
    uint64_t t0 = now_ns();
    R r = ((R(*)(void *, void *, unsigned, void *, void *))orig[MOD_DATA_EX])(a, b, n, c, d);
    add(MOD_DATA_EX, t0);
    return r;
}
static void *wrappers[N] = {(void *)w_lib_load, (void *)w_mod_data, (void *)w_mod_data_ex, (void *)w_mod_fatbin,
                            (void *)w_lib_module, (void *)w_lib_kernel, (void *)w_mod_func};

static void *wrap(const char *sym, void *fn) {
    if (!fn || !sym) return fn;
    for (int i = 0; i < N; i++)
        if (!strcmp(sym, names[i])) {
            if (!orig[i]) orig[i] = fn;
            return orig[i] == fn ? wrappers[i] : fn;
        }
    return fn;
}

static void *orig_gpa, *orig_gpa2;
static R w_gpa(const char *sym, void **pfn, int v, uint64_t flags);
static R w_gpa2(const char *sym, void **pfn, int v, uint64_t flags, void *status);
static void *self(const char *sym, void *fn) {
    if (sym && !strcmp(sym, "cuGetProcAddress_v2")) return orig_gpa2 = fn, (void *)w_gpa2;
    if (sym && !strcmp(sym, "cuGetProcAddress")) return orig_gpa = fn, (void *)w_gpa;
    return wrap(sym, fn);
}
static R w_gpa(const char *sym, void **pfn, int v, uint64_t flags) {
    R r = ((R(*)(const char *, void **, int, uint64_t))orig_gpa)(sym, pfn, v, flags);
    if (sym && !strncmp(sym, "cuGetProcAddress", 16)) return r; // its form depends on the version asked
    if (r == 0 && pfn && *pfn) *pfn = self(sym, *pfn);
    return r;
}
static R w_gpa2(const char *sym, void **pfn, int v, uint64_t flags, void *status) {
    R r = ((R(*)(const char *, void **, int, uint64_t, void *))orig_gpa2)(sym, pfn, v, flags, status);
    if (sym && !strncmp(sym, "cuGetProcAddress", 16)) return r; // its form depends on the version asked
    if (r == 0 && pfn && *pfn) *pfn = self(sym, *pfn);
    return r;
}

void *dlsym(void *h, const char *sym) {
    if (!real_dlsym) real_dlsym = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!real_dlsym) real_dlsym = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    void *fn = real_dlsym(h == RTLD_NEXT ? RTLD_DEFAULT : h, sym);
    return !strncmp(sym, "cu", 2) ? self(sym, fn) : fn;
}

__attribute__((constructor)) static void start(void) {
    const char *p = getenv("LOADTRACE_OUT");
    if (p) detail = fopen(p, "a");
}

__attribute__((destructor)) static void stop(void) {
    if (!detail) return;
    for (int i = 0; i < N; i++)
        if (count[i]) fprintf(detail, "pid %d %s: %lu calls, %.3f s\n", getpid(), names[i], (unsigned long)count[i], ns[i] / 1e9);
    fclose(detail);
}
