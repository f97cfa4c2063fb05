/* kr_redis.c: two hiredis async connections on the libuv loop, with reconnection (see
 * kr_redis.h). Every hiredis callback finds its kr_redis_t through ac->data and first checks
 * that the context is still the one r holds: r's pointer is cleared before a context is freed,
 * so the callbacks hiredis runs while freeing it (NULL replies, onDisconnect) are ignored. */
#include "kr_redis.h"
#include "kr_log.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HEALTH_MS 5000

typedef struct resolve_s {
    uv_getaddrinfo_t req;
    kr_redis_t *r; /* NULL: abandoned (r stopped or freed) */
} resolve_t;

struct kr_redis_s {
    uv_loop_t *loop;
    kr_redis_opts_t o;
    char *channel;
    kr_redis_cbs_t cbs;
    void *ud;
    redisAsyncContext *cmd, *sub;
    redisAsyncContext *closing; /* the command connection, closing cleanly after stop */
    int cmd_ready, sub_ready, up;
    int started, stopped, freeing;
    int attempt_failed; /* this attempt already reported down */
    uint64_t backoff_ms;
    size_t pending;     /* published bytes not yet acknowledged */
    int ping_out;       /* a health PING is unanswered */
    resolve_t *resolving;
    uv_timer_t retry, health;
    int open_handles;
};

/* ---- hiredis on libuv ----------------------------------------------------------------------
 * Our own event adapter rather than Debian 0.14.1's <hiredis/adapters/libuv.h>: that one
 * returns from the poll callback when libuv reports an error (status != 0), and libuv reports
 * a refused non-blocking connect exactly that way (POLLERR, then the poll handle is stopped).
 * hiredis then never learns that the connect failed, and the backplane would never reconnect
 * after a Redis restart. Here an error status is handed to hiredis as the events it waited
 * for, so its read/write path finds the socket error and fails the context. */

typedef struct uv_events_s {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
} uv_events_t;

static void ev_poll(uv_poll_t *h, int status, int events)
{
    uv_events_t *e = h->data;
    int ev = status != 0 ? e->events : events;
    if (e->ac != NULL && (ev & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac != NULL && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_update(uv_events_t *e, int add, int del)
{
    e->events = (e->events | add) & ~del;
    if (e->events)
        uv_poll_start(&e->poll, e->events, ev_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *d)
{
    ev_update(d, UV_READABLE, 0);
}

static void ev_del_read(void *d)
{
    ev_update(d, 0, UV_READABLE);
}

static void ev_add_write(void *d)
{
    ev_update(d, UV_WRITABLE, 0);
}

static void ev_del_write(void *d)
{
    ev_update(d, 0, UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
    kr_free(h->data);
}

static void ev_cleanup(void *d)
{
    uv_events_t *e = d;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    uv_events_t *e = kr_calloc(1, sizeof(*e));
    if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
        kr_free(e);
        return -1;
    }
    e->ac = ac;
    e->poll.data = e;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- URL -------------------------------------------------------------------------------- */

int kr_redis_parse_url(const char *url, kr_redis_opts_t *o, char *err, size_t errlen)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "'%s' is not a redis:// URL", url);
        return KR_EINVAL;
    }
    p += 8;
    const char *at = strrchr(p, '@');
    const char *slash = strchr(at ? at : p, '/');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon ? (size_t)(colon - p) : 0;
        const char *pw = colon ? colon + 1 : p;
        size_t plen = (size_t)(at - pw);
        if (ulen >= sizeof(o->user) || plen >= sizeof(o->password)) {
            snprintf(err, errlen, "user or password too long");
            return KR_EINVAL;
        }
        memcpy(o->user, p, ulen);
        o->user[ulen] = '\0';
        memcpy(o->password, pw, plen);
        o->password[plen] = '\0';
        p = at + 1;
    }
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = NULL;
    if (*p == '[') { /* [v6]:port */
        const char *close = memchr(p, ']', (size_t)(hend - p));
        if (close == NULL) {
            snprintf(err, errlen, "unterminated [ in the host");
            return KR_EINVAL;
        }
        if (close + 1 < hend && close[1] == ':')
            colon = close + 1;
        else if (close + 1 != hend) {
            snprintf(err, errlen, "bad host");
            return KR_EINVAL;
        }
        size_t n = (size_t)(close - p - 1);
        if (n == 0 || n >= sizeof(o->host)) {
            snprintf(err, errlen, "bad host");
            return KR_EINVAL;
        }
        memcpy(o->host, p + 1, n);
        o->host[n] = '\0';
    } else {
        colon = memchr(p, ':', (size_t)(hend - p));
        const char *e = colon ? colon : hend;
        size_t n = (size_t)(e - p);
        if (n == 0 || n >= sizeof(o->host)) {
            snprintf(err, errlen, "missing or too long host");
            return KR_EINVAL;
        }
        memcpy(o->host, p, n);
        o->host[n] = '\0';
    }
    o->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != hend || colon + 1 == hend || port <= 0 || port > 65535) {
            snprintf(err, errlen, "bad port");
            return KR_EINVAL;
        }
        o->port = (int)port;
    }
    o->db = 0;
    if (slash && slash[1] != '\0') {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end != '\0' || db < 0 || db > 65535) {
            snprintf(err, errlen, "bad database number");
            return KR_EINVAL;
        }
        o->db = (int)db;
    }
    return 0;
}

