/* Tensor-name rules shared by the readers, the writers and the BF16 runtime: a tensor named
 * "<prefix><N>.<rest>" belongs to transformer block N, no two tensors of a model share a
 * name, and a block's tensors lie in its group in df11i_block_rank's order. */
#ifndef DF11_COMMON_NAMES_H
#define DF11_COMMON_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "df11/compress.h"

/* Block number of `name`, or -1 if it is not a layer tensor. */
int32_t df11i_layer_of(const char *name, const char *prefix);

/* Where a block tensor lies in its group (the writer's .df11 groups, the BF16 runtime's
 * blocks): the weights engines stack into one matrix (df11_weight_stack) first, in their
 * stacked order, so that they lie back to back and a stacked product over them is one
 * product over one matrix where they lie decoded: rank 0..2 for "...q_proj.weight",
 * "k_proj", "v_proj", 3..4 for "gate_proj", "up_proj". Every other tensor has rank
 * DF11I_BLOCK_RANK_OTHER, after them; within a rank, input order. (A block with two
 * attentions interleaves their q, k, v: correct, only not one matrix.) */
enum { DF11I_BLOCK_RANK_OTHER = 5 };
int df11i_block_rank(const char *name);

/* DF11_OK when the n names are distinct, else DF11_ERR_DUPLICATE with the detail "'label':
 * tensor 'x' appears more than once" (or DF11_ERR_NO_MEMORY). Over a whole model, not one
 * file: a tensor repeated in two shards would be compressed twice and looked up
 * ambiguously. */
df11_status df11i_names_unique(const df11_tensor_source *t, size_t n, const char *label);

#endif
