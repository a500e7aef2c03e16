/* The safetensors reader (loader/safetensors_read.c) and writer (writer/safetensors_write.c):
 * round trips through df11i_st_write / df11i_st_open, sharded folders, and one test per kind
 * of hostile header, each asserting the exact status. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "loader/safetensors.h"
#include "tests/testutil.h"
#include "writer/safetensors_write.h"

/* ---- helpers ---- */

/* A file image: 8-byte length, `json` as the header, `data_size` bytes of data. */
static uint8_t *make_image(const char *json, size_t data_size, size_t *size)
{
    size_t hlen = strlen(json);
    *size = 8 + hlen + data_size;
    uint8_t *buf = calloc(1, *size);
    ck_assert_ptr_nonnull(buf);
    df11i_st64(buf, hlen);
    memcpy(buf + 8, json, hlen);
    for (size_t i = 0; i < data_size; i++) buf[8 + hlen + i] = (uint8_t)i;
    return buf;
}

/* Parses the image of `json` + data into a fresh model and returns the status. */
static df11_status parse_json(const char *json, size_t data_size)
{
    size_t size;
    uint8_t *img = make_image(json, data_size, &size);
    df11i_st_model *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    df11_status st = df11i_st_parse(m, img, size, "test");
    if (st != DF11_OK) {
        ck_assert_msg(df11_last_error_detail()[0] != '\0', "no detail for status %d", st);
        ck_assert_uint_eq(m->n_tensors, 0);
    }
    df11i_st_close(m);
    free(img);
    return st;
}

#define ASSERT_PARSE(json, data_size, expect)                                                      \
    do {                                                                                           \
        df11_status st_ = parse_json(json, data_size);                                             \
        ck_assert_msg(st_ == (expect), "got %d (%s: %s), want %d", st_, df11_strerror(st_),        \
                      df11_last_error_detail(), (expect));                                         \
    } while (0)

static char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", df11_test_tmpdir(), name);
    return p;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

static uint64_t tensor_bytes(const df11_tensor_source *t)
{
    uint64_t n = df11_dtype_size(t->dtype);
    for (uint32_t d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static const df11_tensor_source *find(const df11i_st_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

static int dir_is_empty(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    return system(cmd) == 0;
}

/* ---- round trips ---- */

typedef struct {
    const char *name;
    df11_dtype dtype;
    uint32_t ndim;
    uint64_t shape[3];
} spec;

static const spec specs[] = {
    { "scalar", DF11_DTYPE_F32, 0, { 0 } },
    { "one", DF11_DTYPE_BF16, 1, { 1 } },
    { "empty", DF11_DTYPE_BF16, 1, { 0 } },
    { "empty2d", DF11_DTYPE_F16, 2, { 3, 0 } },
    { "odd.u8", DF11_DTYPE_U8, 3, { 3, 5, 7 } },
    { "odd.bf16", DF11_DTYPE_BF16, 2, { 33, 65 } },
    { "i64", DF11_DTYPE_I64, 1, { 9 } },
    { "f64", DF11_DTYPE_F64, 2, { 2, 3 } },
    { "bool", DF11_DTYPE_BOOL, 1, { 5 } },
    { "i32", DF11_DTYPE_I32, 2, { 7, 1 } },
    { "f8", DF11_DTYPE_F8_E4M3, 1, { 13 } },
    { "unicode.\xc3\xa9\"q", DF11_DTYPE_U16, 1, { 3 } },
};
#define N_SPECS (sizeof specs / sizeof specs[0])

static void make_tensors(df11_tensor_source *t, uint8_t **bufs, uint64_t *seed)
{
    for (size_t i = 0; i < N_SPECS; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].name = specs[i].name;
        t[i].dtype = specs[i].dtype;
        t[i].ndim = specs[i].ndim;
        memcpy(t[i].shape, specs[i].shape, sizeof specs[i].shape);
        uint64_t n = tensor_bytes(&t[i]);
        bufs[i] = malloc(n ? n : 1);
        for (uint64_t b = 0; b < n; b++) bufs[i][b] = (uint8_t)df11_test_rand(seed);
        t[i].data = n ? bufs[i] : NULL;
    }
}

START_TEST(test_round_trip)
{
    uint64_t seed = df11_test_seed();
    df11_tensor_source t[N_SPECS];
    uint8_t *bufs[N_SPECS];
    make_tensors(t, bufs, &seed);
    const char *path = tmp_path("rt.safetensors");
    ck_assert_int_eq(df11i_st_write(path, t, N_SPECS, "{\"format\":\"pt\"}"), DF11_OK);

    df11i_st_model *m;
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_OK);
    ck_assert_uint_eq(m->n_tensors, N_SPECS);
    ck_assert_ptr_null(m->config_json);
    /* Written in order and sorted by offset: the order given, except that empty tensors
     * share an offset with their successor, so compare by name. */
    for (size_t i = 0; i < N_SPECS; i++) {
        const df11_tensor_source *r = find(m, t[i].name);
        ck_assert_msg(r != NULL, "tensor '%s' missing", t[i].name);
        ck_assert_int_eq(r->dtype, t[i].dtype);
        ck_assert_uint_eq(r->ndim, t[i].ndim);
        for (uint32_t d = 0; d < t[i].ndim; d++) ck_assert_uint_eq(r->shape[d], t[i].shape[d]);
        uint64_t n = tensor_bytes(&t[i]);
        if (n) ck_assert_int_eq(memcmp(r->data, t[i].data, n), 0);
    }
    for (size_t i = 1; i < m->n_tensors; i++)
        ck_assert((const uint8_t *)m->tensors[i - 1].data <= (const uint8_t *)m->tensors[i].data);
    /* The data area starts 8-byte aligned. */
    ck_assert_uint_eq(df11i_ld64(m->maps[0].base) % 8, 0);
    df11i_st_close(m);
    for (size_t i = 0; i < N_SPECS; i++) free(bufs[i]);
}
END_TEST

START_TEST(test_write_empty_model)
{
    const char *path = tmp_path("none.safetensors");
    ck_assert_int_eq(df11i_st_write(path, NULL, 0, NULL), DF11_OK);
    df11i_st_model *m;
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_OK);
    ck_assert_uint_eq(m->n_tensors, 0);
    df11i_st_close(m);
}
END_TEST

