/* test_ws.c: unit tests for core/kr_ws.c driven without sockets.
 *
 * Each test makes a server on its own loop (never started), opens a detached connection and
 * starts a WebSocket on it with kr__ws_start, feeds masked client frames with kr__conn_feed
 * and parses the server frames the connection queued (c->outq). Covered: the accept key,
 * frame headers at each length boundary, messages whole, fragmented, several per read and
 * byte by byte, binary data untouched, ping/pong, both close handshakes (peer first, us
 * first, timeout, EOF, TCP close), the protocol errors (1002 for masking, RSV, opcodes,
 * control frame shapes and close codes; 1007 for UTF-8; 1009 for size and fragment count),
 * handlers that close from inside on_message, drain and shutdown (the connection's ops called
 * directly, since a detached connection never flushes), the upgrade check and the full
 * upgrade through a detached HTTP connection. The frame parser itself: input split at every
 * byte, each length encoding at its boundaries, frames at and past the read buffer's size
 * (streamed into the reassembly buffer), strict headers (non-minimal lengths, the 64-bit top
 * bit, continuations out of place), every close code class, UTF-8 checked per fragment, and
 * the reassembly buffer's lifetime (kr__ws_reassembly_bytes).
 */
#include "kr_conn.h"
#include "kr_http.h"
#include "kr_json.h"
#include "kr_server.h"
#include "kr_ws.h"

#include "kr_test.h"
#include "ws_frames.h"

extern const kr_conn_proto_t kr_http_proto;

/* ---- recording handler ------------------------------------------------------------------ */

#define MAX_MSG 16

enum action_e { ACT_NONE = 0, ACT_ECHO, ACT_WS_CLOSE, ACT_CONN_CLOSE, ACT_SEND_AFTER_CLOSE };

typedef struct rec_s {
    int nmsg;
    int binary[MAX_MSG];
    char *data[MAX_MSG];
    size_t len[MAX_MSG];
    int nclose;
    int close_code;
    kr_ws_t *closed_ws;
    int action;           /* what on_message does after recording */
    int send_in_close_rc; /* what kr_ws_send_text returned inside on_close */
} rec_t;

static rec_t rec;

static void on_message(kr_ws_t *ws, int binary, const char *data, size_t len, void *ud)
{
    ASSERT(ud == &rec);
    ASSERT(rec.nmsg < MAX_MSG);
    ASSERT_EQ(rec.nclose, 0);
    rec.binary[rec.nmsg] = binary;
    rec.data[rec.nmsg] = kr_malloc(len + 1);
    memcpy(rec.data[rec.nmsg], data, len);
    rec.data[rec.nmsg][len] = '\0';
    rec.len[rec.nmsg] = len;
    rec.nmsg++;
    switch (rec.action) {
    case ACT_ECHO:
        if (binary)
            ASSERT_OK(kr_ws_send_binary(ws, data, len));
        else
            ASSERT_OK(kr_ws_send_text(ws, data, len));
        break;
    case ACT_WS_CLOSE:
        kr_ws_close(ws, 4000, "from handler");
        ASSERT_EQ(kr_ws_send_text(ws, "late", 4), KR_ECLOSED);
        break;
    case ACT_CONN_CLOSE:
        kr_conn_close(kr_ws_conn(ws), "test");
        break;
    default:
        break;
    }
}

static void on_close(kr_ws_t *ws, int code, void *ud)
{
    ASSERT(ud == &rec);
    rec.nclose++;
    rec.close_code = code;
    rec.closed_ws = ws;
    rec.send_in_close_rc = kr_ws_send_text(ws, "x", 1);
}

static const kr_ws_handler_t handler = {on_message, on_close, NULL};

static void rec_reset(void)
{
    for (int i = 0; i < rec.nmsg; i++)
        kr_free(rec.data[i]);
    memset(&rec, 0, sizeof(rec));
}

/* ---- fixture ---------------------------------------------------------------------------- */

static void dummy_read(kr_conn_t *c)
{
    kr_conn_consume(c, c->rlen);
}

static const kr_conn_proto_t dummy_proto = {.name = "dummy", .on_read = dummy_read};

typedef struct fx_s {
    uv_loop_t loop;
    kr_server_t s;
    kr_conn_t *c;
    kr_ws_t *ws;
} fx_t;

static void fx_init_opts(fx_t *fx, const kr_ws_opts_t *opts)
{
    memset(fx, 0, sizeof(*fx));
    rec_reset();
    ASSERT_OK(uv_loop_init(&fx->loop));
    kr_server_init(&fx->s, &fx->loop);
    fx->c = kr__conn_new_detached(&fx->s, &dummy_proto);
    ASSERT_NOT_NULL(fx->c);
    kr_conn_ref(fx->c);
    fx->ws = kr__ws_start(fx->c, &handler, &rec, opts);
    ASSERT_NOT_NULL(fx->ws);
}

static void fx_init(fx_t *fx)
{
    fx_init_opts(fx, NULL);
}

/* Closes the connection; on_close must have run exactly once by then. */
static void fx_done(fx_t *fx)
{
    kr_conn_close(fx->c, NULL);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.send_in_close_rc, KR_ECLOSED);
    kr_conn_unref(fx->c);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&fx->loop), 0);
    rec_reset();
}

/* ---- client frames (encoder: ws_frames.h) ---------------------------------------------- */

#define RSV1 0x40

static size_t cframe_str(uint8_t *out, int b0, const char *s)
{
    return ws_client_frame(out, b0, s, strlen(s));
}

static size_t cclose(uint8_t *out, int code, const char *reason)
{
    uint8_t p[128];
    size_t n = 0;
    p[n++] = (uint8_t)(code >> 8);
    p[n++] = (uint8_t)code;
    memcpy(p + n, reason, strlen(reason));
    n += strlen(reason);
    return ws_client_frame(out, FIN | KR_WS_OP_CLOSE, p, n);
}

static void feed(fx_t *fx, const void *data, size_t len)
{
    ASSERT_EQ(kr__conn_feed(fx->c, data, len), len);
}

/* ---- server output ---------------------------------------------------------------------- */

/* Everything queued on c (not consumed), in a static buffer. */
static const uint8_t *output_of(kr_conn_t *c, size_t *lenp)
{
    static uint8_t out[256 * 1024];
    *lenp = conn_output(c, out, sizeof(out));
    return out;
}

/* Parses the queued output as server frames (which must be unmasked and complete). */
static unsigned frames_of(kr_conn_t *c, ws_frame_t *f, unsigned max)
{
    size_t len;
    const uint8_t *p = output_of(c, &len);
    return ws_parse_frames(p, len, f, max);
}

/* Like ASSERT_MEM_EQ for bytes that are not text (nothing is printed but the lengths). */
#define ASSERT_BYTES(a, alen, b, blen)                                                             \
    do {                                                                                           \
        ASSERT_EQ((alen), (blen));                                                                 \
        ASSERT(memcmp((a), (b), (blen)) == 0);                                                     \
    } while (0)

static void drop_output(kr_conn_t *c)
{
    kr_outq_consume(&c->outq, c->outq.bytes);
}

static void assert_close_frame(const ws_frame_t *f, int code, const char *reason)
{
    ASSERT_EQ(f->opcode, KR_WS_OP_CLOSE);
    ASSERT_EQ(f->fin, 1);
    if (code == 0) {
        ASSERT_EQ(f->len, 0);
        return;
    }
    ASSERT(f->len >= 2);
    ASSERT_EQ((f->payload[0] << 8) | f->payload[1], code);
    ASSERT_MEM_EQ(f->payload + 2, f->len - 2, reason, strlen(reason));
}

/* The connection answered with exactly one close frame with code and is closing after it. */
static void assert_failed_with(fx_t *fx, int code)
{
    ws_frame_t f[8];
    unsigned n = frames_of(fx->c, f, 8);
    ASSERT(n >= 1);
    assert_close_frame(&f[n - 1], code, "");
    for (unsigned i = 0; i + 1 < n; i++)
        ASSERT(f[i].opcode != KR_WS_OP_CLOSE);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, code);
    ASSERT(fx->c->close_after_flush);
}

/* ---- tests ------------------------------------------------------------------------------ */

TEST(accept_key_rfc_sample)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    ASSERT_OK(kr_ws_accept_key(key, strlen(key), out));
    ASSERT_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    char big[65];
    memset(big, 'A', sizeof(big));
    ASSERT_EQ(kr_ws_accept_key(big, sizeof(big), out), KR_EINVAL);
}

