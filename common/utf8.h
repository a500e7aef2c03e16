/* UTF-8 text checks for names and paths that come from files and pages: tensor and group
 * names must be text a terminal or a JSON printer can show as is; a model path may hold any
 * bytes, so its printers escape what is not text. */
#ifndef DF11_COMMON_UTF8_H
#define DF11_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the well-formed UTF-8 sequence at s[0..n), its code point in *cp; 0 when
 * s does not start one (a stray continuation byte, an overlong form, a surrogate, a code
 * point past U+10FFFF, or a sequence cut by n). */
size_t df11i_utf8_seq(const char *s, size_t n, uint32_t *cp);

/* 1 when code point cp is a control character: C0, DEL or C1. */
int df11i_utf8_control(uint32_t cp);

/* 1 when s[0..n) is well-formed UTF-8 with no control character (so no NUL either). */
int df11i_utf8_text(const char *s, size_t n);

#endif
