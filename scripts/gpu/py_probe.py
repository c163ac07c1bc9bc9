"""What a Python GPU user meets: CuPy and PyTorch, step by step, each step's result printed
(values rounded so that a native and a vgpu run compare line by line). A step that fails
prints its error and the probe goes on. Last: which CUDA libraries the process loaded."""
import sys, traceback


def step(name, f):
    try:
        print(f"{name}: {f()}", flush=True)
    except BaseException as e:  # noqa: BLE001 (a probe reports everything)
        print(f"{name}: ERROR {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
        traceback.print_exc(file=sys.stderr)


def cupy_steps():
    import cupy as cp
    step("cupy.version", lambda: cp.__version__)
    step("cupy.devices", lambda: cp.cuda.runtime.getDeviceCount())
    step("cupy.name", lambda: cp.cuda.runtime.getDeviceProperties(0)["name"].decode())
    step("cupy.sum", lambda: float((cp.arange(1 << 20, dtype=cp.float32) * 2).sum()))
    k = None

    def ew():
        nonlocal k
        k = cp.ElementwiseKernel("float32 x, float32 y", "float32 z", "z = x * y + 1", "vgpu_probe")
        a = cp.linspace(0, 1, 4096, dtype=cp.float32)
        return round(float(k(a, a).sum()), 3)
    step("cupy.elementwise", ew)
    step("cupy.matmul", lambda: round(float((cp.ones((512, 512), cp.float32) @ cp.ones((512, 512), cp.float32)).sum())))
    step("cupy.random", lambda: round(float(cp.random.RandomState(7).standard_normal(1 << 16).std()), 2))
    step("cupy.fft", lambda: round(float(cp.abs(cp.fft.fft(cp.ones(1024, cp.complex64))).max())))

    def host_funcs():
        # Python functions run in stream order by the driver's host-function machinery,
        # one reading what an asynchronous copy before it put into pinned memory.
        import cupyx
        s = cp.cuda.Stream(non_blocking=True)
        seen = []
        pinned = cupyx.empty_pinned((4,), dtype=cp.float32)
        with s:
            d = cp.full((4,), 3.5, cp.float32) * 2
        d.get(stream=s, out=pinned, blocking=False)
        s.launch_host_func(lambda arg: seen.append((arg, float(pinned[0]))), "read")
        s.add_callback(lambda stream, status, arg: seen.append((arg, status)), "callback")
        for i in range(100):
            s.launch_host_func(seen.append, i)
        s.synchronize()
        return seen[:2], seen[2:] == list(range(100))
    step("cupy.host_funcs", host_funcs)


def torch_steps():
    import torch
    step("torch.version", lambda: f"{torch.__version__} cuda {torch.version.cuda}")
    step("torch.available", lambda: torch.cuda.is_available())
    step("torch.devices", lambda: torch.cuda.device_count())
    step("torch.name", lambda: torch.cuda.get_device_name(0))
    step("torch.allocator", lambda: torch.cuda.get_allocator_backend())
    step("torch.add", lambda: float((torch.arange(1024, device="cuda", dtype=torch.float32) + 1).sum().item()))

    def mm():
        g = torch.Generator().manual_seed(0)
        a = torch.randn(256, 256, generator=g)
        d = (a.cuda() @ a.cuda()).cpu()
        return f"max diff to CPU {float((d - a @ a).abs().max()):.0e}"
    step("torch.matmul", mm)

    def mm16():
        g = torch.Generator().manual_seed(1)
        a = torch.randn(512, 512, generator=g)
        d = (a.cuda().half() @ a.cuda().half()).float().cpu()
        return f"max diff to CPU {float((d - a.half().float() @ a.half().float()).abs().max()):.0e}"
    step("torch.matmul_f16", mm16)

    def conv():
        g = torch.Generator().manual_seed(2)
        x, w = torch.randn(2, 8, 32, 32, generator=g), torch.randn(16, 8, 3, 3, generator=g)
        d = torch.nn.functional.conv2d(x.cuda(), w.cuda(), padding=1).cpu()
        return f"max diff to CPU {float((d - torch.nn.functional.conv2d(x, w, padding=1)).abs().max()):.0e}"
    step("torch.conv2d", conv)
    step("torch.fft", lambda: round(float(torch.fft.fft(torch.ones(1024, device="cuda", dtype=torch.complex64)).abs().max())))
    step("torch.memory", lambda: torch.cuda.mem_get_info()[1] >> 20)

    def graph():
        # A CUDA graph captured on a side stream and replayed with new inputs (what vLLM and
        # torch.compile's "reduce-overhead" do for decoding).
        x = torch.ones(1024, device="cuda")
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            y = x * 2 + 1
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = x * 2 + 1
        vals = []
        for k in range(3):
            x.fill_(k)
            g.replay()
            vals.append(float(y.sum().item()))
        return vals
    step("torch.cuda_graph", graph)

    def sdpa():
        # Fused attention (flash / memory-efficient kernels), against the math in float32.
        g = torch.Generator().manual_seed(4)
        q, k, v = (torch.randn(2, 8, 256, 64, generator=g).cuda().half() for _ in range(3))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        return f"max diff to float32 {float((out.float() - ref).abs().max()):.0e}"
    step("torch.sdpa", sdpa)

    def pinned_streams():
        # Pinned memory copied without blocking on a side stream, ordered by an event, and
        # timed by events.
        x = torch.arange(1 << 20, dtype=torch.float32).pin_memory()
        s = torch.cuda.Stream()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(s):
            e0.record()
            y = x.cuda(non_blocking=True) * 3
            e1.record()
        torch.cuda.current_stream().wait_event(e1)
        back = torch.empty_like(x).pin_memory()
        back.copy_(y, non_blocking=True)
        torch.cuda.synchronize()
        return float(back.sum()), e0.elapsed_time(e1) > 0
    step("torch.pinned_streams", pinned_streams)


if __name__ == "__main__":
    for which in sys.argv[1:] or ["cupy", "torch"]:
        step(f"{which}.import", lambda: __import__(which) and "ok")
        {"cupy": cupy_steps, "torch": torch_steps}[which]()

    libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if any(n in l for n in ("libcuda", "libcudart", "libcublas", "libnvidia-ml", "libnvrtc", "libcurand", "libcufft", "libcudnn"))})
    print("loaded:", " ".join(libs), file=sys.stderr)
