/* DFloat11 folders in, the original model's tensors out (loader/dfloat11.h).
 *
 * Their GPU kernel gives thread t of block b the code bytes [8t, 8t + 8) (global t); the
 * thread decodes every code that starts in those 64 bits, from the bit its 5-bit gap names,
 * and the block's threads place their weights one after another from the block's output
 * position on. That equals a front-to-back decode exactly when each gap is where the first
 * code starting in its 64 bits starts, and each output position is the number of codes
 * that start before its block. So the CPU decodes front to back, block by block in
 * parallel (a block starts where its first gap says, at its output position), and checks
 * both facts at every window and block boundary it crosses: a folder that passes decodes
 * the same here and on their GPU. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/parallel.h"
#include "common/util.h"
#include "df11/runtime.h"
#include "loader/dfloat11.h"

typedef unsigned long long ull;

#define WINDOW_BITS (8 * DF11I_DFL_BYTES_PER_THREAD)

/* ---- the decoder ---- */

typedef struct decode_job {
    const df11i_dfl_stream *s;
    uint64_t n_luts, n_blocks_with_codes, block_bits;
    uint16_t *out;
} decode_job;

static uint32_t output_position(const df11i_dfl_stream *s, uint64_t block)
{
    return df11i_ld32(s->output_positions + 4 * block);
}

/* Thread w's gap; the caller checked that gaps holds it. */
static uint32_t gap_of(const df11i_dfl_stream *s, uint64_t w)
{
    uint64_t bit = DF11I_DFL_GAP_BITS * w, byte = bit / 8;
    uint32_t two = (uint32_t)s->gaps[byte] << 8;
    if (byte + 1 < s->gaps_bytes) two |= s->gaps[byte + 1];
    return (two >> (16 - DF11I_DFL_GAP_BITS - bit % 8)) & ((1u << DF11I_DFL_GAP_BITS) - 1);
}

/* The 32 code bits from bit `pos` on, MSB first; bits past the stream read as 0 (a code
 * that would need them is caught by its length). */
static uint32_t peek32(const df11i_dfl_stream *s, uint64_t pos)
{
    uint64_t byte = pos / 8, v = 0;
    for (int k = 0; k < 5; k++)
        v = v << 8 | (byte + (uint64_t)k < s->encoded_bytes ? s->encoded[byte + (uint64_t)k] : 0);
    return (uint32_t)(v >> (8 - pos % 8));
}

/* The exponent whose code starts at bit `pos`, and the code's length: the table walk of
 * their kernel (at most four tables, one per code byte). */
static df11_status decode_one(const decode_job *j, uint64_t pos, uint8_t *exponent, uint32_t *len)
{
    const df11i_dfl_stream *s = j->s;
    uint32_t bits = peek32(s, pos);
    uint32_t v = s->luts[bits >> 24];
    for (int level = 1; v >= DF11I_DFL_FIRST_POINTER; level++) {
        uint32_t table = 256 - v;
        if (level == 4 || table >= j->n_luts - 1)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "DFloat11 code at bit %llu: lookup table %u of %llu (level %d)",
                              (ull)pos, table, (ull)(j->n_luts - 1), level + 1);
        v = s->luts[256 * table + ((bits >> (24 - 8 * level)) & 0xff)];
    }
    *exponent = (uint8_t)v;
    *len = s->luts[256 * (j->n_luts - 1) + v];
    if (*len == 0 || *len > DF11I_DFL_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 code at bit %llu: exponent %u has length %u",
                          (ull)pos, v, *len);
    if (*len > s->encoded_bytes * 8 - pos)
        return df11i_fail(DF11_ERR_TRUNCATED, "DFloat11 code at bit %llu runs past the %llu bytes",
                          (ull)pos, (ull)s->encoded_bytes);
    return DF11_OK;
}

/* Decodes the weights [output_position(b), output_position(b + 1)) whose codes start in
 * block b, checking every gap on the way, and that the code after them is where block
 * b + 1's first gap says (or, after the last weight, that the stream ends there). */
