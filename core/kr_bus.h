/* kr_bus.h: the message bus every hub send goes through (architecture: kr_bus, local / redis).
 *
 * Local bus (no backplane configured): a send is the hub's own fan-out (kr_hub_send_*), which
 * encodes lazily once per wire format. Nothing else happens.
 *
 * Redis bus (kr.backplane{} or --redis): a send first encodes the message once for each hub
 * protocol (a complete JSON record and a complete MessagePack record, framing included), then
 * 1. delivers to this server's own connections at once from those records (so local clients
 *    keep receiving while Redis is away, and in the sender's order), and
 * 2. publishes one inter-server message carrying both records on the channel <prefix>:bus.
 * Every server subscribes to that one channel, ignores its own publications (it delivered them
 * already: exactly once) and hands each other message to its hub's fan-out, which only frames
 * the received records per wire format (WebSocket frame, SSE event, long-poll body): nothing is
 * re-encoded per recipient, nor per server beyond that framing.
 * One channel (not ASP.NET Core's channel per group, connection and user) means no SUBSCRIBE
 * churn when groups change, and one ordered stream per sender whatever the targets; the cost
 * is that a group send reaches every server, which drops it when it has no member.
 *
 * send_to a connection that is not on this server is published and delivered by the server
 * that has it; groups and users are matched on every server, so they span servers.
 * Connection counts: each server keeps SET <prefix>:conns:<server id> "<n> <hub path>\n..."
 * EX 30, refreshed every 10 s; a cluster total is SCAN + MGET over those keys (asynchronous),
 * so a dead server's count disappears within 30 s.
 * While Redis is down, remote sends are dropped and counted (never queued); kr_redis
 * reconnects with back-off; the outage and the recovery are each logged once.
 *
 * Owns: the inter-server message format, the kr_redis pair, the count key and its timer.
 * Calls: kr_hub (fan-out, find), kr_redis, kr_log. Reaches the hubs of the layer above only
 * through kr_bus_ops_t.
 */
#ifndef KR_BUS_H
#define KR_BUS_H

#include "kr_buf.h"
#include "kr_hub.h"
#include "kr_server.h"

typedef struct kr_bus_s kr_bus_t;

typedef enum kr_bus_target_e {
    KR_BUS_ALL = 0,
    KR_BUS_GROUP = 1,
    KR_BUS_USER = 2,
    KR_BUS_CONN = 3,
} kr_bus_target_e;

/* ---- the inter-server message ----------------------------------------------------------
 * Binary, big-endian lengths:
 *   "KRB1" | u8 target | u8 origin_len origin | u16 hub_len hub | u16 name_len name
 *          | u32 json_len json | u32 mp_len mp
 * json is exactly one JSON record ending in 0x1E (the only 0x1E in it); mp is exactly one
 * varint-framed MessagePack record. Every byte is accounted for (nothing may follow). */
#define KR_BUS_MAX_ORIGIN 64
#define KR_BUS_MAX_HUB 511
#define KR_BUS_MAX_NAME 4096
#define KR_BUS_MAX_RECORD (16u << 20)

typedef struct kr_bus_msg_s {
    kr_bus_target_e target;
    const char *origin;
    size_t origin_len;
    const char *hub;
    size_t hub_len;
    const char *name; /* group, user or connection id; empty for KR_BUS_ALL */
    size_t name_len;
    const char *json;
    size_t json_len;
    const char *mp;
    size_t mp_len;
} kr_bus_msg_t;

/* Appends the encoded message. 0, or KR_ELIMIT when a field is over its limit. */
int kr_bus_msg_encode(const kr_bus_msg_t *m, kr_sbuf_t *sb);
/* Parses bytes received from Redis (peer bytes: every length is checked against what
 * remains). On success m's pointers are views into data. 0 or KR_EPROTO. */
int kr_bus_msg_decode(const void *data, size_t len, kr_bus_msg_t *m);

/* ---- the bus ----------------------------------------------------------------------------- */

typedef struct kr_bus_ops_s {
    /* The hub serving path on this server, or NULL. */
    kr_hub_t *(*find_hub)(void *ud, const char *path, size_t len);
    /* The hubs served (for the connection count key). */
    kr_hub_t *const *(*hubs)(void *ud, unsigned *n);
} kr_bus_ops_t;

typedef struct kr_bus_stats_s {
    uint64_t published; /* messages handed to Redis */
    uint64_t received;  /* messages from other servers delivered here */
    uint64_t dropped;   /* remote sends lost: Redis down, too much in flight, too large */
    uint64_t invalid;   /* messages on the channel that did not parse */
} kr_bus_stats_t;

kr_bus_t *kr_bus_new(kr_server_t *server, const kr_bus_ops_t *ops, void *ud);
/* Configures the Redis bus before kr_bus_start. url: redis://...; password overrides one in
 * the URL (NULL: none); prefix NULL: "kestrun". from_cli: the command line's --redis, whose URL
 * wins over a script's. 0 or KR_EINVAL (reason in err). */
int kr_bus_configure(kr_bus_t *bus, const char *url, const char *password, const char *prefix,
                     int from_cli, char *err, size_t errlen);
/* Whether kr_bus_configure with these arguments would change nothing (reload check). */
int kr_bus_same_config(const kr_bus_t *bus, const char *url, const char *password,
                       const char *prefix);
int kr_bus_configured(const kr_bus_t *bus);
int kr_bus_started(const kr_bus_t *bus);
/* Connects when configured (the server is serving); a no-op for the local bus. */
void kr_bus_start(kr_bus_t *bus);
/* Shutdown begins: removes this server's count key and disconnects. */
void kr_bus_stop(kr_bus_t *bus);
void kr_bus_free(kr_bus_t *bus);

/* Sends through the bus. name/len: the group, user or connection id (ignored for ALL).
 * *count: recipients on this server. Returns 0, an encoder error (nothing was sent), or for
 * KR_BUS_CONN: KR_ENOENT (no such connection here and no backplane) / KR_ECLOSED (not here and
 * the backplane is down). A publish lost while Redis is down is counted, not an error. */
int kr_bus_send(kr_bus_t *bus, kr_hub_t *hub, kr_bus_target_e target, const char *name,
                size_t len, const kr_sr_payload_t *p, unsigned *count);

/* Whether remote delivery works now (the Redis bus is up). */
int kr_bus_is_up(const kr_bus_t *bus);
/* 1 when a Redis bus is configured. */
int kr_bus_is_redis(const kr_bus_t *bus);
const kr_bus_stats_t *kr_bus_stats(const kr_bus_t *bus);
const char *kr_bus_server_id(const kr_bus_t *bus);

/* The cluster's connection count for hub: cb(ud, 0, n) or cb(ud, error, 0), never before
 * this returns... except on the local bus and while Redis is down, where it runs at once.
 * Returns a handle to cancel (NULL when cb already ran). */
typedef struct kr_bus_query_s kr_bus_query_t;
typedef void (*kr_bus_count_cb)(void *ud, int err, uint64_t count);
kr_bus_query_t *kr_bus_count(kr_bus_t *bus, kr_hub_t *hub, kr_bus_count_cb cb, void *ud);
/* cb will not run. */
void kr_bus_query_cancel(kr_bus_query_t *q);

#endif
