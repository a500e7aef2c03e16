/* The API for engine authors on the host backend: hyperparameters from config.json
 * (df11_hparams_parse on real and hostile configs, df11_model_hparams on df11 and BF16
 * models), the dtype conversions, tensors resolved once to an id and the order of a block
 * view, and df11_tensor_release under every non-layer policy. */
#include <check.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "df11/compress.h"
#include "df11/runtime.h"
#include "tests/testutil.h"
#include "writer/safetensors_write.h"

/* --- hyperparameters --- */

static df11_status parse(const char *json, df11_hparams *h)
{
    memset(h, 0xAB, sizeof *h); /* nothing may be left from before */
    h->size = sizeof *h;
    return df11_hparams_parse(json, strlen(json), h);
}

#define BASE                                                                                       \
    "\"hidden_size\":64,\"intermediate_size\":160,\"num_hidden_layers\":2,"                        \
    "\"num_attention_heads\":4,\"vocab_size\":100"

START_TEST(hparams_llama3)
{
    /* Llama-3.2's config, sizes shrunk. */
    const char *json =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":64,"
        "\"intermediate_size\":160,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
        "\"num_key_value_heads\":2,\"head_dim\":32,\"vocab_size\":300,"
        "\"max_position_embeddings\":131072,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,"
        "\"rope_scaling\":{\"factor\":32.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,"
        "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
        "\"tie_word_embeddings\":true,\"bos_token_id\":7,\"eos_token_id\":[11,12,13],"
        "\"attention_bias\":false,\"hidden_act\":\"silu\",\"torch_dtype\":\"bfloat16\"}";
    df11_hparams h;
    ck_assert_int_eq(parse(json, &h), DF11_OK);
    ck_assert_uint_eq(h.size, sizeof h);
    ck_assert_str_eq(h.model_type, "llama");
    ck_assert_str_eq(h.architecture, "LlamaForCausalLM");
    ck_assert_uint_eq(h.hidden_size, 64);
    ck_assert_uint_eq(h.intermediate_size, 160);
    ck_assert_uint_eq(h.n_layers, 2);
    ck_assert_uint_eq(h.n_heads, 4);
    ck_assert_uint_eq(h.n_kv_heads, 2);
    ck_assert_uint_eq(h.head_dim, 32);
    ck_assert_int_ne(h.head_dim_explicit, 0);
    ck_assert_uint_eq(h.vocab_size, 300);
    ck_assert_uint_eq(h.max_positions, 131072);
    ck_assert_float_eq(h.rms_norm_eps, 1e-5f);
    ck_assert_float_eq(h.rope_theta, 500000.0f);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_LLAMA3);
    ck_assert_str_eq(h.rope.name, "llama3");
    ck_assert_float_eq(h.rope.factor, 32.0f);
    ck_assert_float_eq(h.rope.low_freq_factor, 1.0f);
    ck_assert_float_eq(h.rope.high_freq_factor, 4.0f);
    ck_assert_uint_eq(h.rope.original_max_positions, 8192);
    ck_assert_int_ne(h.tie_word_embeddings, 0);
    ck_assert_int_eq(h.bos_token_id, 7);
    ck_assert_int_eq(h.eos_token_id, 11);
    ck_assert_uint_eq(h.n_eos_token_ids, 3);
    ck_assert_int_eq(h.eos_token_ids[2], 13);
    ck_assert_uint_eq(h.sliding_window, 0);
    ck_assert_int_eq(h.attention_bias, 0);
    ck_assert_str_eq(h.hidden_act, "silu");
}
END_TEST

