/* kr_bus.c: the local and Redis bus (see kr_bus.h). */
#include "kr_bus.h"
#include "kr_log.h"
#include "kr_redis.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

#define COUNT_CHECK_MS 1000    /* a changed count is written within this */
#define COUNT_REFRESH_MS 10000 /* an unchanged one this often (the key lives 30 s) */
#define COUNT_TTL_S "30"
#define SCAN_MAX_KEYS 4096

struct kr_bus_s {
    kr_server_t *server;
    kr_bus_ops_t ops;
    void *ud;
    char id[33]; /* 16 random bytes in hex */
    /* configuration */
    char *url, *cli_url, *password, *prefix;
    int configured;
    /* running */
    kr_redis_t *redis;
    char *channel, *count_key;
    uv_timer_t *refresh; /* heap: closed (and freed) after the bus is gone */
    char *count_value;   /* what the count key was last set to */
    uint64_t count_written_ms;
    int was_up, outage_logged;
    kr_bus_stats_t stats;
    int dropped_logged; /* the first drop of an outage was logged */
};

/* ---- message format --------------------------------------------------------------------- */

static void put_u16(kr_sbuf_t *sb, size_t v)
{
    char b[2] = {(char)(v >> 8), (char)v};
    kr_sbuf_append(sb, b, 2);
}

