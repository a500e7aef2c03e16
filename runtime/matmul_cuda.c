/* The CUDA backend's matmul slots (runtime/backend.h): a cuBLAS handle per model, the
 * plain product by cublasGemmEx (BF16 inputs, fp32 compute), the one-tensor decode of
 * the decode path, and the fused path: kernels/fused_matmul.cu for fixed-code tensors at
 * batch 1..32 (to 128 on sm_90a, and past it where forced: kernels/fused_gemm.cu), one
 * launch per weight or stacked weight; kernels/decode.cu's df11i_huffman_matmul for
 * Huffman tensors of short lanes at batch 1, a launch per tensor and 8 rows of x. Both
 * launch with programmatic dependent launch unless options.matmul_plain_launch. With
 * runtime/backend_cuda.c the only runtime files that include CUDA headers; compiled only
 * when DF11_HAVE_CUDA. Nothing here synchronises the host. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h" /* df11i_n_chunks */
#include "codec/fixed.h" /* df11i_codec_is_fixed */
#include "common/error.h"
#include "common/util.h"
#include "kernels/decode.h"
#include "kernels/matmul.h"
#include "runtime/backend.h"

static df11_status cublas_fail(cublasStatus_t e, const char *what)
{
    return df11i_fail(e == CUBLAS_STATUS_ALLOC_FAILED ? DF11_ERR_DEVICE_MEMORY : DF11_ERR_DEVICE,
                      "%s: %s (%d)", what, cublasGetStatusString(e), (int)e);
}

/* The backend's matmul state of a model: its cuBLAS handle and whether its fused launches
 * are programmatic (PDL). */
typedef struct cuda_mm {
    cublasHandle_t h;
    int pdl;
} cuda_mm;

/* Made at open on the thread that opened the model, whose current device the backend has
 * set (every allocation before it did); cuBLAS binds the handle to that device. */
df11_status df11i_cuda_matmul_create(df11i_backend *be, int pdl, void **mm)
{
    cuda_mm *c = calloc(1, sizeof *c);
    if (!c) return df11i_fail(DF11_ERR_NO_MEMORY, "cuda matmul: out of host memory");
    cublasStatus_t e = cublasCreate(&c->h);
    if (e != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return cublas_fail(e, "cublasCreate");
    }
    /* fp32 accumulation means fp32 all the way: no BF16 split-K partial sums */
    e = cublasSetMathMode(c->h,
                          CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    if (e != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(c->h);
        free(c);
        return cublas_fail(e, "cublasSetMathMode");
    }
    c->pdl = pdl;
    *mm = c;
    return DF11_OK;
}

void df11i_cuda_matmul_destroy(df11i_backend *be, void *mm)
{
    cuda_mm *c = mm;
    if (!c) return;
    cublasDestroy(c->h);
    free(c);
}

/* Row-major y (batch × n) = x (batch × k) · Wᵀ (W n × k) is, column-major,
 * y (n × batch) = W' (k × n)ᵀ · x' (k × batch): op(A) = Aᵀ with A = W, lda = k. */
df11_status df11i_cuda_matmul_bf16(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                   const void *w)
{
    cublasHandle_t h = mm ? ((cuda_mm *)mm)->h : NULL;
    if (!h) return df11i_fail(DF11_ERR_STATE, "cuda matmul: no cuBLAS handle");
    cublasStatus_t e = cublasSetStream(h, (cudaStream_t)a->stream);
    if (e != CUBLAS_STATUS_SUCCESS) return cublas_fail(e, "cublasSetStream");
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType_t yt = a->y_dtype == DF11_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF;
    e = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)a->n, (int)a->batch, (int)a->k, &alpha, w,
                     CUDA_R_16BF, (int)a->k, a->x, CUDA_R_16BF, (int)a->k, &beta, a->y, yt,
                     (int)a->ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (e != CUBLAS_STATUS_SUCCESS) return cublas_fail(e, "cublasGemmEx");
    return DF11_OK;
}

