/* df11-bench matmul: the matmul op (df11_matmul) against cuBLAS BF16, issue 11's table.
 *
 * The Llama-3-8B block's 7 matrices (tools/weights.h, seeded as df11-synth --shape
 * llama3-8b-block), compressed with the fixed code and with Huffman, one model each on the
 * CUDA backend. Per batch B, the 7 products y = x·Wᵀ in sequence (one block), timed by CUDA
 * events around the sequence, median of --reps:
 *   cublas   cublasGemmEx on the original BF16 weights, the 7 calls under one CUDA graph
 *   op       df11_matmul on the fixed-code model as an engine calls it (the op's own path)
 *   op_graph the same captured in a CUDA graph (B <= 16: the fused path's calls capture)
 *   fused    the same with the fused path forced (B <= 16 only)
 *   op_nopdl, op_graph_nopdl  op and op_graph on the same file opened with
 *            options.matmul_plain_launch:
 *            the fused kernel launched plainly instead of programmatically (B <= 16)
 *   decode   the same with decode + cuBLAS forced (df11i_cuda_matmul_fused_limit(0))
 *   huffman  df11_matmul on the Huffman model (decode + cuBLAS)
 * Ratios are cuBLAS time / time (> 1: faster than BF16), from the same run. y is BF16
 * (--f32 for F32), fp32 accumulation everywhere. The op is called eagerly, as an engine
 * without graphs would; 7 matrices of 2·436 MB stream past the 50 MB L2 each block.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "df11.h"
#include "df11/compress.h"
#include "df11/runtime.h"
#include "tools/cli.h"
#include "tools/weights.h"
#ifdef DF11_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "kernels/matmul.h"
#include "runtime/backend.h"
#endif

#define TOOL "df11-bench matmul"

static void usage(FILE *f)
{
    fprintf(f, "usage: df11-bench matmul [--batches 1,2,...] [--reps R] [--dir DIR] [--f32]\n"
               "                         [--threads T] [--json]\n"
               "The matmul op on the Llama-3-8B block's 7 matrices (fixed and Huffman codes)\n"
               "against cuBLAS BF16 under a CUDA graph. Needs a CUDA build and a GPU.\n"
               "  --batches   default 1,2,4,8,16,32,64,128,256,512\n"
               "  --dir DIR   where the temporary model files go (default $TMPDIR or /tmp)\n");
}

#ifndef DF11_HAVE_CUDA
int bench_matmul_main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return CLI_OK;
    }
    fprintf(stderr, "%s: this df11 was built without CUDA; the matmul benchmark needs a GPU\n",
            TOOL);
    return CLI_FAIL;
}
#else

static const weights_matrix *const MATS = weights_llama3_8b_block;
#define N_MATS WEIGHTS_LLAMA3_8B_BLOCK_N
#define MAX_B 512

enum {
    V_CUBLAS,
    V_OP,
    V_OP_GRAPH,
    V_OP_NOPDL,
    V_OP_GRAPH_NOPDL,
    V_FUSED,
    V_DECODE,
    V_HUFF,
    V_COUNT
};
static const char *const V_NAME[V_COUNT] = { "cublas",         "op",    "op_graph", "op_nopdl",
                                             "op_graph_nopdl", "fused", "decode",   "huffman" };
/* The models: fixed, Huffman, and the fixed file again opened with plain launches. */
#define N_MODELS 3

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s: %s: %s\n", TOOL, #x, cudaGetErrorString(e_));                     \
            return CLI_FAIL;                                                                       \
        }                                                                                          \
    } while (0)

typedef struct bench {
    df11_model *m[N_MODELS];
    df11_weight w[N_MODELS][N_MATS];
    void *bf16[N_MATS]; /* the original weights on the device */
    void *x, *y;        /* MAX_B x 14336 BF16, MAX_B x 14336 F32 */
    cublasHandle_t h;
    cudaStream_t st;
    cudaEvent_t e0, e1;
    df11_dtype yd;
    int reps;
} bench;

