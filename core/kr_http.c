/* kr_http.c: HTTP/1.1 connections: llhttp callbacks, limits, dispatch and the response
 * writer (see kr_http.h).
 *
 * Flow on one connection:
 *   bytes -> process_input -> llhttp_execute -> callbacks fill `parsing`
 *   on_message_complete pauses the parser, process_input dispatches the request (it becomes
 *   `active`) and stops parsing until the response ends; then the rest of the read buffer
 *   (pipelined requests) is parsed. Responses therefore leave in request order.
 * Deadlines: IDLE (keep-alive timeout, or the header timeout on a fresh connection), HEAD and
 * BODY (header timeout), none while a request is ACTIVE. The server's sweep fires them.
 */
#include "kr_http.h"
#include "kr_conn.h"
#include "kr_log.h"
#include "kr_router.h"
#include "kr_server.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>

void kr_http_limits_default(kr_http_limits_t *l)
{
    l->max_request_line_bytes = 8 * 1024;
    l->max_header_bytes = 32 * 1024;
    l->max_header_count = 100;
    l->header_timeout_ms = 30 * 1000;
    l->keepalive_timeout_ms = 130 * 1000;
    l->max_body_bytes = 30000000;
    l->max_chunk_ext_bytes = 16 * 1024;
}

typedef enum phase_e { PHASE_IDLE = 0, PHASE_HEAD, PHASE_BODY, PHASE_ACTIVE } phase_e;

typedef struct http_conn_s {
    llhttp_t parser;
    kr_conn_t *conn;
    kr_http_req_t *parsing; /* being parsed */
    kr_http_req_t *ready;   /* parsed, waiting for process_input to dispatch it */
    kr_http_req_t *active;  /* dispatched, response not finished */
    phase_e phase;
    int processing;   /* process_input is on the stack */
    int taken_over;  /* kr_http_take_over ran inside process_input, which frees hc on exit */
    int error_status; /* set by a callback that rejects the request */
    const char *error_reason;
    /* head accumulation */
    kr_sbuf_t url;
    kr_sbuf_t arena; /* lower-cased name \0 value \0 ... */
    size_t *offs;    /* name offset, value offset per header */
    unsigned nheaders, offs_cap;
    size_t field_off, value_off;
    int in_value, field_done;
    size_t head_bytes, chunk_ext_bytes;
    int saw_cl, saw_te, saw_host, expect_continue;
    kr_sbuf_t body;
    int has_body;
    char last_bytes[2]; /* the last two bytes given to the parser by the previous execute */
} http_conn_t;

static llhttp_settings_t parser_settings;
static void process_input(http_conn_t *hc);

static void free_http_state(http_conn_t *hc)
{
    if (hc->ready)
        kr_http_req_unref(hc->ready);
    if (hc->parsing)
        kr_http_req_unref(hc->parsing);
    kr_sbuf_dispose(&hc->url);
    kr_sbuf_dispose(&hc->arena);
    kr_sbuf_dispose(&hc->body);
    kr_free(hc->offs);
    kr_free(hc);
}

/* ---- requests --------------------------------------------------------------------------- */

void kr_http_req_ref(kr_http_req_t *req)
{
    req->refs++;
}

void kr_http_req_unref(kr_http_req_t *req)
{
    KR_ASSERT(req->refs > 0);
    if (--req->refs > 0)
        return;
    kr_buf_unref(req->body);
    for (unsigned i = 0; i < req->nextra_headers; i++)
        kr_free((void *)req->extra_headers[i].name); /* name and value share one block */
    kr_free(req->extra_headers);
    kr_free(req->_priv); /* the head arena: target, path and header strings */
    kr_free(req->headers);
    kr_free(req);
}

void kr_http_req_add_response_header(kr_http_req_t *req, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value);
    char *block = kr_malloc(nlen + vlen + 2);
    memcpy(block, name, nlen + 1);
    memcpy(block + nlen + 1, value, vlen + 1);
    req->extra_headers =
        kr_realloc(req->extra_headers, sizeof(*req->extra_headers) * (req->nextra_headers + 1));
    req->extra_headers[req->nextra_headers++] =
        (kr_http_header_t){block, block + nlen + 1, nlen, vlen};
}

void kr_http_req_put_extra_headers(const kr_http_req_t *req, kr_sbuf_t *sb)
{
    for (unsigned i = 0; i < req->nextra_headers; i++) {
        const kr_http_header_t *h = &req->extra_headers[i];
        kr_sbuf_append(sb, h->name, h->name_len);
        kr_sbuf_append(sb, ": ", 2);
        kr_sbuf_append(sb, h->value, h->value_len);
        kr_sbuf_append(sb, "\r\n", 2);
    }
}

