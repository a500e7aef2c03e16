/* The runtime on fixed-codec files (df11_test_fixed_codec(): codec 2 or 3): every block and
 * non-layer tensor served by df11_model_open is bit-identical to the BF16 source, with
 * groups that mix fixed, Huffman and raw tensors, under both non-layer policies; and the
 * real stories260K model the same way. Kept apart from tests/test_runtime.c so that its
 * model and options stay its own. tests/test_gpu_runtime_fixed.c includes this file with
 * RT_TEST_CUDA defined to run it on the CUDA backend (the GPU arena decode). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "df11/compress.h"
#include "df11/runtime.h"
#include "loader/safetensors.h"
#include "tests/backend_under_test.h"
#include "tests/testutil.h"

#define N_LAYERS 3
#define MAX_TENSORS 32

static df11_tensor_source src[MAX_TENSORS];
static size_t n_src;
static char model_path[512];

static void add(const char *name, df11_dtype dt, uint32_t ndim, uint64_t d0, uint64_t d1,
                uint64_t *rng)
{
    df11_tensor_source *s = &src[n_src++];
    s->name = strdup(name);
    s->dtype = dt;
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    uint64_t n = ndim == 2 ? d0 * d1 : d0;
    size_t es = df11_dtype_size(dt);
    void *data = malloc(n * es + 1);
    if (dt == DF11_DTYPE_BF16)
        df11_test_fill_weights(data, n, ndim == 2 ? d1 : n, rng);
    else
        for (size_t i = 0; i < n * es; i++) ((uint8_t *)data)[i] = (uint8_t)df11_test_rand(rng);
    s->data = data;
}

/* Odd shapes (partial strips and steps), a 1-D norm (Huffman) and a raw F32 tensor in
 * every block, non-layer embeddings and lm_head (fixed). */
static void make_model(void)
{
    if (n_src) return;
    uint64_t rng = df11_test_seed();
    char name[128];
    add("model.embed_tokens.weight", DF11_DTYPE_BF16, 2, 50, 72, &rng);
    for (int l = 0; l < N_LAYERS; l++) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", l);
        add(name, DF11_DTYPE_BF16, 2, 72, 72, &rng);
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        add(name, DF11_DTYPE_BF16, 1, 72, 0, &rng);
        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
        add(name, DF11_DTYPE_BF16, 2, 33, 200, &rng);
        snprintf(name, sizeof name, "model.layers.%d.scale", l);
        add(name, DF11_DTYPE_F32, 1, 7, 0, &rng);
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
        add(name, DF11_DTYPE_BF16, 2, 300, 1, &rng);
    }
    add("model.norm.weight", DF11_DTYPE_BF16, 1, 72, 0, &rng);
    add("lm_head.weight", DF11_DTYPE_BF16, 2, 96, 72, &rng);
    snprintf(model_path, sizeof model_path, "%s/rt-fixed.df11", df11_test_tmpdir());
    df11_compress_options co = { .lane_symbols = 64, .codec = df11_test_fixed_codec() };
    df11_status s = df11_compress_tensors(model_path, src, n_src, "{}", 2, &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
}

/* The tensor of `v` read back equals `want`. */
static void check_bytes(const df11_tensor_view *v, const df11_tensor_source *want)
{
    uint64_t n = df11_dtype_size(want->dtype);
    for (uint32_t d = 0; d < want->ndim; d++) n *= want->shape[d];
    ck_assert_uint_eq(v->nbytes, n);
    void *buf = malloc(n + 1);
    read_back(buf, v->data, n);
    ck_assert_msg(!memcmp(buf, want->data, n), "tensor %s differs", v->name);
    free(buf);
}

static const df11_tensor_source *find(const df11_tensor_source *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    ck_abort_msg("no source tensor %s", name);
    return NULL;
}

/* Every block twice over (so slots are reused) and every non-layer tensor. */
static void check_model(const char *path, const df11_tensor_source *t, size_t n,
                        df11_nonlayer_policy pol, int want_fixed)
{
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = RT_BACKEND;
    o.arena_slots = 2;
    o.n_threads = 2;
    o.nonlayer = pol;
    df11_model *m = NULL;
    df11_status s = df11_model_open(path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
    const df11_file *f = df11_model_file(m);
    uint32_t n_fixed = 0;
    for (uint32_t i = 0; i < df11_file_n_tensors(f); i++)
        n_fixed += df11_file_tensor(f, i)->codec == df11_test_fixed_codec();
    ck_assert_int_eq(n_fixed > 0, want_fixed);
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t b = 0; b < df11_model_n_blocks(m); b++) {
            df11_block_view bv;
            s = df11_block_acquire(m, b, NULL, &bv);
            ck_assert_msg(s == DF11_OK, "acquire %u: %s %s", b, df11_strerror(s),
                          df11_last_error_detail());
            for (uint32_t i = 0; i < bv.n_tensors; i++)
                check_bytes(&bv.tensors[i], find(t, n, bv.tensors[i].name));
            ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
        }
    for (size_t i = 0; i < n; i++) {
        uint32_t ti;
        ck_assert_int_eq(df11_file_find_tensor(f, t[i].name, &ti), DF11_OK);
        if (df11_file_group(f, df11_file_tensor(f, ti)->group)->layer >= 0) continue;
        df11_tensor_view v;
        s = df11_tensor_get(m, t[i].name, NULL, &v);
        ck_assert_msg(s == DF11_OK, "get %s: %s %s", t[i].name, df11_strerror(s),
                      df11_last_error_detail());
        check_bytes(&v, &t[i]);
        if (pol == DF11_NONLAYER_ARENA)
            ck_assert_int_eq(df11_tensor_release(m, t[i].name, NULL), DF11_OK);
    }
    df11_model_close(m);
}

START_TEST(test_fixed_model_resident)
{
    make_model();
    check_model(model_path, src, n_src, DF11_NONLAYER_RESIDENT, 1);
}
END_TEST

START_TEST(test_fixed_model_arena)
{
    make_model();
    check_model(model_path, src, n_src, DF11_NONLAYER_ARENA, 1);
}
END_TEST

/* stories260K, both codecs: the served blocks are the safetensors bytes. */
START_TEST(test_fixed_real_model)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    df11i_st_model *st;
    ck_assert_int_eq(df11i_st_open(dir, &st), DF11_OK);
    const df11_codec codecs[] = { df11_test_fixed_codec(), DF11_CODEC_EXP_HUFFMAN };
    for (int c = 0; c < 2; c++) {
        char path[600];
        snprintf(path, sizeof path, "%s/real-rt-%d.df11", df11_test_tmpdir(), c);
        df11_compress_options co = { .codec = codecs[c] };
        ck_assert_int_eq(df11_compress_path(dir, path, &co, NULL), DF11_OK);
        check_model(path, st->tensors, st->n_tensors, DF11_NONLAYER_RESIDENT, c == 0);
    }
    df11i_st_close(st);
}
END_TEST

int main(void)
{
    if (rt_skip_without_gpu()) return 77;
    Suite *s = suite_create("runtime_fixed");
    TCase *tc = tcase_create(RT_BACKEND == DF11_BACKEND_HOST ? "host" : "cuda");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fixed_model_resident);
    tcase_add_test(tc, test_fixed_model_arena);
    tcase_add_test(tc, test_fixed_real_model);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
