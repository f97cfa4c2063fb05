/* test_static.c: kr_static's pure helpers, mounts, and kr_static_serve against a recording
 * stand-in for the kr_http response API.
 *
 * The stand-ins are weak definitions, so this file links on its own (without kr_http.c). In
 * the full build kr_http.o is only pulled from kr_core when something needs a symbol these
 * do not provide; should the real functions win, the serve tests notice (stubs_active) and
 * skip themselves rather than drive the real writer with a fake request.
 */
#include "kr_static.h"

#include "kr_router.h"
#include "kr_time.h"

#include "kr_test.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/time.h>

/* ---- recording stand-ins for kr_http ---------------------------------------------------- */

static struct {
    int probe; /* set by kr_http_req_queued: the stand-ins are the ones linked */
    int responses, starts, bodies, ends;
    int status;
    char headers[4096]; /* "Name: value\n" lines of the last response head */
    kr_sbuf_t body;
    int body_init;
    int64_t content_length; /* given to respond_start, or the body length */
    size_t queued;
    kr_http_drain_cb drain_cb;
    void *drain_ud;
    int closed; /* respond_body fails from then on */
} rec;

static void rec_head(int status, const kr_http_header_t *h, unsigned n)
{
    rec.status = status;
    rec.headers[0] = '\0';
    size_t o = 0;
    for (unsigned i = 0; i < n; i++)
        o += (size_t)snprintf(rec.headers + o, sizeof(rec.headers) - o, "%.*s: %.*s\n",
                              (int)h[i].name_len, h[i].name, (int)h[i].value_len, h[i].value);
    if (!rec.body_init) {
        kr_sbuf_init(&rec.body, 1024);
        rec.body_init = 1;
    }
    kr_sbuf_reset(&rec.body);
}

__attribute__((weak)) const char *kr_http_req_header(const kr_http_req_t *req, const char *name,
                                                     size_t *len)
{
    for (unsigned i = 0; i < req->nheaders; i++) {
        if (strcmp(req->headers[i].name, name) == 0) {
            if (len)
                *len = req->headers[i].value_len;
            return req->headers[i].value;
        }
    }
    return NULL;
}

__attribute__((weak)) void kr_http_req_ref(kr_http_req_t *req)
{
    req->refs++;
}

__attribute__((weak)) void kr_http_req_unref(kr_http_req_t *req)
{
    ASSERT(req->refs > 0);
    req->refs--;
}

__attribute__((weak)) int kr_http_respond(kr_http_req_t *req, int status,
                                          const kr_http_header_t *headers, unsigned n,
                                          kr_buf_t *body)
{
    ASSERT(!req->head_sent);
    req->head_sent = req->done = 1;
    rec.responses++;
    rec_head(status, headers, n);
    rec.content_length = body ? (int64_t)body->len : 0;
    if (body && req->method != KR_M_HEAD)
        kr_sbuf_append(&rec.body, body->data, body->len);
    kr_buf_unref(body);
    return 0;
}

__attribute__((weak)) int kr_http_respond_start(kr_http_req_t *req, int status,
                                                const kr_http_header_t *headers, unsigned n,
                                                int64_t content_length)
{
    ASSERT(!req->head_sent);
    req->head_sent = 1;
    rec.starts++;
    rec_head(status, headers, n);
    rec.content_length = content_length;
    return 0;
}

__attribute__((weak)) int kr_http_respond_body(kr_http_req_t *req, kr_buf_t *buf)
{
    ASSERT(req->head_sent && !req->done);
    rec.bodies++;
    if (rec.closed) {
        kr_buf_unref(buf);
        return KR_ECLOSED;
    }
    kr_sbuf_append(&rec.body, buf->data, buf->len);
    rec.queued += buf->len;
    kr_buf_unref(buf);
    return 0;
}

__attribute__((weak)) int kr_http_respond_end(kr_http_req_t *req)
{
    ASSERT(req->head_sent && !req->done);
    req->done = 1;
    rec.ends++;
    return 0;
}

__attribute__((weak)) size_t kr_http_req_queued(const kr_http_req_t *req)
{
    rec.probe = 1;
    return req->conn ? rec.queued : 0;
}

__attribute__((weak)) int kr_http_req_on_drain(kr_http_req_t *req, kr_http_drain_cb cb, void *ud)
{
    ASSERT(rec.drain_cb == NULL);
    if (req->conn == NULL)
        return KR_ECLOSED;
    rec.drain_cb = cb;
    rec.drain_ud = ud;
    return 0;
}

/* Writes the queue out, as the connection would, and fires the drain callback. */
static void drain(kr_http_req_t *req)
{
    kr_http_drain_cb cb = rec.drain_cb;
    ASSERT(cb != NULL);
    rec.drain_cb = NULL;
    rec.queued = 0;
    cb(req, rec.drain_ud);
}

static int stubs_active(void)
{
    kr_http_req_t r;
    memset(&r, 0, sizeof(r));
    rec.probe = 0;
    (void)kr_http_req_queued(&r); /* only asked for its side effect */
    if (!rec.probe)
        printf("# real kr_http linked: serve test skipped\n");
    return rec.probe;
}

/* ---- fixtures --------------------------------------------------------------------------- */

static char root_dir[96];  /* the mount: <tmp>/www */
static char tmp_dir[64];   /* holds www and a file outside it */
static uint64_t fake_conn; /* stands in for a live kr_conn_t */
static kr_http_header_t req_headers[8];

static void write_file(const char *rel, const void *data, size_t len)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", root_dir, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, data, len), (ssize_t)len);
    ASSERT_OK(close(fd));
}

