/* Reading .df11 containers (see docs/FORMAT.md) and decoding them on the CPU.
 *
 *     df11_file *f;
 *     if (df11_file_open("model.df11", &f) != DF11_OK) { ... df11_last_error_detail() ... }
 *     for (uint32_t g = 0; g < df11_file_n_groups(f); g++) {
 *         const df11_group_info *gi = df11_file_group(f, g);
 *         void *payload = malloc(gi->payload_size), *out = malloc(gi->decoded_size);
 *         df11_file_read_group(f, g, payload);              // pread + xxh3 check
 *         df11_group_decode_host(f, g, payload, out, 0);     // BF16 bytes, bit-exact
 *         // tensor t of the group lives at out + df11_file_tensor(f, t)->decoded_offset
 *     }
 *     df11_file_close(f);
 *
 * Thread safety: a df11_file is immutable after open; every function here may be called
 * from several threads at once on one file.
 */
#ifndef DF11_FILE_H
#define DF11_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "df11/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF11_MAX_DIMS 8

typedef enum df11_dtype {
    DF11_DTYPE_INVALID = 0,
    DF11_DTYPE_BF16 = 1,
    DF11_DTYPE_F16 = 2,
    DF11_DTYPE_F32 = 3,
    DF11_DTYPE_F64 = 4,
    DF11_DTYPE_I8 = 5,
    DF11_DTYPE_I16 = 6,
    DF11_DTYPE_I32 = 7,
    DF11_DTYPE_I64 = 8,
    DF11_DTYPE_U8 = 9,
    DF11_DTYPE_U16 = 10,
    DF11_DTYPE_U32 = 11,
    DF11_DTYPE_U64 = 12,
    DF11_DTYPE_BOOL = 13,
    DF11_DTYPE_F8_E4M3 = 14,
    DF11_DTYPE_F8_E5M2 = 15,
    DF11_DTYPE_COUNT_
} df11_dtype;

/* Bytes per element (0 for an unknown dtype) and the safetensors spelling ("BF16"). */
DF11_API size_t df11_dtype_size(df11_dtype dtype);
DF11_API const char *df11_dtype_name(df11_dtype dtype);
/* DF11_DTYPE_INVALID if the name is unknown. */
DF11_API df11_dtype df11_dtype_from_name(const char *name);

typedef enum df11_codec {
    DF11_CODEC_RAW = 0,         /* bytes stored as they were */
    DF11_CODEC_EXP_HUFFMAN = 1, /* BF16: Huffman-coded exponents + raw sign|mantissa bytes */
    /* 2-D BF16: a 3-bit exponent code relative to a per-row base, escapes in per-tile
     * lists, weights in tensor-core fragment order (format 2.1; docs/FORMAT.md) */
    DF11_CODEC_EXP_FIXED = 2,
    /* 2-D BF16: as EXP_FIXED with every 3-bit code in an 8-exponent window and the weights
     * outside it as 20-bit records (position, exponent) in per-tile lists, which a fused
     * kernel applies without scanning codes (format 2.2; docs/FORMAT.md) */
    DF11_CODEC_EXP_FIXED8 = 3,
} df11_codec;

/* One group: the tensors of one transformer block, or one non-layer tensor. */
typedef struct df11_group_info {
    const char *name;      /* "layers.3", "model.embed_tokens"; valid until close */
    int32_t layer;         /* block index, or -1 for a non-layer group */
    uint32_t first_tensor; /* tensors [first_tensor, first_tensor + n_tensors) */
    uint32_t n_tensors;
    uint64_t payload_offset; /* file offset, a multiple of 4096 */
    uint64_t payload_size;   /* compressed bytes */
    uint64_t decoded_size;   /* bytes of the decoded group (tensors at 256-byte offsets) */
    uint64_t payload_xxh3;
} df11_group_info;

typedef struct df11_tensor_info {
    const char *name; /* valid until close */
    df11_dtype dtype;
    df11_codec codec;
    uint32_t group;
    uint32_t ndim;
    uint64_t shape[DF11_MAX_DIMS];
    uint64_t n_elements;
    uint64_t nbytes;         /* decoded bytes = n_elements * dtype size */
    uint64_t decoded_offset; /* within the decoded group, a multiple of 256 */
    uint64_t stored_bytes;   /* bytes this tensor takes in the payload, padding excluded */
    uint64_t exponent_bits;  /* coded exponent bits (EXP_HUFFMAN); EXP_FIXED, EXP_FIXED8: every
                                byte but the sign|mantissa ones (bases, codes, exceptions), x 8 */
    float exponent_entropy;  /* empirical exponent entropy, bits/weight (EXP_HUFFMAN, EXP_FIXED,
                                EXP_FIXED8) */
    uint32_t max_code_len;
    uint32_t lane_symbols;
} df11_tensor_info;

typedef struct df11_file df11_file;

/* Opens and validates the header and index (magic, version, index xxh3, every offset and
 * size against the file length). Payloads are checked when read. */
DF11_API df11_status df11_file_open(const char *path, df11_file **out);
DF11_API void df11_file_close(df11_file *file);

DF11_API const char *df11_file_path(const df11_file *file);
DF11_API uint64_t df11_file_size(const df11_file *file);
DF11_API uint32_t df11_file_n_groups(const df11_file *file);
DF11_API uint32_t df11_file_n_tensors(const df11_file *file);
/* NULL if the index is out of range. Valid until close. */
DF11_API const df11_group_info *df11_file_group(const df11_file *file, uint32_t group);
DF11_API const df11_tensor_info *df11_file_tensor(const df11_file *file, uint32_t tensor);
DF11_API df11_status df11_file_find_tensor(const df11_file *file, const char *name,
                                           uint32_t *tensor);
/* Number of layer groups (blocks) and the group holding block `layer`. */
DF11_API uint32_t df11_file_n_layers(const df11_file *file);
DF11_API df11_status df11_file_layer_group(const df11_file *file, uint32_t layer, uint32_t *group);
/* The source model's config.json, copied through verbatim (from a DFloat11 folder: without
 * its dfloat11_config, printed again); not NUL-terminated; len may be 0. Valid until close. */
DF11_API const char *df11_file_metadata(const df11_file *file, size_t *len);

/* Reads a group's payload into `payload` (payload_size bytes) and checks its xxh3. */
DF11_API df11_status df11_file_read_group(const df11_file *file, uint32_t group, void *payload);
/* Checks a payload already in memory (e.g. read by io_uring) against the index. */
DF11_API df11_status df11_group_verify(const df11_file *file, uint32_t group, const void *payload,
                                       uint64_t size);

/* Decodes a whole group into `out` (decoded_size bytes) on the CPU with n_threads
 * threads (0 = all cores). Raw tensors are copied. Padding between tensors is zeroed. A
 * corrupt stream fails with DF11_ERR_CORRUPT; `out` is then unspecified. */
DF11_API df11_status df11_group_decode_host(const df11_file *file, uint32_t group,
                                            const void *payload, void *out, int n_threads);
/* Decodes one tensor of a group into `out` (its nbytes). */
DF11_API df11_status df11_tensor_decode_host(const df11_file *file, uint32_t tensor,
                                             const void *group_payload, void *out, int n_threads);

#ifdef __cplusplus
}
#endif
#endif
