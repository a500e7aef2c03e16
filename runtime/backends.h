/* Constructors of the backends behind pool/backend.h. */
#ifndef DF11_RUNTIME_BACKENDS_H
#define DF11_RUNTIME_BACKENDS_H

#include "pool/backend.h"

/* Host memory, host decode (df11_group_decode_host on n_threads threads). A stream is a
 * worker thread running its work in order; the NULL stream is the calling thread. */
df11_status df11_backend_host_create(int n_threads, df11_backend **out);

/* CUDA device `device`. DF11_ERR_NO_DEVICE when there is none, DF11_ERR_UNSUPPORTED in a
 * build without CUDA. */
df11_status df11_backend_cuda_create(int device, df11_backend **out);
/* 1 when a CUDA device is present and usable (0 in a build without CUDA). */
int df11_backend_cuda_available(void);

static inline void df11_backend_destroy(df11_backend *be)
{
    if (be) be->iface->destroy(be);
}

#endif
