/* The command-line tools as a user runs them: exit codes, one-line errors, the
 * synthesize → compress → inspect → decompress pipeline giving back identical bytes,
 * df11-decompress's peak memory (one group, not the model), progress lines only on a
 * terminal, and df11-inspect's per-codec summary. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loader/safetensors.h"
#include "runtime/memstat.h"
#include "tests/testutil.h"
#include "writer/safetensors_write.h"

/* Runs a shell command line; returns its exit status and its stdout+stderr. */
static int run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "cd '%s' && export PATH='%s':\"$PATH\"; ", df11_test_tmpdir(),
                     DF11_TOOLS_DIR);
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t got = fread(out, 1, cap - 1, p);
    out[got] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char buf[1 << 16];

/* Every tensor of safetensors `a` (a file or folder in the temp dir) is in `b` with the
 * same bytes, and b has no other. */
static void assert_same_tensors(const char *a_name, const char *b_name)
{
    char a_path[600], b_path[600];
    snprintf(a_path, sizeof a_path, "%s/%s", df11_test_tmpdir(), a_name);
    snprintf(b_path, sizeof b_path, "%s/%s", df11_test_tmpdir(), b_name);
    df11i_st_model *a, *b;
    ck_assert_int_eq(df11i_st_open(a_path, &a), DF11_OK);
    ck_assert_int_eq(df11i_st_open(b_path, &b), DF11_OK);
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        size_t k = 0;
        while (k < b->n_tensors && strcmp(a->tensors[i].name, b->tensors[k].name)) k++;
        ck_assert_msg(k < b->n_tensors, "%s: no tensor '%s'", b_name, a->tensors[i].name);
        ck_assert_int_eq(a->tensors[i].dtype, b->tensors[k].dtype);
        ck_assert_uint_eq(a->tensors[i].ndim, b->tensors[k].ndim);
        uint64_t bytes = df11_dtype_size(a->tensors[i].dtype);
        for (uint32_t d = 0; d < a->tensors[i].ndim; d++) {
            ck_assert_uint_eq(a->tensors[i].shape[d], b->tensors[k].shape[d]);
            bytes *= a->tensors[i].shape[d];
        }
        ck_assert_mem_eq(a->tensors[i].data, b->tensors[k].data, bytes);
    }
    df11i_st_close(a);
    df11i_st_close(b);
}

START_TEST(test_help_version_usage)
{
    static const char *tools[] = { "df11-compress", "df11-inspect", "df11-decompress",
                                   "df11-synth" };
    for (size_t i = 0; i < sizeof tools / sizeof *tools; i++) {
        ck_assert_int_eq(run(buf, sizeof buf, "%s --help", tools[i]), 0);
        ck_assert_ptr_nonnull(strstr(buf, "Usage"));
        ck_assert_int_eq(run(buf, sizeof buf, "%s --version", tools[i]), 0);
        ck_assert_ptr_nonnull(strstr(buf, tools[i]));
        ck_assert_int_eq(run(buf, sizeof buf, "%s --no-such-option", tools[i]), 2);
    }
}
END_TEST

START_TEST(test_errors_are_one_line)
{
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress missing.safetensors -o x.df11"), 1);
    ck_assert_int_eq(strncmp(buf, "df11-compress: ", 15), 0);
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
    ck_assert_int_ne(system("test -e x.df11"), 0);
    ck_assert_int_eq(
        run(buf, sizeof buf, "echo 'hello, not a model' > notdf11 && df11-inspect notdf11"), 1);
    ck_assert_ptr_nonnull(strstr(buf, "df11-inspect: "));
    ck_assert_ptr_nonnull(strstr(buf, "not a df11 file"));
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress"), 2);
}
END_TEST

START_TEST(test_pipeline)
{
    ck_assert_int_eq(run(buf, sizeof buf, "df11-synth -o tiny/ --shape tiny --layers 3 --seed 7"),
                     0);
    /* a folder whose parents are missing too, as mkdir -p */
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-synth -o deep/er/tiny/ --shape tiny --layers 1 && "
                         "test -f deep/er/tiny/model.safetensors"),
                     0);
    /* Huffman: the code whose size the entropy bound is about */
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress tiny -o tiny.df11 --json --codec huffman"),
                     0);
    cJSON *j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    double ratio = cJSON_GetObjectItem(j, "ratio")->valuedouble;
    double bound = cJSON_GetObjectItem(j, "bound")->valuedouble;
    ck_assert_double_le(ratio, bound * 1.005);
    cJSON_Delete(j);

    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect tiny.df11 --verify --json"), 0);
    j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "verified")));
    ck_assert_int_eq(cJSON_GetObjectItem(j, "blocks")->valueint, 3);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "groups")),
                     3 + 3); /* + embed, norm, lm_head */
    cJSON_Delete(j);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect tiny.df11 --tensors"), 0);
    ck_assert_ptr_nonnull(strstr(buf, "model.layers.2.mlp.down_proj.weight"));
    /* the memory plan of each non-layer policy: COMPRESSED (slots sized by the layer groups)
     * never takes more than ARENA, and less than RESIDENT where the non-layer groups
     * compress (on tiny tensors their tables may outweigh what they save) */
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiny.df11 --json"), 0);
    j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    const cJSON *plans = cJSON_GetObjectItem(j, "plans");
    double total[3];
    const char *policy[3] = { "resident", "arena", "compressed" };
    for (int i = 0; i < 3; i++) {
        const cJSON *pl = cJSON_GetObjectItem(plans, policy[i]);
        ck_assert_ptr_nonnull(pl);
        total[i] = cJSON_GetNumberValue(cJSON_GetObjectItem(pl, "total_bytes"));
    }
    ck_assert(total[2] > 0 && total[2] <= total[1]);
    ck_assert_uint_eq(total[2] < total[0],
                      cJSON_GetNumberValue(cJSON_GetObjectItem(j, "nonlayer_compressed_bytes")) <
                          cJSON_GetNumberValue(cJSON_GetObjectItem(j, "nonlayer_bf16_bytes")));
    cJSON_Delete(j);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiny.df11"), 0);
    ck_assert_ptr_nonnull(strstr(buf, "non-layer COMPRESSED:"));

    ck_assert_int_eq(run(buf, sizeof buf, "df11-decompress tiny.df11 -o back.safetensors"), 0);
    assert_same_tensors("tiny", "back.safetensors");

    /* a flipped payload byte: --verify names the group and fails */
    ck_assert_int_eq(
        run(buf, sizeof buf,
            "cp tiny.df11 bad.df11 && printf '\\377' | "
            "dd of=bad.df11 bs=1 seek=$(( $(stat -c %%s bad.df11) - 100 )) conv=notrunc status=none && "
            "df11-inspect bad.df11 --verify"),
        1);
    ck_assert_ptr_nonnull(strstr(buf, "checksum mismatch"));
}
END_TEST

