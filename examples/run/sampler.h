/* Picking the next token from logits: greedy (temperature 0), or sampling at a temperature,
 * optionally restricted to the top-p nucleus. Deterministic for a given seed. */
#ifndef DF11_RUN_SAMPLER_H
#define DF11_RUN_SAMPLER_H

#include <stdint.h>

typedef struct sampler {
    int vocab_size;
    float temperature; /* 0 = greedy */
    float top_p;       /* in (0, 1): nucleus sampling; otherwise the whole distribution */
    uint64_t rng;      /* xorshift64* state */
    struct sampler_cand {
        float p;
        int id;
    } * cand; /* vocab_size scratch */
} sampler;

/* Returns 0, or -1 if out of memory. */
int sampler_init(sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed);
void sampler_free(sampler *s);
/* Picks a token; `logits` (vocab_size floats) is overwritten with probabilities unless
 * greedy. Ties in greedy mode go to the lowest id. */
int sampler_sample(sampler *s, float *logits);
/* The index of the largest value (lowest on ties). */
int sampler_argmax(const float *v, int n);

#endif
