/* tokenizer.json BPE (see tokenizer_json.h): loading with every field checked, then the
 * `tokenizers` pipeline in C: added-token split, normalizer, pre-tokenizers, BPE merges by
 * rank over a heap, post-processor specials; decode by a table of bytes per id. It must not
 * trust the file: ids, lengths and nesting are bounded before anything is allocated for
 * them, and nothing here aborts or prints. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <pcre2.h>

#include "errmsg.h"
#include "nfc_unsafe.h"
#include "tokenizer_json.h"

/* A Sequence inside a Sequence deeper than this is refused (real files nest one level). */
#define MAX_DEPTH 4
/* Each pattern, normalizer string and special token list stays small in real files. */
#define MAX_PATTERN 4096
#define MAX_OPS 16
#define MAX_SPECIALS 8
/* PCRE2 match limit per match call: a real pattern needs a few hundred steps per
 * pre-token; a catastrophic one is stopped here instead of running for hours. */
#define REGEX_MATCH_LIMIT 10000000u
/* The JIT's backtracking stack may grow to this (its default, 32 KiB, is too small for a
 * long run of one character class in some patterns). */
#define REGEX_JIT_STACK (8 << 20)

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------- small containers ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t more)
{
    if (more > SIZE_MAX / 2 - b->n) return -1;
    if (b->n + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + more) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(buf *b, const void *s, size_t n)
{
    if (buf_reserve(b, n + 1) != 0) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* A piece of text being pre-tokenized: bytes [off, off+len) of some buffer; at_start when
 * it begins at offset 0 of the original text (Metaspace's prepend_scheme "first"). */
typedef struct span {
    size_t off, len;
    int at_start;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int spans_add(spans *s, size_t off, size_t len, int at_start)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span){ off, len, at_start };
    return 0;
}

/* An open-addressing map from a 64-bit key to an int32 value (-1 = empty slot), sized once
 * for the number of keys it will hold. It serves the merges ((a << 32 | b) -> merge) and
 * the added-token trie ((node << 8 | byte) -> child). */
typedef struct u64map {
    uint64_t *keys;
    int32_t *vals;
    size_t mask;
} u64map;

static int u64map_init(u64map *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    m->keys = malloc(cap * sizeof *m->keys);
    m->vals = malloc(cap * sizeof *m->vals);
    m->mask = cap - 1;
    if (!m->keys || !m->vals) return -1;
    memset(m->vals, 0xff, cap * sizeof *m->vals);
    return 0;
}

static void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
}

static size_t u64_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

/* The value slot of `key`; with insert, a new key gets a slot holding -1. NULL when absent
 * (or when the map is full, which sizing at init rules out). */
static int32_t *u64map_slot(const u64map *m, uint64_t key, int insert)
{
    if (!m->vals) return NULL;
    for (size_t i = u64_hash(key) & m->mask, probes = 0; probes <= m->mask;
         i = (i + 1) & m->mask, probes++) {
        if (m->vals[i] < 0) {
            if (!insert) return NULL;
            m->keys[i] = key;
            return &m->vals[i];
        }
        if (m->keys[i] == key) return &m->vals[i];
    }
    return NULL;
}

static uint64_t str_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* ------------------------------------------------------------------- the object --- */

enum split_behavior { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIGUOUS };

typedef struct regex {
    pcre2_code *code;
    int behavior, invert;
} regex;

enum norm_kind { NORM_PREPEND, NORM_REPLACE, NORM_NFC };
typedef struct norm_op {
    int kind;
    char *a, *b; /* Prepend: a; Replace: a -> b */
} norm_op;

enum pre_kind { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct pre_op {
    int kind;
    regex re; /* Split, ByteLevel with use_regex, Metaspace with split */
    int has_re;
    int prefix_space;   /* ByteLevel add_prefix_space */
    char rep[8];        /* Metaspace replacement (one character) */
    int prepend_scheme; /* Metaspace */
} pre_op;

/* is_added: an added token, and whether it takes the whitespace before / after it. */
enum { ADDED = 1, ADDED_LSTRIP = 2, ADDED_RSTRIP = 4 };

struct hf_tokenizer {
    int vocab_size;        /* the largest id + 1 */
    int vocab_count;       /* model.vocab's entries */
    int *added_ids;        /* added_tokens' ids, in the file's order */
    char *vtext;           /* vocab pieces, NUL-separated */
    uint32_t *voff, *vlen; /* per id; vlen UINT32_MAX for no vocab piece */
    int32_t *vslots;       /* string map piece -> id, -1 empty */
    size_t vmask;
    u64map merges; /* (a << 32 | b) -> index into mrank/mnew */
    int32_t *mrank, *mnew;
    char *dtext; /* decoded bytes per id */
    size_t *doff, *dlen;
    unsigned char *is_added, *is_eos; /* per id; is_added holds ADDED_* bits */
    int byte_ids[256];                /* <0xXX> ids, -1 when absent */
    int byte_fallback, fuse_unk, ignore_merges, unk_id;
    int byte_level;       /* initial symbols are GPT-2 byte characters */
    u64map trie[2];       /* added tokens, raw [0] and normalized [1] */
    int32_t *trie_tok[2]; /* node -> added token id or -1 */
    int trie_nodes[2];
    norm_op norm[MAX_OPS];
    int n_norm;
    pre_op pre[MAX_OPS];
    int n_pre;
    int strip_first; /* decoder strips this many leading spaces */
    int first_table; /* doff/dlen hold a second table, [V + id], for the first token */
    int bos_id, eos_id;
    int prefix[MAX_SPECIALS], n_prefix, suffix[MAX_SPECIALS], n_suffix;
    hf_chat chat;
};

/* GPT-2's byte -> printable character map: bytes that are printable Latin-1 stand for
 * themselves, the other 68 (0..32, 127..160, 173) take U+0100..U+0143 in byte order. */
static int byte_printable(int b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

static int byte_char(int b)
{
    if (byte_printable(b)) return b;
    return 256 + (b <= 32 ? b : b <= 160 ? 33 + b - 127 : 67);
}

/* The byte a code point stands for, or -1. */
static int char_byte(unsigned cp)
{
    if (cp < 256) return byte_printable((int)cp) ? (int)cp : -1;
    if (cp < 256 + 33) return (int)cp - 256;
    if (cp < 256 + 67) return (int)cp - 256 - 33 + 127;
    return cp == 256 + 67 ? 173 : -1;
}

static int put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Length of the valid UTF-8 character at s (n bytes left) and its code point, or 0 with
 * *bad = the length of the maximal invalid subpart (Unicode's "substitution of maximal
 * subparts", which Python's errors="replace" follows). */
static int utf8_char(const unsigned char *s, size_t n, unsigned *cp, int *bad)
{
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xbf, v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        v = c & 0x0f;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        *bad = 1;
        return 0;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        v = v << 6 | (s[i] & 0x3f);
        lo = 0x80;
        hi = 0xbf;
    }
    *cp = v;
    return need + 1;
}

/* Whether s is valid UTF-8: strings the file puts into the text (added tokens, normalizer
 * strings) must be, since the regex runs without checking. */
static int valid_utf8(const char *s)
{
    for (size_t i = 0, n = strlen(s); i < n;) {
        unsigned cp;
        int bad, k = utf8_char((const unsigned char *)s + i, n - i, &cp, &bad);
        if (!k) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* ---------------------------------------------------------------------- loading --- */

static int vocab_find(const hf_tokenizer *t, const char *s, size_t n)
{
    if (!t->vslots) return -1;
    for (size_t i = str_hash(s, n) & t->vmask;; i = (i + 1) & t->vmask) {
        int id = t->vslots[i];
        if (id < 0) return -1;
        if (t->vlen[id] == n && memcmp(t->vtext + t->voff[id], s, n) == 0) return id;
    }
}

static int read_file(const char *path, char **data, size_t *size, size_t max, char *err,
                     size_t errlen)
{
    *data = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errmsg(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errmsg(err, errlen, "'%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return errmsg(err, errlen, "'%s': %lld bytes, more than the %zu allowed", path,
                      (long long)st.st_size, max);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *p = malloc(n + 1);
    if (!p) {
        close(fd);
        return errmsg(err, errlen, "'%s': out of memory", path);
    }
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(p);
            close(fd);
            return errmsg(err, errlen, "cannot read '%s': %s", path,
                          r < 0 ? strerror(errno) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    p[n] = 0;
    *data = p;
    *size = n;
    return 0;
}

static const char *type_of(const cJSON *o)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

/* A boolean field: absent or null gives `dflt`; any other non-boolean is an error. */
static int get_bool(const cJSON *o, const char *key, int dflt, int *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return errmsg(err, errlen, "'%s' is not true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_id(const cJSON *v, int *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= HF_TOKENIZER_MAX_VOCAB ||
        v->valuedouble != (double)(int)v->valuedouble)
        return -1;
    *out = (int)v->valuedouble;
    return 0;
}

/* Unicode's White_Space, which `tokenizers`' regex engine (Oniguruma) means by \s; PCRE2's
 * \s also takes U+180E, which Unicode moved out of the spaces in 6.3. */
#define WHITE_SPACE                                                                                \
    "\\t\\n\\x{0b}\\f\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"       \
    "\\x{202f}\\x{205f}\\x{3000}"

/* The pattern with \s and \S spelt as White_Space classes (\S inside a class is left to
 * PCRE2). Returns malloc'd text of *m bytes, or NULL when out of memory. */
static char *translate_pattern(const char *pat, size_t n, size_t *m)
{
    static const char ws[] = "[" WHITE_SPACE "]", nws[] = "[^" WHITE_SPACE "]";
    buf b = { 0 };
    int in_class = 0, ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[++i];
            if (d == 's' && in_class)
                ok = buf_add(&b, ws + 1, sizeof ws - 3) == 0;
            else if (d == 's')
                ok = buf_add(&b, ws, sizeof ws - 1) == 0;
            else if (d == 'S' && !in_class)
                ok = buf_add(&b, nws, sizeof nws - 1) == 0;
            else
                ok = buf_add(&b, pat + i - 1, 2) == 0;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            ok = buf_add(&b, "[", 1) == 0;
            /* a ']' first in the class (after an optional '^') is a literal */
            if (ok && i + 1 < n && pat[i + 1] == '^') ok = buf_add(&b, pat + ++i, 1) == 0;
            if (ok && i + 1 < n && pat[i + 1] == ']') ok = buf_add(&b, pat + ++i, 1) == 0;
            continue;
        }
        if (c == '[' && in_class && i + 1 < n && pat[i + 1] == ':') { /* [:alpha:] */
            size_t k = 2;
            while (i + k < n && !(pat[i + k - 1] == ':' && pat[i + k] == ']')) k++;
            k = i + k < n ? k + 1 : 1;
            ok = buf_add(&b, pat + i, k) == 0;
            i += k - 1;
            continue;
        }
        if (c == ']' && in_class) in_class = 0;
        ok = buf_add(&b, &c, 1) == 0;
    }
    if (!ok || !b.p) {
        free(b.p);
        return NULL;
    }
    *m = b.n;
    return b.p;
}

static int compile_regex(regex *re, const char *pat, size_t n, int literal, char *err,
                         size_t errlen)
{
    if (n > MAX_PATTERN)
        return errmsg(err, errlen, "a pattern of %zu bytes (at most %d)", n, MAX_PATTERN);
    int ec;
    PCRE2_SIZE off;
    uint32_t flags = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    size_t tn = n;
    char *tp = literal || n == 0 ? NULL : translate_pattern(pat, n, &tn);
    if (!literal && n && !tp) return errmsg(err, errlen, "out of memory");
    re->code = pcre2_compile((PCRE2_SPTR)(tp ? tp : pat), tn, flags, &ec, &off, NULL);
    free(tp);
    if (!re->code) {
        char msg[256];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
        return errmsg(err, errlen, "pattern /%.80s/ at offset %zu: %s", pat, (size_t)off, msg);
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* the interpreter serves if JIT fails */
    return 0;
}

/* A Split-style pattern: {"String": s} (literal) or {"Regex": r}. */
static int parse_pattern(regex *re, const cJSON *p, char *err, size_t errlen)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    if (cJSON_IsString(s))
        return compile_regex(re, s->valuestring, strlen(s->valuestring), 1, err, errlen);
    if (cJSON_IsString(r))
        return compile_regex(re, r->valuestring, strlen(r->valuestring), 0, err, errlen);
    return errmsg(err, errlen, "a pattern that is neither {\"String\"} nor {\"Regex\"}");
}

/* A normalizer, pre-tokenizer, decoder or post-processor that is not a Sequence, of type
 * `ty`; ctx is the caller's (the decoder's plan). */
typedef int (*component_fn)(hf_tokenizer *t, void *ctx, const cJSON *o, const char *ty, char *err,
                            size_t errlen);

/* Runs `one` on component `o`, or on each member of a Sequence (listed under `list_key`),
 * nesting at most MAX_DEPTH deep; absent or null is no component. */
static int parse_component(hf_tokenizer *t, void *ctx, const cJSON *o, const char *what,
                           const char *list_key, int depth, component_fn one, char *err,
                           size_t errlen)
{
    if (!o || cJSON_IsNull(o)) return 0;
    const char *ty = type_of(o);
    if (!ty) return errmsg(err, errlen, "%s without a type", what);
    if (strcmp(ty, "Sequence") != 0) return one(t, ctx, o, ty, err, errlen);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, list_key), *e;
    if (depth >= MAX_DEPTH || !cJSON_IsArray(list))
        return errmsg(err, errlen, "%s Sequence without a list (or nested too deep)", what);
    cJSON_ArrayForEach(e, list)
    {
        if (parse_component(t, ctx, e, what, list_key, depth + 1, one, err, errlen) != 0) return -1;
    }
    return 0;
}

static int normalizer_one(hf_tokenizer *t, void *ctx, const cJSON *n, const char *ty, char *err,
                          size_t errlen)
{
    (void)ctx;
    if (t->n_norm == MAX_OPS) return errmsg(err, errlen, "more than %d normalizers", MAX_OPS);
    norm_op *op = &t->norm[t->n_norm];
    if (strcmp(ty, "Prepend") == 0) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        if (!cJSON_IsString(s) || strlen(s->valuestring) > MAX_PATTERN ||
            !valid_utf8(s->valuestring))
            return errmsg(err, errlen, "Prepend normalizer without a 'prepend' string (UTF-8)");
        op->kind = NORM_PREPEND;
        if (!(op->a = strdup(s->valuestring))) return errmsg(err, errlen, "out of memory");
    } else if (strcmp(ty, "Replace") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (!cJSON_IsString(s) || !s->valuestring[0] || !cJSON_IsString(c) ||
            strlen(s->valuestring) > MAX_PATTERN || strlen(c->valuestring) > MAX_PATTERN ||
            !valid_utf8(s->valuestring) || !valid_utf8(c->valuestring))
            return errmsg(
                err, errlen,
                "Replace normalizer needs a non-empty pattern {\"String\"} and a content, UTF-8 "
                "(regex patterns are not supported)");
        op->kind = NORM_REPLACE;
        op->a = strdup(s->valuestring);
        op->b = strdup(c->valuestring);
        if (!op->a || !op->b) {
            t->n_norm++; /* freed with the rest */
            return errmsg(err, errlen, "out of memory");
        }
    } else if (strcmp(ty, "NFC") == 0) {
        op->kind = NORM_NFC;
    } else {
        return errmsg(err, errlen, "normalizer type '%s' is not supported", ty);
    }
    t->n_norm++;
    return 0;
}

static int parse_behavior(const cJSON *o, int *out, char *err, size_t errlen)
{
    static const char *const names[] = { "Removed", "Isolated", "MergedWithPrevious",
                                         "MergedWithNext", "Contiguous" };
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "behavior");
    for (int i = 0; cJSON_IsString(b) && i < 5; i++)
        if (strcmp(b->valuestring, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return errmsg(err, errlen,
                  "Split behavior is not one of Removed, Isolated, MergedWithPrevious, "
                  "MergedWithNext, Contiguous");
}

static int pretokenizer_one(hf_tokenizer *t, void *ctx, const cJSON *p, const char *ty, char *err,
                            size_t errlen)
{
    (void)ctx;
    if (t->n_pre == MAX_OPS) return errmsg(err, errlen, "more than %d pre-tokenizers", MAX_OPS);
    pre_op *op = &t->pre[t->n_pre];
    memset(op, 0, sizeof *op);
    if (strcmp(ty, "Split") == 0) {
        op->kind = PRE_SPLIT;
        if (parse_behavior(p, &op->re.behavior, err, errlen) != 0 ||
            get_bool(p, "invert", 0, &op->re.invert, err, errlen) != 0 ||
            parse_pattern(&op->re, cJSON_GetObjectItemCaseSensitive(p, "pattern"), err, errlen) !=
                0)
            return -1;
        op->has_re = 1;
    } else if (strcmp(ty, "Digits") == 0) {
        int individual;
        if (get_bool(p, "individual_digits", 0, &individual, err, errlen) != 0) return -1;
        op->kind = PRE_SPLIT;
        op->re.behavior = individual ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
        if (compile_regex(&op->re, "\\p{N}", 5, 0, err, errlen) != 0) return -1;
        op->has_re = 1;
    } else if (strcmp(ty, "ByteLevel") == 0) {
        int use_regex;
        op->kind = PRE_BYTELEVEL;
        if (get_bool(p, "add_prefix_space", 1, &op->prefix_space, err, errlen) != 0 ||
            get_bool(p, "use_regex", 1, &use_regex, err, errlen) != 0)
            return -1;
        if (use_regex) {
            op->re.behavior = SPLIT_ISOLATED;
            if (compile_regex(&op->re, GPT2_PATTERN, strlen(GPT2_PATTERN), 0, err, errlen) != 0)
                return -1;
            op->has_re = 1;
        }
        t->byte_level = 1;
    } else if (strcmp(ty, "Metaspace") == 0) {
        op->kind = PRE_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "replacement");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
        unsigned cp;
        int bad;
        size_t rl = cJSON_IsString(r) ? strlen(r->valuestring) : 0;
        if (!rl || rl >= sizeof op->rep ||
            utf8_char((const unsigned char *)r->valuestring, rl, &cp, &bad) != (int)rl)
            return errmsg(err, errlen, "Metaspace replacement is not one character");
        memcpy(op->rep, r->valuestring, rl + 1);
        int split, prefix;
        if (get_bool(p, "split", 1, &split, err, errlen) != 0 ||
            get_bool(p, "add_prefix_space", 1, &prefix, err, errlen) != 0)
            return -1;
        op->prepend_scheme = prefix ? PREPEND_ALWAYS : PREPEND_NEVER;
        if (cJSON_IsString(s)) {
            if (strcmp(s->valuestring, "always") == 0)
                op->prepend_scheme = PREPEND_ALWAYS;
            else if (strcmp(s->valuestring, "first") == 0)
                op->prepend_scheme = PREPEND_FIRST;
            else if (strcmp(s->valuestring, "never") == 0)
                op->prepend_scheme = PREPEND_NEVER;
            else
                return errmsg(err, errlen, "Metaspace prepend_scheme '%s' is unknown",
                              s->valuestring);
        }
        if (split) {
            op->re.behavior = SPLIT_NEXT;
            if (compile_regex(&op->re, op->rep, rl, 1, err, errlen) != 0) return -1;
            op->has_re = 1;
        }
    } else {
        return errmsg(err, errlen, "pre_tokenizer type '%s' is not supported", ty);
    }
    t->n_pre++;
    return 0;
}

/* The decoder decides how ids become bytes: each step that works on single tokens is folded
 * into the per-id table; Strip at the start becomes strip_first. */
typedef struct dec_plan {
    int byte_level, byte_fallback, metaspace;
    char rep_from[MAX_OPS][8], rep_to[MAX_OPS][8];
    int drop_first[MAX_OPS]; /* Metaspace: the replacement vanishes in the first token */
    int n_rep;
} dec_plan;

static int decoder_one(hf_tokenizer *t, void *ctx, const cJSON *p, const char *ty, char *err,
                       size_t errlen)
{
    dec_plan *d = ctx;
    if (strcmp(ty, "ByteLevel") == 0) {
        d->byte_level = 1;
    } else if (strcmp(ty, "ByteFallback") == 0) {
        d->byte_fallback = 1;
    } else if (strcmp(ty, "Fuse") == 0) {
        /* joining the tokens: what streaming them does anyway */
    } else if (strcmp(ty, "Replace") == 0) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(p, "pattern"), "String");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, "content");
        if (!cJSON_IsString(s) || !cJSON_IsString(c) || !s->valuestring[0] ||
            strlen(s->valuestring) >= 8 || strlen(c->valuestring) >= 8 || d->n_rep == MAX_OPS)
            return errmsg(err, errlen, "decoder Replace needs short String pattern and content");
        strcpy(d->rep_from[d->n_rep], s->valuestring);
        strcpy(d->rep_to[d->n_rep], c->valuestring);
        d->n_rep++;
    } else if (strcmp(ty, "Strip") == 0) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, "content");
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(p, "start");
        const cJSON *stop = cJSON_GetObjectItemCaseSensitive(p, "stop");
        if (!cJSON_IsString(c) || strcmp(c->valuestring, " ") != 0 || !cJSON_IsNumber(start) ||
            start->valuedouble < 0 || start->valuedouble > 8 || !cJSON_IsNumber(stop) ||
            stop->valuedouble != 0)
            return errmsg(err, errlen, "decoder Strip: only leading spaces (start 0..8, stop 0)");
        t->strip_first = (int)start->valuedouble;
    } else if (strcmp(ty, "Metaspace") == 0) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "replacement");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
        if (!cJSON_IsString(r) || !r->valuestring[0] || strlen(r->valuestring) >= 8 ||
            d->n_rep == MAX_OPS)
            return errmsg(err, errlen, "decoder Metaspace without a replacement");
        strcpy(d->rep_from[d->n_rep], r->valuestring);
        strcpy(d->rep_to[d->n_rep], " ");
        int prefix;
        if (get_bool(p, "add_prefix_space", 1, &prefix, err, errlen) != 0) return -1;
        if (cJSON_IsString(s)) prefix = strcmp(s->valuestring, "never") != 0;
        d->drop_first[d->n_rep++] = prefix;
        t->first_table |= prefix;
    } else {
        return errmsg(err, errlen, "decoder type '%s' is not supported", ty);
    }
    return 0;
}