static void write_text(const char *rel, const char *text)
{
    write_file(rel, text, strlen(text));
}

static void make_dir(const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", root_dir, rel);
    ASSERT_OK(mkdir(p, 0755));
}

static void set_mtime(const char *rel, time_t t)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", root_dir, rel);
    struct timeval tv[2] = {{t, 0}, {t, 0}};
    ASSERT_OK(utimes(p, tv));
}

#define BIG_SIZE (600 * 1024 + 123)

static char big_byte(size_t i)
{
    return (char)((i * 7 + i / 4096) & 0xff);
}

/* A small site: index.html, app.css, big.bin (streamed), empty.txt, sub/ (with index),
 * bare/ (no index), links inside and outside the mount, a FIFO. */
static void fixture_setup(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/kr_static_XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(tmp_dir));
    snprintf(root_dir, sizeof(root_dir), "%s/www", tmp_dir);
    ASSERT_OK(mkdir(root_dir, 0755));
    write_text("index.html", "<h1>home</h1>\n");
    write_text("app.css", "body { color: red; }\n");
    write_file("empty.txt", "", 0);
    char *big = malloc(BIG_SIZE);
    for (size_t i = 0; i < BIG_SIZE; i++)
        big[i] = big_byte(i);
    write_file("big.bin", big, BIG_SIZE);
    free(big);
    make_dir("sub");
    write_text("sub/index.html", "<h1>sub</h1>\n");
    make_dir("bare");
    write_text("bare/x.txt", "x\n");
    make_dir("a b");
    write_text("a b/index.html", "space\n");

    char p[PATH_MAX], q[PATH_MAX];
    snprintf(p, sizeof(p), "%s/secret.txt", tmp_dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(fd >= 0);
    ASSERT_OK(close(fd));
    snprintf(q, sizeof(q), "%s/out.txt", root_dir);
    ASSERT_OK(symlink(p, q));
    snprintf(q, sizeof(q), "%s/outdir", root_dir);
    ASSERT_OK(symlink(tmp_dir, q));
    snprintf(q, sizeof(q), "%s/in.css", root_dir);
    ASSERT_OK(symlink("app.css", q));
    snprintf(q, sizeof(q), "%s/pipe", root_dir);
    ASSERT_OK(mkfifo(q, 0644));
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    KR_UNUSED(sb);
    KR_UNUSED(flag);
    KR_UNUSED(ftw);
    return remove(p);
}

static void fixture_teardown(void)
{
    ASSERT_OK(nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS));
    if (rec.body_init)
        kr_sbuf_dispose(&rec.body);
    rec.body_init = 0;
}

/* The lowest free descriptor: unchanged across a test means no fd leaked. */
static int next_fd(void)
{
    int fd = open("/dev/null", O_RDONLY);
    ASSERT(fd >= 0);
    close(fd);
    return fd;
}

static kr_static_t *mount(const char *prefix, const kr_static_opts_t *opts)
{
    int err = 0;
    kr_static_t *st = kr_static_new(prefix, root_dir, opts, &err);
    ASSERT_NOT_NULL(st);
    return st;
}

/* A request for method/target; headers are "name", "value" pairs (lower-case names). */
static void make_req(kr_http_req_t *req, unsigned method, const char *target,
                     const char *const *hdrs, unsigned nh)
{
    memset(req, 0, sizeof(*req));
    rec.responses = rec.starts = rec.bodies = rec.ends = rec.status = 0;
    rec.headers[0] = '\0';
    rec.content_length = -1;
    rec.queued = 0;
    rec.drain_cb = NULL;
    rec.closed = 0;
    req->refs = 1;
    req->conn = (kr_conn_t *)(void *)&fake_conn;
    req->method = method;
    req->target = (char *)target;
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    /* Percent-decode the path as kr_http does. */
    static char path[1024];
    size_t o = 0;
    for (size_t i = 0; i < plen; i++) {
        unsigned v;
        if (target[i] == '%' && i + 2 < plen && isxdigit((unsigned char)target[i + 1]) &&
            isxdigit((unsigned char)target[i + 2])) {
            if (sscanf(target + i + 1, "%2x", &v) == 1) {
                path[o++] = (char)v;
                i += 2;
                continue;
            }
        }
        path[o++] = target[i];
    }
    path[o] = '\0';
    req->path = path;
    req->path_len = o;
    req->query = q ? q + 1 : "";
    ASSERT(nh <= KR_ARRAY_SIZE(req_headers));
    for (unsigned i = 0; i < nh; i++) {
        req_headers[i].name = hdrs[2 * i];
        req_headers[i].value = hdrs[2 * i + 1];
        req_headers[i].name_len = strlen(hdrs[2 * i]);
        req_headers[i].value_len = strlen(hdrs[2 * i + 1]);
    }
    req->headers = req_headers;
    req->nheaders = nh;
}

/* The value of response header name in the last head, or NULL. */
static const char *resp_header(const char *name)
{
    static char value[512];
    size_t n = strlen(name);
    for (const char *p = rec.headers; *p; p = strchr(p, '\n') + 1) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 2;
            size_t vl = (size_t)(strchr(v, '\n') - v);
            memcpy(value, v, vl);
            value[vl] = '\0';
            return value;
        }
    }
    return NULL;
}

#define SERVE_TEST_BEGIN()                                                                         \
    if (!stubs_active())                                                                           \
        return;                                                                                    \
    fixture_setup();                                                                               \
    int fd0_ = next_fd()

