/* Writing a .df11 container: tensors are grouped, each group's payload is built in memory
 * (BF16 tensors encoded, others copied), check-summed and written at its 4 KiB-aligned
 * place; the index goes in last. The output appears only after the whole run succeeded
 * (common/atomic_file.h: a temporary file, fsynced and renamed over it). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "codec/codec.h"
#include "codec/fixed.h"
#include "common/atomic_file.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/names.h"
#include "common/parallel.h"
#include "common/utf8.h"
#include "common/util.h"
#include "df11/compress.h"
#include "loader/format.h"
#include "writer/container_write.h"

typedef struct {
    const df11_tensor_source *src;
    const void *data; /* src->data, or what the data callback gave while it is encoded */
    uint64_t n_elements, nbytes;
    int32_t layer; /* -1 for a non-layer tensor */
    uint32_t group;
} tensor_plan;

typedef struct {
    char name[256];
    int32_t layer;
    uint32_t first, count; /* into the sorted tensor order */
} group_plan;

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const tensor_plan *const *)a)->src->name,
                  (*(const tensor_plan *const *)b)->src->name);
}

/* Checks the sources and sizes; fills plans. */
static df11_status plan_tensors(const df11_tensor_source *t, size_t n, const char *prefix,
                                bool have_data_fn, tensor_plan *plans)
{
    for (size_t i = 0; i < n; i++) {
        const df11_tensor_source *s = &t[i];
        if (!s->name || !s->name[0] || strlen(s->name) > UINT16_MAX)
            return df11i_fail(DF11_ERR_INVALID_ARG, "tensor %zu has no usable name", i);
        /* readers refuse the file otherwise (loader/container_read.c) */
        if (!df11i_utf8_text(s->name, strlen(s->name)))
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "tensor %zu: its name is not UTF-8 text (or holds a control "
                              "character)",
                              i);
        size_t es = df11_dtype_size(s->dtype);
        if (!es) return df11i_fail(DF11_ERR_DTYPE, "tensor '%s': dtype %d", s->name, (int)s->dtype);
        if (s->ndim > DF11_MAX_DIMS)
            return df11i_fail(DF11_ERR_INVALID_ARG, "tensor '%s': %u dims", s->name, s->ndim);
        uint64_t ne = 1;
        for (uint32_t d = 0; d < s->ndim; d++)
            if (!df11i_mul_ok(ne, s->shape[d], &ne))
                return df11i_fail(DF11_ERR_OVERFLOW, "tensor '%s': shape overflows", s->name);
        uint64_t nb;
        if (!df11i_mul_ok(ne, es, &nb) || nb > (UINT64_MAX >> 2))
            return df11i_fail(DF11_ERR_OVERFLOW, "tensor '%s': size overflows", s->name);
        if (nb && !s->data && !have_data_fn)
            return df11i_fail(DF11_ERR_INVALID_ARG, "tensor '%s': no data", s->name);
        plans[i] = (tensor_plan){
            .src = s, .n_elements = ne, .nbytes = nb, .layer = df11i_layer_of(s->name, prefix)
        };
    }
    tensor_plan **sorted = malloc(sizeof *sorted * (n ? n : 1));
    if (!sorted) return df11i_fail(DF11_ERR_NO_MEMORY, "name table");
    for (size_t i = 0; i < n; i++) sorted[i] = &plans[i];
    qsort(sorted, n, sizeof *sorted, cmp_name);
    df11_status st = DF11_OK;
    for (size_t i = 1; i < n && st == DF11_OK; i++)
        if (strcmp(sorted[i]->src->name, sorted[i - 1]->src->name) == 0)
            st = df11i_fail(DF11_ERR_DUPLICATE, "tensor '%s' appears twice", sorted[i]->src->name);
    free(sorted);
    return st;
}

/* Non-layer tensors first (each its own group, input order), then blocks 0..N-1, each in
 * df11i_block_order's order. `order` receives tensor indices group by group. */
