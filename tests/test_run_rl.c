/* test_run_rl.c: whole GRPO runs with real processes on loopback, for what
 * the RL loop adds to test_run's: asynchronous rollouts with a staleness
 * bound (resumed exactly, in-flight rollouts included, and the same
 * numbers whether a separate process generates or the trainer does),
 * DAPO's dynamic sampling and overlong penalty with GSPO, and rewards from
 * a web service and a program. */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runutil.h"
#include "testutil.h"

/* ------------------------------------------------------------- async */

/* algo.max_staleness 2 with one trainer and a rollout process: resumed from
 * step 2's checkpoint (which holds the rollouts of steps 3 and 4, made by
 * the policies of steps 1 and 2), it logs steps 3 and 4 as the
 * uninterrupted run did; run with the trainer generating too (one process
 * for every role), every number is the same; staleness follows the
 * schedule (step s trains on step max(0, s - 2)'s policy's rollout) and
 * the log-prob difference is logged only when the rollout is the
 * trainer's. */
static void test_async(void **state) {
    (void)state;
    /* a reward with a signal (the random model's answers are all wrong):
     * the policy moves, so which policy made a rollout shows */
    const char *scored = "reward.type: regex\nreward.arg: \"[0-4]\"\nalgo.max_staleness: 2\n";
    char extra[512];
    snprintf(extra, sizeof extra, "%strain.replicas: 1\nlaunch.workers: actor actor reward,reference\n",
             scored);
    ru_resume_same("async", "grpo", extra, 0);
    char body[8192], cfg[2048], *out;
    ru_algo_body(body, sizeof body, "grpo");
    strncat(body, scored, sizeof body - strlen(body) - 1);
    ru_config(cfg, sizeof cfg, "async-one", body);
    int rc = tu_plumb(&out, "train %s --quiet run.steps=4 checkpoint.every=2 checkpoint.keep=0 "
                            "launch.workers=actor,reward,reference", cfg);
    if (rc != 0) fail_msg("one process: exit %d\n%s", rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.steps=4 run.dir=%s/async-sync algo.max_staleness=0",
                  cfg, ru_dir);
    if (rc != 0) fail_msg("synchronous: exit %d\n%s", rc, out);
    free(out);
    json_t *a = tu_metrics_load(tu_path("%s/async-a", ru_dir));
    json_t *one = tu_metrics_load(tu_path("%s/async-one", ru_dir));
    json_t *sync = tu_metrics_load(tu_path("%s/async-sync", ru_dir));
    tu_assert_steps(one, 0, 4, "one process");
    for (long s = 0; s <= 4; s++) tu_assert_same_step(a, one, s, "a rollout process vs none");
    /* the first step's rollout is the starting policy's either way; the
     * third's is step 1's policy's here, step 3's in the synchronous run */
    json_t *l3 = tu_metrics_step(a, 3), *s3 = tu_metrics_step(sync, 3);
    if (json_number_value(json_object_get(tu_metrics_step(a, 1), "train/loss")) !=
        json_number_value(json_object_get(tu_metrics_step(sync, 1), "train/loss")))
        fail_msg("step 1 differs from the synchronous run's");
    if (json_number_value(json_object_get(l3, "train/loss")) ==
            json_number_value(json_object_get(s3, "train/loss")) ||
        json_number_value(json_object_get(l3, "train/loss")) == 0)
        fail_msg("step 3 trains as the synchronous run does: the staleness did not apply");
    json_decref(sync);
    for (long s = 1; s <= 4; s++) {
        json_t *l = tu_metrics_step(a, s);
        double st = json_number_value(json_object_get(l, "rollout/staleness"));
        if (st != (s - 1 < 2 ? s - 1 : 2)) fail_msg("step %ld: staleness %g", s, st);
        json_t *d = json_object_get(l, "rollout/logprob_diff_max");
        if ((s == 1) != (d != NULL) || (d && json_number_value(d) != 0.0))
            fail_msg("step %ld: rollout/logprob_diff_max %s", s, d ? "logged" : "missing");
    }
    struct stat sb;
    if (stat(tu_path("%s/async-a/checkpoints/step-000002/rollouts.json", ru_dir), &sb) != 0)
        fail_msg("the step-2 checkpoint has no rollouts.json");
    json_decref(a);
    json_decref(one);
}

/* -------------------------------------------------------------- DAPO */

/* GRPO with DAPO's dynamic sampling and overlong penalty and GSPO's
 * sequence ratio: the refill rounds are drawn again, the same, on resume.
 * The random model never stops (every response is penalised the same), and
 * a regex on its characters scores it: some groups agree, some not. */
