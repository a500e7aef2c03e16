/* df11i_hostmem: locked, else device-pinned, else plain host memory, behind one header. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/error.h"
#include "common/hostmem.h"

#define HEAD 4096u /* the header page: keeps the block 4096-aligned */
#define MAGIC 0x64663131686d656dull

enum { KIND_LOCKED = 1, KIND_PINNED = 2, KIND_PLAIN = 3 };

typedef struct head {
    uint64_t magic, total;
    int kind;
} head;

static pthread_once_t note_once = PTHREAD_ONCE_INIT;
static char note[160];
static atomic_int note_set;
static atomic_size_t note_size;

static void note_write(void)
{
    snprintf(note, sizeof note,
             "pinned host memory refused (%zu bytes): plain memory, copies from it are slower",
             atomic_load(&note_size));
    atomic_store(&note_set, 1);
}

const char *df11i_hostmem_note(void) { return atomic_load(&note_set) ? note : NULL; }

/* mmap + mlock; NULL when the limit (or the kernel) refuses. */
static void *locked_map(size_t total)
{
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (mlock(p, total) != 0) {
        munmap(p, total);
        return NULL;
    }
    return p;
}

df11_status df11i_hostmem_alloc(const df11i_hostmem *how, size_t size, void **ptr)
{
    *ptr = NULL;
    if (size > SIZE_MAX - 2 * HEAD)
        return df11i_fail(DF11_ERR_NO_MEMORY, "host memory: %zu bytes", size);
    const size_t total = (size + HEAD + 4095) / 4096 * 4096;
    void *base = locked_map(total);
    int kind = KIND_LOCKED;
    if (base && how->pin && how->pin(base, total) != 0) {
        munlock(base, total);
        munmap(base, total);
        base = NULL;
    }
    if (!base && how->pinned_alloc && how->pinned_alloc(total, &base) == 0) kind = KIND_PINNED;
    if (!base) {
        if (how->pinned_alloc || how->pin) { /* the device wanted pinned memory */
            atomic_store(&note_size, size);
            pthread_once(&note_once, note_write);
        }
        if (!(base = aligned_alloc(4096, total)))
            return df11i_fail(DF11_ERR_NO_MEMORY, "host memory: cannot allocate %zu bytes", size);
        kind = KIND_PLAIN;
    }
    *(head *)base = (head){ .magic = MAGIC, .total = total, .kind = kind };
    *ptr = (char *)base + HEAD;
    return DF11_OK;
}

void df11i_hostmem_free(const df11i_hostmem *how, void *ptr)
{
    if (!ptr) return;
    void *base = (char *)ptr - HEAD;
    const head h = *(const head *)base;
    if (h.magic != MAGIC) return; /* not ours: leak rather than free the wrong way */
    switch (h.kind) {
    case KIND_LOCKED:
        if (how->unpin) how->unpin(base);
        munlock(base, h.total);
        munmap(base, h.total);
        break;
    case KIND_PINNED: how->pinned_free(base); break;
    default: free(base);
    }
}
