/* The row gather (df11_rows_gather) and the DF11_NONLAYER_COMPRESSED policy on the host
 * backend: rows of Huffman, fixed-code and resident (BF16 model, RESIDENT policy) weights
 * of odd shapes, bit-identical to the source as BF16 and F32, under every policy; every
 * argument check, with nothing written on failure; the COMPRESSED policy's memory (slots
 * sized by the layer blocks, stats adding up), its tensor_get rules, and the matmul op's
 * row slices (lm_head larger than the op's scratch, and a scratch capped to a row) against
 * the BF16 model bit for bit. tests/test_gpu_gather.c includes this file with RT_TEST_CUDA
 * defined: the same on the CUDA backend (the products there within the fp32 bound of an
 * fp64 reference, cuBLAS choosing its own order per slice). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "df11/compress.h"
#include "df11/runtime.h"
#include "runtime/internal.h"
#include "tests/backend_under_test.h"
#include "tests/testutil.h"
#include "writer/safetensors_write.h"

/* K % 64 != 0 (a short last step), rows % 16 != 0 (a short last strip); with
 * lane_symbols 64 a Huffman chunk is 2048 weights, so rows straddle chunks; "odd" has
 * K % 8 != 0, so rows start inside a decoder's group of 8. */
#define K 200
static const struct {
    const char *name;
    uint32_t rows, cols; /* cols 0: 1-D */
} SHAPES[] = {
    { "model.embed_tokens.weight", 153, K },
    { "model.layers.0.self_attn.q_proj.weight", 24, K },
    { "model.layers.0.input_layernorm.weight", K, 0 },
    { "model.layers.0.mlp.odd.weight", 33, 13 },
    { "model.layers.1.self_attn.q_proj.weight", 24, K },
    { "model.layers.1.input_layernorm.weight", K, 0 },
    { "model.norm.weight", K, 0 },
    { "lm_head.weight", 177, K },
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])
#define EMBED 0
#define ODD 3
#define LM_HEAD (N_SHAPES - 1)

enum { HUFFMAN, FIXED, BF16, N_KINDS };
static const char *KIND_NAME[N_KINDS] = { "huffman", "fixed", "bf16" };

static struct {
    df11_tensor_source t[N_SHAPES];
    uint64_t seed;
    char path[N_KINDS][512];
} g;

static void make_models(void)
{
    if (g.path[0][0]) return;
    g.seed = df11_test_seed();
    uint64_t rng = g.seed ^ 0x6761;
    for (size_t i = 0; i < N_SHAPES; i++) {
        df11_tensor_source *s = &g.t[i];
        const uint64_t cols = SHAPES[i].cols ? SHAPES[i].cols : SHAPES[i].rows;
        const uint64_t n = SHAPES[i].cols ? (uint64_t)SHAPES[i].rows * cols : cols;
        uint16_t *w = malloc(n * 2);
        ck_assert_ptr_nonnull(w);
        df11_test_fill_weights(w, n, cols, &rng);
        *s = (df11_tensor_source){ .name = SHAPES[i].name,
                                   .dtype = DF11_DTYPE_BF16,
                                   .ndim = SHAPES[i].cols ? 2 : 1,
                                   .shape = { SHAPES[i].rows, SHAPES[i].cols },
                                   .data = w };
    }
    for (int k = 0; k < N_KINDS; k++)
        snprintf(g.path[k], sizeof g.path[k], "%s/gather-%s.%s", df11_test_tmpdir(), KIND_NAME[k],
                 k == BF16 ? "safetensors" : "df11");
    for (int k = HUFFMAN; k <= FIXED; k++) {
        df11_compress_options co = { .lane_symbols = 64,
                                     .codec = k == FIXED ? df11_test_fixed_codec() : 0 };
        df11_status s = df11_compress_tensors(g.path[k], g.t, N_SHAPES, "{}", 2, &co, NULL);
        ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    }
    ck_assert_int_eq(df11i_st_write(g.path[BF16], g.t, N_SHAPES, NULL), DF11_OK);
}

