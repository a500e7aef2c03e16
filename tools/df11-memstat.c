/* df11-memstat: memory use of running df11 models, or the memory plan of a .df11 file.
 *
 *   df11-memstat [-w] [--interval SEC] [--json]     every process that publishes stats
 *   df11-memstat FILE.df11 [--slots K] [--json]     what opening FILE would take
 *   df11-memstat FILE.df11 --vram-budget SIZE [--host-budget SIZE] [--device cpu|cuda]
 *                                                    where each block would live, streamed
 *
 * Running models publish a shared-memory page /dev/shm/df11-<pid>[-n] when opened with
 * options.publish_stats (layout: runtime/memstat.h). Pages are mode 0600, so this lists
 * the processes of the user running it (root: everyone's). Pages of processes that are
 * gone are skipped; a page that is not what it should be (any process of the user can
 * write there) is skipped with a one-line note on stderr, never trusted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/utf8.h"
#include "df11/runtime.h"
#include "runtime/memstat.h"
#include "tools/cli.h"

static const char *TOOL = "df11-memstat";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: df11-memstat [-w] [--interval SEC] [--json]\n"
            "       df11-memstat FILE.df11 [--slots K] [--json]\n"
            "       df11-memstat FILE.df11 --vram-budget SIZE [--host-budget SIZE]\n"
            "                    [--device cpu|cuda] [--json]\n"
            "\n"
            "Without FILE: lists your processes running df11 models that publish stats\n"
            "(df11_model_options.publish_stats) with their pool and arena use (root: all\n"
            "users' processes).\n"
            "With FILE: prints the memory plan of opening it: compressed weights, the arena\n"
            "of K slots (K x the largest layer group), and the saving against BF16.\n"
            "\n"
            "  -w, --watch          refresh until interrupted\n"
            "  -i, --interval SEC   refresh period for --watch, 0.05..3600 (default 1)\n"
            "With a budget: where each block of FILE would live (device memory, pinned RAM,\n"
            "or the file) and the bytes each link carries per pass, as df11-run\n"
            "--vram-budget/--host-budget would open it on that device.\n"
            "\n"
            "  -k, --slots K        arena slots for the plan (default 2)\n"
            "      --vram-budget S  device memory for the model (K/M/G suffixes)\n"
            "      --host-budget S  pinned RAM for streamed blocks; the rest from the file\n"
            "      --staging N      device buffers streamed blocks go through (2..8, default 3)\n"
            "      --device D       cpu or cuda: plan for that backend (the op's scratch and\n"
            "                       the decode plans differ); default cuda where a GPU is\n"
            "                       present, as df11-run\n"
            "  -j, --json           machine-readable output\n"
            "  -h, --help           this text\n"
            "  -V, --version        version\n");
}

static double pct(uint64_t a, uint64_t b) { return b ? 100.0 * (double)a / (double)b : 0.0; }

/* s, a page's path or name (its publisher's to choose: any bytes), a UTF-8 character at a
 * time: as JSON string content (json), a byte that does not start a character as U+FFFD,
 * control characters as \uXXXX, '"' and '\\' escaped, so that the output stays valid JSON;
 * or as terminal text, both kinds of byte as '?'. */
static void put_text(const char *s, int json)
{
    for (size_t n = strlen(s); n;) {
        uint32_t cp;
        size_t k = df11i_utf8_seq(s, n, &cp);
        if (!k)
            fputs(json ? "\\ufffd" : "?", stdout), k = 1;
        else if (df11i_utf8_control(cp)) {
            if (json)
                printf("\\u%04x", (unsigned)cp);
            else
                putchar('?');
        } else if (json && (cp == '"' || cp == '\\'))
            printf("\\%c", (char)cp);
        else
            fwrite(s, 1, k, stdout);
        s += k;
        n -= k;
    }
}

static void json_str(const char *s)
{
    putchar('"');
    put_text(s, 1);
    putchar('"');
}

/* --- live processes --- */

typedef struct page_copy {
    char name[256];
    df11i_memstat_page p;
} page_copy;

/* A page truncated by its owner while we read it raises SIGBUS: the read is abandoned. */
static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
    if (bus_armed) siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads and checks one page (df11i_memstat_page_read). 0 on success; -1 with a reason in
 * `why`, and the page is to be skipped. A page is anyone's file: it may be a FIFO (open
 * would block), huge, short, or truncated while mapped. */
