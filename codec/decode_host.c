/* The CPU reference decoder: bit-exact with the GPU kernel, parallel over chunks, following
 * docs/FORMAT.md's refill schedule literally. Also the validation that lets every decoder
 * trust a coded tensor's tables. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "common/parallel.h"
#include "common/util.h"

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

/* The CPU's table decodes a pair of symbols with one lookup where the top L bits hold both
 * codes (99% of the pairs of trained weights at L = 12): that halves the lookup → shift
 * chains the lanes overlap. An entry, for the L bits that index it: bits 0..4 the bits it
 * consumes (both codes, or with PAIR_ONE the first alone), PAIR_ONE, PAIR_INVALID, bits
 * 8..15 the first exponent, 16..23 the second, 24..27 the first code's length. With the
 * consumed bits lowest, `window << (entry & 63)` needs no unpacking. */
#define PAIR_BITS 31u      /* bits consumed */
#define PAIR_ONE 0x40u     /* the second code is not within the L bits: look it up alone */
#define PAIR_INVALID 0x80u /* no code starts with these bits (consumes 15, as one code) */
static inline uint32_t pair_len0(uint32_t entry) { return entry >> 24 & 15; }
typedef struct {
    const df11i_coded *c;
    uint16_t *out;
    const uint32_t *pairs;
    int by_pair; /* enough pairs fit in L bits for the loop by pairs (pair_share) */
} decode_job;

/* One lane's decoder (docs/FORMAT.md, "Decoding rule"): a 64-bit window, left-aligned,
 * holding `avail` fetched, unconsumed bits; its full words come from the chunk's
 * interleaved area in schedule order, then its tail. The fields the schedule's every step
 * touches come first; the tail's only once per lane. */
typedef struct {
    uint64_t window;
    int32_t avail;            /* < 64; negative only once a lane reads past its end */
    uint32_t left;            /* full words not yet taken */
    uint32_t seen;            /* OR of all table entries, to spot PAIR_INVALID */
    uint32_t tail, tail_bits; /* the tail, left-aligned, and T; both 0 once taken */
} lane_state;

/* `n` bits (< 32) at bit `bit` of the tail area, left-aligned, the rest zero. Reads one
 * word past the last tail bit at most: the stream section's padding covers that. */
static inline uint32_t tail_at(const uint32_t *tails, uint32_t bit, uint32_t n)
{
    if (!n) return 0;
    const uint64_t two = (uint64_t)tails[bit / 32] << 32 | tails[bit / 32 + 1];
    return (uint32_t)(two << (bit % 32) >> 32) & ~0u << (32 - n);
}

/* Lane l's step of the schedule for a pair: the refill, then one or two symbols, whose
 * exponents go to exp[0], exp[1]; by_pair: both from one lookup where they fit. While the
 * lane has full words left, avail lies in [0, 64) (a take leaves at least 32, a pair uses
 * at most 30) and the chunk's running position is inside the area (lanes take no more
 * than Σ F), so the take itself is branch-free: the word is loaded regardless and masked.
 * The tail branch is taken once per lane. The state is copied in and out: exp's stores
 * could alias it otherwise, and the compiler would store it twice. */
static inline void lane_pair(lane_state *s, const uint32_t *area, uint32_t *pos,
                             const uint32_t *pairs, uint32_t L, uint8_t *exp, int two, int by_pair)
{
    uint64_t window = s->window;
    int32_t avail = s->avail;
    if (__builtin_expect(s->left != 0, 1)) {
        /* avail < 64: bit 5 clear is the rule's avail < 32, and avail | 32 its avail after */
        const uint32_t take = ((uint32_t)avail >> 5) ^ 1;
        window |= (uint64_t)(area[*pos] & (0u - take)) << 32 >> avail;
        avail |= 32;
        s->left -= take;
        *pos += take;
    } else if (avail < 32) {
        window |= (uint64_t)s->tail << 32 >> (avail & 63); /* tail 0 if avail < 0 */
        avail += (int32_t)s->tail_bits;
        s->tail = s->tail_bits = 0;
    }
    uint32_t e = pairs[window >> (64 - L)];
    if (by_pair && two) {
        window <<= e & 63;
        avail -= (int32_t)(e & PAIR_BITS);
        df11i_st16(exp, (uint16_t)(e >> 8)); /* both exponents, little-endian */
        if (__builtin_expect(e & PAIR_ONE, 0)) {
            const uint32_t e1 = pairs[window >> (64 - L)], len = pair_len0(e1);
            window <<= len;
            avail -= (int32_t)len;
            exp[1] = (uint8_t)(e1 >> 8);
            e |= e1;
        }
    } else { /* one code at a time, without a branch on the entry */
        uint32_t len = pair_len0(e);
        window <<= len;
        avail -= (int32_t)len;
        exp[0] = (uint8_t)(e >> 8);
        if (two) {
            const uint32_t e1 = pairs[window >> (64 - L)];
            len = pair_len0(e1);
            window <<= len;
            avail -= (int32_t)len;
            exp[1] = (uint8_t)(e1 >> 8);
            e |= e1;
        }
    }
    s->window = window;
    s->avail = avail;
    s->seen |= e;
}

