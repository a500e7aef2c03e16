// Probe of one more placement of the arena decode at large batch (issue 14; docs/RUNTIME.md,
// bench/RESULTS.md): a block decoded in row chunks small enough for the L2 (8-48 MiB), each
// chunk multiplied by cuBLAS right after its decode, so that the decoded weights might stay in
// the L2 instead of going to DRAM and back. The decode is a stand-in with the fixed-code
// decoder's memory traffic (1.41 bytes read and 2 bytes written a weight, nothing decoded:
// 293-297 us a block here, the real decoder 0.29-0.30 ms); the block is Llama-3-8B's 7
// matrices. It times, in one process: cuBLAS on the block; decode then cuBLAS; per chunk
// size the chunked GEMMs alone, the chunked decodes alone, the two in series, and the two
// overlapped on two streams (decode of chunk c + 1 beside the GEMM of chunk c, two buffers).
// Not part of the build:
//     nvcc -std=c++17 -O3 -arch=sm_90 -o l2_chunks bench/probes/l2_chunks.cu -lcublas && ./l2_chunks
#include <algorithm>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#include "check.cuh"

__global__ void fake_decode(const uint4 *__restrict__ in, uint4 *__restrict__ out, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = __ldg(in + ((i * 45) >> 6));
        v.x ^= (uint32_t)i;
        v.y += v.x;
        v.z ^= v.y;
        v.w += v.z;
        out[i] = v;
    }
}

struct Mat {
    int N, K;
    size_t off;
};
static cublasHandle_t h;
static int sms;

