/* transport.c: the ROUTER server, DEALER clients, CURVE keys and the ZAP
 * handler behind transport.h.
 *
 * Every ZtServer and ZtClient owns its ZeroMQ context. ZAP is per context
 * (the handler binds "inproc://zeromq.zap.01" in it), so two servers in one
 * process each get their own handler and key list, and closing one never
 * waits on another's sockets. */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/wire.h"

#define ZT_LINGER_MS    100        /* ms closing waits at most for queued frames */
#define ZT_SLACK        (1u << 20) /* ZMQ_MAXMSGSIZE = 2 * max_message + this    */
#define ZT_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZT_KEY_BYTES    32         /* a CURVE key, binary                        */

/* ------------------------------------------------------------- helpers */

static double now_ms(void) { return pl_now_s() * 1e3; }

/* Milliseconds left until deadline (timeout -1: forever, deadline < 0). */
static long remaining_ms(double deadline) {
    if (deadline < 0) return -1;
    double left = deadline - now_ms();
    return left > 0 ? (long)(left + 0.999) : 0;
}

static size_t max_or_default(size_t max) { return max ? max : WIRE_MAX_MESSAGE_DEFAULT; }

/* Options every data socket gets: bounded close, bounded frame size. */
static int socket_common(void *sock, size_t max_message, const char *endpoint) {
    int linger = ZT_LINGER_MS;
    int64_t maxsize = (int64_t)2 * (int64_t)max_message + ZT_SLACK;
    if (zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize))
        return pl_fail(PL_EIO, "%s: socket options: %s", endpoint, zmq_strerror(zmq_errno()));
    return 0;
}

/* Drops the rest of a multipart message (our peers send one frame). */
static void drain_more(void *sock) {
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, sock, ZMQ_DONTWAIT);
        zmq_msg_close(&m);
        if (rc < 0) break;
        sz = sizeof more;
    }
}

/* Waits for events on sock until deadline. 1: ready, 0: timeout or a
 * signal, < 0: error naming endpoint. */
static int wait_for(void *sock, short events, double deadline, const char *endpoint,
                    int *interrupted) {
    zmq_pollitem_t it = {.socket = sock, .events = events};
    int rc = zmq_poll(&it, 1, remaining_ms(deadline));
    if (rc < 0) {
        if (zmq_errno() == EINTR) {
            if (interrupted) *interrupted = 1;
            return 0;
        }
        return pl_fail(PL_EIO, "%s: poll: %s", endpoint, zmq_strerror(zmq_errno()));
    }
    return rc > 0 && (it.revents & events);
}

/* One single-frame message from sock (the routing identity, if any, already
 * read). 1 with *buf and *len, 0 when nothing (EAGAIN/EINTR) or a multipart
 * message was dropped, PL_ERANGE with *len for a frame over max. */
static int recv_frame(void *sock, size_t max, void **buf, size_t *len, const char *endpoint) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m);
        if (e == EAGAIN || e == EINTR) return 0;
        return pl_fail(PL_EIO, "%s: receive: %s", endpoint, zmq_strerror(e));
    }
    if (zmq_msg_more(&m)) { /* not ours: one frame per message */
        zmq_msg_close(&m);
        drain_more(sock);
        return 0;
    }
    size_t n = zmq_msg_size(&m);
    *len = n;
    if (n > max) {
        zmq_msg_close(&m);
        return pl_fail(PL_ERANGE, "%s: a frame of %zu bytes is over the limit of %zu", endpoint,
                       n, max);
    }
    void *b = malloc(n ? n : 1);
    if (!b) {
        zmq_msg_close(&m);
        return pl_fail(PL_ENOMEM, "%s: out of memory for a frame of %zu bytes", endpoint, n);
    }
    if (n) memcpy(b, zmq_msg_data(&m), n);
    zmq_msg_close(&m);
    *buf = b;
    return 1;
}

/* ---------------------------------------------------------------- keys */

/* 1 when s is 40 characters of valid Z85 (decoding into bin if given). */
static int z85_key(const char *s, size_t n, uint8_t bin[ZT_KEY_BYTES]) {
    if (n != ZT_KEY_LEN) return 0;
    char tmp[ZT_KEY_LEN + 1];
    uint8_t out[ZT_KEY_BYTES];
    memcpy(tmp, s, ZT_KEY_LEN);
    tmp[ZT_KEY_LEN] = '\0';
    if (!zmq_z85_decode(out, tmp)) return 0;
    if (bin) memcpy(bin, out, sizeof out);
    return 1;
}

