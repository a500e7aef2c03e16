/* The backend interface: what the runtime needs from a device, as a struct of function
 * pointers (like ggml-backend), so that the host and CUDA implementations serve one
 * scheduler, and the constructors of those implementations (backend_host.c,
 * backend_cuda.c, or backend_cuda_stub.c in a build without CUDA, or cuda_loader.c in
 * libdf11.so). Nothing here names CUDA
 * types: streams and events are void *. pool/ does not know backends: the runtime hands a
 * pool a df11i_pool_allocator over a backend's memory (df11i_backend_device_memory).
 *
 * Semantics every backend keeps (CUDA's):
 *   - work enqueued on one stream runs in order; a NULL stream is the caller's default
 *     stream (CUDA: legacy default stream; host: the calling thread, i.e. synchronous);
 *   - event_record(ev, s) marks the point in s reached by the work enqueued so far;
 *     stream_wait(s, ev) makes later work on s wait for that point, without blocking the
 *     caller unless s is NULL on the host backend;
 *   - an asynchronous failure is sticky on its stream and is returned by the next
 *     event_sync / synchronize that waits on it.
 *
 * Ownership: memory from alloc/host_alloc is freed with free/host_free; streams and events
 * with their destroy calls, before the backend's destroy.
 */
#ifndef DF11_RUNTIME_BACKEND_H
#define DF11_RUNTIME_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "df11/file.h"
#include "df11/status.h"
#include "pool/pool.h"

typedef struct df11i_backend df11i_backend;

/* One group to decode: the payload and (CUDA) its plan, both already in backend memory. */
typedef struct df11i_backend_group {
    const df11_file *file;
    uint32_t group;
    const void *payload;   /* backend memory, payload_size bytes */
    const void *plan_host; /* CUDA: host copy of the plan blob; NULL on the host */
    const void *plan_dev;  /* CUDA: the plan in device memory */
    /* CUDA arena decodes: nonzero = the lean persistent decoder (options.decode_lean) of
     * lean_ctas CTAs (0 = one per SM). The host backend decodes the same bytes either way. */
    int lean;
    uint32_t lean_ctas;
} df11i_backend_group;

/* One product of the matmul op (runtime/matmul.c checks it before a backend sees it):
 * y (batch × n, row stride ldy >= n) = x (batch × k, BF16) · Wᵀ for W n × k BF16, fp32
 * accumulation, y BF16 or F32; x and y in backend memory; n, k, batch, ldy in
 * [1, INT32_MAX]. */
typedef struct df11i_matmul_args {
    const void *x;
    void *y;
    df11_dtype y_dtype;
    uint32_t batch, n, k, ldy;
    void *stream;
    /* matmul_fused only, where the backend has matmul_fused_ws: its workspace (the op's,
     * runtime/matmul.c), ws_size bytes, used by one product at a time; else NULL, 0. */
    void *ws;
    uint64_t ws_size;
} df11i_matmul_args;

/* Rows of a 2-D BF16 tensor W (rows x cols), decoded (runtime/gather.c and the matmul op's
 * sliced decode path check them first): out row i = W row ids[i], or W row first + i when
 * ids is NULL, for i < n; out is n x cols of out_dtype (BF16 or F32) in backend memory. */
typedef struct df11i_rows_args {
    const df11i_backend_group *g; /* W's group; plan_host / plan_dev: W's own plan */
    uint32_t tensor;
    const void *w; /* W decoded where it lies (resident group, raw tensor), else NULL */
    uint32_t rows, cols;
    const uint32_t *ids; /* host memory, each < rows; NULL: rows first .. first + n - 1 */
    uint32_t first, n;
    void *out;
    df11_dtype out_dtype;
    void *stream;
} df11i_rows_args;

