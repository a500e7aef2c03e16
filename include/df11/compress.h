/* Writing .df11 containers.
 *
 * df11_compress_tensors() takes tensors from anywhere (memory, an mmapped safetensors file)
 * and writes one .df11 file. df11_compress_path() is the same for a safetensors file, a
 * Hugging Face model folder or a DFloat11 folder. Output appears at `out_path` only when the whole run
 * succeeded: it is written to a new file in the same directory (unnamed where Linux allows
 * it), fsynced and renamed over `out_path`, whose directory is then fsynced. A run that
 * fails, or a process killed mid-write, leaves `out_path` as it was and no temporary that
 * stays (a named one left by a SIGKILL is removed by the next write of the same path).
 * The file gets mode 0666 & ~umask, like any file the process creates (and like
 * df11-decompress's safetensors output); a replaced file's mode is not kept.
 */
#ifndef DF11_COMPRESS_H
#define DF11_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "df11/file.h"
#include "df11/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF11_DEFAULT_MAX_CODE_LEN 12
#define DF11_DEFAULT_LANE_SYMBOLS 2048
/* The ranges of the two code options (the same values codec/codec.h uses; a translation
 * unit seeing both would not compile if they differed). */
#define DF11_MAX_CODE_LEN 15
#define DF11_MAX_LANE_SYMBOLS 4096
#define DF11_DEFAULT_LAYER_PREFIX "model.layers."

typedef struct df11_tensor_source {
    const char *name;
    df11_dtype dtype;
    uint32_t ndim;
    uint64_t shape[DF11_MAX_DIMS];
    const void *data; /* n_elements * dtype size bytes, little-endian */
} df11_tensor_source;

/* Where a long call stands, handed to a df11_progress_fn after each group (from the
 * calling thread). Bytes are the call's input: the source tensors' bytes for compress,
 * the decoded bytes for decompress. */
typedef struct df11_progress {
    uint32_t groups_done, groups_total;
    uint64_t bytes_done, bytes_total;
} df11_progress;
typedef void (*df11_progress_fn)(void *ctx, const df11_progress *progress);

typedef struct df11_compress_options {
    int n_threads; /* 0 = all cores */
    /* Longest Huffman code L, 1..DF11_MAX_CODE_LEN; 0 = DF11_DEFAULT_MAX_CODE_LEN. One L
     * holds for every tensor and is never raised behind the caller's back: a BF16 tensor
     * with more than 2^L distinct exponents fails the whole call with
     * DF11_ERR_INVALID_ARG, the detail naming the tensor, its count of distinct
     * exponents and the smallest L that codes it (ceil(log2(count))); no file is written.
     * Any L >= 8 codes every tensor (there are 256 exponent values). */
    uint32_t max_code_len;
    /* Weights per decoder lane: a multiple of 8 in 8..DF11_MAX_LANE_SYMBOLS;
     * 0 = DF11_DEFAULT_LANE_SYMBOLS. */
    uint32_t lane_symbols;
    /* Tensors named "<layer_prefix><N>.<rest>" form group "layers.N" (block N); every
     * other tensor is a group of its own. NULL = DF11_DEFAULT_LAYER_PREFIX. */
    const char *layer_prefix;
    /* Called from the calling thread after each group; may be NULL. */
    void (*progress)(void *ctx, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_ctx;
    /* The exponent code of BF16 tensors: 0 = the default, DF11_CODEC_EXP_HUFFMAN (a
     * zero-initialised struct keeps working); DF11_CODEC_EXP_FIXED8 codes every 2-D BF16
     * tensor with the fixed-width code laid out for the fused matmul kernels (3 bits in an
     * 8-exponent window, the rest as records; about 70.4% of BF16 against Huffman's ~67%;
     * format 2.2) and the other BF16 tensors (1-D norms, biases) with Huffman;
     * DF11_CODEC_EXP_FIXED the same with escape codes (~70.0%, 3-4% slower to multiply;
     * format 2.1; docs/FORMAT.md). Anything else (RAW included) fails with
     * DF11_ERR_INVALID_ARG. The df11-compress tool defaults to EXP_FIXED8 by issue 11's
     * measurements (bench/RESULTS.md); 0 stays Huffman here, so that a program that sets
     * nothing keeps writing the files it wrote. */
    df11_codec codec;
    /* Like `progress` with the group count too, and called instead of it when set (with
     * progress_ctx); may be NULL. */
    df11_progress_fn group_progress;
    /* Nonzero: no exponent code at all, every tensor stored as it is (`codec` ignored): BF16
     * weights in the df11 container, e.g. a baseline that df11_model_open streams under the
     * same budgets as a compressed file (df11-run --bench). */
    int store_raw;
} df11_compress_options;

typedef struct df11_compress_summary {
    uint32_t n_tensors, n_groups;
    uint64_t bf16_weights;      /* elements of BF16 tensors */
    uint64_t bf16_bytes;        /* their size uncompressed */
    uint64_t bf16_stored_bytes; /* their size in the file, padding and index excluded */
    uint64_t raw_bytes;         /* non-BF16 tensors, stored as they were */
    uint64_t file_bytes;
    double exponent_entropy; /* H of all BF16 exponents together, bits/weight */
    double seconds;
} df11_compress_summary;

/* `metadata`: the source's config.json text (may be NULL). `summary` may be NULL.
 * Options out of range fail with DF11_ERR_INVALID_ARG before any tensor is read. */
DF11_API df11_status df11_compress_tensors(const char *out_path, const df11_tensor_source *tensors,
                                           size_t n_tensors, const char *metadata,
                                           size_t metadata_len,
                                           const df11_compress_options *options,
                                           df11_compress_summary *summary);

/* `in_path`: a .safetensors file, or a folder with model.safetensors or
 * model.safetensors.index.json (+ shards) and optionally config.json, or a DFloat11 folder
 * (config.json with "dfloat11_config"): its compressed modules are decoded on the CPU
 * (n_threads), one module in memory at a time, and the .df11 holds the original tensors
 * (docs/FORMAT.md, "Input: DFloat11 folders"); a module that does not decode exactly
 * fails with DF11_ERR_CORRUPT / TRUNCATED, a weight whose shape df11 cannot tell with
 * DF11_ERR_UNSUPPORTED. Options are checked
 * (DF11_ERR_INVALID_ARG) before the input is opened. */
DF11_API df11_status df11_compress_path(const char *in_path, const char *out_path,
                                        const df11_compress_options *options,
                                        df11_compress_summary *summary);

typedef struct df11_decompress_options {
    int n_threads; /* decode threads, 0 = all cores */
    /* Called after each group is written (and once more when the file is durable); may be
     * NULL. */
    df11_progress_fn progress;
    void *progress_ctx;
} df11_decompress_options;

/* Writes every tensor of a .df11 file, decoded, to one safetensors file whose tensor
 * bytes are identical to the original's, atomically as df11_compress_tensors writes.
 * Streams: the header goes out first, then one group at a time is read, decoded into one
 * reused buffer and written, so memory holds about the largest group's payload and
 * decoded bytes, never the model. `options` may be NULL (all cores, no progress). */
DF11_API df11_status df11_decompress_path(const char *df11_path, const char *out_path,
                                          const df11_decompress_options *options);
/* df11_decompress_path with only a thread count. */
DF11_API df11_status df11_decompress_to_safetensors(const char *df11_path, const char *out_path,
                                                    int n_threads);

#ifdef __cplusplus
}
#endif
#endif