static df11_status plan_groups(const df11_tensor_source *tensors, tensor_plan *plans, size_t n,
                               group_plan **out_groups, uint32_t *out_n_groups, uint32_t *order)
{
    int32_t max_layer = -1;
    size_t n_plain = 0;
    for (size_t i = 0; i < n; i++) {
        if (plans[i].layer > max_layer) max_layer = plans[i].layer;
        if (plans[i].layer < 0) n_plain++;
    }
    uint32_t n_groups = (uint32_t)n_plain + (uint32_t)(max_layer + 1);
    group_plan *groups = calloc(n_groups ? n_groups : 1, sizeof *groups);
    if (!groups) return df11i_fail(DF11_ERR_NO_MEMORY, "group table");
    uint32_t g = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (plans[i].layer >= 0) continue;
        const char *name = plans[i].src->name;
        size_t len = strlen(name);
        if (len > 7 && strcmp(name + len - 7, ".weight") == 0) len -= 7;
        if (len >= sizeof groups[g].name) { /* cut before a whole character */
            len = sizeof groups[g].name - 1;
            while (len && ((unsigned char)name[len] & 0xc0) == 0x80) len--;
        }
        memcpy(groups[g].name, name, len);
        groups[g].layer = -1;
        groups[g].first = k;
        groups[g].count = 1;
        plans[i].group = g++;
        order[k++] = (uint32_t)i;
    }
    for (int32_t l = 0; l <= max_layer; l++) {
        snprintf(groups[g].name, sizeof groups[g].name, "layers.%d", l);
        groups[g].layer = l;
        groups[g].first = k;
        uint32_t c = 0;
        for (size_t i = 0; i < n; i++)
            if (plans[i].layer == l) order[k + c++] = (uint32_t)i;
        df11_status st = df11i_block_order(tensors, order + k, c);
        if (st != DF11_OK) {
            free(groups);
            return st;
        }
        for (uint32_t j = 0; j < c; j++) plans[order[k + j]].group = g;
        k += c;
        groups[g].count = k - groups[g].first;
        if (groups[g].count == 0) {
            free(groups);
            return df11i_fail(DF11_ERR_INVALID_ARG, "no tensor for block %d (blocks must be 0..%d)",
                              l, max_layer);
        }
        g++;
    }
    *out_groups = groups;
    *out_n_groups = n_groups;
    return DF11_OK;
}

static df11_status pwrite_all(int fd, const void *buf, uint64_t size, uint64_t off,
                              const char *path)
{
    const uint8_t *p = buf;
    while (size) {
        ssize_t w = pwrite(fd, p, size > (1u << 30) ? (1u << 30) : size, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return df11i_fail_errno(DF11_ERR_IO, errno, "write '%s'", path);
        }
        p += w;
        off += (uint64_t)w;
        size -= (uint64_t)w;
    }
    return DF11_OK;
}

typedef struct {
    uint8_t *rec; /* the tensor record being filled */
    df11i_encoded enc;
    df11i_fixed fixed; /* EXP_FIXED tensors: the coded tensor (enc then holds only hist) */
    uint64_t size;     /* bytes this tensor adds to the payload, aligned */
    uint64_t stored;   /* the same without alignment padding */
} tensor_out;

/* Whether tensor p gets the fixed code: asked for, and a non-empty 2-D BF16 matrix (the
 * code's rows x cols geometry); other BF16 tensors of such a file stay Huffman. */
static int use_fixed(const tensor_plan *p, const df11_compress_options *o)
{
    return df11i_codec_is_fixed(o->codec) && p->src->dtype == DF11_DTYPE_BF16 &&
           p->src->ndim == 2 && p->n_elements > 0;
}

/* Fixed-codes tensor p and fills its record (docs/FORMAT.md, "Fixed-code tensors"):
 * sections base, exception offsets, codes, exceptions, sign|mantissa from `at` on. */
