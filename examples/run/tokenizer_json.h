/* A BPE tokenizer read from a Hugging Face `tokenizer.json` (the `tokenizers` library's
 * format), for the two families that cover most Llama-style models:
 *   - byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM): a Split pre-tokenizer regex (run by
 *     PCRE2 with Unicode properties) and/or a ByteLevel pre-tokenizer that maps each byte to
 *     GPT-2's printable stand-in character before the merges;
 *   - SentencePiece-style BPE (Llama-2, Mistral): "▁" for spaces, put there by a
 *     Prepend/Replace normalizer or a Metaspace pre-tokenizer, and `<0xXX>` byte-fallback
 *     tokens for characters that have no piece.
 * Encoding follows `tokenizers`: added tokens (special or not) are found in the raw text
 * first, leftmost and longest; each stretch between them is normalized, pre-tokenized and
 * merged by rank (lowest first, the leftmost of equal ranks) over a heap, O(n log n) per
 * pre-token; with add_special the post-processor's BOS/EOS (or tokenizer_config.json's
 * add_bos_token/add_eos_token) are added. Input that is not valid UTF-8 is read as Python
 * reads bytes with errors="replace": each maximal invalid subpart becomes U+FFFD.
 *
 * The file is outside input: every field used is type- and range-checked, an unsupported
 * component (a normalizer, pre-tokenizer, model or decoder type this code does not
 * implement) is refused by name at load rather than silently ignored, and the regex runs
 * under PCRE2 match limits so a hostile pattern fails the encode instead of hanging it.
 * Not implemented (refused when present): Unigram/WordPiece models, NFKC and the other
 * Unicode normalizers, BPE dropout, added tokens' single_word; NFC is applied
 * only where it changes nothing (encode refuses text it would change, see docs/ENGINE.md).
 */
#ifndef DF11_RUN_TOKENIZER_JSON_H
#define DF11_RUN_TOKENIZER_JSON_H

#include <stddef.h>

/* Bounds on a tokenizer.json: the file (real ones are < 20 MB), the vocabulary (the
 * largest real ones are ~260 k), an added token (the trie walk costs this per byte). */
#define HF_TOKENIZER_MAX_FILE (256u << 20)
#define HF_TOKENIZER_MAX_VOCAB (1 << 22)
#define HF_TOKENIZER_MAX_ADDED_LEN 256

typedef struct hf_tokenizer hf_tokenizer;

/* Loads `path` (a tokenizer.json) and, from the same folder when present,
 * tokenizer_config.json (bos_token, eos_token, add_bos_token, add_eos_token) and
 * generation_config.json (bos_token_id, eos_token_id, a number or a list). Returns 0 and
 * *out (free with hf_tokenizer_free), or -1 with a message in err and *out NULL. */
int hf_tokenizer_load(hf_tokenizer **out, const char *path, char *err, size_t errlen);
/* The same from memory: `json` (len bytes, need not be NUL-terminated; not kept) and the
 * two optional configs (NULL when absent). */
int hf_tokenizer_load_buffer(hf_tokenizer **out, const char *json, size_t len, const char *config,
                             size_t config_len, const char *gen_config, size_t gen_len, char *err,
                             size_t errlen);
void hf_tokenizer_free(hf_tokenizer *t);

/* Encodes `len` bytes of `text` into at most max_ids ids; add_special adds BOS/EOS as the
 * tokenizer asks (see above). Returns the count, or -1 with a message in err (may be NULL)
 * when more than max_ids ids are needed, a character has no token (no byte fallback, no
 * unk_token), or the regex fails (match limit). Cost: O(n log n) in the text's bytes, plus
 * O(n * HF_TOKENIZER_MAX_ADDED_LEN) at worst for finding added tokens. */
int hf_tokenizer_encode(const hf_tokenizer *t, const char *text, size_t len, int add_special,
                        int *ids, int max_ids, char *err, size_t errlen);
/* The bytes of token `id` following token `prev` (-1 at the start): byte-level pieces
 * mapped back to bytes, `<0xXX>` to its byte, "▁" to a space (dropped at the start or after
 * BOS when the decoder strips it), added tokens as their text. Sets *n (the bytes may hold
 * a NUL or part of a UTF-8 character) and returns a pointer valid while t lives; "" for an
 * id outside the vocabulary. */
const char *hf_tokenizer_decode(const hf_tokenizer *t, int prev, int id, size_t *n);
/* Id of a piece or added token, or -1. */
int hf_tokenizer_lookup(const hf_tokenizer *t, const char *piece);
int hf_tokenizer_vocab_size(const hf_tokenizer *t);
/* BOS and the main EOS (-1 when the files name none); is_eos is also true for every id of
 * generation_config.json's eos_token_id list. */
int hf_tokenizer_bos(const hf_tokenizer *t);
int hf_tokenizer_eos(const hf_tokenizer *t);
int hf_tokenizer_is_eos(const hf_tokenizer *t, int id);

/* Chat formats, chosen at load from tokenizer_config.json's chat_template (the markers it
 * writes) or else from the special tokens the vocabulary has. No template engine: each is
 * the family's single-turn layout, written out below. */
typedef enum hf_chat {
    HF_CHAT_NONE,   /* no known format */
    HF_CHAT_LLAMA3, /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    HF_CHAT_CHATML, /* <|im_start|>role\n...<|im_end|>\n (Qwen2, SmolLM) */
    HF_CHAT_INST,   /* BOS [INST] ... [/INST] (Llama-2, Mistral) */
} hf_chat;
hf_chat hf_tokenizer_chat_format(const hf_tokenizer *t);
/* One user turn (after a system turn when `system` is not NULL) in the tokenizer's chat
 * format, ending where the assistant's reply begins; BOS is written into the text, so
 * encode it with add_special 0. The end-of-turn token (<|eot_id|>, <|im_end|>) counts as EOS
 * for hf_tokenizer_is_eos. Returns malloc'd text (the caller frees it), or NULL when the
 * format is HF_CHAT_NONE or memory runs out. */
char *hf_tokenizer_chat(const hf_tokenizer *t, const char *system, const char *user);

#endif
