/* The interface between libdf11.so and its CUDA backend library, libdf11-cuda.so.N, which
 * libdf11 loads with dlopen the first time a GPU is asked for (runtime/cuda_loader.c), so
 * that libdf11.so itself needs no CUDA library to load and run on the host.
 *
 * The plugin exports one symbol, DF11I_CUDA_PLUGIN_ENTRY; libdf11 calls it with the table
 * of library internals the CUDA code uses (df11i_cuda_host) and gets back the table of
 * what libdf11 calls in the CUDA code (df11i_cuda_plugin). Going through libdf11's
 * internals keeps one per-thread error detail and one container reader: the plugin holds
 * no copy of either (runtime/cuda_plugin.c forwards their names to the table). Both tables
 * start with an id (size, ABI, version, struct layout); each side refuses a table from
 * another df11 build.
 *
 * The static library and a build without CUDA do not use this: libdf11.a links the CUDA
 * code in directly, and the stub (backend_cuda_stub.c) stands in without CUDA. */
#ifndef DF11_RUNTIME_CUDA_PLUGIN_H
#define DF11_RUNTIME_CUDA_PLUGIN_H

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/fixed.h"
#include "common/hostmem.h"
#include "df11.h"
#include "loader/container.h"
#include "runtime/backend.h"

/* Bumped whenever either table or the backend interface changes meaning. */
#define DF11I_CUDA_PLUGIN_ABI 1
#define DF11I_CUDA_PLUGIN_ENTRY "df11_cuda_plugin_v1"
/* Overrides where libdf11 looks for the plugin: the file to load, and nothing else. */
#define DF11I_CUDA_PLUGIN_ENV "DF11_CUDA_PLUGIN"

/* What both tables carry to tell one build from another. */
typedef struct df11i_cuda_plugin_id {
    uint32_t size;       /* of the table it heads */
    uint32_t abi;        /* DF11I_CUDA_PLUGIN_ABI */
    const char *version; /* DF11_VERSION_STRING */
    uint64_t layout;     /* df11i_cuda_plugin_layout() */
} df11i_cuda_plugin_id;

/* libdf11 → plugin: the internals the CUDA code calls (each the libdf11 function of the
 * same name, less the prefix). */
typedef struct df11i_cuda_host {
    df11i_cuda_plugin_id id;
    df11_status (*failv)(df11_status status, const char *fmt, va_list ap);
    const df11_group_info *(*file_group)(const df11_file *file, uint32_t group);
    const df11_tensor_info *(*file_tensor)(const df11_file *file, uint32_t tensor);
    const df11i_tensor_layout *(*file_tensor_layout)(const df11_file *file, uint32_t tensor);
    df11_status (*file_tensor_coded)(const df11_file *file, uint32_t tensor, const void *payload,
                                     df11i_coded *coded);
    df11_status (*file_tensor_fixed)(const df11_file *file, uint32_t tensor, const void *payload,
                                     df11i_fixed *view);
    df11_status (*fixed_geometry)(uint64_t rows, uint64_t cols, df11i_fixed_geom *g);
    void (*lut_build)(const df11i_code *code, uint16_t *lut);
    df11_status (*hostmem_alloc)(const df11i_hostmem *how, size_t size, void **ptr);
    void (*hostmem_free)(const df11i_hostmem *how, void *ptr);
} df11i_cuda_host;

/* plugin → libdf11: runtime/backend.h's CUDA entry points. */
typedef struct df11i_cuda_plugin {
    df11i_cuda_plugin_id id;
    df11_status (*backend_create)(int device, df11i_backend **out);
    int (*backend_available)(void);
    df11_status (*convert)(const void *src, df11_dtype src_dtype, void *dst, df11_dtype dst_dtype,
                           size_t n, void *stream);
} df11i_cuda_plugin;

/* The entry point's type. NULL when `host` is not from this plugin's build (the plugin
 * cannot report why through a host table it does not trust; libdf11 compares the ids). */
typedef const df11i_cuda_plugin *(*df11i_cuda_plugin_entry)(const df11i_cuda_host *host);

/* The sizes of the structs both sides read, mixed into one number (FNV-1a over them):
 * builds of one version whose layouts differ tell each other apart by it. */
static inline uint64_t df11i_cuda_plugin_layout(void)
{
    const uint64_t sizes[] = {
        sizeof(df11i_backend_iface), sizeof(df11i_backend),    sizeof(df11i_backend_group),
        sizeof(df11i_matmul_args),   sizeof(df11i_rows_args),  sizeof(df11i_tensor_layout),
        sizeof(df11i_coded),         sizeof(df11i_fixed),      sizeof(df11i_fixed_geom),
        sizeof(df11i_code),          sizeof(df11_tensor_info), sizeof(df11_group_info),
        sizeof(df11i_hostmem),
    };
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        h = (h ^ sizes[i]) * 1099511628211ull;
    return h;
}

/* The id of this build for a table of `size` bytes. */
static inline df11i_cuda_plugin_id df11i_cuda_plugin_id_make(uint32_t size)
{
    return (df11i_cuda_plugin_id){ .size = size,
                                   .abi = DF11I_CUDA_PLUGIN_ABI,
                                   .version = DF11_VERSION_STRING,
                                   .layout = df11i_cuda_plugin_layout() };
}

/* Whether `id` heads a table of at least `size` bytes from this build. */
static inline int df11i_cuda_plugin_id_matches(const df11i_cuda_plugin_id *id, uint32_t size)
{
    return id && id->size >= size && id->abi == DF11I_CUDA_PLUGIN_ABI && id->version &&
           strcmp(id->version, DF11_VERSION_STRING) == 0 &&
           id->layout == df11i_cuda_plugin_layout();
}

#endif
