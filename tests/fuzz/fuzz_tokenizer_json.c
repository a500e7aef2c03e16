/* Fuzz target: hf_tokenizer_load_buffer (a Hugging Face tokenizer.json from memory), then
 * hf_tokenizer_encode, hf_tokenizer_decode and hf_tokenizer_chat with the loaded tokenizer
 * (examples/run/tokenizer_json.h).
 * Input: u8 prompt length P, u8 flags (bit 0: add_special, bits 1..7: max_ids / 2, 0 for
 * 3 * P + 8), the tokenizer.json text, and the prompt as the input's last P bytes (any
 * bytes: NULs and invalid UTF-8 included).
 *
 * Asserts, besides "no crash, leak, hang or undefined behaviour" (the sanitizers, and
 * libFuzzer's timeout for anything super-linear):
 *  - loading returns 0 with a tokenizer, or -1 with a non-empty message and NULL;
 *  - encoding returns -1 with a message, or at most max_ids ids (the id buffer is exactly
 *    max_ids long), each in [0, vocab_size);
 *  - decoding each id gives a length and a readable pointer; lookup and chat do not fail
 *    on the prompt's bytes. */
#include <string.h>

#include "fuzz.h"
#include "tokenizer_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t plen = data[0], body = size - 2;
    int special = data[1] & 1, max_ids = (data[1] >> 1) * 2;
    if (plen > body) plen = body;
    body -= plen;
    const char *json = (const char *)data + 2, *prompt = json + body;
    if (max_ids == 0) max_ids = 3 * (int)plen + 8;

    hf_tokenizer *t = (hf_tokenizer *)&t;
    char err[256] = "";
    int r = hf_tokenizer_load_buffer(&t, json, body, NULL, 0, NULL, 0, err, sizeof err);
    FUZZ_CHECK(r == 0 || r == -1, "load returned %d", r);
    if (r != 0) {
        FUZZ_CHECK(err[0] != '\0' && t == NULL, "failure without a message, or a tokenizer");
        return 0;
    }
    int *ids = malloc((size_t)max_ids * sizeof *ids);
    char *text = malloc(plen + 1);
    if (!ids || !text) {
        free(ids);
        free(text);
        hf_tokenizer_free(t);
        return 0;
    }
    int V = hf_tokenizer_vocab_size(t);
    int n = hf_tokenizer_encode(t, prompt, plen, special, ids, max_ids, err, sizeof err);
    FUZZ_CHECK(n == -1 || (n >= 0 && n <= max_ids), "%d ids, room for %d", n, max_ids);
    if (n < 0) FUZZ_CHECK(err[0] != '\0', "encode failed without a message");
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "id %d of %d", ids[i], V);
        size_t m;
        const char *s = hf_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], &m);
        /* memchr reads all m bytes: ASan sees an overrun */
        FUZZ_CHECK(s && (m == 0 || memchr(s, s[m - 1], m)), "decode of id %d", ids[i]);
    }
    memcpy(text, prompt, plen);
    text[plen] = 0;
    (void)hf_tokenizer_lookup(t, text);
    (void)hf_tokenizer_is_eos(t, hf_tokenizer_eos(t));
    char *chat = hf_tokenizer_chat(t, plen & 1 ? text : NULL, text);
    FUZZ_CHECK(chat || hf_tokenizer_chat_format(t) == HF_CHAT_NONE, "chat format without text");
    free(chat);
    free(ids);
    free(text);
    hf_tokenizer_free(t);
    return 0;
}
