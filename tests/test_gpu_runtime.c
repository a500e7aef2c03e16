/* The runtime scenarios of tests/test_runtime.c on the CUDA backend (exits 77 without a
 * GPU). Tensor contents are read back with cudaMemcpy after the legacy default stream
 * (the NULL stream passed to acquire) has waited on the decode.
 *
 * Appended below: the fused matmul path (kernels/fused_matmul.cu, kernels/fused_gemm.cu,
 * and kernels/decode.cu's Huffman kernel) through df11_matmul, against an fp64 reference
 * and against the decode + cuBLAS path. */
#define RT_TEST_CUDA 1
#define RT_TEST_EXTRA fused_tests
#include "tests/test_runtime.c"

#include "kernels/fused_gemm.h"
#include "kernels/matmul.h"
#include "runtime/backend.h"
#include "runtime/internal.h"

/* Shapes for the fused kernel: rows not a multiple of 16, K not a multiple of 64 or 256
 * (a short last step and last tile), K % 8 != 0 (x read element by element), strips cut
 * between CTAs (split-K) and more units than CTAs, and a tensor of random exponents whose
 * exception lists overflow the kernel's shared-memory stage. */
static const mm_shape FU_SHAPES[] = {
    { "model.layers.0.mlp.a.weight", 37, 51 },     { "model.layers.0.mlp.b.weight", 5, 3 },
    { "model.layers.1.mlp.c.weight", 129, 300 },   { "model.layers.1.mlp.d.weight", 1, 1000 },
    { "model.layers.2.mlp.e.weight", 301, 700 },   { "model.layers.2.mlp.f.weight", 40, 520 },
    { "model.layers.3.mlp.g.weight", 2100, 4160 }, { "model.layers.5.mlp.i.weight", 300, 1024 },
    { "model.layers.4.mlp.h.weight", 51, 37 },     { "model.layers.3.mlp.esc.weight", 100, 3000 },
};
/* a (37 x 51) and h (51 x 37): each one's y is the other's x (test_fused_matmul_pdl_chain) */
#define FU_A 0
#define FU_H (FU_N - 2)
#define FU_N FU_LEN(FU_SHAPES)
#define FU_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* i: K a multiple of 256 (the fused kernels walk a range's strips as one) */
#define FU_I (FU_N - 3)
/* test_fused_matmul's batches: 1..32 (one mma.sync launch), then the ends of the wgmma
 * kernel's batch tiles (one of 64 rows to 64, one of 128 to 128, three at 300) */
static const uint32_t FU_BATCHES[] = { 1,  2,  3,  4,  5,  6,  7,  8,  9,  10,  11,  12,  13,
                                       14, 15, 16, 17, 18, 19, 20, 21, 22, 23,  24,  25,  26,
                                       27, 28, 29, 30, 31, 32, 33, 64, 65, 128, 129, 256, 300 };
#define FU_ESC (FU_N - 1)

static struct {
    df11_tensor_source t[FU_N];
    uint64_t seed;
    char path[512], huff_path[512];
} fu;