/* A plan of the one tensor (kernels/decode.h's layout: header | descriptor | table), cut
 * from its group's plan: its descriptor with its CTAs renumbered from 0 and its output at
 * offset 0, and for a Huffman tensor a copy of its decode table. A tensor of another codec
 * that the group plan carries (one decoded by a launch of its own, with no CTA of the
 * group kernel) keeps just its descriptor: df11i_gpu_decode decodes it as in its group. */
df11_status df11i_cuda_tensor_plan_build(df11i_backend *be, const df11i_backend_group *g,
                                         uint32_t tensor, void **blob, size_t *blob_size)
{
    const df11_group_info *gi = df11_file_group(g->file, g->group);
    const df11_tensor_info *ti = df11_file_tensor(g->file, tensor);
    const df11i_gpu_plan_header *h = g->plan_host;
    if (!gi || !ti || !h || tensor < gi->first_tensor || tensor - gi->first_tensor >= h->n_tensors)
        return df11i_fail(DF11_ERR_STATE, "cuda matmul: no plan for tensor %u", tensor);
    if (ti->codec == DF11_CODEC_RAW) /* read in place (runtime/matmul.c): never decoded */
        return df11i_fail(DF11_ERR_UNSUPPORTED, "tensor '%s' is stored raw", ti->name);
    const uint32_t i = tensor - gi->first_tensor;
    const df11i_gpu_tensor_desc *ds = (const df11i_gpu_tensor_desc *)(h + 1);
    df11i_gpu_tensor_desc d = ds[i];
    const uint32_t end_cta = i + 1 < h->n_tensors ? ds[i + 1].first_cta : h->n_ctas;
    const uint32_t units = ti->codec == DF11_CODEC_EXP_HUFFMAN ? DF11_GPU_LUT_UNITS(d.max_len) : 0;
    const size_t lut_off = df11i_align_up(sizeof *h + sizeof d, 16);
    const size_t size = lut_off + DF11_GPU_LUT_BYTES(units);
    uint8_t *p = calloc(1, size);
    if (!p) return df11i_fail(DF11_ERR_NO_MEMORY, "cuda matmul: out of host memory");
    df11i_gpu_plan_header one = *h;
    one.n_tensors = 1;
    one.n_ctas = end_cta - d.first_cta;
    one.max_lut_entries = units;
    if (units) memcpy(p + lut_off, (const uint8_t *)h + d.lut_off, DF11_GPU_LUT_BYTES(units));
    d.first_cta = 0;
    d.out_off = 0;
    d.lut_off = (uint32_t)lut_off;
    memcpy(p, &one, sizeof one);
    memcpy(p + sizeof one, &d, sizeof d);
    *blob = p;
    *blob_size = size;
    return DF11_OK;
}

df11_status df11i_cuda_decode_tensor(df11i_backend *be, const df11i_backend_group *g,
                                     uint32_t tensor, void *out, void *stream)
{
    if (!g->plan_host || !g->plan_dev)
        return df11i_fail(DF11_ERR_STATE, "cuda matmul: tensor %u has no decode plan", tensor);
    return df11i_gpu_decode(g->plan_host, g->plan_dev, g->payload, out, stream);
}

/* --- The fused path: fixed-code and Huffman tensors at batch 1..fused_max (kernels/
 * matmul.h), by default the device's df11i_fused_matmul_default_max for the tensor's
 * columns (fixed), df11i_huffman_matmul_default_max (Huffman: batch 1, short lanes). It
 * beats decode + cuBLAS at every batch it takes (it reads the compressed tensor once, where
 * the decode path reads it, writes and rereads the BF16 weights); at batch 0 ("every
 * batch") it answers no, so every tensor keeps the decode path's plan and scratch for the
 * batches above. */

static _Atomic uint32_t fused_max = DF11I_FUSED_AUTO;

uint32_t df11i_cuda_matmul_fused_limit(uint32_t max_batch)
{
    return atomic_exchange(&fused_max, max_batch);
}

