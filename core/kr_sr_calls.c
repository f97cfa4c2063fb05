/* kr_sr_calls.c: what is in flight on a hub connection besides the one-at-a-time
 * invocations: server-to-client streams (cancellable), client-to-server upload streams
 * (bounded buffers) and client results the server awaits (with deadlines). See kr_hub.h.
 *
 * Each is a call_t on the connection's list, found by invocation or stream id. The list is
 * short (bounded by max_streams), so a linear search beats an index. Callbacks into the app
 * run with the call already off the list, so they may start or end other calls.
 * Back-pressure: an upload stream holding stream_buffer_capacity items counts in
 * c->full_uploads, which pauses reading; taking an item resumes it. A client result being
 * awaited counts in c->npending_results, which keeps reading going whatever else is full,
 * because the Completion it waits for is somewhere in the unread bytes.
 */
#include "kr_hub_int.h"
#include "kr_log.h"

#include <inttypes.h>
#include <stdio.h>

typedef enum { CALL_STREAM, CALL_UPLOAD, CALL_RESULT } call_kind_e;

/* Uploads beyond capacity are still accepted while reading cannot pause (a client result is
 * awaited), up to this many times the capacity; past that the client is breaking the rules. */
#define UPLOAD_OVERFLOW_FACTOR 8

typedef struct upload_item_s {
    kr_list_t link;
    kr_sr_msg_t msg;
} upload_item_t;

struct kr_sr_upload_s {
    kr_list_t link; /* c->calls */
    call_kind_e kind;
    kr_sr_conn_t *c;
    char *id;
    /* CALL_STREAM */
    kr_sr_cancel_cb cancel;
    void *cancel_ud;
    /* CALL_RESULT */
    kr_sr_result_cb result_cb;
    void *result_ud;
    uint64_t deadline_ms;
    /* CALL_UPLOAD */
    kr_list_t items;
    unsigned nitems;
    int full;  /* counted in c->full_uploads */
    int ended;
    char *error;
    void (*wait_cb)(void *ud);
    void *wait_ud;
};

typedef struct kr_sr_upload_s call_t;

void kr__sr_calls_init(kr_sr_conn_t *c)
{
    kr_list_init(&c->calls);
}

static call_t *find_call(kr_sr_conn_t *c, const char *id)
{
    kr_list_t *it;
    kr_list_foreach(it, &c->calls)
    {
        call_t *k = kr_container_of(it, call_t, link);
        if (strcmp(k->id, id) == 0)
            return k;
    }
    return NULL;
}

static call_t *call_new(kr_sr_conn_t *c, call_kind_e kind, const char *id)
{
    call_t *k = kr_calloc(1, sizeof(*k));
    k->kind = kind;
    k->c = c;
    k->id = kr_strdup(id);
    kr_list_init(&k->items);
    kr_list_insert_tail(&c->calls, &k->link);
    c->ncalls++;
    return k;
}

static void set_full(call_t *u, int full)
{
    if (u->full == full)
        return;
    u->full = full;
    if (full)
        u->c->full_uploads++;
    else
        u->c->full_uploads--;
}

/* Takes the call off the list and frees it (buffered items included). */
static void call_free(call_t *k)
{
    kr_sr_conn_t *c = k->c;
    if (kr_list_linked(&k->link)) {
        kr_list_remove(&k->link);
        c->ncalls--;
    }
    if (k->kind == CALL_RESULT)
        c->npending_results--;
    set_full(k, 0);
    while (!kr_list_empty(&k->items)) {
        upload_item_t *it = kr_container_of(k->items.next, upload_item_t, link);
        kr_list_remove(&it->link);
        kr_sr_msg_dispose(&it->msg);
        kr_free(it);
    }
    kr_free(k->error);
    kr_free(k->id);
    kr_free(k);
}

/* ---- server-to-client streams ------------------------------------------------------------ */

int kr_sr_stream_begin(kr_sr_conn_t *c, const char *invocation_id, kr_sr_cancel_cb cancel,
                       void *ud)
{
    if (c->state != SR_CONNECTED)
        return KR_ECLOSED;
    if (find_call(c, invocation_id) != NULL)
        return KR_EEXIST;
    if (c->ncalls >= c->hub->opts.max_streams)
        return KR_ELIMIT;
    call_t *k = call_new(c, CALL_STREAM, invocation_id);
    k->cancel = cancel;
    k->cancel_ud = ud;
    return 0;
}

