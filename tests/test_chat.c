/* test_chat.c: the chat formats of model/chat.h against the real Jinja
 * chat templates of Qwen2, OpenHermes (ChatML), Llama 3, Llama 2, Mistral
 * v0.2 and Zephyr, rendered by jinja2/transformers into
 * tests/data/chat/expected.json (tests/ref/make_chat_ref.py); plus template
 * recognition, tokenizer_config.json reading, spans and role checks. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/chat.h"
#include "testutil.h"

static json_t *g_exp;

static int setup(void **state) {
    json_error_t je;
    g_exp = json_load_file(tu_path("%s/chat/expected.json", tu_data_dir()), 0, &je);
    if (!g_exp) {
        fprintf(stderr, "tests/data/chat/expected.json: %s\n", je.text);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    json_decref(g_exp);
    return 0;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static json_t *template_entry(const char *name) {
    json_t *t = json_object_get(json_object_get(g_exp, "templates"), name);
    if (!t) fail_msg("expected.json: no template %s", name);
    return t;
}

static ChatOptions entry_opts(json_t *t) {
    ChatOptions o = {jstr(t, "bos_token"), jstr(t, "eos_token"), jstr(t, "default_system"), NULL};
    return o;
}

/* Python's str.strip() for the ASCII whitespace the cases use. */
static void py_strip(const char *s, size_t *lo, size_t *hi) {
    size_t a = 0, b = strlen(s);
    while (a < b && strchr(" \t\n\r\v\f", s[a])) a++;
    while (b > a && strchr(" \t\n\r\v\f", s[b - 1])) b--;
    *lo = a;
    *hi = b;
}

/* Every case renders byte-for-byte as the real template does, or fails
 * where the real template raises; the spans of chat_render_spans lie in
 * order inside the text and each assistant span holds exactly the content
 * (stripped where the format strips) plus the format's terminator. */
static void test_render_matches_jinja(void **state) {
    json_t *cases = json_object_get(g_exp, "cases");
    assert_true(json_array_size(cases) > 100);
    size_t k, n_text = 0, n_err = 0, n_asst = 0;
    json_t *cs;
    json_array_foreach(cases, k, cs) {
        json_t *t = template_entry(jstr(cs, "template"));
        ChatFormat f;
        assert_int_equal(chat_format_parse(jstr(cs, "format"), &f), PL_OK);
        ChatOptions o = entry_opts(t);
        o.date = jstr(json_object_get(cs, "kwargs"), "date_string"); /* llama31's */
        json_t *jm = json_object_get(cs, "messages");
        size_t n = json_array_size(jm);
        ChatMessage *m = calloc(n, sizeof *m);
        ChatSpan *sp = calloc(n, sizeof *sp);
        for (size_t i = 0; i < n; i++) {
            m[i].role = jstr(json_array_get(jm, i), "role");
            m[i].content = jstr(json_array_get(jm, i), "content");
        }
        int agp = json_is_true(json_object_get(cs, "add_generation_prompt"));
        char *out = NULL, *out2 = NULL;
        size_t len = 0;
        int rc = chat_render(f, &o, m, n, agp, &out);
        const char *want = jstr(cs, "text");
        char what[160];
        snprintf(what, sizeof what, "case %zu (%s/%s, gen=%d)", k, jstr(cs, "template"),
                 jstr(cs, "name"), agp);
        if (want) {
            if (rc != PL_OK) fail_msg("%s: %s", what, pl_error());
            if (strcmp(out, want) != 0) fail_msg("%s:\n got  [%s]\n want [%s]", what, out, want);
            assert_int_equal(chat_render_spans(f, &o, m, n, agp, &out2, &len, sp), PL_OK);
            assert_string_equal(out2, want);
            assert_int_equal(len, strlen(want));
            const char *aend = jstr(t, "assistant_end");
            size_t prev = 0;
            for (size_t i = 0; i < n; i++) {
                if (sp[i].start < prev || sp[i].end < sp[i].start || sp[i].end > len)
                    fail_msg("%s: span %zu [%zu,%zu) out of order", what, i, sp[i].start, sp[i].end);
                prev = sp[i].end;
                if (strcmp(m[i].role, "assistant") != 0) continue;
                if (f == CHAT_QWEN3 || f == CHAT_QWEN3_NOTHINK) {
                    /* all the model writes after the turn's header, through its end */
                    static const char head[] = "<|im_start|>assistant\n";
                    size_t hl = strlen(head), sl = sp[i].end - sp[i].start;
                    if (sp[i].start < hl || memcmp(out2 + sp[i].start - hl, head, hl) != 0 ||
                        sl < strlen(aend) ||
                        memcmp(out2 + sp[i].end - strlen(aend), aend, strlen(aend)) != 0)
                        fail_msg("%s: assistant span %zu is [%.*s]", what, i, (int)sl,
                                 out2 + sp[i].start);
                    char *span = strndup(out2 + sp[i].start, sl);
                    if (strstr(span, "<|im_start|>")) fail_msg("%s: span %zu crosses a turn", what, i);
                    free(span);
                    n_asst++;
                    continue;
                }
                size_t lo = 0, hi = strlen(m[i].content);
                if (f == CHAT_LLAMA2 || f == CHAT_LLAMA3 || f == CHAT_LLAMA31)
                    py_strip(m[i].content, &lo, &hi);
                char exp[1024];
                snprintf(exp, sizeof exp, "%.*s%s", (int)(hi - lo), m[i].content + lo, aend);
                if (sp[i].end - sp[i].start != strlen(exp) ||
                    memcmp(out2 + sp[i].start, exp, strlen(exp)) != 0)
                    fail_msg("%s: assistant span %zu is [%.*s], want [%s]", what, i,
                             (int)(sp[i].end - sp[i].start), out2 + sp[i].start, exp);
                n_asst++;
            }
            n_text++;
        } else {
            if (rc != PL_EINVAL)
                fail_msg("%s: the template raises \"%s\" but chat_render gave %d", what,
                         jstr(cs, "error"), rc);
            assert_null(out);
            n_err++;
        }
        free(out);
        free(out2);
        free(m);
        free(sp);
    }
    assert_true(n_err >= 8);   // llama2/mistral role-order cases
    assert_true(n_asst > 50);  // spans were really checked
    print_message("%zu renderings, %zu rejections, %zu assistant spans match\n", n_text, n_err,
                  n_asst);
}

