/* C entry point of the GPU row decode (kernels/gather.cu; the per-codec kernels live with
 * their decoders in decode.cu and decode_fixed.cu): rows of a 2-D BF16 tensor, by id (the
 * row gather) or as a range (the matmul op's slices), written BF16 or F32 and decoding
 * only the chunks or strips that hold them. No CUDA types here; streams travel as void *.
 *
 * The ids travel as kernel parameters (df11i_gpu_rows, DF11_GATHER_IDS a launch), so the
 * host never waits and needs no buffer that a later call could overwrite early: a gather
 * of n ids is ceil(n / DF11_GATHER_IDS) launches on the stream.
 */
#ifndef DF11_KERNELS_GATHER_H
#define DF11_KERNELS_GATHER_H

#include <stdint.h>

#include "df11/status.h"
#include "kernels/decode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ids a launch carries: the struct below stays under the 4 KiB of kernel parameters every
 * CUDA version takes, with the kernels' other arguments. */
#define DF11_GATHER_IDS 768

/* One launch's rows: out row i (i < n) = W row id[i] (by_id), else W row first + i. */
typedef struct df11i_gpu_rows {
    uint32_t n, first, by_id, out_f32;
    uint32_t id[DF11_GATHER_IDS];
} df11i_gpu_rows;

/* Out rows (n x cols, F32 when out_f32 else BF16, row-major at `out`) = rows of W
 * (rows x cols): by id when ids (host memory, each < rows, checked by the caller) is not
 * NULL, else rows first .. first + n - 1. W is either decoded at `w` (d NULL) or the
 * tensor of the one-tensor plan `d` (host copy of its descriptor; d_plan the plan on the
 * device, for the Huffman decode table) over d_payload. Asynchronous on `stream`; returns
 * argument and launch errors only. */
df11_status df11i_gpu_rows_decode(const df11i_gpu_tensor_desc *d, const void *d_plan,
                                  const void *d_payload, const void *w, uint64_t rows,
                                  uint64_t cols, const uint32_t *ids, uint32_t first, uint32_t n,
                                  void *out, int out_f32, void *stream);

/* The codecs' launches, one df11i_gpu_rows each (decode.cu, decode_fixed.cu). */
df11_status df11i_gpu_rows_huffman(const df11i_gpu_tensor_desc *d, const void *d_plan,
                                   const void *d_payload, uint64_t cols, const df11i_gpu_rows *r,
                                   void *out, void *stream);
df11_status df11i_gpu_rows_fixed(const df11i_gpu_tensor_desc *d, const void *d_payload,
                                 const df11i_gpu_rows *r, void *out, void *stream);

#ifdef __cplusplus
}
#endif
#endif
