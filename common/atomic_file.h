/* Writing an output file so that readers of the target see the old file or the whole new
 * one, never a part, and so that a writer that dies, even of SIGKILL, leaves nothing behind
 * that the next run cannot clean. Every df11 writer (.df11, safetensors, df11-synth's
 * config.json) goes through here.
 *
 *     df11i_atomic_file af;
 *     df11_status st = df11i_atomic_file_begin(&af, path);
 *     if (st != DF11_OK) return st;
 *     st = df11i_atomic_file_write(&af, buf, len);         // or write/pwrite on af.fd
 *     if (st == DF11_OK) st = df11i_atomic_file_commit(&af); // else df11i_atomic_file_abort
 *     else df11i_atomic_file_abort(&af);
 *
 * How. begin opens the target's directory and, where Linux allows it, an unnamed O_TMPFILE
 * file in it: if the process dies the kernel drops the file, nothing to clean. commit
 * fsyncs the file, links it in (straight at the target if there is none, else at a
 * temporary name renamed over the target) and fsyncs the directory. Where O_TMPFILE is not
 * supported (or /proc/self/fd is missing, so the file could not be linked) the file is
 * created as "<dir>/.<base>.tmp-<pid>-<n>" instead. Such a named temporary is removed by
 * abort, by df11i_atomic_file_unlink_temporaries() from a tool's signal handler
 * (tools/cli.c), or, after a SIGKILL, by the next begin on the same target, which removes
 * temporaries of that target whose process is gone.
 *
 * The new file's mode is 0666 & ~umask (any default ACL of the directory applies), as for
 * any file the process creates with open(2); a replaced target's mode is not kept.
 */
#ifndef DF11_COMMON_ATOMIC_FILE_H
#define DF11_COMMON_ATOMIC_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "df11/status.h"

typedef struct df11i_atomic_file {
    int fd;        /* write here; -1 once committed or aborted */
    int dir_fd;    /* the target's directory */
    char *path;    /* the target as given, for messages */
    char *base;    /* its last component */
    char tmp[256]; /* the named temporary, "" if none exists (yet) */
    int slot;      /* where tmp is registered for signal cleanup, -1 if not */
    bool unnamed;  /* fd is an O_TMPFILE file */
} df11i_atomic_file;

/* Opens a new file that will become `path` at commit (a regular file's path; its
 * directory must exist). Fails with DF11_ERR_INVALID_ARG for a path with no file name
 * ("dir/"), DF11_ERR_IO with errno's text otherwise; nothing is left to clean then. */
df11_status df11i_atomic_file_begin(df11i_atomic_file *af, const char *path);
/* write(2) of all `len` bytes at the current offset, retrying short writes and EINTR. */
df11_status df11i_atomic_file_write(df11i_atomic_file *af, const void *buf, size_t len);
/* fsync, link/rename over the target, fsync of the directory; frees everything. On failure
 * the target is as it was and the new file is gone (abort is done already). */
df11_status df11i_atomic_file_commit(df11i_atomic_file *af);
/* Drops the new file; the target is untouched. Safe on a committed or aborted af. */
void df11i_atomic_file_abort(df11i_atomic_file *af);

/* Unlinks every named temporary of this process's writes in progress. Async-signal-safe:
 * for a SIGINT/SIGTERM handler that then lets the signal kill the process. */
void df11i_atomic_file_unlink_temporaries(void);

/* Tests: nonzero makes begin skip O_TMPFILE and use a named temporary. */
extern int df11i_atomic_file_no_tmpfile;

#endif
