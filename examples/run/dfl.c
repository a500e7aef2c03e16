/* The engine: config parsing, weight lookup through the provider (linear weights for the
 * op, the embedding for the row gather, norms copied at create), and the host forward
 * pass (FP32 activations, BF16 weights, FP32 accumulation in a fixed order). The CUDA
 * forward lives in dfl_cuda.cu; this file only dispatches to it, GPU after GPU when the
 * layers are split over several (dfl_create_split). No private df11 header
 * may be included here: the engine is what a third-party engine would look like.
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dfl.h"

/* ------------------------------------------------------------------ config ------- */

/* config.json is outside input: every field is checked here, so that nothing later (the
 * int and size_t products of dfl_create, the RoPE table, RMSNorm) meets a value it
 * cannot handle. A field present with the wrong type is an error, not its default. */

typedef struct cfg_reader {
    const cJSON *root;
    char *err;
    size_t errlen;
    int failed;
} cfg_reader;

static void cfg_fail(cfg_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cfg_fail(cfg_reader *r, const char *fmt, ...)
{
    if (r->failed) return; /* the first problem is the one reported */
    r->failed = 1;
    if (!r->err || !r->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
}

/* An integer field in [lo, hi]; `def` when absent or null. eos_token_id may be a list
 * (Llama 3): the first one stops generation. */
static int cfg_int(cfg_reader *r, const char *key, int def, long long lo, long long hi)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    const int list = cJSON_IsArray(v); /* eos_token_id may be a list: its first */
    if (list) v = cJSON_GetArrayItem(v, 0);
    if (!list && (!v || cJSON_IsNull(v))) return def;
    /* an empty list is no value, not an absent key (its default was derived as if absent) */
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) {
        cfg_fail(r, "config.json: \"%s\" is not an integer from %lld to %lld", key, lo, hi);
        return def;
    }
    return (int)d;
}

/* A number field that must be finite and positive also as a float; `def` when absent. */
static float cfg_positive(cfg_reader *r, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v)) return (float)def;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    float f = (float)d;
    if (!(d > 0.0) || !isfinite(f) || !(f > 0.0f)) {
        cfg_fail(r, "config.json: \"%s\" must be a positive finite number", key);
        return (float)def;
    }
    return f;
}

/* A boolean field; absent or null is false, anything but a boolean an error. */
static int cfg_bool(cfg_reader *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) cfg_fail(r, "config.json: \"%s\" is not true or false", key);
    return cJSON_IsTrue(v);
}

/* rope_scaling: {"rope_type" (or the older "type"): ..., "factor": ..., ...}, or
 * rope_parameters, which transformers 5 writes instead, with rope_theta inside. Each
 * type's parameters and defaults as HF's rope_init_functions read them. */
static void rope_scaling_parse(cfg_reader *r, dfl_config *cfg)
{
    cfg->rope_type = DFL_ROPE_DEFAULT;
    cfg->rope_factor = 1.0f;
    cfg->rope_attn_factor = 1.0f;
    cfg->rope_orig_max = cfg->max_pos;
    const char *key = "rope_scaling";
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!s || cJSON_IsNull(s))
        s = cJSON_GetObjectItemCaseSensitive(r->root, key = "rope_parameters");
    if (!s || cJSON_IsNull(s)) return;
    if (!cJSON_IsObject(s)) {
        cfg_fail(r, "config.json: \"%s\" is not an object", key);
        return;
    }
    if (strcmp(key, "rope_parameters") == 0) {
        const cJSON *outer = r->root;
        r->root = s;
        cfg->rope_theta = cfg_positive(r, "rope_theta", cfg->rope_theta);
        r->root = outer;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "rope_type");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(s, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    static const char *const names[] = { "default", "linear", "dynamic", "llama3", "yarn" };
    int found = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(type, names[i]) == 0) found = i;
    if (found < 0) {
        cfg_fail(r,
                 "config.json: rope_scaling type \"%.40s\" is not supported (default, linear, "
                 "dynamic, llama3, yarn)",
                 type);
        return;
    }
    cfg->rope_type = (dfl_rope_type)found;
    if (cfg->rope_type == DFL_ROPE_DEFAULT) return;
    /* The same readers, on the rope_scaling object. */
    const cJSON *outer = r->root;
    r->root = s;
    cfg->rope_factor = cfg_positive(r, "factor", NAN);
    if (isnan(cfg->rope_factor)) cfg_fail(r, "config.json: rope_scaling lacks \"factor\"");
    if (cfg->rope_type == DFL_ROPE_LLAMA3) {
        cfg->rope_low_freq = cfg_positive(r, "low_freq_factor", NAN);
        cfg->rope_high_freq = cfg_positive(r, "high_freq_factor", NAN);
        cfg->rope_orig_max =
            cfg_int(r, "original_max_position_embeddings", 0, 1, DFL_MAX_POSITIONS);
        if (!r->failed && !(cfg->rope_low_freq < cfg->rope_high_freq && cfg->rope_orig_max))
            cfg_fail(r, "config.json: llama3 rope_scaling needs low_freq_factor < "
                        "high_freq_factor and original_max_position_embeddings");
    }
    if (cfg->rope_type == DFL_ROPE_YARN) {
        /* The factor as given, as transformers since its fix of issue 38224, vLLM and
         * llama.cpp take it (transformers 4.46 to 4.55 replaced it by max_position_embeddings
         * / original_max_position_embeddings, which leaves Qwen2.5's documented config
         * unscaled). */
        cfg->rope_orig_max =
            cfg_int(r, "original_max_position_embeddings", cfg->max_pos, 1, DFL_MAX_POSITIONS);
        cfg->rope_beta_fast = cfg_positive(r, "beta_fast", 32.0);
        cfg->rope_beta_slow = cfg_positive(r, "beta_slow", 1.0);
        double f = cfg->rope_factor;
        double mscale = f <= 1 ? 1.0 : 0.1 * log(f) + 1.0;
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(s, "mscale"),
                    *msa = cJSON_GetObjectItemCaseSensitive(s, "mscale_all_dim");
        if (cJSON_IsNumber(ms) && cJSON_IsNumber(msa) && ms->valuedouble && msa->valuedouble &&
            f > 1)
            mscale =
                (0.1 * ms->valuedouble * log(f) + 1.0) / (0.1 * msa->valuedouble * log(f) + 1.0);
        if (!(mscale > 0 && isfinite((float)mscale)))
            cfg_fail(r, "config.json: yarn mscale and mscale_all_dim give no positive factor");
        cfg->rope_attn_factor = cfg_positive(r, "attention_factor", mscale);
        /* the correction range divides by ln(rope_theta) */
        if (!(cfg->rope_theta > 1.0f))
            cfg_fail(r, "config.json: yarn rope_scaling needs rope_theta above 1");
        if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(s, "truncate")))
            cfg_fail(r, "config.json: yarn rope_scaling with truncate false is not supported");
    }
    r->root = outer;
}

/* layer_types (transformers 4.53 on): each layer "full_attention", or a kind the engine
 * does not run (a sliding window on some layers); absent or null is full attention. */
static void layer_types_check(cfg_reader *r)
{
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(r->root, "layer_types");
    if (!lt || cJSON_IsNull(lt)) return;
    const cJSON *item = NULL;
    int ok = cJSON_IsArray(lt);
    cJSON_ArrayForEach(item, lt) ok &=
        cJSON_IsString(item) && strcmp(item->valuestring, "full_attention") == 0;
    if (!ok)
        cfg_fail(r, "config.json: layer_types other than \"full_attention\" (per-layer windows) "
                    "are not supported");
}

