/* DFloat11 folders (loader/dfloat11.h): a tiny random Llama is written in DFloat11's layout
 * by the encoder below, converted with df11_compress_path, and every tensor of the .df11
 * decoded back must equal the original BF16 bit for bit; then the decoder and the folder
 * reader are fed broken streams and folders, which must fail with a status, not crash.
 *
 * The encoder follows their compressor (dfloat11_utils.py of the `dfloat11` package,
 * written from its description in docs/FORMAT.md, not copied): Huffman code of the
 * exponents plus an end symbol, codes MSB first; per 8 code bytes a 5-bit gap to the first
 * code starting in them; per thread block the index of the first weight whose code starts
 * in it, then the weight count; the end symbol's first bits pad the last byte; gaps padded
 * with zeros to the whole grid; lookup tables by byte-aligned code prefix, sorted by length,
 * pointer values 256 - table. tests/dfloat11/compare_package.py makes the same kind of
 * folder with the package itself where it runs (a GPU machine). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "df11/compress.h"
#include "df11/file.h"
#include "loader/dfloat11.h"
#include "tests/testutil.h"
#include "writer/safetensors_write.h"

#define EOF_SYM 256
#define N_SYMS 257

/* ---- the encoder ---- */

typedef struct {
    uint8_t len[N_SYMS];
    uint32_t code[N_SYMS];
} huff;

/* Huffman code lengths of the symbols with a nonzero count (the end symbol gets count 1,
 * as theirs does), by repeatedly merging the two lightest trees; codes assigned canonically
 * (any prefix code is valid in the format). */
static void huff_build(const uint64_t *count, huff *h)
{
    uint64_t w[2 * N_SYMS];
    int parent[2 * N_SYMS], alive[2 * N_SYMS], n = N_SYMS;
    for (int s = 0; s < N_SYMS; s++) {
        w[s] = s == EOF_SYM ? 1 : count[s];
        alive[s] = w[s] > 0;
        parent[s] = -1;
    }
    for (;;) {
        int a = -1, b = -1;
        for (int i = 0; i < n; i++) {
            if (!alive[i]) continue;
            if (a < 0 || w[i] < w[a]) {
                b = a;
                a = i;
            } else if (b < 0 || w[i] < w[b]) {
                b = i;
            }
        }
        if (b < 0) break;
        w[n] = w[a] + w[b];
        alive[n] = 1;
        parent[n] = -1;
        alive[a] = alive[b] = 0;
        parent[a] = parent[b] = n++;
    }
    memset(h, 0, sizeof *h);
    for (int s = 0; s < N_SYMS; s++)
        if (s == EOF_SYM || count[s])
            for (int p = parent[s]; p >= 0; p = parent[p]) h->len[s]++;
    uint32_t next = 0;
    int prev_len = 0;
    for (int l = 1; l <= 32; l++)
        for (int s = 0; s < N_SYMS; s++)
            if (h->len[s] == l) {
                next <<= (l - prev_len);
                prev_len = l;
                h->code[s] = next++;
            }
}

typedef struct {
    uint8_t *bytes;
    size_t n, cap;
    uint64_t acc;
    int acc_bits;
} bit_writer;

static void put_byte(bit_writer *bw, uint8_t b)
{
    if (bw->n == bw->cap) {
        bw->cap = bw->cap ? 2 * bw->cap : 256;
        bw->bytes = realloc(bw->bytes, bw->cap);
        ck_assert_ptr_nonnull(bw->bytes);
    }
    bw->bytes[bw->n++] = b;
}

static void put_bits(bit_writer *bw, uint32_t code, int len)
{
    bw->acc = bw->acc << len | code;
    bw->acc_bits += len;
    while (bw->acc_bits >= 8) {
        put_byte(bw, (uint8_t)(bw->acc >> (bw->acc_bits - 8)));
        bw->acc_bits -= 8;
    }
    bw->acc &= (1ull << bw->acc_bits) - 1;
}

/* One module's five buffers (and its split positions), as their compressor stores them. */
typedef struct {
    uint8_t *luts, *encoded, *sm, *positions, *gaps;
    size_t n_luts, n_encoded, n_elements, n_positions, n_gaps;
} dfl_buffers;

typedef struct {
    uint32_t value;
    int len;
} prefix;

static int find_prefix(const prefix *p, int n, uint32_t value, int len)
{
    for (int i = 0; i < n; i++)
        if (p[i].len == len && p[i].value == value) return i;
    return -1;
}