static df11_status encode_fixed(const tensor_plan *p, const df11_compress_options *o, uint64_t at,
                                tensor_out *t)
{
    uint8_t *r = t->rec;
    const uint16_t *w = p->data;
    df11_status st = df11i_fixed_encode(w, p->src->shape[0], p->src->shape[1],
                                        df11i_fixed_layout_of(o->codec), o->n_threads, &t->fixed);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", p->src->name);
    const df11i_fixed *f = &t->fixed;
    memset(t->enc.hist, 0, sizeof t->enc.hist);
    for (uint64_t i = 0; i < p->n_elements; i++) t->enc.hist[df11i_bf16_exp(w[i])]++;
    uint64_t sizes[DF11I_FIXED_SECTIONS];
    df11i_fixed_section_sizes(&f->g, f->layout, f->n_exc, sizes);
    const int fields[DF11I_FIXED_SECTIONS] = { TEN_CODEBOOK_OFFSET, TEN_CHUNKS_OFFSET,
                                               TEN_STREAM_OFFSET, TEN_LANES_OFFSET,
                                               TEN_DATA_OFFSET };
    uint64_t off = at;
    for (int i = 0; i < DF11I_FIXED_SECTIONS; i++) {
        df11i_st64(r + fields[i], off);
        off = df11i_align_up(off + sizes[i], DF11_SECTION_ALIGN);
    }
    r[TEN_CODEC] = (uint8_t)o->codec;
    df11i_st32(r + TEN_N_CHUNKS, (uint32_t)f->g.n_tiles);
    df11i_st32(r + TEN_LANE_SYMBOLS, (uint32_t)f->n_exc);
    df11i_st64(r + TEN_STREAM_SIZE, f->g.code_bytes);
    float h = (float)df11i_entropy(t->enc.hist);
    memcpy(r + TEN_ENTROPY, &h, 4);
    t->size = off - at;
    t->stored = df11i_fixed_stored_bytes(f);
    return DF11_OK;
}

/* Encodes tensor p (if BF16) and fills its record's section offsets relative to `at`. */
static df11_status encode_tensor(const tensor_plan *p, const df11_compress_options *o, uint64_t at,
                                 uint8_t *sm_scratch, tensor_out *t)
{
    uint8_t *r = t->rec;
    if (p->src->dtype != DF11_DTYPE_BF16 || o->store_raw) {
        r[TEN_CODEC] = DF11_CODEC_RAW;
        df11i_st64(r + TEN_DATA_OFFSET, at);
        t->size = df11i_align_up(p->nbytes, DF11_SECTION_ALIGN);
        t->stored = p->nbytes;
        return DF11_OK;
    }
    if (use_fixed(p, o)) return encode_fixed(p, o, at, t);
    df11_status st = df11i_encode(p->data, p->n_elements, o->max_code_len, o->lane_symbols,
                                  o->n_threads, sm_scratch, &t->enc);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", p->src->name);
    const df11i_encoded *e = &t->enc;
    uint64_t cb = df11i_codebook_size(&e->coded.code);
    uint64_t chunks = e->coded.n_chunks * 4;
    uint64_t lanes = df11i_n_lane_entries(p->n_elements, o->lane_symbols) * 2;
    uint64_t off = at;
    r[TEN_CODEC] = DF11_CODEC_EXP_HUFFMAN;
    r[TEN_MAX_CODE_LEN] = (uint8_t)o->max_code_len;
    df11i_st32(r + TEN_LANE_SYMBOLS, o->lane_symbols);
    df11i_st32(r + TEN_N_CHUNKS, (uint32_t)e->coded.n_chunks);
    df11i_st32(r + TEN_CODEBOOK_SIZE, (uint32_t)cb);
    df11i_st64(r + TEN_CODEBOOK_OFFSET, off);
    off = df11i_align_up(off + cb, DF11_SECTION_ALIGN);
    df11i_st64(r + TEN_CHUNKS_OFFSET, off);
    off = df11i_align_up(off + chunks, DF11_SECTION_ALIGN);
    df11i_st64(r + TEN_LANES_OFFSET, off);
    off = df11i_align_up(off + lanes, DF11_SECTION_ALIGN);
    df11i_st64(r + TEN_STREAM_OFFSET, off);
    off = df11i_align_up(off + e->coded.stream_bytes, DF11_SECTION_ALIGN);
    df11i_st64(r + TEN_STREAM_SIZE, e->coded.stream_bytes);
    df11i_st64(r + TEN_DATA_OFFSET, off);
    off = df11i_align_up(off + p->n_elements, DF11_SECTION_ALIGN);
    float h = (float)e->entropy;
    memcpy(r + TEN_ENTROPY, &h, 4);
    t->size = off - at;
    t->stored = cb + chunks + lanes + e->coded.stream_bytes + p->n_elements;
    return DF11_OK;
}