/* Writes `name`.safetensors in the temp dir: one BF16 tensor "w" of n weights whose
 * exponents take `distinct` values (each at least once), and a second, plainer one. */
static void write_distinct_exponents(const char *name, uint64_t n, uint32_t distinct)
{
    uint16_t *x = malloc(n * 2), *y = malloc(n * 2);
    uint64_t r = df11_test_seed();
    for (uint64_t i = 0; i < n; i++) {
        x[i] = (uint16_t)((100 + i % distinct) << 7 | (df11_test_rand(&r) & 0x807f));
        y[i] = (uint16_t)((120 + i % 3) << 7 | (df11_test_rand(&r) & 0x807f));
    }
    df11_tensor_source src[2] = { { .name = "model.layers.0.w",
                                    .dtype = DF11_DTYPE_BF16,
                                    .ndim = 1,
                                    .shape = { n },
                                    .data = x },
                                  { .name = "model.layers.0.plain",
                                    .dtype = DF11_DTYPE_BF16,
                                    .ndim = 1,
                                    .shape = { n },
                                    .data = y } };
    char path[600];
    snprintf(path, sizeof path, "%s/%s.safetensors", df11_test_tmpdir(), name);
    ck_assert_int_eq(df11i_st_write(path, src, 2, NULL), DF11_OK);
    free(x);
    free(y);
}

/* A device budget in KiB for tiers.df11 that holds what never streams on the plan's backend
 * (arena, plans, the op's scratch) and half the blocks; device: memstat's --device flag. */
static unsigned long long half_blocks_budget_kib(const char *device)
{
    ck_assert_int_eq(
        run(buf, sizeof buf, "df11-memstat tiers.df11 --vram-budget 1T %s --json", device), 0);
    cJSON *j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    const double all = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "device_bytes")),
                 layers = cJSON_GetNumberValue(
                     cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tier_bytes"), "device"));
    ck_assert_int_eq(
        cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "blocks"), "device")), 12);
    ck_assert(layers > 0 && layers < all);
    /* the backend the plan is for: the flag's, or (no flag) the one this machine opens: CUDA
     * exactly where a CUDA plan can be made (a subprocess, so that this one's peak memory,
     * which test_decompress_streams' children inherit, stays as it was) */
    const char *backend = cJSON_GetStringValue(cJSON_GetObjectItem(j, "backend"));
    ck_assert_ptr_nonnull(backend);
    const char *want = strstr(device, "cpu") ? "host" : "cuda";
    if (!*device) {
        char probe[1024];
        want =
            run(probe, sizeof probe, "df11-memstat tiers.df11 --vram-budget 1T --device cuda") == 0
                ? "cuda"
                : "host";
    }
    ck_assert_str_eq(backend, want);
    cJSON_Delete(j);
    return (unsigned long long)(all - layers / 2) / 1024;
}

/* Blocks streamed under budgets: df11-memstat shows where each block would live, df11-run
 * generates the same tokens and logits streamed as loaded, and the BF16 baseline in the
 * df11 container (--codec raw) streams under the same budgets with the BF16 engine's
 * results. */
