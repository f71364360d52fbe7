/* rules.h: rule-based rewards: a response text scored against a reference
 * answer, without a model.
 *
 * Pure functions on strings, shared by the reward role (reward/reward.c)
 * and the coordinator's evaluation (coordinator/eval.c). A rule is prepared once from its
 * argument (a regex is compiled, a length parsed) into an opaque state
 * that is read-only afterwards, so one state may score from many threads.
 *
 *   exact_match    1 when the trimmed response equals the trimmed answer
 *   numeric_match  1 when both parse as numbers (strtod over the whole
 *                  trimmed string) and differ by at most 1e-6
 *   regex          1 when the PCRE2 pattern (the argument) matches anywhere
 *                  in the response; the answer is not used
 *   length         min(1, response tokens / L) for the argument L, a
 *                  positive integer; the answer is not used
 * Trimming removes ASCII whitespace at both ends. */
#ifndef PLUMB_ALGO_RULES_H
#define PLUMB_ALGO_RULES_H

typedef enum {
    RULE_EXACT_MATCH = 0,
    RULE_NUMERIC_MATCH,
    RULE_REGEX,
    RULE_LENGTH,
    RULE_N
} RewardRule;

/* "exact_match" | "numeric_match" | "regex" | "length" -> *out.
 * Returns 0, or PL_EINVAL naming the string (NULL included). */
int reward_rule_parse(const char *name, RewardRule *out);
const char *reward_rule_name(RewardRule r);

/* 1 when the rule compares against an answer (exact_match, numeric_match). */
int reward_rule_needs_answer(RewardRule r);

/* 1 when the rule reads the response text (all but length). */
int reward_rule_needs_text(RewardRule r);

/* Prepares rule r with its argument into *state (owned by the caller, free
 * with reward_rule_free). regex: arg is the pattern, compiled with UTF;
 * a bad pattern fails with PL_EINVAL naming the pattern, the offset and
 * PCRE2's reason. length: arg is a positive integer, else PL_EINVAL.
 * exact_match and numeric_match ignore arg. */
int reward_rule_prepare(RewardRule r, const char *arg, void **state);

/* The score in [0, 1] of response (UTF-8, NUL-terminated) with
 * n_response_tokens tokens against answer (may be NULL for the rules that
 * do not need one; a NULL answer scores 0 for those that do). state is the
 * prepared state of the same rule; exact_match and numeric_match need none
 * (NULL is fine), a NULL state scores 0 for regex and length. A regex
 * match error (invalid UTF-8, a
 * match limit) scores 0. */
double reward_rule_score(RewardRule r, const void *state, const char *response,
                         int n_response_tokens, const char *answer);

/* Frees a prepared state and sets *state to NULL; NULL is fine. */
void reward_rule_free(void **state);

#endif
