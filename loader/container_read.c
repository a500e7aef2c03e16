/* Opening a .df11 container: the header and index are read whole, check-summed, and every
 * field is checked against the file length and the other fields before anything trusts
 * it, so that a hostile or truncated file fails with a status instead of a wild read. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "codec/codec.h"
#include "common/error.h"
#include "common/parallel.h"
#include "common/util.h"
#include "loader/container.h"
#include "loader/format.h"

struct df11_file {
    char *path;
    int fd;
    uint64_t size;
    uint8_t *index;            /* bytes [0, index_end) */
    uint32_t n_groups, n_tensors, n_layers;
    df11_group_info *groups;
    df11_tensor_info *tensors;
    df11_tensor_layout *layouts;
    uint32_t *by_name;         /* tensor indices sorted by name */
    uint32_t *layer_group;     /* group of each block */
    char *names;               /* NUL-terminated copies of every name */
    const char *metadata;
    uint64_t metadata_size;
};

#define FAIL(st, ...) df11_fail(st, __VA_ARGS__)

static df11_status read_at(int fd, void *buf, uint64_t size, uint64_t off, const char *path)
{
    uint8_t *p = buf;
    while (size) {
        ssize_t r = pread(fd, p, size > (1u << 30) ? (1u << 30) : size, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return df11_fail_errno(DF11_ERR_IO, errno, "read '%s' at %llu", path, (unsigned long long)off);
        }
        if (r == 0)
            return FAIL(DF11_ERR_TRUNCATED, "'%s' ends at %llu, wanted %llu more bytes", path,
                        (unsigned long long)off, (unsigned long long)size);
        p += r;
        off += (uint64_t)r;
        size -= (uint64_t)r;
    }
    return DF11_OK;
}

static const df11_file *sort_file; /* qsort has no context argument in C11 */
static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(sort_file->tensors[*(const uint32_t *)a].name,
                  sort_file->tensors[*(const uint32_t *)b].name);
}

static df11_status parse_header(df11_file *f, const uint8_t *h)
{
    if (memcmp(h + HDR_MAGIC, DF11_MAGIC, 8) != 0) return FAIL(DF11_ERR_NOT_DF11, "'%s': bad magic", f->path);
    unsigned major = df11_ld16(h + HDR_VERSION_MAJOR);
    if (major != DF11_VERSION_MAJOR)
        return FAIL(DF11_ERR_VERSION, "'%s': format version %u.%u, this library reads %d.x%s", f->path,
                    major, df11_ld16(h + HDR_VERSION_MINOR), DF11_VERSION_MAJOR,
                    major < DF11_VERSION_MAJOR ? "; recompress the model with df11-compress" : "");
    if (df11_ld32(h + HDR_HEADER_SIZE) != DF11_HEADER_SIZE) return FAIL(DF11_ERR_CORRUPT, "header size");
    f->n_groups = df11_ld32(h + HDR_N_GROUPS);
    f->n_tensors = df11_ld32(h + HDR_N_TENSORS);
    uint64_t file_size = df11_ld64(h + HDR_FILE_SIZE), index_end = df11_ld64(h + HDR_INDEX_END);
    if (file_size != f->size)
        return FAIL(file_size > f->size ? DF11_ERR_TRUNCATED : DF11_ERR_CORRUPT,
                    "'%s' is %llu bytes, its header says %llu", f->path,
                    (unsigned long long)f->size, (unsigned long long)file_size);
    uint64_t g_off = df11_ld64(h + HDR_GROUPS_OFFSET), t_off = df11_ld64(h + HDR_TENSORS_OFFSET);
    uint64_t s_off = df11_ld64(h + HDR_STRINGS_OFFSET), s_size = df11_ld64(h + HDR_STRINGS_SIZE);
    uint64_t m_off = df11_ld64(h + HDR_METADATA_OFFSET), m_size = df11_ld64(h + HDR_METADATA_SIZE);
    if (g_off != DF11_HEADER_SIZE ||
        t_off != g_off + (uint64_t)f->n_groups * DF11_GROUP_RECORD ||
        s_off != t_off + (uint64_t)f->n_tensors * DF11_TENSOR_RECORD ||
        !df11_add_ok(s_off, s_size, &m_off) || m_off != df11_ld64(h + HDR_METADATA_OFFSET) ||
        !df11_range_ok(m_off, m_size, index_end) || index_end % DF11_PAYLOAD_ALIGN ||
        index_end > f->size || index_end > (1ull << 32))
        return FAIL(DF11_ERR_CORRUPT, "'%s': index layout fields are inconsistent", f->path);
    f->metadata_size = m_size;
    return DF11_OK;
}

