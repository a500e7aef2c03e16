/* df11-synth: writes a synthetic Llama-shaped BF16 model (safetensors + config.json) whose
 * weights have the statistics of trained ones, so that compression ratios and decode speed
 * measured on it mean something without shipping real weights.
 *
 * Matrix rows get their own scale (σ_r = 0.02·e^{0.3 z}) because that spread, not the
 * values, sets the exponent entropy the codec sees. Every row is generated from its own
 * seed (seed, tensor name, row), so the bytes do not depend on the thread count. Tensors
 * are generated one at a time into the writer's buffer: memory stays at the largest tensor. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/atomic_file.h"
#include "common/parallel.h"
#include "df11.h"
#include "tools/cli.h"
#include "tools/weights.h"
#include "writer/safetensors_write.h"

#define PROG "df11-synth"

typedef struct {
    const char *name;
    uint32_t hidden, inter, heads, kv_heads, vocab, layers, max_pos;
    double rope_theta;
    bool tied;
    bool block_only; /* only the blocks' tensors: no embeddings, final norm or lm_head */
} synth_shape;

static const synth_shape shapes[] = {
    { "tiny", 128, 344, 8, 4, 512, 4, 512, 10000.0, false, false },
    { "stories", 64, 172, 8, 4, 512, 5, 512, 10000.0, true, false },
    { "llama3-8b", 4096, 14336, 32, 8, 128256, 32, 8192, 500000.0, false, false },
    { "llama3-8b-block", 4096, 14336, 32, 8, 128256, 1, 8192, 500000.0, false, true },
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: " PROG " -o OUT [--shape NAME] [--layers N] [--seed S] [--vocab V] [--threads T]\n"
        "Writes a synthetic Llama-shaped BF16 model with Hugging Face tensor names: OUT (a\n"
        ".safetensors file) and config.json beside it. If OUT is a directory or ends with '/',\n"
        "writes OUT/model.safetensors and OUT/config.json (creating OUT and its missing parents).\n"
        "\n"
        "  -o, --output OUT   where to write (required)\n"
        "      --shape NAME   tiny (default), stories, llama3-8b, llama3-8b-block\n"
        "      --layers N     transformer blocks (default: the shape's)\n"
        "      --seed S       random seed (default 0); one seed gives the same bytes every time\n"
        "      --vocab V      vocabulary size (default: the shape's)\n"
        "  -t, --threads T    generator threads (default 0 = all cores)\n"
        "  -h, --help         this help\n"
        "      --version      print the version\n"
        "\n"
        "Shapes (hidden / intermediate / heads / kv heads / vocab / layers):\n"
        "  tiny             128 / 344 / 8 / 4 / 512 / 4\n"
        "  stories          64 / 172 / 8 / 4 / 512 / 5, tied embeddings (like stories260K)\n"
        "  llama3-8b        4096 / 14336 / 32 / 8 / 128256 / 32, rope_theta 500000\n"
        "  llama3-8b-block  llama3-8b, 1 layer, and only the blocks' tensors\n"
        "Weights: row r of a matrix ~ N(0, s_r^2), s_r = 0.02*exp(0.3*z_r), z_r ~ N(0,1);\n"
        "norm weights ~ 1 + N(0, 0.02^2); all rounded to BF16 (nearest even).\n");
}

/* ---- generation ---- */

typedef struct {
    const df11_tensor_source *tensors;
    size_t n;
    uint64_t seed, bytes_done, bytes_total;
    int threads;
} synth;

static df11_status fill_tensor(void *ctx, size_t index, void *buf, uint64_t nbytes)
{
    synth *s = ctx;
    const df11_tensor_source *t = &s->tensors[index];
    bool norm = t->ndim == 1;
    weights_fill(buf, norm ? 1 : t->shape[0], norm ? t->shape[0] : t->shape[1],
                 weights_tensor_seed(t->name, s->seed), norm, s->threads);
    s->bytes_done += nbytes;
    cli_progress(PROG, s->bytes_done, s->bytes_total); /* draws only on a terminal */
    return DF11_OK;
}

/* ---- the model's tensor list ---- */

static char *strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strdup_printf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strdup(buf);
}

static bool add(df11_tensor_source *t, size_t *n, char *name, uint64_t d0, uint64_t d1)
{
    if (!name) return false;
    t[*n] = (df11_tensor_source){
        .name = name, .dtype = DF11_DTYPE_BF16, .ndim = d1 ? 2 : 1, .shape = { d0, d1 }
    };
    (*n)++;
    return true;
}

