// Fused GEMV / skinny GEMM on the fixed exponent code (codec/fixed.h, issue 11):
//     y[b][n] = sum_k x[b][k] * W[n][k],  W N x K BF16 (as HF stores it), B = 1..16,
// fp32 accumulation, W decoded in registers right after its load and never written back.
// Standalone like decode_roof.cu; built by bench/CMakeLists.txt (`ninja fused_gemv`, not
// part of `all`). On the synthetic Llama-3-8B block (tools/weights.c, seeded as
// df11-synth --shape llama3-8b-block) it
//   1. encodes the 7 matrices and prints the codec's size and the variants' sizes (--sizes
//      stops there: no GPU needed);
//   2. checks the decoder bit-exact and runs the kernel's per-lane decode on the CPU (the
//      same __host__ __device__ code) against the weights, fragment by fragment;
//   3. checks the kernel and cuBLAS against a float64 CPU reference for B = 1..16;
//   4. times the kernel, cublasGemmEx and cublasLt (each under a CUDA graph, median of
//      --reps replays) per matrix and for the whole block (as 7 tensors, and as engines
//      store it: q/k/v and gate/up stacked into one tensor each), and a device-to-device copy.
// --profile launches the kernel and cuBLAS on gate (B = 1, 8, 16; --pbatch B: B alone, up to
// 300; --pmat I: matrix I, 0..6 = q k v o gate up down; --preps N: N launches each) without
// graphs, for ncu; --sanitize launches the kernel alone on q (whose CTAs may cross a strip
// boundary), k, the odd shape and the escape-heavy tensor, also at B = 64, 129, 256 and 300
// (the wgmma kernel's tiles, kernels/fused_gemm.cu), and k over a grid of 13 CTAs at B = 64,
// 129 and 300 (the wgmma kernel's ranges cut and chained), for compute-sanitizer. Device calls
// and results: bench/RESULTS.md.
//
// The kernel is the library's (kernels/fused_matmul.cu, df11i_fused_matmul, described there and
// in docs/KERNELS.md); this file is its harness only. Launches are programmatic (PDL) unless
// --no-pdl; per matrix and B the block uses the best of 1x, 2x, 4x the default grid
// (df11i_fused_matmul's grid_scale). x rows have stride K (the library's).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "bench/probes/check.cuh"
#include "kernels/fused_gemm.h"
#include "kernels/fused_matmul_decode.cuh"
#include "kernels/matmul.h"
extern "C" {
#include "codec/fixed.h"
#include "tools/weights.h"
}

static const struct {
    const char *name, *tag;
    uint64_t rows, cols;
} BLOCK[] = {
    { "model.layers.0.self_attn.q_proj.weight", "q", 4096, 4096 },
    { "model.layers.0.self_attn.k_proj.weight", "k", 1024, 4096 },
    { "model.layers.0.self_attn.v_proj.weight", "v", 1024, 4096 },
    { "model.layers.0.self_attn.o_proj.weight", "o", 4096, 4096 },
    { "model.layers.0.mlp.gate_proj.weight", "gate", 14336, 4096 },
    { "model.layers.0.mlp.up_proj.weight", "up", 14336, 4096 },
    { "model.layers.0.mlp.down_proj.weight", "down", 4096, 14336 },
};
static const int NMAT = 7;
// Timed too: q, k, v and gate, up stacked by rows into one tensor each, as engines store
// them (one launch per group; x is the same for the group's members).
static const int QKV = NMAT, GATE_UP = NMAT + 1, NTIMED = NMAT + 2;
// Checked, not timed: a shape with short strips and a short last tile, and a tensor of
// random exponents (97% escapes: exception lists past the stage, the slow escape path).
static const int NEXTRA = 2, NALL = NTIMED + NEXTRA;
static const char *TAG[NALL] = {
    "q", "k", "v", "o", "gate", "up", "down", "qkv", "gate_up", "odd 37x1111", "escapes 100x3000"
};
static const int BS[] = { 1, 2, 4, 8, 16 };
static const int XROWS = 300; // rows of x: --sanitize runs batches up to 300

// ---------------------------------------------------------------- the kernel: the library's
// kernels/fused_matmul.cu (df11i_fused_matmul); its decode, also run here on the CPU, is
// kernels/fused_matmul_decode.cuh.
using namespace df11i_fused;
static int g_pdl = 1; // --no-pdl: plain launches

// ---------------------------------------------------------------- host side

struct HostMat {
    std::vector<uint16_t> w; // the BF16 original
    df11i_fixed f;
    uint64_t rows, cols;
};

static void gen_extra(HostMat *m, int threads)
{
    m[0].rows = 37, m[0].cols = 1111;
    m[0].w.resize(m[0].rows * m[0].cols);
    weights_fill(m[0].w.data(), m[0].rows, m[0].cols, 77, false, threads);
    m[1].rows = 100, m[1].cols = 3000;
    m[1].w.resize(m[1].rows * m[1].cols);
    for (uint64_t i = 0; i < m[1].w.size(); i++) {
        uint64_t r = weights_mix64(i + 99);
        uint32_t e =
            r % 16 == 0 ? 0 : 60 + (uint32_t)(r >> 8) % 131; // zeros, denormals, 2^-67 .. 2^63
        m[1].w[i] = (uint16_t)(((r >> 40) & 0x8000) | e << 7 | ((r >> 20) & 0x7f));
    }
    for (int i = 0; i < 2; i++)
        if (df11i_fixed_encode(m[i].w.data(), m[i].rows, m[i].cols, DF11I_FIXED_ESCAPES, threads,
                               &m[i].f) != DF11_OK) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
}

