/* The matmul op, y = x·Wᵀ on a model weight (df11_weight_get, df11_matmul): argument
 * checks, and the one place that chooses how a product is made (matmul_path). The
 * products themselves are the backend's (matmul_host.c, matmul_cuda.c, through
 * runtime/backend.h); this file names no device API.
 *
 * Paths, in order of preference:
 *   DIRECT: W lies decoded in backend memory (resident group, or stored raw in the
 *           payload): matmul_bf16 on it.
 *   FUSED:  the backend multiplies straight from the compressed tensor (host: decode-dot,
 *           but not for a layer W where the arena has a slot for every served block:
 *           host_arena_keeps_blocks; CUDA: kernels/fused_matmul.cu on fixed-code tensors
 *           at batch <= 32, kernels/fused_gemm.cu to 128 on sm_90a, and kernels/decode.cu's
 *           Huffman kernel at batch 1 on tensors of short lanes). Its workspace,
 *           where it needs one, is the tail of the op's scratch, which the decode path
 *           never touches: each fused product records an event, which a fused product on
 *           another stream waits for (none on the same stream).
 *   ARENA:  W's group is decoded into an arena slot, as df11_block_acquire does it
 *           (prefetching the next blocks), held for the product and released on the
 *           caller's stream, so that a pass over a block's tensors decodes the block once;
 *           a block the engine holds is read where it lies. A non-layer group under the
 *           ARENA policy is held the same way (df11i_rt_group_acquire).
 *   DECODE: when every slot is held, or no slot can hold W's group (a non-layer group
 *           under DF11_NONLAYER_COMPRESSED): W alone is decoded into the op's scratch on
 *           the side stream, the caller's stream waits for it (event), matmul_bf16 reads
 *           the scratch, and the next decode into the scratch waits for that (event). A W
 *           larger than the scratch goes so in slices of rows (the backend's rows_decode).
 * A stacked weight (df11_weight_stack) is one FUSED launch, or one DIRECT or ARENA product
 * where its parts lie back to back (stack_one_matrix), else a product per part.
 * A W whose block is streamed (stream.c) is read from its staging buffer by whichever path
 * runs, taken for the product's launches (df11i_rt_payload_get / put).
 * No path synchronises the host (a streamed block still being read from the file waits
 * for the read).
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "loader/container.h"
#include "runtime/internal.h"

typedef enum { PATH_DIRECT, PATH_FUSED, PATH_DECODE } mm_path;

/* A stacked weight (df11_weight_stack): its parts' tensors, rows added up. Its
 * df11_weight.tensor is n_tensors + its index in m->stacks. */
typedef struct rt_stack {
    uint32_t n;
    uint32_t part[DF11_MAX_STACK];
    uint32_t rows, cols;
    char *name; /* the parts' names joined by '+' */
} rt_stack;

static atomic_uint_fast64_t next_uid = 1;

df11_status df11i_rt_matmul_open(df11_model *m)
{
    df11i_backend *be = m->be;
    df11_status s;
    m->uid = atomic_fetch_add(&next_uid, 1);
    if (be->iface->matmul_create &&
        (s = be->iface->matmul_create(be, !m->opt.matmul_plain_launch, &m->mm)) != DF11_OK)
        return s;
    if ((s = be->iface->event_create(be, &m->mm_ready)) != DF11_OK ||
        (s = be->iface->event_create(be, &m->mm_done)) != DF11_OK ||
        (s = be->iface->event_create(be, &m->mm_ws_event)) != DF11_OK)
        return s;
    return DF11_OK;
}

void df11i_rt_matmul_close(df11_model *m)
{
    df11i_backend *be = m->be;
    if (!be) return;
    if (m->mm && be->iface->matmul_destroy) be->iface->matmul_destroy(be, m->mm);
    if (m->mm_ready) be->iface->event_destroy(be, m->mm_ready);
    if (m->mm_done) be->iface->event_destroy(be, m->mm_done);
    if (m->mm_ws_event) be->iface->event_destroy(be, m->mm_ws_event);
    m->mm = m->mm_ready = m->mm_done = m->mm_ws_event = NULL;
    if (m->tensors)
        for (uint32_t t = 0; t < m->n_tensors; t++) free(m->tensors[t].mm_plan_host);
    for (uint32_t i = 0; i < m->n_stacks; i++) free(m->stacks[i].name);
    free(m->stacks);
    m->stacks = NULL;
    m->n_stacks = 0;
}

const void *df11i_rt_weight_direct(const df11_model *m, uint32_t t)
{
    const rt_tensor *rt = &m->tensors[t];
    const rt_group *gr = &m->groups[rt->group];
    if (gr->resident) return (const char *)gr->resident + rt->offset;
    const df11_tensor_info *ti = m->file ? df11_file_tensor(m->file, t) : NULL;
    if (ti && ti->codec == DF11_CODEC_RAW && gr->payload)
        return (const char *)gr->payload + df11i_file_tensor_layout(m->file, t)->data_offset;
    return NULL;
}

