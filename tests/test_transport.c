/* test_transport.c: the ZeroMQ transport over real tcp:// and ipc://
 * sockets on localhost, plain and with CURVE.
 *
 * The group setup makes four key pairs in the scratch directory: the
 * server's, alice's and carol's (both listed in the authorized-keys file,
 * alice as a `public-key = "..."` line, carol as a bare Z85 line) and
 * mallory's (valid, not listed). Every server binds "tcp://127.0.0.1:*"
 * or an ipc path, so tests never collide on ports. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "testutil.h"

#include "common/err.h"
#include "common/transport.h"

/* ------------------------------------------------------------- helpers */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Open file descriptors of this process. */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static const char *g_dir;                 /* scratch directory with the keys */
static char g_server_pub[ZT_KEY_LEN + 1]; /* the server's public key (Z85)   */
static char g_carol_pub[ZT_KEY_LEN + 1];

static const char *key_path(const char *who, const char *ext) {
    return tu_path("%s/%s.%s", g_dir, who, ext);
}

static ZtServer *server_new(const char *endpoint, size_t max, int curve) {
    ZtServerOptions o = {.endpoint = endpoint, .max_message = max};
    if (curve) {
        o.secret_key = key_path("server", "key");
        o.authorized_keys = tu_path("%s/authorized", g_dir);
    }
    ZtServer *s = NULL;
    if (zt_server_new(&s, &o) < 0) fail_msg("zt_server_new %s: %s", endpoint, pl_error());
    return s;
}

/* A client of s; who names its key pair (NULL: plain) and its identity. */
static ZtClient *client_new(const ZtServer *s, const char *who, const char *identity) {
    ZtClientOptions o = {.endpoint = zt_server_endpoint(s), .identity = identity};
    if (who) {
        o.server_key = key_path("server", "pub");
        o.secret_key = key_path(who, "key");
    }
    ZtClient *c = NULL;
    if (zt_client_new(&c, &o) < 0) fail_msg("zt_client_new: %s", pl_error());
    return c;
}

