/* dataset.c: JSONL records -> tokenized prompt/response spans (see dataset.h). */
#include "data/dataset.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/enum.h"
#include "common/err.h"

/* --------------------------------------------------------------- names */

static const char *SHAPE_NAMES[DS_NSHAPES] = {"none",          "prompt",        "prompt_messages",
                                              "sft",           "sft_messages",  "pref",
                                              "pref_messages", "pref_implicit", "pref_history"};

static const char *REASON_NAMES[DS_NREASONS] = {
    "line_too_long", "invalid_utf8",           "invalid_json", "field_type", "unknown_shape",
    "empty",         "chosen_equals_rejected", "too_long",     "chat",       "tokenize"};

const char *ds_shape_name(DsShape s) { return s >= 0 && s < DS_NSHAPES ? SHAPE_NAMES[s] : "?"; }
const char *ds_reason_name(DsReason r) { return r >= 0 && r < DS_NREASONS ? REASON_NAMES[r] : "?"; }

int ds_format_parse(const char *s, DsFormat *out) {
    static const char *const names[] = {"auto", "prompt", "sft", "pref"};
    int i;
    PL_TRY(pl_enum_parse(names, 4, s, "dataset format", &i));
    *out = (DsFormat)i;
    return 0;
}

/* -------------------------------------------------------------- config */

void ds_config_init(DsConfig *c, const Tokenizer *tok) {
    memset(c, 0, sizeof *c);
    c->tok = tok;
    c->format = DS_AUTO;
    c->max_line_bytes = DS_DEFAULT_MAX_LINE;
    c->chat = CHAT_PLAIN;
    if (tok) {
        c->chat_opts.bos = tok_bos(tok) >= 0 ? tok_token_str(tok, tok_bos(tok)) : NULL;
        c->chat_opts.eos = tok_eos(tok) >= 0 ? tok_token_str(tok, tok_eos(tok)) : NULL;
    }
}

void ds_config_free(DsConfig *c) {
    if (c->chat_owned) chat_options_free(&c->chat_opts);
    c->chat_owned = 0;
}

/* Whether the tokenizer_config.json at path has a chat_template key. */
static int has_template(const char *path) {
    json_t *o = json_load_file(path, 0, NULL);
    int has = json_object_get(o, "chat_template") != NULL;
    json_decref(o);
    return has;
}

int ds_config_chat(DsConfig *c, const char *dir, const char *override_name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    ChatFormat f;
    if (override_name) PL_TRY(chat_format_parse(override_name, &f));
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        if (override_name) c->chat = f;
        return 0; /* no config: keep plain (or the override) with the tokenizer's tokens */
    }
    fclose(fp);
    ChatOptions o = {0};
    int rc = chat_from_tokenizer_config(path, override_name, &f, &o);
    if (rc == PL_ENOTSUP && !override_name && !has_template(path)) {
        pl_clear_error();
        return 0; /* base model without a template: plain */
    }
    PL_TRY(rc);
    ds_config_free(c);
    /* keep the tokenizer's strings where the config names none */
    if (!o.bos && c->chat_opts.bos) o.bos = strdup(c->chat_opts.bos);
    if (!o.eos && c->chat_opts.eos) o.eos = strdup(c->chat_opts.eos);
    c->chat = f;
    c->chat_opts = o;
    c->chat_owned = 1;
    return 0;
}

int ds_config_chat_date(DsConfig *c, const char *date, const char *what) {
    if (!date || !*date) return 0;
    if (c->chat != CHAT_LLAMA31)
        return pl_fail(PL_EINVAL, "%s is the date of llama31's system header; the chat format is %s",
                       what, chat_format_name(c->chat));
    c->chat_opts.date = date;
    return 0;
}

/* ------------------------------------------------------------- helpers */

/* Offset of the first byte that is not valid UTF-8, or -1. */
static long utf8_invalid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, min = 0x80;
            c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, min = 0x800;
            c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, min = 0x10000;
            c &= 0x07;
        } else {
            return (long)i;
        }
        if (i + k >= n) return (long)i; /* truncated sequence */
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return (long)i;
            c = (c << 6) | (s[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return (long)i;
        i += k + 1;
    }
    return -1;
}