/* Whether tensor t lies decoded somewhere and is multiplied there: a BF16 model's, a
 * non-layer tensor decoded at open (RESIDENT), or one stored raw (in device memory, or in
 * the staging buffer of its streamed group). From the index alone, so that the memory plan
 * can ask before anything is loaded. */
static int weight_plain(const df11_model *m, uint32_t t)
{
    if (!m->file) return 1;
    const rt_group *gr = &m->groups[m->tensors[t].group];
    if (gr->layer < 0 && m->opt.nonlayer == DF11_NONLAYER_RESIDENT) return 1;
    return df11_file_tensor(m->file, t)->codec == DF11_CODEC_RAW;
}

/* On the host, decoding is the CPU's own work: where the arena has a slot for every served
 * block, a block decoded once stays decoded, and a product through the arena multiplies its
 * rows without decoding them again, where the fused decode-dot decodes W at every product
 * (10x slower on a one-block 8B-shaped model, bench/RESULTS.md). On CUDA the fused kernel
 * reads 0.7 of the bytes a cached BF16 W would need, so it stays the better path. */
static int host_arena_keeps_blocks(const df11_model *m, uint32_t t)
{
    return m->kind == DF11_BACKEND_HOST && m->groups[m->tensors[t].group].layer >= 0 &&
           m->arena.n_slots >= m->block_end - m->block_first;
}

/* The one dispatch: how tensor t is multiplied at this batch (0: "at some batch"). */
static mm_path matmul_path(const df11_model *m, uint32_t t, uint32_t batch)
{
    const df11i_backend_iface *io = m->be->iface;
    if (weight_plain(m, t)) return PATH_DIRECT;
    if (host_arena_keeps_blocks(m, t)) return PATH_DECODE;
    if (io->matmul_fused && io->matmul_fused_takes &&
        io->matmul_fused_takes(m->be, m->file, t, batch))
        return PATH_FUSED;
    return PATH_DECODE;
}

df11i_backend_group df11i_rt_backend_group(const df11_model *m, uint32_t t)
{
    const rt_tensor *rt = &m->tensors[t];
    const rt_group *gr = &m->groups[rt->group];
    return (df11i_backend_group){ .file = m->file,
                                  .group = rt->group,
                                  .payload = gr->payload,
                                  .plan_host = rt->mm_plan_host,
                                  .plan_dev = rt->mm_plan_dev };
}

/* Tensor v as the op's rows x cols: a non-empty 2-D BF16 matrix, or a 1-D BF16 vector as
 * one row (a norm's or a bias's values, for df11_rows_gather); 0 when it is neither. */
static int matrix_shape(const df11_tensor_view *v, uint64_t *rows, uint64_t *cols)
{
    if (v->dtype != DF11_DTYPE_BF16 || (v->ndim != 1 && v->ndim != 2)) return 0;
    *rows = v->ndim == 2 ? v->shape[0] : 1;
    *cols = v->shape[v->ndim - 1];
    return *rows && *cols;
}

static int is_matmul_weight(const df11_tensor_view *v)
{
    uint64_t rows, cols;
    return matrix_shape(v, &rows, &cols);
}

static uint64_t matrix_cols(const df11_tensor_view *v) { return v->shape[v->ndim - 1]; }

/* A workspace of the fused path, zeroed once (its first half must start at 0,
 * kernels/matmul.h). */
static df11_status ws_zero(df11_model *m, void *ws, uint64_t size)
{
    df11i_backend *be = m->be;
    void *zero = calloc(1, size);
    if (!zero) return df11i_fail(DF11_ERR_NO_MEMORY, "matmul op: out of host memory");
    df11_status s = be->iface->copy_h2d(be, ws, zero, size, m->side_stream);
    if (s == DF11_OK) s = be->iface->synchronize(be, m->side_stream); /* not on the hot path */
    free(zero);
    return s;
}

static _Atomic uint64_t scratch_cap = UINT64_MAX;

uint64_t df11i_rt_matmul_scratch_cap(uint64_t bytes)
{
    return atomic_exchange(&scratch_cap, bytes);
}

/* The fused path's workspace for parts[0..n) (0 without one). */
static df11_status ws_bytes(const df11_model *m, uint32_t n, const uint32_t *parts, uint64_t *b)
{
    const df11i_backend_iface *io = m->be->iface;
    *b = 0;
    return io->matmul_fused_ws && m->file ? io->matmul_fused_ws(m->be, m->file, n, parts, b)
                                          : DF11_OK;
}