const char *kr_http_req_header(const kr_http_req_t *req, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < req->nheaders; i++) {
        const kr_http_header_t *h = &req->headers[i];
        if (h->name_len == n && kr_strncasecmp(h->name, name, n) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

int kr_http_query_find(const char *query, const char *key, int nocase, const char **val,
                       size_t *len)
{
    size_t klen = strlen(key);
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - p) == klen &&
            (nocase ? kr_strncasecmp(p, key, klen) : memcmp(p, key, klen)) == 0) {
            *val = eq ? eq + 1 : end;
            *len = (size_t)(end - *val);
            return 1;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}

size_t kr_http_form_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n) {
            int hi = kr_hexval((unsigned char)s[i + 1]);
            int lo = kr_hexval((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                c = (char)(hi * 16 + lo);
                i += 2;
            }
        }
        out[o++] = c;
    }
    return o;
}

/* Percent-decodes src[0..n) into dst (which has room for n+1); returns the length, or -1
 * for a malformed escape or an encoded NUL. */
static long percent_decode(const char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = kr_hexval((unsigned char)src[i + 1]), lo = kr_hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            if (hi == 2 && lo == 15) {
                /* %2F stays encoded, as in ASP.NET Core: a path segment may contain a slash
                 * without becoming two segments. */
                memcpy(dst + o, src + i, 3);
                o += 3;
            } else {
                dst[o++] = (char)(hi * 16 + lo);
            }
            i += 2;
        } else {
            dst[o++] = src[i];
        }
    }
    dst[o] = '\0';
    return (long)o;
}

/* ---- parser callbacks ------------------------------------------------------------------- */

static http_conn_t *hc_of(llhttp_t *p)
{
    return (http_conn_t *)p->data;
}

static int reject(llhttp_t *p, int status, const char *reason)
{
    http_conn_t *hc = hc_of(p);
    if (hc->error_status == 0) {
        hc->error_status = status;
        hc->error_reason = reason; /* llhttp replaces its own reason for some callbacks */
    }
    llhttp_set_error_reason(p, reason);
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    http_conn_t *hc = hc_of(p);
    kr_server_t *s = hc->conn->server;
    kr_http_req_t *req = kr_calloc(1, sizeof(*req));
    req->refs = 1; /* the connection's reference, dropped when the response ends */
    req->server = s;
    req->conn = hc->conn;
    req->query = "";
    memcpy(req->remote_addr, hc->conn->remote_addr, sizeof(req->remote_addr));
    hc->parsing = req;
    kr_sbuf_reset(&hc->url);
    kr_sbuf_reset(&hc->arena);
    kr_sbuf_reset(&hc->body);
    hc->nheaders = 0;
    hc->field_off = hc->value_off = 0;
    hc->in_value = hc->field_done = 0;
    hc->head_bytes = hc->chunk_ext_bytes = 0;
    hc->saw_cl = hc->saw_te = hc->saw_host = hc->expect_continue = 0;
    hc->error_reason = NULL;
    hc->has_body = 0;
    hc->phase = PHASE_HEAD;
    hc->conn->deadline_ms = uv_now(s->loop) + s->limits.header_timeout_ms;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    http_conn_t *hc = hc_of(p);
    if (kr_sbuf_len(&hc->url) + len > hc->conn->server->limits.max_request_line_bytes)
        return reject(p, 414, "request line too long");
    kr_sbuf_append(&hc->url, at, len);
    return 0;
}

static int count_head(http_conn_t *hc, size_t len)
{
    hc->head_bytes += len;
    return hc->head_bytes > hc->conn->server->limits.max_header_bytes;
}

