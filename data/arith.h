/* arith.h: a synthetic integer-arithmetic task that trains on a CPU in minutes.
 *
 * arith_write(dir, cfg) writes, deterministically for cfg->seed:
 *   prompts.jsonl         train prompts with reference answers
 *                           {"prompt": "37+48=", "answer": "85"}
 *   sft.jsonl             the same train problems as {"prompt", "completion"}
 *   pref.jsonl            the same train problems as {"prompt", "chosen",
 *                           "rejected"}: the correct answer chosen, a plausible
 *                           wrong one rejected (off by one, off by ten, or the
 *                           last two digits swapped)
 *   pref_dense.jsonl      the train problems once per wrong answer of
 *                           arith_wrong_answers (every digit changed to every
 *                           other digit, and the last two swapped): 17 to 27
 *                           pairs per problem, for reward models
 *   eval.jsonl            held-out prompts with answers: no (a, op, b) of the
 *                           eval set appears in any train file
 *   eval_pref.jsonl       the held-out problems as preference pairs
 *   tokenizer.json        a byte-level BPE (Hugging Face format, loadable by
 *                           tok_load and by `tokenizers`): ids 0..255 are the
 *                           256 bytes (GPT-2's byte-to-unicode alphabet, id ==
 *                           byte value), 256 <|bos|>, 257 <|eos|>, 258 <|pad|>;
 *                           no merges, so every character is one token
 *   tokenizer_config.json bos/eos/pad tokens, add_bos_token; no chat template
 *   manifest.json, README.md  the seed, options and counts
 *
 * Problems are "a+b=" (and "a-b=" with a >= b when ops has '-') with operands
 * in [0, max_operand]. All distinct problems are enumerated, shuffled with
 * the seeded Rng, and split: the first n_eval go to eval, the next n_train
 * to train. */
#ifndef PLUMB_ARITH_H
#define PLUMB_ARITH_H

#include <stdint.h>

#include "common/rng.h"

#define ARITH_BOS   256
#define ARITH_EOS   257
#define ARITH_PAD   258
#define ARITH_VOCAB 259

typedef struct {
    uint64_t seed;   // the one seed every file derives from
    int max_operand; // operands in [0, max_operand] (default 99)
    int n_train;     // train problems (default 4000)
    int n_eval;      // held-out problems (default 500)
    const char *ops; // "+", "-" or "+,-" (default "+")
} ArithConfig;

/* Fills the defaults above (seed 1). */
void arith_config_default(ArithConfig *c);

/* Writes the task files into dir (created when missing). Fails with
 * PL_EINVAL for bad options (an unknown op, n_train + n_eval above the
 * number of distinct problems, which the message gives) and PL_EIO when a
 * file cannot be written. */
int arith_write(const char *dir, const ArithConfig *c);

/* Writes only dir/tokenizer.json and dir/tokenizer_config.json. */
int arith_write_tokenizer(const char *dir);

/* A plausible wrong answer to a problem whose answer is correct: correct
 * +-1, +-10, or its last two digits swapped, drawn from r; never equal to
 * correct, never negative when correct is not. */
long arith_wrong_answer(long correct, Rng *r);

/* Every wrong answer one digit away from correct, into out (at most cap):
 * each digit changed to each other digit (never a leading 0), for a
 * one-digit answer also each digit 1-9 put in front, and the last two
 * digits swapped when that changes the number; each once, in that order,
 * with correct's sign. Returns the count (18 for a two-digit answer with
 * distinct digits, 27 for a three-digit one). */
#define ARITH_MAX_WRONG 64
int arith_wrong_answers(long correct, long *out, int cap);

#endif
