/* The .df11 container: round trips of every tensor kind, the ratio bound, and bad input —
 * truncation at any offset, flipped bytes, hostile index fields with a valid checksum —
 * each failing with its own status, never a crash, never a wrong weight. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/atomic_file.h"
#include "common/names.h"
#include "common/util.h"
#include "df11.h"
#include "loader/container.h"
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
    static float f32[5] = { 1.5f, -2.0f, 0.0f, 3.25f, 1e30f };
    static int64_t i64[3] = { -1, 42, INT64_MAX };
    static uint16_t f16[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    df11_test_fill_weights(w_big, 3 * 70001, 70001, &rng);
    df11_test_fill_weights(w_one, 1, 1, &rng);
    df11_test_fill_weights(w_odd, 13 * 7, 7, &rng);
    for (size_t i = 0; i < 4099; i++)
        w_eq[i] = (uint16_t)(0x3c00 | (df11_test_rand(&rng) & 0x807f));
    df11_tensor_source src[] = {
        { "model.embed_tokens.weight", DF11_DTYPE_BF16, 2, { 3, 70001 }, w_big },
        { "model.layers.0.one", DF11_DTYPE_BF16, 1, { 1 }, w_one },
        { "model.layers.0.odd", DF11_DTYPE_BF16, 2, { 13, 7 }, w_odd },
        { "model.layers.0.empty", DF11_DTYPE_BF16, 2, { 0, 5 }, NULL },
        { "model.layers.1.equal", DF11_DTYPE_BF16, 1, { 4099 }, w_eq },
        { "model.layers.1.f32", DF11_DTYPE_F32, 1, { 5 }, f32 },
        { "model.layers.1.scalar", DF11_DTYPE_I64, 0, { 0 }, i64 },
        { "model.layers.1.i64", DF11_DTYPE_I64, 1, { 3 }, i64 },
        { "lm_head.f16", DF11_DTYPE_F16, 2, { 3, 3 }, f16 },
    };
    size_t n = sizeof src / sizeof *src;
    const char *meta = "{\"hidden_size\": 7}";
    df11_compress_summary sum;
    for (uint32_t lane = 8; lane <= 2048; lane *= 16) {
        df11_compress_options o = { .n_threads = 2, .lane_symbols = lane };
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
    df11_tensor_source src = { "w", DF11_DTYPE_BF16, 2, { rows, cols }, w };
    df11_compress_summary s;
    ck_assert_int_eq(df11_compress_tensors(path_in_tmp("ratio.df11"), &src, 1, NULL, 0, NULL, &s),
                     DF11_OK);
    double bound = (8 + s.exponent_entropy) / 16;
    ck_assert_msg((double)s.bf16_stored_bytes <= bound * 1.005 * (double)s.bf16_bytes,
                  "ratio %.5f, bound %.5f", (double)s.bf16_stored_bytes / (double)s.bf16_bytes,
                  bound);
    free(w);

    const char *dir = df11_test_model_dir();
    if (!dir) return;
    ck_assert_int_eq(df11_compress_path(dir, path_in_tmp("stories.df11"), NULL, &s), DF11_OK);
    bound = (8 + s.exponent_entropy) / 16;
    ck_assert_uint_eq(s.bf16_weights, 260032);
    ck_assert_msg((double)s.bf16_stored_bytes <= bound * 1.005 * (double)s.bf16_bytes,
                  "stories260K ratio %.5f, bound %.5f",
                  (double)s.bf16_stored_bytes / (double)s.bf16_bytes, bound);
}
END_TEST

START_TEST(test_real_model_roundtrip)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    const char *df = path_in_tmp("real.df11"), *back = path_in_tmp("back.safetensors");
    ck_assert_int_eq(df11_compress_path(dir, df, NULL, NULL), DF11_OK);
    ck_assert_int_eq(df11_decompress_to_safetensors(df, back, 2), DF11_OK);
    df11i_st_model *a, *b;
    ck_assert_int_eq(df11i_st_open(dir, &a), DF11_OK);
    ck_assert_int_eq(df11i_st_open(back, &b), DF11_OK);
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
    ck_assert_ptr_nonnull(
        memmem(cfg, len, "\"num_hidden_layers\"", 19)); /* config.json came through */
    df11_file_close(f);
    df11i_st_close(a);
    df11i_st_close(b);
}
END_TEST

/* A small valid file to break. */
static uint8_t *good_file(size_t *size)
{
    static uint16_t w[5000], v[300];
    df11_test_fill_weights(w, 5000, 100, &rng);
    df11_test_fill_weights(v, 300, 30, &rng);
    df11_tensor_source src[] = { { "model.layers.0.a", DF11_DTYPE_BF16, 2, { 50, 100 }, w },
                                 { "model.layers.0.b", DF11_DTYPE_BF16, 1, { 300 }, v },
                                 { "model.norm.weight", DF11_DTYPE_BF16, 1, { 300 }, v } };
    df11_compress_options o = { .lane_symbols = 64 };
    const char *p = path_in_tmp("good.df11");
    ck_assert_int_eq(df11_compress_tensors(p, src, 3, "{}", 2, &o, NULL), DF11_OK);
    return slurp(p, size);
}

