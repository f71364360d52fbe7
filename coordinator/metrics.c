/* metrics.c: metrics.jsonl, samples.jsonl and the progress line; the
 * Redis side is metrics_redis.c. */
#include "coordinator/metrics_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/fs.h"

#define METRICS_FILE "metrics.jsonl"
#define SAMPLES_FILE "samples.jsonl"

/* ================================================================== file */

/* The length of the UTF-8 character at p (NUL-terminated), 0 when it is
 * not one (overlong, a surrogate, past U+10FFFF, cut short). */
static int utf8_len(const unsigned char *p) {
    int n = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
    if (!n || p[0] > 0xF4) return 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (p[0] == 0xE0) lo = 0xA0;
    else if (p[0] == 0xED) hi = 0x9F;
    else if (p[0] == 0xF0) lo = 0x90;
    else if (p[0] == 0xF4) hi = 0x8F;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return n;
}

/* Appends s (n bytes) to m->line at *len, growing it. */
static int put(Metrics *m, size_t *len, const char *s, size_t n) {
    PL_TRY(pl_grow(&m->line, &m->cap, *len + n + 2, 1));
    memcpy(m->line + *len, s, n);
    *len += n;
    m->line[*len] = '\0';
    return PL_OK;
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static int put_string(Metrics *m, size_t *len, const char *s) {
    PL_TRY(put(m, len, "\"", 1));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            PL_TRY(put(m, len, esc, 2));
        } else if (*p == '\n' || *p == '\t' || *p == '\r') {
            esc[0] = '\\', esc[1] = *p == '\n' ? 'n' : *p == '\t' ? 't' : 'r';
            PL_TRY(put(m, len, esc, 2));
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            PL_TRY(put(m, len, esc, 6));
        } else if (*p >= 0x80) {
            /* generated text may end inside a character, or be any bytes
             * (a random model's): what is not UTF-8 becomes U+FFFD, so that
             * every line stays JSON */
            int n = utf8_len(p);
            if (n) {
                PL_TRY(put(m, len, (const char *)p, (size_t)n));
                p += n - 1;
            } else {
                PL_TRY(put(m, len, "\\ufffd", 6));
            }
        } else {
            PL_TRY(put(m, len, (const char *)p, 1));
        }
    }
    return put(m, len, "\"", 1);
}

/* The shortest %g form that reads back as x (at most 17 digits); null when
 * x is not finite. */
static int put_number(Metrics *m, size_t *len, double x) {
    if (!isfinite(x)) return put(m, len, "null", 4);
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    return put(m, len, buf, strlen(buf));
}

int metrics_default_stream(const char *run_dir, char *out, size_t cap) {
    size_t n = strlen(run_dir);
    while (n > 1 && run_dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && run_dir[b - 1] != '/') b--;
    int len = snprintf(out, cap, "plumb:metrics:%.*s", (int)(n - b), run_dir + b);
    if (len < 0 || (size_t)len >= cap) {
        out[0] = '\0';
        return pl_fail(PL_EINVAL, "the stream name for %s is over %zu bytes", run_dir, cap - 1);
    }
    return PL_OK;
}

int metrics_open(Metrics **out, const char *run_dir, const char *redis_url, const char *stream) {
    *out = NULL;
    Metrics *m = calloc(1, sizeof *m);
    PL_CHECK_ALLOC(m);
    m->retry_s = 10.0;
    int rc = PL_OK;
    if (redis_url && redis_url[0]) {
        rc = rds_parse_url(redis_url, &m->url);
        if (rc < 0) {
            free(m);
            return pl_wrap(rc, "metrics.redis");
        }
        rds_url_redacted(&m->url, m->url_shown, sizeof m->url_shown);
        m->use_redis = 1;
        if ((rc = mredis_init(m, run_dir, stream)) < 0) goto fail;
    }
    if ((rc = pl_mkdirs(run_dir)) < 0) goto fail;
    snprintf(m->path, sizeof m->path, "%s/%s", run_dir, METRICS_FILE);
    snprintf(m->samples_path, sizeof m->samples_path, "%s/%s", run_dir, SAMPLES_FILE);
    m->f = fopen(m->path, "a+");
    if (!m->f) {
        rc = pl_fail(PL_EIO, "open %s: %s", m->path, strerror(errno));
        goto fail;
    }
    /* a line torn by a crash would swallow the next one: end it */
    if (fseek(m->f, 0, SEEK_END) == 0 && ftell(m->f) > 0 && fseek(m->f, -1, SEEK_END) == 0 &&
        fgetc(m->f) != '\n') {
        fseek(m->f, 0, SEEK_END);
        fputc('\n', m->f);
        fflush(m->f);
    }
    if (m->use_redis) mredis_connect(m); /* a failure is retried on the first log */
    *out = m;
    return PL_OK;
fail:
    memset(&m->url, 0, sizeof m->url);
    free(m);
    return rc;
}

int metrics_log(Metrics *m, long step, const char *const *names, const double *values, int n) {
    size_t len = 0;
    char head[48];
    int hn = snprintf(head, sizeof head, "{\"step\": %ld", step);
    PL_TRY(put(m, &len, head, (size_t)hn));
    for (int i = 0; i < n; i++) {
        if (!names[i] || !names[i][0] || !strcmp(names[i], "step"))
            return pl_fail(PL_EINVAL, "metrics: metric %d has a bad name (%s)", i,
                           names[i] ? (names[i][0] ? "\"step\" is reserved" : "empty") : "NULL");
        PL_TRY(put(m, &len, ", ", 2));
        PL_TRY(put_string(m, &len, names[i]));
        PL_TRY(put(m, &len, ": ", 2));
        PL_TRY(put_number(m, &len, values[i]));
    }
    PL_TRY(put(m, &len, "}", 1));
    if (fwrite(m->line, 1, len, m->f) != len || fputc('\n', m->f) == EOF || fflush(m->f))
        return pl_fail(PL_EIO, "write %s: %s", m->path, strerror(errno));
    if (m->use_redis) mredis_send(m, m->stream, step, m->line, len);
    return PL_OK;
}

