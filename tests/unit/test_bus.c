/* test_bus.c: unit tests for the bus (core/kr_bus.c): the inter-server message format (peer
 * bytes: every malformed input must be refused), redis:// URLs (core/kr_redis.c), the
 * configuration, and the bus's life on a loop with Redis unreachable (local delivery, counted
 * drops, nothing left open). */
#include "kr_bus.h"
#include "kr_log.h"
#include "kr_redis.h"

#include <stdlib.h>

#include "kr_test.h"

static const char JSON_REC[] = "{\"type\":1,\"target\":\"Msg\",\"arguments\":[1]}\x1e";
/* varint 7, then 7 bytes of msgpack (the content is not interpreted here) */
static const char MP_REC[] = "\x07\x95\x01\x80\xa3Msg";

static kr_bus_msg_t sample(kr_bus_target_e t)
{
    kr_bus_msg_t m = {t,
                      "0123456789abcdef0123456789abcdef",
                      32,
                      "/hub",
                      4,
                      t == KR_BUS_ALL ? "" : "room-1",
                      t == KR_BUS_ALL ? 0 : 6,
                      JSON_REC,
                      sizeof(JSON_REC) - 1,
                      MP_REC,
                      sizeof(MP_REC) - 1};
    return m;
}

/* Decodes from an exact-size heap copy, so ASan sees any read past len. */
static int decode(const char *p, size_t len, kr_bus_msg_t *m)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, p, len);
    int rc = kr_bus_msg_decode(copy, len, m);
    if (rc == 0) {
        /* the views point into copy: compare before freeing */
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, len);
        ASSERT_OK(kr_bus_msg_encode(m, &sb));
        ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), p, len);
        kr_sbuf_dispose(&sb);
    }
    free(copy);
    return rc;
}

TEST(round_trip)
{
    for (int t = KR_BUS_ALL; t <= KR_BUS_CONN; t++) {
        kr_bus_msg_t m = sample((kr_bus_target_e)t), d;
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 16);
        ASSERT_OK(kr_bus_msg_encode(&m, &sb));
        ASSERT_EQ(kr_sbuf_len(&sb), 4 + 1 + 1 + 32 + 2 + 4 + 2 + m.name_len + 4 + m.json_len + 4 +
                                        m.mp_len);
        ASSERT_OK(kr_bus_msg_decode(kr_sbuf_data(&sb), kr_sbuf_len(&sb), &d));
        ASSERT_EQ(d.target, t);
        ASSERT_MEM_EQ(d.origin, d.origin_len, m.origin, m.origin_len);
        ASSERT_MEM_EQ(d.hub, d.hub_len, "/hub", 4);
        ASSERT_MEM_EQ(d.name, d.name_len, m.name, m.name_len);
        ASSERT_MEM_EQ(d.json, d.json_len, JSON_REC, sizeof(JSON_REC) - 1);
        ASSERT_MEM_EQ(d.mp, d.mp_len, MP_REC, sizeof(MP_REC) - 1);
        ASSERT_OK(decode(kr_sbuf_data(&sb), kr_sbuf_len(&sb), &d));
        kr_sbuf_dispose(&sb);
    }
}

/* Every proper prefix of a valid message, and the message plus one byte, are refused. */
TEST(truncated_and_trailing)
{
    kr_bus_msg_t m = sample(KR_BUS_GROUP), d;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    ASSERT_OK(kr_bus_msg_encode(&m, &sb));
    size_t len = kr_sbuf_len(&sb);
    for (size_t i = 0; i < len; i++)
        ASSERT_EQ(decode(kr_sbuf_data(&sb), i, &d), KR_EPROTO);
    kr_sbuf_putc(&sb, 'x');
    ASSERT_EQ(decode(kr_sbuf_data(&sb), len + 1, &d), KR_EPROTO);
    ASSERT_OK(decode(kr_sbuf_data(&sb), len, &d));
    kr_sbuf_dispose(&sb);
}

/* Encodes m, applies edit to the bytes, and expects a refusal. */
static void expect_refused(kr_bus_msg_t m, size_t at, char byte)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    ASSERT_OK(kr_bus_msg_encode(&m, &sb));
    if (at != (size_t)-1)
        kr_sbuf_data(&sb)[at] = byte;
    kr_bus_msg_t d;
    ASSERT_EQ(decode(kr_sbuf_data(&sb), kr_sbuf_len(&sb), &d), KR_EPROTO);
    kr_sbuf_dispose(&sb);
}