/* Reads and decodes every group of f, then closes it. Returns the first failure. */
static df11_status decode_all(df11_file *f)
{
    df11_status st = DF11_OK;
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

/* Opens a byte image, from a file and from memory; if it opens, reads and decodes every
 * group. Both ways must agree. Returns the first failure, or DF11_OK when everything
 * succeeded (the detail is the file's). */
static df11_status open_and_decode(const uint8_t *b, size_t size)
{
    df11_file *f;
    df11_status mst = df11i_file_open_memory(size ? b : (const uint8_t *)"", size, "image", &f);
    if (mst == DF11_OK) mst = decode_all(f);
    const char *p = path_in_tmp("bad.df11");
    spit(p, b, size);
    df11_status st = df11_file_open(p, &f);
    if (st == DF11_OK) st = decode_all(f);
    ck_assert_msg(st == mst, "from a file: %s, from memory: %s", df11_strerror(st),
                  df11_strerror(mst));
    return st;
}

START_TEST(test_truncated_anywhere)
{
    size_t size;
    uint8_t *b = good_file(&size);
    ck_assert_int_eq(open_and_decode(b, size), DF11_OK);
    for (size_t cut = 0; cut < size; cut += (cut < 300 ? 1 : 97)) {
        df11_status st = open_and_decode(b, cut);
        ck_assert_msg(
            st == (cut < DF11_HEADER_SIZE && cut < 8 ? DF11_ERR_NOT_DF11 : DF11_ERR_TRUNCATED),
            "cut at %zu: %s", cut, df11_strerror(st));
    }
    free(b);
}
END_TEST

START_TEST(test_flipped_bytes)
{
    size_t size;
    uint8_t *b = good_file(&size);
    const uint64_t index_end = df11i_ld64(b + HDR_INDEX_END);
    for (int i = 0; i < 400; i++) {
        size_t at = (size_t)(df11_test_rand(&rng) % size);
        uint8_t bit = (uint8_t)(1u << (df11_test_rand(&rng) % 8));
        b[at] ^= bit;
        df11_status st = open_and_decode(b, size);
        b[at] ^= bit;
        if (at >= index_end) {
            /* payload bytes, and the zero padding between payloads that nothing reads */
            ck_assert_msg(st == DF11_ERR_CHECKSUM || st == DF11_OK, "payload flip at %zu: %s", at,
                          df11_strerror(st));
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

/* Recomputes the index checksum of an image whose index was edited (when the edited
 * index end still lies in the image), so that the reader's own checks must catch the edit. */
static void reseal_index(uint8_t *b, size_t size)
{
    const uint64_t end = df11i_ld64(b + HDR_INDEX_END);
    if (end > size || end < DF11_HEADER_SIZE) return;
    XXH3_state_t *s = XXH3_createState();
    XXH3_64bits_reset(s);
    XXH3_64bits_update(s, b, HDR_INDEX_XXH3);
    XXH3_64bits_update(s, b + DF11_HEADER_SIZE, end - DF11_HEADER_SIZE);
    df11i_st64(b + HDR_INDEX_XXH3, XXH3_64bits_digest(s));
    XXH3_freeState(s);
}

/* Edits an index field and re-seals the index checksum, so the reader's own checks must
 * catch it. */
static df11_status with_field(const uint8_t *good, size_t size, uint64_t off, int width,
                              uint64_t value)
{
    uint8_t *b = malloc(size);
    memcpy(b, good, size);
    if (width == 1)
        b[off] = (uint8_t)value;
    else if (width == 2)
        df11i_st16(b + off, (uint16_t)value);
    else if (width == 4)
        df11i_st32(b + off, (uint32_t)value);
    else
        df11i_st64(b + off, value);
    reseal_index(b, size);
    df11_status st = open_and_decode(b, size);
    free(b);
    return st;
}

START_TEST(test_hostile_index)
{
    size_t size;
    uint8_t *b = good_file(&size);
    const uint64_t G = DF11_HEADER_SIZE, T = df11i_ld64(b + HDR_TENSORS_OFFSET);
    ck_assert_int_eq(with_field(b, size, HDR_N_GROUPS, 4, df11i_ld32(b + HDR_N_GROUPS)),
                     DF11_OK); /* a no-op edit */
    ck_assert_int_eq(open_and_decode((const uint8_t *)"PK\3\4 this is a zip file, not df11", 34),
                     DF11_ERR_NOT_DF11);
    /* majors this library does not read: an older one asks for recompressing */
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MAJOR, 2, 1), DF11_ERR_VERSION);
    ck_assert_msg(strstr(df11_last_error_detail(), "recompress") != NULL, "%s",
                  df11_last_error_detail());
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MAJOR, 2, 3), DF11_ERR_VERSION);
    ck_assert_msg(strstr(df11_last_error_detail(), "recompress") == NULL, "%s",
                  df11_last_error_detail());
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MINOR, 2, 7), DF11_OK); /* any minor */
    ck_assert_int_eq(with_field(b, size, HDR_N_TENSORS, 4, 0xffffffff), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, HDR_STRINGS_SIZE, 8, UINT64_MAX - 8), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, HDR_FILE_SIZE, 8, size + 1), DF11_ERR_TRUNCATED);
    /* group 0: payload past the end, misaligned, size overflowing */
    ck_assert_int_eq(with_field(b, size, G + GRP_PAYLOAD_OFFSET, 8, 1ull << 40),
                     DF11_ERR_TRUNCATED);
    ck_assert_int_eq(with_field(b, size, G + GRP_PAYLOAD_OFFSET, 8, 4097), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, G + GRP_PAYLOAD_SIZE, 8, UINT64_MAX), DF11_ERR_TRUNCATED);
    ck_assert_int_eq(with_field(b, size, G + GRP_N_TENSORS, 4, 7), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, G + GRP_NAME_LEN, 4, 1u << 30), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, G + DF11_GROUP_RECORD + GRP_LAYER, 4, 5),
                     DF11_ERR_CORRUPT);
    /* the second group's payload overlapping the first's */
    ck_assert_int_eq(with_field(b, size, G + DF11_GROUP_RECORD + GRP_PAYLOAD_OFFSET, 8,
                                df11i_ld64(b + G + GRP_PAYLOAD_OFFSET)),
                     DF11_ERR_CORRUPT);
    /* tensor 0 (model.norm.weight): dtype, shape, sections */
    ck_assert_int_eq(with_field(b, size, T + TEN_DTYPE, 1, 99), DF11_ERR_DTYPE);
    ck_assert_int_eq(with_field(b, size, T + TEN_DTYPE, 1, DF11_DTYPE_F32), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_SHAPE, 8, 1ull << 62), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_NDIM, 1, 9), DF11_ERR_CORRUPT);
    /* a dim past ndim that is not 0 (df11_tensor_info.shape would show it) */
    ck_assert_int_eq(with_field(b, size, T + TEN_SHAPE + 8 * b[T + TEN_NDIM], 8, 5),
                     DF11_ERR_CORRUPT);
    ck_assert_msg(strstr(df11_last_error_detail(), "not 0") != NULL, "%s",
                  df11_last_error_detail());
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
    df11i_st64(c + T1 + TEN_SHAPE, 1ull << 40);
    ck_assert_int_eq(with_field(c, size, T1 + TEN_SHAPE + 8, 8, 1ull << 40), DF11_ERR_OVERFLOW);
    /* a duplicate name: tensor 2's name bytes made tensor 1's ("...0.b" -> "...0.a"); its
     * own range, since a range shared with tensor 1 is refused as corrupt before that */
    memcpy(c, b, size);
    const uint64_t T2 = T1 + DF11_TENSOR_RECORD, strings = df11i_ld64(b + HDR_STRINGS_OFFSET);
    ck_assert_uint_eq(df11i_ld32(b + T2 + TEN_NAME_LEN), df11i_ld32(b + T1 + TEN_NAME_LEN));
    uint8_t *last =
        c + strings + df11i_ld32(b + T2 + TEN_NAME_OFFSET) + df11i_ld32(b + T2 + TEN_NAME_LEN) - 1;
    ck_assert_uint_eq(*last, 'b');
    *last = 'a';
    ck_assert_int_eq(with_field(c, size, HDR_N_GROUPS, 4, df11i_ld32(b + HDR_N_GROUPS)),
                     DF11_ERR_DUPLICATE);
    free(c);
    free(b);
}
END_TEST

START_TEST(test_long_multibyte_name)
{
    /* A non-layer tensor's group is named after it, cut to 255 bytes: cut inside a two-byte
     * character, the group's name was not UTF-8 and the reader refused the file. */
    uint16_t w[64];
    df11_test_fill_weights(w, 64, 8, &rng);
    char name[401];
    for (int i = 0; i < 200; i++) memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[400] = '\0';
    df11_tensor_source src = { name, DF11_DTYPE_BF16, 1, { 64 }, w };
    const char *out = path_in_tmp("long_name.df11");
    ck_assert_int_eq(df11_compress_tensors(out, &src, 1, NULL, 0, NULL, NULL), DF11_OK);
    df11_file *f;
    ck_assert_int_eq(df11_file_open(out, &f), DF11_OK);
    ck_assert_str_eq(df11_file_tensor(f, 0)->name, name);
    const char *g = df11_file_group(f, 0)->name;
    ck_assert_uint_eq(strlen(g), 254);
    ck_assert_int_eq(memcmp(g, name, 254), 0);
    df11_file_close(f);
    unlink(out);
}
END_TEST

