/* The CUDA backend: device memory from cudaMalloc (in the pool's few large chunks),
 * pinned staging from cudaHostAlloc, streams and events as CUDA's, decode by the kernels/
 * decoder; and the other CUDA entry points of runtime/backend.h. The only runtime file that
 * includes cuda_runtime_api.h; compiled only when DF11_HAVE_CUDA (backend_cuda_stub.c
 * stands in otherwise), into libdf11.a and libdf11-cuda.so (runtime/cuda_plugin.h).
 * Nothing here synchronises the host except event_sync / synchronize, which the runtime
 * calls at open and close only. */
#include <cuda_runtime_api.h>
#include <stdlib.h>

#include "common/error.h"
#include "common/hostmem.h"
#include "kernels/convert.h"
#include "kernels/decode.h"
#include "kernels/matmul.h"
#include "runtime/backend.h"

typedef struct cuda_ctx {
    int device;
} cuda_ctx;

static df11_status cu_fail(cudaError_t e, const char *what)
{
    (void)cudaGetLastError(); /* clear a non-sticky error */
    if (e == cudaErrorMemoryAllocation)
        return df11i_fail(DF11_ERR_DEVICE_MEMORY, "%s: %s", what, cudaGetErrorString(e));
    return df11i_fail(DF11_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(e));
}

#define CU(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cu_fail(e_, what);                                           \
    } while (0)

static df11_status c_alloc(df11i_backend *be, size_t size, void **ptr)
{
    cuda_ctx *c = be->ctx;
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    cudaError_t e = cudaMalloc(ptr, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *ptr = NULL;
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return df11i_fail(DF11_ERR_DEVICE_MEMORY,
                          "cudaMalloc(%zu): %s (%zu bytes free): short "
                          "by %zu bytes",
                          size, cudaGetErrorString(e), fr, size > fr ? size - fr : 0);
    }
    return DF11_OK;
}

static void c_free(df11i_backend *be, void *ptr)
{
    if (ptr) cudaFree(ptr);
}

/* Pinned host memory: locked by the kernel and registered with CUDA where the memlock
 * limit allows (so that VmLck shows it), else cudaHostAlloc, else plain memory with a note
 * (common/hostmem.h). */
