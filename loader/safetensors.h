/* Reading and writing safetensors (https://huggingface.co/docs/safetensors): a single
 * file, or a Hugging Face model folder (model.safetensors, or model.safetensors.index.json
 * naming shards). Input files are mmapped read-only; nothing is copied.
 *
 * Every header field is checked: the JSON must parse (cJSON), each tensor needs a known
 * dtype, a shape of at most DF11_MAX_DIMS non-negative dims whose product times the dtype
 * size does not overflow and equals end - begin, offsets inside the data area, tensors must
 * not overlap, names must be unique (also across shards) and hold no NUL (\u0000, which
 * would cut them short), no field of an entry may repeat, numbers must be integers below
 * 2^53. Failures return DF11_ERR_SAFETENSORS / DTYPE / OVERFLOW / RANGE / DUPLICATE /
 * TRUNCATED with a detail. Every file (model, shard, index, config.json) is opened with
 * df11_open_regular: a FIFO or device fails with DF11_ERR_IO "not a regular file" at once.
 */
#ifndef DF11_LOADER_SAFETENSORS_H
#define DF11_LOADER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"
#include "df11/file.h"

typedef struct df11_st_model {
    size_t n_tensors;
    df11_tensor_source *tensors;  /* sorted by (file, offset); data points into the mmaps */
    char *config_json;            /* config.json of a folder, NUL-terminated, or NULL */
    size_t config_len;
    /* private */
    size_t n_maps;
    struct df11_st_map { void *base; size_t size; } *maps;
    char *names;                  /* storage of tensor names */
} df11_st_model;

/* `path`: a .safetensors file or a model folder. On success *out is the caller's, freed
 * with df11_st_close; tensor names and data stay valid until then. Shards of an index are
 * read in file-name order; every tensor the index names must be in the shard it names. */
df11_status df11_st_open(const char *path, df11_st_model **out);
/* Unmaps the files and frees `model` itself (NULL is fine). */
void df11_st_close(df11_st_model *model);

/* Parses one safetensors file image already in memory (for tests and fuzzing). On success
 * appends the tensors to `model` (data pointers into `file`, which the caller keeps alive
 * and frees; names are copied). On failure `model` is left as it was. A model built only
 * by this call starts as calloc(1, sizeof(df11_st_model)) and is freed by df11_st_close. */
df11_status df11_st_parse(df11_st_model *model, const uint8_t *file, size_t file_size,
                          const char *file_label);

/* Writes tensors to a safetensors file, atomically (common/atomic_file.h: fsynced, renamed
 * over `path`, mode 0666 & ~umask). Header keys in the order
 * given, data 8-byte aligned as the format wants. `metadata_json` (may be NULL) is stored
 * as "__metadata__"; it must be a JSON object of strings (else DF11_ERR_INVALID_ARG).
 * Repeated names fail with DF11_ERR_DUPLICATE. On any failure no file is left behind. */
df11_status df11_st_write(const char *path, const df11_tensor_source *tensors, size_t n,
                          const char *metadata_json);

/* The same for tensors made on the fly (a generator that should not hold the whole model):
 * tensors[i].data is ignored; instead fill(ctx, i, buf, nbytes) is called on the calling
 * thread, in order, for each non-empty tensor to put its bytes into `buf`, a buffer the
 * writer owns (sized for the largest tensor). A fill failure aborts the write, leaving no
 * file behind, and is returned as it is. */
typedef df11_status (*df11_st_fill_fn)(void *ctx, size_t index, void *buf, uint64_t nbytes);
df11_status df11_st_write_fill(const char *path, const df11_tensor_source *tensors, size_t n,
                               const char *metadata_json, df11_st_fill_fn fill, void *ctx);

#endif
