/* A byte-pair tokenizer in llama2.c's tokenizer.bin format:
 *     int32 max_token_length
 *     vocab_size times: float32 score, int32 len, len bytes (the piece, no NUL)
 * all little-endian, nothing after the last piece. Encoding follows SentencePiece as
 * llama2.c's run.c does it: a leading space is added, each UTF-8 character becomes its
 * piece (or its bytes as <0xXX> byte tokens), then the adjacent pair whose merge has the
 * highest score (the leftmost of equal scores) is merged until none merges.
 *
 * The file is untrusted: tokenizer_load_buffer checks every field before use (see there)
 * and the encoder only ever emits ids < vocab_size. Byte fallback uses the token whose piece
 * is "<0xXX>" (at 3 + byte in llama2.c's files, but found by its piece, not assumed); a
 * byte that has no such token makes tokenizer_encode fail: it never guesses an id or drops
 * text.
 *
 * Cost: the merges run over a linked list of symbols with a priority queue of adjacent
 * pairs (stale entries skipped), O(n log n) for n bytes of text, not the O(n^2) rescan of
 * run.c; and a text that cannot fit max_ids tokens is refused before any merging, since a
 * token covers at most max_token_length bytes.
 */
#ifndef DF11_RUN_TOKENIZER_H
#define DF11_RUN_TOKENIZER_H

#include <stddef.h>

/* The longest piece a tokenizer.bin may declare (max_token_length): real vocabularies stay
 * far below (llama2's is 27, Llama 3's 256). */
#define TOKENIZER_MAX_PIECE 1024

typedef struct tokenizer {
    int vocab_size;
    int max_token_length;
    char **pieces;      /* NUL-terminated, no NUL inside; point into one block */
    int *lens;          /* strlen of each piece */
    float *scores;      /* finite */
    int *sorted;        /* ids sorted by (piece, id), for lookup */
    int byte_ids[256];  /* id of the piece "<0xXX>" for byte XX, or -1 */
    int bos_id, eos_id; /* 1 and 2 when the vocabulary has them, else -1 */
} tokenizer;

/* Loads a tokenizer.bin image of `size` bytes (need not be aligned or NUL-terminated; not
 * kept) for a model of vocab_size tokens. Rejects, with a message in err: vocab_size <= 0;
 * a file too short for vocab_size entries or with bytes after them; max_token_length
 * outside [1, TOKENIZER_MAX_PIECE]; a piece length that is negative, longer than
 * max_token_length or past the end; a NUL inside a piece; a score that is NaN or infinite.
 * Returns 0, or -1 with *t zeroed (tokenizer_free on it is harmless). */
int tokenizer_load_buffer(tokenizer *t, const void *data, size_t size, int vocab_size, char *err,
                          size_t errlen);
/* The same from a file; anything but a regular file (a FIFO, a directory) is refused
 * without blocking. */
int tokenizer_load(tokenizer *t, const char *path, int vocab_size, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);
/* Encodes `text` into at most max_ids ids, BOS first if bos (and the vocabulary has one).
 * Returns the count, or -1 with a message in err (may be NULL) when the text needs more than
 * max_ids tokens (checked before merging where a bound shows it) or holds a byte that has
 * no token and no <0xXX> fallback. */
int tokenizer_encode(const tokenizer *t, const char *text, int bos, int *ids, int max_ids,
                     char *err, size_t errlen);
/* The text of token `id` following token `prev`: the space after BOS is dropped and
 * <0xXX> pieces become their byte. Returns a pointer into t or into `byte` (2 chars); ""
 * for an id outside the vocabulary. */
const char *tokenizer_decode(const tokenizer *t, int prev, int id, char byte[2]);
/* Id of a piece (the lowest if the vocabulary repeats it), or -1. */
int tokenizer_lookup(const tokenizer *t, const char *piece);

#endif
