/* The CUDA group decoder (kernels/decode.cu) against the CPU reference: random tensors of
 * awkward sizes and shapes, several code lengths and lane widths, all-equal exponents,
 * mixed groups with raw tensors, the real model, and corrupted streams; each by the plain
 * decoder and by the lean one (df11i_gpu_decode_lean) with several grid sizes. The output
 * buffer is poisoned before every run, and every byte of the decoded group (the zeroed
 * padding between tensors too) must match df11_group_decode_host. Exits 77 without a GPU. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/util.h"
#include "df11/compress.h"
#include "df11/file.h"
#include "kernels/decode.h"
#include "loader/container.h"
#include "tests/testutil.h"

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        ck_assert_msg(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                 \
    } while (0)

static uint64_t rng;

/* A group uploaded to the device, with its plan. */
typedef struct {
    const df11_group_info *gi;
    void *payload, *plan;
    size_t plan_size;
    void *d_payload, *d_plan, *d_out;
    uint32_t *d_err;
} gpu_group;

static void gpu_group_load(const df11_file *f, uint32_t g, gpu_group *gg)
{
    memset(gg, 0, sizeof *gg);
    gg->gi = df11_file_group(f, g);
    gg->payload = malloc(gg->gi->payload_size + 1);
    ck_assert_int_eq(df11_file_read_group(f, g, gg->payload), DF11_OK);
    df11_status st = df11i_gpu_plan_build(f, g, gg->payload, &gg->plan, &gg->plan_size);
    ck_assert_msg(st == DF11_OK, "plan: %s", df11_last_error_detail());
    size_t psize = df11i_align_up(gg->gi->payload_size, 16);
    CUDA_OK(cudaMalloc(&gg->d_payload, psize + 1));
    CUDA_OK(cudaMemset(gg->d_payload, 0, psize + 1));
    CUDA_OK(cudaMemcpy(gg->d_payload, gg->payload, gg->gi->payload_size, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMalloc(&gg->d_plan, gg->plan_size));
    CUDA_OK(cudaMemcpy(gg->d_plan, gg->plan, gg->plan_size, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMalloc(&gg->d_out, gg->gi->decoded_size + 1));
    CUDA_OK(cudaMalloc((void **)&gg->d_err, 4));
}

/* The decoders every group goes through: the plain one (-1), and the lean one with one CTA
 * per SM (0), a single CTA (every work item by the same two warps, tensors and decode tables
 * changing under it) and 7 CTAs (a stride that divides nothing). */
static const int decoders[] = { -1, 0, 1, 7 };
enum { N_DECODERS = sizeof decoders / sizeof *decoders };

/* Runs decoder `lean` (decoders[]) over a poisoned output; returns the error flag, fills
 * `out`. */
static uint32_t gpu_group_decode(gpu_group *gg, uint8_t *out, int lean)
{
    CUDA_OK(cudaMemset(gg->d_out, 0xff, gg->gi->decoded_size + 1));
    CUDA_OK(cudaMemset(gg->d_err, 0, 4));
    df11_status st = lean < 0 ? df11i_gpu_decode_checked(gg->plan, gg->d_plan, gg->d_payload,
                                                         gg->d_out, gg->d_err, NULL)
                              : df11i_gpu_decode_lean(gg->plan, gg->d_plan, gg->d_payload,
                                                      gg->d_out, (uint32_t)lean, gg->d_err, NULL);
    ck_assert_msg(st == DF11_OK, "decode: %s", df11_last_error_detail());
    CUDA_OK(cudaDeviceSynchronize());
    uint32_t err;
    CUDA_OK(cudaMemcpy(&err, gg->d_err, 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(out, gg->d_out, gg->gi->decoded_size + 1, cudaMemcpyDeviceToHost));
    ck_assert_uint_eq(out[gg->gi->decoded_size], 0xff); /* nothing written past the end */
    return err;
}

static void gpu_group_free(gpu_group *gg)
{
    cudaFree(gg->d_payload);
    cudaFree(gg->d_plan);
    cudaFree(gg->d_out);
    cudaFree(gg->d_err);
    free(gg->payload);
    free(gg->plan);
}

/* Every group of the file, by every decoder: GPU bytes == CPU bytes, and the error flag
 * stays clear. */
static void check_file(const char *path, const char *label)
{
    df11_file *f;
    ck_assert_msg(df11_file_open(path, &f) == DF11_OK, "%s", df11_last_error_detail());
    for (uint32_t g = 0; g < df11_file_n_groups(f); g++) {
        gpu_group gg;
        gpu_group_load(f, g, &gg);
        uint64_t size = gg.gi->decoded_size;
        uint8_t *ref = malloc(size + 1), *got = malloc(size + 1);
        memset(ref, 0x5a, size + 1);
        ck_assert_int_eq(df11_group_decode_host(f, g, gg.payload, ref, 1), DF11_OK);
        for (int d = 0; d < N_DECODERS; d++) {
            ck_assert_uint_eq(gpu_group_decode(&gg, got, decoders[d]), 0);
            for (uint64_t i = 0; i < size; i++)
                ck_assert_msg(got[i] == ref[i],
                              "%s group %s, decoder %d: byte %llu of %llu: %02x != %02x", label,
                              gg.gi->name, decoders[d], (unsigned long long)i,
                              (unsigned long long)size, got[i], ref[i]);
        }
        free(ref);
        free(got);
        gpu_group_free(&gg);
    }
    df11_file_close(f);
}

static const char *tmp_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", df11_test_tmpdir(), name);
    return path;
}

/* Compresses `n` tensors into one layer group and checks the GPU decode of the file;
 * also checks the decoded bytes against the sources. */
static void check_tensors(const df11_tensor_source *src, size_t n, uint32_t L, uint32_t S)
{
    char label[64];
    snprintf(label, sizeof label, "L=%u S=%u", L, S);
    const char *path = tmp_path("t.df11");
    df11_compress_options opt = { .n_threads = 2, .max_code_len = L, .lane_symbols = S };
    df11_status st = df11_compress_tensors(path, src, n, NULL, 0, &opt, NULL);
    ck_assert_msg(st == DF11_OK, "compress: %s", df11_last_error_detail());
    check_file(path, label);
}

static df11_tensor_source bf16_source(const char *name, const uint16_t *x, uint64_t n)
{
    df11_tensor_source s = { .name = name, .dtype = DF11_DTYPE_BF16, .ndim = 1, .data = x };
    s.shape[0] = n;
    return s;
}

START_TEST(test_sizes)
{
    static const uint64_t sizes[] = { 0, 1, 7, 8, 9, 255, 4097, 65535, 65536, 65537, 1000003 };
    static const struct {
        uint32_t L, S;
    } cfg[] = { { 12, 2048 }, { 12, 256 }, { 12, 8 }, { 15, 2048 }, { 15, 256 }, { 8, 64 } };
    uint16_t *x = malloc(2 * 1000003);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        df11_test_fill_weights(x, sizes[s], 4096, &rng);
        df11_tensor_source src = bf16_source("model.layers.0.w.weight", x, sizes[s]);
        for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
            if (cfg[c].L == 8) /* L = 8 must hold all 256 exponents: uniform random bits */
                for (uint64_t i = 0; i < sizes[s]; i++) x[i] = (uint16_t)df11_test_rand(&rng);
            if (sizes[s] == 1000003 && cfg[c].S == 8 && cfg[c].L == 15) continue;
            check_tensors(&src, 1, cfg[c].L, cfg[c].S);
        }
    }
    free(x);
}
END_TEST