void kr_sr_stream_end(kr_sr_conn_t *c, const char *invocation_id)
{
    call_t *k = find_call(c, invocation_id);
    if (k != NULL && k->kind == CALL_STREAM)
        call_free(k);
}

/* ---- upload streams ------------------------------------------------------------------------ */

int kr__sr_uploads_open(kr_sr_conn_t *c, const kr_sr_msg_t *m, const char **dup_id)
{
    unsigned opened = 0;
    int rc = 0;
    for (unsigned i = 0; i < m->nstream_ids; i++) {
        if (find_call(c, m->stream_ids[i]) != NULL) {
            *dup_id = m->stream_ids[i];
            rc = KR_EEXIST;
            break;
        }
        if (c->ncalls >= c->hub->opts.max_streams) {
            rc = KR_ELIMIT;
            break;
        }
        call_new(c, CALL_UPLOAD, m->stream_ids[i]);
        opened++;
    }
    if (rc != 0) {
        for (unsigned i = 0; i < opened; i++) {
            call_t *k = find_call(c, m->stream_ids[i]);
            if (k != NULL)
                call_free(k);
        }
    }
    return rc;
}

void kr_sr_uploads_close(kr_sr_conn_t *c, const kr_sr_msg_t *m)
{
    for (unsigned i = 0; i < m->nstream_ids; i++) {
        call_t *k = find_call(c, m->stream_ids[i]);
        if (k != NULL && k->kind == CALL_UPLOAD)
            call_free(k);
    }
    kr__sr_maybe_resume(c);
}

kr_sr_upload_t *kr_sr_upload_find(kr_sr_conn_t *c, const char *stream_id)
{
    call_t *k = find_call(c, stream_id);
    return k != NULL && k->kind == CALL_UPLOAD ? k : NULL;
}

static void upload_wake(call_t *u)
{
    void (*cb)(void *) = u->wait_cb;
    void *ud = u->wait_ud;
    u->wait_cb = NULL;
    u->wait_ud = NULL;
    if (cb != NULL)
        cb(ud);
}

int kr_sr_upload_next(kr_sr_upload_t *u, kr_sr_msg_t *item, const char **error)
{
    if (!kr_list_empty(&u->items)) {
        upload_item_t *it = kr_container_of(u->items.next, upload_item_t, link);
        kr_list_remove(&it->link);
        u->nitems--;
        kr_sr_msg_move(item, &it->msg);
        kr_free(it);
        if (u->nitems < u->c->hub->opts.stream_buffer_capacity) {
            set_full(u, 0);
            kr__sr_maybe_resume(u->c);
        }
        return 1;
    }
    if (u->ended) {
        *error = u->error;
        return -1;
    }
    return 0;
}

void kr_sr_upload_wait(kr_sr_upload_t *u, void (*cb)(void *ud), void *ud)
{
    u->wait_cb = ud != NULL ? cb : NULL;
    u->wait_ud = ud;
}

void kr_sr_upload_close(kr_sr_upload_t *u)
{
    kr_sr_conn_t *c = u->c;
    call_free(u);
    kr__sr_maybe_resume(c);
}

static void upload_item(kr_sr_conn_t *c, call_t *u, kr_sr_msg_t *m)
{
    unsigned cap = c->hub->opts.stream_buffer_capacity;
    if (u->ended)
        return; /* items after the completion are ignored */
    if (u->nitems >= cap * UPLOAD_OVERFLOW_FACTOR) {
        kr_sr_conn_close(c, "Connection closed with an error.", 1);
        KR_LOG(KR_LOG_INFO, "hub", "%s: %s overflowed upload stream '%s'", kr_hub_path(c->hub),
               c->id, u->id);
        return;
    }
    upload_item_t *it = kr_malloc(sizeof(*it));
    kr_sr_msg_move(&it->msg, m);
    kr_list_insert_tail(&u->items, &it->link);
    u->nitems++;
    if (u->nitems >= cap)
        set_full(u, 1);
    upload_wake(u);
}

static void upload_end(call_t *u, const char *error)
{
    if (u->ended)
        return;
    u->ended = 1;
    u->error = error ? kr_strdup(error) : NULL;
    upload_wake(u);
}

/* ---- client results ------------------------------------------------------------------------ */