static void fu_make_model(void)
{
    if (fu.path[0]) return;
    fu.seed = df11_test_seed();
    uint64_t rng = fu.seed ^ 0x6675;
    for (size_t i = 0; i < FU_N; i++) {
        df11_tensor_source *s = &fu.t[i];
        const uint64_t n = (uint64_t)FU_SHAPES[i].n * FU_SHAPES[i].k;
        uint16_t *w = malloc(n * 2);
        ck_assert_ptr_nonnull(w);
        if (i == FU_ESC) /* zeros, denormals, 2^-67 .. 2^63: most weights escape */
            for (uint64_t j = 0; j < n; j++) {
                uint64_t r = df11_test_rand(&rng);
                uint32_t e = r % 16 == 0 ? 0 : 60 + (uint32_t)(r >> 8) % 131;
                w[j] = (uint16_t)(((r >> 40) & 0x8000) | e << 7 | ((r >> 20) & 0x7f));
            }
        else
            df11_test_fill_weights(w, n, FU_SHAPES[i].k, &rng);
        s->name = FU_SHAPES[i].name;
        s->dtype = DF11_DTYPE_BF16;
        s->ndim = 2;
        s->shape[0] = FU_SHAPES[i].n;
        s->shape[1] = FU_SHAPES[i].k;
        s->data = w;
    }
    df11_compress_options co = { 0 };
    co.lane_symbols = 72; /* chunks of 2304 weights: rows cut between chunks */
    snprintf(fu.huff_path, sizeof fu.huff_path, "%s/fu_huff.df11", df11_test_tmpdir());
    df11_status s =
        df11_compress_tensors(fu.huff_path, fu.t, FU_N, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    co.codec = df11_test_fixed_codec();
    co.lane_symbols = 0;
    snprintf(fu.path, sizeof fu.path, "%s/fu_fixed.df11", df11_test_tmpdir());
    s = df11_compress_tensors(fu.path, fu.t, FU_N, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress (fixed): %s %s", df11_strerror(s),
                  df11_last_error_detail());
}

static df11_model *fu_open_with(const char *path, int plain_launch)
{
    df11_model_options o = opts(2);
    o.nonlayer = DF11_NONLAYER_ARENA;
    o.matmul_plain_launch = plain_launch;
    df11_model *m = NULL;
    df11_status s = df11_model_open(path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
    return m;
}

static df11_model *fu_open(const char *path) { return fu_open_with(path, 0); }

/* y of the op on `stream` (NULL: legacy default), read back as doubles. */
static void fu_run(df11_model *m, const df11_weight *w, const void *dx, uint32_t batch,
                   df11_dtype yd, void *dy, cudaStream_t stream, double *out, void *raw)
{
    const size_t n = (size_t)batch * w->rows, ysz = n * (yd == DF11_DTYPE_F32 ? 4 : 2);
    df11_status s = df11_matmul(m, w, dx, batch, dy, yd, stream);
    ck_assert_msg(s == DF11_OK, "matmul %s batch %u: %s %s (seed %#llx)", w->name, batch,
                  df11_strerror(s), df11_last_error_detail(), (unsigned long long)fu.seed);
    ck_assert_int_eq(cudaStreamSynchronize(stream), cudaSuccess);
    read_back(raw, dy, ysz);
    for (size_t i = 0; i < n; i++)
        out[i] = yd == DF11_DTYPE_F32 ? ((const float *)raw)[i]
                                      : df11_test_bf16_f32(((uint16_t *)raw)[i]);
}

/* Tensor sh (weights w; the op's weight wt) at this batch, F32 and BF16 y: the fused path
 * against the fp64 reference, bit-identical launch after launch and (from batch
 * DF11_FUSED_GEMM_MIN_BATCH) with the wgmma kernel's split sums through the L2 instead of in
 * clusters (df11i_fused_gemm_test_clusters; where it runs in clusters, else the same launches
 * again), and within the two bounds of the decode + cuBLAS path (forced by
 * df11i_cuda_matmul_fused_limit(0)). Leaves the fused limit at DF11I_FUSED_EVERY. */
static void fu_check(df11_model *m, const df11_weight *wt, const mm_shape *sh, const uint16_t *w,
                     uint32_t batch, uint64_t *rng)
{
    uint16_t *x = df11_test_random_bf16((size_t)batch * sh->k, rng);
    const size_t n = (size_t)batch * sh->n;
    mm_ref rm = mm_ref_of(sh, w, x, batch);
    const double *ref = rm.refs, *mag = rm.mags;
    void *dx = dev_alloc((size_t)batch * sh->k * 2), *dy = dev_alloc(n * 4);
    dev_upload(dx, x, (size_t)batch * sh->k * 2);
    double *yf = malloc(n * sizeof *yf), *yc = malloc(n * sizeof *yc);
    void *raw = malloc(n * 4), *raw2 = malloc(n * 4);
    for (int d = 0; d < 2; d++) {
        const df11_dtype yd = d ? DF11_DTYPE_BF16 : DF11_DTYPE_F32;
        const size_t ysz = n * (d ? 2 : 4);
        ck_assert_int_eq(cudaMemset(dy, 0xff, n * 4), cudaSuccess); /* NaN */
        fu_run(m, wt, dx, batch, yd, dy, NULL, yf, raw);
        ck_assert_int_eq(cudaMemset(dy, 0xff, n * 4), cudaSuccess);
        fu_run(m, wt, dx, batch, yd, dy, NULL, yc, raw2);
        ck_assert_msg(!memcmp(raw, raw2, ysz), "%s batch %u: two launches differ", sh->name, batch);
        if (batch >= DF11_FUSED_GEMM_MIN_BATCH) {
            const int was = df11i_fused_gemm_test_clusters(0);
            ck_assert_int_eq(cudaMemset(dy, 0xff, n * 4), cudaSuccess);
            fu_run(m, wt, dx, batch, yd, dy, NULL, yc, raw2);
            df11i_fused_gemm_test_clusters(was);
            ck_assert_msg(!memcmp(raw, raw2, ysz),
                          "%s batch %u: sums in clusters and in the L2 differ", sh->name, batch);
        }
        df11i_cuda_matmul_fused_limit(0);
        fu_run(m, wt, dx, batch, yd, dy, NULL, yc, raw2);
        df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
        for (size_t j = 0; j < n; j++) {
            const double bf = mm_bound(sh->k, ref[j], mag[j], yd);
            ck_assert_msg(fabs(yf[j] - ref[j]) <= bf,
                          "%s batch %u y[%zu] = %.9g, reference %.9g, bound %.3g (%s, "
                          "fused, seed %#llx)",
                          sh->name, batch, j, yf[j], ref[j], bf, d ? "BF16" : "F32",
                          (unsigned long long)fu.seed);
            ck_assert_msg(fabs(yc[j] - ref[j]) <= bf, "%s batch %u: cuBLAS path off", sh->name,
                          batch);
            ck_assert_msg(fabs(yf[j] - yc[j]) <= 2 * bf,
                          "%s batch %u y[%zu]: fused %.9g, decode + cuBLAS %.9g (seed "
                          "%#llx)",
                          sh->name, batch, j, yf[j], yc[j], (unsigned long long)fu.seed);
        }
    }
    free(raw);
    free(raw2);
    free(yf);
    free(yc);
    mm_ref_free(&rm);
    free(x);
    dev_free(dx);
    dev_free(dy);
}

START_TEST(test_fused_matmul)
{
    /* Every shape, batch 1..32 and past it (the wgmma kernel's batch tiles, one or
     * several, and split-K where it runs; 32-row launches elsewhere, and for x it cannot
     * read: K % 8 != 0), F32 and BF16 y: the fused path against the fp64 reference,
     * bit-identical launch after launch, and within the two bounds of the decode + cuBLAS
     * path (forced by df11i_cuda_matmul_fused_limit(0)) on the same tensor. */
    fu_make_model();
    df11_model *m = fu_open(fu.path);
    const df11_file *f = df11_model_file(m);
    uint64_t rng = fu.seed ^ 0x78;
    for (size_t i = 0; i < FU_N; i++) {
        const mm_shape *sh = &FU_SHAPES[i];
        const uint16_t *w = fu.t[i].data;
        df11_weight wt;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        uint32_t t;
        ck_assert_int_eq(df11_file_find_tensor(f, sh->name, &t), DF11_OK);
        ck_assert_int_eq(df11_file_tensor(f, t)->codec, df11_test_fixed_codec());
        if (!df11i_fused_matmul_supported()) continue; /* pre-sm_80: decode path only */
        const uint32_t lim = df11i_fused_matmul_default_max(sh->k);
        ck_assert_uint_ge(lim, DF11_FUSED_MAX_BATCH);
        /* past 32 only where the wgmma kernel can read x (K % 8 == 0) */
        if (sh->k % 8) ck_assert_uint_eq(lim, DF11_FUSED_MAX_BATCH);
        ck_assert(df11i_cuda_matmul_fused_takes(NULL, f, t, 1));
        ck_assert(df11i_cuda_matmul_fused_takes(NULL, f, t, lim));
        ck_assert(!df11i_cuda_matmul_fused_takes(NULL, f, t, lim + 1));
        ck_assert(!df11i_cuda_matmul_fused_takes(NULL, f, t, 0));
        /* the fused path at every batch below, past the default too */
        const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
        const int big = sh->n * sh->k > 1000000;
        for (size_t bi = 0; bi < sizeof FU_BATCHES / sizeof FU_BATCHES[0]; bi++) {
            const uint32_t batch = FU_BATCHES[bi];
            /* 1, 8, 9, 16, 17, ...: each NB's ends, and past 32 each wgmma tile's */
            if (big && batch <= DF11_FUSED_MAX_BATCH && batch % 8 > 1) continue;
            if (big && batch > DF11_FUSED_MAX_BATCH && batch % 64 > 1 && batch != 300) continue;
            fu_check(m, &wt, sh, w, batch, &rng);
        }
        df11i_cuda_matmul_fused_limit(old);
    }
    /* where the wgmma kernel runs (sm_90): i's 3 row blocks in 6 CTAs (2 splits each) and
     * esc's 1 in 6 past batch 32, split among clusters */
    if (df11i_fused_gemm_supported()) ck_assert_uint_gt(df11i_fused_gemm_cluster_launches(), 0);
    df11_model_close(m);
}
END_TEST

/* test_fused_matmul's checks on the shapes under a million weights (the large-escape one
 * included) at a batch of each kernel and NB: small enough for compute-sanitizer, which
 * runs this case alone (CK_RUN_CASE=fused_few). */
START_TEST(test_fused_matmul_few)
{
    fu_make_model();
    df11_model *m = fu_open(fu.path);
    uint64_t rng = fu.seed ^ 0x66;
    static const uint32_t batches[] = { 1, 9, 24, 25, 129 }; /* 24 | 25: the two kernels */
    const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
    for (size_t i = 0; i < FU_N && df11i_fused_matmul_supported(); i++) {
        const mm_shape *sh = &FU_SHAPES[i];
        if (sh->n * sh->k > 1000000) continue;
        df11_weight wt;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++)
            fu_check(m, &wt, sh, fu.t[i].data, batches[bi], &rng);
    }
    df11i_cuda_matmul_fused_limit(old);
    df11_model_close(m);
}
END_TEST

/* Stacked weight st (np copies of tensor sh, weights w) at this batch, F32 and BF16 y: every
 * part's columns within the bound of the fp64 reference, bit-identical launch after launch. */
static void fu_check_stacked(df11_model *m, const df11_weight *st, int np, const mm_shape *sh,
                             const uint16_t *w, uint32_t batch, uint64_t *rng)
{
    uint16_t *x = df11_test_random_bf16((size_t)batch * sh->k, rng);
    const size_t n = (size_t)batch * sh->n * np;
    mm_ref rm = mm_ref_of(sh, w, x, batch);
    const double *ref = rm.refs, *mag = rm.mags;
    void *dx = dev_alloc((size_t)batch * sh->k * 2), *dy = dev_alloc(n * 4);
    dev_upload(dx, x, (size_t)batch * sh->k * 2);
    double *y = malloc(n * sizeof *y);
    void *raw = malloc(n * 4), *raw2 = malloc(n * 4);
    for (int d = 0; d < 2; d++) {
        const df11_dtype yd = d ? DF11_DTYPE_BF16 : DF11_DTYPE_F32;
        ck_assert_int_eq(cudaMemset(dy, 0xff, n * 4), cudaSuccess); /* NaN */
        fu_run(m, st, dx, batch, yd, dy, NULL, y, raw);
        ck_assert_int_eq(cudaMemset(dy, 0xff, n * 4), cudaSuccess);
        fu_run(m, st, dx, batch, yd, dy, NULL, y, raw2);
        ck_assert_msg(!memcmp(raw, raw2, n * (d ? 2 : 4)), "%s: two launches differ", st->name);
        for (uint32_t b = 0; b < batch; b++)
            for (int i = 0; i < np; i++)
                for (uint32_t r = 0; r < sh->n; r++) {
                    const size_t j = (size_t)b * sh->n + r;
                    const double got = y[((size_t)b * np + i) * sh->n + r],
                                 bf = mm_bound(sh->k, ref[j], mag[j], yd);
                    ck_assert_msg(fabs(got - ref[j]) <= bf,
                                  "%s batch %u part %d y[%u][%u] = %.9g, reference %.9g, bound "
                                  "%.3g (%s, seed %#llx)",
                                  st->name, batch, i, b, r, got, ref[j], bf, d ? "BF16" : "F32",
                                  (unsigned long long)fu.seed);
                }
    }
    free(raw);
    free(raw2);
    free(y);
    mm_ref_free(&rm);
    free(x);
    dev_free(dx);
    dev_free(dy);
}

START_TEST(test_fused_matmul_stacked)
{
    /* Stacked weights as one fused launch (parts repeated so that K matches: the big
     * split-K tensor, the escape-heavy one, rows % 16 != 0 with K % 8 != 0): every part's
     * columns within the bound of the reference, bit-identical launch after launch, and
     * the launch's workspace grown for the stack (g twice has more strips than any one
     * tensor); batches 1..161, past 32 the wgmma kernel's row blocks across parts. */
    static const int stacks[][5] = {
        { 2, 6, 6 }, { 3, FU_ESC, FU_ESC, FU_ESC }, { 4, 4, 4, 4, 4 }, { 1, FU_H }
    };
    fu_make_model();
    df11_model *m = fu_open(fu.path);
    if (!df11i_fused_matmul_supported()) {
        df11_model_close(m);
        return;
    }
    uint64_t rng = fu.seed ^ 0x5354;
    for (size_t c = 0; c < sizeof stacks / sizeof stacks[0]; c++) {
        const int np = stacks[c][0];
        const mm_shape *sh = &FU_SHAPES[stacks[c][1]];
        const uint16_t *w = fu.t[stacks[c][1]].data;
        df11_weight wt, parts[4], st;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        for (int i = 0; i < np; i++) parts[i] = wt;
        ck_assert_int_eq(df11_weight_stack(m, (uint32_t)np, parts, &st), DF11_OK);
        const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
        for (uint32_t batch = 1; batch <= 161; batch += batch < DF11_FUSED_MAX_BATCH ? 8 : 64)
            fu_check_stacked(m, &st, np, sh, w, batch, &rng);
        df11i_cuda_matmul_fused_limit(old);
    }
    df11_model_close(m);
}
END_TEST

/* The fused workspace's first half is zero between launches (kernels/matmul.h). */
static void fu_assert_ws_zero(const df11_model *m, const char *what, uint32_t batch)
{
    ck_assert_ptr_nonnull(m->mm_ws);
    const size_t half = m->mm_ws_size / 2;
    uint8_t *h = malloc(half);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    read_back(h, m->mm_ws, half);
    size_t nz = 0;
    for (size_t i = 0; i < half; i++) nz += h[i] != 0;
    free(h);
    ck_assert_msg(!nz, "%s batch %u: %zu bytes of the workspace's first half left non-zero", what,
                  batch, nz);
}

/* Products of the test model, where supported() says the kernel runs, over grids forced by
 * set_grid (df11i_fused_matmul_test_grid for the mma.sync kernel, df11i_fused_gemm_test_grid
 * for the wgmma kernel): each of `shapes`, then i stacked three times, at every grid and
 * batch, checked as fu_check and fu_check_stacked check, and the workspace's first half zero
 * after each. */
static void fu_forced_grids(int (*supported)(void), uint32_t (*set_grid)(uint32_t),
                            const size_t *shapes, size_t n_shapes, const uint32_t *ctas,
                            size_t n_ctas, const uint32_t *batches, size_t n_batches, uint64_t rng0)
{
    fu_make_model();
    df11_model *m = fu_open(fu.path);
    if (!supported()) {
        df11_model_close(m);
        return;
    }
    uint64_t state = fu.seed ^ rng0, *rng = &state;
    const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
    for (size_t i = 0; i < n_shapes; i++) {
        const mm_shape *sh = &FU_SHAPES[shapes[i]];
        df11_weight wt;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        for (size_t c = 0; c < n_ctas; c++) {
            const uint32_t was = set_grid(ctas[c]);
            for (size_t b = 0; b < n_batches; b++) {
                fu_check(m, &wt, sh, fu.t[shapes[i]].data, batches[b], rng);
                fu_assert_ws_zero(m, sh->name, batches[b]);
            }
            set_grid(was);
        }
    }
    const mm_shape *sh = &FU_SHAPES[FU_I];
    df11_weight wt, parts[3], st;
    ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
    for (int i = 0; i < 3; i++) parts[i] = wt;
    ck_assert_int_eq(df11_weight_stack(m, 3, parts, &st), DF11_OK);
    for (size_t c = 0; c < n_ctas; c++) {
        const uint32_t was = set_grid(ctas[c]);
        for (size_t b = 0; b < n_batches; b++) {
            fu_check_stacked(m, &st, 3, sh, fu.t[FU_I].data, batches[b], rng);
            fu_assert_ws_zero(m, st.name, batches[b]);
        }
        set_grid(was);
    }
    df11i_cuda_matmul_fused_limit(old);
    df11_model_close(m);
}

START_TEST(test_fused_matmul_stream_k)
{
    /* The wgmma kernel's ranges over grids of 1 to 13 CTAs whatever the GPU
     * (df11i_fused_gemm_test_grid), at one, two and three batch tiles: ranges that cut units
     * between CTAs (summed by the last from per-CTA partials) and span several, walked as one
     * where K is a multiple of 256 (i, and i stacked three times: from part to part) and a
     * walk a unit elsewhere (f: K = 520, a last tile of one step, so that a unit's last step
     * and the next one's first share x stage 0; the escape-heavy tensor, whose exceptions
     * overflow the stage), each checked as test_fused_matmul and test_fused_matmul_stacked check,
     * and the workspace's first half zero after each (the semaphores). */
    static const size_t shapes[] = { FU_I, 5 /* f */, FU_ESC };
    static const uint32_t ctas[] = { 1, 2, 5, 7, 13 }, batches[] = { 25, 64, 65, 129, 300 };
    fu_forced_grids(df11i_fused_gemm_supported, df11i_fused_gemm_test_grid, shapes, FU_LEN(shapes),
                    ctas, FU_LEN(ctas), batches, FU_LEN(batches), 0x534b);
}
END_TEST

START_TEST(test_fused_matmul_split_sums)
{
    /* The mma.sync kernel's split sums over grids of 1 to 13 CTAs and its own
     * (df11i_fused_matmul_test_grid): strips cut among several CTAs, ranges that start inside
     * a strip and end inside the next (a CTA both summing its first strip and writing a piece
     * of its last), over K a multiple of 256 (i: ranges walked as one, also across the three
     * parts of i stacked), a last tile of one step (f) and exception lists past the stage
     * (esc); each checked as test_fused_matmul checks, and the workspace's first half zero
     * after every product (the slots' "not yet written"). Batches 25..32 too, which Hopper
     * gives the wgmma kernel by default. Batch 1..8 with both look-aheads, whichever the
     * device takes (df11i_fused_matmul_test_deep). */
    static const size_t shapes[] = { FU_I, 5 /* f */, FU_ESC, 6 /* g */ };
    static const uint32_t ctas[] = { 1, 2, 5, 7, 13, 0 }, batches[] = { 9, 17, 32 },
                          small[] = { 1, 8 };
    const uint32_t gemm_from = df11i_fused_matmul_test_gemm_from(UINT32_MAX);
    fu_forced_grids(df11i_fused_matmul_supported, df11i_fused_matmul_test_grid, shapes,
                    FU_LEN(shapes), ctas, FU_LEN(ctas), batches, FU_LEN(batches), 0x5353);
    for (int deep = 0; deep < 2; deep++) {
        const int was = df11i_fused_matmul_test_deep(deep);
        fu_forced_grids(df11i_fused_matmul_supported, df11i_fused_matmul_test_grid, shapes,
                        FU_LEN(shapes), ctas, FU_LEN(ctas), small, FU_LEN(small), 0x5354 + deep);
        df11i_fused_matmul_test_deep(was);
    }
    df11i_fused_matmul_test_gemm_from(gemm_from);
}
END_TEST

START_TEST(test_fused_matmul_streams)
{
    /* Fused products of one model on two streams (they share its workspace), a decode
     * path product between them, no host sync in between: every y as on one stream; with
     * programmatic launches and plain ones. */
    fu_make_model();
    const mm_shape *sh = &FU_SHAPES[6];
    uint64_t rng = fu.seed ^ 0x73;
    enum { N = 6 };
    /* the third past the fused path's default: a decode path product */
    const uint32_t batch[N] = { 1, 16, df11i_fused_matmul_default_max(sh->k) + 1, 3, 8, 64 };
    cudaStream_t st[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(cudaStreamCreateWithFlags(&st[i], cudaStreamNonBlocking), cudaSuccess);
    void *dx[N], *dy[N];
    size_t ysz[N];
    for (int i = 0; i < N; i++) {
        uint16_t *x = df11_test_random_bf16((size_t)batch[i] * sh->k, &rng);
        dx[i] = dev_alloc((size_t)batch[i] * sh->k * 2);
        dev_upload(dx[i], x, (size_t)batch[i] * sh->k * 2);
        free(x);
        ysz[i] = (size_t)batch[i] * sh->n * 4;
        dy[i] = dev_alloc(ysz[i]);
    }
    int bad[2][N] = { { 0 } };
    for (int plain = 0; plain < 2; plain++) {
        df11_model *m = fu_open_with(fu.path, plain);
        df11_weight wt;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        void *want[N];
        for (int i = 0; i < N; i++) {
            want[i] = malloc(ysz[i]);
            double *tmp = malloc((size_t)batch[i] * sh->n * sizeof *tmp);
            fu_run(m, &wt, dx[i], batch[i], DF11_DTYPE_F32, dy[i], NULL, tmp, want[i]);
            free(tmp);
            ck_assert_int_eq(cudaMemset(dy[i], 0xff, ysz[i]), cudaSuccess);
        }
        ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(df11_matmul(m, &wt, dx[i], batch[i], dy[i], DF11_DTYPE_F32, st[i % 2]),
                             DF11_OK);
        ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
        for (int i = 0; i < N; i++) {
            float *got = malloc(ysz[i]);
            read_back(got, dy[i], ysz[i]);
            for (size_t j = 0; j < ysz[i] / 4; j++)
                bad[plain][i] += memcmp(&got[j], (const float *)want[i] + j, 4) != 0;
            free(got);
            free(want[i]);
        }
        df11_model_close(m);
    }
    for (int plain = 0; plain < 2; plain++)
        for (int i = 0; i < N; i++)
            ck_assert_msg(!bad[plain][i],
                          "product %d (batch %u) differs in %d of %zu values (%s launches; "
                          "PDL: %d %d %d %d %d %d, plain: %d %d %d %d %d %d)",
                          i, batch[i], bad[plain][i], ysz[i] / 4, plain ? "plain" : "PDL",
                          bad[0][0], bad[0][1], bad[0][2], bad[0][3], bad[0][4], bad[0][5],
                          bad[1][0], bad[1][1], bad[1][2], bad[1][3], bad[1][4], bad[1][5]);
    for (int i = 0; i < N; i++) {
        dev_free(dx[i]);
        dev_free(dy[i]);
    }
    for (int i = 0; i < 2; i++) cudaStreamDestroy(st[i]);
}
END_TEST

START_TEST(test_fused_matmul_huffman)
{
    /* Huffman tensors (lane_symbols 72: chunks of 2304 weights, so rows are cut between
     * chunks, a row of g spans two or three, every chunk ends with a step taken symbol by
     * symbol, and the last chunk of each tensor is short): by default the fused path
     * exactly at batch 1 where K % 8 == 0 and K >= 256 (df11i_huffman_matmul_default_max);
     * forced, checked as test_fused_matmul checks the fixed code, batches past
     * DF11_HUFFMAN_FUSED_MAX_BATCH as several launches. x not 16-byte aligned gives the same
     * bits; a stacked weight of two Huffman tensors (a launch each) gives each part's. */
    fu_make_model();
    df11_model *m = fu_open(fu.huff_path);
    const df11_file *f = df11_model_file(m);
    uint64_t rng = fu.seed ^ 0x48;
    int taken = 0;
    const int sup = df11i_fused_matmul_supported();
    /* long lanes (df11-compress's default) leave the GPU idle: not by default */
    ck_assert_uint_eq(df11i_huffman_matmul_default_max(4096, 2048), 0);
    ck_assert_uint_eq(df11i_huffman_matmul_default_max(4096, 128), sup ? 1 : 0);
    ck_assert_uint_eq(df11i_huffman_matmul_default_max(4100, 128), 0);
    ck_assert_uint_eq(df11i_huffman_matmul_default_max(4096, 32), 0); /* a large workspace */
    for (size_t i = 0; i < FU_N; i++) {
        const mm_shape *sh = &FU_SHAPES[i];
        uint32_t t;
        ck_assert_int_eq(df11_file_find_tensor(f, sh->name, &t), DF11_OK);
        ck_assert_int_eq(df11_file_tensor(f, t)->codec, DF11_CODEC_EXP_HUFFMAN);
        ck_assert_uint_eq(df11_file_tensor(f, t)->lane_symbols, 72);
        const int takes = sup && sh->k % 8 == 0 && sh->k >= 256;
        ck_assert_int_eq(df11i_cuda_matmul_fused_takes(NULL, f, t, 1), takes);
        ck_assert(!df11i_cuda_matmul_fused_takes(NULL, f, t, 2));
        ck_assert(!df11i_cuda_matmul_fused_takes(NULL, f, t, 0));
        if (!takes) continue;
        taken++;
        df11_weight wt;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
        static const uint32_t batches[] = { 1, 2, 3, 4, 5, 8, 9, 17 };
        for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++)
            if (sh->n * sh->k < 1000000 || batches[bi] % 8 < 2)
                fu_check(m, &wt, sh, fu.t[i].data, batches[bi], &rng);
        df11i_cuda_matmul_fused_limit(old);
    }
    /* d, f, g, i and the escape-heavy tensor */
    ck_assert_int_eq(taken, df11i_fused_matmul_supported() ? 5 : 0);
    if (taken) {
        const mm_shape *sh = &FU_SHAPES[5]; /* f: 40 x 520 */
        df11_weight wt, st;
        ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
        const df11_weight parts[2] = { wt, wt };
        ck_assert_int_eq(df11_weight_stack(m, 2, parts, &st), DF11_OK);
        const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY), batch = 3;
        uint32_t t;
        ck_assert_int_eq(df11_file_find_tensor(f, sh->name, &t), DF11_OK);
        ck_assert(df11i_cuda_matmul_fused_takes(NULL, f, t, batch));
        uint16_t *x = df11_test_random_bf16((size_t)batch * sh->k, &rng);
        const size_t xb = (size_t)batch * sh->k * 2, yb = (size_t)batch * st.rows * 4;
        uint8_t *dx = dev_alloc(xb + 16);
        void *dy = dev_alloc(yb);
        float *one = malloc(yb), *two = malloc(yb);
        dev_upload(dx, x, xb);
        ck_assert_int_eq(df11_matmul(m, &wt, dx, batch, dy, DF11_DTYPE_F32, NULL), DF11_OK);
        ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
        read_back(one, dy, (size_t)batch * sh->n * 4);
        /* x 2 bytes off a 16-byte boundary: read element by element, the same sums */
        dev_upload(dx + 2, x, xb);
        ck_assert_int_eq(df11_matmul(m, &wt, dx + 2, batch, dy, DF11_DTYPE_F32, NULL), DF11_OK);
        ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
        read_back(two, dy, (size_t)batch * sh->n * 4);
        ck_assert_msg(!memcmp(one, two, (size_t)batch * sh->n * 4),
                      "unaligned x changed y (seed %#llx)", (unsigned long long)fu.seed);
        dev_upload(dx, x, xb);
        ck_assert_int_eq(df11_matmul(m, &st, dx, batch, dy, DF11_DTYPE_F32, NULL), DF11_OK);
        ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
        read_back(two, dy, yb);
        for (uint32_t b = 0; b < batch; b++)
            for (int p = 0; p < 2; p++)
                ck_assert_msg(
                    !memcmp(two + ((size_t)b * 2 + p) * sh->n, one + (size_t)b * sh->n, sh->n * 4),
                    "stacked Huffman part %d, batch row %u differs (seed %#llx)", p, b,
                    (unsigned long long)fu.seed);
        df11i_cuda_matmul_fused_limit(old);
        free(one);
        free(two);
        free(x);
        dev_free(dx);
        dev_free(dy);
    }
    df11_model_close(m);
}
END_TEST