START_TEST(test_tiers_tools)
{
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-synth -o tiers/ --shape tiny --layers 12 && "
                         "df11-compress tiers -o tiers.df11 -q && "
                         "df11-compress tiers -o tiers-raw.df11 --codec raw -q"),
                     0);
    /* the plan's device budget (the GPU's where one is present) and the CPU backend's, as
     * df11-run --device cpu below opens it */
    const unsigned long long vram = half_blocks_budget_kib(""),
                             vram_cpu = half_blocks_budget_kib("--device cpu");
    char cmd[512];
    cJSON *j;
    snprintf(cmd, sizeof cmd, "df11-memstat tiers.df11 --vram-budget %lluK --host-budget 2M --json",
             vram);
    ck_assert_int_eq(run(buf, sizeof buf, "%s", cmd), 0);
    j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    const cJSON *blocks = cJSON_GetObjectItem(j, "blocks");
    const double nd = cJSON_GetNumberValue(cJSON_GetObjectItem(blocks, "device")),
                 nh = cJSON_GetNumberValue(cJSON_GetObjectItem(blocks, "host")),
                 nf = cJSON_GetNumberValue(cJSON_GetObjectItem(blocks, "file"));
    ck_assert(nd >= 1 && nf >= 1 && nd + nh + nf == 12);
    ck_assert_double_le(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "device_bytes")),
                        vram * 1024.0);
    ck_assert_double_le(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "pinned_bytes")), 2 << 20);
    const char *tiers = cJSON_GetStringValue(cJSON_GetObjectItem(j, "block_tiers"));
    ck_assert_ptr_nonnull(tiers);
    ck_assert_uint_eq(strlen(tiers), 12);
    ck_assert_uint_eq(strspn(tiers, "DHF"), 12);
    const cJSON *tb = cJSON_GetObjectItem(j, "tier_bytes"),
                *pp = cJSON_GetObjectItem(j, "per_pass");
    ck_assert_double_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(pp, "file_bytes")),
                        cJSON_GetNumberValue(cJSON_GetObjectItem(tb, "file")));
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "df11-memstat tiers.df11 --vram-budget %lluK --host-budget 2M", vram);
    ck_assert_int_eq(run(buf, sizeof buf, "%s", cmd), 0);
    ck_assert_ptr_nonnull(strstr(buf, "per pass host->device"));
    snprintf(cmd, sizeof cmd, "df11-memstat tiers.df11 --vram-budget %lluK --device cpu", vram_cpu);
    ck_assert_int_eq(run(buf, sizeof buf, "%s", cmd), 0);
    ck_assert_msg(strstr(buf, ", host backend\n"), "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiers.df11 --vram-budget 6X"), 2);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiers.df11 --vram-budget 1G --device gpu"),
                     2);
    ck_assert_msg(strstr(buf, "--device 'gpu' (cpu or cuda)"), "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiers.df11 --device cpu"), 2);
    ck_assert_msg(strstr(buf, "--device needs --vram-budget"), "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat --device cpu"), 2);
    ck_assert_msg(strstr(buf, "a budget or --device needs a FILE"), "%s", buf);
    /* a refresh period that is not a number of seconds in range (inf spun, 5000 overflowed
     * the sleep's microseconds) */
    static const char *intervals[] = { "inf", "nan", "0.01", "5000", "''", "1s" };
    for (size_t i = 0; i < sizeof intervals / sizeof intervals[0]; i++) {
        ck_assert_int_eq(
            run(buf, sizeof buf, "timeout 10 df11-memstat -w --interval %s", intervals[i]), 2);
        ck_assert_msg(strstr(buf, "0.05..3600 seconds"), "%s", buf);
    }
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiers.df11 --host-budget 1G"), 2);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-memstat tiers.df11 --vram-budget 4K"), 1);

    /* df11-run: loaded, streamed from pinned RAM, and from the file: the same results */
    const char *gen = "df11-run %s --device cpu -n 6 --tokens 1,5,9 --json -q %s";
    char want[2][64] = { "", "" };
    const char *models[2] = { "tiers.df11", "--bf16 tiers-raw.df11" };
    for (int mi = 0; mi < 2; mi++) {
        char budgets[3][96];
        snprintf(budgets[0], sizeof budgets[0], "%s", "");
        snprintf(budgets[1], sizeof budgets[1], "--vram-budget %lluK", vram_cpu);
        snprintf(budgets[2], sizeof budgets[2], "--vram-budget %lluK --host-budget 2M --staging 2",
                 vram_cpu);
        for (int bi = 0; bi < 3; bi++) {
            snprintf(cmd, sizeof cmd, gen, models[mi], budgets[bi]);
            ck_assert_msg(run(buf, sizeof buf, "%s", cmd) == 0, "%s: %s", cmd, buf);
            j = cJSON_Parse(buf);
            ck_assert_ptr_nonnull(j);
            char got[64];
            snprintf(got, sizeof got, "%s",
                     cJSON_GetStringValue(cJSON_GetObjectItem(j, "logits_fnv1a")));
            if (!want[mi][0]) memcpy(want[mi], got, sizeof got);
            ck_assert_msg(!strcmp(got, want[mi]), "%s: logits %s, loaded %s", cmd, got, want[mi]);
            ck_assert_uint_eq(cJSON_GetObjectItem(j, "tiers") != NULL, bi > 0);
            cJSON_Delete(j);
        }
    }
    /* the raw file is the BF16 model: the BF16 engine gives the same logits */
    snprintf(cmd, sizeof cmd, gen, "--bf16 tiers", "");
    ck_assert_int_eq(run(buf, sizeof buf, "%s", cmd), 0);
    j = cJSON_Parse(buf);
    ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "logits_fnv1a")), want[1]);
    cJSON_Delete(j);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-run tiers.df11 --device cpu --host-budget 1G"), 2);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-run tiers.df11 --device cpu --vram-budget 0"), 2);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-run tiers.df11 --device cpu --staging 2"), 2);
    ck_assert_int_eq(
        run(buf, sizeof buf, "df11-run tiers.df11 --device cpu --vram-budget 1G --staging 1"), 2);
    ck_assert_int_eq(
        run(buf, sizeof buf, "df11-run --bf16 tiers --device cpu --vram-budget 1G -n 1"), 2);
}
END_TEST

START_TEST(test_max_code_len_too_small)
{
    /* 40 distinct exponents do not fit 2^5 codes: the compressor used to run the length
     * limiter off its array and exit 0 with a file no decoder could read. Now: exit 1, a
     * one-line error naming the tensor, its count and the L it needs, and no file. */
    write_distinct_exponents("e40", 4000, 40);
    ck_assert_int_eq(
        run(buf, sizeof buf, "df11-compress e40.safetensors -o e40.df11 --max-code-len 5"), 1);
    ck_assert_msg(strstr(buf, "model.layers.0.w") && strstr(buf, "40 distinct") &&
                      strstr(buf, "at least 6"),
                  "%s", buf);
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
    ck_assert_int_eq(run(buf, sizeof buf, "ls -A | grep -c '^e40.df11'"),
                     1); /* none, temporaries neither */
    ck_assert_str_eq(buf, "0\n");
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-compress e40.safetensors -o e40.df11 --max-code-len 6 -q && "
                         "df11-inspect e40.df11 --verify"),
                     0);

    /* out-of-range or malformed options are usage errors, before any input is read */
    static const char *bad[] = { "--max-code-len 0",   "--max-code-len 16",   "--max-code-len -1",
                                 "--max-code-len 12x", "--max-code-len ''",   "--lane-symbols 12",
                                 "--lane-symbols 0",   "--lane-symbols 8192", "-j many" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(
            run(buf, sizeof buf, "df11-compress e40.safetensors -o bad.df11 %s", bad[i]), 2);
        ck_assert_msg(strncmp(buf, "df11-compress: ", 15) == 0, "%s: %s", bad[i], buf);
        ck_assert_int_ne(system("test -e bad.df11"), 0);
    }
    /* the library checks them before opening the input too */
    df11_compress_options o = { .max_code_len = 16 };
    ck_assert_int_eq(df11_compress_path("no-such-input", "bad.df11", &o, NULL),
                     DF11_ERR_INVALID_ARG);
    o = (df11_compress_options){ .lane_symbols = 12 };
    ck_assert_int_eq(df11_compress_path("no-such-input", "bad.df11", &o, NULL),
                     DF11_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_smallest_max_code_len_verifies)
{
    /* Every file the compressor reports as written must verify: walk L up from 1 on a
     * realistic model; every refusal is exit 1 naming the L needed, the first success is
     * that L, and its file decodes (df11-inspect --verify: checksums + full CPU decode). */
    ck_assert_int_eq(run(buf, sizeof buf, "df11-synth -o small/ --shape tiny --layers 1 --seed 3"),
                     0);
    uint32_t need = 0, L;
    for (L = 1; L <= 15; L++) {
        int rc = run(buf, sizeof buf, "df11-compress small -o small.df11 -q --max-code-len %u", L);
        if (rc == 0) break;
        ck_assert_msg(rc == 1, "L=%u: exit %d: %s", L, rc, buf);
        const char *at = strstr(buf, "at least ");
        ck_assert_msg(at != NULL, "L=%u: %s", L, buf);
        need = (uint32_t)atoi(at + 9);
        ck_assert_uint_gt(need, L);
        ck_assert_int_ne(system("test -e small.df11"), 0);
    }
    ck_assert_uint_le(L, 8); /* 256 exponent values fit 8 bits */
    ck_assert_uint_eq(L, need ? need : 1);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect small.df11 --verify --json"), 0);
    cJSON *j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "verified")));
    cJSON_Delete(j);
}
END_TEST

