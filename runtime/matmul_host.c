/* The host backend's matmul slots (runtime/backend.h): y = x·Wᵀ on the CPU, from decoded
 * BF16 weights or fused with the decode of either code. All run the same row kernel, so a
 * product depends only on the weights' values: not on the thread count, not on whether W
 * came compressed (df11, either code) or resident (BF16 model). Synchronous: the host
 * backend's matmul runs on the NULL stream (runtime/matmul.c refuses any other).
 *
 * Work is cut into tasks of whole rows (ROWS_ELEMS weights or one row; with the fixed
 * code, whole 16-row strips). A fused task decodes what covers its rows into a per-thread
 * buffer: the Huffman chunks, a chunk at each end possibly shared with the neighbouring
 * task and decoded by both (chunks need not align with rows); or its fixed-code strips
 * (df11i_fixed_decode_rows, which checks each strip it reads: the tensor's view is not
 * validated whole). The whole tensor is never materialised.
 *
 * Which tensors take the fused path (matmul_fused_takes): Huffman at every batch, the
 * fixed code up to DF11_FUSED_MAX_BATCH rows of x (the CUDA backend's mma.sync kernel's
 * limit; Hopper's wgmma kernel goes to 128 there); past it the
 * op decodes the block into the arena once and multiplies the decoded rows, so that
 * a prefill's many rows and the block's other tensors reuse one decode. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/fixed.h"
#include "common/error.h"
#include "common/parallel.h"
#include "common/util.h"
#include "kernels/matmul.h"
#include "loader/container.h"
#include "runtime/backend.h"

#define ROWS_ELEMS (1u << 16) /* weights per task: 128 KiB of BF16 */

static inline float bf16_to_f32(uint16_t v)
{
    const uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even; NaN stays NaN. */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x40);
    u += 0x7fffu + (u >> 16 & 1);
    return (uint16_t)(u >> 16);
}

/* Four floats as one value (GCC/Clang vector extensions): the eight running sums below
 * are two of them, kept in registers and compiled to packed multiplies and adds on any
 * target (16-byte vectors exist everywhere; 32-byte ones go through memory without AVX),
 * each lane's order unchanged. A cast between vectors of one size reinterprets the bits. */
typedef float f32x4 __attribute__((vector_size(16)));
typedef uint32_t u32x4 __attribute__((vector_size(16)));

