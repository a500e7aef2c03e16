/* A byte-pair tokenizer in llama2.c's tokenizer.bin format:
 *     int32 max_token_length
 *     vocab_size times: float32 score, int32 len, len bytes (the piece, no NUL)
 * Encoding follows SentencePiece as llama2.c's run.c does it: a leading space is added,
 * each UTF-8 character becomes its piece (or its bytes as <0xXX> tokens 3 + byte), then
 * the adjacent pair whose merge has the highest score is merged until none merges. */
#ifndef DF11_RUN_TOKENIZER_H
#define DF11_RUN_TOKENIZER_H

#include <stddef.h>

typedef struct tokenizer {
    int vocab_size;
    int max_token_length;
    char **pieces;       /* NUL-terminated */
    float *scores;
    int *sorted;         /* ids sorted by piece, for lookup */
    int bos_id, eos_id;
} tokenizer;

/* Loads `path` for a model of vocab_size tokens. Returns 0, or -1 with a message in err. */
int tokenizer_load(tokenizer *t, const char *path, int vocab_size, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);
/* Encodes `text` into ids (room for strlen(text) + 3), BOS first if bos. Returns the count. */
int tokenizer_encode(const tokenizer *t, const char *text, int bos, int *ids);
/* The text of token `id` following token `prev`: the space after BOS is dropped and
 * <0xXX> pieces become their byte. Returns a pointer into t or into `byte` (2 chars). */
const char *tokenizer_decode(const tokenizer *t, int prev, int id, char byte[2]);
/* Id of a piece, or -1. */
int tokenizer_lookup(const tokenizer *t, const char *piece);

#endif