TEST(frame_header_lengths)
{
    uint8_t h[10];
    ASSERT_EQ(kr_ws_frame_header(h, KR_WS_OP_TEXT, 0), 2);
    ASSERT_EQ(h[0], 0x81);
    ASSERT_EQ(h[1], 0);
    ASSERT_EQ(kr_ws_frame_header(h, KR_WS_OP_BINARY, 125), 2);
    ASSERT_EQ(h[0], 0x82);
    ASSERT_EQ(h[1], 125);
    ASSERT_EQ(kr_ws_frame_header(h, KR_WS_OP_TEXT, 126), 4);
    ASSERT_EQ(h[1], 126);
    ASSERT_EQ(h[2], 0);
    ASSERT_EQ(h[3], 126);
    ASSERT_EQ(kr_ws_frame_header(h, KR_WS_OP_TEXT, 65535), 4);
    ASSERT_EQ(h[1], 126);
    ASSERT_EQ(h[2], 0xff);
    ASSERT_EQ(h[3], 0xff);
    ASSERT_EQ(kr_ws_frame_header(h, KR_WS_OP_BINARY, 65536), 10);
    static const uint8_t want[10] = {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    ASSERT_BYTES(h, 10, want, 10);
    ASSERT_EQ(kr_ws_frame_header(h, KR_WS_OP_PING, 0x0102030405060708ull), 10);
    static const uint8_t want64[10] = {0x89, 127, 1, 2, 3, 4, 5, 6, 7, 8};
    ASSERT_BYTES(h, 10, want64, 10);

    kr_buf_t *b = kr_ws_frame_new(KR_WS_OP_TEXT, "hi", 2);
    ASSERT_MEM_EQ(b->data, b->len, "\x81\x02hi", 4);
    kr_buf_unref(b);
    char *big = kr_calloc(1, 70000);
    b = kr_ws_frame_new(KR_WS_OP_BINARY, big, 70000);
    ASSERT_EQ(b->len, 70010);
    ASSERT_EQ((uint8_t)b->data[1], 127);
    kr_buf_unref(b);
    kr_free(big);
}

TEST(text_message)
{
    fx_t fx;
    fx_init(&fx);
    ASSERT_EQ(fx.c->high_water, 1024 * 1024);
    ASSERT_EQ(fx.c->low_water, 256 * 1024);
    ASSERT_EQ(fx.c->hard_limit, 8 * 1024 * 1024);
    ASSERT(kr_ws_userdata(fx.ws) == &rec);
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "Hello");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_EQ(rec.binary[0], 0);
    ASSERT_MEM_EQ(rec.data[0], rec.len[0], "Hello", 5);
    ASSERT_EQ(fx.c->rlen, 0);
    ASSERT_EQ(fx.c->outq.bytes, 0); /* nothing to answer */
    /* An empty message is a message. */
    n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 2);
    ASSERT_EQ(rec.len[1], 0);
    ASSERT_EQ(rec.nclose, 0);
    fx_done(&fx);
}

TEST(echo_and_send)
{
    fx_t fx;
    fx_init(&fx);
    rec.action = ACT_ECHO;
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "ping me");
    feed(&fx, buf, n);
    ASSERT_OK(kr_ws_send_binary(fx.ws, "\x00\x01", 2));
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 2);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_TEXT);
    ASSERT_EQ(f[0].fin, 1);
    ASSERT_EQ(f[0].rsv, 0);
    ASSERT_MEM_EQ(f[0].payload, f[0].len, "ping me", 7);
    ASSERT_EQ(f[1].opcode, KR_WS_OP_BINARY);
    ASSERT_MEM_EQ(f[1].payload, f[1].len, "\x00\x01", 2);
    ASSERT_EQ(kr_ws_queued(fx.ws), 9 + 4);
    fx_done(&fx);
}

TEST(fragmented_message)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[256];
    size_t n = cframe_str(buf, KR_WS_OP_TEXT, "Hel");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    /* A control frame may come between fragments. */
    n = cframe_str(buf, FIN | KR_WS_OP_PING, "p");
    feed(&fx, buf, n);
    n = cframe_str(buf, KR_WS_OP_CONT, "");
    feed(&fx, buf, n);
    n = cframe_str(buf, FIN | KR_WS_OP_CONT, "lo");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_MEM_EQ(rec.data[0], rec.len[0], "Hello", 5);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_PONG);
    ASSERT_MEM_EQ(f[0].payload, f[0].len, "p", 1);
    /* A code point split across fragments is fine. */
    n = cframe_str(buf, KR_WS_OP_TEXT, "\xc3");
    feed(&fx, buf, n);
    n = cframe_str(buf, FIN | KR_WS_OP_CONT, "\xa9!");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 2);
    ASSERT_MEM_EQ(rec.data[1], rec.len[1], "\xc3\xa9!", 3);
    ASSERT_EQ(rec.nclose, 0);
    fx_done(&fx);
}

TEST(two_frames_one_feed)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[512];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "one");
    n += cframe_str(buf + n, FIN | KR_WS_OP_BINARY, "two");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "");
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "three");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 3);
    ASSERT_STR_EQ(rec.data[0], "one");
    ASSERT_STR_EQ(rec.data[1], "two");
    ASSERT_EQ(rec.binary[1], 1);
    ASSERT_STR_EQ(rec.data[2], "three");
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_PONG);
    ASSERT_EQ(f[0].len, 0);
    fx_done(&fx);
}

TEST(byte_by_byte)
{
    fx_t fx;
    fx_init(&fx);
    static uint8_t buf[70000 + 64];
    static char big[70000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    /* 16-bit and 64-bit extended lengths, a fragmented message and a close, one byte at a
     * time. */
    size_t n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, big, 300);
    for (size_t i = 0; i < n; i++)
        feed(&fx, buf + i, 1);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_BYTES(rec.data[0], rec.len[0], big, 300);
    n = ws_client_frame(buf, FIN | KR_WS_OP_BINARY, big, sizeof(big));
    for (size_t i = 0; i < n; i++)
        feed(&fx, buf + i, 1);
    ASSERT_EQ(rec.nmsg, 2);
    ASSERT_BYTES(rec.data[1], rec.len[1], big, sizeof(big));
    n = cframe_str(buf, KR_WS_OP_TEXT, "ab");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "cd");
    n += cclose(buf + n, 1001, "gone");
    for (size_t i = 0; i < n; i++)
        feed(&fx, buf + i, 1);
    ASSERT_EQ(rec.nmsg, 3);
    ASSERT_STR_EQ(rec.data[2], "abcd");
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1001);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    assert_close_frame(&f[0], 1001, "gone");
    fx_done(&fx);
}

TEST(binary_untouched)
{
    fx_t fx;
    fx_init(&fx);
    rec.action = ACT_ECHO;
    uint8_t all[256], buf[512];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    size_t n = ws_client_frame(buf, FIN | KR_WS_OP_BINARY, all, sizeof(all));
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_EQ(rec.binary[0], 1);
    ASSERT_BYTES(rec.data[0], rec.len[0], all, sizeof(all));
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_BINARY);
    ASSERT_BYTES(f[0].payload, f[0].len, all, sizeof(all));
    fx_done(&fx);
}

TEST(ping_pong)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[256], payload[125];
    memset(payload, 'z', sizeof(payload));
    size_t n = cframe_str(buf, FIN | KR_WS_OP_PING, "abc");
    n += ws_client_frame(buf + n, FIN | KR_WS_OP_PING, payload, sizeof(payload));
    feed(&fx, buf, n);
    /* An unsolicited pong is ignored. */
    n = cframe_str(buf, FIN | KR_WS_OP_PONG, "unasked");
    feed(&fx, buf, n);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 2);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_PONG);
    ASSERT_MEM_EQ(f[0].payload, f[0].len, "abc", 3);
    ASSERT_EQ(f[1].opcode, KR_WS_OP_PONG);
    ASSERT_BYTES(f[1].payload, f[1].len, payload, sizeof(payload));
    ASSERT_EQ(rec.nmsg, 0);
    ASSERT_EQ(rec.nclose, 0);
    fx_done(&fx);
}

TEST(peer_close)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "before");
    n += cclose(buf + n, 1000, "bye");
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "after"); /* ignored */
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1000);
    ASSERT(rec.closed_ws == fx.ws);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    assert_close_frame(&f[0], 1000, "bye");
    ASSERT(fx.c->close_after_flush);
    ASSERT(!kr_conn_is_closing(fx.c));
    ASSERT_EQ(kr_ws_send_text(fx.ws, "no", 2), KR_ECLOSED);
    ASSERT_EQ(kr__conn_feed(fx.c, buf, n), 0); /* input is no longer read */
    kr_ws_close(fx.ws, 1000, NULL);            /* no second close frame */
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    ASSERT_EQ(rec.nclose, 1);
    fx_done(&fx);
}

