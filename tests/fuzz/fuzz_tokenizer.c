/* Fuzz target: tokenizer_load_buffer (llama2.c's tokenizer.bin from memory), then
 * tokenizer_encode and tokenizer_decode with the loaded vocabulary
 * (examples/run/tokenizer.h).
 * Input: u16 vocab_size (little-endian), u8 prompt length P, u8 max_ids (0: the prompt's
 * length + 3), the tokenizer.bin bytes, and the prompt as the input's last P bytes (cut at
 * its first NUL). Bit 0 of P asks for BOS.
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - loading returns 0, or -1 with a non-empty message and *t zeroed;
 *  - a loaded tokenizer has vocab_size pieces, each a string of lens[i] bytes, with finite
 *    scores, and max_token_length in [1, TOKENIZER_MAX_PIECE];
 *  - encoding returns -1 with a message, or at most max_ids ids (the id buffer is exactly
 *    max_ids long), BOS first when asked for and the vocabulary has one, every id in
 *    [0, vocab_size);
 *  - decoding each id (after its predecessor) gives a string no longer than its piece;
 *  - tokenizer_lookup of an id's piece finds an id with that same piece. */
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "tokenizer.h"

static void check_encode(const tokenizer *t, const char *prompt, int bos, int max_ids)
{
    int *ids = malloc((size_t)max_ids * sizeof *ids);
    if (!ids) return;
    char err[256] = "";
    int n = tokenizer_encode(t, prompt, bos, ids, max_ids, err, sizeof err);
    FUZZ_CHECK(n == -1 || (n >= 0 && n <= max_ids), "%d ids, room for %d", n, max_ids);
    if (n < 0) FUZZ_CHECK(err[0] != '\0', "encode failed without a message");
    if (n > 0 && bos && t->bos_id >= 0)
        FUZZ_CHECK(ids[0] == t->bos_id, "first id %d, not BOS", ids[0]);
    int prev = -1;
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < t->vocab_size, "id %d of %d", ids[i], t->vocab_size);
        char byte[2];
        const char *text = tokenizer_decode(t, prev, ids[i], byte);
        FUZZ_CHECK(text != NULL && strlen(text) <= strlen(t->pieces[ids[i]]), "decode of id %d",
                   ids[i]);
        int found = tokenizer_lookup(t, t->pieces[ids[i]]);
        FUZZ_CHECK(found >= 0 && found < t->vocab_size &&
                       strcmp(t->pieces[found], t->pieces[ids[i]]) == 0,
                   "piece of id %d looked up as %d", ids[i], found);
        prev = ids[i];
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    const int vocab_size = data[0] | data[1] << 8;
    size_t plen = data[2];
    int max_ids = data[3];
    const uint8_t *body = data + 4;
    size_t body_size = size - 4;
    if (plen > body_size) plen = body_size;
    body_size -= plen;
    char *prompt = malloc(plen + 1);
    void *bin = malloc(body_size ? body_size : 1); /* exact size: over-reads show */
    if (!prompt || !bin) {
        free(prompt);
        free(bin);
        return 0;
    }
    memcpy(prompt, body + body_size, plen);
    prompt[plen] = '\0';
    memcpy(bin, body, body_size);
    if (max_ids == 0) max_ids = (int)strlen(prompt) + 3;

    tokenizer t;
    char err[256] = "";
    int r = tokenizer_load_buffer(&t, bin, body_size, vocab_size, err, sizeof err);
    FUZZ_CHECK(r == 0 || r == -1, "load returned %d", r);
    if (r != 0) {
        FUZZ_CHECK(err[0] != '\0', "failure without a message");
        FUZZ_CHECK(t.pieces == NULL && t.vocab_size == 0, "failure left a tokenizer");
    } else {
        FUZZ_CHECK(t.vocab_size == vocab_size, "vocab %d, asked %d", t.vocab_size, vocab_size);
        FUZZ_CHECK(t.max_token_length >= 1 && t.max_token_length <= TOKENIZER_MAX_PIECE,
                   "max_token_length %d", t.max_token_length);
        for (int i = 0; i < t.vocab_size; i++)
            FUZZ_CHECK(t.pieces[i] && strlen(t.pieces[i]) == (size_t)t.lens[i] &&
                           isfinite(t.scores[i]),
                       "piece %d", i);
        check_encode(&t, prompt, (int)(plen & 1), max_ids);
    }
    tokenizer_free(&t);
    free(prompt);
    free(bin);
    return 0;
}
