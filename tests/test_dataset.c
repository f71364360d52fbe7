/* test_dataset.c: JSONL records -> prompt/response token spans (data/dataset.h).
 *
 * Each shape is checked against the tokenizer run on the texts the rules in
 * dataset.h say (GPT-2 from tests/data/tok/gpt2, Llama 2 from
 * tests/data/tok/llama2-sp, neither with a chat template, so conversational
 * shapes use "plain" or a named format), with masks, truncation, each
 * rejection reason with its line number, a 100 MB line and `plumb data check`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/err.h"
#include "data/dataset.h"
#include "model/tokenizer.h"
#include "testutil.h"

static Tokenizer *g_gpt2, *g_llama;

static const char *gpt2_dir(void) {
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/tok/gpt2", tu_data_dir());
    return dir;
}
static const char *llama_dir(void) { return tu_path("%s/tok/llama2-sp", tu_data_dir()); }

static int setup(void **state) {
    if (tok_load(&g_gpt2, gpt2_dir()) < 0 || tok_load(&g_llama, llama_dir()) < 0) {
        fprintf(stderr, "tok_load: %s\n", pl_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    tok_free(&g_gpt2);
    tok_free(&g_llama);
    return 0;
}

/* Asserts ids[0..n) == the tokenizer's ids of text (+ EOS when eos). */
static void expect_ids(const Tokenizer *t, const int *ids, int n, const char *text, int special,
                       int eos, const char *what) {
    int *want, k;
    if (tok_encode(t, text, strlen(text), special, &want, &k) < 0) fail_msg("%s", pl_error());
    int ok = n == k + (eos ? 1 : 0);
    for (int i = 0; ok && i < k; i++)
        ok = ids[i] == want[i];
    if (ok && eos) ok = ids[k] == tok_eos(t);
    free(want);
    if (!ok) {
        char *got = NULL;
        tok_decode(t, ids, n, 0, &got);
        fail_msg("%s: ids of '%s' expected, got %d ids '%s'", what, text, n, got ? got : "?");
    }
}

static void parse_ok(const DsConfig *c, const char *line, DsRecord *rec) {
    DsReason why;
    char reason[256];
    int rc = ds_parse_line(c, line, strlen(line), rec, &why, reason, sizeof reason);
    if (rc != 1) fail_msg("rejected (%s): %s\n  line: %s", ds_reason_name(why), reason, line);
}

static void parse_bad(const DsConfig *c, const char *line, DsReason want, const char *needle) {
    DsRecord rec;
    DsReason why;
    char reason[256];
    int rc = ds_parse_line(c, line, strlen(line), &rec, &why, reason, sizeof reason);
    if (rc != 0) fail_msg("accepted: %s", line);
    if (why != want || (needle && !strstr(reason, needle)))
        fail_msg("%s: got %s '%s', want %s '%s'", line, ds_reason_name(why), reason,
                 ds_reason_name(want), needle ? needle : "");
    assert_null(rec.prompt);
}

/* String shapes: prompt with add_special, response without, then EOS; the
 * mask covers the response only; answer, ground_truth and margin are kept. */
