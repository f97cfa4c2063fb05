/* kr_hub.h: SignalR hubs: negotiate, connections, built-in methods, groups, users and
 * broadcasting (the KestrunHub and IRealtimeBroadcaster of Kestrun).
 *
 * A hub owns its logical connections (kr_sr_conn_t): an index by id and by token, its groups
 * and users. A connection is bound to one transport (WebSockets; Server-Sent Events or long
 * polling, with POSTs for client messages) and one hub protocol (JSON or MessagePack); its wire
 * format decides which encoded bytes it takes from a broadcast.
 * Broadcasting encodes a message once per wire format into one refcounted buffer and queues a
 * reference on each recipient (architecture rule 2); slow recipients are dealt with by their
 * connection's watermarks, never by the broadcaster.
 *
 * Non-streaming invocations from one connection run one at a time, in order (ASP.NET Core's
 * MaximumParallelInvocationsPerClient = 1): further ones wait in a bounded queue, and the
 * connection stops reading while the queue is full.
 *
 * Calls: kr_http (negotiate, upgrade), kr_ws, kr_sr_json, kr_sr_msgpack, kr_map. Calls up through the
 * kr_hub_app_t callbacks only (the Lua layer implements them).
 * Implemented by kr_hub.c, kr_sr_negotiate.c, kr_sr_sse.c, kr_sr_lp.c and kr_sr_calls.c, which
 * share kr_hub_int.h.
 */
#ifndef KR_HUB_H
#define KR_HUB_H

#include "kr_buf.h"
#include "kr_http.h"
#include "kr_sr_json.h"
#include "kr_sr_msgpack.h"

typedef struct kr_hub_s kr_hub_t;
typedef struct kr_sr_conn_s kr_sr_conn_t;

enum { KR_SR_TRANSPORT_WS = 1, KR_SR_TRANSPORT_SSE = 2, KR_SR_TRANSPORT_LP = 4 };

/* How bytes reach a connection: one encoded buffer per wire format per broadcast. */
typedef enum kr_sr_wire_e {
    KR_WIRE_WS_JSON = 0, /* WebSocket text frame holding JSON records */
    KR_WIRE_WS_MSGPACK,  /* WebSocket binary frame holding varint-framed msgpack records */
    KR_WIRE_SSE_JSON,    /* one Server-Sent Events event ("data: ...\r\n\r\n") of JSON records */
    KR_WIRE_RAW_JSON,    /* bare JSON records, queued for the next long poll */
    KR_WIRE_RAW_MSGPACK, /* bare varint-framed msgpack records, for the next long poll */
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
    unsigned stream_buffer_capacity; /* 10: items buffered per upload stream before reading pauses */
    unsigned max_streams;           /* 128: server streams + upload streams + client results
                                       in flight per connection */
    uint64_t client_result_timeout_ms; /* 30000: ctx:invoke gives up after this long */
    int stateful_reconnect;         /* allow withStatefulReconnect() (WebSockets only) */
    size_t stateful_buffer_bytes;   /* 100000: unacknowledged bytes kept for a reconnect */
    size_t high_water, low_water, hard_limit; /* output queue limits per connection */
} kr_hub_opts_t;

void kr_hub_opts_default(kr_hub_opts_t *o);

/* Who sent a hub HTTP request, as the app's authorize callback decided (kr_hub_http_continue).
 * The connection a request creates (negotiate, or a WebSocket upgrade with skipNegotiation)
 * keeps it for its whole life: name joins kr_hub_send_user's users, claims_json is what the
 * app reads back with kr_sr_conn_claims. Every later transport request of that connection
 * must come from the same name (NULL: anonymous), else it gets 403. */
typedef struct kr_hub_principal_s {
    const char *name;        /* NULL: anonymous */
    const char *claims_json; /* a JSON object (copied), or NULL */
    int64_t close_at_ms;     /* wall clock (ms since the epoch) at which a connected client is
                                closed because its credentials expired; 0: never */
} kr_hub_principal_t;