START_TEST(test_write_failures_leave_nothing)
{
    char dir[] = "/tmp/df11-st-write-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    uint16_t v[2] = { 1, 2 };
    df11_tensor_source t[2] = {
        { .name = "a", .dtype = DF11_DTYPE_BF16, .ndim = 1, .shape = { 2 }, .data = v },
        { .name = "a", .dtype = DF11_DTYPE_BF16, .ndim = 1, .shape = { 2 }, .data = v },
    };
    ck_assert_int_eq(df11i_st_write(path, t, 2, NULL), DF11_ERR_DUPLICATE);
    ck_assert_int_eq(df11i_st_write(path, t, 1, "[1]"), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_st_write(path, t, 1, "{\"a\":1}"), DF11_ERR_INVALID_ARG);
    t[1].name = "__metadata__";
    ck_assert_int_eq(df11i_st_write(path, t, 2, NULL), DF11_ERR_INVALID_ARG);
    t[1].name = "b";
    t[1].data = NULL;
    ck_assert_int_eq(df11i_st_write(path, t, 2, NULL), DF11_ERR_INVALID_ARG);
    t[1].dtype = DF11_DTYPE_INVALID;
    ck_assert_int_eq(df11i_st_write(path, t, 2, NULL), DF11_ERR_DTYPE);
    ck_assert(dir_is_empty(dir)); /* no temp file left */
    ck_assert_int_eq(df11i_st_write("/nonexistent-df11-dir/x.safetensors", t, 1, NULL),
                     DF11_ERR_IO);
    rmdir(dir);
}
END_TEST

static uint64_t fills;
static df11_status fill_fn(void *ctx, size_t index, void *buf, uint64_t nbytes)
{
    fills++;
    if (ctx && index == 1) return DF11_ERR_CORRUPT;
    memset(buf, (int)(0x40 + index), nbytes);
    return DF11_OK;
}

START_TEST(test_write_fill)
{
    df11_tensor_source t[3] = {
        { .name = "x", .dtype = DF11_DTYPE_BF16, .ndim = 2, .shape = { 3, 4 } },
        { .name = "e", .dtype = DF11_DTYPE_BF16, .ndim = 1, .shape = { 0 } },
        { .name = "y", .dtype = DF11_DTYPE_F32, .ndim = 1, .shape = { 5 } },
    };
    const char *path = tmp_path("fill.safetensors");
    fills = 0;
    ck_assert_int_eq(df11i_st_write_fill(path, t, 3, NULL, fill_fn, NULL), DF11_OK);
    ck_assert_uint_eq(fills, 2); /* not called for the empty tensor */
    df11i_st_model *m;
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_OK);
    const df11_tensor_source *y = find(m, "y");
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_eq(((const uint8_t *)y->data)[19], 0x42);
    df11i_st_close(m);

    /* A failing fill aborts the write with its own status. */
    t[1].shape[0] = 1;
    int dummy;
    const char *path2 = tmp_path("fill-fail.safetensors");
    ck_assert_int_eq(df11i_st_write_fill(path2, t, 3, NULL, fill_fn, &dummy), DF11_ERR_CORRUPT);
    ck_assert_int_eq(access(path2, F_OK), -1);
}
END_TEST