df11_status df11i_rt_matmul_scratch_plan(const df11_model *m, uint64_t slot, uint64_t *scratch,
                                         uint64_t *ws)
{
    uint64_t size = 0, row = 0, w = 0, biggest = 0;
    uint32_t big_group = UINT32_MAX;
    df11_status s;
    *scratch = *ws = 0;
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        const df11_tensor_view *v = &m->tensors[t].view;
        const rt_group *gr = &m->groups[m->tensors[t].group];
        if (!df11i_rt_group_served(m, m->tensors[t].group) || !is_matmul_weight(v) ||
            weight_plain(m, t) || m->tensors[t].group == m->hg_group) /* gathered on the CPU */
            continue;
        if (gr->decoded_size <= slot && df11i_align_up(v->nbytes, 256) > size)
            size = df11i_align_up(v->nbytes, 256);
        if (df11i_align_up(2 * matrix_cols(v), 256) > row)
            row = df11i_align_up(2 * matrix_cols(v), 256);
        uint64_t b;
        if ((s = ws_bytes(m, 1, &t, &b)) != DF11_OK) return s;
        if (b > w) w = b;
        if (gr->layer >= 0 && gr->decoded_size > biggest) {
            biggest = gr->decoded_size;
            big_group = m->tensors[t].group;
        }
    }
    if (!row) return DF11_OK; /* no weight needs the decode path */
    /* Stacks engines make (q+k+v, gate+up: the tensors of a block that share K) need a
     * larger workspace than their parts: sized on the largest block, so that
     * df11_weight_stack finds it made. */
    if (big_group != UINT32_MAX) {
        const rt_group *gr = &m->groups[big_group];
        for (uint32_t i = gr->first_tensor; i < gr->first_tensor + gr->n_tensors; i++) {
            uint32_t parts[DF11_MAX_STACK], n = 0;
            for (uint32_t t = i; t < gr->first_tensor + gr->n_tensors && n < DF11_MAX_STACK; t++)
                if (is_matmul_weight(&m->tensors[t].view) && !weight_plain(m, t) &&
                    matrix_cols(&m->tensors[t].view) == matrix_cols(&m->tensors[i].view))
                    parts[n++] = t;
            uint64_t b;
            if (n > 1 && (s = ws_bytes(m, n, parts, &b)) == DF11_OK && b > w) w = b;
        }
    }
    const uint64_t cap = atomic_load(&scratch_cap) / 256 * 256;
    if (size > cap) size = cap;
    if (size < row) size = row;
    *scratch = size;
    *ws = df11i_align_up(w, 256);
    return DF11_OK;
}

/* The scratch of the decode path: the largest compressed 2-D BF16 tensor whose group fits
 * an arena slot (under DF11_NONLAYER_COMPRESSED a layer tensor, not the embedding),
 * 256-aligned (the GPU decoder zeroes up to there), but at least a row of every tensor (a
 * larger tensor is decoded in row slices, matmul_decoded); and after it the largest
 * workspace of the fused path, stacks of the largest block's tensors included, taken from
 * the pool once (df11i_rt_matmul_scratch_plan). */
static df11_status scratch_make(df11_model *m)
{
    if (m->mm_scratch) return DF11_OK;
    uint64_t size, ws;
    df11_status s = df11i_rt_matmul_scratch_plan(m, m->arena.slot_size, &size, &ws);
    if (s != DF11_OK) return s;
    s = df11i_pool_alloc(m->pool, size + ws, RT_PAYLOAD_ALIGN, DF11_POOL_USE_ARENA, &m->mm_scratch);
    if (s != DF11_OK)
        return df11i_fail_context(s, "the matmul op's scratch (%.1f MiB)", df11i_rt_mib(size + ws));
    m->mm_scratch_size = size;
    if (ws) {
        m->mm_ws = (char *)m->mm_scratch + size;
        m->mm_ws_size = ws;
        if ((s = ws_zero(m, m->mm_ws, m->mm_ws_size)) != DF11_OK) {
            m->mm_ws = NULL; /* pool memory goes with the pool; a later weight_get retries */
            m->mm_ws_size = 0;
            m->mm_scratch = NULL;
            return s;
        }
    }
    return DF11_OK;
}

/* The tensor's own decode plan, where the backend needs one, uploaded on the side stream
 * (decodes of it run there after the upload). */
static df11_status plan_make(df11_model *m, uint32_t t)
{
    df11i_backend *be = m->be;
    rt_tensor *rt = &m->tensors[t];
    if (!be->iface->tensor_plan_build || rt->mm_plan_host) return DF11_OK;
    const rt_group *gr = &m->groups[rt->group];
    df11i_backend_group g = { .file = m->file,
                              .group = rt->group,
                              .payload = gr->payload,
                              .plan_host = gr->plan_host,
                              .plan_dev = gr->plan_dev };
    void *blob = NULL, *dev = NULL;
    size_t size = 0;
    df11_status s = be->iface->tensor_plan_build(be, &g, t, &blob, &size);
    if (s == DF11_OK) s = df11i_pool_alloc(m->pool, size, 256, DF11_POOL_USE_METADATA, &dev);
    if (s == DF11_OK) s = be->iface->copy_h2d(be, dev, blob, size, m->side_stream);
    /* df11_rows_gather reads the plan on the caller's stream: once, not on the hot path */
    if (s == DF11_OK) s = be->iface->synchronize(be, m->side_stream);
    if (s != DF11_OK) {
        free(blob); /* pool memory goes with the pool */
        return df11i_fail_context(s, "tensor '%s'", rt->view.name);
    }
    rt->mm_plan_host = blob;
    rt->mm_plan_dev = dev;
    return DF11_OK;
}