TEST(peer_close_without_code)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[64];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_CLOSE, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1005);
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    assert_close_frame(&f[0], 0, NULL);
    fx_done(&fx);
}

TEST(server_close)
{
    fx_t fx;
    fx_init(&fx);
    rec.action = ACT_ECHO;
    kr_ws_close(fx.ws, 4001, "done here");
    ASSERT_EQ(rec.nclose, 0); /* on_close waits for the handshake */
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    assert_close_frame(&f[0], 4001, "done here");
    ASSERT(fx.c->deadline_ms != 0);
    ASSERT_EQ(kr_ws_send_text(fx.ws, "x", 1), KR_ECLOSED);
    kr_ws_close(fx.ws, 1000, "again"); /* idempotent */
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    drop_output(fx.c);
    /* Messages that cross our close are dropped; pings are not answered any more. */
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "crossing");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "p");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    ASSERT_EQ(fx.c->outq.bytes, 0);
    ASSERT_EQ(rec.nclose, 0);
    n = cclose(buf, 4001, "done here");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 4001);
    ASSERT_EQ(fx.c->outq.bytes, 0); /* the reply to our close is not answered */
    ASSERT(fx.c->close_after_flush);
    fx_done(&fx);
}

TEST(server_close_long_reason)
{
    fx_t fx;
    fx_init(&fx);
    char reason[200];
    memset(reason, 'r', sizeof(reason));
    /* A two-byte character straddles the 123-byte limit: it is dropped whole. */
    reason[122] = (char)0xc3;
    reason[123] = (char)0xa9;
    reason[199] = '\0';
    kr_ws_close(fx.ws, 1000, reason);
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    ASSERT_EQ(f[0].len, 2 + 122);
    ASSERT_EQ(f[0].payload[2 + 121], 'r');
    fx_done(&fx);
}

TEST(server_close_timeout)
{
    fx_t fx;
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.close_timeout_ms = 1234;
    fx_init_opts(&fx, &o);
    uint64_t now = uv_now(&fx.loop);
    kr_ws_close(fx.ws, 1001, "going");
    ASSERT_EQ(fx.c->deadline_ms, now + 1234);
    kr__conn_timeout(fx.c); /* what the server's sweep does */
    ASSERT(kr_conn_is_closing(fx.c));
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1001); /* the code we sent: the peer never answered */
    fx_done(&fx);
}

TEST(eof_is_1006)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[64];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "last");
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "hal"); /* cut short */
    feed(&fx, buf, n - 2);
    ASSERT_EQ(rec.nmsg, 1);
    fx.c->proto->on_eof(fx.c);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1006);
    ASSERT(fx.c->close_after_flush);
    fx_done(&fx);
}

TEST(tcp_close_is_1006)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[64];
    size_t n = cframe_str(buf, KR_WS_OP_TEXT, "partial");
    feed(&fx, buf, n);
    kr_conn_close(fx.c, "test");
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1006);
    fx_done(&fx); /* a second close calls nothing */
}

TEST(invalid_utf8_is_1007)
{
    static const char *bad[] = {
        "\xff",             /* never valid */
        "ok\xc3(",          /* bad continuation */
        "\xed\xa0\x80",     /* a UTF-16 surrogate */
        "\xc0\xaf",         /* overlong */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
    };
    for (size_t i = 0; i < KR_ARRAY_SIZE(bad); i++) {
        fx_t fx;
        fx_init(&fx);
        uint8_t buf[64];
        size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, bad[i]);
        feed(&fx, buf, n);
        ASSERT_EQ(rec.nmsg, 0);
        assert_failed_with(&fx, 1007);
        fx_done(&fx);
    }
    /* Fail fast: a bad byte in the first fragment ends the connection before the message
     * does. */
    {
        fx_t fx;
        fx_init(&fx);
        uint8_t buf[64];
        size_t n = cframe_str(buf, KR_WS_OP_TEXT, "ok\xff");
        feed(&fx, buf, n);
        assert_failed_with(&fx, 1007);
        fx_done(&fx);
    }
    /* Truncated at the end of a fragmented message; and in a close reason. */
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[64];
    size_t n = cframe_str(buf, KR_WS_OP_TEXT, "fine");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "\xe2\x82");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    assert_failed_with(&fx, 1007);
    fx_done(&fx);
    fx_init(&fx);
    n = cclose(buf, 1000, "\xff");
    feed(&fx, buf, n);
    assert_failed_with(&fx, 1007);
    fx_done(&fx);
    /* Binary data is not text. */
    fx_init(&fx);
    n = cframe_str(buf, FIN | KR_WS_OP_BINARY, "\xff\xfe");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_EQ(rec.nclose, 0);
    fx_done(&fx);
}

TEST(oversize_is_1009)
{
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.max_message = 100;
    static uint8_t buf[1024];
    char payload[300];
    memset(payload, 'x', sizeof(payload));
    fx_t fx;
    fx_init_opts(&fx, &o);
    size_t n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, payload, 100); /* at the limit: fine */
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, payload, 101);
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    assert_failed_with(&fx, 1009);
    fx_done(&fx);
    /* The limit is on the reassembled message; the header alone is enough to decide. */
    fx_init_opts(&fx, &o);
    n = ws_client_frame(buf, KR_WS_OP_BINARY, payload, 60);
    n += ws_client_frame(buf + n, FIN | KR_WS_OP_CONT, payload, 60);
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    assert_failed_with(&fx, 1009);
    fx_done(&fx);
    fx_init_opts(&fx, &o);
    n = ws_client_frame(buf, FIN | KR_WS_OP_BINARY, payload, 300);
    feed(&fx, buf, 9); /* the header and one byte: the header alone decides */
    assert_failed_with(&fx, 1009);
    fx_done(&fx);
}

TEST(too_many_fragments_is_1009)
{
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.max_fragments = 4;
    fx_t fx;
    fx_init_opts(&fx, &o);
    uint8_t buf[256];
    size_t n = cframe_str(buf, KR_WS_OP_TEXT, "a");
    n += cframe_str(buf + n, KR_WS_OP_CONT, "b");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, ""); /* control frames do not count */
    n += cframe_str(buf + n, KR_WS_OP_CONT, "");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "d");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_STR_EQ(rec.data[0], "abd");
    drop_output(fx.c);
    /* The count starts again with each message. */
    n = cframe_str(buf, KR_WS_OP_TEXT, "1");
    for (int i = 0; i < 3; i++)
        n += cframe_str(buf + n, KR_WS_OP_CONT, "2");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nclose, 0);
    n = cframe_str(buf, FIN | KR_WS_OP_CONT, "5");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    assert_failed_with(&fx, 1009);
    fx_done(&fx);
}

TEST(unmasked_is_1002)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[64];
    size_t n = ws_client_frame_ex(buf, FIN | KR_WS_OP_TEXT, "plain", 5, 0);
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    assert_failed_with(&fx, 1002);
    fx_done(&fx);
}

TEST(rsv_bits_are_1002)
{
    static const int rsv[] = {0x40, 0x20, 0x10};
    for (size_t i = 0; i < KR_ARRAY_SIZE(rsv); i++) {
        fx_t fx;
        fx_init(&fx);
        uint8_t buf[64];
        size_t n = cframe_str(buf, FIN | rsv[i] | KR_WS_OP_TEXT, "x");
        feed(&fx, buf, n);
        ASSERT_EQ(rec.nmsg, 0);
        assert_failed_with(&fx, 1002);
        fx_done(&fx);
    }
}

/* Frames rejected by their header (shape, opcode, length encoding, sequence) and by their
 * payload (close frames): each answered with one close frame 1002, whole or byte by byte. */
