"""numba on the GPU, step by step (as py_probe.py): kernels it compiles and loads, one with
a register cap. (The driver's JIT logs, which numba's ctypes linker reads, are checked by
tests/gpu/driver_suite.c: numba 0.68 there links through cuda.core.)"""
from py_probe import step  # beside this file: on the path when run as a script


def main():
    import numpy as np

    # numba 0.68 still calls np.row_stack, which NumPy 2.4 removed (the GPU machine has both).
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    from numba import cuda

    step("numba.version", lambda: __import__("numba").__version__)
    step("numba.devices", lambda: len(cuda.gpus))

    @cuda.jit
    def axpy(out, a, x, y):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a * x[i] + y[i]

    def run():
        x = np.arange(1 << 16, dtype=np.float32)
        out = cuda.device_array_like(x)
        axpy[256, 256](out, np.float32(2), cuda.to_device(x), cuda.to_device(x))
        return float(out.copy_to_host().sum())
    step("numba.axpy", run)

    @cuda.jit(max_registers=32)
    def capped(out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = i * 0.5

    def cap():
        out = cuda.device_array(1024, np.float32)
        capped[4, 256](out)
        regs = capped.get_regs_per_thread()  # per signature
        return f"sum {float(out.copy_to_host().sum())}, registers <= 32: {max(regs.values()) <= 32}"
    step("numba.max_registers", cap)


if __name__ == "__main__":
    main()