static int cmp_prefix(const void *a, const void *b)
{
    const prefix *x = a, *y = b;
    return x->len != y->len ? x->len - y->len : (x->value > y->value) - (x->value < y->value);
}

static void build_luts(const huff *h, dfl_buffers *o)
{
    prefix p[64] = { { 0, 0 } };
    int n = 1;
    for (int s = 0; s < 256; s++)
        for (int l = 8; l < h->len[s]; l += 8)
            if (find_prefix(p, n, h->code[s] >> (h->len[s] - l), l) < 0) {
                ck_assert_int_lt(n, 64);
                p[n++] = (prefix){ h->code[s] >> (h->len[s] - l), l };
            }
    qsort(p, (size_t)n, sizeof *p, cmp_prefix);
    ck_assert_int_le(n, 17); /* pointers are 240..255 */
    o->n_luts = (size_t)n + 1;
    o->luts = calloc(o->n_luts, 256);
    uint8_t cur = 0; /* entries no code names repeat the one before, as theirs do */
    for (int t = 0; t < n; t++) {
        int set[256] = { 0 };
        uint8_t val[256];
        for (int s = 0; s < 256; s++) {
            int L = h->len[s], pl = p[t].len;
            if (L <= pl || (h->code[s] >> (L - pl)) != p[t].value) continue;
            if ((L - 1) / 8 == pl / 8) {
                int r = L - pl;
                uint32_t key = (h->code[s] & ((1u << r) - 1)) << (8 - r);
                set[key] = 1;
                val[key] = (uint8_t)s;
            } else {
                uint32_t key = (h->code[s] >> (L - pl - 8)) & 0xff;
                int next = find_prefix(p, n, h->code[s] >> (L - pl - 8), pl + 8);
                ck_assert_int_gt(next, 0);
                set[key] = 1;
                val[key] = (uint8_t)(256 - next);
            }
        }
        for (int i = 0; i < 256; i++) {
            if (set[i]) cur = val[i];
            o->luts[256 * t + i] = cur;
        }
    }
    for (int s = 0; s < 256; s++) o->luts[256 * n + s] = h->len[s];
}

static void encode_module(const uint16_t *w, size_t n, uint32_t tpb, dfl_buffers *o)
{
    uint64_t count[N_SYMS] = { 0 };
    for (size_t i = 0; i < n; i++) count[(w[i] >> 7) & 0xff]++;
    huff h;
    huff_build(count, &h);
    for (int s = 0; s < N_SYMS; s++) ck_assert_int_le(h.len[s], 32);
    memset(o, 0, sizeof *o);
    build_luts(&h, o);
    o->n_elements = n;
    o->sm = malloc(n ? n : 1);
    bit_writer bw = { 0 };
    uint32_t *gaps = NULL, *pos = NULL;
    size_t n_gaps = 0, n_pos = 0;
    gaps = malloc(sizeof *gaps * (n + 2) * 2);
    pos = malloc(sizeof *pos * (n + 3));
    uint64_t total = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n && total % 8 == 0) break; /* theirs codes the end only to fill a byte */
        if (total / 64 + 1 > n_gaps) gaps[n_gaps++] = (uint32_t)(total % 64);
        if (total / (64ull * tpb) + 1 > n_pos) pos[n_pos++] = (uint32_t)i;
        if (i == n) {
            int have = bw.acc_bits + h.len[EOF_SYM];
            uint64_t bits = bw.acc << h.len[EOF_SYM] | h.code[EOF_SYM];
            put_byte(&bw, (uint8_t)(have >= 8 ? bits >> (have - 8) : bits << (8 - have)));
            break;
        }
        int e = (w[i] >> 7) & 0xff;
        o->sm[i] = (uint8_t)(((w[i] >> 8) & 0x80) | (w[i] & 0x7f));
        put_bits(&bw, h.code[e], h.len[e]);
        total += h.len[e];
    }
    pos[n_pos++] = (uint32_t)n;
    o->encoded = bw.bytes ? bw.bytes : malloc(1);
    o->n_encoded = bw.n;
    size_t blocks = (bw.n + 8 * tpb - 1) / (8 * tpb), threads = blocks * tpb;
    o->n_gaps = (5 * threads + 7) / 8;
    o->gaps = calloc(o->n_gaps ? o->n_gaps : 1, 1);
    for (size_t t = 0; t < n_gaps && t < threads; t++)
        for (int b = 0; b < 5; b++)
            if (gaps[t] >> (4 - b) & 1)
                o->gaps[(5 * t + b) / 8] |= (uint8_t)(0x80 >> ((5 * t + b) % 8));
    o->n_positions = 4 * n_pos;
    o->positions = malloc(o->n_positions);
    for (size_t k = 0; k < n_pos; k++)
        for (int b = 0; b < 4; b++) o->positions[4 * k + b] = (uint8_t)(pos[k] >> (8 * b));
    free(gaps);
    free(pos);
}

