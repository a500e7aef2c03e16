/* Length-limited canonical Huffman codes for the 256 exponent values, their compact
 * codebook encoding, and the single-lookup decode table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/error.h"

double df11i_entropy(const uint64_t hist[256])
{
    uint64_t total = 0;
    for (int s = 0; s < 256; s++) total += hist[s];
    if (total == 0) return 0.0;
    double h = 0.0;
    for (int s = 0; s < 256; s++)
        if (hist[s]) {
            double p = (double)hist[s] / (double)total;
            h -= p * log2(p);
        }
    return h;
}

/* Plain Huffman code lengths by repeatedly merging the two lightest nodes. n <= 256, so
 * the quadratic search costs nothing next to the histogram. Weights saturate, so that any
 * histogram (even one summing past 2^64) gives lengths; depths stay below n <= 256. */
static void huffman_lengths(const uint64_t hist[256], const int *syms, int n, uint8_t *len)
{
    uint64_t weight[512];
    int parent[512], alive[512];
    for (int i = 0; i < n; i++) {
        weight[i] = hist[syms[i]];
        alive[i] = 1;
        parent[i] = -1;
    }
    int nodes = n;
    for (int merges = 0; merges < n - 1; merges++) {
        int a = -1, b = -1;
        for (int i = 0; i < nodes; i++) {
            if (!alive[i]) continue;
            if (a < 0 || weight[i] < weight[a]) {
                b = a;
                a = i;
            } else if (b < 0 || weight[i] < weight[b])
                b = i;
        }
        alive[a] = alive[b] = 0;
        weight[nodes] = weight[a] + weight[b] < weight[a] ? UINT64_MAX : weight[a] + weight[b];
        alive[nodes] = 1;
        parent[nodes] = -1;
        parent[a] = parent[b] = nodes;
        nodes++;
    }
    for (int i = 0; i < n; i++) {
        int depth = 0;
        for (int p = parent[i]; p >= 0; p = parent[p]) depth++;
        len[syms[i]] = (uint8_t)depth;
    }
}

/* The fewest bits whose 2^bits codes cover n symbols. */
static uint32_t min_code_len(int n)
{
    uint32_t bits = 0;
    while ((1 << bits) < n) bits++;
    return bits;
}

/* Brings every length under max_len and makes the code complete (Kraft sum exactly 1):
 * lengthen the rarest codes that still can be, then give back slack to the most frequent
 * ones. Needs n <= 2^max_len (else no prefix code of n symbols fits) and fails otherwise,
 * as it does if the result is not complete, rather than hand on a code no decoder can
 * use. The loss against optimal (package-merge) is far below the metadata cost; it is
 * measured in bench/RESULTS.md. */
static df11_status limit_lengths(const uint64_t hist[256], const int *syms, int n, uint8_t *len,
                                 uint32_t max_len)
{
    if (n < 2 || n > 256 || max_len < 1 || max_len > DF11_MAX_CODE_LEN || n > (1 << max_len))
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "%d distinct exponents cannot be coded in %u bits "
                          "(the max code length must be at least %u)",
                          n, max_len, min_code_len(n));
    const uint64_t full = 1ull << max_len;
    uint64_t kraft = 0;
    for (int i = 0; i < n; i++) {
        if (len[syms[i]] > max_len || len[syms[i]] < 1) len[syms[i]] = (uint8_t)max_len;
        kraft += full >> len[syms[i]];
    }
    /* Every pass lengthens one code that is shorter than max_len; with all n at max_len
     * the sum would be n <= full, so a code to lengthen exists while kraft > full. */
    while (kraft > full) {
        int pick = -1;
        for (int i = 0; i < n; i++) {
            int s = syms[i];
            if (len[s] >= max_len) continue;
            if (pick < 0 || hist[s] < hist[pick] || (hist[s] == hist[pick] && len[s] > len[pick]))
                pick = s;
        }
        if (pick < 0) break; /* cannot happen (see above); the check below reports it */
        kraft -= full >> (len[pick] + 1);
        len[pick]++;
    }
    /* Spend leftover slack: shorten the most frequent codes while Kraft still holds. A
     * longest code can always take the last of it (the slack is a multiple of its
     * weight), so this ends with the sum exactly full. */
    int order[256];
    memcpy(order, syms, sizeof(int) * (size_t)n);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && hist[order[j]] > hist[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < n; i++) {
            int s = order[i];
            if (len[s] > 1 && kraft + (full >> len[s]) <= full) {
                kraft += full >> len[s];
                len[s]--;
                changed = 1;
            }
        }
    }
    kraft = 0;
    for (int i = 0; i < n; i++) {
        if (len[syms[i]] < 1 || len[syms[i]] > max_len)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "length limiter: exponent %d got length %u, limit %u", syms[i],
                              len[syms[i]], max_len);
        kraft += full >> len[syms[i]];
    }
    if (kraft != full)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "length limiter: Kraft sum %llu/%llu for %d exponents at "
                          "max length %u (want a complete code)",
                          (unsigned long long)kraft, (unsigned long long)full, n, max_len);
    return DF11_OK;
}

