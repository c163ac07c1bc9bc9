/* cudart_basic.c against libcudart.so.12: the CUDA 12 cudaDeviceProp layout and nvcc 12's
 * launch path (cudaLaunchKernel from the stub). */
#define RT12
#include "cudart_basic.c"
