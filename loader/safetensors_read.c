/* Reading safetensors: each file is mmapped and every header field is checked before any
 * pointer into the file is formed: the header is hostile until proven otherwise, so no
 * length, offset or dim is used before it is range-checked. The writer is
 * writer/safetensors_write.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/names.h"
#include "common/utf8.h"
#include "common/util.h"
#include "loader/safetensors.h"

/* Real headers are at most a few MiB even for the largest models; a larger claim is an
 * attack or garbage, and we copy the header, so the cap bounds that allocation too. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_MAX_INDEX ((uint64_t)64 << 20)
#define ST_MAX_CONFIG ((uint64_t)16 << 20)
/* JSON numbers reach us as doubles; above 2^53 they are no longer exact integers. */
#define ST_MAX_EXACT 9007199254740992.0

#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"
#define ST_CONFIG_NAME "config.json"

typedef unsigned long long ull;

/* ---- names storage ----
 * Tensor names must keep their address while model->tensors grows shard by shard, so each
 * df11i_st_parse call puts its names in one chunk; chunks are chained through `prev`, and
 * model->names points at the newest. */

typedef struct names_chunk {
    struct names_chunk *prev;
    char text[];
} names_chunk;

static void names_free_all(char *newest)
{
    names_chunk *c = (names_chunk *)(void *)newest;
    while (c) {
        names_chunk *prev = c->prev;
        free(c);
        c = prev;
    }
}

/* ---- small helpers ---- */

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A JSON number that is a non-negative integer below 2^53. On failure returns the status
 * to report: SAFETENSORS for non-numbers, negatives and fractions, `too_big` for integers
 * we cannot represent exactly (2^53 itself is also what 2^53 + 1 parses to). */
static df11_status json_u64(const cJSON *item, df11_status too_big, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return DF11_ERR_SAFETENSORS;
    double v = item->valuedouble;
    if (!(v >= 0.0)) return DF11_ERR_SAFETENSORS; /* negative or NaN */
    if (v >= ST_MAX_EXACT) return too_big;
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return DF11_ERR_SAFETENSORS; /* a fraction */
    *out = u;
    return DF11_OK;
}

/* Where the first NUL inside a JSON string of `text` is (a raw 0 byte or a \u0000 escape),
 * or -1. cJSON decodes \u0000 into a C string, which silently cuts it there: a tensor
 * "a\u0000b" would be looked up as "a". *top_key says whether the string is a key of the
 * top-level object (a tensor name). The text has already parsed as JSON, so tracking
 * strings and nesting is enough. */
static long long json_find_nul(const char *text, size_t len, bool *top_key)
{
    int depth = 0;
    bool key_next = false; /* the next string at depth 1 is a key */
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '{' || c == '[') {
            depth++;
            key_next = c == '{' && depth == 1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',') {
            key_next = depth == 1;
        } else if (c == '"') {
            *top_key = key_next && depth == 1;
            key_next = false;
            for (i++; i < len && text[i] != '"'; i++) {
                if (text[i] == '\0') return (long long)i;
                if (text[i] != '\\') continue;
                if (i + 5 < len && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0)
                    return (long long)i;
                i++; /* the escaped character, which may be a quote */
            }
        }
    }
    return -1;
}

/* ---- parsing one file image ---- */

typedef struct {
    df11_tensor_source src;
    uint64_t begin, end;
} st_entry;

