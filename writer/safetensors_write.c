/* Writing safetensors (https://huggingface.co/docs/safetensors). The header is built with
 * cJSON, sizes as plain integers; output goes through common/atomic_file.h, so the target
 * appears only when every byte is out. The reader is loader/safetensors_read.c. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/names.h"
#include "common/util.h"
#include "writer/safetensors_write.h"

typedef unsigned long long ull;

static cJSON *json_u64_raw(uint64_t v)
{
    /* Written as plain integers: cJSON's doubles would turn large sizes into 1e+16. */
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (ull)v);
    return cJSON_CreateRaw(buf);
}

/* Adds `metadata_json` to the header as "__metadata__": it must be a JSON object of
 * strings. */
static df11_status add_metadata(cJSON *root, const char *metadata_json)
{
    cJSON *meta = cJSON_Parse(metadata_json);
    bool ok = cJSON_IsObject(meta);
    for (const cJSON *it = ok ? meta->child : NULL; it; it = it->next)
        ok = ok && cJSON_IsString(it);
    if (!ok) {
        cJSON_Delete(meta);
        return df11i_fail(DF11_ERR_INVALID_ARG, "safetensors metadata must be a JSON object "
                                                "of strings");
    }
    if (!cJSON_AddItemToObject(root, "__metadata__", meta)) {
        cJSON_Delete(meta);
        return DF11_ERR_NO_MEMORY; /* the caller says for what */
    }
    return DF11_OK;
}

/* Adds tensor t's entry, its data at [offset, offset + nbytes); false when out of memory
 * (nothing half-built stays behind). */
static bool add_tensor_entry(cJSON *root, const df11_tensor_source *t, uint64_t offset,
                             uint64_t nbytes)
{
    cJSON *obj = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    cJSON *offs = cJSON_CreateArray();
    bool ok = obj && shape && offs;
    ok = ok && cJSON_AddStringToObject(obj, "dtype", df11_dtype_name(t->dtype));
    for (uint32_t d = 0; ok && d < t->ndim; d++) {
        cJSON *v = json_u64_raw(t->shape[d]);
        ok = v && cJSON_AddItemToArray(shape, v);
        if (!ok) cJSON_Delete(v);
    }
    cJSON *b = ok ? json_u64_raw(offset) : NULL, *e = ok ? json_u64_raw(offset + nbytes) : NULL;
    ok = ok && b && e && cJSON_AddItemToArray(offs, b);
    if (ok) b = NULL;
    ok = ok && cJSON_AddItemToArray(offs, e);
    if (ok) e = NULL;
    cJSON_Delete(b);
    cJSON_Delete(e);
    ok = ok && cJSON_AddItemToObject(obj, "shape", shape);
    if (ok) shape = NULL;
    ok = ok && cJSON_AddItemToObject(obj, "data_offsets", offs);
    if (ok) offs = NULL;
    ok = ok && cJSON_AddItemToObject(root, t->name, obj);
    if (!ok) {
        cJSON_Delete(shape);
        cJSON_Delete(offs);
        cJSON_Delete(obj);
    }
    return ok;
}

/* Builds the header JSON text from the tensors and their sizes `nbytes[i]`. */
static df11_status build_header(const df11_tensor_source *tensors, size_t n,
                                const char *metadata_json, const uint64_t *nbytes, char **out)
{
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return df11i_fail(DF11_ERR_NO_MEMORY, "safetensors header");
    df11_status st = metadata_json ? add_metadata(root, metadata_json) : DF11_OK;
    uint64_t offset = 0;
    for (size_t i = 0; st == DF11_OK && i < n; i++) {
        if (!add_tensor_entry(root, &tensors[i], offset, nbytes[i])) st = DF11_ERR_NO_MEMORY;
        offset += nbytes[i];
    }
    if (st == DF11_OK && !(*out = cJSON_PrintUnformatted(root))) st = DF11_ERR_NO_MEMORY;
    if (st == DF11_ERR_NO_MEMORY)
        st = df11i_fail(DF11_ERR_NO_MEMORY, "safetensors header for %zu tensors", n);
    cJSON_Delete(root);
    return st;
}

