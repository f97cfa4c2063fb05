/* fuzz_ws.c: libFuzzer target for inbound WebSocket frames (kr_ws's frame parser over a
 * socketless kr_conn).
 *
 * Input: byte 0 picks the read size (bits 0-5: 1..64 bytes), so frame headers, masks and
 * payloads split across reads are exercised as well as whole reads; bit 6 ends the input with
 * an EOF instead of a TCP close, bit 7 starts our closing handshake halfway through the input.
 * Byte 1: bit 6 makes the handler echo each message (our encoder and the output queue then run
 * interleaved with pongs and close replies), bit 7 makes it start the closing handshake from
 * inside on_message, bit 5 shrinks the read buffer to 96..2080 bytes (bits 0-4) so that
 * frames larger than it are streamed into the reassembly buffer. Limits are small so the
 * fuzzer reaches them.
 *
 * Checked besides memory safety: on_close exactly once with a reportable code, no message
 * after it, text messages valid UTF-8, no message over max_message, and the output is a
 * sequence of complete, unmasked, unfragmented server frames with nothing after a close
 * frame. */
#include "kr_conn.h"
#include "kr_json.h"
#include "kr_server.h"
#include "kr_ws.h"

#include <stdlib.h>

#define MAX_MESSAGE 4096

typedef struct fuzz_state_s {
    int echo, close_in_handler;
    int closes;
} fuzz_state_t;

static void on_message(kr_ws_t *ws, int binary, const char *data, size_t len, void *ud)
{
    fuzz_state_t *st = ud;
    if (st->closes != 0 || len > MAX_MESSAGE || (!binary && !kr_utf8_valid(data, len)))
        abort();
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

/* The queued output must be well-formed server frames; nothing may follow a close frame. */
static void check_output(kr_conn_t *c)
{
    unsigned cnt = c->outq.count;
    if (cnt == 0)
        return;
    uv_buf_t *iov = malloc(cnt * sizeof(*iov));
    if (iov == NULL || kr_outq_peek(&c->outq, iov, cnt) != cnt)
        abort();
    size_t total = 0;
    for (unsigned i = 0; i < cnt; i++)
        total += iov[i].len;
    uint8_t *out = malloc(total);
    if (out == NULL)
        abort();
    size_t o = 0;
    for (unsigned i = 0; i < cnt; i++) {
        memcpy(out + o, iov[i].base, iov[i].len);
        o += iov[i].len;
    }
    free(iov);
    int closed = 0;
    o = 0;
    while (o < total) {
        if (closed || total - o < 2)
            abort();
        int op = out[o] & 0x0f;
        if ((out[o] & 0xf0) != 0x80 || (out[o + 1] & 0x80) ||
            (op != KR_WS_OP_TEXT && op != KR_WS_OP_BINARY && op != KR_WS_OP_CLOSE &&
             op != KR_WS_OP_PONG))
            abort();
        uint64_t len = out[o + 1] & 0x7f;
        o += 2;
        if (len == 126) {
            if (total - o < 2)
                abort();
            len = ((uint64_t)out[o] << 8) | out[o + 1];
            o += 2;
        } else if (len == 127) {
            if (total - o < 8)
                abort();
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | out[o + i];
            o += 8;
        }
        if (total - o < len || (op >= 0x8 && len > 125) || (op == KR_WS_OP_CLOSE && len == 1))
            abort();
        o += (size_t)len;
        closed = op == KR_WS_OP_CLOSE;
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    int eof_at_end = (data[0] >> 6) & 1, close_halfway = data[0] >> 7;
    fuzz_state_t st = {.echo = (data[1] >> 6) & 1, .close_in_handler = data[1] >> 7};
    int small_rbuf = (data[1] >> 5) & 1;
    size_t rmax = 96 + (size_t)(data[1] & 0x1f) * 64;
    data += 2;
    size -= 2;
    uv_loop_t loop;
    uv_loop_init(&loop);
    kr_server_t s;
    kr_server_init(&s, &loop);
    kr_conn_t *c = kr__conn_new_detached(&s, &placeholder);
    kr_conn_ref(c);
    if (small_rbuf)
        c->rmax = rmax;
    kr_ws_opts_t o;
    kr_ws_opts_default(&o);
    o.max_message = MAX_MESSAGE;
    o.max_fragments = 8;
    static const kr_ws_handler_t h = {on_message, on_close, NULL};
    kr_ws_t *ws = kr__ws_start(c, &h, &st, &o);
    if (ws == NULL)
        abort();
    size_t off = 0;
    int closed_halfway = 0;
    while (off < size && !kr_conn_is_closing(c)) {
        if (close_halfway && !closed_halfway && off >= size / 2) {
            closed_halfway = 1;
            kr_ws_close(ws, 4000, "halfway"); /* the kr_ws_t lives while the connection does */
        }
        size_t n = size - off < chunk ? size - off : chunk;
        size_t took = kr__conn_feed(c, data + off, n);
        if (took == 0)
            break;
        off += took;
    }
    if (!kr_conn_is_closing(c)) {
        check_output(c);
        if (eof_at_end)
            c->proto->on_eof(c);
    }
    kr_conn_close(c, NULL);
    if (st.closes != 1)
        abort();
    kr_conn_unref(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
