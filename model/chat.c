/* chat.c: the chat formats of chat.h, their recognition, and
 * tokenizer_config.json. */
#include "model/chat.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/enum.h"
#include "common/err.h"

static const char *const FORMAT_NAMES[CHAT_NFORMATS] = {
    [CHAT_CHATML] = "chatml", [CHAT_LLAMA3] = "llama3", [CHAT_LLAMA2] = "llama2",
    [CHAT_MISTRAL] = "mistral", [CHAT_ZEPHYR] = "zephyr", [CHAT_PLAIN] = "plain",
    [CHAT_QWEN3] = "qwen3", [CHAT_QWEN3_NOTHINK] = "qwen3-nothink", [CHAT_LLAMA31] = "llama31",
};

#define FORMAT_LIST "chatml, qwen3, qwen3-nothink, llama3, llama31, llama2, mistral, zephyr, plain"

/* ------------------------------------------------------------ names */

int chat_format_parse(const char *name, ChatFormat *out) {
    int f;
    PL_TRY(pl_enum_parse(FORMAT_NAMES, CHAT_NFORMATS, name, "chat format", &f));
    *out = (ChatFormat)f;
    return PL_OK;
}

const char *chat_format_name(ChatFormat f) {
    return pl_enum_name(FORMAT_NAMES, CHAT_NFORMATS, (int)f);
}

/* ------------------------------------------------------ text buffer */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;  // an append failed; the buffer is unusable
} Buf;

static void buf_add(Buf *b, const char *s, size_t len) {
    if (b->oom) return;
    if (pl_grow(&b->p, &b->cap, b->n + len + 1, 1) < 0) {
        b->oom = 1;
        return;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void buf_str(Buf *b, const char *s) {
    if (s) buf_add(b, s, strlen(s));
}

/* ------------------------------------------------------------ strip */

/* Byte length of the Python-whitespace character (str.isspace) that starts
 * at s (n bytes available), or 0. */
static size_t ws_at(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)) return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;  // U+0085, U+00A0
    if (n >= 3) {
        unsigned cp = ((c & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
        if ((c & 0xf0) != 0xe0 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) return 0;
        if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
            cp == 0x202f || cp == 0x205f || cp == 0x3000)
            return 3;
    }
    return 0;
}

/* Byte length of the whitespace character that ends s[0..n), or 0. */
static size_t ws_before(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        if ((s[n - k] & 0xc0) == 0x80) continue;  // a continuation byte: look further back
        return ws_at(s + n - k, k) == k ? k : 0;
    }
    return 0;
}

/* The [*lo, *hi) sub-range of s[0..n) left after Python's str.strip(). */
static void strip_range(const char *s, size_t n, size_t *lo, size_t *hi) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, b = n, k;
    while (a < b && (k = ws_at(u + a, b - a)) > 0) a += k;
    while (b > a && (k = ws_before(u + a, b - a)) > 0) b -= k;
    *lo = a;
    *hi = b;
}

/* ---------------------------------------------------------- formats */

typedef struct {
    const ChatOptions *o;
    const ChatMessage *m;
    size_t n;
    int gen;
    Buf *b;
    ChatSpan *sp;  // n entries
} Ctx;

static const char *bos(const Ctx *c) { return c->o && c->o->bos ? c->o->bos : ""; }
static const char *eos(const Ctx *c) { return c->o && c->o->eos ? c->o->eos : ""; }
static int is_role(const ChatMessage *m, const char *r) { return strcmp(m->role, r) == 0; }

/* Appends content and records its span; the terminator, if any, extends the
 * span when the message is an assistant turn. */
static void add_content(Ctx *c, size_t i, const char *s, size_t len, const char *term) {
    c->sp[i].start = c->b->n;
    buf_add(c->b, s, len);
    c->sp[i].end = c->b->n;
    buf_str(c->b, term);
    if (is_role(&c->m[i], "assistant")) c->sp[i].end = c->b->n;
}

