/* fuzz_dataset.c: the JSONL reader (data/dataset.h) on arbitrary files,
 * with the two fixed tokenizers of fuzz_tok_encode.
 *
 * FUZZ_REQUIRES: data/dataset.c
 *
 * Input: one selector byte, then the JSONL file:
 *   bit 0     tokenizer: llama2-sp (chat "plain") or byte-level (chat "chatml")
 *   bits 1-2  format: auto, prompt, sft, pref
 *   bit 3     drop_long
 *   bit 4     max_prompt_len 8 and max_response_len 4 (else no limits)
 *   bit 5     max_line_bytes 64 (else the default)
 * Every record read is turned into its sequences (ds_record_sequence),
 * whose ids must lie in the vocabulary and whose mask must be 0 over the
 * prompt and 1 over the response; the first line also goes through
 * ds_parse_line. At the end of the file the summary must add up: every
 * non-blank line is kept or dropped for one reason. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "data/dataset.h"
#include "fuzz/fuzz_util.h"
#include "model/tokenizer.h"

#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif

static Tokenizer *g_tok[2];
static char g_dirs[2][4096];

static void check_record(const DsRecord *rec, int V) {
    int nseq = rec->rejected ? 2 : rec->chosen ? 1 : 0;
    for (int which = 0; which < nseq; which++) {
        int *ids = NULL, n = 0;
        unsigned char *mask = NULL;
        if (ds_record_sequence(rec, which, &ids, &mask, &n) != 0) {
            pl_clear_error();
            continue;
        }
        int nresp = which ? rec->n_rejected : rec->n_chosen;
        if (n != rec->n_prompt + nresp) {
            fprintf(stderr, "sequence of %d ids, prompt %d + response %d\n", n, rec->n_prompt,
                    nresp);
            abort();
        }
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= V) abort();
            if (mask[i] != (i >= rec->n_prompt)) {
                fprintf(stderr, "mask[%d] = %d with a prompt of %d\n", i, mask[i], rec->n_prompt);
                abort();
            }
        }
        free(ids);
        free(mask);
    }
    for (int i = 0; i < rec->n_prompt; i++)
        if (rec->prompt[i] < 0 || rec->prompt[i] >= V) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_tokenizers("fuzz_dataset", g_tok, g_dirs);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int sel = data[0];
    const Tokenizer *tok = g_tok[sel & 1];
    const char *jsonl = (const char *)data + 1;
    size_t len = size - 1;

    DsConfig c;
    ds_config_init(&c, tok);
    if (ds_config_chat(&c, g_dirs[sel & 1], (sel & 1) ? "chatml" : NULL) != 0) abort();
    c.format = (DsFormat)((sel >> 1) & 3);
    c.drop_long = (sel >> 3) & 1;
    if (sel & 16) {
        c.max_prompt_len = 8;
        c.max_response_len = 4;
    }
    if (sel & 32) c.max_line_bytes = 64;
    int V = tok_vocab_size(tok);

    /* The first line alone through ds_parse_line. */
    const char *nl = memchr(jsonl, '\n', len);
    size_t first = nl ? (size_t)(nl - jsonl) : len;
    DsRecord rec;
    DsReason why;
    char reason[256];
    memset(&rec, 0, sizeof rec);
    int rc = ds_parse_line(&c, jsonl, first, &rec, &why, reason, sizeof reason);
    if (rc == 1) check_record(&rec, V);
    else if (rc == 0 && (why < 0 || why >= DS_NREASONS)) abort();
    ds_record_free(&rec);
    pl_clear_error();

    /* The whole input as a file through the streaming reader. */
    const char *path = fuzz_write(0, "data.jsonl", jsonl, len);
    DsReader *r = NULL;
    if (ds_reader_open(&r, path, &c) != 0) {
        fprintf(stderr, "ds_reader_open: %s\n", pl_error());
        abort();
    }
    long line = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        memset(&rec, 0, sizeof rec);
        rc = ds_reader_next(r, &rec, &line, &why, reason, sizeof reason);
        if (rc == 1) check_record(&rec, V);
        if (rc == 2 && (why < 0 || why >= DS_NREASONS)) abort();
        ds_record_free(&rec);
        if (rc <= 0) break;
    }
    if (rc == 0) {
        const DsSummary *s = ds_reader_summary(r);
        long dropped = 0;
        for (int k = 0; k < DS_NREASONS; k++) dropped += s->dropped[k];
        if (s->kept + dropped != s->read || s->truncated > s->kept) {
            fprintf(stderr, "summary: read %ld, kept %ld, dropped %ld, truncated %ld\n", s->read,
                    s->kept, dropped, s->truncated);
            abort();
        }
    }
    pl_clear_error();
    ds_reader_free(&r);
    ds_config_free(&c);
    return 0;
}
