/* The CPU encoder: histogram, code, then two passes over the chunks — sizes (so every
 * chunk knows where its stream starts), then bits — each parallel over chunks. The bits
 * pass builds each lane's bit string in scratch, then lays the chunk stream out as
 * docs/FORMAT.md (version 2) says: full words in refill order, then packed tails. */
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
    df11i_encoded *enc;
    uint8_t len[256];
    uint16_t codes[256];
    uint64_t (*hist)[256]; /* one histogram per hist item */
    uint64_t hist_items;
    uint64_t *chunk_bits;                    /* pass 1 */
    uint64_t chunks_per_item, scratch_words; /* pass 2 */
} encode_job;

/* Visits the elements of lane `lane` of a chunk in decode order. */
#define FOR_LANE_ELEMENTS(n_chunk, m, lane, e)                                                     \
    for (uint64_t g_ = (lane); g_ * DF11_GROUP < (n_chunk); g_ += (m))                             \
        for (uint64_t e = g_ * DF11_GROUP,                                                         \
                      end_ = e + DF11_GROUP < (n_chunk) ? e + DF11_GROUP : (n_chunk);              \
             e < end_; e++)

static df11_status hist_item(void *ctx, uint64_t item)
{
    encode_job *j = ctx;
    uint64_t lo = j->n * item / j->hist_items, hi = j->n * (item + 1) / j->hist_items;
    uint64_t *h = j->hist[item];
    for (uint64_t i = lo; i < hi; i++) h[df11i_bf16_exp(j->bf16[i])]++;
    return DF11_OK;
}

static void chunk_span(const encode_job *j, uint64_t c, uint64_t *start, uint64_t *n_chunk)
{
    uint64_t ce = df11i_chunk_elems(j->lane_symbols);
    *start = c * ce;
    *n_chunk = j->n - *start < ce ? j->n - *start : ce;
}

static df11_status size_item(void *ctx, uint64_t c)
{
    encode_job *j = ctx;
    uint64_t start, n_chunk;
    chunk_span(j, c, &start, &n_chunk);
    const uint16_t *x = j->bf16 + start;
    uint32_t m = df11i_chunk_lanes(n_chunk, j->lane_symbols);
    uint64_t total = 0;
    for (uint32_t l = 0; l < m; l++) {
        uint32_t bits = 0;
        FOR_LANE_ELEMENTS(n_chunk, m, l, e) bits += j->len[df11i_bf16_exp(x[e])];
        j->enc->lanes[c * DF11_LANES + l] = (uint16_t)bits;
        total += bits;
    }
    j->chunk_bits[c] = total;
    return DF11_OK;
}

/* Scratch for one chunk's bits pass: each lane's bit string (lane l's words from
 * lane_base[l]), for each full word the pair at which the refill schedule takes it, and
 * per pair the number of words taken (then, the area position of the pair's first). */
typedef struct {
    uint32_t *words;
    uint16_t *take_pair;
    uint32_t *pair_words;
    uint32_t lane_base[DF11_LANES + 1];
} chunk_scratch;

/* A lane's encoder: its bit string so far, and a simulation of a decoder's refill
 * schedule (docs/FORMAT.md) telling at which pair each full word is taken. */
typedef struct {
    uint64_t acc; /* pending bits, left-aligned */
    uint32_t nacc;
    uint32_t *w;         /* next word of the string */
    uint16_t *take_pair; /* indexed like the string's words */
    uint32_t taken, full;
    int32_t avail; /* may go negative once all full words are taken: no matter then */
} lane_encoder;

static inline uint32_t lane_put(const encode_job *j, lane_encoder *le, uint16_t v, uint8_t *sm)
{
    uint8_t s = df11i_bf16_exp(v);
    uint32_t len = j->len[s];
    *sm = df11i_bf16_sm(v);
    le->acc |= (uint64_t)j->codes[s] << (64 - le->nacc - len) * (len != 0);
    le->nacc += len;
    /* branch-free flush: the store is harmless when the word is not complete yet */
    uint32_t flush = le->nacc >= 32;
    *le->w = (uint32_t)(le->acc >> 32);
    le->w += flush;
    le->acc <<= 32 * flush;
    le->nacc -= 32 * flush;
    return len;
}

/* The schedule's step for pair `pair` of `bits` bits: take a full word if fewer than 32
 * bits are fetched and unused. The take_pair store past the last take is overwritten or
 * ignored (scratch has one spare entry). */
static inline void lane_schedule(lane_encoder *le, uint32_t pair, uint32_t bits,
                                 uint32_t *pair_words)
{
    uint32_t take = (le->avail < 32) & (le->taken < le->full);
    le->take_pair[le->taken] = (uint16_t)pair;
    pair_words[pair] += take;
    le->taken += take;
    le->avail += (int32_t)(32 * take) - (int32_t)bits;
}

