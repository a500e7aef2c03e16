/* The runtime on the host backend: open (df11 and BF16), the block scheduler (the lean
 * decoder option and df11_block_prefetch_after too), tensor
 * lookup, the provider, stats, every error path, df11-memstat over a live model, blocks
 * streamed from pinned memory and from the file (tiers), models of a range of blocks, and by
 * themselves the payload reader (loader/reader.h) and the host backend's streams and
 * events.
 * tests/test_gpu_runtime.c includes this file with RT_TEST_CUDA defined to run the same
 * scenarios on the CUDA backend. */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec/fixed.h"
#include "common/clock.h"
#include "common/util.h"
#include "df11/compress.h"
#include "df11/runtime.h"
#include "kernels/matmul.h" /* DF11_FUSED_MAX_BATCH */
#include "loader/container.h"
#include "loader/reader.h"
#include "pool/pool.h"
#include "runtime/backend.h"
#include "runtime/memstat.h"
#include "tests/backend_under_test.h"
#include "tests/fuzz/df11_image.h"
#include "tests/testutil.h"
#include "writer/safetensors_write.h"

/* --- a small Llama-shaped model --- */

#define N_LAYERS 5
#define D 64
#define V 96
#define LAYER_TENSORS 5

typedef struct test_model {
    df11_tensor_source *t;
    size_t n;
    char path[512], st_path[512];
} test_model;

static test_model tm;

static void add_tensor(const char *name, df11_dtype dt, uint32_t ndim, uint64_t d0, uint64_t d1,
                       uint64_t *rng)
{
    df11_tensor_source *s = &tm.t[tm.n++];
    s->name = strdup(name);
    s->dtype = dt;
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    uint64_t n = ndim == 1 ? d0 : d0 * d1;
    void *data = malloc(n * df11_dtype_size(dt));
    if (dt == DF11_DTYPE_BF16) {
        df11_test_fill_weights(data, n, ndim == 1 ? n : d1, rng);
    } else {
        float *f = data;
        for (uint64_t i = 0; i < n; i++) f[i] = (float)df11_test_normal(rng);
    }
    s->data = data;
}

static const char *CONFIG = "{\"model_type\":\"llama\",\"num_hidden_layers\":5}";

static void make_model(void)
{
    if (tm.n) return;
    uint64_t rng = df11_test_seed();
    tm.t = calloc(8 + N_LAYERS * LAYER_TENSORS, sizeof *tm.t);
    add_tensor("model.embed_tokens.weight", DF11_DTYPE_BF16, 2, V, D, &rng);
    char name[128];
    for (int l = 0; l < N_LAYERS; l++) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", l);
        add_tensor(name, DF11_DTYPE_BF16, 2, D, D, &rng);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.weight", l);
        add_tensor(name, DF11_DTYPE_BF16, 2, D / 2, D, &rng);
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate_proj.weight", l);
        add_tensor(name, DF11_DTYPE_BF16, 2, 3 * D, D, &rng);
        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
        add_tensor(name, DF11_DTYPE_BF16, 2, D, 3 * D, &rng);
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        add_tensor(name, DF11_DTYPE_BF16, 1, D, 0, &rng);
    }
    add_tensor("model.norm.weight", DF11_DTYPE_F32, 1, D, 0, &rng);
    add_tensor("lm_head.weight", DF11_DTYPE_BF16, 2, V, D, &rng);
    snprintf(tm.path, sizeof tm.path, "%s/rt.df11", df11_test_tmpdir());
    snprintf(tm.st_path, sizeof tm.st_path, "%s/rt.safetensors", df11_test_tmpdir());
    df11_compress_options co = { 0 };
    co.lane_symbols = 64; /* several chunks per tensor even at this size */
    df11_status s = df11_compress_tensors(tm.path, tm.t, tm.n, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    s = df11i_st_write(tm.st_path, tm.t, tm.n, NULL);
    ck_assert_msg(s == DF11_OK, "st_write: %s %s", df11_strerror(s), df11_last_error_detail());
}

static const df11_tensor_source *source(const char *name)
{
    for (size_t i = 0; i < tm.n; i++)
        if (!strcmp(tm.t[i].name, name)) return &tm.t[i];
    return NULL;
}

static void check_view(const df11_tensor_view *v)
{
    const df11_tensor_source *s = source(v->name);
    ck_assert_msg(s != NULL, "unknown tensor %s", v->name);
    ck_assert_int_eq(v->dtype, s->dtype);
    ck_assert_uint_eq(v->ndim, s->ndim);
    ck_assert_ptr_nonnull(v->data);
    void *buf = malloc(v->nbytes);
    read_back(buf, v->data, v->nbytes);
    ck_assert_msg(!memcmp(buf, s->data, v->nbytes), "tensor %s differs", v->name);
    free(buf);
}

static df11_model_options opts(uint32_t k)
{
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = RT_BACKEND;
    o.arena_slots = k;
    o.n_threads = 2;
    return o;
}

static df11_model *open_model(uint32_t k, df11_nonlayer_policy pol)
{
    make_model();
    df11_model_options o = opts(k);
    o.nonlayer = pol;
    df11_model *m = NULL;
    df11_status s = df11_model_open(tm.path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
    return m;
}

static void run_pass(df11_model *m, int check)
{
    for (uint32_t b = 0; b < df11_model_n_blocks(m); b++) {
        df11_block_view bv;
        df11_status s = df11_block_acquire(m, b, NULL, &bv);
        ck_assert_msg(s == DF11_OK, "acquire %u: %s %s", b, df11_strerror(s),
                      df11_last_error_detail());
        ck_assert_uint_eq(bv.block, b);
        ck_assert_uint_eq(bv.n_tensors, LAYER_TENSORS);
        for (uint32_t i = 0; i < bv.n_tensors && check; i++) {
            ck_assert_int_eq(bv.tensors[i].layer, (int)b);
            check_view(&bv.tensors[i]);
            df11_tensor_view tv;
            ck_assert_int_eq(df11_tensor_get(m, bv.tensors[i].name, NULL, &tv), DF11_OK);
            ck_assert_ptr_eq(tv.data, bv.tensors[i].data);
        }
        ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
    }
}

/* --- scenarios --- */

START_TEST(test_open_and_pass)
{
    df11_model *m = open_model(2, DF11_NONLAYER_RESIDENT);
    ck_assert_int_eq(df11_model_backend(m), RT_BACKEND);
    ck_assert_uint_eq(df11_model_n_blocks(m), N_LAYERS);
    ck_assert_ptr_nonnull(df11_model_file(m));
    size_t len;
    const char *cfg = df11_model_config(m, &len);
    ck_assert_uint_eq(len, strlen(CONFIG));
    ck_assert(!memcmp(cfg, CONFIG, len));
    run_pass(m, 1);
    run_pass(m, 1);
    const char *nonlayer[] = { "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight" };
    for (int i = 0; i < 3; i++) {
        df11_tensor_view v;
        ck_assert_int_eq(df11_tensor_get(m, nonlayer[i], NULL, &v), DF11_OK);
        ck_assert_int_eq(v.layer, -1);
        check_view(&v);
        ck_assert_int_eq(df11_tensor_release(m, nonlayer[i], NULL), DF11_OK);
    }
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_eq(st.size, sizeof st);
    ck_assert_uint_gt(st.compressed_bytes, 0);
    ck_assert_uint_gt(st.arena_bytes, 0);
    ck_assert_uint_gt(st.resident_bytes, 0);
    ck_assert_uint_eq(st.arena_slots, 2);
    /* Two passes over 5 blocks, plus the wrap-around prefetch of block 0 after each. */
    ck_assert_uint_ge(st.decodes, 2 * N_LAYERS + 3);
    ck_assert_uint_le(st.decodes, 2 * N_LAYERS + 3 + 1);
    ck_assert_uint_eq(st.acquires, 2 * N_LAYERS);
    ck_assert_uint_ge(st.pool_high_water, st.compressed_bytes + st.arena_bytes + st.resident_bytes);
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_more_slots_and_prefetch)
{
    df11_model *m = open_model(4, DF11_NONLAYER_RESIDENT);
    ck_assert_int_eq(df11_block_prefetch(m, 3), DF11_OK);
    ck_assert_int_eq(df11_block_prefetch(m, 3), DF11_OK); /* already there: nothing to do */
    ck_assert_int_eq(df11_block_prefetch(m, N_LAYERS), DF11_ERR_NOT_FOUND);
    run_pass(m, 1);
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    ck_assert_uint_eq(st.arena_slots, 4);
    /* Hold three blocks at once: allowed with four slots. */
    df11_block_view a, b, c;
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, &a), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 2, NULL, &b), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 4, NULL, &c), DF11_OK);
    for (uint32_t i = 0; i < LAYER_TENSORS; i++) {
        check_view(&a.tensors[i]);
        check_view(&b.tensors[i]);
        check_view(&c.tensors[i]);
    }
    ck_assert_int_eq(df11_block_release(m, 2, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(m, 4, NULL), DF11_OK);
    df11_model_close(m);
}
END_TEST

START_TEST(test_prefetch_off)
{
    /* prefetch_blocks = 0: every decode is a demand; one per acquire of a block not cached. */
    make_model();
    df11_model_options o = opts(2);
    o.prefetch_blocks = 0;
    df11_model *m;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    uint64_t at_open = st.decodes; /* the resident non-layer groups */
    ck_assert_uint_eq(at_open, 3);
    run_pass(m, 1);
    df11_model_stats_get(m, &st);
    ck_assert_uint_eq(st.decodes - at_open, N_LAYERS);
    ck_assert_int_eq(st.slot_block[0] >= 0 && st.slot_block[1] >= 0, 1);
    ck_assert_int_eq(df11_block_acquire(m, N_LAYERS - 1, NULL, NULL), DF11_OK); /* cached */
    df11_model_stats_get(m, &st);
    ck_assert_uint_eq(st.decodes - at_open, N_LAYERS);
    ck_assert_int_eq(df11_block_release(m, N_LAYERS - 1, NULL), DF11_OK);
    df11_model_close(m);
}
END_TEST

START_TEST(test_lean_and_prefetch_after)
{
    /* options.decode_lean (on CUDA the lean persistent decoder, one CTA per SM or 1 or 3 of
     * them; the host decodes as always): every byte served as before. With prefetch_blocks
     * = 0, df11_block_prefetch_after is the only prefetch: each block decoded once a pass,
     * acquire finds it; a second call for a decoded block enqueues nothing. */
    make_model();
    static const uint32_t ctas[] = { 0, 1, 3 };
    for (size_t i = 0; i < sizeof ctas / sizeof *ctas; i++) {
        df11_model_options o = opts(2);
        o.decode_lean = 1;
        o.decode_lean_ctas = ctas[i];
        o.prefetch_blocks = 0;
        df11_model *m;
        ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
        df11_model_stats st;
        df11_model_stats_get(m, &st);
        const uint64_t at_open = st.decodes;
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t b = 0; b < N_LAYERS; b++) {
                df11_block_view bv;
                ck_assert_int_eq(df11_block_acquire(m, b, NULL, &bv), DF11_OK);
                ck_assert_int_eq(df11_block_prefetch_after(m, (b + 1) % N_LAYERS, NULL), DF11_OK);
                for (uint32_t t = 0; t < bv.n_tensors; t++) check_view(&bv.tensors[t]);
                ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
            }
        df11_model_stats_get(m, &st);
        /* every block a pass, and block 0 again behind each pass's last (cached for pass 2) */
        ck_assert_uint_eq(st.decodes - at_open, 2 * N_LAYERS + 1);
        ck_assert_int_eq(df11_block_prefetch_after(m, 0, NULL), DF11_OK); /* still cached */
        df11_model_stats_get(m, &st);
        ck_assert_uint_eq(st.decodes - at_open, 2 * N_LAYERS + 1);
        ck_assert_int_eq(df11_block_prefetch_after(m, N_LAYERS, NULL), DF11_ERR_NOT_FOUND);
        ck_assert_int_eq(df11_block_prefetch_after(NULL, 0, NULL), DF11_ERR_INVALID_ARG);
        df11_model_close(m);
    }
    df11_model_options o = opts(2);
    o.decode_lean = 1;
    o.decode_lean_ctas = DF11_MAX_LEAN_CTAS + 1;
    df11_model *m = (df11_model *)&o;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_null(m);
    ck_assert(strstr(df11_last_error_detail(), "decode_lean_ctas") != NULL);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_random_schedule)
{
    /* Random acquire/release/prefetch against the decoded contents, with up to K-1 blocks
     * held, to shake the slot choice and the side stream's ordering. */
    df11_model *m = open_model(3, DF11_NONLAYER_ARENA);
    uint64_t rng = df11_test_seed() ^ 0x77;
    int held[N_LAYERS] = { 0 };
    int n_held = 0;
    for (int it = 0; it < 300; it++) {
        uint32_t b = (uint32_t)(df11_test_rand(&rng) % N_LAYERS);
        uint64_t op = df11_test_rand(&rng) % 4;
        if (op == 0) {
            df11_status s = df11_block_prefetch(m, b);
            ck_assert(s == DF11_OK || s == DF11_ERR_BUSY);
        } else if (held[b]) {
            ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
            held[b] = 0;
            n_held--;
        } else {
            df11_block_view bv;
            df11_status s = df11_block_acquire(m, b, NULL, &bv);
            if (n_held == 3) {
                ck_assert_int_eq(s, DF11_ERR_BUSY);
                continue;
            }
            ck_assert_msg(s == DF11_OK, "acquire %u with %d held: %s %s", b, n_held,
                          df11_strerror(s), df11_last_error_detail());
            for (uint32_t i = 0; i < bv.n_tensors; i++) check_view(&bv.tensors[i]);
            held[b] = 1;
            n_held++;
        }
    }
    for (uint32_t b = 0; b < N_LAYERS; b++)
        if (held[b]) ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
    df11_model_close(m);
}
END_TEST

START_TEST(test_nonlayer_arena)
{
    df11_model *m = open_model(2, DF11_NONLAYER_ARENA);
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    ck_assert_uint_eq(st.resident_bytes, 0);
    df11_tensor_view e, e2, h;
    ck_assert_int_eq(df11_tensor_get(m, "model.embed_tokens.weight", NULL, &e), DF11_OK);
    check_view(&e);
    ck_assert_int_eq(df11_tensor_get(m, "model.embed_tokens.weight", NULL, &e2), DF11_OK);
    ck_assert_ptr_eq(e.data, e2.data);
    ck_assert_int_eq(df11_tensor_get(m, "lm_head.weight", NULL, &h), DF11_OK);
    check_view(&h);
    /* Both slots are held by non-layer tensors now. */
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_ERR_BUSY);
    ck_assert_int_eq(df11_tensor_release(m, "model.embed_tokens.weight", NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_ERR_BUSY); /* one ref left */
    ck_assert_int_eq(df11_tensor_release(m, "model.embed_tokens.weight", NULL), DF11_OK);
    ck_assert_int_eq(df11_tensor_release(m, "model.embed_tokens.weight", NULL), DF11_ERR_STATE);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    ck_assert_int_eq(df11_tensor_release(m, "lm_head.weight", NULL), DF11_OK);
    df11_tensor_view n;
    ck_assert_int_eq(df11_tensor_get(m, "model.norm.weight", NULL, &n), DF11_OK);
    check_view(&n);
    ck_assert_int_eq(df11_tensor_release(m, "model.norm.weight", NULL), DF11_OK);
    run_pass(m, 1);
    df11_model_close(m);
}
END_TEST

START_TEST(test_errors_names)
{
    df11_model *m = open_model(2, DF11_NONLAYER_RESIDENT);
    df11_tensor_view v;
    ck_assert_int_eq(df11_block_acquire(m, N_LAYERS, NULL, NULL), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_block_release(m, 99, NULL), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_tensor_get(m, "model.layers.0.no_such.weight", NULL, &v),
                     DF11_ERR_NOT_FOUND);
    ck_assert(strstr(df11_last_error_detail(), "no_such") != NULL);
    ck_assert_int_eq(df11_tensor_release(m, "nope", NULL), DF11_ERR_NOT_FOUND);
    /* A layer tensor needs its block acquired. */
    ck_assert_int_eq(df11_tensor_get(m, "model.layers.1.mlp.gate_proj.weight", NULL, &v),
                     DF11_ERR_STATE);
    ck_assert_int_eq(df11_tensor_get(m, NULL, NULL, &v), DF11_ERR_INVALID_ARG);
    df11_model_close(m);
}
END_TEST

START_TEST(test_errors_release)
{
    df11_model *m = open_model(2, DF11_NONLAYER_RESIDENT);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_ERR_STATE);
    ck_assert(strstr(df11_last_error_detail(), "not acquired") != NULL);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_ERR_STATE);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_ERR_STATE); /* double release */
    /* Block 1 was prefetched but never acquired: releasing it is still an error. */
    ck_assert_int_eq(df11_block_release(m, 1, NULL), DF11_ERR_STATE);
    df11_model_close(m);
}
END_TEST

START_TEST(test_errors_busy)
{
    df11_model *m = open_model(2, DF11_NONLAYER_RESIDENT);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 1, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 2, NULL, NULL), DF11_ERR_BUSY); /* returns at once */
    ck_assert(strstr(df11_last_error_detail(), "release one") != NULL);
    ck_assert_int_eq(df11_block_prefetch(m, 3), DF11_ERR_BUSY);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    df11_block_view bv;
    ck_assert_int_eq(df11_block_acquire(m, 2, NULL, &bv), DF11_OK);
    for (uint32_t i = 0; i < bv.n_tensors; i++) check_view(&bv.tensors[i]);
    ck_assert_int_eq(df11_block_release(m, 1, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(m, 2, NULL), DF11_OK);
    df11_model_close(m);
}
END_TEST