int dfl_config_parse(const char *json, size_t len, dfl_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    /* cJSON gets a NUL-terminated copy: `json` may be any bytes, not terminated, and no
     * parser path may read past len. */
    char *text = json ? malloc(len + 1) : NULL;
    if (text) {
        memcpy(text, json, len);
        text[len] = 0;
    }
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        if (err && errlen) snprintf(err, errlen, "config.json is missing or not a JSON object");
        cJSON_Delete(root);
        return -1;
    }
    cfg_reader r = { root, err, errlen, 0 };
    const int M = DFL_MAX_DIM;
    cfg->dim = cfg_int(&r, "hidden_size", 0, 1, M);
    cfg->n_layers = cfg_int(&r, "num_hidden_layers", 0, 1, DFL_MAX_LAYERS);
    cfg->n_heads = cfg_int(&r, "num_attention_heads", 0, 1, M);
    cfg->n_kv_heads = cfg_int(&r, "num_key_value_heads", cfg->n_heads, 1, M);
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    int derived_hd = !hd || cJSON_IsNull(hd);
    cfg->head_dim = cfg_int(&r, "head_dim", cfg->n_heads ? cfg->dim / cfg->n_heads : 0, 1, M);
    cfg->hidden_dim = cfg_int(&r, "intermediate_size", 0, 1, M);
    cfg->vocab_size = cfg_int(&r, "vocab_size", 0, 1, M);
    cfg->max_pos = cfg_int(&r, "max_position_embeddings", 2048, 1, DFL_MAX_POSITIONS);
    cfg->rope_theta = cfg_positive(&r, "rope_theta", 10000.0);
    cfg->norm_eps = cfg_positive(&r, "rms_norm_eps", 1e-6);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    cfg->tied = cJSON_IsBool(tie) ? cJSON_IsTrue(tie) : 0;
    /* negative ids (some configs say -1) mean "none" */
    cfg->bos_id = cfg_int(&r, "bos_token_id", -1, INT_MIN, INT_MAX);
    cfg->eos_id = cfg_int(&r, "eos_token_id", -1, INT_MIN, INT_MAX);
    if (cfg->bos_id < 0) cfg->bos_id = -1;
    if (cfg->eos_id < 0) cfg->eos_id = -1;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    int silu =
        !act || cJSON_IsNull(act) || (cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0);
    rope_scaling_parse(&r, cfg);
    const cJSON *prf = cJSON_GetObjectItemCaseSensitive(root, "partial_rotary_factor");
    if (prf && !cJSON_IsNull(prf) && !(cJSON_IsNumber(prf) && prf->valuedouble == 1.0))
        cfg_fail(&r, "config.json: partial_rotary_factor other than 1 is not supported");
    /* Qwen2 always has q/k/v biases; Llama's (and Qwen3's) attention_bias adds q/k/v and
     * o_proj's. Qwen3 normalises each q and k head. */
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *type = cJSON_IsString(mt) ? mt->valuestring : "";
    int qwen2 = strcmp(type, "qwen2") == 0, qwen3 = strcmp(type, "qwen3") == 0;
    /* Other families add what the engine would silently skip (Gemma's scaled embedding
     * and GELU, Phi's fused projections, Qwen3-MoE's experts): refused by name. */
    if (mt && !cJSON_IsNull(mt) &&
        !(strcmp(type, "llama") == 0 || qwen2 || qwen3 || strcmp(type, "mistral") == 0))
        cfg_fail(&r,
                 "config.json: model_type \"%.40s\" is not supported (llama, mistral, qwen2, "
                 "qwen3)",
                 cJSON_IsString(mt) ? type : "?");
    int attn_bias = cfg_bool(&r, "attention_bias");
    cfg->qkv_bias = qwen2 || attn_bias;
    cfg->o_bias = attn_bias;
    cfg->qk_norm = qwen3;
    if (cfg_bool(&r, "mlp_bias")) cfg_fail(&r, "config.json: mlp_bias is not supported");
    /* Mistral's window applies to every layer; Qwen2's and Qwen3's use_sliding_window only
     * to layers from max_window_layers on (layer_types, where transformers writes it, says
     * which), which this engine does not do. Their configs carry a sliding_window they do
     * not use. */
    if (cfg_bool(&r, "use_sliding_window"))
        cfg_fail(&r, "config.json: use_sliding_window (per-layer windows) is not supported");
    layer_types_check(&r);
    if (!qwen2 && !qwen3) cfg->sliding_window = cfg_int(&r, "sliding_window", 0, 1, INT_MAX);
    cJSON_Delete(root);
    r.root = NULL;

    if (r.failed) return -1;
    if (!cfg->dim || !cfg->n_layers || !cfg->n_heads || !cfg->hidden_dim || !cfg->vocab_size) {
        cfg_fail(&r, "config.json lacks a positive hidden_size, num_hidden_layers, "
                     "num_attention_heads, intermediate_size or vocab_size");
        return -1;
    }
    /* Without head_dim the heads split hidden_size; a remainder would silently drop
     * features. With it (q_proj of n_heads * head_dim rows) any size goes. */
    if (derived_hd && cfg->dim % cfg->n_heads != 0) {
        cfg_fail(&r, "hidden_size %d is not a multiple of num_attention_heads %d", cfg->dim,
                 cfg->n_heads);
        return -1;
    }
    if (cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim % 2 != 0 ||
        (long long)cfg->n_heads * cfg->head_dim > M) {
        cfg_fail(&r, "unsupported attention shape: %d heads, %d kv heads, head_dim %d",
                 cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
        return -1;
    }
    if (cfg->bos_id >= cfg->vocab_size || cfg->eos_id >= cfg->vocab_size) {
        cfg_fail(&r, "bos_token_id %d or eos_token_id %d is not below vocab_size %d", cfg->bos_id,
                 cfg->eos_id, cfg->vocab_size);
        return -1;
    }
    if (!silu) {
        cfg_fail(&r, "unsupported hidden_act (only silu)");
        return -1;
    }
    return 0;
}

/* Inverse frequency i of head_dim/2 after rope_scaling, following HF's
 * _compute_*_parameters (in double here; rounded to FP32 as HF keeps it). */
static float rope_inv_freq(const dfl_config *c, int seq_len, int i)
{
    const double d = c->head_dim, f = c->rope_factor, pi = 3.14159265358979323846;
    double base = c->rope_theta;
    if (c->rope_type == DFL_ROPE_DYNAMIC && seq_len > c->max_pos)
        base *= pow(f * seq_len / c->max_pos - (f - 1), d / (d - 2));
    /* HF: 1 / base ** (arange(0, d, 2) / d), the exponent in FP32 */
    double inv = 1.0 / pow(base, (double)(float)(2 * i) / d);
    switch (c->rope_type) {
    case DFL_ROPE_LINEAR: return (float)(inv / f);
    case DFL_ROPE_LLAMA3: {
        /* wavelengths longer than orig/low are slowed by factor, shorter than orig/high
         * kept, and the band between blends the two by where it sits */
        double wavelen = 2 * pi / inv, orig = c->rope_orig_max;
        double lo = c->rope_low_freq, hi = c->rope_high_freq;
        if (wavelen < orig / hi) return (float)inv;
        if (wavelen > orig / lo) return (float)(inv / f);
        double smooth = (orig / wavelen - lo) / (hi - lo);
        return (float)((1 - smooth) * inv / f + smooth * inv);
    }
    case DFL_ROPE_YARN: {
        /* dims that turn fewer than beta_slow times over the original context are
         * interpolated, more than beta_fast extrapolated, a linear ramp between */
        double orig = c->rope_orig_max, lb = 2 * log(base);
        double low = floor(d * log(orig / (c->rope_beta_fast * 2 * pi)) / lb);
        double high = ceil(d * log(orig / (c->rope_beta_slow * 2 * pi)) / lb);
        if (low < 0) low = 0;
        if (high > d - 1) high = d - 1;
        if (low == high) high += 0.001;
        double ramp = ((double)i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double extra = 1 - ramp; /* weight of extrapolation */
        return (float)(inv / f * (1 - extra) + inv * extra);
    }
    default: return (float)inv;
    }
}

void dfl_rope_table(const dfl_config *cfg, int seq_len, int p0, int p1, float *cos_t, float *sin_t)
{
    int half = cfg->head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* freqs = pos * inv_freq in FP32; cos/sin of that FP32 angle, times the attention
         * factor (yarn), in FP32 */
        float inv_freq = rope_inv_freq(cfg, seq_len, i);
        for (int p = p0; p < p1; p++) {
            float angle = (float)p * inv_freq;
            cos_t[(size_t)(p - p0) * half + i] = (float)cos((double)angle) * cfg->rope_attn_factor;
            sin_t[(size_t)(p - p0) * half + i] = (float)sin((double)angle) * cfg->rope_attn_factor;
        }
    }
}

/* ------------------------------------------------------------------ weights ------ */

static df11_status check_view(const df11_tensor_view *v, const char *name, int rows, int cols,
                              char *err, size_t errlen)
{
    int ok = v->dtype == DF11_DTYPE_BF16 && v->data != NULL;
    if (ok && cols == 0)
        ok = v->ndim == 1 && v->shape[0] == (uint64_t)rows;
    else if (ok)
        ok = v->ndim == 2 && v->shape[0] == (uint64_t)rows && v->shape[1] == (uint64_t)cols;
    if (!ok) {
        snprintf(err, errlen,
                 "tensor '%s': expected BF16 [%d%s%.0d], got %s with %u dims "
                 "[%llu, %llu]",
                 name, rows, cols ? ", " : "", cols, df11_dtype_name(v->dtype), v->ndim,
                 (unsigned long long)v->shape[0],
                 (unsigned long long)(v->ndim > 1 ? v->shape[1] : 0));
        return DF11_ERR_CORRUPT;
    }
    return DF11_OK;
}