static void buffers_free(dfl_buffers *o)
{
    free(o->luts);
    free(o->encoded);
    free(o->sm);
    free(o->positions);
    free(o->gaps);
}

static df11i_dfl_stream stream_of(const dfl_buffers *o, uint32_t tpb)
{
    return (df11i_dfl_stream){ .luts = o->luts,
                               .luts_bytes = 256 * o->n_luts,
                               .encoded = o->encoded,
                               .encoded_bytes = o->n_encoded,
                               .sign_mantissa = o->sm,
                               .n_elements = o->n_elements,
                               .output_positions = o->positions,
                               .positions_bytes = o->n_positions,
                               .gaps = o->gaps,
                               .gaps_bytes = o->n_gaps,
                               .threads_per_block = tpb };
}

/* ---- a tiny Llama ---- */

enum { HIDDEN = 64, INTER = 160, HEADS = 4, KV_HEADS = 2, HEAD_DIM = 16, LAYERS = 2, VOCAB = 5000 };

typedef struct {
    char name[96];
    uint64_t rows, cols; /* cols 0: a 1-D tensor */
    uint16_t *w;
} weight;

static const char *const layer_parts[7] = { "self_attn.q_proj", "self_attn.k_proj",
                                            "self_attn.v_proj", "self_attn.o_proj",
                                            "mlp.gate_proj",    "mlp.up_proj",
                                            "mlp.down_proj" };

typedef struct {
    weight w[64];
    int n;
} model;

static weight *add_weight(model *m, const char *name, uint64_t rows, uint64_t cols)
{
    ck_assert_int_lt(m->n, 64);
    weight *w = &m->w[m->n++];
    snprintf(w->name, sizeof w->name, "%s", name);
    w->rows = rows;
    w->cols = cols;
    return w;
}

static uint64_t n_of(const weight *w) { return w->rows * (w->cols ? w->cols : 1); }

/* Exponent 150 + k appears Fibonacci(k + 1) times, k = 1..25 (1, 2, 3, 5, ...: no ties
 * with the end symbol's 1 that would split the chain): a Huffman code over 24 bits deep,
 * so that four lookup tables are walked; the rest of the tensor is ordinary weights. */
static void fill_deep(uint16_t *w, uint64_t n, uint64_t *rng)
{
    uint64_t at = 0, f0 = 1, f1 = 2;
    for (int k = 1; k <= 25; k++) {
        for (uint64_t c = 0; c < f0 && at < n; c++)
            w[at++] = (uint16_t)((df11_test_rand(rng) & 0x807f) | (uint16_t)(150 + k) << 7);
        uint64_t f2 = f0 + f1;
        f0 = f1;
        f1 = f2;
    }
    ck_assert_uint_le(at, n);
    if (at < n) df11_test_fill_weights(w + at, n - at, 1, rng);
    for (uint64_t i = n - 1; i > 0; i--) { /* shuffle */
        uint64_t j = df11_test_rand(rng) % (i + 1);
        uint16_t t = w[i];
        w[i] = w[j];
        w[j] = t;
    }
}

static void make_model(model *m, uint64_t *rng)
{
    memset(m, 0, sizeof *m);
    char name[96];
    add_weight(m, "model.embed_tokens.weight", VOCAB, HIDDEN);
    add_weight(m, "lm_head.weight", VOCAB, HIDDEN);
    add_weight(m, "model.norm.weight", HIDDEN, 0);
    const uint64_t shapes[7][2] = { { HEADS * HEAD_DIM, HIDDEN },
                                    { KV_HEADS * HEAD_DIM, HIDDEN },
                                    { KV_HEADS * HEAD_DIM, HIDDEN },
                                    { HIDDEN, HEADS * HEAD_DIM },
                                    { INTER, HIDDEN },
                                    { INTER, HIDDEN },
                                    { HIDDEN, INTER } };
    for (int l = 0; l < LAYERS; l++) {
        for (int k = 0; k < 7; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, layer_parts[k]);
            add_weight(m, name, shapes[k][0], shapes[k][1]);
        }
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        add_weight(m, name, HIDDEN, 0);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        add_weight(m, name, HIDDEN, 0);
    }
    for (int i = 0; i < m->n; i++) {
        uint64_t n = n_of(&m->w[i]);
        m->w[i].w = malloc(n * 2);
        if (i == 0)
            fill_deep(m->w[i].w, n, rng);
        else
            df11_test_fill_weights(m->w[i].w, n, m->w[i].cols ? m->w[i].cols : n, rng);
    }
}