/* Waits up to timeout_ms for one frame at s; fails unless it is want. */
static void expect_server(ZtServer *s, ZtPeer *peer, const char *want, int timeout_ms) {
    void *buf;
    size_t len;
    int rc = zt_server_recv(s, peer, &buf, &len, timeout_ms);
    if (rc != 1) fail_msg("server recv: rc %d (%s), want '%s'", rc, pl_error(), want);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void expect_client(ZtClient *c, const char *want, int timeout_ms) {
    void *buf;
    size_t len;
    int rc = zt_client_recv(c, &buf, &len, timeout_ms);
    if (rc != 1) fail_msg("client recv: rc %d (%s), want '%s'", rc, pl_error(), want);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void client_send(ZtClient *c, const char *msg) {
    assert_int_equal(zt_client_send(c, msg, strlen(msg), 1000), 0);
}

/* A request from c and the server's answer back to the sending peer. */
static void exchange(ZtServer *s, ZtClient *c, const char *req, const char *rep) {
    ZtPeer peer;
    client_send(c, req);
    expect_server(s, &peer, req, 3000);
    assert_int_equal(zt_server_send(s, &peer, rep, strlen(rep)), 0);
    expect_client(c, rep, 3000);
}

/* The server stays silent for ms: no frame gets through. */
static void expect_nothing(ZtServer *s, int ms) {
    ZtPeer peer;
    void *buf = NULL;
    size_t len;
    int rc = zt_server_recv(s, &peer, &buf, &len, ms);
    if (rc != 0) fail_msg("expected no frame, got rc %d (len %zu)", rc, len);
    free(buf);
}

/* -------------------------------------------------------------- fixture */

static int group_setup(void **state) {
    g_dir = tu_tmp_dir();
    const char *who[] = {"server", "alice", "carol", "mallory"};
    char pub[4][ZT_KEY_LEN + 1], sec[ZT_KEY_LEN + 1];
    for (int i = 0; i < 4; i++) {
        if (zt_keygen(pub[i], sec) < 0) {
            fprintf(stderr, "zt_keygen: %s\n", pl_error());
            return -1;
        }
        if (zt_key_write(tu_path("%s/%s", g_dir, who[i]), pub[i], sec) < 0) {
            fprintf(stderr, "zt_key_write: %s\n", pl_error());
            return -1;
        }
    }
    memcpy(g_server_pub, pub[0], sizeof g_server_pub);
    memcpy(g_carol_pub, pub[2], sizeof g_carol_pub);
    char text[512];
    snprintf(text, sizeof text,
             "# workers allowed to connect\n"
             "\n"
             "public-key = \"%s\"   # alice\n"
             "  %s\n",
             pub[1], pub[2]);
    return tu_write_file(tu_path("%s/authorized", g_dir), text, strlen(text));
}

/* ---------------------------------------------------------------- tests */

/* A frame goes client -> server -> client over tcp with the "*" port
 * resolved by the server (clients connect to zt_server_endpoint). */
static void test_roundtrip_tcp(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 0);
    const char *ep = zt_server_endpoint(s);
    assert_null(strchr(ep, '*'));
    assert_true(!strncmp(ep, "tcp://127.0.0.1:", 16) && atoi(ep + 16) > 0);
    ZtClient *c = client_new(s, NULL, NULL);
    exchange(s, c, "hello", "world");
    /* an empty frame is a frame too */
    ZtPeer peer;
    void *buf;
    size_t len;
    assert_int_equal(zt_client_send(c, "", 0, 1000), 0);
    assert_int_equal(zt_server_recv(s, &peer, &buf, &len, 3000), 1);
    assert_int_equal(len, 0);
    free(buf);
    zt_client_free(&c);
    zt_server_free(&s);
    assert_null(c);
    assert_null(s);

    /* a wildcard host resolves to 0.0.0.0, usable by a local client */
    s = server_new("tcp://*:*", 0, 0);
    assert_true(!strncmp(zt_server_endpoint(s), "tcp://0.0.0.0:", 14));
    c = client_new(s, NULL, NULL);
    exchange(s, c, "any", "host");
    zt_client_free(&c);
    zt_server_free(&s);
}

/* The same round trip over ipc://, a path in the scratch directory. */
static void test_roundtrip_ipc(void **state) {
    const char *ep = tu_path("ipc://%s/zt.sock", g_dir);
    ZtServer *s = server_new(ep, 0, 0);
    assert_string_equal(zt_server_endpoint(s), ep);
    ZtClient *c = client_new(s, NULL, NULL);
    exchange(s, c, "ping over ipc", "pong over ipc");
    zt_client_free(&c);
    zt_server_free(&s);
}

/* With two clients, the server sees each frame with its sender's identity
 * and an answer sent to that identity reaches that client only. */
static void test_two_clients(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 0);
    ZtClient *a = client_new(s, NULL, "alice"), *b = client_new(s, NULL, "bob");
    client_send(a, "from alice");
    client_send(b, "from bob");
    ZtPeer pa = {.len = 0}, pb = {.len = 0};
    for (int i = 0; i < 2; i++) {
        ZtPeer p;
        void *buf;
        size_t len;
        assert_int_equal(zt_server_recv(s, &p, &buf, &len, 3000), 1);
        if (len == 10 && !memcmp(buf, "from alice", 10)) pa = p;
        else if (len == 8 && !memcmp(buf, "from bob", 8)) pb = p;
        else fail_msg("unexpected frame of %zu bytes", len);
        free(buf);
    }
    assert_int_equal(pa.len, 5);
    assert_memory_equal(pa.id, "alice", 5);
    assert_int_equal(pb.len, 3);
    assert_memory_equal(pb.id, "bob", 3);
    char hex[64];
    assert_string_equal(zt_peer_str(&pb, hex, sizeof hex), "626f62");
    /* answer in the other order: matching is by identity, not arrival */
    assert_int_equal(zt_server_send(s, &pb, "to bob", 6), 0);
    assert_int_equal(zt_server_send(s, &pa, "to alice", 8), 0);
    expect_client(a, "to alice", 3000);
    expect_client(b, "to bob", 3000);
    /* a peer that never existed is no error: the frame is dropped */
    ZtPeer ghost = {.id = "ghost", .len = 5};
    assert_int_equal(zt_server_send(s, &ghost, "x", 1), 0);
    void *buf;
    size_t len;
    assert_int_equal(zt_client_recv(a, &buf, &len, 100), 0);
    assert_int_equal(zt_client_recv(b, &buf, &len, 100), 0);
    zt_client_free(&a);
    zt_client_free(&b);
    zt_server_free(&s);
}

/* A second client with an identity already connected takes over the
 * route, as a restarted worker must: answers to it reach the new client. */
