/* loadgen.c: WebSocket fan-out load generator for the kestrun broadcast benchmarks.
 *
 * One libuv loop, one thread. It opens N client connections to a server on 127.0.0.0/8, does
 * the protocol's handshake on each, then counts the messages the server broadcasts and measures
 * their publish-to-receive latency. It is meant to run pinned to its own core (taskset) while
 * the server runs on the other one; run_fanout.sh orchestrates it.
 *
 * Protocols (--proto):
 *   signalr   POST {path}/negotiate?negotiateVersion=1 (HTTP/1.1), take connectionToken from the
 *             JSON, then GET {path}?id=<token> with a WebSocket upgrade (on a new TCP connection,
 *             as the JS and .NET clients do; --negotiate-reuse keeps the negotiate connection),
 *             send {"protocol":"json","version":1}\x1e, expect {}\x1e. --skip-negotiate upgrades
 *             at {path} directly. A message is one record (0x1E-terminated) of type 1; pings
 *             (type 6) are not counted. The client sends a ping record every 15 s.
 *             --protocol messagepack: the handshake {"protocol":"messagepack","version":1}\x1e
 *             still goes in a text frame and {}\x1e comes back (kestrun: in a binary frame);
 *             after it every frame is binary and holds VarInt-framed msgpack records
 *             (loadgen_msgpack.h); a message is a record of type 1, its latency taken from the
 *             first argument (a number, or the key "t" of it or of its "data" map). The ping is
 *             the binary record 02 91 06.
 *             --transport longpolling: negotiate, then on the same keep-alive connection
 *             GET {path}?id=<token> (answered empty at once), the handshake POST, then a loop of
 *             held GETs: every 200 body holds whole records (JSON or MessagePack, as above),
 *             counted as they arrive; the next GET goes out once a body has been read, so a
 *             client receives in batches (one per round trip). No pings (none over long polling).
 *   ws        plain WebSocket upgrade at {path}; a message is one data frame (text or binary).
 *   socketio  Engine.IO v4 over WebSocket: GET /socket.io/?EIO=4&transport=websocket, receive the
 *             open packet 0{...}, send 40, receive 40{...}. Server pings "2" are answered with "3".
 *             A message is a 42[...] packet.
 *
 * Latency: the servers put "t":<microseconds since the epoch, CLOCK_REALTIME> in each message (the
 * last "t": key of the message is used); the receive time of the read that delivered it minus t
 * goes into a log-linear histogram (about 3% resolution). Only messages inside the measurement
 * window are counted. The WebSocket key is fixed (RFC 6455's sample); the accept is checked.
 *
 * Timeline (stdout, line-buffered, one item per line):
 *   READY <n>     every client has finished connecting (n are handshaken); start the broadcast now
 *   START         the measurement window opened: --warmup s after the first message (at once
 *                 with --conns-only)
 *   END           the window closed after --duration s
 *   {...}         one JSON line with the results, then the process exits (the kernel closes the
 *                 sockets)
 * Errors and diagnostics go to stderr. Every phase is bounded: --connect-timeout for connecting,
 * --first-timeout for the first message, and a hard --timeout for the whole run.
 *
 * Sockets: at most --concurrency connections are being set up at once. With many clients they
 * are spread over the source addresses 127.0.0.1 .. 127.0.0.<k> (bind() before connect() with
 * IP_BIND_ADDRESS_NO_PORT, so the port is chosen per 4-tuple), keeping every source address well
 * inside the ephemeral port range. The process needs one fd per client (the hard fd limit on the
 * project's machines is 20,000, so N + slow clients up to about 19,900).
 *
 * Slow clients (--slow K): K more clients that connect and handshake like the others, then stop
 * reading (uv_read_stop); their receive buffer is made small (--slow-rcvbuf) so the server sees
 * the stall within a second. They keep sending SignalR pings. Their messages are not counted.
 *
 * Read buffers: one loop-wide 256 KiB read buffer; a connection holds its own buffer only while a
 * frame (or an HTTP response) is split across reads.
 *
 * Build: cc -O2 -Wall -Wextra -o loadgen loadgen.c $(pkg-config --cflags --libs libuv)
 * (loadgen_msgpack.h is included).
 */
#define _GNU_SOURCE
#include <uv.h>

#include "loadgen_msgpack.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---- configuration and global state ---------------------------------------------------- */

enum proto { P_SIGNALR, P_WS, P_SOCKETIO };
enum hub_protocol { HP_JSON, HP_MSGPACK };  /* SignalR hub protocol (--protocol) */
enum transport { T_WEBSOCKETS, T_LONGPOLL }; /* SignalR transport (--transport) */

/* Long polling: where a connection is in its HTTP exchanges (after negotiate). */
enum lp_step {
    LP_NONE,
    LP_FIRST,     /* first GET sent: answered 200, empty, at once */
    LP_POST,      /* handshake POST sent */
    LP_POLL_HEAD, /* a poll is held: waiting for its response head */
    LP_POLL_BODY  /* reading a poll's body (body_left bytes to come) */
};

enum state {
    S_IDLE,       /* not started */
    S_CONNECTING, /* TCP connect in flight */
    S_NEGOTIATE,  /* POST negotiate sent, reading the HTTP response */
    S_UPGRADE,    /* GET upgrade sent, reading the 101 response */
    S_HANDSHAKE,  /* WebSocket open, protocol handshake in progress */
    S_READY,      /* handshaken: counting messages */
    S_DEAD        /* failed or closed */
};

enum phase {
    PH_CONNECT,    /* clients are being set up */
    PH_WAIT_FIRST, /* READY printed, waiting for the first message */
    PH_WARMUP,     /* first message seen, discarding for --warmup s */
    PH_WINDOW,     /* counting */
    PH_DONE
};

enum err_kind { E_CONNECT, E_HTTP, E_HANDSHAKE, E_PROTOCOL, E_CLOSED, E_TIMEOUT, E_KINDS };
static const char *const err_names[E_KINDS] = {"connect",  "http",   "handshake",
                                               "protocol", "closed", "timeout"};

#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="        /* RFC 6455's sample key */
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" /* its Sec-WebSocket-Accept */
#define MAX_HTTP 16384                           /* largest HTTP response accepted */
#define MAX_FRAME (16u << 20)                    /* largest WebSocket frame accepted */
#ifndef READ_BUF
#define READ_BUF (256u << 10) /* the loop-wide read buffer (-DREAD_BUF=7 tests split frames) */
#endif
#define PER_ADDR 4000 /* clients per source address by default */
#define SIGNALR_PING_MS 15000

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uint32_t idx;
    uint8_t state;
    uint8_t slow;      /* one of the --slow clients: stops reading once handshaken */
    uint8_t closing;   /* uv_close called */
    uint8_t reconnect; /* closing to reopen for the upgrade (negotiate on its own conn) */
    uint8_t in_frag;   /* inside a fragmented data message */
    uint8_t lp;        /* long polling: enum lp_step */
    uint32_t body_left; /* long polling: bytes of the current poll body still to come */
    char *buf;         /* carry-over bytes (split frame or partial HTTP response) */
    uint32_t len, cap;
    char *token;   /* SignalR connection token from negotiate */
    uint64_t msgs; /* messages counted in the window */
} conn_t;