START_TEST(test_writer_is_atomic)
{
    uint16_t w[64];
    df11_test_fill_weights(w, 64, 8, &rng);
    df11_tensor_source dup[] = { { "a", DF11_DTYPE_BF16, 1, { 64 }, w },
                                 { "a", DF11_DTYPE_BF16, 1, { 64 }, w } };
    const char *out = path_in_tmp("atomic.df11");
    unlink(out);
    /* Named temporaries, so that a leftover one would show in the directory listing below. */
    df11i_atomic_file_no_tmpfile = 1;
    ck_assert_int_eq(df11_compress_tensors(out, dup, 2, NULL, 0, NULL, NULL), DF11_ERR_DUPLICATE);
    ck_assert_int_ne(access(out, F_OK), 0);
    df11_tensor_source bad_dtype = { "x", (df11_dtype)77, 1, { 4 }, w };
    ck_assert_int_eq(df11_compress_tensors(out, &bad_dtype, 1, NULL, 0, NULL, NULL),
                     DF11_ERR_DTYPE);
    df11_tensor_source huge = {
        "x", DF11_DTYPE_BF16, 3, { 1ull << 30, 1ull << 30, 1ull << 30 }, w
    };
    ck_assert_int_eq(df11_compress_tensors(out, &huge, 1, NULL, 0, NULL, NULL), DF11_ERR_OVERFLOW);
    df11_tensor_source gap[] = { { "model.layers.0.a", DF11_DTYPE_BF16, 1, { 64 }, w },
                                 { "model.layers.2.a", DF11_DTYPE_BF16, 1, { 64 }, w } };
    ck_assert_int_eq(df11_compress_tensors(out, gap, 2, NULL, 0, NULL, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_ne(access(out, F_OK), 0);
    /* a name that readers would refuse (not UTF-8 text) is refused before anything is written */
    df11_tensor_source esc = { "model.\x1b[2J.weight", DF11_DTYPE_BF16, 1, { 64 }, w };
    ck_assert_int_eq(df11_compress_tensors(out, &esc, 1, NULL, 0, NULL, NULL),
                     DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "not UTF-8 text"));
    ck_assert_int_ne(access(out, F_OK), 0);
    ck_assert_int_eq(df11_compress_tensors("/nonexistent-dir/x.df11", dup, 1, NULL, 0, NULL, NULL),
                     DF11_ERR_IO);
    /* an existing file survives a failed run untouched */
    spit(out, "keep", 4);
    ck_assert_int_eq(df11_compress_tensors(out, dup, 2, NULL, 0, NULL, NULL), DF11_ERR_DUPLICATE);
    size_t size;
    uint8_t *kept = slurp(out, &size);
    ck_assert_uint_eq(size, 4);
    free(kept);
    /* and no temporary file is left beside it */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q '^\\.atomic\\.df11\\.tmp-'",
             df11_test_tmpdir());
    ck_assert_int_ne(system(cmd), 0);
    df11i_atomic_file_no_tmpfile = 0;
    ck_assert_int_eq(df11_file_open(path_in_tmp("missing.df11"), &(df11_file *){ 0 }), DF11_ERR_IO);
    ck_assert_str_ne(df11_last_error_detail(), "");
}
END_TEST

/* Sets record `rec`'s name range to [off, +len), re-sealed, and opens the result. */
static df11_status with_name(const uint8_t *good, size_t size, uint64_t rec, uint32_t off,
                             uint32_t len)
{
    uint8_t *c = malloc(size);
    memcpy(c, good, size);
    df11i_st32(c + rec + 0, off); /* GRP_NAME_OFFSET and TEN_NAME_OFFSET are both 0 */
    df11_status st = with_field(c, size, rec + 4, 4, len);
    free(c);
    return st;
}

START_TEST(test_block_order)
{
    /* input order, but each module's k, v right after its q and its up right after its
     * gate: per module (two experts), a member without its head in place, a lookalike name
     * ("xq_proj") not a member */
    static const char *const names[] = {
        "model.layers.0.mlp.experts.0.up_proj.weight",
        "model.layers.0.mlp.experts.0.down_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.mlp.experts.1.gate_proj.weight",
        "model.layers.0.mlp.experts.0.gate_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.experts.1.up_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.xq_proj.weight",
        "model.layers.0.cross.k_proj.weight",
    };
    enum { N = sizeof names / sizeof names[0] };
    static const uint32_t want[N] = { 1, 3, 6, 4, 0, 5, 7, 2, 8, 9 };
    df11_tensor_source t[N + 2];
    memset(t, 0, sizeof t);
    uint32_t idx[N];
    for (uint32_t i = 0; i < N; i++) {
        t[i + 2].name = names[i]; /* the block's indices need not start at 0 */
        idx[i] = i + 2;
    }
    ck_assert_int_eq(df11i_block_order(t, idx, N), DF11_OK);
    for (uint32_t i = 0; i < N; i++)
        ck_assert_msg(idx[i] == want[i] + 2, "position %u: %s, want %s", i, t[idx[i]].name,
                      names[want[i]]);
    ck_assert_int_eq(df11i_block_order(t, idx, 0), DF11_OK);
}
END_TEST

START_TEST(test_name_ranges)
{
    size_t size;
    uint8_t *b = good_file(&size);
    /* groups: model.norm, layers.0; tensors: model.norm.weight, model.layers.0.a, .b */
    const uint64_t G0 = DF11_HEADER_SIZE, T = df11i_ld64(b + HDR_TENSORS_OFFSET);
    const uint64_t T1 = T + DF11_TENSOR_RECORD, T2 = T1 + DF11_TENSOR_RECORD;
    const uint32_t strings_size = (uint32_t)df11i_ld64(b + HDR_STRINGS_SIZE);
    const uint32_t g0_off = df11i_ld32(b + G0 + GRP_NAME_OFFSET),
                   g0_len = df11i_ld32(b + G0 + GRP_NAME_LEN);
    const uint32_t t1_off = df11i_ld32(b + T1 + TEN_NAME_OFFSET),
                   t1_len = df11i_ld32(b + T1 + TEN_NAME_LEN);
    /* the writer lays names end to end, group names first */
    ck_assert_uint_eq(g0_off, 0);
    ck_assert_uint_eq(df11i_ld32(b + T2 + TEN_NAME_OFFSET) + df11i_ld32(b + T2 + TEN_NAME_LEN),
                      strings_size);
    /* tensor 1 named by the whole string table: its copy used to run past the name buffer */
    ck_assert_int_eq(with_name(b, size, T1, 0, strings_size), DF11_ERR_CORRUPT);
    ck_assert_msg(strstr(df11_last_error_detail(), "overlap") != NULL, "%s",
                  df11_last_error_detail());
    /* every tensor named by the whole table */
    uint8_t *c = malloc(size);
    memcpy(c, b, size);
    for (int t = 0; t < 3; t++) {
        df11i_st32(c + T + (uint64_t)t * DF11_TENSOR_RECORD + TEN_NAME_OFFSET, 0);
        df11i_st32(c + T + (uint64_t)t * DF11_TENSOR_RECORD + TEN_NAME_LEN, strings_size);
    }
    ck_assert_int_eq(with_field(c, size, HDR_N_GROUPS, 4, df11i_ld32(b + HDR_N_GROUPS)),
                     DF11_ERR_CORRUPT);
    free(c);
    /* a repeated range (tensor 2 named by tensor 1's bytes) */
    ck_assert_int_eq(with_name(b, size, T2, t1_off, t1_len), DF11_ERR_CORRUPT);
    ck_assert_msg(strstr(df11_last_error_detail(), "overlap") != NULL, "%s",
                  df11_last_error_detail());
    /* one byte shared between a group's name and a tensor's */
    ck_assert_int_eq(with_name(b, size, T, g0_off + g0_len - 1, 3), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_name(b, size, G0, t1_off + t1_len - 1, 2), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_name(b, size, T1, t1_off, 0), DF11_ERR_CORRUPT);
    ck_assert_msg(strstr(df11_last_error_detail(), "empty name") != NULL, "%s",
                  df11_last_error_detail());
    /* ranges that touch but share no byte, and an empty group name, are fine */
    ck_assert_int_eq(with_name(b, size, G0, g0_off, g0_len - 1), DF11_OK);
    ck_assert_int_eq(with_name(b, size, G0, t1_off, 0), DF11_OK);
    /* a NUL inside a group's name, like one inside a tensor's, is corrupt */
    c = malloc(size);
    memcpy(c, b, size);
    c[df11i_ld64(b + HDR_STRINGS_OFFSET) + g0_off + 2] = '\0';
    ck_assert_int_eq(with_field(c, size, HDR_N_GROUPS, 4, df11i_ld32(b + HDR_N_GROUPS)),
                     DF11_ERR_CORRUPT);
    ck_assert_msg(strstr(df11_last_error_detail(), "NUL") != NULL, "%s", df11_last_error_detail());
    free(c);
    /* names are UTF-8 text: an escape character (a terminal's), a byte that is not UTF-8 or
     * a C1 control in a name is corrupt; a two-byte character is a name */
    const uint64_t at = df11i_ld64(b + HDR_STRINGS_OFFSET) + t1_off + 1;
    static const uint8_t bad_bytes[][2] = { { 0x1b, '[' }, { 0xff, 0xfe }, { 0xc2, 0x9b } };
    for (int k = 0; k < 3; k++) {
        c = malloc(size);
        memcpy(c, b, size);
        memcpy(c + at, bad_bytes[k], 2);
        ck_assert_int_eq(with_field(c, size, HDR_N_GROUPS, 4, df11i_ld32(b + HDR_N_GROUPS)),
                         DF11_ERR_CORRUPT);
        ck_assert_msg(strstr(df11_last_error_detail(), "not UTF-8 text") != NULL, "%s",
                      df11_last_error_detail());
        free(c);
    }
    c = malloc(size);
    memcpy(c, b, size);
    memcpy(c + at, "\xc3\xa9", 2);
    ck_assert_int_eq(with_field(c, size, HDR_N_GROUPS, 4, df11i_ld32(b + HDR_N_GROUPS)), DF11_OK);
    free(c);
    free(b);
}
END_TEST