static int page_read(const char *name, page_copy *out, char *why, size_t why_len)
{
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    snprintf(out->name, sizeof out->name, "%s", name);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_len, "%s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "not a regular file");
        close(fd);
        return -1;
    }
    if (st.st_size < (off_t)DF11_MEMSTAT_MIN_SIZE || st.st_size > (off_t)DF11_MEMSTAT_MAX_PAGE) {
        snprintf(why, why_len, "%lld bytes, not the size of a stats page", (long long)st.st_size);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *pg = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (pg == MAP_FAILED) {
        snprintf(why, why_len, "mmap: %s", strerror(errno));
        return -1;
    }
    int rc = -1;
    if (sigsetjmp(bus_jump, 1) == 0) {
        bus_armed = 1;
        rc = df11i_memstat_page_read(pg, size, &out->p, why, why_len);
    } else {
        snprintf(why, why_len, "truncated while being read");
    }
    bus_armed = 0;
    munmap(pg, size);
    return rc;
}

static int is_alive(long pid) { return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM); }

static int page_filter(const struct dirent *d)
{
    size_t n = strlen(DF11_MEMSTAT_PREFIX);
    if (strncmp(d->d_name, DF11_MEMSTAT_PREFIX, n)) return 0;
    char *end;
    long pid = strtol(d->d_name + n, &end, 10);
    if (end == d->d_name + n || (*end && *end != '-')) return 0;
    return is_alive(pid);
}

static const char *state_name(uint8_t s)
{
    return s == 2 ? "acquired" : s == 1 ? "cached" : "empty";
}

static void print_slot_text(const df11i_memstat_page *p, uint32_t i)
{
    int32_t key = p->slot_block[i];
    if (p->slot_state[i] == 0 || key < 0)
        printf(" [%u] empty", i);
    else if ((uint32_t)key < p->n_blocks)
        printf(" [%u] block %d %s", i, key, state_name(p->slot_state[i]));
    else
        printf(" [%u] group %d %s", i, key - (int32_t)p->n_blocks, state_name(p->slot_state[i]));
}

static void print_text(const page_copy *c)
{
    const df11i_memstat_page *p = &c->p;
    printf("pid %d  %s  ", p->pid, p->backend);
    put_text(p->path, 0);
    printf("%s\n", p->bf16_model ? "  (BF16)" : "");
    uint64_t weights = p->compressed_bytes + p->resident_bytes;
    if (p->bf16_model) {
        printf("  weights   %s resident BF16\n", cli_bytes(p->resident_bytes));
    } else {
        printf("  weights   %s compressed + %s resident = %s of %s BF16 (%.1f%%)\n",
               cli_bytes(p->compressed_bytes), cli_bytes(p->resident_bytes), cli_bytes(weights),
               cli_bytes(p->bf16_bytes), pct(weights, p->bf16_bytes));
        printf("  arena     %u slots, %s (%s each); weights + arena = %.1f%% of BF16\n",
               p->arena_slots, cli_bytes(p->arena_bytes),
               cli_bytes(p->arena_slots ? p->arena_bytes / p->arena_slots : 0),
               pct(weights + p->arena_bytes, p->bf16_bytes));
        printf("  slots    ");
        uint32_t n = p->arena_slots < DF11_MEMSTAT_SLOTS ? p->arena_slots : DF11_MEMSTAT_SLOTS;
        for (uint32_t i = 0; i < n; i++) print_slot_text(p, i);
        printf("\n");
    }
    printf("  pool      %s held, high-water %s, metadata %s, staging %s at open",
           cli_bytes(p->pool_reserved), cli_bytes(p->pool_high_water), cli_bytes(p->metadata_bytes),
           cli_bytes(p->staging_bytes));
    if (p->memory_limit) printf(", limit %s", cli_bytes(p->memory_limit));
    printf("\n  activity  %llu decodes", (unsigned long long)p->decodes);
    if (p->decode_ms > 0) printf(" (%.1f ms)", p->decode_ms);
    printf(", %llu acquires, opened in %.0f ms\n", (unsigned long long)p->acquires, p->open_ms);
}

