/* plumb data: make the synthetic arithmetic task, check a JSONL dataset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "data/arith.h"
#include "data/dataset.h"
#include "model/tokenizer.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb data arith --out DIR [--seed S] [--max-operand N] [--n-train N]\n"
            "                        [--n-eval N] [--ops +|-|+,-]\n"
            "       plumb data check FILE.jsonl --tokenizer DIR [--format auto|prompt|sft|pref]\n"
            "                        [--chat FORMAT] [--chat-date DATE] [--max-prompt-len N]\n"
            "                        [--max-response-len N] [--drop-long] [--max-line-bytes N]\n"
            "                        [--show N]\n"
            "\n"
            "arith writes a synthetic integer-arithmetic task into DIR: prompts.jsonl,\n"
            "sft.jsonl, pref.jsonl (train), eval.jsonl, eval_pref.jsonl (held out),\n"
            "tokenizer.json, tokenizer_config.json, manifest.json and README.md. The same\n"
            "options give the same files. Defaults: --seed 1 --max-operand 99 --n-train 4000\n"
            "--n-eval 500 --ops +.\n"
            "\n"
            "check parses and tokenizes every line as training would, then prints a JSON\n"
            "summary (read, kept, truncated, dropped by reason, shapes) and the first --show\n"
            "(default 10) rejected lines with their line numbers and reasons. Exits 1 when\n"
            "any line was rejected. --chat names the chat format for conversational\n"
            "records (chatml, qwen3, qwen3-nothink, llama3, llama31, llama2, mistral, zephyr,\n"
            "plain) when the tokenizer's config has no template, or to override it\n"
            "(qwen3-nothink: Qwen3 with enable_thinking=False). --chat-date DATE is the\n"
            "\"Today Date\" llama31's system header writes (default: the template's own,\n"
            "\"26 Jul 2024\"). --drop-long drops over-long records instead of truncating them.\n");
}

static int cmd_arith(int argc, char **argv) {
    ArithConfig c;
    arith_config_default(&c);
    const char *out = NULL;
    unsigned long long seed = c.seed;
    const Opt opts[] = {OPT_REQ("--out", &out), OPT_U64("--seed", &seed),
                        OPT_INT("--max-operand", &c.max_operand, 1, 100000),
                        OPT_INT("--n-train", &c.n_train, 1, 100000000),
                        OPT_INT("--n-eval", &c.n_eval, 0, 100000000), OPT_STR("--ops", &c.ops),
                        OPT_END};
    int prc = opts_parse("data arith", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    c.seed = seed;
    if (arith_write(out, &c) < 0) {
        report_error("data arith", NULL);
        return 1;
    }
    printf("{\"out\": \"%s\", \"seed\": %llu, \"n_train\": %d, \"n_eval\": %d}\n", out,
           (unsigned long long)c.seed, c.n_train, c.n_eval);
    return 0;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static int cmd_check(int argc, char **argv) {
    const char *file = NULL, *dir = NULL, *chat = NULL, *fmt = "auto", *chat_date = NULL;
    int maxp = 0, maxr = 0, drop = 0, show = 10, maxline = 0;
    const Opt opts[] = {
        OPT_POS("FILE.jsonl", &file, 1), OPT_REQ("--tokenizer", &dir),
        OPT_STR("--format", &fmt), OPT_STR("--chat", &chat), OPT_STR("--chat-date", &chat_date),
        OPT_INT("--max-prompt-len", &maxp, 0, 1 << 30),
        OPT_INT("--max-response-len", &maxr, 0, 1 << 30),
        OPT_INT("--max-line-bytes", &maxline, 1, 1 << 30), OPT_INT("--show", &show, 0, 1 << 30),
        OPT_FLAG("--drop-long", &drop), OPT_END};
    int prc = opts_parse("data check", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    DsConfig c;
    Tokenizer *t;
    if (tok_load(&t, dir) < 0) {
        report_error("data check", NULL);
        return 1;
    }
    ds_config_init(&c, t);
    c.max_prompt_len = maxp;
    c.max_response_len = maxr;
    c.drop_long = drop;
    if (maxline) c.max_line_bytes = (size_t)maxline;
    DsReader *r = NULL;
    int rc = 0;
    if (ds_format_parse(fmt, &c.format) < 0 || ds_config_chat(&c, dir, chat) < 0 ||
        ds_config_chat_date(&c, chat_date, "--chat-date") < 0 ||
        ds_reader_open(&r, file, &c) < 0) {
        report_error("data check", NULL);
        rc = 1;
        goto done;
    }
    long shapes[DS_NSHAPES] = {0}, tok_prompt = 0, tok_resp = 0;
    int shown = 0;
    for (;;) {
        DsRecord rec;
        DsReason why;
        long line;
        char reason[512];
        int k = ds_reader_next(r, &rec, &line, &why, reason, sizeof reason);
        if (k < 0) {
            report_error("data check", NULL);
            rc = 1;
            goto done;
        }
        if (k == 0) break;
        if (k == 2) {
            if (shown++ < show) {
                printf("{\"line\": %ld, \"reason\": \"%s\", \"message\": ", line,
                       ds_reason_name(why));
                json_str(stdout, reason);
                printf("}\n");
            }
            continue;
        }
        shapes[rec.shape]++;
        tok_prompt += rec.n_prompt;
        tok_resp += rec.n_chosen + rec.n_rejected;
        ds_record_free(&rec);
    }
    const DsSummary *s = ds_reader_summary(r);
    printf("{\"file\": ");
    json_str(stdout, file);
    printf(", \"chat\": \"%s\", \"read\": %ld, \"kept\": %ld, \"truncated\": %ld, \"dropped\": {",
           chat_format_name(c.chat), s->read, s->kept, s->truncated);
    long dropped = 0;
    for (int i = 0, first = 1; i < DS_NREASONS; i++) {
        dropped += s->dropped[i];
        if (!s->dropped[i]) continue;
        printf("%s\"%s\": %ld", first ? "" : ", ", ds_reason_name((DsReason)i), s->dropped[i]);
        first = 0;
    }
    printf("}, \"shapes\": {");
    for (int i = 1, first = 1; i < DS_NSHAPES; i++) {
        if (!shapes[i]) continue;
        printf("%s\"%s\": %ld", first ? "" : ", ", ds_shape_name((DsShape)i), shapes[i]);
        first = 0;
    }
    printf("}, \"prompt_tokens\": %ld, \"response_tokens\": %ld}\n", tok_prompt, tok_resp);
    rc = dropped ? 1 : 0;
done:
    ds_reader_free(&r);
    ds_config_free(&c);
    tok_free(&t);
    return rc;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "arith")) return cmd_arith(argc - 1, argv + 1);
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 1, argv + 1);
    fprintf(stderr, "plumb data: unknown subcommand '%s' (arith, check)\n", argv[1]);
    return 2;
}
