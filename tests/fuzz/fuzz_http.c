/* fuzz_http.c: libFuzzer target for the HTTP request path (kr_http over a socketless
 * kr_conn). The first input byte picks the chunk size, so incremental parsing across read
 * boundaries is exercised as well as whole reads. Every request is answered at once by a
 * handler that reads the parsed fields, so the response writer runs too. */
#include "kr_conn.h"
#include "kr_http.h"
#include "kr_server.h"

#include <stdlib.h>

extern const kr_conn_proto_t kr_http_proto;

static void handler(kr_http_req_t *req, void *ud)
{
    (void)ud;
    size_t n = 0;
    for (unsigned i = 0; i < req->nheaders; i++)
        n += req->headers[i].name_len + req->headers[i].value_len;
    n += req->path_len + strlen(req->query) + (req->body ? req->body->len : 0);
    (void)kr_http_req_header(req, "host", NULL);
    char body[32];
    int len = snprintf(body, sizeof(body), "%zu", n);
    kr_http_respond_text(req, 200, "text/plain", body, (size_t)len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    data++;
    size--;
    uv_loop_t loop;
    uv_loop_init(&loop);
    kr_server_t s;
    kr_server_init(&s, &loop);
    s.limits.max_header_bytes = 2048; /* small limits so the fuzzer reaches them */
    s.limits.max_request_line_bytes = 512;
    s.limits.max_body_bytes = 4096;
    s.limits.max_header_count = 20;
    s.handler = handler;
    kr_conn_t *c = kr__conn_new_detached(&s, &kr_http_proto);
    kr_conn_ref(c);
    size_t off = 0;
    while (off < size && !kr_conn_is_closing(c)) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t took = kr__conn_feed(c, data + off, n);
        if (took == 0)
            break;
        off += took;
    }
    kr_conn_close(c, NULL);
    kr_conn_unref(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
