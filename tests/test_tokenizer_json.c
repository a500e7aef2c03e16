/* examples/run/tokenizer_json.c on small tokenizer.json files written here: merges by rank
 * in both forms, added tokens inline, byte-level and SentencePiece-style encode/decode with
 * byte fallback and unk, BOS/EOS from the configs beside the file, refusal of broken or
 * unsupported files (every prefix of a good one included), and bounded time on 1 MiB and on
 * a catastrophic regex. The comparison with Hugging Face `tokenizers` on real files is
 * tests/tokenizer/compare_hf.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "examples/run/tokenizer_json.h"
#include "tests/testutil.h"

static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* GPT-2's printable stand-in for byte b, as UTF-8. */
static void byte_char(int b, char out[3])
{
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
        int n = 0;
        for (int c = 0; c < b; c++)
            if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static cJSON *added_token(int id, const char *content, int special)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", id);
    cJSON_AddStringToObject(a, "content", content);
    cJSON_AddBoolToObject(a, "single_word", 0);
    cJSON_AddBoolToObject(a, "lstrip", 0);
    cJSON_AddBoolToObject(a, "rstrip", 0);
    cJSON_AddBoolToObject(a, "normalized", 0);
    cJSON_AddBoolToObject(a, "special", special);
    return a;
}

/* A byte-level tokenizer: ids 0..255 are the bytes (as GPT-2 characters), then merged
 * pieces; Llama-3's pre-tokenizer; <|bos|> (264) added by the template, <|e|> and <|e|>x
 * (265, 266) added tokens. Merges mix the "a b" and ["a", "b"] forms. */
static cJSON *byte_level_json(void)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) {
        char s[3];
        byte_char(b, s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    static const char *const merged[] = { "ab", "bc", "he", "ll", "hell", "hello", "Ġw", "aa" };
    for (int i = 0; i < 8; i++) cJSON_AddNumberToObject(vocab, merged[i], 256 + i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON_AddItemToArray(merges, cJSON_CreateString("a b"));
    static const char *const pair[2] = { "b", "c" };
    cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    static const char *const rest[] = { "h e", "l l", "he ll", "hell o", "Ġ w", "a a" };
    for (int i = 0; i < 6; i++) cJSON_AddItemToArray(merges, cJSON_CreateString(rest[i]));
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddItemToArray(added, added_token(264, "<|bos|>", 1));
    cJSON_AddItemToArray(added, added_token(265, "<|e|>", 1));
    cJSON_AddItemToArray(added, added_token(266, "<|e|>x", 0));
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", LLAMA3_REGEX);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", 0);
    cJSON_AddItemToArray(list, split);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddBoolToObject(bl, "add_prefix_space", 0);
    cJSON_AddBoolToObject(bl, "use_regex", 0);
    cJSON_AddItemToArray(list, bl);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "decoder"), "type", "ByteLevel");
    cJSON *post = cJSON_AddObjectToObject(root, "post_processor");
    cJSON_AddStringToObject(post, "type", "TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(post, "single");
    cJSON *sp = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(sp, "SpecialToken"), "id", "<|bos|>");
    cJSON_AddItemToArray(single, sp);
    cJSON *seq = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(seq, "Sequence"), "id", "A");
    cJSON_AddItemToArray(single, seq);
    cJSON *bos =
        cJSON_AddObjectToObject(cJSON_AddObjectToObject(post, "special_tokens"), "<|bos|>");
    int bos_id = 264;
    cJSON_AddItemToObject(bos, "ids", cJSON_CreateIntArray(&bos_id, 1));
    return root;
}

/* A SentencePiece-style tokenizer (Llama-2's form): <unk> <s> </s>, the 256 <0xXX> bytes at
 * 3.., then ▁ a b ▁a ab ▁ab. */
