/* kr_sr_negotiate.c: the negotiate endpoint of a hub (POST {hub}/negotiate): it creates the
 * logical connection (NEGOTIATED, with a token for negotiateVersion 1) and answers with its id,
 * the transports the hub enables and, when the client asked and the hub allows it, stateful
 * reconnect; and the query-string reading every hub endpoint shares (?id=,
 * ?negotiateVersion=). See kr_hub.h.
 *
 * Nothing here runs per message: negotiate is once per connection, and the connection it
 * creates belongs to the hub's index (kr_hub.c) from the start, so a client that never comes
 * back is dropped by the hub's tick after disconnect_timeout_ms.
 */
#include "kr_hub_int.h"
#include "kr_json.h"
#include "kr_router.h"

#include <stdio.h>
#include <stdlib.h>

/* Finds a query parameter (key compared case-insensitively, as .NET does) and percent-decodes
 * its value into out. Returns the length, -1 when absent, or -2 when too long for out (which
 * is never a valid value: the caller answers as for an unknown one). */
long kr__sr_query_param(const kr_http_req_t *req, const char *key, char *out, size_t outlen)
{
    const char *val;
    size_t len;
    if (!kr_http_query_find(req->query, key, 1, &val, &len))
        return -1;
    /* Decoding never lengthens: a value that fits raw fits decoded; a longer one is decoded
     * aside to learn whether it fits. */
    char *tmp = len < outlen ? out : kr_malloc(len);
    size_t n = kr_http_form_decode(val, len, tmp);
    if (n >= outlen) {
        kr_free(tmp);
        return -2;
    }
    if (tmp != out) {
        memcpy(out, tmp, n);
        kr_free(tmp);
    }
    out[n] = '\0';
    return (long)n;
}

static void respond_json(kr_http_req_t *req, kr_sbuf_t *sb)
{
    kr_http_header_t h[] = {
        {"Content-Type", "application/json", 12, 16},
        {"Cache-Control", "no-cache", 13, 8},
    };
    kr_http_respond(req, 200, h, 2, kr_sbuf_finish(sb));
}

void kr__sr_negotiate(kr_hub_t *hub, kr_http_req_t *req, const kr_hub_principal_t *p)
{
    if (req->method != KR_M_POST) {
        kr_http_header_t h = {"Allow", "POST", 5, 4};
        kr_http_respond(req, 405, &h, 1, NULL);
        return;
    }
    char vbuf[32];
    long vlen = kr__sr_query_param(req, "negotiateVersion", vbuf, sizeof(vbuf));
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    long version = 0;
    if (vlen == -2) {
        vbuf[0] = '\0';
        vlen = 0; /* too long to be a version: answered as an invalid one below */
    }
    if (vlen >= 0) {
        char *end;
        version = strtol(vbuf, &end, 10);
        if (vlen == 0 || *end != '\0') {
            kr_sbuf_puts(&sb, "{\"error\":");
            char text[96];
            snprintf(text, sizeof(text), "The client requested an invalid protocol version '%s'",
                     vbuf);
            kr_json_write_string(&sb, text, strlen(text));
            kr_sbuf_putc(&sb, '}');
            respond_json(req, &sb);
            return;
        }
        if (version < 0) {
            kr_sbuf_puts(&sb, "{\"error\":");
            char text[128];
            snprintf(text, sizeof(text),
                     "The client requested version '%ld', but the server does not support this "
                     "version.",
                     version);
            kr_json_write_string(&sb, text, strlen(text));
            kr_sbuf_putc(&sb, '}');
            respond_json(req, &sb);
            return;
        }
        if (version > 1)
            version = 1;
    }
    kr_sr_conn_t *c = kr__sr_conn_new(hub, version >= 1);
    kr__sr_set_principal(c, p);
    kr_sbuf_printf(&sb, "{\"negotiateVersion\":%ld,\"connectionId\":\"%s\"", version, c->id);
    if (version >= 1)
        kr_sbuf_printf(&sb, ",\"connectionToken\":\"%s\"", c->token);
    kr_sbuf_puts(&sb, ",\"availableTransports\":[");
    if (hub->opts.transports & KR_SR_TRANSPORT_WS)
        kr_sbuf_puts(&sb, "{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]}");
    if (hub->opts.transports & KR_SR_TRANSPORT_SSE)
        kr_sbuf_printf(&sb, "%s{\"transport\":\"ServerSentEvents\",\"transferFormats\":[\"Text\"]}",
                       hub->opts.transports & KR_SR_TRANSPORT_WS ? "," : "");
    if (hub->opts.transports & KR_SR_TRANSPORT_LP)
        kr_sbuf_printf(&sb,
                       "%s{\"transport\":\"LongPolling\",\"transferFormats\":[\"Text\",\"Binary\"]}",
                       hub->opts.transports & (KR_SR_TRANSPORT_WS | KR_SR_TRANSPORT_SSE) ? "," : "");
    kr_sbuf_putc(&sb, ']');
    /* Stateful reconnect only when the client asked and the hub allows it (a client that did
     * not ask refuses the connection when the reply says it anyway). */
    char sbuf[8];
    long slen = kr__sr_query_param(req, "useStatefulReconnect", sbuf, sizeof(sbuf));
    if (hub->opts.stateful_reconnect && slen == 4 && kr_strncasecmp(sbuf, "true", 4) == 0) {
        c->stateful_offered = 1;
        kr_sbuf_puts(&sb, ",\"useStatefulReconnect\":true");
    }
    kr_sbuf_putc(&sb, '}');
    respond_json(req, &sb);
}