static df11_status lane_end(const lane_state *s, uint64_t chunk, uint32_t lane, uint32_t lane_bits)
{
    const int64_t taken = lane_bits / 32 - s->left;
    const int64_t fetched = 32 * taken + (s->tail_bits ? 0 : lane_bits % 32);
    const int64_t used = fetched - s->avail;
    if (!(s->seen & PAIR_INVALID) && used == lane_bits) return DF11_OK;
    return df11i_fail(DF11_ERR_CORRUPT, "chunk %llu lane %u: %s (%lld bits decoded, %u recorded)",
                      (unsigned long long)chunk, lane,
                      (s->seen & PAIR_INVALID) ? "invalid code" : "length mismatch",
                      (long long)used, lane_bits);
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
        lane[l] = (lane_state){ .left = lanes[l] / 32,
                                .tail_bits = tail_bits,
                                .tail = tail_at(area + full_words, tail_bit, tail_bits) };
        tail_bit += tail_bits;
        n_sym[l] = df11i_lane_symbols(n_chunk, m, l);
    }
}

/* n weights of consecutive exponents and sign|mantissa bytes, as one run the compiler
 * vectorises. Kept out of the schedule's loop: its speed is how many lanes' lookups the
 * CPU keeps in flight, and the fewer instructions there wait on them, the more lanes. */
static inline void join_run(uint16_t *out, const uint8_t *exp, const uint8_t *sm, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) out[i] = df11i_bf16_join(exp[i], sm[i]);
}

/* A chunk whose lanes all have S symbols: no bounds to check. */
static inline void decode_full(lane_state *lane, const uint32_t *area, const uint32_t *pairs,
                               uint32_t L, uint32_t S, const uint8_t *sm, uint16_t *out,
                               int by_pair)
{
    const uint32_t run = DF11_LANES * DF11_GROUP;
    uint8_t exp[DF11_LANES * DF11_GROUP];
    uint32_t pos = 0;
    for (uint32_t g = 0; g < S / DF11_GROUP; g++) {
        for (uint32_t s = 0; s < DF11_GROUP; s += 2)
            for (uint32_t l = 0; l < DF11_LANES; l++)
                lane_pair(&lane[l], area, &pos, pairs, L, exp + l * DF11_GROUP + s, 1, by_pair);
        join_run(out + g * run, exp, sm + g * run, run);
    }
}

/* A chunk's m lanes of n_sym symbols each: lanes' symbol counts never increase with l, and
 * the last may be odd. */
static inline void decode_short(lane_state *lane, const uint32_t *n_sym, uint32_t m,
                                const uint32_t *area, const uint32_t *pairs, uint32_t L,
                                uint64_t n_chunk, const uint8_t *sm, uint16_t *out, int by_pair)
{
    const uint64_t run = (uint64_t)m * DF11_GROUP;
    uint8_t exp[DF11_LANES * DF11_GROUP];
    uint32_t pos = 0;
    for (uint32_t g = 0; g * DF11_GROUP < n_sym[0]; g++) {
        for (uint32_t s = g * DF11_GROUP; s < (g + 1) * DF11_GROUP && s < n_sym[0]; s += 2)
            for (uint32_t l = 0; l < m && s < n_sym[l]; l++)
                lane_pair(&lane[l], area, &pos, pairs, L, exp + l * DF11_GROUP + s % DF11_GROUP,
                          s + 1 < n_sym[l], by_pair);
        const uint64_t e = g * run; /* the last run may be short */
        join_run(out + e, exp, sm + e, (uint32_t)(n_chunk - e < run ? n_chunk - e : run));
    }
}

/* Decodes a chunk following the refill schedule: by symbol pairs s, and for each s by
 * lane. The lanes' dependency chains (lookup → length → shift) are independent, so the
 * CPU overlaps them. Lane l's symbols s, s+1 are elements e, e+1 (one group holds both).
 * Every 8 symbols, the lanes' groups are the chunk's next 8·m elements: their exponents
 * are collected in `exp` and joined to their sign|mantissa bytes as one run. */
