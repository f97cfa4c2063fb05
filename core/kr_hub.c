/* kr_hub.c: SignalR hubs: logical connections and their life cycle, the routing of the hub's
 * HTTP requests, the WebSocket transport (stateful reconnect included), the handshake, hub
 * protocol dispatch (JSON and MessagePack), built-in methods, groups, users, delivery and
 * fan-out, POSTed client messages, and the hub's timers (see kr_hub.h).
 * Elsewhere, sharing kr_hub_int.h: negotiate (kr_sr_negotiate.c), the Server-Sent Events and
 * long-polling transports (kr_sr_sse.c, kr_sr_lp.c), streams and client results
 * (kr_sr_calls.c). deliver (run for every recipient of a broadcast) and make_unit stay here,
 * so the WebSocket send path stays within this file; the other transports are one call away.
 *
 * Connection states:
 *   NEGOTIATED --WS upgrade--> HANDSHAKING --handshake--> CONNECTED --close--> CLOSING --> gone
 * (skipNegotiation enters at HANDSHAKING). The hub's index holds the owning reference; fibers
 * running invocations hold their own. Group member arrays hold plain pointers: a connection
 * leaves every group before the index drops it (architecture B5.2).
 */
#include "kr_hub.h"
#include "kr_hub_int.h"
#include "kr_conn.h"
#include "kr_json.h"
#include "kr_list.h"
#include "kr_log.h"
#include "kr_map.h"
#include "kr_router.h"
#include "kr_server.h"
#include "kr_ws.h"

#include <msgpack.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

static void conn_finish(kr_sr_conn_t *c);
static void process_input(kr_sr_conn_t *c);
static void dispatch_next(kr_sr_conn_t *c);

void kr_hub_opts_default(kr_hub_opts_t *o)
{
    o->keepalive_ms = 15000;
    o->client_timeout_ms = 30000;
    o->handshake_timeout_ms = 15000;
    o->disconnect_timeout_ms = 15000;
    o->max_message_bytes = 32768;
    o->transports = KR_SR_TRANSPORT_WS | KR_SR_TRANSPORT_SSE | KR_SR_TRANSPORT_LP;
    o->poll_timeout_ms = 90000;
    o->protocols = KR_SR_PROTO_JSON | KR_SR_PROTO_MSGPACK;
    o->stream_buffer_capacity = 10;
    o->max_streams = 128;
    o->client_result_timeout_ms = 30000;
    o->stateful_reconnect = 1;
    o->stateful_buffer_bytes = 100000;
    o->detailed_errors = 0;
    o->builtins = 1;
    o->max_queued_invocations = 32;
    o->high_water = 1024 * 1024;
    o->low_water = 256 * 1024;
    o->hard_limit = 8 * 1024 * 1024;
}

static uint64_t now_ms(const kr_hub_t *hub)
{
    return uv_now(hub->server->loop);
}

uint64_t kr__hub_now(const kr_hub_t *hub)
{
    return now_ms(hub);
}

/* ---- ids -------------------------------------------------------------------------------- */

static void random_id(char out[ID_LEN + 1])
{
    static const char b64url[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[18] = {0}; /* 16 random bytes + padding for the last 3-byte group */
    if (RAND_bytes(raw, 16) != 1)
        KR_ASSERT(uv_random(NULL, NULL, raw, 16, 0, NULL) == 0);
    int o = 0;
    for (int i = 0; i < 16; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (o < ID_LEN)
            out[o++] = b64url[(v >> 6) & 63];
        if (o < ID_LEN)
            out[o++] = b64url[v & 63];
    }
    out[ID_LEN] = '\0';
}

/* ---- connections ------------------------------------------------------------------------ */

void kr_sr_conn_ref(kr_sr_conn_t *c)
{
    c->refs++;
}

static void replay_free(kr_list_t *list)
{
    while (!kr_list_empty(list)) {
        replay_unit_t *r = kr_container_of(list->next, replay_unit_t, link);
        kr_list_remove(&r->link);
        kr_buf_unref(r->unit);
        kr_free(r);
    }
}

void kr_sr_conn_unref(kr_sr_conn_t *c)
{
    KR_ASSERT(c->refs > 0);
    if (--c->refs > 0)
        return;
    while (!kr_list_empty(&c->queue)) {
        queued_msg_t *q = kr_container_of(c->queue.next, queued_msg_t, link);
        kr_list_remove(&q->link);
        kr_sr_msg_dispose(&q->msg);
        kr_free(q);
    }
    kr_sbuf_dispose(&c->inbuf);
    kr_outq_dispose(&c->lp_queue);
    kr__sr_calls_free(c);
    replay_free(&c->replay);
    replay_free(&c->held);
    kr_free(c->close_error);
    kr_free(c->groups);
    kr_free(c->user);
    kr_free(c->claims);
    kr_free(c);
}

const char *kr_sr_conn_id(const kr_sr_conn_t *c)
{
    return c->id;
}

const char *kr_sr_conn_user(const kr_sr_conn_t *c)
{
    return c->user;
}

const char *kr_sr_conn_claims(const kr_sr_conn_t *c)
{
    return c->claims;
}

/* The connection's user, fixed by the request that created it (negotiate, or a WebSocket
 * upgrade with skipNegotiation). */
static void set_principal(kr_sr_conn_t *c, const kr_hub_principal_t *p)
{
    if (p == NULL)
        return;
    c->user = p->name ? kr_strdup(p->name) : NULL;
    c->claims = p->claims_json ? kr_strdup(p->claims_json) : NULL;
    c->close_at_ms = p->close_at_ms;
}

void kr__sr_set_principal(kr_sr_conn_t *c, const kr_hub_principal_t *p)
{
    set_principal(c, p);
}

/* A transport request must come from the user its connection was created for (as ASP.NET
 * Core compares Identity.Name; anonymous only matches anonymous). */
static int same_user(const kr_sr_conn_t *c, const kr_hub_principal_t *p)
{
    const char *name = p ? p->name : NULL;
    if (c->user == NULL || name == NULL)
        return c->user == NULL && name == NULL;
    return strcmp(c->user, name) == 0;
}

kr_hub_t *kr_sr_conn_hub(const kr_sr_conn_t *c)
{
    return c->hub;
}

int kr_sr_conn_is_open(const kr_sr_conn_t *c)
{
    return c->state == SR_CONNECTED;
}

int kr_sr_conn_protocol(const kr_sr_conn_t *c)
{
    return c->protocol;
}

static kr_sr_conn_t *conn_new(kr_hub_t *hub, int with_token)
{
    kr_sr_conn_t *c = kr_calloc(1, sizeof(*c));
    c->hub = hub;
    c->refs = 1; /* the hub's index */
    random_id(c->id);
    if (with_token)
        random_id(c->token);
    else
        memcpy(c->token, c->id, sizeof(c->id)); /* negotiate v0 and skipNegotiation use the id */
    kr_sbuf_init(&c->inbuf, 256);
    kr_list_init(&c->queue);
    kr_outq_init(&c->lp_queue);
    kr_list_init(&c->lp_ready_link);
    kr_list_init(&c->resume_link);
    kr_list_init(&c->replay);
    kr_list_init(&c->held);
    kr__sr_calls_init(c);
    c->created_ms = c->last_recv_ms = c->last_send_ms = now_ms(hub);
    kr_map_put(&hub->by_id, c->id, ID_LEN, c);
    kr_map_put(&hub->by_token, c->token, ID_LEN, c);
    kr_list_insert_tail(&hub->conns, &c->link);
    return c;
}

kr_sr_conn_t *kr__sr_conn_new(kr_hub_t *hub, int with_token)
{
    return conn_new(hub, with_token);
}

kr_sr_conn_t *kr_hub_find(const kr_hub_t *hub, const char *id, size_t len)
{
    kr_sr_conn_t *c = kr_map_get(&hub->by_id, id, len);
    return c && c->state == SR_CONNECTED ? c : NULL;
}

unsigned kr_hub_connection_count(const kr_hub_t *hub)
{
    return hub->nconnected;
}

/* ---- groups and users ------------------------------------------------------------------- */

static void group_insert(group_t *g, kr_sr_conn_t *c, membership_t *m)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->members = kr_realloc(g->members, sizeof(*g->members) * g->cap);
    }
    m->g = g;
    m->idx = g->n;
    g->members[g->n++] = c;
}