df11_status df11i_code_build(const uint64_t hist[256], uint32_t max_len, df11i_code *code)
{
    if (!hist || !code || max_len < 1 || max_len > DF11_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_INVALID_ARG, "max code length %u not in 1..%d", max_len,
                          DF11_MAX_CODE_LEN);
    memset(code, 0, sizeof *code);
    code->max_len = max_len;
    code->single_symbol = -1;
    int syms[256], n = 0;
    for (int s = 0; s < 256; s++)
        if (hist[s]) syms[n++] = s;
    if (n <= 1) { /* all exponents equal (or no elements): zero-length code */
        code->single_symbol = n ? syms[0] : 0;
        return DF11_OK;
    }
    huffman_lengths(hist, syms, n, code->len);
    df11_status st = limit_lengths(hist, syms, n, code->len, max_len);
    if (st != DF11_OK) memset(code->len, 0, sizeof code->len);
    return st;
}

uint32_t df11i_code_min_len(const uint64_t hist[256])
{
    int n = 0;
    for (int s = 0; s < 256; s++) n += hist[s] != 0;
    return n > 2 ? min_code_len(n) : 1;
}

static void symbol_range(const df11i_code *code, int *lo, int *hi)
{
    *lo = 256;
    *hi = -1;
    for (int s = 0; s < 256; s++)
        if (code->len[s]) {
            if (s < *lo) *lo = s;
            *hi = s;
        }
}

size_t df11i_codebook_size(const df11i_code *code)
{
    if (code->single_symbol >= 0) return 3;
    int lo, hi;
    symbol_range(code, &lo, &hi);
    return 2 + (size_t)(hi - lo + 2) / 2;
}

void df11i_codebook_write(const df11i_code *code, uint8_t *out)
{
    if (code->single_symbol >= 0) {
        out[0] = (uint8_t)code->single_symbol;
        out[1] = 0;
        out[2] = 0;
        return;
    }
    int lo, hi;
    symbol_range(code, &lo, &hi);
    int n = hi - lo + 1;
    out[0] = (uint8_t)lo;
    out[1] = (uint8_t)(n - 1);
    memset(out + 2, 0, (size_t)(n + 1) / 2);
    for (int i = 0; i < n; i++) out[2 + i / 2] |= (uint8_t)(code->len[lo + i] << (4 * (i & 1)));
}

df11_status df11i_codebook_read(const uint8_t *in, size_t avail, uint32_t max_len, df11i_code *code)
{
    if (max_len < 1 || max_len > DF11_MAX_CODE_LEN)
        return df11i_fail(DF11_ERR_CORRUPT, "max code length %u not in 1..%d", max_len,
                          DF11_MAX_CODE_LEN);
    if (avail < 2) return df11i_fail(DF11_ERR_CORRUPT, "codebook truncated");
    int lo = in[0], n = in[1] + 1;
    if (lo + n > 256) return df11i_fail(DF11_ERR_CORRUPT, "codebook symbols past 255");
    if (avail < 2 + (size_t)(n + 1) / 2) return df11i_fail(DF11_ERR_CORRUPT, "codebook truncated");
    memset(code, 0, sizeof *code);
    code->max_len = max_len;
    code->single_symbol = -1;
    uint64_t kraft = 0, full = 1ull << max_len;
    int used = 0;
    for (int i = 0; i < n; i++) {
        uint8_t l = (in[2 + i / 2] >> (4 * (i & 1))) & 15;
        if (l > max_len) return df11i_fail(DF11_ERR_CORRUPT, "code length %u > max %u", l, max_len);
        code->len[lo + i] = l;
        if (l) {
            kraft += full >> l;
            used++;
        }
    }
    if (n == 1 && used == 0) {
        code->single_symbol = lo;
        return DF11_OK;
    }
    if (used == 0) return df11i_fail(DF11_ERR_CORRUPT, "codebook has no symbols");
    if (kraft > full) return df11i_fail(DF11_ERR_CORRUPT, "codebook violates Kraft's inequality");
    return DF11_OK;
}

/* Canonical codes: symbols by (length, value) take consecutive codes. */
static void canonical_codes(const df11i_code *code, uint16_t codes[256])
{
    uint32_t count[DF11_MAX_CODE_LEN + 2] = { 0 }, next[DF11_MAX_CODE_LEN + 2] = { 0 };
    for (int s = 0; s < 256; s++) count[code->len[s]]++;
    count[0] = 0;
    uint32_t c = 0;
    for (int l = 1; l <= DF11_MAX_CODE_LEN; l++) {
        c = (c + count[l - 1]) << 1;
        next[l] = c;
    }
    for (int s = 0; s < 256; s++) codes[s] = code->len[s] ? (uint16_t)next[code->len[s]]++ : 0;
}

void df11i_code_canonical(const df11i_code *code, uint16_t codes[256])
{
    canonical_codes(code, codes);
}

void df11i_lut_build(const df11i_code *code, uint16_t *lut)
{
    const uint32_t L = code->max_len, size = 1u << L;
    if (code->single_symbol >= 0) {
        for (uint32_t i = 0; i < size; i++) lut[i] = (uint16_t)code->single_symbol;
        return;
    }
    for (uint32_t i = 0; i < size; i++) lut[i] = DF11_LUT_INVALID;
    uint16_t codes[256];
    canonical_codes(code, codes);
    for (int s = 0; s < 256; s++) {
        uint32_t l = code->len[s];
        if (!l) continue;
        uint32_t first = (uint32_t)codes[s] << (L - l), span = 1u << (L - l);
        for (uint32_t i = 0; i < span; i++) lut[first + i] = (uint16_t)(l << 8 | (uint32_t)s);
    }
}
