/* kr_ws.c: WebSocket connections: the upgrade, the wslay glue, our frame encoder and the
 * close handshake (see kr_ws.h).
 *
 * One read: ws_on_read -> wslay_event_recv, which pulls bytes from c->rbuf through recv_cb
 * and calls on_frame_start (fragment cap) and on_msg (handler->on_message) -> pump():
 * wslay_event_send writes the control frames wslay queued (pong, close) through send_cb into
 * the output queue; when wslay then wants neither to read nor to write, the close handshake
 * is over (or the connection failed): handler->on_close, then close TCP after the flush.
 *
 * Nothing is freed inside a wslay callback or a handler call (architecture rule 1): the
 * connection's on_close only marks the kr_ws_t dead while one of our entry points is on the
 * stack (depth > 0), and the outermost one frees it on its way out.
 */
#include "kr_ws.h"
#include "kr_conn.h"
#include "kr_http.h"
#include "kr_log.h"
#include "kr_server.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <wslay/wslay.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct kr_ws_s {
    kr_conn_t *conn;
    wslay_event_context_ptr ctx;
    kr_ws_handler_t h;
    void *ud;
    kr_ws_opts_t opts;
    size_t roff;         /* bytes of c->rbuf handed to wslay during this read */
    unsigned fragments;  /* data frames of the message being received */
    int fail_code;       /* the close code we sent when we failed the connection ourselves */
    int close_requested; /* kr_ws_close queued our close frame */
    int closing;         /* a close frame was queued or received: no more messages either way */
    int finished;        /* handler->on_close was called */
    int dead;            /* the connection has closed: free when depth drops to 0 */
    int in_recv;         /* wslay_event_recv is on the stack */
    unsigned depth;      /* our entry points on the stack */
};

static const kr_conn_proto_t ws_proto;

void kr_ws_opts_default(kr_ws_opts_t *o)
{
    o->max_message = 1024 * 1024;
    o->max_fragments = 128;
    o->high_water = 1024 * 1024;
    o->low_water = 256 * 1024;
    o->hard_limit = 8 * 1024 * 1024;
    o->close_timeout_ms = 5000;
}

/* ---- the opening handshake -------------------------------------------------------------- */

/* Whether the comma-separated list v[0..n) has an element equal to token (ASCII
 * case-insensitive, whitespace around elements ignored). */