/* A 2-D tensor of the file that a fused kernel reads: its codec's, 0 for none. */
static int fused_codec(const df11_file *file, uint32_t tensor)
{
    const df11_tensor_info *ti = df11_file_tensor(file, tensor);
    if (!ti || ti->ndim != 2) return 0;
    if (df11i_codec_is_fixed(ti->codec)) return ti->codec;
    if (ti->codec == DF11_CODEC_EXP_HUFFMAN &&
        df11i_huffman_matmul_takes(ti->shape[1], ti->lane_symbols))
        return DF11_CODEC_EXP_HUFFMAN;
    return 0;
}

/* One launch over every part where all have one fixed code, else one per part. */
static int fused_one_launch(const df11_file *file, uint32_t n_parts, const uint32_t *tensors)
{
    const int codec = fused_codec(file, tensors[0]);
    for (uint32_t i = 0; i < n_parts; i++)
        if (!df11i_codec_is_fixed(codec) || fused_codec(file, tensors[i]) != codec) return 0;
    return 1;
}

/* The workspace of one fused launch over these tensors (0: no fused path). */
static df11_status fused_ws_of(const df11_file *file, uint32_t n, const uint32_t *tensors,
                               uint64_t *bytes)
{
    const df11_tensor_info *t0 = df11_file_tensor(file, tensors[0]);
    const uint64_t cols = t0->shape[1];
    if (t0->codec == DF11_CODEC_EXP_HUFFMAN)
        return df11i_huffman_matmul_workspace(
            t0->shape[0], df11i_n_chunks(t0->n_elements, t0->lane_symbols), bytes);
    uint64_t rows[DF11_FUSED_MAX_PARTS];
    for (uint32_t i = 0; i < n; i++) rows[i] = df11_file_tensor(file, tensors[i])->shape[0];
    if (df11i_fused_matmul_workspace(n, rows, cols, bytes) != DF11_OK)
        *bytes = 0; /* a shape the kernel cannot index: the decode path takes it */
    return DF11_OK;
}

df11_status df11i_cuda_matmul_fused_ws(df11i_backend *be, const df11_file *file, uint32_t n_parts,
                                       const uint32_t *tensors, uint64_t *bytes)
{
    *bytes = 0;
    if (n_parts == 0 || n_parts > DF11_FUSED_MAX_PARTS || !df11i_fused_matmul_supported())
        return DF11_OK;
    const uint64_t cols = df11_file_tensor(file, tensors[0])->shape[1];
    for (uint32_t i = 0; i < n_parts; i++)
        if (!fused_codec(file, tensors[i]) || df11_file_tensor(file, tensors[i])->shape[1] != cols)
            return DF11_OK;
    if (fused_one_launch(file, n_parts, tensors)) return fused_ws_of(file, n_parts, tensors, bytes);
    for (uint32_t i = 0; i < n_parts; i++) { /* a launch each: the largest of theirs */
        uint64_t b = 0;
        df11_status s = fused_ws_of(file, 1, &tensors[i], &b);
        if (s != DF11_OK || !b) {
            *bytes = 0;
            return s;
        }
        if (b > *bytes) *bytes = b;
    }
    return DF11_OK;
}

int df11i_cuda_matmul_fused_takes(df11i_backend *be, const df11_file *file, uint32_t tensor,
                                  uint32_t batch)
{
    uint32_t lim = atomic_load_explicit(&fused_max, memory_order_relaxed);
    const int codec = fused_codec(file, tensor);
    if (lim == DF11I_FUSED_AUTO) {
        const df11_tensor_info *ti = df11_file_tensor(file, tensor);
        lim = codec == DF11_CODEC_EXP_HUFFMAN
                  ? df11i_huffman_matmul_default_max(ti->shape[1], ti->lane_symbols)
              : codec ? df11i_fused_matmul_default_max(ti->shape[1])
                      : 0;
    }
    if (batch == 0 || batch > lim) return 0;
    uint64_t bytes = 0;
    return df11i_cuda_matmul_fused_ws(be, file, 1, &tensor, &bytes) == DF11_OK && bytes > 0;
}

