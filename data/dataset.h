/* dataset.h: JSONL prompt, SFT and preference sets -> token ids and masks.
 *
 * Shapes (one JSON object per line; ds_parse_line names which one a line is):
 *   prompt sets
 *     DS_SHAPE_PROMPT        {"prompt": str}
 *     DS_SHAPE_PROMPT_MSGS   {"prompt": [messages]} or {"messages": [messages]}
 *                            not ending with an assistant turn
 *     either may carry a reference answer for rule-based rewards:
 *     "answer" or "ground_truth" (a string or a number)
 *   SFT sets
 *     DS_SHAPE_SFT           {"prompt": str, "completion": str}
 *     DS_SHAPE_SFT_MSGS      {"messages": [... , {"role": "assistant"}]} or
 *                            {"prompt": [messages], "completion": [one assistant message]}
 *   preference sets (an optional numeric "margin")
 *     DS_SHAPE_PREF          {"prompt": str, "chosen": str, "rejected": str}
 *     DS_SHAPE_PREF_MSGS     {"prompt": [messages], "chosen": [one assistant message],
 *                             "rejected": [one assistant message]}
 *     DS_SHAPE_PREF_IMPLICIT {"chosen": [messages], "rejected": [messages]} (HH-RLHF,
 *                            TRL): the shared prompt is every message but the last, which
 *                            must be the same in both; the last must be assistant turns
 *     DS_SHAPE_PREF_HISTORY  {"system"?: str, "history"?: [[user, assistant], ...],
 *                             "question": str, "response_chosen": str,
 *                             "response_rejected": str} (OpenRLHF style)
 * Messages are {"role": "system"|"user"|"assistant", "content": str}.
 *
 * Tokenizing:
 *   String shapes: prompt and response are tokenized separately, the prompt
 *   with add_special (BOS for Llama-style tokenizers) and the response
 *   without, followed by EOS when the tokenizer has one. No chat template is
 *   applied, as TRL does for "standard" (non-conversational) datasets.
 *   Conversational shapes: rendered with the chat format (model/chat.h) of the
 *   tokenizer folder's tokenizer_config.json, a named override, or "plain"
 *   when there is no template. The prompt is everything before the final
 *   assistant turn's content (the generation prompt included); the response
 *   is that turn's content plus its terminator (chat_render_spans). Both are
 *   tokenized without add_special (the template writes BOS itself). Earlier
 *   assistant turns are part of the prompt and are not trained.
 *   Prompt and response tokenized apart may differ, at the boundary, from the
 *   whole text tokenized at once (TRL's DPOTrainer does the same).
 *
 * Loss mask: a record's sequence is prompt ids then response ids; the mask
 * is 0 over the prompt and 1 over the response (ds_record_sequence).
 *
 * Truncation (applied after tokenizing, lengths in tokens, 0 = no limit):
 *   max_prompt_len   keeps the LAST max_prompt_len prompt tokens (left
 *                    truncation, as TRL; a leading BOS is cut with the rest)
 *   max_response_len keeps the FIRST max_response_len tokens of each response
 *                    (the EOS or terminator may be cut)
 *   drop_long        rejects an over-long record instead of truncating it
 * A preference pair whose chosen and rejected responses are identical after
 * truncation is rejected.
 *
 * Rejections (a record is dropped with a reason naming what is wrong):
 *   DS_R_LINE_TOO_LONG  the line is over max_line_bytes (default 16 MiB);
 *                       the reader skips to the next newline
 *   DS_R_UTF8           invalid UTF-8 (the byte offset is given)
 *   DS_R_JSON           not JSON, or not a JSON object
 *   DS_R_FIELD          a field of the wrong type (named: "chosen[0].content")
 *   DS_R_SHAPE          no known shape, or one the requested format does not take
 *   DS_R_EMPTY          an empty prompt, response, chosen or rejected
 *   DS_R_EQUAL          chosen == rejected
 *   DS_R_TOO_LONG       over a length limit with drop_long
 *   DS_R_CHAT           the chat format rejects the conversation (roles, order)
 *   DS_R_TOKENIZE       the tokenizer failed */
#ifndef PLUMB_DATASET_H
#define PLUMB_DATASET_H

#include <stddef.h>

#include "model/chat.h"
#include "model/tokenizer.h"

typedef enum { DS_AUTO, DS_PROMPT, DS_SFT, DS_PREF } DsFormat;

typedef enum {
    DS_SHAPE_NONE,
    DS_SHAPE_PROMPT,
    DS_SHAPE_PROMPT_MSGS,
    DS_SHAPE_SFT,
    DS_SHAPE_SFT_MSGS,
    DS_SHAPE_PREF,
    DS_SHAPE_PREF_MSGS,
    DS_SHAPE_PREF_IMPLICIT,
    DS_SHAPE_PREF_HISTORY,
    DS_NSHAPES
} DsShape;

typedef enum {
    DS_R_LINE_TOO_LONG,
    DS_R_UTF8,
    DS_R_JSON,
    DS_R_FIELD,
    DS_R_SHAPE,
    DS_R_EMPTY,
    DS_R_EQUAL,
    DS_R_TOO_LONG,
    DS_R_CHAT,
    DS_R_TOKENIZE,
    DS_NREASONS
} DsReason;

#define DS_DEFAULT_MAX_LINE (16u << 20)

/* How lines become records. Fill with ds_config_init; chat fields with
 * ds_config_chat (or by hand). */
