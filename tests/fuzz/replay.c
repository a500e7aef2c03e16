/* A main() for fuzz targets built without libFuzzer: runs the target once on every file
 * named on the command line, directories read one level deep in name order, so that the
 * corpus (and every input that ever crashed) runs as an ordinary CTest under any compiler.
 * Each input lies in a buffer of exactly its size, so sanitizer builds catch over-reads.
 * Exit status: 0 when every input ran, 1 when one could not be read; a target that finds
 * a fault aborts, and the last "input:" line names the file. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, size = 0;
    uint8_t *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + size, 1, cap - size, f)) > 0;) {
        size += r;
        if (size == cap) {
            uint8_t *grown = realloc(buf, cap *= 2);
            if (!grown) {
                free(buf);
                buf = NULL;
            } else
                buf = grown;
        }
    }
    int failed = !buf || ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "replay: cannot read '%s'\n", path);
        free(buf);
        return -1;
    }
    /* An exact-size copy: the slack of `buf` would hide an over-read from ASan. */
    uint8_t *exact = malloc(size ? size : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, size);
    free(buf);
    fprintf(stderr, "input: %s (%zu bytes)\n", path, size);
    LLVMFuzzerTestOneInput(exact, size);
    free(exact);
    ++*count;
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int regular_only(const struct dirent *d) { return d->d_name[0] != '.'; }

int main(int argc, char **argv)
{
    size_t count = 0;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: '%s': %s\n", argv[i], strerror(errno));
            bad = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad |= run_file(argv[i], &count) != 0;
            continue;
        }
        struct dirent **ents;
        int n = scandir(argv[i], &ents, regular_only, by_name);
        if (n < 0) {
            fprintf(stderr, "replay: cannot list '%s': %s\n", argv[i], strerror(errno));
            bad = 1;
            continue;
        }
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], ents[k]->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) bad |= run_file(path, &count) != 0;
            free(ents[k]);
        }
        free(ents);
    }
    fprintf(stderr, "replay: %zu inputs, %s\n", count, bad ? "some unreadable" : "all passed");
    return bad;
}
