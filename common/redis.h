/* redis.h: the Redis layer of preference-data ingestion (prefix rds_).
 *
 * Producer: records (opaque binary payloads) are appended to a Redis stream
 * with XADD, each under a content hash kept in the set `<stream>:seen`. The
 * check-and-add runs as one Lua script, so it is atomic on the server: a
 * crash (of us or of Redis) between the dedupe check and the XADD cannot
 * lose a record or store it twice, and re-ingesting a file adds nothing.
 * (Redis does not roll a failing script back, so the script writes the
 * record before its hash: a failed XADD leaves nothing behind.)
 * Lines that cannot be parsed go to the dead-letter stream `<stream>:dead`
 * with their line number and the reason.
 *
 * Consumers: rds_read serves consumers that share a group's work. rds_read hands out this
 * consumer's own unacknowledged entries first (after a restart), then
 * entries that crashed consumers left idle for min_idle_ms (XAUTOCLAIM),
 * then new ones. The caller acknowledges (rds_ack) only after the training
 * step that used the records has been checkpointed: delivery is
 * at-least-once and no record is lost.
 *
 * Keys used, for a stream S:
 *   S           stream of records, fields "rec" (payload) and "hash"
 *   S:seen      set of content hashes already appended
 *   S:dead      stream of dead letters, fields "line", "reason", "raw"
 *   S:dead:seen set of dead-letter hashes (so re-runs do not repeat them)
 *
 * All functions return 0 (PL_OK) or a negative PL_E* code after recording a
 * message (pl_error()) that names the operation and the server URL, with the
 * password redacted. A lost connection is PL_EIO; the RdsConn is then dead
 * and must be freed and connected again (nothing is retried behind the
 * caller's back, so a re-run decides what to resend). */
#ifndef PLUMB_REDIS_H
#define PLUMB_REDIS_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ URLs */

typedef struct {
    char host[256];     /* host name or address, brackets of [v6] removed */
    int port;           /* default 6379                                   */
    char user[128];     /* ACL user name, "" for the default user         */
    char password[256]; /* "" when none; %XX escapes decoded              */
    int db;             /* SELECT index, default 0                        */
} RdsUrl;

/* Parses redis://[[user]:password@]host[:port][/db]. A URL without a
 * password takes the one in the environment variable REDISCLI_AUTH (as
 * redis-cli does) when it is set. On error returns PL_EINVAL naming the
 * (redacted) URL and what is wrong. */
int rds_parse_url(const char *url, RdsUrl *out);

/* Writes the URL with its password replaced by "***" into buf (n bytes). */
void rds_url_redacted(const RdsUrl *u, char *buf, size_t n);

/* ------------------------------------------------------------ connection */

typedef struct RdsConn RdsConn;

/* Connects to url, authenticates (AUTH) and selects the db (SELECT); every
 * command then times out after timeout_s seconds. On error *out is NULL and
 * the message names the redacted URL and the step that failed. */
int rds_connect(RdsConn **out, const char *url, double timeout_s);

/* Closes the connection; *c becomes NULL. NULL is fine. */
void rds_free(RdsConn **c);

/* The URL with the password redacted, for messages. */
const char *rds_conn_url(const RdsConn *c);

/* 1 when the connection is gone (lost, timed out): free it and connect
 * again. A server's error reply leaves it usable. */
int rds_conn_lost(const RdsConn *c);

/* Number of entries in a stream (0 when it does not exist). */
int rds_stream_len(RdsConn *c, const char *stream, long long *n);

/* ---------------------------------------------------------- content hash */

#define RDS_HASH_HEX 33 /* 32 hex digits + NUL */

/* FNV-1a 128 (the published 128-bit parameters: offset basis
 * 0x6c62272e07bb014262b821756295c58d, prime 2^88 + 0x13b) of the payload,
 * written as 32 lowercase hex digits, most significant first. Not
 * cryptographic: it names records for deduplication, where a 128-bit hash
 * makes accidental collisions negligible (~n^2 / 2^129). */
void rds_hash_hex(const void *data, size_t len, char out[RDS_HASH_HEX]);

/* --------------------------------------------------------------- producer */

typedef struct {
    long long ingested;  /* records newly appended to the stream          */
    long long duplicate; /* records whose hash was already seen           */
    long long rejected;  /* lines sent to the dead-letter stream          */
} RdsSummary;

/* Appends payload (len bytes, any bytes) to stream under hash (a string,
 * e.g. from rds_hash_hex) unless the hash is already in `<stream>:seen`.
 * *added (may be NULL) is 1 when appended, 0 for a duplicate. */
int rds_append(RdsConn *c, const char *stream, const void *payload, size_t len,
               const char *hash, int *added);

typedef struct {
    const void *payload; /* record bytes, not copied                */
    size_t len;          /* bytes                                   */
    const char *hash;    /* content hash string                     */
} RdsItem;

/* Appends n items as rds_append would: 128 records per script call, all
 * calls pipelined (one round trip for the batch). added (n entries) and
 * sum (counts are added to) may be NULL. On error some items may already
 * be appended; re-running the same batch is safe because appends are
 * idempotent. */
int rds_append_batch(RdsConn *c, const char *stream, const RdsItem *items, int n, int *added,
                     RdsSummary *sum);

#define RDS_DEAD_RAW_MAX 4096 /* bytes of a bad line kept in a dead letter */

/* Keeps a bad input in `<stream>:dead`: fields at_field = at (where it came
 * from: "line" and a line number for ingestion, "entry" and a stream id
 * for a trainer), "reason", and "raw" = at most RDS_DEAD_RAW_MAX bytes of
 * raw. The same (at, raw) is stored once, so re-running an ingestion, or
 * resuming a run, does not repeat it. *added (may be NULL) says whether it
 * was new; sum->rejected (may be NULL) counts new ones. */
