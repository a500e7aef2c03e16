/* The path-level entry points: compress a safetensors file, a model folder or a DFloat11
 * folder (decoded module by module as its groups are written), and write a .df11 file
 * back out as safetensors, streamed group by group (never the whole model in
 * memory). */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "df11/compress.h"
#include "df11/file.h"
#include "loader/dfloat11.h"
#include "loader/safetensors.h"
#include "writer/container_write.h"
#include "writer/safetensors_write.h"

df11_status df11_compress_path(const char *in_path, const char *out_path,
                               const df11_compress_options *options, df11_compress_summary *summary)
{
    if (!in_path || !out_path)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_compress_path: NULL path");
    /* The option ranges, before a large input is opened (df11_compress_tensors checks
     * them again for its own callers). */
    if (options && options->max_code_len > DF11_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_INVALID_ARG, "max code length %u not in 1..%d",
                          options->max_code_len, DF11_MAX_CODE_LEN);
    if (options &&
        (options->lane_symbols % DF11_GROUP || options->lane_symbols > DF11_MAX_LANE_SYMBOLS))
        return df11i_fail(DF11_ERR_INVALID_ARG, "lane symbols %u: want a multiple of %d in %d..%d",
                          options->lane_symbols, DF11_GROUP, DF11_GROUP, DF11_MAX_LANE_SYMBOLS);
    if (df11i_dfl_is_folder(in_path)) {
        df11i_dfl_model *d;
        df11_status st = df11i_dfl_open(in_path, options ? options->n_threads : 0, &d);
        if (st != DF11_OK) return st;
        st = df11i_compress_tensors_stream(out_path, d->tensors, d->n_tensors, d->config_json,
                                           d->config_len, options, summary, df11i_dfl_tensor_data,
                                           d);
        df11i_dfl_close(d);
        return st;
    }
    df11i_st_model *m;
    df11_status st = df11i_st_open(in_path, &m);
    if (st != DF11_OK) return st;
    st = df11_compress_tensors(out_path, m->tensors, m->n_tensors, m->config_json,
                               m->config_json ? m->config_len : 0, options, summary);
    df11i_st_close(m);
    return st;
}

/* df11_decompress_path's source for the safetensors writer: tensor t's bytes out of its
 * group, decoded into `decoded` when the writer first asks for one of the group's
 * tensors. Tensors of a group are consecutive, so each group is decoded once. */
typedef struct decompress_run {
    const df11_file *f;
    const df11_decompress_options *o;
    void *payload, *decoded;
    uint32_t group; /* the one in `decoded`, UINT32_MAX for none */
    df11_progress p;
} decompress_run;

static void report(decompress_run *r)
{
    if (r->o->progress) r->o->progress(r->o->progress_ctx, &r->p);
}

static df11_status tensor_data(void *ctx, size_t index, uint64_t nbytes, const void **data)
{
    decompress_run *r = ctx;
    const df11_tensor_info *ti = df11_file_tensor(r->f, (uint32_t)index);
    const df11_group_info *gi = df11_file_group(r->f, ti->group);
    /* df11_file_open checked the index; this keeps a read past the buffer impossible. */
    if (ti->decoded_offset > gi->decoded_size || nbytes > gi->decoded_size - ti->decoded_offset)
        return df11i_fail(DF11_ERR_CORRUPT, "tensor '%s' lies outside its group", ti->name);
    if (ti->group != r->group) {
        if (r->group != UINT32_MAX) {
            r->p.groups_done++;
            r->p.bytes_done += df11_file_group(r->f, r->group)->decoded_size;
            report(r);
        }
        r->group = UINT32_MAX; /* until decoded whole */
        df11_status st = df11_file_read_group(r->f, ti->group, r->payload);
        if (st == DF11_OK)
            st = df11_group_decode_host(r->f, ti->group, r->payload, r->decoded, r->o->n_threads);
        if (st != DF11_OK) return st;
        r->group = ti->group;
    }
    *data = (const uint8_t *)r->decoded + ti->decoded_offset;
    return DF11_OK;
}

df11_status df11_decompress_path(const char *df11_path, const char *out_path,
                                 const df11_decompress_options *options)
{
    if (!df11_path || !out_path)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_decompress: NULL path");
    df11_decompress_options none = { 0 };
    df11_file *f;
    df11_status st = df11_file_open(df11_path, &f);
    if (st != DF11_OK) return st;
    uint32_t nt = df11_file_n_tensors(f), ng = df11_file_n_groups(f);
    decompress_run r = { .f = f, .o = options ? options : &none, .group = UINT32_MAX };
    r.p.groups_total = ng;
    /* One buffer each for the largest payload and the largest decoded group: the peak. */
    uint64_t max_payload = 1, max_decoded = 1;
    for (uint32_t g = 0; g < ng; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        r.p.bytes_total += gi->decoded_size;
        if (gi->payload_size > max_payload) max_payload = gi->payload_size;
        if (gi->decoded_size > max_decoded) max_decoded = gi->decoded_size;
    }
    df11_tensor_source *src = calloc(nt ? nt : 1, sizeof *src);
    r.payload = malloc(max_payload);
    r.decoded = malloc(max_decoded);
    if (!src || !r.payload || !r.decoded) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': buffers for a %llu-byte group", df11_path,
                        (unsigned long long)max_decoded);
        goto done;
    }
    for (uint32_t t = 0; t < nt; t++) {
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        src[t] = (df11_tensor_source){ .name = ti->name, .dtype = ti->dtype, .ndim = ti->ndim };
        memcpy(src[t].shape, ti->shape, sizeof src[t].shape);
    }
    st = df11i_st_write_stream(out_path, src, nt, NULL, tensor_data, &r);
    if (st == DF11_OK) {
        r.p.groups_done = ng; /* groups of empty tensors only were never asked for */
        r.p.bytes_done = r.p.bytes_total;
        report(&r);
    }
done:
    free(r.decoded);
    free(r.payload);
    free(src);
    df11_file_close(f);
    return st;
}

df11_status df11_decompress_to_safetensors(const char *df11_path, const char *out_path,
                                           int n_threads)
{
    df11_decompress_options o = { .n_threads = n_threads };
    return df11_decompress_path(df11_path, out_path, &o);
}
