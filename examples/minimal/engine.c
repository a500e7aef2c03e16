/* A minimal external engine on df11: a Llama-family forward pass in plain C over the
 * public API alone (<df11.h>), on the host backend, greedy. It is the loop docs/RUNTIME.md
 * ("For engine authors") walks through, and tests/install builds it against the installed
 * package and runs it. Not fast and not complete (no rope scaling, no biases, no sliding
 * window, batch 1): examples/run is the full engine.
 *
 *     usage: engine MODEL [-bf16] STEPS TOKEN...
 *     prints the STEPS tokens it generates after the prompt TOKEN..., space-separated.
 *
 * The loop: open; hparams; every weight resolved once (df11_weight_get for the linear
 * layers, df11_tensor_id for the norms, read once into F32); per token: embeddings by
 * df11_rows_gather, each linear layer by df11_matmul; close. */
#include <df11.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WQ, WK, WV, WO, WGATE, WUP, WDOWN, N_LINEAR };
static const char *const LINEAR[N_LINEAR] = { "self_attn.q_proj", "self_attn.k_proj",
                                              "self_attn.v_proj", "self_attn.o_proj",
                                              "mlp.gate_proj",    "mlp.up_proj",
                                              "mlp.down_proj" };

typedef struct engine {
    df11_model *m;
    df11_hparams h;
    df11_weight *w; /* n_layers × N_LINEAR */
    df11_weight embed, head;
    float *norm_in, *norm_post, *norm_final; /* F32 copies, read once */
    float *k_cache, *v_cache;                /* n_layers × ctx × kv_dim */
    uint32_t ctx;
    /* per-token buffers */
    float *x, *h1, *q, *k, *v, *att, *g, *u, *logits;
    uint16_t *xb; /* the BF16 input df11_matmul takes */
} engine;

static int check(df11_status s, const char *what)
{
    if (s == DF11_OK) return 0;
    fprintf(stderr, "engine: %s: %s (%s)\n", what, df11_strerror(s), df11_last_error_detail());
    return 1;
}

/* y (F32, rows of w) = x (F32, cols of w) · Wᵀ: x goes to BF16, the op's input type. */
static int linear(engine *e, const df11_weight *w, const float *x, float *y)
{
    df11_f32_to_bf16(x, e->xb, w->cols);
    return check(df11_matmul(e->m, w, e->xb, 1, y, DF11_DTYPE_F32, NULL), w->name);
}

