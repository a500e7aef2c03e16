/* df11-run: generate text with a Llama-family model whose weights df11 serves, compressed
 * (MODEL.df11) or as plain BF16 (--bf16 SRC), on the host or a CUDA GPU; or benchmark
 * prefill and decode of both (--bench). A .df11 file's embedding and lm_head stay
 * compressed (DF11_NONLAYER_COMPRESSED) where the engine reads them through the ops, and
 * are decoded resident at open for --matmul engine or --nonlayer resident. A thin main()
 * over dfl.h and the public df11 API: it includes no private df11 header and no CUDA
 * header.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <df11.h>

#include "dfl.h"
#include "sampler.h"
#include "tokenizer.h"
#include "tokenizer_json.h"

#define PROG "df11-run"
/* The most positions any flag may ask for (--ctx, -n, a --bench length): 16 M, far past
 * any context a model is trained for, and small enough that sums of them fit an int. */
#define MAX_POSITIONS (1 << 24)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " MODEL.df11 [options]        generate from compressed weights\n"
            "       " PROG " --bf16 SRC [options]        the same engine on BF16 weights (a\n"
            "                                           .safetensors file or a HF folder)\n"
            "       " PROG
            " MODEL.df11 --bf16 SRC --bench[=N,N..]   prefill and decode speed of both\n"
            "\n"
            "  -p, --prompt TEXT       prompt (needs a tokenizer); default: BOS alone\n"
            "      --chat              wrap the prompt as a user turn in the model's chat\n"
            "                          format (Llama-3, ChatML, [INST]; tokenizer.json only)\n"
            "      --system TEXT       with --chat: a system turn first\n"
            "      --tokens IDS        prompt as token ids, e.g. 1,403,407\n"
            "  -n, --steps N           new tokens to generate (default 128); stops early at EOS\n"
            "  -t, --tokenizer FILE    a Hugging Face tokenizer.json (or its folder) or a\n"
            "                          llama2.c tokenizer.bin;\n"
            "                          default: tokenizer.json beside the model, if any;\n"
            "                          without one, ids are printed\n"
            "      --temperature T     0 = greedy (default)\n"
            "      --top-p P           nucleus sampling mass in (0, 1] (default 0.9; 1 = off)\n"
            "      --seed N            sampling seed (default: from the clock)\n"
            "      --device cpu|cuda   default: cuda when built with it and a GPU is present\n"
            "      --devices LIST      CUDA ordinals, e.g. 0,1: the layers split evenly over\n"
            "                          them, one model per GPU (.df11 files; budgets per GPU)\n"
            "      --threads N         host threads (default: all cores)\n"
            "      --ctx N             KV cache positions (default: max_position_embeddings)\n"
            "      --slots K           df11 arena slots (default: the runtime's); 0: none, for\n"
            "                          the op path alone (frees K decoded blocks of memory)\n"
            "      --vram-budget SIZE  device memory the weights may take (K/M/G suffixes):\n"
            "                          blocks that do not fit are streamed from pinned RAM\n"
            "      --staging N         device buffers streamed blocks are copied into (2..8,\n"
            "                          default 3; fewer leave room for more blocks)\n"
            "      --host-budget SIZE  pinned RAM for streamed blocks; with it, blocks that fit\n"
            "                          neither budget are read from the file on every pass\n"
            "                          (with --bf16 SRC.df11, a file written by df11-compress\n"
            "                          --codec raw, the BF16 baseline streams the same way)\n"
            "      --matmul WHO        linear layers by df11's matmul op with q+k+v and\n"
            "                          gate+up stacked (op, the default), one op call per\n"
            "                          weight (op-separate), or the engine's own GEMM on\n"
            "                          decoded blocks (engine)\n"
            "      --attention KIND    CUDA attention: the context split over blocks for\n"
            "                          decode, flash-style tiles on the tensor cores for\n"
            "                          longer passes (auto, the default); or one kernel\n"
            "                          always, to compare them: naive (a block per head and\n"
            "                          token), tiled (FP32 tiles), mma (BF16 tensor-core\n"
            "                          tiles) or split (a prompt then goes through 8\n"
            "                          tokens a pass; --bench takes at most 8)\n"
            "      --no-pdl            launch the op's fused kernel and the engine's kernels\n"
            "                          plainly, not with programmatic dependent launch (to\n"
            "                          measure what it buys)\n"
            "      --nonlayer WHERE    a .df11 file's embedding and lm_head: kept compressed\n"
            "                          (compressed, the default on the op paths) or decoded at\n"
            "                          open (resident, the default and only choice for\n"
            "                          --matmul engine)\n"
            "      --json              print one JSON object on stdout\n"
            "      --logits            with --json: the last step's logits (else a checksum)\n"
            "      --bench[=LIST]      time prefill of each N in LIST (default 512,4096) and\n"
            "                          decode at batch 1; with MODEL.df11 and --bf16 SRC\n"
            "                          both, then df11's rates and weights against BF16's\n"
            "      --bench-decode N    decode steps per bench row (default 128)\n"
            "  -q, --quiet             no generated text or summary on a terminal (with --json)\n"
            "  -h, --help, -V, --version\n");
}

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

/* Flag values: the whole argument must be a number in range, else a usage error (exit 2)
 * that names the flag and the range. */
static int parse_int(const char *s, const char *what, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        die(2, "invalid %s '%s' (an integer from %ld to %ld)", what, s, lo, hi);
    return (int)v;
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    /* strtoull takes "-1" as 2^64 - 1: a sign is refused outright. */
    if (errno || *end || end == s || strchr(s, '-'))
        die(2, "invalid %s '%s' (an unsigned 64-bit integer)", what, s);
    return (uint64_t)v;
}

/* A byte count: digits with an optional K, M, G or T suffix (powers of 1024). */
static uint64_t parse_size(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    if (*end && !end[1]) {
        const char *units = "KMGT", *u = strchr(units, end[0] & ~0x20);
        if (u && *u) {
            shift = 10 * (int)(u - units + 1);
            end++;
        }
    }
    if (errno || *end || end == s || strchr(s, '-') || v == 0 || v > (UINT64_MAX >> shift))
        die(2, "invalid %s '%s' (a positive size, e.g. 6G or 512M)", what, s);
    return (uint64_t)v << shift;
}

/* A float in [lo, hi] (lo excluded when open_lo). */
static float parse_float(const char *s, const char *what, double lo, double hi, int open_lo)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(open_lo ? v > lo : v >= lo) || !(v <= hi))
        die(2, "invalid %s '%s' (a number %s %g and at most %g)", what, s,
            open_lo ? "above" : "from", lo, hi);
    return (float)v;
}

/* "1,2,3" -> values in [lo, hi]; returns the count. */
static int parse_list(const char *s, int **out, const char *what, long lo, long hi)
{
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    int *v = malloc(n * sizeof *v);
    char *copy = strdup(s), *save = NULL;
    if (!v || !copy) die(1, "out of memory");
    int k = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        v[k++] = parse_int(tok, what, lo, hi);
    free(copy);
    if (k == 0) die(2, "empty %s list", what);
    *out = v;
    return k;
}

typedef struct run_opts {
    const char *model_path, *bf16_path, *prompt, *tokens, *tokenizer_path, *system;
    char *found_tokenizer; /* tokenizer.json found beside the model (owned) */
    int steps, threads, ctx, slots, json, logits, quiet, bench, bench_decode, no_pdl, chat;
    int *token_ids, n_token_ids;   /* --tokens, parsed */
    int *bench_lens, n_bench_lens; /* --bench=LIST, parsed */
    float temperature, top_p;
    uint64_t seed;
    dfl_device device;
    dfl_matmul matmul;
    dfl_attention attention;
    int nonlayer; /* --nonlayer: 0 = not given, else 1 + a df11_nonlayer_policy */
    uint64_t vram_budget, host_budget; /* 0: not given */
    int staging;                       /* --staging, 0: the runtime's default */
    int *devices, n_devices;           /* --devices, parsed; 0: one device */
} run_opts;

