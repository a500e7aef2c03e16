/* df11-bench pipeline: what serving weights through the df11 runtime costs an engine.
 *
 * Builds a synthetic Llama-3-8B-shaped model in-process (N layers of the seven layer
 * matrices, 218,103,808 BF16 weights each, rows N(0, σ_r²) with σ_r = 0.02·e^{0.3z},
 * seeded), writes it as .df11 (df11_compress_tensors; Huffman, or --codec fixed) and as
 * .safetensors, and runs a reference forward loop over it: per block, acquire, the seven
 * GEMMs at batch B (cublasGemmEx, BF16 in/out, FP32 accumulate) on the engine's stream,
 * release. Modes:
 *   bf16      df11_model_open_bf16: every weight resident (the baseline)
 *   overlap   df11_model_open: decode of block b+1.. on the high-priority side stream
 *             while block b computes (the default runtime)
 *   normal    the same with the decode stream at normal priority
 *   serial    prefetch off and a host sync per block: decode, then compute
 * Per mode and B: time per pass (CUDA events, median of --reps), throughput relative to
 * bf16, and the VRAM the model holds. Also: open time against file bytes over the disk's
 * O_DIRECT read bandwidth measured in the same run, and a bit-exact check of the served
 * weights against the BF16 model.
 *
 * --coresident (issue 14; docs/RUNTIME.md, "Co-resident decode") measures instead, per B,
 * every combination of: decode plain / lean (options.decode_lean), launched now (acquire's
 * prefetch) / after the GEMM (df11_block_prefetch_after once block b's --after-gemm'th GEMM
 * is enqueued), GEMM cublasGemmEx / the cublasLt candidate --select picks; each against the
 * best BF16 pass (the faster of cublasGemmEx and the fastest cublasLt candidate per shape,
 * each timed alone and listed).
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
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

#define TOOL "df11-bench pipeline"
#define MAX_LAYERS 256

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
               "  --gemm-sms N  df11 modes: cublasSetSmCountTarget(N), leaving SMs to decode\n"
               "  --codec C   the matrices' exponent code: huffman (default) or fixed\n"
               "  --coresident  decode plain/lean x launch now/after a GEMM x GEMM default/\n"
               "                selected cublasLt algorithm, against the best BF16 GEMMs\n"
               "                (default batches 512,1024,4096)\n"
               "  --lean-ctas N   lean decoder's CTAs (default 0: one per SM)\n"
               "  --select ws|waves|I  cublasLt candidate: smallest workspace (default),\n"
               "                fewest waves of CTAs, or index I\n"
               "  --after-gemm I  'after': the next block's decode waits for GEMM I (0..6)\n");
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
    int coresident;
    uint32_t lean_ctas;
    int select;       /* cublasLt candidate index, or SELECT_WS / SELECT_WAVES */
    int after_gemm;   /* GEMM of a block after which the next block's decode is enqueued */
    df11_codec codec; /* of the matrices */
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

#define N_CAND 16 /* cublasLt heuristic candidates asked for per shape */
/* --select rules other than an index: the smallest workspace, the fewest waves of CTAs
 * (the heuristic's wavesCount); the faster of equals */
enum { SELECT_WS = -1, SELECT_WAVES = -2 };

/* cublasLt at one GEMM shape (rows x cols weights, batch B): the heuristic's candidates,
 * each timed alone, the fastest, and the one --select picks. */
typedef struct lt_shape {
    int rows, cols, batch;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, x, y;
    cublasLtMatmulHeuristicResult_t cand[N_CAND];
    double us[N_CAND]; /* alone, median; INFINITY where it failed */
    int n, fastest, selected;
} lt_shape;

typedef enum { GEMM_EX, GEMM_LT_FASTEST, GEMM_LT_SELECTED, GEMM_KINDS } gemm_kind;
static const char *const gemm_name[GEMM_KINDS] = { "cublasGemmEx", "Lt fastest", "Lt selected" };

typedef struct gemm_ctx {
    cublasHandle_t h;
    cudaStream_t stream;
    void *x, *y; /* inputs / outputs, max batch x 14336 BF16 */
    cudaEvent_t e0, e1;
    /* --coresident */
    cublasLtHandle_t lt;
    void *ws; /* cublasLt workspace, ws_bytes */
    uint64_t ws_bytes;
    lt_shape shapes[N_MATS * 16];
    int n_shapes;
    gemm_kind kind;
    int after_gemm; /* >= 0: the next block's decode is enqueued after this GEMM */
} gemm_ctx;

