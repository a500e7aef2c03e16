#!/usr/bin/env python3
"""Reference logits for df11-run: greedy generation with Hugging Face transformers'
AutoModelForCausalLM (FP32, weights upcast from BF16; Llama, Qwen2, Qwen3, Mistral), or
with a plain numpy model written from the same definitions (--backend numpy, float64) where
torch is not installed: rope_scaling (linear, dynamic, llama3, yarn), head_dim, q/k/v/o
biases, Qwen3's q/k norms, tied embeddings, sliding window.

    python3 examples/run/reference.py ../shared/models/stories260K --steps 40
    build/tools/df11-run m.df11 --device cpu -n 40 --json --logits > run.json
    python3 examples/run/reference.py ../shared/models/stories260K --steps 40 --compare run.json

--compare reads df11-run's --json output (with --logits) and checks that it generated the
same tokens from the same prompt and that its last-step logits agree; exits 1 if not.
--order-sensitivity (numpy) prints, per teacher-forced step, how far the logits move when
every product's inputs are rounded to BF16 (as the GPU engine and the op take them) and
only its fp32 summation order changes: one pass against K summed in chunks of 16 from the
end (the bound tests/test_llama.c's GPU check allows the fused kernels).
Never a dependency of df11: a tool to re-make the numbers in docs/ENGINE.md.
"""
import argparse
import json
import struct
import sys

import numpy as np


def load_numpy(folder):
    cfg = json.load(open(f"{folder}/config.json"))
    raw = open(f"{folder}/model.safetensors", "rb").read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hlen])
    base = 8 + hlen
    weights = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "BF16", f"{name}: {t['dtype']}"
        a, b = t["data_offsets"]
        u = np.frombuffer(raw[base + a:base + b], dtype=np.uint16).astype(np.uint32) << 16
        weights[name] = u.view(np.float32).astype(np.float64).reshape(t["shape"])
    return cfg, weights


def bf16_round(x):
    """x rounded to the nearest BF16 (ties to even) through FP32, as float64."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32).astype(np.float64)


def inv_freq(cfg, hd, seq_len):
    """HF's inverse frequencies after rope_scaling (modeling_rope_utils), and the factor
    that scales cos and sin; seq_len is the length of the forward (dynamic NTK)."""
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}  # the latter: transformers 5
    theta = rs.get("rope_theta", cfg.get("rope_theta", 10000.0))
    kind = rs.get("rope_type", rs.get("type", "default"))
    f = rs.get("factor", 1.0)
    max_pos = cfg.get("max_position_embeddings", 2048)
    if kind == "dynamic" and seq_len > max_pos:
        theta *= (f * seq_len / max_pos - (f - 1)) ** (hd / (hd - 2))
    freq = theta ** (-np.arange(0, hd, 2) / hd)
    if kind == "linear":
        return freq / f, 1.0
    if kind == "llama3":
        orig, lo, hi = rs["original_max_position_embeddings"], rs["low_freq_factor"], rs["high_freq_factor"]
        wl = 2 * np.pi / freq
        smooth = (orig / wl - lo) / (hi - lo)
        mid = (1 - smooth) * freq / f + smooth * freq
        return np.where(wl > orig / lo, freq / f, np.where(wl < orig / hi, freq, mid)), 1.0
    if kind == "yarn":
        # the factor as given (transformers 4.46-4.55 took max / original instead)
        orig = rs.get("original_max_position_embeddings") or max_pos
        attn = rs.get("attention_factor") or (0.1 * np.log(f) + 1 if f > 1 else 1.0)
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def dim_of(rot):
            return hd * np.log(orig / (rot * 2 * np.pi)) / (2 * np.log(theta))

        lo, hi = max(np.floor(dim_of(fast)), 0), min(np.ceil(dim_of(slow)), hd - 1)
        ramp = np.clip((np.arange(hd // 2) - lo) / ((hi - lo) or 0.001), 0, 1)
        return freq / f * ramp + freq * (1 - ramp), attn
    return freq, 1.0


def matmul_f32(x, w):
    """x @ w.T accumulated in float32, in one pass."""
    return (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.float64)


def matmul_f32_chunks(x, w, chunk=16):
    """x @ w.T accumulated in float32, K in chunks summed from the last: another order."""
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    acc = np.zeros(x.shape[:-1] + (w.shape[0],), np.float32)
    for k0 in reversed(range(0, x.shape[-1], chunk)):
        acc = acc + x32[..., k0:k0 + chunk] @ w32[:, k0:k0 + chunk].T
    return acc.astype(np.float64)


def numpy_logits(cfg, w, tokens, bf16_inputs=False, matmul=None):
    """Logits of every position of `tokens`, float64, recomputed from scratch as one
    forward (HF's full-sequence semantics). bf16_inputs: every linear layer's input
    rounded to BF16 first, as df11's matmul op and the GPU engine feed them. matmul(x, w):
    the product x @ w.T (default: float64)."""
    mm = matmul or (lambda a, b: a @ b.T)
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or d // nh
    eps = cfg["rms_norm_eps"]
    t = len(tokens)
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
    if cfg.get("model_type") in ("qwen2", "qwen3") and not cfg.get("use_sliding_window", False):
        window = None

    def norm(x, g):
        return g * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)

    def lin(x, name):
        y = mm(bf16_round(x) if bf16_inputs else x, w[name + ".weight"])
        return y + w[name + ".bias"] if name + ".bias" in w else y

    inv, attn = inv_freq(cfg, hd, t)
    ang = np.arange(t)[:, None] * inv[None]
    cos, sin = np.cos(ang)[:, None] * attn, np.sin(ang)[:, None] * attn

    def rope(x):  # rotate-half, x [T, heads, hd]
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    x = w["model.embed_tokens.weight"][tokens]
    i, j = np.arange(t)[:, None], np.arange(t)[None]
    seen = j <= i
    if window:
        seen &= i - j < window
    mask = np.where(seen, 0.0, -np.inf)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").reshape(t, nh, hd)
        k = lin(h, p + "self_attn.k_proj").reshape(t, nkv, hd)
        if p + "self_attn.q_norm.weight" in w:  # Qwen3: each head normed before RoPE
            q = norm(q, w[p + "self_attn.q_norm.weight"])
            k = norm(k, w[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        v = lin(h, p + "self_attn.v_proj").reshape(t, nkv, hd)
        k, v = np.repeat(k, nh // nkv, 1), np.repeat(v, nh // nkv, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask[None]
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hts,shd->thd", s, v).reshape(t, nh * hd), p + "self_attn.o_proj")
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g, u = lin(h, p + "mlp.gate_proj"), lin(h, p + "mlp.up_proj")
        x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
    x = norm(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return mm(bf16_round(x) if bf16_inputs else x, head)


def hf_load(folder):
    """transformers' model for the folder's architecture, FP32, eager attention (its
    sliding-window mask is the plain one)."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    kw = {"attn_implementation": "eager"}
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, **kw)
    return model.eval()