/* ---- folders ---- */

static void write_shard(const char *path, const char *const *names, size_t n, uint16_t base)
{
    df11_tensor_source t[4];
    static uint16_t data[4][6];
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 6; k++) data[i][k] = (uint16_t)(base + i * 10 + k);
        t[i] = (df11_tensor_source){ .name = names[i],
                                     .dtype = DF11_DTYPE_BF16,
                                     .ndim = 2,
                                     .shape = { 2, 3 },
                                     .data = data[i] };
    }
    ck_assert_int_eq(df11i_st_write(path, t, n, NULL), DF11_OK);
}

/* A temporary model folder with two shards; `index` is the index.json text. */
static char *make_folder(const char *index, const char *const *s1, size_t n1, const char *const *s2,
                         size_t n2)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/df11-st-folder-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char p[600];
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_shard(p, s2, n2, 1000);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_shard(p, s1, n1, 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, index);
    return dir;
}

static void remove_folder(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *const shard1[] = { "b.weight", "a.weight" };
static const char *const shard2[] = { "c.weight" };
static const char good_index[] = "{\"metadata\":{\"total_size\":36},\"weight_map\":{"
                                 "\"c.weight\":\"model-00002-of-00002.safetensors\","
                                 "\"a.weight\":\"model-00001-of-00002.safetensors\","
                                 "\"b.weight\":\"model-00001-of-00002.safetensors\"}}";

START_TEST(test_folder_index)
{
    char *dir = make_folder(good_index, shard1, 2, shard2, 1);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    const char *config = "{\"model_type\": \"llama\"}\n";
    write_text(p, config);

    df11i_st_model *m;
    df11_status st = df11i_st_open(dir, &m);
    ck_assert_msg(st == DF11_OK, "%s", df11_last_error_detail());
    ck_assert_uint_eq(m->n_tensors, 3);
    /* (file, offset) order: shard 1 as written, then shard 2. */
    ck_assert_str_eq(m->tensors[0].name, "b.weight");
    ck_assert_str_eq(m->tensors[1].name, "a.weight");
    ck_assert_str_eq(m->tensors[2].name, "c.weight");
    ck_assert_uint_eq(((const uint16_t *)m->tensors[1].data)[5], 15);
    ck_assert_uint_eq(((const uint16_t *)m->tensors[2].data)[0], 1000);
    ck_assert_ptr_nonnull(m->config_json);
    ck_assert_uint_eq(m->config_len, strlen(config));
    ck_assert_str_eq(m->config_json, config);
    df11i_st_close(m);
    remove_folder(dir);
}
END_TEST

START_TEST(test_folder_single)
{
    char dir[] = "/tmp/df11-st-single-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char p[600];
    df11i_st_model *m;
    ck_assert_int_eq(df11i_st_open(dir, &m), DF11_ERR_IO); /* neither file */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_shard(p, shard1, 2, 7);
    ck_assert_int_eq(df11i_st_open(dir, &m), DF11_OK);
    ck_assert_uint_eq(m->n_tensors, 2);
    ck_assert_ptr_null(m->config_json);
    df11i_st_close(m);
    remove_folder(dir);
}
END_TEST

START_TEST(test_folder_duplicate_across_shards)
{
    static const char *const s2[] = { "a.weight" };
    const char *index = "{\"weight_map\":{"
                        "\"a.weight\":\"model-00001-of-00002.safetensors\","
                        "\"b.weight\":\"model-00002-of-00002.safetensors\"}}";
    char *dir = make_folder(index, shard1, 2, s2, 1);
    df11i_st_model *m = NULL;
    ck_assert_int_eq(df11i_st_open(dir, &m), DF11_ERR_DUPLICATE);
    ck_assert_ptr_null(m);
    remove_folder(dir);
}
END_TEST

START_TEST(test_folder_index_names_twice)
{
    const char *index = "{\"weight_map\":{"
                        "\"a.weight\":\"model-00001-of-00002.safetensors\","
                        "\"a.weight\":\"model-00002-of-00002.safetensors\"}}";
    char *dir = make_folder(index, shard1, 2, shard2, 1);
    df11i_st_model *m;
    ck_assert_int_eq(df11i_st_open(dir, &m), DF11_ERR_DUPLICATE);
    remove_folder(dir);
}
END_TEST

START_TEST(test_folder_bad_shard_names)
{
    static const char *const bad[] = {
        "{\"weight_map\":{\"a.weight\":\"../model-00001-of-00002.safetensors\"}}",
        "{\"weight_map\":{\"a.weight\":\"/etc/passwd\"}}",
        "{\"weight_map\":{\"a.weight\":\"sub/x.safetensors\"}}",
        "{\"weight_map\":{\"a.weight\":\"..\"}}",
        /* a NUL would cut the name to a shard that exists */
        "{\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\\u0000/../../x\"}}",
        "{\"weight_map\":{\"a.weight\\u0000x\":\"model-00001-of-00002.safetensors\"}}",
        "{\"weight_map\":{\"a.weight\":\"\"}}",
        "{\"weight_map\":{\"a.weight\":7}}",
        "{\"weight_map\":[]}",
        "{\"weight_map\":{}}",
        "[1]",
        "{not json",
        /* named in the wrong shard / missing */
        "{\"weight_map\":{\"a.weight\":\"model-00002-of-00002.safetensors\"}}",
        "{\"weight_map\":{\"zz\":\"model-00001-of-00002.safetensors\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *dir = make_folder(bad[i], shard1, 2, shard2, 1);
        df11i_st_model *m;
        df11_status st = df11i_st_open(dir, &m);
        ck_assert_msg(st == DF11_ERR_SAFETENSORS, "index %zu: got %d (%s)", i, st,
                      df11_last_error_detail());
        remove_folder(dir);
    }
}
END_TEST

START_TEST(test_folder_missing_shard)
{
    const char *index = "{\"weight_map\":{\"a.weight\":\"model-00003-of-00003.safetensors\"}}";
    char *dir = make_folder(index, shard1, 2, shard2, 1);
    df11i_st_model *m;
    ck_assert_int_eq(df11i_st_open(dir, &m), DF11_ERR_IO);
    remove_folder(dir);
}
END_TEST

/* ---- files that are not there or are cut short ---- */

START_TEST(test_open_missing)
{
    df11i_st_model *m = (df11i_st_model *)1;
    ck_assert_int_eq(df11i_st_open("/nonexistent/df11.safetensors", &m), DF11_ERR_IO);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(df11i_st_open(NULL, &m), DF11_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_open_truncated)
{
    uint16_t v[64];
    for (int i = 0; i < 64; i++) v[i] = (uint16_t)i;
    df11_tensor_source t = {
        .name = "w", .dtype = DF11_DTYPE_BF16, .ndim = 2, .shape = { 8, 8 }, .data = v
    };
    const char *path = tmp_path("trunc.safetensors");
    ck_assert_int_eq(df11i_st_write(path, &t, 1, NULL), DF11_OK);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    df11i_st_model *m;
    /* data cut short: the tensor's offsets run past the data area */
    ck_assert_int_eq(truncate(path, sb.st_size - 2), 0);
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_ERR_RANGE);
    /* cut inside the header */
    ck_assert_int_eq(truncate(path, 8 + 10), 0);
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_ERR_TRUNCATED);
    /* shorter than the length field, and empty (which mmap cannot map) */
    ck_assert_int_eq(truncate(path, 5), 0);
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_ERR_TRUNCATED);
    ck_assert_int_eq(truncate(path, 0), 0);
    ck_assert_int_eq(df11i_st_open(path, &m), DF11_ERR_TRUNCATED);
}
END_TEST

