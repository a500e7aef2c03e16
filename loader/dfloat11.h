/* Reading DFloat11 model folders (the `dfloat11` PyPI package, LeanModels/DFloat11): the
 * compressed modules are decoded on the CPU, bit for bit what their GPU kernel produces,
 * into the BF16 weights of the original model, so that df11_compress_path can turn such a
 * folder into a .df11 file. docs/FORMAT.md ("Input: DFloat11 folders") describes their
 * layout.
 *
 * Everything in the folder is outside input: tensor dtypes and sizes and the lookup tables
 * are checked; every output position, and the gap of every thread whose bytes hold the
 * start of a code, is checked against the codes actually decoded (the gaps of the padding
 * past the last code are not read); a folder that their kernel would decode differently
 * from a plain front-to-back Huffman decode is refused with DF11_ERR_CORRUPT, never
 * decoded into wrong weights. */
#ifndef DF11_LOADER_DFLOAT11_H
#define DF11_LOADER_DFLOAT11_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"
#include "loader/safetensors.h"

/* Their kernel's constants: 8 bytes of code per thread, a 5-bit gap per thread, LUT
 * values from 240 up are pointers to the next table, codes of at most 32 bits. */
#define DF11I_DFL_BYTES_PER_THREAD 8
#define DF11I_DFL_GAP_BITS 5
#define DF11I_DFL_FIRST_POINTER 240
#define DF11I_DFL_MAX_CODE_LEN 32

/* One compressed module's streams, as the five buffers of the folder hold them. */
typedef struct df11i_dfl_stream {
    /* n_luts × 256 bytes: table 0 is indexed by a code's first byte; a value below 240 is
     * an exponent, 256 - v (v >= 240) the table for the next byte; the last table is the
     * code length of each exponent. */
    const uint8_t *luts;
    uint64_t luts_bytes;
    const uint8_t *encoded; /* the exponents' codes, MSB first, back to back */
    uint64_t encoded_bytes;
    const uint8_t *sign_mantissa; /* one byte per weight: sign << 7 | 7-bit mantissa */
    uint64_t n_elements;
    /* uint32 little-endian per thread block: the index of the first weight whose code
     * starts in that block; then the weight count. */
    const uint8_t *output_positions;
    uint64_t positions_bytes;
    /* 5 bits per thread, MSB first: where its first code starts in its 8 bytes. */
    const uint8_t *gaps;
    uint64_t gaps_bytes;
    uint32_t threads_per_block;
} df11i_dfl_stream;

/* Decodes s into out[0, s->n_elements) (BF16), on up to n_threads threads (0 = all
 * cores), one thread block of theirs per item. Any inconsistency fails with
 * DF11_ERR_CORRUPT and a detail naming the block or weight; `out` is then undefined. */
df11_status df11i_dfl_decode(const df11i_dfl_stream *s, int n_threads, uint16_t *out);

typedef struct df11i_dfl_model {
    /* The original model's tensors: those stored as they are (data into the mapped files)
     * and the compressed weights (BF16, data NULL: df11i_dfl_tensor_data gives them),
     * sorted by name. */
    size_t n_tensors;
    df11_tensor_source *tensors;
    char *config_json; /* config.json without "dfloat11_config", NUL-terminated */
    size_t config_len;
    /* private */
    df11i_st_model *st;
    struct df11i_dfl_module *modules;
    size_t n_modules;
    size_t *tensor_module;   /* per tensor: its module, SIZE_MAX for a stored one */
    uint64_t *tensor_offset; /* per tensor: its first weight in the module's output */
    uint16_t *decoded;       /* the last module decoded */
    size_t decoded_module;
    int n_threads;
} df11i_dfl_model;

/* Whether `path` is a folder whose config.json holds a "dfloat11_config" object. Any
 * problem reading it (no such folder, no config, not JSON) answers false: the caller's
 * ordinary reader reports it. */
bool df11i_dfl_is_folder(const char *path);

/* Opens a DFloat11 folder: every *.safetensors file in it (as their loader reads them;
 * an index file is ignored) and config.json. Shapes of compressed weights are not in the
 * folder (their loader takes them from the model class): they come from config.json for
 * the Llama-family weight names, and a compressed weight of another name fails with
 * DF11_ERR_UNSUPPORTED. On success *out is the caller's, freed with df11i_dfl_close. */
df11_status df11i_dfl_open(const char *dir, int n_threads, df11i_dfl_model **out);

/* Tensor `index`'s bytes in *data: a stored tensor's in the file, a compressed one's
 * decoded (its whole module is decoded when first asked for, on n_threads threads). Valid
 * until the next call or df11i_dfl_close. The signature of df11i_st_data_fn. */
df11_status df11i_dfl_tensor_data(void *model, size_t index, uint64_t nbytes, const void **data);

void df11i_dfl_close(df11i_dfl_model *model);

#endif
