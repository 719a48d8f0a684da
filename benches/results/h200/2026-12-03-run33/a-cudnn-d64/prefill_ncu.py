# ncu target: SDPA-cuDNN prefill on one shape (B,Hq,Hkv,S,D,causal), bf16, 6 calls; profile with -k filters.
import sys, torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
b, hq, hkv, s, d, causal = (int(x) for x in sys.argv[1].split(","))
q = torch.randn(b, hq, s, d, device="cuda", dtype=torch.bfloat16)
k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
v = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    for _ in range(6):
        F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal), enable_gqa=hq != hkv)
torch.cuda.synchronize()