/* The "<0xXX>" byte of a piece, or -1. */
static int byte_piece(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* One id's decoded bytes into b, following the decoder plan; `first` for the first token of
 * a text. */
static int decode_piece(const hf_tokenizer *t, const dec_plan *d, int id, int first, buf *b)
{
    const char *s = t->vtext + t->voff[id];
    size_t n = t->vlen[id];
    int byte = d->byte_fallback ? byte_piece(s, n) : -1;
    if (byte >= 0) {
        char c = (char)byte;
        return buf_add(b, &c, 1);
    }
    if (d->byte_level) {
        for (size_t i = 0; i < n;) {
            unsigned cp;
            int bad, k = utf8_char((const unsigned char *)s + i, n - i, &cp, &bad);
            if (k == 0)
                k = bad;
            else if (char_byte(cp) >= 0) {
                char c = (char)char_byte(cp);
                if (buf_add(b, &c, 1) != 0) return -1;
                i += (size_t)k;
                continue;
            }
            if (buf_add(b, s + i, (size_t)k) != 0) return -1; /* not a byte character: kept */
            i += (size_t)k;
        }
        return 0;
    }
    for (size_t i = 0; i < n;) {
        int r = 0;
        for (; r < d->n_rep; r++) {
            size_t fl = strlen(d->rep_from[r]);
            if (fl <= n - i && memcmp(s + i, d->rep_from[r], fl) == 0) break;
        }
        if (r < d->n_rep) {
            if (!(first && d->drop_first[r]) && buf_add(b, d->rep_to[r], strlen(d->rep_to[r])) != 0)
                return -1;
            i += strlen(d->rep_from[r]);
        } else {
            if (buf_add(b, s + i, 1) != 0) return -1;
            i++;
        }
    }
    return 0;
}

static int parse_vocab(hf_tokenizer *t, const cJSON *model, const cJSON *added_list, char *err,
                       size_t errlen)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *e;
    if (!cJSON_IsObject(vocab)) return errmsg(err, errlen, "model.vocab is not an object");
    int max_id = -1;
    size_t count = 0, bytes = 0;
    cJSON_ArrayForEach(e, vocab)
    {
        int id;
        if (get_id(e, &id) != 0)
            return errmsg(err, errlen, "vocab: '%.60s' has no id in [0, %d)", e->string,
                          HF_TOKENIZER_MAX_VOCAB);
        if (id > max_id) max_id = id;
        count++;
        bytes += strlen(e->string) + 1;
    }
    size_t n_added = 0;
    cJSON_ArrayForEach(e, added_list)
    {
        int id;
        if (get_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) != 0)
            return errmsg(err, errlen, "added_tokens: an entry without an id in [0, %d)",
                          HF_TOKENIZER_MAX_VOCAB);
        n_added++;
    }
    if (max_id < 0) return errmsg(err, errlen, "an empty vocabulary");
    /* Real vocabularies number their ids densely; a far-off id would only make this
     * allocate per-id tables for nothing. */
    if ((size_t)max_id >= 2 * count + 1024)
        return errmsg(err, errlen, "id %d for only %zu pieces (ids must be about dense)", max_id,
                      count);
    t->vocab_size = max_id + 1;
    t->vocab_count = (int)count;
    /* Room for the added tokens' ids too, which parse_added assigns. */
    size_t V = (size_t)(max_id + 1 > (int)count ? max_id + 1 : (int)count) + n_added, cap = 16;
    while (cap < 2 * count) cap *= 2;
    t->vtext = malloc(bytes ? bytes : 1);
    t->voff = calloc(V, sizeof *t->voff);
    t->vlen = malloc(V * sizeof *t->vlen);
    t->vslots = malloc(cap * sizeof *t->vslots);
    t->is_added = calloc(V, 1);
    t->is_eos = calloc(V, 1);
    t->added_ids = malloc((n_added ? n_added : 1) * sizeof *t->added_ids);
    if (!t->vtext || !t->voff || !t->vlen || !t->vslots || !t->is_added || !t->is_eos ||
        !t->added_ids)
        return errmsg(err, errlen, "out of memory for %zu tokens", V);
    memset(t->vlen, 0xff, V * sizeof *t->vlen);
    memset(t->vslots, 0xff, cap * sizeof *t->vslots);
    t->vmask = cap - 1;
    size_t at = 0;
    cJSON_ArrayForEach(e, vocab)
    {
        int id = (int)e->valuedouble;
        size_t n = strlen(e->string);
        if (t->vlen[id] != UINT32_MAX)
            return errmsg(err, errlen, "vocab: id %d is given to two pieces", id);
        if (vocab_find(t, e->string, n) >= 0)
            return errmsg(err, errlen, "vocab: piece '%.60s' appears twice", e->string);
        memcpy(t->vtext + at, e->string, n + 1);
        t->voff[id] = (uint32_t)at;
        t->vlen[id] = (uint32_t)n;
        at += n + 1;
        size_t i = str_hash(e->string, n) & t->vmask;
        while (t->vslots[i] >= 0) i = (i + 1) & t->vmask;
        t->vslots[i] = id;
        int b = byte_piece(e->string, n);
        if (b >= 0 && t->byte_ids[b] < 0) t->byte_ids[b] = id;
    }
    return 0;
}

