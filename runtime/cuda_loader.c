/* libdf11.so's CUDA entry points (runtime/backend.h) in a CUDA build: the first call loads
 * the CUDA backend library (runtime/cuda_plugin.h) and each call goes through it, so that
 * libdf11.so needs no CUDA library to load and serves the host backend on a machine
 * without one. Where the plugin, or what it needs (libcudart, libcublas), does not load,
 * DF11_BACKEND_AUTO gets the host backend and an explicit CUDA request fails with
 * DF11_ERR_NO_DEVICE, the detail saying what did not load.
 *
 * Where it looks: $DF11_CUDA_PLUGIN alone when set; else the folder libdf11.so was loaded
 * from (the install and the build tree both put the plugin beside it); else the plugin's
 * file name through the dynamic linker's search path. Loaded once per process and never
 * unloaded: backends it made may live until exit. Compiled into libdf11.so only. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "runtime/cuda_plugin.h"

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const df11i_cuda_plugin *plugin;
static char load_error[PATH_MAX + 128]; /* why `plugin` is NULL, once loading was tried */

static df11i_cuda_host host;

static void *plugin_open(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        snprintf(load_error, sizeof load_error, "%s", why ? why : path);
    }
    return h;
}

/* The plugin beside the library this code is in: its path in `path`, or 0 when there is
 * no such file. */
static int plugin_path_beside(char *path, size_t size)
{
    Dl_info info;
    if (!dladdr((void *)&df11i_backend_cuda_create, &info) || !info.dli_fname) return 0;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return 0;
    int n = snprintf(path, size, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname,
                     DF11_CUDA_PLUGIN_FILE);
    return n > 0 && (size_t)n < size && access(path, F_OK) == 0;
}

static void plugin_load(void)
{
    host = (df11i_cuda_host){
        .id = df11i_cuda_plugin_id_make(sizeof host),
        .failv = df11i_failv,
        .file_group = df11_file_group,
        .file_tensor = df11_file_tensor,
        .file_tensor_layout = df11i_file_tensor_layout,
        .file_tensor_coded = df11i_file_tensor_coded,
        .file_tensor_fixed = df11i_file_tensor_fixed,
        .fixed_geometry = df11i_fixed_geometry,
        .lut_build = df11i_lut_build,
        .hostmem_alloc = df11i_hostmem_alloc,
        .hostmem_free = df11i_hostmem_free,
    };
    static char beside[PATH_MAX];
    const char *path = getenv(DF11I_CUDA_PLUGIN_ENV);
    if (!path || !*path)
        path = plugin_path_beside(beside, sizeof beside) ? beside : DF11_CUDA_PLUGIN_FILE;
    void *h = plugin_open(path);
    if (!h) return;
    df11i_cuda_plugin_entry entry;
    *(void **)&entry = dlsym(h, DF11I_CUDA_PLUGIN_ENTRY); /* POSIX's cast to a function */
    const df11i_cuda_plugin *p = entry ? entry(&host) : NULL;
    if (p && df11i_cuda_plugin_id_matches(&p->id, sizeof *p)) {
        plugin = p;
        return;
    }
    if (!entry)
        snprintf(load_error, sizeof load_error, "%s: no %s", path, DF11I_CUDA_PLUGIN_ENTRY);
    else
        snprintf(load_error, sizeof load_error, "%s: from another df11 build (this is %s)", path,
                 DF11_VERSION_STRING);
    dlclose(h);
}

static int plugin_loaded(void)
{
    pthread_once(&load_once, plugin_load);
    return plugin != NULL;
}

static df11_status not_loaded(const char *what)
{
    return df11i_fail(DF11_ERR_NO_DEVICE, "%s: the CUDA backend library (%s) did not load: %s",
                      what, DF11_CUDA_PLUGIN_FILE, load_error);
}

df11_status df11i_backend_cuda_create(int device, df11i_backend **out)
{
    *out = NULL;
    if (!plugin_loaded()) return not_loaded("cuda backend");
    return plugin->backend_create(device, out);
}

int df11i_backend_cuda_available(void) { return plugin_loaded() && plugin->backend_available(); }

df11_status df11i_backend_cuda_convert(const void *src, df11_dtype src_dtype, void *dst,
                                       df11_dtype dst_dtype, size_t n, void *stream)
{
    if (!plugin_loaded()) return not_loaded("df11_convert");
    return plugin->convert(src, src_dtype, dst, dst_dtype, n, stream);
}