static lt_shape *lt_find(gemm_ctx *g, int rows, int cols, int batch)
{
    for (int i = 0; i < g->n_shapes; i++)
        if (g->shapes[i].rows == rows && g->shapes[i].cols == cols && g->shapes[i].batch == batch)
            return &g->shapes[i];
    return NULL;
}

/* Y = X W^T for W rows x cols at g->kind's GEMM, on g->stream. */
static df11_status gemm(gemm_ctx *g, const void *w, int rows, int cols, int batch)
{
    const float alpha = 1.0f, beta = 0.0f;
    lt_shape *s = g->kind == GEMM_EX ? NULL : lt_find(g, rows, cols, batch);
    int k = !s ? -1 : g->kind == GEMM_LT_FASTEST ? s->fastest : s->selected;
    cublasStatus_t cs;
    if (k >= 0)
        cs = cublasLtMatmul(g->lt, s->op, &alpha, w, s->a, g->x, s->x, &beta, g->y, s->y, g->y,
                            s->y, &s->cand[k].algo, g->ws, s->cand[k].workspaceSize, g->stream);
    else
        cs = cublasGemmEx(g->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, batch, cols, &alpha, w, CUDA_R_16BF,
                          cols, g->x, CUDA_R_16BF, cols, &beta, g->y, CUDA_R_16BF, rows,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return cs == CUBLAS_STATUS_SUCCESS ? DF11_OK : DF11_ERR_DEVICE;
}

/* One pass over every block: acquire, seven GEMMs (Y = X W^T), release; with after_gemm,
 * the next block's decode is enqueued behind that GEMM of this block. */
static df11_status run_pass(df11_model *m, gemm_ctx *g, int batch, int serial, int gemms)
{
    uint32_t nb = df11_model_n_blocks(m);
    for (uint32_t b = 0; b < nb; b++) {
        df11_block_view v;
        df11_status s = df11_block_acquire(m, b, g->stream, &v);
        if (s != DF11_OK) return s;
        for (uint32_t i = 0; gemms && i < v.n_tensors; i++) {
            const df11_tensor_view *t = &v.tensors[i];
            if ((s = gemm(g, t->data, (int)t->shape[0], (int)t->shape[1], batch)) != DF11_OK)
                return s;
            if (g->after_gemm == (int)i &&
                (s = df11_block_prefetch_after(m, (b + 1) % nb, g->stream)) != DF11_OK)
                return s;
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

/* --- --coresident --- */

static void lt_shape_free(lt_shape *s)
{
    if (s->op) cublasLtMatmulDescDestroy(s->op);
    if (s->a) cublasLtMatrixLayoutDestroy(s->a);
    if (s->x) cublasLtMatrixLayoutDestroy(s->x);
    if (s->y) cublasLtMatrixLayoutDestroy(s->y);
}

/* Median µs of candidate k alone on W (10 launches a sample, `reps` samples after two
 * warm-up launches); INFINITY where it does not run. */
static double lt_time(gemm_ctx *g, lt_shape *s, int k, const void *w, int reps)
{
    const float alpha = 1.0f, beta = 0.0f;
    double t[64];
    if (reps > 64) reps = 64;
    for (int r = -1; r < reps; r++) {
        cudaEventRecord(g->e0, g->stream);
        for (int i = 0; i < (r < 0 ? 2 : 10); i++)
            if (cublasLtMatmul(g->lt, s->op, &alpha, w, s->a, g->x, s->x, &beta, g->y, s->y, g->y,
                               s->y, &s->cand[k].algo, g->ws, s->cand[k].workspaceSize,
                               g->stream) != CUBLAS_STATUS_SUCCESS)
                return INFINITY;
        cudaEventRecord(g->e1, g->stream);
        float ms = 0;
        if (cudaEventSynchronize(g->e1) != cudaSuccess) return INFINITY;
        cudaEventElapsedTime(&ms, g->e0, g->e1);
        if (r >= 0) t[r] = ms * 100.0; /* µs per launch */
    }
    return bench_median(t, reps);
}

/* The shape's candidates (BF16 out: split-K partials in fp32 or none, as cublasGemmEx),
 * each timed alone on w, and the fastest and selected ones (-1: none runs; cublasGemmEx
 * stands in). select: SELECT_WS or SELECT_WAVES (the smallest, the faster of equals), or an
 * index (the last where there are fewer; the fastest where it does not run). */
static int lt_shape_make(gemm_ctx *g, lt_shape *s, const void *w, int select, int reps)
{
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    cublasLtMatmulPreference_t pref = NULL;
    int ok =
        cublasLtMatmulDescCreate(&s->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0 &&
        cublasLtMatmulDescSetAttribute(s->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0 &&
        cublasLtMatmulDescSetAttribute(s->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0 &&
        cublasLtMatrixLayoutCreate(&s->a, CUDA_R_16BF, s->cols, s->rows, s->cols) == 0 &&
        cublasLtMatrixLayoutCreate(&s->x, CUDA_R_16BF, s->cols, s->batch, s->cols) == 0 &&
        cublasLtMatrixLayoutCreate(&s->y, CUDA_R_16BF, s->rows, s->batch, s->rows) == 0 &&
        cublasLtMatmulPreferenceCreate(&pref) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &g->ws_bytes, sizeof g->ws_bytes) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red,
                                             sizeof red) == 0;
    if (ok && cublasLtMatmulAlgoGetHeuristic(g->lt, s->op, s->a, s->x, s->y, s->y, pref, N_CAND,
                                             s->cand, &s->n) != CUBLAS_STATUS_SUCCESS)
        s->n = 0;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) return -1;
    s->fastest = s->selected = -1;
    for (int k = 0; k < s->n; k++) {
        s->us[k] = lt_time(g, s, k, w, reps);
        if (!isfinite(s->us[k])) continue;
        if (s->fastest < 0 || s->us[k] < s->us[s->fastest]) s->fastest = k;
        if (select >= 0) continue;
        const double key =
            select == SELECT_WS ? (double)s->cand[k].workspaceSize : (double)s->cand[k].wavesCount;
        const int j = s->selected;
        const double best = j < 0                 ? 0
                            : select == SELECT_WS ? (double)s->cand[j].workspaceSize
                                                  : (double)s->cand[j].wavesCount;
        if (j < 0 || key < best || (key == best && s->us[k] < s->us[j])) s->selected = k;
    }
    if (select >= 0 && s->n) {
        s->selected = select < s->n ? select : s->n - 1;
        if (!isfinite(s->us[s->selected])) s->selected = s->fastest;
    }
    return 0;
}

static void lt_shapes_print(const gemm_ctx *g)
{
    printf("\ncublasLt candidates per GEMM shape, each alone (µs, median); F = fastest, S = "
           "selected; algo / tile / stages are CUBLASLT_ALGO_CONFIG_ID / TILE_ID / STAGES_ID:\n\n"
           "| W rows x cols | B | # | µs | workspace KiB | waves | algo | tile | stages | |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (int i = 0; i < g->n_shapes; i++) {
        const lt_shape *s = &g->shapes[i];
        for (int k = 0; k < s->n; k++) {
            int algo = -1;
            uint32_t tile = 0, stages = 0;
            const cublasLtMatmulAlgo_t *a = &s->cand[k].algo;
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &algo, sizeof algo,
                                                 NULL);
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile,
                                                 sizeof tile, NULL);
            cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                                 sizeof stages, NULL);
            printf("| %d x %d | %d | %d | %.1f | %.0f | %.2f | %d | %u | %u | %s%s |\n", s->rows,
                   s->cols, s->batch, k, s->us[k], s->cand[k].workspaceSize / 1024.0,
                   s->cand[k].wavesCount, algo, tile, stages, k == s->fastest ? "F" : "",
                   k == s->selected ? "S" : "");
        }
    }
}

typedef struct combo {
    int lean, after;
    gemm_kind gemm;
} combo;

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

/* Every combination at every batch against the best BF16 pass (see the top). `ref` is the
 * BF16 model; w a device buffer of the largest matrix, for timing GEMMs alone. */
static int coresident_run(const options *o, gemm_ctx *g, df11_model *ref, const char *df11_path,
                          const void *w)
{
    for (int i = 0; i < o->n_batches; i++)
        for (int j = 0; j < N_MATS; j++) {
            int rows = (int)(o->small ? layer_mats[j].rows / 16 : layer_mats[j].rows),
                cols = (int)layer_mats[j].cols;
            if (lt_find(g, rows, cols, o->batches[i])) continue; /* q/o, k/v, gate/up alike */
            lt_shape *s = &g->shapes[g->n_shapes++];
            *s = (lt_shape){ .rows = rows, .cols = cols, .batch = o->batches[i] };
            if (lt_shape_make(g, s, w, o->select, o->reps))
                return cli_fail(TOOL, DF11_ERR_DEVICE, "cublasLt setup (%d x %d, B = %d)", rows,
                                cols, o->batches[i]);
        }
    lt_shapes_print(g);

    double bf[GEMM_KINDS][16], best[16];
    g->after_gemm = -1;
    for (int k = 0; k < GEMM_KINDS; k++)
        for (int i = 0; i < o->n_batches; i++) {
            g->kind = (gemm_kind)k;
            if ((bf[k][i] = time_passes(ref, g, o->batches[i], 0, 1, o->reps)) < 0)
                return cli_fail(TOOL, DF11_ERR_DEVICE, "BF16 pass (%s, B = %d)", gemm_name[k],
                                o->batches[i]);
        }
    printf("\nBF16 (every weight resident), ms per pass over %u blocks (median of %d):\n\n"
           "| B | cublasGemmEx | Lt fastest | Lt selected | best |\n|---:|---:|---:|---:|---:|\n",
           o->layers, o->reps);
    for (int i = 0; i < o->n_batches; i++) {
        best[i] = fmin(bf[GEMM_EX][i], bf[GEMM_LT_FASTEST][i]);
        printf("| %d | %.3f | %.3f | %.3f | %.3f |\n", o->batches[i], bf[GEMM_EX][i],
               bf[GEMM_LT_FASTEST][i], bf[GEMM_LT_SELECTED][i], best[i]);
    }

    enum { N_COMBOS = 8 };
    combo cs[N_COMBOS];
    double ms[N_COMBOS][16], decode_ms[2] = { 0, 0 };
    int n = 0, rc = CLI_OK;
    for (int lean = 0; lean < 2; lean++)
        for (int after = 0; after < 2; after++) {
            df11_model_options mo;
            df11_model_options_init(&mo);
            mo.backend = DF11_BACKEND_CUDA;
            mo.arena_slots = o->slots;
            mo.decode_lean = lean;
            mo.decode_lean_ctas = o->lean_ctas;
            mo.prefetch_blocks = after ? 0 : -1; /* 'after': run_pass prefetches */
            df11_model *m;
            df11_status st = df11_model_open(df11_path, &mo, &m);
            if (st != DF11_OK) return cli_fail(TOOL, st, "opening the df11 model");
            if (check_block0(m, ref, g->stream)) {
                printf("Served weights of block 0 (decode %s) DIFFER FROM the BF16 model's.\n",
                       lean ? "lean" : "plain");
                rc = CLI_FAIL;
            }
            g->after_gemm = -1;
            if (!after) decode_ms[lean] = time_passes(m, g, 1, 0, 0, o->reps);
            for (int k = 0; k < GEMM_KINDS; k += GEMM_LT_SELECTED - GEMM_EX, n++) {
                cs[n] = (combo){ lean, after, (gemm_kind)k };
                g->kind = (gemm_kind)k;
                g->after_gemm = after ? o->after_gemm : -1;
                for (int i = 0; i < o->n_batches; i++)
                    if ((ms[n][i] = time_passes(m, g, o->batches[i], 0, 1, o->reps)) < 0) {
                        df11_model_close(m);
                        return cli_fail(TOOL, DF11_ERR_DEVICE, "df11 pass at B = %d",
                                        o->batches[i]);
                    }
            }
            df11_model_close(m);
        }
    g->after_gemm = -1;
    printf("\nDecode alone (acquire/release, no GEMMs): plain %.3f ms per block, lean %.3f ms "
           "per block (%u CTAs%s).\n",
           decode_ms[0] / o->layers, decode_ms[1] / o->layers, o->lean_ctas,
           o->lean_ctas ? "" : " = one per SM");
    printf("\ndf11 ms per pass and throughput relative to the best BF16 pass; 'after' = the "
           "next block's decode waits for GEMM %d of the block:\n\n"
           "| B | decode | launch | GEMM | df11 ms | × best BF16 |\n|---:|---|---|---|---:|---:|\n",
           o->after_gemm);
    for (int i = 0; i < o->n_batches; i++)
        for (int c = 0; c < n; c++)
            printf("| %d | %s | %s | %s | %.3f | %.3f |\n", o->batches[i],
                   cs[c].lean ? "lean" : "plain", cs[c].after ? "after" : "now",
                   gemm_name[cs[c].gemm], ms[c][i], best[i] / ms[c][i]);
    return rc;
}

int bench_pipeline_main(int argc, char **argv)
{
    options o = { .layers = 8,
                  .slots = 2,
                  .reps = 5,
                  .threads = 0,
                  .seed = 0xdf11,
                  .batches = { 1, 16, 256, 1024, 4096 },
                  .n_batches = 5,
                  .select = SELECT_WS };
    int batches_given = 0;
    o.dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    static const char *const select_rule[] = { "", "ws", "waves" }; /* by -select */
    static const struct option longopts[] = { { "layers", required_argument, NULL, 'l' },
                                              { "slots", required_argument, NULL, 'k' },
                                              { "batches", required_argument, NULL, 'b' },
                                              { "reps", required_argument, NULL, 'r' },
                                              { "dir", required_argument, NULL, 'd' },
                                              { "seed", required_argument, NULL, 's' },
                                              { "threads", required_argument, NULL, 't' },
                                              { "small", no_argument, NULL, 'S' },
                                              { "gemm-sms", required_argument, NULL, 'g' },
                                              { "coresident", no_argument, NULL, 'C' },
                                              { "lean-ctas", required_argument, NULL, 'L' },
                                              { "select", required_argument, NULL, 'P' },
                                              { "after-gemm", required_argument, NULL, 'A' },
                                              { "codec", required_argument, NULL, 'c' },
                                              { "help", no_argument, NULL, 'h' },
                                              { NULL, 0, NULL, 0 } };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "l:k:b:r:d:s:t:g:Sh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l': { /* 436 MB of BF16 a layer */
            const long v = cli_parse_range(optarg, 1, MAX_LAYERS);
            if (v < 0)
                return cli_usage_error(TOOL, "bad --layers '%s' (1..%d)", optarg, MAX_LAYERS);
            o.layers = (uint32_t)v;
            break;
        }
        case 'k': {
            const long v = cli_parse_range(optarg, 2, MAX_LAYERS);
            if (v < 0) return cli_usage_error(TOOL, "bad --slots '%s' (2..%d)", optarg, MAX_LAYERS);
            o.slots = (uint32_t)v;
            break;
        }
        case 'r':
            if ((o.reps = (int)cli_parse_range(optarg, 1, 1000)) < 0)
                return cli_usage_error(TOOL, "bad --reps '%s' (1..1000)", optarg);
            break;
        case 'd': o.dir = optarg; break;
        case 's':
            if (cli_parse_seed(TOOL, optarg, &o.seed) != CLI_OK) return CLI_USAGE;
            break;
        case 't':
            if (cli_parse_threads(TOOL, optarg, &o.threads) != CLI_OK) return CLI_USAGE;
            break;
        case 'S': o.small = 1; break;
        case 'g': /* cublasSetSmCountTarget: 0 = all */
            if ((o.gemm_sms = (int)cli_parse_range(optarg, 0, 4096)) < 0)
                return cli_usage_error(TOOL, "bad --gemm-sms '%s' (0..4096)", optarg);
            break;
        case 'C': o.coresident = 1; break;
        case 'L': {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || v > DF11_MAX_LEAN_CTAS)
                return cli_usage_error(TOOL, "bad --lean-ctas '%s' (0..%d)", optarg,
                                       DF11_MAX_LEAN_CTAS);
            o.lean_ctas = (uint32_t)v;
            break;
        }
        case 'P': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!strcmp(optarg, "ws"))
                o.select = SELECT_WS;
            else if (!strcmp(optarg, "waves"))
                o.select = SELECT_WAVES;
            else if (*end || end == optarg || v < 0 || v >= N_CAND)
                return cli_usage_error(TOOL, "bad --select '%s' (ws, waves, or 0..%d)", optarg,
                                       N_CAND - 1);
            else
                o.select = (int)v;
            break;
        }
        case 'A': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v >= N_MATS)
                return cli_usage_error(TOOL, "bad --after-gemm '%s' (0..%d)", optarg, N_MATS - 1);
            o.after_gemm = (int)v;
            break;
        }
        case 'c':
            if (cli_parse_codec(TOOL, optarg, &o.codec, NULL) != CLI_OK) return CLI_USAGE;
            break;
        case 'b': {
            batches_given = 1;
            o.n_batches = 0;
            for (char *p = strtok(optarg, ","); p; p = strtok(NULL, ",")) {
                const long v = cli_parse_range(p, 1, 65536);
                if (v < 0 || o.n_batches == 16)
                    return cli_usage_error(TOOL, "bad --batches: '%s' (up to 16 of 1..65536)", p);
                o.batches[o.n_batches++] = (int)v;
            }
            break;
        }
        case 'h': usage(stdout); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }
    }
    if (o.coresident && !batches_given) {
        static const int prefill[] = { 512, 1024, 4096 };
        o.n_batches = 3;
        memcpy(o.batches, prefill, sizeof prefill);
    }
    if (o.layers < 1 || o.slots < 2 || o.reps < 1 || o.n_batches < 1)
        return cli_usage_error(TOOL, "bad --layers/--slots/--reps/--batches");
    for (int i = 0; i < o.n_batches; i++)
        if (o.batches[i] < 1 || o.batches[i] > 65536)
            return cli_usage_error(TOOL, "bad --batches: %d (1..65536)", o.batches[i]);
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
    df11_compress_options co = { .n_threads = o.threads, .codec = o.codec };
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
    if (o.codec == DF11_CODEC_EXP_FIXED) printf(" --codec fixed");
    if (o.codec == DF11_CODEC_EXP_FIXED8) printf(" --codec fixed8");
    if (o.coresident) {
        printf(" --coresident --lean-ctas %u --after-gemm %d --select ", o.lean_ctas, o.after_gemm);
        if (o.select < 0)
            printf("%s", select_rule[-o.select]);
        else
            printf("%d", o.select);
        printf(" --batches ");
        for (int i = 0; i < o.n_batches; i++) printf("%s%d", i ? "," : "", o.batches[i]);
    }
    printf("`%s\n\n", o.gemm_sms ? " (df11 modes' GEMMs limited to that many SMs)" : "");

    gemm_ctx g = { 0 };
    void *w_alone = NULL; /* --coresident: a weight matrix for timing GEMMs alone */
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
    g.after_gemm = -1;

    double ms[MODE_COUNT][16], open_s[MODE_COUNT], decode_only_ms = 0;
    uint64_t vram[MODE_COUNT], weight_bytes[MODE_COUNT];
    df11_model *ref = NULL;
    if ((rc = open_mode(MODE_BF16, df11_path, st_path, &o, &ref, &open_s[MODE_BF16])) != CLI_OK)
        goto out;
    if (o.coresident) {
        g.ws_bytes = 32u << 20;
        if (cublasLtCreate(&g.lt) != CUBLAS_STATUS_SUCCESS ||
            cudaMalloc(&g.ws, g.ws_bytes) != cudaSuccess ||
            cudaMalloc(&w_alone, (size_t)14336 * 4096 * 2) != cudaSuccess) {
            rc = cli_fail(TOOL, DF11_ERR_DEVICE, "cublasLt / buffers");
            goto out;
        }
        cudaMemset(w_alone, 0x3c, (size_t)14336 * 4096 * 2);
        rc = coresident_run(&o, &g, ref, df11_path, w_alone);
        fflush(stdout);
        goto out;
    }
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
    for (int i = 0; i < g.n_shapes; i++) lt_shape_free(&g.shapes[i]);
    if (g.lt) cublasLtDestroy(g.lt);
    cudaFree(g.ws);
    cudaFree(w_alone);
    cudaFree(g.x);
    cudaFree(g.y);
    unlink(df11_path);
    unlink(st_path);
    free(M.src);
    free(names);
    return rc;
}
#endif
