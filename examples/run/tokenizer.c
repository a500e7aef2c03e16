/* BPE encode/decode over llama2.c's tokenizer.bin (see tokenizer.h). The file is parsed
 * from memory with every field range-checked before it is used; encoding never forms an id
 * that is not in the vocabulary. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errmsg.h"
#include "tokenizer.h"

void tokenizer_free(tokenizer *t)
{
    if (t->pieces) free(t->pieces[0]); /* the block they all point into */
    free(t->pieces);
    free(t->lens);
    free(t->scores);
    free(t->sorted);
    memset(t, 0, sizeof *t);
}

/* The byte of a "<0xXX>" piece (two upper- or lower-case hex digits), or -1. */
static int byte_piece(const char *s, int len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

typedef struct sort_item {
    const char *piece;
    int id;
} sort_item;

static int by_piece(const void *a, const void *b)
{
    const sort_item *x = a, *y = b;
    int c = strcmp(x->piece, y->piece);
    return c ? c : (x->id > y->id) - (x->id < y->id);
}

static int32_t rd_i32(const unsigned char *p)
{
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t s;
    memcpy(&s, &v, 4);
    return s;
}

static float rd_f32(const unsigned char *p)
{
    uint32_t v = (uint32_t)rd_i32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

int tokenizer_load_buffer(tokenizer *t, const void *data, size_t size, int vocab_size, char *err,
                          size_t errlen)
{
    memset(t, 0, sizeof *t);
    const unsigned char *p = data;
    if (vocab_size <= 0)
        return errmsg(err, errlen, "vocabulary size %d is not positive", vocab_size);
    if (!p && size) return errmsg(err, errlen, "no data");
    if (size < 4) return errmsg(err, errlen, "%zu bytes, too short for max_token_length", size);
    const int32_t maxlen = rd_i32(p);
    if (maxlen < 1 || maxlen > TOKENIZER_MAX_PIECE)
        return errmsg(err, errlen, "max_token_length %d is not in [1, %d]", (int)maxlen,
                      TOKENIZER_MAX_PIECE);
    /* Every entry takes at least 8 bytes: a bound on vocab_size before allocating for it. */
    if ((size - 4) / 8 < (size_t)vocab_size)
        return errmsg(err, errlen,
                      "%zu bytes cannot hold %d tokens (a tokenizer for a smaller "
                      "vocabulary?)",
                      size, vocab_size);
    const size_t V = (size_t)vocab_size, text_bytes = size - 4 - 8 * V;

    t->vocab_size = vocab_size;
    t->max_token_length = maxlen;
    t->pieces = calloc(V, sizeof *t->pieces);
    t->lens = calloc(V, sizeof *t->lens);
    t->scores = calloc(V, sizeof *t->scores);
    t->sorted = calloc(V, sizeof *t->sorted);
    char *block = malloc(text_bytes + V); /* the pieces with their NULs */
    sort_item *items = malloc(V * sizeof *items);
    if (!t->pieces || !t->lens || !t->scores || !t->sorted || !block || !items) {
        free(block);
        free(items);
        tokenizer_free(t);
        return errmsg(err, errlen, "out of memory for %d tokens", vocab_size);
    }
    t->pieces[0] = block; /* owned from here: tokenizer_free releases it */

    size_t off = 4;
    char *bp = block;
    int rc = 0;
    /* Invariant: the bytes left hold at least the 8-byte heads of the entries to come, so
     * a head is always there to read and the pieces fit `block`. */
    for (size_t i = 0; i < V; i++) {
        float score = rd_f32(p + off);
        int32_t len = rd_i32(p + off + 4);
        off += 8;
        const size_t room = size - off - 8 * (V - 1 - i);
        if (!isfinite(score))
            rc = errmsg(err, errlen, "token %zu: score is not a finite number", i);
        else if (len < 0 || len > maxlen)
            rc = errmsg(err, errlen, "token %zu: length %d is not in [0, max_token_length %d]", i,
                        (int)len, (int)maxlen);
        else if ((size_t)len > room)
            rc = errmsg(err, errlen,
                        "token %zu: %d bytes but the file is truncated (%zu left "
                        "for it)",
                        i, (int)len, room);
        else if (memchr(p + off, 0, (size_t)len))
            rc = errmsg(err, errlen, "token %zu: NUL byte inside its piece", i);
        if (rc) break;
        memcpy(bp, p + off, (size_t)len);
        bp[len] = 0;
        t->pieces[i] = bp;
        t->lens[i] = len;
        t->scores[i] = score;
        bp += len + 1;
        off += (size_t)len;
    }
    if (rc == 0 && off != size)
        rc = errmsg(err, errlen,
                    "%zu bytes after the %d tokens (a tokenizer for a larger "
                    "vocabulary?)",
                    size - off, vocab_size);
    if (rc) {
        free(items);
        tokenizer_free(t);
        return -1;
    }

    for (size_t i = 0; i < V; i++) items[i] = (sort_item){ t->pieces[i], (int)i };
    qsort(items, V, sizeof *items, by_piece);
    for (size_t i = 0; i < V; i++) t->sorted[i] = items[i].id;
    free(items);
    for (int b = 0; b < 256; b++) t->byte_ids[b] = -1;
    for (int i = 0; i < vocab_size; i++) {
        int b = byte_piece(t->pieces[i], t->lens[i]);
        if (b >= 0 && t->byte_ids[b] < 0) t->byte_ids[b] = i;
    }
    t->bos_id = vocab_size > 1 ? 1 : -1;
    t->eos_id = vocab_size > 2 ? 2 : -1;
    return 0;
}

int tokenizer_load(tokenizer *t, const char *path, int vocab_size, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; the type check refuses it. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errmsg(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    int fl;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return errmsg(err, errlen, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return errmsg(err, errlen, "'%s' is not a regular file", path);
    }
    if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return errmsg(err, errlen, "'%s': %s", path, strerror(e));
    }
    /* The largest file vocab_size entries can make; beyond it the parse would fail anyway,
     * so nothing larger is read into memory. */
    uint64_t cap = vocab_size > 0 ? 4 + (uint64_t)vocab_size * (8 + TOKENIZER_MAX_PIECE) : 4;
    if (sb.st_size < 0 || (uint64_t)sb.st_size > cap) {
        close(fd);
        return errmsg(err, errlen, "'%s' is %lld bytes, too large for a tokenizer of %d tokens",
                      path, (long long)sb.st_size, vocab_size);
    }
    size_t size = (size_t)sb.st_size, got = 0;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return errmsg(err, errlen, "'%s': out of memory for %zu bytes", path, size);
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            close(fd);
            free(buf);
            return errmsg(err, errlen, "cannot read '%s': %s", path,
                          e ? strerror(e) : "file shrank while being read");
        }
        got += (size_t)r;
    }
    close(fd);
    char detail[256];
    int rc = tokenizer_load_buffer(t, buf, size, vocab_size, detail, sizeof detail);
    free(buf);
    if (rc)
        return errmsg(err, errlen, "'%s' is not a tokenizer.bin for %d tokens: %s", path,
                      vocab_size, detail);
    return 0;
}

