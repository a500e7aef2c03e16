/* Fuzz target: df11_hparams_parse, a Hugging Face config.json (include/df11/runtime.h). The
 * input is the JSON text, not NUL-terminated (the function takes a length).
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - the result is DF11_OK or DF11_ERR_CORRUPT (with a detail), or DF11_ERR_NO_MEMORY;
 *  - DF11_OK gives what the header promises: sizes in 1..the limits, kv heads dividing
 *    heads, an even head_dim, heads x head_dim within the limit, ids below vocab_size,
 *    eps and theta positive and finite, NUL-terminated strings. */
#include <math.h>
#include <string.h>

#include "df11/runtime.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy whatever the caller passed, so ASan sees a read past `size`. */
    char *json = malloc(size ? size : 1);
    if (!json) return 0;
    memcpy(json, data, size);
    df11_hparams h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    df11_status s = df11_hparams_parse(json, size, &h);
    free(json);
    FUZZ_CHECK(s == DF11_OK || s == DF11_ERR_CORRUPT || s == DF11_ERR_NO_MEMORY, "returned %d",
               (int)s);
    if (s != DF11_OK) {
        FUZZ_CHECK(df11_last_error_detail()[0], "failure without a detail");
        return 0;
    }
    const uint32_t M = DF11_HPARAMS_MAX_DIM;
    FUZZ_CHECK(h.hidden_size - 1 < M && h.intermediate_size - 1 < M && h.vocab_size - 1 < M &&
                   h.n_heads - 1 < M && h.n_kv_heads - 1 < M && h.head_dim - 1 < M &&
                   h.n_layers - 1 < DF11_HPARAMS_MAX_LAYERS &&
                   h.max_positions - 1 < DF11_HPARAMS_MAX_POSITIONS,
               "accepted hidden %u inter %u vocab %u heads %u/%u head_dim %u layers %u pos %u",
               h.hidden_size, h.intermediate_size, h.vocab_size, h.n_heads, h.n_kv_heads,
               h.head_dim, h.n_layers, h.max_positions);
    FUZZ_CHECK(h.n_heads % h.n_kv_heads == 0 && h.head_dim % 2 == 0 &&
                   (uint64_t)h.n_heads * h.head_dim <= M,
               "accepted heads %u/%u head_dim %u", h.n_heads, h.n_kv_heads, h.head_dim);
    FUZZ_CHECK(h.bos_token_id < (int64_t)h.vocab_size && h.bos_token_id >= -1 &&
                   h.n_eos_token_ids <= DF11_HPARAMS_MAX_EOS,
               "accepted bos %d, %u eos ids", h.bos_token_id, h.n_eos_token_ids);
    for (uint32_t i = 0; i < h.n_eos_token_ids; i++)
        FUZZ_CHECK(h.eos_token_ids[i] >= 0 && (uint32_t)h.eos_token_ids[i] < h.vocab_size,
                   "accepted eos id %d", h.eos_token_ids[i]);
    FUZZ_CHECK(isfinite(h.rms_norm_eps) && h.rms_norm_eps > 0 && isfinite(h.rope_theta) &&
                   h.rope_theta > 0 && isfinite(h.rope.factor) && h.rope.factor > 0,
               "accepted eps %g theta %g factor %g", h.rms_norm_eps, h.rope_theta, h.rope.factor);
    FUZZ_CHECK(memchr(h.model_type, 0, sizeof h.model_type) &&
                   memchr(h.architecture, 0, sizeof h.architecture) &&
                   memchr(h.rope.name, 0, sizeof h.rope.name) &&
                   memchr(h.hidden_act, 0, sizeof h.hidden_act),
               "unterminated string");
    return 0;
}
