/* test_hub.c: unit tests for core/kr_hub.c driven without sockets.
 *
 * Each test makes a server on its own loop (never started: no listener, sweep or check
 * hook), a hub at /hub, and clients made of detached connections: one HTTP connection for
 * POST /hub/negotiate, another for the WebSocket upgrade GET /hub?id=<token>, then the
 * SignalR handshake as a masked client text frame. Server output is read from c->outq (the
 * frames are decoded, then consumed with kr_outq_consume). Covered: negotiate (v0, v1, bad
 * versions, wrong method), the transport endpoint's errors (404, 409, 405, 400), the
 * handshake (ok, unknown protocol, unsupported version, pipelined behind the upgrade, split
 * over frames), the built-ins (Echo, JoinGroup, LeaveGroup, their errors and completions),
 * broadcasting (one encode per wire format, one shared buffer queued on every recipient,
 * freed after the last one wrote it; groups, single connections, encoder errors), record
 * framing across and within frames, the message size limit, disconnects leaving groups, the
 * one-invocation-at-a-time ordering with an app that completes later (and the bounded queue
 * that pauses reading), shutdown, app callbacks (connected, deferred disconnected, closing
 * from an invocation), slow consumers in a broadcast, group bookkeeping against a model,
 * and the hub's timer (keep-alive pings, handshake, negotiate and client timeouts).
 * Every test ends by closing its connections, freeing the hub and checking that the loop
 * closes cleanly (and, under ASan, that nothing leaked).
 */
#include "kr_conn.h"
#include "kr_http.h"
#include "kr_hub.h"
#include "kr_log.h"
#include "kr_server.h"
#include "kr_sr_json.h"
#include "kr_ws.h"

#include "kr_test.h"
#include "ws_frames.h"

#include <cjson/cJSON.h>
#include <stdarg.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

extern const kr_conn_proto_t kr_http_proto;

#define RS "\x1e"
#define HANDSHAKE "{\"protocol\":\"json\",\"version\":1}" RS
#define VOID_COMPLETION(id) "{\"type\":3,\"invocationId\":\"" id "\",\"result\":null}" RS

/* ---- fixture ---------------------------------------------------------------------------- */

#define MAX_CONNS 256

typedef struct client_s client_t;

typedef struct fx_s {
    uv_loop_t loop;
    kr_server_t s;
    kr_hub_t *hub;
    kr_conn_t *conns[MAX_CONNS]; /* every WebSocket-side connection, each with our reference */
    unsigned nconns;
    client_t *clients[MAX_CONNS];
    unsigned nclients;
} fx_t;

struct client_s {
    fx_t *fx;
    kr_conn_t *c; /* the upgraded connection */
    char id[64];
    char token[64];
};

static void http_handler(kr_http_req_t *req, void *ud)
{
    fx_t *fx = ud;
    if (fx->hub != NULL && kr_hub_handle_http(fx->hub, req))
        return;
    kr_http_respond_text(req, 404, "text/plain", "not found", 9);
}

static void fx_init_app(fx_t *fx, const kr_hub_opts_t *opts, const kr_hub_app_t *app, void *ud)
{
    memset(fx, 0, sizeof(*fx));
    if (getenv("KR_TEST_VERBOSE") == NULL)
        kr_log_set_level(KR_LOG_ERROR); /* connects and disconnects are logged at info */
    ASSERT_OK(uv_loop_init(&fx->loop));
    kr_server_init(&fx->s, &fx->loop);
    fx->s.handler = http_handler;
    fx->s.handler_ud = fx;
    kr_hub_opts_t o;
    if (opts == NULL) {
        kr_hub_opts_default(&o);
        opts = &o;
    }
    fx->hub = kr_hub_new(&fx->s, "/hub", opts, app, ud);
    ASSERT_NOT_NULL(fx->hub);
    ASSERT_STR_EQ(kr_hub_path(fx->hub), "/hub");
}

static void fx_init(fx_t *fx)
{
    fx_init_app(fx, NULL, NULL, NULL);
}

static kr_conn_t *fx_conn(fx_t *fx)
{
    ASSERT(fx->nconns < MAX_CONNS);
    kr_conn_t *c = kr__conn_new_detached(&fx->s, &kr_http_proto);
    ASSERT_NOT_NULL(c);
    kr_conn_ref(c);
    fx->conns[fx->nconns++] = c;
    return c;
}

static void fx_close_conns(fx_t *fx)
{
    for (unsigned i = 0; i < fx->nconns; i++) {
        kr_conn_close(fx->conns[i], NULL);
        kr_conn_unref(fx->conns[i]);
        fx->conns[i] = NULL;
    }
    fx->nconns = 0;
}

static void fx_settle(fx_t *fx)
{
    for (unsigned i = 0; i < fx->nclients; i++)
        kr_free(fx->clients[i]);
    fx->nclients = 0;
    kr_server_dispose(&fx->s); /* closes what is left and runs the loop */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&fx->loop), 0);
#ifdef HAVE_LSAN
    ASSERT_EQ(__lsan_do_recoverable_leak_check(), 0);
#endif
}

/* Closes every connection (the hub sees each WebSocket end), then frees the hub. */
static void fx_done(fx_t *fx)
{
    fx_close_conns(fx);
    ASSERT_EQ(kr_hub_connection_count(fx->hub), 0);
    kr_hub_free(fx->hub);
    fx->hub = NULL;
    fx_settle(fx);
}

/* The other order: the hub goes first (its connections are dropped wholesale), then the
 * transports close without a hub to tell. */
static void fx_done_hub_first(fx_t *fx)
{
    kr_hub_free(fx->hub);
    fx->hub = NULL;
    fx_close_conns(fx);
    fx_settle(fx);
}

/* ---- HTTP ------------------------------------------------------------------------------- */

static char resp[64 * 1024];

static int status_of(const char *r)
{
    ASSERT(strncmp(r, "HTTP/1.1 ", 9) == 0);
    return atoi(r + 9);
}

static const char *body_of(const char *r)
{
    const char *p = strstr(r, "\r\n\r\n");
    ASSERT_NOT_NULL(p);
    return p + 4;
}

/* Feeds one request to a fresh HTTP connection, returns the response (static buffer) and
 * closes the connection. */
static const char *http_exchange(fx_t *fx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *http_exchange(fx_t *fx, const char *fmt, ...)
{
    char req[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(req, sizeof(req), fmt, ap);
    va_end(ap);
    ASSERT(n > 0 && (size_t)n < sizeof(req));
    kr_conn_t *c = kr__conn_new_detached(&fx->s, &kr_http_proto);
    ASSERT_NOT_NULL(c);
    kr_conn_ref(c);
    ASSERT_EQ(kr__conn_feed(c, req, (size_t)n), (size_t)n);
    conn_output(c, resp, sizeof(resp));
    kr_conn_close(c, NULL);
    kr_conn_unref(c);
    return resp;
}

/* POST /hub/negotiate; returns the parsed JSON body (caller deletes it). */
static cJSON *negotiate_json(fx_t *fx, const char *query)
{
    const char *r = http_exchange(fx,
                                  "POST /hub/negotiate%s HTTP/1.1\r\nHost: t\r\n"
                                  "Content-Length: 0\r\n\r\n",
                                  query);
    ASSERT_EQ(status_of(r), 200);
    ASSERT_NOT_NULL(strstr(r, "\r\nContent-Type: application/json\r\n"));
    cJSON *j = cJSON_Parse(body_of(r));
    ASSERT_NOT_NULL(j);
    ASSERT(cJSON_IsObject(j));
    return j;
}

static const char *json_str(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char upgrade_fmt[] = "GET /hub?id=%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/* ---- WebSocket frames ------------------------------------------------------------------- */

static void send_frame(client_t *cl, int b0, const void *payload, size_t len)
{
    uint8_t *buf = kr_malloc(len + 14);
    size_t n = ws_client_frame(buf, b0, payload, len);
    ASSERT_EQ(kr__conn_feed(cl->c, buf, n), n);
    kr_free(buf);
}

static void send_text(client_t *cl, const char *s)
{
    send_frame(cl, FIN | KR_WS_OP_TEXT, s, strlen(s));
}

static char obuf[1 << 20];

/* Decodes every server frame queued on c so far (unmasked and complete), then consumes them
 * from the output queue. The payloads stay valid until the next call. */
static unsigned take_frames(kr_conn_t *c, ws_frame_t *f, unsigned max)
{
    size_t len = conn_output(c, obuf, sizeof(obuf));
    kr_outq_consume(&c->outq, c->outq.bytes);
    ASSERT_EQ(c->outq.bytes, 0);
    ASSERT(kr_outq_empty(&c->outq));
    unsigned n = ws_parse_frames(obuf, len, f, max);
    for (unsigned i = 0; i < n; i++)
        ASSERT_EQ(f[i].rsv, 0);
    return n;
}

static char tbuf[1 << 20];

/* Takes the output of cl, which must be complete text frames only, and returns their
 * payloads concatenated (static buffer); *nframes gets the frame count when not NULL. */
static const char *take_text(client_t *cl, unsigned *nframes)
{
    static ws_frame_t f[256];
    unsigned n = take_frames(cl->c, f, 256);
    size_t o = 0;
    for (unsigned i = 0; i < n; i++) {
        ASSERT_EQ(f[i].fin, 1);
        ASSERT_EQ(f[i].opcode, KR_WS_OP_TEXT);
        ASSERT(o + f[i].len < sizeof(tbuf));
        memcpy(tbuf + o, f[i].payload, f[i].len);
        o += f[i].len;
    }
    tbuf[o] = '\0';
    if (nframes)
        *nframes = n;
    return tbuf;
}

#define EXPECT_TEXT(cl, want) ASSERT_STR_EQ(take_text((cl), NULL), (want))
#define EXPECT_NOTHING(cl) ASSERT_EQ((cl)->c->outq.bytes, 0)

/* The output of cl is text frames holding `text`, then one close frame with code. */
static void expect_text_then_close(client_t *cl, const char *text, int code)
{
    ws_frame_t f[32];
    unsigned n = take_frames(cl->c, f, 32);
    ASSERT(n >= 1);
    size_t o = 0;
    for (unsigned i = 0; i + 1 < n; i++) {
        ASSERT_EQ(f[i].opcode, KR_WS_OP_TEXT);
        memcpy(tbuf + o, f[i].payload, f[i].len);
        o += f[i].len;
    }
    tbuf[o] = '\0';
    ASSERT_STR_EQ(tbuf, text);
    ASSERT_EQ(f[n - 1].opcode, KR_WS_OP_CLOSE);
    ASSERT_EQ(f[n - 1].fin, 1);
    ASSERT(f[n - 1].len >= 2);
    ASSERT_EQ(((uint8_t)f[n - 1].payload[0] << 8) | (uint8_t)f[n - 1].payload[1], code);
}

/* ---- clients ---------------------------------------------------------------------------- */

static client_t *client_new(fx_t *fx)
{
    ASSERT(fx->nclients < MAX_CONNS);
    client_t *cl = kr_calloc(1, sizeof(*cl));
    cl->fx = fx;
    fx->clients[fx->nclients++] = cl;
    return cl;
}

/* POST /hub/negotiate?negotiateVersion=1: fills id and token. */
static void client_negotiate(client_t *cl)
{
    cJSON *j = negotiate_json(cl->fx, "?negotiateVersion=1");
    const char *id = json_str(j, "connectionId"), *token = json_str(j, "connectionToken");
    ASSERT_NOT_NULL(id);
    ASSERT_NOT_NULL(token);
    snprintf(cl->id, sizeof(cl->id), "%s", id);
    snprintf(cl->token, sizeof(cl->token), "%s", token);
    cJSON_Delete(j);
}

/* The WebSocket upgrade on a new connection; the 101 is checked and consumed. */
static void client_upgrade(client_t *cl)
{
    cl->c = fx_conn(cl->fx);
    char req[512];
    int n = snprintf(req, sizeof(req), upgrade_fmt, cl->token);
    ASSERT_EQ(kr__conn_feed(cl->c, req, (size_t)n), (size_t)n);
    conn_output(cl->c, resp, sizeof(resp));
    ASSERT_EQ(status_of(resp), 101);
    ASSERT_NOT_NULL(strstr(resp, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    ASSERT(cl->c->proto != &kr_http_proto);
    kr_outq_consume(&cl->c->outq, cl->c->outq.bytes);
}

/* Stateful reconnect: a new socket for the same connection; only the 101 is consumed. */
static void client_reattach(client_t *cl)
{
    cl->c = fx_conn(cl->fx);
    char req[512];
    int n = snprintf(req, sizeof(req), upgrade_fmt, cl->token);
    ASSERT_EQ(kr__conn_feed(cl->c, req, (size_t)n), (size_t)n);
    size_t len = conn_output(cl->c, resp, sizeof(resp));
    ASSERT_EQ(status_of(resp), 101);
    const char *end = memmem(resp, len, "\r\n\r\n", 4);
    ASSERT_NOT_NULL(end);
    kr_outq_consume(&cl->c->outq, (size_t)(end + 4 - resp));
}

/* Negotiates, upgrades and completes the JSON handshake. */
static client_t *client_connect(fx_t *fx)
{
    client_t *cl = client_new(fx);
    client_negotiate(cl);
    client_upgrade(cl);
    send_text(cl, HANDSHAKE);
    EXPECT_TEXT(cl, "{}" RS);
    ASSERT_NOT_NULL(kr_hub_find(fx->hub, cl->id, strlen(cl->id)));
    return cl;
}

static kr_sr_conn_t *sr_of(client_t *cl)
{
    kr_sr_conn_t *c = kr_hub_find(cl->fx->hub, cl->id, strlen(cl->id));
    ASSERT_NOT_NULL(c);
    return c;
}

static void invoke(client_t *cl, const char *id, const char *target, const char *args)
{
    char m[4096];
    if (id)
        snprintf(m, sizeof(m),
                 "{\"type\":1,\"invocationId\":\"%s\",\"target\":\"%s\",\"arguments\":%s}" RS, id,
                 target, args);
    else
        snprintf(m, sizeof(m), "{\"type\":1,\"target\":\"%s\",\"arguments\":%s}" RS, target, args);
    send_text(cl, m);
}

/* ---- a test payload --------------------------------------------------------------------- */

typedef struct enc_s {
    int calls;
    int protocol;
    int fail; /* return this error instead of encoding */
    const char *text;
} enc_t;

static int test_encode(void *ud, int protocol, kr_sbuf_t *sb)
{
    enc_t *e = ud;
    e->calls++;
    e->protocol = protocol;
    if (e->fail) {
        kr_sbuf_puts(sb, "partial garbage"); /* must be thrown away */
        return e->fail;
    }
    kr_sr_json_write_invocation_head(sb, NULL, "Tick");
    kr_sbuf_puts(sb, e->text ? e->text : "[42]");
    kr_sr_json_write_tail(sb);
    return 0;
}

#define TICK "{\"type\":1,\"target\":\"Tick\",\"arguments\":[42]}" RS

static kr_outq_item_t *outq_item(kr_outq_t *q, uint32_t i)
{
    ASSERT(i < q->count);
    return &q->items[(q->head + i) % q->cap];
}

/* ---- 1. negotiate ----------------------------------------------------------------------- */

TEST(negotiate)
{
    fx_t fx;
    fx_init(&fx);

    cJSON *j = negotiate_json(&fx, "?negotiateVersion=1");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "negotiateVersion");
    ASSERT(cJSON_IsNumber(v));
    ASSERT_EQ(v->valueint, 1);
    const char *id = json_str(j, "connectionId"), *token = json_str(j, "connectionToken");
    ASSERT_NOT_NULL(id);
    ASSERT_NOT_NULL(token);
    ASSERT_EQ(strlen(id), 22);
    ASSERT_EQ(strlen(token), 22);
    ASSERT(strcmp(id, token) != 0);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "availableTransports");
    ASSERT(cJSON_IsArray(tr));
    /* The enabled transports in preference order: WebSockets, Server-Sent Events, long polling. */
    ASSERT_EQ(cJSON_GetArraySize(tr), 3);
    const cJSON *t0 = cJSON_GetArrayItem(tr, 0);
    ASSERT_STR_EQ(json_str(t0, "transport"), "WebSockets");
    const cJSON *fmts = cJSON_GetObjectItemCaseSensitive(t0, "transferFormats");
    ASSERT(cJSON_IsArray(fmts));
    ASSERT_STR_EQ(cJSON_GetArrayItem(fmts, 0)->valuestring, "Text");
    ASSERT_STR_EQ(cJSON_GetArrayItem(fmts, 1)->valuestring, "Binary");
    const cJSON *t1 = cJSON_GetArrayItem(tr, 1);
    ASSERT_STR_EQ(json_str(t1, "transport"), "ServerSentEvents");
    fmts = cJSON_GetObjectItemCaseSensitive(t1, "transferFormats");
    ASSERT_EQ(cJSON_GetArraySize(fmts), 1);
    ASSERT_STR_EQ(cJSON_GetArrayItem(fmts, 0)->valuestring, "Text");
    ASSERT_STR_EQ(json_str(cJSON_GetArrayItem(tr, 2), "transport"), "LongPolling");
    /* A negotiated connection is not connected yet. */
    ASSERT_NULL(kr_hub_find(fx.hub, id, strlen(id)));
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    cJSON_Delete(j);

    /* Higher versions are answered with 1; the key is case-insensitive. */
    j = negotiate_json(&fx, "?NEGOTIATEVERSION=7");
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(j, "negotiateVersion")->valueint, 1);
    ASSERT_NOT_NULL(json_str(j, "connectionToken"));
    cJSON_Delete(j);

    /* Version 0 (explicit or absent): no token, the id is what the client sends. */
    const char *v0[] = {"?negotiateVersion=0", ""};
    for (int i = 0; i < 2; i++) {
        j = negotiate_json(&fx, v0[i]);
        ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(j, "negotiateVersion")->valueint, 0);
        ASSERT_NOT_NULL(json_str(j, "connectionId"));
        ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(j, "connectionToken"));
        ASSERT(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "availableTransports")));
        cJSON_Delete(j);
    }

    /* Invalid versions: {"error":...} and no connection. */
    j = negotiate_json(&fx, "?negotiateVersion=abc");
    ASSERT_STR_EQ(json_str(j, "error"), "The client requested an invalid protocol version 'abc'");
    ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(j, "connectionId"));
    cJSON_Delete(j);
    j = negotiate_json(&fx, "?negotiateVersion=");
    ASSERT_NOT_NULL(json_str(j, "error"));
    cJSON_Delete(j);
    j = negotiate_json(&fx, "?negotiateVersion=-1");
    ASSERT_NOT_NULL(json_str(j, "error"));
    ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(j, "connectionId"));
    cJSON_Delete(j);

    /* Only POST. */
    const char *r = http_exchange(&fx, "GET /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\n"
                                       "Host: t\r\n\r\n");
    ASSERT_EQ(status_of(r), 405);
    ASSERT_NOT_NULL(strstr(r, "\r\nAllow: POST\r\n"));

    /* Other paths are not the hub's. */
    r = http_exchange(&fx, "POST /hubx/negotiate HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(status_of(r), 404);
    ASSERT_STR_EQ(body_of(r), "not found");
    fx_done(&fx);
}