static cJSON *sentencepiece_json(int byte_fallback)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON_AddBoolToObject(model, "byte_fallback", byte_fallback);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON_AddNumberToObject(vocab, "<unk>", 0);
    cJSON_AddNumberToObject(vocab, "<s>", 1);
    cJSON_AddNumberToObject(vocab, "</s>", 2);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        cJSON_AddNumberToObject(vocab, s, 3 + b);
    }
    static const char *const pieces[] = { "▁", "a", "b", "▁a", "ab", "▁ab" };
    for (int i = 0; i < 6; i++) cJSON_AddNumberToObject(vocab, pieces[i], 259 + i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    static const char *const m[] = { "▁ a", "a b", "▁a b" };
    for (int i = 0; i < 3; i++) cJSON_AddItemToArray(merges, cJSON_CreateString(m[i]));
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddItemToArray(added, added_token(0, "<unk>", 1));
    cJSON_AddItemToArray(added, added_token(1, "<s>", 1));
    cJSON_AddItemToArray(added, added_token(2, "</s>", 1));
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "Sequence");
    cJSON *nl = cJSON_AddArrayToObject(norm, "normalizers");
    cJSON *prep = cJSON_CreateObject();
    cJSON_AddStringToObject(prep, "type", "Prepend");
    cJSON_AddStringToObject(prep, "prepend", "▁");
    cJSON_AddItemToArray(nl, prep);
    cJSON *rep = cJSON_CreateObject();
    cJSON_AddStringToObject(rep, "type", "Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(rep, "pattern"), "String", " ");
    cJSON_AddStringToObject(rep, "content", "▁");
    cJSON_AddItemToArray(nl, rep);
    cJSON_AddNullToObject(root, "pre_tokenizer");
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "Sequence");
    cJSON *dl = cJSON_AddArrayToObject(dec, "decoders");
    cJSON *drep = cJSON_CreateObject();
    cJSON_AddStringToObject(drep, "type", "Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(drep, "pattern"), "String", "▁");
    cJSON_AddStringToObject(drep, "content", " ");
    cJSON_AddItemToArray(dl, drep);
    static const char *const simple[] = { "ByteFallback", "Fuse" };
    for (int i = 0; i < 2; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "type", simple[i]);
        cJSON_AddItemToArray(dl, d);
    }
    cJSON *strip = cJSON_CreateObject();
    cJSON_AddStringToObject(strip, "type", "Strip");
    cJSON_AddStringToObject(strip, "content", " ");
    cJSON_AddNumberToObject(strip, "start", 1);
    cJSON_AddNumberToObject(strip, "stop", 0);
    cJSON_AddItemToArray(dl, strip);
    cJSON_AddNullToObject(root, "post_processor");
    return root;
}

/* Loads the JSON (and configs) or fails the test with the loader's message. */
static hf_tokenizer *load(cJSON *root, const char *config, const char *gen)
{
    char *s = cJSON_PrintUnformatted(root), err[512];
    hf_tokenizer *t;
    int rc = hf_tokenizer_load_buffer(&t, s, strlen(s), config, config ? strlen(config) : 0, gen,
                                      gen ? strlen(gen) : 0, err, sizeof err);
    ck_assert_msg(rc == 0, "load: %s", err);
    free(s);
    return t;
}

/* Encodes and compares with the expected ids (terminated by -1). */
static void expect(const hf_tokenizer *t, const char *text, size_t len, int special,
                   const int *want)
{
    int ids[64], n = 0;
    char err[256];
    while (want[n] >= 0) n++;
    int k = hf_tokenizer_encode(t, text, len, special, ids, 64, err, sizeof err);
    ck_assert_msg(k >= 0, "encode '%s': %s", text, err);
    int same = k == n;
    for (int i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        fprintf(stderr, "encode '%s': got", text);
        for (int i = 0; i < k; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    ck_assert(same);
}

/* The decoded bytes of ids[0..n), into out (NUL-terminated); returns their count. */
static size_t decode_all(const hf_tokenizer *t, const int *ids, int n, char *out, size_t cap)
{
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t m;
        const char *s = hf_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], &m);
        ck_assert(at + m < cap);
        memcpy(out + at, s, m);
        at += m;
    }
    out[at] = 0;
    return at;
}

