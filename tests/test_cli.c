/* test_cli.c: the plumb program's command-line contracts, end to end.
 *
 * Runs the built binary the way users and later tooling do: the JSON forms
 * of generate and logprobs, the init -> pretrain -> generate path, the
 * bench command, and bad input (broken checkpoints, bad ids, over-long
 * prompts, unknown options), which must end with a message and a non-zero
 * exit, never a crash. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "testutil.h"

/* Runs "plumb ARGS 2>&1" and returns the exit status; *out gets the output. */
static int plumb(char **out, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = tu_plumb(out, "%s", args);
    if (rc < 0 || rc > 2) fail_msg("plumb %s: exit %d (crash?)\n%s", args, rc, out ? *out : "");
    return rc;
}

static const char *llama_dir(void) { return tu_path("%s/hf/llama", tu_data_dir()); }

/* generate --json prints one object with the generated ids and one
 * log-prob per id, equal to transformers' greedy output. */
static void test_generate_json(void **state) {
    char *out;
    assert_int_equal(plumb(&out, "generate --model %s --prompt-ids '1 5 9' --temperature 0 "
                                 "--max-new-tokens 12 --ignore-eos --json", llama_dir()), 0);
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    if (!j) fail_msg("not JSON: %s", out);
    json_t *ids = json_object_get(j, "ids"), *lps = json_object_get(j, "logprobs");
    assert_int_equal(json_array_size(ids), 12);
    assert_int_equal(json_array_size(lps), 12);
    json_t *e = json_load_file(tu_path("%s/expected.json", llama_dir()), 0, &err);
    json_t *want = json_object_get(json_array_get(json_object_get(e, "greedy"), 0), "ids");
    assert_true(json_equal(ids, want));
    json_decref(e);
    json_decref(j);
    free(out);
}

/* logprobs --json prints n-1 values for n ids. */
static void test_logprobs_json(void **state) {
    char *out;
    assert_int_equal(plumb(&out, "logprobs --model %s --ids '1 5 77 3 9' --json", llama_dir()), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_array_size(json_object_get(j, "logprobs")), 4);
    json_decref(j);
    free(out);
}

/* The same seed gives the same sample; --prompt says a tokenizer is needed. */
static void test_seed_and_prompt_text(void **state) {
    char *a, *b, *c;
    const char *args = "generate --model %s --prompt-ids 1,2,3 --temperature 1 --top-p 0.9 "
                       "--seed 5 --max-new-tokens 20 --ignore-eos --json";
    assert_int_equal(plumb(&a, args, llama_dir()), 0);
    assert_int_equal(plumb(&b, args, llama_dir()), 0);
    assert_string_equal(a, b);
    assert_int_equal(plumb(&c, "generate --model %s --prompt 'hello'", llama_dir()), 2);
    assert_non_null(strstr(c, "tokenizer"));
    free(a);
    free(b);
    free(c);
}

/* init -> pretrain -> generate works on a model the project makes itself,
 * and bench prints its figures. */