static void print_json(const page_copy *c)
{
    const df11i_memstat_page *p = &c->p;
    printf("    {\"pid\": %d, \"page\": ", p->pid);
    json_str(c->name);
    printf(", \"path\": ");
    json_str(p->path);
    printf(", \"backend\": ");
    json_str(p->backend);
    printf(", \"bf16_model\": %s, \"n_blocks\": %u, \"n_groups\": %u,\n",
           p->bf16_model ? "true" : "false", p->n_blocks, p->n_groups);
    printf("     \"compressed_bytes\": %llu, \"bf16_bytes\": %llu, \"arena_bytes\": %llu, "
           "\"resident_bytes\": %llu, \"staging_bytes\": %llu, \"metadata_bytes\": %llu,\n",
           (unsigned long long)p->compressed_bytes, (unsigned long long)p->bf16_bytes,
           (unsigned long long)p->arena_bytes, (unsigned long long)p->resident_bytes,
           (unsigned long long)p->staging_bytes, (unsigned long long)p->metadata_bytes);
    printf("     \"pool_reserved\": %llu, \"pool_high_water\": %llu, \"memory_limit\": %llu, "
           "\"decodes\": %llu, \"decode_ms\": %.3f, \"acquires\": %llu, \"open_ms\": %.3f,\n",
           (unsigned long long)p->pool_reserved, (unsigned long long)p->pool_high_water,
           (unsigned long long)p->memory_limit, (unsigned long long)p->decodes, p->decode_ms,
           (unsigned long long)p->acquires, p->open_ms);
    printf("     \"arena_slots\": %u, \"slots\": [", p->arena_slots);
    uint32_t n = p->arena_slots < DF11_MEMSTAT_SLOTS ? p->arena_slots : DF11_MEMSTAT_SLOTS;
    for (uint32_t i = 0; i < n; i++) {
        int32_t key = p->slot_block[i];
        printf("%s{\"slot\": %u, \"state\": \"%s\"", i ? ", " : "", i,
               state_name(key < 0 ? 0 : p->slot_state[i]));
        if (key >= 0 && (uint32_t)key < p->n_blocks)
            printf(", \"block\": %d", key);
        else if (key >= 0)
            printf(", \"group\": %d", key - (int32_t)p->n_blocks);
        printf("}");
    }
    printf("]}");
}

static int list_processes(int json)
{
    struct dirent **ents = NULL;
    int n = scandir("/dev/shm", &ents, page_filter, versionsort);
    if (n < 0) {
        if (errno == ENOENT)
            n = 0;
        else
            return cli_fail(TOOL, DF11_ERR_IO, "cannot list /dev/shm: %s", strerror(errno));
    }
    int shown = 0;
    if (json) printf("{\"processes\": [\n");
    for (int i = 0; i < n; i++) {
        page_copy c;
        char why[256];
        if (page_read(ents[i]->d_name, &c, why, sizeof why) != 0) {
            fflush(stdout);
            fprintf(stderr, "%s: skipping /dev/shm/%s: %s\n", TOOL, ents[i]->d_name, why);
        } else {
            if (json) {
                if (shown) printf(",\n");
                print_json(&c);
            } else {
                if (shown) printf("\n");
                print_text(&c);
            }
            shown++;
        }
        free(ents[i]);
    }
    free(ents);
    if (json)
        printf("\n]}\n");
    else if (!shown)
        printf("no running df11 model publishes stats\n");
    fflush(stdout);
    return CLI_OK;
}

/* --- the plan of a file --- */

