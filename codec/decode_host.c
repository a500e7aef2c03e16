/* The CPU reference decoder: bit-exact with the GPU kernel, parallel over chunks, following
 * docs/FORMAT.md's refill schedule literally. Also the validation that lets every decoder
 * trust a coded tensor's tables. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "common/parallel.h"

/* The code must be one df11i_lut_build can lay into a table of 2^max_len entries: built for
 * that L, lengths <= L, Kraft's inequality (longer canonical codes would index past the
 * table). df11i_codebook_read checks the same; a df11i_coded made any other way is checked
 * here too. */
static df11_status code_validate(const df11i_code *code, uint32_t max_len)
{
    if (code->max_len != max_len)
        return df11i_fail(DF11_ERR_CORRUPT, "code built for L=%u, tensor has L=%u", code->max_len,
                          max_len);
    if (code->single_symbol < -1 || code->single_symbol > 255)
        return df11i_fail(DF11_ERR_CORRUPT, "single symbol %d", code->single_symbol);
    if (code->single_symbol >= 0) return DF11_OK;
    const uint64_t full = 1ull << max_len;
    uint64_t kraft = 0;
    for (int s = 0; s < 256; s++) {
        if (code->len[s] > max_len)
            return df11i_fail(DF11_ERR_CORRUPT, "exponent %d: code length %u > %u", s, code->len[s],
                              max_len);
        if (code->len[s]) kraft += full >> code->len[s];
    }
    if (kraft == 0) return df11i_fail(DF11_ERR_CORRUPT, "code has no symbols");
    if (kraft > full) return df11i_fail(DF11_ERR_CORRUPT, "code violates Kraft's inequality");
    return DF11_OK;
}

df11_status df11i_coded_validate(const df11i_coded *c)
{
    if (!c) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_coded_validate: NULL");
    if (c->lane_symbols < DF11_GROUP || c->lane_symbols % DF11_GROUP ||
        c->lane_symbols > DF11_MAX_LANE_SYMBOLS)
        return df11i_fail(DF11_ERR_CORRUPT, "lane symbols %u invalid", c->lane_symbols);
    if (c->max_len < 1 || c->max_len > DF11_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_CORRUPT, "max code length %u invalid", c->max_len);
    df11_status st = code_validate(&c->code, c->max_len);
    if (st != DF11_OK) return st;
    if (c->n_chunks != df11i_n_chunks(c->n_elements, c->lane_symbols))
        return df11i_fail(DF11_ERR_CORRUPT, "%llu chunks for %llu weights",
                          (unsigned long long)c->n_chunks, (unsigned long long)c->n_elements);
    if (c->stream_bytes % 4 || c->stream_bytes < 8)
        return df11i_fail(DF11_ERR_CORRUPT, "stream size %llu",
                          (unsigned long long)c->stream_bytes);
    if (c->n_chunks && (!c->chunks || !c->lanes || !c->stream))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_coded_validate: NULL table");
    const uint64_t words = c->stream_bytes / 4 - 2; /* without the over-read padding */
    const uint64_t ce = df11i_chunk_elems(c->lane_symbols);
    for (uint64_t k = 0; k < c->n_chunks; k++) {
        uint64_t begin = c->chunks[k];
        uint64_t end = k + 1 < c->n_chunks ? c->chunks[k + 1] : words;
        if (begin > end || end > words)
            return df11i_fail(DF11_ERR_CORRUPT, "chunk %llu stream [%llu, %llu) outside %llu words",
                              (unsigned long long)k, (unsigned long long)begin,
                              (unsigned long long)end, (unsigned long long)words);
        uint64_t n_chunk = c->n_elements - k * ce < ce ? c->n_elements - k * ce : ce;
        uint32_t m = df11i_chunk_lanes(n_chunk, c->lane_symbols);
        uint64_t full_words = 0, tail_bits = 0;
        for (uint32_t l = 0; l < m; l++) {
            const uint32_t bits = c->lanes[k * DF11_LANES + l];
            /* not needed for memory safety, but no code can take more */
            const uint64_t most = (uint64_t)df11i_lane_symbols(n_chunk, m, l) *
                                  (c->code.single_symbol >= 0 ? 0 : c->max_len);
            if (bits > most)
                return df11i_fail(DF11_ERR_CORRUPT,
                                  "chunk %llu lane %u: %u bits for %u symbols of at most %u",
                                  (unsigned long long)k, l, bits, df11i_lane_symbols(n_chunk, m, l),
                                  c->code.single_symbol >= 0 ? 0 : c->max_len);
            full_words += bits / 32;
            tail_bits += bits % 32;
        }
        const uint64_t expect = full_words + (tail_bits + 31) / 32;
        if (end - begin != expect)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "chunk %llu: stream of %llu words, its lanes need %llu",
                              (unsigned long long)k, (unsigned long long)(end - begin),
                              (unsigned long long)expect);
    }
    return DF11_OK;
}

