/* The .df11 container: round trips of every tensor kind, the ratio bound, and bad input —
 * truncation at any offset, flipped bytes, hostile index fields with a valid checksum —
 * each failing with its own status, never a crash, never a wrong weight. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/util.h"
#include "df11.h"
#include "loader/format.h"
#include "loader/safetensors.h"
#include "tests/testutil.h"

static uint64_t rng;

static char *path_in_tmp(const char *name)
{
    static char paths[8][512];
    static int next;
    char *p = paths[next++ & 7];
    snprintf(p, 512, "%s/%s", df11_test_tmpdir(), name);
    return p;
}

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*size + 1);
    ck_assert_uint_eq(fread(b, 1, *size, f), *size);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *b, size_t size)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, size, f), size);
    fclose(f);
}

/* Decodes every tensor of `path` and compares it with the sources. */
static void check_matches(const char *path, const df11_tensor_source *src, size_t n)
{
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
    ck_assert_uint_eq(df11_file_n_tensors(f), n);
    for (size_t i = 0; i < n; i++) {
        uint32_t t;
        ck_assert_int_eq(df11_file_find_tensor(f, src[i].name, &t), DF11_OK);
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        ck_assert_int_eq(ti->dtype, src[i].dtype);
        ck_assert_uint_eq(ti->ndim, src[i].ndim);
        for (uint32_t d = 0; d < ti->ndim; d++) ck_assert_uint_eq(ti->shape[d], src[i].shape[d]);
        const df11_group_info *gi = df11_file_group(f, ti->group);
        uint8_t *payload = malloc(gi->payload_size + 1), *out[2];
        ck_assert_int_eq(df11_file_read_group(f, ti->group, payload), DF11_OK);
        for (int k = 0; k < 2; k++) { /* two poisons: a byte nobody writes differs */
            out[k] = malloc(gi->decoded_size + 1);
            memset(out[k], k ? 0x11 : 0xee, gi->decoded_size + 1);
            ck_assert_int_eq(df11_group_decode_host(f, ti->group, payload, out[k], 2), DF11_OK);
        }
        if (ti->nbytes) ck_assert_mem_eq(out[0] + ti->decoded_offset, src[i].data, ti->nbytes);
        if (gi->decoded_size) ck_assert_mem_eq(out[0], out[1], gi->decoded_size);
        ck_assert_uint_eq(out[0][gi->decoded_size], 0xee);
        free(payload);
        free(out[0]);
        free(out[1]);
    }
    df11_file_close(f);
}