static df11_status decode_block(void *ctx, uint64_t b)
{
    const decode_job *j = ctx;
    const df11i_dfl_stream *s = j->s;
    const uint64_t tpb = s->threads_per_block, block_end = (b + 1) * j->block_bits;
    uint64_t w = b * tpb, pos = b * j->block_bits + gap_of(s, w);
    uint64_t i = output_position(s, b), end = output_position(s, b + 1);
    for (; i < end; i++) {
        if (pos >= block_end)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "DFloat11 block %llu: output positions say %llu weights, its codes "
                              "end after %llu",
                              (ull)b, (ull)(end - output_position(s, b)),
                              (ull)(i - output_position(s, b)));
        if (pos >= s->encoded_bytes * 8)
            return df11i_fail(DF11_ERR_TRUNCATED, "DFloat11 codes end before weight %llu of %llu",
                              (ull)i, (ull)s->n_elements);
        for (; w * WINDOW_BITS <= pos; w++)
            if (pos - w * WINDOW_BITS != gap_of(s, w))
                return df11i_fail(DF11_ERR_CORRUPT,
                                  "DFloat11 thread %llu: gap %u, its first code starts at %llu",
                                  (ull)w, gap_of(s, w), (ull)(pos - w * WINDOW_BITS));
        uint8_t e = 0;
        uint32_t len = 0;
        df11_status st = decode_one(j, pos, &e, &len);
        if (st != DF11_OK) return st;
        uint8_t sm = s->sign_mantissa[i];
        j->out[i] = (uint16_t)((sm & 0x80u) << 8 | (uint32_t)e << 7 | (sm & 0x7fu));
        pos += len;
    }
    if (b + 1 < j->n_blocks_with_codes) {
        if (pos < block_end || pos - block_end != gap_of(s, (b + 1) * tpb))
            return df11i_fail(DF11_ERR_CORRUPT,
                              "DFloat11 block %llu: its weights' codes end at bit %llu, block "
                              "%llu starts at %llu",
                              (ull)b, (ull)pos, (ull)(b + 1),
                              (ull)(block_end + gap_of(s, (b + 1) * tpb)));
    } else if ((pos + 7) / 8 != s->encoded_bytes) {
        return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 codes end in byte %llu of %llu",
                          (ull)((pos + 7) / 8), (ull)s->encoded_bytes);
    }
    return DF11_OK;
}

/* The sizes and the output positions' shape, before any code is read. */
static df11_status check_stream(const df11i_dfl_stream *s, decode_job *j)
{
    const uint64_t tpb = s->threads_per_block;
    if (!tpb || tpb > 1024 || (tpb & (tpb - 1)))
        return df11i_fail(DF11_ERR_CORRUPT,
                          "DFloat11 threads_per_block %llu: want a power of 2 up to 1024",
                          (ull)tpb);
    if (s->luts_bytes % 256 || s->luts_bytes < 2 * 256)
        return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 luts of %llu bytes: want n x 256, n >= 2",
                          (ull)s->luts_bytes);
    if (s->n_elements > UINT32_MAX)
        return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 module of %llu weights: at most 2^32 - 1",
                          (ull)s->n_elements);
    j->n_luts = s->luts_bytes / 256;
    j->block_bits = tpb * WINDOW_BITS;
    const uint64_t block_bytes = tpb * DF11I_DFL_BYTES_PER_THREAD;
    const uint64_t n_blocks = (s->encoded_bytes + block_bytes - 1) / block_bytes;
    const uint64_t n_windows =
        (s->encoded_bytes + DF11I_DFL_BYTES_PER_THREAD - 1) / DF11I_DFL_BYTES_PER_THREAD;
    if (s->encoded_bytes > UINT64_MAX / 16)
        return df11i_fail(DF11_ERR_OVERFLOW, "DFloat11 codes of %llu bytes", (ull)s->encoded_bytes);
    if (s->gaps_bytes < (DF11I_DFL_GAP_BITS * n_windows + 7) / 8)
        return df11i_fail(DF11_ERR_TRUNCATED, "DFloat11 gaps: %llu bytes for %llu threads",
                          (ull)s->gaps_bytes, (ull)n_windows);
    uint64_t n_pos = s->positions_bytes / 4;
    if (s->positions_bytes % 4 || n_pos < 1 || n_pos > n_blocks + 1)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "DFloat11 output_positions of %llu bytes: want 4 x (1..%llu)",
                          (ull)s->positions_bytes, (ull)(n_blocks + 1));
    if (output_position(s, 0) != 0 || output_position(s, n_pos - 1) != s->n_elements)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "DFloat11 output positions run from %u to %u, want 0 to %llu",
                          output_position(s, 0), output_position(s, n_pos - 1), (ull)s->n_elements);
    /* Blocks whose codes hold weights come first, each with at least one (a code is
     * shorter than a block); after them every position is the count. */
    j->n_blocks_with_codes = 0;
    while (output_position(s, j->n_blocks_with_codes) < s->n_elements) {
        uint64_t b = j->n_blocks_with_codes++;
        if (output_position(s, b + 1) <= output_position(s, b))
            return df11i_fail(
                DF11_ERR_CORRUPT, "DFloat11 output position %llu (%u) is not above %llu's (%u)",
                (ull)(b + 1), output_position(s, b + 1), (ull)b, output_position(s, b));
    }
    for (uint64_t b = j->n_blocks_with_codes; b < n_pos; b++)
        if (output_position(s, b) != s->n_elements)
            return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 output position %llu (%u) after the end",
                              (ull)b, output_position(s, b));
    if (s->n_elements && gap_of(s, 0) != 0)
        return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 thread 0: gap %u, its first code starts at 0",
                          gap_of(s, 0));
    if (!s->n_elements && s->encoded_bytes)
        return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 module of no weights has %llu code bytes",
                          (ull)s->encoded_bytes);
    return DF11_OK;
}