df11_status df11_weight_get(df11_model *m, const char *name, df11_weight *w)
{
    if (!m || !name || !w)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_weight_get: NULL argument");
    int64_t t = df11i_rt_tensor_index(m, name);
    if (t < 0) return df11i_fail(DF11_ERR_NOT_FOUND, "no tensor '%s'", name);
    const df11_tensor_view *v = &m->tensors[t].view;
    if (v->layer >= 0) {
        df11_status s = df11i_rt_block_check(m, (uint32_t)v->layer, name);
        if (s != DF11_OK) return s;
    }
    if (v->dtype != DF11_DTYPE_BF16)
        return df11i_fail(DF11_ERR_DTYPE, "tensor '%s' is %s, the matmul op takes BF16 weights",
                          name, df11_dtype_name(v->dtype));
    uint64_t rows, cols;
    if (!matrix_shape(v, &rows, &cols))
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "tensor '%s' is not a non-empty matrix or vector (%u dimensions)", name,
                          v->ndim);
    if (!m->be->iface->matmul_bf16 || !m->be->iface->decode_tensor)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "the %s backend has no matmul op",
                          m->be->iface->name);
    if (rows > INT32_MAX || cols > INT32_MAX)
        return df11i_fail(DF11_ERR_OVERFLOW, "tensor '%s': %llu x %llu exceeds INT32_MAX", name,
                          (unsigned long long)rows, (unsigned long long)cols);
    if (matmul_path(m, (uint32_t)t, 0) == PATH_DECODE) {
        df11_status s;
        if ((s = plan_make(m, (uint32_t)t)) != DF11_OK || (s = scratch_make(m)) != DF11_OK)
            return s;
    }
    *w = (df11_weight){ .model = m->uid,
                        .tensor = (uint32_t)t,
                        .rows = (uint32_t)rows,
                        .cols = (uint32_t)cols,
                        .name = v->name };
    return DF11_OK;
}

/* Whether w is a weight df11_weight_get or df11_weight_stack gave out for this model, as
 * it gave it (w->model checked by the caller). */
static df11_status weight_check(const df11_model *m, const df11_weight *w)
{
    if (w->tensor >= m->n_tensors + m->n_stacks)
        return df11i_fail(DF11_ERR_INVALID_ARG, "weight index %u out of range (%u)", w->tensor,
                          m->n_tensors + m->n_stacks);
    if (w->tensor >= m->n_tensors) {
        const rt_stack *st = &m->stacks[w->tensor - m->n_tensors];
        if (st->rows != w->rows || st->cols != w->cols)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "weight %u is not what df11_weight_stack returned for '%s'",
                              w->tensor, st->name);
        return DF11_OK;
    }
    const df11_tensor_view *v = &m->tensors[w->tensor].view;
    uint64_t rows, cols;
    if (!matrix_shape(v, &rows, &cols) || rows != w->rows || cols != w->cols)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "weight %u is not what df11_weight_get returned for '%s'", w->tensor,
                          v->name);
    return DF11_OK;
}

df11_status df11i_rt_weight_check(const df11_model *m, const df11_weight *w, df11_dtype out_dtype,
                                  df11_stream stream, const char *fn)
{
    if (out_dtype != DF11_DTYPE_BF16 && out_dtype != DF11_DTYPE_F32)
        return df11i_fail(DF11_ERR_INVALID_ARG, "%s: output dtype %d (BF16 or F32 only)", fn,
                          (int)out_dtype);
    if (w->model != m->uid)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "%s: the weight belongs to another model (or was never "
                          "resolved by df11_weight_get on this one)",
                          fn);
    df11_status s = weight_check(m, w);
    if (s != DF11_OK) return s;
    if (!m->be->iface->matmul_bf16 || !m->be->iface->decode_tensor || !m->be->iface->rows_decode)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "the %s backend has no matmul op",
                          m->be->iface->name);
    if (m->kind == DF11_BACKEND_HOST && stream)
        return df11i_fail(DF11_ERR_INVALID_ARG, "%s: the host backend runs on the NULL stream only",
                          fn);
    return DF11_OK;
}