/* Two threads open two files over and over: each file's tensors must be found by name. The
 * files list their names in opposite orders, so a sort that compared one file's names
 * while ordering the other's indices would show as lookups that fail. */
enum { THREAD_TENSORS = 1500, THREAD_OPENS = 60 };

typedef struct {
    const char *path;
    char prefix;
    int reversed;
    int failures;
    char first_failure[256];
} open_job;

static void thread_name(char *out, size_t size, char prefix, uint32_t i)
{
    snprintf(out, size, "model.layers.0.%c%05u", prefix, i);
}

static void make_thread_file(const char *path, char prefix, int reversed)
{
    static int8_t one[1] = { 7 };
    df11_tensor_source *src = calloc(THREAD_TENSORS, sizeof *src);
    char(*names)[32] = calloc(THREAD_TENSORS, sizeof *names);
    for (uint32_t i = 0; i < THREAD_TENSORS; i++) {
        thread_name(names[i], sizeof names[i], prefix, reversed ? THREAD_TENSORS - 1 - i : i);
        src[i] = (df11_tensor_source){ names[i], DF11_DTYPE_I8, 1, { 1 }, one };
    }
    ck_assert_int_eq(df11_compress_tensors(path, src, THREAD_TENSORS, NULL, 0, NULL, NULL),
                     DF11_OK);
    free(names);
    free(src);
}

static void *open_repeatedly(void *arg)
{
    open_job *j = arg;
    char name[32];
    for (int k = 0; k < THREAD_OPENS; k++) {
        df11_file *f;
        df11_status st = df11_file_open(j->path, &f);
        if (st != DF11_OK) {
            if (!j->failures++)
                snprintf(j->first_failure, sizeof j->first_failure, "open: %s",
                         df11_last_error_detail());
            continue;
        }
        for (uint32_t i = 0; i < THREAD_TENSORS; i++) {
            thread_name(name, sizeof name, j->prefix, i);
            uint32_t t = UINT32_MAX, want = j->reversed ? THREAD_TENSORS - 1 - i : i;
            if (df11_file_find_tensor(f, name, &t) != DF11_OK || t != want ||
                strcmp(df11_file_tensor(f, t)->name, name) != 0) {
                if (!j->failures++)
                    snprintf(j->first_failure, sizeof j->first_failure,
                             "open %d: '%s' found at %u, want %u", k, name, t, want);
            }
        }
        df11_file_close(f);
    }
    return NULL;
}

START_TEST(test_open_threads)
{
    open_job jobs[2] = { { .path = path_in_tmp("thread-a.df11"), .prefix = 'a', .reversed = 0 },
                         { .path = path_in_tmp("thread-b.df11"), .prefix = 'b', .reversed = 1 } };
    for (int i = 0; i < 2; i++) make_thread_file(jobs[i].path, jobs[i].prefix, jobs[i].reversed);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, open_repeatedly, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(jobs[i].failures == 0, "%s: %d failures, first: %s", jobs[i].path,
                      jobs[i].failures, jobs[i].first_failure);
}
END_TEST

/* A codec failure inside a tensor keeps its own reason after the tensor's name. */
START_TEST(test_detail_keeps_reason)
{
    size_t size;
    uint8_t *b = good_file(&size);
    free(b);
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path_in_tmp("good.df11"), &f), DF11_OK);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, "model.norm.weight", &t), DF11_OK);
    const df11_tensor_info *ti = df11_file_tensor(f, t);
    const df11i_tensor_layout *lo = df11i_file_tensor_layout(f, t);
    const df11_group_info *gi = df11_file_group(f, ti->group);
    uint8_t *payload = malloc(gi->payload_size), *out = malloc(ti->nbytes);
    char want[600];

    /* a codebook whose symbols run past 255 */
    ck_assert_int_eq(df11_file_read_group(f, ti->group, payload), DF11_OK);
    payload[lo->codebook_offset] = 0xff;
    payload[lo->codebook_offset + 1] = 5;
    df11i_code code;
    ck_assert_int_eq(df11i_codebook_read(payload + lo->codebook_offset, lo->codebook_size,
                                         ti->max_code_len, &code),
                     DF11_ERR_CORRUPT);
    ck_assert_str_ne(df11_last_error_detail(), "");
    snprintf(want, sizeof want, "tensor 'model.norm.weight': %s", df11_last_error_detail());
    ck_assert_int_eq(df11_tensor_decode_host(f, t, payload, out, 1), DF11_ERR_CORRUPT);
    ck_assert_str_eq(df11_last_error_detail(), want);

    /* a chunk table entry past the stream (caught by the coded view's validation) */
    ck_assert_int_eq(df11_file_read_group(f, ti->group, payload), DF11_OK);
    ck_assert_uint_ge(lo->n_chunks, 1);
    df11i_st32(payload + lo->chunks_offset + 4 * (lo->n_chunks - 1), 1u << 30);
    df11i_coded c;
    ck_assert_int_eq(df11i_file_tensor_coded(f, t, payload, &c), DF11_ERR_CORRUPT);
    char got[600];
    snprintf(got, sizeof got, "%s", df11_last_error_detail());
    ck_assert_int_eq(df11i_coded_validate(&c), DF11_ERR_CORRUPT); /* c is filled before the check */
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "chunk"));
    snprintf(want, sizeof want, "tensor 'model.norm.weight': %s", df11_last_error_detail());
    ck_assert_str_eq(got, want);

    /* two lanes' bit lengths swapped: the tables stay consistent, the decode fails */
    ck_assert_int_eq(df11_file_read_group(f, ti->group, payload), DF11_OK);
    uint8_t *lanes = payload + lo->lanes_offset;
    const uint64_t n_lanes = df11i_n_lane_entries(ti->n_elements, ti->lane_symbols);
    uint32_t l = 0;
    while (l + 2 < n_lanes && df11i_ld16(lanes + 2 * l) == df11i_ld16(lanes + 2 * (l + 1))) l++;
    ck_assert_uint_ne(df11i_ld16(lanes + 2 * l), df11i_ld16(lanes + 2 * (l + 1)));
    uint16_t a = df11i_ld16(lanes + 2 * l), z = df11i_ld16(lanes + 2 * (l + 1));
    df11i_st16(lanes + 2 * l, z);
    df11i_st16(lanes + 2 * (l + 1), a);
    ck_assert_int_eq(df11i_file_tensor_coded(f, t, payload, &c), DF11_OK);
    ck_assert_int_eq(df11i_decode_host(&c, (uint16_t *)out, 1), DF11_ERR_CORRUPT);
    snprintf(want, sizeof want, "tensor 'model.norm.weight': %s", df11_last_error_detail());
    ck_assert_int_eq(df11_tensor_decode_host(f, t, payload, out, 1), DF11_ERR_CORRUPT);
    ck_assert_str_eq(df11_last_error_detail(), want);
    free(payload);
    free(out);
    df11_file_close(f);

    /* the writer: 40 distinct exponents do not fit codes of at most 5 bits */
    static uint16_t w[4000];
    static uint8_t sm[4000];
    for (uint32_t i = 0; i < 4000; i++) w[i] = (uint16_t)((100 + i % 40) << 7 | (i & 0x7f));
    df11i_encoded enc;
    ck_assert_int_eq(df11i_encode(w, 4000, 5, 64, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "40 distinct"));
    snprintf(want, sizeof want, "tensor 'model.layers.0.w': %s", df11_last_error_detail());
    df11_tensor_source src = { "model.layers.0.w", DF11_DTYPE_BF16, 1, { 4000 }, w };
    df11_compress_options o = { .max_code_len = 5, .lane_symbols = 64, .n_threads = 1 };
    ck_assert_int_eq(df11_compress_tensors(path_in_tmp("e40.df11"), &src, 1, NULL, 0, &o, NULL),
                     DF11_ERR_INVALID_ARG);
    ck_assert_str_eq(df11_last_error_detail(), want);
}
END_TEST

