/* Output files (common/atomic_file.h) through both writers, .df11 and safetensors: the
 * mode is 0666 & ~umask, a failed or killed write leaves neither a partial target nor a
 * temporary that stays (the previous target, if any, intact), an existing target is
 * replaced in one step, and a tool's signal handler removes its temporaries. Each case runs
 * with O_TMPFILE and with the named fallback. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "df11.h"
#include "loader/safetensors.h"
#include "tests/testutil.h"
#include "tools/cli.h"
#include "writer/safetensors_write.h"

enum { KIND_DF11, KIND_ST };
enum { ACT_NONE, ACT_FAIL, ACT_KILL };

static uint64_t rng;
static uint16_t w[3][4096];
static df11_tensor_source src[3] = {
    { "model.layers.0.a.weight", DF11_DTYPE_BF16, 2, { 64, 64 }, w[0] },
    { "model.layers.1.a.weight", DF11_DTYPE_BF16, 2, { 64, 64 }, w[1] },
    { "model.layers.2.a.weight", DF11_DTYPE_BF16, 2, { 64, 64 }, w[2] },
};

static void setup(void)
{
    for (int i = 0; i < 3; i++) df11_test_fill_weights(w[i], 4096, 64, &rng);
}

/* A new empty directory for one case. */
static const char *fresh_dir(const char *name)
{
    static char paths[4][512];
    static int next;
    char *p = paths[next++ & 3];
    snprintf(p, 512, "%s/%s-%d", df11_test_tmpdir(), name, (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    return p;
}

/* The names in `dir` but . and .., sorted, space-separated ("" if none). */
static const char *dir_list(const char *dir)
{
    static char out[2048];
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    ck_assert_int_ge(n, 0);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, "..")) {
            if (out[0]) strncat(out, " ", sizeof out - strlen(out) - 1);
            strncat(out, ents[i]->d_name, sizeof out - strlen(out) - 1);
        }
        free(ents[i]);
    }
    free(ents);
    return out;
}

static df11_status fill(void *ctx, size_t i, void *buf, uint64_t nbytes)
{
    int act = *(const int *)ctx;
    if (i == 1 && act == ACT_FAIL) return DF11_ERR_IO;
    if (i == 1 && act == ACT_KILL) raise(SIGKILL);
    memcpy(buf, src[i].data, nbytes);
    return DF11_OK;
}

static void progress(void *ctx, uint64_t done, uint64_t total)
{
    if (*(const int *)ctx == ACT_KILL && done < total) raise(SIGKILL);
}

/* Writes the three tensors to `path` as `kind`; ACT_KILL dies of SIGKILL half-way (after
 * bytes went out), ACT_FAIL makes the safetensors fill callback fail half-way. */
static df11_status write_out(int kind, const char *path, int act)
{
    if (kind == KIND_ST) return df11i_st_write_fill(path, src, 3, NULL, fill, &act);
    df11_compress_options o = { .n_threads = 1, .progress = progress, .progress_ctx = &act };
    return df11_compress_tensors(path, src, 3, NULL, 0, &o, NULL);
}

/* The file at `path` is a complete output of the three tensors. */
static void check_complete(int kind, const char *path)
{
    if (kind == KIND_ST) {
        df11i_st_model *m;
        ck_assert_int_eq(df11i_st_open(path, &m), DF11_OK);
        ck_assert_uint_eq(m->n_tensors, 3);
        ck_assert_mem_eq(m->tensors[2].data, w[2], sizeof w[2]);
        df11i_st_close(m);
    } else {
        df11_file *f;
        ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
        ck_assert_uint_eq(df11_file_n_tensors(f), 3);
        df11_file_close(f);
    }
}

static const char *target_name(int kind) { return kind == KIND_ST ? "m.safetensors" : "m.df11"; }

/* Runs write_out in a child; returns its wait status. */
static int write_in_child(int kind, const char *path, int act, int named, rlim_t fsize)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        df11i_atomic_file_no_tmpfile = named;
        if (fsize) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = { fsize, fsize };
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        _exit(write_out(kind, path, act) == DF11_OK ? 0 : 3);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

START_TEST(test_output_mode)
{
    static const mode_t masks[] = { 022, 077, 002, 027 };
    mode_t saved = umask(022);
    for (int named = 0; named < 2; named++)
        for (int kind = 0; kind < 2; kind++)
            for (size_t i = 0; i < sizeof masks / sizeof *masks; i++) {
                df11i_atomic_file_no_tmpfile = named;
                const char *dir = fresh_dir("mode");
                char path[600];
                snprintf(path, sizeof path, "%s/%s", dir, target_name(kind));
                umask(masks[i]);
                ck_assert_int_eq(write_out(kind, path, ACT_NONE), DF11_OK);
                umask(022);
                struct stat st;
                ck_assert_int_eq(stat(path, &st), 0);
                ck_assert_msg((st.st_mode & 07777) == (0666 & ~masks[i]),
                              "%s named=%d umask %03o: mode %03o", path, named, (unsigned)masks[i],
                              (unsigned)(st.st_mode & 07777));
                ck_assert_str_eq(dir_list(dir), target_name(kind));
            }
    df11i_atomic_file_no_tmpfile = 0;
    umask(saved);
}
END_TEST

