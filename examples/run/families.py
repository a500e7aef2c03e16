#!/usr/bin/env python3
"""Model families in df11-run against Hugging Face transformers: writes a small random
model per feature (the families of tests/test_llama.c: rope_scaling llama3, linear,
dynamic and yarn, Qwen2's q/k/v biases, Mistral's sliding window, head_dim with
attention_bias and tied embeddings, Qwen3's q/k norms with a head_dim wider than
hidden / heads), compresses each with df11-compress (fixed and Huffman codecs), runs a
40-token prompt through df11-run (--tokens, -n 1 --json --logits: the prompt's last
logits, one prefill pass) on each device and matmul path, and compares:

  transformers (FP32, eager) vs the numpy float64 model of reference.py  < 1e-4
  df11-run --device cpu --matmul engine (FP32 activations) vs transformers  < 1e-4
  df11-run op path / CUDA (BF16 linear inputs) vs numpy with those inputs
  rounded to BF16 (reference.py bf16_inputs)                                < 0.03
  the same vs transformers (printed; BF16 rounding of the inputs)        < 0.15

Errors are max |a - b| / max(1, max |b|) over the vocabulary. Without transformers the
numpy model stands in for it (said so in the output). Exits 1 on any failure.

    python3 examples/run/families.py /tmp/fam --bin build/tools --devices cpu,cuda
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

D, NH, NKV, H, V, L = 96, 6, 2, 200, 300, 3
FAMILIES = {
    "llama3": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "linear": dict(rope_scaling={"type": "linear", "factor": 2.0}),
    # 40 tokens past a max of 16: the base grows with the length
    "dynamic": dict(max_position_embeddings=16, rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    # factor = 16384 / 4096: the same whichever transformers reads it (4.46-4.55: the ratio)
    "yarn": dict(max_position_embeddings=16384,
                 rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32, "beta_slow": 1,
                               "original_max_position_embeddings": 4096}),
    "qwen2": dict(model_type="qwen2", qkv_bias=True, tie_word_embeddings=True, sliding_window=4,
                  use_sliding_window=False),
    "mistral": dict(model_type="mistral", sliding_window=8),
    "head-dim": dict(head_dim=24, attention_bias=True, qkv_bias=True, tie_word_embeddings=True),
    # 6 heads of 32 over hidden 96 (Qwen3-0.6B: 16 of 128 over 1024), q/k norms, no biases
    "qwen3": dict(model_type="qwen3", head_dim=32, qk_norm=True, tie_word_embeddings=True,
                  attention_bias=False, sliding_window=None, use_sliding_window=False,
                  max_window_layers=L),
}
ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
        "mistral": "MistralForCausalLM"}


def to_bf16_bytes(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)).tobytes()


def write_family(folder, name, seed):
    f = dict(FAMILIES[name])
    rng = np.random.default_rng(seed)
    hd = f.get("head_dim", D // NH)
    tied = f.pop("tie_word_embeddings", False)
    qkv_bias = f.pop("qkv_bias", False)
    qk_norm = f.pop("qk_norm", False)
    t = {}

    def add(n, shape, sigma, mean=0.0):
        t[n] = mean + sigma * rng.standard_normal(shape)

    # tied: a small embedding, else its own row dominates the logits (test_llama.c)
    add("model.embed_tokens.weight", (V, D), 0.1 if tied else 1.0)
    for i in range(L):
        p = f"model.layers.{i}."
        add(p + "input_layernorm.weight", (D,), 0.1, 1.0)
        add(p + "self_attn.q_proj.weight", (NH * hd, D), 0.3)
        add(p + "self_attn.k_proj.weight", (NKV * hd, D), 0.3)
        add(p + "self_attn.v_proj.weight", (NKV * hd, D), 0.1)
        add(p + "self_attn.o_proj.weight", (D, NH * hd), 0.1)
        add(p + "post_attention_layernorm.weight", (D,), 0.1, 1.0)
        add(p + "mlp.gate_proj.weight", (H, D), 0.1)
        add(p + "mlp.up_proj.weight", (H, D), 0.1)
        add(p + "mlp.down_proj.weight", (D, H), 0.07)
        if qkv_bias:
            add(p + "self_attn.q_proj.bias", (NH * hd,), 0.3)
            add(p + "self_attn.k_proj.bias", (NKV * hd,), 0.3)
            add(p + "self_attn.v_proj.bias", (NKV * hd,), 0.1)
        if f.get("attention_bias"):
            add(p + "self_attn.o_proj.bias", (D,), 0.1)
        if qk_norm:  # spread wide, as test_llama.c: a norm skipped or misplaced shows
            add(p + "self_attn.q_norm.weight", (hd,), 0.5, 1.0)
            add(p + "self_attn.k_norm.weight", (hd,), 0.5, 1.0)
    add("model.norm.weight", (D,), 0.1, 1.0)
    if not tied:
        add("lm_head.weight", (V, D), 0.1)

    os.makedirs(folder, exist_ok=True)
    header, blobs, off = {}, [], 0
    for n, a in t.items():
        b = to_bf16_bytes(a)
        header[n] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(f"{folder}/model.safetensors", "wb") as fp:
        fp.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    mt = f.pop("model_type", "llama")
    cfg = {"architectures": [ARCH[mt]], "model_type": mt, "hidden_size": D,
           "intermediate_size": H, "num_hidden_layers": L, "num_attention_heads": NH,
           "num_key_value_heads": NKV, "vocab_size": V, "max_position_embeddings": 128,
           "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "tie_word_embeddings": tied,
           "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "bfloat16"}
    cfg.update(f)
    with open(f"{folder}/config.json", "w") as fp:
        json.dump(cfg, fp, indent=1)


def rel(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="folder for the models and .df11 files")
    ap.add_argument("--bin", default="build/tools", help="folder of df11-run and df11-compress")
    ap.add_argument("--devices", default="cpu", help="cpu,cuda")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    try:
        import torch
        import transformers
        have_hf, hf_name = True, "transformers"
        print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    except ImportError:
        have_hf, hf_name = False, "numpy float64"
        print("transformers not installed: the numpy float64 model stands in for it")
    prompt = [1] + [int(x) for x in np.random.default_rng(args.seed).integers(3, V, 39)]
    ok = True

    def check(what, err, tol):
        nonlocal ok
        good = err < tol
        ok &= good
        print(f"  {what:<44} {err:10.3g}  (< {tol:g}) {'ok' if good else 'FAIL'}")

    for name in args.families.split(","):
        folder = f"{args.out}/{name}"
        write_family(folder, name, args.seed)
        cfg, w = reference.load_numpy(folder)
        exact = reference.numpy_logits(cfg, w, prompt)[-1]
        rounded = reference.numpy_logits(cfg, w, prompt, bf16_inputs=True)[-1]
        print(f"{name}: {ARCH[cfg['model_type']]}, prompt of {len(prompt)} tokens")
        if have_hf:
            import torch
            model = reference.hf_load(folder)
            with torch.no_grad():
                hf = model(torch.tensor([prompt])).logits[0, -1].double().numpy()
            check("transformers vs numpy float64", rel(hf, exact), 1e-4)
        else:
            hf = exact
        for codec, dev, mm in [(c, d, m) for c in ("fixed", "huffman")
                               for d in args.devices.split(",") for m in ("engine", "op")]:
            path = f"{args.out}/{name}-{codec}.df11"
            if not os.path.exists(path):
                subprocess.run([f"{args.bin}/df11-compress", folder, "-o", path, "-q", "--codec",
                                codec], check=True)
            if True:
                cmd = [f"{args.bin}/df11-run", path, "--device", dev, "--matmul", mm, "--tokens",
                       ",".join(map(str, prompt)), "-n", "1", "--ctx", "64", "--json", "--logits",
                       "-q"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"  {codec} {dev} {mm}: df11-run failed: {r.stderr.strip()}")
                    ok = False
                    continue
                mine = np.array(json.loads(r.stdout)["logits"], dtype=np.float64)
                what = f"df11-run {codec} {dev} {mm}"
                if dev == "cpu" and mm == "engine":
                    check(f"{what} vs {hf_name}", rel(mine, hf), 1e-4)
                else:
                    check(f"{what} vs numpy, BF16 inputs", rel(mine, rounded), 0.03)
                    check(f"{what} vs {hf_name}", rel(mine, hf), 0.15)
    print("ALL MATCH" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
