/* http.c: reward.type http, scores from a web service (remote.h).
 *
 * One libcurl multi handle drives the batches of a score request: up to
 * `concurrency` POSTs in flight, each batch with its own attempts and its
 * own time of the next one (backoff), so a slow or failing batch does not
 * hold the others back. Connections are kept between requests. */
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/sigpipe.h"
#include "reward/remote.h"

enum { MAX_REPLY = 64 << 20 }; /* bytes of one answer */

typedef struct {
    RemoteOpts o;
    char *url;
    CURLM *multi;
    struct curl_slist *headers;
} Http;

/* One batch of items, POSTed until it is answered or given up. */
typedef struct {
    int first, n;            /* items[first .. first + n)                     */
    char *body;              /* the JSON array                                */
    int attempts;
    double not_before;       /* pl_now_s() of the next attempt                */
    CURL *easy;              /* in flight, or NULL                            */
    PlBuf reply;
    int done;
    char last[256];          /* why the last attempt failed                   */
} Batch;

static int curl_ready;

static int http_open(const RemoteOpts *o, void **state) {
    *state = NULL;
    if (!o->url || (strncmp(o->url, "http://", 7) && strncmp(o->url, "https://", 8)))
        return pl_fail(PL_EINVAL, "reward.url '%s' is not an http:// or https:// URL",
                       o->url ? o->url : "");
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return pl_fail(PL_EIO, "reward http: libcurl did not initialise");
        curl_ready = 1;
    }
    Http *h = calloc(1, sizeof *h);
    PL_CHECK_ALLOC(h);
    h->o = *o;
    h->url = strdup(o->url);
    h->multi = curl_multi_init();
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!h->url || !h->multi || !h->headers) {
        free(h->url);
        if (h->multi) curl_multi_cleanup(h->multi);
        curl_slist_free_all(h->headers);
        free(h);
        return pl_fail(PL_ENOMEM, "reward http: out of memory");
    }
    h->o.url = h->url, h->o.command = NULL;
    *state = h;
    return 0;
}

static void http_close(void *state) {
    Http *h = state;
    if (!h) return;
    curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->headers);
    free(h->url);
    free(h);
}

static size_t on_data(char *p, size_t size, size_t n, void *arg) {
    PlBuf *b = arg;
    size_t len = size * n;
    if (b->n + len > MAX_REPLY || pl_buf_put(b, p, len) < 0) return 0; /* aborts the transfer */
    return len;
}

static int start(Http *h, Batch *b) {
    CURL *e = curl_easy_init();
    if (!e) return pl_fail(PL_ENOMEM, "reward http: no curl handle");
    pl_buf_free(&b->reply);
    curl_easy_setopt(e, CURLOPT_URL, h->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, b->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(b->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b->reply);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)ceil(h->o.timeout_s * 1000.0));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)b);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        return pl_fail(PL_EIO, "reward http: curl_multi_add_handle failed");
    }
    b->easy = e;
    b->attempts++;
    return 0;
}

/* The answer of a 200: n scores into out, or a message in why. */
static int parse(const Batch *b, float *out, char *why, size_t wn) {
    json_error_t je;
    json_t *v = json_loadb(b->reply.p ? b->reply.p : "", b->reply.n, JSON_DECODE_ANY, &je);
    if (!v) {
        char snip[64];
        remote_snippet(b->reply.p ? b->reply.p : "", b->reply.n, snip, sizeof snip);
        snprintf(why, wn, "the answer is not JSON (%.60s): '%s'", je.text, snip);
        return -1;
    }
    const json_t *a = json_is_object(v) ? json_object_get(v, "scores") : v;
    int rc = 0;
    if (!json_is_array(a)) {
        snprintf(why, wn, "the answer is neither an array of scores nor {\"scores\": [...]}");
        rc = -1;
    } else if (json_array_size(a) != (size_t)b->n) {
        snprintf(why, wn, "%zu scores for %d items", json_array_size(a), b->n);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < b->n; i++) {
        char w[96];
        if (remote_score_value(json_array_get(a, (size_t)i), &out[b->first + i], w, sizeof w) < 0) {
            snprintf(why, wn, "score %d is %s", i, w);
            rc = -1;
        }
    }
    json_decref(v);
    return rc;
}

/* A finished attempt: 1 when the batch is done, 0 when it is to be tried
 * again, < 0 when it failed for good. */
