/* Fuzz target: df11i_st_parse, one safetensors file image from memory (loader/safetensors.h).
 * The input is the whole file: 8-byte header length, JSON header, data area.
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - the status is DF11_OK or a listed code, and a failure has a detail;
 *  - a failure leaves the model as it was (no tensors);
 *  - on success every tensor has a known dtype, at most DF11_MAX_DIMS dims, a
 *    NUL-terminated name, and data = shape product * dtype size bytes inside the input;
 *    tensors come sorted by offset without overlapping, and names are unique;
 *  - parsing the same image into the model again fails with DF11_ERR_DUPLICATE (when it
 *    holds a tensor) and leaves the model as it was. */
#include <string.h>

#include "fuzz.h"
#include "loader/safetensors.h"

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void check_model(const df11i_st_model *m, const uint8_t *data, size_t size)
{
    const char **names = malloc((m->n_tensors + 1) * sizeof *names);
    FUZZ_CHECK(names != NULL, "out of memory");
    const uint8_t *prev_end = data;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const df11_tensor_source *t = &m->tensors[i];
        size_t es = df11_dtype_size(t->dtype);
        FUZZ_CHECK(es != 0, "tensor %zu: dtype %d", i, (int)t->dtype);
        FUZZ_CHECK(t->ndim <= DF11_MAX_DIMS, "tensor %zu: %u dims", i, t->ndim);
        FUZZ_CHECK(t->name && strlen(t->name) <= size, "tensor %zu: name", i);
        uint64_t n = es;
        for (uint32_t d = 0; d < t->ndim; d++)
            FUZZ_CHECK(!__builtin_mul_overflow(n, t->shape[d], &n), "tensor %zu: shape overflows",
                       i);
        const uint8_t *p = t->data;
        FUZZ_CHECK(n == 0 || (p >= data && p <= data + size && n <= (uint64_t)(data + size - p)),
                   "tensor '%s': %llu bytes at %p outside the input [%p, +%zu)", t->name,
                   (unsigned long long)n, (const void *)p, (const void *)data, size);
        if (n) {
            FUZZ_CHECK(p >= prev_end, "tensor '%s' overlaps or is out of order", t->name);
            prev_end = p + n;
        }
        names[i] = t->name;
    }
    qsort(names, m->n_tensors, sizeof *names, cmp_name);
    for (size_t i = 1; i < m->n_tensors; i++)
        FUZZ_CHECK(strcmp(names[i - 1], names[i]) != 0, "name '%s' twice", names[i]);
    free(names);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    df11i_st_model *m = calloc(1, sizeof *m);
    if (!m) return 0;
    df11_status st = df11i_st_parse(m, data, size, "fuzz.safetensors");
    FUZZ_CHECK_STATUS(st);
    if (st != DF11_OK) {
        FUZZ_CHECK(m->n_tensors == 0, "failed parse left %zu tensors", m->n_tensors);
    } else {
        check_model(m, data, size);
        size_t n = m->n_tensors;
        st = df11i_st_parse(m, data, size, "fuzz.safetensors");
        FUZZ_CHECK_STATUS(st);
        FUZZ_CHECK(n == 0 || st == DF11_ERR_DUPLICATE, "second parse of %zu tensors: %s", n,
                   df11_strerror(st));
        if (st != DF11_OK) FUZZ_CHECK(m->n_tensors == n, "failed parse changed the model");
    }
    df11i_st_close(m);
    return 0;
}