int zt_keygen(char pub[ZT_KEY_LEN + 1], char sec[ZT_KEY_LEN + 1]) {
    if (!zmq_has("curve")) return pl_fail(PL_ENOTSUP, "this libzmq was built without CURVE");
    if (zmq_curve_keypair(pub, sec))
        return pl_fail(PL_EIO, "CURVE key pair: %s", zmq_strerror(zmq_errno()));
    return 0;
}

static int write_key_file(const char *path, int mode, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return pl_fail(PL_EIO, "cannot write %s: %s", path, strerror(errno));
    /* an existing file keeps its mode through O_TRUNC: set ours first */
    int ok = fchmod(fd, mode) == 0;
    size_t n = strlen(text), off = 0;
    while (ok && off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) ok = 0;
        else off += (size_t)w;
    }
    int e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    return ok ? 0 : pl_fail(PL_EIO, "writing %s failed: %s", path, strerror(e));
}

int zt_key_write(const char *prefix, const char pub[ZT_KEY_LEN + 1],
                 const char sec[ZT_KEY_LEN + 1]) {
    if (!z85_key(pub, strlen(pub), NULL) || !z85_key(sec, strlen(sec), NULL))
        return pl_fail(PL_EINVAL, "writing keys %s: not 40-character Z85 keys", prefix);
    char path[4096], text[256];
    snprintf(path, sizeof path, "%s.key", prefix);
    snprintf(text, sizeof text, "public-key = \"%s\"\nsecret-key = \"%s\"\n", pub, sec);
    PL_TRY(write_key_file(path, 0600, text));
    snprintf(path, sizeof path, "%s.pub", prefix);
    snprintf(text, sizeof text, "public-key = \"%s\"\n", pub);
    return write_key_file(path, 0644, text);
}

enum { LINE_SKIP, LINE_BARE, LINE_PUBLIC, LINE_SECRET, LINE_BAD };

/* Classifies one line of a key or authorized-keys file, filling key (Z85,
 * NUL-terminated) for a key line. A line that is exactly a Z85 key is one
 * even when it begins with '#' (a Z85 character); any other '#' line is a
 * comment. Named lines are `public-key = "<z85>"` or `secret-key = ...`,
 * quotes optional, an optional '#' comment after the value. */
static int parse_key_line(char *line, char key[ZT_KEY_LEN + 1]) {
    char *s = line, *e = line + strlen(line);
    while (*s == ' ' || *s == '\t') s++;
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
    *e = '\0';
    if (z85_key(s, (size_t)(e - s), NULL)) {
        memcpy(key, s, ZT_KEY_LEN + 1);
        return LINE_BARE;
    }
    if (s == e || *s == '#') return LINE_SKIP;
    int kind;
    if (!strncmp(s, "public-key", 10)) kind = LINE_PUBLIC;
    else if (!strncmp(s, "secret-key", 10)) kind = LINE_SECRET;
    else return LINE_BAD;
    s += 10;
    while (*s == ' ' || *s == '\t') s++;
    if (*s++ != '=') return LINE_BAD;
    while (*s == ' ' || *s == '\t') s++;
    const char *v = s;
    size_t n;
    if (*s == '"') {
        v = ++s;
        char *q = strchr(s, '"');
        if (!q) return LINE_BAD;
        n = (size_t)(q - v);
        s = q + 1;
        while (*s == ' ' || *s == '\t') s++;
        if (*s && *s != '#') return LINE_BAD;
    } else {
        n = (size_t)(e - v);
    }
    if (!z85_key(v, n, NULL)) return LINE_BAD;
    memcpy(key, v, ZT_KEY_LEN);
    key[ZT_KEY_LEN] = '\0';
    return kind;
}

