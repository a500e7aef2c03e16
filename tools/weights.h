/* Synthetic trained-like BF16 weights, shared by df11-synth, df11-bench and the tests:
 * each row r of a matrix is N(mean, σ_r²) with σ_r = 0.02·e^{0.3 z_r} — the spread of row
 * scales, not the Gaussian itself, is what gives real weights their ~2.6-bit exponent
 * entropy. Every row has its own random stream (seed, row), so any thread count gives the
 * same bytes. */
#ifndef DF11_TOOLS_WEIGHTS_H
#define DF11_TOOLS_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

uint64_t weights_mix64(uint64_t x);
/* `norm`: rows of 1 + N(0, 0.02²) instead (RMSNorm gains). */
void weights_fill(uint16_t *out, uint64_t rows, uint64_t cols, uint64_t seed, bool norm,
                  int threads);

/* df11-synth's seed for tensor `name` of a model made with --seed `seed`: tensors are told
 * apart by name, not position, so a block's weights are the same whatever --layers or
 * --shape variant (llama3-8b vs llama3-8b-block) wrote them. */
uint64_t weights_tensor_seed(const char *name, uint64_t seed);

/* The seven matrices of a Llama-3-8B block (block 0, HF names), for the benchmarks. */
typedef struct weights_matrix {
    const char *name;
    uint64_t rows, cols;
} weights_matrix;
#define WEIGHTS_LLAMA3_8B_BLOCK_N 7
extern const weights_matrix weights_llama3_8b_block[WEIGHTS_LLAMA3_8B_BLOCK_N];

#endif