static bool g_no_escapes = false; // --no-escapes: exponents clamped into each row's window

// Every exponent moved into its row's window [b, b + 6] (values change; a timing bound:
// the kernel with no escape to correct and no exception to load), then encoded again.
static void clamp_to_windows(HostMat &h, int threads)
{
    for (uint64_t r = 0; r < h.rows; r++) {
        const uint32_t b = h.f.base[r];
        for (uint64_t c = 0; c < h.cols; c++) {
            uint16_t &w = h.w[r * h.cols + c];
            const uint32_t e = (w >> 7) & 0xff, ce = e < b ? b : e > b + 6 ? b + 6 : e;
            w = (uint16_t)((w & 0x807f) | ce << 7);
        }
    }
    df11i_fixed_free(&h.f);
    if (df11i_fixed_encode(h.w.data(), h.rows, h.cols, DF11I_FIXED_ESCAPES, threads, &h.f) !=
            DF11_OK ||
        h.f.n_exc) {
        fprintf(stderr, "clamped encode failed (%llu escapes)\n", (unsigned long long)h.f.n_exc);
        exit(1);
    }
}

static void gen_block(HostMat *m, int threads)
{
    for (int i = 0; i < NMAT; i++) {
        m[i].rows = BLOCK[i].rows;
        m[i].cols = BLOCK[i].cols;
        m[i].w.resize(m[i].rows * m[i].cols);
        weights_fill(m[i].w.data(), m[i].rows, m[i].cols, weights_tensor_seed(BLOCK[i].name, 0),
                     false, threads);
        if (df11i_fixed_encode(m[i].w.data(), m[i].rows, m[i].cols, DF11I_FIXED_ESCAPES, threads,
                               &m[i].f) != DF11_OK) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
        if (g_no_escapes) clamp_to_windows(m[i], threads);
    }
    const int groups[2][4] = { { QKV, 0, 1, 2 }, { GATE_UP, 4, 5, -1 } };
    for (auto &gr : groups) {
        HostMat &h = m[gr[0]];
        h.rows = 0;
        h.cols = m[gr[1]].cols;
        for (int k = 1; k < 4 && gr[k] >= 0; k++) {
            h.w.insert(h.w.end(), m[gr[k]].w.begin(), m[gr[k]].w.end());
            h.rows += m[gr[k]].rows;
        }
        if (df11i_fixed_encode(h.w.data(), h.rows, h.cols, DF11I_FIXED_ESCAPES, threads, &h.f) !=
            DF11_OK) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
    }
}

// Exact sizes of the variants from exponent histograms (the 3-bit per-row variant is the
// one encoded; its computed size must match the encoder's). A variant either keeps one code
// as the escape (each escape then stores its exponent, a byte) or spends every code on an
// exponent and lists the exceptions per tile by position (a 2-byte position in the tile
// and the exponent: 3 bytes), which a kernel patches in one round after the decode instead
// of finding them in its codes.
static void print_sizes(const HostMat *m)
{
    struct V {
        const char *name;
        int bits, scope, escape_code;
        double exc_bytes, bytes;
    } v[] = {
        { "3-bit + escape, base per row (codec/fixed)", 3, 0, 1, 1, 0 },
        { "3-bit + escape, base per 16-row strip", 3, 1, 1, 1, 0 },
        { "3-bit + escape, base per tensor", 3, 2, 1, 1, 0 },
        { "4-bit + escape (15 exponents), base per row", 4, 0, 1, 1, 0 },
        { "4-bit + escape (15 exponents), base per tensor", 4, 2, 1, 1, 0 },
        { "3-bit, 8 exponents per row, exceptions by position (3 B)", 3, 0, 0, 3, 0 },
        { "3-bit, 8 exponents per row, exceptions as 20-bit (position, exponent) records", 3, 0, 0,
          2.5, 0 },
    };
    double weights = 0, actual = 0, esc_rows = 0;
    /* exceptions a tile (16 rows x 256 columns) for the last variant: how many a warp would
     * patch at a tile's start, its lanes taking one record each a round */
    std::vector<uint32_t> tile_exc;
    for (int i = 0; i < NMAT; i++) {
        const HostMat &h = m[i];
        weights += (double)h.rows * h.cols;
        actual += (double)df11i_fixed_stored_bytes(&h.f);
        for (auto &x : v) {
            const int win = (1 << x.bits) - x.escape_code;
            const uint64_t scope_rows = x.scope == 0 ? 1 : x.scope == 1 ? 16 : h.rows;
            uint64_t esc = 0;
            const bool tiles_of = &x == &v[sizeof v / sizeof v[0] - 1];
            std::vector<uint32_t> per_tile(tiles_of ? h.f.g.n_tiles : 0);
            for (uint64_t r0 = 0; r0 < h.rows; r0 += scope_rows) {
                uint64_t hist[256] = { 0 };
                for (uint64_t k = r0 * h.cols; k < std::min(h.rows, r0 + scope_rows) * h.cols; k++)
                    hist[(h.w[k] >> 7) & 0xff]++;
                uint64_t best = 0, cur = 0;
                int lo = 0;
                for (int e = 0; e < 256; e++) {
                    cur += hist[e];
                    if (e >= win) cur -= hist[e - win];
                    if (e >= win - 1 && e - win + 1 <= 256 - win && cur > best)
                        best = cur, lo = e - win + 1;
                }
                if (tiles_of) /* scope: a row */
                    for (uint64_t c = 0; c < h.cols; c++) {
                        const int e = (h.w[r0 * h.cols + c] >> 7) & 0xff;
                        if (e < lo || e >= lo + win) per_tile[(r0 / 16) * h.f.g.tiles + c / 256]++;
                    }
                uint64_t n = 0;
                for (int e = 0; e < 256; e++) n += hist[e];
                esc += n - best;
            }
            const double nw = (double)h.rows * h.cols, tiles = (double)h.f.g.n_tiles;
            const double nbase = x.scope == 0   ? (double)h.f.g.rows_pad
                                 : x.scope == 1 ? h.f.g.rows_pad / 16.0
                                                : 1.0;
            x.bytes +=
                nw + nw * x.bits / 8.0 + 4.0 * (tiles + 1) + nbase + x.exc_bytes * (double)esc;
            if (&x == &v[0]) esc_rows += (double)esc;
            tile_exc.insert(tile_exc.end(), per_tile.begin(), per_tile.end());
        }
    }
    printf("\ncodec sizes on the synthetic Llama-3-8B block (7 matrices, %.0f weights)\n", weights);
    printf("| variant | bits/weight | of BF16 |\n|---|---|---|\n");
    for (auto &x : v)
        printf("| %s | %.4f | %.3f%% |\n", x.name, 8 * x.bytes / weights,
               100 * x.bytes / (2 * weights));
    printf(
        "encoded (codec/fixed): %.0f bytes = %.4f bits/weight = %.3f%% of BF16; escapes %.3f%% of weights\n",
        actual, 8 * actual / weights, 100 * actual / (2 * weights), 100 * esc_rows / weights);
    std::sort(tile_exc.begin(), tile_exc.end());
    if (!tile_exc.empty()) {
        const size_t n = tile_exc.size();
        size_t over64 = 0, over96 = 0;
        for (uint32_t c : tile_exc) over64 += c > 64, over96 += c > 96;
        printf("%s: exceptions a 4096-weight tile median %u, p99 %u, max %u; over 64 in %.2f%% of "
               "tiles, over 96 in %.3f%%\n",
               v[sizeof v / sizeof v[0] - 1].name, tile_exc[n / 2], tile_exc[n * 99 / 100],
               tile_exc[n - 1], 100.0 * over64 / n, 100.0 * over96 / n);
    }
    if (std::fabs(actual - v[0].bytes) > 0.5)
        printf("MISMATCH: encoder %.0f vs computed %.0f bytes\n", actual, v[0].bytes);
}