static void test_init_pretrain_generate_bench(void **state) {
    const char *dir = tu_tmp_dir();
    char text[4096] = "";
    for (int i = 0; i < 200; i++) {
        char line[32];
        snprintf(line, sizeof line, "%d+%d=%d\n", i % 10, i % 7, i % 10 + i % 7);
        strcat(text, line);
    }
    assert_int_equal(tu_write_file(tu_path("%s/corpus.txt", dir), text, strlen(text)), 0);
    char *out;
    assert_int_equal(plumb(&out, "pretrain --text %s/corpus.txt --out %s/m --steps 4 --batch 2 "
                                 "--seq-len 16 --dim 16 --hidden 24 --layers 1 --heads 2 --kv-heads 1",
                           dir, dir), 0);
    assert_non_null(strstr(out, "step"));
    free(out);
    assert_int_equal(plumb(&out, "generate --model %s/m --prompt-ids '49 43' --max-new-tokens 5 --json", dir), 0);
    assert_non_null(strstr(out, "\"ids\""));
    free(out);
    assert_int_equal(plumb(&out, "init --out %s/l2c.bin --format llama2c --vocab 64 --dim 32 --hidden 48 "
                                 "--layers 1 --heads 2 --kv-heads 1 --seq-len 32", dir), 0);
    free(out);
    assert_int_equal(plumb(&out, "bench decode --model %s/l2c.bin --batch 2 --tokens 8 --repeat 1", dir), 0);
    assert_non_null(strstr(out, "tokens/s"));
    free(out);
    assert_int_equal(plumb(&out, "bench train --model %s/l2c.bin --batch 2 --seq-len 16 --steps 1", dir), 0);
    assert_non_null(strstr(out, "ms/step"));
    free(out);
    assert_int_equal(plumb(&out, "bench train --model %s/l2c.bin --batch 2 --seq-len 16 --steps 1 --full", dir), 0);
    free(out);
    assert_int_equal(plumb(&out, "bench train --model %s/l2c.bin --batch 2 --seq-len 16 --steps 1 --dpo", dir), 0);
    assert_non_null(strstr(out, "dpo: 2 pairs x 16 tokens, lora"));
    free(out);
}

/* Copies the tiny llama folder into dir for tampering. */
static void copy_llama(const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && cp %s/config.json %s/model.safetensors %s/",
             dir, dir, llama_dir(), llama_dir(), dir);
    assert_int_equal(system(cmd), 0);
}

