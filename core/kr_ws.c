/* kr_ws.c: WebSocket connections: the upgrade, our frame parser and encoder, and the close
 * handshake (see kr_ws.h).
 *
 * One read: ws_on_read -> parse() walks the frames in c->rbuf in place. A complete frame is
 * unmasked where it lies; a whole (unfragmented) message goes to handler->on_message straight
 * from the read buffer. Fragments are appended to a reassembly buffer (ws_msg_t) that exists
 * only while a fragmented message is in progress. An incomplete frame stays in c->rbuf (kr_conn
 * keeps it for the next read), unless it can never fit there (header + payload > c->rmax): then
 * its payload is unmasked and moved into the reassembly buffer as it arrives (frame_left).
 * Every limit that a header decides (1002 for its shape, 1009 for its size) is applied as soon
 * as the header bytes are there. Pongs and close frames are encoded with kr_ws_frame_new and
 * appended to the output queue at once. parse() never keeps a pointer into c->rbuf past its
 * return: the buffer may be the server's shared one.
 *
 * When a close frame has gone both ways, or we failed the connection, reading stops and
 * end_ws() calls handler->on_close, then closes TCP after the flush.
 *
 * Nothing is freed inside a handler call (architecture rule 1): the connection's on_close only
 * marks the kr_ws_t dead while one of our entry points is on the stack (depth > 0), and the
 * outermost one frees it on its way out.
 */
#include "kr_ws.h"
#include "kr_conn.h"
#include "kr_http.h"
#include "kr_json.h"
#include "kr_log.h"
#include "kr_server.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* The message being reassembled: a fragmented one, or one whose single frame is larger than
 * the read buffer. Allocated when it starts, freed when it is delivered or abandoned. */
typedef struct ws_msg_s {
    size_t len, cap;
    uint8_t binary;
    kr_utf8_state_t u8; /* text: the incremental UTF-8 check */
    char data[];
} ws_msg_t;

struct kr_ws_s {
    kr_conn_t *conn;
    kr_ws_handler_t h;
    void *ud;
    ws_msg_t *msg;             /* reassembly; NULL unless a message is in progress */
    uint64_t frame_left;       /* payload bytes of the current frame still to come (streamed) */
    size_t max_message;        /* opts.max_message */
    uint64_t close_timeout_ms; /* opts.close_timeout_ms */
    unsigned max_fragments;    /* opts.max_fragments */
    unsigned frames;           /* data frames so far of the message in progress */
    unsigned depth;            /* our entry points on the stack */
    uint16_t sent_code;        /* our close frame went: its code (1005: none); 0: not sent */
    uint16_t recv_code;        /* the peer's valid close frame arrived: its code (1005: none) */
    uint16_t fail_code;        /* we failed the connection with this code */
    uint8_t mask[4];           /* the masking key of the streamed frame */
    uint8_t mask_off;          /* position in the key of the streamed frame's next byte */
    unsigned frame_fin : 1;    /* the streamed frame ends its message */
    unsigned in_msg : 1;       /* a fragmented message is in progress (expect continuations) */
    unsigned closing : 1;      /* a close frame was sent or received: no more messages */
    unsigned read_done : 1;    /* input is ignored from now on (close received, failure, EOF) */
    unsigned finished : 1;     /* handler->on_close was called */
    unsigned dead : 1;         /* the connection has closed: free when depth drops to 0 */
    unsigned in_parse : 1;     /* parse() is on the stack */
};

/* Memory per connection is a feature: an idle WebSocket costs this struct and nothing else. */
_Static_assert(sizeof(struct kr_ws_s) <= 128, "kr_ws_t grew past 128 bytes");

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

static void msg_drop(kr_ws_t *ws)
{
    kr_free(ws->msg);
    ws->msg = NULL;
}

static void ws_free(kr_ws_t *ws)
{
    msg_drop(ws);
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

/* See kr_ws_handler_t.on_close for the precedence. */
static int close_code(const kr_ws_t *ws)
{
    if (ws->fail_code)
        return ws->fail_code;
    if (ws->recv_code)
        return ws->recv_code;
    if (ws->sent_code)
        return ws->sent_code;
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
        c->deadline_ms = uv_now(c->server->loop) + ws->close_timeout_ms;
        kr_conn_close_after_flush(c);
    }
}