START_TEST(hparams_defaults)
{
    df11_hparams h;
    ck_assert_int_eq(parse("{" BASE ",\"bos_token_id\":-1,\"sliding_window\":null}", &h), DF11_OK);
    ck_assert_str_eq(h.model_type, "");
    ck_assert_str_eq(h.architecture, "");
    ck_assert_uint_eq(h.n_kv_heads, 4);
    ck_assert_uint_eq(h.head_dim, 16); /* 64 / 4 */
    ck_assert_int_eq(h.head_dim_explicit, 0);
    ck_assert_uint_eq(h.max_positions, 2048);
    ck_assert_float_eq(h.rms_norm_eps, 1e-6f);
    ck_assert_float_eq(h.rope_theta, 10000.0f);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_NONE);
    ck_assert_str_eq(h.rope.name, "");
    ck_assert_float_eq(h.rope.factor, 1.0f);
    ck_assert_int_eq(h.tie_word_embeddings, 0);
    ck_assert_int_eq(h.bos_token_id, -1);
    ck_assert_int_eq(h.eos_token_id, -1);
    ck_assert_uint_eq(h.n_eos_token_ids, 0);
    ck_assert_uint_eq(h.sliding_window, 0);
}
END_TEST

START_TEST(hparams_rope_types)
{
    df11_hparams h;
    ck_assert_int_eq(parse("{" BASE ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}", &h),
                     DF11_OK);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_LINEAR);
    ck_assert_float_eq(h.rope.factor, 2.0f);
    ck_assert_int_eq(parse("{" BASE ",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":4}}", &h),
                     DF11_OK);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_DYNAMIC);
    ck_assert_int_eq(parse("{" BASE ",\"max_position_embeddings\":4096,\"rope_scaling\":"
                           "{\"rope_type\":\"yarn\",\"factor\":4,\"beta_fast\":16}}",
                           &h),
                     DF11_OK);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_YARN);
    ck_assert_float_eq(h.rope.beta_fast, 16.0f);
    ck_assert_float_eq(h.rope.beta_slow, 1.0f);
    ck_assert_float_eq(h.rope.attention_factor, 0.0f);
    ck_assert_uint_eq(h.rope.original_max_positions, 4096);
    ck_assert_int_eq(
        parse("{" BASE ",\"rope_scaling\":{\"rope_type\":\"longrope\",\"short_factor\":[1]}}", &h),
        DF11_OK);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_OTHER);
    ck_assert_str_eq(h.rope.name, "longrope");
    ck_assert_int_eq(parse("{" BASE ",\"rope_scaling\":{\"rope_type\":\"default\"}}", &h), DF11_OK);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_NONE);
    /* Newer transformers: rope_parameters, rope_theta inside. */
    ck_assert_int_eq(parse("{" BASE ",\"rope_parameters\":{\"rope_type\":\"default\","
                           "\"rope_theta\":1000000.0}}",
                           &h),
                     DF11_OK);
    ck_assert_int_eq(h.rope.type, DF11_ROPE_NONE);
    ck_assert_float_eq(h.rope_theta, 1e6f);
}
END_TEST

