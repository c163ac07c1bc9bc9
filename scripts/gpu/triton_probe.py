"""Triton on the GPU, step by step (as py_probe.py): a kernel through Triton's own launcher,
a TMA load through a host-side tensor descriptor (encoded by cuTensorMapEncodeTiled at the
launch), and torch.compile (Inductor's Triton kernels)."""
from py_probe import step


def main():
    import torch
    import triton
    import triton.language as tl

    step("triton.version", lambda: triton.__version__)

    @triton.jit
    def add(x, y, out, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out + i, tl.load(x + i, mask=i < n) + tl.load(y + i, mask=i < n), mask=i < n)

    def run_add():
        x = torch.arange(1 << 16, device="cuda", dtype=torch.float32)
        out = torch.empty_like(x)
        add[(64,)](x, x, out, x.numel(), BLOCK=1024)
        return float(out.sum().item())
    step("triton.add", run_add)

    def tma():
        from triton.tools.tensor_descriptor import TensorDescriptor

        @triton.jit
        def copy(desc, out, N, BM: tl.constexpr, BN: tl.constexpr):
            m, n = tl.program_id(0) * BM, tl.program_id(1) * BN
            tile = desc.load([m, n])
            rows, cols = m + tl.arange(0, BM), n + tl.arange(0, BN)
            tl.store(out + rows[:, None] * N + cols[None, :], tile)

        x = torch.arange(256 * 128, device="cuda", dtype=torch.float16).reshape(256, 128) % 251
        out = torch.empty_like(x)
        desc = TensorDescriptor.from_tensor(x, [64, 64])
        for _ in range(3):  # encoded at each launch
            copy[(4, 2)](desc, out, 128, BM=64, BN=64)
        return f"copied exactly: {bool(torch.equal(out, x))}"
    step("triton.tma", tma)

    def compiled():
        f = torch.compile(lambda a, b: torch.nn.functional.gelu(a @ b + 1).sum(dim=1))
        g = torch.Generator().manual_seed(3)
        a, b = torch.randn(128, 64, generator=g).cuda(), torch.randn(64, 32, generator=g).cuda()
        ref = torch.nn.functional.gelu(a @ b + 1).sum(dim=1)
        return f"max diff to eager {float((f(a, b) - ref).abs().max()):.0e}"
    step("torch.compile", compiled)

    def reduce_overhead():
        # Inductor's kernels replayed as CUDA graphs (cudagraph trees).
        f = torch.compile(lambda a: (torch.sin(a) * 2 + a).sum(), mode="reduce-overhead")
        a = torch.arange(4096, device="cuda", dtype=torch.float32) / 4096
        return [round(float(f(a + k).item()), 2) for k in range(4)]
    step("torch.compile.reduce_overhead", reduce_overhead)


if __name__ == "__main__":
    main()