df11_status df11i_dfl_decode(const df11i_dfl_stream *s, int n_threads, uint16_t *out)
{
    if (!s || (s->n_elements && !out))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_dfl_decode: NULL argument");
    decode_job j = { .s = s, .out = out };
    df11_status st = check_stream(s, &j);
    if (st != DF11_OK) return st;
    return df11i_parallel_for(j.n_blocks_with_codes, n_threads, decode_block, &j);
}

/* ---- the folder ---- */

/* The six tensors of one compressed module, by the suffix of their names. */
enum {
    PART_ENCODED,
    PART_GAPS,
    PART_LUTS,
    PART_POSITIONS,
    PART_SIGN_MANTISSA,
    PART_SPLITS,
    N_PARTS
};
static const char *const part_names[N_PARTS] = {
    "encoded_exponent", "gaps", "luts", "output_positions", "sign_mantissa", "split_positions"
};

typedef struct df11i_dfl_module {
    char *name;
    const df11_tensor_source *part[N_PARTS]; /* split_positions may be NULL */
    df11i_dfl_stream s;
    uint64_t n_weights; /* 1 + split positions */
} dfl_module;

typedef struct part_ref {
    const char *name; /* the tensor's */
    size_t module_len;
    int part;
    size_t tensor;
} part_ref;

static int cmp_part_ref(const void *a, const void *b)
{
    const part_ref *x = a, *y = b;
    size_t n = x->module_len < y->module_len ? x->module_len : y->module_len;
    int c = strncmp(x->name, y->name, n);
    if (c) return c;
    if (x->module_len != y->module_len) return x->module_len < y->module_len ? -1 : 1;
    return x->part - y->part;
}

static int cmp_source_name(const void *a, const void *b)
{
    return strcmp(((const df11_tensor_source *)a)->name, ((const df11_tensor_source *)b)->name);
}

/* The part a tensor name ends in (".luts" ...), or -1; *module_len is the length before. */
static int part_of(const char *name, size_t *module_len)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return -1;
    for (int p = 0; p < N_PARTS; p++)
        if (strcmp(dot + 1, part_names[p]) == 0) {
            *module_len = (size_t)(dot - name);
            return p;
        }
    return -1;
}

static char *str_dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static bool has_suffix(const char *name, const char *suffix)
{
    size_t a = strlen(name), b = strlen(suffix);
    return a >= b && strcmp(name + a - b, suffix) == 0;
}

bool df11i_dfl_is_folder(const char *path)
{
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return false;
    df11i_st_model probe = { 0 };
    bool yes = false;
    if (df11i_st_read_config(&probe, path) == DF11_OK && probe.config_json) {
        cJSON *root = cJSON_ParseWithLength(probe.config_json, probe.config_len);
        yes = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "dfloat11_config"));
        cJSON_Delete(root);
    }
    free(probe.config_json);
    df11i_clear_error();
    return yes;
}

/* A pattern_dict key is a Python regular expression matched with re.fullmatch; the ones
 * DFloat11 writes ("model\\.layers\\.\\d+\\.mlp") become POSIX extended expressions by
 * spelling out \d, \w, \s and (?: ... ). Anything beyond fails with DF11_ERR_UNSUPPORTED. */
