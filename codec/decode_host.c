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

/* The CPU decode table widens the shared u16 table: entry = invalid << 31 | length << 16 |
 * exponent << 7, so that an output value is one OR with the spread sign|mantissa byte. */
#define CPU_INVALID 0x80000000u
typedef struct {
    const df11_coded *c;
    uint16_t *out;
    uint32_t *lut;
    uint16_t sm_spread[256];   /* (sm & 0x80) << 8 | (sm & 0x7f) */
} decode_job;

/* One lane's bit reader: a 64-bit window, left-aligned, holding `avail` valid bits. */
typedef struct {
    const uint32_t *words;
    uint64_t n_words, w0, w;
    uint64_t window;
    uint32_t skip, avail, seen; /* seen: OR of all table entries, to spot CPU_INVALID */
} lane_reader;

static inline void lane_begin(lane_reader *r, const uint32_t *words, uint64_t n_words, uint64_t bit)
{
    r->words = words;
    r->n_words = n_words;
    r->w0 = bit / 32;
    r->skip = (uint32_t)(bit % 32);
    r->w = r->w0 + 1;
    r->window = (uint64_t)words[r->w0] << 32 << r->skip;
    r->avail = 32 - r->skip;
    r->seen = 0;
}

/* Tops the window up by one word; words past the section read as zero, so a lying lane
 * table ends in a length mismatch rather than a wild read. */
static inline void lane_refill(lane_reader *r, uint32_t need)
{
    if (r->avail < need) {
        uint64_t next = __builtin_expect(r->w < r->n_words, 1) ? r->words[r->w] : 0;
        r->window |= next << (32 - r->avail);
        r->avail += 32;
        r->w++;
    }
}

static inline uint16_t lane_decode(lane_reader *r, const uint32_t *lut, uint32_t L, uint16_t sm_spread)
{
    uint32_t entry = lut[r->window >> (64 - L)];
    uint32_t len = entry >> 16 & 15;
    r->seen |= entry;
    r->window <<= len;
    r->avail -= len;
    return (uint16_t)entry | sm_spread;
}

static df11_status lane_end(const lane_reader *r, uint64_t chunk, uint32_t lane, uint32_t lane_bits)
{
    const uint64_t used = 32 * (r->w - r->w0) - r->skip - r->avail;
    if (!(r->seen & CPU_INVALID) && used == lane_bits) return DF11_OK;
    return df11_fail(DF11_ERR_CORRUPT, "chunk %llu lane %u: %s (%llu bits decoded, %u recorded)",
                     (unsigned long long)chunk, lane, (r->seen & CPU_INVALID) ? "invalid code" : "length mismatch",
                     (unsigned long long)used, lane_bits);
}

static df11_status decode_chunk(void *ctx, uint64_t k)
{
    const decode_job *j = ctx;
    const df11_coded *c = j->c;
    const uint32_t *lut = j->lut;
    const uint16_t *spread = j->sm_spread;
    const uint32_t L = c->max_len;
    const uint64_t ce = df11_chunk_elems(c->lane_symbols), start = k * ce;
    const uint64_t n_chunk = c->n_elements - start < ce ? c->n_elements - start : ce;
    const uint32_t m = df11_chunk_lanes(n_chunk, c->lane_symbols);
    const uint8_t *sm = c->sm + start;
    uint16_t *out = j->out + start;
    const uint16_t *lanes = c->lanes + k * DF11_LANES;
    const uint64_t n_words = c->stream_bytes / 4;
    uint64_t bit = (uint64_t)c->chunks[k] * 32;
    df11_status st;

    if (n_chunk == ce) {
        /* A full chunk: every lane has S/8 whole groups. Two lanes decode in lockstep so
         * that their dependency chains (lookup → length → shift) overlap. */
        for (uint32_t l = 0; l < DF11_LANES; l += 2) {
            lane_reader a, b;
            lane_begin(&a, c->stream, n_words, bit);
            lane_begin(&b, c->stream, n_words, bit + lanes[l]);
            for (uint64_t g = l; g * DF11_GROUP < n_chunk; g += DF11_LANES) {
                const uint64_t ea = g * DF11_GROUP, eb = ea + DF11_GROUP;
                for (int i = 0; i < DF11_GROUP; i += 2) {
                    lane_refill(&a, 2 * L);
                    lane_refill(&b, 2 * L);
                    out[ea + i] = lane_decode(&a, lut, L, spread[sm[ea + i]]);
                    out[eb + i] = lane_decode(&b, lut, L, spread[sm[eb + i]]);
                    out[ea + i + 1] = lane_decode(&a, lut, L, spread[sm[ea + i + 1]]);
                    out[eb + i + 1] = lane_decode(&b, lut, L, spread[sm[eb + i + 1]]);
                }
            }
            if ((st = lane_end(&a, k, l, lanes[l])) != DF11_OK) return st;
            if ((st = lane_end(&b, k, l + 1, lanes[l + 1])) != DF11_OK) return st;
            bit += (uint64_t)lanes[l] + lanes[l + 1];
        }
        return DF11_OK;
    }
    for (uint32_t l = 0; l < m; l++) {
        lane_reader r;
        lane_begin(&r, c->stream, n_words, bit);
        for (uint64_t g = l; g * DF11_GROUP < n_chunk; g += m)
            for (uint64_t e = g * DF11_GROUP; e < n_chunk && e < (g + 1) * DF11_GROUP; e++) {
                lane_refill(&r, L);
                out[e] = lane_decode(&r, lut, L, spread[sm[e]]);
            }
        if ((st = lane_end(&r, k, l, lanes[l])) != DF11_OK) return st;
        bit += lanes[l];
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
    const uint32_t size = 1u << coded->max_len;
    uint16_t *narrow = malloc(sizeof(uint16_t) * size);
    decode_job j = {.c = coded, .out = out, .lut = malloc(sizeof(uint32_t) * size)};
    if (!j.lut || !narrow) {
        free(narrow);
        free(j.lut);
        return df11_fail(DF11_ERR_NO_MEMORY, "decode table");
    }
    df11_lut_build(&coded->code, narrow);
    for (uint32_t i = 0; i < size; i++)
        j.lut[i] = narrow[i] == DF11_LUT_INVALID
                       ? CPU_INVALID | 15u << 16
                       : (uint32_t)(narrow[i] >> 8) << 16 | (uint32_t)(narrow[i] & 0xff) << 7;
    free(narrow);
    for (int sm = 0; sm < 256; sm++) j.sm_spread[sm] = df11_bf16_join(0, (uint8_t)sm);
    st = df11_parallel_for(coded->n_chunks, n_threads, decode_chunk, &j);
    free(j.lut);
    return st;
}