static void test_string_shapes(void **state) {
    const Tokenizer *toks[2] = {g_gpt2, g_llama};
    for (int k = 0; k < 2; k++) {
        const Tokenizer *t = toks[k];
        DsConfig c;
        ds_config_init(&c, t);
        DsRecord r;
        parse_ok(&c, "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}", &r);
        assert_int_equal(r.shape, DS_SHAPE_PROMPT);
        expect_ids(t, r.prompt, r.n_prompt, "What is 2+2?", 1, 0, "prompt");
        assert_int_equal(r.n_chosen, 0);
        assert_string_equal(r.answer, "4");
        ds_record_free(&r);
        parse_ok(&c, "{\"prompt\": \"Hi\", \"ground_truth\": 17}", &r);
        assert_string_equal(r.answer, "17");
        ds_record_free(&r);

        parse_ok(&c, "{\"prompt\": \"Say hi.\", \"completion\": \" Hello there\"}", &r);
        assert_int_equal(r.shape, DS_SHAPE_SFT);
        expect_ids(t, r.prompt, r.n_prompt, "Say hi.", 1, 0, "sft prompt");
        expect_ids(t, r.chosen, r.n_chosen, " Hello there", 0, 1, "sft response");
        int *ids, n;
        unsigned char *mask;
        assert_int_equal(ds_record_sequence(&r, 0, &ids, &mask, &n), 0);
        assert_int_equal(n, r.n_prompt + r.n_chosen);
        for (int i = 0; i < n; i++) {
            assert_int_equal(mask[i], i >= r.n_prompt);
            assert_int_equal(ids[i], i < r.n_prompt ? r.prompt[i] : r.chosen[i - r.n_prompt]);
        }
        if (t == g_llama) assert_int_equal(ids[0], tok_bos(t)); /* BOS, not trained */
        assert_int_equal(ids[n - 1], tok_eos(t));
        free(ids);
        free(mask);
        ds_record_free(&r);

        parse_ok(&c,
                 "{\"prompt\": \"Q: 1+1=\", \"chosen\": \" 2\", \"rejected\": \" 3\", "
                 "\"margin\": 0.5}",
                 &r);
        assert_int_equal(r.shape, DS_SHAPE_PREF);
        expect_ids(t, r.prompt, r.n_prompt, "Q: 1+1=", 1, 0, "pref prompt");
        expect_ids(t, r.chosen, r.n_chosen, " 2", 0, 1, "chosen");
        expect_ids(t, r.rejected, r.n_rejected, " 3", 0, 1, "rejected");
        assert_true(r.has_margin);
        assert_true(r.margin == 0.5f);
        assert_int_equal(ds_record_sequence(&r, 1, &ids, &mask, &n), 0);
        assert_int_equal(n, r.n_prompt + r.n_rejected);
        assert_int_equal(mask[r.n_prompt - 1], 0);
        assert_int_equal(mask[r.n_prompt], 1);
        assert_int_equal(ids[r.n_prompt], r.rejected[0]);
        free(ids);
        free(mask);
        ds_record_free(&r);
        ds_config_free(&c);
    }
}

/* Conversational shapes rendered with a named format: the prompt ends with
 * the generation prompt, the response is the final assistant content plus
 * the turn's terminator. */
static void test_conversational_chatml(void **state) {
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    assert_int_equal(ds_config_chat(&c, gpt2_dir(), "chatml"), 0);
    assert_int_equal(c.chat, CHAT_CHATML);
    const char *P = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n";
    DsRecord r;
    parse_ok(&c,
             "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
             "\"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}",
             &r);
    assert_int_equal(r.shape, DS_SHAPE_SFT_MSGS);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, P, 0, 0, "messages prompt");
    expect_ids(g_gpt2, r.chosen, r.n_chosen, "Hello<|im_end|>", 0, 0, "messages response");
    ds_record_free(&r);

    /* a prompt-only conversation: the generation prompt is appended */
    parse_ok(&c,
             "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
             "\"user\", \"content\": \"Hi\"}], \"answer\": \"x\"}",
             &r);
    assert_int_equal(r.shape, DS_SHAPE_PROMPT_MSGS);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, P, 0, 0, "prompt messages");
    ds_record_free(&r);

    /* explicit prompt + one-message chosen/rejected */
    parse_ok(&c,
             "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
             "\"user\", \"content\": \"Hi\"}], \"chosen\": [{\"role\": \"assistant\", "
             "\"content\": \"Hello\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": "
             "\"Go away\"}]}",
             &r);
    assert_int_equal(r.shape, DS_SHAPE_PREF_MSGS);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, P, 0, 0, "pref prompt");
    expect_ids(g_gpt2, r.chosen, r.n_chosen, "Hello<|im_end|>", 0, 0, "chosen");
    expect_ids(g_gpt2, r.rejected, r.n_rejected, "Go away<|im_end|>", 0, 0, "rejected");
    ds_record_free(&r);

    /* implicit prompt (HH-RLHF / TRL): the shared messages */
    parse_ok(&c,
             "{\"chosen\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
             "\"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
             "\"Hello\"}], \"rejected\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
             "{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
             "\"Go away\"}]}",
             &r);
    assert_int_equal(r.shape, DS_SHAPE_PREF_IMPLICIT);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, P, 0, 0, "implicit prompt");
    expect_ids(g_gpt2, r.chosen, r.n_chosen, "Hello<|im_end|>", 0, 0, "implicit chosen");
    expect_ids(g_gpt2, r.rejected, r.n_rejected, "Go away<|im_end|>", 0, 0, "implicit rejected");
    ds_record_free(&r);

    /* system/history/question */
    parse_ok(&c,
             "{\"system\": \"Be brief.\", \"history\": [[\"a\", \"b\"]], \"question\": \"Hi\", "
             "\"response_chosen\": \"Hello\", \"response_rejected\": \"Go away\"}",
             &r);
    assert_int_equal(r.shape, DS_SHAPE_PREF_HISTORY);
    expect_ids(g_gpt2, r.prompt, r.n_prompt,
               "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
               "<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
               "<|im_start|>assistant\n",
               0, 0, "history prompt");
    expect_ids(g_gpt2, r.chosen, r.n_chosen, "Hello<|im_end|>", 0, 0, "history chosen");
    ds_record_free(&r);

    /* prompt/completion as messages */
    parse_ok(&c,
             "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"completion\": "
             "[{\"role\": \"assistant\", \"content\": \"Yo\"}]}",
             &r);
    assert_int_equal(r.shape, DS_SHAPE_SFT_MSGS);
    expect_ids(g_gpt2, r.prompt, r.n_prompt,
               "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", 0, 0,
               "completion prompt");
    expect_ids(g_gpt2, r.chosen, r.n_chosen, "Yo<|im_end|>", 0, 0, "completion");
    ds_record_free(&r);
    ds_config_free(&c);
}