/* ---- hostile headers, one status each ---- */

#define T(name) "\"" name "\""
#define OK_ENTRY "{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}"

START_TEST(test_hostile_short)
{
    uint8_t b[7] = { 0 };
    df11i_st_model *m = calloc(1, sizeof *m);
    ck_assert_int_eq(df11i_st_parse(m, b, sizeof b, "short"), DF11_ERR_TRUNCATED);
    ck_assert_int_eq(df11i_st_parse(m, NULL, 0, "none"), DF11_ERR_TRUNCATED);
    ck_assert_int_eq(df11i_st_parse(NULL, b, sizeof b, "x"), DF11_ERR_INVALID_ARG);
    df11i_st_close(m);
}
END_TEST

START_TEST(test_hostile_header_len_past_file)
{
    size_t size;
    uint8_t *img = make_image("{}", 0, &size);
    df11i_st64(img, 3); /* claims one byte more than follows */
    df11i_st_model *m = calloc(1, sizeof *m);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "x"), DF11_ERR_TRUNCATED);
    df11i_st64(img, 1000);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "x"), DF11_ERR_TRUNCATED);
    df11i_st_close(m);
    free(img);
}
END_TEST

START_TEST(test_hostile_header_len_absurd)
{
    size_t size;
    uint8_t *img = make_image("{}", 0, &size);
    df11i_st_model *m = calloc(1, sizeof *m);
    df11i_st64(img, UINT64_MAX);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "x"), DF11_ERR_SAFETENSORS);
    df11i_st64(img, (uint64_t)1 << 40);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "x"), DF11_ERR_SAFETENSORS);
    df11i_st_close(m);
    free(img);
}
END_TEST

