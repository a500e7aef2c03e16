/* The example engine (tools/run): its logits against an independent double-precision
 * reference written here, its batch and thread invariance, and bit-identical generation
 * from a .df11 file and from the BF16 source through the runtime's provider.
 *
 * Models: stories260K (../shared/models, skipped when absent) and a synthetic GQA model
 * with untied lm_head written here as safetensors + config.json.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>
#include <df11.h>

#include "tests/testutil.h"
#include "tools/run/llama.h"
#include "tools/run/sampler.h"
#include "tools/run/tokenizer.h"

#define N_GEN 40

/* ------------------------------------------------------- safetensors in memory --- */

typedef struct st_tensor {
    char name[128];
    int ndim;
    uint64_t shape[2];
    const uint16_t *data;
    int layer;
} st_tensor;

typedef struct st_model {
    char *file;      /* whole safetensors file */
    char *config;    /* config.json text */
    size_t config_len;
    st_tensor *t;
    int n;
    /* per layer, the views a block_acquire hands out */
    int n_layers;
    df11_tensor_view **layer_views;
    int *layer_n;
    int *acquired;
} st_model;

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); fclose(f); return NULL; }
    buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

static void st_load(st_model *m, const char *dir)
{
    char path[1024];
    memset(m, 0, sizeof *m);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t len;
    m->file = read_all(path, &len);
    ck_assert_msg(m->file != NULL, "cannot read %s", path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    m->config = read_all(path, &m->config_len);
    ck_assert_msg(m->config != NULL, "cannot read %s", path);

    uint64_t hlen;
    memcpy(&hlen, m->file, 8);
    cJSON *h = cJSON_ParseWithLength(m->file + 8, hlen);
    ck_assert(h != NULL);
    const char *base = m->file + 8 + hlen;
    m->t = calloc((size_t)cJSON_GetArraySize(h), sizeof *m->t);
    const cJSON *it;
    cJSON_ArrayForEach(it, h) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        st_tensor *t = &m->t[m->n++];
        snprintf(t->name, sizeof t->name, "%s", it->string);
        ck_assert_str_eq(cJSON_GetObjectItem(it, "dtype")->valuestring, "BF16");
        const cJSON *shape = cJSON_GetObjectItem(it, "shape");
        t->ndim = cJSON_GetArraySize(shape);
        for (int d = 0; d < t->ndim && d < 2; d++)
            t->shape[d] = (uint64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
        const cJSON *off = cJSON_GetObjectItem(it, "data_offsets");
        t->data = (const uint16_t *)(base + (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble);
        t->layer = -1;
        if (sscanf(t->name, "model.layers.%d.", &t->layer) == 1 && t->layer + 1 > m->n_layers)
            m->n_layers = t->layer + 1;
    }
    cJSON_Delete(h);

    m->layer_views = calloc((size_t)m->n_layers, sizeof *m->layer_views);
    m->layer_n = calloc((size_t)m->n_layers, sizeof *m->layer_n);
    m->acquired = calloc((size_t)m->n_layers, sizeof *m->acquired);
    for (int l = 0; l < m->n_layers; l++) {
        m->layer_views[l] = calloc((size_t)m->n, sizeof(df11_tensor_view));
        for (int i = 0; i < m->n; i++) {
            if (m->t[i].layer != l) continue;
            df11_tensor_view *v = &m->layer_views[l][m->layer_n[l]++];
            v->name = m->t[i].name;
            v->dtype = DF11_DTYPE_BF16;
            v->ndim = (uint32_t)m->t[i].ndim;
            v->shape[0] = m->t[i].shape[0];
            v->shape[1] = m->t[i].shape[1];
            v->layer = l;
            v->data = (void *)m->t[i].data;
        }
    }
}

static void st_free(st_model *m)
{
    for (int l = 0; l < m->n_layers; l++) free(m->layer_views[l]);
    free(m->layer_views);
    free(m->layer_n);
    free(m->acquired);
    free(m->t);
    free(m->file);
    free(m->config);
}

static const st_tensor *st_find(const st_model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, name) == 0) return &m->t[i];
    return NULL;
}

/* ------------------------------------------- a provider serving from memory ------ */

static uint32_t mem_n_blocks(void *ctx) { return (uint32_t)((st_model *)ctx)->n_layers; }

static df11_status mem_acquire(void *ctx, uint32_t b, df11_stream s, df11_block_view *view)
{
    st_model *m = ctx;
    if (b >= (uint32_t)m->n_layers) return DF11_ERR_NOT_FOUND;
    m->acquired[b]++;
    if (view) {
        view->block = b;
        view->n_tensors = (uint32_t)m->layer_n[b];
        view->tensors = m->layer_views[b];
    }
    return DF11_OK;
}

static df11_status mem_release(void *ctx, uint32_t b, df11_stream s)
{
    st_model *m = ctx;
    if (b >= (uint32_t)m->n_layers || m->acquired[b] == 0) return DF11_ERR_STATE;
    m->acquired[b]--;
    return DF11_OK;
}

