/* The .df11 writer for sources that make their tensors' bytes on demand (a DFloat11 folder,
 * loader/dfloat11.h, decodes each module only while its group is being written). */
#ifndef DF11_WRITER_CONTAINER_WRITE_H
#define DF11_WRITER_CONTAINER_WRITE_H

#include "df11/compress.h"
#include "writer/safetensors_write.h"

/* df11_compress_tensors, where a tensor whose `data` is NULL gets its bytes from
 * data(data_ctx, i, nbytes, &p) (i: its index in `tensors`), called on the calling thread
 * just before the tensor is encoded; p must stay valid until the next call. A failure is
 * returned as it is and no file is written. */
df11_status df11i_compress_tensors_stream(const char *out_path, const df11_tensor_source *tensors,
                                          size_t n, const char *metadata, size_t metadata_len,
                                          const df11_compress_options *options,
                                          df11_compress_summary *summary, df11i_st_data_fn data,
                                          void *data_ctx);

#endif