/* A FIFO is refused at once (opening one for reading used to block until a writer came). */
START_TEST(test_fifo_refused)
{
    const char *p = path_in_tmp("fifo.df11");
    unlink(p);
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    alarm(5); /* a regression fails with SIGALRM instead of hanging */
    df11_file *f = (df11_file *)1;
    ck_assert_int_eq(df11_file_open(p, &f), DF11_ERR_IO);
    alarm(0);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(df11_last_error_detail(), "not a regular file") != NULL, "%s",
                  df11_last_error_detail());
    ck_assert_int_eq(df11_file_open(df11_test_tmpdir(), &f), DF11_ERR_IO); /* a directory */
    ck_assert_msg(strstr(df11_last_error_detail(), "not a regular file") != NULL, "%s",
                  df11_last_error_detail());
    unlink(p);
}
END_TEST

static void check_same_file(const df11_file *a, const df11_file *b)
{
    ck_assert_uint_eq(df11_file_size(a), df11_file_size(b));
    ck_assert_uint_eq(df11_file_n_groups(a), df11_file_n_groups(b));
    ck_assert_uint_eq(df11_file_n_tensors(a), df11_file_n_tensors(b));
    ck_assert_uint_eq(df11_file_n_layers(a), df11_file_n_layers(b));
    size_t la, lb;
    const char *ma = df11_file_metadata(a, &la), *mb = df11_file_metadata(b, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_mem_eq(ma, mb, la);
    for (uint32_t g = 0; g < df11_file_n_groups(a); g++) {
        const df11_group_info *x = df11_file_group(a, g), *y = df11_file_group(b, g);
        ck_assert_str_eq(x->name, y->name);
        ck_assert_int_eq(x->layer, y->layer);
        ck_assert_uint_eq(x->first_tensor, y->first_tensor);
        ck_assert_uint_eq(x->n_tensors, y->n_tensors);
        ck_assert_uint_eq(x->payload_offset, y->payload_offset);
        ck_assert_uint_eq(x->payload_size, y->payload_size);
        ck_assert_uint_eq(x->decoded_size, y->decoded_size);
        ck_assert_uint_eq(x->payload_xxh3, y->payload_xxh3);
    }
    for (uint32_t t = 0; t < df11_file_n_tensors(a); t++) {
        const df11_tensor_info *x = df11_file_tensor(a, t), *y = df11_file_tensor(b, t);
        ck_assert_str_eq(x->name, y->name);
        ck_assert_int_eq(x->dtype, y->dtype);
        ck_assert_int_eq(x->codec, y->codec);
        ck_assert_uint_eq(x->group, y->group);
        ck_assert_uint_eq(x->ndim, y->ndim);
        ck_assert_mem_eq(x->shape, y->shape, sizeof x->shape);
        ck_assert_uint_eq(x->n_elements, y->n_elements);
        ck_assert_uint_eq(x->nbytes, y->nbytes);
        ck_assert_uint_eq(x->decoded_offset, y->decoded_offset);
        ck_assert_uint_eq(x->stored_bytes, y->stored_bytes);
        ck_assert_uint_eq(x->exponent_bits, y->exponent_bits);
        ck_assert_uint_eq(x->max_code_len, y->max_code_len);
        ck_assert_uint_eq(x->lane_symbols, y->lane_symbols);
        ck_assert_mem_eq(df11i_file_tensor_layout(a, t), df11i_file_tensor_layout(b, t),
                         sizeof(df11i_tensor_layout));
        uint32_t found;
        ck_assert_int_eq(df11_file_find_tensor(b, x->name, &found), DF11_OK);
        ck_assert_uint_eq(found, t);
    }
}

/* A memory image opens to the same index as its file, reads the same payloads and decodes
 * the same weights; a cut image fails with the file's status, reading nothing past its end. */
START_TEST(test_open_memory)
{
    size_t size;
    uint8_t *b = good_file(&size);
    df11_file *ff, *fm;
    ck_assert_int_eq(df11_file_open(path_in_tmp("good.df11"), &ff), DF11_OK);
    ck_assert_int_eq(df11i_file_open_memory(b, size, "good image", &fm), DF11_OK);
    ck_assert_str_eq(df11_file_path(fm), "good image");
    check_same_file(ff, fm);
    for (uint32_t g = 0; g < df11_file_n_groups(ff); g++) {
        const df11_group_info *gi = df11_file_group(ff, g);
        uint8_t *p[2], *out[2];
        for (int k = 0; k < 2; k++) {
            p[k] = malloc(gi->payload_size);
            out[k] = malloc(gi->decoded_size);
            memset(out[k], k ? 0x11 : 0xee, gi->decoded_size);
            ck_assert_int_eq(df11_file_read_group(k ? fm : ff, g, p[k]), DF11_OK);
            ck_assert_int_eq(df11_group_decode_host(k ? fm : ff, g, p[k], out[k], 2), DF11_OK);
        }
        ck_assert_mem_eq(p[0], p[1], gi->payload_size);
        ck_assert_mem_eq(p[1], b + gi->payload_offset, gi->payload_size);
        ck_assert_mem_eq(out[0], out[1], gi->decoded_size);
        for (int k = 0; k < 2; k++) {
            free(p[k]);
            free(out[k]);
        }
    }
    df11_file_close(fm);
    df11_file_close(ff);
    ck_assert_int_eq(df11i_file_open_memory(b, size, NULL, &fm), DF11_OK);
    ck_assert_str_eq(df11_file_path(fm), "<memory>");
    df11_file_close(fm);

    /* each cut in a buffer of exactly its size, so that a read past it is a fault */
    for (size_t cut = 0; cut < size; cut += (cut < 300 ? 1 : 97)) {
        uint8_t *c = malloc(cut ? cut : 1);
        memcpy(c, b, cut);
        fm = (df11_file *)1;
        df11_status st = df11i_file_open_memory(c, cut, "cut", &fm);
        ck_assert_msg(st == (cut < 8 ? DF11_ERR_NOT_DF11 : DF11_ERR_TRUNCATED), "cut at %zu: %s",
                      cut, df11_strerror(st));
        ck_assert_ptr_null(fm);
        ck_assert_msg(strstr(df11_last_error_detail(), "'cut'") != NULL, "%s",
                      df11_last_error_detail());
        free(c);
    }
    ck_assert_int_eq(df11i_file_open_memory(NULL, size, "x", &fm), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_file_open_memory(b, size, "x", NULL), DF11_ERR_INVALID_ARG);
    free(b);
}
END_TEST

/* A raw tensor's bytes start on a section boundary like every section: the GPU copies
 * them 16 bytes at a time from the payload, and a misaligned start faults the device. */
START_TEST(test_raw_alignment)
{
    static float f32[5] = { 1.5f, -2.0f, 0.0f, 3.25f, 1e30f };
    df11_tensor_source src = { "norm.f32", DF11_DTYPE_F32, 1, { 5 }, f32 };
    const char *p = path_in_tmp("raw.df11");
    ck_assert_int_eq(df11_compress_tensors(p, &src, 1, NULL, 0, NULL, NULL), DF11_OK);
    size_t size;
    uint8_t *b = slurp(p, &size);
    const uint64_t T = df11i_ld64(b + HDR_TENSORS_OFFSET);
    ck_assert_uint_eq(b[T + TEN_CODEC], DF11_CODEC_RAW);
    ck_assert_uint_eq(df11i_ld64(b + DF11_HEADER_SIZE + GRP_PAYLOAD_SIZE),
                      32); /* 20 bytes, padded */
    ck_assert_int_eq(open_and_decode(b, size), DF11_OK);
    for (uint64_t off = 1; off <= 12; off++) /* inside the payload, not on a boundary */
        ck_assert_int_eq(with_field(b, size, T + TEN_DATA_OFFSET, 8, off), DF11_ERR_RANGE);
    ck_assert_int_eq(with_field(b, size, T + TEN_DATA_OFFSET, 8, 16),
                     DF11_ERR_RANGE); /* past the end */
    free(b);
}
END_TEST

/* ---- the fixed exponent code (codec 2, format 2.1) ---- */

static const df11_tensor_info *tensor_named(df11_file *f, const char *name)
{
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, name, &t), DF11_OK);
    return df11_file_tensor(f, t);
}