int kr_sr_result_expect(kr_sr_conn_t *c, char *id, uint64_t timeout_ms, kr_sr_result_cb cb,
                        void *ud)
{
    if (c->state != SR_CONNECTED)
        return KR_ECLOSED;
    if (c->ncalls >= c->hub->opts.max_streams)
        return KR_ELIMIT;
    /* Server ids live in their own space ("s" + a counter): the client keys its handlers by
     * target, and its own invocation ids are plain decimals. */
    snprintf(id, 24, "s%" PRIu64, ++c->next_call_id);
    call_t *k = call_new(c, CALL_RESULT, id);
    k->result_cb = cb;
    k->result_ud = ud;
    k->deadline_ms = kr__hub_now(c->hub) + timeout_ms;
    c->npending_results++;
    kr__sr_maybe_resume(c); /* reading must go on for the Completion to arrive */
    return 0;
}

void kr_sr_result_forget(kr_sr_conn_t *c, const char *id)
{
    call_t *k = find_call(c, id);
    if (k != NULL && k->kind == CALL_RESULT)
        call_free(k);
}

/* Calls the result's callback once, after taking it off the list. */
static void result_finish(call_t *k, const kr_sr_msg_t *m, const char *error)
{
    kr_sr_conn_t *c = k->c;
    kr_sr_result_cb cb = k->result_cb;
    void *ud = k->result_ud;
    kr_list_remove(&k->link);
    c->ncalls--;
    c->npending_results--;
    k->kind = CALL_STREAM; /* already uncounted: call_free must not count it again */
    call_free(k);
    cb(c, m, error, ud);
}

/* ---- routing received messages ------------------------------------------------------------- */

void kr__sr_calls_message(kr_sr_conn_t *c, kr_sr_msg_t *m)
{
    call_t *k = find_call(c, m->invocation_id);
    if (k == NULL) {
        /* Items or completions for unknown ids, cancellations of finished streams: ignored,
         * as ASP.NET Core does. */
        KR_LOG(KR_LOG_DEBUG, "hub", "%s: %s message type %d for unknown id '%s' ignored",
               kr_hub_path(c->hub), c->id, m->type, m->invocation_id);
        return;
    }
    switch (m->type) {
    case KR_SR_STREAM_ITEM:
        if (k->kind == CALL_UPLOAD)
            upload_item(c, k, m);
        return;
    case KR_SR_COMPLETION:
        if (k->kind == CALL_UPLOAD)
            upload_end(k, m->error);
        else if (k->kind == CALL_RESULT)
            result_finish(k, m, m->error);
        return;
    case KR_SR_CANCEL_INVOCATION:
        if (k->kind == CALL_STREAM) {
            kr_sr_cancel_cb cancel = k->cancel;
            void *ud = k->cancel_ud;
            call_free(k);
            if (cancel)
                cancel(c, ud);
        }
        return;
    default:
        return;
    }
}

void kr__sr_calls_tick(kr_sr_conn_t *c, uint64_t now)
{
    kr_list_t *it = c->calls.next;
    while (it != &c->calls) {
        call_t *k = kr_container_of(it, call_t, link);
        it = it->next;
        if (k->kind == CALL_RESULT && now >= k->deadline_ms) {
            result_finish(k, NULL, "Timed out waiting for the client's result.");
            it = c->calls.next; /* the callback may have changed the list: start over */
        }
    }
}

void kr__sr_calls_end(kr_sr_conn_t *c)
{
    /* Streams and results leave the list before their callbacks run; uploads stay (their
     * readers close them) and learn that the stream is over. */
    for (;;) {
        call_t *found = NULL;
        kr_list_t *it;
        kr_list_foreach(it, &c->calls)
        {
            call_t *k = kr_container_of(it, call_t, link);
            if (k->kind != CALL_UPLOAD || !k->ended) {
                found = k;
                break;
            }
        }
        if (found == NULL)
            return;
        if (found->kind == CALL_UPLOAD) {
            upload_end(found, "The connection closed before the stream completed.");
        } else if (found->kind == CALL_RESULT) {
            result_finish(found, NULL,
                          "The connection closed before the client returned a result.");
        } else {
            kr_sr_cancel_cb cancel = found->cancel;
            void *ud = found->cancel_ud;
            call_free(found);
            if (cancel)
                cancel(c, ud);
        }
    }
}

void kr__sr_calls_free(kr_sr_conn_t *c)
{
    while (!kr_list_empty(&c->calls)) {
        call_t *k = kr_container_of(c->calls.next, call_t, link);
        if (k->kind == CALL_RESULT) {
            k->kind = CALL_STREAM; /* no callback at free: the app is gone */
            c->npending_results--;
        }
        call_free(k);
    }
}
