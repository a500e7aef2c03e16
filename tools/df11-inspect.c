/* df11-inspect: what a .df11 file holds — groups, tensors, which codec each uses, sizes,
 * ratio, entropy, checksums — and, with --verify, a full CPU decode of every group. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "tools/cli.h"

static const char *tool = "df11-inspect";

/* The codec's name in the table and in --json. */
static const char *codec_name(df11_codec c)
{
    switch (c) {
    case DF11_CODEC_RAW: return "raw";
    case DF11_CODEC_EXP_HUFFMAN: return "exp-huffman";
    case DF11_CODEC_EXP_FIXED: return "exp-fixed";
    case DF11_CODEC_EXP_FIXED8: return "exp-fixed8";
    }
    return "unknown";
}

/* Tensors, their bytes and their bytes in the file, per codec. */
typedef struct codec_total {
    uint32_t tensors;
    uint64_t bytes, stored_bytes;
} codec_total;
#define N_CODECS 4
static const df11_codec codecs[N_CODECS] = { DF11_CODEC_EXP_FIXED8, DF11_CODEC_EXP_FIXED,
                                             DF11_CODEC_EXP_HUFFMAN, DF11_CODEC_RAW };

static void usage(void)
{
    printf("Usage: %s FILE.df11 [--json] [--verify] [--tensors]\n"
           "Show the groups of a .df11 file (and with --tensors every tensor): sizes,\n"
           "compression ratio, exponent entropy, checksums, and how many tensors and bytes\n"
           "each codec (exp-fixed8, exp-fixed, exp-huffman, raw) holds.\n\n"
           "      --json      one JSON object on stdout, for scripts\n"
           "      --verify    read every group, check its xxh3 and decode it on the CPU\n"
           "      --tensors   list tensors in the human table too\n"
           "  -j, --threads N decode threads for --verify (default: all cores)\n"
           "  -h, --help, -V, --version\n",
           tool);
}

