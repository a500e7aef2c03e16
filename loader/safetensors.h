/* Reading safetensors (https://huggingface.co/docs/safetensors): a single file, or a
 * Hugging Face model folder (model.safetensors, or model.safetensors.index.json naming
 * shards). Input files are mmapped read-only; nothing is copied. (Writing them:
 * writer/safetensors_write.h.)
 *
 * Every header field is checked: the JSON must parse (cJSON), each tensor needs a known
 * dtype, a shape of at most DF11_MAX_DIMS non-negative dims whose product times the dtype
 * size does not overflow and equals end - begin, offsets inside the data area, tensors must
 * not overlap, names must be unique (also across shards) and hold no NUL (\u0000, which
 * would cut them short), no field of an entry may repeat, numbers must be integers below
 * 2^53. Failures return DF11_ERR_SAFETENSORS / DTYPE / OVERFLOW / RANGE / DUPLICATE /
 * TRUNCATED with a detail. Every file (model, shard, index, config.json) is opened with
 * df11i_open_regular: a FIFO or device fails with DF11_ERR_IO "not a regular file" at once.
 */
#ifndef DF11_LOADER_SAFETENSORS_H
#define DF11_LOADER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"
#include "df11/file.h"

typedef struct df11i_st_model {
    size_t n_tensors;
    df11_tensor_source *tensors; /* sorted by (file, offset); data points into the mmaps */
    char *config_json;           /* config.json of a folder, NUL-terminated, or NULL */
    size_t config_len;
    /* private */
    size_t n_maps;
    struct df11i_st_map {
        void *base;
        size_t size;
    } * maps;
    char *names; /* storage of tensor names */
} df11i_st_model;

/* `path`: a .safetensors file or a model folder. On success *out is the caller's, freed
 * with df11i_st_close; tensor names and data stay valid until then. Shards of an index are
 * read in file-name order; every tensor the index names must be in the shard it names. */
df11_status df11i_st_open(const char *path, df11i_st_model **out);
/* Unmaps the files and frees `model` itself (NULL is fine). */
void df11i_st_close(df11i_st_model *model);

/* For a reader that picks a folder's files itself (loader/dfloat11.h): maps and parses one
 * more file into `model` (a model started as calloc(1, sizeof(df11i_st_model))), and reads
 * `dir`/config.json into config_json when it exists (NULL stays when it does not). */
df11_status df11i_st_add_file(df11i_st_model *model, const char *path);
df11_status df11i_st_read_config(df11i_st_model *model, const char *dir);

/* Parses one safetensors file image already in memory (for tests and fuzzing). On success
 * appends the tensors to `model` (data pointers into `file`, which the caller keeps alive
 * and frees; names are copied). On failure `model` is left as it was. A model built only
 * by this call starts as calloc(1, sizeof(df11i_st_model)) and is freed by df11i_st_close. */
df11_status df11i_st_parse(df11i_st_model *model, const uint8_t *file, size_t file_size,
                           const char *file_label);

#endif
