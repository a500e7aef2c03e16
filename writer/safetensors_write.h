/* Writing safetensors (https://huggingface.co/docs/safetensors): one file from tensors in
 * memory, or from tensors a generator fills or points at one at a time. Tensors are described as for
 * the .df11 writer (df11_tensor_source, include/df11/compress.h). The reader is
 * loader/safetensors.h. */
#ifndef DF11_WRITER_SAFETENSORS_WRITE_H
#define DF11_WRITER_SAFETENSORS_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"

/* Writes tensors to a safetensors file, atomically (common/atomic_file.h: fsynced, renamed
 * over `path`, mode 0666 & ~umask). Header keys in the order given, data 8-byte aligned as
 * the format wants. `metadata_json` (may be NULL) is stored
 * as "__metadata__"; it must be a JSON object of strings (else DF11_ERR_INVALID_ARG).
 * Repeated names fail with DF11_ERR_DUPLICATE. On any failure no file is left behind. */
df11_status df11i_st_write(const char *path, const df11_tensor_source *tensors, size_t n,
                           const char *metadata_json);

/* The same for tensors made on the fly (a generator that should not hold the whole model):
 * tensors[i].data is ignored; instead fill(ctx, i, buf, nbytes) is called on the calling
 * thread, in order, for each non-empty tensor to put its bytes into `buf`, a buffer the
 * writer owns (sized for the largest tensor). A fill failure aborts the write, leaving no
 * file behind, and is returned as it is. */
typedef df11_status (*df11i_st_fill_fn)(void *ctx, size_t index, void *buf, uint64_t nbytes);
df11_status df11i_st_write_fill(const char *path, const df11_tensor_source *tensors, size_t n,
                                const char *metadata_json, df11i_st_fill_fn fill, void *ctx);

/* The same without the writer's buffer, for a source that has the bytes somewhere already
 * (df11_decompress_path: a decoded group): the header is written first, then data(ctx, i,
 * nbytes, &p) is called on the calling thread, in order, for each non-empty tensor and
 * must point p at its nbytes bytes, valid until the next call. A failure is handled as
 * fill's. */
typedef df11_status (*df11i_st_data_fn)(void *ctx, size_t index, uint64_t nbytes,
                                        const void **data);
df11_status df11i_st_write_stream(const char *path, const df11_tensor_source *tensors, size_t n,
                                  const char *metadata_json, df11i_st_data_fn data, void *ctx);

#endif
