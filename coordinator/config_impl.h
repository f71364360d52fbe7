/* config_impl.h: the key table's entries and the lookups that config.c
 * (the table, values, writing), config_check.c (validation) and
 * config_yaml.c (the YAML reader) share. Private to coordinator/config*.c. */
#ifndef PLUMB_CONFIG_IMPL_H
#define PLUMB_CONFIG_IMPL_H

#include <stddef.h>

#include "coordinator/config.h"

/* The algorithms the coordinator drives: the rows of coordinator/algos.c,
 * in its order (test_config checks that the two agree). */
#define ALGO_CHOICES "sft|rm|dpo|orpo|simpo|kto|grpo|ppo"

typedef enum { K_INT, K_U64, K_FLOAT, K_BOOL, K_STR, K_PATH, K_ENUM, K_ALGO } KeyType;

typedef struct {
    const char *key; /* dotted name                                        */
    KeyType type;
    size_t off;          /* offset of the field in RunConfig                   */
    size_t size;         /* bytes of the field (the buffer, for strings)       */
    const char *def;     /* default as YAML text; "auto": resolved by validate */
    const char *range;   /* numbers: "[lo,hi]", "(lo,)", ...; NULL: any        */
    const char *choices; /* enums: "a|b|c"                                     */
    const char *help;
} Key;

/* The key named name, or NULL. */
const Key *runcfg_find_key(const char *name);
/* k's position in the table (0 .. runcfg_key_count() - 1). */
int runcfg_key_index(const Key *k);
/* Whether some key starts with "prefix." (a section such as "model.init"). */
int runcfg_is_section(const char *prefix);
/* " (did you mean 'x'?)" for a near miss of an unknown key into buf; "". */
void runcfg_suggest(const char *name, char *buf, size_t n);
/* Parses text as k's value into dst (null: a YAML null); on failure < 0
 * with the reason in why. */
int runcfg_parse_value(const Key *k, const char *text, int null, void *dst, char *why, size_t wn);
/* The field of c that k fills. */
void *runcfg_field(RunConfig *c, const Key *k);
/* Every field of c against its key: ranges, enum names, terminated strings. */
int runcfg_check_fields(const RunConfig *c);

#endif