START_TEST(test_roundtrip_kinds)
{
    /* empty, 1 element, odd sizes, all-equal exponents, raw dtypes, a scalar */
    static uint16_t w_big[3 * 70001], w_one[1], w_odd[13 * 7], w_eq[4099];
    static float f32[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e30f};
    static int64_t i64[3] = {-1, 42, INT64_MAX};
    static uint16_t f16[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    df11_test_fill_weights(w_big, 3 * 70001, 70001, &rng);
    df11_test_fill_weights(w_one, 1, 1, &rng);
    df11_test_fill_weights(w_odd, 13 * 7, 7, &rng);
    for (size_t i = 0; i < 4099; i++) w_eq[i] = (uint16_t)(0x3c00 | (df11_test_rand(&rng) & 0x807f));
    df11_tensor_source src[] = {
        {"model.embed_tokens.weight", DF11_DTYPE_BF16, 2, {3, 70001}, w_big},
        {"model.layers.0.one", DF11_DTYPE_BF16, 1, {1}, w_one},
        {"model.layers.0.odd", DF11_DTYPE_BF16, 2, {13, 7}, w_odd},
        {"model.layers.0.empty", DF11_DTYPE_BF16, 2, {0, 5}, NULL},
        {"model.layers.1.equal", DF11_DTYPE_BF16, 1, {4099}, w_eq},
        {"model.layers.1.f32", DF11_DTYPE_F32, 1, {5}, f32},
        {"model.layers.1.scalar", DF11_DTYPE_I64, 0, {0}, i64},
        {"model.layers.1.i64", DF11_DTYPE_I64, 1, {3}, i64},
        {"lm_head.f16", DF11_DTYPE_F16, 2, {3, 3}, f16},
    };
    size_t n = sizeof src / sizeof *src;
    const char *meta = "{\"hidden_size\": 7}";
    df11_compress_summary sum;
    for (uint32_t lane = 8; lane <= 2048; lane *= 16) {
        df11_compress_options o = {.n_threads = 2, .lane_symbols = lane};
        const char *out = path_in_tmp("kinds.df11");
        ck_assert_int_eq(df11_compress_tensors(out, src, n, meta, strlen(meta), &o, &sum), DF11_OK);
        ck_assert_uint_eq(sum.n_tensors, n);
        ck_assert_uint_eq(sum.n_groups, 4); /* embed, lm_head, layers.0, layers.1 */
        ck_assert_uint_eq(sum.raw_bytes, 20 + 8 + 24 + 18);
        check_matches(out, src, n);
        df11_file *f;
        ck_assert_int_eq(df11_file_open(out, &f), DF11_OK);
        size_t len;
        const char *m = df11_file_metadata(f, &len);
        ck_assert_uint_eq(len, strlen(meta));
        ck_assert_mem_eq(m, meta, len);
        ck_assert_uint_eq(df11_file_n_layers(f), 2);
        uint32_t g;
        ck_assert_int_eq(df11_file_layer_group(f, 1, &g), DF11_OK);
        ck_assert_str_eq(df11_file_group(f, g)->name, "layers.1");
        ck_assert_int_eq(df11_file_layer_group(f, 2, &g), DF11_ERR_NOT_FOUND);
        uint32_t t;
        ck_assert_int_eq(df11_file_find_tensor(f, "nope", &t), DF11_ERR_NOT_FOUND);
        for (uint32_t i = 0; i < df11_file_n_groups(f); i++)
            ck_assert_uint_eq(df11_file_group(f, i)->payload_offset % 4096, 0);
        df11_file_close(f);
    }
}
END_TEST

START_TEST(test_ratio_bound)
{
    /* The file's BF16 bytes stay within (8 + H)/16 x 1.005 of BF16 on trained-like
     * weights (df11-bench codec measures the 100M-weight case). */
    uint64_t rows = 1024, cols = 4096;
    uint16_t *w = malloc(rows * cols * 2);
    df11_test_fill_weights(w, rows * cols, cols, &rng);
    df11_tensor_source src = {"w", DF11_DTYPE_BF16, 2, {rows, cols}, w};
    df11_compress_summary s;
    ck_assert_int_eq(df11_compress_tensors(path_in_tmp("ratio.df11"), &src, 1, NULL, 0, NULL, &s), DF11_OK);
    double bound = (8 + s.exponent_entropy) / 16;
    ck_assert_msg((double)s.bf16_stored_bytes <= bound * 1.005 * (double)s.bf16_bytes,
                  "ratio %.5f, bound %.5f", (double)s.bf16_stored_bytes / (double)s.bf16_bytes, bound);
    free(w);

    const char *dir = df11_test_model_dir();
    if (!dir) return;
    ck_assert_int_eq(df11_compress_path(dir, path_in_tmp("stories.df11"), NULL, &s), DF11_OK);
    bound = (8 + s.exponent_entropy) / 16;
    ck_assert_uint_eq(s.bf16_weights, 260032);
    ck_assert_msg((double)s.bf16_stored_bytes <= bound * 1.005 * (double)s.bf16_bytes,
                  "stories260K ratio %.5f, bound %.5f", (double)s.bf16_stored_bytes / (double)s.bf16_bytes, bound);
}
END_TEST

START_TEST(test_real_model_roundtrip)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    const char *df = path_in_tmp("real.df11"), *back = path_in_tmp("back.safetensors");
    ck_assert_int_eq(df11_compress_path(dir, df, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_decompress_to_safetensors(df, back, 2), DF11_OK);
    df11_st_model *a, *b;
    ck_assert_int_eq(df11_st_open(dir, &a), DF11_OK);
    ck_assert_int_eq(df11_st_open(back, &b), DF11_OK);
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    check_matches(df, a->tensors, a->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        size_t j = 0;
        while (j < b->n_tensors && strcmp(a->tensors[i].name, b->tensors[j].name)) j++;
        ck_assert_uint_lt(j, b->n_tensors);
        uint64_t bytes = 2;
        for (uint32_t d = 0; d < a->tensors[i].ndim; d++) bytes *= a->tensors[i].shape[d];
        ck_assert_mem_eq(a->tensors[i].data, b->tensors[j].data, bytes);
    }
    df11_file *f;
    ck_assert_int_eq(df11_file_open(df, &f), DF11_OK);
    size_t len;
    const char *cfg = df11_file_metadata(f, &len);
    ck_assert_ptr_nonnull(memmem(cfg, len, "\"num_hidden_layers\"", 19)); /* config.json came through */
    df11_file_close(f);
    df11_st_close(a);
    df11_st_close(b);
}
END_TEST

/* A small valid file to break. */
static uint8_t *good_file(size_t *size)
{
    static uint16_t w[5000], v[300];
    df11_test_fill_weights(w, 5000, 100, &rng);
    df11_test_fill_weights(v, 300, 30, &rng);
    df11_tensor_source src[] = {{"model.layers.0.a", DF11_DTYPE_BF16, 2, {50, 100}, w},
                                {"model.layers.0.b", DF11_DTYPE_BF16, 1, {300}, v},
                                {"model.norm.weight", DF11_DTYPE_BF16, 1, {300}, v}};
    df11_compress_options o = {.lane_symbols = 64};
    const char *p = path_in_tmp("good.df11");
    ck_assert_int_eq(df11_compress_tensors(p, src, 3, "{}", 2, &o, NULL), DF11_OK);
    return slurp(p, size);
}

/* Opens a byte image; if it opens, reads and decodes every group. Returns the first
 * failure, or DF11_OK when everything succeeded. */
static df11_status open_and_decode(const uint8_t *b, size_t size)
{
    const char *p = path_in_tmp("bad.df11");
    spit(p, b, size);
    df11_file *f;
    df11_status st = df11_file_open(p, &f);
    if (st != DF11_OK) return st;
    for (uint32_t g = 0; g < df11_file_n_groups(f) && st == DF11_OK; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        uint8_t *payload = malloc(gi->payload_size + 1), *out = malloc(gi->decoded_size + 1);
        st = df11_file_read_group(f, g, payload);
        if (st == DF11_OK) st = df11_group_decode_host(f, g, payload, out, 1);
        free(payload);
        free(out);
    }
    df11_file_close(f);
    return st;
}

START_TEST(test_truncated_anywhere)
{
    size_t size;
    uint8_t *b = good_file(&size);
    ck_assert_int_eq(open_and_decode(b, size), DF11_OK);
    for (size_t cut = 0; cut < size; cut += (cut < 300 ? 1 : 97)) {
        df11_status st = open_and_decode(b, cut);
        ck_assert_msg(st == (cut < DF11_HEADER_SIZE && cut < 8 ? DF11_ERR_NOT_DF11 : DF11_ERR_TRUNCATED),
                      "cut at %zu: %s", cut, df11_strerror(st));
    }
    free(b);
}
END_TEST

START_TEST(test_flipped_bytes)
{
    size_t size;
    uint8_t *b = good_file(&size);
    const uint64_t index_end = df11_ld64(b + HDR_INDEX_END);
    for (int i = 0; i < 400; i++) {
        size_t at = (size_t)(df11_test_rand(&rng) % size);
        uint8_t bit = (uint8_t)(1u << (df11_test_rand(&rng) % 8));
        b[at] ^= bit;
        df11_status st = open_and_decode(b, size);
        b[at] ^= bit;
        if (at >= index_end) {
            /* payload bytes, and the zero padding between payloads that nothing reads */
            ck_assert_msg(st == DF11_ERR_CHECKSUM || st == DF11_OK, "payload flip at %zu: %s", at, df11_strerror(st));
        } else if (at < 8) {
            ck_assert_int_eq(st, DF11_ERR_NOT_DF11);
        } else {
            ck_assert_msg(st != DF11_OK, "index flip at %zu accepted", at);
        }
    }
    /* a flip inside a payload is always caught */
    df11_file *f;
    spit(path_in_tmp("flip.df11"), b, size);
    ck_assert_int_eq(df11_file_open(path_in_tmp("flip.df11"), &f), DF11_OK);
    const df11_group_info *gi = df11_file_group(f, 0);
    b[gi->payload_offset + gi->payload_size / 2] ^= 4;
    df11_file_close(f);
    ck_assert_int_eq(open_and_decode(b, size), DF11_ERR_CHECKSUM);
    free(b);
}
END_TEST

/* Edits an index field and re-seals the index checksum, so the reader's own checks must
 * catch it. */
static df11_status with_field(const uint8_t *good, size_t size, uint64_t off, int width, uint64_t value)
{
    uint8_t *b = malloc(size);
    memcpy(b, good, size);
    if (width == 1) b[off] = (uint8_t)value;
    else if (width == 2) df11_st16(b + off, (uint16_t)value);
    else if (width == 4) df11_st32(b + off, (uint32_t)value);
    else df11_st64(b + off, value);
    uint64_t end = df11_ld64(b + HDR_INDEX_END);
    if (end <= size && end >= DF11_HEADER_SIZE) {
        XXH3_state_t *s = XXH3_createState();
        XXH3_64bits_reset(s);
        XXH3_64bits_update(s, b, HDR_INDEX_XXH3);
        XXH3_64bits_update(s, b + DF11_HEADER_SIZE, end - DF11_HEADER_SIZE);
        df11_st64(b + HDR_INDEX_XXH3, XXH3_64bits_digest(s));
        XXH3_freeState(s);
    }
    df11_status st = open_and_decode(b, size);
    free(b);
    return st;
}

START_TEST(test_hostile_index)
{
    size_t size;
    uint8_t *b = good_file(&size);
    const uint64_t G = DF11_HEADER_SIZE, T = df11_ld64(b + HDR_TENSORS_OFFSET);
    ck_assert_int_eq(with_field(b, size, HDR_N_GROUPS, 4, df11_ld32(b + HDR_N_GROUPS)), DF11_OK); /* a no-op edit */
    ck_assert_int_eq(open_and_decode((const uint8_t *)"PK\3\4 this is a zip file, not df11", 34), DF11_ERR_NOT_DF11);
    /* majors this library does not read: an older one asks for recompressing */
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MAJOR, 2, 1), DF11_ERR_VERSION);
    ck_assert_msg(strstr(df11_last_error_detail(), "recompress") != NULL, "%s", df11_last_error_detail());
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MAJOR, 2, 3), DF11_ERR_VERSION);
    ck_assert_msg(strstr(df11_last_error_detail(), "recompress") == NULL, "%s", df11_last_error_detail());
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MINOR, 2, 7), DF11_OK); /* any minor */
    ck_assert_int_eq(with_field(b, size, HDR_N_TENSORS, 4, 0xffffffff), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, HDR_STRINGS_SIZE, 8, UINT64_MAX - 8), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, HDR_FILE_SIZE, 8, size + 1), DF11_ERR_TRUNCATED);
    /* group 0: payload past the end, misaligned, size overflowing */
    ck_assert_int_eq(with_field(b, size, G + GRP_PAYLOAD_OFFSET, 8, 1ull << 40), DF11_ERR_TRUNCATED);
    ck_assert_int_eq(with_field(b, size, G + GRP_PAYLOAD_OFFSET, 8, 4097), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, G + GRP_PAYLOAD_SIZE, 8, UINT64_MAX), DF11_ERR_TRUNCATED);
    ck_assert_int_eq(with_field(b, size, G + GRP_N_TENSORS, 4, 7), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, G + GRP_NAME_LEN, 4, 1u << 30), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, G + DF11_GROUP_RECORD + GRP_LAYER, 4, 5), DF11_ERR_CORRUPT);
    /* the second group's payload overlapping the first's */
    ck_assert_int_eq(with_field(b, size, G + DF11_GROUP_RECORD + GRP_PAYLOAD_OFFSET, 8,
                                df11_ld64(b + G + GRP_PAYLOAD_OFFSET)), DF11_ERR_CORRUPT);
    /* tensor 0 (model.norm.weight): dtype, shape, sections */
    ck_assert_int_eq(with_field(b, size, T + TEN_DTYPE, 1, 99), DF11_ERR_DTYPE);
    ck_assert_int_eq(with_field(b, size, T + TEN_DTYPE, 1, DF11_DTYPE_F32), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_SHAPE, 8, 1ull << 62), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_NDIM, 1, 9), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_N_ELEMENTS, 8, 301), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_STREAM_OFFSET, 8, 1ull << 50), DF11_ERR_RANGE);
    ck_assert_int_eq(with_field(b, size, T + TEN_DATA_OFFSET, 8, UINT64_MAX - 15), DF11_ERR_RANGE);
    ck_assert_int_eq(with_field(b, size, T + TEN_MAX_CODE_LEN, 1, 16), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_LANE_SYMBOLS, 4, 12), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_DECODED_OFFSET, 8, 256), DF11_ERR_CORRUPT);
    /* tensor 1 (model.layers.0.a, 2-D): dims whose product overflows 64 bits */
    const uint64_t T1 = T + DF11_TENSOR_RECORD;
    uint8_t *c = malloc(size);
    memcpy(c, b, size);
    df11_st64(c + T1 + TEN_SHAPE, 1ull << 40);
    ck_assert_int_eq(with_field(c, size, T1 + TEN_SHAPE + 8, 8, 1ull << 40), DF11_ERR_OVERFLOW);
    /* a duplicate name: tensor 2's name made tensor 1's */
    memcpy(c, b, size);
    df11_st32(c + T1 + DF11_TENSOR_RECORD + TEN_NAME_LEN, df11_ld32(b + T1 + TEN_NAME_LEN));
    ck_assert_int_eq(with_field(c, size, T1 + DF11_TENSOR_RECORD + TEN_NAME_OFFSET, 4,
                                df11_ld32(b + T1 + TEN_NAME_OFFSET)), DF11_ERR_DUPLICATE);
    free(c);
    free(b);
}
END_TEST