START_TEST(test_errors_memory_limit)
{
    make_model();
    df11_model_options o = opts(2);
    o.memory_limit = 64 << 10;
    df11_model *m = (df11_model *)1;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_ERR_DEVICE_MEMORY);
    ck_assert_ptr_null(m);
    ck_assert(strstr(df11_last_error_detail(), "short by") != NULL);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
    ck_assert_int_eq(df11_model_open_bf16(tm.st_path, &o, &m), DF11_ERR_DEVICE_MEMORY);
    ck_assert(strstr(df11_last_error_detail(), "short by") != NULL);
    /* Just enough: what the failed open said it needed. */
    o.memory_limit = 64 << 20;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
    df11_model_close(m);
    o.arena_slots = 1;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_ERR_INVALID_ARG);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    ck_assert(a && b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) ck_assert_uint_eq(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

START_TEST(test_errors_corrupt)
{
    make_model();
    df11_file *f;
    ck_assert_int_eq(df11_file_open(tm.path, &f), DF11_OK);
    uint32_t g;
    ck_assert_int_eq(df11_file_layer_group(f, 2, &g), DF11_OK);
    uint64_t off = df11_file_group(f, g)->payload_offset + df11_file_group(f, g)->payload_size / 2;
    df11_file_close(f);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/corrupt.df11", df11_test_tmpdir());
    copy_file(tm.path, bad);
    FILE *fp = fopen(bad, "r+b");
    fseek(fp, (long)off, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, (long)off, SEEK_SET);
    fputc(c ^ 0x10, fp);
    fclose(fp);
    df11_model_options o = opts(2);
    df11_model *m = (df11_model *)1;
    ck_assert_int_eq(df11_model_open(bad, &o, &m), DF11_ERR_CHECKSUM);
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
    /* The process can open a good model afterwards. */
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
    run_pass(m, 1);
    df11_model_close(m);
}
END_TEST

/* A copy of the model in the temporary folder, named `name`, cut `cut` bytes short. */
static void truncated_copy(const char *name, off_t cut, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", df11_test_tmpdir(), name);
    copy_file(tm.path, path);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(truncate(path, sb.st_size - cut), 0);
}

START_TEST(test_errors_truncated)
{
    make_model();
    char bad[600];
    truncated_copy("truncated.df11", 5000, bad, sizeof bad);
    df11_model_options o = opts(2);
    df11_model *m = (df11_model *)1;
    df11_status s = df11_model_open(bad, &o, &m);
    ck_assert_msg(s == DF11_ERR_TRUNCATED, "open: %s %s", df11_strerror(s),
                  df11_last_error_detail());
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
    ck_assert_int_eq(df11_model_open("/nonexistent/x.df11", &o, &m), DF11_ERR_IO);
}
END_TEST

/* Everything is loaded at open: a file truncated and removed afterwards changes nothing,
 * in either backend's memory or in what later passes serve. */
START_TEST(test_file_gone_while_open)
{
    make_model();
    char copy[600];
    snprintf(copy, sizeof copy, "%s/goes-away.df11", df11_test_tmpdir());
    copy_file(tm.path, copy);
    df11_model_options o = opts(2);
    df11_model *m = NULL;
    ck_assert_int_eq(df11_model_open(copy, &o, &m), DF11_OK);
    ck_assert_int_eq(truncate(copy, 100), 0);
    ck_assert_int_eq(unlink(copy), 0);
    run_pass(m, 1);
    run_pass(m, 1);
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_two_models)
{
    /* Two models in one process are independent: own pools, slots, streams, stats. */
    df11_model *a = open_model(2, DF11_NONLAYER_RESIDENT);
    df11_model *b = open_model(3, DF11_NONLAYER_ARENA);
    df11_model_options o = opts(2);
    df11_model *c;
    ck_assert_int_eq(df11_model_open_bf16(tm.st_path, &o, &c), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(a, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(b, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(c, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(a, 1, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(a, 2, NULL, NULL), DF11_ERR_BUSY);
    ck_assert_int_eq(df11_block_acquire(b, 2, NULL, NULL), DF11_OK);
    df11_model_stats sa, sb;
    df11_model_stats_get(a, &sa);
    df11_model_stats_get(b, &sb);
    ck_assert_uint_eq(sa.arena_slots, 2);
    ck_assert_uint_eq(sb.arena_slots, 3);
    ck_assert_uint_eq(sa.bf16_bytes, sb.bf16_bytes);
    df11_model_close(a);
    ck_assert_int_eq(df11_block_release(c, 0, NULL), DF11_OK);
    run_pass(c, 1);
    ck_assert_int_eq(df11_block_release(b, 0, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(b, 2, NULL), DF11_OK);
    run_pass(b, 1);
    df11_model_close(b);
    df11_model_close(c);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_bf16_model)
{
    make_model();
    df11_model_options o = opts(2);
    df11_model *m;
    df11_status s = df11_model_open_bf16(tm.st_path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open_bf16: %s %s", df11_strerror(s), df11_last_error_detail());
    ck_assert_ptr_null(df11_model_file(m));
    ck_assert_uint_eq(df11_model_n_blocks(m), N_LAYERS);
    run_pass(m, 1);
    df11_tensor_view v;
    ck_assert_int_eq(df11_tensor_get(m, "model.norm.weight", NULL, &v), DF11_OK);
    check_view(&v);
    ck_assert_int_eq(df11_tensor_get(m, "model.layers.0.mlp.gate_proj.weight", NULL, &v),
                     DF11_ERR_STATE);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_ERR_STATE);
    ck_assert_int_eq(df11_block_acquire(m, N_LAYERS, NULL, NULL), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_tensor_get(m, "nope", NULL, &v), DF11_ERR_NOT_FOUND);
    /* All blocks at once: a BF16 model never runs out of slots. */
    for (uint32_t b = 0; b < N_LAYERS; b++)
        ck_assert_int_eq(df11_block_acquire(m, b, NULL, NULL), DF11_OK);
    for (uint32_t b = 0; b < N_LAYERS; b++)
        ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    ck_assert_uint_eq(st.compressed_bytes, 0);
    ck_assert_uint_ge(st.resident_bytes, st.bf16_bytes);
    df11_model_close(m);
}
END_TEST

START_TEST(test_provider)
{
    df11_model *m = open_model(2, DF11_NONLAYER_RESIDENT);
    df11_provider p;
    ck_assert_int_eq(df11_model_provider(m, &p), DF11_OK);
    ck_assert_uint_eq(p.size, sizeof p);
    ck_assert_uint_eq(p.n_blocks(p.ctx), N_LAYERS);
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t b = 0; b < p.n_blocks(p.ctx); b++) {
            df11_block_view bv;
            ck_assert_int_eq(p.block_acquire(p.ctx, b, NULL, &bv), DF11_OK);
            char name[128];
            snprintf(name, sizeof name, "model.layers.%u.mlp.down_proj.weight", b);
            df11_tensor_view v;
            ck_assert_int_eq(p.tensor_get(p.ctx, name, NULL, &v), DF11_OK);
            check_view(&v);
            ck_assert_int_eq(p.tensor_release(p.ctx, name, NULL), DF11_OK);
            ck_assert_int_eq(p.block_release(p.ctx, b, NULL), DF11_OK);
        }
    }
    ck_assert_int_eq(p.block_prefetch(p.ctx, 1), DF11_OK);
    df11_model_close(m);
}
END_TEST

/* --- df11-memstat over a live model --- */

static char *run_capture(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - 1 - len, p)) > 0) len += n;
    out[len] = 0;
    *status = pclose(p);
    return out;
}

START_TEST(test_memstat_live)
{
    char tool[1024];
    snprintf(tool, sizeof tool, "%s/df11-memstat", DF11_TOOLS_DIR);
    if (access(tool, X_OK) != 0) {
        fprintf(stderr, "df11-memstat not built at %s\n", tool);
        ck_abort_msg("df11-memstat missing");
    }
    make_model();
    df11_model_options o = opts(3);
    o.publish_stats = 1;
    df11_model *m, *m2;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
    ck_assert_int_eq(df11_model_open_bf16(tm.st_path, &o, &m2), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 1, NULL, NULL), DF11_OK);
    char cmd[2048], pid[32];
    snprintf(pid, sizeof pid, "\"pid\": %d", (int)getpid());
    int status;
    snprintf(cmd, sizeof cmd, "%s --json", tool);
    char *out = run_capture(cmd, &status);
    ck_assert_msg(status == 0, "%s: status %d\n%s", cmd, status, out);
    ck_assert_msg(strstr(out, pid) != NULL, "no %s in\n%s", pid, out);
    ck_assert_msg(strstr(out, "rt.df11") != NULL && strstr(out, "rt.safetensors") != NULL, "%s",
                  out);
    ck_assert_msg(strstr(out, "\"state\": \"acquired\", \"block\": 1") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s", tool);
    out = run_capture(cmd, &status);
    ck_assert_msg(status == 0 && strstr(out, "rt.df11"), "%s", out);
    free(out);
    /* The plan of a file. */
    snprintf(cmd, sizeof cmd, "%s '%s' --slots 3 --json", tool, tm.path);
    out = run_capture(cmd, &status);
    ck_assert_msg(status == 0 && strstr(out, "\"arena_slots\": 3"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s '%s'", tool, tm.path);
    out = run_capture(cmd, &status);
    ck_assert_msg(status == 0 && strstr(out, "arena"), "%s", out);
    free(out);
    /* Usage errors exit 2, a bad file 1. */
    snprintf(cmd, sizeof cmd, "%s --bogus 2>&1", tool);
    out = run_capture(cmd, &status);
    ck_assert_int_eq(WEXITSTATUS(status), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "%s /nonexistent.df11 2>&1", tool);
    out = run_capture(cmd, &status);
    ck_assert_int_eq(WEXITSTATUS(status), 1);
    ck_assert_msg(strstr(out, "df11-memstat: ") == out, "%s", out);
    free(out);
    df11_model_close(m2);
    df11_model_close(m);
    /* Pages go away at close. */
    snprintf(cmd, sizeof cmd, "%s --json", tool);
    out = run_capture(cmd, &status);
    ck_assert_msg(strstr(out, pid) == NULL, "%s", out);
    free(out);
}
END_TEST

/* --- stats pages: reading hostile ones, and models that cannot publish --- */

/* A valid page: 3 blocks, 5 groups, 2 slots (block 1 acquired, group 4 cached). */
static void good_page(df11i_memstat_page *p, int32_t pid)
{
    memset(p, 0, sizeof *p);
    p->magic = DF11_MEMSTAT_MAGIC;
    p->version = DF11_MEMSTAT_VERSION;
    p->size = sizeof *p;
    p->pid = pid;
    snprintf(p->path, sizeof p->path, "good-model.df11");
    snprintf(p->backend, sizeof p->backend, "host");
    p->n_blocks = 3;
    p->n_groups = 5;
    p->arena_slots = 2;
    p->open_ms = 1.5;
    for (int i = 0; i < DF11_MEMSTAT_SLOTS; i++) p->slot_block[i] = -1;
    p->slot_block[0] = 1;
    p->slot_state[0] = 2;
    p->slot_block[1] = 3 + 4;
    p->slot_state[1] = 1;
}

/* One way to spoil a page. */
typedef struct {
    const char *what;
    void (*spoil)(df11i_memstat_page *p);
} spoiler;

static void sp_magic(df11i_memstat_page *p) { p->magic ^= 1; }
static void sp_version(df11i_memstat_page *p) { p->version = 2; }
static void sp_size0(df11i_memstat_page *p) { p->size = 0; }
static void sp_size_small(df11i_memstat_page *p) { p->size = (uint32_t)DF11_MEMSTAT_MIN_SIZE - 1; }
static void sp_size_big(df11i_memstat_page *p) { p->size = 4097; }
static void sp_size_max(df11i_memstat_page *p) { p->size = UINT32_MAX; }
static void sp_path(df11i_memstat_page *p) { memset(p->path, 'A', sizeof p->path); }
static void sp_backend(df11i_memstat_page *p) { memset(p->backend, 'B', sizeof p->backend); }
static void sp_backend_ctl(df11i_memstat_page *p) { p->backend[1] = '\033'; }
static void sp_pid(df11i_memstat_page *p) { p->pid = -5; }
static void sp_bf16(df11i_memstat_page *p) { p->bf16_model = 7; }
static void sp_blocks(df11i_memstat_page *p) { p->n_blocks = 6; }
static void sp_groups(df11i_memstat_page *p)
{
    p->n_groups = UINT32_MAX;
    p->n_blocks = UINT32_MAX;
}
static void sp_slots(df11i_memstat_page *p) { p->arena_slots = DF11_MEMSTAT_SLOTS + 1; }
static void sp_state(df11i_memstat_page *p) { p->slot_state[1] = 3; }
static void sp_state_past(df11i_memstat_page *p)
{
    p->slot_state[5] = 1;
    p->slot_block[5] = 0;
}
static void sp_key_neg(df11i_memstat_page *p) { p->slot_block[0] = -1; }
static void sp_key_big(df11i_memstat_page *p) { p->slot_block[1] = 8; }
static void sp_nan(df11i_memstat_page *p) { p->decode_ms = NAN; }
static void sp_inf(df11i_memstat_page *p) { p->open_ms = -INFINITY; }
static void sp_seq_odd(df11i_memstat_page *p) { atomic_store(&p->seq, 41); }

static const spoiler spoilers[] = {
    { "magic", sp_magic },
    { "version", sp_version },
    { "size 0", sp_size0 },
    { "size small", sp_size_small },
    { "size past mapping", sp_size_big },
    { "size max", sp_size_max },
    { "path without NUL", sp_path },
    { "backend without NUL", sp_backend },
    { "backend control char", sp_backend_ctl },
    { "pid", sp_pid },
    { "bf16 flag", sp_bf16 },
    { "blocks > groups", sp_blocks },
    { "groups huge", sp_groups },
    { "slots > 64", sp_slots },
    { "slot state 3", sp_state },
    { "state past arena_slots", sp_state_past },
    { "negative key", sp_key_neg },
    { "key past groups", sp_key_big },
    { "NaN time", sp_nan },
    { "infinite time", sp_inf },
    { "seq stuck odd", sp_seq_odd },
};

START_TEST(test_memstat_page_read)
{
    /* the mapping is a 4 KiB page, like the real one */
    static _Alignas(4096) unsigned char map[4096];
    df11i_memstat_page *pg = (df11i_memstat_page *)map, out;
    char why[256];
    memset(map, 0xa5, sizeof map);
    good_page(pg, 1234);
    ck_assert_int_eq(df11i_memstat_page_read(map, sizeof map, &out, why, sizeof why), 0);
    ck_assert_str_eq(out.path, "good-model.df11");
    ck_assert_int_eq(out.pid, 1234);
    ck_assert_uint_eq(out.arena_slots, 2);
    /* a newer writer's longer page: the prefix we know */
    pg->size = sizeof map;
    ck_assert_int_eq(df11i_memstat_page_read(map, sizeof map, &out, why, sizeof why), 0);
    ck_assert_uint_eq(out.size, sizeof map);

    for (size_t i = 0; i < sizeof spoilers / sizeof *spoilers; i++) {
        good_page(pg, 1234);
        spoilers[i].spoil(pg);
        double t0 = df11i_now_ms();
        why[0] = '\0';
        int rc = df11i_memstat_page_read(map, sizeof map, &out, why, sizeof why);
        double took_ms = df11i_now_ms() - t0;
        ck_assert_msg(rc == -1, "%s: accepted", spoilers[i].what);
        ck_assert_msg(why[0] && !strchr(why, '\n'), "%s: reason '%s'", spoilers[i].what, why);
        ck_assert_msg(took_ms < 2000, "%s: took %.0f ms", spoilers[i].what, took_ms);
    }
    /* short mappings, no mapping, a NULL or tiny reason buffer */
    good_page(pg, 1234);
    size_t shorts[] = { 0, 8, 20, DF11_MEMSTAT_MIN_SIZE - 1, sizeof *pg - 1 };
    for (size_t i = 0; i < sizeof shorts / sizeof *shorts; i++)
        ck_assert_int_eq(df11i_memstat_page_read(map, shorts[i], &out, why, sizeof why), -1);
    ck_assert_int_eq(df11i_memstat_page_read(NULL, sizeof map, &out, why, sizeof why), -1);
    ck_assert_int_eq(df11i_memstat_page_read(map + 1, sizeof map - 1, &out, why, sizeof why), -1);
    pg->magic = 0;
    ck_assert_int_eq(df11i_memstat_page_read(map, sizeof map, &out, NULL, 0), -1);
    ck_assert_int_eq(df11i_memstat_page_read(map, sizeof map, &out, why, 4), -1);
    ck_assert_uint_eq(strlen(why), 3);

    /* random damage: never a crash or an over-read (ASan), and what passes is sane */
    uint64_t r = df11_test_seed();
    for (int k = 0; k < 20000; k++) {
        good_page(pg, 1234);
        int flips = 1 + (int)(df11_test_rand(&r) % 4);
        for (int f = 0; f < flips; f++)
            map[df11_test_rand(&r) % DF11_MEMSTAT_MIN_SIZE] ^=
                (uint8_t)(1u << (df11_test_rand(&r) % 8));
        atomic_store(&pg->seq, atomic_load(&pg->seq) & ~1u);
        if (df11i_memstat_page_read(map, sizeof map, &out, why, sizeof why) != 0) continue;
        ck_assert(memchr(out.path, 0, sizeof out.path) &&
                  memchr(out.backend, 0, sizeof out.backend));
        ck_assert_uint_le(out.arena_slots, DF11_MEMSTAT_SLOTS);
        ck_assert_uint_le(out.n_blocks, out.n_groups);
    }
}
END_TEST

/* Pages are for their owner only. */
START_TEST(test_stats_page_mode)
{
    make_model();
    df11_model_options o = opts(2);
    o.publish_stats = 1;
    df11_model *m;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_ptr_null(st.stats_page_error);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/df11-%d", (int)getpid());
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 0777, 0600);
    /* and the page reads back through the checks */
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    ck_assert_ptr_ne(p, MAP_FAILED);
    df11i_memstat_page out;
    char why[256] = "";
    ck_assert_msg(df11i_memstat_page_read(p, (size_t)sb.st_size, &out, why, sizeof why) == 0, "%s",
                  why);
    ck_assert_str_eq(out.path, tm.path);
    ck_assert_uint_eq(out.n_blocks, df11_model_n_blocks(m));
    munmap(p, (size_t)sb.st_size);
    df11_model_close(m);
}
END_TEST

/* A process whose page cannot be created (here: every name of its pid taken) still opens
 * its models; the stats say why there is no page. */
START_TEST(test_stats_page_unavailable)
{
    make_model();
    char names[64][64];
    int made[64] = { 0 };
    for (int n = 0; n < 64; n++) {
        if (n == 0)
            snprintf(names[n], sizeof names[n], "/df11-%d", (int)getpid());
        else
            snprintf(names[n], sizeof names[n], "/df11-%d-%d", (int)getpid(), n);
        int fd = shm_open(names[n], O_RDWR | O_CREAT | O_EXCL, 0600);
        made[n] = fd >= 0;
        if (fd >= 0) close(fd);
    }
    df11_model_options o = opts(2);
    o.publish_stats = 1;
    df11_model *m = NULL, *m2 = NULL;
    df11_status s1 = df11_model_open(tm.path, &o, &m);
    df11_status s2 = df11_model_open_bf16(tm.st_path, &o, &m2);
    df11_model_stats st1 = { 0 }, st2 = { 0 };
    if (m) df11_model_stats_get(m, &st1);
    if (m2) df11_model_stats_get(m2, &st2);
    char e1[200] = "", e2[200] = "";
    if (st1.stats_page_error) snprintf(e1, sizeof e1, "%s", st1.stats_page_error);
    if (st2.stats_page_error) snprintf(e2, sizeof e2, "%s", st2.stats_page_error);
    df11_status acq = m ? df11_block_acquire(m, 0, NULL, NULL) : DF11_ERR_STATE;
    if (acq == DF11_OK) df11_block_release(m, 0, NULL);
    df11_model_close(m);
    df11_model_close(m2);
    for (int n = 0; n < 64; n++)
        if (made[n]) shm_unlink(names[n]);
    ck_assert_msg(s1 == DF11_OK, "%s: %s", df11_strerror(s1), df11_last_error_detail());
    ck_assert_msg(s2 == DF11_OK, "%s: %s", df11_strerror(s2), df11_last_error_detail());
    ck_assert_int_eq(acq, DF11_OK);
    ck_assert_msg(strstr(e1, "taken") && strstr(e2, "taken"), "'%s' '%s'", e1, e2);
    /* without publish_stats there is nothing to report */
    o.publish_stats = 0;
    ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_OK);
    ck_assert_int_eq(df11_model_stats_get(m, &st1), DF11_OK);
    ck_assert_ptr_null(st1.stats_page_error);
    df11_model_close(m);
}
END_TEST

/* --- the reader by itself: every group once, in order, as df11_file_read_group reads it;
 * no buffer filled while the sink may still read it (as an asynchronous copy would), from
 * this call or an earlier one --- */

typedef struct reader_seen {
    const df11_file *f;
    uint32_t next; /* the group expected next */
    int reuses;
    int held[2]; /* consumed and not yet given back by reuse */
} reader_seen;

static df11_status seen_consume(void *ctx, uint32_t group, const void *payload, int buf)
{
    reader_seen *r = ctx;
    ck_assert_msg(!r->held[buf], "group %u was read into buffer %d while the sink held it", group,
                  buf);
    r->held[buf] = 1;
    ck_assert_uint_eq(group, r->next++);
    uint64_t n = df11_file_group(r->f, group)->payload_size;
    void *want = malloc(n ? n : 1);
    ck_assert_int_eq(df11_file_read_group(r->f, group, want), DF11_OK);
    ck_assert(!memcmp(payload, want, n));
    free(want);
    return DF11_OK;
}

static df11_status seen_reuse(void *ctx, int buf)
{
    reader_seen *r = ctx;
    r->reuses++;
    r->held[buf] = 0;
    return DF11_OK;
}

START_TEST(test_reader)
{
    make_model();
    df11_file *f;
    ck_assert_int_eq(df11_file_open(tm.path, &f), DF11_OK);
    uint32_t n = df11_file_n_groups(f);
    ck_assert_uint_ge(n, 3);
    uint64_t size = 0;
    for (uint32_t g = 0; g < n; g++) {
        uint64_t need = df11i_align_up(df11_file_group(f, g)->payload_size, DF11_READ_ALIGN);
        if (need > size) size = need;
    }
    void *bufs[2] = { aligned_alloc(DF11_READ_ALIGN, size), aligned_alloc(DF11_READ_ALIGN, size) };
    reader_seen seen = { .f = f };
    df11i_read_sink sink = { .consume = seen_consume, .reuse = seen_reuse, .ctx = &seen };
    ck_assert_int_eq(df11i_read_groups(f, 0, n, bufs, size, &sink), DF11_OK);
    ck_assert_uint_eq(seen.next, n);
    ck_assert_int_eq(seen.reuses, (int)n); /* before every fill, each buffer's first too */
    /* a second call on the same buffers, as a model of a block range reads its runs of
     * groups: the sink still holds what the first call handed it last */
    seen.next = 1;
    ck_assert_int_eq(df11i_read_groups(f, 1, n - 1, bufs, size, &sink), DF11_OK);
    ck_assert_uint_eq(seen.next, n);
    ck_assert_int_eq(df11i_read_groups(f, 0, n, bufs, size - 1, &sink), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_read_groups(f, 1, n, bufs, size, &sink), DF11_ERR_INVALID_ARG);
    /* A memory image has no descriptor to read through. */
    FILE *fp = fopen(tm.path, "rb");
    ck_assert_ptr_nonnull(fp);
    uint64_t file_size = df11_file_size(f);
    void *image = malloc(file_size);
    ck_assert_uint_eq(fread(image, 1, file_size, fp), file_size);
    fclose(fp);
    df11_file *mf;
    ck_assert_int_eq(df11i_file_open_memory(image, file_size, "image", &mf), DF11_OK);
    ck_assert_int_eq(df11i_file_fd(mf), -1);
    seen = (reader_seen){ .f = mf };
    ck_assert_int_eq(df11i_read_groups(mf, 0, n, bufs, size, &sink), DF11_ERR_INVALID_ARG);
    ck_assert_uint_eq(seen.next, 0);
    df11_file_close(mf);
    free(image);
    free(bufs[0]);
    free(bufs[1]);
    df11_file_close(f);
}
END_TEST

/* --- the host backend by itself: the stream and event contract the scenarios rely on --- */

#ifndef RT_TEST_CUDA
START_TEST(test_host_backend_streams)
{
    /* Ordered host work: copies on a worker stream, events across streams. */
    df11i_backend *be;
    ck_assert_int_eq(df11i_backend_host_create(1, &be), DF11_OK);
    void *s1, *s2, *e1, *e2;
    ck_assert_int_eq(be->iface->stream_create(be, 1, &s1), DF11_OK);
    ck_assert_int_eq(be->iface->stream_create(be, 0, &s2), DF11_OK);
    ck_assert_int_eq(be->iface->event_create(be, &e1), DF11_OK);
    ck_assert_int_eq(be->iface->event_create(be, &e2), DF11_OK);
    enum { N = 1 << 20 };
    char *a = malloc(N), *b = malloc(N), *c = malloc(N);
    memset(a, 7, N);
    memset(b, 0, N);
    memset(c, 0, N);
    ck_assert_int_eq(be->iface->copy_h2d(be, b, a, N, s1), DF11_OK);
    ck_assert_int_eq(be->iface->event_record(be, e1, s1), DF11_OK);
    ck_assert_int_eq(be->iface->stream_wait(be, s2, e1), DF11_OK);
    ck_assert_int_eq(be->iface->copy_h2d(be, c, b, N, s2), DF11_OK);
    ck_assert_int_eq(be->iface->event_record(be, e2, s2), DF11_OK);
    ck_assert_int_eq(be->iface->stream_wait(be, NULL, e2), DF11_OK); /* blocks the caller */
    ck_assert_int_eq(c[0], 7);
    ck_assert_int_eq(c[N - 1], 7);
    ck_assert_int_eq(be->iface->event_record(be, e1, NULL), DF11_OK); /* complete at once */
    ck_assert_int_eq(be->iface->event_sync(be, e1), DF11_OK);
    ck_assert_int_eq(be->iface->synchronize(be, s1), DF11_OK);
    be->iface->event_destroy(be, e1);
    be->iface->event_destroy(be, e2);
    be->iface->stream_destroy(be, s1);
    be->iface->stream_destroy(be, s2);
    uint64_t fr, tot;
    ck_assert_int_eq(be->iface->mem_info(be, &fr, &tot), DF11_OK);
    ck_assert_ptr_null(be->iface->plan_build);
    free(a);
    free(b);
    free(c);
    df11i_backend_destroy(be);
}
END_TEST
#endif

/* --- the matmul op (df11_weight_get, df11_matmul) ---
 * Its own small model: odd shapes, chunks of 256 weights (lane_symbols 8) that straddle
 * rows, a tensor smaller than one chunk, a non-layer weight (resident or, under the ARENA
 * policy, compressed), and tensors the op must refuse. Weights and x come from the seeded
 * generator (DF11_TEST_SEED; the seed is in every failure message). */

typedef struct mm_shape {
    const char *name;
    uint32_t n, k;
} mm_shape;

static const mm_shape MM_SHAPES[] = {
    { "model.layers.0.mlp.a.weight", 37, 51 },   /* chunks straddle rows */
    { "model.layers.0.mlp.b.weight", 5, 3 },     /* the whole tensor is less than a chunk */
    { "model.layers.1.mlp.c.weight", 129, 300 }, /* rows longer than a chunk */
    { "model.layers.1.mlp.d.weight", 1, 1000 },  /* one row */
    { "model.layers.2.mlp.e.weight", 301, 700 }, /* several host tasks */
    { "lm_head.weight", 77, 45 },                /* non-layer */
};
#define MM_N_SHAPES (sizeof MM_SHAPES / sizeof MM_SHAPES[0])

static struct {
    test_model t;
    uint64_t seed;
    char fixed_path[512]; /* the same tensors with the fixed-width exponent code */
} mm;

static const df11_tensor_source *source_in(const test_model *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->t[i].name, name)) return &t->t[i];
    ck_abort_msg("no source tensor %s", name);
    return NULL;
}

