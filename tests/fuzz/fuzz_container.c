/* Fuzz target: df11i_file_open_memory, a .df11 image from memory (loader/container.h).
 * Input: one mode byte, then the image. Mode bit 0 set: the target first rewrites the
 * image's index and payload checksums (df11_image.h), so that mutations get past the
 * xxh3 checks and reach the structural checks; clear: the image is opened as it is.
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - the status is DF11_OK or a listed code, and a failure has a detail and no file;
 *  - on success the index is what readers trust it to be: the file size is the input's;
 *    groups hold consecutive tensors covering all of them, with payloads 4096-aligned,
 *    inside the image and in order; blocks are numbered 0.. in order and
 *    df11_file_layer_group maps each back; every tensor lies in its group, has a
 *    NUL-terminated name that df11_file_find_tensor finds, n_elements = the product of its
 *    shape, nbytes = n_elements * dtype size, and [decoded_offset, +nbytes) 256-aligned
 *    inside the group's decoded size; its sections (df11i_file_tensor_layout) lie inside
 *    the group's payload; the metadata can be read whole. */
#include <string.h>

#include "fuzz.h"
#include "loader/container.h"
#include "tests/fuzz/df11_image.h"

static void check_tensor(const df11_file *f, uint32_t t, const df11_group_info *gi, uint32_t g)
{
    const df11_tensor_info *ti = df11_file_tensor(f, t);
    FUZZ_CHECK(ti && ti->group == g, "tensor %u: group %u, listed in %u", t, ti ? ti->group : 0, g);
    FUZZ_CHECK(ti->name && strlen(ti->name) > 0, "tensor %u: empty name", t);
    uint32_t found = UINT32_MAX;
    FUZZ_CHECK(df11_file_find_tensor(f, ti->name, &found) == DF11_OK && found == t,
               "tensor %u '%s' found as %u", t, ti->name, found);
    size_t es = df11_dtype_size(ti->dtype);
    FUZZ_CHECK(es != 0 && ti->ndim <= DF11_MAX_DIMS, "tensor %u: dtype %d, %u dims", t,
               (int)ti->dtype, ti->ndim);
    uint64_t n = 1;
    for (uint32_t d = 0; d < ti->ndim; d++)
        FUZZ_CHECK(!__builtin_mul_overflow(n, ti->shape[d], &n), "tensor %u: shape overflows", t);
    FUZZ_CHECK(n == ti->n_elements && ti->nbytes == n * es, "tensor %u: %llu elements, %llu bytes",
               t, (unsigned long long)ti->n_elements, (unsigned long long)ti->nbytes);
    FUZZ_CHECK(ti->decoded_offset % 256 == 0 && ti->decoded_offset <= gi->decoded_size &&
                   ti->nbytes <= gi->decoded_size - ti->decoded_offset,
               "tensor %u: decoded [%llu, +%llu) outside %llu", t,
               (unsigned long long)ti->decoded_offset, (unsigned long long)ti->nbytes,
               (unsigned long long)gi->decoded_size);
    const df11i_tensor_layout *lo = df11i_file_tensor_layout(f, t);
    const uint64_t ps = gi->payload_size;
#define INSIDE(off, len) ((off) <= ps && (uint64_t)(len) <= ps - (off))
    if (ti->codec == DF11_CODEC_RAW) {
        FUZZ_CHECK(INSIDE(lo->data_offset, ti->nbytes), "tensor %u: raw data outside its payload",
                   t);
        return;
    }
    if (df11i_codec_is_fixed(ti->codec)) {
        df11i_fixed_geom fg;
        FUZZ_CHECK(ti->dtype == DF11_DTYPE_BF16 && ti->ndim == 2 &&
                       df11i_fixed_geometry(ti->shape[0], ti->shape[1], &fg) == DF11_OK &&
                       lo->n_chunks == fg.n_tiles && lo->stream_size == fg.code_bytes,
                   "tensor %u: fixed code on %s, %u dims, %u tiles", t, df11_dtype_name(ti->dtype),
                   ti->ndim, lo->n_chunks);
        FUZZ_CHECK(INSIDE(lo->codebook_offset, fg.rows_pad) &&
                       INSIDE(lo->chunks_offset, 4 * (fg.n_tiles + 1)) &&
                       INSIDE(lo->stream_offset, fg.code_bytes) &&
                       INSIDE(lo->lanes_offset, df11i_fixed_exc_section(
                                                    df11i_fixed_layout_of(ti->codec), lo->n_exc)) &&
                       INSIDE(lo->data_offset, fg.sm_bytes),
                   "tensor %u: a fixed-code section lies outside its payload of %llu bytes", t,
                   (unsigned long long)ps);
        return;
    }
    FUZZ_CHECK(ti->codec == DF11_CODEC_EXP_HUFFMAN && ti->dtype == DF11_DTYPE_BF16,
               "tensor %u: codec %d", t, (int)ti->codec);
    FUZZ_CHECK(ti->lane_symbols >= 8 && ti->lane_symbols % 8 == 0 &&
                   ti->lane_symbols <= DF11_MAX_LANE_SYMBOLS &&
                   lo->n_chunks == df11i_n_chunks(n, ti->lane_symbols),
               "tensor %u: S=%u, %u chunks", t, ti->lane_symbols, lo->n_chunks);
    FUZZ_CHECK(INSIDE(lo->codebook_offset, lo->codebook_size) &&
                   INSIDE(lo->chunks_offset, (uint64_t)lo->n_chunks * 4) &&
                   INSIDE(lo->lanes_offset, df11i_n_lane_entries(n, ti->lane_symbols) * 2) &&
                   INSIDE(lo->stream_offset, lo->stream_size) && INSIDE(lo->data_offset, n),
               "tensor %u: a section lies outside its payload of %llu bytes", t,
               (unsigned long long)ps);
#undef INSIDE
}