TEST(protocol_errors_are_1002)
{
    uint8_t big[126];
    memset(big, 'p', sizeof(big));
    static uint8_t buf[256];
    size_t lens[16];
    uint8_t frames[16][256];
    unsigned nf = 0;
    lens[nf] = ws_client_frame(frames[nf], FIN | KR_WS_OP_PING, big, 126); /* control > 125 */
    nf++;
    lens[nf] = cframe_str(frames[nf], KR_WS_OP_PING, "x"); /* fragmented control */
    nf++;
    lens[nf] = cframe_str(frames[nf], FIN | 0x3, "x"); /* reserved data opcode */
    nf++;
    lens[nf] = cframe_str(frames[nf], FIN | 0xb, "x"); /* reserved control opcode */
    nf++;
    lens[nf] = cframe_str(frames[nf], FIN | KR_WS_OP_CONT, "x"); /* nothing to continue */
    nf++;
    lens[nf] = cframe_str(frames[nf], KR_WS_OP_TEXT, "a"); /* new message inside one */
    lens[nf] += cframe_str(frames[nf] + lens[nf], FIN | KR_WS_OP_TEXT, "b");
    nf++;
    lens[nf] = cframe_str(frames[nf], FIN | KR_WS_OP_CLOSE, "\x03"); /* 1-byte close */
    nf++;
    lens[nf] = cclose(frames[nf], 999, ""); /* invalid close codes */
    nf++;
    lens[nf] = cclose(frames[nf], 1005, "");
    nf++;
    lens[nf] = cclose(frames[nf], 1016, "");
    nf++;
    lens[nf] = cclose(frames[nf], 5000, "");
    nf++;
    /* A 16-bit length under 126 (not the minimal encoding). */
    uint8_t nonmin[] = {FIN | KR_WS_OP_TEXT, 0x80 | 126, 0, 5, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'};
    memcpy(frames[nf], nonmin, sizeof(nonmin));
    lens[nf] = sizeof(nonmin);
    nf++;
    for (unsigned i = 0; i < nf; i++) {
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            fx_t fx;
            fx_init(&fx);
            size_t n = cframe_str(buf, FIN | KR_WS_OP_PING, "early");
            feed(&fx, buf, n);
            drop_output(fx.c);
            if (bytewise) {
                for (size_t k = 0; k < lens[i] && !fx.c->close_after_flush; k++)
                    feed(&fx, frames[i] + k, 1);
            } else {
                feed(&fx, frames[i], lens[i]);
            }
            ASSERT_EQ(rec.nmsg, 0);
            assert_failed_with(&fx, 1002);
            fx_done(&fx);
        }
    }
}

TEST(close_from_handler)
{
    fx_t fx;
    fx_init(&fx);
    rec.action = ACT_WS_CLOSE;
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "first");
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "second"); /* after our close: dropped */
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_EQ(rec.nclose, 0);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    assert_close_frame(&f[0], 4000, "from handler");
    n = cclose(buf, 4000, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 4000);
    ASSERT(fx.c->close_after_flush);
    fx_done(&fx);
}

/* A frame-level error after the handler closed: no second close frame, our code stays. */
TEST(close_from_handler_then_garbage)
{
    fx_t fx;
    fx_init(&fx);
    rec.action = ACT_WS_CLOSE;
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "first");
    n += cframe_str(buf + n, KR_WS_OP_PING, "x"); /* fragmented control frame */
    feed(&fx, buf, n);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(fx.c, f, 4), 1);
    assert_close_frame(&f[0], 4000, "from handler");
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 4000);
    fx_done(&fx);
}

TEST(conn_close_from_handler)
{
    fx_t fx;
    fx_init(&fx);
    rec.action = ACT_CONN_CLOSE;
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "first");
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "second");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1006);
    ASSERT(kr_conn_is_closing(fx.c));
    fx_done(&fx);
}

/* One encoded frame shared by several connections (a broadcast). */
TEST(shared_frame)
{
    fx_t a, b;
    fx_init(&a);
    kr_conn_t *c2 = kr__conn_new_detached(&a.s, &dummy_proto);
    kr_conn_ref(c2);
    kr_ws_t *ws2 = kr__ws_start(c2, &handler, &rec, NULL);
    ASSERT_NOT_NULL(ws2);
    b.c = c2;
    kr_buf_t *frame = kr_ws_frame_new(KR_WS_OP_TEXT, "all", 3);
    ASSERT_OK(kr_ws_send_frame(a.ws, kr_buf_ref(frame)));
    ASSERT_OK(kr_ws_send_frame(ws2, kr_buf_ref(frame)));
    ASSERT_EQ(frame->refcnt, 3);
    kr_buf_unref(frame);
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(b.c, f, 2), 1);
    ASSERT_MEM_EQ(f[0].payload, f[0].len, "all", 3);
    kr_conn_close(c2, NULL);
    kr_conn_unref(c2);
    ASSERT_EQ(rec.nclose, 1);
    rec.nclose = 0;
    fx_done(&a);
}

TEST(server_close_without_code)
{
    fx_t fx;
    fx_init(&fx);
    kr_ws_close(fx.ws, 0, "ignored without a code");
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    assert_close_frame(&f[0], 0, NULL);
    uint8_t buf[16];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_CLOSE, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1005);
    fx_done(&fx);
}

/* The peer's close may arrive between the fragments of a message: the message is lost. */
TEST(peer_close_inside_fragmented_message)
{
    fx_t fx;
    fx_init(&fx);
    uint8_t buf[128];
    size_t n = cframe_str(buf, KR_WS_OP_TEXT, "half");
    n += cclose(buf + n, 1001, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1001);
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    assert_close_frame(&f[0], 1001, "");
    fx_done(&fx);
}

static int drains;

static void count_drain(kr_ws_t *ws, void *ud)
{
    KR_UNUSED(ws);
    ASSERT(ud == &rec);
    drains++;
}

TEST(drain_and_shutdown)
{
    fx_t fx;
    fx_init(&fx);
    /* Without a drain handler nothing happens. */
    fx.c->proto->on_drain(fx.c);
    ASSERT_EQ(fx.c->outq.bytes, 0);
    kr_conn_close(fx.c, NULL);
    kr_conn_unref(fx.c);
    ASSERT_EQ(rec.nclose, 1);
    rec_reset();

    static const kr_ws_handler_t with_drain = {on_message, on_close, count_drain};
    fx.c = kr__conn_new_detached(&fx.s, &dummy_proto);
    kr_conn_ref(fx.c);
    fx.ws = kr__ws_start(fx.c, &with_drain, &rec, NULL);
    fx.c->proto->on_drain(fx.c);
    ASSERT_EQ(drains, 1);
    /* At server shutdown, a drain (kr_server_shutdown calls it) starts the close. */
    fx.s.stopping = 1;
    fx.c->proto->on_drain(fx.c);
    ASSERT_EQ(drains, 1);
    ws_frame_t f[2];
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    assert_close_frame(&f[0], 1001, "server shutting down");
    fx.c->proto->on_drain(fx.c);
    ASSERT_EQ(frames_of(fx.c, f, 2), 1);
    ASSERT_EQ(rec.nclose, 0);
    fx_done(&fx);
}

/* ---- the frame parser: splits, lengths, big frames, strictness --------------------------- */

/* Feeds data in pieces of at most chunk bytes, as reads would; stops when the connection takes
 * no more (it failed or closed). Returns the bytes taken. */
static size_t feed_chunks(fx_t *fx, const void *data, size_t len, size_t chunk)
{
    const uint8_t *p = data;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        size_t took = kr__conn_feed(fx->c, p + off, n);
        if (took == 0)
            break;
        off += took;
    }
    return off;
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + seed + (i >> 8));
}

/* Fresh fixture with max_message (and the default limits otherwise). */
static void fx_init_max(fx_t *fx, size_t max_message)
{
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.max_message = max_message;
    fx_init_opts(fx, &o);
}

/* A stream of frames split into two reads at every byte position: each read leaves the
 * incomplete frame in the read buffer, masked, and the next one completes it. */
TEST(split_at_every_position)
{
    static uint8_t buf[1024];
    char text[300];
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = (char)('A' + i % 26);
    size_t n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, text, sizeof(text)); /* 16-bit length */
    n += cframe_str(buf + n, KR_WS_OP_TEXT, "fr\xc3"); /* a split code point */
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "p1");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "\xa9gment");
    n += ws_client_frame(buf + n, FIN | KR_WS_OP_BINARY, "\x00\xff\x80", 3);
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "");
    for (size_t k = 0; k <= n; k++) {
        fx_t fx;
        fx_init(&fx);
        if (k > 0)
            feed(&fx, buf, k);
        if (k < n)
            feed(&fx, buf + k, n - k);
        ASSERT_EQ(fx.c->rlen, 0);
        ASSERT_EQ(rec.nmsg, 4);
        ASSERT_MEM_EQ(rec.data[0], rec.len[0], text, sizeof(text));
        ASSERT_STR_EQ(rec.data[1], "fr\xc3\xa9gment");
        ASSERT_EQ(rec.binary[2], 1);
        ASSERT_BYTES(rec.data[2], rec.len[2], "\x00\xff\x80", 3);
        ASSERT_EQ(rec.len[3], 0);
        ws_frame_t f[2];
        ASSERT_EQ(frames_of(fx.c, f, 2), 1);
        ASSERT_EQ(f[0].opcode, KR_WS_OP_PONG);
        ASSERT_MEM_EQ(f[0].payload, f[0].len, "p1", 2);
        ASSERT_EQ(rec.nclose, 0);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        fx_done(&fx);
    }
    /* Three reads: every pair of cut points inside the first frame's 8-byte header. */
    for (size_t i = 1; i < 8; i++) {
        for (size_t j = i + 1; j <= 8; j++) {
            fx_t fx;
            fx_init(&fx);
            feed(&fx, buf, i);
            feed(&fx, buf + i, j - i);
            feed(&fx, buf + j, n - j);
            ASSERT_EQ(rec.nmsg, 4);
            ASSERT_MEM_EQ(rec.data[0], rec.len[0], text, sizeof(text));
            fx_done(&fx);
        }
    }
}

