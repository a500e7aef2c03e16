/* Fuzz target: dfl_config_parse, a Hugging Face config.json (examples/run/dfl.h). The
 * input is the JSON text, not NUL-terminated (the function takes a length).
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - the result is 0 or -1, and -1 comes with a NUL-terminated, non-empty message;
 *  - 0 gives a shape the engine can run: dim, n_layers, n_heads, n_kv_heads, head_dim,
 *    hidden_dim, vocab_size and max_pos positive, n_kv_heads dividing n_heads, head_dim
 *    even;
 *  - a message never overruns a short err buffer. */
#include <string.h>

#include "dfl.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy whatever the caller passed, so ASan sees a read past `size`. */
    char *json = malloc(size ? size : 1);
    if (!json) return 0;
    memcpy(json, data, size);
    dfl_config cfg;
    char err[256];
    memset(err, 0, sizeof err);
    int r = dfl_config_parse(json, size, &cfg, err, sizeof err);
    FUZZ_CHECK(r == 0 || r == -1, "returned %d", r);
    if (r != 0) {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) && err[0], "failure without a message");
    } else {
        FUZZ_CHECK(
            cfg.dim > 0 && cfg.n_layers > 0 && cfg.n_heads > 0 && cfg.n_kv_heads > 0 &&
                cfg.head_dim > 0 && cfg.hidden_dim > 0 && cfg.vocab_size > 0 && cfg.max_pos > 0,
            "accepted dim %d layers %d heads %d/%d head_dim %d hidden %d vocab %d max_pos %d",
            cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim,
            cfg.vocab_size, cfg.max_pos);
        FUZZ_CHECK(cfg.n_heads % cfg.n_kv_heads == 0 && cfg.head_dim % 2 == 0,
                   "accepted heads %d/%d head_dim %d", cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    }
    char *tiny = malloc(4); /* on the heap, so ASan sees a message written past it */
    if (tiny) {
        if (dfl_config_parse(json, size, &cfg, tiny, 4) != 0)
            FUZZ_CHECK(memchr(tiny, '\0', 4) != NULL, "message not terminated in 4 bytes");
        free(tiny);
    }
    free(json);
    return 0;
}
