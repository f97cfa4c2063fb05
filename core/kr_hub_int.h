/* kr_hub_int.h: the hub's internal structures, shared by the files that implement hubs
 * (kr_hub.c: connections, routing of the HTTP endpoints, the WebSocket transport, dispatch,
 * fan-out, timers; kr_sr_negotiate.c: negotiate; kr_sr_sse.c and kr_sr_lp.c: the Server-Sent
 * Events and long-polling transports; kr_sr_calls.c: streams and client results in flight).
 * Nothing outside core/kr_hub*.c and those core/kr_sr_*.c files includes it.
 */
#ifndef KR_HUB_INT_H
#define KR_HUB_INT_H

#include "kr_hub.h"
#include "kr_list.h"
#include "kr_map.h"
#include "kr_server.h"
#include "kr_ws.h"

#define MAX_GROUP_NAME 1024
#define ID_LEN 22 /* 16 random bytes, base64url without padding */

typedef enum sr_state_e {
    SR_NEGOTIATED = 0,
    SR_HANDSHAKING,
    SR_CONNECTED,
    SR_CLOSING, /* transport closing; on_disconnected may still run */
    SR_CLOSED,  /* out of the hub */
} sr_state_e;

typedef struct group_s {
    char *name;
    kr_sr_conn_t **members;
    unsigned n, cap;
} group_t;

typedef struct membership_s {
    group_t *g;
    unsigned idx; /* position in g->members */
} membership_t;

typedef struct queued_msg_s {
    kr_list_t link;
    kr_sr_msg_t msg;
} queued_msg_t;

/* One sent delivery unit kept for stateful reconnect until the client acknowledges it. */
typedef struct replay_unit_s {
    kr_list_t link;
    kr_buf_t *unit;
    int64_t first_seq, last_seq; /* the trackable messages it carries (last < first: none) */
} replay_unit_t;

struct kr_sr_conn_s {
    kr_hub_t *hub;
    uint32_t refs;
    sr_state_e state;
    char id[ID_LEN + 1];
    char token[ID_LEN + 1];
    int transport;
    int protocol;
    kr_sr_wire_e wire;
    kr_ws_t *ws;
    kr_conn_t *sse; /* the event-stream response's connection (Server-Sent Events) */
    /* long polling */
    kr_outq_t lp_queue;      /* delivery units waiting for a poll */
    kr_http_req_t *poll;     /* the poll being held, or NULL */
    uint64_t poll_since_ms;  /* when the held poll arrived, or when the last one was answered */
    int lp_ended;            /* the logical connection is over: the next poll gets 204 */
    kr_list_t lp_ready_link; /* hub->lp_ready: a held poll has something to answer with */
    kr_http_req_t *held_post; /* a POST answered only once its bytes are consumed (back-pressure) */
    kr_list_t resume_link;    /* hub->resume_ready: reading may resume at the next turn */
    char *user;
    char *claims;        /* the principal's claims as JSON (kr_sr_conn_claims), or NULL */
    int64_t close_at_ms; /* wall clock: close when the credentials expire (0: never) */
    membership_t user_m; /* g == NULL when anonymous */
    membership_t *groups;
    unsigned ngroups, capgroups;
    kr_sbuf_t inbuf;    /* received bytes not yet parsed into records */
    int busy;           /* an invocation is running */
    kr_list_t queue;    /* queued_msg_t waiting for the running one */
    unsigned nqueued;
    int paused;         /* reading stopped (queue or an upload buffer full) */
    int got_ping;       /* the client timeout is armed by the first Ping */
    int disconnect_pending;
    int connected_once;  /* the handshake completed: on_disconnected is owed */
    char *close_error;   /* why the server closed it (for on_disconnected) */
    uint64_t created_ms, last_recv_ms, last_send_ms;
    /* streams and client results in flight (kr_sr_calls.c) */
    kr_list_t calls;
    unsigned ncalls;
    unsigned npending_results; /* client results awaited: reading must go on */
    unsigned full_uploads;     /* upload streams at capacity: reading pauses */
    uint64_t next_call_id;
    /* stateful reconnect (WebSockets only) */
    int stateful_offered;   /* negotiate said useStatefulReconnect */
    int stateful;           /* the handshake turned it on */
    int detached;           /* the socket dropped; waiting for the client to reattach */
    uint64_t detached_ms;
    int64_t send_seq;       /* last sequence number given to an outgoing trackable message */
    int64_t recv_seq;       /* sequence number of the last received trackable message */
    int64_t recv_done;      /* highest one processed (later duplicates are dropped) */
    int64_t acked_sent;     /* last Ack we sent */
    kr_list_t replay;       /* replay_unit_t, oldest first */
    size_t replay_bytes;
    kr_list_t held;         /* replay_unit_t not yet sent: the replay buffer was full */
    size_t held_bytes;
    kr_list_t link;     /* hub->conns */
};

