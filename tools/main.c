/* plumb: the command line. One file per subcommand: tools/cmd_<name>.c. */
#include <stdio.h>
#include <string.h>

#include "tools/cmd.h"

static const Command commands[] = {
    {"generate", cmd_generate, "sample text from a model (KV cache, batched)"},
    {"logprobs", cmd_logprobs, "per-token log-probabilities of a sequence"},
    {"bench", cmd_bench, "decode and train throughput"},
    {"init", cmd_init, "a new model with random weights (HF folder or llama2.c .bin)"},
    {"lora", cmd_lora, "make a LoRA adapter, or merge one into its base"},
    {"pretrain", cmd_pretrain, "train a small byte-level model on a text file"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: plumb <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'plumb <command> --help' describes each command.\n");
}

int main(int argc, char **argv) {
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
