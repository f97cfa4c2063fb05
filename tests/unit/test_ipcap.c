/* test_ipcap.c: the per-IP connection counts behind max_connections_per_ip (kr_ipcap.h):
 * what counts as one client (IPv4, IPv6 /64, IPv4-mapped), counting and releasing, deletion
 * inside probe chains, growth and shrinking, and the server's admission with real sockets
 * (over the cap: 503 and closed; released at close). */
#include "kr_ipcap.h"
#include "kr_server.h"

#include "kr_test.h"

#include <arpa/inet.h>

static kr_ipkey_t key4(const char *ip)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    ASSERT_EQ(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    kr_ipkey_t k;
    ASSERT_OK(kr_ipcap_key((struct sockaddr *)&sa, &k));
    return k;
}

static kr_ipkey_t key6(const char *ip)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    ASSERT_EQ(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    kr_ipkey_t k;
    ASSERT_OK(kr_ipcap_key((struct sockaddr *)&sa, &k));
    return k;
}

TEST(keys)
{
    kr_ipkey_t a = key4("192.0.2.7"), b = key4("192.0.2.8");
    ASSERT_EQ(a.family, 4);
    ASSERT(memcmp(&a, &b, sizeof(a)) != 0);
    /* the same IPv4 client on a dual-stack listener */
    kr_ipkey_t m = key6("::ffff:192.0.2.7");
    ASSERT_EQ(m.family, 4);
    ASSERT_MEM_EQ(&m, sizeof(m), &a, sizeof(a));
    /* one /64: any interface id is the same client; another /64 is not */
    kr_ipkey_t x = key6("2001:db8:1:2::1"), y = key6("2001:db8:1:2:ffff:eeee:dddd:cccc");
    kr_ipkey_t z = key6("2001:db8:1:3::1");
    ASSERT_EQ(x.family, 6);
    ASSERT_MEM_EQ(&x, sizeof(x), &y, sizeof(y));
    ASSERT(memcmp(&x, &z, sizeof(x)) != 0);
    char s[64];
    kr_ipcap_key_str(&a, s, sizeof(s));
    ASSERT_STR_EQ(s, "192.0.2.7");
    kr_ipcap_key_str(&y, s, sizeof(s));
    ASSERT_STR_EQ(s, "2001:db8:1:2::/64");
    kr_ipcap_key_str(&m, s, sizeof(s));
    ASSERT_STR_EQ(s, "192.0.2.7");
    /* other families are not counted */
    struct sockaddr un = {.sa_family = AF_UNIX};
    kr_ipkey_t k;
    ASSERT_EQ(kr_ipcap_key(&un, &k), KR_EINVAL);
    ASSERT_EQ(k.family, 0);
    kr_ipcap_t t;
    kr_ipcap_init(&t);
    ASSERT_EQ(kr_ipcap_add(&t, &k), 0u);
    ASSERT_EQ(t.used, 0u);
    kr_ipcap_dispose(&t);
}

TEST(count_and_release)
{
    kr_ipcap_t t;
    kr_ipcap_init(&t);
    kr_ipkey_t a = key4("10.0.0.1"), b = key6("2001:db8::1"), b2 = key6("2001:db8::2");
    ASSERT_EQ(kr_ipcap_count(&t, &a), 0u);
    ASSERT_EQ(kr_ipcap_release(&t, &a), 0u); /* nothing there: ignored */
    ASSERT_EQ(kr_ipcap_add(&t, &a), 1u);
    ASSERT_EQ(kr_ipcap_add(&t, &a), 2u);
    ASSERT_EQ(kr_ipcap_add(&t, &b), 1u);
    ASSERT_EQ(kr_ipcap_add(&t, &b2), 2u); /* same /64 */
    ASSERT_EQ(t.used, 2u);
    ASSERT_EQ(kr_ipcap_release(&t, &a), 1u);
    ASSERT_EQ(kr_ipcap_count(&t, &a), 1u);
    ASSERT_EQ(kr_ipcap_release(&t, &a), 0u);
    ASSERT_EQ(kr_ipcap_count(&t, &a), 0u);
    ASSERT_EQ(t.used, 1u);
    ASSERT_EQ(kr_ipcap_release(&t, &a), 0u); /* released twice: ignored, nothing underflows */
    ASSERT_EQ(kr_ipcap_count(&t, &b), 2u);
    kr_ipcap_dispose(&t);
}

