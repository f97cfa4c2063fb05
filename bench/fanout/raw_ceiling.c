/* raw_ceiling.c: the "what the syscalls allow" reference for the broadcast fan-out benchmark.
 *
 * A minimal single-threaded epoll server. It accepts WebSocket clients (plain upgrade on any
 * path; it also answers SignalR's POST .../negotiate and the JSON handshake, so the load
 * generator can use --proto signalr against it exactly as against kestrun), and on
 * GET /start?seconds=S it writes one pre-encoded frame to every client socket, round after round,
 * as fast as the kernel takes them, for S seconds. No framework, no per-client encoding, no
 * allocation in the loop: only the write system calls remain.
 *
 *   raw_ceiling [--host 127.0.0.1] [--port P|0] [--port-file F] [--batch B]
 *
 *   --batch 1   (default) one write() per frame per client: the cost of a server that sends each
 *               message as it comes
 *   --batch B   B frames per client per round in one writev() of B iovecs: a server that
 *               coalesces the frames queued for a connection into one system call
 *   ?batch=B on /start overrides it for that run.
 *
 * The frame is the one kestrun sends for kr.send_event("tick", {n=i, t=µs}): one text frame
 * holding {"type":1,"target":"ReceiveEvent","arguments":[{"eventName":"tick","data":{"n":i,
 * "t":µs},"timestamp":"…Z"}]}\x1e, rebuilt once per round (t = the round's start time; the
 * same bytes go to every client, B of them per writev with consecutive n).
 *
 * Backpressure, as in the Node peers: a socket that returns EAGAIN is skipped for the round (the
 * frames are dropped for it). A partial write keeps the unwritten tail of the frames, which is
 * written before anything new, so the stream always holds whole frames. When a whole round
 * writes nothing at all, the loop sleeps 50 µs instead of spinning.
 *
 * Build: cc -O2 -Wall -Wextra -o raw_ceiling raw_ceiling.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 64
#define MAX_REQ 2048
#define MAX_FRAME 256

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept ---------------------------------------- */

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *m = calloc(1, total);
    if (m == NULL)
        abort();
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        m[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++)
            w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5A827999;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ED9EBA1;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8F1BBCDC;
            } else {
                f = b ^ c ^ d;
                k = 0xCA62C1D6;
            }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0, o = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
}

/* ---- clients ---------------------------------------------------------------------------- */

typedef struct client {
    int fd;
    int ws;     /* upgraded */
    int dead;   /* a write failed during the blast: closed after it */
    size_t len; /* bytes in req (HTTP request, or a partial client frame) */
    char req[MAX_REQ];
    char *tail; /* unwritten part of a partially written round */
    size_t tail_len;
} client_t;

static client_t **clients; /* upgraded clients, by index */
static int nclients, cap_clients;
static int ep;
static int batch_default = 1;
static long long start_seconds_x1000; /* pending /start (ms), 0 = none */
static int start_batch;
static unsigned long long counter;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long long wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void client_close(client_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->ws) {
        for (int i = 0; i < nclients; i++)
            if (clients[i] == c) {
                clients[i] = clients[--nclients];
                break;
            }
    }
    free(c->tail);
    free(c);
}

/* Blocking-ish small write for handshakes and replies (the socket buffer is empty then). */
static int write_all(int fd, const char *p, size_t n)
{
    for (int tries = 0; n > 0 && tries < 1000; tries++) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        }
    }
    return n == 0 ? 0 : -1;
}