int zt_key_read(const char *path, char pub[ZT_KEY_LEN + 1], char sec[ZT_KEY_LEN + 1]) {
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        if (e == ENOENT && z85_key(path, strlen(path), NULL)) {
            if (sec) return pl_fail(PL_EFORMAT, "a bare public key was given where a key file "
                                                "with a secret key is needed");
            memcpy(pub, path, ZT_KEY_LEN + 1);
            return 0;
        }
        return pl_fail(PL_EIO, "cannot read key file %s: %s", path, strerror(e));
    }
    char *line = NULL, key[ZT_KEY_LEN + 1];
    size_t cap = 0;
    int lineno = 0, have_pub = 0, have_sec = 0, rc = 0;
    char p[ZT_KEY_LEN + 1], s[ZT_KEY_LEN + 1];
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        int kind = parse_key_line(line, key);
        if (kind == LINE_SKIP) continue;
        if (kind == LINE_BAD) {
            rc = pl_fail(PL_EFORMAT, "%s:%d: not a key line (public-key = \"<40 Z85 "
                                     "characters>\")", path, lineno);
            break;
        }
        int *have = kind == LINE_SECRET ? &have_sec : &have_pub;
        if (*have) {
            rc = pl_fail(PL_EFORMAT, "%s:%d: a second %s key", path, lineno,
                         kind == LINE_SECRET ? "secret" : "public");
            break;
        }
        *have = 1;
        memcpy(kind == LINE_SECRET ? s : p, key, sizeof key);
    }
    int read_err = ferror(f);
    free(line);
    fclose(f);
    if (rc < 0) return rc;
    if (read_err) return pl_fail(PL_EIO, "reading key file %s failed", path);
    if (sec && !have_sec) return pl_fail(PL_EFORMAT, "%s: no secret-key line", path);
    if (have_sec && (sec || !have_pub)) {
        char derived[ZT_KEY_LEN + 1];
        if (zmq_curve_public(derived, s))
            return pl_fail(PL_EFORMAT, "%s: the secret key is not a CURVE key", path);
        if (have_pub && strcmp(derived, p))
            return pl_fail(PL_EFORMAT, "%s: the public key does not belong to the secret key",
                           path);
        memcpy(p, derived, sizeof p);
        have_pub = 1;
    }
    if (!have_pub) return pl_fail(PL_EFORMAT, "%s: no public-key line", path);
    memcpy(pub, p, sizeof p);
    if (sec) memcpy(sec, s, sizeof s);
    return 0;
}

/* The client public keys of an authorized-keys file, binary (n, 32). */
static int read_authorized(const char *path, uint8_t (**keys)[ZT_KEY_BYTES], int *nkeys) {
    FILE *f = fopen(path, "re");
    if (!f) return pl_fail(PL_EIO, "cannot read authorized keys %s: %s", path, strerror(errno));
    uint8_t(*k)[ZT_KEY_BYTES] = NULL;
    int n = 0, cap = 0, lineno = 0, rc = 0;
    char *line = NULL, key[ZT_KEY_LEN + 1];
    size_t lcap = 0;
    while (getline(&line, &lcap, f) >= 0) {
        lineno++;
        int kind = parse_key_line(line, key);
        if (kind == LINE_SKIP) continue;
        if (kind == LINE_BAD || kind == LINE_SECRET) {
            rc = pl_fail(PL_EFORMAT, "%s:%d: %s", path, lineno,
                         kind == LINE_SECRET ? "a secret key does not belong in an "
                                               "authorized-keys file"
                                             : "not a public key (40 Z85 characters or "
                                               "public-key = \"...\")");
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            void *nk = realloc(k, (size_t)cap * sizeof *k);
            if (!nk) {
                rc = pl_fail(PL_ENOMEM, "out of memory reading %s", path);
                break;
            }
            k = nk;
        }
        z85_key(key, ZT_KEY_LEN, k[n++]);
    }
    int read_err = ferror(f);
    free(line);
    fclose(f);
    if (rc == 0 && read_err) rc = pl_fail(PL_EIO, "reading authorized keys %s failed", path);
    if (rc == 0 && n == 0) rc = pl_fail(PL_EFORMAT, "%s: no public keys", path);
    if (rc < 0) {
        free(k);
        return rc;
    }
    *keys = k;
    *nkeys = n;
    return 0;
}

/* -------------------------------------------------------------- server */

struct ZtServer {
    void *ctx;                         /* this server's own context              */
    void *sock;                        /* ROUTER                                 */
    void *zap;                         /* REP on the ZAP endpoint (zap thread's) */
    pthread_t zap_thread;
    int zap_started;
    uint8_t (*keys)[ZT_KEY_BYTES];     /* (nkeys, 32) authorized client keys     */
    int nkeys;
    atomic_long refused;               /* ZAP refusals so far                    */
    pthread_mutex_t last_lock;         /* guards last_refused (the ZAP thread's) */
    char last_refused[160];            /* "address A, key Z85" of the latest     */
    size_t max_message;                /* bytes                                  */
    char endpoint[512];                /* as bound, "*" port resolved            */
};