typedef struct df11i_backend_iface {
    const char *name; /* "host", "cuda" */
    /* Device memory (host backend: page-aligned host memory). */
    df11_status (*alloc)(df11i_backend *be, size_t size, void **ptr);
    void (*free)(df11i_backend *be, void *ptr);
    /* Host memory the device copies from quickly (CUDA: pinned). */
    df11_status (*host_alloc)(df11i_backend *be, size_t size, void **ptr);
    void (*host_free)(df11i_backend *be, void *ptr);
    /* Host → device copy ordered on `stream`; `src` must stay valid until it completes. */
    df11_status (*copy_h2d)(df11i_backend *be, void *dst, const void *src, size_t size,
                            void *stream);
    /* Device → host, synchronous (tests and tools only; never on the hot path). */
    df11_status (*copy_d2h)(df11i_backend *be, void *dst, const void *src, size_t size);
    /* high_priority: the decode stream asks to be scheduled before compute kernels. */
    df11_status (*stream_create)(df11i_backend *be, int high_priority, void **stream);
    void (*stream_destroy)(df11i_backend *be, void *stream);
    df11_status (*event_create)(df11i_backend *be, void **event);
    void (*event_destroy)(df11i_backend *be, void *event);
    df11_status (*event_record)(df11i_backend *be, void *event, void *stream);
    df11_status (*stream_wait)(df11i_backend *be, void *stream, void *event);
    /* Blocks the caller until the event's point is reached. */
    df11_status (*event_sync)(df11i_backend *be, void *event);
    /* Builds what decode_group needs besides the payload (CUDA: the kernel plan) from a
     * verified payload in host memory; *blob is malloc'd, the caller frees it after
     * copying it to the device and keeps it while decodes may still use it. NULL when the
     * backend needs none (host). */
    df11_status (*plan_build)(df11i_backend *be, const df11_file *file, uint32_t group,
                              const void *payload, void **blob, size_t *blob_size);
    /* Bytes of device memory plan_build's blob for `group` will take, from the file's index
     * alone (before any payload is read), for the runtime's memory-limit check; the
     * backend asks the code that lays the plan out rather than the runtime copying its
     * formula. 0 when the backend needs no plan (host). */
    df11_status (*plan_size)(df11i_backend *be, const df11_file *file, uint32_t group,
                             uint64_t *bytes);
    /* Decodes a whole group into `out` (decoded_size bytes of backend memory) on `stream`. */
    df11_status (*decode_group)(df11i_backend *be, const df11i_backend_group *g, void *out,
                                void *stream);
    /* --- The matmul op. runtime/matmul.c picks the path (resident W: matmul_bf16; else
     * matmul_fused where it takes the case; else decode_tensor into the op's scratch on the
     * side stream, then matmul_bf16); a backend fills the slots it has. --- */
    /* Per-model state for the products (CUDA: the cuBLAS handle), made at open, destroyed
     * at close. NULL when none is needed (host). */
    /* pdl: launch fused kernels with programmatic dependent launch where supported. */
    df11_status (*matmul_create)(df11i_backend *be, int pdl, void **mm);
    void (*matmul_destroy)(df11i_backend *be, void *mm);
    /* y = x·Wᵀ from decoded BF16 weights `w` (n × k, backend memory), on a->stream. */
    df11_status (*matmul_bf16)(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                               const void *w);
    /* Whether matmul_fused multiplies from tensor `tensor` at this batch (batch 0: at every
     * batch, so that the tensor needs no scratch). NULL: no fused path. This is where the
     * fused CUDA kernels plug in: this pair of slots in the CUDA table. */
    int (*matmul_fused_takes)(df11i_backend *be, const df11_file *file, uint32_t tensor,
                              uint32_t batch);
    /* y = x·[W_0; W_1; ...]ᵀ straight from the compressed tensors tensors[i] of groups g[i]
     * (g[i].payload), never writing a decoded tensor whole to memory: n_parts (1 ..
     * matmul_fused_parts) tensors of a->k columns whose rows add up to a->n, part i's
     * outputs in the y columns after those of the parts before it (a stacked weight in one
     * launch; one tensor: n_parts 1). Called only where matmul_fused_takes said yes for
     * every part. */
    df11_status (*matmul_fused)(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                uint32_t n_parts, const df11i_backend_group *g,
                                const uint32_t *tensors);
    /* The most parts one matmul_fused call takes; a stacked weight with more (or on a
     * backend where this is 1) is multiplied part by part by runtime/matmul.c. */
    uint32_t matmul_fused_parts;
    /* Bytes of workspace matmul_fused needs for these parts at any batch (0: none, or never
     * fused), whose first 256 bytes-aligned semaphore words the runtime zeroes once
     * (kernels/matmul.h). NULL: the backend's fused path needs no workspace (host). */
    df11_status (*matmul_fused_ws)(df11i_backend *be, const df11_file *file, uint32_t n_parts,
                                   const uint32_t *tensors, uint64_t *bytes);
    /* What decode_tensor needs for tensor `tensor` besides the payload (CUDA: a one-tensor
     * plan, cut from the group's plan g->plan_host); *blob malloc'd, kept by the caller
     * while decodes may use it. DF11_ERR_UNSUPPORTED for a codec the backend cannot decode
     * alone. NULL when the backend needs none (host). */
    df11_status (*tensor_plan_build)(df11i_backend *be, const df11i_backend_group *g,
                                     uint32_t tensor, void **blob, size_t *blob_size);
    /* Decodes tensor `tensor` of group g into `out` (align_up(nbytes, 256) bytes of backend
     * memory) on `stream`; g->plan_host / plan_dev are the tensor's plan from
     * tensor_plan_build, not the group's. */
    df11_status (*decode_tensor)(df11i_backend *be, const df11i_backend_group *g, uint32_t tensor,
                                 void *out, void *stream);
    /* Rows of W (df11i_rows_args) on a->stream, decoding only the strips or chunks that hold
     * them (CUDA: tensor_plan_build's plan; host: the CPU decoders). */
    df11_status (*rows_decode)(df11i_backend *be, const df11i_rows_args *a);
    /* Blocks until everything enqueued on `stream` has run. */
    df11_status (*synchronize)(df11i_backend *be, void *stream);
    /* Free and total device memory; the host backend reports 0/0 (no limit known). */
    df11_status (*mem_info)(df11i_backend *be, uint64_t *free_bytes, uint64_t *total_bytes);
    /* Milliseconds spent decoding so far, where the backend measures it (else < 0). */
    double (*decode_ms)(df11i_backend *be);
    void (*destroy)(df11i_backend *be);
} df11i_backend_iface;

