/* Builds a group's GPU decode plan on the host (kernels/decode.h): a descriptor per tensor,
 * the CTA ranges, and each tensor's decode table in the kernel's entry format (EXP_FIXED
 * tensors: a descriptor only, decoded by their own launch). Pure host
 * code, no CUDA calls: the caller uploads the blob. All payload checks happen here (through
 * df11i_file_tensor_coded), so that the kernel can trust the offsets it is given.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"
#include "common/util.h"
#include "kernels/decode.h"
#include "loader/container.h"

/* Warps (= chunks) per CTA. The launch ends when its busiest SM does, and an SM's time
 * follows the warps it holds (measured on the Llama-3-8B block, 3328 chunks: 68% of copy
 * with 7-warp CTAs = 28 warps on the busiest SM, 63% with 6 or 8 = 30 or 32). So pick the
 * CTA size that puts the fewest warps on the busiest SM, summed over waves, given what the
 * device holds at once; ties go to bigger CTAs (fewer table loads). Without a device to
 * ask, 7 warps for big groups and 2 for small ones. */
static uint64_t group_ctas(const df11_file *file, const df11_group_info *gi, uint32_t warps)
{
    uint64_t ctas = 0;
    for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
        const df11_tensor_info *ti = df11_file_tensor(file, t);
        if (df11i_codec_is_fixed(ti->codec)) continue; /* its own launch */
        ctas += ti->codec == DF11_CODEC_RAW
                    ? (ti->nbytes + DF11_RAW_CTA_BYTES - 1) / DF11_RAW_CTA_BYTES
                    : (df11i_file_tensor_layout(file, t)->n_chunks + warps - 1) / warps;
    }
    return ctas;
}

static uint32_t warps_per_cta(const df11_file *file, const df11_group_info *gi, uint32_t max_len,
                              uint32_t lut_units, uint64_t chunks)
{
    uint32_t best = 0;
    uint64_t best_cost = UINT64_MAX;
    for (uint32_t w = 1; w <= 32; w++) {
        int sms, per_sm = df11i_gpu_ctas_per_sm(w, lut_units, &sms);
        if (per_sm <= 0 || sms <= 0) continue;
        uint64_t ctas = group_ctas(file, gi, w), slots = (uint64_t)sms * (uint64_t)per_sm;
        uint64_t rest = ctas % slots;
        uint64_t cost = ctas / slots * slots / (uint64_t)sms * w +
                        (rest + (uint64_t)sms - 1) / (uint64_t)sms * w;
        if (cost <= best_cost) {
            best = w;
            best_cost = cost;
        }
    }
    if (best) return best;
    if (max_len >= 14) return 8;
    return chunks > 2048 ? 7 : 2;
}

/* The codec's table entry (len << 8 | sym, or DF11_LUT_INVALID) in the kernel's format:
 * sym << 7 | len, so that `entry & 0x7f80` is the exponent already in place in a BF16 and
 * `entry & 31` the shift; bit 15 marks bit patterns no code starts with (they consume L
 * bits and raise the error flag). */
static uint16_t gpu_entry(uint16_t e, uint32_t max_len)
{
    if (e == DF11_LUT_INVALID) return (uint16_t)(0x8000u | max_len);
    return (uint16_t)((uint32_t)(e & 0xff) << 7 | (uint32_t)(e >> 8));
}

/* The plan's layout from the index alone (no payload, no device): its size, and what the
 * header needs. The one place that sizes a plan: df11i_gpu_plan_size reports it, and
 * df11i_gpu_plan_build lays the blob out by it (and checks that it filled exactly that). */
typedef struct {
    size_t size;     /* bytes of the blob */
    size_t luts_off; /* first decode table: after the header and descriptors */
    uint32_t max_len, lut_units;
    uint64_t chunks;
} plan_layout;

