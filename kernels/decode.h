/* C entry points of the CUDA group decoder (kernels/decode.cu). No CUDA types here, so
 * runtime/ can include it from C; streams travel as void * (a cudaStream_t).
 *
 * A *plan* is everything the kernel needs besides the payload: one descriptor per tensor
 * and the tensors' decode tables, built once per group on the host (at load time) and
 * uploaded next to the compressed payload. Layout of a plan blob:
 *     df11i_gpu_plan_header | n_tensors x df11i_gpu_tensor_desc | LUTs (16-byte aligned)
 */
#ifndef DF11_KERNELS_DECODE_H
#define DF11_KERNELS_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "df11/file.h"
#include "df11/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct df11i_gpu_tensor_desc {
    uint64_t n_elements; /* EXP_HUFFMAN: weights; RAW: bytes */
    uint64_t chunks_off; /* payload-relative byte offsets of the sections */
    uint64_t lanes_off;
    uint64_t stream_off;
    uint64_t stream_size; /* bytes of the stream section (reads are clamped to it) */
    uint64_t data_off;    /* sign|mantissa bytes, or the raw bytes */
    uint64_t out_off;     /* output-relative byte offset (decoded_offset) */
    uint32_t lut_off;     /* plan-relative byte offset of the decode tables
                              (DF11_GPU_LUT_UNITS(max_len) u16 units) */
    uint32_t codec;       /* df11_codec */
    uint32_t max_len;
    uint32_t lane_symbols;
    uint32_t first_cta; /* this tensor's CTAs: [first_cta, next tensor's first_cta) */
    uint32_t n_chunks;  /* EXP_FIXED: tiles */
    /* EXP_FIXED, EXP_FIXED8 (decoded by their own launch, kernels/decode_fixed.cu; they take
     * no CTA of the group kernel): chunks_off = exception offsets, lanes_off = exceptions
     * (EXP_FIXED8: the record words), stream_off = code vectors, data_off = sign|mantissa
     * bytes, base_off = row bases, rec_hi_off = EXP_FIXED8's record nibbles; n_elements =
     * rows * cols. */
    uint64_t base_off;
    uint64_t rows, cols;
    uint64_t rec_hi_off;
} df11i_gpu_tensor_desc;

typedef struct df11i_gpu_plan_header {
    uint32_t n_tensors;
    uint32_t n_ctas;          /* grid size of one decode launch */
    uint32_t max_lut_entries; /* largest DF11_GPU_LUT_UNITS: shared memory per CTA */
    uint32_t warps_per_cta;   /* CTA = 32 * warps_per_cta threads, one chunk per warp */
} df11i_gpu_plan_header;

/* Bytes of shared memory (and of the plan) that a table of `entries` u16 entries takes. */
#define DF11_GPU_LUT_BYTES(entries) (((size_t)(entries)*2 + 15) / 16 * 16)
/* A tensor's decode table: one u16 entry per L-bit window (DF11_GPU_LUT_UNITS(L) units). */
#define DF11_GPU_LUT_UNITS(max_len) (1u << (max_len))
/* A raw tensor is copied by one CTA per this many bytes. */
#define DF11_RAW_CTA_BYTES (64u * 1024u)

/* Bytes of the plan blob df11i_gpu_plan_build makes for `group`, from the file's index
 * alone (no payload, no device): computed by the code that lays the blob out, so that a
 * caller reserving memory before the plans exist (the runtime's memory-limit check)
 * cannot drift from it. */
df11_status df11i_gpu_plan_size(const df11_file *file, uint32_t group, size_t *bytes);

/* Builds the plan of `group` from its payload in host memory (already verified).
 * *blob is malloc'd; free() it after uploading. *blob_size equals df11i_gpu_plan_size. */
df11_status df11i_gpu_plan_build(const df11_file *file, uint32_t group, const void *payload,
                                 void **blob, size_t *blob_size);