static membership_t *membership_of(kr_sr_conn_t *c, const group_t *g)
{
    if (c->user_m.g == g)
        return &c->user_m;
    for (unsigned i = 0; i < c->ngroups; i++)
        if (c->groups[i].g == g)
            return &c->groups[i];
    return NULL;
}

/* Swap-removes c from g and fixes the moved member's index; frees an empty group. */
static void group_erase(kr_map_t *map, group_t *g, unsigned idx)
{
    KR_ASSERT(idx < g->n);
    g->n--;
    if (idx != g->n) {
        kr_sr_conn_t *moved = g->members[g->n];
        g->members[idx] = moved;
        membership_t *m = membership_of(moved, g);
        KR_ASSERT(m != NULL);
        m->idx = idx;
    }
    if (g->n == 0) {
        kr_map_del(map, g->name, strlen(g->name));
        kr_free(g->name);
        kr_free(g->members);
        kr_free(g);
    }
}

int kr_hub_group_add(kr_hub_t *hub, kr_sr_conn_t *c, const char *name, size_t len)
{
    if (c->state != SR_CONNECTED)
        return KR_ECLOSED;
    if (len > MAX_GROUP_NAME || memchr(name, '\0', len))
        return KR_ELIMIT;
    group_t *g = kr_map_get(&hub->groups, name, len);
    if (g == NULL) {
        g = kr_calloc(1, sizeof(*g));
        g->name = kr_strndup(name, len);
        kr_map_put(&hub->groups, name, len, g);
    } else {
        for (unsigned i = 0; i < c->ngroups; i++)
            if (c->groups[i].g == g)
                return 0;
    }
    if (c->ngroups == c->capgroups) {
        c->capgroups = c->capgroups ? c->capgroups * 2 : 4;
        c->groups = kr_realloc(c->groups, sizeof(*c->groups) * c->capgroups);
    }
    group_insert(g, c, &c->groups[c->ngroups++]);
    return 0;
}

int kr_hub_group_remove(kr_hub_t *hub, kr_sr_conn_t *c, const char *name, size_t len)
{
    if (c->state == SR_CLOSED)
        return KR_ECLOSED;
    group_t *g = kr_map_get(&hub->groups, name, len);
    if (g == NULL)
        return 0;
    for (unsigned i = 0; i < c->ngroups; i++) {
        if (c->groups[i].g != g)
            continue;
        unsigned idx = c->groups[i].idx;
        c->groups[i] = c->groups[--c->ngroups];
        group_erase(&hub->groups, g, idx);
        return 0;
    }
    return 0;
}

/* A connected client of an authenticated user joins that user's set (kr_hub_send_user). */
static void user_join(kr_hub_t *hub, kr_sr_conn_t *c)
{
    if (c->user == NULL || c->user_m.g != NULL)
        return;
    size_t len = strlen(c->user);
    group_t *g = kr_map_get(&hub->users, c->user, len);
    if (g == NULL) {
        g = kr_calloc(1, sizeof(*g));
        g->name = kr_strndup(c->user, len);
        kr_map_put(&hub->users, g->name, len, g);
    }
    group_insert(g, c, &c->user_m);
}

static void leave_all(kr_sr_conn_t *c)
{
    kr_hub_t *hub = c->hub;
    while (c->ngroups > 0) {
        membership_t m = c->groups[--c->ngroups];
        group_erase(&hub->groups, m.g, m.idx);
    }
    if (c->user_m.g) {
        group_t *g = c->user_m.g;
        c->user_m.g = NULL;
        group_erase(&hub->users, g, c->user_m.idx);
    }
}

/* ---- sending ---------------------------------------------------------------------------- */

static int wire_protocol(kr_sr_wire_e wire)
{
    return wire == KR_WIRE_WS_MSGPACK || wire == KR_WIRE_RAW_MSGPACK ? KR_SR_PROTO_MSGPACK
                                                                      : KR_SR_PROTO_JSON;
}

/* Wraps encoded records into the delivery unit of a wire format. Takes records. */
static kr_buf_t *make_unit(kr_sr_wire_e wire, kr_buf_t *records)
{
    kr_buf_t *unit;
    if (wire == KR_WIRE_RAW_JSON || wire == KR_WIRE_RAW_MSGPACK)
        return records; /* long polling: a poll's body is the records themselves */
    if (wire == KR_WIRE_SSE_JSON)
        unit = kr__sr_sse_event(records);
    else
        unit = kr_ws_frame_new(wire == KR_WIRE_WS_MSGPACK ? 0x2 : 0x1, records->data,
                               records->len);
    kr_buf_unref(records);
    return unit;
}

static void slow_consumer(kr_sr_conn_t *c);

/* The client cannot keep up (its queue passed the hard limit): close it. */
static void slow_consumer(kr_sr_conn_t *c)
{
    c->hub->server->stats.slow_consumers++;
    KR_LOG(KR_LOG_WARN, "hub", "%s: %s is too slow: closing it", c->hub->path, c->id);
    /* Nothing more is tracked or replayed for it. */
    c->stateful = 0;
    replay_free(&c->held);
    c->held_bytes = 0;
    if (c->detached) {
        c->detached_ms = 0; /* ended by the next tick: never inside a broadcast's loop */
        return;
    }
    kr_sr_conn_close(c, "Connection closed with an error.", 1);
}

/* Stateful reconnect: moves units waiting for room in the replay buffer into it (and onto the
 * socket) while the buffer has room; an empty buffer always takes one, however large. */
static void replay_admit(kr_sr_conn_t *c)
{
    size_t limit = c->hub->opts.stateful_buffer_bytes;
    while (!kr_list_empty(&c->held)) {
        replay_unit_t *r = kr_container_of(c->held.next, replay_unit_t, link);
        if (c->replay_bytes > 0 && c->replay_bytes + r->unit->len > limit)
            return;
        kr_list_remove(&r->link);
        c->held_bytes -= r->unit->len;
        kr_list_insert_tail(&c->replay, &r->link);
        c->replay_bytes += r->unit->len;
        if (c->ws != NULL && !c->detached)
            kr_ws_send_frame(c->ws, kr_buf_ref(r->unit));
    }
}

/* Stateful reconnect: numbers the unit's trackable messages and keeps it until acknowledged.
 * Past the replay buffer's size, sends wait (as in ASP.NET Core) in a queue bounded by the
 * connection's hard limit. */
static int deliver_stateful(kr_sr_conn_t *c, kr_buf_t *unit, unsigned trackable)
{
    replay_unit_t *r = kr_malloc(sizeof(*r));
    r->unit = unit;
    r->first_seq = c->send_seq + 1;
    c->send_seq += trackable;
    r->last_seq = c->send_seq;
    kr_list_insert_tail(&c->held, &r->link);
    c->held_bytes += unit->len;
    if (c->held_bytes > c->hub->opts.hard_limit) {
        slow_consumer(c);
        return KR_ELIMIT;
    }
    replay_admit(c);
    return 0;
}

/* The client acknowledged every message up to seq: frees what it covers. */
static void replay_ack(kr_sr_conn_t *c, int64_t seq)
{
    while (!kr_list_empty(&c->replay)) {
        replay_unit_t *r = kr_container_of(c->replay.next, replay_unit_t, link);
        if (r->last_seq > seq)
            break;
        kr_list_remove(&r->link);
        c->replay_bytes -= r->unit->len;
        kr_buf_unref(r->unit);
        kr_free(r);
    }
    replay_admit(c);
}

/* Queues one delivery unit (takes the reference). trackable: its messages of types 1-5. */
static int deliver(kr_sr_conn_t *c, kr_buf_t *unit, unsigned trackable)
{
    c->last_send_ms = now_ms(c->hub);
    if (c->stateful && (trackable > 0 || c->detached || !kr_list_empty(&c->held))) {
        if (c->detached && trackable == 0) {
            kr_buf_unref(unit); /* pings and closes are not replayed */
            return 0;
        }
        return deliver_stateful(c, unit, trackable);
    }
    if (c->ws != NULL)
        return kr_ws_send_frame(c->ws, unit);
    if (c->sse != NULL)
        return kr_conn_write(c->sse, unit);
    if (c->transport == KR_SR_TRANSPORT_LP && !c->lp_ended)
        return kr__sr_lp_push(c, unit);
    kr_buf_unref(unit);
    return KR_ECLOSED;
}

