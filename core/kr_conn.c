/* kr_conn.c: accepted TCP connections: reading, batched writing, closing (see kr_conn.h). */
#include "kr_conn.h"
#include "kr_log.h"
#include "kr_server.h"

#include <stdio.h>

#define READ_CHUNK 16384
#define LINGER_MS 2000

static void on_closed(uv_handle_t *h);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void handle_read(kr_conn_t *c, ssize_t nread);

static void free_conn(kr_conn_t *c)
{
    kr_outq_dispose(&c->outq);
    if (!c->rbuf_shared)
        kr_free(c->rbuf);
    kr_free(c);
}

void kr_conn_ref(kr_conn_t *c)
{
    c->refs++;
}

void kr_conn_unref(kr_conn_t *c)
{
    KR_ASSERT(c->refs > 0);
    if (--c->refs == 0 && c->state == KR_CONN_CLOSED)
        free_conn(c);
}

static void format_peer(kr_conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    c->remote_addr[0] = '\0';
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, c->remote_addr, sizeof(c->remote_addr));
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote_addr, sizeof(c->remote_addr));
}

kr_conn_t *kr_conn_accept(kr_server_t *s, uv_stream_t *listener, const kr_conn_proto_t *proto)
{
    kr_conn_t *c = kr_calloc(1, sizeof(*c));
    c->server = s;
    c->proto = proto;
    c->refs = 0;
    c->rmax = 64 * 1024;
    kr_outq_init(&c->outq);
    kr_list_init(&c->link);
    kr_list_init(&c->pending);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        /* Not yet on any list: close the handle and free in the callback. */
        c->state = KR_CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return NULL;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    format_peer(c);
    c->id = ++s->next_conn_id;
    kr_list_insert_tail(&s->conns, &c->link);
    s->stats.connections_total++;
    s->stats.connections_open++;
    kr_conn_read_start(c);
    return c;
}

kr_conn_t *kr__conn_new_detached(kr_server_t *s, const kr_conn_proto_t *proto)
{
    kr_conn_t *c = kr_calloc(1, sizeof(*c));
    c->server = s;
    c->proto = proto;
    c->rmax = 64 * 1024;
    c->detached = 1;
    kr_outq_init(&c->outq);
    kr_list_init(&c->link);
    kr_list_init(&c->pending);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    snprintf(c->remote_addr, sizeof(c->remote_addr), "127.0.0.1");
    c->id = ++s->next_conn_id;
    kr_list_insert_tail(&s->conns, &c->link);
    s->stats.connections_total++;
    s->stats.connections_open++;
    c->want_read = 1;
    return c;
}

size_t kr__conn_feed(kr_conn_t *c, const void *data, size_t len)
{
    if (kr_conn_is_closing(c) || c->lingering || !c->want_read)
        return 0;
    size_t room = c->rmax - c->rlen;
    if (len > room)
        len = room;
    if (len == 0)
        return 0;
    if (c->rcap < c->rlen + len) {
        size_t cap = c->rcap ? c->rcap : 1024;
        while (cap < c->rlen + len)
            cap *= 2;
        if (cap > c->rmax)
            cap = c->rmax;
        c->rbuf = kr_realloc(c->rbuf, cap);
        c->rcap = cap;
    }
    memcpy(c->rbuf + c->rlen, data, len);
    c->rlen += len;
    kr_conn_ref(c);
    c->proto->on_read(c);
    kr_conn_unref(c);
    return len;
}

/* ---- reading ---------------------------------------------------------------------------- */