/* Lower bound over the sorted pieces, so a repeated piece gives its lowest id. */
int tokenizer_lookup(const tokenizer *t, const char *piece)
{
    int lo = 0, hi = t->vocab_size; /* answer in [lo, hi] */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(t->pieces[t->sorted[mid]], piece) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->vocab_size && strcmp(t->pieces[t->sorted[lo]], piece) == 0 ? t->sorted[lo] : -1;
}

/* Bytes in the UTF-8 character that starts with byte c (1 for a stray byte). */
static int utf8_len(unsigned char c)
{
    if (c >= 0xf0 && c < 0xf8) return 4;
    if (c >= 0xe0) return c < 0xf0 ? 3 : 1;
    if (c >= 0xc0) return 2;
    return 1;
}

/* ---- merging: symbols in a doubly linked list, candidate pairs in a max-heap ----
 * A heap entry records the versions of its two symbols when it was pushed; a symbol's
 * version changes whenever it merges, so an entry whose versions no longer match is a
 * pair that no longer exists and is skipped when popped. */

typedef struct sym {
    int id, prev, next;
    unsigned ver;
} sym;
typedef struct pair {
    float score;
    int left, right, id;
    unsigned vl, vr;
} pair;

typedef struct merger {
    const tokenizer *t;
    sym *s;
    pair *heap;
    size_t n_heap;
    char *buf; /* max_token_length + 1 */
} merger;

/* a before b: higher score, then the leftmost (symbols keep their text order by index) */
static int pair_before(const pair *a, const pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(merger *m, pair e)
{
    size_t i = m->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&e, &m->heap[up])) break;
        m->heap[i] = m->heap[up];
        i = up;
    }
    m->heap[i] = e;
}

static pair heap_pop(merger *m)
{
    pair top = m->heap[0], last = m->heap[--m->n_heap];
    size_t i = 0, n = m->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&m->heap[c + 1], &m->heap[c])) c++;
        if (!pair_before(&m->heap[c], &last)) break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (n) m->heap[i] = last;
    return top;
}

/* Pushes the pair (l, l's next) if their concatenation is a piece. */
static void consider(merger *m, int l)
{
    if (l < 0) return;
    int r = m->s[l].next;
    if (r < 0) return;
    const tokenizer *t = m->t;
    int a = t->lens[m->s[l].id], b = t->lens[m->s[r].id];
    if (a + b > t->max_token_length) return; /* no piece is that long */
    memcpy(m->buf, t->pieces[m->s[l].id], (size_t)a);
    memcpy(m->buf + a, t->pieces[m->s[r].id], (size_t)b + 1);
    int id = tokenizer_lookup(t, m->buf);
    if (id >= 0) heap_push(m, (pair){ t->scores[id], l, r, id, m->s[l].ver, m->s[r].ver });
}

