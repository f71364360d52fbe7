/* plumb tokenize / detokenize: text <-> token ids with a tokenizer.json. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/tokenizer.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage_tok(FILE *f) {
    fprintf(
        f,
        "usage: plumb tokenize --tokenizer DIR (--text STR | --input FILE.jsonl) [--add-special] "
        "[--json]\n"
        "\n"
        "  --tokenizer DIR  folder with tokenizer.json (and tokenizer_config.json)\n"
        "  --text STR       text to encode; prints {\"ids\": [...]}\n"
        "  --input FILE     JSON lines {\"text\": ...}; prints one {\"ids\": [...]} line per line\n"
        "  --add-special    add special tokens as Hugging Face's add_special_tokens=True does\n"
        "                   (Llama 2: BOS first; GPT-2: nothing)\n"
        "  --json           JSON output (the default; kept for symmetry)\n");
}

static void usage_detok(FILE *f) {
    fprintf(f,
            "usage: plumb detokenize --tokenizer DIR --ids \"1 2 3\" [--skip-special] [--json]\n"
            "\n"
            "Prints the decoded text (as Hugging Face's decode), or {\"text\": ...} with --json.\n"
            "--skip-special drops special tokens (BOS, EOS, ...).\n");
}

static int print_ids_line(const Tokenizer *t, const char *s, size_t n, int add_special) {
    int *ids, k;
    if (tok_encode(t, s, n, add_special, &ids, &k) < 0) return -1;
    printf("{\"ids\": ");
    print_json_ints(stdout, ids, k);
    printf("}\n");
    free(ids);
    return 0;
}

static int tokenize_file(const Tokenizer *t, const char *path, int add_special) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        json_error_t je;
        json_t *o = json_loadb(line, len, 0, &je);
        json_t *tx = json_object_get(o, "text");
        if (!o || !json_is_string(tx)) {
            fprintf(stderr, "plumb tokenize: %s:%ld: %s\n", path, lineno,
                    !o ? je.text : "expected an object with a \"text\" string");
            rc = 1;
        } else if (print_ids_line(t, json_string_value(tx), json_string_length(tx), add_special) <
                   0) {
            fprintf(stderr, "plumb tokenize: %s:%ld: %s\n", path, lineno, pl_error());
            rc = 1;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL, *text = NULL, *input = NULL;
    int add_special = 0;
    int json = 0; /* the output is JSON anyway; accepted for symmetry with detokenize */
    const Opt opts[] = {OPT_REQ("--tokenizer", &dir), OPT_STR("--text", &text),
                        OPT_STR("--input", &input), OPT_FLAG("--add-special", &add_special),
                        OPT_FLAG("--json", &json), OPT_END};
    int prc = opts_parse("tokenize", argc, argv, 1, opts, usage_tok);
    if (prc >= 0) return prc;
    if (!text == !input)
        return opts_fail("tokenize", usage_tok, "needs exactly one of --text or --input");
    Tokenizer *t;
    if (tok_load(&t, dir) < 0) {
        report_error("tokenize", NULL);
        return 1;
    }
    int rc = 0;
    if (text) {
        if (print_ids_line(t, text, strlen(text), add_special) < 0) {
            report_error("tokenize", NULL);
            rc = 1;
        }
    } else {
        rc = tokenize_file(t, input, add_special);
    }
    tok_free(&t);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    const char *dir = NULL, *ids_str = NULL;
    int json = 0, skip = 0;
    const Opt opts[] = {OPT_REQ("--tokenizer", &dir), OPT_REQ("--ids", &ids_str),
                        OPT_FLAG("--skip-special", &skip), OPT_FLAG("--json", &json), OPT_END};
    int prc = opts_parse("detokenize", argc, argv, 1, opts, usage_detok);
    if (prc >= 0) return prc;
    /* accept "[1, 2, 3]" as printed by tokenize */
    char *s = strdup(ids_str);
    if (!s) return 1;
    for (char *p = s; *p; p++)
        if (*p == '[' || *p == ']') *p = ' ';
    int *ids, n;
    int bad = arg_ids("--ids", s, &ids, &n);
    free(s);
    if (bad) return 2;
    Tokenizer *t;
    if (tok_load(&t, dir) < 0) {
        report_error("detokenize", NULL);
        free(ids);
        return 1;
    }
    char *text;
    int rc = tok_decode(t, ids, n, skip, &text);
    if (rc < 0) {
        report_error("detokenize", NULL);
    } else if (json) {
        json_t *o = json_pack("{s:s}", "text", text);
        char *d = o ? json_dumps(o, 0) : NULL;
        printf("%s\n", d ? d : "{}");
        free(d);
        json_decref(o);
    } else {
        printf("%s\n", text);
    }
    free(text);
    tok_free(&t);
    free(ids);
    return rc < 0 ? 1 : 0;
}