/* Reads, checks and decodes group g; DF11_OK if everything holds. */
static df11_status verify_group(const df11_file *f, uint32_t g, int threads)
{
    const df11_group_info *gi = df11_file_group(f, g);
    void *payload = malloc(gi->payload_size ? gi->payload_size : 1);
    void *out = malloc(gi->decoded_size ? gi->decoded_size : 1);
    df11_status st = payload && out ? df11_file_read_group(f, g, payload) : DF11_ERR_NO_MEMORY;
    if (st == DF11_OK) st = df11_group_decode_host(f, g, payload, out, threads);
    free(payload);
    free(out);
    return st;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, 'J' },
                                          { "verify", no_argument, 0, 'v' },
                                          { "tensors", no_argument, 0, 't' },
                                          { "threads", required_argument, 0, 'j' },
                                          { "help", no_argument, 0, 'h' },
                                          { "version", no_argument, 0, 'V' },
                                          { 0, 0, 0, 0 } };
    int json = 0, verify = 0, list = 0, threads = 0, c;
    while ((c = getopt_long(argc, argv, "j:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'J': json = 1; break;
        case 'v': verify = 1; break;
        case 't': list = 1; break;
        case 'j':
            if (cli_parse_threads(tool, optarg, &threads) != CLI_OK) return CLI_USAGE;
            break;
        case 'h': usage(); return CLI_OK;
        case 'V': cli_version(tool); return CLI_OK;
        default: return cli_usage_error(tool, "unknown option");
        }
    }
    if (optind + 1 != argc) return cli_usage_error(tool, "expected one .df11 file");
    df11_file *f;
    df11_status st = df11_file_open(argv[optind], &f);
    if (st != DF11_OK) return cli_fail(tool, st, "cannot open '%s'", argv[optind]);

    uint32_t ng = df11_file_n_groups(f), nt = df11_file_n_tensors(f);
    uint64_t bf16 = 0, stored = 0, raw = 0, bf16_weights = 0;
    double entropy_sum = 0;
    codec_total per[N_CODECS] = { { 0 } };
    for (uint32_t t = 0; t < nt; t++) {
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        for (int k = 0; k < N_CODECS; k++) {
            if (ti->codec != codecs[k]) continue;
            per[k].tensors++;
            per[k].bytes += ti->nbytes;
            per[k].stored_bytes += ti->stored_bytes;
        }
        if (ti->codec != DF11_CODEC_RAW) {
            bf16 += ti->nbytes;
            stored += ti->stored_bytes;
            bf16_weights += ti->n_elements;
            entropy_sum += (double)ti->exponent_entropy * (double)ti->n_elements;
        } else {
            raw += ti->nbytes;
        }
    }
    int failures = 0;
    cli_meter meter; /* --verify reads and decodes the whole file: long for a large model */
    cli_meter_begin(&meter, tool, verify && !json);
    df11_progress prog = { .groups_total = ng };
    for (uint32_t g = 0; g < ng; g++) prog.bytes_total += df11_file_group(f, g)->payload_size;
    cJSON *root = json ? cJSON_CreateObject() : NULL, *jgroups = NULL;
    if (json) {
        cJSON_AddStringToObject(root, "file", argv[optind]);
        cJSON_AddNumberToObject(root, "file_bytes", (double)df11_file_size(f));
        cJSON_AddNumberToObject(root, "blocks", df11_file_n_layers(f));
        cJSON_AddNumberToObject(root, "bf16_bytes", (double)bf16);
        cJSON_AddNumberToObject(root, "df11_bf16_bytes", (double)stored);
        cJSON_AddNumberToObject(root, "raw_bytes", (double)raw);
        cJSON_AddNumberToObject(root, "ratio", bf16 ? (double)stored / (double)bf16 : 0);
        cJSON_AddNumberToObject(root, "mean_tensor_exponent_entropy",
                                bf16_weights ? entropy_sum / (double)bf16_weights : 0);
        cJSON *jc = cJSON_AddObjectToObject(root, "codecs");
        for (int k = 0; k < N_CODECS; k++) {
            cJSON *o = cJSON_AddObjectToObject(jc, codec_name(codecs[k]));
            cJSON_AddNumberToObject(o, "tensors", per[k].tensors);
            cJSON_AddNumberToObject(o, "bytes", (double)per[k].bytes);
            cJSON_AddNumberToObject(o, "stored_bytes", (double)per[k].stored_bytes);
        }
        jgroups = cJSON_AddArrayToObject(root, "groups");
    } else {
        printf("%s: %u groups (%u blocks), %u tensors, %s\n", argv[optind], ng,
               df11_file_n_layers(f), nt, cli_bytes(df11_file_size(f)));
        printf("bf16 tensors %s -> %s (%.2f%%), raw tensors %s\n", cli_bytes(bf16),
               cli_bytes(stored), bf16 ? 100.0 * (double)stored / (double)bf16 : 0.0,
               cli_bytes(raw));
        printf("codecs:");
        for (int k = 0, first = 1; k < N_CODECS; k++) {
            if (!per[k].tensors) continue;
            printf("%s %s %u tensors %s -> %s", first ? "" : ",", codec_name(codecs[k]),
                   per[k].tensors, cli_bytes(per[k].bytes), cli_bytes(per[k].stored_bytes));
            first = 0;
        }
        printf("%s\n\n", nt ? "" : " none (no tensors)");
        printf("%-28s %6s %7s %12s %12s %7s %16s%s\n", "group", "block", "tensors", "compressed",
               "decoded", "ratio", "xxh3", verify ? "  verify" : "");
    }
    for (uint32_t g = 0; g < ng; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        df11_status vs = verify ? verify_group(f, g, threads) : DF11_OK;
        failures += vs != DF11_OK;
        prog.groups_done++;
        prog.bytes_done += gi->payload_size;
        double ratio = gi->decoded_size ? (double)gi->payload_size / (double)gi->decoded_size : 0;
        char sum[17];
        snprintf(sum, sizeof sum, "%016llx", (unsigned long long)gi->payload_xxh3);
        if (json) {
            cJSON *jg = cJSON_CreateObject();
            cJSON_AddStringToObject(jg, "name", gi->name);
            cJSON_AddNumberToObject(jg, "layer", gi->layer);
            cJSON_AddNumberToObject(jg, "payload_offset", (double)gi->payload_offset);
            cJSON_AddNumberToObject(jg, "payload_bytes", (double)gi->payload_size);
            cJSON_AddNumberToObject(jg, "decoded_bytes", (double)gi->decoded_size);
            cJSON_AddStringToObject(jg, "xxh3", sum);
            if (verify)
                cJSON_AddStringToObject(jg, "verify", vs == DF11_OK ? "ok" : df11_strerror(vs));
            cJSON *jt = cJSON_AddArrayToObject(jg, "tensors");
            for (uint32_t t = gi->first_tensor; t < gi->first_tensor + gi->n_tensors; t++) {
                const df11_tensor_info *ti = df11_file_tensor(f, t);
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "name", ti->name);
                cJSON_AddStringToObject(o, "dtype", df11_dtype_name(ti->dtype));
                cJSON *shape = cJSON_AddArrayToObject(o, "shape");
                for (uint32_t d = 0; d < ti->ndim; d++)
                    cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ti->shape[d]));
                cJSON_AddStringToObject(o, "codec", codec_name(ti->codec));
                cJSON_AddNumberToObject(o, "bytes", (double)ti->nbytes);
                cJSON_AddNumberToObject(o, "stored_bytes", (double)ti->stored_bytes);
                if (ti->codec == DF11_CODEC_EXP_HUFFMAN) {
                    cJSON_AddNumberToObject(o, "exponent_entropy", ti->exponent_entropy);
                    cJSON_AddNumberToObject(o, "max_code_len", ti->max_code_len);
                    cJSON_AddNumberToObject(o, "lane_symbols", ti->lane_symbols);
                } else if (ti->codec == DF11_CODEC_EXP_FIXED ||
                           ti->codec == DF11_CODEC_EXP_FIXED8) {
                    cJSON_AddNumberToObject(o, "exponent_entropy", ti->exponent_entropy);
                }
                cJSON_AddItemToArray(jt, o);
            }
            cJSON_AddItemToArray(jgroups, jg);
            continue;
        }
        cli_meter_clear(&meter); /* stdout may be the same terminal */
        char block[12] = "-";
        if (gi->layer >= 0) snprintf(block, sizeof block, "%d", gi->layer);
        printf("%-28s %6s %7u %12s %12s %6.2f%% %16s%s%s\n", gi->name, block, gi->n_tensors,
               cli_bytes(gi->payload_size), cli_bytes(gi->decoded_size), 100 * ratio, sum,
               verify ? "  " : "", verify ? (vs == DF11_OK ? "ok" : df11_strerror(vs)) : "");
        if (vs != DF11_OK) printf("    %s\n", df11_last_error_detail());
        for (uint32_t t = gi->first_tensor; list && t < gi->first_tensor + gi->n_tensors; t++) {
            const df11_tensor_info *ti = df11_file_tensor(f, t);
            char shape[96] = "";
            int at = 0;
            for (uint32_t d = 0; d < ti->ndim && at < 80; d++)
                at += snprintf(shape + at, sizeof shape - (size_t)at, d ? "x%llu" : "%llu",
                               (unsigned long long)ti->shape[d]);
            if (ti->codec != DF11_CODEC_RAW)
                printf("    %-52s %-5s %-16s %6.2f%%  H=%.3f  %s\n", ti->name,
                       df11_dtype_name(ti->dtype), shape,
                       ti->nbytes ? 100.0 * (double)ti->stored_bytes / (double)ti->nbytes : 0.0,
                       ti->exponent_entropy, codec_name(ti->codec));
            else
                printf("    %-52s %-5s %-16s raw\n", ti->name, df11_dtype_name(ti->dtype), shape);
        }
        fflush(stdout);
        cli_meter_update(&meter, &prog);
    }
    if (json) {
        if (verify) cJSON_AddBoolToObject(root, "verified", failures == 0);
        char *text = cJSON_PrintUnformatted(root);
        puts(text ? text : "{}");
        free(text);
        cJSON_Delete(root);
    } else if (verify) {
        printf("\n%s\n",
               failures ? "VERIFY FAILED" : "verify: every group's checksum and decode ok");
    }
    df11_file_close(f);
    return failures ? CLI_FAIL : CLI_OK;
}