/* chat_detect names the right format for each real template and extracts
 * Qwen2's default system prompt (and none from plain ChatML). */
static void test_detect_real_templates(void **state) {
    json_t *tt = json_object_get(g_exp, "templates");
    const char *name;
    json_t *t;
    int n = 0;
    json_object_foreach(tt, name, t) {
        if (strcmp(jstr(t, "format"), "plain") == 0) continue;  // plumb's own: not recognisable
        ChatFormat f = CHAT_NFORMATS;
        ChatOptions o = {0};
        if (chat_detect(jstr(t, "template"), &f, &o) != PL_OK) fail_msg("%s: %s", name, pl_error());
        if (strcmp(chat_format_name(f), jstr(t, "format")) != 0)
            fail_msg("%s detected as %s, want %s", name, chat_format_name(f), jstr(t, "format"));
        const char *ds = jstr(t, "default_system");
        if (ds) assert_non_null(o.default_system), assert_string_equal(o.default_system, ds);
        else if (o.default_system) fail_msg("%s: unexpected default system [%s]", name, o.default_system);
        chat_options_free(&o);
        n++;
    }
    assert_int_equal(n, 8);
}

static const char *GEMMA =
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' "
    "+ message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt "
    "%}{{'<start_of_turn>model\\n'}}{% endif %}";

static const char *UNKNOWN_MSG =
    "chat_template not recognised; name the format (chatml, qwen3, qwen3-nothink, llama3, "
    "llama31, llama2, mistral, zephyr, plain)";

static const char *write_config(const char *name, json_t *cfg) {
    const char *p = tu_path("%s/%s", tu_tmp_dir(), name);
    char path[4096];
    snprintf(path, sizeof path, "%s", p);
    assert_int_equal(json_dump_file(cfg, path, JSON_INDENT(1)), 0);
    json_decref(cfg);
    return tu_path("%s", path);
}

/* An unrecognised template is an error that says to name the format, both
 * from chat_detect and from tokenizer_config.json; naming it works. */