static int plan_file(const char *path, uint32_t slots, int json)
{
    df11_file *f;
    df11_status s = df11_file_open(path, &f);
    if (s != DF11_OK) return cli_fail(TOOL, s, "cannot open '%s'", path);
    uint64_t layer_payload = 0, nonlayer_payload = 0, nonlayer_decoded = 0, bf16 = 0;
    uint64_t max_layer = 0, max_any = 0;
    uint32_t ng = df11_file_n_groups(f);
    for (uint32_t g = 0; g < ng; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        if (gi->layer >= 0) {
            layer_payload += gi->payload_size;
            if (gi->decoded_size > max_layer) max_layer = gi->decoded_size;
        } else {
            nonlayer_payload += gi->payload_size;
            nonlayer_decoded += gi->decoded_size;
        }
        if (gi->decoded_size > max_any) max_any = gi->decoded_size;
    }
    for (uint32_t t = 0; t < df11_file_n_tensors(f); t++) bf16 += df11_file_tensor(f, t)->nbytes;
    uint64_t arena_res = (uint64_t)slots * max_layer;
    uint64_t arena_arena = (uint64_t)slots * max_any;
    uint64_t total_res = layer_payload + nonlayer_decoded + arena_res;
    uint64_t total_arena = layer_payload + nonlayer_payload + arena_arena;
    uint64_t total_comp = layer_payload + nonlayer_payload + arena_res; /* slots by layers */
    uint64_t compressed = layer_payload + nonlayer_payload;
    if (json) {
        printf("{\"path\": ");
        json_str(path);
        printf(
            ", \"file_bytes\": %llu, \"n_blocks\": %u, \"n_groups\": %u, \"bf16_bytes\": %llu,\n",
            (unsigned long long)df11_file_size(f), df11_file_n_layers(f), ng,
            (unsigned long long)bf16);
        printf(" \"compressed_bytes\": %llu, \"layer_compressed_bytes\": %llu, "
               "\"nonlayer_compressed_bytes\": %llu, \"nonlayer_bf16_bytes\": %llu,\n",
               (unsigned long long)compressed, (unsigned long long)layer_payload,
               (unsigned long long)nonlayer_payload, (unsigned long long)nonlayer_decoded);
        printf(" \"arena_slots\": %u, \"largest_layer_bytes\": %llu,\n", slots,
               (unsigned long long)max_layer);
        printf(" \"plans\": {\"resident\": {\"arena_bytes\": %llu, \"total_bytes\": %llu, "
               "\"fraction_of_bf16\": %.4f},\n",
               (unsigned long long)arena_res, (unsigned long long)total_res,
               bf16 ? (double)total_res / (double)bf16 : 0.0);
        printf("           \"arena\": {\"arena_bytes\": %llu, \"total_bytes\": %llu, "
               "\"fraction_of_bf16\": %.4f},\n",
               (unsigned long long)arena_arena, (unsigned long long)total_arena,
               bf16 ? (double)total_arena / (double)bf16 : 0.0);
        printf("           \"compressed\": {\"arena_bytes\": %llu, \"total_bytes\": %llu, "
               "\"fraction_of_bf16\": %.4f}}}\n",
               (unsigned long long)arena_res, (unsigned long long)total_comp,
               bf16 ? (double)total_comp / (double)bf16 : 0.0);
    } else {
        printf("%s: %u blocks, %u groups, %s on disk\n", path, df11_file_n_layers(f), ng,
               cli_bytes(df11_file_size(f)));
        printf("  BF16 weights          %s\n", cli_bytes(bf16));
        printf("  compressed            %s (%.1f%%): layers %s, non-layer %s\n",
               cli_bytes(compressed), pct(compressed, bf16), cli_bytes(layer_payload),
               cli_bytes(nonlayer_payload));
        printf("  arena                 %u slots x %s (largest layer group) = %s\n", slots,
               cli_bytes(max_layer), cli_bytes(arena_res));
        printf("  non-layer RESIDENT:   %s compressed layers + %s decoded non-layer + %s "
               "arena = %s (%.1f%% of BF16, saves %s)\n",
               cli_bytes(layer_payload), cli_bytes(nonlayer_decoded), cli_bytes(arena_res),
               cli_bytes(total_res), pct(total_res, bf16),
               cli_bytes(bf16 > total_res ? bf16 - total_res : 0));
        printf("  non-layer ARENA:      %s compressed + %u x %s arena = %s (%.1f%% of BF16, "
               "saves %s)\n",
               cli_bytes(compressed), slots, cli_bytes(max_any), cli_bytes(total_arena),
               pct(total_arena, bf16), cli_bytes(bf16 > total_arena ? bf16 - total_arena : 0));
        printf("  non-layer COMPRESSED: %s compressed + %u x %s arena = %s (%.1f%% of BF16, "
               "saves %s; + the matmul op's scratch, a layer tensor)\n",
               cli_bytes(compressed), slots, cli_bytes(max_layer), cli_bytes(total_comp),
               pct(total_comp, bf16), cli_bytes(bf16 > total_comp ? bf16 - total_comp : 0));
    }
    df11_file_close(f);
    return CLI_OK;
}

/* --- the tier plan of a file under budgets --- */