static df11_status plan_layout_of(const df11_file *file, const df11_group_info *gi, plan_layout *pl)
{
    memset(pl, 0, sizeof *pl);
    pl->luts_off = df11i_align_up(
        sizeof(df11i_gpu_plan_header) + (size_t)gi->n_tensors * sizeof(df11i_gpu_tensor_desc), 16);
    pl->size = pl->luts_off;
    for (uint32_t i = 0; i < gi->n_tensors; i++) {
        const df11_tensor_info *ti = df11_file_tensor(file, gi->first_tensor + i);
        if (ti->codec != DF11_CODEC_EXP_HUFFMAN) continue;
        if (ti->max_code_len < 1 || ti->max_code_len > DF11_MAX_CODE_LEN)
            return df11i_fail(DF11_ERR_CORRUPT, "tensor '%s': max_code_len %u", ti->name,
                              ti->max_code_len);
        if (ti->max_code_len > pl->max_len) pl->max_len = ti->max_code_len;
        uint32_t units = DF11_GPU_LUT_UNITS(ti->max_code_len);
        if (units > pl->lut_units) pl->lut_units = units;
        pl->chunks += df11i_file_tensor_layout(file, gi->first_tensor + i)->n_chunks;
        pl->size += DF11_GPU_LUT_BYTES(units);
    }
    /* A decode table a Huffman tensor, up to 64 KiB each: a group of many tiny tensors (a
     * hostile index) would cost far more plan than weights, and past 4 GiB its descriptors'
     * 32-bit table offsets would wrap onto another tensor's table (wrong weights). Real
     * groups have a few tables against megabytes of weights. */
    const uint64_t tables = pl->size - pl->luts_off;
    if (pl->size > UINT32_MAX || tables > gi->decoded_size + ((uint64_t)64 << 20))
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "group '%s': %u tensors need %llu bytes of GPU decode tables for %llu "
                          "bytes of weights (at most those plus 64 MiB)",
                          gi->name, gi->n_tensors, (unsigned long long)tables,
                          (unsigned long long)gi->decoded_size);
    return DF11_OK;
}

df11_status df11i_gpu_plan_size(const df11_file *file, uint32_t group, size_t *bytes)
{
    if (!file || !bytes)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_plan_size: NULL argument");
    *bytes = 0;
    const df11_group_info *gi = df11_file_group(file, group);
    if (!gi) return df11i_fail(DF11_ERR_NOT_FOUND, "no group %u", group);
    plan_layout pl;
    df11_status st = plan_layout_of(file, gi, &pl);
    if (st == DF11_OK) *bytes = pl.size;
    return st;
}

