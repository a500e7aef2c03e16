/* df11-bench matmul: the matmul op (df11_matmul) over a model of many blocks, as an engine
 * calls it, against the faster of cublasGemmEx and cublasLt on the BF16 weights: issue 11's
 * table.
 *
 * The model: --blocks L Llama-3-8B blocks (tools/weights.h's 7 matrices each, every tensor
 * seeded by its name as df11-synth --shape llama3-8b seeds it, so blocks differ). The BF16
 * weights are generated block by block into an unlinked temporary file under --dir,
 * mapped (the page cache holds what RAM can), compressed from there with the fixed code
 * and with Huffman, and opened as two models on the CUDA backend with default options:
 * 2 arena slots, so L >= 3 and the arena path cannot keep every block decoded from one pass
 * to the next (each row prints the arena decodes per pass, L when none is cached).
 *
 * One pass = for each block in order, its 7 products y = x·Wᵀ (q k v o gate up down).
 * Passes run back to back on one stream after a warm-up pass, each timed by CUDA events;
 * the median of --reps, divided by L, is the µs per block; every column is timed twice
 * (two rounds over the columns of a batch) and keeps its faster median. Back to back, the arena's
 * prefetch of block 0 overlaps the last block as it does from token to token. Per batch B:
 *   gemmex    cublasGemmEx on the BF16 weights of all L blocks, one pass in a CUDA graph
 *   lt        cublasLt, per matrix the fastest of up to 8 heuristic algorithms, the same way
 *             (reference = the faster of gemmex and lt; x = reference / time, > 1: faster)
 *   op        df11_matmul on the fixed-code model, eager: the op's own choice of path
 *   op_graph  the same captured in a graph (B up to the fused path's default limit,
 *             df11i_fused_matmul_default_max: the arena path waits on events recorded
 *             outside a capture)
 *   fused     the fused path forced at every B (from 25 the wgmma kernel where it runs)
 *   decode    decode + cuBLAS forced (df11i_cuda_matmul_fused_limit(0)): the arena path
 *   huffman   df11_matmul on the Huffman model, the op's own choice (its fused kernel at
 *             batch 1 where --lane-symbols is 64..256, else the arena path)
 *   op_vs_better  op / min(fused, decode): issue 11 asks the op's choice to stay <= 1.03
 *   stacked   the block as engines that keep q, k, v and gate, up as one matrix call it:
 *             4 products (q+k+v, o, gate+up, down), df11_weight_stack on the fixed-code
 *             model (eager and as a graph) against cublasGemmEx on the same stacked BF16
 *             (graph; the BF16 block lies q, k, v, o, gate, up, down in order, so q+k+v
 *             and gate+up are stacked matrices as they are)
 * Also which fused kernels the device runs of the build's code (up to which batch, and
 * whether with programmatic launch: the same table is other kernels on other GPUs), the
 * device-to-device copy bandwidth (cudaMemcpyAsync of 1 GiB, bytes read + written), and per
 * matrix at B = 1: the fused path and the reference, each a graph over the matrix in all L
 * blocks replayed after a read of 128 MiB that evicts L2 (L copies of k alone may fit in
 * it), and compressed bytes (the file's tensor info) / time as a fraction of the copy
 * bandwidth. Last, issue 11's targets on the batches run, each met or not (TARGETS: written for
 * an H100, so the verdicts are the only there). y is BF16 (--f32: F32); fp32 accumulation
 * everywhere:
 * cuBLAS reduced-precision reductions are disallowed, and cublasLt's split-K partials may
 * only be kept in fp32 for a BF16 y.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/bench.h"
#include "df11.h"
#include "df11/compress.h"
#include "df11/runtime.h"
#include "tools/cli.h"
#include "tools/weights.h"
#ifdef DF11_HAVE_CUDA
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "kernels/fused_gemm.h"
#include "kernels/matmul.h"
#include "runtime/backend.h"
#endif

#define TOOL "df11-bench matmul"
#define MAX_BLOCKS 32
#define MAX_REPS 1000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: df11-bench matmul [--blocks L] [--batches 1,2,...] [--reps R] [--dir DIR]\n"
            "                         [--f32] [--threads T] [--lane-symbols S]\n"
            "                         [--matrix-batch B] [--codec fixed|fixed8] [--l2-sums]\n"
            "                         [--plain-launch] [--json]\n"
            "The matmul op over a model of L Llama-3-8B blocks (fixed and Huffman codes), a\n"
            "pass over every block's 7 matrices as an engine calls them, against the faster\n"
            "of cublasGemmEx and cublasLt (best of 8 algorithms) on the BF16 weights under\n"
            "CUDA graphs. Needs a CUDA build and a GPU.\n"
            "  --blocks L   blocks in the model, 3..%d (default 8; 436 MB of BF16 each)\n"
            "  --batches    up to 16 of 1..512 (default 1,2,4,8,16,32,64,128,256,512)\n"
            "  --reps R     timed passes per measurement, 1..%d; the median (default 20)\n"
            "  --dir DIR    temporary files: L x 436 MB BF16, two models of ~0.7x that\n"
            "               (default $TMPDIR or /tmp)\n"
            "  --threads T  generator and compressor threads (default 0 = all cores)\n"
            "  --lane-symbols S  the Huffman model's symbols a lane (multiple of 8; default\n"
            "               df11-compress's): its fused kernel's warps are S-long sequences\n"
            "  --matrix-batch B  the batch of the per-matrix table, 1..512 (default 1); the\n"
            "               fused path forced there at any B\n"
            "  --codec C    the fixed-code model's code: fixed (escapes, the default) or\n"
            "               fixed8 (8-exponent window and records)\n"
            "  --l2-sums    the wgmma kernel's (B >= 25) split sums through the L2, not in\n"
            "               clusters' shared memory where they fit (to compare the two)\n"
            "  --plain-launch  the op's kernels launched plainly, not with programmatic\n"
            "               dependent launch (df11_model_options.matmul_plain_launch)\n"
            "  --f32        y in F32 instead of BF16\n"
            "  --json       the numbers as one JSON object\n",
            MAX_BLOCKS, MAX_REPS);
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
#define BLOCK0 "model.layers.0."
#define MAX_B 512
#define MAX_BATCHES 16
#define N_ALGOS 8
#define FLUSH_ROWS 16384 /* x 4096 BF16 = 128 MiB, read to evict L2 */
#define ROUNDS 2         /* rounds over the columns of a batch; each column's best kept */