static int list_has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && kr_strncasecmp(v + start, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* A list header may be split over several lines (RFC 9110 section 5.3): look at each. */
static int header_has_token(const kr_http_req_t *req, const char *name, const char *token)
{
    size_t nl = strlen(name);
    for (unsigned i = 0; i < req->nheaders; i++) {
        const kr_http_header_t *h = &req->headers[i];
        if (h->name_len == nl && kr_strncasecmp(h->name, name, nl) == 0 &&
            list_has_token(h->value, h->value_len, token))
            return 1;
    }
    return 0;
}

static unsigned header_count(const kr_http_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    unsigned n = 0;
    for (unsigned i = 0; i < req->nheaders; i++)
        if (req->headers[i].name_len == nl && kr_strncasecmp(req->headers[i].name, name, nl) == 0)
            n++;
    return n;
}

static int is_base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* The base64 form of exactly 16 bytes: 22 characters, the last of which carries only two
 * bits (so it is one of A, Q, g, w), then "==". */
static int valid_key(const char *k, size_t n)
{
    if (n != 24 || k[22] != '=' || k[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!is_base64_char(k[i]))
            return 0;
    return k[21] == 'A' || k[21] == 'Q' || k[21] == 'g' || k[21] == 'w';
}

int kr_ws_check_upgrade(const kr_http_req_t *req)
{
    if (strcmp(req->method_name, "GET") != 0 || req->http_minor != 1)
        return 400;
    if (!header_has_token(req, "upgrade", "websocket") ||
        !header_has_token(req, "connection", "upgrade"))
        return 400;
    size_t vlen = 0;
    const char *version = kr_http_req_header(req, "sec-websocket-version", &vlen);
    if (version == NULL || vlen != 2 || memcmp(version, "13", 2) != 0)
        return 426;
    size_t klen = 0;
    const char *key = kr_http_req_header(req, "sec-websocket-key", &klen);
    if (key == NULL || header_count(req, "sec-websocket-key") != 1 || !valid_key(key, klen))
        return 400;
    return 0;
}

void kr_ws_reject(kr_http_req_t *req, int status)
{
    static const char type[] = "text/plain; charset=utf-8";
    kr_http_header_t h[2] = {
        {"Content-Type", type, 12, sizeof(type) - 1},
        {"Sec-WebSocket-Version", "13", 21, 2},
    };
    const char *body = status == 426   ? "WebSocket version 13 required"
                       : status == 400 ? "Invalid WebSocket handshake"
                                       : kr_http_reason(status);
    kr_http_respond(req, status, h, status == 426 ? 2 : 1, kr_buf_from(body, strlen(body)));
}

int kr_ws_accept_key(const char *key, size_t len, char out[29])
{
    char in[64 + sizeof(WS_GUID)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (len > 64)
        return KR_EINVAL;
    memcpy(in, key, len);
    memcpy(in + len, WS_GUID, sizeof(WS_GUID) - 1);
    if (EVP_Digest(in, len + sizeof(WS_GUID) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return KR_EINVAL;
    EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
    return 0;
}

/* ---- frames we send --------------------------------------------------------------------- */

size_t kr_ws_frame_header(uint8_t out[10], int opcode, uint64_t payload_len)
{
    KR_ASSERT(payload_len < (1ull << 63)); /* the top bit of the 64-bit length must be 0 */
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

kr_buf_t *kr_ws_frame_new(int opcode, const void *payload, size_t len)
{
    uint8_t head[10];
    size_t hl = kr_ws_frame_header(head, opcode, len);
    kr_buf_t *b = kr_buf_new(hl + len);
    memcpy(b->data, head, hl);
    if (len)
        memcpy(b->data + hl, payload, len);
    return b;
}

int kr_ws_send_frame(kr_ws_t *ws, kr_buf_t *frame)
{
    /* Nothing may follow our close frame, and after the peer's close the reply is the last
     * frame we send (RFC 6455 section 5.5.1). */
    if (ws->closing || ws->dead) {
        kr_buf_unref(frame);
        return KR_ECLOSED;
    }
    return kr_conn_write(ws->conn, frame);
}

int kr_ws_send_text(kr_ws_t *ws, const void *data, size_t len)
{
    if (ws->closing || ws->dead)
        return KR_ECLOSED; /* skip the encoding */
    return kr_ws_send_frame(ws, kr_ws_frame_new(KR_WS_OP_TEXT, data, len));
}

int kr_ws_send_binary(kr_ws_t *ws, const void *data, size_t len)
{
    if (ws->closing || ws->dead)
        return KR_ECLOSED;
    return kr_ws_send_frame(ws, kr_ws_frame_new(KR_WS_OP_BINARY, data, len));
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void ws_free(kr_ws_t *ws)
{
    wslay_event_context_free(ws->ctx);
    kr_free(ws);
}

/* Every entry point that can reach a handler or kr_conn_close brackets itself with these. */
static void ws_enter(kr_ws_t *ws)
{
    ws->depth++;
    kr_conn_ref(ws->conn);
}

static void ws_leave(kr_ws_t *ws)
{
    kr_conn_t *c = ws->conn;
    KR_ASSERT(ws->depth > 0);
    if (--ws->depth == 0 && ws->dead)
        ws_free(ws);
    kr_conn_unref(c);
}

/* See kr_ws_handler_t.on_close for the precedence. wslay records the codes of the close
 * frames it received and sent (1005 for a close frame without a code). */
static int close_code(kr_ws_t *ws)
{
    if (ws->fail_code)
        return ws->fail_code;
    if (wslay_event_get_close_received(ws->ctx))
        return wslay_event_get_status_code_received(ws->ctx);
    if (wslay_event_get_close_sent(ws->ctx))
        return wslay_event_get_status_code_sent(ws->ctx);
    return KR_WS_CLOSE_ABNORMAL;
}

/* Calls handler->on_close once. */
static void finish(kr_ws_t *ws)
{
    if (ws->finished)
        return;
    ws->finished = 1;
    ws->closing = 1;
    if (ws->h.on_close)
        ws->h.on_close(ws, close_code(ws), ws->ud);
}

/* The WebSocket is over: tell the handler, then close TCP once our last frames are written.
 * The server closes first (RFC 6455 section 7.1.1); kr_conn then lingers briefly so the
 * peer reads the close frame rather than a reset. */
static void end_ws(kr_ws_t *ws)
{
    kr_conn_t *c = ws->conn;
    finish(ws);
    if (!kr_conn_is_closing(c)) {
        /* A peer that never reads our last frames is dropped at the close timeout. */
        c->deadline_ms = uv_now(c->server->loop) + ws->opts.close_timeout_ms;
        kr_conn_close_after_flush(c);
    }
}

/* Writes what wslay queued (pong, close) into the output queue; send_cb takes every byte, so
 * one call empties wslay's queue. Then ends the WebSocket if wslay is done both ways: after
 * the close frame went out it stops writing, and after a close frame arrived or a protocol
 * error it stops reading. */
static void pump(kr_ws_t *ws)
{
    if (ws->dead || ws->finished)
        return;
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0)
        wslay_event_shutdown_read(ws->ctx); /* the connection refused bytes: it is closing */
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))
        end_ws(ws);
}

/* ---- wslay callbacks -------------------------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    kr_ws_t *ws = ud;
    kr_conn_t *c = ws->conn;
    KR_UNUSED(flags);
    /* wslay_event_recv loops until this says WOULDBLOCK, so one call reads at most what one
     * read left in the (capped) read buffer: a flooding peer cannot hold the loop longer. */
    size_t avail = c->rlen - ws->roff;
    if (avail == 0 || ws->dead) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > avail)
        len = avail;
    memcpy(buf, c->rbuf + ws->roff, len);
    ws->roff += len; /* consumed in one go after wslay_event_recv: no memmove per 4 KiB */
    return (ssize_t)len;
}

/* Never a partial write: wslay would keep the rest of the frame and send it later, behind
 * data frames that we queue ourselves, corrupting the stream. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    kr_ws_t *ws = ud;
    KR_UNUSED(flags);
    if (ws->dead || kr_conn_write_copy(ws->conn, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Fails the connection from inside wslay_event_recv: queue a close frame with code and stop
 * reading; pump() writes it once wslay_event_recv has returned. */
static void fail(kr_ws_t *ws, int code)
{
    if (wslay_event_queue_close(ws->ctx, (uint16_t)code, NULL, 0) == 0)
        ws->fail_code = code;
    wslay_event_shutdown_read(ws->ctx);
    ws->closing = 1;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    kr_ws_t *ws = ud;
    KR_UNUSED(ctx);
    /* wslay allocates a chunk per frame (about 48 bytes for a 1-byte fragment), so its
     * message limit alone does not bound the memory of a message sent in tiny pieces. */
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        ws->fragments = 1;
    else if (arg->opcode == WSLAY_CONTINUATION_FRAME)
        ws->fragments++;
    if (ws->fragments > ws->opts.max_fragments)
        fail(ws, KR_WS_CLOSE_TOO_BIG);
    else if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1)
        fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* wslay reads it as "no code" (section 5.5.1) */
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    kr_ws_t *ws = ud;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        ws->fragments = 0;
        if (ws->closing || ws->dead || ws->h.on_message == NULL)
            return;
        /* Text was validated as UTF-8 by wslay as it arrived (failing fast with 1007). */
        ws->h.on_message(ws, arg->opcode == WSLAY_BINARY_FRAME,
                         arg->msg ? (const char *)arg->msg : "", arg->msg_length, ws->ud);
        /* The handler may have closed the connection: end wslay's loop at this frame. */
        if (ws->dead || kr_conn_is_closing(ws->conn))
            wslay_event_shutdown_read(ctx);
        break;
    case WSLAY_CONNECTION_CLOSE:
        ws->closing = 1; /* wslay queued the reply (or had sent ours) and stopped reading */
        break;
    default:
        break; /* ping: wslay queued the pong; an unsolicited pong is ignored */
    }
}

