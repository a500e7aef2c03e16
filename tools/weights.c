#include <math.h>
#include <string.h>

#include "common/parallel.h"
#include "tools/weights.h"

uint64_t weights_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t next(uint64_t *s) { return weights_mix64(*s += 0x9e3779b97f4a7c15ull); }

/* Box-Muller: two independent N(0, 1). */
static void normal_pair(uint64_t *s, double *a, double *b)
{
    double u1 = ((double)(next(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(next(s) >> 11) / 9007199254740992.0;
    double r = sqrt(-2.0 * log(u1));
    *a = r * cos(6.283185307179586 * u2);
    *b = r * sin(6.283185307179586 * u2);
}

static uint16_t bf16_rne(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)(u >> 16 | 0x40); /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

typedef struct {
    uint16_t *out;
    uint64_t rows, cols, seed;
    bool norm;
} fill_job;

static df11_status fill_rows(void *ctx, uint64_t item)
{
    const fill_job *j = ctx;
    for (uint64_t r = item * 64; r < j->rows && r < (item + 1) * 64; r++) {
        uint64_t s = weights_mix64(j->seed ^ weights_mix64(r + 0x632be59bd9b4e019ull));
        uint16_t *o = j->out + r * j->cols;
        double a, b, mean = j->norm ? 1.0 : 0.0, sigma = 0.02;
        if (!j->norm) {
            normal_pair(&s, &a, &b);
            sigma = 0.02 * exp(0.3 * a);
        }
        for (uint64_t c = 0; c < j->cols; c += 2) {
            normal_pair(&s, &a, &b);
            o[c] = bf16_rne((float)(mean + sigma * a));
            if (c + 1 < j->cols) o[c + 1] = bf16_rne((float)(mean + sigma * b));
        }
    }
    return DF11_OK;
}

void weights_fill(uint16_t *out, uint64_t rows, uint64_t cols, uint64_t seed, bool norm,
                  int threads)
{
    fill_job j = { .out = out, .rows = rows, .cols = cols, .seed = seed, .norm = norm };
    df11i_parallel_for((rows + 63) / 64, threads, fill_rows, &j);
}

uint64_t weights_tensor_seed(const char *name, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 0x100000001b3ull;
    return weights_mix64(seed ^ weights_mix64(h));
}

const weights_matrix weights_llama3_8b_block[WEIGHTS_LLAMA3_8B_BLOCK_N] = {
    { "model.layers.0.self_attn.q_proj.weight", 4096, 4096 },
    { "model.layers.0.self_attn.k_proj.weight", 1024, 4096 },
    { "model.layers.0.self_attn.v_proj.weight", 1024, 4096 },
    { "model.layers.0.self_attn.o_proj.weight", 4096, 4096 },
    { "model.layers.0.mlp.gate_proj.weight", 14336, 4096 },
    { "model.layers.0.mlp.up_proj.weight", 14336, 4096 },
    { "model.layers.0.mlp.down_proj.weight", 4096, 14336 },
};