/* Splits a merge into its two pieces: "a b" (one space) or ["a", "b"]. */
static int merge_parts(const cJSON *m, const char **a, size_t *al, const char **b, size_t *bl)
{
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ')) return -1;
        *a = s;
        *al = (size_t)(sp - s);
        *b = sp + 1;
        *bl = strlen(sp + 1);
        return 0;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2) {
        const cJSON *x = cJSON_GetArrayItem(m, 0), *y = cJSON_GetArrayItem(m, 1);
        if (!cJSON_IsString(x) || !cJSON_IsString(y)) return -1;
        *a = x->valuestring;
        *al = strlen(*a);
        *b = y->valuestring;
        *bl = strlen(*b);
        return 0;
    }
    return -1;
}

static int parse_merges(hf_tokenizer *t, const cJSON *model, char *err, size_t errlen)
{
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *m;
    if (!merges || cJSON_IsNull(merges))
        return u64map_init(&t->merges, 0) ? errmsg(err, errlen, "out of memory") : 0;
    if (!cJSON_IsArray(merges)) return errmsg(err, errlen, "model.merges is not a list");
    size_t n = (size_t)cJSON_GetArraySize(merges), k = 0;
    if (u64map_init(&t->merges, n) != 0 || !(t->mrank = malloc((n + 1) * sizeof *t->mrank)) ||
        !(t->mnew = malloc((n + 1) * sizeof *t->mnew)))
        return errmsg(err, errlen, "out of memory for %zu merges", n);
    char *joined = NULL;
    size_t jcap = 0;
    cJSON_ArrayForEach(m, merges)
    {
        const char *a, *b;
        size_t al, bl;
        if (merge_parts(m, &a, &al, &b, &bl) != 0) {
            free(joined);
            return errmsg(err, errlen, "merge %zu is neither \"a b\" nor [\"a\", \"b\"]", k);
        }
        int ia = vocab_find(t, a, al), ib = vocab_find(t, b, bl);
        if (al + bl + 1 > jcap) {
            jcap = 2 * (al + bl + 1);
            char *j = realloc(joined, jcap);
            if (!j) {
                free(joined);
                return errmsg(err, errlen, "out of memory");
            }
            joined = j;
        }
        memcpy(joined, a, al);
        memcpy(joined + al, b, bl);
        int inew = vocab_find(t, joined, al + bl);
        if (ia < 0 || ib < 0 || inew < 0) {
            free(joined);
            return errmsg(err, errlen, "merge %zu (%.40s + %.40s): %s is not in the vocabulary", k,
                          a, b,
                          ia < 0   ? "the first piece"
                          : ib < 0 ? "the second piece"
                                   : "the result");
        }
        /* A repeated pair takes its later rank, as `tokenizers` builds its map. */
        int32_t *slot = u64map_slot(&t->merges, (uint64_t)ia << 32 | (uint32_t)ib, 1);
        if (*slot < 0) *slot = (int32_t)k;
        t->mrank[*slot] = (int32_t)k;
        t->mnew[*slot] = inew;
        k++;
    }
    free(joined);
    return 0;
}

