/* The exponent-Huffman codec for BF16 tensors (docs/FORMAT.md, "Exponent-Huffman
 * tensors"): length-limited canonical codes, the chunk/lane bit-stream layout, a CPU
 * encoder and the CPU reference decoder. Knows nothing of files; loader/ places the
 * sections in a container, kernels/ decodes the same sections on the GPU.
 */
#ifndef DF11_CODEC_H
#define DF11_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "df11/status.h"

#define DF11_LANES 32        /* lanes per chunk = threads of a warp */
#define DF11_GROUP 8         /* consecutive elements a lane decodes per step */
#define DF11_MAX_CODE_LEN 15 /* lengths are stored as 4-bit nibbles */
#define DF11_MAX_LANE_SYMBOLS 4096
#define DF11_LUT_INVALID 0xffff

/* A canonical code: a length per exponent value (0 = absent). */
typedef struct df11i_code {
    uint8_t len[256];
    uint32_t max_len;  /* the L the table is built for */
    int single_symbol; /* -1, or the one symbol of an all-equal tensor (length 0) */
} df11i_code;

/* Builds a complete (Kraft sum 1), length-limited Huffman code (lengths <= max_len) from a
 * histogram. A histogram with more distinct exponents than 2^max_len codes can hold fails
 * with DF11_ERR_INVALID_ARG, the detail naming the count and df11i_code_min_len(). */
df11_status df11i_code_build(const uint64_t hist[256], uint32_t max_len, df11i_code *code);
/* The smallest max_len df11i_code_build accepts for `hist`: ceil(log2(distinct values)),
 * at least 1. */
uint32_t df11i_code_min_len(const uint64_t hist[256]);
/* The codebook section: 2 + ceil(n_sym / 2) bytes. */
size_t df11i_codebook_size(const df11i_code *code);
void df11i_codebook_write(const df11i_code *code, uint8_t *out);
/* Parses and validates (Kraft, lengths <= max_len) a codebook of at most `avail` bytes. */
df11_status df11i_codebook_read(const uint8_t *in, size_t avail, uint32_t max_len,
                                df11i_code *code);
/* Canonical code of every symbol (meaningful where len > 0). */
void df11i_code_canonical(const df11i_code *code, uint16_t codes[256]);
/* The decode table: 2^max_len entries, entry = length << 8 | symbol, DF11_LUT_INVALID for
 * bit patterns no code starts with. */
void df11i_lut_build(const df11i_code *code, uint16_t *lut);

/* Empirical entropy of a histogram, bits/symbol. */
double df11i_entropy(const uint64_t hist[256]);

/* Exponent and sign|mantissa of a BF16 value, and back. */
static inline uint8_t df11i_bf16_exp(uint16_t v) { return (uint8_t)(v >> 7); }
static inline uint8_t df11i_bf16_sm(uint16_t v) { return (uint8_t)((v >> 8 & 0x80) | (v & 0x7f)); }
static inline uint16_t df11i_bf16_join(uint8_t exp, uint8_t sm)
{
    return (uint16_t)((sm & 0x80) << 8 | exp << 7 | (sm & 0x7f));
}

/* Geometry shared by the encoder and every decoder. */
static inline uint64_t df11i_chunk_elems(uint32_t lane_symbols)
{
    return (uint64_t)DF11_LANES * lane_symbols;
}
static inline uint64_t df11i_n_chunks(uint64_t n, uint32_t lane_symbols)
{
    uint64_t ce = df11i_chunk_elems(lane_symbols);
    return n / ce + (n % ce != 0); /* not (n + ce - 1) / ce, which wraps for huge n */
}
/* Active lanes of a chunk holding `n` elements: min(32, ceil(n / S)). */
static inline uint32_t df11i_chunk_lanes(uint64_t n, uint32_t lane_symbols)
{
    uint64_t m = (n + lane_symbols - 1) / lane_symbols;
    return m > DF11_LANES ? DF11_LANES : (uint32_t)m;
}
/* Symbols of lane l of a chunk of `n` elements and m lanes: groups l, l+m, ... of 8, the
 * chunk's last group possibly short. Never increases with l. */
