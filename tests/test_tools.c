/* The command-line tools as a user runs them: exit codes, one-line errors, and the
 * synthesize → compress → inspect → decompress pipeline giving back identical bytes. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "loader/safetensors.h"
#include "tests/testutil.h"

/* Runs a shell command line; returns its exit status and its stdout+stderr. */
static int run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "cd '%s' && export PATH='%s':\"$PATH\"; ", df11_test_tmpdir(), DF11_TOOLS_DIR);
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
    static const char *tools[] = {"df11-compress", "df11-inspect", "df11-decompress", "df11-synth"};
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
    ck_assert_int_eq(run(buf, sizeof buf, "echo 'hello, not a model' > notdf11 && df11-inspect notdf11"), 1);
    ck_assert_ptr_nonnull(strstr(buf, "df11-inspect: "));
    ck_assert_ptr_nonnull(strstr(buf, "not a df11 file"));
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress"), 2);
}
END_TEST

START_TEST(test_pipeline)
{
    ck_assert_int_eq(run(buf, sizeof buf, "df11-synth -o tiny/ --shape tiny --layers 3 --seed 7"), 0);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-compress tiny -o tiny.df11 --json"), 0);
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
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "groups")), 3 + 3); /* + embed, norm, lm_head */
    cJSON_Delete(j);
    ck_assert_int_eq(run(buf, sizeof buf, "df11-inspect tiny.df11 --tensors"), 0);
    ck_assert_ptr_nonnull(strstr(buf, "model.layers.2.mlp.down_proj.weight"));

    ck_assert_int_eq(run(buf, sizeof buf, "df11-decompress tiny.df11 -o back.safetensors"), 0);
    char a_path[600], b_path[600];
    snprintf(a_path, sizeof a_path, "%s/tiny", df11_test_tmpdir());
    snprintf(b_path, sizeof b_path, "%s/back.safetensors", df11_test_tmpdir());
    df11_st_model *a, *b;
    ck_assert_int_eq(df11_st_open(a_path, &a), DF11_OK);
    ck_assert_int_eq(df11_st_open(b_path, &b), DF11_OK);
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        size_t k = 0;
        while (k < b->n_tensors && strcmp(a->tensors[i].name, b->tensors[k].name)) k++;
        ck_assert_uint_lt(k, b->n_tensors);
        uint64_t bytes = df11_dtype_size(a->tensors[i].dtype);
        for (uint32_t d = 0; d < a->tensors[i].ndim; d++) bytes *= a->tensors[i].shape[d];
        ck_assert_mem_eq(a->tensors[i].data, b->tensors[k].data, bytes);
    }
    df11_st_close(a);
    df11_st_close(b);

    /* a flipped payload byte: --verify names the group and fails */
    ck_assert_int_eq(run(buf, sizeof buf, "cp tiny.df11 bad.df11 && printf '\\377' | "
                                          "dd of=bad.df11 bs=1 seek=$(( $(stat -c %%s bad.df11) - 100 )) conv=notrunc status=none && "
                                          "df11-inspect bad.df11 --verify"), 1);
    ck_assert_ptr_nonnull(strstr(buf, "checksum mismatch"));
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
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
