/* Publishing a model's memory statistics in a POSIX shared-memory page for df11-memstat
 * (layout: runtime/memstat.h). Updates are a seqlock write of a few hundred bytes, no
 * system call, so acquire/release may publish on the hot path. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "runtime/internal.h"
#include "runtime/memstat.h"

df11_status df11_rt_stats_publish_open(df11_model *m)
{
    int fd = -1;
    int pid = (int)getpid();
    for (int n = 0; n < 64 && fd < 0; n++) {
        if (n == 0) snprintf(m->stats_name, sizeof m->stats_name, "/" DF11_MEMSTAT_PREFIX "%d", pid);
        else snprintf(m->stats_name, sizeof m->stats_name, "/" DF11_MEMSTAT_PREFIX "%d-%d", pid, n);
        fd = shm_open(m->stats_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) {
            /* A page of this pid left by a process that died without closing: ours now
             * only if no model of this process has it open (we cannot tell), so skip. */
            continue;
        }
        if (fd < 0)
            return df11_fail_errno(DF11_ERR_IO, errno, "shm_open('%s')", m->stats_name);
    }
    if (fd < 0) return df11_fail(DF11_ERR_IO, "shm_open: no free stats page name");
    size_t size = (sizeof(df11_memstat_page) + 4095) & ~(size_t)4095;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(m->stats_name);
        return df11_fail_errno(DF11_ERR_IO, e, "ftruncate('%s')", m->stats_name);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        int e = errno;
        shm_unlink(m->stats_name);
        return df11_fail_errno(DF11_ERR_IO, e, "mmap('%s')", m->stats_name);
    }
    df11_memstat_page *pg = p;
    memset(pg, 0, sizeof *pg);
    pg->magic = DF11_MEMSTAT_MAGIC;
    pg->version = DF11_MEMSTAT_VERSION;
    pg->size = sizeof *pg;
    pg->pid = pid;
    snprintf(pg->path, sizeof pg->path, "%s", m->path);
    snprintf(pg->backend, sizeof pg->backend, "%s", m->be->iface->name);
    pg->bf16_model = m->file == NULL;
    m->stats_page = pg;
    df11_rt_stats_publish(m);
    return DF11_OK;
}

void df11_rt_stats_publish(df11_model *m)
{
    df11_memstat_page *pg = m->stats_page;
    if (!pg) return;
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);

    uint32_t seq = atomic_load_explicit(&pg->seq, memory_order_relaxed);
    atomic_store_explicit(&pg->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    pg->n_blocks = m->n_blocks;
    pg->n_groups = m->n_groups;
    pg->arena_slots = m->arena.n_slots;
    pg->compressed_bytes = st.compressed_bytes;
    pg->bf16_bytes = st.bf16_bytes;
    pg->arena_bytes = st.arena_bytes;
    pg->resident_bytes = st.resident_bytes;
    pg->staging_bytes = st.staging_bytes;
    pg->metadata_bytes = st.metadata_bytes;
    pg->pool_reserved = st.pool_reserved;
    pg->pool_high_water = st.pool_high_water;
    pg->memory_limit = m->opt.memory_limit;
    pg->decodes = st.decodes;
    pg->acquires = st.acquires;
    pg->decode_ms = st.decode_ms;
    pg->open_ms = st.open_ms;
    pg->updated_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (uint32_t i = 0; i < DF11_MEMSTAT_SLOTS; i++) {
        const df11_arena_slot *sl = i < m->arena.n_slots ? &m->arena.slots[i] : NULL;
        pg->slot_block[i] = sl && sl->state != DF11_SLOT_EMPTY ? (int32_t)sl->key : -1;
        pg->slot_state[i] = sl ? (uint8_t)sl->state : 0;
    }
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&pg->seq, seq + 2, memory_order_release);
}

void df11_rt_stats_publish_close(df11_model *m)
{
    if (!m->stats_page) return;
    size_t size = (sizeof(df11_memstat_page) + 4095) & ~(size_t)4095;
    munmap(m->stats_page, size);
    shm_unlink(m->stats_name);
    m->stats_page = NULL;
}