static void place_tensor(const tensor_plan *p, const tensor_out *t, uint8_t *payload,
                         const uint8_t *sm)
{
    const uint8_t *r = t->rec;
    if (r[TEN_CODEC] == DF11_CODEC_RAW) {
        if (p->nbytes) memcpy(payload + df11i_ld64(r + TEN_DATA_OFFSET), p->data, p->nbytes);
        return;
    }
    if (df11i_codec_is_fixed(r[TEN_CODEC])) {
        const df11i_fixed *f = &t->fixed;
        memcpy(payload + df11i_ld64(r + TEN_CODEBOOK_OFFSET), f->base, f->g.rows_pad);
        memcpy(payload + df11i_ld64(r + TEN_CHUNKS_OFFSET), f->exc_off, 4 * (f->g.n_tiles + 1));
        memcpy(payload + df11i_ld64(r + TEN_STREAM_OFFSET), f->codes, f->g.code_bytes);
        if (f->n_exc) /* the section's padding is zero already */
            memcpy(payload + df11i_ld64(r + TEN_LANES_OFFSET), f->exc,
                   df11i_fixed_exc_section(f->layout, f->n_exc) - 16);
        memcpy(payload + df11i_ld64(r + TEN_DATA_OFFSET), f->sm, f->g.sm_bytes);
        return;
    }
    const df11i_encoded *e = &t->enc;
    df11i_codebook_write(&e->coded.code, payload + df11i_ld64(r + TEN_CODEBOOK_OFFSET));
    memcpy(payload + df11i_ld64(r + TEN_CHUNKS_OFFSET), e->chunks, e->coded.n_chunks * 4);
    memcpy(payload + df11i_ld64(r + TEN_LANES_OFFSET), e->lanes,
           df11i_n_lane_entries(p->n_elements, e->coded.lane_symbols) * 2);
    memcpy(payload + df11i_ld64(r + TEN_STREAM_OFFSET), e->stream, e->coded.stream_bytes);
    memcpy(payload + df11i_ld64(r + TEN_DATA_OFFSET), sm, p->n_elements);
}

