#!/usr/bin/env python3
"""The moekit model in plain PyTorch: the speed peer of `moekit run` (text path) and an outside
check of its logits (issue #5), every head of the multimodal forward included.

It loads the same safetensors files as `moekit_model::weights::Weights::load` (f32, f16 or bf16)
and computes what `moekit_model::forward::Model::forward_text` computes, op for op:

    x = embed.text[ids]
    per layer l (elastic depth: a subset, in order):
        y = rms_norm(x)                                  x += the last sublayer's output first
        q, k, v = y.wq, y.wk, y.wv                       [T, Hq, D], [T, Hkv, D], [T, Hkv, D]
        q, k = rotary_3d(q, k, t = h = w = position)     NeoX half split, rope_sections
        x += causal_gqa_attention(q, k, v, 1/sqrt(D)).wo
        y = rms_norm(x)
        x += swiglu_mlp(y)                               the first `dense_first_layers` layers
          or routed_moe(y) + shared_mlp(y)               the others
    logits = rms_norm(x) . head.text                     [T, V]

and, for interleaved segments of text, visual codes and audio frames, what `Model::forward_mtp`
computes (`MoekitModel.forward`; the rules of model/src/input.rs and forward.rs):

    embeddings: text embed.text[id]; a visual code (2 bits - 1) . embed.visual [bits, H]; an
        audio frame sum_l embed.audio.{l}[code_l]
    positions (t, h, w) (`layout`): text and audio t = h = w = p, p += 1; a visual segment of
        F frames, scales (h_s, w_s) (finest (Hf, Wf)) from p0: cell (i, j) of scale s of frame f
        at (p0 + f, p0 + (2i + 1) Hf // (2 h_s), p0 + (2j + 1) Wf // (2 w_s)), then
        p = p0 + max(F, Hf, Wf); rows frame by frame, scale by scale, row-major
    mask (`block_mask`): causal, except that the rows of one (frame, scale) block see the whole
        block
    heads on y = rms_norm(x): text y . head.text over the text rows, visual y . head.visual
        over the visual rows; audio depth-wise over the audio rows: level l reads
        final_norm(x + sum_{m<l} embed.audio.m[c_m]), c_m the greedy code of level m
    MTP module j: a = norm_hidden(h_prev[i]) (first: the main model's x), e =
        norm_embed(embedding of row i + j + 1), x = a . proj[:H] + e . proj[H:], one causal
        decoder layer `mtp.j.layer` at the positions of rows 0..T-j-1, final_norm, head.text
        [T - j - 1, V]; the next module reads that layer's output x

Semantics taken from moekit's ops (ops/src/{glue,route,moe}.rs, reference/src):
- rms_norm: s = x + residual (rounded to the dtype), y = s / sqrt(mean(s^2) + eps) * w.
- rotary: pair f < D/2 rotates (x[f], x[f + D/2]) by pos * theta^(-2f/D); the position row is
  t for f < sections[0], h for the next sections[1], w for the rest.
- swiglu over [.., 2I]: silu(first half) * second half (the first half is the gate); the shared
  experts are one SwiGLU MLP of width shared_experts * shared_intermediate.
- routing: logits = y . router in f32 (f64 here in `check`), scores = softmax over the allowed
  experts (masked ones get 0) or sigmoid; selection = score + router_bias (selection only);
  top-k over allowed experts, ties to the lower index, ids by selection descending; weights =
  the chosen scores without bias, divided by their sum when `renormalize` (unless it is 0),
  times `route_scale`.
- moe: out[t] = shared(y)[t] + sum_j w[t, j] * down_e(swiglu(y[t] . up_e)), e = ids[t, j].

Modes:
    make-weights  write a safetensors file for a preset/config (every tensor moekit's loader
                  needs); `--stress` draws O(1) activations, non-unit norms and a non-zero
                  router bias, which the seeded init (bias 0, std 0.02) leaves untested.
    check         recompute a `dump_logits` file (model/examples/dump_logits.rs) in float64 on
                  the CPU and compare logits and routing (a `--mixed` dump: the layout, every
                  head, the routing and the audio codes); exit 0 on PASS, 1 on FAIL.
    selftest      the fast paths (the device, SDPA, torch._grouped_mm, bf16, the KV cache)
                  against the float64 CPU forward that `check` holds against moekit.
    bench         time prefill (T tokens) and a decode step (1 token, KV cache of C tokens) on
                  CUDA when there is one, eagerly and (`--graph`) as CUDA graph replays; one
                  JSON line each:
                  {"peer": "torch-model", "op": ..., "preset": ..., "tokens": ..., "ms": ...,
                   "tokens_per_s": ...}

Needs torch (>= 1.13; SDPA and torch._grouped_mm are used where the version has them) and
safetensors. See benches/peers/README.md for the commands.
"""
import argparse
import json
import math
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

# The presets of model/src/config.rs (`Preset::config`), field for field.
PRESETS = {
    "tiny": dict(
        name="tiny", hidden=128, layers=2, q_heads=2, kv_heads=1, head_dim=64, rope_base=1e6,
        rope_sections=[8, 12, 12], routed_experts=8, shared_experts=1, top_k=2,
        expert_intermediate=32, shared_intermediate=32, score="softmax", renormalize=True,
        route_scale=1.0, dense_first_layers=0, dense_intermediate=0, text_vocab=256,
        visual_code_bits=8, audio_codebook=64, audio_levels=2, mtp_depth=1,
        rms_eps=1e-6),
    "small": dict(
        name="small", hidden=1024, layers=8, q_heads=16, kv_heads=4, head_dim=64, rope_base=1e6,
        rope_sections=[8, 12, 12], routed_experts=64, shared_experts=1, top_k=6,
        expert_intermediate=512, shared_intermediate=1024, score="softmax", renormalize=True,
        route_scale=1.0, dense_first_layers=0, dense_intermediate=0, text_vocab=32000,
        visual_code_bits=16, audio_codebook=1024, audio_levels=4,
        mtp_depth=1, rms_eps=1e-6),
    "ernie-a3b": dict(
        name="ernie-a3b", hidden=2560, layers=28, q_heads=20, kv_heads=4, head_dim=128,
        rope_base=5e5, rope_sections=[16, 24, 24], routed_experts=64, shared_experts=2, top_k=6,
        expert_intermediate=1536, shared_intermediate=1536, score="softmax", renormalize=True,
        route_scale=1.0, dense_first_layers=1, dense_intermediate=12288, text_vocab=103424,
        visual_code_bits=32, audio_codebook=1024, audio_levels=8,
        mtp_depth=1, rms_eps=1e-5),
}

# The serde defaults of `ModelConfig` for fields a JSON file may leave out.
DEFAULTS = dict(rope_base=1e6, route_scale=1.0, dense_first_layers=0, dense_intermediate=0,
                mtp_depth=0, rms_eps=1e-6)

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
          "f64": torch.float64}


def f32(v):
    """`v` rounded to f32 (the Rust config holds rope_base, rms_eps, route_scale as f32)."""
    return struct.unpack("f", struct.pack("f", float(v)))[0]


def emit(**kw):
    print(json.dumps(kw), flush=True)


# --------------------------------------------------------------------------------------------
# Configuration and tensor specs
# --------------------------------------------------------------------------------------------

def load_config(preset=None, path=None, text=None):
    """A config dict from a preset name, a JSON file, or JSON text; checked like
    `ModelConfig::validate` (the checks the text path relies on)."""
    if text is not None:
        cfg = json.loads(text)
    elif path is not None:
        with open(path) as f:
            cfg = json.load(f)
    else:
        name = (preset or "tiny").strip().lower()
        if name not in PRESETS:
            raise SystemExit(f"no preset `{name}` (known: {', '.join(PRESETS)})")
        cfg = dict(PRESETS[name])
    cfg = {**DEFAULTS, **cfg}
    bad = []
    if cfg["q_heads"] % cfg["kv_heads"]:
        bad.append("q_heads is not a multiple of kv_heads")
    if sum(cfg["rope_sections"]) != cfg["head_dim"] // 2 or cfg["head_dim"] % 2:
        bad.append("rope_sections must sum to head_dim / 2")
    if not 1 <= cfg["top_k"] <= cfg["routed_experts"]:
        bad.append("top_k must be in 1..=routed_experts")
    if cfg["dense_first_layers"] > cfg["layers"]:
        bad.append("dense_first_layers exceeds layers")
    if cfg["score"] not in ("softmax", "sigmoid"):
        bad.append(f"score `{cfg['score']}` is not softmax or sigmoid")
    if bad:
        raise SystemExit(f"config `{cfg.get('name')}`: " + "; ".join(bad))
    return cfg