#define SERVE_TEST_END(st)                                                                         \
    do {                                                                                           \
        kr_static_free(st);                                                                        \
        ASSERT_EQ(next_fd(), fd0_);                                                                \
        fixture_teardown();                                                                        \
    } while (0)

/* ---- content types ---------------------------------------------------------------------- */

TEST(content_type)
{
    ASSERT_STR_EQ(kr_static_content_type("index.html"), "text/html; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("/a/b/INDEX.HTM"), "text/html; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("app.css"), "text/css; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("app.js"), "text/javascript; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("mod.mjs"), "text/javascript; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("d.json"), "application/json");
    ASSERT_STR_EQ(kr_static_content_type("app.js.map"), "application/json");
    ASSERT_STR_EQ(kr_static_content_type("a.txt"), "text/plain; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("a.xml"), "text/xml; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("a.svg"), "image/svg+xml");
    ASSERT_STR_EQ(kr_static_content_type("a.png"), "image/png");
    ASSERT_STR_EQ(kr_static_content_type("a.JPG"), "image/jpeg");
    ASSERT_STR_EQ(kr_static_content_type("a.jpeg"), "image/jpeg");
    ASSERT_STR_EQ(kr_static_content_type("a.gif"), "image/gif");
    ASSERT_STR_EQ(kr_static_content_type("a.webp"), "image/webp");
    ASSERT_STR_EQ(kr_static_content_type("favicon.ico"), "image/x-icon");
    ASSERT_STR_EQ(kr_static_content_type("m.wasm"), "application/wasm");
    ASSERT_STR_EQ(kr_static_content_type("f.woff"), "font/woff");
    ASSERT_STR_EQ(kr_static_content_type("f.woff2"), "font/woff2");
    ASSERT_STR_EQ(kr_static_content_type("f.ttf"), "font/ttf");
    ASSERT_STR_EQ(kr_static_content_type("d.pdf"), "application/pdf");
    ASSERT_STR_EQ(kr_static_content_type("d.csv"), "text/csv; charset=utf-8");
    ASSERT_STR_EQ(kr_static_content_type("README.md"), "text/markdown; charset=utf-8");
    /* Unknown, none, empty, hidden file, dot in a directory name only. */
    ASSERT_STR_EQ(kr_static_content_type("a.exe"), "application/octet-stream");
    ASSERT_STR_EQ(kr_static_content_type("Makefile"), "application/octet-stream");
    ASSERT_STR_EQ(kr_static_content_type("name."), "application/octet-stream");
    ASSERT_STR_EQ(kr_static_content_type(".html"), "application/octet-stream");
    ASSERT_STR_EQ(kr_static_content_type("v1.html/data"), "application/octet-stream");
    ASSERT_STR_EQ(kr_static_content_type("a.htmlx"), "application/octet-stream");
    ASSERT_STR_EQ(kr_static_content_type(""), "application/octet-stream");
}

/* ---- safe paths ------------------------------------------------------------------------- */

static const char *safe(const char *rel)
{
    static char out[256];
    if (kr_static_safe_path(rel, strlen(rel), out, sizeof(out)) != 0)
        return NULL;
    return out;
}

TEST(safe_path)
{
    ASSERT_STR_EQ(safe("/css/app.css"), "css/app.css");
    ASSERT_STR_EQ(safe("css/app.css"), "css/app.css");
    ASSERT_STR_EQ(safe(""), "");
    ASSERT_STR_EQ(safe("/"), "");
    ASSERT_STR_EQ(safe("/sub/"), "sub");
    /* "." and empty components are dropped. */
    ASSERT_STR_EQ(safe("./a"), "a");
    ASSERT_STR_EQ(safe("/./a/./b/."), "a/b");
    ASSERT_STR_EQ(safe("//a//b//"), "a/b");
    ASSERT_STR_EQ(safe("/."), "");
    /* Names that merely contain dots are files. */
    ASSERT_STR_EQ(safe("/..."), "...");
    ASSERT_STR_EQ(safe("/..a/b.."), "..a/b..");
    ASSERT_STR_EQ(safe("/.well-known/x"), ".well-known/x");
    /* ".." anywhere. */
    ASSERT_NULL(safe(".."));
    ASSERT_NULL(safe("/.."));
    ASSERT_NULL(safe("/../etc/passwd"));
    ASSERT_NULL(safe("/a/../b"));
    ASSERT_NULL(safe("/a/.."));
    ASSERT_NULL(safe("/a/../"));
    ASSERT_NULL(safe("a/b/../../.."));
    /* Backslashes and NUL bytes. */
    ASSERT_NULL(safe("/a\\b"));
    ASSERT_NULL(safe("\\..\\x"));
    char out[64];
    ASSERT_EQ(kr_static_safe_path("/a\0b", 4, out, sizeof(out)), KR_EINVAL);
    ASSERT_EQ(kr_static_safe_path("/a\0", 3, out, sizeof(out)), KR_EINVAL);
    /* Only len bytes are read. */
    ASSERT_OK(kr_static_safe_path("/ab/../x", 3, out, sizeof(out)));
    ASSERT_STR_EQ(out, "ab");
    ASSERT_OK(kr_static_safe_path(NULL, 0, out, sizeof(out)));
    ASSERT_STR_EQ(out, "");
}

TEST(safe_path_long)
{
    char out[16];
    /* Exactly fits: 15 characters and the NUL. */
    ASSERT_OK(kr_static_safe_path("/abcdefg/hijklmn", 16, out, sizeof(out)));
    ASSERT_STR_EQ(out, "abcdefg/hijklmn");
    ASSERT_EQ(kr_static_safe_path("/abcdefg/hijklmno", 17, out, sizeof(out)), KR_EINVAL);
    ASSERT_EQ(kr_static_safe_path("/abcdefghijklmnop", 17, out, sizeof(out)), KR_EINVAL);
    ASSERT_EQ(kr_static_safe_path("/a", 2, out, 0), KR_EINVAL);
    ASSERT_EQ(kr_static_safe_path("/a", 2, out, 1), KR_EINVAL);
    ASSERT_OK(kr_static_safe_path("//", 2, out, 1));
    ASSERT_STR_EQ(out, "");

    static char big[3 * PATH_MAX], res[PATH_MAX];
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = (i % 10 == 0) ? '/' : 'x';
    big[sizeof(big) - 1] = '\0';
    ASSERT_EQ(kr_static_safe_path(big, strlen(big), res, sizeof(res)), KR_EINVAL);
    big[PATH_MAX - 1] = '\0'; /* starts with '/', so the result is one byte shorter */
    ASSERT_OK(kr_static_safe_path(big, strlen(big), res, sizeof(res)));
    ASSERT_EQ(strlen(res), PATH_MAX - 2);
}

TEST(check_target)
{
    ASSERT_OK(kr_static_check_target("/static/app.css"));
    ASSERT_OK(kr_static_check_target("/static/a%20b.css"));
    ASSERT_OK(kr_static_check_target("/static/a%2"));
    ASSERT_OK(kr_static_check_target("/static/a%"));
    ASSERT_OK(kr_static_check_target(NULL));
    ASSERT_EQ(kr_static_check_target("/static/..%2Fsecret"), KR_EINVAL);
    ASSERT_EQ(kr_static_check_target("/static/..%2fsecret"), KR_EINVAL);
    ASSERT_EQ(kr_static_check_target("/static/..%5Csecret"), KR_EINVAL);
    ASSERT_EQ(kr_static_check_target("/static/..%5csecret"), KR_EINVAL);
    /* Only the path counts: an encoded slash in the query is data. */
    ASSERT_OK(kr_static_check_target("/static/app.css?next=%2Fhome"));
}

/* ---- ranges ----------------------------------------------------------------------------- */

static int range(const char *v, uint64_t size, uint64_t *s, uint64_t *e)
{
    *s = *e = 12345;
    return kr_static_parse_range(v, strlen(v), size, s, e);
}

TEST(parse_range)
{
    uint64_t s, e;
    ASSERT_EQ(range("bytes=0-99", 1000, &s, &e), 1);
    ASSERT_EQ(s, 0);
    ASSERT_EQ(e, 99);
    ASSERT_EQ(range("bytes=10-10", 1000, &s, &e), 1);
    ASSERT_EQ(s, 10);
    ASSERT_EQ(e, 10);
    ASSERT_EQ(range("bytes=500-", 1000, &s, &e), 1);
    ASSERT_EQ(s, 500);
    ASSERT_EQ(e, 999);
    ASSERT_EQ(range("bytes=-100", 1000, &s, &e), 1);
    ASSERT_EQ(s, 900);
    ASSERT_EQ(e, 999);
    /* The end is clamped to the file; a suffix beyond it means the whole file. */
    ASSERT_EQ(range("bytes=900-5000", 1000, &s, &e), 1);
    ASSERT_EQ(s, 900);
    ASSERT_EQ(e, 999);
    ASSERT_EQ(range("bytes=-5000", 1000, &s, &e), 1);
    ASSERT_EQ(s, 0);
    ASSERT_EQ(e, 999);
    ASSERT_EQ(range("bytes=999-999", 1000, &s, &e), 1);
    ASSERT_EQ(s, 999);
    /* Unit case and surrounding whitespace. */
    ASSERT_EQ(range("  Bytes=1-2 ", 1000, &s, &e), 1);
    ASSERT_EQ(s, 1);
    ASSERT_EQ(e, 2);
    ASSERT_EQ(range("BYTES= 3-4", 1000, &s, &e), 1);
    ASSERT_EQ(s, 3);
    /* Huge numbers saturate. */
    ASSERT_EQ(range("bytes=0-99999999999999999999999999", 1000, &s, &e), 1);
    ASSERT_EQ(e, 999);
    ASSERT_EQ(range("bytes=-99999999999999999999999999", 1000, &s, &e), 1);
    ASSERT_EQ(s, 0);
    ASSERT_EQ(range("bytes=99999999999999999999999999-", 1000, &s, &e), -1);
}

TEST(parse_range_ignored)
{
    uint64_t s, e;
    const char *bad[] = {"", "bytes", "bytes=", "bytes=-", "bytes=a-b", "bytes=1-a", "bytes=1",
                         "bytes=1-2-3", "bytes=5-4", "bytes=1 - 2", "items=0-1", "bytes0-1",
                         "bytes=+1-2", "bytes=0x1-2",
                         /* several ranges: whole file */
                         "bytes=0-1,5-6", "bytes=0-1, 5-6", "bytes=0-1,", "bytes=,0-1"};
    for (size_t i = 0; i < KR_ARRAY_SIZE(bad); i++) {
        if (range(bad[i], 1000, &s, &e) != 0)
            KR_TEST_FAIL("\"%s\" not ignored", bad[i]);
    }
    /* Only len bytes are read. */
    ASSERT_EQ(kr_static_parse_range("bytes=0-1,5-6", 9, 1000, &s, &e), 1);
    ASSERT_EQ(e, 1);
}

TEST(parse_range_unsatisfiable)
{
    uint64_t s, e;
    ASSERT_EQ(range("bytes=1000-", 1000, &s, &e), -1);
    ASSERT_EQ(range("bytes=1000-2000", 1000, &s, &e), -1);
    ASSERT_EQ(range("bytes=5000-6000", 1000, &s, &e), -1);
    ASSERT_EQ(range("bytes=-0", 1000, &s, &e), -1);
    /* An empty file has no byte to give. */
    ASSERT_EQ(range("bytes=0-", 0, &s, &e), -1);
    ASSERT_EQ(range("bytes=0-0", 0, &s, &e), -1);
    ASSERT_EQ(range("bytes=-1", 0, &s, &e), -1);
    ASSERT_EQ(range("bytes=0-1,2-3", 0, &s, &e), 0);
    /* A one-byte file. */
    ASSERT_EQ(range("bytes=0-", 1, &s, &e), 1);
    ASSERT_EQ(s, 0);
    ASSERT_EQ(e, 0);
    ASSERT_EQ(range("bytes=1-", 1, &s, &e), -1);
}

/* ---- etags ------------------------------------------------------------------------------ */

TEST(etag)
{
    char out[KR_STATIC_ETAG_LEN];
    kr_static_etag(0x1a2b, 0x17f0000000000001, out, sizeof(out));
    ASSERT_STR_EQ(out, "\"1a2b-17f0000000000001\"");
    kr_static_etag(0, 0, out, sizeof(out));
    ASSERT_STR_EQ(out, "\"0-0\"");
    kr_static_etag(UINT64_MAX, -1, out, sizeof(out));
    ASSERT_STR_EQ(out, "\"ffffffffffffffff-ffffffffffffffff\"");
    ASSERT(strlen(out) < KR_STATIC_ETAG_LEN);
    char tiny[6];
    kr_static_etag(0x1a2b, 5, tiny, sizeof(tiny));
    ASSERT_STR_EQ(tiny, "\"1a2b");
}

static int inm(const char *list, const char *etag)
{
    return kr_static_etag_match(list, strlen(list), etag);
}

TEST(etag_match)
{
    const char *tag = "\"1a-2b\"";
    ASSERT_EQ(inm("\"1a-2b\"", tag), 1);
    ASSERT_EQ(inm("W/\"1a-2b\"", tag), 1);
    ASSERT_EQ(inm("\"1a-2b\"", "W/\"1a-2b\""), 1);
    ASSERT_EQ(inm("*", tag), 1);
    ASSERT_EQ(inm(" \"x\", W/\"1a-2b\" ", tag), 1);
    ASSERT_EQ(inm("\"x\",\"1a-2b\"", tag), 1);
    ASSERT_EQ(inm("\"a,b\", \"1a-2b\"", tag), 1);
    ASSERT_EQ(inm("junk, \"1a-2b\"", tag), 1);
    ASSERT_EQ(inm("\"1a-2c\"", tag), 0);
    ASSERT_EQ(inm("\"1a-2b", tag), 0);
    ASSERT_EQ(inm("1a-2b", tag), 0);
    ASSERT_EQ(inm("\"1a-2b\"x", "\"1a-2bx\""), 0);
    ASSERT_EQ(inm("", tag), 0);
    ASSERT_EQ(inm("w/\"1a-2b\"", tag), 0); /* "W/" is case-sensitive */
}

/* ---- mounts ----------------------------------------------------------------------------- */

TEST(new_missing_dir)
{
    int err = 0;
    ASSERT_NULL(kr_static_new("/s", "/nonexistent/kr_static_test", NULL, &err));
    ASSERT_EQ(err, KR_ENOENT);
    ASSERT_NULL(kr_static_new("/s", "/etc/hostname/x", NULL, &err));
    ASSERT_EQ(err, KR_ENOENT);
}

TEST(new_file_and_bad_args)
{
    fixture_setup();
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/app.css", root_dir);
    int err = 0;
    ASSERT_NULL(kr_static_new("/s", p, NULL, &err));
    ASSERT_EQ(err, KR_EINVAL);
    err = 0;
    ASSERT_NULL(kr_static_new("s", root_dir, NULL, &err));
    ASSERT_EQ(err, KR_EINVAL);
    err = 0;
    ASSERT_NULL(kr_static_new("", root_dir, NULL, &err));
    ASSERT_EQ(err, KR_EINVAL);
    ASSERT_NULL(kr_static_new(NULL, root_dir, NULL, NULL));
    const char *bad_index[] = {"", "a/b", ".", "..", "a\\b"};
    for (size_t i = 0; i < KR_ARRAY_SIZE(bad_index); i++) {
        kr_static_opts_t o = {bad_index[i], -1};
        err = 0;
        ASSERT_NULL(kr_static_new("/s", root_dir, &o, &err));
        ASSERT_EQ(err, KR_EINVAL);
    }
    fixture_teardown();
}

TEST(new_prefix_and_root)
{
    fixture_setup();
    int err = 0;
    kr_static_t *st = kr_static_new("/static///", root_dir, NULL, &err);
    ASSERT_NOT_NULL(st);
    ASSERT_STR_EQ(kr_static_prefix(st), "/static");
    char real[PATH_MAX];
    ASSERT_NOT_NULL(realpath(root_dir, real));
    ASSERT_STR_EQ(kr_static_root(st), real);
    kr_static_free(st);
    /* A path with "." and ".." and a trailing slash resolves to the same root. */
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/./sub/../", root_dir);
    st = kr_static_new("//", p, NULL, &err);
    ASSERT_NOT_NULL(st);
    ASSERT_STR_EQ(kr_static_prefix(st), "/");
    ASSERT_STR_EQ(kr_static_root(st), real);
    kr_static_free(st);
    kr_static_free(NULL);
    fixture_teardown();
}

/* ---- serving ---------------------------------------------------------------------------- */

TEST(serve_small_file)
{
    SERVE_TEST_BEGIN();
    kr_static_opts_t o;
    kr_static_opts_default(&o);
    o.max_age_s = 3600;
    kr_static_t *st = mount("/static", &o);
    set_mtime("app.css", 1700000000);
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/static/app.css", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.responses, 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_STR_EQ(resp_header("Content-Type"), "text/css; charset=utf-8");
    ASSERT_STR_EQ(resp_header("Last-Modified"), "Tue, 14 Nov 2023 22:13:20 GMT");
    ASSERT_STR_EQ(resp_header("Accept-Ranges"), "bytes");
    ASSERT_STR_EQ(resp_header("Cache-Control"), "max-age=3600");
    char etag[KR_STATIC_ETAG_LEN];
    kr_static_etag(21, (int64_t)1700000000 * 1000000000, etag, sizeof(etag));
    ASSERT_STR_EQ(resp_header("ETag"), etag);
    ASSERT_MEM_EQ(kr_sbuf_data(&rec.body), kr_sbuf_len(&rec.body), "body { color: red; }\n", 21);
    ASSERT_EQ(req.refs, 1);
    SERVE_TEST_END(st);
}

TEST(serve_not_for_mount)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/static", NULL);
    const char *targets[] = {"/app.css",
                             "/statics/app.css",
                             "/stat",
                             "/static/missing.css",
                             "/static/app.css/",
                             "/static/../www/app.css",
                             "/static/sub/../app.css",
                             "/static/a%5Capp.css",
                             "/static/sub%2F..%2Fapp.css",
                             "/static/out.txt",
                             "/static/outdir/secret.txt",
                             "/static/pipe",
                             "/static/bare/",
                             "/static/bare",
                             "/static/app.css%00.txt"};
    for (size_t i = 0; i < KR_ARRAY_SIZE(targets); i++) {
        kr_http_req_t req;
        make_req(&req, KR_M_GET, targets[i], NULL, 0);
        if (kr_static_serve(st, &req) != 0 || rec.responses + rec.starts != 0)
            KR_TEST_FAIL("%s was answered (%d)", targets[i], rec.status);
    }
    SERVE_TEST_END(st);
}