/* The normalized options: defaults for the zeros, code options in range. */
static df11_status resolve_options(const df11_compress_options *options, df11_compress_options *o)
{
    *o = options ? *options : (df11_compress_options){ 0 };
    if (!o->max_code_len) o->max_code_len = DF11_DEFAULT_MAX_CODE_LEN;
    if (!o->lane_symbols) o->lane_symbols = DF11_DEFAULT_LANE_SYMBOLS;
    if (!o->layer_prefix) o->layer_prefix = DF11_DEFAULT_LAYER_PREFIX;
    if (!o->codec) o->codec = DF11_CODEC_EXP_HUFFMAN;
    if (o->codec != DF11_CODEC_EXP_HUFFMAN && !df11i_codec_is_fixed(o->codec))
        return df11i_fail(
            DF11_ERR_INVALID_ARG, "codec %d: want %d (exp-huffman), %d (fixed) or %d (fixed8)",
            (int)o->codec, DF11_CODEC_EXP_HUFFMAN, DF11_CODEC_EXP_FIXED, DF11_CODEC_EXP_FIXED8);
    if (o->max_code_len > DF11_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_INVALID_ARG, "max code length %u > %d", o->max_code_len,
                          DF11_MAX_CODE_LEN);
    if (o->lane_symbols % DF11_GROUP || o->lane_symbols > DF11_MAX_LANE_SYMBOLS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "lane symbols %u: want a multiple of 8 up to %d",
                          o->lane_symbols, DF11_MAX_LANE_SYMBOLS);
    return DF11_OK;
}

/* One df11_compress_tensors call: the plan, the index being filled, the group being built
 * and the output file. compress_run_free releases everything. */
typedef struct {
    df11_compress_options o;
    const char *path;
    const df11_tensor_source *tensors;
    size_t n;
    tensor_plan *plans;
    uint32_t *order; /* tensor indices group by group (the file's tensor order) */
    group_plan *groups;
    uint32_t n_groups;
    /* The index: header, group table, tensor table, strings, metadata; payloads follow. */
    uint64_t groups_off, tensors_off, strings_off, strings_size, meta_off, index_end;
    uint8_t *index;
    tensor_out *outs;         /* in file order */
    df11i_st_data_fn data_fn; /* gives the bytes of tensors whose source has none */
    void *data_ctx;
    uint8_t *payload, *sm; /* the group being built; sign+mantissa scratch */
    df11i_atomic_file out;
    df11_compress_summary sum;
    uint64_t hist[256]; /* exponents of every BF16 weight */
    uint64_t total_in, done_in;
    int minor; /* the file's version_minor: the highest its codecs need (loader/format.h) */
} compress_run;

static void compress_run_free(compress_run *r)
{
    df11i_atomic_file_abort(&r->out);
    for (size_t k = 0; r->outs && k < r->n; k++) {
        df11i_encoded_free(&r->outs[k].enc);
        df11i_fixed_free(&r->outs[k].fixed);
    }
    free(r->outs);
    free(r->sm);
    free(r->payload);
    free(r->index);
    free(r->groups);
    free(r->order);
    free(r->plans);
}

/* Places the index's parts and allocates it (zeroed) and the per-tensor outputs. */
static df11_status plan_index(compress_run *r, size_t metadata_len)
{
    uint64_t strings_size = 0;
    for (size_t i = 0; i < r->n; i++) strings_size += strlen(r->tensors[i].name);
    for (uint32_t g = 0; g < r->n_groups; g++) strings_size += strlen(r->groups[g].name);
    r->strings_size = strings_size;
    r->groups_off = DF11_HEADER_SIZE;
    r->tensors_off = r->groups_off + (uint64_t)r->n_groups * DF11_GROUP_RECORD;
    r->strings_off = r->tensors_off + (uint64_t)r->n * DF11_TENSOR_RECORD;
    r->meta_off = r->strings_off + strings_size;
    r->index_end = df11i_align_up(r->meta_off + metadata_len, DF11_PAYLOAD_ALIGN);
    if (strings_size > UINT32_MAX) return df11i_fail(DF11_ERR_OVERFLOW, "names too long");
    r->index = calloc(1, r->index_end);
    r->outs = calloc(r->n ? r->n : 1, sizeof *r->outs);
    if (!r->index || !r->outs)
        return df11i_fail(DF11_ERR_NO_MEMORY, "index of %llu bytes",
                          (unsigned long long)r->index_end);
    return DF11_OK;
}

/* The group and tensor records (all but what the payloads decide), the strings, the
 * metadata; each tensor output gets its record. */