/* Builds lane l's bit string into scratch and notes when each full word is taken. */
static void lane_encode(const encode_job *j, uint64_t start, uint64_t n_chunk, uint32_t m,
                        uint32_t l, uint32_t lane_bits, chunk_scratch *cs)
{
    const uint16_t *x = j->bf16 + start;
    uint8_t *sm = j->sm_out + start;
    lane_encoder le = { .w = cs->words + cs->lane_base[l],
                        .take_pair = cs->take_pair + cs->lane_base[l],
                        .full = lane_bits / 32 };
    uint32_t pair = 0;
    for (uint64_t g = l; g * DF11_GROUP < n_chunk; g += m) {
        const uint64_t e0 = g * DF11_GROUP;
        const uint64_t end = e0 + DF11_GROUP < n_chunk ? e0 + DF11_GROUP : n_chunk;
        uint64_t e = e0;
        for (; e + 1 < end; e += 2, pair++) {
            uint32_t bits = lane_put(j, &le, x[e], sm + e);
            bits += lane_put(j, &le, x[e + 1], sm + e + 1);
            lane_schedule(&le, pair, bits, cs->pair_words);
        }
        if (e < end) /* the tensor's last group, of odd length: a pair of one symbol */
            lane_schedule(&le, pair++, lane_put(j, &le, x[e], sm + e), cs->pair_words);
    }
    if (le.nacc) *le.w = (uint32_t)(le.acc >> 32);
}

/* Emits the chunk stream: the full words in the order the schedule takes them (sorted by
 * pair, then lane), then the lanes' tails packed back to back. */
static void chunk_emit(const uint16_t *lanes, uint32_t m, uint32_t n_pairs, chunk_scratch *cs,
                       uint32_t *out)
{
    uint32_t pos = 0;
    for (uint32_t p = 0; p < n_pairs; p++) {
        uint32_t count = cs->pair_words[p];
        cs->pair_words[p] = pos;
        pos += count;
    }
    for (uint32_t l = 0; l < m; l++) {
        const uint32_t base = cs->lane_base[l], full = lanes[l] / 32;
        for (uint32_t w = 0; w < full; w++)
            out[cs->pair_words[cs->take_pair[base + w]]++] = cs->words[base + w];
    }
    out += pos;
    uint64_t acc = 0;
    uint32_t nacc = 0;
    for (uint32_t l = 0; l < m; l++) {
        const uint32_t tail_bits = lanes[l] % 32;
        if (!tail_bits) continue;
        acc |= (uint64_t)cs->words[cs->lane_base[l] + lanes[l] / 32] << 32 >> nacc;
        nacc += tail_bits;
        if (nacc >= 32) {
            *out++ = (uint32_t)(acc >> 32);
            acc <<= 32;
            nacc -= 32;
        }
    }
    if (nacc) *out = (uint32_t)(acc >> 32);
}

static void bits_chunk(const encode_job *j, uint64_t c, chunk_scratch *cs)
{
    uint64_t start, n_chunk;
    chunk_span(j, c, &start, &n_chunk);
    const uint32_t m = df11i_chunk_lanes(n_chunk, j->lane_symbols);
    const uint16_t *lanes = j->enc->lanes + c * DF11_LANES;
    const uint32_t n_pairs = (df11i_lane_symbols(n_chunk, m, 0) + 1) / 2; /* lane 0 has the most */
    memset(cs->pair_words, 0, sizeof *cs->pair_words * n_pairs);
    cs->lane_base[0] = 0;
    for (uint32_t l = 0; l < m; l++)
        cs->lane_base[l + 1] = cs->lane_base[l] + (lanes[l] + 31u) / 32;
    for (uint32_t l = 0; l < m; l++) lane_encode(j, start, n_chunk, m, l, lanes[l], cs);
    chunk_emit(lanes, m, n_pairs, cs, j->enc->stream + j->enc->chunks[c]);
}

/* One item is a run of chunks sharing one scratch allocation. */
static df11_status bits_item(void *ctx, uint64_t item)
{
    encode_job *j = ctx;
    const uint64_t first = item * j->chunks_per_item;
    const uint64_t last =
        first + j->chunks_per_item < j->n_chunks ? first + j->chunks_per_item : j->n_chunks;
    const size_t words = j->scratch_words + 1, pairs = j->lane_symbols / 2;
    chunk_scratch cs = { .words = malloc(words * sizeof *cs.words),
                         .take_pair = malloc(words * sizeof *cs.take_pair),
                         .pair_words = malloc(pairs * sizeof *cs.pair_words) };
    df11_status st = DF11_OK;
    if (!cs.words || !cs.take_pair || !cs.pair_words)
        st = df11i_fail(DF11_ERR_NO_MEMORY, "encoder scratch of %zu words", words);
    for (uint64_t c = first; c < last && st == DF11_OK; c++) bits_chunk(j, c, &cs);
    free(cs.words);
    free(cs.take_pair);
    free(cs.pair_words);
    return st;
}

void df11i_encoded_free(df11i_encoded *enc)
{
    if (!enc) return;
    free(enc->chunks);
    free(enc->lanes);
    free(enc->stream);
    memset(enc, 0, sizeof *enc);
}

/* The exponent histogram: hist_items slices counted in parallel, summed in slice order;
 * and its entropy. */
