/* A long-running NVML monitor, as an exporter or a device plugin is one: commands on stdin,
 * one answer line each on stdout. "init": nvmlInit_v2's code. "query": the code of a
 * forwarded call (memory of device 0). Used to check that it outlives its server's
 * restart. Declares only what it calls (no NVIDIA headers). */
#include <stdio.h>
#include <string.h>

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } mem_v1; /* nvmlMemory_t */
int nvmlInit_v2(void);
int nvmlDeviceGetHandleByIndex_v2(unsigned, nvmlDevice_t *);
int nvmlDeviceGetMemoryInfo(nvmlDevice_t, mem_v1 *);

int main(void) {
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "init", 4) == 0) {
            printf("init %d\n", nvmlInit_v2());
        } else if (strncmp(line, "query", 5) == 0) {
            nvmlDevice_t d;
            mem_v1 m = {0};
            int r = nvmlDeviceGetHandleByIndex_v2(0, &d);
            if (r == 0) r = nvmlDeviceGetMemoryInfo(d, &m);
            printf("query %d total %llu\n", r, m.total);
        }
    }
    return 0;
}