START_TEST(test_hostile_not_json)
{
    ASSERT_PARSE("{\"a\":", 0, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("", 0, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{} x", 0, DF11_ERR_SAFETENSORS); /* garbage after the JSON */
    ASSERT_PARSE("{}      ", 0, DF11_OK);          /* space padding is the format's */
}
END_TEST

START_TEST(test_hostile_not_object)
{
    ASSERT_PARSE("[]", 0, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("\"str\"", 0, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("42", 0, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("null", 0, DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_entry_not_object)
{
    ASSERT_PARSE("{" T("a") ":[1,2]}", 8, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":\"BF16\"}", 8, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":null}", 8, DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_dtype_missing_or_ill_typed)
{
    ASSERT_PARSE("{" T("a") ":{\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":16,\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_dtype_unknown)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF17\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_DTYPE);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"bf16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_DTYPE);
}
END_TEST

START_TEST(test_hostile_shape_missing_or_ill_typed)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":4,\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[\"2\",2],\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                            "\"data_offsets\":[0,1]}}",
                 8, DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_negative_dim)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[-2,-2],\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[-0.5],\"data_offsets\":[0,0]}}", 8,
                 DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_fractional_dim)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2.5,1.6],\"data_offsets\":[0,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[4e-1],\"data_offsets\":[0,0]}}", 8,
                 DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_size_overflow)
{
    /* 2^32 · 2^32 elements */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_OVERFLOW);
    /* 2^63 elements fit, but not 2^63 · 2 bytes */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[4294967296,2147483648],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_OVERFLOW);
    /* a dim beyond what a double holds exactly */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[1e300,0],"
                            "\"data_offsets\":[0,0]}}",
                 8, DF11_ERR_OVERFLOW);
}
END_TEST

START_TEST(test_hostile_offsets_missing_or_ill_typed)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2]}}", 8, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8,9]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[\"0\",8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[-8,0]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":{\"a\":1}}}", 8,
                 DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_nbytes_mismatch)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,6]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 16,
                 DF11_ERR_SAFETENSORS);
}
END_TEST

START_TEST(test_hostile_begin_after_end)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,0]}}", 16,
                 DF11_ERR_RANGE);
}
END_TEST

START_TEST(test_hostile_offsets_past_data)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[4,12]}}", 8,
                 DF11_ERR_RANGE);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[0],"
                            "\"data_offsets\":[9,9]}}",
                 8, DF11_ERR_RANGE);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[0],"
                            "\"data_offsets\":[1e30,1e30]}}",
                 8, DF11_ERR_RANGE);
}
END_TEST

START_TEST(test_hostile_overlap)
{
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}," T(
                     "b") ":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[6,10]}}",
                 16, DF11_ERR_RANGE);
    /* the same bytes twice */
    ASSERT_PARSE("{" T("a") ":" OK_ENTRY "," T("b") ":" OK_ENTRY "}", 8, DF11_ERR_RANGE);
    /* one inside another, listed after a third that sorts between them */
    ASSERT_PARSE("{" T("c") ":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}," T(
                     "a") ":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}",
                 16, DF11_ERR_RANGE);
}
END_TEST

START_TEST(test_hostile_duplicate_name)
{
    /* cJSON keeps both keys; the loader must notice. */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}," T(
                     "a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}",
                 16, DF11_ERR_DUPLICATE);
}
END_TEST

