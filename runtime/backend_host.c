/* The host backend: "device" memory is page-aligned host memory, decode is
 * df11_group_decode_host. A stream is a worker thread that runs its queue in order, so a
 * prefetch really overlaps the engine's work on the calling thread; the NULL stream is the
 * calling thread itself (work runs at once). An event is (stream, position in its queue).
 * This file must stay free of CUDA and of model logic. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/hostmem.h"
#include "common/util.h"
#include "runtime/backend.h"

typedef struct host_stream host_stream;

typedef enum { ITEM_DECODE, ITEM_COPY, ITEM_WAIT } item_kind;

typedef struct host_item {
    struct host_item *next;
    item_kind kind;
    df11i_backend_group g; /* DECODE */
    void *dst;             /* DECODE, COPY */
    const void *src;       /* COPY */
    size_t size;
    host_stream *wait_stream; /* WAIT */
    uint64_t wait_seq;
} host_item;

struct host_stream {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* queue grew, or an item completed, or quit */
    host_item *head, *tail;
    uint64_t enqueued, done;
    df11_status error; /* sticky first failure */
    char error_detail[256];
    int quit;
    struct host_ctx *ctx;
};

typedef struct host_event {
    host_stream *stream; /* NULL: complete */
    uint64_t seq;
} host_event;

typedef struct host_ctx {
    int n_threads;
    pthread_mutex_t stat_mu;
    double decode_ms;
} host_ctx;

static df11_status run_decode(host_ctx *c, const df11i_backend_group *g, void *out)
{
    double t0 = df11i_now_ms();
    df11_status s = df11_group_decode_host(g->file, g->group, g->payload, out, c->n_threads);
    double dt = df11i_now_ms() - t0;
    pthread_mutex_lock(&c->stat_mu);
    c->decode_ms += dt;
    pthread_mutex_unlock(&c->stat_mu);
    return s;
}

/* Blocks until stream `s` has completed `seq` items; returns its sticky error. */
static df11_status stream_wait_seq(host_stream *s, uint64_t seq)
{
    pthread_mutex_lock(&s->mu);
    while (s->done < seq && !s->quit) pthread_cond_wait(&s->cv, &s->mu);
    df11_status st = s->error;
    char detail[256];
    memcpy(detail, s->error_detail, sizeof detail);
    pthread_mutex_unlock(&s->mu);
    if (st != DF11_OK) return df11i_fail(st, "%s", detail);
    return DF11_OK;
}

static _Atomic unsigned copy_delay_us;

unsigned df11i_host_copy_delay(unsigned us) { return atomic_exchange(&copy_delay_us, us); }

/* A stream's copy: late by the test hook's delay, as a busy GPU's copy engine can be. */
static void run_copy(const host_item *it)
{
    const unsigned us = atomic_load_explicit(&copy_delay_us, memory_order_relaxed);
    if (us)
        nanosleep(&(struct timespec){ .tv_sec = us / 1000000, .tv_nsec = us % 1000000 * 1000L },
                  NULL);
    memcpy(it->dst, it->src, it->size);
}

static void *stream_main(void *arg)
{
    host_stream *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->quit) pthread_cond_wait(&s->cv, &s->mu);
        if (!s->head) break; /* quit with an empty queue */
        host_item *it = s->head;
        int failed = s->error != DF11_OK;
        pthread_mutex_unlock(&s->mu);
        df11_status st = DF11_OK;
        if (!failed) {
            switch (it->kind) {
            case ITEM_DECODE: st = run_decode(s->ctx, &it->g, it->dst); break;
            case ITEM_COPY: run_copy(it); break;
            case ITEM_WAIT: st = stream_wait_seq(it->wait_stream, it->wait_seq); break;
            }
        }
        pthread_mutex_lock(&s->mu);
        if (st != DF11_OK && s->error == DF11_OK) {
            s->error = st;
            snprintf(s->error_detail, sizeof s->error_detail, "%s", df11_last_error_detail());
        }
        s->head = it->next;
        if (!s->head) s->tail = NULL;
        s->done++;
        free(it);
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static df11_status enqueue(host_stream *s, host_item *it)
{
    pthread_mutex_lock(&s->mu);
    it->next = NULL;
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->enqueued++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return DF11_OK;
}

static host_item *item_new(item_kind kind)
{
    host_item *it = calloc(1, sizeof *it);
    if (it) it->kind = kind;
    return it;
}

/* --- memory --- */

static df11_status h_alloc(df11i_backend *be, size_t size, void **ptr)
{
    size = df11i_align_up(size ? size : 1, 4096);
    *ptr = aligned_alloc(4096, size);
    if (!*ptr)
        return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: cannot allocate %zu bytes", size);
    return DF11_OK;
}

static void h_free(df11i_backend *be, void *ptr) { free(ptr); }

/* "Pinned" host memory (host tier, read buffers): locked where the memlock limit allows, so
 * that it stays in RAM and the kernel counts it (VmLck) as it counts the CUDA backend's. */
static const df11i_hostmem host_hostmem = { 0 };

static df11_status h_host_alloc(df11i_backend *be, size_t size, void **ptr)
{
    return df11i_hostmem_alloc(&host_hostmem, size, ptr);
}

static void h_host_free(df11i_backend *be, void *ptr) { df11i_hostmem_free(&host_hostmem, ptr); }

static df11_status h_copy_h2d(df11i_backend *be, void *dst, const void *src, size_t size,
                              void *stream)
{
    if (!stream) {
        memcpy(dst, src, size);
        return DF11_OK;
    }
    host_item *it = item_new(ITEM_COPY);
    if (!it) return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: out of memory");
    it->dst = dst;
    it->src = src;
    it->size = size;
    return enqueue(stream, it);
}