static void test_resume_dapo(void **state) {
    (void)state;
    ru_resume_same("dapo", "grpo",
                "algo.filter_groups: true\nalgo.filter_max_rounds: 3\nalgo.overlong_buffer: 3\n"
                "algo.ratio_level: sequence\nreward.type: regex\nreward.arg: \"[0-4]\"\n", 0);
    json_t *m = tu_metrics_load(tu_path("%s/dapo-a", ru_dir));
    double rounds = 0, uniform = 0, frac = 0, over = 0;
    for (long s = 1; s <= 4; s++) {
        json_t *l = tu_metrics_step(m, s);
        rounds += json_number_value(json_object_get(l, "rollout/filter_rounds"));
        uniform += json_number_value(json_object_get(l, "rollout/groups_uniform"));
        frac += json_number_value(json_object_get(l, "rollout/groups_informative_frac"));
        over += json_number_value(json_object_get(l, "rollout/overlong_frac"));
    }
    if (!(rounds >= 4 && uniform > 0 && frac > 0 && over > 0))
        fail_msg("dapo: rounds %g, uniform groups %g, informative %g, overlong %g over 4 steps",
                 rounds, uniform, frac, over);
    json_decref(m);
}

/* ------------------------------------------------- rewards from outside */

/* Rewards from outside: the same GRPO run scored by the rule regex [0-4],
 * by a web service (tests/data/reward/scorer.py http, in batches of 3, two
 * at once) and by a program (scorer.py exec, in batches of 5) that score
 * alike: every number the same. A service that is not there stops the run
 * with an error naming its URL. The README's example server (the file
 * examples/reward_server.py, shown there verbatim) scores a run too. */
static void test_reward_outside(void **state) {
    (void)state;
    char body[8192], cfg[2048], *out;
    ru_algo_body(body, sizeof body, "grpo");
    strncat(body, "reward.type: regex\nreward.arg: \"[0-4]\"\n", sizeof body - strlen(body) - 1);
    ru_config(cfg, sizeof cfg, "outside", body);
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s/outside-rule", cfg, ru_dir);
    if (rc != 0) fail_msg("rule: exit %d\n%s", rc, out);
    free(out);

    const char *scorer = tu_path("%s/reward/scorer.py", tu_data_dir());
    char py[1024];
    snprintf(py, sizeof py, "%s", scorer);
    int port = tu_free_port();
    pid_t srv = tu_spawn_sh(tu_path("%s/outside-server.log", ru_dir), "python3 %s http %d", py, port);
    if (!tu_wait_port(port, 10)) fail_msg("scorer.py http did not listen on %d", port);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s/outside-http reward.type=http "
                        "reward.url=http://127.0.0.1:%d/score reward.batch_size=3 "
                        "reward.concurrency=2", cfg, ru_dir, port);
    tu_stop(srv);
    if (rc != 0) fail_msg("http: exit %d\n%s", rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s/outside-exec reward.type=exec "
                        "'reward.command=python3 %s exec ok' reward.batch_size=5", cfg, ru_dir, py);
    if (rc != 0) fail_msg("exec: exit %d\n%s", rc, out);
    free(out);
    json_t *a = tu_metrics_load(tu_path("%s/outside-rule", ru_dir));
    json_t *h = tu_metrics_load(tu_path("%s/outside-http", ru_dir));
    json_t *e = tu_metrics_load(tu_path("%s/outside-exec", ru_dir));
    tu_assert_steps(h, 0, 3, "http");
    tu_assert_steps(e, 0, 3, "exec");
    double rewarded = 0;
    for (long st = 0; st <= 3; st++) {
        tu_assert_same_step(a, h, st, "rule vs http");
        tu_assert_same_step(a, e, st, "rule vs exec");
        if (st) rewarded += json_number_value(json_object_get(tu_metrics_step(a, st), "rollout/reward_mean"));
    }
    if (!(rewarded > 0)) fail_msg("the rule never rewarded a response: the comparison shows nothing");
    json_decref(a), json_decref(h), json_decref(e);

    /* nothing listens: the run stops, naming the URL */
    int none = tu_free_port();
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s/outside-none reward.type=http "
                        "reward.url=http://127.0.0.1:%d/score reward.retries=1 reward.backoff_ms=10",
                  cfg, ru_dir, none);
    char want[128];
    snprintf(want, sizeof want, "reward http://127.0.0.1:%d/score: batch 1 of", none);
    if (rc == 0 || !strstr(out, want) || !strstr(out, "after 2 attempts"))
        fail_msg("no server: exit %d, and the output lacks \"%s\":\n%s", rc, want, out);
    free(out);

    /* the README's example */
    char *readme = tu_read_file("README.md", NULL), *ex = tu_read_file("examples/reward_server.py", NULL);
    assert_non_null(readme);
    assert_non_null(ex);
    if (!strstr(readme, ex)) fail_msg("README.md does not show examples/reward_server.py as it is");
    free(readme), free(ex);
    port = tu_free_port();
    srv = tu_spawn_sh(tu_path("%s/outside-example.log", ru_dir), "python3 examples/reward_server.py %d", port);
    if (!tu_wait_port(port, 10)) fail_msg("examples/reward_server.py did not listen on %d", port);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s/outside-example reward.type=http "
                        "reward.url=http://127.0.0.1:%d run.steps=1", cfg, ru_dir, port);
    tu_stop(srv);
    if (rc != 0) fail_msg("the README's server: exit %d\n%s", rc, out);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_resume_dapo),
        cmocka_unit_test(test_reward_outside),
    };
    return cmocka_run_group_tests(tests, ru_setup, NULL);
}