df11_status dfl_tensor_get(const df11_provider *p, const char *name, int rows, int cols,
                           df11_stream stream, const void **data, char *err, size_t errlen)
{
    df11_tensor_view v;
    memset(&v, 0, sizeof v);
    df11_status st = p->tensor_get(p->ctx, name, stream, &v);
    if (st != DF11_OK) {
        snprintf(err, errlen, "tensor '%s': %s%s%s", name, df11_strerror(st),
                 *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
        return st;
    }
    st = check_view(&v, name, rows, cols, err, errlen);
    *data = v.data;
    return st;
}

/* A block's tensors (nine, and the biases and q/k norms the config has), in this order:
 * name suffix, where each lands in dfl_layer_weights (tensor view) and, for the seven
 * linear layers, in dfl_layer_linears (-1 for a 1-D norm or bias), and the shape the
 * config implies (cols 0: 1-D of rows). */
enum { BLOCK_TENSORS = 15 };
typedef struct block_tensor {
    const char *suffix;
    size_t view_at;
    long linear_at;
    int rows, cols;
} block_tensor;

static size_t block_tensors(const dfl_config *cfg, block_tensor t[BLOCK_TENSORS])
{
    const int d = cfg->dim, hd = cfg->head_dim, q = cfg->n_heads * hd, kv = cfg->n_kv_heads * hd,
              h = cfg->hidden_dim;
#define VIEW(field) offsetof(dfl_layer_weights, field)
#define OP(field) (long)offsetof(dfl_layer_linears, field)
    const block_tensor all[BLOCK_TENSORS] = {
        { "input_layernorm.weight", VIEW(attn_norm), -1, d, 0 },
        { "self_attn.q_proj.weight", VIEW(wq), OP(wq), q, d },
        { "self_attn.k_proj.weight", VIEW(wk), OP(wk), kv, d },
        { "self_attn.v_proj.weight", VIEW(wv), OP(wv), kv, d },
        { "self_attn.o_proj.weight", VIEW(wo), OP(wo), d, q },
        { "post_attention_layernorm.weight", VIEW(ffn_norm), -1, d, 0 },
        { "mlp.gate_proj.weight", VIEW(w_gate), OP(w_gate), h, d },
        { "mlp.up_proj.weight", VIEW(w_up), OP(w_up), h, d },
        { "mlp.down_proj.weight", VIEW(w_down), OP(w_down), d, h },
        { "self_attn.q_proj.bias", VIEW(bq), -1, q, 0 },
        { "self_attn.k_proj.bias", VIEW(bk), -1, kv, 0 },
        { "self_attn.v_proj.bias", VIEW(bv), -1, kv, 0 },
        { "self_attn.o_proj.bias", VIEW(bo), -1, d, 0 },
        { "self_attn.q_norm.weight", VIEW(q_norm), -1, hd, 0 },
        { "self_attn.k_norm.weight", VIEW(k_norm), -1, hd, 0 },
    };
    const int b = cfg->qkv_bias, o = cfg->o_bias, qk = cfg->qk_norm;
    const int has[BLOCK_TENSORS] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, b, b, b, o, qk, qk };
#undef VIEW
#undef OP
    size_t n = 0;
    for (int i = 0; i < BLOCK_TENSORS; i++)
        if (has[i]) t[n++] = all[i];
    return n;
}

df11_status dfl_layer_weights_get(const dfl_config *cfg, const df11_provider *p, uint32_t layer,
                                  const df11_block_view *view, df11_stream stream,
                                  dfl_layer_weights *w, char *err, size_t errlen)
{
    block_tensor want[BLOCK_TENSORS];
    size_t n_want = block_tensors(cfg, want);
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < n_want; i++) {
        char name[160];
        snprintf(name, sizeof name, "model.layers.%u.%s", layer, want[i].suffix);
        const void **dst = (const void **)((char *)w + want[i].view_at);
        const df11_tensor_view *found = NULL;
        for (uint32_t t = 0; view && view->tensors && t < view->n_tensors; t++)
            if (view->tensors[t].name && strcmp(view->tensors[t].name, name) == 0)
                found = &view->tensors[t];
        df11_status st;
        if (found) {
            st = check_view(found, name, want[i].rows, want[i].cols, err, errlen);
            *dst = found->data;
        } else {
            st = dfl_tensor_get(p, name, want[i].rows, want[i].cols, stream, dst, err, errlen);
        }
        if (st != DF11_OK) return st;
    }
    return DF11_OK;
}

int dfl_provider_has_matmul(const df11_provider *p)
{
    return p->size >= offsetof(df11_provider, matmul) + sizeof p->matmul && p->weight_get &&
           p->matmul;
}

int dfl_provider_has_gather(const df11_provider *p)
{
    /* rows_gather came after weight_get: a size that covers it covers both */
    return p->size >= offsetof(df11_provider, rows_gather) + sizeof p->rows_gather &&
           p->weight_get && p->rows_gather;
}

int dfl_provider_has_stack(const df11_provider *p)
{
    return dfl_provider_has_matmul(p) &&
           p->size >= offsetof(df11_provider, weight_stack) + sizeof p->weight_stack &&
           p->weight_stack;
}

/* Parts stacked by rows into one weight, for one call where there were n. */
static df11_status linear_stack(const df11_provider *p, uint32_t n, const df11_weight *parts,
                                df11_weight *out, char *err, size_t errlen)
{
    df11_status st = p->weight_stack(p->ctx, n, parts, out);
    if (st != DF11_OK)
        snprintf(err, errlen, "stacking '%s' and %u more: %s%s%s", parts[0].name, n - 1,
                 df11_strerror(st), *df11_last_error_detail() ? ": " : "",
                 df11_last_error_detail());
    return st;
}

/* One weight for the op: resolved by name, its shape checked against the config. */
static df11_status linear_get(const df11_provider *p, const char *name, int rows, int cols,
                              df11_weight *w, char *err, size_t errlen)
{
    df11_status st = p->weight_get(p->ctx, name, w);
    if (st != DF11_OK) {
        snprintf(err, errlen, "tensor '%s': weight_get: %s", name, df11_strerror(st));
        return st;
    }
    if (w->rows != (uint32_t)rows || w->cols != (uint32_t)cols) {
        snprintf(err, errlen, "tensor '%s': expected BF16 [%d, %d], got [%u, %u]", name, rows, cols,
                 w->rows, w->cols);
        return DF11_ERR_CORRUPT;
    }
    return DF11_OK;
}

df11_status dfl_linears_get(const dfl_config *cfg, const df11_provider *p, int stack, int first,
                            int end, int head, dfl_linears *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->layers = calloc((size_t)cfg->n_layers, sizeof *out->layers);
    if (!out->layers) return DF11_ERR_NO_MEMORY;
    block_tensor want[BLOCK_TENSORS];
    size_t n_want = block_tensors(cfg, want);
    for (int l = first; l < end; l++)
        for (size_t i = 0; i < n_want; i++) {
            if (want[i].linear_at < 0) continue;
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, want[i].suffix);
            df11_weight *dst = (df11_weight *)((char *)&out->layers[l] + want[i].linear_at);
            df11_status st = linear_get(p, name, want[i].rows, want[i].cols, dst, err, errlen);
            if (st != DF11_OK) {
                dfl_linears_free(out);
                return st;
            }
        }
    out->stacked = stack;
    for (int l = first; stack && l < end; l++) {
        dfl_layer_linears *ll = &out->layers[l];
        const df11_weight qkv[3] = { ll->wq, ll->wk, ll->wv }, gu[2] = { ll->w_gate, ll->w_up };
        df11_status st = linear_stack(p, 3, qkv, &ll->qkv, err, errlen);
        if (st == DF11_OK) st = linear_stack(p, 2, gu, &ll->gate_up, err, errlen);
        if (st != DF11_OK) {
            dfl_linears_free(out);
            return st;
        }
    }
    if (!head) return DF11_OK;
    const char *name = cfg->tied ? "model.embed_tokens.weight" : "lm_head.weight";
    df11_status st = linear_get(p, name, cfg->vocab_size, cfg->dim, &out->lm_head, err, errlen);
    if (st != DF11_OK) dfl_linears_free(out);
    return st;
}

void dfl_linears_free(dfl_linears *l)
{
    free(l->layers);
    memset(l, 0, sizeof *l);
}

/* Where a block's 1-D tensor t of layer l sits in the op path's norms buffer (dfl.h): the
 * two norms at their places; the vectors the config adds in table order, from the
 * layer's first (`*extra`, moved past t). */
static size_t vector_at(const dfl_config *cfg, const block_tensor *t, uint32_t l, size_t *extra)
{
    const size_t D = (size_t)cfg->dim;
    if (t->view_at == offsetof(dfl_layer_weights, attn_norm)) return 2 * l * D;
    if (t->view_at == offsetof(dfl_layer_weights, ffn_norm)) return (2 * l + 1) * D;
    size_t at = *extra;
    *extra += (size_t)t->rows;
    return at;
}

/* Where layer l's added vectors start: after every layer's two norms and model.norm, the
 * layers' vectors one layer after another. */
