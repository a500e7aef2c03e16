/* Scalar BF16 / F16 / F32 conversions on bit patterns, for the host (runtime/convert.c)
 * and the GPU (kernels/convert.cu) alike, so that both backends give the same bits.
 * Rounding is to nearest, ties to even; a NaN stays a NaN of the same sign (its top payload
 * bits kept, the quiet bit set); out-of-range values become ±Inf, tiny ones subnormals or
 * ±0. */
#ifndef DF11_COMMON_FPCONV_H
#define DF11_COMMON_FPCONV_H

#include <stdint.h>

#ifdef __CUDACC__
#define DF11I_HD __host__ __device__
#else
#define DF11I_HD
#endif

/* BF16 is the top half of an F32: exact. */
static inline DF11I_HD uint32_t df11i_bf16_to_f32_bits(uint16_t b) { return (uint32_t)b << 16; }

static inline DF11I_HD uint16_t df11i_f32_bits_to_bf16(uint32_t u)
{
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16); /* carries into Inf */
}

static inline DF11I_HD uint16_t df11i_f32_bits_to_f16(uint32_t u)
{
    const uint32_t sign = (u >> 16) & 0x8000u, exp = (u >> 23) & 0xFFu, man = u & 0x7FFFFFu;
    if (exp == 0xFFu) return (uint16_t)(sign | 0x7C00u | (man ? 0x200u | (man >> 13) : 0u));
    const int e = (int)exp - 127 + 15; /* F16's biased exponent */
    if (e >= 31) return (uint16_t)(sign | 0x7C00u);
    if (e <= 0) { /* a subnormal: the value is man24 × 2^(exp − 150), F16's unit 2^−24 */
        const int shift = 14 - e;
        if (exp == 0 || shift > 24) return (uint16_t)sign; /* below half the smallest */
        const uint32_t m24 = man | 0x800000u, half = 1u << (shift - 1);
        const uint32_t rem = m24 & ((half << 1) - 1u);
        uint32_t m = m24 >> shift;
        if (rem > half || (rem == half && (m & 1u))) m++; /* may become the smallest normal */
        return (uint16_t)(sign | m);
    }
    uint32_t r = sign | ((uint32_t)e << 10) | (man >> 13);
    const uint32_t rem = man & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++; /* carries into Inf */
    return (uint16_t)r;
}

static inline DF11I_HD uint16_t df11i_bf16_to_f16(uint16_t b)
{
    return df11i_f32_bits_to_f16(df11i_bf16_to_f32_bits(b));
}

#endif
