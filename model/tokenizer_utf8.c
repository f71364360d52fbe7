/* tokenizer_utf8.c: the byte and UTF-8 helpers the tokenizer's loading,
 * encoding and decoding share (tokenizer_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/tokenizer_internal.h"

/* ---------------------------------------------------------------- helpers */

uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 31);
}

/* The length of the sequence that lead byte c (>= 0x80) starts, and the
 * range [*lo, *hi] its second byte must lie in (which excludes overlong
 * forms, surrogates and code points past U+10FFFF); 0 for a byte that
 * cannot lead. */
static int utf8_lead(unsigned c, unsigned *lo, unsigned *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

int tok_utf8_len(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    unsigned lo, hi;
    int len = utf8_lead(s[0], &lo, &hi);
    if (!len || (size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* Number of leading bytes of an invalid sequence that Rust's
 * from_utf8_lossy replaces by one U+FFFD (the maximal subpart, >= 1). */
static int utf8_bad_len(const unsigned char *s, size_t n) {
    unsigned lo, hi;
    int len = utf8_lead(s[0], &lo, &hi);
    if (!len) return 1;
    int k = 1;
    if (k < (int)n && s[k] >= lo && s[k] <= hi)
        k++;
    else
        return 1;
    while (k < len && k < (int)n && (s[k] & 0xC0) == 0x80)
        k++;
    return k;
}


/* Appends s with invalid UTF-8 replaced as Rust's from_utf8_lossy does. */
int tok_buf_put_lossy(PlBuf *b, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        int l;
        while (j < n && (l = tok_utf8_len(s + j, n - j)) > 0)
            j += l;
        PL_TRY(pl_buf_put(b, s + i, j - i));
        if (j < n) {
            PL_TRY(pl_buf_put(b, "\xEF\xBF\xBD", 3));
            j += utf8_bad_len(s + j, n - j);
        }
        i = j;
    }
    return 0;
}

/* GPT-2's byte <-> printable character table: bytes 33..126, 161..172,
 * 174..255 map to themselves, the rest to 256, 257, ... in order. */
int tok_byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) n++;
    return 256 + n;
}

int tok_cp_to_utf8(int cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Decodes one code point of valid UTF-8 at s; returns its length. */
int tok_utf8_cp(const unsigned char *s, int *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = (s[0] & 31) << 6 | (s[1] & 63);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = (s[0] & 15) << 12 | (s[1] & 63) << 6 | (s[2] & 63);
        return 3;
    }
    *cp = (s[0] & 7) << 18 | (s[1] & 63) << 12 | (s[2] & 63) << 6 | (s[3] & 63);
    return 4;
}