static struct {
    /* options */
    enum proto proto;
    enum hub_protocol hub_protocol;
    enum transport transport;
    const char *host;
    int port;
    const char *path;
    int clients, slow, slow_rcvbuf, concurrency, src_addrs;
    double duration, warmup, connect_timeout, first_timeout, timeout;
    int conns_only, skip_negotiate, negotiate_reuse, verbose;
    /* runtime */
    uv_loop_t *loop;
    conn_t *conns;
    int total;     /* clients + slow */
    int next;      /* next connection to start */
    int in_flight; /* being set up */
    int settled;   /* ready or failed during the connect phase */
    int ready_readers, ready_slow;
    enum phase phase;
    uint64_t t_connect_start, t_connect_end, t_window_start, t_window_end;
    double cpu_window_start;
    uint64_t messages;   /* in the window */
    uint64_t pre_window; /* messages seen before the window (the warm-up) */
    uint64_t errs[E_KINDS];
    int errs_printed;
    char host_hdr[64];
    struct sockaddr_in dst;
    uv_timer_t phase_timer, hard_timer, ping_timer;
    /* latency histogram */
    uint64_t *hist;
    uint64_t lat_n, lat_max, lat_neg;
    double lat_sum;
} g;

static char rbuf[READ_BUF];

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
    return uv_hrtime();
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        die("out of memory");
    return p;
}

static uint32_t rng_state = 0x9e3779b9u;
static uint32_t rng(void) /* xorshift32: masking keys only */
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* ---- latency histogram: log-linear, 32 sub-buckets per power of two (~3% resolution) ---- */

#define H_SUB_BITS 6
#define H_HALF (1u << (H_SUB_BITS - 1))
#define H_BUCKETS (64 * H_HALF)

static unsigned hist_index(uint64_t v)
{
    if (v < (1u << H_SUB_BITS))
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (H_SUB_BITS - 1);
    unsigned idx = shift * H_HALF + (unsigned)(v >> shift);
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static uint64_t hist_value(unsigned idx) /* the middle of the bucket */
{
    if (idx < (1u << H_SUB_BITS))
        return idx;
    unsigned shift = idx / H_HALF - 1;
    uint64_t low = (uint64_t)(idx - shift * H_HALF) << shift;
    return low + ((1ull << shift) >> 1);
}

static void hist_add(int64_t lat_us)
{
    if (lat_us < 0) { /* clocks disagree (should not happen on one machine) */
        g.lat_neg++;
        lat_us = 0;
    }
    uint64_t v = (uint64_t)lat_us;
    g.hist[hist_index(v)]++;
    g.lat_n++;
    g.lat_sum += (double)v;
    if (v > g.lat_max)
        g.lat_max = v;
}

static int64_t hist_pct(double p) /* -1 when empty */
{
    if (g.lat_n == 0)
        return -1;
    uint64_t rank = (uint64_t)(p * (double)g.lat_n);
    if (rank >= g.lat_n)
        rank = g.lat_n - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += g.hist[i];
        if (seen > rank) {
            uint64_t v = hist_value(i);
            return (int64_t)(v > g.lat_max ? g.lat_max : v);
        }
    }
    return (int64_t)g.lat_max;
}

/* ---- errors and connection teardown ----------------------------------------------------- */

static void conn_settle(conn_t *c);
static void start_more(void);

static void note_error(conn_t *c, enum err_kind k, const char *fmt, ...)
{
    g.errs[k]++;
    if (g.errs_printed < 5 || g.verbose) {
        g.errs_printed++;
        va_list ap;
        va_start(ap, fmt);
        if (c != NULL)
            fprintf(stderr, "loadgen: client %u: %s error: ", c->idx, err_names[k]);
        else
            fprintf(stderr, "loadgen: %s error: ", err_names[k]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->closing = 0;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* Ends a connection for good (state S_DEAD); during the connect phase it frees a slot. */
static void conn_fail(conn_t *c, enum err_kind k, const char *fmt, const char *detail)
{
    if (c->state == S_DEAD)
        return;
    note_error(c, k, fmt, detail ? detail : "");
    int was_setting_up = c->state != S_READY;
    c->state = S_DEAD;
    if (!c->closing && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
    if (was_setting_up)
        conn_settle(c);
}

/* ---- writing (client frames are masked) ------------------------------------------------- */

typedef struct {
    uv_write_t req;
    char data[];
} wreq_t;

static void on_written(uv_write_t *req, int status)
{
    conn_t *c = req->handle->data;
    free(req);
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, E_CLOSED, "write: %s", uv_strerror(status));
}

static void send_raw(conn_t *c, const char *p, size_t n)
{
    if (c->state == S_DEAD || c->closing)
        return;
    wreq_t *w = xmalloc(sizeof(*w) + n);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (r < 0) {
        free(w);
        conn_fail(c, E_CLOSED, "write: %s", uv_strerror(r));
    }
}

static void send_frame(conn_t *c, int opcode, const char *payload, size_t n)
{
    if (c->state == S_DEAD || c->closing)
        return;
    size_t hl = n < 126 ? 2 : n < 65536 ? 4 : 10;
    wreq_t *w = xmalloc(sizeof(*w) + hl + 4 + n);
    unsigned char *f = (unsigned char *)w->data;
    f[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        f[1] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
    } else {
        f[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            f[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    }
    uint32_t key = rng();
    unsigned char *mk = f + hl;
    memcpy(mk, &key, 4);
    for (size_t i = 0; i < n; i++)
        f[hl + 4 + i] = (unsigned char)payload[i] ^ mk[i & 3];
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(hl + 4 + n));
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (r < 0) {
        free(w);
        conn_fail(c, E_CLOSED, "write: %s", uv_strerror(r));
    }
}

static void send_text(conn_t *c, const char *s)
{
    send_frame(c, 0x1, s, strlen(s));
}

/* ---- connection setup ------------------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status);
static void on_reopen_closed(uv_handle_t *h);
static void lp_send_first(conn_t *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    /* libuv calls read_cb right after alloc_cb, so one buffer serves every connection. */
    b->base = rbuf;
    b->len = sizeof(rbuf);
}

/* Opens the TCP connection of c (again, after negotiate on its own connection). */
static void conn_open(conn_t *c)
{
    int r = uv_tcp_init_ex(g.loop, &c->tcp, AF_INET);
    if (r < 0) {
        c->state = S_DEAD;
        note_error(c, E_CONNECT, "socket: %s", uv_strerror(r));
        conn_settle(c);
        return;
    }
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->slow && g.slow_rcvbuf > 0) {
        /* A small receive window (set before connect) makes the stall reach the server within
         * a few messages instead of after megabytes of loopback buffering. */
        int v = g.slow_rcvbuf;
        uv_recv_buffer_size((uv_handle_t *)&c->tcp, &v);
    }
    if (g.src_addrs > 1) {
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src;
        memset(&src, 0, sizeof(src));
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->idx % (uint32_t)g.src_addrs));
        r = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
        if (r < 0) {
            conn_fail(c, E_CONNECT, "bind: %s", uv_strerror(r));
            return;
        }
    }
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&g.dst, on_connect);
    if (r < 0)
        conn_fail(c, E_CONNECT, "connect: %s", uv_strerror(r));
}

/* Appends to out the path with "sep" + query; sep is '?' or '&' depending on path. */
static void path_with_query(char *out, size_t cap, const char *path, const char *extra)
{
    snprintf(out, cap, "%s%c%s", path, strchr(path, '?') ? '&' : '?', extra);
}