static int key_listed(const ZtServer *s, const void *key, size_t n) {
    if (n != ZT_KEY_BYTES) return 0;
    for (int i = 0; i < s->nkeys; i++)
        if (!memcmp(s->keys[i], key, ZT_KEY_BYTES)) return 1;
    return 0;
}

/* The ZAP handler (RFC 27): a request is version, request id, domain,
 * address, routing id, mechanism, credentials; the reply is version,
 * request id, status code, status text, user id, metadata. Runs until the
 * context is shut down (ETERM). */
static void *zap_main(void *arg) {
    ZtServer *s = arg;
    enum { NF = 8 };
    for (;;) {
        zmq_msg_t f[NF];
        int nf = 0, more = 1, term = 0;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s->zap, 0) < 0) {
                zmq_msg_close(&m);
                if (zmq_errno() == EINTR) continue;
                term = 1;
                break;
            }
            more = zmq_msg_more(&m);
            if (nf < NF) f[nf++] = m;
            else zmq_msg_close(&m);
        }
        if (term) {
            for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
            break;
        }
        int ok = nf >= 7 && zmq_msg_size(&f[0]) == 3 && !memcmp(zmq_msg_data(&f[0]), "1.0", 3) &&
                 zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
                 key_listed(s, zmq_msg_data(&f[6]), zmq_msg_size(&f[6]));
        if (!ok) {
            char addr[64] = "?", key[ZT_KEY_LEN + 1] = "none";
            if (nf >= 4) snprintf(addr, sizeof addr, "%.*s", (int)zmq_msg_size(&f[3]),
                                  (const char *)zmq_msg_data(&f[3]));
            if (nf >= 7 && zmq_msg_size(&f[6]) == ZT_KEY_BYTES)
                zmq_z85_encode(key, zmq_msg_data(&f[6]), ZT_KEY_BYTES);
            pthread_mutex_lock(&s->last_lock);
            snprintf(s->last_refused, sizeof s->last_refused, "address %s, key %s", addr, key);
            pthread_mutex_unlock(&s->last_lock);
            atomic_fetch_add(&s->refused, 1);
        }
        const char *status = ok ? "200" : "400", *text = ok ? "OK" : "key not authorized";
        int rc = zmq_send(s->zap, "1.0", 3, ZMQ_SNDMORE);
        if (rc >= 0 && nf >= 2)
            rc = zmq_send(s->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        else if (rc >= 0)
            rc = zmq_send(s->zap, "", 0, ZMQ_SNDMORE);
        if (rc >= 0) rc = zmq_send(s->zap, status, 3, ZMQ_SNDMORE);
        if (rc >= 0) rc = zmq_send(s->zap, text, strlen(text), ZMQ_SNDMORE);
        if (rc >= 0) rc = zmq_send(s->zap, "", 0, ZMQ_SNDMORE);
        if (rc >= 0) rc = zmq_send(s->zap, "", 0, 0);
        for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
        if (rc < 0 && zmq_errno() == ETERM) break;
    }
    zmq_close(s->zap);
    s->zap = NULL;
    return NULL;
}

/* Binds the ZAP socket and starts its thread, which owns the socket from
 * then on. Signals stay with the caller's threads. */
static int zap_start(ZtServer *s) {
    s->zap = zmq_socket(s->ctx, ZMQ_REP);
    int linger = 0;
    if (!s->zap || zmq_setsockopt(s->zap, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(s->zap, ZT_ZAP_ENDPOINT))
        return pl_fail(PL_EIO, "%s: ZAP handler: %s", s->endpoint, zmq_strerror(zmq_errno()));
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&s->zap_thread, NULL, zap_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) return pl_fail(PL_EIO, "%s: ZAP thread: %s", s->endpoint, strerror(e));
    s->zap_started = 1;
    return 0;
}

