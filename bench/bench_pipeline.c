/* df11-bench pipeline: what serving weights through the df11 runtime costs an engine.
 *
 * Builds a synthetic Llama-3-8B-shaped model in-process (N layers of the seven layer
 * matrices, 218,103,808 BF16 weights each, rows N(0, σ_r²) with σ_r = 0.02·e^{0.3z},
 * seeded), writes it as .df11 (df11_compress_tensors) and as .safetensors, and runs a
 * reference forward loop over it: per block, acquire, the seven GEMMs at batch B
 * (cublasGemmEx, BF16 in/out, FP32 accumulate) on the engine's stream, release. Modes:
 *   bf16      df11_model_open_bf16: every weight resident (the baseline)
 *   overlap   df11_model_open: decode of block b+1.. on the high-priority side stream
 *             while block b computes (the default runtime)
 *   normal    the same with the decode stream at normal priority
 *   serial    prefetch off and a host sync per block: decode, then compute
 * Per mode and B: time per pass (CUDA events, median of --reps), throughput relative to
 * bf16, and the VRAM the model holds. Also: open time against file bytes over the disk's
 * O_DIRECT read bandwidth measured in the same run, and a bit-exact check of the served
 * weights against the BF16 model.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/parallel.h"
#include "df11.h"
#include "df11/runtime.h"
#include "tools/cli.h"
#include "tools/weights.h"
#include "writer/safetensors_write.h"
#ifdef DF11_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

#define TOOL "df11-bench pipeline"

static void usage(FILE *f)
{
    fprintf(f, "usage: df11-bench pipeline [--layers N] [--slots K] [--batches 1,16,...] "
               "[--reps R]\n"
               "                           [--dir DIR] [--seed S] [--threads T] [--small]\n"
               "Runs a Llama-3-8B-shaped model (default 8 layers) through cuBLAS GEMMs with\n"
               "BF16 weights resident, and through the df11 runtime (overlapped, normal-\n"
               "priority decode stream, serialised). Needs a CUDA build and a GPU.\n"
               "  --dir DIR   where the temporary model files go (default $TMPDIR or /tmp)\n"
               "  --small     matrices 1/16 the rows (a quick check, not a measurement)\n"
               "  --gemm-sms N  df11 modes: cublasSetSmCountTarget(N), leaving SMs to decode\n");
}

#ifndef DF11_HAVE_CUDA
int bench_pipeline_main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return CLI_OK;
    }
    fprintf(stderr,
            "%s: this df11 was built without CUDA; the pipeline benchmark needs a "
            "GPU (see bench/RESULTS.md for measured results)\n",
            TOOL);
    return CLI_FAIL;
}
#else

static const struct {
    const char *suffix;
    uint64_t rows, cols;
} layer_mats[] = {
    { "self_attn.q_proj.weight", 4096, 4096 }, { "self_attn.k_proj.weight", 1024, 4096 },
    { "self_attn.v_proj.weight", 1024, 4096 }, { "self_attn.o_proj.weight", 4096, 4096 },
    { "mlp.gate_proj.weight", 14336, 4096 },   { "mlp.up_proj.weight", 14336, 4096 },
    { "mlp.down_proj.weight", 4096, 14336 },
};
#define N_MATS 7

typedef struct options {
    uint32_t layers, slots;
    int reps, threads, small;
    uint64_t seed;
    const char *dir;
    int batches[16], n_batches;
    int gemm_sms; /* cublasSetSmCountTarget for the df11 modes, 0 = all */
} options;

typedef struct model_data {
    uint32_t n; /* tensors */
    df11_tensor_source *src;
    uint64_t seed;
} model_data;

/* Bytes per second of O_DIRECT reads of `path` (64 MiB reads, 4 in a row per call),
 * falling back to buffered reads where O_DIRECT is refused. */
