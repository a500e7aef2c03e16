#include "common/utf8.h"

size_t df11i_utf8_seq(const char *s, size_t n, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (!n) return 0;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if ((u[0] & 0xe0) == 0xc0)
        len = 2, v = u[0] & 0x1f, min = 0x80;
    else if ((u[0] & 0xf0) == 0xe0)
        len = 3, v = u[0] & 0x0f, min = 0x800;
    else if ((u[0] & 0xf8) == 0xf0)
        len = 4, v = u[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (u[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

int df11i_utf8_control(uint32_t cp) { return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f); }

int df11i_utf8_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        const size_t k = df11i_utf8_seq(s + i, n - i, &cp);
        if (!k || df11i_utf8_control(cp)) return 0;
        i += k;
    }
    return 1;
}