/* An open model and an engine over it; with --devices, one model per GPU, each serving its
 * range of blocks (model and provider are the first GPU's). */
typedef struct session {
    df11_model *model;
    df11_provider provider;
    int n_stages; /* models: 1, or one per --devices entry */
    df11_model *stage_model[DFL_MAX_STAGES];
    df11_provider stage_provider[DFL_MAX_STAGES];
    dfl_stage stages[DFL_MAX_STAGES];
    dfl_config cfg;
    dfl_engine *engine;
    int is_bf16;
    df11_nonlayer_policy nonlayer; /* what the model was opened with */
    double open_ms;
} session;

static void session_close(session *s)
{
    dfl_destroy(s->engine);
    for (int i = 1; i < s->n_stages; i++) df11_model_close(s->stage_model[i]);
    df11_model_close(s->model);
    memset(s, 0, sizeof *s);
}

static int is_df11_path(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && strcmp(path + n - 5, ".df11") == 0;
}

/* Opens stage i's model (i = 0: s->model): on --devices' i-th GPU and serving its range of
 * blocks (s->stages[i]) when there are several. */
/* A .df11 file with its own lm_head beside model.embed_tokens (not tied). */
static int untied_embedding(const char *path)
{
    df11_file *f;
    if (!is_df11_path(path) || df11_file_open(path, &f) != DF11_OK) return 0;
    uint32_t t;
    const int untied = df11_file_find_tensor(f, "model.embed_tokens.weight", &t) == DF11_OK &&
                       df11_file_find_tensor(f, "lm_head.weight", &t) == DF11_OK;
    df11_file_close(f);
    return untied;
}