df11_status df11_weight_stack(df11_model *m, uint32_t n, const df11_weight *parts,
                              df11_weight *stacked)
{
    if (!m || !parts || !stacked)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_weight_stack: NULL argument");
    if (n < 1 || n > DF11_MAX_STACK)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_weight_stack: %u parts (1..%d)", n,
                          DF11_MAX_STACK);
    rt_stack st = { .n = n, .cols = parts[0].cols };
    uint64_t rows = 0;
    size_t name_len = 0;
    for (uint32_t i = 0; i < n; i++) {
        const df11_weight *w = &parts[i];
        df11_status s;
        if (w->model != m->uid)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11_weight_stack: part %u belongs to another model", i);
        if ((s = weight_check(m, w)) != DF11_OK)
            return df11i_fail_context(s, "df11_weight_stack: part %u", i);
        if (w->tensor >= m->n_tensors)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11_weight_stack: part %u is itself stacked ('%s')", i,
                              m->stacks[w->tensor - m->n_tensors].name);
        const df11_tensor_view *v = &m->tensors[w->tensor].view; /* the index checked */
        if (v->ndim != 2)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11_weight_stack: part %u ('%s') is a vector, not a matrix", i,
                              v->name);
        if (w->cols != st.cols)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11_weight_stack: part %u ('%s') has %u columns, part 0 %u", i,
                              v->name, w->cols, st.cols);
        st.part[i] = w->tensor;
        rows += w->rows;
        name_len += strlen(m->tensors[w->tensor].view.name) + 1;
    }
    if (rows > INT32_MAX)
        return df11i_fail(DF11_ERR_OVERFLOW, "df11_weight_stack: %llu rows exceed INT32_MAX",
                          (unsigned long long)rows);
    st.rows = (uint32_t)rows;
    /* One launch over the parts may need a larger workspace than any one of them. */
    df11i_backend *be = m->be;
    uint64_t ws = 0;
    df11_status s;
    if (be->iface->matmul_fused_ws && m->file &&
        (s = be->iface->matmul_fused_ws(be, m->file, n, st.part, &ws)) != DF11_OK)
        return s;
    ws = df11i_align_up(ws, 256);
    if (ws > m->mm_ws_size) {
        void *p = NULL; /* the old workspace stays with the pool until close */
        if ((s = df11i_pool_alloc(m->pool, ws, RT_PAYLOAD_ALIGN, DF11_POOL_USE_ARENA, &p)) !=
                DF11_OK ||
            (s = ws_zero(m, p, ws)) != DF11_OK)
            return df11i_fail_context(s, "the matmul op's workspace for a stack (%.1f MiB)",
                                      df11i_rt_mib(ws));
        m->mm_ws = p;
        m->mm_ws_size = ws;
    }
    rt_stack *grown = realloc(m->stacks, sizeof *grown * (m->n_stacks + 1));
    if (!grown) return df11i_fail(DF11_ERR_NO_MEMORY, "df11_weight_stack: out of host memory");
    m->stacks = grown;
    if (!(st.name = malloc(name_len)))
        return df11i_fail(DF11_ERR_NO_MEMORY, "df11_weight_stack: out of host memory");
    st.name[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i) strcat(st.name, "+");
        strcat(st.name, m->tensors[st.part[i]].view.name);
    }
    m->stacks[m->n_stacks] = st;
    *stacked = (df11_weight){ .model = m->uid,
                              .tensor = m->n_tensors + m->n_stacks,
                              .rows = st.rows,
                              .cols = st.cols,
                              .name = st.name };
    m->n_stacks++;
    return DF11_OK;
}

/* The fused launch on the parts' groups g (payloads in backend memory). A workspace (the
 * tail of the scratch) is one buffer, used by fused products only: one on another stream
 * than the last waits for the last (mm_ws_event). */
static df11_status fused_launch(df11_model *m, uint32_t n, const df11i_backend_group *g,
                                const uint32_t *tensors, df11i_matmul_args *a)
{
    df11i_backend *be = m->be;
    if (!be->iface->matmul_fused_ws) return be->iface->matmul_fused(be, m->mm, a, n, g, tensors);
    if (!m->mm_ws)
        return df11i_fail(DF11_ERR_STATE, "tensor '%s': weight not resolved by df11_weight_get",
                          m->tensors[tensors[0]].view.name);
    a->ws = m->mm_ws;
    a->ws_size = m->mm_ws_size;
    df11_status s;
    if (m->mm_ws_used && m->mm_ws_stream != a->stream &&
        (s = be->iface->stream_wait(be, a->stream, m->mm_ws_event)) != DF11_OK)
        return s;
    s = be->iface->matmul_fused(be, m->mm, a, n, g, tensors);
    /* recorded even after a failed launch: a later product must not overtake what ran */
    df11_status s2 = be->iface->event_record(be, m->mm_ws_event, a->stream);
    if (s2 == DF11_OK) {
        m->mm_ws_used = 1;
        m->mm_ws_stream = a->stream;
    }
    return s != DF11_OK ? s : s2;
}

/* FUSED, over the n parts of a stacked weight or one tensor (n = 1), each part's payload
 * taken where it lies for the launch. */
static df11_status matmul_fused(df11_model *m, uint32_t n, const uint32_t *tensors,
                                df11i_matmul_args *a)
{
    df11i_backend_group g[DF11_MAX_STACK];
    uint32_t taken = 0;
    df11_status s = DF11_OK;
    for (; taken < n && s == DF11_OK; taken++) {
        g[taken] = df11i_rt_backend_group(m, tensors[taken]);
        s = df11i_rt_payload_get(m, g[taken].group, a->stream, &g[taken].payload);
    }
    if (s != DF11_OK) taken--; /* the failed get holds nothing */
    if (s == DF11_OK) s = fused_launch(m, n, g, tensors, a);
    for (uint32_t i = 0; i < taken; i++) {
        df11_status s2 = df11i_rt_payload_put(m, g[i].group, a->stream);
        if (s == DF11_OK) s = s2;
    }
    return s;
}

