/* BPE encode/decode over llama2.c's tokenizer.bin (see tokenizer.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static const tokenizer *sort_ctx; /* qsort has no context argument in C11 */

static int by_piece(const void *a, const void *b)
{
    return strcmp(sort_ctx->pieces[*(const int *)a], sort_ctx->pieces[*(const int *)b]);
}

void tokenizer_free(tokenizer *t)
{
    for (int i = 0; t->pieces && i < t->vocab_size; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->scores);
    free(t->sorted);
    memset(t, 0, sizeof *t);
}

int tokenizer_load(tokenizer *t, const char *path, int vocab_size, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s'", path);
        return -1;
    }
    t->vocab_size = vocab_size;
    t->pieces = calloc((size_t)vocab_size, sizeof *t->pieces);
    t->scores = calloc((size_t)vocab_size, sizeof *t->scores);
    t->sorted = calloc((size_t)vocab_size, sizeof *t->sorted);
    int32_t maxlen;
    int ok = t->pieces && t->scores && t->sorted && fread(&maxlen, 4, 1, f) == 1 && maxlen > 0;
    t->max_token_length = maxlen;
    for (int i = 0; ok && i < vocab_size; i++) {
        int32_t len;
        ok = fread(&t->scores[i], 4, 1, f) == 1 && fread(&len, 4, 1, f) == 1 && len >= 0 &&
             len <= 1 << 16 && (t->pieces[i] = malloc((size_t)len + 1)) != NULL &&
             fread(t->pieces[i], 1, (size_t)len, f) == (size_t)len;
        if (ok) t->pieces[i][len] = 0;
    }
    fclose(f);
    if (!ok) {
        snprintf(err, errlen, "'%s' is not a tokenizer.bin for %d tokens", path, vocab_size);
        tokenizer_free(t);
        return -1;
    }
    for (int i = 0; i < vocab_size; i++) t->sorted[i] = i;
    sort_ctx = t;
    qsort(t->sorted, (size_t)vocab_size, sizeof *t->sorted, by_piece);
    sort_ctx = NULL;
    t->bos_id = 1;
    t->eos_id = 2;
    return 0;
}

int tokenizer_lookup(const tokenizer *t, const char *piece)
{
    int lo = 0, hi = t->vocab_size - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(piece, t->pieces[t->sorted[mid]]);
        if (c == 0) return t->sorted[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

/* Bytes in the UTF-8 character that starts with byte c (1 for a stray byte). */
static int utf8_len(unsigned char c)
{
    if (c >= 0xf0 && c < 0xf8) return 4;
    if (c >= 0xe0) return c < 0xf0 ? 3 : 1;
    if (c >= 0xc0) return 2;
    return 1;
}

int tokenizer_encode(const tokenizer *t, const char *text, int bos, int *ids)
{
    int n = 0;
    if (bos) ids[n++] = t->bos_id;
    if (!text[0]) return n;
    const int first = n;
    int space = tokenizer_lookup(t, " ");
    if (space >= 0) ids[n++] = space; /* SentencePiece's dummy prefix */

    char *buf = malloc((size_t)t->max_token_length * 2 + 8);
    if (!buf) return n;
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        int len = utf8_len(*p);
        for (int i = 1; i < len; i++)
            if ((p[i] & 0xc0) != 0x80) { len = 1; break; } /* truncated sequence */
        memcpy(buf, p, (size_t)len);
        buf[len] = 0;
        int id = tokenizer_lookup(t, buf);
        if (id >= 0) ids[n++] = id;
        else
            for (int i = 0; i < len; i++) ids[n++] = p[i] + 3; /* byte fallback */
        p += len;
    }

    /* Merge the best-scoring adjacent pair until no pair forms a piece. */
    for (;;) {
        float best = -1e30f;
        int best_id = -1, best_at = -1;
        for (int i = first; i + 1 < n; i++) {
            size_t a = strlen(t->pieces[ids[i]]), b = strlen(t->pieces[ids[i + 1]]);
            if (a + b > (size_t)t->max_token_length * 2) continue;
            memcpy(buf, t->pieces[ids[i]], a);
            memcpy(buf + a, t->pieces[ids[i + 1]], b + 1);
            int id = tokenizer_lookup(t, buf);
            if (id >= 0 && t->scores[id] > best) {
                best = t->scores[id];
                best_id = id;
                best_at = i;
            }
        }
        if (best_at < 0) break;
        ids[best_at] = best_id;
        memmove(ids + best_at + 1, ids + best_at + 2, (size_t)(n - best_at - 2) * sizeof *ids);
        n--;
    }
    free(buf);
    return n;
}

const char *tokenizer_decode(const tokenizer *t, int prev, int id, char byte[2])
{
    if (id < 0 || id >= t->vocab_size) return "";
    const char *piece = t->pieces[id];
    if (prev == t->bos_id && piece[0] == ' ') piece++;
    unsigned int b;
    char tail;
    if (strlen(piece) == 6 && sscanf(piece, "<0x%02X>%c", &b, &tail) == 1) {
        byte[0] = (char)b;
        byte[1] = 0;
        return byte;
    }
    return piece;
}