static void fill_index(compress_run *r, const char *metadata, size_t metadata_len)
{
    uint8_t *index = r->index;
    uint64_t str_at = 0;
    for (uint32_t g = 0; g < r->n_groups; g++) {
        uint8_t *rec = index + r->groups_off + (uint64_t)g * DF11_GROUP_RECORD;
        size_t len = strlen(r->groups[g].name);
        memcpy(index + r->strings_off + str_at, r->groups[g].name, len);
        df11i_st32(rec + GRP_NAME_OFFSET, (uint32_t)str_at);
        df11i_st32(rec + GRP_NAME_LEN, (uint32_t)len);
        df11i_st32(rec + GRP_LAYER, (uint32_t)r->groups[g].layer);
        df11i_st32(rec + GRP_FIRST_TENSOR, r->groups[g].first);
        df11i_st32(rec + GRP_N_TENSORS, r->groups[g].count);
        str_at += len;
    }
    for (uint32_t k = 0; k < r->n; k++) {
        const tensor_plan *p = &r->plans[r->order[k]];
        uint8_t *rec = index + r->tensors_off + (uint64_t)k * DF11_TENSOR_RECORD;
        size_t len = strlen(p->src->name);
        memcpy(index + r->strings_off + str_at, p->src->name, len);
        df11i_st32(rec + TEN_NAME_OFFSET, (uint32_t)str_at);
        df11i_st32(rec + TEN_NAME_LEN, (uint32_t)len);
        df11i_st32(rec + TEN_GROUP, p->group);
        rec[TEN_DTYPE] = (uint8_t)p->src->dtype;
        rec[TEN_NDIM] = (uint8_t)p->src->ndim;
        for (uint32_t d = 0; d < p->src->ndim; d++)
            df11i_st64(rec + TEN_SHAPE + 8 * d, p->src->shape[d]);
        df11i_st64(rec + TEN_N_ELEMENTS, p->n_elements);
        r->outs[k].rec = rec;
        str_at += len;
        r->total_in += p->nbytes;
    }
    if (metadata_len) memcpy(index + r->meta_off, metadata, metadata_len);
}

/* Encodes tensor k (file order) and appends it to the group payload at *at; *decoded is
 * where it goes in the decoded group. */
static df11_status append_tensor(compress_run *r, uint32_t k, const char *group_name, uint64_t *at,
                                 uint64_t *decoded)
{
    tensor_plan *p = &r->plans[r->order[k]];
    tensor_out *t = &r->outs[k];
    df11_status st;
    p->data = p->src->data;
    if (!p->data && p->nbytes &&
        (st = r->data_fn(r->data_ctx, r->order[k], p->nbytes, &p->data)) != DF11_OK)
        return st;
    st = encode_tensor(p, &r->o, *at, r->sm, t);
    if (st != DF11_OK) return st;
    uint8_t *grown = realloc(r->payload, *at + t->size ? *at + t->size : 1);
    if (!grown) return df11i_fail(DF11_ERR_NO_MEMORY, "payload of group '%s'", group_name);
    r->payload = grown;
    memset(r->payload + *at, 0, t->size);
    place_tensor(p, t, r->payload, r->sm);
    *at += t->size;
    df11i_st64(t->rec + TEN_DECODED_OFFSET, *decoded);
    *decoded += df11i_align_up(p->nbytes, DF11_DECODED_ALIGN);
    if (p->src->dtype == DF11_DTYPE_BF16) {
        r->sum.bf16_weights += p->n_elements;
        r->sum.bf16_bytes += p->nbytes;
        r->sum.bf16_stored_bytes += t->stored;
        for (int s = 0; s < 256; s++) r->hist[s] += t->enc.hist[s];
    } else {
        r->sum.raw_bytes += p->nbytes;
    }
    if (t->rec[TEN_CODEC] == DF11_CODEC_EXP_FIXED8) r->minor = DF11_VERSION_MINOR;
    if (t->rec[TEN_CODEC] == DF11_CODEC_EXP_FIXED && r->minor < DF11_VERSION_MINOR_FIXED)
        r->minor = DF11_VERSION_MINOR_FIXED;
    df11i_encoded_free(&t->enc);
    df11i_fixed_free(&t->fixed);
    r->done_in += p->nbytes;
    return DF11_OK;
}