static void send_upgrade(conn_t *c)
{
    char target[1024], req[2048];
    if (g.proto == P_SIGNALR && c->token) {
        char q[600];
        snprintf(q, sizeof(q), "id=%s", c->token);
        path_with_query(target, sizeof(target), g.path, q);
    } else {
        snprintf(target, sizeof(target), "%s", g.path);
    }
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n"
                     "User-Agent: kestrun-loadgen\r\n\r\n",
                     target, g.host_hdr);
    c->state = S_UPGRADE;
    send_raw(c, req, (size_t)n);
}

static void send_negotiate(conn_t *c)
{
    /* {hub}/negotiate, keeping any query of the hub URL, plus negotiateVersion=1 */
    char base[512], target[1024], req[1536];
    const char *q = strchr(g.path, '?');
    size_t plen = q ? (size_t)(q - g.path) : strlen(g.path);
    snprintf(base, sizeof(base), "%.*s/negotiate%s", (int)plen, g.path, q ? q : "");
    path_with_query(target, sizeof(target), base, "negotiateVersion=1");
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n"
                     "X-Requested-With: XMLHttpRequest\r\nUser-Agent: kestrun-loadgen\r\n\r\n",
                     target, g.host_hdr);
    c->state = S_NEGOTIATE;
    send_raw(c, req, (size_t)n);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->handle->data;
    if (c->state == S_DEAD)
        return;
    if (status < 0) {
        conn_fail(c, E_CONNECT, "connect: %s", uv_strerror(status));
        return;
    }
    int r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    if (r < 0) {
        conn_fail(c, E_CONNECT, "read: %s", uv_strerror(r));
        return;
    }
    if (g.proto == P_SIGNALR && !g.skip_negotiate && c->token == NULL)
        send_negotiate(c);
    else if (g.transport == T_LONGPOLL)
        lp_send_first(c);
    else
        send_upgrade(c);
}

static void conn_start(conn_t *c)
{
    c->state = S_CONNECTING;
    g.in_flight++;
    conn_open(c);
}

static void start_more(void)
{
    while (g.phase == PH_CONNECT && g.in_flight < g.concurrency && g.next < g.total)
        conn_start(&g.conns[g.next++]);
}

static void print_ready(void);

/* A connection finished its setup (ready or failed) during the connect phase. */
static void conn_settle(conn_t *c)
{
    (void)c;
    if (g.phase != PH_CONNECT)
        return;
    g.in_flight--;
    g.settled++;
    if (g.settled == g.total)
        print_ready();
    else
        start_more();
}

static void conn_ready(conn_t *c)
{
    c->state = S_READY;
    if (c->slow) {
        g.ready_slow++;
        uv_read_stop((uv_stream_t *)&c->tcp); /* never read again: the kernel buffers fill */
    } else {
        g.ready_readers++;
    }
    conn_settle(c);
}

/* ---- the HTTP responses (negotiate, upgrade) -------------------------------------------- */

/* Case-insensitive search for a header line "name: value" in the head; returns the value. */
static const char *find_header(const char *head, size_t hlen, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = head, *end = head + hlen;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static int http_status(const char *head) /* "HTTP/1.1 200 ..." */
{
    if (strncmp(head, "HTTP/1.", 7) != 0)
        return -1;
    return atoi(head + 9);
}

/* Negotiate response: complete once the head and Content-Length (or chunked) body are in.
 * Returns bytes consumed, 0 when incomplete, -1 on error (c has failed). */
static long handle_negotiate(conn_t *c, const char *d, size_t n)
{
    const char *he = memmem(d, n, "\r\n\r\n", 4);
    if (he == NULL)
        return n > MAX_HTTP ? (conn_fail(c, E_HTTP, "negotiate: %s", "response head too large"), -1)
                            : 0;
    size_t hlen = (size_t)(he - d) + 4, vlen = 0, blen;
    const char *body = he + 4;
    const char *v = find_header(d, hlen, "Content-Length", &vlen);
    if (v != NULL) {
        blen = strtoul(v, NULL, 10);
        if (blen > MAX_HTTP) {
            conn_fail(c, E_HTTP, "negotiate: %s", "body too large");
            return -1;
        }
        if (n < hlen + blen)
            return 0;
    } else if ((v = find_header(d, hlen, "Transfer-Encoding", &vlen)) && vlen >= 7 &&
               strncasecmp(v, "chunked", 7) == 0) {
        /* Small bodies only: wait for the last chunk and search the raw chunked text. */
        const char *last = memmem(body, n - hlen, "\r\n0\r\n\r\n", 7);
        if (last == NULL)
            return n > MAX_HTTP ? (conn_fail(c, E_HTTP, "negotiate: %s", "body too large"), -1) : 0;
        blen = (size_t)(last - body) + 7;
    } else {
        conn_fail(c, E_HTTP, "negotiate: %s", "no Content-Length");
        return -1;
    }
    int st = http_status(d);
    if (st != 200) {
        char msg[32];
        snprintf(msg, sizeof(msg), "status %d", st);
        conn_fail(c, E_HTTP, "negotiate: %s", msg);
        return -1;
    }
    /* v1 gives connectionToken; v0 only connectionId. */
    const char *keys[] = {"\"connectionToken\":\"", "\"connectionId\":\""};
    const char *tok = NULL;
    size_t klen = 0;
    for (int i = 0; i < 2 && tok == NULL; i++) {
        tok = memmem(body, blen, keys[i], strlen(keys[i]));
        klen = strlen(keys[i]);
    }
    if (tok == NULL) {
        const char *e = memmem(body, blen, "\"error\"", 7);
        conn_fail(c, E_HTTP, "negotiate: %s", e ? "server returned an error" : "no token");
        return -1;
    }
    tok += klen;
    const char *q = memchr(tok, '"', (size_t)(body + blen - tok));
    if (q == NULL || q - tok > 512) {
        conn_fail(c, E_HTTP, "negotiate: %s", "bad token");
        return -1;
    }
    c->token = xmalloc((size_t)(q - tok) + 1);
    memcpy(c->token, tok, (size_t)(q - tok));
    c->token[q - tok] = 0;
    size_t cv = 0;
    const char *conn_hdr = find_header(d, hlen, "Connection", &cv);
    int server_closes = conn_hdr && cv >= 5 && strncasecmp(conn_hdr, "close", 5) == 0;
    if (g.transport == T_LONGPOLL && !server_closes) {
        lp_send_first(c); /* the polls go on the negotiate connection (keep-alive) */
    } else if (g.negotiate_reuse && !server_closes) {
        send_upgrade(c);
    } else {
        /* Like the real clients: the WebSocket is a new TCP connection. */
        c->reconnect = 1;
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_reopen_closed);
    }
    return (long)(hlen + blen);
}

/* The SignalR handshake record: JSON text for both hub protocols. */
static const char *handshake_request(void)
{
    return g.hub_protocol == HP_MSGPACK ? "{\"protocol\":\"messagepack\",\"version\":1}\x1e"
                                        : "{\"protocol\":\"json\",\"version\":1}\x1e";
}

static void enter_ws(conn_t *c)
{
    switch (g.proto) {
    case P_SIGNALR:
        c->state = S_HANDSHAKE;
        send_text(c, handshake_request());
        break;
    case P_SOCKETIO:
        c->state = S_HANDSHAKE; /* wait for the open packet */
        break;
    case P_WS:
        conn_ready(c);
        break;
    }
}