/* The CPU decode table widens the shared u16 table: entry = invalid << 31 | length << 16 |
 * exponent << 7, so that an output value is one OR with the spread sign|mantissa byte. */
#define CPU_INVALID 0x80000000u
typedef struct {
    const df11i_coded *c;
    uint16_t *out;
    uint32_t *lut;
    uint16_t sm_spread[256]; /* (sm & 0x80) << 8 | (sm & 0x7f) */
} decode_job;

/* One lane's decoder (docs/FORMAT.md, "Decoding rule"): a 64-bit window, left-aligned,
 * holding `avail` fetched, unconsumed bits; its full words come from the chunk's
 * interleaved area in schedule order, then its tail. */
typedef struct {
    uint64_t window;
    int32_t avail;            /* < 64; negative only once a lane reads past its end */
    uint32_t taken, full;     /* full words taken, and the lane's F */
    uint32_t tail, tail_bits; /* the tail, left-aligned, and T; both 0 once taken */
    uint32_t seen;            /* OR of all table entries, to spot CPU_INVALID */
} lane_state;

/* `n` bits (< 32) at bit `bit` of the tail area, left-aligned, the rest zero. Reads one
 * word past the last tail bit at most: the stream section's padding covers that. */
static inline uint32_t tail_at(const uint32_t *tails, uint32_t bit, uint32_t n)
{
    if (!n) return 0;
    const uint64_t two = (uint64_t)tails[bit / 32] << 32 | tails[bit / 32 + 1];
    return (uint32_t)(two << (bit % 32) >> 32) & ~0u << (32 - n);
}

/* The schedule's refill. While the lane has full words left, avail lies in [0, 64) (a
 * take leaves at least 32, a pair uses at most 30) and the chunk's running position is
 * inside the area (lanes take no more than Σ F), so the take itself is branch-free: the
 * word is loaded regardless and masked. The tail branch is taken once per lane. */
static inline void lane_refill(lane_state *s, const uint32_t *area, uint32_t *pos)
{
    if (__builtin_expect(s->taken < s->full, 1)) {
        const uint32_t take = s->avail < 32;
        const uint64_t word = (uint64_t)area[*pos] << 32 >> s->avail;
        s->window |= word & -(uint64_t)take;
        s->avail += (int32_t)(32 * take);
        s->taken += take;
        *pos += take;
    } else if (s->avail < 32) {
        s->window |= (uint64_t)s->tail << 32 >> (s->avail & 63); /* tail 0 if avail < 0 */
        s->avail += (int32_t)s->tail_bits;
        s->tail = s->tail_bits = 0;
    }
}

static inline uint16_t lane_decode(lane_state *s, const uint32_t *lut, uint32_t L,
                                   uint16_t sm_spread)
{
    const uint32_t entry = lut[s->window >> (64 - L)];
    const uint32_t len = entry >> 16 & 15;
    s->seen |= entry;
    s->window <<= len;
    s->avail -= (int32_t)len;
    return (uint16_t)entry | sm_spread;
}

static df11_status lane_end(const lane_state *s, uint64_t chunk, uint32_t lane, uint32_t lane_bits)
{
    const int64_t fetched = 32 * (int64_t)s->taken + (s->tail_bits ? 0 : lane_bits % 32);
    const int64_t used = fetched - s->avail;
    if (!(s->seen & CPU_INVALID) && used == lane_bits) return DF11_OK;
    return df11i_fail(DF11_ERR_CORRUPT, "chunk %llu lane %u: %s (%lld bits decoded, %u recorded)",
                      (unsigned long long)chunk, lane,
                      (s->seen & CPU_INVALID) ? "invalid code" : "length mismatch", (long long)used,
                      lane_bits);
}

/* Sets up the lanes of a chunk: F, T and the tail (located by the prefix sum of T). */
static void lanes_begin(lane_state *lane, uint32_t *n_sym, const uint16_t *lanes, uint32_t m,
                        uint64_t n_chunk, const uint32_t *area)
{
    uint32_t full_words = 0;
    for (uint32_t l = 0; l < m; l++) full_words += lanes[l] / 32;
    uint32_t tail_bit = 0;
    for (uint32_t l = 0; l < m; l++) {
        const uint32_t tail_bits = lanes[l] % 32;
        lane[l] = (lane_state){ .full = lanes[l] / 32,
                                .tail_bits = tail_bits,
                                .tail = tail_at(area + full_words, tail_bit, tail_bits) };
        tail_bit += tail_bits;
        n_sym[l] = df11i_lane_symbols(n_chunk, m, l);
    }
}