START_TEST(test_hostile_name_not_text)
{
    /* A name reaches the .df11 index, terminals and JSON as it is: a control character
     * (escaped in the header's JSON or raw), bytes that are not UTF-8, an overlong form or a
     * surrogate are refused; any other character is a name. */
    ASSERT_PARSE("{" T("a\\u001b[2Jb") ":" OK_ENTRY "}", 8, DF11_ERR_CORRUPT);
    ASSERT_PARSE("{" T("a\x01"
                       "b") ":" OK_ENTRY "}",
                 8, DF11_ERR_CORRUPT);
    ASSERT_PARSE("{" T("a\\u009bb") ":" OK_ENTRY "}", 8, DF11_ERR_CORRUPT);
    ASSERT_PARSE("{" T("a\xff\xfe.weight") ":" OK_ENTRY "}", 8, DF11_ERR_CORRUPT);
    ASSERT_PARSE("{" T("a\xc0\xae") ":" OK_ENTRY "}", 8, DF11_ERR_CORRUPT);
    ASSERT_PARSE("{" T("a\xed\xa0\x80") ":" OK_ENTRY "}", 8, DF11_ERR_CORRUPT);
    ASSERT_PARSE("{" T("caf\xc3\xa9.\xe5\xb1\x82.\xf0\x9f\x98\x80") ":" OK_ENTRY "}", 8, DF11_OK);
    ASSERT_PARSE("{" T("caf\\u00e9") ":" OK_ENTRY "}", 8, DF11_OK);
}
END_TEST

START_TEST(test_duplicate_across_parses)
{
    size_t size;
    uint8_t *img = make_image("{" T("a") ":" OK_ENTRY "}", 8, &size);
    df11i_st_model *m = calloc(1, sizeof *m);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "shard1"), DF11_OK);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "shard2"), DF11_ERR_DUPLICATE);
    ck_assert_uint_eq(m->n_tensors, 1); /* the failed parse left the model as it was */
    ck_assert_str_eq(m->tensors[0].name, "a");
    df11i_st_close(m);
    free(img);
}
END_TEST

START_TEST(test_valid_edge_cases)
{
    /* empty tensors, even at the very end or inside another tensor, are valid */
    ASSERT_PARSE("{" T("e") ":{\"dtype\":\"BF16\",\"shape\":[0,4],\"data_offsets\":[8,8]}," T(
                     "a") ":" OK_ENTRY
                          "," T("f") ":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]}}",
                 8, DF11_OK);
    /* __metadata__ is skipped whatever it holds; a scalar is one element */
    ASSERT_PARSE("{\"__metadata__\":{\"format\":\"pt\"}," T(
                     "s") ":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}",
                 8, DF11_OK);
    ASSERT_PARSE("{\"__metadata__\":7}", 0, DF11_OK);
    /* holes between tensors are tolerated */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}", 8,
                 DF11_OK);
    ASSERT_PARSE("{}", 0, DF11_OK);
}
END_TEST

START_TEST(test_mutations_do_not_crash)
{
    /* A valid image with bytes flipped at random: any status is fine, crashing is not
     * (Check runs each test in a child, so a crash fails it). */
    const char *json =
        "{\"__metadata__\":{\"format\":\"pt\"}," T("model.layers.0.w") ":{\"dtype\":\"BF16\",\"shape\":[2,4],\"data_offsets\":[0,16]}," T(
            "model.norm") ":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}," T("e") ":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[32,32]}}  ";
    size_t size;
    uint8_t *img = make_image(json, 32, &size);
    uint8_t *mut = malloc(size);
    uint64_t seed = df11_test_seed() ^ 0x3c3c;
    for (int round = 0; round < 20000; round++) {
        memcpy(mut, img, size);
        int flips = 1 + (int)(df11_test_rand(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(df11_test_rand(&seed) % size);
            uint64_t r = df11_test_rand(&seed);
            mut[at] = (r & 1) ? (uint8_t)(r >> 8) : (uint8_t) "{}[],:\"0123456789-.e "[r % 21];
        }
        df11i_st_model *m = calloc(1, sizeof *m);
        size_t cut =
            (df11_test_rand(&seed) % 8 == 0) ? (size_t)(df11_test_rand(&seed) % size) : size;
        df11_status st = df11i_st_parse(m, mut, cut, "mutant");
        if (st == DF11_OK)
            for (size_t i = 0; i < m->n_tensors; i++) {
                const uint8_t *d = m->tensors[i].data;
                ck_assert(d >= mut && d <= mut + cut);
            }
        df11i_st_close(m);
    }
    free(mut);
    free(img);
}
END_TEST

/* ---- the real model ---- */

START_TEST(test_stories260k)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", DF11_SOURCE_DIR "/../shared/models/stories260K");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "skipping test_stories260k: %s not found\n", path);
        return;
    }
    df11i_st_model *m;
    df11_status st = df11i_st_open(path, &m);
    ck_assert_msg(st == DF11_OK, "%s", df11_last_error_detail());
    ck_assert_uint_eq(m->n_tensors, 2 + 5 * 9);
    for (size_t i = 0; i < m->n_tensors; i++)
        ck_assert_msg(m->tensors[i].dtype == DF11_DTYPE_BF16, "%s", m->tensors[i].name);
    for (int layer = 0; layer < 5; layer++) {
        static const char *const parts[] = { "input_layernorm",  "post_attention_layernorm",
                                             "self_attn.q_proj", "self_attn.k_proj",
                                             "self_attn.v_proj", "self_attn.o_proj",
                                             "mlp.gate_proj",    "mlp.up_proj",
                                             "mlp.down_proj" };
        for (size_t p = 0; p < 9; p++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, parts[p]);
            ck_assert_msg(find(m, name) != NULL, "missing %s", name);
        }
    }
    ck_assert_ptr_null(find(m, "model.layers.5.input_layernorm.weight"));
    ck_assert_ptr_null(find(m, "lm_head.weight")); /* tied embeddings */
    const df11_tensor_source *emb = find(m, "model.embed_tokens.weight");
    ck_assert_ptr_nonnull(emb);
    ck_assert_uint_eq(emb->ndim, 2);
    ck_assert_uint_eq(emb->shape[0], 512);
    ck_assert_uint_eq(emb->shape[1], 64);
    ck_assert_ptr_nonnull(find(m, "model.norm.weight"));
    ck_assert_ptr_nonnull(m->config_json);
    ck_assert_ptr_nonnull(strstr(m->config_json, "\"tie_word_embeddings\": true"));
    for (size_t i = 1; i < m->n_tensors; i++)
        ck_assert((const uint8_t *)m->tensors[i - 1].data < (const uint8_t *)m->tensors[i].data);
    df11i_st_close(m);
}
END_TEST

