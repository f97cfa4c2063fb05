/* test_tls.c: TLS listeners (kr_tls + the TLS path of kr_conn), with real sockets on 127.0.0.1.
 *
 * A self-signed P-256 certificate is made in-process with OpenSSL into a temporary directory.
 * The client is OpenSSL too, blocking, in a thread; the server runs on the test's loop. The
 * client asks the loop to stop through a uv_async when it is done. Covered: handshake with
 * ALPN http/1.1 and TLS 1.3, keep-alive requests, pipelining, a large body both ways (the
 * plaintext goes through the shared read buffer, the pump and the encrypted output queue),
 * plain HTTP sent to a TLS port (closed, nothing in plaintext), TLS 1.1 refused, loading
 * errors and a reload that keeps the old certificate when the new file is broken.
 */
#include "kr_conn.h"
#include "kr_server.h"
#include "kr_tls.h"

#include "kr_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/socket.h>

static char dir[256];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* Writes NAME-cert.pem and NAME-key.pem: a self-signed P-256 certificate for CN=cn with
 * subjectAltName DNS:localhost, IP:127.0.0.1. */
static void make_cert(const char *name, const char *cn)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    ASSERT_NOT_NULL(pk);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext =
        X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    ASSERT_NOT_NULL(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ASSERT(X509_sign(x, pk, EVP_sha256()) > 0);
    char p[512];
    snprintf(p, sizeof(p), "%s/%s-cert.pem", dir, name);
    FILE *f = fopen(p, "w");
    ASSERT_NOT_NULL(f);
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(p, sizeof(p), "%s/%s-key.pem", dir, name);
    f = fopen(p, "w");
    ASSERT_NOT_NULL(f);
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static void write_file(const char *name, const char *text)
{
    char p[512];
    path_of(p, sizeof(p), name);
    FILE *f = fopen(p, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
}

static void setup_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kr-test-tls-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(dir));
    make_cert("a", "first");
    make_cert("b", "second");
    write_file("garbage.pem", "not a pem file\n");
}

static void cleanup_dir(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* ---- loading ---------------------------------------------------------------------------- */

TEST(load_errors_are_clear)
{
    setup_dir();
    char cert[512], key[512], other_key[512], garbage[512], missing[512], err[600];
    path_of(cert, sizeof(cert), "a-cert.pem");
    path_of(key, sizeof(key), "a-key.pem");
    path_of(other_key, sizeof(other_key), "b-key.pem");
    path_of(garbage, sizeof(garbage), "garbage.pem");
    path_of(missing, sizeof(missing), "missing.pem");

    kr_tls_ctx_t *t = kr_tls_ctx_new(cert, key, err, sizeof(err));
    ASSERT_NOT_NULL(t);
    kr_tls_ctx_free(t);

    ASSERT_NULL(kr_tls_ctx_new(missing, key, err, sizeof(err)));
    ASSERT(strstr(err, "cannot load TLS certificate '") == err);
    ASSERT(strstr(err, "No such file or directory") != NULL);

    ASSERT_NULL(kr_tls_ctx_new(garbage, key, err, sizeof(err)));
    ASSERT(strstr(err, "cannot load TLS certificate") == err);
    ASSERT(strstr(err, "no start line") != NULL);

    ASSERT_NULL(kr_tls_ctx_new(cert, garbage, err, sizeof(err)));
    ASSERT(strstr(err, "cannot load TLS key") == err);

    ASSERT_NULL(kr_tls_ctx_new(cert, other_key, err, sizeof(err)));
    ASSERT(strstr(err, "does not match certificate") != NULL);
    ASSERT_EQ(ERR_peek_error(), 0); /* nothing left on OpenSSL's queue for the next caller */
    cleanup_dir();
}

TEST(reload_keeps_the_old_context_on_a_broken_file)
{
    setup_dir();
    char cert[512], key[512], err[600];
    path_of(cert, sizeof(cert), "live-cert.pem");
    path_of(key, sizeof(key), "live-key.pem");
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cp '%s/a-cert.pem' '%s' && cp '%s/a-key.pem' '%s'", dir, cert,
             dir, key);
    ASSERT_EQ(system(cmd), 0);
    kr_tls_ctx_t *t = kr_tls_ctx_new(cert, key, err, sizeof(err));
    ASSERT_NOT_NULL(t);
    struct ssl_ctx_st *before = t->ctx;
    write_file("live-cert.pem", "broken\n");
    ASSERT(kr_tls_ctx_reload(t, err, sizeof(err)) != 0);
    ASSERT(t->ctx == before);
    ASSERT(strstr(err, "cannot load TLS certificate") == err);
    snprintf(cmd, sizeof(cmd), "cp '%s/b-cert.pem' '%s' && cp '%s/b-key.pem' '%s'", dir, cert,
             dir, key);
    ASSERT_EQ(system(cmd), 0);
    ASSERT_OK(kr_tls_ctx_reload(t, err, sizeof(err)));
    ASSERT(t->ctx != before);
    kr_tls_ctx_free(t);
    cleanup_dir();
}

