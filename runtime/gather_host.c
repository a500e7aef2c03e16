/* The host backend's rows_decode (runtime/backend.h): rows of a tensor, decoded on the CPU
 * by the codec that stores them, reading only what holds them. Synchronous, after what
 * `stream` holds so far (as the host decode_tensor).
 *
 * Work is cut into tasks of consecutive rows: one id each for a gather (ids may be
 * anywhere), up to ROWS_ELEMS weights for a range (the matmul op's slices). A task
 * decodes its rows into a buffer of its own and stores them, so tasks run on any thread
 * in any order:
 *   - W decoded where it lies: the rows are read in place;
 *   - Huffman: the chunks covering the rows (df11i_host_chunks_decode, as the fused
 *     decode-dot does), a chunk at each end possibly decoded by a neighbour too;
 *   - fixed code: the 16-row strips holding the rows (df11i_fixed_decode_rows), over a
 *     view that is not validated whole: the decoder checks the strips it reads. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/fixed.h"
#include "common/error.h"
#include "common/parallel.h"
#include "loader/container.h"
#include "runtime/backend.h"

#define ROWS_ELEMS (1u << 16) /* weights per range task: 128 KiB of BF16 */

typedef struct rows_job {
    const df11i_rows_args *a;
    df11_codec codec; /* of W, or RAW when a->w holds it decoded */
    df11i_coded coded;
    df11i_decode_table table; /* coded's, made once for the tasks */
    df11i_fixed fixed;
    uint64_t rows_per_task;
} rows_job;

/* Out row `i` from the BF16 row `src`. */
static void row_store(const df11i_rows_args *a, uint64_t i, const uint16_t *src)
{
    if (a->out_dtype == DF11_DTYPE_BF16) {
        memcpy((uint16_t *)a->out + i * a->cols, src, sizeof(uint16_t) * a->cols);
        return;
    }
    float *dst = (float *)a->out + i * a->cols;
    for (uint32_t c = 0; c < a->cols; c++) {
        const uint32_t u = (uint32_t)src[c] << 16;
        memcpy(&dst[c], &u, sizeof u);
    }
}

/* Task `item`: out rows [i0, i1) = W rows r0 .. r0 + (i1 - i0) - 1. */
static df11_status rows_item(void *ctx, uint64_t item)
{
    const rows_job *j = ctx;
    const df11i_rows_args *a = j->a;
    const uint64_t i0 = item * j->rows_per_task;
    const uint64_t i1 = i0 + j->rows_per_task < a->n ? i0 + j->rows_per_task : a->n;
    const uint64_t r0 = a->ids ? a->ids[i0] : a->first + i0, nr = i1 - i0, k = a->cols;
    if (j->codec == DF11_CODEC_RAW) {
        for (uint64_t i = 0; i < nr; i++)
            row_store(a, i0 + i, (const uint16_t *)a->w + (r0 + i) * k);
        return DF11_OK;
    }
    const uint64_t extra =
        j->codec == DF11_CODEC_EXP_HUFFMAN ? 2 * df11i_chunk_elems(j->coded.lane_symbols) : 0;
    uint16_t *buf = malloc(sizeof(uint16_t) * (nr * k + extra));
    if (!buf) return df11i_fail(DF11_ERR_NO_MEMORY, "rows decode: out of host memory");
    const uint16_t *w = buf;
    df11_status st =
        j->codec == DF11_CODEC_EXP_HUFFMAN
            ? df11i_host_chunks_decode(&j->coded, &j->table, r0 * k, (r0 + nr) * k, buf, &w)
            : df11i_fixed_decode_rows(&j->fixed, r0, r0 + nr, buf);
    for (uint64_t i = 0; st == DF11_OK && i < nr; i++) row_store(a, i0 + i, w + i * k);
    free(buf);
    return st;
}

df11_status df11i_host_rows_decode(df11i_backend *be, const df11i_rows_args *a)
{
    df11_status st = be->iface->synchronize(be, a->stream);
    if (st != DF11_OK) return st;
    return df11i_host_rows_decode_now(be->n_threads, a);
}

df11_status df11i_host_rows_decode_now(int n_threads, const df11i_rows_args *a)
{
    df11_status st = DF11_OK;
    rows_job j = { .a = a, .codec = DF11_CODEC_RAW };
    if (!a->w) {
        const df11_tensor_info *ti = df11_file_tensor(a->g->file, a->tensor);
        /* a vector is one row (df11_weight_get) */
        const int shaped =
            ti && (ti->ndim == 2 ? ti->shape[0] == a->rows && ti->shape[1] == a->cols
                                 : ti->ndim == 1 && a->rows == 1 && ti->shape[0] == a->cols);
        if (!shaped)
            return df11i_fail(DF11_ERR_STATE, "rows decode: tensor %u is not %u x %u", a->tensor,
                              a->rows, a->cols);
        j.codec = ti->codec;
        if (ti->codec == DF11_CODEC_EXP_HUFFMAN) {
            st = df11i_file_tensor_coded(a->g->file, a->tensor, a->g->payload, &j.coded);
            if (st == DF11_OK)
                st = df11i_decode_table_make(&j.coded.code, j.coded.max_len, &j.table);
        } else if (df11i_codec_is_fixed(ti->codec))
            st = df11i_file_tensor_fixed_view(a->g->file, a->tensor, a->g->payload, &j.fixed);
        else /* a raw tensor is read in place: the caller passes it as a->w */
            st = df11i_fail(DF11_ERR_STATE, "rows decode: tensor '%s' is stored raw", ti->name);
        if (st != DF11_OK) return st;
    }
    j.rows_per_task = a->ids || a->cols >= ROWS_ELEMS ? 1 : ROWS_ELEMS / a->cols;
    const uint64_t n_tasks = (a->n + j.rows_per_task - 1) / j.rows_per_task;
    st = df11i_parallel_for(n_tasks, n_threads, rows_item, &j);
    df11i_decode_table_free(&j.table);
    return st;
}
