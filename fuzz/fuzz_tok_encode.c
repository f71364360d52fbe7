/* fuzz_tok_encode.c: tok_encode / tok_decode of arbitrary text with two
 * fixed tokenizers: Llama 2's SentencePiece BPE (tests/data/tok/llama2-sp)
 * and a small byte-level one with Llama 3's split regex and added tokens
 * using lstrip / rstrip / single_word / normalized (fuzz/data/bytelevel).
 *
 * Input: one selector byte (bit 0: which tokenizer, bit 1: add_special,
 * bit 2: skip_special), then the text. Besides the sanitizers, checks the
 * properties that hold for any input: invalid UTF-8 is refused, every id
 * is inside the vocabulary, and the byte-level tokenizer decodes valid
 * UTF-8 back to the same bytes when no added token can match (text
 * without "<|") and the text has no NUL (decode returns a C string). */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "fuzz/fuzz_util.h"
#include "model/tokenizer.h"

#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif

static Tokenizer *g_tok[2];

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        int len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static char dirs[2][4096];
    fuzz_tokenizers("fuzz_tok_encode", g_tok, dirs);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int sel = data[0];
    const Tokenizer *t = g_tok[sel & 1];
    int add_special = (sel >> 1) & 1, skip = (sel >> 2) & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int valid = utf8_valid(data + 1, len);

    int *ids = NULL, n = -1;
    int rc = tok_encode(t, text, len, add_special, &ids, &n);
    if (rc != 0) {
        if (valid) {
            fprintf(stderr, "tok_encode failed on valid UTF-8: %s\n", pl_error());
            abort();
        }
        pl_clear_error();
        free(ids);
        return 0;
    }
    if (!valid) {
        fprintf(stderr, "tok_encode accepted invalid UTF-8\n");
        abort();
    }
    int V = tok_vocab_size(t);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            fprintf(stderr, "id %d outside [0, %d)\n", ids[i], V);
            abort();
        }
    char *out = NULL;
    if (tok_decode(t, ids, n, skip, &out) != 0) {
        fprintf(stderr, "tok_decode of encoded ids failed: %s\n", pl_error());
        abort();
    }
    if ((sel & 1) == 1 && !add_special && !memmem(text, len, "<|", 2) &&
        !memchr(text, 0, len) &&
        (strlen(out) != len || memcmp(out, text, len) != 0)) {
        fprintf(stderr, "byte-level round trip differs: %zu bytes in, %zu out\n", len,
                strlen(out));
        abort();
    }
    free(out);
    free(ids);

    /* The input's bytes read as ids: decode must range-check every one. */
    if (len >= 4) {
        int m = (int)(len / 4);
        int *raw = malloc(sizeof(int) * m);
        memcpy(raw, text, sizeof(int) * m);
        int bad = 0;
        for (int i = 0; i < m; i++) {
            if (sel & 8) raw[i] = (int)((unsigned)raw[i] % (unsigned)(V + 2)) - 1;
            bad |= raw[i] < 0 || raw[i] >= V;
        }
        out = NULL;
        rc = tok_decode(t, raw, m, skip, &out);
        if (rc == 0 && bad) {
            fprintf(stderr, "tok_decode accepted an id outside the vocabulary\n");
            abort();
        }
        free(out);
        free(raw);
        pl_clear_error();
    }
    return 0;
}
