/* df11-bench decode: how fast a transformer block decodes.
 *
 * Builds the reference block (the seven Llama-3-8B layer matrices, 218,103,808 BF16
 * weights, rows N(0, σ_r²) with σ_r = 0.02·e^{0.3z}, seeded), compresses it into a
 * temporary .df11 (one layer group), and the first 4096×4096 matrix alone into another,
 * with the Huffman exponent code or (--codec fixed) the fixed one (codec/fixed.h).
 * On CUDA: checks the GPU decode bit for bit against the weights, then times the decode
 * (CUDA events, median) against a device-to-device copy measured in the same process.
 * On the CPU: times df11_group_decode_host on one thread and on all threads.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/parallel.h"
#include "common/util.h"
#include "df11.h"
#include "tools/cli.h"
#include "tools/weights.h"
#ifdef DF11_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/decode.h"
#endif

#define TOOL "df11-bench decode"
#define MAX_REPS 10000

static const weights_matrix *const block = weights_llama3_8b_block;
#define N_MATS WEIGHTS_LLAMA3_8B_BLOCK_N

typedef struct {
    uint64_t seed;
    int reps, threads, json, small;
    uint32_t lane_symbols; /* 0: the default */
    df11_codec codec;      /* of the BF16 matrices */
    const char *device;
} options;

/* ---- the reference weights ---- */

typedef struct {
    uint16_t *w[N_MATS];
    uint64_t rows[N_MATS], cols[N_MATS];
    uint64_t seed;
} weights;

static int weights_make(weights *W, const options *o)
{
    W->seed = o->seed;
    for (size_t m = 0; m < N_MATS; m++) {
        W->rows[m] = o->small ? block[m].rows / 16 : block[m].rows;
        W->cols[m] = block[m].cols;
        W->w[m] = malloc(W->rows[m] * W->cols[m] * 2);
        if (!W->w[m]) return cli_fail(TOOL, DF11_ERR_NO_MEMORY, "weights");
    }
    for (size_t m = 0; m < N_MATS; m++) /* each matrix its own seed */
        weights_fill(W->w[m], W->rows[m], W->cols[m], weights_mix64(W->seed + m + 1), false,
                     o->threads);
    return CLI_OK;
}

/* ---- compression into temporary files ---- */

static int compress_case(const weights *W, size_t n_mats, const char *path, const options *o,
                         df11_compress_summary *sum)
{
    df11_tensor_source src[N_MATS];
    for (size_t m = 0; m < n_mats; m++) {
        src[m] = (df11_tensor_source){ .name = block[m].name,
                                       .dtype = DF11_DTYPE_BF16,
                                       .ndim = 2,
                                       .shape = { W->rows[m], W->cols[m] },
                                       .data = W->w[m] };
    }
    df11_compress_options opt = { .n_threads = o->threads,
                                  .lane_symbols = o->lane_symbols,
                                  .codec = o->codec };
    df11_status st = df11_compress_tensors(path, src, n_mats, NULL, 0, &opt, sum);
    if (st != DF11_OK) return cli_fail(TOOL, st, "compressing into '%s'", path);
    return CLI_OK;
}

/* Checks a decoded group against the weights: every tensor equal, padding zero. */
static int check_decoded(const df11_file *f, const weights *W, const uint8_t *out, uint64_t size,
                         const char *label)
{
    uint64_t covered = 0;
    for (uint32_t t = 0; t < df11_file_n_tensors(f); t++) {
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        if (memcmp(out + ti->decoded_offset, W->w[t], ti->nbytes) != 0)
            return cli_fail(TOOL, DF11_ERR_CORRUPT, "%s: tensor '%s' decodes differently", label,
                            ti->name);
        for (uint64_t i = ti->decoded_offset + ti->nbytes; i < size && i % 256; i++)
            if (out[i])
                return cli_fail(TOOL, DF11_ERR_CORRUPT, "%s: padding byte %llu", label,
                                (unsigned long long)i);
        covered += df11i_align_up(ti->nbytes, 256);
    }
    if (covered != size)
        return cli_fail(TOOL, DF11_ERR_CORRUPT, "%s: tensors cover %llu of %llu bytes", label,
                        (unsigned long long)covered, (unsigned long long)size);
    return CLI_OK;
}