TEST(malformed)
{
    kr_bus_msg_t m = sample(KR_BUS_GROUP);
    expect_refused(m, 0, 'X');  /* magic */
    expect_refused(m, 3, '2');  /* version */
    expect_refused(m, 4, 4);    /* target out of range */
    expect_refused(m, 4, 0);    /* KR_BUS_ALL with a name */
    expect_refused(m, 5, 0x7f); /* origin longer than the limit */
    /* a JSON record length far beyond the bytes: refused before anything is read */
    size_t json_len_at = 4 + 1 + 1 + 32 + 2 + 4 + 2 + 6;
    expect_refused(m, json_len_at, (char)0xff);
    kr_bus_msg_t bad = m;
    bad.hub = "hub"; /* not a path */
    bad.hub_len = 3;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.hub_len = 0;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.origin_len = 0;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.name = ""; /* a group send without a group */
    bad.name_len = 0;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.name = "a\0b";
    bad.name_len = 3;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.json = "{}"; /* no record separator */
    bad.json_len = 2;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.json = "{}\x1e{}\x1e"; /* two records */
    bad.json_len = 6;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.mp = "\x06\x95\x01\x80\xa3Msg"; /* varint says 6, 7 follow */
    bad.mp_len = 8;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.mp = "\x80\x80\x80\x80\x80\x01"; /* a varint longer than 5 bytes */
    bad.mp_len = 6;
    expect_refused(bad, (size_t)-1, 0);
    bad = m;
    bad.mp = "\x00";
    bad.mp_len = 1;
    expect_refused(bad, (size_t)-1, 0);
}

TEST(encode_limits)
{
    kr_bus_msg_t m = sample(KR_BUS_USER);
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_bus_msg_t bad = m;
    bad.origin_len = KR_BUS_MAX_ORIGIN + 1;
    ASSERT_EQ(kr_bus_msg_encode(&bad, &sb), KR_ELIMIT);
    bad = m;
    bad.hub_len = KR_BUS_MAX_HUB + 1;
    ASSERT_EQ(kr_bus_msg_encode(&bad, &sb), KR_ELIMIT);
    bad = m;
    bad.name_len = KR_BUS_MAX_NAME + 1;
    ASSERT_EQ(kr_bus_msg_encode(&bad, &sb), KR_ELIMIT);
    bad = m;
    bad.json_len = (size_t)KR_BUS_MAX_RECORD + 1;
    ASSERT_EQ(kr_bus_msg_encode(&bad, &sb), KR_ELIMIT);
    ASSERT_EQ(kr_sbuf_len(&sb), 0);
    kr_sbuf_dispose(&sb);
}

TEST(redis_url)
{
    kr_redis_opts_t o;
    char err[128];
    memset(&o, 0, sizeof(o));
    ASSERT_OK(kr_redis_parse_url("redis://127.0.0.1", &o, err, sizeof(err)));
    ASSERT_STR_EQ(o.host, "127.0.0.1");
    ASSERT_EQ(o.port, 6379);
    ASSERT_EQ(o.db, 0);
    ASSERT_STR_EQ(o.password, "");
    ASSERT_OK(kr_redis_parse_url("redis://cache.local:6380/3", &o, err, sizeof(err)));
    ASSERT_STR_EQ(o.host, "cache.local");
    ASSERT_EQ(o.port, 6380);
    ASSERT_EQ(o.db, 3);
    ASSERT_OK(kr_redis_parse_url("redis://:s3cr:et@h:1/", &o, err, sizeof(err)));
    ASSERT_STR_EQ(o.user, "");
    ASSERT_STR_EQ(o.password, "s3cr:et");
    ASSERT_STR_EQ(o.host, "h");
    ASSERT_EQ(o.port, 1);
    ASSERT_EQ(o.db, 0);
    memset(&o, 0, sizeof(o));
    ASSERT_OK(kr_redis_parse_url("redis://app:pw@[::1]:7000/1", &o, err, sizeof(err)));
    ASSERT_STR_EQ(o.user, "app");
    ASSERT_STR_EQ(o.password, "pw");
    ASSERT_STR_EQ(o.host, "::1");
    ASSERT_EQ(o.port, 7000);
    ASSERT_EQ(o.db, 1);
    static const char *const bad[] = {"http://h", "redis://", "redis://:6379", "redis://h:0",
                                      "redis://h:70000", "redis://h:12x", "redis://h/x",
                                      "redis://[::1", "redis://[]:1", "redis://h:", NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        ASSERT_EQ(kr_redis_parse_url(bad[i], &o, err, sizeof(err)), KR_EINVAL);
        ASSERT(err[0] != '\0');
    }
}