static void rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps)
{
    double ss = 0;
    for (uint32_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (uint32_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* Hugging Face's rotate-half RoPE: in each head, element i pairs with i + head_dim / 2 (the
 * row order q_proj and k_proj are stored in; see docs/RUNTIME.md). */
static void rope(float *v, uint32_t n_heads, uint32_t hd, uint32_t pos, float theta)
{
    for (uint32_t hh = 0; hh < n_heads; hh++)
        for (uint32_t i = 0; i < hd / 2; i++) {
            const double f = pos * pow(theta, -2.0 * i / hd);
            const float c = (float)cos(f), s = (float)sin(f);
            float *a = &v[hh * hd + i], *b = &v[hh * hd + i + hd / 2];
            const float x0 = *a, x1 = *b;
            *a = x0 * c - x1 * s;
            *b = x1 * c + x0 * s;
        }
}

/* A linear weight's shape against config.json's: the buffers are sized by the config. */
static int shape_ok(const df11_weight *w, uint32_t rows, uint32_t cols)
{
    if (w->rows == rows && w->cols == cols) return 1;
    fprintf(stderr, "engine: %s: [%u, %u], config.json says [%u, %u]\n", w->name, w->rows, w->cols,
            rows, cols);
    return 0;
}

/* A norm weight, read once: its data as F32 into out (hidden_size values). */
static int norm_read(engine *e, const char *name, float *out)
{
    uint32_t id;
    df11_tensor_view v;
    if (check(df11_tensor_id(e->m, name, &id), name) ||
        check(df11_tensor_get_id(e->m, id, NULL, &v), name))
        return 1;
    /* the file's shape, not config.json's hidden_size, says how many values there are */
    int bad = (v.dtype != DF11_DTYPE_BF16 && v.dtype != DF11_DTYPE_F32) || v.ndim != 1 ||
              v.shape[0] != e->h.hidden_size;
    if (!bad && v.dtype == DF11_DTYPE_BF16) df11_bf16_to_f32(v.data, out, e->h.hidden_size);
    if (!bad && v.dtype == DF11_DTYPE_F32) memcpy(out, v.data, e->h.hidden_size * 4);
    df11_tensor_release_id(e->m, id, NULL);
    if (bad)
        fprintf(stderr, "engine: %s: want BF16 or F32 [%u], as config.json's hidden_size\n", name,
                e->h.hidden_size);
    return bad;
}

static int engine_load(engine *e)
{
    const df11_hparams *h = &e->h;
    const uint32_t L = h->n_layers, D = h->hidden_size;
    if (h->rope.type != DF11_ROPE_NONE) {
        fprintf(stderr, "engine: rope scaling '%s' is not in this example\n", h->rope.name);
        return 1;
    }
    const uint32_t q_dim = h->n_heads * h->head_dim, kv_dim = h->n_kv_heads * h->head_dim;
    const uint32_t I = h->intermediate_size;
    const uint32_t want[N_LINEAR][2] = { { q_dim, D }, { kv_dim, D }, { kv_dim, D }, { D, q_dim },
                                         { I, D },     { I, D },      { D, I } };
    e->w = calloc((size_t)L * N_LINEAR, sizeof *e->w);
    e->norm_in = calloc((size_t)L * D, 4);
    e->norm_post = calloc((size_t)L * D, 4);
    e->norm_final = calloc(D, 4);
    if (!e->w || !e->norm_in || !e->norm_post || !e->norm_final) return 1;
    char name[256];
    for (uint32_t l = 0; l < L; l++) {
        for (int j = 0; j < N_LINEAR; j++) {
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, LINEAR[j]);
            if (check(df11_weight_get(e->m, name, &e->w[l * N_LINEAR + j]), name) ||
                !shape_ok(&e->w[l * N_LINEAR + j], want[j][0], want[j][1]))
                return 1;
        }
        /* A layer's tensors are served while its block is acquired. */
        if (check(df11_block_acquire(e->m, l, NULL, NULL), "block")) return 1;
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        int bad = norm_read(e, name, &e->norm_in[(size_t)l * D]);
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        bad = bad || norm_read(e, name, &e->norm_post[(size_t)l * D]);
        if (check(df11_block_release(e->m, l, NULL), "block") || bad) return 1;
    }
    if (norm_read(e, "model.norm.weight", e->norm_final) ||
        check(df11_weight_get(e->m, "model.embed_tokens.weight", &e->embed), "embeddings"))
        return 1;
    if (h->tie_word_embeddings)
        e->head = e->embed;
    else if (check(df11_weight_get(e->m, "lm_head.weight", &e->head), "lm_head"))
        return 1;
    if (!shape_ok(&e->embed, h->vocab_size, D) || !shape_ok(&e->head, h->vocab_size, D)) return 1;

    e->ctx = h->max_positions < 256 ? h->max_positions : 256;
    e->k_cache = calloc((size_t)L * e->ctx * kv_dim, 4);
    e->v_cache = calloc((size_t)L * e->ctx * kv_dim, 4);
    uint32_t widest = D > q_dim ? D : q_dim;
    if (h->intermediate_size > widest) widest = h->intermediate_size;
    e->x = calloc(D, 4);
    e->h1 = calloc(widest, 4);
    e->q = calloc(q_dim, 4);
    e->k = calloc(kv_dim, 4);
    e->v = calloc(kv_dim, 4);
    e->att = calloc(e->ctx, 4);
    e->g = calloc(widest, 4); /* also o_proj's output */
    e->u = calloc(h->intermediate_size, 4);
    e->logits = calloc(h->vocab_size, 4);
    e->xb = calloc(widest, 2);
    return !e->k_cache || !e->v_cache || !e->x || !e->h1 || !e->q || !e->k || !e->v || !e->att ||
           !e->g || !e->u || !e->logits || !e->xb;
}

/* One token at position pos: e->logits. */
static int forward(engine *e, uint32_t token, uint32_t pos)
{
    const df11_hparams *h = &e->h;
    const uint32_t D = h->hidden_size, hd = h->head_dim, kv_dim = h->n_kv_heads * hd;
    if (check(df11_rows_gather(e->m, &e->embed, &token, 1, e->x, DF11_DTYPE_F32, NULL), "embed"))
        return 1;
    for (uint32_t l = 0; l < h->n_layers; l++) {
        const df11_weight *w = &e->w[l * N_LINEAR];
        rmsnorm(e->h1, e->x, &e->norm_in[(size_t)l * D], D, h->rms_norm_eps);
        if (linear(e, &w[WQ], e->h1, e->q) || linear(e, &w[WK], e->h1, e->k) ||
            linear(e, &w[WV], e->h1, e->v))
            return 1;
        rope(e->q, h->n_heads, hd, pos, h->rope_theta);
        rope(e->k, h->n_kv_heads, hd, pos, h->rope_theta);
        float *kc = &e->k_cache[(size_t)l * e->ctx * kv_dim];
        float *vc = &e->v_cache[(size_t)l * e->ctx * kv_dim];
        memcpy(&kc[(size_t)pos * kv_dim], e->k, kv_dim * 4);
        memcpy(&vc[(size_t)pos * kv_dim], e->v, kv_dim * 4);
        for (uint32_t hh = 0; hh < h->n_heads; hh++) {
            const uint32_t kvh = hh / (h->n_heads / h->n_kv_heads);
            const float *qh = &e->q[hh * hd];
            float mx = -INFINITY, sum = 0;
            for (uint32_t t = 0; t <= pos; t++) {
                float s = 0;
                for (uint32_t i = 0; i < hd; i++)
                    s += qh[i] * kc[(size_t)t * kv_dim + kvh * hd + i];
                e->att[t] = s / sqrtf((float)hd);
                if (e->att[t] > mx) mx = e->att[t];
            }
            for (uint32_t t = 0; t <= pos; t++) sum += e->att[t] = expf(e->att[t] - mx);
            float *out = &e->h1[hh * hd];
            for (uint32_t i = 0; i < hd; i++) out[i] = 0;
            for (uint32_t t = 0; t <= pos; t++)
                for (uint32_t i = 0; i < hd; i++)
                    out[i] += e->att[t] / sum * vc[(size_t)t * kv_dim + kvh * hd + i];
        }
        if (linear(e, &w[WO], e->h1, e->g)) return 1;
        for (uint32_t i = 0; i < D; i++) e->x[i] += e->g[i];
        rmsnorm(e->h1, e->x, &e->norm_post[(size_t)l * D], D, h->rms_norm_eps);
        if (linear(e, &w[WGATE], e->h1, e->g) || linear(e, &w[WUP], e->h1, e->u)) return 1;
        for (uint32_t i = 0; i < h->intermediate_size; i++)
            e->g[i] = e->g[i] / (1.0f + expf(-e->g[i])) * e->u[i];
        if (linear(e, &w[WDOWN], e->g, e->h1)) return 1;
        for (uint32_t i = 0; i < D; i++) e->x[i] += e->h1[i];
    }
    rmsnorm(e->h1, e->x, e->norm_final, D, h->rms_norm_eps);
    return linear(e, &e->head, e->h1, e->logits);
}

int main(int argc, char **argv)
{
    int bf16 = argc > 2 && !strcmp(argv[2], "-bf16");
    if (argc < 4 + bf16) {
        fprintf(stderr, "usage: engine MODEL [-bf16] STEPS TOKEN...\n");
        return 2;
    }
    engine e = { 0 };
    df11_model_options opt;
    df11_model_options_init(&opt);
    opt.backend = DF11_BACKEND_HOST; /* host pointers; NULL streams, every call synchronous */
    df11_status s =
        bf16 ? df11_model_open_bf16(argv[1], &opt, &e.m) : df11_model_open(argv[1], &opt, &e.m);
    if (check(s, argv[1])) return 1;
    e.h.size = sizeof e.h;
    int rc = check(df11_model_hparams(e.m, &e.h), "config.json") || engine_load(&e);
    char *end;
    const long steps = strtol(argv[2 + bf16], &end, 10);
    if (*end || end == argv[2 + bf16] || steps < 0 || steps > 1000000) {
        fprintf(stderr, "engine: STEPS '%s': want 0..1000000\n", argv[2 + bf16]);
        rc = 2;
    }
    uint32_t pos = 0;
    for (int a = 3 + bf16; !rc && a < argc; a++) { /* the prompt */
        const unsigned long token = strtoul(argv[a], &end, 10);
        if (*end || end == argv[a] || argv[a][0] == '-' || token >= e.h.vocab_size) {
            fprintf(stderr, "engine: TOKEN '%s': want 0..%u\n", argv[a], e.h.vocab_size - 1);
            rc = 2;
        } else if (pos >= e.ctx) {
            fprintf(stderr, "engine: the prompt is longer than the context (%u)\n", e.ctx);
            rc = 1;
        } else {
            rc = forward(&e, (uint32_t)token, pos++);
        }
    }
    for (long i = 0; !rc && i < steps; i++) { /* greedy */
        uint32_t best = 0;
        for (uint32_t t = 1; t < e.h.vocab_size; t++)
            if (e.logits[t] > e.logits[best]) best = t;
        printf("%s%u", i ? " " : "", best);
        if (i + 1 == steps) break;
        if (pos >= e.ctx) { /* the next token has no place in the KV cache */
            fprintf(stderr, "\nengine: the context (%u tokens) is full\n", e.ctx);
            rc = 1;
        } else {
            rc = forward(&e, best, pos++);
        }
    }
    printf("\n");
    df11_model_close(e.m);
    free(e.w);
    free(e.norm_in);
    free(e.norm_post);
    free(e.norm_final);
    free(e.k_cache);
    free(e.v_cache);
    free(e.x);
    free(e.h1);
    free(e.q);
    free(e.k);
    free(e.v);
    free(e.att);
    free(e.g);
    free(e.u);
    free(e.logits);
    free(e.xb);
    return rc;
}