START_TEST(test_shapes_and_groups)
{
    /* Odd shapes, a tiny and an empty tensor, an all-equal tensor and raw tensors between
     * the BF16 ones, so that every kind of padding and CTA boundary occurs in one group. */
    uint16_t *a = malloc(2 * 3 * 5 * 7001), *b = malloc(2 * 513 * 129), *c = malloc(2 * 77777);
    float *r = malloc(4 * 1001);
    df11_test_fill_weights(a, 3 * 5 * 7001, 7001, &rng);
    df11_test_fill_weights(b, 513 * 129, 129, &rng);
    for (int i = 0; i < 77777; i++) /* one exponent, random sign and mantissa */
        c[i] = (uint16_t)((df11_test_rand(&rng) & 0x807f) | 120 << 7);
    for (int i = 0; i < 1001; i++) r[i] = (float)df11_test_normal(&rng);
    uint8_t bytes[3] = { 1, 2, 3 };
    df11_tensor_source src[6] = {
        { .name = "model.layers.0.a.weight",
          .dtype = DF11_DTYPE_BF16,
          .ndim = 3,
          .shape = { 3, 5, 7001 },
          .data = a },
        { .name = "model.layers.0.norm",
          .dtype = DF11_DTYPE_F32,
          .ndim = 1,
          .shape = { 1001 },
          .data = r },
        { .name = "model.layers.0.b.weight",
          .dtype = DF11_DTYPE_BF16,
          .ndim = 2,
          .shape = { 513, 129 },
          .data = b },
        { .name = "model.layers.0.empty",
          .dtype = DF11_DTYPE_BF16,
          .ndim = 2,
          .shape = { 0, 4 },
          .data = a },
        { .name = "model.layers.0.c.weight",
          .dtype = DF11_DTYPE_BF16,
          .ndim = 1,
          .shape = { 77777 },
          .data = c },
        { .name = "model.layers.0.tiny",
          .dtype = DF11_DTYPE_U8,
          .ndim = 1,
          .shape = { 3 },
          .data = bytes },
    };
    check_tensors(src, 6, 12, 2048);
    check_tensors(src, 6, 15, 512);
    check_tensors(src, 6, 12, 8);
    /* A raw tensor larger than one raw CTA's slice. */
    float *big = malloc(4 * 100003);
    for (int i = 0; i < 100003; i++) big[i] = (float)i;
    df11_tensor_source s2[2] = { src[2],
                                 { .name = "model.layers.0.big",
                                   .dtype = DF11_DTYPE_F32,
                                   .ndim = 1,
                                   .shape = { 100003 },
                                   .data = big } };
    check_tensors(s2, 2, 12, 2048);
    free(a);
    free(b);
    free(c);
    free(r);
    free(big);
}
END_TEST

