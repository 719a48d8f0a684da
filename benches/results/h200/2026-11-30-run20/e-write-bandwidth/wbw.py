"""Write-heavy bandwidth on this GPU, to see where the permute copy (1 read : k writes) stands:
copy_ (1:1), fill_ (write only), and an expand-copy that writes each input row k times
(the permute's traffic without the index work). Prints JSON lines, GB/s of compulsory bytes."""
import json
import torch

def bench(fn, iters=30):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]

n = 1 << 30
src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
dst = torch.empty_like(src)
ms = bench(lambda: dst.copy_(src)); print(json.dumps({"op": "copy_", "bytes": 2 * n, "ms": ms, "gbps": 2 * n / ms / 1e6}))
ms = bench(lambda: dst.fill_(7)); print(json.dumps({"op": "fill_", "bytes": n, "ms": ms, "gbps": n / ms / 1e6}))
ms = bench(lambda: dst.zero_()); print(json.dumps({"op": "zero_", "bytes": n, "ms": ms, "gbps": n / ms / 1e6}))
for name, t, h, k in [("qwen3", 16384, 2048, 8), ("ernie", 16384, 2560, 6), ("deepseek", 8192, 7168, 8)]:
    x = torch.randn(t, h, dtype=torch.bfloat16, device="cuda")
    out = torch.empty(t * k, h, dtype=torch.bfloat16, device="cuda")
    o3 = out.view(t, k, h)
    ms = bench(lambda: o3.copy_(x[:, None, :].expand(t, k, h)))
    b = (t * h + t * k * h) * 2
    print(json.dumps({"op": "expand_copy", "name": name, "bytes": b, "ms": ms, "gbps": b / ms / 1e6}))
    perm = torch.randperm(t * k, device="cuda")
    idx = (perm // k).contiguous()
    ms = bench(lambda: torch.index_select(x, 0, idx, out=out))
    print(json.dumps({"op": "index_select_rows", "name": name, "bytes": b, "ms": ms, "gbps": b / ms / 1e6}))