typedef struct {
    DsReason why;
    char *msg;
    size_t cap;
} Reject;

static int reject(Reject *r, DsReason why, const char *fmt, ...) {
    r->why = why;
    va_list ap;
    va_start(ap, fmt);
    if (r->cap) vsnprintf(r->msg, r->cap, fmt, ap);
    va_end(ap);
    return 0;
}

/* Reads a list of {"role", "content"} into *out (malloc'ed; strings point into
 * the JSON). Returns 1, or 0 after reject() naming field[i].key. */
static int get_msgs(json_t *arr, const char *field, ChatMessage **out, size_t *n, Reject *rj) {
    *out = NULL;
    *n = 0;
    if (!json_is_array(arr))
        return reject(rj, DS_R_FIELD, "\"%s\" must be a list of messages", field);
    size_t k = json_array_size(arr);
    ChatMessage *m = calloc(k + 2, sizeof *m); /* room for appended turns */
    if (!m) return reject(rj, DS_R_TOKENIZE, "out of memory");
    for (size_t i = 0; i < k; i++) {
        json_t *o = json_array_get(arr, i);
        json_t *role = json_object_get(o, "role"), *content = json_object_get(o, "content");
        if (!json_is_object(o)) {
            free(m);
            return reject(rj, DS_R_FIELD, "%s[%zu] must be an object {\"role\", \"content\"}",
                          field, i);
        }
        if (!json_is_string(role)) {
            free(m);
            return reject(rj, DS_R_FIELD, "%s[%zu].role must be a string", field, i);
        }
        if (!json_is_string(content)) {
            free(m);
            return reject(rj, DS_R_FIELD, "%s[%zu].content must be a string", field, i);
        }
        m[i].role = json_string_value(role);
        m[i].content = json_string_value(content);
    }
    *out = m;
    *n = k;
    return 1;
}

static int is_assistant(const ChatMessage *m) { return !strcmp(m->role, "assistant"); }

/* Renders p (np messages) + the assistant turn resp and splits the text at
 * the start of that turn's span: *ptext = the prompt, *rtext = content +
 * terminator (both malloc'ed). np + 1 entries of p must be writable. */
static int render_turn(const DsConfig *c, ChatMessage *p, size_t np, const char *resp, char **ptext,
                       char **rtext, Reject *rj) {
    p[np].role = "assistant";
    p[np].content = resp;
    ChatSpan *sp = calloc(np + 1, sizeof *sp);
    if (!sp) return PL_ENOMEM;
    char *text;
    size_t len;
    int rc = chat_render_spans(c->chat, &c->chat_opts, p, np + 1, 0, &text, &len, sp);
    if (rc < 0) {
        free(sp);
        if (rc == PL_ENOMEM) return rc;
        return reject(rj, DS_R_CHAT, "chat format %s: %s", chat_format_name(c->chat), pl_error());
    }
    ChatSpan s = sp[np];
    free(sp);
    *ptext = strndup(text, s.start);
    *rtext = strndup(text + s.start, s.end - s.start);
    free(text);
    if (!*ptext || !*rtext) {
        free(*ptext);
        free(*rtext);
        return PL_ENOMEM;
    }
    return 1;
}

/* Tokenizes text into *ids; eos appends EOS when the tokenizer has one. */
static int encode(const DsConfig *c, const char *text, int add_special, int eos, int **ids, int *n,
                  Reject *rj, const char *what) {
    int rc = tok_encode(c->tok, text, strlen(text), add_special, ids, n);
    if (rc == PL_ENOMEM) return rc;
    if (rc < 0) return reject(rj, DS_R_TOKENIZE, "%s: %s", what, pl_error());
    if (eos && tok_eos(c->tok) >= 0) {
        int *t = realloc(*ids, sizeof(int) * (*n + 1));
        if (!t) {
            free(*ids);
            *ids = NULL;
            return PL_ENOMEM;
        }
        t[(*n)++] = tok_eos(c->tok);
        *ids = t;
    }
    return 1;
}

/* ------------------------------------------------------------ records */

void ds_record_free(DsRecord *rec) {
    free(rec->prompt);
    free(rec->chosen);
    free(rec->rejected);
    free(rec->answer);
    memset(rec, 0, sizeof *rec);
}