static size_t extras_at(const dfl_config *cfg, uint32_t l)
{
    block_tensor want[BLOCK_TENSORS];
    const size_t n_want = block_tensors(cfg, want);
    size_t stride = 0; /* the added vectors' elements, as vector_at counts them */
    for (size_t i = 0; i < n_want; i++)
        if (want[i].linear_at < 0) (void)vector_at(cfg, &want[i], 0, &stride);
    return ((size_t)cfg->n_layers * 2 + 1) * (size_t)cfg->dim + l * stride;
}

void dfl_norms_at(const dfl_config *cfg, const uint16_t *norms, uint32_t layer,
                  dfl_layer_weights *w)
{
    block_tensor want[BLOCK_TENSORS];
    const size_t n_want = block_tensors(cfg, want);
    size_t extra = extras_at(cfg, layer);
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < n_want; i++)
        if (want[i].linear_at < 0)
            *(const void **)((char *)w + want[i].view_at) =
                norms + vector_at(cfg, &want[i], layer, &extra);
}

size_t dfl_norms_count(const dfl_config *cfg) { return extras_at(cfg, (uint32_t)cfg->n_layers); }

/* Vector `name` (n values) into dst by the row gather: a 1-D tensor is a one-row weight. */
static df11_status norm_gather(const df11_provider *p, const char *name, size_t n,
                               df11_stream stream, uint16_t *dst, char *err, size_t errlen)
{
    df11_weight w;
    const uint32_t row0 = 0;
    df11_status st = p->weight_get(p->ctx, name, &w);
    if (st == DF11_OK && (w.rows != 1 || w.cols != n)) {
        snprintf(err, errlen, "tensor '%s' is %u x %u, the config implies 1 x %zu", name, w.rows,
                 w.cols, n);
        return DF11_ERR_CORRUPT;
    }
    if (st == DF11_OK) st = p->rows_gather(p->ctx, &w, &row0, 1, dst, DF11_DTYPE_BF16, stream);
    if (st != DF11_OK)
        snprintf(err, errlen, "tensor '%s': %s%s%s", name, df11_strerror(st),
                 *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
    return st;
}

/* dfl_norms_copy without acquiring blocks (so that it works on a model with no arena):
 * every norm and bias by the row gather. DF11_ERR_INVALID_ARG from the first weight_get:
 * a library from before one-row weights, the caller acquires blocks instead. */
static df11_status norms_gather(const dfl_config *cfg, const df11_provider *p, int first, int end,
                                df11_stream stream, uint16_t *dst, char *err, size_t errlen)
{
    block_tensor want[BLOCK_TENSORS];
    const size_t n_want = block_tensors(cfg, want), D = (size_t)cfg->dim;
    char name[160];
    for (uint32_t l = (uint32_t)first; l < (uint32_t)end; l++) {
        size_t extra = extras_at(cfg, l);
        for (size_t i = 0; i < n_want; i++) {
            if (want[i].linear_at >= 0) continue; /* a matrix: the op's */
            uint16_t *to = dst + vector_at(cfg, &want[i], l, &extra);
            snprintf(name, sizeof name, "model.layers.%u.%s", l, want[i].suffix);
            df11_status st = norm_gather(p, name, (size_t)want[i].rows, stream, to, err, errlen);
            if (st != DF11_OK) return st;
        }
    }
    return norm_gather(p, "model.norm.weight", D, stream, dst + 2 * (size_t)cfg->n_layers * D, err,
                       errlen);
}

df11_status dfl_norms_copy(const dfl_config *cfg, const df11_provider *p, int first, int end,
                           df11_stream stream, dfl_copy_fn copy, void *ctx, uint16_t *dst,
                           char *err, size_t errlen)
{
    const size_t D = (size_t)cfg->dim;
    df11_status st;
    if (dfl_provider_has_gather(p)) {
        st = norms_gather(cfg, p, first, end, stream, dst, err, errlen);
        if (st != DF11_ERR_INVALID_ARG) return st;
    }
    block_tensor want[BLOCK_TENSORS];
    const size_t n_want = block_tensors(cfg, want);
    for (uint32_t l = (uint32_t)first; l < (uint32_t)end; l++) {
        df11_block_view view;
        memset(&view, 0, sizeof view);
        if ((st = p->block_acquire(p->ctx, l, stream, &view)) != DF11_OK) {
            snprintf(err, errlen, "block %u: acquire: %s", l, df11_strerror(st));
            return st;
        }
        dfl_layer_weights w;
        st = dfl_layer_weights_get(cfg, p, l, &view, stream, &w, err, errlen);
        size_t extra = extras_at(cfg, l);
        for (size_t i = 0; i < n_want && st == DF11_OK; i++) {
            if (want[i].linear_at >= 0) continue;
            const void *src = *(const void **)((const char *)&w + want[i].view_at);
            st = copy(ctx, dst + vector_at(cfg, &want[i], l, &extra), src, (size_t)want[i].rows * 2,
                      stream, err, errlen);
        }
        df11_status rs = p->block_release(p->ctx, l, stream);
        if (st != DF11_OK) return st;
        if (rs != DF11_OK) {
            snprintf(err, errlen, "block %u: release: %s", l, df11_strerror(rs));
            return rs;
        }
    }
    const void *norm;
    st = dfl_tensor_get(p, "model.norm.weight", cfg->dim, 0, stream, &norm, err, errlen);
    if (st == DF11_OK)
        st = copy(ctx, dst + 2 * (size_t)cfg->n_layers * D, norm, D * 2, stream, err, errlen);
    if (p->tensor_release) p->tensor_release(p->ctx, "model.norm.weight", stream);
    return st;
}

/* ------------------------------------------------------------------ threads ------ */

/* A fixed set of workers that run one parallel_for at a time. Work item i always goes to
 * the same kind of loop, so results never depend on which thread ran it. */
typedef void (*pool_fn)(void *ctx, int begin, int end);

typedef struct pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t generation;
    int pending, quit;
    pool_fn fn;
    void *ctx;
    int n_items;
    struct pool_worker *workers;
} pool;

typedef struct pool_worker {
    pool *p;
    int index;
} pool_worker;

static void pool_range(int n_items, int n_threads, int index, int *begin, int *end)
{
    int per = (n_items + n_threads - 1) / n_threads;
    *begin = index * per < n_items ? index * per : n_items;
    *end = *begin + per < n_items ? *begin + per : n_items;
}

static void *pool_main(void *arg)
{
    pool_worker *wk = arg;
    pool *p = wk->p;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->quit) pthread_cond_wait(&p->start, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int n = p->n_items;
        pthread_mutex_unlock(&p->mu);

        int b, e;
        pool_range(n, p->n_threads, wk->index, &b, &e);
        if (b < e) fn(ctx, b, e);

        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

static int pool_init(pool *p, int n_threads)
{
    memset(p, 0, sizeof *p);
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    if (p->n_threads == 1) return 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)p->n_threads, sizeof *p->threads);
    pool_worker *wk = calloc((size_t)p->n_threads, sizeof *wk);
    if (!p->threads || !wk) {
        free(p->threads);
        free(wk);
        p->threads = NULL;
        return -1;
    }
    /* Worker 0 is the calling thread; 1..n-1 are started here. */
    for (int i = 1; i < p->n_threads; i++) {
        wk[i].p = p;
        wk[i].index = i;
        if (pthread_create(&p->threads[i], NULL, pool_main, &wk[i]) != 0) {
            p->n_threads = i; /* run with the ones that started */
            break;
        }
    }
    p->workers = wk;
    return 0;
}

static void pool_free(pool *p)
{
    if (p->n_threads > 1 && p->threads) {
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->start);
        pthread_cond_destroy(&p->done);
    }
    free(p->threads);
    free(p->workers);
    p->threads = NULL;
    p->workers = NULL;
}

/* Splits [0, n_items) into n_threads contiguous ranges; runs small jobs inline. */
static void parallel_for(pool *p, int n_items, uint64_t work, pool_fn fn, void *ctx)
{
    if (p->n_threads <= 1 || work < (1u << 15) || n_items < 2) {
        fn(ctx, 0, n_items);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    p->pending = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);

    int b, e;
    pool_range(n_items, p->n_threads, 0, &b, &e);
    if (b < e) fn(ctx, b, e);

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------ host math ---- */

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, as the GPU's __float2bfloat16; NaN stays NaN. */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x40);
    u += 0x7fffu + (u >> 16 & 1);
    return (uint16_t)(u >> 16);
}

/* w (BF16) · x (FP32), n elements: eight running sums, sum l taking elements i ≡ l mod 8,
 * added pairwise at the end. Eight BF16 are read as four 32-bit words: a word's low half
 * shifted up is the even element, its high half masked the odd one, against x's even and odd
 * elements picked out by two shuffles. Explicit vectors, because GCC and Clang each vectorise
 * a plain loop well only in a form the other does badly (Clang gathered each BF16 on its
 * own: the engine ran 2.5x slower built with it). The same sums in the same order as the
 * plain loop below, which stays for compilers without __builtin_shufflevector and for
 * big-endian machines. */