static int render_chatml(Ctx *c) {
    const char *dsys = c->o ? c->o->default_system : NULL;
    if (dsys && !is_role(&c->m[0], "system")) {
        buf_str(c->b, "<|im_start|>system\n");
        buf_str(c->b, dsys);
        buf_str(c->b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < c->n; i++) {
        buf_str(c->b, "<|im_start|>");
        buf_str(c->b, c->m[i].role);
        buf_str(c->b, "\n");
        add_content(c, i, c->m[i].content, strlen(c->m[i].content), "<|im_end|>");
        buf_str(c->b, "\n");
    }
    if (c->gen) buf_str(c->b, "<|im_start|>assistant\n");
    return PL_OK;
}

static int render_llama3(Ctx *c) {
    buf_str(c->b, bos(c));
    for (size_t i = 0; i < c->n; i++) {
        size_t lo, hi;
        strip_range(c->m[i].content, strlen(c->m[i].content), &lo, &hi);
        buf_str(c->b, "<|start_header_id|>");
        buf_str(c->b, c->m[i].role);
        buf_str(c->b, "<|end_header_id|>\n\n");
        add_content(c, i, c->m[i].content + lo, hi - lo, "<|eot_id|>");
    }
    if (c->gen) buf_str(c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return PL_OK;
}

static int render_zephyr(Ctx *c) {
    for (size_t i = 0; i < c->n; i++) {
        buf_str(c->b, "<|");
        buf_str(c->b, c->m[i].role);
        buf_str(c->b, "|>\n");
        add_content(c, i, c->m[i].content, strlen(c->m[i].content), eos(c));
        buf_str(c->b, "\n");
    }
    if (c->gen) buf_str(c->b, "<|assistant|>\n");  // inside the template's loop: n > 0 here
    return PL_OK;
}

static int render_plain(Ctx *c) {
    for (size_t i = 0; i < c->n; i++) {
        buf_str(c->b, c->m[i].role);
        buf_str(c->b, ": ");
        add_content(c, i, c->m[i].content, strlen(c->m[i].content),
                    is_role(&c->m[i], "assistant") ? eos(c) : "");
        buf_str(c->b, "\n\n");
    }
    if (c->gen) buf_str(c->b, "assistant: ");
    return PL_OK;
}

/* -------------------------------------------------------------- qwen3 */

/* Python's s.lstrip('\n') / s.rstrip('\n') on [*a, *b). */
static void lstrip_nl(const char *s, size_t *a, size_t b) {
    while (*a < b && s[*a] == '\n') (*a)++;
}
static void rstrip_nl(const char *s, size_t a, size_t *b) {
    while (*b > a && s[*b - 1] == '\n') (*b)--;
}

/* The last occurrence of needle in s[a, b), or NULL. */
static const char *last_in(const char *s, size_t a, size_t b, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = b >= a + k ? b - k + 1 : a; i-- > a;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

/* Qwen3's template without tools: ChatML, where an assistant turn after
 * the last real user query shows its reasoning in a <think> block (the
 * text before "</think>" in its content; an empty block for the last
 * turn), and qwen3-nothink's generation prompt opens with an empty one
 * (enable_thinking=False). */
static int render_qwen3(Ctx *c, int nothink) {
    size_t last_query = c->n - 1;
    for (size_t i = c->n; i-- > 0;) {
        const char *t = c->m[i].content;
        if (is_role(&c->m[i], "user") &&
            !(!strncmp(t, "<tool_response>", 15) && has_suffix(t, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    size_t first = is_role(&c->m[0], "system") ? 1 : 0;
    if (first) {
        buf_str(c->b, "<|im_start|>system\n");
        add_content(c, 0, c->m[0].content, strlen(c->m[0].content), "<|im_end|>");
        buf_str(c->b, "\n");
    }
    for (size_t i = first; i < c->n; i++) {
        const char *t = c->m[i].content;
        size_t n = strlen(t);
        buf_str(c->b, "<|im_start|>");
        buf_str(c->b, c->m[i].role);
        buf_str(c->b, "\n");
        if (!is_role(&c->m[i], "assistant")) {
            add_content(c, i, t, n, "<|im_end|>");
            buf_str(c->b, "\n");
            continue;
        }
        /* content.split('</think>'): the reasoning is what the first part
         * holds after its last '<think>', the answer what follows the last
         * '</think>' */
        size_t ra = 0, rb = 0, ca = 0, cb = n;
        const char *close = strstr(t, "</think>");
        if (close) {
            rb = (size_t)(close - t);
            rstrip_nl(t, 0, &rb);
            const char *open = last_in(t, 0, rb, "<think>");
            ra = open ? (size_t)(open - t) + 7 : 0;
            lstrip_nl(t, &ra, rb);
            ca = (size_t)(last_in(t, 0, n, "</think>") - t) + 8;
            lstrip_nl(t, &ca, cb);
        }
        c->sp[i].start = c->b->n;
        if (i > last_query && (i + 1 == c->n || rb > ra)) {
            rstrip_nl(t, ra, &rb);
            lstrip_nl(t, &ra, rb);
            lstrip_nl(t, &ca, cb);
            buf_str(c->b, "<think>\n");
            buf_add(c->b, t + ra, rb - ra);
            buf_str(c->b, "\n</think>\n\n");
        }
        buf_add(c->b, t + ca, cb - ca);
        buf_str(c->b, "<|im_end|>");
        c->sp[i].end = c->b->n;
        buf_str(c->b, "\n");
    }
    if (c->gen) buf_str(c->b, nothink ? "<|im_start|>assistant\n<think>\n\n</think>\n\n"
                                      : "<|im_start|>assistant\n");
    return PL_OK;
}

/* ------------------------------------------------------------ llama31 */

/* Llama 3.1's template without tools: a system header that always comes,
 * with the knowledge cutoff, the date and the (trimmed) system message,
 * then Llama 3's turns. */
static int render_llama31(Ctx *c) {
    size_t first = is_role(&c->m[0], "system") ? 1 : 0;
    buf_str(c->b, bos(c));
    buf_str(c->b, "<|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\nToday Date: ");
    buf_str(c->b, c->o && c->o->date ? c->o->date : CHAT_LLAMA31_DATE);
    buf_str(c->b, "\n\n");
    if (first) {
        size_t lo, hi;
        strip_range(c->m[0].content, strlen(c->m[0].content), &lo, &hi);
        add_content(c, 0, c->m[0].content + lo, hi - lo, "<|eot_id|>");
    } else
        buf_str(c->b, "<|eot_id|>");
    for (size_t i = first; i < c->n; i++) {
        size_t lo, hi;
        strip_range(c->m[i].content, strlen(c->m[i].content), &lo, &hi);
        buf_str(c->b, "<|start_header_id|>");
        buf_str(c->b, c->m[i].role);
        buf_str(c->b, "<|end_header_id|>\n\n");
        add_content(c, i, c->m[i].content + lo, hi - lo, "<|eot_id|>");
    }
    if (c->gen) buf_str(c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return PL_OK;
}

/* The llama2/mistral rule: after an optional leading system message, loop
 * message k must be a user turn exactly when k is even. */
static int check_alternation(const Ctx *c, size_t first) {
    for (size_t i = first; i < c->n; i++) {
        int k_even = (i - first) % 2 == 0;
        if (is_role(&c->m[i], "user") != k_even)
            return pl_fail(PL_EINVAL,
                           "chat message %zu (%s): after an optional system message, conversation "
                           "roles must alternate user/assistant/user/assistant/...",
                           i, c->m[i].role);
    }
    return PL_OK;
}

static int render_llama2(Ctx *c) {
    size_t first = is_role(&c->m[0], "system") ? 1 : 0;
    const char *sys = first ? c->m[0].content : NULL;
    if (first) c->sp[0].start = c->sp[0].end = 0;
    PL_TRY(check_alternation(c, first));
    for (size_t i = first; i < c->n; i++) {
        const char *content = c->m[i].content;
        if (is_role(&c->m[i], "user")) {
            buf_str(c->b, bos(c));
            buf_str(c->b, "[INST] ");
            if (i == first && sys) {
                /* The template strips '<<SYS>>\n' + sys + '\n<</SYS>>\n\n' + content
                 * as one string: only its right end can move, and it may eat
                 * into the markup when content is blank. */
                Buf t = {0};
                buf_str(&t, "<<SYS>>\n");
                size_t s0 = t.n;
                buf_str(&t, sys);
                size_t s1 = t.n;
                buf_str(&t, "\n<</SYS>>\n\n");
                size_t u0 = t.n;
                buf_str(&t, content);
                if (t.oom) {
                    free(t.p);
                    return pl_fail(PL_ENOMEM, "out of memory rendering a chat");
                }
                size_t lo, hi;
                strip_range(t.p, t.n, &lo, &hi);
                size_t base = c->b->n - lo;
#define CLAMP(x) ((x) < lo ? lo : (x) > hi ? hi : (x))
                c->sp[0].start = base + CLAMP(s0);
                c->sp[0].end = base + CLAMP(s1);
                c->sp[i].start = base + CLAMP(u0);
                c->sp[i].end = base + hi;
#undef CLAMP
                buf_add(c->b, t.p + lo, hi - lo);
                free(t.p);
            } else {
                size_t lo, hi;
                strip_range(content, strlen(content), &lo, &hi);
                add_content(c, i, content + lo, hi - lo, "");
            }
            buf_str(c->b, " [/INST]");
        } else if (is_role(&c->m[i], "assistant")) {
            size_t lo, hi;
            strip_range(content, strlen(content), &lo, &hi);
            buf_str(c->b, " ");
            c->sp[i].start = c->b->n;
            buf_add(c->b, content + lo, hi - lo);
            buf_str(c->b, " ");
            buf_str(c->b, eos(c));
            c->sp[i].end = c->b->n;
        } else {
            c->sp[i].start = c->sp[i].end = c->b->n;  // accepted and dropped, as the template does
        }
    }
    return PL_OK;
}

static int render_mistral(Ctx *c) {
    size_t first = is_role(&c->m[0], "system") ? 1 : 0;
    PL_TRY(check_alternation(c, first));
    buf_str(c->b, bos(c));
    for (size_t i = first; i < c->n; i++) {
        const char *content = c->m[i].content;
        if (is_role(&c->m[i], "user")) {
            buf_str(c->b, " [INST] ");
            if (i == first && first) {
                c->sp[0].start = c->b->n;
                buf_str(c->b, c->m[0].content);
                c->sp[0].end = c->b->n;
                buf_str(c->b, "\n\n");
            }
            add_content(c, i, content, strlen(content), "");
            buf_str(c->b, " [/INST]");
        } else if (is_role(&c->m[i], "assistant")) {
            buf_str(c->b, " ");
            add_content(c, i, content, strlen(content), eos(c));
        } else {
            return pl_fail(PL_EINVAL,
                           "chat message %zu (system): mistral accepts a system message only as "
                           "the first message",
                           i);
        }
    }
    return PL_OK;
}

int chat_render_spans(ChatFormat f, const ChatOptions *opts, const ChatMessage *msgs, size_t n,
                      int add_generation_prompt, char **out, size_t *out_len, ChatSpan *spans) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (f < 0 || f >= CHAT_NFORMATS) return pl_fail(PL_EINVAL, "chat_render: bad format %d", f);
    if (n == 0) return pl_fail(PL_EINVAL, "chat_render: empty conversation");
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")))
            return pl_fail(PL_EINVAL,
                           "chat message %zu: role \"%s\" is not system, user or assistant", i,
                           r ? r : "(null)");
        if (!msgs[i].content) return pl_fail(PL_EINVAL, "chat message %zu: content is NULL", i);
    }
    Buf b = {0};
    ChatSpan *sp = spans ? spans : calloc(n, sizeof *sp);
    if (!sp) return pl_fail(PL_ENOMEM, "out of memory rendering a chat");
    memset(sp, 0, n * sizeof *sp);
    Ctx c = {.o = opts, .m = msgs, .n = n, .gen = add_generation_prompt, .b = &b, .sp = sp};
    int rc;
    switch (f) {
    case CHAT_CHATML: rc = render_chatml(&c); break;
    case CHAT_LLAMA3: rc = render_llama3(&c); break;
    case CHAT_LLAMA2: rc = render_llama2(&c); break;
    case CHAT_MISTRAL: rc = render_mistral(&c); break;
    case CHAT_ZEPHYR: rc = render_zephyr(&c); break;
    case CHAT_QWEN3: rc = render_qwen3(&c, 0); break;
    case CHAT_QWEN3_NOTHINK: rc = render_qwen3(&c, 1); break;
    case CHAT_LLAMA31: rc = render_llama31(&c); break;
    default: rc = render_plain(&c); break;
    }
    if (sp != spans) free(sp);
    if (rc == PL_OK && !b.p) buf_add(&b, "", 0);  // empty output is still a string
    if (rc == PL_OK && b.oom) rc = pl_fail(PL_ENOMEM, "out of memory rendering a chat");
    if (rc < 0) {
        free(b.p);
        if (rc == PL_EINVAL) return pl_wrap(rc, "%s", chat_format_name(f));
        return rc;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return PL_OK;
}

int chat_render(ChatFormat f, const ChatOptions *opts, const ChatMessage *msgs, size_t n,
                int add_generation_prompt, char **out) {
    return chat_render_spans(f, opts, msgs, n, add_generation_prompt, out, NULL, NULL);
}

/* ------------------------------------------------------ recognition */

/* The text of a literal '<|im_start|>system\n...<|im_end|>' in a chatml
 * template (Qwen2's default system prompt), unescaped; NULL when absent. */
static char *chatml_default_system(const char *t) {
    static const char key[] = "<|im_start|>system";
    for (const char *p = strstr(t, key); p; p = strstr(p + 1, key)) {
        if (p == t || (p[-1] != '\'' && p[-1] != '"')) continue;  // not a string literal's start
        char quote = p[-1];
        const char *s = p + strlen(key);
        if (s[0] == '\\' && s[1] == 'n') s += 2;
        else if (s[0] == '\n') s += 1;
        else continue;
        const char *e = strstr(s, "<|im_end|>");
        if (!e) continue;
        Buf b = {0};
        int ok = 1;
        for (const char *q = s; q < e && ok; q++) {
            if (*q == quote) ok = 0;  // the literal ends before <|im_end|>: not a constant
            else if (*q == '\\' && q + 1 < e) {
                q++;
                char ch = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q == 'r' ? '\r' : *q;
                buf_add(&b, &ch, 1);
            } else buf_add(&b, q, 1);
        }
        if (ok && !b.oom) {
            if (!b.p) buf_add(&b, "", 0);
            if (!b.oom) return b.p;
        }
        free(b.p);
    }
    return NULL;
}

int chat_detect(const char *t, ChatFormat *out, ChatOptions *opts) {
    if (!t) return pl_fail(PL_EINVAL, "chat_detect: no template");
    ChatFormat f;
    if (strstr(t, "<|im_start|>") && strstr(t, "</think>")) f = CHAT_QWEN3;
    else if (strstr(t, "<|im_start|>")) f = CHAT_CHATML;
    else if (strstr(t, "<|start_header_id|>") && strstr(t, "Cutting Knowledge Date"))
        f = CHAT_LLAMA31;
    else if (strstr(t, "<|start_header_id|>")) f = CHAT_LLAMA3;
    else if (strstr(t, "[INST]") && strstr(t, "<<SYS>>")) f = CHAT_LLAMA2;
    else if (strstr(t, "[INST]")) f = CHAT_MISTRAL;
    else if (strstr(t, "<|user|>") && strstr(t, "<|assistant|>") && !strstr(t, "<|end|>"))
        f = CHAT_ZEPHYR;
    else
        return pl_fail(PL_ENOTSUP, "chat_template not recognised; name the format (" FORMAT_LIST
                                   ")");
    if (opts) {
        opts->default_system = NULL;
        if (f == CHAT_CHATML) {
            char *d = chatml_default_system(t);
            opts->default_system = d;
        }
    }
    *out = f;
    return PL_OK;
}

void chat_options_free(ChatOptions *opts) {
    if (!opts) return;
    free((char *)opts->bos);
    free((char *)opts->eos);
    free((char *)opts->default_system);
    opts->bos = opts->eos = opts->default_system = NULL;
}

/* A special token given as "text" or {"content": "text", ...}; NULL otherwise. */
static const char *token_text(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int dup_opt(const char **dst, const char *s) {
    *dst = NULL;
    if (!s) return PL_OK;
    char *d = strdup(s);
    PL_CHECK_ALLOC(d);
    *dst = d;
    return PL_OK;
}

int chat_from_tokenizer_config(const char *path, const char *override_name, ChatFormat *fmt,
                               ChatOptions *opts) {
    memset(opts, 0, sizeof *opts);
    ChatFormat over = CHAT_PLAIN;
    if (override_name) PL_TRY(chat_format_parse(override_name, &over));
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        FILE *fp = fopen(path, "rb");
        if (!fp) return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
        fclose(fp);
        return pl_fail(PL_EFORMAT, "%s:%d: %s", path, je.line, je.text);
    }
    int rc = PL_OK;
    const char *tmpl = NULL;
    json_t *ct = json_object_get(root, "chat_template");
    if (json_is_string(ct)) {
        tmpl = json_string_value(ct);
    } else if (json_is_array(ct)) {
        size_t k;
        json_t *e;
        json_array_foreach(ct, k, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            if (name && strcmp(name, "default") == 0)
                tmpl = json_string_value(json_object_get(e, "template"));
        }
        if (!tmpl && !override_name) {
            rc = pl_fail(PL_EFORMAT, "%s: chat_template is a list without a \"default\" entry; "
                                     "name the format (" FORMAT_LIST ")",
                         path);
            goto done;
        }
    } else if (ct && !json_is_null(ct)) {
        rc = pl_fail(PL_EFORMAT, "%s: chat_template is neither a string nor a list", path);
        goto done;
    }
    ChatFormat det;
    ChatOptions dopts = {0};
    int drc = tmpl ? chat_detect(tmpl, &det, &dopts) : PL_ENOTSUP;
    if (override_name) {
        *fmt = over;
        if (drc == PL_OK && det == over) opts->default_system = dopts.default_system;
        else free((char *)dopts.default_system);
        pl_clear_error();
    } else if (drc == PL_OK) {
        *fmt = det;
        opts->default_system = dopts.default_system;
    } else {
        rc = pl_fail(PL_ENOTSUP,
                     "%s: chat_template %s; name the format (" FORMAT_LIST ")", path,
                     tmpl ? "not recognised" : "missing");
        goto done;
    }
    if ((rc = dup_opt(&opts->bos, token_text(json_object_get(root, "bos_token")))) < 0 ||
        (rc = dup_opt(&opts->eos, token_text(json_object_get(root, "eos_token")))) < 0)
        chat_options_free(opts);
done:
    json_decref(root);
    return rc;
}
