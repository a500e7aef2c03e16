/* libdf11.so without the CUDA runtime: the library names no CUDA library among its
 * dependencies (its ELF DT_NEEDED entries), a model opens on the host backend under
 * DF11_BACKEND_AUTO when the CUDA backend library cannot load, an explicit CUDA request then
 * fails with a status and a detail naming what did not load, and where the plugin is in
 * place (beside libdf11.so in the build tree) it loads: the GPU serves the model when
 * there is one, else the CUDA request fails for want of a device, not of the library.
 *
 * Links libdf11.so and the public API only, as an engine does. Each test runs in a process
 * of its own (the plugin is loaded once per process); DF11_CUDA_PLUGIN chooses the plugin
 * file. */
#include <check.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "df11.h"
#include "tests/testutil.h"
#ifdef DF11_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

/* --- DT_NEEDED of a shared library file --- */

typedef struct needed_list {
    char names[32][128];
    uint64_t at[32]; /* where each name lies in the file */
    int n;
} needed_list;

/* The file at `path`, malloc'd; its size in *size. */
static unsigned char *file_read(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    ck_assert_int_gt(n, 0);
    unsigned char *b = malloc((size_t)n);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

/* The DT_NEEDED names of an ELF64 image (its .dynamic section and that section's string
 * table); 0 on success. Every offset is checked against the size. */
static int elf_needed(const unsigned char *b, size_t size, needed_list *out)
{
    out->n = 0;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)b;
    if (size < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_shoff > size || (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size - eh->e_shoff)
        return -1;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(b + eh->e_shoff);
    int found = 0;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNAMIC) continue;
        if (sh[i].sh_link >= eh->e_shnum) return -1;
        const Elf64_Shdr *str = &sh[sh[i].sh_link];
        if (sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset ||
            str->sh_offset > size || str->sh_size > size - str->sh_offset)
            return -1;
        const Elf64_Dyn *d = (const Elf64_Dyn *)(b + sh[i].sh_offset);
        for (uint64_t j = 0; j < sh[i].sh_size / sizeof *d && d[j].d_tag != DT_NULL; j++) {
            if (d[j].d_tag != DT_NEEDED) continue;
            if (d[j].d_un.d_val >= str->sh_size || out->n == 32) return -1;
            const uint64_t at = str->sh_offset + d[j].d_un.d_val;
            snprintf(out->names[out->n], sizeof out->names[0], "%.*s",
                     (int)strnlen((const char *)b + at, str->sh_size - d[j].d_un.d_val),
                     (const char *)b + at);
            out->at[out->n++] = at;
        }
        found = 1;
    }
    return found ? 0 : -1;
}

static void file_needed(const char *path, needed_list *out)
{
    size_t size;
    unsigned char *b = file_read(path, &size);
    ck_assert_msg(elf_needed(b, size, out) == 0, "%s: no dynamic section", path);
    free(b);
}

/* The entry of `l` starting with `prefix`, or -1. */
static int needs(const needed_list *l, const char *prefix)
{
    for (int i = 0; i < l->n; i++)
        if (strncmp(l->names[i], prefix, strlen(prefix)) == 0) return i;
    return -1;
}

/* The file libdf11 was loaded from. */
static const char *libdf11_path(void)
{
    Dl_info info;
    ck_assert(dladdr((void *)&df11_strerror, &info) && info.dli_fname);
    ck_assert_ptr_nonnull(strstr(info.dli_fname, "libdf11.so"));
    return info.dli_fname;
}

#ifdef DF11_HAVE_CUDA
/* The plugin file beside libdf11. */
static const char *plugin_path(void)
{
    static char path[4096];
    const char *lib = libdf11_path();
    snprintf(path, sizeof path, "%.*s/%s", (int)(strrchr(lib, '/') - lib), lib,
             DF11_CUDA_PLUGIN_FILE);
    return path;
}
#endif

START_TEST(no_cuda_library_needed)
{
    needed_list l;
    const char *lib = libdf11_path();
    file_needed(lib, &l);
    ck_assert_msg(needs(&l, "libc.so") >= 0, "%s: no libc among %d DT_NEEDED", lib, l.n);
    for (int i = 0; i < l.n; i++)
        ck_assert_msg(!strstr(l.names[i], "cuda") && !strstr(l.names[i], "cublas") &&
                          !strstr(l.names[i], "stdc++"),
                      "%s needs %s", lib, l.names[i]);
#ifdef DF11_HAVE_CUDA
    /* The plugin beside it carries those dependencies (the parser sees them). */
    file_needed(plugin_path(), &l);
    ck_assert_int_ge(needs(&l, "libcudart.so"), 0);
    ck_assert_int_ge(needs(&l, "libcublas.so"), 0);
    ck_assert_int_lt(needs(&l, "libdf11.so"), 0);
#endif
}
END_TEST