static int plan_tiers(const char *path, uint32_t slots, uint32_t stages, uint64_t vram,
                      uint64_t host, df11_backend_kind backend, int json)
{
    df11_model_options o;
    df11_model_options_init(&o);
    o.backend = backend;
    o.arena_slots = slots;
    o.memory_limit = vram;
    o.host_budget = host ? host : UINT64_MAX;
    o.stream_from_file = host != 0;
    o.staging_slots = stages;
    o.nonlayer = DF11_NONLAYER_COMPRESSED; /* as df11-run on the op opens it */
    df11_file *f;
    df11_status s = df11_file_open(path, &f);
    if (s != DF11_OK) return cli_fail(TOOL, s, "cannot open '%s'", path);
    const uint32_t n = df11_file_n_layers(f);
    uint32_t t;
    /* and, as df11-run does, an embedding not tied to lm_head waits in pinned RAM */
    if (df11_file_find_tensor(f, "model.embed_tokens.weight", &t) == DF11_OK &&
        df11_file_find_tensor(f, "lm_head.weight", &t) == DF11_OK)
        o.host_gather_tensor = "model.embed_tokens.weight";
    df11_file_close(f);
    df11_tier *tiers = calloc(n ? n : 1, sizeof *tiers);
    if (!tiers) return cli_fail(TOOL, DF11_ERR_NO_MEMORY, "out of memory");
    df11_plan p;
    if ((s = df11_model_plan(path, &o, &p, tiers, n)) != DF11_OK) {
        free(tiers);
        return cli_fail(TOOL, s, "'%s' under a device budget of %s", path, cli_bytes(vram));
    }
    static const char tier_char[3] = { 'D', 'H', 'F' };
    /* the live pages' names (runtime/memstat.h): which plan this is, where --device was left
     * to the machine */
    const char *be_name = p.backend == DF11_BACKEND_CUDA   ? "cuda"
                          : p.backend == DF11_BACKEND_HOST ? "host"
                                                           : "unknown";
    if (json) {
        printf("{\"path\": ");
        json_str(path);
        printf(", \"backend\": \"%s\"", be_name);
        printf(", \"device_budget\": %llu, \"host_budget\": %llu, \"device_bytes\": %llu, "
               "\"arena_bytes\": %llu, \"staging_ring_bytes\": %llu, \"nonlayer_bytes\": %llu, "
               "\"metadata_bytes\": %llu, \"matmul_bytes\": %llu,\n",
               (unsigned long long)vram, (unsigned long long)host,
               (unsigned long long)p.device_bytes, (unsigned long long)p.arena_bytes,
               (unsigned long long)p.staging_ring_bytes, (unsigned long long)p.nonlayer_bytes,
               (unsigned long long)p.metadata_bytes, (unsigned long long)p.matmul_bytes);
        printf(" \"blocks\": {\"device\": %u, \"host\": %u, \"file\": %u}, \"tier_bytes\": "
               "{\"device\": %llu, \"host\": %llu, \"file\": %llu}, \"pinned_bytes\": %llu,\n",
               p.blocks_device, p.blocks_host, p.blocks_file,
               (unsigned long long)p.device_tier_bytes, (unsigned long long)p.host_tier_bytes,
               (unsigned long long)p.file_tier_bytes, (unsigned long long)p.pinned_bytes);
        printf(" \"per_pass\": {\"host_to_device_bytes\": %llu, \"file_bytes\": %llu}, "
               "\"block_tiers\": \"",
               (unsigned long long)p.h2d_per_pass, (unsigned long long)p.file_per_pass);
        for (uint32_t b = 0; b < n; b++) putchar(tier_char[tiers[b]]);
        printf("\"}\n");
    } else {
        printf("%s: %u blocks under a device budget of %s", path, n, cli_bytes(vram));
        if (host) printf(" and a host budget of %s", cli_bytes(host));
        printf(", %s backend", be_name);
        printf("\n  device   %s: arena %s, staging ring %s, non-layer %s, plans %s, matmul "
               "scratch %s, %u blocks %s\n",
               cli_bytes(p.device_bytes), cli_bytes(p.arena_bytes), cli_bytes(p.staging_ring_bytes),
               cli_bytes(p.nonlayer_bytes), cli_bytes(p.metadata_bytes), cli_bytes(p.matmul_bytes),
               p.blocks_device, cli_bytes(p.device_tier_bytes));
        printf("  pinned   %s: %u blocks %s, read buffers and the gathered embedding %s\n",
               cli_bytes(p.pinned_bytes), p.blocks_host, cli_bytes(p.host_tier_bytes),
               cli_bytes(p.pinned_bytes - p.host_tier_bytes));
        printf("  file     %u blocks %s\n", p.blocks_file, cli_bytes(p.file_tier_bytes));
        printf("  blocks   ");
        for (uint32_t b = 0; b < n; b++) putchar(tier_char[tiers[b]]);
        printf("  (D device, H pinned RAM, F file)\n");
        printf("  per pass host->device %s, read from the file %s\n", cli_bytes(p.h2d_per_pass),
               cli_bytes(p.file_per_pass));
    }
    free(tiers);
    return CLI_OK;
}