static void put_u32(kr_sbuf_t *sb, size_t v)
{
    char b[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    kr_sbuf_append(sb, b, 4);
}

int kr_bus_msg_encode(const kr_bus_msg_t *m, kr_sbuf_t *sb)
{
    if (m->origin_len > KR_BUS_MAX_ORIGIN || m->hub_len > KR_BUS_MAX_HUB ||
        m->name_len > KR_BUS_MAX_NAME || m->json_len > KR_BUS_MAX_RECORD ||
        m->mp_len > KR_BUS_MAX_RECORD || (unsigned)m->target > KR_BUS_CONN)
        return KR_ELIMIT;
    kr_sbuf_append(sb, "KRB1", 4);
    kr_sbuf_putc(sb, (char)m->target);
    kr_sbuf_putc(sb, (char)m->origin_len);
    kr_sbuf_append(sb, m->origin, m->origin_len);
    put_u16(sb, m->hub_len);
    kr_sbuf_append(sb, m->hub, m->hub_len);
    put_u16(sb, m->name_len);
    kr_sbuf_append(sb, m->name, m->name_len);
    put_u32(sb, m->json_len);
    kr_sbuf_append(sb, m->json, m->json_len);
    put_u32(sb, m->mp_len);
    kr_sbuf_append(sb, m->mp, m->mp_len);
    return 0;
}

typedef struct cursor_s {
    const unsigned char *p, *end;
} cursor_t;

/* Takes n bytes; NULL when fewer remain. */
static const char *take(cursor_t *c, size_t n)
{
    if ((size_t)(c->end - c->p) < n)
        return NULL;
    const char *r = (const char *)c->p;
    c->p += n;
    return r;
}

static int take_len(cursor_t *c, int bytes, size_t max, size_t *out)
{
    const char *b = take(c, (size_t)bytes);
    if (b == NULL)
        return -1;
    size_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | (unsigned char)b[i];
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static int take_field(cursor_t *c, int bytes, size_t max, const char **s, size_t *len)
{
    if (take_len(c, bytes, max, len) != 0)
        return -1;
    *s = take(c, *len);
    return *s == NULL ? -1 : 0;
}

/* Exactly one JSON record: non-empty, ends with the record separator, no other one. */
static int json_record_ok(const char *p, size_t len)
{
    return len >= 2 && p[len - 1] == 0x1e && memchr(p, 0x1e, len - 1) == NULL;
}

/* Exactly one MessagePack record: a varint length (at most 5 bytes) equal to what follows. */
static int mp_record_ok(const char *p, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 5 && i < len; i++) {
        unsigned char b = (unsigned char)p[i];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            return v > 0 && v == len - i - 1;
    }
    return 0;
}

int kr_bus_msg_decode(const void *data, size_t len, kr_bus_msg_t *m)
{
    cursor_t c = {data, (const unsigned char *)data + len};
    memset(m, 0, sizeof(*m));
    const char *magic = take(&c, 4);
    if (magic == NULL || memcmp(magic, "KRB1", 4) != 0)
        return KR_EPROTO;
    const char *t = take(&c, 1);
    if (t == NULL || (unsigned char)*t > KR_BUS_CONN)
        return KR_EPROTO;
    m->target = (kr_bus_target_e)(unsigned char)*t;
    if (take_field(&c, 1, KR_BUS_MAX_ORIGIN, &m->origin, &m->origin_len) != 0 ||
        take_field(&c, 2, KR_BUS_MAX_HUB, &m->hub, &m->hub_len) != 0 ||
        take_field(&c, 2, KR_BUS_MAX_NAME, &m->name, &m->name_len) != 0 ||
        take_field(&c, 4, KR_BUS_MAX_RECORD, &m->json, &m->json_len) != 0 ||
        take_field(&c, 4, KR_BUS_MAX_RECORD, &m->mp, &m->mp_len) != 0 || c.p != c.end)
        return KR_EPROTO;
    if (m->origin_len == 0 || m->hub_len == 0 || m->hub[0] != '/' ||
        memchr(m->hub, '\0', m->hub_len) || memchr(m->name, '\0', m->name_len) ||
        (m->target != KR_BUS_ALL && m->name_len == 0) ||
        (m->target == KR_BUS_ALL && m->name_len != 0) || !json_record_ok(m->json, m->json_len) ||
        !mp_record_ok(m->mp, m->mp_len))
        return KR_EPROTO;
    return 0;
}

/* ---- delivery ----------------------------------------------------------------------------- */

/* A payload whose records were encoded already: the hub's fan-out only frames them. */
typedef struct records_s {
    const char *json, *mp;
    size_t json_len, mp_len;
} records_t;

static int records_encode(void *ud, int protocol, kr_sbuf_t *sb)
{
    records_t *r = ud;
    if (protocol == KR_SR_PROTO_MSGPACK)
        kr_sbuf_append(sb, r->mp, r->mp_len);
    else
        kr_sbuf_append(sb, r->json, r->json_len);
    return 0;
}

static int local_send(kr_hub_t *hub, kr_bus_target_e target, const char *name, size_t len,
                      const kr_sr_payload_t *p, unsigned *count)
{
    int err;
    *count = 0;
    switch (target) {
    case KR_BUS_ALL:
        return kr_hub_send_all(hub, p, count);
    case KR_BUS_GROUP:
        return kr_hub_send_group(hub, name, len, p, count);
    case KR_BUS_USER:
        return kr_hub_send_user(hub, name, len, p, count);
    default:
        err = kr_hub_send_to(hub, name, len, p);
        *count = err == 0;
        return err;
    }
}

static void on_message(void *ud, const char *data, size_t len)
{
    kr_bus_t *bus = ud;
    kr_bus_msg_t m;
    if (kr_bus_msg_decode(data, len, &m) != 0) {
        if (bus->stats.invalid++ == 0)
            KR_LOG(KR_LOG_WARN, "backplane", "ignoring a malformed message on %s (%zu bytes)",
                   bus->channel, len);
        return;
    }
    if (m.origin_len == strlen(bus->id) && memcmp(m.origin, bus->id, m.origin_len) == 0)
        return; /* ours: delivered locally when it was sent */
    kr_hub_t *hub = bus->ops.find_hub ? bus->ops.find_hub(bus->ud, m.hub, m.hub_len) : NULL;
    if (hub == NULL)
        return;
    bus->stats.received++;
    records_t r = {m.json, m.mp, m.json_len, m.mp_len};
    kr_sr_payload_t p = {records_encode, &r};
    unsigned n;
    (void)local_send(hub, m.target, m.name, m.name_len, &p, &n);
}

/* ---- connection counts -------------------------------------------------------------------- */

static void ignore_reply(void *ud, const redisReply *reply)
{
    KR_UNUSED(ud);
    KR_UNUSED(reply);
}

/* Writes this server's count key when a count changed, or every COUNT_REFRESH_MS (force: now). */
static void refresh_count(kr_bus_t *bus, int force)
{
    if (!kr_redis_is_up(bus->redis))
        return;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    unsigned n = 0;
    kr_hub_t *const *hubs = bus->ops.hubs ? bus->ops.hubs(bus->ud, &n) : NULL;
    for (unsigned i = 0; i < n; i++)
        kr_sbuf_printf(&sb, "%u %s\n", kr_hub_connection_count(hubs[i]), kr_hub_path(hubs[i]));
    uint64_t now = uv_now(bus->server->loop);
    kr_sbuf_putc(&sb, '\0');
    int same = bus->count_value && strcmp(bus->count_value, kr_sbuf_data(&sb)) == 0;
    if (!force && same && now - bus->count_written_ms < COUNT_REFRESH_MS) {
        kr_sbuf_dispose(&sb);
        return;
    }
    kr_free(bus->count_value);
    bus->count_value = kr_strdup(kr_sbuf_data(&sb));
    bus->count_written_ms = now;
    sb.buf->len--; /* the NUL is not part of the value */
    const char *argv[5] = {"SET", bus->count_key, kr_sbuf_data(&sb), "EX", COUNT_TTL_S};
    size_t lens[5] = {3, strlen(bus->count_key), kr_sbuf_len(&sb), 2, strlen(COUNT_TTL_S)};
    kr_redis_command(bus->redis, ignore_reply, NULL, 5, argv, lens);
    kr_sbuf_dispose(&sb);
}

static void on_refresh(uv_timer_t *t)
{
    refresh_count(t->data, 0);
}

struct kr_bus_query_s {
    kr_bus_t *bus;
    char *hub;
    kr_bus_count_cb cb; /* NULL: cancelled */
    void *ud;
    uint64_t sum;
    char **keys;
    unsigned nkeys;
    char *pattern;
};

static void query_free(kr_bus_query_t *q)
{
    for (unsigned i = 0; i < q->nkeys; i++)
        kr_free(q->keys[i]);
    kr_free(q->keys);
    kr_free(q->hub);
    kr_free(q->pattern);
    kr_free(q);
}

static void query_finish(kr_bus_query_t *q, int err)
{
    if (q->cb)
        q->cb(q->ud, err, err ? 0 : q->sum);
    query_free(q);
}

/* Adds the count of hub q->hub in one key's value ("<n> <path>\n" lines). */
static void add_counts(kr_bus_query_t *q, const char *v, size_t len)
{
    const char *p = v, *end = v + len;
    size_t hlen = strlen(q->hub);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *sp = memchr(p, ' ', (size_t)(le - p));
        if (sp && (size_t)(le - sp - 1) == hlen && memcmp(sp + 1, q->hub, hlen) == 0) {
            uint64_t n = 0;
            for (const char *d = p; d < sp && *d >= '0' && *d <= '9' && n < (1ull << 40); d++)
                n = n * 10 + (uint64_t)(*d - '0');
            q->sum += n;
        }
        p = le + 1;
    }
}

