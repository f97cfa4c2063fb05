/* kr_server.h: the server object: one libuv loop and everything it owns.
 *
 * Owns the listeners, every connection (kr_conn), the pending-write list flushed once per
 * loop turn, the 10 Hz sweep that fires connection deadlines, signal handling (SIGINT/SIGTERM:
 * graceful shutdown; SIGHUP: reload) and the counters behind kr.metrics(). All per-loop state
 * lives here, never in process globals, so several loops can run later.
 *
 * Upper layers plug in through callbacks: the request handler (called for every complete
 * HTTP request), a tick hook run at the start of each check phase (the Lua fiber run queue),
 * the reload hook (SIGHUP) and a shutdown hook. The server calls kr_conn and kr_http only.
 */
#ifndef KR_SERVER_H
#define KR_SERVER_H

#include "kr_conn.h"
#include "kr_http.h"
#include "kr_time.h"

typedef void (*kr_http_handler_cb)(kr_http_req_t *req, void *ud);
typedef void (*kr_server_hook_cb)(kr_server_t *s, void *ud);

#define KR_MAX_LISTENERS 16
#define KR_SHARED_READ_BYTES (64 * 1024)
#define KR_DEFAULT_SHUTDOWN_GRACE_MS 10000
#define KR_CORK_MS 2             /* a corked queue waits at most this long (see kr_conn.h) */
#define KR_CORK_BYTES (16 * 1024) /* ... or until it holds this much */
#define KR_CPU_WINDOW_MS 1000    /* kr.metrics().cpu_percent is measured over this window */

typedef struct kr_listener_s {
    uv_tcp_t tcp;
    kr_server_t *server;
    char host[64];
    int port; /* bound port (after kr_server_listen) */
} kr_listener_t;

typedef struct kr_stats_s {
    uint64_t connections_total;
    uint64_t connections_open;
    uint64_t requests;
    uint64_t bad_requests;
    uint64_t messages_sent;
    uint64_t slow_consumers;
} kr_stats_t;

struct kr_server_s {
    uv_loop_t *loop;
    kr_http_limits_t limits;
    uint64_t shutdown_grace_ms; /* in-flight requests get this long at shutdown */
    kr_listener_t *listeners[KR_MAX_LISTENERS];
    unsigned nlisteners;
    kr_list_t conns;
    kr_list_t pending_writes;
    char *rshared;    /* the read buffer every read goes to first (kr_conn.c) */
    int rshared_busy; /* a read is using it */
    uv_check_t check;
    uv_idle_t idle; /* keeps the loop spinning while work is queued for the next check */
    uv_timer_t sweep;
    uv_timer_t grace;
    uv_signal_t sig_int, sig_term, sig_hup;
    int started, handles_closed, idle_ready;
    int stopping;
    uint64_t shutdown_started_ms;
    uint64_t next_conn_id;
    uint64_t started_ms;
    kr_stats_t stats;
    /* CPU sampler (kr.metrics cpu_percent): the sweep closes a window every KR_CPU_WINDOW_MS */
    uint64_t cpu_window_ms;  /* loop time the current window began */
    uint64_t cpu_window_ns;  /* process CPU time then */
    double cpu_percent;      /* over the last completed window; < 0 before the first */
    /* cached Date header value, refreshed once per second */
    time_t date_secs;
    char date[KR_HTTP_DATE_LEN + 1];
    /* upper-layer hooks */
    kr_http_handler_cb handler;
    void *handler_ud;
    kr_server_hook_cb tick;      /* start of every check phase */
    int (*tick_pending)(void *ud); /* non-zero while the tick has queued work */
    void *tick_ud;
    kr_server_hook_cb on_reload; /* SIGHUP */
    void *reload_ud;
    kr_server_hook_cb on_stop;   /* shutdown begins: stop timers */
    void *stop_ud;
    kr_server_hook_cb on_final;  /* grace period over: cancel whatever still runs */
    void *final_ud;
    int (*busy)(void *ud);       /* non-zero while requests are still running (grace period) */
    void *busy_ud;
};

/* Initialises s on loop with default limits. */
void kr_server_init(kr_server_t *s, uv_loop_t *loop);
/* Adds a listener on host:port (port 0: any free port). Returns 0 or a negative error;
 * the bound port is in the listener. */
int kr_server_listen(kr_server_t *s, const char *host, int port);
/* Starts signal handling, the check hook and the sweep timer. */
int kr_server_start(kr_server_t *s);
/* Writes the bound ports, one per line, to path via a temporary file renamed into place. */
int kr_server_write_port_file(kr_server_t *s, const char *path);
/* Begins graceful shutdown: stop accepting, close idle connections, wait for in-flight
 * requests up to shutdown_grace_ms, then close everything. Idempotent. */
void kr_server_shutdown(kr_server_t *s);
/* After uv_run returned: closes every handle the server owns. */
void kr_server_dispose(kr_server_t *s);

/* Process CPU time (user + system, every thread) in nanoseconds. */
uint64_t kr_process_cpu_ns(void);
/* Process CPU use in percent of one core over the last completed window of KR_CPU_WINDOW_MS
 * (sampled by the sweep timer); before the first window closes, since kr_server_init. */
double kr_server_cpu_percent(kr_server_t *s);

/* The cached IMF-fixdate for the current second. */
const char *kr_server_date(kr_server_t *s);

/* Internal: put c on the pending-write list. */
void kr__server_want_flush(kr_server_t *s, kr_conn_t *c);
/* Internal: keep the loop from blocking in poll so queued work runs next turn. */
void kr__server_wake(kr_server_t *s);

#endif
