/* fuzz_tokenizer.c: tok_load on arbitrary tokenizer.json (and
 * tokenizer_config.json), then encode and decode with what loaded.
 *
 * Input: tokenizer.json [NUL tokenizer_config.json [NUL text]].
 * Without a config part, or with an empty one, no tokenizer_config.json
 * exists. Without a text part a few fixed strings are encoded. Every id array the encoder
 * returns is decoded back, and so are ids around the vocabulary's edges,
 * which must fail cleanly with PL_ERANGE rather than read out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "fuzz/fuzz_util.h"
#include "model/tokenizer.h"

static const char *const TEXTS[] = {
    "Hello world",
    " the  other\n\n\tone's 12345 caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
    "<|endoftext|><s></s><|im_start|>x<|im_end|>",
    "",
    "\xff\xfe invalid utf-8",
};

static void roundtrip(const Tokenizer *t, const char *text, size_t len) {
    for (int special = 0; special < 2; special++) {
        int *ids = NULL, n = 0;
        if (tok_encode(t, text, len, special, &ids, &n) == 0) {
            for (int skip = 0; skip < 2; skip++) {
                char *out = NULL;
                if (tok_decode(t, ids, n, skip, &out) == 0) free(out);
            }
        }
        free(ids);
    }
}

FUZZ_INIT_DIR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *tj, *rest, *cfg = NULL, *text = NULL;
    size_t ntj, nrest, ncfg = 0, ntext = 0;
    fuzz_split(data, size, &tj, &ntj, &rest, &nrest);
    if (rest) fuzz_split(rest, nrest, &cfg, &ncfg, &text, &ntext);

    fuzz_write(0, "tokenizer.json", tj, ntj);
    if (cfg && ncfg) fuzz_write(1, "tokenizer_config.json", cfg, ncfg);
    else fuzz_unlink("tokenizer_config.json");

    Tokenizer *t = NULL;
    if (tok_load(&t, fuzz_dir()) != 0) {
        if (t) abort(); /* the contract: *out is NULL on error */
        pl_clear_error();
        return 0;
    }
    int V = tok_vocab_size(t);
    for (int id = -2; id < V + 2; id++) {
        /* Walk the whole id range only for small vocabularies, the edges always. */
        if (V > 512 && id > 256 && id < V - 256) id = V - 256;
        const char *s = tok_token_str(t, id);
        if (s) (void)tok_token_id(t, s);
    }
    (void)tok_bos(t);
    (void)tok_eos(t);

    if (text) {
        roundtrip(t, (const char *)text, ntext);
    } else {
        for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++)
            roundtrip(t, TEXTS[i], strlen(TEXTS[i]));
    }

    int edge[] = {0, V - 1, V, -1, V / 2, 0x7fffffff, (int)0x80000000};
    for (int k = 0; k < (int)(sizeof edge / sizeof edge[0]); k++) {
        char *out = NULL;
        int rc = tok_decode(t, &edge[k], 1, k & 1, &out);
        if (rc == 0) free(out);
        else if (out) abort(); /* nothing is returned on error */
        if ((edge[k] < 0 || edge[k] >= V) && rc == 0) abort(); /* must be PL_ERANGE */
    }
    pl_clear_error();
    tok_free(&t);
    if (t) abort();
    return 0;
}