TEST(serve_symlink_inside)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/static", NULL);
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/static/in.css", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_STR_EQ(resp_header("Content-Type"), "text/css; charset=utf-8");
    ASSERT_EQ(kr_sbuf_len(&rec.body), 21);
    SERVE_TEST_END(st);
}

TEST(serve_head)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/static", NULL);
    kr_http_req_t req;
    const char *h[] = {"range", "bytes=0-1"};
    make_req(&req, KR_M_HEAD, "/static/big.bin", h, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.starts, 1);
    ASSERT_EQ(rec.ends, 1);
    ASSERT_EQ(rec.bodies, 0);
    ASSERT_EQ(rec.status, 200); /* Range is for GET only */
    ASSERT_EQ(rec.content_length, BIG_SIZE);
    ASSERT_STR_EQ(resp_header("Content-Type"), "application/octet-stream");
    ASSERT_NULL(resp_header("Cache-Control"));
    ASSERT_NOT_NULL(resp_header("ETag"));
    make_req(&req, KR_M_HEAD, "/static/index.html", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.content_length, 14);
    ASSERT_EQ(kr_sbuf_len(&rec.body), 0);
    SERVE_TEST_END(st);
}

TEST(serve_method_not_allowed)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/static", NULL);
    kr_http_req_t req;
    make_req(&req, KR_M_POST, "/static/app.css", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 405);
    ASSERT_STR_EQ(resp_header("Allow"), "GET, HEAD");
    make_req(&req, KR_M_DELETE, "/static/sub", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 405);
    make_req(&req, 0, "/static/", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 405);
    /* Nothing there: not ours to refuse. */
    make_req(&req, KR_M_POST, "/static/missing", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 0);
    SERVE_TEST_END(st);
}

