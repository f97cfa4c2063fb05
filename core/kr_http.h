/* kr_http.h: HTTP/1.1 on a connection (llhttp glue), requests and the response writer.
 *
 * Parses requests with llhttp in strict mode plus our own pre-checks (bare CR, obs-fold,
 * empty header names, CL+TE), enforces the limits of kr_http_limits_t and answers protocol
 * errors itself (400, 408, 413, 414, 431, then close). A complete request is handed to the
 * server's request handler (kr_server_set_handler), which may answer at once or later
 * (a Lua fiber that sleeps). Requests on one connection are answered in order: while one is
 * in flight the parser is paused, so pipelined requests wait in the read buffer.
 *
 * Owns: the kr_http_req_t objects (refcounted so a handler that outlives its connection
 * stays safe) and their parsed data. Calls: kr_conn (output queue, close), kr_router for
 * method names. Calls up only through the handler callback and the drain callback.
 */
#ifndef KR_HTTP_H
#define KR_HTTP_H

#include "kr_buf.h"
#include "kr_common.h"

typedef struct kr_conn_s kr_conn_t;
typedef struct kr_conn_proto_s kr_conn_proto_t;
typedef struct kr_server_s kr_server_t;

typedef struct kr_http_limits_s {
    size_t max_request_line_bytes; /* 8 KiB (Kestrel MaxRequestLineSize): 414 */
    size_t max_header_bytes;       /* 32 KiB (MaxRequestHeadersTotalSize): 431 */
    unsigned max_header_count;     /* 100 (MaxRequestHeaderCount): 431 */
    uint64_t header_timeout_ms;    /* 30 s (RequestHeadersTimeout): 408 */
    uint64_t keepalive_timeout_ms; /* 130 s (KeepAliveTimeout): close an idle connection */
    size_t max_body_bytes;         /* 30,000,000 (MaxRequestBodySize): 413 */
    size_t max_chunk_ext_bytes;    /* 16 KiB of chunk extensions per request: 400 */
} kr_http_limits_t;

/* Fills in the defaults listed above. */
void kr_http_limits_default(kr_http_limits_t *l);

typedef struct kr_http_header_s {
    const char *name; /* request headers: lower-cased, NUL-terminated */
    const char *value; /* NUL-terminated */
    size_t name_len, value_len;
} kr_http_header_t;

typedef struct kr_http_req_s kr_http_req_t;
typedef void (*kr_http_drain_cb)(kr_http_req_t *req, void *ud);

struct kr_http_req_s {
    uint32_t refs;
    kr_conn_t *conn;        /* NULL once the connection has closed */
    kr_server_t *server;
    unsigned method;        /* KR_M_* bit, or 0 for a method the router does not know */
    char method_name[16];
    char *target;           /* the raw request target, NUL-terminated */
    char *path;             /* percent-decoded path, NUL-terminated (may contain no NUL) */
    size_t path_len;
    const char *query;      /* raw query string after '?', NUL-terminated ("" if none) */
    kr_http_header_t *headers;
    unsigned nheaders;
    kr_buf_t *body;         /* NULL when the request had no body */
    int http_minor;         /* 0 or 1 */
    int keep_alive;         /* the connection may stay open after this response */
    char remote_addr[64];
    /* response state */
    int status;             /* status that was sent (0 before the head went out) */
    int head_sent, done;
    int64_t remaining;      /* body bytes still expected for a started fixed-length response */
    int chunked;            /* the started response uses chunked encoding */
    kr_http_drain_cb on_drain;
    void *drain_ud;
    /* Headers every response of this request carries (CORS), whoever writes it: see
     * kr_http_req_add_response_header. Owned by the request. */
    kr_http_header_t *extra_headers;
    unsigned nextra_headers;
    /* parser scratch, private to kr_http.c */
    void *_priv;
};

/* Headers: case-insensitive lookup; returns the value (NUL-terminated) or NULL. */
const char *kr_http_req_header(const kr_http_req_t *req, const char *name, size_t *len);

/* Query string: finds the first parameter named key (compared case-insensitively when nocase,
 * as .NET does for SignalR's parameters) in query (the part after '?', NUL-terminated) and
 * sets *val and *len to its value, still URL-encoded ("" for "key" or "key="). 1 when found. */
int kr_http_query_find(const char *query, const char *key, int nocase, const char **val,
                       size_t *len);
/* Form-decodes s[0..n) ('+' is a space, %XX a byte; a bad escape stays as it is) into out,
 * which has room for n bytes. Returns the decoded length (at most n). */
size_t kr_http_form_decode(const char *s, size_t n, char *out);

/* Adds a header (copied) to every response of req, before it is started: kr_http_respond*
 * emit it after the caller's headers, unless the caller already sets one of that name (the
 * caller wins), except Vary, which is a list and is always added. For request-wide policies
 * such as CORS, so code that answers (hubs, static files, errors) needs no change. The name
 * must be a token and the value free of CR, LF and NUL (the caller checks). */
void kr_http_req_add_response_header(kr_http_req_t *req, const char *name, const char *value);
/* Appends those headers as "Name: value\r\n" lines, for a head written by hand (SSE). */
void kr_http_req_put_extra_headers(const kr_http_req_t *req, kr_sbuf_t *sb);

void kr_http_req_ref(kr_http_req_t *req);
void kr_http_req_unref(kr_http_req_t *req);

/* Whole response in one call. headers are the caller's (copied); body is taken (may be NULL).
 * Adds Date, Server, Content-Length and Connection; omits the body for HEAD and for 1xx/204/304.
 * Returns 0, or KR_ECLOSED when the connection is gone (the body is released either way),
 * or KR_EINVAL if a response was already started. */
int kr_http_respond(kr_http_req_t *req, int status, const kr_http_header_t *headers, unsigned n,
                    kr_buf_t *body);
/* Convenience: a short body with a content type. */
int kr_http_respond_text(kr_http_req_t *req, int status, const char *content_type,
                         const char *body, size_t len);

/* Streaming response. content_length < 0 means chunked (HTTP/1.1) or close-delimited
 * (HTTP/1.0). Then push body buffers (taken) and finally end. For HEAD the body is dropped
 * but the head keeps the given Content-Length. */
int kr_http_respond_start(kr_http_req_t *req, int status, const kr_http_header_t *headers,
                          unsigned n, int64_t content_length);
int kr_http_respond_body(kr_http_req_t *req, kr_buf_t *buf);
int kr_http_respond_end(kr_http_req_t *req);
/* Bytes queued on the connection and not yet written (0 when closed). A streaming producer
 * stops above its chunk budget and asks for a drain callback, fired once when the queue
 * has been written out, or with req->conn == NULL if the connection closes first. Returns 0,
 * or KR_ECLOSED (and never calls cb) when the connection is already gone. */
size_t kr_http_req_queued(const kr_http_req_t *req);
int kr_http_req_on_drain(kr_http_req_t *req, kr_http_drain_cb cb, void *ud);

/* Protocol switch (WebSocket, SSE streams): ends the HTTP handling of req's connection and
 * hands the connection to proto with proto_data. Whatever is already queued (a 101 or a 200
 * head written with kr_http_respond_start/kr_conn_write) stays queued; bytes already read
 * past the request stay in the read buffer for the new protocol, which gets an on_read call
 * from the next loop turn if there are any. The request is finished (req->conn becomes NULL).
 * Returns the connection, or NULL if it is already closing. */
kr_conn_t *kr_http_take_over(kr_http_req_t *req, const kr_conn_proto_t *proto, void *proto_data);

/* The standard reason phrase of a status code ("Not Found"). */
const char *kr_http_reason(int status);

#endif