static df11_status h_copy_d2h(df11i_backend *be, void *dst, const void *src, size_t size)
{
    memcpy(dst, src, size);
    return DF11_OK;
}

/* --- streams and events --- */

static df11_status h_stream_create(df11i_backend *be, int high_priority, void **out)
{
    host_stream *s = calloc(1, sizeof *s);
    if (!s) return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: out of memory");
    s->ctx = be->ctx;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int e = pthread_create(&s->thread, NULL, stream_main, s);
    if (e) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return df11i_fail_errno(DF11_ERR_NO_MEMORY, e, "host backend: cannot start a stream");
    }
    *out = s;
    return DF11_OK;
}

static void h_stream_destroy(df11i_backend *be, void *stream)
{
    host_stream *s = stream;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->quit = 1; /* the worker drains its queue first */
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static df11_status h_event_create(df11i_backend *be, void **out)
{
    host_event *e = calloc(1, sizeof *e);
    if (!e) return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: out of memory");
    *out = e;
    return DF11_OK;
}

static void h_event_destroy(df11i_backend *be, void *ev) { free(ev); }

static df11_status h_event_record(df11i_backend *be, void *ev, void *stream)
{
    host_event *e = ev;
    host_stream *s = stream;
    e->stream = s;
    if (s) {
        pthread_mutex_lock(&s->mu);
        e->seq = s->enqueued;
        pthread_mutex_unlock(&s->mu);
    }
    return DF11_OK;
}

static df11_status h_event_sync(df11i_backend *be, void *ev)
{
    host_event *e = ev;
    return e->stream ? stream_wait_seq(e->stream, e->seq) : DF11_OK;
}

static df11_status h_stream_wait(df11i_backend *be, void *stream, void *ev)
{
    host_event *e = ev;
    if (!e->stream || e->stream == stream) return DF11_OK; /* done, or ordered already */
    if (!stream) return h_event_sync(be, ev);
    host_item *it = item_new(ITEM_WAIT);
    if (!it) return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: out of memory");
    it->wait_stream = e->stream;
    it->wait_seq = e->seq;
    return enqueue(stream, it);
}

/* The host decoder needs no plan: nothing to reserve for one. */
static df11_status h_plan_size(df11i_backend *be, const df11_file *file, uint32_t group,
                               uint64_t *bytes)
{
    *bytes = 0;
    return DF11_OK;
}

static df11_status h_decode_group(df11i_backend *be, const df11i_backend_group *g, void *out,
                                  void *stream)
{
    if (!stream) return run_decode(be->ctx, g, out);
    host_item *it = item_new(ITEM_DECODE);
    if (!it) return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: out of memory");
    it->g = *g;
    it->dst = out;
    return enqueue(stream, it);
}

static df11_status h_synchronize(df11i_backend *be, void *stream)
{
    host_stream *s = stream;
    if (!s) return DF11_OK;
    pthread_mutex_lock(&s->mu);
    uint64_t seq = s->enqueued;
    pthread_mutex_unlock(&s->mu);
    return stream_wait_seq(s, seq);
}

static df11_status h_mem_info(df11i_backend *be, uint64_t *free_bytes, uint64_t *total_bytes)
{
    *free_bytes = 0;
    *total_bytes = 0;
    return DF11_OK;
}

static double h_decode_ms(df11i_backend *be)
{
    host_ctx *c = be->ctx;
    pthread_mutex_lock(&c->stat_mu);
    double v = c->decode_ms;
    pthread_mutex_unlock(&c->stat_mu);
    return v;
}

static void h_destroy(df11i_backend *be)
{
    host_ctx *c = be->ctx;
    pthread_mutex_destroy(&c->stat_mu);
    free(c);
    free(be);
}

static const df11i_backend_iface host_iface = {
    .name = "host",
    .alloc = h_alloc,
    .free = h_free,
    .host_alloc = h_host_alloc,
    .host_free = h_host_free,
    .copy_h2d = h_copy_h2d,
    .copy_d2h = h_copy_d2h,
    .stream_create = h_stream_create,
    .stream_destroy = h_stream_destroy,
    .event_create = h_event_create,
    .event_destroy = h_event_destroy,
    .event_record = h_event_record,
    .stream_wait = h_stream_wait,
    .event_sync = h_event_sync,
    .plan_size = h_plan_size,
    .decode_group = h_decode_group,
    .matmul_bf16 = df11i_host_matmul_bf16,
    .matmul_fused_takes = df11i_host_matmul_fused_takes,
    .matmul_fused = df11i_host_matmul_fused,
    .matmul_fused_parts = 1, /* one tensor a call: parts gain nothing on the CPU */
    .decode_tensor = df11i_host_decode_tensor,
    .rows_decode = df11i_host_rows_decode, /* runtime/gather_host.c */
    .synchronize = h_synchronize,
    .mem_info = h_mem_info,
    .decode_ms = h_decode_ms,
    .destroy = h_destroy,
};

df11_status df11i_backend_host_create(int n_threads, df11i_backend **out)
{
    *out = NULL;
    df11i_backend *be = calloc(1, sizeof *be);
    host_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return df11i_fail(DF11_ERR_NO_MEMORY, "host backend: out of memory");
    }
    c->n_threads = n_threads;
    pthread_mutex_init(&c->stat_mu, NULL);
    be->iface = &host_iface;
    be->ctx = c;
    be->n_threads = n_threads;
    *out = be;
    return DF11_OK;
}