TEST(serve_directories)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/static/", NULL);
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/static", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 301);
    ASSERT_STR_EQ(resp_header("Location"), "/static/");
    make_req(&req, KR_M_GET, "/static/sub?x=1&y=%2F", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 301);
    ASSERT_STR_EQ(resp_header("Location"), "/static/sub/?x=1&y=%2F");
    make_req(&req, KR_M_GET, "/static/a%20b", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_STR_EQ(resp_header("Location"), "/static/a%20b/");
    make_req(&req, KR_M_GET, "/static/", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_STR_EQ(resp_header("Content-Type"), "text/html; charset=utf-8");
    ASSERT_MEM_EQ(kr_sbuf_data(&rec.body), kr_sbuf_len(&rec.body), "<h1>home</h1>\n", 14);
    make_req(&req, KR_M_GET, "/static/sub/", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_MEM_EQ(kr_sbuf_data(&rec.body), kr_sbuf_len(&rec.body), "<h1>sub</h1>\n", 13);
    kr_static_free(st);

    /* Indexing disabled: directories are not found. */
    kr_static_opts_t o = {NULL, -1};
    st = mount("/static", &o);
    make_req(&req, KR_M_GET, "/static/sub/", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 0);
    make_req(&req, KR_M_GET, "/static/sub", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 0);
    SERVE_TEST_END(st);
}

TEST(serve_root_mount)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/", NULL);
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_EQ(kr_sbuf_len(&rec.body), 14);
    make_req(&req, KR_M_GET, "/app.css", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    /* "//sub" must not redirect to the protocol-relative "//sub/". */
    make_req(&req, KR_M_GET, "//sub", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 301);
    ASSERT_STR_EQ(resp_header("Location"), "/sub/");
    SERVE_TEST_END(st);
}

TEST(serve_conditional)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    set_mtime("app.css", 1700000000);
    char etag[KR_STATIC_ETAG_LEN];
    kr_static_etag(21, (int64_t)1700000000 * 1000000000, etag, sizeof(etag));
    char weak[KR_STATIC_ETAG_LEN + 2];
    snprintf(weak, sizeof(weak), "W/%s", etag);
    kr_http_req_t req;

    const char *h1[] = {"if-none-match", etag};
    make_req(&req, KR_M_GET, "/s/app.css", h1, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 304);
    ASSERT_STR_EQ(resp_header("ETag"), etag);
    ASSERT_NOT_NULL(resp_header("Last-Modified"));
    ASSERT_NULL(resp_header("Content-Type"));
    ASSERT_EQ(kr_sbuf_len(&rec.body), 0);

    const char *h2[] = {"if-none-match", weak};
    make_req(&req, KR_M_HEAD, "/s/app.css", h2, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 304);

    const char *h3[] = {"if-none-match", "*"};
    make_req(&req, KR_M_GET, "/s/app.css", h3, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 304);

    /* If-None-Match wins over If-Modified-Since. */
    const char *h4[] = {"if-none-match", "\"other\"", "if-modified-since",
                        "Tue, 14 Nov 2023 22:13:20 GMT"};
    make_req(&req, KR_M_GET, "/s/app.css", h4, 2);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);

    const char *h5[] = {"if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"};
    make_req(&req, KR_M_GET, "/s/app.css", h5, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 304);

    const char *h6[] = {"if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT"};
    make_req(&req, KR_M_GET, "/s/app.css", h6, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 304);

    const char *h7[] = {"if-modified-since", "Tue, 14 Nov 2023 22:13:19 GMT"};
    make_req(&req, KR_M_GET, "/s/app.css", h7, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);

    const char *h8[] = {"if-modified-since", "yesterday"};
    make_req(&req, KR_M_GET, "/s/app.css", h8, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    SERVE_TEST_END(st);
}

TEST(serve_range)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    set_mtime("app.css", 1700000000);
    char etag[KR_STATIC_ETAG_LEN];
    kr_static_etag(21, (int64_t)1700000000 * 1000000000, etag, sizeof(etag));
    kr_http_req_t req;

    const char *h1[] = {"range", "bytes=0-3"};
    make_req(&req, KR_M_GET, "/s/app.css", h1, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 206);
    ASSERT_STR_EQ(resp_header("Content-Range"), "bytes 0-3/21");
    ASSERT_MEM_EQ(kr_sbuf_data(&rec.body), kr_sbuf_len(&rec.body), "body", 4);

    const char *h2[] = {"range", "bytes=-6"};
    make_req(&req, KR_M_GET, "/s/app.css", h2, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_STR_EQ(resp_header("Content-Range"), "bytes 15-20/21");
    ASSERT_MEM_EQ(kr_sbuf_data(&rec.body), kr_sbuf_len(&rec.body), "ed; }\n", 6);

    const char *h3[] = {"range", "bytes=21-"};
    make_req(&req, KR_M_GET, "/s/app.css", h3, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 416);
    ASSERT_STR_EQ(resp_header("Content-Range"), "bytes */21");

    const char *h4[] = {"range", "bytes=0-1,3-4"};
    make_req(&req, KR_M_GET, "/s/app.css", h4, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_EQ(kr_sbuf_len(&rec.body), 21);

    /* If-Range: a matching ETag or date keeps the range, anything else drops it. */
    const char *h5[] = {"range", "bytes=0-3", "if-range", etag};
    make_req(&req, KR_M_GET, "/s/app.css", h5, 2);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 206);
    const char *h6[] = {"range", "bytes=0-3", "if-range", "\"stale\""};
    make_req(&req, KR_M_GET, "/s/app.css", h6, 2);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_EQ(kr_sbuf_len(&rec.body), 21);
    const char *h7[] = {"range", "bytes=0-3", "if-range", "Tue, 14 Nov 2023 22:13:20 GMT"};
    make_req(&req, KR_M_GET, "/s/app.css", h7, 2);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 206);
    const char *h8[] = {"range", "bytes=0-3", "if-range", "Wed, 15 Nov 2023 00:00:00 GMT"};
    make_req(&req, KR_M_GET, "/s/app.css", h8, 2);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    char weak[KR_STATIC_ETAG_LEN + 2];
    snprintf(weak, sizeof(weak), "W/%s", etag);
    const char *h9[] = {"range", "bytes=0-3", "if-range", weak};
    make_req(&req, KR_M_GET, "/s/app.css", h9, 2);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);

    /* An empty file: any range is unsatisfiable; without one, an empty 200. */
    make_req(&req, KR_M_GET, "/s/empty.txt", h1, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 416);
    ASSERT_STR_EQ(resp_header("Content-Range"), "bytes */0");
    make_req(&req, KR_M_GET, "/s/empty.txt", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_EQ(rec.content_length, 0);
    SERVE_TEST_END(st);
}