/* Products a, h, a, h, ... on one stream, each reading the y the one before wrote, no host
 * sync between them (BF16 y, 4 rows): launched programmatically (the default), each must
 * wait for the one before before it reads x, so the chain's end is bit-identical to the
 * same chain with plain launches (a model opened with options.matmul_plain_launch) and with a host sync
 * after every product. */
static void fu_chain(df11_model *m, const void *x0, void *da, void *dh, int sync, void *out)
{
    df11_weight wa, wh;
    ck_assert_int_eq(df11_weight_get(m, FU_SHAPES[FU_A].name, &wa), DF11_OK);
    ck_assert_int_eq(df11_weight_get(m, FU_SHAPES[FU_H].name, &wh), DF11_OK);
    const size_t bytes = 4 * 51 * 2;
    ck_assert_int_eq(cudaMemcpy(da, x0, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    for (int i = 0; i < 12; i++) {
        ck_assert_int_eq(df11_matmul(m, &wa, da, 4, dh, DF11_DTYPE_BF16, NULL), DF11_OK);
        if (sync) ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
        ck_assert_int_eq(df11_matmul(m, &wh, dh, 4, da, DF11_DTYPE_BF16, NULL), DF11_OK);
        if (sync) ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    }
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    read_back(out, da, bytes);
}

START_TEST(test_fused_matmul_pdl_chain)
{
    fu_make_model();
    if (!df11i_fused_matmul_supported()) return;
    df11_model *m = fu_open(fu.path);
    df11_model *plain = fu_open_with(fu.path, 1);
    uint64_t rng = fu.seed ^ 0x70;
    uint16_t *x0 = df11_test_random_bf16(4 * 51, &rng);
    void *da = dev_alloc(4 * 51 * 2), *dh = dev_alloc(4 * 51 * 2);
    uint16_t y[3][4 * 51];
    fu_chain(m, x0, da, dh, 0, y[0]);
    fu_chain(plain, x0, da, dh, 0, y[1]);
    fu_chain(m, x0, da, dh, 1, y[2]);
    int nonzero = 0;
    for (int i = 0; i < 4 * 51; i++) nonzero |= (y[0][i] & 0x7fff) != 0;
    ck_assert_msg(nonzero, "the chain died out (seed %#llx)", (unsigned long long)fu.seed);
    ck_assert_msg(!memcmp(y[0], y[1], sizeof y[0]), "PDL chain != plain chain (seed %#llx)",
                  (unsigned long long)fu.seed);
    ck_assert_msg(!memcmp(y[0], y[2], sizeof y[0]), "PDL chain != synced chain (seed %#llx)",
                  (unsigned long long)fu.seed);
    free(x0);
    dev_free(da);
    dev_free(dh);
    df11_model_close(plain);
    df11_model_close(m);
}
END_TEST

/* A chain of products of tensor FU_SHAPES[si] (n x k, n <= k) at this batch, three a round on
 * one stream, each writing into an x another one reads: Y = W·A, then A's first batch x n
 * values = W·B (written while the product before may still read A, were it not for its
 * wait), then B's = W·A (reading what the one before wrote). out: Y, A and B after 8 rounds
 * (batch x k values each). */
static void op_chain(df11_model *m, size_t si, uint32_t batch, const uint16_t *a0,
                     const uint16_t *b0, void *da, void *db, void *dy, int sync, uint16_t *out)
{
    const mm_shape *sh = &FU_SHAPES[si];
    const size_t n = (size_t)batch * sh->k, bytes = n * 2;
    df11_weight wt;
    ck_assert_int_eq(df11_weight_get(m, sh->name, &wt), DF11_OK);
    ck_assert_int_eq(cudaMemcpy(da, a0, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(db, b0, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemset(dy, 0, bytes), cudaSuccess);
    void *const xs[3] = { da, db, da }, *const ys[3] = { dy, da, db };
    for (int i = 0; i < 8 * 3; i++) {
        ck_assert_int_eq(df11_matmul(m, &wt, xs[i % 3], batch, ys[i % 3], DF11_DTYPE_BF16, NULL),
                         DF11_OK);
        if (sync) ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    }
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    read_back(out, dy, bytes);
    read_back(out + n, da, bytes);
    read_back(out + 2 * n, db, bytes);
}

/* op_chain on the model at path: the programmatic launches' end bit-identical to plain
 * launches' and to a host sync after every product. */
static void check_chain(const char *path, size_t si, uint32_t batch, uint64_t seed)
{
    const mm_shape *sh = &FU_SHAPES[si];
    df11_model *m = fu_open(path);
    df11_model *plain = fu_open_with(path, 1);
    const size_t n = (size_t)batch * sh->k;
    uint64_t rng = fu.seed ^ seed;
    uint16_t *a0 = df11_test_random_bf16(n, &rng), *b0 = df11_test_random_bf16(n, &rng);
    void *da = dev_alloc(n * 2), *db = dev_alloc(n * 2), *dy = dev_alloc(n * 2);
    uint16_t *out[3];
    for (int i = 0; i < 3; i++) out[i] = malloc(3 * n * 2);
    op_chain(m, si, batch, a0, b0, da, db, dy, 0, out[0]);
    op_chain(plain, si, batch, a0, b0, da, db, dy, 0, out[1]);
    op_chain(m, si, batch, a0, b0, da, db, dy, 1, out[2]);
    int nonzero = 0;
    for (uint32_t i = 0; i < sh->n; i++) nonzero |= (out[0][i] & 0x7fff) != 0;
    ck_assert_msg(nonzero, "%s: the chain died out (seed %#llx)", sh->name,
                  (unsigned long long)fu.seed);
    ck_assert_msg(!memcmp(out[0], out[1], 3 * n * 2),
                  "%s batch %u: PDL chain != plain chain (seed %#llx)", sh->name, batch,
                  (unsigned long long)fu.seed);
    ck_assert_msg(!memcmp(out[0], out[2], 3 * n * 2),
                  "%s batch %u: PDL chain != synced chain (seed %#llx)", sh->name, batch,
                  (unsigned long long)fu.seed);
    for (int i = 0; i < 3; i++) free(out[i]);
    free(a0);
    free(b0);
    dev_free(da);
    dev_free(db);
    dev_free(dy);
    df11_model_close(plain);
    df11_model_close(m);
}

/* The Huffman kernel's chain (it launches programmatically too): f (40 x 520) at batch 1. */
START_TEST(test_fused_matmul_huffman_pdl_chain)
{
    fu_make_model();
    if (!df11i_fused_matmul_supported()) return;
    df11_model *m = fu_open(fu.huff_path);
    const df11_file *f = df11_model_file(m);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, FU_SHAPES[5].name, &t), DF11_OK);
    ck_assert(df11i_cuda_matmul_fused_takes(NULL, f, t, 1)); /* the Huffman kernel's path */
    df11_model_close(m);
    check_chain(fu.huff_path, 5, 1, 0x4850);
}
END_TEST

/* Both fixed-code kernels' chains: i (300 x 1024) at batch 8 (the mma.sync kernel) and 64
 * (the wgmma kernel, 3 row blocks split 2 ways: in clusters where they fit, and through the
 * L2). */
START_TEST(test_fused_matmul_fixed_pdl_chain)
{
    fu_make_model();
    if (!df11i_fused_matmul_supported()) return;
    check_chain(fu.path, FU_I, 8, 0x4650);
    if (!df11i_fused_gemm_supported()) return;
    df11_model *m = fu_open(fu.path);
    const df11_file *f = df11_model_file(m);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, FU_SHAPES[FU_I].name, &t), DF11_OK);
    ck_assert(df11i_cuda_matmul_fused_takes(NULL, f, t, 64)); /* the wgmma kernel's path */
    df11_model_close(m);
    for (int l2 = 0; l2 < 2; l2++) {
        const int was = df11i_fused_gemm_test_clusters(!l2);
        const uint64_t before = df11i_fused_gemm_cluster_launches();
        check_chain(fu.path, FU_I, 64, 0x4750 + l2);
        const uint64_t in_clusters = df11i_fused_gemm_cluster_launches() - before;
        df11i_fused_gemm_test_clusters(was);
        if (l2)
            ck_assert_uint_eq(in_clusters, 0);
        else /* 3 chains of 24 products */
            ck_assert_uint_ge(in_clusters, 3 * 24);
    }
}
END_TEST