static df11_status parse_groups(df11_file *f, uint64_t strings, uint64_t strings_size)
{
    const uint64_t index_end = df11_ld64(f->index + HDR_INDEX_END);
    uint64_t prev_end = index_end;
    uint32_t next_tensor = 0;
    for (uint32_t g = 0; g < f->n_groups; g++) {
        const uint8_t *r = f->index + DF11_HEADER_SIZE + (uint64_t)g * DF11_GROUP_RECORD;
        df11_group_info *gi = &f->groups[g];
        uint32_t name_off = df11_ld32(r + GRP_NAME_OFFSET), name_len = df11_ld32(r + GRP_NAME_LEN);
        if (!df11_range_ok(name_off, name_len, strings_size)) return FAIL(DF11_ERR_CORRUPT, "group %u name", g);
        gi->name = (const char *)(uintptr_t)(strings + name_off); /* fixed up by the caller */
        gi->layer = (int32_t)df11_ld32(r + GRP_LAYER);
        gi->first_tensor = df11_ld32(r + GRP_FIRST_TENSOR);
        gi->n_tensors = df11_ld32(r + GRP_N_TENSORS);
        gi->payload_offset = df11_ld64(r + GRP_PAYLOAD_OFFSET);
        gi->payload_size = df11_ld64(r + GRP_PAYLOAD_SIZE);
        gi->decoded_size = df11_ld64(r + GRP_DECODED_SIZE);
        gi->payload_xxh3 = df11_ld64(r + GRP_PAYLOAD_XXH3);
        if (gi->first_tensor != next_tensor || gi->n_tensors == 0 ||
            gi->n_tensors > f->n_tensors - next_tensor)
            return FAIL(DF11_ERR_CORRUPT, "group %u: tensors [%u, +%u) do not follow group %u", g,
                        gi->first_tensor, gi->n_tensors, g ? g - 1 : 0);
        next_tensor += gi->n_tensors;
        if (gi->payload_offset % DF11_PAYLOAD_ALIGN || gi->payload_offset < prev_end)
            return FAIL(DF11_ERR_CORRUPT, "group %u: payload offset %llu misplaced", g,
                        (unsigned long long)gi->payload_offset);
        if (!df11_range_ok(gi->payload_offset, gi->payload_size, f->size))
            return FAIL(DF11_ERR_TRUNCATED, "group %u: payload [%llu, +%llu) past the end of '%s'", g,
                        (unsigned long long)gi->payload_offset, (unsigned long long)gi->payload_size, f->path);
        prev_end = gi->payload_offset + gi->payload_size;
        if (gi->layer >= 0) {
            if ((uint32_t)gi->layer != f->n_layers)
                return FAIL(DF11_ERR_CORRUPT, "group %u: block %d out of order", g, gi->layer);
            f->n_layers++;
        } else if (gi->layer != -1) {
            return FAIL(DF11_ERR_CORRUPT, "group %u: layer %d", g, gi->layer);
        }
    }
    if (next_tensor != f->n_tensors) return FAIL(DF11_ERR_CORRUPT, "groups hold %u of %u tensors", next_tensor, f->n_tensors);
    return DF11_OK;
}

/* Section [off, off+len) of a tensor must lie in its payload. */
#define SECTION_OK(off, len, payload) df11_range_ok((off), (len), (payload))