START_TEST(test_byte_level_merges)
{
    cJSON *j = byte_level_json();
    hf_tokenizer *t = load(j, NULL, NULL);
    ck_assert_int_eq(hf_tokenizer_vocab_size(t), 267);
    /* "a b" outranks "b c": abc -> ab c; "aaa" -> aa a (the leftmost of equal ranks). */
    expect(t, "abc", 3, 0, (const int[]){ 256, 'c', -1 });
    expect(t, "aaa", 3, 0, (const int[]){ 263, 'a', -1 });
    /* hello: h e, l l, he ll, hell o; " world": Ġw merges, the rest stay bytes. */
    expect(t, "hello world", 11, 0, (const int[]){ 261, 262, 'o', 'r', 'l', 'd', -1 });
    /* Added tokens inline, the longest at a position: <|e|>x beats <|e|>. */
    expect(t, "a<|e|>xb<|e|>", 13, 0, (const int[]){ 'a', 266, 'b', 265, -1 });
    expect(t, "<|bos|>ab", 9, 1, (const int[]){ 264, 264, 256, -1 });
    /* The Llama-3 split keeps digits in threes and a space before a word. */
    expect(t, "12345", 5, 0, (const int[]){ '1', '2', '3', '4', '5', -1 });
    ck_assert_int_eq(hf_tokenizer_bos(t), 264);
    ck_assert_int_eq(hf_tokenizer_lookup(t, "hello"), 261);
    ck_assert_int_eq(hf_tokenizer_lookup(t, "<|e|>"), 265);
    ck_assert_int_eq(hf_tokenizer_lookup(t, "nope"), -1);
    hf_tokenizer_free(t);

    /* An added token's id is the one `tokenizers` gives it (the next free one), whatever
     * an inconsistent file says; the same text twice is one token. */
    cJSON *added = cJSON_GetObjectItem(j, "added_tokens");
    cJSON_AddItemToArray(added, added_token(999, "<|new|>", 1));
    cJSON_AddItemToArray(added, added_token(5, "<|e|>", 1));
    t = load(j, NULL, NULL);
    ck_assert_int_eq(hf_tokenizer_lookup(t, "<|new|>"), 267);
    ck_assert_int_eq(hf_tokenizer_lookup(t, "<|e|>"), 265);
    ck_assert_int_eq(hf_tokenizer_vocab_size(t), 268);

    /* Any bytes decode back to themselves; invalid UTF-8 is read as U+FFFD first. */
    const char text[] = "x \t\n\n  y\x01\x7f caf\xc3\xa9 \xf0\x9f\x98\x80<|e|>";
    int ids[128];
    char out[256], err[256];
    int n = hf_tokenizer_encode(t, text, sizeof text - 1, 0, ids, 128, err, sizeof err);
    ck_assert_msg(n > 0, "%s", err);
    ck_assert_uint_eq(decode_all(t, ids, n, out, sizeof out), sizeof text - 1);
    ck_assert_mem_eq(out, text, sizeof text - 1);
    n = hf_tokenizer_encode(t, "a\x80z\xe2\x82", 5, 0, ids, 128, err, sizeof err);
    decode_all(t, ids, n, out, sizeof out);
    ck_assert_str_eq(out, "a\xef\xbf\xbdz\xef\xbf\xbd");
    /* Too many ids for the room given: refused with a message. */
    ck_assert_int_eq(hf_tokenizer_encode(t, "a b c d", 7, 0, ids, 3, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "more than 3"), "%s", err);
    ck_assert_int_eq(hf_tokenizer_encode(t, "", 0, 1, ids, 128, err, sizeof err), 1);
    size_t m;
    ck_assert_str_eq(hf_tokenizer_decode(t, -1, 9999, &m), "");
    ck_assert_uint_eq(m, 0);
    hf_tokenizer_free(t);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_chat)
{
    /* The format comes from chat_template's markers, else from the special tokens. */
    cJSON *j = byte_level_json();
    hf_tokenizer *t = load(j, NULL, NULL);
    ck_assert_int_eq(hf_tokenizer_chat_format(t), HF_CHAT_NONE);
    ck_assert_ptr_null(hf_tokenizer_chat(t, NULL, "hi"));
    hf_tokenizer_free(t);
    cJSON_AddItemToArray(cJSON_GetObjectItem(j, "added_tokens"), added_token(267, "<|im_end|>", 1));
    t = load(j, "{\"chat_template\": [{\"name\": \"default\", \"template\": \"<|im_start|>...\"}]}",
             NULL);
    ck_assert_int_eq(hf_tokenizer_chat_format(t), HF_CHAT_CHATML);
    char *c = hf_tokenizer_chat(t, "S", "hi");
    ck_assert_str_eq(c, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                        "<|im_start|>assistant\n");
    free(c);
    ck_assert(hf_tokenizer_is_eos(t, 267)); /* the end of a turn stops generation */
    hf_tokenizer_free(t);
    cJSON_Delete(j);

    j = sentencepiece_json(1);
    t = load(j, "{\"bos_token\": \"<s>\", \"chat_template\": \"{{ '[INST] ' + m + ' [/INST]' }}\"}",
             NULL);
    ck_assert_int_eq(hf_tokenizer_chat_format(t), HF_CHAT_INST);
    c = hf_tokenizer_chat(t, NULL, "hi");
    ck_assert_str_eq(c, "<s>[INST] hi [/INST]");
    free(c);
    c = hf_tokenizer_chat(t, "S", "hi");
    ck_assert_str_eq(c, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nhi [/INST]");
    free(c);
    hf_tokenizer_free(t);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_added_strip)
{
    /* lstrip takes the whitespace before the token, rstrip the whitespace after it. */
    cJSON *j = byte_level_json(), *added = cJSON_GetObjectItem(j, "added_tokens");
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(added, 1), "lstrip", cJSON_CreateTrue());
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(added, 0), "rstrip", cJSON_CreateTrue());
    hf_tokenizer *t = load(j, NULL, NULL);
    expect(t, "a  <|e|>  b", 11, 0, (const int[]){ 'a', 265, ' ', ' ', 'b', -1 });
    expect(t, "x<|bos|> \n\xe3\x80\x80y", 14, 0, (const int[]){ 'x', 264, 'y', -1 });
    expect(t, " <|e|><|e|>", 11, 0, (const int[]){ 265, 265, -1 });
    hf_tokenizer_free(t);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_nfc)
{
    /* NFC runs only where it changes nothing; a combining accent is refused, by name. */
    cJSON *j = byte_level_json();
    cJSON *nfc = cJSON_CreateObject();
    cJSON_AddStringToObject(nfc, "type", "NFC");
    cJSON_ReplaceItemInObject(j, "normalizer", nfc);
    hf_tokenizer *t = load(j, NULL, NULL);
    expect(t, "caf\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5", 13, 0,
           (const int[]){ 'c', 'a', 'f', 0xc3, 0xa9, ' ', 0xe2, 0x80, 0x94, ' ', 0xe6, 0x97, 0xa5,
                          -1 });
    int ids[16];
    char err[256];
    ck_assert_int_eq(hf_tokenizer_encode(t, "cafe\xcc\x81", 6, 0, ids, 16, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "U+0301"), "%s", err);
    hf_tokenizer_free(t);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_configs)
{
    cJSON *j = byte_level_json();
    /* tokenizer_config.json's flags replace the template; generation_config.json adds EOS. */
    hf_tokenizer *t = load(j,
                           "{\"bos_token\": {\"content\": \"<|e|>\"}, \"eos_token\": \"<|bos|>\","
                           " \"add_bos_token\": false, \"add_eos_token\": true}",
                           "{\"bos_token_id\": 7, \"eos_token_id\": [265, 5, 99999, \"x\"]}");
    ck_assert_int_eq(hf_tokenizer_bos(t), 265);
    ck_assert_int_eq(hf_tokenizer_eos(t), 264);
    ck_assert(hf_tokenizer_is_eos(t, 264) && hf_tokenizer_is_eos(t, 265) &&
              hf_tokenizer_is_eos(t, 5) && !hf_tokenizer_is_eos(t, 6));
    ck_assert(!hf_tokenizer_is_eos(t, -1) && !hf_tokenizer_is_eos(t, 267));
    expect(t, "ab", 2, 1, (const int[]){ 256, 264, -1 });
    hf_tokenizer_free(t);

    /* From files: the configs are found beside tokenizer.json. */
    char path[512], err[512];
    char *s = cJSON_PrintUnformatted(j);
    snprintf(path, sizeof path, "%s/tokenizer.json", df11_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/generation_config.json", df11_test_tmpdir());
    f = fopen(path, "w");
    fputs("{\"eos_token_id\": 266}", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer.json", df11_test_tmpdir());
    ck_assert_msg(hf_tokenizer_load(&t, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(hf_tokenizer_bos(t), 264);
    ck_assert_int_eq(hf_tokenizer_eos(t), 266);
    hf_tokenizer_free(t);
    snprintf(path, sizeof path, "%s/missing.json", df11_test_tmpdir());
    ck_assert_int_eq(hf_tokenizer_load(&t, path, err, sizeof err), -1);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(hf_tokenizer_load(&t, df11_test_tmpdir(), err, sizeof err), -1);
    /* Broken configs are errors too. */
    ck_assert_int_eq(hf_tokenizer_load_buffer(&t, s, strlen(s), "[1]", 3, NULL, 0, err, sizeof err),
                     -1);
    ck_assert_int_eq(hf_tokenizer_load_buffer(&t, s, strlen(s), NULL, 0, "{", 1, err, sizeof err),
                     -1);
    free(s);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_sentencepiece)
{
    cJSON *j = sentencepiece_json(1);
    hf_tokenizer *t = load(j, "{\"bos_token\": \"<s>\", \"add_bos_token\": true}", NULL);
    /* "ab ab" is ▁ab▁ab: "▁ a" (rank 0) goes first, so "a b" (1) finds no pair left and
     * "▁a b" (2) ends it. */
    expect(t, "ab ab", 5, 1, (const int[]){ 1, 264, 264, -1 });
    /* é has no piece: its two bytes as <0xC3> <0xA9>. */
    expect(t, "a\xc3\xa9", 3, 0, (const int[]){ 262, 3 + 0xc3, 3 + 0xa9, -1 });
    /* Added tokens split the text; each stretch gets its own ▁ (the legacy behaviour). */
    expect(t, "a</s>b", 6, 0, (const int[]){ 262, 2, 259, 261, -1 });
    int ids[32];
    char out[64], err[256];
    int n = hf_tokenizer_encode(t, "ab a\xc3\xa9", 7, 1, ids, 32, err, sizeof err);
    ck_assert_int_gt(n, 0);
    /* Decoding drops the first ▁'s space (Strip), joins the fallback bytes. */
    decode_all(t, ids + 1, n - 1, out, sizeof out);
    ck_assert_str_eq(out, "ab a\xc3\xa9");
    hf_tokenizer_free(t);
    cJSON_Delete(j);

    /* Without byte fallback, unknown characters become one fused <unk>. */
    j = sentencepiece_json(0);
    t = load(j, NULL, NULL);
    expect(t,
           "a\xc3\xa9\xc3\xa9"
           "b",
           6, 0, (const int[]){ 262, 0, 261, -1 });
    hf_tokenizer_free(t);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_metaspace)
{
    /* The newer form: Metaspace pre-tokenizer (prepend_scheme first, split) instead of the
     * normalizer; only the text's start gets a ▁. */
    cJSON *j = sentencepiece_json(1);
    cJSON_ReplaceItemInObject(j, "normalizer", cJSON_CreateNull());
    cJSON *ms = cJSON_CreateObject();
    cJSON_AddStringToObject(ms, "type", "Metaspace");
    cJSON_AddStringToObject(ms, "replacement", "▁");
    cJSON_AddStringToObject(ms, "prepend_scheme", "first");
    cJSON_AddBoolToObject(ms, "split", 1);
    cJSON_ReplaceItemInObject(j, "pre_tokenizer", ms);
    cJSON *md = cJSON_Duplicate(ms, 1);
    cJSON_ReplaceItemInObject(j, "decoder", md);
    hf_tokenizer *t = load(j, NULL, NULL);
    expect(t, "ab ab", 5, 0, (const int[]){ 264, 264, -1 });
    expect(t, "a</s>b", 6, 0, (const int[]){ 262, 2, 261, -1 });
    expect(t, "  a", 3, 0, (const int[]){ 259, 262, -1 });
    size_t m;
    const char *s = hf_tokenizer_decode(t, -1, 264, &m);
    ck_assert(m == 2 && memcmp(s, "ab", 2) == 0);
    s = hf_tokenizer_decode(t, 264, 264, &m);
    ck_assert(m == 3 && memcmp(s, " ab", 3) == 0);
    hf_tokenizer_free(t);
    cJSON_Delete(j);
}
END_TEST

/* Replaces `path` (a.b.c) in a copy of the good file with `value` (JSON text); the result
 * must be refused with a message, and `want` must appear in it. */
static void refuse(cJSON *good, const char *path, const char *value, const char *want)
{
    cJSON *j = cJSON_Duplicate(good, 1), *o = j;
    char key[64];
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        memcpy(key, p, n);
        key[n] = 0;
        if (!dot) break;
        o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(key)) : cJSON_GetObjectItem(o, key);
        ck_assert_msg(o != NULL, "%s", path);
        p = dot + 1;
    }
    cJSON *v = value ? cJSON_Parse(value) : NULL;
    ck_assert_msg(!value || v, "test value %s", value);
    if (cJSON_IsArray(o)) {
        if (v)
            cJSON_ReplaceItemInArray(o, atoi(key), v);
        else
            cJSON_DeleteItemFromArray(o, atoi(key));
    } else {
        cJSON_DeleteItemFromObject(o, key);
        if (v) cJSON_AddItemToObject(o, key, v);
    }
    char *s = cJSON_PrintUnformatted(j), err[512] = "";
    hf_tokenizer *t = (hf_tokenizer *)1;
    ck_assert_msg(hf_tokenizer_load_buffer(&t, s, strlen(s), NULL, 0, NULL, 0, err, sizeof err) ==
                      -1,
                  "%s = %s was accepted", path, value ? value : "(removed)");
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, want), "%s = %s: message '%s' lacks '%s'", path, value, err, want);
    free(s);
    cJSON_Delete(j);
}