/* Upgrade response. Returns bytes consumed, 0 when incomplete, -1 on error. */
static long handle_upgrade(conn_t *c, const char *d, size_t n)
{
    const char *he = memmem(d, n, "\r\n\r\n", 4);
    if (he == NULL)
        return n > MAX_HTTP ? (conn_fail(c, E_HTTP, "upgrade: %s", "response head too large"), -1)
                            : 0;
    size_t hlen = (size_t)(he - d) + 4, vlen = 0;
    int st = http_status(d);
    if (st != 101) {
        char msg[48];
        snprintf(msg, sizeof(msg), "status %d instead of 101", st);
        conn_fail(c, E_HTTP, "upgrade: %s", msg);
        return -1;
    }
    const char *acc = find_header(d, hlen, "Sec-WebSocket-Accept", &vlen);
    if (acc == NULL || vlen != strlen(WS_ACCEPT) || memcmp(acc, WS_ACCEPT, vlen) != 0) {
        conn_fail(c, E_HTTP, "upgrade: %s", "bad Sec-WebSocket-Accept");
        return -1;
    }
    enter_ws(c);
    return (long)hlen;
}

/* ---- long polling (after negotiate, on one keep-alive connection) ----------------------- */

static long records_parse(conn_t *c, const char *p, size_t n, int64_t now_us);

/* GET {path}?id=<token> (a poll), or POST with body (the handshake). */
static void lp_send(conn_t *c, int post, const char *body)
{
    char q[600], target[1024], req[2048];
    snprintf(q, sizeof(q), "id=%s", c->token);
    path_with_query(target, sizeof(target), g.path, q);
    int n = post ? snprintf(req, sizeof(req),
                            "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kestrun-loadgen\r\n"
                            "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %zu\r\n\r\n%s",
                            target, g.host_hdr, strlen(body), body)
                 : snprintf(req, sizeof(req),
                            "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kestrun-loadgen\r\n\r\n",
                            target, g.host_hdr);
    send_raw(c, req, (size_t)n);
}

static void lp_send_first(conn_t *c)
{
    c->state = S_HANDSHAKE;
    c->lp = LP_FIRST;
    lp_send(c, 0, NULL);
}

static void lp_poll(conn_t *c)
{
    c->lp = LP_POLL_HEAD;
    lp_send(c, 0, NULL);
}

/* A response head on the polling connection: its status and Content-Length (0 for a 204).
 * Returns the head's size, 0 when incomplete, -1 when c failed. */
static long lp_head(conn_t *c, const char *d, size_t n, int *status, size_t *clen)
{
    const char *he = memmem(d, n, "\r\n\r\n", 4);
    if (he == NULL)
        return n > MAX_HTTP ? (conn_fail(c, E_HTTP, "poll: %s", "response head too large"), -1) : 0;
    size_t hlen = (size_t)(he - d) + 4, vlen = 0;
    *status = http_status(d);
    *clen = 0;
    const char *v = find_header(d, hlen, "Content-Length", &vlen);
    if (v != NULL)
        *clen = strtoul(v, NULL, 10);
    else if (*status != 204)
        return conn_fail(c, E_HTTP, "poll: %s", "no Content-Length"), -1;
    if (*clen > MAX_FRAME)
        return conn_fail(c, E_HTTP, "poll: %s", "body too large"), -1;
    v = find_header(d, hlen, "Connection", &vlen);
    if (v != NULL && vlen >= 5 && strncasecmp(v, "close", 5) == 0)
        return conn_fail(c, E_HTTP, "poll: %s", "the server closes the connection"), -1;
    return (long)hlen;
}

/* The answer to the first GET or to the handshake POST: 200, a small body (ignored). */
static long lp_setup_reply(conn_t *c, const char *d, size_t n)
{
    int st;
    size_t clen;
    long hl = lp_head(c, d, n, &st, &clen);
    if (hl <= 0)
        return hl;
    if (n < (size_t)hl + clen)
        return 0;
    if (st != 200) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%s: status %d", c->lp == LP_FIRST ? "first poll" : "handshake POST",
                 st);
        conn_fail(c, E_HTTP, "long polling %s", msg);
        return -1;
    }
    if (c->lp == LP_FIRST) {
        c->lp = LP_POST;
        lp_send(c, 1, handshake_request());
    } else {
        lp_poll(c); /* the handshake reply comes in the first held poll */
    }
    return hl + (long)clen;
}

/* The head of a held poll's answer: 200 with whole records, 200 empty (poll timeout), 204 (the
 * server ended the connection). */
static long lp_poll_head(conn_t *c, const char *d, size_t n)
{
    int st;
    size_t clen;
    long hl = lp_head(c, d, n, &st, &clen);
    if (hl <= 0)
        return hl;
    if (st == 204) {
        conn_fail(c, c->state == S_READY ? E_CLOSED : E_HANDSHAKE, "poll: %s", "204, the server ended the connection");
        return -1;
    }
    if (st != 200) {
        char msg[32];
        snprintf(msg, sizeof(msg), "status %d", st);
        conn_fail(c, E_HTTP, "poll: %s", msg);
        return -1;
    }
    c->body_left = (uint32_t)clen;
    if (clen == 0)
        lp_poll(c);
    else
        c->lp = LP_POLL_BODY;
    return hl;
}

/* Whole records of the current poll body; the next poll goes out when the body is read. */
static long lp_poll_body(conn_t *c, const char *d, size_t n, int64_t now_us)
{
    size_t avail = n < c->body_left ? n : c->body_left;
    long used = records_parse(c, d, avail, now_us);
    if (used < 0 || c->state == S_DEAD)
        return -1;
    c->body_left -= (uint32_t)used;
    if (c->body_left == 0) {
        lp_poll(c);
    } else if (used == 0 && avail == c->body_left) {
        conn_fail(c, E_PROTOCOL, "poll: %s", "the body ends inside a record");
        return -1;
    }
    return used;
}

/* Bytes on a long-polling connection after negotiate. Returns bytes consumed, 0 when
 * incomplete, -1 when c failed. */
static long lp_consume(conn_t *c, const char *d, size_t n, int64_t now_us)
{
    switch (c->lp) {
    case LP_FIRST:
    case LP_POST:
        return lp_setup_reply(c, d, n);
    case LP_POLL_HEAD:
        return lp_poll_head(c, d, n);
    case LP_POLL_BODY:
        return lp_poll_body(c, d, n, now_us);
    default:
        conn_fail(c, E_PROTOCOL, "%s", "data on an idle long-polling connection");
        return -1;
    }
}

/* ---- messages --------------------------------------------------------------------------- */

static void window_first_message(void);

/* Does the key (with its quotes and colon) start at q? q + klen must be within the buffer. */
static inline int key_at(const char *q, const char *key, size_t klen)
{
    for (size_t i = 0; i < klen; i++)
        if (q[i] != key[i])
            return 0;
    return 1;
}

/* Where the text after the first occurrence of key starts in p[0..n), or NULL. */
static const char *find_key(const char *p, size_t n, const char *key, size_t klen)
{
    if (n >= klen && key_at(p, key, klen)) /* SignalR records start with {"type": */
        return p + klen;
    for (const char *q = p; n >= klen && (q = memchr(q, key[0], n - klen + 1 - (size_t)(q - p)));
         q++)
        if (key_at(q, key, klen))
            return q + klen;
    return NULL;
}

