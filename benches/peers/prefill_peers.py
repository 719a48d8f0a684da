#!/usr/bin/env python3
"""PyTorch peers of moekit's prefill attention for shapes that ../shared/peers/torch_peers.py does
not cover (head dim 256): SDPA (flash, cuDNN, efficient), bf16, GQA, one JSON line each in
torch_peers.py's format and with its FLOP count (4·B·Hq·S²·D, halved when causal), with the
bench's dims (`[B, Hq, Hkv, S, D, causal]`) so that `moekit-bench --peers` matches them.
Usage: python3 prefill_peers.py [B,Hq,Hkv,S,D,causal ...]"""
import json
import sys

import torch
import torch.nn.functional as F

DEFAULT = ["4,32,8,4096,256,1", "2,32,8,8192,256,0", "1,32,8,16384,256,1"]


def bench(fn, reps=100):
    # As torch_peers.py: triton's do_bench (a cache-clearing write before each run), the median.
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=reps, return_mode="median")


def main():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    print(json.dumps({"op": "env", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}), flush=True)
    for spec in sys.argv[1:] or DEFAULT:
        b, hq, hkv, s, d, causal = (int(x) for x in spec.split(","))
        q = torch.randn(b, hq, s, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        flops = 4 * b * hq * s * s * d * (0.5 if causal else 1.0)
        for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
            line = {"op": "attention_fwd", "shape": [b, hq, hkv, s, d, causal], "peer": f"sdpa-{name}"}
            try:
                with sdpa_kernel(be):
                    fn = lambda: F.scaled_dot_product_attention(  # noqa: E731
                        q, k, v, is_causal=bool(causal), enable_gqa=hq != hkv)
                    ms = bench(fn)
                line.update(ms=ms, tflops=flops / ms / 1e9)
            except Exception as ex:  # noqa: BLE001
                line.update(error=str(ex)[:160])
            print(json.dumps(line), flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
