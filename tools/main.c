/* plumb: the command line. One file per subcommand: tools/cmd_<name>.c. */
#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tools/cmd.h"

static const Command commands[] = {
    {"generate", cmd_generate, "sample text from a model (KV cache, batched)"},
    {"logprobs", cmd_logprobs, "per-token log-probabilities of a sequence"},
    {"bench", cmd_bench, "decode and train throughput"},
    {"init", cmd_init, "a new model with random weights (HF folder or llama2.c .bin)"},
    {"lora", cmd_lora, "make a LoRA adapter, or merge one into its base"},
    {"tokenize", cmd_tokenize, "text to token ids with a tokenizer.json"},
    {"detokenize", cmd_detokenize, "token ids to text with a tokenizer.json"},
    {"pretrain", cmd_pretrain, "train a small byte-level model on a text file"},
    {"data", cmd_data, "make the synthetic arith task; check a JSONL dataset"},
    {"ingest", cmd_ingest, "tokenize a JSONL dataset into a Redis stream or a shard file"},
    {"train", cmd_train, "run a training run on this host: coordinator and workers"},
    {"coordinator", cmd_coordinator, "run a training run's coordinator; workers join it"},
    {"worker", cmd_worker, "serve roles (actor, critic, reward, reference) to a coordinator"},
    {"dash", cmd_dash, "the experiment dashboard: runs, charts and samples in the browser"},
    {"keygen", cmd_keygen, "write a CURVE key pair for encrypted, authenticated transport"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: plumb <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'plumb <command> --help' describes each command.\n");
}

/* OpenBLAS picks its kernels at load time from the CPU model; a release
 * that predates the CPU falls back to the generic SSE3 ("Prescott") kernels,
 * several times slower. Then restart once with the kernel family the CPU
 * supports named in OPENBLAS_CORETYPE (which OpenBLAS reads only at load).
 * Setting OPENBLAS_CORETYPE yourself disables this. */
static void blas_pick_kernels(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return;
    __builtin_cpu_init();
    const char *want = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2") ? "Haswell"
                                                        : NULL;
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    execv("/proc/self/exe", argv); /* on failure, carry on with the slow kernels */
}

/* Subnormal floats (below 1.2e-38) take a slow microcode path on x86: a
 * peaked softmax fills the logit gradients with them and one GEMM over
 * them ran 20x slower. Flush them to zero (FTZ) and read them as zero
 * (DAZ), as GPU kernels do. Threads created later inherit the setting. */
static void flush_subnormals(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

int main(int argc, char **argv) {
    flush_subnormals();
    blas_pick_kernels(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "plumb: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
