/* What every backend shares: the pool allocators over a backend's memory. They live here,
 * not in pool/, so that pool/ never learns what a backend is. */
#include "runtime/backend.h"

static df11_status device_alloc(void *be, size_t size, void **ptr)
{
    return ((df11i_backend *)be)->iface->alloc(be, size, ptr);
}

static void device_free(void *be, void *ptr) { ((df11i_backend *)be)->iface->free(be, ptr); }

static df11_status host_alloc(void *be, size_t size, void **ptr)
{
    return ((df11i_backend *)be)->iface->host_alloc(be, size, ptr);
}

static void host_free(void *be, void *ptr) { ((df11i_backend *)be)->iface->host_free(be, ptr); }

df11i_pool_allocator df11i_backend_device_memory(df11i_backend *be)
{
    return (df11i_pool_allocator){ .alloc = device_alloc, .free = device_free, .ctx = be };
}

df11i_pool_allocator df11i_backend_host_memory(df11i_backend *be)
{
    return (df11i_pool_allocator){ .alloc = host_alloc, .free = host_free, .ctx = be };
}
