/* Several devices on several servers through NVML: one line per device (index, UUID, PCI
 * bus id), each device found again by UUID and by bus id, and a forwarded query answered
 * for each (it goes to the device's own server). NVML ignores CUDA_VISIBLE_DEVICES, as the
 * real one does. No NVIDIA headers; nvmlPciInfo_t's busId is at offset 36. */
#include <stdio.h>
#include <string.h>

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } mem_v1;
int nvmlInit_v2(void);
int nvmlShutdown(void);
int nvmlDeviceGetCount_v2(unsigned *);
int nvmlDeviceGetHandleByIndex_v2(unsigned, nvmlDevice_t *);
int nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
int nvmlDeviceGetHandleByPciBusId_v2(const char *, nvmlDevice_t *);
int nvmlDeviceGetIndex(nvmlDevice_t, unsigned *);
int nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned);
int nvmlDeviceGetPciInfo_v3(nvmlDevice_t, void *);
int nvmlDeviceGetMemoryInfo(nvmlDevice_t, mem_v1 *);
int nvmlDeviceGetTemperature(nvmlDevice_t, int, unsigned *);

#define CHECK(x) do { int r_ = (x); if (r_) { printf("FAIL %s -> %d (line %d)\n", #x, r_, __LINE__); return 1; } } while (0)

int main(void) {
    unsigned n = 0;
    CHECK(nvmlInit_v2());
    CHECK(nvmlDeviceGetCount_v2(&n));
    printf("devices %u\n", n);
    for (unsigned i = 0; i < n; i++) {
        nvmlDevice_t d, by_uuid, by_bus;
        char uuid[96];
        unsigned char pci[68];
        unsigned index = 99, temp = 0;
        mem_v1 m;
        CHECK(nvmlDeviceGetHandleByIndex_v2(i, &d));
        CHECK(nvmlDeviceGetIndex(d, &index));
        CHECK(nvmlDeviceGetUUID(d, uuid, sizeof uuid));
        CHECK(nvmlDeviceGetPciInfo_v3(d, pci));
        CHECK(nvmlDeviceGetHandleByUUID(uuid, &by_uuid));
        CHECK(nvmlDeviceGetHandleByPciBusId_v2((char *)pci + 36, &by_bus));
        if (index != i || by_uuid != d || by_bus != d) { printf("FAIL identity of device %u\n", i); return 1; }
        CHECK(nvmlDeviceGetMemoryInfo(d, &m));
        CHECK(nvmlDeviceGetTemperature(d, 0, &temp));
        if (m.total == 0 || temp == 0) { printf("FAIL forwarded queries of device %u\n", i); return 1; }
        printf("dev %u uuid=%s bus=%s\n", i, uuid, (char *)pci + 36);
    }
    CHECK(nvmlShutdown());
    printf("done\n");
    return 0;
}