/* ---- 2. the transport endpoint ---------------------------------------------------------- */

TEST(upgrade_errors)
{
    fx_t fx;
    fx_init(&fx);

    /* Unknown id. */
    const char *r = http_exchange(&fx, upgrade_fmt, "AAAAAAAAAAAAAAAAAAAAAA");
    ASSERT_EQ(status_of(r), 404);
    ASSERT_STR_EQ(body_of(r), "No Connection with that ID");

    client_t *cl = client_new(&fx);
    client_negotiate(cl);
    /* The id is not the token: it cannot be used to connect. */
    r = http_exchange(&fx, upgrade_fmt, cl->id);
    ASSERT_EQ(status_of(r), 404);

    client_upgrade(cl);
    /* A second transport for the same connection. */
    r = http_exchange(&fx, upgrade_fmt, cl->token);
    ASSERT_EQ(status_of(r), 409);
    ASSERT_STR_EQ(body_of(r), "Connection already has a transport");

    /* Long polling a WebSocket connection. */
    r = http_exchange(&fx, "POST /hub?id=%s HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
                      cl->token);
    ASSERT_EQ(status_of(r), 405);
    ASSERT_STR_EQ(body_of(r), "POST requests are not allowed on WebSocket connections.");
    r = http_exchange(&fx, "GET /hub?id=%s HTTP/1.1\r\nHost: t\r\n\r\n", cl->token);
    ASSERT_EQ(status_of(r), 400);
    r = http_exchange(&fx, "DELETE /hub?id=%s HTTP/1.1\r\nHost: t\r\n\r\n", cl->token);
    ASSERT_EQ(status_of(r), 400);

    /* No id. */
    r = http_exchange(&fx, "POST /hub HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(status_of(r), 400);
    ASSERT_STR_EQ(body_of(r), "Connection ID required");
    r = http_exchange(&fx, "POST /hub?id= HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(status_of(r), 400);
    /* Unknown id without an upgrade. */
    r = http_exchange(&fx, "POST /hub?id=nope HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(status_of(r), 404);
    /* Other methods. */
    r = http_exchange(&fx, "PUT /hub?id=%s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
                      cl->token);
    ASSERT_EQ(status_of(r), 405);
    ASSERT_NOT_NULL(strstr(r, "\r\nAllow: GET, POST, DELETE\r\n"));
    /* A bad WebSocket request is rejected by the WebSocket check, and the negotiated
     * connection stays usable. */
    client_t *cl2 = client_new(&fx);
    client_negotiate(cl2);
    r = http_exchange(&fx,
                      "GET /hub?id=%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                      cl2->token);
    ASSERT_EQ(status_of(r), 426);
    client_upgrade(cl2);

    /* The first connection still completes its handshake. */
    send_text(cl, HANDSHAKE);
    EXPECT_TEXT(cl, "{}" RS);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    fx_done(&fx);
}

/* ---- 3. the handshake ------------------------------------------------------------------- */

TEST(handshake)
{
    fx_t fx;
    fx_init(&fx);

    client_t *a = client_connect(&fx);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    kr_sr_conn_t *sa = sr_of(a);
    ASSERT_STR_EQ(kr_sr_conn_id(sa), a->id);
    ASSERT(kr_sr_conn_hub(sa) == fx.hub);
    ASSERT(kr_sr_conn_is_open(sa));
    ASSERT_NULL(kr_sr_conn_user(sa));

    /* Upgraded but not handshaken: not counted. */
    client_t *b = client_new(&fx);
    client_negotiate(b);
    client_upgrade(b);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    ASSERT_NULL(kr_hub_find(fx.hub, b->id, strlen(b->id)));

    /* Unknown protocol. */
    send_text(b, "{\"protocol\":\"foo\",\"version\":1}" RS);
    expect_text_then_close(b, "{\"error\":\"The protocol 'foo' is not supported.\"}" RS, 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);

    /* Unsupported version. */
    client_t *c = client_new(&fx);
    client_negotiate(c);
    client_upgrade(c);
    send_text(c, "{\"protocol\":\"json\",\"version\":3}" RS);
    expect_text_then_close(
        c, "{\"error\":\"The server does not support version 3 of the 'json' protocol.\"}" RS,
        1000);

    /* Not JSON. */
    client_t *d = client_new(&fx);
    client_negotiate(d);
    client_upgrade(d);
    send_text(d, "nonsense" RS);
    expect_text_then_close(
        d, "{\"error\":\"An unexpected error occurred during connection handshake.\"}" RS, 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);

    /* Split over two frames, the separator alone in the second. */
    client_t *e = client_new(&fx);
    client_negotiate(e);
    client_upgrade(e);
    send_text(e, "{\"protocol\":\"json\",");
    send_text(e, "\"version\":1}");
    EXPECT_NOTHING(e);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    send_text(e, RS);
    EXPECT_TEXT(e, "{}" RS);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 2);

    /* The handshake pipelined behind the upgrade request, in the same read: it waits for
     * the check phase (c->replay_input), then is handled. */
    client_t *f = client_new(&fx);
    client_negotiate(f);
    f->c = fx_conn(&fx);
    static uint8_t buf[1024];
    int n = snprintf((char *)buf, sizeof(buf), upgrade_fmt, f->token);
    size_t len =
        (size_t)n + ws_client_frame(buf + n, FIN | KR_WS_OP_TEXT, HANDSHAKE, strlen(HANDSHAKE));
    ASSERT_EQ(kr__conn_feed(f->c, buf, len), len);
    conn_output(f->c, resp, sizeof(resp));
    ASSERT_EQ(status_of(resp), 101);
    ASSERT(f->c->replay_input);
    kr_outq_consume(&f->c->outq, f->c->outq.bytes);
    kr__conn_flush(f->c); /* what the server's check phase does */
    EXPECT_TEXT(f, "{}" RS);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 3);

    /* A handshake with further records in the same frame: they are handled after it. */
    client_t *g = client_new(&fx);
    client_negotiate(g);
    client_upgrade(g);
    send_text(g, HANDSHAKE "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\","
                           "\"arguments\":[\"x\"]}" RS);
    EXPECT_TEXT(
        g, "{}" RS
           "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"x\"]}" RS VOID_COMPLETION("1"));
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 4);

    /* negotiateVersion 0: the id is the token. */
    client_t *h = client_new(&fx);
    cJSON *j = negotiate_json(&fx, "");
    snprintf(h->id, sizeof(h->id), "%s", json_str(j, "connectionId"));
    snprintf(h->token, sizeof(h->token), "%s", h->id);
    cJSON_Delete(j);
    client_upgrade(h);
    send_text(h, HANDSHAKE);
    EXPECT_TEXT(h, "{}" RS);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 5);

    /* The handshaken connection is still fine. */
    invoke(a, "7", "Echo", "[\"still\"]");
    EXPECT_TEXT(
        a, "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"still\"]}" RS VOID_COMPLETION(
               "7"));
    fx_done(&fx);
}

/* ---- 4. built-ins ----------------------------------------------------------------------- */