/* Sends records already encoded for this connection's protocol (handshake, completions). */
static int send_records(kr_sr_conn_t *c, kr_sbuf_t *sb, unsigned trackable)
{
    return deliver(c, make_unit(c->wire, kr_sbuf_finish(sb)), trackable);
}

int kr__sr_send_records(kr_sr_conn_t *c, kr_sbuf_t *sb, unsigned trackable)
{
    return send_records(c, sb, trackable);
}

int kr_sr_conn_send_encoded(kr_sr_conn_t *c, kr_sbuf_t *sb, unsigned trackable)
{
    if (c->state != SR_CONNECTED) {
        kr_sbuf_dispose(sb);
        return KR_ECLOSED;
    }
    return send_records(c, sb, trackable);
}

typedef struct fanout_s {
    const kr_sr_payload_t *p;
    kr_buf_t *units[KR_WIRE_COUNT];
    unsigned count;
    int err;
} fanout_t;

static void fanout_one(fanout_t *f, kr_sr_conn_t *c)
{
    if (f->err || c->state != SR_CONNECTED)
        return;
    kr_buf_t *unit = f->units[c->wire];
    if (unit == NULL) {
        /* First recipient on this wire format: encode once, share with every later one. */
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 256);
        int err = f->p->encode(f->p->ud, wire_protocol(c->wire), &sb);
        if (err != 0) {
            kr_sbuf_dispose(&sb);
            f->err = err;
            return;
        }
        unit = f->units[c->wire] = make_unit(c->wire, kr_sbuf_finish(&sb));
    }
    if (deliver(c, kr_buf_ref(unit), 1) == 0)
        f->count++;
}

static int fanout_end(kr_hub_t *hub, fanout_t *f, unsigned *count)
{
    for (int i = 0; i < KR_WIRE_COUNT; i++)
        kr_buf_unref(f->units[i]);
    hub->server->stats.messages_sent += f->count;
    if (count)
        *count = f->count;
    return f->err;
}

int kr_hub_send_all(kr_hub_t *hub, const kr_sr_payload_t *p, unsigned *count)
{
    fanout_t f = {.p = p};
    kr_list_t *it;
    kr_list_foreach(it, &hub->conns) fanout_one(&f, kr_container_of(it, kr_sr_conn_t, link));
    return fanout_end(hub, &f, count);
}

static int send_members(kr_hub_t *hub, group_t *g, const kr_sr_payload_t *p, unsigned *count)
{
    fanout_t f = {.p = p};
    for (unsigned i = 0; g && i < g->n; i++)
        fanout_one(&f, g->members[i]);
    return fanout_end(hub, &f, count);
}

int kr_hub_send_group(kr_hub_t *hub, const char *group, size_t len, const kr_sr_payload_t *p,
                      unsigned *count)
{
    return send_members(hub, kr_map_get(&hub->groups, group, len), p, count);
}

int kr_hub_send_user(kr_hub_t *hub, const char *user, size_t len, const kr_sr_payload_t *p,
                     unsigned *count)
{
    return send_members(hub, kr_map_get(&hub->users, user, len), p, count);
}

int kr_hub_send_to(kr_hub_t *hub, const char *id, size_t len, const kr_sr_payload_t *p)
{
    kr_sr_conn_t *c = kr_hub_find(hub, id, len);
    if (c == NULL)
        return KR_ENOENT;
    return kr_sr_conn_send(c, p);
}

int kr_sr_conn_send(kr_sr_conn_t *c, const kr_sr_payload_t *p)
{
    if (c->state != SR_CONNECTED)
        return KR_ECLOSED;
    fanout_t f = {.p = p};
    fanout_one(&f, c);
    return fanout_end(c->hub, &f, NULL);
}

/* ---- closing ---------------------------------------------------------------------------- */

static void conn_ended(kr_sr_conn_t *c, const char *error);
static void write_close(kr_sr_conn_t *c, kr_sbuf_t *sb, const char *error, int allow_reconnect);
static void respond_held_post(kr_sr_conn_t *c, int status);

void kr_sr_conn_close(kr_sr_conn_t *c, const char *error, int allow_reconnect)
{
    if (c->state >= SR_CLOSING)
        return;
    if (c->state == SR_CONNECTED) {
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 128);
        write_close(c, &sb, error, allow_reconnect);
        send_records(c, &sb, 0);
        c->hub->nconnected--;
    }
    if (error && c->close_error == NULL)
        c->close_error = kr_strdup(error);
    c->state = SR_CLOSING; /* sends stop here; the transport's close ends the connection */
    if (c->ws) {
        kr_ws_close(c->ws, 1000, NULL);
        return;
    }
    if (c->sse) {
        /* Ending the event stream is a normal close for the client; the connection's close
         * callback ends the logical connection. */
        kr_conn_close_after_flush(c->sse);
        return;
    }
    if (c->transport == KR_SR_TRANSPORT_LP) {
        /* The Close record (if any) goes out with the held or the next poll; the poll after
         * that gets 204, which ends the connection on the client (kr__sr_lp_answer). */
        c->lp_ended = 1;
        kr__sr_lp_schedule(c);
        return;
    }
    conn_ended(c, NULL);
}

void kr_sr_conn_abort(kr_sr_conn_t *c, const char *error)
{
    c->connected_once = 0;
    kr_sr_conn_close(c, error, 0);
}

/* The transport is gone: tell the app, then (now or when it says so) release groups. */
static void conn_ended(kr_sr_conn_t *c, const char *error)
{
    kr_hub_t *hub = c->hub;
    if (c->state == SR_CLOSED || c->disconnect_pending)
        return;
    if (c->state == SR_CONNECTED)
        hub->nconnected--;
    c->state = SR_CLOSING;
    c->ws = NULL;
    if (c->sse) {
        c->sse->proto_data = NULL; /* the event stream no longer reports to us */
        c->sse = NULL;
    }
    kr__sr_lp_release(c, 204);
    respond_held_post(c, 404);
    c->detached = 0;
    kr__sr_calls_end(c); /* streams cancelled, client results failed, uploads ended */
    if (error == NULL)
        error = c->close_error;
    if (c->connected_once) {
        c->connected_once = 0; /* on_disconnected runs once */
        if (error)
            KR_LOG(KR_LOG_WARN, "hub", "%s: %s disconnected: %s", hub->path, c->id, error);
        else
            KR_LOG(KR_LOG_INFO, "hub", "%s: %s disconnected", hub->path, c->id);
        /* Pending before the call: the handler may finish (and call
         * kr_sr_conn_disconnected_done) before the callback returns. */
        c->disconnect_pending = 1;
        if (hub->app.disconnected && hub->app.disconnected(hub, c, error, hub->app_ud))
            return;
        if (!c->disconnect_pending)
            return; /* already finished */
        c->disconnect_pending = 0;
    }
    conn_finish(c);
}

void kr__sr_conn_ended(kr_sr_conn_t *c, const char *error)
{
    conn_ended(c, error);
}

void kr_sr_conn_disconnected_done(kr_sr_conn_t *c)
{
    if (!c->disconnect_pending)
        return;
    c->disconnect_pending = 0;
    conn_finish(c);
}

static void conn_finish(kr_sr_conn_t *c)
{
    kr_hub_t *hub = c->hub;
    if (c->state == SR_CLOSED)
        return;
    c->state = SR_CLOSED;
    leave_all(c);
    kr_map_del(&hub->by_id, c->id, ID_LEN);
    kr_map_del(&hub->by_token, c->token, ID_LEN);
    kr_list_remove(&c->resume_link);
    kr_list_remove(&c->link);
    kr_sr_conn_unref(c); /* the index's reference */
}

/* ---- WebSocket transport ---------------------------------------------------------------- */

static void ws_on_message(kr_ws_t *ws, int binary, const char *data, size_t len, void *ud)
{
    kr_sr_conn_t *c = ud;
    KR_UNUSED(ws);
    if (c == NULL || c->state >= SR_CLOSING)
        return;
    if (binary && c->state == SR_CONNECTED && c->protocol != KR_SR_PROTO_MSGPACK) {
        /* JSON travels in text frames; a binary one is a protocol error. */
        kr_sr_conn_close(c, "Connection closed with an error.", 0);
        return;
    }
    c->last_recv_ms = now_ms(c->hub);
    kr_sbuf_append(&c->inbuf, data, len);
    kr_sr_conn_ref(c);
    process_input(c);
    kr_sr_conn_unref(c);
}