static void on_mget(void *ud, const redisReply *reply)
{
    kr_bus_query_t *q = ud;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        query_finish(q, KR_ECLOSED);
        return;
    }
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            add_counts(q, reply->element[i]->str, reply->element[i]->len);
    query_finish(q, 0);
}

static void scan_step(kr_bus_query_t *q, const char *cursor);

static void on_scan(void *ud, const redisReply *reply)
{
    kr_bus_query_t *q = ud;
    kr_bus_t *bus = q->bus;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        query_finish(q, KR_ECLOSED);
        return;
    }
    const redisReply *keys = reply->element[1];
    size_t own = strlen(bus->count_key);
    for (size_t i = 0; i < keys->elements && q->nkeys < SCAN_MAX_KEYS; i++) {
        const redisReply *k = keys->element[i];
        if (k->type != REDIS_REPLY_STRING || (k->len == own && memcmp(k->str, bus->count_key, own) == 0))
            continue; /* our own count is taken live */
        if (q->nkeys % 64 == 0)
            q->keys = kr_realloc(q->keys, sizeof(*q->keys) * (q->nkeys + 64));
        q->keys[q->nkeys++] = kr_strndup(k->str, k->len);
    }
    const char *cursor = reply->element[0]->str;
    if (strcmp(cursor, "0") != 0 && q->nkeys < SCAN_MAX_KEYS) {
        if (q->cb == NULL) {
            query_free(q);
            return;
        }
        scan_step(q, cursor);
        return;
    }
    if (q->nkeys == 0 || q->cb == NULL) {
        query_finish(q, 0);
        return;
    }
    const char **argv = kr_malloc(sizeof(*argv) * (q->nkeys + 1));
    size_t *lens = kr_malloc(sizeof(*lens) * (q->nkeys + 1));
    argv[0] = "MGET";
    lens[0] = 4;
    for (unsigned i = 0; i < q->nkeys; i++) {
        argv[i + 1] = q->keys[i];
        lens[i + 1] = strlen(q->keys[i]);
    }
    kr_redis_command(bus->redis, on_mget, q, (int)q->nkeys + 1, argv, lens);
    kr_free(argv);
    kr_free(lens);
}