TEST(builtins)
{
    fx_t fx;
    fx_init(&fx);
    client_t *a = client_connect(&fx);
    unsigned nf;

    invoke(a, "1", "Echo", "[\"hello\"]");
    ASSERT_STR_EQ(take_text(a, &nf),
                  "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"hello\"]}" RS
                  "{\"type\":3,\"invocationId\":\"1\",\"result\":null}" RS);
    ASSERT_EQ(nf, 2);

    invoke(a, "2", "JoinGroup", "[\"room\"]");
    EXPECT_TEXT(
        a,
        "{\"type\":1,\"target\":\"GroupJoined\",\"arguments\":[\"room\"]}" RS VOID_COMPLETION("2"));
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 99;
    ASSERT_OK(kr_hub_send_group(fx.hub, "room", 4, &p, &count));
    ASSERT_EQ(count, 1);
    EXPECT_TEXT(a, TICK);
    /* Joining twice is not an error and does not duplicate the membership. */
    invoke(a, "3", "JoinGroup", "[\"room\"]");
    EXPECT_TEXT(
        a,
        "{\"type\":1,\"target\":\"GroupJoined\",\"arguments\":[\"room\"]}" RS VOID_COMPLETION("3"));
    ASSERT_OK(kr_hub_send_group(fx.hub, "room", 4, &p, &count));
    ASSERT_EQ(count, 1);
    EXPECT_TEXT(a, TICK);
    /* Group names are case-sensitive. */
    ASSERT_OK(kr_hub_send_group(fx.hub, "Room", 4, &p, &count));
    ASSERT_EQ(count, 0);
    EXPECT_NOTHING(a);

    invoke(a, "4", "LeaveGroup", "[\"room\"]");
    EXPECT_TEXT(
        a,
        "{\"type\":1,\"target\":\"GroupLeft\",\"arguments\":[\"room\"]}" RS VOID_COMPLETION("4"));
    ASSERT_OK(kr_hub_send_group(fx.hub, "room", 4, &p, &count));
    ASSERT_EQ(count, 0);
    EXPECT_NOTHING(a);
    /* Leaving a group one is not in. */
    invoke(a, "5", "LeaveGroup", "[\"elsewhere\"]");
    EXPECT_TEXT(
        a, "{\"type\":1,\"target\":\"GroupLeft\",\"arguments\":[\"elsewhere\"]}" RS VOID_COMPLETION(
               "5"));

    /* Unknown method. */
    invoke(a, "6", "Nope", "[]");
    EXPECT_TEXT(a,
                "{\"type\":3,\"invocationId\":\"6\",\"error\":\"Unknown hub method 'Nope'\"}" RS);

    /* Wrong argument count or type. */
    invoke(a, "7", "Echo", "[\"a\",\"b\"]");
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"7\",\"error\":\"Failed to invoke 'Echo' due "
                   "to an error on the server.\"}" RS);
    invoke(a, "8", "Echo", "[]");
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"8\",\"error\":\"Failed to invoke 'Echo' due "
                   "to an error on the server.\"}" RS);
    invoke(a, "9", "JoinGroup", "[5]");
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"9\",\"error\":\"Failed to invoke 'JoinGroup' "
                   "due to an error on the server.\"}" RS);

    /* Without an invocationId: the echo, no completion; errors are silent. */
    invoke(a, NULL, "Echo", "[\"quiet\"]");
    ASSERT_STR_EQ(take_text(a, &nf),
                  "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"quiet\"]}" RS);
    ASSERT_EQ(nf, 1);
    invoke(a, NULL, "Nope", "[]");
    EXPECT_NOTHING(a);
    invoke(a, NULL, "Echo", "[1,2]");
    EXPECT_NOTHING(a);

    /* Built-in names match case-insensitively (as .NET hub methods do). */
    invoke(a, "10", "echo", "[\"lower\"]");
    EXPECT_TEXT(
        a, "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"lower\"]}" RS VOID_COMPLETION(
               "10"));

    /* Strings come back re-escaped. */
    invoke(a, "11", "Echo", "[\"q\\\"\\u00e9\\n\"]");
    EXPECT_TEXT(a, "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"q\\\"\xc3\xa9\\n\"]}" RS
                       VOID_COMPLETION("11"));

    /* Pings and unknown message types are ignored. */
    send_text(a, "{\"type\":6}" RS "{\"type\":42}" RS);
    EXPECT_NOTHING(a);
    ASSERT_EQ(e.calls, 2); /* one encode per send_group with a recipient, none without */

    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    fx_done(&fx);
}

TEST(builtins_disabled)
{
    fx_t fx;
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    o.builtins = 0;
    fx_init_app(&fx, &o, NULL, NULL);
    client_t *a = client_connect(&fx);
    invoke(a, "1", "Echo", "[\"x\"]");
    EXPECT_TEXT(a,
                "{\"type\":3,\"invocationId\":\"1\",\"error\":\"Unknown hub method 'Echo'\"}" RS);
    fx_done(&fx);
}

/* ---- 5. broadcasting -------------------------------------------------------------------- */

#define NCLIENTS 50

TEST(broadcast_all_shares_one_buffer)
{
    fx_t fx;
    fx_init(&fx);
    client_t *cl[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++)
        cl[i] = client_connect(&fx);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), NCLIENTS);
    for (int i = 0; i < NCLIENTS; i++)
        ASSERT(kr_outq_empty(&cl[i]->c->outq));

    uint64_t sent_before = fx.s.stats.messages_sent;
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(e.calls, 1); /* one wire format in use: one encode */
    ASSERT_EQ(e.protocol, KR_SR_PROTO_JSON);
    ASSERT_EQ(count, NCLIENTS);
    ASSERT_EQ(fx.s.stats.messages_sent - sent_before, NCLIENTS);

    /* Every recipient queued the same buffer: one reference each, none left with the hub. */
    kr_buf_t *shared = outq_item(&cl[0]->c->outq, 0)->buf;
    for (int i = 0; i < NCLIENTS; i++) {
        kr_outq_t *q = &cl[i]->c->outq;
        ASSERT_EQ(q->count, 1);
        ASSERT(outq_item(q, 0)->buf == shared);
        ASSERT_EQ(outq_item(q, 0)->off, 0);
        ASSERT_EQ(q->bytes, shared->len);
    }
    ASSERT_EQ(shared->refcnt, NCLIENTS);
    /* The buffer is the complete text frame. */
    ASSERT_EQ(shared->len, 2 + strlen(TICK));
    ASSERT_EQ((uint8_t)shared->data[0], 0x81);
    ASSERT_EQ((uint8_t)shared->data[1], strlen(TICK));
    ASSERT_MEM_EQ(shared->data + 2, shared->len - 2, TICK, strlen(TICK));

    /* Each write drops one reference; the last one frees it (ASan checks the rest). */
    for (int i = 0; i < NCLIENTS; i++) {
        ASSERT_EQ(shared->refcnt, NCLIENTS - i);
        if (i == NCLIENTS - 1) {
            ASSERT_EQ(shared->refcnt, 1);
            kr_outq_consume(&cl[i]->c->outq, cl[i]->c->outq.bytes);
        } else {
            EXPECT_TEXT(cl[i], TICK);
        }
        ASSERT(kr_outq_empty(&cl[i]->c->outq));
    }
    shared = NULL;

    /* A written-out partial item: the remaining recipients still see the whole frame. */
    e.calls = 0;
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(e.calls, 1);
    shared = outq_item(&cl[0]->c->outq, 0)->buf;
    kr_outq_consume(&cl[0]->c->outq, 3);
    ASSERT_EQ(shared->refcnt, NCLIENTS);
    ASSERT_EQ(outq_item(&cl[0]->c->outq, 0)->off, 3);
    EXPECT_TEXT(cl[1], TICK);
    ASSERT_EQ(shared->refcnt, NCLIENTS - 1);
    fx_done(&fx); /* the other references go with their connections */
}

TEST(broadcast_group_to_and_errors)
{
    fx_t fx;
    fx_init(&fx);
    client_t *cl[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++)
        cl[i] = client_connect(&fx);

    /* Ten members, joined through the built-in. */
    for (int i = 0; i < NCLIENTS; i += 5) {
        invoke(cl[i], "j", "JoinGroup", "[\"tens\"]");
        EXPECT_TEXT(
            cl[i],
            "{\"type\":1,\"target\":\"GroupJoined\",\"arguments\":[\"tens\"]}" RS VOID_COMPLETION(
                "j"));
    }
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_group(fx.hub, "tens", 4, &p, &count));
    ASSERT_EQ(count, 10);
    ASSERT_EQ(e.calls, 1);
    kr_buf_t *shared = outq_item(&cl[0]->c->outq, 0)->buf;
    ASSERT_EQ(shared->refcnt, 10);
    for (int i = 0; i < NCLIENTS; i++) {
        if (i % 5 == 0) {
            ASSERT(outq_item(&cl[i]->c->outq, 0)->buf == shared);
            EXPECT_TEXT(cl[i], TICK);
        } else {
            EXPECT_NOTHING(cl[i]);
        }
    }
    shared = NULL;

    /* An unknown group: nobody, no encode. */
    e.calls = 0;
    count = 99;
    ASSERT_OK(kr_hub_send_group(fx.hub, "none", 4, &p, &count));
    ASSERT_EQ(count, 0);
    ASSERT_EQ(e.calls, 0);
    count = 99;
    ASSERT_OK(kr_hub_send_user(fx.hub, "bob", 3, &p, &count));
    ASSERT_EQ(count, 0);

    /* One connection. */
    e.text = "[\"just you\"]";
    ASSERT_OK(kr_hub_send_to(fx.hub, cl[7]->id, strlen(cl[7]->id), &p));
    ASSERT_EQ(e.calls, 1);
    for (int i = 0; i < NCLIENTS; i++) {
        if (i == 7)
            EXPECT_TEXT(cl[i], "{\"type\":1,\"target\":\"Tick\",\"arguments\":[\"just you\"]}" RS);
        else
            EXPECT_NOTHING(cl[i]);
    }
    ASSERT_OK(kr_sr_conn_send(sr_of(cl[8]), &p));
    EXPECT_TEXT(cl[8], "{\"type\":1,\"target\":\"Tick\",\"arguments\":[\"just you\"]}" RS);
    e.text = NULL;

    /* Unknown ids, and the token is not an id. */
    e.calls = 0;
    ASSERT_EQ(kr_hub_send_to(fx.hub, "nobody", 6, &p), KR_ENOENT);
    ASSERT_EQ(kr_hub_send_to(fx.hub, cl[3]->token, strlen(cl[3]->token), &p), KR_ENOENT);
    ASSERT_EQ(e.calls, 0);

    /* An encoder error is returned and nothing is queued anywhere. */
    e.fail = KR_EINVAL;
    count = 99;
    ASSERT_EQ(kr_hub_send_all(fx.hub, &p, &count), KR_EINVAL);
    ASSERT_EQ(e.calls, 1);
    ASSERT_EQ(count, 0);
    ASSERT_EQ(kr_hub_send_group(fx.hub, "tens", 4, &p, &count), KR_EINVAL);
    ASSERT_EQ(count, 0);
    ASSERT_EQ(kr_hub_send_to(fx.hub, cl[0]->id, strlen(cl[0]->id), &p), KR_EINVAL);
    for (int i = 0; i < NCLIENTS; i++)
        EXPECT_NOTHING(cl[i]);
    e.fail = 0;

    /* Still delivering afterwards. */
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(count, NCLIENTS);
    for (int i = 0; i < NCLIENTS; i++)
        EXPECT_TEXT(cl[i], TICK);

    /* Connections that are not connected (negotiated, handshaking) get nothing. */
    client_t *n1 = client_new(&fx);
    client_negotiate(n1);
    client_t *n2 = client_new(&fx);
    client_negotiate(n2);
    client_upgrade(n2);
    ASSERT_EQ(kr_hub_send_to(fx.hub, n1->id, strlen(n1->id), &p), KR_ENOENT);
    ASSERT_EQ(kr_hub_send_to(fx.hub, n2->id, strlen(n2->id), &p), KR_ENOENT);
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(count, NCLIENTS);
    EXPECT_NOTHING(n2);
    for (int i = 0; i < NCLIENTS; i++)
        EXPECT_TEXT(cl[i], TICK);
    fx_done(&fx);
}

/* ---- 6. record framing ------------------------------------------------------------------ */

#define ECHOED(s) "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"" s "\"]}" RS

