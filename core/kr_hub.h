/* kr_hub.h: SignalR hubs: negotiate, connections, built-in methods, groups, users and
 * broadcasting (the KestrunHub and IRealtimeBroadcaster of Kestrun).
 *
 * A hub owns its logical connections (kr_sr_conn_t): an index by id and by token, its groups
 * and users. A connection is bound to one transport (WebSockets; Server-Sent Events or long
 * polling, with POSTs for client messages) and one hub protocol (JSON today); its wire format decides which encoded bytes it takes from a broadcast.
 * Broadcasting encodes a message once per wire format into one refcounted buffer and queues a
 * reference on each recipient (architecture rule 2); slow recipients are dealt with by their
 * connection's watermarks, never by the broadcaster.
 *
 * Non-streaming invocations from one connection run one at a time, in order (ASP.NET Core's
 * MaximumParallelInvocationsPerClient = 1): further ones wait in a bounded queue, and the
 * connection stops reading while the queue is full.
 *
 * Calls: kr_http (negotiate, upgrade), kr_ws, kr_sr_json, kr_map. Calls up through the
 * kr_hub_app_t callbacks only (the Lua layer implements them).
 */
#ifndef KR_HUB_H
#define KR_HUB_H

#include "kr_buf.h"
#include "kr_http.h"
#include "kr_sr_json.h"

typedef struct kr_hub_s kr_hub_t;
typedef struct kr_sr_conn_s kr_sr_conn_t;

enum { KR_SR_TRANSPORT_WS = 1, KR_SR_TRANSPORT_SSE = 2, KR_SR_TRANSPORT_LP = 4 };
enum { KR_SR_PROTO_JSON = 1, KR_SR_PROTO_MSGPACK = 2 };

/* How bytes reach a connection: one encoded buffer per wire format per broadcast. */
typedef enum kr_sr_wire_e {
    KR_WIRE_WS_JSON = 0, /* WebSocket text frame holding JSON records */
    KR_WIRE_WS_MSGPACK,  /* WebSocket binary frame holding varint-framed msgpack records */
    KR_WIRE_SSE_JSON,    /* one Server-Sent Events event ("data: ...\r\n\r\n") of JSON records */
    KR_WIRE_RAW_JSON,    /* bare JSON records, queued for the next long poll */
    KR_WIRE_COUNT
} kr_sr_wire_e;

typedef struct kr_hub_opts_s {
    uint64_t keepalive_ms;          /* 15000: a Ping when nothing was sent for this long */
    uint64_t client_timeout_ms;     /* 30000: close when nothing was received for this long */
    uint64_t handshake_timeout_ms;  /* 15000 */
    uint64_t disconnect_timeout_ms; /* 15000: a negotiated connection never used is dropped, and a
                                       long-polling client that stops polling */
    uint64_t poll_timeout_ms;       /* 90000: a long poll with nothing to send answers empty */
    size_t max_message_bytes;       /* 32768: per parsed message, handshake included */
    unsigned transports;            /* KR_SR_TRANSPORT_* enabled */
    unsigned protocols;             /* KR_SR_PROTO_* enabled */
    int detailed_errors;            /* add the error text to error Completions */
    int builtins;                   /* JoinGroup / LeaveGroup / Echo */
    unsigned max_queued_invocations; /* 32: reading pauses while this many wait */
    size_t high_water, low_water, hard_limit; /* output queue limits per connection */
} kr_hub_opts_t;

void kr_hub_opts_default(kr_hub_opts_t *o);

/* Callbacks into the layer above. All optional; ud is the pointer given to kr_hub_new. */
typedef struct kr_hub_app_s {
    /* A client invocation. Return 0 after taking it (then call kr_sr_conn_complete exactly
     * once, now or later, with msg->invocation_id copied), or KR_ENOENT when the method is
     * unknown (the built-ins are tried next). msg is valid only during the call. */
    int (*invoke)(kr_hub_t *hub, kr_sr_conn_t *c, const kr_sr_msg_t *msg, void *ud);
    /* The handshake completed. */
    void (*connected)(kr_hub_t *hub, kr_sr_conn_t *c, void *ud);
    /* The connection ended (error is NULL for a clean close). The connection keeps its groups
     * until kr_sr_conn_disconnected_done; return 1 to call it later (from a fiber), or 0 and
     * the core finishes at once. */
    int (*disconnected)(kr_hub_t *hub, kr_sr_conn_t *c, const char *error, void *ud);
} kr_hub_app_t;

