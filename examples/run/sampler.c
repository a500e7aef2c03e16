/* Token sampling: greedy, temperature, top-p. */
#include <math.h>
#include <stdlib.h>

#include "sampler.h"

int sampler_init(sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed)
{
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x9e3779b97f4a7c15ull; /* xorshift must not start at 0 */
    s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
    return s->cand ? 0 : -1;
}

void sampler_free(sampler *s)
{
    free(s->cand);
    s->cand = NULL;
}

/* A uniform float in [0, 1) from xorshift64*. */
static float next_uniform(sampler *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

int sampler_argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static void softmax(float *x, int n)
{
    float mx = x[sampler_argmax(x, n)], sum = 0.0f;
    for (int i = 0; i < n; i++) sum += (x[i] = expf(x[i] - mx));
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static int by_prob_desc(const void *a, const void *b)
{
    const struct sampler_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

/* Nucleus sampling: the smallest set of most likely tokens whose mass exceeds top_p. Tokens
 * below (1 - top_p) / (n - 1) cannot be in it and are dropped before sorting. */
static int sample_top_p(sampler *s, const float *probs, float coin)
{
    const int n = s->vocab_size;
    const float cutoff = (1.0f - s->top_p) / (float)(n > 1 ? n - 1 : 1);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (probs[i] >= cutoff) s->cand[m++] = (struct sampler_cand){ probs[i], i };
    qsort(s->cand, (size_t)m, sizeof *s->cand, by_prob_desc);
    float mass = 0.0f;
    int last = m - 1;
    for (int i = 0; i < m; i++) {
        mass += s->cand[i].p;
        if (mass > s->top_p) {
            last = i;
            break;
        }
    }
    float r = coin * mass, acc = 0.0f;
    for (int i = 0; i <= last; i++) {
        acc += s->cand[i].p;
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[last].id;
}

int sampler_sample(sampler *s, float *logits)
{
    if (s->temperature <= 0.0f) return sampler_argmax(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= s->temperature;
    softmax(logits, s->vocab_size);
    float coin = next_uniform(s);
    if (s->top_p > 0.0f && s->top_p < 1.0f) return sample_top_p(s, logits, coin);
    float acc = 0.0f;
    for (int i = 0; i < s->vocab_size; i++) {
        acc += logits[i];
        if (coin < acc) return i;
    }
    return s->vocab_size - 1;
}
