/* Opening a .df11 container: the header and index are read whole, check-summed, and every
 * field is checked against the file length and the other fields before anything trusts
 * it, so that a hostile or truncated file fails with a status instead of a wild read.
 * The container comes from a file (df11_file_open) or from a memory image
 * (df11i_file_open_memory, for fuzzing and embedding); only read_at knows which. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "codec/codec.h"
#include "codec/fixed_view.h"
#include "common/error.h"
#include "common/fileio.h"
#include "common/parallel.h"
#include "common/utf8.h"
#include "common/util.h"
#include "loader/container.h"
#include "loader/format.h"

struct df11_file {
    char *path;         /* the file's path, or the memory image's label */
    int fd;             /* -1 for a memory image */
    const uint8_t *mem; /* the memory image (the caller's), or NULL for a file */
    uint64_t size;
    uint8_t *index; /* bytes [0, index_end) */
    uint32_t n_groups, n_tensors, n_layers;
    df11_group_info *groups;
    df11_tensor_info *tensors;
    df11i_tensor_layout *layouts;
    uint32_t *by_name;     /* tensor indices sorted by name */
    uint32_t *layer_group; /* group of each block */
    char *names;           /* NUL-terminated copies of every name */
    const char *metadata;
    uint64_t metadata_size;
};

#define FAIL(st, ...) df11i_fail(st, __VA_ARGS__)

/* Bytes [off, off+size) of the container, from its file or its memory image. */
static df11_status read_at(const df11_file *f, void *buf, uint64_t size, uint64_t off)
{
    if (f->mem) {
        if (!df11i_range_ok(off, size, f->size))
            return FAIL(DF11_ERR_TRUNCATED, "'%s' is %llu bytes, wanted [%llu, +%llu)", f->path,
                        (unsigned long long)f->size, (unsigned long long)off,
                        (unsigned long long)size);
        if (size) memcpy(buf, f->mem + off, size);
        return DF11_OK;
    }
    uint8_t *p = buf;
    while (size) {
        ssize_t r = pread(f->fd, p, size > (1u << 30) ? (1u << 30) : size, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return df11i_fail_errno(DF11_ERR_IO, errno, "read '%s' at %llu", f->path,
                                    (unsigned long long)off);
        }
        if (r == 0)
            return FAIL(DF11_ERR_TRUNCATED, "'%s' ends at %llu, wanted %llu more bytes", f->path,
                        (unsigned long long)off, (unsigned long long)size);
        p += r;
        off += (uint64_t)r;
        size -= (uint64_t)r;
    }
    return DF11_OK;
}

/* The layout fields bound every table: they lie in order inside [0, index_end), and
 * index_end <= 4 GiB, so n_groups < 2^26 and n_tensors < 2^25 (no count overflows below). */
static df11_status parse_header(df11_file *f, const uint8_t *h)
{
    if (memcmp(h + HDR_MAGIC, DF11_MAGIC, 8) != 0)
        return FAIL(DF11_ERR_NOT_DF11, "'%s': bad magic", f->path);
    unsigned major = df11i_ld16(h + HDR_VERSION_MAJOR);
    if (major != DF11_VERSION_MAJOR)
        return FAIL(DF11_ERR_VERSION, "'%s': format version %u.%u, this library reads %d.x%s",
                    f->path, major, df11i_ld16(h + HDR_VERSION_MINOR), DF11_VERSION_MAJOR,
                    major < DF11_VERSION_MAJOR ? "; recompress the model with df11-compress" : "");
    if (df11i_ld32(h + HDR_HEADER_SIZE) != DF11_HEADER_SIZE)
        return FAIL(DF11_ERR_CORRUPT, "header size");
    f->n_groups = df11i_ld32(h + HDR_N_GROUPS);
    f->n_tensors = df11i_ld32(h + HDR_N_TENSORS);
    uint64_t file_size = df11i_ld64(h + HDR_FILE_SIZE), index_end = df11i_ld64(h + HDR_INDEX_END);
    if (file_size != f->size)
        return FAIL(file_size > f->size ? DF11_ERR_TRUNCATED : DF11_ERR_CORRUPT,
                    "'%s' is %llu bytes, its header says %llu", f->path,
                    (unsigned long long)f->size, (unsigned long long)file_size);
    uint64_t g_off = df11i_ld64(h + HDR_GROUPS_OFFSET), t_off = df11i_ld64(h + HDR_TENSORS_OFFSET);
    uint64_t s_off = df11i_ld64(h + HDR_STRINGS_OFFSET), s_size = df11i_ld64(h + HDR_STRINGS_SIZE);
    uint64_t m_off = df11i_ld64(h + HDR_METADATA_OFFSET),
             m_size = df11i_ld64(h + HDR_METADATA_SIZE);
    if (g_off != DF11_HEADER_SIZE || t_off != g_off + (uint64_t)f->n_groups * DF11_GROUP_RECORD ||
        s_off != t_off + (uint64_t)f->n_tensors * DF11_TENSOR_RECORD ||
        !df11i_add_ok(s_off, s_size, &m_off) || m_off != df11i_ld64(h + HDR_METADATA_OFFSET) ||
        !df11i_range_ok(m_off, m_size, index_end) || index_end % DF11_PAYLOAD_ALIGN ||
        index_end > f->size || index_end > (1ull << 32))
        return FAIL(DF11_ERR_CORRUPT, "'%s': index layout fields are inconsistent", f->path);
    f->metadata_size = m_size;
    return DF11_OK;
}