TEST(records_across_and_within_frames)
{
    fx_t fx;
    fx_init(&fx);
    client_t *a = client_connect(&fx);

    /* One record over three frames. */
    send_text(a, "{\"type\":1,\"invocationId\":\"1\",\"tar");
    EXPECT_NOTHING(a);
    send_text(a, "get\":\"Echo\",\"arguments\":[\"split\"]");
    EXPECT_NOTHING(a);
    send_text(a, "}" RS);
    EXPECT_TEXT(a, ECHOED("split") VOID_COMPLETION("1"));

    /* Two records in one frame. */
    send_text(a,
              "{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"b\"]}" RS
              "{\"type\":1,\"invocationId\":\"3\",\"target\":\"Echo\",\"arguments\":[\"c\"]}" RS);
    EXPECT_TEXT(a, ECHOED("b") VOID_COMPLETION("2") ECHOED("c") VOID_COMPLETION("3"));

    /* A record and a half, then the rest. */
    send_text(a, "{\"type\":1,\"invocationId\":\"4\",\"target\":\"Echo\",\"arguments\":[\"d\"]}" RS
                 "{\"type\":1,\"invocationId\":\"5\",\"target\":\"Ec");
    EXPECT_TEXT(a, ECHOED("d") VOID_COMPLETION("4"));
    send_text(a, "ho\",\"arguments\":[\"e\"]}" RS);
    EXPECT_TEXT(a, ECHOED("e") VOID_COMPLETION("5"));

    /* One WebSocket message in fragments (continuation frames). */
    const char *m =
        "{\"type\":1,\"invocationId\":\"6\",\"target\":\"Echo\",\"arguments\":[\"f\"]}" RS;
    send_frame(a, KR_WS_OP_TEXT, m, 10);
    send_frame(a, KR_WS_OP_CONT, m + 10, 20);
    EXPECT_NOTHING(a);
    send_frame(a, FIN | KR_WS_OP_CONT, m + 30, strlen(m) - 30);
    EXPECT_TEXT(a, ECHOED("f") VOID_COMPLETION("6"));

    /* Empty records are skipped. */
    send_text(a, RS RS
              "{\"type\":1,\"invocationId\":\"7\",\"target\":\"Echo\",\"arguments\":[\"g\"]}" RS);
    EXPECT_TEXT(a, ECHOED("g") VOID_COMPLETION("7"));

    /* All of it in one client feed (several frames in one read). */
    static uint8_t buf[1024];
    size_t n = 0;
    const char *p1 = "{\"type\":1,\"invocationId\":\"8\",\"target\":\"Echo\",\"argu";
    const char *p2 = "ments\":[\"h\"]}" RS "{\"type\":1,\"invocationId\":\"9\",\"target\":"
                     "\"Echo\",\"arguments\":[\"i\"]}" RS;
    n += ws_client_frame(buf + n, FIN | KR_WS_OP_TEXT, p1, strlen(p1));
    n += ws_client_frame(buf + n, FIN | KR_WS_OP_TEXT, p2, strlen(p2));
    ASSERT_EQ(kr__conn_feed(a->c, buf, n), n);
    EXPECT_TEXT(a, ECHOED("h") VOID_COMPLETION("8") ECHOED("i") VOID_COMPLETION("9"));

    /* A malformed record is a protocol error. */
    send_text(a, "{\"type\":1,\"target\":5}" RS);
    expect_text_then_close(
        a, "{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}" RS,
        1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    fx_done(&fx);
}

/* ---- 7. the message size limit ---------------------------------------------------------- */

#define CLOSE_WITH_ERROR                                                                           \
    "{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}" RS

TEST(oversize_message)
{
    fx_t fx;
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    o.max_message_bytes = 100;
    fx_init_app(&fx, &o, NULL, NULL);

    /* 100 bytes of record are fine. */
    client_t *a = client_connect(&fx);
    char m[512], arg[300];
#define ECHO1_FMT "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"%s\"]}"
    size_t base = strlen(ECHO1_FMT) - 2;
    memset(arg, 'x', 100 - base);
    arg[100 - base] = '\0';
    int n = snprintf(m, sizeof(m), ECHO1_FMT, arg);
    ASSERT_EQ(n, 100);
    strcat(m, RS);
    send_text(a, m);
    char want[600];
    snprintf(
        want, sizeof(want),
        "{\"type\":1,\"target\":\"ReceiveEcho\",\"arguments\":[\"%s\"]}" RS VOID_COMPLETION("1"),
        arg);
    EXPECT_TEXT(a, want);

    /* A 200-byte record: Close with an error, then the WebSocket close. */
    memset(arg, 'y', 200 - base);
    arg[200 - base] = '\0';
    n = snprintf(m, sizeof(m), ECHO1_FMT, arg);
    ASSERT_EQ(n, 200);
    strcat(m, RS);
    send_text(a, m);
    expect_text_then_close(a, CLOSE_WITH_ERROR, 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    ASSERT_NULL(kr_hub_find(fx.hub, a->id, strlen(a->id)));
    /* Nothing more is answered. */
    invoke(a, "2", "Echo", "[\"late\"]");
    EXPECT_NOTHING(a);

    /* Over the limit without a separator yet: the same, without waiting for the end. */
    client_t *b = client_connect(&fx);
    memset(arg, 'z', 150);
    arg[150] = '\0';
    send_text(b, arg);
    expect_text_then_close(b, CLOSE_WITH_ERROR, 1000);

    /* The same size spread over several frames. */
    client_t *c = client_connect(&fx);
    send_text(c, "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"");
    EXPECT_NOTHING(c);
    memset(arg, 'w', 80);
    arg[80] = '\0';
    send_text(c, arg);
    expect_text_then_close(c, CLOSE_WITH_ERROR, 1000);

    /* An oversize handshake. */
    client_t *d = client_new(&fx);
    client_negotiate(d);
    client_upgrade(d);
    snprintf(m, sizeof(m), "{\"protocol\":\"json\",\"version\":1,\"pad\":\"%s\"}" RS, arg);
    send_text(d, m);
    expect_text_then_close(d, "{\"error\":\"Handshake was canceled.\"}" RS, 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    fx_done(&fx);
}

/* ---- 8. disconnects --------------------------------------------------------------------- */

typedef struct life_s {
    int connected, disconnected;
    char last_error[128];
    int had_error;
    kr_sr_conn_t *last_conn;
    int groups_kept; /* members of "g" when disconnected ran */
} life_t;

static kr_hub_t *life_hub;

static void life_connected(kr_hub_t *hub, kr_sr_conn_t *c, void *ud)
{
    life_t *l = ud;
    ASSERT(hub == life_hub);
    ASSERT(kr_sr_conn_is_open(c));
    l->connected++;
}

static int life_disconnected(kr_hub_t *hub, kr_sr_conn_t *c, const char *error, void *ud)
{
    life_t *l = ud;
    ASSERT(hub == life_hub);
    ASSERT(!kr_sr_conn_is_open(c));
    l->disconnected++;
    l->last_conn = c;
    l->had_error = error != NULL;
    snprintf(l->last_error, sizeof(l->last_error), "%s", error ? error : "");
    return 0;
}

TEST(disconnect_leaves_groups)
{
    fx_t fx;
    life_t life = {0};
    kr_hub_app_t app = {.connected = life_connected, .disconnected = life_disconnected};
    fx_init_app(&fx, NULL, &app, &life);
    life_hub = fx.hub;
    client_t *cl[4];
    for (int i = 0; i < 4; i++) {
        cl[i] = client_connect(&fx);
        invoke(cl[i], "1", "JoinGroup", "[\"g\"]");
        take_text(cl[i], NULL);
        invoke(cl[i], "2", "JoinGroup", i % 2 ? "[\"odd\"]" : "[\"even\"]");
        take_text(cl[i], NULL);
    }
    ASSERT_EQ(life.connected, 4);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 4);
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_group(fx.hub, "g", 1, &p, &count));
    ASSERT_EQ(count, 4);
    for (int i = 0; i < 4; i++)
        take_text(cl[i], NULL);

    /* The TCP connection of client 1 goes. */
    kr_conn_close(cl[1]->c, NULL);
    ASSERT_EQ(life.disconnected, 1);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 3);
    ASSERT_NULL(kr_hub_find(fx.hub, cl[1]->id, strlen(cl[1]->id)));
    ASSERT_OK(kr_hub_send_group(fx.hub, "g", 1, &p, &count));
    ASSERT_EQ(count, 3);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            EXPECT_TEXT(cl[i], TICK);
    ASSERT_OK(kr_hub_send_group(fx.hub, "odd", 3, &p, &count));
    ASSERT_EQ(count, 1);
    EXPECT_TEXT(cl[3], TICK);
    ASSERT_EQ(kr_hub_send_to(fx.hub, cl[1]->id, strlen(cl[1]->id), &p), KR_ENOENT);

    /* The client says goodbye with a Close message: the server answers with its own Close
     * and the WebSocket close. */
    send_text(cl[3], "{\"type\":7}" RS);
    expect_text_then_close(cl[3], "{\"type\":7}" RS, 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 2);
    ASSERT_OK(kr_hub_send_group(fx.hub, "odd", 3, &p, &count));
    ASSERT_EQ(count, 0);
    ASSERT_OK(kr_hub_send_group(fx.hub, "g", 1, &p, &count));
    ASSERT_EQ(count, 2);
    EXPECT_TEXT(cl[0], TICK);
    EXPECT_TEXT(cl[2], TICK);
    /* The client's close frame ends it. */
    uint8_t close_payload[2] = {0x03, 0xe8};
    send_frame(cl[3], FIN | KR_WS_OP_CLOSE, close_payload, 2);
    ASSERT_EQ(life.disconnected, 2);
    ASSERT_EQ(life.had_error, 0);

    /* The server closes one (kr_sr_conn_close): Close message, WebSocket close, not counted
     * any more at once; groups go when the transport ends. */
    kr_sr_conn_close(sr_of(cl[2]), "bye", 0);
    expect_text_then_close(cl[2], "{\"type\":7,\"error\":\"bye\"}" RS, 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    ASSERT_OK(kr_hub_send_group(fx.hub, "g", 1, &p, &count));
    ASSERT_EQ(count, 1);
    EXPECT_TEXT(cl[0], TICK);
    EXPECT_NOTHING(cl[2]);
    kr_conn_close(cl[2]->c, NULL);
    ASSERT_EQ(life.disconnected, 3);
    ASSERT_STR_EQ(life.last_error, "bye");

    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    fx_done(&fx);
    ASSERT_EQ(life.disconnected, 4);
}

/* ---- 9. one invocation at a time --------------------------------------------------------- */

typedef struct order_s {
    int calls;
    char targets[8][32];
    char held_id[32]; /* the invocation taken and not completed */
    kr_sr_conn_t *held;
} order_t;

static int order_invoke(kr_hub_t *hub, kr_sr_conn_t *c, const kr_sr_msg_t *msg, void *ud)
{
    order_t *o = ud;
    KR_UNUSED(hub);
    ASSERT(o->calls < 8);
    snprintf(o->targets[o->calls++], 32, "%s", msg->target);
    if (strcmp(msg->target, "Slow") == 0) {
        ASSERT_NULL(o->held);
        snprintf(o->held_id, sizeof(o->held_id), "%s",
                 msg->invocation_id ? msg->invocation_id : "");
        o->held = c;
        kr_sr_conn_ref(c);
        return 0;
    }
    if (strcmp(msg->target, "Fast") == 0) {
        kr_sr_conn_complete(c, msg->invocation_id, "\"fast\"", 6, NULL);
        return 0;
    }
    return KR_ENOENT;
}

TEST(invocation_order)
{
    fx_t fx;
    order_t o = {0};
    kr_hub_app_t app = {.invoke = order_invoke};
    fx_init_app(&fx, NULL, &app, &o);
    client_t *a = client_connect(&fx);
    client_t *b = client_connect(&fx);

    invoke(a, "1", "Slow", "[]");
    ASSERT_EQ(o.calls, 1);
    ASSERT_STR_EQ(o.held_id, "1");
    EXPECT_NOTHING(a);
    /* Queued behind the running one: the app is not called. */
    invoke(a, "2", "Fast", "[]");
    invoke(a, "3", "Echo", "[\"after\"]");
    ASSERT_EQ(o.calls, 1);
    EXPECT_NOTHING(a);
    /* Another connection is not held up. */
    invoke(b, "1", "Fast", "[]");
    ASSERT_EQ(o.calls, 2);
    EXPECT_TEXT(b, "{\"type\":3,\"invocationId\":\"1\",\"result\":\"fast\"}" RS);

    /* Completing the first dispatches the queued ones, in order. */
    kr_sr_conn_t *held = o.held;
    o.held = NULL;
    kr_sr_conn_complete(held, o.held_id, "42", 2, NULL);
    ASSERT_EQ(o.calls, 4);
    ASSERT_STR_EQ(o.targets[2], "Fast");
    ASSERT_STR_EQ(o.targets[3], "Echo");
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"1\",\"result\":42}" RS
                   "{\"type\":3,\"invocationId\":\"2\",\"result\":\"fast\"}" RS ECHOED("after")
                       VOID_COMPLETION("3"));
    kr_sr_conn_unref(held);

    /* An error completion; then a fire-and-forget one completes with no message. */
    invoke(a, "4", "Slow", "[]");
    invoke(a, NULL, "Slow", "[]"); /* queued */
    ASSERT_EQ(o.calls, 5);
    held = o.held;
    o.held = NULL;
    kr_sr_conn_complete(held, o.held_id, NULL, 0, "it broke");
    kr_sr_conn_unref(held);
    ASSERT_EQ(o.calls, 6);
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"4\",\"error\":\"it broke\"}" RS);
    ASSERT_STR_EQ(o.held_id, "");
    held = o.held;
    o.held = NULL;
    kr_sr_conn_complete(held, NULL, NULL, 0, NULL);
    kr_sr_conn_unref(held);
    EXPECT_NOTHING(a);

    /* Still taking invocations. */
    invoke(a, "5", "Fast", "[]");
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"5\",\"result\":\"fast\"}" RS);

    /* A held invocation whose connection goes: the late completion sends nothing. */
    invoke(a, "6", "Slow", "[]");
    invoke(a, "7", "Fast", "[]");
    held = o.held;
    o.held = NULL;
    int calls = o.calls;
    kr_conn_close(a->c, NULL);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    kr_sr_conn_complete(held, "6", "1", 1, NULL);
    ASSERT_EQ(o.calls, calls); /* the queued one is dropped, not run */
    kr_sr_conn_unref(held);
    fx_done(&fx);
}