/* Llama 3.1's date: the template's own by default, the one given by
 * ds_config_chat_date otherwise; refused for any other format. */
static void test_chat_date(void **state) {
    (void)state;
    const char *line = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": "
                       "\"assistant\", \"content\": \"Hello\"}]}";
    const char *dates[] = {NULL, "01 Dec 2026"};
    for (int i = 0; i < 2; i++) {
        DsConfig c;
        DsRecord r;
        ds_config_init(&c, g_gpt2);
        assert_int_equal(ds_config_chat(&c, gpt2_dir(), "llama31"), 0);
        assert_int_equal(ds_config_chat_date(&c, dates[i], "data.chat_date"), 0);
        parse_ok(&c, line, &r);
        char *text = NULL, want[64];
        assert_int_equal(tok_decode(g_gpt2, r.prompt, r.n_prompt, 0, &text), 0);
        snprintf(want, sizeof want, "Today Date: %s\n", dates[i] ? dates[i] : CHAT_LLAMA31_DATE);
        if (!strstr(text, want)) fail_msg("'%s' lacks '%s'", text, want);
        free(text);
        ds_record_free(&r);
        ds_config_free(&c);
    }
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    assert_int_equal(ds_config_chat(&c, gpt2_dir(), "llama3"), 0);
    assert_int_equal(ds_config_chat_date(&c, "", "--chat-date"), 0); /* empty: nothing to set */
    assert_int_equal(ds_config_chat_date(&c, "01 Dec 2026", "--chat-date"), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "--chat-date"));
    assert_non_null(strstr(pl_error(), "llama3"));
    ds_config_free(&c);
}

/* Without a template, conversations render "plain" with the tokenizer's EOS;
 * llama2 writes <s>/</s>, which become the BOS/EOS ids. */
static void test_conversational_plain_llama2(void **state) {
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    assert_int_equal(ds_config_chat(&c, gpt2_dir(), NULL), 0);
    assert_int_equal(c.chat, CHAT_PLAIN);
    DsRecord r;
    const char *line = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": "
                       "\"assistant\", \"content\": \"Hello\"}]}";
    parse_ok(&c, line, &r);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, "user: Hi\n\nassistant: ", 0, 0, "plain prompt");
    expect_ids(g_gpt2, r.chosen, r.n_chosen, "Hello", 0, 1, "plain response + eos");
    ds_record_free(&r);
    ds_config_free(&c);

    ds_config_init(&c, g_llama);
    assert_int_equal(ds_config_chat(&c, llama_dir(), "llama2"), 0);
    parse_ok(&c, line, &r);
    expect_ids(g_llama, r.prompt, r.n_prompt, "<s>[INST] Hi [/INST] ", 0, 0, "llama2 prompt");
    assert_int_equal(r.prompt[0], tok_bos(g_llama));
    assert_int_equal(r.chosen[r.n_chosen - 1], tok_eos(g_llama));
    ds_record_free(&r);
    /* llama2 rejects a conversation that does not alternate */
    parse_bad(&c,
              "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}, {\"role\": "
              "\"assistant\", \"content\": \"y\"}]}",
              DS_R_CHAT, "llama2");
    ds_config_free(&c);
    assert_int_equal(ds_config_chat(&c, llama_dir(), "nonsense"), PL_EINVAL);
}

