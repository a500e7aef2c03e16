/* Small arithmetic helpers shared by every module: checked sizes, alignment, LE access. */
#ifndef DF11_COMMON_UTIL_H
#define DF11_COMMON_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "df11 reads its little-endian format by memcpy; port the load/store helpers first"
#endif

static inline uint64_t df11i_align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* false on overflow */
static inline bool df11i_mul_ok(uint64_t a, uint64_t b, uint64_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}
static inline bool df11i_add_ok(uint64_t a, uint64_t b, uint64_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}
/* [off, off+len) lies inside [0, size) */
static inline bool df11i_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static inline uint16_t df11i_ld16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t df11i_ld32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t df11i_ld64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void df11i_st16(void *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void df11i_st32(void *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void df11i_st64(void *p, uint64_t v) { memcpy(p, &v, 8); }

#endif