/* ---- the bus on a loop ---------------------------------------------------------------- */

typedef struct fx_s {
    uv_loop_t loop;
    kr_server_t s;
    kr_hub_t *hub;
} fx_t;

static kr_hub_t *fx_find(void *ud, const char *path, size_t len)
{
    fx_t *fx = ud;
    return len == 4 && memcmp(path, "/hub", 4) == 0 ? fx->hub : NULL;
}

static kr_hub_t *const *fx_hubs(void *ud, unsigned *n)
{
    fx_t *fx = ud;
    *n = 1;
    return &fx->hub;
}

static const kr_bus_ops_t fx_ops = {fx_find, fx_hubs};

static void fx_init(fx_t *fx)
{
    memset(fx, 0, sizeof(*fx));
    if (getenv("KR_TEST_VERBOSE") == NULL)
        kr_log_set_level(KR_LOG_FATAL);
    ASSERT_OK(uv_loop_init(&fx->loop));
    kr_server_init(&fx->s, &fx->loop);
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    fx->hub = kr_hub_new(&fx->s, "/hub", &o, NULL, NULL);
    ASSERT_NOT_NULL(fx->hub);
}

static void fx_done(fx_t *fx)
{
    kr_hub_free(fx->hub);
    kr_server_dispose(&fx->s);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&fx->loop), 0);
}

static int encodes;

static int count_encode(void *ud, int protocol, kr_sbuf_t *sb)
{
    KR_UNUSED(ud);
    encodes++;
    if (protocol == KR_SR_PROTO_MSGPACK)
        kr_sbuf_append(sb, MP_REC, sizeof(MP_REC) - 1);
    else
        kr_sbuf_append(sb, JSON_REC, sizeof(JSON_REC) - 1);
    return 0;
}

static int failing_encode(void *ud, int protocol, kr_sbuf_t *sb)
{
    KR_UNUSED(ud);
    KR_UNUSED(protocol);
    kr_sbuf_puts(sb, "partial");
    return KR_EINVAL;
}

static int count_result = -1;
static uint64_t count_value;

static void on_count(void *ud, int err, uint64_t n)
{
    KR_UNUSED(ud);
    count_result = err;
    count_value = n;
}

TEST(configure)
{
    fx_t fx;
    fx_init(&fx);
    kr_bus_t *bus = kr_bus_new(&fx.s, &fx_ops, &fx);
    ASSERT_EQ(strlen(kr_bus_server_id(bus)), 32);
    char err[200];
    ASSERT(!kr_bus_configured(bus));
    ASSERT_EQ(kr_bus_configure(bus, NULL, NULL, NULL, 0, err, sizeof(err)), KR_EINVAL);
    ASSERT_EQ(kr_bus_configure(bus, "tcp://x", NULL, NULL, 0, err, sizeof(err)), KR_EINVAL);
    ASSERT_EQ(kr_bus_configure(bus, "redis://x", NULL, "", 0, err, sizeof(err)), KR_EINVAL);
    ASSERT(!kr_bus_configured(bus));
    ASSERT_OK(kr_bus_configure(bus, "redis://x:1", "pw", NULL, 0, err, sizeof(err)));
    ASSERT(kr_bus_configured(bus));
    ASSERT(kr_bus_same_config(bus, "redis://x:1", "pw", "kestrun"));
    ASSERT(kr_bus_same_config(bus, "redis://x:1", "pw", NULL));
    ASSERT(!kr_bus_same_config(bus, "redis://x:2", "pw", NULL));
    ASSERT(!kr_bus_same_config(bus, "redis://x:1", NULL, NULL));
    ASSERT(!kr_bus_same_config(bus, "redis://x:1", "pw", "other"));
    /* the command line's URL wins: a script's URL no longer matters */
    ASSERT_OK(kr_bus_configure(bus, "redis://y:3", NULL, NULL, 1, err, sizeof(err)));
    ASSERT(kr_bus_same_config(bus, "redis://x:2", "pw", NULL));
    ASSERT(!kr_bus_started(bus));
    kr_bus_free(bus); /* never started: nothing to close */
    fx_done(&fx);
}