static void model_free(model *m)
{
    for (int i = 0; i < m->n; i++) free(m->w[i].w);
}

static const weight *find_weight(const model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->w[i].name, name) == 0) return &m->w[i];
    return NULL;
}

/* ---- the folder ---- */

/* What the folder writer may spoil, for the corrupt-folder tests. */
typedef struct {
    uint32_t tpb;
    int bytes_per_thread;
    int intermediate_size;
    const char *layer_pattern; /* pattern_dict key of the decoder layers */
    int drop_part;             /* 1..6: leave that part of module 0 out */
    int luts_dtype_i8;
    int swap_splits;
    int one_attr_less;
    const char *rename_attr; /* replaces mlp.down_proj in pattern_dict */
} folder_opts;

static const char *const parts[6] = { "luts",          "encoded_exponent",
                                      "sign_mantissa", "output_positions",
                                      "gaps",          "split_positions" };

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static char *config_text(const folder_opts *fo)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_type", "llama");
    cJSON_AddNumberToObject(root, "hidden_size", HIDDEN);
    cJSON_AddNumberToObject(root, "intermediate_size",
                            fo->intermediate_size ? fo->intermediate_size : INTER);
    cJSON_AddNumberToObject(root, "num_hidden_layers", LAYERS);
    cJSON_AddNumberToObject(root, "num_attention_heads", HEADS);
    cJSON_AddNumberToObject(root, "num_key_value_heads", KV_HEADS);
    cJSON_AddNumberToObject(root, "vocab_size", VOCAB);
    cJSON *d = cJSON_AddObjectToObject(root, "dfloat11_config");
    cJSON_AddStringToObject(d, "version", "0.5.0");
    cJSON *t = cJSON_AddArrayToObject(d, "threads_per_block");
    cJSON_AddItemToArray(t, cJSON_CreateNumber(fo->tpb));
    cJSON_AddNumberToObject(d, "bytes_per_thread", fo->bytes_per_thread ? fo->bytes_per_thread : 8);
    cJSON *pd = cJSON_AddObjectToObject(d, "pattern_dict");
    cJSON_AddArrayToObject(pd, "lm_head");
    cJSON_AddArrayToObject(pd, "model\\.embed_tokens");
    cJSON *attrs =
        cJSON_AddArrayToObject(pd, fo->layer_pattern ? fo->layer_pattern : "model\\.layers\\.\\d+");
    for (int k = 0; k < 7 - fo->one_attr_less; k++)
        cJSON_AddItemToArray(attrs, cJSON_CreateString(k == 6 && fo->rename_attr ? fo->rename_attr
                                                                                 : layer_parts[k]));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

static int cmp_as_safetensors(const void *a, const void *b)
{
    const df11_tensor_source *x = a, *y = b;
    size_t sx = df11_dtype_size(x->dtype), sy = df11_dtype_size(y->dtype);
    return sx != sy ? (sx < sy) - (sx > sy) : strcmp(x->name, y->name);
}

/* Writes the model as a DFloat11 folder `dir`: embed_tokens, lm_head and each decoder
 * layer (its seven weights together) compressed, the norms stored as they are. */