/* How a product is made. */
enum { K_GEMMEX, K_LT, K_FIXED, K_HUFF, K_GEMMEX_STACKED, K_FIXED_STACKED };
/* The block's 4 products with q+k+v and gate+up stacked: first matrix and count. */
static const int STACKS[4][2] = { { 0, 3 }, { 3, 1 }, { 4, 2 }, { 6, 1 } };
/* The fused limit a column sets; LIM_OWN leaves the op's own, LIM_EVERY takes every batch. */
#define LIM_OWN DF11I_FUSED_AUTO
#define LIM_EVERY DF11I_FUSED_EVERY

static const struct column {
    const char *key, *title;
    int kind, graph, fused_only;
    uint32_t lim;
} COLS[] = {
    { "gemmex", "cublasGemmEx (graph)", K_GEMMEX, 1, 0, LIM_OWN },
    { "lt", "cublasLt best (graph)", K_LT, 1, 0, LIM_OWN },
    { "op", "op, fixed", K_FIXED, 0, 0, LIM_OWN },
    { "op_graph", "op, fixed, graph", K_FIXED, 1, 1, LIM_OWN },
    { "fused", "fused forced", K_FIXED, 0, 1, LIM_EVERY },
    { "decode", "decode+cuBLAS forced", K_FIXED, 0, 0, 0 },
    { "huffman", "op, Huffman", K_HUFF, 0, 0, LIM_OWN },
    { "gemmex_stacked", "stacked: cublasGemmEx (graph)", K_GEMMEX_STACKED, 1, 0, LIM_OWN },
    { "op_stacked", "stacked: op, fixed", K_FIXED_STACKED, 0, 0, LIM_OWN },
    { "op_stacked_graph", "stacked: op, fixed, graph", K_FIXED_STACKED, 1, 1, LIM_OWN },
};
enum {
    C_GEMMEX,
    C_LT,
    C_OP,
    C_OP_GRAPH,
    C_FUSED,
    C_DECODE,
    C_HUFF,
    C_GEMMEX_STACKED,
    C_OP_STACKED,
    C_OP_STACKED_GRAPH,
    N_COLS
};

/* cublasLt for one matrix at one batch: its heuristic's algorithms and the fastest. */
typedef struct lt_plan {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, x, y;
    cublasLtMatmulHeuristicResult_t algo[N_ALGOS];
    int n, cur, best; /* best < 0: none ran, cublasGemmEx stands in */
} lt_plan;

typedef struct bench {
    uint32_t L;
    df11_model *m[2];   /* fixed, Huffman */
    df11_weight *w[2];  /* [block * N_MATS + matrix] */
    df11_weight *stack; /* the fixed-code model's [block * 4 + stack] (STACKS) */
    char *bf16;         /* the original weights on the device, block after block */
    uint64_t mat_off[N_MATS], block_bytes;
    void *x, *y, *flush; /* MAX_B x 14336 BF16, MAX_B x 28672 F32, FLUSH_ROWS x 4096 */
    cublasHandle_t h;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
    lt_plan plan[N_MATS];
    cudaStream_t st;
    cudaEvent_t *e0, *e1; /* reps each */
    df11_dtype yd;
    int reps;
} bench;

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) fprintf(stderr, "%s: %s: %s\n", TOOL, what, cudaGetErrorString(e));
    return e == cudaSuccess;
}
#define CK(x)                                                                                      \
    do {                                                                                           \
        if (!cuda_ok((x), #x)) goto out;                                                           \
    } while (0)

static cudaDataType y_type(const bench *b)
{
    return b->yd == DF11_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF;
}

static int gemmex(bench *b, const void *W, uint64_t rows, uint64_t cols, uint32_t B)
{
    const float one = 1, zero = 0;
    return cublasGemmEx(b->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)B, (int)cols, &one, W,
                        CUDA_R_16BF, (int)cols, b->x, CUDA_R_16BF, (int)cols, &zero, b->y,
                        y_type(b), (int)rows, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS
               ? 0
               : -1;
}

static void lt_plan_free(lt_plan *p)
{
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->x) cublasLtMatrixLayoutDestroy(p->x);
    if (p->y) cublasLtMatrixLayoutDestroy(p->y);
    *p = (lt_plan){ .best = -1 };
}

/* Matrix i's plan at batch B: up to N_ALGOS algorithms from the heuristic (0 is fine:
 * cublasGemmEx then stands in). */
static int lt_plan_make(bench *b, int i, uint32_t B)
{
    lt_plan *p = &b->plan[i];
    lt_plan_free(p);
    const uint64_t N = MATS[i].rows, K = MATS[i].cols;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    /* a BF16 y: split-K partials in fp32 or none, as for cublasGemmEx (see the top) */
    const uint32_t red = b->yd == DF11_DTYPE_F32 ? CUBLASLT_REDUCTION_SCHEME_MASK
                                                 : CUBLASLT_REDUCTION_SCHEME_NONE |
                                                       CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    cublasLtMatmulPreference_t pref = NULL;
    int ok =
        cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0 &&
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0 &&
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0 &&
        cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, K, N, (int64_t)K) == 0 &&
        cublasLtMatrixLayoutCreate(&p->x, CUDA_R_16BF, K, B, (int64_t)K) == 0 &&
        cublasLtMatrixLayoutCreate(&p->y, y_type(b), N, B, (int64_t)N) == 0 &&
        cublasLtMatmulPreferenceCreate(&pref) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &b->ws_bytes, sizeof b->ws_bytes) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red,
                                             sizeof red) == 0;
    if (ok && cublasLtMatmulAlgoGetHeuristic(b->lt, p->op, p->a, p->x, p->y, p->y, pref, N_ALGOS,
                                             p->algo, &p->n) != CUBLAS_STATUS_SUCCESS)
        p->n = 0;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) fprintf(stderr, "%s: cublasLt setup failed (%s, B=%u)\n", TOOL, MATS[i].name, B);
    return ok ? 0 : -1;
}

