/* df11-decompress: a .df11 file back to a BF16 safetensors file, bit for bit, streamed one
 * group at a time (df11_decompress_path): memory holds the largest group and its payload,
 * not the model (1.7 GiB for Llama-3-8B-shaped weights, whose largest group is the 1 GiB
 * embedding: bench/RESULTS.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "tools/cli.h"

static const char *tool = "df11-decompress";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "output", required_argument, 0, 'o' }, { "threads", required_argument, 0, 'j' },
        { "quiet", no_argument, 0, 'q' },        { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, 'V' },      { 0, 0, 0, 0 }
    };
    const char *out = NULL;
    int quiet = 0, c;
    cli_meter meter;
    df11_decompress_options o = { .progress = cli_meter_update, .progress_ctx = &meter };
    while ((c = getopt_long(argc, argv, "o:j:qhV", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'j':
            if (cli_parse_threads(tool, optarg, &o.n_threads) != CLI_OK) return CLI_USAGE;
            break;
        case 'q': quiet = 1; break;
        case 'h':
            printf("Usage: %s FILE.df11 -o OUT.safetensors [-j THREADS] [-q]\n"
                   "Decode every tensor and write them to one safetensors file whose tensor\n"
                   "bytes are identical to the original's. One group is in memory at a time;\n"
                   "the file appears only once it is complete and on disk.\n\n"
                   "  -o, --output FILE   the safetensors file to write (required)\n"
                   "  -j, --threads N     decode threads (default: all cores)\n"
                   "  -q, --quiet         no progress line (drawn only on a terminal anyway)\n"
                   "  -h, --help, -V, --version\n",
                   tool);
            return CLI_OK;
        case 'V': cli_version(tool); return CLI_OK;
        default: return cli_usage_error(tool, "unknown option");
        }
    }
    if (optind + 1 != argc) return cli_usage_error(tool, "expected one .df11 file");
    if (!out) return cli_usage_error(tool, "missing -o OUT.safetensors");
    cli_meter_begin(&meter, tool, !quiet);
    df11_status st = df11_decompress_path(argv[optind], out, &o);
    cli_meter_clear(&meter); /* a failure's message starts on a line of its own */
    if (st != DF11_OK) return cli_fail(tool, st, "cannot decompress '%s'", argv[optind]);
    return CLI_OK;
}
