/* Output files that appear whole or not at all (see atomic_file.h). Linux: O_TMPFILE,
 * linkat through /proc/self/fd, renameat, with a named temporary as the fallback. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "common/error.h"

int df11i_atomic_file_no_tmpfile;

/* ---- the registry of named temporaries, for signal handlers ----
 *
 * A slot is 0 free, 1 being filled, 2 registered. A name is registered before the file is
 * created and unregistered after it is gone (unlinked or renamed), so a file of ours that
 * exists is always registered. The handler copies a slot only between two reads that see
 * it registered under the same generation, so it never unlinks a half-written name. */
#define SLOTS 64

static struct {
    atomic_int state;
    atomic_uint gen;
    int dir_fd;
    char name[256];
} slots[SLOTS];
static atomic_bool slots_overflowed; /* a temporary went unregistered: spare own-pid names */
static atomic_uint next_tmp;

static int slot_add(int dir_fd, const char *name)
{
    for (int i = 0; i < SLOTS; i++) {
        int free_state = 0;
        if (!atomic_compare_exchange_strong(&slots[i].state, &free_state, 1)) continue;
        slots[i].dir_fd = dir_fd;
        snprintf(slots[i].name, sizeof slots[i].name, "%s", name);
        atomic_fetch_add(&slots[i].gen, 1);
        atomic_store(&slots[i].state, 2);
        return i;
    }
    atomic_store(&slots_overflowed, true);
    return -1;
}

static void slot_remove(int i)
{
    if (i >= 0) atomic_store(&slots[i].state, 0);
}

static bool slot_has(const char *name)
{
    for (int i = 0; i < SLOTS; i++)
        if (atomic_load(&slots[i].state) == 2 && strcmp(slots[i].name, name) == 0) return true;
    return false;
}

void df11i_atomic_file_unlink_temporaries(void)
{
    int saved = errno;
    for (int i = 0; i < SLOTS; i++) {
        if (atomic_load(&slots[i].state) != 2) continue;
        unsigned g = atomic_load(&slots[i].gen);
        int dir_fd = slots[i].dir_fd;
        char name[sizeof slots[i].name];
        memcpy(name, slots[i].name, sizeof name);
        name[sizeof name - 1] = '\0';
        if (atomic_load(&slots[i].state) == 2 && atomic_load(&slots[i].gen) == g)
            unlinkat(dir_fd, name, 0);
    }
    errno = saved;
}

/* ---- names ---- */

/* ".<base, at most 200 bytes>.tmp-" : every temporary of this target starts so. */
static int tmp_prefix(const char *base, char *out, size_t cap)
{
    return snprintf(out, cap, ".%.200s.tmp-", base);
}

static void tmp_name(const df11i_atomic_file *af, char *out, size_t cap)
{
    int n = tmp_prefix(af->base, out, cap);
    snprintf(out + n, cap - (size_t)n, "%ld-%u", (long)getpid(), atomic_fetch_add(&next_tmp, 1));
}

/* Removes temporaries of this target left by processes that are gone (a SIGKILL between
 * creating and renaming one), and by an earlier process that had our pid. Best effort. */
static void remove_stale(const df11i_atomic_file *af)
{
    char prefix[256];
    size_t plen = (size_t)tmp_prefix(af->base, prefix, sizeof prefix);
    int fd = openat(af->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(e->d_name + plen, &end, 10);
        if (errno || end == e->d_name + plen || *end != '-' || pid <= 0) continue;
        const char *n = end + 1;
        strtoul(n, &end, 10);
        if (end == n || *end) continue;
        bool stale = pid == self ? !atomic_load(&slots_overflowed) && !slot_has(e->d_name)
                                 : kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if (stale) unlinkat(af->dir_fd, e->d_name, 0);
    }
    closedir(d);
}

/* ---- the file ---- */

static void release(df11i_atomic_file *af)
{
    if (af->fd >= 0) close(af->fd);
    if (af->dir_fd >= 0) close(af->dir_fd);
    free(af->path);
    free(af->base);
    af->fd = af->dir_fd = af->slot = -1;
    af->path = af->base = NULL;
    af->tmp[0] = '\0';
}

static bool can_link(int fd)
{
    char proc[64];
    struct stat st;
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return stat(proc, &st) == 0;
}