static int cmp_entry_offset(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* cJSON keeps repeated keys and finds the first; another reader may take the last, so
 * a repeated field means two different tensors to two readers. */
static df11_status check_fields_once(const cJSON *item, const char *label)
{
    static const char *const fields[] = { "dtype", "shape", "data_offsets" };
    int seen[3] = { 0, 0, 0 };
    for (const cJSON *f = item->child; f; f = f->next)
        for (int k = 0; k < 3; k++)
            if (strcmp(f->string, fields[k]) == 0 && seen[k]++)
                return df11i_fail(DF11_ERR_SAFETENSORS, "'%s': tensor '%s' has \"%s\" twice", label,
                                  item->string, fields[k]);
    return DF11_OK;
}

/* An entry's "dtype" and "shape": fills e->src's dtype, ndim and shape; *nbytes is the
 * size they give, checked for overflow. */
static df11_status parse_dtype_shape(const cJSON *item, const char *label, st_entry *e,
                                     uint64_t *nbytes)
{
    const char *name = item->string;
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return df11i_fail(DF11_ERR_SAFETENSORS, "'%s': tensor '%s' has no string \"dtype\"", label,
                          name);
    e->src.dtype = df11_dtype_from_name(dtype->valuestring);
    uint64_t esize = df11_dtype_size(e->src.dtype);
    if (esize == 0)
        return df11i_fail(DF11_ERR_DTYPE, "'%s': tensor '%s' has unknown dtype '%.32s'", label,
                          name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return df11i_fail(DF11_ERR_SAFETENSORS, "'%s': tensor '%s' has no array \"shape\"", label,
                          name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > DF11_MAX_DIMS)
        return df11i_fail(DF11_ERR_SAFETENSORS, "'%s': tensor '%s' has %d dims (at most %d)", label,
                          name, ndim, DF11_MAX_DIMS);
    e->src.ndim = (uint32_t)ndim;
    uint64_t n_el = 1;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        df11_status st = json_u64(dim, DF11_ERR_OVERFLOW, &e->src.shape[d]);
        if (st == DF11_ERR_OVERFLOW)
            return df11i_fail(st, "'%s': tensor '%s': dim %d is %g, too large", label, name, d,
                              dim->valuedouble);
        if (st != DF11_OK)
            return df11i_fail(st, "'%s': tensor '%s': dim %d is not a non-negative integer", label,
                              name, d);
        if (!df11i_mul_ok(n_el, e->src.shape[d], &n_el))
            return df11i_fail(DF11_ERR_OVERFLOW, "'%s': tensor '%s': element count overflows",
                              label, name);
    }
    if (!df11i_mul_ok(n_el, esize, nbytes))
        return df11i_fail(DF11_ERR_OVERFLOW, "'%s': tensor '%s': %llu elements of %s overflow",
                          label, name, (ull)n_el, df11_dtype_name(e->src.dtype));
    return DF11_OK;
}

/* An entry's "data_offsets": [e->begin, e->end) inside the data area, spanning nbytes. */
static df11_status parse_offsets(const cJSON *item, const char *label, uint64_t data_size,
                                 uint64_t nbytes, st_entry *e)
{
    const char *name = item->string;
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return df11i_fail(DF11_ERR_SAFETENSORS,
                          "'%s': tensor '%s' has no \"data_offsets\" array of two numbers", label,
                          name);
    /* An offset above 2^53 is past the end of any file we can map. */
    df11_status st = json_u64(offs->child, DF11_ERR_RANGE, &e->begin);
    if (st == DF11_OK) st = json_u64(offs->child->next, DF11_ERR_RANGE, &e->end);
    if (st == DF11_ERR_RANGE)
        return df11i_fail(st, "'%s': tensor '%s': data offset past the %llu-byte data area", label,
                          name, (ull)data_size);
    if (st != DF11_OK)
        return df11i_fail(st, "'%s': tensor '%s': data_offsets are not non-negative integers",
                          label, name);
    if (e->begin > e->end)
        return df11i_fail(DF11_ERR_RANGE,
                          "'%s': tensor '%s': data_offsets [%llu, %llu] end "
                          "before they begin",
                          label, name, (ull)e->begin, (ull)e->end);
    if (e->end - e->begin != nbytes)
        return df11i_fail(DF11_ERR_SAFETENSORS,
                          "'%s': tensor '%s': data_offsets span %llu "
                          "bytes but shape and dtype need %llu",
                          label, name, (ull)(e->end - e->begin), (ull)nbytes);
    if (e->end > data_size)
        return df11i_fail(DF11_ERR_RANGE,
                          "'%s': tensor '%s': data_offsets [%llu, %llu] past "
                          "the %llu-byte data area",
                          label, name, (ull)e->begin, (ull)e->end, (ull)data_size);
    return DF11_OK;
}

/* Checks one header entry and fills `e` (its name is set by the caller). */
static df11_status parse_entry(const cJSON *item, const char *label, uint64_t data_size,
                               st_entry *e)
{
    if (!cJSON_IsObject(item))
        return df11i_fail(DF11_ERR_SAFETENSORS, "'%s': tensor '%s' is not a JSON object", label,
                          item->string);
    uint64_t nbytes = 0;
    df11_status st = check_fields_once(item, label);
    if (st == DF11_OK) st = parse_dtype_shape(item, label, e, &nbytes);
    if (st == DF11_OK) st = parse_offsets(item, label, data_size, nbytes, e);
    return st;
}

/* The 8-byte header length at the start of the file, checked against the cap and the
 * bytes that follow. */
static df11_status header_length(const uint8_t *file, size_t file_size, const char *label,
                                 uint64_t *hlen)
{
    if (file_size < 8)
        return df11i_fail(DF11_ERR_TRUNCATED,
                          "'%s': %zu bytes, too short for the 8-byte "
                          "header length",
                          label, file_size);
    *hlen = df11i_ld64(file);
    if (*hlen > ST_MAX_HEADER)
        return df11i_fail(DF11_ERR_SAFETENSORS,
                          "'%s': header length %llu is over the %llu MiB "
                          "limit",
                          label, (ull)*hlen, (ull)(ST_MAX_HEADER >> 20));
    if (*hlen > file_size - 8)
        return df11i_fail(DF11_ERR_TRUNCATED,
                          "'%s': header length %llu but only %zu bytes "
                          "follow",
                          label, (ull)*hlen, file_size - 8);
    return DF11_OK;
}

/* The header JSON, hlen bytes at `header`: one JSON object, then nothing but padding
 * whitespace, and no NUL in any string. On success *out is the caller's (cJSON_Delete). */
static df11_status parse_header_json(const uint8_t *header, uint64_t hlen, const char *label,
                                     cJSON **out)
{
    /* cJSON gets a NUL-terminated copy so that no parser path can read past the header,
     * even when it ends exactly at the end of the mapping. */
    char *text = malloc(hlen + 1);
    if (!text) return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %llu-byte header", label, (ull)hlen);
    memcpy(text, header, hlen);
    text[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    df11_status st = DF11_OK;
    if (!root) {
        size_t at = end && end >= text && end <= text + hlen ? (size_t)(end - text) : 0;
        st = df11i_fail(DF11_ERR_SAFETENSORS, "'%s': header is not valid JSON (near byte %zu)",
                        label, at);
        goto out;
    }
    /* The format pads the header with spaces; anything else after the JSON is garbage. */
    for (const char *p = end; p < text + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = df11i_fail(DF11_ERR_SAFETENSORS,
                            "'%s': bytes after the header JSON "
                            "(at byte %zu)",
                            label, (size_t)(p - text));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        st = df11i_fail(DF11_ERR_SAFETENSORS, "'%s': header is not a JSON object", label);
        goto out;
    }
    bool top_key = false;
    long long nul = json_find_nul(text, hlen, &top_key);
    if (nul >= 0) {
        st = df11i_fail(DF11_ERR_SAFETENSORS, "'%s': NUL in %s (header byte %lld)", label,
                        top_key ? "tensor name" : "a header string", nul);
        goto out;
    }
    *out = root;
    root = NULL;
out:
    cJSON_Delete(root);
    free(text);
    return st;
}

/* The tensor entries of a header (all but "__metadata__", which may appear once) and the
 * bytes their names take with their NULs. */
static df11_status count_entries(const cJSON *root, const char *label, size_t *n_new,
                                 size_t *name_bytes)
{
    size_t n_meta = 0;
    *n_new = *name_bytes = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            n_meta++;
            continue;
        }
        ++*n_new;
        *name_bytes += strlen(it->string) + 1;
    }
    if (n_meta > 1)
        return df11i_fail(DF11_ERR_DUPLICATE, "'%s': \"__metadata__\" appears %zu times", label,
                          n_meta);
    return DF11_OK;
}

