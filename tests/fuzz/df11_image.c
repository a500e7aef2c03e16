/* See df11_image.h. Follows loader/container_read.c: the index xxh3 covers [0, 120) and
 * [128, index_end) through one streaming state; a group's covers its payload. */
#include <xxhash.h>

#include "common/util.h"
#include "loader/format.h"
#include "tests/fuzz/df11_image.h"

void fuzz_df11_fix_checksums(uint8_t *image, size_t size)
{
    if (size < DF11_HEADER_SIZE) return;
    const uint64_t index_end = df11i_ld64(image + HDR_INDEX_END);
    if (index_end < DF11_HEADER_SIZE || index_end > size) return;
    const uint32_t n_groups = df11i_ld32(image + HDR_N_GROUPS);
    for (uint64_t g = 0; g < n_groups; g++) {
        const uint64_t rec = DF11_HEADER_SIZE + g * DF11_GROUP_RECORD;
        if (rec + DF11_GROUP_RECORD > index_end) break;
        uint8_t *r = image + rec;
        const uint64_t off = df11i_ld64(r + GRP_PAYLOAD_OFFSET),
                       len = df11i_ld64(r + GRP_PAYLOAD_SIZE);
        if (df11i_range_ok(off, len, size))
            df11i_st64(r + GRP_PAYLOAD_XXH3, XXH3_64bits(image + off, len));
    }
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) return;
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, image, HDR_INDEX_XXH3);
    XXH3_64bits_update(xs, image + DF11_HEADER_SIZE, index_end - DF11_HEADER_SIZE);
    df11i_st64(image + HDR_INDEX_XXH3, XXH3_64bits_digest(xs));
    XXH3_freeState(xs);
}
