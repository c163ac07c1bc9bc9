/* The probe sequence of `ollama gpu-discover`, looked up with dlsym as Ollama does. */
#include <dlfcn.h>
#include <stdio.h>
typedef int (*fn)();
int main(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 1; }
    fn init = (fn)dlsym(h, "cuInit"), dver = (fn)dlsym(h, "cuDriverGetVersion"), cnt = (fn)dlsym(h, "cuDeviceGetCount"),
       get = (fn)dlsym(h, "cuDeviceGet"), attr = (fn)dlsym(h, "cuDeviceGetAttribute"), nm = (fn)dlsym(h, "cuDeviceGetName"),
       mem = (fn)dlsym(h, "cuDeviceTotalMem_v2"), pci = (fn)dlsym(h, "cuDeviceGetPCIBusId");
    printf("cuInit %d\n", init(0));
    int v = 0, n = 0; printf("cuDriverGetVersion %d %d\n", dver(&v), v);
    printf("cuDeviceGetCount %d %d\n", cnt(&n), n);
    for (int i = 0; i < n; i++) {
        int d, ma, mi, integ; char name[256], bus[64]; size_t total;
        get(&d, i); attr(&ma, 75, d); attr(&mi, 76, d); attr(&integ, 18, d);
        nm(name, 256, d); mem(&total, d); pci(bus, 64, d);
        printf("device %d cc %d.%d integrated %d name %s total %zu pci %s\n", i, ma, mi, integ, name, total, bus);
    }
    return 0;
}
