/* The path-level entry points: compress a safetensors file or model folder, and write a
 * .df11 file back out as safetensors. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "df11/compress.h"
#include "df11/file.h"
#include "loader/safetensors.h"
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
    df11i_st_model *m;
    df11_status st = df11i_st_open(in_path, &m);
    if (st != DF11_OK) return st;
    st = df11_compress_tensors(out_path, m->tensors, m->n_tensors, m->config_json,
                               m->config_json ? m->config_len : 0, options, summary);
    df11i_st_close(m);
    return st;
}

df11_status df11_decompress_to_safetensors(const char *df11_path, const char *out_path,
                                           int n_threads)
{
    if (!df11_path || !out_path)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_decompress: NULL path");
    df11_file *f;
    df11_status st = df11_file_open(df11_path, &f);
    if (st != DF11_OK) return st;
    uint32_t nt = df11_file_n_tensors(f), ng = df11_file_n_groups(f);
    uint64_t total = 0;
    for (uint32_t g = 0; g < ng; g++) total += df11_file_group(f, g)->decoded_size;
    /* Decoded groups are kept until the safetensors file is written in one go. */
    uint8_t *decoded = malloc(total ? total : 1);
    df11_tensor_source *src = calloc(nt ? nt : 1, sizeof *src);
    void *payload = NULL;
    if (!decoded || !src) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "%llu bytes", (unsigned long long)total);
        goto done;
    }
    uint64_t at = 0;
    for (uint32_t g = 0; g < ng && st == DF11_OK; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        free(payload);
        if (!(payload = malloc(gi->payload_size ? gi->payload_size : 1))) {
            st = df11i_fail(DF11_ERR_NO_MEMORY, "payload");
            break;
        }
        if ((st = df11_file_read_group(f, g, payload)) != DF11_OK) break;
        if ((st = df11_group_decode_host(f, g, payload, decoded + at, n_threads)) != DF11_OK) break;
        for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
            const df11_tensor_info *ti = df11_file_tensor(f, t);
            src[t] = (df11_tensor_source){ .name = ti->name,
                                           .dtype = ti->dtype,
                                           .ndim = ti->ndim,
                                           .data = decoded + at + ti->decoded_offset };
            memcpy(src[t].shape, ti->shape, sizeof src[t].shape);
        }
        at += gi->decoded_size;
    }
    if (st == DF11_OK) st = df11i_st_write(out_path, src, nt, NULL);
done:
    free(payload);
    free(src);
    free(decoded);
    df11_file_close(f);
    return st;
}