/* df11-memstat over /dev/shm pages that are not what they should be (any process of the
 * user can put files there): each is skipped with a one-line note on stderr, the good one
 * is listed, the exit status is 0, and a FIFO or a huge file does not hang it. The pages
 * belong to a live child so that the tool does not skip them as dead. */
static void shm_page(const char *name, const void *bytes, size_t len, off_t truncate_to)
{
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    if (len) ck_assert_int_eq(write(fd, bytes, len), (ssize_t)len);
    if (truncate_to) ck_assert_int_eq(ftruncate(fd, truncate_to), 0);
    close(fd);
}

START_TEST(test_memstat_bad_pages)
{
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        for (;;) pause();
    }
    static _Alignas(8) unsigned char page[4096];
    df11i_memstat_page *p = (df11i_memstat_page *)page;
    memset(page, 0, sizeof page);
    p->magic = DF11_MEMSTAT_MAGIC;
    p->version = DF11_MEMSTAT_VERSION;
    p->size = sizeof *p;
    p->pid = child;
    snprintf(p->path, sizeof p->path, "good-model.df11");
    snprintf(p->backend, sizeof p->backend, "host");
    p->n_blocks = 2;
    p->n_groups = 4;
    p->arena_slots = 2;
    for (int i = 0; i < DF11_MEMSTAT_SLOTS; i++) p->slot_block[i] = -1;
    p->slot_block[0] = 1;
    p->slot_state[0] = 2;

    enum { N = 13 }; /* 0 and N - 1 good, the others bad */
    char names[N][64];
    for (int i = 0; i < N; i++)
        snprintf(names[i], sizeof names[i], i ? "df11-%d-%d" : "df11-%d", (int)child, i);
    shm_page(names[0], page, sizeof page, 0); /* good */
    shm_page(names[1], NULL, 0, 0);           /* empty file */
    shm_page(names[2], page, 10, 0);          /* shorter than the header */
    df11i_memstat_page bad = *p;
    bad.size = 0;
    shm_page(names[3], &bad, sizeof bad, 4096); /* size field 0 */
    bad.size = 100000;
    shm_page(names[4], &bad, sizeof bad, 4096); /* size past the file */
    bad = *p;
    bad.magic = 0;
    shm_page(names[5], &bad, sizeof bad, 4096); /* wrong magic */
    bad = *p;
    memset(bad.path, 'A', sizeof bad.path);
    memset(bad.backend, 'B', sizeof bad.backend);
    shm_page(names[6], &bad, sizeof bad, 4096); /* strings without NUL */
    bad = *p;
    bad.slot_state[0] = 9;
    bad.arena_slots = 1000;
    shm_page(names[7], &bad, sizeof bad, 4096); /* counts out of range */
    bad = *p;
    atomic_store(&bad.seq, 7);
    shm_page(names[8], &bad, sizeof bad, 4096);  /* writer stuck mid-update */
    shm_page(names[9], NULL, 0, (off_t)1 << 30); /* huge (sparse) */
    char fifo[300];
    snprintf(fifo, sizeof fifo, "/dev/shm/%s", names[10]);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0); /* a FIFO: open must not block */
    bad = *p;
    bad.compressed_bytes = UINT64_MAX; /* its sum with resident_bytes wrapped */
    bad.resident_bytes = 2;
    shm_page(names[11], &bad, sizeof bad, 4096);
    df11i_memstat_page odd = *p; /* a path may hold any bytes: printed as text all the same */
    snprintf(odd.path, sizeof odd.path, "odd\xff\xfe\x1b[2J\xc3\xa9.df11");
    shm_page(names[12], &odd, sizeof odd, 4096);

    int rc_json = run(buf, sizeof buf, "{ timeout 60 df11-memstat --json 2>notes; }");
    char *json = strdup(buf);
    run(buf, sizeof buf, "cat notes");
    char *notes = strdup(buf);
    int rc_text = run(buf, sizeof buf, "{ timeout 60 df11-memstat 2>/dev/null; }");
    char *text = strdup(buf);

    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (int i = 0; i < N; i++) {
        char path[1024];
        snprintf(path, sizeof path, "/dev/shm/%s", names[i]);
        unlink(path);
    }

    ck_assert_msg(rc_json == 0, "status %d\n%s\n%s", rc_json, json, notes);
    cJSON *j = cJSON_Parse(json);
    ck_assert_msg(j != NULL, "not JSON:\n%s", json);
    cJSON_Delete(j);
    char want[64];
    snprintf(want, sizeof want, "\"pid\": %d", (int)child);
    ck_assert_msg(strstr(json, want) && strstr(json, "good-model.df11"), "%s", json);
    ck_assert_msg(strstr(json, "\"state\": \"acquired\", \"block\": 1"), "%s", json);
    /* the odd path: bytes that are not UTF-8 as U+FFFD, the escape escaped, é as it is */
    ck_assert_msg(strstr(json, "\"odd\\ufffd\\ufffd\\u001b[2J\xc3\xa9.df11\""), "%s", json);
    ck_assert_msg(strstr(text, "odd???[2J\xc3\xa9.df11"), "%s", text);
    /* one note per bad page, each on its own line */
    for (int i = 1; i < N - 1; i++) {
        char line[128];
        snprintf(line, sizeof line, "df11-memstat: skipping /dev/shm/%s: ", names[i]);
        ck_assert_msg(strstr(notes, line), "no note for %s in\n%s", names[i], notes);
    }
    int lines = 0;
    for (const char *c = notes; *c; c++) lines += *c == '\n';
    ck_assert_msg(lines == N - 2, "%d lines:\n%s", lines, notes);
    ck_assert_msg(strstr(notes, "byte count"), "%s", notes);
    ck_assert_msg(rc_text == 0 && strstr(text, "good-model.df11") && !strstr(text, "AAAA"), "%s",
                  text);
    free(json);
    free(notes);
    free(text);
}
END_TEST