static df11_status mem_tensor_get(void *ctx, const char *name, df11_stream s,
                                  df11_tensor_view *v)
{
    st_model *m = ctx;
    const st_tensor *t = st_find(m, name);
    if (!t) return DF11_ERR_NOT_FOUND;
    if (t->layer >= 0 && m->acquired[t->layer] == 0) return DF11_ERR_STATE;
    memset(v, 0, sizeof *v);
    v->name = t->name;
    v->dtype = DF11_DTYPE_BF16;
    v->ndim = (uint32_t)t->ndim;
    v->shape[0] = t->shape[0];
    v->shape[1] = t->shape[1];
    v->layer = t->layer;
    v->data = (void *)t->data;
    return DF11_OK;
}

static df11_status mem_tensor_release(void *ctx, const char *name, df11_stream s)
{
    return DF11_OK;
}

static df11_provider mem_provider(st_model *m)
{
    df11_provider p = {.size = sizeof p, .ctx = m, .n_blocks = mem_n_blocks,
                       .block_acquire = mem_acquire, .block_release = mem_release,
                       .tensor_get = mem_tensor_get, .tensor_release = mem_tensor_release};
    return p;
}

/* --------------------------------------------------- a synthetic model ----------- */

static uint16_t to_bf16(double d)
{
    float f = (float)d;
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* hidden 96, 6 heads of 16, 2 kv heads, inter 200, vocab 300, 3 layers, untied. */
static const char *synth_dir(void)
{
    static char dir[600];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/synth", df11_test_tmpdir());
    mkdir(dir, 0755);
    const int D = 96, NH = 6, NKV = 2, HD = 16, H = 200, V = 300, L = 3;
    struct { char name[96]; uint64_t rows, cols; double sigma, mean; } spec[64];
    int n = 0;
#define ADD(nm, r, c, s, mu) do { snprintf(spec[n].name, sizeof spec[n].name, "%s", nm); \
        spec[n].rows = r; spec[n].cols = c; spec[n].sigma = s; spec[n].mean = mu; n++; } while (0)
    ADD("model.embed_tokens.weight", V, D, 1.0, 0.0);
    for (int l = 0; l < L; l++) {
        char nm[96];
#define LAYER(suffix, r, c, s, mu) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        ADD(nm, r, c, s, mu); } while (0)
        LAYER("input_layernorm.weight", D, 0, 0.1, 1.0);
        LAYER("self_attn.q_proj.weight", NH * HD, D, 0.3, 0.0);
        LAYER("self_attn.k_proj.weight", NKV * HD, D, 0.3, 0.0);
        LAYER("self_attn.v_proj.weight", NKV * HD, D, 0.1, 0.0);
        LAYER("self_attn.o_proj.weight", D, NH * HD, 0.1, 0.0);
        LAYER("post_attention_layernorm.weight", D, 0, 0.1, 1.0);
        LAYER("mlp.gate_proj.weight", H, D, 0.1, 0.0);
        LAYER("mlp.up_proj.weight", H, D, 0.1, 0.0);
        LAYER("mlp.down_proj.weight", D, H, 0.07, 0.0);
#undef LAYER
    }
    ADD("model.norm.weight", D, 0, 0.1, 1.0);
    ADD("lm_head.weight", V, D, 0.1, 0.0);
#undef ADD

    cJSON *hdr = cJSON_CreateObject();
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(hdr, spec[i].name);
        cJSON_AddStringToObject(t, "dtype", "BF16");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)spec[i].rows));
        if (spec[i].cols) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)spec[i].cols));
        uint64_t bytes = spec[i].rows * (spec[i].cols ? spec[i].cols : 1) * 2;
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(hdr);
    cJSON_Delete(hdr);
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;

    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    uint64_t hl = padded;
    fwrite(&hl, 8, 1, f);
    fwrite(json, 1, jl, f);
    for (size_t i = jl; i < padded; i++) fputc(' ', f);
    free(json);
    uint64_t rng = df11_test_seed() ^ 0x11a3a;
    for (int i = 0; i < n; i++) {
        uint64_t cnt = spec[i].rows * (spec[i].cols ? spec[i].cols : 1);
        uint16_t *buf = malloc(cnt * 2);
        for (uint64_t k = 0; k < cnt; k++)
            buf[k] = to_bf16(spec[i].mean + spec[i].sigma * df11_test_normal(&rng));
        fwrite(buf, 2, cnt, f);
        free(buf);
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    ck_assert(f != NULL);
    fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\",\n"
               " \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,\n"
               " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d,\n"
               " \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-06,\n"
               " \"rope_theta\": 500000.0, \"tie_word_embeddings\": false,\n"
               " \"hidden_act\": \"silu\", \"bos_token_id\": 1, \"eos_token_id\": 2}\n",
            D, H, L, NH, NKV, V);
    fclose(f);
    return dir;
}

/* ----------------------------------- an independent reference, in double ---------- */

/* Written from the Llama definition (HF modeling_llama), sharing nothing with llama.c. */
typedef struct ref {
    const st_model *m;
    int D, L, NH, NKV, HD, H, V, tied;
    double theta, eps;
    double *kc, *vc; /* [L][T][NKV*HD] */
    int T;
} ref;

