#!/usr/bin/env python3
"""Writes old_source.safetensors: the small model the old-writer files in this folder were
compressed from (README.md says how). Deterministic; standard library only.

BF16 matrices with a trained-like spread of exponents, shapes whose K is and is not a
multiple of 64, a vector, an F32 tensor, and the values every code must carry: +-0, a
subnormal, +-Inf, NaN, and exponents far outside a row's window."""
import json
import random
import struct
import sys


def bf16(x):
    """x (a Python float) as BF16 bits, rounded to nearest even; NaN kept quiet."""
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    if (b & 0x7F800000) == 0x7F800000 and b & 0x7FFFFF:
        return 0x7FC0
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def main(path):
    rng = random.Random(20261128)
    specials = [0x0000, 0x8000, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC1, 0x7F7F, 0x3F80, 0x0080]
    tensors = []  # (name, dtype, shape, bytes)
    for name, rows, cols in [("model.embed_tokens.weight", 24, 64),
                             ("model.layers.0.self_attn.q_proj.weight", 16, 96),
                             ("model.layers.1.mlp.down_proj.weight", 8, 200)]:
        w = [bf16(rng.gauss(0.0, 0.02)) for _ in range(rows * cols)]
        for i, v in enumerate(specials):  # spread over the rows
            w[(i * 7919) % len(w)] = v
        tensors.append((name, "BF16", [rows, cols], struct.pack("<%dH" % len(w), *w)))
    norm = [bf16(1.0 + rng.gauss(0.0, 0.1)) for _ in range(96)]
    tensors.append(("model.layers.0.input_layernorm.weight", "BF16", [96],
                    struct.pack("<96H", *norm)))
    f32 = [rng.gauss(0.0, 1.0) for _ in range(12)]
    tensors.append(("model.layers.0.self_attn.rotary.f32", "F32", [3, 4],
                    struct.pack("<12f", *f32)))
    header, off = {}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, _, _, data in tensors:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "old_source.safetensors")