int ds_record_sequence(const DsRecord *rec, int which, int **ids, unsigned char **mask, int *n) {
    const int *r = which ? rec->rejected : rec->chosen;
    int nr = which ? rec->n_rejected : rec->n_chosen, t = rec->n_prompt + nr;
    *ids = malloc(sizeof(int) * (size_t)(t ? t : 1));
    PL_CHECK_ALLOC(*ids);
    if (rec->n_prompt) memcpy(*ids, rec->prompt, sizeof(int) * (size_t)rec->n_prompt);
    if (nr) memcpy(*ids + rec->n_prompt, r, sizeof(int) * (size_t)nr);
    if (mask) {
        *mask = malloc((size_t)(t ? t : 1));
        if (!*mask) {
            free(*ids);
            *ids = NULL;
            return pl_fail(PL_ENOMEM, "out of memory: mask");
        }
        memset(*mask, 0, (size_t)rec->n_prompt);
        memset(*mask + rec->n_prompt, 1, (size_t)nr);
    }
    *n = t;
    return 0;
}

/* Which shape a JSON object is, or DS_SHAPE_NONE after reject(). */
static DsShape detect(json_t *o, Reject *rj) {
    json_t *prompt = json_object_get(o, "prompt"), *messages = json_object_get(o, "messages"),
           *completion = json_object_get(o, "completion"), *ch = json_object_get(o, "chosen"),
           *rej = json_object_get(o, "rejected");
    if (ch || rej) {
        if (!ch || !rej)
            return reject(rj, DS_R_SHAPE, "\"%s\" without \"%s\"", ch ? "chosen" : "rejected",
                          ch ? "rejected" : "chosen"),
                   DS_SHAPE_NONE;
        if (json_is_string(ch) && json_is_string(rej)) {
            if (!prompt)
                return reject(rj, DS_R_SHAPE, "string chosen/rejected need a \"prompt\" string"),
                       DS_SHAPE_NONE;
            if (!json_is_string(prompt))
                return reject(rj, DS_R_FIELD,
                              "\"prompt\" must be a string when chosen and rejected are strings"),
                       DS_SHAPE_NONE;
            return DS_SHAPE_PREF;
        }
        if (json_is_array(ch) && json_is_array(rej)) {
            if (!prompt) return DS_SHAPE_PREF_IMPLICIT;
            if (!json_is_array(prompt))
                return reject(rj, DS_R_FIELD,
                              "\"prompt\" must be a list of messages when chosen and rejected are"),
                       DS_SHAPE_NONE;
            return DS_SHAPE_PREF_MSGS;
        }
        const char *bad = !json_is_string(ch) && !json_is_array(ch)     ? "chosen"
                          : !json_is_string(rej) && !json_is_array(rej) ? "rejected"
                                                                        : NULL;
        if (bad)
            return reject(rj, DS_R_FIELD, "\"%s\" must be a string or a list of messages", bad),
                   DS_SHAPE_NONE;
        return reject(rj, DS_R_FIELD,
                      "\"chosen\" and \"rejected\" must both be strings or both lists"),
               DS_SHAPE_NONE;
    }
    if (json_object_get(o, "question") || json_object_get(o, "response_chosen") ||
        json_object_get(o, "response_rejected"))
        return DS_SHAPE_PREF_HISTORY;
    if (completion) {
        if (json_is_string(prompt) && json_is_string(completion)) return DS_SHAPE_SFT;
        if (json_is_array(prompt) && json_is_array(completion)) return DS_SHAPE_SFT_MSGS;
        if (!prompt)
            return reject(rj, DS_R_SHAPE, "\"completion\" without \"prompt\""), DS_SHAPE_NONE;
        return reject(rj, DS_R_FIELD,
                      "\"prompt\" and \"completion\" must both be strings or both lists of "
                      "messages"),
               DS_SHAPE_NONE;
    }
    if (messages) {
        if (!json_is_array(messages))
            return reject(rj, DS_R_FIELD, "\"messages\" must be a list of messages"), DS_SHAPE_NONE;
        json_t *last = json_array_get(messages, json_array_size(messages) - 1);
        const char *role = json_string_value(json_object_get(last, "role"));
        return role && !strcmp(role, "assistant") ? DS_SHAPE_SFT_MSGS : DS_SHAPE_PROMPT_MSGS;
    }
    if (prompt) {
        if (json_is_string(prompt)) return DS_SHAPE_PROMPT;
        if (json_is_array(prompt)) return DS_SHAPE_PROMPT_MSGS;
        return reject(rj, DS_R_FIELD, "\"prompt\" must be a string or a list of messages"),
               DS_SHAPE_NONE;
    }
    return reject(rj, DS_R_SHAPE,
                  "unknown shape: expected \"prompt\", \"messages\", \"prompt\"+\"completion\", "
                  "\"chosen\"+\"rejected\" or \"question\"+\"response_chosen\"+"
                  "\"response_rejected\""),
           DS_SHAPE_NONE;
}