/* Shapes where CTAs' ranges cross strip pairs, so that the mma.sync kernel's walks chain
 * into the next strip (walk_strips, kernels/fused_matmul_strip.cuh: where a tensor's last
 * tile is whole, cols_pad % 256 == 0): more (strip pair, tile) units than twice a launch's
 * CTAs on GPUs of up to 150 SMs (~2400), 1 or 4 tiles a pair, an odd strip count (the last pair's
 * second warp has no strip: its walk skips it), every 7th row of random exponents (exception
 * lists past the shared-memory stage on either side of a chain), and K = 200 (one tile of 4
 * steps with 56 pad columns: x read with bounds checks). */
static const mm_shape CH_SHAPES[] = {
    { "model.layers.0.mlp.chain.weight", 19216, 1024 },
    { "model.layers.0.mlp.pad.weight", 76816, 200 },
};
#define CH_N (sizeof CH_SHAPES / sizeof CH_SHAPES[0])

START_TEST(test_fused_matmul_chained)
{
    /* Each shape at batch 1, 17 and 32 (NB 1, 3, 4: 8 and 6 CTAs an SM) checked as
     * test_fused_matmul checks, and the first stacked twice (chains across the two parts,
     * past the first's strip-less warp) at batch 1 and 17. */
    fu_make_model(); /* fu.seed */
    if (!df11i_fused_matmul_supported()) return;
    uint64_t rng = fu.seed ^ 0x4348;
    df11_tensor_source t[CH_N];
    for (size_t i = 0; i < CH_N; i++) {
        const uint32_t rows = CH_SHAPES[i].n, k = CH_SHAPES[i].k;
        uint16_t *w = malloc((size_t)rows * k * 2);
        ck_assert_ptr_nonnull(w);
        df11_test_fill_weights(w, (uint64_t)rows * k, k, &rng);
        for (uint32_t r = 3; r < rows; r += 7)
            for (uint32_t c = 0; c < k; c++) {
                const uint64_t v = df11_test_rand(&rng);
                w[(size_t)r * k + c] =
                    (uint16_t)(((v >> 40) & 0x8000) | (60 + (uint32_t)(v >> 8) % 131) << 7 |
                               ((v >> 20) & 0x7f));
            }
        t[i] = (df11_tensor_source){ .name = CH_SHAPES[i].name,
                                     .dtype = DF11_DTYPE_BF16,
                                     .ndim = 2,
                                     .shape = { rows, k },
                                     .data = w };
    }
    char path[512];
    snprintf(path, sizeof path, "%s/fu_chain.df11", df11_test_tmpdir());
    df11_compress_options co = { .codec = df11_test_fixed_codec() };
    df11_status s = df11_compress_tensors(path, t, CH_N, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    df11_model *m = fu_open(path);
    const uint32_t old = df11i_cuda_matmul_fused_limit(DF11I_FUSED_EVERY);
    static const uint32_t batches[] = { 1, 17, 32 };
    for (size_t i = 0; i < CH_N; i++) {
        df11_weight wt;
        ck_assert_int_eq(df11_weight_get(m, CH_SHAPES[i].name, &wt), DF11_OK);
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
            fu_check(m, &wt, &CH_SHAPES[i], t[i].data, batches[b], &rng);
    }
    df11_weight parts[2], st;
    ck_assert_int_eq(df11_weight_get(m, CH_SHAPES[0].name, &parts[0]), DF11_OK);
    parts[1] = parts[0];
    ck_assert_int_eq(df11_weight_stack(m, 2, parts, &st), DF11_OK);
    fu_check_stacked(m, &st, 2, &CH_SHAPES[0], t[0].data, 1, &rng);
    fu_check_stacked(m, &st, 2, &CH_SHAPES[0], t[0].data, 17, &rng);
    df11i_cuda_matmul_fused_limit(old);
    df11_model_close(m);
    for (size_t i = 0; i < CH_N; i++) free((void *)t[i].data);
}
END_TEST

/* Their own cases, so that a sanitizer run can pick them (CK_RUN_CASE=fused_split, fused_few). */
static void fused_tests(Suite *s)
{
    TCase *tc = tcase_create("fused");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_fused_matmul);
    tcase_add_test(tc, test_fused_matmul_stacked);
    tcase_add_test(tc, test_fused_matmul_stream_k);
    tcase_add_test(tc, test_fused_matmul_chained);
    tcase_add_test(tc, test_fused_matmul_streams);
    tcase_add_test(tc, test_fused_matmul_pdl_chain);
    tcase_add_test(tc, test_fused_matmul_huffman);
    tcase_add_test(tc, test_fused_matmul_huffman_pdl_chain);
    tcase_add_test(tc, test_fused_matmul_fixed_pdl_chain);
    suite_add_tcase(s, tc);
    tc = tcase_create("fused_split");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_fused_matmul_split_sums);
    suite_add_tcase(s, tc);
    tc = tcase_create("fused_few");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_fused_matmul_few);
    suite_add_tcase(s, tc);
}