/* Builds group g's payload in memory, fills its record and writes it at *file_off, which
 * moves on to where the next group starts (4 KiB-aligned; the last one is not padded). */
static df11_status write_group(compress_run *r, uint32_t g, uint64_t *file_off)
{
    const group_plan *gp = &r->groups[g];
    uint64_t max_elems = 0;
    for (uint32_t k = gp->first; k < gp->first + gp->count; k++)
        if (r->plans[r->order[k]].n_elements > max_elems)
            max_elems = r->plans[r->order[k]].n_elements;
    free(r->sm);
    r->sm = malloc(max_elems ? max_elems : 1);
    if (!r->sm) return df11i_fail(DF11_ERR_NO_MEMORY, "%llu bytes", (unsigned long long)max_elems);

    /* Encoding needs the whole tensor's sm bytes at once; they go to a scratch buffer
     * and are copied into the payload. Payload memory is built tensor by tensor. */
    uint64_t at = 0, decoded = 0;
    free(r->payload);
    r->payload = NULL;
    df11_status st;
    for (uint32_t k = gp->first; k < gp->first + gp->count; k++)
        if ((st = append_tensor(r, k, gp->name, &at, &decoded)) != DF11_OK) return st;
    uint8_t *rec = r->index + r->groups_off + (uint64_t)g * DF11_GROUP_RECORD;
    df11i_st64(rec + GRP_PAYLOAD_OFFSET, *file_off);
    df11i_st64(rec + GRP_PAYLOAD_SIZE, at);
    df11i_st64(rec + GRP_DECODED_SIZE, decoded);
    df11i_st64(rec + GRP_PAYLOAD_XXH3, XXH3_64bits(r->payload, at));
    if ((st = pwrite_all(r->out.fd, r->payload, at, *file_off, r->path)) != DF11_OK) return st;
    *file_off =
        g + 1 < r->n_groups ? df11i_align_up(*file_off + at, DF11_PAYLOAD_ALIGN) : *file_off + at;
    return DF11_OK;
}

/* The header, once the payloads are placed, and the index checksum over it. */
static df11_status finish_header(compress_run *r, uint64_t metadata_len, uint64_t file_size)
{
    uint8_t *index = r->index;
    memcpy(index + HDR_MAGIC, DF11_MAGIC, 8);
    df11i_st16(index + HDR_VERSION_MAJOR, DF11_VERSION_MAJOR);
    df11i_st16(index + HDR_VERSION_MINOR, (uint16_t)r->minor);
    df11i_st32(index + HDR_HEADER_SIZE, DF11_HEADER_SIZE);
    df11i_st32(index + HDR_N_GROUPS, r->n_groups);
    df11i_st32(index + HDR_N_TENSORS, (uint32_t)r->n);
    df11i_st64(index + HDR_GROUPS_OFFSET, r->groups_off);
    df11i_st64(index + HDR_TENSORS_OFFSET, r->tensors_off);
    df11i_st64(index + HDR_STRINGS_OFFSET, r->strings_off);
    df11i_st64(index + HDR_STRINGS_SIZE, r->strings_size);
    df11i_st64(index + HDR_METADATA_OFFSET, r->meta_off);
    df11i_st64(index + HDR_METADATA_SIZE, metadata_len);
    df11i_st64(index + HDR_INDEX_END, r->index_end);
    df11i_st64(index + HDR_FILE_SIZE, file_size);
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) return df11i_fail(DF11_ERR_NO_MEMORY, "xxh3 state");
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, index, HDR_INDEX_XXH3);
    XXH3_64bits_update(xs, index + DF11_HEADER_SIZE, r->index_end - DF11_HEADER_SIZE);
    df11i_st64(index + HDR_INDEX_XXH3, XXH3_64bits_digest(xs));
    XXH3_freeState(xs);
    return DF11_OK;
}

