/* tokenizer_internal.h: the Tokenizer struct, shared by tokenizer.c (load,
 * decode, lookups) and tokenizer_encode.c. Not part of the contract. */
#ifndef PLUMB_TOKENIZER_INTERNAL_H
#define PLUMB_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "model/tokenizer.h"

/* string -> id, open addressing over ids; keys live in Tokenizer.tok_str. */
typedef struct {
    int32_t *slot; /* (mask+1) id, or -1 when empty                  */
    uint32_t mask;
} StrMap;

/* (left id, right id) -> (rank, merged id), open addressing. */
typedef struct {
    uint64_t *key;   /* (mask+1) left<<32 | right, UINT64_MAX empty    */
    int32_t *rank;   /* (mask+1) merge rank (0 = first merge)          */
    int32_t *merged; /* (mask+1) id of left+right                      */
    uint32_t mask;
} PairMap;

typedef struct {
    char *content; /* as written in added_tokens                     */
    int len;
    char *norm; /* content after the normalizer (normalized ones) */
    int norm_len;
    int id;
    int special, lstrip, rstrip, single_word, normalized;
} AddedTok;

enum { NORM_PREPEND, NORM_REPLACE, NORM_NFC, NORM_NFKC, NORM_NFD, NORM_NFKD };
typedef struct {
    int type;
    char *a;
    int a_len; /* PREPEND: the prefix; REPLACE: the pattern      */
    char *b;
    int b_len; /* REPLACE: the content                           */
} Normalizer;

enum { PT_BYTELEVEL, PT_SPLIT, PT_METASPACE, PT_DIGITS };
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct {
    int type;
    int add_prefix_space; /* BYTELEVEL                                      */
    int use_regex;        /* BYTELEVEL                                      */
    pcre2_code *re;       /* BYTELEVEL (use_regex) and SPLIT                */
    int behavior;         /* SPLIT                                          */
    char *repl;
    int repl_len;   /* METASPACE replacement (UTF-8)                  */
    int prepend;    /* METASPACE PREPEND_*                            */
    int split;      /* METASPACE                                      */
    int individual; /* DIGITS individual_digits                       */
} PreTok;

enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
typedef struct {
    int type;
    char *a;
    int a_len; /* REPLACE pattern, METASPACE replacement         */
    char *b;
    int b_len;                   /* REPLACE content                                */
    int strip_char, start, stop; /* STRIP                                      */
    int prepend;                 /* METASPACE                                      */
} Decoder;

struct Tokenizer {
    int n_tok;           /* vocab size: max id + 1                         */
    char **tok_str;      /* (n_tok) token as in the JSON, NULL for holes   */
    int *tok_len;        /* (n_tok)                                        */
    uint8_t *is_special; /* (n_tok) special added token                    */
    StrMap vocab;        /* model.vocab only                               */
    PairMap merges;

    int byte_level;   /* a ByteLevel pre-tokenizer: BPE over raw bytes  */
    int byte_id[256]; /* byte-level: id of each byte's token, -1 none   */
    int byte_fallback, fuse_unk, ignore_merges;
    int unk_id;           /* -1: none                                       */
    int bytefb_id[256];   /* id of <0xXX>, -1 none                          */
    pcre2_code *re_alnum; /* Rust's Unicode \w as a class (single_word)     */
    int16_t cp_byte[324]; /* byte-level alphabet: code point -> byte, -1    */
    int ascii_id[128];    /* not byte-level: id of each ASCII char, -1 none */

    AddedTok *added;
    int n_added;
    uint8_t added_first[2][256]; /* [normalized] some added token starts with this byte */

    Normalizer *norm;
    int n_norm;
    PreTok *pre;
    int n_pre;
    Decoder *dec;
    int n_dec;

    char ws_cut[8];          /* SentencePiece-style: cut pieces before this     */
    int ws_cut_len;          /* (after a different char); 0: off. Exact when no */
                             /* vocab token has it after another character     */
    int prefix[4], n_prefix; /* add_special: ids before and after the text     */
    int suffix[4], n_suffix;
    int bos, eos;
};

/* ------------------------------------------------------------ shared helpers */

uint64_t tok_hash(const void *p, size_t n);
int tok_map_get(const Tokenizer *t, const char *s, int len);
/* (rank, merged) of a pair; returns 0 when absent. */
static inline int tok_pair_get(const PairMap *m, int a, int b, int *rank, int *merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t h = k * 0x9E3779B97F4A7C15ull;
    for (uint32_t i = (uint32_t)(h >> 32) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
        if (m->key[i] == UINT64_MAX) return 0;
    }
}
/* Applies the normalizers to s[0..n) into a malloc'ed *out (NUL-terminated). */
int tok_normalize(const Tokenizer *t, const char *s, size_t n, char **out, size_t *out_n);
/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid. */
int tok_utf8_len(const unsigned char *s, size_t n);

/* --------------------------------- helpers (tokenizer_utf8.c) */

/* Appends s with invalid UTF-8 replaced as Rust's from_utf8_lossy does. */
int tok_buf_put_lossy(PlBuf *b, const unsigned char *s, size_t n);
/* Decodes one code point of valid UTF-8 at s; returns its length. */
int tok_utf8_cp(const unsigned char *s, int *cp);
/* GPT-2's byte-level alphabet: the code point that stands for byte b. */
int tok_byte_to_cp(int b);
/* Writes cp as UTF-8 into o (4 bytes room); returns its length. */
int tok_cp_to_utf8(int cp, char *o);

#endif
