/* kr_server.h: the server object: one libuv loop and everything it owns.
 *
 * Owns the listeners, every connection (kr_conn), the pending-write list flushed once per
 * loop turn, the 10 Hz sweep that fires connection deadlines, signal handling (SIGINT/SIGTERM:
 * graceful shutdown; SIGHUP: TLS certificates, then scripts, reload), TLS listener contexts
 * (kr_tls) and the counters behind kr.metrics(). All per-loop state
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
#include "kr_ipcap.h"
#include "kr_time.h"

typedef void (*kr_http_handler_cb)(kr_http_req_t *req, void *ud);
typedef void (*kr_server_hook_cb)(kr_server_t *s, void *ud);

#define KR_MAX_LISTENERS 16
#define KR_SHARED_READ_BYTES (64 * 1024)
#define KR_DEFAULT_SHUTDOWN_GRACE_MS 10000
#define KR_CORK_MS 2             /* a corked queue waits at most this long (see kr_conn.h) */
#define KR_CORK_BYTES (16 * 1024) /* ... or until it holds this much */
#define KR_CPU_WINDOW_MS 1000    /* kr.metrics().cpu_percent is measured over this window */
#define KR_REFUSAL_LOG_MS 10000  /* refused connections are logged at most once per this */
#define KR_REFUSAL_RETRY_S 1     /* Retry-After of the 503 a refused connection gets */

/* Connection caps, checked when a connection is accepted (kr.limits max_connections,
 * max_connections_per_ip). Over a cap the connection is accepted and closed at once with a
 * best-effort 503 (so the listen backlog never fills), logged at most once per
 * KR_REFUSAL_LOG_MS. */
typedef struct kr_conn_caps_s {
    unsigned max_connections;        /* default: the open-file limit minus a reserve */
    unsigned max_connections_per_ip; /* 0: no cap (the default, as Kestrel and nginx) */
} kr_conn_caps_t;

/* The defaults: max_connections from RLIMIT_NOFILE (the soft limit minus 1/16 of it, at least
 * 32 and at most 1024 descriptors kept for files, logs, Redis and the loop), no per-IP cap. */
void kr_conn_caps_default(kr_conn_caps_t *caps);

enum { KR_REFUSE_TOTAL = 0, KR_REFUSE_PER_IP, KR_REFUSE_ACCEPT_ERROR, KR_REFUSE_KINDS };

typedef struct kr_listener_s {
    uv_tcp_t tcp;
    kr_server_t *server;
    char host[64];
    int port; /* bound port (after kr_server_listen) */
    struct kr_tls_ctx_s *tls; /* HTTPS/WSS listener (kr_tls.h); NULL: plain TCP */
} kr_listener_t;

typedef struct kr_stats_s {
    uint64_t connections_total;
    uint64_t connections_open;
    uint64_t requests;
    uint64_t bad_requests;
    uint64_t messages_sent;
    uint64_t slow_consumers;
    uint64_t connections_refused; /* over max_connections or max_connections_per_ip */
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
    /* connection caps: the server's defaults, and a hook the app fills them from (the
     * current generation's kr.limits); the per-IP counts of open connections */
    kr_conn_caps_t caps;
    void (*caps_hook)(void *ud, kr_conn_caps_t *caps);
    void *caps_ud;
    kr_ipcap_t ipcap;
    struct {
        uint64_t logged_ms;  /* when this kind was last logged (0: never) */
        uint64_t suppressed; /* refusals since then, not logged yet */
    } refusals[KR_REFUSE_KINDS];
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
/* The same with TLS when cert is not NULL: loads cert (PEM chain) and key first; if they
 * cannot be loaded, logs why ("kr.listen: cannot load TLS certificate ...") at Fatal and
 * returns KR_EINVAL without binding. */
int kr_server_listen_tls(kr_server_t *s, const char *host, int port, const char *cert,
                         const char *key);
/* Reloads every TLS listener's certificate and key from their files (SIGHUP does this before
 * the script reload): new handshakes use the new ones, open connections keep theirs. A file
 * that fails to load keeps the old certificate and logs an Error. Returns 0 or KR_EINVAL. */
int kr_server_reload_tls(kr_server_t *s);
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

/* Internal (kr_conn.c): c starts closing; releases its per-IP count. */
void kr__server_conn_closing(kr_server_t *s, kr_conn_t *c);
/* Internal: put c on the pending-write list. */
void kr__server_want_flush(kr_server_t *s, kr_conn_t *c);
/* Internal: keep the loop from blocking in poll so queued work runs next turn. */
void kr__server_wake(kr_server_t *s);

#endif