static void check_file(const df11_file *f, size_t size)
{
    FUZZ_CHECK(df11_file_size(f) == size, "size %llu, image %zu",
               (unsigned long long)df11_file_size(f), size);
    const uint32_t n_groups = df11_file_n_groups(f), n_tensors = df11_file_n_tensors(f);
    uint32_t next_tensor = 0, n_layers = 0;
    uint64_t prev_end = 0;
    for (uint32_t g = 0; g < n_groups; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        FUZZ_CHECK(gi && gi->name, "group %u", g);
        FUZZ_CHECK(gi->first_tensor == next_tensor && gi->n_tensors <= n_tensors - next_tensor,
                   "group %u: tensors [%u, +%u)", g, gi->first_tensor, gi->n_tensors);
        FUZZ_CHECK(gi->payload_offset % 4096 == 0 && gi->payload_offset >= prev_end &&
                       gi->payload_offset <= size && gi->payload_size <= size - gi->payload_offset,
                   "group %u: payload [%llu, +%llu) in %zu bytes", g,
                   (unsigned long long)gi->payload_offset, (unsigned long long)gi->payload_size,
                   size);
        prev_end = gi->payload_offset + gi->payload_size;
        if (gi->layer >= 0) {
            FUZZ_CHECK((uint32_t)gi->layer == n_layers, "group %u: block %d", g, gi->layer);
            uint32_t back = UINT32_MAX;
            FUZZ_CHECK(df11_file_layer_group(f, n_layers, &back) == DF11_OK && back == g,
                       "block %u maps to group %u, not %u", n_layers, back, g);
            n_layers++;
        } else {
            FUZZ_CHECK(gi->layer == -1, "group %u: layer %d", g, gi->layer);
        }
        for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++)
            check_tensor(f, t, gi, g);
        next_tensor += gi->n_tensors;
    }
    FUZZ_CHECK(next_tensor == n_tensors, "groups hold %u of %u tensors", next_tensor, n_tensors);
    FUZZ_CHECK(df11_file_n_layers(f) == n_layers, "%u blocks, %u counted", df11_file_n_layers(f),
               n_layers);
    size_t mlen = 0;
    const char *meta = df11_file_metadata(f, &mlen);
    unsigned sum = 0;
    for (size_t i = 0; i < mlen; i++) sum += (unsigned char)meta[i]; /* ASan sees every byte */
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const int recompute = data[0] & 1;
    size--;
    /* The reader may keep pointers into the image: it lives until the file is closed. */
    uint8_t *image = malloc(size ? size : 1);
    if (!image) return 0;
    memcpy(image, data + 1, size);
    if (recompute) fuzz_df11_fix_checksums(image, size);
    df11_file *f = (df11_file *)(uintptr_t)1; /* not NULL: a failure must clear it */
    df11_status st = df11i_file_open_memory(image, size, "fuzz.df11", &f);
    FUZZ_CHECK_STATUS(st);
    if (st != DF11_OK) {
        FUZZ_CHECK(f == NULL, "failed open left a file");
    } else {
        check_file(f, size);
        df11_file_close(f);
    }
    free(image);
    return 0;
}
