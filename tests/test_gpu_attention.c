/* The example engine's CUDA attention kernels (examples/run/dfl_cuda.cu, through
 * dfl_gpu_attention): naive (a block per head and token), tiled (flash-style, FP32), mma
 * (the same on the tensor cores, BF16 operands) and split (decode: the context cut into
 * ranges over blocks, FP32), on random q, K, V against a float64 reference and against
 * each other; AUTO against the one it picks. The shapes cover GQA and
 * plain heads, the families' head_dims (16, 24) and the padded ones (a head_dim between 64,
 * 128 and 256), passes that are not a multiple of the 64-token tile, cache offsets and
 * sliding windows. Cache rows no query may see (past the pass, before every window) are
 * NaN, and so is the output row after the pass, which must stay untouched; so a read or a
 * write out of its range fails here, and under compute-sanitizer. With
 * DFL_ATTENTION_TIME=1 it also times the prefill kernels at Llama-3-8B's shape (4096
 * tokens, 32 heads, 8 kv heads, head_dim 128); decode steps are timed in the engine (ncu,
 * bench/RESULTS.md), since a call here costs more host time than split's kernel. Exits 77
 * without a GPU. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/run/dfl.h"
#include "tests/engine_gpu.h"
#include "tests/testutil.h"

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        ck_assert_msg(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                 \
    } while (0)

/* naive and tiled (FP32) against the float64 reference: the output's BF16 rounding (under
 * one ulp, 2^-8 relative, where FP32 error tips a value across a rounding boundary) plus
 * FP32's error in the scores' dot products and the softmax sums (|V| <= 1, scores up to
 * ~20: a few 1e-5 in practice; the bound allows 5e-4). mma multiplies BF16 operands: it is
 * held to a float64 reference on q, K, V rounded to BF16 as it rounds them, where what is
 * left is its rounding of the probabilities to BF16 for P·V (2^-9 of each term, so at most
 * 2^-9 · max |V| over a row) besides the FP32 terms above: 2.5e-3. A position masked wrongly
 * moves a row of few keys by a sizable fraction of |V|, well past either. */
#define REL_BOUND (1.0 / 256)
#define ABS_BOUND 5e-4
#define MMA_ABS_BOUND 2.5e-3

typedef struct attn_case {
    int n_heads, n_kv_heads, hd, n, pos0, window;
} attn_case;

static const attn_case cases[] = {
    { 32, 8, 128, 200, 0, 0 },  /* Llama-3 GQA, partial last tile */
    { 32, 8, 128, 64, 0, 0 },   /* one whole tile */
    { 6, 2, 16, 37, 5, 0 },     /* the families' model */
    { 6, 2, 24, 70, 11, 0 },    /* fam-head-dim */
    { 6, 2, 16, 40, 3, 8 },     /* fam-mistral's window */
    { 6, 2, 16, 33, 0, 4 },     /* window 4 */
    { 4, 4, 64, 129, 300, 0 },  /* no GQA, long cache before the pass */
    { 8, 2, 128, 100, 50, 8 },  /* window well inside the tile */
    { 8, 1, 96, 150, 40, 70 },  /* window across tiles, head_dim padded to 128 */
    { 4, 1, 256, 65, 63, 100 }, /* the widest head */
    { 4, 2, 200, 90, 7, 0 },    /* head_dim padded to 256 */
    { 2, 2, 8, 1, 0, 0 },       /* one token, one position */
    { 4, 2, 64, 1, 500, 0 },    /* a decode step */
    { 4, 2, 80, 3, 130, 5 },    /* a short pass, windowed, head_dim 80 */
    { 32, 8, 128, 520, 17, 0 }, /* a longer pass: 9 query tiles */
    { 10, 5, 6, 77, 64, 0 },    /* head_dim not a multiple of 4 */
    /* decode passes (split, and what AUTO runs for them) */
    { 32, 8, 128, 1, 4000, 0 },   /* Llama-3 decode after 4000 positions: 33 ranges (H100 SXM) */
    { 16, 2, 128, 1, 3000, 0 },   /* 2 kv heads: DFL_ATTENTION_SPLIT_MAX_RANGES (64) ranges */
    { 32, 8, 128, 1, 30, 0 },     /* a context shorter than one range's tile */
    { 16, 1, 64, 2, 700, 0 },     /* a query group of 16 */
    { 32, 1, 64, 1, 300, 0 },     /* a group of 32: split refuses it, AUTO runs mma */
    { 8, 2, 256, 8, 1000, 0 },    /* the widest head, the longest split pass */
    { 12, 4, 128, 5, 2000, 600 }, /* a window across ranges */
    { 6, 2, 6, 3, 45, 0 },        /* head_dim 6 */
    { 8, 8, 96, 1, 129, 0 },      /* no GQA, head_dim padded to 128 */
};