/* One block of the variant at batch B, enqueued on b->st. */
static int block(bench *b, int v, uint32_t B)
{
    if (v == V_CUBLAS) {
        const float one = 1, zero = 0;
        for (int i = 0; i < N_MATS; i++)
            if (cublasGemmEx(b->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)MATS[i].rows, (int)B,
                             (int)MATS[i].cols, &one, b->bf16[i], CUDA_R_16BF, (int)MATS[i].cols,
                             b->x, CUDA_R_16BF, (int)MATS[i].cols, &zero, b->y,
                             b->yd == DF11_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF, (int)MATS[i].rows,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
                return -1;
        return 0;
    }
    const int k = v == V_HUFF ? 1 : v == V_OP_NOPDL || v == V_OP_GRAPH_NOPDL ? 2 : 0;
    for (int i = 0; i < N_MATS; i++) {
        df11_status s = df11_matmul(b->m[k], &b->w[k][i], b->x, B, b->y, b->yd, b->st);
        if (s != DF11_OK) {
            fprintf(stderr, "%s: matmul %s B=%u: %s %s\n", TOOL, MATS[i].name, B, df11_strerror(s),
                    df11_last_error_detail());
            return -1;
        }
    }
    return 0;
}

/* Median µs of one block; cuBLAS through a graph. < 0 on failure. */
static double time_block(bench *b, int v, uint32_t B)
{
    cudaGraphExec_t ge = NULL;
    if (v == V_CUBLAS || v == V_OP_GRAPH || v == V_OP_GRAPH_NOPDL) {
        cudaGraph_t g;
        if (cudaStreamBeginCapture(b->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
            return -1;
        int r = block(b, v, B);
        if (cudaStreamEndCapture(b->st, &g) != cudaSuccess || r) return -1;
        if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) return -1;
        cudaGraphDestroy(g);
    }
    uint32_t lim = v == V_DECODE ? 0 : DF11_FUSED_MAX_BATCH;
    df11i_cuda_matmul_fused_limit(lim);
    double t[256];
    int n = b->reps < 256 ? b->reps : 256, ok = 1;
    for (int r = -3; r < n && ok; r++) {
        float ms = 0;
        ok = cudaEventRecord(b->e0, b->st) == cudaSuccess;
        if (ge)
            ok = ok && cudaGraphLaunch(ge, b->st) == cudaSuccess;
        else
            ok = ok && block(b, v, B) == 0;
        ok = ok && cudaEventRecord(b->e1, b->st) == cudaSuccess &&
             cudaEventSynchronize(b->e1) == cudaSuccess &&
             cudaEventElapsedTime(&ms, b->e0, b->e1) == cudaSuccess;
        if (r >= 0) t[r] = 1e3 * ms;
    }
    df11i_cuda_matmul_fused_limit(DF11_FUSED_MAX_BATCH);
    if (ge) cudaGraphExecDestroy(ge);
    return ok ? bench_median(t, n) : -1;
}

static int parse_batches(const char *s, uint32_t *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > MAX_B) return -1;
        out[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

int bench_matmul_main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "batches", required_argument, 0, 'b' }, { "reps", required_argument, 0, 'r' },
        { "dir", required_argument, 0, 'd' },     { "threads", required_argument, 0, 't' },
        { "f32", no_argument, 0, 'f' },           { "json", no_argument, 0, 'j' },
        { "help", no_argument, 0, 'h' },          { 0, 0, 0, 0 }
    };
    uint32_t batches[16] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512 };
    int n_b = 10, threads = 0, json = 0, c;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    bench b = { .yd = DF11_DTYPE_BF16, .reps = 20 };
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) switch (c) {
        case 'b':
            if ((n_b = parse_batches(optarg, batches, 16)) <= 0) {
                fprintf(stderr, "%s: bad --batches '%s'\n", TOOL, optarg);
                return CLI_USAGE;
            }
            break;
        case 'r': b.reps = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'd': dir = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'f': b.yd = DF11_DTYPE_F32; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }

    /* the weights, as df11-synth --shape llama3-8b-block makes them */
    df11_tensor_source src[N_MATS];
    for (int i = 0; i < N_MATS; i++) {
        uint16_t *w = malloc(MATS[i].rows * MATS[i].cols * 2);
        if (!w) {
            fprintf(stderr, "%s: out of memory\n", TOOL);
            return CLI_FAIL;
        }
        weights_fill(w, MATS[i].rows, MATS[i].cols, weights_tensor_seed(MATS[i].name, 0), false,
                     threads);
        src[i] = (df11_tensor_source){ .name = MATS[i].name,
                                       .dtype = DF11_DTYPE_BF16,
                                       .ndim = 2,
                                       .shape = { MATS[i].rows, MATS[i].cols },
                                       .data = w };
    }
    char path[2][600];
    int rc = CLI_FAIL;
    for (int k = 0; k < 2; k++) {
        snprintf(path[k], sizeof path[k], "%s/df11-bench-matmul-%d-%s.df11", dir, (int)getpid(),
                 k ? "huffman" : "fixed");
        df11_compress_options co = { .n_threads = threads,
                                     .codec = k ? DF11_CODEC_EXP_HUFFMAN : DF11_CODEC_EXP_FIXED };
        df11_status s = df11_compress_tensors(path[k], src, N_MATS, NULL, 0, &co, NULL);
        df11_model_options mo;
        df11_model_options_init(&mo);
        mo.backend = DF11_BACKEND_CUDA;
        mo.arena_slots = 2;
        if (s == DF11_OK) s = df11_model_open(path[k], &mo, &b.m[k]);
        for (int i = 0; i < N_MATS && s == DF11_OK; i++)
            s = df11_weight_get(b.m[k], MATS[i].name, &b.w[k][i]);
        if (s != DF11_OK) {
            fprintf(stderr, "%s: %s: %s %s\n", TOOL, path[k], df11_strerror(s),
                    df11_last_error_detail());
            goto out;
        }
    }
    { /* the fixed file again, its fused launches plain */
        df11_model_options mo;
        df11_model_options_init(&mo);
        mo.backend = DF11_BACKEND_CUDA;
        mo.arena_slots = 2;
        mo.matmul_plain_launch = 1;
        df11_status s = df11_model_open(path[0], &mo, &b.m[2]);
        for (int i = 0; i < N_MATS && s == DF11_OK; i++)
            s = df11_weight_get(b.m[2], MATS[i].name, &b.w[2][i]);
        if (s != DF11_OK) {
            fprintf(stderr, "%s: %s (plain launches): %s %s\n", TOOL, path[0], df11_strerror(s),
                    df11_last_error_detail());
            goto out;
        }
    }
    CK(cudaStreamCreateWithFlags(&b.st, cudaStreamNonBlocking));
    CK(cudaEventCreate(&b.e0));
    CK(cudaEventCreate(&b.e1));
    for (int i = 0; i < N_MATS; i++) {
        CK(cudaMalloc(&b.bf16[i], MATS[i].rows * MATS[i].cols * 2));
        CK(cudaMemcpy(b.bf16[i], src[i].data, MATS[i].rows * MATS[i].cols * 2,
                      cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&b.x, (size_t)MAX_B * 14336 * 2));
    CK(cudaMalloc(&b.y, (size_t)MAX_B * 14336 * 4));
    {
        uint16_t *x = malloc((size_t)MAX_B * 14336 * 2);
        uint64_t r = 12345;
        for (size_t i = 0; x && i < (size_t)MAX_B * 14336; i++) /* ±[1, 2), random mantissa */
            x[i] = (uint16_t)(0x3f80 | (weights_mix64(r++) & 0x807f));
        if (!x) goto out;
        CK(cudaMemcpy(b.x, x, (size_t)MAX_B * 14336 * 2, cudaMemcpyHostToDevice));
        free(x);
    }
    if (cublasCreate(&b.h) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(b.h,
                          CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(b.h, b.st) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "%s: cuBLAS setup failed\n", TOOL);
        goto out;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double t[16][V_COUNT];
    for (int i = 0; i < n_b; i++)
        for (int v = 0; v < V_COUNT; v++) {
            t[i][v] =
                (v == V_FUSED || v == V_OP_GRAPH || v == V_OP_NOPDL || v == V_OP_GRAPH_NOPDL) &&
                        batches[i] > DF11_FUSED_MAX_BATCH
                    ? NAN
                    : time_block(&b, v, batches[i]);
            if (t[i][v] < 0) {
                fprintf(stderr, "%s: %s at B=%u failed\n", TOOL, V_NAME[v], batches[i]);
                goto out;
            }
        }
    if (json) {
        printf("{\"device\":\"%s\",\"y\":\"%s\",\"reps\":%d,\"rows\":[", prop.name,
               b.yd == DF11_DTYPE_F32 ? "f32" : "bf16", b.reps);
        for (int i = 0; i < n_b; i++) {
            printf("%s{\"batch\":%u", i ? "," : "", batches[i]);
            for (int v = 0; v < V_COUNT; v++)
                if (isnan(t[i][v]))
                    printf(",\"%s_us\":null,\"%s_x\":null", V_NAME[v], V_NAME[v]);
                else
                    printf(",\"%s_us\":%.2f,\"%s_x\":%.4f", V_NAME[v], t[i][v], V_NAME[v],
                           t[i][V_CUBLAS] / t[i][v]);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("%s: Llama-3-8B block (7 matrices), y %s, median of %d; µs per block, x = "
               "cuBLAS / time\n",
               prop.name, b.yd == DF11_DTYPE_F32 ? "F32" : "BF16", b.reps);
        printf("| B | cuBLAS (graph) | op, fixed | op, fixed, graph | op, no PDL | op, graph, no "
               "PDL | fused forced | decode+cuBLAS forced | op, Huffman |\n"
               "|---|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < n_b; i++) {
            printf("| %u | %.1f", batches[i], t[i][V_CUBLAS]);
            for (int v = V_OP; v < V_COUNT; v++)
                if (isnan(t[i][v]))
                    printf(" | –");
                else
                    printf(" | %.1f (%.3fx)", t[i][v], t[i][V_CUBLAS] / t[i][v]);
            printf(" |\n");
        }
    }
    rc = CLI_OK;
out:
    df11_model_close(b.m[2]);
    for (int k = 0; k < 2; k++) {
        df11_model_close(b.m[k]);
        unlink(path[k]);
    }
    for (int i = 0; i < N_MATS; i++) {
        free((void *)src[i].data);
        if (b.bf16[i]) cudaFree(b.bf16[i]);
    }
    if (b.h) cublasDestroy(b.h);
    return rc;
}
#endif