/* Reads the header, checks its layout fields, then reads the rest of the index after it
 * (the header is read once: the checked bytes are the bytes used) and checks its xxh3. */
static df11_status read_index(df11_file *f)
{
    uint8_t h[DF11_HEADER_SIZE];
    if (f->size < DF11_HEADER_SIZE)
        return f->size >= 8 && read_at(f, h, 8, 0) == DF11_OK && memcmp(h, DF11_MAGIC, 8) == 0
                   ? FAIL(DF11_ERR_TRUNCATED, "'%s' is %llu bytes, shorter than a df11 header",
                          f->path, (unsigned long long)f->size)
                   : FAIL(DF11_ERR_NOT_DF11, "'%s' is too short to be a df11 file", f->path);
    df11_status st;
    if ((st = read_at(f, h, DF11_HEADER_SIZE, 0)) != DF11_OK ||
        (st = parse_header(f, h)) != DF11_OK)
        return st;
    const uint64_t index_end = df11i_ld64(h + HDR_INDEX_END);
    if (!(f->index = malloc(index_end)))
        return FAIL(DF11_ERR_NO_MEMORY, "index of %llu bytes", (unsigned long long)index_end);
    memcpy(f->index, h, DF11_HEADER_SIZE);
    if ((st = read_at(f, f->index + DF11_HEADER_SIZE, index_end - DF11_HEADER_SIZE,
                      DF11_HEADER_SIZE)) != DF11_OK)
        return st;
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) return FAIL(DF11_ERR_NO_MEMORY, "xxh3");
    XXH3_64bits_reset(xs);
    XXH3_64bits_update(xs, f->index, HDR_INDEX_XXH3);
    XXH3_64bits_update(xs, f->index + DF11_HEADER_SIZE, index_end - DF11_HEADER_SIZE);
    uint64_t sum = XXH3_64bits_digest(xs);
    XXH3_freeState(xs);
    if (sum != df11i_ld64(h + HDR_INDEX_XXH3))
        return FAIL(DF11_ERR_CHECKSUM, "'%s': index xxh3 %016llx, header says %016llx", f->path,
                    (unsigned long long)sum, (unsigned long long)df11i_ld64(h + HDR_INDEX_XXH3));
    f->metadata = (const char *)f->index + df11i_ld64(h + HDR_METADATA_OFFSET);
    return DF11_OK;
}

static df11_status alloc_tables(df11_file *f)
{
    const size_t ng = (size_t)f->n_groups + 1, nt = (size_t)f->n_tensors + 1; /* never calloc(0) */
    f->groups = calloc(ng, sizeof *f->groups);
    f->tensors = calloc(nt, sizeof *f->tensors);
    f->layouts = calloc(nt, sizeof *f->layouts);
    f->by_name = calloc(nt, sizeof *f->by_name);
    f->layer_group = calloc(ng, sizeof *f->layer_group);
    if (!f->groups || !f->tensors || !f->layouts || !f->by_name || !f->layer_group)
        return FAIL(DF11_ERR_NO_MEMORY, "index tables");
    return DF11_OK;
}

/* Names: record `rec` is group `rec`, or tensor `rec - n_groups`. */
typedef struct {
    uint32_t off, len, rec;
} name_range;

static void name_field(const df11_file *f, uint32_t rec, uint32_t *off, uint32_t *len)
{
    if (rec < f->n_groups) {
        const uint8_t *r = f->index + DF11_HEADER_SIZE + (uint64_t)rec * DF11_GROUP_RECORD;
        *off = df11i_ld32(r + GRP_NAME_OFFSET);
        *len = df11i_ld32(r + GRP_NAME_LEN);
    } else {
        const uint8_t *r = f->index + df11i_ld64(f->index + HDR_TENSORS_OFFSET) +
                           (uint64_t)(rec - f->n_groups) * DF11_TENSOR_RECORD;
        *off = df11i_ld32(r + TEN_NAME_OFFSET);
        *len = df11i_ld32(r + TEN_NAME_LEN);
    }
}

static const char *name_kind(const df11_file *f, uint32_t rec)
{
    return rec < f->n_groups ? "group" : "tensor";
}
static uint32_t name_owner(const df11_file *f, uint32_t rec)
{
    return rec < f->n_groups ? rec : rec - f->n_groups;
}