static void scan_step(kr_bus_query_t *q, const char *cursor)
{
    const char *argv[6] = {"SCAN", cursor, "MATCH", q->pattern, "COUNT", "1000"};
    size_t lens[6] = {4, strlen(cursor), 5, strlen(q->pattern), 5, 4};
    kr_redis_command(q->bus->redis, on_scan, q, 6, argv, lens);
}

kr_bus_query_t *kr_bus_count(kr_bus_t *bus, kr_hub_t *hub, kr_bus_count_cb cb, void *ud)
{
    uint64_t local = kr_hub_connection_count(hub);
    if (bus == NULL || bus->redis == NULL) {
        cb(ud, 0, local);
        return NULL;
    }
    if (!kr_redis_is_up(bus->redis)) {
        cb(ud, KR_ECLOSED, 0);
        return NULL;
    }
    kr_bus_query_t *q = kr_calloc(1, sizeof(*q));
    q->bus = bus;
    q->hub = kr_strdup(kr_hub_path(hub));
    q->cb = cb;
    q->ud = ud;
    q->sum = local;
    /* <prefix>:conns:* with the prefix's glob characters escaped */
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 64);
    for (const char *s = bus->prefix; *s; s++) {
        if (strchr("*?[]\\", *s))
            kr_sbuf_putc(&sb, '\\');
        kr_sbuf_putc(&sb, *s);
    }
    kr_sbuf_puts(&sb, ":conns:*");
    kr_sbuf_putc(&sb, '\0');
    q->pattern = kr_strdup(kr_sbuf_data(&sb));
    kr_sbuf_dispose(&sb);
    scan_step(q, "0");
    return q;
}

void kr_bus_query_cancel(kr_bus_query_t *q)
{
    if (q)
        q->cb = NULL; /* freed when its reply arrives (or the connection goes) */
}

/* ---- the bus ------------------------------------------------------------------------------ */

