/* df11-decompress: a .df11 file back to a BF16 safetensors file, bit for bit. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "tools/cli.h"

static const char *tool = "df11-decompress";

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "output", required_argument, 0, 'o' },
                                          { "threads", required_argument, 0, 'j' },
                                          { "help", no_argument, 0, 'h' },
                                          { "version", no_argument, 0, 'V' },
                                          { 0, 0, 0, 0 } };
    const char *out = NULL;
    int threads = 0, c;
    while ((c = getopt_long(argc, argv, "o:j:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'j': threads = atoi(optarg); break;
        case 'h':
            printf("Usage: %s FILE.df11 -o OUT.safetensors [-j THREADS]\n"
                   "Decode every tensor and write them to one safetensors file whose tensor\n"
                   "bytes are identical to the original's.\n",
                   tool);
            return CLI_OK;
        case 'V': cli_version(tool); return CLI_OK;
        default: return cli_usage_error(tool, "unknown option");
        }
    }
    if (optind + 1 != argc) return cli_usage_error(tool, "expected one .df11 file");
    if (!out) return cli_usage_error(tool, "missing -o OUT.safetensors");
    df11_status st = df11_decompress_to_safetensors(argv[optind], out, threads);
    if (st != DF11_OK) return cli_fail(tool, st, "cannot decompress '%s'", argv[optind]);
    return CLI_OK;
}
