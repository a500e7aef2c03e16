#include <string.h>

#include "common/names.h"

int32_t df11_layer_of(const char *name, const char *prefix)
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
