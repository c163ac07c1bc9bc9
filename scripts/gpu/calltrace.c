// calltrace: every driver call a program makes after it first asks for a given export
// table, with its first six integer arguments and its result, to set a native run beside a
// vgpu run of the same program. Preloaded (LD_PRELOAD); it wraps dlsym and
// cuGetProcAddress(_v2) so that each driver entry point handed out (by either) passes
// through a logging trampoline. CALLTRACE_OUT: the log; CALLTRACE_AFTER: the table's UUID
// (hex, 32 digits) whose first request starts the log (default: log from the start);
// CALLTRACE_MAX: lines at most (default 4000). A diagnostic for the GPU machine, not part
// of vgpu.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL 1030
// Fourteen integer arguments pass through (cuLaunchKernel has eleven); stack arguments past
// them would not.
typedef uint64_t (*fn6)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                        uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
static void *(*real_dlsym)(void *, const char *);
static char names[POOL][64];
static fn6 orig[POOL];
static int used;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static int active, lines, max_lines = 4000;
static unsigned char after[16];
static int have_after;

static uint64_t traced(int i, uint64_t a[14]) {
    uint64_t r = orig[i](a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]);
    if (!strcmp(names[i], "cuGetExportTable") && have_after && a[1] && !memcmp((void *)a[1], after, 16)) active = 1;
    pthread_mutex_lock(&lock);
    if (out && active && lines < max_lines) {
        lines++;
        fprintf(out, "%s(%#lx, %#lx, %#lx, %#lx, %#lx, %#lx) = %lu\n", names[i], (unsigned long)a[0], (unsigned long)a[1],
                (unsigned long)a[2], (unsigned long)a[3], (unsigned long)a[4], (unsigned long)a[5], (unsigned long)r);
        fflush(out);
    }
    pthread_mutex_unlock(&lock);
    return r;
}

#define T(i)                                                                                                     \
    static uint64_t t_##i(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, \
                          uint64_t a7, uint64_t a8, uint64_t a9, uint64_t a10, uint64_t a11, uint64_t a12,         \
                          uint64_t a13) {                                                                        \
        uint64_t a[14] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13};                          \
        return traced(i, a);                                                                                     \
    }
#define T10(d) T(d##0) T(d##1) T(d##2) T(d##3) T(d##4) T(d##5) T(d##6) T(d##7) T(d##8) T(d##9)
#define T100(d) T10(d##0) T10(d##1) T10(d##2) T10(d##3) T10(d##4) T10(d##5) T10(d##6) T10(d##7) T10(d##8) T10(d##9)
T(0) T(1) T(2) T(3) T(4) T(5) T(6) T(7) T(8) T(9)
T10(1) T10(2) T10(3) T10(4) T10(5) T10(6) T10(7) T10(8) T10(9)
T100(1) T100(2) T100(3) T100(4) T100(5) T100(6) T100(7) T100(8) T100(9)
T10(100) T10(101) T10(102)
#define P(i) (fn6) t_##i
#define P10(d) P(d##0), P(d##1), P(d##2), P(d##3), P(d##4), P(d##5), P(d##6), P(d##7), P(d##8), P(d##9)
#define P100(d) P10(d##0), P10(d##1), P10(d##2), P10(d##3), P10(d##4), P10(d##5), P10(d##6), P10(d##7), P10(d##8), P10(d##9)
static fn6 tramp[POOL] = {P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), P(8), P(9),
                          P10(1), P10(2), P10(3), P10(4), P10(5), P10(6), P10(7), P10(8), P10(9),
                          P100(1), P100(2), P100(3), P100(4), P100(5), P100(6), P100(7), P100(8), P100(9),
                          P10(100), P10(101), P10(102)};

static void *orig_gpa, *orig_gpa2;
static int w_gpa(const char *sym, void **pfn, int v, uint64_t flags);
static int w_gpa2(const char *sym, void **pfn, int v, uint64_t flags, void *status);

// The trampoline for `sym` (one per name and address), or `fn` itself once the pool is spent.
static void *wrap(const char *sym, void *fn) {
    if (!fn || !sym || strncmp(sym, "cu", 2)) return fn;
    if (!strcmp(sym, "cuGetProcAddress_v2")) return orig_gpa2 = fn, (void *)w_gpa2;
    if (!strcmp(sym, "cuGetProcAddress")) return orig_gpa = fn, (void *)w_gpa;
    for (int k = 0; k < POOL; k++)
        if ((void *)tramp[k] == fn) return fn; // already ours (a driver that looks itself up)
    pthread_mutex_lock(&lock);
    void *t = fn;
    int i = 0;
    while (i < used && !((void *)orig[i] == fn && !strcmp(names[i], sym))) i++;
    if (i == used && used < POOL) {
        snprintf(names[i], sizeof names[i], "%s", sym);
        orig[i] = (fn6)fn;
        used++;
    }
    if (i < used) t = (void *)tramp[i];
    pthread_mutex_unlock(&lock);
    return t;
}
static int w_gpa(const char *sym, void **pfn, int v, uint64_t flags) {
    int r = ((int (*)(const char *, void **, int, uint64_t))orig_gpa)(sym, pfn, v, flags);
    // Which form of cuGetProcAddress comes back depends on the version asked: left as it is.
    if (sym && !strncmp(sym, "cuGetProcAddress", 16)) return r;
    if (r == 0 && pfn && *pfn) *pfn = wrap(sym, *pfn);
    return r;
}
static int w_gpa2(const char *sym, void **pfn, int v, uint64_t flags, void *status) {
    int r = ((int (*)(const char *, void **, int, uint64_t, void *))orig_gpa2)(sym, pfn, v, flags, status);
    // Which form of cuGetProcAddress comes back depends on the version asked: left as it is.
    if (sym && !strncmp(sym, "cuGetProcAddress", 16)) return r;
    if (r == 0 && pfn && *pfn) *pfn = wrap(sym, *pfn);
    return r;
}

void *dlsym(void *h, const char *sym) {
    if (!real_dlsym) real_dlsym = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!real_dlsym) real_dlsym = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    return wrap(sym, real_dlsym(h == RTLD_NEXT ? RTLD_DEFAULT : h, sym));
}

__attribute__((constructor)) static void start(void) {
    const char *p = getenv("CALLTRACE_OUT"), *a = getenv("CALLTRACE_AFTER"), *m = getenv("CALLTRACE_MAX");
    if (p) out = fopen(p, "a");
    if (m) max_lines = atoi(m);
    if (a && strlen(a) >= 32) {
        for (int i = 0; i < 16; i++) sscanf(a + 2 * i, "%2hhx", &after[i]);
        have_after = 1;
    } else {
        active = 1;
    }
}