df11_status df11i_gpu_plan_build(const df11_file *file, uint32_t group, const void *payload,
                                 void **blob, size_t *blob_size)
{
    if (!file || !payload || !blob || !blob_size)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_plan_build: NULL argument");
    *blob = NULL;
    *blob_size = 0;
    const df11_group_info *gi = df11_file_group(file, group);
    if (!gi) return df11i_fail(DF11_ERR_NOT_FOUND, "no group %u", group);

    /* Pass 1: sizes. */
    plan_layout pl;
    df11_status st = plan_layout_of(file, gi, &pl);
    if (st != DF11_OK) return st;
    const size_t size = pl.size;
    uint8_t *p = calloc(1, size);
    if (!p) return df11i_fail(DF11_ERR_NO_MEMORY, "GPU plan of %zu bytes", size);
    df11i_gpu_plan_header *h = (df11i_gpu_plan_header *)p;
    df11i_gpu_tensor_desc *ds = (df11i_gpu_tensor_desc *)(p + sizeof *h);
    h->n_tensors = gi->n_tensors;
    h->max_lut_entries = pl.lut_units;
    h->warps_per_cta = warps_per_cta(file, gi, pl.max_len, pl.lut_units, pl.chunks);

    /* Pass 2: descriptors and tables. */
    uint64_t ctas = 0, out_end = 0;
    size_t lut_off = pl.luts_off;
    for (uint32_t i = 0; i < gi->n_tensors && st == DF11_OK; i++) {
        uint32_t t = gi->first_tensor + i;
        const df11_tensor_info *ti = df11_file_tensor(file, t);
        const df11i_tensor_layout *lay = df11i_file_tensor_layout(file, t);
        df11i_gpu_tensor_desc *d = &ds[i];
        /* Tensors must tile the decoded group exactly, or the kernel would leave holes. */
        if (ti->decoded_offset != out_end) {
            st = df11i_fail(DF11_ERR_CORRUPT, "tensor '%s': decoded_offset %llu, expected %llu",
                            ti->name, (unsigned long long)ti->decoded_offset,
                            (unsigned long long)out_end);
            break;
        }
        out_end = df11i_align_up(ti->decoded_offset + ti->nbytes, 256);
        d->out_off = ti->decoded_offset;
        d->codec = ti->codec;
        d->first_cta = (uint32_t)ctas;
        if (ti->codec == DF11_CODEC_RAW) {
            if (!df11i_range_ok(lay->data_offset, ti->nbytes, gi->payload_size)) {
                st =
                    df11i_fail(DF11_ERR_RANGE, "tensor '%s': raw bytes past the payload", ti->name);
                break;
            }
            d->n_elements = ti->nbytes;
            d->data_off = lay->data_offset;
            ctas += (ti->nbytes + DF11_RAW_CTA_BYTES - 1) / DF11_RAW_CTA_BYTES;
            continue;
        }
        if (df11i_codec_is_fixed(ti->codec)) {
            /* Validated whole here, on the host, like a Huffman tensor's tables: the
             * kernel then trusts every offset. No CTA of the group kernel: first_cta
             * equals the next tensor's, so the kernel's search never lands on it. */
            df11i_fixed v;
            if ((st = df11i_file_tensor_fixed(file, t, payload, &v)) != DF11_OK) break;
            d->n_elements = ti->n_elements;
            d->rows = v.g.rows;
            d->cols = v.g.cols;
            d->n_chunks = (uint32_t)v.g.n_tiles;
            d->base_off = lay->codebook_offset;
            d->chunks_off = lay->chunks_offset;
            d->stream_off = lay->stream_offset;
            d->stream_size = lay->stream_size;
            d->lanes_off = lay->lanes_offset;
            d->rec_hi_off = lay->lanes_offset + df11i_fixed_rec_hi_offset(v.n_exc);
            d->data_off = lay->data_offset;
            continue;
        }
        df11i_coded coded;
        st = df11i_file_tensor_coded(file, t, payload, &coded);
        if (st != DF11_OK) break;
        if (coded.n_chunks > UINT32_MAX || coded.stream_bytes / 16 >= UINT32_MAX ||
            (coded.n_chunks && (coded.stream_bytes < 8 || coded.stream_bytes % 4 ||
                                lay->stream_offset % 16 || lay->data_offset % 8))) {
            st = df11i_fail(DF11_ERR_CORRUPT, "tensor '%s': stream layout unfit for the GPU",
                            ti->name);
            break;
        }
        d->n_elements = ti->n_elements;
        d->chunks_off = lay->chunks_offset;
        d->lanes_off = lay->lanes_offset;
        d->stream_off = lay->stream_offset;
        d->stream_size = coded.stream_bytes;
        d->data_off = lay->data_offset;
        d->max_len = ti->max_code_len;
        d->lane_symbols = ti->lane_symbols;
        d->n_chunks = (uint32_t)coded.n_chunks;
        d->lut_off = (uint32_t)lut_off;
        uint32_t L = ti->max_code_len;
        uint16_t *lut = (uint16_t *)(p + lut_off);
        coded.code.max_len = L;
        df11i_lut_build(&coded.code, lut);
        for (uint32_t e = 0; e < (1u << L); e++) lut[e] = gpu_entry(lut[e], L);
        lut_off += DF11_GPU_LUT_BYTES(DF11_GPU_LUT_UNITS(L));
        ctas += (coded.n_chunks + h->warps_per_cta - 1) / h->warps_per_cta;
    }
    if (st == DF11_OK && out_end != gi->decoded_size)
        st =
            df11i_fail(DF11_ERR_CORRUPT, "group '%s': tensors end at %llu, decoded_size %llu",
                       gi->name, (unsigned long long)out_end, (unsigned long long)gi->decoded_size);
    if (st == DF11_OK && lut_off != size) /* pass 2 must fill exactly what pass 1 sized */
        st = df11i_fail(DF11_ERR_STATE, "group '%s': plan tables end at %zu of %zu bytes", gi->name,
                        lut_off, size);
    if (st == DF11_OK && ctas > INT32_MAX)
        st = df11i_fail(DF11_ERR_OVERFLOW, "group '%s': %llu CTAs", gi->name,
                        (unsigned long long)ctas);
    if (st != DF11_OK) {
        free(p);
        return st;
    }
    h->n_ctas = (uint32_t)ctas;
    *blob = p;
    *blob_size = size;
    return DF11_OK;
}