/* wslay_event_recv failed: a frame it could not parse (a bad length encoding, a control frame
 * over 125 bytes or fragmented) or out of memory. It queued a close frame without a code;
 * send 1002 (1011) ourselves instead, unless a close of ours is already on its way. */
static void recv_failed(kr_ws_t *ws, int rv)
{
    wslay_event_shutdown_read(ws->ctx);
    ws->closing = 1;
    if (ws->close_requested || ws->fail_code)
        return; /* wslay refused its own close (one was queued): pump() sends ours */
    int code = rv == WSLAY_ERR_NOMEM ? KR_WS_CLOSE_INTERNAL_ERROR : KR_WS_CLOSE_PROTOCOL_ERROR;
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    wslay_event_shutdown_write(ws->ctx);
    kr_conn_write(ws->conn, kr_ws_frame_new(KR_WS_OP_CLOSE, payload, 2));
    ws->fail_code = code;
}

/* ---- connection protocol ---------------------------------------------------------------- */

static void ws_on_read(kr_conn_t *c)
{
    kr_ws_t *ws = c->proto_data;
    if (ws == NULL || ws->finished || !wslay_event_want_read(ws->ctx)) {
        kr_conn_consume(c, c->rlen); /* nobody reads these any more */
        return;
    }
    ws_enter(ws);
    ws->in_recv = 1;
    ws->roff = 0;
    int rv = wslay_event_recv(ws->ctx);
    ws->in_recv = 0;
    if (!ws->dead) {
        kr_conn_consume(c, ws->roff);
        if (rv != 0)
            recv_failed(ws, rv);
        pump(ws);
    }
    ws_leave(ws);
}