static int hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

template <typename F> static void par_for(uint64_t n, F fn)
{
    int T = hardware_threads();
    std::vector<std::thread> th;
    for (int t = 0; t < T; t++)
        th.emplace_back([=] {
            for (uint64_t i = t; i < n; i += T) fn(i);
        });
    for (auto &x : th) x.join();
}

// The kernel's per-lane decode on the CPU: for every tile and lane, the prefix of escape
// counts, the exception cursor (alternately from the global list and from a 16-byte
// aligned copy, as the kernel reads them), apply_escapes and decode_step; each pair must
// be the two weights the layout puts there. Returns the number of wrong pairs.
static uint64_t emulate(const HostMat &h)
{
    const df11i_fixed &f = h.f;
    const df11i_fixed_geom &g = f.g;
    std::vector<uint64_t> bad(g.n_strips, 0);
    par_for(g.n_strips, [&](uint64_t s) {
        std::vector<uint32_t> corr(16, 0);
        for (uint64_t t = 0; t < g.tiles; t++) {
            const uint32_t nsteps = t + 1 == g.tiles ? (uint32_t)g.last_steps : 4;
            const uint32_t off0 = f.exc_off[s * g.tiles + t], off1 = f.exc_off[s * g.tiles + t + 1];
            const uint32_t *cw = f.codes + s * g.strip_code_bytes / 4 + t * 384;
            auto word = [&](uint32_t l, uint32_t k) { return cw[((k / 4) * 32 + l) * 4 + k % 4]; };
            uint32_t excl = 0; // exclusive prefix over lanes, in lane order
            for (uint32_t l = 0; l < 32; l++) {
                const uint32_t b0 = f.base[16 * s + l / 4], b8 = f.base[16 * s + l / 4 + 8];
                const uint32_t X0 = b0 * 0x00800080u, X8 = b8 * 0x00800080u;
                uint32_t cnt = 0;
                for (uint32_t st = 0; st < nsteps; st++)
                    cnt += popc(df11i_fixed_escape_mask(word(l, 3 * st), word(l, 3 * st + 1),
                                                        word(l, 3 * st + 2)));
                ExcCursor ec;
                if (t & 1)
                    ec.src = f.exc, ec.pos = off0 + excl;
                else
                    ec.src = f.exc + (off0 & ~15u), ec.pos = (off0 & 15u) + excl;
                ec.left = 0;
                ec.win = 0;
                excl += cnt;
                for (uint32_t st = 0; st < nsteps; st++) {
                    uint32_t A = word(l, 3 * st), B = word(l, 3 * st + 1), C = word(l, 3 * st + 2);
                    apply_escapes(df11i_fixed_escape_mask(A, B, C), ec, b0 + 7, b8 + 7, corr_swz(l),
                                  corr.data());
                    uint32_t c[16], o[16];
                    for (uint32_t p = 0; p < 16; p++)
                        c[p] = corr[(p ^ corr_swz(l)) & 15], corr[(p ^ corr_swz(l)) & 15] = 0;
                    uint64_t step = 4 * t + st;
                    uint4 s0, s1;
                    memcpy(&s0, f.sm + ((s * g.steps + step) * 2 + 0) * 512 + 16 * l, 16);
                    memcpy(&s1, f.sm + ((s * g.steps + step) * 2 + 1) * 512 + 16 * l, 16);
                    decode_step(s0, s1, A, B, C, X0, X8, c, o);
                    for (uint32_t p = 0; p < 16; p++)
                        for (uint32_t hi = 0; hi < 2; hi++) {
                            uint32_t hh = p / 8, j = 4 * ((p % 8) / 2) + 2 * (p % 2) + hi;
                            uint64_t row, col;
                            df11i_fixed_weight_pos(s, step, hh, l, j, &row, &col);
                            if (row >= h.rows || col >= h.cols) continue;
                            if ((uint16_t)(o[p] >> (16 * hi)) != h.w[row * h.cols + col]) bad[s]++;
                        }
                }
            }
            if (excl != off1 - off0) bad[s]++;
        }
    });
    uint64_t n = 0;
    for (auto b : bad) n += b;
    return n;
}