static df11_status parse_tensor(df11_file *f, uint32_t t, uint64_t strings_size, uint64_t *decoded_end)
{
    const uint64_t t_off = df11_ld64(f->index + HDR_TENSORS_OFFSET);
    const uint8_t *r = f->index + t_off + (uint64_t)t * DF11_TENSOR_RECORD;
    df11_tensor_info *ti = &f->tensors[t];
    df11_tensor_layout *lo = &f->layouts[t];
    uint32_t name_off = df11_ld32(r + TEN_NAME_OFFSET), name_len = df11_ld32(r + TEN_NAME_LEN);
    if (!df11_range_ok(name_off, name_len, strings_size) || name_len == 0)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u name", t);
    ti->name = (const char *)(uintptr_t)name_off; /* fixed up by the caller */
    ti->group = df11_ld32(r + TEN_GROUP);
    if (ti->group >= f->n_groups || t < f->groups[ti->group].first_tensor ||
        t >= f->groups[ti->group].first_tensor + f->groups[ti->group].n_tensors)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: group %u does not hold it", t, ti->group);
    const df11_group_info *gi = &f->groups[ti->group];
    ti->dtype = (df11_dtype)r[TEN_DTYPE];
    ti->codec = (df11_codec)r[TEN_CODEC];
    ti->ndim = r[TEN_NDIM];
    size_t es = df11_dtype_size(ti->dtype);
    if (!es) return FAIL(DF11_ERR_DTYPE, "tensor %u: dtype %u", t, r[TEN_DTYPE]);
    if (ti->ndim > DF11_MAX_DIMS) return FAIL(DF11_ERR_CORRUPT, "tensor %u: %u dims", t, ti->ndim);
    uint64_t ne = 1;
    for (uint32_t d = 0; d < DF11_MAX_DIMS; d++) {
        ti->shape[d] = df11_ld64(r + TEN_SHAPE + 8 * d);
        if (d < ti->ndim && !df11_mul_ok(ne, ti->shape[d], &ne))
            return FAIL(DF11_ERR_OVERFLOW, "tensor %u: shape overflows", t);
    }
    ti->n_elements = df11_ld64(r + TEN_N_ELEMENTS);
    if (ne != ti->n_elements || !df11_mul_ok(ne, es, &ti->nbytes))
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: %llu elements do not match its shape", t,
                    (unsigned long long)ti->n_elements);
    ti->decoded_offset = df11_ld64(r + TEN_DECODED_OFFSET);
    if (ti->decoded_offset % DF11_DECODED_ALIGN || ti->decoded_offset != *decoded_end)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: decoded offset %llu", t, (unsigned long long)ti->decoded_offset);
    uint64_t aligned = df11_align_up(ti->nbytes, DF11_DECODED_ALIGN);
    if (aligned < ti->nbytes || !df11_add_ok(*decoded_end, aligned, decoded_end) ||
        *decoded_end > gi->decoded_size)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: past its group's decoded size", t);
    const uint64_t ps = gi->payload_size;
    lo->data_offset = df11_ld64(r + TEN_DATA_OFFSET);
    memcpy(&ti->exponent_entropy, r + TEN_ENTROPY, 4);
    if (ti->codec == DF11_CODEC_RAW) {
        if (!SECTION_OK(lo->data_offset, ti->nbytes, ps))
            return FAIL(DF11_ERR_RANGE, "tensor %u: raw data past its payload", t);
        ti->stored_bytes = ti->nbytes;
        return DF11_OK;
    }
    if (ti->codec != DF11_CODEC_EXP_HUFFMAN || ti->dtype != DF11_DTYPE_BF16)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: codec %u for dtype %s", t, ti->codec, df11_dtype_name(ti->dtype));
    ti->max_code_len = r[TEN_MAX_CODE_LEN];
    ti->lane_symbols = df11_ld32(r + TEN_LANE_SYMBOLS);
    lo->n_chunks = df11_ld32(r + TEN_N_CHUNKS);
    if (ti->max_code_len < 1 || ti->max_code_len > DF11_MAX_CODE_LEN || ti->lane_symbols < DF11_GROUP ||
        ti->lane_symbols % DF11_GROUP || ti->lane_symbols > DF11_MAX_LANE_SYMBOLS ||
        lo->n_chunks != df11_n_chunks(ne, ti->lane_symbols))
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: code parameters L=%u S=%u chunks=%u", t,
                    ti->max_code_len, ti->lane_symbols, lo->n_chunks);
    lo->codebook_offset = df11_ld64(r + TEN_CODEBOOK_OFFSET);
    lo->chunks_offset = df11_ld64(r + TEN_CHUNKS_OFFSET);
    lo->lanes_offset = df11_ld64(r + TEN_LANES_OFFSET);
    lo->stream_offset = df11_ld64(r + TEN_STREAM_OFFSET);
    lo->stream_size = df11_ld64(r + TEN_STREAM_SIZE);
    uint64_t lanes = df11_n_lane_entries(ne, ti->lane_symbols);
    if (!SECTION_OK(lo->codebook_offset, 2, ps) || !SECTION_OK(lo->chunks_offset, (uint64_t)lo->n_chunks * 4, ps) ||
        !SECTION_OK(lo->lanes_offset, lanes * 2, ps) || !SECTION_OK(lo->stream_offset, lo->stream_size, ps) ||
        !SECTION_OK(lo->data_offset, ne, ps) || lo->chunks_offset % 4 || lo->lanes_offset % 2 ||
        lo->stream_offset % 16 || lo->data_offset % 16 || lo->stream_size % 4 || lo->stream_size < 8)
        return FAIL(DF11_ERR_RANGE, "tensor %u: sections outside or misaligned in its payload", t);
    uint32_t cb_size = df11_ld32(r + TEN_CODEBOOK_SIZE);
    if (cb_size < 2 || cb_size > 130 || !SECTION_OK(lo->codebook_offset, cb_size, ps))
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: codebook size %u", t, cb_size);
    lo->codebook_size = cb_size;
    ti->stored_bytes = cb_size + (uint64_t)lo->n_chunks * 4 + lanes * 2 + lo->stream_size + ne;
    ti->exponent_bits = (lo->stream_size - 8) * 8;
    return DF11_OK;
}