static df11_status compile_pattern(const char *py, regex_t *re)
{
    size_t n = strlen(py);
    if (n > 4096) return df11i_fail(DF11_ERR_UNSUPPORTED, "DFloat11 pattern of %zu bytes", n);
    char *ere = malloc(16 * n + 8), *o = ere;
    if (!ere) return df11i_fail(DF11_ERR_NO_MEMORY, "pattern");
    *o++ = '^';
    *o++ = '(';
    df11_status st = DF11_OK;
    for (size_t i = 0; i < n && st == DF11_OK; i++) {
        char c = py[i];
        if (c == '\\' && i + 1 < n) {
            char e = py[++i];
            const char *cls = e == 'd'   ? "[0-9]"
                              : e == 'w' ? "[[:alnum:]_]"
                              : e == 's' ? "[[:space:]]"
                                         : NULL;
            if (cls) {
                o += strlen(strcpy(o, cls));
            } else if (strchr(".^$|?*+()[]{}\\", e)) {
                *o++ = '\\';
                *o++ = e;
            } else if (!((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') ||
                         (e >= '0' && e <= '9'))) {
                *o++ = e; /* an escaped character that is not special in ERE: itself */
            } else {
                st = df11i_fail(DF11_ERR_UNSUPPORTED, "DFloat11 pattern '%s': escape \\%c", py, e);
            }
        } else if (c == '(' && i + 2 < n && py[i + 1] == '?' && py[i + 2] == ':') {
            *o++ = '(';
            i += 2;
        } else if (c == '(' && i + 1 < n && py[i + 1] == '?') {
            st = df11i_fail(DF11_ERR_UNSUPPORTED, "DFloat11 pattern '%s': (?...) group", py);
        } else if (c == '\\') {
            st = df11i_fail(DF11_ERR_UNSUPPORTED, "DFloat11 pattern '%s' ends in a backslash", py);
        } else {
            *o++ = c;
        }
    }
    *o++ = ')';
    *o++ = '$';
    *o = '\0';
    if (st == DF11_OK && regcomp(re, ere, REG_EXTENDED | REG_NOSUB) != 0)
        st = df11i_fail(DF11_ERR_UNSUPPORTED,
                        "DFloat11 pattern '%s' is not a regular expression "
                        "this reader understands",
                        py);
    free(ere);
    return st;
}

/* The attribute names pattern_dict gives module `name` (the first pattern that matches it
 * whole): *attrs is the JSON array, NULL when no pattern matches. */
static df11_status find_attrs(const cJSON *pattern_dict, const char *name, const cJSON **attrs)
{
    *attrs = NULL;
    for (const cJSON *it = pattern_dict->child; it; it = it->next) {
        if (!cJSON_IsArray(it))
            return df11i_fail(DF11_ERR_CORRUPT, "dfloat11_config.pattern_dict['%s'] is not a list",
                              it->string);
        regex_t re;
        df11_status st = compile_pattern(it->string, &re);
        if (st != DF11_OK) return st;
        int hit = regexec(&re, name, 0, NULL, 0) == 0;
        regfree(&re);
        if (hit) {
            *attrs = it;
            return DF11_OK;
        }
    }
    return DF11_OK;
}

/* Rows and columns of a Llama-family weight by its name (…q_proj.weight), from config.json. */
static df11_status weight_shape(const df11_hparams *h, const char *name, uint64_t shape[2])
{
    enum { Q, KV, HIDDEN, INTER, VOCAB };
    static const struct {
        const char *name;
        uint8_t rows, cols;
    } kinds[] = { { "q_proj", Q, HIDDEN },        { "k_proj", KV, HIDDEN },
                  { "v_proj", KV, HIDDEN },       { "o_proj", HIDDEN, Q },
                  { "gate_proj", INTER, HIDDEN }, { "up_proj", INTER, HIDDEN },
                  { "down_proj", HIDDEN, INTER }, { "embed_tokens", VOCAB, HIDDEN },
                  { "lm_head", VOCAB, HIDDEN } };
    const uint64_t dims[] = { [Q] = (uint64_t)h->n_heads * h->head_dim,
                              [KV] = (uint64_t)h->n_kv_heads * h->head_dim,
                              [HIDDEN] = h->hidden_size,
                              [INTER] = h->intermediate_size,
                              [VOCAB] = h->vocab_size };
    size_t len = strlen(name) - strlen(".weight");
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        size_t kl = strlen(kinds[k].name);
        if (len >= kl && strncmp(name + len - kl, kinds[k].name, kl) == 0 &&
            (len == kl || name[len - kl - 1] == '.')) {
            shape[0] = dims[kinds[k].rows];
            shape[1] = dims[kinds[k].cols];
            return DF11_OK;
        }
    }
    return df11i_fail(DF11_ERR_UNSUPPORTED,
                      "compressed weight '%s': a DFloat11 folder does not store shapes, and df11 "
                      "knows them only for Llama-family names (q/k/v/o_proj, gate/up/down_proj, "
                      "embed_tokens, lm_head)",
                      name);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files: every regular *.safetensors of `dir`, in name order, as their loader reads. */
static df11_status read_files(df11i_st_model *st, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return df11i_fail_errno(DF11_ERR_IO, errno, "cannot open '%s'", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    df11_status s = DF11_OK;
    for (struct dirent *e; s == DF11_OK && (e = readdir(d));) {
        if (!has_suffix(e->d_name, ".safetensors") || e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                s = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': file list", dir);
                break;
            }
            names = grown;
        }
        size_t dl = strlen(dir), nl = strlen(e->d_name);
        if (!(names[n] = malloc(dl + nl + 2))) {
            s = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': file list", dir);
            break;
        }
        memcpy(names[n], dir, dl);
        names[n][dl] = '/';
        memcpy(names[n] + dl + 1, e->d_name, nl + 1);
        n++;
    }
    closedir(d);
    if (s == DF11_OK && n == 0)
        s = df11i_fail_errno(DF11_ERR_IO, ENOENT, "DFloat11 folder '%s' has no .safetensors file",
                             dir);
    if (s == DF11_OK) qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 0; i < n; i++) {
        if (s == DF11_OK) s = df11i_st_add_file(st, names[i]);
        free(names[i]);
    }
    free(names);
    return s;
}

