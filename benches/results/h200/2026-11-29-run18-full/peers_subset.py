"""torch_peers.py's MoE peers on a subset of its shapes: `python3 peers_subset.py NAME[,NAME...]
[ceilings]` (the ceilings too when asked)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_peers as t  # noqa: E402

names = sys.argv[1].split(",")
t.SHAPES = [s for s in t.SHAPES if s[0] in names]
t.emit(op="env", torch=t.torch.__version__, gpu=t.torch.cuda.get_device_name(0))
if "ceilings" in sys.argv[2:]:
    t.ceilings()
t.moe_shapes()