/* Queues a close frame with payload p[0..n) (n == 0: no code); records code as sent. A
 * connection that refuses the bytes is closing anyway: then nothing counts as sent. */
static void send_close(kr_ws_t *ws, int code, const void *p, size_t n)
{
    ws->closing = 1;
    if (kr_conn_write(ws->conn, kr_ws_frame_new(KR_WS_OP_CLOSE, p, n)) == 0)
        ws->sent_code = (uint16_t)code;
}

/* Fails the connection: a close frame with code (unless ours is already out: then the
 * handshake just ends with it), and no more input. ws_on_read ends the WebSocket. */
static void fail(kr_ws_t *ws, int code)
{
    ws->read_done = 1;
    ws->in_msg = 0;
    ws->frame_left = 0;
    msg_drop(ws);
    if (ws->sent_code || ws->closing)
        return;
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    ws->fail_code = (uint16_t)code;
    send_close(ws, code, payload, 2);
}

/* ---- the frame parser ------------------------------------------------------------------- */

/* XORs p[0..n) with the masking key, starting at key byte off, eight bytes at a time. */
static void unmask(uint8_t *p, size_t n, const uint8_t key[4], unsigned off)
{
    uint8_t k[8];
    for (unsigned i = 0; i < 8; i++)
        k[i] = key[(off + i) & 3];
    uint64_t kw;
    memcpy(&kw, k, 8);
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= kw;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= k[i & 7];
}


/* Starts reassembling a message; room for cap bytes to begin with (the limit was checked). */
static void msg_start(kr_ws_t *ws, int binary, size_t cap)
{
    KR_ASSERT(ws->msg == NULL);
    ws_msg_t *m = kr_malloc(sizeof(*m) + cap);
    m->len = 0;
    m->cap = cap;
    m->binary = (uint8_t)binary;
    m->u8 = (kr_utf8_state_t)KR_UTF8_STATE_INIT;
    ws->msg = m;
}

/* Makes room for need bytes in the message in progress: doubling, never past max_message
 * (need never is: the frame headers were checked against it). */
static void msg_reserve(kr_ws_t *ws, size_t need)
{
    ws_msg_t *m = ws->msg;
    KR_ASSERT(need <= ws->max_message);
    if (need <= m->cap)
        return;
    size_t cap = m->cap ? m->cap : 256;
    while (cap < need)
        cap = cap > ws->max_message / 2 ? ws->max_message : cap * 2;
    if (cap > ws->max_message)
        cap = ws->max_message;
    m = kr_realloc(m, sizeof(*m) + cap);
    m->cap = cap;
    ws->msg = m;
}

/* Appends already unmasked payload bytes to the message in progress. Returns 0 when the text
 * went bad (the connection failed with 1007). */
static int msg_append(kr_ws_t *ws, const uint8_t *p, size_t n)
{
    msg_reserve(ws, ws->msg->len + n);
    ws_msg_t *m = ws->msg;
    if (!m->binary && !kr_utf8_feed(&m->u8, p, n)) {
        fail(ws, KR_WS_CLOSE_INVALID_DATA);
        return 0;
    }
    if (n)
        memcpy(m->data + m->len, p, n);
    m->len += n;
    return 1;
}

/* Hands a complete message to the handler; data is only valid during the call. */
static void deliver(kr_ws_t *ws, int binary, const void *data, size_t len)
{
    if (ws->closing || ws->dead || ws->h.on_message == NULL)
        return;
    ws->h.on_message(ws, binary, len ? (const char *)data : "", len, ws->ud);
    /* The handler may have closed the connection: read nothing more. */
    if (ws->dead || kr_conn_is_closing(ws->conn) || ws->conn->close_after_flush)
        ws->read_done = 1;
}