/* The longest added token of trie w starting at s (n bytes left): its id and *len, or -1. */
static int trie_match(const hf_tokenizer *t, int w, const char *s, size_t n, size_t *len)
{
    int node = 0, best = -1;
    for (size_t i = 0; i < n && i < HF_TOKENIZER_MAX_ADDED_LEN; i++) {
        const int32_t *c = u64map_slot(&t->trie[w], (uint64_t)node << 8 | (unsigned char)s[i], 0);
        if (!c) break;
        node = *c;
        if (t->trie_tok[w][node] >= 0) {
            best = t->trie_tok[w][node];
            *len = i + 1;
        }
    }
    return best;
}

/* Adds `s` to trie w (node 0 is the root) ending in token `id`. */
static int trie_add(hf_tokenizer *t, int w, const char *s, size_t n, int id)
{
    int node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t *slot = u64map_slot(&t->trie[w], (uint64_t)node << 8 | (unsigned char)s[i], 1);
        if (!slot) return -1;
        if (*slot < 0) {
            *slot = t->trie_nodes[w]++;
            t->trie_tok[w][*slot] = -1;
        }
        node = *slot;
    }
    if (t->trie_tok[w][node] < 0) t->trie_tok[w][node] = id;
    return 0;
}

static int parse_added(hf_tokenizer *t, const cJSON *list, char *err, size_t errlen)
{
    if (list && !cJSON_IsNull(list) && !cJSON_IsArray(list))
        return errmsg(err, errlen, "added_tokens is not a list");
    size_t bytes = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsString(c) || !c->valuestring[0] ||
            strlen(c->valuestring) > HF_TOKENIZER_MAX_ADDED_LEN || !valid_utf8(c->valuestring))
            return errmsg(err, errlen,
                          "added_tokens: an entry whose content is not UTF-8 of 1 to %d bytes",
                          HF_TOKENIZER_MAX_ADDED_LEN);
        int flag;
        if (get_bool(e, "single_word", 0, &flag, err, errlen) != 0) return -1;
        if (flag)
            return errmsg(err, errlen, "added token '%.60s': single_word is not supported",
                          c->valuestring);
        bytes += strlen(c->valuestring);
    }
    for (int w = 0; w < 2; w++) {
        if (u64map_init(&t->trie[w], bytes) != 0 ||
            !(t->trie_tok[w] = malloc((bytes + 1) * sizeof *t->trie_tok[w])))
            return errmsg(err, errlen, "out of memory");
        t->trie_nodes[w] = 1;
        t->trie_tok[w][0] = -1;
    }
    /* Ids as `tokenizers` assigns them, which a consistent file repeats: an earlier added
     * token's or the vocabulary's id for the same text, else the next after the
     * vocabulary's count and the added ids so far. */
    int n = 0, max_added = -1;
    cJSON_ArrayForEach(e, list)
    {
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        size_t len = 0, cl = strlen(c);
        int normalized, lstrip, rstrip, id = trie_match(t, 0, c, cl, &len);
        if (id < 0 || len != cl) id = trie_match(t, 1, c, cl, &len);
        if (id < 0 || len != cl) id = vocab_find(t, c, cl);
        if (id < 0) id = max_added >= t->vocab_count ? max_added + 1 : t->vocab_count;
        if (id > max_added) max_added = id;
        if (get_bool(e, "normalized", 0, &normalized, err, errlen) != 0 ||
            get_bool(e, "lstrip", 0, &lstrip, err, errlen) != 0 ||
            get_bool(e, "rstrip", 0, &rstrip, err, errlen) != 0)
            return -1;
        if (trie_add(t, normalized, c, cl, id) != 0) return errmsg(err, errlen, "out of memory");
        t->is_added[id] = ADDED | (lstrip ? ADDED_LSTRIP : 0) | (rstrip ? ADDED_RSTRIP : 0);
        t->added_ids[n++] = id;
    }
    if (max_added >= t->vocab_size) t->vocab_size = max_added + 1;
    return 0;
}

/* The id named by a config's token field: "text" or {"content": "text"}; -1 if none. */
static int config_token(const hf_tokenizer *t, const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? hf_tokenizer_lookup(t, v->valuestring) : -1;
}

static int add_special(int *list, int *n, int id)
{
    if (*n == MAX_SPECIALS) return -1;
    list[(*n)++] = id;
    return 0;
}

/* A TemplateProcessing "single" template: special tokens before and after $A. */
static int parse_template(hf_tokenizer *t, const cJSON *p, char *err, size_t errlen)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single"), *e;
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    if (!cJSON_IsArray(single)) return errmsg(err, errlen, "TemplateProcessing without 'single'");
    int seen_seq = 0;
    cJSON_ArrayForEach(e, single)
    {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
            if (seen_seq)
                return errmsg(err, errlen, "TemplateProcessing 'single' has two sequences");
            seen_seq = 1;
            continue;
        }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
        const cJSON *def = cJSON_IsString(name)
                               ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring)
                               : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids"), *i;
        if (!cJSON_IsArray(ids))
            return errmsg(err, errlen, "TemplateProcessing: a special token without ids");
        cJSON_ArrayForEach(i, ids)
        {
            int id;
            if (get_id(i, &id) != 0 || id >= t->vocab_size ||
                add_special(seen_seq ? t->suffix : t->prefix,
                            seen_seq ? &t->n_suffix : &t->n_prefix, id) != 0)
                return errmsg(err, errlen,
                              "TemplateProcessing: a bad special token id (or more than %d)",
                              MAX_SPECIALS);
        }
    }
    return 0;
}