/* --- a model through libdf11.so --- */

#define ROWS 64
#define COLS 96

static uint16_t weights[ROWS * COLS];

/* A one-block model: a 2-D weight and a norm; its path. */
static const char *model_make(void)
{
    static char path[512];
    uint64_t state = df11_test_seed();
    df11_test_fill_weights(weights, ROWS * COLS, COLS, &state);
    static uint16_t norm[COLS];
    for (int i = 0; i < COLS; i++) norm[i] = 0x3F80; /* 1.0 */
    const df11_tensor_source t[] = {
        { "model.layers.0.mlp.w", DF11_DTYPE_BF16, 2, { ROWS, COLS }, weights },
        { "model.layers.0.norm.weight", DF11_DTYPE_BF16, 1, { COLS }, norm },
    };
    snprintf(path, sizeof path, "%s/m.df11", df11_test_tmpdir());
    ck_assert_int_eq(df11_compress_tensors(path, t, 2, NULL, 0, NULL, NULL), DF11_OK);
    return path;
}

static df11_status model_open(const char *path, df11_backend_kind kind, df11_model **m)
{
    df11_model_options opt;
    df11_model_options_init(&opt);
    opt.backend = kind;
    opt.n_threads = 1;
    *m = NULL;
    return df11_model_open(path, &opt, m);
}

/* Block 0's weight as the engine sees it (a host pointer on the host backend, a device
 * one on CUDA), or NULL. */
static const void *weight_of(const df11_block_view *blk)
{
    for (uint32_t i = 0; i < blk->n_tensors; i++)
        if (strcmp(blk->tensors[i].name, "model.layers.0.mlp.w") == 0) {
            ck_assert_uint_eq(blk->tensors[i].nbytes, sizeof weights);
            return blk->tensors[i].data;
        }
    return NULL;
}