/* The same for the last occurrence, scanning backwards: the hot path of the load generator.
 * In every message here "t": sits a few dozen bytes before the end, ahead of "timestamp", so
 * this costs two or three memrchr calls instead of a forward scan of the whole record. */
static const char *find_key_last(const char *p, size_t n, const char *key, size_t klen)
{
    if (n < klen)
        return NULL;
    size_t lim = n - klen + 1; /* a key can start at p[0 .. lim) */
    const char *q;
    while (lim > 0 && (q = memrchr(p, key[0], lim)) != NULL) {
        if (key_at(q, key, klen))
            return q + klen;
        lim = (size_t)(q - p);
    }
    return NULL;
}

/* A message arrived: advances the phases; true when it falls inside the window. */
static int in_window(void)
{
    if (g.phase < PH_WINDOW) {
        if (g.phase == PH_WAIT_FIRST)
            window_first_message();
        if (g.phase < PH_WINDOW) {
            g.pre_window++;
            return 0;
        }
    }
    return g.phase == PH_WINDOW;
}

/* Latency of one message from its "t": field (receive time taken once per read). */
static void count_message(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    if (!in_window())
        return;
    c->msgs++;
    g.messages++;
    const char *t = find_key_last(p, n, "\"t\":", 4);
    if (t == NULL)
        return;
    const char *e = p + n;
    while (t < e && *t == ' ')
        t++;
    int64_t v = 0;
    int digits = 0;
    while (t < e && *t >= '0' && *t <= '9' && digits < 18) {
        v = v * 10 + (*t++ - '0');
        digits++;
    }
    if (digits > 0)
        hist_add(now_us - v);
}

/* A printable, NUL-terminated copy of the start of a payload, for error messages. */
static const char *snip(const char *p, size_t n)
{
    static char out[121];
    size_t k = n < sizeof(out) - 1 ? n : sizeof(out) - 1;
    for (size_t i = 0; i < k; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '.';
    out[k] = 0;
    return out;
}

/* Integer value of "type": in a SignalR record, -1 when absent. */
static int record_type(const char *p, size_t n)
{
    const char *t = find_key(p, n, "\"type\":", 7);
    if (t == NULL)
        return -1;
    while (t < p + n && *t == ' ')
        t++;
    int v = -1;
    for (; t < p + n && *t >= '0' && *t <= '9' && v < 1000; t++)
        v = (v < 0 ? 0 : v * 10) + (*t - '0');
    return v;
}

/* One JSON record (without its 0x1E) of a handshaken connection. */
static void json_record(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    int type = record_type(p, n);
    if (type == 1)
        count_message(c, p, n, now_us);
    else if (type == 7)
        note_error(c, E_CLOSED, "server sent Close: %s", snip(p, n));
}

/* One MessagePack record (without its VarInt) of a handshaken connection. */
static void mp_message(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    int64_t t;
    int type = mp_record((const unsigned char *)p, n, &t);
    if (type == 1) {
        if (!in_window())
            return;
        c->msgs++;
        g.messages++;
        if (t > 0)
            hist_add(now_us - t);
    } else if (type == 7) {
        note_error(c, E_CLOSED, "server sent Close: %s", snip(p, n));
    } else if (type < 0) {
        note_error(c, E_PROTOCOL, "malformed MessagePack record: %s", snip(p, n));
    }
}

/* Whole records at the start of p[0..n): the JSON handshake reply {}\x1e first, then JSON
 * (0x1E-terminated) or MessagePack (VarInt-framed) records. Returns the bytes of the whole
 * records (a record split across reads waits for the rest), -1 when c failed. */
static long records_parse(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    size_t off = 0;
    while (off < n && c->state != S_DEAD) {
        const char *q = p + off;
        size_t left = n - off;
        if (c->state == S_HANDSHAKE || g.hub_protocol == HP_JSON) {
            const char *rs = memchr(q, 0x1e, left);
            if (rs == NULL)
                break;
            size_t rl = (size_t)(rs - q);
            if (c->state == S_HANDSHAKE) {
                if (rl != 2 || q[0] != '{' || q[1] != '}') {
                    conn_fail(c, E_HANDSHAKE, "signalr handshake reply: %s", snip(q, rl));
                    return -1;
                }
                conn_ready(c);
                if (c->slow)
                    return (long)n; /* the slow client discards what came with its handshake */
            } else if (rl > 0) {
                json_record(c, q, rl, now_us);
            }
            off += rl + 1;
            continue;
        }
        uint32_t len = 0;
        int vl = mp_varint((const unsigned char *)q, left, &len);
        if (vl < 0 || len > MAX_FRAME) {
            conn_fail(c, E_PROTOCOL, "%s", "bad MessagePack length prefix");
            return -1;
        }
        if (vl == 0 || left - (size_t)vl < len)
            break;
        mp_message(c, q + vl, len, now_us);
        off += (size_t)vl + len;
    }
    return (long)off;
}

/* A SignalR MessagePack WebSocket frame: whole records only. */
static void mp_frame(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    long used = records_parse(c, p, n, now_us);
    if (used >= 0 && (size_t)used < n && c->state != S_DEAD && !(c->slow && c->state == S_READY))
        conn_fail(c, E_PROTOCOL, "%s", "a frame ends inside a record");
}

static void signalr_payload(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    const char *end = p + n;
    while (p < end) {
        const char *rs = memchr(p, 0x1e, (size_t)(end - p));
        size_t rl = rs ? (size_t)(rs - p) : (size_t)(end - p); /* an unterminated tail: count it */
        if (rl > 0) {
            if (c->state == S_HANDSHAKE) {
                if (rl == 2 && p[0] == '{' && p[1] == '}') {
                    conn_ready(c);
                    if (c->slow)
                        return;
                } else {
                    conn_fail(c, E_HANDSHAKE, "signalr handshake reply: %s", snip(p, rl));
                    return;
                }
            } else if (c->state == S_READY) {
                json_record(c, p, rl, now_us);
            }
        }
        p += rl + (rs ? 1 : 0);
    }
}

static void socketio_payload(conn_t *c, const char *p, size_t n, int64_t now_us)
{
    if (n == 0)
        return;
    switch (p[0]) {
    case '4': /* message: 4 + socket.io packet type */
        if (n >= 2 && p[1] == '2') {
            if (c->state == S_READY)
                count_message(c, p, n, now_us);
        } else if (n >= 2 && p[1] == '0') {
            if (c->state == S_HANDSHAKE)
                conn_ready(c);
        } else if (n >= 2 && (p[1] == '4' || p[1] == '1')) {
            conn_fail(c, c->state == S_READY ? E_CLOSED : E_HANDSHAKE, "socket.io: %s", snip(p, n));
        }
        break;
    case '0': /* open */
        if (c->state == S_HANDSHAKE)
            send_text(c, "40");
        break;
    case '2': /* ping */
        send_text(c, "3");
        break;
    case '1': /* close */
        conn_fail(c, E_CLOSED, "engine.io close%s", "");
        break;
    default:
        break;
    }
}

static void on_data_frame(conn_t *c, int fin, const char *p, size_t n, int64_t now_us)
{
    switch (g.proto) {
    case P_SIGNALR:
        if (g.hub_protocol == HP_MSGPACK)
            mp_frame(c, p, n, now_us);
        else
            signalr_payload(c, p, n, now_us);
        break;
    case P_SOCKETIO:
        socketio_payload(c, p, n, now_us);
        break;
    case P_WS:
        if (fin && c->state == S_READY)
            count_message(c, p, n, now_us);
        break;
    }
}

/* Parses as many whole frames as d holds. Returns bytes consumed, or -1 when c failed. */
static long parse_frames(conn_t *c, const char *d, size_t n, int64_t now_us)
{
    size_t off = 0;
    while (n - off >= 2 && c->state != S_DEAD) {
        const unsigned char *h = (const unsigned char *)d + off;
        int fin = h[0] >> 7, op = h[0] & 0x0f, masked = h[1] >> 7;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (n - off < 4)
                break;
            plen = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (n - off < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | h[2 + i];
            hl = 10;
        }
        if (masked) {
            conn_fail(c, E_PROTOCOL, "%s", "masked frame from the server");
            return -1;
        }
        if (plen > MAX_FRAME) {
            conn_fail(c, E_PROTOCOL, "%s", "frame too large");
            return -1;
        }
        if (n - off < hl + plen)
            break;
        const char *p = d + off + hl;
        size_t pl = (size_t)plen;
        off += hl + pl;
        switch (op) {
        case 0x0: /* continuation */
        case 0x1: /* text */
        case 0x2: /* binary */
            if (op == 0x0 && !c->in_frag) {
                conn_fail(c, E_PROTOCOL, "%s", "unexpected continuation");
                return -1;
            }
            c->in_frag = !fin;
            on_data_frame(c, fin, p, pl, now_us);
            break;
        case 0x8: /* close: answer it, then drop the connection */
        {
            char code[16] = "none";
            if (pl >= 2)
                snprintf(code, sizeof(code), "%d", (unsigned char)p[0] << 8 | (unsigned char)p[1]);
            send_frame(c, 0x8, p, pl >= 2 ? 2 : 0);
            conn_fail(c, c->state == S_READY ? E_CLOSED : E_HANDSHAKE, "server closed (code %s)",
                      code);
            return -1;
        }
        case 0x9: /* ping */
            send_frame(c, 0xA, p, pl);
            break;
        case 0xA: /* pong */
            break;
        default:
            conn_fail(c, E_PROTOCOL, "%s", "unknown opcode");
            return -1;
        }
        if (c->slow && c->state == S_READY)
            return (long)n; /* the slow client discards what came with its handshake */
    }
    return (long)off;
}

/* Feeds received bytes to the state machine. */
static long consume(conn_t *c, const char *d, size_t n, int64_t now_us)
{
    long used_total = 0;
    while (n > 0 && c->state != S_DEAD && !c->reconnect) {
        long used;
        if (c->state == S_NEGOTIATE)
            used = handle_negotiate(c, d, n);
        else if (c->state == S_UPGRADE)
            used = handle_upgrade(c, d, n);
        else if ((c->state == S_HANDSHAKE || c->state == S_READY) && g.transport == T_LONGPOLL)
            used = lp_consume(c, d, n, now_us);
        else if (c->state == S_HANDSHAKE || c->state == S_READY)
            return used_total + parse_frames(c, d, n, now_us);
        else
            return -1;
        if (used <= 0)
            return used < 0 ? -1 : used_total;
        d += used;
        n -= (size_t)used;
        used_total += used;
    }
    return used_total;
}

static void carry_append(conn_t *c, const char *d, size_t n)
{
    if ((size_t)c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < (size_t)c->len + n)
            cap *= 2;
        c->buf = realloc(c->buf, cap);
        if (c->buf == NULL)
            die("out of memory");
        c->cap = (uint32_t)cap;
    }
    memcpy(c->buf + c->len, d, n);
    c->len += (uint32_t)n;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->state != S_DEAD && !c->reconnect)
            conn_fail(c, c->state == S_READY ? E_CLOSED : E_HTTP, "read: %s",
                      nread == UV_EOF ? "server closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (c->state == S_DEAD || c->reconnect)
        return;
    int64_t now = wall_us();
    if (c->len == 0) {
        /* Fast path: parse straight from the shared buffer, keep only a split tail. */
        long used = consume(c, buf->base, (size_t)nread, now);
        if (used >= 0 && (size_t)used < (size_t)nread && c->state != S_DEAD && !c->reconnect)
            carry_append(c, buf->base + used, (size_t)nread - (size_t)used);
    } else {
        carry_append(c, buf->base, (size_t)nread);
        long used = consume(c, c->buf, c->len, now);
        if (used < 0 || c->state == S_DEAD || c->reconnect)
            return;
        c->len -= (uint32_t)used;
        if (c->len == 0) {
            free(c->buf); /* idle connections hold no buffer */
            c->buf = NULL;
            c->cap = 0;
        } else if (used > 0) {
            memmove(c->buf, c->buf + used, c->len);
        }
    }
}