/* cJSON turns \u0000 into a C string cut short: "a\u0000b" would silently be tensor "a". */
START_TEST(test_hostile_nul_in_name)
{
    ASSERT_PARSE("{" T("a\\u0000b") ":" OK_ENTRY "}", 8, DF11_ERR_SAFETENSORS);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "NUL in tensor name"));
    ASSERT_PARSE("{" T("x") ":" OK_ENTRY ", " T("\\u0000") ":{\"dtype\":\"U8\",\"shape\":[0],"
                                                           "\"data_offsets\":[0,0]}}",
                 8, DF11_ERR_SAFETENSORS);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "NUL in tensor name"));
    /* in any other string too (a dtype "BF16\u0000junk" would read as BF16) */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\\u0000junk\",\"shape\":[2,2],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_SAFETENSORS);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "NUL in a header string"));
    ASSERT_PARSE("{\"__metadata__\":{\"k\":\"v\\u0000\"}," T("a") ":" OK_ENTRY "}", 8,
                 DF11_ERR_SAFETENSORS);
    /* an escaped backslash before "u0000" is no NUL: the name is a\u0000 literally */
    size_t size;
    uint8_t *img =
        make_image("{" T("a\\\\u0000") ":" OK_ENTRY ", " T(
                       "q\\\"\\u0041") ":"
                                       "{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                   8, &size);
    df11i_st_model *m = calloc(1, sizeof *m);
    ck_assert_msg(df11i_st_parse(m, img, size, "test") == DF11_OK, "%s", df11_last_error_detail());
    ck_assert_ptr_nonnull(find(m, "a\\u0000"));
    ck_assert_ptr_nonnull(find(m, "q\"A"));
    df11i_st_close(m);
    free(img);
    /* a raw 0 byte inside a name */
    img = make_image("{" T("ab") ":" OK_ENTRY "}", 8, &size);
    img[8 + 2] = 0;
    m = calloc(1, sizeof *m);
    ck_assert_int_eq(df11i_st_parse(m, img, size, "test"), DF11_ERR_SAFETENSORS);
    ck_assert_uint_eq(m->n_tensors, 0);
    df11i_st_close(m);
    free(img);
}
END_TEST

START_TEST(test_hostile_repeated_fields)
{
    /* one reader takes the first dtype, another the last: refused */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"dtype\":\"U8\",\"shape\":[2,2],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_SAFETENSORS);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "\"dtype\" twice"));
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"shape\":[4],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{\"__metadata__\":{},\"__metadata__\":{}," T("a") ":" OK_ENTRY "}", 8,
                 DF11_ERR_DUPLICATE);
    /* unknown fields are tolerated */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8],"
                            "\"x\":1}}",
                 8, DF11_OK);
}
END_TEST