static double cfg_num(const cJSON *c, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItem(c, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static void ref_init(ref *r, const st_model *m, int T)
{
    memset(r, 0, sizeof *r);
    cJSON *c = cJSON_ParseWithLength(m->config, m->config_len);
    r->m = m;
    r->D = (int)cfg_num(c, "hidden_size", 0);
    r->L = (int)cfg_num(c, "num_hidden_layers", 0);
    r->NH = (int)cfg_num(c, "num_attention_heads", 0);
    r->NKV = (int)cfg_num(c, "num_key_value_heads", r->NH);
    r->HD = r->D / r->NH;
    r->H = (int)cfg_num(c, "intermediate_size", 0);
    r->V = (int)cfg_num(c, "vocab_size", 0);
    r->theta = cfg_num(c, "rope_theta", 10000);
    r->eps = cfg_num(c, "rms_norm_eps", 1e-6);
    r->tied = cJSON_IsTrue(cJSON_GetObjectItem(c, "tie_word_embeddings"));
    cJSON_Delete(c);
    r->T = T;
    r->kc = calloc((size_t)r->L * T * r->NKV * r->HD, sizeof(double));
    r->vc = calloc((size_t)r->L * T * r->NKV * r->HD, sizeof(double));
}

static void ref_free(ref *r) { free(r->kc); free(r->vc); }

static double wv(const uint16_t *w, size_t i)
{
    uint32_t u = (uint32_t)w[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static const uint16_t *ref_w(const ref *r, const char *fmt, int l)
{
    char name[128];
    snprintf(name, sizeof name, fmt, l);
    const st_tensor *t = st_find(r->m, name);
    ck_assert_msg(t != NULL, "reference: no tensor %s", name);
    return t->data;
}

static void ref_linear(double *y, const uint16_t *w, const double *x, int rows, int cols)
{
    for (int o = 0; o < rows; o++) {
        double s = 0;
        for (int i = 0; i < cols; i++) s += wv(w, (size_t)o * cols + i) * x[i];
        y[o] = s;
    }
}

static void ref_norm(double *y, const double *x, const uint16_t *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = wv(w, i) * x[i] * inv;
}

/* Token `tok` at position `pos`; the cache must hold positions < pos. */
static void ref_step(ref *r, int tok, int pos, double *logits)
{
    const int D = r->D, HD = r->HD, KV = r->NKV * HD, Q = r->NH * HD;
    double *x = calloc(D, sizeof *x), *xn = calloc(D, sizeof *xn), *q = calloc(Q, sizeof *q);
    double *o = calloc(Q, sizeof *o), *g = calloc(r->H, sizeof *g), *u = calloc(r->H, sizeof *u);
    double *tmp = calloc(D > Q ? D : Q, sizeof *tmp), *p = calloc(pos + 1, sizeof *p);
    const uint16_t *emb = ref_w(r, "model.embed_tokens.weight", 0);
    for (int i = 0; i < D; i++) x[i] = wv(emb, (size_t)tok * D + i);
    for (int l = 0; l < r->L; l++) {
        double *k = r->kc + ((size_t)l * r->T + pos) * KV, *v = r->vc + ((size_t)l * r->T + pos) * KV;
        ref_norm(xn, x, ref_w(r, "model.layers.%d.input_layernorm.weight", l), D, r->eps);
        ref_linear(q, ref_w(r, "model.layers.%d.self_attn.q_proj.weight", l), xn, Q, D);
        ref_linear(k, ref_w(r, "model.layers.%d.self_attn.k_proj.weight", l), xn, KV, D);
        ref_linear(v, ref_w(r, "model.layers.%d.self_attn.v_proj.weight", l), xn, KV, D);
        /* rotate_half: out = x*cos + cat(-x2, x1)*sin, freq i used at i and i+HD/2 */
        for (int hh = 0; hh < r->NH + r->NKV; hh++) {
            double *vec = hh < r->NH ? q + hh * HD : k + (hh - r->NH) * HD;
            for (int i = 0; i < HD / 2; i++) {
                double ang = pos * pow(r->theta, -2.0 * i / HD);
                double a = vec[i], b = vec[i + HD / 2];
                vec[i] = a * cos(ang) - b * sin(ang);
                vec[i + HD / 2] = b * cos(ang) + a * sin(ang);
            }
        }
        for (int h = 0; h < r->NH; h++) {
            int kh = h / (r->NH / r->NKV);
            double mx = -1e300, sum = 0;
            for (int t = 0; t <= pos; t++) {
                const double *kt = r->kc + ((size_t)l * r->T + t) * KV + kh * HD;
                double s = 0;
                for (int i = 0; i < HD; i++) s += q[h * HD + i] * kt[i];
                p[t] = s / sqrt((double)HD);
                if (p[t] > mx) mx = p[t];
            }
            for (int t = 0; t <= pos; t++) sum += (p[t] = exp(p[t] - mx));
            for (int i = 0; i < HD; i++) {
                double acc = 0;
                for (int t = 0; t <= pos; t++)
                    acc += p[t] / sum * r->vc[((size_t)l * r->T + t) * KV + kh * HD + i];
                o[h * HD + i] = acc;
            }
        }
        ref_linear(tmp, ref_w(r, "model.layers.%d.self_attn.o_proj.weight", l), o, D, Q);
        for (int i = 0; i < D; i++) x[i] += tmp[i];
        ref_norm(xn, x, ref_w(r, "model.layers.%d.post_attention_layernorm.weight", l), D, r->eps);
        ref_linear(g, ref_w(r, "model.layers.%d.mlp.gate_proj.weight", l), xn, r->H, D);
        ref_linear(u, ref_w(r, "model.layers.%d.mlp.up_proj.weight", l), xn, r->H, D);
        for (int i = 0; i < r->H; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        ref_linear(tmp, ref_w(r, "model.layers.%d.mlp.down_proj.weight", l), g, D, r->H);
        for (int i = 0; i < D; i++) x[i] += tmp[i];
    }
    ref_norm(xn, x, ref_w(r, "model.norm.weight", 0), D, r->eps);
    ref_linear(logits, ref_w(r, r->tied ? "model.embed_tokens.weight" : "lm_head.weight", 0),
               xn, r->V, D);
    free(x); free(xn); free(q); free(o); free(g); free(u); free(tmp); free(p);
}

/* ------------------------------------------------------------- helpers ----------- */

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int argmax_d(const double *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static llama *engine_new_on(llama_device device, const char *config, size_t len,
                            const df11_provider *p, int threads, int max_batch)
{
    llama_config cfg;
    char err[256];
    ck_assert_msg(llama_config_parse(config, len, &cfg, err, sizeof err) == 0, "%s", err);
    llama_options opt;
    llama_options_init(&opt);
    opt.device = device;
    opt.n_threads = threads;
    opt.max_batch = max_batch;
    opt.max_seq = 128;
    llama *e;
    df11_status st = llama_create(&cfg, p, &opt, &e);
    ck_assert_msg(st == DF11_OK, "llama_create: %s: %s", df11_strerror(st), llama_create_error());
    return e;
}

static llama *engine_new(const char *config, size_t len, const df11_provider *p, int threads,
                         int max_batch)
{
    return engine_new_on(LLAMA_DEVICE_CPU, config, len, p, threads, max_batch);
}

/* Greedy generation of n tokens from BOS; logits of every step into `all`. */
static void generate(llama *e, int n, int *tokens, float *all)
{
    const llama_config *c = llama_get_config(e);
    int tok = c->bos_id >= 0 ? c->bos_id : 1;
    for (int i = 0; i < n; i++) {
        float *lg = all + (size_t)i * c->vocab_size;
        df11_status st = llama_forward(e, &tok, 1, i, lg);
        ck_assert_msg(st == DF11_OK, "forward: %s", llama_error(e));
        tok = tokens[i] = argmax(lg, c->vocab_size);
    }
}

/* Engine (host, memory provider) against the reference: every step's logits within a
 * relative tolerance, and the same greedy tokens. */
static void check_reference(const char *dir)
{
    st_model m;
    st_load(&m, dir);
    df11_provider p = mem_provider(&m);
    llama *e = engine_new(m.config, m.config_len, &p, 2, 0);
    const llama_config *c = llama_get_config(e);
    ref r;
    ref_init(&r, &m, N_GEN + 1);
    float *lg = malloc((size_t)c->vocab_size * sizeof *lg);
    double *rl = malloc((size_t)c->vocab_size * sizeof *rl);
    int tok = c->bos_id, rtok = c->bos_id;
    double worst = 0;
    for (int i = 0; i < N_GEN; i++) {
        ck_assert_int_eq(llama_forward(e, &tok, 1, i, lg), DF11_OK);
        ref_step(&r, rtok, i, rl);
        double scale = 0, err = 0;
        for (int v = 0; v < c->vocab_size; v++) {
            if (fabs(rl[v]) > scale) scale = fabs(rl[v]);
            if (fabs(lg[v] - rl[v]) > err) err = fabs(lg[v] - rl[v]);
        }
        double rel = err / (scale > 1 ? scale : 1);
        if (rel > worst) worst = rel;
        ck_assert_msg(rel < 1e-4, "%s step %d: max |engine - reference| %.3g, relative %.3g",
                      dir, i, err, rel);
        tok = argmax(lg, c->vocab_size);
        rtok = argmax_d(rl, c->vocab_size);
        ck_assert_msg(tok == rtok, "%s step %d: engine picks %d, reference %d", dir, i, tok,
                      rtok);
    }
    fprintf(stderr, "%s: %d greedy steps, worst relative logit error %.3g\n", dir, N_GEN, worst);
    free(lg);
    free(rl);
    ref_free(&r);
    llama_destroy(e);
    st_free(&m);
}

START_TEST(test_reference_stories)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    check_reference(dir);
}
END_TEST

START_TEST(test_reference_synthetic)
{
    check_reference(synth_dir());
}
END_TEST

/* A prompt run as one batch, in chunks, or token by token, with 1 or 3 threads: the
 * same logits, bit for bit. */
START_TEST(test_batch_and_threads_invariant)
{
    st_model m;
    st_load(&m, synth_dir());
    df11_provider p = mem_provider(&m);
    enum { N = 23 };
    int toks[N];
    uint64_t rng = df11_test_seed();
    for (int i = 0; i < N; i++) toks[i] = (int)(df11_test_rand(&rng) % 300);
    const struct { int threads, batch, step; } runs[] = {
        {1, 64, N}, {3, 64, N}, {1, 5, N}, {3, 64, 1}, {2, 7, 3},
    };
    float *first = NULL;
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        llama *e = engine_new(m.config, m.config_len, &p, runs[r].threads, runs[r].batch);
        float *lg = malloc(300 * sizeof *lg);
        for (int pos = 0; pos < N; pos += runs[r].step) {
            int n = N - pos < runs[r].step ? N - pos : runs[r].step;
            ck_assert_int_eq(llama_forward(e, toks + pos, n, pos, lg), DF11_OK);
        }
        if (!first) first = lg;
        else {
            ck_assert_msg(memcmp(first, lg, 300 * sizeof *lg) == 0,
                          "run %zu (threads %d, batch %d, step %d) differs", r,
                          runs[r].threads, runs[r].batch, runs[r].step);
            free(lg);
        }
        /* rewinding: re-running the last token at its position gives the same logits */
        float *again = malloc(300 * sizeof *again);
        ck_assert_int_eq(llama_forward(e, toks + N - 1, 1, N - 1, again), DF11_OK);
        ck_assert(memcmp(first, again, 300 * sizeof *again) == 0);
        free(again);
        llama_destroy(e);
    }
    free(first);
    st_free(&m);
}
END_TEST

START_TEST(test_config_errors)
{
    llama_config c;
    char err[256];
    ck_assert_int_eq(llama_config_parse("not json", 8, &c, err, sizeof err), -1);
    const char *bad = "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
                      " \"num_key_value_heads\": 3, \"intermediate_size\": 10, \"vocab_size\": 9}";
    ck_assert_int_eq(llama_config_parse(bad, strlen(bad), &c, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "kv heads"));
    const char *ok = "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
                     " \"intermediate_size\": 10, \"vocab_size\": 9, \"eos_token_id\": [7, 8]}";
    ck_assert_int_eq(llama_config_parse(ok, strlen(ok), &c, err, sizeof err), 0);
    ck_assert_int_eq(c.n_kv_heads, 8);
    ck_assert_int_eq(c.head_dim, 8);
    ck_assert_int_eq(c.eos_id, 7);
    ck_assert_int_eq(c.tied, 0);

    /* a provider whose tensors have the wrong shape is refused with the name */
    st_model m;
    st_load(&m, synth_dir());
    df11_provider p = mem_provider(&m);
    const char *small = "{\"hidden_size\": 96, \"num_hidden_layers\": 3, \"num_attention_heads\": 6,"
                        " \"num_key_value_heads\": 2, \"intermediate_size\": 100, \"vocab_size\": 300}";
    llama *e = engine_new(small, strlen(small), &p, 1, 0);
    int tok = 1;
    ck_assert_int_eq(llama_forward(e, &tok, 1, 0, NULL), DF11_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(llama_error(e), "mlp.gate_proj"));
    ck_assert_int_eq(llama_forward(e, &tok, 1, 128, NULL), DF11_ERR_RANGE);
    tok = 300;
    ck_assert_int_eq(llama_forward(e, &tok, 1, 0, NULL), DF11_ERR_RANGE);
    llama_destroy(e);
    st_free(&m);
}
END_TEST

/* ---------------------------------------- through the runtime: .df11 vs BF16 ------ */

static llama *engine_open(df11_model *model, df11_provider *p)
{
    ck_assert_int_eq(df11_model_provider(model, p), DF11_OK);
    size_t len;
    const char *cfg = df11_model_config(model, &len);
    ck_assert_msg(cfg != NULL, "model has no config.json");
    return engine_new(cfg, len, p, 2, 0);
}

static const char *compress_to_tmp(const char *dir)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s.df11", df11_test_tmpdir(),
             strstr(dir, "synth") ? "synth" : "stories");
    df11_status st = df11_compress_path(dir, path, NULL, NULL);
    ck_assert_msg(st == DF11_OK, "compress %s: %s: %s", dir, df11_strerror(st),
                  df11_last_error_detail());
    return path;
}

static void check_df11_vs_bf16(const char *dir)
{
    const char *path = compress_to_tmp(dir);
    df11_status st;

    df11_model_options opt;
    df11_model_options_init(&opt);
    opt.backend = DF11_BACKEND_HOST;
    df11_model *mc, *mb;
    st = df11_model_open(path, &opt, &mc);
    ck_assert_msg(st == DF11_OK, "open %s: %s: %s", path, df11_strerror(st), df11_last_error_detail());
    st = df11_model_open_bf16(dir, &opt, &mb);
    ck_assert_msg(st == DF11_OK, "open_bf16 %s: %s: %s", dir, df11_strerror(st),
                  df11_last_error_detail());
    df11_provider pc, pb;
    llama *ec = engine_open(mc, &pc), *eb = engine_open(mb, &pb);
    int V = llama_get_config(ec)->vocab_size;
    int tc[N_GEN], tb[N_GEN];
    float *lc = malloc((size_t)N_GEN * V * sizeof *lc), *lb = malloc((size_t)N_GEN * V * sizeof *lb);
    generate(ec, N_GEN, tc, lc);
    generate(eb, N_GEN, tb, lb);
    for (int i = 0; i < N_GEN; i++) {
        ck_assert_msg(tc[i] == tb[i], "%s step %d: df11 %d, bf16 %d", dir, i, tc[i], tb[i]);
        ck_assert_msg(memcmp(lc + (size_t)i * V, lb + (size_t)i * V, V * sizeof *lc) == 0,
                      "%s step %d: logits differ", dir, i);
    }

    /* and both equal the memory provider's run */
    st_model m;
    st_load(&m, dir);
    df11_provider pm = mem_provider(&m);
    llama *em = engine_new(m.config, m.config_len, &pm, 2, 0);
    int tm[N_GEN];
    float *lm = malloc((size_t)N_GEN * V * sizeof *lm);
    generate(em, N_GEN, tm, lm);
    ck_assert(memcmp(lm, lc, (size_t)N_GEN * V * sizeof *lm) == 0);
    fprintf(stderr, "%s: %d greedy tokens, df11 == bf16 bit for bit; first: %d %d %d %d\n",
            dir, N_GEN, tc[0], tc[1], tc[2], tc[3]);

    llama_destroy(em);
    st_free(&m);
    free(lm);
    free(lc);
    free(lb);
    llama_destroy(ec);
    llama_destroy(eb);
    df11_model_close(mc);
    df11_model_close(mb);
}

START_TEST(test_df11_vs_bf16_stories)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    check_df11_vs_bf16(dir);
}
END_TEST

START_TEST(test_df11_vs_bf16_synthetic)
{
    check_df11_vs_bf16(synth_dir());
}
END_TEST

/* ------------------------------------------------ tokenizer, sampler, CLI -------- */

START_TEST(test_tokenizer)
{
    /* <unk> <s> </s>, 256 byte pieces, then " " a b ab " ab" */
    const char *extra[] = {" ", "a", "b", "ab", " ab"};
    const float extra_score[] = {-10, -10, -10, -1, -2};
    const int V = 3 + 256 + 5;
    char path[600];
    snprintf(path, sizeof path, "%s/tok.bin", df11_test_tmpdir());
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    int32_t maxlen = 6;
    fwrite(&maxlen, 4, 1, f);
    for (int i = 0; i < V; i++) {
        char piece[16];
        float score = 0;
        if (i < 3) snprintf(piece, sizeof piece, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259) snprintf(piece, sizeof piece, "<0x%02X>", i - 3);
        else { snprintf(piece, sizeof piece, "%s", extra[i - 259]); score = extra_score[i - 259]; }
        int32_t len = (int32_t)strlen(piece);
        fwrite(&score, 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(piece, 1, (size_t)len, f);
    }
    fclose(f);

    tokenizer t;
    char err[256];
    ck_assert_msg(tokenizer_load(&t, path, V, err, sizeof err) == 0, "%s", err);
    int ids[16];
    ck_assert_int_eq(tokenizer_encode(&t, "ab ab", 1, ids), 3);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 263);
    ck_assert_int_eq(ids[2], 263);
    /* é is not a piece: its two UTF-8 bytes fall back to <0xC3> <0xA9> */
    ck_assert_int_eq(tokenizer_encode(&t, "a\xc3\xa9", 0, ids), 4);
    ck_assert_int_eq(ids[0], 259);
    ck_assert_int_eq(ids[1], 260);
    ck_assert_int_eq(ids[2], 0xc3 + 3);
    ck_assert_int_eq(ids[3], 0xa9 + 3);
    char byte[2];
    ck_assert_str_eq(tokenizer_decode(&t, 1, 263, byte), "ab");    /* space after BOS dropped */
    ck_assert_str_eq(tokenizer_decode(&t, 263, 263, byte), " ab");
    ck_assert_str_eq(tokenizer_decode(&t, 260, 0xc3 + 3, byte), "\xc3");
    tokenizer_free(&t);
    ck_assert_int_eq(tokenizer_load(&t, path, V + 1, err, sizeof err), -1); /* too short */
}
END_TEST

START_TEST(test_sampler)
{
    float lg[4];
    sampler s;
    ck_assert_int_eq(sampler_init(&s, 4, 0.0f, 0.9f, 1), 0);
    float g[4] = {0.1f, 2.0f, 2.0f, -1.0f};
    ck_assert_int_eq(sampler_sample(&s, g), 1); /* greedy: lowest id on ties */
    sampler_free(&s);

    /* temperature 1 follows the softmax; a tiny top-p keeps only the best */
    const float p[4] = {0.5f, 0.3f, 0.2f, 0.0f};
    int count[4] = {0, 0, 0, 0};
    ck_assert_int_eq(sampler_init(&s, 4, 1.0f, 1.0f, df11_test_seed()), 0);
    for (int i = 0; i < 20000; i++) {
        for (int v = 0; v < 4; v++) lg[v] = p[v] > 0 ? logf(p[v]) : -1e9f;
        count[sampler_sample(&s, lg)]++;
    }
    for (int v = 0; v < 4; v++)
        ck_assert_msg(fabs(count[v] / 20000.0 - p[v]) < 0.02, "token %d drawn %d times", v, count[v]);
    sampler_free(&s);
    ck_assert_int_eq(sampler_init(&s, 4, 1.0f, 0.01f, 7), 0);
    for (int i = 0; i < 100; i++) {
        for (int v = 0; v < 4; v++) lg[v] = p[v] > 0 ? logf(p[v]) : -1e9f;
        ck_assert_int_eq(sampler_sample(&s, lg), 0);
    }
    sampler_free(&s);
}
END_TEST

/* Runs df11-run and returns its stdout parsed as JSON (NULL if not JSON); *rc its exit. */
static cJSON *run_tool(const char *args, int *rc)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/df11-run %s 2>/dev/null", DF11_TOOLS_DIR, args);
    FILE *p = popen(cmd, "r");
    ck_assert(p != NULL);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return cJSON_Parse(buf);
}