/* Each bad config fails with DF11_ERR_CORRUPT and a detail naming the field. */
START_TEST(hparams_hostile)
{
    static const struct {
        const char *json, *field;
    } bad[] = {
        { "", "JSON object" },
        { "[1,2]", "JSON object" },
        { "{\"hidden_size\":64", "JSON object" },
        { "{\"intermediate_size\":160,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
          "\"vocab_size\":100}",
          "hidden_size" },
        { "{\"hidden_size\":\"64\"," BASE "}", "hidden_size" },
        { "{\"num_hidden_layers\":2.5," BASE "}", "num_hidden_layers" },
        { "{\"vocab_size\":-3," BASE "}", "vocab_size" },
        { "{\"vocab_size\":1e300," BASE "}", "vocab_size" },
        { "{\"intermediate_size\":0," BASE "}", "intermediate_size" },
        { "{\"rms_norm_eps\":0," BASE "}", "rms_norm_eps" },
        { "{\"rms_norm_eps\":1e-60," BASE "}", "rms_norm_eps" }, /* 0 as a float */
        { "{\"rope_theta\":1e39," BASE "}", "rope_theta" },      /* inf as a float */
        { "{\"num_attention_heads\":5," BASE "}", "num_attention_heads" },
        { "{\"num_key_value_heads\":3," BASE "}", "num_key_value_heads" },
        { "{\"head_dim\":15," BASE "}", "head_dim" },
        { "{\"num_attention_heads\":4096,\"head_dim\":8192," BASE "}", "head_dim" },
        { "{\"bos_token_id\":100," BASE "}", "bos_token_id" },
        { "{\"eos_token_id\":[1,\"2\"]," BASE "}", "eos_token_id" },
        { "{\"eos_token_id\":[1,100]," BASE "}", "eos_token_id" },
        { "{\"tie_word_embeddings\":1," BASE "}", "tie_word_embeddings" },
        { "{\"model_type\":7," BASE "}", "model_type" },
        { "{\"hidden_act\":5," BASE "}", "hidden_act" },
        { "{\"rope_scaling\":\"llama3\"," BASE "}", "rope_scaling" },
        { "{\"rope_scaling\":{\"rope_type\":\"linear\"}," BASE "}", "rope_scaling.factor" },
        { "{\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":-2}," BASE "}", "factor" },
        { "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}," BASE "}",
          "low_freq_factor" },
        { "{" BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,"
          "\"low_freq_factor\":4,\"high_freq_factor\":1,"
          "\"original_max_position_embeddings\":8192}}",
          "low_freq_factor" },
        { "{\"sliding_window\":-1," BASE "}", "sliding_window" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        df11_hparams h;
        df11_status s = parse(bad[i].json, &h);
        ck_assert_msg(s == DF11_ERR_CORRUPT, "config %zu (%s): %s", i, bad[i].json,
                      df11_strerror(s));
        ck_assert_msg(strstr(df11_last_error_detail(), bad[i].field), "config %zu: detail '%s'", i,
                      df11_last_error_detail());
    }
    /* Not NUL-terminated: only len bytes are read. */
    char buf[] = "{" BASE "}xxxx";
    df11_hparams h = { .size = sizeof h };
    ck_assert_int_eq(df11_hparams_parse(buf, strlen(buf) - 4, &h), DF11_OK);
    ck_assert_int_eq(df11_hparams_parse(buf, strlen(buf), &h), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11_hparams_parse(NULL, 0, &h), DF11_ERR_INVALID_ARG);
    h.size = 8;
    ck_assert_int_eq(df11_hparams_parse(buf, strlen(buf) - 4, &h), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_model_hparams(NULL, &h), DF11_ERR_INVALID_ARG);
}
END_TEST

/* --- a small model: 2 blocks, embeddings, norm, lm_head --- */

#define D 32
#define V 40
#define N_BLOCKS 2

static const char *CONFIG = "{\"model_type\":\"llama\",\"hidden_size\":32,"
                            "\"intermediate_size\":64,\"num_hidden_layers\":2,"
                            "\"num_attention_heads\":2,\"vocab_size\":40}";

/* Block tensors in an order that is neither sorted by name nor by kind, so that a block
 * view's order is seen to be the file's. */
static const char *const BLOCK_NAMES[] = { "self_attn.v_proj.weight", "mlp.up_proj.weight",
                                           "input_layernorm.weight", "self_attn.q_proj.weight" };
#define BLOCK_TENSORS 4
/* BLOCK_NAMES in the block's layout: input order, but v right after its module's q
 * (df11i_block_order); up, whose gate is not there, stays */
static const int BLOCK_LAYOUT[BLOCK_TENSORS] = { 1, 2, 3, 0 };

typedef struct small_model {
    df11_tensor_source t[3 + N_BLOCKS * BLOCK_TENSORS];
    size_t n;
    char df11[512], df11_noconfig[512], st_dir[512];
} small_model;

static small_model sm;