int main(int argc, char **argv)
{
    struct sigaction sa = { .sa_handler = on_sigbus };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    static const struct option longopts[] = { { "watch", no_argument, NULL, 'w' },
                                              { "interval", required_argument, NULL, 'i' },
                                              { "slots", required_argument, NULL, 'k' },
                                              { "json", no_argument, NULL, 'j' },
                                              { "vram-budget", required_argument, NULL, 'B' },
                                              { "host-budget", required_argument, NULL, 'H' },
                                              { "staging", required_argument, NULL, 'S' },
                                              { "device", required_argument, NULL, 'D' },
                                              { "help", no_argument, NULL, 'h' },
                                              { "version", no_argument, NULL, 'V' },
                                              { NULL, 0, NULL, 0 } };
    int watch = 0, json = 0, opt;
    uint64_t vram = 0, host = 0;
    uint32_t stages = 0;
    df11_backend_kind backend = DF11_BACKEND_AUTO; /* --device: HOST or CUDA */
    double interval = 1.0;
    long slots = 2;
    char *end;
    while ((opt = getopt_long(argc, argv, "wi:k:jhV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'w': watch = 1; break;
        case 'i': /* rejects nan and inf too */
            interval = strtod(optarg, &end);
            if (*end || end == optarg || !(interval >= 0.05 && interval <= 3600))
                return cli_usage_error(TOOL, "bad --interval '%s' (0.05..3600 seconds)", optarg);
            break;
        case 'k':
            slots = strtol(optarg, &end, 10);
            if (*end || end == optarg || slots < 0 || slots > 64)
                return cli_usage_error(TOOL, "bad --slots '%s' (0..64; 0: no arena)", optarg);
            break;
        case 'j': json = 1; break;
        case 'B':
        case 'H':
            if (!(*(opt == 'B' ? &vram : &host) = cli_parse_size(optarg)))
                return cli_usage_error(TOOL, "bad --%s-budget '%s' (a size, e.g. 6G)",
                                       opt == 'B' ? "vram" : "host", optarg);
            break;
        case 'S': {
            long v = cli_parse_range(optarg, 2, DF11_MAX_STAGING);
            if (v < 0) return cli_usage_error(TOOL, "bad --staging '%s' (2..8)", optarg);
            stages = (uint32_t)v;
            break;
        }
        case 'D':
            if (!strcmp(optarg, "cpu"))
                backend = DF11_BACKEND_HOST;
            else if (!strcmp(optarg, "cuda"))
                backend = DF11_BACKEND_CUDA;
            else
                return cli_usage_error(TOOL, "bad --device '%s' (cpu or cuda)", optarg);
            break;
        case 'h': usage(stdout); return CLI_OK;
        case 'V': cli_version(TOOL); return CLI_OK;
        default: usage(stderr); return CLI_USAGE;
        }
    }
    if (argc - optind > 1) return cli_usage_error(TOOL, "one file at most (see --help)");
    if (optind < argc) {
        if (watch) return cli_usage_error(TOOL, "--watch is for running processes, not a file");
        if (host && !vram) return cli_usage_error(TOOL, "--host-budget needs --vram-budget");
        if (backend != DF11_BACKEND_AUTO && !vram)
            return cli_usage_error(TOOL, "--device needs --vram-budget");
        if (vram)
            return plan_tiers(argv[optind], (uint32_t)slots, stages, vram, host, backend, json);
        return plan_file(argv[optind], (uint32_t)slots, json);
    }
    if (vram || host || backend != DF11_BACKEND_AUTO)
        return cli_usage_error(TOOL, "a budget or --device needs a FILE to plan");
    if (!watch) return list_processes(json);
    for (;;) {
        if (!json && isatty(STDOUT_FILENO)) printf("\033[H\033[2J");
        int rc = list_processes(json);
        if (rc != CLI_OK) return rc;
        const struct timespec ts = { (time_t)interval,
                                     (long)((interval - (double)(time_t)interval) * 1e9) };
        nanosleep(&ts, NULL);
    }
}