/* Parses every tensor entry of `root` into entries[] in header order: names copied to
 * `names`, data pointers into `data`. */
static df11_status parse_entries(const cJSON *root, const char *label, const uint8_t *data,
                                 uint64_t data_size, st_entry *entries, char *names)
{
    size_t k = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        st_entry *e = &entries[k++];
        df11_status st = parse_entry(it, label, data_size, e);
        if (st != DF11_OK) return st;
        size_t len = strlen(it->string) + 1;
        /* a name goes into the .df11 index and onto terminals as it is: text only (the
         * header's JSON may escape any code point, a control character included) */
        if (!df11i_utf8_text(it->string, len - 1))
            return df11i_fail(DF11_ERR_CORRUPT,
                              "'%s': a tensor name is not UTF-8 text (or holds a control "
                              "character)",
                              label);
        memcpy(names, it->string, len);
        e->src.name = names;
        names += len;
        e->src.data = data + e->begin;
    }
    return DF11_OK;
}

/* Sorts the entries by offset, which gives the (file, offset) order across shards, since
 * shards are parsed in order, and puts overlaps next to each other; then refuses them. */
static df11_status sort_check_overlaps(st_entry *entries, size_t n, const char *label)
{
    qsort(entries, n, sizeof *entries, cmp_entry_offset);
    const st_entry *reach = NULL; /* the non-empty tensor reaching furthest so far */
    for (size_t i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        if (e->begin == e->end) continue; /* empty tensors take no bytes */
        if (reach && e->begin < reach->end)
            return df11i_fail(DF11_ERR_RANGE,
                              "'%s': tensors '%s' [%llu, %llu] and '%s' "
                              "[%llu, %llu] overlap",
                              label, reach->src.name, (ull)reach->begin, (ull)reach->end,
                              e->src.name, (ull)e->begin, (ull)e->end);
        if (!reach || e->end > reach->end) reach = e;
    }
    return DF11_OK;
}