/* ---- a server and a blocking client in a thread ------------------------------------------- */

#define BIG (300 * 1024)

typedef struct fx_s {
    uv_loop_t loop;
    kr_server_t s;
    uv_async_t done;
    pthread_t thread;
    int port;
    void (*client)(void);
    int ok; /* set by the client when every check passed */
    char failure[256];
} fx_t;

static fx_t fx;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(fx.failure, sizeof(fx.failure), "%s:%d: %s", __FILE__, __LINE__, #cond);     \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* GET /size/N answers N bytes of 'x'; a request with a body answers "got N"; others "hello". */
static void handler(kr_http_req_t *req, void *ud)
{
    KR_UNUSED(ud);
    char text[64];
    if (strncmp(req->path, "/size/", 6) == 0) {
        size_t n = (size_t)strtoul(req->path + 6, NULL, 10);
        kr_buf_t *b = kr_buf_new(n);
        memset(b->data, 'x', n);
        kr_http_respond(req, 200, NULL, 0, b);
        return;
    }
    if (req->body != NULL) {
        int ok = 1;
        for (size_t i = 0; i < req->body->len; i++)
            ok &= req->body->data[i] == (char)('a' + i % 26);
        snprintf(text, sizeof(text), "got %zu %s", req->body->len, ok ? "intact" : "corrupt");
    } else {
        snprintf(text, sizeof(text), "hello");
    }
    kr_http_respond_text(req, 200, "text/plain", text, strlen(text));
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)fx.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* A client context that trusts certificate a, offers ALPN http/1.1 and TLS 1.2..max. */
static SSL_CTX *client_ctx(int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char ca[512];
    path_of(ca, sizeof(ca), "a-cert.pem");
    SSL_CTX_load_verify_locations(ctx, ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (max_version) {
        SSL_CTX_set_security_level(ctx, 0); /* let the client offer TLS 1.1 at all */
        SSL_CTX_set_min_proto_version(ctx, max_version);
        SSL_CTX_set_max_proto_version(ctx, max_version);
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    return ctx;
}

/* Reads until the text holds n complete responses (Content-Length bodies). */
static size_t read_responses(SSL *ssl, char *buf, size_t cap, int n)
{
    size_t len = 0;
    for (;;) {
        int seen = 0;
        size_t at = 0;
        while (seen < n) {
            buf[len] = '\0';
            char *head_end = strstr(buf + at, "\r\n\r\n");
            if (head_end == NULL)
                break;
            char *cl = strcasestr(buf + at, "content-length:");
            size_t body = cl && cl < head_end ? strtoul(cl + 15, NULL, 10) : 0;
            size_t end = (size_t)(head_end - buf) + 4 + body;
            if (end > len)
                break;
            at = end;
            seen++;
        }
        if (seen == n || len + 1 >= cap)
            return len;
        int r = SSL_read(ssl, buf + len, (int)(cap - len - 1));
        if (r <= 0)
            return len;
        len += (size_t)r;
    }
}

static void write_all(SSL *ssl, const char *p, size_t n)
{
    while (n > 0) {
        int w = SSL_write(ssl, p, (int)(n > 65536 ? 65536 : n));
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void client_requests(void)
{
    SSL_CTX *ctx = client_ctx(0);
    int fd = tcp_connect();
    CHECK(fd >= 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    CHECK(SSL_connect(ssl) == 1);
    CHECK(SSL_get_verify_result(ssl) == X509_V_OK);
    CHECK(SSL_version(ssl) == TLS1_3_VERSION);
    const unsigned char *proto;
    unsigned plen;
    SSL_get0_alpn_selected(ssl, &proto, &plen);
    CHECK(plen == 8 && memcmp(proto, "http/1.1", 8) == 0);

    static char buf[BIG + 4096];
    /* one request, then the same connection again (keep-alive) */
    for (int i = 0; i < 2; i++) {
        const char *req = "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n";
        write_all(ssl, req, strlen(req));
        size_t n = read_responses(ssl, buf, sizeof(buf), 1);
        CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200", 12) == 0);
        CHECK(strstr(buf, "\r\n\r\nhello") != NULL);
    }
    /* three pipelined requests in one write */
    const char *three = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /size/10 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    write_all(ssl, three, strlen(three));
    size_t n = read_responses(ssl, buf, sizeof(buf), 3);
    CHECK(n > 0);
    char *second = strstr(buf + 1, "HTTP/1.1 200");
    CHECK(second != NULL && strstr(second, "\r\n\r\nxxxxxxxxxx") != NULL);
    CHECK(strstr(second + 1, "HTTP/1.1 200") != NULL);
    /* a large response (many records, the output budget several times over) */
    const char *big = "GET /size/" "307200" " HTTP/1.1\r\nHost: x\r\n\r\n";
    write_all(ssl, big, strlen(big));
    n = read_responses(ssl, buf, sizeof(buf), 1);
    char *body = strstr(buf, "\r\n\r\n");
    CHECK(body != NULL && n - (size_t)(body + 4 - buf) == BIG);
    for (size_t i = 0; i < BIG; i++)
        CHECK(body[4 + i] == 'x');
    /* a large request body (more than the shared read buffer at once) */
    char head[128];
    snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 200000);
    char *up = malloc(200000);
    for (size_t i = 0; i < 200000; i++)
        up[i] = (char)('a' + i % 26);
    write_all(ssl, head, strlen(head));
    write_all(ssl, up, 200000);
    free(up);
    n = read_responses(ssl, buf, sizeof(buf), 1);
    CHECK(strstr(buf, "got 200000 intact") != NULL);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    fx.ok = 1;
}

/* Plain HTTP to a TLS port: the handshake fails, the server closes, nothing comes back in
 * plaintext (at most a TLS alert record, which starts with byte 0x15). */
static void client_plain_http(void)
{
    int fd = tcp_connect();
    CHECK(fd >= 0);
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    char buf[256];
    ssize_t total = 0, r;
    while ((r = read(fd, buf + total, sizeof(buf) - (size_t)total)) > 0)
        total += r;
    CHECK(r == 0 || total > 0); /* closed (EOF), not timed out */
    CHECK(total == 0 || (unsigned char)buf[0] == 0x15);
    close(fd);
    /* TLS 1.1 is refused */
    SSL_CTX *ctx = client_ctx(TLS1_1_VERSION);
    fd = tcp_connect();
    CHECK(fd >= 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    CHECK(SSL_connect(ssl) != 1);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    fx.ok = 1;
}

static void *client_main(void *arg)
{
    KR_UNUSED(arg);
    fx.client();
    uv_async_send(&fx.done);
    return NULL;
}

static void on_done(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    kr_server_shutdown(&fx.s);
}

static void run_server(void (*client)(void))
{
    setup_dir();
    memset(&fx, 0, sizeof(fx));
    fx.client = client;
    ASSERT_OK(uv_loop_init(&fx.loop));
    kr_server_init(&fx.s, &fx.loop);
    fx.s.handler = handler;
    fx.s.limits.max_body_bytes = 1 << 20;
    char cert[512], key[512];
    path_of(cert, sizeof(cert), "a-cert.pem");
    path_of(key, sizeof(key), "a-key.pem");
    ASSERT_OK(kr_server_listen_tls(&fx.s, "127.0.0.1", 0, cert, key));
    ASSERT_OK(kr_server_start(&fx.s));
    fx.port = fx.s.listeners[0]->port;
    ASSERT_OK(uv_async_init(&fx.loop, &fx.done, on_done));
    ASSERT_OK(pthread_create(&fx.thread, NULL, client_main, NULL));
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    pthread_join(fx.thread, NULL);
    kr_server_dispose(&fx.s);
    KR_TEST_LOOP_CLOSE(&fx.loop);
    cleanup_dir();
    if (!fx.ok)
        KR_TEST_FAIL("client: %s", fx.failure);
}

TEST(https_requests_keepalive_pipelining_large_bodies)
{
    run_server(client_requests);
}

TEST(plain_http_and_tls11_are_refused)
{
    run_server(client_plain_http);
}

KR_TEST_MAIN(KR_TEST_ENTRY(load_errors_are_clear),
             KR_TEST_ENTRY(reload_keeps_the_old_context_on_a_broken_file),
             KR_TEST_ENTRY(https_requests_keepalive_pipelining_large_bodies),
             KR_TEST_ENTRY(plain_http_and_tls11_are_refused))