/* Warps a CTA of the lean decoders (df11i_gpu_decode_lean): few, so that a CTA fits beside
 * a GEMM's CTA on an SM (docs/RUNTIME.md, "Co-resident decode"). */
#define DF11_GPU_LEAN_WARPS 2

/* Launches the fixed-code decoder (kernels/decode_fixed.cu) for the EXP_FIXED tensors among
 * the n descriptors of a plan (others are skipped), up to 16 tensors a launch: writes each
 * one's rows x cols BF16 values at out_off and zeros up to the next 256-byte boundary.
 * lean_ctas 0: the plain decoder, a warp a tile; else the lean one, a persistent grid of at
 * most lean_ctas CTAs of DF11_GPU_LEAN_WARPS warps walking the same tiles (same bytes).
 * The plan builder validated the tensors whole (df11i_fixed_validate); the kernel still
 * never reads an exception outside its tile's list, and ORs 1 into *d_error (if not NULL)
 * where a tile's codes and exception offsets disagree. Asynchronous; returns launch errors
 * only (and DF11_ERR_CORRUPT for a descriptor whose tile count is not its shape's). */
df11_status df11i_gpu_decode_fixed(const df11i_gpu_tensor_desc *descs, uint32_t n,
                                   const void *d_payload, void *d_out, uint32_t lean_ctas,
                                   uint32_t *d_error, void *stream);

/* Decodes a group on `stream`: d_plan/d_payload/d_out are device pointers; `plan` is the
 * host copy of the same blob (for the launch geometry). Asynchronous; returns launch
 * errors only. The kernel writes all decoded_size bytes of d_out: every tensor, and zeros
 * in the padding up to each tensor's 256-byte-aligned end.
 * d_payload must be readable up to align_up(payload_size, 16) bytes (the lane streams
 * are read 16 bytes at a time); cudaMalloc'd buffers of that size qualify. */
df11_status df11i_gpu_decode(const void *plan, const void *d_plan, const void *d_payload,
                             void *d_out, void *stream);
/* (EXP_FIXED tensors of the group are decoded by df11i_gpu_decode_fixed on the same
 * stream, before the group kernel: they write disjoint bytes.)
 * The same, and ORs 1 into the device word *d_error (if not NULL) when a lane stream does
 * not end exactly at its recorded length or holds a bit pattern no code starts with (the
 * CPU decoder's DF11_ERR_CORRUPT cases). The output is then unspecified, but the kernel
 * never reads or writes outside the payload, plan and output. */
df11_status df11i_gpu_decode_checked(const void *plan, const void *d_plan, const void *d_payload,
                                     void *d_out, uint32_t *d_error, void *stream);

/* The lean decode of a group: the same bytes and error flag as df11i_gpu_decode_checked,
 * from persistent launches of at most `ctas` CTAs (0 = one per SM of the current device) of
 * DF11_GPU_LEAN_WARPS warps, few registers and little shared memory, each walking the
 * plain launches' work items (fixed-code tiles; Huffman chunks and raw slices) strided by
 * the grid. Meant to run beside an engine's GEMMs on the same SMs (docs/RUNTIME.md,
 * "Co-resident decode"). Asynchronous; returns launch errors only. */
df11_status df11i_gpu_decode_lean(const void *plan, const void *d_plan, const void *d_payload,
                                  void *d_out, uint32_t ctas, uint32_t *d_error, void *stream);

/* SMs of the current device; 0 when it cannot be known. A host-side query, no sync. */
int df11i_gpu_sm_count(void);

/* CTAs of 32 * `warps` threads that one SM of the current device holds at once, for a
 * group whose largest decode tables take `lut_entries` u16 units (DF11_GPU_LUT_UNITS);
 * *sms receives the device's SM count. 0 when it cannot be known (no device). The plan
 * builder sizes CTAs with it. */
int df11i_gpu_ctas_per_sm(uint32_t warps, uint32_t lut_entries, int *sms);

#ifdef __cplusplus
}
#endif
#endif
