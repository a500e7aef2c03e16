#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/names.h"

int32_t df11i_layer_of(const char *name, const char *prefix)
{
    size_t p = strlen(prefix);
    if (strncmp(name, prefix, p) != 0) return -1;
    const char *s = name + p;
    if (*s < '0' || *s > '9') return -1;
    long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (*s - '0');
        if (v > 1000000) return -1; /* no model has a million blocks: a name, not a layer */
    }
    return *s == '.' ? (int32_t)v : -1;
}

/* The weights engines stack, by family (q, k, v; gate, up) and place in the stack. */
static const struct {
    const char *suffix;
    int family, place;
} STACKED[] = { { "q_proj.weight", 0, 0 },
                { "k_proj.weight", 0, 1 },
                { "v_proj.weight", 0, 2 },
                { "gate_proj.weight", 1, 0 },
                { "up_proj.weight", 1, 1 } };
enum { N_STACKED = sizeof STACKED / sizeof STACKED[0] };

/* Which of STACKED `name` is ("<module>.<suffix>", *module_len the module's length with
 * its dot), or -1. */
static int stacked_member(const char *name, size_t *module_len)
{
    const size_t len = strlen(name);
    for (int i = 0; i < N_STACKED; i++) {
        const size_t n = strlen(STACKED[i].suffix);
        if (len > n && name[len - n - 1] == '.' && strcmp(name + len - n, STACKED[i].suffix) == 0) {
            *module_len = len - n;
            return i;
        }
    }
    return -1;
}

/* The position in idx of the tensor named module (its first mlen bytes) + STACKED[member]'s
 * suffix, or n. */
static uint32_t find_member(const df11_tensor_source *t, const uint32_t *idx, uint32_t n,
                            const char *module, size_t mlen, int member)
{
    for (uint32_t j = 0; j < n; j++) {
        const char *name = t[idx[j]].name;
        if (strncmp(name, module, mlen) == 0 && strcmp(name + mlen, STACKED[member].suffix) == 0)
            return j;
    }
    return n;
}

df11_status df11i_block_order(const df11_tensor_source *t, uint32_t *idx, uint32_t n)
{
    uint32_t *in = malloc((n ? n : 1) * sizeof *in);
    if (!in) return df11i_fail(DF11_ERR_NO_MEMORY, "block order: %u tensors", n);
    memcpy(in, idx, n * sizeof *in);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = t[in[i]].name;
        size_t mlen = 0;
        const int m = stacked_member(name, &mlen);
        if (m >= 0 && STACKED[m].place > 0 && /* placed after its family's head, if any */
            find_member(t, in, n, name, mlen, m - STACKED[m].place) < n)
            continue;
        idx[k++] = in[i];
        if (m < 0 || STACKED[m].place > 0) continue;
        for (int f = m + 1; f < N_STACKED && STACKED[f].family == STACKED[m].family; f++) {
            const uint32_t j = find_member(t, in, n, name, mlen, f);
            if (j < n) idx[k++] = in[j];
        }
    }
    free(in);
    return DF11_OK;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

df11_status df11i_names_unique(const df11_tensor_source *t, size_t n, const char *label)
{
    if (n < 2) return DF11_OK;
    const char **names = malloc(n * sizeof *names);
    if (!names) return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu tensor names", label, n);
    for (size_t i = 0; i < n; i++) names[i] = t[i].name;
    qsort(names, n, sizeof *names, cmp_str_ptr);
    df11_status st = DF11_OK;
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            st = df11i_fail(DF11_ERR_DUPLICATE, "'%s': tensor '%s' appears more than once", label,
                            names[i]);
            break;
        }
    free(names);
    return st;
}
