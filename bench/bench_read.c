/* df11-bench read: the file reader (loader/reader.h) on this machine's storage. Every group
 * of FILE read and checked one group a call, as the streamed file tier's reader thread reads
 * them, and all groups in one call, as a model's load reads them, against xxh3 alone over the
 * same bytes in memory (what the check costs where it is not hidden). Reads go through
 * O_DIRECT where the filesystem allows it, so the page cache does not flatter them; the
 * output says when they fell back to pread or buffered reads. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bench/bench.h"
#include "common/util.h"
#include "loader/reader.h"
#include "tools/cli.h"

#define TOOL "df11-bench read"

static void usage(FILE *f)
{
    fprintf(f, "usage: df11-bench read FILE.df11 [--reps N]\n"
               "  reads every group of FILE with the runtime's reader: one group a call (the\n"
               "  streamed file tier) and all groups in one call (a model's load), each checked\n"
               "  with xxh3; GB/s, median of N passes (default 3), and xxh3 alone in memory\n");
}

static volatile uint64_t hash_sink;

static df11_status sink_nothing(void *ctx, uint32_t group, const void *payload, int buf)
{
    (void)ctx, (void)group, (void)payload, (void)buf;
    return DF11_OK;
}
static df11_status reuse_now(void *ctx, int buf)
{
    (void)ctx, (void)buf;
    return DF11_OK;
}

int bench_read_main(int argc, char **argv)
{
    static const struct option opts[] = { { "reps", required_argument, 0, 'r' },
                                          { "help", no_argument, 0, 'h' },
                                          { 0, 0, 0, 0 } };
    int reps = 3, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if ((reps = (int)cli_parse_range(optarg, 1, 100)) < 0)
                return cli_usage_error(TOOL, "--reps takes 1..100, not '%s'", optarg);
            break;
        case 'h': usage(stdout); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *path = argv[optind];
    df11_file *f;
    df11_status s = df11_file_open(path, &f);
    if (s != DF11_OK) return cli_fail(TOOL, s, "'%s'", path);
    const uint32_t n = df11_file_n_groups(f);
    uint64_t size = DF11_READ_ALIGN, total = 0;
    for (uint32_t g = 0; g < n; g++) {
        const uint64_t need = df11i_align_up(df11_file_group(f, g)->payload_size, DF11_READ_ALIGN);
        if (need > size) size = need;
        total += df11_file_group(f, g)->payload_size;
    }
    void *bufs[2] = { NULL, NULL };
    double *t_one = calloc((size_t)reps, sizeof *t_one),
           *t_all = calloc((size_t)reps, sizeof *t_all),
           *t_hash = calloc((size_t)reps, sizeof *t_hash);
    int rc = CLI_OK;
    if (!t_one || !t_all || !t_hash || posix_memalign(&bufs[0], DF11_READ_ALIGN, size) ||
        posix_memalign(&bufs[1], DF11_READ_ALIGN, size)) {
        rc = cli_fail(TOOL, DF11_ERR_NO_MEMORY, "two read buffers of %s", cli_bytes(size));
        goto out;
    }
    /* faulted in first: the runtime's bounce buffers are pinned, never fresh pages */
    memset(bufs[0], 0, size);
    memset(bufs[1], 0, size);
    const df11i_read_sink sink = { .consume = sink_nothing, .reuse = reuse_now };
    for (int r = 0; r < reps && rc == CLI_OK; r++) {
        double t0 = bench_now_s();
        for (uint32_t g = 0; g < n && s == DF11_OK; g++)
            s = df11i_read_groups(f, g, 1, bufs, size, &sink);
        t_one[r] = bench_now_s() - t0;
        t0 = bench_now_s();
        if (s == DF11_OK) s = df11i_read_groups(f, 0, n, bufs, size, &sink);
        t_all[r] = bench_now_s() - t0;
        if (s != DF11_OK) rc = cli_fail(TOOL, s, "reading '%s'", path);
        /* xxh3 alone: as many bytes as each group's payload, hashed from a buffer already in
         * memory (the reads above filled it) */
        t0 = bench_now_s();
        uint64_t sum = 0;
        for (uint32_t g = 0; g < n; g++)
            sum ^= XXH3_64bits(bufs[0], (size_t)df11_file_group(f, g)->payload_size);
        t_hash[r] = bench_now_s() - t0;
        hash_sink ^= sum; /* the hashes are used */
    }
    if (rc != CLI_OK) goto out;
    const double one = total / bench_median(t_one, reps) / 1e9,
                 all = total / bench_median(t_all, reps) / 1e9,
                 hash = total / bench_median(t_hash, reps) / 1e9;
    const char *note = df11i_reader_note();
    printf("%s: %u groups, %s of payload, median of %d passes\n", path, n, cli_bytes(total), reps);
    printf("reads: %s\n", note ? note : "io_uring, O_DIRECT where the filesystem allows it");
    printf(
        "| one group a call (file tier) | all groups in one call (load) | xxh3 alone | one / all |\n");
    printf("|---|---|---|---|\n");
    printf("| %.2f GB/s | %.2f GB/s | %.2f GB/s | %.3f |\n", one, all, hash, one / all);
out:
    free(bufs[0]);
    free(bufs[1]);
    free(t_one);
    free(t_all);
    free(t_hash);
    df11_file_close(f);
    return rc;
}