void zt_server_free(ZtServer **sp) {
    ZtServer *s = *sp;
    if (!s) return;
    if (s->sock) zmq_close(s->sock);
    if (s->ctx) {
        /* shutdown wakes the ZAP thread with ETERM; it closes its socket,
         * then term has no sockets left to wait for */
        zmq_ctx_shutdown(s->ctx);
        if (s->zap_started) pthread_join(s->zap_thread, NULL);
        else if (s->zap) zmq_close(s->zap);
        while (zmq_ctx_term(s->ctx) < 0 && zmq_errno() == EINTR) {}
    }
    free(s->keys);
    pthread_mutex_destroy(&s->last_lock);
    free(s);
    *sp = NULL;
}

int zt_server_new(ZtServer **out, const ZtServerOptions *o) {
    *out = NULL;
    if (!o->endpoint) return pl_fail(PL_EINVAL, "server: no endpoint");
    if (o->authorized_keys && !o->secret_key)
        return pl_fail(PL_EINVAL, "%s: authorized keys %s given without a server secret key",
                       o->endpoint, o->authorized_keys);
    if (o->secret_key && !o->authorized_keys)
        return pl_fail(PL_EINVAL, "%s: CURVE (secret key %s) needs an authorized-keys file",
                       o->endpoint, o->secret_key);
    ZtServer *s = calloc(1, sizeof *s);
    PL_CHECK_ALLOC(s);
    atomic_init(&s->refused, 0);
    pthread_mutex_init(&s->last_lock, NULL);
    s->max_message = max_or_default(o->max_message);
    snprintf(s->endpoint, sizeof s->endpoint, "%s", o->endpoint);
    int rc = 0;
    char pub[ZT_KEY_LEN + 1], sec[ZT_KEY_LEN + 1];
    if (o->secret_key) {
        rc = zt_key_read(o->secret_key, pub, sec);
        if (rc == 0) rc = read_authorized(o->authorized_keys, &s->keys, &s->nkeys);
        if (rc < 0) goto fail;
    }
    s->ctx = zmq_ctx_new();
    if (!s->ctx) {
        rc = pl_fail(PL_EIO, "%s: ZeroMQ context: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* the handler must be up before the ROUTER accepts anyone: without one,
     * libzmq admits every CURVE client */
    if (o->secret_key && (rc = zap_start(s)) < 0) goto fail;
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    if (!s->sock) {
        rc = pl_fail(PL_EIO, "%s: socket: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if ((rc = socket_common(s->sock, s->max_message, o->endpoint)) < 0) goto fail;
    int zero = 0, one = 1;
    if (zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &zero, sizeof zero) ||
        zmq_setsockopt(s->sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one) ||
        (o->secret_key &&
         (zmq_setsockopt(s->sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
          zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, sec, ZT_KEY_LEN + 1)))) {
        rc = pl_fail(PL_EIO, "%s: socket options: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_bind(s->sock, o->endpoint)) {
        rc = pl_fail(PL_EIO, "cannot bind %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t sz = sizeof s->endpoint;
    if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->endpoint, &sz)) {
        rc = pl_fail(PL_EIO, "%s: bound endpoint: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    memset(sec, 0, sizeof sec);
    *out = s;
    return 0;
fail:
    memset(sec, 0, sizeof sec);
    zt_server_free(&s);
    return rc;
}

const char *zt_server_endpoint(const ZtServer *s) { return s->endpoint; }

void zt_server_last_refused(ZtServer *s, char *out, size_t cap) {
    pthread_mutex_lock(&s->last_lock);
    snprintf(out, cap, "%s", s->last_refused);
    pthread_mutex_unlock(&s->last_lock);
}

long zt_server_refused(const ZtServer *s) {
    return atomic_load(&((ZtServer *)s)->refused);
}

int zt_server_recv(ZtServer *s, ZtPeer *peer, void **buf, size_t *len, int timeout_ms) {
    *buf = NULL;
    *len = 0;
    double deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        int rc = wait_for(s->sock, ZMQ_POLLIN, deadline, s->endpoint, NULL);
        if (rc <= 0) return rc;
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, s->sock, ZMQ_DONTWAIT) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&id);
            if (e == EINTR) return 0;
            if (e == EAGAIN) continue;
            return pl_fail(PL_EIO, "%s: receive: %s", s->endpoint, zmq_strerror(e));
        }
        size_t n = zmq_msg_size(&id);
        if (n > ZT_PEER_MAX) n = ZT_PEER_MAX;
        memcpy(peer->id, zmq_msg_data(&id), n);
        peer->len = n;
        int more = zmq_msg_more(&id);
        zmq_msg_close(&id);
        if (!more) continue; /* an identity with no body: nothing to deliver */
        rc = recv_frame(s->sock, s->max_message, buf, len, s->endpoint);
        if (rc == PL_ERANGE) {
            char p[2 * ZT_PEER_MAX + 1];
            return pl_fail(PL_ERANGE, "%s: a frame of %zu bytes from peer %s is over the "
                                      "limit of %zu", s->endpoint, *len,
                           zt_peer_str(peer, p, sizeof p), s->max_message);
        }
        if (rc != 0) return rc;
        if (remaining_ms(deadline) == 0) return 0;
    }
}

int zt_server_send(ZtServer *s, const ZtPeer *peer, const void *buf, size_t len) {
    /* non-mandatory ROUTER: a frame to an unknown peer, or one whose queue
     * is full, is dropped without an error */
    if (zmq_send(s->sock, peer->id, peer->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s->sock, buf, len, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        if (e == EHOSTUNREACH || e == EAGAIN) return 0;
        char p[2 * ZT_PEER_MAX + 1];
        return pl_fail(PL_EIO, "%s: send to peer %s: %s", s->endpoint,
                       zt_peer_str(peer, p, sizeof p), zmq_strerror(e));
    }
    return 0;
}

const char *zt_peer_str(const ZtPeer *p, char *out, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    if (!cap) return out;
    size_t j = 0;
    for (size_t i = 0; i < p->len && j + 2 < cap; i++) {
        out[j++] = hex[p->id[i] >> 4];
        out[j++] = hex[p->id[i] & 15];
    }
    out[j] = '\0';
    return out;
}

/* -------------------------------------------------------------- client */

struct ZtClient {
    void *ctx;                         /* this client's own context */
    void *sock;                        /* DEALER                    */
    void *mon;                         /* PAIR: the DEALER's handshake failures (CURVE) */
    size_t max_message;                /* bytes                     */
    char endpoint[512];
};

void zt_client_free(ZtClient **cp) {
    ZtClient *c = *cp;
    if (!c) return;
    if (c->sock) zmq_close(c->sock);
    if (c->mon) zmq_close(c->mon);
    if (c->ctx) while (zmq_ctx_term(c->ctx) < 0 && zmq_errno() == EINTR) {}
    free(c);
    *cp = NULL;
}

/* A server that refuses the client's CURVE key only drops the connection,
 * and the client would wait for answers that never come: a monitor
 * reports the handshake's failure, so that a receive can say what
 * happened. */
static int watch_handshakes(ZtClient *c) {
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zt-monitor-%p", (void *)c);
    int linger = 0;
    if (zmq_socket_monitor(c->sock, ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) ||
        !(c->mon = zmq_socket(c->ctx, ZMQ_PAIR)) ||
        zmq_setsockopt(c->mon, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(c->mon, ep))
        return pl_fail(PL_EIO, "%s: handshake monitor: %s", c->endpoint,
                       zmq_strerror(zmq_errno()));
    return 0;
}

/* One monitor event: PL_EPEER saying why the handshake failed. */
static int handshake_event(ZtClient *c) {
    zmq_msg_t m[2];
    zmq_msg_init(&m[0]), zmq_msg_init(&m[1]);
    int got = zmq_msg_recv(&m[0], c->mon, ZMQ_DONTWAIT) >= 6 && zmq_msg_more(&m[0]) &&
              zmq_msg_recv(&m[1], c->mon, ZMQ_DONTWAIT) >= 0;
    uint16_t ev = 0;
    uint32_t value = 0;
    if (got) memcpy(&ev, zmq_msg_data(&m[0]), 2), memcpy(&value, (char *)zmq_msg_data(&m[0]) + 2, 4);
    zmq_msg_close(&m[0]), zmq_msg_close(&m[1]);
    if (!got) return 0;
    if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        return pl_fail(PL_EPEER, "%s refused this worker's CURVE key (status %u): its public key "
                                 "is not in the coordinator's transport.authorized_keys",
                       c->endpoint, value);
    return pl_fail(PL_EPEER, "the CURVE handshake with %s failed (a protocol error, %u): is "
                             "--server-key the coordinator's public key?",
                   c->endpoint, value);
}

int zt_client_new(ZtClient **out, const ZtClientOptions *o) {
    *out = NULL;
    if (!o->endpoint) return pl_fail(PL_EINVAL, "client: no endpoint");
    if (o->secret_key && !o->server_key)
        return pl_fail(PL_EINVAL, "%s: a client secret key (%s) without the server's public key",
                       o->endpoint, o->secret_key);
    if (o->server_key && !o->secret_key)
        return pl_fail(PL_EINVAL, "%s: CURVE (server key %s) needs this client's key file",
                       o->endpoint, o->server_key);
    size_t idlen = o->identity ? strlen(o->identity) : 0;
    if (o->identity && (idlen == 0 || idlen >= ZT_PEER_MAX))
        return pl_fail(PL_EINVAL, "%s: identity must be 1 to %d bytes", o->endpoint,
                       ZT_PEER_MAX - 1);
    ZtClient *c = calloc(1, sizeof *c);
    PL_CHECK_ALLOC(c);
    c->max_message = max_or_default(o->max_message);
    snprintf(c->endpoint, sizeof c->endpoint, "%s", o->endpoint);
    int rc = 0;
    char spub[ZT_KEY_LEN + 1], pub[ZT_KEY_LEN + 1], sec[ZT_KEY_LEN + 1];
    if (o->server_key) {
        if ((rc = zt_key_read(o->server_key, spub, NULL)) < 0 ||
            (rc = zt_key_read(o->secret_key, pub, sec)) < 0)
            goto fail;
    }
    c->ctx = zmq_ctx_new();
    if (c->ctx) c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock) {
        rc = pl_fail(PL_EIO, "%s: socket: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if ((rc = socket_common(c->sock, c->max_message, o->endpoint)) < 0) goto fail;
    if ((o->identity && zmq_setsockopt(c->sock, ZMQ_ROUTING_ID, o->identity, idlen)) ||
        (o->server_key &&
         (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, spub, ZT_KEY_LEN + 1) ||
          zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, pub, ZT_KEY_LEN + 1) ||
          zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, sec, ZT_KEY_LEN + 1)))) {
        rc = pl_fail(PL_EIO, "%s: socket options: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (o->server_key && (rc = watch_handshakes(c)) < 0) goto fail;
    if (zmq_connect(c->sock, o->endpoint)) {
        rc = pl_fail(PL_EINVAL, "cannot connect to %s: %s", o->endpoint,
                     zmq_strerror(zmq_errno()));
        goto fail;
    }
    memset(sec, 0, sizeof sec);
    *out = c;
    return 0;
fail:
    memset(sec, 0, sizeof sec);
    zt_client_free(&c);
    return rc;
}

int zt_client_send(ZtClient *c, const void *buf, size_t len, int timeout_ms) {
    double deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        if (zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) >= 0) return 0;
        int e = zmq_errno();
        if (e != EAGAIN && e != EINTR)
            return pl_fail(PL_EIO, "%s: send: %s", c->endpoint, zmq_strerror(e));
        int intr = 0;
        int rc = wait_for(c->sock, ZMQ_POLLOUT, deadline, c->endpoint, &intr);
        if (rc < 0) return rc;
        if (intr) return pl_fail(PL_EIO, "%s: send interrupted by a signal", c->endpoint);
        if (rc == 0)
            return pl_fail(PL_EIO, "%s: send timed out after %d ms (queue full or no server)",
                           c->endpoint, timeout_ms);
    }
}

int zt_client_recv(ZtClient *c, void **buf, size_t *len, int timeout_ms) {
    *buf = NULL;
    *len = 0;
    double deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        zmq_pollitem_t it[2] = {{.socket = c->sock, .events = ZMQ_POLLIN},
                                {.socket = c->mon, .events = ZMQ_POLLIN}};
        int rc = zmq_poll(it, c->mon ? 2 : 1, remaining_ms(deadline));
        if (rc < 0) {
            if (zmq_errno() == EINTR) return 0;
            return pl_fail(PL_EIO, "%s: poll: %s", c->endpoint, zmq_strerror(zmq_errno()));
        }
        if (c->mon && (it[1].revents & ZMQ_POLLIN)) PL_TRY(handshake_event(c));
        if (!(it[0].revents & ZMQ_POLLIN)) {
            if (rc == 0 || remaining_ms(deadline) == 0) return 0;
            continue;
        }
        rc = recv_frame(c->sock, c->max_message, buf, len, c->endpoint);
        if (rc != 0) return rc;
        if (remaining_ms(deadline) == 0) return 0;
    }
}