/* Many clients in and out in mixed order: every count stays right (deletion inside probe
 * chains keeps later members findable), and the table shrinks back once they leave. */
TEST(many_clients_grow_and_shrink)
{
    enum { N = 5000 };
    kr_ipcap_t t;
    kr_ipcap_init(&t);
    static kr_ipkey_t keys[N];
    for (unsigned i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
        keys[i] = key4(ip);
        for (unsigned r = 0; r <= i % 3; r++)
            ASSERT_EQ(kr_ipcap_add(&t, &keys[i]), r + 1);
    }
    ASSERT_EQ(t.used, (uint32_t)N);
    ASSERT(t.nslots >= 2 * N);
    /* release every other client completely, in a scattered order */
    for (unsigned j = 0; j < N; j++) {
        unsigned i = (j * 7919u) % N;
        if (i % 2)
            continue;
        for (unsigned r = 0; r <= i % 3; r++)
            ASSERT_EQ(kr_ipcap_release(&t, &keys[i]), i % 3 - r);
    }
    for (unsigned i = 0; i < N; i++)
        ASSERT_EQ(kr_ipcap_count(&t, &keys[i]), i % 2 ? i % 3 + 1 : 0u);
    for (unsigned i = 1; i < N; i += 2)
        while (kr_ipcap_release(&t, &keys[i]) > 0)
            ;
    ASSERT_EQ(t.used, 0u);
    ASSERT(t.nslots <= 128);
    for (unsigned i = 0; i < N; i++)
        ASSERT_EQ(kr_ipcap_count(&t, &keys[i]), 0u);
    kr_ipcap_dispose(&t);
}

/* Two tables hash the same client to different slots (the seed is per table): a client that
 * picks its addresses cannot aim at a chain it computed in advance. */
TEST(seeded)
{
    kr_ipcap_t a, b;
    kr_ipcap_init(&a);
    kr_ipcap_init(&b);
    ASSERT(a.seed != b.seed);
    kr_ipcap_dispose(&a);
    kr_ipcap_dispose(&b);
}

/* ---- the server's admission, with real sockets ------------------------------------------ */

enum { NCLIENTS = 4 };

typedef struct client_s {
    uv_tcp_t tcp;
    uv_connect_t req;
    char data[256];
    size_t len;
    int closed;
} client_t;

static struct {
    uv_loop_t loop;
    kr_server_t s;
    client_t c[NCLIENTS];
    uv_timer_t step;
    int phase;
    int open_before_close;
} fx;