/* The chat format comes from tokenizer_config.json's chat_template when it
 * has one; an unknown template is an error, not a silent "plain". */
static void test_chat_from_config(void **state) {
    const char *dir = tu_path("%s/cfg", tu_tmp_dir());
    mkdir(dir, 0777);
    const char *cfg = "{\"eos_token\": \"<|endoftext|>\", \"chat_template\": \"{% for m in "
                      "messages %}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{% "
                      "endfor %}\"}";
    assert_int_equal(tu_write_file(tu_path("%s/tokenizer_config.json", dir), cfg, strlen(cfg)), 0);
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    assert_int_equal(ds_config_chat(&c, dir, NULL), 0);
    assert_int_equal(c.chat, CHAT_CHATML);
    DsRecord r;
    parse_ok(&c, "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}]}", &r);
    expect_ids(g_gpt2, r.prompt, r.n_prompt,
               "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", 0, 0, "template prompt");
    ds_record_free(&r);
    ds_config_free(&c);
    const char *odd = "{\"chat_template\": \"{{ something else }}\"}";
    assert_int_equal(tu_write_file(tu_path("%s/tokenizer_config.json", dir), odd, strlen(odd)), 0);
    ds_config_init(&c, g_gpt2);
    assert_int_equal(ds_config_chat(&c, dir, NULL), PL_ENOTSUP);
    assert_int_equal(c.chat, CHAT_PLAIN);
    assert_int_equal(ds_config_chat(&c, dir, "zephyr"), 0);
    assert_int_equal(c.chat, CHAT_ZEPHYR);
    ds_config_free(&c);
}

/* Left truncation of prompts, right truncation of responses, drop mode, and
 * pairs made equal by truncation. */
static void test_truncation(void **state) {
    DsConfig c;
    ds_config_init(&c, g_llama);
    DsRecord full, r;
    const char *line = "{\"prompt\": \"one two three four five six seven\", \"chosen\": \" alpha "
                       "beta gamma delta\", \"rejected\": \" omega zeta eta theta\"}";
    const char *shared = "{\"prompt\": \"one two three four five six seven\", \"chosen\": \" "
                         "alpha beta gamma delta\", \"rejected\": \" alpha beta gamma epsilon\"}";
    parse_ok(&c, line, &full);
    assert_false(full.truncated);
    assert_true(full.n_prompt > 4 && full.n_chosen > 3);
    c.max_prompt_len = 4;
    c.max_response_len = 3;
    parse_ok(&c, line, &r);
    assert_true(r.truncated);
    assert_int_equal(r.n_prompt, 4);
    assert_memory_equal(r.prompt, full.prompt + full.n_prompt - 4, 4 * sizeof(int));
    assert_int_equal(r.n_chosen, 3);
    assert_memory_equal(r.chosen, full.chosen, 3 * sizeof(int));
    assert_int_equal(r.n_rejected, 3);
    ds_record_free(&r);
    /* the first 3 tokens of both responses of `shared` are the same */
    c.max_prompt_len = 0;
    parse_ok(&c, line, &r);
    ds_record_free(&r);
    parse_bad(&c, shared, DS_R_EQUAL, "after truncation");
    c.max_response_len = 0;
    c.max_prompt_len = 4;
    c.drop_long = 1;
    parse_bad(&c, line, DS_R_TOO_LONG, "max_prompt_len 4");
    c.max_prompt_len = 0;
    c.max_response_len = 2;
    parse_bad(&c, line, DS_R_TOO_LONG, "chosen has");
    c.max_response_len = 100;
    parse_ok(&c, line, &r);
    assert_false(r.truncated);
    ds_record_free(&r);
    ds_record_free(&full);
}