static void ws_on_close(kr_ws_t *ws, int code, void *ud)
{
    kr_sr_conn_t *c = ud;
    KR_UNUSED(ws);
    if (c == NULL || c->ws != ws)
        return; /* the hub was freed, or the connection already ended */
    if (c->stateful && c->state == SR_CONNECTED && code == KR_WS_CLOSE_ABNORMAL) {
        /* Stateful reconnect: the socket dropped without a close; the logical connection
         * (groups, invocations, unacknowledged messages) waits for the client to reattach. */
        c->ws = NULL;
        c->detached = 1;
        c->detached_ms = now_ms(c->hub);
        kr_sbuf_reset(&c->inbuf); /* a partial record: the client sends it again */
        KR_LOG(KR_LOG_INFO, "hub", "%s: %s socket dropped; waiting %llu ms for a reconnect",
               c->hub->path, c->id, (unsigned long long)c->hub->opts.disconnect_timeout_ms);
        return;
    }
    conn_ended(c, code == 1000 || code == 1005 || code == 1001 ? NULL
                                                               : "the WebSocket closed abruptly");
}

static const kr_ws_handler_t ws_handler = {
    .on_message = ws_on_message,
    .on_close = ws_on_close,
};

/* ---- protocol: handshake, messages, built-ins ------------------------------------------- */

/* Per-protocol writers of the messages the core itself sends. */
static void write_close(kr_sr_conn_t *c, kr_sbuf_t *sb, const char *error, int allow_reconnect)
{
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        kr_sr_mp_write_close(sb, error, allow_reconnect);
    else
        kr_sr_json_write_close(sb, error, allow_reconnect);
}

static void write_ping(kr_sr_conn_t *c, kr_sbuf_t *sb)
{
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        kr_sr_mp_write_ping(sb);
    else
        kr_sr_json_write_ping(sb);
}

static void write_completion(kr_sr_conn_t *c, kr_sbuf_t *sb, const char *id, const char *result,
                             size_t result_len, const char *error)
{
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        kr_sr_mp_write_completion(sb, id, result, result_len, error);
    else
        kr_sr_json_write_completion(sb, id, result, result_len, error);
}

static void handshake_fail(kr_sr_conn_t *c, const char *error)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    kr_sr_json_write_handshake_error(&sb, error);
    send_records(c, &sb, 0);
    KR_LOG(KR_LOG_INFO, "hub", "%s: %s handshake failed: %s", c->hub->path, c->id, error);
    kr_sr_conn_close(c, NULL, 0);
}

static const char *transport_name(int transport)
{
    return transport == KR_SR_TRANSPORT_SSE  ? "ServerSentEvents"
           : transport == KR_SR_TRANSPORT_LP ? "LongPolling"
                                             : "WebSockets";
}

static void handle_handshake(kr_sr_conn_t *c, const char *rec, size_t len)
{
    kr_hub_t *hub = c->hub;
    char protocol[32];
    int version = 0;
    const char *err = NULL;
    char msg[200];
    if (kr_sr_handshake_parse(rec, len, protocol, sizeof(protocol), &version, &err) != 0) {
        snprintf(msg, sizeof(msg), "An unexpected error occurred during connection handshake.%s%s",
                 hub->opts.detailed_errors ? " " : "", hub->opts.detailed_errors ? err : "");
        handshake_fail(c, msg);
        return;
    }
    int proto = strcmp(protocol, "json") == 0          ? KR_SR_PROTO_JSON
                : strcmp(protocol, "messagepack") == 0 ? KR_SR_PROTO_MSGPACK
                                                       : 0;
    if (proto == 0 || !(hub->opts.protocols & (unsigned)proto)) {
        snprintf(msg, sizeof(msg), "The protocol '%s' is not supported.", protocol);
        handshake_fail(c, msg);
        return;
    }
    if (version < 0 || version > 2) {
        snprintf(msg, sizeof(msg), "The server does not support version %d of the '%s' protocol.",
                 version, protocol);
        handshake_fail(c, msg);
        return;
    }
    if (proto == KR_SR_PROTO_MSGPACK && c->transport == KR_SR_TRANSPORT_SSE) {
        handshake_fail(c, "Cannot use the 'messagepack' protocol on the current transport. The "
                          "transport does not support 'Binary' transfer format.");
        return;
    }
    c->protocol = proto;
    if (c->transport == KR_SR_TRANSPORT_SSE)
        c->wire = KR_WIRE_SSE_JSON;
    else if (c->transport == KR_SR_TRANSPORT_LP)
        c->wire = proto == KR_SR_PROTO_MSGPACK ? KR_WIRE_RAW_MSGPACK : KR_WIRE_RAW_JSON;
    else
        c->wire = proto == KR_SR_PROTO_MSGPACK ? KR_WIRE_WS_MSGPACK : KR_WIRE_WS_JSON;
    /* Stateful reconnect: negotiated on request, only WebSockets can reattach, and a client
     * that then shakes hands with version 1 does not do it (as ASP.NET Core disables it). */
    c->stateful = c->stateful_offered && c->transport == KR_SR_TRANSPORT_WS && version >= 2;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_sr_json_write_handshake_ok(&sb); /* JSON whatever the protocol (a binary frame for msgpack) */
    send_records(c, &sb, 0);
    c->state = SR_CONNECTED;
    c->connected_once = 1;
    hub->nconnected++;
    user_join(hub, c);
    KR_LOG(KR_LOG_INFO, "hub", "%s: %s connected (%s, %s%s)", hub->path, c->id,
           transport_name(c->transport), protocol, c->stateful ? ", stateful reconnect" : "");
    if (hub->app.connected)
        hub->app.connected(hub, c, hub->app_ud);
}

void kr__sr_complete_error(kr_sr_conn_t *c, const char *id, const char *error)
{
    if (id == NULL || c->state != SR_CONNECTED)
        return;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    write_completion(c, &sb, id, NULL, 0, error);
    send_records(c, &sb, 1);
}

void kr_sr_conn_end_stream(kr_sr_conn_t *c, const char *invocation_id, const char *error)
{
    if (error != NULL) {
        kr__sr_complete_error(c, invocation_id, error);
        return;
    }
    if (invocation_id == NULL || c->state != SR_CONNECTED)
        return;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 64);
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        kr_sr_mp_write_completion_empty(&sb, invocation_id);
    else
        kr_sr_json_write_completion_empty(&sb, invocation_id);
    send_records(c, &sb, 1);
}

static void complete_error(kr_sr_conn_t *c, const char *id, const char *error)
{
    kr__sr_complete_error(c, id, error);
}

/* Sends method(arg) to the caller, arg being the string argument i of m: the reply of a
 * built-in (GroupJoined, ReceiveEcho). s/len is that string with its NULs restored. */
static void send_to_caller(kr_sr_conn_t *c, const char *method, const kr_sr_msg_t *m, unsigned i,
                           const char *s, size_t len)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    if (c->protocol == KR_SR_PROTO_MSGPACK) {
        size_t start = kr_sr_mp_write_invocation_head(&sb, NULL, method);
        kr_mp_put_array(&sb, 1);
        kr_mp_put_object(&sb, &m->mp_arguments->via.array.ptr[i]);
        kr_sr_mp_write_invocation_tail(&sb, start);
    } else {
        kr_sr_json_write_invocation_head(&sb, NULL, method);
        kr_sbuf_putc(&sb, '[');
        kr_json_write_string(&sb, s, len);
        kr_sbuf_putc(&sb, ']');
        kr_sr_json_write_tail(&sb);
    }
    send_records(c, &sb, 1);
}

