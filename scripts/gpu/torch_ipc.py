"""PyTorch sharing a CUDA tensor with another process (torch.multiprocessing: CUDA IPC of
its memory and of an event). The child doubles it in place; the parent sees the result."""
import torch
import torch.multiprocessing as mp


def child(q, r):
    t = q.get()
    r.put(float(t.sum().item()))
    t.mul_(2)
    torch.cuda.synchronize()
    r.put("done")


if __name__ == "__main__":
    mp.set_start_method("spawn")
    q, r = mp.Queue(), mp.Queue()
    p = mp.Process(target=child, args=(q, r))
    p.start()
    t = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    q.put(t)
    print("child saw sum", r.get(timeout=120), flush=True)
    print("child", r.get(timeout=120), flush=True)
    p.join(timeout=120)
    print("parent sees sum after the child doubled it", float(t.sum().item()))
    print("child exit", p.exitcode)