/* Every kind of tensor through a fixed-codec file: 2-D BF16 matrices get the fixed code,
 * other BF16 tensors Huffman, other dtypes raw, all in one group; bit-exact back. The file
 * says 2.1; the same tensors with the default codec make a 2.0 file. */
/* The fixed codes the loop tests run over (_i). */
static const df11_codec fixed_codecs[2] = { DF11_CODEC_EXP_FIXED, DF11_CODEC_EXP_FIXED8 };

START_TEST(test_fixed_roundtrip_kinds)
{
    static uint16_t w_big[3 * 70001], w_mid[77 * 300], w_one[1], w_odd[13 * 7], w_eq[40 * 65];
    static float f32[5] = { 1.5f, -2.0f, 0.0f, 3.25f, 1e30f };
    df11_test_fill_weights(w_big, 3 * 70001, 70001, &rng);
    df11_test_fill_weights(w_mid, 77 * 300, 300, &rng);
    df11_test_fill_weights(w_one, 1, 1, &rng);
    df11_test_fill_weights(w_odd, 13 * 7, 7, &rng);
    for (size_t i = 0; i < 40 * 65; i++) /* all exponents, NaN and Inf included */
        w_eq[i] = (uint16_t)df11_test_rand(&rng);
    df11_tensor_source src[] = {
        { "model.embed_tokens.weight", DF11_DTYPE_BF16, 2, { 3, 70001 }, w_big },
        { "model.layers.0.mid", DF11_DTYPE_BF16, 2, { 77, 300 }, w_mid },
        { "model.layers.0.one", DF11_DTYPE_BF16, 2, { 1, 1 }, w_one },
        { "model.layers.0.norm", DF11_DTYPE_BF16, 1, { 91 }, w_odd },
        { "model.layers.0.odd", DF11_DTYPE_BF16, 2, { 13, 7 }, w_odd },
        { "model.layers.0.empty", DF11_DTYPE_BF16, 2, { 0, 5 }, NULL },
        { "model.layers.0.f32", DF11_DTYPE_F32, 1, { 5 }, f32 },
        { "model.layers.1.random", DF11_DTYPE_BF16, 2, { 40, 65 }, w_eq },
    };
    const size_t n = sizeof src / sizeof *src;
    const char *out = path_in_tmp("fixed-kinds.df11");
    const df11_codec codec = fixed_codecs[_i];
    df11_compress_options o = { .n_threads = 2, .codec = codec };
    df11_compress_summary sum;
    ck_assert_int_eq(df11_compress_tensors(out, src, n, NULL, 0, &o, &sum), DF11_OK);
    check_matches(out, src, n);
    df11_file *f;
    ck_assert_int_eq(df11_file_open(out, &f), DF11_OK);
    ck_assert_int_eq(tensor_named(f, "model.embed_tokens.weight")->codec, codec);
    ck_assert_int_eq(tensor_named(f, "model.layers.0.mid")->codec, codec);
    ck_assert_int_eq(tensor_named(f, "model.layers.0.one")->codec, codec);
    ck_assert_int_eq(tensor_named(f, "model.layers.0.odd")->codec, codec);
    ck_assert_int_eq(tensor_named(f, "model.layers.1.random")->codec, codec);
    ck_assert_int_eq(tensor_named(f, "model.layers.0.norm")->codec, DF11_CODEC_EXP_HUFFMAN);
    ck_assert_int_eq(tensor_named(f, "model.layers.0.empty")->codec, DF11_CODEC_EXP_HUFFMAN);
    ck_assert_int_eq(tensor_named(f, "model.layers.0.f32")->codec, DF11_CODEC_RAW);
    const df11_tensor_info *mid = tensor_named(f, "model.layers.0.mid");
    ck_assert_uint_lt(mid->stored_bytes, mid->nbytes);
    ck_assert_uint_gt(mid->exponent_entropy, 0);
    df11_file_close(f);
    size_t size;
    uint8_t *b = slurp(out, &size);
    ck_assert_uint_eq(df11i_ld16(b + HDR_VERSION_MAJOR), 2);
    ck_assert_uint_eq(df11i_ld16(b + HDR_VERSION_MINOR), codec == DF11_CODEC_EXP_FIXED ? 1 : 2);
    free(b);

    /* the default (and an explicit Huffman) writes 2.0, as the writer before codec 2 did */
    for (int k = 0; k < 2; k++) {
        df11_compress_options h = { .n_threads = 2, .codec = k ? DF11_CODEC_EXP_HUFFMAN : 0 };
        ck_assert_int_eq(df11_compress_tensors(out, src, n, NULL, 0, &h, NULL), DF11_OK);
        check_matches(out, src, n);
        b = slurp(out, &size);
        ck_assert_uint_eq(df11i_ld16(b + HDR_VERSION_MINOR), 0);
        free(b);
        ck_assert_int_eq(df11_file_open(out, &f), DF11_OK);
        ck_assert_int_eq(tensor_named(f, "model.layers.0.mid")->codec, DF11_CODEC_EXP_HUFFMAN);
        df11_file_close(f);
    }
    df11_compress_options bad = { .codec = DF11_CODEC_RAW + 7 };
    ck_assert_int_eq(df11_compress_tensors(out, src, n, NULL, 0, &bad, NULL), DF11_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_fixed_real_model)
{
    const char *dir = df11_test_model_dir();
    if (!dir) return;
    const char *df = path_in_tmp("real-fixed.df11"), *back = path_in_tmp("back-fixed.safetensors");
    df11_compress_options o = { .codec = fixed_codecs[_i] };
    df11_compress_summary sum;
    ck_assert_int_eq(df11_compress_path(dir, df, &o, &sum), DF11_OK);
    ck_assert_uint_lt(sum.bf16_stored_bytes, sum.bf16_bytes);
    ck_assert_int_eq(df11_decompress_to_safetensors(df, back, 2), DF11_OK);
    df11i_st_model *a, *c;
    ck_assert_int_eq(df11i_st_open(dir, &a), DF11_OK);
    ck_assert_int_eq(df11i_st_open(back, &c), DF11_OK);
    check_matches(df, a->tensors, a->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        size_t j = 0;
        while (j < c->n_tensors && strcmp(a->tensors[i].name, c->tensors[j].name)) j++;
        ck_assert_uint_lt(j, c->n_tensors);
        uint64_t bytes = df11_dtype_size(a->tensors[i].dtype);
        for (uint32_t d = 0; d < a->tensors[i].ndim; d++) bytes *= a->tensors[i].shape[d];
        ck_assert_mem_eq(a->tensors[i].data, c->tensors[j].data, bytes);
    }
    df11_file *f;
    ck_assert_int_eq(df11_file_open(df, &f), DF11_OK);
    uint32_t n_fixed = 0;
    for (uint32_t t = 0; t < df11_file_n_tensors(f); t++)
        n_fixed += df11_file_tensor(f, t)->codec == fixed_codecs[_i];
    ck_assert_uint_gt(n_fixed, 0);
    df11_file_close(f);
    df11i_st_close(a);
    df11i_st_close(c);
}
END_TEST

/* A small fixed-codec file: one group mixing fixed, Huffman and raw tensors. */
static uint8_t *good_fixed_file(size_t *size, df11_codec codec)
{
    static uint16_t w[50 * 300], v[300];
    static float f32[3] = { 1, 2, 3 };
    df11_test_fill_weights(w, 50 * 300, 300, &rng);
    df11_test_fill_weights(v, 300, 30, &rng);
    w[7] = 0x7f80; /* escapes: Inf, a zero, a NaN */
    w[300 * 17 + 5] = 0;
    w[300 * 49 + 299] = 0xffc1;
    df11_tensor_source src[] = { { "model.layers.0.a", DF11_DTYPE_BF16, 2, { 50, 300 }, w },
                                 { "model.layers.0.b", DF11_DTYPE_BF16, 1, { 300 }, v },
                                 { "model.layers.0.c", DF11_DTYPE_F32, 1, { 3 }, f32 } };
    df11_compress_options o = { .lane_symbols = 64, .codec = codec };
    const char *p = path_in_tmp("good-fixed.df11");
    ck_assert_int_eq(df11_compress_tensors(p, src, 3, "{}", 2, &o, NULL), DF11_OK);
    return slurp(p, size);
}

/* Copies the image, XORs `x` into the byte `at` of group 0's payload, re-seals the
 * payload's and the index's checksums, and opens and decodes it. */
static df11_status with_payload_byte(const uint8_t *good, size_t size, uint64_t at, uint8_t x)
{
    uint8_t *b = malloc(size);
    memcpy(b, good, size);
    uint8_t *g = b + DF11_HEADER_SIZE;
    const uint64_t off = df11i_ld64(g + GRP_PAYLOAD_OFFSET), len = df11i_ld64(g + GRP_PAYLOAD_SIZE);
    ck_assert_uint_lt(at, len);
    b[off + at] ^= x;
    df11i_st64(g + GRP_PAYLOAD_XXH3, XXH3_64bits(b + off, len));
    reseal_index(b, size);
    df11_status st = open_and_decode(b, size);
    free(b);
    return st;
}

/* A payload that passed its checksum is still checked whole before the fixed decoder
 * runs: broken offsets, counts, bases or codes fail with DF11_ERR_CORRUPT (never a read
 * outside the payload: the ASan build runs this), broken sign|mantissa bytes or exception
 * values decode to other weights. */
START_TEST(test_fixed_hostile_payload)
{
    const df11_codec codec = fixed_codecs[_i];
    size_t size;
    uint8_t *b = good_fixed_file(&size, codec);
    ck_assert_int_eq(open_and_decode(b, size), DF11_OK);
    df11_file *f;
    ck_assert_int_eq(df11i_file_open_memory(b, size, "fixed", &f), DF11_OK);
    uint32_t t;
    ck_assert_int_eq(df11_file_find_tensor(f, "model.layers.0.a", &t), DF11_OK);
    ck_assert_int_eq(df11_file_tensor(f, t)->codec, codec);
    const df11i_tensor_layout lo = *df11i_file_tensor_layout(f, t);
    const uint64_t payload = df11_file_group(f, 0)->payload_size;
    df11_file_close(f);
    ck_assert_uint_gt(lo.n_exc, 2);
    ck_assert_uint_eq(lo.n_chunks, 4 * 2); /* 4 strips of 2 tiles (5 steps) */

    ck_assert_int_eq(with_payload_byte(b, size, lo.chunks_offset + 4, 1), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_payload_byte(b, size, lo.chunks_offset + 4 * lo.n_chunks, 1),
                     DF11_ERR_CORRUPT); /* the last offset is not n_exc */
    ck_assert_int_eq(with_payload_byte(b, size, lo.chunks_offset, 0x80), DF11_ERR_CORRUPT);
    const uint8_t base3 =
        b[df11i_ld64(b + DF11_HEADER_SIZE + GRP_PAYLOAD_OFFSET) + lo.codebook_offset + 3];
    ck_assert_int_eq(with_payload_byte(b, size, lo.codebook_offset + 3, base3 ^ 0xfe),
                     DF11_ERR_CORRUPT); /* base 254 > 249 (247) */
    ck_assert_int_eq(with_payload_byte(b, size, lo.data_offset + 5, 0x40), DF11_OK);
    if (codec == DF11_CODEC_EXP_FIXED) {
        /* an escape code more or less than the list holds */
        const uint8_t code0 =
            b[df11i_ld64(b + DF11_HEADER_SIZE + GRP_PAYLOAD_OFFSET) + lo.stream_offset] & 7;
        ck_assert_int_eq(with_payload_byte(b, size, lo.stream_offset, code0 == 7 ? 7 : code0 ^ 7),
                         DF11_ERR_CORRUPT);
        ck_assert_int_eq(with_payload_byte(b, size, lo.lanes_offset, 0x01), DF11_OK);
    } else {
        /* a record's exponent is any byte (the checksum guards it); its position is checked
         * (tests/test_fixed.c breaks it every way) */
        ck_assert_int_eq(with_payload_byte(b, size, lo.lanes_offset + 1, 0x10), DF11_OK);
    }
    for (int i = 0; i < 300; i++) {
        uint64_t at = df11_test_rand(&rng) % payload;
        uint8_t x = (uint8_t)(1u << (df11_test_rand(&rng) % 8));
        df11_status st = with_payload_byte(b, size, at, x);
        ck_assert_msg(st == DF11_OK || st == DF11_ERR_CORRUPT, "payload byte %llu ^ %u: %s",
                      (unsigned long long)at, x, df11_strerror(st));
    }
    free(b);
}
END_TEST

/* Index fields of a fixed tensor are checked at open; an unknown codec (what a 2.1 reader
 * sees in a 2.2 file, with 3 in place of 4) is refused with a detail that says so; files
 * with a later minor version open. */
START_TEST(test_fixed_hostile_index)
{
    const df11_codec codec = fixed_codecs[_i];
    size_t size;
    uint8_t *b = good_fixed_file(&size, codec);
    const uint64_t T = df11i_ld64(b + HDR_TENSORS_OFFSET);
    ck_assert_uint_eq(b[T + TEN_CODEC], codec); /* tensor 0 is "a" */
    ck_assert_int_eq(with_field(b, size, HDR_VERSION_MINOR, 2, 9), DF11_OK);
    ck_assert_int_eq(with_field(b, size, T + TEN_CODEC, 1, 4), DF11_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "unknown codec 4"));
    /* the other fixed layout over this tensor's bytes: refused at open (codec 3's exception
     * section is larger), or where its escapes or records do not match its codes */
    const df11_status other =
        with_field(b, size, T + TEN_CODEC, 1, _i ? DF11_CODEC_EXP_FIXED : DF11_CODEC_EXP_FIXED8);
    ck_assert(other == DF11_ERR_RANGE || other == DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_DTYPE, 1, DF11_DTYPE_F16), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_NDIM, 1, 1), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_N_CHUNKS, 4, 9), DF11_ERR_CORRUPT);
    ck_assert_int_eq(with_field(b, size, T + TEN_MAX_CODE_LEN, 1, 12), DF11_ERR_CORRUPT);
    ck_assert_int_eq(
        with_field(b, size, T + TEN_STREAM_SIZE, 8, df11i_ld64(b + T + TEN_STREAM_SIZE) + 16),
        DF11_ERR_CORRUPT);
    const int sections[5] = { TEN_CODEBOOK_OFFSET, TEN_CHUNKS_OFFSET, TEN_STREAM_OFFSET,
                              TEN_LANES_OFFSET, TEN_DATA_OFFSET };
    for (int i = 0; i < 5; i++) {
        uint64_t v = df11i_ld64(b + T + sections[i]);
        ck_assert_int_eq(with_field(b, size, T + sections[i], 8, v + 8), DF11_ERR_RANGE);
        ck_assert_int_eq(with_field(b, size, T + sections[i], 8, v + (1ull << 40)), DF11_ERR_RANGE);
    }
    /* more exceptions than the section holds (codec 3: more records than the kernels
     * index), and a count the offsets do not end at */
    ck_assert_int_eq(with_field(b, size, T + TEN_LANE_SYMBOLS, 4, 1u << 30), DF11_ERR_RANGE);
    ck_assert_int_eq(with_field(b, size, T + TEN_LANE_SYMBOLS, 4, 1u << 31),
                     _i ? DF11_ERR_CORRUPT : DF11_ERR_RANGE);
    ck_assert_int_eq(
        with_field(b, size, T + TEN_LANE_SYMBOLS, 4, df11i_ld32(b + T + TEN_LANE_SYMBOLS) - 1),
        DF11_ERR_CORRUPT);
    for (size_t cut = 0; cut < size; cut += 211) {
        df11_status st = open_and_decode(b, cut);
        ck_assert_msg(st == DF11_ERR_NOT_DF11 || st == DF11_ERR_TRUNCATED, "cut at %zu: %s", cut,
                      df11_strerror(st));
    }
    free(b);
}
END_TEST