static int shape_is_pref(DsShape s) { return s >= DS_SHAPE_PREF; }
static int shape_is_sft(DsShape s) { return s == DS_SHAPE_SFT || s == DS_SHAPE_SFT_MSGS; }

/* The texts of one record before tokenizing (malloc'ed or NULL). */
typedef struct {
    char *prompt, *chosen, *rejected;
    int conversational;
} Texts;

static int str_field(json_t *o, const char *key, const char **out, int required, Reject *rj) {
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) return reject(rj, DS_R_SHAPE, "missing \"%s\"", key);
        return 1;
    }
    if (!json_is_string(v)) return reject(rj, DS_R_FIELD, "\"%s\" must be a string", key);
    *out = json_string_value(v);
    return 1;
}

/* The single assistant message of a chosen/rejected/completion list. */
static int one_assistant(json_t *arr, const char *field, const char **content, Reject *rj) {
    ChatMessage *m;
    size_t n;
    if (get_msgs(arr, field, &m, &n, rj) <= 0) return 0;
    int ok = n == 1 && is_assistant(&m[0]);
    *content = ok ? m[0].content : NULL;
    free(m);
    if (!ok) return reject(rj, DS_R_SHAPE, "\"%s\" must be one assistant message", field);
    return 1;
}

/* Builds the conversation of a history-shaped record into *out (malloc'ed). */
static int history_msgs(json_t *o, ChatMessage **out, size_t *n, const char **qc, const char **rc_,
                        const char **rr, Reject *rj) {
    const char *sys, *q;
    if (!str_field(o, "system", &sys, 0, rj) || !str_field(o, "question", &q, 1, rj) ||
        !str_field(o, "response_chosen", rc_, 1, rj) ||
        !str_field(o, "response_rejected", rr, 1, rj))
        return 0;
    json_t *h = json_object_get(o, "history");
    if (h && !json_is_null(h) && !json_is_array(h))
        return reject(rj, DS_R_FIELD, "\"history\" must be a list of [user, assistant] pairs");
    size_t nh = json_array_size(h);
    ChatMessage *m = calloc(2 * nh + 3, sizeof *m);
    if (!m) return reject(rj, DS_R_TOKENIZE, "out of memory");
    size_t k = 0;
    if (sys && *sys) m[k++] = (ChatMessage){"system", sys};
    for (size_t i = 0; i < nh; i++) {
        json_t *pr = json_array_get(h, i);
        json_t *u = json_array_get(pr, 0), *a = json_array_get(pr, 1);
        if (!json_is_array(pr) || json_array_size(pr) != 2 || !json_is_string(u) ||
            !json_is_string(a)) {
            free(m);
            return reject(rj, DS_R_FIELD,
                          "history[%zu] must be a [user, assistant] pair of strings", i);
        }
        m[k++] = (ChatMessage){"user", json_string_value(u)};
        m[k++] = (ChatMessage){"assistant", json_string_value(a)};
    }
    m[k++] = (ChatMessage){"user", q};
    *out = m;
    *n = k;
    *qc = q;
    return 1;
}