/* Each length encoding at its boundaries, fed in one go (as far as the read buffer takes it)
 * and in 1000-byte reads. 65535 and up do not fit in the 64 KiB read buffer with their
 * header: their payload is taken as it arrives. */
TEST(payload_length_boundaries)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 65537, 300000};
    size_t cap = 300000 + 14;
    uint8_t *payload = kr_malloc(cap), *buf = kr_malloc(cap);
    for (size_t i = 0; i < KR_ARRAY_SIZE(lens); i++) {
        for (int chunked = 0; chunked < 2; chunked++) {
            for (int binary = 0; binary < 2; binary++) {
                size_t len = lens[i];
                if (binary)
                    fill_pattern(payload, len, (unsigned)i);
                else
                    for (size_t k = 0; k < len; k++)
                        payload[k] = (uint8_t)(' ' + (k * 13 + i) % 95);
                size_t n = ws_client_frame(buf, FIN | (binary ? KR_WS_OP_BINARY : KR_WS_OP_TEXT),
                                           payload, len);
                ASSERT_EQ(n, len + 4 + (len < 126 ? 2 : len <= 0xffff ? 4 : 10));
                fx_t fx;
                fx_init_max(&fx, 2 * 1024 * 1024);
                ASSERT_EQ(feed_chunks(&fx, buf, n, chunked ? 1000 : n), n);
                ASSERT_EQ(rec.nmsg, 1);
                ASSERT_EQ(rec.binary[0], binary);
                ASSERT_BYTES(rec.data[0], rec.len[0], payload, len);
                ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
                ASSERT_EQ(fx.c->outq.bytes, 0);
                ASSERT_EQ(rec.nclose, 0);
                fx_done(&fx);
            }
        }
    }
    kr_free(payload);
    kr_free(buf);
}

/* A frame that fits the read buffer exactly waits there (no reassembly buffer); one byte more
 * and its payload is streamed into a buffer of exactly the message's size. */
TEST(read_buffer_threshold)
{
    size_t rmax = 64 * 1024;
    uint8_t *payload = kr_malloc(rmax), *buf = kr_malloc(rmax + 16);
    for (int extra = 0; extra < 2; extra++) {
        size_t len = rmax - 8 + (size_t)extra; /* 8: a 16-bit length header with its mask */
        fill_pattern(payload, len, 5);
        size_t n = ws_client_frame(buf, FIN | KR_WS_OP_BINARY, payload, len);
        ASSERT_EQ(n, rmax + (size_t)extra);
        fx_t fx;
        fx_init(&fx);
        ASSERT_EQ(fx.c->rmax, rmax);
        feed(&fx, buf, 30000);
        ASSERT_EQ(rec.nmsg, 0);
        if (extra) {
            ASSERT(kr__ws_reassembly_bytes(fx.ws) >= len);
            ASSERT(kr__ws_reassembly_bytes(fx.ws) < len + 64);
            ASSERT_EQ(fx.c->rlen, 0); /* taken as it came */
        } else {
            ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
            ASSERT_EQ(fx.c->rlen, 30000); /* waiting in the read buffer, still masked */
        }
        feed(&fx, buf + 30000, n - 30000);
        ASSERT_EQ(rec.nmsg, 1);
        ASSERT_BYTES(rec.data[0], rec.len[0], payload, len);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        ASSERT_EQ(fx.c->rlen, 0);
        fx_done(&fx);
    }
    kr_free(payload);
    kr_free(buf);
}

/* A single frame far larger than the 64 KiB read buffer, up to max_message. */
TEST(frame_larger_than_read_buffer)
{
    size_t len = 200 * 1000;
    uint8_t *payload = kr_malloc(len), *buf = kr_malloc(len + 14);
    fill_pattern(payload, len, 1);
    size_t n = ws_client_frame(buf, FIN | KR_WS_OP_BINARY, payload, len);
    static const size_t chunks[] = {64 * 1024, 65535, 16384, 1000, 7};
    for (size_t i = 0; i < KR_ARRAY_SIZE(chunks); i++) {
        fx_t fx;
        fx_init_max(&fx, 1024 * 1024);
        ASSERT_EQ(feed_chunks(&fx, buf, n - 1, chunks[i]), n - 1);
        ASSERT_EQ(rec.nmsg, 0);
        ASSERT(kr__ws_reassembly_bytes(fx.ws) >= len);
        feed(&fx, buf + n - 1, 1);
        ASSERT_EQ(rec.nmsg, 1);
        ASSERT_EQ(rec.binary[0], 1);
        ASSERT_BYTES(rec.data[0], rec.len[0], payload, len);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        ASSERT_EQ(fx.c->outq.bytes, 0);
        fx_done(&fx);
    }
    /* Text: 2-, 3- and 4-byte code points cut by the reads anywhere, validated as they come. */
    static const char *pieces[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    size_t tl = 0;
    for (size_t k = 0; tl + 4 <= len; k++) {
        const char *pc = pieces[k % 4];
        memcpy(payload + tl, pc, strlen(pc));
        tl += strlen(pc);
    }
    n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, payload, tl);
    for (size_t chunk = 5; chunk <= 8; chunk++) {
        fx_t fx;
        fx_init_max(&fx, 1024 * 1024);
        ASSERT_EQ(feed_chunks(&fx, buf, n, chunk * 1001), n);
        ASSERT_EQ(rec.nmsg, 1);
        ASSERT_EQ(rec.binary[0], 0);
        ASSERT_BYTES(rec.data[0], rec.len[0], payload, tl);
        fx_done(&fx);
    }
    /* A bad byte deep inside fails the connection when it arrives, not at the end. */
    payload[100000] = (char)0xff;
    n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, payload, tl);
    {
        fx_t fx;
        fx_init_max(&fx, 1024 * 1024);
        size_t took = feed_chunks(&fx, buf, n, 1000);
        ASSERT(took < 100000 + 10 + 1000 + 1);
        ASSERT_EQ(rec.nmsg, 0);
        assert_failed_with(&fx, 1007);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        fx_done(&fx);
    }
    /* Over max_message: 1009 from the header alone. */
    {
        fx_t fx;
        fx_init_max(&fx, 100 * 1000);
        n = ws_client_frame(buf, FIN | KR_WS_OP_BINARY, payload, len);
        feed(&fx, buf, 10);
        assert_failed_with(&fx, 1009);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        fx_done(&fx);
    }
    kr_free(payload);
    kr_free(buf);
}

/* Fragments larger than the read buffer, with pings between them. */
TEST(big_fragments)
{
    size_t part = 100 * 1000;
    uint8_t *payload = kr_malloc(3 * part), *buf = kr_malloc(3 * part + 64);
    fill_pattern(payload, 3 * part, 9);
    size_t n = ws_client_frame(buf, KR_WS_OP_BINARY, payload, part);
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "one");
    n += ws_client_frame(buf + n, KR_WS_OP_CONT, payload + part, part);
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "two");
    n += ws_client_frame(buf + n, FIN | KR_WS_OP_CONT, payload + 2 * part, part);
    static const size_t chunks[] = {64 * 1024, 4096, 333};
    for (size_t i = 0; i < KR_ARRAY_SIZE(chunks); i++) {
        fx_t fx;
        fx_init_max(&fx, 1024 * 1024);
        ASSERT_EQ(feed_chunks(&fx, buf, n, chunks[i]), n);
        ASSERT_EQ(rec.nmsg, 1);
        ASSERT_BYTES(rec.data[0], rec.len[0], payload, 3 * part);
        ws_frame_t f[4];
        ASSERT_EQ(frames_of(fx.c, f, 4), 2);
        ASSERT_MEM_EQ(f[0].payload, f[0].len, "one", 3);
        ASSERT_MEM_EQ(f[1].payload, f[1].len, "two", 3);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        fx_done(&fx);
    }
    /* The limit counts the whole message: the third fragment's header is refused. */
    fx_t fx;
    fx_init_max(&fx, 3 * part - 1);
    feed_chunks(&fx, buf, n, 4096);
    ASSERT_EQ(rec.nmsg, 0);
    assert_failed_with(&fx, 1009);
    ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
    fx_done(&fx);
    kr_free(payload);
    kr_free(buf);
}

