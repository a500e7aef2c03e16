/* Status names and the per-thread error detail. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

static _Thread_local char detail[512];

const char *df11_strerror(df11_status status)
{
    switch (status) {
    case DF11_OK: return "success";
    case DF11_ERR_INVALID_ARG: return "invalid argument";
    case DF11_ERR_NO_MEMORY: return "out of host memory";
    case DF11_ERR_IO: return "I/O error";
    case DF11_ERR_NOT_DF11: return "not a df11 file";
    case DF11_ERR_VERSION: return "unsupported df11 version";
    case DF11_ERR_TRUNCATED: return "file truncated";
    case DF11_ERR_CORRUPT: return "corrupt data";
    case DF11_ERR_CHECKSUM: return "checksum mismatch";
    case DF11_ERR_SAFETENSORS: return "malformed safetensors";
    case DF11_ERR_DTYPE: return "unsupported dtype";
    case DF11_ERR_OVERFLOW: return "size overflow";
    case DF11_ERR_DUPLICATE: return "duplicate tensor name";
    case DF11_ERR_NOT_FOUND: return "not found";
    case DF11_ERR_RANGE: return "offset out of range";
    case DF11_ERR_NO_DEVICE: return "no CUDA device";
    case DF11_ERR_DEVICE: return "CUDA error";
    case DF11_ERR_DEVICE_MEMORY: return "out of model memory (GPU memory or memory_limit)";
    case DF11_ERR_STATE: return "call out of order";
    case DF11_ERR_BUSY: return "all arena slots are held";
    case DF11_ERR_UNSUPPORTED: return "not supported by this build";
    }
    return "unknown df11 status";
}

const char *df11_last_error_detail(void) { return detail; }

void df11i_clear_error(void) { detail[0] = '\0'; }

df11_status df11i_failv(df11_status status, const char *fmt, va_list ap)
{
    vsnprintf(detail, sizeof detail, fmt, ap);
    return status;
}

df11_status df11i_fail(df11_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    status = df11i_failv(status, fmt, ap);
    va_end(ap);
    return status;
}

df11_status df11i_fail_errno(df11_status status, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof detail)
        snprintf(detail + n, sizeof detail - (size_t)n, ": %s", strerror(err));
    return status;
}

df11_status df11i_fail_context(df11_status status, const char *fmt, ...)
{
    char inner[sizeof detail];
    memcpy(inner, detail, sizeof inner);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 2 >= sizeof detail || !inner[0]) return status;
    /* Appended by hand: snprintf of a whole buffer-sized string warns (-Wformat-truncation),
     * and cutting the callee's reason short is the intended behaviour. */
    size_t at = (size_t)n, room = sizeof detail - at - 3;
    size_t len = strnlen(inner, room);
    memcpy(detail + at, ": ", 2);
    memcpy(detail + at + 2, inner, len);
    detail[at + 2 + len] = '\0';
    return status;
}