/* Fills t from o for shape s. Returns 1, 0 (rejected) or a negative code. */
static int build_texts(const DsConfig *c, json_t *o, DsShape s, int prompt_only, Texts *t,
                       Reject *rj) {
    const char *ps = NULL, *cs = NULL, *rs = NULL;
    ChatMessage *m = NULL, *m2 = NULL;
    size_t n = 0, n2 = 0;
    int rc = 1;
    switch (s) {
    case DS_SHAPE_PROMPT:
    case DS_SHAPE_SFT:
    case DS_SHAPE_PREF:
        ps = json_string_value(json_object_get(o, "prompt"));
        if (s == DS_SHAPE_SFT) cs = json_string_value(json_object_get(o, "completion"));
        if (s == DS_SHAPE_PREF) {
            cs = json_string_value(json_object_get(o, "chosen"));
            rs = json_string_value(json_object_get(o, "rejected"));
        }
        if (!*ps) return reject(rj, DS_R_EMPTY, "\"prompt\" is empty");
        if (prompt_only) cs = rs = NULL;
        if (cs && !*cs)
            return reject(rj, DS_R_EMPTY, "\"%s\" is empty",
                          s == DS_SHAPE_SFT ? "completion" : "chosen");
        if (rs && !*rs) return reject(rj, DS_R_EMPTY, "\"rejected\" is empty");
        if (cs && rs && !strcmp(cs, rs))
            return reject(rj, DS_R_EQUAL, "\"chosen\" and \"rejected\" are the same");
        t->prompt = strdup(ps);
        t->chosen = cs ? strdup(cs) : NULL;
        t->rejected = rs ? strdup(rs) : NULL;
        if (!t->prompt || (cs && !t->chosen) || (rs && !t->rejected)) return PL_ENOMEM;
        return 1;
    case DS_SHAPE_PROMPT_MSGS: {
        json_t *a = json_object_get(o, "messages");
        if (!a) a = json_object_get(o, "prompt");
        if (get_msgs(a, json_object_get(o, "messages") ? "messages" : "prompt", &m, &n, rj) <= 0)
            return 0;
        break;
    }
    case DS_SHAPE_SFT_MSGS:
        if (json_object_get(o, "completion")) {
            if (get_msgs(json_object_get(o, "prompt"), "prompt", &m, &n, rj) <= 0 ||
                !one_assistant(json_object_get(o, "completion"), "completion", &cs, rj))
                goto done0;
        } else {
            if (get_msgs(json_object_get(o, "messages"), "messages", &m, &n, rj) <= 0) return 0;
            cs = m[--n].content; /* detect() saw the final assistant turn */
        }
        break;
    case DS_SHAPE_PREF_MSGS:
        if (get_msgs(json_object_get(o, "prompt"), "prompt", &m, &n, rj) <= 0 ||
            !one_assistant(json_object_get(o, "chosen"), "chosen", &cs, rj) ||
            !one_assistant(json_object_get(o, "rejected"), "rejected", &rs, rj))
            goto done0;
        break;
    case DS_SHAPE_PREF_IMPLICIT: {
        if (get_msgs(json_object_get(o, "chosen"), "chosen", &m, &n, rj) <= 0 ||
            get_msgs(json_object_get(o, "rejected"), "rejected", &m2, &n2, rj) <= 0)
            goto done0;
        if (n == 0 || n2 == 0) {
            reject(rj, DS_R_EMPTY, "\"%s\" has no messages", n == 0 ? "chosen" : "rejected");
            goto done0;
        }
        int same = n == n2;
        for (size_t i = 0; same && i + 1 < n; i++)
            same = !strcmp(m[i].role, m2[i].role) && !strcmp(m[i].content, m2[i].content);
        if (!same || n < 2 || !is_assistant(&m[n - 1]) || !is_assistant(&m2[n - 1])) {
            reject(rj, DS_R_SHAPE,
                   "\"chosen\" and \"rejected\" must share all messages but the last, which must "
                   "be assistant turns");
            goto done0;
        }
        cs = m[n - 1].content;
        rs = m2[n - 1].content;
        n--;
        break;
    }
    case DS_SHAPE_PREF_HISTORY:
        if (!history_msgs(o, &m, &n, &ps, &cs, &rs, rj)) return 0;
        break;
    default:
        return reject(rj, DS_R_SHAPE, "unknown shape");
    }
    /* conversational */
    t->conversational = 1;
    if (n == 0) {
        reject(rj, DS_R_EMPTY, "the prompt has no messages");
        goto done0;
    }
    if (prompt_only) cs = rs = NULL;
    if (cs && !*cs) {
        reject(rj, DS_R_EMPTY, "the %s response is empty",
               shape_is_pref(s) ? "chosen" : "assistant");
        goto done0;
    }
    if (rs && !*rs) {
        reject(rj, DS_R_EMPTY, "the rejected response is empty");
        goto done0;
    }
    if (cs && rs && !strcmp(cs, rs)) {
        reject(rj, DS_R_EQUAL, "\"chosen\" and \"rejected\" are the same");
        goto done0;
    }
    if (!cs) {
        int r = chat_render(c->chat, &c->chat_opts, m, n, 1, &t->prompt);
        if (r == PL_ENOMEM)
            rc = r;
        else if (r < 0)
            rc = reject(rj, DS_R_CHAT, "chat format %s: %s", chat_format_name(c->chat), pl_error());
    } else {
        /* m has room for one more message (get_msgs/history_msgs allocate it) */
        rc = render_turn(c, m, n, cs, &t->prompt, &t->chosen, rj);
        if (rc > 0 && rs) {
            char *p2;
            rc = render_turn(c, m, n, rs, &p2, &t->rejected, rj);
            if (rc > 0) free(p2); /* same messages before the turn, same prompt */
        }
    }
    free(m);
    free(m2);
    return rc;
done0:
    free(m);
    free(m2);
    return 0;
}