TEST(local_bus)
{
    fx_t fx;
    fx_init(&fx);
    kr_bus_t *bus = kr_bus_new(&fx.s, &fx_ops, &fx);
    kr_sr_payload_t p = {count_encode, NULL};
    unsigned n = 99;
    encodes = 0;
    ASSERT_OK(kr_bus_send(bus, fx.hub, KR_BUS_ALL, NULL, 0, &p, &n));
    ASSERT_EQ(n, 0);
    ASSERT_EQ(encodes, 0); /* the local bus encodes lazily: no recipient, no encoding */
    ASSERT_OK(kr_bus_send(bus, fx.hub, KR_BUS_GROUP, "g", 1, &p, &n));
    ASSERT_EQ(kr_bus_send(bus, fx.hub, KR_BUS_CONN, "nobody", 6, &p, &n), KR_ENOENT);
    ASSERT_EQ(kr_bus_send(NULL, fx.hub, KR_BUS_CONN, "nobody", 6, &p, &n), KR_ENOENT);
    ASSERT(!kr_bus_is_redis(bus));
    ASSERT(!kr_bus_is_up(bus));
    count_result = -1;
    ASSERT_NULL(kr_bus_count(bus, fx.hub, on_count, NULL));
    ASSERT_EQ(count_result, 0); /* one server: its own count, at once */
    ASSERT_EQ(count_value, 0);
    kr_bus_stop(bus);
    kr_bus_free(bus);
    fx_done(&fx);
}

static void on_timer(uv_timer_t *t)
{
    uv_stop(t->loop);
}

TEST(redis_unreachable)
{
    fx_t fx;
    fx_init(&fx);
    kr_bus_t *bus = kr_bus_new(&fx.s, &fx_ops, &fx);
    char err[200];
    /* port 1 on loopback: refused at once */
    ASSERT_OK(kr_bus_configure(bus, "redis://127.0.0.1:1", NULL, "t", 0, err, sizeof(err)));
    kr_bus_start(bus);
    ASSERT(kr_bus_is_redis(bus));
    uv_timer_t t;
    uv_timer_init(&fx.loop, &t);
    uv_timer_start(&t, on_timer, 400, 0); /* a few reconnection attempts */
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    ASSERT(!kr_bus_is_up(bus));
    kr_sr_payload_t p = {count_encode, NULL};
    unsigned n = 99;
    encodes = 0;
    ASSERT_OK(kr_bus_send(bus, fx.hub, KR_BUS_ALL, NULL, 0, &p, &n));
    ASSERT_EQ(n, 0);
    ASSERT_EQ(encodes, 2); /* once per hub protocol, for every server */
    ASSERT_EQ(kr_bus_stats(bus)->dropped, 1);
    ASSERT_EQ(kr_bus_stats(bus)->published, 0);
    /* a connection that is not here cannot be reached */
    ASSERT_EQ(kr_bus_send(bus, fx.hub, KR_BUS_CONN, "elsewhere", 9, &p, &n), KR_ECLOSED);
    ASSERT_EQ(kr_bus_stats(bus)->dropped, 2);
    /* an encoder error: nothing sent, nothing dropped */
    kr_sr_payload_t bad = {failing_encode, NULL};
    ASSERT_EQ(kr_bus_send(bus, fx.hub, KR_BUS_ALL, NULL, 0, &bad, &n), KR_EINVAL);
    ASSERT_EQ(kr_bus_stats(bus)->dropped, 2);
    count_result = -1;
    ASSERT_NULL(kr_bus_count(bus, fx.hub, on_count, NULL));
    ASSERT_EQ(count_result, KR_ECLOSED);
    kr_bus_stop(bus);
    kr_bus_free(bus);
    uv_close((uv_handle_t *)&t, NULL);
    fx_done(&fx);
}

KR_TEST_MAIN(KR_TEST_ENTRY(round_trip), KR_TEST_ENTRY(truncated_and_trailing),
             KR_TEST_ENTRY(malformed), KR_TEST_ENTRY(encode_limits), KR_TEST_ENTRY(redis_url),
             KR_TEST_ENTRY(configure), KR_TEST_ENTRY(local_bus), KR_TEST_ENTRY(redis_unreachable))
