/* Opening files that come from outside. A path may name a FIFO, a device or a directory;
 * a plain open() of a FIFO blocks until a writer appears, so every reader of outside files
 * goes through df11i_open_regular, which never blocks and accepts regular files only. */
#ifndef DF11_COMMON_FILEIO_H
#define DF11_COMMON_FILEIO_H

#include <stdint.h>
#include <stdio.h>

#include "df11/status.h"

/* Opens `path` read-only with `extra_flags` (e.g. O_DIRECT) and O_CLOEXEC, without
 * blocking, and fails with DF11_ERR_IO "'path' is not a regular file" unless it is one.
 * On success *fd is blocking again and *size (may be NULL) is the file's size. */
df11_status df11i_open_regular(const char *path, int extra_flags, int *fd, uint64_t *size);
/* The same as a stdio stream ("rb"); NULL with the detail set on failure. */
FILE *df11i_fopen_regular(const char *path, df11_status *status);

#endif