static df11_model *open_kind(int kind, df11_nonlayer_policy pol)
{
    make_models();
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = RT_BACKEND;
    o.n_threads = 2;
    o.nonlayer = pol;
    df11_model *m = NULL;
    df11_status s = kind == BF16 ? df11_model_open_bf16(g.path[kind], &o, &m)
                                 : df11_model_open(g.path[kind], &o, &m);
    ck_assert_msg(s == DF11_OK, "open %s: %s %s", KIND_NAME[kind], df11_strerror(s),
                  df11_last_error_detail());
    return m;
}

/* Gathers ids of tensor `t` as `dt` and checks every row against the source, bit for bit. */
static void gather_check(df11_model *m, size_t t, const uint32_t *ids, uint32_t n, df11_dtype dt,
                         const char *what)
{
    df11_weight w;
    ck_assert_int_eq(df11_weight_get(m, SHAPES[t].name, &w), DF11_OK);
    const size_t es = dt == DF11_DTYPE_F32 ? 4 : 2, cols = SHAPES[t].cols;
    void *dout = dev_alloc(n * cols * es), *out = malloc(n * cols * es);
    df11_status s = df11_rows_gather(m, &w, ids, n, dout, dt, NULL);
    ck_assert_msg(s == DF11_OK, "%s: gather %s: %s %s", what, SHAPES[t].name, df11_strerror(s),
                  df11_last_error_detail());
    read_back(out, dout, n * cols * es);
    const uint16_t *src = g.t[t].data;
    for (uint32_t i = 0; i < n; i++) {
        const uint16_t *row = src + (size_t)ids[i] * cols;
        if (dt == DF11_DTYPE_BF16) {
            ck_assert_msg(!memcmp((uint16_t *)out + i * cols, row, cols * 2),
                          "%s: %s row %u (ids[%u]) differs (seed %#llx)", what, SHAPES[t].name,
                          ids[i], i, (unsigned long long)g.seed);
            continue;
        }
        for (size_t c = 0; c < cols; c++) {
            const float want = df11_test_bf16_f32(row[c]);
            ck_assert_msg(!memcmp((float *)out + i * cols + c, &want, 4),
                          "%s: %s row %u col %zu as F32 differs (seed %#llx)", what, SHAPES[t].name,
                          ids[i], c, (unsigned long long)g.seed);
        }
    }
    free(out);
    dev_free(dout);
}

/* First and last rows, repeats, descending, and a long random list (more ids than a CUDA
 * launch carries). */
static uint32_t *make_ids(uint32_t rows, uint32_t *n, uint64_t *rng)
{
    const uint32_t fixed[] = { 0, rows - 1, rows / 2, rows / 2, 0, rows - 1, 1, rows - 2 };
    const uint32_t nf = sizeof fixed / sizeof fixed[0];
    *n = nf + 2000;
    uint32_t *ids = malloc(*n * sizeof *ids);
    memcpy(ids, fixed, sizeof fixed);
    for (uint32_t i = nf; i < *n; i++) ids[i] = (uint32_t)(df11_test_rand(rng) % rows);
    return ids;
}

START_TEST(test_gather_bitexact)
{
    const df11_nonlayer_policy pols[] = { DF11_NONLAYER_RESIDENT, DF11_NONLAYER_ARENA,
                                          DF11_NONLAYER_COMPRESSED };
    uint64_t rng = df11_test_seed() ^ 0x1d5;
    for (int k = 0; k < N_KINDS; k++)
        for (size_t p = 0; p < (k == BF16 ? 1 : 3); p++) {
            df11_model *m = open_kind(k, pols[p]);
            char what[64];
            snprintf(what, sizeof what, "%s, policy %d", KIND_NAME[k], (int)pols[p]);
            for (size_t t = 0; t < N_SHAPES; t++) {
                if (!SHAPES[t].cols) continue;
                uint32_t n;
                uint32_t *ids = make_ids(SHAPES[t].rows, &n, &rng);
                gather_check(m, t, ids, n, DF11_DTYPE_BF16, what);
                gather_check(m, t, ids + 1, 7, DF11_DTYPE_F32, what);
                gather_check(m, t, ids + 2, 1, DF11_DTYPE_BF16, what); /* a lone id */
                free(ids);
            }
            /* a layer weight is gathered with its block held by the engine too */
            df11_block_view bv;
            ck_assert_int_eq(df11_block_acquire(m, 0, NULL, &bv), DF11_OK);
            const uint32_t one[] = { 32, 0, 5 };
            gather_check(m, ODD, one, 3, DF11_DTYPE_F32, what);
            ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
            df11_model_close(m);
        }
}
END_TEST

