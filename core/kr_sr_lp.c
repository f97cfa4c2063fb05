/* kr_sr_lp.c: the long-polling transport of hub connections: delivery units queue on the
 * connection until a poll (GET {hub}?id=) takes them all; a DELETE ends the connection.
 * Client messages come in POSTs (kr_hub.c's receive_post). See kr_hub.h.
 *
 * One poll is held at a time (a second one replaces it). A poll is never answered inside the
 * stack that queued the unit (a broadcast loop): answering ends an HTTP request, which may
 * start the next one, so ready polls are answered from the hub's deferred-work timer at the
 * next loop turn (kr__sr_on_lp_timer in kr_hub.c). The queue has the same hard limit as any
 * output queue. The poll timeout and a client that stops polling are the hub tick's business.
 * Ending (lp_ended): what is still queued (the Close) goes out with the held or the next poll,
 * and the poll after that gets 204, which ends the connection on the client.
 */
#include "kr_hub_int.h"

void kr__sr_lp_schedule(kr_sr_conn_t *c)
{
    kr_hub_t *hub = c->hub;
    if (c->poll == NULL || kr_list_linked(&c->lp_ready_link))
        return;
    /* Answered from a timer at the next loop turn, never inside the caller's stack (a
     * broadcast loop): answering ends an HTTP request, which may start the next one. */
    kr_list_insert_tail(&hub->lp_ready, &c->lp_ready_link);
    if (!uv_is_active((uv_handle_t *)&hub->lp_timer))
        uv_timer_start(&hub->lp_timer, kr__sr_on_lp_timer, 0, 0);
}

/* deliver's long-polling branch: queues a unit for the next poll (takes the reference). */
int kr__sr_lp_push(kr_sr_conn_t *c, kr_buf_t *unit)
{
    /* The same bound as any output queue: past the hard limit the client is too slow. */
    if (c->lp_queue.bytes + unit->len > c->hub->opts.hard_limit) {
        kr_buf_unref(unit);
        c->hub->server->stats.slow_consumers++;
        c->lp_ended = 1;
        kr__sr_lp_schedule(c);
        return KR_ELIMIT;
    }
    kr_outq_push(&c->lp_queue, unit);
    kr__sr_lp_schedule(c);
    return 0;
}

static const kr_http_header_t lp_headers[] = {
    {"Content-Type", "application/octet-stream", 12, 24},
    {"Cache-Control", "no-cache", 13, 8},
};

/* Answers the held poll with everything queued (200), or with status when nothing is queued
 * and status is 204. */
void kr__sr_lp_answer(kr_sr_conn_t *c)
{
    kr_http_req_t *req = c->poll;
    if (req == NULL)
        return;
    c->poll = NULL;
    kr_list_remove(&c->lp_ready_link);
    c->poll_since_ms = kr__hub_now(c->hub);
    if (kr_outq_empty(&c->lp_queue) && c->lp_ended) {
        kr_http_respond(req, 204, lp_headers + 1, 1, NULL);
    } else {
        /* Whole records only: the queue holds complete delivery units. */
        kr_http_respond_start(req, 200, lp_headers, 2, (int64_t)c->lp_queue.bytes);
        kr_outq_t *q = &c->lp_queue;
        for (uint32_t i = 0; i < q->count; i++)
            kr_http_respond_body(req, kr_buf_ref(q->items[(q->head + i) % q->cap].buf));
        kr_outq_dispose(q);
        kr_outq_init(q);
        kr_http_respond_end(req);
    }
    kr_http_req_unref(req);
}

/* Lets go of a held poll: answered with status (204 at the end, 200 on timeout). */
void kr__sr_lp_release(kr_sr_conn_t *c, int status)
{
    kr_http_req_t *req = c->poll;
    if (req == NULL)
        return;
    c->poll = NULL;
    kr_list_remove(&c->lp_ready_link);
    kr_http_respond(req, status, lp_headers + 1, 1, NULL);
    kr_http_req_unref(req);
}

/* GET {hub}?id=: the first poll activates the connection and answers empty at once (the
 * client discards that body); later ones are held until there is something to send. */
void kr__sr_handle_poll(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c)
{
    if (c->transport == 0) {
        c->transport = KR_SR_TRANSPORT_LP;
        c->wire = KR_WIRE_RAW_JSON;
        c->state = SR_HANDSHAKING;
        c->created_ms = c->last_recv_ms = c->poll_since_ms = kr__hub_now(hub);
        kr_http_respond(req, 200, lp_headers, 2, NULL);
        return;
    }
    if (c->poll != NULL)
        kr__sr_lp_release(c, 204); /* a second poll replaces the first */
    if (c->lp_ended && kr_outq_empty(&c->lp_queue)) {
        kr_http_respond(req, 204, lp_headers + 1, 1, NULL);
        kr__sr_conn_ended(c, NULL);
        return;
    }
    c->poll = req;
    kr_http_req_ref(req);
    c->poll_since_ms = kr__hub_now(hub);
    if (!kr_outq_empty(&c->lp_queue) || c->lp_ended)
        kr__sr_lp_answer(c); /* at loop level (the HTTP dispatch), so answering here is safe */
}

/* DELETE {hub}?id=: the client stopped (it aborted its poll first). */
void kr__sr_handle_delete(kr_sr_conn_t *c, kr_http_req_t *req)
{
    kr_http_respond(req, 202, NULL, 0, NULL);
    c->lp_ended = 1;
    kr__sr_conn_ended(c, NULL);
}