struct df11i_backend {
    const df11i_backend_iface *iface;
    void *ctx;
    int n_threads; /* host decode threads (0 = all cores) */
};

/* Host memory, host decode (df11_group_decode_host on n_threads threads). A stream is a
 * worker thread running its work in order; the NULL stream is the calling thread. */
df11_status df11i_backend_host_create(int n_threads, df11i_backend **out);

/* The host backend's matmul slots (runtime/matmul_host.c). */
df11_status df11i_host_matmul_bf16(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                   const void *w);
int df11i_host_matmul_fused_takes(df11i_backend *be, const df11_file *file, uint32_t tensor,
                                  uint32_t batch);
df11_status df11i_host_matmul_fused(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                    uint32_t n_parts, const df11i_backend_group *g,
                                    const uint32_t *tensors);
df11_status df11i_host_decode_tensor(df11i_backend *be, const df11i_backend_group *g,
                                     uint32_t tensor, void *out, void *stream);
/* Decodes the chunks of Huffman tensor `c` holding weights [e0, e1) into `buf` (room for
 * e1 - e0 weights plus two chunks) through `t`, c's table (df11i_decode_table_make, once a
 * tensor); *first: where weight e0 landed (matmul_host.c). */
struct df11i_coded;
struct df11i_decode_table;
df11_status df11i_host_chunks_decode(const struct df11i_coded *c,
                                     const struct df11i_decode_table *t, uint64_t e0, uint64_t e1,
                                     uint16_t *buf, const uint16_t **first);
/* Every copy a host backend stream runs waits `us` microseconds first (0, the default:
 * none), process-wide: for tests, so that a caller reusing a copy's source before the copy's
 * event shows as wrong data, as it does on a busy GPU. Returns the previous value. */