typedef struct {
    const Tokenizer *tok;  // not owned
    DsFormat format;       // DS_AUTO: any shape; else the shapes of that set
                           // (DS_PROMPT also takes SFT and preference shapes
                           // and keeps their prompt only)
    int max_prompt_len;    // tokens, 0 = no limit
    int max_response_len;  // tokens, 0 = no limit
    int drop_long;         // 1: reject over-long records instead of truncating
    size_t max_line_bytes; // longer lines are rejected (DS_R_LINE_TOO_LONG)
    ChatFormat chat;       // format for conversational shapes
    ChatOptions chat_opts; // bos/eos/default system for chat
    int chat_owned;        // chat_opts strings are malloc'ed (ds_config_free frees them)
} DsConfig;

/* One record. Prompt sets have no responses; SFT sets one (chosen); preference
 * sets two. All arrays are malloc'ed and owned by the record. */
typedef struct {
    DsShape shape;
    long line;   // 1-based line number in the file (0 from ds_parse_line)
    int *prompt; // (n_prompt) prompt ids
    int n_prompt;
    int *chosen; // (n_chosen) the response (SFT) or the chosen response
    int n_chosen;
    int *rejected; // (n_rejected) the rejected response (preference)
    int n_rejected;
    char *answer; // reference answer or NULL
    int has_margin;
    float margin;  // preference margin when has_margin
    int truncated; // 1 when a limit cut tokens from this record
} DsRecord;

/* Counters over records read. */
typedef struct {
    long read;                 // non-blank lines seen
    long kept;                 // records returned
    long truncated;            // kept records that a limit cut
    long dropped[DS_NREASONS]; // rejected lines by reason
} DsSummary;

/* ------------------------------------------------------------- config */

/* Defaults: DS_AUTO, no length limits, truncate, 16 MiB lines, chat "plain"
 * with the tokenizer's BOS/EOS strings (when it has them). */
void ds_config_init(DsConfig *c, const Tokenizer *tok);

/* Takes the chat format from dir/tokenizer_config.json, or override_name
 * (chat_format_parse's names) when not NULL. Without a template and without
 * an override the format stays "plain". Fails (PL_EINVAL for a bad override,
 * PL_EFORMAT/PL_EIO for a bad file) leaving c unchanged. */
int ds_config_chat(DsConfig *c, const char *dir, const char *override_name);

/* Llama 3.1's "Today Date" (date, which must outlive c; NULL or "" keeps
 * the template's own). Call after ds_config_chat: PL_EINVAL, naming the
 * format, when the chat format is not llama31 (what, the option's name,
 * goes in the message). */
int ds_config_chat_date(DsConfig *c, const char *date, const char *what);

/* Releases the chat strings ds_config_chat allocated. */
void ds_config_free(DsConfig *c);

/* "auto", "prompt", "sft", "pref" -> *out; PL_EINVAL otherwise. */
int ds_format_parse(const char *s, DsFormat *out);
const char *ds_shape_name(DsShape s);
const char *ds_reason_name(DsReason r);

/* ------------------------------------------------------------- records */

/* Parses and tokenizes one JSON line (len bytes, no need for a NUL). Returns
 * 1 with *rec filled, 0 when the line is rejected (rec empty, *why set and
 * reason[cap] holding a message), or a negative PL_E* code (out of memory). */
int ds_parse_line(const DsConfig *c, const char *line, size_t len, DsRecord *rec, DsReason *why,
                  char *reason, size_t cap);

/* Fits an already tokenized record (from a stream of plumb ingest) to c:
 * the shape c->format takes (DS_PROMPT keeps only the prompt), non-empty
 * parts, and c's length limits. 1 when kept (rec changed in place), 0
 * when rejected (*why and reason set; rec is left for the caller to
 * free). */
int ds_record_fit(const DsConfig *c, DsRecord *rec, DsReason *why, char *reason, size_t cap);

/* Frees the arrays of rec and zeroes it. */
void ds_record_free(DsRecord *rec);

/* Prompt + response (which 0: chosen/the SFT response, 1: rejected) as one
 * malloc'ed sequence *ids (*n) with *mask (*n, malloc'ed; may be NULL to skip):
 * 0 over the prompt, 1 over the response. */
int ds_record_sequence(const DsRecord *rec, int which, int **ids, unsigned char **mask, int *n);

/* --------------------------------------------------------------- reader */

typedef struct DsReader DsReader;

/* Opens path for streaming (lines are read one at a time, never the whole
 * file; a line keeps at most c->max_line_bytes in memory). c is not copied:
 * it must outlive r. PL_EIO when the file cannot be opened. */
int ds_reader_open(DsReader **r, const char *path, const DsConfig *c);

/* Frees r and sets *r to NULL; NULL is fine. */
void ds_reader_free(DsReader **r);

/* The next non-blank line: returns 1 with *rec filled (rec->line set), 2 when
 * the line was rejected (*line, *why and reason set), 0 at the end of the
 * file, or a negative PL_E* code (read error, out of memory). Updates the
 * reader's summary. */
int ds_reader_next(DsReader *r, DsRecord *rec, long *line, DsReason *why, char *reason, size_t cap);

/* Counters so far. */
const DsSummary *ds_reader_summary(const DsReader *r);

/* The bytes of the line ds_reader_next read last, without its newline or a
 * trailing \r (of a line over the limit, the first max_line_bytes): what a
 * dead letter keeps. Valid until the next call. */
const char *ds_reader_raw(const DsReader *r, size_t *len);

#endif