/* Callbacks into the layer above. All optional; ud is the pointer given to kr_hub_new. */
typedef struct kr_hub_app_s {
    /* Every HTTP request to the hub (negotiate and each transport request: WebSocket upgrade,
     * SSE GET, long-polling GET/POST/DELETE) goes here first when set. The app authenticates
     * it and then, exactly once, now or later (from a fiber), either calls
     * kr_hub_http_continue(hub, req, principal) or answers req itself (401, 403). It holds a
     * reference on req while it works. */
    void (*authorize)(kr_hub_t *hub, kr_http_req_t *req, void *ud);
    /* A client invocation. Return 0 after taking it (then call kr_sr_conn_complete exactly
     * once, now or later, with msg->invocation_id copied), or KR_ENOENT when the method is
     * unknown (the built-ins are tried next). msg is valid only during the call. */
    int (*invoke)(kr_hub_t *hub, kr_sr_conn_t *c, const kr_sr_msg_t *msg, void *ud);
    /* The handshake completed. */
    void (*connected)(kr_hub_t *hub, kr_sr_conn_t *c, void *ud);
    /* (invoke also receives StreamInvocations (type 4): the app answers the streaming /
     * non-streaming mismatch itself; KR_ENOENT sends "Unknown hub method".) */
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
/* The second half of kr_hub_handle_http once app->authorize accepted req (p NULL: anonymous).
 * Does nothing when req's connection is gone; 503 when the hub is shutting down. */
void kr_hub_http_continue(kr_hub_t *hub, kr_http_req_t *req, const kr_hub_principal_t *p);

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
const char *kr_sr_conn_claims(const kr_sr_conn_t *c); /* JSON object text, or NULL */
kr_hub_t *kr_sr_conn_hub(const kr_sr_conn_t *c);
int kr_sr_conn_is_open(const kr_sr_conn_t *c); /* connected and not closing */
/* Finishes an invocation taken by app->invoke. invocation_id NULL: fire-and-forget, nothing
 * is sent. Otherwise a Completion with the raw JSON result (NULL: null), or with error. */
void kr_sr_conn_complete(kr_sr_conn_t *c, const char *invocation_id, const char *result_json,
                         size_t result_len, const char *error);
/* The hub protocol the client chose (KR_SR_PROTO_*; 0 before the handshake). */
int kr_sr_conn_protocol(const kr_sr_conn_t *c);
/* Sends records the caller encoded in the connection's protocol (stream items, completions,
 * invocations that expect a result). trackable: how many of them are messages of types 1-5
 * (stateful reconnect numbers those). Takes sb's content. 0 or KR_ECLOSED. */
int kr_sr_conn_send_encoded(kr_sr_conn_t *c, kr_sbuf_t *sb, unsigned trackable);

/* Ends a server stream: a Completion without a result, or with error (NULL: none), in the
 * connection's protocol. Nothing when the connection is no longer open. */
void kr_sr_conn_end_stream(kr_sr_conn_t *c, const char *invocation_id, const char *error);

/* ---- streams and client results in flight (kr_sr_calls.c) ------------------------------ */

/* Server-to-client streams: the app registers the StreamInvocation it runs; a
 * CancelInvocation from the client, or the connection ending, calls cancel once (not after
 * kr_sr_stream_end). Items and the final Completion are the app's to send. Returns 0,
 * KR_EEXIST ("Invocation ID 'x' is already in use.") or KR_ELIMIT (max_streams). */
typedef void (*kr_sr_cancel_cb)(kr_sr_conn_t *c, void *ud);
int kr_sr_stream_begin(kr_sr_conn_t *c, const char *invocation_id, kr_sr_cancel_cb cancel,
                       void *ud);
void kr_sr_stream_end(kr_sr_conn_t *c, const char *invocation_id);

/* Client-to-server (upload) streams: the core opens one per stream id of an invocation before
 * calling app->invoke and buffers up to stream_buffer_capacity items each (reading pauses
 * beyond). The method reads them by id; it closes each when done. */
typedef struct kr_sr_upload_s kr_sr_upload_t;
kr_sr_upload_t *kr_sr_upload_find(kr_sr_conn_t *c, const char *stream_id);
/* 1: the next item's message is moved into *item (read item->item / item->mp_item, then
 * dispose it); 0: nothing buffered yet (see kr_sr_upload_wait); -1: the stream is over,
 * *error NULL when the client completed it, else its error text (valid until close). */
int kr_sr_upload_next(kr_sr_upload_t *u, kr_sr_msg_t *item, const char **error);
/* Calls cb once, when kr_sr_upload_next would no longer return 0 (an item, the end, or the
 * connection ending). One waiter at a time; ud NULL cancels the wait. */
void kr_sr_upload_wait(kr_sr_upload_t *u, void (*cb)(void *ud), void *ud);
void kr_sr_upload_close(kr_sr_upload_t *u);
/* Closes every upload stream invocation m names (an invocation refused before its method ran). */
void kr_sr_uploads_close(kr_sr_conn_t *c, const kr_sr_msg_t *m);

/* Client results: registers a result the server awaits and writes its fresh invocation id into
 * id (at least 24 bytes); the caller then sends the Invocation with that id
 * (kr_sr_conn_send_encoded). cb runs exactly once: with the client's Completion (result: the
 * message, error NULL; or the client's error text), or with result NULL and an error when
 * timeout_ms passes or the connection ends. While results are awaited the connection keeps
 * reading so the Completion can arrive (the one-invocation-at-a-time rule cannot deadlock).
 * Returns 0, KR_ECLOSED or KR_ELIMIT. */
typedef void (*kr_sr_result_cb)(kr_sr_conn_t *c, const kr_sr_msg_t *result, const char *error,
                                void *ud);
int kr_sr_result_expect(kr_sr_conn_t *c, char *id, uint64_t timeout_ms, kr_sr_result_cb cb,
                        void *ud);
/* The waiter is gone (its fiber was cancelled): forget the result without calling back. */
void kr_sr_result_forget(kr_sr_conn_t *c, const char *id);

/* The deferred end of app->disconnected: groups and users are released. */
void kr_sr_conn_disconnected_done(kr_sr_conn_t *c);
/* Ends the connection: a Close message (error may be NULL), then the transport closes. */
void kr_sr_conn_close(kr_sr_conn_t *c, const char *error, int allow_reconnect);
/* The same, for a connection whose on_connected failed: app->disconnected is not called (as
 * ASP.NET Core skips OnDisconnectedAsync when OnConnectedAsync threw). */
void kr_sr_conn_abort(kr_sr_conn_t *c, const char *error);

#endif
