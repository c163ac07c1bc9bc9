/* NVML through vgpu: device identity and live memory, as nvidia-smi and Ollama read them.
 * Declares only what it calls (no NVIDIA headers); struct fields are read at the offsets the
 * abi crate's layout tests pin (nvmlPciInfo_t: busId at 36, 68 bytes). */
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } mem_v1; /* nvmlMemory_t */
int nvmlInit_v2(void);
int nvmlShutdown(void);
int nvmlSystemGetDriverVersion(char *, unsigned);
int nvmlDeviceGetCount_v2(unsigned *);
int nvmlDeviceGetHandleByIndex_v2(unsigned, nvmlDevice_t *);
int nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
int nvmlDeviceGetName(nvmlDevice_t, char *, unsigned);
int nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned);
int nvmlDeviceGetPciInfo_v3(nvmlDevice_t, void *);
int nvmlDeviceGetMemoryInfo(nvmlDevice_t, mem_v1 *);
int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t, int *, int *);
int nvmlDeviceGetPowerUsage(nvmlDevice_t, unsigned *);
const char *nvmlErrorString(int);
int nvmlDeviceGetMemoryErrorCounter(nvmlDevice_t, int, int, int, unsigned long long *);
int nvmlDeviceGetEncoderStats(nvmlDevice_t, unsigned *, unsigned *, unsigned *);
int nvmlDeviceGetRemappedRows(nvmlDevice_t, unsigned *, unsigned *, unsigned *, unsigned *);
int nvmlDeviceGetRetiredPages(nvmlDevice_t, int, unsigned *, unsigned long long *);
int nvmlDeviceGetDriverModel_v2(nvmlDevice_t, int *, int *);

int main(void) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r = nvmlInit_v2();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (r != 0) {
        printf("init failed %d (%s) after %.2f s\n", r, nvmlErrorString(r), secs);
        return 3;
    }
    char drv[80];
    if (nvmlSystemGetDriverVersion(drv, sizeof drv)) return 4;
    unsigned n = 0;
    if (nvmlDeviceGetCount_v2(&n) || n == 0) return 5;
    printf("driver %s devices %u\n", drv, n);
    for (unsigned i = 0; i < n; i++) {
        nvmlDevice_t d, again;
        char name[96], uuid[96];
        unsigned char pci[68];
        mem_v1 m;
        int ma, mi;
        unsigned mw = 0;
        if (nvmlDeviceGetHandleByIndex_v2(i, &d)) return 6;
        if (nvmlDeviceGetName(d, name, sizeof name)) return 7;
        if (nvmlDeviceGetUUID(d, uuid, sizeof uuid)) return 8;
        if (nvmlDeviceGetPciInfo_v3(d, pci)) return 9;
        if (nvmlDeviceGetMemoryInfo(d, &m)) return 10;
        if (nvmlDeviceGetCudaComputeCapability(d, &ma, &mi)) return 11;
        if (nvmlDeviceGetHandleByUUID(uuid, &again) || again != d) return 12;
        int pr = nvmlDeviceGetPowerUsage(d, &mw);
        printf("device %u name=%s uuid=%s bus=%s total=%llu free=%llu cc=%d.%d power=%s\n", i, name, uuid,
               (char *)pci + 36, m.total, m.free, ma, mi, pr == 0 ? "ok" : nvmlErrorString(pr));
    }
    char small[4];
    nvmlDevice_t d0;
    nvmlDeviceGetHandleByIndex_v2(0, &d0);
    printf("small buffer -> %d\n", nvmlDeviceGetName(d0, small, sizeof small));
    /* Health, as monitors read it: uncorrected aggregate ECC errors in device memory,
     * encoder use, remapped rows, retired pages (count only), and the driver model with
     * only its current value asked (NULL pending: NVML's pair functions allow it). */
    unsigned long long ecc = 7;
    unsigned sessions = 9, fps = 9, lat = 9, corr = 9, unc = 9, pend = 9, fail = 9, pages = 5;
    int model = 9;
    int e = nvmlDeviceGetMemoryErrorCounter(d0, 1, 1, 2, &ecc);
    int es = nvmlDeviceGetEncoderStats(d0, &sessions, &fps, &lat);
    int rr = nvmlDeviceGetRemappedRows(d0, &corr, &unc, &pend, &fail);
    int rp = nvmlDeviceGetRetiredPages(d0, 1, &pages, NULL);
    int dm = nvmlDeviceGetDriverModel_v2(d0, &model, NULL);
    printf("health ecc %d=%llu encoder %d=%u,%u,%u rows %d=%u,%u,%u,%u pages %d=%u driver-model %d\n", e, ecc, es,
           sessions, fps, lat, rr, corr, unc, pend, fail, rp, pages, dm);
    if (nvmlShutdown()) return 13;
    return 0;
}
