/* plumb generate: sample from a model with the KV cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "model/generate.h"
#include "model/tokenizer.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb generate --model PATH (--prompt-ids \"1 2 3\" | --prompt TEXT [--tokenizer DIR])\n"
            "                      [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
            "                      [--seed S] [--ignore-eos] [--adapter DIR] [--threads N] [--json]\n"
            "                      [--device cpu|cuda:N]\n"
            "\n"
            "  --model PATH        Hugging Face folder or llama2.c .bin\n"
            "  --prompt-ids IDS    prompt token ids, space or comma separated\n"
            "  --prompt TEXT       prompt text, encoded with the tokenizer.json of the model\n"
            "                      folder (or --tokenizer DIR) with its special tokens (BOS);\n"
            "                      prints the generated text (without special tokens)\n"
            "  --tokenizer DIR     folder with tokenizer.json (default: the model folder)\n"
            "  --max-new-tokens N  tokens to generate at most (default 64)\n"
            "  --temperature T     0 = greedy (default 1.0)\n"
            "  --top-k K           keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P           nucleus sampling mass (default 1.0 = off)\n"
            "  --seed S            random seed (default 0); the same seed gives the same output\n"
            "  --ignore-eos        do not stop at the end-of-sequence token\n"
            "  --adapter DIR       apply a PEFT LoRA adapter\n"
            "  --threads N         CPU threads (default: OMP_NUM_THREADS or all cores)\n"
            "  --json              print {\"ids\": [...], \"logprobs\": [...]} (generated ids only)\n");
}

/* The tokenizer for --prompt: --tokenizer DIR, else the model folder. Prints
 * the error; returns -1 when there is none. */
static int load_prompt_tokenizer(const char *model_path, const char *tok_dir, Tokenizer **tok) {
    char path[4096];
    const char *dir = tok_dir ? tok_dir : model_path;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr,
                "plumb generate: --prompt needs a tokenizer, and %s has no tokenizer.json; "
                "pass --tokenizer DIR or token ids with --prompt-ids\n", dir);
        return -1;
    }
    if (tok_load(tok, dir) < 0) {
        report_error("generate", "loading the tokenizer");
        return -1;
    }
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *ids_str = NULL, *text = NULL, *adapter = NULL, *tok_dir = NULL;
    GenParams gp = {.max_new_tokens = 64, .sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f}};
    int json = 0, threads = 0;
    const char *device = "cpu";
    const Opt opts[] = {OPT_REQ("--model", &model_path), OPT_STR("--prompt-ids", &ids_str),
                        OPT_STR("--prompt", &text), OPT_STR("--adapter", &adapter),
                        OPT_STR("--tokenizer", &tok_dir), OPT_STR("--device", &device),
                        OPT_INT("--max-new-tokens", &gp.max_new_tokens, 0, 1 << 24),
                        OPT_FLOAT("--temperature", &gp.sampler.temperature, 0.0f, 1e4f),
                        OPT_INT("--top-k", &gp.sampler.top_k, 0, 1 << 30),
                        OPT_FLOAT("--top-p", &gp.sampler.top_p, 1e-6f, 1.0f),
                        OPT_U64("--seed", &gp.seed), OPT_INT("--threads", &threads, 1, 1024),
                        OPT_FLAG("--ignore-eos", &gp.ignore_eos), OPT_FLAG("--json", &json),
                        OPT_END};
    int prc = opts_parse("generate", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    if (!ids_str == !text)
        return opts_fail("generate", usage, "needs exactly one of --prompt-ids or --prompt");
    int *ids = NULL, n = 0;
    Tokenizer *tok = NULL;
    if (text) {
        if (load_prompt_tokenizer(model_path, tok_dir, &tok) < 0) return 2;
        if (tok_encode(tok, text, strlen(text), 1, &ids, &n) < 0) {
            report_error("generate", "--prompt");
            tok_free(&tok);
            return 1;
        }
    } else if (arg_ids("--prompt-ids", ids_str, &ids, &n)) {
        return 2;
    }
    set_threads(threads);
    Device *dev;
    Base *base;
    Model *m;
    if (load_model_on("generate", model_path, adapter, device, 1, &dev, &base, &m) < 0) {
        free(ids);
        tok_free(&tok);
        return 1;
    }
    GenResult r;
    const int *prompts[1] = {ids};
    int rc = gen_generate(m, prompts, &n, 1, &gp, &r), failed = 0;
    if (rc < 0) {
        report_error("generate", NULL);
    } else if (json) {
        printf("{\"ids\": ");
        print_json_ints(stdout, r.ids, r.n);
        printf(", \"logprobs\": ");
        print_json_floats(stdout, r.logprobs, r.n);
        printf("}\n");
    } else if (tok) {
        char *out;
        if (tok_decode(tok, r.ids, r.n, 1, &out) < 0) {
            report_error("generate", "decoding the output");
            failed = 1;
        } else {
            printf("%s\n", out);
            free(out);
        }
    } else {
        for (int i = 0; i < r.n; i++) printf("%s%d", i ? " " : "", r.ids[i]);
        printf("\n");
    }
    if (rc == 0) gen_result_free(&r);
    model_free(&m);
    base_free(&base);
    dev_close(&dev);
    tok_free(&tok);
    free(ids);
    return rc < 0 || failed ? 1 : 0;
}
