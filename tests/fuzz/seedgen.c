/* Writes the seed inputs that no df11 tool makes, into OUT/<target>/ (make_seeds.sh adds
 * the tool-made ones): small safetensors files (also OUT/work/small.safetensors for
 * df11-compress), coded tensors from the encoder for fuzz_coded, tokenizer.bin images built
 * here (no third-party vocabulary is copied) for fuzz_tokenizer, and memstat pages laid out
 * as the runtime writes them for fuzz_memstat. Deterministic: the same bytes every run.
 *
 * Usage: fuzz_seedgen OUT */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec/codec.h"
#include "common/util.h"
#include "runtime/memstat.h"
#include "writer/safetensors_write.h"

static const char *out_dir;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) /* splitmix64 */
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* BF16 of N(0, sigma^2), by Box-Muller, truncated (good enough for seeds). */
static uint16_t rand_weight(double sigma)
{
    double u = ((double)(next_rand() >> 11) + 0.5) / 9007199254740992.0;
    double v = (double)(next_rand() >> 11) / 9007199254740992.0;
    float f = (float)(sigma * sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)(bits >> 16);
}

static void mkdir_p(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz_seedgen: mkdir '%s': %s\n", path, strerror(errno));
        exit(1);
    }
}

static void write_seed(const char *target, const char *name, const void *a, size_t na,
                       const void *b, size_t nb)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f) != 0) {
        fprintf(stderr, "fuzz_seedgen: cannot write '%s'\n", path);
        exit(1);
    }
}

/* ---- safetensors ---- */

static void safetensors_seeds(void)
{
    static uint16_t bf16[3][40];
    static float f32[6];
    static int8_t i8[5] = { 1, -2, 3, -4, 5 };
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 40; i++) bf16[t][i] = rand_weight(0.02);
    for (int i = 0; i < 6; i++) f32[i] = (float)i / 7;
    const df11_tensor_source tensors[] = {
        { "model.embed_tokens.weight", DF11_DTYPE_BF16, 2, { 8, 5 }, bf16[0] },
        { "model.layers.0.self_attn.q_proj.weight", DF11_DTYPE_BF16, 2, { 4, 10 }, bf16[1] },
        { "model.layers.0.mlp.up_proj.weight", DF11_DTYPE_BF16, 1, { 40 }, bf16[2] },
        { "model.layers.0.input_layernorm.weight", DF11_DTYPE_F32, 2, { 2, 3 }, f32 },
        { "model.norm.weight", DF11_DTYPE_I8, 1, { 5 }, i8 },
        { "scalar", DF11_DTYPE_F32, 0, { 0 }, f32 },
        { "empty", DF11_DTYPE_BF16, 2, { 0, 3 }, bf16[0] },
    };
    char path[4096];
    snprintf(path, sizeof path, "%s/work", out_dir);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/work/small.safetensors", out_dir);
    /* The file df11-compress turns into small .df11 seeds: BF16 tensors only, blocks too. */
    if (df11i_st_write(path, tensors, 3, "{\"format\": \"pt\"}") != DF11_OK) {
        fprintf(stderr, "fuzz_seedgen: cannot write '%s'\n", path);
        exit(1);
    }
    const size_t n = sizeof tensors / sizeof tensors[0];
    snprintf(path, sizeof path, "%s/safetensors", out_dir);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/safetensors/mixed.safetensors", out_dir);
    if (df11i_st_write(path, tensors, n, "{\"format\": \"pt\", \"note\": \"seed\"}") != DF11_OK)
        exit(1);
    snprintf(path, sizeof path, "%s/safetensors/one.safetensors", out_dir);
    if (df11i_st_write(path, tensors + 4, 1, NULL) != DF11_OK) exit(1);
}

/* ---- coded tensors (fuzz_coded's input format: see fuzz_coded.c) ---- */

static void coded_seed(const char *name, uint64_t n, uint32_t max_len, uint32_t lane_symbols,
                       int all_equal)
{
    uint16_t *w = malloc((n ? n : 1) * 2);
    uint8_t *sm = malloc(n ? n : 1);
    if (!w || !sm) exit(1);
    for (uint64_t i = 0; i < n; i++) w[i] = all_equal ? 0x3c00 : rand_weight(0.02);
    df11i_encoded enc;
    if (df11i_encode(w, n, max_len, lane_symbols, 1, sm, &enc) != DF11_OK) {
        fprintf(stderr, "fuzz_seedgen: encode %s failed\n", name);
        exit(1);
    }
    const df11i_coded *c = &enc.coded;
    const size_t cb = df11i_codebook_size(&c->code);
    const uint64_t lanes = df11i_n_lane_entries(n, lane_symbols);
    const size_t size = 16 + cb + c->n_chunks * 4 + lanes * 2 + c->stream_bytes + n;
    uint8_t *buf = calloc(1, size), *p = buf;
    if (!buf) exit(1);
    p[0] = (uint8_t)c->max_len;
    p[1] = (uint8_t)cb;
    df11i_st16(p + 2, (uint16_t)c->lane_symbols);
    df11i_st32(p + 4, (uint32_t)n);
    df11i_st32(p + 8, (uint32_t)c->n_chunks);
    df11i_st32(p + 12, (uint32_t)c->stream_bytes);
    p += 16;
    df11i_codebook_write(&c->code, p);
    p += cb;
    memcpy(p, c->chunks, c->n_chunks * 4);
    p += c->n_chunks * 4;
    memcpy(p, c->lanes, lanes * 2);
    p += lanes * 2;
    memcpy(p, c->stream, c->stream_bytes);
    p += c->stream_bytes;
    memcpy(p, sm, n);
    write_seed("coded", name, buf, size, NULL, 0);
    free(buf);
    df11i_encoded_free(&enc);
    free(w);
    free(sm);
}

