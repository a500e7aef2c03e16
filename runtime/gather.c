/* The row gather, df11_rows_gather: out[i] = W[ids[i]] from a weight resolved by
 * df11_weight_get. Argument checks, every id checked on the host before anything is
 * enqueued, then one rows_decode of the backend (gather_host.c, gather_cuda.c), which
 * decodes only the strips or chunks holding the rows. Nothing goes through the arena, so
 * a gather never evicts a block, never waits for a slot and works under every non-layer
 * policy; it names no device API. */
#include <stdint.h>

#include "common/error.h"
#include "loader/container.h"
#include "runtime/internal.h"

df11_status df11_rows_gather(df11_model *m, const df11_weight *w, const uint32_t *ids, uint32_t n,
                             void *out, df11_dtype out_dtype, df11_stream stream)
{
    if (!m || !w || !ids || !out)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_rows_gather: NULL %s",
                          !m     ? "model"
                          : !w   ? "weight"
                          : !ids ? "ids"
                                 : "out");
    if (n == 0) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_rows_gather: n is 0");
    df11_status s = df11i_rt_weight_check(m, w, out_dtype, stream, "df11_rows_gather");
    if (s != DF11_OK) return s;
    if (w->tensor >= m->n_tensors)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "df11_rows_gather: '%s' is a stacked weight: gather from its parts",
                          w->name);
    const uint64_t esize = df11_dtype_size(out_dtype);
    if ((uint64_t)n * w->cols > SIZE_MAX / esize)
        return df11i_fail(DF11_ERR_OVERFLOW, "df11_rows_gather: %u x %u overflows", n, w->cols);
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] >= w->rows)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11_rows_gather: ids[%u] = %u, but '%s' has %u rows", i, ids[i],
                              w->name, w->rows);
    const rt_tensor *rt = &m->tensors[w->tensor];
    const df11_tensor_info *ti = m->file ? df11_file_tensor(m->file, w->tensor) : NULL;
    const int raw = !ti || ti->codec == DF11_CODEC_RAW;
    if (!raw && !df11i_rt_weight_direct(m, w->tensor) && m->be->iface->tensor_plan_build &&
        !rt->mm_plan_host)
        return df11i_fail(DF11_ERR_STATE, "tensor '%s': weight not resolved by df11_weight_get",
                          rt->view.name);
    df11i_backend_group g = df11i_rt_backend_group(m, w->tensor);
    if ((s = df11i_rt_payload_get(m, g.group, stream, &g.payload)) != DF11_OK) return s;
    const void *direct = df11i_rt_weight_direct(m, w->tensor);
    if (!direct && raw && g.payload) /* raw, in a streamed group's staging buffer */
        direct =
            (const char *)g.payload + df11i_file_tensor_layout(m->file, w->tensor)->data_offset;
    df11i_rows_args a = { .g = &g,
                          .tensor = w->tensor,
                          .w = direct,
                          .rows = w->rows,
                          .cols = w->cols,
                          .ids = ids,
                          .n = n,
                          .out = out,
                          .out_dtype = out_dtype,
                          .stream = stream };
    s = m->be->iface->rows_decode(m->be, &a);
    df11_status s2 = df11i_rt_payload_put(m, g.group, stream);
    if (s != DF11_OK) return df11i_fail_context(s, "df11_rows_gather of '%s'", rt->view.name);
    return s2;
}
