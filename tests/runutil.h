/* runutil.h: what the whole-run tests (test_run, test_recovery,
 * test_hostile) share: a scratch folder, the arithmetic task made once,
 * and tiny run configs on it. */
#ifndef PLUMB_TESTS_RUNUTIL_H
#define PLUMB_TESTS_RUNUTIL_H

#include <stddef.h>

extern const char *ru_dir;   /* scratch folder of this program          */
extern char ru_data[512];    /* the arithmetic task (and its tokenizer) */

/* Writes RU_DIR/NAME.yaml: the tiny shared settings (run.dir RU_DIR/NAME,
 * model dim 32, 1 layer, context 24; 2-4 steps of 4 prompts, 4 new tokens
 * per response) plus body; the path goes to out. */
void ru_config(char *out, size_t cap, const char *name, const char *body);
/* The body of each algorithm's config (data paths into the task): sft, rm,
 * dpo, orpo, simpo, kto, grpo, reinforce_pp, ppo. */
void ru_algo_body(char *out, size_t cap, const char *algo);
/* cmocka group setup: the task (200 training and 40 eval examples) in
 * RU_DIR/arith. */
int ru_setup(void **state);

#endif
