/* df11-compress: a safetensors file, Hugging Face folder or DFloat11 folder in, one .df11
 * file out. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

static const char *tool = "df11-compress";

static void usage(void)
{
    printf("Usage: %s IN -o OUT.df11 [options]\n"
           "Compress the BF16 weights of a safetensors file or Hugging Face model folder\n"
           "losslessly into one .df11 file (other dtypes are stored as they are). A DFloat11\n"
           "folder (config.json with dfloat11_config) is decoded bit-exactly on the CPU.\n\n"
           "  -o, --output FILE       the .df11 file to write (required)\n"
           "  -j, --threads N         worker threads (default: all cores)\n"
           "      --max-code-len L    longest Huffman code, 1..15 (default %d); a tensor with\n"
           "                          more than 2^L distinct exponents is refused (the error\n"
           "                          names it and the L it needs), no file is written\n"
           "      --lane-symbols S    Huffman weights per decoder lane and chunk, a multiple\n"
           "                          of 8 in 8..4096 (default %d); 128 lets the GPU\n"
           "                          multiply them without decoding at batch 1 (~1%% larger)\n"
           "      --layer-prefix P    tensors named P<N>.* form block N (default %s)\n"
           "      --codec C           exponent code of BF16 weights: fixed8 (default; 2-D\n"
           "                          weights: 3 bits in an 8-exponent window, the rest as\n"
           "                          records, ~70.4%% of BF16, multiplied straight from the\n"
           "                          compressed weights on the GPU; other BF16 tensors\n"
           "                          Huffman), fixed (3 bits + escapes, ~70.0%%, 3-4%%\n"
           "                          slower to multiply), or huffman (~67%%, the smallest;\n"
           "                          decoded before use, or at batch 1 multiplied as it is\n"
           "                          decoded where 64 <= S <= 256); raw stores BF16 as it\n"
           "                          is (100%%: a baseline served through the same runtime)\n"
           "      --json              print the summary as JSON\n"
           "  -q, --quiet             no summary\n"
           "  -h, --help, -V, --version\n",
           tool, DF11_DEFAULT_MAX_CODE_LEN, DF11_DEFAULT_LANE_SYMBOLS, DF11_DEFAULT_LAYER_PREFIX);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "output", required_argument, 0, 'o' },
                                          { "threads", required_argument, 0, 'j' },
                                          { "max-code-len", required_argument, 0, 'L' },
                                          { "lane-symbols", required_argument, 0, 'S' },
                                          { "layer-prefix", required_argument, 0, 'P' },
                                          { "codec", required_argument, 0, 'C' },
                                          { "json", no_argument, 0, 'J' },
                                          { "quiet", no_argument, 0, 'q' },
                                          { "help", no_argument, 0, 'h' },
                                          { "version", no_argument, 0, 'V' },
                                          { 0, 0, 0, 0 } };
    /* The tool's default code is fixed8 (bench/RESULTS.md, sixteenth session: 1.25x the BF16
     * engine's batch-1 tokens/s on the H100, against 1.18-1.21x for fixed and ~0.6x for
     * Huffman, for 3.4 points more memory than Huffman); the library's zero-initialised
     * options keep Huffman, so that programs that set nothing keep writing the files they
     * wrote. */
    cli_meter meter;
    df11_compress_options o = { .group_progress = cli_meter_update,
                                .progress_ctx = &meter,
                                .codec = DF11_CODEC_EXP_FIXED8 };
    const char *out = NULL;
    int json = 0, quiet = 0, c;
    long v;
    while ((c = getopt_long(argc, argv, "o:j:qhV", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'j':
            if (cli_parse_threads(tool, optarg, &o.n_threads) != CLI_OK) return CLI_USAGE;
            break;
        case 'L':
            if ((v = cli_parse_range(optarg, 1, 15)) < 0)
                return cli_usage_error(tool, "--max-code-len '%s': want 1..15", optarg);
            o.max_code_len = (uint32_t)v;
            break;
        case 'S':
            if ((v = cli_parse_range(optarg, 8, 4096)) < 0 || v % 8)
                return cli_usage_error(tool, "--lane-symbols '%s': want a multiple of 8 in 8..4096",
                                       optarg);
            o.lane_symbols = (uint32_t)v;
            break;
        case 'P': o.layer_prefix = optarg; break;
        case 'C':
            if (cli_parse_codec(tool, optarg, &o.codec, &o.store_raw) != CLI_OK) return CLI_USAGE;
            break;
        case 'J': json = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(); return CLI_OK;
        case 'V': cli_version(tool); return CLI_OK;
        default: return cli_usage_error(tool, "unknown option");
        }
    }
    if (optind + 1 != argc) return cli_usage_error(tool, "expected one input path");
    if (!out) return cli_usage_error(tool, "missing -o OUT.df11");
    cli_meter_begin(&meter, tool, !json && !quiet);

    df11_compress_summary s;
    df11_status st = df11_compress_path(argv[optind], out, &o, &s);
    cli_meter_clear(&meter);
    if (st != DF11_OK) return cli_fail(tool, st, "cannot compress '%s'", argv[optind]);

    double ratio = s.bf16_bytes ? (double)s.bf16_stored_bytes / (double)s.bf16_bytes : 0;
    double bound = (8.0 + s.exponent_entropy) / 16.0;
    double wps = s.seconds > 0 ? (double)s.bf16_weights / s.seconds : 0;
    if (json) {
        printf("{\"input\":\"%s\",\"output\":\"%s\",\"tensors\":%u,\"groups\":%u,"
               "\"bf16_weights\":%llu,\"bf16_bytes\":%llu,\"df11_bf16_bytes\":%llu,"
               "\"raw_bytes\":%llu,\"file_bytes\":%llu,\"ratio\":%.6f,\"exponent_entropy\":%.6f,"
               "\"bound\":%.6f,\"seconds\":%.3f,\"weights_per_second\":%.0f}\n",
               argv[optind], out, s.n_tensors, s.n_groups, (unsigned long long)s.bf16_weights,
               (unsigned long long)s.bf16_bytes, (unsigned long long)s.bf16_stored_bytes,
               (unsigned long long)s.raw_bytes, (unsigned long long)s.file_bytes, ratio,
               s.exponent_entropy, bound, s.seconds, wps);
    } else if (!quiet) {
        printf("%s: %u tensors in %u groups -> %s\n", tool, s.n_tensors, s.n_groups, out);
        printf("  bf16      %s (%llu weights)\n", cli_bytes(s.bf16_bytes),
               (unsigned long long)s.bf16_weights);
        printf("  df11      %s  = %.2f%% of bf16\n", cli_bytes(s.bf16_stored_bytes), 100 * ratio);
        printf("  bound     (8+H)/16 = %.2f%%, exponent entropy H = %.3f bits\n", 100 * bound,
               s.exponent_entropy);
        printf("  raw       %s (non-BF16 tensors, stored as they are)\n", cli_bytes(s.raw_bytes));
        printf("  file      %s\n", cli_bytes(s.file_bytes));
        printf("  time      %.2f s, %.1f M weights/s\n", s.seconds, wps / 1e6);
    }
    return CLI_OK;
}
