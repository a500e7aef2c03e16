/* Library-internal view of an open .df11 file: where each tensor's sections lie in its
 * group payload. The public df11_tensor_info says what a tensor is; this says where its
 * bytes are, for the decoders (codec/ on the CPU, kernels/ on the GPU). */
#ifndef DF11_LOADER_CONTAINER_H
#define DF11_LOADER_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "codec/fixed.h"
#include "df11/file.h"

/* For fixed-code tensors (EXP_FIXED, EXP_FIXED8) the fields keep the record's names
 * (docs/FORMAT.md): codebook = row bases, chunks = exception offsets (n_chunks + 1 u32,
 * n_chunks = tiles), stream = code vectors, lanes = exceptions, data = sign|mantissa bytes. */
typedef struct df11i_tensor_layout {
    uint64_t codebook_offset, chunks_offset, lanes_offset; /* payload-relative */
    uint64_t stream_offset, stream_size, data_offset;
    uint32_t n_chunks;
    uint32_t codebook_size;
    uint64_t n_exc; /* EXP_FIXED: escaped weights; EXP_FIXED8: records */
} df11i_tensor_layout;

const df11i_tensor_layout *df11i_file_tensor_layout(const df11_file *file, uint32_t tensor);

/* Opens a container image held in memory, `size` bytes at `data`, with every check that
 * df11_file_open makes (for fuzzers, and for images that never touch a disk). `label`
 * (may be NULL) stands for the path in df11_file_path and error details; it is copied.
 * The caller keeps `data` alive and unchanged until df11_file_close: the index is copied
 * at open, but df11_file_read_group copies its payloads out of `data`. */
df11_status df11i_file_open_memory(const void *data, size_t size, const char *label,
                                   df11_file **out);

/* The descriptor df11_file_open opened and keeps open until df11_file_close, or -1 for a
 * memory image. For readers that must read the very file that was indexed (the runtime's
 * io_uring loader) rather than open its path again, which may name another file by then.
 * Borrowed: the caller neither closes it nor changes its flags (O_DIRECT is per open file
 * description: reopen /proc/self/fd/N for that). */
int df11i_file_fd(const df11_file *file);

/* Group g's payload of `size` bytes whose xxh3 is `sum` (computed by the caller, e.g. as its
 * reads arrive): DF11_OK where both match the index, else df11_group_verify's status and
 * detail. g must be a group of the file. */
df11_status df11i_group_check_xxh3(const df11_file *file, uint32_t g, uint64_t size, uint64_t sum);

/* The coded view of an EXP_HUFFMAN tensor inside its group's payload (codebook parsed and
 * every table validated), ready for df11i_decode_host or a GPU plan. */
df11_status df11i_file_tensor_coded(const df11_file *file, uint32_t tensor, const void *payload,
                                    df11i_coded *coded);

/* The same for an EXP_FIXED tensor: a view whose buffers point into `payload` (borrowed:
 * valid while the payload is; never pass it to df11i_fixed_free), validated whole by
 * df11i_fixed_validate, ready for df11i_fixed_decode or a GPU plan. */
df11_status df11i_file_tensor_fixed(const df11_file *file, uint32_t tensor, const void *payload,
                                    df11i_fixed *view);
/* The same view without the whole-tensor validation (sections placed and sized by the
 * index only): for df11i_fixed_decode_rows, which checks what it reads, so that reading a
 * few rows does not cost a pass over the whole tensor's codes. */
df11_status df11i_file_tensor_fixed_view(const df11_file *file, uint32_t tensor,
                                         const void *payload, df11i_fixed *view);

#endif