static df11_status decode_chunk(void *ctx, uint64_t k)
{
    const decode_job *j = ctx;
    const df11i_coded *c = j->c;
    const uint32_t L = c->max_len;
    const uint64_t ce = df11i_chunk_elems(c->lane_symbols), start = k * ce;
    const uint64_t n_chunk = c->n_elements - start < ce ? c->n_elements - start : ce;
    const uint32_t m = df11i_chunk_lanes(n_chunk, c->lane_symbols);
    const uint8_t *sm = c->sm + start;
    uint16_t *out = j->out + start;
    const uint16_t *lanes = c->lanes + k * DF11_LANES;
    const uint32_t *area = c->stream + c->chunks[k];
    lane_state lane[DF11_LANES];
    uint32_t n_sym[DF11_LANES] = { 0 };
    lanes_begin(lane, n_sym, lanes, m, n_chunk, area);

    if (n_chunk == ce) { /* every lane has S symbols: no bounds to check */
        if (j->by_pair)
            decode_full(lane, area, j->pairs, L, c->lane_symbols, sm, out, 1);
        else
            decode_full(lane, area, j->pairs, L, c->lane_symbols, sm, out, 0);
    } else if (j->by_pair) {
        decode_short(lane, n_sym, m, area, j->pairs, L, n_chunk, sm, out, 1);
    } else {
        decode_short(lane, n_sym, m, area, j->pairs, L, n_chunk, sm, out, 0);
    }
    for (uint32_t l = 0; l < m; l++) {
        df11_status st = lane_end(&lane[l], k, l, lanes[l]);
        if (st != DF11_OK) return st;
    }
    return DF11_OK;
}

/* The share of symbol pairs whose codes fit in L bits together, were symbols as frequent
 * as their code lengths say (2^-length). The loop by pairs branches on PAIR_ONE. Measured
 * on 4096 x 4096 tensors against one code at a time: 1.1x to 1.6x faster from 0.94 up
 * (trained-like weights at L = 10..15 give 0.95 and more), about even at 0.91, 15% slower
 * at 0.82 and 1.6x slower at 0.75, where the branch mispredicts at random. */
static double pair_share(const df11i_code *code)
{
    if (code->single_symbol >= 0) return 1;
    double p[DF11_MAX_CODE_LEN + 1] = { 0 }, share = 0;
    for (int s = 0; s < 256; s++)
        if (code->len[s]) p[code->len[s]] += 1.0 / (1u << code->len[s]);
    for (uint32_t a = 1; a < code->max_len; a++)
        for (uint32_t b = 1; a + b <= code->max_len; b++) share += p[a] * p[b];
    return share;
}

df11_status df11i_decode_table_make(const df11i_code *code, uint32_t max_len, df11i_decode_table *t)
{
    *t = (df11i_decode_table){ .max_len = max_len };
    if (max_len < 1 || max_len > DF11_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_CORRUPT, "max code length %u invalid", max_len);
    df11_status st = code_validate(code, max_len);
    if (st != DF11_OK) return st;
    const uint32_t L = max_len, size = 1u << L;
    uint16_t *lut = malloc(sizeof(uint16_t) * size);
    t->pairs = malloc(sizeof(uint32_t) * size);
    if (!lut || !t->pairs) {
        free(lut);
        df11i_decode_table_free(t);
        return df11i_fail(DF11_ERR_NO_MEMORY, "decode table");
    }
    df11i_lut_build(code, lut);
    for (uint32_t i = 0; i < size; i++) {
        if (lut[i] == DF11_LUT_INVALID) {
            t->pairs[i] = PAIR_INVALID | PAIR_ONE | 15u << 24 | 15u;
            continue;
        }
        /* the bits after the first code, zero-filled: the second code if they hold it all */
        const uint32_t len0 = lut[i] >> 8, next = lut[(i << len0) & (size - 1)];
        const uint32_t pair = (uint32_t)(lut[i] & 0xff) << 8 | len0 << 24;
        t->pairs[i] = next != DF11_LUT_INVALID && (next >> 8) <= L - len0
                          ? pair | (next & 0xff) << 16 | (len0 + (next >> 8))
                          : pair | PAIR_ONE | len0;
    }
    free(lut);
    t->by_pair = pair_share(code) >= 0.92;
    return DF11_OK;
}

void df11i_decode_table_free(df11i_decode_table *t)
{
    free(t->pairs);
    t->pairs = NULL;
}

df11_status df11i_decode_host_with(const df11i_coded *coded, const df11i_decode_table *t,
                                   uint16_t *out, int n_threads)
{
    if (!coded || (coded->n_elements && (!out || !coded->sm || !coded->stream)))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_decode_host: NULL buffer");
    df11_status st = df11i_coded_validate(coded);
    if (st != DF11_OK) return st;
    if (coded->n_elements == 0) return DF11_OK;
    df11i_decode_table own = { 0 };
    if (!t) {
        if ((st = df11i_decode_table_make(&coded->code, coded->max_len, &own)) != DF11_OK)
            return st;
        t = &own;
    } else if (!t->pairs || t->max_len != coded->max_len) { /* indexed by max_len bits */
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_decode_host: a table for L=%u, not %u",
                          t->max_len, coded->max_len);
    }
    decode_job j = { .c = coded, .out = out, .pairs = t->pairs, .by_pair = t->by_pair };
    st = df11i_parallel_for(coded->n_chunks, n_threads, decode_chunk, &j);
    df11i_decode_table_free(&own);
    return st;
}

df11_status df11i_decode_host(const df11i_coded *coded, uint16_t *out, int n_threads)
{
    return df11i_decode_host_with(coded, NULL, out, n_threads);
}