static void write_folder(const model *m, const char *dir, const folder_opts *fo)
{
    mkdir(dir, 0777);
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *cfg = config_text(fo);
    write_text(path, cfg);
    free(cfg);

    df11_tensor_source t[64];
    char names[64][128];
    dfl_buffers bufs[2 + LAYERS];
    int64_t splits[LAYERS][6];
    size_t n = 0;
    for (int mod = 0; mod < 2 + LAYERS; mod++) {
        char mod_name[64];
        const weight *ws[7];
        int k_n;
        if (mod < 2) {
            snprintf(mod_name, sizeof mod_name, "%s", mod == 0 ? "model.embed_tokens" : "lm_head");
            snprintf(path, sizeof path, "%s.weight", mod_name);
            ws[0] = find_weight(m, path);
            k_n = 1;
        } else {
            snprintf(mod_name, sizeof mod_name, "model.layers.%d", mod - 2);
            for (int k = 0; k < 7; k++) {
                snprintf(path, sizeof path, "%s.%s.weight", mod_name, layer_parts[k]);
                ws[k] = find_weight(m, path);
            }
            k_n = 7;
        }
        uint64_t total = 0;
        for (int k = 0; k < k_n; k++) total += n_of(ws[k]);
        uint16_t *cat = malloc(total * 2);
        uint64_t at = 0;
        for (int k = 0; k < k_n; k++) {
            memcpy(cat + at, ws[k]->w, n_of(ws[k]) * 2);
            at += n_of(ws[k]);
            if (mod >= 2 && k + 1 < k_n) splits[mod - 2][k] = (int64_t)at;
        }
        if (mod >= 2 && fo->swap_splits) {
            int64_t s = splits[mod - 2][0];
            splits[mod - 2][0] = splits[mod - 2][1];
            splits[mod - 2][1] = s;
        }
        encode_module(cat, total, fo->tpb, &bufs[mod]);
        free(cat);
        const dfl_buffers *b = &bufs[mod];
        for (int p = 0; p < 6; p++) {
            if (mod == 0 && fo->drop_part == p + 1) continue;
            snprintf(names[n], sizeof names[n], "%s.%s", mod_name, parts[p]);
            df11_tensor_source *s = &t[n++];
            *s = (df11_tensor_source){ .name = names[n - 1], .dtype = DF11_DTYPE_U8, .ndim = 1 };
            switch (p) {
            case 0:
                s->ndim = 2;
                s->shape[0] = b->n_luts;
                s->shape[1] = 256;
                s->data = b->luts;
                if (fo->luts_dtype_i8) s->dtype = DF11_DTYPE_I8;
                break;
            case 1: s->shape[0] = b->n_encoded, s->data = b->encoded; break;
            case 2: s->shape[0] = b->n_elements, s->data = b->sm; break;
            case 3: s->shape[0] = b->n_positions, s->data = b->positions; break;
            case 4: s->shape[0] = b->n_gaps, s->data = b->gaps; break;
            default:
                s->dtype = DF11_DTYPE_I64;
                s->shape[0] = (uint64_t)(k_n - 1);
                s->data = mod >= 2 ? (const void *)splits[mod - 2] : NULL;
            }
        }
    }
    for (int i = 0; i < m->n; i++) {
        if (m->w[i].cols) continue; /* the norms */
        t[n++] = (df11_tensor_source){ .name = m->w[i].name,
                                       .dtype = DF11_DTYPE_BF16,
                                       .ndim = 1,
                                       .shape = { m->w[i].rows },
                                       .data = m->w[i].w };
    }
    /* In the order the safetensors library writes: larger dtypes first, then by name (so
     * that a BF16 tensor never lands at an odd offset after U8 ones). */
    qsort(t, n, sizeof *t, cmp_as_safetensors);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_int_eq(df11i_st_write(path, t, n, NULL), DF11_OK);
    for (int mod = 0; mod < 2 + LAYERS; mod++) buffers_free(&bufs[mod]);
}

static char *tmp_path(const char *name)
{
    static char paths[8][700];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", df11_test_tmpdir(), name);
    return p;
}

/* Every tensor of the model is in the .df11 with its name, shape and bytes, and nothing
 * else is; the metadata is config.json without dfloat11_config. */
static void assert_df11_equals(const char *df11_path, const model *m)
{
    df11_file *f;
    ck_assert_int_eq(df11_file_open(df11_path, &f), DF11_OK);
    ck_assert_uint_eq(df11_file_n_tensors(f), (uint32_t)m->n);
    ck_assert_uint_eq(df11_file_n_layers(f), LAYERS);
    for (int i = 0; i < m->n; i++) {
        const weight *w = &m->w[i];
        uint32_t k;
        ck_assert_msg(df11_file_find_tensor(f, w->name, &k) == DF11_OK, "no tensor '%s'", w->name);
        const df11_tensor_info *ti = df11_file_tensor(f, k);
        ck_assert_int_eq(ti->dtype, DF11_DTYPE_BF16);
        ck_assert_uint_eq(ti->ndim, w->cols ? 2 : 1);
        ck_assert_uint_eq(ti->shape[0], w->rows);
        if (w->cols) ck_assert_uint_eq(ti->shape[1], w->cols);
        const df11_group_info *g = df11_file_group(f, ti->group);
        void *payload = malloc(g->payload_size);
        uint16_t *out = malloc(ti->nbytes);
        ck_assert_int_eq(df11_file_read_group(f, ti->group, payload), DF11_OK);
        ck_assert_int_eq(df11_tensor_decode_host(f, k, payload, out, 2), DF11_OK);
        ck_assert_msg(memcmp(out, w->w, ti->nbytes) == 0, "'%s' differs", w->name);
        free(out);
        free(payload);
    }
    size_t len;
    const char *meta = df11_file_metadata(f, &len);
    cJSON *root = cJSON_ParseWithLength(meta, len);
    ck_assert_ptr_nonnull(root);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(root, "dfloat11_config"));
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(root, "hidden_size")->valueint, HIDDEN);
    cJSON_Delete(root);
    df11_file_close(f);
}