static int cmp_range(const void *a, const void *b)
{
    const name_range *x = a, *y = b;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return (x->len > y->len) - (x->len < y->len);
}

/* Every name lies in the string table, tensor names are not empty, and no two names share
 * a byte (the writer lays them end to end). Disjoint ranges are what bounds the copies in
 * copy_names by the string table's size. */
static df11_status check_names(const df11_file *f, uint64_t strings_size)
{
    const uint32_t n = f->n_groups + f->n_tensors; /* < 2^27 (parse_header) */
    name_range *r = malloc(((size_t)n + 1) * sizeof *r);
    if (!r) return FAIL(DF11_ERR_NO_MEMORY, "name ranges");
    df11_status st = DF11_OK;
    for (uint32_t i = 0; i < n && st == DF11_OK; i++) {
        name_field(f, i, &r[i].off, &r[i].len);
        r[i].rec = i;
        if (!df11i_range_ok(r[i].off, r[i].len, strings_size))
            st = FAIL(DF11_ERR_CORRUPT, "%s %u name [%u, +%u) outside the %llu-byte string table",
                      name_kind(f, i), name_owner(f, i), r[i].off, r[i].len,
                      (unsigned long long)strings_size);
        else if (i >= f->n_groups && r[i].len == 0)
            st = FAIL(DF11_ERR_CORRUPT, "tensor %u has an empty name", name_owner(f, i));
    }
    if (st == DF11_OK) qsort(r, n, sizeof *r, cmp_range);
    const name_range *prev = NULL; /* the last non-empty range: it ends furthest */
    for (uint32_t i = 0; i < n && st == DF11_OK; i++) {
        if (!r[i].len) continue;
        if (prev && r[i].off < (uint64_t)prev->off + prev->len)
            st = FAIL(DF11_ERR_CORRUPT, "%s %u name [%u, +%u) overlaps %s %u name [%u, +%u)",
                      name_kind(f, r[i].rec), name_owner(f, r[i].rec), r[i].off, r[i].len,
                      name_kind(f, prev->rec), name_owner(f, prev->rec), prev->off, prev->len);
        prev = &r[i];
    }
    free(r);
    return st;
}

/* Names become NUL-terminated copies, group names then tensor names. */
static df11_status copy_names(df11_file *f)
{
    const uint64_t strings = df11i_ld64(f->index + HDR_STRINGS_OFFSET);
    const uint64_t strings_size = df11i_ld64(f->index + HDR_STRINGS_SIZE);
    df11_status st = check_names(f, strings_size);
    if (st != DF11_OK) return st;
    const uint32_t n = f->n_groups + f->n_tensors;
    const uint64_t cap = strings_size + n + 1;
    if (!(f->names = malloc(cap))) return FAIL(DF11_ERR_NO_MEMORY, "names");
    uint64_t used = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t off, len;
        name_field(f, i, &off, &len);
        if ((uint64_t)len + 1 > cap - used) /* cannot happen with disjoint ranges; never overrun */
            return FAIL(DF11_ERR_CORRUPT, "names exceed the string table");
        char *np = f->names + used;
        memcpy(np, f->index + strings + off, len);
        np[len] = '\0';
        if (memchr(np, '\0', len))
            return FAIL(DF11_ERR_CORRUPT, "%s %u: NUL in its name", name_kind(f, i),
                        name_owner(f, i));
        /* names reach terminals and JSON as they are (df11-inspect, errors) */
        if (!df11i_utf8_text(np, len))
            return FAIL(DF11_ERR_CORRUPT,
                        "%s %u: its name is not UTF-8 text (or holds a control character)",
                        name_kind(f, i), name_owner(f, i));
        if (i < f->n_groups)
            f->groups[i].name = np;
        else
            f->tensors[i - f->n_groups].name = np;
        used += (uint64_t)len + 1;
    }
    return DF11_OK;
}

