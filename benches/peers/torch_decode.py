"""PyTorch peers of the MoE layer at decode sizes (issue #7, item 5).

The deepseek-v3 expert shape (H 7168, E 256, top-8, I 2048; all 256 experts on one GPU, bf16)
at T = 1 ... 256 tokens: the same layer as `../shared/peers/torch_peers.py` (`layer()`: eager
router, argsort permute, `torch._grouped_mm` gate/up and down, SwiGLU, weighted unpermute),
timed eagerly and, where PyTorch can record it, as a CUDA graph (the eager layer's
`torch.bincount` waits on the host, so the graph variant counts with `scatter_add_`).

Prints one JSON object per line in torch_peers.py's format, `{"op": "moe_layer_fwd", "shape":
[T, H, E, k, I], "peer", "ms", "tflops", "weight_gbps", "active_experts"}`, so
`moekit-bench --peers` matches them with its `moe_layer` cases of the same dims; a peer that
fails prints `"error"` instead of a time. Usage: `python3 torch_decode.py [T ...]`.
"""
import json
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

torch.manual_seed(0)
dev = "cuda"
bf16 = torch.bfloat16
H, E, K, I = 7168, 256, 8, 2048


def emit(**kw):
    print(json.dumps(kw), flush=True)


def router(x, wg, k):
    probs = (x @ wg).float().softmax(-1)
    w, ids = probs.topk(k, dim=-1)
    return w / w.sum(-1, keepdim=True), ids


def layer(x, wg, w13, w2, counts_fn):
    t = x.shape[0]
    wts, ids = router(x, wg, K)
    flat = ids.flatten()
    order = flat.argsort(stable=True)
    xs = x.index_select(0, order // K)
    offs = torch.cumsum(counts_fn(flat), 0).to(torch.int32)
    g, u = torch._grouped_mm(xs, w13, offs=offs).chunk(2, dim=-1)
    ys = torch._grouped_mm(F.silu(g) * u, w2, offs=offs)
    out = torch.empty_like(ys)
    out[order] = ys
    return (out.view(t, K, -1).float() * wts.unsqueeze(-1)).sum(1).to(ys.dtype)


def bincount(flat):
    return torch.bincount(flat, minlength=E)


def scatter_count(flat):
    return torch.zeros(E, device=flat.device, dtype=torch.int64).scatter_add_(0, flat, torch.ones_like(flat))


def main():
    tokens = [int(a) for a in sys.argv[1:]] or [1, 8, 32, 128, 256]
    emit(op="env", torch=torch.__version__, gpu=torch.cuda.get_device_name())
    wg = torch.randn(H, E, device=dev, dtype=bf16) / H**0.5
    w13 = torch.randn(E, H, 2 * I, device=dev, dtype=bf16) / H**0.5
    w2 = torch.randn(E, I, H, device=dev, dtype=bf16) / I**0.5
    expert_bytes = 3 * H * I * 2
    for t in tokens:
        x = torch.randn(t, H, device=dev, dtype=bf16)
        _, ids = router(x, wg, K)
        active = int(torch.unique(ids).numel())
        flops = 2 * t * K * 3 * H * I + 2 * t * H * E
        shape = [t, H, E, K, I]

        def report(peer, ms):
            emit(op="moe_layer_fwd", shape=shape, peer=peer, ms=ms, tflops=flops / ms / 1e9,
                 weight_gbps=active * expert_bytes / ms / 1e6, active_experts=active, name="deepseek-v3-decode")

        ref = layer(x, wg, w13, w2, bincount)
        report("torch-eager+grouped_mm", do_bench(lambda: layer(x, wg, w13, w2, bincount), warmup=25, rep=200,
                                                  return_mode="median"))
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    layer(x, wg, w13, w2, scatter_count)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = layer(x, wg, w13, w2, scatter_count)
            g.replay()
            torch.cuda.synchronize()
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            if not err < 1e-2:
                raise RuntimeError(f"graph output differs from the eager layer: rel err {err:.3g}")
            report("torch-graph+grouped_mm", do_bench(g.replay, warmup=25, rep=200, return_mode="median"))
        except Exception as ex:  # noqa: BLE001
            emit(op="moe_layer_fwd", shape=shape, peer="torch-graph+grouped_mm", error=str(ex)[:200])


if __name__ == "__main__":
    main()
