/* dtype sizes and their safetensors spellings. */
#include <string.h>

#include "df11/file.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[DF11_DTYPE_COUNT_] = {
    [DF11_DTYPE_BF16] = { "BF16", 2 },       [DF11_DTYPE_F16] = { "F16", 2 },
    [DF11_DTYPE_F32] = { "F32", 4 },         [DF11_DTYPE_F64] = { "F64", 8 },
    [DF11_DTYPE_I8] = { "I8", 1 },           [DF11_DTYPE_I16] = { "I16", 2 },
    [DF11_DTYPE_I32] = { "I32", 4 },         [DF11_DTYPE_I64] = { "I64", 8 },
    [DF11_DTYPE_U8] = { "U8", 1 },           [DF11_DTYPE_U16] = { "U16", 2 },
    [DF11_DTYPE_U32] = { "U32", 4 },         [DF11_DTYPE_U64] = { "U64", 8 },
    [DF11_DTYPE_BOOL] = { "BOOL", 1 },       [DF11_DTYPE_F8_E4M3] = { "F8_E4M3", 1 },
    [DF11_DTYPE_F8_E5M2] = { "F8_E5M2", 1 },
};

size_t df11_dtype_size(df11_dtype dtype)
{
    return dtype > DF11_DTYPE_INVALID && dtype < DF11_DTYPE_COUNT_ ? dtypes[dtype].size : 0;
}

const char *df11_dtype_name(df11_dtype dtype)
{
    return dtype > DF11_DTYPE_INVALID && dtype < DF11_DTYPE_COUNT_ ? dtypes[dtype].name : "?";
}

df11_dtype df11_dtype_from_name(const char *name)
{
    for (int d = DF11_DTYPE_INVALID + 1; d < DF11_DTYPE_COUNT_; d++)
        if (name && strcmp(name, dtypes[d].name) == 0) return (df11_dtype)d;
    return DF11_DTYPE_INVALID;
}