/* JoinGroup / LeaveGroup / Echo. Returns 1 when name is a built-in (and it ran). */
static int run_builtin(kr_sr_conn_t *c, const kr_sr_msg_t *m)
{
    static const char *const names[] = {"JoinGroup", "LeaveGroup", "Echo"};
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (strlen(m->target) == strlen(names[i]) &&
            kr_strncasecmp(m->target, names[i], strlen(names[i])) == 0)
            which = i;
    if (which < 0)
        return 0;
    kr_hub_t *hub = c->hub;
    char msg[300];
    if (m->type == KR_SR_STREAM_INVOCATION) {
        snprintf(msg, sizeof(msg),
                 "The client attempted to invoke the non-streaming '%s' method with a streaming "
                 "invocation.",
                 m->target);
        complete_error(c, m->invocation_id, msg);
        return 1;
    }
    const char *arg;
    size_t len;
    if (kr_sr_msg_argc(m) != 1 || m->nstream_ids > 0 || !kr_sr_msg_arg_string(m, 0, &arg, &len)) {
        snprintf(msg, sizeof(msg), "Failed to invoke '%s' due to an error on the server.%s",
                 m->target,
                 hub->opts.detailed_errors ? " InvalidDataException: the method expects one "
                                             "string argument."
                                           : "");
        complete_error(c, m->invocation_id, msg);
        return 1;
    }
    /* A JSON string kept its "\u0000" escapes as C0 80 (kr_json_nul_protect): restore them. */
    char *s = kr_malloc(len + 1);
    memcpy(s, arg, len);
    if (m->protocol == KR_SR_PROTO_JSON)
        len = kr_json_nul_restore(s, len);
    if (which == 0) {
        if (kr_hub_group_add(hub, c, s, len) == KR_ELIMIT) {
            kr_free(s);
            complete_error(c, m->invocation_id,
                           "An unexpected error occurred invoking 'JoinGroup' on the server.");
            return 1;
        }
        send_to_caller(c, "GroupJoined", m, 0, s, len);
    } else if (which == 1) {
        kr_hub_group_remove(hub, c, s, len);
        send_to_caller(c, "GroupLeft", m, 0, s, len);
    } else {
        send_to_caller(c, "ReceiveEcho", m, 0, s, len);
    }
    kr_free(s);
    if (m->invocation_id) {
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 64);
        write_completion(c, &sb, m->invocation_id, NULL, 0, NULL);
        send_records(c, &sb, 1);
    }
    return 1;
}

/* Runs one invocation. A non-streaming one keeps the connection busy until
 * kr_sr_conn_complete; a streaming one runs beside the others. */
static void dispatch(kr_sr_conn_t *c, const kr_sr_msg_t *m)
{
    kr_hub_t *hub = c->hub;
    int streaming = m->type == KR_SR_STREAM_INVOCATION;
    if (!streaming)
        c->busy = 1;
    if (hub->app.invoke && hub->app.invoke(hub, c, m, hub->app_ud) == 0)
        return; /* the app completes it */
    if (!streaming)
        c->busy = 0;
    kr_sr_uploads_close(c, m);
    if (hub->opts.builtins && run_builtin(c, m))
        return;
    char msg[300];
    snprintf(msg, sizeof(msg), "Unknown hub method '%s'", m->target);
    complete_error(c, m->invocation_id, msg);
}

void kr_sr_conn_complete(kr_sr_conn_t *c, const char *invocation_id, const char *result,
                         size_t result_len, const char *error)
{
    c->busy = 0;
    if (invocation_id && c->state == SR_CONNECTED) {
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 64 + result_len);
        write_completion(c, &sb, invocation_id, result, result_len, error);
        send_records(c, &sb, 1);
    }
    if (c->state == SR_CONNECTED)
        dispatch_next(c);
}

/* Whether reading must stop: too many invocations waiting, or an upload stream full. Never
 * while a client result is awaited: its Completion must be able to arrive. */
static int must_pause(const kr_sr_conn_t *c)
{
    if (c->npending_results > 0)
        return 0;
    return c->nqueued >= c->hub->opts.max_queued_invocations || c->full_uploads > 0;
}

static void respond_held_post(kr_sr_conn_t *c, int status)
{
    kr_http_req_t *req = c->held_post;
    if (req == NULL)
        return;
    c->held_post = NULL;
    kr_http_respond(req, status, NULL, 0, NULL);
    kr_http_req_unref(req);
}

void kr__sr_maybe_resume(kr_sr_conn_t *c)
{
    if (!c->paused || must_pause(c) || c->state != SR_CONNECTED ||
        kr_list_linked(&c->resume_link))
        return;
    kr_hub_t *hub = c->hub;
    kr_list_insert_tail(&hub->resume_ready, &c->resume_link);
    if (!uv_is_active((uv_handle_t *)&hub->lp_timer))
        uv_timer_start(&hub->lp_timer, kr__sr_on_lp_timer, 0, 0);
}

static void resume_reading(kr_sr_conn_t *c)
{
    if (!c->paused || must_pause(c) || c->state != SR_CONNECTED)
        return;
    c->paused = 0;
    if (c->ws)
        kr_conn_read_start(kr_ws_conn(c->ws));
    kr_sr_conn_ref(c);
    process_input(c);
    if (!c->paused)
        respond_held_post(c, 200); /* its bytes are consumed: the client may send more */
    kr_sr_conn_unref(c);
}

/* The hub's deferred work, at the next loop turn: ready long polls, connections that may read
 * again. */
void kr__sr_on_lp_timer(uv_timer_t *t)
{
    kr_hub_t *hub = kr_container_of(t, kr_hub_t, lp_timer);
    kr_list_t batch;
    kr_list_init(&batch);
    kr_list_move_all(&hub->resume_ready, &batch);
    while (!kr_list_empty(&batch)) {
        kr_sr_conn_t *c = kr_container_of(batch.next, kr_sr_conn_t, resume_link);
        kr_list_remove(&c->resume_link);
        kr_sr_conn_ref(c);
        resume_reading(c);
        kr_sr_conn_unref(c);
    }
    kr_list_move_all(&hub->lp_ready, &batch);
    while (!kr_list_empty(&batch)) {
        kr_sr_conn_t *c = kr_container_of(batch.next, kr_sr_conn_t, lp_ready_link);
        kr_list_remove(&c->lp_ready_link);
        kr_sr_conn_ref(c);
        kr__sr_lp_answer(c);
        kr_sr_conn_unref(c);
    }
}

/* Runs queued invocations until one stays busy, then parses more input if reading paused. */
static void dispatch_next(kr_sr_conn_t *c)
{
    while (!c->busy && !kr_list_empty(&c->queue) && c->state == SR_CONNECTED) {
        queued_msg_t *q = kr_container_of(c->queue.next, queued_msg_t, link);
        kr_list_remove(&q->link);
        c->nqueued--;
        dispatch(c, &q->msg);
        kr_sr_msg_dispose(&q->msg);
        kr_free(q);
    }
    kr__sr_maybe_resume(c);
}

static void protocol_error(kr_sr_conn_t *c, const char *detail)
{
    kr_hub_t *hub = c->hub;
    KR_LOG(KR_LOG_INFO, "hub", "%s: %s protocol error: %s", hub->path, c->id, detail);
    char msg[300];
    snprintf(msg, sizeof(msg), "Connection closed with an error.%s%s",
             hub->opts.detailed_errors ? " InvalidDataException: " : "",
             hub->opts.detailed_errors ? detail : "");
    kr_sr_conn_close(c, msg, 1);
}

static void send_ack(kr_sr_conn_t *c)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        kr_sr_mp_write_ack(&sb, c->recv_done);
    else
        kr_sr_json_write_ack(&sb, c->recv_done);
    c->acked_sent = c->recv_done;
    send_records(c, &sb, 0);
}

/* Stateful reconnect bookkeeping of one received message. Returns 0 to process it, 1 to drop
 * it (a duplicate replayed by the client, or an Ack/Sequence handled here), -1 after a
 * protocol error. */
static int stateful_receive(kr_sr_conn_t *c, const kr_sr_msg_t *m)
{
    if (m->type >= KR_SR_INVOCATION && m->type <= KR_SR_CANCEL_INVOCATION) {
        c->recv_seq++;
        if (c->recv_seq <= c->recv_done)
            return 1;
        c->recv_done = c->recv_seq;
        return 0;
    }
    if (m->type == KR_SR_ACK) {
        replay_ack(c, m->sequence_id);
        return 1;
    }
    if (m->type == KR_SR_SEQUENCE) {
        if (m->sequence_id > c->recv_done + 1) {
            protocol_error(c, "Sequence ID greater than amount of messages we've received.");
            return -1;
        }
        c->recv_seq = m->sequence_id - 1;
        return 1;
    }
    return 0;
}