static df11_status count_exponents(encode_job *j, int n_threads)
{
    df11i_encoded *out = j->enc;
    df11_status st;
    if (j->n && (st = df11i_parallel_for(j->hist_items, n_threads, hist_item, j)) != DF11_OK)
        return st;
    for (uint64_t i = 0; i < j->hist_items; i++)
        for (int s = 0; s < 256; s++) out->hist[s] += j->hist[i][s];
    out->entropy = df11i_entropy(out->hist);
    return DF11_OK;
}

/* The sizes pass: each chunk's bits (in parallel), then where each chunk's stream starts.
 * *words is the stream's length in words, *max_chunk_words the longest chunk's. */
static df11_status size_chunks(encode_job *j, int n_threads, uint64_t *words,
                               uint64_t *max_chunk_words)
{
    df11i_encoded *out = j->enc;
    df11_status st = df11i_parallel_for(j->n_chunks, n_threads, size_item, j);
    if (st != DF11_OK) return st;
    for (uint64_t c = 0; c < j->n_chunks; c++) {
        if (*words > UINT32_MAX)
            return df11i_fail(DF11_ERR_OVERFLOW, "exponent stream over 16 GiB");
        out->chunks[c] = (uint32_t)*words;
        /* Σ F + ceil(Σ T / 32) = ceil(Σ B / 32): v2 stores the same bits as v1 */
        const uint64_t chunk_words = (j->chunk_bits[c] + 31) / 32;
        *words += chunk_words;
        if (chunk_words > *max_chunk_words) *max_chunk_words = chunk_words;
        out->exponent_bits += j->chunk_bits[c];
    }
    return DF11_OK;
}

/* The bits pass: allocates the stream of `words` words and fills it, chunks_per_item
 * chunks per parallel item. */
static df11_status write_stream(encode_job *j, int n_threads, int threads, uint64_t words,
                                uint64_t max_chunk_words)
{
    df11i_encoded *out = j->enc;
    /* lane strings each end in their own partial word: at most one more per lane */
    j->scratch_words = max_chunk_words + DF11_LANES;
    j->chunks_per_item = j->n_chunks / ((uint64_t)threads * 8) + 1;
    out->coded.stream_bytes = (words + 2) * 4; /* + the two words decoders may over-read */
    out->stream = calloc(words + 2, 4);
    if (!out->stream)
        return df11i_fail(DF11_ERR_NO_MEMORY, "exponent stream of %llu bytes",
                          (unsigned long long)out->coded.stream_bytes);
    const uint64_t bits_items = (j->n_chunks + j->chunks_per_item - 1) / j->chunks_per_item;
    return df11i_parallel_for(bits_items, n_threads, bits_item, j);
}

df11_status df11i_encode(const uint16_t *bf16, uint64_t n, uint32_t max_len, uint32_t lane_symbols,
                         int n_threads, uint8_t *sm_out, df11i_encoded *out)
{
    if (!out || (n && (!bf16 || !sm_out)))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_encode: NULL buffer");
    if (lane_symbols < DF11_GROUP || lane_symbols % DF11_GROUP ||
        lane_symbols > DF11_MAX_LANE_SYMBOLS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "lane symbols %u: want a multiple of %d in %d..%d",
                          lane_symbols, DF11_GROUP, DF11_GROUP, DF11_MAX_LANE_SYMBOLS);
    memset(out, 0, sizeof *out);
    encode_job j = {
        .bf16 = bf16, .n = n, .lane_symbols = lane_symbols, .sm_out = sm_out, .enc = out
    };
    j.n_chunks = df11i_n_chunks(n, lane_symbols);
    df11_status st = DF11_OK;

    int threads = n_threads > 0 ? n_threads : df11i_cpu_count();
    j.hist_items = n ? (uint64_t)threads * 4 : 1;
    if (j.hist_items > n && n) j.hist_items = n;
    j.hist = calloc(j.hist_items, sizeof *j.hist);
    j.chunk_bits = calloc(j.n_chunks + 1, sizeof *j.chunk_bits);
    out->chunks = calloc(j.n_chunks + 1, sizeof *out->chunks);
    out->lanes = calloc(j.n_chunks * DF11_LANES + 1, sizeof *out->lanes);
    if (!j.hist || !j.chunk_bits || !out->chunks || !out->lanes) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "encoder tables for %llu weights",
                        (unsigned long long)n);
        goto done;
    }
    if ((st = count_exponents(&j, n_threads)) != DF11_OK) goto done;

    df11i_code *code = &out->coded.code;
    if ((st = df11i_code_build(out->hist, max_len, code)) != DF11_OK) goto done;
    memcpy(j.len, code->len, sizeof j.len);
    df11i_code_canonical(code, j.codes);

    uint64_t words = 0, max_chunk_words = 0;
    if ((st = size_chunks(&j, n_threads, &words, &max_chunk_words)) != DF11_OK) goto done;
    if ((st = write_stream(&j, n_threads, threads, words, max_chunk_words)) != DF11_OK) goto done;

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
    if (st != DF11_OK) df11i_encoded_free(out);
    return st;
}