/* Argument checks shared by both writers; fills nbytes[] and the largest size. */
static df11_status check_tensors(const df11_tensor_source *tensors, size_t n, bool need_data,
                                 uint64_t *nbytes, uint64_t *largest)
{
    uint64_t total = 0;
    *largest = 0;
    for (size_t i = 0; i < n; i++) {
        const df11_tensor_source *t = &tensors[i];
        if (!t->name || strcmp(t->name, "__metadata__") == 0)
            return df11i_fail(DF11_ERR_INVALID_ARG, "tensor %zu: missing or reserved name", i);
        uint64_t size = df11_dtype_size(t->dtype);
        if (size == 0)
            return df11i_fail(DF11_ERR_DTYPE, "tensor '%s': dtype %d", t->name, (int)t->dtype);
        if (t->ndim > DF11_MAX_DIMS)
            return df11i_fail(DF11_ERR_INVALID_ARG, "tensor '%s': %u dims", t->name, t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            if (!df11i_mul_ok(size, t->shape[d], &size))
                return df11i_fail(DF11_ERR_OVERFLOW, "tensor '%s': size overflows", t->name);
        if (!df11i_add_ok(total, size, &total))
            return df11i_fail(DF11_ERR_OVERFLOW, "tensor '%s': file size overflows", t->name);
        if (need_data && size > 0 && !t->data)
            return df11i_fail(DF11_ERR_INVALID_ARG, "tensor '%s': NULL data", t->name);
        nbytes[i] = size;
        if (size > *largest) *largest = size;
    }
    return df11i_names_unique(tensors, n, "safetensors output");
}

/* The one writer under the three entry points: `data` NULL takes tensors[i].data. */
static df11_status write_tensors(const char *path, const df11_tensor_source *tensors, size_t n,
                                 const char *metadata_json, df11i_st_data_fn data, void *ctx)
{
    if (!path || (n && !tensors))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_st_write: NULL path or tensors");
    uint64_t *nbytes = malloc((n ? n : 1) * sizeof *nbytes), largest = 0;
    char *header = NULL;
    df11i_atomic_file out = { .fd = -1, .dir_fd = -1, .slot = -1 };
    df11_status st = DF11_OK;
    if (!nbytes) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': %zu tensors", path, n);
        goto out;
    }
    st = check_tensors(tensors, n, data == NULL, nbytes, &largest);
    if (st == DF11_OK) st = build_header(tensors, n, metadata_json, nbytes, &header);
    if (st != DF11_OK) goto out;

    /* The data area must start 8-byte aligned so that readers can map tensors in place. */
    size_t hlen = strlen(header);
    size_t padded = (size_t)df11i_align_up(hlen, 8);
    char *grown = realloc(header, padded);
    if (!grown) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': header", path);
        goto out;
    }
    header = grown;
    memset(header + hlen, ' ', padded - hlen);

    if ((st = df11i_atomic_file_begin(&out, path)) != DF11_OK) goto out;
    uint8_t len_le[8];
    df11i_st64(len_le, padded);
    st = df11i_atomic_file_write(&out, len_le, 8);
    if (st == DF11_OK) st = df11i_atomic_file_write(&out, header, padded);
    free(header); /* a large model's header need not stay while its data goes out */
    header = NULL;
    for (size_t i = 0; st == DF11_OK && i < n; i++) {
        if (nbytes[i] == 0) continue;
        const void *p = tensors[i].data;
        if (data && (st = data(ctx, i, nbytes[i], &p)) != DF11_OK) break;
        st = df11i_atomic_file_write(&out, p, (size_t)nbytes[i]);
    }
    if (st == DF11_OK) st = df11i_atomic_file_commit(&out);
out:
    df11i_atomic_file_abort(&out);
    free(header);
    free(nbytes);
    return st;
}

df11_status df11i_st_write_stream(const char *path, const df11_tensor_source *tensors, size_t n,
                                  const char *metadata_json, df11i_st_data_fn data, void *ctx)
{
    if (!data) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_st_write_stream: NULL data");
    return write_tensors(path, tensors, n, metadata_json, data, ctx);
}

/* write_fill as a stream: one buffer, the largest tensor's size, filled per tensor. */
typedef struct fill_stream {
    df11i_st_fill_fn fill;
    void *ctx, *buf;
    uint64_t cap;
} fill_stream;

static df11_status fill_data(void *ctx, size_t index, uint64_t nbytes, const void **data)
{
    fill_stream *fs = ctx;
    if (nbytes > fs->cap) {
        free(fs->buf); /* not realloc: the old bytes need no copy */
        if (!(fs->buf = malloc(nbytes))) {
            fs->cap = 0;
            return df11i_fail(DF11_ERR_NO_MEMORY, "%llu-byte tensor buffer", (ull)nbytes);
        }
        fs->cap = nbytes;
    }
    *data = fs->buf;
    return fs->fill(fs->ctx, index, fs->buf, nbytes);
}

df11_status df11i_st_write_fill(const char *path, const df11_tensor_source *tensors, size_t n,
                                const char *metadata_json, df11i_st_fill_fn fill, void *ctx)
{
    if (!fill) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_st_write_fill: NULL fill");
    fill_stream fs = { .fill = fill, .ctx = ctx };
    df11_status st = write_tensors(path, tensors, n, metadata_json, fill_data, &fs);
    free(fs.buf);
    return st;
}

df11_status df11i_st_write(const char *path, const df11_tensor_source *tensors, size_t n,
                           const char *metadata_json)
{
    return write_tensors(path, tensors, n, metadata_json, NULL, NULL);
}