df11_status df11_compress_tensors(const char *out_path, const df11_tensor_source *tensors, size_t n,
                                  const char *metadata, size_t metadata_len,
                                  const df11_compress_options *options,
                                  df11_compress_summary *summary)
{
    return df11i_compress_tensors_stream(out_path, tensors, n, metadata, metadata_len, options,
                                         summary, NULL, NULL);
}

df11_status df11i_compress_tensors_stream(const char *out_path, const df11_tensor_source *tensors,
                                          size_t n, const char *metadata, size_t metadata_len,
                                          const df11_compress_options *options,
                                          df11_compress_summary *summary, df11i_st_data_fn data,
                                          void *data_ctx)
{
    double t0 = df11i_now_ms();
    if (!out_path || (n && !tensors) || (metadata_len && !metadata))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_compress_tensors: NULL argument");
    if (n > UINT32_MAX / 2) return df11i_fail(DF11_ERR_INVALID_ARG, "too many tensors");
    compress_run r = {
        .path = out_path,
        .tensors = tensors,
        .n = n,
        .out = { .fd = -1, .dir_fd = -1, .slot = -1 },
        .data_fn = data,
        .data_ctx = data_ctx,
    };
    df11_status st = resolve_options(options, &r.o);
    if (st != DF11_OK) return st;

    r.plans = calloc(n ? n : 1, sizeof *r.plans);
    r.order = calloc(n ? n : 1, sizeof *r.order);
    if (!r.plans || !r.order) {
        st = df11i_fail(DF11_ERR_NO_MEMORY, "tensor table");
        goto done;
    }
    if ((st = plan_tensors(tensors, n, r.o.layer_prefix, data != NULL, r.plans)) != DF11_OK)
        goto done;
    if ((st = plan_groups(tensors, r.plans, n, &r.groups, &r.n_groups, r.order)) != DF11_OK)
        goto done;
    if ((st = plan_index(&r, metadata_len)) != DF11_OK) goto done;
    fill_index(&r, metadata, metadata_len);

    if ((st = df11i_atomic_file_begin(&r.out, out_path)) != DF11_OK) goto done;
    uint64_t file_off = r.index_end;
    r.sum = (df11_compress_summary){ .n_tensors = (uint32_t)n, .n_groups = r.n_groups };
    for (uint32_t g = 0; g < r.n_groups; g++) {
        if ((st = write_group(&r, g, &file_off)) != DF11_OK) goto done;
        if (r.o.group_progress) {
            df11_progress p = { g + 1, r.n_groups, r.done_in, r.total_in };
            r.o.group_progress(r.o.progress_ctx, &p);
        } else if (r.o.progress) {
            r.o.progress(r.o.progress_ctx, r.done_in, r.total_in);
        }
    }
    if ((st = finish_header(&r, metadata_len, file_off)) != DF11_OK) goto done;
    if ((st = pwrite_all(r.out.fd, r.index, r.index_end, 0, out_path)) != DF11_OK) goto done;
    if (ftruncate(r.out.fd, (off_t)file_off) != 0) {
        st = df11i_fail_errno(DF11_ERR_IO, errno, "truncate '%s'", out_path);
        goto done;
    }
    if ((st = df11i_atomic_file_commit(&r.out)) != DF11_OK) goto done;

    r.sum.file_bytes = file_off;
    r.sum.exponent_entropy = df11i_entropy(r.hist);
    r.sum.seconds = (df11i_now_ms() - t0) / 1e3;
    if (summary) *summary = r.sum;
done:
    compress_run_free(&r);
    return st;
}