static void mm_add(const char *name, df11_dtype dt, uint32_t ndim, uint64_t d0, uint64_t d1,
                   uint64_t *rng)
{
    test_model saved = tm; /* add_tensor fills `tm`: borrow it */
    tm = mm.t;
    add_tensor(name, dt, ndim, d0, d1, rng);
    mm.t = tm;
    tm = saved;
}

static void mm_make_model(void)
{
    if (mm.t.n) return;
    mm.seed = df11_test_seed();
    uint64_t rng = mm.seed ^ 0x6d6d;
    mm.t.t = calloc(MM_N_SHAPES + 6, sizeof *mm.t.t);
    for (size_t i = 0; i < MM_N_SHAPES; i++)
        mm_add(MM_SHAPES[i].name, DF11_DTYPE_BF16, 2, MM_SHAPES[i].n, MM_SHAPES[i].k, &rng);
    mm_add("model.layers.2.input_layernorm.weight", DF11_DTYPE_BF16, 1, 64, 0, &rng);
    mm_add("model.layers.2.mlp.f32.weight", DF11_DTYPE_F32, 2, 4, 4, &rng);
    /* with model.layers.2.mlp.e (K = 700): parts of stacked weights, in two blocks */
    mm_add("model.layers.2.mlp.g.weight", DF11_DTYPE_BF16, 2, 19, 700, &rng);
    mm_add("model.layers.3.mlp.h.weight", DF11_DTYPE_BF16, 2, 64, 700, &rng);
    /* up before gate in input order, gate then up in block 3's layout (df11i_block_order),
     * back to back (256-byte multiples) */
    mm_add("model.layers.3.mlp.up_proj.weight", DF11_DTYPE_BF16, 2, 32, 700, &rng);
    mm_add("model.layers.3.mlp.gate_proj.weight", DF11_DTYPE_BF16, 2, 64, 700, &rng);
    snprintf(mm.t.path, sizeof mm.t.path, "%s/mm.df11", df11_test_tmpdir());
    snprintf(mm.t.st_path, sizeof mm.t.st_path, "%s/mm.safetensors", df11_test_tmpdir());
    df11_compress_options co = { 0 };
    co.lane_symbols = 8; /* chunks of 256 weights */
    df11_status s =
        df11_compress_tensors(mm.t.path, mm.t.t, mm.t.n, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    s = df11i_st_write(mm.t.st_path, mm.t.t, mm.t.n, NULL);
    ck_assert_msg(s == DF11_OK, "st_write: %s %s", df11_strerror(s), df11_last_error_detail());
    snprintf(mm.fixed_path, sizeof mm.fixed_path, "%s/mm_fixed.df11", df11_test_tmpdir());
    co.codec = df11_test_fixed_codec();
    s = df11_compress_tensors(mm.fixed_path, mm.t.t, mm.t.n, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress (fixed): %s %s", df11_strerror(s),
                  df11_last_error_detail());
}

/* kind: 0 = the Huffman file, 1 = the BF16 model, 2 = the fixed-code file. */
static df11_model *mm_open_slots(int kind, df11_nonlayer_policy pol, int n_threads, uint32_t slots)
{
    mm_make_model();
    df11_model_options o = opts(slots);
    o.nonlayer = pol;
    o.n_threads = n_threads;
    df11_model *m;
    df11_status s = kind == 1 ? df11_model_open_bf16(mm.t.st_path, &o, &m)
                              : df11_model_open(kind == 2 ? mm.fixed_path : mm.t.path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
    return m;
}

/* The largest batch the fixed code's fused path takes on the backend under test for a
 * tensor of k columns (past it, the arena path). */
static uint32_t fused_max(uint32_t k)
{
#ifdef RT_TEST_CUDA
    return df11i_fused_matmul_default_max(k);
#else
    (void)k;
    return DF11_FUSED_MAX_BATCH;
#endif
}

/* Which kernel multiplies tensor `name` of model m (its non-layer weights resident or not)
 * at this batch: 0 the one every path shares (cuBLAS, or the host's row kernel), 1 and 2
 * CUDA's fused kernels for the Huffman and the fixed code, each with its own summation
 * order. */
static int mm_kernel(df11_model *m, int nonlayer_resident, const char *name, uint32_t batch)
{
#ifdef RT_TEST_CUDA
    const df11_file *f = df11_model_file(m);
    uint32_t t;
    if (!f || (nonlayer_resident && strncmp(name, "model.layers.", 13)) ||
        df11_file_find_tensor(f, name, &t) != DF11_OK ||
        !df11i_cuda_matmul_fused_takes(NULL, f, t, batch))
        return 0;
    return df11_file_tensor(f, t)->codec == df11_test_fixed_codec() ? 2 : 1;
#else
    (void)m, (void)nonlayer_resident, (void)name, (void)batch;
    return 0;
#endif
}

/* With the 2 arena slots most tests use. */
static df11_model *mm_open(int kind, df11_nonlayer_policy pol, int n_threads)
{
    return mm_open_slots(kind, pol, n_threads, 2);
}

/* y = x·Wᵀ through the op, read back to the host as fp32 (bits kept in `raw`). */
static void mm_run(df11_model *m, const df11_weight *w, const uint16_t *x, uint32_t batch,
                   df11_dtype yd, void *raw)
{
    const size_t ysz = (size_t)batch * w->rows * (yd == DF11_DTYPE_F32 ? 4 : 2);
    void *dx = dev_alloc((size_t)batch * w->cols * 2), *dy = dev_alloc(ysz);
    dev_upload(dx, x, (size_t)batch * w->cols * 2);
    df11_status s = df11_matmul(m, w, dx, batch, dy, yd, NULL);
    ck_assert_msg(s == DF11_OK, "matmul %s batch %u: %s %s (seed %#llx)", w->name, batch,
                  df11_strerror(s), df11_last_error_detail(), (unsigned long long)mm.seed);
    read_back(raw, dy, ysz);
    dev_free(dx);
    dev_free(dy);
}

/* The fp64 reference of y = x·Wᵀ from the source weights (what decoding gives back, bit for
 * bit): ref[b n + r] = y[b][r] and mag[b n + r] = Σ|w·x|, the scale of its fp32 error, each
 * summed over k in order. Rows of W are split among threads, the inputs widened once: the GPU
 * suites' large shapes and batches spent most of their time here. */
typedef struct mm_ref_job {
    const mm_shape *sh;
    const double *w, *x;
    uint32_t batch, r0, r1;
    double *ref, *mag;
} mm_ref_job;

static void *mm_ref_rows(void *arg)
{
    const mm_ref_job *j = arg;
    const uint32_t k = j->sh->k, n = j->sh->n;
    for (uint32_t r = j->r0; r < j->r1; r++)
        for (uint32_t b = 0; b < j->batch; b++) {
            const double *wr = j->w + (size_t)r * k, *xb = j->x + (size_t)b * k;
            double s = 0, a = 0;
            for (uint32_t i = 0; i < k; i++) {
                const double p = wr[i] * xb[i];
                s += p;
                a += fabs(p);
            }
            j->ref[(size_t)b * n + r] = s;
            j->mag[(size_t)b * n + r] = a;
        }
    return NULL;
}

static double *mm_widen(const uint16_t *v, size_t n)
{
    double *d = malloc(n * sizeof *d);
    ck_assert_ptr_nonnull(d);
    for (size_t i = 0; i < n; i++) d[i] = df11_test_bf16_f32(v[i]);
    return d;
}

static void mm_reference(const mm_shape *sh, const uint16_t *w, const uint16_t *x, uint32_t batch,
                         double *ref, double *mag)
{
    enum { MAX_THREADS = 16 };
    double *wd = mm_widen(w, (size_t)sh->n * sh->k), *xd = mm_widen(x, (size_t)batch * sh->k);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t nt = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (uint32_t)cpus;
    if (nt > sh->n) nt = sh->n;
    /* a small product is not worth a thread */
    if ((uint64_t)sh->n * sh->k * batch < (1u << 20)) nt = 1;
    mm_ref_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    for (uint32_t t = 0; t < nt; t++) {
        jobs[t] = (mm_ref_job){ sh,
                                wd,
                                xd,
                                batch,
                                (uint32_t)((uint64_t)sh->n * t / nt),
                                (uint32_t)((uint64_t)sh->n * (t + 1) / nt),
                                ref,
                                mag };
        if (t) ck_assert_int_eq(pthread_create(&th[t], NULL, mm_ref_rows, &jobs[t]), 0);
    }
    mm_ref_rows(&jobs[0]);
    for (uint32_t t = 1; t < nt; t++) ck_assert_int_eq(pthread_join(th[t], NULL), 0);
    free(wd);
    free(xd);
}

/* How far y may lie from the fp64 reference ref (Σ|w·x| = mag): (k + 8)·2⁻²³·mag for fp32
 * accumulation in any order, plus half a BF16 ulp (2⁻⁸·|ref|) when y is BF16. */
static double mm_bound(uint32_t k, double ref, double mag, df11_dtype yd)
{
    const double b = (k + 8) * ldexp(mag, -23) + 1e-30;
    return yd == DF11_DTYPE_BF16 ? b * (1 + ldexp(1, -8)) + ldexp(fabs(ref), -8) : b;
}

/* Each element of y against the fp64 reference (mm_reference's refs and mags), within
 * mm_bound. */
static void mm_check_y(const mm_shape *sh, uint32_t batch, df11_dtype yd, const void *raw,
                       const double *refs, const double *mags)
{
    for (uint32_t b = 0; b < batch; b++)
        for (uint32_t r = 0; r < sh->n; r++) {
            const size_t at = (size_t)b * sh->n + r;
            const double ref = refs[at], mag = mags[at];
            double got = yd == DF11_DTYPE_F32 ? ((const float *)raw)[at]
                                              : df11_test_bf16_f32(((const uint16_t *)raw)[at]);
            const double bound = mm_bound(sh->k, ref, mag, yd);
            ck_assert_msg(fabs(got - ref) <= bound,
                          "%s batch %u y[%u][%u] = %.9g, reference %.9g, bound %.3g (%s, seed "
                          "%#llx)",
                          sh->name, batch, b, r, got, ref, bound,
                          yd == DF11_DTYPE_F32 ? "F32" : "BF16", (unsigned long long)mm.seed);
        }
}

/* The fp64 reference of x·Wᵀ, batch x sh->n, and each element's Σ|w·x| (mm_reference). */
typedef struct {
    double *refs, *mags;
} mm_ref;

static mm_ref mm_ref_of(const mm_shape *sh, const uint16_t *w, const uint16_t *x, uint32_t batch)
{
    const size_t n = (size_t)batch * sh->n;
    mm_ref r = { malloc(n * sizeof *r.refs), malloc(n * sizeof *r.mags) };
    ck_assert(r.refs && r.mags);
    mm_reference(sh, w, x, batch, r.refs, r.mags);
    return r;
}

static void mm_ref_free(mm_ref *r)
{
    free(r->refs);
    free(r->mags);
}

static void mm_check_reference(const mm_shape *sh, const uint16_t *w, const uint16_t *x,
                               uint32_t batch, df11_dtype yd, const void *raw)
{
    mm_ref r = mm_ref_of(sh, w, x, batch);
    mm_check_y(sh, batch, yd, raw, r.refs, r.mags);
    mm_ref_free(&r);
}

START_TEST(test_matmul_reference)
{
    /* The df11 model with the non-layer weight resident and compressed, the BF16 model, and
     * the fixed-code model: each against the reference, and all bit-identical. */
    enum { N_MODELS = 4 };
    df11_model *ms[N_MODELS] = { mm_open(0, DF11_NONLAYER_RESIDENT, 2),
                                 mm_open(0, DF11_NONLAYER_ARENA, 2),
                                 mm_open(1, DF11_NONLAYER_RESIDENT, 2),
                                 mm_open(2, DF11_NONLAYER_ARENA, 2) };
    uint32_t n_fixed = 0; /* the fixed-code file does hold fixed-code weights */
    for (size_t i = 0; i < MM_N_SHAPES; i++) {
        const df11_file *f = df11_model_file(ms[3]);
        uint32_t t;
        ck_assert_int_eq(df11_file_find_tensor(f, MM_SHAPES[i].name, &t), DF11_OK);
        n_fixed += df11_file_tensor(f, t)->codec == df11_test_fixed_codec();
    }
    ck_assert_uint_gt(n_fixed, 0);
    uint64_t rng = mm.seed ^ 0x78;
    for (size_t i = 0; i < MM_N_SHAPES; i++) {
        const mm_shape *sh = &MM_SHAPES[i];
        const uint16_t *w = source_in(&mm.t, sh->name)->data;
        df11_weight ws[N_MODELS];
        for (int j = 0; j < N_MODELS; j++) {
            df11_status s = df11_weight_get(ms[j], sh->name, &ws[j]);
            ck_assert_msg(s == DF11_OK, "weight_get %s: %s %s", sh->name, df11_strerror(s),
                          df11_last_error_detail());
            ck_assert_uint_eq(ws[j].rows, sh->n);
            ck_assert_uint_eq(ws[j].cols, sh->k);
            ck_assert_str_eq(ws[j].name, sh->name);
        }
        /* 1..17, and past the fixed code's fused limit (its arena path) */
        for (uint32_t bi = 1; bi <= 18; bi++) {
            const uint32_t batch = bi <= 17 ? bi : fused_max(sh->k) + 1;
            uint16_t *x = df11_test_random_bf16((size_t)batch * sh->k, &rng);
            mm_ref ref = mm_ref_of(sh, w, x, batch); /* once for every model and y type */
            for (int d = 0; d < 2; d++) {
                const df11_dtype yd = d ? DF11_DTYPE_BF16 : DF11_DTYPE_F32;
                const size_t ysz = (size_t)batch * sh->n * (d ? 2 : 4);
                void *y[N_MODELS];
                for (int j = 0; j < N_MODELS; j++) {
                    y[j] = malloc(ysz);
                    mm_run(ms[j], &ws[j], x, batch, yd, y[j]);
                }
                mm_check_y(sh, batch, yd, y[0], ref.refs, ref.mags);
                for (int j = 1; j < N_MODELS; j++) {
                    /* a model on another kernel than model 0's: within the bound, its own
                     * summation order (tests/test_gpu_runtime.c compares the paths) */
                    /* models 0 and 2 hold their non-layer weights resident */
                    if (mm_kernel(ms[j], j % 2 == 0, sh->name, batch) !=
                        mm_kernel(ms[0], 1, sh->name, batch)) {
                        mm_check_y(sh, batch, yd, y[j], ref.refs, ref.mags);
                        continue;
                    }
                    ck_assert_msg(!memcmp(y[0], y[j], ysz),
                                  "%s batch %u: model %d's y differs from the df11 model's "
                                  "(seed %#llx)",
                                  sh->name, batch, j, (unsigned long long)mm.seed);
                }
                for (int j = 0; j < N_MODELS; j++) free(y[j]);
            }
            mm_ref_free(&ref);
            free(x);
        }
    }
    for (int j = 0; j < N_MODELS; j++) df11_model_close(ms[j]);
}
END_TEST

#ifndef RT_TEST_CUDA
START_TEST(test_matmul_threads)
{
    /* The host path's y does not depend on the thread count, bit for bit: fused with
     * either code (Huffman, fixed), and the fixed code past the fused batch (the arena). */
    const int threads[] = { 1, 2, 3, 8 };
    mm_make_model();
    uint64_t rng = mm.seed ^ 0x7468;
    for (int kind = 0; kind <= 2; kind += 2)
        for (size_t i = 0; i < MM_N_SHAPES; i++) {
            const mm_shape *sh = &MM_SHAPES[i];
            static const uint32_t batches[] = { 1, 5, 9, DF11_FUSED_MAX_BATCH + 1 };
            for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
                const uint32_t batch = batches[bi];
                uint16_t *x = df11_test_random_bf16((size_t)batch * sh->k, &rng);
                const size_t ysz = (size_t)batch * sh->n * 4;
                float *y0 = malloc(ysz), *y = malloc(ysz);
                for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
                    df11_model *m = mm_open(kind, DF11_NONLAYER_ARENA, threads[t]);
                    df11_weight w;
                    ck_assert_int_eq(df11_weight_get(m, sh->name, &w), DF11_OK);
                    mm_run(m, &w, x, batch, DF11_DTYPE_F32, t ? (void *)y : (void *)y0);
                    if (t)
                        ck_assert_msg(!memcmp(y0, y, ysz),
                                      "%s %s batch %u: %d threads differ from 1",
                                      kind ? "fixed" : "huffman", sh->name, batch, threads[t]);
                    df11_model_close(m);
                }
                free(y0);
                free(y);
                free(x);
            }
        }
}
END_TEST
#endif