static void model_open(session *s, const run_opts *o, const char *path, int i)
{
    df11_model_options mo;
    df11_model_options_init(&mo);
    mo.backend = o->device == DFL_DEVICE_CUDA ? DF11_BACKEND_CUDA : DF11_BACKEND_HOST;
    if (o->n_devices) {
        mo.device = o->devices[i];
        mo.first_block = (uint32_t)s->stages[i].first_layer;
        mo.block_count = (uint32_t)s->stages[i].n_layers;
    }
    if (o->slots) mo.arena_slots = o->slots < 0 ? 0 : (uint32_t)o->slots;
    if (o->threads) mo.n_threads = o->threads;
    mo.matmul_plain_launch = o->no_pdl;
    mo.nonlayer = s->nonlayer;
    if (o->vram_budget) {
        /* streamed blocks: pinned RAM as needed, or up to --host-budget and then the file */
        mo.memory_limit = o->vram_budget;
        mo.host_budget = o->host_budget ? o->host_budget : UINT64_MAX;
        mo.stream_from_file = o->host_budget != 0;
        mo.staging_slots = (uint32_t)o->staging;
        /* the embedding, read by the row gather only, waits in pinned RAM too (unless lm_head
         * is the same tensor): a token needs one row of it */
        if (s->nonlayer == DF11_NONLAYER_COMPRESSED && untied_embedding(path))
            mo.host_gather_tensor = "model.embed_tokens.weight";
    }
    double t0 = now_ms();
    /* a BF16 baseline in the df11 container (--codec raw) opens like any .df11 file */
    df11_model **m = &s->stage_model[i];
    df11_status st = s->is_bf16 && !is_df11_path(path) ? df11_model_open_bf16(path, &mo, m)
                                                       : df11_model_open(path, &mo, m);
    if (st != DF11_OK)
        die(1, "cannot open '%s'%s: %s%s%s", path, o->n_devices ? " (a GPU's layers)" : "",
            df11_strerror(st), *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
    s->open_ms += now_ms() - t0;
    if ((st = df11_model_provider(*m, &s->stage_provider[i])) != DF11_OK)
        die(1, "'%s': provider: %s", path, df11_strerror(st));
    s->stages[i].provider = &s->stage_provider[i];
    s->stages[i].device = o->n_devices ? o->devices[i] : -1;
    if (i == 0) {
        s->model = *m;
        s->provider = s->stage_provider[0];
    }
}

/* --devices: the layers of config.json split evenly over the GPUs, read from the file's
 * index before any model is opened. */
static void stages_plan(session *s, const run_opts *o, const char *path)
{
    s->n_stages = o->n_devices ? o->n_devices : 1;
    if (!o->n_devices) return;
    df11_file *f;
    df11_status st = df11_file_open(path, &f);
    if (st != DF11_OK)
        die(1, "cannot open '%s': %s%s%s", path, df11_strerror(st),
            *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
    size_t len;
    const char *json = df11_file_metadata(f, &len);
    char err[512];
    dfl_config cfg;
    if (dfl_config_parse(json, len, &cfg, err, sizeof err) != 0) die(1, "'%s': %s", path, err);
    df11_file_close(f);
    if (cfg.n_layers < o->n_devices)
        die(2, "--devices: %d layers cannot be split over %d GPUs", cfg.n_layers, o->n_devices);
    for (int i = 0; i < o->n_devices; i++) {
        const int first = (int)((int64_t)i * cfg.n_layers / o->n_devices),
                  end = (int)((int64_t)(i + 1) * cfg.n_layers / o->n_devices);
        s->stages[i] = (dfl_stage){ NULL, o->devices[i], first, end - first };
    }
}

static void session_open(session *s, const run_opts *o, int bf16, int max_seq, int max_batch)
{
    memset(s, 0, sizeof *s);
    s->is_bf16 = bf16;
    const char *path = bf16 ? o->bf16_path : o->model_path;
    /* The embedding and lm_head stay compressed where the engine reads them through the
     * ops (row gather, matmul); the engine path reads lm_head as a view, so needs them
     * resident (main() refuses --nonlayer compressed with it). A BF16 model holds
     * everything resident whatever the policy. */
    int want_compressed =
        o->nonlayer ? o->nonlayer - 1 == DF11_NONLAYER_COMPRESSED : o->matmul != DFL_MATMUL_ENGINE;
    s->nonlayer = !bf16 && want_compressed ? DF11_NONLAYER_COMPRESSED : DF11_NONLAYER_RESIDENT;
    stages_plan(s, o, path);
    model_open(s, o, path, 0);
    if (s->nonlayer == DF11_NONLAYER_COMPRESSED &&
        !(dfl_provider_has_matmul(&s->provider) && dfl_provider_has_gather(&s->provider))) {
        /* A library whose provider lacks the ops: only resident tensors can be read. */
        if (o->nonlayer)
            die(1, "'%s': --nonlayer compressed: the provider has no row gather or matmul op",
                path);
        df11_model_close(s->model);
        s->nonlayer = DF11_NONLAYER_RESIDENT;
        model_open(s, o, path, 0);
    }
    for (int i = 1; i < s->n_stages; i++) model_open(s, o, path, i);

    size_t len;
    const char *json = df11_model_config(s->model, &len);
    char err[512];
    df11_status st;
    if (dfl_config_parse(json, len, &s->cfg, err, sizeof err) != 0) die(1, "'%s': %s", path, err);

    dfl_options lo;
    dfl_options_init(&lo);
    lo.device = o->device;
    lo.n_threads = o->threads;
    lo.max_seq = max_seq ? max_seq : (o->ctx ? o->ctx : s->cfg.max_pos);
    lo.max_batch = max_batch;
    lo.matmul = o->matmul;
    lo.attention = o->attention;
    lo.plain_launch = o->no_pdl;
    st = o->n_devices ? dfl_create_split(&s->cfg, s->stages, s->n_stages, &lo, &s->engine)
                      : dfl_create(&s->cfg, &s->provider, &lo, &s->engine);
    if (st != DF11_OK) die(1, "'%s': %s: %s", path, df11_strerror(st), dfl_create_error());
    /* Fewer blocks than layers fails in dfl_create; more is a model the config cuts
     * short: it runs, on the first layers only, so say so. */
    uint32_t blocks = s->provider.n_blocks ? s->provider.n_blocks(s->provider.ctx) : 0;
    if (blocks > (uint32_t)s->cfg.n_layers)
        fprintf(stderr,
                PROG ": warning: '%s': config.json has %d layers but the weights have "
                     "%u blocks; running the first %d\n",
                path, s->cfg.n_layers, blocks, s->cfg.n_layers);
}

/* The exponent code of the model's matrices, for --json and the bench table: "bf16" for a
 * BF16 model, else "fixed8", "fixed", "huffman" or "mixed" from the file's 2-D BF16 tensors (1-D
 * norms are Huffman-coded in a fixed-codec file too, so they do not count). */
static const char *weights_codec(const session *s)
{
    const df11_file *f = df11_model_file(s->model);
    if (!f) return "bf16";
    int fixed = 0, fixed8 = 0, huffman = 0;
    for (uint32_t t = 0; t < df11_file_n_tensors(f); t++) {
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        if (!ti || ti->dtype != DF11_DTYPE_BF16 || ti->ndim != 2) continue;
        fixed |= ti->codec == DF11_CODEC_EXP_FIXED;
        fixed8 |= ti->codec == DF11_CODEC_EXP_FIXED8;
        huffman |= ti->codec == DF11_CODEC_EXP_HUFFMAN;
    }
    return fixed + fixed8 + huffman > 1 ? "mixed"
           : fixed8                     ? "fixed8"
           : fixed                      ? "fixed"
           : huffman                    ? "huffman"
                                        : "raw";
}

static const char *matmul_name(const session *s)
{
    switch (dfl_matmul_used(s->engine)) {
    case DFL_MATMUL_OP: return "op";
    case DFL_MATMUL_OP_SEPARATE: return "op-separate";
    default: return "engine";
    }
}

/* Stage i's model's stats (zeros where they cannot be had). */
static df11_model_stats stage_stats(const session *s, int i)
{
    df11_model_stats ms;
    memset(&ms, 0, sizeof ms);
    ms.size = sizeof ms;
    if (df11_model_stats_get(s->stage_model[i], &ms) != DF11_OK) memset(&ms, 0, sizeof ms);
    return ms;
}

/* The stats of the session's models added up (one model, or one per GPU); the arena's
 * slot count and the slots' blocks are the first model's. */
static df11_model_stats stats_of(const session *s)
{
    df11_model_stats t = stage_stats(s, 0);
    for (int i = 1; i < s->n_stages; i++) {
        const df11_model_stats m = stage_stats(s, i);
        t.compressed_bytes += m.compressed_bytes;
        t.bf16_bytes += m.bf16_bytes;
        t.arena_bytes += m.arena_bytes;
        t.resident_bytes += m.resident_bytes;
        t.metadata_bytes += m.metadata_bytes;
        t.pool_reserved += m.pool_reserved;
        t.decodes += m.decodes;
        t.decode_ms += m.decode_ms;
        t.blocks_device += m.blocks_device;
        t.blocks_host += m.blocks_host;
        t.blocks_file += m.blocks_file;
        t.host_tier_bytes += m.host_tier_bytes;
        t.file_tier_bytes += m.file_tier_bytes;
        t.pinned_bytes += m.pinned_bytes;
        t.staging_ring_bytes += m.staging_ring_bytes;
        t.streamed_h2d_bytes += m.streamed_h2d_bytes;
        t.streamed_file_bytes += m.streamed_file_bytes;
        t.fetches += m.fetches;
        t.file_read_ms += m.file_read_ms;
        t.stall_ms += m.stall_ms;
    }
    return t;
}

/* Groups the runtime has decoded so far (arena decodes): per decode step, 0 when every
 * product came from the fused kernel, one per block when each block was decoded. */
static uint64_t model_decodes(const session *s) { return stats_of(s).decodes; }

static const char *nonlayer_name(const session *s)
{
    return s->nonlayer == DF11_NONLAYER_COMPRESSED ? "compressed" : "resident";
}

/* What the weights take, embedding and lm_head included: compressed payloads plus the
 * groups kept decoded (a .df11 file's non-layer groups under RESIDENT, all of a BF16
 * model); arena and the op's scratch are not weights. */
static uint64_t weights_bytes(const df11_model_stats *ms)
{
    return ms->compressed_bytes + ms->resident_bytes;
}

static cJSON *memory_json(const session *s)
{
    const df11_model_stats ms = stats_of(s);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "nonlayer", nonlayer_name(s));
    {
        cJSON_AddNumberToObject(m, "weights_bytes", (double)weights_bytes(&ms));
        cJSON_AddNumberToObject(m, "weights_vs_bf16",
                                ms.bf16_bytes ? (double)weights_bytes(&ms) / (double)ms.bf16_bytes
                                              : 0.0);
        cJSON_AddNumberToObject(m, "weights_compressed_bytes", (double)ms.compressed_bytes);
        cJSON_AddNumberToObject(m, "weights_bf16_bytes", (double)ms.bf16_bytes);
        cJSON_AddNumberToObject(m, "arena_bytes", (double)ms.arena_bytes);
        cJSON_AddNumberToObject(m, "arena_slots", ms.arena_slots);
        cJSON_AddNumberToObject(m, "resident_bytes", (double)ms.resident_bytes);
        cJSON_AddNumberToObject(m, "metadata_bytes", (double)ms.metadata_bytes);
        cJSON_AddNumberToObject(m, "decodes", (double)ms.decodes);
        cJSON_AddNumberToObject(m, "decode_ms", ms.decode_ms);
    }
    cJSON_AddNumberToObject(m, "kv_cache_bytes", (double)dfl_kv_bytes(s->engine));
    cJSON_AddNumberToObject(m, "scratch_bytes", (double)dfl_scratch_bytes(s->engine));
    if (s->n_stages > 1) { /* --devices: what each GPU holds */
        cJSON *devs = cJSON_AddArrayToObject(m, "devices");
        for (int i = 0; i < s->n_stages; i++) {
            const df11_model_stats d = stage_stats(s, i);
            cJSON *g = cJSON_CreateObject();
            cJSON_AddNumberToObject(g, "device", s->stages[i].device);
            cJSON_AddNumberToObject(g, "first_block", s->stages[i].first_layer);
            cJSON_AddNumberToObject(g, "blocks", s->stages[i].n_layers);
            cJSON_AddNumberToObject(g, "weights_bytes", (double)weights_bytes(&d));
            cJSON_AddNumberToObject(g, "arena_bytes", (double)d.arena_bytes);
            cJSON_AddNumberToObject(g, "pool_reserved_bytes", (double)d.pool_reserved);
            cJSON_AddNumberToObject(g, "kv_cache_bytes", (double)dfl_stage_kv_bytes(s->engine, i));
            cJSON_AddNumberToObject(g, "scratch_bytes",
                                    (double)dfl_stage_scratch_bytes(s->engine, i));
            cJSON_AddItemToArray(devs, g);
        }
    }
    return m;
}

static void print_memory(FILE *f, const session *s)
{
    const df11_model_stats ms = stats_of(s);
    if (!s->is_bf16)
        /* Non-layer groups kept resident are held decoded, so they count at BF16 size. */
        fprintf(f,
                "memory (%s, non-layer %s): weights %.2f MiB (%.2f compressed + %.2f resident "
                "decoded) vs %.2f MiB as BF16 = %.1f%%, arena %.2f MiB (%u slots), KV cache "
                "%.2f MiB\n",
                weights_codec(s), nonlayer_name(s), mib(weights_bytes(&ms)),
                mib(ms.compressed_bytes), mib(ms.resident_bytes), mib(ms.bf16_bytes),
                ms.bf16_bytes ? 100.0 * (double)weights_bytes(&ms) / (double)ms.bf16_bytes : 0.0,
                mib(ms.arena_bytes), ms.arena_slots, mib(dfl_kv_bytes(s->engine)));
    else
        fprintf(f, "memory: weights %.2f MiB BF16, KV cache %.2f MiB\n",
                mib(ms.bf16_bytes ? ms.bf16_bytes : ms.resident_bytes),
                mib(dfl_kv_bytes(s->engine)));
    for (int i = 0; s->n_stages > 1 && i < s->n_stages; i++) {
        const df11_model_stats d = stage_stats(s, i);
        fprintf(f,
                "  GPU %d, layers %d..%d: weights %.2f MiB, arena %.2f MiB, pool %.2f MiB, KV "
                "cache %.2f MiB, scratch %.2f MiB\n",
                s->stages[i].device, s->stages[i].first_layer,
                s->stages[i].first_layer + s->stages[i].n_layers - 1, mib(weights_bytes(&d)),
                mib(d.arena_bytes), mib(d.pool_reserved), mib(dfl_stage_kv_bytes(s->engine, i)),
                mib(dfl_stage_scratch_bytes(s->engine, i)));
    }
}

/* Streaming between two stats snapshots over `ms_elapsed` ms: what each link carried. */
typedef struct stream_window {
    uint64_t h2d_bytes, file_bytes;
    double seconds, file_read_ms, stall_ms;
} stream_window;

static stream_window stream_since(const df11_model_stats *a, const df11_model_stats *b,
                                  double ms_elapsed)
{
    return (stream_window){ .h2d_bytes = b->streamed_h2d_bytes - a->streamed_h2d_bytes,
                            .file_bytes = b->streamed_file_bytes - a->streamed_file_bytes,
                            .seconds = ms_elapsed / 1e3,
                            .file_read_ms = b->file_read_ms - a->file_read_ms,
                            .stall_ms = b->stall_ms - a->stall_ms };
}

static int streams(const df11_model_stats *ms) { return ms->blocks_host + ms->blocks_file > 0; }

/* Where the blocks live (nothing when no block streams). */
/* A "Vm...:" line of /proc/self/status in bytes (the kernel's view of locked or pinned
 * pages, beside the runtime's own count), or -1. */
static double proc_status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double kib = -1;
    const size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            kib = strtod(line + n + 1, NULL);
            break;
        }
    fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