static void round_trip(uint32_t tpb, df11_codec codec)
{
    uint64_t rng = df11_test_seed() ^ tpb;
    model m;
    make_model(&m, &rng);
    char dir[64], out[64];
    snprintf(dir, sizeof dir, "dfl-%u-%d", tpb, (int)codec);
    snprintf(out, sizeof out, "dfl-%u-%d.df11", tpb, (int)codec);
    write_folder(&m, tmp_path(dir), &(folder_opts){ .tpb = tpb });
    ck_assert(df11i_dfl_is_folder(tmp_path(dir)));
    df11_compress_options o = { .codec = codec, .n_threads = 2 };
    df11_compress_summary s;
    ck_assert_int_eq(df11_compress_path(tmp_path(dir), tmp_path(out), &o, &s), DF11_OK);
    ck_assert_uint_eq(s.n_tensors, (uint32_t)m.n);
    assert_df11_equals(tmp_path(out), &m);
    model_free(&m);
}

/* Their default grid (512 threads, 4 KiB of codes per block) and a small one that puts
 * hundreds of block boundaries into each module; both codes of df11. */
START_TEST(test_folder_round_trip_512) { round_trip(512, DF11_CODEC_EXP_HUFFMAN); }
END_TEST

START_TEST(test_folder_round_trip_small_blocks) { round_trip(4, DF11_CODEC_EXP_FIXED); }
END_TEST

/* The deep code: 26-bit codes walk four tables, and the decoder gives the weights back. */
START_TEST(test_decode_deep_code)
{
    uint64_t rng = df11_test_seed();
    uint64_t n = 317809; /* exactly the chain: ordinary weights would pair up with it */
    uint16_t *w = malloc(n * 2), *out = malloc(n * 2);
    fill_deep(w, n, &rng);
    dfl_buffers b;
    encode_module(w, n, 32, &b);
    int max_len = 0;
    for (int s = 0; s < 256; s++)
        if (b.luts[256 * (b.n_luts - 1) + s] > max_len) max_len = b.luts[256 * (b.n_luts - 1) + s];
    ck_assert_int_gt(max_len, 24);
    df11i_dfl_stream st = stream_of(&b, 32);
    ck_assert_int_eq(df11i_dfl_decode(&st, 2, out), DF11_OK);
    ck_assert(memcmp(out, w, n * 2) == 0);
    buffers_free(&b);
    free(w);
    free(out);
}
END_TEST

/* ---- broken streams ---- */

typedef struct {
    uint16_t *w, *out;
    size_t n;
    dfl_buffers b;
    uint32_t tpb;
} stream_case;

static void stream_case_make(stream_case *c, size_t n, uint32_t tpb)
{
    uint64_t rng = df11_test_seed() + n;
    c->n = n;
    c->tpb = tpb;
    c->w = malloc(n * 2);
    c->out = malloc(n * 2);
    df11_test_fill_weights(c->w, n, 64, &rng);
    encode_module(c->w, n, tpb, &c->b);
}

static void stream_case_free(stream_case *c)
{
    buffers_free(&c->b);
    free(c->w);
    free(c->out);
}

static df11_status decode_case(const stream_case *c, df11i_dfl_stream s)
{
    (void)c;
    return df11i_dfl_decode(&s, 2, c->out);
}

