#!/usr/bin/env python3
"""PyTorch peers of moekit's split-KV decode attention: SDPA (flash, cuDNN, efficient) with one
query row per sequence against S keys, bf16, GQA. One JSON line each, in torch_peers.py's format,
with the bench's dims (`[B, Hq, Hkv, S, D, 101]`, 101 = `dec1`) so that `moekit-bench --peers`
matches them. One query row sees every key, so bottom-right causal is SDPA's non-causal call.
Usage: python3 decode_peers.py [B,Hq,Hkv,S,D ...] (MOEKIT_BENCH_FLUSH=0: no cache-clearing write;
MOEKIT_BENCH_FLUSH_READ=1: the 256 MiB buffer read before each run instead of written, as
moekit-bench does with the same variable)"""
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

DEFAULT = ["8,32,8,8192,128", "32,32,8,4096,128", "1,32,8,65536,128", "16,16,16,4096,64"]


def timed_runs(fn, reps, before=lambda: None):
    # Events around each queued run, `before` ahead of each (outside the events); the median.
    for _ in range(25):
        fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in ev:
        before()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in ev)


def bench(fn, reps=200):
    # As torch_peers.py: triton's do_bench (a cache-clearing write before each run), the median.
    # MOEKIT_BENCH_FLUSH=0 (as moekit-bench's): no write, events around each queued run instead.
    if os.environ.get("MOEKIT_BENCH_FLUSH", "").strip() == "0":
        return timed_runs(fn, reps)
    if os.environ.get("MOEKIT_BENCH_FLUSH_READ", "").strip() == "1":
        # A read of 256 MiB (a sum) before each run: L2 left holding clean lines, none of them the
        # inputs'. The sum's one-element output is the only write.
        buf = torch.ones(64 << 20, device="cuda", dtype=torch.float32)
        return timed_runs(fn, reps, before=buf.sum)
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=reps, return_mode="median")


def main():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    print(json.dumps({"op": "env", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}), flush=True)
    for spec in sys.argv[1:] or DEFAULT:
        b, hq, hkv, s, d = (int(x) for x in spec.split(","))
        q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        kv_bytes = 2 * b * hkv * s * d * 2
        for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]:
            line = {"op": "attention_fwd", "shape": [b, hq, hkv, s, d, 101], "peer": f"sdpa-{name}"}
            try:
                with sdpa_kernel(be):
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv)  # noqa: E731
                    ms = bench(fn)
                line.update(ms=ms, gbps=kv_bytes / ms / 1e6)
            except Exception as ex:  # noqa: BLE001
                line.update(error=str(ex)[:160])
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