/* A FIFO where the safetensors reader expects a file (the model, a folder's config.json)
 * makes df11-compress and df11-run fail at once with a one-line "not a regular file",
 * instead of waiting for a writer (`timeout` turns a hang into exit 124). */
START_TEST(test_fifo_inputs_refused)
{
    ck_assert_int_eq(run(buf, sizeof buf,
                         "rm -rf ff && mkdir ff && mkfifo ff/x.safetensors && "
                         "timeout 20 df11-compress ff/x.safetensors -o ff/x.df11"),
                     1);
    ck_assert_msg(strstr(buf, "df11-compress: ") == buf && strstr(buf, "not a regular file"), "%s",
                  buf);
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-synth -o ff/m/ --shape tiny --layers 1 --seed 5 && "
                         "rm ff/m/config.json && mkfifo ff/m/config.json"),
                     0);
    ck_assert_int_eq(run(buf, sizeof buf, "timeout 20 df11-compress ff/m -o ff/m.df11"), 1);
    ck_assert_msg(strstr(buf, "config.json' is not a regular file"), "%s", buf);
    ck_assert_int_ne(system("test -e ff/m.df11"), 0);
    ck_assert_int_eq(
        run(buf, sizeof buf, "timeout 20 df11-run --bf16 ff/m --device cpu --tokens 1 -n 1"), 1);
    ck_assert_msg(strstr(buf, "df11-run: ") == buf &&
                      strstr(buf, "config.json' is not a regular file"),
                  "%s", buf);
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
}
END_TEST

/* --codec fixed and fixed8 (the loop's _i): inspect shows the codec per tensor (and --json),
 * --verify decodes it, df11-decompress gives back the original bytes; a bad --codec is a
 * usage error; the tool's default is fixed8. */
START_TEST(test_codec_fixed)
{
    const char *codec = _i ? "fixed8" : "fixed", *name = _i ? "exp-fixed8" : "exp-fixed";
    ck_assert_int_eq(run(buf, sizeof buf, "df11-synth -o tinyf/ --shape tiny --layers 2 --seed 9"),
                     0);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress tinyf -o f.df11 --codec nope"), 2);
    ck_assert_ptr_nonnull(strstr(buf, "--codec 'nope'"));
    ck_assert_int_ne(system("test -e f.df11"), 0);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress tinyf -o f.df11 --codec %s --json", codec),
                     0);
    cJSON *j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    double ratio = cJSON_GetObjectItem(j, "ratio")->valuedouble;
    ck_assert_double_gt(ratio, 0.5);
    ck_assert_double_lt(ratio, 0.85);
    cJSON_Delete(j);

    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect f.df11 --verify --json"), 0);
    j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "verified")));
    int n_fixed = 0, n_huffman = 0;
    cJSON *g, *t;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(j, "groups"))
    {
        ck_assert_str_eq(cJSON_GetObjectItem(g, "verify")->valuestring, "ok");
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(g, "tensors"))
        {
            const char *c = cJSON_GetObjectItem(t, "codec")->valuestring;
            int two_d = cJSON_GetArraySize(cJSON_GetObjectItem(t, "shape")) == 2;
            if (!strcmp(cJSON_GetObjectItem(t, "dtype")->valuestring, "BF16"))
                ck_assert_str_eq(c, two_d ? name : "exp-huffman");
            n_fixed += !strcmp(c, name);
            n_huffman += !strcmp(c, "exp-huffman");
        }
    }
    ck_assert_int_gt(n_fixed, 0);
    ck_assert_int_gt(n_huffman, 0);
    cJSON_Delete(j);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect f.df11 --tensors --verify"), 0);
    ck_assert_ptr_nonnull(strstr(buf, name));
    ck_assert_ptr_nonnull(strstr(buf, "every group's checksum and decode ok"));

    ck_assert_int_eq(run(buf, sizeof buf, "df11-decompress f.df11 -o backf.safetensors"), 0);
    assert_same_tensors("tinyf", "backf.safetensors");
    /* the tool's default is --codec fixed8, byte for byte */
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-compress tinyf -o h1.df11 -q && "
                         "df11-compress tinyf -o h2.df11 -q --codec %s && cmp h1.df11 h2.df11",
                         codec),
                     _i ? 0 : 1);
}
END_TEST

/* ---- model scale: streaming, progress, codec summary ---- */

enum { BIG_LAYERS = 8, BIG_ROWS = 2048, BIG_COLS = 4096 }; /* 8 groups of 16 MiB: 128 MiB */

