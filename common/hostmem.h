/* Host memory for data the device copies in (a backend's host_alloc): locked with mlock
 * where RLIMIT_MEMLOCK allows, so that the kernel counts it (VmLck in /proc/self/status)
 * and an operator sees the pinned bytes from outside the process; else a caller-supplied
 * pinned allocation (cudaHostAlloc), else plain memory. Every block keeps a header page
 * saying how it was made, so that one free call undoes any of them.
 *
 *     df11i_hostmem how = { .pin = cuda_register, .unpin = ..., .pinned_alloc = ..., ... };
 *     void *p;
 *     df11i_hostmem_alloc(&how, size, &p);     // 4096-aligned
 *     df11i_hostmem_free(&how, p);
 */
#ifndef DF11_COMMON_HOSTMEM_H
#define DF11_COMMON_HOSTMEM_H

#include <stddef.h>

#include "df11/status.h"

typedef struct df11i_hostmem {
    /* Registers locked memory with the device (CUDA: cudaHostRegister); 0 on success. NULL:
     * nothing to register (host backend). */
    int (*pin)(void *base, size_t size);
    void (*unpin)(void *base);
    /* The device's own pinned allocation when locking is refused (cudaHostAlloc); 0 on
     * success. NULL: none. */
    int (*pinned_alloc)(size_t size, void **base);
    void (*pinned_free)(void *base);
} df11i_hostmem;

df11_status df11i_hostmem_alloc(const df11i_hostmem *how, size_t size, void **ptr);
void df11i_hostmem_free(const df11i_hostmem *how, void *ptr);
/* Why some host memory is plain (pageable) rather than pinned in this process, or NULL:
 * copies from it are slower, never wrong. */
const char *df11i_hostmem_note(void);

#endif