/* Returns the number of tensors, or 0 when out of memory. */
static size_t build_tensors(const synth_shape *sh, df11_tensor_source *t)
{
    uint64_t h = sh->hidden, hd = sh->hidden / sh->heads;
    uint64_t q = sh->heads * hd, kv = sh->kv_heads * hd;
    size_t n = 0;
    bool ok = true;
    if (!sh->block_only) ok = add(t, &n, strdup("model.embed_tokens.weight"), sh->vocab, h);
    for (uint32_t l = 0; ok && l < sh->layers; l++) {
        const char *p = "model.layers";
        ok = add(t, &n, strdup_printf("%s.%u.input_layernorm.weight", p, l), h, 0) &&
             add(t, &n, strdup_printf("%s.%u.self_attn.q_proj.weight", p, l), q, h) &&
             add(t, &n, strdup_printf("%s.%u.self_attn.k_proj.weight", p, l), kv, h) &&
             add(t, &n, strdup_printf("%s.%u.self_attn.v_proj.weight", p, l), kv, h) &&
             add(t, &n, strdup_printf("%s.%u.self_attn.o_proj.weight", p, l), h, q) &&
             add(t, &n, strdup_printf("%s.%u.post_attention_layernorm.weight", p, l), h, 0) &&
             add(t, &n, strdup_printf("%s.%u.mlp.gate_proj.weight", p, l), sh->inter, h) &&
             add(t, &n, strdup_printf("%s.%u.mlp.up_proj.weight", p, l), sh->inter, h) &&
             add(t, &n, strdup_printf("%s.%u.mlp.down_proj.weight", p, l), h, sh->inter);
    }
    if (ok && !sh->block_only) {
        ok = add(t, &n, strdup("model.norm.weight"), h, 0);
        if (ok && !sh->tied) ok = add(t, &n, strdup("lm_head.weight"), sh->vocab, h);
    }
    if (!ok) {
        for (size_t i = 0; i < n; i++) free((char *)t[i].name);
        return 0;
    }
    return n;
}

/* ---- config.json ---- */

static char *config_text(const synth_shape *sh)
{
    cJSON *c = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", "llama");
    cJSON_AddNumberToObject(c, "hidden_size", sh->hidden);
    cJSON_AddNumberToObject(c, "intermediate_size", sh->inter);
    cJSON_AddNumberToObject(c, "num_hidden_layers", sh->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", sh->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", sh->kv_heads);
    cJSON_AddNumberToObject(c, "vocab_size", sh->vocab);
    cJSON_AddNumberToObject(c, "max_position_embeddings", sh->max_pos);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", sh->rope_theta);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", sh->tied);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
    cJSON_AddNumberToObject(c, "bos_token_id", 1);
    cJSON_AddNumberToObject(c, "eos_token_id", 2);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    return text;
}

/* Written like the model (common/atomic_file.h), so a failed run leaves no half-written
 * config. */
static df11_status write_file(const char *path, const char *text)
{
    df11i_atomic_file af;
    df11_status st = df11i_atomic_file_begin(&af, path);
    if (st != DF11_OK) return st;
    st = df11i_atomic_file_write(&af, text, strlen(text));
    if (st == DF11_OK) st = df11i_atomic_file_write(&af, "\n", 1);
    if (st == DF11_OK) return df11i_atomic_file_commit(&af);
    df11i_atomic_file_abort(&af);
    return st;
}

/* ---- main ---- */

static int bad_usage(const char *msg, const char *arg)
{
    return cli_usage_error(PROG, "%s '%s'", msg, arg);
}

static char *join(const char *dir, size_t dir_len, const char *name)
{
    char *p = malloc(dir_len + strlen(name) + 2);
    if (p)
        sprintf(p, "%.*s%s%s", (int)dir_len, dir, dir_len && dir[dir_len - 1] != '/' ? "/" : "",
                name);
    return p;
}

/* mkdir -p: OUT and the folders above it that are missing (0 on success, errno set). */
static int mkdir_parents(const char *path)
{
    char *p = strdup(path);
    if (!p) return -1;
    int rc = 0;
    for (char *c = p + 1; rc == 0; c++) {
        const char end = *c;
        if (end != '/' && end != '\0') continue;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = -1;
        *c = end;
        if (end == '\0') break;
    }
    const int saved = errno;
    free(p);
    errno = saved;
    return rc;
}

