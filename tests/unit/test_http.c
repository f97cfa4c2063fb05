/* test_http.c: unit tests for core/kr_http.c driven without sockets.
 *
 * Each test makes a server on its own loop (never started: no listener, sweep or check hook),
 * opens a detached connection (kr__conn_new_detached), feeds it request bytes with
 * kr__conn_feed and reads what the connection queued from c->outq. Covered: request parsing
 * (method, decoded path, query, headers, Content-Length and chunked bodies), keep-alive and
 * pipelining (including a handler that answers later), byte-at-a-time input, HEAD and
 * bodiless statuses, Connection handling for HTTP/1.1 and 1.0, protocol errors and limits
 * (400/413/414/431, the handler never called), the counters, and the streaming writer
 * (fixed length and chunked, and answering after the connection closed).
 * Header and keep-alive timeouts need the server's sweep timer and are tested end-to-end.
 */
#include "kr_conn.h"
#include "kr_http.h"
#include "kr_router.h"
#include "kr_server.h"

#include "kr_test.h"
#include "conn_output.h"

extern const kr_conn_proto_t kr_http_proto;

/* ---- recording handler ------------------------------------------------------------------ */

#define MAX_REC 8

typedef struct rec_s {
    char method[16];
    unsigned method_bit;
    char target[1024];
    char path[1024];
    size_t path_len;
    char query[512];
    char headers[2048]; /* "name=value\n" per header, in order */
    unsigned nheaders;
    char body[4096];
    size_t body_len;
    int has_body;
    int http_minor, keep_alive;
} rec_t;

static rec_t recs[MAX_REC];
static int ncalls;
static int defer_mode; /* the handler keeps the request (deferred[]) instead of answering */
static kr_http_req_t *deferred[MAX_REC];
static int ndeferred;

static void record(const kr_http_req_t *req)
{
    ASSERT(ncalls < MAX_REC);
    rec_t *r = &recs[ncalls++];
    memset(r, 0, sizeof(*r));
    snprintf(r->method, sizeof(r->method), "%s", req->method_name);
    r->method_bit = req->method;
    snprintf(r->target, sizeof(r->target), "%s", req->target);
    ASSERT(req->path_len < sizeof(r->path));
    memcpy(r->path, req->path, req->path_len);
    ASSERT_EQ(req->path[req->path_len], '\0');
    r->path_len = req->path_len;
    ASSERT_NOT_NULL(req->query);
    snprintf(r->query, sizeof(r->query), "%s", req->query);
    size_t o = 0;
    for (unsigned i = 0; i < req->nheaders; i++) {
        const kr_http_header_t *h = &req->headers[i];
        ASSERT_EQ(strlen(h->name), h->name_len);
        ASSERT_EQ(strlen(h->value), h->value_len);
        o += (size_t)snprintf(r->headers + o, sizeof(r->headers) - o, "%s=%s\n", h->name, h->value);
        ASSERT(o < sizeof(r->headers));
    }
    r->nheaders = req->nheaders;
    if (req->body) {
        ASSERT(req->body->len <= sizeof(r->body));
        memcpy(r->body, req->body->data, req->body->len);
        r->body_len = req->body->len;
        r->has_body = 1;
    }
    r->http_minor = req->http_minor;
    r->keep_alive = req->keep_alive;
}

/* Records the request, then answers 200 with the decoded path as the body, or with status
 * NNN for a path "/s/NNN", unless defer_mode is set. */
static void handler(kr_http_req_t *req, void *ud)
{
    KR_UNUSED(ud);
    record(req);
    if (defer_mode) {
        ASSERT(ndeferred < MAX_REC);
        kr_http_req_ref(req);
        deferred[ndeferred++] = req;
        return;
    }
    int status = 200;
    if (strncmp(req->path, "/s/", 3) == 0)
        status = atoi(req->path + 3);
    ASSERT_OK(kr_http_respond_text(req, status, "text/plain", req->path, req->path_len));
}

/* ---- fixture ---------------------------------------------------------------------------- */

typedef struct fx_s {
    uv_loop_t loop;
    kr_server_t s;
    kr_conn_t *c;
} fx_t;

static kr_conn_t *new_conn(fx_t *fx)
{
    kr_conn_t *c = kr__conn_new_detached(&fx->s, &kr_http_proto);
    ASSERT_NOT_NULL(c);
    kr_conn_ref(c);
    return c;
}

static void fx_init(fx_t *fx)
{
    memset(fx, 0, sizeof(*fx));
    ASSERT_OK(uv_loop_init(&fx->loop));
    kr_server_init(&fx->s, &fx->loop);
    fx->s.handler = handler;
    fx->c = new_conn(fx);
}

static void close_conn(kr_conn_t *c)
{
    kr_conn_close(c, NULL);
    kr_conn_unref(c);
}

static void fx_done(fx_t *fx)
{
    for (int i = 0; i < ndeferred; i++) {
        if (deferred[i])
            kr_http_req_unref(deferred[i]);
        deferred[i] = NULL;
    }
    close_conn(fx->c);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&fx->loop), 0);
}

static void feed_conn(kr_conn_t *c, const char *s)
{
    size_t n = strlen(s);
    ASSERT_EQ(kr__conn_feed(c, s, n), n);
}

static void feed(fx_t *fx, const char *s)
{
    feed_conn(fx->c, s);
}

/* Everything queued on c, NUL-terminated, in a static buffer (not consumed). */
static const char *output_of(kr_conn_t *c, size_t *lenp)
{
    static char out[256 * 1024];
    size_t len = conn_output(c, out, sizeof(out));
    if (lenp)
        *lenp = len;
    return out;
}

static const char *output(fx_t *fx)
{
    return output_of(fx->c, NULL);
}