static inline uint32_t df11i_lane_symbols(uint64_t n, uint32_t m, uint32_t l)
{
    const uint64_t groups = (n + DF11_GROUP - 1) / DF11_GROUP;
    const uint64_t mine = (groups - l + m - 1) / m;
    const uint64_t short_by = (groups - 1) % m == l ? groups * DF11_GROUP - n : 0;
    return (uint32_t)(mine * DF11_GROUP - short_by);
}
/* Lane-table entries of a tensor (only the last chunk may have fewer than 32 lanes). */
static inline uint64_t df11i_n_lane_entries(uint64_t n, uint32_t lane_symbols)
{
    uint64_t c = df11i_n_chunks(n, lane_symbols);
    if (c == 0) return 0;
    uint64_t last = n - (c - 1) * df11i_chunk_elems(lane_symbols);
    return (c - 1) * DF11_LANES + df11i_chunk_lanes(last, lane_symbols);
}

/* A coded tensor's sections, in memory (a payload, or the encoder's buffers). */
typedef struct df11i_coded {
    uint64_t n_elements;
    uint32_t max_len, lane_symbols;
    uint64_t n_chunks;
    df11i_code code;
    const uint32_t *chunks; /* n_chunks word offsets */
    const uint16_t *lanes;  /* df11i_n_lane_entries() bit lengths */
    const uint32_t *stream; /* stream_bytes / 4 words, the last two zero */
    uint64_t stream_bytes;
    const uint8_t *sm; /* n_elements sign|mantissa bytes */
} df11i_coded;

/* Encoder output: owns its buffers (free with df11i_encoded_free). */
typedef struct df11i_encoded {
    df11i_coded coded; /* points at the buffers below; coded.sm is not set */
    uint32_t *chunks;
    uint16_t *lanes;
    uint32_t *stream;
    uint64_t hist[256];
    double entropy;
    uint64_t exponent_bits; /* Σ lane bit lengths */
} df11i_encoded;

/* Encodes n BF16 values. `sm_out` (n bytes) receives the sign|mantissa section. */
df11_status df11i_encode(const uint16_t *bf16, uint64_t n, uint32_t max_len, uint32_t lane_symbols,
                         int n_threads, uint8_t *sm_out, df11i_encoded *out);
void df11i_encoded_free(df11i_encoded *enc);

/* Checks a coded tensor's code and tables against each other and the stream size so that
 * decoders can trust them: the code fits its L (lengths <= L, Kraft), chunk offsets
 * non-decreasing, each lane's bit length within what its symbols can take, and each
 * chunk's stream exactly Σ F + ceil(Σ T / 32) words (F, T: its lanes' full words and tail
 * bits), the last one ending where the two padding words begin. Whatever the values in
 * them, a coded tensor that passes is decoded by df11i_decode_host without a read or write
 * outside its buffers, given that the buffers are as large as the fields say: chunks
 * n_chunks entries, lanes df11i_n_lane_entries(), stream stream_bytes, sm n_elements
 * bytes (df11i_file_tensor_coded checks that against the payload). */
df11_status df11i_coded_validate(const df11i_coded *coded);

/* Decodes into `out` (n_elements BF16 values) on n_threads threads. Fails with
 * DF11_ERR_CORRUPT if any lane does not consume exactly its recorded length or meets a bit
 * pattern that is no code. */
df11_status df11i_decode_host(const df11i_coded *coded, uint16_t *out, int n_threads);

/* The CPU decoder's table for one code and its L: made once for a tensor, so that decodes
 * of a few of its chunks at a time (the host matmul op's and row gather's tasks) do not
 * each build it again. Fails where the code does not fit L, as df11i_coded_validate. */
typedef struct df11i_decode_table {
    uint32_t *pairs; /* 2^max_len entries */
    uint32_t max_len;
    int by_pair; /* the decode's loop by pairs of symbols */
} df11i_decode_table;
df11_status df11i_decode_table_make(const df11i_code *code, uint32_t max_len,
                                    df11i_decode_table *t);
void df11i_decode_table_free(df11i_decode_table *t);
/* df11i_decode_host with `t`, made from coded's code (NULL: made for this call). */
df11_status df11i_decode_host_with(const df11i_coded *coded, const df11i_decode_table *t,
                                   uint16_t *out, int n_threads);

#endif
