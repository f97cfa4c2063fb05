/* kr_tls.c: TLS contexts and memory-BIO connections with OpenSSL 3 (see kr_tls.h). */
#include "kr_tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

/* TLS 1.2 suites: forward secret AEAD only (Mozilla "intermediate" without DHE, which needs
 * parameters of its own). TLS 1.3 keeps OpenSSL's default suites, which are all AEAD. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Plaintext pieces smaller than this are copied together so that several small messages (hub
 * frames, SSE events) leave in one record instead of one record (and one AEAD call) each. */
#define COALESCE_BELOW 4096
#define RECORD_BYTES 16384

/* The oldest error on OpenSSL's queue is the cause ("No such file or directory", "no start
 * line"); the ones after it only say which layer passed it up. Empties the queue. */
static unsigned long openssl_reason(char *err, size_t errlen)
{
    unsigned long e, first = 0;
    while ((e = ERR_get_error()) != 0) {
        if (first == 0)
            first = e;
    }
    const char *r = NULL;
    if (first != 0 && ERR_GET_LIB(first) == ERR_LIB_SYS)
        r = strerror(ERR_GET_REASON(first)); /* fopen: "No such file or directory" */
    else if (first != 0)
        r = ERR_reason_error_string(first);
    if (err && errlen)
        snprintf(err, errlen, "%s", r ? r : first ? "unknown OpenSSL error" : "unknown error");
    return first;
}

/* An encrypted key would make OpenSSL prompt on the terminal: refuse it instead. */
static int no_password(char *buf, int size, int rwflag, void *ud)
{
    KR_UNUSED(buf);
    KR_UNUSED(size);
    KR_UNUSED(rwflag);
    KR_UNUSED(ud);
    return 0;
}

/* ALPN: HTTP/1.1 is all we speak. A client that offers ALPN without http/1.1 (h2 only) gets
 * the no_application_protocol alert (RFC 7301 section 3.2) rather than a protocol it would
 * then misread; a client that offers no ALPN at all is served. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    KR_UNUSED(ssl);
    KR_UNUSED(arg);
    unsigned i = 0;
    while (i < inlen) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static SSL_CTX *build_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *kb = NULL;
    char why[256];
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "cannot create a TLS context: %s", why);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle connections give their record buffers back (memory per connection is a feature). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"kestrun", 7);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "cannot set the TLS ciphers: %s", why);
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "cannot load TLS certificate '%s': %s", cert, why);
        goto fail;
    }
    /* The key is read on its own first, so that "cannot read it" and "does not belong to the
     * certificate" get different messages. */
    kb = BIO_new_file(key, "r");
    if (kb != NULL)
        pkey = PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL);
    if (pkey == NULL) {
        unsigned long e = openssl_reason(why, sizeof(why));
        if (strcmp(why, "bad decrypt") == 0) /* the no_password callback refused */
            snprintf(why, sizeof(why), "the key is encrypted (give an unencrypted key)");
        else if (ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER || ERR_GET_LIB(e) == ERR_LIB_PEM)
            snprintf(why, sizeof(why), "no PEM private key found in it");
        snprintf(err, errlen, "cannot load TLS key '%s': %s", key, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "TLS key '%s' does not match certificate '%s'", key, cert);
        goto fail;
    }
    EVP_PKEY_free(pkey);
    BIO_free(kb);
    return ctx;
fail:
    EVP_PKEY_free(pkey);
    BIO_free(kb);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

kr_tls_ctx_t *kr_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = build_ctx(cert, key, err, errlen);
    if (ctx == NULL)
        return NULL;
    kr_tls_ctx_t *t = kr_calloc(1, sizeof(*t));
    t->ctx = ctx;
    t->cert_path = kr_strdup(cert);
    t->key_path = kr_strdup(key);
    return t;
}

int kr_tls_ctx_reload(kr_tls_ctx_t *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = build_ctx(t->cert_path, t->key_path, err, errlen);
    if (ctx == NULL)
        return KR_EINVAL;
    /* Connections hold their own reference (SSL_new): they finish on the old context. */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    return 0;
}

void kr_tls_ctx_free(kr_tls_ctx_t *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    kr_free(t->cert_path);
    kr_free(t->key_path);
    kr_free(t);
}

/* ---- connections ------------------------------------------------------------------------ */