static void check_big_body(size_t off, size_t len)
{
    ASSERT_EQ(kr_sbuf_len(&rec.body), len);
    const char *b = kr_sbuf_data(&rec.body);
    for (size_t i = 0; i < len; i++)
        if (b[i] != big_byte(off + i))
            KR_TEST_FAIL("byte %zu differs", off + i);
}

TEST(serve_stream)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/s/big.bin", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.starts, 1);
    ASSERT_EQ(rec.status, 200);
    ASSERT_EQ(rec.content_length, BIG_SIZE);
    ASSERT_EQ(req.refs, 2);
    int drains = 0;
    while (rec.drain_cb != NULL) {
        ASSERT(rec.queued >= 256 * 1024);
        ASSERT(rec.queued <= 320 * 1024);
        ASSERT_EQ(rec.ends, 0);
        drain(&req);
        drains++;
    }
    ASSERT_EQ(drains, 2);
    ASSERT_EQ(rec.ends, 1);
    ASSERT_EQ(req.refs, 1);
    check_big_body(0, BIG_SIZE);
    SERVE_TEST_END(st);
}

TEST(serve_stream_range)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    kr_http_req_t req;
    const char *h[] = {"range", "bytes=1000-400000"};
    make_req(&req, KR_M_GET, "/s/big.bin", h, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 206);
    ASSERT_EQ(rec.content_length, 399001);
    char want[64];
    snprintf(want, sizeof(want), "bytes 1000-400000/%d", BIG_SIZE);
    ASSERT_STR_EQ(resp_header("Content-Range"), want);
    while (rec.drain_cb != NULL)
        drain(&req);
    ASSERT_EQ(rec.ends, 1);
    check_big_body(1000, 399001);
    /* A small range of a big file goes out in one piece. */
    const char *h2[] = {"range", "bytes=70000-70009"};
    make_req(&req, KR_M_GET, "/s/big.bin", h2, 1);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.responses, 1);
    check_big_body(70000, 10);
    SERVE_TEST_END(st);
}

