/* kr_server.c: listeners, the per-turn flush, the deadline sweep, signals and graceful
 * shutdown (see kr_server.h). */
#include "kr_server.h"
#include "kr_log.h"
#include "kr_tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#define SWEEP_MS 100
#define STR_(x) #x
#define STR(x) STR_(x)

extern const kr_conn_proto_t kr_http_proto; /* kr_http.c: the protocol of new connections */

void kr_server_init(kr_server_t *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    kr_http_limits_default(&s->limits);
    s->shutdown_grace_ms = KR_DEFAULT_SHUTDOWN_GRACE_MS;
    kr_list_init(&s->conns);
    kr_list_init(&s->pending_writes);
    s->started_ms = uv_now(loop);
    s->cpu_window_ms = s->started_ms;
    s->cpu_window_ns = kr_process_cpu_ns();
    s->cpu_percent = -1;
    kr_conn_caps_default(&s->caps);
    kr_ipcap_init(&s->ipcap);
}

void kr_conn_caps_default(kr_conn_caps_t *caps)
{
    uint64_t nofile = 1024;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        nofile = rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : (uint64_t)rl.rlim_cur;
    if (nofile > (1u << 20))
        nofile = 1u << 20;
    uint64_t reserve = nofile / 16;
    if (reserve < 32)
        reserve = 32;
    if (reserve > 1024)
        reserve = 1024;
    caps->max_connections = nofile > reserve + 1 ? (unsigned)(nofile - reserve) : 1;
    caps->max_connections_per_ip = 0;
}

/* ---- CPU sampler ------------------------------------------------------------------------ */

uint64_t kr_process_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_percent_since(kr_server_t *s, uint64_t now_ms, uint64_t cpu_ns)
{
    uint64_t wall_ms = now_ms - s->cpu_window_ms;
    if (wall_ms == 0 || cpu_ns < s->cpu_window_ns)
        return 0.0;
    return (double)(cpu_ns - s->cpu_window_ns) / 1e4 / (double)wall_ms;
}

/* Called by the sweep: closes the window once it is KR_CPU_WINDOW_MS old. */
static void cpu_sample(kr_server_t *s, uint64_t now_ms)
{
    if (now_ms - s->cpu_window_ms < KR_CPU_WINDOW_MS)
        return;
    uint64_t cpu_ns = kr_process_cpu_ns();
    s->cpu_percent = cpu_percent_since(s, now_ms, cpu_ns);
    s->cpu_window_ms = now_ms;
    s->cpu_window_ns = cpu_ns;
}

double kr_server_cpu_percent(kr_server_t *s)
{
    if (s->cpu_percent >= 0)
        return s->cpu_percent;
    return cpu_percent_since(s, uv_now(s->loop), kr_process_cpu_ns());
}

const char *kr_server_date(kr_server_t *s)
{
    time_t now = time(NULL);
    if (now != s->date_secs) {
        s->date_secs = now;
        kr_time_http_date(now, s->date);
    }
    return s->date;
}

/* ---- connection caps -------------------------------------------------------------------- */

static const char *const refusal_what[KR_REFUSE_KINDS] = {
    "connection(s) refused with 503 (max_connections)",
    "connection(s) refused with 503 (max_connections_per_ip)",
    "accept error(s)",
};

/* Logs a refusal now, or counts it when this kind was logged less than KR_REFUSAL_LOG_MS ago
 * (the sweep reports the count later): a flood costs one Warning per interval, not one per
 * connection. */
static void note_refusal(kr_server_t *s, int kind, const char *detail)
{
    uint64_t now = uv_now(s->loop);
    if (s->refusals[kind].logged_ms != 0 && now - s->refusals[kind].logged_ms < KR_REFUSAL_LOG_MS) {
        s->refusals[kind].suppressed++;
        return;
    }
    KR_LOG(KR_LOG_WARN, "server", "%s (more are counted and logged every %d s)", detail,
           KR_REFUSAL_LOG_MS / 1000);
    s->refusals[kind].logged_ms = now;
    s->refusals[kind].suppressed = 0;
}

static void report_refusals(kr_server_t *s, uint64_t now)
{
    for (int k = 0; k < KR_REFUSE_KINDS; k++) {
        if (s->refusals[k].suppressed == 0 || now - s->refusals[k].logged_ms < KR_REFUSAL_LOG_MS)
            continue;
        KR_LOG(KR_LOG_WARN, "server", "%llu more %s in the last %d s",
               (unsigned long long)s->refusals[k].suppressed, refusal_what[k],
               KR_REFUSAL_LOG_MS / 1000);
        s->refusals[k].logged_ms = now;
        s->refusals[k].suppressed = 0;
    }
}