static df11_status parse_groups(df11_file *f)
{
    const uint64_t index_end = df11i_ld64(f->index + HDR_INDEX_END);
    uint64_t prev_end = index_end;
    uint32_t next_tensor = 0;
    for (uint32_t g = 0; g < f->n_groups; g++) {
        const uint8_t *r = f->index + DF11_HEADER_SIZE + (uint64_t)g * DF11_GROUP_RECORD;
        df11_group_info *gi = &f->groups[g];
        gi->layer = (int32_t)df11i_ld32(r + GRP_LAYER);
        gi->first_tensor = df11i_ld32(r + GRP_FIRST_TENSOR);
        gi->n_tensors = df11i_ld32(r + GRP_N_TENSORS);
        gi->payload_offset = df11i_ld64(r + GRP_PAYLOAD_OFFSET);
        gi->payload_size = df11i_ld64(r + GRP_PAYLOAD_SIZE);
        gi->decoded_size = df11i_ld64(r + GRP_DECODED_SIZE);
        gi->payload_xxh3 = df11i_ld64(r + GRP_PAYLOAD_XXH3);
        if (gi->first_tensor != next_tensor || gi->n_tensors == 0 ||
            gi->n_tensors > f->n_tensors - next_tensor)
            return FAIL(DF11_ERR_CORRUPT, "group %u: tensors [%u, +%u) do not follow group %u", g,
                        gi->first_tensor, gi->n_tensors, g ? g - 1 : 0);
        next_tensor += gi->n_tensors;
        if (gi->payload_offset % DF11_PAYLOAD_ALIGN || gi->payload_offset < prev_end)
            return FAIL(DF11_ERR_CORRUPT, "group %u: payload offset %llu misplaced", g,
                        (unsigned long long)gi->payload_offset);
        if (!df11i_range_ok(gi->payload_offset, gi->payload_size, f->size))
            return FAIL(DF11_ERR_TRUNCATED, "group %u: payload [%llu, +%llu) past the end of '%s'",
                        g, (unsigned long long)gi->payload_offset,
                        (unsigned long long)gi->payload_size, f->path);
        prev_end = gi->payload_offset + gi->payload_size;
        if (gi->layer >= 0) {
            if ((uint32_t)gi->layer != f->n_layers)
                return FAIL(DF11_ERR_CORRUPT, "group %u: block %d out of order", g, gi->layer);
            f->layer_group[f->n_layers++] = g;
        } else if (gi->layer != -1) {
            return FAIL(DF11_ERR_CORRUPT, "group %u: layer %d", g, gi->layer);
        }
    }
    if (next_tensor != f->n_tensors)
        return FAIL(DF11_ERR_CORRUPT, "groups hold %u of %u tensors", next_tensor, f->n_tensors);
    return DF11_OK;
}

/* Section [off, off+len) of a tensor must lie in its payload. */
#define SECTION_OK(off, len, payload) df11i_range_ok((off), (len), (payload))

/* The sections of fixed-code tensor t (record r; docs/FORMAT.md): a 2-D BF16 tensor whose
 * record fields are exactly what its shape and exception count imply, every section inside
 * the ps-byte payload, 16-byte aligned, in the order the writer puts them and disjoint.
 * What the sections hold is checked when they are read (df11i_file_tensor_fixed). */
static df11_status parse_fixed_sections(df11_file *f, uint32_t t, const uint8_t *r, uint64_t ps)
{
    df11_tensor_info *ti = &f->tensors[t];
    df11i_tensor_layout *lo = &f->layouts[t];
    if (ti->ndim != 2)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: fixed code on a %u-D tensor", t, ti->ndim);
    df11i_fixed_geom g;
    df11_status st = df11i_fixed_geometry(ti->shape[0], ti->shape[1], &g);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor %u", t);
    lo->n_chunks = df11i_ld32(r + TEN_N_CHUNKS);
    lo->n_exc = df11i_ld32(r + TEN_LANE_SYMBOLS);
    lo->codebook_size = df11i_ld32(r + TEN_CODEBOOK_SIZE);
    if (r[TEN_MAX_CODE_LEN] != 0 || lo->n_chunks != g.n_tiles || lo->codebook_size != 0)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: fixed-code fields: %u tiles (want %llu)", t,
                    lo->n_chunks, (unsigned long long)g.n_tiles);
    if (ti->codec == DF11_CODEC_EXP_FIXED8 && lo->n_exc > DF11_FIXED_MAX_RECORDS)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: %llu records, at most %u", t,
                    (unsigned long long)lo->n_exc, DF11_FIXED_MAX_RECORDS);
    lo->codebook_offset = df11i_ld64(r + TEN_CODEBOOK_OFFSET);
    lo->chunks_offset = df11i_ld64(r + TEN_CHUNKS_OFFSET);
    lo->lanes_offset = df11i_ld64(r + TEN_LANES_OFFSET);
    lo->stream_offset = df11i_ld64(r + TEN_STREAM_OFFSET);
    lo->stream_size = df11i_ld64(r + TEN_STREAM_SIZE);
    /* sizes as stored: the exception section carries 16 zero bytes past its padding, so a
     * kernel may load it 16 bytes at a time from any 16-aligned index below its end */
    const df11i_fixed_layout layout = df11i_fixed_layout_of(ti->codec);
    const uint64_t off[DF11I_FIXED_SECTIONS] = { lo->codebook_offset, lo->chunks_offset,
                                                 lo->stream_offset, lo->lanes_offset,
                                                 lo->data_offset };
    uint64_t len[DF11I_FIXED_SECTIONS];
    df11i_fixed_section_sizes(&g, layout, lo->n_exc, len);
    if (lo->stream_size != g.code_bytes)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: %llu bytes of codes, its shape needs %llu", t,
                    (unsigned long long)lo->stream_size, (unsigned long long)g.code_bytes);
    for (int i = 0; i < DF11I_FIXED_SECTIONS; i++)
        if (!SECTION_OK(off[i], len[i], ps) || off[i] % DF11_SECTION_ALIGN ||
            (i && off[i] < off[i - 1] + len[i - 1]))
            return FAIL(DF11_ERR_RANGE,
                        "tensor %u: sections outside, misaligned or out of order "
                        "in its payload",
                        t);
    ti->stored_bytes = df11i_fixed_stored_size(&g, layout, lo->n_exc);
    ti->exponent_bits = (ti->stored_bytes - g.sm_bytes) * 8;
    return DF11_OK;
}