static void on_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf)
{
    client_t *c = h->data;
    KR_UNUSED(n);
    *buf = uv_buf_init(c->data + c->len, (unsigned)(sizeof(c->data) - 1 - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    client_t *c = st->data;
    KR_UNUSED(buf);
    if (n > 0) {
        c->len += (size_t)n;
        return;
    }
    if (n < 0 && !c->closed) {
        c->closed = 1;
        uv_read_stop(st);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    client_t *c = req->data;
    ASSERT_OK(status);
    ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read));
}

static void connect_client(int i)
{
    client_t *c = &fx.c[i];
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", fx.s.listeners[0]->port, &addr);
    uv_tcp_init(&fx.loop, &c->tcp);
    c->tcp.data = c;
    c->req.data = c;
    ASSERT_OK(uv_tcp_connect(&c->req, &c->tcp, (struct sockaddr *)&addr, on_connect));
}

static void on_step(uv_timer_t *t)
{
    KR_UNUSED(t);
    kr_ipkey_t lo = key4("127.0.0.1");
    switch (fx.phase++) {
    case 0: /* 3 clients up: two admitted, the third refused at once */
        ASSERT_EQ(fx.s.stats.connections_open, 2u);
        ASSERT_EQ(fx.s.stats.connections_refused, 1u);
        ASSERT_EQ(kr_ipcap_count(&fx.s.ipcap, &lo), 2u);
        {
            int refused = -1;
            for (int i = 0; i < 3; i++)
                if (fx.c[i].closed)
                    refused = i;
            ASSERT(refused >= 0);
            fx.c[refused].data[fx.c[refused].len] = '\0';
            ASSERT(strncmp(fx.c[refused].data, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
            ASSERT(strstr(fx.c[refused].data, "Retry-After: 1\r\n") != NULL);
            ASSERT(strstr(fx.c[refused].data, "Connection: close\r\n") != NULL);
            /* one admitted client leaves: its count is released when it closes */
            for (int i = 0; i < 3; i++)
                if (i != refused && !fx.c[i].closed) {
                    uv_read_stop((uv_stream_t *)&fx.c[i].tcp);
                    uv_close((uv_handle_t *)&fx.c[i].tcp, NULL);
                    fx.c[i].closed = 2;
                    break;
                }
        }
        break;
    case 1: /* the server saw the close: room for one more */
        ASSERT_EQ(fx.s.stats.connections_open, 1u);
        ASSERT_EQ(kr_ipcap_count(&fx.s.ipcap, &lo), 1u);
        connect_client(3);
        break;
    case 2:
        ASSERT_EQ(fx.c[3].closed, 0);
        ASSERT_EQ(fx.c[3].len, 0u);
        ASSERT_EQ(fx.s.stats.connections_open, 2u);
        ASSERT_EQ(fx.s.stats.connections_refused, 1u);
        ASSERT_EQ(kr_ipcap_count(&fx.s.ipcap, &lo), 2u);
        uv_timer_stop(&fx.step);
        uv_close((uv_handle_t *)&fx.step, NULL);
        for (int i = 0; i < NCLIENTS; i++)
            if (!uv_is_closing((uv_handle_t *)&fx.c[i].tcp))
                uv_close((uv_handle_t *)&fx.c[i].tcp, NULL);
        kr_server_shutdown(&fx.s);
        break;
    default:
        break;
    }
}

static void run_admission(unsigned per_ip, unsigned total)
{
    memset(&fx, 0, sizeof(fx));
    ASSERT_OK(uv_loop_init(&fx.loop));
    kr_server_init(&fx.s, &fx.loop);
    fx.s.caps.max_connections_per_ip = per_ip;
    fx.s.caps.max_connections = total;
    fx.s.shutdown_grace_ms = 0;
    ASSERT_OK(kr_server_listen(&fx.s, "127.0.0.1", 0));
    ASSERT_OK(kr_server_start(&fx.s));
    for (int i = 0; i < 3; i++)
        connect_client(i);
    uv_timer_init(&fx.loop, &fx.step);
    uv_timer_start(&fx.step, on_step, 150, 150);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    ASSERT_EQ(fx.phase, 3);
    kr_server_dispose(&fx.s);
    ASSERT_EQ(fx.s.ipcap.used, 0u); /* every count released */
    KR_TEST_LOOP_CLOSE(&fx.loop);
}

TEST(server_per_ip_cap)
{
    run_admission(2, 1000);
}

TEST(server_total_cap)
{
    run_admission(0, 2);
}

KR_TEST_MAIN(KR_TEST_ENTRY(keys), KR_TEST_ENTRY(count_and_release),
             KR_TEST_ENTRY(many_clients_grow_and_shrink), KR_TEST_ENTRY(seeded),
             KR_TEST_ENTRY(server_per_ip_cap), KR_TEST_ENTRY(server_total_cap))