static double disk_bandwidth(const char *path, int *direct)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) { /* write back what compression left dirty, so that it is not timed */
        fsync(fd);
        close(fd);
    }
    fd = open(path, O_RDONLY | O_DIRECT);
    *direct = fd >= 0;
    if (fd < 0) fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    size_t chunk = 64u << 20;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, chunk)) {
        close(fd);
        return 0;
    }
    double t0 = bench_now_s();
    uint64_t total = 0;
    ssize_t n;
    while ((n = pread(fd, buf, chunk, (off_t)total)) > 0) total += (uint64_t)n;
    double dt = bench_now_s() - t0;
    free(buf);
    close(fd);
    return dt > 0 ? total / dt : 0;
}

typedef enum { MODE_BF16, MODE_OVERLAP, MODE_NORMAL, MODE_SERIAL, MODE_COUNT } mode;
static const char *const mode_name[MODE_COUNT] = { "bf16", "overlap", "normal-prio", "serial" };

typedef struct gemm_ctx {
    cublasHandle_t h;
    cudaStream_t stream;
    void *x, *y; /* inputs / outputs, max batch x 14336 BF16 */
    cudaEvent_t e0, e1;
} gemm_ctx;

/* One pass over every block: acquire, seven GEMMs (Y = X W^T), release. */
static df11_status run_pass(df11_model *m, gemm_ctx *g, int batch, int serial, int gemms)
{
    uint32_t nb = df11_model_n_blocks(m);
    const float alpha = 1.0f, beta = 0.0f;
    for (uint32_t b = 0; b < nb; b++) {
        df11_block_view v;
        df11_status s = df11_block_acquire(m, b, g->stream, &v);
        if (s != DF11_OK) return s;
        for (uint32_t i = 0; gemms && i < v.n_tensors; i++) {
            const df11_tensor_view *t = &v.tensors[i];
            int rows = (int)t->shape[0], cols = (int)t->shape[1];
            cublasStatus_t cs =
                cublasGemmEx(g->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, batch, cols, &alpha, t->data,
                             CUDA_R_16BF, cols, g->x, CUDA_R_16BF, cols, &beta, g->y, CUDA_R_16BF,
                             rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            if (cs != CUBLAS_STATUS_SUCCESS) return DF11_ERR_DEVICE;
        }
        if ((s = df11_block_release(m, b, g->stream)) != DF11_OK) return s;
        if (serial && cudaStreamSynchronize(g->stream) != cudaSuccess) return DF11_ERR_DEVICE;
    }
    return DF11_OK;
}

/* Median milliseconds per pass. */
static double time_passes(df11_model *m, gemm_ctx *g, int batch, int serial, int gemms, int reps)
{
    double t[64];
    if (reps > 64) reps = 64;
    if (run_pass(m, g, batch, serial, gemms) != DF11_OK) return -1; /* warm-up */
    for (int r = 0; r < reps; r++) {
        float ms = 0;
        cudaEventRecord(g->e0, g->stream);
        if (run_pass(m, g, batch, serial, gemms) != DF11_OK) return -1;
        cudaEventRecord(g->e1, g->stream);
        cudaEventSynchronize(g->e1);
        cudaEventElapsedTime(&ms, g->e0, g->e1);
        t[r] = ms;
    }
    return bench_median(t, reps);
}

/* Compares block 0 as served by a df11 model with the BF16 model's. */
static int check_block0(df11_model *a, df11_model *ref, cudaStream_t s)
{
    df11_block_view va, vr;
    if (df11_block_acquire(a, 0, s, &va) != DF11_OK ||
        df11_block_acquire(ref, 0, s, &vr) != DF11_OK)
        return -1;
    cudaStreamSynchronize(s);
    int bad = 0;
    for (uint32_t i = 0; i < va.n_tensors && !bad; i++) {
        df11_tensor_view tr;
        if (df11_tensor_get(ref, va.tensors[i].name, s, &tr) != DF11_OK) return -1;
        size_t n = va.tensors[i].nbytes;
        void *ha = malloc(n), *hr = malloc(n);
        cudaMemcpy(ha, va.tensors[i].data, n, cudaMemcpyDeviceToHost);
        cudaMemcpy(hr, tr.data, n, cudaMemcpyDeviceToHost);
        bad = memcmp(ha, hr, n) != 0;
        free(ha);
        free(hr);
    }
    df11_block_release(a, 0, s);
    df11_block_release(ref, 0, s);
    cudaStreamSynchronize(s);
    return bad;
}

static int open_mode(mode md, const char *df11_path, const char *st_path, const options *o,
                     df11_model **m, double *open_s)
{
    df11_model_options mo;
    df11_model_options_init(&mo);
    mo.backend = DF11_BACKEND_CUDA;
    mo.arena_slots = o->slots;
    mo.decode_normal_priority = md == MODE_NORMAL;
    mo.prefetch_blocks = md == MODE_SERIAL ? 0 : -1;
    double t0 = bench_now_s();
    df11_status s = md == MODE_BF16 ? df11_model_open_bf16(st_path, &mo, m)
                                    : df11_model_open(df11_path, &mo, m);
    *open_s = bench_now_s() - t0;
    if (s != DF11_OK) return cli_fail(TOOL, s, "opening the %s model", mode_name[md]);
    return CLI_OK;
}

int bench_pipeline_main(int argc, char **argv)
{
    options o = { .layers = 8,
                  .slots = 2,
                  .reps = 5,
                  .threads = 0,
                  .seed = 0xdf11,
                  .batches = { 1, 16, 256, 1024, 4096 },
                  .n_batches = 5 };
    o.dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    static const struct option longopts[] = { { "layers", required_argument, NULL, 'l' },
                                              { "slots", required_argument, NULL, 'k' },
                                              { "batches", required_argument, NULL, 'b' },
                                              { "reps", required_argument, NULL, 'r' },
                                              { "dir", required_argument, NULL, 'd' },
                                              { "seed", required_argument, NULL, 's' },
                                              { "threads", required_argument, NULL, 't' },
                                              { "small", no_argument, NULL, 'S' },
                                              { "gemm-sms", required_argument, NULL, 'g' },
                                              { "help", no_argument, NULL, 'h' },
                                              { NULL, 0, NULL, 0 } };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "l:k:b:r:d:s:t:g:Sh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l': o.layers = (uint32_t)atoi(optarg); break;
        case 'k': o.slots = (uint32_t)atoi(optarg); break;
        case 'r': o.reps = atoi(optarg); break;
        case 'd': o.dir = optarg; break;
        case 's': o.seed = strtoull(optarg, NULL, 0); break;
        case 't': o.threads = atoi(optarg); break;
        case 'S': o.small = 1; break;
        case 'g': o.gemm_sms = atoi(optarg); break;
        case 'b': {
            o.n_batches = 0;
            for (char *p = strtok(optarg, ","); p && o.n_batches < 16; p = strtok(NULL, ","))
                o.batches[o.n_batches++] = atoi(p);
            break;
        }
        case 'h': usage(stdout); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }
    }
    if (o.layers < 1 || o.slots < 2 || o.reps < 1 || o.n_batches < 1)
        return cli_usage_error(TOOL, "bad --layers/--slots/--reps/--batches");
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "%s: no CUDA device; nothing to measure\n", TOOL);
        return CLI_FAIL;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);

    /* The model, in memory, then on disk twice. */
    model_data M = { .n = o.layers * N_MATS, .seed = o.seed };
    M.src = calloc(M.n, sizeof *M.src);
    char(*names)[96] = calloc(M.n, sizeof *names);
    uint64_t bf16_bytes = 0;
    for (uint32_t l = 0; l < o.layers; l++)
        for (uint32_t i = 0; i < N_MATS; i++) {
            uint32_t k = l * N_MATS + i;
            snprintf(names[k], sizeof names[k], "model.layers.%u.%s", l, layer_mats[i].suffix);
            uint64_t rows = o.small ? layer_mats[i].rows / 16 : layer_mats[i].rows;
            M.src[k] = (df11_tensor_source){ .name = names[k],
                                             .dtype = DF11_DTYPE_BF16,
                                             .ndim = 2,
                                             .shape = { rows, layer_mats[i].cols } };
            M.src[k].data = malloc(rows * layer_mats[i].cols * 2);
            if (!M.src[k].data) return cli_fail(TOOL, DF11_ERR_NO_MEMORY, "weights");
            bf16_bytes += rows * layer_mats[i].cols * 2;
        }
    double t0 = bench_now_s();
    for (uint32_t k = 0; k < M.n; k++) /* each tensor its own seed */
        weights_fill((uint16_t *)M.src[k].data, M.src[k].shape[0], M.src[k].shape[1],
                     weights_mix64(M.seed + k + 1), false, o.threads);
    double gen_s = bench_now_s() - t0;
    char df11_path[1024], st_path[1024];
    snprintf(df11_path, sizeof df11_path, "%s/df11-bench-pipeline-%d.df11", o.dir, (int)getpid());
    snprintf(st_path, sizeof st_path, "%s/df11-bench-pipeline-%d.safetensors", o.dir,
             (int)getpid());
    df11_compress_options co = { .n_threads = o.threads };
    df11_compress_summary sum;
    t0 = bench_now_s();
    df11_status st = df11_compress_tensors(df11_path, M.src, M.n, NULL, 0, &co, &sum);
    double compress_s = bench_now_s() - t0;
    if (st != DF11_OK) return cli_fail(TOOL, st, "compressing into '%s'", df11_path);
    if ((st = df11i_st_write(st_path, M.src, M.n, NULL)) != DF11_OK) {
        unlink(df11_path);
        return cli_fail(TOOL, st, "writing '%s'", st_path);
    }
    for (uint32_t k = 0; k < M.n; k++) free((void *)M.src[k].data);
    int direct = 0;
    double disk_bps = disk_bandwidth(df11_path, &direct);

    printf("## Pipeline\n\n");
    printf("Device: %s. Model: %u Llama-3-8B-shaped layers%s, %.2f GB BF16, file %.2f GB "
           "(%.1f%%), K = %u slots. Seed 0x%llx.\n",
           prop.name, o.layers, o.small ? " (1/16 rows)" : "", bf16_bytes / 1e9,
           sum.file_bytes / 1e9, 100.0 * sum.file_bytes / bf16_bytes, o.slots,
           (unsigned long long)o.seed);
    printf("Generated in %.1f s, compressed in %.1f s. Command: `df11-bench pipeline "
           "--layers %u --slots %u --reps %d%s",
           gen_s, compress_s, o.layers, o.slots, o.reps, o.small ? " --small" : "");
    if (o.gemm_sms) printf(" --gemm-sms %d", o.gemm_sms);
    printf("`%s\n\n", o.gemm_sms ? " (df11 modes' GEMMs limited to that many SMs)" : "");

    gemm_ctx g = { 0 };
    int rc = CLI_OK;
    size_t maxb = 0;
    for (int i = 0; i < o.n_batches; i++)
        if ((size_t)o.batches[i] > maxb) maxb = o.batches[i];
    if (cublasCreate(&g.h) != CUBLAS_STATUS_SUCCESS ||
        cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaMalloc(&g.x, maxb * 14336 * 2) != cudaSuccess ||
        cudaMalloc(&g.y, maxb * 14336 * 2) != cudaSuccess) {
        rc = cli_fail(TOOL, DF11_ERR_DEVICE, "cuBLAS / buffers");
        goto out;
    }
    cublasSetStream(g.h, g.stream);
    cudaMemset(g.x, 0x3c, maxb * 14336 * 2);
    cudaEventCreate(&g.e0);
    cudaEventCreate(&g.e1);

    double ms[MODE_COUNT][16], open_s[MODE_COUNT], decode_only_ms = 0;
    uint64_t vram[MODE_COUNT], weight_bytes[MODE_COUNT];
    df11_model *ref = NULL;
    if ((rc = open_mode(MODE_BF16, df11_path, st_path, &o, &ref, &open_s[MODE_BF16])) != CLI_OK)
        goto out;
    for (int md = 0; md < MODE_COUNT; md++) {
        df11_model *m = ref;
        if (md != MODE_BF16 &&
            (rc = open_mode((mode)md, df11_path, st_path, &o, &m, &open_s[md])) != CLI_OK)
            goto out;
        /* Leave SMs to the decode stream in the df11 modes (the BF16 baseline uses all). */
        cublasSetSmCountTarget(g.h, md == MODE_BF16 ? 0 : o.gemm_sms);
        df11_model_stats ms_;
        df11_model_stats_get(m, &ms_);
        vram[md] = ms_.pool_reserved;
        weight_bytes[md] = ms_.compressed_bytes + ms_.resident_bytes;
        if (md == MODE_OVERLAP) {
            int bad = check_block0(m, ref, g.stream);
            printf("Served weights of block 0 %s the BF16 model's.\n",
                   bad ? "DIFFER FROM" : "are bit-identical to");
            if (bad) rc = CLI_FAIL;
            decode_only_ms = time_passes(m, &g, 1, 0, 0, o.reps);
        }
        for (int i = 0; i < o.n_batches; i++) {
            ms[md][i] = time_passes(m, &g, o.batches[i], md == MODE_SERIAL, 1, o.reps);
            if (ms[md][i] < 0) {
                rc = cli_fail(TOOL, DF11_ERR_DEVICE, "%s pass at batch %d", mode_name[md],
                              o.batches[i]);
                if (m != ref) df11_model_close(m);
                goto out;
            }
        }
        if (m != ref) df11_model_close(m);
    }

    printf("\nms per pass over %u blocks (median of %d) and throughput relative to BF16:\n\n",
           o.layers, o.reps);
    printf(
        "| B | bf16 ms | overlap ms | × bf16 | normal-prio ms | × bf16 | serial ms | × bf16 |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < o.n_batches; i++) {
        double b = ms[MODE_BF16][i];
        printf("| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", o.batches[i], b,
               ms[MODE_OVERLAP][i], b / ms[MODE_OVERLAP][i], ms[MODE_NORMAL][i],
               b / ms[MODE_NORMAL][i], ms[MODE_SERIAL][i], b / ms[MODE_SERIAL][i]);
    }
    printf("\nDecode alone (acquire/release, no GEMMs): %.3f ms per pass = %.3f ms per block "
           "(%.0f GB/s of BF16 written).\n",
           decode_only_ms, decode_only_ms / o.layers, bf16_bytes / (decode_only_ms * 1e-3) / 1e9);
    printf(
        "\n| model | VRAM held | weights | × BF16 weights | open s |\n|---|---:|---:|---:|---:|\n");
    for (int md = 0; md < MODE_COUNT; md++)
        printf("| %s | %.3f GB | %.3f GB | %.3f (+arena %.3f) | %.2f |\n", mode_name[md],
               vram[md] / 1e9, weight_bytes[md] / 1e9, (double)weight_bytes[md] / bf16_bytes,
               (double)(vram[md] - weight_bytes[md]) / bf16_bytes, open_s[md]);
    printf("\nDisk: %s reads of the .df11 file at %.2f GB/s; its %.2f GB take %.2f s at that "
           "rate; df11_model_open took %.2f s (%.2f× that; later opens read the page cache "
           "or O_DIRECT again).\n",
           direct ? "O_DIRECT" : "buffered", disk_bps / 1e9, sum.file_bytes / 1e9,
           sum.file_bytes / disk_bps, open_s[MODE_OVERLAP],
           open_s[MODE_OVERLAP] / (sum.file_bytes / disk_bps));
    fflush(stdout);
out:
    if (ref) df11_model_close(ref);
    if (g.h) cublasDestroy(g.h);
    if (g.stream) cudaStreamDestroy(g.stream);
    cudaFree(g.x);
    cudaFree(g.y);
    unlink(df11_path);
    unlink(st_path);
    free(M.src);
    free(names);
    return rc;
}
#endif