static void gemm(cudaStream_t s, const void *W, const void *x, void *y, int N, int K, int B,
                 int ldy)
{
    const float a = 1.f, b = 0.f;
    CB(cublasSetStream(h, s));
    CB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, B, K, &a, W, CUDA_R_16BF, K, x, CUDA_R_16BF, K,
                    &b, y, CUDA_R_16BF, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
static void decode(cudaStream_t s, const void *in, void *out, size_t bytes)
{
    size_t n = bytes / 16;
    int blocks = sms * 8;
    fake_decode<<<blocks, 256, 0, s>>>((const uint4 *)in, (uint4 *)out, n);
}

int main(int argc, char **argv)
{
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    int l2 = 0;
    CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    printf("SMs %d, L2 %d MiB\n", sms, l2 >> 20);
    CB(cublasCreate(&h));
    CB(cublasSetMathMode(
        h, (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    std::vector<Mat> M = { { 4096, 4096 },  { 1024, 4096 },  { 1024, 4096 }, { 4096, 4096 },
                           { 14336, 4096 }, { 14336, 4096 }, { 4096, 14336 } };
    size_t total = 0;
    for (auto &m : M) {
        m.off = total;
        total += (size_t)m.N * m.K * 2;
    }
    void *W, *C, *X, *Y, *S;
    CK(cudaMalloc(&W, total));
    CK(cudaMalloc(&C, total * 3 / 4 + (1 << 20)));
    CK(cudaMemset(W, 0x3c, total));
    CK(cudaMemset(C, 0x3c, total * 3 / 4));
    const int Bmax = 4096;
    CK(cudaMalloc(&X, (size_t)Bmax * 14336 * 2));
    CK(cudaMemset(X, 0x3c, (size_t)Bmax * 14336 * 2));
    CK(cudaMalloc(&Y, (size_t)Bmax * 14336 * 2));
    const size_t SMAX = 64ull << 20;
    CK(cudaMalloc(&S, 2 * SMAX));
    cudaStream_t s0, s1;
    int lo, hi;
    CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    CK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithPriority(&s1, cudaStreamNonBlocking, hi));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<cudaEvent_t> ready(64), freed(64);
    for (auto &e : ready) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    for (auto &e : freed) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    auto timeit = [&](auto &&fn) {
        std::vector<float> t;
        for (int r = 0; r < 7; r++) {
            fn(); // warm / settle
            CK(cudaEventRecord(e0, s0));
            for (int i = 0; i < 3; i++) fn();
            CK(cudaEventRecord(e1, s0));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            t.push_back(1000 * ms / 3);
        }
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
    };
    const char *C_ = (const char *)C;
    char *W_ = (char *)W;
    char *S_ = (char *)S;
    int batches[] = { 256, 512, 1024, 4096 };
    size_t chunks[] = { 8ull << 20, 16ull << 20, 24ull << 20, 48ull << 20 };
    for (int B : batches) {
        float ref = timeit([&] {
            for (auto &m : M) gemm(s0, W_ + m.off, X, Y, m.N, m.K, B, m.N);
        });
        float dec_hbm = timeit([&] {
            for (auto &m : M) decode(s0, C_ + m.off * 45 / 64, W_ + m.off, (size_t)m.N * m.K * 2);
        });
        float arena = timeit([&] {
            for (auto &m : M) decode(s0, C_ + m.off * 45 / 64, W_ + m.off, (size_t)m.N * m.K * 2);
            for (auto &m : M) gemm(s0, W_ + m.off, X, Y, m.N, m.K, B, m.N);
        });
        printf("B %d: cuBLAS %.1f us | decode->HBM %.1f | decode block then GEMMs %.1f (%.3fx)\n",
               B, ref, dec_hbm, arena, ref / arena);
        for (size_t CH : chunks) {
            auto rows_of = [&](const Mat &m) {
                int r = (int)(CH / (2ull * m.K)) / 64 * 64;
                return std::min(std::max(r, 64), m.N);
            };
            /* each chunk c of the block: its matrix, first row, rows, buffer, compressed bytes */
            struct Chunk {
                const Mat &m;
                int r0, n;
                char *buf;
                const char *in;
                size_t bytes;
            };
            auto each_chunk = [&](auto &&fn) {
                int c = 0;
                for (auto &m : M) {
                    const int R = rows_of(m);
                    for (int r0 = 0; r0 < m.N; r0 += R, c++) {
                        const int n = std::min(R, m.N - r0);
                        fn(c, Chunk{ m, r0, n, S_ + (c & 1) * SMAX,
                                     C_ + (m.off + (size_t)r0 * m.K * 2) * 45 / 64,
                                     (size_t)n * m.K * 2 });
                    }
                }
            };
            auto chunk_gemm = [&](cudaStream_t s, const Chunk &k) {
                gemm(s, k.buf, X, (char *)Y + 2 * (size_t)k.r0, k.n, k.m.K, B, k.m.N);
            };
            float gl2 =
                timeit([&] { each_chunk([&](int, const Chunk &k) { chunk_gemm(s0, k); }); });
            float dl2 = timeit([&] {
                each_chunk([&](int, const Chunk &k) { decode(s0, k.in, k.buf, k.bytes); });
            });
            float serial = timeit([&] {
                each_chunk([&](int, const Chunk &k) {
                    decode(s0, k.in, k.buf, k.bytes);
                    chunk_gemm(s0, k);
                });
            });
            /* decode c on s1 once chunk c - 2's GEMM freed its buffer, GEMM c on s0 once decoded */
            float over = timeit([&] {
                CK(cudaEventRecord(ready[63], s0));
                CK(cudaStreamWaitEvent(s1, ready[63], 0));
                each_chunk([&](int c, const Chunk &k) {
                    if (c >= 2) CK(cudaStreamWaitEvent(s1, freed[(c - 2) % 62], 0));
                    decode(s1, k.in, k.buf, k.bytes);
                    CK(cudaEventRecord(ready[c % 62], s1));
                    CK(cudaStreamWaitEvent(s0, ready[c % 62], 0));
                    chunk_gemm(s0, k);
                    CK(cudaEventRecord(freed[c % 62], s0));
                });
                CK(cudaEventRecord(ready[62], s1));
                CK(cudaStreamWaitEvent(s0, ready[62], 0));
            });
            printf(
                "  chunk %2zu MiB: GEMMs on L2 chunks %.1f | decode->L2 chunks %.1f | serial %.1f (%.3fx) | overlapped %.1f (%.3fx)\n",
                CH >> 20, gl2, dl2, serial, ref / serial, over, ref / over);
        }
        fflush(stdout);
    }
    return 0;
}