#ifdef DF11_HAVE_CUDA
/* df11_convert through the plugin: the weight `w` (device memory) to F32 on the device. */
static void device_convert_check(const void *w)
{
    float *d = NULL;
    static float f[ROWS * COLS];
    ck_assert_int_eq(cudaMalloc((void **)&d, sizeof f), cudaSuccess);
    ck_assert_int_eq(
        df11_convert(DF11_BACKEND_CUDA, w, DF11_DTYPE_BF16, d, DF11_DTYPE_F32, ROWS * COLS, NULL),
        DF11_OK);
    ck_assert_int_eq(cudaMemcpy(f, d, sizeof f, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < ROWS * COLS; i++) ck_assert_float_eq(f[i], df11_test_bf16_f32(weights[i]));
    cudaFree(d);
}
#endif

/* Opens the model asking for `kind`: `served` serves it, and block 0's weight holds the
 * source's bytes (read back from the device on CUDA, where df11_convert is checked too). */
static void model_check(const char *path, df11_backend_kind kind, df11_backend_kind served)
{
    df11_model *m;
    ck_assert_int_eq(model_open(path, kind, &m), DF11_OK);
    ck_assert_int_eq(df11_model_backend(m), served);
    df11_block_view blk;
    ck_assert_int_eq(df11_block_acquire(m, 0, NULL, &blk), DF11_OK);
    const void *w = weight_of(&blk);
    ck_assert_ptr_nonnull(w);
    static uint16_t back[ROWS * COLS];
    if (served == DF11_BACKEND_HOST) memcpy(back, w, sizeof back);
#ifdef DF11_HAVE_CUDA
    else {
        ck_assert_int_eq(cudaMemcpy(back, w, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
        device_convert_check(w);
    }
#endif
    ck_assert_int_eq(memcmp(back, weights, sizeof weights), 0);
    ck_assert_int_eq(df11_block_release(m, 0, NULL), DF11_OK);
    df11_model_close(m);
}

/* The detail holds each of `words` (NULL-terminated). */
static void detail_has(const char *const *words)
{
    for (const char *const *w = words; *w; w++)
        ck_assert_msg(strstr(df11_last_error_detail(), *w), "'%s' not in '%s'", *w,
                      df11_last_error_detail());
}

/* An explicit CUDA request, model and conversion, fails with `status` (the conversion's
 * `convert_status`) and a detail holding each of `words`. */
static void cuda_refused(const char *path, df11_status status, df11_status convert_status,
                         const char *const *words)
{
    df11_model *m;
    ck_assert_int_eq(model_open(path, DF11_BACKEND_CUDA, &m), status);
    ck_assert_ptr_null(m);
    detail_has(words);
    const uint16_t one = 0x3F80;
    float f = 0;
    ck_assert_int_eq(
        df11_convert(DF11_BACKEND_CUDA, &one, DF11_DTYPE_BF16, &f, DF11_DTYPE_F32, 1, NULL),
        convert_status);
    if (convert_status == status) detail_has(words);
}

/* With $DF11_CUDA_PLUGIN = `plugin`, which does not load: AUTO opens a model on the host,
 * an explicit CUDA request fails with `status` and `words` in the detail, and the host
 * backend works after the failure as before it. */
static void plugin_refused(const char *plugin, df11_status status, const char *const *words)
{
    const char *path = model_make();
    ck_assert_int_eq(setenv("DF11_CUDA_PLUGIN", plugin, 1), 0);
    model_check(path, DF11_BACKEND_AUTO, DF11_BACKEND_HOST);
    cuda_refused(path, status, status, words);
    model_check(path, DF11_BACKEND_HOST, DF11_BACKEND_HOST);
}

START_TEST(plugin_missing)
{
    const char *missing = "/nonexistent/libdf11-cuda.so.0";
#ifdef DF11_HAVE_CUDA
    const char *words[] = { "did not load", missing, "No such file", NULL };
    plugin_refused(missing, DF11_ERR_NO_DEVICE, words);
#else
    const char *words[] = { "without CUDA", NULL };
    plugin_refused(missing, DF11_ERR_UNSUPPORTED, words);
#endif
}
END_TEST

#ifdef DF11_HAVE_CUDA
START_TEST(plugin_not_a_plugin)
{
    /* A library that loads but has no entry point: libdf11.so itself. */
    const char *words[] = { "did not load", "no df11_cuda_plugin_v1", NULL };
    plugin_refused(libdf11_path(), DF11_ERR_NO_DEVICE, words);
}
END_TEST

START_TEST(plugin_without_cudart)
{
    /* The machine without the CUDA runtime: a copy of the plugin whose libcudart
     * dependency is renamed to a library that does not exist. */
    needed_list l;
    size_t size;
    unsigned char *b = file_read(plugin_path(), &size);
    ck_assert_int_eq(elf_needed(b, size, &l), 0);
    const int i = needs(&l, "libcudart.so");
    ck_assert_int_ge(i, 0);
    memcpy(b + l.at[i] + 3, "nocuda", 6); /* "libcudart.so.N" -> "libnocuda.so.N" */
    char copy[512];
    snprintf(copy, sizeof copy, "%s/%s", df11_test_tmpdir(), DF11_CUDA_PLUGIN_FILE);
    FILE *f = fopen(copy, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
    free(b);
    const char *words[] = { "did not load", "libnocuda.so", NULL };
    plugin_refused(copy, DF11_ERR_NO_DEVICE, words);
}
END_TEST

START_TEST(plugin_found)
{
    const char *path = model_make();
    ck_assert_int_eq(unsetenv("DF11_CUDA_PLUGIN"), 0);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    if (n == 0) {
        /* The plugin loaded and found no device: AUTO is the host, a CUDA model says why,
         * and the conversion fails at its launch (a CUDA error, as in libdf11.a). */
        model_check(path, DF11_BACKEND_AUTO, DF11_BACKEND_HOST);
        const char *words[] = { "cudaGetDeviceCount", NULL };
        cuda_refused(path, DF11_ERR_NO_DEVICE, DF11_ERR_DEVICE, words);
        ck_assert_ptr_null(strstr(df11_last_error_detail(), "did not load"));
        return;
    }
    model_check(path, DF11_BACKEND_AUTO, DF11_BACKEND_CUDA);
    model_check(path, DF11_BACKEND_CUDA, DF11_BACKEND_CUDA);
}
END_TEST
#endif

static Suite *plugin_suite(void)
{
    Suite *s = suite_create("cuda_plugin");
    TCase *tc = tcase_create("shared");
    tcase_add_test(tc, no_cuda_library_needed);
    tcase_add_test(tc, plugin_missing);
#ifdef DF11_HAVE_CUDA
    tcase_add_test(tc, plugin_not_a_plugin);
    tcase_add_test(tc, plugin_without_cudart);
    tcase_add_test(tc, plugin_found);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    fprintf(stderr, "seed 0x%llx (set DF11_TEST_SEED to replay)\n",
            (unsigned long long)df11_test_seed());
    SRunner *sr = srunner_create(plugin_suite());
    srunner_set_fork_status(sr, CK_FORK); /* a fresh process, so a fresh plugin load, each */
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