df11_status df11_file_open(const char *path, df11_file **out)
{
    if (!path || !out) return FAIL(DF11_ERR_INVALID_ARG, "df11_file_open: NULL argument");
    *out = NULL;
    df11_file *f = calloc(1, sizeof *f);
    if (!f) return FAIL(DF11_ERR_NO_MEMORY, "df11_file");
    f->fd = -1;
    df11_status st;
    if (!(f->path = strdup(path))) { st = FAIL(DF11_ERR_NO_MEMORY, "path"); goto fail; }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (f->fd < 0 || fstat(f->fd, &sb) != 0) { st = df11_fail_errno(DF11_ERR_IO, errno, "open '%s'", path); goto fail; }
    if (!S_ISREG(sb.st_mode)) { st = FAIL(DF11_ERR_IO, "'%s' is not a regular file", path); goto fail; }
    f->size = (uint64_t)sb.st_size;
    uint8_t header[DF11_HEADER_SIZE];
    if (f->size < DF11_HEADER_SIZE) {
        st = f->size >= 8 && read_at(f->fd, header, 8, 0, path) == DF11_OK && memcmp(header, DF11_MAGIC, 8) == 0
                 ? FAIL(DF11_ERR_TRUNCATED, "'%s' is %llu bytes, shorter than a df11 header", path, (unsigned long long)f->size)
                 : FAIL(DF11_ERR_NOT_DF11, "'%s' is too short to be a df11 file", path);
        goto fail;
    }
    if ((st = read_at(f->fd, header, DF11_HEADER_SIZE, 0, path)) != DF11_OK) goto fail;
    if ((st = parse_header(f, header)) != DF11_OK) goto fail;
    const uint64_t index_end = df11_ld64(header + HDR_INDEX_END);
    if (!(f->index = malloc(index_end))) { st = FAIL(DF11_ERR_NO_MEMORY, "index"); goto fail; }
    if ((st = read_at(f->fd, f->index, index_end, 0, path)) != DF11_OK) goto fail;
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) { st = FAIL(DF11_ERR_NO_MEMORY, "xxh3"); goto fail; }
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, f->index, HDR_INDEX_XXH3);
    XXH3_64bits_update(xs, f->index + DF11_HEADER_SIZE, index_end - DF11_HEADER_SIZE);
    uint64_t sum = XXH3_64bits_digest(xs);
    XXH3_freeState(xs);
    if (sum != df11_ld64(f->index + HDR_INDEX_XXH3)) {
        st = FAIL(DF11_ERR_CHECKSUM, "'%s': index xxh3 %016llx, header says %016llx", path,
                  (unsigned long long)sum, (unsigned long long)df11_ld64(f->index + HDR_INDEX_XXH3));
        goto fail;
    }

    const uint64_t strings = df11_ld64(f->index + HDR_STRINGS_OFFSET);
    const uint64_t strings_size = df11_ld64(f->index + HDR_STRINGS_SIZE);
    f->metadata = (const char *)f->index + df11_ld64(f->index + HDR_METADATA_OFFSET);
    f->groups = calloc(f->n_groups + 1, sizeof *f->groups);
    f->tensors = calloc(f->n_tensors + 1, sizeof *f->tensors);
    f->layouts = calloc(f->n_tensors + 1, sizeof *f->layouts);
    f->by_name = calloc(f->n_tensors + 1, sizeof *f->by_name);
    f->layer_group = calloc(f->n_groups + 1, sizeof *f->layer_group);
    f->names = malloc(strings_size + f->n_groups + f->n_tensors + 1);
    if (!f->groups || !f->tensors || !f->layouts || !f->by_name || !f->layer_group || !f->names) {
        st = FAIL(DF11_ERR_NO_MEMORY, "index tables");
        goto fail;
    }
    if ((st = parse_groups(f, 0, strings_size)) != DF11_OK) goto fail;
    char *np = f->names;
    for (uint32_t g = 0; g < f->n_groups; g++) { /* names become NUL-terminated copies */
        const uint8_t *r = f->index + DF11_HEADER_SIZE + (uint64_t)g * DF11_GROUP_RECORD;
        uint32_t len = df11_ld32(r + GRP_NAME_LEN);
        memcpy(np, f->index + strings + (uintptr_t)f->groups[g].name, len);
        np[len] = '\0';
        f->groups[g].name = np;
        np += len + 1;
        if (f->groups[g].layer >= 0) f->layer_group[f->groups[g].layer] = g;
    }
    for (uint32_t g = 0; g < f->n_groups; g++) {
        uint64_t decoded_end = 0;
        for (uint32_t t = f->groups[g].first_tensor; t < f->groups[g].first_tensor + f->groups[g].n_tensors; t++) {
            if ((st = parse_tensor(f, t, strings_size, &decoded_end)) != DF11_OK) goto fail;
            uint32_t len = df11_ld32(f->index + df11_ld64(f->index + HDR_TENSORS_OFFSET) +
                                     (uint64_t)t * DF11_TENSOR_RECORD + TEN_NAME_LEN);
            memcpy(np, f->index + strings + (uintptr_t)f->tensors[t].name, len);
            np[len] = '\0';
            if (memchr(np, '\0', len)) { st = FAIL(DF11_ERR_CORRUPT, "tensor %u: NUL in name", t); goto fail; }
            f->tensors[t].name = np;
            np += len + 1;
        }
        if (decoded_end != f->groups[g].decoded_size) {
            st = FAIL(DF11_ERR_CORRUPT, "group %u: decoded size %llu, tensors need %llu", g,
                      (unsigned long long)f->groups[g].decoded_size, (unsigned long long)decoded_end);
            goto fail;
        }
    }
    for (uint32_t t = 0; t < f->n_tensors; t++) f->by_name[t] = t;
    sort_file = f;
    qsort(f->by_name, f->n_tensors, sizeof *f->by_name, cmp_tensor_name);
    for (uint32_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[f->by_name[i]].name, f->tensors[f->by_name[i - 1]].name) == 0) {
            st = FAIL(DF11_ERR_DUPLICATE, "tensor '%s' appears twice", f->tensors[f->by_name[i]].name);
            goto fail;
        }
    *out = f;
    return DF11_OK;
