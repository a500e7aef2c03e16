/* The command-line tools as a user runs them: exit codes, one-line errors, and the
 * synthesize → compress → inspect → decompress pipeline giving back identical bytes. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    char a_path[600], b_path[600];
    snprintf(a_path, sizeof a_path, "%s/tiny", df11_test_tmpdir());
    snprintf(b_path, sizeof b_path, "%s/back.safetensors", df11_test_tmpdir());
    df11i_st_model *a, *b;
    ck_assert_int_eq(df11i_st_open(a_path, &a), DF11_OK);
    ck_assert_int_eq(df11i_st_open(b_path, &b), DF11_OK);
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        size_t k = 0;
        while (k < b->n_tensors && strcmp(a->tensors[i].name, b->tensors[k].name)) k++;
        ck_assert_uint_lt(k, b->n_tensors);
        uint64_t bytes = df11_dtype_size(a->tensors[i].dtype);
        for (uint32_t d = 0; d < a->tensors[i].ndim; d++) bytes *= a->tensors[i].shape[d];
        ck_assert_mem_eq(a->tensors[i].data, b->tensors[k].data, bytes);
    }
    df11i_st_close(a);
    df11i_st_close(b);

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

    enum { N = 11 };
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

    int rc_json = run(buf, sizeof buf, "{ timeout 60 df11-memstat --json 2>notes; }");
    char *json = strdup(buf);
    run(buf, sizeof buf, "cat notes");
    char *notes = strdup(buf);
    int rc_text = run(buf, sizeof buf, "{ timeout 60 df11-memstat 2>/dev/null; }");
    char *text = strdup(buf);

    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (int i = 0; i < N; i++) {
        char path[800];
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
    /* one note per bad page, each on its own line */
    for (int i = 1; i < N; i++) {
        char line[128];
        snprintf(line, sizeof line, "df11-memstat: skipping /dev/shm/%s: ", names[i]);
        ck_assert_msg(strstr(notes, line), "no note for %s in\n%s", names[i], notes);
    }
    int lines = 0;
    for (const char *c = notes; *c; c++) lines += *c == '\n';
    ck_assert_msg(lines == N - 1, "%d lines:\n%s", lines, notes);
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

/* --codec fixed: inspect shows the codec per tensor (and --json), --verify decodes it,
 * df11-decompress gives back the original bytes; a bad --codec is a usage error. */
START_TEST(test_codec_fixed)
{
    ck_assert_int_eq(run(buf, sizeof buf, "df11-synth -o tinyf/ --shape tiny --layers 2 --seed 9"),
                     0);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress tinyf -o f.df11 --codec nope"), 2);
    ck_assert_ptr_nonnull(strstr(buf, "--codec 'nope'"));
    ck_assert_int_ne(system("test -e f.df11"), 0);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress tinyf -o f.df11 --codec fixed --json"), 0);
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
                ck_assert_str_eq(c, two_d ? "exp-fixed" : "exp-huffman");
            n_fixed += !strcmp(c, "exp-fixed");
            n_huffman += !strcmp(c, "exp-huffman");
        }
    }
    ck_assert_int_gt(n_fixed, 0);
    ck_assert_int_gt(n_huffman, 0);
    cJSON_Delete(j);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect f.df11 --tensors --verify"), 0);
    ck_assert_ptr_nonnull(strstr(buf, "exp-fixed"));
    ck_assert_ptr_nonnull(strstr(buf, "every group's checksum and decode ok"));

    ck_assert_int_eq(run(buf, sizeof buf, "df11-decompress f.df11 -o backf.safetensors"), 0);
    char a_path[600], b_path[600];
    snprintf(a_path, sizeof a_path, "%s/tinyf", df11_test_tmpdir());
    snprintf(b_path, sizeof b_path, "%s/backf.safetensors", df11_test_tmpdir());
    df11i_st_model *a, *b;
    ck_assert_int_eq(df11i_st_open(a_path, &a), DF11_OK);
    ck_assert_int_eq(df11i_st_open(b_path, &b), DF11_OK);
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        size_t k = 0;
        while (k < b->n_tensors && strcmp(a->tensors[i].name, b->tensors[k].name)) k++;
        ck_assert_uint_lt(k, b->n_tensors);
        uint64_t bytes = df11_dtype_size(a->tensors[i].dtype);
        for (uint32_t d = 0; d < a->tensors[i].ndim; d++) bytes *= a->tensors[i].shape[d];
        ck_assert_mem_eq(a->tensors[i].data, b->tensors[k].data, bytes);
    }
    df11i_st_close(a);
    df11i_st_close(b);
    /* the tool's default is --codec fixed, byte for byte */
    ck_assert_int_eq(run(buf, sizeof buf,
                         "df11-compress tinyf -o h1.df11 -q && "
                         "df11-compress tinyf -o h2.df11 -q --codec fixed && cmp h1.df11 h2.df11"),
                     0);
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
    tcase_add_test(tc, test_codec_fixed);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
