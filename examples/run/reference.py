#!/usr/bin/env python3
"""Reference logits for df11-run: greedy generation with Hugging Face transformers'
LlamaForCausalLM (FP32, weights upcast from BF16), or with a plain numpy Llama written
from the same definition (--backend numpy, float64) where torch is not installed.

    python3 examples/run/reference.py ../shared/models/stories260K --steps 40
    build/tools/df11-run m.df11 --device cpu -n 40 --json --logits > run.json
    python3 examples/run/reference.py ../shared/models/stories260K --steps 40 --compare run.json

--compare reads df11-run's --json output (with --logits) and checks that it generated the
same tokens from the same prompt and that its last-step logits agree; exits 1 if not.
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


def numpy_logits(cfg, w, tokens):
    """Logits of every position of `tokens`, float64, recomputed from scratch."""
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", d // nh)
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    t = len(tokens)

    def norm(x, g):
        return g * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)

    def rope(x):  # rotate-half, x [T, heads, hd]
        inv = theta ** (-np.arange(0, hd, 2) / hd)
        ang = np.arange(t)[:, None] * inv[None]
        c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * c - b * s, b * c + a * s], -1)

    x = w["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(t, nh, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(t, nkv, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(t, nkv, hd)
        k, v = np.repeat(k, nh // nkv, 1), np.repeat(v, nh // nkv, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask[None]
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", s, v).reshape(t, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = norm(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="Hugging Face folder (config.json + model.safetensors)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--tokens", default=None, help="prompt ids, e.g. 1,5,9 (default: BOS)")
    ap.add_argument("--backend", choices=["hf", "numpy"], default="hf")
    ap.add_argument("--compare", default=None, help="df11-run --json --logits output")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="max |a - b| / max(1, max|b|) over the last logits")
    args = ap.parse_args()

    cfg = json.load(open(f"{args.model}/config.json"))
    prompt = [int(x) for x in args.tokens.split(",")] if args.tokens else [cfg.get("bos_token_id", 1)]
    if args.compare:
        run = json.load(open(args.compare))
        prompt = run["prompt_tokens"]
        args.steps = len(run["generated_tokens"])

    if args.backend == "hf":
        import torch
        from transformers import LlamaForCausalLM
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        except TypeError:
            model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
        model.eval()

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