static void print_tiers(FILE *f, const df11_model_stats *ms)
{
    if (ms->io_note) fprintf(f, "note: %s\n", ms->io_note);
    if (ms->host_memory_note) fprintf(f, "note: %s\n", ms->host_memory_note);
    if (!streams(ms)) return;
    fprintf(f,
            "tiers: %u blocks in VRAM, %u in pinned RAM (%.1f MiB), %u read from the file "
            "(%.1f MiB); pinned %.1f MiB (the kernel counts VmLck %.1f MiB, VmPin %.1f MiB)\n",
            ms->blocks_device, ms->blocks_host, mib(ms->host_tier_bytes), ms->blocks_file,
            mib(ms->file_tier_bytes), mib(ms->pinned_bytes), proc_status_bytes("VmLck") / 1048576,
            proc_status_bytes("VmPin") / 1048576);
}

/* What the links carried over a window of `steps` passes (`what`: "decode", "prefill");
 * pinned_gbps: the pinned copy bandwidth measured in this run, or <= 0. */
static void print_streamed(FILE *f, const char *what, const stream_window *w, int steps,
                           double pinned_gbps)
{
    if (w->seconds <= 0 || !w->h2d_bytes) return;
    const double gbps = w->h2d_bytes / w->seconds / 1e9;
    fprintf(f, "%s streamed %.1f MiB/pass, host->device %.2f GB/s", what, mib(w->h2d_bytes) / steps,
            gbps);
    if (pinned_gbps > 0)
        fprintf(f, " (%.0f%% of a pinned copy's %.1f GB/s)", 100.0 * gbps / pinned_gbps,
                pinned_gbps);
    if (w->file_bytes)
        fprintf(f, ", file %.2f GB/s (reads busy %.0f%%)", w->file_bytes / w->seconds / 1e9,
                100.0 * w->file_read_ms / 1e3 / w->seconds);
    fprintf(f, ", stalls %.1f ms\n", w->stall_ms);
}

static cJSON *tiers_json(const df11_model_stats *ms, const stream_window *w, int steps,
                         double pinned_gbps)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "blocks_device", ms->blocks_device);
    cJSON_AddNumberToObject(t, "blocks_host", ms->blocks_host);
    cJSON_AddNumberToObject(t, "blocks_file", ms->blocks_file);
    cJSON_AddNumberToObject(t, "host_tier_bytes", (double)ms->host_tier_bytes);
    cJSON_AddNumberToObject(t, "file_tier_bytes", (double)ms->file_tier_bytes);
    cJSON_AddNumberToObject(t, "pinned_bytes", (double)ms->pinned_bytes);
    cJSON_AddNumberToObject(t, "vm_lck_bytes", proc_status_bytes("VmLck"));
    cJSON_AddNumberToObject(t, "vm_pin_bytes", proc_status_bytes("VmPin"));
    if (w && w->seconds > 0) {
        cJSON_AddNumberToObject(t, "h2d_bytes_per_token", (double)w->h2d_bytes / steps);
        cJSON_AddNumberToObject(t, "h2d_gbps", w->h2d_bytes / w->seconds / 1e9);
        cJSON_AddNumberToObject(t, "file_gbps", w->file_bytes / w->seconds / 1e9);
        cJSON_AddNumberToObject(t, "stall_ms", w->stall_ms);
    }
    if (pinned_gbps > 0) cJSON_AddNumberToObject(t, "pinned_h2d_gbps", pinned_gbps);
    return t;
}

static uint64_t fnv1a(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The prompt's tokenizer: a Hugging Face tokenizer.json (hf) or llama2.c's tokenizer.bin. */
typedef struct text_tokenizer {
    hf_tokenizer *hf;
    tokenizer bin;
} text_tokenizer;

/* A .json name (or a regular file that starts with '{') is a tokenizer.json; anything else
 * goes to the tokenizer.bin loader, which refuses a FIFO without blocking on it. */
static int is_tokenizer_json(const char *path)
{
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0) return 1;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    int c = f ? fgetc(f) : EOF;
    while (c == ' ' || c == '\n' || c == '\r' || c == '\t') c = fgetc(f);
    if (f) fclose(f);
    return c == '{';
}

static void text_tokenizer_load(text_tokenizer *tt, const char *path, const dfl_config *c)
{
    char err[512];
    memset(tt, 0, sizeof *tt);
    if (is_tokenizer_json(path)) {
        if (hf_tokenizer_load(&tt->hf, path, err, sizeof err) != 0) die(1, "%s", err);
        if (hf_tokenizer_vocab_size(tt->hf) > c->vocab_size)
            die(1, "'%s': %d tokens, more than the model's vocab_size %d", path,
                hf_tokenizer_vocab_size(tt->hf), c->vocab_size);
        return;
    }
    if (tokenizer_load(&tt->bin, path, c->vocab_size, err, sizeof err) != 0) die(1, "%s", err);
    if (c->bos_id >= 0) tt->bin.bos_id = c->bos_id;
    if (c->eos_id >= 0) tt->bin.eos_id = c->eos_id;
}

static void text_tokenizer_free(text_tokenizer *tt)
{
    if (tt->hf)
        hf_tokenizer_free(tt->hf);
    else
        tokenizer_free(&tt->bin);
}