/* Drops what was queued so the next checks see only new output. */
static void drop_output(kr_conn_t *c)
{
    kr_outq_consume(&c->outq, c->outq.bytes);
}

static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + nl, needle))
        n++;
    return n;
}

#define ASSERT_CONTAINS(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (strstr(h_, n_) == NULL)                                                                \
            KR_TEST_FAIL("expected \"%s\" in:\n%s", n_, h_);                                       \
    } while (0)

#define ASSERT_NOT_CONTAINS(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (strstr(h_, n_) != NULL)                                                                \
            KR_TEST_FAIL("did not expect \"%s\" in:\n%s", n_, h_);                                 \
    } while (0)

#define ASSERT_PREFIX(s, prefix)                                                                   \
    do {                                                                                           \
        const char *s_ = (s), *p_ = (prefix);                                                      \
        if (strncmp(s_, p_, strlen(p_)) != 0)                                                      \
            KR_TEST_FAIL("expected prefix \"%s\" in:\n%s", p_, s_);                                \
    } while (0)

/* The body after the first head in out (NULL if the head is incomplete). */
static const char *body_of(const char *out)
{
    const char *p = strstr(out, "\r\n\r\n");
    return p ? p + 4 : NULL;
}

/* ---- basic requests --------------------------------------------------------------------- */

TEST(simple_get)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n");
    ASSERT_EQ(ncalls, 1);
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\nServer: kestrun\r\nDate: ");
    /* Date: an IMF-fixdate */
    const char *date = strstr(out, "\r\nDate: ") + 8;
    ASSERT_MEM_EQ(date + 3, 2, ", ", 2);
    ASSERT_MEM_EQ(date + KR_HTTP_DATE_LEN - 4, 6, " GMT\r\n", 6);
    ASSERT_CONTAINS(out, "\r\nContent-Type: text/plain\r\n");
    ASSERT_CONTAINS(out, "\r\nContent-Length: 6\r\n");
    ASSERT_NOT_CONTAINS(out, "Connection:");
    ASSERT_NOT_CONTAINS(out, "Transfer-Encoding");
    ASSERT_STR_EQ(body_of(out), "/hello");
    ASSERT_EQ(fx.c->close_after_flush, 0);
    ASSERT_EQ(fx.s.stats.requests, 1);
    ASSERT_EQ(fx.s.stats.bad_requests, 0);
    fx_done(&fx);
}