/* A broken checkpoint is an error naming the file, with exit 1. */
static void test_bad_checkpoints(void **state) {
    const char *dir = tu_path("%s/broken", tu_tmp_dir());
    char *out;
    /* truncated safetensors */
    copy_llama(dir);
    assert_int_equal(truncate(tu_path("%s/model.safetensors", dir), 100000), 0);
    assert_int_equal(plumb(&out, "logprobs --model %s --ids '1 2'", dir), 1);
    assert_non_null(strstr(out, "model.safetensors"));
    free(out);
    /* a config key of the wrong type */
    copy_llama(dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sed -i 's/\"hidden_size\": 64/\"hidden_size\": \"64\"/' %s/config.json", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(plumb(&out, "logprobs --model %s --ids '1 2'", dir), 1);
    assert_non_null(strstr(out, "hidden_size"));
    free(out);
    /* a shape that disagrees with config.json */
    copy_llama(dir);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"intermediate_size\": 128/\"intermediate_size\": 120/' %s/config.json", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(plumb(&out, "logprobs --model %s --ids '1 2'", dir), 1);
    assert_non_null(strstr(out, "mlp"));
    free(out);
    /* a missing file */
    assert_int_equal(plumb(&out, "logprobs --model %s/nothing-here --ids '1 2'", dir), 1);
    free(out);
}

/* Bad ids and prompts: outside the vocabulary, not numbers, longer than
 * the context; unknown options. */
static void test_bad_arguments(void **state) {
    char *out;
    assert_int_equal(plumb(&out, "generate --model %s --prompt-ids '1 96'", llama_dir()), 1);
    assert_non_null(strstr(out, "vocabulary"));
    free(out);
    assert_int_equal(plumb(&out, "logprobs --model %s --ids '1 x 3'", llama_dir()), 2);
    assert_non_null(strstr(out, "item 2"));
    free(out);
    char ids[2048] = "";
    for (int i = 0; i < 128; i++) strcat(ids, "1 ");
    assert_int_equal(plumb(&out, "generate --model %s --prompt-ids '%s'", llama_dir(), ids), 1);
    assert_non_null(strstr(out, "context"));
    free(out);
    assert_int_equal(plumb(&out, "logprobs --model %s --ids '%s 1'", llama_dir(), ids), 1);
    assert_non_null(strstr(out, "context"));
    free(out);
    assert_int_equal(plumb(&out, "generate --model %s --prompt-ids 1 --frobnicate", llama_dir()), 2);
    assert_non_null(strstr(out, "frobnicate"));
    free(out);
    assert_int_equal(plumb(&out, "generate --model %s --prompt-ids 1 --top-p 1.5", llama_dir()), 2);
    free(out);
    assert_int_equal(plumb(&out, "nonsense"), 2);
    free(out);
    /* the dashboard's sources: one at a time, each checked before serving */
    assert_int_equal(plumb(&out, "dash --runs . --redis redis://127.0.0.1:1"), 2);
    assert_non_null(strstr(out, "one source at a time"));
    free(out);
    assert_int_equal(plumb(&out, "dash --redis http://127.0.0.1:1"), 2);
    assert_non_null(strstr(out, "--redis"));
    free(out);
    assert_int_equal(plumb(&out, "dash --runs /nonexistent/runs"), 2);
    assert_non_null(strstr(out, "/nonexistent/runs"));
    free(out);
}

/* --device: cpu-staged (the device path on the CPU) prints what cpu
 * prints, to the byte; cuda:0 works where a GPU is and elsewhere fails
 * with exit 1 and the reason, for generate, logprobs, bench and worker. */
static void test_devices(void **state) {
    char *a, *b;
    const char *gen = "generate --model %s --prompt-ids '1 5 9' --max-new-tokens 6 --seed 3 --json";
    assert_int_equal(plumb(&a, gen, llama_dir()), 0);
    char with[512];
    snprintf(with, sizeof with, "%s --device cpu-staged", gen);
    assert_int_equal(plumb(&b, with, llama_dir()), 0);
    assert_string_equal(a, b);
    free(a), free(b);
    const char *lp = "logprobs --model %s --ids '1 5 77 3 9' --entropy --json";
    assert_int_equal(plumb(&a, lp, llama_dir()), 0);
    snprintf(with, sizeof with, "%s --device cpu-staged", lp);
    assert_int_equal(plumb(&b, with, llama_dir()), 0);
    assert_string_equal(a, b);
    free(a), free(b);

    Device *d;
    int have_gpu = dev_open(&d, "cuda:0") == 0;
    char why[256];
    snprintf(why, sizeof why, "%s", have_gpu ? "" : pl_error());
    if (have_gpu) dev_close(&d);
    const char *cmds[] = {
        "generate --model %s --prompt-ids '1 5 9' --max-new-tokens 4 --device cuda:0",
        "logprobs --model %s --ids '1 5 9' --device cuda:0",
        "bench decode --model %s --tokens 16 --repeat 1 --device cuda:0",
    };
    for (int i = 0; i < 3; i++) {
        int rc = plumb(&a, cmds[i], llama_dir());
        if (have_gpu) {
            if (rc != 0) fail_msg("%s on a GPU: exit %d\n%s", cmds[i], rc, a);
        } else {
            if (rc != 1) fail_msg("%s without a GPU: exit %d, not 1\n%s", cmds[i], rc, a);
            if (!strstr(a, "--device: ") || !strstr(a, why))
                fail_msg("%s without a GPU says\n%s\nnot \"%s\"", cmds[i], a, why);
        }
        free(a);
    }
    if (!have_gpu) {
        assert_int_equal(plumb(&a, "worker --role actor --connect tcp://127.0.0.1:9 --model %s "
                                   "--device cuda:0", llama_dir()), 1);
        assert_non_null(strstr(a, why));
        free(a);
    }
    assert_int_equal(plumb(&a, "logprobs --model %s --ids '1 5' --device tpu", llama_dir()), 1);
    assert_non_null(strstr(a, "device 'tpu': expected cpu, cuda or cuda:N"));
    free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_json),
        cmocka_unit_test(test_logprobs_json),
        cmocka_unit_test(test_seed_and_prompt_text),
        cmocka_unit_test(test_init_pretrain_generate_bench),
        cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
