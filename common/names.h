/* Tensor-name rules shared by the readers, the writers and the BF16 runtime: a tensor named
 * "<prefix><N>.<rest>" belongs to transformer block N, no two tensors of a model share a
 * name, and a block's tensors lie in its group in df11i_block_order's order. */
#ifndef DF11_COMMON_NAMES_H
#define DF11_COMMON_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"

/* Block number of `name`, or -1 if it is not a layer tensor. */
int32_t df11i_layer_of(const char *name, const char *prefix);

/* A block's tensors in the order they lie in its group (the writer's .df11 groups, the BF16
 * runtime's blocks): idx[0..n), indices into t of the block's tensors in input order, is
 * reordered in place. Input order, except that each "<module>.q_proj.weight" is followed at
 * once by the same module's "k_proj.weight" and "v_proj.weight", and each "gate_proj.weight"
 * by its "up_proj.weight" (those there are), so that the weights engines stack into one
 * matrix (df11_weight_stack) lie back to back: a stacked product over them is then one
 * product over one matrix where they lie decoded. DF11_ERR_NO_MEMORY or DF11_OK. */
df11_status df11i_block_order(const df11_tensor_source *t, uint32_t *idx, uint32_t n);

/* DF11_OK when the n names are distinct, else DF11_ERR_DUPLICATE with the detail "'label':
 * tensor 'x' appears more than once" (or DF11_ERR_NO_MEMORY). Over a whole model, not one
 * file: a tensor repeated in two shards would be compressed twice and looked up
 * ambiguously. */
df11_status df11i_names_unique(const df11_tensor_source *t, size_t n, const char *label);

#endif