/* The byte k (1 or 2) places before at: in the read buffer, or from the previous parse call. */
static char byte_before(const http_conn_t *hc, const char *at, int k)
{
    const char *rbuf = hc->conn->rbuf;
    if (at - rbuf >= k)
        return at[-k];
    return hc->last_bytes[2 - (k - (int)(at - rbuf))];
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    http_conn_t *hc = hc_of(p);
    /* llhttp 8.1 accepts a bare LF after the request line (it rejects one after a header
     * line); be consistent: a field that starts a line must follow CRLF. */
    if (kr_sbuf_len(&hc->arena) == hc->field_off && len > 0 &&
        (byte_before(hc, at, 1) != '\n' || byte_before(hc, at, 2) != '\r'))
        return reject(p, 400, "bare LF line ending");
    if (count_head(hc, len))
        return reject(p, 431, "request headers too large");
    char *dst = kr_sbuf_reserve(&hc->arena, len);
    for (size_t i = 0; i < len; i++) {
        char c = at[i];
        dst[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    kr_sbuf_commit(&hc->arena, len);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    http_conn_t *hc = hc_of(p);
    if (kr_sbuf_len(&hc->arena) == hc->field_off)
        return reject(p, 400, "empty header name");
    kr_sbuf_putc(&hc->arena, '\0');
    hc->value_off = kr_sbuf_len(&hc->arena);
    hc->field_done = 1;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    http_conn_t *hc = hc_of(p);
    if (!hc->field_done)
        return reject(p, 400, "empty header name");
    if (count_head(hc, len))
        return reject(p, 431, "request headers too large");
    /* llhttp 8.1 accepts obs-fold: a continuation line arrives as another value span that
     * starts right after the LF. RFC 9112 lets a server reject it, and accepting it is a
     * smuggling vector (CVE-2024-27982 family). The byte before `at` is in the read buffer,
     * or was the last byte of the previous parse call. */
    if (len == 0)
        return 0; /* an empty value ("X-Empty:") starts right after the LF too */
    char before = byte_before(hc, at, 1);
    if (before == '\n' || memchr(at, '\r', len) || memchr(at, '\n', len))
        return reject(p, 400, "folded header line");
    kr_sbuf_append(&hc->arena, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    http_conn_t *hc = hc_of(p);
    kr_server_t *s = hc->conn->server;
    if (!hc->field_done)
        return reject(p, 400, "empty header name");
    if (hc->nheaders >= s->limits.max_header_count)
        return reject(p, 431, "too many request headers");
    /* Trim trailing whitespace (OWS) from the value. */
    char *base = kr_sbuf_data(&hc->arena);
    size_t end = kr_sbuf_len(&hc->arena);
    while (end > hc->value_off && (base[end - 1] == ' ' || base[end - 1] == '\t'))
        end--;
    hc->arena.buf->len = end;
    kr_sbuf_putc(&hc->arena, '\0');
    base = kr_sbuf_data(&hc->arena);
    const char *name = base + hc->field_off;
    const char *value = base + hc->value_off;
    if (strcmp(name, "content-length") == 0)
        hc->saw_cl = 1;
    else if (strcmp(name, "transfer-encoding") == 0)
        hc->saw_te = 1;
    else if (strcmp(name, "host") == 0)
        hc->saw_host++;
    else if (strcmp(name, "expect") == 0 && kr_strncasecmp(value, "100-continue", 13) == 0)
        hc->expect_continue = 1;
    if (hc->nheaders == hc->offs_cap) {
        hc->offs_cap = hc->offs_cap ? hc->offs_cap * 2 : 16;
        hc->offs = kr_realloc(hc->offs, sizeof(size_t) * 2 * hc->offs_cap);
    }
    hc->offs[2 * hc->nheaders] = hc->field_off;
    hc->offs[2 * hc->nheaders + 1] = hc->value_off;
    hc->nheaders++;
    hc->field_off = kr_sbuf_len(&hc->arena);
    hc->field_done = 0;
    return 0;
}

/* Moves the URL and the header arena into the request and points its fields at them. */
static int build_request(http_conn_t *hc, kr_http_req_t *req)
{
    size_t url_len = kr_sbuf_len(&hc->url);
    size_t arena_len = kr_sbuf_len(&hc->arena);
    /* One block: arena | target \0 | decoded path \0 | query \0 */
    char *block = kr_malloc(arena_len + 3 * (url_len + 1) + 2);
    memcpy(block, kr_sbuf_data(&hc->arena), arena_len);
    char *target = block + arena_len;
    memcpy(target, kr_sbuf_data(&hc->url), url_len);
    target[url_len] = '\0';
    req->_priv = block;
    req->target = target;
    req->headers = kr_malloc(sizeof(kr_http_header_t) * (hc->nheaders ? hc->nheaders : 1));
    for (unsigned i = 0; i < hc->nheaders; i++) {
        kr_http_header_t *h = &req->headers[i];
        h->name = block + hc->offs[2 * i];
        h->value = block + hc->offs[2 * i + 1];
        h->name_len = strlen(h->name);
        h->value_len = strlen(h->value);
    }
    req->nheaders = hc->nheaders;

    /* Origin form "/path?query"; absolute form "http://host/path"; "*" for OPTIONS. */
    const char *path = target;
    if (url_len == 1 && target[0] == '*') {
        path = target;
    } else if (target[0] != '/') {
        const char *scheme = strstr(target, "://");
        if (scheme == NULL)
            return KR_EINVAL;
        path = strchr(scheme + 3, '/');
        if (path == NULL)
            path = "/";
    }
    const char *q = strchr(path, '?');
    size_t path_raw_len = q ? (size_t)(q - path) : strlen(path);
    char *decoded = target + url_len + 1;
    long dl = percent_decode(path, path_raw_len, decoded);
    if (dl < 0)
        return KR_EINVAL;
    req->path = decoded;
    req->path_len = (size_t)dl;
    if (q) {
        char *query = decoded + dl + 1;
        strcpy(query, q + 1);
        req->query = query;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    http_conn_t *hc = hc_of(p);
    kr_server_t *s = hc->conn->server;
    kr_http_req_t *req = hc->parsing;
    if (hc->saw_cl && hc->saw_te)
        return reject(p, 400, "both Content-Length and Transfer-Encoding");
    if (build_request(hc, req) != 0)
        return reject(p, 400, "bad request target");
    const char *mname = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    size_t mlen = strlen(mname);
    if (mlen >= sizeof(req->method_name))
        mlen = sizeof(req->method_name) - 1;
    memcpy(req->method_name, mname, mlen);
    req->method_name[mlen] = '\0';
    req->method = kr_router_method_bit(mname, strlen(mname));
    req->http_minor = llhttp_get_http_minor(p);
    req->keep_alive = llhttp_should_keep_alive(p) && !llhttp_get_upgrade(p);
    if (llhttp_get_http_major(p) != 1)
        return reject(p, 505, "unsupported HTTP version");
    /* RFC 9112 3.2: an HTTP/1.1 request without Host gets 400 (Kestrel does the same). */
    if (req->http_minor >= 1 && !hc->saw_host)
        return reject(p, 400, "missing Host header");
    if (hc->saw_host > 1)
        return reject(p, 400, "more than one Host header");
    if (hc->saw_cl && p->content_length > s->limits.max_body_bytes)
        return reject(p, 413, "request body too large");
    hc->phase = PHASE_BODY;
    hc->conn->deadline_ms = uv_now(s->loop) + s->limits.header_timeout_ms;
    if (hc->expect_continue && req->http_minor == 1 && (hc->saw_cl || hc->saw_te))
        kr_conn_write_copy(hc->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    http_conn_t *hc = hc_of(p);
    kr_server_t *s = hc->conn->server;
    if (kr_sbuf_len(&hc->body) + len > s->limits.max_body_bytes)
        return reject(p, 413, "request body too large");
    kr_sbuf_append(&hc->body, at, len);
    hc->has_body = 1;
    /* The header timeout doubles as a minimum data rate: each chunk buys another window. */
    hc->conn->deadline_ms = uv_now(s->loop) + s->limits.header_timeout_ms;
    return 0;
}

static int on_chunk_ext(llhttp_t *p, const char *at, size_t len)
{
    http_conn_t *hc = hc_of(p);
    KR_UNUSED(at);
    hc->chunk_ext_bytes += len;
    if (hc->chunk_ext_bytes > hc->conn->server->limits.max_chunk_ext_bytes)
        return reject(p, 400, "chunk extensions too large");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    http_conn_t *hc = hc_of(p);
    kr_http_req_t *req = hc->parsing;
    hc->parsing = NULL;
    if (hc->has_body && kr_sbuf_len(&hc->body) > 0) {
        req->body = kr_sbuf_finish(&hc->body);
        kr_sbuf_init(&hc->body, 1024);
    }
    hc->ready = req;
    return HPE_PAUSED; /* process_input dispatches it and parses the rest after the response */
}

/* ---- responses -------------------------------------------------------------------------- */

static const struct {
    int code;
    const char *text;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Payload Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Entity"},
    {423, "Locked"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *kr_http_reason(int status)
{
    for (size_t i = 0; i < KR_ARRAY_SIZE(reasons); i++)
        if (reasons[i].code == status)
            return reasons[i].text;
    return "Unknown";
}

static int status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* Whether a caller-supplied header says the connection must close. */
static int wants_close(const kr_http_header_t *headers, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (headers[i].name_len == 10 && kr_strncasecmp(headers[i].name, "connection", 10) == 0 &&
            headers[i].value_len == 5 && kr_strncasecmp(headers[i].value, "close", 5) == 0)
            return 1;
    return 0;
}

/* Writes v in decimal (no NUL); returns the length. out has room for 20 digits. */
static size_t format_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static int has_header(const kr_http_header_t *headers, unsigned n, const char *name, size_t len)
{
    for (unsigned i = 0; i < n; i++)
        if (headers[i].name_len == len && kr_strncasecmp(headers[i].name, name, len) == 0)
            return 1;
    return 0;
}

/* The response head; with inline_body, the body follows it in the same buffer. */
static kr_buf_t *build_head(kr_http_req_t *req, int status, const kr_http_header_t *headers,
                            unsigned n, int64_t content_length, const kr_buf_t *inline_body)
{
    kr_server_t *s = req->server;
    if (s->stopping || wants_close(headers, n))
        req->keep_alive = 0;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256 + (inline_body ? inline_body->len : 0));
    /* The hot path of every response: plain appends, no printf. */
    char digits[24];
    kr_sbuf_append(&sb, "HTTP/1.1 ", 9);
    kr_sbuf_append(&sb, digits, format_u64(digits, (uint64_t)status));
    kr_sbuf_putc(&sb, ' ');
    kr_sbuf_puts(&sb, kr_http_reason(status));
    kr_sbuf_append(&sb, "\r\n", 2);
    if (!has_header(headers, n, "server", 6))
        kr_sbuf_puts(&sb, "Server: kestrun\r\n");
    if (!has_header(headers, n, "date", 4))
    {
        kr_sbuf_append(&sb, "Date: ", 6);
        kr_sbuf_append(&sb, kr_server_date(s), KR_HTTP_DATE_LEN);
        kr_sbuf_append(&sb, "\r\n", 2);
    }
    for (unsigned i = 0; i < n; i++) {
        const kr_http_header_t *h = &headers[i];
        /* Framing headers are ours: a handler cannot desynchronise the connection. */
        if ((h->name_len == 14 && kr_strncasecmp(h->name, "content-length", 14) == 0) ||
            (h->name_len == 17 && kr_strncasecmp(h->name, "transfer-encoding", 17) == 0) ||
            (h->name_len == 10 && kr_strncasecmp(h->name, "connection", 10) == 0))
            continue;
        kr_sbuf_append(&sb, h->name, h->name_len);
        kr_sbuf_append(&sb, ": ", 2);
        kr_sbuf_append(&sb, h->value, h->value_len);
        kr_sbuf_append(&sb, "\r\n", 2);
    }
    for (unsigned i = 0; i < req->nextra_headers; i++) {
        const kr_http_header_t *h = &req->extra_headers[i];
        if (!(h->name_len == 4 && kr_strncasecmp(h->name, "vary", 4) == 0) &&
            has_header(headers, n, h->name, h->name_len))
            continue; /* the response's own header wins */
        kr_sbuf_append(&sb, h->name, h->name_len);
        kr_sbuf_append(&sb, ": ", 2);
        kr_sbuf_append(&sb, h->value, h->value_len);
        kr_sbuf_append(&sb, "\r\n", 2);
    }
    if (status_has_body(status) || status == 304) {
        if (content_length >= 0) {
            if (status != 304)
            {
                kr_sbuf_append(&sb, "Content-Length: ", 16);
                kr_sbuf_append(&sb, digits, format_u64(digits, (uint64_t)content_length));
                kr_sbuf_append(&sb, "\r\n", 2);
            }
        } else if (req->http_minor >= 1) {
            kr_sbuf_puts(&sb, "Transfer-Encoding: chunked\r\n");
            req->chunked = 1;
        } else {
            req->keep_alive = 0; /* HTTP/1.0: the body ends with the connection */
        }
    }
    if (!req->keep_alive)
        kr_sbuf_puts(&sb, "Connection: close\r\n");
    else if (req->http_minor == 0)
        kr_sbuf_puts(&sb, "Connection: keep-alive\r\n");
    kr_sbuf_append(&sb, "\r\n", 2);
    if (inline_body)
        kr_sbuf_append(&sb, inline_body->data, inline_body->len);
    return kr_sbuf_finish(&sb);
}

static int skip_body_for(const kr_http_req_t *req, int status)
{
    return req->method == KR_M_HEAD || !status_has_body(status);
}

static int skip_body(const kr_http_req_t *req)
{
    return skip_body_for(req, req->status);
}

#define SMALL_BODY_BYTES 4096

static void finish_response(kr_http_req_t *req);

int kr_http_respond_start(kr_http_req_t *req, int status, const kr_http_header_t *headers,
                          unsigned n, int64_t content_length)
{
    if (req->head_sent)
        return KR_EINVAL;
    req->head_sent = 1;
    req->status = status;
    if (req->conn == NULL)
        return KR_ECLOSED;
    kr_buf_t *head = build_head(req, status, headers, n, content_length, NULL);
    req->remaining = skip_body(req) ? 0 : content_length;
    return kr_conn_write(req->conn, head);
}

int kr_http_respond_body(kr_http_req_t *req, kr_buf_t *buf)
{
    if (!req->head_sent || req->done) {
        kr_buf_unref(buf);
        return KR_EINVAL;
    }
    if (req->conn == NULL || skip_body(req) || buf->len == 0) {
        int closed = req->conn == NULL;
        kr_buf_unref(buf);
        return closed ? KR_ECLOSED : 0;
    }
    if (req->chunked) {
        char size[24];
        int l = snprintf(size, sizeof(size), "%zx\r\n", buf->len);
        kr_conn_write_copy(req->conn, size, (size_t)l);
        kr_conn_write(req->conn, buf);
        return kr_conn_write_copy(req->conn, "\r\n", 2);
    }
    if (req->remaining >= 0) {
        if ((int64_t)buf->len > req->remaining) {
            kr_buf_unref(buf);
            return KR_EINVAL; /* more than the announced Content-Length */
        }
        req->remaining -= (int64_t)buf->len;
    }
    return kr_conn_write(req->conn, buf);
}

int kr_http_respond_end(kr_http_req_t *req)
{
    if (!req->head_sent || req->done)
        return KR_EINVAL;
    if (req->conn != NULL && req->chunked && !skip_body(req))
        kr_conn_write_copy(req->conn, "0\r\n\r\n", 5);
    if (req->conn != NULL && req->remaining > 0)
        req->keep_alive = 0; /* short body: the peer can only tell by the close */
    finish_response(req);
    return req->conn == NULL ? KR_ECLOSED : 0;
}

int kr_http_respond(kr_http_req_t *req, int status, const kr_http_header_t *headers, unsigned n,
                    kr_buf_t *body)
{
    if (req->head_sent) {
        kr_buf_unref(body);
        return KR_EINVAL;
    }
    int64_t len = body ? (int64_t)body->len : 0;
    if (req->conn != NULL && body != NULL && body->len <= SMALL_BODY_BYTES &&
        body->refcnt == 1) {
        /* A small private body travels in the head's buffer: one allocation and one iovec
         * fewer per response (a shared body, a broadcast for instance, is never copied). */
        req->head_sent = 1;
        req->status = status;
        kr_buf_t *head = build_head(req, status, headers, n, len, skip_body_for(req, status)
                                                                       ? NULL
                                                                       : body);
        kr_buf_unref(body);
        kr_conn_write(req->conn, head);
        req->remaining = 0;
        return kr_http_respond_end(req);
    }
    int err = kr_http_respond_start(req, status, headers, n, len);
    if (err == 0 && body)
        err = kr_http_respond_body(req, body);
    else
        kr_buf_unref(body);
    int end = kr_http_respond_end(req);
    return err ? err : end;
}

int kr_http_respond_text(kr_http_req_t *req, int status, const char *content_type, const char *body,
                         size_t len)
{
    kr_http_header_t h = {"Content-Type", content_type, 12, strlen(content_type)};
    return kr_http_respond(req, status, &h, 1, len ? kr_buf_from(body, len) : NULL);
}

size_t kr_http_req_queued(const kr_http_req_t *req)
{
    return req->conn ? kr_conn_queued(req->conn) : 0;
}

int kr_http_req_on_drain(kr_http_req_t *req, kr_http_drain_cb cb, void *ud)
{
    if (req->conn == NULL || req->done)
        return KR_ECLOSED;
    req->on_drain = cb;
    req->drain_ud = ud;
    kr__server_want_flush(req->server, req->conn); /* an empty queue drains at once */
    return 0;
}

kr_conn_t *kr_http_take_over(kr_http_req_t *req, const kr_conn_proto_t *proto, void *proto_data)
{
    kr_conn_t *c = req->conn;
    if (c == NULL || kr_conn_is_closing(c) || c->close_after_flush)
        return NULL;
    http_conn_t *hc = c->proto_data;
    KR_ASSERT(hc->active == req);
    req->done = 1;
    req->head_sent = 1;
    req->conn = NULL;
    hc->active = NULL;
    kr_http_req_unref(req); /* the connection's reference */
    if (hc->processing)
        hc->taken_over = 1; /* the handler runs inside process_input, which still uses hc */
    else
        free_http_state(hc);
    c->proto = proto;
    c->proto_data = proto_data;
    c->deadline_ms = 0;
    kr_conn_read_start(c);
    if (c->rlen > 0) {
        c->replay_input = 1; /* the new protocol reads it from the next check phase */
        kr__server_want_flush(c->server, c);
    }
    return c;
}

/* ---- connection protocol ---------------------------------------------------------------- */

static void set_idle(http_conn_t *hc)
{
    kr_server_t *s = hc->conn->server;
    hc->phase = PHASE_IDLE;
    hc->conn->deadline_ms = uv_now(s->loop) + s->limits.keepalive_timeout_ms;
}

static void finish_response(kr_http_req_t *req)
{
    req->done = 1;
    kr_conn_t *c = req->conn;
    if (c == NULL)
        return;
    http_conn_t *hc = c->proto_data;
    KR_ASSERT(hc->active == req);
    hc->active = NULL;
    req->on_drain = NULL;
    int keep = req->keep_alive;
    kr_http_req_unref(req); /* the connection's reference */
    if (!keep || c->server->stopping) {
        kr_conn_close_after_flush(c);
        return;
    }
    set_idle(hc);
    kr_conn_read_start(c);
    if (c->rlen > 0)
        process_input(hc);
}

static void send_error(http_conn_t *hc, int status, const char *why)
{
    kr_conn_t *c = hc->conn;
    kr_server_t *s = c->server;
    s->stats.bad_requests++;
    KR_LOG(KR_LOG_INFO, "http", "conn=%llu %s: %d %s (%s)", (unsigned long long)c->id,
           c->remote_addr, status, kr_http_reason(status), why);
    if (hc->active == NULL) {
        char head[256];
        const char *text = kr_http_reason(status);
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d %s\r\nServer: kestrun\r\nDate: %s\r\nContent-Type: "
                         "text/plain; charset=utf-8\r\nContent-Length: %zu\r\nConnection: "
                         "close\r\n\r\n%s",
                         status, text, kr_server_date(s), strlen(text), text);
        kr_conn_write_copy(c, head, (size_t)n);
    }
    kr_conn_close_after_flush(c);
}

static void dispatch(http_conn_t *hc, kr_http_req_t *req)
{
    kr_server_t *s = hc->conn->server;
    hc->active = req;
    hc->phase = PHASE_ACTIVE;
    hc->conn->deadline_ms = 0;
    s->stats.requests++;
    kr_http_req_ref(req); /* kept across the handler call: it may finish the response */
    if (s->handler)
        s->handler(req, s->handler_ud);
    else
        kr_http_respond_text(req, 404, "text/plain; charset=utf-8", "Not Found", 9);
    kr_http_req_unref(req);
}

/* Keeps the last two parsed bytes: callbacks of the next parse call look behind them. */
static void remember_tail(http_conn_t *hc, size_t used)
{
    const char *rbuf = hc->conn->rbuf;
    if (used >= 2) {
        hc->last_bytes[0] = rbuf[used - 2];
        hc->last_bytes[1] = rbuf[used - 1];
    } else if (used == 1) {
        hc->last_bytes[0] = hc->last_bytes[1];
        hc->last_bytes[1] = rbuf[0];
    }
}

static void process_input(http_conn_t *hc)
{
    kr_conn_t *c = hc->conn;
    if (hc->processing)
        return; /* the outer call's loop picks the new state up */
    hc->processing = 1;
    kr_conn_ref(c);
    while (!hc->taken_over && !kr_conn_is_closing(c) && !c->close_after_flush &&
           hc->active == NULL && c->rlen > 0) {
        llhttp_errno_t err = llhttp_execute(&hc->parser, c->rbuf, c->rlen);
        size_t used = c->rlen;
        if (err != HPE_OK)
            used = (size_t)(llhttp_get_error_pos(&hc->parser) - c->rbuf);
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            /* Paused on a complete message: consume it, dispatch, then carry on. */
            if (err == HPE_PAUSED_UPGRADE)
                llhttp_resume_after_upgrade(&hc->parser);
            else
                llhttp_resume(&hc->parser);
            remember_tail(hc, used);
            kr_conn_consume(c, used);
            kr_http_req_t *req = hc->ready;
            hc->ready = NULL;
            if (req)
                dispatch(hc, req);
            continue;
        }
        if (err != HPE_OK) {
            int status = hc->error_status ? hc->error_status : 400;
            const char *why =
                hc->error_reason ? hc->error_reason : llhttp_get_error_reason(&hc->parser);
            send_error(hc, status, why ? why : llhttp_errno_name(err));
            break;
        }
        remember_tail(hc, used);
        kr_conn_consume(c, used);
        if (c->rlen == 0 && hc->phase == PHASE_IDLE)
            break;
    }
    /* A head or body that fills the whole read buffer can never complete. */
    if (!kr_conn_is_closing(c) && !c->close_after_flush && hc->active == NULL && c->rlen >= c->rmax)
        send_error(hc, hc->phase == PHASE_BODY ? 413 : 431, "read buffer full");
    hc->processing = 0;
    if (hc->taken_over)
        free_http_state(hc);
    kr_conn_unref(c);
}

static http_conn_t *http_state_new(kr_conn_t *c);

static void http_on_read(kr_conn_t *c)
{
    http_conn_t *hc = c->proto_data;
    if (hc == NULL)
        hc = http_state_new(c); /* first bytes on this connection */
    if (hc->active != NULL) {
        /* Pipelined bytes wait in the buffer; reading stops when it is full. */
        return;
    }
    process_input(hc);
}

static void http_on_eof(kr_conn_t *c)
{
    http_conn_t *hc = c->proto_data;
    if (hc == NULL) {
        kr_conn_close(c, NULL); /* closed before sending a byte */
        return;
    }
    if (hc->active != NULL) {
        /* Half-close while a handler runs: answer, then close. */
        hc->active->keep_alive = 0;
        kr_conn_read_stop(c);
        return;
    }
    if (hc->phase == PHASE_BODY || (hc->phase == PHASE_HEAD && hc->parsing != NULL)) {
        KR_LOG(KR_LOG_DEBUG, "http", "conn=%llu closed in the middle of a request",
               (unsigned long long)c->id);
    }
    kr_conn_close(c, NULL);
}

static void http_on_drain(kr_conn_t *c)
{
    http_conn_t *hc = c->proto_data;
    if (hc == NULL) {
        if (c->server->stopping)
            kr_conn_close(c, NULL);
        return;
    }
    if (hc->active != NULL && hc->active->on_drain != NULL) {
        kr_http_req_t *req = hc->active;
        kr_http_drain_cb cb = req->on_drain;
        req->on_drain = NULL;
        cb(req, req->drain_ud);
        return;
    }
    if (c->server->stopping && hc->active == NULL && hc->phase != PHASE_BODY)
        kr_conn_close_after_flush(c);
}

static void http_on_timeout(kr_conn_t *c)
{
    http_conn_t *hc = c->proto_data;
    if (hc == NULL) {
        kr_conn_close(c, "no request before the header timeout");
        return;
    }
    if (hc->phase == PHASE_HEAD || hc->phase == PHASE_BODY)
        send_error(hc, 408,
                   hc->phase == PHASE_HEAD ? "request headers timeout" : "request body timeout");
    else
        kr_conn_close(c, "keep-alive timeout");
}

static void http_on_close(kr_conn_t *c)
{
    http_conn_t *hc = c->proto_data;
    if (hc == NULL)
        return;
    if (hc->active) {
        kr_http_req_t *req = hc->active;
        hc->active = NULL;
        req->conn = NULL;
        kr_http_drain_cb cb = req->on_drain;
        req->on_drain = NULL;
        if (cb)
            cb(req, req->drain_ud); /* the streaming producer learns the connection is gone */
        kr_http_req_unref(req);
    }
    free_http_state(hc);
    c->proto_data = NULL;
}

const kr_conn_proto_t kr_http_proto = {
    .name = "http",
    .on_read = http_on_read,
    .on_eof = http_on_eof,
    .on_drain = http_on_drain,
    .on_timeout = http_on_timeout,
    .on_close = http_on_close,
};

static void init_settings(void)
{
    if (parser_settings.on_message_begin != NULL)
        return;
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_field_complete = on_header_field_complete;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_chunk_extension_name = on_chunk_ext;
    parser_settings.on_chunk_extension_value = on_chunk_ext;
    parser_settings.on_message_complete = on_message_complete;
}

/* The protocol state is created on the first bytes, so idle accepted sockets cost only the
 * kr_conn itself. Until then the deadline is the header timeout from accept. */
static http_conn_t *http_state_new(kr_conn_t *c)
{
    init_settings();
    http_conn_t *hc = kr_calloc(1, sizeof(*hc));
    hc->conn = c;
    llhttp_init(&hc->parser, HTTP_REQUEST, &parser_settings);
    hc->parser.data = hc;
    kr_sbuf_init(&hc->url, 256);
    kr_sbuf_init(&hc->arena, 1024);
    kr_sbuf_init(&hc->body, 1024);
    c->proto_data = hc;
    return hc;
}