START_TEST(test_gather_errors)
{
    df11_model *m = open_kind(HUFFMAN, DF11_NONLAYER_COMPRESSED);
    df11_model *other = open_kind(HUFFMAN, DF11_NONLAYER_COMPRESSED);
    df11_weight w, wo;
    ck_assert_int_eq(df11_weight_get(m, SHAPES[EMBED].name, &w), DF11_OK);
    ck_assert_int_eq(df11_weight_get(other, SHAPES[EMBED].name, &wo), DF11_OK);
    const uint32_t rows = SHAPES[EMBED].rows;
    uint32_t ids[4] = { 0, 1, 2, 3 };
    const size_t bytes = 4 * K * 4;
    void *dout = dev_alloc(bytes), *out = malloc(bytes), *marked = malloc(bytes);
    memset(marked, 0xa5, bytes);
    dev_upload(dout, marked, bytes);
#define EXPECT(call, want)                                                                         \
    do {                                                                                           \
        ck_assert_int_eq((call), (want));                                                          \
        ck_assert_ptr_nonnull(df11_last_error_detail());                                           \
    } while (0)
    EXPECT(df11_rows_gather(NULL, &w, ids, 4, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, NULL, ids, 4, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, &w, NULL, 4, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, &w, ids, 4, NULL, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, &w, ids, 0, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, &w, ids, 4, dout, DF11_DTYPE_F16, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, &w, ids, 4, dout, DF11_DTYPE_INVALID, NULL), DF11_ERR_INVALID_ARG);
    EXPECT(df11_rows_gather(m, &wo, ids, 4, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    df11_weight bad = w;
    bad.cols++;
    EXPECT(df11_rows_gather(m, &bad, ids, 4, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    df11_weight stacked; /* rows of a stack come from its parts */
    ck_assert_int_eq(df11_weight_stack(m, 1, &w, &stacked), DF11_OK);
    EXPECT(df11_rows_gather(m, &stacked, ids, 4, dout, DF11_DTYPE_BF16, NULL),
           DF11_ERR_INVALID_ARG);
    bad = w;
    bad.tensor = 100000;
    EXPECT(df11_rows_gather(m, &bad, ids, 4, dout, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
#ifndef RT_TEST_CUDA
    int not_null;
    EXPECT(df11_rows_gather(m, &w, ids, 4, dout, DF11_DTYPE_BF16, &not_null), DF11_ERR_INVALID_ARG);
#endif
    /* a bad id anywhere: named, and nothing written for the good ids before it */
    const uint32_t bad_ids[] = { rows, UINT32_MAX };
    for (int b = 0; b < 2; b++) {
        ids[3] = bad_ids[b];
        EXPECT(df11_rows_gather(m, &w, ids, 4, dout, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
        char want[64];
        snprintf(want, sizeof want, "ids[3] = %u", bad_ids[b]);
        ck_assert_msg(strstr(df11_last_error_detail(), want), "detail: %s",
                      df11_last_error_detail());
    }
    read_back(out, dout, bytes);
    ck_assert_msg(!memcmp(out, marked, bytes), "a failed gather wrote its output");
    /* the provider forwards to it */
    df11_provider pv;
    ck_assert_int_eq(df11_model_provider(m, &pv), DF11_OK);
    ck_assert_ptr_nonnull(pv.rows_gather);
    ids[3] = rows - 1;
    ck_assert_int_eq(pv.rows_gather(pv.ctx, &w, ids, 4, dout, DF11_DTYPE_BF16, NULL), DF11_OK);
    read_back(out, dout, 4 * K * 2);
    ck_assert(!memcmp((uint16_t *)out + 3 * K, (const uint16_t *)g.t[EMBED].data + (rows - 1) * K,
                      K * 2));
#undef EXPECT
    free(out);
    free(marked);
    dev_free(dout);
    df11_model_close(other);
    df11_model_close(m);
}
END_TEST

/* COMPRESSED: every non-layer group stays compressed, the slots are sized by the largest
 * layer group, the stats add up; a non-layer group that fits a slot (the norm) is served
 * by tensor_get, the others are refused with a pointer to the ops. */
START_TEST(test_policy_compressed)
{
    for (int k = HUFFMAN; k <= FIXED; k++) {
        df11_model *ms[3] = { open_kind(k, DF11_NONLAYER_RESIDENT),
                              open_kind(k, DF11_NONLAYER_ARENA),
                              open_kind(k, DF11_NONLAYER_COMPRESSED) };
        const df11_file *f = df11_model_file(ms[2]);
        uint64_t layer_slot = 0, all_slot = 0, n_groups = df11_file_n_groups(f), n_nonlayer = 0;
        uint64_t payloads = 0, nonlayer_payloads = 0, nonlayer_decoded = 0;
        for (uint32_t i = 0; i < n_groups; i++) {
            const df11_group_info *gi = df11_file_group(f, i);
            payloads += gi->payload_size;
            if (gi->decoded_size > all_slot) all_slot = gi->decoded_size;
            if (gi->layer >= 0 && gi->decoded_size > layer_slot) layer_slot = gi->decoded_size;
            if (gi->layer < 0) {
                n_nonlayer++;
                nonlayer_decoded += gi->decoded_size;
                nonlayer_payloads += gi->payload_size;
            }
        }
        ck_assert_uint_gt(all_slot, df11i_align_up(layer_slot, 4096)); /* the test's premise */
        df11_model_stats st[3];
        for (int p = 0; p < 3; p++) {
            ck_assert_int_eq(df11_model_stats_get(ms[p], &st[p]), DF11_OK);
            /* whatever the policy, the pieces add up to no more than the pool holds */
            ck_assert_uint_le(st[p].compressed_bytes + st[p].arena_bytes + st[p].resident_bytes +
                                  st[p].metadata_bytes,
                              st[p].pool_reserved);
        }
        /* pieces are 4 KiB-aligned: each may carry up to 4 KiB of its predecessor's padding */
#define ABOUT(got, want, pieces)                                                                   \
    do {                                                                                           \
        ck_assert_uint_ge((got), (want));                                                          \
        ck_assert_uint_le((got), (want) + 4096 * (pieces));                                        \
    } while (0)
        ABOUT(st[0].resident_bytes, nonlayer_decoded, n_nonlayer);
        ABOUT(st[0].compressed_bytes, payloads - nonlayer_payloads, n_groups - n_nonlayer);
        ck_assert_uint_eq(st[1].resident_bytes, 0);
        ck_assert_uint_eq(st[1].arena_bytes, 2 * df11i_align_up(all_slot, 4096));
        ABOUT(st[1].compressed_bytes, payloads, n_groups);
        ck_assert_uint_eq(st[2].resident_bytes, 0);
        ck_assert_uint_eq(st[2].arena_bytes, 2 * df11i_align_up(layer_slot, 4096));
        ABOUT(st[2].compressed_bytes, payloads, n_groups);
#undef ABOUT
        ck_assert_uint_lt(st[2].pool_reserved, st[0].pool_reserved);
        ck_assert_uint_lt(st[2].pool_reserved, st[1].pool_reserved);

        df11_model *m = ms[2];
        df11_tensor_view v;
        ck_assert_int_eq(df11_tensor_get(m, "model.norm.weight", NULL, &v), DF11_OK);
        void *buf = malloc(v.nbytes);
        read_back(buf, v.data, v.nbytes);
        ck_assert(!memcmp(buf, g.t[LM_HEAD - 1].data, v.nbytes));
        free(buf);
        ck_assert_int_eq(df11_tensor_release(m, "model.norm.weight", NULL), DF11_OK);
        for (size_t t = 0; t < N_SHAPES; t += LM_HEAD) { /* embeddings, lm_head */
            ck_assert_int_eq(df11_tensor_get(m, SHAPES[t].name, NULL, &v), DF11_ERR_UNSUPPORTED);
            ck_assert_msg(strstr(df11_last_error_detail(), "df11_rows_gather"), "detail: %s",
                          df11_last_error_detail());
            ck_assert_int_eq(df11_tensor_release(m, SHAPES[t].name, NULL), DF11_ERR_STATE);
        }
        for (uint32_t b = 0; b < df11_model_n_blocks(m); b++) { /* blocks are served as ever */
            ck_assert_int_eq(df11_block_acquire(m, b, NULL, &(df11_block_view){ 0 }), DF11_OK);
            ck_assert_int_eq(df11_tensor_get(m, SHAPES[1].name, NULL, &v),
                             b == 0 ? DF11_OK : DF11_ERR_STATE);
            ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
        }
        for (int p = 0; p < 3; p++) df11_model_close(ms[p]);
    }
    /* an out-of-range policy is refused */
    df11_model_options o;
    df11_model_options_init(&o);
    o.nonlayer = (df11_nonlayer_policy)3;
    df11_model *m = NULL;
    ck_assert_int_eq(df11_model_open(g.path[HUFFMAN], &o, &m), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_null(m);
}
END_TEST

/* y = x·Wᵀ of tensor t through the op, read back into `y`. */
static void product(df11_model *m, size_t t, const uint16_t *x, uint32_t batch, df11_dtype yd,
                    void *y)
{
    df11_weight w;
    ck_assert_int_eq(df11_weight_get(m, SHAPES[t].name, &w), DF11_OK);
    const size_t xs = (size_t)batch * w.cols * 2,
                 ys = (size_t)batch * w.rows * (yd == DF11_DTYPE_F32 ? 4 : 2);
    void *dx = dev_alloc(xs), *dy = dev_alloc(ys);
    dev_upload(dx, x, xs);
    df11_status s = df11_matmul(m, &w, dx, batch, dy, yd, NULL);
    ck_assert_msg(s == DF11_OK, "matmul %s: %s %s", w.name, df11_strerror(s),
                  df11_last_error_detail());
    read_back(y, dy, ys);
    dev_free(dx);
    dev_free(dy);
}

#ifdef RT_TEST_CUDA
/* On the GPU each slice is its own cuBLAS call, whose summation order is cuBLAS's: y is
 * checked against an fp64 reference, within fp32 accumulation in any order (+ half a BF16
 * ulp for a BF16 y). */
static void check_y(size_t t, const uint16_t *x, uint32_t batch, df11_dtype yd, const void *y,
                    const void *y_bf16_model)
{
    (void)y_bf16_model;
    const uint16_t *w = g.t[t].data;
    const uint32_t n = SHAPES[t].rows, k = SHAPES[t].cols;
    for (uint32_t b = 0; b < batch; b++)
        for (uint32_t r = 0; r < n; r++) {
            double ref = 0, mag = 0;
            for (uint32_t i = 0; i < k; i++) {
                const double p = (double)df11_test_bf16_f32(w[(size_t)r * k + i]) *
                                 df11_test_bf16_f32(x[(size_t)b * k + i]);
                ref += p;
                mag += fabs(p);
            }
            const size_t at = (size_t)b * n + r;
            const double got = yd == DF11_DTYPE_F32 ? ((const float *)y)[at]
                                                    : df11_test_bf16_f32(((const uint16_t *)y)[at]);
            double bound = (k + 8) * ldexp(mag, -23) + 1e-30;
            if (yd == DF11_DTYPE_BF16) bound = bound * (1 + ldexp(1, -8)) + ldexp(fabs(ref), -8);
            ck_assert_msg(fabs(got - ref) <= bound,
                          "%s y[%u][%u] = %.9g, reference %.9g (seed %#llx)", SHAPES[t].name, b, r,
                          got, ref, (unsigned long long)g.seed);
        }
}
#else
/* On the host the row kernel's order is fixed: the BF16 model's y, bit for bit. */
static void check_y(size_t t, const uint16_t *x, uint32_t batch, df11_dtype yd, const void *y,
                    const void *y_bf16_model)
{
    (void)x;
    const size_t ys = (size_t)batch * SHAPES[t].rows * (yd == DF11_DTYPE_F32 ? 4 : 2);
    ck_assert_msg(!memcmp(y, y_bf16_model, ys),
                  "%s: sliced y differs from the BF16 model's "
                  "(seed %#llx)",
                  SHAPES[t].name, (unsigned long long)g.seed);
}
#endif

START_TEST(test_matmul_sliced)
{
#ifdef RT_TEST_CUDA
    /* the decode path, not the fused kernel, for fixed-code tensors at small batches */
    const uint32_t fused = df11i_cuda_matmul_fused_limit(0);
#endif
    uint64_t rng = df11_test_seed() ^ 0x511ce;
    df11_model *ref = open_kind(BF16, DF11_NONLAYER_RESIDENT);
    const size_t ts[] = { LM_HEAD, EMBED, ODD, 1 };
    for (int cap = 0; cap < 2; cap++) {
        /* COMPRESSED: no slot holds lm_head or the embeddings, so they take the decode path
         * (never the arena: stats.acquires stays), where the scratch, sized by the layer
         * tensors (cap 0) or capped to one row (cap 1: a slice per row), takes them in
         * slices; the layer tensors go through the arena as ever */
        const uint64_t prev = df11i_rt_matmul_scratch_cap(cap ? 1 : UINT64_MAX);
        for (int k = HUFFMAN; k <= FIXED; k++) {
            df11_model *m = open_kind(k, DF11_NONLAYER_COMPRESSED);
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
                for (uint32_t batch = 1; batch <= 5; batch += 4)
                    for (int yt = 0; yt < 2; yt++) {
                        const df11_dtype yd = yt ? DF11_DTYPE_F32 : DF11_DTYPE_BF16;
                        const size_t t = ts[i], ys = (size_t)batch * SHAPES[t].rows * 4;
                        uint16_t *x = df11_test_random_bf16((size_t)batch * SHAPES[t].cols, &rng);
                        void *y = malloc(ys), *y_ref = malloc(ys);
                        df11_model_stats st0, st1;
                        ck_assert_int_eq(df11_model_stats_get(m, &st0), DF11_OK);
                        product(m, t, x, batch, yd, y);
                        ck_assert_int_eq(df11_model_stats_get(m, &st1), DF11_OK);
                        if (t == LM_HEAD || t == EMBED)
                            ck_assert_uint_eq(st1.acquires, st0.acquires);
                        product(ref, t, x, batch, yd, y_ref);
                        check_y(t, x, batch, yd, y, y_ref);
                        free(x);
                        free(y);
                        free(y_ref);
                    }
            df11_model_close(m);
        }
        df11i_rt_matmul_scratch_cap(prev);
    }
    df11_model_close(ref);
#ifdef RT_TEST_CUDA
    df11i_cuda_matmul_fused_limit(fused);
#endif
}
END_TEST

int main(void)
{
    if (rt_skip_without_gpu()) return 77;
    Suite *s = suite_create("gather");
    TCase *tc = tcase_create(RT_BACKEND == DF11_BACKEND_HOST ? "host" : "cuda");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gather_bitexact);
    tcase_add_test(tc, test_gather_errors);
    tcase_add_test(tc, test_policy_compressed);
    tcase_add_test(tc, test_matmul_sliced);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