TEST(no_handler_is_404)
{
    fx_t fx;
    fx_init(&fx);
    fx.s.handler = NULL;
    feed(&fx, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 404 Not Found\r\n");
    ASSERT_STR_EQ(body_of(out), "Not Found");
    fx_done(&fx);
}

TEST(request_fields)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /a%20b/c%2Fd/%41?x=1&y=%20z HTTP/1.1\r\n"
              "Host: example.com\r\n"
              "X-Custom-Header:   value with  spaces  \t \r\n"
              "ACCEPT:\ttext/html\t\r\n"
              "\r\n");
    ASSERT_EQ(ncalls, 1);
    rec_t *r = &recs[0];
    ASSERT_STR_EQ(r->method, "GET");
    ASSERT_EQ(r->method_bit, KR_M_GET);
    ASSERT_STR_EQ(r->target, "/a%20b/c%2Fd/%41?x=1&y=%20z");
    ASSERT_MEM_EQ(r->path, r->path_len, "/a b/c%2Fd/A", 12); /* %2F stays encoded */
    ASSERT_STR_EQ(r->query, "x=1&y=%20z");                   /* the query stays raw */
    ASSERT_EQ(r->nheaders, 3);
    ASSERT_STR_EQ(r->headers, "host=example.com\n"
                              "x-custom-header=value with  spaces\n"
                              "accept=text/html\n");
    ASSERT_EQ(r->has_body, 0);
    ASSERT_EQ(r->http_minor, 1);
    ASSERT_EQ(r->keep_alive, 1);
    drop_output(fx.c);

    /* No query: "" (not NULL). Absolute form. Asterisk form. A method the router lacks. */
    feed(&fx, "DELETE /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_STR_EQ(recs[1].method, "DELETE");
    ASSERT_EQ(recs[1].method_bit, KR_M_DELETE);
    ASSERT_STR_EQ(recs[1].path, "/plain");
    ASSERT_STR_EQ(recs[1].query, "");
    ASSERT_EQ(recs[1].nheaders, 1); /* Host only */
    feed(&fx, "GET http://example.com/p%41th?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    ASSERT_STR_EQ(recs[2].path, "/pAth");
    ASSERT_STR_EQ(recs[2].query, "q=1");
    feed(&fx, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_STR_EQ(recs[3].path, "*");
    ASSERT_EQ(recs[3].method_bit, KR_M_OPTIONS);
    feed(&fx, "PROPFIND /dav HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_STR_EQ(recs[4].method, "PROPFIND");
    ASSERT_EQ(recs[4].method_bit, 0);
    ASSERT_EQ(ncalls, 5);
    ASSERT_EQ(fx.s.stats.requests, 5);
    fx_done(&fx);
}

/* An empty field value is valid (RFC 9110 5.5: field-value = *field-content). */
TEST(empty_header_value)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /e HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Blank:   \r\nAfter: 1\r\n\r\n");
    if (ncalls != 1)
        KR_TEST_FAIL("request with empty header values rejected:\n%s", output(&fx));
    ASSERT_EQ(recs[0].nheaders, 4);
    ASSERT_STR_EQ(recs[0].headers, "host=x\nx-empty=\nx-blank=\nafter=1\n");
    ASSERT_EQ(fx.s.stats.bad_requests, 0);
    ASSERT_EQ(fx.c->close_after_flush, 0);
    fx_done(&fx);
}

/* kr_http_req_header from inside the handler (the request is only valid there). */
static int lookups_ok;
static void lookup_handler(kr_http_req_t *req, void *ud)
{
    KR_UNUSED(ud);
    size_t len = 0;
    const char *v = kr_http_req_header(req, "X-Token", &len);
    ASSERT_NOT_NULL(v);
    ASSERT_STR_EQ(v, "abc");
    ASSERT_EQ(len, 3);
    ASSERT_STR_EQ(kr_http_req_header(req, "x-token", NULL), "abc");
    ASSERT_STR_EQ(kr_http_req_header(req, "HOST", NULL), "h");
    ASSERT_NULL(kr_http_req_header(req, "x-tok", NULL));
    ASSERT_NULL(kr_http_req_header(req, "missing", NULL));
    ASSERT_STR_EQ(req->remote_addr, "127.0.0.1");
    ASSERT(req->server != NULL && req->conn != NULL);
    lookups_ok = 1;
    ASSERT_OK(kr_http_respond(req, 200, NULL, 0, NULL));
}

TEST(header_lookup)
{
    fx_t fx;
    fx_init(&fx);
    fx.s.handler = lookup_handler;
    feed(&fx, "GET / HTTP/1.1\r\nHost: h\r\nX-TOKEN: abc\r\n\r\n");
    ASSERT_EQ(lookups_ok, 1);
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_CONTAINS(out, "\r\nContent-Length: 0\r\n");
    ASSERT_STR_EQ(body_of(out), "");
    fx_done(&fx);
}

TEST(body_content_length)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    ASSERT_EQ(ncalls, 1);
    ASSERT_STR_EQ(recs[0].method, "POST");
    ASSERT_EQ(recs[0].has_body, 1);
    ASSERT_MEM_EQ(recs[0].body, recs[0].body_len, "hello world", 11);

    /* Split over several reads: dispatched only when the body is complete. */
    feed(&fx, "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123");
    ASSERT_EQ(ncalls, 1);
    feed(&fx, "456");
    ASSERT_EQ(ncalls, 1);
    feed(&fx, "789");
    ASSERT_EQ(ncalls, 2);
    ASSERT_MEM_EQ(recs[1].body, recs[1].body_len, "0123456789", 10);

    /* Content-Length: 0 gives no body. */
    feed(&fx, "POST /empty HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(ncalls, 3);
    ASSERT_EQ(recs[2].has_body, 0);
    ASSERT_EQ(count_str(output(&fx), "HTTP/1.1 200 OK"), 3);
    fx_done(&fx);
}

TEST(body_chunked)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n");
    ASSERT_EQ(ncalls, 1);
    ASSERT_MEM_EQ(recs[0].body, recs[0].body_len, "hello world0123456789", 21);
    ASSERT_STR_EQ(recs[0].headers, "host=t\ntransfer-encoding=chunked\n");

    /* With trailers, split across reads. */
    feed(&fx, "POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
    ASSERT_EQ(ncalls, 1);
    feed(&fx, "c\r\n0\r\nX-Trailer: t\r\n\r\n");
    ASSERT_EQ(ncalls, 2);
    ASSERT_MEM_EQ(recs[1].body, recs[1].body_len, "abc", 3);

    /* An empty chunked body. */
    feed(&fx, "POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    ASSERT_EQ(ncalls, 3);
    ASSERT_EQ(recs[2].has_body, 0);
    fx_done(&fx);
}

/* ---- keep-alive and pipelining ---------------------------------------------------------- */

TEST(keepalive_two_requests_one_feed)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(ncalls, 2);
    ASSERT_STR_EQ(recs[0].path, "/one");
    ASSERT_STR_EQ(recs[1].path, "/two");
    const char *out = output(&fx);
    ASSERT_EQ(count_str(out, "HTTP/1.1 200 OK\r\n"), 2);
    const char *one = strstr(out, "\r\n\r\n/one");
    const char *two = strstr(out, "\r\n\r\n/two");
    ASSERT(one != NULL && two != NULL && one < two);
    ASSERT_EQ(fx.c->close_after_flush, 0);
    ASSERT_EQ(fx.s.stats.requests, 2);

    /* The connection keeps serving afterwards. */
    feed(&fx, "GET /three HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(ncalls, 3);
    ASSERT_EQ(count_str(output(&fx), "HTTP/1.1 200 OK\r\n"), 3);
    fx_done(&fx);
}

TEST(pipelining_deferred_response)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET /first HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    /* Only the first is dispatched; the second waits in the read buffer. */
    ASSERT_EQ(ncalls, 1);
    ASSERT_EQ(ndeferred, 1);
    ASSERT_STR_EQ(recs[0].path, "/first");
    ASSERT_EQ(fx.c->outq.bytes, 0);
    ASSERT(fx.c->rlen > 0);

    /* More bytes while busy are buffered too. */
    feed(&fx, "GET /third HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(ncalls, 1);

    /* Answering the first dispatches the second, after the first response. */
    ASSERT_OK(kr_http_respond_text(deferred[0], 200, "text/plain", "first", 5));
    ASSERT_EQ(ncalls, 2);
    ASSERT_STR_EQ(recs[1].path, "/second");
    const char *out = output(&fx);
    ASSERT_EQ(count_str(out, "HTTP/1.1 200 OK"), 1);
    ASSERT_STR_EQ(body_of(out), "first");

    /* Answering late through a request reference still works (the handler returned). */
    ASSERT_OK(kr_http_respond_text(deferred[1], 201, "text/plain", "second", 6));
    ASSERT_EQ(ncalls, 3);
    ASSERT_STR_EQ(recs[2].path, "/third");
    ASSERT_OK(kr_http_respond_text(deferred[2], 202, "text/plain", "third", 5));
    ASSERT_EQ(ncalls, 3);

    out = output(&fx);
    const char *a = strstr(out, "HTTP/1.1 200 OK");
    const char *b = strstr(out, "HTTP/1.1 201 Created");
    const char *c = strstr(out, "HTTP/1.1 202 Accepted");
    ASSERT(a != NULL && b != NULL && c != NULL);
    ASSERT(a < b && b < c);
    ASSERT(strstr(out, "\r\n\r\nfirst") < b);
    ASSERT(strstr(out, "\r\n\r\nsecond") < c);
    ASSERT_EQ(fx.c->rlen, 0);

    /* A finished request cannot be answered twice. */
    ASSERT_EQ(kr_http_respond_text(deferred[0], 200, "text/plain", "again", 5), KR_EINVAL);
    ASSERT_EQ(fx.s.stats.requests, 3);
    fx_done(&fx);
}

TEST(byte_at_a_time)
{
    fx_t fx;
    fx_init(&fx);
    const char *req = "POST /b%2fc?k=v HTTP/1.1\r\n"
                      "Host: example.com\r\n"
                      "Content-Type: text/plain\r\n"
                      "Content-Length: 13\r\n"
                      "\r\n"
                      "hello, world!"
                      "POST /chunk HTTP/1.1\r\nHost: t\r\n"
                      "Transfer-Encoding: chunked\r\n"
                      "\r\n"
                      "4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n";
    size_t n = strlen(req);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(kr__conn_feed(fx.c, req + i, 1), 1);
    ASSERT_EQ(ncalls, 2);
    ASSERT_STR_EQ(recs[0].method, "POST");
    ASSERT_STR_EQ(recs[0].path, "/b%2fc"); /* %2F stays encoded, as in ASP.NET Core */
    ASSERT_STR_EQ(recs[0].query, "k=v");
    ASSERT_STR_EQ(recs[0].headers, "host=example.com\ncontent-type=text/plain\n"
                                   "content-length=13\n");
    ASSERT_MEM_EQ(recs[0].body, recs[0].body_len, "hello, world!", 13);
    ASSERT_STR_EQ(recs[1].path, "/chunk");
    ASSERT_MEM_EQ(recs[1].body, recs[1].body_len, "wikipedia", 9);
    ASSERT_EQ(count_str(output(&fx), "HTTP/1.1 200 OK"), 2);
    ASSERT_EQ(fx.s.stats.bad_requests, 0);
    fx_done(&fx);
}

/* ---- bodiless responses ----------------------------------------------------------------- */

TEST(head_has_no_body)
{
    fx_t fx;
    fx_init(&fx);
    /* A GET after the HEAD shows the HEAD response ended right after its head. */
    feed(&fx, "HEAD /abc HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(ncalls, 2);
    ASSERT_EQ(recs[0].method_bit, KR_M_HEAD);
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_CONTAINS(out, "\r\nContent-Length: 4\r\n"); /* the length a GET would have */
    ASSERT_PREFIX(body_of(out), "HTTP/1.1 200 OK\r\n");
    ASSERT_EQ(count_str(out, "/abc"), 0);
    ASSERT_EQ(count_str(out, "\r\n\r\n/next"), 1);
    fx_done(&fx);
}

TEST(no_body_statuses)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /s/204 HTTP/1.1\r\nHost: t\r\n\r\n");
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 204 No Content\r\n");
    ASSERT_NOT_CONTAINS(out, "Content-Length");
    ASSERT_NOT_CONTAINS(out, "Transfer-Encoding");
    ASSERT_STR_EQ(body_of(out), "");
    ASSERT_EQ(fx.c->close_after_flush, 0);
    drop_output(fx.c);

    feed(&fx, "GET /s/304 HTTP/1.1\r\nHost: t\r\n\r\n");
    out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 304 Not Modified\r\n");
    ASSERT_NOT_CONTAINS(out, "Content-Length");
    ASSERT_NOT_CONTAINS(out, "Transfer-Encoding");
    ASSERT_STR_EQ(body_of(out), "");
    ASSERT_EQ(fx.c->close_after_flush, 0);
    drop_output(fx.c);

    /* The connection is still in sync: the next answer is complete and alone. */
    feed(&fx, "GET /s/200 HTTP/1.1\r\nHost: t\r\n\r\n");
    out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_STR_EQ(body_of(out), "/s/200");
    fx_done(&fx);
}

/* ---- connection handling ---------------------------------------------------------------- */

TEST(connection_close_request)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /never "
              "HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(ncalls, 1);
    ASSERT_EQ(recs[0].keep_alive, 0);
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_CONTAINS(out, "\r\nConnection: close\r\n");
    ASSERT_STR_EQ(body_of(out), "/bye");
    ASSERT_EQ(fx.c->close_after_flush, 1);
    /* Nothing more is taken. */
    ASSERT_EQ(kr__conn_feed(fx.c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", 18), 0);
    ASSERT_EQ(ncalls, 1);
    fx_done(&fx);
}

TEST(handler_connection_close_header)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    kr_http_header_t h[2] = {{"Connection", "close", 10, 5}, {"X-A", "1", 3, 1}};
    ASSERT_OK(kr_http_respond(deferred[0], 200, h, 2, kr_buf_from("ok", 2)));
    const char *out = output(&fx);
    ASSERT_EQ(count_str(out, "Connection: close\r\n"), 1);
    ASSERT_CONTAINS(out, "\r\nX-A: 1\r\n");
    ASSERT_EQ(fx.c->close_after_flush, 1);
    fx_done(&fx);
}

TEST(http10_close_unless_keepalive)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "GET /old HTTP/1.0\r\n\r\n");
    ASSERT_EQ(ncalls, 1);
    ASSERT_EQ(recs[0].http_minor, 0);
    ASSERT_EQ(recs[0].keep_alive, 0);
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_CONTAINS(out, "\r\nConnection: close\r\n");
    ASSERT_CONTAINS(out, "\r\nContent-Length: 4\r\n");
    ASSERT_EQ(fx.c->close_after_flush, 1);

    /* A second connection that asks for keep-alive keeps it. */
    kr_conn_t *c2 = new_conn(&fx);
    feed_conn(c2, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ASSERT_EQ(ncalls, 2);
    ASSERT_EQ(recs[1].keep_alive, 1);
    out = output_of(c2, NULL);
    ASSERT_CONTAINS(out, "\r\nConnection: keep-alive\r\n");
    ASSERT_NOT_CONTAINS(out, "Connection: close");
    ASSERT_EQ(c2->close_after_flush, 0);
    feed_conn(c2, "GET /ka2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ASSERT_EQ(ncalls, 3);
    ASSERT_EQ(count_str(output_of(c2, NULL), "HTTP/1.1 200 OK"), 2);
    close_conn(c2);
    fx_done(&fx);
}

TEST(expect_100_continue)
{
    fx_t fx;
    fx_init(&fx);
    feed(&fx, "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    ASSERT_EQ(ncalls, 0);
    ASSERT_STR_EQ(output(&fx), "HTTP/1.1 100 Continue\r\n\r\n");
    feed(&fx, "abc");
    ASSERT_EQ(ncalls, 1);
    ASSERT_MEM_EQ(recs[0].body, recs[0].body_len, "abc", 3);
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n");
    fx_done(&fx);
}

/* ---- protocol errors and limits --------------------------------------------------------- */

typedef struct bad_case_s {
    const char *name;
    const char *input;
    int status;
    /* limits to lower (0: default) */
    size_t max_request_line, max_header_bytes, max_body, max_chunk_ext;
    unsigned max_header_count;
} bad_case_t;

static const bad_case_t bad_cases[] = {
    {"garbage request line", "GARBAGE\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"HTTP/0.9 request line", "GET /\r\n\r\n", 505, 0, 0, 0, 0, 0},
    {"bad version", "GET / HTTX/1.1\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"space in target", "GET /a b HTTP/1.1\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"CL and TE",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\n\r\n",
     400, 0, 0, 0, 0, 0},
    {"TE and CL",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: "
     "5\r\n\r\n0\r\n\r\n",
     400, 0, 0, 0, 0, 0},
    {"two content lengths",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, 0, 0, 0,
     0, 0},
    {"bare LF everywhere", "GET / HTTP/1.1\nHost: x\n\n", 400, 0, 0, 0, 0, 0},
    {"bare LF after header", "GET / HTTP/1.1\r\nHost: x\n\r\n", 400, 0, 0, 0, 0, 0},
    {"bare CR in header value", "GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"bare CR ending header", "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"obs-fold space", "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"obs-fold tab", "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n\tb\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"line starting with space", "GET / HTTP/1.1\r\nHost: t\r\n X: a\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"empty header name", "GET / HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"space before colon", "GET / HTTP/1.1\r\nHost: t\r\nX : a\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"request line too long",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: "
     "t\r\n\r\n",
     414, 32, 0, 0, 0, 0},
    {"headers too large",
     "GET / HTTP/1.1\r\nHost: t\r\nX-Big: "
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
     "\r\n\r\n",
     431, 0, 64, 0, 0, 0},
    {"header names too large",
     "GET / HTTP/1.1\r\nHost: t\r\nX-"
     "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
     ": 1\r\n\r\n",
     431, 0, 64, 0, 0, 0},
    {"too many headers", "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431,
     0, 0, 0, 0, 3},
    {"content-length over max body", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n",
     413, 0, 0, 10, 0, 0},
    {"chunked over max body",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
     "chunked\r\n\r\n6\r\n123456\r\n6\r\n789012\r\n0\r\n\r\n",
     413, 0, 0, 10, 0, 0},
    {"chunk extension too large",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
     "chunked\r\n\r\n5;name=averyveryverylongvalue\r\nhello"
     "\r\n0\r\n\r\n",
     400, 0, 0, 0, 8, 0},
    {"chunk extensions too large in total",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
     "chunked\r\n\r\n1;abc=def\r\nx\r\n1;ghi=jkl\r\ny\r\n"
     "0\r\n\r\n",
     400, 0, 0, 0, 8, 0},
    {"bad chunk size", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     400, 0, 0, 0, 0, 0},
    {"bad percent escape", "GET /a%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"half percent escape", "GET /a%4g HTTP/1.1\r\nHost: t\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"truncated percent escape", "GET /a%4 HTTP/1.1\r\nHost: t\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"percent at end", "GET /a% HTTP/1.1\r\nHost: t\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"encoded NUL", "GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400, 0, 0, 0, 0, 0},
    {"target not origin form", "GET a/b HTTP/1.1\r\n\r\n", 400, 0, 0, 0, 0, 0},
};

static void run_bad_case(const bad_case_t *bc)
{
    fx_t fx;
    fx_init(&fx);
    ncalls = 0;
    if (bc->max_request_line)
        fx.s.limits.max_request_line_bytes = bc->max_request_line;
    if (bc->max_header_bytes)
        fx.s.limits.max_header_bytes = bc->max_header_bytes;
    if (bc->max_body)
        fx.s.limits.max_body_bytes = bc->max_body;
    if (bc->max_chunk_ext)
        fx.s.limits.max_chunk_ext_bytes = bc->max_chunk_ext;
    if (bc->max_header_count)
        fx.s.limits.max_header_count = bc->max_header_count;
    size_t n = strlen(bc->input);
    ASSERT_EQ(kr__conn_feed(fx.c, bc->input, n), n);
    const char *out = output(&fx);
    char want[64];
    snprintf(want, sizeof(want), "HTTP/1.1 %d %s\r\n", bc->status, kr_http_reason(bc->status));
    if (strncmp(out, want, strlen(want)) != 0)
        KR_TEST_FAIL("%s: expected \"%.*s\", got:\n%s", bc->name, (int)strlen(want) - 2, want, out);
    if (strstr(out, "\r\nConnection: close\r\n") == NULL)
        KR_TEST_FAIL("%s: no Connection: close in:\n%s", bc->name, out);
    if (ncalls != 0)
        KR_TEST_FAIL("%s: the handler was called for a rejected request", bc->name);
    if (count_str(out, "HTTP/1.1 ") != 1)
        KR_TEST_FAIL("%s: expected exactly one response:\n%s", bc->name, out);
    if (fx.c->close_after_flush != 1)
        KR_TEST_FAIL("%s: connection not marked to close", bc->name);
    if (fx.s.stats.bad_requests != 1 || fx.s.stats.requests != 0)
        KR_TEST_FAIL("%s: stats requests=%llu bad_requests=%llu", bc->name,
                     (unsigned long long)fx.s.stats.requests,
                     (unsigned long long)fx.s.stats.bad_requests);
    /* The body of the error names the status. */
    ASSERT_STR_EQ(body_of(out), kr_http_reason(bc->status));
    /* Further input is ignored. */
    ASSERT_EQ(kr__conn_feed(fx.c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", 18), 0);
    ASSERT_EQ(ncalls, 0);
    fx_done(&fx);
}

TEST(bad_requests)
{
    /* Every case runs in its own child so one failure does not hide the others. */
    int failed = 0;
    for (size_t i = 0; i < KR_ARRAY_SIZE(bad_cases); i++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            run_bad_case(&bad_cases[i]);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "  bad request case failed: %s\n", bad_cases[i].name);
            failed++;
        }
    }
    ASSERT_EQ(failed, 0);
}

/* Rejections do not depend on how the bytes are split: the same cases fed one byte at a time
 * (the parser sees each byte in its own call). */
TEST(bad_requests_byte_at_a_time)
{
    static const char *const names[] = {"CL and TE",
                                        "bare CR in header value",
                                        "obs-fold space",
                                        "obs-fold tab",
                                        "empty header name",
                                        "request line too long",
                                        "headers too large",
                                        "too many headers",
                                        "chunked over max body",
                                        "chunk extension too large",
                                        "bad percent escape"};
    for (size_t k = 0; k < KR_ARRAY_SIZE(names); k++) {
        const bad_case_t *bc = NULL;
        for (size_t i = 0; i < KR_ARRAY_SIZE(bad_cases); i++)
            if (strcmp(bad_cases[i].name, names[k]) == 0)
                bc = &bad_cases[i];
        ASSERT_NOT_NULL(bc);
        fx_t fx;
        fx_init(&fx);
        ncalls = 0;
        if (bc->max_request_line)
            fx.s.limits.max_request_line_bytes = bc->max_request_line;
        if (bc->max_header_bytes)
            fx.s.limits.max_header_bytes = bc->max_header_bytes;
        if (bc->max_body)
            fx.s.limits.max_body_bytes = bc->max_body;
        if (bc->max_chunk_ext)
            fx.s.limits.max_chunk_ext_bytes = bc->max_chunk_ext;
        if (bc->max_header_count)
            fx.s.limits.max_header_count = bc->max_header_count;
        size_t n = strlen(bc->input), i = 0;
        while (i < n && kr__conn_feed(fx.c, bc->input + i, 1) == 1)
            i++;
        const char *out = output(&fx);
        char want[64];
        snprintf(want, sizeof(want), "HTTP/1.1 %d ", bc->status);
        if (strncmp(out, want, strlen(want)) != 0)
            KR_TEST_FAIL("%s (byte at a time): expected %d, got:\n%s", bc->name, bc->status, out);
        ASSERT_EQ(ncalls, 0);
        ASSERT_EQ(fx.c->close_after_flush, 1);
        ASSERT_EQ(fx.s.stats.bad_requests, 1);
        fx_done(&fx);
    }
}

/* A bare LF ending the request line (the header lines end in CRLF). Bare LF is refused
 * after a header line; the request line must not be the one place it slips through. */
TEST(bare_lf_after_request_line)
{
    static const bad_case_t bc = {
        "bare LF after request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400, 0, 0, 0, 0, 0};
    run_bad_case(&bc);
}

/* Just inside each limit is still served. */
TEST(limits_boundaries_accept)
{
    fx_t fx;
    fx_init(&fx);
    fx.s.limits.max_request_line_bytes = 32;
    fx.s.limits.max_header_count = 4; /* Host + three */
    fx.s.limits.max_body_bytes = 10;
    fx.s.limits.max_chunk_ext_bytes = 8;
    /* a 32-byte target */
    feed(&fx, "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(ncalls, 1);
    ASSERT_EQ(strlen(recs[0].target), 32);
    feed(&fx, "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    ASSERT_EQ(ncalls, 2);
    ASSERT_EQ(recs[1].nheaders, 4);
    feed(&fx, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789");
    ASSERT_EQ(ncalls, 3);
    feed(&fx, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5;a=b\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n");
    ASSERT_EQ(ncalls, 4);
    ASSERT_MEM_EQ(recs[3].body, recs[3].body_len, "0123456789", 10);
    /* Chunk-extension bytes are counted per request, not per connection. */
    feed(&fx,
         "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\r\nx\r\n0\r\n\r\n");
    ASSERT_EQ(ncalls, 5);
    ASSERT_EQ(fx.s.stats.requests, 5);
    ASSERT_EQ(fx.s.stats.bad_requests, 0);
    ASSERT_EQ(fx.c->close_after_flush, 0);
    fx_done(&fx);
}

TEST(stats_counters)
{
    fx_t fx;
    fx_init(&fx);
    ASSERT_EQ(fx.s.stats.connections_open, 1);
    feed(&fx, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n");
    kr_conn_t *c2 = new_conn(&fx);
    ASSERT_EQ(fx.s.stats.connections_open, 2);
    ASSERT_EQ(fx.s.stats.connections_total, 2);
    feed_conn(c2, "GET /3 HTTP/1.1\r\nHost: t\r\n\r\nBROKEN\r\n\r\n");
    ASSERT_EQ(fx.s.stats.requests, 3);
    ASSERT_EQ(fx.s.stats.bad_requests, 1);
    ASSERT_EQ(c2->close_after_flush, 1);
    ASSERT_EQ(fx.c->close_after_flush, 0);
    /* The good response went out before the error. */
    const char *out = output_of(c2, NULL);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_CONTAINS(out, "HTTP/1.1 400 Bad Request\r\n");
    close_conn(c2);
    ASSERT_EQ(fx.s.stats.connections_open, 1);
    fx_done(&fx);
}

/* ---- streaming responses ---------------------------------------------------------------- */

TEST(stream_known_length)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET /s HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(ncalls, 1);
    kr_http_req_t *req = deferred[0];
    /* Framing headers from the caller are dropped: the writer owns them. */
    kr_http_header_t h[4] = {{"Content-Type", "text/plain", 12, 10},
                             {"Content-Length", "999", 14, 3},
                             {"Transfer-Encoding", "chunked", 17, 7},
                             {"Connection", "keep-alive", 10, 10}};
    ASSERT_OK(kr_http_respond_start(req, 200, h, 4, 10));
    ASSERT_EQ(kr_http_respond_start(req, 200, NULL, 0, 10), KR_EINVAL);
    ASSERT_EQ(req->head_sent, 1);
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("hello", 5)));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("", 0)));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("world", 5)));
    /* More than announced is refused. */
    ASSERT_EQ(kr_http_respond_body(req, kr_buf_from("!", 1)), KR_EINVAL);
    ASSERT_EQ(ncalls, 1);
    ASSERT_OK(kr_http_respond_end(req));
    ASSERT_EQ(kr_http_respond_end(req), KR_EINVAL);
    ASSERT_EQ(kr_http_respond_body(req, kr_buf_from("late", 4)), KR_EINVAL);
    ASSERT_EQ(ncalls, 2); /* the next request was dispatched */

    size_t len = 0;
    const char *out = output_of(fx.c, &len);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_EQ(count_str(out, "Content-Length"), 1);
    ASSERT_CONTAINS(out, "\r\nContent-Length: 10\r\n");
    ASSERT_CONTAINS(out, "\r\nContent-Type: text/plain\r\n");
    ASSERT_NOT_CONTAINS(out, "Transfer-Encoding");
    ASSERT_NOT_CONTAINS(out, "Connection");
    ASSERT_STR_EQ(body_of(out), "helloworld");
    ASSERT_EQ(fx.c->close_after_flush, 0);
    fx_done(&fx);
}

TEST(stream_short_body_closes)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    kr_http_req_t *req = deferred[0];
    ASSERT_OK(kr_http_respond_start(req, 200, NULL, 0, 10));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("abc", 3)));
    ASSERT_OK(kr_http_respond_end(req)); /* 7 bytes short: only a close can tell */
    ASSERT_EQ(fx.c->close_after_flush, 1);
    fx_done(&fx);
}

TEST(stream_chunked)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    kr_http_req_t *req = deferred[0];
    ASSERT_OK(kr_http_respond_start(req, 200, NULL, 0, -1));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("hello", 5)));
    ASSERT_OK(kr_http_respond_end(req));
    const char *out = output(&fx);
    ASSERT_PREFIX(out, "HTTP/1.1 200 OK\r\n");
    ASSERT_CONTAINS(out, "\r\nTransfer-Encoding: chunked\r\n");
    ASSERT_NOT_CONTAINS(out, "Content-Length");
    ASSERT_STR_EQ(body_of(out), "5\r\nhello\r\n0\r\n\r\n");
    ASSERT_EQ(fx.c->close_after_flush, 0);
    drop_output(fx.c);

    /* Several chunks, a hex size, an empty buffer (no zero-size chunk mid-stream). */
    feed(&fx, "GET /c2 HTTP/1.1\r\nHost: t\r\n\r\n");
    req = deferred[1];
    ASSERT_OK(kr_http_respond_start(req, 200, NULL, 0, -1));
    char big[300];
    memset(big, 'x', sizeof(big));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("ab", 2)));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("", 0)));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from(big, sizeof(big))));
    ASSERT_OK(kr_http_respond_end(req));
    out = output(&fx);
    char want[512];
    snprintf(want, sizeof(want), "2\r\nab\r\n12c\r\n%.*s\r\n0\r\n\r\n", (int)sizeof(big), big);
    ASSERT_STR_EQ(body_of(out), want);
    drop_output(fx.c);

    /* HEAD: the head says chunked, no body and no terminator follow. */
    feed(&fx, "HEAD /c3 HTTP/1.1\r\nHost: t\r\n\r\n");
    req = deferred[2];
    ASSERT_OK(kr_http_respond_start(req, 200, NULL, 0, -1));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("hidden", 6)));
    ASSERT_OK(kr_http_respond_end(req));
    out = output(&fx);
    ASSERT_STR_EQ(body_of(out), "");
    ASSERT_EQ(fx.c->close_after_flush, 0);
    fx_done(&fx);
}