def order_sensitivity(folder, steps):
    """Per teacher-forced step (the float64 model's greedy tokens from BOS), max |a - b| /
    max(1, max|b|) between matmul_f32 and matmul_f32_chunks, inputs rounded to BF16."""
    cfg, w = load_numpy(folder)
    tokens = [cfg.get("bos_token_id", 1)]
    for _ in range(steps - 1):
        tokens.append(int(np.argmax(numpy_logits(cfg, w, tokens, True)[-1])))
    a = numpy_logits(cfg, w, tokens, True, matmul_f32)
    b = numpy_logits(cfg, w, tokens, True, matmul_f32_chunks)
    rel = np.abs(a - b).max(-1) / np.maximum(np.abs(a).max(-1), 1)
    print(json.dumps({"steps": len(tokens), "max": float(rel.max()),
                      "step_of_max": int(rel.argmax()),
                      "per_step": [float("%.3g" % v) for v in rel]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="Hugging Face folder (config.json + model.safetensors)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--tokens", default=None, help="prompt ids, e.g. 1,5,9 (default: BOS)")
    ap.add_argument("--backend", choices=["hf", "numpy"], default="hf")
    ap.add_argument("--compare", default=None, help="df11-run --json --logits output")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="max |a - b| / max(1, max|b|) over the last logits")
    ap.add_argument("--order-sensitivity", action="store_true",
                    help="numpy: the logits' move under another fp32 summation order")
    args = ap.parse_args()
    if args.order_sensitivity:
        order_sensitivity(args.model, args.steps)
        return

    cfg = json.load(open(f"{args.model}/config.json"))
    prompt = [int(x) for x in args.tokens.split(",")] if args.tokens else [cfg.get("bos_token_id", 1)]
    if args.compare:
        run = json.load(open(args.compare))
        prompt = run["prompt_tokens"]
        args.steps = len(run["generated_tokens"])

    if args.backend == "hf":
        import torch
        model = hf_load(args.model)

        def logits_of(tokens):
            with torch.no_grad():
                out = model(torch.tensor([tokens]))
            return out.logits[0, -1].double().numpy()
    else:
        cfg, weights = load_numpy(args.model)

        def logits_of(tokens):
            return numpy_logits(cfg, weights, tokens)[-1]

    tokens, generated, last = list(prompt), [], None
    for _ in range(args.steps):
        last = logits_of(tokens)
        nxt = int(np.argmax(last))
        generated.append(nxt)
        tokens.append(nxt)
        if nxt == cfg.get("eos_token_id"):
            break
    print(json.dumps({"backend": args.backend, "prompt_tokens": prompt,
                      "generated_tokens": generated,
                      "last_logits_head": [round(float(v), 6) for v in last[:8]]}))

    if args.compare:
        ok = run["generated_tokens"] == generated
        if not ok:
            print("tokens differ:\n  df11-run  %s\n  reference %s" % (run["generated_tokens"], generated))
        if "logits" in run:
            mine = np.array(run["logits"], dtype=np.float64)
            rel = np.abs(mine - last).max() / max(1.0, np.abs(last).max())
            print(f"last-step logits: max relative error {rel:.3g} (tolerance {args.tolerance:g})")
            ok = ok and rel < args.tolerance
        print("MATCH" if ok else "MISMATCH")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