int rds_dead_letter(RdsConn *c, const char *stream, const char *at_field, const char *at,
                    const char *reason, const void *raw, size_t raw_len, int *added,
                    RdsSummary *sum);

/* SET key value NX: *have (cap bytes) gets the value the key holds
 * afterwards, value itself when it was not set before. What ties a stream
 * to the tokenizer of its records (`<stream>:tokenizer`). */
int rds_claim(RdsConn *c, const char *key, const char *value, char *have, size_t cap);

/* --------------------------------------------------------------- consumer */

#define RDS_ID_MAX 48 /* "ms-seq" stream ids: two 20-digit numbers */

typedef struct {
    char id[RDS_ID_MAX];    /* stream id, used to acknowledge            */
    void *payload;          /* owned copy (malloc), NUL-terminated too   */
    size_t len;             /* payload bytes (without the extra NUL)     */
    char hash[RDS_HASH_HEX];/* the "hash" field, truncated if longer     */
} RdsRecord;

/* Frees the payloads of recs[0..n) and zeroes them. */
void rds_records_clear(RdsRecord *recs, int n);

typedef struct RdsReader RdsReader;

#define RDS_DEFAULT_MIN_IDLE_MS 60000

/* Opens a reader for consumer `consumer` of group `group` on stream,
 * creating the group (reading from the stream's start, MKSTREAM) when it
 * does not exist. The reader borrows c, which must outlive it. Entries
 * idle longer than min_idle_ms (default RDS_DEFAULT_MIN_IDLE_MS) in other
 * consumers are claimed; it must exceed the caller's time from read to
 * ack, or live consumers' records get delivered twice. */
int rds_reader_open(RdsReader **out, RdsConn *c, const char *stream, const char *group,
                    const char *consumer);
void rds_reader_set_min_idle(RdsReader *r, long long min_idle_ms);
void rds_reader_free(RdsReader **r);

/* Reads up to max_count records into out (caller's array of max_count;
 * clear them with rds_records_clear). In order of preference: this
 * consumer's own pending entries (left by an earlier run of the same name),
 * entries claimed from idle consumers, then new entries, waiting up to
 * block_ms for them (block_ms <= 0: do not wait). *n = 0 when none. */
int rds_read(RdsReader *r, int max_count, int block_ms, RdsRecord *out, int *n);

/* Acknowledges ids[0..n) (XACK); *acked (may be NULL) is how many were
 * pending and are now acknowledged. Call after the checkpoint. */
int rds_ack(RdsReader *r, const char *const *ids, int n, long long *acked);

/* Entries delivered to the group and not yet acknowledged (XPENDING). */
int rds_pending(RdsReader *r, long long *n);

/* ----------------------------------------------------- a run's cursor */

/* A training run reads a stream in the stream's order, as one consumer of
 * its own group, from a cursor its checkpoints keep: the same content
 * gives the same batches, whenever the records arrived, and a resumed run
 * reads on from where its checkpoint was. Entries the group delivered
 * before (to an earlier life of the run) are read again by XRANGE, the
 * rest by XREADGROUP, which marks them delivered; XACK (rds_cursor_ack)
 * after the checkpoint that covers them. One run per group: a second
 * consumer would take entries this one then never sees. A plain struct,
 * so that it survives a reconnection (open it again on the new
 * connection with at = cur.at). */
typedef struct {
    char stream[256], group[128], consumer[128];
    char at[RDS_ID_MAX];        /* last id handed out ("0-0": none)          */
    char delivered[RDS_ID_MAX]; /* the group's last-delivered id             */
    long long pending;          /* the group's unacknowledged entries at open */
    long long lag;              /* entries the group has not had (-1: unknown) */
} RdsCursor;

/* Compares stream ids "ms-seq" (a bare "ms" is "ms-0"): < 0, 0, > 0. */
int rds_id_cmp(const char *a, const char *b);

/* The id of the stream's newest entry into out ("0-0" when it is empty or
 * missing): the end of what it holds now. */
int rds_last_id(RdsConn *c, const char *stream, char out[RDS_ID_MAX]);

/* Opens cur on stream for group (created at the stream's start, with the
 * stream, when missing) and consumer. at: the id to read after; NULL
 * starts at the group's last-delivered id (a new run joining a group
 * trains what the group has not had yet). */
int rds_cursor_open(RdsConn *c, RdsCursor *cur, const char *stream, const char *group,
                    const char *consumer, const char *at);

/* Sets the group back to the stream's start (XGROUP SETID 0) and the
 * cursor with it: a new run that reuses a group name reads everything
 * again. Entries still pending stay pending until acknowledged. */
int rds_cursor_rewind(RdsConn *c, RdsCursor *cur);

/* Up to max entries after cur->at, in stream order, into out (clear them
 * with rds_records_clear); *n = 0 when there are none. upto (may be NULL)
 * bounds the ids read; without it, a read of new entries waits up to
 * block_ms for some (<= 0: does not wait). Entries are handed out once:
 * cur->at moves past them. */
int rds_cursor_read(RdsConn *c, RdsCursor *cur, int max, const char *upto, int block_ms,
                    RdsRecord *out, int *n);

/* XACK of ids[0..n) in cur's group; *acked (may be NULL) counts those that
 * were pending. */
int rds_cursor_ack(RdsConn *c, const RdsCursor *cur, const char *const *ids, int n,
                   long long *acked);

/* Entries of the stream the group has not had yet (XINFO GROUPS' lag; -1
 * when Redis cannot tell, after deletions): what waits to be read. */
int rds_cursor_lag(RdsConn *c, const RdsCursor *cur, long long *n);

#endif
