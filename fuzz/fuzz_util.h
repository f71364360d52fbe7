/* fuzz_util.h: what the libFuzzer harnesses share.
 *
 * The loaders under test read files (tok_load a directory, the others a
 * path), so each harness writes its input into a private temporary
 * directory made once per process and reused by every run. */
#ifndef PLUMB_FUZZ_UTIL_H
#define PLUMB_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The process's scratch directory (mkdtemp under $TMPDIR or /tmp, removed
 * at exit). Aborts when it cannot be made: a harness cannot run without it. */
const char *fuzz_dir(void);

/* Writes n bytes to fuzz_dir()/name and returns the full path (a static
 * buffer per slot 0..3, valid until the next call with that slot). Aborts
 * on a write error. */
const char *fuzz_write(int slot, const char *name, const void *data, size_t n);

/* Removes fuzz_dir()/name when present. */
void fuzz_unlink(const char *name);

/* Splits data at its first NUL byte: the part before it in [*a, *a + *na),
 * the rest (after the NUL) in [*rest, *rest + *nrest). Without a NUL, all of
 * it is the first part and *rest is NULL. */
void fuzz_split(const uint8_t *data, size_t n, const uint8_t **a, size_t *na,
                const uint8_t **rest, size_t *nrest);

struct Tokenizer;

/* Loads the two fixed tokenizers the text harnesses use, Llama 2's
 * SentencePiece BPE (tests/data/tok/llama2-sp) into tok[0] and a byte-level
 * BPE (fuzz/data/bytelevel) into tok[1], from $PLUMB_ROOT or the source
 * tree the harness was built from; their directories into dirs. Aborts,
 * naming who, when one does not load. */
void fuzz_tokenizers(const char *who, struct Tokenizer *tok[2], char dirs[2][4096]);

/* The LLVMFuzzerInitialize of a harness that needs only fuzz_dir(). */
#define FUZZ_INIT_DIR                                                                              \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {                                            \
        (void)argc, (void)argv;                                                                    \
        fuzz_dir();                                                                                \
        return 0;                                                                                  \
    }

#endif
