/* The error convention of the example engine's file readers (tokenizer.c,
 * tokenizer_json.c): a message formatted into the caller's buffer (NULL or errlen 0: none)
 * and -1 returned, so that `return errmsg(err, errlen, "...", ...);` reports and fails in
 * one statement. */
#ifndef DF11_RUN_ERRMSG_H
#define DF11_RUN_ERRMSG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline int errmsg(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int errmsg(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

#endif