/* ---- phases ----------------------------------------------------------------------------- */

static void print_results(int timed_out);

static double secs(uint64_t a, uint64_t b)
{
    return (double)(b - a) / 1e9;
}

static void on_window_end(uv_timer_t *t)
{
    (void)t;
    g.t_window_end = mono_ns();
    g.phase = PH_DONE;
    printf("END\n");
    print_results(0);
}

static void open_window(void)
{
    g.phase = PH_WINDOW;
    g.t_window_start = mono_ns();
    g.cpu_window_start = cpu_self_s();
    printf("START\n");
    uv_timer_stop(&g.phase_timer);
    uv_timer_start(&g.phase_timer, on_window_end, (uint64_t)(g.duration * 1000 + 0.5), 0);
}

static void on_warmup_done(uv_timer_t *t)
{
    (void)t;
    open_window();
}

static void window_first_message(void)
{
    g.phase = PH_WARMUP;
    uv_timer_stop(&g.phase_timer);
    if (g.warmup <= 0)
        open_window();
    else
        uv_timer_start(&g.phase_timer, on_warmup_done, (uint64_t)(g.warmup * 1000 + 0.5), 0);
}

static void on_first_timeout(uv_timer_t *t)
{
    (void)t;
    note_error(NULL, E_TIMEOUT, "no message within %.1f s of READY", g.first_timeout);
    g.phase = PH_DONE;
    print_results(1);
}

static void print_ready(void)
{
    g.phase = PH_WAIT_FIRST;
    g.t_connect_end = mono_ns();
    uv_timer_stop(&g.phase_timer);
    printf("READY %d\n", g.ready_readers + g.ready_slow);
    if (g.ready_readers == 0 && !g.conns_only) {
        note_error(NULL, E_CONNECT, "%s", "no client could connect");
        print_results(1);
    }
    if (g.conns_only)
        open_window();
    else
        uv_timer_start(&g.phase_timer, on_first_timeout, (uint64_t)(g.first_timeout * 1000), 0);
}

static void on_connect_timeout(uv_timer_t *t)
{
    (void)t;
    /* Give up on the clients still setting up; go on with those that are ready. */
    int pending = g.total - g.settled;
    fprintf(stderr, "loadgen: connect phase timed out after %.1f s, %d clients not ready\n",
            g.connect_timeout, pending);
    for (int i = 0; i < g.total; i++) {
        conn_t *c = &g.conns[i];
        if (c->state == S_IDLE) { /* never started */
            g.errs[E_TIMEOUT]++;
            c->state = S_DEAD;
        } else if (c->state != S_READY && c->state != S_DEAD) {
            g.errs[E_TIMEOUT]++;
            c->state = S_DEAD;
            if (!c->closing && !uv_is_closing((uv_handle_t *)&c->tcp)) {
                c->closing = 1;
                uv_close((uv_handle_t *)&c->tcp, on_closed);
            }
        }
    }
    g.settled = g.total;
    print_ready();
}

