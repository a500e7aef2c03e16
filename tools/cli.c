#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "common/clock.h"
#include "tools/cli.h"

int cli_fail(const char *tool, df11_status st, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    const char *detail = df11_last_error_detail();
    fprintf(stderr, ": %s%s%s%s\n", df11_strerror(st), detail[0] ? " (" : "", detail,
            detail[0] ? ")" : "");
    return CLI_FAIL;
}

int cli_usage_error(const char *tool, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", tool);
    return CLI_USAGE;
}

void cli_version(const char *tool) { printf("%s %s\n", tool, DF11_VERSION_STRING); }

void cli_meter_begin(cli_meter *m, const char *tool, bool wanted)
{
    *m = (cli_meter){ .tool = tool, .on = wanted && isatty(STDERR_FILENO), .t0 = df11i_now_ms() };
}

void cli_meter_update(void *meter, const df11_progress *p)
{
    cli_meter *m = meter;
    if (!m->on) return;
    double s = (df11i_now_ms() - m->t0) / 1e3;
    double rate = s > 0 ? (double)p->bytes_done / s : 0;
    char groups[40] = "", pct[16] = "", eta[40] = "";
    if (p->groups_total)
        snprintf(groups, sizeof groups, "%u/%u groups  ", p->groups_done, p->groups_total);
    if (p->bytes_total)
        snprintf(pct, sizeof pct, "  %3.0f%%",
                 100.0 * (double)p->bytes_done / (double)p->bytes_total);
    if (rate > 0 && p->bytes_done < p->bytes_total) {
        uint64_t left = (uint64_t)((double)(p->bytes_total - p->bytes_done) / rate + 0.5);
        snprintf(eta, sizeof eta, "  ETA %llu:%02llu", (unsigned long long)(left / 60),
                 (unsigned long long)(left % 60));
    }
    /* \033[K: clear what a longer earlier line left to the right */
    fprintf(stderr, "\r%s: %s%s / %s%s  %s/s%s\033[K", m->tool, groups, cli_bytes(p->bytes_done),
            cli_bytes(p->bytes_total), pct, cli_bytes((uint64_t)rate), eta);
    bool done = p->bytes_done >= p->bytes_total &&
                (p->groups_total == 0 || p->groups_done >= p->groups_total);
    if (done) fputc('\n', stderr);
    m->drawn = !done;
    fflush(stderr);
}

void cli_meter_clear(cli_meter *m)
{
    if (!m->drawn) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    m->drawn = false;
}

void cli_progress(void *tool_name, uint64_t done, uint64_t total)
{
    static cli_meter m; /* one run per process: each tool compresses or writes once */
    if (!m.tool) cli_meter_begin(&m, tool_name, true);
    cli_meter_update(&m, &(df11_progress){ .bytes_done = done, .bytes_total = total });
}

const char *cli_bytes(uint64_t b)
{
    static char buf[8][32]; /* df11-memstat's plan lines take up to five at once */
    static int next;
    char *s = buf[next++ & 7];
    const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(s, 32, u ? "%.2f %s" : "%.0f %s", v, unit[u]);
    return s;
}

static void on_fatal_signal(int sig)
{
    df11i_atomic_file_unlink_temporaries(); /* async-signal-safe */
    /* SA_RESETHAND restored the default action; the signal is delivered again, and kills,
     * when the handler returns. */
    raise(sig);
}

__attribute__((constructor)) void cli_signals_install(void)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction old, sa = { .sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND };
        sigemptyset(&sa.sa_mask);
        /* nohup and friends ignore signals on purpose: keep that (and a handler that is
         * there already, ours included). */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
            sigaction(sigs[i], &sa, NULL);
    }
}

int cli_parse_threads(const char *tool, const char *s, int *n_threads)
{
    long v = cli_parse_range(s, 0, 4096);
    if (v < 0)
        return cli_usage_error(tool, "--threads '%s': want a number of threads (0 = all cores)", s);
    *n_threads = (int)v;
    return CLI_OK;
}

int cli_parse_seed(const char *tool, const char *s, uint64_t *seed)
{
    if (!cli_parse_u64(s, 0, UINT64_MAX, 0, seed))
        return cli_usage_error(tool, "--seed '%s': want a whole number", s);
    return CLI_OK;
}

int cli_parse_codec(const char *tool, const char *s, df11_codec *codec, int *raw)
{
    if (strcmp(s, "huffman") == 0)
        *codec = DF11_CODEC_EXP_HUFFMAN;
    else if (strcmp(s, "fixed") == 0)
        *codec = DF11_CODEC_EXP_FIXED;
    else if (strcmp(s, "fixed8") == 0)
        *codec = DF11_CODEC_EXP_FIXED8;
    else if (raw && strcmp(s, "raw") == 0)
        *raw = 1;
    else
        return cli_usage_error(tool, "--codec '%s': want %s", s,
                               raw ? "huffman, fixed, fixed8 or raw" : "huffman, fixed or fixed8");
    return CLI_OK;
}

const char *cli_codec_name(df11_codec codec)
{
    switch (codec) {
    case DF11_CODEC_RAW: return "raw";
    case DF11_CODEC_EXP_HUFFMAN: return "huffman";
    case DF11_CODEC_EXP_FIXED: return "fixed";
    case DF11_CODEC_EXP_FIXED8: return "fixed8";
    }
    return "unknown";
}

uint64_t cli_parse_size(const char *s)
{
    char *end;
    errno = 0;
    if (!s || !isdigit((unsigned char)s[0])) return 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    const char *units = "KMGT",
               *u = *end && !end[1] ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u && *u) {
        shift = 10 * (int)(u - units + 1);
        end++;
    }
    if (errno || *end || v == 0 || v > (UINT64_MAX >> shift)) return 0;
    return (uint64_t)v << shift;
}

bool cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, int base, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s[0] || s[0] == '-' || s[0] == '+' || isspace((unsigned char)s[0])) return false;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

long cli_parse_range(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    return v;
}