/* The last frame of a reassembled message is in. */
static void message_done(kr_ws_t *ws)
{
    ws_msg_t *m = ws->msg;
    if (!m->binary && m->u8.need != 0) {
        fail(ws, KR_WS_CLOSE_INVALID_DATA); /* ends inside a code point */
        return;
    }
    deliver(ws, m->binary, m->data, m->len);
    msg_drop(ws); /* the kr_ws_t is still there: depth > 0 */
}

/* RFC 6455 section 7.4: the codes a close frame may carry (1004-1006, 1015 and the
 * unassigned ones are not; 1012-1014 were registered later and are refused like wslay does). */
static int valid_close_code(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* The peer's close frame (payload unmasked, at most 125 bytes). */
static void peer_close(kr_ws_t *ws, const uint8_t *p, size_t n)
{
    unsigned code = KR_WS_CLOSE_NO_STATUS;
    if (n == 1) {
        fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* a code is two bytes (section 5.5.1) */
        return;
    }
    if (n >= 2) {
        code = ((unsigned)p[0] << 8) | p[1];
        if (!valid_close_code(code)) {
            fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR);
            return;
        }
        if (!kr_utf8_valid((const char *)p + 2, n - 2)) {
            fail(ws, KR_WS_CLOSE_INVALID_DATA);
            return;
        }
    }
    ws->recv_code = (uint16_t)code;
    ws->read_done = 1;
    ws->in_msg = 0;
    msg_drop(ws); /* a message cut short by the close is lost */
    /* Answer with the same code and reason (an empty close for an empty one), unless our
     * close went first: then this is its answer. */
    if (!ws->sent_code && !ws->closing)
        send_close(ws, (int)code, p, n);
    ws->closing = 1;
}

static void control_frame(kr_ws_t *ws, int op, const uint8_t *p, size_t n)
{
    if (op == KR_WS_OP_PING) {
        /* Nothing follows our close frame, not even a pong (section 5.5.1). */
        if (!ws->closing)
            (void)kr_conn_write(ws->conn, kr_ws_frame_new(KR_WS_OP_PONG, p, n));
    } else if (op == KR_WS_OP_CLOSE) {
        peer_close(ws, p, n);
    }
    /* A pong: nothing to do (we send no pings). */
}

/* Payload bytes p[0..n) of the frame being streamed (ws->frame_left counts them down). */
static void stream_payload(kr_ws_t *ws, uint8_t *p, size_t n)
{
    ws->frame_left -= n;
    if (ws->closing)
        msg_drop(ws); /* our close crossed the message: its bytes are skipped */
    if (ws->msg) {
        unmask(p, n, ws->mask, ws->mask_off);
        ws->mask_off = (uint8_t)((ws->mask_off + n) & 3);
        if (!msg_append(ws, p, n))
            return;
    }
    if (ws->frame_left == 0 && ws->frame_fin && ws->msg)
        message_done(ws);
}

/* Reads the frames in p[0..len) (the read buffer), unmasking in place. Returns how many bytes
 * were used: the rest is the start of a frame that will fit in the read buffer once complete.
 * Stops early when reading is over (ws->read_done) or the connection closed (ws->dead). */
