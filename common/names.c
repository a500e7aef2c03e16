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

int df11i_block_rank(const char *name)
{
    static const char *const stacked[DF11I_BLOCK_RANK_OTHER] = {
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight"
    };
    const size_t len = strlen(name);
    for (int r = 0; r < DF11I_BLOCK_RANK_OTHER; r++) {
        const size_t n = strlen(stacked[r]);
        /* the whole last-but-one component: "xq_proj.weight" is not q */
        if (len > n && name[len - n - 1] == '.' && strcmp(name + len - n, stacked[r]) == 0)
            return r;
    }
    return DF11I_BLOCK_RANK_OTHER;
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
