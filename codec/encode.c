/* The CPU encoder: histogram, code, then two passes over the chunks — sizes (so every
 * chunk knows where its stream starts), then bits — each parallel over chunks. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "common/parallel.h"

typedef struct {
    const uint16_t *bf16;
    uint64_t n;
    uint32_t lane_symbols;
    uint64_t n_chunks;
    uint8_t *sm_out;
    df11_encoded *enc;
    uint8_t len[256];
    uint16_t codes[256];
    uint64_t (*hist)[256];   /* one histogram per hist item */
    uint64_t hist_items;
    uint64_t *chunk_bits;    /* pass 1 */
} encode_job;

/* Visits the elements of lane `lane` of a chunk in decode order. */
#define FOR_LANE_ELEMENTS(n_chunk, m, lane, e)                                    \
    for (uint64_t g_ = (lane); g_ * DF11_GROUP < (n_chunk); g_ += (m))            \
        for (uint64_t e = g_ * DF11_GROUP,                                        \
                      end_ = e + DF11_GROUP < (n_chunk) ? e + DF11_GROUP : (n_chunk); \
             e < end_; e++)

static df11_status hist_item(void *ctx, uint64_t item)
{
    encode_job *j = ctx;
    uint64_t lo = j->n * item / j->hist_items, hi = j->n * (item + 1) / j->hist_items;
    uint64_t *h = j->hist[item];
    for (uint64_t i = lo; i < hi; i++) h[df11_bf16_exp(j->bf16[i])]++;
    return DF11_OK;
}

static void chunk_span(const encode_job *j, uint64_t c, uint64_t *start, uint64_t *n_chunk)
{
    uint64_t ce = df11_chunk_elems(j->lane_symbols);
    *start = c * ce;
    *n_chunk = j->n - *start < ce ? j->n - *start : ce;
}

static df11_status size_item(void *ctx, uint64_t c)
{
    encode_job *j = ctx;
    uint64_t start, n_chunk;
    chunk_span(j, c, &start, &n_chunk);
    const uint16_t *x = j->bf16 + start;
    uint32_t m = df11_chunk_lanes(n_chunk, j->lane_symbols);
    uint64_t total = 0;
    for (uint32_t l = 0; l < m; l++) {
        uint32_t bits = 0;
        FOR_LANE_ELEMENTS(n_chunk, m, l, e) bits += j->len[df11_bf16_exp(x[e])];
        j->enc->lanes[c * DF11_LANES + l] = (uint16_t)bits;
        total += bits;
    }
    j->chunk_bits[c] = total;
    return DF11_OK;
}

static df11_status bits_item(void *ctx, uint64_t c)
{
    encode_job *j = ctx;
    uint64_t start, n_chunk;
    chunk_span(j, c, &start, &n_chunk);
    const uint16_t *x = j->bf16 + start;
    uint8_t *sm = j->sm_out + start;
    uint32_t m = df11_chunk_lanes(n_chunk, j->lane_symbols);
    uint32_t *w = j->enc->stream + j->enc->chunks[c];
    uint64_t acc = 0; /* pending bits, left-aligned */
    uint32_t nacc = 0;
    for (uint32_t l = 0; l < m; l++) {
        FOR_LANE_ELEMENTS(n_chunk, m, l, e) {
            uint16_t v = x[e];
            uint8_t s = df11_bf16_exp(v);
            uint32_t len = j->len[s];
            sm[e] = df11_bf16_sm(v);
            acc |= (uint64_t)j->codes[s] << (64 - nacc - len) * (len != 0);
            nacc += len;
            if (nacc >= 32) {
                *w++ = (uint32_t)(acc >> 32);
                acc <<= 32;
                nacc -= 32;
            }
        }
    }
    if (nacc) *w = (uint32_t)(acc >> 32);
    return DF11_OK;
}

void df11_encoded_free(df11_encoded *enc)
{
    if (!enc) return;
    free(enc->chunks);
    free(enc->lanes);
    free(enc->stream);
    memset(enc, 0, sizeof *enc);
}