/* dfloat11_config: the kernel geometry (threads_per_block is a list of one number in
 * their files) and pattern_dict. */
static df11_status read_dfl_config(const cJSON *cfg, uint32_t *tpb, const cJSON **pattern_dict)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "threads_per_block");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(cfg, "bytes_per_thread");
    *pattern_dict = cJSON_GetObjectItemCaseSensitive(cfg, "pattern_dict");
    if (cJSON_IsArray(t) && cJSON_GetArraySize(t) == 1) t = t->child;
    if (!cJSON_IsNumber(t) || !(t->valuedouble >= 1 && t->valuedouble <= 1024) ||
        t->valuedouble != (double)(uint32_t)t->valuedouble)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "config.json: dfloat11_config.threads_per_block is not a number (or a "
                          "list of one) from 1 to 1024");
    *tpb = (uint32_t)t->valuedouble;
    if (!cJSON_IsNumber(b) || b->valuedouble != DF11I_DFL_BYTES_PER_THREAD)
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "config.json: dfloat11_config.bytes_per_thread is not %d (the only value "
                          "their kernel decodes)",
                          DF11I_DFL_BYTES_PER_THREAD);
    if (!cJSON_IsObject(*pattern_dict))
        return df11i_fail(DF11_ERR_CORRUPT,
                          "config.json: dfloat11_config.pattern_dict is not an object");
    return DF11_OK;
}

/* A part's dtype and dims, as their compressor writes them. */
static df11_status check_part(const dfl_module *m, int p)
{
    const df11_tensor_source *t = m->part[p];
    df11_dtype want = p == PART_SPLITS ? DF11_DTYPE_I64 : DF11_DTYPE_U8;
    uint32_t ndim = p == PART_LUTS ? 2 : 1;
    if (t->dtype != want || t->ndim != ndim || (p == PART_LUTS && t->shape[1] != 256))
        return df11i_fail(DF11_ERR_CORRUPT, "'%s': want %s %s", t->name,
                          p == PART_SPLITS ? "I64" : "U8",
                          p == PART_LUTS ? "of shape [n, 256]" : "of one dim");
    return DF11_OK;
}

