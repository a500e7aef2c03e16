/* The grouping rule shared by the container writer and the BF16 runtime: a tensor named
 * "<prefix><N>.<rest>" belongs to transformer block N. */
#ifndef DF11_COMMON_NAMES_H
#define DF11_COMMON_NAMES_H

#include <stdint.h>

/* Block number of `name`, or -1 if it is not a layer tensor. */
int32_t df11_layer_of(const char *name, const char *prefix);

#endif
