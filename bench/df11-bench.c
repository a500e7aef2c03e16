/* df11-bench: the benchmarks behind bench/RESULTS.md, one subcommand each. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "tools/cli.h"

static const struct {
    const char *name, *what;
    int (*main)(int, char **);
} commands[] = {
    { "decode", "decode a Llama-3-8B-shaped block: GPU kernel vs copy, or CPU", bench_decode_main },
    { "codec", "CPU codec: ratio against the entropy bound, encoder and decoder speed",
      bench_codec_main },
    { "pipeline", "load + decode + GEMM pipeline over a model", bench_pipeline_main },
    { "matmul", "the matmul op over L 8B blocks (fixed, Huffman) against the best cuBLAS BF16",
      bench_matmul_main },
    { "read",
      "the file reader: a model's groups from storage, checked, as the file tier reads them",
      bench_read_main },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: df11-bench COMMAND [OPTIONS]   (df11-bench COMMAND --help)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        cli_version("df11-bench");
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "df11-bench: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}