struct kr_hub_s {
    kr_server_t *server;
    char *path;
    size_t path_len;
    kr_hub_opts_t opts;
    kr_hub_app_t app;
    void *app_ud;
    kr_map_t by_id, by_token, groups, users;
    kr_list_t conns;
    unsigned nconnected;
    uv_timer_t timer;
    uv_timer_t lp_timer;   /* answers ready long polls at the next loop turn (a safe point) */
    kr_list_t lp_ready;
    kr_list_t resume_ready; /* paused connections whose reasons to pause are gone */
    int open_handles;      /* the hub is freed when both timers have closed */
    int shutting_down;
};

/* kr_hub.c */
uint64_t kr__hub_now(const kr_hub_t *hub);
/* Sends records already encoded for c's protocol; trackable counts the messages of types 1-5
 * among them (numbered for stateful reconnect). Takes sb's content. */
int kr__sr_send_records(kr_sr_conn_t *c, kr_sbuf_t *sb, unsigned trackable);
/* Writes an error Completion for id in c's protocol and sends it (nothing when id is NULL). */
void kr__sr_complete_error(kr_sr_conn_t *c, const char *id, const char *error);
/* Resumes reading after a pause, when nothing holds it any more: at the next loop turn
 * (from the hub's deferred-work timer), never inside the caller's stack, which may be a
 * running fiber. */
void kr__sr_maybe_resume(kr_sr_conn_t *c);
/* The hub's deferred work (hub->lp_timer, started with a 0 timeout): resumes the connections on
 * hub->resume_ready, then answers the long polls on hub->lp_ready. */
void kr__sr_on_lp_timer(uv_timer_t *t);
/* The transport is gone: tell the app, then (now or when it says so) release groups. */
void kr__sr_conn_ended(kr_sr_conn_t *c, const char *error);
/* A new logical connection in the hub's index (NEGOTIATED); with_token: a token distinct from
 * the id (negotiate v1), else the id serves as the token. */
kr_sr_conn_t *kr__sr_conn_new(kr_hub_t *hub, int with_token);
/* The connection's user and claims, from the request that created it (p NULL: anonymous). */
void kr__sr_set_principal(kr_sr_conn_t *c, const kr_hub_principal_t *p);

/* kr_sr_negotiate.c */
/* Finds a query parameter (case-insensitive key) and percent-decodes its value into out.
 * Returns the length, -1 when absent, or -2 when too long for out. */
long kr__sr_query_param(const kr_http_req_t *req, const char *key, char *out, size_t outlen);
/* POST {hub}/negotiate, for a request whose user is p (NULL: anonymous). */
void kr__sr_negotiate(kr_hub_t *hub, kr_http_req_t *req, const kr_hub_principal_t *p);

/* kr_sr_sse.c */
/* The Server-Sent Events delivery unit of encoded records (a new buffer; records is kept). */
kr_buf_t *kr__sr_sse_event(const kr_buf_t *records);
/* GET {hub}?id= with Accept: text/event-stream: c's event stream starts (HANDSHAKING). */
void kr__sr_start_sse(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c);

/* kr_sr_lp.c */
/* Queues a delivery unit for the next poll of a long-polling connection that has not ended
 * (takes the reference). 0, or KR_ELIMIT past the hard limit (the connection then ends). */
int kr__sr_lp_push(kr_sr_conn_t *c, kr_buf_t *unit);
/* The held poll (if any) is answered at the next loop turn (kr__sr_on_lp_timer). */
void kr__sr_lp_schedule(kr_sr_conn_t *c);
/* Answers the held poll with everything queued (200), or 204 when nothing is and c ended. */
void kr__sr_lp_answer(kr_sr_conn_t *c);
/* Lets go of a held poll: answered with status (204 at the end, 200 on timeout). */
void kr__sr_lp_release(kr_sr_conn_t *c, int status);
/* GET {hub}?id= without an event stream: the first poll activates c, later ones are held. */
void kr__sr_handle_poll(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c);
/* DELETE {hub}?id=: the client stopped. */
void kr__sr_handle_delete(kr_sr_conn_t *c, kr_http_req_t *req);

/* kr_sr_calls.c */
void kr__sr_calls_init(kr_sr_conn_t *c);
/* Routes a received StreamItem, Completion or CancelInvocation. Takes *m when it keeps it. */
void kr__sr_calls_message(kr_sr_conn_t *c, kr_sr_msg_t *m);
/* Opens the upload streams an invocation names. 0, KR_EEXIST with *dup_id the stream id
 * already in use, or KR_ELIMIT (max_streams); nothing stays open on failure. */
int kr__sr_uploads_open(kr_sr_conn_t *c, const kr_sr_msg_t *m, const char **dup_id);
/* The connection ended: cancels server streams, fails client results, ends uploads. */
void kr__sr_calls_end(kr_sr_conn_t *c);
/* Client results past their deadline fail with a timeout (called from the hub's tick). */
void kr__sr_calls_tick(kr_sr_conn_t *c, uint64_t now);
void kr__sr_calls_free(kr_sr_conn_t *c);

#endif