static size_t parse(kr_ws_t *ws, uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off < len && !ws->read_done && !ws->dead) {
        if (ws->frame_left > 0) {
            size_t n = len - off;
            if (n > ws->frame_left)
                n = (size_t)ws->frame_left;
            stream_payload(ws, p + off, n);
            off += n;
            continue;
        }
        /* A frame header (section 5.2), checked as far as its bytes have arrived. */
        const uint8_t *h = p + off;
        size_t avail = len - off;
        int fin = h[0] >> 7, op = h[0] & 0x0f, control = op & 0x08;
        if (h[0] & 0x70) { /* RSV1-3: we negotiate no extension */
            fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR);
            break;
        }
        if (control ? (op > KR_WS_OP_PONG || !fin) : (op > KR_WS_OP_BINARY)) {
            fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* unknown opcode, fragmented control frame */
            break;
        }
        if (!control && (op == KR_WS_OP_CONT) != (ws->in_msg != 0)) {
            fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* nothing to continue, or a message inside one */
            break;
        }
        if (avail < 2)
            break;
        if (!(h[1] & 0x80) || (control && (h[1] & 0x7f) > 125)) {
            fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* client frames are masked (section 5.3) */
            break;
        }
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
            if (plen < 126) {
                fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* not the minimal length encoding */
                break;
            }
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | h[2 + i];
            hl = 10;
            if ((plen >> 63) || plen <= 0xffff) {
                fail(ws, KR_WS_CLOSE_PROTOCOL_ERROR); /* top bit set, or not minimal */
                break;
            }
        }
        if (!control) {
            /* The limits, before a byte of the payload: the reassembled size and the frame
             * count (a message in tiny pieces costs a header each). */
            size_t have = op == KR_WS_OP_CONT && ws->msg ? ws->msg->len : 0;
            unsigned frames = op == KR_WS_OP_CONT ? ws->frames + 1 : 1;
            if (plen > ws->max_message - have || frames > ws->max_fragments) {
                fail(ws, KR_WS_CLOSE_TOO_BIG);
                break;
            }
        }
        hl += 4; /* the masking key */
        if (avail < hl)
            break;
        const uint8_t *key = h + hl - 4;
        uint8_t *payload = p + off + hl;
        size_t inbuf = avail - hl;
        if (control) {
            if (inbuf < plen) {
                if (hl + plen > ws->conn->rmax)
                    fail(ws, KR_WS_CLOSE_TOO_BIG); /* a read buffer under 131 bytes */
                break;
            }
            unmask(payload, (size_t)plen, key, 0);
            off += hl + (size_t)plen;
            control_frame(ws, op, payload, (size_t)plen);
            continue;
        }
        size_t n = (size_t)plen; /* at most max_message */
        if (ws->closing) {
            /* After our close frame data is dropped: skip the payload as it comes. */
            msg_drop(ws);
            ws->frames = fin ? 0 : (op == KR_WS_OP_CONT ? ws->frames + 1 : 1);
            ws->in_msg = !fin;
            off += hl;
            ws->frame_left = n;
            ws->frame_fin = (unsigned)fin;
            continue;
        }
        if (inbuf < n && hl + n <= ws->conn->rmax)
            break; /* it will fit in the read buffer: wait for the rest */
        ws->frames = fin ? 0 : (op == KR_WS_OP_CONT ? ws->frames + 1 : 1);
        ws->in_msg = !fin;
        if (inbuf >= n) {
            /* The whole frame is here: unmask it where it lies. */
            unmask(payload, n, key, 0);
            off += hl + n;
            if (op != KR_WS_OP_CONT && fin) {
                /* A whole message, delivered from the read buffer without a copy. */
                if (op == KR_WS_OP_TEXT && !kr_utf8_valid((const char *)payload, n)) {
                    fail(ws, KR_WS_CLOSE_INVALID_DATA);
                    break;
                }
                deliver(ws, op == KR_WS_OP_BINARY, payload, n);
                continue;
            }
            if (op != KR_WS_OP_CONT)
                msg_start(ws, op == KR_WS_OP_BINARY, 0);
            if (msg_append(ws, payload, n) && fin)
                message_done(ws);
            continue;
        }
        /* Larger than the read buffer can ever hold: take its payload as it arrives. A whole
         * message gets a buffer of exactly its size. */
        if (op != KR_WS_OP_CONT)
            msg_start(ws, op == KR_WS_OP_BINARY, fin ? n : 0);
        msg_reserve(ws, ws->msg->len + n);
        memcpy(ws->mask, key, 4);
        ws->mask_off = 0;
        ws->frame_left = n;
        ws->frame_fin = (unsigned)fin;
        off += hl;
    }
    return off;
}

/* ---- connection protocol ---------------------------------------------------------------- */