/* Appends the tensors of one parsed header to `model`, or leaves it as it was. */
static df11_status add_tensors(df11i_st_model *model, const cJSON *root, const uint8_t *data,
                               uint64_t data_size, const char *label)
{
    size_t n_new, name_bytes;
    df11_status st = count_entries(root, label, &n_new, &name_bytes);
    if (st != DF11_OK || n_new == 0) return st; /* a valid file with no tensors adds nothing */

    size_t n_old = model->n_tensors, n_all = n_old + n_new;
    st_entry *entries = calloc(n_new, sizeof *entries);
    names_chunk *chunk = malloc(sizeof *chunk + name_bytes);
    df11_tensor_source *grown = realloc(model->tensors, n_all * sizeof *grown);
    if (grown) model->tensors = grown; /* a larger array with n_tensors unchanged is harmless */
    if (!entries || !chunk || !grown) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu tensors", label, n_new);
        goto out;
    }
    if ((st = parse_entries(root, label, data, data_size, entries, chunk->text)) != DF11_OK)
        goto out;
    if ((st = sort_check_overlaps(entries, n_new, label)) != DF11_OK) goto out;
    for (size_t i = 0; i < n_new; i++) model->tensors[n_old + i] = entries[i].src;
    if ((st = df11i_names_unique(model->tensors, n_all, label)) != DF11_OK) goto out;

    chunk->prev = (names_chunk *)(void *)model->names;
    model->names = (char *)chunk;
    chunk = NULL;
    model->n_tensors = n_all;
out:
    free(chunk);
    free(entries);
    return st;
}

df11_status df11i_st_parse(df11i_st_model *model, const uint8_t *file, size_t file_size,
                           const char *file_label)
{
    const char *label = file_label ? file_label : "<memory>";
    if (!model || (!file && file_size))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_st_parse: NULL model or file");
    uint64_t hlen = 0;
    df11_status st = header_length(file, file_size, label, &hlen);
    if (st != DF11_OK) return st;
    cJSON *root = NULL;
    if ((st = parse_header_json(file + 8, hlen, label, &root)) != DF11_OK) return st;
    st = add_tensors(model, root, file + 8 + hlen, file_size - 8 - hlen, label);
    cJSON_Delete(root);
    return st;
}