static void add(const char *name, uint32_t ndim, uint64_t d0, uint64_t d1, uint64_t *rng)
{
    df11_tensor_source *s = &sm.t[sm.n++];
    s->name = strdup(name);
    s->dtype = DF11_DTYPE_BF16;
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    size_t n = ndim == 1 ? d0 : d0 * d1;
    uint16_t *w = malloc(n * 2);
    df11_test_fill_weights(w, n, ndim == 1 ? n : d1, rng);
    s->data = w;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void make_small(void)
{
    if (sm.n) return;
    uint64_t rng = df11_test_seed();
    add("model.embed_tokens.weight", 2, V, D, &rng);
    char name[128];
    for (int b = 0; b < N_BLOCKS; b++)
        for (int i = 0; i < BLOCK_TENSORS; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", b, BLOCK_NAMES[i]);
            int norm = strstr(BLOCK_NAMES[i], "norm") != NULL;
            add(name, norm ? 1 : 2, norm ? D : (i == 1 ? 2 * D : D), D, &rng);
        }
    add("model.norm.weight", 1, D, 0, &rng);
    add("lm_head.weight", 2, V, D, &rng);
    const char *tmp = df11_test_tmpdir();
    snprintf(sm.df11, sizeof sm.df11, "%s/api.df11", tmp);
    snprintf(sm.df11_noconfig, sizeof sm.df11_noconfig, "%s/api-noconfig.df11", tmp);
    snprintf(sm.st_dir, sizeof sm.st_dir, "%s/api-bf16", tmp);
    df11_compress_options co = { 0 };
    df11_status s = df11_compress_tensors(sm.df11, sm.t, sm.n, CONFIG, strlen(CONFIG), &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    s = df11_compress_tensors(sm.df11_noconfig, sm.t, sm.n, NULL, 0, &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    char path[600];
    snprintf(path, sizeof path, "mkdir -p '%s'", sm.st_dir);
    ck_assert_int_eq(system(path), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", sm.st_dir);
    s = df11i_st_write(path, sm.t, sm.n, NULL);
    ck_assert_msg(s == DF11_OK, "st_write: %s %s", df11_strerror(s), df11_last_error_detail());
    snprintf(path, sizeof path, "%s/config.json", sm.st_dir);
    write_file(path, CONFIG);
}

static df11_model *open_small(const char *path, int bf16, df11_nonlayer_policy pol)
{
    make_small();
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = DF11_BACKEND_HOST;
    o.n_threads = 2;
    o.nonlayer = pol;
    df11_model *m = NULL;
    df11_status s = bf16 ? df11_model_open_bf16(path, &o, &m) : df11_model_open(path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open %s: %s %s", path, df11_strerror(s), df11_last_error_detail());
    return m;
}

START_TEST(hparams_model)
{
    df11_hparams h = { .size = sizeof h };
    make_small();
    df11_model *m = open_small(sm.df11, 0, DF11_NONLAYER_RESIDENT);
    ck_assert_int_eq(df11_model_hparams(m, &h), DF11_OK);
    ck_assert_uint_eq(h.hidden_size, D);
    ck_assert_uint_eq(h.vocab_size, V);
    ck_assert_uint_eq(h.n_layers, df11_model_n_blocks(m));
    df11_model_close(m);

    m = open_small(sm.st_dir, 1, DF11_NONLAYER_RESIDENT);
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    ck_assert_int_eq(df11_model_hparams(m, &h), DF11_OK);
    ck_assert_str_eq(h.model_type, "llama");
    ck_assert_uint_eq(h.head_dim, D / 2);
    df11_model_close(m);

    m = open_small(sm.df11_noconfig, 0, DF11_NONLAYER_RESIDENT);
    ck_assert_int_eq(df11_model_hparams(m, &h), DF11_ERR_NOT_FOUND);
    df11_model_close(m);
}
END_TEST

/* --- tensors by id, and the order of a block view --- */

static void check_block_order(df11_model *m)
{
    ck_assert_uint_eq(df11_model_n_tensors(m), sm.n);
    for (uint32_t b = 0; b < N_BLOCKS; b++) {
        df11_block_view bv;
        ck_assert_int_eq(df11_block_acquire(m, b, NULL, &bv), DF11_OK);
        ck_assert_uint_eq(bv.n_tensors, BLOCK_TENSORS);
        uint32_t first;
        ck_assert_int_eq(df11_tensor_id(m, bv.tensors[0].name, &first), DF11_OK);
        for (uint32_t i = 0; i < bv.n_tensors; i++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%u.%s", b, BLOCK_NAMES[BLOCK_LAYOUT[i]]);
            ck_assert_str_eq(bv.tensors[i].name, name); /* the layout's order, not sorted */
            if (i) ck_assert((char *)bv.tensors[i - 1].data < (char *)bv.tensors[i].data);
            uint32_t id;
            ck_assert_int_eq(df11_tensor_id(m, name, &id), DF11_OK);
            ck_assert_uint_eq(id, first + i);
            df11_tensor_view v;
            ck_assert_int_eq(df11_tensor_get_id(m, id, NULL, &v), DF11_OK);
            ck_assert_str_eq(v.name, name);
            ck_assert_ptr_eq(v.data, bv.tensors[i].data);
            ck_assert_int_eq(df11_tensor_release_id(m, id, NULL), DF11_OK);
        }
        ck_assert_int_eq(df11_block_release(m, b, NULL), DF11_OK);
        uint32_t id;
        ck_assert_int_eq(df11_tensor_id(m, bv.tensors[0].name, &id), DF11_OK);
        df11_tensor_view v;
        ck_assert_int_eq(df11_tensor_get_id(m, id, NULL, &v), DF11_ERR_STATE);
    }
    uint32_t id;
    ck_assert_int_eq(df11_tensor_id(m, "model.layers.0.nope", &id), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_tensor_id(m, NULL, &id), DF11_ERR_INVALID_ARG);
    df11_tensor_view v;
    ck_assert_int_eq(df11_tensor_get_id(m, (uint32_t)sm.n, NULL, &v), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_tensor_get_id(NULL, 0, NULL, &v), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_tensor_release_id(m, (uint32_t)sm.n, NULL), DF11_ERR_NOT_FOUND);
    ck_assert_int_eq(df11_tensor_id(m, "model.embed_tokens.weight", &id), DF11_OK);
    ck_assert_int_eq(df11_tensor_get_id(m, id, NULL, &v), DF11_OK);
    ck_assert_str_eq(v.name, "model.embed_tokens.weight");
    ck_assert_int_eq(df11_tensor_release_id(m, id, NULL), DF11_OK);
}

START_TEST(tensor_ids_df11)
{
    make_small();
    df11_model *m = open_small(sm.df11, 0, DF11_NONLAYER_RESIDENT);
    check_block_order(m);
    df11_model_close(m);
}
END_TEST

/* The provider forwards the id calls. */
START_TEST(tensor_ids_provider)
{
    make_small();
    df11_model *m = open_small(sm.df11, 0, DF11_NONLAYER_ARENA);
    df11_provider p;
    ck_assert_int_eq(df11_model_provider(m, &p), DF11_OK);
    ck_assert_uint_ge(p.size, offsetof(df11_provider, tensor_release_id) + sizeof(void *));
    uint32_t id;
    df11_tensor_view v;
    ck_assert_int_eq(p.tensor_id(p.ctx, "lm_head.weight", &id), DF11_OK);
    ck_assert_int_eq(p.tensor_get_id(p.ctx, id, NULL, &v), DF11_OK);
    ck_assert_str_eq(v.name, "lm_head.weight");
    ck_assert_int_eq(p.tensor_release_id(p.ctx, id, NULL), DF11_OK);
    ck_assert_int_eq(p.tensor_release_id(p.ctx, id, NULL), DF11_ERR_STATE);
    df11_model_close(m);
}
END_TEST

START_TEST(tensor_ids_bf16)
{
    make_small();
    df11_model *m = open_small(sm.st_dir, 1, DF11_NONLAYER_RESIDENT);
    check_block_order(m);
    df11_model_close(m);
}
END_TEST

/* --- release semantics, BUSY details, backend-correct messages --- */

/* Under every non-layer policy (and on a BF16 model) a non-layer tensor's get is counted
 * and each needs its release; a release without a get is DF11_ERR_STATE. A layer tensor's
 * release is a no-op (its data goes with the block). */
static void check_release(df11_model *m)
{
    const char *norm = "model.norm.weight";
    df11_tensor_view v, v2;
    ck_assert_int_eq(df11_tensor_release(m, norm, NULL), DF11_ERR_STATE);
    ck_assert_int_eq(df11_tensor_get(m, norm, NULL, &v), DF11_OK);
    ck_assert_int_eq(df11_tensor_get(m, norm, NULL, &v2), DF11_OK);
    ck_assert_ptr_eq(v.data, v2.data);
    ck_assert_int_eq(df11_tensor_release(m, norm, NULL), DF11_OK);
    ck_assert_int_eq(df11_tensor_release(m, norm, NULL), DF11_OK);
    ck_assert_int_eq(df11_tensor_release(m, norm, NULL), DF11_ERR_STATE);
    ck_assert_msg(strstr(df11_last_error_detail(), "release without get"), "%s",
                  df11_last_error_detail());
    ck_assert_int_eq(df11_tensor_release(m, "model.layers.0.mlp.up_proj.weight", NULL), DF11_OK);
}

START_TEST(release_policies)
{
    make_small();
    static const df11_nonlayer_policy pol[] = { DF11_NONLAYER_RESIDENT, DF11_NONLAYER_ARENA,
                                                DF11_NONLAYER_COMPRESSED };
    for (int i = 0; i < 3; i++) {
        df11_model *m = open_small(sm.df11, 0, pol[i]);
        check_release(m);
        df11_model_close(m);
    }
    df11_model *m = open_small(sm.st_dir, 1, DF11_NONLAYER_RESIDENT);
    check_release(m);
    df11_model_close(m);
}
END_TEST

/* DF11_ERR_BUSY names what holds the slots: blocks, or non-layer tensors. */
START_TEST(busy_names_holders)
{
    make_small();
    df11_model *m = open_small(sm.df11, 0, DF11_NONLAYER_ARENA); /* 2 slots */
    df11_tensor_view e, h;
    ck_assert_int_eq(df11_tensor_get(m, "model.embed_tokens.weight", NULL, &e), DF11_OK);
    ck_assert_int_eq(df11_tensor_get(m, "lm_head.weight", NULL, &h), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_ERR_BUSY);
    const char *d = df11_last_error_detail();
    ck_assert_msg(strstr(d, "non-layer group") && strstr(d, "lm_head") && !strstr(d, "block 0,"),
                  "%s", d);
    ck_assert_int_eq(df11_tensor_release(m, "model.embed_tokens.weight", NULL), DF11_OK);
    ck_assert_int_eq(df11_tensor_release(m, "lm_head.weight", NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_acquire(m, 1, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_tensor_get(m, "model.norm.weight", NULL, &e), DF11_ERR_BUSY);
    d = df11_last_error_detail();
    ck_assert_msg(strstr(d, "block 0") && strstr(d, "block 1") && !strstr(d, "non-layer"), "%s", d);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    ck_assert_int_eq(df11_block_release(m, 1, NULL), DF11_OK);
    df11_model_close(m);
}
END_TEST

/* On the host backend, running out of the memory limit says nothing of a device. */
START_TEST(host_messages)
{
    make_small();
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = DF11_BACKEND_HOST;
    o.memory_limit = 4096;
    df11_model *m = NULL;
    ck_assert_int_eq(df11_model_open(sm.df11, &o, &m), DF11_ERR_DEVICE_MEMORY);
    ck_assert_ptr_null(m);
    ck_assert_msg(!strstr(df11_last_error_detail(), "device"), "%s", df11_last_error_detail());
    ck_assert_msg(!strstr(df11_strerror(DF11_ERR_DEVICE_MEMORY), "device"), "%s",
                  df11_strerror(DF11_ERR_DEVICE_MEMORY));
    ck_assert_int_eq(df11_model_open_bf16(sm.st_dir, &o, &m), DF11_ERR_DEVICE_MEMORY);
    ck_assert_msg(!strstr(df11_last_error_detail(), "device"), "%s", df11_last_error_detail());
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("hparams");
    tcase_add_test(tc, hparams_llama3);
    tcase_add_test(tc, hparams_defaults);
    tcase_add_test(tc, hparams_rope_types);
    tcase_add_test(tc, hparams_hostile);
    tcase_add_test(tc, hparams_model);
    suite_add_tcase(s, tc);
    tc = tcase_create("tensors");
    tcase_add_test(tc, tensor_ids_df11);
    tcase_add_test(tc, tensor_ids_bf16);
    tcase_add_test(tc, tensor_ids_provider);
    tcase_add_test(tc, release_policies);
    tcase_add_test(tc, busy_names_holders);
    tcase_add_test(tc, host_messages);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return df11_test_run(api_suite()); }