fail:
    df11_file_close(f);
    return st;
}

void df11_file_close(df11_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f->index);
    free(f->groups);
    free(f->tensors);
    free(f->layouts);
    free(f->by_name);
    free(f->layer_group);
    free(f->names);
    free(f);
}

const char *df11_file_path(const df11_file *f) { return f->path; }
uint64_t df11_file_size(const df11_file *f) { return f->size; }
uint32_t df11_file_n_groups(const df11_file *f) { return f->n_groups; }
uint32_t df11_file_n_tensors(const df11_file *f) { return f->n_tensors; }
uint32_t df11_file_n_layers(const df11_file *f) { return f->n_layers; }

const df11_group_info *df11_file_group(const df11_file *f, uint32_t g)
{
    return f && g < f->n_groups ? &f->groups[g] : NULL;
}

const df11_tensor_info *df11_file_tensor(const df11_file *f, uint32_t t)
{
    return f && t < f->n_tensors ? &f->tensors[t] : NULL;
}

const df11_tensor_layout *df11_file_tensor_layout(const df11_file *f, uint32_t t)
{
    return f && t < f->n_tensors ? &f->layouts[t] : NULL;
}

df11_status df11_file_find_tensor(const df11_file *f, const char *name, uint32_t *tensor)
{
    if (!f || !name || !tensor) return FAIL(DF11_ERR_INVALID_ARG, "df11_file_find_tensor: NULL argument");
    uint32_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[f->by_name[mid]].name, name);
        if (c == 0) { *tensor = f->by_name[mid]; return DF11_OK; }
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return FAIL(DF11_ERR_NOT_FOUND, "no tensor '%s' in '%s'", name, f->path);
}