TEST(serve_stream_conn_closed)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    kr_http_req_t req;
    /* The connection goes while the transfer waits for a drain. */
    make_req(&req, KR_M_GET, "/s/big.bin", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_NOT_NULL(rec.drain_cb);
    req.conn = NULL;
    drain(&req);
    ASSERT_NULL(rec.drain_cb);
    ASSERT_EQ(rec.ends, 0);
    ASSERT_EQ(req.refs, 1);
    /* The writer refuses a chunk (slow consumer closed by the connection layer). */
    make_req(&req, KR_M_GET, "/s/big.bin", NULL, 0);
    rec.closed = 1;
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_NULL(rec.drain_cb);
    ASSERT_EQ(rec.bodies, 1);
    ASSERT_EQ(rec.ends, 0);
    ASSERT_EQ(req.refs, 1);
    SERVE_TEST_END(st);
}

TEST(serve_stream_file_shrinks)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/s/big.bin", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_NOT_NULL(rec.drain_cb);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/big.bin", root_dir);
    ASSERT_OK(truncate(p, 300 * 1024));
    drain(&req);
    ASSERT_NULL(rec.drain_cb);
    ASSERT_EQ(rec.ends, 1); /* ended short: kr_http closes the connection */
    ASSERT_EQ(kr_sbuf_len(&rec.body), 300 * 1024);
    ASSERT_EQ(req.refs, 1);
    SERVE_TEST_END(st);
}