/* df11_weight_get refuses what no matmul can take, in a file of its own: a 3-D BF16 tensor
 * and an empty one (INVALID_ARG), next to a matrix it resolves. */
START_TEST(test_weight_get_shapes)
{
    static uint16_t w[2 * 4 * 16], v[16 * 64];
    uint64_t rng = df11_test_seed() ^ 0x3d;
    df11_test_fill_weights(w, 2 * 4 * 16, 16, &rng);
    df11_test_fill_weights(v, 16 * 64, 64, &rng);
    df11_tensor_source src[] = {
        { "model.layers.0.mlp.conv.weight", DF11_DTYPE_BF16, 3, { 2, 4, 16 }, w },
        { "model.layers.0.mlp.empty.weight", DF11_DTYPE_BF16, 2, { 0, 64 }, v },
        { "model.layers.0.mlp.ok.weight", DF11_DTYPE_BF16, 2, { 16, 64 }, v },
    };
    char path[600];
    snprintf(path, sizeof path, "%s/shapes.df11", df11_test_tmpdir());
    df11_compress_options co = { .codec = df11_test_fixed_codec() };
    df11_status s = df11_compress_tensors(path, src, 3, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    df11_model_options o = opts(2);
    df11_model *m;
    ck_assert_int_eq(df11_model_open(path, &o, &m), DF11_OK);
    df11_weight wt;
    ck_assert_int_eq(df11_weight_get(m, src[0].name, &wt), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "3 dimensions"));
    ck_assert_int_eq(df11_weight_get(m, src[1].name, &wt), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "non-empty"));
    ck_assert_int_eq(df11_weight_get(m, src[2].name, &wt), DF11_OK);
    ck_assert_uint_eq(wt.rows, 16);
    ck_assert_uint_eq(wt.cols, 64);
    df11_model_close(m);
    unlink(path);
}
END_TEST

START_TEST(test_matmul_errors)
{
    df11_model *m = mm_open(0, DF11_NONLAYER_ARENA, 2),
               *other = mm_open(1, DF11_NONLAYER_RESIDENT, 2);
    df11_weight w, wo;
    ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[0].name, &w), DF11_OK);
    ck_assert_int_eq(df11_weight_get(other, MM_SHAPES[0].name, &wo), DF11_OK);
    /* resolving */
    ck_assert_int_eq(df11_weight_get(NULL, MM_SHAPES[0].name, &w), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_weight_get(m, NULL, &w), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[0].name, NULL), DF11_ERR_INVALID_ARG);
    df11_weight bad;
    ck_assert_int_eq(df11_weight_get(m, "nope", &bad), DF11_ERR_NOT_FOUND);
    /* a vector is one row: df11_rows_gather of row 0 gives its values, row 1 is refused */
    const char *norm = "model.layers.2.input_layernorm.weight";
    df11_weight wv;
    ck_assert_int_eq(df11_weight_get(m, norm, &wv), DF11_OK);
    ck_assert_uint_eq(wv.rows, 1);
    ck_assert_uint_eq(wv.cols, 64);
    {
        const uint32_t row0 = 0, row1 = 1;
        void *dv = dev_alloc(64 * 2);
        uint16_t got[64];
        ck_assert_int_eq(df11_rows_gather(m, &wv, &row0, 1, dv, DF11_DTYPE_BF16, NULL), DF11_OK);
        read_back(got, dv, sizeof got);
        ck_assert_int_eq(memcmp(got, source_in(&mm.t, norm)->data, sizeof got), 0);
        ck_assert_int_eq(df11_rows_gather(m, &wv, &row1, 1, dv, DF11_DTYPE_BF16, NULL),
                         DF11_ERR_INVALID_ARG);
        dev_free(dv);
    }
    ck_assert_int_eq(df11_weight_get(m, "model.layers.2.mlp.f32.weight", &bad), DF11_ERR_DTYPE);
    /* multiplying: each refused before anything runs, y untouched */
    const uint32_t K = w.cols, N = w.rows;
    uint16_t *x = calloc(K, 2), y0[256];
    memset(y0, 0xab, sizeof y0);
    void *dx = dev_alloc(K * 2), *dy = dev_alloc(sizeof y0);
    dev_upload(dx, x, K * 2);
    dev_upload(dy, y0, sizeof y0);
    ck_assert_uint_le(N * 4, sizeof y0);
    ck_assert_int_eq(df11_matmul(NULL, &w, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, NULL, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &w, NULL, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, NULL, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &w, dx, 0, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, dy, DF11_DTYPE_F16, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, dy, DF11_DTYPE_INVALID, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &wo, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "another model"));
    ck_assert_int_eq(df11_matmul(other, &w, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    bad = w;
    bad.tensor = 100000;
    ck_assert_int_eq(df11_matmul(m, &bad, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    bad = w;
    bad.cols = K + 1; /* altered */
    ck_assert_int_eq(df11_matmul(m, &bad, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    bad = w;
    bad.tensor = w.tensor + 1; /* another tensor: its shape differs */
    ck_assert_int_eq(df11_matmul(m, &bad, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    memset(&bad, 0, sizeof bad); /* never resolved */
    ck_assert_int_eq(df11_matmul(m, &bad, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul(m, &w, dx, 0x80000000u, dy, DF11_DTYPE_F32, NULL),
                     DF11_ERR_OVERFLOW);
#ifndef RT_TEST_CUDA
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, dy, DF11_DTYPE_F32, (df11_stream)dx),
                     DF11_ERR_INVALID_ARG);
#endif
    /* a vector is not a matrix to multiply by, alone or stacked */
    ck_assert_int_eq(df11_matmul(m, &wv, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "vector"));
    ck_assert_int_eq(df11_weight_stack(m, 1, &wv, &bad), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "vector"));
    /* x and y overlapping: y at x, or one element into it */
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, dx, DF11_DTYPE_BF16, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "overlap"));
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, (char *)dx + 2, DF11_DTYPE_F32, NULL),
                     DF11_ERR_INVALID_ARG);
    /* in one buffer: x starting inside y refused, x right after y taken (y written) */
    char *one = dev_alloc((size_t)N * 4 + K * 2);
    ck_assert_int_eq(df11_matmul(m, &w, one + 4, 1, one, DF11_DTYPE_F32, NULL),
                     DF11_ERR_INVALID_ARG);
    dev_upload(one + (size_t)N * 4, x, K * 2);
    ck_assert_int_eq(df11_matmul(m, &w, one + (size_t)N * 4, 1, one, DF11_DTYPE_F32, NULL),
                     DF11_OK);
    dev_free(one);
    /* the shapes stated (df11_matmul_checked): each mismatch named, before anything runs */
    const df11_matrix xm = { dx, 1, K, DF11_DTYPE_BF16 }, ym = { dy, 1, N, DF11_DTYPE_F32 };
    df11_matrix xb = xm, yb = ym;
    ck_assert_int_eq(df11_matmul_checked(m, &w, NULL, &ym, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xm, NULL, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul_checked(NULL, &w, &xm, &ym, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_matmul_checked(m, &wo, &xm, &ym, NULL), DF11_ERR_INVALID_ARG);
    xb.cols = K + 1;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xb, &ym, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), MM_SHAPES[0].name));
    xb = xm, yb.cols = N - 1;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xm, &yb, NULL), DF11_ERR_INVALID_ARG);
    yb = ym, yb.rows = 2;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xm, &yb, NULL), DF11_ERR_INVALID_ARG);
    xb.dtype = DF11_DTYPE_F32;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xb, &ym, NULL), DF11_ERR_DTYPE);
    xb = xm, yb = ym, xb.rows = yb.rows = 0;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xb, &yb, NULL), DF11_ERR_INVALID_ARG);
    yb = ym, yb.dtype = DF11_DTYPE_F16;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xm, &yb, NULL), DF11_ERR_INVALID_ARG);
    xb = xm, xb.data = NULL;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xb, &ym, NULL), DF11_ERR_INVALID_ARG);
    yb = ym, yb.data = dx;
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xm, &yb, NULL), DF11_ERR_INVALID_ARG);
    uint16_t after[256];
    read_back(after, dy, sizeof after);
    ck_assert_msg(!memcmp(after, y0, sizeof y0), "a refused matmul wrote y");
    /* and a good call still works after all that, stated or not */
    ck_assert_int_eq(df11_matmul(m, &w, dx, 1, dy, DF11_DTYPE_F32, NULL), DF11_OK);
    read_back(after, dy, sizeof after);
    for (uint32_t r = 0; r < N; r++) ck_assert(((float *)after)[r] == 0.0f);
    dev_upload(dy, y0, sizeof y0);
    ck_assert_int_eq(df11_matmul_checked(m, &w, &xm, &ym, NULL), DF11_OK);
    read_back(after, dy, sizeof after);
    for (uint32_t r = 0; r < N; r++) ck_assert(((float *)after)[r] == 0.0f);
    ck_assert_int_eq(memcmp((char *)after + N * 4, (char *)y0 + N * 4, sizeof y0 - N * 4), 0);
    /* through the provider */
    df11_provider p;
    ck_assert_int_eq(df11_model_provider(m, &p), DF11_OK);
    ck_assert_ptr_nonnull(p.matmul);
    ck_assert_int_eq(p.weight_get(p.ctx, MM_SHAPES[1].name, &bad), DF11_OK);
    ck_assert_int_eq(p.matmul(p.ctx, &bad, dx, 1, dy, DF11_DTYPE_BF16, NULL), DF11_OK);
    dev_free(dx);
    dev_free(dy);
    free(x);
    df11_model_close(other);
    df11_model_close(m);
}
END_TEST

/* Columns [c0, c0 + n) of a batch x ld matrix of esz-byte elements, packed. */
static void *mm_columns(const void *y, uint32_t batch, uint32_t ld, uint32_t c0, uint32_t n,
                        size_t esz)
{
    char *out = malloc((size_t)batch * n * esz);
    for (uint32_t b = 0; b < batch; b++)
        memcpy(out + (size_t)b * n * esz, (const char *)y + ((size_t)b * ld + c0) * esz, n * esz);
    return out;
}