/* Lane l's step of the schedule for a pair: refill, then one or two symbols. */
static inline void lane_pair(lane_state *ls, const uint32_t *area, uint32_t *pos,
                             const decode_job *j, const uint8_t *sm, uint16_t *out, int two)
{
    const uint32_t L = j->c->max_len;
    lane_refill(ls, area, pos);
    out[0] = lane_decode(ls, j->lut, L, j->sm_spread[sm[0]]);
    if (two) out[1] = lane_decode(ls, j->lut, L, j->sm_spread[sm[1]]);
}

/* Decodes a chunk following the refill schedule: by symbol pairs s, and for each s by
 * lane. The lanes' dependency chains (lookup → length → shift) are independent, so the
 * CPU overlaps them. Lane l's symbols s, s+1 are elements e, e+1 (one group holds both). */
static df11_status decode_chunk(void *ctx, uint64_t k)
{
    const decode_job *j = ctx;
    const df11i_coded *c = j->c;
    const uint64_t ce = df11i_chunk_elems(c->lane_symbols), start = k * ce;
    const uint64_t n_chunk = c->n_elements - start < ce ? c->n_elements - start : ce;
    const uint32_t m = df11i_chunk_lanes(n_chunk, c->lane_symbols);
    const uint8_t *sm = c->sm + start;
    uint16_t *out = j->out + start;
    const uint16_t *lanes = c->lanes + k * DF11_LANES;
    const uint32_t *area = c->stream + c->chunks[k];
    lane_state lane[DF11_LANES];
    uint32_t n_sym[DF11_LANES], pos = 0;
    lanes_begin(lane, n_sym, lanes, m, n_chunk, area);

    if (n_chunk == ce) { /* every lane has S symbols: no bounds to check */
        for (uint32_t s = 0; s < c->lane_symbols; s += 2) {
            const uint64_t e =
                (uint64_t)(s / DF11_GROUP) * DF11_LANES * DF11_GROUP + s % DF11_GROUP;
            for (uint32_t l = 0; l < DF11_LANES; l++)
                lane_pair(&lane[l], area, &pos, j, sm + e + l * DF11_GROUP,
                          out + e + l * DF11_GROUP, 1);
        }
    } else { /* lanes' symbol counts never increase with l; the last may be odd */
        for (uint32_t s = 0; s < n_sym[0]; s += 2) {
            const uint64_t e = (uint64_t)(s / DF11_GROUP) * m * DF11_GROUP + s % DF11_GROUP;
            for (uint32_t l = 0; l < m && s < n_sym[l]; l++)
                lane_pair(&lane[l], area, &pos, j, sm + e + l * DF11_GROUP,
                          out + e + l * DF11_GROUP, s + 1 < n_sym[l]);
        }
    }
    for (uint32_t l = 0; l < m; l++) {
        df11_status st = lane_end(&lane[l], k, l, lanes[l]);
        if (st != DF11_OK) return st;
    }
    return DF11_OK;
}

df11_status df11i_decode_host(const df11i_coded *coded, uint16_t *out, int n_threads)
{
    if (!coded || (coded->n_elements && (!out || !coded->sm || !coded->stream)))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_decode_host: NULL buffer");
    df11_status st = df11i_coded_validate(coded);
    if (st != DF11_OK) return st;
    if (coded->n_elements == 0) return DF11_OK;
    const uint32_t size = 1u << coded->max_len;
    uint16_t *narrow = malloc(sizeof(uint16_t) * size);
    decode_job j = { .c = coded, .out = out, .lut = malloc(sizeof(uint32_t) * size) };
    if (!j.lut || !narrow) {
        free(narrow);
        free(j.lut);
        return df11i_fail(DF11_ERR_NO_MEMORY, "decode table");
    }
    df11i_lut_build(&coded->code, narrow);
    for (uint32_t i = 0; i < size; i++)
        j.lut[i] = narrow[i] == DF11_LUT_INVALID
                       ? CPU_INVALID | 15u << 16
                       : (uint32_t)(narrow[i] >> 8) << 16 | (uint32_t)(narrow[i] & 0xff) << 7;
    free(narrow);
    for (int sm = 0; sm < 256; sm++) j.sm_spread[sm] = df11i_bf16_join(0, (uint8_t)sm);
    st = df11i_parallel_for(coded->n_chunks, n_threads, decode_chunk, &j);
    free(j.lut);
    return st;
}