static int text_tokenizer_bos(const text_tokenizer *tt)
{
    return tt->hf ? hf_tokenizer_bos(tt->hf) : tt->bin.bos_id;
}

/* The bytes of `id` after `prev` (*n of them). A tokenizer.json decoder treats the token
 * after a BOS that is not shown as the first. */
static const char *text_tokenizer_decode(const text_tokenizer *tt, int prev, int id, char byte[2],
                                         size_t *n)
{
    if (tt->hf)
        return hf_tokenizer_decode(tt->hf, prev == hf_tokenizer_bos(tt->hf) ? -1 : prev, id, n);
    const char *s = tokenizer_decode(&tt->bin, prev, id, byte);
    *n = strlen(s);
    return s;
}

/* tokenizer.json beside the model: in the --bf16 folder, or the folder of the file. */
static char *find_tokenizer(const char *model)
{
    struct stat st;
    if (!model || stat(model, &st) != 0) return NULL;
    char *p = malloc(strlen(model) + sizeof "/tokenizer.json");
    if (!p) die(1, "out of memory");
    strcpy(p, model);
    if (!S_ISDIR(st.st_mode)) {
        char *slash = strrchr(p, '/');
        if (slash)
            slash[1] = 0;
        else
            p[0] = 0;
        strcat(p, "tokenizer.json");
    } else {
        strcat(p, "/tokenizer.json");
    }
    if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) return p;
    free(p);
    return NULL;
}

/* Appends the text of `id` to a growing buffer and echoes it; without a tokenizer the
 * text is the ids, separated by spaces. */
static void text_append(char **buf, size_t *len, size_t *cap, const text_tokenizer *tok, int prev,
                        int id, FILE *echo)
{
    static int echoed;
    char tmp[32], byte[2];
    const char *piece;
    size_t n;
    if (tok) {
        piece = text_tokenizer_decode(tok, prev, id, byte, &n);
    } else {
        snprintf(tmp, sizeof tmp, " %d", id);
        piece = tmp;
        n = strlen(tmp);
    }
    if (echo) {
        if (!tok && !echoed)
            fwrite(piece + 1, 1, n - 1, echo);
        else
            fwrite(piece, 1, n, echo);
        fflush(echo);
        echoed = 1;
    }
    if (!tok && *len == 0) {
        piece++;
        n--;
    }
    if (*len + n + 1 > *cap) {
        size_t cap2 = (*len + n + 1) * 2;
        char *grown = realloc(*buf, cap2);
        if (!grown) die(1, "out of memory");
        *buf = grown;
        *cap = cap2;
    }
    memcpy(*buf + *len, piece, n);
    *len += n;
    (*buf)[*len] = 0;
}

static int generate(const run_opts *o)
{
    int bf16 = o->model_path == NULL;
    session s;
    session_open(&s, o, bf16, 0, 0);
    const dfl_config *c = &s.cfg;
    const int max_seq = dfl_max_seq(s.engine);

    text_tokenizer tok, *tk = NULL;
    char err[512];
    if (o->tokenizer_path) {
        text_tokenizer_load(&tok, o->tokenizer_path, c);
        tk = &tok;
    }
    if (o->chat && (!tk || !tk->hf || hf_tokenizer_chat_format(tk->hf) == HF_CHAT_NONE))
        die(2, "--chat needs a tokenizer.json whose chat format is known (Llama-3 headers, "
               "ChatML or [INST])");

    int *prompt, n_prompt;
    int bos = c->bos_id >= 0 ? c->bos_id : 1;
    if (o->tokens) {
        n_prompt = o->n_token_ids;
        prompt = malloc((size_t)n_prompt * sizeof *prompt);
        if (!prompt) die(1, "out of memory");
        memcpy(prompt, o->token_ids, (size_t)n_prompt * sizeof *prompt);
    } else if (o->prompt && o->prompt[0]) {
        /* The prompt must leave a position to generate into: the encoder is told so and
         * refuses a longer text before it merges anything. */
        int cap = max_seq - 1 > 0 ? max_seq - 1 : 0;
        prompt = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *prompt);
        if (!prompt) die(1, "out of memory");
        if (tk->hf && o->chat) {
            char *text = hf_tokenizer_chat(tk->hf, o->system, o->prompt);
            if (!text) die(1, "out of memory");
            n_prompt =
                hf_tokenizer_encode(tk->hf, text, strlen(text), 0, prompt, cap, err, sizeof err);
            free(text);
        } else if (tk->hf) {
            n_prompt = hf_tokenizer_encode(tk->hf, o->prompt, strlen(o->prompt), 1, prompt, cap,
                                           err, sizeof err);
        } else {
            n_prompt = tokenizer_encode(&tk->bin, o->prompt, 1, prompt, cap, err, sizeof err);
        }
        if (n_prompt < 0)
            die(2, "cannot encode the prompt for a context of %d positions: %s", max_seq, err);
    } else {
        prompt = malloc(sizeof *prompt);
        if (!prompt) die(1, "out of memory");
        prompt[0] = bos;
        n_prompt = 1;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= c->vocab_size)
            die(2, "token id %d >= vocab_size %d", prompt[i], c->vocab_size);
    if (n_prompt >= max_seq)
        die(2, "prompt of %d tokens does not fit the context (%d)", n_prompt, max_seq);
    int steps = o->steps;
    if (n_prompt + steps > max_seq) {
        steps = max_seq - n_prompt;
        fprintf(stderr, PROG ": context of %d positions: generating %d tokens\n", max_seq, steps);
    }

    sampler smp;
    if (sampler_init(&smp, c->vocab_size, o->temperature, o->top_p, o->seed) != 0)
        die(1, "out of memory");
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    float *last = malloc((size_t)c->vocab_size * sizeof *last);
    int *out = malloc((size_t)(steps > 0 ? steps : 1) * sizeof *out);
    if (!logits || !last || !out) die(1, "out of memory");
    char *text = NULL, *ptext = NULL;
    size_t text_len = 0, text_cap = 0, ptext_len = 0, ptext_cap = 0;
    FILE *echo = o->json ? NULL : stdout;

    /* The prompt is echoed as it will be read back. */
    int prev = -1;
    for (int i = 0; i < n_prompt; i++) {
        if (tk && prompt[i] == text_tokenizer_bos(tk)) {
            prev = prompt[i];
            continue;
        }
        text_append(&ptext, &ptext_len, &ptext_cap, tk, prev, prompt[i], echo);
        prev = prompt[i];
    }

    double t0 = now_ms(), ttft = 0, t_first = 0;
    int n_out = 0, pos = 0, next = 0;
    const char *stop = "length";
    df11_status st = dfl_forward(s.engine, prompt, n_prompt, 0, logits);
    if (st != DF11_OK) die(1, "prefill: %s: %s", df11_strerror(st), dfl_error(s.engine));
    double prefill_ms = now_ms() - t0;
    pos = n_prompt;
    df11_model_stats before = stats_of(&s);
    while (n_out < steps) {
        memcpy(last, logits, (size_t)c->vocab_size * sizeof *logits);
        next = sampler_sample(&smp, logits);
        if (n_out == 0) {
            t_first = now_ms();
            ttft = t_first - t0;
        }
        out[n_out++] = next;
        if (next == c->eos_id || (tk && tk->hf && hf_tokenizer_is_eos(tk->hf, next))) {
            stop = "eos";
            break;
        }
        text_append(&text, &text_len, &text_cap, tk, prev, next, echo);
        prev = next;
        if (n_out == steps) break;
        st = dfl_forward(s.engine, &next, 1, pos++, logits);
        if (st != DF11_OK)
            die(1, "decode at %d: %s: %s", pos - 1, df11_strerror(st), dfl_error(s.engine));
    }
    double decode_ms = n_out > 1 ? now_ms() - t_first : 0.0;
    double decode_tps = decode_ms > 0 ? (n_out - 1) / (decode_ms / 1e3) : 0.0;
    df11_model_stats after = stats_of(&s);
    stream_window sw = stream_since(&before, &after, decode_ms);
    if (echo) fputc('\n', echo);

    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", bf16 ? o->bf16_path : o->model_path);
        cJSON_AddStringToObject(j, "weights", bf16 ? "bf16" : "df11");
        cJSON_AddStringToObject(j, "codec", weights_codec(&s));
        cJSON_AddStringToObject(j, "matmul", matmul_name(&s));
        cJSON_AddStringToObject(j, "nonlayer", nonlayer_name(&s));
        cJSON_AddStringToObject(j, "device", o->device == DFL_DEVICE_CUDA ? "cuda" : "cpu");
        cJSON_AddItemToObject(j, "prompt_tokens", cJSON_CreateIntArray(prompt, n_prompt));
        cJSON_AddItemToObject(j, "generated_tokens", cJSON_CreateIntArray(out, n_out));
        cJSON_AddStringToObject(j, "prompt_text", ptext ? ptext : "");
        cJSON_AddStringToObject(j, "text", text ? text : "");
        cJSON_AddStringToObject(j, "stop", stop);
        cJSON_AddNumberToObject(j, "temperature", o->temperature);
        cJSON_AddNumberToObject(j, "seed", (double)o->seed);
        cJSON *t = cJSON_AddObjectToObject(j, "timings");
        cJSON_AddNumberToObject(t, "open_ms", s.open_ms);
        cJSON_AddNumberToObject(t, "prefill_ms", prefill_ms);
        cJSON_AddNumberToObject(t, "ttft_ms", ttft);
        cJSON_AddNumberToObject(t, "decode_ms", decode_ms);
        cJSON_AddNumberToObject(t, "prefill_tokens_per_s", n_prompt / (prefill_ms / 1e3));
        cJSON_AddNumberToObject(t, "decode_tokens_per_s", decode_tps);
        cJSON_AddItemToObject(j, "memory", memory_json(&s));
        if (streams(&after))
            cJSON_AddItemToObject(j, "tiers",
                                  tiers_json(&after, &sw, n_out > 1 ? n_out - 1 : 1, 0));
        if (n_out > 0) {
            char hex[20];
            snprintf(hex, sizeof hex, "%016llx",
                     (unsigned long long)fnv1a(last, (size_t)c->vocab_size * sizeof *last));
            cJSON_AddStringToObject(j, "logits_fnv1a", hex);
            if (o->logits)
                cJSON_AddItemToObject(j, "logits", cJSON_CreateFloatArray(last, c->vocab_size));
        }
        char *js = cJSON_PrintUnformatted(j);
        puts(js);
        free(js);
        cJSON_Delete(j);
    }
    if (!o->json || !o->quiet) {
        fprintf(stderr, "%s weights (%s, matmul %s) on %s: prompt %d tokens, generated %d (%s)\n",
                bf16 ? "bf16" : "df11", weights_codec(&s), matmul_name(&s),
                o->device == DFL_DEVICE_CUDA ? "cuda" : "cpu", n_prompt, n_out, stop);
        fprintf(stderr, "time to first token %.1f ms (prefill %.1f tok/s), decode %.1f tok/s\n",
                ttft, n_prompt / (prefill_ms / 1e3), decode_tps);
        print_memory(stderr, &s);
        print_tiers(stderr, &after);
        print_streamed(stderr, "decode", &sw, n_out > 1 ? n_out - 1 : 1, 0);
    }

    free(text);
    free(ptext);
    free(out);
    free(last);
    free(logits);
    free(prompt);
    sampler_free(&smp);
    if (tk) text_tokenizer_free(tk);
    session_close(&s);
    return 0;
}