/* Runs frame (len bytes) on a fresh connection, whole and byte by byte (as long as input is
 * taken), and checks that it was failed with code; with early > 0, also that the first
 * early bytes were enough to decide. */
static void expect_failure(const uint8_t *frame, size_t len, size_t early, int code)
{
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fx_t fx;
        fx_init(&fx);
        if (bytewise) {
            size_t k = 0;
            for (; k < len && !fx.c->close_after_flush; k++)
                feed(&fx, frame + k, 1);
            if (early)
                ASSERT_EQ(k, early);
        } else {
            feed(&fx, frame, len);
        }
        ASSERT_EQ(rec.nmsg, 0);
        assert_failed_with(&fx, code);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        fx_done(&fx);
    }
}

TEST(non_minimal_length_is_1002)
{
    /* 16-bit lengths under 126, 64-bit lengths under 65536: the length bytes decide. */
    static const uint8_t f16_0[] = {FIN | KR_WS_OP_BINARY, 0x80 | 126, 0, 0, 1, 2, 3, 4};
    static const uint8_t f16_125[] = {FIN | KR_WS_OP_BINARY, 0x80 | 126, 0, 125, 1, 2, 3, 4};
    static const uint8_t f64_5[] = {FIN | KR_WS_OP_TEXT, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5,
                                    1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'};
    static const uint8_t f64_126[] = {FIN | KR_WS_OP_BINARY, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0,
                                      126, 1, 2, 3, 4};
    static const uint8_t f64_65535[] = {FIN | KR_WS_OP_BINARY, 0x80 | 127, 0, 0, 0, 0, 0, 0,
                                        0xff, 0xff, 1, 2, 3, 4};
    expect_failure(f16_0, sizeof(f16_0), 4, 1002);
    expect_failure(f16_125, sizeof(f16_125), 4, 1002);
    expect_failure(f64_5, sizeof(f64_5), 10, 1002);
    expect_failure(f64_126, sizeof(f64_126), 10, 1002);
    expect_failure(f64_65535, sizeof(f64_65535), 10, 1002);
}

TEST(length_high_bit_is_1002)
{
    /* Not 1009: such a length is malformed whatever the limit. */
    static const uint8_t top[] = {FIN | KR_WS_OP_BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5,
                                  1, 2, 3, 4};
    static const uint8_t all[] = {FIN | KR_WS_OP_BINARY, 0x80 | 127, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    expect_failure(top, sizeof(top), 10, 1002);
    expect_failure(all, sizeof(all), 10, 1002);
    /* A valid but huge 64-bit length is over the limit: 1009, also from the header alone. */
    static const uint8_t huge[] = {FIN | KR_WS_OP_BINARY, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0,
                                   1, 2, 3, 4};
    expect_failure(huge, sizeof(huge), 10, 1009);
}

TEST(continuation_without_start_is_1002)
{
    uint8_t buf[128];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_CONT, "x");
    expect_failure(buf, n, 1, 1002);
    n = cframe_str(buf, KR_WS_OP_CONT, "x");
    expect_failure(buf, n, 1, 1002);
    /* After a complete fragmented message there is nothing to continue either. */
    fx_t fx;
    fx_init(&fx);
    n = cframe_str(buf, KR_WS_OP_TEXT, "a");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "b");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "c");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_STR_EQ(rec.data[0], "ab");
    assert_failed_with(&fx, 1002);
    fx_done(&fx);
}

TEST(data_frame_inside_fragmented_message_is_1002)
{
    static const int second[] = {FIN | KR_WS_OP_TEXT, KR_WS_OP_TEXT, FIN | KR_WS_OP_BINARY,
                                 KR_WS_OP_BINARY};
    for (size_t i = 0; i < KR_ARRAY_SIZE(second); i++) {
        uint8_t buf[128];
        size_t n = cframe_str(buf, KR_WS_OP_TEXT, "a");
        n += cframe_str(buf + n, FIN | KR_WS_OP_PING, ""); /* control frames are fine */
        n += cframe_str(buf + n, second[i], "b");
        fx_t fx;
        fx_init(&fx);
        feed(&fx, buf, n);
        ASSERT_EQ(rec.nmsg, 0);
        ws_frame_t f[4];
        ASSERT_EQ(frames_of(fx.c, f, 4), 2);
        ASSERT_EQ(f[0].opcode, KR_WS_OP_PONG);
        assert_failed_with(&fx, 1002);
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        fx_done(&fx);
    }
}

TEST(close_codes)
{
    static const int valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                1010, 1011, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < KR_ARRAY_SIZE(valid); i++) {
        fx_t fx;
        fx_init(&fx);
        uint8_t buf[128];
        size_t n = cclose(buf, valid[i], "why \xe2\x82\xac");
        feed(&fx, buf, n);
        ASSERT_EQ(rec.nclose, 1);
        ASSERT_EQ(rec.close_code, valid[i]);
        ws_frame_t f[2];
        ASSERT_EQ(frames_of(fx.c, f, 2), 1);
        assert_close_frame(&f[0], valid[i], "why \xe2\x82\xac"); /* echoed */
        ASSERT(fx.c->close_after_flush);
        fx_done(&fx);
    }
    static const int invalid[] = {0,    999,  1004, 1005, 1006, 1015, 1016,
                                  1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < KR_ARRAY_SIZE(invalid); i++) {
        uint8_t buf[128];
        size_t n = cclose(buf, invalid[i], "");
        expect_failure(buf, n, 0, 1002);
        n = cclose(buf, invalid[i], "reason");
        expect_failure(buf, n, 0, 1002);
    }
}

TEST(close_reason_invalid_utf8_is_1007)
{
    static const char *bad[] = {"\xc3", "ok\x80", "\xed\xa0\x80", "\xe0\x80\xaf", "bye\xf4\x90"};
    for (size_t i = 0; i < KR_ARRAY_SIZE(bad); i++) {
        uint8_t buf[128];
        size_t n = cclose(buf, 1000, bad[i]);
        expect_failure(buf, n, 0, 1007);
    }
    /* After our close, a malformed reply ends the handshake with our code, and no second
     * close frame goes. */
    fx_t fx;
    fx_init(&fx);
    kr_ws_close(fx.ws, 4002, "ours");
    drop_output(fx.c);
    uint8_t buf[128];
    size_t n = cclose(buf, 1000, "\xff");
    feed(&fx, buf, n);
    ASSERT_EQ(fx.c->outq.bytes, 0);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 4002);
    fx_done(&fx);
}

TEST(pings_inside_fragments_answered)
{
    uint8_t buf[512];
    size_t n = cframe_str(buf, KR_WS_OP_TEXT, "a");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "1");
    n += cframe_str(buf + n, KR_WS_OP_CONT, "b");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "2");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PONG, "ignored");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "3");
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "c");
    n += cframe_str(buf + n, FIN | KR_WS_OP_PING, "4");
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fx_t fx;
        fx_init(&fx);
        if (bytewise)
            for (size_t k = 0; k < n; k++)
                feed(&fx, buf + k, 1);
        else
            feed(&fx, buf, n);
        ASSERT_EQ(rec.nmsg, 1);
        ASSERT_STR_EQ(rec.data[0], "abc");
        ws_frame_t f[8];
        ASSERT_EQ(frames_of(fx.c, f, 8), 4);
        for (int i = 0; i < 4; i++) {
            char want = (char)('1' + i);
            ASSERT_EQ(f[i].opcode, KR_WS_OP_PONG);
            ASSERT_MEM_EQ(f[i].payload, f[i].len, &want, 1);
        }
        ASSERT_EQ(rec.nclose, 0);
        fx_done(&fx);
    }
}

/* Nothing is allocated between messages; a fragmented message holds a buffer only until it
 * completes or the connection fails. */