/* ---- connection pair ------------------------------------------------------------------- */

static void connect_pair(kr_redis_t *r);

/* Frees a context r no longer points at (hiredis defers it when inside its own callback). */
static void drop_context(redisAsyncContext *ac)
{
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void teardown(kr_redis_t *r)
{
    redisAsyncContext *cmd = r->cmd, *sub = r->sub;
    r->cmd = r->sub = NULL;
    r->cmd_ready = r->sub_ready = 0;
    r->ping_out = 0;
    drop_context(sub);
    drop_context(cmd);
}

static void on_retry(uv_timer_t *t)
{
    connect_pair(t->data);
}

static void schedule_retry(kr_redis_t *r)
{
    if (r->stopped || r->freeing)
        return;
    uv_timer_start(&r->retry, on_retry, r->backoff_ms, 0);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Something failed: both connections go, the owner hears about it (once per attempt), and
 * the next attempt is scheduled. */
static void fail_pair(kr_redis_t *r, const char *why)
{
    KR_LOG(KR_LOG_DEBUG, "backplane", "attempt failed: %s", why);
    int was_up = r->up;
    r->up = 0;
    teardown(r);
    if (!r->stopped && !r->freeing && (was_up || !r->attempt_failed)) {
        r->attempt_failed = 1;
        if (r->cbs.down)
            r->cbs.down(r->ud, why);
    }
    schedule_retry(r);
}

static void maybe_up(kr_redis_t *r)
{
    if (r->up || !r->cmd_ready || !r->sub_ready)
        return;
    r->up = 1;
    r->attempt_failed = 0;
    r->backoff_ms = BACKOFF_MIN_MS;
    if (r->cbs.up)
        r->cbs.up(r->ud);
}

static kr_redis_t *owner(const redisAsyncContext *ac)
{
    return ac->data;
}

/* One of our two contexts is gone (a failed connect or a lost connection): forget it and
 * drop the pair. A context we dropped ourselves is ignored. */
static void lost(kr_redis_t *r, const redisAsyncContext *ac, const char *dflt)
{
    if (ac != r->cmd && ac != r->sub)
        return;
    if (ac == r->cmd)
        r->cmd = NULL;
    else
        r->sub = NULL;
    char why[160];
    snprintf(why, sizeof(why), "%s", ac->errstr[0] ? ac->errstr : dflt);
    fail_pair(r, why);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status == REDIS_OK)
        return;
    kr_redis_t *r = owner(ac);
    if (ac == r->closing)
        r->closing = NULL;
    lost(r, ac, "connection failed"); /* hiredis frees ac after this returns */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    KR_UNUSED(status);
    kr_redis_t *r = owner(ac);
    if (ac == r->closing)
        r->closing = NULL;
    lost(r, ac, "connection closed");
}

static int reply_is_error(const redisReply *reply, char *why, size_t len)
{
    if (reply == NULL) {
        snprintf(why, len, "connection lost");
        return 1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, len, "%.*s", (int)(reply->len > 120 ? 120 : reply->len), reply->str);
        return 1;
    }
    return 0;
}

/* AUTH / SELECT on either connection: an error reply ends the attempt. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    KR_UNUSED(privdata);
    kr_redis_t *r = owner(ac);
    if (ac != r->cmd && ac != r->sub)
        return;
    char why[160];
    if (reply != NULL && reply_is_error(reply, why, sizeof(why)))
        fail_pair(r, why);
}

/* The command connection's first PING answered: it is ready. */
static void on_cmd_ready(redisAsyncContext *ac, void *reply, void *privdata)
{
    KR_UNUSED(privdata);
    kr_redis_t *r = owner(ac);
    if (ac != r->cmd || reply == NULL)
        return;
    char why[160];
    if (reply_is_error(reply, why, sizeof(why))) {
        fail_pair(r, why);
        return;
    }
    r->cmd_ready = 1;
    maybe_up(r);
}

