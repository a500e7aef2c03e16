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

#endif