TEST(stream_http10_close_delimited)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    kr_http_req_t *req = deferred[0];
    ASSERT_OK(kr_http_respond_start(req, 200, NULL, 0, -1));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("raw", 3)));
    ASSERT_OK(kr_http_respond_end(req));
    const char *out = output(&fx);
    ASSERT_NOT_CONTAINS(out, "Transfer-Encoding");
    ASSERT_NOT_CONTAINS(out, "Content-Length");
    ASSERT_CONTAINS(out, "\r\nConnection: close\r\n");
    ASSERT_STR_EQ(body_of(out), "raw");
    ASSERT_EQ(fx.c->close_after_flush, 1);
    fx_done(&fx);
}

TEST(respond_after_close)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
    kr_http_req_t *req = deferred[0];
    ASSERT(req->conn == fx.c);
    kr_conn_close(fx.c, NULL);
    ASSERT_NULL(req->conn);
    ASSERT_EQ(kr_http_req_queued(req), 0);
    ASSERT_EQ(kr_http_req_on_drain(req, NULL, NULL), KR_ECLOSED);
    ASSERT_EQ(kr_http_respond_text(req, 200, "text/plain", "late", 4), KR_ECLOSED);
    ASSERT_EQ(req->done, 1);
    ASSERT_EQ(fx.c->outq.bytes, 0);
    fx_done(&fx);
}