START_TEST(test_matmul_stacked_one_matrix)
{
    /* gate and then up lie back to back in block 3, whatever the input order: in the BF16
     * model's memory, in the files' decoded groups and in a raw file's payload. Stacked in
     * that order they are one product where they are read decoded (one arena acquire past
     * the fixed code's fused batches, or a Huffman tensor's on CUDA), in the other order a
     * product each; either way y is the parts' y (bit for bit where one kernel makes both,
     * else within the fp32 bound of the fp64 reference). */
    static const mm_shape parts[] = { { "model.layers.3.mlp.gate_proj.weight", 64, 700 },
                                      { "model.layers.3.mlp.up_proj.weight", 32, 700 } };
    uint64_t rng = mm.seed ^ 0x6f6d;
    mm_make_model();
    const char *files[2] = { mm.t.path, mm.fixed_path };
    for (int f = 0; f < 2; f++) {
        df11_file *file;
        ck_assert_int_eq(df11_file_open(files[f], &file), DF11_OK);
        uint32_t tg, tu;
        ck_assert_int_eq(df11_file_find_tensor(file, parts[0].name, &tg), DF11_OK);
        ck_assert_int_eq(df11_file_find_tensor(file, parts[1].name, &tu), DF11_OK);
        const df11_tensor_info *g = df11_file_tensor(file, tg), *u = df11_file_tensor(file, tu);
        ck_assert_uint_eq(g->group, u->group);
        ck_assert_uint_eq(u->decoded_offset, g->decoded_offset + g->nbytes);
        df11_file_close(file);
    }
    {
        df11_model *m = mm_open(1, DF11_NONLAYER_RESIDENT, 2);
        df11_tensor_view vg, vu;
        ck_assert_int_eq(df11_block_acquire(m, 3, NULL, NULL), DF11_OK);
        ck_assert_int_eq(df11_tensor_get(m, parts[0].name, NULL, &vg), DF11_OK);
        ck_assert_int_eq(df11_tensor_get(m, parts[1].name, NULL, &vu), DF11_OK);
        ck_assert_ptr_eq((const char *)vg.data + vg.nbytes, vu.data);
        ck_assert_int_eq(df11_block_release(m, 3, NULL), DF11_OK);
        df11_model_close(m);
    }
    /* kind 3: the same tensors stored raw (df11-compress --codec raw), read in the payload */
    char raw_path[600];
    snprintf(raw_path, sizeof raw_path, "%s/mm_raw.df11", df11_test_tmpdir());
    df11_compress_options co = { 0 };
    co.store_raw = 1;
    ck_assert_int_eq(
        df11_compress_tensors(raw_path, mm.t.t, mm.t.n, CONFIG, strlen(CONFIG), &co, NULL),
        DF11_OK);
    const uint32_t batches[] = { 1, fused_max(700) + 1 };
    for (int kind = 0; kind < 4; kind++) {
        df11_model *m = NULL;
        if (kind < 3) {
            m = mm_open(kind, DF11_NONLAYER_RESIDENT, 2);
        } else {
            df11_model_options o = opts(2);
            o.n_threads = 2;
            ck_assert_int_eq(df11_model_open(raw_path, &o, &m), DF11_OK);
        }
        for (int order = 0; order < 2; order++) {
            df11_weight w[2], st;
            for (int i = 0; i < 2; i++)
                ck_assert_int_eq(df11_weight_get(m, parts[order ? 1 - i : i].name, &w[i]), DF11_OK);
            ck_assert_int_eq(df11_weight_stack(m, 2, w, &st), DF11_OK);
            for (size_t bi = 0; bi < 2; bi++) {
                const uint32_t batch = batches[bi];
                uint16_t *x = df11_test_random_bf16((size_t)batch * 700, &rng);
                float *ys = malloc((size_t)batch * 96 * 4);
                df11_model_stats s0 = { .size = sizeof s0 }, s1 = { .size = sizeof s1 };
                ck_assert_int_eq(df11_model_stats_get(m, &s0), DF11_OK);
                mm_run(m, &st, x, batch, DF11_DTYPE_F32, ys);
                ck_assert_int_eq(df11_model_stats_get(m, &s1), DF11_OK);
                /* through the arena: the fixed code past its fused batches; Huffman on
                 * CUDA (lanes too short here for its fused kernel) */
                int arena = kind == 2 && batch > fused_max(700);
#ifdef RT_TEST_CUDA
                arena |= kind == 0;
#endif
                ck_assert_msg(s1.acquires - s0.acquires == (uint64_t)(arena ? (order ? 2 : 1) : 0),
                              "model %d, %s, batch %u: %llu acquires", kind, st.name, batch,
                              (unsigned long long)(s1.acquires - s0.acquires));
                uint32_t col = 0;
                for (int i = 0; i < 2; i++) {
                    const mm_shape *sh = &parts[order ? 1 - i : i];
                    float *got = mm_columns(ys, batch, 96, col, sh->n, 4);
                    const int k = kind == 3 ? 0 : mm_kernel(m, 1, sh->name, batch);
#ifdef RT_TEST_CUDA
                    /* cuBLAS on the part alone; over both parts, or a fused kernel, another
                     * order of the sums */
                    const int exact = !k && order == 1;
#else
                    const int exact = 1; /* the host's rows do not depend on the matrix */
                    (void)k;
#endif
                    if (exact) {
                        float *alone = malloc((size_t)batch * sh->n * 4);
                        mm_run(m, &w[i], x, batch, DF11_DTYPE_F32, alone);
                        ck_assert_msg(!memcmp(alone, got, (size_t)batch * sh->n * 4),
                                      "model %d, %s, batch %u: part %s differs from its own y "
                                      "(seed %#llx)",
                                      kind, st.name, batch, sh->name, (unsigned long long)mm.seed);
                        free(alone);
                    } else {
                        mm_check_reference(sh, source_in(&mm.t, sh->name)->data, x, batch,
                                           DF11_DTYPE_F32, got);
                    }
                    free(got);
                    col += sh->n;
                }
                free(ys);
                free(x);
            }
        }
        df11_model_close(m);
    }
}
END_TEST

START_TEST(test_matmul_stacked)
{
    /* A stacked weight's y is its parts' y side by side: bit-identical to the parts one by
     * one wherever each part takes its own path (host; CUDA decode), within the fp32 bound
     * where the CUDA fused path makes the parts one launch (its own split of the sums). */
    static const mm_shape parts[] = { { "model.layers.2.mlp.e.weight", 301, 700 },
                                      { "model.layers.2.mlp.g.weight", 19, 700 },
                                      { "model.layers.3.mlp.h.weight", 64, 700 } };
    static const int combos[][4] = { { 3, 0, 1, 2 }, { 2, 1, 0 }, { 1, 2 }, { 2, 1, 1 } };
    /* either side of the fixed code's fused limit (each part through the arena above it) */
    const uint32_t batches[] = { 1, 3, DF11_FUSED_MAX_BATCH, DF11_FUSED_MAX_BATCH + 1,
                                 fused_max(parts[0].k) + 1 };
    uint64_t rng = mm.seed ^ 0x5354;
    for (int kind = 0; kind < 3; kind++) {
        df11_model *m = mm_open(kind, kind ? DF11_NONLAYER_ARENA : DF11_NONLAYER_RESIDENT, 2);
        df11_weight w[3];
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(df11_weight_get(m, parts[i].name, &w[i]), DF11_OK);
        for (size_t c = 0; c < sizeof combos / sizeof combos[0]; c++) {
            const int n = combos[c][0];
            df11_weight pw[3], st;
            uint32_t rows = 0;
            char name[256] = "";
            for (int i = 0; i < n; i++) {
                pw[i] = w[combos[c][1 + i]];
                rows += pw[i].rows;
                if (i) strcat(name, "+");
                strcat(name, pw[i].name);
            }
            df11_status s = df11_weight_stack(m, (uint32_t)n, pw, &st);
            ck_assert_msg(s == DF11_OK, "stack: %s %s", df11_strerror(s), df11_last_error_detail());
            ck_assert_uint_eq(st.rows, rows);
            ck_assert_uint_eq(st.cols, 700);
            ck_assert_str_eq(st.name, name);
            for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                const uint32_t batch = batches[bi];
                uint16_t *x = df11_test_random_bf16((size_t)batch * 700, &rng);
                for (int d = 0; d < 2; d++) {
                    const df11_dtype yd = d ? DF11_DTYPE_BF16 : DF11_DTYPE_F32;
                    const size_t esz = d ? 2 : 4;
                    void *ys = malloc((size_t)batch * rows * esz);
                    mm_run(m, &st, x, batch, yd, ys);
                    uint32_t col = 0;
                    for (int i = 0; i < n; i++) {
                        const mm_shape *sh = &parts[combos[c][1 + i]];
                        void *got = mm_columns(ys, batch, rows, col, sh->n, esz);
                        int fused = 0;
#ifdef RT_TEST_CUDA
                        fused = kind == 2 && batch <= fused_max(parts[0].k);
#endif
                        if (fused) {
                            mm_check_reference(sh, source_in(&mm.t, sh->name)->data, x, batch, yd,
                                               got);
                        } else {
                            void *one = malloc((size_t)batch * sh->n * esz);
                            mm_run(m, &pw[i], x, batch, yd, one);
                            ck_assert_msg(!memcmp(one, got, (size_t)batch * sh->n * esz),
                                          "model %d, %s, part %d (%s), batch %u: the stacked y "
                                          "differs from the part's own (seed %#llx)",
                                          kind, st.name, i, sh->name, batch,
                                          (unsigned long long)mm.seed);
                            free(one);
                        }
                        free(got);
                        col += sh->n;
                    }
                    free(ys);
                }
                free(x);
            }
        }
        /* refused: nothing to stack, too many, K differs, a stack in a stack, another
         * model's weight, an altered one */
        df11_weight st, bad[DF11_MAX_STACK + 1], other_w;
        for (int i = 0; i <= DF11_MAX_STACK; i++) bad[i] = w[1];
        ck_assert_int_eq(df11_weight_stack(m, 0, w, &st), DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_weight_stack(m, DF11_MAX_STACK + 1, bad, &st), DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_weight_stack(m, DF11_MAX_STACK, bad, &st), DF11_OK);
        ck_assert_int_eq(df11_weight_stack(NULL, 1, w, &st), DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_weight_stack(m, 1, NULL, &st), DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_weight_stack(m, 1, w, NULL), DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[0].name, &bad[1]), DF11_OK); /* K 51 */
        ck_assert_int_eq(df11_weight_stack(m, 2, bad, &st), DF11_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "columns"));
        ck_assert_int_eq(df11_weight_stack(m, 2, w, &st), DF11_OK);
        bad[0] = st;
        bad[1] = w[0];
        ck_assert_int_eq(df11_weight_stack(m, 2, bad, &st), DF11_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "stacked"));
        df11_model *other = mm_open(kind, DF11_NONLAYER_ARENA, 2);
        ck_assert_int_eq(df11_weight_get(other, parts[0].name, &other_w), DF11_OK);
        bad[0] = w[0];
        bad[1] = other_w;
        ck_assert_int_eq(df11_weight_stack(m, 2, bad, &st), DF11_ERR_INVALID_ARG);
        bad[1] = w[1];
        bad[1].rows++;
        ck_assert_int_eq(df11_weight_stack(m, 2, bad, &st), DF11_ERR_INVALID_ARG);
        /* a stacked weight altered, or used on another model */
        ck_assert_int_eq(df11_weight_stack(m, 2, w, &st), DF11_OK);
        void *dx = dev_alloc(700 * 2), *dy = dev_alloc((size_t)st.rows * 4);
        df11_weight alt = st;
        alt.rows--;
        ck_assert_int_eq(df11_matmul(m, &alt, dx, 1, dy, DF11_DTYPE_F32, NULL),
                         DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_matmul(other, &st, dx, 1, dy, DF11_DTYPE_F32, NULL),
                         DF11_ERR_INVALID_ARG);
        dev_free(dx);
        dev_free(dy);
        df11_model_close(other);
        df11_model_close(m);
    }
}
END_TEST

START_TEST(test_matmul_arena_untouched)
{
    /* A weight the fused path takes (a fixed-code one at a small batch on either backend,
     * a Huffman one on the host) uses no slot and leaves the scheduler alone: all its
     * blocks stay acquirable and the arena sees no decode of its group. (On CUDA the
     * Huffman weight goes through the arena: test_matmul_block_once.) */
    for (int kind = 0; kind <= 2; kind += 2) {
        df11_model *m = mm_open(kind, DF11_NONLAYER_ARENA, 2);
        df11_weight w;
        ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[2].name, &w), DF11_OK);
        uint64_t rng = mm.seed ^ 0x61;
        uint16_t *x = df11_test_random_bf16((size_t)3 * w.cols, &rng);
        float *y = malloc((size_t)3 * w.rows * 4);
        mm_run(m, &w, x, 3, DF11_DTYPE_F32, y);
        df11_model_stats st;
        ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
#ifdef RT_TEST_CUDA
        if (kind == 2)
#endif
        {
            for (uint32_t i = 0; i < st.arena_slots && i < 16; i++)
                ck_assert_msg(st.slot_block[i] == -1, "%s: slot %u holds block %d",
                              kind ? "fixed" : "huffman", i, st.slot_block[i]);
            ck_assert_uint_eq(st.acquires, 0);
        }
        /* while its block is acquired, too */
        ck_assert_int_eq(df11_block_acquire(m, 1, NULL, NULL), DF11_OK);
        mm_run(m, &w, x, 3, DF11_DTYPE_F32, y);
        ck_assert_int_eq(df11_block_release(m, 1, NULL), DF11_OK);
        free(x);
        free(y);
        df11_model_close(m);
    }
}
END_TEST

#ifndef RT_TEST_CUDA
START_TEST(test_matmul_host_cached_blocks)
{
    /* On the host, where the arena has a slot for every block, a layer weight goes through
     * the arena (decoded once, then multiplied from its slot) instead of being decoded at
     * every product; y is the fused path's, bit for bit. */
    for (int kind = 0; kind <= 2; kind += 2) {
        df11_model *fused = mm_open(kind, DF11_NONLAYER_ARENA, 2);
        const uint32_t nb = df11_model_n_blocks(fused);
        ck_assert_uint_gt(nb, 2); /* so that 2 slots leave the fused path on */
        df11_model *cached = mm_open_slots(kind, DF11_NONLAYER_ARENA, 2, nb);
        df11_weight wf, wc;
        ck_assert_int_eq(df11_weight_get(fused, MM_SHAPES[0].name, &wf), DF11_OK);
        ck_assert_int_eq(df11_weight_get(cached, MM_SHAPES[0].name, &wc), DF11_OK);
        uint64_t rng = mm.seed ^ 0x63;
        uint16_t *x = df11_test_random_bf16((size_t)3 * wf.cols, &rng);
        const size_t ysz = (size_t)3 * wf.rows * 4;
        float *yf = malloc(ysz), *yc = malloc(ysz);
        df11_model_stats s0, s1, s2;
        mm_run(fused, &wf, x, 3, DF11_DTYPE_F32, yf);
        ck_assert_int_eq(df11_model_stats_get(fused, &s0), DF11_OK);
        ck_assert_uint_eq(s0.acquires, 0); /* fused: no slot */
        mm_run(cached, &wc, x, 3, DF11_DTYPE_F32, yc);
        ck_assert_int_eq(df11_model_stats_get(cached, &s1), DF11_OK);
        ck_assert_uint_gt(s1.acquires, 0);
        ck_assert_msg(!memcmp(yf, yc, ysz), "%s: the cached product differs from the fused one",
                      kind ? "fixed" : "huffman");
        mm_run(cached, &wc, x, 3, DF11_DTYPE_F32, yc);
        ck_assert_int_eq(df11_model_stats_get(cached, &s2), DF11_OK);
        ck_assert_uint_eq(s2.decodes, s1.decodes); /* found decoded */
        ck_assert(!memcmp(yf, yc, ysz));
        free(x);
        free(yf);
        free(yc);
        df11_model_close(cached);
        df11_model_close(fused);
    }
}
END_TEST
#endif

START_TEST(test_matmul_fixed_corrupt)
{
    /* A fixed-code weight whose row 0 has a base past DF11_FIXED_MAX_BASE (its exponents
     * would wrap), in a file whose checksums were made to match: DF11_ERR_CORRUPT at every
     * batch, from the host's fused decode-dot (which reads the tensor strip by strip, never
     * validated whole) as from the arena, never a product. A backend that checks the
     * tensor at open (CUDA's plans) refuses it there. */
    mm_make_model();
    const mm_shape *sh = &MM_SHAPES[2];
    df11_file *f;
    ck_assert_int_eq(df11_file_open(mm.fixed_path, &f), DF11_OK);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, sh->name, &t), DF11_OK);
    const df11_tensor_info *ti = df11_file_tensor(f, t);
    ck_assert_int_eq(ti->codec, df11_test_fixed_codec());
    const uint64_t at = df11_file_group(f, ti->group)->payload_offset +
                        df11i_file_tensor_layout(f, t)->codebook_offset; /* row 0's base */
    const uint64_t size = df11_file_size(f);
    df11_file_close(f);
    uint8_t *image = malloc(size);
    FILE *fp = fopen(mm.fixed_path, "rb");
    ck_assert(image && fp);
    ck_assert_uint_eq(fread(image, 1, size, fp), size);
    fclose(fp);
    image[at] = DF11_FIXED_MAX_BASE + 1;
    fuzz_df11_fix_checksums(image, size);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/mm_fixed_bad_base.df11", df11_test_tmpdir());
    ck_assert_ptr_nonnull(fp = fopen(bad, "wb"));
    ck_assert_uint_eq(fwrite(image, 1, size, fp), size);
    fclose(fp);
    free(image);
    const uint32_t batches[] = { 1, DF11_FUSED_MAX_BATCH, DF11_FUSED_MAX_BATCH + 1,
                                 fused_max(sh->k) + 1 };
    for (size_t i = 0; i < sizeof batches / sizeof *batches; i++) {
        const uint32_t batch = batches[i];
        df11_model_options o = opts(2);
        o.nonlayer = DF11_NONLAYER_ARENA;
        df11_model *m;
        df11_status s = df11_model_open(bad, &o, &m);
        if (s == DF11_ERR_CORRUPT) continue;
        ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
        df11_weight w;
        if ((s = df11_weight_get(m, sh->name, &w)) == DF11_OK) {
            void *dx = dev_alloc((size_t)batch * sh->k * 2),
                 *dy = dev_alloc((size_t)batch * sh->n * 4);
            uint64_t rng = mm.seed ^ 0x6366;
            uint16_t *x = df11_test_random_bf16((size_t)batch * sh->k, &rng);
            dev_upload(dx, x, (size_t)batch * sh->k * 2);
            s = df11_matmul(m, &w, dx, batch, dy, DF11_DTYPE_F32, NULL);
            free(x);
            dev_free(dx);
            dev_free(dy);
        }
        ck_assert_msg(s == DF11_ERR_CORRUPT, "batch %u: %s %s", batch, df11_strerror(s),
                      df11_last_error_detail());
        df11_model_close(m);
    }
}
END_TEST