static int post_one(hf_tokenizer *t, void *ctx, const cJSON *p, const char *ty, char *err,
                    size_t errlen)
{
    (void)ctx;
    if (strcmp(ty, "ByteLevel") == 0) return 0; /* offsets only */
    if (strcmp(ty, "TemplateProcessing") == 0) return parse_template(t, p, err, errlen);
    return errmsg(err, errlen, "post_processor type '%s' is not supported", ty);
}

static int parse_configs(hf_tokenizer *t, const char *config, size_t config_len, const char *gen,
                         size_t gen_len, char *err, size_t errlen)
{
    if (config) {
        cJSON *c = cJSON_ParseWithLength(config, config_len);
        if (!cJSON_IsObject(c)) {
            cJSON_Delete(c);
            return errmsg(err, errlen, "tokenizer_config.json is not a JSON object");
        }
        int bos = config_token(t, c, "bos_token"), eos = config_token(t, c, "eos_token");
        /* chat_template is a string or a list of {name, template}: its markers tell the
         * family (the first that any template writes). */
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(c, "chat_template"), *e;
        const cJSON *one = cJSON_IsString(ct) ? ct : NULL, *list = cJSON_IsArray(ct) ? ct : NULL;
        cJSON_ArrayForEach(e, list)
        {
            const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (!one && cJSON_IsString(tpl)) one = tpl;
        }
        if (one)
            t->chat = strstr(one->valuestring, "<|start_header_id|>") ? HF_CHAT_LLAMA3
                      : strstr(one->valuestring, "<|im_start|>")      ? HF_CHAT_CHATML
                      : strstr(one->valuestring, "[INST]")            ? HF_CHAT_INST
                                                                      : HF_CHAT_NONE;
        if (bos >= 0) t->bos_id = bos;
        if (eos >= 0) t->eos_id = eos;
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(c, "add_bos_token");
        const cJSON *ae = cJSON_GetObjectItemCaseSensitive(c, "add_eos_token");
        /* transformers rebuilds the template from these flags when a config sets them. */
        if (cJSON_IsBool(ab) || cJSON_IsBool(ae)) {
            t->n_prefix = t->n_suffix = 0;
            if (cJSON_IsTrue(ab) && t->bos_id >= 0) t->prefix[t->n_prefix++] = t->bos_id;
            if (cJSON_IsTrue(ae) && t->eos_id >= 0) t->suffix[t->n_suffix++] = t->eos_id;
        }
        cJSON_Delete(c);
    }
    if (gen) {
        cJSON *g = cJSON_ParseWithLength(gen, gen_len), *e;
        if (!cJSON_IsObject(g)) {
            cJSON_Delete(g);
            return errmsg(err, errlen, "generation_config.json is not a JSON object");
        }
        int id;
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(g, "bos_token_id");
        if (t->bos_id < 0 && get_id(b, &id) == 0 && id < t->vocab_size) t->bos_id = id;
        const cJSON *eos = cJSON_GetObjectItemCaseSensitive(g, "eos_token_id");
        if (get_id(eos, &id) == 0 && id < t->vocab_size) {
            t->is_eos[id] = 1;
            if (t->eos_id < 0) t->eos_id = id;
        }
        const cJSON *list = cJSON_IsArray(eos) ? eos : NULL;
        cJSON_ArrayForEach(e, list)
        {
            if (get_id(e, &id) != 0 || id >= t->vocab_size) continue;
            t->is_eos[id] = 1;
            if (t->eos_id < 0) t->eos_id = id;
        }
        cJSON_Delete(g);
    }
    if (t->eos_id >= 0) t->is_eos[t->eos_id] = 1;
    if (t->chat == HF_CHAT_NONE)
        t->chat = hf_tokenizer_lookup(t, "<|start_header_id|>") >= 0 ? HF_CHAT_LLAMA3
                  : hf_tokenizer_lookup(t, "<|im_start|>") >= 0      ? HF_CHAT_CHATML
                  : hf_tokenizer_lookup(t, "[INST]") >= 0            ? HF_CHAT_INST
                                                                     : HF_CHAT_NONE;
    int eot = hf_tokenizer_lookup(t, t->chat == HF_CHAT_LLAMA3   ? "<|eot_id|>"
                                     : t->chat == HF_CHAT_CHATML ? "<|im_end|>"
                                                                 : "");
    if (eot >= 0) t->is_eos[eot] = 1;
    return 0;
}

static int build_decode(hf_tokenizer *t, const cJSON *root, char *err, size_t errlen)
{
    dec_plan d;
    memset(&d, 0, sizeof d);
    if (parse_component(t, &d, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder",
                        "decoders", 0, decoder_one, err, errlen) != 0)
        return -1;
    size_t V = (size_t)t->vocab_size, tables = t->first_table ? 2 : 1;
    buf b = { 0 };
    t->doff = malloc(tables * V * sizeof *t->doff);
    t->dlen = calloc(tables * V, sizeof *t->dlen);
    if (!t->doff || !t->dlen) return errmsg(err, errlen, "out of memory");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *e;
    for (size_t k = 0; k < tables * V; k++) {
        size_t id = k % V;
        t->doff[k] = b.n;
        if (t->vlen[id] != UINT32_MAX && !t->is_added[id] &&
            decode_piece(t, &d, (int)id, k >= V, &b) != 0) {
            free(b.p);
            return errmsg(err, errlen, "out of memory");
        }
        t->dlen[k] = b.n - t->doff[k];
    }
    /* Added tokens read as their text. */
    size_t i = 0;
    cJSON_ArrayForEach(e, list)
    {
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        for (size_t k = (size_t)t->added_ids[i++]; k < tables * V; k += V) {
            t->doff[k] = b.n;
            if (buf_add(&b, c, strlen(c)) != 0) {
                free(b.p);
                return errmsg(err, errlen, "out of memory");
            }
            t->dlen[k] = b.n - t->doff[k];
        }
    }
    t->dtext = b.p ? b.p : calloc(1, 1);
    return t->dtext ? 0 : errmsg(err, errlen, "out of memory");
}

void hf_tokenizer_free(hf_tokenizer *t)
{
    if (!t) return;
    free(t->vtext);
    free(t->voff);
    free(t->vlen);
    free(t->vslots);
    u64map_free(&t->merges);
    free(t->mrank);
    free(t->mnew);
    free(t->dtext);
    free(t->doff);
    free(t->dlen);
    free(t->is_added);
    free(t->is_eos);
    free(t->added_ids);
    for (int w = 0; w < 2; w++) {
        u64map_free(&t->trie[w]);
        free(t->trie_tok[w]);
    }
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re.code);
    free(t);
}

static int load_model(hf_tokenizer *t, const cJSON *root, char *err, size_t errlen)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return errmsg(err, errlen, "no 'model' object");
    const char *ty = type_of(model);
    if (ty && strcmp(ty, "BPE") != 0)
        return errmsg(err, errlen, "model type '%s' is not supported (BPE only)", ty);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0))
        return errmsg(err, errlen, "BPE dropout is not supported");
    static const char *const unsupported[] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, unsupported[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return errmsg(err, errlen, "BPE %s is not supported", unsupported[i]);
    }
    if (get_bool(model, "byte_fallback", 0, &t->byte_fallback, err, errlen) != 0 ||
        get_bool(model, "fuse_unk", 0, &t->fuse_unk, err, errlen) != 0 ||
        get_bool(model, "ignore_merges", 0, &t->ignore_merges, err, errlen) != 0)
        return -1;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (parse_vocab(t, model, cJSON_IsArray(added) ? added : NULL, err, errlen) != 0 ||
        parse_merges(t, model, err, errlen) != 0)
        return -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    t->unk_id = -1;
    if (cJSON_IsString(unk)) {
        t->unk_id = vocab_find(t, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0)
            return errmsg(err, errlen, "unk_token '%.60s' is not in the vocabulary",
                          unk->valuestring);
    } else if (unk && !cJSON_IsNull(unk)) {
        return errmsg(err, errlen, "unk_token is not a string");
    }
    if (parse_component(t, NULL, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer",
                        "normalizers", 0, normalizer_one, err, errlen) != 0 ||
        parse_component(t, NULL, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                        "pre_tokenizer", "pretokenizers", 0, pretokenizer_one, err, errlen) != 0 ||
        parse_added(t, added, err, errlen) != 0)
        return -1;
    if (t->byte_level)
        for (int b = 0; b < 256; b++) {
            char s[4];
            int n = put_utf8(s, (unsigned)byte_char(b));
            if (vocab_find(t, s, (size_t)n) < 0 && !t->byte_fallback && t->unk_id < 0)
                return errmsg(
                    err, errlen,
                    "byte-level vocabulary has no piece for byte 0x%02x (and no fallback)", b);
        }
    if (build_decode(t, root, err, errlen) != 0 ||
        parse_component(t, NULL, cJSON_GetObjectItemCaseSensitive(root, "post_processor"),
                        "post_processor", "processors", 0, post_one, err, errlen) != 0)
        return -1;
    return 0;
}