/* ---- files and folders ---- */

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t n = a;
    if (a == 0 || dir[a - 1] != '/') p[n++] = '/';
    memcpy(p + n, name, b + 1);
    return p;
}

static bool is_regular(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Reads a whole small file into a NUL-terminated buffer. `too_big` is the status to give a
 * file over `cap` bytes. */
static df11_status read_text(const char *path, uint64_t cap, df11_status too_big, char **out,
                             size_t *len)
{
    *out = NULL;
    int fd;
    uint64_t fsize;
    df11_status st = df11i_open_regular(path, 0, &fd, &fsize); /* a FIFO must not block */
    if (st != DF11_OK) return st;
    char *buf = NULL;
    if (fsize > cap) {
        st = df11i_fail(too_big, "'%s' is %llu bytes, over the %llu MiB limit", path, (ull)fsize,
                        (ull)(cap >> 20));
        goto out;
    }
    size_t size = (size_t)fsize, got = 0;
    buf = malloc(size + 1);
    if (!buf) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu bytes", path, size);
        goto out;
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = df11i_fail_errno(DF11_ERR_IO, errno, "cannot read '%s'", path);
            goto out;
        }
        if (r == 0) {
            st = df11i_fail(DF11_ERR_TRUNCATED, "'%s' shrank while being read", path);
            goto out;
        }
        got += (size_t)r;
    }
    buf[size] = '\0';
    *out = buf;
    *len = size;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return st;
}

static df11_status map_and_parse(df11i_st_model *model, const char *path)
{
    int fd;
    uint64_t fsize;
    df11_status st = df11i_open_regular(path, 0, &fd, &fsize); /* a FIFO must not block */
    if (st != DF11_OK) return st;
    if (fsize > SIZE_MAX) {
        close(fd);
        return df11i_fail(DF11_ERR_RANGE, "'%s': %llu bytes do not fit the address space", path,
                          (ull)fsize);
    }
    size_t size = (size_t)fsize;
    if (size < 8) { /* mmap refuses length 0; the parser gives the real reason */
        close(fd);
        uint8_t small[8] = { 0 };
        return df11i_st_parse(model, small, size, path);
    }
    struct df11i_st_map *maps = realloc(model->maps, (model->n_maps + 1) * sizeof *maps);
    if (!maps) {
        close(fd);
        return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': map table", path);
    }
    model->maps = maps;
    void *base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file */
    if (base == MAP_FAILED) return df11i_fail_errno(DF11_ERR_IO, err, "cannot mmap '%s'", path);
    /* Recorded before parsing so that df11i_st_close unmaps it whatever happens next. */
    maps[model->n_maps++] = (struct df11i_st_map){ base, size };
    return df11i_st_parse(model, base, size, path);
}

typedef struct {
    const char *name;
    size_t shard;
} st_owner;

static int cmp_owner(const void *a, const void *b)
{
    return strcmp(((const st_owner *)a)->name, ((const st_owner *)b)->name);
}

/* A shard name comes from a file we do not trust and is joined to a folder path: it must
 * stay inside that folder. */
static bool shard_name_ok(const char *s)
{
    return s[0] != '\0' && !strchr(s, '/') && !strstr(s, "..");
}

/* Reads and parses the index: a JSON object whose "weight_map" object names at least one
 * tensor, with no NUL in any name (see json_find_nul). On success *root is the caller's
 * (cJSON_Delete) and *map points into it. */