/* The peer shut its side without a close frame (or before answering ours). */
static void ws_on_eof(kr_conn_t *c)
{
    kr_ws_t *ws = c->proto_data;
    if (ws == NULL) {
        kr_conn_close(c, NULL);
        return;
    }
    ws_enter(ws);
    wslay_event_shutdown_read(ws->ctx);
    end_ws(ws); /* what is queued still goes out: the peer may read after its FIN */
    ws_leave(ws);
}

/* The deadline is only set while closing: the peer did not answer our close frame, or does
 * not read our last frames. */
static void ws_on_timeout(kr_conn_t *c)
{
    kr_conn_close(c, "websocket close timeout");
}

static void ws_on_drain(kr_conn_t *c)
{
    kr_ws_t *ws = c->proto_data;
    if (ws == NULL || ws->closing)
        return;
    ws_enter(ws);
    if (c->server->stopping)
        kr_ws_close(ws, KR_WS_CLOSE_GOING_AWAY, "server shutting down");
    else if (ws->h.on_drain)
        ws->h.on_drain(ws, ws->ud);
    ws_leave(ws);
}

static void ws_on_conn_close(kr_conn_t *c)
{
    kr_ws_t *ws = c->proto_data;
    if (ws == NULL)
        return;
    ws_enter(ws);
    finish(ws);
    ws->dead = 1;
    c->proto_data = NULL;
    ws_leave(ws); /* frees now, or in the outermost entry point still on the stack */
}

static const kr_conn_proto_t ws_proto = {
    .name = "websocket",
    .on_read = ws_on_read,
    .on_eof = ws_on_eof,
    .on_drain = ws_on_drain,
    .on_timeout = ws_on_timeout,
    .on_close = ws_on_conn_close,
};