/* matmul_decoded's products, from W's group g with its payload in backend memory. */
static df11_status decode_slices(df11_model *m, uint32_t t, const df11i_backend_group *gp,
                                 const df11i_matmul_args *a)
{
    df11i_backend *be = m->be;
    const rt_tensor *rt = &m->tensors[t];
    df11i_backend_group g = *gp;
    const uint64_t ysize = df11_dtype_size(a->y_dtype);
    const int whole = rt->view.nbytes <= m->mm_scratch_size;
    const uint32_t step = whole ? a->n : (uint32_t)(m->mm_scratch_size / (2ull * a->k));
    if (!whole && step == 0)
        return df11i_fail(DF11_ERR_STATE, "tensor '%s': the matmul scratch cannot hold a row",
                          rt->view.name);
    for (uint32_t r0 = 0; r0 < a->n; r0 += step) {
        const uint32_t nr = a->n - r0 < step ? a->n - r0 : step;
        const df11i_rows_args ra = { .g = &g,
                                     .tensor = t,
                                     .rows = a->n,
                                     .cols = a->k,
                                     .first = r0,
                                     .n = nr,
                                     .out = m->mm_scratch,
                                     .out_dtype = DF11_DTYPE_BF16,
                                     .stream = m->side_stream };
        df11i_matmul_args sa = *a;
        sa.n = nr;
        sa.y = (char *)a->y + r0 * ysize;
        df11_status s;
        if (m->mm_done_recorded &&
            (s = be->iface->stream_wait(be, m->side_stream, m->mm_done)) != DF11_OK)
            return s;
        if ((s = whole ? be->iface->decode_tensor(be, &g, t, m->mm_scratch, m->side_stream)
                       : be->iface->rows_decode(be, &ra)) != DF11_OK ||
            (s = be->iface->event_record(be, m->mm_ready, m->side_stream)) != DF11_OK ||
            (s = be->iface->stream_wait(be, a->stream, m->mm_ready)) != DF11_OK)
            return s;
        s = be->iface->matmul_bf16(be, m->mm, &sa, m->mm_scratch);
        /* recorded even after a failed launch: a later decode must not overtake what ran */
        df11_status s2 = be->iface->event_record(be, m->mm_done, a->stream);
        if (s2 == DF11_OK) m->mm_done_recorded = 1;
        if (s != DF11_OK || s2 != DF11_OK) return s != DF11_OK ? s : s2;
    }
    return DF11_OK;
}

/* DECODE: the scratch is one buffer, so a decode into it waits for the last product that
 * read it (mm_done), and the product waits for the decode (mm_ready). A tensor larger than
 * the scratch (lm_head under DF11_NONLAYER_COMPRESSED) goes in slices of whole rows, each
 * decoded (rows_decode) and multiplied into its columns of y before the next. */
static df11_status matmul_decoded(df11_model *m, uint32_t t, const df11i_matmul_args *a)
{
    df11i_backend *be = m->be;
    const rt_tensor *rt = &m->tensors[t];
    if (!m->mm_scratch || (be->iface->tensor_plan_build && !rt->mm_plan_host))
        return df11i_fail(DF11_ERR_STATE, "tensor '%s': weight not resolved by df11_weight_get",
                          rt->view.name);
    df11i_backend_group g = df11i_rt_backend_group(m, t);
    df11_status s = df11i_rt_payload_get(m, g.group, m->side_stream, &g.payload);
    if (s != DF11_OK) return s;
    s = decode_slices(m, t, &g, a);
    df11_status s2 = df11i_rt_payload_put(m, g.group, m->side_stream);
    return s != DF11_OK ? s : s2;
}

/* ARENA: W's group in a slot for the product; DF11_ERR_BUSY (nothing enqueued) when every
 * slot is held, so that the caller can fall back to DECODE. */
static df11_status matmul_in_arena(df11_model *m, uint32_t t, const df11i_matmul_args *a)
{
    df11i_backend *be = m->be;
    const rt_tensor *rt = &m->tensors[t];
    const rt_group *gr = &m->groups[rt->group];
    const void *data;
    df11_status s;
    if (gr->layer < 0) {
        if ((s = df11i_rt_group_acquire(m, rt->group, a->stream, &data)) != DF11_OK) return s;
        s = be->iface->matmul_bf16(be, m->mm, a, (const char *)data + rt->offset);
        df11_status s2 = df11i_rt_group_release(m, rt->group, a->stream);
        return s != DF11_OK ? s : s2;
    }
    const uint32_t block = (uint32_t)gr->layer;
    if ((data = df11i_rt_block_data(m, block))) { /* the engine holds it: read it there */
        if ((s = df11i_rt_block_wait(m, block, a->stream)) != DF11_OK) return s;
        return be->iface->matmul_bf16(be, m->mm, a, (const char *)data + rt->offset);
    }
    if ((s = df11_block_acquire(m, block, a->stream, NULL)) != DF11_OK) return s;
    data = df11i_rt_block_data(m, block);
    s = be->iface->matmul_bf16(be, m->mm, a, (const char *)data + rt->offset);
    df11_status s2 = df11_block_release(m, block, a->stream);
    return s != DF11_OK ? s : s2;
}