TEST(invocation_queue_backpressure)
{
    fx_t fx;
    order_t o = {0};
    kr_hub_app_t app = {.invoke = order_invoke};
    kr_hub_opts_t opts;
    kr_hub_opts_default(&opts);
    opts.max_queued_invocations = 2;
    fx_init_app(&fx, &opts, &app, &o);
    client_t *a = client_connect(&fx);

    /* One running, two queued, one more waits unparsed: reading stops. */
    send_text(a,
              "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Slow\",\"arguments\":[]}" RS
              "{\"type\":1,\"invocationId\":\"2\",\"target\":\"Fast\",\"arguments\":[]}" RS
              "{\"type\":1,\"invocationId\":\"3\",\"target\":\"Fast\",\"arguments\":[]}" RS
              "{\"type\":1,\"invocationId\":\"4\",\"target\":\"Echo\",\"arguments\":[\"z\"]}" RS);
    ASSERT_EQ(o.calls, 1);
    ASSERT_EQ(a->c->want_read, 0);
    EXPECT_NOTHING(a);

    kr_sr_conn_t *held = o.held;
    o.held = NULL;
    kr_sr_conn_complete(held, o.held_id, NULL, 0, NULL);
    kr_sr_conn_unref(held);
    /* The queued ones ran at once; reading resumes at the next loop turn (never inside the
     * completing caller's stack). */
    ASSERT_EQ(o.calls, 3);
    ASSERT_EQ(a->c->want_read, 0);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    ASSERT_EQ(o.calls, 4);
    ASSERT_EQ(a->c->want_read, 1);
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"1\",\"result\":null}" RS
                   "{\"type\":3,\"invocationId\":\"2\",\"result\":\"fast\"}" RS
                   "{\"type\":3,\"invocationId\":\"3\",\"result\":\"fast\"}" RS ECHOED("z")
                       VOID_COMPLETION("4"));
    invoke(a, "5", "Echo", "[\"more\"]");
    EXPECT_TEXT(a, ECHOED("more") VOID_COMPLETION("5"));
    fx_done(&fx);
}

/* ---- 10. shutdown ----------------------------------------------------------------------- */

TEST(shutdown)
{
    fx_t fx;
    fx_init(&fx);
    client_t *cl[5];
    for (int i = 0; i < 5; i++)
        cl[i] = client_connect(&fx);
    client_t *hs = client_new(&fx); /* handshaking */
    client_negotiate(hs);
    client_upgrade(hs);
    client_t *ng = client_new(&fx); /* negotiated only */
    client_negotiate(ng);

    kr_hub_shutdown(fx.hub);
    for (int i = 0; i < 5; i++)
        expect_text_then_close(cl[i],
                               "{\"type\":1,\"target\":\"serverShutdown\",\"arguments\":"
                               "[\"Server stopping\"]}" RS
                               "{\"type\":7,\"allowReconnect\":true}" RS,
                               1000);
    /* The handshaking connection only gets the WebSocket close. */
    expect_text_then_close(hs, "", 1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    kr_hub_shutdown(fx.hub); /* idempotent */
    for (int i = 0; i < 5; i++)
        EXPECT_NOTHING(cl[i]);

    /* New work is refused. */
    const char *r = http_exchange(&fx, "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\n"
                                       "Host: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(status_of(r), 503);
    ASSERT_STR_EQ(body_of(r), "Server stopping");
    r = http_exchange(&fx, upgrade_fmt, ng->token);
    ASSERT_EQ(status_of(r), 503);
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 99;
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(count, 0);
    ASSERT_EQ(e.calls, 0);

    /* The clients answer the close: the transports end. */
    uint8_t close_payload[2] = {0x03, 0xe8};
    for (int i = 0; i < 3; i++) {
        send_frame(cl[i], FIN | KR_WS_OP_CLOSE, close_payload, 2);
        ASSERT(cl[i]->c->close_after_flush || kr_conn_is_closing(cl[i]->c));
    }
    fx_done(&fx);
}

/* Freeing the hub with live connections, then closing the transports. */
TEST(free_with_live_connections)
{
    fx_t fx;
    life_t life = {0};
    kr_hub_app_t app = {.connected = life_connected, .disconnected = life_disconnected};
    fx_init_app(&fx, NULL, &app, &life);
    life_hub = fx.hub;
    client_t *cl[3];
    for (int i = 0; i < 3; i++) {
        cl[i] = client_connect(&fx);
        invoke(cl[i], "1", "JoinGroup", "[\"g\"]");
        take_text(cl[i], NULL);
    }
    client_t *hs = client_new(&fx);
    client_negotiate(hs);
    client_upgrade(hs);
    client_t *ng = client_new(&fx);
    client_negotiate(ng);
    ASSERT_EQ(life.connected, 3);
    fx_done_hub_first(&fx);
    ASSERT_EQ(life.disconnected, 0); /* the app is gone with the hub */
}

/* ---- more: ids, skipNegotiation, binary frames ------------------------------------------ */

/* An id too long to be a token is an unknown id (ASP.NET Core: 404 "No Connection with that
 * ID"), not a missing one: it must not start a fresh connection. */
TEST(overlong_id_is_unknown)
{
    fx_t fx;
    fx_init(&fx);
    const char *longid = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"; /* 40 characters */
    int upgrade = status_of(http_exchange(&fx, upgrade_fmt, longid));
    int post = status_of(http_exchange(
        &fx, "POST /hub?id=%s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", longid));
    /* The same for the version: 40 digits are not "no version". */
    cJSON *j = negotiate_json(&fx, "?negotiateVersion=1111111111111111111111111111111111111111");
    int version_error = json_str(j, "error") != NULL;
    cJSON_Delete(j);
    if (upgrade != 404 || post != 404 || !version_error)
        fprintf(stderr, "  overlong query values: upgrade %d, POST %d, negotiateVersion %s\n",
                upgrade, post, version_error ? "error" : "accepted as version 0");
    ASSERT_EQ(upgrade, 404);
    ASSERT_EQ(post, 404);
    ASSERT(version_error);
    fx_done(&fx);
}

TEST(skip_negotiation)
{
    fx_t fx;
    fx_init(&fx);
    client_t *a = client_new(&fx);
    a->c = fx_conn(&fx);
    const char *req = "GET /hub HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    ASSERT_EQ(kr__conn_feed(a->c, req, strlen(req)), strlen(req));
    conn_output(a->c, resp, sizeof(resp));
    ASSERT_EQ(status_of(resp), 101);
    kr_outq_consume(&a->c->outq, a->c->outq.bytes);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    send_text(a, HANDSHAKE);
    EXPECT_TEXT(a, "{}" RS);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    invoke(a, "1", "Echo", "[\"skip\"]");
    EXPECT_TEXT(a, ECHOED("skip") VOID_COMPLETION("1"));
    /* Reachable by broadcast like any other. */
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(count, 1);
    EXPECT_TEXT(a, TICK);
    fx_done(&fx);
}

TEST(binary_frame_after_json_handshake)
{
    fx_t fx;
    fx_init(&fx);
    client_t *a = client_connect(&fx);
    const char *m =
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"b\"]}" RS;
    send_frame(a, FIN | KR_WS_OP_BINARY, m, strlen(m));
    expect_text_then_close(a, "{\"type\":7,\"error\":\"Connection closed with an error.\"}" RS,
                           1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    fx_done(&fx);
}

/* A client of a binary protocol (MessagePack) sends its handshake in a binary frame; the
 * server must read it and answer, here that the protocol is not enabled on this hub, as
 * ASP.NET Core does (the handshake is read from the transport whatever the frame type). */
TEST(binary_handshake_is_answered)
{
    fx_t fx;
    kr_hub_opts_t opts;
    kr_hub_opts_default(&opts);
    opts.protocols = KR_SR_PROTO_JSON;
    fx_init_app(&fx, &opts, NULL, NULL);
    client_t *a = client_new(&fx);
    client_negotiate(a);
    client_upgrade(a);
    const char *hs = "{\"protocol\":\"messagepack\",\"version\":1}" RS;
    send_frame(a, FIN | KR_WS_OP_BINARY, hs, strlen(hs));
    expect_text_then_close(a, "{\"error\":\"The protocol 'messagepack' is not supported.\"}" RS,
                           1000);
    fx_done(&fx);
}

/* ---- more: invocation kinds, group limits ------------------------------------------------ */

TEST(stream_invocation_and_group_limits)
{
    fx_t fx;
    fx_init(&fx);
    client_t *a = client_connect(&fx);
    send_text(a,
              "{\"type\":4,\"invocationId\":\"s\",\"target\":\"Echo\",\"arguments\":[\"x\"]}" RS);
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"s\",\"error\":\"The client attempted to invoke "
                   "the non-streaming 'Echo' method with a streaming invocation.\"}" RS);
    /* Completions, stream items, cancellations from the client are ignored. */
    send_text(a, "{\"type\":3,\"invocationId\":\"z\",\"result\":1}" RS
                 "{\"type\":5,\"invocationId\":\"z\"}" RS);
    EXPECT_NOTHING(a);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);

    static char name[1100], msg[1300];
    memset(name, 'n', 1025);
    name[1025] = '\0';
    kr_sr_conn_t *sa = sr_of(a);
    ASSERT_EQ(kr_hub_group_add(fx.hub, sa, name, 1025), KR_ELIMIT);
    ASSERT_EQ(kr_hub_group_add(fx.hub, sa, "a\0b", 3), KR_ELIMIT);
    ASSERT_OK(kr_hub_group_add(fx.hub, sa, name, 1024));
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_group(fx.hub, name, 1024, &p, &count));
    ASSERT_EQ(count, 1);
    EXPECT_TEXT(a, TICK);
    ASSERT_OK(kr_hub_send_group(fx.hub, name, 1025, &p, &count));
    ASSERT_EQ(count, 0);
    ASSERT_OK(kr_hub_group_remove(fx.hub, sa, name, 1024));
    ASSERT_OK(kr_hub_group_remove(fx.hub, sa, name, 1024)); /* not a member: fine */
    ASSERT_OK(kr_hub_send_group(fx.hub, name, 1024, &p, &count));
    ASSERT_EQ(count, 0);

    snprintf(
        msg, sizeof(msg),
        "{\"type\":1,\"invocationId\":\"j\",\"target\":\"JoinGroup\",\"arguments\":[\"%s\"]}" RS,
        name);
    send_text(a, msg);
    EXPECT_TEXT(a, "{\"type\":3,\"invocationId\":\"j\",\"error\":\"An unexpected error occurred "
                   "invoking 'JoinGroup' on the server.\"}" RS);

    /* A closing connection cannot join. */
    kr_sr_conn_ref(sa);
    kr_sr_conn_close(sa, NULL, 0);
    ASSERT(!kr_sr_conn_is_open(sa));
    ASSERT_EQ(kr_hub_group_add(fx.hub, sa, "late", 4), KR_ECLOSED);
    ASSERT_EQ(kr_sr_conn_send(sa, &p), KR_ECLOSED);
    kr_sr_conn_unref(sa);
    fx_done(&fx);
}

/* Membership bookkeeping (swap-removal, index fix-ups, empty groups freed) against a model:
 * random joins, leaves and disconnects, every group checked after each step. */
#define GS_CLIENTS 16
#define GS_GROUPS 5

TEST(groups_against_model)
{
    fx_t fx;
    fx_init(&fx);
    client_t *cl[GS_CLIENTS];
    int live[GS_CLIENTS], member[GS_CLIENTS][GS_GROUPS];
    memset(member, 0, sizeof(member));
    for (int i = 0; i < GS_CLIENTS; i++) {
        cl[i] = client_connect(&fx);
        live[i] = 1;
    }
    static const char *const gname[GS_GROUPS] = {"g0", "g1", "g2", "g3", "g4"};
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    uint32_t rnd = 12345;
    for (int step = 0; step < 400; step++) {
        rnd = rnd * 1103515245u + 12345u;
        int i = (int)((rnd >> 8) % GS_CLIENTS), g = (int)((rnd >> 16) % GS_GROUPS);
        int op = (int)((rnd >> 24) % 16);
        if (!live[i])
            continue;
        if (op == 0 && step > 100) {
            kr_conn_close(cl[i]->c, NULL);
            live[i] = 0;
            for (int k = 0; k < GS_GROUPS; k++)
                member[i][k] = 0;
        } else if (op < 9) {
            if (op & 1) {
                ASSERT_OK(kr_hub_group_add(fx.hub, sr_of(cl[i]), gname[g], 2));
            } else {
                invoke(cl[i], "j", "JoinGroup",
                       g == 0   ? "[\"g0\"]"
                       : g == 1 ? "[\"g1\"]"
                       : g == 2 ? "[\"g2\"]"
                       : g == 3 ? "[\"g3\"]"
                                : "[\"g4\"]");
                take_text(cl[i], NULL);
            }
            member[i][g] = 1;
        } else {
            ASSERT_OK(kr_hub_group_remove(fx.hub, sr_of(cl[i]), gname[g], 2));
            member[i][g] = 0;
        }
        for (int k = 0; k < GS_GROUPS; k++) {
            unsigned want = 0, count = 99;
            for (int j = 0; j < GS_CLIENTS; j++)
                want += (unsigned)member[j][k];
            ASSERT_OK(kr_hub_send_group(fx.hub, gname[k], 2, &p, &count));
            ASSERT_EQ(count, want);
            for (int j = 0; j < GS_CLIENTS; j++) {
                if (!live[j])
                    continue;
                if (member[j][k])
                    EXPECT_TEXT(cl[j], TICK);
                else
                    EXPECT_NOTHING(cl[j]);
            }
        }
    }
    unsigned nlive = 0;
    for (int i = 0; i < GS_CLIENTS; i++)
        nlive += (unsigned)live[i];
    ASSERT(nlive < GS_CLIENTS);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), nlive);
    fx_done(&fx);
}

