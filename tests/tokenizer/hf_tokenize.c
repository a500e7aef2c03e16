/* The C side of tests/tokenizer/compare_hf.py: loads a tokenizer.json with
 * examples/run/tokenizer_json.c and answers records on stdin, each a 4-byte little-endian
 * length and that many bytes of text, with two lines on stdout: the ids (space-separated,
 * or "ERR message") and the hex of the ids decoded back to bytes.
 * Usage: hf_tokenize TOKENIZER.json [--special]   (--special adds BOS/EOS as configured) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_json.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--special") != 0)) {
        fprintf(stderr, "usage: hf_tokenize TOKENIZER.json [--special]\n");
        return 2;
    }
    char err[512];
    hf_tokenizer *t;
    if (hf_tokenizer_load(&t, argv[1], err, sizeof err) != 0) {
        fprintf(stderr, "hf_tokenize: %s\n", err);
        return 1;
    }
    unsigned char h[4];
    while (fread(h, 1, 4, stdin) == 4) {
        size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
        char *text = malloc(n + 1);
        /* At most 3 tokens per input byte (U+FFFD for an invalid byte), plus specials. */
        int cap = (int)(3 * n + 16), *ids = malloc((size_t)cap * sizeof *ids);
        if (!text || !ids || fread(text, 1, n, stdin) != n) {
            fprintf(stderr, "hf_tokenize: short record\n");
            return 1;
        }
        int k = hf_tokenizer_encode(t, text, n, argc == 3, ids, cap, err, sizeof err);
        if (k < 0) {
            printf("ERR %s\n\n", err);
        } else {
            for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
            putchar('\n');
            for (int i = 0; i < k; i++) {
                size_t m;
                const unsigned char *s =
                    (const unsigned char *)hf_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], &m);
                for (size_t j = 0; j < m; j++) printf("%02x", s[j]);
            }
            putchar('\n');
        }
        fflush(stdout);
        free(text);
        free(ids);
    }
    hf_tokenizer_free(t);
    return 0;
}