df11_status df11_encode(const uint16_t *bf16, uint64_t n, uint32_t max_len,
                        uint32_t lane_symbols, int n_threads, uint8_t *sm_out,
                        df11_encoded *out)
{
    if (!out || (n && (!bf16 || !sm_out)))
        return df11_fail(DF11_ERR_INVALID_ARG, "df11_encode: NULL buffer");
    if (lane_symbols < DF11_GROUP || lane_symbols % DF11_GROUP || lane_symbols > DF11_MAX_LANE_SYMBOLS)
        return df11_fail(DF11_ERR_INVALID_ARG, "lane symbols %u: want a multiple of %d in %d..%d",
                         lane_symbols, DF11_GROUP, DF11_GROUP, DF11_MAX_LANE_SYMBOLS);
    memset(out, 0, sizeof *out);
    encode_job j = {.bf16 = bf16, .n = n, .lane_symbols = lane_symbols, .sm_out = sm_out, .enc = out};
    j.n_chunks = df11_n_chunks(n, lane_symbols);
    df11_status st = DF11_OK;

    int threads = n_threads > 0 ? n_threads : df11_cpu_count();
    j.hist_items = n ? (uint64_t)threads * 4 : 1;
    if (j.hist_items > n && n) j.hist_items = n;
    j.hist = calloc(j.hist_items, sizeof *j.hist);
    j.chunk_bits = calloc(j.n_chunks + 1, sizeof *j.chunk_bits);
    out->chunks = calloc(j.n_chunks + 1, sizeof *out->chunks);
    out->lanes = calloc(j.n_chunks * DF11_LANES + 1, sizeof *out->lanes);
    if (!j.hist || !j.chunk_bits || !out->chunks || !out->lanes) {
        st = df11_fail(DF11_ERR_NO_MEMORY, "encoder tables for %llu weights", (unsigned long long)n);
        goto done;
    }
    if (n && (st = df11_parallel_for(j.hist_items, n_threads, hist_item, &j)) != DF11_OK) goto done;
    for (uint64_t i = 0; i < j.hist_items; i++)
        for (int s = 0; s < 256; s++) out->hist[s] += j.hist[i][s];
    out->entropy = df11_entropy(out->hist);

    df11_code *code = &out->coded.code;
    if ((st = df11_code_build(out->hist, max_len, code)) != DF11_OK) goto done;
    memcpy(j.len, code->len, sizeof j.len);
    df11_code_canonical(code, j.codes);

    if ((st = df11_parallel_for(j.n_chunks, n_threads, size_item, &j)) != DF11_OK) goto done;
    uint64_t words = 0;
    for (uint64_t c = 0; c < j.n_chunks; c++) {
        if (words > UINT32_MAX) {
            st = df11_fail(DF11_ERR_OVERFLOW, "exponent stream over 16 GiB");
            goto done;
        }
        out->chunks[c] = (uint32_t)words;
        words += (j.chunk_bits[c] + 31) / 32;
        out->exponent_bits += j.chunk_bits[c];
    }
    out->coded.stream_bytes = (words + 2) * 4; /* + the two words decoders may over-read */
    out->stream = calloc(words + 2, 4);
    if (!out->stream) {
        st = df11_fail(DF11_ERR_NO_MEMORY, "exponent stream of %llu bytes",
                       (unsigned long long)out->coded.stream_bytes);
        goto done;
    }
    if ((st = df11_parallel_for(j.n_chunks, n_threads, bits_item, &j)) != DF11_OK) goto done;

    out->coded.n_elements = n;
    out->coded.max_len = max_len;
    out->coded.lane_symbols = lane_symbols;
    out->coded.n_chunks = j.n_chunks;
    out->coded.chunks = out->chunks;
    out->coded.lanes = out->lanes;
    out->coded.stream = out->stream;
done:
    free(j.hist);
    free(j.chunk_bits);
    if (st != DF11_OK) df11_encoded_free(out);
    return st;
}