START_TEST(test_decode_rejects_broken_streams)
{
    stream_case c;
    stream_case_make(&c, 20000, 8);
    df11i_dfl_stream good = stream_of(&c.b, c.tpb), s;
    ck_assert_int_eq(decode_case(&c, good), DF11_OK);
    ck_assert(memcmp(c.out, c.w, c.n * 2) == 0);
    ck_assert_uint_gt(c.b.n_positions / 4, 4); /* several blocks */

    s = good; /* the lookup tables cut to one */
    s.luts_bytes = 256;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    s = good; /* not a whole number of tables */
    s.luts_bytes -= 1;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    s = good; /* codes cut short */
    s.encoded_bytes -= 1;
    ck_assert_int_ne(decode_case(&c, s), DF11_OK);
    s = good;
    s.encoded_bytes = 3;
    ck_assert_int_ne(decode_case(&c, s), DF11_OK);
    s = good; /* gaps cut short */
    s.gaps_bytes /= 2;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_TRUNCATED);
    s = good; /* a weight less than the positions say */
    s.n_elements -= 1;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    s = good; /* a position entry too many */
    s.positions_bytes += 4 * (c.b.n_encoded / (8 * c.tpb) + 2);
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    s = good;
    s.positions_bytes = 2;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    s = good;
    s.threads_per_block = 3;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    s = good; /* a grid other than the one the gaps were made for */
    s.threads_per_block = 16;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);

    /* One byte changed in a table, a gap, a position, or a code: */
    uint8_t *copy;
    copy = malloc(c.b.n_gaps);
    memcpy(copy, c.b.gaps, c.b.n_gaps);
    copy[1] ^= 0x10; /* thread 2's gap */
    s = good;
    s.gaps = copy;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    free(copy);

    copy = malloc(c.b.n_positions);
    memcpy(copy, c.b.positions, c.b.n_positions);
    copy[4] += 1; /* block 1 starts one weight later */
    s = good;
    s.output_positions = copy;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    copy[4] -= 2; /* one earlier */
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    memcpy(copy, c.b.positions, c.b.n_positions);
    copy[0] = 1; /* block 0 not at weight 0 */
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    memcpy(copy, c.b.positions, c.b.n_positions);
    copy[7] = 0x80; /* far out of range */
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    free(copy);

    size_t lut_bytes = 256 * c.b.n_luts;
    copy = malloc(lut_bytes);
    memcpy(copy, c.b.luts, lut_bytes);
    s = good;
    s.luts = copy;
    int e = (c.w[0] >> 7) & 0xff;
    copy[lut_bytes - 256 + e] = 0; /* the first weight's exponent has no length */
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    copy[lut_bytes - 256 + e] = 40; /* longer than 32 bits */
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    memcpy(copy, c.b.luts, lut_bytes);
    for (int i = 0; i < 256; i++) copy[i] = 240; /* every code points at table 16 */
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    for (int t = 0; t + 1 < (int)c.b.n_luts; t++) /* a pointer cycle: deeper than 4 bytes */
        for (int i = 0; i < 256; i++) copy[256 * t + i] = 255;
    ck_assert_int_eq(decode_case(&c, s), DF11_ERR_CORRUPT);
    free(copy);

    /* Random byte changes anywhere: a status, never a crash (ASan watches). */
    uint64_t rng = df11_test_seed();
    for (int it = 0; it < 300; it++) {
        dfl_buffers b = c.b;
        uint8_t *bufs[4] = { b.luts, b.encoded, b.positions, b.gaps };
        size_t sizes[4] = { lut_bytes, b.n_encoded, b.n_positions, b.n_gaps };
        int which = (int)(df11_test_rand(&rng) % 4);
        copy = malloc(sizes[which]);
        memcpy(copy, bufs[which], sizes[which]);
        copy[df11_test_rand(&rng) % sizes[which]] ^= (uint8_t)(1 + df11_test_rand(&rng) % 255);
        s = good;
        if (which == 0) s.luts = copy;
        if (which == 1) s.encoded = copy;
        if (which == 2) s.output_positions = copy;
        if (which == 3) s.gaps = copy;
        df11_status st = decode_case(&c, s);
        ck_assert(st == DF11_OK || st == DF11_ERR_CORRUPT || st == DF11_ERR_TRUNCATED);
        free(copy);
    }
    stream_case_free(&c);
}
END_TEST

/* ---- broken folders ---- */

/* The folder made with `fo` fails to convert with `want`, and leaves no output. */
static void assert_folder_fails(const char *tag, const folder_opts *fo, df11_status want)
{
    uint64_t rng = df11_test_seed();
    model m;
    make_model(&m, &rng);
    char dir[64], out[64];
    snprintf(dir, sizeof dir, "bad-%s", tag);
    snprintf(out, sizeof out, "bad-%s.df11", tag);
    write_folder(&m, tmp_path(dir), fo);
    df11_status st = df11_compress_path(tmp_path(dir), tmp_path(out), NULL, NULL);
    ck_assert_msg(st == want, "%s: status %d (%s), want %d", tag, (int)st, df11_last_error_detail(),
                  (int)want);
    ck_assert_int_ne(access(tmp_path(out), F_OK), 0);
    model_free(&m);
}

