/* Setting the per-thread error detail that df11_last_error_detail() returns. */
#ifndef DF11_COMMON_ERROR_H
#define DF11_COMMON_ERROR_H

#include <stdarg.h>

#include "df11/status.h"

#if defined(__GNUC__)
#define DF11_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DF11_PRINTF(f, a)
#endif

/* Records a formatted detail for this thread and returns `status`, so that failures read
 *     return df11i_fail(DF11_ERR_RANGE, "tensor '%s': offset %llu past end", ...); */
df11_status df11i_fail(df11_status status, const char *fmt, ...) DF11_PRINTF(2, 3);
/* The same with a va_list (the CUDA backend library reaches libdf11's detail through it:
 * runtime/cuda_plugin.h). */
df11_status df11i_failv(df11_status status, const char *fmt, va_list ap) DF11_PRINTF(2, 0);
/* Same, appending ": strerror(errno)". */
df11_status df11i_fail_errno(df11_status status, int err, const char *fmt, ...) DF11_PRINTF(3, 4);
/* Prefixes the detail already recorded (by a callee that failed) with a formatted context,
 * "context: callee's detail", and returns `status`. Use it instead of passing
 * df11_last_error_detail() as an argument to df11i_fail, which formats the buffer into
 * itself. */
df11_status df11i_fail_context(df11_status status, const char *fmt, ...) DF11_PRINTF(2, 3);
void df11i_clear_error(void);

#endif