/* ---- tokenizer.bin images (fuzz_tokenizer's input: u16 vocab, u8 prompt length,
 * u8 max_ids, the image, the prompt) ---- */

typedef struct image {
    uint8_t *p;
    size_t n, cap;
} image;

static void put(image *im, const void *src, size_t n)
{
    if (im->n + n > im->cap) {
        im->cap = (im->n + n) * 2;
        if (!(im->p = realloc(im->p, im->cap))) exit(1);
    }
    memcpy(im->p + im->n, src, n);
    im->n += n;
}

static void put_piece(image *im, float score, const char *piece)
{
    int32_t len = (int32_t)strlen(piece);
    put(im, &score, 4);
    put(im, &len, 4);
    put(im, piece, (size_t)len);
}

static void tokenizer_seed(const char *name, const image *bin, int vocab, const char *prompt,
                           int bos, int max_ids)
{
    /* Bit 0 of the prompt length asks for BOS: a trailing space sets it right. */
    char text[256];
    snprintf(text, sizeof text, "%s%s", prompt, (int)(strlen(prompt) & 1) != bos ? " " : "");
    const uint8_t head[4] = { (uint8_t)vocab, (uint8_t)(vocab >> 8), (uint8_t)strlen(text),
                              (uint8_t)max_ids };
    image in = { 0 };
    put(&in, head, 4);
    put(&in, bin->p, bin->n);
    put(&in, text, strlen(text));
    write_seed("tokenizer", name, in.p, in.n, NULL, 0);
    free(in.p);
}

static void tokenizer_seeds(void)
{
    /* llama2.c's layout: <unk>, <s>, </s>, 256 byte tokens, then merges by score. */
    static const char *merges[] = { " ",    "e",     "t",  "a",   "o",    "n",    "h",
                                    " t",   "th",    "he", " th", "the",  " the", "an",
                                    " a",   "on",    "ce", "nce", "o ",   "up",   " up",
                                    "Once", " Once", "é",  "ä",   "日本", "<0x",  NULL };
    image bin = { 0 };
    int32_t max_len = 8;
    put(&bin, &max_len, 4);
    put_piece(&bin, 0, "<unk>");
    put_piece(&bin, 0, "<s>");
    put_piece(&bin, 0, "</s>");
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        put_piece(&bin, 0, piece);
    }
    int vocab = 259;
    for (int i = 0; merges[i]; i++, vocab++) put_piece(&bin, -(float)i, merges[i]);
    tokenizer_seed("bytes-bos", &bin, vocab, "Once upon a time, the end.", 1, 0);
    tokenizer_seed("bytes-utf8", &bin, vocab,
                   "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xff", 0, 0);
    tokenizer_seed("bytes-short", &bin, vocab, "the the the the the", 1, 4);
    free(bin.p);

    /* A vocabulary without byte tokens: text outside it cannot be encoded. */
    image small = { 0 };
    max_len = 3;
    put(&small, &max_len, 4);
    static const char *pieces[] = {
        "<unk>", "<s>", "</s>", " ", "a", "b", "ab", " ab", "aba", NULL
    };
    int n = 0;
    for (; pieces[n]; n++) put_piece(&small, (float)n, pieces[n]);
    tokenizer_seed("small", &small, n, "abab aba", 0, 0);
    tokenizer_seed("small-missing", &small, n, "abc", 1, 0);
    free(small.p);
}

/* ---- tokenizer.json files (fuzz_tokenizer_json's input: u8 prompt length, u8 flags,
 * the JSON, the prompt), written here: a byte-level one with Llama-3's split regex and a
 * SentencePiece-style one in each of its two forms ---- */

static void tokenizer_json_seed(const char *name, const char *json, const char *prompt, int flags)
{
    const uint8_t head[2] = { (uint8_t)strlen(prompt), (uint8_t)flags };
    image in = { 0 };
    put(&in, head, 2);
    put(&in, json, strlen(json));
    put(&in, prompt, strlen(prompt));
    write_seed("tokenizer_json", name, in.p, in.n, NULL, 0);
    free(in.p);
}