/* The code parameters and sections of tensor t (record r), whose codec is not RAW: it
 * must be EXP_HUFFMAN on BF16, every section inside the ps-byte payload and aligned as the
 * decoders read it. */
static df11_status parse_coded_sections(df11_file *f, uint32_t t, const uint8_t *r, uint64_t ps)
{
    df11_tensor_info *ti = &f->tensors[t];
    df11i_tensor_layout *lo = &f->layouts[t];
    const uint64_t ne = ti->n_elements;
    if (ti->codec > DF11_CODEC_EXP_FIXED8)
        return FAIL(DF11_ERR_CORRUPT,
                    "tensor %u: unknown codec %u (this library reads codecs 0..%d, format "
                    "%d.%d; a newer df11 may have written it)",
                    t, ti->codec, DF11_CODEC_EXP_FIXED8, DF11_VERSION_MAJOR, DF11_VERSION_MINOR);
    if (ti->dtype != DF11_DTYPE_BF16)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: codec %u for dtype %s", t, ti->codec,
                    df11_dtype_name(ti->dtype));
    if (df11i_codec_is_fixed(ti->codec)) return parse_fixed_sections(f, t, r, ps);
    ti->max_code_len = r[TEN_MAX_CODE_LEN];
    ti->lane_symbols = df11i_ld32(r + TEN_LANE_SYMBOLS);
    lo->n_chunks = df11i_ld32(r + TEN_N_CHUNKS);
    if (ti->max_code_len < 1 || ti->max_code_len > DF11_MAX_CODE_LEN ||
        ti->lane_symbols < DF11_GROUP || ti->lane_symbols % DF11_GROUP ||
        ti->lane_symbols > DF11_MAX_LANE_SYMBOLS ||
        lo->n_chunks != df11i_n_chunks(ne, ti->lane_symbols))
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: code parameters L=%u S=%u chunks=%u", t,
                    ti->max_code_len, ti->lane_symbols, lo->n_chunks);
    lo->codebook_offset = df11i_ld64(r + TEN_CODEBOOK_OFFSET);
    lo->chunks_offset = df11i_ld64(r + TEN_CHUNKS_OFFSET);
    lo->lanes_offset = df11i_ld64(r + TEN_LANES_OFFSET);
    lo->stream_offset = df11i_ld64(r + TEN_STREAM_OFFSET);
    lo->stream_size = df11i_ld64(r + TEN_STREAM_SIZE);
    uint64_t lanes = df11i_n_lane_entries(ne, ti->lane_symbols);
    if (!SECTION_OK(lo->codebook_offset, 2, ps) ||
        !SECTION_OK(lo->chunks_offset, (uint64_t)lo->n_chunks * 4, ps) ||
        !SECTION_OK(lo->lanes_offset, lanes * 2, ps) ||
        !SECTION_OK(lo->stream_offset, lo->stream_size, ps) ||
        !SECTION_OK(lo->data_offset, ne, ps) || lo->chunks_offset % 4 || lo->lanes_offset % 2 ||
        lo->stream_offset % 16 || lo->data_offset % 16 || lo->stream_size % 4 ||
        lo->stream_size < 8)
        return FAIL(DF11_ERR_RANGE, "tensor %u: sections outside or misaligned in its payload", t);
    uint32_t cb_size = df11i_ld32(r + TEN_CODEBOOK_SIZE);
    if (cb_size < 2 || cb_size > 130 || !SECTION_OK(lo->codebook_offset, cb_size, ps))
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: codebook size %u", t, cb_size);
    lo->codebook_size = cb_size;
    ti->stored_bytes = cb_size + (uint64_t)lo->n_chunks * 4 + lanes * 2 + lo->stream_size + ne;
    ti->exponent_bits = (lo->stream_size - 8) * 8;
    return DF11_OK;
}