static df11_status fill_big(void *ctx, size_t index, void *out, uint64_t nbytes)
{
    uint64_t r = *(uint64_t *)ctx + index;
    uint16_t *w = out;
    /* a trained-like spread: exponents 117..124, any sign and mantissa */
    for (uint64_t i = 0; i < nbytes / 2; i++) {
        uint64_t x = df11_test_rand(&r);
        w[i] = (uint16_t)((117 + (x >> 40) % 8) << 7 | (x & 0x807f));
    }
    return DF11_OK;
}

/* big.safetensors: BIG_LAYERS blocks of one BIG_ROWS x BIG_COLS matrix, and a norm. Made
 * in a child, so that this process's own peak stays small: a child it starts inherits its
 * high-water mark (ru_maxrss counts the parent's pages up to exec). */
static void write_big_model(void)
{
    char path[600]; /* named here: the temp dir is made on first use, in this process */
    snprintf(path, sizeof path, "%s/big.safetensors", df11_test_tmpdir());
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        df11_tensor_source t[BIG_LAYERS + 1];
        char names[BIG_LAYERS][64];
        for (int i = 0; i < BIG_LAYERS; i++) {
            snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.up_proj.weight", i);
            t[i] = (df11_tensor_source){ .name = names[i],
                                         .dtype = DF11_DTYPE_BF16,
                                         .ndim = 2,
                                         .shape = { BIG_ROWS, BIG_COLS } };
        }
        t[BIG_LAYERS] = (df11_tensor_source){
            .name = "model.norm.weight", .dtype = DF11_DTYPE_BF16, .ndim = 1, .shape = { BIG_COLS }
        };
        uint64_t seed = df11_test_seed();
        _exit(df11i_st_write_fill(path, t, BIG_LAYERS + 1, NULL, fill_big, &seed) == DF11_OK ? 0
                                                                                             : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Runs a tool (argv[0] a name in DF11_TOOLS_DIR) in the temp dir with stdout and stderr to
 * /dev/null; returns its peak resident set in KiB (getrusage's ru_maxrss, from wait4). */
static long peak_rss_kib(char *const argv[])
{
    char exe[600];
    snprintf(exe, sizeof exe, "%s/%s", DF11_TOOLS_DIR, argv[0]);
    const char *dir = df11_test_tmpdir();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null < 0 || chdir(dir) != 0) _exit(126);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        execv(exe, argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    ck_assert_int_eq(wait4(pid, &status, 0, &ru), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %d", argv[0], status);
    return ru.ru_maxrss;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

START_TEST(test_decompress_streams)
{
    /* A 128 MiB model in 8 groups of 16 MiB decodes within one group's buffers (decoded
     * group + its payload) over what the tool takes doing nothing; decoding the whole model
     * first, as df11-decompress once did, would take more than the model itself. */
    write_big_model();
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress big.safetensors -o big.df11 -q -j 2"), 0);
    char *idle[] = { "df11-decompress", "--version", NULL };
    char *work[] = { "df11-decompress", "big.df11", "-o", "back.safetensors", "-j", "2", NULL };
    long base = peak_rss_kib(idle), peak = peak_rss_kib(work);
    const long group_kib = (long)BIG_ROWS * BIG_COLS * 2 / 1024, model_kib = BIG_LAYERS * group_kib;
    /* the bound: the largest group decoded and its payload, plus 4 MiB for the index,
     * header, stacks and allocator slack */
    char path[600];
    snprintf(path, sizeof path, "%s/big.df11", df11_test_tmpdir());
    df11_file *f;
    ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
    long payload_kib = 0;
    for (uint32_t g = 0; g < df11_file_n_groups(f); g++)
        if ((long)(df11_file_group(f, g)->payload_size / 1024) > payload_kib)
            payload_kib = (long)(df11_file_group(f, g)->payload_size / 1024);
    df11_file_close(f);
    ck_assert_int_lt(payload_kib, group_kib);
    printf("df11-decompress peak RSS %ld KiB (idle %ld KiB), model %ld KiB, largest group %ld KiB "
           "+ payload %ld KiB\n",
           peak, base, model_kib, group_kib, payload_kib);
    /* Under a sanitizer the peak measures its shadow memory (TSan: 165 MiB for this run),
     * not the tool: the bound is checked in the plain build (the README's test command). */
    if (!SANITIZED) {
        ck_assert_msg(peak - base <= group_kib + payload_kib + 4096,
                      "peak %ld KiB, idle %ld KiB, group %ld KiB + payload %ld KiB", peak, base,
                      group_kib, payload_kib);
        ck_assert_int_lt(peak, model_kib / 2);
    }
    assert_same_tensors("big.safetensors", "back.safetensors");
    /* the output is whole and alone: no temporary beside it */
    ck_assert_int_eq(run(buf, sizeof buf, "ls -A | grep -c 'back.safetensors.tmp'"), 1);
    ck_assert_str_eq(buf, "0\n");
}
END_TEST

static df11_progress seen[64];
static int n_seen;
static void record(void *ctx, const df11_progress *p)
{
    (void)ctx;
    if (n_seen < 64) seen[n_seen] = *p;
    n_seen++;
}

START_TEST(test_decompress_progress_and_failure)
{
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-synth -o tinyp/ --shape tiny --layers 3 --seed 4 && "
                         "df11-compress tinyp -o p.df11 -q"),
                     0);
    char in[600], out[600];
    snprintf(in, sizeof in, "%s/p.df11", df11_test_tmpdir());
    snprintf(out, sizeof out, "%s/p.safetensors", df11_test_tmpdir());
    n_seen = 0;
    df11_decompress_options o = { .n_threads = 1, .progress = record };
    ck_assert_int_eq(df11_decompress_path(in, out, &o), DF11_OK);
    /* after each of the 6 groups, the last one once the file is on disk */
    ck_assert_int_eq(n_seen, 6);
    for (int i = 0; i < n_seen; i++) {
        ck_assert_uint_eq(seen[i].groups_done, (uint32_t)i + 1);
        ck_assert_uint_eq(seen[i].groups_total, 6);
        ck_assert_uint_le(seen[i].bytes_done, seen[i].bytes_total);
        if (i) ck_assert_uint_gt(seen[i].bytes_done, seen[i - 1].bytes_done);
    }
    ck_assert_uint_eq(seen[5].bytes_done, seen[5].bytes_total);
    assert_same_tensors("tinyp", "p.safetensors");
    /* compress reports groups too */
    n_seen = 0;
    char in2[600], out2[600];
    snprintf(in2, sizeof in2, "%s/tinyp", df11_test_tmpdir());
    snprintf(out2, sizeof out2, "%s/p2.df11", df11_test_tmpdir());
    df11_compress_options co = { .n_threads = 1, .group_progress = record };
    ck_assert_int_eq(df11_compress_path(in2, out2, &co, NULL), DF11_OK);
    ck_assert_int_eq(n_seen, 6);
    ck_assert_uint_eq(seen[5].groups_done, 6);
    ck_assert_uint_eq(seen[5].bytes_done, seen[5].bytes_total);

    /* a corrupt group half-way: the call fails, the old output stays as it was */
    ck_assert_int_eq(run(buf, sizeof buf,
                         "cp p.df11 bad.df11 && printf '\\377' | "
                         "dd of=bad.df11 bs=1 seek=$(( $(stat -c %%s bad.df11) - 100 )) "
                         "conv=notrunc status=none && cp p.safetensors keep.safetensors"),
                     0);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-decompress bad.df11 -o p.safetensors"), 1);
    ck_assert_msg(strstr(buf, "df11-decompress: cannot decompress 'bad.df11': ") == buf &&
                      strchr(buf, '\n') == buf + strlen(buf) - 1,
                  "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf,
                         "cmp p.safetensors keep.safetensors && ls -A | "
                         "grep -c 'p.safetensors.tmp'"),
                     1);
    ck_assert_str_eq(buf, "0\n");
    ck_assert_int_eq(run(buf, sizeof buf, "df11-decompress p.df11 -o x.safetensors -j lots"), 2);
}
END_TEST

/* Long runs draw a progress line only on a terminal: never into a pipe (these runs), and
 * under a pseudo-terminal (script(1)) unless --json/--quiet. */
START_TEST(test_progress_only_on_terminal)
{
    ck_assert_int_eq(run(buf, sizeof buf, "df11-synth -o tinyq/ --shape tiny --layers 2 --seed 5"),
                     0);
    static const char *cmds[] = { "df11-compress tinyq -o q.df11",
                                  "df11-decompress q.df11 -o q.safetensors",
                                  "df11-inspect q.df11 --verify" };
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(run(buf, sizeof buf, "%s", cmds[i]), 0);
        ck_assert_msg(!strchr(buf, '\r') && !strstr(buf, "groups  "), "%s:\n%s", cmds[i], buf);
    }
    if (run(buf, sizeof buf, "script -qec true /dev/null") != 0) {
        printf("script(1) unavailable: the terminal half skipped\n");
        return;
    }
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(run(buf, sizeof buf, "script -qec '%s' /dev/null", cmds[i]), 0);
        ck_assert_msg(strchr(buf, '\r') && strstr(buf, "5/5 groups") && strstr(buf, "100%"),
                      "%s:\n%s", cmds[i], buf);
    }
    static const char *silent[] = { "df11-compress tinyq -o q.df11 --json",
                                    "df11-compress tinyq -o q.df11 -q",
                                    "df11-decompress q.df11 -o q.safetensors -q",
                                    "df11-inspect q.df11 --verify --json" };
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(run(buf, sizeof buf, "script -qec '%s' /dev/null", silent[i]), 0);
        ck_assert_msg(!strstr(buf, "groups  "), "%s:\n%s", silent[i], buf);
    }
}
END_TEST