/* One measured case, for the table and the JSON. */
typedef struct {
    const char *label;
    uint64_t weights, payload_bytes, decoded_bytes;
    double ms, gbps, copy_gbps; /* CUDA */
    double mw_s_1, mw_s_all;    /* CPU: M weights/s on 1 thread, on all */
    int threads;
} result;

/* ---- CPU ---- */

static int bench_cpu(const char *path, const weights *W, const options *o, result *r)
{
    df11_file *f;
    df11_status st = df11_file_open(path, &f);
    if (st != DF11_OK) return cli_fail(TOOL, st, "opening '%s'", path);
    const df11_group_info *gi = df11_file_group(f, 0);
    void *payload = malloc(gi->payload_size);
    uint8_t *out = malloc(gi->decoded_size);
    int rc = CLI_FAIL;
    if (!payload || !out) goto done;
    if ((st = df11_file_read_group(f, 0, payload)) != DF11_OK) {
        cli_fail(TOOL, st, "reading the group");
        goto done;
    }
    r->threads = o->threads > 0 ? o->threads : df11i_cpu_count();
    r->payload_bytes = gi->payload_size;
    r->decoded_bytes = gi->decoded_size;
    for (int pass = 0; pass < 2; pass++) {
        int threads = pass == 0 ? 1 : r->threads, reps = pass == 0 ? 3 : o->reps < 5 ? o->reps : 5;
        double t[64];
        for (int i = 0; i < reps; i++) {
            double t0 = bench_now_s();
            st = df11_group_decode_host(f, 0, payload, out, threads);
            t[i] = bench_now_s() - t0;
            if (st != DF11_OK) {
                cli_fail(TOOL, st, "CPU decode");
                goto done;
            }
        }
        double mws = r->weights / bench_median(t, reps) / 1e6;
        if (pass == 0)
            r->mw_s_1 = mws;
        else
            r->mw_s_all = mws;
    }
    rc = check_decoded(f, W, out, gi->decoded_size, r->label);
done:
    free(payload);
    free(out);
    df11_file_close(f);
    return rc;
}

#ifdef DF11_HAVE_CUDA
/* ---- CUDA ---- */

#define CU(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            cli_fail(TOOL, DF11_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(e_));               \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Device-to-device copy of 2 GiB: bytes read + written per second (GB/s), median. */
static double copy_bandwidth(int reps)
{
    size_t bytes = (size_t)2 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double t[256], gbps = 0;
    CU(cudaMalloc(&a, bytes), "copy buffer");
    CU(cudaMalloc(&b, bytes), "copy buffer");
    CU(cudaMemset(a, 0x3c, bytes), "memset");
    CU(cudaEventCreate(&e0), "event");
    CU(cudaEventCreate(&e1), "event");
    for (int i = 0; i < 3; i++) CU(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "copy");
    for (int i = 0; i < reps; i++) {
        float ms;
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        CU(cudaEventSynchronize(e1), "copy");
        cudaEventElapsedTime(&ms, e0, e1);
        t[i] = ms;
    }
    gbps = 2.0 * bytes / (bench_median(t, reps) * 1e-3) / 1e9;
done:
    cudaFree(a);
    cudaFree(b);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    return gbps;
}

/* Decode timing. A case smaller than ~4x the L2 rotates over copies of its buffers, so
 * that repeats read DRAM rather than the cache. */