#if (defined(__clang__) || __GNUC__ >= 12) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
typedef float dfl_f32x4 __attribute__((vector_size(16)));
typedef uint32_t dfl_u32x4 __attribute__((vector_size(16)));
static float dot_bf16(const uint16_t *restrict w, const float *restrict x, int n)
{
    dfl_f32x4 even = { 0 }, odd = { 0 }; /* sums 0, 2, 4, 6 and 1, 3, 5, 7 */
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        dfl_u32x4 u;
        dfl_f32x4 lo, hi;
        memcpy(&u, w + i, sizeof u);
        memcpy(&lo, x + i, sizeof lo);
        memcpy(&hi, x + i + 4, sizeof hi);
        even += (dfl_f32x4)(u << 16) * __builtin_shufflevector(lo, hi, 0, 2, 4, 6);
        odd += (dfl_f32x4)(u & 0xffff0000u) * __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
    }
    float s = ((even[0] + odd[0]) + (even[1] + odd[1])) + ((even[2] + odd[2]) + (even[3] + odd[3]));
    for (; i < n; i++) s += bf16_to_f32(w[i]) * x[i];
    return s;
}
#else
static float dot_bf16(const uint16_t *restrict w, const float *restrict x, int n)
{
    float acc[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += bf16_to_f32(w[i + l]) * x[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += bf16_to_f32(w[i]) * x[i];
    return s;
}
#endif

typedef struct matmul_job {
    float *out;        /* [n_tok, rows] */
    const uint16_t *w; /* [rows, cols] */
    const float *x;    /* [n_tok, cols] */
    int n_tok, rows, cols;
    int accumulate; /* out += instead of out = */
} matmul_job;

static void matmul_rows(void *ctx, int begin, int end)
{
    const matmul_job *j = ctx;
    for (int r = begin; r < end; r++) {
        const uint16_t *wr = j->w + (size_t)r * j->cols;
        for (int t = 0; t < j->n_tok; t++) {
            float v = dot_bf16(wr, j->x + (size_t)t * j->cols, j->cols);
            float *o = &j->out[(size_t)t * j->rows + r];
            *o = j->accumulate ? *o + v : v;
        }
    }
}

static void matmul(pool *p, float *out, const void *w, const float *x, int n_tok, int rows,
                   int cols, int accumulate)
{
    matmul_job j = { out, w, x, n_tok, rows, cols, accumulate };
    parallel_for(p, rows, (uint64_t)rows * cols * n_tok, matmul_rows, &j);
}

static void rmsnorm(float *out, const float *x, const uint16_t *w, int n, float eps)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    /* HF: weight * (x * rsqrt(mean(x²) + eps)) */
    for (int i = 0; i < n; i++) out[i] = bf16_to_f32(w[i]) * (x[i] * scale);
}

/* Rotate-half RoPE on one head: pairs (i, i + hd/2). */
static void rope(float *v, const float *cos_p, const float *sin_p, int hd)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_p[i] - b * sin_p[i];
        v[i + half] = b * cos_p[i] + a * sin_p[i];
    }
}

/* ------------------------------------------------------------------ engine ------- */

struct dfl_engine {
    dfl_config cfg;
    df11_provider prov;
    dfl_device device;
    int max_seq, max_batch;
    char err[512];
    pool pool;
    /* host state */
    float *x, *xb, *q, *att, *hb, *hb2; /* [max_batch, ...] */
    float *k_cache, *v_cache;           /* [layer][max_seq][kv_dim] */
    float *scores;                      /* [max_batch * n_heads][max_seq] */
    float *rope_cos, *rope_sin;         /* [max_seq][head_dim/2] */
    /* op path (lin.layers != NULL): the resolved weights, the norms' copy
     * (dfl_norms_copy), a linear layer's input in BF16, and the op's output where it
     * is not the final place (before a residual add, or a stacked q|k|v, gate|up) */
    dfl_linears lin[DFL_MAX_STAGES]; /* the host's in lin[0]; per GPU stage, its layers' */
    uint16_t *norms, *xh;            /* [dfl_norms_count], [max_batch * max(dim, q, hidden)] */
    float *opy;                      /* [max_batch * max(dim, q + 2 kv, 2 hidden)] */
    /* the embedding for the provider's row gather (gather != 0), else read as a view;
     * ids: a pass's tokens as the gather takes them, [max_batch] */
    df11_weight emb;
    int gather;
    uint32_t *ids;
    uint64_t kv_bytes, scratch_bytes;
    int n_stages; /* GPUs (each a dfl_gpu), 1 on the host */
#ifdef DF11_HAVE_CUDA
    dfl_gpu *gpu[DFL_MAX_STAGES]; /* in layer order; NULL on the host */
#endif
};

static _Thread_local char create_err[512];

const char *dfl_create_error(void) { return create_err; }
const char *dfl_error(const dfl_engine *e) { return e->err; }
const dfl_config *dfl_get_config(const dfl_engine *e) { return &e->cfg; }
int dfl_max_seq(const dfl_engine *e) { return e->max_seq; }
dfl_matmul dfl_matmul_used(const dfl_engine *e)
{
    return !e->lin[0].layers   ? DFL_MATMUL_ENGINE
           : e->lin[0].stacked ? DFL_MATMUL_OP
                               : DFL_MATMUL_OP_SEPARATE;
}

int dfl_embed_gathered(const dfl_engine *e) { return e->gather; }
int dfl_n_stages(const dfl_engine *e) { return e->n_stages; }

uint64_t dfl_stage_kv_bytes(const dfl_engine *e, int stage)
{
    if (stage < 0 || stage >= e->n_stages) return 0;
#ifdef DF11_HAVE_CUDA
    if (e->gpu[stage]) return dfl_gpu_kv_bytes(e->gpu[stage]);
#endif
    return e->kv_bytes;
}

uint64_t dfl_stage_scratch_bytes(const dfl_engine *e, int stage)
{
    if (stage < 0 || stage >= e->n_stages) return 0;
#ifdef DF11_HAVE_CUDA
    if (e->gpu[stage]) return dfl_gpu_scratch_bytes(e->gpu[stage]);
#endif
    return e->scratch_bytes;
}

uint64_t dfl_kv_bytes(const dfl_engine *e)
{
    uint64_t sum = 0;
    for (int i = 0; i < e->n_stages; i++) sum += dfl_stage_kv_bytes(e, i);
    return sum;
}

uint64_t dfl_scratch_bytes(const dfl_engine *e)
{
    uint64_t sum = 0;
    for (int i = 0; i < e->n_stages; i++) sum += dfl_stage_scratch_bytes(e, i);
    return sum;
}

const char *dfl_attention_name(dfl_attention kind)
{
    static const char *const names[] = { "auto", "naive", "tiled", "mma", "split" };
    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : NULL;
}

void dfl_options_init(dfl_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->device = DFL_DEVICE_CPU;
}

static void *xcalloc(dfl_engine *e, size_t n, size_t size)
{
    e->scratch_bytes += n * size;
    return calloc(n ? n : 1, size);
}

void dfl_destroy(dfl_engine *e)
{
    if (!e) return;
#ifdef DF11_HAVE_CUDA
    for (int i = 0; i < DFL_MAX_STAGES; i++) dfl_gpu_destroy(e->gpu[i]);
#endif
    pool_free(&e->pool);
    free(e->x);
    free(e->xb);
    free(e->q);
    free(e->att);
    free(e->hb);
    free(e->hb2);
    free(e->k_cache);
    free(e->v_cache);
    free(e->scores);
    free(e->rope_cos);
    free(e->rope_sin);
    free(e->norms);
    free(e->xh);
    free(e->opy);
    free(e->ids);
    for (int i = 0; i < DFL_MAX_STAGES; i++) dfl_linears_free(&e->lin[i]);
    free(e);
}

static df11_status host_copy(void *ctx, void *dst, const void *src, size_t bytes,
                             df11_stream stream, char *err, size_t errlen)
{
    (void)ctx, (void)stream, (void)err, (void)errlen;
    memcpy(dst, src, bytes);
    return DF11_OK;
}

/* What dfl_create and dfl_create_split share: the checks of the config and of each
 * provider, the engine with its options, the way to run the linear layers (*op: through
 * the providers' matmul; *stack: stacked), and the pass's ids with the embedding for the
 * row gather (resolved on providers[0], which embeds). */