/* Each rejection reason, with its message, from single lines. */
static void test_rejections(void **state) {
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    parse_bad(&c, "{\"prompt\": \"a\"", DS_R_JSON, "invalid JSON");
    parse_bad(&c, "[1, 2]", DS_R_JSON, "not a JSON object");
    parse_bad(&c, "{\"prompt\": \"caf\xe9\"}", DS_R_UTF8, "byte 15");
    parse_bad(&c, "{\"prompt\": \"\xed\xa0\x80\"}", DS_R_UTF8, "byte 12"); /* a surrogate */
    parse_bad(&c, "{\"text\": \"a\"}", DS_R_SHAPE, "unknown shape");
    parse_bad(&c, "{\"prompt\": 3}", DS_R_FIELD, "\"prompt\"");
    parse_bad(&c, "{\"prompt\": \"a\", \"chosen\": 1, \"rejected\": \"b\"}", DS_R_FIELD,
              "\"chosen\"");
    parse_bad(&c, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"\"}", DS_R_EMPTY,
              "rejected");
    parse_bad(&c, "{\"prompt\": \"a\", \"chosen\": \"\", \"rejected\": \"b\"}", DS_R_EMPTY,
              "chosen");
    parse_bad(&c, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"b\"}", DS_R_EQUAL, NULL);
    parse_bad(&c, "{\"prompt\": \"\", \"completion\": \"b\"}", DS_R_EMPTY, "prompt");
    parse_bad(&c, "{\"prompt\": \"a\", \"chosen\": \"b\"}", DS_R_SHAPE, "without");
    parse_bad(&c, "{\"prompt\": \"a\", \"answer\": [1]}", DS_R_FIELD, "answer");
    parse_bad(&c, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\", \"margin\": \"x\"}",
              DS_R_FIELD, "margin");
    parse_bad(&c, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", DS_R_FIELD,
              "messages[0].content");
    parse_bad(&c,
              "{\"chosen\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
              "\"content\": \"a\"}], \"rejected\": [{\"role\": \"user\", \"content\": \"other\"}, "
              "{\"role\": \"assistant\", \"content\": \"b\"}]}",
              DS_R_SHAPE, "share all messages but the last");
    parse_bad(&c,
              "{\"chosen\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
              "\"content\": \"a\"}], \"rejected\": [{\"role\": \"user\", \"content\": \"q\"}, "
              "{\"role\": \"assistant\", \"content\": \"a\"}]}",
              DS_R_EQUAL, NULL);
    parse_bad(&c, "{\"question\": \"q\", \"response_chosen\": \"a\", \"response_rejected\": 2}",
              DS_R_FIELD, "response_rejected");
    parse_bad(&c,
              "{\"question\": \"q\", \"history\": [[\"u\"]], \"response_chosen\": \"a\", "
              "\"response_rejected\": \"b\"}",
              DS_R_FIELD, "history[0]");
    c.format = DS_PREF;
    parse_bad(&c, "{\"prompt\": \"a\", \"completion\": \"b\"}", DS_R_SHAPE, "preference");
    c.format = DS_SFT;
    parse_bad(&c, "{\"prompt\": \"a\"}", DS_R_SHAPE, "sft");
    /* the prompt format keeps the prompt of any shape */
    c.format = DS_PROMPT;
    DsRecord r;
    parse_ok(&c, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}", &r);
    assert_int_equal(r.n_chosen, 0);
    assert_null(r.chosen);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, "a", 1, 0, "prompt of a pair");
    ds_record_free(&r);
}

/* The reader gives each record or rejection with its line number, skips
 * blank lines, counts, and handles CRLF and a last line without newline. */
static void test_reader_lines(void **state) {
    const char *text = "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                       "\n"
                       "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"b\"}\r\n"
                       "not json\n"
                       "{\"prompt\": \"one two three\", \"completion\": \"x\"}\n"
                       "{\"prompt\": \"caf\xe9\"}\n"
                       "{\"prompt\": \"last\"}";
    const char *path = tu_path("%s/lines.jsonl", tu_tmp_dir());
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    c.max_prompt_len = 2;
    DsReader *rd;
    assert_int_equal(ds_reader_open(&rd, path, &c), 0);
    int want_rc[] = {1, 2, 2, 1, 2, 1};
    long want_line[] = {1, 3, 4, 5, 6, 7};
    DsReason want_why[] = {0, DS_R_EQUAL, DS_R_JSON, 0, DS_R_UTF8, 0};
    for (int i = 0; i < 6; i++) {
        DsRecord r;
        DsReason why;
        long line;
        char reason[256];
        int rc = ds_reader_next(rd, &r, &line, &why, reason, sizeof reason);
        if (rc != want_rc[i] || line != want_line[i])
            fail_msg("item %d: rc %d line %ld (%s), want rc %d line %ld", i, rc, line, reason,
                     want_rc[i], want_line[i]);
        if (rc == 2) assert_int_equal(why, want_why[i]);
        if (rc == 1) assert_int_equal(r.line, line);
        ds_record_free(&r);
    }
    DsRecord r;
    DsReason why;
    long line;
    char reason[256];
    assert_int_equal(ds_reader_next(rd, &r, &line, &why, reason, sizeof reason), 0);
    const DsSummary *s = ds_reader_summary(rd);
    assert_int_equal(s->read, 6);
    assert_int_equal(s->kept, 3);
    assert_int_equal(s->truncated, 1);
    assert_int_equal(s->dropped[DS_R_EQUAL], 1);
    assert_int_equal(s->dropped[DS_R_JSON], 1);
    assert_int_equal(s->dropped[DS_R_UTF8], 1);
    ds_reader_free(&rd);
    assert_null(rd);
    assert_int_equal(ds_reader_open(&rd, tu_path("%s/missing.jsonl", tu_tmp_dir()), &c), PL_EIO);
}