static void handle_message(kr_sr_conn_t *c, kr_sr_msg_t *m)
{
    if (c->stateful && stateful_receive(c, m) != 0)
        return;
    switch (m->type) {
    case KR_SR_INVOCATION:
    case KR_SR_STREAM_INVOCATION: {
        if (m->nstream_ids > 0) {
            const char *dup = NULL;
            int rc = kr__sr_uploads_open(c, m, &dup);
            if (rc != 0) {
                char msg[300];
                if (rc == KR_EEXIST)
                    snprintf(msg, sizeof(msg), "Invocation ID '%.200s' is already in use.", dup);
                else
                    snprintf(msg, sizeof(msg), "An unexpected error occurred invoking '%.200s' on "
                                               "the server. Too many streams.",
                             m->target);
                complete_error(c, m->invocation_id, msg);
                return;
            }
        }
        if (m->type == KR_SR_STREAM_INVOCATION) {
            dispatch(c, m); /* streams run beside the one-at-a-time invocations */
            return;
        }
        if (c->busy || !kr_list_empty(&c->queue)) {
            if (c->nqueued >= c->hub->opts.max_queued_invocations) {
                /* Only possible while a client result is awaited (reading never pauses
                 * then): refuse rather than queue without bound. */
                kr_sr_uploads_close(c, m);
                char msg[300];
                snprintf(msg, sizeof(msg),
                         "Failed to invoke '%.200s': too many invocations are waiting for this "
                         "connection.",
                         m->target);
                complete_error(c, m->invocation_id, msg);
                return;
            }
            queued_msg_t *q = kr_malloc(sizeof(*q));
            kr_sr_msg_move(&q->msg, m); /* ownership of the parsed values moves into the queue */
            kr_list_insert_tail(&c->queue, &q->link);
            c->nqueued++;
            return;
        }
        dispatch(c, m);
        return;
    }
    case KR_SR_STREAM_ITEM:
    case KR_SR_COMPLETION:
    case KR_SR_CANCEL_INVOCATION:
        kr__sr_calls_message(c, m);
        return;
    case KR_SR_PING:
        c->got_ping = 1;
        return;
    case KR_SR_CLOSE:
        /* The client is leaving: answer with a Close and end the transport. */
        kr_sr_conn_close(c, NULL, 0);
        return;
    default:
        /* Ack / Sequence without stateful reconnect, and unknown types: ignored, as .NET does. */
        return;
    }
}

/* The next record of the received bytes: sets *rec, *rec_len and returns the bytes to consume,
 * 0 when incomplete, -1 for a broken MessagePack length prefix. The handshake is always JSON. */
static long next_record(const kr_sr_conn_t *c, const char *data, size_t len, const char **rec,
                        size_t *rec_len)
{
    if (c->state == SR_CONNECTED && c->protocol == KR_SR_PROTO_MSGPACK) {
        size_t off = 0;
        *rec_len = 0;
        long used = kr_sr_mp_next_record(data, len, &off, rec_len);
        if (used > 0)
            *rec = data + off;
        return used; /* 0 with *rec_len set: the prefix announced a length, the body is partial */
    }
    size_t used = kr_sr_json_next_record(data, len, rec_len);
    *rec = data;
    return (long)used;
}

static int parse_record(const kr_sr_conn_t *c, const char *rec, size_t len, kr_sr_msg_t *m,
                        const char **err)
{
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        return kr_sr_mp_parse(rec, len, m, err);
    return kr_sr_json_parse(rec, len, m, err);
}

static void too_large(kr_sr_conn_t *c)
{
    char detail[160];
    snprintf(detail, sizeof(detail),
             "The maximum message size of %zuB was exceeded. The message size can be configured "
             "in AddHubOptions.",
             c->hub->opts.max_message_bytes);
    if (c->state == SR_HANDSHAKING)
        handshake_fail(c, "Handshake was canceled.");
    else
        protocol_error(c, detail);
}

static void process_input(kr_sr_conn_t *c)
{
    kr_hub_t *hub = c->hub;
    size_t off = 0;
    const char *data = kr_sbuf_data(&c->inbuf);
    size_t len = kr_sbuf_len(&c->inbuf);
    while (c->state == SR_HANDSHAKING || c->state == SR_CONNECTED) {
        if (c->state == SR_CONNECTED && must_pause(c)) {
            /* Back-pressure: stop reading until the queue drains (dispatch_next resumes);
             * a POST is answered only then (respond_held_post). */
            if (!c->paused) {
                c->paused = 1;
                if (c->ws)
                    kr_conn_read_stop(kr_ws_conn(c->ws));
            }
            break;
        }
        const char *rec = NULL;
        size_t rec_len = 0;
        long used = next_record(c, data + off, len - off, &rec, &rec_len);
        if (used < 0) {
            protocol_error(c, "Messages over 2GB in size are not supported.");
            break;
        }
        if (used == 0) {
            /* Incomplete: refuse as soon as the record is known to be too large, rather than
             * buffering up to what a length prefix announces. */
            if (len - off > hub->opts.max_message_bytes + 5 || rec_len > hub->opts.max_message_bytes)
                too_large(c);
            break;
        }
        off += (size_t)used;
        if (rec_len > hub->opts.max_message_bytes) {
            too_large(c);
            break;
        }
        if (c->state == SR_HANDSHAKING) {
            handle_handshake(c, rec, rec_len);
            continue;
        }
        if (rec_len == 0)
            continue;
        kr_sr_msg_t m;
        const char *err = NULL;
        if (parse_record(c, rec, rec_len, &m, &err) != 0) {
            protocol_error(c, err ? err : "malformed message");
            break;
        }
        handle_message(c, &m);
        kr_sr_msg_dispose(&m);
    }
    /* Keep what was not consumed (a partial record, or records waiting for the queue). */
    if (c->state >= SR_CLOSING) {
        kr_sbuf_reset(&c->inbuf);
    } else if (off > 0) {
        memmove(kr_sbuf_data(&c->inbuf), kr_sbuf_data(&c->inbuf) + off, len - off);
        c->inbuf.buf->len = len - off;
    }
}

/* ---- timers: handshake timeout, keep-alive, client timeout, stale negotiations ---------- */

static void on_tick(uv_timer_t *t)
{
    kr_hub_t *hub = t->data;
    uint64_t now = now_ms(hub);
    kr_list_t *it = hub->conns.next;
    while (it != &hub->conns) {
        kr_sr_conn_t *c = kr_container_of(it, kr_sr_conn_t, link);
        it = it->next;
        kr_sr_conn_ref(c);
        if (c->state == SR_CONNECTED)
            kr__sr_calls_tick(c, now); /* client results past their deadline */
        if (c->transport == KR_SR_TRANSPORT_LP && c->state != SR_CLOSED) {
            /* Long polling has no pings: a held poll is answered empty after the poll timeout,
             * and a client that stops polling (or whose poll's socket went away) is gone. */
            if (c->poll != NULL && c->poll->conn == NULL)
                kr__sr_lp_release(c, 204);
            if (c->poll != NULL && now - c->poll_since_ms >= hub->opts.poll_timeout_ms)
                kr__sr_lp_release(c, 200);
            else if (c->poll == NULL && now - c->poll_since_ms >= hub->opts.disconnect_timeout_ms)
                conn_ended(c, c->lp_ended ? NULL : "the client stopped polling");
            if (c->state == SR_HANDSHAKING && now - c->created_ms >= hub->opts.handshake_timeout_ms)
                handshake_fail(c, "Handshake was canceled.");
            kr_sr_conn_unref(c);
            continue;
        }
        switch (c->state) {
        case SR_NEGOTIATED:
            if (now - c->created_ms >= hub->opts.disconnect_timeout_ms)
                conn_finish(c);
            break;
        case SR_HANDSHAKING:
            if (now - c->created_ms >= hub->opts.handshake_timeout_ms)
                handshake_fail(c, "Handshake was canceled.");
            break;
        case SR_CONNECTED:
            if (c->close_at_ms != 0 && (int64_t)kr_time_wall_ms() >= c->close_at_ms) {
                /* CloseOnAuthenticationExpiration: a Close without error that allows a
                 * reconnect (with fresh credentials), as ASP.NET Core sends. */
                KR_LOG(KR_LOG_INFO, "hub", "%s: %s credentials expired: closing", hub->path,
                       c->id);
                c->close_at_ms = 0;
                kr_sr_conn_close(c, NULL, 1);
                break;
            }
            if (c->detached) {
                if (now - c->detached_ms >= hub->opts.disconnect_timeout_ms)
                    conn_ended(c, "the client did not reconnect");
                break;
            }
            if (c->stateful && c->recv_done > c->acked_sent)
                send_ack(c); /* about once a second: the tick's longest interval */
            if (c->got_ping && now - c->last_recv_ms >= hub->opts.client_timeout_ms) {
                KR_LOG(KR_LOG_INFO, "hub", "%s: %s client timeout", hub->path, c->id);
                kr_sr_conn_close(c, "Connection closed with an error.", 1);
            } else if (now - c->last_send_ms >= hub->opts.keepalive_ms) {
                kr_sbuf_t sb;
                kr_sbuf_init(&sb, 16);
                write_ping(c, &sb);
                send_records(c, &sb, 0);
            }
            break;
        default:
            break;
        }
        kr_sr_conn_unref(c); /* `it` was taken before: only c itself can have left the list */
    }
}