static df11_status engine_new(const dfl_config *cfg, const df11_provider *const *providers, int n,
                              const dfl_options *opt, dfl_engine **out, int *op, int *stack)
{
    *out = NULL;
    int complete = cfg != NULL;
    for (int i = 0; i < n; i++) {
        const df11_provider *p = providers[i];
        complete &= p && p->tensor_get && p->block_acquire && p->block_release;
    }
    if (!complete) {
        snprintf(create_err, sizeof create_err, "incomplete provider");
        return DF11_ERR_INVALID_ARG;
    }
    for (int i = 0; i < n; i++) {
        const df11_provider *p = providers[i];
        if (p->n_blocks && p->n_blocks(p->ctx) < (uint32_t)cfg->n_layers) {
            snprintf(create_err, sizeof create_err, "config has %d layers, weights have %u blocks",
                     cfg->n_layers, p->n_blocks(p->ctx));
            return DF11_ERR_CORRUPT;
        }
    }
    dfl_matmul mm = opt ? opt->matmul : DFL_MATMUL_AUTO;
    if (mm != DFL_MATMUL_AUTO && mm != DFL_MATMUL_OP && mm != DFL_MATMUL_ENGINE &&
        mm != DFL_MATMUL_OP_SEPARATE) {
        snprintf(create_err, sizeof create_err, "invalid matmul choice %d", (int)mm);
        return DF11_ERR_INVALID_ARG;
    }
    dfl_attention att = opt ? opt->attention : DFL_ATTENTION_AUTO;
    if ((unsigned)att > DFL_ATTENTION_SPLIT) {
        snprintf(create_err, sizeof create_err, "invalid attention choice %d", (int)att);
        return DF11_ERR_INVALID_ARG;
    }
    int has_op = 1, has_stack = 1;
    for (int i = 0; i < n; i++) {
        has_op &= dfl_provider_has_matmul(providers[i]);
        has_stack &= dfl_provider_has_stack(providers[i]);
    }
    if ((mm == DFL_MATMUL_OP || mm == DFL_MATMUL_OP_SEPARATE) && !has_op) {
        snprintf(create_err, sizeof create_err, "the provider has no matmul op");
        return DF11_ERR_UNSUPPORTED;
    }
    *op = mm == DFL_MATMUL_OP || mm == DFL_MATMUL_OP_SEPARATE || (mm == DFL_MATMUL_AUTO && has_op);
    *stack = *op && mm != DFL_MATMUL_OP_SEPARATE && has_stack;

    dfl_engine *e = calloc(1, sizeof *e);
    if (!e) return DF11_ERR_NO_MEMORY;
    e->cfg = *cfg;
    e->prov = *providers[0];
    e->n_stages = 1;
    e->device = opt ? opt->device : DFL_DEVICE_CPU;
    e->max_seq = opt && opt->max_seq > 0 ? opt->max_seq : cfg->max_pos;
    /* split attention takes passes of DFL_ATTENTION_SPLIT_MAX_N tokens at most: asked for
     * by name, longer inputs go through in passes of that many */
    int batch_default = e->device != DFL_DEVICE_CUDA ? 64
                        : att == DFL_ATTENTION_SPLIT ? DFL_ATTENTION_SPLIT_MAX_N
                                                     : 4096;
    e->max_batch = opt && opt->max_batch > 0 ? opt->max_batch : batch_default;
    if (e->max_batch > e->max_seq) e->max_batch = e->max_seq;
    /* Embedding rows by the gather wherever the provider has it: it decodes only the rows
     * asked for, so the table may stay compressed (and a resident one is copied row by
     * row, as the view would be read). */
    e->ids = xcalloc(e, (size_t)e->max_batch, sizeof *e->ids);
    if (!e->ids) {
        dfl_destroy(e);
        return DF11_ERR_NO_MEMORY;
    }
    if (dfl_provider_has_gather(providers[0])) {
        df11_status st = linear_get(providers[0], "model.embed_tokens.weight", cfg->vocab_size,
                                    cfg->dim, &e->emb, create_err, sizeof create_err);
        if (st != DF11_OK) {
            dfl_destroy(e);
            return st;
        }
        e->gather = 1;
    }
    *out = e;
    return DF11_OK;
}

df11_status dfl_create_split(const dfl_config *cfg, const dfl_stage *stages, int n_stages,
                             const dfl_options *opt, dfl_engine **out)
{
    *out = NULL;
    create_err[0] = 0;
    if (!opt || opt->device != DFL_DEVICE_CUDA) {
        snprintf(create_err, sizeof create_err, "layers split over devices run on CUDA only");
        return DF11_ERR_INVALID_ARG;
    }
    if (!cfg || !stages || n_stages < 1 || n_stages > DFL_MAX_STAGES) {
        snprintf(create_err, sizeof create_err, "%d stages (1..%d)", n_stages, DFL_MAX_STAGES);
        return DF11_ERR_INVALID_ARG;
    }
    const df11_provider *providers[DFL_MAX_STAGES];
    int next = 0;
    for (int i = 0; i < n_stages; i++) {
        const dfl_stage *sg = &stages[i];
        if (sg->first_layer != next || sg->n_layers < 1 || sg->n_layers > cfg->n_layers - next) {
            snprintf(create_err, sizeof create_err,
                     "stage %d: layers %d..%d: the stages must cover layers 0..%d in order", i,
                     sg->first_layer, sg->first_layer + sg->n_layers - 1, cfg->n_layers - 1);
            return DF11_ERR_INVALID_ARG;
        }
        next += sg->n_layers;
        providers[i] = sg->provider;
    }
    if (next != cfg->n_layers) {
        snprintf(create_err, sizeof create_err, "the stages cover layers 0..%d of 0..%d", next - 1,
                 cfg->n_layers - 1);
        return DF11_ERR_INVALID_ARG;
    }
#ifdef DF11_HAVE_CUDA
    dfl_engine *e;
    int op, stack;
    df11_status st = engine_new(cfg, providers, n_stages, opt, &e, &op, &stack);
    if (st != DF11_OK) return st;
    e->n_stages = n_stages;
    for (int i = 0; i < n_stages && st == DF11_OK; i++) {
        const dfl_stage *sg = &stages[i];
        const int end = sg->first_layer + sg->n_layers, last = i + 1 == n_stages;
        if (op)
            st = dfl_linears_get(cfg, sg->provider, stack, sg->first_layer, end, last, &e->lin[i],
                                 create_err, sizeof create_err);
        const dfl_gpu_range r = { sg->device, sg->first_layer, end, i == 0, last };
        if (st == DF11_OK)
            st = dfl_gpu_create(cfg, sg->provider, &r, e->max_seq, e->max_batch, opt->attention,
                                opt->plain_launch, op ? &e->lin[i] : NULL,
                                i == 0 && e->gather ? &e->emb : NULL, &e->gpu[i], create_err,
                                sizeof create_err);
    }
    if (st != DF11_OK) {
        dfl_destroy(e);
        return st;
    }
    *out = e;
    return DF11_OK;
#else
    (void)providers; /* the stages were checked all the same */
    snprintf(create_err, sizeof create_err, "built without CUDA");
    return DF11_ERR_UNSUPPORTED;
#endif
}

df11_status dfl_create(const dfl_config *cfg, const df11_provider *provider, const dfl_options *opt,
                       dfl_engine **out)
{
    *out = NULL;
    create_err[0] = 0;
    if (opt && opt->device == DFL_DEVICE_CUDA) { /* one stage of every layer, on this device */
        const dfl_stage one = { provider, -1, 0, cfg ? cfg->n_layers : 0 };
        return dfl_create_split(cfg, &one, 1, opt, out);
    }
    dfl_engine *e;
    int op, stack;
    df11_status st = engine_new(cfg, &provider, 1, opt, &e, &op, &stack);
    if (st != DF11_OK) return st;
    if (op && (st = dfl_linears_get(cfg, provider, stack, 0, cfg->n_layers, 1, &e->lin[0],
                                    create_err, sizeof create_err)) != DF11_OK) {
        dfl_destroy(e);
        return st;
    }

    int n_threads = opt && opt->n_threads > 0 ? opt->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 64) n_threads = 64;
    if (pool_init(&e->pool, n_threads) != 0) {
        dfl_destroy(e);
        return DF11_ERR_NO_MEMORY;
    }

    const size_t B = (size_t)e->max_batch, S = (size_t)e->max_seq;
    const size_t qd = (size_t)cfg->n_heads * cfg->head_dim;
    const size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t wide = qd > (size_t)cfg->dim ? qd : (size_t)cfg->dim;
    e->x = xcalloc(e, B * cfg->dim, sizeof(float));
    e->xb = xcalloc(e, B * wide, sizeof(float));
    e->q = xcalloc(e, B * qd, sizeof(float));
    e->att = xcalloc(e, B * qd, sizeof(float));
    e->hb = xcalloc(e, B * cfg->hidden_dim, sizeof(float));
    e->hb2 = xcalloc(e, B * cfg->hidden_dim, sizeof(float));
    e->scores = xcalloc(e, B * cfg->n_heads * S, sizeof(float));
    e->rope_cos = xcalloc(e, S * cfg->head_dim / 2, sizeof(float));
    e->rope_sin = xcalloc(e, S * cfg->head_dim / 2, sizeof(float));
    e->kv_bytes = 2ull * cfg->n_layers * S * kvd * sizeof(float);
    e->k_cache = calloc((size_t)cfg->n_layers * S * kvd, sizeof(float));
    e->v_cache = calloc((size_t)cfg->n_layers * S * kvd, sizeof(float));
    if (!e->x || !e->xb || !e->q || !e->att || !e->hb || !e->hb2 || !e->scores || !e->rope_cos ||
        !e->rope_sin || !e->k_cache || !e->v_cache) {
        snprintf(create_err, sizeof create_err,
                 "out of host memory for the KV cache (%llu "
                 "bytes) and scratch",
                 (unsigned long long)e->kv_bytes);
        dfl_destroy(e);
        return DF11_ERR_NO_MEMORY;
    }
    dfl_rope_table(cfg, 0, 0, e->max_seq, e->rope_cos, e->rope_sin);
    if (e->lin[0].layers) {
        size_t widest = wide > (size_t)cfg->hidden_dim ? wide : (size_t)cfg->hidden_dim;
        size_t outs = qd + 2 * kvd > (size_t)cfg->dim ? qd + 2 * kvd : (size_t)cfg->dim;
        if (outs < 2 * (size_t)cfg->hidden_dim) outs = 2 * (size_t)cfg->hidden_dim;
        e->norms = xcalloc(e, dfl_norms_count(cfg), sizeof(uint16_t));
        e->xh = xcalloc(e, B * widest, sizeof(uint16_t));
        e->opy = xcalloc(e, B * outs, sizeof(float));
        if (!e->norms || !e->xh || !e->opy) {
            snprintf(create_err, sizeof create_err, "out of host memory for scratch");
            dfl_destroy(e);
            return DF11_ERR_NO_MEMORY;
        }
        st = dfl_norms_copy(cfg, provider, 0, cfg->n_layers, NULL, host_copy, NULL, e->norms,
                            create_err, sizeof create_err);
        if (st != DF11_OK) {
            dfl_destroy(e);
            return st;
        }
    }
    *out = e;
    return DF11_OK;
}