TEST(serve_forbidden)
{
    SERVE_TEST_BEGIN();
    kr_static_t *st = mount("/s", NULL);
    if (geteuid() == 0) {
        printf("# running as root: permission checks do not apply, skipped\n");
        SERVE_TEST_END(st);
        return;
    }
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/app.css", root_dir);
    ASSERT_OK(chmod(p, 0));
    kr_http_req_t req;
    make_req(&req, KR_M_GET, "/s/app.css", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 403);
    snprintf(p, sizeof(p), "%s/sub", root_dir);
    ASSERT_OK(chmod(p, 0));
    make_req(&req, KR_M_GET, "/s/sub/index.html", NULL, 0);
    ASSERT_EQ(kr_static_serve(st, &req), 1);
    ASSERT_EQ(rec.status, 403);
    ASSERT_OK(chmod(p, 0755));
    SERVE_TEST_END(st);
}

KR_TEST_MAIN(KR_TEST_ENTRY(content_type), KR_TEST_ENTRY(safe_path), KR_TEST_ENTRY(safe_path_long),
             KR_TEST_ENTRY(check_target), KR_TEST_ENTRY(parse_range),
             KR_TEST_ENTRY(parse_range_ignored), KR_TEST_ENTRY(parse_range_unsatisfiable),
             KR_TEST_ENTRY(etag), KR_TEST_ENTRY(etag_match), KR_TEST_ENTRY(new_missing_dir),
             KR_TEST_ENTRY(new_file_and_bad_args), KR_TEST_ENTRY(new_prefix_and_root),
             KR_TEST_ENTRY(serve_small_file), KR_TEST_ENTRY(serve_not_for_mount),
             KR_TEST_ENTRY(serve_symlink_inside), KR_TEST_ENTRY(serve_head),
             KR_TEST_ENTRY(serve_method_not_allowed), KR_TEST_ENTRY(serve_directories),
             KR_TEST_ENTRY(serve_root_mount), KR_TEST_ENTRY(serve_conditional),
             KR_TEST_ENTRY(serve_range), KR_TEST_ENTRY(serve_stream),
             KR_TEST_ENTRY(serve_stream_range), KR_TEST_ENTRY(serve_stream_conn_closed),
             KR_TEST_ENTRY(serve_stream_file_shrinks), KR_TEST_ENTRY(serve_forbidden))