int tokenizer_encode(const tokenizer *t, const char *text, int bos, int *ids, int max_ids,
                     char *err, size_t errlen)
{
    const int use_bos = bos && t->bos_id >= 0;
    const size_t len = strlen(text);
    if (max_ids < 0) max_ids = 0;
    /* Every token stands for at most max_token_length bytes of text, so this many tokens
     * are needed however the pairs merge: a hopeless text is refused before any work. */
    size_t at_least =
        (size_t)use_bos + (len + (size_t)t->max_token_length - 1) / (size_t)t->max_token_length;
    if (at_least > (size_t)max_ids)
        return errmsg(err, errlen, "the text (%zu bytes) needs at least %zu tokens, more than %d",
                      len, at_least, max_ids);
    if (len > (size_t)INT_MAX / 2) /* symbols are counted in int */
        return errmsg(err, errlen, "the text (%zu bytes) is too long", len);
    int n = 0;
    if (use_bos) ids[n++] = t->bos_id;
    if (len == 0) return n;

    merger m = { .t = t };
    const size_t cap = len + 1; /* symbols: the dummy space, at most one per byte */
    m.s = malloc(cap * sizeof *m.s);
    m.heap = malloc(3 * cap * sizeof *m.heap); /* cap - 1 pairs, then 2 per merge */
    m.buf = malloc((size_t)(t->max_token_length > 4 ? t->max_token_length : 4) + 1);
    if (!m.s || !m.heap || !m.buf) {
        free(m.s);
        free(m.heap);
        free(m.buf);
        return errmsg(err, errlen, "out of memory for a %zu-byte text", len);
    }
    int ns = 0, rc = 0;
    int space = tokenizer_lookup(t, " ");
    if (space >= 0) m.s[ns++].id = space; /* SentencePiece's dummy prefix */
    for (const unsigned char *p = (const unsigned char *)text; *p && rc == 0;) {
        int cl = utf8_len(*p);
        for (int i = 1; i < cl; i++)
            if ((p[i] & 0xc0) != 0x80) {
                cl = 1;
                break;
            } /* truncated sequence */
        memcpy(m.buf, p, (size_t)cl);
        m.buf[cl] = 0;
        int id = tokenizer_lookup(t, m.buf);
        if (id >= 0)
            m.s[ns++].id = id;
        else
            for (int i = 0; i < cl && rc == 0; i++) {
                int b = t->byte_ids[p[i]];
                if (b < 0)
                    rc = errmsg(err, errlen,
                                "byte 0x%02X at offset %zu has no token and the "
                                "vocabulary has no <0x%02X> piece",
                                p[i], (size_t)((const char *)p - text) + (size_t)i, p[i]);
                else
                    m.s[ns++].id = b;
            }
        p += cl;
    }
    for (int i = 0; i < ns; i++) {
        m.s[i].prev = i - 1;
        m.s[i].next = i + 1 < ns ? i + 1 : -1;
        m.s[i].ver = 0;
    }
    for (int i = 0; rc == 0 && i + 1 < ns; i++) consider(&m, i);
    while (rc == 0 && m.n_heap > 0) {
        pair e = heap_pop(&m);
        sym *l = &m.s[e.left], *r = &m.s[e.right];
        if (l->ver != e.vl || r->ver != e.vr || l->next != e.right) continue; /* stale */
        l->id = e.id;
        l->ver++;
        r->ver++;
        r->id = -1;
        l->next = r->next;
        if (l->next >= 0) m.s[l->next].prev = e.left;
        consider(&m, l->prev);
        consider(&m, e.left);
    }
    if (rc == 0) {
        int count = 0;
        for (int i = ns ? 0 : -1; i >= 0; i = m.s[i].next) count++;
        if (count > max_ids - n)
            rc = errmsg(err, errlen, "the text needs %d tokens, more than %d", n + count, max_ids);
        else
            for (int i = ns ? 0 : -1; i >= 0; i = m.s[i].next) ids[n++] = m.s[i].id;
    }
    free(m.s);
    free(m.heap);
    free(m.buf);
    return rc ? -1 : n;
}

const char *tokenizer_decode(const tokenizer *t, int prev, int id, char byte[2])
{
    if (id < 0 || id >= t->vocab_size) return "";
    const char *piece = t->pieces[id];
    int len = t->lens[id];
    if (prev == t->bos_id && piece[0] == ' ') {
        piece++;
        len--;
    }
    int b = byte_piece(piece, len);
    if (b >= 0) {
        byte[0] = (char)b;
        byte[1] = 0;
        return byte;
    }
    return piece;
}