/* Matrix i of the block at W with the plan's current algorithm, or cublasGemmEx. */
static int lt_matmul(bench *b, int i, const void *W, uint32_t B)
{
    const lt_plan *p = &b->plan[i];
    if (p->cur < 0) return gemmex(b, W, MATS[i].rows, MATS[i].cols, B);
    const float one = 1, zero = 0;
    return cublasLtMatmul(b->lt, p->op, &one, W, p->a, b->x, p->x, &zero, b->y, p->y, b->y, p->y,
                          &p->algo[p->cur].algo, b->ws, b->ws_bytes, b->st) == CUBLAS_STATUS_SUCCESS
               ? 0
               : -1;
}

/* One product, enqueued on b->st. */
static int product(bench *b, int kind, uint32_t blk, int i, uint32_t B)
{
    const void *W = b->bf16 + blk * b->block_bytes + b->mat_off[i];
    if (kind == K_GEMMEX) return gemmex(b, W, MATS[i].rows, MATS[i].cols, B);
    if (kind == K_LT) return lt_matmul(b, i, W, B);
    const int k = kind == K_HUFF;
    const df11_weight *w = &b->w[k][blk * N_MATS + i];
    df11_status s = df11_matmul(b->m[k], w, b->x, B, b->y, b->yd, b->st);
    if (s != DF11_OK)
        fprintf(stderr, "%s: matmul %s B=%u: %s %s\n", TOOL, w->name, B, df11_strerror(s),
                df11_last_error_detail());
    return s == DF11_OK ? 0 : -1;
}

/* Stacked product j of block blk (STACKS), enqueued on b->st. */
static int product_stacked(bench *b, int kind, uint32_t blk, int j, uint32_t B)
{
    const int i = STACKS[j][0];
    if (kind == K_GEMMEX_STACKED) {
        uint64_t rows = 0;
        for (int k = 0; k < STACKS[j][1]; k++) rows += MATS[i + k].rows;
        return gemmex(b, b->bf16 + blk * b->block_bytes + b->mat_off[i], rows, MATS[i].cols, B);
    }
    const df11_weight *w = &b->stack[blk * 4 + j];
    df11_status s = df11_matmul(b->m[0], w, b->x, B, b->y, b->yd, b->st);
    if (s != DF11_OK)
        fprintf(stderr, "%s: matmul %s B=%u: %s %s\n", TOOL, w->name, B, df11_strerror(s),
                df11_last_error_detail());
    return s == DF11_OK ? 0 : -1;
}

/* One pass: every block's matrices in order, or matrix `mat` alone (>= 0); the stacked
 * kinds: every block's 4 stacked products. */
static int pass(bench *b, int kind, int mat, uint32_t B)
{
    if (kind == K_GEMMEX_STACKED || kind == K_FIXED_STACKED) {
        for (uint32_t blk = 0; blk < b->L; blk++)
            for (int j = 0; j < 4; j++)
                if (product_stacked(b, kind, blk, j, B)) return -1;
        return 0;
    }
    for (uint32_t blk = 0; blk < b->L; blk++)
        for (int i = mat < 0 ? 0 : mat; i < (mat < 0 ? N_MATS : mat + 1); i++)
            if (product(b, kind, blk, i, B)) return -1;
    return 0;
}

/* Median µs of a pass (matrix `mat` alone when >= 0, each replay after the L2 flush),
 * eager or as one graph, under fused limit `lim`; < 0 on failure. */
static double time_pass(bench *b, int kind, int mat, int graph, uint32_t lim, uint32_t B)
{
    const uint32_t old = lim == LIM_OWN ? 0 : df11i_cuda_matmul_fused_limit(lim);
    cudaGraphExec_t ge = NULL;
    double med = -1, *t = malloc(sizeof *t * (size_t)b->reps);
    int ok = t != NULL;
    if (ok && graph) {
        cudaGraph_t g = NULL;
        ok = cudaStreamBeginCapture(b->st, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        if (ok) {
            int r = pass(b, kind, mat, B);
            ok = cudaStreamEndCapture(b->st, &g) == cudaSuccess && !r &&
                 cudaGraphInstantiate(&ge, g, 0) == cudaSuccess;
        }
        if (g) cudaGraphDestroy(g);
    }
    /* the warm-up pass, then reps back to back */
    for (int r = -1; r < b->reps && ok; r++) {
        if (mat >= 0) ok = gemmex(b, b->flush, FLUSH_ROWS, 4096, 1) == 0;
        ok = ok && (r < 0 || cudaEventRecord(b->e0[r], b->st) == cudaSuccess);
        ok = ok && (ge ? cudaGraphLaunch(ge, b->st) == cudaSuccess : pass(b, kind, mat, B) == 0);
        ok = ok && (r < 0 || cudaEventRecord(b->e1[r], b->st) == cudaSuccess);
    }
    ok = ok && cudaStreamSynchronize(b->st) == cudaSuccess;
    for (int r = 0; r < b->reps && ok; r++) {
        float ms = 0;
        ok = cudaEventElapsedTime(&ms, b->e0[r], b->e1[r]) == cudaSuccess;
        t[r] = 1e3 * ms;
    }
    if (ok) med = bench_median(t, b->reps);
    if (lim != LIM_OWN) df11i_cuda_matmul_fused_limit(old);
    if (ge) cudaGraphExecDestroy(ge);
    free(t);
    return med;
}

/* Tunes every matrix's cublasLt plan at B: each algorithm timed as a graph over the matrix
 * in all L blocks; lt_us[i] = the best µs per matrix, or the cublasGemmEx time where no
 * algorithm ran. */
static int lt_tune(bench *b, uint32_t B, double lt_us[N_MATS])
{
    for (int i = 0; i < N_MATS; i++) {
        lt_plan *p = &b->plan[i];
        if (lt_plan_make(b, i, B)) return -1;
        double best = INFINITY;
        for (p->cur = 0; p->cur < p->n; p->cur++) {
            /* an algorithm that fails eagerly is skipped, not captured */
            if (lt_matmul(b, i, b->bf16 + b->mat_off[i], B) ||
                cudaStreamSynchronize(b->st) != cudaSuccess)
                continue;
            double t = time_pass(b, K_LT, i, 1, LIM_OWN, B);
            if (t >= 0 && t < best) best = t, p->best = p->cur;
        }
        p->cur = p->best;
        if (p->best < 0 && (best = time_pass(b, K_GEMMEX, i, 1, LIM_OWN, B)) < 0) return -1;
        lt_us[i] = best / b->L;
    }
    return 0;
}

static uint64_t model_decodes(const df11_model *m)
{
    df11_model_stats st = { .size = sizeof st };
    return df11_model_stats_get(m, &st) == DF11_OK ? st.decodes : 0;
}

/* "q" for "model.layers.0.self_attn.q_proj.weight": the word before "_proj". */
static void mat_tag(int i, char *out, size_t n)
{
    const char *end = strstr(MATS[i].name, "_proj"), *p = end;
    while (p && p > MATS[i].name && p[-1] != '.') p--;
    snprintf(out, n, "%.*s", p ? (int)(end - p) : 0, p ? p : "");
}

static int parse_batches(const char *s, uint32_t *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 1 || v > MAX_B || n == max || (*end && *end != ',')) return -1;
        out[n++] = (uint32_t)v;
        s = *end ? end + 1 : end;
        if (*end && !*s) return -1; /* a trailing comma */
    }
    return n;
}

