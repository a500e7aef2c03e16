#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/testutil.h"

uint64_t df11_test_seed(void)
{
    const char *s = getenv("DF11_TEST_SEED");
    return s ? strtoull(s, NULL, 0) : 0x5eed0df11ull;
}

df11_codec df11_test_fixed_codec(void)
{
    const char *s = getenv("DF11_TEST_FIXED_CODEC");
    return s && strcmp(s, "fixed8") == 0 ? DF11_CODEC_EXP_FIXED8 : DF11_CODEC_EXP_FIXED;
}

uint64_t df11_test_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double df11_test_normal(uint64_t *state)
{
    double u1 = ((double)(df11_test_rand(state) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(df11_test_rand(state) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float df11_test_bf16_f32(uint16_t v)
{
    const uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t *df11_test_random_bf16(size_t n, uint64_t *state)
{
    uint16_t *x = malloc(n * 2 + 2);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < n; i++) {
        const float f = (float)df11_test_normal(state);
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        x[i] = (uint16_t)(u >> 16);
    }
    return x;
}

void df11_test_fill_weights(uint16_t *out, size_t n, size_t cols, uint64_t *state)
{
    if (cols == 0) cols = 1;
    double sigma = 0.02;
    for (size_t i = 0; i < n; i++) {
        if (i % cols == 0) sigma = 0.02 * exp(0.3 * df11_test_normal(state));
        out[i] = to_bf16((float)(sigma * df11_test_normal(state)));
    }
}

static char tmpdir[256];

static void remove_tmpdir(void)
{
    if (!tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *df11_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/df11-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *df11_test_model_dir(void)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/../shared/models/stories260K", DF11_SOURCE_DIR);
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "skipping: real model not found at %s\n", path);
        return NULL;
    }
    return path;
}

int df11_test_run(Suite *suite)
{
    fprintf(stderr, "seed 0x%llx (set DF11_TEST_SEED to replay)\n",
            (unsigned long long)df11_test_seed());
    SRunner *sr = srunner_create(suite);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
