/* kr_conn.h: one accepted TCP connection.
 *
 * Owns the uv_tcp_t, the read buffer (capped) and the output queue (kr_outq_t). What the
 * bytes mean is decided by a protocol ops table (HTTP first; a WebSocket upgrade swaps it):
 * the connection calls proto->on_read when bytes arrive, proto->on_drain when everything
 * queued has been written, proto->on_timeout when its deadline passes and proto->on_close
 * once when it starts closing. Producers only append to the output queue; the server
 * flushes every pending connection once per loop turn with one writev (architecture rule 3).
 *
 * Lifecycle (rule 1): kr_conn_close() is idempotent: it marks CLOSING, stops reading, calls
 * proto->on_close and uv_close()s the socket. The memory goes when the close callback has run
 * and no reference (kr_conn_ref) is left, so a caller that holds a reference may touch the
 * struct after a close, but must check kr_conn_is_closing() first.
 */
#ifndef KR_CONN_H
#define KR_CONN_H

#include "kr_buf.h"
#include "kr_ipcap.h"
#include "kr_list.h"

typedef struct kr_conn_s kr_conn_t;
typedef struct kr_server_s kr_server_t;

typedef struct kr_conn_proto_s {
    const char *name;
    /* New bytes are in c->rbuf[0..c->rlen); consume them with kr_conn_consume. */
    void (*on_read)(kr_conn_t *c);
    /* The peer closed its side (EOF) while the connection was open. NULL: close. */
    void (*on_eof)(kr_conn_t *c);
    /* The output queue became empty after a write. May be NULL. */
    void (*on_drain)(kr_conn_t *c);
    /* c->deadline_ms passed. May be NULL: close. */
    void (*on_timeout)(kr_conn_t *c);
    /* The connection is closing: release protocol state. Called exactly once. */
    void (*on_close)(kr_conn_t *c);
} kr_conn_proto_t;

typedef enum kr_conn_state_e { KR_CONN_OPEN = 0, KR_CONN_CLOSING, KR_CONN_CLOSED } kr_conn_state_e;

struct kr_conn_s {
    uv_tcp_t tcp;
    kr_server_t *server;
    uint64_t id;
    kr_conn_state_e state;
    uint32_t refs;
    const kr_conn_proto_t *proto;
    void *proto_data;
    /* input */
    char *rbuf;
    size_t rlen, rcap, rmax; /* rmax: the read buffer never grows past this */
    int rbuf_shared;         /* rbuf is the server's shared read buffer (during one read) */
    int reading;             /* uv_read_start is active */
    int want_read;           /* the protocol wants input (reading may still be paused by a full buffer) */
    /* output */
    kr_outq_t outq;
    size_t inflight; /* bytes handed to an uv_write that has not called back */
    uv_write_t wreq;
    int close_after_flush; /* close (gracefully) once the queue is written */
    int lingering;         /* shut down our side; reading and discarding until EOF */
    int detached;          /* no socket (tests, fuzzing) */
    int replay_input;      /* a new protocol took over with bytes in rbuf: on_read at next flush */
    /* Backpressure (architecture rule 4). 0 disables a limit. Above high_water the connection
     * stops reading until the queue drains below low_water; above hard_limit it is closed as
     * a slow consumer at the next safe point (never inside the producer's call). */
    size_t low_water, high_water, hard_limit;
    int out_paused;        /* reading stopped by high_water */
    /* Corking (kr_server.c on_check): while a producer keeps the loop busy, a corkable
     * connection's small queue waits up to KR_CORK_MS so that several messages leave in one
     * writev instead of one syscall each. Set for hub connections, never for HTTP answers. */
    int corkable;
    uint64_t queued_since_ms; /* loop time when the queue last went from empty to non-empty */
    int slow_consumer;     /* over hard_limit: closing at the next flush */
    uint64_t deadline_ms;  /* loop time at which on_timeout fires; 0 = none */
    kr_ipkey_t ipkey;      /* the client as the per-IP connection cap counts it (kr_ipcap.h) */
    int ip_counted;        /* ipkey is counted in server->ipcap (released when closing) */
    kr_list_t link;        /* server->conns */
    kr_list_t pending;     /* server->pending_writes */
    char remote_addr[64];
    /* The bytes came over TLS (set by the TLS listener when it accepts; 0 on plain TCP).
     * Authentication uses it: Basic credentials are refused on plain HTTP by default. */
    int secure;
    /* TLS (kr_tls.h): NULL on plain TCP. Set, the socket carries ciphertext: reads go through
     * tls into rbuf as usual, and the flush encrypts outq into tls->out, which is what gets
     * written. Everything above this layer sees plaintext either way. */
    struct kr_tls_conn_s *tls;
    int tls_pump; /* plaintext may be waiting inside tls: decrypt it at the next flush */
};

/* Called by the server's listener: accepts one connection on server with the given
 * protocol. Returns the connection (reading) or NULL if accept failed. */
kr_conn_t *kr_conn_accept(kr_server_t *server, uv_stream_t *listener, const kr_conn_proto_t *proto);

/* Makes c (just accepted, nothing read yet) a TLS server connection on ctx's current
 * certificate. Returns 0, or KR_ENOMEM (the caller closes c). */
struct kr_tls_ctx_s;
int kr_conn_start_tls(kr_conn_t *c, struct kr_tls_ctx_s *ctx);

/* Refuses c, just accepted (connection caps): reads and drops what the client already sent,
 * writes answer if n > 0 (best effort, one non-blocking write, nothing queued; never on TLS)
 * and closes at once. */
void kr__conn_refuse(kr_conn_t *c, const char *answer, size_t n);

void kr_conn_ref(kr_conn_t *c);
void kr_conn_unref(kr_conn_t *c);
static inline int kr_conn_is_closing(const kr_conn_t *c)
{
    return c->state != KR_CONN_OPEN;
}

/* Drops n consumed bytes from the front of the read buffer. */
void kr_conn_consume(kr_conn_t *c, size_t n);
/* Starts or pauses reading on behalf of the protocol. */
void kr_conn_read_start(kr_conn_t *c);
void kr_conn_read_stop(kr_conn_t *c);

/* Appends to the output queue (buf is taken) and schedules a flush in this loop turn.
 * On a closing connection the buffer is released and KR_ECLOSED returned. */
int kr_conn_write(kr_conn_t *c, kr_buf_t *buf);
int kr_conn_write_copy(kr_conn_t *c, const void *p, size_t n);
/* Bytes queued or in flight. */
static inline size_t kr_conn_queued(const kr_conn_t *c)
{
    return c->outq.bytes;
}

/* Closes once everything queued is written: shut down the write side, discard input until
 * the peer closes or a short linger time passes, then close. */
void kr_conn_close_after_flush(kr_conn_t *c);
/* Closes now (idempotent); queued bytes are dropped. */
void kr_conn_close(kr_conn_t *c, const char *reason);

/* For unit tests and fuzz targets: a connection with no socket behind it (its uv_tcp_t is
 * initialised but never connected; nothing is ever written). Feed it input with
 * kr__conn_feed, which appends up to the read-buffer limit and runs the protocol as a read
 * would; returns how many bytes were taken. Queued output stays in c->outq. */
kr_conn_t *kr__conn_new_detached(kr_server_t *server, const kr_conn_proto_t *proto);
size_t kr__conn_feed(kr_conn_t *c, const void *data, size_t len);

/* Internal to the server: write out c's queue (one try_write, the rest in one uv_write). */
void kr__conn_flush(kr_conn_t *c);
/* Internal to the server: called from the server's sweep when the deadline passed. */
void kr__conn_timeout(kr_conn_t *c);

#endif
