// darktrace: what NVIDIA's libraries ask of the driver's private tables that vgpu does not
// serve yet, recorded on a native run. Preloaded (LD_PRELOAD) into a program that uses
// NVIDIA's real libcuda.so.1; at load it asks the driver for each table named in DARKTRACE_UUIDS
// (hex, comma-separated), makes the table writable and puts a recording trampoline in every
// slot, which calls the driver's own function and writes one line to DARKTRACE_OUT: table,
// slot, caller (library+offset), arguments, result, and the 32 bytes behind each argument
// that points at readable memory, before and after the call (what the slot reads and
// writes). Slots are assumed to take at most 8 integer arguments; this is a diagnostic for
// the GPU machine, not part of vgpu.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <ucontext.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_TABLES 6
#define MAX_SLOTS 160
#define PER_SLOT 40

typedef uint64_t (*slot_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
static slot_fn orig[MAX_TABLES][MAX_SLOTS];
static char names[MAX_TABLES][40];
static int calls[MAX_TABLES][MAX_SLOTS];
static FILE *out;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int (*current)(void **);

static int readable(uint64_t p, unsigned char *buf) {
    if (p < 4096) return 0;
    struct iovec l = {buf, 32}, r = {(void *)p, 32};
    return process_vm_readv(getpid(), &l, 1, &r, 1, 0) == 32;
}

static void hex(FILE *f, const unsigned char *b) {
    for (int i = 0; i < 32; i++) fprintf(f, "%02x", b[i]);
}

// DARKTRACE_CB=TABLE:SLOT (e.g. 6E163FBE:7): arguments of that slot that point into
// executable memory are callbacks; each is replaced by a recording trampoline that logs the
// callback's arguments, 256 bytes behind each readable one (and strings its words point
// at) and, for a first argument the driver takes for a function, its public name.
static int is_exec(uint64_t p) {
    FILE *m = fopen("/proc/self/maps", "r");
    char line[512];
    int x = 0;
    while (m && fgets(line, sizeof line, m)) {
        unsigned long lo, hi;
        char perm[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perm) == 3 && p >= lo && p < hi) { x = perm[2] == 'x'; break; }
    }
    if (m) fclose(m);
    return x;
}
static void dump(FILE *f, const char *what, uint64_t p) {
    unsigned char b[256];
    struct iovec l = {b, sizeof b}, r = {(void *)p, sizeof b};
    if (p < 4096 || process_vm_readv(getpid(), &l, 1, &r, 1, 0) != sizeof b) return;
    fprintf(f, "    %s %#lx:\n", what, (unsigned long)p);
    for (int w = 0; w < 32; w++) {
        uint64_t v;
        memcpy(&v, b + 8 * w, 8);
        char str[48] = {0};
        struct iovec sl = {str, 40}, sr = {(void *)v, 40};
        int sok = v > 4096 && process_vm_readv(getpid(), &sl, 1, &sr, 1, 0) == 40;
        int printable = sok && str[0] >= 32 && str[0] < 127 && str[1] >= 32 && str[1] < 127 && str[2] >= 32;
        fprintf(f, "      +%03x %016lx%s%.40s%s\n", 8 * w, (unsigned long)v, printable ? " \"" : "", printable ? str : "", printable ? "\"" : "");
    }
}
typedef uint64_t (*cb_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
static cb_fn cb_orig[4];
static int cb_calls[4];
// DARKTRACE_TRAP=1: the function object is handed on as a copy in a page nobody may read,
// and each read of it is logged (offset, and the code that read it) by stepping over the
// reading instruction with the page readable. Finds which fields of the driver's object
// the callback's library reads; later calls with the copy fail, so use it for that alone.
static unsigned char *trap_page;
static void on_segv(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    unsigned char *a = si->si_addr;
    if (!trap_page || a < trap_page || a >= trap_page + 4096) { signal(sig, SIG_DFL); return; }
    Dl_info info = {0};
    void *pc = (void *)uc->uc_mcontext.gregs[REG_RIP];
    dladdr(pc, &info);
    char line[256];
    int n = snprintf(line, sizeof line, "  read +%#lx by %s+%#lx\n", (unsigned long)(a - trap_page),
                     info.dli_fname ? info.dli_fname : "?", (unsigned long)((char *)pc - (char *)info.dli_fbase));
    if (out) { fwrite(line, 1, n, out); fflush(out); }
    mprotect(trap_page, 4096, PROT_READ | PROT_WRITE);
    uc->uc_mcontext.gregs[REG_EFL] |= 0x100; // single step over the read
}
static void on_trap(int sig, siginfo_t *si, void *ctx) {
    (void)sig, (void)si;
    ucontext_t *uc = ctx;
    uc->uc_mcontext.gregs[REG_EFL] &= ~0x100;
    if (trap_page) mprotect(trap_page, 4096, PROT_NONE);
}
static uint64_t trapped(uint64_t object) {
    if (!getenv("DARKTRACE_TRAP") || object < 4096) return object;
    if (!trap_page) {
        trap_page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct sigaction sa = {0};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, 0);
        sa.sa_sigaction = on_trap;
        sigaction(SIGTRAP, &sa, 0);
    }
    mprotect(trap_page, 4096, PROT_READ | PROT_WRITE);
    struct iovec l = {trap_page, 512}, r = {(void *)object, 512};
    if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) != 512) memset(trap_page, 0, 512);
    mprotect(trap_page, 4096, PROT_NONE);
    return (uint64_t)trap_page;
}

