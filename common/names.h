/* Tensor-name rules shared by the readers, the writers and the BF16 runtime: a tensor named
 * "<prefix><N>.<rest>" belongs to transformer block N, and no two tensors of a model share
 * a name. */
#ifndef DF11_COMMON_NAMES_H
#define DF11_COMMON_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"

/* Block number of `name`, or -1 if it is not a layer tensor. */
int32_t df11i_layer_of(const char *name, const char *prefix);

/* DF11_OK when the n names are distinct, else DF11_ERR_DUPLICATE with the detail "'label':
 * tensor 'x' appears more than once" (or DF11_ERR_NO_MEMORY). Over a whole model, not one
 * file: a tensor repeated in two shards would be compressed twice and looked up
 * ambiguously. */
df11_status df11i_names_unique(const df11_tensor_source *t, size_t n, const char *label);

#endif