def layer_specs(cfg, prefix, dense):
    h, d = cfg["hidden"], cfg["head_dim"]
    out = [
        (f"{prefix}.attn_norm", [h], "ones"),
        (f"{prefix}.attn.wq", [h, cfg["q_heads"] * d], "normal"),
        (f"{prefix}.attn.wk", [h, cfg["kv_heads"] * d], "normal"),
        (f"{prefix}.attn.wv", [h, cfg["kv_heads"] * d], "normal"),
        (f"{prefix}.attn.wo", [cfg["q_heads"] * d, h], "normal"),
        (f"{prefix}.mlp_norm", [h], "ones"),
    ]
    if dense:
        di = cfg["dense_intermediate"]
        return out + [(f"{prefix}.mlp.up", [h, 2 * di], "normal"),
                      (f"{prefix}.mlp.down", [di, h], "normal")]
    e, i = cfg["routed_experts"], cfg["expert_intermediate"]
    out += [
        (f"{prefix}.router", [h, e], "normal"),
        (f"{prefix}.router_bias", [e], "zeros"),
        (f"{prefix}.experts.up", [e, h, 2 * i], "normal"),
        (f"{prefix}.experts.down", [e, i, h], "normal"),
    ]
    if cfg["shared_experts"] > 0:
        s = cfg["shared_experts"] * cfg["shared_intermediate"]
        out += [(f"{prefix}.shared.up", [h, 2 * s], "normal"),
                (f"{prefix}.shared.down", [s, h], "normal")]
    return out


def specs(cfg, text_only=False):
    """(name, shape, init) of every tensor of `moekit_model::weights::specs`, in its order;
    `text_only` keeps those the text path reads."""
    h, v = cfg["hidden"], cfg["text_vocab"]
    out = [("embed.text", [v, h], "normal")]
    if not text_only:
        out.append(("embed.visual", [cfg["visual_code_bits"], h], "normal"))
        out += [(f"embed.audio.{lv}", [cfg["audio_codebook"], h], "normal")
                for lv in range(cfg["audio_levels"])]
    for layer in range(cfg["layers"]):
        out += layer_specs(cfg, f"layers.{layer}", layer < cfg["dense_first_layers"])
    out += [("final_norm", [h], "ones"), ("head.text", [h, v], "normal")]
    if not text_only:
        out.append(("head.visual", [h, cfg["visual_code_bits"]], "normal"))
        out += [(f"head.audio.{lv}", [h, cfg["audio_codebook"]], "normal")
                for lv in range(cfg["audio_levels"])]
        for j in range(cfg["mtp_depth"]):
            out += [(f"mtp.{j}.norm_hidden", [h], "ones"), (f"mtp.{j}.norm_embed", [h], "ones"),
                    (f"mtp.{j}.proj", [2 * h, h], "normal")]
            out += layer_specs(cfg, f"mtp.{j}.layer", False)
    return out