/* The BF16 weights of L blocks, generated into an unlinked temporary file under `dir` and
 * mapped: src[blk * N_MATS + i] point into it, names into `names`. NULL on failure. */
static void *weights_make(const char *dir, uint32_t L, uint64_t block_bytes, int threads,
                          df11_tensor_source *src, char (*names)[96])
{
    char path[600];
    snprintf(path, sizeof path, "%s/df11-bench-matmul-%d-bf16.tmp", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fprintf(stderr, "%s: cannot create '%s': %s\n", TOOL, path, strerror(errno));
        return NULL;
    }
    unlink(path); /* gone with the process, however it ends */
    const uint64_t size = L * block_bytes;
    /* allocated now: a full disk fails here, not as SIGBUS on a write to the mapping */
    int e = posix_fallocate(fd, 0, (off_t)size);
    void *map = e ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED && !e) e = errno;
    close(fd);
    if (e) {
        fprintf(stderr, "%s: %s of BF16 weights under '%s': %s\n", TOOL, cli_bytes(size), dir,
                strerror(e));
        return NULL;
    }
    uint16_t *w = map;
    for (uint32_t blk = 0; blk < L; blk++)
        for (int i = 0; i < N_MATS; i++) {
            char *name = names[blk * N_MATS + i];
            snprintf(name, sizeof names[0], "model.layers.%u.%s", blk,
                     MATS[i].name + strlen(BLOCK0));
            weights_fill(w, MATS[i].rows, MATS[i].cols, weights_tensor_seed(name, 0), false,
                         threads);
            src[blk * N_MATS + i] = (df11_tensor_source){ .name = name,
                                                          .dtype = DF11_DTYPE_BF16,
                                                          .ndim = 2,
                                                          .shape = { MATS[i].rows, MATS[i].cols },
                                                          .data = w };
            w += MATS[i].rows * MATS[i].cols;
        }
    return map;
}

static void print_us(double us, double ref)
{
    if (isnan(us))
        printf(" | –");
    else
        printf(" | %.1f (%.3fx)", us, ref / us);
}

static void json_num(const char *key, double v, const char *fmt)
{
    printf(",\"%s\":", key);
    if (isnan(v))
        printf("null");
    else
        printf(fmt, v);
}

/* Issue 11's targets for this table. They were written for an NVIDIA H100 80GB HBM3; an H200's
 * DRAM gives each SM 1.5x the H100's bandwidth, so the same kernels measure lower ratios there
 * (bench/RESULTS.md, twenty-eighth session), and the verdicts are the H100's only on an H100. */
#define TARGET_GPU "NVIDIA H100 80GB HBM3"
static const struct target {
    uint32_t batch;
    int huffman;     /* the Huffman model's op, else the fixed-code model's */
    double at_least; /* reference / time */
} TARGETS[] = { { 1, 0, 1.30 },   { 8, 0, 1.20 }, { 16, 0, 1.15 }, { 64, 0, 1.00 },
                { 256, 0, 0.90 }, { 1, 1, 0.85 }, { 16, 1, 0.75 } };
#define N_TARGETS (int)(sizeof TARGETS / sizeof TARGETS[0])
#define TARGET_CHOICE 1.03 /* the op's choice against the better path, at most, at every B */
#define TARGET_STREAM 0.85 /* the fused GEMV's compressed bytes a µs against the copy's */

/* A target against what was measured: met where value >= bound (at_most: value <= bound). */
typedef struct verdict {
    char what[128], got[48];
    double value, bound;
    int at_most;
} verdict;

static int verdict_met(const verdict *v)
{
    return v->at_most ? v->value <= v->bound : v->value >= v->bound; /* NaN: not met */
}

/* The verdicts on the batches run: each TARGETS row whose batch was timed (the fixed code's op
 * under a graph where it was timed so, as the reference is), the op's worst choice over the
 * batches, and at matrix batch 1 the best matrix's stream (where the fused kernels ran).
 * Returns how many. */
static int targets_of(const uint32_t *batches, int n_b, double t[][N_COLS], const char *fixed_name,
                      uint32_t mat_b, const double *of_copy, const char *const *mat_names,
                      verdict v[N_TARGETS + 2])
{
    int n = 0;
    for (int k = 0; k < N_TARGETS; k++)
        for (int bi = 0; bi < n_b; bi++) {
            const struct target *tg = &TARGETS[k];
            if (batches[bi] != tg->batch) continue;
            const int graph = !tg->huffman && !isnan(t[bi][C_OP_GRAPH]);
            const double us = tg->huffman ? t[bi][C_HUFF] : t[bi][graph ? C_OP_GRAPH : C_OP];
            verdict *o = &v[n++];
            o->value = fmin(t[bi][C_GEMMEX], t[bi][C_LT]) / us;
            o->bound = tg->at_least;
            o->at_most = 0;
            snprintf(o->what, sizeof o->what, "%s: the op%s at B = %u, >= %.2fx",
                     tg->huffman ? "Huffman" : fixed_name, graph ? " under a graph" : "", tg->batch,
                     tg->at_least);
            snprintf(o->got, sizeof o->got, "%.3fx", o->value);
            break;
        }
    int worst = -1;
    double choice = NAN;
    for (int bi = 0; bi < n_b; bi++) {
        const double c = t[bi][C_OP] / fmin(t[bi][C_FUSED], t[bi][C_DECODE]);
        if (!isnan(c) && (worst < 0 || c > choice)) choice = c, worst = bi;
    }
    if (worst >= 0) {
        verdict *o = &v[n++];
        o->value = choice;
        o->bound = TARGET_CHOICE;
        o->at_most = 1;
        snprintf(o->what, sizeof o->what,
                 "the op's choice against the better path at each of the %d batches, <= %.2f", n_b,
                 TARGET_CHOICE);
        snprintf(o->got, sizeof o->got, "%.3f at worst (B = %u)", choice, batches[worst]);
    }
    int best = -1; /* none without the fused kernels (every of_copy NaN) */
    for (int i = 0; i < N_MATS; i++)
        if (!isnan(of_copy[i]) && (best < 0 || of_copy[i] > of_copy[best])) best = i;
    if (mat_b == 1 && best >= 0) {
        verdict *o = &v[n++];
        o->value = of_copy[best];
        o->bound = TARGET_STREAM;
        o->at_most = 0;
        snprintf(o->what, sizeof o->what,
                 "the fused GEMV's compressed bytes a µs at B = 1, >= %.0f%% of the copy's",
                 100 * TARGET_STREAM);
        snprintf(o->got, sizeof o->got, "%.1f%% (%s, the best matrix)", 100 * o->value,
                 mat_names[best]);
    }
    return n;
}