kr_tls_conn_t *kr_tls_conn_new(kr_tls_ctx_t *t)
{
    SSL *ssl = SSL_new(t->ctx);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (ssl == NULL || rbio == NULL || wbio == NULL) {
        SSL_free(ssl);
        BIO_free(rbio);
        BIO_free(wbio);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(ssl, rbio, wbio); /* the SSL owns both BIOs from here */
    SSL_set_accept_state(ssl);
    kr_tls_conn_t *tc = kr_calloc(1, sizeof(*tc));
    tc->ssl = ssl;
    tc->rbio = rbio;
    tc->wbio = wbio;
    tc->need_input = 1;
    kr_outq_init(&tc->out);
    return tc;
}

void kr_tls_conn_free(kr_tls_conn_t *tc)
{
    if (tc == NULL)
        return;
    SSL_free(tc->ssl);
    kr_outq_dispose(&tc->out);
    kr_free(tc);
}

void kr_tls_feed(kr_tls_conn_t *tc, const void *p, size_t n)
{
    if (tc->failed || n == 0)
        return;
    /* A memory BIO only fails to grow when malloc fails, which kr_malloc would abort on. */
    int w = BIO_write(tc->rbio, p, (int)n);
    KR_ASSERT(w == (int)n);
    tc->need_input = 0;
}

size_t kr_tls_buffered(const kr_tls_conn_t *tc)
{
    return BIO_ctrl_pending(tc->rbio);
}

/* Moves whatever OpenSSL wrote for the peer into the encrypted queue. */
static void take_output(kr_tls_conn_t *tc)
{
    size_t n = BIO_ctrl_pending(tc->wbio);
    if (n == 0)
        return;
    kr_buf_t *b = kr_buf_new(n);
    int r = BIO_read(tc->wbio, b->data, (int)n);
    b->len = r > 0 ? (size_t)r : 0;
    kr_outq_push(&tc->out, b);
}

int kr_tls_read(kr_tls_conn_t *tc, char *dst, size_t cap, char *err, size_t errlen)
{
    if (tc->failed)
        return KR_TLS_ERROR;
    if (cap > RECORD_BYTES * 4)
        cap = RECORD_BYTES * 4;
    ERR_clear_error();
    int r = SSL_read(tc->ssl, dst, (int)cap);
    if (!tc->handshake_done && SSL_is_init_finished(tc->ssl))
        tc->handshake_done = 1;
    int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(tc->ssl, r);
    if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL) {
        tc->failed = 1;
        openssl_reason(err, errlen);
    }
    take_output(tc); /* handshake messages, tickets, key updates, alerts */
    switch (e) {
    case SSL_ERROR_NONE:
        /* Nothing buffered on either side of OpenSSL: the next SSL_read could only say
         * WANT_READ, so save the call (a third of the cost of a small request). */
        if (!SSL_has_pending(tc->ssl) && BIO_ctrl_pending(tc->rbio) == 0)
            tc->need_input = 1;
        return r;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: /* a memory BIO never refuses a write; be safe anyway */
        tc->need_input = 1;
        return KR_TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        tc->need_input = 1;
        return KR_TLS_EOF;
    default:
        if (!tc->failed) {
            tc->failed = 1;
            openssl_reason(err, errlen);
        }
        return KR_TLS_ERROR;
    }
}

/* One SSL_write of n bytes; with memory BIOs it takes everything or fails for good. */
static int write_plain(kr_tls_conn_t *tc, const void *p, size_t n, char *err, size_t errlen)
{
    ERR_clear_error();
    int r = SSL_write(tc->ssl, p, (int)n);
    if (r == (int)n)
        return 0;
    tc->failed = 1;
    openssl_reason(err, errlen);
    return KR_TLS_ERROR;
}

static size_t produced(const kr_tls_conn_t *tc)
{
    return tc->out.bytes + BIO_ctrl_pending(tc->wbio);
}

int kr_tls_encrypt(kr_tls_conn_t *tc, kr_outq_t *plain, size_t budget, char *err, size_t errlen)
{
    if (tc->failed) {
        kr_outq_consume(plain, plain->bytes); /* nobody will ever read it */
        return 0;
    }
    if (!tc->handshake_done || tc->shutdown_sent)
        return 0;
    char stage[RECORD_BYTES];
    size_t staged = 0;
    int rc = 0;
    while (!kr_outq_empty(plain) && produced(tc) + staged < budget) {
        uv_buf_t iov[16];
        unsigned n = kr_outq_peek(plain, iov, KR_ARRAY_SIZE(iov));
        size_t took = 0;
        for (unsigned i = 0; i < n && produced(tc) + staged < budget; i++) {
            const char *p = iov[i].base;
            size_t len = iov[i].len;
            if (len < COALESCE_BELOW) {
                if (staged + len > sizeof(stage)) {
                    if ((rc = write_plain(tc, stage, staged, err, errlen)) != 0)
                        goto out;
                    staged = 0;
                }
                memcpy(stage + staged, p, len);
                staged += len;
                took += len;
                continue;
            }
            if (staged > 0) {
                if ((rc = write_plain(tc, stage, staged, err, errlen)) != 0)
                    goto out;
                staged = 0;
            }
            size_t m = len < budget ? len : budget; /* a large body goes out a budget at a time */
            if ((rc = write_plain(tc, p, m, err, errlen)) != 0)
                goto out;
            took += m;
            if (m < len)
                break;
        }
        kr_outq_consume(plain, took);
    }
    if (staged > 0)
        rc = write_plain(tc, stage, staged, err, errlen);
out:
    take_output(tc);
    return rc;
}

int kr_tls_close_notify(kr_tls_conn_t *tc)
{
    if (tc->failed || tc->shutdown_sent || !tc->handshake_done)
        return 0;
    tc->shutdown_sent = 1;
    size_t before = tc->out.bytes;
    ERR_clear_error();
    (void)SSL_shutdown(tc->ssl); /* 0: sent, the peer's has not arrived; we do not wait for it */
    ERR_clear_error();
    take_output(tc);
    return tc->out.bytes > before;
}

const char *kr_tls_alpn(const kr_tls_conn_t *tc)
{
    static char buf[32];
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(tc->ssl, &p, &n);
    if (p == NULL || n >= sizeof(buf))
        return "";
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

const char *kr_tls_version(const kr_tls_conn_t *tc)
{
    return SSL_get_version(tc->ssl);
}