/* ---- more: slow consumers ---------------------------------------------------------------- */

TEST(slow_consumer_in_broadcast)
{
    fx_t fx;
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    o.low_water = 100;
    o.high_water = 200;
    o.hard_limit = 300;
    fx_init_app(&fx, &o, NULL, NULL);
    client_t *cl[3];
    for (int i = 0; i < 3; i++)
        cl[i] = client_connect(&fx);
    static char big[200];
    memset(big, 0, sizeof(big));
    big[0] = '[';
    big[1] = '"';
    memset(big + 2, 'b', 140);
    strcpy(big + 142, "\"]");
    enc_t e = {.text = big};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    uint64_t slow_before = fx.s.stats.slow_consumers;
    for (int round = 0; round < 3; round++) {
        ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
        ASSERT_EQ(e.calls, round + 1);
        /* Client 2 never reads: over the hard limit at the second round, refused after. */
        ASSERT_EQ(count, round < 2 ? 3 : 2);
        for (int i = 0; i < 2; i++)
            take_text(cl[i], NULL);
    }
    ASSERT_EQ(fx.s.stats.slow_consumers - slow_before, 1);
    ASSERT(cl[2]->c->slow_consumer);
    ASSERT(!kr_conn_is_closing(cl[2]->c)); /* never closed inside the broadcast */
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 3);
    kr__conn_flush(cl[2]->c); /* the next flush closes it */
    ASSERT(kr_conn_is_closing(cl[2]->c));
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 2);
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(count, 2);
    fx_done(&fx);
}

/* ---- more: the hub's timer ---------------------------------------------------------------- */

static void stop_cb(uv_timer_t *t)
{
    KR_UNUSED(t);
}

/* Runs the loop for about ms milliseconds (the hub's timer alone does not keep it alive). */
static void run_for(fx_t *fx, uint64_t ms)
{
    uv_timer_t t;
    ASSERT_OK(uv_timer_init(&fx->loop, &t));
    ASSERT_OK(uv_timer_start(&t, stop_cb, ms, 0));
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
}

TEST(timer_keepalive_and_timeouts)
{
    fx_t fx;
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    o.keepalive_ms = 40;
    o.handshake_timeout_ms = 40;
    o.disconnect_timeout_ms = 40;
    o.client_timeout_ms = 60000;
    fx_init_app(&fx, &o, NULL, NULL);
    client_t *a = client_connect(&fx);
    client_t *h = client_new(&fx);
    client_negotiate(h);
    client_upgrade(h);
    client_t *n = client_new(&fx);
    client_negotiate(n);

    run_for(&fx, 200);
    /* Pings to the quiet connected client. */
    const char *t = take_text(a, NULL);
    size_t plen = strlen("{\"type\":6}" RS);
    ASSERT(strlen(t) >= plen);
    ASSERT_EQ(strlen(t) % plen, 0);
    for (size_t off = 0; off < strlen(t); off += plen)
        ASSERT(memcmp(t + off, "{\"type\":6}" RS, plen) == 0);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    /* The handshake never came. */
    expect_text_then_close(h, "{\"error\":\"Handshake was canceled.\"}" RS, 1000);
    /* The negotiated connection was never used: gone. */
    const char *r = http_exchange(&fx, upgrade_fmt, n->token);
    ASSERT_EQ(status_of(r), 404);
    fx_done(&fx);
}

TEST(timer_client_timeout)
{
    fx_t fx;
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    o.keepalive_ms = 60000;
    o.handshake_timeout_ms = 60000;
    o.disconnect_timeout_ms = 60000;
    o.client_timeout_ms = 50;
    fx_init_app(&fx, &o, NULL, NULL);
    client_t *a = client_connect(&fx);
    client_t *b = client_connect(&fx);
    send_text(a, "{\"type\":6}" RS); /* arms the client timeout */
    run_for(&fx, 200);
    expect_text_then_close(a, CLOSE_WITH_ERROR, 1000);
    EXPECT_NOTHING(b); /* never pinged: the timeout is not armed */
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    fx_done(&fx);
}

/* ---- more: app callbacks ----------------------------------------------------------------- */

typedef struct cb_s {
    enc_t welcome;
    int connected, disconnected, defer;
    unsigned count_in_connected;
    unsigned group_count_in_disconnected;
    char last_error[128];
    kr_sr_conn_t *pending[8];
    int npending;
} cb_t;

static kr_hub_t *cb_hub;

static void cb_connected(kr_hub_t *hub, kr_sr_conn_t *c, void *ud)
{
    cb_t *s = ud;
    ASSERT(hub == cb_hub);
    s->connected++;
    s->count_in_connected = kr_hub_connection_count(hub);
    ASSERT(kr_hub_find(hub, kr_sr_conn_id(c), strlen(kr_sr_conn_id(c))) == c);
    ASSERT_OK(kr_hub_group_add(hub, c, "all", 3));
    kr_sr_payload_t p = {test_encode, &s->welcome};
    ASSERT_OK(kr_sr_conn_send(c, &p));
}

static int cb_invoke(kr_hub_t *hub, kr_sr_conn_t *c, const kr_sr_msg_t *msg, void *ud)
{
    KR_UNUSED(hub);
    KR_UNUSED(ud);
    if (strcmp(msg->target, "Kill") != 0)
        return KR_ENOENT;
    kr_sr_conn_close(c, "killed", 1);
    kr_sr_conn_complete(c, msg->invocation_id, NULL, 0, NULL); /* too late: nothing is sent */
    return 0;
}

static int cb_disconnected(kr_hub_t *hub, kr_sr_conn_t *c, const char *error, void *ud)
{
    cb_t *s = ud;
    s->disconnected++;
    snprintf(s->last_error, sizeof(s->last_error), "%s", error ? error : "");
    ASSERT_NULL(kr_hub_find(hub, kr_sr_conn_id(c), strlen(kr_sr_conn_id(c))));
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    ASSERT_OK(kr_hub_send_group(hub, "all", 3, &p, &s->group_count_in_disconnected));
    if (!s->defer)
        return 0;
    kr_sr_conn_ref(c);
    s->pending[s->npending++] = c;
    return 1;
}

#define WELCOME "{\"type\":1,\"target\":\"Tick\",\"arguments\":[\"welcome\"]}" RS

TEST(app_callbacks)
{
    fx_t fx;
    cb_t st;
    memset(&st, 0, sizeof(st));
    st.welcome.text = "[\"welcome\"]";
    st.defer = 1;
    kr_hub_app_t app = {
        .invoke = cb_invoke, .connected = cb_connected, .disconnected = cb_disconnected};
    fx_init_app(&fx, NULL, &app, &st);
    cb_hub = fx.hub;
    client_t *cl[3];
    for (int i = 0; i < 3; i++) {
        cl[i] = client_new(&fx);
        client_negotiate(cl[i]);
        client_upgrade(cl[i]);
        send_text(cl[i], HANDSHAKE);
        /* The handshake answer comes first, then what the app sent from connected. */
        EXPECT_TEXT(cl[i], "{}" RS WELCOME);
        ASSERT_EQ(st.count_in_connected, (unsigned)i + 1);
    }
    ASSERT_EQ(st.connected, 3);

    /* The app closes the connection from inside an invocation: the record behind it in the
     * same frame is not run. */
    send_text(cl[0],
              "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Kill\",\"arguments\":[]}" RS
              "{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"no\"]}" RS);
    expect_text_then_close(cl[0], "{\"type\":7,\"error\":\"killed\",\"allowReconnect\":true}" RS,
                           1000);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 2);
    ASSERT_EQ(st.disconnected, 0); /* until the transport ends */
    uint8_t close_payload[2] = {0x03, 0xe8};
    send_frame(cl[0], FIN | KR_WS_OP_CLOSE, close_payload, 2);
    ASSERT_EQ(st.disconnected, 1);
    ASSERT_STR_EQ(st.last_error, "killed");
    ASSERT_EQ(st.group_count_in_disconnected, 2); /* the leaving one is skipped */
    EXPECT_TEXT(cl[1], TICK);
    EXPECT_TEXT(cl[2], TICK);
    /* Deferred: still out of the index and of every send. */
    enc_t e = {0};
    kr_sr_payload_t p = {test_encode, &e};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_group(fx.hub, "all", 3, &p, &count));
    ASSERT_EQ(count, 2);
    take_text(cl[1], NULL);
    take_text(cl[2], NULL);
    kr_sr_conn_disconnected_done(st.pending[0]);
    kr_sr_conn_disconnected_done(st.pending[0]); /* once only */
    kr_sr_conn_unref(st.pending[0]);
    ASSERT_OK(kr_hub_send_group(fx.hub, "all", 3, &p, &count));
    ASSERT_EQ(count, 2);
    take_text(cl[1], NULL);
    take_text(cl[2], NULL);

    /* A transport that drops: an error for the app; still pending when the hub goes. */
    kr_conn_close(cl[1]->c, NULL);
    ASSERT_EQ(st.disconnected, 2);
    ASSERT_STR_EQ(st.last_error, "the WebSocket closed abruptly");
    ASSERT_EQ(st.group_count_in_disconnected, 1);
    EXPECT_TEXT(cl[2], TICK);

    fx_close_conns(&fx);
    ASSERT_EQ(st.disconnected, 3);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    kr_hub_free(fx.hub);
    fx.hub = NULL;
    /* The app finishes after the hub is gone: nothing is touched but the connection. */
    for (int i = 1; i < st.npending; i++) {
        ASSERT(!kr_sr_conn_is_open(st.pending[i]));
        kr_sr_conn_disconnected_done(st.pending[i]);
        kr_sr_conn_unref(st.pending[i]);
    }
    fx_settle(&fx);
}

/* ---- more: options ----------------------------------------------------------------------- */

TEST(options)
{
    /* No WebSockets: negotiate lists nothing, upgrades are refused. */
    fx_t fx;
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    o.transports = 0;
    fx_init_app(&fx, &o, NULL, NULL);
    cJSON *j = negotiate_json(&fx, "?negotiateVersion=1");
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "availableTransports")), 0);
    const char *r = http_exchange(&fx, upgrade_fmt, json_str(j, "connectionToken"));
    ASSERT_EQ(status_of(r), 404);
    ASSERT_STR_EQ(body_of(r), "WebSockets transport is not enabled");
    cJSON_Delete(j);
    /* Hot reload of the options. */
    kr_hub_opts_default(&o);
    kr_hub_set_opts(fx.hub, &o);
    ASSERT_EQ(kr_hub_opts(fx.hub)->transports,
              KR_SR_TRANSPORT_WS | KR_SR_TRANSPORT_SSE | KR_SR_TRANSPORT_LP);
    client_t *a = client_connect(&fx);
    KR_UNUSED(a);
    fx_done(&fx);

    /* No JSON protocol. */
    kr_hub_opts_default(&o);
    o.protocols = 0;
    fx_init_app(&fx, &o, NULL, NULL);
    client_t *b = client_new(&fx);
    client_negotiate(b);
    client_upgrade(b);
    send_text(b, HANDSHAKE);
    expect_text_then_close(b, "{\"error\":\"The protocol 'json' is not supported.\"}" RS, 1000);
    fx_done(&fx);

    /* Detailed errors. */
    kr_hub_opts_default(&o);
    o.detailed_errors = 1;
    fx_init_app(&fx, &o, NULL, NULL);
    client_t *c = client_connect(&fx);
    invoke(c, "1", "Echo", "[1]");
    EXPECT_TEXT(c, "{\"type\":3,\"invocationId\":\"1\",\"error\":\"Failed to invoke 'Echo' due to "
                   "an error on the server. InvalidDataException: the method expects one string "
                   "argument.\"}" RS);
    send_text(c, "{\"type\":1,\"target\":5}" RS);
    expect_text_then_close(c,
                           "{\"type\":7,\"error\":\"Connection closed with an error. "
                           "InvalidDataException: \\\"target\\\" is not a string\","
                           "\"allowReconnect\":true}" RS,
                           1000);
    fx_done(&fx);
}

/* ---- streams and client results in flight (kr_sr_calls.c) -------------------------------- */

typedef struct calls_app_s {
    kr_sr_conn_t *held;      /* the invocation taken and not completed */
    char held_id[32];
    char streams[4][32];     /* the stream ids it named */
    unsigned nstreams;
    int cancels;             /* server-stream cancel callbacks */
    int results;             /* client-result callbacks */
    char result_text[256];   /* the result (JSON) or "error: ..." */
} calls_app_t;

