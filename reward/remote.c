/* remote.c: the scorer table and what its two scorers share (remote.h). */
#include "reward/remote.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const RemoteOps *remote_find(const char *name) {
    static const RemoteOps *const all[] = {&remote_http, &remote_exec};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(all[i]->name, name)) return all[i];
    return NULL;
}

json_t *remote_item_json(const RewardItem *it) {
    return json_pack("{s:s, s:s, s:s}", "prompt", it->prompt ? it->prompt : "", "response",
                     it->response ? it->response : "", "answer", it->answer ? it->answer : "");
}

int remote_score_value(const json_t *v, float *out, char *why, size_t wn) {
    const json_t *x = v;
    if (json_is_object(v)) {
        x = json_object_get(v, "score");
        if (!x) {
            snprintf(why, wn, "an object without \"score\"");
            return -1;
        }
    }
    if (!json_is_number(x)) {
        static const char *const kinds[] = {"an object", "an array", "a string", "a number",
                                            "a number", "true", "false", "null"};
        int t = json_typeof(x);
        snprintf(why, wn, "%s, not a number", t >= 0 && t < 8 ? kinds[t] : "something");
        return -1;
    }
    double d = json_number_value(x);
    if (!isfinite(d) || fabs(d) > 3.4e38) {
        snprintf(why, wn, "%g is not a finite float", d);
        return -1;
    }
    *out = (float)d;
    return 0;
}

void remote_snippet(const char *text, size_t len, char *out, size_t cap) {
    if (cap == 0) return;
    size_t keep = cap > 4 ? cap - 4 : 0, n = len < keep ? len : keep, i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        out[i] = c < 0x20 || c == 0x7f ? '.' : (char)c;
    }
    if (n < len && cap > 4) memcpy(out + i, "...", 3), i += 3;
    out[i] = '\0';
}