struct DevMat {
    df11i_gpu_tensor_desc d; // offsets relative to payload
    uint8_t *payload;
    size_t bytes;   // what the kernel streams: the stored bytes of the code
    uint16_t *bf16; // the BF16 copy for cuBLAS
};

static size_t al(size_t x) { return (x + 255) & ~(size_t)255; }

static DevMat upload(const HostMat &h)
{
    const df11i_fixed &f = h.f;
    size_t o_base = 0, o_sm = al(f.g.rows_pad), o_codes = o_sm + al(f.g.sm_bytes),
           o_off = o_codes + al(f.g.code_bytes + 16), o_exc = o_off + al(4 * (f.g.n_tiles + 1)),
           total = o_exc + al(f.n_exc + 32);
    uint8_t *d;
    CK(cudaMalloc(&d, total));
    CK(cudaMemset(d, 0, total));
    CK(cudaMemcpy(d + o_base, f.base, f.g.rows_pad, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_sm, f.sm, f.g.sm_bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_codes, f.codes, f.g.code_bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_off, f.exc_off, 4 * (f.g.n_tiles + 1), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_exc, f.exc, f.n_exc, cudaMemcpyHostToDevice));
    DevMat r;
    memset(&r.d, 0, sizeof r.d);
    r.d.codec = DF11_CODEC_EXP_FIXED;
    r.d.rows = h.rows;
    r.d.cols = h.cols;
    r.d.data_off = o_sm;
    r.d.stream_off = o_codes;
    r.d.chunks_off = o_off;
    r.d.lanes_off = o_exc;
    r.d.base_off = o_base;
    r.payload = d;
    r.bytes = df11i_fixed_stored_bytes(&f);
    CK(cudaMalloc(&r.bf16, h.w.size() * 2));
    CK(cudaMemcpy(r.bf16, h.w.data(), h.w.size() * 2, cudaMemcpyHostToDevice));
    return r;
}

// A copy of everything (for rotating buffers past L2).
static DevMat clone(const DevMat &src, const HostMat &h)
{
    DevMat r = upload(h);
    (void)src;
    return r;
}

struct Scratch {
    void *ws; // the library's workspace layout: semaphores at its start (zeroed once)
    size_t ws_bytes;
    unsigned *err;
};

// y (F32) = x W^T by the library's kernel, `scale` times its default grid.
static void launch(const DevMat &m, int scale, const __nv_bfloat16 *x, float *y, int B, Scratch &sc,
                   cudaStream_t st)
{
    const df11i_fused_part part = { &m.d, m.payload };
    if (df11i_fused_matmul(&part, 1, x, (uint32_t)B, y, 0, 0, sc.ws, sc.ws_bytes, sc.err,
                           (uint32_t)scale, g_pdl, st) != DF11_OK) {
        fprintf(stderr, "df11i_fused_matmul failed (%llu x %llu, B = %d, grid x%d)\n",
                (unsigned long long)m.d.rows, (unsigned long long)m.d.cols, B, scale);
        exit(1);
    }
}

// ---- cuBLAS
struct Blas {
    cublasHandle_t h;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
};