/* ----------------------------------------------------------------- bench ---------- */

static uint64_t gpu_used(void)
{
#ifdef DF11_HAVE_CUDA
    uint64_t f, t;
    if (dfl_gpu_mem_info(&f, &t) == 0) return t - f;
#endif
    return 0;
}

static int bench(const run_opts *o)
{
    const int *lens = o->bench_lens, n_lens = o->n_bench_lens;
    int max_len = 0;
    for (int i = 0; i < n_lens; i++) max_len = lens[i] > max_len ? lens[i] : max_len;
    const int dec = o->bench_decode;
    cJSON *rows = cJSON_CreateArray();
    /* each length's df11 row and its rates, and the BF16 pass's, for the ratios at the end */
    double *rate = calloc((size_t)n_lens * 4, sizeof *rate); /* [pass][len][prefill, decode] */
    cJSON **df11_row = calloc((size_t)n_lens, sizeof *df11_row);
    uint64_t weights[2] = { 0, 0 };
    if (!rate || !df11_row) die(1, "out of memory");
    if (!o->json) {
        printf("%-5s %-7s %-11s %-4s %7s %10s %9s %10s %8s %9s %10s %10s\n", "wts", "codec",
               "matmul", "dev", "prefill", "prefill", "decode", "decode", "decodes", "ttft",
               "vram peak", "weights");
        printf("%-5s %-7s %-11s %-4s %7s %10s %9s %10s %8s %9s %10s %10s\n", "", "", "", "",
               "tokens", "tok/s", "steps", "tok/s", "/token", "ms", "MiB", "MiB");
    }

    /* The link streamed blocks share: measured once, in this run, as their reference. */
    double pinned_gbps = 0;
#ifdef DF11_HAVE_CUDA
    if (o->vram_budget && o->device == DFL_DEVICE_CUDA) pinned_gbps = dfl_gpu_h2d_gbps(256u << 20);
#endif
    for (int pass = 0; pass < 2; pass++) {
        int bf16 = pass == 1;
        if ((bf16 && !o->bf16_path) || (!bf16 && !o->model_path)) continue;
        uint64_t base = gpu_used();
        session s;
        session_open(&s, o, bf16, max_len + dec + 1, max_len);
        uint64_t peak = gpu_used();
        df11_model_stats ms;
        memset(&ms, 0, sizeof ms);
        ms.size = sizeof ms;
        df11_model_stats_get(s.model, &ms);
        uint64_t wbytes = bf16 ? ms.bf16_bytes : weights_bytes(&ms);
        weights[pass] = wbytes;
        const int V = s.cfg.vocab_size;
        float *logits = malloc((size_t)V * sizeof *logits);
        int *toks = malloc((size_t)max_len * sizeof *toks);
        if (!logits || !toks) die(1, "out of memory");
        for (int i = 0; i < max_len; i++) toks[i] = (int)((i * 7919u + 3) % (unsigned)V);

        /* warm-up: library handles, cuBLAS heuristics, first-touch pages */
        df11_status st = dfl_forward(s.engine, toks, lens[0] < 16 ? lens[0] : 16, 0, logits);
        if (st != DF11_OK) die(1, "bench: %s: %s", df11_strerror(st), dfl_error(s.engine));
        for (int li = 0; li < n_lens; li++) {
            int n = lens[li];
            /* each length once untimed: the first pass at a batch pays one-time costs
             * (cuBLAS heuristics for new shapes, the op's first decode at that batch) that
             * were 5-30 ms on an H200, more than the pass itself on small models */
            st = dfl_forward(s.engine, toks, n, 0, logits);
            if (st != DF11_OK)
                die(1, "bench prefill %d: %s: %s", n, df11_strerror(st), dfl_error(s.engine));
            df11_model_stats pf0 = stats_of(&s);
            double t0 = now_ms();
            st = dfl_forward(s.engine, toks, n, 0, logits);
            double pf = now_ms() - t0;
            df11_model_stats pf1 = stats_of(&s);
            stream_window pw = stream_since(&pf0, &pf1, pf);
            if (st != DF11_OK)
                die(1, "bench prefill %d: %s: %s", n, df11_strerror(st), dfl_error(s.engine));
            uint64_t u = gpu_used();
            if (u > peak) peak = u;
            int next = sampler_argmax(logits, V);
            double ttft = now_ms() - t0;
            uint64_t decodes0 = model_decodes(&s);
            df11_model_stats before = stats_of(&s);
            double d0 = now_ms();
            for (int k = 0; k < dec; k++) {
                st = dfl_forward(s.engine, &next, 1, n + k, logits);
                if (st != DF11_OK)
                    die(1, "bench decode: %s: %s", df11_strerror(st), dfl_error(s.engine));
                next = sampler_argmax(logits, V);
            }
            double dm = now_ms() - d0;
            double dpt = dec > 0 ? (double)(model_decodes(&s) - decodes0) / dec : 0.0;
            df11_model_stats after = stats_of(&s);
            stream_window sw = stream_since(&before, &after, dm);
            u = gpu_used();
            if (u > peak) peak = u;
            double ptps = n / (pf / 1e3), dtps = dec > 0 ? dec / (dm / 1e3) : 0.0;
            rate[(pass * n_lens + li) * 2] = ptps;
            rate[(pass * n_lens + li) * 2 + 1] = dtps;
            double vram = o->device == DFL_DEVICE_CUDA ? mib(peak - base) : 0.0;
            if (!o->json)
                printf("%-5s %-7s %-11s %-4s %7d %10.1f %9d %10.1f %8.1f %9.1f %10.1f %10.1f\n",
                       bf16 ? "bf16" : "df11", weights_codec(&s), matmul_name(&s),
                       o->device == DFL_DEVICE_CUDA ? "cuda" : "cpu", n, ptps, dec, dtps, dpt, ttft,
                       vram, mib(wbytes));
            if (!o->json) {
                print_tiers(stdout, &after);
                print_streamed(stdout, "prefill", &pw, 1, pinned_gbps);
                print_streamed(stdout, "decode", &sw, dec > 0 ? dec : 1, pinned_gbps);
            }
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "weights", bf16 ? "bf16" : "df11");
            cJSON_AddStringToObject(r, "codec", weights_codec(&s));
            cJSON_AddStringToObject(r, "matmul", matmul_name(&s));
            cJSON_AddStringToObject(r, "attention", dfl_attention_name(o->attention));
            cJSON_AddStringToObject(r, "nonlayer", nonlayer_name(&s));
            cJSON_AddStringToObject(r, "device", o->device == DFL_DEVICE_CUDA ? "cuda" : "cpu");
            cJSON_AddNumberToObject(r, "prefill_tokens", n);
            cJSON_AddNumberToObject(r, "prefill_ms", pf);
            cJSON_AddNumberToObject(r, "prefill_tokens_per_s", ptps);
            cJSON_AddNumberToObject(r, "ttft_ms", ttft);
            cJSON_AddNumberToObject(r, "decode_steps", dec);
            cJSON_AddNumberToObject(r, "decode_ms", dm);
            cJSON_AddNumberToObject(r, "decode_tokens_per_s", dtps);
            cJSON_AddNumberToObject(r, "decodes_per_token", dpt);
            cJSON_AddNumberToObject(r, "vram_peak_delta_bytes", (double)(peak - base));
            cJSON_AddItemToObject(r, "memory", memory_json(&s));
            if (streams(&after)) {
                cJSON_AddItemToObject(r, "tiers",
                                      tiers_json(&after, &sw, dec > 0 ? dec : 1, pinned_gbps));
                cJSON_AddItemToObject(r, "prefill_tiers", tiers_json(&after, &pw, 1, pinned_gbps));
            }
            cJSON_AddItemToArray(rows, r);
            if (!bf16) df11_row[li] = r;
        }
        if (!o->json) print_memory(stdout, &s);
        free(toks);
        free(logits);
        session_close(&s);
    }
    /* Both weights kinds ran: df11 against BF16, measured in this run (prefill and decode
     * tokens/s, weights' bytes), as a line a length and in each df11 row's "vs_bf16". */
    for (int li = 0; o->model_path && o->bf16_path && li < n_lens; li++) {
        const double *d = &rate[li * 2], *b = &rate[(n_lens + li) * 2];
        const double pr = b[0] > 0 ? d[0] / b[0] : 0, dr = b[1] > 0 ? d[1] / b[1] : 0,
                     wr = weights[1] ? (double)weights[0] / (double)weights[1] : 0;
        if (!o->json)
            printf("df11 vs bf16, prompt %d: prefill %.3fx, decode %.3fx, weights %.3fx\n",
                   lens[li], pr, dr, wr);
        cJSON *v = cJSON_CreateObject();
        cJSON_AddNumberToObject(v, "prefill", pr);
        cJSON_AddNumberToObject(v, "decode", dr);
        cJSON_AddNumberToObject(v, "weights", wr);
        cJSON_AddItemToObject(df11_row[li], "vs_bf16", v);
    }
    free(rate);
    free(df11_row);
    if (o->json) {
        char *js = cJSON_PrintUnformatted(rows);
        puts(js);
        free(js);
    }
    cJSON_Delete(rows);
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        O_TOKENS = 256,
        O_TEMP,
        O_TOPP,
        O_SEED,
        O_BF16,
        O_DEVICE,
        O_THREADS,
        O_CTX,
        O_SLOTS,
        O_JSON,
        O_LOGITS,
        O_BENCH,
        O_BENCH_DECODE,
        O_MATMUL,
        O_NO_PDL,
        O_CHAT,
        O_SYSTEM,
        O_NONLAYER,
        O_VRAM_BUDGET,
        O_STAGING,
        O_HOST_BUDGET,
        O_ATTENTION,
        O_DEVICES
    };
    static const struct option longopts[] = {
        { "prompt", required_argument, NULL, 'p' },
        { "steps", required_argument, NULL, 'n' },
        { "tokenizer", required_argument, NULL, 't' },
        { "tokens", required_argument, NULL, O_TOKENS },
        { "temperature", required_argument, NULL, O_TEMP },
        { "top-p", required_argument, NULL, O_TOPP },
        { "seed", required_argument, NULL, O_SEED },
        { "bf16", required_argument, NULL, O_BF16 },
        { "device", required_argument, NULL, O_DEVICE },
        { "threads", required_argument, NULL, O_THREADS },
        { "ctx", required_argument, NULL, O_CTX },
        { "slots", required_argument, NULL, O_SLOTS },
        { "json", no_argument, NULL, O_JSON },
        { "logits", no_argument, NULL, O_LOGITS },
        { "bench", optional_argument, NULL, O_BENCH },
        { "bench-decode", required_argument, NULL, O_BENCH_DECODE },
        { "matmul", required_argument, NULL, O_MATMUL },
        { "no-pdl", no_argument, NULL, O_NO_PDL },
        { "chat", no_argument, NULL, O_CHAT },
        { "system", required_argument, NULL, O_SYSTEM },
        { "nonlayer", required_argument, NULL, O_NONLAYER },
        { "vram-budget", required_argument, NULL, O_VRAM_BUDGET },
        { "staging", required_argument, NULL, O_STAGING },
        { "host-budget", required_argument, NULL, O_HOST_BUDGET },
        { "attention", required_argument, NULL, O_ATTENTION },
        { "devices", required_argument, NULL, O_DEVICES },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    run_opts o;
    memset(&o, 0, sizeof o);
    o.steps = 128;
    o.top_p = 0.9f;
    o.bench_decode = 128;
    o.seed = (uint64_t)time(NULL);
    const char *device = NULL, *bench_list = NULL, *devices = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "p:n:t:qhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': o.prompt = optarg; break;
        case 'n': o.steps = parse_int(optarg, "-n", 0, MAX_POSITIONS); break;
        case 't': o.tokenizer_path = optarg; break;
        case O_TOKENS: o.tokens = optarg; break;
        case O_TEMP: o.temperature = parse_float(optarg, "--temperature", 0, 100, 0); break;
        case O_TOPP: o.top_p = parse_float(optarg, "--top-p", 0, 1, 1); break;
        case O_SEED: o.seed = parse_u64(optarg, "--seed"); break;
        case O_BF16: o.bf16_path = optarg; break;
        case O_DEVICE: device = optarg; break;
        case O_DEVICES: devices = optarg; break;
        case O_THREADS: o.threads = parse_int(optarg, "--threads", 1, 1024); break;
        case O_CTX: o.ctx = parse_int(optarg, "--ctx", 2, MAX_POSITIONS); break;
        case O_SLOTS:
            /* 0: no arena (the op path alone), set apart from "not given" */
            o.slots = strcmp(optarg, "0") == 0 ? -1 : parse_int(optarg, "--slots", 2, 64);
            break;
        case O_VRAM_BUDGET: o.vram_budget = parse_size(optarg, "--vram-budget"); break;
        case O_STAGING: o.staging = parse_int(optarg, "--staging", 2, DF11_MAX_STAGING); break;
        case O_HOST_BUDGET: o.host_budget = parse_size(optarg, "--host-budget"); break;
        case O_JSON: o.json = 1; break;
        case O_LOGITS: o.logits = 1; break;
        case O_BENCH:
            o.bench = 1;
            bench_list = optarg;
            break;
        case O_BENCH_DECODE:
            o.bench_decode = parse_int(optarg, "--bench-decode", 0, 1 << 20);
            break;
        case O_MATMUL:
            if (strcmp(optarg, "op") == 0)
                o.matmul = DFL_MATMUL_OP;
            else if (strcmp(optarg, "op-separate") == 0)
                o.matmul = DFL_MATMUL_OP_SEPARATE;
            else if (strcmp(optarg, "engine") == 0)
                o.matmul = DFL_MATMUL_ENGINE;
            else
                die(2, "invalid --matmul '%s' (op, op-separate or engine)", optarg);
            break;
        case O_NO_PDL: o.no_pdl = 1; break;
        case O_CHAT: o.chat = 1; break;
        case O_SYSTEM: o.system = optarg; break;
        case O_NONLAYER:
            if (strcmp(optarg, "resident") == 0)
                o.nonlayer = 1 + DF11_NONLAYER_RESIDENT;
            else if (strcmp(optarg, "compressed") == 0)
                o.nonlayer = 1 + DF11_NONLAYER_COMPRESSED;
            else
                die(2, "invalid --nonlayer '%s' (resident or compressed)", optarg);
            break;
        case O_ATTENTION: {
            int k = 0;
            while (dfl_attention_name((dfl_attention)k) &&
                   strcmp(optarg, dfl_attention_name((dfl_attention)k)) != 0)
                k++;
            if (!dfl_attention_name((dfl_attention)k))
                die(2, "invalid --attention '%s' (auto, naive, tiled, mma or split)", optarg);
            o.attention = (dfl_attention)k;
            break;
        }
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf(PROG " %s\n", DF11_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) o.model_path = argv[optind++];
    if (optind < argc) die(2, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!o.model_path && !o.bf16_path) {
        usage(stderr);
        return 2;
    }
    if (o.model_path && o.bf16_path && !o.bench)
        die(2, "give MODEL.df11 or --bf16 SRC, not both (both only with --bench)");
    if (o.tokens && o.prompt) die(2, "give -p or --tokens, not both");
    if (o.slots < 0 && o.matmul == DFL_MATMUL_ENGINE)
        die(2, "--slots 0 needs the matmul op: --matmul engine reads decoded blocks");
    if (o.staging && !o.vram_budget) die(2, "--staging needs --vram-budget");
    if (o.host_budget && !o.vram_budget)
        die(2, "--host-budget needs --vram-budget (the blocks that do not fit it are streamed)");
    if (o.vram_budget && o.bf16_path && !is_df11_path(o.bf16_path))
        die(2, "--vram-budget streams .df11 files only: for a BF16 baseline under the same "
               "budget, write one with df11-compress --codec raw and pass it to --bf16");
    if (o.nonlayer == 1 + DF11_NONLAYER_COMPRESSED && o.matmul == DFL_MATMUL_ENGINE)
        die(2, "--nonlayer compressed needs the matmul op: --matmul engine reads lm_head as a "
               "tensor view");
    if (o.tokens) o.n_token_ids = parse_list(o.tokens, &o.token_ids, "token id", 0, INT_MAX);
    if (o.bench)
        o.n_bench_lens = parse_list(bench_list ? bench_list : "512,4096", &o.bench_lens,
                                    "--bench length", 1, MAX_POSITIONS);
    struct stat st;
    if (o.tokenizer_path && stat(o.tokenizer_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        /* -t FOLDER: its tokenizer.json */
        o.found_tokenizer = find_tokenizer(o.tokenizer_path);
        if (!o.found_tokenizer)
            die(2, "-t '%s': no tokenizer.json in that folder", o.tokenizer_path);
        o.tokenizer_path = o.found_tokenizer;
    } else if (!o.tokenizer_path && !o.bench) {
        o.found_tokenizer = find_tokenizer(o.model_path ? o.model_path : o.bf16_path);
        o.tokenizer_path = o.found_tokenizer;
    }
    if (o.prompt && o.prompt[0] && !o.tokenizer_path)
        die(2, "-p needs a tokenizer: --tokenizer FILE, or a tokenizer.json beside the model "
               "(or give ids with --tokens)");
    if ((o.chat || o.system) && !(o.prompt && o.prompt[0]))
        die(2, "--chat and --system need a prompt (-p)");
    if (o.system && !o.chat) die(2, "--system needs --chat");

    if (!device) {
#ifdef DF11_HAVE_CUDA
        uint64_t f, t;
        o.device = dfl_gpu_mem_info(&f, &t) == 0 ? DFL_DEVICE_CUDA : DFL_DEVICE_CPU;
#else
        o.device = DFL_DEVICE_CPU;
#endif
    } else if (strcmp(device, "cpu") == 0) {
        o.device = DFL_DEVICE_CPU;
    } else if (strcmp(device, "cuda") == 0) {
#ifndef DF11_HAVE_CUDA
        die(2, "--device cuda: built without CUDA");
#endif
        o.device = DFL_DEVICE_CUDA;
    } else {
        die(2, "invalid device '%s' (cpu or cuda)", device);
    }
    if (devices) {
        if (o.device != DFL_DEVICE_CUDA)
            die(2, "--devices splits the layers over CUDA GPUs: it needs --device cuda (and a "
                   "build with CUDA)");
        o.n_devices = parse_list(devices, &o.devices, "--devices", 0, 1023);
        if (o.n_devices > DFL_MAX_STAGES)
            die(2, "--devices: %d GPUs, at most %d", o.n_devices, DFL_MAX_STAGES);
        for (int i = 0; i < o.n_devices; i++)
            for (int j = 0; j < i; j++)
                if (o.devices[i] == o.devices[j])
                    die(2, "--devices: GPU %d named twice", o.devices[i]);
        const char *paths[2] = { o.model_path, o.bf16_path };
        for (int k = 0; k < 2; k++)
            if (paths[k] && !is_df11_path(paths[k]))
                die(2,
                    "--devices splits .df11 files only ('%s'; for a BF16 baseline, write one "
                    "with df11-compress --codec raw)",
                    paths[k]);
    }
    int rc = o.bench ? bench(&o) : generate(&o);
    free(o.token_ids);
    free(o.bench_lens);
    free(o.devices);
    free(o.found_tokenizer);
    return rc;
}