static void on_hard_timeout(uv_timer_t *t)
{
    (void)t;
    note_error(NULL, E_TIMEOUT, "hard timeout (%.1f s)", g.timeout);
    print_results(1);
}

/* The SignalR client sends a Ping record every 15 s so that the server's client timeout
 * (30 s) never fires, slow clients included (they still write). */
static void on_ping_timer(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < g.total; i++) {
        if (g.conns[i].state != S_READY)
            continue;
        if (g.hub_protocol == HP_MSGPACK)
            send_frame(&g.conns[i], 0x2, "\x02\x91\x06", 3);
        else
            send_text(&g.conns[i], "{\"type\":6}\x1e");
    }
}

/* Reopen after a negotiate done on its own connection (called when that handle closed). */
static void on_reopen_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    on_closed(h);
    if (c->state == S_DEAD)
        return;
    c->reconnect = 0;
    conn_open(c);
}

/* ---- results ---------------------------------------------------------------------------- */

static void print_results(int timed_out)
{
    uint64_t end = g.t_window_end ? g.t_window_end : mono_ns();
    double seconds = g.t_window_start ? secs(g.t_window_start, end) : 0;
    double cpu = g.t_window_start ? cpu_self_s() - g.cpu_window_start : 0;
    uint64_t minc = UINT64_MAX, maxc = 0;
    for (int i = 0; i < g.clients; i++) {
        conn_t *c = &g.conns[i];
        if (c->state != S_READY && c->msgs == 0)
            continue;
        if (c->msgs < minc)
            minc = c->msgs;
        if (c->msgs > maxc)
            maxc = c->msgs;
    }
    if (minc == UINT64_MAX)
        minc = 0;
    double connect_s = g.t_connect_end ? secs(g.t_connect_start, g.t_connect_end) : 0;
    uint64_t errors = 0;
    for (int k = 0; k < E_KINDS; k++)
        errors += g.errs[k];
    int alive = 0;
    for (int i = 0; i < g.clients; i++)
        alive += g.conns[i].state == S_READY;

    char p50[24], p99[24], p999[24], pmax[24], mean[24];
    int64_t v;
#define PCT(buf, x)                                                                                \
    ((v = (x)) < 0 ? snprintf(buf, sizeof(buf), "null") : snprintf(buf, sizeof(buf), "%" PRId64, v))
    PCT(p50, hist_pct(0.50));
    PCT(p99, hist_pct(0.99));
    PCT(p999, hist_pct(0.999));
    PCT(pmax, g.lat_n ? (int64_t)g.lat_max : -1);
    PCT(mean, g.lat_n ? (int64_t)(g.lat_sum / (double)g.lat_n + 0.5) : -1);
#undef PCT
    const char *pn = g.proto == P_SIGNALR ? "signalr" : g.proto == P_WS ? "ws" : "socketio";
    printf("{\"proto\":\"%s\",\"protocol\":\"%s\",\"transport\":\"%s\",\"clients\":%d,\"slow\":%d,\"connected\":%d,\"slow_connected\":%d,"
           "\"alive_at_end\":%d,\"messages\":%" PRIu64 ",\"seconds\":%.3f,\"msgs_per_s\":%.0f,"
           "\"min_per_client\":%" PRIu64 ",\"max_per_client\":%" PRIu64 ","
           "\"p50_us\":%s,\"p99_us\":%s,\"p999_us\":%s,\"max_us\":%s,\"mean_us\":%s,"
           "\"lat_samples\":%" PRIu64 ",\"warmup_messages\":%" PRIu64
           ",\"connect_s\":%.3f,\"connects_per_s\":%.0f,"
           "\"loadgen_cpu_s\":%.3f,\"errors\":%" PRIu64 ",\"error_detail\":{",
           pn, g.hub_protocol == HP_MSGPACK ? "messagepack" : "json",
           g.transport == T_LONGPOLL ? "longpolling" : "websockets", g.clients, g.slow, g.ready_readers, g.ready_slow, alive, g.messages, seconds,
           seconds > 0 ? (double)g.messages / seconds : 0.0, minc, maxc, p50, p99, p999, pmax, mean,
           g.lat_n, g.pre_window, connect_s,
           connect_s > 0 ? (double)(g.ready_readers + g.ready_slow) / connect_s : 0.0, cpu, errors);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s\"%s\":%" PRIu64, k ? "," : "", err_names[k], g.errs[k]);
    printf("},\"timed_out\":%s}\n", timed_out ? "true" : "false");
    fflush(stdout);
    if (g.lat_neg)
        fprintf(stderr, "loadgen: %" PRIu64 " messages had a timestamp in the future\n", g.lat_neg);
    /* The kernel closes the sockets; nothing else is worth tearing down. */
    exit(timed_out ? 3 : 0);
}

