#!/usr/bin/env python3
"""A DFloat11 folder made by the `dfloat11` PyPI package itself, converted by df11-compress,
must give back the original BF16 weights bit for bit (df11-decompress's output compared
tensor by tensor with the model the folder was made from).

The model is a tiny random Llama (2 layers, hidden 64, vocab 2000) made here with numpy.
Two ways to compress it, the first that can run:
  full   dfloat11.compress_model on a transformers LlamaForCausalLM, per-module files
         (save_single_file=False, as the published models are). Needs torch, transformers,
         cupy and a GPU (the package loads its CUDA kernel on import).
  utils  the package's own encoder functions from dfloat11_utils.py (get_32bit_codec,
         get_luts, encode: Huffman code by dahuffman, lookup tables, code bytes, gaps,
         output positions), loaded by file path so that the package's __init__ (which
         imports cupy) is not run; torch, which those functions use only to wrap the
         tables, is stubbed when absent. The glue around them (exponent and sign|mantissa
         bytes, split positions, file and config layout) follows compress_model. Needs
         numpy, dahuffman and tqdm: CI installs them with the package (.ci/run).
Exits 77 (CTest's skip) with a message when neither can run.

Usage: compare_package.py TOOLS_DIR [--mode full|utils]
"""
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import types

SKIP = 77
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 2000,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# The pattern_dict their examples use for Llama: embeddings, head, and each decoder layer's
# seven matrices as one module.
LAYER_ATTRS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
PATTERN_DICT = {r"lm_head": [], r"model\.embed_tokens": [], r"model\.layers\.\d+": LAYER_ATTRS}


def skip(why):
    print(f"compare_package.py: skipped: {why}")
    sys.exit(SKIP)