static void test_unknown_template_and_override(void **state) {
    ChatFormat f;
    ChatOptions o = {0};
    assert_int_equal(chat_detect(GEMMA, &f, &o), PL_ENOTSUP);
    assert_non_null(strstr(pl_error(), UNKNOWN_MSG));

    const char *path = write_config("gemma_config.json",
                                    json_pack("{s:s, s:s, s:s}", "chat_template", GEMMA,
                                              "bos_token", "<bos>", "eos_token", "<eos>"));
    assert_int_equal(chat_from_tokenizer_config(path, NULL, &f, &o), PL_ENOTSUP);
    if (!strstr(pl_error(), "tokenizer_config.json") && !strstr(pl_error(), "config.json"))
        fail_msg("error does not name the file: %s", pl_error());
    assert_non_null(strstr(pl_error(), UNKNOWN_MSG));

    assert_int_equal(chat_from_tokenizer_config(path, "plain", &f, &o), PL_OK);
    assert_int_equal(f, CHAT_PLAIN);
    assert_string_equal(o.bos, "<bos>");
    assert_string_equal(o.eos, "<eos>");
    assert_null(o.default_system);
    chat_options_free(&o);
    assert_null(o.bos);

    /* A bad override name is an error listing the valid names. */
    assert_int_equal(chat_from_tokenizer_config(path, "jinja", &f, &o), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "chatml | llama3"));

    /* No chat_template at all: also "name the format". */
    path = write_config("none_config.json", json_pack("{s:s}", "eos_token", "</s>"));
    assert_int_equal(chat_from_tokenizer_config(path, NULL, &f, &o), PL_ENOTSUP);
    assert_non_null(strstr(pl_error(), "name the format"));
    assert_int_equal(chat_from_tokenizer_config(path, "zephyr", &f, &o), PL_OK);
    assert_int_equal(f, CHAT_ZEPHYR);
    chat_options_free(&o);

    assert_int_equal(chat_from_tokenizer_config(tu_path("%s/missing.json", tu_tmp_dir()), NULL, &f, &o),
                     PL_EIO);
}

/* tokenizer_config.json variants: chat_template as a list of named
 * templates ("default" is used), special tokens as {"content": ...}
 * objects; the override keeps the default system prompt of a chatml
 * template but not of another format. */
static void test_tokenizer_config_variants(void **state) {
    json_t *t = template_entry("qwen2");
    json_t *cfg = json_pack(
        "{s:[{s:s, s:s}, {s:s, s:s}], s:{s:s, s:b}, s:{s:s}}", "chat_template", "name",
        "tool_use", "template", GEMMA, "name", "default", "template", jstr(t, "template"),
        "bos_token", "content", "<s>", "lstrip", 0, "eos_token", "content", "<|im_end|>");
    const char *path = write_config("qwen_list_config.json", cfg);
    ChatFormat f;
    ChatOptions o = {0};
    assert_int_equal(chat_from_tokenizer_config(path, NULL, &f, &o), PL_OK);
    assert_int_equal(f, CHAT_CHATML);
    assert_string_equal(o.bos, "<s>");
    assert_string_equal(o.eos, "<|im_end|>");
    assert_string_equal(o.default_system, "You are a helpful assistant.");
    ChatMessage m[] = {{"user", "Hi"}};
    char *out;
    assert_int_equal(chat_render(f, &o, m, 1, 1, &out), PL_OK);
    assert_string_equal(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    chat_options_free(&o);

    assert_int_equal(chat_from_tokenizer_config(path, "chatml", &f, &o), PL_OK);
    assert_string_equal(o.default_system, "You are a helpful assistant.");
    chat_options_free(&o);
    assert_int_equal(chat_from_tokenizer_config(path, "llama3", &f, &o), PL_OK);
    assert_int_equal(f, CHAT_LLAMA3);
    assert_null(o.default_system);
    chat_options_free(&o);

    /* The real Llama 3 template through a config with null bos_token. */
    t = template_entry("llama3");
    path = write_config("llama3_config.json", json_pack("{s:s, s:n, s:s}", "chat_template",
                                                        jstr(t, "template"), "bos_token",
                                                        "eos_token", "<|eot_id|>"));
    assert_int_equal(chat_from_tokenizer_config(path, NULL, &f, &o), PL_OK);
    assert_int_equal(f, CHAT_LLAMA3);
    assert_null(o.bos);
    chat_options_free(&o);
}

/* Roles other than system/user/assistant, NULL roles or contents and empty
 * conversations are PL_EINVAL naming the message; llama2/mistral reject
 * broken alternation and mistral a late system message. */
static void test_invalid_roles(void **state) {
    ChatMessage bad[] = {{"user", "a"}, {"tool", "b"}};
    for (int f = 0; f < CHAT_NFORMATS; f++) {
        char *out = (char *)1;
        assert_int_equal(chat_render((ChatFormat)f, NULL, bad, 2, 0, &out), PL_EINVAL);
        assert_null(out);
        assert_non_null(strstr(pl_error(), "message 1"));
        assert_non_null(strstr(pl_error(), "\"tool\""));
        assert_int_equal(chat_render((ChatFormat)f, NULL, bad, 0, 0, &out), PL_EINVAL);
    }
    char *out;
    ChatMessage nul[] = {{NULL, "x"}};
    assert_int_equal(chat_render(CHAT_CHATML, NULL, nul, 1, 0, &out), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "message 0"));
    ChatMessage nulc[] = {{"user", NULL}};
    assert_int_equal(chat_render(CHAT_CHATML, NULL, nulc, 1, 0, &out), PL_EINVAL);

    ChatMessage uu[] = {{"system", "s"}, {"user", "a"}, {"user", "b"}};
    assert_int_equal(chat_render(CHAT_LLAMA2, NULL, uu, 3, 0, &out), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "message 2"));
    assert_non_null(strstr(pl_error(), "alternate"));
    assert_int_equal(chat_render(CHAT_MISTRAL, NULL, uu, 3, 0, &out), PL_EINVAL);
    assert_int_equal(chat_render(CHAT_CHATML, NULL, uu, 3, 0, &out), PL_OK);  // chatml does not care
    free(out);
    ChatMessage late[] = {{"user", "a"}, {"system", "b"}};
    assert_int_equal(chat_render(CHAT_MISTRAL, NULL, late, 2, 0, &out), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "message 1"));
    assert_int_equal(chat_render(CHAT_LLAMA2, NULL, late, 2, 0, &out), PL_OK);  // dropped, as in Jinja
    assert_string_equal(out, "[INST] a [/INST]");
    free(out);
}