START_TEST(test_matmul_block_once)
{
    /* Off the fused path (fixed-code weights past its batch), a product reads its block from the
     * arena: the second weight of a block finds it decoded, no slot stays held, and a block
     * the engine holds is read where it lies. Results stay those of the reference. */
    df11_model *m = mm_open(2, DF11_NONLAYER_ARENA, 2);
    df11_weight a, b;
    ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[0].name, &a), DF11_OK);
    ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[1].name, &b), DF11_OK);
    const uint32_t la = fused_max(a.cols), lb = fused_max(b.cols);
    const uint32_t batch = (la > lb ? la : lb) + 1; /* fused up to it */
    uint64_t rng = mm.seed ^ 0x62;
    uint16_t *xa = df11_test_random_bf16((size_t)batch * a.cols, &rng),
             *xb = df11_test_random_bf16((size_t)batch * b.cols, &rng);
    float *ya = malloc((size_t)batch * a.rows * 4), *ya2 = malloc((size_t)batch * a.rows * 4);
    float *yb = malloc((size_t)batch * b.rows * 4);
    df11_model_stats st0, st1, st2, st3;
    ck_assert_int_eq(df11_model_stats_get(m, &st0), DF11_OK);
    mm_run(m, &a, xa, batch, DF11_DTYPE_F32, ya);
    ck_assert_int_eq(df11_model_stats_get(m, &st1), DF11_OK);
    mm_run(m, &b, xb, batch, DF11_DTYPE_F32, yb);
    ck_assert_int_eq(df11_model_stats_get(m, &st2), DF11_OK);
    ck_assert_uint_gt(st1.decodes, st0.decodes); /* block 0, and the prefetch behind it */
    ck_assert_uint_eq(st2.decodes, st1.decodes); /* block 0 again: found decoded */
    for (uint32_t blk = 0; blk < df11_model_n_blocks(m); blk++) {
        ck_assert_int_eq(df11_block_acquire(m, blk, NULL, NULL), DF11_OK);
        ck_assert_int_eq(df11_block_release(m, blk, NULL), DF11_OK);
    }
    /* held by the engine: the product reads the engine's slot, and gets the same bits */
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_model_stats_get(m, &st2), DF11_OK);
    mm_run(m, &a, xa, batch, DF11_DTYPE_F32, ya2);
    ck_assert_int_eq(df11_model_stats_get(m, &st3), DF11_OK);
    ck_assert_uint_eq(st3.decodes, st2.decodes);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    ck_assert_int_eq(memcmp(ya, ya2, (size_t)batch * a.rows * 4), 0);
    free(xa);
    free(xb);
    free(ya);
    free(ya2);
    free(yb);
    df11_model_close(m);
}
END_TEST

/* --- tiers: blocks streamed from pinned host memory and from the file ---
 *
 * A device budget (memory_limit) found with df11_model_plan keeps a chosen number of
 * blocks in device memory; the rest are streamed through the staging ring. What they serve
 * must be bit for bit what a fully loaded model serves, in any order, pass after pass. */

/* Options under which `path` keeps at least `device` blocks in device memory (the smallest
 * such memory_limit) and streams the rest: host tier up to host_budget, then the file. */
static df11_model_options tier_opts_from(df11_model_options o, const char *path, uint32_t device,
                                         uint64_t host_budget, int from_file, uint32_t stages)
{
    o.host_budget = host_budget;
    o.stream_from_file = from_file;
    o.staging_slots = stages;
    o.memory_limit = 1ull << 40;
    df11_plan p;
    df11_status s = df11_model_plan(path, &o, &p, NULL, 0);
    ck_assert_msg(s == DF11_OK, "plan: %s %s", df11_strerror(s), df11_last_error_detail());
    uint64_t lo = 1, hi = p.device_bytes;
    while (lo < hi) {
        o.memory_limit = lo + (hi - lo) / 2;
        if (df11_model_plan(path, &o, &p, NULL, 0) == DF11_OK && p.blocks_device >= device)
            hi = o.memory_limit;
        else
            lo = o.memory_limit + 1;
    }
    o.memory_limit = lo;
    ck_assert_int_eq(df11_model_plan(path, &o, &p, NULL, 0), DF11_OK);
    ck_assert_msg(p.blocks_host + p.blocks_file > 0, "%s: streaming saves no device memory", path);
    return o;
}

static df11_model_options tier_opts(const char *path, uint32_t device, uint64_t host_budget,
                                    int from_file, uint32_t stages)
{
    return tier_opts_from(opts(2), path, device, host_budget, from_file, stages);
}

static df11_model *tier_open(const char *path, const df11_model_options *o)
{
    df11_model *m = NULL;
    df11_status s = df11_model_open(path, o, &m);
    ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
    return m;
}

/* The first block m reads from the file, and its group's payload (asserted to exist). */
static uint32_t first_file_block(df11_model *m, const df11_group_info **group)
{
    uint32_t block = N_LAYERS;
    for (uint32_t b = 0; b < N_LAYERS && block == N_LAYERS; b++) {
        df11_tier t;
        ck_assert_int_eq(df11_model_block_tier(m, b, &t), DF11_OK);
        if (t == DF11_TIER_FILE) block = b;
    }
    ck_assert_uint_lt(block, N_LAYERS);
    const df11_file *f = df11_model_file(m);
    uint32_t g;
    ck_assert_int_eq(df11_file_layer_group(f, block, &g), DF11_OK);
    *group = df11_file_group(f, g);
    return block;
}

/* The plan df11_model_plan made is the model's: tiers block by block, and its counts. */
static void tier_check_plan(const char *path, const df11_model_options *o, df11_model *m)
{
    df11_tier tiers[N_LAYERS + 8];
    df11_plan p;
    ck_assert_int_eq(df11_model_plan(path, o, &p, tiers, N_LAYERS + 8), DF11_OK);
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_eq(p.blocks_device, st.blocks_device);
    ck_assert_uint_eq(p.blocks_host, st.blocks_host);
    ck_assert_uint_eq(p.blocks_file, st.blocks_file);
    ck_assert_uint_le(p.device_bytes, o->memory_limit);
    ck_assert_int_eq(p.backend, df11_model_backend(m));
    uint32_t first, count;
    ck_assert_int_eq(df11_model_block_range(m, &first, &count), DF11_OK);
    ck_assert_uint_eq(p.blocks_device + p.blocks_host + p.blocks_file, count);
    for (uint32_t b = first; b < first + count; b++) {
        df11_tier t;
        ck_assert_int_eq(df11_model_block_tier(m, b, &t), DF11_OK);
        ck_assert_int_eq(t, tiers[b]);
    }
    if (o->host_budget && o->host_budget != UINT64_MAX) {
        ck_assert_uint_le(p.pinned_bytes, o->host_budget);
        ck_assert_uint_le(st.pinned_bytes, o->host_budget);
    }
}

START_TEST(test_tiers_host)
{
    /* Two of five blocks on the device, spread out (2 and 4), three in pinned host memory;
     * with two stages for three streamed blocks, every pass copies them in again. */
    make_model();
    df11_model_options o = tier_opts(tm.path, 2, UINT64_MAX, 0, 2);
    df11_model *m = tier_open(tm.path, &o);
    tier_check_plan(tm.path, &o, m);
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_eq(st.blocks_device, 2);
    ck_assert_uint_eq(st.blocks_host, 3);
    ck_assert_uint_eq(st.blocks_file, 0);
    df11_tier t0, t4;
    ck_assert_int_eq(df11_model_block_tier(m, 0, &t0), DF11_OK);
    ck_assert_int_eq(df11_model_block_tier(m, 4, &t4), DF11_OK);
    ck_assert_int_eq(t0, DF11_TIER_HOST);
    ck_assert_int_eq(t4, DF11_TIER_DEVICE);
    for (int pass = 0; pass < 3; pass++) run_pass(m, 1);
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_ge(st.fetches, 6); /* 3 streamed blocks x 3 passes, less what stayed */
    ck_assert_uint_ge(st.streamed_h2d_bytes, st.host_tier_bytes * 2);
    ck_assert_uint_eq(st.streamed_file_bytes, 0);
    ck_assert_uint_ge(st.pinned_bytes, st.host_tier_bytes);
    ck_assert_uint_gt(st.staging_ring_bytes, 0);
    df11_model_close(m);
    /* Three stages for four streamed blocks, each block taken several times a pass (the
     * matmul op on each of its weights): every streamed block comes in once a pass, never
     * again because a block prefetched ahead was refilled before its use. */
    o = tier_opts(tm.path, 1, UINT64_MAX, 0, 3);
    m = tier_open(tm.path, &o);
    df11_weight w[N_LAYERS][LAYER_TENSORS - 1];
    static const char *const parts[LAYER_TENSORS - 1] = { "self_attn.q_proj", "self_attn.k_proj",
                                                          "mlp.gate_proj", "mlp.down_proj" };
    for (uint32_t b = 0; b < N_LAYERS; b++)
        for (int i = 0; i < LAYER_TENSORS - 1; i++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", b, parts[i]);
            ck_assert_int_eq(df11_weight_get(m, name, &w[b][i]), DF11_OK);
        }
    void *x = dev_alloc(4 * 3 * D * 2), *y = dev_alloc(4 * 3 * D * 4);
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_eq(st.blocks_host, 4);
    const uint64_t fetched0 = st.fetches, bytes0 = st.streamed_h2d_bytes;
    const int passes = 4;
    for (int pass = 0; pass < passes; pass++)
        for (uint32_t b = 0; b < N_LAYERS; b++)
            for (int i = 0; i < LAYER_TENSORS - 1; i++)
                ck_assert_int_eq(df11_matmul(m, &w[b][i], x, 4, y, DF11_DTYPE_F32, NULL), DF11_OK);
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    /* (and up to a ring's worth prefetched for a pass that does not come) */
    ck_assert_uint_le(st.fetches - fetched0, (uint64_t)passes * 4 + 3);
    ck_assert_uint_le(st.streamed_h2d_bytes - bytes0, (passes + 1) * st.host_tier_bytes);
    dev_free(x);
    dev_free(y);
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

/* A host budget that holds the read buffers and about one block: the rest from the file. */
static df11_model_options tier_opts_file_from(df11_model_options base, const char *path,
                                              uint32_t device, uint32_t stages)
{
    df11_model_options all = tier_opts_from(base, path, device, UINT64_MAX, 0, stages);
    df11_plan p;
    ck_assert_int_eq(df11_model_plan(path, &all, &p, NULL, 0), DF11_OK);
    const uint64_t io = p.pinned_bytes - p.host_tier_bytes;
    const uint64_t one = p.host_tier_bytes / p.blocks_host;
    return tier_opts_from(base, path, device, io + one + one / 2, 1, stages);
}

static df11_model_options tier_opts_file(const char *path, uint32_t device, uint32_t stages)
{
    return tier_opts_file_from(opts(2), path, device, stages);
}

/* VmLck of this process in bytes (the kernel's count of locked pages), or -1. */
static long long vm_locked(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmLck:", 6)) kib = atoll(line + 6);
    if (f) fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

START_TEST(test_tiers_file)
{
    /* One block on the device, about one in pinned memory, the rest read from the file on
     * every pass, in order and then at random, with the pinned bytes inside the budget. */
    make_model();
    df11_model_options o = tier_opts_file(tm.path, 1, 2);
    const long long locked0 = vm_locked();
    df11_model *m = tier_open(tm.path, &o);
    tier_check_plan(tm.path, &o, m);
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_ge(st.blocks_host, 1);
    /* From outside the runtime: what the kernel counts as locked stays within the host
     * budget (a header page per allocation aside), and covers the pinned bytes where the
     * memlock limit let them be locked. */
    const long long locked = vm_locked() - locked0;
    printf("pinned %llu bytes (host budget %llu), VmLck grew by %lld\n",
           (unsigned long long)st.pinned_bytes, (unsigned long long)o.host_budget, locked);
    ck_assert_int_le(locked, (long long)o.host_budget + 16 * 4096);
    if (locked > 0) ck_assert_int_ge(locked, (long long)st.pinned_bytes);
    ck_assert_uint_ge(st.blocks_file, 2);
    for (int pass = 0; pass < 3; pass++) run_pass(m, 1);
    uint64_t rng = df11_test_seed() ^ 0x7e;
    for (int it = 0; it < 40; it++) {
        uint32_t b = (uint32_t)(df11_test_rand(&rng) % N_LAYERS);
        df11_block_view bv;
        df11_status s = df11_block_acquire(m, b, NULL, &bv);
        ck_assert_msg(s == DF11_OK, "acquire %u: %s %s", b, df11_strerror(s),
                      df11_last_error_detail());
        for (uint32_t i = 0; i < bv.n_tensors; i++) check_view(&bv.tensors[i]);
        ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
    }
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_ge(st.streamed_file_bytes, st.file_tier_bytes * 2);
    ck_assert_uint_ge(st.streamed_h2d_bytes, st.streamed_file_bytes);
    ck_assert_uint_le(st.pinned_bytes, o.host_budget);
    ck_assert(st.file_read_ms > 0);
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

/* The op's model with eight more blocks, so that streaming some saves device memory (the
 * arena and the stages are sized by its largest block): Huffman and fixed-code files. */
static void mm_tier_files(char huffman[512], char fixed[512])
{
    mm_make_model();
    const size_t extra = 8;
    df11_tensor_source *t = calloc(mm.t.n + extra, sizeof *t);
    memcpy(t, mm.t.t, mm.t.n * sizeof *t);
    uint64_t rng = mm.seed ^ 0x7a;
    char names[8][64];
    for (size_t i = 0; i < extra; i++) {
        df11_tensor_source *x = &t[mm.t.n + i];
        snprintf(names[i], sizeof names[i], "model.layers.%zu.mlp.x.weight", 4 + i);
        *x = (df11_tensor_source){
            .name = names[i], .dtype = DF11_DTYPE_BF16, .ndim = 2, .shape = { 96, 700 }
        };
        x->data = df11_test_random_bf16(96 * 700, &rng);
    }
    snprintf(huffman, 512, "%s/mm_tiers.df11", df11_test_tmpdir());
    snprintf(fixed, 512, "%s/mm_tiers_fixed.df11", df11_test_tmpdir());
    df11_compress_options co = { 0 };
    co.lane_symbols = 8;
    for (int f = 0; f < 2; f++) {
        co.codec = f ? df11_test_fixed_codec() : DF11_CODEC_EXP_HUFFMAN;
        df11_status s = df11_compress_tensors(f ? fixed : huffman, t, mm.t.n + extra, CONFIG,
                                              strlen(CONFIG), &co, NULL);
        ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    }
    for (size_t i = 0; i < extra; i++) free((void *)t[mm.t.n + i].data);
    free(t);
}

START_TEST(test_tiers_matmul)
{
    /* The op on streamed weights (Huffman and fixed code, every path the batch picks) gives
     * the bits of the same model fully loaded; also with a slot for every block (on the
     * host the arena path then takes every layer weight, its blocks decoded once). */
    char huffman[512], fixed[512];
    mm_tier_files(huffman, fixed);
    const char *paths[2] = { huffman, fixed };
    for (int f = 0; f < 4; f++) {
        df11_model_options full = opts(2);
        df11_model *ref = tier_open(paths[f % 2], &full);
        const uint32_t slots = f < 2 ? 2 : df11_model_n_blocks(ref);
        df11_model_options o = tier_opts_file_from(opts(slots), paths[f % 2], 1, 2);
        df11_model *m = tier_open(paths[f % 2], &o);
        df11_model_stats st;
        ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
        ck_assert_uint_gt(st.blocks_host + st.blocks_file, 0);
#ifndef RT_TEST_CUDA
        const uint64_t decodes_at_open = st.decodes; /* the resident non-layer groups' */
#endif
        uint64_t rng = mm.seed ^ 0x7f;
        const uint32_t batches[] = { 1, 3, 40 };
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < MM_N_SHAPES; i++)
                for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                    const uint32_t batch = batches[bi];
                    df11_weight wr, wm;
                    ck_assert_int_eq(df11_weight_get(ref, MM_SHAPES[i].name, &wr), DF11_OK);
                    ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[i].name, &wm), DF11_OK);
                    uint16_t *x = df11_test_random_bf16((size_t)batch * wr.cols, &rng);
                    const size_t ysz = (size_t)batch * wr.rows * 4;
                    float *yr = malloc(ysz), *ym = malloc(ysz);
                    mm_run(ref, &wr, x, batch, DF11_DTYPE_F32, yr);
                    mm_run(m, &wm, x, batch, DF11_DTYPE_F32, ym);
                    ck_assert_msg(!memcmp(yr, ym, ysz),
                                  "%s batch %u (%s): streamed y differs "
                                  "(seed %#llx)",
                                  MM_SHAPES[i].name, batch, f % 2 ? "fixed" : "huffman",
                                  (unsigned long long)mm.seed);
                    free(x);
                    free(yr);
                    free(ym);
                }
#ifndef RT_TEST_CUDA
        /* a slot for every block: the products went through the arena, and no block was
         * decoded twice (a block read from the file late may be decoded in either pass; the
         * prefetch may decode every block, unused ones too, where the reads come in first;
         * lm_head, resident, was decoded at open) */
        ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
        if (slots > 2) {
            ck_assert_uint_gt(st.acquires, 0);
            ck_assert_uint_le(st.decodes - decodes_at_open, slots);
        }
#endif
        df11_model_close(ref);
        df11_model_close(m);
    }
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_tiers_stack_spread)
{
    /* A stacked weight whose parts lie in eight blocks, seven or more streamed through two
     * staging buffers: a fused call cannot hold them all, so the op takes the parts one by
     * one, and y is what the parts give on their own. */
    char huffman[512], fixed[512];
    mm_tier_files(huffman, fixed);
    df11_model_options o = tier_opts_file(huffman, 1, 2);
    df11_model *m = tier_open(huffman, &o);
    df11_weight parts[8], stacked;
    uint32_t rows = 0;
    for (int i = 0; i < 8; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.mlp.x.weight", 4 + i);
        ck_assert_int_eq(df11_weight_get(m, name, &parts[i]), DF11_OK);
        rows += parts[i].rows;
    }
    ck_assert_int_eq(df11_weight_stack(m, 8, parts, &stacked), DF11_OK);
    uint64_t rng = mm.seed ^ 0x5a;
    uint16_t *x = df11_test_random_bf16(parts[0].cols, &rng);
    float *y = malloc((size_t)rows * 4), *yp = malloc((size_t)rows * 4);
    for (int pass = 0; pass < 2; pass++) {
        mm_run(m, &stacked, x, 1, DF11_DTYPE_F32, y);
        for (uint32_t i = 0, col = 0; i < 8; col += parts[i++].rows) {
            mm_run(m, &parts[i], x, 1, DF11_DTYPE_F32, yp);
            ck_assert_msg(!memcmp(y + col, yp, (size_t)parts[i].rows * 4),
                          "part %u of the stack differs (seed %#llx)", i,
                          (unsigned long long)mm.seed);
        }
    }
    free(x);
    free(y);
    free(yp);
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

/* Flips one byte of `path` at `off`. */
static void flip_byte(const char *path, uint64_t off)
{
    FILE *fp = fopen(path, "r+b");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, (long)off, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, (long)off, SEEK_SET);
    fputc(c ^ 0x10, fp);
    fclose(fp);
}