/* DIRECT: W where it lies; a raw W of a streamed group in its staging buffer. */
static df11_status matmul_direct(df11_model *m, uint32_t t, const df11i_matmul_args *a)
{
    df11i_backend *be = m->be;
    const void *w = df11i_rt_weight_direct(m, t);
    if (w) return be->iface->matmul_bf16(be, m->mm, a, w);
    const uint32_t g = m->tensors[t].group;
    const void *payload;
    df11_status s = df11i_rt_payload_get(m, g, a->stream, &payload);
    if (s != DF11_OK) return s;
    s = be->iface->matmul_bf16(
        be, m->mm, a, (const char *)payload + df11i_file_tensor_layout(m->file, t)->data_offset);
    df11_status s2 = df11i_rt_payload_put(m, g, a->stream);
    return s != DF11_OK ? s : s2;
}

/* One tensor, by the path matmul_path picks (a->n its rows; y may be wider, a->ldy). */
static df11_status matmul_one(df11_model *m, uint32_t t, df11i_matmul_args *a)
{
    switch (matmul_path(m, t, a->batch)) {
    case PATH_DIRECT: return matmul_direct(m, t, a);
    case PATH_FUSED: return matmul_fused(m, 1, &t, a);
    case PATH_DECODE: break;
    }
    if (!df11i_rt_group_fits(m, m->tensors[t].group)) /* COMPRESSED: no slot holds it */
        return matmul_decoded(m, t, a);
    df11_status s = matmul_in_arena(m, t, a);
    if (s != DF11_ERR_BUSY) return s;
    df11i_clear_error();
    return matmul_decoded(m, t, a);
}

/* The distinct streamed groups of a stack's parts: a fused call holds all their payloads in
 * staging buffers at once, so it cannot take more of them than the ring has. */
static uint32_t stack_streamed_groups(const df11_model *m, const rt_stack *st)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->n; i++) {
        const uint32_t g = m->tensors[st->part[i]].group;
        int seen = !df11i_rt_streamed(m, g) || m->groups[g].layer < 0;
        for (uint32_t j = 0; j < i && !seen; j++) seen = m->tensors[st->part[j]].group == g;
        n += !seen;
    }
    return n;
}

/* Whether a stack's parts all take `path` (DIRECT or DECODE) and lie back to back where it
 * reads them, each part's rows right after the last's, so that they are one matrix there:
 * one group's decoded layout (a resident group, an arena slot), or the payload of a group
 * of raw tensors that is not resident. The BF16 runtime and df11-compress lay out a block's
 * q, k, v and gate, up so (df11i_block_order). */
static int stack_one_matrix(const df11_model *m, const rt_stack *st, mm_path path, uint32_t batch)
{
    const uint32_t g = m->tensors[st->part[0]].group;
    const int in_payload = path == PATH_DIRECT && !m->groups[g].resident;
    uint64_t end = 0;
    for (uint32_t i = 0; i < st->n; i++) {
        const uint32_t t = st->part[i];
        const rt_tensor *rt = &m->tensors[t];
        if (rt->group != g || matmul_path(m, t, batch) != path) return 0;
        const uint64_t at =
            in_payload ? df11i_file_tensor_layout(m->file, t)->data_offset : rt->offset;
        if (i && at != end) return 0;
        end = at + rt->view.nbytes;
    }
    return 1;
}

/* A stacked weight: one fused call where every part takes the fused path at this batch and
 * the backend takes that many parts at once (and the staging ring their streamed groups);
 * one product over one matrix where the parts lie back to back decoded (stack_one_matrix:
 * as BF16 engines keep q, k, v in one matrix, one GEMM where there were three); else each
 * part by its own path into its columns of y. */
static df11_status matmul_stacked(df11_model *m, const rt_stack *st, df11i_matmul_args *a)
{
    int all_fused =
        st->n <= m->be->iface->matmul_fused_parts && stack_streamed_groups(m, st) <= m->ring.n;
    for (uint32_t i = 0; i < st->n && all_fused; i++)
        all_fused = matmul_path(m, st->part[i], a->batch) == PATH_FUSED;
    if (all_fused) return matmul_fused(m, st->n, st->part, a);
    const uint32_t t0 = st->part[0];
    const mm_path path = matmul_path(m, t0, a->batch);
    if (path != PATH_FUSED && stack_one_matrix(m, st, path, a->batch)) {
        if (path == PATH_DIRECT) return matmul_direct(m, t0, a);
        if (df11i_rt_group_fits(m, m->tensors[t0].group)) { /* a slot holds the block */
            df11_status s = matmul_in_arena(m, t0, a);
            if (s != DF11_ERR_BUSY) return s;
            df11i_clear_error(); /* every slot held: part by part, each decoded alone */
        }
    }
    const size_t ysize = df11_dtype_size(a->y_dtype);
    uint64_t col = 0;
    for (uint32_t i = 0; i < st->n; i++) {
        df11i_matmul_args part = *a;
        uint64_t rows = 0, cols = 0; /* checked at df11_weight_stack */
        matrix_shape(&m->tensors[st->part[i]].view, &rows, &cols);
        part.n = (uint32_t)rows;
        part.y = (char *)a->y + col * ysize;
        df11_status s = matmul_one(m, st->part[i], &part);
        if (s != DF11_OK) return s;
        col += part.n;
    }
    return DF11_OK;
}