/* Module m's streams and weight count from its parts; split positions checked. */
static df11_status build_module(dfl_module *m, uint32_t tpb)
{
    for (int p = 0; p < N_PARTS; p++) {
        if (!m->part[p] && p != PART_SPLITS)
            return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 module '%s' has no '%s'", m->name,
                              part_names[p]);
        df11_status st = m->part[p] ? check_part(m, p) : DF11_OK;
        if (st != DF11_OK) return st;
    }
    const df11_tensor_source *const *t = m->part;
    m->s = (df11i_dfl_stream){
        .luts = t[PART_LUTS]->data,
        .luts_bytes = t[PART_LUTS]->shape[0] * 256,
        .encoded = t[PART_ENCODED]->data,
        .encoded_bytes = t[PART_ENCODED]->shape[0],
        .sign_mantissa = t[PART_SIGN_MANTISSA]->data,
        .n_elements = t[PART_SIGN_MANTISSA]->shape[0],
        .output_positions = t[PART_POSITIONS]->data,
        .positions_bytes = t[PART_POSITIONS]->shape[0],
        .gaps = t[PART_GAPS]->data,
        .gaps_bytes = t[PART_GAPS]->shape[0],
        .threads_per_block = tpb,
    };
    uint64_t n_splits = t[PART_SPLITS] ? t[PART_SPLITS]->shape[0] : 0, prev = 0;
    for (uint64_t k = 0; k < n_splits; k++) {
        int64_t v = (int64_t)df11i_ld64((const uint8_t *)t[PART_SPLITS]->data + 8 * k);
        if (v <= (int64_t)prev || (uint64_t)v >= m->s.n_elements)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "DFloat11 module '%s': split position %llu (%lld) not inside the "
                              "%llu weights after %llu",
                              m->name, (ull)k, (long long)v, (ull)m->s.n_elements, (ull)prev);
        prev = (uint64_t)v;
    }
    m->n_weights = n_splits + 1;
    return DF11_OK;
}

typedef struct out_tensor {
    df11_tensor_source src;
    size_t module;
    uint64_t offset;
} out_tensor;

/* The modules from the tensors named <module>.<part>; parts[] marks those tensors. */
static df11_status find_modules(df11i_dfl_model *m, uint32_t tpb, bool *is_part)
{
    const df11i_st_model *st = m->st;
    part_ref *refs = malloc((st->n_tensors ? st->n_tensors : 1) * sizeof *refs);
    if (!refs) return df11i_fail(DF11_ERR_NO_MEMORY, "DFloat11 parts");
    size_t n_refs = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        size_t len;
        int p = part_of(st->tensors[i].name, &len);
        if (p < 0) continue;
        refs[n_refs++] = (part_ref){ st->tensors[i].name, len, p, i };
        is_part[i] = true;
    }
    qsort(refs, n_refs, sizeof *refs, cmp_part_ref);
    m->modules = calloc(n_refs ? n_refs : 1, sizeof *m->modules);
    df11_status s = m->modules ? DF11_OK : df11i_fail(DF11_ERR_NO_MEMORY, "DFloat11 modules");
    for (size_t r = 0; r < n_refs && s == DF11_OK; r++) {
        if (r == 0 || cmp_part_ref(&(part_ref){ refs[r].name, refs[r].module_len, 0, 0 },
                                   &(part_ref){ refs[r - 1].name, refs[r - 1].module_len, 0, 0 })) {
            dfl_module *mod = &m->modules[m->n_modules++];
            if (!(mod->name = str_dup_n(refs[r].name, refs[r].module_len)))
                s = df11i_fail(DF11_ERR_NO_MEMORY, "DFloat11 module name");
        }
        m->modules[m->n_modules - 1].part[refs[r].part] = &st->tensors[refs[r].tensor];
    }
    for (size_t k = 0; k < m->n_modules && s == DF11_OK; k++) s = build_module(&m->modules[k], tpb);
    free(refs);
    return s;
}

