/* kr_conn.c: accepted TCP connections: reading, batched writing, closing (see kr_conn.h). */
#include "kr_conn.h"
#include "kr_log.h"
#include "kr_server.h"
#include "kr_tls.h"

#include <stdio.h>
#include <sys/socket.h>

#define READ_CHUNK 16384
#define LINGER_MS 2000
#define TLS_MAX_BUFFERED (64 * 1024) /* ciphertext held undecrypted before reading stops */
#define TLS_OUT_BUDGET (64 * 1024)   /* encrypted bytes prepared ahead of the socket */

static void on_closed(uv_handle_t *h);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void handle_read(kr_conn_t *c, ssize_t nread);
static void release_shared(kr_conn_t *c);

static void free_conn(kr_conn_t *c)
{
    kr_tls_conn_free(c->tls);
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
    (void)kr_ipcap_key((struct sockaddr *)&ss, &c->ipkey); /* family 0 when not IP: not counted */
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

int kr_conn_start_tls(kr_conn_t *c, kr_tls_ctx_t *ctx)
{
    c->tls = kr_tls_conn_new(ctx);
    if (c->tls == NULL)
        return KR_ENOMEM;
    c->secure = 1;
    return 0;
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
/* Makes room in c->rbuf for the next input (the socket's on a plain connection, decrypted
 * bytes on a TLS one). */
static inline void read_room(kr_conn_t *c)
{
    kr_server_t *s = c->server;
    if (c->rlen == 0 && !s->rshared_busy) {
        if (s->rshared == NULL)
            s->rshared = kr_malloc(KR_SHARED_READ_BYTES);
        if (!c->rbuf_shared)
            kr_free(c->rbuf);
        c->rbuf = s->rshared;
        c->rcap = c->rmax < KR_SHARED_READ_BYTES ? c->rmax : KR_SHARED_READ_BYTES;
        c->rbuf_shared = 1;
        s->rshared_busy = 1;
        return;
    }
    if (c->rcap - c->rlen < READ_CHUNK && c->rcap < c->rmax) {
        if (c->rbuf_shared)
            release_shared(c); /* TLS only: one pump decrypted more than the shared buffer */
        size_t cap = c->rcap ? c->rcap * 2 : READ_CHUNK;
        while (cap - c->rlen < READ_CHUNK && cap < c->rmax)
            cap *= 2;
        if (cap > c->rmax)
            cap = c->rmax;
        c->rbuf = kr_realloc(c->rbuf, cap);
        c->rcap = cap;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    kr_conn_t *c = h->data;
    KR_UNUSED(suggested);
    if (c->tls != NULL) {
        /* Ciphertext goes to the shared buffer too: kr_tls_feed copies it into OpenSSL's
         * read BIO before the decrypted bytes need the buffer (tls_handle_read). */
        kr_server_t *s = c->server;
        if (s->rshared_busy) {
            *buf = uv_buf_init(kr_malloc(READ_CHUNK), READ_CHUNK);
            return;
        }
        if (s->rshared == NULL)
            s->rshared = kr_malloc(KR_SHARED_READ_BYTES);
        s->rshared_busy = 1;
        *buf = uv_buf_init(s->rshared, KR_SHARED_READ_BYTES);
        return;
    }
    read_room(c);
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* Starts the libuv read when the protocol wants input and the buffer has room. */
static void update_reading(kr_conn_t *c)
{
    if (c->detached)
        return; /* no socket: kr__conn_feed drives the input */
    int should = c->state == KR_CONN_OPEN && (c->want_read || c->lingering) &&
                 (c->rlen < c->rmax || c->lingering) && !c->out_paused;
    if (c->tls != NULL && should && !c->lingering) {
        /* Plaintext may already wait inside OpenSSL (a pump stopped at a full buffer): the
         * socket may have nothing more to say, so decrypt it at the next flush. */
        if (!c->tls_pump && kr_tls_has_input(c->tls)) {
            c->tls_pump = 1;
            kr__server_want_flush(c->server, c);
        }
        if (kr_tls_buffered(c->tls) >= TLS_MAX_BUFFERED)
            should = 0;
    }
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

static void tls_handle_read(kr_conn_t *c, ssize_t nread, const uv_buf_t *buf);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    kr_conn_t *c = stream->data;
    kr_conn_ref(c);
    if (c->tls != NULL)
        tls_handle_read(c, nread, buf);
    else
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

/* ---- TLS input -------------------------------------------------------------------------- */

/* A fatal TLS error: log it quietly (a port scanner or a client that refuses our certificate
 * is not the operator's problem), let the alert OpenSSL queued reach the peer, then close. */
static void tls_failed(kr_conn_t *c, const char *why)
{
    KR_LOG(KR_LOG_DEBUG, "conn", "conn=%llu %s: TLS %s failed: %s", (unsigned long long)c->id,
           c->remote_addr, c->tls->handshake_done ? "connection" : "handshake", why);
    kr_outq_consume(&c->outq, c->outq.bytes); /* never to be encrypted */
    if (kr_outq_empty(&c->tls->out))
        kr_conn_close(c, NULL);
    else
        kr_conn_close_after_flush(c);
}

/* Decrypts what OpenSSL holds into c->rbuf and runs the protocol on it, for as long as the
 * protocol wants input and the buffer has room (the same limits as a socket read). */
static void tls_pump(kr_conn_t *c)
{
    kr_tls_conn_t *t = c->tls;
    char err[160];
    int st = KR_TLS_WANT;
    c->tls_pump = 1; /* running: update_reading must not schedule another */
    while (!kr_conn_is_closing(c) && !c->lingering && kr_tls_has_input(t) && c->want_read &&
           !c->out_paused && c->rlen < c->rmax) {
        size_t before = c->rlen;
        do {
            read_room(c);
            st = kr_tls_read(t, c->rbuf + c->rlen, c->rcap - c->rlen, err, sizeof(err));
            if (st > 0)
                c->rlen += (size_t)st;
        } while (st > 0 && c->rlen < c->rmax && kr_tls_has_input(t));
        if (c->rlen > before)
            c->proto->on_read(c);
        if (st < 0)
            break;
    }
    c->tls_pump = 0;
    if (kr_conn_is_closing(c))
        return;
    if (t->handshake_done && !t->reported) {
        t->reported = 1;
        KR_LOG(KR_LOG_DEBUG, "conn", "conn=%llu %s: %s, ALPN %s", (unsigned long long)c->id,
               c->remote_addr, kr_tls_version(t), kr_tls_alpn(t)[0] ? kr_tls_alpn(t) : "none");
    }
    if (st == KR_TLS_ERROR) {
        tls_failed(c, err);
        return;
    }
    if (!kr_outq_empty(&t->out))
        kr__server_want_flush(c->server, c); /* handshake messages, session tickets */
    if (st == KR_TLS_EOF) {
        handle_read(c, UV_EOF); /* close_notify: the peer is done, as with a FIN */
        return;
    }
    update_reading(c);
}

static void tls_handle_read(kr_conn_t *c, ssize_t nread, const uv_buf_t *buf)
{
    kr_server_t *s = c->server;
    if (nread > 0 && !c->lingering && !kr_conn_is_closing(c))
        kr_tls_feed(c->tls, buf->base, (size_t)nread);
    if (buf->base != NULL && buf->base == s->rshared)
        s->rshared_busy = 0; /* copied into OpenSSL: the plaintext may use it now */
    else
        kr_free(buf->base);
    if (nread <= 0) {
        handle_read(c, nread);
        return;
    }
    if (c->lingering || kr_conn_is_closing(c))
        return;
    tls_pump(c);
}

/* ---- writing ---------------------------------------------------------------------------- */

/* Everything queued has reached the kernel (the encrypted queue too on TLS). */
static inline int all_written(const kr_conn_t *c)
{
    return kr_outq_empty(&c->outq) && c->inflight == 0 &&
           (c->tls == NULL || kr_outq_empty(&c->tls->out));
}

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
        if (c->tls != NULL && kr_tls_close_notify(c->tls)) {
            kr__server_want_flush(c->server, c); /* close_notify leaves, then back here */
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
    kr_outq_consume(c->tls != NULL ? &c->tls->out : &c->outq, c->inflight);
    c->inflight = 0;
    check_resume(c);
    if (status != 0 || kr_conn_is_closing(c)) {
        if (status != 0 && status != UV_ECANCELED)
            kr_conn_close(c, uv_strerror(status));
        kr_conn_unref(c);
        return;
    }
    if (!all_written(c))
        kr__server_want_flush(c->server, c);
    else
        drained(c);
    kr_conn_unref(c);
}

#define MAX_IOV 64

/* Writes q (the output queue, or the encrypted one on TLS): one try_write, and what the
 * kernel did not take in one uv_write. Returns 0 when q is empty, 1 while a uv_write holds
 * the rest, or a negative error after closing c. */
static int write_queue(kr_conn_t *c, kr_outq_t *q)
{
    while (!kr_outq_empty(q)) {
        uv_buf_t iov[MAX_IOV];
        unsigned n = kr_outq_peek(q, iov, MAX_IOV);
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += iov[i].len;
        int w = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
        if (w == UV_EAGAIN || (w >= 0 && (size_t)w < total)) {
            /* The kernel is full: hand what is left of this batch to one uv_write, which
             * holds the queue's references until its callback (inflight bytes). */
            size_t done = w > 0 ? (size_t)w : 0;
            kr_outq_consume(q, done);
            n = kr_outq_peek(q, iov, MAX_IOV);
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
                return err;
            }
            return 1;
        }
        if (w < 0) {
            kr_conn_close(c, uv_strerror(w));
            return w;
        }
        kr_outq_consume(q, (size_t)w);
    }
    return 0;
}

/* TLS: encrypt a budget of the output queue, write it, repeat. Returns as write_queue does,
 * and 1 as well while plaintext waits for the handshake to finish. */
static int tls_flush(kr_conn_t *c)
{
    char err[160];
    for (;;) {
        size_t before = c->outq.bytes;
        if (kr_tls_encrypt(c->tls, &c->outq, TLS_OUT_BUDGET, err, sizeof(err)) != 0) {
            tls_failed(c, err);
            return KR_EPROTO;
        }
        int r = write_queue(c, &c->tls->out);
        if (r != 0)
            return r;
        if (kr_outq_empty(&c->outq))
            return 0;
        if (c->outq.bytes == before)
            return 1; /* nothing could be encrypted yet */
    }
}

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
    if (c->tls_pump) {
        tls_pump(c);
        release_shared(c);
        if (kr_conn_is_closing(c))
            return;
    }
    if (c->inflight > 0 || c->detached)
        return;
    if (c->tls != NULL) {
        if (tls_flush(c) != 0)
            return;
    } else if (write_queue(c, &c->outq) != 0) {
        return;
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
    if (all_written(c) || c->detached)
        drained(c);
    else
        kr__server_want_flush(c->server, c);
}

/* ---- closing ---------------------------------------------------------------------------- */

void kr__conn_timeout(kr_conn_t *c)
{
    c->deadline_ms = 0;
    if (c->tls != NULL && !c->tls->handshake_done && !c->lingering) {
        /* The header timeout covers the handshake too (a slowloris on the handshake). */
        kr_conn_close(c, "TLS handshake timeout");
        return;
    }
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
    kr__server_conn_closing(c->server, c); /* the per-IP count */
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    kr_conn_unref(c);
}

void kr__conn_refuse(kr_conn_t *c, const char *answer, size_t n)
{
    uv_os_fd_t fd;
    if (!c->detached && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        /* Closing with unread input makes the kernel send a reset, which may destroy the
         * answer before the client reads it: drop what already arrived (a few reads at most). */
        char sink[4096];
        for (int i = 0; i < 4 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
            ;
        uv_buf_t b = uv_buf_init((char *)answer, (unsigned)n);
        if (n > 0 && c->tls == NULL)
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort: never queued */
    }
    kr_conn_close(c, "refused");
}

static void on_closed(uv_handle_t *h)
{
    kr_conn_t *c = h->data;
    c->state = KR_CONN_CLOSED;
    kr_list_remove(&c->link);
    if (c->refs == 0)
        free_conn(c);
}