static uint64_t cb_traced(int i, uint64_t a[6]) {
    pthread_mutex_lock(&lock);
    if (out && cb_calls[i]++ < 12) {
        fprintf(out, "  callback %d args", i);
        for (int k = 0; k < 6; k++) fprintf(out, " %#lx", (unsigned long)a[k]);
        fprintf(out, "\n");
        for (int k = 0; k < 4; k++) { char w[8]; snprintf(w, sizeof w, "a%d", k); dump(out, w, a[k]); }
        // The argument the driver hands as its function object (DARKTRACE_CB_FN, default
        // 1): its public name and attributes, to set beside the bytes above.
        static int (*fname)(const char **, uint64_t);
        static int (*fattr)(int *, int, uint64_t);
        void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
        if (!fname) fname = dlsym(cuda, "cuFuncGetName");
        if (!fattr) fattr = dlsym(cuda, "cuFuncGetAttribute");
        const char *e = getenv("DARKTRACE_CB_FN");
        uint64_t f = a[e ? atoi(e) : 1];
        const char *n = 0;
        fflush(out);
        if (fname && f > 4096) fprintf(out, "    cuFuncGetName = %d %s\n", fname(&n, f), n ? n : "-");
        for (int at = 0; fattr && f > 4096 && at < 20; at++) {
            int v = -1, r = fattr(&v, at, f);
            fprintf(out, "    cuFuncGetAttribute(%d) = %d (%#x) r=%d\n", at, v, v, r);
        }
        fflush(out);
    }
    pthread_mutex_unlock(&lock);
    const char *fe = getenv("DARKTRACE_CB_FN");
    int fi = fe ? atoi(fe) : 1;
    a[fi] = trapped(a[fi]);
    uint64_t r = cb_orig[i](a[0], a[1], a[2], a[3], a[4], a[5]);
    pthread_mutex_lock(&lock);
    if (out && cb_calls[i] <= 12) fprintf(out, "  callback %d returned %#lx\n", i, (unsigned long)r);
    pthread_mutex_unlock(&lock);
    return r;
}
#define CB(i) static uint64_t cb_##i(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) { \
    uint64_t a[6] = {a0, a1, a2, a3, a4, a5}; return cb_traced(i, a); }
CB(0) CB(1) CB(2) CB(3)
static cb_fn cb_tramp[4] = {cb_0, cb_1, cb_2, cb_3};
static int cb_table = -1, cb_slot = -1;
static void wrap_callbacks(int t, int s, uint64_t a[8]) {
    if (t != cb_table || s != cb_slot) return;
    for (int k = 0; k < 8; k++) {
        if (a[k] < 4096 || !is_exec(a[k])) continue;
        int i = 0;
        while (i < 4 && cb_orig[i] && (uint64_t)cb_orig[i] != a[k]) i++;
        if (i == 4) continue;
        cb_orig[i] = (cb_fn)a[k];
        a[k] = (uint64_t)cb_tramp[i];
    }
}

static uint64_t traced(int t, int s, void *caller, uint64_t a[8]) {
    unsigned char before[8][32], after[8][32];
    int ok[8];
    wrap_callbacks(t, s, a);
    for (int i = 0; i < 8; i++) ok[i] = readable(a[i], before[i]);
    uint64_t r = orig[t][s](a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    pthread_mutex_lock(&lock);
    if (out && calls[t][s]++ < PER_SLOT) {
        Dl_info info = {0};
        dladdr(caller, &info);
        void *cur = 0;
        if (current) current(&cur);
        fprintf(out, "%s[%d] cur=%p from %s+0x%lx ret=0x%lx args", names[t], s, cur, info.dli_fname ? strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname : "?",
                (unsigned long)((char *)caller - (char *)info.dli_fbase), (unsigned long)r);
        for (int i = 0; i < 8; i++) fprintf(out, " 0x%lx", (unsigned long)a[i]);
        fprintf(out, "\n");
        for (int i = 0; i < 8; i++) {
            if (!ok[i]) continue;
            readable(a[i], after[i]);
            fprintf(out, "  a%d before ", i);
            hex(out, before[i]);
            if (memcmp(before[i], after[i], 32)) {
                fprintf(out, " after ");
                hex(out, after[i]);
            }
            fprintf(out, "\n");
        }
        fflush(out);
    }
    pthread_mutex_unlock(&lock);
    return r;
}

#define TR(t, s)                                                                                                 \
    static uint64_t tr_##t##_##s(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,   \
                                 uint64_t a6, uint64_t a7) {                                                     \
        uint64_t a[8] = {a0, a1, a2, a3, a4, a5, a6, a7};                                                        \
        return traced(t, s, __builtin_return_address(0), a);                                                     \
    }