TEST(reassembly_buffer_lifetime)
{
    fx_t fx;
    fx_init(&fx);
    ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
    uint8_t buf[256];
    size_t n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "whole");
    feed(&fx, buf, n);
    ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
    n = cframe_str(buf, KR_WS_OP_BINARY, "part");
    feed(&fx, buf, n);
    ASSERT(kr__ws_reassembly_bytes(fx.ws) > 0);
    n = cframe_str(buf, FIN | KR_WS_OP_CONT, "s");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 2);
    ASSERT_STR_EQ(rec.data[1], "parts");
    ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
    n = cframe_str(buf, KR_WS_OP_BINARY, "again");
    feed(&fx, buf, n);
    ASSERT(kr__ws_reassembly_bytes(fx.ws) > 0);
    n = cframe_str(buf, FIN | 0x7, "x"); /* a reserved opcode fails the connection */
    feed(&fx, buf, n);
    assert_failed_with(&fx, 1002);
    ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
    fx_done(&fx);
    /* Our close drops a message in progress at once; its continuation is skipped. */
    fx_init(&fx);
    n = cframe_str(buf, KR_WS_OP_TEXT, "cut");
    feed(&fx, buf, n);
    ASSERT(kr__ws_reassembly_bytes(fx.ws) > 0);
    kr_ws_close(fx.ws, 1000, NULL);
    ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
    n = cframe_str(buf, FIN | KR_WS_OP_CONT, " short");
    n += cclose(buf + n, 1000, "");
    feed(&fx, buf, n);
    ASSERT_EQ(rec.nmsg, 0);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1000);
    fx_done(&fx);
}

/* After our close, data is skipped as it arrives: even a big frame costs no buffer. */
TEST(big_frame_after_our_close_is_skipped)
{
    size_t len = 150 * 1000;
    uint8_t *payload = kr_malloc(len), *buf = kr_malloc(len + 64);
    fill_pattern(payload, len, 3);
    size_t n = ws_client_frame(buf, KR_WS_OP_BINARY, payload, len);
    n += cframe_str(buf + n, FIN | KR_WS_OP_CONT, "end");
    n += cclose(buf + n, 1000, "ok");
    fx_t fx;
    fx_init(&fx);
    kr_ws_close(fx.ws, 1001, "leaving");
    drop_output(fx.c);
    size_t off = 0;
    while (off < n && !fx.c->close_after_flush) {
        size_t k = n - off < 4096 ? n - off : 4096;
        feed(&fx, buf + off, k);
        off += k;
        ASSERT_EQ(kr__ws_reassembly_bytes(fx.ws), 0);
        ASSERT(fx.c->rlen < 4096 + 14);
    }
    ASSERT_EQ(off, n);
    ASSERT_EQ(rec.nmsg, 0);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1000);
    ASSERT_EQ(fx.c->outq.bytes, 0);
    fx_done(&fx);
    kr_free(payload);
    kr_free(buf);
}

/* The UTF-8 check of fragmented text (as each fragment arrives) agrees with kr_utf8_valid on
 * the whole message, with one byte per fragment. */
static int text_accepted(const uint8_t *s, size_t len, int fragmented)
{
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.max_fragments = 64;
    fx_t fx;
    fx_init_opts(&fx, &o);
    static uint8_t buf[64 * 16];
    size_t n = 0;
    if (!fragmented || len == 0) {
        n = ws_client_frame(buf, FIN | KR_WS_OP_TEXT, s, len);
    } else {
        for (size_t i = 0; i < len; i++)
            n += ws_client_frame(
                buf + n, (i + 1 == len ? FIN : 0) | (i ? KR_WS_OP_CONT : KR_WS_OP_TEXT), s + i, 1);
    }
    feed(&fx, buf, n);
    int ok = rec.nmsg == 1;
    if (ok)
        ASSERT_BYTES(rec.data[0], rec.len[0], s, len);
    else
        assert_failed_with(&fx, 1007);
    fx_done(&fx);
    return ok;
}

TEST(utf8_fragmented_matches_whole)
{
    static const char *cases[] = {
        "", "a", "\xc2\x80", "\xc1\xbf", "\xdf\xbf", "\xe0\xa0\x80", "\xe0\x9f\xbf",
        "\xed\x9f\xbf", "\xed\xa0\x80", "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80",
        "\xf0\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\x80",
        "\xbf", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "a\xc3\xa9z", "\xc3\xa9\x80", "\xfe", "\xff",
        "\xe2\x82\xac\xe2\x82\xac", "\xf0\x9f\x98\x80!", "abcdefgh\xc3\xa9ijklmnop"};
    for (size_t i = 0; i < KR_ARRAY_SIZE(cases); i++) {
        const uint8_t *s = (const uint8_t *)cases[i];
        size_t len = strlen(cases[i]);
        int want = kr_utf8_valid(cases[i], len);
        ASSERT_EQ(text_accepted(s, len, 0), want);
        ASSERT_EQ(text_accepted(s, len, 1), want);
    }
    /* Pseudo-random strings, mostly from the bytes that matter. */
    static const uint8_t alphabet[] = {'a',  0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2,
                                       0xdf, 0xe0, 0xe1, 0xed, 0xef, 0xf0, 0xf3, 0xf4, 0xf5};
    uint32_t x = 12345;
    for (int t = 0; t < 600; t++) {
        uint8_t s[12];
        size_t len = 1 + t % 8;
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            s[i] = alphabet[(x >> 16) % sizeof(alphabet)];
        }
        int want = kr_utf8_valid((const char *)s, len);
        ASSERT_EQ(text_accepted(s, len, 1), want);
    }
}

/* ---- the opening handshake -------------------------------------------------------------- */

typedef struct hreq_s {
    kr_http_req_t req;
    kr_http_header_t h[8];
} hreq_t;

static void hreq_init(hreq_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->req.method_name, sizeof(r->req.method_name), "GET");
    r->req.http_minor = 1;
    r->req.headers = r->h;
}

static void hreq_add(hreq_t *r, const char *name, const char *value)
{
    ASSERT(r->req.nheaders < 8);
    kr_http_header_t *h = &r->h[r->req.nheaders++];
    h->name = name;
    h->value = value;
    h->name_len = strlen(name);
    h->value_len = strlen(value);
}