static int calls_invoke(kr_hub_t *hub, kr_sr_conn_t *c, const kr_sr_msg_t *m, void *ud)
{
    calls_app_t *a = ud;
    KR_UNUSED(hub);
    if (strcmp(m->target, "Upload") == 0) {
        a->held = c;
        kr_sr_conn_ref(c);
        snprintf(a->held_id, sizeof(a->held_id), "%s", m->invocation_id ? m->invocation_id : "");
        a->nstreams = m->nstream_ids;
        for (unsigned i = 0; i < m->nstream_ids && i < 4; i++)
            snprintf(a->streams[i], sizeof(a->streams[i]), "%s", m->stream_ids[i]);
        return 0;
    }
    if (strcmp(m->target, "Ticks") == 0 && m->type == KR_SR_STREAM_INVOCATION) {
        ASSERT_OK(kr_sr_stream_begin(c, m->invocation_id, NULL, NULL));
        return 0;
    }
    return KR_ENOENT;
}

static void count_cancel(kr_sr_conn_t *c, void *ud)
{
    KR_UNUSED(c);
    ((calls_app_t *)ud)->cancels++;
}

static void take_result(kr_sr_conn_t *c, const kr_sr_msg_t *m, const char *error, void *ud)
{
    calls_app_t *a = ud;
    KR_UNUSED(c);
    a->results++;
    if (error) {
        snprintf(a->result_text, sizeof(a->result_text), "error: %s", error);
        return;
    }
    char *t = m->has_result ? cJSON_PrintUnformatted(m->result) : NULL;
    snprintf(a->result_text, sizeof(a->result_text), "%s", t ? t : "(none)");
    cJSON_free(t);
}

static void stream_item(client_t *cl, const char *id, const char *item)
{
    char m[256];
    snprintf(m, sizeof(m), "{\"type\":2,\"invocationId\":\"%s\",\"item\":%s}" RS, id, item);
    send_text(cl, m);
}

/* Takes the next item of upload u as JSON text ("(end)", "(end: error)" or "(none)"). */
static const char *upload_take(kr_sr_upload_t *u)
{
    static char out[128];
    kr_sr_msg_t item;
    const char *error = NULL;
    int rc = kr_sr_upload_next(u, &item, &error);
    if (rc == 0)
        return "(none)";
    if (rc < 0) {
        snprintf(out, sizeof(out), error ? "(end: %s)" : "(end)", error);
        return out;
    }
    char *t = cJSON_PrintUnformatted(item.item);
    snprintf(out, sizeof(out), "%s", t);
    cJSON_free(t);
    kr_sr_msg_dispose(&item);
    return out;
}

static int woken;
static void on_woken(void *ud)
{
    KR_UNUSED(ud);
    woken++;
}

TEST(upload_streams)
{
    fx_t fx;
    calls_app_t a = {0};
    kr_hub_app_t app = {.invoke = calls_invoke};
    kr_hub_opts_t opts;
    kr_hub_opts_default(&opts);
    opts.stream_buffer_capacity = 3;
    fx_init_app(&fx, &opts, &app, &a);
    client_t *cl = client_connect(&fx);

    send_text(cl, "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Upload\",\"arguments\":[],"
                  "\"streamIds\":[\"1\",\"2\"]}" RS);
    ASSERT_EQ(a.nstreams, 2);
    kr_sr_upload_t *u1 = kr_sr_upload_find(a.held, "1");
    kr_sr_upload_t *u2 = kr_sr_upload_find(a.held, "2");
    ASSERT_NOT_NULL(u1);
    ASSERT_NOT_NULL(u2);
    ASSERT_STR_EQ(upload_take(u1), "(none)");
    woken = 0;
    kr_sr_upload_wait(u1, on_woken, &a);
    stream_item(cl, "1", "10");
    ASSERT_EQ(woken, 1); /* once per wait */
    stream_item(cl, "1", "null");
    ASSERT_EQ(woken, 1);
    stream_item(cl, "9", "\"unknown id: ignored\"");
    ASSERT_STR_EQ(upload_take(u1), "10");
    ASSERT_STR_EQ(upload_take(u1), "null");
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);

    /* Capacity: a full buffer stops reading; taking an item resumes it at the next turn. */
    stream_item(cl, "2", "1");
    stream_item(cl, "2", "2");
    ASSERT_EQ(cl->c->want_read, 1);
    stream_item(cl, "2", "3");
    ASSERT_EQ(cl->c->want_read, 0);
    ASSERT_STR_EQ(upload_take(u2), "1");
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    ASSERT_EQ(cl->c->want_read, 1);
    ASSERT_STR_EQ(upload_take(u2), "2");
    stream_item(cl, "2", "4");
    ASSERT_STR_EQ(upload_take(u2), "3");
    ASSERT_STR_EQ(upload_take(u2), "4");

    /* Completion, with and without an error; items after it are ignored. */
    send_text(cl, "{\"type\":3,\"invocationId\":\"1\"}" RS
                  "{\"type\":3,\"invocationId\":\"2\",\"error\":\"client gave up\"}" RS);
    stream_item(cl, "1", "99");
    ASSERT_STR_EQ(upload_take(u1), "(end)");
    ASSERT_STR_EQ(upload_take(u2), "(end: client gave up)");

    /* A stream id still open cannot be reused by another invocation. */
    send_text(cl, "{\"type\":1,\"invocationId\":\"5\",\"target\":\"Upload\",\"arguments\":[],"
                  "\"streamIds\":[\"1\"]}" RS);
    EXPECT_TEXT(cl, "{\"type\":3,\"invocationId\":\"5\",\"error\":\"Invocation ID '1' is "
                    "already in use.\"}" RS);
    kr_sr_upload_close(u1);
    kr_sr_upload_close(u2);
    ASSERT_NULL(kr_sr_upload_find(a.held, "1"));
    kr_sr_conn_complete(a.held, a.held_id, "7", 1, NULL);
    EXPECT_TEXT(cl, "{\"type\":3,\"invocationId\":\"0\",\"result\":7}" RS);

    /* An unknown method closes the streams it named; the connection ending ends open ones. */
    send_text(cl, "{\"type\":1,\"invocationId\":\"6\",\"target\":\"Nope\",\"arguments\":[],"
                  "\"streamIds\":[\"3\"]}" RS);
    EXPECT_TEXT(cl, "{\"type\":3,\"invocationId\":\"6\",\"error\":\"Unknown hub method "
                    "'Nope'\"}" RS);
    ASSERT_NULL(kr_sr_upload_find(a.held, "3"));
    kr_sr_conn_t *held = a.held;
    send_text(cl, "{\"type\":1,\"invocationId\":\"7\",\"target\":\"Upload\",\"arguments\":[],"
                  "\"streamIds\":[\"4\"]}" RS);
    ASSERT(a.held == held);
    kr_sr_conn_unref(held); /* the second Upload took another reference */
    kr_sr_upload_t *u4 = kr_sr_upload_find(held, "4");
    ASSERT_NOT_NULL(u4);
    woken = 0;
    kr_sr_upload_wait(u4, on_woken, &a);
    kr_conn_close(cl->c, NULL);
    ASSERT_EQ(woken, 1);
    ASSERT_STR_EQ(upload_take(u4), "(end: The connection closed before the stream completed.)");
    kr_sr_upload_close(u4);
    kr_sr_conn_unref(held);
    fx_done(&fx);
}

TEST(server_stream_cancel)
{
    fx_t fx;
    calls_app_t a = {0};
    kr_hub_app_t app = {.invoke = calls_invoke};
    fx_init_app(&fx, NULL, &app, &a);
    client_t *cl = client_connect(&fx);
    kr_sr_conn_t *c = sr_of(cl);

    ASSERT_OK(kr_sr_stream_begin(c, "s1", count_cancel, &a));
    ASSERT_EQ(kr_sr_stream_begin(c, "s1", count_cancel, &a), KR_EEXIST);
    ASSERT_OK(kr_sr_stream_begin(c, "s2", count_cancel, &a));
    send_text(cl, "{\"type\":5,\"invocationId\":\"s1\"}" RS);
    ASSERT_EQ(a.cancels, 1);
    send_text(cl, "{\"type\":5,\"invocationId\":\"s1\"}" RS); /* already gone: ignored */
    ASSERT_EQ(a.cancels, 1);
    kr_sr_stream_end(c, "s2");
    send_text(cl, "{\"type\":5,\"invocationId\":\"s2\"}" RS);
    ASSERT_EQ(a.cancels, 1);
    EXPECT_NOTHING(cl);

    /* Streaming invocations run beside a busy one-at-a-time invocation. */
    send_text(cl, "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Upload\",\"arguments\":[]}" RS);
    send_text(cl,
              "{\"type\":4,\"invocationId\":\"1\",\"target\":\"Ticks\",\"arguments\":[]}" RS);
    ASSERT_EQ(kr_sr_stream_begin(c, "1", NULL, NULL), KR_EEXIST); /* the app took it */
    /* A plain method called as a stream (the built-in Echo) is refused. */
    send_text(cl, "{\"type\":4,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"x\"]}" RS);
    EXPECT_TEXT(cl, "{\"type\":3,\"invocationId\":\"2\",\"error\":\"The client attempted to "
                    "invoke the non-streaming 'Echo' method with a streaming invocation.\"}" RS);

    ASSERT_OK(kr_sr_stream_begin(c, "s3", count_cancel, &a));
    kr_conn_close(cl->c, NULL); /* the connection ending cancels what runs */
    ASSERT_EQ(a.cancels, 2);
    ASSERT_EQ(kr_sr_stream_begin(c, "s4", count_cancel, &a), KR_ECLOSED);
    kr_sr_conn_complete(a.held, a.held_id, NULL, 0, NULL);
    kr_sr_conn_unref(a.held);
    fx_done(&fx);
}

/* Sends Invocation(id, "GetName") to the client the way the Lua layer does. */
static void ask_client(kr_sr_conn_t *c, const char *id)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 64);
    kr_sr_json_write_invocation_head(&sb, id, "GetName");
    kr_sbuf_puts(&sb, "[]");
    kr_sr_json_write_tail(&sb);
    ASSERT_OK(kr_sr_conn_send_encoded(c, &sb, 1));
}

TEST(client_results)
{
    fx_t fx;
    calls_app_t a = {0};
    kr_hub_app_t app = {.invoke = calls_invoke};
    kr_hub_opts_t opts;
    kr_hub_opts_default(&opts);
    opts.max_queued_invocations = 1;
    fx_init_app(&fx, &opts, &app, &a);
    client_t *cl = client_connect(&fx);
    kr_sr_conn_t *c = sr_of(cl);
    char id[24], id2[24];

    /* A hub method (busy) asks its caller for a result. */
    send_text(cl, "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Upload\",\"arguments\":[]}" RS);
    ASSERT_EQ(cl->c->want_read, 1);
    ASSERT_OK(kr_sr_result_expect(c, id, 30000, take_result, &a));
    ASSERT_EQ(cl->c->want_read, 1);
    ASSERT_STR_EQ(id, "s1");
    ask_client(c, id);
    EXPECT_TEXT(cl, "{\"type\":1,\"invocationId\":\"s1\",\"target\":\"GetName\",\"arguments\":[]}" RS);
    /* The queue fills (one waiting), yet reading goes on for the Completion; a further
     * invocation is refused rather than queued without bound. */
    send_text(cl, "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"q\"]}" RS
                  "{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"r\"]}" RS);
    ASSERT_EQ(cl->c->want_read, 1);
    EXPECT_TEXT(cl, "{\"type\":3,\"invocationId\":\"2\",\"error\":\"Failed to invoke 'Echo': too "
                    "many invocations are waiting for this connection.\"}" RS);
    send_text(cl, "{\"type\":3,\"invocationId\":\"s1\",\"result\":{\"name\":\"bob\"}}" RS);
    ASSERT_EQ(a.results, 1);
    ASSERT_STR_EQ(a.result_text, "{\"name\":\"bob\"}");
    ASSERT_EQ(cl->c->want_read, 0); /* nothing awaited now, and the queue is full */
    kr_sr_conn_complete(a.held, a.held_id, NULL, 0, NULL);
    EXPECT_TEXT(cl, VOID_COMPLETION("0") ECHOED("q") VOID_COMPLETION("1"));
    kr_sr_conn_unref(a.held);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    ASSERT_EQ(cl->c->want_read, 1);

    /* The client's error; a late second Completion for the same id is ignored. */
    ASSERT_OK(kr_sr_result_expect(c, id, 30000, take_result, &a));
    send_text(cl, "{\"type\":3,\"invocationId\":\"s2\",\"error\":\"Client didn't provide a "
                  "result.\"}" RS
                  "{\"type\":3,\"invocationId\":\"s2\",\"result\":1}" RS);
    ASSERT_EQ(a.results, 2);
    ASSERT_STR_EQ(a.result_text, "error: Client didn't provide a result.");

    /* Forgotten (the waiter went away): no callback. Timed out: the error. */
    ASSERT_OK(kr_sr_result_expect(c, id, 30000, take_result, &a));
    kr_sr_result_forget(c, id);
    send_text(cl, "{\"type\":3,\"invocationId\":\"s3\",\"result\":1}" RS);
    ASSERT_EQ(a.results, 2);
    ASSERT_OK(kr_sr_result_expect(c, id, 50, take_result, &a));
    run_for(&fx, 1200); /* the hub's tick checks deadlines at least every second */
    ASSERT_EQ(a.results, 3);
    ASSERT_STR_EQ(a.result_text, "error: Timed out waiting for the client's result.");

    /* The connection ending fails what is awaited; a closed connection refuses new ones. */
    ASSERT_OK(kr_sr_result_expect(c, id, 30000, take_result, &a));
    ASSERT_OK(kr_sr_result_expect(c, id2, 30000, take_result, &a));
    kr_sr_conn_ref(c);
    kr_conn_close(cl->c, NULL);
    ASSERT_EQ(a.results, 5);
    ASSERT_STR_EQ(a.result_text,
                  "error: The connection closed before the client returned a result.");
    ASSERT_EQ(kr_sr_result_expect(c, id, 30000, take_result, &a), KR_ECLOSED);
    kr_sr_conn_unref(c);
    fx_done(&fx);
}