/* ---- options and main ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: loadgen --port P [options]\n"
          "  --host A              server address, 127.0.0.0/8 only (default 127.0.0.1)\n"
          "  --port P              server port (required)\n"
          "  --proto X             signalr | ws | socketio (default signalr)\n"
          "  --path P              hub / WebSocket path (default /runtime, / or /socket.io/...)\n"
          "  --skip-negotiate      signalr: upgrade at --path directly\n"
          "  --negotiate-reuse     signalr: upgrade on the negotiate connection (default: a new "
          "one)\n"
          "  --protocol X          signalr hub protocol: json | messagepack (default json)\n"
          "  --transport X         signalr transport: websockets | longpolling (default websockets)\n"
          "  -n, --clients N       reading clients (default 100)\n"
          "  --slow K              extra clients that handshake, then never read (default 0)\n"
          "  --slow-rcvbuf B       SO_RCVBUF of the slow clients, 0 = the system's (default 4096)\n"
          "  --concurrency C       connections being set up at once (default 200)\n"
          "  --src-addrs K         spread over 127.0.0.1..127.0.0.K (default: 1 per 4000 clients)\n"
          "  --duration S          measurement window in seconds (default 5)\n"
          "  --warmup S            discarded seconds after the first message (default 1)\n"
          "  --conns-only          connect and handshake, then idle for --duration (no messages)\n"
          "  --connect-timeout S   give up on clients not ready after S s (default 60)\n"
          "  --first-timeout S     give up when no message arrives S s after READY (default 10)\n"
          "  --timeout S           hard limit for the whole run (default: sum of the above + 10)\n"
          "  -v, --verbose         print every error\n",
          f);
}

static double parse_num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end != 0 || !(v >= lo && v <= hi))
        die("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

int main(int argc, char **argv)
{
    enum {
        OPT_HOST = 256,
        OPT_PORT,
        OPT_PROTO,
        OPT_PATH,
        OPT_SKIP,
        OPT_REUSE,
        OPT_HUBPROTO,
        OPT_TRANSPORT,
        OPT_SLOW,
        OPT_SLOWBUF,
        OPT_CONC,
        OPT_SRC,
        OPT_DUR,
        OPT_WARM,
        OPT_CONNS,
        OPT_CTO,
        OPT_FTO,
        OPT_TO
    };
    static const struct option opts[] = {{"host", 1, 0, OPT_HOST},
                                         {"port", 1, 0, OPT_PORT},
                                         {"proto", 1, 0, OPT_PROTO},
                                         {"path", 1, 0, OPT_PATH},
                                         {"skip-negotiate", 0, 0, OPT_SKIP},
                                         {"negotiate-reuse", 0, 0, OPT_REUSE},
                                         {"protocol", 1, 0, OPT_HUBPROTO},
                                         {"transport", 1, 0, OPT_TRANSPORT},
                                         {"clients", 1, 0, 'n'},
                                         {"slow", 1, 0, OPT_SLOW},
                                         {"slow-rcvbuf", 1, 0, OPT_SLOWBUF},
                                         {"concurrency", 1, 0, OPT_CONC},
                                         {"src-addrs", 1, 0, OPT_SRC},
                                         {"duration", 1, 0, OPT_DUR},
                                         {"warmup", 1, 0, OPT_WARM},
                                         {"conns-only", 0, 0, OPT_CONNS},
                                         {"connect-timeout", 1, 0, OPT_CTO},
                                         {"first-timeout", 1, 0, OPT_FTO},
                                         {"timeout", 1, 0, OPT_TO},
                                         {"verbose", 0, 0, 'v'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    g.host = "127.0.0.1";
    g.proto = P_SIGNALR;
    g.clients = 100;
    g.concurrency = 200;
    g.slow_rcvbuf = 4096;
    g.duration = 5;
    g.warmup = 1;
    g.connect_timeout = 60;
    g.first_timeout = 10;
    g.timeout = -1;
    int opt;
    while ((opt = getopt_long(argc, argv, "n:vh", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HOST:
            g.host = optarg;
            break;
        case OPT_PORT:
            g.port = (int)parse_num("--port", optarg, 1, 65535);
            break;
        case OPT_PROTO:
            if (strcmp(optarg, "signalr") == 0)
                g.proto = P_SIGNALR;
            else if (strcmp(optarg, "ws") == 0)
                g.proto = P_WS;
            else if (strcmp(optarg, "socketio") == 0)
                g.proto = P_SOCKETIO;
            else
                die("--proto: signalr, ws or socketio");
            break;
        case OPT_PATH:
            g.path = optarg;
            break;
        case OPT_SKIP:
            g.skip_negotiate = 1;
            break;
        case OPT_REUSE:
            g.negotiate_reuse = 1;
            break;
        case OPT_HUBPROTO:
            if (strcmp(optarg, "json") == 0)
                g.hub_protocol = HP_JSON;
            else if (strcmp(optarg, "messagepack") == 0 || strcmp(optarg, "msgpack") == 0)
                g.hub_protocol = HP_MSGPACK;
            else
                die("--protocol: json or messagepack");
            break;
        case OPT_TRANSPORT:
            if (strcmp(optarg, "websockets") == 0 || strcmp(optarg, "ws") == 0)
                g.transport = T_WEBSOCKETS;
            else if (strcmp(optarg, "longpolling") == 0 || strcmp(optarg, "lp") == 0)
                g.transport = T_LONGPOLL;
            else
                die("--transport: websockets or longpolling");
            break;
        case 'n':
            g.clients = (int)parse_num("--clients", optarg, 1, 19900);
            break;
        case OPT_SLOW:
            g.slow = (int)parse_num("--slow", optarg, 0, 1000);
            break;
        case OPT_SLOWBUF:
            g.slow_rcvbuf = (int)parse_num("--slow-rcvbuf", optarg, 0, 1 << 24);
            break;
        case OPT_CONC:
            g.concurrency = (int)parse_num("--concurrency", optarg, 1, 10000);
            break;
        case OPT_SRC:
            g.src_addrs = (int)parse_num("--src-addrs", optarg, 1, 254);
            break;
        case OPT_DUR:
            g.duration = parse_num("--duration", optarg, 0, 3600);
            break;
        case OPT_WARM:
            g.warmup = parse_num("--warmup", optarg, 0, 600);
            break;
        case OPT_CONNS:
            g.conns_only = 1;
            break;
        case OPT_CTO:
            g.connect_timeout = parse_num("--connect-timeout", optarg, 0.1, 3600);
            break;
        case OPT_FTO:
            g.first_timeout = parse_num("--first-timeout", optarg, 0.1, 3600);
            break;
        case OPT_TO:
            g.timeout = parse_num("--timeout", optarg, 0.1, 7200);
            break;
        case 'v':
            g.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || g.port == 0) {
        usage(stderr);
        return 2;
    }
    if (g.proto != P_SIGNALR && (g.hub_protocol != HP_JSON || g.transport != T_WEBSOCKETS))
        die("--protocol and --transport apply to --proto signalr only");
    if (g.transport == T_LONGPOLL && (g.skip_negotiate || g.slow > 0))
        die("--transport longpolling needs negotiate and takes no --slow clients");
    if (g.path == NULL)
        g.path = g.proto == P_SIGNALR ? "/runtime"
                 : g.proto == P_WS    ? "/"
                                      : "/socket.io/?EIO=4&transport=websocket";
    if (g.path[0] != '/' || strlen(g.path) > 400 || strpbrk(g.path, " \r\n"))
        die("--path must start with / and hold no spaces");
    if (inet_pton(AF_INET, g.host, &g.dst.sin_addr) != 1 ||
        (ntohl(g.dst.sin_addr.s_addr) >> 24) != 127)
        die("--host must be an IPv4 address in 127.0.0.0/8");
    g.dst.sin_family = AF_INET;
    g.dst.sin_port = htons((uint16_t)g.port);
    snprintf(g.host_hdr, sizeof(g.host_hdr), "%s:%d", g.host, g.port);
    g.total = g.clients + g.slow;
    if (g.src_addrs == 0)
        g.src_addrs = (g.total + PER_ADDR - 1) / PER_ADDR;
    if (g.timeout < 0)
        g.timeout = g.connect_timeout + g.first_timeout + g.warmup + g.duration + 10;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)g.total + 32 > rl.rlim_cur)
        die("%d clients need more file descriptors than the limit (%lu): use fewer or run "
            "several loadgen processes",
            g.total, (unsigned long)rl.rlim_cur);

    setvbuf(stdout, NULL, _IOLBF, 0);
    rng_state ^= (uint32_t)wall_us();
    g.hist = calloc(H_BUCKETS, sizeof(uint64_t));
    g.conns = calloc((size_t)g.total, sizeof(conn_t));
    if (g.hist == NULL || g.conns == NULL)
        die("out of memory");
    for (int i = 0; i < g.total; i++) {
        g.conns[i].idx = (uint32_t)i;
        g.conns[i].slow = i >= g.clients;
    }

    g.loop = uv_default_loop();
    uv_timer_init(g.loop, &g.phase_timer);
    uv_timer_init(g.loop, &g.hard_timer);
    uv_timer_init(g.loop, &g.ping_timer);
    uv_timer_start(&g.hard_timer, on_hard_timeout, (uint64_t)(g.timeout * 1000), 0);
    uv_timer_start(&g.phase_timer, on_connect_timeout, (uint64_t)(g.connect_timeout * 1000), 0);
    if (g.proto == P_SIGNALR && g.transport == T_WEBSOCKETS) /* no pings over long polling */
        uv_timer_start(&g.ping_timer, on_ping_timer, SIGNALR_PING_MS, SIGNALR_PING_MS);

    g.t_connect_start = mono_ns();
    start_more();
    uv_run(g.loop, UV_RUN_DEFAULT);
    print_results(1); /* not reached: every path ends in print_results */
    return 3;
}
