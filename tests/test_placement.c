/* test_placement.c: where workers run. plumb train's processes, their
 * roles and GPUs from launch.workers, launch.devices and launch.device
 * (coordinator/placement.h); a worker started by srun or mpirun: its rank
 * and its GPU from the launchers' variables (worker/worker.h); and the
 * refusal a worker given a GPU gives on a machine without one.
 *
 * Proves: GPU lists parse as documented and bad ones are refused naming
 * the key; auto, colocated and @GPUS entries give the documented
 * processes; every role the algorithm needs is placed; for the launchers'
 * variables, the first set wins, in the documented order; values that are
 * not whole numbers are skipped; "cuda" takes the local rank, modulo the
 * GPUs CUDA_VISIBLE_DEVICES lists; explicit devices stay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "coordinator/placement.h"
#include "testutil.h"
#include "worker/worker.h"

/* ---------------------------------------------------------- plumb train */

static void test_gpu_lists(void **state) {
    (void)state;
    int ids[16], n;
    assert_int_equal(place_gpus("0-3,6", ids, 16, &n, "k"), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[0], 0), assert_int_equal(ids[3], 3), assert_int_equal(ids[4], 6);
    assert_int_equal(place_gpus("7", ids, 16, &n, "k"), 0);
    assert_int_equal(n, 1), assert_int_equal(ids[0], 7);
    const struct {
        const char *spec, *want;
    } bad[] = {
        {"", "k: no GPUs listed"},          {"0,", "not a list of GPU numbers"},
        {"a", "not a list"},                {"1-", "not a list"},
        {"3-1", "the range 3-1 runs backwards"}, {"0,2,0-1", "GPU 0 is listed twice"},
        {"1024", "below 1024"},             {"0-16", "over 16 GPUs"},
        {"0 ,1", "not a list"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (place_gpus(bad[i].spec, ids, 16, &n, "k") != PL_EINVAL)
            fail_msg("\"%s\" was taken", bad[i].spec);
        if (!strstr(pl_error(), bad[i].want))
            fail_msg("\"%s\": \"%s\" lacks \"%s\"", bad[i].spec, pl_error(), bad[i].want);
    }
}

/* A PPO config (actor, critic, reward, reference) with assignments set. */
static RunConfig *cfg(const char *const *set) {
    RunConfig *c = malloc(sizeof *c);
    runcfg_defaults(c);
    assert_int_equal(runcfg_set(c, "algo.name=ppo"), 0);
    for (int i = 0; set && set[i]; i++)
        if (runcfg_set(c, set[i]) < 0) fail_msg("%s: %s", set[i], pl_error());
    return c;
}

/* plan: "roles@device" joined by spaces, for comparing. */
static void plan_str(const Placement *p, char *out, size_t cap) {
    out[0] = '\0';
    for (int i = 0; i < p->n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s@%s", i ? " " : "", p->proc[i].roles,
                 p->proc[i].device);
}

static void test_plans(void **state) {
    (void)state;
    const struct {
        const char *set[4], *want;
    } cases[] = {
        {{NULL}, "actor@cpu critic@cpu reward@cpu reference@cpu"},
        {{"launch.workers=actor,reference critic,reward"}, "actor,reference@cpu critic,reward@cpu"},
        {{"launch.device=cuda:1", "launch.workers=actor actor critic,reward,reference"},
         "actor@cuda:1 actor@cuda:1 critic,reward,reference@cuda:1"},
        {{"launch.device=cuda", "launch.devices=0-1", "launch.workers=colocated"},
         "actor,critic,reward,reference@cuda:0 actor,critic,reward,reference@cuda:1"},
        {{"launch.device=cuda", "launch.devices=2,5"}, /* auto with GPUs: colocated */
         "actor,critic,reward,reference@cuda:2 actor,critic,reward,reference@cuda:5"},
        {{"launch.device=cuda", "launch.devices=0-7",
          "launch.workers=actor@0-5 critic,reward@6-7 reference@0"},
         "actor@cuda:0 actor@cuda:1 actor@cuda:2 actor@cuda:3 actor@cuda:4 actor@cuda:5 "
         "critic,reward@cuda:6 critic,reward@cuda:7 reference@cuda:0"},
        {{"launch.device=cuda", "launch.workers=actor,critic,reward,reference@3"},
         "actor,critic,reward,reference@cuda:3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        RunConfig *c = cfg(cases[i].set);
        Placement *p = malloc(sizeof *p);
        char got[1024];
        if (place_plan(c, p) < 0) fail_msg("case %zu: %s", i, pl_error());
        plan_str(p, got, sizeof got);
        if (strcmp(got, cases[i].want)) fail_msg("case %zu: \"%s\", not \"%s\"", i, got, cases[i].want);
        free(p);
        free(c);
    }
}

static void test_bad_plans(void **state) {
    (void)state;
    const struct {
        const char *set[4], *want;
    } cases[] = {
        {{"launch.workers=actor critic reward"}, "places no process for the reference role, which ppo needs"},
        {{"launch.workers=actor critic reward,referee"}, "unknown role 'referee'"},
        {{"launch.workers=colocated"}, "colocated puts every role on every GPU of launch.devices, which lists none"},
        {{"launch.devices=0-1"}, "launch.devices lists GPUs, so launch.device must be cuda, not cpu"},
        {{"launch.device=cuda:0", "launch.devices=0"}, "must be cuda, not cuda:0"},
        {{"launch.workers=actor,critic,reward,reference@0"}, "places processes on GPUs, and launch.device is cpu"},
        {{"launch.device=cuda:1", "launch.workers=actor,critic,reward,reference@0"}, "and launch.device is cuda:1, not cuda"},
        {{"launch.device=cuda", "launch.devices=0-3", "launch.workers=actor,critic,reward,reference"},
         "says no GPUs; with launch.devices every entry does"},
        {{"launch.device=cuda", "launch.devices=0-3", "launch.workers=actor,critic,reward,reference@2-4"},
         "uses GPU 4, which launch.devices (0-3) does not list"},
        {{"launch.device=cuda", "launch.workers=actor,critic,reward,reference@x"},
         "launch.workers \"actor,critic,reward,reference@\": \"x\" is not a list"},
        {{"launch.device=cuda", "launch.devices=0-63", "launch.workers=actor@0-63 critic,reward,reference@0"},
         "over 64 processes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        RunConfig *c = cfg(cases[i].set);
        Placement *p = malloc(sizeof *p);
        if (place_plan(c, p) != PL_EINVAL) fail_msg("case %zu was placed", i);
        if (!strstr(pl_error(), cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, pl_error(), cases[i].want);
        free(p);
        free(c);
    }
}

/* ------------------------------------------------------- srun, mpirun */

static const char *VARS[] = {"SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK",
                             "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                             "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"};

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof VARS / sizeof *VARS; i++) unsetenv(VARS[i]);
    return 0;
}

static void test_rank(void **state) {
    (void)state;
    assert_int_equal(worker_rank_from_env(), -1);
    setenv("RANK", "7", 1);
    assert_int_equal(worker_rank_from_env(), 7);
    setenv("PMI_RANK", "5", 1);
    assert_int_equal(worker_rank_from_env(), 5);
    setenv("SLURM_PROCID", "12", 1);
    assert_int_equal(worker_rank_from_env(), 12);
    setenv("SLURM_PROCID", "x3", 1); /* not a number: the next one counts */
    assert_int_equal(worker_rank_from_env(), 5);
    setenv("SLURM_PROCID", "-1", 1);
    assert_int_equal(worker_rank_from_env(), 5);
}

static void test_local_rank(void **state) {
    (void)state;
    assert_int_equal(worker_local_rank_from_env(), -1);
    setenv("LOCAL_RANK", "3", 1);
    assert_int_equal(worker_local_rank_from_env(), 3);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);
    assert_int_equal(worker_local_rank_from_env(), 2);
    setenv("SLURM_LOCALID", "6", 1);
    assert_int_equal(worker_local_rank_from_env(), 6);
    setenv("SLURM_LOCALID", "", 1);
    assert_int_equal(worker_local_rank_from_env(), 2);
}

static void test_device(void **state) {
    (void)state;
    char d[32];
    assert_int_equal(worker_device_from_env(d, sizeof d, "cuda"), 0);
    assert_string_equal(d, "cuda:0"); /* no launcher */
    setenv("SLURM_LOCALID", "5", 1);
    assert_int_equal(worker_device_from_env(d, sizeof d, "cuda"), 0);
    assert_string_equal(d, "cuda:5"); /* every task sees the node's GPUs */
    setenv("CUDA_VISIBLE_DEVICES", "4,5", 1);
    assert_int_equal(worker_device_from_env(d, sizeof d, "cuda"), 0);
    assert_string_equal(d, "cuda:1"); /* two per task, renumbered from 0 */
    setenv("CUDA_VISIBLE_DEVICES", "5", 1);
    assert_int_equal(worker_device_from_env(d, sizeof d, "cuda"), 0);
    assert_string_equal(d, "cuda:0");
    /* explicit devices are kept whatever the launcher says */
    assert_int_equal(worker_device_from_env(d, sizeof d, "cuda:3"), 0);
    assert_string_equal(d, "cuda:3");
    assert_int_equal(worker_device_from_env(d, sizeof d, "cpu"), 0);
    assert_string_equal(d, "cpu");
    assert_int_equal(worker_device_from_env(d, 4, "cpu-staged"), -1);
}

/* plumb worker --device cuda under srun on a machine without a GPU (or a
 * build without CUDA) refuses, naming the GPU it was to use. */
static void test_worker_refuses(void **state) {
    (void)state;
    char *out = NULL;
    setenv("SLURM_LOCALID", "2", 1); /* the child inherits it */
    int rc = tu_plumb(&out, "worker --role actor --connect tcp://127.0.0.1:1 --model %s/hf/llama "
                            "--device cuda",
                      tu_data_dir());
    if (rc == 0 || !strstr(out, "cuda:2")) fprintf(stderr, "%s\n", out);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "cuda:2"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpu_lists),
        cmocka_unit_test(test_plans),
        cmocka_unit_test(test_bad_plans),
        cmocka_unit_test_setup(test_rank, clear_env),
        cmocka_unit_test_setup(test_local_rank, clear_env),
        cmocka_unit_test_setup(test_device, clear_env),
        cmocka_unit_test_setup(test_worker_refuses, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