START_TEST(test_tiers_file_faults)
{
    /* The file changes under a model that streams from it: a corrupt block fails its acquire
     * with DF11_ERR_CHECKSUM (the others still serve their exact bits) until the bytes are
     * back; a truncated file fails with a status; nothing crashes or leaks. */
    make_model();
    char copy[600];
    snprintf(copy, sizeof copy, "%s/streamed.df11", df11_test_tmpdir());
    copy_file(tm.path, copy);
    df11_model_options o = tier_opts(copy, 1, 0, 1, 2);
    df11_model *m = tier_open(copy, &o);
    const df11_group_info *gi;
    const uint32_t bad = first_file_block(m, &gi);
    const uint64_t off = gi->payload_offset + gi->payload_size / 2;
    flip_byte(copy, off);
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t b = 0; b < N_LAYERS; b++) {
            df11_block_view bv;
            df11_status s = df11_block_acquire(m, b, NULL, &bv);
            if (b == bad) {
                ck_assert_msg(s == DF11_ERR_CHECKSUM, "acquire %u: %s %s", b, df11_strerror(s),
                              df11_last_error_detail());
                continue;
            }
            ck_assert_msg(s == DF11_OK, "acquire %u: %s %s", b, df11_strerror(s),
                          df11_last_error_detail());
            for (uint32_t i = 0; i < bv.n_tensors; i++) check_view(&bv.tensors[i]);
            ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
        }
    flip_byte(copy, off); /* back as it was: served again */
    run_pass(m, 1);
    ck_assert_int_eq(truncate(copy, (off_t)gi->payload_offset), 0);
    df11_status s = DF11_OK;
    for (int pass = 0; pass < 2 && s == DF11_OK; pass++)
        for (uint32_t b = 0; b < N_LAYERS && s == DF11_OK; b++)
            if ((s = df11_block_acquire(m, b, NULL, NULL)) == DF11_OK)
                ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
    ck_assert_msg(s == DF11_ERR_TRUNCATED || s == DF11_ERR_IO, "truncated: %s %s", df11_strerror(s),
                  df11_last_error_detail());
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_tiers_host_gather)
{
    /* The embedding kept in pinned host memory (options.host_gather_tensor): gathers give
     * the source rows bit for bit, in chunks and as F32, while device memory holds one
     * payload less; the option's misuses fail at open. */
    make_model();
    const char *emb = "model.embed_tokens.weight";
    df11_model_options o = opts(2);
    o.nonlayer = DF11_NONLAYER_COMPRESSED;
    df11_model *ref = tier_open(tm.path, &o);
    o.host_budget = UINT64_MAX;
    o.host_gather_tensor = emb;
    df11_model *m = tier_open(tm.path, &o);
    df11_model_stats sr, sm;
    ck_assert_int_eq(df11_model_stats_get(ref, &sr), DF11_OK);
    ck_assert_int_eq(df11_model_stats_get(m, &sm), DF11_OK);
    const df11_file *f = df11_model_file(m);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, emb, &t), DF11_OK);
    const uint64_t payload = df11_file_group(f, df11_file_tensor(f, t)->group)->payload_size;
    ck_assert_uint_le(sm.compressed_bytes + payload, sr.compressed_bytes);
    ck_assert_uint_ge(sm.pinned_bytes, payload);
    df11_weight w;
    ck_assert_int_eq(df11_weight_get(m, emb, &w), DF11_OK);
    const df11_tensor_source *src = source(emb);
    uint64_t rng = df11_test_seed() ^ 0x68;
    enum { N_IDS = 300 };
    uint32_t ids[N_IDS];
    for (int i = 0; i < N_IDS; i++) ids[i] = (uint32_t)(df11_test_rand(&rng) % V);
    void *dev = dev_alloc((size_t)N_IDS * D * 4);
    uint16_t *got = malloc((size_t)N_IDS * D * 2);
    float *gotf = malloc((size_t)N_IDS * D * 4);
    for (int rep = 0; rep < 3; rep++) { /* both buffers, then the first again */
        ck_assert_int_eq(df11_rows_gather(m, &w, ids, N_IDS, dev, DF11_DTYPE_BF16, NULL), DF11_OK);
        read_back(got, dev, (size_t)N_IDS * D * 2);
        for (int i = 0; i < N_IDS; i++)
            ck_assert_int_eq(
                memcmp(got + (size_t)i * D, (const uint16_t *)src->data + ids[i] * D, D * 2), 0);
    }
    ck_assert_int_eq(df11_rows_gather(m, &w, ids, N_IDS, dev, DF11_DTYPE_F32, NULL), DF11_OK);
    read_back(gotf, dev, (size_t)N_IDS * D * 4);
    for (int i = 0; i < N_IDS; i++)
        for (int c = 0; c < D; c++)
            ck_assert(gotf[(size_t)i * D + c] ==
                      df11_test_bf16_f32(((const uint16_t *)src->data)[ids[i] * D + c]));
#ifdef RT_TEST_CUDA
    /* multiplied by nothing on the device (x the first row of dev, y past it) */
    ck_assert_int_eq(df11_matmul(m, &w, dev, 1, (char *)dev + (size_t)D * 4, DF11_DTYPE_F32, NULL),
                     DF11_ERR_UNSUPPORTED);
#endif
    dev_free(dev);
    free(got);
    free(gotf);
    df11_model_close(m);
    df11_model_close(ref);
    /* misuses */
    df11_model_options bad = o;
    bad.host_gather_tensor = "model.layers.0.self_attn.q_proj.weight"; /* in a block */
    ck_assert_int_eq(df11_model_open(tm.path, &bad, &m), DF11_ERR_INVALID_ARG);
    bad.host_gather_tensor = "nope";
    ck_assert_int_eq(df11_model_open(tm.path, &bad, &m), DF11_ERR_INVALID_ARG);
    bad.host_gather_tensor = "model.norm.weight"; /* F32, 1-D */
    ck_assert_int_eq(df11_model_open(tm.path, &bad, &m), DF11_ERR_INVALID_ARG);
    bad = o;
    bad.nonlayer = DF11_NONLAYER_RESIDENT;
    ck_assert_int_eq(df11_model_open(tm.path, &bad, &m), DF11_ERR_INVALID_ARG);
    bad = o;
    bad.host_budget = 0;
    ck_assert_int_eq(df11_model_open(tm.path, &bad, &m), DF11_ERR_INVALID_ARG);
    bad.host_budget = 4096;
    ck_assert_int_eq(df11_model_open(tm.path, &bad, &m), DF11_ERR_NO_MEMORY);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_tiers_pread)
{
    /* Without io_uring (forced here; ENOSYS/EPERM in the wild): loading and the file tier
     * read with pread, serve the same bits, say so in stats.io_note; a file cut short fails
     * the open, and one cut inside a streamed payload fails that block's acquire, with
     * DF11_ERR_TRUNCATED. */
    make_model();
    const int was = df11i_reader_force_pread(1);
    df11_model_options o = tier_opts_file(tm.path, 1, 2);
    df11_model *m = tier_open(tm.path, &o);
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_ptr_nonnull(st.io_note);
    ck_assert_ptr_nonnull(strstr(st.io_note, "pread"));
    ck_assert_uint_ge(st.blocks_file, 1);
    for (int pass = 0; pass < 3; pass++) run_pass(m, 1);
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    ck_assert_uint_ge(st.streamed_file_bytes, 2 * st.file_tier_bytes);
    df11_model_close(m);
    char bad[600];
    truncated_copy("pread-truncated.df11", 5000, bad, sizeof bad);
    df11_model_options plain = opts(2);
    ck_assert_int_eq(df11_model_open(bad, &plain, &m), DF11_ERR_TRUNCATED);
    /* cut while streaming: the first file-tier block's payload ends early */
    truncated_copy("pread-streamed.df11", 0, bad, sizeof bad);
    m = tier_open(bad, &o);
    const df11_group_info *gi;
    const uint32_t cut_block = first_file_block(m, &gi);
    ck_assert_int_eq(truncate(bad, (off_t)gi->payload_offset + 16), 0);
    df11_status s = df11_block_acquire(m, cut_block, NULL, NULL);
    ck_assert_msg(s == DF11_ERR_TRUNCATED, "acquire %u: %s %s", cut_block, df11_strerror(s),
                  df11_last_error_detail());
    df11_model_close(m);
    df11i_reader_force_pread(was);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_reader_chunks)
{
    /* A group read in several DF11_READ_CHUNK requests, whose checksum the reader takes chunk
     * by chunk as the reads arrive: through io_uring and through pread alike, the payload
     * comes back exact, a byte flipped in the first, a middle or the last (partial) chunk
     * fails the read with DF11_ERR_CHECKSUM before the sink sees it, and the same read
     * succeeds again once the byte is back. */
    uint64_t rng = df11_test_seed();
    const uint64_t rows = 4608, cols = 2048; /* 18 MiB of BF16, stored as it is: 4.5 chunks */
    uint16_t *w = malloc(rows * cols * 2);
    ck_assert_ptr_nonnull(w);
    df11_test_fill_weights(w, rows * cols, cols, &rng);
    df11_tensor_source t = { .name = "model.layers.0.mlp.down_proj.weight",
                             .dtype = DF11_DTYPE_BF16,
                             .ndim = 2,
                             .shape = { rows, cols },
                             .data = w };
    char path[600];
    snprintf(path, sizeof path, "%s/chunks.df11", df11_test_tmpdir());
    df11_compress_options co = { 0 };
    co.store_raw = 1;
    ck_assert_int_eq(df11_compress_tensors(path, &t, 1, CONFIG, strlen(CONFIG), &co, NULL),
                     DF11_OK);
    free(w);
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
    uint32_t g;
    ck_assert_int_eq(df11_file_layer_group(f, 0, &g), DF11_OK);
    const df11_group_info *gi = df11_file_group(f, g);
    ck_assert_uint_gt(gi->payload_size, 4ull * DF11_READ_CHUNK);
    ck_assert_uint_ne(gi->payload_size % DF11_READ_CHUNK, 0);
    const uint64_t size = df11i_align_up(gi->payload_size, DF11_READ_ALIGN);
    void *bufs[2] = { aligned_alloc(DF11_READ_ALIGN, size), aligned_alloc(DF11_READ_ALIGN, size) };
    reader_seen seen = { .f = f };
    df11i_read_sink sink = { .consume = seen_consume, .reuse = seen_reuse, .ctx = &seen };
    const uint64_t at[3] = { gi->payload_offset + 100,
                             gi->payload_offset + 2 * DF11_READ_CHUNK + 4099,
                             gi->payload_offset + gi->payload_size - 1 };
    for (int pread_only = 0; pread_only < 2; pread_only++) {
        const int was = df11i_reader_force_pread(pread_only);
        seen.next = g;
        ck_assert_int_eq(df11i_read_groups(f, g, 1, bufs, size, &sink), DF11_OK);
        ck_assert_uint_eq(seen.next, g + 1);
        for (int i = 0; i < 3; i++) {
            flip_byte(path, at[i]);
            seen.next = g;
            df11_status s = df11i_read_groups(f, g, 1, bufs, size, &sink);
            ck_assert_msg(s == DF11_ERR_CHECKSUM, "byte %d, pread %d: %s %s", i, pread_only,
                          df11_strerror(s), df11_last_error_detail());
            ck_assert_uint_eq(seen.next, g); /* the sink never had it */
            flip_byte(path, at[i]);
            ck_assert_int_eq(df11i_read_groups(f, g, 1, bufs, size, &sink), DF11_OK);
            ck_assert_uint_eq(seen.next, g + 1);
        }
        df11i_reader_force_pread(was);
    }
    free(bufs[0]);
    free(bufs[1]);
    df11_file_close(f);
}
END_TEST

/* The last error detail contains `want`. */
static void detail_has(const char *want)
{
    ck_assert_msg(strstr(df11_last_error_detail(), want), "detail '%s' lacks '%s'",
                  df11_last_error_detail(), want);
}

START_TEST(test_tiers_errors)
{
    make_model();
    df11_model *m = (df11_model *)1;
    df11_model_options o = tier_opts(tm.path, 1, UINT64_MAX, 0, 2);
    df11_plan p;
    /* a device budget below arena + stages + non-layer groups names the minimum */
    df11_model_options tiny = o;
    tiny.memory_limit = 4096;
    ck_assert_int_eq(df11_model_open(tm.path, &tiny, &m), DF11_ERR_DEVICE_MEMORY);
    detail_has("need at least");
    ck_assert_ptr_null(m);
    ck_assert_int_eq(df11_model_plan(tm.path, &tiny, &p, NULL, 0), DF11_ERR_DEVICE_MEMORY);
    /* no tier allowed: the old error, which says how to stream */
    df11_model_options none = o;
    none.host_budget = 0;
    none.memory_limit = 1ull << 40;
    ck_assert_int_eq(df11_model_plan(tm.path, &none, &p, NULL, 0), DF11_OK);
    none.memory_limit = p.device_bytes - 1;
    ck_assert_int_eq(df11_model_open(tm.path, &none, &m), DF11_ERR_DEVICE_MEMORY);
    detail_has("host budget");
    /* a host budget below the read buffers, or too small for the blocks without the file */
    df11_model_options host = o;
    host.host_budget = 4096;
    ck_assert_int_eq(df11_model_open(tm.path, &host, &m), DF11_ERR_NO_MEMORY);
    detail_has("read buffers");
    ck_assert_int_eq(df11_model_plan(tm.path, &o, &p, NULL, 0), DF11_OK);
    host.host_budget = p.pinned_bytes - 1;
    ck_assert_int_eq(df11_model_open(tm.path, &host, &m), DF11_ERR_NO_MEMORY);
    detail_has("stream the rest from the file");
    host.stream_from_file = 1; /* ... which the file then takes */
    ck_assert_int_eq(df11_model_plan(tm.path, &host, &p, NULL, 0), DF11_OK);
    ck_assert_uint_ge(p.blocks_file, 1);
    /* the ring's size */
    df11_model_options ring = o;
    ring.staging_slots = 1;
    ck_assert_int_eq(df11_model_open(tm.path, &ring, &m), DF11_ERR_INVALID_ARG);
    ring.staging_slots = DF11_MAX_STAGING + 1;
    ck_assert_int_eq(df11_model_plan(tm.path, &ring, &p, NULL, 0), DF11_ERR_INVALID_ARG);
    /* arguments */
    ck_assert_int_eq(df11_model_plan(tm.path, &o, NULL, NULL, 0), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_model_plan(tm.path, &o, &p, NULL, 3), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_model_plan("/nonexistent/x.df11", &o, &p, NULL, 0), DF11_ERR_IO);
    m = tier_open(tm.path, &o);
    df11_tier t;
    ck_assert_int_eq(df11_model_block_tier(m, N_LAYERS, &t), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_model_block_tier(m, 0, NULL), DF11_ERR_INVALID_ARG);
    df11_model_close(m);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

/* --- a range of blocks: one file split over several models (one per device) ---
 *
 * Models over consecutive ranges serve together exactly what one model of the whole file
 * serves; a block outside a model's range, its tensors and weights are not found there. */

static df11_model_options range_opts(uint32_t first, uint32_t count)
{
    df11_model_options o = opts(2);
    o.first_block = first;
    o.block_count = count;
    return o;
}

static df11_model *range_open(const char *path, const df11_model_options *o, int bf16)
{
    df11_model *m = NULL;
    df11_status s = bf16 ? df11_model_open_bf16(path, o, &m) : df11_model_open(path, o, &m);
    ck_assert_msg(s == DF11_OK, "open %u+%u: %s %s", o->first_block, o->block_count,
                  df11_strerror(s), df11_last_error_detail());
    return m;
}

/* Every arena slot of m holds a block of its range, or nothing. */
static void range_slots_inside(df11_model *m)
{
    uint32_t first, count;
    ck_assert_int_eq(df11_model_block_range(m, &first, &count), DF11_OK);
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    for (uint32_t i = 0; i < st.arena_slots && i < 16; i++)
        ck_assert_msg(st.slot_block[i] < 0 || ((uint32_t)st.slot_block[i] >= first &&
                                               (uint32_t)st.slot_block[i] < first + count),
                      "slot %u holds block %d, outside %u..%u", i, st.slot_block[i], first,
                      first + count - 1);
}

/* A pass over the model's range, each tensor checked against the source bits; after its
 * last block, the prefetch has wrapped to the range's first block (an arena model). */
static void range_pass(df11_model *m, int arena)
{
    uint32_t first, count;
    ck_assert_int_eq(df11_model_block_range(m, &first, &count), DF11_OK);
    for (uint32_t b = first; b < first + count; b++) {
        df11_block_view bv;
        df11_status s = df11_block_acquire(m, b, NULL, &bv);
        ck_assert_msg(s == DF11_OK, "acquire %u: %s %s", b, df11_strerror(s),
                      df11_last_error_detail());
        ck_assert_uint_eq(bv.n_tensors, LAYER_TENSORS);
        for (uint32_t i = 0; i < bv.n_tensors; i++) check_view(&bv.tensors[i]);
        range_slots_inside(m);
        ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
    }
    if (!arena || count < 2) return;
    /* a first block still being read from the file is decoded when acquired, not before */
    df11_tier tier;
    ck_assert_int_eq(df11_model_block_tier(m, first, &tier), DF11_OK);
    if (tier == DF11_TIER_FILE) return;
    df11_model_stats st;
    ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
    int wrapped = 0;
    for (uint32_t i = 0; i < st.arena_slots; i++) wrapped |= st.slot_block[i] == (int32_t)first;
    ck_assert_msg(wrapped, "after block %u the prefetch did not wrap to block %u",
                  first + count - 1, first);
}

/* Every call that names block `b` (outside m's range) fails with DF11_ERR_NOT_FOUND. */
static void range_refuses(df11_model *m, uint32_t b, const char *range)
{
    char name[128], want[96];
    snprintf(want, sizeof want, "block %u is not served by this model (blocks %s)", b, range);
    ck_assert_int_eq(df11_block_acquire(m, b, NULL, NULL), DF11_ERR_NOT_FOUND);
    detail_has(want);
    ck_assert_int_eq(df11_block_prefetch(m, b), DF11_ERR_NOT_FOUND);
    detail_has(want);
    ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_ERR_NOT_FOUND);
    df11_tier t;
    ck_assert_int_eq(df11_model_block_tier(m, b, &t), DF11_ERR_NOT_FOUND);
    snprintf(name, sizeof name, "model.layers.%u.self_attn.q_proj.weight", b);
    df11_tensor_view v;
    ck_assert_int_eq(df11_tensor_get(m, name, NULL, &v), DF11_ERR_NOT_FOUND);
    detail_has(want);
    ck_assert_int_eq(df11_tensor_release(m, name, NULL), DF11_ERR_NOT_FOUND);
    uint32_t id;
    ck_assert_int_eq(df11_tensor_id(m, name, &id), DF11_OK); /* the file's numbering */
    ck_assert_int_eq(df11_tensor_get_id(m, id, NULL, &v), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_tensor_release_id(m, id, NULL), DF11_ERR_NOT_FOUND);
    df11_weight w;
    ck_assert_int_eq(df11_weight_get(m, name, &w), DF11_ERR_NOT_FOUND);
    detail_has(want);
}

