/* runutil.h: what the whole-run tests (test_run, test_run_rl,
 * test_recovery, test_hostile) share: a scratch folder, the arithmetic task made once,
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
/* Run A (RU_DIR/LABEL-a) does 4 steps of algo's config plus extra with a
 * checkpoint every 2; run B (LABEL-b) resumes from a copy of A's step-2
 * checkpoint (whole_run: from a copy of A's folder, its metrics included)
 * and must log steps 3 and 4 exactly as A did. */
void ru_resume_same(const char *label, const char *algo, const char *extra, int whole_run);
/* cmocka group setup: the task (200 training and 40 eval examples) in
 * RU_DIR/arith. */
int ru_setup(void **state);

#endif
