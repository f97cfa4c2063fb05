/* kr_redis.h: the hiredis glue of the Redis backplane: two asynchronous connections to one
 * Redis server on the server's libuv loop, one subscribed to a channel, one for commands
 * (PUBLISH, SET, SCAN, MGET).
 *
 * Nothing here blocks the loop: the host name is resolved with uv_getaddrinfo and hiredis
 * gets the numeric address; hiredis's async context runs on our own libuv event adapter (see
 * kr_redis.c for why not Debian's adapters/libuv.h). The pair is
 * "up" once the command connection answered its first command (AUTH/SELECT/PING) and the
 * subscription is confirmed. When either connection fails, both are torn down and the pair
 * reconnects with exponential back-off (100 ms doubling to 5 s); the up and down callbacks tell
 * the owner, which logs the outage once and the recovery once. A PING every 5 s on the command
 * connection finds a Redis that stopped answering without closing the socket.
 *
 * Nothing is buffered without bound: while the pair is down, publishes fail at once
 * (KR_ECLOSED); while it is up, bytes handed to hiredis but not yet acknowledged by Redis are
 * capped (KR_ELIMIT past max_pending_bytes). The caller counts what it drops.
 *
 * Owns: both hiredis contexts, the back-off and health timers, the resolver request. Calls:
 * hiredis, libuv, kr_log. Reports upward through kr_redis_cbs_t only.
 */
#ifndef KR_REDIS_H
#define KR_REDIS_H

#include "kr_common.h"

struct redisReply;
typedef struct kr_redis_s kr_redis_t;

typedef struct kr_redis_opts_s {
    char host[256];
    int port;     /* 6379 */
    int db;       /* SELECT db when not 0 */
    char user[128];     /* AUTH user password (Redis 6 ACL) when both are set */
    char password[256]; /* AUTH password when set */
    size_t max_pending_bytes; /* published bytes Redis has not acknowledged yet (16 MiB) */
} kr_redis_opts_t;

/* Parses redis://[[user]:password@]host[:port][/db] into o (the other fields keep their
 * values). Returns 0, or KR_EINVAL with a reason in err. */
int kr_redis_parse_url(const char *url, kr_redis_opts_t *o, char *err, size_t errlen);

typedef struct kr_redis_cbs_s {
    /* A message on the subscribed channel (bytes valid during the call). */
    void (*message)(void *ud, const char *data, size_t len);
    /* Both connections are ready (first time, or after an outage). */
    void (*up)(void *ud);
    /* The pair went down (was up), or an attempt to connect failed; why says what happened. */
    void (*down)(void *ud, const char *why);
} kr_redis_cbs_t;

/* A command's reply: NULL when the connection went away before it came. */
typedef void (*kr_redis_reply_cb)(void *ud, const struct redisReply *reply);

kr_redis_t *kr_redis_new(uv_loop_t *loop, const kr_redis_opts_t *o, const char *channel,
                         const kr_redis_cbs_t *cbs, void *ud);
/* Begins connecting (idempotent). */
void kr_redis_start(kr_redis_t *r);
int kr_redis_is_up(const kr_redis_t *r);
/* PUBLISH channel data. 0, KR_ECLOSED (down) or KR_ELIMIT (too many bytes in flight). */
int kr_redis_publish(kr_redis_t *r, const char *data, size_t len);
/* Any command on the command connection; cb runs exactly once (reply NULL when the connection
 * dropped or the pair is down: then it runs before this returns). */
void kr_redis_command(kr_redis_t *r, kr_redis_reply_cb cb, void *ud, int argc, const char **argv,
                      const size_t *argvlen);
/* Stops reconnecting and closes both connections; commands already queued on the command
 * connection are still written (a last DEL) before it closes. No callback runs after it
 * returns except the reply callbacks of those commands. */
void kr_redis_stop(kr_redis_t *r);
/* Closes everything at once and frees r when its handles have closed (the loop must run). */
void kr_redis_free(kr_redis_t *r);

#endif