/* One (token, head) of attention: scores over the cache, softmax, weighted sum of V. */
typedef struct attn_job {
    dfl_engine *e;
    int layer, pos, n_tok;
} attn_job;

static void attention_items(void *ctx, int begin, int end)
{
    const attn_job *j = ctx;
    const dfl_engine *e = j->e;
    const dfl_config *c = &e->cfg;
    const int hd = c->head_dim, kvd = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *kc = e->k_cache + (size_t)j->layer * e->max_seq * kvd;
    const float *vc = e->v_cache + (size_t)j->layer * e->max_seq * kvd;
    for (int item = begin; item < end; item++) {
        int t = item / c->n_heads, h = item % c->n_heads, kvh = h / group;
        int n_ctx = j->pos + t + 1;
        /* HF's sliding window: key p is seen from query position i when i - p < window */
        int p0 = c->sliding_window && n_ctx > c->sliding_window ? n_ctx - c->sliding_window : 0;
        const float *q = e->q + ((size_t)t * c->n_heads + h) * hd;
        float *s = e->scores + (size_t)item * e->max_seq;
        float mx = -INFINITY;
        for (int p = p0; p < n_ctx; p++) {
            const float *k = kc + (size_t)p * kvd + kvh * hd;
            float d = 0.0f;
            for (int i = 0; i < hd; i++) d += q[i] * k[i];
            s[p] = d * scale;
            if (s[p] > mx) mx = s[p];
        }
        float sum = 0.0f;
        for (int p = p0; p < n_ctx; p++) {
            s[p] = expf(s[p] - mx);
            sum += s[p];
        }
        float *o = e->att + ((size_t)t * c->n_heads + h) * hd;
        for (int i = 0; i < hd; i++) o[i] = 0.0f;
        for (int p = p0; p < n_ctx; p++) {
            const float *v = vc + (size_t)p * kvd + kvh * hd;
            float a = s[p] / sum;
            for (int i = 0; i < hd; i++) o[i] += a * v[i];
        }
    }
}

static df11_status fail(dfl_engine *e, df11_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, sizeof e->err, fmt, ap);
    va_end(ap);
    return st;
}

/* y[n][op->rows] = x[n][op->cols] · Wᵀ by the provider's op: x rounded to BF16 first (the
 * op's input type), y FP32. */
static df11_status op_call(dfl_engine *e, const df11_weight *op, const float *x, int n, float *y)
{
    for (size_t i = 0; i < (size_t)n * op->cols; i++) e->xh[i] = f32_to_bf16(x[i]);
    df11_status st = e->prov.matmul(e->prov.ctx, op, e->xh, (uint32_t)n, y, DF11_DTYPE_F32, NULL);
    if (st != DF11_OK)
        return fail(e, st, "'%s': matmul: %s%s%s", op->name, df11_strerror(st),
                    *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
    return DF11_OK;
}

/* y[n][rows] = x[n][cols] · Wᵀ, or y += that (accumulate): the engine's own product on
 * the BF16 tensor w (op NULL), or the op, which writes y, so that a residual add goes
 * through e->opy. */
static df11_status linear(dfl_engine *e, const void *w, const df11_weight *op, const float *x,
                          int n, int rows, int cols, float *y, int accumulate)
{
    if (!op) {
        matmul(&e->pool, y, w, x, n, rows, cols, accumulate);
        return DF11_OK;
    }
    df11_status st = op_call(e, op, x, n, accumulate ? e->opy : y);
    if (st == DF11_OK && accumulate)
        for (size_t i = 0; i < (size_t)n * rows; i++) y[i] += e->opy[i];
    return st;
}

/* y[t][i] += b[i] for n rows `ld` floats apart; b BF16, may be NULL (no bias). */
static void add_bias(float *y, size_t ld, const void *b, int n, int width)
{
    if (!b) return;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < width; i++) y[t * ld + i] += bf16_to_f32(((const uint16_t *)b)[i]);
}

/* One block for tokens at [pos, pos + n). w: the norms (both paths) and, on the engine
 * path, the linear weights; op: the op path's weights, else NULL. */
static df11_status host_layer(dfl_engine *e, uint32_t l, const dfl_layer_weights *w,
                              const dfl_layer_linears *op, int n, int pos)
{
    const dfl_config *c = &e->cfg;
    const int D = c->dim, hd = c->head_dim, half = hd / 2;
    const int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, H = c->hidden_dim;
    const int stacked = op && e->lin[0].stacked;
    float *kc = e->k_cache + ((size_t)l * e->max_seq + pos) * kvd;
    float *vc = e->v_cache + ((size_t)l * e->max_seq + pos) * kvd;
    df11_status st;
#define LINEAR(W, X, ROWS, COLS, Y, ACC)                                                           \
    if ((st = linear(e, w->W, op ? &op->W : NULL, X, n, ROWS, COLS, Y, ACC)) != DF11_OK) return st

    for (int t = 0; t < n; t++)
        rmsnorm(e->xb + (size_t)t * D, e->x + (size_t)t * D, w->attn_norm, D, c->norm_eps);
    if (stacked) { /* one product, rows [q | k | v]: to q and the cache */
        if ((st = op_call(e, &op->qkv, e->xb, n, e->opy)) != DF11_OK) return st;
        const size_t ld = (size_t)qd + 2 * kvd;
        add_bias(e->opy, ld, w->bq, n, qd);
        add_bias(e->opy + qd, ld, w->bk, n, kvd);
        add_bias(e->opy + qd + kvd, ld, w->bv, n, kvd);
        for (int t = 0; t < n; t++) {
            const float *row = e->opy + t * ld;
            memcpy(e->q + (size_t)t * qd, row, sizeof(float) * qd);
            memcpy(kc + (size_t)t * kvd, row + qd, sizeof(float) * kvd);
            memcpy(vc + (size_t)t * kvd, row + qd + kvd, sizeof(float) * kvd);
        }
    } else {
        LINEAR(wq, e->xb, qd, D, e->q, 0);
        LINEAR(wk, e->xb, kvd, D, kc, 0); /* K and V go straight to the cache */
        LINEAR(wv, e->xb, kvd, D, vc, 0);
        add_bias(e->q, qd, w->bq, n, qd);
        add_bias(kc, kvd, w->bk, n, kvd);
        add_bias(vc, kvd, w->bv, n, kvd);
    }
    /* Qwen3: each head RMS-normed (q_norm, k_norm) before it is rotated */
    for (int t = 0; t < n; t++) {
        const float *cs = e->rope_cos + (size_t)(pos + t) * half;
        const float *sn = e->rope_sin + (size_t)(pos + t) * half;
        for (int h = 0; h < c->n_heads + c->n_kv_heads; h++) {
            const int is_q = h < c->n_heads;
            float *v = is_q ? e->q + ((size_t)t * c->n_heads + h) * hd
                            : kc + (size_t)t * kvd + (size_t)(h - c->n_heads) * hd;
            const void *norm = is_q ? w->q_norm : w->k_norm;
            if (norm) rmsnorm(v, v, norm, hd, c->norm_eps);
            rope(v, cs, sn, hd);
        }
    }
    attn_job aj = { e, (int)l, pos, n };
    uint64_t work = (uint64_t)n * c->n_heads * (uint64_t)(pos + n) * hd * 2;
    parallel_for(&e->pool, n * c->n_heads, work, attention_items, &aj);
    LINEAR(wo, e->att, D, qd, e->x, 1);
    add_bias(e->x, D, w->bo, n, D);

    for (int t = 0; t < n; t++)
        rmsnorm(e->xb + (size_t)t * D, e->x + (size_t)t * D, w->ffn_norm, D, c->norm_eps);
    const float *gate = e->hb, *up = e->hb2; /* rows ld apart */
    size_t ld = (size_t)H;
    if (stacked) { /* one product, rows [gate | up] */
        if ((st = op_call(e, &op->gate_up, e->xb, n, e->opy)) != DF11_OK) return st;
        gate = e->opy;
        up = e->opy + H;
        ld = 2 * (size_t)H;
    } else {
        LINEAR(w_gate, e->xb, H, D, e->hb, 0);
        LINEAR(w_up, e->xb, H, D, e->hb2, 0);
    }
    for (int t = 0; t < n; t++)
        for (int i = 0; i < H; i++) {
            float g = gate[t * ld + i];
            e->hb[(size_t)t * H + i] = g / (1.0f + expf(-g)) * up[t * ld + i];
        }
    LINEAR(w_down, e->hb, D, H, e->x, 1);
#undef LINEAR
    return DF11_OK;
}

