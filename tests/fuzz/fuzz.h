/* Shared by the fuzz targets: the libFuzzer entry point and a check that holds in every
 * build. Targets run under libFuzzer (clang -fsanitize=fuzzer) and under replay.c (any
 * compiler, Release included), so they never use assert(): NDEBUG would remove it. */
#ifndef DF11_TESTS_FUZZ_H
#define DF11_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* For a target's own checking loops: their branches are no coverage worth steering by, and
 * comparison tracing in a per-element loop costs more than the code under test. */
#if defined(__clang__)
#define FUZZ_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define FUZZ_NO_COVERAGE
#endif

/* A property the target asserts: on failure, say which and abort (libFuzzer saves the
 * input as crash-<sha1>; replay.c names the file it was running). */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s: ", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A df11 status is DF11_OK or one of the codes status.h lists (df11_strerror knows its
 * name), and a failure says why. */
#define FUZZ_CHECK_STATUS(st)                                                                      \
    do {                                                                                           \
        df11_status st_ = (st);                                                                    \
        FUZZ_CHECK(st_ <= DF11_OK && strcmp(df11_strerror(st_), "unknown df11 status") != 0,       \
                   "status %d", (int)st_);                                                         \
        FUZZ_CHECK(st_ == DF11_OK || df11_last_error_detail()[0] != '\0', "%s without a detail",   \
                   df11_strerror(st_));                                                            \
    } while (0)

/* An input cut into sections, each copied into a buffer of exactly its size (so that the
 * sanitizers see an over-read of one section), zeros past the input's end. */
typedef struct fuzz_reader {
    const uint8_t *data;
    size_t size, pos;
} fuzz_reader;

/* The next `n` bytes in a malloc'd buffer of their own; NULL when out of memory. */
static inline void *fuzz_take(fuzz_reader *r, uint64_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return NULL;
    size_t have = r->pos < r->size ? r->size - r->pos : 0;
    if (have > n) have = n;
    memcpy(p, r->data + r->pos, have);
    memset(p + have, 0, n - have);
    r->pos += n;
    return p;
}

#endif