START_TEST(test_rejects_bad_files)
{
    cJSON *g = byte_level_json();
    refuse(g, "model", NULL, "no 'model'");
    refuse(g, "model.type", "\"Unigram\"", "Unigram");
    refuse(g, "model.vocab", "[]", "vocab");
    refuse(g, "model.vocab.a", "-1", "'a'");
    refuse(g, "model.vocab.a", "1.5", "'a'");
    refuse(g, "model.vocab.a", "1e9", "'a'");
    refuse(g, "model.vocab.a", "\"97\"", "'a'");
    refuse(g, "model.vocab.a", "98", "two pieces");
    refuse(g, "model.vocab.a", "100000", "dense");
    refuse(g, "model.merges", "{}", "merges");
    refuse(g, "model.merges.0", "\"a b c\"", "merge 0");
    refuse(g, "model.merges.0", "\"ab\"", "merge 0");
    refuse(g, "model.merges.0", "[\"a\"]", "merge 0");
    refuse(g, "model.merges.0", "[\"a\", 1]", "merge 0");
    refuse(g, "model.merges.0", "\"a zz\"", "second piece");
    refuse(g, "model.merges.0", "\"c a\"", "result");
    refuse(g, "model.unk_token", "\"<nope>\"", "unk_token");
    refuse(g, "model.byte_fallback", "1", "byte_fallback");
    refuse(g, "model.dropout", "0.1", "dropout");
    refuse(g, "model.continuing_subword_prefix", "\"##\"", "continuing_subword_prefix");
    refuse(g, "added_tokens.0.content", "\"\"", "added_tokens");
    refuse(g, "added_tokens.0.content", "\"\xff\"", "added_tokens"); /* not UTF-8 */
    refuse(g, "added_tokens.0.single_word", "true", "single_word");
    refuse(g, "added_tokens.0.lstrip", "1", "lstrip");
    refuse(g, "added_tokens.0.id", "-3", "added_tokens");
    refuse(g, "normalizer", "{\"type\": \"NFKC\"}", "NFKC");
    refuse(g, "normalizer",
           "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"a\"}, \"content\": \"b\"}",
           "Replace");
    refuse(g, "normalizer",
           "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", "
           "\"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
           "\"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": "
           "[]}]}]}]}]}",
           "too deep");
    refuse(g, "pre_tokenizer", "{\"type\": \"Whitespace\"}", "Whitespace");
    refuse(g, "pre_tokenizer.pretokenizers.0.pattern.Regex", "\"(\"", "pattern");
    refuse(g, "pre_tokenizer.pretokenizers.0.pattern", "{}", "pattern");
    refuse(g, "pre_tokenizer.pretokenizers.0.behavior", "\"Sideways\"", "behavior");
    refuse(g, "pre_tokenizer.pretokenizers.1.use_regex", "\"yes\"", "use_regex");
    refuse(g, "decoder", "{\"type\": \"WordPiece\"}", "WordPiece");
    refuse(g, "post_processor", "{\"type\": \"BertProcessing\"}", "BertProcessing");
    refuse(g, "post_processor.special_tokens.<|bos|>.ids", "[99999]", "special token");

    /* Every proper prefix of a good file, and non-objects, are refused without a crash. */
    char *s = cJSON_PrintUnformatted(g), err[512];
    size_t n = strlen(s);
    hf_tokenizer *t;
    for (size_t cut = 0; cut < n; cut += 1 + cut / 64)
        ck_assert_int_eq(hf_tokenizer_load_buffer(&t, s, cut, NULL, 0, NULL, 0, err, sizeof err),
                         -1);
    ck_assert_int_eq(hf_tokenizer_load_buffer(&t, "[]", 2, NULL, 0, NULL, 0, err, sizeof err), -1);
    ck_assert_int_eq(hf_tokenizer_load_buffer(&t, NULL, 0, NULL, 0, NULL, 0, err, sizeof err), -1);
    free(s);
    cJSON_Delete(g);
}
END_TEST

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

