# SDPA-cuDNN decode with K/V head-major ([B, Hkv, S, D], decode_peers.py's layout) and token-major
# ([B, S, Hkv, D] viewed as [B, Hkv, S, D]: moekit's packed [T, H, D] layout), same timing as
# decode_peers.py (do_bench with the cache-clearing write, median).
import json, sys, torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench
for spec in ["8,32,8,8192,128", "32,32,8,4096,128", "1,32,8,65536,128", "16,16,16,4096,64"]:
    b, hq, hkv, s, d = (int(x) for x in spec.split(","))
    q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
    for layout in ["head-major", "token-major"]:
        if layout == "head-major":
            k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        else:
            k = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
            v = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        line = {"shape": [b, hq, hkv, s, d], "layout": layout}
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv)
                ms = do_bench(fn, warmup=25, rep=200, return_mode="median")
            line.update(ms=ms, gbps=2 * b * hkv * s * d * 2 / ms / 1e6)
        except Exception as ex:
            line.update(error=str(ex)[:200])
        print(json.dumps(line), flush=True)
        del k, v
