/* transport.h: ZeroMQ framing between the coordinator and its workers.
 *
 * The coordinator owns one ZtServer: a ROUTER socket bound to tcp:// or
 * ipc://. Each worker owns ZtClients: DEALER sockets that connect to it.
 * A message is one frame (a packed Envelope, common/wire.h); the server
 * sees it with the sending peer's routing identity and answers to that
 * identity.
 *
 * Size: frames over max_message bytes are refused by the receiver: the
 * server reports them (with the peer, so the caller can answer with an
 * error) and drops them; ZeroMQ itself disconnects a peer whose frame is
 * over 2 * max_message + 1 MiB, so memory stays bounded.
 *
 * CURVE: with a server secret key, the server speaks CURVE and runs a ZAP
 * handler (a thread of the server) that admits only clients whose public
 * keys are listed in the authorized-keys file; others are refused during
 * the handshake (zt_server_refused counts them) and never deliver a frame.
 * Clients then need the server's public key and a key pair of their own.
 * Keys are Z85 text (40 characters).
 *
 * Every ZtServer and ZtClient has its own ZeroMQ context (ZAP is per
 * context, so servers in one process do not share a handler). Closing one
 * waits at most 100 ms for frames still queued. A multi-frame message from
 * a foreign peer is dropped. */
#ifndef PLUMB_TRANSPORT_H
#define PLUMB_TRANSPORT_H

#include <stddef.h>

#define ZT_KEY_LEN 40            /* Z85 characters of a CURVE key */
#define ZT_PEER_MAX 256          /* bytes of a routing identity   */

/* ------------------------------------------------------------------ keys */

/* A new CURVE key pair (Z85, NUL-terminated). PL_ENOTSUP when libzmq was
 * built without CURVE. */
int zt_keygen(char pub[ZT_KEY_LEN + 1], char sec[ZT_KEY_LEN + 1]);

/* Writes PREFIX.key (the secret and public key, mode 0600) and PREFIX.pub
 * (the public key) as text files of the form
 *     public-key = "<z85>"
 *     secret-key = "<z85>"      (only in .key)
 * Fails with PL_EIO naming the file; an existing file is replaced. */
int zt_key_write(const char *prefix, const char pub[ZT_KEY_LEN + 1],
                 const char sec[ZT_KEY_LEN + 1]);

/* Reads a key file written by zt_key_write (either kind): the public key
 * into pub and, when sec != NULL, the secret key (PL_EFORMAT naming the
 * file when it has none or a key is malformed). A bare 40-character Z85
 * string instead of a path is accepted as a public key (when no file of
 * that name exists). In a file, '#' lines are comments and a bare Z85 line
 * is a public key; a public key that does not belong to the secret key is
 * PL_EFORMAT; a file with only a secret key gets its public key derived. */
int zt_key_read(const char *path, char pub[ZT_KEY_LEN + 1], char sec[ZT_KEY_LEN + 1]);

/* ---------------------------------------------------------------- server */

typedef struct ZtServer ZtServer;

typedef struct {
    const char *endpoint;        /* "tcp://127.0.0.1:5555", "tcp://0.0.0.0:*" (any port),
                                    "ipc:///tmp/x"                                  */
    const char *secret_key;      /* a .key file: enables CURVE; NULL: plain          */
    const char *authorized_keys; /* file of client public keys, one per line (Z85 or
                                    key-file lines; '#' comments); needed with CURVE */
    size_t max_message;          /* bytes; 0: WIRE_MAX_MESSAGE_DEFAULT              */
} ZtServerOptions;

typedef struct {
    unsigned char id[ZT_PEER_MAX];
    size_t len;
} ZtPeer;

/* Binds. On error (endpoint in use, bad key files) returns < 0 with a
 * message naming the endpoint or file (a bad line as FILE:LINE); nothing
 * is left open. secret_key and authorized_keys go together (PL_EINVAL
 * otherwise); an authorized-keys file with no key is PL_EFORMAT. A client
 * connecting with an identity already in use takes over its route (a
 * restarted worker replaces its dead predecessor). */
int zt_server_new(ZtServer **out, const ZtServerOptions *o);
void zt_server_free(ZtServer **s);

/* The endpoint actually bound (a "*" port resolved), for clients:
 * "tcp://127.0.0.1:41234". A wildcard host stays "0.0.0.0", which clients
 * on the same host can use. */
const char *zt_server_endpoint(const ZtServer *s);

/* Waits up to timeout_ms (-1: forever) for a frame. Returns 1 with *buf
 * (malloc'ed, caller frees) and *len filled and *peer set; 0 on timeout;
 * PL_ERANGE with *peer set and *len the frame's size (no buffer) for a
 * frame over max_message (the frame is dropped). A signal interrupting
 * the wait returns 0. Other errors < 0. */
int zt_server_recv(ZtServer *s, ZtPeer *peer, void **buf, size_t *len, int timeout_ms);

/* Sends one frame to peer. A peer that has gone away is not an error
 * (the frame is dropped: ROUTER semantics); returns < 0 on other failures. */
int zt_server_send(ZtServer *s, const ZtPeer *peer, const void *buf, size_t len);

/* Clients the ZAP handler refused so far (CURVE only). */
long zt_server_refused(const ZtServer *s);
/* "address A, key Z85" of the latest refused client ("" when none). */
void zt_server_last_refused(ZtServer *s, char *out, size_t cap);

/* A printable form of a peer identity (hex), for messages. */
const char *zt_peer_str(const ZtPeer *p, char *out, size_t cap);

/* ---------------------------------------------------------------- client */

typedef struct ZtClient ZtClient;

typedef struct {
    const char *endpoint;        /* the server's endpoint                           */
    const char *server_key;      /* server public key (file or Z85): enables CURVE  */
    const char *secret_key;      /* this client's .key file (needed with CURVE)     */
    const char *identity;        /* routing identity, 1..255 bytes (NULL: ZeroMQ
                                    picks one)                                      */
    size_t max_message;          /* bytes; 0: WIRE_MAX_MESSAGE_DEFAULT              */
} ZtClientOptions;

/* Connects (asynchronously, as ZeroMQ does: a server not yet up is fine).
 * server_key and secret_key go together (PL_EINVAL otherwise). A bad
 * endpoint fails here naming it; a refused handshake does not fail: frames
 * then simply never arrive. */
int zt_client_new(ZtClient **out, const ZtClientOptions *o);
void zt_client_free(ZtClient **c);

/* Sends one frame; waits at most timeout_ms for room in the queue
 * (-1: forever). PL_EIO naming the endpoint on timeout or when a signal
 * interrupts the wait. Frames are queued before the connection is up. */
int zt_client_send(ZtClient *c, const void *buf, size_t len, int timeout_ms);

/* As zt_server_recv, without a peer. */
int zt_client_recv(ZtClient *c, void **buf, size_t *len, int timeout_ms);

#endif
