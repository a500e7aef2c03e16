/* The example engine's CUDA RMSNorm (examples/run/dfl_cuda.cu, through dfl_gpu_rmsnorm) on
 * random rows against a float64 reference, at every width its dispatch distinguishes: the
 * vector kernel with one, two, four and eight float4s a thread (dim up to 4096, 8192,
 * 16384, 32768; the families use 96 and Llama-3-8B 4096, so only this test runs the wider
 * ones), and the strided kernel for a dim that is not a multiple of 4, a row too wide for
 * the vector kernel and a misaligned x. With and without the residual `add`, which must
 * land in x exactly (one FP32 add, as the reference does it). The output row after the n
 * rows is poisoned and must stay so. Exits 77 without a GPU. */
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

typedef struct norm_case {
    int dim, n, x_offset; /* x_offset floats: a misaligned row start */
} norm_case;

static const norm_case cases[] = {
    { 96, 3, 0 },    /* the families: one float4 a thread, 24 threads */
    { 4096, 2, 0 },  /* Llama-3-8B: one float4 for each of 1024 threads */
    { 4100, 2, 0 },  /* 1025 float4s: two a thread */
    { 8192, 2, 0 },  /* Llama-3-70B */
    { 12288, 1, 0 }, /* three float4s a thread: the four-vector kernel, one idle slot */
    { 16384, 2, 0 }, /* four */
    { 20480, 1, 0 }, /* five: the eight-vector kernel */
    { 32768, 2, 0 }, /* eight, the widest row it takes */
    { 32772, 1, 0 }, /* one float4 too many: the strided kernel */
    { 4098, 2, 0 },  /* not a multiple of 4: the strided kernel */
    { 4096, 2, 1 },  /* x not 16-byte aligned: the strided kernel */
};

static uint64_t rng;

static float frand(float a)
{
    return (float)((double)(df11_test_rand(&rng) >> 11) / 9007199254740992.0 * 2.0 - 1.0) * a;
}

static void check_case(const norm_case *c, int with_add)
{
    const size_t n = (size_t)c->n, dim = (size_t)c->dim, len = n * dim;
    const float eps = 1e-5f;
    float *x = malloc(len * sizeof *x), *add = malloc(len * sizeof *add),
          *xs = malloc(len * sizeof *xs);
    uint16_t *w = df11_test_random_bf16(dim, &rng), *out = malloc((len + dim) * sizeof *out);
    ck_assert(x && add && xs && w && out);
    for (size_t i = 0; i < len; i++) x[i] = frand(2.0f), add[i] = frand(1.0f);
    float *dx = NULL, *dadd = NULL;
    uint16_t *dw = NULL, *dout = NULL;
    CUDA_OK(cudaMalloc((void **)&dx, (len + 4) * sizeof *dx));
    CUDA_OK(cudaMalloc((void **)&dadd, len * sizeof *dadd));
    CUDA_OK(cudaMalloc((void **)&dw, dim * sizeof *dw));
    CUDA_OK(cudaMalloc((void **)&dout, (len + dim) * sizeof *dout));
    float *dxr = dx + c->x_offset;
    CUDA_OK(cudaMemcpy(dxr, x, len * sizeof *x, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dadd, add, len * sizeof *add, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dw, w, dim * sizeof *w, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(dout, 0xff, (len + dim) * sizeof *dout));
    char err[256] = "";
    df11_status st = dfl_gpu_rmsnorm(dxr, with_add ? dadd : NULL, dw, dout, c->n, c->dim, eps, NULL,
                                     err, sizeof err);
    ck_assert_msg(st == DF11_OK, "dim %d: %s", c->dim, err);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(xs, dxr, len * sizeof *xs, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(out, dout, (len + dim) * sizeof *out, cudaMemcpyDeviceToHost));
    for (size_t r = 0; r < n; r++) {
        double ss = 0;
        for (size_t i = 0; i < dim; i++) {
            const float v = with_add ? x[r * dim + i] + add[r * dim + i] : x[r * dim + i];
            ck_assert_msg(memcmp(&xs[r * dim + i], &v, sizeof v) == 0,
                          "dim %d row %zu col %zu: x %.9g, expected %.9g", c->dim, r, i,
                          (double)xs[r * dim + i], (double)v);
            ss += (double)v * v;
        }
        const double scale = 1.0 / sqrt(ss / (double)dim + eps);
        for (size_t i = 0; i < dim; i++) {
            const double ref = (double)df11_test_bf16_f32(w[i]) * xs[r * dim + i] * scale;
            const double got = df11_test_bf16_f32(out[r * dim + i]);
            /* BF16 rounding of the result (2^-8 relative at most) and FP32's error in the
             * sum of squares and the products (a few 1e-6 relative) */
            ck_assert_msg(fabs(got - ref) <= fabs(ref) / 256 + 1e-6,
                          "dim %d row %zu col %zu: %.7g, reference %.7g", c->dim, r, i, got, ref);
        }
    }
    for (size_t i = 0; i < dim; i++)
        ck_assert_msg(out[len + i] == 0xffff, "dim %d: the row after the last was written", c->dim);
    cudaFree(dx);
    cudaFree(dadd);
    cudaFree(dw);
    cudaFree(dout);
    free(x);
    free(add);
    free(xs);
    free(w);
    free(out);
}

START_TEST(test_matches_reference)
{
    check_case(&cases[_i], 0);
    check_case(&cases[_i], 1);
}
END_TEST

START_TEST(test_rejects_bad_sizes)
{
    char err[256] = "";
    float *x = (float *)16;
    uint16_t *w = (uint16_t *)16, *out = (uint16_t *)16;
    ck_assert_int_eq(dfl_gpu_rmsnorm(x, NULL, w, out, 0, 64, 1e-5f, NULL, err, sizeof err),
                     DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(dfl_gpu_rmsnorm(x, NULL, w, out, 1, 0, 1e-5f, NULL, err, sizeof err),
                     DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(dfl_gpu_rmsnorm(NULL, NULL, w, out, 1, 64, 1e-5f, NULL, err, sizeof err),
                     DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(dfl_gpu_rmsnorm(x, NULL, w, out, 1, 64, NAN, NULL, err, sizeof err),
                     DF11_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "rmsnorm") != NULL, "message: %s", err);
}
END_TEST

int main(void)
{
    if (!engine_gpu_ready()) return 77;
    rng = df11_test_seed();
    Suite *s = suite_create("gpu_rmsnorm");
    TCase *tk = tcase_create("kernels"), *tb = tcase_create("sizes");
    tcase_add_loop_test(tk, test_matches_reference, 0, (int)(sizeof cases / sizeof *cases));
    tcase_add_test(tb, test_rejects_bad_sizes);
    suite_add_tcase(s, tk);
    suite_add_tcase(s, tb);
    return df11_test_run(s);
}
