# ncu target: SDPA-cuDNN decode on one shape (B,Hq,Hkv,S,D), 30 calls; profile with -k filters.
import sys, torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
b, hq, hkv, s, d = (int(x) for x in sys.argv[1].split(","))
q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
v = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    for _ in range(30):
        F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv)
torch.cuda.synchronize()
