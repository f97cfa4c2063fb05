/* kr_tls.h: TLS (HTTPS, WSS) for a listener's connections, with OpenSSL 3.
 *
 * What: a listener context (kr_tls_ctx_t: one SSL_CTX built from a certificate chain and a
 * key, TLS 1.2 and 1.3 only, ALPN http/1.1, no renegotiation, session tickets on) and the
 * per-connection state (kr_tls_conn_t: one SSL over two memory BIOs).
 *
 * Why memory BIOs: the socket stays libuv's and the connection layer (kr_conn.c) keeps
 * doing all the I/O. Ciphertext read from the socket goes in with kr_tls_feed, plaintext
 * comes out with kr_tls_read into the connection's usual read buffer; the plaintext output
 * queue goes through SSL_write (kr_tls_encrypt) into an encrypted queue that the connection
 * writes with the same writev path as a plain one. So HTTP, WebSocket, SSE, long polling and
 * hubs run unchanged above kr_conn, and a plain connection pays one NULL pointer test.
 *
 * Owns: the SSL_CTX (refcounted by OpenSSL: a reload swaps it for new handshakes while
 * existing connections keep the one they started with), the SSL, its BIOs and the encrypted
 * output queue. Calls OpenSSL and kr_buf only; never kr_conn (kr_conn calls in).
 */
#ifndef KR_TLS_H
#define KR_TLS_H

#include "kr_buf.h"

struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

typedef struct kr_tls_ctx_s {
    struct ssl_ctx_st *ctx; /* the context new handshakes use */
    char *cert_path;
    char *key_path;
} kr_tls_ctx_t;

typedef struct kr_tls_conn_s {
    struct ssl_st *ssl;
    struct bio_st *rbio; /* ciphertext from the peer, read by OpenSSL */
    struct bio_st *wbio; /* ciphertext OpenSSL wrote for the peer */
    kr_outq_t out;       /* encrypted bytes waiting for the socket */
    int need_input;      /* OpenSSL asked for more ciphertext than it has */
    int handshake_done;
    int failed;          /* a fatal TLS error: no close_notify, no more SSL calls */
    int shutdown_sent;   /* close_notify queued */
    int reported;        /* the finished handshake was logged */
} kr_tls_conn_t;

/* kr_tls_read results besides a byte count. */
#define KR_TLS_WANT 0 /* nothing more until more ciphertext arrives */
#define KR_TLS_EOF (-1) /* the peer sent close_notify */
#define KR_TLS_ERROR (-2) /* a fatal error; the reason is in the error buffer */

/* Loads cert (a PEM chain: the certificate first) and key (PEM, unencrypted) and builds a
 * context. On failure returns NULL and writes a one-line reason to err, e.g.
 * "cannot load TLS certificate 'x.pem': no start line". */
kr_tls_ctx_t *kr_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen);
/* Loads the same files again into a new SSL_CTX. On success new handshakes use it and 0 is
 * returned; on failure the old context stays and err says why. */
int kr_tls_ctx_reload(kr_tls_ctx_t *t, char *err, size_t errlen);
void kr_tls_ctx_free(kr_tls_ctx_t *t);

/* A server-side TLS state on t's current context; NULL if OpenSSL could not allocate. */
kr_tls_conn_t *kr_tls_conn_new(kr_tls_ctx_t *t);
void kr_tls_conn_free(kr_tls_conn_t *tc);

/* Hands n bytes of ciphertext to OpenSSL (copied into the read BIO). */
void kr_tls_feed(kr_tls_conn_t *tc, const void *p, size_t n);
/* Ciphertext fed and not yet decrypted. */
size_t kr_tls_buffered(const kr_tls_conn_t *tc);
/* Non-zero while kr_tls_read may produce something without more ciphertext. */
static inline int kr_tls_has_input(const kr_tls_conn_t *tc)
{
    return !tc->need_input && !tc->failed;
}
/* Decrypts up to cap bytes into dst (drives the handshake first). Returns the number of
 * bytes, KR_TLS_WANT, KR_TLS_EOF or KR_TLS_ERROR (reason in err). Handshake messages,
 * session tickets and alerts it produces are moved to tc->out. */
int kr_tls_read(kr_tls_conn_t *tc, char *dst, size_t cap, char *err, size_t errlen);
/* Encrypts from the head of plain (consuming what it took) until plain is empty or tc->out
 * holds at least budget bytes. Small buffers are coalesced into full records. Returns 0, or
 * KR_TLS_ERROR with the reason in err. Before the handshake has finished nothing is taken. */
int kr_tls_encrypt(kr_tls_conn_t *tc, kr_outq_t *plain, size_t budget, char *err, size_t errlen);
/* Queues close_notify once (not after a fatal error or before the handshake finished).
 * Returns non-zero if it queued bytes into tc->out. */
int kr_tls_close_notify(kr_tls_conn_t *tc);
/* The ALPN protocol agreed ("http/1.1") or "" when the client offered none. */
const char *kr_tls_alpn(const kr_tls_conn_t *tc);
/* The protocol version of the connection ("TLSv1.3"). */
const char *kr_tls_version(const kr_tls_conn_t *tc);

#endif