/* The name of a weight weight_check accepted (a stack's: its parts' joined). */
static const char *weight_name(const df11_model *m, const df11_weight *w)
{
    return w->tensor < m->n_tensors ? m->tensors[w->tensor].view.name
                                    : m->stacks[w->tensor - m->n_tensors].name;
}

/* df11_matmul and df11_matmul_checked (fn: which, for the details): every check before anything
 * is enqueued, then the product. xs, ys: the shapes the caller stated (NULL: df11_matmul's
 * bare pointers), checked against the weight once it is known to be this model's. */
static df11_status matmul_call(const char *fn, df11_model *m, const df11_weight *w, const void *x,
                               uint32_t batch, void *y, df11_dtype y_dtype, df11_stream stream,
                               const df11_matrix *xs, const df11_matrix *ys)
{
    if (!m || !w || !x || !y)
        return df11i_fail(DF11_ERR_INVALID_ARG, "%s: NULL %s", fn,
                          !m   ? "model"
                          : !w ? "weight"
                          : !x ? "x"
                               : "y");
    df11_status s = df11i_rt_weight_check(m, w, y_dtype, stream, fn);
    if (s != DF11_OK) return s;
    if (xs && xs->dtype != DF11_DTYPE_BF16)
        return df11i_fail(DF11_ERR_DTYPE, "%s: x is %s, not BF16", fn, df11_dtype_name(xs->dtype));
    if (xs && (xs->cols != w->cols || ys->cols != w->rows || xs->rows != ys->rows))
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "%s: x is %u x %u and y %u x %u, but '%s' (%u x %u) takes x of %u "
                          "columns and gives y of %u, row for row",
                          fn, xs->rows, xs->cols, ys->rows, ys->cols, weight_name(m, w), w->rows,
                          w->cols, w->cols, w->rows);
    if (batch == 0) return df11i_fail(DF11_ERR_INVALID_ARG, "%s: batch is 0", fn);
    if (w->tensor < m->n_tensors && m->tensors[w->tensor].view.ndim != 2)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "%s: '%s' is a vector, not a matrix (df11_rows_gather reads it)", fn,
                          weight_name(m, w));
    const uint64_t ysize = df11_dtype_size(y_dtype);
    if (batch > INT32_MAX || (uint64_t)batch * w->cols > SIZE_MAX / 2 / sizeof(float) ||
        (uint64_t)batch * w->rows > SIZE_MAX / ysize)
        return df11i_fail(DF11_ERR_OVERFLOW, "%s: batch %u x %u x %u overflows", fn, batch, w->rows,
                          w->cols);
    const uintptr_t x0 = (uintptr_t)x, y0 = (uintptr_t)y, x1 = x0 + (uintptr_t)batch * w->cols * 2,
                    y1 = y0 + (uintptr_t)batch * w->rows * ysize;
    if (x0 < y1 && y0 < x1)
        return df11i_fail(DF11_ERR_INVALID_ARG, "%s: x and y overlap (%u x %u and %u x %u)", fn,
                          batch, w->cols, batch, w->rows);
    df11i_matmul_args a = { .x = x,
                            .y = y,
                            .y_dtype = y_dtype,
                            .batch = batch,
                            .n = w->rows,
                            .k = w->cols,
                            .ldy = w->rows,
                            .stream = stream };
    if (w->tensor >= m->n_tensors)
        return matmul_stacked(m, &m->stacks[w->tensor - m->n_tensors], &a);
    return matmul_one(m, w->tensor, &a);
}

df11_status df11_matmul(df11_model *m, const df11_weight *w, const void *x, uint32_t batch, void *y,
                        df11_dtype y_dtype, df11_stream stream)
{
    return matmul_call("df11_matmul", m, w, x, batch, y, y_dtype, stream, NULL, NULL);
}

df11_status df11_matmul_checked(df11_model *m, const df11_weight *w, const df11_matrix *x,
                                const df11_matrix *y, df11_stream stream)
{
    if (!x || !y)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_matmul_checked: NULL %s", !x ? "x" : "y");
    /* x->data and y->data NULL: df11_matmul's "NULL x" / "NULL y" */
    return matmul_call("df11_matmul_checked", m, w, x->data, x->rows, y->data, y->dtype, stream, x,
                       y);
}