static int cu_pin(void *base, size_t size)
{
    if (cudaHostRegister(base, size, cudaHostRegisterDefault) == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return -1;
}
static void cu_unpin(void *base) { cudaHostUnregister(base); }
static int cu_pinned_alloc(size_t size, void **base)
{
    if (cudaHostAlloc(base, size, cudaHostAllocDefault) == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return -1;
}
static void cu_pinned_free(void *base) { cudaFreeHost(base); }
static const df11i_hostmem cuda_hostmem = {
    .pin = cu_pin, .unpin = cu_unpin, .pinned_alloc = cu_pinned_alloc, .pinned_free = cu_pinned_free
};

static df11_status c_host_alloc(df11i_backend *be, size_t size, void **ptr)
{
    cuda_ctx *c = be->ctx;
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    return df11i_hostmem_alloc(&cuda_hostmem, size, ptr);
}

static void c_host_free(df11i_backend *be, void *ptr) { df11i_hostmem_free(&cuda_hostmem, ptr); }

static df11_status c_copy_h2d(df11i_backend *be, void *dst, const void *src, size_t size,
                              void *stream)
{
    cuda_ctx *c = be->ctx;
    /* also called from the reader thread of streamed groups (runtime/stream.c) */
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    CU(cudaMemcpyAsync(dst, src, size, cudaMemcpyHostToDevice, (cudaStream_t)stream),
       "cudaMemcpyAsync");
    return DF11_OK;
}

static df11_status c_copy_d2h(df11i_backend *be, void *dst, const void *src, size_t size)
{
    CU(cudaMemcpy(dst, src, size, cudaMemcpyDeviceToHost), "cudaMemcpy");
    return DF11_OK;
}

static df11_status c_stream_create(df11i_backend *be, int high_priority, void **out)
{
    cuda_ctx *c = be->ctx;
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    int least = 0, greatest = 0;
    CU(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
    cudaStream_t s;
    /* Non-blocking: the decode stream must not serialise with the legacy default stream. */
    CU(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, high_priority ? greatest : least),
       "cudaStreamCreateWithPriority");
    *out = s;
    return DF11_OK;
}

static void c_stream_destroy(df11i_backend *be, void *stream)
{
    if (stream) cudaStreamDestroy((cudaStream_t)stream);
}

static df11_status c_event_create(df11i_backend *be, void **out)
{
    cudaEvent_t e;
    CU(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    *out = e;
    return DF11_OK;
}

static void c_event_destroy(df11i_backend *be, void *ev)
{
    if (ev) cudaEventDestroy((cudaEvent_t)ev);
}

static df11_status c_event_record(df11i_backend *be, void *ev, void *stream)
{
    CU(cudaEventRecord((cudaEvent_t)ev, (cudaStream_t)stream), "cudaEventRecord");
    return DF11_OK;
}

static df11_status c_stream_wait(df11i_backend *be, void *stream, void *ev)
{
    CU(cudaStreamWaitEvent((cudaStream_t)stream, (cudaEvent_t)ev, 0), "cudaStreamWaitEvent");
    return DF11_OK;
}

static df11_status c_event_sync(df11i_backend *be, void *ev)
{
    CU(cudaEventSynchronize((cudaEvent_t)ev), "cudaEventSynchronize");
    return DF11_OK;
}

static df11_status c_plan_build(df11i_backend *be, const df11_file *file, uint32_t group,
                                const void *payload, void **blob, size_t *blob_size)
{
    return df11i_gpu_plan_build(file, group, payload, blob, blob_size);
}

static df11_status c_plan_size(df11i_backend *be, const df11_file *file, uint32_t group,
                               uint64_t *bytes)
{
    size_t size = 0;
    df11_status st = df11i_gpu_plan_size(file, group, &size);
    *bytes = size;
    return st;
}

static df11_status c_decode_group(df11i_backend *be, const df11i_backend_group *g, void *out,
                                  void *stream)
{
    if (!g->plan_host || !g->plan_dev)
        return df11i_fail(DF11_ERR_STATE, "cuda backend: group %u has no decode plan", g->group);
    if (g->lean)
        return df11i_gpu_decode_lean(g->plan_host, g->plan_dev, g->payload, out, g->lean_ctas, NULL,
                                     stream);
    return df11i_gpu_decode(g->plan_host, g->plan_dev, g->payload, out, stream);
}

static df11_status c_synchronize(df11i_backend *be, void *stream)
{
    CU(cudaStreamSynchronize((cudaStream_t)stream), "cudaStreamSynchronize");
    return DF11_OK;
}

static df11_status c_mem_info(df11i_backend *be, uint64_t *free_bytes, uint64_t *total_bytes)
{
    cuda_ctx *c = be->ctx;
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    size_t fr = 0, tot = 0;
    CU(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    *free_bytes = fr;
    *total_bytes = tot;
    return DF11_OK;
}

static double c_decode_ms(df11i_backend *be) { return -1.0; }

static void c_destroy(df11i_backend *be)
{
    free(be->ctx);
    free(be);
}

static const df11i_backend_iface cuda_iface = {
    .name = "cuda",
    .alloc = c_alloc,
    .free = c_free,
    .host_alloc = c_host_alloc,
    .host_free = c_host_free,
    .copy_h2d = c_copy_h2d,
    .copy_d2h = c_copy_d2h,
    .stream_create = c_stream_create,
    .stream_destroy = c_stream_destroy,
    .event_create = c_event_create,
    .event_destroy = c_event_destroy,
    .event_record = c_event_record,
    .stream_wait = c_stream_wait,
    .event_sync = c_event_sync,
    .plan_build = c_plan_build,
    .plan_size = c_plan_size,
    .decode_group = c_decode_group,
    .matmul_create = df11i_cuda_matmul_create, /* runtime/matmul_cuda.c */
    .matmul_destroy = df11i_cuda_matmul_destroy,
    .matmul_bf16 = df11i_cuda_matmul_bf16,
    .tensor_plan_build = df11i_cuda_tensor_plan_build,
    .decode_tensor = df11i_cuda_decode_tensor,
    .rows_decode = df11i_cuda_rows_decode,               /* runtime/gather_cuda.c */
    .matmul_fused_takes = df11i_cuda_matmul_fused_takes, /* kernels/fused_matmul.cu */
    .matmul_fused = df11i_cuda_matmul_fused,
    .matmul_fused_parts = DF11_FUSED_MAX_PARTS,
    .matmul_fused_ws = df11i_cuda_matmul_fused_ws,
    .synchronize = c_synchronize,
    .mem_info = c_mem_info,
    .decode_ms = c_decode_ms,
    .destroy = c_destroy,
};

int df11i_backend_cuda_available(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n > 0;
}

df11_status df11i_backend_cuda_create(int device, df11i_backend **out)
{
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return df11i_fail(DF11_ERR_NO_DEVICE, "cudaGetDeviceCount: %s",
                          e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= n)
        return df11i_fail(DF11_ERR_NO_DEVICE, "CUDA device %d: there are %d", device, n);
    CU(cudaSetDevice(device), "cudaSetDevice");
    df11i_backend *be = calloc(1, sizeof *be);
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return df11i_fail(DF11_ERR_NO_MEMORY, "cuda backend: out of host memory");
    }
    c->device = device;
    be->iface = &cuda_iface;
    be->ctx = c;
    *out = be;
    return DF11_OK;
}

df11_status df11i_backend_cuda_convert(const void *src, df11_dtype src_dtype, void *dst,
                                       df11_dtype dst_dtype, size_t n, void *stream)
{
    return df11i_gpu_convert(src, src_dtype, dst, dst_dtype, n, stream);
}
