#!/usr/bin/env python3
"""Writes a Hugging Face tokenizer.json for a SentencePiece BPE model file (Llama-2 and
Mistral ship these `tokenizer.model` files; mistral-common packages Mistral's), in one of
the two forms such tokenizer.json files take on the Hub:
  legacy     normalizer Prepend("▁") + Replace(" " -> "▁"), decoder Replace/ByteFallback/
             Fuse/Strip (Llama-2's files);
  metaspace  pre_tokenizer Metaspace(prepend_scheme "first", split false), Metaspace
             decoder (newer Mistral files).
Merges follow SentencePiece's BPE: two pieces merge when their concatenation is a piece,
the pair whose result scores highest first. The .model file is a protobuf ModelProto; only
the pieces (field 1: piece, score, type) and the trainer's model type are read here.

Usage: sp_to_json.py TOKENIZER.model legacy|metaspace OUT_DIR   (writes tokenizer.json)
"""
import json
import os
import struct
import sys

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def fields(b):
    """(field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wt}")
        yield num, wt, v


def read_model(path):
    data = open(path, "rb").read()
    pieces, model_type = [], None
    for num, _, v in fields(data):
        if num == 1:
            p = {"piece": "", "score": 0.0, "type": NORMAL}
            for n2, _, v2 in fields(v):
                if n2 == 1:
                    p["piece"] = v2.decode()
                elif n2 == 2:
                    p["score"] = struct.unpack("<f", v2)[0]
                elif n2 == 3:
                    p["type"] = v2
            pieces.append(p)
        elif num == 2:
            for n2, _, v2 in fields(v):
                if n2 == 3:
                    model_type = v2
    return pieces, model_type


def build(pieces, form):
    vocab = {p["piece"]: i for i, p in enumerate(pieces)}
    merges = []
    for i, p in enumerate(pieces):
        if p["type"] != NORMAL:
            continue
        s = p["piece"]
        for k in range(1, len(s)):
            l, r = s[:k], s[k:]
            if l in vocab and r in vocab:
                merges.append((-p["score"], i, vocab[l], l, r))
    merges.sort()
    unk = next((p["piece"] for p in pieces if p["type"] == UNKNOWN), None)
    added = [{"id": i, "content": p["piece"], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, p in enumerate(pieces) if p["type"] in (UNKNOWN, CONTROL)]
    bos = next((p["piece"] for p in pieces if p["piece"] == "<s>"), None)
    j = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}},
        },
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": unk,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[m[3], m[4]] for m in merges]},
    }
    if form == "legacy":
        j["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        j["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    else:
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁",
                              "prepend_scheme": "first", "split": False}
        j["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
            {"type": "ByteFallback"}, {"type": "Fuse"}]}
    return j


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("legacy", "metaspace"):
        sys.exit(__doc__)
    pieces, model_type = read_model(sys.argv[1])
    if model_type != 2:
        sys.exit(f"{sys.argv[1]}: SentencePiece model type {model_type}, not BPE (2)")
    os.makedirs(sys.argv[3], exist_ok=True)
    with open(os.path.join(sys.argv[3], "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(build(pieces, sys.argv[2]), f, ensure_ascii=False)


if __name__ == "__main__":
    main()