static void gemmex(Blas &b, const uint16_t *W, int N, int K, const __nv_bfloat16 *x, float *y,
                   int B, cudaStream_t st, int ldx = 0)
{
    const float one = 1.f, zero = 0.f;
    CB(cublasSetStream(b.h, st));
    CB(cublasGemmEx(b.h, CUBLAS_OP_T, CUBLAS_OP_N, N, B, K, &one, W, CUDA_R_16BF, K, x, CUDA_R_16BF,
                    ldx ? ldx : K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
}

struct LtPlan {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t A, Bl, C;
    std::vector<cublasLtMatmulHeuristicResult_t> algos;
    int best;
};

static LtPlan lt_plan(Blas &b, int N, int K, int B)
{
    LtPlan p;
    CB(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CB(cublasLtMatrixLayoutCreate(&p.A, CUDA_R_16BF, K, N, K));
    CB(cublasLtMatrixLayoutCreate(&p.Bl, CUDA_R_16BF, K, B, K));
    CB(cublasLtMatrixLayoutCreate(&p.C, CUDA_R_32F, N, B, N));
    cublasLtMatmulPreference_t pref;
    CB(cublasLtMatmulPreferenceCreate(&pref));
    CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &b.ws_bytes, sizeof b.ws_bytes));
    p.algos.resize(8);
    int n = 0;
    if (cublasLtMatmulAlgoGetHeuristic(b.lt, p.op, p.A, p.Bl, p.C, p.C, pref, 8, p.algos.data(),
                                       &n) != CUBLAS_STATUS_SUCCESS)
        n = 0;
    p.algos.resize(n);
    p.best = 0;
    CB(cublasLtMatmulPreferenceDestroy(pref));
    return p;
}

static cublasStatus_t lt_try(Blas &b, LtPlan &p, int algo, const uint16_t *W,
                             const __nv_bfloat16 *x, float *y, cudaStream_t st)
{
    const float one = 1.f, zero = 0.f;
    return cublasLtMatmul(b.lt, p.op, &one, W, p.A, x, p.Bl, &zero, y, p.C, y, p.C,
                          &p.algos[algo].algo, b.ws, b.ws_bytes, st);
}
static void lt_run(Blas &b, LtPlan &p, int algo, const uint16_t *W, const __nv_bfloat16 *x,
                   float *y, cudaStream_t st)
{
    CB(lt_try(b, p, algo, W, x, y, st));
}

// ---- timing: the median over reps of one graph replay of `body` (which issues `per`
// operations), divided by `per`.
template <typename F> static double time_graph(cudaStream_t st, int reps, int per, F body)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    body();
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphUpload(ge, st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st));
    std::vector<float> ms;
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float v;
        CK(cudaEventElapsedTime(&v, e0, e1));
        ms.push_back(v);
    }
    CK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return ms[ms.size() / 2] / per;
}

__global__ void copy_kernel(const uint4 *__restrict__ a, uint4 *__restrict__ b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        __stcs(b + i, __ldcs(a + i));
}