/* Files written by older df11-compress builds, committed in tests/data (its README.md says
 * which commits and commands): a 2.0 Huffman file, a 2.1 fixed-code file and a 2.2 fixed8
 * file, all of tests/data/old_source.safetensors. Each holds the version its writer gave it
 * (the fixture is what it says) and its codec, opens, and decodes to those weights bit for
 * bit; opened as a model on the host backend, its products equal the BF16 model's bit for
 * bit. */
static const struct old_file {
    const char *name;
    uint16_t minor;
    df11_codec codec;
} OLD_FILES[] = { { "v2.0-huffman.df11", DF11_VERSION_MINOR_HUFFMAN_ONLY, DF11_CODEC_EXP_HUFFMAN },
                  { "v2.1-fixed.df11", DF11_VERSION_MINOR_FIXED, DF11_CODEC_EXP_FIXED },
                  { "v2.2-fixed8.df11", 2, DF11_CODEC_EXP_FIXED8 } };

START_TEST(test_old_writers)
{
    const struct old_file *o = &OLD_FILES[_i];
    char src[1024], path[1024];
    snprintf(src, sizeof src, "%s/tests/data/old_source.safetensors", DF11_SOURCE_DIR);
    snprintf(path, sizeof path, "%s/tests/data/%s", DF11_SOURCE_DIR, o->name);
    size_t size;
    uint8_t *img = slurp(path, &size);
    ck_assert_uint_eq(df11i_ld16(img + HDR_VERSION_MAJOR), DF11_VERSION_MAJOR);
    ck_assert_uint_eq(df11i_ld16(img + HDR_VERSION_MINOR), o->minor);
    free(img);
    df11i_st_model *a;
    ck_assert_int_eq(df11i_st_open(src, &a), DF11_OK);
    check_matches(path, a->tensors, a->n_tensors);
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
    uint32_t n_codec = 0;
    for (uint32_t t = 0; t < df11_file_n_tensors(f); t++)
        n_codec += df11_file_tensor(f, t)->codec == o->codec;
    ck_assert_uint_gt(n_codec, 0);
    df11_file_close(f);
    /* every 2-D weight through the op, against the BF16 model of the source */
    df11_model_options mo;
    df11_model_options_init(&mo);
    mo.backend = DF11_BACKEND_HOST;
    df11_model *m, *ref;
    ck_assert_int_eq(df11_model_open(path, &mo, &m), DF11_OK);
    ck_assert_int_eq(df11_model_open_bf16(src, &mo, &ref), DF11_OK);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const df11_tensor_source *t = &a->tensors[i];
        if (t->dtype != DF11_DTYPE_BF16 || t->ndim != 2) continue;
        const uint32_t n = (uint32_t)t->shape[0], k = (uint32_t)t->shape[1], batch = 3;
        uint16_t *x = malloc((size_t)batch * k * 2);
        float *y = malloc((size_t)batch * n * 4), *y_ref = malloc((size_t)batch * n * 4);
        df11_test_fill_weights(x, (size_t)batch * k, k, &rng);
        df11_weight w, w_ref;
        ck_assert_int_eq(df11_weight_get(m, t->name, &w), DF11_OK);
        ck_assert_int_eq(df11_weight_get(ref, t->name, &w_ref), DF11_OK);
        ck_assert_int_eq(df11_matmul(m, &w, x, batch, y, DF11_DTYPE_F32, NULL), DF11_OK);
        ck_assert_int_eq(df11_matmul(ref, &w_ref, x, batch, y_ref, DF11_DTYPE_F32, NULL), DF11_OK);
        ck_assert_mem_eq(y, y_ref, (size_t)batch * n * 4);
        free(x);
        free(y);
        free(y_ref);
    }
    df11_model_close(m);
    df11_model_close(ref);
    df11i_st_close(a);
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
    tcase_add_test(tc, test_long_multibyte_name);
    tcase_add_test(tc, test_name_ranges);
    tcase_add_test(tc, test_block_order);
    tcase_add_test(tc, test_open_threads);
    tcase_add_test(tc, test_detail_keeps_reason);
    tcase_add_test(tc, test_fifo_refused);
    tcase_add_test(tc, test_open_memory);
    tcase_add_test(tc, test_raw_alignment);
    tcase_add_loop_test(tc, test_fixed_roundtrip_kinds, 0, 2);
    tcase_add_loop_test(tc, test_fixed_real_model, 0, 2);
    tcase_add_loop_test(tc, test_fixed_hostile_payload, 0, 2);
    tcase_add_loop_test(tc, test_fixed_hostile_index, 0, 2);
    tcase_add_loop_test(tc, test_old_writers, 0, sizeof OLD_FILES / sizeof OLD_FILES[0]);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