static int finish(Http *h, Batch *b, CURLcode res, float *out, int nb, int bi) {
    long status = 0;
    curl_easy_getinfo(b->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(h->multi, b->easy);
    curl_easy_cleanup(b->easy);
    b->easy = NULL;
    int again = 0;
    if (res != CURLE_OK) {
        snprintf(b->last, sizeof b->last, "%s", curl_easy_strerror(res));
        if (res == CURLE_WRITE_ERROR)
            snprintf(b->last, sizeof b->last, "the answer is over %d MiB", MAX_REPLY >> 20);
        else
            again = 1;
    } else if (status == 200) {
        char why[256];
        if (parse(b, out, why, sizeof why) == 0) return 1;
        return pl_fail(PL_EPROTO, "reward %s: batch %d of %d (items %d..%d): %s", h->url, bi + 1,
                       nb, b->first, b->first + b->n - 1, why);
    } else {
        char snip[120];
        remote_snippet(b->reply.p ? b->reply.p : "", b->reply.n, snip, sizeof snip);
        snprintf(b->last, sizeof b->last, "HTTP %ld: '%s'", status, snip);
        again = status == 429 || status >= 500;
    }
    if (!again || b->attempts > h->o.retries)
        return pl_fail(res == CURLE_OPERATION_TIMEDOUT ? PL_ETIMEOUT : PL_EPEER,
                       "reward %s: batch %d of %d (items %d..%d): %s, after %d attempt%s", h->url,
                       bi + 1, nb, b->first, b->first + b->n - 1, b->last, b->attempts,
                       b->attempts == 1 ? "" : "s");
    double wait = h->o.backoff_ms / 1000.0 * pow(2.0, b->attempts - 1);
    b->not_before = pl_now_s() + fmin(wait, 60.0);
    return 0;
}

static int http_score(void *state, const RewardItem *items, int n, float *out) {
    Http *h = state;
    if (n == 0) return 0;
    const int nb = (n + h->o.batch_size - 1) / h->o.batch_size;
    Batch *bs = calloc((size_t)nb, sizeof *bs);
    PL_CHECK_ALLOC(bs);
    int rc = 0;
    for (int i = 0; i < nb && rc == 0; i++) {
        Batch *b = &bs[i];
        b->first = i * h->o.batch_size;
        b->n = n - b->first < h->o.batch_size ? n - b->first : h->o.batch_size;
        json_t *arr = json_array();
        for (int k = 0; arr && k < b->n; k++)
            if (json_array_append_new(arr, remote_item_json(&items[b->first + k])) < 0)
                json_decref(arr), arr = NULL;
        b->body = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
        json_decref(arr);
        if (!b->body) rc = pl_fail(PL_ENOMEM, "reward http: encoding batch %d", i + 1);
    }
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    int left = nb;
    while (rc == 0 && left > 0) {
        int inflight = 0;
        double now = pl_now_s(), next = now + 1.0;
        for (int i = 0; i < nb; i++) inflight += bs[i].easy != NULL;
        for (int i = 0; i < nb && rc == 0; i++) {
            Batch *b = &bs[i];
            if (b->done || b->easy) continue;
            if (b->not_before > now) {
                next = fmin(next, b->not_before);
                continue;
            }
            if (inflight < h->o.concurrency) rc = start(h, b), inflight++;
        }
        if (rc < 0) break;
        int running = 0;
        if (curl_multi_perform(h->multi, &running) != CURLM_OK) {
            rc = pl_fail(PL_EIO, "reward %s: curl_multi_perform failed", h->url);
            break;
        }
        CURLMsg *m;
        int q;
        while (rc == 0 && (m = curl_multi_info_read(h->multi, &q))) {
            if (m->msg != CURLMSG_DONE) continue;
            Batch *b;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&b);
            int r = finish(h, b, m->data.result, out, nb, (int)(b - bs));
            if (r < 0) rc = r;
            else if (r == 1) b->done = 1, left--;
        }
        if (rc == 0 && left > 0) {
            int ms = (int)fmax(1.0, fmin(100.0, (next - pl_now_s()) * 1000.0));
            curl_multi_poll(h->multi, NULL, 0, ms, NULL);
        }
    }
    for (int i = 0; i < nb; i++) {
        if (bs[i].easy) {
            curl_multi_remove_handle(h->multi, bs[i].easy);
            curl_easy_cleanup(bs[i].easy);
        }
        free(bs[i].body);
        pl_buf_free(&bs[i].reply);
    }
    pl_sigpipe_restore(&g);
    free(bs);
    return rc;
}

const RemoteOps remote_http = {.name = "http", .open = http_open, .score = http_score,
                               .close = http_close};