/* An outgoing message, encoded lazily per protocol: encode appends the complete record
 * (framing included: JSON + 0x1E, or varint + msgpack) to sb. Returns 0 or an error. */
typedef struct kr_sr_payload_s {
    int (*encode)(void *ud, int protocol, kr_sbuf_t *sb);
    void *ud;
} kr_sr_payload_t;

kr_hub_t *kr_hub_new(kr_server_t *server, const char *path, const kr_hub_opts_t *opts,
                     const kr_hub_app_t *app, void *ud);
/* Closes every connection at once and frees the hub (after the loop stopped serving). */
void kr_hub_free(kr_hub_t *hub);
const char *kr_hub_path(const kr_hub_t *hub);
/* Replaces the options (hot reload); existing connections keep their protocol and transport. */
void kr_hub_set_opts(kr_hub_t *hub, const kr_hub_opts_t *opts);
const kr_hub_opts_t *kr_hub_opts(const kr_hub_t *hub);

/* Answers req when its path belongs to the hub ({path}, {path}/negotiate). Returns 1 when it
 * took the request, 0 when the path is not the hub's. */
int kr_hub_handle_http(kr_hub_t *hub, kr_http_req_t *req);

/* Graceful shutdown: every connected client gets serverShutdown("Server stopping") and a
 * Close with allowReconnect, then its transport closes. */
void kr_hub_shutdown(kr_hub_t *hub);

/* Connected (handshaken, not closing) clients. */
unsigned kr_hub_connection_count(const kr_hub_t *hub);
kr_sr_conn_t *kr_hub_find(const kr_hub_t *hub, const char *id, size_t len);

/* Broadcasting. Each returns 0 (and the number of recipients in *count when not NULL), or an
 * error from the payload's encoder. Closing connections are skipped. */
int kr_hub_send_all(kr_hub_t *hub, const kr_sr_payload_t *p, unsigned *count);
int kr_hub_send_group(kr_hub_t *hub, const char *group, size_t len, const kr_sr_payload_t *p,
                      unsigned *count);
int kr_hub_send_user(kr_hub_t *hub, const char *user, size_t len, const kr_sr_payload_t *p,
                     unsigned *count);
/* One connection (KR_ENOENT when there is no such connected client). */
int kr_hub_send_to(kr_hub_t *hub, const char *id, size_t len, const kr_sr_payload_t *p);
int kr_sr_conn_send(kr_sr_conn_t *c, const kr_sr_payload_t *p);

/* Groups: names are case-sensitive (as in ASP.NET Core). Return 0, KR_ECLOSED, or KR_ELIMIT
 * for a name longer than 1 KiB. Adding twice or removing a non-member is not an error. */
int kr_hub_group_add(kr_hub_t *hub, kr_sr_conn_t *c, const char *group, size_t len);
int kr_hub_group_remove(kr_hub_t *hub, kr_sr_conn_t *c, const char *group, size_t len);

/* Connections */
void kr_sr_conn_ref(kr_sr_conn_t *c);
void kr_sr_conn_unref(kr_sr_conn_t *c);
const char *kr_sr_conn_id(const kr_sr_conn_t *c);
const char *kr_sr_conn_user(const kr_sr_conn_t *c); /* NULL when anonymous */
kr_hub_t *kr_sr_conn_hub(const kr_sr_conn_t *c);
int kr_sr_conn_is_open(const kr_sr_conn_t *c); /* connected and not closing */
/* Finishes an invocation taken by app->invoke. invocation_id NULL: fire-and-forget, nothing
 * is sent. Otherwise a Completion with the raw JSON result (NULL: null), or with error. */
void kr_sr_conn_complete(kr_sr_conn_t *c, const char *invocation_id, const char *result_json,
                         size_t result_len, const char *error);
/* The deferred end of app->disconnected: groups and users are released. */
void kr_sr_conn_disconnected_done(kr_sr_conn_t *c);
/* Ends the connection: a Close message (error may be NULL), then the transport closes. */
void kr_sr_conn_close(kr_sr_conn_t *c, const char *error, int allow_reconnect);
/* The same, for a connection whose on_connected failed: app->disconnected is not called (as
 * ASP.NET Core skips OnDisconnectedAsync when OnConnectedAsync threw). */
void kr_sr_conn_abort(kr_sr_conn_t *c, const char *error);

#endif
