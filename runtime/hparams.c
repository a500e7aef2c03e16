/* df11_hparams_parse: a Hugging Face config.json read into the typed df11_hparams. The text
 * is outside input (a file anyone may hand the library): every field is type- and
 * range-checked, so that an engine can multiply what it gets without its own checks; the
 * first problem found is the one reported. Reads no file and holds nothing, and knows no
 * model (df11_model_hparams, in model.c, hands it the model's text), so that the
 * compressor's readers can use it without linking the runtime. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "df11/runtime.h"

/* The first version of the struct is this one; fields added later go after it and this
 * stays the size an older caller passes. */
#define HPARAMS_V1_SIZE sizeof(df11_hparams)

typedef struct reader {
    const cJSON *obj;  /* the object fields are read from: the root or rope_scaling */
    const char *where; /* "" or "rope_scaling." for details */
    df11_status status;
} reader;

static void fail(reader *r, const char *key, const char *what)
{
    if (r->status != DF11_OK) return; /* the first problem is the one reported */
    r->status = df11i_fail(DF11_ERR_CORRUPT, "config.json: \"%s%s\" %s", r->where, key, what);
}

static const cJSON *field(const reader *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL; /* null reads as absent, as in transformers */
}

/* An integer in [lo, hi]; `def` when absent. */
static int64_t get_int(reader *r, const char *key, int64_t def, int64_t lo, int64_t hi)
{
    const cJSON *v = field(r, key);
    if (!v) return def;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) {
        char what[96];
        snprintf(what, sizeof what, "is not an integer from %lld to %lld", (long long)lo,
                 (long long)hi);
        fail(r, key, what);
        return def;
    }
    return (int64_t)d;
}

static uint32_t get_size(reader *r, const char *key, uint32_t def, uint32_t hi)
{
    return (uint32_t)get_int(r, key, def, 1, hi);
}

/* A number that must be positive and finite also as a float; `def` when absent. */
static float get_positive(reader *r, const char *key, float def)
{
    const cJSON *v = field(r, key);
    if (!v) return def;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    float f = (float)d;
    if (!(d > 0.0) || !isfinite(f) || !(f > 0.0f)) {
        fail(r, key, "is not a positive finite number");
        return def;
    }
    return f;
}

static int get_bool(reader *r, const char *key)
{
    const cJSON *v = field(r, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) fail(r, key, "is not true or false");
    return cJSON_IsTrue(v);
}

/* A string of fewer than `cap` bytes into out ("" when absent); arrays give their first
 * element (architectures). */
static void get_string(reader *r, const char *key, char *out, size_t cap)
{
    const cJSON *v = field(r, key);
    out[0] = 0;
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!v) return;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap) {
        fail(r, key, "is not a string of a usable length");
        return;
    }
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
}

/* A token id or a list of them; negative ids (some configs say -1) mean none. */
static uint32_t get_ids(reader *r, const char *key, int32_t *ids, uint32_t cap)
{
    const cJSON *v = field(r, key);
    if (!v) return 0;
    const cJSON *list = cJSON_IsArray(v) ? v : NULL;
    uint32_t n = 0;
    for (const cJSON *e = list ? list->child : v; e && r->status == DF11_OK;
         e = list ? e->next : NULL) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!(d >= INT32_MIN && d <= INT32_MAX) || d != floor(d)) {
            fail(r, key, "is not an integer or a list of integers");
            return 0;
        }
        if (d >= 0 && n < cap) ids[n++] = (int32_t)d;
    }
    return n;
}

static const struct {
    const char *name;
    df11_rope_type type;
} ROPE_TYPES[] = { { "default", DF11_ROPE_NONE },
                   { "linear", DF11_ROPE_LINEAR },
                   { "dynamic", DF11_ROPE_DYNAMIC },
                   { "llama3", DF11_ROPE_LLAMA3 },
                   { "yarn", DF11_ROPE_YARN } };

/* rope_scaling (or rope_parameters, which newer transformers writes instead, with
 * rope_theta inside). */
static void get_rope(reader *root, df11_hparams *h)
{
    const char *key = field(root, "rope_scaling") ? "rope_scaling" : "rope_parameters";
    const cJSON *obj = field(root, key);
    df11_rope_scaling *rs = &h->rope;
    memset(rs, 0, sizeof *rs);
    rs->factor = 1.0f;
    if (!obj) return;
    if (!cJSON_IsObject(obj)) {
        fail(root, key, "is not an object");
        return;
    }
    char where[32];
    snprintf(where, sizeof where, "%s.", key);
    reader r = { .obj = obj, .where = where, .status = DF11_OK };
    if (!strcmp(key, "rope_parameters"))
        h->rope_theta = get_positive(&r, "rope_theta", h->rope_theta);
    get_string(&r, field(&r, "rope_type") ? "rope_type" : "type", rs->name, sizeof rs->name);
    rs->type = rs->name[0] ? DF11_ROPE_OTHER : DF11_ROPE_NONE;
    for (size_t i = 0; i < sizeof ROPE_TYPES / sizeof *ROPE_TYPES; i++)
        if (!strcmp(rs->name, ROPE_TYPES[i].name)) rs->type = ROPE_TYPES[i].type;
    if (rs->type == DF11_ROPE_NONE) rs->name[0] = 0;
    if (rs->type != DF11_ROPE_NONE && rs->type != DF11_ROPE_OTHER) {
        if (!field(&r, "factor")) fail(&r, "factor", "is missing");
        rs->factor = get_positive(&r, "factor", 1.0f);
    }
    if (rs->type == DF11_ROPE_LLAMA3) {
        static const char *const need[] = { "low_freq_factor", "high_freq_factor",
                                            "original_max_position_embeddings" };
        for (int i = 0; i < 3; i++)
            if (!field(&r, need[i])) fail(&r, need[i], "is missing");
        rs->low_freq_factor = get_positive(&r, "low_freq_factor", 1.0f);
        rs->high_freq_factor = get_positive(&r, "high_freq_factor", 4.0f);
        if (r.status == DF11_OK && !(rs->low_freq_factor < rs->high_freq_factor))
            fail(&r, "low_freq_factor", "is not below high_freq_factor");
    }
    if (rs->type == DF11_ROPE_LLAMA3 || rs->type == DF11_ROPE_YARN)
        rs->original_max_positions = get_size(&r, "original_max_position_embeddings",
                                              h->max_positions, DF11_HPARAMS_MAX_POSITIONS);
    if (rs->type == DF11_ROPE_YARN) {
        rs->beta_fast = get_positive(&r, "beta_fast", 32.0f);
        rs->beta_slow = get_positive(&r, "beta_slow", 1.0f);
        rs->attention_factor = get_positive(&r, "attention_factor", 0.0f);
    }
    if (r.status != DF11_OK) root->status = r.status;
}