static inline f32x4 load4(const float *p)
{
    f32x4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* x as dot_bf16 reads it: in each whole group of 8, elements 0, 2, 4, 6 then 1, 3, 5, 7
 * (the tail past the last group as it is). */
static inline uint64_t x_slot(uint64_t i, uint32_t k)
{
    const uint64_t j = i % 8;
    return i >= (uint64_t)k / 8 * 8 ? i : i - j + (j % 2 ? 4 + j / 2 : j / 2);
}

/* Σ a[i]·x[i] in fp32, a in BF16 (widened exactly), in one fixed order: eight running sums
 * (element i into sum i % 8), added pairwise at the end; the tail goes into the sums the
 * same way. 8 BF16 load as four 32-bit words (little-endian, common/util.h): a word's low
 * half, shifted up, is the even element, its high half masked the odd one, so `even` and
 * `odd` hold sums 0, 2, 4, 6 and 1, 3, 5, 7 against x in x_slot's order. Two ALU operations
 * for 8 widenings, the same on GCC and Clang: GCC compiled the widening of four halves by
 * `__builtin_convertvector` into shuffles, and the op ran 1.5x slower than the example
 * engine's plain loop at batch 1 (bench/RESULTS.md, twenty-seventh session). */
static float dot_bf16(const uint16_t *a, const float *x, uint32_t k)
{
    f32x4 even = { 0 }, odd = { 0 };
    uint32_t i = 0;
    for (; i + 8 <= k; i += 8) {
        u32x4 w;
        memcpy(&w, a + i, sizeof w);
        even += (f32x4)(w << 16) * load4(x + i);
        odd += (f32x4)(w & 0xffff0000u) * load4(x + i + 4);
    }
    for (uint32_t j = 0; i < k; i++, j++)
        if (j % 2)
            odd[j / 2] += bf16_to_f32(a[i]) * x[i];
        else
            even[j / 2] += bf16_to_f32(a[i]) * x[i];
    return ((even[0] + odd[0]) + (even[1] + odd[1])) + ((even[2] + odd[2]) + (even[3] + odd[3]));
}

typedef struct mm_job {
    const df11i_matmul_args *a;
    const float *xf;          /* x in fp32, batch × k, each row in x_slot's order */
    const uint16_t *w;        /* decoded weights (n × k), or NULL when fused */
    const df11i_coded *coded; /* the compressed tensor when fused, Huffman-coded */
    df11i_decode_table table; /* coded's, made once for the call's tasks */
    const df11i_fixed *fixed; /* or fixed-coded */
    uint64_t rows_per_task, n_tasks;
    atomic_uint_fast64_t next_task;
} mm_job;

/* Rows [r0, r1) of y from their weights `w` (row r0 first). */
static void rows_product(const mm_job *j, const uint16_t *w, uint64_t r0, uint64_t r1)
{
    const df11i_matmul_args *a = j->a;
    for (uint64_t r = r0; r < r1; r++, w += a->k) {
        for (uint32_t b = 0; b < a->batch; b++) {
            const float v = dot_bf16(w, j->xf + (uint64_t)b * a->k, a->k);
            const uint64_t at = (uint64_t)b * a->ldy + r;
            if (a->y_dtype == DF11_DTYPE_F32)
                ((float *)a->y)[at] = v;
            else
                ((uint16_t *)a->y)[at] = f32_to_bf16(v);
        }
    }
}

/* Decodes the chunks holding weights [e0, e1) into `buf`; *first: where e0 landed. The
 * chunks form a coded tensor of their own (the tables' offsets stay absolute into the
 * stream, whose two padding words are then the next chunk's first words). */
df11_status df11i_host_chunks_decode(const df11i_coded *c, const df11i_decode_table *t, uint64_t e0,
                                     uint64_t e1, uint16_t *buf, const uint16_t **first)
{
    const uint64_t ce = df11i_chunk_elems(c->lane_symbols);
    const uint64_t k0 = e0 / ce, k1 = e1 / ce + (e1 % ce != 0);
    df11i_coded sub = *c;
    sub.n_elements = (k1 * ce < c->n_elements ? k1 * ce : c->n_elements) - k0 * ce;
    sub.n_chunks = k1 - k0;
    sub.chunks = c->chunks + k0;
    sub.lanes = c->lanes + k0 * DF11_LANES;
    sub.sm = c->sm + k0 * ce;
    if (k1 < c->n_chunks) sub.stream_bytes = ((uint64_t)c->chunks[k1] + 2) * 4;
    *first = buf + (e0 - k0 * ce);
    return df11i_decode_host_with(&sub, t, buf, 1);
}

/* One thread: tasks taken in any order, each self-contained. */
static df11_status mm_worker(void *ctx, uint64_t item)
{
    mm_job *j = ctx;
    const uint32_t k = j->a->k;
    uint16_t *buf = NULL;
    if (j->coded) {
        const uint64_t ce = df11i_chunk_elems(j->coded->lane_symbols);
        buf = malloc(sizeof(uint16_t) * (j->rows_per_task * k + 2 * ce));
    } else if (j->fixed) {
        buf = malloc(sizeof(uint16_t) * j->rows_per_task * k);
    }
    if ((j->coded || j->fixed) && !buf)
        return df11i_fail(DF11_ERR_NO_MEMORY, "matmul: out of host memory");
    df11_status st = DF11_OK;
    for (;;) {
        const uint64_t task = atomic_fetch_add(&j->next_task, 1);
        if (task >= j->n_tasks) break;
        const uint64_t r0 = task * j->rows_per_task;
        const uint64_t r1 = r0 + j->rows_per_task < j->a->n ? r0 + j->rows_per_task : j->a->n;
        const uint16_t *w = j->w ? j->w + r0 * k : buf;
        if (j->coded && (st = df11i_host_chunks_decode(j->coded, &j->table, r0 * k, r1 * k, buf,
                                                       &w)) != DF11_OK)
            break;
        if (j->fixed && (st = df11i_fixed_decode_rows(j->fixed, r0, r1, buf)) != DF11_OK) break;
        rows_product(j, w, r0, r1);
    }
    free(buf);
    return st;
}

static df11_status mm_run(df11i_backend *be, const df11i_matmul_args *a, const uint16_t *w,
                          const df11i_coded *coded, const df11i_fixed *fixed)
{
    if (a->stream)
        return df11i_fail(DF11_ERR_INVALID_ARG, "host backend: matmul runs on the NULL stream");
    mm_job j = { .a = a, .w = w, .coded = coded, .fixed = fixed };
    j.rows_per_task = a->k >= ROWS_ELEMS ? 1 : ROWS_ELEMS / a->k;
    if (fixed) /* whole strips, so that no strip is decoded twice */
        j.rows_per_task = (j.rows_per_task + DF11_FIXED_STRIP_ROWS - 1) / DF11_FIXED_STRIP_ROWS *
                          DF11_FIXED_STRIP_ROWS;
    j.n_tasks = (a->n + j.rows_per_task - 1) / j.rows_per_task;
    atomic_init(&j.next_task, 0);
    float *xf = malloc(sizeof(float) * a->batch * a->k);
    if (!xf) return df11i_fail(DF11_ERR_NO_MEMORY, "matmul: out of host memory for x");
    const uint16_t *x = a->x;
    for (uint64_t b = 0; b < a->batch; b++)
        for (uint64_t i = 0; i < a->k; i++)
            xf[b * a->k + x_slot(i, a->k)] = bf16_to_f32(x[b * a->k + i]);
    j.xf = xf;
    df11_status st;
    if (coded &&
        (st = df11i_decode_table_make(&coded->code, coded->max_len, &j.table)) != DF11_OK) {
        free(xf);
        return st;
    }
    int threads = be->n_threads > 0 ? be->n_threads : df11i_cpu_count();
    const uint64_t workers = j.n_tasks < (uint64_t)threads ? j.n_tasks : (uint64_t)threads;
    st = df11i_parallel_for(workers, threads, mm_worker, &j);
    df11i_decode_table_free(&j.table);
    free(xf);
    return st;
}

df11_status df11i_host_matmul_bf16(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                   const void *w)
{
    return mm_run(be, a, w, NULL, NULL);
}

int df11i_host_matmul_fused_takes(df11i_backend *be, const df11_file *file, uint32_t tensor,
                                  uint32_t batch)
{
    const df11_tensor_info *ti = file ? df11_file_tensor(file, tensor) : NULL;
    /* batch 0 asks "at every batch?" (runtime/matmul.c sizes the decode path's scratch
     * where not): a fixed-code W is not */
    return ti && (ti->codec == DF11_CODEC_EXP_HUFFMAN ||
                  (df11i_codec_is_fixed(ti->codec) && batch >= 1 && batch <= DF11_FUSED_MAX_BATCH));
}

/* One tensor a call (matmul_fused_parts 1): runtime/matmul.c splits stacked weights. */
df11_status df11i_host_matmul_fused(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                    uint32_t n_parts, const df11i_backend_group *g,
                                    const uint32_t *tensors)
{
    if (n_parts != 1)
        return df11i_fail(DF11_ERR_STATE, "host matmul: %u parts in one call (1)", n_parts);
    const df11_tensor_info *ti = df11_file_tensor(g->file, tensors[0]);
    df11_status st;
    if (df11i_codec_is_fixed(ti->codec)) {
        df11i_fixed f;
        if ((st = df11i_file_tensor_fixed_view(g->file, tensors[0], g->payload, &f)) != DF11_OK)
            return st;
        if (f.g.rows != a->n || f.g.cols != a->k)
            return df11i_fail(DF11_ERR_CORRUPT, "tensor '%s': %llu x %llu weights for %u x %u",
                              ti->name, (unsigned long long)f.g.rows, (unsigned long long)f.g.cols,
                              a->n, a->k);
        st = mm_run(be, a, NULL, NULL, &f);
    } else {
        df11i_coded c;
        if ((st = df11i_file_tensor_coded(g->file, tensors[0], g->payload, &c)) != DF11_OK)
            return st;
        if (c.n_elements != (uint64_t)a->n * a->k)
            return df11i_fail(DF11_ERR_CORRUPT, "tensor '%s': %llu weights for %u x %u", ti->name,
                              (unsigned long long)c.n_elements, a->n, a->k);
        st = mm_run(be, a, NULL, &c, NULL);
    }
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", ti->name);
    return DF11_OK;
}

/* The decode path on the host (a weight the fused path does not take at this batch, when
 * no arena slot serves it): the tensor decoded whole, at once, after what `stream` holds
 * so far. */
df11_status df11i_host_decode_tensor(df11i_backend *be, const df11i_backend_group *g,
                                     uint32_t tensor, void *out, void *stream)
{
    df11_status st = be->iface->synchronize(be, stream);
    if (st != DF11_OK) return st;
    return df11_tensor_decode_host(g->file, tensor, g->payload, out, be->n_threads);
}
