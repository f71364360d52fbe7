/* rules.c: rule-based rewards (rules.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "common/enum.h"
#include "common/err.h"
#include "algo/rules.h"

static const char *const rule_names[RULE_N] = {"exact_match", "numeric_match", "regex", "length"};

typedef struct {
    RewardRule rule;
    pcre2_code *re;         /* regex                                        */
    long length;            /* length: tokens for a full score              */
} RuleState;

int reward_rule_parse(const char *name, RewardRule *out) {
    int i;
    PL_TRY(pl_enum_parse(rule_names, RULE_N, name, "reward rule", &i));
    *out = (RewardRule)i;
    return 0;
}

const char *reward_rule_name(RewardRule r) { return pl_enum_name(rule_names, RULE_N, (int)r); }

int reward_rule_needs_answer(RewardRule r) {
    return r == RULE_EXACT_MATCH || r == RULE_NUMERIC_MATCH;
}

int reward_rule_needs_text(RewardRule r) { return r != RULE_LENGTH; }

int reward_rule_prepare(RewardRule r, const char *arg, void **state) {
    *state = NULL;
    if (r < 0 || r >= RULE_N) return pl_fail(PL_EINVAL, "reward rule %d is not a rule", (int)r);
    RuleState *s = calloc(1, sizeof *s);
    PL_CHECK_ALLOC(s);
    s->rule = r;
    if (r == RULE_REGEX) {
        int err;
        PCRE2_SIZE off;
        const char *pat = arg ? arg : "";
        s->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &off, NULL);
        if (!s->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            free(s);
            return pl_fail(PL_EINVAL, "reward rule regex: bad pattern '%s' at offset %zu: %s", pat,
                           (size_t)off, (const char *)msg);
        }
        pcre2_jit_compile(s->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    } else if (r == RULE_LENGTH) {
        char *end = NULL;
        errno = 0;
        long v = arg && *arg ? strtol(arg, &end, 10) : 0;
        if (!arg || !*arg || errno || *end || v <= 0) {
            free(s);
            return pl_fail(PL_EINVAL, "reward rule length: the argument '%s' is not a positive integer",
                           arg ? arg : "");
        }
        s->length = v;
    }
    *state = s;
    return 0;
}

/* [*b, *e) = s without leading and trailing ASCII whitespace. */
static void trim(const char *s, const char **b, const char **e) {
    const char *p = s, *q = s + strlen(s);
    while (p < q && isspace((unsigned char)*p)) p++;
    while (q > p && isspace((unsigned char)q[-1])) q--;
    *b = p;
    *e = q;
}

/* Parses the trimmed s as a number; 0 when it is not one (whole string). */
static int parse_number(const char *s, double *out) {
    const char *b, *e;
    trim(s, &b, &e);
    size_t n = (size_t)(e - b);
    if (n == 0 || n > 255) return 0;
    char buf[256];
    memcpy(buf, b, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    double v = strtod(buf, &end);
    if (end != buf + n || errno == ERANGE || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

double reward_rule_score(RewardRule r, const void *state, const char *response,
                         int n_response_tokens, const char *answer) {
    const RuleState *s = state;
    if (!response) response = "";
    switch (r) {
    case RULE_EXACT_MATCH: {
        if (!answer) return 0.0;
        const char *rb, *re, *ab, *ae;
        trim(response, &rb, &re);
        trim(answer, &ab, &ae);
        return re - rb == ae - ab && !memcmp(rb, ab, (size_t)(re - rb)) ? 1.0 : 0.0;
    }
    case RULE_NUMERIC_MATCH: {
        double x, y;
        if (!answer || !parse_number(response, &x) || !parse_number(answer, &y)) return 0.0;
        return fabs(x - y) <= 1e-6 ? 1.0 : 0.0;
    }
    case RULE_REGEX: {
        if (!s || !s->re) return 0.0;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(s->re, NULL);
        if (!md) return 0.0;
        int rc = pcre2_match(s->re, (PCRE2_SPTR)response, strlen(response), 0, 0, md, NULL);
        pcre2_match_data_free(md);
        return rc >= 0 ? 1.0 : 0.0;
    }
    case RULE_LENGTH: {
        if (!s || s->length <= 0 || n_response_tokens <= 0) return 0.0;
        double v = (double)n_response_tokens / (double)s->length;
        return v < 1.0 ? v : 1.0;
    }
    default:
        return 0.0;
    }
}

void reward_rule_free(void **state) {
    if (!state || !*state) return;
    RuleState *s = *state;
    if (s->re) pcre2_code_free(s->re);
    free(s);
    *state = NULL;
}