/* Names round-trip; unknown names fail. */
static void test_format_names(void **state) {
    for (int f = 0; f < CHAT_NFORMATS; f++) {
        ChatFormat g;
        assert_int_equal(chat_format_parse(chat_format_name((ChatFormat)f), &g), PL_OK);
        assert_int_equal(g, f);
    }
    ChatFormat g;
    assert_int_equal(chat_format_parse("ChatML", &g), PL_EINVAL);
    assert_int_equal(chat_format_parse(NULL, &g), PL_EINVAL);
    assert_string_equal(chat_format_name(CHAT_NFORMATS), "?");
}

/* Stripping follows Python's str.strip(): Unicode spaces (NBSP, U+3000)
 * go, other non-ASCII bytes stay; spans of a stripped system+user llama2
 * turn land on the right bytes. */
static void test_strip_and_llama2_spans(void **state) {
    ChatMessage m[] = {{"user", "\xc2\xa0 h\xc3\xa9 \xe3\x80\x80"}, {"assistant", "\xe3\x80\x80ok\xc2\x85"}};
    ChatOptions o = {"<|begin_of_text|>", "<|eot_id|>", NULL, NULL};
    char *out;
    assert_int_equal(chat_render(CHAT_LLAMA3, &o, m, 2, 0, &out), PL_OK);
    assert_string_equal(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nh\xc3\xa9"
                             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nok<|eot_id|>");
    free(out);

    ChatMessage s[] = {{"system", "SYS"}, {"user", " q "}, {"assistant", " a "}};
    ChatOptions o2 = {"<s>", "</s>", NULL, NULL};
    ChatSpan sp[3];
    size_t len;
    assert_int_equal(chat_render_spans(CHAT_LLAMA2, &o2, s, 3, 1, &out, &len, sp), PL_OK);
    assert_string_equal(out, "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\n q [/INST] a </s>");
    assert_int_equal(len, strlen(out));
    assert_memory_equal(out + sp[0].start, "SYS", 3);
    assert_int_equal(sp[0].end - sp[0].start, 3);
    assert_int_equal(sp[1].end - sp[1].start, 2);  // " q": only the right end is stripped
    assert_memory_equal(out + sp[1].start, " q", 2);
    assert_int_equal(sp[2].end, len);
    assert_memory_equal(out + sp[2].start, "a </s>", 6);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_matches_jinja),
        cmocka_unit_test(test_detect_real_templates),
        cmocka_unit_test(test_unknown_template_and_override),
        cmocka_unit_test(test_tokenizer_config_variants),
        cmocka_unit_test(test_invalid_roles),
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_strip_and_llama2_spans),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