static float frand(uint64_t *st, float a)
{
    return (float)((double)(df11_test_rand(st) >> 11) / 9007199254740992.0 * 2.0 - 1.0) * a;
}

static uint64_t rng;

/* Random q [n][H][hd] and cache [ctx + 1][KV][hd] (row ctx and rows before the first
 * window NaN), on the device. */
typedef struct attn_data {
    attn_case c;
    int ctx;
    float *q, *k, *v;    /* host */
    float *dq, *dk, *dv; /* device */
    uint16_t *dout;      /* [n + 1][H][hd], the last row poisoned */
} attn_data;

static void data_make(attn_data *a, const attn_case *c)
{
    memset(a, 0, sizeof *a);
    a->c = *c;
    a->ctx = c->pos0 + c->n;
    const size_t nq = (size_t)c->n * c->n_heads * c->hd, row = (size_t)c->n_kv_heads * c->hd;
    const size_t nkv = (size_t)(a->ctx + 1) * row;
    a->q = malloc(nq * sizeof(float));
    a->k = malloc(nkv * sizeof(float));
    a->v = malloc(nkv * sizeof(float));
    ck_assert(a->q && a->k && a->v);
    /* |q| up to 6: scores spread over several units, so the softmax is peaked */
    for (size_t i = 0; i < nq; i++) a->q[i] = frand(&rng, 6.0f);
    const int seen_from =
        c->window > 0 && c->pos0 - c->window + 1 > 0 ? c->pos0 - c->window + 1 : 0;
    for (size_t i = 0; i < nkv; i++) {
        const int pos = (int)(i / row);
        const int hidden = pos >= a->ctx || pos < seen_from;
        a->k[i] = hidden ? NAN : frand(&rng, 1.0f);
        a->v[i] = hidden ? NAN : frand(&rng, 1.0f);
    }
    CUDA_OK(cudaMalloc((void **)&a->dq, nq * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&a->dk, nkv * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&a->dv, nkv * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&a->dout, nq / c->n * (c->n + 1) * sizeof(uint16_t)));
    CUDA_OK(cudaMemcpy(a->dq, a->q, nq * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(a->dk, a->k, nkv * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(a->dv, a->v, nkv * sizeof(float), cudaMemcpyHostToDevice));
}

static void data_free(attn_data *a)
{
    cudaFree(a->dq);
    cudaFree(a->dk);
    cudaFree(a->dv);
    cudaFree(a->dout);
    free(a->q);
    free(a->k);
    free(a->v);
}

/* Runs `kind` on a poisoned output; returns the n rows, checks the row after them. */
static uint16_t *data_run(const attn_data *a, dfl_attention kind)
{
    const attn_case *c = &a->c;
    const size_t per_tok = (size_t)c->n_heads * c->hd, nq = (size_t)c->n * per_tok;
    CUDA_OK(cudaMemset(a->dout, 0xff, (nq + per_tok) * sizeof(uint16_t)));
    char err[256] = "";
    df11_status st =
        dfl_gpu_attention(kind, a->dq, a->dk, a->dv, a->dout, c->n, c->pos0, c->n_heads,
                          c->n_kv_heads, c->hd, c->window, NULL, err, sizeof err);
    ck_assert_msg(st == DF11_OK, "attention kind %d: %s: %s", (int)kind, df11_strerror(st), err);
    CUDA_OK(cudaDeviceSynchronize());
    uint16_t *out = malloc((nq + per_tok) * sizeof(uint16_t));
    ck_assert_ptr_nonnull(out);
    CUDA_OK(cudaMemcpy(out, a->dout, (nq + per_tok) * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t i = nq; i < nq + per_tok; i++)
        ck_assert_msg(out[i] == 0xffff, "kind %d wrote past its %d tokens (element %zu)", (int)kind,
                      c->n, i - nq);
    return out;
}

/* x rounded to BF16 (nearest, ties to even), as __float2bfloat16_rn; x finite. */
static double round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

/* out[t][h][:] in float64: softmax over the positions token t sees, of V; with `bf16`, of q,
 * K and V rounded to BF16 first. */
static void reference(const attn_data *a, int bf16, double *ref)
{
    const attn_case *c = &a->c;
    const int hd = c->hd, group = c->n_heads / c->n_kv_heads;
    const size_t row = (size_t)c->n_kv_heads * hd;
    double *s = malloc((size_t)a->ctx * sizeof(double));
    ck_assert_ptr_nonnull(s);
    for (int t = 0; t < c->n; t++) {
        const int p = c->pos0 + t,
                  j0 = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
        for (int h = 0; h < c->n_heads; h++) {
            const float *qv = a->q + ((size_t)t * c->n_heads + h) * hd;
            const int kvh = h / group;
            double mx = -INFINITY, sum = 0.0;
            for (int j = j0; j <= p; j++) {
                const float *kv = a->k + (size_t)j * row + (size_t)kvh * hd;
                double d = 0.0;
                for (int i = 0; i < hd; i++)
                    d += bf16 ? round_bf16(qv[i]) * round_bf16(kv[i]) : (double)qv[i] * kv[i];
                s[j] = d / sqrt((double)hd);
                if (s[j] > mx) mx = s[j];
            }
            for (int j = j0; j <= p; j++) sum += (s[j] = exp(s[j] - mx));
            double *o = ref + ((size_t)t * c->n_heads + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0;
            for (int j = j0; j <= p; j++) {
                const float *vv = a->v + (size_t)j * row + (size_t)kvh * hd;
                for (int i = 0; i < hd; i++)
                    o[i] += s[j] / sum * (bf16 ? round_bf16(vv[i]) : vv[i]);
            }
        }
    }
    free(s);
}

/* The largest |got - ref| over the bound's allowance, failing at the first over it. */
static double check_against(const attn_case *c, const uint16_t *got, const double *ref,
                            double abs_bound, const char *what)
{
    const size_t nq = (size_t)c->n * c->n_heads * c->hd;
    double worst = 0.0;
    for (size_t i = 0; i < nq; i++) {
        const double g = df11_test_bf16_f32(got[i]), err = fabs(g - ref[i]);
        ck_assert_msg(err <= REL_BOUND * fabs(ref[i]) + abs_bound,
                      "%s: heads %d/%d head_dim %d, %d tokens at %d, window %d: token %zu head %zu "
                      "feature %zu: %g, reference %g",
                      what, c->n_heads, c->n_kv_heads, c->hd, c->n, c->pos0, c->window,
                      i / ((size_t)c->n_heads * c->hd), i / c->hd % c->n_heads, i % c->hd, g,
                      ref[i]);
        if (err > worst) worst = err;
    }
    return worst;
}

START_TEST(test_kernels_match_reference)
{
    const attn_case *c = &cases[_i];
    attn_data a;
    data_make(&a, c);
    const size_t nq = (size_t)c->n * c->n_heads * c->hd;
    double *ref = malloc(nq * sizeof(double)), *ref16 = malloc(nq * sizeof(double));
    ck_assert(ref && ref16);
    reference(&a, 0, ref);
    reference(&a, 1, ref16);
    uint16_t *naive = data_run(&a, DFL_ATTENTION_NAIVE);
    uint16_t *tiled = data_run(&a, DFL_ATTENTION_TILED);
    const double en = check_against(c, naive, ref, ABS_BOUND, "naive");
    const double et = check_against(c, tiled, ref, ABS_BOUND, "tiled");
    double em = -1.0, dm = -1.0, es = -1.0;
    const int split_takes = c->n <= DFL_ATTENTION_SPLIT_MAX_N &&
                            c->hd <= DFL_ATTENTION_SPLIT_MAX_HD &&
                            c->n_heads / c->n_kv_heads <= DFL_ATTENTION_SPLIT_MAX_GROUP;
    if (split_takes) {
        uint16_t *split = data_run(&a, DFL_ATTENTION_SPLIT);
        es = check_against(c, split, ref, ABS_BOUND, "split");
        free(split);
        /* AUTO runs split for every pass it takes */
        uint16_t *autok = data_run(&a, DFL_ATTENTION_AUTO);
        check_against(c, autok, ref, ABS_BOUND, "auto");
        free(autok);
    } else {
        char err[256];
        ck_assert_msg(dfl_gpu_attention(DFL_ATTENTION_SPLIT, a.dq, a.dk, a.dv, a.dout, c->n,
                                        c->pos0, c->n_heads, c->n_kv_heads, c->hd, c->window, NULL,
                                        err, sizeof err) == DF11_ERR_UNSUPPORTED,
                      "split took %d tokens, %d heads per kv head, head_dim %d", c->n,
                      c->n_heads / c->n_kv_heads, c->hd);
    }
    if (c->hd <= DFL_ATTENTION_MMA_MAX_HD) {
        uint16_t *mma = data_run(&a, DFL_ATTENTION_MMA);
        em = check_against(c, mma, ref16, MMA_ABS_BOUND, "mma");
        for (size_t i = 0; i < nq; i++) {
            double d = fabs(df11_test_bf16_f32(naive[i]) - df11_test_bf16_f32(mma[i]));
            if (d > dm) dm = d;
        }
        free(mma);
        /* AUTO runs mma wherever it can for the passes split does not take */
        if (!split_takes) {
            uint16_t *autok = data_run(&a, DFL_ATTENTION_AUTO);
            check_against(c, autok, ref16, MMA_ABS_BOUND, "auto");
            free(autok);
        }
    } else {
        char err[256];
        ck_assert_msg(dfl_gpu_attention(DFL_ATTENTION_MMA, a.dq, a.dk, a.dv, a.dout, c->n, c->pos0,
                                        c->n_heads, c->n_kv_heads, c->hd, c->window, NULL, err,
                                        sizeof err) == DF11_ERR_UNSUPPORTED,
                      "mma took head_dim %d", c->hd);
        uint16_t *autok = data_run(&a, DFL_ATTENTION_AUTO); /* split, tiled or naive: FP32 */
        check_against(c, autok, ref, ABS_BOUND, "auto");
        free(autok);
    }
    /* the kernels against each other (each is within its bound of the reference) */
    double dt = 0.0;
    for (size_t i = 0; i < nq; i++) {
        double d = fabs(df11_test_bf16_f32(naive[i]) - df11_test_bf16_f32(tiled[i]));
        if (d > dt) dt = d;
    }
    printf("attention %2d/%d heads, head_dim %3d, %3d tokens at %4d, window %3d: max error "
           "naive %.2e, tiled %.2e, mma %.2e (of BF16 inputs), split %.2e; max |naive - tiled| "
           "%.2e, |naive - mma| %.2e\n",
           c->n_heads, c->n_kv_heads, c->hd, c->n, c->pos0, c->window, en, et, em, es, dt, dm);
    free(naive);
    free(tiled);
    free(ref);
    free(ref16);
    data_free(&a);
}
END_TEST

/* Sizes no kernel can take are refused before any launch. */
START_TEST(test_rejects_bad_sizes)
{
    float *buf;
    CUDA_OK(cudaMalloc((void **)&buf, 1 << 16));
    uint16_t *out = (uint16_t *)buf;
    char err[256];
    static const struct {
        dfl_attention kind;
        int n, pos0, heads, kv_heads, hd, window;
        df11_status want;
    } bad[] = {
        { DFL_ATTENTION_TILED, 0, 0, 4, 2, 64, 0, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 1, -1, 4, 2, 64, 0, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 1, 0, 4, 3, 64, 0, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 1, 0, 4, 0, 64, 0, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 1, 0, 4, 2, 63, 0, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 1, 0, 4, 2, 64, -1, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 2, 0x7fffffff, 4, 2, 64, 0, DF11_ERR_INVALID_ARG },
        { (dfl_attention)5, 1, 0, 4, 2, 64, 0, DF11_ERR_INVALID_ARG },
        { (dfl_attention)-1, 1, 0, 4, 2, 64, 0, DF11_ERR_INVALID_ARG },
        { DFL_ATTENTION_TILED, 1, 0, 4, 2, DFL_ATTENTION_TILED_MAX_HD + 2, 0,
          DF11_ERR_UNSUPPORTED },
        { DFL_ATTENTION_MMA, 1, 0, 4, 2, DFL_ATTENTION_MMA_MAX_HD + 2, 0, DF11_ERR_UNSUPPORTED },
        { DFL_ATTENTION_SPLIT, DFL_ATTENTION_SPLIT_MAX_N + 1, 0, 4, 2, 64, 0,
          DF11_ERR_UNSUPPORTED },
        { DFL_ATTENTION_SPLIT, 1, 0, 4, 2, DFL_ATTENTION_SPLIT_MAX_HD + 2, 0,
          DF11_ERR_UNSUPPORTED },
        { DFL_ATTENTION_SPLIT, 1, 0, 2 * DFL_ATTENTION_SPLIT_MAX_GROUP, 1, 64, 0,
          DF11_ERR_UNSUPPORTED },
        /* the naive kernel's scores of 16 M positions cannot fit shared memory */
        { DFL_ATTENTION_NAIVE, 1, 1 << 24, 4, 2, 64, 0, DF11_ERR_UNSUPPORTED },
        { DFL_ATTENTION_NAIVE, 65536, 0, 4, 2, 64, 0, DF11_ERR_UNSUPPORTED }, /* a grid row each */
        { DFL_ATTENTION_AUTO, 1, 1 << 24, 4, 2, DFL_ATTENTION_TILED_MAX_HD + 2, 0,
          DF11_ERR_UNSUPPORTED },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        df11_status st =
            dfl_gpu_attention(bad[i].kind, buf, buf, buf, out, bad[i].n, bad[i].pos0, bad[i].heads,
                              bad[i].kv_heads, bad[i].hd, bad[i].window, NULL, err, sizeof err);
        ck_assert_msg(st == bad[i].want, "case %zu: %s (%s)", i, df11_strerror(st), err);
        ck_assert_msg(strstr(err, "attention"), "case %zu: message '%s'", i, err);
    }
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(buf);
}
END_TEST

/* DFL_ATTENTION_TIME=1: both kernels at Llama-3-8B's prefill of 4096 tokens, one layer. */
START_TEST(test_time_llama3_8b)
{
    const char *on = getenv("DFL_ATTENTION_TIME");
    if (!on || strcmp(on, "1") != 0) return;
    const attn_case c = { 32, 8, 128, 4096, 0, 0 };
    attn_data a;
    data_make(&a, &c);
    cudaEvent_t e0, e1;
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    const dfl_attention kinds[] = { DFL_ATTENTION_NAIVE, DFL_ATTENTION_TILED, DFL_ATTENTION_MMA };
    const char *names[] = { "naive", "tiled", "mma" };
    /* causal: n (n + 1) / 2 scores per head, 2 * hd flops each for QK^T and again for PV */
    const double flops = 4.0 * c.hd * c.n_heads * ((double)c.n * (c.n + 1) / 2);
    char err[256];
    for (int k = 0; k < 3; k++) {
        const int reps = 5;
        float ms = 0.0f;
        for (int r = 0; r <= reps; r++) { /* the first untimed */
            if (r == 1) CUDA_OK(cudaEventRecord(e0, 0));
            df11_status st =
                dfl_gpu_attention(kinds[k], a.dq, a.dk, a.dv, a.dout, c.n, c.pos0, c.n_heads,
                                  c.n_kv_heads, c.hd, c.window, NULL, err, sizeof err);
            ck_assert_msg(st == DF11_OK, "%s: %s", names[k], err);
        }
        CUDA_OK(cudaEventRecord(e1, 0));
        CUDA_OK(cudaEventSynchronize(e1));
        CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
        ms /= reps;
        printf("attention %s, 4096 tokens, 32/8 heads of 128: %.3f ms per layer, %.1f ms per "
               "32 layers, %.1f TFLOP/s\n",
               names[k], ms, 32 * ms, flops / (ms * 1e-3) / 1e12);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    data_free(&a);
}
END_TEST

int main(void)
{
    if (!engine_gpu_ready()) return 77;
    rng = df11_test_seed();
    Suite *s = suite_create("gpu_attention");
    /* Separate cases so that a sanitizer run can pick one (CK_RUN_CASE=kernels). */
    TCase *tk = tcase_create("kernels"), *tb = tcase_create("sizes"), *tt = tcase_create("time");
    tcase_set_timeout(tk, 600);
    tcase_set_timeout(tt, 600);
    tcase_add_loop_test(tk, test_kernels_match_reference, 0, (int)(sizeof cases / sizeof *cases));
    tcase_add_test(tb, test_rejects_bad_sizes);
    tcase_add_test(tt, test_time_llama3_8b);
    suite_add_tcase(s, tk);
    suite_add_tcase(s, tb);
    suite_add_tcase(s, tt);
    return df11_test_run(s);
}