int metrics_sample(Metrics *m, long step, const char *prompt, const char *response, double reward,
                   const char *answer) {
    if (!m->samples) {
        m->samples = fopen(m->samples_path, "a");
        if (!m->samples) return pl_fail(PL_EIO, "open %s: %s", m->samples_path, strerror(errno));
    }
    size_t len = 0;
    char head[48];
    int hn = snprintf(head, sizeof head, "{\"step\": %ld, \"prompt\": ", step);
    PL_TRY(put(m, &len, head, (size_t)hn));
    PL_TRY(put_string(m, &len, prompt ? prompt : ""));
    PL_TRY(put(m, &len, ", \"response\": ", 14));
    PL_TRY(put_string(m, &len, response ? response : ""));
    PL_TRY(put(m, &len, ", \"reward\": ", 12));
    PL_TRY(put_number(m, &len, reward));
    if (answer) {
        PL_TRY(put(m, &len, ", \"answer\": ", 12));
        PL_TRY(put_string(m, &len, answer));
    }
    PL_TRY(put(m, &len, "}", 1));
    if (fwrite(m->line, 1, len, m->samples) != len || fputc('\n', m->samples) == EOF ||
        fflush(m->samples))
        return pl_fail(PL_EIO, "write %s: %s", m->samples_path, strerror(errno));
    if (m->use_redis) mredis_send(m, m->samples_stream, step, m->line, len);
    return PL_OK;
}

long long metrics_redis_errors(const Metrics *m) { return m->errors; }

const char *metrics_redis_last_error(const Metrics *m) { return m->last_error; }

void metrics_set_retry_s(Metrics *m, double seconds) {
    m->retry_s = seconds > 0 ? seconds : 0;
    if (!m->ctx) m->next_try = pl_now_s() + m->retry_s;
}

void metrics_close(Metrics **pm) {
    if (!pm || !*pm) return;
    Metrics *m = *pm;
    if (m->f) fclose(m->f);
    if (m->samples) fclose(m->samples);
    mredis_close(m);
    free(m->line);
    memset(&m->url, 0, sizeof m->url); /* the password */
    free(m);
    *pm = NULL;
}

/* ================================================================ resume */

int metrics_truncate_after(const char *run_dir, long step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", run_dir, SAMPLES_FILE);
    PL_TRY(jsonl_truncate_after(path, step));
    snprintf(path, sizeof path, "%s/%s", run_dir, METRICS_FILE);
    return jsonl_truncate_after(path, step);
}

int jsonl_truncate_after(const char *path, long step) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *in = fopen(path, "rb");
    if (!in) {
        if (errno == ENOENT) return PL_OK;
        return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    }
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        int rc = pl_fail(PL_EIO, "create %s: %s", tmp, strerror(errno));
        fclose(in);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = PL_OK;
    while ((n = getline(&line, &cap, in)) > 0) {
        if (line[n - 1] != '\n') break; /* torn last line */
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        json_t *s = json_object_get(j, "step");
        int keep = json_is_integer(s) && json_integer_value(s) <= step;
        json_decref(j);
        if (keep && fwrite(line, 1, (size_t)n, out) != (size_t)n) {
            rc = pl_fail(PL_EIO, "write %s: %s", tmp, strerror(errno));
            break;
        }
    }
    if (rc == PL_OK && ferror(in)) rc = pl_fail(PL_EIO, "read %s: %s", path, strerror(errno));
    free(line);
    fclose(in);
    if (rc == PL_OK && (fflush(out) || fsync(fileno(out))))
        rc = pl_fail(PL_EIO, "write %s: %s", tmp, strerror(errno));
    if (fclose(out) && rc == PL_OK) rc = pl_fail(PL_EIO, "close %s: %s", tmp, strerror(errno));
    if (rc == PL_OK && rename(tmp, path) < 0)
        rc = pl_fail(PL_EIO, "rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY); /* make the rename durable */
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return PL_OK;
}

/* ============================================================== progress */

static void format_duration(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (t < 60) snprintf(buf, n, "%lds", t);
    else if (t < 3600) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

void metrics_progress(FILE *f, long step, long total, double reward, double kl,
                      double tokens_per_s, double elapsed_s, long restarts) {
    char line[256];
    int n = total > 0 ? snprintf(line, sizeof line, "step %ld/%ld", step, total)
                      : snprintf(line, sizeof line, "step %ld", step);
    if (!isnan(reward)) n += snprintf(line + n, sizeof line - n, "  reward %.3f", reward);
    if (!isnan(kl)) n += snprintf(line + n, sizeof line - n, "  kl %.2g", kl);
    if (!isnan(tokens_per_s))
        n += snprintf(line + n, sizeof line - n, "  %.0f tok/s", tokens_per_s);
    if (isfinite(elapsed_s) && elapsed_s >= 0 && step > 0 && total > 0 && step <= total) {
        char d[32];
        format_duration(elapsed_s / (double)step * (double)(total - step), d, sizeof d);
        n += snprintf(line + n, sizeof line - n, "  eta %s", d);
    }
    if (restarts > 0) snprintf(line + n, sizeof line - n, "  restarts %ld", restarts);
    fprintf(f, "%s\n", line);
    fflush(f);
}