TEST(stream_after_close)
{
    fx_t fx;
    fx_init(&fx);
    defer_mode = 1;
    feed(&fx, "GET /s HTTP/1.1\r\nHost: t\r\n\r\n");
    kr_http_req_t *req = deferred[0];
    ASSERT_OK(kr_http_respond_start(req, 200, NULL, 0, -1));
    ASSERT_OK(kr_http_respond_body(req, kr_buf_from("part", 4)));
    kr_conn_close(fx.c, "test");
    ASSERT_NULL(req->conn);
    ASSERT_EQ(kr_http_respond_body(req, kr_buf_from("more", 4)), KR_ECLOSED);
    ASSERT_EQ(kr_http_respond_end(req), KR_ECLOSED);
    fx_done(&fx);
}

/* The query helpers hubs and authentication share: first match, case rule, raw value, and the
 * form decoding ('+', %XX, bad escapes kept). */
TEST(query_find_and_form_decode)
{
    const char *q = "a=1&ID=x%2By+z&id=second&flag&empty=&bad=%zz%4";
    const char *v;
    size_t n;
    ASSERT(kr_http_query_find(q, "id", 1, &v, &n));
    ASSERT_EQ(n, 7);
    ASSERT_EQ(memcmp(v, "x%2By+z", 7), 0);
    ASSERT(kr_http_query_find(q, "id", 0, &v, &n));
    ASSERT_EQ(n, 6);
    ASSERT_EQ(memcmp(v, "second", 6), 0);
    ASSERT(kr_http_query_find(q, "flag", 0, &v, &n));
    ASSERT_EQ(n, 0);
    ASSERT(kr_http_query_find(q, "empty", 0, &v, &n));
    ASSERT_EQ(n, 0);
    ASSERT(!kr_http_query_find(q, "missing", 1, &v, &n));
    ASSERT(!kr_http_query_find("", "a", 1, &v, &n));
    char out[32];
    ASSERT(kr_http_query_find(q, "ID", 0, &v, &n));
    size_t d = kr_http_form_decode(v, n, out);
    ASSERT_EQ(d, 5);
    ASSERT_EQ(memcmp(out, "x+y z", 5), 0);
    ASSERT(kr_http_query_find(q, "bad", 0, &v, &n));
    d = kr_http_form_decode(v, n, out);
    ASSERT_EQ(d, n); /* malformed escapes stay as they are */
    ASSERT_EQ(memcmp(out, "%zz%4", 5), 0);
}