START_TEST(test_real_model)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    const char *path = tmp_path("stories.df11");
    df11_compress_options opt = { .n_threads = 2 };
    df11_status st = df11_compress_path(dir, path, &opt, NULL);
    ck_assert_msg(st == DF11_OK, "compress: %s", df11_last_error_detail());
    check_file(path, "stories260K");
}
END_TEST

/* Corrupt stream words: the GPU must raise its flag exactly when the CPU decoder reports
 * DF11_ERR_CORRUPT, and must stay inside its buffers (run under compute-sanitizer). */
START_TEST(test_corrupt)
{
    uint64_t n = 300001;
    uint16_t *x = malloc(2 * n);
    df11_test_fill_weights(x, n, 1000, &rng);
    df11_tensor_source src = bf16_source("model.layers.0.w.weight", x, n);
    const char *path = tmp_path("c.df11");
    df11_compress_options opt = { .n_threads = 2, .max_code_len = 12, .lane_symbols = 256 };
    ck_assert_int_eq(df11_compress_tensors(path, &src, 1, NULL, 0, &opt, NULL), DF11_OK);
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
    gpu_group gg;
    gpu_group_load(f, 0, &gg);
    const df11i_tensor_layout *lay = df11i_file_tensor_layout(f, 0);
    uint8_t *clean = malloc(gg.gi->payload_size), *out = malloc(gg.gi->decoded_size + 1);
    uint16_t *ref = malloc(2 * n);
    memcpy(clean, gg.payload, gg.gi->payload_size);
    int flagged = 0;
    for (int trial = 0; trial < 40; trial++) {
        memcpy(gg.payload, clean, gg.gi->payload_size);
        uint8_t *stream = (uint8_t *)gg.payload + lay->stream_offset;
        for (int k = 0; k < 1 + trial % 3; k++) {
            uint64_t w = df11_test_rand(&rng) % ((lay->stream_size - 8) / 4);
            uint32_t v = df11i_ld32(stream + 4 * w);
            v ^= trial % 2 ? (uint32_t)df11_test_rand(&rng) : 1u << (df11_test_rand(&rng) % 32);
            df11i_st32(stream + 4 * w, v);
        }
        CUDA_OK(cudaMemcpy(gg.d_payload, gg.payload, gg.gi->payload_size, cudaMemcpyHostToDevice));
        df11i_coded coded;
        ck_assert_int_eq(df11i_file_tensor_coded(f, 0, gg.payload, &coded), DF11_OK);
        df11_status cpu = df11i_decode_host(&coded, ref, 1);
        uint32_t gpu = 0;
        for (int d = 0; d < N_DECODERS; d++) {
            gpu = gpu_group_decode(&gg, out, decoders[d]);
            ck_assert_msg((cpu == DF11_ERR_CORRUPT) == (gpu != 0),
                          "trial %d, decoder %d: CPU says %d, GPU flag %u", trial, decoders[d], cpu,
                          gpu);
            if (cpu == DF11_OK) ck_assert(memcmp(out, ref, 2 * n) == 0);
        }
        flagged += gpu != 0;
    }
    ck_assert_int_gt(flagged, 5); /* some flips re-synchronize: undetectable by both */
    free(clean);
    free(out);
    free(ref);
    free(x);
    gpu_group_free(&gg);
    df11_file_close(f);
}
END_TEST