START_TEST(test_folder_rejects_broken_folders)
{
    for (int p = 1; p <= 5; p++) { /* a module without one of its buffers */
        char tag[32];
        snprintf(tag, sizeof tag, "drop-%d", p);
        assert_folder_fails(tag, &(folder_opts){ .tpb = 512, .drop_part = p }, DF11_ERR_CORRUPT);
    }
    assert_folder_fails("luts-i8", &(folder_opts){ .tpb = 512, .luts_dtype_i8 = 1 },
                        DF11_ERR_CORRUPT);
    assert_folder_fails("splits", &(folder_opts){ .tpb = 512, .swap_splits = 1 }, DF11_ERR_CORRUPT);
    assert_folder_fails("attrs", &(folder_opts){ .tpb = 512, .one_attr_less = 1 },
                        DF11_ERR_CORRUPT);
    /* config.json gives another intermediate size: the MLP weights' shapes do not fit */
    assert_folder_fails("shape", &(folder_opts){ .tpb = 512, .intermediate_size = 128 },
                        DF11_ERR_CORRUPT);
    /* a weight name whose shape df11 cannot tell */
    assert_folder_fails("name", &(folder_opts){ .tpb = 512, .rename_attr = "mlp.fc2" },
                        DF11_ERR_UNSUPPORTED);
    /* no pattern for the layers: seven weights nobody names */
    assert_folder_fails("pattern",
                        &(folder_opts){ .tpb = 512, .layer_pattern = "model\\.blocks\\.\\d+" },
                        DF11_ERR_CORRUPT);
    assert_folder_fails("regex", &(folder_opts){ .tpb = 512, .layer_pattern = "model(?=x)" },
                        DF11_ERR_UNSUPPORTED);
    assert_folder_fails("bpt", &(folder_opts){ .tpb = 512, .bytes_per_thread = 4 },
                        DF11_ERR_UNSUPPORTED);
    /* the grid in config.json is not the one the streams were made for */
    char dir[64];
    uint64_t rng = df11_test_seed();
    model m;
    make_model(&m, &rng);
    snprintf(dir, sizeof dir, "bad-grid");
    write_folder(&m, tmp_path(dir), &(folder_opts){ .tpb = 512 });
    char *cfg = config_text(&(folder_opts){ .tpb = 256 });
    char path[800];
    snprintf(path, sizeof path, "%s/config.json", tmp_path(dir));
    write_text(path, cfg);
    free(cfg);
    ck_assert_int_eq(df11_compress_path(tmp_path(dir), tmp_path("bad-grid.df11"), NULL, NULL),
                     DF11_ERR_CORRUPT);
    /* config.json without dfloat11_config: an ordinary folder, whose model.safetensors has
     * no usable weights of the model but converts as it is */
    write_text(path, "{\"hidden_size\": 64}");
    ck_assert(!df11i_dfl_is_folder(tmp_path(dir)));
    model_free(&m);
}
END_TEST

/* The tool takes a DFloat11 folder like any other input. */
START_TEST(test_tool_converts_folder)
{
    uint64_t rng = df11_test_seed();
    model m;
    make_model(&m, &rng);
    write_folder(&m, tmp_path("tool-dfl"), &(folder_opts){ .tpb = 512 });
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "'%s/df11-compress' -q -j 2 '%s' -o '%s'", DF11_TOOLS_DIR,
             tmp_path("tool-dfl"), tmp_path("tool-dfl.df11"));
    ck_assert_int_eq(system(cmd), 0);
    assert_df11_equals(tmp_path("tool-dfl.df11"), &m);
    model_free(&m);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dfloat11");
    TCase *tc = tcase_create("dfloat11");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_folder_round_trip_512);
    tcase_add_test(tc, test_folder_round_trip_small_blocks);
    tcase_add_test(tc, test_decode_deep_code);
    tcase_add_test(tc, test_decode_rejects_broken_streams);
    tcase_add_test(tc, test_folder_rejects_broken_folders);
    tcase_add_test(tc, test_tool_converts_folder);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return df11_test_run(suite()); }