START_TEST(test_cli)
{
    char tool[600];
    snprintf(tool, sizeof tool, "%s/df11-run", DF11_TOOLS_DIR);
    struct stat sb;
    if (stat(tool, &sb) != 0) {
        fprintf(stderr, "skipping CLI test: %s not built\n", tool);
        return;
    }
    const char *dir = synth_dir(), *path = compress_to_tmp(dir);
    char args[1500];
    int rc;
    snprintf(args, sizeof args, "%s --device cpu --json -n 12 --tokens 1,5,9", path);
    cJSON *a = run_tool(args, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(a);
    snprintf(args, sizeof args, "--bf16 %s --device cpu --json -n 12 --tokens 1,5,9", dir);
    cJSON *b = run_tool(args, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(b);
    const cJSON *ta = cJSON_GetObjectItem(a, "generated_tokens");
    ck_assert_int_eq(cJSON_GetArraySize(ta), 12);
    char *sa = cJSON_PrintUnformatted(ta), *sb2 = cJSON_PrintUnformatted(cJSON_GetObjectItem(b, "generated_tokens"));
    ck_assert_str_eq(sa, sb2);
    ck_assert_str_eq(cJSON_GetObjectItem(a, "logits_fnv1a")->valuestring,
                     cJSON_GetObjectItem(b, "logits_fnv1a")->valuestring);
    ck_assert_str_eq(cJSON_GetObjectItem(a, "weights")->valuestring, "df11");
    ck_assert(cJSON_IsObject(cJSON_GetObjectItem(a, "memory")));

    /* the engine in-process gives the same tokens */
    st_model m;
    st_load(&m, dir);
    df11_provider pm = mem_provider(&m);
    llama *e = engine_new(m.config, m.config_len, &pm, 1, 0);
    float *lg = malloc(300 * sizeof *lg);
    int prompt[3] = {1, 5, 9}, tok;
    ck_assert_int_eq(llama_forward(e, prompt, 3, 0, lg), DF11_OK);
    for (int i = 0; i < 12; i++) {
        tok = argmax(lg, 300);
        ck_assert_int_eq(tok, cJSON_GetArrayItem(ta, i)->valueint);
        ck_assert_int_eq(llama_forward(e, &tok, 1, 3 + i, lg), DF11_OK);
    }
    free(lg);
    llama_destroy(e);
    st_free(&m);
    free(sa);
    free(sb2);
    cJSON_Delete(a);
    cJSON_Delete(b);

    /* usage errors exit 2, a missing file 1 */
    cJSON_Delete(run_tool("--device gpu x.df11", &rc));
    ck_assert_int_eq(rc, 2);
    cJSON_Delete(run_tool("", &rc));
    ck_assert_int_eq(rc, 2);
    cJSON_Delete(run_tool("/nonexistent.df11 --device cpu", &rc));
    ck_assert_int_eq(rc, 1);
    snprintf(args, sizeof args, "%s --device cpu -p hello", path);
    cJSON_Delete(run_tool(args, &rc));
    ck_assert_int_eq(rc, 2); /* -p without a tokenizer */
}
END_TEST

#ifdef DF11_HAVE_CUDA
/* The CUDA path against the host path, teacher-forced on the host's greedy tokens, and
 * df11 against BF16 on the GPU: bit-identical, since cuBLAS gets identical operands.
 * The GPU rounds GEMM inputs to BF16: a float64 model that does the same differs from
 * the exact one by up to 5% of the largest logit on stories260K (tools/run/reference.py
 * style check, docs/ENGINE.md), hence 10%. Skipped without a GPU. */
static void check_gpu(const char *dir)
{
    const char *path = compress_to_tmp(dir);
    df11_model_options opt;
    df11_model_options_init(&opt);
    opt.backend = DF11_BACKEND_HOST;
    df11_model *mh, *mc, *mb;
    ck_assert_int_eq(df11_model_open(path, &opt, &mh), DF11_OK);
    opt.backend = DF11_BACKEND_CUDA;
    df11_status st = df11_model_open(path, &opt, &mc);
    ck_assert_msg(st == DF11_OK, "open cuda: %s: %s", df11_strerror(st), df11_last_error_detail());
    st = df11_model_open_bf16(dir, &opt, &mb);
    ck_assert_msg(st == DF11_OK, "open_bf16 cuda: %s: %s", df11_strerror(st), df11_last_error_detail());
    df11_provider ph, pc, pb;
    size_t len;
    const char *cfg = df11_model_config(mh, &len);
    ck_assert_int_eq(df11_model_provider(mh, &ph), DF11_OK);
    ck_assert_int_eq(df11_model_provider(mc, &pc), DF11_OK);
    ck_assert_int_eq(df11_model_provider(mb, &pb), DF11_OK);
    llama *eh = engine_new(cfg, len, &ph, 2, 0);
    llama *ec = engine_new_on(LLAMA_DEVICE_CUDA, cfg, len, &pc, 0, 0);
    llama *eb = engine_new_on(LLAMA_DEVICE_CUDA, cfg, len, &pb, 0, 0);
    const int V = llama_get_config(eh)->vocab_size;
    int toks[N_GEN + 1];
    float *lh = malloc((size_t)N_GEN * V * sizeof *lh);
    generate(eh, N_GEN, toks + 1, lh);
    toks[0] = llama_get_config(eh)->bos_id;

    float *lc = malloc((size_t)V * sizeof *lc), *lb = malloc((size_t)V * sizeof *lb);
    double worst = 0;
    int agree = 0;
    for (int i = 0; i < N_GEN; i++) {
        ck_assert_msg(llama_forward(ec, toks + i, 1, i, lc) == DF11_OK, "%s", llama_error(ec));
        ck_assert_msg(llama_forward(eb, toks + i, 1, i, lb) == DF11_OK, "%s", llama_error(eb));
        ck_assert_msg(memcmp(lc, lb, (size_t)V * sizeof *lc) == 0, "%s step %d: GPU df11 != "
                      "GPU bf16", dir, i);
        const float *want = lh + (size_t)i * V;
        double scale = 0, err = 0;
        for (int v = 0; v < V; v++) {
            if (fabs(want[v]) > scale) scale = fabs(want[v]);
            if (fabs(lc[v] - want[v]) > err) err = fabs(lc[v] - want[v]);
        }
        double rel = err / (scale > 1 ? scale : 1);
        if (rel > worst) worst = rel;
        ck_assert_msg(rel < 0.1, "%s step %d: GPU vs host relative error %.3g", dir, i, rel);
        agree += argmax(lc, V) == toks[i + 1];
    }
    /* the whole sequence as one prefill batch: same last logits within the tolerance */
    ck_assert_int_eq(llama_forward(ec, toks, N_GEN, 0, lc), DF11_OK);
    double err = 0, scale = 0;
    for (int v = 0; v < V; v++) {
        const float *want = lh + (size_t)(N_GEN - 1) * V;
        if (fabs(want[v]) > scale) scale = fabs(want[v]);
        if (fabs(lc[v] - want[v]) > err) err = fabs(lc[v] - want[v]);
    }
    ck_assert_msg(err / (scale > 1 ? scale : 1) < 0.1, "%s: GPU prefill relative error %.3g",
                  dir, err / (scale > 1 ? scale : 1));
    fprintf(stderr, "%s: GPU vs host worst relative logit error %.3g, greedy agreement %d/%d;"
            " GPU df11 == GPU bf16 bit for bit\n", dir, worst, agree, N_GEN);
    ck_assert_int_ge(agree, N_GEN * 9 / 10);
    free(lh); free(lc); free(lb);
    llama_destroy(eh); llama_destroy(ec); llama_destroy(eb);
    df11_model_close(mh); df11_model_close(mc); df11_model_close(mb);
}

START_TEST(test_gpu_matches_host)
{
    uint64_t free_b, total_b;
    if (llama_gpu_mem_info(&free_b, &total_b) != 0) {
        fprintf(stderr, "skipping GPU comparison: no GPU\n");
        return;
    }
    check_gpu(synth_dir());
    const char *dir = df11_test_model_dir();
    if (dir) check_gpu(dir);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("llama");
    TCase *tc = tcase_create("engine");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_reference_synthetic);
    tcase_add_test(tc, test_reference_stories);
    tcase_add_test(tc, test_batch_and_threads_invariant);
    tcase_add_test(tc, test_df11_vs_bf16_synthetic);
    tcase_add_test(tc, test_df11_vs_bf16_stories);
    tcase_add_test(tc, test_tokenizer);
    tcase_add_test(tc, test_sampler);
    tcase_add_test(tc, test_cli);
#ifdef DF11_HAVE_CUDA
    tcase_add_test(tc, test_gpu_matches_host);
#endif
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
