/* cmd.h: the subcommands of the plumb program (one file each). */
#ifndef PLUMB_CMD_H
#define PLUMB_CMD_H

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} Command;

int cmd_generate(int argc, char **argv);
int cmd_logprobs(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_lora(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_dash(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

#endif