void kr__server_conn_closing(kr_server_t *s, kr_conn_t *c)
{
    if (c->ip_counted) {
        c->ip_counted = 0;
        kr_ipcap_release(&s->ipcap, &c->ipkey);
    }
}

/* Counts c (just accepted) against the caps; over one, refuses it and returns -1. The 503 is
 * only for plain listeners: a TLS client expects a handshake, and only sees the close. */
static int admit(kr_server_t *s, kr_conn_t *c, int plain)
{
    kr_conn_caps_t caps = s->caps;
    if (s->caps_hook)
        s->caps_hook(s->caps_ud, &caps);
    uint32_t from_ip = 0;
    if (c->ipkey.family != 0) {
        from_ip = kr_ipcap_add(&s->ipcap, &c->ipkey);
        c->ip_counted = 1;
    }
    int kind = -1;
    char detail[256];
    if (caps.max_connections && s->stats.connections_open > caps.max_connections) {
        kind = KR_REFUSE_TOTAL;
        snprintf(detail, sizeof(detail),
                 "connection from %s refused with 503: %llu connections open (max_connections = %u)",
                 c->remote_addr, (unsigned long long)s->stats.connections_open - 1,
                 caps.max_connections);
    } else if (caps.max_connections_per_ip && from_ip > caps.max_connections_per_ip) {
        char who[INET6_ADDRSTRLEN + 4];
        kr_ipcap_key_str(&c->ipkey, who, sizeof(who));
        kind = KR_REFUSE_PER_IP;
        snprintf(detail, sizeof(detail),
                 "connection from %s refused with 503: %u open from it (max_connections_per_ip = %u)",
                 who, from_ip - 1, caps.max_connections_per_ip);
    }
    if (kind < 0)
        return 0;
    s->stats.connections_refused++;
    note_refusal(s, kind, detail);
    static const char answer[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                 "Retry-After: " STR(KR_REFUSAL_RETRY_S) "\r\n"
                                 "Content-Length: 0\r\n"
                                 "Connection: close\r\n\r\n";
    kr__conn_refuse(c, answer, plain ? sizeof(answer) - 1 : 0);
    return -1;
}

/* ---- listeners -------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status)
{
    kr_listener_t *l = listener->data;
    if (status != 0) {
        /* libuv already closed the connection it could not take (its EMFILE trick keeps a
         * spare descriptor for that), so the backlog drains; only the log is ours to bound. */
        char detail[256];
        snprintf(detail, sizeof(detail), "accept on %s:%d failed: %s", l->host, l->port,
                 uv_strerror(status));
        note_refusal(l->server, KR_REFUSE_ACCEPT_ERROR, detail);
        return;
    }
    if (l->server->stopping)
        return;
    kr_conn_t *c = kr_conn_accept(l->server, listener, &kr_http_proto);
    if (c != NULL && admit(l->server, c, l->tls == NULL) != 0)
        return;
    if (c != NULL && l->tls != NULL && kr_conn_start_tls(c, l->tls) != 0) {
        kr_conn_close(c, "cannot allocate the TLS state");
        return;
    }
    if (c != NULL) /* a client that sends nothing is dropped after the header timeout */
        c->deadline_ms = uv_now(l->server->loop) + l->server->limits.header_timeout_ms;
}

/* A listener's memory goes with its handle, and its TLS context (connections still open on
 * it hold their own reference to the SSL_CTX). */
static void on_listener_closed(uv_handle_t *h)
{
    kr_listener_t *l = h->data;
    kr_tls_ctx_free(l->tls);
    kr_free(l);
}

int kr_server_listen(kr_server_t *s, const char *host, int port)
{
    return kr_server_listen_tls(s, host, port, NULL, NULL);
}

int kr_server_listen_tls(kr_server_t *s, const char *host, int port, const char *cert,
                         const char *key)
{
    if (s->nlisteners == KR_MAX_LISTENERS)
        return KR_ELIMIT;
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
        struct sockaddr sa;
    } addr;
    int err;
    if (strchr(host, ':') != NULL)
        err = uv_ip6_addr(host, port, &addr.v6);
    else
        err = uv_ip4_addr(host, port, &addr.v4);
    if (err != 0)
        return err;
    kr_tls_ctx_t *tls = NULL;
    if (cert != NULL) {
        char why[512];
        tls = kr_tls_ctx_new(cert, key, why, sizeof(why));
        if (tls == NULL) {
            KR_LOG(KR_LOG_FATAL, "server", "kr.listen: %s", why);
            return KR_EINVAL;
        }
    }
    kr_listener_t *l = kr_calloc(1, sizeof(*l));
    l->server = s;
    l->tls = tls;
    snprintf(l->host, sizeof(l->host), "%s", host);
    uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    err = uv_tcp_bind(&l->tcp, &addr.sa, 0);
    if (err == 0)
        err = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
    if (err != 0) {
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        return err;
    }
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len);
    l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    s->listeners[s->nlisteners++] = l;
    KR_LOG(KR_LOG_INFO, "server", "listening on %s://%s%s%s:%d", tls ? "https" : "http",
           strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", l->port);
    return 0;
}