df11_status df11i_atomic_file_begin(df11i_atomic_file *af, const char *path)
{
    *af = (df11i_atomic_file){ .fd = -1, .dir_fd = -1, .slot = -1 };
    if (!path || !path[0]) return df11i_fail(DF11_ERR_INVALID_ARG, "output: empty path");
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!base[0] || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        return df11i_fail(DF11_ERR_INVALID_ARG, "output '%s' names no file", path);
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    af->path = strdup(path);
    af->base = strdup(base);
    if (!dir || !af->path || !af->base) {
        free(dir);
        release(af);
        return df11i_fail(DF11_ERR_NO_MEMORY, "output '%s'", path);
    }
    af->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (af->dir_fd < 0) {
        df11_status st = df11i_fail_errno(DF11_ERR_IO, errno, "cannot open directory '%s'", dir);
        free(dir);
        release(af);
        return st;
    }
    free(dir);
    remove_stale(af);

    if (!df11i_atomic_file_no_tmpfile) {
        af->fd = openat(af->dir_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
        if (af->fd >= 0 && can_link(af->fd)) {
            af->unnamed = true;
            return DF11_OK;
        }
        if (af->fd >= 0) close(af->fd);
        af->fd = -1;
    }
    for (int tries = 0; tries < 16; tries++) {
        tmp_name(af, af->tmp, sizeof af->tmp);
        af->slot = slot_add(af->dir_fd, af->tmp);
        af->fd = openat(af->dir_fd, af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (af->fd >= 0) return DF11_OK;
        int e = errno;
        slot_remove(af->slot);
        af->slot = -1;
        if (e != EEXIST) {
            df11_status st =
                df11i_fail_errno(DF11_ERR_IO, e, "cannot create a file beside '%s'", path);
            af->tmp[0] = '\0';
            release(af);
            return st;
        }
    }
    df11_status st = df11i_fail(DF11_ERR_IO, "cannot create a file beside '%s': names taken", path);
    af->tmp[0] = '\0';
    release(af);
    return st;
}

df11_status df11i_atomic_file_write(df11i_atomic_file *af, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(af->fd, p, len > ((size_t)1 << 30) ? (size_t)1 << 30 : len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return df11i_fail_errno(DF11_ERR_IO, errno, "cannot write '%s'", af->path);
        p += w;
        len -= (size_t)w;
    }
    return DF11_OK;
}

void df11i_atomic_file_abort(df11i_atomic_file *af)
{
    if (af->tmp[0] && af->dir_fd >= 0) unlinkat(af->dir_fd, af->tmp, 0);
    slot_remove(af->slot);
    release(af);
}

/* Gives the unnamed file the name af->tmp (registered). */
static int link_tmp(df11i_atomic_file *af, const char *proc)
{
    for (int tries = 0; tries < 16; tries++) {
        tmp_name(af, af->tmp, sizeof af->tmp);
        af->slot = slot_add(af->dir_fd, af->tmp);
        if (linkat(AT_FDCWD, proc, af->dir_fd, af->tmp, AT_SYMLINK_FOLLOW) == 0) return 0;
        int e = errno;
        slot_remove(af->slot);
        af->slot = -1;
        af->tmp[0] = '\0';
        if (e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    errno = EEXIST;
    return -1;
}

df11_status df11i_atomic_file_commit(df11i_atomic_file *af)
{
    if (af->fd < 0) return df11i_fail(DF11_ERR_STATE, "output committed or aborted already");
    df11_status st = DF11_OK;
    if (fsync(af->fd) != 0) {
        st = df11i_fail_errno(DF11_ERR_IO, errno, "cannot write '%s'", af->path);
        goto fail;
    }
    if (af->unnamed) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", af->fd);
        /* No target yet: the link itself is the atomic step. */
        if (linkat(AT_FDCWD, proc, af->dir_fd, af->base, AT_SYMLINK_FOLLOW) == 0) goto linked;
        if (errno != EEXIST || link_tmp(af, proc) != 0) {
            st = df11i_fail_errno(DF11_ERR_IO, errno, "cannot create '%s'", af->path);
            goto fail;
        }
    }
    if (renameat(af->dir_fd, af->tmp, af->dir_fd, af->base) != 0) {
        st = df11i_fail_errno(DF11_ERR_IO, errno, "cannot rename '%s' to '%s'", af->tmp, af->path);
        goto fail;
    }
    slot_remove(af->slot);
    af->slot = -1;
    af->tmp[0] = '\0';
linked:
    /* The new name is durable only once the directory is. Some file systems cannot sync
     * a directory (EINVAL); they have nothing more to make durable. */
    if (fsync(af->dir_fd) != 0 && errno != EINVAL)
        st = df11i_fail_errno(DF11_ERR_IO, errno,
                              "'%s' is written, but syncing its directory failed", af->path);
    release(af);
    return st;
fail:
    df11i_atomic_file_abort(af);
    return st;
}