static void on_sub_message(redisAsyncContext *ac, void *reply_, void *privdata)
{
    KR_UNUSED(privdata);
    kr_redis_t *r = owner(ac);
    const redisReply *reply = reply_;
    if (ac != r->sub || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[160];
        reply_is_error(reply, why, sizeof(why));
        fail_pair(r, why);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *kind = reply->element[0];
    if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
        r->sub_ready = 1;
        maybe_up(r);
    } else if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0 &&
               reply->element[2]->type == REDIS_REPLY_STRING) {
        if (r->cbs.message)
            r->cbs.message(r->ud, reply->element[2]->str, reply->element[2]->len);
    }
}

static void send_setup(kr_redis_t *r, redisAsyncContext *ac, int select)
{
    if (r->o.password[0] != '\0') {
        if (r->o.user[0] != '\0')
            redisAsyncCommand(ac, on_setup_reply, NULL, "AUTH %s %s", r->o.user, r->o.password);
        else
            redisAsyncCommand(ac, on_setup_reply, NULL, "AUTH %s", r->o.password);
    }
    if (select && r->o.db != 0)
        redisAsyncCommand(ac, on_setup_reply, NULL, "SELECT %d", r->o.db);
}

static redisAsyncContext *open_context(kr_redis_t *r, const char *ip, char *why, size_t len)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, r->o.port);
    if (ac == NULL) {
        snprintf(why, len, "out of memory");
        return NULL;
    }
    if (ac->err) {
        snprintf(why, len, "%s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = r;
    if (ev_attach(ac, r->loop) != 0) {
        snprintf(why, len, "cannot attach to the loop");
        redisAsyncFree(ac);
        return NULL;
    }
    redisEnableKeepAlive(&ac->c);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void connect_to(kr_redis_t *r, const char *ip)
{
    char why[160];
    r->cmd = open_context(r, ip, why, sizeof(why));
    if (r->cmd == NULL) {
        fail_pair(r, why);
        return;
    }
    send_setup(r, r->cmd, 1);
    redisAsyncCommand(r->cmd, on_cmd_ready, NULL, "PING");
    r->sub = open_context(r, ip, why, sizeof(why));
    if (r->sub == NULL) {
        fail_pair(r, why);
        return;
    }
    send_setup(r, r->sub, 0);
    const char *argv[2] = {"SUBSCRIBE", r->channel};
    size_t lens[2] = {9, strlen(r->channel)};
    redisAsyncCommandArgv(r->sub, on_sub_message, NULL, 2, argv, lens);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *rs = kr_container_of(req, resolve_t, req);
    kr_redis_t *r = rs->r;
    kr_free(rs);
    if (r == NULL) {
        uv_freeaddrinfo(res);
        return;
    }
    r->resolving = NULL;
    char ip[INET6_ADDRSTRLEN] = "";
    if (status == 0 && res != NULL) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)(const void *)res->ai_addr, ip, sizeof(ip));
        else
            uv_ip4_name((const struct sockaddr_in *)(const void *)res->ai_addr, ip, sizeof(ip));
    }
    uv_freeaddrinfo(res);
    if (ip[0] == '\0') {
        char why[160];
        snprintf(why, sizeof(why), "cannot resolve %.100s: %s", r->o.host,
                 status ? uv_strerror(status) : "no address");
        fail_pair(r, why);
        return;
    }
    connect_to(r, ip);
}

static void connect_pair(kr_redis_t *r)
{
    KR_LOG(KR_LOG_DEBUG, "backplane", "connecting to %s:%d", r->o.host, r->o.port);
    if (r->stopped || r->freeing || r->cmd || r->sub || r->resolving)
        return;
    resolve_t *rs = kr_calloc(1, sizeof(*rs));
    rs->r = r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof(port), "%d", r->o.port);
    int err = uv_getaddrinfo(r->loop, &rs->req, on_resolved, r->o.host, port, &hints);
    if (err != 0) {
        kr_free(rs);
        char why[160];
        snprintf(why, sizeof(why), "cannot resolve %.100s: %s", r->o.host, uv_strerror(err));
        fail_pair(r, why);
        return;
    }
    r->resolving = rs;
}

/* ---- health ----------------------------------------------------------------------------- */

static void on_health_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    KR_UNUSED(privdata);
    KR_UNUSED(reply);
    kr_redis_t *r = owner(ac);
    if (ac == r->cmd)
        r->ping_out = 0;
}