/* Answer / ground_truth and margin. */
static int extras(json_t *o, DsRecord *rec, Reject *rj) {
    json_t *a = json_object_get(o, "answer");
    const char *key = "answer";
    if (!a || json_is_null(a)) {
        a = json_object_get(o, "ground_truth");
        key = "ground_truth";
    }
    if (a && !json_is_null(a)) {
        char buf[64];
        if (json_is_string(a))
            rec->answer = strdup(json_string_value(a));
        else if (json_is_integer(a))
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(a)),
                rec->answer = strdup(buf);
        else if (json_is_real(a))
            snprintf(buf, sizeof buf, "%.17g", json_real_value(a)), rec->answer = strdup(buf);
        else
            return reject(rj, DS_R_FIELD, "\"%s\" must be a string or a number", key);
        if (!rec->answer) return PL_ENOMEM;
    }
    json_t *mg = json_object_get(o, "margin");
    if (mg && !json_is_null(mg)) {
        if (!json_is_number(mg)) return reject(rj, DS_R_FIELD, "\"margin\" must be a number");
        rec->has_margin = 1;
        rec->margin = (float)json_number_value(mg);
    }
    return 1;
}

/* Applies the length limits of c to rec (see dataset.h). */
static int limit(const DsConfig *c, DsRecord *rec, Reject *rj) {
    int *lens[2] = {&rec->n_chosen, &rec->n_rejected};
    const char *names[2] = {shape_is_pref(rec->shape) ? "chosen" : "response", "rejected"};
    if (c->max_prompt_len > 0 && rec->n_prompt > c->max_prompt_len) {
        if (c->drop_long)
            return reject(rj, DS_R_TOO_LONG, "prompt has %d tokens, over max_prompt_len %d",
                          rec->n_prompt, c->max_prompt_len);
        int cut = rec->n_prompt - c->max_prompt_len;
        memmove(rec->prompt, rec->prompt + cut, sizeof(int) * (size_t)c->max_prompt_len);
        rec->n_prompt = c->max_prompt_len;
        rec->truncated = 1;
    }
    for (int i = 0; i < 2; i++)
        if (c->max_response_len > 0 && *lens[i] > c->max_response_len) {
            if (c->drop_long)
                return reject(rj, DS_R_TOO_LONG, "%s has %d tokens, over max_response_len %d",
                              names[i], *lens[i], c->max_response_len);
            *lens[i] = c->max_response_len;
            rec->truncated = 1;
        }
    if (rec->rejected && rec->n_chosen == rec->n_rejected &&
        !memcmp(rec->chosen, rec->rejected, sizeof(int) * (size_t)rec->n_chosen))
        return reject(rj, DS_R_EQUAL,
                      "chosen and rejected are the same after truncation to %d "
                      "tokens",
                      c->max_response_len);
    return 1;
}