static df11_status parse_tensor(df11_file *f, uint32_t t, uint64_t *decoded_end)
{
    const uint64_t t_off = df11i_ld64(f->index + HDR_TENSORS_OFFSET);
    const uint8_t *r = f->index + t_off + (uint64_t)t * DF11_TENSOR_RECORD;
    df11_tensor_info *ti = &f->tensors[t];
    df11i_tensor_layout *lo = &f->layouts[t];
    ti->group = df11i_ld32(r + TEN_GROUP);
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
        ti->shape[d] = df11i_ld64(r + TEN_SHAPE + 8 * d);
        if (d < ti->ndim && !df11i_mul_ok(ne, ti->shape[d], &ne))
            return FAIL(DF11_ERR_OVERFLOW, "tensor %u: shape overflows", t);
        if (d >= ti->ndim && ti->shape[d]) /* df11_tensor_info.shape shows them */
            return FAIL(DF11_ERR_CORRUPT, "tensor %u: dim %u of %u is %llu, not 0", t, d, ti->ndim,
                        (unsigned long long)ti->shape[d]);
    }
    ti->n_elements = df11i_ld64(r + TEN_N_ELEMENTS);
    if (ne != ti->n_elements || !df11i_mul_ok(ne, es, &ti->nbytes))
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: %llu elements do not match its shape", t,
                    (unsigned long long)ti->n_elements);
    ti->decoded_offset = df11i_ld64(r + TEN_DECODED_OFFSET);
    if (ti->decoded_offset % DF11_DECODED_ALIGN || ti->decoded_offset != *decoded_end)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: decoded offset %llu", t,
                    (unsigned long long)ti->decoded_offset);
    uint64_t aligned = df11i_align_up(ti->nbytes, DF11_DECODED_ALIGN);
    if (aligned < ti->nbytes || !df11i_add_ok(*decoded_end, aligned, decoded_end) ||
        *decoded_end > gi->decoded_size)
        return FAIL(DF11_ERR_CORRUPT, "tensor %u: past its group's decoded size", t);
    const uint64_t ps = gi->payload_size;
    lo->data_offset = df11i_ld64(r + TEN_DATA_OFFSET);
    memcpy(&ti->exponent_entropy, r + TEN_ENTROPY, 4);
    if (ti->codec == DF11_CODEC_RAW) {
        /* aligned like every section: the GPU copies raw bytes 16 at a time */
        if (!SECTION_OK(lo->data_offset, ti->nbytes, ps) || lo->data_offset % DF11_SECTION_ALIGN)
            return FAIL(DF11_ERR_RANGE, "tensor %u: raw data outside or misaligned in its payload",
                        t);
        ti->stored_bytes = ti->nbytes;
        return DF11_OK;
    }
    return parse_coded_sections(f, t, r, ps);
}

static df11_status parse_tensors(df11_file *f)
{
    for (uint32_t g = 0; g < f->n_groups; g++) {
        const df11_group_info *gi = &f->groups[g];
        uint64_t decoded_end = 0;
        for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
            df11_status st = parse_tensor(f, t, &decoded_end);
            if (st != DF11_OK) return st;
        }
        if (decoded_end != gi->decoded_size)
            return FAIL(DF11_ERR_CORRUPT, "group %u: decoded size %llu, tensors need %llu", g,
                        (unsigned long long)gi->decoded_size, (unsigned long long)decoded_end);
    }
    return DF11_OK;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const df11_tensor_info *const *)a)->name,
                  (*(const df11_tensor_info *const *)b)->name);
}

/* by_name lists the tensors in name order. Sorting pointers to the tensors, not indices,
 * keeps the comparison free of outside state: files open on any number of threads. */
static df11_status sort_names(df11_file *f)
{
    const df11_tensor_info **p = malloc(((size_t)f->n_tensors + 1) * sizeof *p);
    if (!p) return FAIL(DF11_ERR_NO_MEMORY, "name order");
    for (uint32_t t = 0; t < f->n_tensors; t++) p[t] = &f->tensors[t];
    qsort(p, f->n_tensors, sizeof *p, cmp_tensor_name);
    df11_status st = DF11_OK;
    for (uint32_t i = 0; i < f->n_tensors && st == DF11_OK; i++) {
        f->by_name[i] = (uint32_t)(p[i] - f->tensors);
        if (i && strcmp(p[i]->name, p[i - 1]->name) == 0)
            st = FAIL(DF11_ERR_DUPLICATE, "tensor '%s' appears twice", p[i]->name);
    }
    free(p);
    return st;
}

static df11_status file_new(const char *path, df11_file **out)
{
    df11_file *f = calloc(1, sizeof *f);
    if (!f) return FAIL(DF11_ERR_NO_MEMORY, "df11_file");
    f->fd = -1;
    if (!(f->path = strdup(path))) {
        free(f);
        return FAIL(DF11_ERR_NO_MEMORY, "path");
    }
    *out = f;
    return DF11_OK;
}

/* Everything after the source is set up; on failure the caller closes f. */
static df11_status file_parse(df11_file *f)
{
    df11_status st;
    if ((st = read_index(f)) != DF11_OK || (st = alloc_tables(f)) != DF11_OK ||
        (st = copy_names(f)) != DF11_OK || (st = parse_groups(f)) != DF11_OK ||
        (st = parse_tensors(f)) != DF11_OK || (st = sort_names(f)) != DF11_OK)
        return st;
    return DF11_OK;
}

