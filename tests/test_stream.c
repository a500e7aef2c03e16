/* The staging ring (runtime/stream.c) from inside, on the host backend: payloads taken and
 * given back with df11i_rt_payload_get / put the way the matmul op's fused path takes the
 * parts of a stacked weight (several held at once), with every block read from the file.
 * A payload asked for while the only stage not held is still being read must wait for that
 * read rather than fail with DF11_ERR_BUSY; a model closed while reads are queued and in
 * flight stops its reader cleanly. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "df11/compress.h"
#include "df11/runtime.h"
#include "runtime/internal.h"
#include "tests/testutil.h"

/* Blocks large enough (about 2.5 MB compressed) that a read stays in flight a while. */
#define N_BLOCKS 5
#define ROWS 1024
#define COLS 2048

static char model_path[512];

static void make_model(void)
{
    if (model_path[0]) return;
    uint64_t rng = df11_test_seed() ^ 0x57ea;
    df11_tensor_source t[N_BLOCKS + 1];
    char names[N_BLOCKS][64];
    memset(t, 0, sizeof t);
    t[0] = (df11_tensor_source){
        .name = "model.embed_tokens.weight", .dtype = DF11_DTYPE_BF16, .ndim = 2, .shape = { 8, 64 }
    };
    t[0].data = df11_test_random_bf16(8 * 64, &rng);
    for (int b = 0; b < N_BLOCKS; b++) {
        snprintf(names[b], sizeof names[b], "model.layers.%d.mlp.up_proj.weight", b);
        t[1 + b] = (df11_tensor_source){
            .name = names[b], .dtype = DF11_DTYPE_BF16, .ndim = 2, .shape = { ROWS, COLS }
        };
        t[1 + b].data = df11_test_random_bf16((size_t)ROWS * COLS, &rng);
    }
    snprintf(model_path, sizeof model_path, "%s/stream.df11", df11_test_tmpdir());
    df11_compress_options co = { 0 };
    df11_status s = df11_compress_tensors(model_path, t, N_BLOCKS + 1, NULL, 0, &co, NULL);
    ck_assert_msg(s == DF11_OK, "compress: %s %s", df11_strerror(s), df11_last_error_detail());
    for (int i = 0; i <= N_BLOCKS; i++) free((void *)t[i].data);
}

/* Every block read from the file (no host budget), through `stages` staging buffers: the
 * smallest device budget that opens keeps none on the device. */
static df11_model *open_streamed(uint32_t stages)
{
    make_model();
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = DF11_BACKEND_HOST;
    o.arena_slots = 0;
    o.n_threads = 2;
    o.stream_from_file = 1;
    o.staging_slots = stages;
    o.memory_limit = 1ull << 40;
    df11_plan p;
    ck_assert_int_eq(df11_model_plan(model_path, &o, &p, NULL, 0), DF11_OK);
    uint64_t lo = 1, hi = p.device_bytes;
    while (lo < hi) {
        o.memory_limit = lo + (hi - lo) / 2;
        if (df11_model_plan(model_path, &o, &p, NULL, 0) == DF11_OK)
            hi = o.memory_limit;
        else
            lo = o.memory_limit + 1;
    }
    o.memory_limit = lo;
    ck_assert_int_eq(df11_model_plan(model_path, &o, &p, NULL, 0), DF11_OK);
    ck_assert_uint_eq(p.blocks_file, N_BLOCKS);
    df11_model *m = NULL;
    df11_status s = df11_model_open(model_path, &o, &m);
    ck_assert_msg(s == DF11_OK, "open: %s %s", df11_strerror(s), df11_last_error_detail());
    return m;
}

/* Stages being filled by the reader; *queued: of them, those it has not started yet. */
static uint32_t stages_reading(df11_model *m, uint32_t *queued)
{
    rt_ring *r = &m->ring;
    pthread_mutex_lock(r->mu);
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n; i++) n += r->stages[i].state == STAGE_READING;
    *queued = r->q_len;
    pthread_mutex_unlock(r->mu);
    return n;
}

START_TEST(test_get_waits_for_read_in_flight)
{
    /* Two stages: block 0 held (its get prefetched block 1 into the other stage); block 2
     * asked for while block 1's read is in flight. The read ends, nothing holds block 1's
     * stage, so block 2 takes it. Repeated, since the read may also end first. */
    df11_model *m = open_streamed(2);
    int hit = 0;
    for (int round = 0; round < 60; round++) {
        const uint32_t a = m->block_group[0], c = m->block_group[2];
        const void *pa = NULL, *pc = NULL;
        ck_assert_int_eq(df11i_rt_payload_get(m, a, NULL, &pa), DF11_OK);
        uint32_t queued;
        hit += stages_reading(m, &queued) > queued;
        df11_status s = df11i_rt_payload_get(m, c, NULL, &pc);
        ck_assert_msg(s == DF11_OK, "round %d: get while a read is in flight: %s %s", round,
                      df11_strerror(s), df11_last_error_detail());
        ck_assert_ptr_nonnull(pc);
        ck_assert_ptr_ne(pa, pc);
        /* both payloads are whole: each decodes to its block's weights */
        ck_assert_int_eq(df11_group_verify(m->file, a, pa, m->groups[a].payload_size), DF11_OK);
        ck_assert_int_eq(df11_group_verify(m->file, c, pc, m->groups[c].payload_size), DF11_OK);
        ck_assert_int_eq(df11i_rt_payload_put(m, c, NULL), DF11_OK);
        ck_assert_int_eq(df11i_rt_payload_put(m, a, NULL), DF11_OK);
        /* the next round starts with nothing read ahead */
        ck_assert_int_eq(df11i_rt_payload_get(m, m->block_group[3], NULL, &pc), DF11_OK);
        ck_assert_int_eq(df11i_rt_payload_put(m, m->block_group[3], NULL), DF11_OK);
        while (stages_reading(m, &queued)) usleep(100);
    }
    printf("a read was in flight at the second get in %d of 60 rounds\n", hit);
    df11_model_close(m);
}
END_TEST

START_TEST(test_close_while_reading)
{
    /* Close with reads queued and one in flight: the reader finishes the one it has, leaves
     * the rest, and nothing it writes outlives the model (ASan, TSan). */
    for (uint32_t stages = 2; stages <= 3; stages++) {
        df11_model *m = open_streamed(stages);
        for (uint32_t b = 0; b < N_BLOCKS; b++) df11i_rt_payload_prefetch(m, m->block_group[b]);
        uint32_t queued;
        ck_assert_uint_gt(stages_reading(m, &queued), 0);
        df11_model_close(m);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("host");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_get_waits_for_read_in_flight);
    tcase_add_test(tc, test_close_while_reading);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
