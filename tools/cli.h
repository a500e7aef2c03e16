/* What the df11 tools and df11-bench share: error lines, --version, flag parsers (ranges,
 * sizes, -j, --codec), a progress line on terminals, removal of partial outputs on signals. */
#ifndef DF11_TOOLS_CLI_H
#define DF11_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "df11.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* "tool: what: strerror (detail)" on stderr; returns CLI_FAIL. */
int cli_fail(const char *tool, df11_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "tool: message" on stderr; returns CLI_USAGE. */
int cli_usage_error(const char *tool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_version(const char *tool);
/* A progress line on stderr for long runs, redrawn in place ("\r"), only when stderr is a
 * terminal and the tool was not asked for --json/--quiet, so pipes and logs never see it:
 *
 *     df11-decompress: 12/35 groups  4.21 GiB / 14.96 GiB  28%  512.3 MiB/s  ETA 0:21
 *
 * cli_meter_update is a df11_progress_fn (ctx = the meter); the line ends with a newline
 * once every group is done. cli_meter_clear wipes a drawn line before the tool prints to
 * the same terminal (the next update draws it again). */
typedef struct cli_meter {
    const char *tool;
    bool on;
    bool drawn; /* a line is on the screen, not ended */
    double t0;  /* ms, df11i_now_ms */
} cli_meter;
void cli_meter_begin(cli_meter *m, const char *tool, bool wanted);
void cli_meter_update(void *meter, const df11_progress *p);
void cli_meter_clear(cli_meter *m);
/* A df11_compress_options.progress callback (bytes only, no group count) drawing the same
 * line; `tool_name` is the tool's name, its first call starts the clock. */
void cli_progress(void *tool_name, uint64_t done, uint64_t total);
/* "1.23 GiB" into a static buffer (one of 8 rotating: up to 8 in one printf). */
const char *cli_bytes(uint64_t bytes);
/* A whole decimal number in [lo, hi] (a flag's value), or -1. */
long cli_parse_range(const char *s, long lo, long hi);
/* An unsigned whole number in [lo, hi] in `base` (0: decimal, 0x hex or 0 octal, as strtoull)
 * into *out; false (and *out untouched) for anything else, a sign included. */
bool cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, int base, uint64_t *out);
/* A positive byte count with an optional K, M, G or T suffix (powers of 1024), e.g. "6G";
 * 0 when `s` is not one. */
uint64_t cli_parse_size(const char *s);
/* --seed S (a whole number, decimal or 0x hex) into *seed: CLI_OK, or CLI_USAGE after the
 * message. */
int cli_parse_seed(const char *tool, const char *s, uint64_t *seed);
/* -j/--threads N (0 = all cores) into *n_threads: CLI_OK, or CLI_USAGE after the message. */
int cli_parse_threads(const char *tool, const char *s, int *n_threads);
/* --codec NAME: "huffman", "fixed" or "fixed8" into *codec, and where `raw` is not NULL "raw"
 * (*raw = 1: tensors stored uncompressed); CLI_OK, or CLI_USAGE after the message. */
int cli_parse_codec(const char *tool, const char *s, df11_codec *codec, int *raw);
/* The --codec name of a codec (cli_parse_codec's inverse; "raw" for DF11_CODEC_RAW). */
const char *cli_codec_name(df11_codec codec);
/* SIGINT, SIGTERM, SIGHUP and SIGPIPE (those not ignored) first unlink the named
 * temporaries of output files being written (common/atomic_file.h), then end the process
 * as they would have. Runs before main() in every tool that links cli.c, so no writing
 * tool can forget it; calling it again does nothing. */
void cli_signals_install(void);

#endif