df11_status df11_file_open(const char *path, df11_file **out)
{
    if (!path || !out) return FAIL(DF11_ERR_INVALID_ARG, "df11_file_open: NULL argument");
    *out = NULL;
    df11_file *f = NULL;
    df11_status st = file_new(path, &f);
    if (st != DF11_OK) return st;
    if ((st = df11i_open_regular(path, 0, &f->fd, &f->size)) != DF11_OK ||
        (st = file_parse(f)) != DF11_OK) {
        df11_file_close(f);
        return st;
    }
    *out = f;
    return DF11_OK;
}

df11_status df11i_file_open_memory(const void *data, size_t size, const char *label,
                                   df11_file **out)
{
    if (!data || !out) return FAIL(DF11_ERR_INVALID_ARG, "df11i_file_open_memory: NULL argument");
    *out = NULL;
    df11_file *f = NULL;
    df11_status st = file_new(label ? label : "<memory>", &f);
    if (st != DF11_OK) return st;
    f->mem = data;
    f->size = size;
    if ((st = file_parse(f)) != DF11_OK) {
        df11_file_close(f);
        return st;
    }
    *out = f;
    return DF11_OK;
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
int df11i_file_fd(const df11_file *f) { return f->fd; }
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

const df11i_tensor_layout *df11i_file_tensor_layout(const df11_file *f, uint32_t t)
{
    return f && t < f->n_tensors ? &f->layouts[t] : NULL;
}

df11_status df11_file_find_tensor(const df11_file *f, const char *name, uint32_t *tensor)
{
    if (!f || !name || !tensor)
        return FAIL(DF11_ERR_INVALID_ARG, "df11_file_find_tensor: NULL argument");
    uint32_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[f->by_name[mid]].name, name);
        if (c == 0) {
            *tensor = f->by_name[mid];
            return DF11_OK;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return FAIL(DF11_ERR_NOT_FOUND, "no tensor '%s' in '%s'", name, f->path);
}

df11_status df11_file_layer_group(const df11_file *f, uint32_t layer, uint32_t *group)
{
    if (!f || !group) return FAIL(DF11_ERR_INVALID_ARG, "df11_file_layer_group: NULL argument");
    if (layer >= f->n_layers)
        return FAIL(DF11_ERR_NOT_FOUND, "block %u: the model has %u", layer, f->n_layers);
    *group = f->layer_group[layer];
    return DF11_OK;
}

const char *df11_file_metadata(const df11_file *f, size_t *len)
{
    if (len) *len = (size_t)f->metadata_size;
    return f->metadata;
}

df11_status df11i_group_check_xxh3(const df11_file *f, uint32_t g, uint64_t size, uint64_t sum)
{
    const df11_group_info *gi = &f->groups[g];
    if (size != gi->payload_size)
        return FAIL(DF11_ERR_TRUNCATED, "group '%s': %llu bytes, index says %llu", gi->name,
                    (unsigned long long)size, (unsigned long long)gi->payload_size);
    if (sum != gi->payload_xxh3)
        return FAIL(DF11_ERR_CHECKSUM, "group '%s': payload xxh3 %016llx, index says %016llx",
                    gi->name, (unsigned long long)sum, (unsigned long long)gi->payload_xxh3);
    return DF11_OK;
}

df11_status df11_group_verify(const df11_file *f, uint32_t g, const void *payload, uint64_t size)
{
    if (!f || g >= f->n_groups || (!payload && size))
        return FAIL(DF11_ERR_INVALID_ARG, "df11_group_verify: bad argument");
    /* a size the index disagrees with fails before a byte of the payload is read */
    if (size != f->groups[g].payload_size) return df11i_group_check_xxh3(f, g, size, 0);
    return df11i_group_check_xxh3(f, g, size, XXH3_64bits(payload, size));
}

df11_status df11_file_read_group(const df11_file *f, uint32_t g, void *payload)
{
    if (!f || g >= f->n_groups || !payload)
        return FAIL(DF11_ERR_INVALID_ARG, "df11_file_read_group: bad argument");
    const df11_group_info *gi = &f->groups[g];
    df11_status st = read_at(f, payload, gi->payload_size, gi->payload_offset);
    if (st != DF11_OK) return st;
    return df11_group_verify(f, g, payload, gi->payload_size);
}

df11_status df11i_file_tensor_coded(const df11_file *f, uint32_t t, const void *payload,
                                    df11i_coded *c)
{
    if (!f || t >= f->n_tensors || !payload || !c)
        return FAIL(DF11_ERR_INVALID_ARG, "df11i_file_tensor_coded: bad argument");
    const df11_tensor_info *ti = &f->tensors[t];
    const df11i_tensor_layout *lo = &f->layouts[t];
    if (ti->codec != DF11_CODEC_EXP_HUFFMAN)
        return FAIL(DF11_ERR_INVALID_ARG, "tensor '%s' is not Huffman-coded", ti->name);
    const uint8_t *p = payload;
    memset(c, 0, sizeof *c);
    df11_status st =
        df11i_codebook_read(p + lo->codebook_offset, lo->codebook_size, ti->max_code_len, &c->code);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", ti->name);
    c->n_elements = ti->n_elements;
    c->max_len = ti->max_code_len;
    c->lane_symbols = ti->lane_symbols;
    c->n_chunks = lo->n_chunks;
    c->chunks = (const uint32_t *)(p + lo->chunks_offset);
    c->lanes = (const uint16_t *)(p + lo->lanes_offset);
    c->stream = (const uint32_t *)(p + lo->stream_offset);
    c->stream_bytes = lo->stream_size;
    c->sm = p + lo->data_offset;
    st = df11i_coded_validate(c);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", ti->name);
    return DF11_OK;
}

df11_status df11i_file_tensor_fixed(const df11_file *f, uint32_t t, const void *payload,
                                    df11i_fixed *v)
{
    df11_status st = df11i_file_tensor_fixed_view(f, t, payload, v);
    if (st != DF11_OK) return st;
    st = df11i_fixed_validate(v);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", f->tensors[t].name);
    return DF11_OK;
}

df11_status df11i_file_tensor_fixed_view(const df11_file *f, uint32_t t, const void *payload,
                                         df11i_fixed *v)
{
    if (!f || t >= f->n_tensors || !payload || !v)
        return FAIL(DF11_ERR_INVALID_ARG, "df11i_file_tensor_fixed: bad argument");
    const df11_tensor_info *ti = &f->tensors[t];
    const df11i_tensor_layout *lo = &f->layouts[t];
    if (!df11i_codec_is_fixed(ti->codec))
        return FAIL(DF11_ERR_INVALID_ARG, "tensor '%s' is not fixed-coded", ti->name);
    /* The view's pointers are not const (the codec owns its buffers when it encodes); the
     * decoders only read them. */
    uint8_t *p = (uint8_t *)(uintptr_t)payload;
    memset(v, 0, sizeof *v);
    df11_status st = df11i_fixed_geometry(ti->shape[0], ti->shape[1], &v->g);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", ti->name);
    v->base = p + lo->codebook_offset;
    v->exc_off = (uint32_t *)(void *)(p + lo->chunks_offset);
    v->codes = (uint32_t *)(void *)(p + lo->stream_offset);
    v->exc = p + lo->lanes_offset;
    v->sm = p + lo->data_offset;
    v->n_exc = lo->n_exc;
    v->layout = df11i_fixed_layout_of(ti->codec);
    return DF11_OK;
}

df11_status df11_tensor_decode_host(const df11_file *f, uint32_t t, const void *payload, void *out,
                                    int n_threads)
{
    if (!f || t >= f->n_tensors || !payload || (!out && f->tensors[t].nbytes))
        return FAIL(DF11_ERR_INVALID_ARG, "df11_tensor_decode_host: bad argument");
    const df11_tensor_info *ti = &f->tensors[t];
    if (ti->codec == DF11_CODEC_RAW) {
        if (ti->nbytes)
            memcpy(out, (const uint8_t *)payload + f->layouts[t].data_offset, ti->nbytes);
        return DF11_OK;
    }
    if (df11i_codec_is_fixed(ti->codec)) {
        df11i_fixed v;
        df11_status st = df11i_file_tensor_fixed(f, t, payload, &v);
        if (st == DF11_OK && (st = df11i_fixed_decode(&v, out, n_threads)) != DF11_OK)
            return df11i_fail_context(st, "tensor '%s'", ti->name);
        return st;
    }
    df11i_coded c;
    df11_status st = df11i_file_tensor_coded(f, t, payload, &c);
    if (st != DF11_OK) return st;
    st = df11i_decode_host(&c, out, n_threads);
    if (st != DF11_OK) return df11i_fail_context(st, "tensor '%s'", ti->name);
    return DF11_OK;
}

df11_status df11_group_decode_host(const df11_file *f, uint32_t g, const void *payload, void *out,
                                   int n_threads)
{
    if (!f || g >= f->n_groups || !payload || !out)
        return FAIL(DF11_ERR_INVALID_ARG, "df11_group_decode_host: bad argument");
    const df11_group_info *gi = &f->groups[g];
    uint8_t *o = out;
    for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
        const df11_tensor_info *ti = &f->tensors[t];
        df11_status st = df11_tensor_decode_host(f, t, payload, o + ti->decoded_offset, n_threads);
        if (st != DF11_OK) return st;
        uint64_t end = t + 1 < gi->first_tensor + gi->n_tensors ? f->tensors[t + 1].decoded_offset
                                                                : gi->decoded_size;
        memset(o + ti->decoded_offset + ti->nbytes, 0, end - ti->decoded_offset - ti->nbytes);
    }
    return DF11_OK;
}