static int bench_cuda(const char *path, const weights *W, const options *o, result *r)
{
    enum { MAX_SETS = 8 };
    df11_file *f;
    df11_status st = df11_file_open(path, &f);
    if (st != DF11_OK) return cli_fail(TOOL, st, "opening '%s'", path);
    const df11_group_info *gi = df11_file_group(f, 0);
    void *payload = malloc(gi->payload_size), *plan = NULL;
    uint8_t *out = malloc(gi->decoded_size);
    void *d_plan = NULL, *d_payload[MAX_SETS] = { 0 }, *d_out[MAX_SETS] = { 0 };
    uint32_t *d_err = NULL, err = 0;
    cudaEvent_t e0 = NULL, e1 = NULL;
    size_t plan_size;
    int rc = CLI_FAIL, sets = 1;
    double t[1024];
    if (!payload || !out) goto done;
    if ((st = df11_file_read_group(f, 0, payload)) != DF11_OK) {
        cli_fail(TOOL, st, "reading the group");
        goto done;
    }
    if ((st = df11i_gpu_plan_build(f, 0, payload, &plan, &plan_size)) != DF11_OK) {
        cli_fail(TOOL, st, "GPU plan");
        goto done;
    }
    uint64_t bytes = gi->payload_size + gi->decoded_size;
    while (sets < MAX_SETS && (uint64_t)sets * bytes < ((uint64_t)256 << 20)) sets++;
    CU(cudaMalloc(&d_plan, plan_size), "plan");
    CU(cudaMemcpy(d_plan, plan, plan_size, cudaMemcpyHostToDevice), "plan upload");
    CU(cudaMalloc((void **)&d_err, 4), "flag");
    CU(cudaMemset(d_err, 0, 4), "flag");
    for (int s = 0; s < sets; s++) {
        CU(cudaMalloc(&d_payload[s], df11i_align_up(gi->payload_size, 16)), "payload");
        CU(cudaMemcpy(d_payload[s], payload, gi->payload_size, cudaMemcpyHostToDevice),
           "payload upload");
        CU(cudaMalloc(&d_out[s], gi->decoded_size), "output");
        CU(cudaMemset(d_out[s], 0xff, gi->decoded_size), "poison");
    }
    /* Correctness first: a poisoned output, the error flag, every byte checked. */
    st = df11i_gpu_decode_checked(plan, d_plan, d_payload[0], d_out[0], d_err, NULL);
    if (st != DF11_OK) {
        cli_fail(TOOL, st, "decode");
        goto done;
    }
    CU(cudaDeviceSynchronize(), "decode");
    CU(cudaMemcpy(&err, d_err, 4, cudaMemcpyDeviceToHost), "flag");
    CU(cudaMemcpy(out, d_out[0], gi->decoded_size, cudaMemcpyDeviceToHost), "download");
    if (err) {
        cli_fail(TOOL, DF11_ERR_CORRUPT, "%s: the kernel raised its error flag", r->label);
        goto done;
    }
    if (check_decoded(f, W, out, gi->decoded_size, r->label) != CLI_OK) goto done;

    CU(cudaEventCreate(&e0), "event");
    CU(cudaEventCreate(&e1), "event");
    for (int i = 0; i < 5; i++)
        df11i_gpu_decode(plan, d_plan, d_payload[i % sets], d_out[i % sets], NULL);
    CU(cudaDeviceSynchronize(), "warm-up");
    int reps = o->reps > 1024 ? 1024 : o->reps;
    for (int i = 0; i < reps; i++) {
        float ms;
        cudaEventRecord(e0, 0);
        df11i_gpu_decode(plan, d_plan, d_payload[i % sets], d_out[i % sets], NULL);
        cudaEventRecord(e1, 0);
        CU(cudaEventSynchronize(e1), "decode");
        cudaEventElapsedTime(&ms, e0, e1);
        t[i] = ms;
    }
    r->payload_bytes = gi->payload_size;
    r->decoded_bytes = gi->decoded_size;
    r->ms = bench_median(t, reps);
    r->gbps = bytes / (r->ms * 1e-3) / 1e9;
    rc = CLI_OK;
done:
    for (int s = 0; s < MAX_SETS; s++) {
        cudaFree(d_payload[s]);
        cudaFree(d_out[s]);
    }
    cudaFree(d_plan);
    cudaFree(d_err);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    free(plan);
    free(payload);
    free(out);
    df11_file_close(f);
    return rc;
}
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: df11-bench decode [--device cuda|cpu] [--reps N] [--seed N] [--threads N]\n"
            "                         [--small] [--lane-symbols S] [--codec huffman|fixed|fixed8]\n"
            "                         [--json]\n"
            "Decodes a Llama-3-8B-shaped block (7 matrices, 218,103,808 BF16 weights) and its\n"
            "first 4096x4096 matrix alone. cuda (the default when a GPU is present): GPU decode\n"
            "time and bandwidth against a device-to-device copy, after a bit-exact check.\n"
            "cpu: df11_group_decode_host on one thread and on --threads (default all).\n"
            "  --reps N     timed repeats, median reported (default 50)\n"
            "  --small      1/16 of the rows, for a quick run\n"
            "  --lane-symbols S  symbols per lane (default %d)\n"
            "  --codec C    exponent code: huffman (default), fixed (3 bits + escapes) or\n"
            "               fixed8 (3 bits in an 8-exponent window + records)\n",
            DF11_DEFAULT_LANE_SYMBOLS);
}