/* Weights of a fixed-code test tensor: trained-like (escapes 2-3%), every exponent
 * (uniform bits: nearly every weight an escape, more than 8 a lane in a step), or
 * trained-like with a quarter of the exponents random (escape-heavy, uneven over lanes). */
enum { FIX_TRAINED, FIX_ALL_EXPONENTS, FIX_ESCAPE_HEAVY };
static uint16_t *fixed_weights(uint64_t rows, uint64_t cols, int kind)
{
    uint64_t ne = rows * cols;
    uint16_t *w = malloc(2 * ne + 2);
    if (kind == FIX_ALL_EXPONENTS)
        for (uint64_t k = 0; k < ne; k++) w[k] = (uint16_t)df11_test_rand(&rng);
    else
        df11_test_fill_weights(w, ne, cols, &rng);
    if (kind == FIX_ESCAPE_HEAVY)
        for (uint64_t k = 0; k < ne; k++)
            if (df11_test_rand(&rng) % 4 == 0)
                w[k] = (uint16_t)((w[k] & 0x807f) | (df11_test_rand(&rng) & 0xff) << 7);
    return w;
}

/* Fixed-code tensors (codec 2) of awkward shapes (partial strips, steps and tiles of 1-4
 * steps, long rows, one column, columns that are and are not multiples of 8: the kernel's
 * 16-byte and 2-byte stores), every exponent and escape-heavy ones, in groups that mix them
 * with Huffman and raw tensors, and a group of 18 fixed tensors (more than one launch
 * takes); the real model with --codec fixed. Poisoned output, every byte against the CPU
 * decoder. A payload whose codes disagree with its exception offsets is refused by the
 * plan builder, before any launch. */
