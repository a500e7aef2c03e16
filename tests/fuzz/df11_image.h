/* Helpers for the targets that open a .df11 image from memory. */
#ifndef DF11_TESTS_FUZZ_DF11_IMAGE_H
#define DF11_TESTS_FUZZ_DF11_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Rewrites, in place, every group's payload xxh3 (for groups whose record and payload lie
 * inside the image) and then the header's index xxh3, exactly as the writer computes them,
 * so that a mutated image passes the checksums and reaches the structural checks behind
 * them. Fields that make no sense are left alone: the reader must reject them anyway. */
void fuzz_df11_fix_checksums(uint8_t *image, size_t size);

#endif
