/* kr_sr_sse.c: the Server-Sent Events transport of hub connections: the event framing of
 * the records sent (one event per delivery unit: make_unit frames it once per broadcast, shared
 * by every SSE recipient) and the event-stream response that carries them. Client messages come in POSTs (kr_hub.c's receive_post). See kr_hub.h.
 *
 * The GET that starts the stream leaves HTTP: its connection is taken over with a protocol of
 * its own (sse_proto), and the response has no length, so it ends with the connection. The
 * client sends nothing on it; EOF or a reset ends the logical connection. Sends go straight to
 * the connection's output queue (kr_hub.c's deliver), so its hard limit bounds a slow reader.
 */
#include "kr_hub_int.h"
#include "kr_conn.h"
#include "kr_server.h"

/* One Server-Sent Events event: every LF-separated line as "data: line" (a CR before the LF
 * dropped), then an empty line. EventSource joins the lines with LF again. */
kr_buf_t *kr__sr_sse_event(const kr_buf_t *records)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, records->len + 16);
    const char *p = records->data, *end = records->data + records->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        size_t n = (size_t)(stop - p);
        if (nl && n > 0 && stop[-1] == '\r')
            n--;
        kr_sbuf_append(&sb, "data: ", 6);
        kr_sbuf_append(&sb, p, n);
        kr_sbuf_append(&sb, "\r\n", 2);
        p = nl ? nl + 1 : end;
    }
    kr_sbuf_append(&sb, "\r\n", 2);
    return kr_sbuf_finish(&sb);
}

/* The event stream carries nothing from the client: input is dropped, EOF or a reset ends it. */
static void sse_on_read(kr_conn_t *conn)
{
    kr_conn_consume(conn, conn->rlen);
}

static void sse_on_close(kr_conn_t *conn)
{
    kr_sr_conn_t *c = conn->proto_data;
    if (c == NULL)
        return;
    conn->proto_data = NULL;
    c->sse = NULL;
    kr_sr_conn_ref(c);
    kr__sr_conn_ended(c, NULL);
    kr_sr_conn_unref(c);
}

static const kr_conn_proto_t sse_proto = {
    .name = "sse",
    .on_read = sse_on_read,
    .on_close = sse_on_close,
};

void kr__sr_start_sse(kr_hub_t *hub, kr_http_req_t *req, kr_sr_conn_t *c)
{
    /* The body has no length: it ends with the connection. ":\r\n" (a comment) is flushed at
     * once so that EventSource reports the stream open. */
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    kr_sbuf_puts(&sb, "HTTP/1.1 200 OK\r\nServer: kestrun\r\nDate: ");
    kr_sbuf_puts(&sb, kr_server_date(hub->server));
    kr_sbuf_puts(&sb, "\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
    kr_http_req_put_extra_headers(req, &sb); /* CORS */
    kr_sbuf_puts(&sb, "Connection: close\r\n\r\n:\r\n");
    kr_conn_t *conn = req->conn;
    if (conn == NULL || kr_conn_write(conn, kr_sbuf_finish(&sb)) != 0)
        return;
    if (kr_http_take_over(req, &sse_proto, c) == NULL)
        return;
    conn->high_water = 0; /* nothing to read: only the hard limit matters */
    conn->corkable = 1;
    conn->hard_limit = hub->opts.hard_limit;
    c->sse = conn;
    c->transport = KR_SR_TRANSPORT_SSE;
    c->wire = KR_WIRE_SSE_JSON;
    c->state = SR_HANDSHAKING;
    c->created_ms = c->last_recv_ms = kr__hub_now(hub); /* the handshake timeout starts now */
}