/* A 100 MB line is rejected with its length and the reader goes on with the
 * next line, never holding more than max_line_bytes of it. */
static void test_huge_line(void **state) {
    const char *path = tu_path("%s/huge.jsonl", tu_tmp_dir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("{\"prompt\": \"first\"}\n{\"prompt\": \"", f);
    size_t chunk = 1 << 20;
    char *a = malloc(chunk);
    memset(a, 'a', chunk);
    for (int i = 0; i < 100; i++)
        fwrite(a, 1, chunk, f);
    free(a);
    fputs("\"}\n{\"prompt\": \"third\"}\n", f);
    assert_int_equal(fclose(f), 0);
    DsConfig c;
    ds_config_init(&c, g_gpt2);
    DsReader *rd;
    assert_int_equal(ds_reader_open(&rd, path, &c), 0);
    DsRecord r;
    DsReason why;
    long line;
    char reason[256];
    assert_int_equal(ds_reader_next(rd, &r, &line, &why, reason, sizeof reason), 1);
    ds_record_free(&r);
    assert_int_equal(ds_reader_next(rd, &r, &line, &why, reason, sizeof reason), 2);
    assert_int_equal(line, 2);
    assert_int_equal(why, DS_R_LINE_TOO_LONG);
    assert_non_null(strstr(reason, "104857614 bytes"));
    assert_int_equal(ds_reader_next(rd, &r, &line, &why, reason, sizeof reason), 1);
    assert_int_equal(line, 3);
    expect_ids(g_gpt2, r.prompt, r.n_prompt, "third", 1, 0, "after the long line");
    ds_record_free(&r);
    assert_int_equal(ds_reader_next(rd, &r, &line, &why, reason, sizeof reason), 0);
    ds_reader_free(&rd);
    remove(path);
}

/* `plumb data check` prints the summary and the rejected lines, exit 1. */
static void test_check_cli(void **state) {
    const char *text = "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n"
                       "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"b\"}\n"
                       "{\"chosen\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": "
                       "\"assistant\", \"content\": \"a\"}], \"rejected\": [{\"role\": \"user\", "
                       "\"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n";
    const char *path = tu_path("%s/check.jsonl", tu_tmp_dir());
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    char *out = NULL;
    int rc = tu_run(tu_path("%s data check %s --tokenizer %s --format pref --chat chatml",
                            tu_plumb_bin(), path, gpt2_dir()),
                    &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "{\"line\": 2, \"reason\": \"chosen_equals_rejected\"") ||
        !strstr(out, "\"read\": 3, \"kept\": 2") || !strstr(out, "\"pref_implicit\": 1") ||
        !strstr(out, "\"chat\": \"chatml\""))
        fail_msg("unexpected output:\n%s", out);
    free(out);
    rc = tu_run(tu_path("%s data check %s --tokenizer %s --format bogus 2>&1", tu_plumb_bin(), path,
                        gpt2_dir()),
                &out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "bogus"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_shapes),
        cmocka_unit_test(test_conversational_chatml),
        cmocka_unit_test(test_conversational_plain_llama2), cmocka_unit_test(test_chat_date),
        cmocka_unit_test(test_chat_from_config),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_reader_lines),
        cmocka_unit_test(test_huge_line),
        cmocka_unit_test(test_check_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