static void test_identity_handover(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 0);
    ZtClient *old = client_new(s, NULL, "worker-0");
    exchange(s, old, "first life", "ok");
    ZtClient *fresh = client_new(s, NULL, "worker-0");
    exchange(s, fresh, "second life", "welcome back");
    void *buf;
    size_t len;
    assert_int_equal(zt_client_recv(old, &buf, &len, 100), 0);
    zt_client_free(&old);
    exchange(s, fresh, "still", "fine");
    zt_client_free(&fresh);
    zt_server_free(&s);
}

/* With nothing to receive, recv returns 0 after about the timeout, on the
 * server and on a client. */
static void test_recv_timeout(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 0);
    ZtClient *c = client_new(s, NULL, NULL);
    ZtPeer peer;
    void *buf = (void *)1;
    size_t len = 7;
    double t0 = now_ms();
    assert_int_equal(zt_server_recv(s, &peer, &buf, &len, 200), 0);
    double dt = now_ms() - t0;
    assert_null(buf);
    assert_int_equal(len, 0);
    if (dt < 190 || dt > 700) fail_msg("server recv waited %.0f ms for a 200 ms timeout", dt);
    t0 = now_ms();
    assert_int_equal(zt_client_recv(c, &buf, &len, 150), 0);
    dt = now_ms() - t0;
    if (dt < 140 || dt > 650) fail_msg("client recv waited %.0f ms for a 150 ms timeout", dt);
    assert_int_equal(zt_server_recv(s, &peer, &buf, &len, 0), 0);
    zt_client_free(&c);
    zt_server_free(&s);
}

static volatile sig_atomic_t g_alarms;
static void on_alarm(int sig) { g_alarms++; }

/* A signal (a handler installed without SA_RESTART, as a Ctrl-C handler
 * is) ends a long wait early with 0, so the caller can check its flags. */
static void test_signal_interrupts_recv(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 0);
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old);
    struct itimerval it = {.it_value = {0, 100 * 1000}};
    g_alarms = 0;
    setitimer(ITIMER_REAL, &it, NULL);
    ZtPeer peer;
    void *buf;
    size_t len;
    double t0 = now_ms();
    int rc = zt_server_recv(s, &peer, &buf, &len, 5000);
    double dt = now_ms() - t0;
    sigaction(SIGALRM, &old, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(g_alarms, 1);
    if (dt > 2000) fail_msg("the signal did not end the wait (%.0f ms)", dt);
    zt_server_free(&s);
}

/* A frame over max_message is reported as PL_ERANGE with its sender and
 * size and dropped; the server keeps serving, and the next normal frame
 * from the same client arrives. */
static void test_oversized_frame(void **state) {
    enum { MAX = 1024, BIG = 4096 };
    ZtServer *s = server_new("tcp://127.0.0.1:*", MAX, 0);
    ZtClient *c = client_new(s, NULL, "big");
    static char big[BIG];
    memset(big, 'x', sizeof big);
    assert_int_equal(zt_client_send(c, big, sizeof big, 1000), 0);
    ZtPeer peer = {.len = 0};
    void *buf = (void *)1;
    size_t len = 0;
    assert_int_equal(zt_server_recv(s, &peer, &buf, &len, 3000), PL_ERANGE);
    assert_null(buf);
    assert_int_equal(len, BIG);
    assert_int_equal(peer.len, 3);
    assert_memory_equal(peer.id, "big", 3);
    assert_non_null(strstr(pl_error(), zt_server_endpoint(s)));
    /* exactly max is fine */
    assert_int_equal(zt_client_send(c, big, MAX, 1000), 0);
    assert_int_equal(zt_server_recv(s, &peer, &buf, &len, 3000), 1);
    assert_int_equal(len, MAX);
    free(buf);
    /* the caller can answer the offender, and it still talks */
    assert_int_equal(zt_server_send(s, &peer, "too big", 7), 0);
    expect_client(c, "too big", 3000);
    exchange(s, c, "small", "ok");
    zt_client_free(&c);
    zt_server_free(&s);
}

/* A frame over ZeroMQ's hard limit (2 * max + 1 MiB) never reaches the
 * server (its sender is disconnected), and other clients are unaffected. */
static void test_over_hard_limit(void **state) {
    enum { MAX = 1024 };
    size_t huge = 2 * MAX + (1u << 20) + 1;
    ZtServer *s = server_new("tcp://127.0.0.1:*", MAX, 0);
    ZtClient *c = client_new(s, NULL, "huge");
    char *big = calloc(1, huge);
    assert_non_null(big);
    assert_int_equal(zt_client_send(c, big, huge, 1000), 0);
    free(big);
    expect_nothing(s, 300);
    ZtClient *d = client_new(s, NULL, "other");
    exchange(s, d, "still", "here");
    zt_client_free(&d);
    zt_client_free(&c);
    zt_server_free(&s);
}

