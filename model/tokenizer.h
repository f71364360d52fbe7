/* tokenizer.h: Hugging Face tokenizer.json (BPE) encode and decode.
 *
 * Two BPE families, as Hugging Face's `tokenizers` runs them:
 *   byte-level BPE (GPT-2, Llama 3, Qwen2): ByteLevel / Split(regex)
 *     pre-tokenizers, the split regex run by PCRE2 (JIT, UTF + UCP), BPE
 *     over raw bytes, the ByteLevel decoder;
 *   SentencePiece-style BPE (Llama 2, Mistral, TinyLlama): Prepend/Replace
 *     normalizers or the Metaspace pre-tokenizer, BPE over characters with
 *     byte_fallback to <0xXX> tokens, the Replace/ByteFallback/Fuse/Strip or
 *     Metaspace decoders.
 * Added and special tokens are matched before BPE (leftmost-longest) with
 * their lstrip / rstrip / single_word / normalized flags.
 *
 * A Tokenizer is immutable after tok_load and may be shared by threads:
 * tok_encode keeps its scratch and cache per call. */
#ifndef PLUMB_TOKENIZER_H
#define PLUMB_TOKENIZER_H

#include <stddef.h>

typedef struct Tokenizer Tokenizer;

/* ------------------------------------------------------------------ load */

/* Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json
 * (bos_token, eos_token, add_bos_token, add_eos_token). On error returns a
 * negative PL_E* code with a message naming the file and what is wrong
 * (PL_EIO: missing file, PL_EFORMAT: bad JSON or fields, PL_ENOTSUP: a
 * model or component this build does not implement, such as WordPiece or
 * Unigram) and sets *out to NULL. */
int tok_load(Tokenizer **out, const char *dir);

/* Frees t and sets *t to NULL; NULL is fine. */
void tok_free(Tokenizer **t);

/* ---------------------------------------------------------------- encode */

/* Encodes len bytes of UTF-8 text into a malloc'ed array *ids (n of them;
 * the caller frees it). add_special adds what Hugging Face's
 * add_special_tokens=True adds (the post-processor template, or BOS/EOS as
 * tokenizer_config.json's add_bos_token/add_eos_token say). Invalid UTF-8
 * fails with PL_EINVAL naming the byte offset; nothing is returned then. */
int tok_encode(const Tokenizer *t, const char *text, size_t len, int add_special, int **ids,
               int *n);

/* ---------------------------------------------------------------- decode */

/* Decodes n ids into a malloc'ed NUL-terminated UTF-8 string *text, as
 * `tokenizers` decode does (skip_special drops special added tokens).
 * Fails with PL_ERANGE on an id outside the vocabulary. */
int tok_decode(const Tokenizer *t, const int *ids, int n, int skip_special, char **text);

/* ---------------------------------------------------------------- lookup */

int tok_vocab_size(const Tokenizer *t);                /* max id + 1            */
int tok_bos(const Tokenizer *t);                       /* BOS id, -1 if none    */
int tok_eos(const Tokenizer *t);                       /* EOS id, -1 if none    */
int tok_token_id(const Tokenizer *t, const char *s);   /* id of a token, or -1  */
const char *tok_token_str(const Tokenizer *t, int id); /* as in the vocab, NULL if none */

#endif