static kr_ws_t *ws_new(kr_conn_t *c, const kr_ws_handler_t *h, void *ud, const kr_ws_opts_t *opts)
{
    static const struct wslay_event_callbacks callbacks = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = on_frame_start,
        .on_msg_recv_callback = on_msg,
    };
    kr_ws_t *ws = kr_calloc(1, sizeof(*ws));
    ws->conn = c;
    if (h)
        ws->h = *h;
    ws->ud = ud;
    if (opts)
        ws->opts = *opts;
    else
        kr_ws_opts_default(&ws->opts);
    if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
        /* Only fails for lack of memory: abort like kr_malloc does. */
        KR_LOG(KR_LOG_FATAL, "ws", "out of memory creating a wslay context");
        abort();
    }
    /* wslay then answers a larger message with 1009; its default is 2 GiB. Reserved bits stay
     * disallowed (wslay's default: 1002), as we negotiate no extension. */
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->opts.max_message);
    return ws;
}

static void apply_limits(kr_ws_t *ws)
{
    kr_conn_t *c = ws->conn;
    c->low_water = ws->opts.low_water;
    c->high_water = ws->opts.high_water;
    c->hard_limit = ws->opts.hard_limit;
    c->deadline_ms = 0;
}

kr_ws_t *kr__ws_start(kr_conn_t *c, const kr_ws_handler_t *h, void *ud, const kr_ws_opts_t *opts)
{
    if (kr_conn_is_closing(c) || c->close_after_flush)
        return NULL;
    kr_ws_t *ws = ws_new(c, h, ud, opts);
    c->proto = &ws_proto;
    c->proto_data = ws;
    apply_limits(ws);
    kr_conn_read_start(c);
    return ws;
}

kr_ws_t *kr_ws_accept(kr_http_req_t *req, const kr_ws_handler_t *h, void *ud,
                      const kr_ws_opts_t *opts)
{
    kr_conn_t *c = req->conn;
    if (c == NULL || kr_conn_is_closing(c))
        return NULL;
    int status = kr_ws_check_upgrade(req);
    if (status != 0) {
        kr_ws_reject(req, status);
        return NULL;
    }
    size_t klen = 0;
    const char *key = kr_http_req_header(req, "sec-websocket-key", &klen);
    char accept[29];
    if (kr_ws_accept_key(key, klen, accept) != 0) {
        kr_ws_reject(req, 400);
        return NULL;
    }
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nServer: kestrun\r\nDate: %s\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "\r\n",
                     kr_server_date(c->server), accept);
    KR_ASSERT(n > 0 && (size_t)n < sizeof(head));
    if (kr_conn_write_copy(c, head, (size_t)n) != 0)
        return NULL;
    req->status = 101; /* for whoever logs the request */
    kr_ws_t *ws = ws_new(c, h, ud, opts);
    if (kr_http_take_over(req, &ws_proto, ws) == NULL) {
        ws_free(ws);
        return NULL;
    }
    apply_limits(ws);
    return ws;
}

/* ---- closing and accessors -------------------------------------------------------------- */

void kr_ws_close(kr_ws_t *ws, int code, const char *reason)
{
    kr_conn_t *c = ws->conn;
    if (ws->closing || ws->dead || kr_conn_is_closing(c))
        return;
    size_t rlen = reason && code ? strlen(reason) : 0;
    if (rlen > KR_WS_MAX_REASON) {
        rlen = KR_WS_MAX_REASON;
        while (rlen > 0 && ((unsigned char)reason[rlen] & 0xc0) == 0x80)
            rlen--; /* don't cut a UTF-8 sequence: the peer would fail us with 1007 */
    }
    ws->closing = 1;
    if (wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rlen) != 0)
        return; /* wslay has a close of its own queued or sent already */
    ws->close_requested = 1;
    c->deadline_ms = uv_now(c->server->loop) + ws->opts.close_timeout_ms;
    if (ws->in_recv)
        return; /* ws_on_read writes it when wslay_event_recv returns */
    ws_enter(ws);
    pump(ws);
    ws_leave(ws);
}

kr_conn_t *kr_ws_conn(kr_ws_t *ws)
{
    return ws->conn;
}

void *kr_ws_userdata(kr_ws_t *ws)
{
    return ws->ud;
}

void kr_ws_set_userdata(kr_ws_t *ws, void *ud)
{
    ws->ud = ud;
}

size_t kr_ws_queued(const kr_ws_t *ws)
{
    return ws->dead ? 0 : kr_conn_queued(ws->conn);
}