static const char *header(const char *req, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(req, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            *vlen = e ? (size_t)(e - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

/* One whole HTTP request is in c->req (NUL-terminated, head only: bodies are ignored; the only
 * POST, negotiate, has none). Returns -1 to close the connection. */
static int handle_http(client_t *c)
{
    char method[8] = "", target[1024] = "";
    sscanf(c->req, "%7s %1023s", method, target);
    size_t klen = 0;
    const char *key = header(c->req, "Sec-WebSocket-Key", &klen);
    if (strcmp(method, "GET") == 0 && key != NULL && klen < 64) {
        char buf[128];
        unsigned char dig[20];
        char acc[32];
        snprintf(buf, sizeof(buf), "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)klen, key);
        sha1((const unsigned char *)buf, strlen(buf), dig);
        base64(dig, 20, acc);
        char resp[256];
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                         acc);
        if (write_all(c->fd, resp, (size_t)n) < 0)
            return -1;
        c->ws = 1;
        if (nclients == cap_clients) {
            cap_clients = cap_clients ? cap_clients * 2 : 1024;
            clients = realloc(clients, (size_t)cap_clients * sizeof(*clients));
            if (clients == NULL)
                abort();
        }
        clients[nclients++] = c;
        return 0;
    }
    char body[256];
    int status = 200;
    if (strcmp(method, "POST") == 0 && strstr(target, "/negotiate") != NULL) {
        static unsigned long long ids;
        ids++;
        snprintf(body, sizeof(body),
                 "{\"negotiateVersion\":1,\"connectionId\":\"c%llu\",\"connectionToken\":\"t%llu\","
                 "\"availableTransports\":[{\"transport\":\"WebSockets\",\"transferFormats\":"
                 "[\"Text\",\"Binary\"]}]}",
                 ids, ids);
    } else if (strcmp(method, "GET") == 0 && strncmp(target, "/start", 6) == 0) {
        double secs = 5;
        int b = batch_default;
        const char *q;
        if ((q = strstr(target, "seconds=")) != NULL)
            secs = atof(q + 8);
        if ((q = strstr(target, "batch=")) != NULL)
            b = atoi(q + 6);
        if (!(secs > 0 && secs <= 600) || b < 1 || b > MAX_BATCH) {
            status = 400;
            snprintf(body, sizeof(body), "{\"error\":\"seconds 0..600, batch 1..%d\"}", MAX_BATCH);
        } else {
            start_seconds_x1000 = (long long)(secs * 1000);
            start_batch = b;
            snprintf(body, sizeof(body),
                     "{\"started\":true,\"seconds\":%g,\"batch\":%d,"
                     "\"clients\":%d}",
                     secs, b, nclients);
        }
    } else {
        status = 404;
        snprintf(body, sizeof(body), "{\"error\":\"not found\"}");
    }
    char resp[512];
    int n = snprintf(
        resp, sizeof(resp),
        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", status,
        status == 200 ? "OK" : "Error", strlen(body), body);
    return write_all(c->fd, resp, (size_t)n);
}

/* Client frames after the upgrade: answer a SignalR JSON handshake with {}\x1e, a close with a
 * close; ignore the rest (pings, Engine.IO packets). */
static int handle_ws_input(client_t *c)
{
    size_t off = 0;
    while (c->len - off >= 6) {
        unsigned char *h = (unsigned char *)c->req + off;
        int op = h[0] & 15;
        size_t pl = h[1] & 127, hl = 2;
        if (pl == 126) {
            pl = (size_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (pl == 127) {
            return -1; /* no large client frames here */
        }
        if (!(h[1] & 0x80))
            return -1; /* client frames must be masked */
        if (c->len - off < hl + 4 + pl)
            break;
        unsigned char *mk = h + hl, *p = h + hl + 4;
        for (size_t i = 0; i < pl; i++)
            p[i] ^= mk[i & 3];
        if (op == 8)
            return -1;
        if (op == 1 && pl > 11 && memmem(p, pl, "\"protocol\"", 10) != NULL) {
            static const char ok[] = "\x81\x03{}\x1e";
            if (write_all(c->fd, ok, 5) < 0)
                return -1;
        }
        off += hl + 4 + pl;
    }
    memmove(c->req, c->req + off, c->len - off);
    c->len -= off;
    return 0;
}

static void on_readable(client_t *c)
{
    for (;;) {
        if (c->len >= MAX_REQ - 1) {
            client_close(c);
            return;
        }
        ssize_t r = read(c->fd, c->req + c->len, MAX_REQ - 1 - c->len);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            client_close(c);
            return;
        }
        if (r < 0)
            return;
        c->len += (size_t)r;
        if (c->ws) {
            if (handle_ws_input(c) < 0) {
                client_close(c);
                return;
            }
            continue;
        }
        c->req[c->len] = 0;
        char *end;
        while (!c->ws && (end = strstr(c->req, "\r\n\r\n")) != NULL) {
            size_t used = (size_t)(end - c->req) + 4;
            char save = c->req[used];
            c->req[used] = 0;
            int rc = handle_http(c);
            c->req[used] = save;
            if (rc < 0) {
                client_close(c);
                return;
            }
            memmove(c->req, c->req + used, c->len - used + 1);
            c->len -= used;
        }
        if (c->ws && c->len > 0 && handle_ws_input(c) < 0) {
            client_close(c);
            return;
        }
    }
}

/* ---- the fan-out loop ------------------------------------------------------------------- */

/* Writes a text frame holding the SignalR record for (n, t) into f; returns its length. */
static size_t build_frame(char *f, unsigned long long n, long long t)
{
    time_t secs = (time_t)(t / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[40];
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03dZ", (int)((t / 1000) % 1000));
    int pl = snprintf(f + 4, MAX_FRAME - 4,
                      "{\"type\":1,\"target\":\"ReceiveEvent\",\"arguments\":[{\"eventName\":"
                      "\"tick\",\"data\":{\"n\":%llu,\"t\":%lld},\"timestamp\":\"%s\"}]}\x1e",
                      n, t, ts);
    f[0] = (char)0x81; /* FIN + text */
    if (pl < 126) {
        f[1] = (char)pl;
        memmove(f + 2, f + 4, (size_t)pl);
        return (size_t)pl + 2;
    }
    f[1] = 126; /* 16-bit length follows */
    f[2] = (char)(pl >> 8);
    f[3] = (char)pl;
    return (size_t)pl + 4;
}

static void blast(double seconds, int batch)
{
    static char frames[MAX_BATCH][MAX_FRAME];
    struct iovec iov[MAX_BATCH];
    size_t round_bytes = 0;
    unsigned long long rounds = 0, writes = 0, full = 0, again = 0, partial = 0, dead = 0;
    double t0 = now_s(), end = t0 + seconds;
    int n0 = nclients;
    while (now_s() < end) {
        long long t = wall_us();
        round_bytes = 0;
        for (int b = 0; b < batch; b++) {
            iov[b].iov_base = frames[b];
            iov[b].iov_len = build_frame(frames[b], ++counter, t);
            round_bytes += iov[b].iov_len;
        }
        rounds++;
        unsigned long long progress = 0;
        for (int i = 0; i < nclients; i++) {
            client_t *c = clients[i];
            ssize_t w;
            if (c->dead)
                continue;
            if (c->tail) { /* finish the previous round first */
                w = write(c->fd, c->tail, c->tail_len);
                writes++;
                if (w == (ssize_t)c->tail_len) {
                    free(c->tail);
                    c->tail = NULL;
                    progress++;
                } else if (w > 0) {
                    memmove(c->tail, c->tail + w, c->tail_len - (size_t)w);
                    c->tail_len -= (size_t)w;
                    progress++;
                } else if (errno != EAGAIN) {
                    c->dead = 1;
                    dead++;
                }
                continue;
            }
            w = batch == 1 ? write(c->fd, frames[0], iov[0].iov_len) : writev(c->fd, iov, batch);
            writes++;
            if (w == (ssize_t)round_bytes) {
                full++;
                progress++;
            } else if (w > 0) { /* keep the rest so the stream stays whole frames */
                partial++;
                progress++;
                c->tail_len = round_bytes - (size_t)w;
                c->tail = malloc(c->tail_len);
                if (c->tail == NULL)
                    abort();
                size_t skip = (size_t)w, o = 0;
                for (int b = 0; b < batch; b++) {
                    size_t l = iov[b].iov_len;
                    if (skip >= l) {
                        skip -= l;
                        continue;
                    }
                    memcpy(c->tail + o, (char *)iov[b].iov_base + skip, l - skip);
                    o += l - skip;
                    skip = 0;
                }
            } else if (errno == EAGAIN) {
                again++;
            } else {
                c->dead = 1;
                dead++;
            }
        }
        if (progress == 0) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    double el = now_s() - t0;
    for (int i = nclients - 1; i >= 0; i--)
        if (clients[i]->dead)
            client_close(clients[i]);
    fprintf(stderr,
            "raw_ceiling: %.3f s, %d clients, batch %d: %llu rounds, %llu writes (%.0f/s), "
            "%llu full, %llu partial, %llu EAGAIN, %llu errors; ~%.0f frames/s written\n",
            el, n0, batch, rounds, writes, writes / el, full, partial, again, dead,
            (double)full * batch / el);
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port_file = NULL;
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
            port_file = argv[++i];
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch_default = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: raw_ceiling [--host 127.0.0.1] [--port P|0] [--port-file F] "
                    "[--batch 1..%d]\n",
                    MAX_BATCH);
            return 2;
        }
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || (ntohl(a.sin_addr.s_addr) >> 24) != 127 ||
        batch_default < 1 || batch_default > MAX_BATCH || port < 0 || port > 65535) {
        fprintf(stderr, "raw_ceiling: --host must be in 127.0.0.0/8, --batch 1..%d\n", MAX_BATCH);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 4096) < 0) {
        perror("raw_ceiling: bind/listen");
        return 1;
    }
    socklen_t al = sizeof(a);
    getsockname(ls, (struct sockaddr *)&a, &al);
    if (port_file) {
        char tmp[1024];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) != 0 ||
            rename(tmp, port_file) != 0) {
            perror("raw_ceiling: port file");
            return 1;
        }
    }
    printf("LISTENING %d\n", ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    client_t *c = calloc(1, sizeof(*c));
                    if (c == NULL)
                        abort();
                    c->fd = fd;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
            } else {
                on_readable(evs[i].data.ptr);
            }
        }
        if (start_seconds_x1000 > 0) {
            double s = (double)start_seconds_x1000 / 1000;
            start_seconds_x1000 = 0;
            blast(s, start_batch);
        }
    }
}