/* The per-codec summary: counts and bytes add up to the tensors', in text and --json,
 * for the tool's default (fixed: 2-D BF16 weights) and for --codec huffman. */
START_TEST(test_bench_read)
{
    /* df11-bench read: a file's groups through the runtime's reader, with its three rates;
     * a missing file and bad flags fail with a message and their exit status. */
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-synth -o tinyr/ --shape tiny --layers 2 --seed 7 && "
                         "df11-compress tinyr -o r.df11 -q"),
                     0);
    const char *bench = DF11_BENCH_DIR "/df11-bench";
    ck_assert_int_eq(run(buf, sizeof buf, "'%s' read r.df11 --reps 2", bench), 0);
    ck_assert_msg(strstr(buf, "| one group a call") && strstr(buf, "GB/s |") &&
                      strstr(buf, "median of 2 passes"),
                  "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf, "'%s' read missing.df11", bench), 1);
    ck_assert_msg(strstr(buf, "missing.df11"), "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf, "'%s' read r.df11 --reps 0", bench), 2);
    ck_assert_msg(strstr(buf, "--reps takes 1..100"), "%s", buf);
    ck_assert_int_eq(run(buf, sizeof buf, "'%s' read", bench), 2);
    ck_assert_int_eq(run(buf, sizeof buf, "'%s' read r.df11 r.df11", bench), 2);
}
END_TEST

START_TEST(test_bench_flags)
{
    /* df11-bench's flags are checked before anything runs: each bad one fails with its
     * message and the usage status (matmul and pipeline in a build without CUDA say so
     * instead). A count that wrapped once overflowed a buffer (--weights 2^63), another a
     * loop (--layers 613566757: 7 x that wraps to 3). */
    const char *bench = DF11_BENCH_DIR "/df11-bench";
    static const char *bad[][2] = {
        { "matmul --matrix-batch 0", "--matrix-batch takes 1..512, not '0'" },
        { "matmul --matrix-batch 513", "--matrix-batch takes 1..512, not '513'" },
        { "matmul --batches 1,0", "--batches takes up to 16 of 1..512" },
        { "matmul --reps 0", "--reps takes 1..1000, not '0'" },
        { "codec --weights 9223372036854775808", "--weights takes 1..17179869184" },
        { "codec --weights abc", "--weights takes 1..17179869184, not 'abc'" },
        { "codec --reps -5", "--reps takes 1..1000, not '-5'" },
        { "codec --threads -7", "--threads '-7'" },
        { "codec --seed -1", "--seed '-1': want a whole number" },
        { "decode --reps 0", "--reps takes 1..10000, not '0'" },
        { "decode --seed 1x", "--seed '1x': want a whole number" },
        { "pipeline --seed 0x", "--seed '0x': want a whole number" },
        { "decode --lane-symbols 7", "--lane-symbols takes a multiple of 8 in 8..4096" },
        { "decode --threads 1e3", "--threads '1e3'" },
        { "pipeline --layers 613566757", "bad --layers '613566757' (1..256)" },
        { "pipeline --slots 1", "bad --slots '1' (2..256)" },
        { "pipeline --batches 16,x", "bad --batches: 'x'" },
        { "pipeline --gemm-sms -1", "bad --gemm-sms '-1'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const int rc = run(buf, sizeof buf, "'%s' %s", bench, bad[i][0]);
        if (strstr(buf, "built without CUDA")) {
            ck_assert_int_eq(rc, 1);
            continue;
        }
        ck_assert_msg(rc == 2 && strstr(buf, bad[i][1]), "%s: rc %d, %s", bad[i][0], rc, buf);
    }
}
END_TEST

START_TEST(test_codec_summary)
{
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-synth -o tinyc/ --shape tiny --layers 2 --seed 6 && "
                         "df11-compress tinyc -o cf.df11 -q && "
                         "df11-compress tinyc -o ch.df11 -q --codec huffman"),
                     0);
    static const char *files[] = { "cf.df11", "ch.df11" };
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect %s --json", files[k]), 0);
        cJSON *j = cJSON_Parse(buf);
        ck_assert_ptr_nonnull(j);
        /* what the tensors say, counted here */
        double want[3][3] = {
            { 0 }
        }; /* exp-fixed8 (the default), exp-huffman, raw x tensors, bytes, stored */
        static const char *names[3] = { "exp-fixed8", "exp-huffman", "raw" };
        const cJSON *g, *t;
        cJSON_ArrayForEach(g, cJSON_GetObjectItem(j, "groups"))
        {
            cJSON_ArrayForEach(t, cJSON_GetObjectItem(g, "tensors"))
            {
                const char *c = cJSON_GetObjectItem(t, "codec")->valuestring;
                int two_d = cJSON_GetArraySize(cJSON_GetObjectItem(t, "shape")) == 2;
                ck_assert_str_eq(c, k == 0 && two_d ? "exp-fixed8" : "exp-huffman");
                for (int i = 0; i < 3; i++) {
                    if (strcmp(c, names[i])) continue;
                    want[i][0]++;
                    want[i][1] += cJSON_GetObjectItem(t, "bytes")->valuedouble;
                    want[i][2] += cJSON_GetObjectItem(t, "stored_bytes")->valuedouble;
                }
            }
        }
        const cJSON *codecs = cJSON_GetObjectItem(j, "codecs");
        ck_assert_ptr_nonnull(codecs);
        for (int i = 0; i < 3; i++) {
            const cJSON *c = cJSON_GetObjectItem(codecs, names[i]);
            ck_assert_ptr_nonnull(c);
            ck_assert_double_eq(cJSON_GetObjectItem(c, "tensors")->valuedouble, want[i][0]);
            ck_assert_double_eq(cJSON_GetObjectItem(c, "bytes")->valuedouble, want[i][1]);
            ck_assert_double_eq(cJSON_GetObjectItem(c, "stored_bytes")->valuedouble, want[i][2]);
        }
        ck_assert_double_gt(want[1][0], 0);
        ck_assert_double_eq(want[0][0] > 0, k == 0);
        cJSON_Delete(j);

        ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect %s --tensors", files[k]), 0);
        char line[128];
        if (k == 0) {
            snprintf(line, sizeof line, "codecs: exp-fixed8 %.0f tensors", want[0][0]);
            ck_assert_msg(strstr(buf, line) && strstr(buf, ", exp-huffman "), "%s", buf);
        } else {
            snprintf(line, sizeof line, "codecs: exp-huffman %.0f tensors", want[1][0]);
            ck_assert_msg(strstr(buf, line) && !strstr(buf, "exp-fixed"), "%s", buf);
        }
        /* --tensors: each tensor's line ends with its codec */
        static const char *rows[2][2] = { { "model.norm.weight", "exp-huffman" },
                                          { "model.layers.1.self_attn.q_proj.weight", NULL } };
        for (int r = 0; r < 2; r++) {
            const char *c = rows[r][1] ? rows[r][1] : k == 0 ? "exp-fixed8" : "exp-huffman";
            snprintf(line, sizeof line, "    %s ", rows[r][0]);
            const char *at = strstr(buf, line), *eol = at ? strchr(at, '\n') : NULL;
            ck_assert_msg(eol && eol - at > (long)strlen(c) &&
                              !strncmp(eol - strlen(c), c, strlen(c)),
                          "%s: want %s in\n%s", rows[r][0], c, buf);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tools");
    TCase *tc = tcase_create("tools");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_help_version_usage);
    tcase_add_test(tc, test_errors_are_one_line);
    tcase_add_test(tc, test_pipeline);
    tcase_add_test(tc, test_memstat_bad_pages);
    tcase_add_test(tc, test_max_code_len_too_small);
    tcase_add_test(tc, test_smallest_max_code_len_verifies);
    tcase_add_test(tc, test_fifo_inputs_refused);
    tcase_add_loop_test(tc, test_codec_fixed, 0, 2);
    tcase_add_test(tc, test_decompress_streams);
    tcase_add_test(tc, test_decompress_progress_and_failure);
    tcase_add_test(tc, test_progress_only_on_terminal);
    tcase_add_test(tc, test_codec_summary);
    tcase_add_test(tc, test_bench_read);
    tcase_add_test(tc, test_bench_flags);
    tcase_add_test(tc, test_tiers_tools);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