static void hreq_valid(hreq_t *r)
{
    hreq_init(r);
    hreq_add(r, "host", "example.com");
    hreq_add(r, "upgrade", "websocket");
    hreq_add(r, "connection", "Upgrade");
    hreq_add(r, "sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    hreq_add(r, "sec-websocket-version", "13");
}

/* A valid request with header i replaced by value (NULL: removed). */
static int check_with(unsigned i, const char *value)
{
    hreq_t r;
    hreq_valid(&r);
    if (value == NULL)
        r.h[i] = r.h[--r.req.nheaders];
    else
        r.h[i].value = value, r.h[i].value_len = strlen(value);
    return kr_ws_check_upgrade(&r.req);
}

TEST(check_upgrade)
{
    hreq_t r;
    hreq_valid(&r);
    ASSERT_OK(kr_ws_check_upgrade(&r.req));
    /* Method and version. */
    snprintf(r.req.method_name, sizeof(r.req.method_name), "POST");
    ASSERT_EQ(kr_ws_check_upgrade(&r.req), 400);
    hreq_valid(&r);
    r.req.http_minor = 0;
    ASSERT_EQ(kr_ws_check_upgrade(&r.req), 400);
    /* Upgrade and Connection: tokens, any case, in lists. */
    ASSERT_OK(check_with(1, "WebSocket"));
    ASSERT_OK(check_with(1, "foo, websocket"));
    ASSERT_EQ(check_with(1, "websocketx"), 400);
    ASSERT_EQ(check_with(1, "h2c"), 400);
    ASSERT_EQ(check_with(1, NULL), 400);
    ASSERT_OK(check_with(2, "keep-alive, Upgrade"));
    ASSERT_OK(check_with(2, "UPGRADE"));
    ASSERT_EQ(check_with(2, "keep-alive"), 400);
    ASSERT_EQ(check_with(2, "upgraded"), 400);
    ASSERT_EQ(check_with(2, NULL), 400);
    hreq_valid(&r);
    r.h[2].value = "keep-alive";
    r.h[2].value_len = 10;
    hreq_add(&r, "connection", "upgrade"); /* a list split over two lines */
    ASSERT_OK(kr_ws_check_upgrade(&r.req));
    /* The key: base64 of exactly 16 bytes, once. */
    ASSERT_EQ(check_with(3, NULL), 400);
    ASSERT_EQ(check_with(3, ""), 400);
    ASSERT_EQ(check_with(3, "dGhlIHNhbXBsZSBub25jZQ"), 400);   /* no padding */
    ASSERT_EQ(check_with(3, "dGhlIHNhbXBsZSBub25jZR=="), 400); /* stray low bits */
    ASSERT_EQ(check_with(3, "dGhlIHNhbXBsZSBub25j!Q=="), 400); /* not base64 */
    ASSERT_EQ(check_with(3, "dGhlIHNhbXBsZSBub25jZQ=="), 0);
    ASSERT_EQ(check_with(3, "AAAAAAAAAAAAAAAAAAAAAw=="), 0);
    ASSERT_EQ(check_with(3, "dGhlIHNhbXBsZSBub25jZXM="), 400); /* 17 bytes */
    hreq_valid(&r);
    hreq_add(&r, "sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA==");
    ASSERT_EQ(kr_ws_check_upgrade(&r.req), 400);
    /* The protocol version: 426, checked before the key. */
    ASSERT_EQ(check_with(4, "8"), 426);
    ASSERT_EQ(check_with(4, "13, 8"), 426);
    ASSERT_EQ(check_with(4, NULL), 426);
    hreq_valid(&r);
    r.h[3] = r.h[4];
    r.req.nheaders--;
    r.h[3].value = "8";
    r.h[3].value_len = 1;
    ASSERT_EQ(kr_ws_check_upgrade(&r.req), 426);
}

/* ---- the upgrade through a detached HTTP connection ------------------------------------- */

static kr_ws_t *accepted;

static void http_handler(kr_http_req_t *req, void *ud)
{
    KR_UNUSED(ud);
    int status = kr_ws_check_upgrade(req);
    if (status != 0) {
        kr_ws_reject(req, status);
        return;
    }
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.high_water = 4096;
    accepted = kr_ws_accept(req, &handler, &rec, &o);
    ASSERT_NOT_NULL(accepted);
    ASSERT_NULL(req->conn);
}

static const char upgrade_req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";

TEST(accept_over_http)
{
    uv_loop_t loop;
    kr_server_t s;
    rec_reset();
    ASSERT_OK(uv_loop_init(&loop));
    kr_server_init(&s, &loop);
    s.handler = http_handler;
    kr_conn_t *c = kr__conn_new_detached(&s, &kr_http_proto);
    kr_conn_ref(c);
    rec.action = ACT_ECHO;
    /* The request and a first frame in one read: the frame waits for the next turn. */
    static uint8_t buf[1024];
    size_t n = strlen(upgrade_req);
    memcpy(buf, upgrade_req, n);
    n += cframe_str(buf + n, FIN | KR_WS_OP_TEXT, "early");
    ASSERT_EQ(kr__conn_feed(c, buf, n), n);
    ASSERT_NOT_NULL(accepted);
    ASSERT(kr_ws_conn(accepted) == c);
    ASSERT_EQ(c->high_water, 4096);
    size_t len;
    const char *out = (const char *)output_of(c, &len);
    ASSERT(strncmp(out, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    ASSERT_NOT_NULL(strstr(out, "\r\nUpgrade: websocket\r\n"));
    ASSERT_NOT_NULL(strstr(out, "\r\nConnection: Upgrade\r\n"));
    ASSERT_NOT_NULL(strstr(out, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    ASSERT_NULL(strstr(out, "Content-Length"));
    ASSERT(len >= 4 && memcmp(out + len - 4, "\r\n\r\n", 4) == 0);
    ASSERT_EQ(rec.nmsg, 0);
    drop_output(c);
    kr__conn_flush(c); /* the server's check phase: replays the buffered frame */
    ASSERT_EQ(rec.nmsg, 1);
    ASSERT_STR_EQ(rec.data[0], "early");
    n = cframe_str(buf, FIN | KR_WS_OP_TEXT, "later");
    ASSERT_EQ(kr__conn_feed(c, buf, n), n);
    ASSERT_EQ(rec.nmsg, 2);
    ws_frame_t f[4];
    ASSERT_EQ(frames_of(c, f, 4), 2);
    ASSERT_MEM_EQ(f[0].payload, f[0].len, "early", 5);
    ASSERT_MEM_EQ(f[1].payload, f[1].len, "later", 5);
    kr_conn_close(c, NULL);
    ASSERT_EQ(rec.nclose, 1);
    ASSERT_EQ(rec.close_code, 1006);
    kr_conn_unref(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    rec_reset();
}

/* Feeds req to a fresh detached HTTP connection; returns its output (static buffer). */
static const char *http_exchange(kr_server_t *s, const char *req, int *closing)
{
    kr_conn_t *c = kr__conn_new_detached(s, &kr_http_proto);
    kr_conn_ref(c);
    ASSERT_EQ(kr__conn_feed(c, req, strlen(req)), strlen(req));
    size_t len;
    const char *out = (const char *)output_of(c, &len);
    *closing = c->close_after_flush;
    kr_conn_close(c, NULL);
    kr_conn_unref(c);
    return out;
}

TEST(reject_over_http)
{
    uv_loop_t loop;
    kr_server_t s;
    rec_reset();
    ASSERT_OK(uv_loop_init(&loop));
    kr_server_init(&s, &loop);
    s.handler = http_handler;
    int closing = 0;
    const char *out = http_exchange(&s,
                                    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\n"
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                    "Sec-WebSocket-Version: 8\r\n\r\n",
                                    &closing);
    ASSERT(strncmp(out, "HTTP/1.1 426 ", 13) == 0);
    ASSERT_NOT_NULL(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n"));
    ASSERT_NOT_NULL(strstr(out, "\r\n\r\nWebSocket version 13 required"));
    ASSERT(closing); /* kr_http does not keep a connection that asked for an upgrade */
    out = http_exchange(&s, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n", &closing);
    ASSERT(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    ASSERT_NULL(strstr(out, "Sec-WebSocket-Version"));
    ASSERT_NULL(accepted);
    ASSERT_EQ(rec.nclose, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

KR_TEST_MAIN(KR_TEST_ENTRY(accept_key_rfc_sample), KR_TEST_ENTRY(frame_header_lengths),
             KR_TEST_ENTRY(text_message), KR_TEST_ENTRY(echo_and_send),
             KR_TEST_ENTRY(fragmented_message), KR_TEST_ENTRY(two_frames_one_feed),
             KR_TEST_ENTRY(byte_by_byte), KR_TEST_ENTRY(binary_untouched), KR_TEST_ENTRY(ping_pong),
             KR_TEST_ENTRY(peer_close), KR_TEST_ENTRY(peer_close_without_code),
             KR_TEST_ENTRY(server_close), KR_TEST_ENTRY(server_close_long_reason),
             KR_TEST_ENTRY(server_close_timeout), KR_TEST_ENTRY(eof_is_1006),
             KR_TEST_ENTRY(tcp_close_is_1006), KR_TEST_ENTRY(invalid_utf8_is_1007),
             KR_TEST_ENTRY(oversize_is_1009), KR_TEST_ENTRY(too_many_fragments_is_1009),
             KR_TEST_ENTRY(unmasked_is_1002), KR_TEST_ENTRY(rsv_bits_are_1002),
             KR_TEST_ENTRY(protocol_errors_are_1002), KR_TEST_ENTRY(close_from_handler),
             KR_TEST_ENTRY(close_from_handler_then_garbage), KR_TEST_ENTRY(conn_close_from_handler),
             KR_TEST_ENTRY(shared_frame), KR_TEST_ENTRY(check_upgrade),
             KR_TEST_ENTRY(server_close_without_code),
             KR_TEST_ENTRY(peer_close_inside_fragmented_message), KR_TEST_ENTRY(drain_and_shutdown),
             KR_TEST_ENTRY(accept_over_http), KR_TEST_ENTRY(reject_over_http),
             KR_TEST_ENTRY(split_at_every_position), KR_TEST_ENTRY(payload_length_boundaries),
             KR_TEST_ENTRY(read_buffer_threshold), KR_TEST_ENTRY(frame_larger_than_read_buffer),
             KR_TEST_ENTRY(big_fragments), KR_TEST_ENTRY(non_minimal_length_is_1002),
             KR_TEST_ENTRY(length_high_bit_is_1002),
             KR_TEST_ENTRY(continuation_without_start_is_1002),
             KR_TEST_ENTRY(data_frame_inside_fragmented_message_is_1002),
             KR_TEST_ENTRY(close_codes), KR_TEST_ENTRY(close_reason_invalid_utf8_is_1007),
             KR_TEST_ENTRY(pings_inside_fragments_answered),
             KR_TEST_ENTRY(reassembly_buffer_lifetime),
             KR_TEST_ENTRY(big_frame_after_our_close_is_skipped),
             KR_TEST_ENTRY(utf8_fragmented_matches_whole))