def random_weights(cfg, seed=0, dtype=torch.float32, device="cpu", stress=False,
                   text_only=False):
    """Random weights for every spec. Plain: moekit's init (norms 1, bias 0, N(0, 0.02)),
    not the same numbers as `Weights::random` (another generator). `stress`: N(0, 1/fan_in)
    matrices (activations of order 1), norms 1 + N(0, 0.2), router bias N(0, 0.05)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    out = {}
    for name, shape, init in specs(cfg, text_only=text_only):
        if init == "ones":
            t = torch.ones(shape, dtype=dtype, device=device)
            if stress:
                t += 0.2 * torch.randn(shape, generator=g, dtype=dtype, device=device)
        elif init == "zeros":
            t = torch.zeros(shape, dtype=dtype, device=device)
            if stress:
                t = 0.05 * torch.randn(shape, generator=g, dtype=dtype, device=device)
        else:
            std = 0.02
            if stress:
                fan_in = shape[-2] if len(shape) >= 2 else shape[0]
                std = 1.0 / math.sqrt(fan_in)
            t = std * torch.randn(shape, generator=g, dtype=dtype, device=device)
        out[name] = t
    return out


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

def _probe_sdpa_gqa():
    if not hasattr(F, "scaled_dot_product_attention"):
        return False
    try:
        q = torch.zeros(1, 2, 1, 8)
        F.scaled_dot_product_attention(q, q[:, :1], q[:, :1], enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
HAS_SDPA_GQA = _probe_sdpa_gqa()


class KVCache:
    """Keys and values (after rotary) of the tokens seen so far, per layer, in buffers
    [capacity, Hkv, D] that grow by doubling; `length` tokens are valid."""

    def __init__(self):
        self.k, self.v, self.length = {}, {}, 0

    def append(self, layer, k, v):
        """Writes k, v [T, Hkv, D] at `length` (the caller advances it once per forward);
        returns the valid keys and values [length + T, Hkv, D]."""
        past, need = self.length, self.length + k.shape[0]
        buf = self.k.get(layer)
        if buf is None or buf.shape[0] < need:
            cap = max(need, 2 * (0 if buf is None else buf.shape[0]))
            for store, new in ((self.k, k), (self.v, v)):
                grown = new.new_empty((cap,) + tuple(new.shape[1:]))
                if buf is not None:
                    grown[:past] = store[layer][:past]
                store[layer] = grown
        self.k[layer][past:need] = k
        self.v[layer][past:need] = v
        return self.k[layer][:need], self.v[layer][:need]


class MoekitModel:
    """moekit's model in PyTorch: `forward_text` (`Model::forward_text`, with a KV cache, the
    bench's path) and `forward` (`Model::forward` / `forward_mtp` on segments of every
    modality, the check's path).

    `config`: a dict with the fields of `ModelConfig` (see `load_config`). `state_dict`: name
    -> tensor for at least the text-path tensors of `specs`; the visual, audio and MTP tensors
    are loaded where present (`forward` needs them).
    `dtype`: the compute dtype of activations and weights (as moekit's `--dtype`); norms,
    rotary, router logits and scores, SwiGLU and the MoE combine run in f32 (f64 when `dtype`
    is f64), like moekit's CPU backend. `moe`: "loop" (one index_select / matmul / index_add
    per expert), "grouped_mm" (`torch._grouped_mm`, CUDA, bf16) or "auto" (grouped_mm when it
    can run, else loop).
    """

    def __init__(self, config, state_dict, dtype=torch.float32, device="cpu", moe="auto"):
        self.cfg = cfg = config
        self.dtype, self.device = dtype, torch.device(device)
        self.acc = torch.float64 if dtype == torch.float64 else torch.float32
        self.w = {}
        required = {name for name, _, _ in specs(cfg, text_only=True)}
        for name, shape, _ in specs(cfg):
            if name not in state_dict:
                if name in required:
                    raise KeyError(f"weights: tensor `{name}` is missing")
                continue  # a visual / audio / MTP tensor: needed by `forward` only
            t = state_dict[name]
            if list(t.shape) != shape:
                raise ValueError(f"weights: tensor `{name}` has shape {list(t.shape)}, "
                                 f"the config implies {shape}")
            # NOTE: as `Model::new`: every tensor in the compute dtype except the routers'
            # correction biases, which stay f32 (f64 here in the f64 check).
            dt = self.acc if name.endswith("router_bias") else dtype
            self.w[name] = t.to(device=self.device, dtype=dt).contiguous()
        prefixes = [f"layers.{layer}" for layer in range(cfg["layers"])]
        prefixes += [f"mtp.{j}.layer" for j in range(cfg["mtp_depth"])]
        for prefix in prefixes:
            r = f"{prefix}.router"
            if r in self.w:  # the gate GEMM of the routing runs in f32 on dtype inputs
                self.w[r + ".acc"] = self.w[r].to(self.acc)
        self.eps = f32(cfg["rms_eps"])
        self.route_scale = f32(cfg["route_scale"])
        d = cfg["head_dim"]
        self.scale = f32(1.0 / f32(math.sqrt(d)))
        half, theta = d // 2, f32(cfg["rope_base"])
        s0, s1, _ = cfg["rope_sections"]
        self.inv_freq = torch.tensor([theta ** (-2.0 * f / d) for f in range(half)],
                                     dtype=torch.float64)
        self.rope_axis = torch.tensor([0 if f < s0 else 1 if f < s0 + s1 else 2
                                       for f in range(half)], device=self.device)
        self.inv_freq = self.inv_freq.to(self.device)
        self._masks = {}
        self.moe_impl = self._pick_moe(moe)

    # ---- helpers ---------------------------------------------------------------------------

    def _pick_moe(self, moe):
        if moe == "loop":
            return "loop"
        ok = (hasattr(torch, "_grouped_mm") and self.device.type == "cuda"
              and self.dtype == torch.bfloat16)
        if moe == "grouped_mm" and not ok:
            raise SystemExit("--moe grouped_mm needs torch._grouped_mm, CUDA and bf16")
        return "grouped_mm" if ok else "loop"

    def plan(self, layers=None, expert_mask=None, top_k=None):
        """The elastic sub-model, checked as `Model::plan` does: (layers, k, allowed [E] on the
        device, the number allowed)."""
        cfg = self.cfg
        n, e_count = cfg["layers"], cfg["routed_experts"]
        layers = list(range(n)) if layers is None else list(layers)
        if not layers or any(a >= b for a, b in zip(layers, layers[1:])) or \
                any(not 0 <= x < n for x in layers):
            raise ValueError(f"layers {layers} must be non-empty, strictly increasing, below {n}")
        k = cfg["top_k"] if top_k is None else int(top_k)
        if not 1 <= k <= cfg["top_k"]:
            raise ValueError(f"top_k {k} must be in 1..={cfg['top_k']}")
        mask = [True] * e_count if expert_mask is None else [bool(m) for m in expert_mask]
        if len(mask) != e_count or sum(mask) < k:
            raise ValueError(f"expert mask needs {e_count} entries and >= top_k = {k} kept")
        # NOTE: the device copy is kept per mask, so a forward makes no host-to-device copy
        # (nor a sync) for it; the same holds for everything else on the hot path.
        key = tuple(mask)
        if key not in self._masks:
            self._masks[key] = torch.tensor(mask, dtype=torch.bool, device=self.device)
        return layers, k, self._masks[key], sum(mask)

    def rms_norm(self, x, delta, name):
        """`rms_norm(delta + x)` with weight `name`: (y, the new residual stream)."""
        s = x if delta is None else (x + delta)  # rounded to the dtype, as moekit's residual_out
        a = s.to(self.acc)
        inv = torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + self.eps)
        return (a * inv * self.w[name].to(self.acc)).to(self.dtype), s

    def rotary(self, x, cos, sin):
        """NeoX half split: (x[f], x[f + D/2]) rotated by the angle of pair f. x [T, heads, D]."""
        half = x.shape[-1] // 2
        a = x.to(self.acc)
        x0, x1 = a[..., :half], a[..., half:]
        return torch.cat([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).to(self.dtype)

    def rope_tables(self, start, t):
        """cos, sin [T, 1, D/2] for text positions start..start+T on all three axes."""
        pos = torch.arange(start, start + t, dtype=torch.float64,
                           device=self.device).expand(3, t)  # (t, h, w)
        return self.rope_tables_of(pos)

    def rope_tables_of(self, pos):
        """cos, sin [T, 1, D/2] for Uni-RoPE positions `pos` [3, T] (t, h, w): pair f turns by
        pos[axis(f)] * inv_freq[f], axis(f) by `rope_sections`."""
        pos = torch.as_tensor(pos, device=self.device).to(torch.float64)
        angle = pos[self.rope_axis].T * self.inv_freq  # [T, D/2], f64 like moekit's CPU
        return angle.cos().to(self.acc).unsqueeze(1), angle.sin().to(self.acc).unsqueeze(1)

    def swiglu(self, h):
        """silu(h[:, :I]) * h[:, I:] in the accumulation dtype, rounded to the dtype."""
        i = h.shape[-1] // 2
        a = h.to(self.acc)
        return (F.silu(a[..., :i]) * a[..., i:]).to(self.dtype)

    def mlp(self, y, prefix):
        return self.swiglu(y @ self.w[f"{prefix}.up"]) @ self.w[f"{prefix}.down"]

    # ---- sublayers -------------------------------------------------------------------------

    def attention(self, prefix, y, cos, sin, cache, layer, mask=None):
        cfg = self.cfg
        t, d, hq, hkv = y.shape[0], cfg["head_dim"], cfg["q_heads"], cfg["kv_heads"]
        q = self.rotary((y @ self.w[f"{prefix}.attn.wq"]).view(t, hq, d), cos, sin)
        k = self.rotary((y @ self.w[f"{prefix}.attn.wk"]).view(t, hkv, d), cos, sin)
        v = (y @ self.w[f"{prefix}.attn.wv"]).view(t, hkv, d)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)
        o = self._sdpa(q, k, v, past, mask)  # [T, Hq, D]
        return o.reshape(t, hq * d) @ self.w[f"{prefix}.attn.wo"]

    def _sdpa(self, q, k, v, past, mask=None):
        """Causal (bottom-right aligned) GQA attention: query i sees keys 0..=past+i; or, with
        `mask` [Tq, Tk] bool, the keys it allows."""
        tq, hq, d = q.shape
        tk, hkv = k.shape[0], k.shape[1]
        group = hq // hkv
        qh, kh, vh = (z.transpose(0, 1).unsqueeze(0) for z in (q, k, v))  # [1, heads, T, D]
        explicit = mask is not None
        if explicit:
            if tuple(mask.shape) != (tq, tk):
                raise ValueError(f"mask {list(mask.shape)} for {tq} queries and {tk} keys")
        elif tq > 1:
            i = torch.arange(tq, device=q.device).unsqueeze(1)
            j = torch.arange(tk, device=q.device).unsqueeze(0)
            mask = j <= i + past  # [Tq, Tk]
        if self.dtype == torch.float64 or not HAS_SDPA:
            # The plain math (the check path): f64 scores, softmax, weighted values.
            kh, vh = kh.repeat_interleave(group, 1), vh.repeat_interleave(group, 1)
            s = (qh.to(self.acc) @ kh.to(self.acc).transpose(-1, -2)) * self.scale
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            o = (s.softmax(-1) @ vh.to(self.acc)).to(self.dtype)
        else:
            kw = dict(scale=self.scale)
            if HAS_SDPA_GQA:
                kw["enable_gqa"] = group > 1
            else:
                kh, vh = kh.repeat_interleave(group, 1), vh.repeat_interleave(group, 1)
            if mask is not None and past == 0 and not explicit:
                o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, **kw)
            else:
                o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, **kw)
        return o.squeeze(0).transpose(0, 1)

    def route(self, prefix, y, k, allowed, n_allowed):
        """(ids [T, k], weights [T, k] acc, selection margin [T]) as moekit's `route`; the
        margin is how far each token is from a tie that could change its ids."""
        logits = y.to(self.acc) @ self.w[f"{prefix}.router.acc"]  # [T, E]
        if self.cfg["score"] == "softmax":
            scores = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        else:
            scores = torch.sigmoid(logits) * allowed
        selection = (scores + self.w[f"{prefix}.router_bias"]).masked_fill(~allowed, float("-inf"))
        # NOTE: a stable descending sort puts equal selections in index order: ties go to the
        # lower expert, and ids come out by selection, then index (moekit's order).
        order = torch.sort(selection, dim=-1, descending=True, stable=True)
        ids = order.indices[:, :k]
        w = scores.gather(1, ids)
        if self.cfg["renormalize"]:
            total = w.sum(-1, keepdim=True)
            w = torch.where(total > 0, w / total, w)
        w = w * self.route_scale
        # The smallest gap between consecutive selections among the first k + 1: a near-tie
        # there may swap the order of the chosen experts or the chosen set.
        m = min(k, n_allowed - 1)
        v = order.values
        margin = (v[:, :m] - v[:, 1:m + 1]).min(1).values if m > 0 else \
            torch.full((y.shape[0],), float("inf"), dtype=self.acc, device=y.device)
        return ids, w, margin

    def moe(self, prefix, y, k, allowed, n_allowed):
        """Routed experts (weighted) plus shared experts: ([T, H] dtype, ids, margin)."""
        cfg = self.cfg
        t, e_count = y.shape[0], cfg["routed_experts"]
        ids, w, margin = self.route(prefix, y, k, allowed, n_allowed)
        out = torch.zeros(t, cfg["hidden"], dtype=self.acc, device=y.device)
        if cfg["shared_experts"] > 0:
            out += self.mlp(y, f"{prefix}.shared").to(self.acc)
        flat = ids.reshape(-1)
        token = torch.arange(t, device=y.device).repeat_interleave(k)
        order = torch.sort(flat, stable=True).indices  # expert-contiguous, by token, then slot
        # NOTE: not torch.bincount, which reads the largest id back to the host on CUDA.
        counts = torch.zeros(e_count, dtype=torch.long, device=y.device).index_add_(
            0, flat, torch.ones_like(flat))
        up, down = self.w[f"{prefix}.experts.up"], self.w[f"{prefix}.experts.down"]
        rows = token[order]
        wts = w.reshape(-1)[order].unsqueeze(1)
        if self.moe_impl == "grouped_mm":
            offs = torch.cumsum(counts, 0).to(torch.int32)
            xs = y.index_select(0, rows)
            a = self.swiglu(torch._grouped_mm(xs, up, offs=offs))
            ys = torch._grouped_mm(a, down, offs=offs)
            out.index_add_(0, rows, ys.to(self.acc) * wts)
        else:
            start = 0
            for e, c in enumerate(counts.tolist()):
                if c == 0:
                    continue
                r = rows[start:start + c]
                ys = self.swiglu(y.index_select(0, r) @ up[e]) @ down[e]
                out.index_add_(0, r, ys.to(self.acc) * wts[start:start + c])
                start += c
        return out.to(self.dtype), ids, margin

    # ---- the forward -----------------------------------------------------------------------

    def layer(self, prefix, x, delta, cos, sin, k, allowed, n_allowed, cache=None,
              cache_key=None, mask=None):
        """One decoder layer under `prefix` on the residual stream (x, the pending delta):
        (x, the new delta, (ids [T, k], margin [T]) of its MoE or None for a dense layer).
        `mask` [T, past + T] bool, or None for causal."""
        y, x = self.rms_norm(x, delta, f"{prefix}.attn_norm")
        delta = self.attention(prefix, y, cos, sin, cache, cache_key, mask)
        y, x = self.rms_norm(x, delta, f"{prefix}.mlp_norm")
        if f"{prefix}.mlp.up" in self.w:  # the first `dense_first_layers` layers
            return x, self.mlp(y, f"{prefix}.mlp"), None
        delta, chosen, margin = self.moe(prefix, y, k, allowed, n_allowed)
        return x, delta, (chosen, margin)

    @torch.no_grad()
    def forward_text(self, ids, layers=None, expert_mask=None, top_k=None, cache=None,
                     routing=None, last_only=False):
        """Next-token logits [T, V] (f32, or f64 in the f64 check) of text `ids` [T] at
        positions cache.length.. (0.. without a cache), through the elastic sub-model; with
        `last_only`, [1, V] of the last position only (a serving prefill).
        `routing`, a list, receives (layer, ids [T, k], margin [T]) for every MoE layer run."""
        cfg = self.cfg
        ids = torch.as_tensor(ids, dtype=torch.long)
        t = ids.numel()
        if t == 0:
            raise ValueError("no tokens")
        if ids.device.type == "cpu" and (int(ids.min()) < 0 or int(ids.max()) >= cfg["text_vocab"]):
            # NOTE: checked on host ids only; device ids are the caller's (no sync per call).
            raise ValueError(f"token ids outside the vocabulary 0..{cfg['text_vocab']}")
        layers, k, allowed, n_allowed = self.plan(layers, expert_mask, top_k)
        ids = ids.to(self.device)
        start = cache.length if cache is not None else 0
        cos, sin = self.rope_tables(start, t)
        x, delta = self.w["embed.text"].index_select(0, ids), None
        for layer in layers:
            x, delta, r = self.layer(f"layers.{layer}", x, delta, cos, sin, k, allowed,
                                     n_allowed, cache=cache, cache_key=layer)
            if r is not None and routing is not None:
                routing.append((layer, *r))
        if cache is not None:
            cache.length += t
        y, _ = self.rms_norm(x, delta, "final_norm")
        if last_only:
            y = y[-1:]
        return (y @ self.w["head.text"]).to(self.acc)

    # ---- the multimodal forward (`Model::forward`, `Model::forward_mtp`) -------------------

    def embed(self, segments):
        """The input embeddings [T, H] (dtype) of `segments` (see `layout`): text ids through
        embed.text; a visual code's bits as ±1 times embed.visual [bits, H]; an audio frame the
        sum over levels l of embed.audio.{l}[code_l]."""
        cfg, parts = self.cfg, []
        for seg in segments:
            (kind, body), = seg.items()
            if kind == "text":
                ids = torch.as_tensor(body, dtype=torch.long, device=self.device)
                parts.append(self.w["embed.text"].index_select(0, ids))
            elif kind == "visual":
                bits = torch.as_tensor(body["bits"], dtype=torch.long, device=self.device)
                signs = (2 * bits - 1).to(self.dtype).view(-1, cfg["visual_code_bits"])
                parts.append(signs @ self.w["embed.visual"])
            else:
                levels = cfg["audio_levels"]
                codes = torch.as_tensor(body["codes"], dtype=torch.long,
                                        device=self.device).view(-1, levels)
                s = sum(self.w[f"embed.audio.{lv}"].index_select(0, codes[:, lv]).to(self.acc)
                        for lv in range(levels))
                parts.append(s.to(self.dtype))
        return torch.cat(parts)

    def audio_heads(self, xa, forced=None):
        """The depth-wise audio heads on the final hidden states xa [n, H] (before the final
        norm) of the audio rows: level 0 reads final_norm(xa), level l final_norm(xa +
        sum_{m<l} embed.audio.m[c_m]). c_m: `forced[:, m]` when given (the check follows
        moekit's codes, so one near-tie cannot derail the levels after it), else this model's
        greedy codes. Returns (logits per level [n, codebook], own greedy codes [n, levels]:
        the first index of the maximum, margins [n, levels]: top-1 minus top-2 logit)."""
        cfg = self.cfg
        levels, cb = cfg["audio_levels"], cfg["audio_codebook"]
        n = xa.shape[0]
        codes = torch.zeros(n, levels, dtype=torch.long, device=xa.device)
        margins = torch.zeros(n, levels, dtype=self.acc, device=xa.device)
        logits = []
        for lv in range(levels):
            if lv > 0:
                c = (forced if forced is not None else codes)[:, lv - 1].to(xa.device)
                emb = self.w[f"embed.audio.{lv - 1}"].index_select(0, c)
                xa = (xa.to(self.acc) + emb.to(self.acc)).to(self.dtype)  # rounded, as moekit
            y, _ = self.rms_norm(xa, None, "final_norm")
            lg = (y @ self.w[f"head.audio.{lv}"]).to(self.acc)
            if n:
                codes[:, lv] = lg.argmax(1)  # the first index of equals, as moekit's argmax
                if cb > 1:
                    top = lg.topk(2, dim=1).values
                    margins[:, lv] = top[:, 0] - top[:, 1]
            logits.append(lg)
        return logits, codes, margins

    def mtp(self, h, x0, pos, k, allowed, n_allowed, routing=None):
        """The multi-token-prediction modules on the main model's final hidden states h [T, H]
        (pre-norm): module j reads the previous hidden state of row i (first: h) through
        mtp.j.norm_hidden and the input embedding of row i + j + 1 through mtp.j.norm_embed,
        x = a . proj[:H] + e . proj[H:], one causal decoder layer at the positions of rows
        0..n, final_norm, head.text: [T - j - 1, V]; the next module reads that layer's output
        (pre-norm). `routing` receives (j, ids, margin) of each module's MoE."""
        cfg, hd, t = self.cfg, self.cfg["hidden"], h.shape[0]
        out, prev = [], None
        for j in range(cfg["mtp_depth"]):
            n = t - j - 1
            if n <= 0:
                break
            p = f"mtp.{j}"
            hid = h if prev is None else prev
            a, _ = self.rms_norm(hid[:n], None, f"{p}.norm_hidden")
            e, _ = self.rms_norm(x0[j + 1:j + 1 + n], None, f"{p}.norm_embed")
            proj = self.w[f"{p}.proj"]
            x, delta = a @ proj[:hd], e @ proj[hd:]
            cos, sin = self.rope_tables_of(pos[:, :n])
            x, delta, r = self.layer(f"{p}.layer", x, delta, cos, sin, k, allowed, n_allowed)
            if r is not None and routing is not None:
                routing.append((j, *r))
            y, x = self.rms_norm(x, delta, "final_norm")
            out.append((y @ self.w["head.text"]).to(self.acc))
            prev = x
        return out

    @torch.no_grad()
    def forward(self, segments, layers=None, expert_mask=None, top_k=None, routing=None,
                mtp=False, audio_codes=None, mtp_routing=None):
        """`Model::forward` (`mtp`: `Model::forward_mtp`) of one sequence of `segments` (see
        `layout`) from position 0 through the elastic sub-model: a dict of every head (text,
        visual over their rows; the audio chain over the audio rows; MTP), the rows of each,
        the layout. `routing` receives (layer, ids [T, k], margin [T]) per MoE layer;
        `audio_codes` [audio rows, levels] forces the codes the audio chain conditions on."""
        cfg = self.cfg
        lay = layout(cfg, segments)
        layers, k, allowed, n_allowed = self.plan(layers, expert_mask, top_k)
        pos = torch.tensor(lay["positions"], dtype=torch.long, device=self.device)
        cos, sin = self.rope_tables_of(pos)
        mask = block_mask(lay).to(self.device)
        x0 = self.embed(segments)
        x, delta = x0, None
        for layer in layers:
            x, delta, r = self.layer(f"layers.{layer}", x, delta, cos, sin, k, allowed,
                                     n_allowed, mask=mask)
            if r is not None and routing is not None:
                routing.append((layer, *r))
        y, x = self.rms_norm(x, delta, "final_norm")
        rows = {m: torch.tensor([i for i, mm in enumerate(lay["modality"]) if mm in ms],
                                dtype=torch.long, device=self.device)
                for m, ms in (("text", ("text",)), ("visual", ("image", "video")),
                              ("audio", ("audio",)))}
        out = dict(layout=lay, positions=pos, mask=mask,
                   text_rows=rows["text"], visual_rows=rows["visual"], audio_rows=rows["audio"])
        out["text_logits"] = (y[rows["text"]] @ self.w["head.text"]).to(self.acc)
        out["visual_logits"] = (y[rows["visual"]] @ self.w["head.visual"]).to(self.acc)
        (out["audio_logits"], out["audio_codes"],
         out["audio_margins"]) = self.audio_heads(x[rows["audio"]], audio_codes)
        out["mtp_logits"] = self.mtp(x, x0, pos, k, allowed, n_allowed, mtp_routing) if mtp else []
        return out


def layout(cfg, segments, start=0):
    """moekit's `input::Layout` of `segments` from position `start`, from the rules in its
    module doc (not from its code). Segments as in the dump's `segments` metadata:
    {"text": [ids]}, {"visual": {"frames", "scales": [[h, w], ..] coarse to fine,
    "blocks": [start, end] or None, "bits": [tokens * bits]}}, {"audio": {"codes":
    [frames * levels]}}.

    Positions (p: the next free one): text and audio t = h = w = p, p += 1 per row. A visual
    segment of F frames, scales (h_s, w_s), finest (Hf, Wf), from p0: cell (i, j) of scale s of
    frame f at t = p0 + f, h = p0 + (2i + 1) Hf // (2 h_s), w = p0 + (2j + 1) Wf // (2 w_s);
    then p = p0 + max(F, Hf, Wf). Rows frame by frame, scale by scale (coarse first), each
    row-major; each (frame, scale) a block (block f * S + s). A segment whose blocks do not
    start at 0 continues the one before it, at its positions (p0 = p - extent)."""
    pos = ([], [], [])
    lay = dict(rows=0, segments=[], modality=[], blocks=[], next_position=start)
    prev_visual = None
    for seg in segments:
        (kind, body), = seg.items()
        r0, p = lay["rows"], lay["next_position"]
        if kind in ("text", "audio"):
            if kind == "text":
                n = len(body)
                if any(not 0 <= i < cfg["text_vocab"] for i in body):
                    raise ValueError("token id outside the vocabulary")
                mod = "text"
            else:
                levels, codes = cfg["audio_levels"], body["codes"]
                if not codes or len(codes) % levels:
                    raise ValueError(f"audio segment of {len(codes)} codes, {levels} levels")
                if any(not 0 <= c < cfg["audio_codebook"] for c in codes):
                    raise ValueError("audio code outside the codebook")
                n, mod = len(codes) // levels, "audio"
            for axis in pos:
                axis.extend(range(p, p + n))
            lay["next_position"] = p + n
        elif kind == "visual":
            frames, scales = body["frames"], [tuple(s) for s in body["scales"]]
            n_scales = len(scales)
            held = (0, frames * n_scales) if body.get("blocks") is None else tuple(body["blocks"])
            if frames <= 0 or not scales or any(h <= 0 or w <= 0 for h, w in scales) or \
                    not 0 <= held[0] < held[1] <= frames * n_scales:
                raise ValueError(f"bad visual segment: frames {frames}, scales {scales}, "
                                 f"blocks {held}")
            if held[0] > 0:
                ok = prev_visual is not None and prev_visual[0] == frames and \
                    prev_visual[1] == scales and prev_visual[2] == held[0]
                if not (ok or (prev_visual is None and lay["rows"] == 0)):
                    raise ValueError(f"visual blocks {held} do not continue the segment before")
            hf, wf = scales[-1]
            extent = max(frames, hf, wf)
            p0 = p if held[0] == 0 else p - extent
            row = r0
            for blk in range(*held):
                f, (hs, ws) = blk // n_scales, scales[blk % n_scales]
                for i in range(hs):
                    for j in range(ws):
                        pos[0].append(p0 + f)
                        pos[1].append(p0 + (2 * i + 1) * hf // (2 * hs))
                        pos[2].append(p0 + (2 * j + 1) * wf // (2 * ws))
                lay["blocks"].append((row, row + hs * ws))
                row += hs * ws
            n = row - r0
            if len(body["bits"]) != n * cfg["visual_code_bits"] or \
                    any(b not in (0, 1) for b in body["bits"]):
                raise ValueError("visual bits: wrong count or not 0/1")
            lay["next_position"] = p0 + extent
            mod = "image" if frames == 1 else "video"
        else:
            raise ValueError(f"unknown segment kind `{kind}`")
        prev_visual = (frames, scales, held[1]) if kind == "visual" else None
        lay["modality"] += [mod] * n
        lay["segments"].append((r0, r0 + n))
        lay["rows"] += n
    if lay["rows"] == 0:
        raise ValueError("no tokens")
    lay["positions"] = [list(a) for a in pos]
    return lay


def block_mask(lay):
    """The attention mask [T, T] bool (True: query row i sees key row j): causal, except that
    the rows of one visual (frame, scale) block see the whole block: i >= start(j), start(j)
    the first row of j's block (j itself outside blocks)."""
    t = lay["rows"]
    start = torch.arange(t)
    for a, b in lay["blocks"]:
        start[a:b] = a
    return torch.arange(t).unsqueeze(1) >= start.unsqueeze(0)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def read_safetensors(path):
    """(tensors on the CPU in the file's dtypes, metadata dict)."""
    from safetensors import safe_open
    out = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for name in f.keys():
            out[name] = f.get_tensor(name)
    return out, meta


def parse_experts(spec, n):
    """`0-5,7` -> a mask over n experts (moekit's `--experts`)."""
    mask = [False] * n
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        lo, hi = int(lo), int(hi or lo)
        if lo > hi or hi >= n:
            raise SystemExit(f"--experts: `{part}` is not a range inside 0..{n}")
        for e in range(lo, hi + 1):
            mask[e] = True
    return mask


def pick_config(args, meta=None):
    if getattr(args, "config", None):
        return load_config(path=args.config)
    if getattr(args, "preset", None):
        return load_config(preset=args.preset)
    if meta and "config" in meta:
        return load_config(text=meta["config"])
    return load_config(preset="tiny")


# --------------------------------------------------------------------------------------------
# make-weights
# --------------------------------------------------------------------------------------------

def cmd_make_weights(args):
    from safetensors.torch import save_file
    cfg = pick_config(args)
    w = random_weights(cfg, seed=args.seed, stress=args.stress)
    w = {n: t.to(DTYPES[args.dtype]).contiguous() for n, t in w.items()}
    save_file(w, args.out, metadata={"config": json.dumps(cfg), "stress": str(args.stress)})
    params = sum(t.numel() for t in w.values())
    print(f"wrote {args.out} ({len(w)} tensors, {params / 1e6:.2f} M parameters, {args.dtype}"
          f"{', stress' if args.stress else ''})")


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------

# Tolerances, by the dtype moekit ran in.
# f32: max|torch - moekit| / max|torch| against the float64 forward. Every op of moekit's CPU
# backend rounds to f32 (unit roundoff 6e-8) and accumulates in f32 (or f64), so its logits sit
# ~1e-6 of their scale from the f64 values (measured: 4e-7 to 3e-6); 1e-3 leaves three orders
# of margin for depth and attention's exp, while a semantic slip (a rotary pairing, the SwiGLU
# halves, the renormalisation, the bias in the weights, a routing choice) moves the logits by
# 2e-2 or more even on moekit's small init (measured, see benches/peers/README.md).
# f16 / bf16: every activation is rounded (2^-11 / 2^-8) and near-tie routing choices may flip,
# so the f64 forward is no sharp reference (bf16 stress weights: 4-17% off it, for moekit and
# torch alike). The check instead runs this model in the same dtype, which rounds at the same
# points as moekit's CPU backend, and bounds the global relative error ||torch - moekit|| /
# ||moekit|| (measured 0.4-0.8% for bf16); where this torch build cannot run that dtype on the
# CPU, the f64 forward with a loose global bound stands in.
TOLERANCE = {"f32": 1e-3, "f16": 1e-2, "bf16": 3e-2}
FALLBACK_TOLERANCE = 2e-1


def compare_routing(dump, routing, tie, prefix="routing"):
    """moekit's routing.{layer} against this model's: (token-layers compared, differing beyond
    near-ties, near-ties, missing layers)."""
    bad, near_ties, missing = 0, 0, []
    for layer, chosen, margin in routing:
        name = f"{prefix}.{layer}"
        if name not in dump:
            missing.append(name)
            continue
        want = dump[name].to(torch.long)
        if want.shape != chosen.shape:
            print(f"  {name}: shape {list(want.shape)} in the dump, {list(chosen.shape)} here")
            bad += chosen.shape[0]
            continue
        rows = (chosen.cpu() != want).any(1)
        near = rows & (margin.cpu() < tie)
        near_ties += int(near.sum())
        bad += int((rows & ~near).sum())
        if rows.any():
            r = int(rows.nonzero()[0])
            print(f"  layer {layer}: {int(rows.sum())} tokens routed differently (first: token "
                  f"{r}, moekit {want[r].tolist()}, torch {chosen[r].tolist()}, "
                  f"selection margin {margin[r].item():.3g})")
    extra = sorted(set(k for k in dump if k.startswith(prefix + ".")) -
                   {f"{prefix}.{layer}" for layer, _, _ in routing})
    missing += [f"{e} (in the dump, not run here)" for e in extra]
    n = sum(c.shape[0] for _, c, _ in routing)
    return n, bad, near_ties, missing


def check_mixed(args, dump, meta, cfg, weights, elastic, run_dtype):
    """The check of a `dump_logits --mixed` file (`Model::forward_mtp` on segments of every
    modality): the layout exactly, every head by the tolerance of its dtype, the routing and
    the audio codes exactly except at near-ties."""
    segments = json.loads(meta["segments"])
    problems = []
    tie = 1e-5 if run_dtype == "f32" else 1e-2

    # The layout: positions, blocks and each head's rows, derived here from the module doc of
    # model/src/input.rs, against moekit's.
    lay = layout(cfg, segments)
    t = lay["rows"]
    ours_pos = torch.tensor(lay["positions"], dtype=torch.long)
    if "positions" in dump:
        theirs_pos = dump["positions"].to(torch.long)
        if theirs_pos.shape != ours_pos.shape:
            problems.append(f"positions {list(theirs_pos.shape)} in the dump, "
                            f"{list(ours_pos.shape)} here")
        else:
            cols = (theirs_pos != ours_pos).any(0).nonzero().flatten().tolist()
            if cols:
                c = cols[0]
                problems.append(f"positions differ at {len(cols)} rows (first: row {c}, "
                                f"{lay['modality'][c]}, moekit (t, h, w) "
                                f"{theirs_pos[:, c].tolist()}, here {ours_pos[:, c].tolist()})")
    if "blocks" in dump:
        theirs_blocks = [tuple(b) for b in dump["blocks"].tolist()]
        if theirs_blocks != lay["blocks"]:
            problems.append(f"bidirectional blocks: moekit {theirs_blocks}, here {lay['blocks']}")

    routing, mtp_routing = [], []
    t0 = time.perf_counter()
    model = MoekitModel(cfg, weights, dtype=torch.float64, moe="loop")
    forced = dump["audio_codes"].to(torch.long) if "audio_codes" in dump else None
    out = model.forward(segments, routing=routing, mtp=True, audio_codes=forced,
                        mtp_routing=mtp_routing, **elastic)
    secs = time.perf_counter() - t0
    for name in ("text_rows", "visual_rows", "audio_rows"):
        if name in dump and dump[name].to(torch.long).tolist() != out[name].tolist():
            problems.append(f"{name}: moekit {dump[name].tolist()}, here {out[name].tolist()}")

    heads = [("text_logits", out["text_logits"]), ("visual_logits", out["visual_logits"])]
    heads += [(f"audio_logits.{lv}", a) for lv, a in enumerate(out["audio_logits"])]
    heads += [(f"mtp_logits.{j}", m) for j, m in enumerate(out["mtp_logits"])]
    extra = sorted(k for k in dump if k.split(".")[0] in ("audio_logits", "mtp_logits")
                   and k not in dict(heads))
    if extra:
        problems.append(f"heads in the dump not computed here: {extra}")

    layers, top_k, mask = elastic["layers"], elastic["top_k"], elastic["expert_mask"]
    print(f"model      {cfg['name']}: layers {layers or list(range(cfg['layers']))}, "
          f"top-{top_k or cfg['top_k']}, experts "
          f"{'all' if mask is None else [e for e, m in enumerate(mask) if m]}")
    kinds = [next(iter(s)) for s in segments]
    print(f"dump       {args.logits}: mixed, {t} rows ({len(out['text_rows'])} text, "
          f"{len(out['visual_rows'])} visual in {len(lay['blocks'])} blocks, "
          f"{len(out['audio_rows'])} audio; segments {kinds}) from moekit "
          f"({meta.get('backend', '?')}, {run_dtype}); torch {torch.__version__}, f64 CPU "
          f"forward {secs * 1e3:.1f} ms")

    worst = 0.0
    results = {}
    for name, ours in heads:
        if name not in dump:
            problems.append(f"the dump has no {name}")
            continue
        theirs = dump[name].to(torch.float64)
        if theirs.shape != ours.shape:
            problems.append(f"{name}: shape {list(theirs.shape)} in the dump, "
                            f"{list(ours.shape)} here")
            continue
        results[name] = theirs
        if ours.numel() == 0:
            print(f"{name:<16} empty")
            continue
        diff = (ours - theirs).abs()
        scale = ours.abs().max().item()
        rel = diff.max().item() / scale if scale > 0 else diff.max().item()
        worst = max(worst, rel)
        if name == "visual_logits":
            agree = ((ours > 0) == (theirs > 0)).double().mean().item()
            what = "bit-sign agreement"
        else:
            agree = (ours.argmax(1) == theirs.argmax(1)).double().mean().item()
            what = "top-1 agreement"
        fro = ((ours - theirs).norm() / ours.norm()).item()
        print(f"{name:<16} {list(ours.shape)}: max |ref| {scale:.4g}; max abs err "
              f"{diff.max().item():.3e}; max abs err / max |ref| {rel:.3e}; global rel err "
              f"{fro:.3e}; {what} {agree * 100:.1f}%")

    # Routing of every MoE layer of the main model (the MTP layers' routing is not dumped).
    n_rows, bad_routing, near_ties, missing = compare_routing(dump, routing, tie)
    problems += [f"routing: {m} missing" for m in missing]
    print(f"routing    {n_rows} token-layers compared: {bad_routing} differ, "
          f"{near_ties} at near-ties (margin < {tie:g})")
    if mtp_routing:
        m = min(float(r[2].min()) for r in mtp_routing)
        print(f"mtp route  not in the dump; smallest selection margin here {m:.3g}")

    # The audio codes: moekit's greedy choice at each level against this model's (each level
    # conditioned on moekit's codes of the levels before it, as the logits above).
    bad_codes, near_codes = 0, 0
    if forced is not None and forced.numel():
        own, margins = out["audio_codes"].cpu(), out["audio_margins"].cpu()
        if own.shape != forced.shape:
            problems.append(f"audio_codes {list(forced.shape)} in the dump, {list(own.shape)} here")
        else:
            differ = own != forced
            near = differ & (margins < tie)
            near_codes, bad_codes = int(near.sum()), int((differ & ~near).sum())
            if differ.any():
                r, lv = (int(v) for v in differ.nonzero()[0])
                print(f"  audio row {r} level {lv}: moekit code {int(forced[r, lv])}, torch "
                      f"{int(own[r, lv])} (margin {margins[r, lv].item():.3g})")
            print(f"audio      {forced.numel()} codes compared ({forced.shape[0]} rows x "
                  f"{forced.shape[1]} levels): {bad_codes} differ, {near_codes} at near-ties; "
                  f"smallest top-2 margin {margins.min().item():.3g}")

    for p in problems:
        print(f"  problem: {p}")
    if run_dtype == "f32":
        tol = args.tol if args.tol is not None else TOLERANCE["f32"]
        value, what = worst, "worst head's max abs err / max |ref|"
    else:
        # As the text check: this model in the same dtype, the global error of every head.
        try:
            same = MoekitModel(cfg, weights, dtype=DTYPES[run_dtype], moe="loop").forward(
                segments, mtp=True, audio_codes=forced, **elastic)
            value = 0.0
            for name, ours in [("text_logits", same["text_logits"]),
                               ("visual_logits", same["visual_logits"])] + \
                    [(f"audio_logits.{lv}", a) for lv, a in enumerate(same["audio_logits"])] + \
                    [(f"mtp_logits.{j}", m) for j, m in enumerate(same["mtp_logits"])]:
                if name in results and ours.numel():
                    theirs = results[name]
                    g = ((ours.to(torch.float64) - theirs).norm() / theirs.norm()).item()
                    print(f"vs {run_dtype:<6}  {name:<16} global rel err {g:.3e}")
                    value = max(value, g)
            if forced is not None and forced.numel():
                flips = int((same["audio_codes"].cpu() != forced).sum())
                print(f"vs {run_dtype:<6}  audio codes: {flips} of {forced.numel()} differ "
                      f"(reported, not counted)")
            tol = args.tol if args.tol is not None else TOLERANCE[run_dtype]
            what = f"worst head's global rel err vs torch in {run_dtype}"
        except RuntimeError as e:
            print(f"NOTE: torch {torch.__version__} cannot run {run_dtype} on the CPU "
                  f"({str(e).splitlines()[0]}); bounding the global error against f64 instead")
            value = max((((o - results[n]).norm() / o.norm()).item()
                         for n, o in heads if n in results and o.numel()), default=0.0)
            tol = args.tol if args.tol is not None else FALLBACK_TOLERANCE
            what = "worst head's global rel err vs f64"
        # Routing and code flips are expected at margins a few roundings wide here.
        bad_routing = bad_codes = 0
    ok = value <= tol and not problems and bad_routing == 0 and bad_codes == 0
    notes = [f"{bad_routing} routing differences"] * bool(bad_routing) + \
        [f"{bad_codes} audio code differences"] * bool(bad_codes) + \
        [f"{len(problems)} layout/shape problems"] * bool(problems)
    print(f"{'PASS' if ok else 'FAIL'}: {what} = {value:.3e} {'<=' if value <= tol else '>'} "
          f"tol {tol:g}{'; ' + ', '.join(notes) if notes else ''}")
    return 0 if ok else 1


def cmd_check(args):
    dump, meta = read_safetensors(args.logits)
    cfg = pick_config(args, meta)
    if "config" in meta and (args.config or args.preset):
        theirs = {**DEFAULTS, **json.loads(meta["config"])}
        if theirs != cfg:
            diff = sorted(k for k in set(cfg) | set(theirs) if cfg.get(k) != theirs.get(k))
            print(f"WARNING: the given config differs from the dump's in {diff}")
    weights, _ = read_safetensors(args.weights)
    layers = [int(x) for x in meta["layers"].split(",")] if meta.get("layers") else None
    top_k = int(meta["top_k"]) if meta.get("top_k") else None
    mask = None
    if meta.get("experts"):
        kept = {int(x) for x in meta["experts"].split(",")}
        mask = [e in kept for e in range(cfg["routed_experts"])]
    run_dtype = meta.get("dtype", "f32")
    elastic = dict(layers=layers, expert_mask=mask, top_k=top_k)
    if "segments" in meta:  # a `dump_logits --mixed` file
        return check_mixed(args, dump, meta, cfg, weights, elastic, run_dtype)
    ids = dump["ids"].to(torch.long)
    theirs = dump["logits"].to(torch.float64)

    routing = []
    t0 = time.perf_counter()
    ours = MoekitModel(cfg, weights, dtype=torch.float64, moe="loop").forward_text(
        ids, routing=routing, **elastic)
    secs = time.perf_counter() - t0
    if ours.shape != theirs.shape:
        print(f"FAIL: logits shape {list(theirs.shape)} in the dump, {list(ours.shape)} here")
        return 1

    diff = (ours - theirs).abs()
    scale = ours.abs().max().item()
    max_abs = diff.max().item()
    rel = max_abs / scale
    # Elementwise relative error over the logits that are not near zero (>= 1% of the scale).
    big = ours.abs() >= 0.01 * scale
    elem_rel = (diff[big] / ours.abs()[big]).max().item()
    where = divmod(int(diff.argmax()), ours.shape[1])
    top1 = (ours.argmax(1) == theirs.argmax(1)).float().mean().item()
    fro64 = ((ours - theirs).norm() / ours.norm()).item()

    # Routing: the same experts in the same order, except at near-ties.
    tie = 1e-5 if run_dtype == "f32" else 1e-2
    bad_routing, near_ties = 0, 0
    for layer, chosen, margin in routing:
        name = f"routing.{layer}"
        if name not in dump:
            print(f"FAIL: the dump has no {name}")
            return 1
        want = dump[name].to(torch.long)
        rows = (chosen.cpu() != want).any(1)
        near = rows & (margin.cpu() < tie)
        near_ties += int(near.sum())
        bad_routing += int((rows & ~near).sum())
        if rows.any():
            r = int(rows.nonzero()[0])
            print(f"  layer {layer}: {int(rows.sum())} tokens routed differently (first: token "
                  f"{r}, moekit {want[r].tolist()}, torch {chosen[r].tolist()}, "
                  f"selection margin {margin[r].item():.3g})")

    n_rows = sum(c.shape[0] for _, c, _ in routing)
    print(f"model      {cfg['name']}: layers {layers or list(range(cfg['layers']))}, "
          f"top-{top_k or cfg['top_k']}, experts "
          f"{'all' if mask is None else [e for e, m in enumerate(mask) if m]}")
    print(f"dump       {args.logits}: logits {list(theirs.shape)} from moekit "
          f"({meta.get('backend', '?')}, {run_dtype}); torch {torch.__version__}, f64 CPU "
          f"forward {secs * 1e3:.1f} ms")
    print(f"vs f64     max |ref| {scale:.4g}; max abs err {max_abs:.3e} at {where}; "
          f"max abs err / max |ref| {rel:.3e}; max elementwise rel err (|ref| >= 1% of max) "
          f"{elem_rel:.3e}; global rel err {fro64:.3e}; top-1 agreement {top1 * 100:.1f}%")
    print(f"routing    {n_rows} token-layers compared: {bad_routing} differ, "
          f"{near_ties} at near-ties (margin < {tie:g})")

    if run_dtype == "f32":
        tol = args.tol if args.tol is not None else TOLERANCE["f32"]
        ok = rel <= tol and bad_routing == 0
        what, value = "max abs err / max |ref|", rel
    else:
        # NOTE: moekit routed on rounded hidden states here, so routing differences at margins
        # a few roundings wide are expected; the logits' bound decides.
        try:
            same = MoekitModel(cfg, weights, dtype=DTYPES[run_dtype], moe="loop").forward_text(
                ids, **elastic).to(torch.float64)
            value = ((same - theirs).norm() / theirs.norm()).item()
            tol = args.tol if args.tol is not None else TOLERANCE[run_dtype]
            what = f"global rel err vs torch in {run_dtype}"
            print(f"vs {run_dtype:<6}  global rel err ||torch - moekit|| / ||moekit|| {value:.3e}; "
                  f"max abs err {(same - theirs).abs().max().item():.3e}")
        except RuntimeError as e:  # e.g. no f16 matmul on the CPU in old torch builds
            print(f"NOTE: torch {torch.__version__} cannot run {run_dtype} on the CPU "
                  f"({str(e).splitlines()[0]}); bounding the global error against f64 instead")
            value, tol = fro64, args.tol if args.tol is not None else FALLBACK_TOLERANCE
            what = "global rel err vs f64"
        ok = value <= tol
    note = f"; {bad_routing} routing differences" if bad_routing else ""
    print(f"{'PASS' if ok else 'FAIL'}: {what} = {value:.3e} {'<=' if value <= tol else '>'} "
          f"tol {tol:g}{note}")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
# selftest
# --------------------------------------------------------------------------------------------

def cmd_selftest(args):
    """The fast paths (the device, SDPA, torch._grouped_mm, bf16, the KV cache) against this
    file's own float64 CPU forward, the path `check` holds against moekit.

    f32 runs on stress weights (activations of order 1, non-zero router bias) and is bounded
    by the max error, as in `check`. bf16 runs on moekit's init (std 0.02, bias 0) and is
    bounded by the global relative error: on stress weights bf16 is ill-conditioned (moekit's
    own CPU bf16 forward lands 4-17% from f64 there), and a near-tie routing flip moves a few
    logits much more than the rest."""
    cfg = pick_config(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ids = torch.randint(0, cfg["text_vocab"], (args.tokens,),
                        generator=torch.Generator().manual_seed(args.seed))
    moes = ["loop"] + (["grouped_mm"] if device.startswith("cuda")
                       and hasattr(torch, "_grouped_mm") else [])
    failed = 0
    # NOTE: bf16 bound 5e-2: measured 0.6% (tiny) and 2.2% (small, 8 layers) on the H200; a
    # wrong fast path (a kernel, the grouped GEMM's offsets, the cache) is off by order 1.
    for name, stress, tol in (("f32", True, 1e-3), ("bf16", False, 5e-2)):
        w = random_weights(cfg, seed=args.seed, stress=stress, text_only=True)
        ref = MoekitModel(cfg, w, dtype=torch.float64).forward_text(ids)
        scale = ref.abs().max().item()

        def err(out, want):
            if name == "f32":
                return (out - want).abs().max().item() / scale
            return ((out - want).norm() / want.norm()).item()

        for moe in moes:
            if moe == "grouped_mm" and name != "bf16":
                continue
            m = MoekitModel(cfg, w, dtype=DTYPES[name], device=device, moe=moe)
            out = m.forward_text(ids).double().cpu()
            rel = err(out, ref)
            top1 = (out.argmax(1) == ref.argmax(1)).double().mean().item()
            # The KV cache: the sequence in pieces (the last a one-token step) equals the whole.
            cache = KVCache()
            cuts = [0, args.tokens // 3, args.tokens - 1, args.tokens]
            inc = torch.cat([m.forward_text(ids[a:b], cache=cache).double().cpu()
                             for a, b in zip(cuts, cuts[1:]) if b > a])
            cache_rel = err(inc, out)
            ok = rel <= tol and cache_rel <= tol
            failed += not ok
            emit(op="selftest", preset=cfg["name"], device=device, dtype=name, moe=moe,
                 weights="stress" if stress else "init",
                 err="max abs / max |ref|" if name == "f32" else "global",
                 rel_err=rel, top1=top1, cache_rel_err=cache_rel, tol=tol,
                 result="PASS" if ok else "FAIL")
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------

def timed(fn, warmup, warmup_ms, iters, cuda):
    """Median milliseconds of `fn` (CUDA events on CUDA, else the wall clock), after at least
    `warmup` calls and `warmup_ms` of them (an idle GPU starts at low clocks)."""
    t0, n = time.perf_counter(), 0
    while n < warmup or (time.perf_counter() - t0) * 1e3 < warmup_ms:
        fn()
        if cuda:
            torch.cuda.synchronize()
        n += 1
    times = []
    for _ in range(iters):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cmd_bench(args):
    cfg = pick_config(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    dtype = DTYPES[args.dtype]
    if args.weights:
        w, _ = read_safetensors(args.weights)
    else:
        # NOTE: only the text path's tensors, drawn on the device (an ERNIE-scale preset has
        # ~21 B parameters: no host copy, no file).
        w = random_weights(cfg, seed=args.seed, dtype=dtype, device=device, text_only=True)
    model = MoekitModel(cfg, w, dtype=dtype, device=device, moe=args.moe)
    del w
    mask = parse_experts(args.experts, cfg["routed_experts"]) if args.experts else None
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    elastic = dict(layers=layers, expert_mask=mask, top_k=args.top_k)
    plan_layers, k, _, n_allowed = model.plan(layers, mask, args.top_k)
    common = dict(peer="torch-model", preset=cfg["name"], dtype=args.dtype, moe=model.moe_impl,
                  layers=len(plan_layers), experts=n_allowed,
                  top_k=k)
    emit(op="env", peer="torch-model", torch=torch.__version__, device=(
        torch.cuda.get_device_name() if cuda else "cpu"), sdpa=HAS_SDPA, sdpa_gqa=HAS_SDPA_GQA)
    g = torch.Generator().manual_seed(args.seed)

    def ids_of(n):
        return torch.randint(0, cfg["text_vocab"], (n,), generator=g).to(device)

    def graphed(fn):
        """`fn` captured as a CUDA graph (launch gaps gone), or None where it cannot be."""
        if not (args.graph and cuda):
            return None
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            return graph.replay
        except Exception as e:  # noqa: BLE001 (a host sync in the forward, an op that cannot)
            emit(op="graph", peer="torch-model", error=str(e).splitlines()[0][:200])
            return None

    def run(op, fn, tokens, **extra):
        for mode, f in (("eager", fn), ("graph", graphed(fn))):
            if f is None:
                continue
            ms = timed(f, args.warmup, args.warmup_ms, args.iters, cuda)
            emit(op=op, tokens=tokens, **extra, ms=ms, tokens_per_s=tokens / ms * 1e3,
                 launch=mode, **common)

    for t in args.tokens:
        ids = ids_of(t)
        # NOTE: the logits of the last position only, as moekit's bench (Heads::Last).
        run("model_prefill", lambda: model.forward_text(ids, last_only=True, **elastic), t)
    for c in args.decode_context:
        cache = KVCache()
        if c > 0:
            model.forward_text(ids_of(c), cache=cache, **elastic)
        step = ids_of(1)

        def decode():
            # One token against a cache of c tokens; the step's entry is dropped after it.
            model.forward_text(step, cache=cache, **elastic)
            cache.length -= 1

        run("model_decode", decode, 1, context=c)
    return 0


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    sub = ap.add_subparsers(dest="cmd", required=True)

    def which(p):
        p.add_argument("--preset", help="tiny, small or ernie-a3b")
        p.add_argument("--config", help="a JSON config (the format ModelConfig writes)")

    p = sub.add_parser("make-weights", help="write a weights file moekit can load")
    which(p)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    p.add_argument("--stress", action="store_true",
                   help="O(1) activations, non-unit norms, non-zero router bias")

    p = sub.add_parser("check", help="compare a dump_logits file with a float64 forward")
    which(p)
    p.add_argument("--logits", required=True, help="the file dump_logits wrote")
    p.add_argument("--weights", required=True, help="the weights the dump used")
    p.add_argument("--tol", type=float, help="the bound (f32 dumps: max abs err / max |ref| vs "
                   "float64, default 1e-3; f16 / bf16 dumps: global rel err vs torch in that "
                   "dtype, defaults 1e-2 / 3e-2)")

    p = sub.add_parser("selftest", help="the fast paths against the float64 CPU forward")
    which(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")

    p = sub.add_parser("bench", help="time prefill and decode steps")
    which(p)
    p.add_argument("--weights", help="a safetensors file (default: random init on the device)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--moe", choices=["auto", "loop", "grouped_mm"], default="auto")
    p.add_argument("--tokens", type=lambda s: [int(x) for x in s.split(",")],
                   default=[128, 1024, 4096], help="prefill lengths, e.g. 128,1024")
    p.add_argument("--decode-context", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1024], help="KV-cache lengths of the timed decode steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls, at least")
    p.add_argument("--warmup-ms", type=float, default=500, help="untimed time, at least")
    p.add_argument("--graph", action="store_true",
                   help="also time each case captured as a CUDA graph (grouped_mm path)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--layers", help="elastic depth, e.g. 0,1")
    p.add_argument("--experts", help="elastic width, e.g. 0-5,7")
    p.add_argument("--top-k", type=int, help="elastic sparsity")

    args = ap.parse_args(argv)
    if getattr(args, "preset", None) and getattr(args, "config", None):
        ap.error("--preset and --config exclude each other")
    cmds = {"make-weights": cmd_make_weights, "check": cmd_check, "selftest": cmd_selftest,
            "bench": cmd_bench}
    return cmds[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