/* A write that fails half-way (fill callback, or the file size limit: EFBIG) leaves the
 * directory as it was: empty, or the previous target byte for byte. */
START_TEST(test_output_failed_write)
{
    for (int named = 0; named < 2; named++)
        for (int kind = 0; kind < 2; kind++)
            for (int previous = 0; previous < 2; previous++) {
                const char *dir = fresh_dir("fail");
                char path[600];
                snprintf(path, sizeof path, "%s/%s", dir, target_name(kind));
                if (previous) {
                    FILE *f = fopen(path, "w");
                    fputs("previous", f);
                    fclose(f);
                }
                const char *expect = previous ? target_name(kind) : "";
                if (kind == KIND_ST) {
                    df11i_atomic_file_no_tmpfile = named;
                    ck_assert_int_eq(write_out(kind, path, ACT_FAIL), DF11_ERR_IO);
                    df11i_atomic_file_no_tmpfile = 0;
                    ck_assert_str_eq(dir_list(dir), expect);
                }
                int status = write_in_child(kind, path, ACT_NONE, named, 6000);
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 3, "status %x", status);
                ck_assert_str_eq(dir_list(dir), expect);
                if (previous) {
                    char b[16] = { 0 };
                    FILE *f = fopen(path, "r");
                    ck_assert_uint_eq(fread(b, 1, sizeof b, f), 8);
                    fclose(f);
                    ck_assert_str_eq(b, "previous");
                }
            }
}
END_TEST

/* A writer killed with SIGKILL half-way: with O_TMPFILE nothing is left; a named
 * temporary may stay, and the next write of the same target removes it. Either way the
 * previous target is intact. */
START_TEST(test_output_sigkill)
{
    for (int named = 0; named < 2; named++)
        for (int kind = 0; kind < 2; kind++)
            for (int previous = 0; previous < 2; previous++) {
                const char *dir = fresh_dir("kill");
                char path[600];
                snprintf(path, sizeof path, "%s/%s", dir, target_name(kind));
                if (previous) ck_assert_int_eq(write_out(kind, path, ACT_NONE), DF11_OK);
                const char *expect = previous ? target_name(kind) : "";
                int status = write_in_child(kind, path, ACT_KILL, named, 0);
                ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %x",
                              status);
                if (previous) check_complete(kind, path);
                int fd = open(dir, O_TMPFILE | O_WRONLY, 0600);
                int tmpfile_ok = fd >= 0;
                if (fd >= 0) close(fd);
                if (!named && tmpfile_ok) {
                    ck_assert_str_eq(dir_list(dir), expect);
                } else {
                    /* the dead writer's temporary, ".m.xxx.tmp-<pid>-<n>" */
                    char prefix[64];
                    snprintf(prefix, sizeof prefix, ".%s.tmp-", target_name(kind));
                    ck_assert_msg(strstr(dir_list(dir), prefix), "%s", dir_list(dir));
                }
                df11i_atomic_file_no_tmpfile = named;
                ck_assert_int_eq(write_out(kind, path, ACT_NONE), DF11_OK);
                df11i_atomic_file_no_tmpfile = 0;
                ck_assert_str_eq(dir_list(dir), target_name(kind));
                check_complete(kind, path);
            }
}
END_TEST

/* A reader that opened the old target keeps reading it whole; a new open sees the new
 * file whole. */
START_TEST(test_output_replaces)
{
    for (int named = 0; named < 2; named++)
        for (int kind = 0; kind < 2; kind++) {
            df11i_atomic_file_no_tmpfile = named;
            const char *dir = fresh_dir("replace");
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, target_name(kind));
            FILE *old = fopen(path, "w+");
            fputs("old contents", old);
            fflush(old);
            struct stat a, b;
            ck_assert_int_eq(stat(path, &a), 0);
            ck_assert_int_eq(write_out(kind, path, ACT_NONE), DF11_OK);
            ck_assert_int_eq(stat(path, &b), 0);
            ck_assert_uint_ne(a.st_ino, b.st_ino);
            char buf[32] = { 0 };
            rewind(old);
            ck_assert_uint_eq(fread(buf, 1, sizeof buf, old), 12);
            ck_assert_str_eq(buf, "old contents");
            fclose(old);
            check_complete(kind, path);
            ck_assert_str_eq(dir_list(dir), target_name(kind));
        }
    df11i_atomic_file_no_tmpfile = 0;
}
END_TEST

/* The helper itself: a signal handler's cleanup, stale temporaries of dead writers, bad
 * paths. */
