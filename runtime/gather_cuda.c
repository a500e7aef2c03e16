/* The CUDA backend's rows_decode (runtime/backend.h) over kernels/gather.h: W decoded where
 * it lies is copied row by row; a compressed W is read through its one-tensor plan (made
 * by df11_weight_get, runtime/matmul.c), whose descriptor the launches take by value and
 * whose decode table they read on the device. Includes no CUDA header; compiled only when
 * DF11_HAVE_CUDA. Nothing here synchronises the host. */
#include "common/error.h"
#include "kernels/decode.h"
#include "kernels/gather.h"
#include "runtime/backend.h"

df11_status df11i_cuda_rows_decode(df11i_backend *be, const df11i_rows_args *a)
{
    (void)be;
    const int f32 = a->out_dtype == DF11_DTYPE_F32;
    if (a->w)
        return df11i_gpu_rows_decode(NULL, NULL, NULL, a->w, a->rows, a->cols, a->ids, a->first,
                                     a->n, a->out, f32, a->stream);
    const df11i_gpu_plan_header *h = a->g->plan_host;
    if (!h || h->n_tensors != 1 || !a->g->plan_dev || !a->g->payload)
        return df11i_fail(DF11_ERR_STATE, "cuda rows decode: tensor %u has no plan", a->tensor);
    const df11i_gpu_tensor_desc *d = (const df11i_gpu_tensor_desc *)(h + 1);
    if (d->n_elements != (uint64_t)a->rows * a->cols)
        return df11i_fail(DF11_ERR_STATE, "cuda rows decode: tensor %u's plan has %llu weights",
                          a->tensor, (unsigned long long)d->n_elements);
    return df11i_gpu_rows_decode(d, a->g->plan_dev, a->g->payload, NULL, a->rows, a->cols, a->ids,
                                 a->first, a->n, a->out, f32, a->stream);
}