df11_status df11_file_layer_group(const df11_file *f, uint32_t layer, uint32_t *group)
{
    if (!f || !group) return FAIL(DF11_ERR_INVALID_ARG, "df11_file_layer_group: NULL argument");
    if (layer >= f->n_layers) return FAIL(DF11_ERR_NOT_FOUND, "block %u: the model has %u", layer, f->n_layers);
    *group = f->layer_group[layer];
    return DF11_OK;
}

const char *df11_file_metadata(const df11_file *f, size_t *len)
{
    if (len) *len = (size_t)f->metadata_size;
    return f->metadata;
}

df11_status df11_group_verify(const df11_file *f, uint32_t g, const void *payload, uint64_t size)
{
    if (!f || g >= f->n_groups || (!payload && size))
        return FAIL(DF11_ERR_INVALID_ARG, "df11_group_verify: bad argument");
    const df11_group_info *gi = &f->groups[g];
    if (size != gi->payload_size)
        return FAIL(DF11_ERR_TRUNCATED, "group '%s': %llu bytes, index says %llu", gi->name,
                    (unsigned long long)size, (unsigned long long)gi->payload_size);
    uint64_t sum = XXH3_64bits(payload, size);
    if (sum != gi->payload_xxh3)
        return FAIL(DF11_ERR_CHECKSUM, "group '%s': payload xxh3 %016llx, index says %016llx", gi->name,
                    (unsigned long long)sum, (unsigned long long)gi->payload_xxh3);
    return DF11_OK;
}