START_TEST(test_atomic_file_temporaries)
{
    const char *dir = fresh_dir("tmp");
    char path[600], other[700], stale[700], live[700], odd[700];
    snprintf(path, sizeof path, "%s/x", dir);

    /* What a signal handler does: the named temporary goes, abort still works. */
    df11i_atomic_file_no_tmpfile = 1;
    df11i_atomic_file af;
    ck_assert_int_eq(df11i_atomic_file_begin(&af, path), DF11_OK);
    ck_assert_int_eq(df11i_atomic_file_write(&af, "abc", 3), DF11_OK);
    ck_assert_ptr_nonnull(strstr(dir_list(dir), ".x.tmp-"));
    df11i_atomic_file_unlink_temporaries();
    ck_assert_str_eq(dir_list(dir), "");
    df11i_atomic_file_abort(&af);
    df11i_atomic_file_abort(&af); /* twice is harmless */
    ck_assert_str_eq(dir_list(dir), "");

    /* Stale ones: a dead pid's is removed; a live one's, another target's and a name
     * that only looks similar stay. */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    ck_assert_int_eq(waitpid(dead, NULL, 0), dead);
    snprintf(stale, sizeof stale, "%s/.x.tmp-%d-0", dir, (int)dead);
    snprintf(live, sizeof live, "%s/.x.tmp-%d-0", dir, (int)getppid());
    snprintf(other, sizeof other, "%s/.y.tmp-%d-0", dir, (int)dead);
    snprintf(odd, sizeof odd, "%s/.x.tmp-%d-0z", dir, (int)dead);
    const char *make[] = { stale, live, other, odd };
    for (int i = 0; i < 4; i++) fclose(fopen(make[i], "w"));
    for (int named = 0; named < 2; named++) {
        df11i_atomic_file_no_tmpfile = named;
        ck_assert_int_eq(df11i_atomic_file_begin(&af, path), DF11_OK);
        ck_assert_int_ne(access(stale, F_OK), 0);
        ck_assert_int_eq(df11i_atomic_file_write(&af, "new", 3), DF11_OK);
        ck_assert_int_eq(df11i_atomic_file_commit(&af), DF11_OK);
        ck_assert_int_eq(df11i_atomic_file_commit(&af), DF11_ERR_STATE);
        fclose(fopen(stale, "w"));
    }
    for (int i = 1; i < 4; i++) ck_assert_int_eq(access(make[i], F_OK), 0);
    df11i_atomic_file_no_tmpfile = 0;

    /* No file name, no directory. */
    ck_assert_int_eq(df11i_atomic_file_begin(&af, ""), DF11_ERR_INVALID_ARG);
    snprintf(other, sizeof other, "%s/", dir);
    ck_assert_int_eq(df11i_atomic_file_begin(&af, other), DF11_ERR_INVALID_ARG);
    snprintf(other, sizeof other, "%s/none/x", dir);
    ck_assert_int_eq(df11i_atomic_file_begin(&af, other), DF11_ERR_IO);
    ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "none"));
}
END_TEST

/* A tool killed by SIGINT, SIGTERM or SIGHUP while writing through a named temporary:
 * its handler (tools/cli.c, installed before main) unlinks the temporary, then the signal
 * ends the process as it would have. */
START_TEST(test_tool_signal_cleanup)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        const char *dir = fresh_dir("signal");
        char path[600];
        snprintf(path, sizeof path, "%s/m.safetensors", dir);
        int ready[2];
        ck_assert_int_eq(pipe(ready), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            /* as a tool starts: default actions (Check installed its own handlers) */
            for (size_t k = 0; k < sizeof sigs / sizeof *sigs; k++) signal(sigs[k], SIG_DFL);
            cli_signals_install();
            df11i_atomic_file_no_tmpfile = 1;
            df11i_atomic_file af;
            if (df11i_atomic_file_begin(&af, path) != DF11_OK) _exit(3);
            if (df11i_atomic_file_write(&af, w, sizeof w) != DF11_OK) _exit(4);
            if (write(ready[1], "r", 1) != 1) _exit(5);
            for (;;) pause();
        }
        close(ready[1]);
        char c;
        ck_assert_int_eq(read(ready[0], &c, 1), 1);
        close(ready[0]);
        ck_assert_ptr_nonnull(strstr(dir_list(dir), ".m.safetensors.tmp-"));
        kill(pid, sigs[i]);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == sigs[i], "status %x", status);
        ck_assert_str_eq(dir_list(dir), "");
    }
}
END_TEST

int main(void)
{
    rng = df11_test_seed();
    setup();
    Suite *s = suite_create("atomic_file");
    TCase *tc = tcase_create("atomic_file");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_output_mode);
    tcase_add_test(tc, test_output_failed_write);
    tcase_add_test(tc, test_output_sigkill);
    tcase_add_test(tc, test_output_replaces);
    tcase_add_test(tc, test_atomic_file_temporaries);
    tcase_add_test(tc, test_tool_signal_cleanup);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