KR_TEST_MAIN(KR_TEST_ENTRY(query_find_and_form_decode), KR_TEST_ENTRY(simple_get), KR_TEST_ENTRY(no_handler_is_404),
             KR_TEST_ENTRY(request_fields), KR_TEST_ENTRY(empty_header_value),
             KR_TEST_ENTRY(header_lookup), KR_TEST_ENTRY(body_content_length),
             KR_TEST_ENTRY(body_chunked), KR_TEST_ENTRY(keepalive_two_requests_one_feed),
             KR_TEST_ENTRY(pipelining_deferred_response), KR_TEST_ENTRY(byte_at_a_time),
             KR_TEST_ENTRY(head_has_no_body), KR_TEST_ENTRY(no_body_statuses),
             KR_TEST_ENTRY(connection_close_request),
             KR_TEST_ENTRY(handler_connection_close_header),
             KR_TEST_ENTRY(http10_close_unless_keepalive), KR_TEST_ENTRY(expect_100_continue),
             KR_TEST_ENTRY(bad_requests), KR_TEST_ENTRY(bad_requests_byte_at_a_time),
             KR_TEST_ENTRY(bare_lf_after_request_line), KR_TEST_ENTRY(limits_boundaries_accept),
             KR_TEST_ENTRY(stats_counters), KR_TEST_ENTRY(stream_known_length),
             KR_TEST_ENTRY(stream_short_body_closes), KR_TEST_ENTRY(stream_chunked),
             KR_TEST_ENTRY(stream_http10_close_delimited), KR_TEST_ENTRY(respond_after_close),
             KR_TEST_ENTRY(stream_after_close))