START_TEST(test_writer_is_atomic)
{
    uint16_t w[64];
    df11_test_fill_weights(w, 64, 8, &rng);
    df11_tensor_source dup[] = {{"a", DF11_DTYPE_BF16, 1, {64}, w}, {"a", DF11_DTYPE_BF16, 1, {64}, w}};
    const char *out = path_in_tmp("atomic.df11");
    unlink(out);
    ck_assert_int_eq(df11_compress_tensors(out, dup, 2, NULL, 0, NULL, NULL), DF11_ERR_DUPLICATE);
    ck_assert_int_ne(access(out, F_OK), 0);
    df11_tensor_source bad_dtype = {"x", (df11_dtype)77, 1, {4}, w};
    ck_assert_int_eq(df11_compress_tensors(out, &bad_dtype, 1, NULL, 0, NULL, NULL), DF11_ERR_DTYPE);
    df11_tensor_source huge = {"x", DF11_DTYPE_BF16, 3, {1ull << 30, 1ull << 30, 1ull << 30}, w};
    ck_assert_int_eq(df11_compress_tensors(out, &huge, 1, NULL, 0, NULL, NULL), DF11_ERR_OVERFLOW);
    df11_tensor_source gap[] = {{"model.layers.0.a", DF11_DTYPE_BF16, 1, {64}, w},
                                {"model.layers.2.a", DF11_DTYPE_BF16, 1, {64}, w}};
    ck_assert_int_eq(df11_compress_tensors(out, gap, 2, NULL, 0, NULL, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_ne(access(out, F_OK), 0);
    ck_assert_int_eq(df11_compress_tensors("/nonexistent-dir/x.df11", dup, 1, NULL, 0, NULL, NULL), DF11_ERR_IO);
    /* an existing file survives a failed run untouched */
    spit(out, "keep", 4);
    ck_assert_int_eq(df11_compress_tensors(out, dup, 2, NULL, 0, NULL, NULL), DF11_ERR_DUPLICATE);
    size_t size;
    uint8_t *kept = slurp(out, &size);
    ck_assert_uint_eq(size, 4);
    free(kept);
    /* and no temporary file is left beside it */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", df11_test_tmpdir());
    ck_assert_int_ne(system(cmd), 0);
    ck_assert_int_eq(df11_file_open(path_in_tmp("missing.df11"), &(df11_file *){0}), DF11_ERR_IO);
    ck_assert_str_ne(df11_last_error_detail(), "");
}
END_TEST

int main(void)
{
    rng = df11_test_seed();
    Suite *s = suite_create("container");
    TCase *tc = tcase_create("container");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_roundtrip_kinds);
    tcase_add_test(tc, test_ratio_bound);
    tcase_add_test(tc, test_real_model_roundtrip);
    tcase_add_test(tc, test_truncated_anywhere);
    tcase_add_test(tc, test_flipped_bytes);
    tcase_add_test(tc, test_hostile_index);
    tcase_add_test(tc, test_writer_is_atomic);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
