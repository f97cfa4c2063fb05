/* fuzz_ws.c: libFuzzer target for inbound WebSocket frames (kr_ws + wslay over a socketless
 * kr_conn). The first input byte picks the chunk size (1..64), so frame headers, masks and
 * payloads split across reads are exercised as well as whole reads; bit 6 of the second
 * byte makes the handler echo each message (our encoder and the output queue then run
 * interleaved with wslay's pongs and close replies), bit 7 makes it start the closing
 * handshake from inside on_message. Limits are small so the fuzzer reaches them. */
#include "kr_conn.h"
#include "kr_server.h"
#include "kr_ws.h"

#include <stdlib.h>

typedef struct fuzz_state_s {
    int echo, close_in_handler;
    int closes;
} fuzz_state_t;

static void on_message(kr_ws_t *ws, int binary, const char *data, size_t len, void *ud)
{
    fuzz_state_t *st = ud;
    if (st->echo)
        (void)(binary ? kr_ws_send_binary(ws, data, len) : kr_ws_send_text(ws, data, len));
    if (st->close_in_handler)
        kr_ws_close(ws, 1000, "bye");
}

static void on_close(kr_ws_t *ws, int code, void *ud)
{
    fuzz_state_t *st = ud;
    (void)ws;
    if (code < 1000 || code > 4999 || ++st->closes != 1)
        abort(); /* exactly once, with a code that can be reported */
}

static void no_read(kr_conn_t *c)
{
    kr_conn_consume(c, c->rlen);
}

static const kr_conn_proto_t placeholder = {.name = "fuzz", .on_read = no_read};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    fuzz_state_t st = {.echo = (data[1] >> 6) & 1, .close_in_handler = data[1] >> 7};
    data += 2;
    size -= 2;
    uv_loop_t loop;
    uv_loop_init(&loop);
    kr_server_t s;
    kr_server_init(&s, &loop);
    kr_conn_t *c = kr__conn_new_detached(&s, &placeholder);
    kr_conn_ref(c);
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.max_message = 4096;
    o.max_fragments = 8;
    static const kr_ws_handler_t h = {on_message, on_close, NULL};
    if (kr__ws_start(c, &h, &st, &o) == NULL)
        abort();
    size_t off = 0;
    while (off < size && !kr_conn_is_closing(c)) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t took = kr__conn_feed(c, data + off, n);
        if (took == 0)
            break;
        off += took;
    }
    kr_conn_close(c, NULL);
    if (st.closes != 1)
        abort();
    kr_conn_unref(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