static void ws_on_read(kr_conn_t *c)
{
    kr_ws_t *ws = c->proto_data;
    if (ws == NULL || ws->finished || ws->read_done) {
        kr_conn_consume(c, c->rlen); /* nobody reads these any more */
        return;
    }
    if (ws->in_parse)
        return; /* re-entered from a handler: the outer parse() takes the bytes */
    ws_enter(ws);
    ws->in_parse = 1;
    /* Only the bytes of this read (the read buffer is capped): a flooding peer cannot hold
     * the loop longer. */
    size_t used = parse(ws, (uint8_t *)c->rbuf, c->rlen);
    ws->in_parse = 0;
    if (!ws->dead) {
        kr_conn_consume(c, ws->read_done ? c->rlen : used);
        if (ws->read_done)
            end_ws(ws);
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
    ws->read_done = 1;
    if (!ws->in_parse)
        msg_drop(ws);
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

static kr_ws_t *ws_new(kr_conn_t *c, const kr_ws_handler_t *h, void *ud, const kr_ws_opts_t *o)
{
    kr_ws_t *ws = kr_calloc(1, sizeof(*ws));
    ws->conn = c;
    if (h)
        ws->h = *h;
    ws->ud = ud;
    ws->max_message = o->max_message;
    ws->max_fragments = o->max_fragments;
    ws->close_timeout_ms = o->close_timeout_ms;
    return ws;
}

static void apply_limits(kr_conn_t *c, const kr_ws_opts_t *o)
{
    c->low_water = o->low_water;
    c->high_water = o->high_water;
    c->hard_limit = o->hard_limit;
    c->deadline_ms = 0;
}

static const kr_ws_opts_t *opts_or_default(const kr_ws_opts_t *opts, kr_ws_opts_t *tmp)
{
    if (opts)
        return opts;
    kr_ws_opts_default(tmp);
    return tmp;
}

kr_ws_t *kr__ws_start(kr_conn_t *c, const kr_ws_handler_t *h, void *ud, const kr_ws_opts_t *opts)
{
    if (kr_conn_is_closing(c) || c->close_after_flush)
        return NULL;
    kr_ws_opts_t tmp;
    opts = opts_or_default(opts, &tmp);
    kr_ws_t *ws = ws_new(c, h, ud, opts);
    c->proto = &ws_proto;
    c->proto_data = ws;
    apply_limits(c, opts);
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
    kr_ws_opts_t tmp;
    opts = opts_or_default(opts, &tmp);
    kr_ws_t *ws = ws_new(c, h, ud, opts);
    if (kr_http_take_over(req, &ws_proto, ws) == NULL) {
        ws_free(ws);
        return NULL;
    }
    apply_limits(c, opts);
    return ws;
}

/* ---- closing and accessors -------------------------------------------------------------- */

void kr_ws_close(kr_ws_t *ws, int code, const char *reason)
{
    kr_conn_t *c = ws->conn;
    if (ws->closing || ws->dead || kr_conn_is_closing(c))
        return;
    uint8_t payload[2 + KR_WS_MAX_REASON];
    size_t n = 0;
    if ((uint16_t)code != 0) {
        size_t rlen = reason ? strlen(reason) : 0;
        if (rlen > KR_WS_MAX_REASON) {
            rlen = KR_WS_MAX_REASON;
            while (rlen > 0 && ((unsigned char)reason[rlen] & 0xc0) == 0x80)
                rlen--; /* don't cut a UTF-8 sequence: the peer would fail us with 1007 */
        }
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (rlen)
            memcpy(payload + 2, reason, rlen);
        n = 2 + rlen;
    }
    /* Written at once, even from inside on_message: what the handler queued before goes
     * first, and nothing after it (kr_ws_send_* refuse from now on). */
    send_close(ws, n ? code : KR_WS_CLOSE_NO_STATUS, payload, n);
    if (!ws->in_parse)
        msg_drop(ws); /* a message in progress is dropped now (not under on_message's feet) */
    if (ws->sent_code)
        c->deadline_ms = uv_now(c->server->loop) + ws->close_timeout_ms;
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

size_t kr__ws_reassembly_bytes(const kr_ws_t *ws)
{
    return ws->msg ? sizeof(*ws->msg) + ws->msg->cap : 0;
}