/* 1 when c's format takes shape s, else 0 with the reason in rj. */
static int shape_fits(const DsConfig *c, DsShape s, Reject *rj) {
    if ((c->format == DS_SFT && !shape_is_sft(s)) || (c->format == DS_PREF && !shape_is_pref(s)))
        return reject(rj, DS_R_SHAPE, "a %s record is not a%s record", ds_shape_name(s),
                      c->format == DS_SFT ? "n sft (prompt+completion or messages ending with "
                                            "an assistant turn)"
                                          : " preference");
    return 1;
}

int ds_record_fit(const DsConfig *c, DsRecord *rec, DsReason *why, char *reason, size_t cap) {
    Reject rj = {DS_R_SHAPE, reason, cap};
    if (cap) reason[0] = 0;
    int rc = shape_fits(c, rec->shape, &rj);
    if (rc > 0 && c->format == DS_PROMPT) {
        free(rec->chosen), free(rec->rejected);
        rec->chosen = rec->rejected = NULL;
        rec->n_chosen = rec->n_rejected = 0;
    }
    if (rc > 0 && (rec->n_prompt == 0 || (c->format != DS_PROMPT && rec->n_chosen == 0) ||
                   (shape_is_pref(rec->shape) && c->format != DS_PROMPT && rec->n_rejected == 0)))
        rc = reject(&rj, DS_R_EMPTY, "an empty prompt or response");
    if (rc > 0) rc = limit(c, rec, &rj);
    if (rc == 0) *why = rj.why;
    return rc;
}

int ds_parse_line(const DsConfig *c, const char *line, size_t len, DsRecord *rec, DsReason *why,
                  char *reason, size_t cap) {
    memset(rec, 0, sizeof *rec);
    Reject rj = {DS_R_JSON, reason, cap};
    if (cap) reason[0] = 0;
    Texts t = {0};
    json_t *o = NULL;
    int rc;
    long bad = utf8_invalid((const unsigned char *)line, len);
    if (bad >= 0) {
        rc = reject(&rj, DS_R_UTF8, "invalid UTF-8 at byte %ld", bad);
        goto out;
    }
    json_error_t je;
    o = json_loadb(line, len, 0, &je);
    if (!o) {
        rc = reject(&rj, DS_R_JSON, "invalid JSON at column %d: %s", je.column, je.text);
        goto out;
    }
    if (!json_is_object(o)) {
        rc = reject(&rj, DS_R_JSON, "not a JSON object");
        goto out;
    }
    DsShape s = detect(o, &rj);
    if (s == DS_SHAPE_NONE) {
        rc = 0;
        goto out;
    }
    if ((rc = shape_fits(c, s, &rj)) <= 0) goto out;
    rec->shape = s;
    int prompt_only = c->format == DS_PROMPT;
    rc = build_texts(c, o, s, prompt_only, &t, &rj);
    if (rc <= 0) goto out;
    rc = encode(c, t.prompt, !t.conversational, 0, &rec->prompt, &rec->n_prompt, &rj, "prompt");
    if (rc > 0 && t.chosen)
        rc = encode(c, t.chosen, 0, !t.conversational, &rec->chosen, &rec->n_chosen, &rj,
                    shape_is_pref(s) ? "chosen" : "response");
    if (rc > 0 && t.rejected)
        rc = encode(c, t.rejected, 0, !t.conversational, &rec->rejected, &rec->n_rejected, &rj,
                    "rejected");
    if (rc > 0) rc = extras(o, rec, &rj);
    if (rc > 0) rc = limit(c, rec, &rj);
out:
    free(t.prompt);
    free(t.chosen);
    free(t.rejected);
    json_decref(o);
    if (rc <= 0) ds_record_free(rec);
    if (rc == 0) *why = rj.why;
    if (rc < 0 && rc != PL_ENOMEM) rc = PL_ENOMEM;
    return rc < 0 ? pl_fail(rc, "dataset: out of memory") : rc;
}

/* -------------------------------------------------------------- reader */

