/* libdf11-cuda.so's side of runtime/cuda_plugin.h: the entry point, and the libdf11
 * internals that the CUDA code (backend_cuda.c, matmul_cuda.c, gather_cuda.c, kernels/)
 * calls by name, defined here as calls through the table libdf11 passed in. So those files
 * build unchanged into both libdf11.a (where the names are the real functions) and the
 * plugin, and the error detail they set is libdf11's. Compiled into the plugin only; its
 * link exports the entry point alone (cuda_plugin.map). */
#include "runtime/cuda_plugin.h"

#include "common/error.h"

/* Set once by the entry point, before libdf11 calls anything else here. */
static const df11i_cuda_host *host;

df11_status df11i_fail(df11_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    status = host->failv(status, fmt, ap);
    va_end(ap);
    return status;
}

const df11_group_info *df11_file_group(const df11_file *file, uint32_t group)
{
    return host->file_group(file, group);
}

const df11_tensor_info *df11_file_tensor(const df11_file *file, uint32_t tensor)
{
    return host->file_tensor(file, tensor);
}

const df11i_tensor_layout *df11i_file_tensor_layout(const df11_file *file, uint32_t tensor)
{
    return host->file_tensor_layout(file, tensor);
}

df11_status df11i_file_tensor_coded(const df11_file *file, uint32_t tensor, const void *payload,
                                    df11i_coded *coded)
{
    return host->file_tensor_coded(file, tensor, payload, coded);
}

df11_status df11i_file_tensor_fixed(const df11_file *file, uint32_t tensor, const void *payload,
                                    df11i_fixed *view)
{
    return host->file_tensor_fixed(file, tensor, payload, view);
}

df11_status df11i_fixed_geometry(uint64_t rows, uint64_t cols, df11i_fixed_geom *g)
{
    return host->fixed_geometry(rows, cols, g);
}

void df11i_lut_build(const df11i_code *code, uint16_t *lut) { host->lut_build(code, lut); }

df11_status df11i_hostmem_alloc(const df11i_hostmem *how, size_t size, void **ptr)
{
    return host->hostmem_alloc(how, size, ptr);
}

void df11i_hostmem_free(const df11i_hostmem *how, void *ptr) { host->hostmem_free(how, ptr); }

__attribute__((visibility("default"))) const df11i_cuda_plugin *
df11_cuda_plugin_v1(const df11i_cuda_host *h)
{
    static df11i_cuda_plugin plugin;
    if (!df11i_cuda_plugin_id_matches(h ? &h->id : NULL, sizeof *h)) return NULL;
    host = h;
    plugin = (df11i_cuda_plugin){
        .id = df11i_cuda_plugin_id_make(sizeof plugin),
        .backend_create = df11i_backend_cuda_create,
        .backend_available = df11i_backend_cuda_available,
        .convert = df11i_backend_cuda_convert,
    };
    return &plugin;
}