/* Names and shapes of module k's weights, appended at out[*n]. */
static df11_status module_weights(df11i_dfl_model *m, size_t k, const cJSON *pattern_dict,
                                  const df11_hparams *h, out_tensor *out, size_t *n)
{
    dfl_module *mod = &m->modules[k];
    const cJSON *attrs;
    df11_status s = find_attrs(pattern_dict, mod->name, &attrs);
    if (s != DF11_OK) return s;
    uint64_t n_attrs = attrs ? (uint64_t)cJSON_GetArraySize(attrs) : 0;
    if (n_attrs ? n_attrs != mod->n_weights : mod->n_weights != 1)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "DFloat11 module '%s' holds %llu weights, pattern_dict names %llu",
                          mod->name, (ull)mod->n_weights, (ull)(n_attrs ? n_attrs : 1));
    const cJSON *attr = attrs ? attrs->child : NULL;
    const uint8_t *splits = mod->part[PART_SPLITS] ? mod->part[PART_SPLITS]->data : NULL;
    for (uint64_t w = 0; w < mod->n_weights; w++, attr = attr ? attr->next : NULL) {
        if (attr &&
            (!cJSON_IsString(attr) || !attr->valuestring[0] || strlen(attr->valuestring) > 1024))
            return df11i_fail(DF11_ERR_CORRUPT, "DFloat11 pattern for '%s': a name is not a string",
                              mod->name);
        const char *sub = attr ? attr->valuestring : NULL;
        size_t len = strlen(mod->name) + (sub ? strlen(sub) + 1 : 0) + sizeof ".weight";
        char *name = malloc(len);
        if (!name) return df11i_fail(DF11_ERR_NO_MEMORY, "weight name");
        snprintf(name, len, "%s%s%s.weight", mod->name, sub ? "." : "", sub ? sub : "");
        uint64_t begin = w ? df11i_ld64(splits + 8 * (w - 1)) : 0;
        uint64_t end = w + 1 < mod->n_weights ? df11i_ld64(splits + 8 * w) : mod->s.n_elements;
        out_tensor *o = &out[(*n)++];
        *o = (out_tensor){ .src = { .name = name, .dtype = DF11_DTYPE_BF16, .ndim = 2 },
                           .module = k,
                           .offset = begin };
        if ((s = weight_shape(h, name, o->src.shape)) != DF11_OK) return s;
        if (o->src.shape[0] * o->src.shape[1] != end - begin)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "compressed weight '%s' holds %llu weights, config.json makes it "
                              "%llu x %llu",
                              name, (ull)(end - begin), (ull)o->src.shape[0], (ull)o->src.shape[1]);
    }
    return DF11_OK;
}

/* The tensor list: stored tensors as they are, each module's weights, sorted by name. */
static df11_status list_tensors(df11i_dfl_model *m, const bool *is_part, const cJSON *pattern_dict)
{
    const df11i_st_model *st = m->st;
    df11_hparams h = { .size = sizeof h };
    df11_status s = DF11_OK;
    if (m->n_modules && (s = df11_hparams_parse(st->config_json, st->config_len, &h)) != DF11_OK)
        return df11i_fail_context(s, "the shapes of DFloat11 weights come from config.json");
    size_t n_out = 0;
    for (size_t i = 0; i < st->n_tensors; i++) n_out += !is_part[i];
    for (size_t k = 0; k < m->n_modules; k++) n_out += m->modules[k].n_weights;
    out_tensor *out = calloc(n_out ? n_out : 1, sizeof *out);
    if (!out) return df11i_fail(DF11_ERR_NO_MEMORY, "tensor list");
    size_t n = 0;
    for (size_t i = 0; i < st->n_tensors; i++)
        if (!is_part[i]) out[n++] = (out_tensor){ .src = st->tensors[i], .module = SIZE_MAX };
    for (size_t k = 0; k < m->n_modules && s == DF11_OK; k++)
        s = module_weights(m, k, pattern_dict, &h, out, &n);
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    m->tensor_module = calloc(n ? n : 1, sizeof *m->tensor_module);
    m->tensor_offset = calloc(n ? n : 1, sizeof *m->tensor_offset);
    if (s == DF11_OK && (!m->tensors || !m->tensor_module || !m->tensor_offset))
        s = df11i_fail(DF11_ERR_NO_MEMORY, "tensor list");
    if (s == DF11_OK) qsort(out, n, sizeof *out, cmp_source_name); /* src is the first field */
    for (size_t i = 0; i < n; i++) {
        if (m->tensors) {
            m->tensors[i] = out[i].src;
            m->tensor_module[i] = out[i].module;
            m->tensor_offset[i] = out[i].offset;
        } else if (out[i].module != SIZE_MAX) {
            free((char *)out[i].src.name);
        }
    }
    if (m->tensors) m->n_tensors = n;
    free(out);
    return s;
}

