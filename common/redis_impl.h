/* redis_impl.h: what redis.c (connection, URLs, producer) and
 * redis_read.c (consumers) share. Private to common/. */
#ifndef PLUMB_REDIS_IMPL_H
#define PLUMB_REDIS_IMPL_H

#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "common/redis.h"

struct RdsConn {
    redisContext *ctx;
    struct timeval timeout; /* per-command timeout                  */
    char url[600];          /* redacted, for messages               */
    char append_sha[41];    /* SHA1 of the append script            */
    char many_sha[41];      /* SHA1 of the batch append script      */
    char dead_sha[41];      /* SHA1 of the dead-letter script       */
};

/* Sends one command; NULL without sending on a dead connection. */
redisReply *rds_command(RdsConn *c, int argc, const char **argv, const size_t *lens);
/* Checks a reply: NULL -> PL_EIO naming the lost connection, an error
 * reply -> PL_EIO with the server's message (r freed). op names the
 * command in the message. */
int rds_check(RdsConn *c, redisReply *r, const char *op);
/* PL_EFORMAT: r is not of the type wanted (r freed). */
int rds_bad_type(RdsConn *c, redisReply *r, const char *op, const char *want);
/* rds_check, and a status reply (r freed). */
int rds_expect_ok(RdsConn *c, redisReply *r, const char *op);
/* stream + suffix, malloc'ed (NULL: out of memory). */
char *rds_key2(const char *stream, const char *suffix);

#endif
