#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/atomic_file.h"
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

void cli_progress(void *tool_name, uint64_t done, uint64_t total)
{
    if (!isatty(STDERR_FILENO) || total == 0) return;
    int width = 40, filled = (int)((double)done / (double)total * width);
    fprintf(stderr, "\r%s [", (const char *)tool_name);
    for (int i = 0; i < width; i++) fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %5.1f%% %s", 100.0 * (double)done / (double)total, cli_bytes(done));
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
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

long cli_parse_range(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    return v;
}