static void on_health(uv_timer_t *t)
{
    kr_redis_t *r = t->data;
    if (!r->up)
        return;
    if (r->ping_out) {
        fail_pair(r, "Redis stopped answering");
        return;
    }
    r->ping_out = 1;
    redisAsyncCommand(r->cmd, on_health_reply, NULL, "PING");
}

/* ---- public ----------------------------------------------------------------------------- */

kr_redis_t *kr_redis_new(uv_loop_t *loop, const kr_redis_opts_t *o, const char *channel,
                         const kr_redis_cbs_t *cbs, void *ud)
{
    kr_redis_t *r = kr_calloc(1, sizeof(*r));
    r->loop = loop;
    r->o = *o;
    if (r->o.max_pending_bytes == 0)
        r->o.max_pending_bytes = 16u << 20;
    r->channel = kr_strdup(channel);
    r->cbs = *cbs;
    r->ud = ud;
    r->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &r->retry);
    uv_timer_init(loop, &r->health);
    r->retry.data = r->health.data = r;
    r->open_handles = 2;
    return r;
}

void kr_redis_start(kr_redis_t *r)
{
    if (r->started)
        return;
    r->started = 1;
    uv_timer_start(&r->health, on_health, HEALTH_MS, HEALTH_MS);
    uv_unref((uv_handle_t *)&r->health);
    connect_pair(r);
}

int kr_redis_is_up(const kr_redis_t *r)
{
    return r != NULL && r->up;
}

typedef struct command_s {
    kr_redis_reply_cb cb;
    void *ud;
} command_t;

static void on_publish_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    KR_UNUSED(reply);
    kr_redis_t *r = owner(ac);
    size_t len = (size_t)(uintptr_t)privdata;
    r->pending = r->pending > len ? r->pending - len : 0;
}

int kr_redis_publish(kr_redis_t *r, const char *data, size_t len)
{
    if (!r->up || r->cmd == NULL)
        return KR_ECLOSED;
    if (r->pending + len > r->o.max_pending_bytes)
        return KR_ELIMIT;
    const char *argv[3] = {"PUBLISH", r->channel, data};
    size_t lens[3] = {7, strlen(r->channel), len};
    if (redisAsyncCommandArgv(r->cmd, on_publish_reply, (void *)(uintptr_t)len, 3, argv, lens) !=
        REDIS_OK)
        return KR_ECLOSED;
    r->pending += len;
    return 0;
}

static void on_command_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    KR_UNUSED(ac);
    command_t *c = privdata;
    kr_redis_reply_cb cb = c->cb;
    void *ud = c->ud;
    kr_free(c);
    cb(ud, reply);
}

void kr_redis_command(kr_redis_t *r, kr_redis_reply_cb cb, void *ud, int argc, const char **argv,
                      const size_t *argvlen)
{
    if (r == NULL || !r->up || r->cmd == NULL) {
        cb(ud, NULL);
        return;
    }
    command_t *c = kr_malloc(sizeof(*c));
    c->cb = cb;
    c->ud = ud;
    if (redisAsyncCommandArgv(r->cmd, on_command_reply, c, argc, argv, argvlen) != REDIS_OK) {
        kr_free(c);
        cb(ud, NULL);
    }
}

void kr_redis_stop(kr_redis_t *r)
{
    if (r->stopped)
        return;
    r->stopped = 1;
    r->up = 0;
    uv_timer_stop(&r->retry);
    uv_timer_stop(&r->health);
    if (r->resolving) {
        r->resolving->r = NULL;
        uv_cancel((uv_req_t *)&r->resolving->req);
        r->resolving = NULL;
    }
    redisAsyncContext *cmd = r->cmd, *sub = r->sub;
    r->cmd = r->sub = NULL;
    drop_context(sub);
    /* A clean disconnect writes what is queued (the last DEL) and waits for its replies. */
    if (cmd != NULL) {
        if (r->cmd_ready) {
            r->closing = cmd;
            redisAsyncDisconnect(cmd);
        } else
            redisAsyncFree(cmd);
    }
    r->cmd_ready = r->sub_ready = 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    kr_redis_t *r = h->data;
    if (--r->open_handles == 0) {
        kr_free(r->channel);
        kr_free(r);
    }
}

void kr_redis_free(kr_redis_t *r)
{
    if (r == NULL)
        return;
    kr_redis_stop(r);
    r->freeing = 1;
    /* Its callbacks point at r: finish it now. */
    redisAsyncContext *closing = r->closing;
    r->closing = NULL;
    drop_context(closing);
    uv_close((uv_handle_t *)&r->retry, on_handle_closed);
    uv_close((uv_handle_t *)&r->health, on_handle_closed);
}