df11_status df11_file_read_group(const df11_file *f, uint32_t g, void *payload)
{
    if (!f || g >= f->n_groups || !payload)
        return FAIL(DF11_ERR_INVALID_ARG, "df11_file_read_group: bad argument");
    const df11_group_info *gi = &f->groups[g];
    df11_status st = read_at(f->fd, payload, gi->payload_size, gi->payload_offset, f->path);
    if (st != DF11_OK) return st;
    return df11_group_verify(f, g, payload, gi->payload_size);
}

df11_status df11_file_tensor_coded(const df11_file *f, uint32_t t, const void *payload, df11_coded *c)
{
    if (!f || t >= f->n_tensors || !payload || !c)
        return FAIL(DF11_ERR_INVALID_ARG, "df11_file_tensor_coded: bad argument");
    const df11_tensor_info *ti = &f->tensors[t];
    const df11_tensor_layout *lo = &f->layouts[t];
    if (ti->codec != DF11_CODEC_EXP_HUFFMAN)
        return FAIL(DF11_ERR_INVALID_ARG, "tensor '%s' is not Huffman-coded", ti->name);
    const uint8_t *p = payload;
    memset(c, 0, sizeof *c);
    df11_status st = df11_codebook_read(p + lo->codebook_offset, lo->codebook_size,
                                        ti->max_code_len, &c->code);
    if (st != DF11_OK) return FAIL(st, "tensor '%s': %s", ti->name, df11_last_error_detail());
    c->n_elements = ti->n_elements;
    c->max_len = ti->max_code_len;
    c->lane_symbols = ti->lane_symbols;
    c->n_chunks = lo->n_chunks;
    c->chunks = (const uint32_t *)(p + lo->chunks_offset);
    c->lanes = (const uint16_t *)(p + lo->lanes_offset);
    c->stream = (const uint32_t *)(p + lo->stream_offset);
    c->stream_bytes = lo->stream_size;
    c->sm = p + lo->data_offset;
    st = df11_coded_validate(c);
    if (st != DF11_OK) return FAIL(st, "tensor '%s': %s", ti->name, df11_last_error_detail());
    return DF11_OK;
}

df11_status df11_tensor_decode_host(const df11_file *f, uint32_t t, const void *payload, void *out, int n_threads)
{
    if (!f || t >= f->n_tensors || !payload || (!out && f->tensors[t].nbytes))
        return FAIL(DF11_ERR_INVALID_ARG, "df11_tensor_decode_host: bad argument");
    const df11_tensor_info *ti = &f->tensors[t];
    if (ti->codec == DF11_CODEC_RAW) {
        if (ti->nbytes) memcpy(out, (const uint8_t *)payload + f->layouts[t].data_offset, ti->nbytes);
        return DF11_OK;
    }
    df11_coded c;
    df11_status st = df11_file_tensor_coded(f, t, payload, &c);
    if (st != DF11_OK) return st;
    st = df11_decode_host(&c, out, n_threads);
    if (st != DF11_OK) return FAIL(st, "tensor '%s': %s", ti->name, df11_last_error_detail());
    return DF11_OK;
}

df11_status df11_group_decode_host(const df11_file *f, uint32_t g, const void *payload, void *out, int n_threads)
{
    if (!f || g >= f->n_groups || !payload || !out)
        return FAIL(DF11_ERR_INVALID_ARG, "df11_group_decode_host: bad argument");
    const df11_group_info *gi = &f->groups[g];
    uint8_t *o = out;
    for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
        const df11_tensor_info *ti = &f->tensors[t];
        df11_status st = df11_tensor_decode_host(f, t, payload, o + ti->decoded_offset, n_threads);
        if (st != DF11_OK) return st;
        uint64_t end = t + 1 < gi->first_tensor + gi->n_tensors ? f->tensors[t + 1].decoded_offset : gi->decoded_size;
        memset(o + ti->decoded_offset + ti->nbytes, 0, end - ti->decoded_offset - ti->nbytes);
    }
    return DF11_OK;
}