static df11_status read_index(const char *index_path, cJSON **root_out, const cJSON **map_out)
{
    char *text = NULL;
    size_t len = 0;
    df11_status st = read_text(index_path, ST_MAX_INDEX, DF11_ERR_SAFETENSORS, &text, &len);
    if (st != DF11_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    bool top_key;
    long long nul;
    if (!cJSON_IsObject(root) || !cJSON_IsObject(map))
        st = df11i_fail(DF11_ERR_SAFETENSORS,
                        "'%s': not a JSON object with a \"weight_map\" "
                        "object",
                        index_path);
    else if ((nul = json_find_nul(text, len, &top_key)) >= 0)
        st = df11i_fail(DF11_ERR_SAFETENSORS, "'%s': NUL in a name (byte %lld)", index_path, nul);
    else if (cJSON_GetArraySize(map) == 0)
        st = df11i_fail(DF11_ERR_SAFETENSORS, "'%s': weight_map names no tensors", index_path);
    free(text);
    if (st != DF11_OK) {
        cJSON_Delete(root);
        return st;
    }
    *root_out = root;
    *map_out = map;
    return DF11_OK;
}

/* The weight map's entries as (tensor, shard name) pairs: wm[i] and shards[i], in map
 * order. Every shard name must be a string that stays inside the folder, and no tensor
 * may be named twice (cJSON keeps repeated keys, so one tensor could be claimed by two
 * shards). wm comes back sorted by name. */
static df11_status read_weight_map(const cJSON *map, const char *index_path, st_owner *wm,
                                   const char **shards)
{
    size_t n = 0;
    for (const cJSON *it = map->child; it; it = it->next, n++) {
        if (!cJSON_IsString(it))
            return df11i_fail(DF11_ERR_SAFETENSORS,
                              "'%s': weight_map entry '%s' is not a "
                              "string",
                              index_path, it->string);
        if (!shard_name_ok(it->valuestring))
            return df11i_fail(DF11_ERR_SAFETENSORS,
                              "'%s': shard name '%.200s' (of tensor "
                              "'%s') is empty or leaves the folder",
                              index_path, it->valuestring, it->string);
        wm[n] = (st_owner){ it->string, 0 };
        shards[n] = it->valuestring;
    }
    qsort(wm, n, sizeof *wm, cmp_owner);
    for (size_t i = 1; i < n; i++)
        if (strcmp(wm[i - 1].name, wm[i].name) == 0)
            return df11i_fail(DF11_ERR_DUPLICATE, "'%s': weight_map names tensor '%s' twice",
                              index_path, wm[i].name);
    return DF11_OK;
}

/* Sorts the n shard names and keeps each once, in name order (model-00001-of-00004 ...
 * sorts by number); returns how many remain. */
static size_t unique_shards(const char **shards, size_t n)
{
    qsort(shards, n, sizeof *shards, cmp_str_ptr);
    size_t n_shards = 0;
    for (size_t i = 0; i < n; i++)
        if (n_shards == 0 || strcmp(shards[n_shards - 1], shards[i]) != 0)
            shards[n_shards++] = shards[i];
    return n_shards;
}

/* Maps and parses each shard of `dir` in order; shard s's tensors are
 * model->tensors[shard_start[s], shard_start[s + 1]). */
static df11_status parse_shards(df11i_st_model *model, const char *dir, const char *index_path,
                                const char **shards, size_t n_shards, size_t *shard_start)
{
    df11_status st = DF11_OK;
    for (size_t s = 0; s < n_shards && st == DF11_OK; s++) {
        shard_start[s] = model->n_tensors;
        char *shard_path = path_join(dir, shards[s]);
        if (!shard_path) return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': shard path", index_path);
        st = map_and_parse(model, shard_path);
        free(shard_path);
    }
    shard_start[n_shards] = model->n_tensors;
    return st;
}

/* Every tensor the index names must be in the shard it names. Tensors a shard holds
 * beyond the index are kept: they are in the files, and unique. */
static df11_status check_owners(const df11i_st_model *model, const cJSON *map,
                                const char *index_path, const char **shards, size_t n_shards,
                                const size_t *shard_start)
{
    size_t n_have = model->n_tensors;
    st_owner *have = malloc((n_have ? n_have : 1) * sizeof *have);
    if (!have) return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu tensors", index_path, n_have);
    for (size_t s = 0; s < n_shards; s++)
        for (size_t t = shard_start[s]; t < shard_start[s + 1]; t++)
            have[t] = (st_owner){ model->tensors[t].name, s };
    qsort(have, n_have, sizeof *have, cmp_owner);
    df11_status st = DF11_OK;
    for (const cJSON *it = map->child; it && st == DF11_OK; it = it->next) {
        st_owner key = { it->string, 0 };
        const st_owner *h = bsearch(&key, have, n_have, sizeof *have, cmp_owner);
        if (!h || strcmp(shards[h->shard], it->valuestring) != 0)
            st = df11i_fail(DF11_ERR_SAFETENSORS, "'%s': tensor '%s' is not in shard '%s'",
                            index_path, it->string, it->valuestring);
    }
    free(have);
    return st;
}

static df11_status open_index(df11i_st_model *model, const char *dir, const char *index_path)
{
    cJSON *root;
    const cJSON *map;
    df11_status st = read_index(index_path, &root, &map);
    if (st != DF11_OK) return st;
    size_t n_wm = (size_t)cJSON_GetArraySize(map), n_shards;
    st_owner *wm = malloc(n_wm * sizeof *wm);
    const char **shards = malloc(n_wm * sizeof *shards);
    size_t *shard_start = NULL;
    if (!wm || !shards) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu entries", index_path, n_wm);
        goto out;
    }
    if ((st = read_weight_map(map, index_path, wm, shards)) != DF11_OK) goto out;
    n_shards = unique_shards(shards, n_wm);
    shard_start = malloc((n_shards + 1) * sizeof *shard_start);
    if (!shard_start) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu shards", index_path, n_shards);
        goto out;
    }
    st = parse_shards(model, dir, index_path, shards, n_shards, shard_start);
    if (st == DF11_OK) st = check_owners(model, map, index_path, shards, n_shards, shard_start);