int kr_server_write_port_file(kr_server_t *s, const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -errno;
    for (unsigned i = 0; i < s->nlisteners; i++)
        fprintf(f, "%d\n", s->listeners[i]->port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        int err = -errno;
        (void)unlink(tmp); /* best effort: the error that matters is returned */
        return err;
    }
    return 0;
}

/* ---- the loop turn: tick hook, then one flush per pending connection -------------------- */

void kr__server_want_flush(kr_server_t *s, kr_conn_t *c)
{
    if (kr_list_linked(&c->pending))
        return;
    /* The first queued connection of a turn makes sure the check phase comes soon: bytes
     * queued from a timer or a fiber must not wait in poll for the next unrelated event. */
    if (kr_list_empty(&s->pending_writes) && s->started)
        kr__server_wake(s);
    kr_list_insert_tail(&s->pending_writes, &c->pending);
}

/* The idle handle only exists to make poll return at once; its callback does nothing. */
static void noop_idle(uv_idle_t *h)
{
    KR_UNUSED(h);
}

void kr__server_wake(kr_server_t *s)
{
    /* Created on first use, not in kr_server_start: fibers spawned while the scripts load
     * already ask for a wake-up, and a server that never wakes owns no handle. */
    if (!s->idle_ready) {
        uv_idle_init(s->loop, &s->idle);
        s->idle.data = s;
        s->idle_ready = 1;
    }
    if (!uv_is_active((uv_handle_t *)&s->idle))
        uv_idle_start(&s->idle, noop_idle);
}

static void on_check(uv_check_t *h)
{
    kr_server_t *s = h->data;
    if (s->tick)
        s->tick(s, s->tick_ud);
    /* Flush: take the list first, since a flush can queue new work (a drain callback that
     * answers the next pipelined request) which then waits for the next turn. */
    kr_list_t batch, corked;
    kr_list_init(&batch);
    kr_list_init(&corked);
    kr_list_move_all(&s->pending_writes, &batch);
    /* A producer is still running (a fiber queued for the next turn, e.g. a broadcast loop):
     * small queues of corkable connections may wait a little to leave together. */
    int producing = s->tick_pending && s->tick_pending(s->tick_ud);
    uint64_t now = uv_now(s->loop);
    while (!kr_list_empty(&batch)) {
        kr_conn_t *c = kr_container_of(batch.next, kr_conn_t, pending);
        kr_list_remove(&c->pending);
        if (producing && c->corkable && c->inflight == 0 && !c->close_after_flush &&
            !c->slow_consumer && c->outq.bytes < KR_CORK_BYTES &&
            now - c->queued_since_ms < KR_CORK_MS) {
            kr_list_insert_tail(&corked, &c->pending);
            continue;
        }
        kr_conn_ref(c);
        kr__conn_flush(c);
        kr_conn_unref(c);
    }
    kr_list_move_all(&corked, &s->pending_writes);
    int more = !kr_list_empty(&s->pending_writes) || (s->tick_pending && s->tick_pending(s->tick_ud));
    if (more)
        kr__server_wake(s);
    else if (s->idle_ready && uv_is_active((uv_handle_t *)&s->idle))
        uv_idle_stop(&s->idle);
}

static void on_sweep(uv_timer_t *t)
{
    kr_server_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    cpu_sample(s, now);
    report_refusals(s, now);
    kr_list_t *it = s->conns.next;
    while (it != &s->conns) {
        kr_conn_t *c = kr_container_of(it, kr_conn_t, link);
        kr_conn_ref(c);
        if (c->deadline_ms != 0 && c->deadline_ms <= now && !kr_conn_is_closing(c))
            kr__conn_timeout(c);
        it = it->next;
        kr_conn_unref(c); /* the closed callback unlinks, never inside this walk */
    }
}

/* ---- signals and shutdown --------------------------------------------------------------- */

