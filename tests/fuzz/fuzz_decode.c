/* Fuzz target: the CPU decoder on groups that passed validation. The input is a .df11
 * image; its checksums are rewritten first (df11_image.h) so that mutated payloads get
 * past the xxh3 checks. The image is opened with df11i_file_open_memory; groups are read
 * with df11_file_read_group and decoded with df11_group_decode_host on one thread, in
 * order, while the decoded bytes stay within 1 MiB per input (larger groups are skipped):
 * under ASan and comparison tracing a decode costs 100-200 ns a weight, and a fuzzer that
 * runs slower than ~100 inputs/s finds little.
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - df11_file_read_group succeeds (the checksums were made to match);
 *  - df11_group_decode_host returns DF11_OK or a listed code with a detail, and never
 *    writes outside the decoded_size bytes it was given;
 *  - on success raw tensors are their payload bytes, the padding between tensors is zero,
 *    and each Huffman tensor's exponents are symbols of its codebook while its
 *    sign|mantissa bytes are those of its data section. */
#include <string.h>

#include "codec/codec.h"
#include "fuzz.h"
#include "loader/container.h"
#include "tests/fuzz/df11_image.h"

#define MAX_DECODED ((uint64_t)1 << 20)

FUZZ_NO_COVERAGE
static void check_decoded(const df11_file *f, const df11_group_info *gi, const uint8_t *payload,
                          const uint8_t *out)
{
    uint64_t end = 0;
    for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        const df11i_tensor_layout *lo = df11i_file_tensor_layout(f, t);
        for (uint64_t i = end; i < ti->decoded_offset; i++)
            FUZZ_CHECK(out[i] == 0, "group '%s': padding byte %llu is %u", gi->name,
                       (unsigned long long)i, out[i]);
        const uint8_t *o = out + ti->decoded_offset;
        if (ti->codec == DF11_CODEC_RAW) {
            FUZZ_CHECK(memcmp(o, payload + lo->data_offset, ti->nbytes) == 0,
                       "tensor '%s': raw bytes differ", ti->name);
        } else if (df11i_codec_is_fixed(ti->codec)) {
            df11i_fixed v;
            FUZZ_CHECK(df11i_file_tensor_fixed(f, t, payload, &v) == DF11_OK,
                       "tensor '%s' decoded but does not validate", ti->name);
            /* every weight's sign|mantissa is the sm byte the layout puts it at */
            for (uint64_t i = 0; i < v.g.sm_bytes; i++) {
                uint64_t lane16 = i % 512, half = i / 512, row, col;
                df11i_fixed_weight_pos(half / 2 / v.g.steps, half / 2 % v.g.steps,
                                       (uint32_t)(half % 2), (uint32_t)(lane16 / 16),
                                       (uint32_t)(lane16 % 16), &row, &col);
                if (row >= v.g.rows || col >= v.g.cols) continue;
                uint16_t x;
                memcpy(&x, o + 2 * (row * v.g.cols + col), 2);
                FUZZ_CHECK(df11i_bf16_sm(x) == v.sm[i], "tensor '%s' (%llu, %llu): sign|mantissa",
                           ti->name, (unsigned long long)row, (unsigned long long)col);
            }
        } else {
            df11i_coded c;
            FUZZ_CHECK(df11i_file_tensor_coded(f, t, payload, &c) == DF11_OK,
                       "tensor '%s' decoded but its tables do not validate", ti->name);
            for (uint64_t i = 0; i < ti->n_elements; i++) {
                uint16_t v;
                memcpy(&v, o + 2 * i, 2);
                uint8_t e = df11i_bf16_exp(v);
                FUZZ_CHECK(c.code.single_symbol == e || (c.code.single_symbol < 0 && c.code.len[e]),
                           "tensor '%s' element %llu: exponent %u is no symbol", ti->name,
                           (unsigned long long)i, e);
                FUZZ_CHECK(df11i_bf16_sm(v) == c.sm[i], "tensor '%s' element %llu: sign|mantissa",
                           ti->name, (unsigned long long)i);
            }
        }
        end = ti->decoded_offset + ti->nbytes;
    }
    for (uint64_t i = end; i < gi->decoded_size; i++)
        FUZZ_CHECK(out[i] == 0, "group '%s': tail byte %llu is %u", gi->name, (unsigned long long)i,
                   out[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *image = malloc(size ? size : 1);
    if (!image) return 0;
    memcpy(image, data, size);
    fuzz_df11_fix_checksums(image, size);
    df11_file *f;
    if (df11i_file_open_memory(image, size, "fuzz.df11", &f) != DF11_OK) {
        free(image);
        return 0;
    }
    uint64_t budget = MAX_DECODED;
    for (uint32_t g = 0; g < df11_file_n_groups(f); g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        if (gi->decoded_size > budget) continue;
        budget -= gi->decoded_size;
        uint8_t *payload = malloc(gi->payload_size ? gi->payload_size : 1);
        uint8_t *out = malloc(gi->decoded_size ? gi->decoded_size : 1);
        if (payload && out) {
            df11_status st = df11_file_read_group(f, g, payload);
            FUZZ_CHECK(st == DF11_OK, "group %u: read: %s: %s", g, df11_strerror(st),
                       df11_last_error_detail());
            memset(out, 0xa5, gi->decoded_size);
            st = df11_group_decode_host(f, g, payload, out, 1);
            FUZZ_CHECK_STATUS(st);
            if (st == DF11_OK) check_decoded(f, gi, payload, out);
        }
        free(payload);
        free(out);
    }
    df11_file_close(f);
    free(image);
    return 0;
}