def model_tensors(np):
    """name -> BF16 array (uint16) of a random Llama, rows of N(0, sigma_r^2) as trained
    weights, norms near 1."""
    rng = np.random.default_rng(20250511)
    c = CONFIG
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    out = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            f = 1.0 + 0.02 * rng.standard_normal(shape)
        else:
            sigma = 0.02 * np.exp(0.3 * rng.standard_normal((shape[0], 1)))
            f = sigma * rng.standard_normal(shape)
        u = f.astype(np.float32).view(np.uint32)
        out[name] = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    return out


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, bytes); in the safetensors library's order,
    larger dtypes first, then by name (no BF16 tensor at an odd offset)."""
    size = {"I64": 8, "BF16": 2, "U8": 1}
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in sorted(tensors.items(), key=lambda kv: (-size[kv[1][0]], kv[0])):
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], tuple(v["shape"]), data[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in header.items()}


def load_utils():
    """dfloat11_utils.py of the installed package, without running the package's __init__."""
    spec = importlib.util.find_spec("dfloat11")
    if spec is None or not spec.submodule_search_locations:
        skip("the dfloat11 package is not installed (pip install --no-deps dfloat11)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "dfloat11_utils.py")
    if not os.path.exists(path):
        skip(f"{path} is missing: a dfloat11 version this script does not know")
    try:
        import torch  # noqa: F401  (used as it is when present)
    except ImportError:
        stub = types.ModuleType("torch")
        stub.from_numpy = lambda a: a  # the only torch call of get_luts / encode
        sys.modules["torch"] = stub
    u_spec = importlib.util.spec_from_file_location("dfloat11_utils_under_test", path)
    utils = importlib.util.module_from_spec(u_spec)
    try:
        u_spec.loader.exec_module(utils)
    except ImportError as e:
        skip(f"dfloat11_utils needs {e.name} (pip install dahuffman==0.4.2 tqdm numpy)")
    return utils


def compress_with_utils(np, tensors, out_dir):
    """compress_model's steps for each module, with the package's encoder functions."""
    utils = load_utils()
    version = importlib.metadata.version("dfloat11")
    bytes_per_thread, threads_per_block = 8, 512  # compress_model's constants (0.5.0)
    import re
    candidates = ["lm_head", "model.embed_tokens"] + [f"model.layers.{n}" for n in range(CONFIG["num_hidden_layers"])]
    modules = []
    for m in candidates:  # each module under the first pattern that matches it whole
        attrs = next(a for p, a in PATTERN_DICT.items() if re.fullmatch(p, m))
        modules.append((m, [f"{m}.{a}.weight" for a in attrs] if attrs else [f"{m}.weight"]))
    compressed = set()
    quiet = open(os.devnull, "w")
    for module, weight_names in modules:
        w = np.concatenate([tensors[n].reshape(-1) for n in weight_names])
        exponent = ((w >> 7) & 0xFF).astype(np.uint8)
        sign_mantissa = (((w >> 8) & 0x80) | (w & 0x7F)).astype(np.uint8)
        vals, counts = np.unique(exponent, return_counts=True)
        counter = {int(v): int(c) for v, c in zip(vals, counts)}
        # Their functions print the code tables and a progress bar.
        saved, sys.stdout, sys.stderr = (sys.stdout, sys.stderr), quiet, quiet
        try:
            codec, _, table = utils.get_32bit_codec(counter)
            luts = np.asarray(utils.get_luts(table))
            encoded, gaps, positions = utils.encode(exponent.tolist(), codec, bytes_per_thread,
                                                    threads_per_block)
        finally:
            sys.stdout, sys.stderr = saved
        splits = np.cumsum([tensors[n].size for n in weight_names])[:-1].astype(np.int64)
        parts = {
            "luts": ("U8", luts.shape, luts.astype(np.uint8).tobytes()),
            "encoded_exponent": ("U8", (len(encoded),), np.asarray(encoded, np.uint8).tobytes()),
            "sign_mantissa": ("U8", sign_mantissa.shape, sign_mantissa.tobytes()),
            "output_positions": ("U8", (4 * len(positions),), np.asarray(positions, "<u4").tobytes()),
            "gaps": ("U8", (len(gaps),), np.asarray(gaps, np.uint8).tobytes()),
            "split_positions": ("I64", splits.shape, splits.astype("<i8").tobytes()),
        }
        # Per-module files (save_single_file=False): the module's buffers, and the tensors
        # of the module that stay as they are (a decoder layer's norms).
        own = {f"{module}.{k}": v for k, v in parts.items()}
        for n, t in tensors.items():
            if n.startswith(module + ".") and n not in weight_names:
                own[n] = ("BF16", t.shape, t.tobytes())
                compressed.add(n)
        write_safetensors(os.path.join(out_dir, module.replace(".", "_") + ".safetensors"), own)
        compressed.update(weight_names)
    quiet.close()
    rest = {n: ("BF16", t.shape, t.tobytes()) for n, t in tensors.items() if n not in compressed}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), rest)
    config = dict(CONFIG, dfloat11_config={"version": version, "threads_per_block": [threads_per_block],
                                           "bytes_per_thread": bytes_per_thread,
                                           "pattern_dict": PATTERN_DICT})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def compress_full(np, tensors, out_dir):
    try:
        import torch
        import transformers
        import dfloat11
    except Exception as e:  # cupy raises more than ImportError without a GPU
        return f"full mode needs torch, transformers, cupy and a GPU: {type(e).__name__}: {e}"
    if not torch.cuda.is_available():
        return "full mode needs a GPU"
    cfg = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items()
                                      if k not in ("architectures", "model_type", "torch_dtype")})
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    state = {n: torch.from_numpy(t.view(np.int16).copy()).view(torch.bfloat16) for n, t in tensors.items()}
    model.load_state_dict(state, strict=True)
    dfloat11.compress_model(model, PATTERN_DICT, out_dir, save_single_file=False,
                            check_correctness=True)
    return None


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    tools = sys.argv[1]
    mode = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--mode" else None
    try:
        import numpy as np
    except ImportError:
        skip("numpy is not installed")
    tensors = model_tensors(np)
    work = tempfile.mkdtemp(prefix="df11-dfloat11-")
    try:
        folder = os.path.join(work, "dfl")
        os.makedirs(folder)
        why_not_full = "not asked for" if mode == "utils" else compress_full(np, tensors, folder)
        if why_not_full:
            if mode == "full":
                skip(why_not_full)
            print(f"compare_package.py: utils mode ({why_not_full})")
            shutil.rmtree(folder)
            os.makedirs(folder)
            compress_with_utils(np, tensors, folder)
        out, back = os.path.join(work, "m.df11"), os.path.join(work, "back.safetensors")
        for cmd in ([os.path.join(tools, "df11-compress"), "-q", folder, "-o", out],
                    [os.path.join(tools, "df11-decompress"), "-q", out, "-o", back]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL: {' '.join(cmd)}: {r.stdout}{r.stderr}")
                return 1
        got = read_safetensors(back)
        bad = 0
        for name, t in tensors.items():
            want = ("BF16", t.shape, t.tobytes())
            if got.get(name) != want:
                print(f"FAIL: {name}: " + ("missing" if name not in got else
                      f"{got[name][0]} {got[name][1]} vs BF16 {t.shape} or bytes differ"))
                bad += 1
        for name in set(got) - set(tensors):
            print(f"FAIL: extra tensor {name}")
            bad += 1
        print(f"{len(tensors) - bad} passed, {bad} failed")
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