/* x = the embedding rows of tokens[0..n), as FP32 (exactly the BF16 values, either way):
 * by the provider's gather (only those rows decoded), else from a view of the table. */
static df11_status embed(dfl_engine *e, const int *tokens, int n)
{
    const dfl_config *c = &e->cfg;
    const df11_provider *p = &e->prov;
    const int D = c->dim;
    df11_status st;
    if (e->gather) {
        st = p->rows_gather(p->ctx, &e->emb, e->ids, (uint32_t)n, e->x, DF11_DTYPE_F32, NULL);
        if (st != DF11_OK)
            return fail(e, st, "'%s': rows_gather: %s%s%s", e->emb.name, df11_strerror(st),
                        *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
        return DF11_OK;
    }
    const void *emb;
    st = dfl_tensor_get(p, "model.embed_tokens.weight", c->vocab_size, D, NULL, &emb, e->err,
                        sizeof e->err);
    if (st != DF11_OK) return st;
    for (int t = 0; t < n; t++) {
        const uint16_t *row = (const uint16_t *)emb + (size_t)tokens[t] * D;
        for (int i = 0; i < D; i++) e->x[(size_t)t * D + i] = bf16_to_f32(row[i]);
    }
    if (p->tensor_release) p->tensor_release(p->ctx, "model.embed_tokens.weight", NULL);
    return DF11_OK;
}

static df11_status host_pass(dfl_engine *e, const int *tokens, int n, int pos, float *logits)
{
    const dfl_config *c = &e->cfg;
    const df11_provider *p = &e->prov;
    const int D = c->dim;
    const size_t DN = (size_t)D;
    df11_status st = embed(e, tokens, n);
    if (st != DF11_OK) return st;

    for (uint32_t l = 0; l < (uint32_t)c->n_layers; l++) {
        if (e->lin[0].layers) { /* op path: no block acquired, norms from the engine's copy */
            dfl_layer_weights w;
            dfl_norms_at(c, e->norms, l, &w);
            if ((st = host_layer(e, l, &w, &e->lin[0].layers[l], n, pos)) != DF11_OK) return st;
            continue;
        }
        df11_block_view view;
        memset(&view, 0, sizeof view);
        st = p->block_acquire(p->ctx, l, NULL, &view);
        if (st != DF11_OK) return fail(e, st, "block %u: acquire: %s", l, df11_strerror(st));
        dfl_layer_weights w;
        st = dfl_layer_weights_get(c, p, l, &view, NULL, &w, e->err, sizeof e->err);
        if (st == DF11_OK) st = host_layer(e, l, &w, NULL, n, pos);
        df11_status rs = p->block_release(p->ctx, l, NULL);
        if (st != DF11_OK) return st;
        if (rs != DF11_OK) return fail(e, rs, "block %u: release: %s", l, df11_strerror(rs));
    }
    if (!logits) return DF11_OK;

    const float *last = e->x + (size_t)(n - 1) * D;
    if (e->lin[0].layers) {
        rmsnorm(e->xb, last, e->norms + 2 * (size_t)c->n_layers * DN, D, c->norm_eps);
        return linear(e, NULL, &e->lin[0].lm_head, e->xb, 1, c->vocab_size, D, logits, 0);
    }
    const void *norm, *head;
    st = dfl_tensor_get(p, "model.norm.weight", D, 0, NULL, &norm, e->err, sizeof e->err);
    if (st != DF11_OK) return st;
    rmsnorm(e->xb, last, norm, D, c->norm_eps);
    if (p->tensor_release) p->tensor_release(p->ctx, "model.norm.weight", NULL);
    const char *head_name = c->tied ? "model.embed_tokens.weight" : "lm_head.weight";
    st = dfl_tensor_get(p, head_name, c->vocab_size, D, NULL, &head, e->err, sizeof e->err);
    if (st != DF11_OK) return st;
    matmul(&e->pool, logits, head, e->xb, 1, c->vocab_size, D, 0);
    if (p->tensor_release) p->tensor_release(p->ctx, head_name, NULL);
    return DF11_OK;
}

/* The table's rows [pos, pos + n) for a pass ending at pos + n: in place on the host,
 * copied to the device's table on the CUDA path. */
static df11_status rope_rows_update(dfl_engine *e, int pos, int n)
{
    const size_t half = (size_t)e->cfg.head_dim / 2;
#ifdef DF11_HAVE_CUDA
    if (e->gpu[0]) {
        float *cs = malloc(2 * (size_t)n * half * sizeof(float));
        if (!cs) return fail(e, DF11_ERR_NO_MEMORY, "out of host memory for RoPE rows");
        dfl_rope_table(&e->cfg, pos + n, pos, pos + n, cs, cs + n * half);
        df11_status st = DF11_OK;
        for (int i = 0; i < e->n_stages && st == DF11_OK; i++)
            st = dfl_gpu_rope_rows(e->gpu[i], pos, n, cs, cs + n * half, e->err, sizeof e->err);
        free(cs);
        return st;
    }
#endif
    dfl_rope_table(&e->cfg, pos + n, pos, pos + n, e->rope_cos + pos * half,
                   e->rope_sin + pos * half);
    return DF11_OK;
}

#ifdef DF11_HAVE_CUDA
/* One pass on the GPUs in layer order, the hidden state handed from each to the next. */
static df11_status gpu_pass(dfl_engine *e, const int *tokens, int n, int pos, float *logits)
{
    for (int i = 0; i < e->n_stages; i++) {
        const int last = i + 1 == e->n_stages;
        df11_status st = dfl_gpu_forward(e->gpu[i], tokens, e->ids, n, pos, last ? logits : NULL,
                                         e->err, sizeof e->err);
        if (st == DF11_OK && !last)
            st = dfl_gpu_hand_on(e->gpu[i], e->gpu[i + 1], n, e->err, sizeof e->err);
        if (st != DF11_OK) return st;
    }
    return DF11_OK;
}
#endif

df11_status dfl_forward(dfl_engine *e, const int *tokens, int n, int pos, float *logits)
{
    e->err[0] = 0;
    if (n <= 0 || pos < 0 || pos + n > e->max_seq)
        return fail(e, DF11_ERR_RANGE, "positions [%d, %d) outside the KV cache (%d)", pos, pos + n,
                    e->max_seq);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= e->cfg.vocab_size)
            return fail(e, DF11_ERR_RANGE, "token %d outside the vocabulary (%d)", tokens[t],
                        e->cfg.vocab_size);
    /* Dynamic NTK: HF rescales the base by the length it sees, pos + n, for the whole call
     * (the cache keeps K rotated by the base of its own pass, as HF's cache does). Every
     * call rewrites its rows: an earlier, longer pass may have left others there. */
    if (e->cfg.rope_type == DFL_ROPE_DYNAMIC) {
        df11_status st = rope_rows_update(e, pos, n);
        if (st != DF11_OK) return st;
    }
    /* Inputs longer than the scratch go through in passes; only the last needs logits. */
    for (int done = 0; done < n; done += e->max_batch) {
        int chunk = n - done < e->max_batch ? n - done : e->max_batch;
        float *lg = done + chunk == n ? logits : NULL;
        for (int t = 0; t < chunk; t++) e->ids[t] = (uint32_t)tokens[done + t]; /* checked above */
        df11_status st;
#ifdef DF11_HAVE_CUDA
        if (e->gpu[0])
            st = gpu_pass(e, tokens + done, chunk, pos + done, lg);
        else
#endif
            st = host_pass(e, tokens + done, chunk, pos + done, lg);
        if (st != DF11_OK) return st;
    }
    return DF11_OK;
}