int kr_server_reload_tls(kr_server_t *s)
{
    int failed = 0;
    for (unsigned i = 0; i < s->nlisteners; i++) {
        kr_listener_t *l = s->listeners[i];
        if (l->tls == NULL)
            continue;
        char why[512];
        if (kr_tls_ctx_reload(l->tls, why, sizeof(why)) == 0) {
            KR_LOG(KR_LOG_INFO, "server", "%s:%d: TLS certificate reloaded from '%s'", l->host,
                   l->port, l->tls->cert_path);
        } else {
            KR_LOG(KR_LOG_ERROR, "server", "%s:%d: TLS certificate reload failed, keeping the "
                   "old one: %s", l->host, l->port, why);
            failed++;
        }
    }
    return failed ? KR_EINVAL : 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    kr_server_t *s = h->data;
    if (signum == SIGHUP) {
        kr_server_reload_tls(s);
        KR_LOG(KR_LOG_INFO, "server", "SIGHUP: reloading scripts");
        if (s->on_reload)
            s->on_reload(s, s->reload_ud);
        return;
    }
    if (s->stopping) {
        KR_LOG(KR_LOG_WARN, "server", "second signal: stopping now");
        s->shutdown_grace_ms = 0; /* the next grace tick closes everything */
        return;
    }
    KR_LOG(KR_LOG_INFO, "server", "%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    kr_server_shutdown(s);
}

static void close_all(kr_server_t *s)
{
    kr_list_t *it = s->conns.next;
    while (it != &s->conns) {
        kr_conn_t *c = kr_container_of(it, kr_conn_t, link);
        it = it->next;
        kr_conn_close(c, "server stopping");
    }
}

static void stop_handles(kr_server_t *s)
{
    if (s->handles_closed)
        return;
    s->handles_closed = 1;
    if (s->idle_ready)
        uv_close((uv_handle_t *)&s->idle, NULL);
    if (!s->started)
        return;
    uv_timer_stop(&s->sweep);
    uv_timer_stop(&s->grace);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_close((uv_handle_t *)&s->grace, NULL);
    uv_close((uv_handle_t *)&s->check, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
}

/* Polls while requests finish: each tick closes connections that went idle, and ends the
 * grace period early once nothing is running. */
static void on_grace_tick(uv_timer_t *t)
{
    kr_server_t *s = t->data;
    uint64_t waited = uv_now(s->loop) - s->shutdown_started_ms;
    int busy = s->busy ? s->busy(s->busy_ud) : 0;
    kr_list_t *it = s->conns.next;
    int open = 0;
    while (it != &s->conns) {
        kr_conn_t *c = kr_container_of(it, kr_conn_t, link);
        it = it->next;
        if (!kr_conn_is_closing(c))
            open++;
    }
    if ((!busy && open == 0) || waited >= s->shutdown_grace_ms) {
        if (busy || open)
            KR_LOG(KR_LOG_WARN, "server", "grace period over: closing %d connection(s)", open);
        close_all(s);
        if (s->on_final)
            s->on_final(s, s->final_ud);
        stop_handles(s);
        return;
    }
}

void kr_server_shutdown(kr_server_t *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    for (unsigned i = 0; i < s->nlisteners; i++)
        uv_close((uv_handle_t *)&s->listeners[i]->tcp, on_listener_closed);
    s->nlisteners = 0;
    if (s->on_stop)
        s->on_stop(s, s->stop_ud);
    /* Idle HTTP connections go now; busy ones close after their response (kr_http checks
     * s->stopping when a response ends). */
    kr_list_t *it = s->conns.next;
    while (it != &s->conns) {
        kr_conn_t *c = kr_container_of(it, kr_conn_t, link);
        it = it->next;
        kr_conn_ref(c);
        if (!kr_conn_is_closing(c) && c->proto->on_drain != NULL)
            c->proto->on_drain(c); /* lets the protocol close a connection with nothing running */
        kr_conn_unref(c);
    }
    s->shutdown_started_ms = uv_now(s->loop);
    uv_timer_start(&s->grace, on_grace_tick, 0, 50);
}

int kr_server_start(kr_server_t *s)
{
    s->started = 1;
    uv_check_init(s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, on_check);
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_timer_init(s->loop, &s->grace);
    s->grace.data = s;
    uv_signal_init(s->loop, &s->sig_int);
    uv_signal_init(s->loop, &s->sig_term);
    uv_signal_init(s->loop, &s->sig_hup);
    s->sig_int.data = s->sig_term.data = s->sig_hup.data = s;
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
    return 0;
}

void kr_server_dispose(kr_server_t *s)
{
    close_all(s);
    kr_free(s->rshared);
    s->rshared = NULL;
    for (unsigned i = 0; i < s->nlisteners; i++)
        uv_close((uv_handle_t *)&s->listeners[i]->tcp, on_listener_closed);
    s->nlisteners = 0;
    stop_handles(s);
    uv_run(s->loop, UV_RUN_DEFAULT);
    kr_ipcap_dispose(&s->ipcap);
}