START_TEST(test_hostile_numbers_at_2_53)
{
    /* 2^53 + 1 parses as 2^53: neither is taken as exact */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[9007199254740993],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_OVERFLOW);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[9007199254740992],"
                            "\"data_offsets\":[0,8]}}",
                 8, DF11_ERR_OVERFLOW);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[0],"
                            "\"data_offsets\":[9007199254740993,9007199254740993]}}",
                 8, DF11_ERR_RANGE);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[0],"
                            "\"data_offsets\":[1e300,1e300]}}",
                 8, DF11_ERR_RANGE);
    /* floats, booleans and strings are not offsets; an integer written as 8e0 is */
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,7.9999]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[false,8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[\"0\",8]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[true],\"data_offsets\":[0,1]}}", 8,
                 DF11_ERR_SAFETENSORS);
    ASSERT_PARSE("{" T("a") ":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8e0]}}", 8,
                 DF11_OK);
}
END_TEST

/* A FIFO where a file is expected fails at once with "not a regular file": as the model
 * file, as config.json, as a shard. alarm() turns a regression (open() waiting for a
 * writer) into a failure instead of a hang. */
START_TEST(test_fifo_is_refused)
{
    df11i_st_model *m = NULL;
    char p[600];
    alarm(20);
    const char *fifo = tmp_path("model.fifo");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(df11i_st_open(fifo, &m), DF11_ERR_IO);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "not a regular file"));
    ck_assert_ptr_null(m);
    unlink(fifo);

    char dir[] = "/tmp/df11-st-fifo-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_shard(p, shard1, 2, 7);
    snprintf(p, sizeof p, "%s/config.json", dir);
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    ck_assert_int_eq(df11i_st_open(dir, &m), DF11_ERR_IO);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "config.json' is not a regular file"));
    remove_folder(dir);

    char *sharded = make_folder(good_index, shard1, 2, shard2, 1);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", sharded);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    ck_assert_int_eq(df11i_st_open(sharded, &m), DF11_ERR_IO);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "not a regular file"));
    remove_folder(sharded);
    alarm(0);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("write_read");
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_write_empty_model);
    tcase_add_test(tc, test_write_failures_leave_nothing);
    tcase_add_test(tc, test_write_fill);
    suite_add_tcase(s, tc);

    tc = tcase_create("folders");
    tcase_add_test(tc, test_folder_index);
    tcase_add_test(tc, test_folder_single);
    tcase_add_test(tc, test_folder_duplicate_across_shards);
    tcase_add_test(tc, test_folder_index_names_twice);
    tcase_add_test(tc, test_folder_bad_shard_names);
    tcase_add_test(tc, test_folder_missing_shard);
    tcase_add_test(tc, test_open_missing);
    tcase_add_test(tc, test_open_truncated);
    tcase_add_test(tc, test_fifo_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_add_test(tc, test_hostile_short);
    tcase_add_test(tc, test_hostile_header_len_past_file);
    tcase_add_test(tc, test_hostile_header_len_absurd);
    tcase_add_test(tc, test_hostile_not_json);
    tcase_add_test(tc, test_hostile_not_object);
    tcase_add_test(tc, test_hostile_entry_not_object);
    tcase_add_test(tc, test_hostile_dtype_missing_or_ill_typed);
    tcase_add_test(tc, test_hostile_dtype_unknown);
    tcase_add_test(tc, test_hostile_shape_missing_or_ill_typed);
    tcase_add_test(tc, test_hostile_negative_dim);
    tcase_add_test(tc, test_hostile_fractional_dim);
    tcase_add_test(tc, test_hostile_size_overflow);
    tcase_add_test(tc, test_hostile_offsets_missing_or_ill_typed);
    tcase_add_test(tc, test_hostile_nbytes_mismatch);
    tcase_add_test(tc, test_hostile_begin_after_end);
    tcase_add_test(tc, test_hostile_offsets_past_data);
    tcase_add_test(tc, test_hostile_overlap);
    tcase_add_test(tc, test_hostile_duplicate_name);
    tcase_add_test(tc, test_hostile_name_not_text);
    tcase_add_test(tc, test_duplicate_across_parses);
    tcase_add_test(tc, test_valid_edge_cases);
    tcase_add_test(tc, test_mutations_do_not_crash);
    tcase_add_test(tc, test_hostile_nul_in_name);
    tcase_add_test(tc, test_hostile_repeated_fields);
    tcase_add_test(tc, test_hostile_numbers_at_2_53);
    suite_add_tcase(s, tc);

    tc = tcase_create("real_model");
    tcase_add_test(tc, test_stories260k);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return df11_test_run(safetensors_suite()); }