/* Reads land in the server's shared buffer whenever the connection has nothing pending, so an
 * idle connection owns no read buffer at all (memory per connection is a feature). Only bytes
 * left unconsumed after the protocol ran are copied into a private buffer (release_shared). */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    kr_conn_t *c = h->data;
    kr_server_t *s = c->server;
    KR_UNUSED(suggested);
    if (c->rlen == 0 && !s->rshared_busy) {
        if (s->rshared == NULL)
            s->rshared = kr_malloc(KR_SHARED_READ_BYTES);
        if (!c->rbuf_shared)
            kr_free(c->rbuf);
        c->rbuf = s->rshared;
        c->rcap = c->rmax < KR_SHARED_READ_BYTES ? c->rmax : KR_SHARED_READ_BYTES;
        c->rbuf_shared = 1;
        s->rshared_busy = 1;
        *buf = uv_buf_init(c->rbuf, (unsigned)c->rcap);
        return;
    }
    if (c->rcap - c->rlen < READ_CHUNK && c->rcap < c->rmax) {
        size_t cap = c->rcap ? c->rcap * 2 : READ_CHUNK;
        while (cap - c->rlen < READ_CHUNK && cap < c->rmax)
            cap *= 2;
        if (cap > c->rmax)
            cap = c->rmax;
        c->rbuf = kr_realloc(c->rbuf, cap);
        c->rcap = cap;
    }
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* Starts the libuv read when the protocol wants input and the buffer has room. */
static void update_reading(kr_conn_t *c)
{
    if (c->detached)
        return; /* no socket: kr__conn_feed drives the input */
    int should = c->state == KR_CONN_OPEN && (c->want_read || c->lingering) &&
                 (c->rlen < c->rmax || c->lingering) && !c->out_paused;
    if (should && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!should && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

void kr_conn_read_start(kr_conn_t *c)
{
    c->want_read = 1;
    update_reading(c);
}

void kr_conn_read_stop(kr_conn_t *c)
{
    c->want_read = 0;
    update_reading(c);
}

void kr_conn_consume(kr_conn_t *c, size_t n)
{
    KR_ASSERT(n <= c->rlen);
    if (n == c->rlen) {
        c->rlen = 0;
        if (!c->rbuf_shared && c->rcap > 0 && !c->detached) {
            kr_free(c->rbuf); /* idle connections hold no read buffer */
            c->rbuf = NULL;
            c->rcap = 0;
        }
    }
    else if (n > 0) {
        memmove(c->rbuf, c->rbuf + n, c->rlen - n);
        c->rlen -= n;
    }
    update_reading(c);
}

/* After a read into the shared buffer: keep leftovers in a private buffer, free the rest. */
static void release_shared(kr_conn_t *c)
{
    if (!c->rbuf_shared)
        return;
    c->server->rshared_busy = 0;
    c->rbuf_shared = 0;
    if (c->rlen == 0 || kr_conn_is_closing(c)) {
        c->rbuf = NULL;
        c->rcap = 0;
        c->rlen = 0;
        return;
    }
    size_t cap = c->rlen < READ_CHUNK ? READ_CHUNK : c->rlen;
    char *own = kr_malloc(cap);
    memcpy(own, c->rbuf, c->rlen);
    c->rbuf = own;
    c->rcap = cap;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    kr_conn_t *c = stream->data;
    KR_UNUSED(buf);
    kr_conn_ref(c);
    handle_read(c, nread);
    release_shared(c);
    kr_conn_unref(c);
}

static void handle_read(kr_conn_t *c, ssize_t nread)
{
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->lingering || nread != UV_EOF || c->proto->on_eof == NULL) {
            kr_conn_close(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        } else {
            kr_conn_ref(c);
            c->proto->on_eof(c);
            kr_conn_unref(c);
        }
        return;
    }
    if (c->lingering) {
        return; /* discarding: we only wait for the peer's FIN */
    }
    c->rlen += (size_t)nread;
    c->proto->on_read(c);
    if (!kr_conn_is_closing(c))
        update_reading(c);
}

/* ---- writing ---------------------------------------------------------------------------- */

/* After a push: apply the watermarks. Never closes here: the producer may be iterating over
 * connections (a broadcast), so a slow consumer is only marked and closed by the flush. */
static void check_backlog(kr_conn_t *c)
{
    size_t queued = c->outq.bytes;
    if (c->hard_limit && queued > c->hard_limit && !c->slow_consumer) {
        c->slow_consumer = 1;
        c->server->stats.slow_consumers++;
    } else if (c->high_water && queued > c->high_water && !c->out_paused) {
        c->out_paused = 1;
        update_reading(c);
    }
    kr__server_want_flush(c->server, c);
}

int kr_conn_write(kr_conn_t *c, kr_buf_t *buf)
{
    if (kr_conn_is_closing(c) || c->close_after_flush || c->slow_consumer) {
        kr_buf_unref(buf);
        return KR_ECLOSED;
    }
    if (kr_outq_empty(&c->outq))
        c->queued_since_ms = uv_now(c->server->loop);
    kr_outq_push(&c->outq, buf);
    check_backlog(c);
    return 0;
}

int kr_conn_write_copy(kr_conn_t *c, const void *p, size_t n)
{
    if (kr_conn_is_closing(c) || c->close_after_flush || c->slow_consumer)
        return KR_ECLOSED;
    if (kr_outq_empty(&c->outq))
        c->queued_since_ms = uv_now(c->server->loop);
    kr_outq_push_copy(&c->outq, p, n);
    check_backlog(c);
    return 0;
}

/* After a write completed: resume reading once the queue is below the low watermark. */
static void check_resume(kr_conn_t *c)
{
    if (c->out_paused && c->outq.bytes <= c->low_water) {
        c->out_paused = 0;
        update_reading(c);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    kr_conn_t *c = req->data;
    kr_free(req);
    if (status != 0 || kr_conn_is_closing(c)) {
        kr_conn_unref(c);
        if (status != 0)
            kr_conn_close(c, NULL);
        return;
    }
    /* Linger: read and discard until the peer closes, so that a client still sending (a
     * rejected body) reads our answer instead of a reset. The sweep closes us at the deadline. */
    c->lingering = 1;
    c->rlen = 0; /* unparsed input is discarded with the rest */
    if (!c->rbuf_shared) {
        kr_free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    c->deadline_ms = uv_now(c->server->loop) + LINGER_MS;
    update_reading(c);
    kr_conn_unref(c);
}

static void drained(kr_conn_t *c)
{
    if (c->close_after_flush) {
        if (c->lingering)
            return;
        if (c->detached) {
            c->lingering = 1; /* nothing to shut down: stop taking input */
            return;
        }
        uv_shutdown_t *req = kr_malloc(sizeof(*req));
        req->data = c;
        kr_conn_ref(c);
        c->want_read = 0;
        update_reading(c);
        if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
            kr_free(req);
            kr_conn_unref(c);
            kr_conn_close(c, NULL);
        }
        c->lingering = 1; /* no more writes; set before the callback so drained() runs once */
        return;
    }
    if (c->proto->on_drain)
        c->proto->on_drain(c);
}

static void on_write_done(uv_write_t *req, int status)
{
    kr_conn_t *c = req->data;
    kr_outq_consume(&c->outq, c->inflight);
    c->inflight = 0;
    check_resume(c);
    if (status != 0 || kr_conn_is_closing(c)) {
        if (status != 0 && status != UV_ECANCELED)
            kr_conn_close(c, uv_strerror(status));
        kr_conn_unref(c);
        return;
    }
    if (!kr_outq_empty(&c->outq))
        kr__server_want_flush(c->server, c);
    else
        drained(c);
    kr_conn_unref(c);
}

#define MAX_IOV 64

void kr__conn_flush(kr_conn_t *c)
{
    if (kr_conn_is_closing(c))
        return;
    if (c->slow_consumer) {
        KR_LOG(KR_LOG_WARN, "conn", "conn=%llu %s: closed as a slow consumer (%zu bytes queued)",
               (unsigned long long)c->id, c->remote_addr, c->outq.bytes);
        kr_conn_close(c, "slow consumer");
        return;
    }
    if (c->replay_input) {
        c->replay_input = 0;
        if (c->rlen > 0)
            c->proto->on_read(c);
        if (kr_conn_is_closing(c))
            return;
    }
    if (c->inflight > 0 || c->detached)
        return;
    while (!kr_outq_empty(&c->outq)) {
        uv_buf_t iov[MAX_IOV];
        unsigned n = kr_outq_peek(&c->outq, iov, MAX_IOV);
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += iov[i].len;
        int w = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
        if (w == UV_EAGAIN || (w >= 0 && (size_t)w < total)) {
            /* The kernel is full: hand what is left of this batch to one uv_write, which
             * holds the queue's references until its callback (inflight bytes). */
            size_t done = w > 0 ? (size_t)w : 0;
            kr_outq_consume(&c->outq, done);
            n = kr_outq_peek(&c->outq, iov, MAX_IOV);
            c->inflight = 0;
            for (unsigned i = 0; i < n; i++)
                c->inflight += iov[i].len;
            c->wreq.data = c;
            kr_conn_ref(c);
            int err = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, iov, n, on_write_done);
            if (err != 0) {
                c->inflight = 0;
                kr_conn_unref(c);
                kr_conn_close(c, uv_strerror(err));
            }
            return;
        }
        if (w < 0) {
            kr_conn_close(c, uv_strerror(w));
            return;
        }
        kr_outq_consume(&c->outq, (size_t)w);
    }
    check_resume(c);
    drained(c);
}

void kr_conn_close_after_flush(kr_conn_t *c)
{
    if (kr_conn_is_closing(c) || c->close_after_flush)
        return;
    c->close_after_flush = 1;
    c->want_read = 0;
    update_reading(c);
    if ((kr_outq_empty(&c->outq) && c->inflight == 0) || c->detached)
        drained(c);
    else
        kr__server_want_flush(c->server, c);
}

/* ---- closing ---------------------------------------------------------------------------- */

void kr__conn_timeout(kr_conn_t *c)
{
    c->deadline_ms = 0;
    if (c->lingering || c->proto->on_timeout == NULL) {
        kr_conn_close(c, NULL);
        return;
    }
    kr_conn_ref(c);
    c->proto->on_timeout(c);
    kr_conn_unref(c);
}

void kr_conn_close(kr_conn_t *c, const char *reason)
{
    if (c->state != KR_CONN_OPEN)
        return;
    c->state = KR_CONN_CLOSING;
    if (reason)
        KR_LOG(KR_LOG_DEBUG, "conn", "conn=%llu closed: %s", (unsigned long long)c->id, reason);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    kr_list_remove(&c->pending);
    c->deadline_ms = 0;
    kr_conn_ref(c);
    if (c->proto->on_close)
        c->proto->on_close(c);
    c->server->stats.connections_open--;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    kr_conn_unref(c);
}

static void on_closed(uv_handle_t *h)
{
    kr_conn_t *c = h->data;
    c->state = KR_CONN_CLOSED;
    kr_list_remove(&c->link);
    if (c->refs == 0)
        free_conn(c);
}
