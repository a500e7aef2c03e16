/* The row gather, df11_rows_gather: out[i] = W[ids[i]] from a weight resolved by
 * df11_weight_get. Argument checks, every id checked on the host before anything is
 * enqueued, then one rows_decode of the backend (gather_host.c, gather_cuda.c), which
 * decodes only the strips or chunks holding the rows. Nothing goes through the arena, so
 * a gather never evicts a block, never waits for a slot and works under every non-layer
 * policy; it names no device API. A tensor kept in pinned host memory
 * (options.host_gather_tensor) has its rows decoded on the CPU into one of two pinned
 * buffers, which the backend copies in on the caller's stream. */
#include <stdint.h>

#include "common/error.h"
#include "common/util.h"
#include "loader/container.h"
#include "runtime/internal.h"

/* Bytes per buffer, whole pages: 16 MiB, but no more than the whole tensor as F32, and at
 * least one row of it. */
uint64_t df11i_rt_gather_buf_size(uint64_t rows, uint64_t cols)
{
    const uint64_t row = 4 * cols, all = rows * row, most = 16ull << 20;
    const uint64_t size = all < most ? all : most;
    return df11i_align_up(size > row ? size : row, 4096);
}

df11_status df11i_rt_gather_open(df11_model *m)
{
    df11_status s = DF11_OK;
    for (int i = 0; i < 2 && m->hg_group != UINT32_MAX && s == DF11_OK; i++)
        s = m->be->iface->event_create(m->be, &m->hg_copied[i]);
    return s;
}

void df11i_rt_gather_close(df11_model *m)
{
    for (int i = 0; i < 2; i++)
        if (m->hg_copied[i]) {
            /* a copy out of the buffer may still run: the pool frees it after us */
            if (m->hg_used[i]) m->be->iface->event_sync(m->be, m->hg_copied[i]);
            m->be->iface->event_destroy(m->be, m->hg_copied[i]);
            m->hg_copied[i] = NULL;
        }
}

/* Rows of the host-gathered tensor (the CUDA backend): decoded on the CPU a buffer at a
 * time, each copied in on `stream`. A buffer is refilled once the copy out of it two
 * buffers back is over, which in a decode loop (a buffer or less a call) is long done. */
static df11_status gather_on_host(df11_model *m, const df11_weight *w, const uint32_t *ids,
                                  uint32_t n, void *out, df11_dtype out_dtype, df11_stream stream)
{
    df11i_backend *be = m->be;
    const rt_group *gr = &m->groups[m->hg_group];
    const uint64_t row = (uint64_t)w->cols * df11_dtype_size(out_dtype);
    const uint32_t per = (uint32_t)(m->hg_buf_size / row);
    df11i_backend_group g = { .file = m->file, .group = m->hg_group, .payload = gr->host_payload };
    const df11_tensor_info *ti = df11_file_tensor(m->file, w->tensor);
    const void *raw = ti->codec == DF11_CODEC_RAW
                          ? (const char *)gr->host_payload +
                                df11i_file_tensor_layout(m->file, w->tensor)->data_offset
                          : NULL;
    for (uint32_t i0 = 0; i0 < n; i0 += per) {
        const uint32_t nr = n - i0 < per ? n - i0 : per;
        const int j = m->hg_next;
        m->hg_next ^= 1;
        df11_status s;
        if (m->hg_used[j] && (s = be->iface->event_sync(be, m->hg_copied[j])) != DF11_OK) return s;
        const df11i_rows_args a = { .g = &g,
                                    .tensor = w->tensor,
                                    .w = raw,
                                    .rows = w->rows,
                                    .cols = w->cols,
                                    .ids = ids + i0,
                                    .n = nr,
                                    .out = m->hg_buf[j],
                                    .out_dtype = out_dtype };
        if ((s = df11i_host_rows_decode_now(be->n_threads, &a)) != DF11_OK ||
            (s = be->iface->copy_h2d(be, (char *)out + i0 * row, m->hg_buf[j], nr * row, stream)) !=
                DF11_OK ||
            (s = be->iface->event_record(be, m->hg_copied[j], stream)) != DF11_OK)
            return s;
        m->hg_used[j] = 1;
    }
    return DF11_OK;
}

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
    if (rt->group == m->hg_group && m->kind != DF11_BACKEND_HOST) {
        s = gather_on_host(m, w, ids, n, out, out_dtype, stream);
        if (s != DF11_OK) return df11i_fail_context(s, "df11_rows_gather of '%s'", rt->view.name);
        return DF11_OK;
    }
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
