/* Shared helpers for the Check suites: seeded random data, temp paths, running a suite. */
#ifndef DF11_TESTS_TESTUTIL_H
#define DF11_TESTS_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "df11/file.h"

/* The seed of this run: DF11_TEST_SEED from the environment, else fixed. Printed by
 * df11_test_run so that a failure can be replayed. */
uint64_t df11_test_seed(void);
/* The fixed code the suites that run on fixed-coded files use: DF11_CODEC_EXP_FIXED8 where
 * DF11_TEST_FIXED_CODEC is "fixed8" (tests/CMakeLists.txt registers those suites twice),
 * else DF11_CODEC_EXP_FIXED. */
df11_codec df11_test_fixed_codec(void);
uint64_t df11_test_rand(uint64_t *state); /* splitmix64 */
double df11_test_normal(uint64_t *state);
/* `n` BF16 weights with rows of `cols` drawn from N(0, σ_r²), σ_r = 0.02·e^{0.3 z}. */
void df11_test_fill_weights(uint16_t *out, size_t n, size_t cols, uint64_t *state);
/* The value of a BF16. */
float df11_test_bf16_f32(uint16_t v);
/* `n` BF16 values of N(0, 1), truncated to BF16 (activations for products); malloc'd. */
uint16_t *df11_test_random_bf16(size_t n, uint64_t *state);
/* A fresh temporary directory (removed with its files at exit). */
const char *df11_test_tmpdir(void);
/* Path of the real model folder, or NULL (with a message) if it is absent. */
const char *df11_test_model_dir(void);
/* Runs the suite, prints the seed, returns the process exit status. */
int df11_test_run(Suite *suite);

#endif