/* CURVE: listed clients (by a public-key line, by a bare line) exchange
 * frames; a client with valid keys that is not listed is refused by the
 * ZAP handler (counted, its address and key kept), never delivers a
 * frame, and its receive fails at once saying why; a listed client still
 * works afterwards. The server key is given as a file and as bare Z85. */
static void test_curve(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 1);
    ZtClient *a = client_new(s, "alice", "alice");
    exchange(s, a, "secret hello", "secret reply");
    assert_int_equal(zt_server_refused(s), 0);

    ZtClient *m = client_new(s, "mallory", "mallory");
    client_send(m, "let me in");
    double t0 = now_ms();
    while (zt_server_refused(s) < 1 && now_ms() - t0 < 3000) expect_nothing(s, 50);
    assert_true(zt_server_refused(s) >= 1);
    expect_nothing(s, 200);
    /* both sides say what happened: the server names the refused key, the
     * client learns at once that its key is not authorized */
    char last[160];
    zt_server_last_refused(s, last, sizeof last);
    assert_non_null(strstr(last, "address 127.0.0.1"));
    assert_non_null(strstr(last, "key "));
    void *buf = NULL;
    size_t len = 0;
    t0 = now_ms();
    int rc = zt_client_recv(m, &buf, &len, 5000);
    assert_int_equal(rc, PL_EPEER);
    assert_true(now_ms() - t0 < 3000);
    assert_non_null(strstr(pl_error(), "transport.authorized_keys"));

    exchange(s, a, "still there?", "yes");
    ZtClientOptions o = {.endpoint = zt_server_endpoint(s), .server_key = g_server_pub,
                         .secret_key = key_path("carol", "key"), .identity = "carol"};
    ZtClient *c = NULL;
    assert_int_equal(zt_client_new(&c, &o), 0);
    exchange(s, c, "carol here", "hi carol");
    zt_client_free(&c);
    zt_client_free(&m);
    zt_client_free(&a);
    zt_server_free(&s);
}

/* A plain (NULL mechanism) client gets nothing through a CURVE server. */
static void test_curve_plain_client(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 1);
    ZtClient *p = client_new(s, NULL, "plain");
    client_send(p, "no keys");
    expect_nothing(s, 500);
    zt_client_free(&p);
    zt_server_free(&s);
}

/* Key files: written as documented (.key 0600 with both keys, .pub with
 * the public key), read back equal; a bare Z85 key is a public key; a
 * missing secret, a malformed line, mismatched keys and a bad line in an
 * authorized-keys file are PL_EFORMAT naming the file; CURVE without
 * the authorized-keys file is refused up front. */