int bench_matmul_main(int argc, char **argv)
{
    static const struct option lo[] = { { "blocks", required_argument, 0, 'L' },
                                        { "batches", required_argument, 0, 'b' },
                                        { "reps", required_argument, 0, 'r' },
                                        { "dir", required_argument, 0, 'd' },
                                        { "threads", required_argument, 0, 't' },
                                        { "lane-symbols", required_argument, 0, 's' },
                                        { "f32", no_argument, 0, 'f' },
                                        { "json", no_argument, 0, 'j' },
                                        { "matrix-batch", required_argument, 0, 'm' },
                                        { "codec", required_argument, 0, 'c' },
                                        { "l2-sums", no_argument, 0, 'S' },
                                        { "plain-launch", no_argument, 0, 'P' },
                                        { "help", no_argument, 0, 'h' },
                                        { 0, 0, 0, 0 } };
    uint32_t batches[MAX_BATCHES] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512 };
    int n_b = 10, threads = 0, json = 0, clusters = 1, c;
    uint32_t lane_symbols = 0; /* the Huffman model's; 0: the library's default */
    uint32_t mat_b = 1;        /* the per-matrix table's batch */
    df11_codec fixed_codec = DF11_CODEC_EXP_FIXED;
    long v;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    bench b = { .L = 8, .yd = DF11_DTYPE_BF16, .reps = 20 };
    df11_model_options mo;
    df11_model_options_init(&mo);
    mo.backend = DF11_BACKEND_CUDA;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) switch (c) {
        case 'L':
            /* one block more than the arena has slots, or the arena keeps them all */
            if ((v = cli_parse_range(optarg, mo.arena_slots + 1, MAX_BLOCKS)) < 0)
                return cli_usage_error(TOOL, "--blocks takes %u..%d, not '%s'", mo.arena_slots + 1,
                                       MAX_BLOCKS, optarg);
            b.L = (uint32_t)v;
            break;
        case 'b':
            if ((n_b = parse_batches(optarg, batches, MAX_BATCHES)) <= 0)
                return cli_usage_error(TOOL,
                                       "--batches takes up to %d of 1..%d, comma-separated, "
                                       "not '%s'",
                                       MAX_BATCHES, MAX_B, optarg);
            break;
        case 'r':
            if ((v = cli_parse_range(optarg, 1, MAX_REPS)) < 0)
                return cli_usage_error(TOOL, "--reps takes 1..%d, not '%s'", MAX_REPS, optarg);
            b.reps = (int)v;
            break;
        case 'd':
            if (!*optarg) return cli_usage_error(TOOL, "--dir takes a folder, not ''");
            dir = optarg;
            break;
        case 't':
            if ((v = cli_parse_range(optarg, 0, 4096)) < 0)
                return cli_usage_error(TOOL, "--threads takes 0..4096, not '%s'", optarg);
            threads = (int)v;
            break;
        case 's':
            if ((v = cli_parse_range(optarg, 8, 4096)) < 0 || v % 8)
                return cli_usage_error(TOOL,
                                       "--lane-symbols takes a multiple of 8 in 8..4096, "
                                       "not '%s'",
                                       optarg);
            lane_symbols = (uint32_t)v;
            break;
        case 'm':
            if ((v = cli_parse_range(optarg, 1, MAX_B)) < 0)
                return cli_usage_error(TOOL, "--matrix-batch takes 1..%d, not '%s'", MAX_B, optarg);
            mat_b = (uint32_t)v;
            break;
        case 'c':
            if (cli_parse_codec(TOOL, optarg, &fixed_codec, NULL) != CLI_OK) return CLI_USAGE;
            if (fixed_codec == DF11_CODEC_EXP_HUFFMAN)
                return cli_usage_error(TOOL, "--codec takes fixed or fixed8, not '%s'", optarg);
            break;
        case 'f': b.yd = DF11_DTYPE_F32; break;
        case 'S': clusters = 0; break;
        case 'P': mo.matmul_plain_launch = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }
    if (optind < argc) return cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    df11i_fused_gemm_test_clusters(clusters);
    for (int i = 0; i < N_MATS; i++) {
        if (strncmp(MATS[i].name, BLOCK0, strlen(BLOCK0))) {
            fprintf(stderr, "%s: %s is not a block-0 tensor\n", TOOL, MATS[i].name);
            return CLI_FAIL;
        }
        b.mat_off[i] = b.block_bytes;
        b.block_bytes += MATS[i].rows * MATS[i].cols * 2;
    }

    const double t_setup = bench_now_s();
    const uint32_t n_w = b.L * N_MATS;
    df11_tensor_source *src = calloc(n_w, sizeof *src);
    char(*names)[96] = calloc(n_w, sizeof *names);
    char path[2][600] = { "", "" };
    void *map = NULL;
    double copy_gbs = NAN, t[MAX_BATCHES][N_COLS], dpp[MAX_BATCHES][2];
    double mat_fused[N_MATS], mat_ref[N_MATS], mat_bytes[N_MATS] = { 0 };
    int rc = CLI_FAIL;
    b.w[0] = calloc(n_w, sizeof *b.w[0]);
    b.w[1] = calloc(n_w, sizeof *b.w[1]);
    b.stack = calloc(4 * (size_t)b.L, sizeof *b.stack);
    b.e0 = calloc((size_t)b.reps, sizeof *b.e0);
    b.e1 = calloc((size_t)b.reps, sizeof *b.e1);
    for (int i = 0; i < N_MATS; i++) b.plan[i].best = -1;
    if (!src || !names || !b.w[0] || !b.w[1] || !b.stack || !b.e0 || !b.e1) {
        fprintf(stderr, "%s: out of memory\n", TOOL);
        goto out;
    }
    if (!(map = weights_make(dir, b.L, b.block_bytes, threads, src, names))) goto out;
    for (int k = 0; k < 2; k++) {
        snprintf(path[k], sizeof path[k], "%s/df11-bench-matmul-%d-%s.df11", dir, (int)getpid(),
                 k ? "huffman" : "fixed");
        df11_compress_options co = { .n_threads = threads,
                                     .codec = k ? DF11_CODEC_EXP_HUFFMAN : fixed_codec,
                                     .lane_symbols = k ? lane_symbols : 0,
                                     .progress = cli_progress,
                                     .progress_ctx = (void *)TOOL };
        df11_status s = df11_compress_tensors(path[k], src, n_w, NULL, 0, &co, NULL);
        if (s == DF11_OK) s = df11_model_open(path[k], &mo, &b.m[k]);
        unlink(path[k]); /* the model holds what it needs */
        for (uint32_t j = 0; j < n_w && s == DF11_OK; j++)
            s = df11_weight_get(b.m[k], names[j], &b.w[k][j]);
        for (uint32_t j = 0; k == 0 && j < 4 * b.L && s == DF11_OK; j++)
            s = df11_weight_stack(b.m[0], (uint32_t)STACKS[j % 4][1],
                                  &b.w[0][j / 4 * N_MATS + STACKS[j % 4][0]], &b.stack[j]);
        if (s != DF11_OK) {
            fprintf(stderr, "%s: %s: %s %s\n", TOOL, path[k], df11_strerror(s),
                    df11_last_error_detail());
            goto out;
        }
    }
    { /* the compressed bytes of each matrix, from the file's tensor info */
        const df11_file *f = df11_model_file(b.m[0]);
        for (uint32_t j = 0; j < n_w; j++) {
            uint32_t ti;
            if (df11_file_find_tensor(f, names[j], &ti) != DF11_OK) {
                fprintf(stderr, "%s: %s: not in the model\n", TOOL, names[j]);
                goto out;
            }
            mat_bytes[j % N_MATS] += (double)df11_file_tensor(f, ti)->stored_bytes / b.L;
        }
    }
    CK(cudaStreamCreateWithFlags(&b.st, cudaStreamNonBlocking));
    for (int r = 0; r < b.reps; r++) {
        CK(cudaEventCreate(&b.e0[r]));
        CK(cudaEventCreate(&b.e1[r]));
    }
    CK(cudaMalloc((void **)&b.bf16, b.L * b.block_bytes));
    for (uint32_t blk = 0; blk < b.L; blk++)
        CK(cudaMemcpy(b.bf16 + blk * b.block_bytes, (char *)map + blk * b.block_bytes,
                      b.block_bytes, cudaMemcpyHostToDevice));
    munmap(map, b.L * b.block_bytes);
    map = NULL;
    const double setup_s = bench_now_s() - t_setup;

    CK(cudaMalloc(&b.x, (size_t)MAX_B * 14336 * 2));
    CK(cudaMalloc(&b.y, (size_t)MAX_B * 28672 * 4)); /* gate+up stacked */
    CK(cudaMalloc(&b.flush, (size_t)FLUSH_ROWS * 4096 * 2));
    CK(cudaMemset(b.flush, 0, (size_t)FLUSH_ROWS * 4096 * 2));
    {
        uint16_t *x = malloc((size_t)MAX_B * 14336 * 2);
        uint64_t r = 12345;
        if (!x) {
            fprintf(stderr, "%s: out of memory\n", TOOL);
            goto out;
        }
        for (size_t i = 0; i < (size_t)MAX_B * 14336; i++) /* ±[1, 2), random mantissa */
            x[i] = (uint16_t)(0x3f80 | (weights_mix64(r++) & 0x807f));
        cudaError_t e = cudaMemcpy(b.x, x, (size_t)MAX_B * 14336 * 2, cudaMemcpyHostToDevice);
        free(x);
        CK(e);
    }
    b.ws_bytes = 32u << 20;
    CK(cudaMalloc(&b.ws, b.ws_bytes));
    if (cublasCreate(&b.h) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(b.h,
                          CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(b.h, b.st) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(b.h, b.ws, b.ws_bytes) != CUBLAS_STATUS_SUCCESS ||
        cublasLtCreate(&b.lt) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "%s: cuBLAS setup failed\n", TOOL);
        goto out;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int fused_ok = df11i_fused_matmul_supported();
    const uint32_t fused_max = df11i_fused_matmul_default_max(MATS[0].cols); /* all K % 8 == 0 */
    /* what this device runs of the build's code (its machine code, or PTX the driver
     * compiled): the same tables mean different kernels on other GPUs */
    const int fused_pdl = df11i_fused_matmul_pdl() && !mo.matmul_plain_launch;
    const int fused_deep = df11i_fused_matmul_deep(); /* batch 1..8's copies two steps ahead */

    { /* the roof: 1 GiB device to device, bytes read + written */
        const size_t n = 1u << 30;
        void *a = NULL, *z = NULL;
        double *ct = malloc(sizeof *ct * (size_t)b.reps);
        int ok = ct && cuda_ok(cudaMalloc(&a, n), "cudaMalloc") &&
                 cuda_ok(cudaMalloc(&z, n), "cudaMalloc") &&
                 cuda_ok(cudaMemset(a, 1, n), "cudaMemset");
        for (int r = -1; r < b.reps && ok; r++)
            ok = (r < 0 || cudaEventRecord(b.e0[r], b.st) == cudaSuccess) &&
                 cudaMemcpyAsync(z, a, n, cudaMemcpyDeviceToDevice, b.st) == cudaSuccess &&
                 (r < 0 || cudaEventRecord(b.e1[r], b.st) == cudaSuccess);
        ok = ok && cudaStreamSynchronize(b.st) == cudaSuccess;
        for (int r = 0; r < b.reps && ok; r++) {
            float ms = 0;
            ok = cudaEventElapsedTime(&ms, b.e0[r], b.e1[r]) == cudaSuccess;
            ct[r] = ms;
        }
        if (ok) copy_gbs = 2.0 * n / bench_median(ct, b.reps) / 1e6;
        cudaFree(a);
        cudaFree(z);
        free(ct);
        if (!ok) {
            fprintf(stderr, "%s: the copy bandwidth measurement failed\n", TOOL);
            goto out;
        }
    }

    { /* per matrix at B = mat_b: the fused path and the reference, over all L blocks */
        double ex_us;
        if (lt_tune(&b, mat_b, mat_ref)) goto out;
        for (int i = 0; i < N_MATS; i++) {
            if ((ex_us = time_pass(&b, K_GEMMEX, i, 1, LIM_OWN, mat_b)) < 0) goto out;
            if (ex_us / b.L < mat_ref[i]) mat_ref[i] = ex_us / b.L;
            mat_fused[i] = fused_ok ? time_pass(&b, K_FIXED, i, 1, LIM_EVERY, mat_b) / b.L : NAN;
            if (mat_fused[i] < 0) {
                fprintf(stderr, "%s: fused %s at B=%u failed\n", TOOL, MATS[i].name, mat_b);
                goto out;
            }
        }
    }

    for (int bi = 0; bi < n_b; bi++) {
        const uint32_t B = batches[bi];
        double lt_us[N_MATS];
        if (lt_tune(&b, B, lt_us)) goto out;
        for (int col = 0; col < N_COLS; col++) t[bi][col] = NAN;
        /* ROUNDS rounds over every column, each column's best round kept: a column timed
         * early in the sequence (clocks still rising, another column's data in L2) gets
         * its other chance later, and every other round runs the columns backwards, so that
         * no column always follows the same one (at B = 512 the op always ran after
         * cublasLt's GEMMs and measured 3-4% slower than the same path forced) */
        for (int round = 0; round < ROUNDS; round++)
            for (int ci = 0; ci < N_COLS; ci++) {
                const int col = round % 2 ? N_COLS - 1 - ci : ci;
                const struct column *cl = &COLS[col];
                if (cl->fused_only && (!fused_ok || (cl->lim == LIM_OWN && B > fused_max)))
                    continue;
                df11_model *arena = col == C_DECODE ? b.m[0] : col == C_HUFF ? b.m[1] : NULL;
                const uint64_t d0 = arena ? model_decodes(arena) : 0;
                const double us = time_pass(&b, cl->kind, -1, cl->graph, cl->lim, B);
                if (us < 0) {
                    fprintf(stderr, "%s: %s at B=%u failed\n", TOOL, cl->key, B);
                    goto out;
                }
                if (!(us / b.L >= t[bi][col])) t[bi][col] = us / b.L; /* NAN: the first */
                if (arena) /* the warm-up pass counts too */
                    dpp[bi][col == C_HUFF] = (double)(model_decodes(arena) - d0) / (b.reps + 1);
            }
    }

    const char *fixed_name = cli_codec_name(fixed_codec);
    double of_copy[N_MATS];
    char mat_tags[N_MATS][16];
    const char *mat_names[N_MATS];
    for (int i = 0; i < N_MATS; i++) {
        of_copy[i] = mat_bytes[i] / (mat_fused[i] * 1e3) / copy_gbs;
        mat_tag(i, mat_tags[i], sizeof mat_tags[i]);
        mat_names[i] = mat_tags[i];
    }
    verdict vd[N_TARGETS + 2];
    const int n_vd = targets_of(batches, n_b, t, fixed_name, mat_b, of_copy, mat_names, vd);
    int n_met = 0;
    for (int k = 0; k < n_vd; k++) n_met += verdict_met(&vd[k]);
    if (json) {
        printf("{\"device\":\"%s\",\"codec\":\"%s\",\"y\":\"%s\",\"reps\":%d,\"blocks\":%u,"
               "\"copy_gbs\":%.1f,\"setup_s\":%.1f,\"fused_max_batch\":%u,\"fused_pdl\":%s,"
               "\"fused_ahead_b1_8\":%d,\"split_sums\":\"%s\",\"rows\":[",
               prop.name, fixed_name, b.yd == DF11_DTYPE_F32 ? "f32" : "bf16", b.reps, b.L,
               copy_gbs, setup_s, fused_ok ? fused_max : 0, fused_pdl ? "true" : "false",
               fused_deep ? 2 : 1, clusters ? "clusters" : "l2");
        for (int bi = 0; bi < n_b; bi++) {
            const double ref = fmin(t[bi][C_GEMMEX], t[bi][C_LT]);
            printf("%s{\"batch\":%u,\"ref_us\":%.2f", bi ? "," : "", batches[bi], ref);
            for (int col = 0; col < N_COLS; col++) {
                char key[32];
                snprintf(key, sizeof key, "%s_us", COLS[col].key);
                json_num(key, t[bi][col], "%.2f");
                snprintf(key, sizeof key, "%s_x", COLS[col].key);
                /* the stacked columns against cuBLAS on the same stacked matrices */
                json_num(key,
                         (col >= C_GEMMEX_STACKED ? t[bi][C_GEMMEX_STACKED] : ref) / t[bi][col],
                         "%.4f");
            }
            json_num("op_vs_better", t[bi][C_OP] / fmin(t[bi][C_FUSED], t[bi][C_DECODE]), "%.4f");
            printf(",\"decode_decodes_per_pass\":%.2f,\"huffman_decodes_per_pass\":%.2f}",
                   dpp[bi][0], dpp[bi][1]);
        }
        printf("],\"matrix_batch\":%u,\"matrices\":[", mat_b);
        for (int i = 0; i < N_MATS; i++) {
            printf("%s{\"matrix\":\"%s\",\"stored_bytes\":%.0f", i ? "," : "", mat_names[i],
                   mat_bytes[i]);
            json_num("fused_us", mat_fused[i], "%.3f");
            json_num("ref_us", mat_ref[i], "%.3f");
            json_num("x", mat_ref[i] / mat_fused[i], "%.4f");
            json_num("of_copy", of_copy[i], "%.4f");
            printf("}");
        }
        printf("],\"targets_gpu\":\"%s\",\"targets_met\":%d,\"targets\":[", TARGET_GPU, n_met);
        for (int k = 0; k < n_vd; k++) {
            printf("%s{\"target\":\"%s\",\"measured\":\"%s\"", k ? "," : "", vd[k].what, vd[k].got);
            json_num("value", vd[k].value, "%.4f");
            printf(",\"bound\":%.2f,\"met\":%s}", vd[k].bound,
                   verdict_met(&vd[k]) ? "true" : "false");
        }
        printf("]}\n");
    } else {
        printf("%s: %u Llama-3-8B blocks (7 matrices each), fixed code %s, y %s, median of %d "
               "passes; µs per block (pass / %u), x = reference / time\n"
               "reference = the faster of cublasGemmEx and cublasLt, each a CUDA graph of one "
               "pass over the BF16 weights\n"
               "device-to-device copy %.0f GB/s (cudaMemcpyAsync, 1 GiB, read + write); "
               "setup (generate, compress, open, upload) %.0f s\n",
               prop.name, b.L, fixed_name, b.yd == DF11_DTYPE_F32 ? "F32" : "BF16", b.reps, b.L,
               copy_gbs, setup_s);
        if (fused_ok) {
            char kinds[64] = "mma.sync";
            if (fused_max > DF11_FUSED_MAX_BATCH)
                snprintf(kinds, sizeof kinds, "mma.sync to %d, wgmma from %d",
                         DF11_FUSED_GEMM_MIN_BATCH - 1, DF11_FUSED_GEMM_MIN_BATCH);
            printf("the op's fused kernels on this device: batch 1-%u by default (%s; batch 1-8 "
                   "copies %s step%s ahead), programmatic launch %s; split sums %s\n",
                   fused_max, kinds, fused_deep ? "two" : "one", fused_deep ? "s" : "",
                   fused_pdl                ? "on"
                   : mo.matmul_plain_launch ? "off (--plain-launch)"
                                            : "off (no sm_90 code or PTX here)",
                   clusters ? "in clusters where they fit" : "through the L2 (--l2-sums)");
        } else {
            printf("the op's fused kernels: none on this device (they need sm_80+ code in the "
                   "build): decode + cuBLAS at every batch\n");
        }
        printf("| B | cublasGemmEx (graph) | cublasLt best (graph)");
        for (int col = C_OP; col < C_GEMMEX_STACKED; col++) printf(" | %s", COLS[col].title);
        printf(" | op choice vs better path | arena decodes per pass (decode, Huffman) |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n");
        for (int bi = 0; bi < n_b; bi++) {
            const double ref = fmin(t[bi][C_GEMMEX], t[bi][C_LT]);
            printf("| %u | %.1f | %.1f", batches[bi], t[bi][C_GEMMEX], t[bi][C_LT]);
            for (int col = C_OP; col < C_GEMMEX_STACKED; col++) print_us(t[bi][col], ref);
            printf(" | %.3f | %.1f, %.1f |\n", t[bi][C_OP] / fmin(t[bi][C_FUSED], t[bi][C_DECODE]),
                   dpp[bi][0], dpp[bi][1]);
        }
        printf("\nStacked weights, as engines that keep q+k+v and gate+up as one matrix call "
               "them (4 products a block; x = cublasGemmEx on the same stacked BF16 / time)\n"
               "| B");
        for (int col = C_GEMMEX_STACKED; col < N_COLS; col++) printf(" | %s", COLS[col].title);
        printf(" | stacked op, graph vs the 7-matrix reference |\n|---|---|---|---|---|\n");
        for (int bi = 0; bi < n_b; bi++) {
            const double ref = fmin(t[bi][C_GEMMEX], t[bi][C_LT]);
            printf("| %u | %.1f", batches[bi], t[bi][C_GEMMEX_STACKED]);
            for (int col = C_OP_STACKED; col < N_COLS; col++)
                print_us(t[bi][col], t[bi][C_GEMMEX_STACKED]);
            if (isnan(t[bi][C_OP_STACKED_GRAPH])) /* past the batches timed under a graph */
                printf(" | – |\n");
            else
                printf(" | %.3f |\n", ref / t[bi][C_OP_STACKED_GRAPH]);
        }
        printf("\nPer matrix at B = %u (µs a matrix; a graph over it in all %u blocks, replayed "
               "after a 128 MiB read that evicts L2; of copy: compressed bytes a µs against the "
               "copy's)\n"
               "| matrix | compressed MB | fused | reference | x | of copy |\n"
               "|---|---|---|---|---|---|\n",
               mat_b, b.L);
        for (int i = 0; i < N_MATS; i++)
            printf("| %s | %.2f | %.2f | %.2f | %.3f | %.1f%% |\n", mat_names[i],
                   mat_bytes[i] / 1e6, mat_fused[i], mat_ref[i], mat_ref[i] / mat_fused[i],
                   100 * of_copy[i]);
        printf("\nIssue 11's targets on the batches run: %d of %d met on %s (written for an %s%s)\n"
               "| target | measured | met |\n|---|---|---|\n",
               n_met, n_vd, prop.name, TARGET_GPU,
               strcmp(prop.name, TARGET_GPU) ? "; ratios on other GPUs differ" : "");
        for (int k = 0; k < n_vd; k++)
            printf("| %s | %s | %s |\n", vd[k].what, vd[k].got, verdict_met(&vd[k]) ? "yes" : "no");
    }
    rc = CLI_OK;
out:
    if (map) munmap(map, b.L * b.block_bytes);
    for (int k = 0; k < 2; k++) {
        df11_model_close(b.m[k]);
        if (path[k][0]) unlink(path[k]);
        free(b.w[k]);
    }
    free(b.stack);
    for (int i = 0; i < N_MATS; i++) lt_plan_free(&b.plan[i]);
    for (int r = 0; r < b.reps && b.e0 && b.e1; r++) {
        if (b.e0[r]) cudaEventDestroy(b.e0[r]);
        if (b.e1[r]) cudaEventDestroy(b.e1[r]);
    }
    free(b.e0);
    free(b.e1);
    free(src);
    free(names);
    cudaFree(b.bf16);
    cudaFree(b.x);
    cudaFree(b.y);
    cudaFree(b.flush);
    cudaFree(b.ws);
    if (b.lt) cublasLtDestroy(b.lt);
    if (b.h) cublasDestroy(b.h);
    if (b.st) cudaStreamDestroy(b.st);
    return rc;
}
#endif