START_TEST(test_range_halves)
{
    make_model();
    for (int bf16 = 0; bf16 < 2; bf16++) {
        const char *path = bf16 ? tm.st_path : tm.path;
        df11_model_options fo = opts(2), ao = range_opts(0, 2), bo = range_opts(2, 0);
        df11_model *full = range_open(path, &fo, bf16), *a = range_open(path, &ao, bf16),
                   *b = range_open(path, &bo, bf16);
        uint32_t first, count;
        ck_assert_int_eq(df11_model_block_range(full, &first, &count), DF11_OK);
        ck_assert(first == 0 && count == N_LAYERS);
        ck_assert_int_eq(df11_model_block_range(b, &first, &count), DF11_OK);
        ck_assert(first == 2 && count == N_LAYERS - 2);
        ck_assert_uint_eq(df11_model_n_blocks(a), N_LAYERS); /* the file's numbering */
        for (int pass = 0; pass < 2; pass++) {
            range_pass(a, !bf16);
            range_pass(b, !bf16);
        }
        range_refuses(a, 2, "0..1");
        range_refuses(a, 4, "0..1");
        range_refuses(b, 0, "2..4");
        ck_assert_int_eq(df11_block_acquire(a, N_LAYERS, NULL, NULL), DF11_ERR_NOT_FOUND);
        detail_has("the model has 5 blocks");
        /* both halves serve the non-layer tensors */
        const char *nonlayer[] = { "model.embed_tokens.weight", "model.norm.weight",
                                   "lm_head.weight" };
        for (int i = 0; i < 3; i++)
            for (int h = 0; h < 2; h++) {
                df11_model *m = h ? b : a;
                df11_tensor_view v;
                ck_assert_int_eq(df11_tensor_get(m, nonlayer[i], NULL, &v), DF11_OK);
                check_view(&v);
                ck_assert_int_eq(df11_tensor_release(m, nonlayer[i], NULL), DF11_OK);
            }
        /* the halves hold the layers once between them, the non-layer groups each */
        df11_model_stats sf, sa, sb;
        df11_model_stats_get(full, &sf);
        df11_model_stats_get(a, &sa);
        df11_model_stats_get(b, &sb);
        uint64_t nonlayer_bf16 = 0;
        for (int i = 0; i < 3; i++) {
            const df11_tensor_source *t = source(nonlayer[i]);
            nonlayer_bf16 +=
                t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1) * df11_dtype_size(t->dtype);
        }
        ck_assert_uint_eq(sa.bf16_bytes + sb.bf16_bytes, sf.bf16_bytes + nonlayer_bf16);
        ck_assert_uint_lt(sa.pool_reserved, sf.pool_reserved);
        ck_assert_uint_lt(sb.pool_reserved, sf.pool_reserved);
        if (!bf16) {
            /* RESIDENT: non-layer groups decoded, each half holds its layers' payloads (and
             * at most the pool's alignment after each) */
            const df11_file *f = df11_model_file(a);
            uint64_t payload[2] = { 0, 0 };
            for (uint32_t blk = 0; blk < N_LAYERS; blk++) {
                uint32_t g;
                ck_assert_int_eq(df11_file_layer_group(f, blk, &g), DF11_OK);
                payload[blk >= 2] += df11_file_group(f, g)->payload_size;
            }
            const uint64_t slack = 4096 + 16; /* alignment before, and padding of, each */
            ck_assert_uint_ge(sa.compressed_bytes, payload[0]);
            ck_assert_uint_lt(sa.compressed_bytes, payload[0] + 2 * slack);
            ck_assert_uint_ge(sb.compressed_bytes, payload[1]);
            ck_assert_uint_lt(sb.compressed_bytes, payload[1] + 3 * slack);
            ck_assert_uint_eq(sa.blocks_device, 2);
            ck_assert_uint_eq(sb.blocks_device, N_LAYERS - 2);
            ck_assert_uint_eq(sa.acquires, 2 * 2);
        } else {
            /* every group resident: the halves' layers add up, the non-layer ones twice */
            ck_assert_uint_lt(sa.resident_bytes, sf.resident_bytes);
            ck_assert_uint_lt(sb.resident_bytes, sf.resident_bytes);
            ck_assert_uint_gt(sa.resident_bytes + sb.resident_bytes, sf.resident_bytes);
        }
        df11_model_close(full);
        df11_model_close(a);
        df11_model_close(b);
    }
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

/* The host copy delay is process-wide: set by a checked fixture, whose teardown restores it
 * even where an assertion fails (under CK_FORK=no the later tests share the process). */
static unsigned copy_delay_before;
static void late_copies_setup(void) { copy_delay_before = df11i_host_copy_delay(20000); }
static void late_copies_teardown(void) { df11i_host_copy_delay(copy_delay_before); }

/* A range's served groups come in runs (the non-layer groups, then its blocks), read a run
 * a call on the same two staging buffers. With the backend's copies out of them running late
 * (the host backend's test hook; on CUDA a busy GPU), no group's bytes may be overwritten
 * by the next run before its copy read them: under COMPRESSED the non-layer payloads are
 * kept as copied, and read back bit for bit. */
START_TEST(test_range_late_copies)
{
    make_model();
    const uint32_t ranges[][2] = { { 2, 0 }, { 1, 2 } };
    const char *nonlayer[] = { "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight" };
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        df11_model_options o = range_opts(ranges[r][0], ranges[r][1]);
        o.nonlayer = DF11_NONLAYER_COMPRESSED;
        df11_model *m = range_open(tm.path, &o, 0);
        for (int i = 0; i < 3; i++) {
            df11_tensor_view v;
            df11_status s = df11_tensor_get(m, nonlayer[i], NULL, &v);
            ck_assert_msg(s == DF11_OK, "blocks %u+: %s: %s %s", ranges[r][0], nonlayer[i],
                          df11_strerror(s), df11_last_error_detail());
            check_view(&v);
            ck_assert_int_eq(df11_tensor_release(m, nonlayer[i], NULL), DF11_OK);
        }
        range_pass(m, 1);
        df11_model_close(m);
    }
}
END_TEST

START_TEST(test_range_errors)
{
    make_model();
    df11_model *m = (df11_model *)1;
    df11_plan p;
    const uint32_t bad[][2] = {
        { N_LAYERS, 0 }, { N_LAYERS, 1 }, { 3, 3 }, { 0, N_LAYERS + 1 }, { 1, UINT32_MAX }
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        df11_model_options o = range_opts(bad[i][0], bad[i][1]);
        ck_assert_int_eq(df11_model_open(tm.path, &o, &m), DF11_ERR_INVALID_ARG);
        detail_has("the model has blocks 0..4");
        ck_assert_ptr_null(m);
        ck_assert_int_eq(df11_model_open_bf16(tm.st_path, &o, &m), DF11_ERR_INVALID_ARG);
        ck_assert_int_eq(df11_model_plan(tm.path, &o, &p, NULL, 0), DF11_ERR_INVALID_ARG);
    }
    /* the whole file named explicitly, and an options struct from before the range */
    df11_model_options o = range_opts(0, N_LAYERS);
    m = range_open(tm.path, &o, 0);
    uint32_t first = 9, count = 9;
    ck_assert_int_eq(df11_model_block_range(m, &first, &count), DF11_OK);
    ck_assert(first == 0 && count == N_LAYERS);
    ck_assert_int_eq(df11_model_block_range(m, NULL, &count), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_model_block_range(NULL, &first, &count), DF11_ERR_INVALID_ARG);
    df11_model_close(m);
    o = range_opts(3, 1);
    o.size = offsetof(df11_model_options, first_block);
    m = range_open(tm.path, &o, 0);
    ck_assert_int_eq(df11_model_block_range(m, &first, &count), DF11_OK);
    ck_assert(first == 0 && count == N_LAYERS);
    df11_model_close(m);
    /* the plan of a range counts its blocks only and leaves the others' tiers alone */
    o = range_opts(1, 2);
    df11_tier tiers[N_LAYERS];
    for (int b = 0; b < N_LAYERS; b++) tiers[b] = (df11_tier)99;
    ck_assert_int_eq(df11_model_plan(tm.path, &o, &p, tiers, N_LAYERS), DF11_OK);
    ck_assert_uint_eq(p.blocks_device, 2);
    ck_assert_int_eq(tiers[0], 99);
    ck_assert_int_eq(tiers[1], DF11_TIER_DEVICE);
    ck_assert_int_eq(tiers[2], DF11_TIER_DEVICE);
    ck_assert_int_eq(tiers[3], 99);
    df11_plan pf;
    df11_model_options fo = opts(2);
    ck_assert_int_eq(df11_model_plan(tm.path, &fo, &pf, NULL, 0), DF11_OK);
    ck_assert_uint_lt(p.device_tier_bytes, pf.device_tier_bytes);
    ck_assert_uint_lt(p.device_bytes, pf.device_bytes);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_range_tiers)
{
    /* Blocks 1..4 of the file with one of them on the device and the others streamed (from
     * pinned memory, then partly from the file): the plan is the model's, only those blocks
     * are fetched, the ring's prefetch wraps from block 4 to block 1, and every pass serves
     * the source bits. */
    make_model();
    for (int from_file = 0; from_file < 2; from_file++) {
        df11_model_options o = tier_opts_from(range_opts(1, 4), tm.path, 1, UINT64_MAX, 0, 2);
        if (from_file) {
            df11_plan p;
            ck_assert_int_eq(df11_model_plan(tm.path, &o, &p, NULL, 0), DF11_OK);
            const uint64_t one = p.host_tier_bytes / p.blocks_host;
            o = tier_opts_from(range_opts(1, 4), tm.path, 1,
                               p.pinned_bytes - p.host_tier_bytes + one + one / 2, 1, 2);
        }
        df11_model *m = tier_open(tm.path, &o);
        tier_check_plan(tm.path, &o, m);
        df11_model_stats st;
        ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
        ck_assert_uint_eq(st.blocks_device + st.blocks_host + st.blocks_file, 4);
        ck_assert_uint_ge(st.blocks_host + st.blocks_file, 2);
        if (from_file) ck_assert_uint_ge(st.blocks_file, 1);
        for (int pass = 0; pass < 3; pass++) range_pass(m, 1);
        range_refuses(m, 0, "1..4");
        ck_assert_int_eq(df11_model_stats_get(m, &st), DF11_OK);
        const uint64_t streamed = st.host_tier_bytes + st.file_tier_bytes;
        ck_assert_uint_ge(st.streamed_h2d_bytes, 2 * streamed);
        /* three passes, and a ring's worth ahead: nothing else was ever copied in */
        ck_assert_uint_le(st.fetches, 3 * (st.blocks_host + st.blocks_file) + 3);
        df11_model_close(m);
    }
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_range_matmul)
{
    /* The op on models of a range gives the bits the whole file's model gives, for every
     * codec and path; the weights of other blocks are not found. Blocks 1..3 hold
     * MM_SHAPES' c, d and e; lm_head is served by every range. */
    mm_make_model();
    const char *paths[3] = { mm.t.path, mm.t.st_path, mm.fixed_path };
    uint64_t rng = mm.seed ^ 0x52;
    for (int f = 0; f < 3; f++) {
        df11_model_options fo = opts(2), ro = range_opts(1, 0);
        df11_model *full = range_open(paths[f], &fo, f == 1),
                   *m = range_open(paths[f], &ro, f == 1);
        for (size_t i = 0; i < MM_N_SHAPES; i++) {
            df11_weight wf, wm;
            ck_assert_int_eq(df11_weight_get(full, MM_SHAPES[i].name, &wf), DF11_OK);
            if (!strncmp(MM_SHAPES[i].name, "model.layers.0.", 15)) {
                ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[i].name, &wm), DF11_ERR_NOT_FOUND);
                detail_has("not served by this model (blocks 1..3)");
                continue;
            }
            ck_assert_int_eq(df11_weight_get(m, MM_SHAPES[i].name, &wm), DF11_OK);
            const uint32_t batches[] = { 1, 3, 40 };
            for (size_t bi = 0; bi < 3; bi++) {
                const uint32_t batch = batches[bi];
                uint16_t *x = df11_test_random_bf16((size_t)batch * wf.cols, &rng);
                const size_t ysz = (size_t)batch * wf.rows * 4;
                float *yf = malloc(ysz), *ym = malloc(ysz);
                mm_run(full, &wf, x, batch, DF11_DTYPE_F32, yf);
                mm_run(m, &wm, x, batch, DF11_DTYPE_F32, ym);
                ck_assert_msg(!memcmp(yf, ym, ysz), "%s batch %u (file %d): y differs (seed %#llx)",
                              MM_SHAPES[i].name, batch, f, (unsigned long long)mm.seed);
                free(x);
                free(yf);
                free(ym);
            }
        }
        df11_model_close(full);
        df11_model_close(m);
    }
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

#ifdef RT_TEST_EXTRA /* cases a including file adds (tests/test_gpu_runtime.c) */
static void RT_TEST_EXTRA(Suite *s);
#endif

static Suite *runtime_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create(RT_BACKEND == DF11_BACKEND_HOST ? "host" : "cuda");
    tcase_add_test(tc, test_open_and_pass);
    tcase_add_test(tc, test_more_slots_and_prefetch);
    tcase_add_test(tc, test_random_schedule);
    tcase_add_test(tc, test_prefetch_off);
    tcase_add_test(tc, test_lean_and_prefetch_after);
    tcase_add_test(tc, test_nonlayer_arena);
    tcase_add_test(tc, test_errors_names);
    tcase_add_test(tc, test_errors_release);
    tcase_add_test(tc, test_errors_busy);
    tcase_add_test(tc, test_errors_memory_limit);
    tcase_add_test(tc, test_errors_corrupt);
    tcase_add_test(tc, test_errors_truncated);
    tcase_add_test(tc, test_file_gone_while_open);
    tcase_add_test(tc, test_two_models);
    tcase_add_test(tc, test_bf16_model);
    tcase_add_test(tc, test_provider);
    tcase_add_test(tc, test_memstat_live);
    tcase_add_test(tc, test_memstat_page_read);
    tcase_add_test(tc, test_stats_page_mode);
    tcase_add_test(tc, test_stats_page_unavailable);
    tcase_add_test(tc, test_reader);
    tcase_add_test(tc, test_reader_chunks);
    tcase_add_test(tc, test_matmul_reference);
    tcase_add_test(tc, test_weight_get_shapes);
    tcase_add_test(tc, test_matmul_errors);
    tcase_add_test(tc, test_matmul_stacked);
    tcase_add_test(tc, test_matmul_stacked_one_matrix);
    tcase_add_test(tc, test_matmul_arena_untouched);
#ifndef RT_TEST_CUDA
    tcase_add_test(tc, test_matmul_host_cached_blocks);
#endif
    tcase_add_test(tc, test_matmul_fixed_corrupt);
    tcase_add_test(tc, test_matmul_block_once);
    tcase_add_test(tc, test_tiers_host);
    tcase_add_test(tc, test_tiers_file);
    tcase_add_test(tc, test_tiers_matmul);
    tcase_add_test(tc, test_tiers_stack_spread);
    tcase_add_test(tc, test_tiers_file_faults);
    tcase_add_test(tc, test_tiers_errors);
    tcase_add_test(tc, test_tiers_host_gather);
    tcase_add_test(tc, test_tiers_pread);
    tcase_add_test(tc, test_range_halves);
    tcase_add_test(tc, test_range_errors);
    tcase_add_test(tc, test_range_tiers);
    tcase_add_test(tc, test_range_matmul);
#ifndef RT_TEST_CUDA
    tcase_add_test(tc, test_host_backend_streams);
    tcase_add_test(tc, test_matmul_threads);
#endif
    suite_add_tcase(s, tc);
    TCase *late = tcase_create("late_copies");
    tcase_add_checked_fixture(late, late_copies_setup, late_copies_teardown);
    tcase_add_test(late, test_range_late_copies);
    suite_add_tcase(s, late);
#ifdef RT_TEST_EXTRA
    RT_TEST_EXTRA(s);
#endif
    return s;
}

int main(void)
{
    if (rt_skip_without_gpu()) return 77;
    return df11_test_run(runtime_suite());
}