int bench_decode_main(int argc, char **argv)
{
    options o = { .seed = 42, .reps = 50, .device = NULL, .codec = DF11_CODEC_EXP_HUFFMAN };
    static const struct option longopts[] = { { "device", required_argument, 0, 'd' },
                                              { "reps", required_argument, 0, 'r' },
                                              { "seed", required_argument, 0, 's' },
                                              { "threads", required_argument, 0, 't' },
                                              { "json", no_argument, 0, 'j' },
                                              { "small", no_argument, 0, 'S' },
                                              { "lane-symbols", required_argument, 0, 'L' },
                                              { "codec", required_argument, 0, 'C' },
                                              { "help", no_argument, 0, 'h' },
                                              { 0, 0, 0, 0 } };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o.device = optarg; break;
        case 'r':
            if ((o.reps = (int)cli_parse_range(optarg, 1, MAX_REPS)) < 0)
                return cli_usage_error(TOOL, "--reps takes 1..%d, not '%s'", MAX_REPS, optarg);
            break;
        case 's':
            if (cli_parse_seed(TOOL, optarg, &o.seed) != CLI_OK) return CLI_USAGE;
            break;
        case 't':
            if (cli_parse_threads(TOOL, optarg, &o.threads) != CLI_OK) return CLI_USAGE;
            break;
        case 'j': o.json = 1; break;
        case 'S': o.small = 1; break;
        case 'L': {
            const long v = cli_parse_range(optarg, 8, 4096);
            if (v < 0 || v % 8)
                return cli_usage_error(TOOL,
                                       "--lane-symbols takes a multiple of 8 in 8..4096, "
                                       "not '%s'",
                                       optarg);
            o.lane_symbols = (uint32_t)v;
            break;
        }
        case 'C':
            if (cli_parse_codec(TOOL, optarg, &o.codec, NULL) != CLI_OK) return CLI_USAGE;
            break;
        case 'h': usage(stdout); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }
    }
    int have_gpu = 0;
#ifdef DF11_HAVE_CUDA
    int n_dev = 0;
    have_gpu = cudaGetDeviceCount(&n_dev) == cudaSuccess && n_dev > 0;
#endif
    if (!o.device) o.device = have_gpu ? "cuda" : "cpu";
    int cuda = !strcmp(o.device, "cuda");
    if (!cuda && strcmp(o.device, "cpu"))
        return cli_usage_error(TOOL, "--device must be cuda or cpu");
    if (cuda && !have_gpu) return cli_fail(TOOL, DF11_ERR_NO_DEVICE, "--device cuda");

    weights W = { 0 };
    char dir[] = "/tmp/df11-bench-XXXXXX", path[2][64] = { "", "" };
    result res[2] = { { .label = "block (7 matrices)" }, { .label = "q_proj 4096x4096" } };
    df11_compress_summary sum[2];
    double copy_gbps = 0;
    int rc = CLI_FAIL;
    if (!mkdtemp(dir)) return cli_fail(TOOL, DF11_ERR_IO, "mkdtemp");
    if (weights_make(&W, &o) != CLI_OK) goto done;
    for (int k = 0; k < 2; k++) {
        snprintf(path[k], sizeof path[k], "%s/%s.df11", dir, k ? "matrix" : "block");
        if (compress_case(&W, k ? 1 : N_MATS, path[k], &o, &sum[k]) != CLI_OK) goto done;
        res[k].weights = sum[k].bf16_weights;
    }
    char device_name[256] = "cpu";
    const char *codec_name = cli_codec_name(o.codec);