static void tokenizer_json_seeds(void)
{
    image j = { 0 };
    char s[64];
    static const char head[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {";
    put(&j, head, strlen(head));
    for (int b = 0, extra = 0; b < 256; b++) { /* GPT-2's byte characters */
        int cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? b : 256 + extra++;
        if (cp == '"' || cp == '\\')
            snprintf(s, sizeof s, "\"\\%c\": %d, ", cp, b);
        else if (cp < 0x80)
            snprintf(s, sizeof s, "\"%c\": %d, ", cp, b);
        else
            snprintf(s, sizeof s, "\"%c%c\": %d, ", 0xc0 | cp >> 6, 0x80 | (cp & 0x3f), b);
        put(&j, s, strlen(s));
    }
    static const char rest[] =
        "\"he\": 256, \"ll\": 257, \"hell\": 258, \"hello\": 259, \"\u0120w\": 260}, "
        "\"merges\": [\"h e\", [\"l\", \"l\"], \"he ll\", \"hell o\", \"\u0120 w\"]}, "
        "\"added_tokens\": [{\"id\": 261, \"content\": \"<|start_header_id|>\", \"special\": true}, "
        "{\"id\": 262, \"content\": \"<|eot_id|>\", \"special\": true}], "
        "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
        "\"pattern\": {\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
        "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, "
        "\"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
        "\"use_regex\": false}]}, \"decoder\": {\"type\": \"ByteLevel\"}}";
    put(&j, rest, sizeof rest);
    tokenizer_json_seed("byte-level", (const char *)j.p, "hello world <|eot_id|> 12345 caf\xc3\xa9",
                        1);
    tokenizer_json_seed("byte-level-invalid", (const char *)j.p, "\xff\xfe  \n\n hello\xe2\x82", 0);
    free(j.p);

    static const char sp[] =
        "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
        "\"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, "
        "\"<0xC3>\": 3, \"<0xA9>\": 4, \"\u2581\": 5, \"a\": 6, \"b\": 7, \"\u2581a\": 8, \"ab\": 9}, "
        "\"merges\": [\"\u2581 a\", \"a b\"]}, "
        "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}], "
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
        "\"prepend\": \"\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
        "\"content\": \"\u2581\"}]}, "
        "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
        "\"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
        "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}, "
        "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
        "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": "
        "{\"ids\": [1]}}}}";
    tokenizer_json_seed("sentencepiece", sp, "ab ab<s>a\xc3\xa9 zz", 1);
    static const char ms[] =
        "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, "
        "\"vocab\": {\"<unk>\": 0, \"\u2581\": 1, \"a\": 2, \"\u2581a\": 3}, "
        "\"merges\": [[\"\u2581\", \"a\"]]}, \"pre_tokenizer\": {\"type\": \"Metaspace\", "
        "\"replacement\": \"\u2581\", \"prepend_scheme\": \"first\", \"split\": true}, "
        "\"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\u2581\", "
        "\"prepend_scheme\": \"first\"}}";
    tokenizer_json_seed("metaspace", ms, "a  a aaa", 0);
}

/* ---- memstat pages, as runtime/stats.c fills them ---- */

static void memstat_seeds(void)
{
    static uint8_t page[4096];
    df11i_memstat_page pg;
    memset(&pg, 0, sizeof pg);
    pg.magic = DF11_MEMSTAT_MAGIC;
    pg.version = DF11_MEMSTAT_VERSION;
    pg.size = sizeof pg;
    pg.pid = 4242;
    snprintf(pg.path, sizeof pg.path, "/models/tiny.df11");
    snprintf(pg.backend, sizeof pg.backend, "host");
    pg.n_blocks = 4;
    pg.n_groups = 7;
    pg.arena_slots = 2;
    pg.compressed_bytes = 1 << 20;
    pg.bf16_bytes = 3 << 19;
    pg.arena_bytes = 1 << 18;
    pg.resident_bytes = 1 << 20;
    pg.decodes = 12;
    pg.acquires = 12;
    pg.decode_ms = 1.5;
    pg.open_ms = 0.25;
    pg.updated_ns = 1700000000000000000ull;
    for (int i = 0; i < DF11_MEMSTAT_SLOTS; i++) pg.slot_block[i] = -1;
    pg.slot_block[0] = 3;
    pg.slot_state[0] = 2;
    pg.slot_block[1] = 0;
    pg.slot_state[1] = 1;
    memcpy(page, &pg, sizeof pg);
    write_seed("memstat", "page", page, sizeof page, NULL, 0);
    write_seed("memstat", "exact", page, sizeof pg, NULL, 0);
    write_seed("memstat", "short", page, 64, NULL, 0);
    pg.seq = 7; /* a writer in the middle of an update */
    memcpy(page, &pg, sizeof pg);
    write_seed("memstat", "odd-seq", page, sizeof page, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seedgen OUT\n");
        return 2;
    }
    out_dir = argv[1];
    mkdir_p(out_dir);
    safetensors_seeds();
    coded_seed("one", 1, 12, 2048, 0);
    coded_seed("equal", 300, 12, 8, 1);
    coded_seed("s8-l4", 1000, 4, 8, 0);
    coded_seed("s16-l15", 777, 15, 16, 0);
    coded_seed("s64-3chunks", 5000, 12, 64, 0);
    coded_seed("s2048-2lanes", 2100, 12, 2048, 0);
    tokenizer_seeds();
    tokenizer_json_seeds();
    memstat_seeds();
    return 0;
}
