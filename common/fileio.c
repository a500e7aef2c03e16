/* Opening outside files without blocking on FIFOs (see fileio.h). */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fileio.h"

df11_status df11i_open_regular(const char *path, int extra_flags, int *fd, uint64_t *size)
{
    *fd = -1;
    /* O_NONBLOCK makes open() of a FIFO return at once; the type check then rejects it. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags);
    if (f < 0) return df11i_fail_errno(DF11_ERR_IO, errno, "cannot open '%s'", path);
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return df11i_fail_errno(DF11_ERR_IO, e, "cannot stat '%s'", path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return df11i_fail(DF11_ERR_IO, "'%s' is not a regular file", path);
    }
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(f);
        return df11i_fail_errno(DF11_ERR_IO, e, "fcntl '%s'", path);
    }
    if (size) *size = (uint64_t)sb.st_size;
    *fd = f;
    return DF11_OK;
}

FILE *df11i_fopen_regular(const char *path, df11_status *status)
{
    int fd;
    df11_status st = df11i_open_regular(path, 0, &fd, NULL);
    FILE *f = NULL;
    if (st == DF11_OK && !(f = fdopen(fd, "rb"))) {
        st = df11i_fail_errno(DF11_ERR_IO, errno, "cannot open '%s'", path);
        close(fd);
    }
    if (status) *status = st;
    return f;
}