/* The fields of an object already parsed; root->status says whether they hold. */
static void read_fields(reader *r, df11_hparams *h)
{
    const uint32_t M = DF11_HPARAMS_MAX_DIM;
    get_string(r, "model_type", h->model_type, sizeof h->model_type);
    get_string(r, "architectures", h->architecture, sizeof h->architecture);
    static const char *const required[] = { "hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "vocab_size" };
    for (int i = 0; i < 5; i++)
        if (!field(r, required[i])) fail(r, required[i], "is missing");
    h->hidden_size = get_size(r, "hidden_size", 1, M);
    h->intermediate_size = get_size(r, "intermediate_size", 1, M);
    h->n_layers = get_size(r, "num_hidden_layers", 1, DF11_HPARAMS_MAX_LAYERS);
    h->n_heads = get_size(r, "num_attention_heads", 1, M);
    h->n_kv_heads = get_size(r, "num_key_value_heads", h->n_heads, M);
    h->head_dim_explicit = field(r, "head_dim") != NULL;
    h->head_dim = get_size(r, "head_dim", h->hidden_size / h->n_heads, M);
    h->vocab_size = get_size(r, "vocab_size", 1, M);
    h->max_positions = get_size(r, "max_position_embeddings", 2048, DF11_HPARAMS_MAX_POSITIONS);
    h->rms_norm_eps = get_positive(r, "rms_norm_eps", 1e-6f);
    h->rope_theta = get_positive(r, "rope_theta", 10000.0f);
    get_rope(r, h);
    h->tie_word_embeddings = get_bool(r, "tie_word_embeddings");
    int32_t bos;
    h->bos_token_id = get_ids(r, "bos_token_id", &bos, 1) ? bos : -1;
    h->n_eos_token_ids = get_ids(r, "eos_token_id", h->eos_token_ids, DF11_HPARAMS_MAX_EOS);
    h->eos_token_id = h->n_eos_token_ids ? h->eos_token_ids[0] : -1;
    h->sliding_window = (uint32_t)get_int(r, "sliding_window", 0, 0, DF11_HPARAMS_MAX_POSITIONS);
    h->attention_bias = get_bool(r, "attention_bias");
    get_string(r, field(r, "hidden_act") ? "hidden_act" : "hidden_activation", h->hidden_act,
               sizeof h->hidden_act);
    if (r->status != DF11_OK) return;

    /* Without head_dim the heads split hidden_size; a remainder would silently drop
     * features. With it (q_proj of n_heads × head_dim rows) any size goes. */
    if (!h->head_dim_explicit && h->hidden_size % h->n_heads)
        fail(r, "hidden_size", "is not a multiple of num_attention_heads");
    else if (h->n_heads % h->n_kv_heads)
        fail(r, "num_attention_heads", "is not a multiple of num_key_value_heads");
    else if (h->head_dim % 2) /* RoPE rotates pairs */
        fail(r, "head_dim", "is odd");
    else if ((uint64_t)h->n_heads * h->head_dim > M)
        fail(r, "num_attention_heads", "times head_dim is over the limit");
    for (uint32_t i = 0; i < h->n_eos_token_ids; i++)
        if ((uint32_t)h->eos_token_ids[i] >= h->vocab_size)
            fail(r, "eos_token_id", "is not below vocab_size");
    if (h->bos_token_id >= 0 && (uint32_t)h->bos_token_id >= h->vocab_size)
        fail(r, "bos_token_id", "is not below vocab_size");
}

df11_status df11_hparams_parse(const char *json, size_t len, df11_hparams *h)
{
    if (!json || !h) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_hparams_parse: NULL argument");
    if (h->size < HPARAMS_V1_SIZE)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "df11_hparams_parse: h->size %zu: set it to sizeof(df11_hparams)",
                          h->size);
    /* cJSON reads a number up to a character it does not take: give it a terminated copy,
     * so that nothing past len is read. */
    char *text = malloc(len + 1);
    if (!text) return df11i_fail(DF11_ERR_NO_MEMORY, "df11_hparams_parse: out of host memory");
    memcpy(text, json, len);
    text[len] = 0;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1); /* nothing after it */
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return df11i_fail(DF11_ERR_CORRUPT, "config.json is not a JSON object");
    }
    df11_hparams out;
    memset(&out, 0, sizeof out);
    reader r = { .obj = root, .where = "", .status = DF11_OK };
    read_fields(&r, &out);
    cJSON_Delete(root);
    if (r.status != DF11_OK) return r.status;
    size_t size = h->size < sizeof out ? h->size : sizeof out;
    out.size = size;
    memcpy(h, &out, size);
    return DF11_OK;
}
