/* The CPU reference decoder: bit-exact with the GPU kernel, parallel over chunks. Also the
 * validation that lets every decoder trust a coded tensor's tables. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "common/parallel.h"

df11_status df11_coded_validate(const df11_coded *c)
{
    if (c->lane_symbols < DF11_GROUP || c->lane_symbols % DF11_GROUP ||
        c->lane_symbols > DF11_MAX_LANE_SYMBOLS)
        return df11_fail(DF11_ERR_CORRUPT, "lane symbols %u invalid", c->lane_symbols);
    if (c->max_len < 1 || c->max_len > DF11_MAX_CODE_LEN)
        return df11_fail(DF11_ERR_CORRUPT, "max code length %u invalid", c->max_len);
    if (c->n_chunks != df11_n_chunks(c->n_elements, c->lane_symbols))
        return df11_fail(DF11_ERR_CORRUPT, "%llu chunks for %llu weights",
                         (unsigned long long)c->n_chunks, (unsigned long long)c->n_elements);
    if (c->stream_bytes % 4 || c->stream_bytes < 8)
        return df11_fail(DF11_ERR_CORRUPT, "stream size %llu", (unsigned long long)c->stream_bytes);
    const uint64_t words = c->stream_bytes / 4 - 2; /* without the over-read padding */
    const uint64_t ce = df11_chunk_elems(c->lane_symbols);
    for (uint64_t k = 0; k < c->n_chunks; k++) {
        uint64_t begin = c->chunks[k];
        uint64_t end = k + 1 < c->n_chunks ? c->chunks[k + 1] : words;
        if (begin > end || end > words)
            return df11_fail(DF11_ERR_CORRUPT, "chunk %llu stream [%llu, %llu) outside %llu words",
                             (unsigned long long)k, (unsigned long long)begin,
                             (unsigned long long)end, (unsigned long long)words);
        uint64_t n_chunk = c->n_elements - k * ce < ce ? c->n_elements - k * ce : ce;
        uint32_t m = df11_chunk_lanes(n_chunk, c->lane_symbols);
        uint64_t bits = 0;
        for (uint32_t l = 0; l < m; l++) bits += c->lanes[k * DF11_LANES + l];
        if (bits > (end - begin) * 32)
            return df11_fail(DF11_ERR_CORRUPT, "chunk %llu: lanes hold %llu bits, stream %llu",
                             (unsigned long long)k, (unsigned long long)bits,
                             (unsigned long long)(end - begin) * 32);
    }
    return DF11_OK;
}

typedef struct {
    const df11_coded *c;
    uint16_t *out;
    uint16_t *lut;
} decode_job;

static df11_status decode_chunk(void *ctx, uint64_t k)
{
    const decode_job *j = ctx;
    const df11_coded *c = j->c;
    const uint16_t *lut = j->lut;
    const uint32_t L = c->max_len;
    const uint64_t ce = df11_chunk_elems(c->lane_symbols), start = k * ce;
    const uint64_t n_chunk = c->n_elements - start < ce ? c->n_elements - start : ce;
    const uint32_t m = df11_chunk_lanes(n_chunk, c->lane_symbols);
    const uint8_t *sm = c->sm + start;
    uint16_t *out = j->out + start;
    const uint32_t *words = c->stream;
    const uint64_t n_words = c->stream_bytes / 4;

    uint64_t bit = (uint64_t)c->chunks[k] * 32;
    for (uint32_t l = 0; l < m; l++) {
        const uint32_t lane_bits = c->lanes[k * DF11_LANES + l];
        /* 64-bit window, left-aligned; `avail` valid bits in it. */
        uint64_t w = bit / 32;
        uint32_t skip = (uint32_t)(bit % 32);
        uint64_t window = (uint64_t)words[w] << 32 << skip;
        uint32_t avail = 32 - skip;
        uint32_t used = 0, bad = 0;
        w++;
        for (uint64_t g = l; g * DF11_GROUP < n_chunk; g += m) {
            uint64_t e = g * DF11_GROUP, end = e + DF11_GROUP < n_chunk ? e + DF11_GROUP : n_chunk;
            for (; e < end; e++) {
                if (avail < L) { /* words past the section read as zero; caught below */
                    uint64_t next = w < n_words ? words[w] : 0;
                    window |= next << (32 - avail);
                    avail += 32;
                    w++;
                }
                uint32_t entry = lut[window >> (64 - L)];
                uint32_t len = entry >> 8 & 15; /* an invalid entry still shifts sanely */
                bad |= entry == DF11_LUT_INVALID;
                out[e] = df11_bf16_join((uint8_t)entry, sm[e]);
                window <<= len;
                avail -= len;
                used += len;
            }
        }
        if (bad || used != lane_bits)
            return df11_fail(DF11_ERR_CORRUPT, "chunk %llu lane %u: %s (%u bits decoded, %u recorded)",
                             (unsigned long long)k, l, bad ? "invalid code" : "length mismatch",
                             used, lane_bits);
        bit += lane_bits;
    }
    return DF11_OK;
}

df11_status df11_decode_host(const df11_coded *coded, uint16_t *out, int n_threads)
{
    if (!coded || (coded->n_elements && (!out || !coded->sm || !coded->stream)))
        return df11_fail(DF11_ERR_INVALID_ARG, "df11_decode_host: NULL buffer");
    df11_status st = df11_coded_validate(coded);
    if (st != DF11_OK) return st;
    if (coded->n_elements == 0) return DF11_OK;
    decode_job j = {.c = coded, .out = out, .lut = malloc(sizeof(uint16_t) << coded->max_len)};
    if (!j.lut) return df11_fail(DF11_ERR_NO_MEMORY, "decode table");
    df11_lut_build(&coded->code, j.lut);
    st = df11_parallel_for(coded->n_chunks, n_threads, decode_chunk, &j);
    free(j.lut);
    return st;
}