static uint16_t f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static double bf2d(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(int argc, char **argv)
{
    bool sizes_only = false, profile = false;
    int reps = 30, pmat = 4, preps = 3, pbatch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes"))
            sizes_only = true;
        else if (!strcmp(argv[i], "--profile"))
            profile = true;
        else if (!strcmp(argv[i], "--sanitize"))
            profile = true, pmat = -1, preps = 1;
        else if (!strcmp(argv[i], "--no-escapes"))
            g_no_escapes = true;
        else if (!strcmp(argv[i], "--no-pdl"))
            g_pdl = 0;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pbatch") && i + 1 < argc)
            pbatch = std::min(std::max(atoi(argv[++i]), 0), XROWS);
        else if (!strcmp(argv[i], "--preps") && i + 1 < argc)
            preps = std::min(std::max(atoi(argv[++i]), 1), 100);
        else if (!strcmp(argv[i], "--pmat") && i + 1 < argc)
            pmat = std::min(std::max(atoi(argv[++i]), 0), 6);
        else {
            fprintf(
                stderr,
                "usage: fused_gemv [--sizes] [--profile [--pbatch B] [--pmat I] | --sanitize] [--reps N] "
                "[--no-pdl] [--no-escapes]\n");
            return 2;
        }
    }
    const int threads = hardware_threads();
    static HostMat hm[NALL];
    gen_block(hm, threads);
    gen_extra(hm + NTIMED, threads);
    if (!profile) print_sizes(hm);
    // bit-exact decoder and the kernel's decode emulated on the CPU
    bool ok = true;
    if (!profile) {
        for (int i = 0; i < NALL; i++) {
            std::vector<uint16_t> back(hm[i].w.size());
            bool rt = df11i_fixed_decode(&hm[i].f, back.data(), threads) == DF11_OK &&
                      memcmp(back.data(), hm[i].w.data(), back.size() * 2) == 0;
            uint64_t bad = emulate(hm[i]);
            printf("%-5s CPU decode %s, kernel decode emulated: %llu bad pairs\n", TAG[i],
                   rt ? "bit-exact" : "WRONG", (unsigned long long)bad);
            ok = ok && rt && bad == 0;
        }
    }
    if (sizes_only) return ok ? 0 : 1;

    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("\ndevice: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20);
    printf("kernel: the library's df11i_fused_matmul, %s launches\n",
           g_pdl ? "programmatic (PDL)" : "plain");
    const int SMS = prop.multiProcessorCount;

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    // x: XROWS x cols, N(0, 1) in BF16; one per matrix
    std::vector<std::vector<uint16_t>> xh(NALL);
    std::vector<__nv_bfloat16 *> xd(NALL);
    uint64_t rs = 12345;
    for (int i = 0; i < NALL; i++) {
        const uint64_t K = hm[i].cols; // row stride K, as the library takes x
        xh[i].assign(XROWS * K, 0);
        for (int b = 0; b < XROWS; b++)
            for (uint64_t k = 0; k < hm[i].cols; k++) {
                double u1 = ((double)(weights_mix64(rs++) >> 11) + 1) / 9007199254740993.0,
                       u2 = (double)(weights_mix64(rs++) >> 11) / 9007199254740992.0;
                xh[i][b * K + k] = f2bf((float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2)));
            }
        CK(cudaMalloc(&xd[i], XROWS * K * 2 + 1024));
        CK(cudaMemcpy(xd[i], xh[i].data(), XROWS * K * 2, cudaMemcpyHostToDevice));
    }
    // copies, so that a timed graph streams > 2 x L2 for every matrix
    std::vector<std::vector<DevMat>> dm(NALL);
    for (int i = 0; i < NALL; i++) {
        const size_t bf = hm[i].w.size() * 2;
        const int R = profile || i >= NTIMED ? 1 : (int)std::max<size_t>(2, (192u << 20) / bf + 1);
        dm[i].push_back(upload(hm[i]));
        for (int r = 1; r < R; r++) dm[i].push_back(clone(dm[i][0], hm[i]));
    }
    Scratch sc;
    sc.ws_bytes = (256u << 20) + (1u << 20);
    CK(cudaMalloc(&sc.ws, sc.ws_bytes));
    CK(cudaMemset(sc.ws, 0, sc.ws_bytes));
    CK(cudaMalloc(&sc.err, 4));
    CK(cudaMemset(sc.err, 0, 4));
    float *yd, *yc;
    CK(cudaMalloc(&yd, (size_t)XROWS * 28672 * 4)); // the most rows: gate_up
    CK(cudaMalloc(&yc, (size_t)XROWS * 28672 * 4));
    Blas bl;
    CB(cublasCreate(&bl.h));
    CB(cublasLtCreate(&bl.lt));
    bl.ws_bytes = 32u << 20;
    CK(cudaMalloc(&bl.ws, bl.ws_bytes));
    CB(cublasSetWorkspace(bl.h, bl.ws, bl.ws_bytes));

    if (profile) {
        // gate at B = 1, 8, 16 with cuBLAS at the same sizes, eagerly, for ncu; for
        // compute-sanitizer (--sanitize) q, k, the odd shape and the escape-heavy tensor
        std::vector<int> mats =
            pmat >= 0 ? std::vector<int>{ pmat } : std::vector<int>{ 0, 1, NTIMED, NTIMED + 1 };
        for (int i : mats) {
            const int N = (int)hm[i].rows, K = (int)hm[i].cols;
            const std::vector<int> bs = pbatch ? std::vector<int>{ pbatch }
                                               : std::vector<int>{ 1, 8, 16, 64, 129, 256, 300 };
            for (int B : bs) {
                if (!pbatch && B > 16 && pmat >= 0) continue; // past 16 (wgmma): for the sanitizer
                for (int r = 0; r < preps; r++) launch(dm[i][0], 1, xd[i], yd, B, sc, st);
                if (preps >
                    1) // not under compute-sanitizer: racecheck reports cuBLAS's own kernels
                    for (int r = 0; r < preps; r++)
                        gemmex(bl, dm[i][0].bf16, N, K, xd[i], yc, B, st);
            }
        }
        if (pmat < 0) { // k over 13 CTAs: wgmma ranges that cut its units and chain them
            const uint32_t was = df11i_fused_gemm_test_grid(13);
            for (int B : { 64, 129, 300 }) launch(dm[1][0], 1, xd[1], yd, B, sc, st);
            df11i_fused_gemm_test_grid(was);
        }
        CK(cudaStreamSynchronize(st));
        CK(cudaGetLastError());
        printf("profile launches done\n");
        return 0;
    }

    // ---- correctness against float64, for every matrix and B
    printf(
        "\ncorrectness: |y - ref| / (u * sum|x w|), u = 2^-24; bound K (fp32 accumulation, any order)\n");
    printf(
        "| matrix | B | fused max | fused rel L2 | cuBLAS max | fused vs cuBLAS max |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < NALL; i++) {
        const uint64_t N = hm[i].rows, K = hm[i].cols, Kp = K; // x row stride
        std::vector<uint16_t> dec(N * K);
        df11i_fixed_decode(&hm[i].f, dec.data(),
                           threads); // the reference is computed from the decoded weights
        std::vector<double> ref(16 * N), mag(16 * N);
        par_for(N, [&](uint64_t n) {
            for (int b = 0; b < 16; b++) {
                double s = 0, m = 0;
                for (uint64_t k = 0; k < K; k++) {
                    double p = bf2d(xh[i][b * Kp + k]) * bf2d(dec[n * K + k]);
                    s += p;
                    m += std::fabs(p);
                }
                ref[b * N + n] = s;
                mag[b * N + n] = m;
            }
        });
        for (int B : BS) {
            double mf = 0, mc = 0, mfc = 0, e2 = 0, r2 = 0;
            bool nan = false, det = true;
            for (int gm : { 1, 2, 4 }) {
                std::vector<float> yf(B * N), ycb(B * N), y2(B * N);
                CK(cudaMemset(yd, 0xff, B * N * 4)); // NaN: every element must be written
                launch(dm[i][0], gm, xd[i], yd, B, sc, st);
                gemmex(bl, dm[i][0].bf16, (int)N, (int)K, xd[i], yc, B, st, (int)Kp);
                CK(cudaStreamSynchronize(st));
                CK(cudaGetLastError());
                CK(cudaMemcpy(yf.data(), yd, B * N * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemcpy(ycb.data(), yc, B * N * 4, cudaMemcpyDeviceToHost));
                launch(dm[i][0], gm, xd[i], yd, B, sc, st); // the same bits again
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(y2.data(), yd, B * N * 4, cudaMemcpyDeviceToHost));
                det = det && memcmp(y2.data(), yf.data(), B * N * 4) == 0;
                e2 = r2 = 0;
                for (uint64_t j = 0; j < (uint64_t)B * N; j++) {
                    const double u = std::ldexp(mag[j], -24);
                    if (!std::isfinite(yf[j])) nan = true;
                    mf = std::max(mf, std::fabs(yf[j] - ref[j]) / u);
                    mc = std::max(mc, std::fabs(ycb[j] - ref[j]) / u);
                    mfc = std::max(mfc, std::fabs((double)yf[j] - ycb[j]) / u);
                    e2 += (yf[j] - ref[j]) * (yf[j] - ref[j]);
                    r2 += ref[j] * ref[j];
                }
            }
            const bool pass = !nan && det && mf <= (double)K;
            ok = ok && pass;
            printf("| %s | %d | %.1f%s%s | %.2e | %.1f | %.1f |\n", TAG[i], B, nan ? NAN : mf,
                   pass ? "" : " FAIL", det ? "" : " (not deterministic)", std::sqrt(e2 / r2), mc,
                   mfc);
        }
    }
    unsigned herr = 0;
    CK(cudaMemcpy(&herr, sc.err, 4, cudaMemcpyDeviceToHost));
    if (herr) {
        printf("kernel flagged a tile whose codes and offsets disagree\n");
        ok = false;
    }
    printf("correctness: %s\n", ok ? "PASS" : "FAIL");

    // ---- copy bandwidth
    const size_t cbytes = 1u << 30;
    void *ca, *cb2;
    CK(cudaMalloc(&ca, cbytes));
    CK(cudaMalloc(&cb2, cbytes));
    CK(cudaMemset(ca, 1, cbytes));
    // the roof: a 1 GiB device-to-device copy, as cudaMemcpyAsync timed eagerly and as a
    // plain 16-byte copy kernel; the faster counts (bytes read + written)
    cudaEvent_t c0, c1;
    CK(cudaEventCreate(&c0));
    CK(cudaEventCreate(&c1));
    std::vector<float> cm, ck;
    for (int r = 0; r < reps + 3; r++) {
        float v;
        CK(cudaEventRecord(c0, st));
        CK(cudaMemcpyAsync(cb2, ca, cbytes, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(c1, st));
        CK(cudaEventSynchronize(c1));
        CK(cudaEventElapsedTime(&v, c0, c1));
        if (r >= 3) cm.push_back(v);
        CK(cudaEventRecord(c0, st));
        copy_kernel<<<SMS * 8, 256, 0, st>>>(reinterpret_cast<const uint4 *>(ca),
                                             reinterpret_cast<uint4 *>(cb2), cbytes / 16);
        CK(cudaEventRecord(c1, st));
        CK(cudaEventSynchronize(c1));
        CK(cudaEventElapsedTime(&v, c0, c1));
        if (r >= 3) ck.push_back(v);
    }
    std::sort(cm.begin(), cm.end());
    std::sort(ck.begin(), ck.end());
    const double gbs_memcpy = 2.0 * cbytes / cm[cm.size() / 2] / 1e6,
                 gbs_kernel = 2.0 * cbytes / ck[ck.size() / 2] / 1e6;
    const double copy_gbs = std::max(gbs_memcpy, gbs_kernel);
    printf(
        "\ndevice-to-device copy (read + write, 1 GiB, median of %d): cudaMemcpyAsync %.0f GB/s, copy kernel %.0f GB/s\n",
        reps, gbs_memcpy, gbs_kernel);
    CK(cudaFree(ca));
    CK(cudaFree(cb2));

    // ---- timing per matrix
    const int GM[] = { 1, 2, 4 };
    double t_fused[NTIMED][5], t_ex[NTIMED][5], t_lt[NTIMED][5];
    int g_best[NTIMED][5], lt_best[NTIMED][5];
    std::vector<LtPlan> ltp[NTIMED];
    printf(
        "\nper-matrix timings (us per op; median of %d graph replays, each over R rotating copies)\n",
        reps);
    printf(
        "| matrix | B | fused G=1x/2x/4x SMs*occ | GemmEx | Lt best (of n) | best cuBLAS / fused |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < NTIMED; i++) {
        const int N = (int)hm[i].rows, K = (int)hm[i].cols, R = (int)dm[i].size();
        for (int bi = 0; bi < 5; bi++) {
            const int B = BS[bi];
            double tg[3];
            for (int gi = 0; gi < 3; gi++) {
                tg[gi] = time_graph(st, reps, R, [&] {
                    for (int r = 0; r < R; r++) launch(dm[i][r], GM[gi], xd[i], yd, B, sc, st);
                });
            }
            int gb = (int)(std::min_element(tg, tg + 3) - tg);
            t_fused[i][bi] = tg[gb];
            g_best[i][bi] = GM[gb];
            t_ex[i][bi] = time_graph(st, reps, R, [&] {
                for (int r = 0; r < R; r++) gemmex(bl, dm[i][r].bf16, N, K, xd[i], yc, B, st);
            });
            ltp[i].push_back(lt_plan(bl, N, K, B));
            LtPlan &lp = ltp[i].back();
            double best = 1e30;
            for (int al_ = 0; al_ < (int)lp.algos.size(); al_++) {
                if (lt_try(bl, lp, al_, dm[i][0].bf16, xd[i], yc, st) != CUBLAS_STATUS_SUCCESS ||
                    cudaStreamSynchronize(st) != cudaSuccess)
                    continue;
                double t = time_graph(st, reps, R, [&] {
                    for (int r = 0; r < R; r++) lt_run(bl, lp, al_, dm[i][r].bf16, xd[i], yc, st);
                });
                if (t < best) best = t, lp.best = al_;
            }
            t_lt[i][bi] = best;
            lt_best[i][bi] = best < 1e29 ? lp.best : -1;
            const double cub = std::min(t_ex[i][bi], t_lt[i][bi]);
            printf("| %s | %d | %.2f / %.2f / %.2f | %.2f | %.2f (%zu) | **%.3f** |\n", TAG[i], B,
                   1e3 * tg[0], 1e3 * tg[1], 1e3 * tg[2], 1e3 * t_ex[i][bi], 1e3 * best,
                   lp.algos.size(), cub / t_fused[i][bi]);
        }
    }
    // ---- the block: its matrices in order, one graph, copy 0 of each; as 7 tensors and
    // as engines store them (qkv, o, gate_up, down)
    auto block = [&](const std::vector<int> &mats, const char *what) {
        printf("\nthe block, %s (one graph; us; bandwidth = compressed bytes / time)\n", what);
        printf(
            "| B | fused | GemmEx | Lt best | best cuBLAS / fused | fused GB/s | of copy |\n|---|---|---|---|---|---|---|\n");
        double block_bytes = 0;
        for (int i : mats) block_bytes += (double)dm[i][0].bytes;
        for (int bi = 0; bi < 5; bi++) {
            const int B = BS[bi];
            double tf = time_graph(st, reps, 1, [&] {
                for (int i : mats) launch(dm[i][0], g_best[i][bi], xd[i], yd, B, sc, st);
            });
            double te = time_graph(st, reps, 1, [&] {
                for (int i : mats)
                    gemmex(bl, dm[i][0].bf16, (int)hm[i].rows, (int)hm[i].cols, xd[i], yc, B, st);
            });
            double tl = time_graph(st, reps, 1, [&] {
                for (int i : mats)
                    if (lt_best[i][bi] >= 0)
                        lt_run(bl, ltp[i][bi], lt_best[i][bi], dm[i][0].bf16, xd[i], yc, st);
                    else
                        gemmex(bl, dm[i][0].bf16, (int)hm[i].rows, (int)hm[i].cols, xd[i], yc, B,
                               st);
            });
            const double gbs = block_bytes / tf / 1e6;
            printf("| %d | %.1f | %.1f | %.1f | **%.3f** | %.0f | %.1f%% |\n", B, 1e3 * tf,
                   1e3 * te, 1e3 * tl, std::min(te, tl) / tf, gbs, 100 * gbs / copy_gbs);
        }
    };
    block({ 0, 1, 2, 3, 4, 5, 6 }, "7 tensors");
    block({ QKV, 3, GATE_UP, 6 }, "merged: qkv, o, gate_up, down");
    // the 7 tensors as the library's stacked weights make them: q, k, v one launch of
    // three parts, o, gate and up one launch of two, down (default grid)
    {
        const std::vector<std::vector<int>> groups = { { 0, 1, 2 }, { 3 }, { 4, 5 }, { 6 } };
        printf(
            "\nthe block, 7 tensors in 4 launches of parts (q+k+v, o, gate+up, down; one "
            "graph; us)\n| B | fused parts | fused 7 launches | 7 / parts |\n|---|---|---|---|\n");
        for (int bi = 0; bi < 5; bi++) {
            const int B = BS[bi];
            auto parts_run = [&] {
                for (const auto &gp : groups) {
                    df11i_fused_part pt[3];
                    for (size_t j = 0; j < gp.size(); j++)
                        pt[j] = { &dm[gp[j]][0].d, dm[gp[j]][0].payload };
                    if (df11i_fused_matmul(pt, (uint32_t)gp.size(), xd[gp[0]], (uint32_t)B, yd, 0,
                                           0, sc.ws, sc.ws_bytes, sc.err, 1, g_pdl,
                                           st) != DF11_OK) {
                        fprintf(stderr, "df11i_fused_matmul (parts) failed\n");
                        exit(1);
                    }
                }
            };
            const double tp = time_graph(st, reps, 1, parts_run);
            const double t7 = time_graph(st, reps, 1, [&] {
                for (int i = 0; i < 7; i++) launch(dm[i][0], 1, xd[i], yd, B, sc, st);
            });
            printf("| %d | %.1f | %.1f | **%.3f** |\n", B, 1e3 * tp, 1e3 * t7, t7 / tp);
        }
    }
    printf(
        "\nper-matrix streaming: compressed bytes / fused time, of copy bandwidth\n| matrix | MB | B=1 | B=8 | B=16 |\n|---|---|---|---|---|\n");
    for (int i = 0; i < NTIMED; i++)
        printf("| %s | %.1f | %.1f%% | %.1f%% | %.1f%% |\n", TAG[i], dm[i][0].bytes / 1e6,
               100 * dm[i][0].bytes / t_fused[i][0] / 1e6 / copy_gbs,
               100 * dm[i][0].bytes / t_fused[i][3] / 1e6 / copy_gbs,
               100 * dm[i][0].bytes / t_fused[i][4] / 1e6 / copy_gbs);
    CK(cudaMemcpy(&herr, sc.err, 4, cudaMemcpyDeviceToHost));
    printf("%s\n", ok && !herr ? "ALL CHECKS PASS" : "CHECKS FAILED");
    return ok && !herr ? 0 : 1;
}
