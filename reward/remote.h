/* remote.h: rewards from outside the worker (reward.type http and exec).
 *
 * The reward role hands a batch of items, each {prompt, response, answer}
 * as text, to a scorer and gets one finite score per item back, or an
 * error naming where it came from (the URL or the command), which batch
 * and what was wrong. A scorer never makes up a score: an answer that is
 * not a number, too few or too many scores, a timeout, a crash, are all
 * errors.
 *
 * A scorer is a table of functions (RemoteOps), found by name:
 *
 *   http   items POSTed as a JSON array of objects to the URL, in batches
 *          of batch_size, up to `concurrency` in flight; the answer is a
 *          JSON array of scores or {"scores": [...]}. A connection error,
 *          a timeout, HTTP 429 or 5xx is tried again up to `retries` times
 *          after backoff_ms, 2 x backoff_ms, ...; another status, or an
 *          answer that does not parse, fails at once (reward/http.c).
 *   exec   one program for the role's life (/bin/sh -c command), fed one
 *          JSON object per line on its stdin, answering one score per line
 *          on its stdout, in order; its stderr is the worker's. A program
 *          that exits, answers garbage or takes longer than timeout_s for
 *          a batch is killed and started again at the next batch
 *          (reward/exec.c).
 *
 * A score is a JSON number or an object with a number "score", finite. */
#ifndef PLUMB_REWARD_REMOTE_H
#define PLUMB_REWARD_REMOTE_H

#include <jansson.h>

typedef struct {
    const char *prompt;
    const char *response;
    const char *answer;      /* "" when the record has none                   */
} RewardItem;

typedef struct {
    const char *url;         /* http                                          */
    const char *command;     /* exec                                          */
    double timeout_s;        /* one POST / one batch of lines (> 0)           */
    int retries;             /* http: further attempts (>= 0)                 */
    int backoff_ms;          /* http: first wait, doubled each retry (>= 0)   */
    int concurrency;         /* http: POSTs in flight (>= 1)                  */
    int batch_size;          /* items per POST or per batch of lines (>= 1)   */
} RemoteOpts;

typedef struct {
    const char *name;
    /* A scorer for o into *state; o's strings are copied. */
    int (*open)(const RemoteOpts *o, void **state);
    /* Scores of items[0..n) into out (n). */
    int (*score)(void *state, const RewardItem *items, int n, float *out);
    void (*close)(void *state);
} RemoteOps;

extern const RemoteOps remote_http, remote_exec;

/* The scorer named name ("http", "exec"), or NULL. */
const RemoteOps *remote_find(const char *name);

/* ------------------------------------------- shared by http.c and exec.c */

/* {"prompt": ..., "response": ..., "answer": ...} (new reference). */
json_t *remote_item_json(const RewardItem *it);
/* One score: a finite number, or an object whose "score" is one. On
 * failure a message (what was there) into why. */
int remote_score_value(const json_t *v, float *out, char *why, size_t wn);
/* The first n bytes of text, for an error message: control characters as
 * '.', "..." when cut. */
void remote_snippet(const char *text, size_t len, char *out, size_t cap);

#endif