#define TR10(t, d) TR(t, d##0) TR(t, d##1) TR(t, d##2) TR(t, d##3) TR(t, d##4) TR(t, d##5) TR(t, d##6) TR(t, d##7) TR(t, d##8) TR(t, d##9)
#define TRS(t) TR(t, 0) TR(t, 1) TR(t, 2) TR(t, 3) TR(t, 4) TR(t, 5) TR(t, 6) TR(t, 7) TR(t, 8) TR(t, 9) \
    TR10(t, 1) TR10(t, 2) TR10(t, 3) TR10(t, 4) TR10(t, 5) TR10(t, 6) TR10(t, 7) TR10(t, 8) TR10(t, 9) TR10(t, 10) TR10(t, 11) TR10(t, 12) TR10(t, 13) TR10(t, 14) TR10(t, 15)
TRS(0)
TRS(1)
TRS(2)
TRS(3)
TRS(4)
TRS(5)
#define P(t, s) (slot_fn) tr_##t##_##s
#define P10(t, d) P(t, d##0), P(t, d##1), P(t, d##2), P(t, d##3), P(t, d##4), P(t, d##5), P(t, d##6), P(t, d##7), P(t, d##8), P(t, d##9)
#define PS(t) {P(t, 0), P(t, 1), P(t, 2), P(t, 3), P(t, 4), P(t, 5), P(t, 6), P(t, 7), P(t, 8), P(t, 9), \
    P10(t, 1), P10(t, 2), P10(t, 3), P10(t, 4), P10(t, 5), P10(t, 6), P10(t, 7), P10(t, 8), P10(t, 9), P10(t, 10), P10(t, 11), P10(t, 12), P10(t, 13), P10(t, 14), P10(t, 15)}
static slot_fn tramp[MAX_TABLES][MAX_SLOTS] = {PS(0), PS(1), PS(2), PS(3), PS(4), PS(5)};

__attribute__((constructor)) static void start(void) {
    const char *path = getenv("DARKTRACE_OUT"), *uuids = getenv("DARKTRACE_UUIDS");
    if (!path || !uuids) return;
    out = fopen(path, "a");
    if (!out) return;
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    int (*get)(const void **, const unsigned char *) = cuda ? dlsym(cuda, "cuGetExportTable") : 0;
    if (!get) { fprintf(out, "no libcuda: %s\n", dlerror()); return; }
    current = dlsym(cuda, "cuCtxGetCurrent");
    const char *cb = getenv("DARKTRACE_CB");
    char list[512];
    snprintf(list, sizeof list, "%s", uuids);
    int t = 0;
    for (char *u = strtok(list, ","); u && t < MAX_TABLES; u = strtok(0, ","), t++) {
        unsigned char id[16];
        for (int i = 0; i < 16; i++) sscanf(u + 2 * i, "%2hhx", &id[i]);
        snprintf(names[t], sizeof names[t], "%.8s", u);
        if (cb && !strncasecmp(cb, u, 8) && cb[8] == ':') cb_table = t, cb_slot = atoi(cb + 9);
        uint64_t *table = 0;
        int r = get((const void **)&table, id);
        if (r || !table) { fprintf(out, "table %s: error %d\n", u, r); continue; }
        size_t n = table[0] / 8;
        fprintf(out, "table %s at %p: %zu bytes, %zu slots\n", u, (void *)table, (size_t)table[0], n);
        if (n > MAX_SLOTS) n = MAX_SLOTS;
        uintptr_t page = (uintptr_t)table & ~(uintptr_t)4095, end = (uintptr_t)(table + n);
        if (mprotect((void *)page, end - page, PROT_READ | PROT_WRITE)) { fprintf(out, "mprotect failed\n"); continue; }
        for (size_t s = 1; s < n; s++) {
            if (!table[s]) continue;
            orig[t][s] = (slot_fn)table[s];
            table[s] = (uint64_t)tramp[t][s];
        }
    }
    fflush(out);
}