static void test_key_files(void **state) {
    char pub[ZT_KEY_LEN + 1], sec[ZT_KEY_LEN + 1], p2[ZT_KEY_LEN + 1], s2[ZT_KEY_LEN + 1];
    assert_int_equal(zt_keygen(pub, sec), 0);
    assert_int_equal(strlen(pub), ZT_KEY_LEN);
    assert_int_equal(strlen(sec), ZT_KEY_LEN);
    const char *prefix = tu_path("%s/rt", g_dir);
    assert_int_equal(zt_key_write(prefix, pub, sec), 0);

    struct stat st;
    assert_int_equal(stat(key_path("rt", "key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char want[256];
    snprintf(want, sizeof want, "public-key = \"%s\"\nsecret-key = \"%s\"\n", pub, sec);
    char *text = tu_read_file(key_path("rt", "key"), NULL);
    assert_string_equal(text, want);
    free(text);
    snprintf(want, sizeof want, "public-key = \"%s\"\n", pub);
    text = tu_read_file(key_path("rt", "pub"), NULL);
    assert_string_equal(text, want);
    free(text);

    assert_int_equal(zt_key_read(key_path("rt", "key"), p2, s2), 0);
    assert_string_equal(p2, pub);
    assert_string_equal(s2, sec);
    assert_int_equal(zt_key_read(key_path("rt", "pub"), p2, NULL), 0);
    assert_string_equal(p2, pub);
    assert_int_equal(zt_key_read(pub, p2, NULL), 0); /* bare Z85 */
    assert_string_equal(p2, pub);

    assert_int_equal(zt_key_read(key_path("rt", "pub"), p2, s2), PL_EFORMAT);
    assert_non_null(strstr(pl_error(), "rt.pub"));

    const char *bad = tu_path("%s/bad.key", g_dir);
    const char *garbage = "public-key = \"not a key\"\n";
    assert_int_equal(tu_write_file(bad, garbage, strlen(garbage)), 0);
    assert_int_equal(zt_key_read(bad, p2, NULL), PL_EFORMAT);
    assert_non_null(strstr(pl_error(), "bad.key:1"));

    char other_pub[ZT_KEY_LEN + 1], other_sec[ZT_KEY_LEN + 1];
    assert_int_equal(zt_keygen(other_pub, other_sec), 0);
    snprintf(want, sizeof want, "public-key = \"%s\"\nsecret-key = \"%s\"\n", other_pub, sec);
    assert_int_equal(tu_write_file(bad, want, strlen(want)), 0);
    assert_int_equal(zt_key_read(bad, p2, s2), PL_EFORMAT);
    assert_non_null(strstr(pl_error(), "bad.key"));

    assert_int_equal(zt_key_read(tu_path("%s/missing.key", g_dir), p2, NULL), PL_EIO);
    assert_non_null(strstr(pl_error(), "missing.key"));

    /* an authorized-keys file with a broken third line */
    const char *auth = tu_path("%s/bad_authorized", g_dir);
    snprintf(want, sizeof want, "# ok\n%s\n%.39s\n", pub, pub);
    assert_int_equal(tu_write_file(auth, want, strlen(want)), 0);
    ZtServerOptions o = {.endpoint = "tcp://127.0.0.1:*",
                         .secret_key = key_path("server", "key"), .authorized_keys = auth};
    ZtServer *s = NULL;
    assert_int_equal(zt_server_new(&s, &o), PL_EFORMAT);
    assert_null(s);
    assert_non_null(strstr(pl_error(), "bad_authorized:3"));
    o.authorized_keys = NULL;
    assert_true(zt_server_new(&s, &o) < 0);
    assert_null(s);
}

/* Binding an endpoint another server holds fails with a message naming
 * it, and leaves nothing open. */
static void test_endpoint_in_use(void **state) {
    ZtServer *s = server_new("tcp://127.0.0.1:*", 0, 0);
    char ep[512];
    snprintf(ep, sizeof ep, "%s", zt_server_endpoint(s));
    int fds = count_fds();
    ZtServerOptions o = {.endpoint = ep};
    ZtServer *t = NULL;
    assert_true(zt_server_new(&t, &o) < 0);
    assert_null(t);
    if (!strstr(pl_error(), ep)) fail_msg("message does not name %s: %s", ep, pl_error());
    assert_int_equal(count_fds(), fds);
    ZtClientOptions co = {.endpoint = "nonsense://x"};
    ZtClient *c = NULL;
    assert_true(zt_client_new(&c, &co) < 0);
    assert_null(c);
    assert_non_null(strstr(pl_error(), "nonsense://x"));
    zt_server_free(&s);
}

/* Servers and clients, plain and CURVE, give back every descriptor
 * (sockets, ZeroMQ's eventfds, the ZAP thread's) when freed. */
static void test_no_fd_leak(void **state) {
    int before = count_fds();
    assert_true(before > 0);
    for (int round = 0; round < 2; round++) {
        ZtServer *s = server_new("tcp://127.0.0.1:*", 0, round);
        ZtClient *a = client_new(s, round ? "alice" : NULL, "alice");
        ZtClient *b = client_new(s, round ? "carol" : NULL, "carol");
        exchange(s, a, "a", "A");
        exchange(s, b, "b", "B");
        zt_client_free(&a);
        zt_client_free(&b);
        zt_server_free(&s);
    }
    assert_int_equal(count_fds(), before);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_tcp),
        cmocka_unit_test(test_roundtrip_ipc),
        cmocka_unit_test(test_two_clients),
        cmocka_unit_test(test_identity_handover),
        cmocka_unit_test(test_recv_timeout),
        cmocka_unit_test(test_signal_interrupts_recv),
        cmocka_unit_test(test_oversized_frame),
        cmocka_unit_test(test_over_hard_limit),
        cmocka_unit_test(test_curve),
        cmocka_unit_test(test_curve_plain_client),
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_endpoint_in_use),
        cmocka_unit_test(test_no_fd_leak),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