START_TEST(test_bounded_time)
{
    /* 1 MiB of each shape: one long word, one long space run, many short pieces, added
     * token look-alikes. A quadratic encoder takes minutes on these. The check is on the
     * growth from a quarter of the text to all of it (4x for a linear encoder, 16x for a
     * quadratic one), with a generous bound besides, so that it holds on a slow machine and
     * under the sanitizers (the long word takes ~4 s under TSan on 2 cores). */
    cJSON *j = byte_level_json();
    hf_tokenizer *t = load(j, NULL, NULL);
    const size_t n = 1 << 20;
    char *text = malloc(n);
    int *ids = malloc(3 * n * sizeof *ids);
    char err[256];
    static const char *const unit[] = { "ab", " ", "a ", "<|e", "\xff", "1 a\n" };
    for (int u = 0; u < 6; u++) {
        size_t ul = strlen(unit[u]);
        for (size_t i = 0; i < n; i++) text[i] = unit[u][i % ul];
        double t0 = seconds();
        int k = hf_tokenizer_encode(t, text, n / 4, 0, ids, (int)(3 * n), err, sizeof err);
        const double quarter = seconds() - t0;
        ck_assert_msg(k > 0, "%s", err);
        t0 = seconds();
        k = hf_tokenizer_encode(t, text, n, 0, ids, (int)(3 * n), err, sizeof err);
        const double dt = seconds() - t0;
        ck_assert_msg(k > 0, "%s", err);
        fprintf(stderr, "1 MiB of '%s': %d ids in %.2f s (a quarter of it: %.2f s)\n",
                u == 4 ? "\\xff" : unit[u], k, dt, quarter);
        ck_assert_msg(dt < 10 * quarter + 0.5, "1 MiB took %.2f s, a quarter of it %.2f s", dt,
                      quarter);
        ck_assert_msg(dt < 60, "1 MiB took %.1f s", dt);
    }
    hf_tokenizer_free(t);

    /* A catastrophic pattern stops at the match limit instead of running for ages. */
    cJSON *split = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pre_tokenizer"), "pretokenizers"), 0);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(split, "pattern"), "Regex",
                              cJSON_CreateString("(a|aa)+$"));
    t = load(j, NULL, NULL);
    memset(text, 'a', 1 << 16);
    text[1 << 16] = 'b';
    double t0 = seconds();
    int k = hf_tokenizer_encode(t, text, (1 << 16) + 1, 0, ids, (int)(3 * n), err, sizeof err);
    fprintf(stderr, "catastrophic regex: %d in %.2f s (%s)\n", k, seconds() - t0, k < 0 ? err : "");
    ck_assert_msg(seconds() - t0 < 10, "took %.1f s", seconds() - t0);
    if (k < 0) ck_assert_msg(strstr(err, "regex"), "%s", err);
    hf_tokenizer_free(t);
    free(text);
    free(ids);
    cJSON_Delete(j);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer_json");
    TCase *tc = tcase_create("tokenizer_json");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_byte_level_merges);
    tcase_add_test(tc, test_chat);
    tcase_add_test(tc, test_added_strip);
    tcase_add_test(tc, test_nfc);
    tcase_add_test(tc, test_configs);
    tcase_add_test(tc, test_sentencepiece);
    tcase_add_test(tc, test_metaspace);
    tcase_add_test(tc, test_rejects_bad_files);
    tcase_add_test(tc, test_bounded_time);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