int hf_tokenizer_load_buffer(hf_tokenizer **out, const char *json, size_t len, const char *config,
                             size_t config_len, const char *gen_config, size_t gen_len, char *err,
                             size_t errlen)
{
    *out = NULL;
    if (!json) return errmsg(err, errlen, "no data");
    if (len > HF_TOKENIZER_MAX_FILE)
        return errmsg(err, errlen, "%zu bytes, more than the %u allowed", len,
                      HF_TOKENIZER_MAX_FILE);
    hf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return errmsg(err, errlen, "out of memory");
    memset(t->byte_ids, 0xff, sizeof t->byte_ids);
    t->bos_id = t->eos_id = -1;
    cJSON *root = cJSON_ParseWithLength(json, len);
    int rc;
    if (!cJSON_IsObject(root))
        rc = errmsg(err, errlen, "not a JSON object (a tokenizer.json must be one)");
    else
        rc = load_model(t, root, err, errlen);
    cJSON_Delete(root);
    if (rc == 0) {
        /* The template's first special token is the BOS when no config names one. */
        if (t->bos_id < 0 && t->n_prefix > 0) t->bos_id = t->prefix[0];
        rc = parse_configs(t, config, config_len, gen_config, gen_len, err, errlen);
    }
    if (rc != 0) {
        hf_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int hf_tokenizer_load(hf_tokenizer **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    char *json, *cfg = NULL, *gen = NULL;
    size_t n, cn = 0, gn = 0;
    if (read_file(path, &json, &n, HF_TOKENIZER_MAX_FILE, err, errlen) != 0) return -1;
    /* The configs beside it: same folder, each optional. */
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    char *p = malloc(dir + 32);
    int rc = -1;
    if (!p) {
        errmsg(err, errlen, "out of memory");
        goto out;
    }
    memcpy(p, path, dir);
    char sub[256];
    strcpy(p + dir, "tokenizer_config.json");
    if (access(p, F_OK) == 0 && read_file(p, &cfg, &cn, 16u << 20, sub, sizeof sub) != 0) {
        errmsg(err, errlen, "%s", sub);
        goto out;
    }
    strcpy(p + dir, "generation_config.json");
    if (access(p, F_OK) == 0 && read_file(p, &gen, &gn, 16u << 20, sub, sizeof sub) != 0) {
        errmsg(err, errlen, "%s", sub);
        goto out;
    }
    rc = hf_tokenizer_load_buffer(out, json, n, cfg, cn, gen, gn, sub, sizeof sub);
    if (rc != 0) errmsg(err, errlen, "'%s': %s", path, sub);
out:
    free(p);
    free(json);
    free(cfg);
    free(gen);
    return rc;
}

/* ---------------------------------------------------------------------- encoding --- */

/* A symbol of the word being merged (len 0 once merged into its left neighbour), and a
 * candidate merge of the pair starting at pos. */
typedef struct sym {
    int id, prev, next, len;
} sym;
typedef struct heap_item {
    int rank, pos, new_id;
} heap_item;

typedef struct enc {
    const hf_tokenizer *t;
    int *ids;
    int n, max;
    char *err;
    size_t errlen;
    /* scratch reused across pre-tokens */
    sym *sym;
    size_t sym_cap;
    heap_item *heap;
    size_t heap_n, heap_cap;
    /* Per call, so that threads may encode with one tokenizer at once. */
    pcre2_match_context *mctx;
    pcre2_match_data *md;
    pcre2_jit_stack *jit;
} enc;

static int emit(enc *e, int id)
{
    if (e->n >= e->max)
        return errmsg(e->err, e->errlen, "the text needs more than %d tokens", e->max);
    e->ids[e->n++] = id;
    return 0;
}

static int heap_less(const heap_item *a, const heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(enc *e, int rank, int pos, int new_id)
{
    if (e->heap_n == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 256;
        heap_item *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return errmsg(e->err, e->errlen, "out of memory");
        e->heap = h;
        e->heap_cap = cap;
    }
    size_t i = e->heap_n++;
    e->heap[i] = (heap_item){ rank, pos, new_id };
    while (i > 0 && heap_less(&e->heap[i], &e->heap[(i - 1) / 2])) {
        heap_item x = e->heap[i];
        e->heap[i] = e->heap[(i - 1) / 2];
        e->heap[(i - 1) / 2] = x;
        i = (i - 1) / 2;
    }
    return 0;
}

static heap_item heap_pop(enc *e)
{
    heap_item top = e->heap[0];
    e->heap[0] = e->heap[--e->heap_n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->heap_n && heap_less(&e->heap[l], &e->heap[m])) m = l;
        if (r < e->heap_n && heap_less(&e->heap[r], &e->heap[m])) m = r;
        if (m == i) break;
        heap_item x = e->heap[i];
        e->heap[i] = e->heap[m];
        e->heap[m] = x;
        i = m;
    }
    return top;
}

static const int32_t *merge_of(const hf_tokenizer *t, int a, int b)
{
    return u64map_slot(&t->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b, 0);
}

static int sym_add(enc *e, size_t *n, int id, int len)
{
    if (*n == e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap * 2 : 256;
        sym *s = realloc(e->sym, cap * sizeof *s);
        if (!s) return errmsg(e->err, e->errlen, "out of memory");
        e->sym = s;
        e->sym_cap = cap;
    }
    e->sym[*n] = (sym){ id, (int)*n - 1, (int)*n + 1, len };
    (*n)++;
    return 0;
}

/* One pre-token (valid UTF-8, already byte-mapped where byte-level) to ids: its characters
 * as pieces (or <0xXX> bytes, or unk), then merges by rank, lowest first and leftmost among
 * equal ranks, as `tokenizers`' BPE does. */
static int bpe_word(enc *e, const char *w, size_t n)
{
    const hf_tokenizer *t = e->t;
    if (n > INT_MAX / 2) return errmsg(e->err, e->errlen, "a pre-token of %zu bytes", n);
    if (t->ignore_merges) {
        int id = vocab_find(t, w, n);
        if (id >= 0) return emit(e, id);
    }
    size_t ns = 0;
    int unk_len = 0; /* a pending unk token covering unk_len bytes */
    for (size_t i = 0; i < n;) {
        unsigned cp;
        int bad, k = utf8_char((const unsigned char *)w + i, n - i, &cp, &bad);
        if (k == 0) k = bad; /* not reached: the text was made valid */
        int id = vocab_find(t, w + i, (size_t)k);
        if (id >= 0) {
            if (unk_len && sym_add(e, &ns, t->unk_id, unk_len) != 0) return -1;
            unk_len = 0;
            if (sym_add(e, &ns, id, k) != 0) return -1;
        } else {
            int all = t->byte_fallback;
            for (int j = 0; all && j < k; j++) all = t->byte_ids[(unsigned char)w[i + j]] >= 0;
            if (all) {
                for (int j = 0; j < k; j++)
                    if (sym_add(e, &ns, t->byte_ids[(unsigned char)w[i + j]], 1) != 0) return -1;
            } else if (t->unk_id >= 0) {
                if (unk_len && !t->fuse_unk) {
                    if (sym_add(e, &ns, t->unk_id, unk_len) != 0) return -1;
                    unk_len = 0;
                }
                unk_len += k;
            } else {
                return errmsg(e->err, e->errlen,
                              "'%.*s' has no token (no byte fallback, no unk_token)", k, w + i);
            }
        }
        i += (size_t)k;
    }
    if (unk_len && sym_add(e, &ns, t->unk_id, unk_len) != 0) return -1;
    if (ns == 0) return 0;
    e->sym[ns - 1].next = -1;

    e->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        const int32_t *m = merge_of(t, e->sym[i].id, e->sym[i + 1].id);
        if (m && heap_push(e, t->mrank[*m], (int)i, t->mnew[*m]) != 0) return -1;
    }
    while (e->heap_n) {
        heap_item top = heap_pop(e);
        sym *s = &e->sym[top.pos];
        if (s->len == 0 || s->next < 0) continue;
        sym *r = &e->sym[s->next];
        const int32_t *m = merge_of(t, s->id, r->id);
        if (!m || t->mnew[*m] != top.new_id) continue; /* stale: a neighbour changed */
        s->id = top.new_id;
        s->len += r->len;
        r->len = 0;
        s->next = r->next;
        if (s->next >= 0) e->sym[s->next].prev = top.pos;
        if (s->prev >= 0) {
            m = merge_of(t, e->sym[s->prev].id, s->id);
            if (m && heap_push(e, t->mrank[*m], s->prev, t->mnew[*m]) != 0) return -1;
        }
        if (s->next >= 0) {
            m = merge_of(t, s->id, e->sym[s->next].id);
            if (m && heap_push(e, t->mrank[*m], top.pos, t->mnew[*m]) != 0) return -1;
        }
    }
    for (int i = 0; i >= 0; i = e->sym[i].next)
        if (emit(e, e->sym[i].id) != 0) return -1;
    return 0;
}

/* Splits span `in` of `text` by regex re into out following its behavior (`tokenizers`'
 * SplitDelimiterBehavior over the list of gaps and matches); empty results are dropped
 * later. `parts` is scratch: (start, length, is_match) relative to the span. */
static int regex_split(enc *e, const regex *re, const char *text, span in, spans *out, spans *parts)
{
    const PCRE2_SPTR subj = (PCRE2_SPTR)(text + in.off);
    parts->n = 0;
    for (size_t pos = 0, prev_end = 0;;) {
        int rc = pos <= in.len
                     ? pcre2_match(re->code, subj, in.len, pos, PCRE2_NO_UTF_CHECK, e->md, e->mctx)
                     : PCRE2_ERROR_NOMATCH;
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (prev_end < in.len &&
                spans_add(parts, prev_end, in.len - prev_end, !!re->invert) != 0)
                return errmsg(e->err, e->errlen, "out of memory");
            break;
        }
        if (rc < 0) {
            char msg[128];
            pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
            return errmsg(e->err, e->errlen, "pre-tokenizer regex: %s", msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if ((ms > prev_end && spans_add(parts, prev_end, ms - prev_end, !!re->invert) != 0) ||
            spans_add(parts, ms, me - ms, !re->invert) != 0)
            return errmsg(e->err, e->errlen, "out of memory");
        prev_end = me;
        pos = me;
        if (me == ms) { /* an empty match: step over one character */
            unsigned cp;
            int bad, k = me < in.len ? utf8_char(subj + me, in.len - me, &cp, &bad) : 1;
            pos = me + (size_t)(k ? k : 1);
        }
    }
    size_t first = out->n;
    int prev_match = 0;
    if (re->behavior == SPLIT_NEXT) { /* a match joins the part after it: fold from the end */
        for (size_t i = parts->n; i-- > 0;) {
            const span *p = &parts->v[i];
            int m = p->at_start;
            if (m && !prev_match && out->n > first) {
                span *l = &out->v[out->n - 1];
                l->len += l->off - (in.off + p->off);
                l->off = in.off + p->off;
            } else if (spans_add(out, in.off + p->off, p->len, 0) != 0) {
                return errmsg(e->err, e->errlen, "out of memory");
            }
            prev_match = m;
        }
        for (size_t i = first, j = out->n; i + 1 < j; i++, j--) {
            span x = out->v[i];
            out->v[i] = out->v[j - 1];
            out->v[j - 1] = x;
        }
    } else {
        for (size_t i = 0; i < parts->n; i++) {
            const span *p = &parts->v[i];
            int m = p->at_start, join = 0;
            if (re->behavior == SPLIT_REMOVED && m) continue;
            if (re->behavior == SPLIT_PREV) join = m && !prev_match;
            if (re->behavior == SPLIT_CONTIGUOUS) join = m == prev_match;
            if (join && out->n > first) {
                span *l = &out->v[out->n - 1];
                l->len = in.off + p->off + p->len - l->off;
            } else if (spans_add(out, in.off + p->off, p->len, 0) != 0) {
                return errmsg(e->err, e->errlen, "out of memory");
            }
            prev_match = m;
        }
    }
    for (size_t i = first; i < out->n; i++)
        out->v[i].at_start = in.at_start && out->v[i].off == in.off;
    return 0;
}

/* Whether text made of cp and other such characters is its own NFC, in any order: cp is
 * in no range of NFC_UNSAFE (combining marks, characters NFC replaces, the second half of a
 * composition). NFC of other text is not implemented: encode refuses it rather than guess. */
static int nfc_stable(unsigned cp)
{
    size_t lo = 0, hi = sizeof NFC_UNSAFE / sizeof NFC_UNSAFE[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < NFC_UNSAFE[mid][0])
            hi = mid;
        else if (cp > NFC_UNSAFE[mid][1])
            lo = mid + 1;
        else
            return 0;
    }
    return 1;
}

static int normalize(enc *e, const char *s, size_t n, buf *out)
{
    const hf_tokenizer *t = e->t;
    buf tmp = { 0 };
    out->n = 0;
    if (buf_add(out, s, n) != 0) return errmsg(e->err, e->errlen, "out of memory");
    for (int i = 0; i < t->n_norm; i++) {
        const norm_op *op = &t->norm[i];
        if (op->kind == NORM_NFC) {
            for (size_t j = 0; j < out->n;) {
                unsigned cp;
                int bad, k = utf8_char((const unsigned char *)out->p + j, out->n - j, &cp, &bad);
                if (!k)
                    k = bad;
                else if (!nfc_stable(cp)) {
                    free(tmp.p);
                    return errmsg(
                        e->err, e->errlen,
                        "the NFC normalizer is implemented only where it changes nothing; "
                        "U+%04X may change",
                        cp);
                }
                j += (size_t)k;
            }
            continue;
        }
        tmp.n = 0;
        if (op->kind == NORM_PREPEND) {
            if (out->n &&
                (buf_add(&tmp, op->a, strlen(op->a)) != 0 || buf_add(&tmp, out->p, out->n) != 0))
                goto oom;
        } else {
            size_t al = strlen(op->a), bl = strlen(op->b);
            for (size_t j = 0; j < out->n;) {
                if (al <= out->n - j && memcmp(out->p + j, op->a, al) == 0) {
                    if (buf_add(&tmp, op->b, bl) != 0) goto oom;
                    j += al;
                } else {
                    if (buf_add(&tmp, out->p + j, 1) != 0) goto oom;
                    j++;
                }
            }
        }
        buf x = *out;
        *out = tmp;
        tmp = x;
    }
    free(tmp.p);
    return 0;
oom:
    free(tmp.p);
    return errmsg(e->err, e->errlen, "out of memory");
}

/* Pre-tokenizes span `in` of buffer `*cur` and runs BPE on every piece. Byte-level and
 * Metaspace steps rewrite the text, into the other buffer of the pair. */
typedef struct scratch {
    buf b[2];
    spans s[2], parts;
} scratch;

static int pretokenize_bpe(enc *e, scratch *x, const char *text, span in)
{
    const hf_tokenizer *t = e->t;
    int cb = -1; /* the buffer the spans point into: -1 = text */
    const char *cur = text;
    spans *S = &x->s[0], *T = &x->s[1];
    S->n = 0;
    if (spans_add(S, in.off, in.len, in.at_start) != 0) goto oom;
    for (int i = 0; i < t->n_pre; i++) {
        const pre_op *op = &t->pre[i];
        if (op->kind != PRE_SPLIT) { /* rewrite each span into the other buffer */
            buf *nb = &x->b[cb == 0 ? 1 : 0];
            nb->n = 0;
            T->n = 0;
            for (size_t j = 0; j < S->n; j++) {
                const char *p = cur + S->v[j].off;
                size_t n = S->v[j].len, start = nb->n;
                if (op->kind == PRE_BYTELEVEL) {
                    if (op->prefix_space && (n == 0 || p[0] != ' ') && buf_add(nb, " ", 1) != 0)
                        goto oom;
                    if (buf_add(nb, p, n) != 0) goto oom;
                } else {
                    size_t rl = strlen(op->rep);
                    int pre = op->prepend_scheme == PREPEND_ALWAYS ||
                              (op->prepend_scheme == PREPEND_FIRST && S->v[j].at_start);
                    /* "starts with the replacement" is asked after spaces became it */
                    if (pre && !(n && p[0] == ' ') && !(n >= rl && memcmp(p, op->rep, rl) == 0) &&
                        buf_add(nb, op->rep, rl) != 0)
                        goto oom;
                    for (size_t k = 0; k < n; k++)
                        if ((p[k] == ' ' ? buf_add(nb, op->rep, rl) : buf_add(nb, p + k, 1)) != 0)
                            goto oom;
                }
                if (spans_add(T, start, nb->n - start, S->v[j].at_start) != 0) goto oom;
            }
            spans *sw = S;
            S = T;
            T = sw;
            cb = cb == 0 ? 1 : 0;
            cur = x->b[cb].p;
        }
        if (op->has_re) {
            T->n = 0;
            for (size_t j = 0; j < S->n; j++)
                if (S->v[j].len && regex_split(e, &op->re, cur, S->v[j], T, &x->parts) != 0)
                    return -1;
            spans *sw = S;
            S = T;
            T = sw;
        }
        if (op->kind == PRE_BYTELEVEL) { /* every byte to its stand-in character */
            buf *nb = &x->b[cb == 0 ? 1 : 0];
            nb->n = 0;
            for (size_t j = 0; j < S->n; j++) {
                size_t start = nb->n;
                for (size_t k = 0; k < S->v[j].len; k++) {
                    char c[4];
                    int m = put_utf8(c, (unsigned)byte_char((unsigned char)cur[S->v[j].off + k]));
                    if (buf_add(nb, c, (size_t)m) != 0) goto oom;
                }
                S->v[j].off = start;
                S->v[j].len = nb->n - start;
            }
            cb = cb == 0 ? 1 : 0;
            cur = x->b[cb].p;
        }
    }
    for (size_t j = 0; j < S->n; j++)
        if (S->v[j].len && bpe_word(e, cur + S->v[j].off, S->v[j].len) != 0) return -1;
    return 0;
oom:
    return errmsg(e->err, e->errlen, "out of memory");
}

/* Unicode White_Space (Rust's char::is_whitespace, which lstrip/rstrip use). */
static int white_space(unsigned cp)
{
    return (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

/* The first added token of trie w in s[from, n) (valid UTF-8): its id, and its span
 * [*a, *b) widened over the whitespace before it (lstrip, not before `from`) and after it
 * (rstrip); -1 when there is none. */
static int next_added(const hf_tokenizer *t, int w, const char *s, size_t n, size_t from, size_t *a,
                      size_t *b)
{
    if (t->trie_nodes[w] <= 1) return -1;
    for (size_t i = from; i < n; i++) {
        size_t len;
        int id = trie_match(t, w, s + i, n - i, &len);
        if (id < 0) continue;
        *a = i;
        *b = i + len;
        unsigned cp;
        int bad, k;
        while ((t->is_added[id] & ADDED_LSTRIP) && *a > from) {
            size_t p = *a - 1; /* back to the start of the character before */
            while (p > from && ((unsigned char)s[p] & 0xc0) == 0x80) p--;
            if (utf8_char((const unsigned char *)s + p, *a - p, &cp, &bad) != (int)(*a - p) ||
                !white_space(cp))
                break;
            *a = p;
        }
        while ((t->is_added[id] & ADDED_RSTRIP) && *b < n &&
               (k = utf8_char((const unsigned char *)s + *b, n - *b, &cp, &bad)) > 0 &&
               white_space(cp))
            *b += (size_t)k;
        return id;
    }
    return -1;
}

/* Text between raw added tokens: normalized, split again at normalized added tokens, then
 * pre-tokenized and merged. */
static int encode_segment(enc *e, scratch *x, buf *norm, const char *s, size_t n, int at_start)
{
    const hf_tokenizer *t = e->t;
    if (n == 0) return 0;
    if (normalize(e, s, n, norm) != 0) return -1;
    size_t seg = 0, a, b;
    for (int id; (id = next_added(t, 1, norm->p, norm->n, seg, &a, &b)) >= 0; seg = b) {
        if (a > seg &&
            pretokenize_bpe(e, x, norm->p, (span){ seg, a - seg, at_start && seg == 0 }) != 0)
            return -1;
        if (emit(e, id) != 0) return -1;
    }
    if (norm->n > seg)
        return pretokenize_bpe(e, x, norm->p, (span){ seg, norm->n - seg, at_start && seg == 0 });
    return 0;
}

int hf_tokenizer_encode(const hf_tokenizer *t, const char *text, size_t len, int add_special,
                        int *ids, int max_ids, char *err, size_t errlen)
{
    if (!text && len) return errmsg(err, errlen, "no text");
    enc e = { .t = t, .ids = ids, .max = max_ids < 0 ? 0 : max_ids, .err = err, .errlen = errlen };
    buf clean = { 0 }, norm = { 0 };
    scratch x;
    memset(&x, 0, sizeof x);
    int rc = -1;
    e.mctx = pcre2_match_context_create(NULL);
    e.md = pcre2_match_data_create(1, NULL);
    e.jit = pcre2_jit_stack_create(32 << 10, REGEX_JIT_STACK, NULL);
    if (!e.mctx || !e.md || !e.jit) {
        errmsg(err, errlen, "out of memory");
        goto out;
    }
    pcre2_set_match_limit(e.mctx, REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(e.mctx, REGEX_MATCH_LIMIT / 10);
    pcre2_jit_stack_assign(e.mctx, NULL, e.jit);
    /* Valid UTF-8 first: each maximal invalid subpart becomes U+FFFD. */
    if (buf_reserve(&clean, len + 1) != 0) {
        errmsg(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < len;) {
        unsigned cp;
        int bad, k = utf8_char((const unsigned char *)text + i, len - i, &cp, &bad);
        if (buf_add(&clean, k ? text + i : "\xef\xbf\xbd", k ? (size_t)k : 3) != 0) {
            errmsg(err, errlen, "out of memory");
            goto out;
        }
        i += (size_t)(k ? k : bad);
    }
    for (int i = 0; add_special && i < t->n_prefix; i++)
        if (emit(&e, t->prefix[i]) != 0) goto out;
    size_t seg = 0, a, b;
    for (int id; (id = next_added(t, 0, clean.p, clean.n, seg, &a, &b)) >= 0; seg = b)
        if (encode_segment(&e, &x, &norm, clean.p + seg, a - seg, seg == 0) != 0 ||
            emit(&e, id) != 0)
            goto out;
    if (encode_segment(&e, &x, &norm, clean.p + seg, clean.n - seg, seg == 0) != 0) goto out;
    for (int i = 0; add_special && i < t->n_suffix; i++)
        if (emit(&e, t->suffix[i]) != 0) goto out;
    rc = e.n;
out:
    free(clean.p);
    free(norm.p);
    free(x.b[0].p);
    free(x.b[1].p);
    free(x.s[0].v);
    free(x.s[1].v);
    free(x.parts.v);
    free(e.sym);
    free(e.heap);
    pcre2_match_context_free(e.mctx);
    pcre2_match_data_free(e.md);
    pcre2_jit_stack_free(e.jit);
    return rc;
}

/* ---------------------------------------------------------------------- decoding --- */

const char *hf_tokenizer_decode(const hf_tokenizer *t, int prev, int id, size_t *n)
{
    if (id < 0 || id >= t->vocab_size) {
        *n = 0;
        return "";
    }
    size_t k = (size_t)id + (prev < 0 && t->first_table ? (size_t)t->vocab_size : 0);
    const char *s = t->dtext + t->doff[k];
    size_t len = t->dlen[k];
    if (prev < 0 && !t->is_added[id])
        for (int i = 0; i < t->strip_first && len && *s == ' '; i++) {
            s++;
            len--;
        }
    *n = len;
    return s;
}

int hf_tokenizer_lookup(const hf_tokenizer *t, const char *piece)
{
    size_t len = 0, n = strlen(piece);
    int id = n ? trie_match(t, 0, piece, n, &len) : -1;
    if (id < 0 && n) id = trie_match(t, 1, piece, n, &len);
    if (id >= 0 && len == n) return id;
    return vocab_find(t, piece, n);
}

int hf_tokenizer_vocab_size(const hf_tokenizer *t) { return t->vocab_size; }
int hf_tokenizer_bos(const hf_tokenizer *t) { return t->bos_id; }
int hf_tokenizer_eos(const hf_tokenizer *t) { return t->eos_id; }
int hf_tokenizer_is_eos(const hf_tokenizer *t, int id)
{
    return id >= 0 && id < t->vocab_size && t->is_eos[id];
}

hf_chat hf_tokenizer_chat_format(const hf_tokenizer *t) { return t->chat; }

char *hf_tokenizer_chat(const hf_tokenizer *t, const char *system, const char *user)
{
    buf b = { 0 };
    size_t n;
    const char *bos = t->bos_id >= 0 ? hf_tokenizer_decode(t, 0, t->bos_id, &n) : "";
    if (t->bos_id < 0) n = 0;
    int ok = 1;
#define ADD(s) (ok = ok && buf_add(&b, (s), strlen(s)) == 0)
    switch (t->chat) {
    case HF_CHAT_LLAMA3:
        ok = buf_add(&b, bos, n) == 0;
        if (system) {
            ADD("<|start_header_id|>system<|end_header_id|>\n\n");
            ADD(system);
            ADD("<|eot_id|>");
        }
        ADD("<|start_header_id|>user<|end_header_id|>\n\n");
        ADD(user);
        ADD("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case HF_CHAT_CHATML:
        if (system) {
            ADD("<|im_start|>system\n");
            ADD(system);
            ADD("<|im_end|>\n");
        }
        ADD("<|im_start|>user\n");
        ADD(user);
        ADD("<|im_end|>\n<|im_start|>assistant\n");
        break;
    case HF_CHAT_INST:
        ok = buf_add(&b, bos, n) == 0;
        ADD("[INST] ");
        if (system) {
            ADD("<<SYS>>\n");
            ADD(system);
            ADD("\n<</SYS>>\n\n");
        }
        ADD(user);
        /* Mistral's v3 vocabularies have [/INST] as a control token and no space before
         * it in their template; Llama-2 and older Mistral write " [/INST]" as text. */
        {
            int close = hf_tokenizer_lookup(t, "[/INST]");
            ADD(close >= 0 && (t->is_added[close] & ADDED) ? "[/INST]" : " [/INST]");
        }
        break;
    case HF_CHAT_NONE: ok = 0; break;
    }
#undef ADD
    if (!ok || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