int main(int argc, char **argv)
{
    enum { OPT_SHAPE = 256, OPT_LAYERS, OPT_SEED, OPT_VOCAB, OPT_VERSION };
    static const struct option longopts[] = {
        { "output", required_argument, NULL, 'o' },
        { "shape", required_argument, NULL, OPT_SHAPE },
        { "layers", required_argument, NULL, OPT_LAYERS },
        { "seed", required_argument, NULL, OPT_SEED },
        { "vocab", required_argument, NULL, OPT_VOCAB },
        { "threads", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { NULL, 0, NULL, 0 },
    };
    const char *out = NULL;
    synth_shape sh = shapes[0];
    uint64_t layers = 0, vocab = 0, seed = 0, threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_SHAPE: {
            size_t i = 0, n = sizeof shapes / sizeof shapes[0];
            while (i < n && strcmp(shapes[i].name, optarg) != 0) i++;
            if (i == n) return bad_usage("unknown shape", optarg);
            sh = shapes[i];
            break;
        }
        case OPT_LAYERS:
            if (!cli_parse_u64(optarg, 1, 10000, 10, &layers))
                return bad_usage("--layers wants 1..10000, not", optarg);
            break;
        case OPT_SEED:
            if (!cli_parse_u64(optarg, 0, UINT64_MAX, 0, &seed))
                return bad_usage("--seed wants an unsigned integer, not", optarg);
            break;
        case OPT_VOCAB:
            if (!cli_parse_u64(optarg, 1, 1u << 24, 10, &vocab))
                return bad_usage("--vocab wants 1..16777216, not", optarg);
            break;
        case 't':
            if (!cli_parse_u64(optarg, 0, 4096, 10, &threads))
                return bad_usage("--threads wants 0..4096, not", optarg);
            break;
        case 'h': usage(stdout); return CLI_OK;
        case OPT_VERSION: cli_version(PROG); return CLI_OK;
        default: fprintf(stderr, "Try '" PROG " --help'.\n"); return CLI_USAGE;
        }
    }
    if (optind < argc) return bad_usage("unexpected argument", argv[optind]);
    if (!out || !out[0]) return cli_usage_error(PROG, "-o OUT is required");
    if (layers) sh.layers = (uint32_t)layers;
    if (vocab) sh.vocab = (uint32_t)vocab;

    /* Where the two files go. */
    size_t out_len = strlen(out);
    struct stat sb;
    bool is_dir = out[out_len - 1] == '/' || (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode));
    if (is_dir && mkdir_parents(out) != 0) {
        fprintf(stderr, PROG ": cannot create '%s': %s\n", out, strerror(errno));
        return CLI_FAIL;
    }
    char *model_path, *config_path;
    if (is_dir) {
        model_path = join(out, out_len, "model.safetensors");
        config_path = join(out, out_len, "config.json");
    } else {
        const char *slash = strrchr(out, '/');
        model_path = strdup(out);
        config_path =
            slash ? join(out, (size_t)(slash - out + 1), "config.json") : strdup("config.json");
    }

    size_t max_tensors = 3 + 9 * (size_t)sh.layers;
    df11_tensor_source *t = calloc(max_tensors, sizeof *t);
    size_t n = t ? build_tensors(&sh, t) : 0;
    char *config = config_text(&sh);
    if (!model_path || !config_path || !n || !config) {
        fprintf(stderr, PROG ": out of memory\n");
        return CLI_FAIL;
    }

    synth s = { .tensors = t, .n = n, .seed = seed, .threads = (int)threads };
    for (size_t i = 0; i < n; i++)
        s.bytes_total += 2 * t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);

    /* "format": "pt" is what transformers checks before trusting a safetensors file. */
    int rc = CLI_OK;
    df11_status st = df11i_st_write_fill(model_path, t, n, "{\"format\":\"pt\"}", fill_tensor, &s);
    if (st != DF11_OK) {
        rc = cli_fail(PROG, st, "cannot write '%s'", model_path);
    } else if ((st = write_file(config_path, config)) != DF11_OK) {
        rc = cli_fail(PROG, st, "cannot write '%s'", config_path);
    } else {
        printf("%s: %zu tensors, %llu bytes of BF16 (%s, %u layers, seed %llu)\n%s\n", model_path,
               n, (unsigned long long)s.bytes_total, sh.name, sh.layers, (unsigned long long)seed,
               config_path);
    }

    for (size_t i = 0; i < n; i++) free((char *)t[i].name);
    free(t);
    free(config);
    free(model_path);
    free(config_path);
    return rc;
}
