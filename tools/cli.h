/* What every df11 tool shares: error lines, --version, a progress bar on terminals. */
#ifndef DF11_TOOLS_CLI_H
#define DF11_TOOLS_CLI_H

#include <stdint.h>

#include "df11.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* "tool: what: strerror (detail)" on stderr; returns CLI_FAIL. */
int cli_fail(const char *tool, df11_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "tool: message" on stderr; returns CLI_USAGE. */
int cli_usage_error(const char *tool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_version(const char *tool);
/* A df11_compress_options.progress callback: a bar on stderr when it is a terminal. */
void cli_progress(void *tool_name, uint64_t done, uint64_t total);
/* "1.23 GiB" into a static buffer (one of 8 rotating: up to 8 in one printf). */
const char *cli_bytes(uint64_t bytes);
/* A whole decimal number in [lo, hi] (a flag's value), or -1. */
long cli_parse_range(const char *s, long lo, long hi);
/* SIGINT, SIGTERM, SIGHUP and SIGPIPE (those not ignored) first unlink the named
 * temporaries of output files being written (common/atomic_file.h), then end the process
 * as they would have. Runs before main() in every tool that links cli.c, so no writing
 * tool can forget it; calling it again does nothing. */
void cli_signals_install(void);

#endif