#define CHUNK (1 << 16)

struct DsReader {
    FILE *f;
    const DsConfig *cfg;
    char *buf;       // (CHUNK) read buffer
    size_t pos, end; // unread bytes buf[pos..end)
    char *line;      // (line_cap) the current line, at most max_line_bytes
    size_t line_len, line_cap;
    long lineno;
    DsSummary sum;
    char *path;
};

int ds_reader_open(DsReader **out, const char *path, const DsConfig *c) {
    *out = NULL;
    DsReader *r = calloc(1, sizeof *r);
    PL_CHECK_ALLOC(r);
    r->buf = malloc(CHUNK);
    r->path = strdup(path);
    if (!r->buf || !r->path) {
        ds_reader_free(&r);
        return pl_fail(PL_ENOMEM, "out of memory: reader");
    }
    r->f = fopen(path, "rb");
    if (!r->f) {
        int e = errno;
        ds_reader_free(&r);
        return pl_fail(PL_EIO, "open %s: %s", path, strerror(e));
    }
    r->cfg = c;
    *out = r;
    return 0;
}

void ds_reader_free(DsReader **r) {
    if (!*r) return;
    if ((*r)->f) fclose((*r)->f);
    free((*r)->buf);
    free((*r)->line);
    free((*r)->path);
    free(*r);
    *r = NULL;
}

const DsSummary *ds_reader_summary(const DsReader *r) { return &r->sum; }

const char *ds_reader_raw(const DsReader *r, size_t *len) {
    size_t n = r->line_len;
    if (n && r->line[n - 1] == '\r') n--;
    *len = n;
    return r->line ? r->line : "";
}

/* Reads the next line into r->line (keeping at most max bytes); *total is its
 * full length. Returns 1, 0 at the end, or PL_EIO/PL_ENOMEM. */
static int read_line(DsReader *r, size_t max, size_t *total) {
    int got = 0;
    r->line_len = 0;
    *total = 0;
    for (;;) {
        if (r->pos == r->end) {
            r->end = fread(r->buf, 1, CHUNK, r->f);
            r->pos = 0;
            if (r->end == 0) {
                if (ferror(r->f)) return pl_fail(PL_EIO, "read %s: %s", r->path, strerror(errno));
                return got;
            }
        }
        got = 1;
        char *s = r->buf + r->pos, *nl = memchr(s, '\n', r->end - r->pos);
        size_t take = nl ? (size_t)(nl - s) : r->end - r->pos;
        if (*total + take <= max) {
            PL_TRY(pl_grow(&r->line, &r->line_cap, r->line_len + take + 1, 1));
            memcpy(r->line + r->line_len, s, take);
            r->line_len += take;
        }
        *total += take;
        r->pos += take + (nl ? 1 : 0);
        if (nl) return 1;
    }
}

int ds_reader_next(DsReader *r, DsRecord *rec, long *line, DsReason *why, char *reason,
                   size_t cap) {
    size_t max = r->cfg->max_line_bytes ? r->cfg->max_line_bytes : DS_DEFAULT_MAX_LINE;
    for (;;) {
        size_t total;
        int rc = read_line(r, max, &total);
        if (rc <= 0) return rc;
        r->lineno++;
        *line = r->lineno;
        if (total > max) {
            r->sum.read++;
            r->sum.dropped[DS_R_LINE_TOO_LONG]++;
            *why = DS_R_LINE_TOO_LONG;
            if (cap) snprintf(reason, cap, "line is %zu bytes, over the limit of %zu", total, max);
            memset(rec, 0, sizeof *rec);
            return 2;
        }
        size_t n = r->line_len;
        if (n && r->line[n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && (r->line[k] == ' ' || r->line[k] == '\t'))
            k++;
        if (k == n) continue; /* blank line */
        r->sum.read++;
        rc = ds_parse_line(r->cfg, r->line, n, rec, why, reason, cap);
        if (rc < 0) return rc;
        if (rc == 0) {
            r->sum.dropped[*why]++;
            return 2;
        }
        rec->line = r->lineno;
        r->sum.kept++;
        if (rec->truncated) r->sum.truncated++;
        return 1;
    }
}