static uint64_t tick_interval(const kr_hub_opts_t *o)
{
    uint64_t m = o->keepalive_ms;
    if (o->client_timeout_ms < m)
        m = o->client_timeout_ms;
    if (o->handshake_timeout_ms < m)
        m = o->handshake_timeout_ms;
    m /= 10;
    return m < 20 ? 20 : m > 1000 ? 1000 : m;
}

/* ---- HTTP endpoints --------------------------------------------------------------------- */

static void respond_text(kr_http_req_t *req, int status, const char *text)
{
    kr_http_respond_text(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* POST {hub}?id=: records from the client of an SSE or long-polling connection. */
static void receive_post(kr_sr_conn_t *c, kr_http_req_t *req)
{
    if (req->body && req->body->len > 0) {
        c->last_recv_ms = now_ms(c->hub);
        kr_sbuf_append(&c->inbuf, req->body->data, req->body->len);
        kr_sr_conn_ref(c);
        process_input(c);
        kr_sr_conn_unref(c);
        if (c->paused && c->held_post == NULL && c->state == SR_CONNECTED) {
            /* Back-pressure: the client sends its next POST only after this one's answer. */
            c->held_post = req;
            kr_http_req_ref(req);
            return;
        }
    }
    kr_http_respond(req, 200, NULL, 0, NULL);
}

static void ws_options(const kr_hub_t *hub, kr_ws_opts_t *wo)
{
    kr_ws_opts_default(wo);
    /* Records may arrive in any number of frames; the hub enforces its own message limit on
     * records, the frame layer only a generous bound on one WebSocket message. */
    wo->max_message = hub->opts.max_message_bytes * 4 + 1024;
    wo->high_water = hub->opts.high_water;
    wo->low_water = hub->opts.low_water;
    wo->hard_limit = hub->opts.hard_limit;
}

/* Checks the upgrade request (answering it on failure) and switches the connection to
 * WebSocket for c; NULL when that did not happen. */
static kr_ws_t *accept_websocket(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c)
{
    int status = kr_ws_check_upgrade(req);
    if (status != 0) {
        kr_ws_reject(req, status);
        return NULL;
    }
    kr_ws_opts_t wo;
    ws_options(hub, &wo);
    return kr_ws_accept(req, &ws_handler, c, &wo);
}

static void start_websocket(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c,
                            const kr_hub_principal_t *p)
{
    int fresh = c == NULL;
    if (fresh) {
        c = conn_new(hub, 0); /* skipNegotiation */
        set_principal(c, p);
    }
    kr_ws_t *ws = accept_websocket(hub, req, c);
    if (ws == NULL) {
        if (fresh)
            conn_finish(c);
        return;
    }
    c->ws = ws;
    kr_ws_conn(ws)->corkable = 1;
    c->transport = KR_SR_TRANSPORT_WS;
    c->state = SR_HANDSHAKING;
    c->created_ms = c->last_recv_ms = now_ms(hub); /* the handshake timeout starts now */
}

/* Stateful reconnect: the client comes back on a new socket with the same id. No handshake:
 * the server sends Sequence (the first unacknowledged message), then replays everything
 * unacknowledged, in order; the client does the same the other way. */
static void reattach_websocket(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c)
{
    kr_ws_t *ws = accept_websocket(hub, req, c);
    if (ws == NULL)
        return;
    if (c->ws != NULL) {
        /* The client gave up on its old socket (it only reconnects after a drop): retire it. */
        kr_ws_t *old = c->ws;
        c->ws = NULL;
        kr_ws_set_userdata(old, NULL);
        kr_ws_close(old, 1000, NULL);
        kr_sbuf_reset(&c->inbuf);
    }
    c->ws = ws;
    c->detached = 0;
    c->last_recv_ms = now_ms(hub);
    c->got_ping = 0;
    kr_ws_conn(ws)->corkable = 1;
    if (c->paused)
        kr_conn_read_stop(kr_ws_conn(ws));
    int64_t first = c->send_seq + 1;
    if (!kr_list_empty(&c->replay))
        first = kr_container_of(c->replay.next, replay_unit_t, link)->first_seq;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    if (c->protocol == KR_SR_PROTO_MSGPACK)
        kr_sr_mp_write_sequence(&sb, first);
    else
        kr_sr_json_write_sequence(&sb, first);
    kr_ws_send_frame(ws, make_unit(c->wire, kr_sbuf_finish(&sb)));
    kr_list_t *it;
    unsigned n = 0;
    kr_list_foreach(it, &c->replay)
    {
        kr_ws_send_frame(ws, kr_buf_ref(kr_container_of(it, replay_unit_t, link)->unit));
        n++;
    }
    replay_admit(c);
    KR_LOG(KR_LOG_INFO, "hub", "%s: %s reconnected (stateful; %u unit(s) replayed from %lld)",
           hub->path, c->id, n, (long long)first);
}

static int accepts_event_stream(const kr_http_req_t *req)
{
    const char *accept = kr_http_req_header(req, "accept", NULL);
    return accept != NULL && strstr(accept, "text/event-stream") != NULL;
}

static int is_negotiate_path(const kr_hub_t *hub, const kr_http_req_t *req)
{
    return req->path_len == hub->path_len + 10 &&
           memcmp(req->path, hub->path, hub->path_len) == 0 &&
           memcmp(req->path + hub->path_len, "/negotiate", 10) == 0;
}

static void handle_endpoint(kr_hub_t *hub, kr_http_req_t *req, const kr_hub_principal_t *p);

int kr_hub_handle_http(kr_hub_t *hub, kr_http_req_t *req)
{
    if (!is_negotiate_path(hub, req) &&
        !(req->path_len == hub->path_len && memcmp(req->path, hub->path, hub->path_len) == 0))
        return 0;
    if (hub->shutting_down) {
        respond_text(req, 503, "Server stopping");
        return 1;
    }
    if (hub->app.authorize)
        hub->app.authorize(hub, req, hub->app_ud); /* it calls kr_hub_http_continue */
    else
        handle_endpoint(hub, req, NULL);
    return 1;
}

void kr_hub_http_continue(kr_hub_t *hub, kr_http_req_t *req, const kr_hub_principal_t *p)
{
    if (req->conn == NULL || req->head_sent)
        return;
    if (hub->shutting_down) {
        respond_text(req, 503, "Server stopping");
        return;
    }
    handle_endpoint(hub, req, p);
}

/* Negotiate and the transports, for a request whose user is p (NULL: anonymous). */
static void handle_endpoint(kr_hub_t *hub, kr_http_req_t *req, const kr_hub_principal_t *p)
{
    if (is_negotiate_path(hub, req)) {
        kr__sr_negotiate(hub, req, p);
        return;
    }
    char id[ID_LEN + 8];
    long idlen = kr__sr_query_param(req, "id", id, sizeof(id));
    kr_sr_conn_t *c = NULL;
    if (idlen > 0)
        c = kr_map_get(&hub->by_token, id, (size_t)idlen);
    else if (idlen == -2)
        idlen = 1; /* an id too long to exist: "No Connection with that ID" below */
    if (c != NULL && c->state < SR_CLOSED && !same_user(c, p)) {
        KR_LOG(KR_LOG_WARN, "hub", "%s: %s: a transport request from another user: 403",
               hub->path, c->id);
        respond_text(req, 403, "Forbidden");
        return;
    }
    int is_ws = kr_http_req_header(req, "upgrade", NULL) != NULL;
    if (req->method == KR_M_GET && is_ws) {
        if (!(hub->opts.transports & KR_SR_TRANSPORT_WS)) {
            respond_text(req, 404, "WebSockets transport is not enabled");
        } else if (idlen > 0 && (c == NULL || c->state >= SR_CLOSING)) {
            respond_text(req, 404, "No Connection with that ID");
        } else if (c != NULL && c->stateful && c->state == SR_CONNECTED) {
            /* Stateful reconnect; the old socket may not have reported its end yet. */
            reattach_websocket(hub, req, c);
        } else if (c != NULL && c->state != SR_NEGOTIATED) {
            respond_text(req, 409, "Connection already has a transport");
        } else {
            start_websocket(hub, req, c, p);
        }
        return;
    }
    if (req->method != KR_M_GET && req->method != KR_M_POST && req->method != KR_M_DELETE) {
        kr_http_header_t h = {"Allow", "GET, POST, DELETE", 5, 17};
        kr_http_respond(req, 405, &h, 1, NULL);
        return;
    }
    if (idlen <= 0) {
        respond_text(req, 400, "Connection ID required");
    } else if (c == NULL || (c->state >= SR_CLOSING && c->transport != KR_SR_TRANSPORT_LP)) {
        /* A closing long-polling connection still answers polls: its Close record, then 204. */
        respond_text(req, 404, "No Connection with that ID");
    } else if (c->transport == KR_SR_TRANSPORT_WS) {
        if (req->method == KR_M_POST)
            respond_text(req, 405, "POST requests are not allowed on WebSocket connections.");
        else if (req->method == KR_M_DELETE)
            respond_text(req, 400, "Cannot terminate this connection using the DELETE endpoint.");
        else
            respond_text(req, 400, "Cannot change transports mid-connection");
    } else if (c->transport == KR_SR_TRANSPORT_SSE) {
        if (req->method == KR_M_POST)
            receive_post(c, req);
        else if (req->method == KR_M_DELETE)
            respond_text(req, 400, "Cannot terminate this connection using the DELETE endpoint.");
        else
            respond_text(req, 400, "Cannot change transports mid-connection");
    } else if (c->transport == KR_SR_TRANSPORT_LP) {
        if (req->method == KR_M_POST && c->state >= SR_CLOSING)
            respond_text(req, 404, "No Connection with that ID"); /* e.g. a Close after DELETE */
        else if (req->method == KR_M_POST)
            receive_post(c, req);
        else if (req->method == KR_M_DELETE)
            kr__sr_handle_delete(c, req);
        else
            kr__sr_handle_poll(hub, req, c);
    } else if (req->method == KR_M_GET && accepts_event_stream(req)) {
        if (!(hub->opts.transports & KR_SR_TRANSPORT_SSE))
            respond_text(req, 404, "ServerSentEvents transport is not enabled");
        else
            kr__sr_start_sse(hub, req, c);
    } else if (req->method == KR_M_GET) {
        if (!(hub->opts.transports & KR_SR_TRANSPORT_LP))
            respond_text(req, 404, "LongPolling transport is not enabled");
        else
            kr__sr_handle_poll(hub, req, c);
    } else {
        /* A negotiated connection has no transport yet: nothing can be sent or deleted. */
        respond_text(req, 404, "No Connection with that ID");
    }
}

/* ---- the hub ---------------------------------------------------------------------------- */

kr_hub_t *kr_hub_new(kr_server_t *server, const char *path, const kr_hub_opts_t *opts,
                     const kr_hub_app_t *app, void *ud)
{
    kr_hub_t *hub = kr_calloc(1, sizeof(*hub));
    hub->server = server;
    hub->path = kr_strdup(path);
    hub->path_len = strlen(path);
    while (hub->path_len > 1 && hub->path[hub->path_len - 1] == '/')
        hub->path[--hub->path_len] = '\0';
    hub->opts = *opts;
    if (app)
        hub->app = *app;
    hub->app_ud = ud;
    kr_map_init(&hub->by_id, 0);
    kr_map_init(&hub->by_token, 0);
    kr_map_init(&hub->groups, 0);
    kr_map_init(&hub->users, 0);
    kr_list_init(&hub->conns);
    uv_timer_init(server->loop, &hub->timer);
    hub->timer.data = hub;
    uv_timer_init(server->loop, &hub->lp_timer);
    hub->lp_timer.data = hub;
    kr_list_init(&hub->lp_ready);
    kr_list_init(&hub->resume_ready);
    hub->open_handles = 2;
    uint64_t iv = tick_interval(&hub->opts);
    uv_timer_start(&hub->timer, on_tick, iv, iv);
    uv_unref((uv_handle_t *)&hub->timer); /* never keeps the loop alive by itself */
    return hub;
}

const char *kr_hub_path(const kr_hub_t *hub)
{
    return hub->path;
}

const kr_hub_opts_t *kr_hub_opts(const kr_hub_t *hub)
{
    return &hub->opts;
}

void kr_hub_set_opts(kr_hub_t *hub, const kr_hub_opts_t *opts)
{
    hub->opts = *opts;
    uint64_t iv = tick_interval(&hub->opts);
    if (!hub->shutting_down)
        uv_timer_start(&hub->timer, on_tick, iv, iv);
}

/* serverShutdown("Server stopping") as an invocation record. */
static int encode_shutdown(void *ud, int protocol, kr_sbuf_t *sb)
{
    KR_UNUSED(ud);
    if (protocol == KR_SR_PROTO_MSGPACK) {
        size_t start = kr_sr_mp_write_invocation_head(sb, NULL, "serverShutdown");
        kr_mp_put_array(sb, 1);
        kr_mp_put_str(sb, "Server stopping", 15);
        kr_sr_mp_write_invocation_tail(sb, start);
        return 0;
    }
    kr_sr_json_write_invocation_head(sb, NULL, "serverShutdown");
    kr_sbuf_puts(sb, "[\"Server stopping\"]");
    kr_sr_json_write_tail(sb);
    return 0;
}

void kr_hub_shutdown(kr_hub_t *hub)
{
    if (hub->shutting_down)
        return;
    hub->shutting_down = 1;
    uv_timer_stop(&hub->timer);
    kr_sr_payload_t p = {encode_shutdown, NULL};
    unsigned n = 0;
    kr_hub_send_all(hub, &p, &n);
    kr_list_t *it = hub->conns.next;
    while (it != &hub->conns) {
        kr_sr_conn_t *c = kr_container_of(it, kr_sr_conn_t, link);
        it = it->next;
        kr_sr_conn_ref(c);
        kr_sr_conn_close(c, NULL, 1);
        kr_sr_conn_unref(c);
    }
    if (n)
        KR_LOG(KR_LOG_INFO, "hub", "%s: told %u client(s) the server is stopping", hub->path, n);
}

static void on_timer_closed(uv_handle_t *h)
{
    kr_hub_t *hub = h->data;
    if (--hub->open_handles == 0)
        kr_free(hub);
}

static void free_group(const char *key, void *value, void *ud)
{
    KR_UNUSED(key);
    KR_UNUSED(ud);
    group_t *g = value;
    kr_free(g->name);
    kr_free(g->members);
    kr_free(g);
}

void kr_hub_free(kr_hub_t *hub)
{
    if (hub == NULL)
        return;
    while (!kr_list_empty(&hub->conns)) {
        kr_sr_conn_t *c = kr_container_of(hub->conns.next, kr_sr_conn_t, link);
        c->ngroups = 0;      /* the groups are freed wholesale below */
        c->user_m.g = NULL;
        if (c->state == SR_CONNECTED)
            hub->nconnected--;
        c->state = SR_CLOSED;
        if (c->ws)
            kr_ws_set_userdata(c->ws, NULL);
        if (c->sse)
            c->sse->proto_data = NULL;
        if (c->poll) {
            kr_http_req_unref(c->poll); /* the loop is over: nobody to answer */
            c->poll = NULL;
        }
        if (c->held_post) {
            kr_http_req_unref(c->held_post);
            c->held_post = NULL;
        }
        kr_list_remove(&c->lp_ready_link);
        kr_list_remove(&c->resume_link);
        kr_list_remove(&c->link);
        kr_sr_conn_unref(c);
    }
    kr_map_foreach(&hub->groups, free_group, NULL);
    kr_map_foreach(&hub->users, free_group, NULL);
    kr_map_dispose(&hub->by_id);
    kr_map_dispose(&hub->by_token);
    kr_map_dispose(&hub->groups);
    kr_map_dispose(&hub->users);
    kr_free(hub->path);
    hub->path = NULL;
    uv_close((uv_handle_t *)&hub->timer, on_timer_closed); /* the last close frees the hub */
    uv_close((uv_handle_t *)&hub->lp_timer, on_timer_closed);
}