START_TEST(test_fixed)
{
    static const struct {
        uint64_t rows, cols;
        int kind;
    } shapes[] = { { 1, 1, 0 },     { 16, 64, 0 },    { 17, 65, 0 },     { 13, 7, 0 },
                   { 77, 300, 0 },  { 256, 4100, 0 }, { 3, 70001, 0 },   { 300, 1, 0 },
                   { 40, 520, 1 },  { 33, 257, 1 },   { 1040, 1032, 0 }, { 100, 4096, 2 },
                   { 24, 2056, 1 }, { 37, 136, 2 },   { 20, 448, 0 },    { 18, 384, 2 },
                   { 200, 1000, 2 } };
    enum { N_SHAPES = sizeof shapes / sizeof *shapes, N_MANY = 18, N_MAX = 3 * N_SHAPES + N_MANY };
    df11_tensor_source src[N_MAX];
    char names[N_MAX][64];
    void *bufs[N_MAX];
    size_t n = 0;
    static float f32[5] = { 1.5f, -2.0f, 0.0f, 3.25f, 1e30f };
    for (size_t i = 0; i < N_SHAPES; i++) {
        uint16_t *w = fixed_weights(shapes[i].rows, shapes[i].cols, shapes[i].kind);
        int layer = (int)(i / 3); /* groups of three shapes, plus a norm and a raw tensor */
        snprintf(names[n], sizeof names[n], "model.layers.%d.m%zu.weight", layer, i);
        src[n] = (df11_tensor_source){ .name = names[n],
                                       .dtype = DF11_DTYPE_BF16,
                                       .ndim = 2,
                                       .shape = { shapes[i].rows, shapes[i].cols },
                                       .data = w };
        bufs[n++] = w;
        if (i % 3 == 0) {
            uint16_t *v = malloc(2 * 333);
            df11_test_fill_weights(v, 333, 333, &rng);
            snprintf(names[n], sizeof names[n], "model.layers.%d.norm.weight", layer);
            src[n] = bf16_source(names[n], v, 333);
            bufs[n++] = v;
            snprintf(names[n], sizeof names[n], "model.layers.%d.scale", layer);
            src[n] = (df11_tensor_source){
                .name = names[n], .dtype = DF11_DTYPE_F32, .ndim = 1, .shape = { 5 }, .data = f32
            };
            bufs[n++] = NULL;
        }
    }
    for (int k = 0; k < N_MANY; k++) { /* one layer of 18 */
        uint64_t rows = 3 + 5 * (uint64_t)k,
                 cols = k % 3 ? 40 + 24 * (uint64_t)k : 61 + 8 * (uint64_t)k;
        uint16_t *w = fixed_weights(rows, cols, k % 3);
        /* the layer after the shapes' (a file's layers run 0..L-1 without gaps) */
        snprintf(names[n], sizeof names[n], "model.layers.%d.x%d.weight", (int)((N_SHAPES + 2) / 3),
                 k);
        src[n] = (df11_tensor_source){ .name = names[n],
                                       .dtype = DF11_DTYPE_BF16,
                                       .ndim = 2,
                                       .shape = { rows, cols },
                                       .data = w };
        bufs[n++] = w;
    }
    char path[512]; /* tmp_path's buffer is reused below */
    snprintf(path, sizeof path, "%s", tmp_path("fixed.df11"));
    df11_compress_options opt = { .n_threads = 2,
                                  .lane_symbols = 64,
                                  .codec = df11_test_fixed_codec() };
    df11_status st = df11_compress_tensors(path, src, n, NULL, 0, &opt, NULL);
    ck_assert_msg(st == DF11_OK, "compress: %s", df11_last_error_detail());
    check_file(path, "fixed");

    const char *dir = df11_test_model_dir();
    if (dir) {
        const char *mpath = tmp_path("stories-fixed.df11");
        ck_assert_int_eq(df11_compress_path(dir, mpath, &opt, NULL), DF11_OK);
        check_file(mpath, "stories260K fixed");
    }

    /* one escape code too many in tile 0 (codec 3: tile 0's list said to end past the
     * tensor's): the plan builder refuses the payload */
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, "model.layers.0.m0.weight", &t), DF11_OK);
    ck_assert_int_eq(df11_file_tensor(f, t)->codec, df11_test_fixed_codec());
    const df11_group_info *gi = df11_file_group(f, df11_file_tensor(f, t)->group);
    uint8_t *payload = malloc(gi->payload_size);
    ck_assert_int_eq(df11_file_read_group(f, df11_file_tensor(f, t)->group, payload), DF11_OK);
    const df11i_tensor_layout *lo = df11i_file_tensor_layout(f, t);
    uint8_t *code0 = payload + lo->stream_offset;
    if (df11_test_fixed_codec() == DF11_CODEC_EXP_FIXED)
        *code0 = (uint8_t)((*code0 & 7) == 7 ? *code0 & ~7u : *code0 | 7u);
    else
        df11i_st32(payload + lo->chunks_offset + 4, (uint32_t)lo->n_exc + 1);
    void *blob = NULL;
    size_t blob_size = 0;
    ck_assert_int_eq(
        df11i_gpu_plan_build(f, df11_file_tensor(f, t)->group, payload, &blob, &blob_size),
        DF11_ERR_CORRUPT);
    ck_assert_ptr_null(blob);
    free(payload);
    df11_file_close(f);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
}
END_TEST

int main(void)
{
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("skipping: no CUDA device\n");
        return 77;
    }
    /* Check forks a child per test by default, and CUDA does not survive a fork after
     * cudaGetDeviceCount initialized it. */
    setenv("CK_FORK", "no", 1);
    uint64_t seed = df11_test_seed();
    rng = seed;
    Suite *s = suite_create("gpu_decode");
    /* Separate cases so that a sanitizer run can pick one (CK_RUN_CASE=groups). */
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = { { "sizes", test_sizes },
                  { "groups", test_shapes_and_groups },
                  { "model", test_real_model },
                  { "corrupt", test_corrupt },
                  { "fixed", test_fixed } };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return df11_test_run(s);
}