/* The one-tensor plan's descriptor of a part, checked against the op's K. */
static df11_status part_desc(const df11i_backend_group *g, uint32_t tensor, uint32_t k,
                             const df11i_gpu_tensor_desc **out)
{
    const df11i_gpu_plan_header *h = g->plan_host;
    if (!h || h->n_tensors != 1 || !g->payload)
        return df11i_fail(DF11_ERR_STATE, "cuda matmul: tensor %u has no plan", tensor);
    const df11i_gpu_tensor_desc *d = (const df11i_gpu_tensor_desc *)(h + 1);
    if (df11i_codec_is_fixed((int)d->codec) && d->cols != k)
        return df11i_fail(DF11_ERR_STATE, "cuda matmul: tensor %u's plan has %llu columns", tensor,
                          (unsigned long long)d->cols);
    *out = d;
    return DF11_OK;
}

/* Part i alone, into its columns of y: fixed-code or Huffman. */
static df11_status fused_part(const cuda_mm *c, const df11i_matmul_args *a,
                              const df11i_backend_group *g, uint32_t tensor, uint64_t rows,
                              uint64_t y_col)
{
    const df11i_gpu_tensor_desc *d = NULL;
    df11_status s = part_desc(g, tensor, a->k, &d);
    if (s != DF11_OK) return s;
    const int bf16 = a->y_dtype == DF11_DTYPE_BF16;
    void *y = (uint8_t *)a->y + y_col * (bf16 ? 2 : 4);
    if (d->codec == DF11_CODEC_EXP_HUFFMAN)
        return df11i_huffman_matmul(d, g->plan_dev, g->payload, rows, a->k, a->x, a->batch, y,
                                    a->ldy, bf16, a->ws, a->ws_size, NULL, c ? c->pdl : 0,
                                    a->stream);
    const df11i_fused_part part = { .d = d, .payload = g->payload };
    return df11i_fused_matmul(&part, 1, a->x, a->batch, y, a->ldy, bf16, a->ws, a->ws_size, NULL, 0,
                              c ? c->pdl : 0, a->stream);
}

/* One launch over the parts (a stacked weight's fixed-code tensors, or one tensor), or a
 * launch per part where one is Huffman-coded. */
df11_status df11i_cuda_matmul_fused(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                    uint32_t n_parts, const df11i_backend_group *g,
                                    const uint32_t *tensors)
{
    df11i_fused_part parts[DF11_FUSED_MAX_PARTS];
    uint64_t rows = 0, part_rows[DF11_FUSED_MAX_PARTS];
    if (n_parts == 0 || n_parts > DF11_FUSED_MAX_PARTS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "cuda matmul: %u parts", n_parts);
    int one = 1;
    for (uint32_t i = 0; i < n_parts; i++) {
        const df11i_gpu_tensor_desc *d = NULL;
        df11_status s = part_desc(&g[i], tensors[i], a->k, &d);
        if (s != DF11_OK) return s;
        if (!df11i_codec_is_fixed((int)d->codec) || (i && d->codec != parts[0].d->codec)) one = 0;
        part_rows[i] = df11_file_tensor(g[i].file, tensors[i])->shape[0];
        parts[i] = (df11i_fused_part){ .d = d, .payload = g[i].payload };
        rows += part_rows[i];
    }
    if (rows != a->n)
        return df11i_fail(DF11_ERR_STATE, "cuda matmul: the plans hold %llu rows, not %u",
                          (unsigned long long)rows, a->n);
    const cuda_mm *c = mm;
    if (!one) {
        uint64_t y_col = 0;
        for (uint32_t i = 0; i < n_parts; i++) {
            df11_status s = fused_part(c, a, &g[i], tensors[i], part_rows[i], y_col);
            if (s != DF11_OK) return s;
            y_col += part_rows[i];
        }
        return DF11_OK;
    }
    return df11i_fused_matmul(parts, n_parts, a->x, a->batch, a->y, a->ldy,
                              a->y_dtype == DF11_DTYPE_BF16, a->ws, a->ws_size, NULL, 0,
                              c ? c->pdl : 0, a->stream);
}