/* ---- stateful reconnect ------------------------------------------------------------------- */

static int tick_n;
static int encode_tick_n(void *ud, int protocol, kr_sbuf_t *sb)
{
    KR_UNUSED(ud);
    KR_UNUSED(protocol);
    kr_sr_json_write_invocation_head(sb, NULL, "T");
    kr_sbuf_printf(sb, "[%d]", ++tick_n);
    kr_sr_json_write_tail(sb);
    return 0;
}

#define T_MSG(n) "{\"type\":1,\"target\":\"T\",\"arguments\":[" #n "]}" RS

TEST(stateful_reconnect)
{
    fx_t fx;
    kr_hub_opts_t opts;
    kr_hub_opts_default(&opts);
    opts.stateful_buffer_bytes = 200; /* about four T messages */
    fx_init_app(&fx, &opts, NULL, NULL);

    /* Offered only to a client that asks. */
    cJSON *j = negotiate_json(&fx, "?negotiateVersion=1");
    ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(j, "useStatefulReconnect"));
    cJSON_Delete(j);
    client_t *cl = client_new(&fx);
    j = negotiate_json(&fx, "?negotiateVersion=1&useStatefulReconnect=true");
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "useStatefulReconnect")));
    snprintf(cl->id, sizeof(cl->id), "%s", json_str(j, "connectionId"));
    snprintf(cl->token, sizeof(cl->token), "%s", json_str(j, "connectionToken"));
    cJSON_Delete(j);
    client_upgrade(cl);
    send_text(cl, "{\"protocol\":\"json\",\"version\":2}" RS);
    EXPECT_TEXT(cl, "{}" RS);

    kr_sr_payload_t p = {encode_tick_n, NULL};
    tick_n = 0;
    for (int i = 0; i < 3; i++)
        ASSERT_OK(kr_hub_send_all(fx.hub, &p, NULL));
    EXPECT_TEXT(cl, T_MSG(1) T_MSG(2) T_MSG(3));
    send_text(cl, "{\"type\":8,\"sequenceId\":1}" RS); /* 1 acknowledged: 2 and 3 kept */

    /* The socket drops without a close: the logical connection waits. */
    kr_conn_close(cl->c, NULL);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    for (int i = 0; i < 4; i++) /* 4..7: 4 and 5 fit in the buffer, 6 and 7 wait */
        ASSERT_OK(kr_hub_send_all(fx.hub, &p, NULL));

    /* Back on a new socket, no handshake: Sequence(2), then everything unacknowledged. */
    client_reattach(cl);
    EXPECT_TEXT(cl, "{\"type\":9,\"sequenceId\":2}" RS T_MSG(2) T_MSG(3) T_MSG(4) T_MSG(5));
    send_text(cl, "{\"type\":8,\"sequenceId\":5}" RS); /* room again: 6 and 7 go out */
    EXPECT_TEXT(cl, T_MSG(6) T_MSG(7));

    /* The client replays too: Sequence, then messages; those already processed are dropped. */
    send_text(cl, "{\"type\":1,\"invocationId\":\"a\",\"target\":\"Echo\",\"arguments\":[\"1\"]}" RS);
    EXPECT_TEXT(cl, ECHOED("1") VOID_COMPLETION("a"));
    kr_conn_close(cl->c, NULL);
    client_reattach(cl);
    EXPECT_TEXT(cl, "{\"type\":9,\"sequenceId\":6}" RS T_MSG(6) T_MSG(7) ECHOED("1")
                        VOID_COMPLETION("a"));
    send_text(cl, "{\"type\":9,\"sequenceId\":1}" RS "{\"type\":8,\"sequenceId\":9}" RS
                  "{\"type\":1,\"invocationId\":\"a\",\"target\":\"Echo\",\"arguments\":[\"1\"]}" RS
                  "{\"type\":1,\"invocationId\":\"b\",\"target\":\"Echo\",\"arguments\":[\"2\"]}" RS);
    EXPECT_TEXT(cl, ECHOED("2") VOID_COMPLETION("b"));
    /* A Sequence beyond what was received is a protocol error. */
    send_text(cl, "{\"type\":9,\"sequenceId\":9}" RS);
    ws_frame_t f[8];
    unsigned n = take_frames(cl->c, f, 8);
    ASSERT(n >= 2);
    ASSERT_EQ(f[n - 1].opcode, KR_WS_OP_CLOSE);
    fx_done(&fx);
}

TEST(stateful_reconnect_timeout)
{
    fx_t fx;
    kr_hub_opts_t opts;
    kr_hub_opts_default(&opts);
    opts.disconnect_timeout_ms = 100;
    fx_init_app(&fx, &opts, NULL, NULL);
    client_t *cl = client_new(&fx);
    cJSON *j = negotiate_json(&fx, "?negotiateVersion=1&useStatefulReconnect=true");
    snprintf(cl->id, sizeof(cl->id), "%s", json_str(j, "connectionId"));
    snprintf(cl->token, sizeof(cl->token), "%s", json_str(j, "connectionToken"));
    cJSON_Delete(j);
    client_upgrade(cl);
    send_text(cl, "{\"protocol\":\"json\",\"version\":2}" RS);
    EXPECT_TEXT(cl, "{}" RS);
    kr_conn_close(cl->c, NULL);
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 1);
    run_for(&fx, 1300); /* the tick runs at least once a second */
    ASSERT_EQ(kr_hub_connection_count(fx.hub), 0);
    ASSERT_NULL(kr_hub_find(fx.hub, cl->id, strlen(cl->id)));

    /* Stateful reconnect switched off on the hub: never offered. */
    kr_hub_opts_t off = opts;
    off.stateful_reconnect = 0;
    kr_hub_set_opts(fx.hub, &off);
    j = negotiate_json(&fx, "?negotiateVersion=1&useStatefulReconnect=true");
    ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(j, "useStatefulReconnect"));
    cJSON_Delete(j);
    fx_done(&fx);
}

/* A MessagePack client announcing a record larger than max_message_bytes is refused as soon as
 * the length prefix arrives, not after buffering what it announced. */
TEST(msgpack_oversize_prefix)
{
    fx_t fx;
    fx_init(&fx);
    client_t *cl = client_new(&fx);
    client_negotiate(cl);
    client_upgrade(cl);
    send_text(cl, "{\"protocol\":\"messagepack\",\"version\":1}" RS);
    ws_frame_t f[8];
    unsigned n = take_frames(cl->c, f, 8);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_BINARY); /* the JSON handshake reply, in a binary frame */
    ASSERT_EQ(f[0].len, 3);
    ASSERT_EQ(memcmp(f[0].payload, "{}" RS, 3), 0);
    /* Ping ([6]) works; then VarInt 1,000,000 followed by 3 bytes of an array. */
    const uint8_t ping[] = {0x02, 0x91, 0x06};
    send_frame(cl, FIN | KR_WS_OP_BINARY, ping, sizeof(ping));
    EXPECT_NOTHING(cl);
    const uint8_t big[] = {0xc0, 0x84, 0x3d, 0x96, 0x01, 0x80};
    send_frame(cl, FIN | KR_WS_OP_BINARY, big, sizeof(big));
    n = take_frames(cl->c, f, 8);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_BINARY);
    /* [7, "Connection closed with an error.", true], framed */
    static const char close_msg[] = "\x25\x93\x07\xd9\x20" "Connection closed with an error.\xc3";
    ASSERT_EQ(f[0].len, sizeof(close_msg) - 1);
    ASSERT_EQ(memcmp(f[0].payload, close_msg, f[0].len), 0);
    ASSERT_EQ(f[1].opcode, KR_WS_OP_CLOSE);
    fx_done(&fx);
}

/* One broadcast to JSON and MessagePack clients on every transport is encoded once per
 * protocol and wrapped once per wire format, whatever the number of recipients. */
typedef struct wire_enc_s {
    int calls[3];
} wire_enc_t;

static int encode_both(void *ud, int protocol, kr_sbuf_t *sb)
{
    wire_enc_t *w = ud;
    w->calls[protocol]++;
    if (protocol == KR_SR_PROTO_MSGPACK) {
        size_t start = kr_sr_mp_write_invocation_head(sb, NULL, "Tick");
        kr_mp_put_array(sb, 1);
        kr_mp_put_int(sb, 42);
        kr_sr_mp_write_invocation_tail(sb, start);
        return 0;
    }
    kr_sr_json_write_invocation_head(sb, NULL, "Tick");
    kr_sbuf_puts(sb, "[42]");
    kr_sr_json_write_tail(sb);
    return 0;
}

static client_t *client_connect_protocol(fx_t *fx, const char *protocol)
{
    client_t *cl = client_new(fx);
    client_negotiate(cl);
    client_upgrade(cl);
    char hs[96];
    snprintf(hs, sizeof(hs), "{\"protocol\":\"%s\",\"version\":1}" RS, protocol);
    send_text(cl, hs);
    ws_frame_t f[4];
    ASSERT_EQ(take_frames(cl->c, f, 4), 1);
    return cl;
}

TEST(broadcast_encodes_once_per_wire)
{
    fx_t fx;
    fx_init(&fx);
    client_t *json[3], *mp[3];
    for (int i = 0; i < 3; i++) {
        json[i] = client_connect_protocol(&fx, "json");
        mp[i] = client_connect_protocol(&fx, "messagepack");
    }
    wire_enc_t w = {{0}};
    kr_sr_payload_t p = {encode_both, &w};
    unsigned count = 0;
    ASSERT_OK(kr_hub_send_all(fx.hub, &p, &count));
    ASSERT_EQ(count, 6);
    ASSERT_EQ(w.calls[KR_SR_PROTO_JSON], 1);
    ASSERT_EQ(w.calls[KR_SR_PROTO_MSGPACK], 1);
    /* The same frame buffer is queued on every client of a wire format. */
    for (int i = 1; i < 3; i++) {
        ASSERT(outq_item(&json[i]->c->outq, 0)->buf == outq_item(&json[0]->c->outq, 0)->buf);
        ASSERT(outq_item(&mp[i]->c->outq, 0)->buf == outq_item(&mp[0]->c->outq, 0)->buf);
    }
    ASSERT(outq_item(&json[0]->c->outq, 0)->buf != outq_item(&mp[0]->c->outq, 0)->buf);
    ws_frame_t f[4];
    ASSERT_EQ(take_frames(mp[0]->c, f, 4), 1);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_BINARY);
    ASSERT_EQ(take_frames(json[0]->c, f, 4), 1);
    ASSERT_EQ(f[0].opcode, KR_WS_OP_TEXT);
    fx_done(&fx);
}

KR_TEST_MAIN(KR_TEST_ENTRY(negotiate), KR_TEST_ENTRY(upgrade_errors), KR_TEST_ENTRY(handshake),
             KR_TEST_ENTRY(builtins), KR_TEST_ENTRY(builtins_disabled),
             KR_TEST_ENTRY(broadcast_all_shares_one_buffer),
             KR_TEST_ENTRY(broadcast_group_to_and_errors),
             KR_TEST_ENTRY(records_across_and_within_frames), KR_TEST_ENTRY(oversize_message),
             KR_TEST_ENTRY(disconnect_leaves_groups), KR_TEST_ENTRY(invocation_order),
             KR_TEST_ENTRY(invocation_queue_backpressure), KR_TEST_ENTRY(shutdown),
             KR_TEST_ENTRY(free_with_live_connections), KR_TEST_ENTRY(overlong_id_is_unknown),
             KR_TEST_ENTRY(skip_negotiation), KR_TEST_ENTRY(binary_frame_after_json_handshake),
             KR_TEST_ENTRY(binary_handshake_is_answered),
             KR_TEST_ENTRY(stream_invocation_and_group_limits), KR_TEST_ENTRY(groups_against_model),
             KR_TEST_ENTRY(slow_consumer_in_broadcast), KR_TEST_ENTRY(timer_keepalive_and_timeouts),
             KR_TEST_ENTRY(timer_client_timeout), KR_TEST_ENTRY(app_callbacks),
             KR_TEST_ENTRY(options), KR_TEST_ENTRY(upload_streams),
             KR_TEST_ENTRY(server_stream_cancel), KR_TEST_ENTRY(client_results),
             KR_TEST_ENTRY(stateful_reconnect), KR_TEST_ENTRY(stateful_reconnect_timeout),
             KR_TEST_ENTRY(msgpack_oversize_prefix),
             KR_TEST_ENTRY(broadcast_encodes_once_per_wire))