unsigned df11i_host_copy_delay(unsigned us);
/* The host backend's rows_decode (runtime/gather_host.c). */
df11_status df11i_host_rows_decode(df11i_backend *be, const df11i_rows_args *a);
/* The same on the calling thread and n_threads workers, at once, a->stream ignored: the
 * payload and out in host memory (also for the CUDA backend's host-gathered tensor). */
df11_status df11i_host_rows_decode_now(int n_threads, const df11i_rows_args *a);

/* The CUDA backend's matmul slots (runtime/matmul_cuda.c, built with CUDA only). */
df11_status df11i_cuda_matmul_create(df11i_backend *be, int pdl, void **mm);
void df11i_cuda_matmul_destroy(df11i_backend *be, void *mm);
df11_status df11i_cuda_matmul_bf16(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                   const void *w);
df11_status df11i_cuda_tensor_plan_build(df11i_backend *be, const df11i_backend_group *g,
                                         uint32_t tensor, void **blob, size_t *blob_size);
df11_status df11i_cuda_decode_tensor(df11i_backend *be, const df11i_backend_group *g,
                                     uint32_t tensor, void *out, void *stream);
int df11i_cuda_matmul_fused_takes(df11i_backend *be, const df11_file *file, uint32_t tensor,
                                  uint32_t batch);
df11_status df11i_cuda_matmul_fused(df11i_backend *be, void *mm, const df11i_matmul_args *a,
                                    uint32_t n_parts, const df11i_backend_group *g,
                                    const uint32_t *tensors);
df11_status df11i_cuda_matmul_fused_ws(df11i_backend *be, const df11_file *file, uint32_t n_parts,
                                       const uint32_t *tensors, uint64_t *bytes);
/* The CUDA backend's rows_decode (runtime/gather_cuda.c, over kernels/gather.h). */
df11_status df11i_cuda_rows_decode(df11i_backend *be, const df11i_rows_args *a);
/* The largest batch the CUDA fused path takes, process-wide: DF11I_FUSED_AUTO (the default)
 * the device's own for the tensor (df11i_fused_matmul_default_max), 0 never,
 * DF11I_FUSED_EVERY every batch: for tests and benchmarks that force a path. Returns the
 * previous value. */
#define DF11I_FUSED_AUTO UINT32_MAX
#define DF11I_FUSED_EVERY (UINT32_MAX - 1)
uint32_t df11i_cuda_matmul_fused_limit(uint32_t max_batch);

/* The CUDA entry points of the rest of the library. Defined by backend_cuda.c where the
 * CUDA code is linked in (libdf11.a, and libdf11-cuda.so), by cuda_loader.c in libdf11.so
 * of a CUDA build (which loads libdf11-cuda.so on first use: runtime/cuda_plugin.h), and
 * by backend_cuda_stub.c in a build without CUDA. */
/* CUDA device `device`. DF11_ERR_NO_DEVICE when there is none or the CUDA backend library
 * does not load, DF11_ERR_UNSUPPORTED in a build without CUDA. */
df11_status df11i_backend_cuda_create(int device, df11i_backend **out);
/* 1 when a CUDA device is present and usable (0 in a build without CUDA, or when the CUDA
 * backend library does not load). */
int df11i_backend_cuda_available(void);
/* df11_convert on the GPU (kernels/convert.h's df11i_gpu_convert, arguments checked). */
df11_status df11i_backend_cuda_convert(const void *src, df11_dtype src_dtype, void *dst,
                                       df11_dtype dst_dtype, size_t n, void *stream);

static inline void df11i_backend_destroy(df11i_backend *be)
{
    if (be) be->iface->destroy(be);
}

/* A pool allocator over the backend's device memory (alloc/free) or over its host memory
 * for staging (host_alloc/host_free, pinned on CUDA). `be` must outlive the pool. */
df11i_pool_allocator df11i_backend_device_memory(df11i_backend *be);
df11i_pool_allocator df11i_backend_host_memory(df11i_backend *be);

#endif