kr_bus_t *kr_bus_new(kr_server_t *server, const kr_bus_ops_t *ops, void *ud)
{
    kr_bus_t *bus = kr_calloc(1, sizeof(*bus));
    bus->server = server;
    bus->ops = *ops;
    bus->ud = ud;
    unsigned char raw[16];
    if (RAND_bytes(raw, 16) != 1)
        KR_ASSERT(uv_random(NULL, NULL, raw, 16, 0, NULL) == 0);
    for (int i = 0; i < 16; i++)
        snprintf(bus->id + 2 * i, 3, "%02x", raw[i]);
    return bus;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

int kr_bus_same_config(const kr_bus_t *bus, const char *url, const char *password,
                       const char *prefix)
{
    return bus->configured && (bus->cli_url || same_str(bus->url, url)) &&
           same_str(bus->password, password) && same_str(bus->prefix, prefix ? prefix : "kestrun");
}

int kr_bus_configure(kr_bus_t *bus, const char *url, const char *password, const char *prefix,
                     int from_cli, char *err, size_t errlen)
{
    kr_redis_opts_t o;
    memset(&o, 0, sizeof(o));
    if (url == NULL || kr_redis_parse_url(url, &o, err, errlen) != 0) {
        if (url == NULL)
            snprintf(err, errlen, "a redis URL is required");
        return KR_EINVAL;
    }
    if (prefix != NULL && (prefix[0] == '\0' || strlen(prefix) > 200)) {
        snprintf(err, errlen, "prefix must be 1..200 bytes");
        return KR_EINVAL;
    }
    if (password != NULL && strlen(password) >= sizeof(o.password)) {
        snprintf(err, errlen, "password too long");
        return KR_EINVAL;
    }
    if (from_cli) {
        kr_free(bus->cli_url);
        bus->cli_url = kr_strdup(url);
    } else {
        kr_free(bus->url);
        bus->url = kr_strdup(url);
        kr_free(bus->password);
        bus->password = password ? kr_strdup(password) : NULL;
        kr_free(bus->prefix);
        bus->prefix = kr_strdup(prefix ? prefix : "kestrun");
    }
    bus->configured = 1;
    return 0;
}

int kr_bus_configured(const kr_bus_t *bus)
{
    return bus && bus->configured;
}

int kr_bus_started(const kr_bus_t *bus)
{
    return bus && bus->redis != NULL;
}

static void on_up(void *ud)
{
    kr_bus_t *bus = ud;
    if (bus->outage_logged)
        KR_LOG(KR_LOG_INFO, "backplane",
               "Redis is back (%s): remote delivery resumed (%llu message(s) dropped so far)",
               bus->channel, (unsigned long long)bus->stats.dropped);
    else
        KR_LOG(KR_LOG_INFO, "backplane", "connected to Redis: channel %s, server id %s",
               bus->channel, bus->id);
    bus->was_up = 1;
    bus->outage_logged = 0;
    bus->dropped_logged = 0;
    refresh_count(bus, 1);
}

static void on_down(void *ud, const char *why)
{
    kr_bus_t *bus = ud;
    if (bus->outage_logged)
        return;
    bus->outage_logged = 1;
    KR_LOG(KR_LOG_WARN, "backplane",
           "%s Redis: %s; local delivery continues, remote sends are dropped until it is back "
           "(reconnecting with back-off)",
           bus->was_up ? "lost" : "cannot reach", why);
}

void kr_bus_start(kr_bus_t *bus)
{
    if (bus == NULL || !bus->configured || bus->redis != NULL)
        return;
    const char *url = bus->cli_url ? bus->cli_url : bus->url;
    kr_redis_opts_t o;
    memset(&o, 0, sizeof(o));
    char err[160];
    if (kr_redis_parse_url(url, &o, err, sizeof(err)) != 0)
        return; /* validated by kr_bus_configure */
    if (bus->password) {
        snprintf(o.password, sizeof(o.password), "%s", bus->password);
    }
    if (bus->prefix == NULL)
        bus->prefix = kr_strdup("kestrun");
    size_t plen = strlen(bus->prefix);
    bus->channel = kr_malloc(plen + 5);
    snprintf(bus->channel, plen + 5, "%s:bus", bus->prefix);
    bus->count_key = kr_malloc(plen + 8 + sizeof(bus->id));
    snprintf(bus->count_key, plen + 8 + sizeof(bus->id), "%s:conns:%s", bus->prefix, bus->id);
    kr_redis_cbs_t cbs = {on_message, on_up, on_down};
    bus->redis = kr_redis_new(bus->server->loop, &o, bus->channel, &cbs, bus);
    bus->refresh = kr_malloc(sizeof(*bus->refresh));
    uv_timer_init(bus->server->loop, bus->refresh);
    bus->refresh->data = bus;
    uv_timer_start(bus->refresh, on_refresh, COUNT_CHECK_MS, COUNT_CHECK_MS);
    uv_unref((uv_handle_t *)bus->refresh);
    KR_LOG(KR_LOG_INFO, "backplane", "Redis backplane at %s:%d (db %d), channel %s", o.host,
           o.port, o.db, bus->channel);
    kr_redis_start(bus->redis);
}

void kr_bus_stop(kr_bus_t *bus)
{
    if (bus == NULL || bus->redis == NULL)
        return;
    if (bus->refresh)
        uv_timer_stop(bus->refresh);
    if (kr_redis_is_up(bus->redis)) {
        const char *argv[2] = {"DEL", bus->count_key};
        size_t lens[2] = {3, strlen(bus->count_key)};
        kr_redis_command(bus->redis, ignore_reply, NULL, 2, argv, lens);
    }
    kr_redis_stop(bus->redis);
}

void kr_bus_free(kr_bus_t *bus)
{
    if (bus == NULL)
        return;
    /* First: the callbacks hiredis runs while closing still see the bus. */
    kr_redis_free(bus->redis);
    if (bus->refresh)
        uv_close((uv_handle_t *)bus->refresh, (uv_close_cb)kr_free);
    kr_free(bus->url);
    kr_free(bus->cli_url);
    kr_free(bus->password);
    kr_free(bus->prefix);
    kr_free(bus->channel);
    kr_free(bus->count_key);
    kr_free(bus->count_value);
    kr_free(bus);
}

int kr_bus_is_up(const kr_bus_t *bus)
{
    return bus && kr_redis_is_up(bus->redis);
}

int kr_bus_is_redis(const kr_bus_t *bus)
{
    return bus && bus->redis != NULL;
}

const kr_bus_stats_t *kr_bus_stats(const kr_bus_t *bus)
{
    return &bus->stats;
}

const char *kr_bus_server_id(const kr_bus_t *bus)
{
    return bus->id;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void count_drop(kr_bus_t *bus, int err)
{
    bus->stats.dropped++;
    if (err == KR_ELIMIT && !bus->dropped_logged) {
        bus->dropped_logged = 1;
        KR_LOG(KR_LOG_WARN, "backplane",
               "Redis is not keeping up: remote sends are dropped (counted in "
               "kr.metrics().backplane_dropped)");
    }
}

int kr_bus_send(kr_bus_t *bus, kr_hub_t *hub, kr_bus_target_e target, const char *name,
                size_t len, const kr_sr_payload_t *p, unsigned *count)
{
    unsigned n = 0;
    if (count)
        *count = 0;
    if (bus == NULL || bus->redis == NULL) {
        int err = local_send(hub, target, name, len, p, &n);
        if (count)
            *count = n;
        return err;
    }
    /* Encode once per hub protocol, for this server and every other one. */
    kr_sbuf_t js, mp;
    kr_sbuf_init(&js, 256);
    kr_sbuf_init(&mp, 256);
    int err = p->encode(p->ud, KR_SR_PROTO_JSON, &js);
    if (err == 0)
        err = p->encode(p->ud, KR_SR_PROTO_MSGPACK, &mp);
    if (err != 0)
        goto out;
    records_t rec = {kr_sbuf_data(&js), kr_sbuf_data(&mp), kr_sbuf_len(&js), kr_sbuf_len(&mp)};
    kr_sr_payload_t pre = {records_encode, &rec};
    int local = 1;
    if (target == KR_BUS_CONN)
        local = kr_hub_find(hub, name, len) != NULL;
    if (local) {
        err = local_send(hub, target, name, len, &pre, &n);
        if (count)
            *count = n;
        if (target == KR_BUS_CONN)
            goto out; /* it was here: nobody else has it */
    }
    kr_bus_msg_t m = {target,
                      bus->id,
                      strlen(bus->id),
                      kr_hub_path(hub),
                      strlen(kr_hub_path(hub)),
                      target == KR_BUS_ALL ? "" : name,
                      target == KR_BUS_ALL ? 0 : len,
                      rec.json,
                      rec.json_len,
                      rec.mp,
                      rec.mp_len};
    kr_sbuf_t wire;
    kr_sbuf_init(&wire, 32 + rec.json_len + rec.mp_len + len);
    int rc = kr_bus_msg_encode(&m, &wire);
    if (rc != 0 && !bus->dropped_logged) {
        bus->dropped_logged = 1;
        KR_LOG(KR_LOG_WARN, "backplane", "%s: a message too large for the backplane was dropped",
               kr_hub_path(hub));
    }
    if (rc == 0)
        rc = kr_redis_publish(bus->redis, kr_sbuf_data(&wire), kr_sbuf_len(&wire));
    kr_sbuf_dispose(&wire);
    if (rc == 0) {
        bus->stats.published++;
    } else {
        count_drop(bus, rc);
        if (!local)
            err = KR_ECLOSED; /* a connection elsewhere, and no way to reach it */
    }
out:
    kr_sbuf_dispose(&js);
    kr_sbuf_dispose(&mp);
    return err;
}