out:
    free(shard_start);
    free(shards);
    free(wm);
    cJSON_Delete(root);
    return st;
}

static df11_status open_folder(df11i_st_model *model, const char *dir)
{
    char *index = path_join(dir, ST_INDEX_NAME);
    char *single = path_join(dir, ST_SINGLE_NAME);
    df11_status st;
    if (!index || !single) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': paths", dir);
        goto out;
    }
    if (is_regular(index))
        st = open_index(model, dir, index);
    else if (is_regular(single))
        st = map_and_parse(model, single);
    else
        st = df11i_fail_errno(DF11_ERR_IO, ENOENT,
                              "'%s' has neither " ST_SINGLE_NAME " nor " ST_INDEX_NAME, dir);
    if (st == DF11_OK) st = df11i_st_read_config(model, dir);
out:
    free(index);
    free(single);
    return st;
}

df11_status df11i_st_add_file(df11i_st_model *model, const char *path)
{
    if (!model || !path)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_st_add_file: NULL argument");
    return map_and_parse(model, path);
}

df11_status df11i_st_read_config(df11i_st_model *model, const char *dir)
{
    if (!model || !dir || model->config_json)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "df11i_st_read_config: NULL argument or read twice");
    char *config = path_join(dir, ST_CONFIG_NAME);
    if (!config) return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': paths", dir);
    df11_status st = DF11_OK;
    if (access(config, F_OK) == 0)
        st = read_text(config, ST_MAX_CONFIG, DF11_ERR_UNSUPPORTED, &model->config_json,
                       &model->config_len);
    free(config);
    return st;
}

df11_status df11i_st_open(const char *path, df11i_st_model **out)
{
    if (!path || !out) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_st_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return df11i_fail_errno(DF11_ERR_IO, errno, "cannot open '%s'", path);
    df11i_st_model *model = calloc(1, sizeof *model);
    if (!model) return df11i_fail(DF11_ERR_NO_MEMORY, "'%s': model", path);
    df11_status st = S_ISDIR(sb.st_mode) ? open_folder(model, path) : map_and_parse(model, path);
    if (st != DF11_OK) {
        df11i_st_close(model);
        return st;
    }
    *out = model;
    return DF11_OK;
}

void df11i_st_close(df11i_st_model *model)
{
    if (!model) return;
    for (size_t i = 0; i < model->n_maps; i++) munmap(model->maps[i].base, model->maps[i].size);
    free(model->maps);
    free(model->tensors);
    free(model->config_json);
    names_free_all(model->names);
    free(model);
}