/* config.json less dfloat11_config, for the .df11 metadata; the rest is read from root. */
static df11_status split_config(df11i_dfl_model *m, cJSON *root)
{
    cJSON_DeleteItemFromObjectCaseSensitive(root, "dfloat11_config");
    m->config_json = cJSON_Print(root);
    if (!m->config_json) return df11i_fail(DF11_ERR_NO_MEMORY, "config.json");
    m->config_len = strlen(m->config_json);
    return DF11_OK;
}

df11_status df11i_dfl_open(const char *dir, int n_threads, df11i_dfl_model **out)
{
    if (!dir || !out) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_dfl_open: NULL argument");
    *out = NULL;
    df11i_dfl_model *m = calloc(1, sizeof *m);
    if (!m || !(m->st = calloc(1, sizeof *m->st))) {
        free(m);
        return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': model", dir);
    }
    m->decoded_module = SIZE_MAX;
    m->n_threads = n_threads;
    cJSON *root = NULL;
    bool *is_part = NULL;
    df11_status s = df11i_st_read_config(m->st, dir);
    if (s == DF11_OK && !m->st->config_json)
        s = df11i_fail_errno(DF11_ERR_IO, ENOENT, "DFloat11 folder '%s' has no config.json", dir);
    if (s == DF11_OK && !(root = cJSON_ParseWithLength(m->st->config_json, m->st->config_len)))
        s = df11i_fail(DF11_ERR_CORRUPT, "'%s/config.json' is not JSON", dir);
    uint32_t tpb = 0;
    const cJSON *pattern_dict = NULL;
    if (s == DF11_OK) {
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "dfloat11_config");
        s = cJSON_IsObject(cfg)
                ? read_dfl_config(cfg, &tpb, &pattern_dict)
                : df11i_fail(DF11_ERR_CORRUPT, "'%s/config.json' has no dfloat11_config", dir);
    }
    if (s == DF11_OK) s = read_files(m->st, dir);
    if (s == DF11_OK && !(is_part = calloc(m->st->n_tensors + 1, sizeof *is_part)))
        s = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': parts", dir);
    if (s == DF11_OK) s = find_modules(m, tpb, is_part);
    if (s == DF11_OK) s = list_tensors(m, is_part, pattern_dict);
    if (s == DF11_OK) s = split_config(m, root); /* pattern_dict lives in root: last */
    free(is_part);
    cJSON_Delete(root);
    if (s != DF11_OK) {
        df11i_dfl_close(m);
        return s;
    }
    *out = m;
    return DF11_OK;
}

df11_status df11i_dfl_tensor_data(void *model, size_t index, uint64_t nbytes, const void **data)
{
    df11i_dfl_model *m = model;
    if (!m || index >= m->n_tensors || !data)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_dfl_tensor_data: bad argument");
    size_t k = m->tensor_module[index];
    if (k == SIZE_MAX) {
        *data = m->tensors[index].data;
        return DF11_OK;
    }
    const dfl_module *mod = &m->modules[k];
    if (m->decoded_module != k) {
        free(m->decoded);
        m->decoded_module = SIZE_MAX;
        if (!(m->decoded = malloc(mod->s.n_elements ? mod->s.n_elements * 2 : 1)))
            return df11i_fail(DF11_ERR_NO_MEMORY, "DFloat11 module '%s': %llu weights", mod->name,
                              (ull)mod->s.n_elements);
        df11_status s = df11i_dfl_decode(&mod->s, m->n_threads, m->decoded);
        if (s != DF11_OK) return df11i_fail_context(s, "DFloat11 module '%s'", mod->name);
        m->decoded_module = k;
    }
    if (nbytes > 2 * (mod->s.n_elements - m->tensor_offset[index]))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_dfl_tensor_data: %llu bytes asked",
                          (ull)nbytes);
    *data = m->decoded + m->tensor_offset[index];
    return DF11_OK;
}

void df11i_dfl_close(df11i_dfl_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensor_module[i] != SIZE_MAX) free((char *)m->tensors[i].name);
    for (size_t k = 0; k < m->n_modules; k++) free(m->modules[k].name);
    free(m->modules);
    free(m->tensors);
    free(m->tensor_module);
    free(m->tensor_offset);
    free(m->decoded);
    free(m->config_json);
    df11i_st_close(m->st);
    free(m);
}
