/* test_server.c: the server's loop turn, with real sockets on 127.0.0.1.
 *
 * Regression: bytes queued on a connection from a timer callback (or a fiber) must be written
 * in the same loop turn. They used to wait until some unrelated event woke the loop (the
 * 100 ms sweep, the next timer), because only the check phase flushes and nothing made poll
 * return early. The sweep is stopped here so that nothing else can hide the bug.
 */
#include "kr_conn.h"
#include "kr_server.h"

#include "kr_test.h"

typedef struct fx_s {
    uv_loop_t loop;
    kr_server_t s;
    uv_tcp_t client;
    uv_connect_t creq;
    uv_timer_t writer, deadline;
    uint64_t queued_at, received_at;
    int received, timed_out;
} fx_t;

static fx_t fx;
static int cork_test; /* the second test: a producer keeps running, the connection is corkable */

static int always_producing(void *ud)
{
    KR_UNUSED(ud);
    return 1;
}

static void on_client_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf)
{
    static char mem[4096];
    KR_UNUSED(h);
    KR_UNUSED(n);
    *buf = uv_buf_init(mem, sizeof(mem));
}

static void stop_all(void)
{
    uv_timer_stop(&fx.deadline);
    uv_timer_stop(&fx.writer);
    uv_read_stop((uv_stream_t *)&fx.client);
    kr_server_shutdown(&fx.s);
}

static void on_client_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    KR_UNUSED(st);
    if (n > 0 && memmem(buf->base, (size_t)n, "tick", 4) && !fx.received) {
        fx.received = 1;
        fx.received_at = uv_now(&fx.loop);
        stop_all();
    }
}

/* A timer callback queues bytes on the server side of the connection, as kr.every would. */
static void on_writer(uv_timer_t *t)
{
    KR_UNUSED(t);
    kr_list_t *it = fx.s.conns.next;
    ASSERT(it != &fx.s.conns);
    kr_conn_t *c = kr_container_of(it, kr_conn_t, link);
    c->deadline_ms = 0; /* keep the HTTP header timeout out of the way */
    c->corkable = cork_test;
    uv_update_time(&fx.loop);
    fx.queued_at = uv_now(&fx.loop);
    ASSERT_OK(kr_conn_write_copy(c, "tick", 4));
}

static void on_deadline(uv_timer_t *t)
{
    KR_UNUSED(t);
    fx.timed_out = 1;
    stop_all();
}

static void on_connected(uv_connect_t *req, int status)
{
    KR_UNUSED(req);
    ASSERT_OK(status);
    uv_read_start((uv_stream_t *)&fx.client, on_client_alloc, on_client_read);
    uv_timer_start(&fx.writer, on_writer, 50, 0);
    /* Anything that wakes the loop after this long is not "the same turn". */
    uv_timer_start(&fx.deadline, on_deadline, 3000, 0);
}

static void run_fixture(void)
{
    memset(&fx, 0, sizeof(fx));
    ASSERT_OK(uv_loop_init(&fx.loop));
    kr_server_init(&fx.s, &fx.loop);
    if (cork_test)
        fx.s.tick_pending = always_producing;
    ASSERT_OK(kr_server_listen(&fx.s, "127.0.0.1", 0));
    ASSERT_OK(kr_server_start(&fx.s));
    uv_timer_stop(&fx.s.sweep); /* the 10 Hz sweep would wake the loop and hide the bug */
    uv_timer_init(&fx.loop, &fx.writer);
    uv_timer_init(&fx.loop, &fx.deadline);
    uv_tcp_init(&fx.loop, &fx.client);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", fx.s.listeners[0]->port, &addr);
    ASSERT_OK(uv_tcp_connect(&fx.creq, &fx.client, (const struct sockaddr *)&addr, on_connected));
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    ASSERT_EQ(fx.timed_out, 0);
    ASSERT_EQ(fx.received, 1);
    ASSERT(fx.received_at - fx.queued_at < 1000);
    uv_close((uv_handle_t *)&fx.client, NULL);
    uv_close((uv_handle_t *)&fx.writer, NULL);
    uv_close((uv_handle_t *)&fx.deadline, NULL);
    kr_server_dispose(&fx.s);
    KR_TEST_LOOP_CLOSE(&fx.loop);
}

TEST(timer_write_is_flushed_in_the_same_turn)
{
    cork_test = 0;
    run_fixture();
}

/* Corking holds a small queue only briefly: with a producer that never stops, the bytes of a
 * corkable connection still leave after KR_CORK_MS (they must never wait for the producer). */
TEST(corked_queue_is_released)
{
    cork_test = 1;
    run_fixture();
}

KR_TEST_MAIN(KR_TEST_ENTRY(timer_write_is_flushed_in_the_same_turn),
             KR_TEST_ENTRY(corked_queue_is_released))
