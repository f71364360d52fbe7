/* test_placement.c: where a worker started by srun or mpirun runs: its
 * rank and its GPU from the launchers' variables (worker/worker.h), and
 * the refusal a worker given such a GPU gives on a machine without one.
 *
 * Proves: the first variable set wins, in the documented order; values
 * that are not whole numbers are skipped; "cuda" takes the local rank,
 * modulo the GPUs CUDA_VISIBLE_DEVICES lists; explicit devices stay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "worker/worker.h"

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
        cmocka_unit_test_setup(test_rank, clear_env),
        cmocka_unit_test_setup(test_local_rank, clear_env),
        cmocka_unit_test_setup(test_device, clear_env),
        cmocka_unit_test_setup(test_worker_refuses, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