#ifdef DF11_HAVE_CUDA
    if (cuda) {
        struct cudaDeviceProp prop;
        cudaGetDeviceProperties(&prop, 0);
        snprintf(device_name, sizeof device_name, "%s", prop.name);
        copy_gbps = copy_bandwidth(o.reps < 20 ? 20 : o.reps);
        if (copy_gbps <= 0) goto done;
        for (int k = 0; k < 2; k++) {
            if (bench_cuda(path[k], &W, &o, &res[k]) != CLI_OK) goto done;
            res[k].copy_gbps = copy_gbps;
        }
    }
#endif
    if (!cuda)
        for (int k = 0; k < 2; k++)
            if (bench_cpu(path[k], &W, &o, &res[k]) != CLI_OK) goto done;

    if (o.json) {
        printf("{\"device\": \"%s\", \"codec\": \"%s\", \"seed\": %llu, \"reps\": %d", device_name,
               codec_name, (unsigned long long)o.seed, o.reps);
        if (cuda) printf(", \"copy_gbps\": %.1f", copy_gbps);
        printf(", \"cases\": [");
        for (int k = 0; k < 2; k++) {
            const result *r = &res[k];
            printf("%s\n  {\"name\": \"%s\", \"weights\": %llu, \"payload_bytes\": %llu, "
                   "\"decoded_bytes\": %llu, \"ratio\": %.4f",
                   k ? "," : "", r->label, (unsigned long long)r->weights,
                   (unsigned long long)r->payload_bytes, (unsigned long long)r->decoded_bytes,
                   (double)sum[k].bf16_stored_bytes / sum[k].bf16_bytes);
            if (cuda)
                printf(", \"decode_ms\": %.4f, \"decode_gbps\": %.1f, \"fraction_of_copy\": "
                       "%.3f",
                       r->ms, r->gbps, r->gbps / copy_gbps);
            else
                printf(", \"threads\": %d, \"mweights_s_1thread\": %.1f, "
                       "\"mweights_s_all\": %.1f, \"mweights_s_per_core\": %.1f",
                       r->threads, r->mw_s_1, r->mw_s_all, r->mw_s_all / r->threads);
            printf("}");
        }
        printf("\n]}\n");
    } else {
        printf("device: %s   codec %s   seed %llu   reps %d (median)\n", device_name, codec_name,
               (unsigned long long)o.seed, o.reps);
        if (cuda) {
            printf("device-to-device copy: %.0f GB/s (read + written)\n\n", copy_gbps);
            printf("%-20s %12s %8s %10s %11s %8s\n", "case", "weights", "size", "decode ms", "GB/s",
                   "of copy");
            for (int k = 0; k < 2; k++)
                printf("%-20s %12llu %7.1f%% %10.4f %11.0f %7.1f%%\n", res[k].label,
                       (unsigned long long)res[k].weights,
                       100.0 * sum[k].bf16_stored_bytes / sum[k].bf16_bytes, res[k].ms, res[k].gbps,
                       100 * res[k].gbps / copy_gbps);
            printf("(GB/s = (payload bytes read + BF16 bytes written) / decode time)\n");
        } else {
            printf("%-20s %12s %8s %12s %14s %12s\n", "case", "weights", "size", "1 thread",
                   "all threads", "per core");
            for (int k = 0; k < 2; k++)
                printf("%-20s %12llu %7.1f%% %8.0f M/s %7.0f M/s %2d %8.0f M/s\n", res[k].label,
                       (unsigned long long)res[k].weights,
                       100.0 * sum[k].bf16_stored_bytes / sum[k].bf16_bytes, res[k].mw_s_1,
                       res[k].mw_s_all, res[k].threads, res[k].mw_s_all / res[k].threads);
            printf("(M/s = million weights decoded per second; target >= 300 per core)\n");
        }
    }
    rc = CLI_OK;
done:
    for (size_t m = 0; m < N_MATS; m++) free(W.w[m]);
    for (int k = 0; k < 2; k++) unlink(path[k]);
    rmdir(dir);
    return rc;
}
