/* kr_static.c: static files (see kr_static.h). */
#include "kr_static.h"

#include "kr_router.h"
#include "kr_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bodies up to this size are read whole and sent with one kr_http_respond. */
#define SMALL_BODY_MAX (64 * 1024)
/* Streamed bodies are read in chunks of this size... */
#define STREAM_CHUNK (64 * 1024)
/* ...while the connection holds less than this much unwritten output. */
#define STREAM_BUDGET (256 * 1024)

struct kr_static_s {
    char *prefix;     /* normalised: "/static", or "/" */
    size_t match_len; /* bytes of prefix a path must start with: 0 for "/" */
    char *root;       /* realpath() of the directory */
    size_t root_len;
    char *index_file; /* NULL: no index */
    int max_age_s;    /* -1: no Cache-Control */
};

/* One streamed response: holds a reference on req and the fd until it ends. */
typedef struct transfer_s {
    kr_http_req_t *req;
    int fd;
    uint64_t off;
    uint64_t remaining;
} transfer_t;

/* ---- content types --------------------------------------------------------------------- */

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"xml", "text/xml; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"mp3", "audio/mpeg"},
    {"wav", "audio/wav"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
};

const char *kr_static_content_type(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    /* ".profile" is a hidden file without an extension, "name." has an empty one. */
    if (dot == NULL || dot == base || dot[1] == '\0')
        return "application/octet-stream";
    const char *ext = dot + 1;
    size_t n = strlen(ext);
    for (size_t i = 0; i < KR_ARRAY_SIZE(content_types); i++)
        if (strlen(content_types[i].ext) == n && kr_strncasecmp(ext, content_types[i].ext, n) == 0)
            return content_types[i].type;
    return "application/octet-stream";
}

/* ---- pure helpers ---------------------------------------------------------------------- */

static void trim_ows(const char **p, size_t *len)
{
    while (*len > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
        (*len)--;
}

int kr_static_safe_path(const char *rel, size_t len, char *out, size_t outlen)
{
    if (outlen == 0)
        return KR_EINVAL;
    /* A NUL would cut the path short at open(); a backslash is a separator on other systems
     * and in some clients' eyes, so it never names a file here. */
    if (len > 0 && (memchr(rel, '\0', len) != NULL || memchr(rel, '\\', len) != NULL))
        return KR_EINVAL;
    size_t o = 0, i = 0;
    while (i < len) {
        while (i < len && rel[i] == '/')
            i++;
        size_t s = i;
        while (i < len && rel[i] != '/')
            i++;
        size_t n = i - s;
        if (n == 0 || (n == 1 && rel[s] == '.'))
            continue;
        /* Rejected rather than resolved: "/a/../b" is never a link anyone should publish. */
        if (n == 2 && rel[s] == '.' && rel[s + 1] == '.')
            return KR_EINVAL;
        if (o + (o ? 1 : 0) + n >= outlen)
            return KR_EINVAL;
        if (o)
            out[o++] = '/';
        memcpy(out + o, rel + s, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

int kr_static_check_target(const char *target)
{
    if (target == NULL)
        return 0;
    for (const char *p = target; *p != '\0' && *p != '?' && *p != '#'; p++) {
        if (p[0] != '%' || p[1] == '\0')
            continue;
        char a = p[1], b = p[2];
        if ((a == '2' && (b == 'f' || b == 'F')) || (a == '5' && (b == 'c' || b == 'C')))
            return KR_EINVAL;
    }
    return 0;
}

/* Reads decimal digits at *pp, saturating at UINT64_MAX; returns whether there were any. */
static int parse_u64(const char **pp, const char *end, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
        p++;
    }
    int any = p != *pp;
    *pp = p;
    *out = v;
    return any;
}

int kr_static_parse_range(const char *value, size_t len, uint64_t size, uint64_t *start,
                          uint64_t *end)
{
    trim_ows(&value, &len);
    if (len < 6 || kr_strncasecmp(value, "bytes=", 6) != 0)
        return 0;
    value += 6;
    len -= 6;
    trim_ows(&value, &len);
    /* Several ranges would need multipart/byteranges; sending the whole file is allowed. */
    if (len == 0 || memchr(value, ',', len) != NULL)
        return 0;
    const char *p = value, *e = value + len;
    uint64_t first = 0, last = 0;
    int has_first = parse_u64(&p, e, &first);
    if (p == e || *p != '-')
        return 0;
    p++;
    int has_last = parse_u64(&p, e, &last);
    if (p != e)
        return 0;
    if (!has_first) {
        if (!has_last)
            return 0;
        /* Suffix range: the last n bytes, the whole file when n exceeds it. */
        if (last == 0 || size == 0)
            return -1;
        *start = last >= size ? 0 : size - last;
        *end = size - 1;
        return 1;
    }
    if (has_last && last < first)
        return 0;
    if (first >= size)
        return -1;
    *start = first;
    *end = !has_last || last >= size ? size - 1 : last;
    return 1;
}

void kr_static_etag(uint64_t size, int64_t mtime_ns, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%" PRIx64 "-%" PRIx64 "\"", size, (uint64_t)mtime_ns);
}

/* An opaque tag with its quotes, or NULL if s does not start with one. */
static const char *etag_end(const char *s, const char *end)
{
    if (s >= end || *s != '"')
        return NULL;
    const char *q = memchr(s + 1, '"', (size_t)(end - s - 1));
    return q ? q + 1 : NULL;
}

int kr_static_etag_match(const char *value, size_t len, const char *etag)
{
    if (etag[0] == 'W' && etag[1] == '/')
        etag += 2;
    size_t elen = strlen(etag);
    const char *p = value, *end = value + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p >= end)
            break;
        if (*p == '*')
            return 1;
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *q = etag_end(p, end);
        if (q == NULL) {
            /* Not an entity-tag: skip to the next list element. */
            while (p < end && *p != ',')
                p++;
            continue;
        }
        if ((size_t)(q - p) == elen && memcmp(p, etag, elen) == 0)
            return 1;
        p = q;
    }
    return 0;
}

/* ---- mounts ---------------------------------------------------------------------------- */

void kr_static_opts_default(kr_static_opts_t *opts)
{
    opts->index_file = "index.html";
    opts->max_age_s = -1;
}

static int valid_index_name(const char *name)
{
    return name[0] != '\0' && strchr(name, '/') == NULL && strchr(name, '\\') == NULL &&
           strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

kr_static_t *kr_static_new(const char *url_prefix, const char *dir, const kr_static_opts_t *opts,
                           int *err)
{
    kr_static_opts_t defaults;
    if (opts == NULL) {
        kr_static_opts_default(&defaults);
        opts = &defaults;
    }
    int rc = KR_EINVAL;
    if (url_prefix == NULL || url_prefix[0] != '/' || dir == NULL)
        goto fail;
    if (opts->index_file != NULL && !valid_index_name(opts->index_file))
        goto fail;
    char root[PATH_MAX];
    if (realpath(dir, root) == NULL) {
        rc = errno == ENOENT || errno == ENOTDIR ? KR_ENOENT : -errno;
        goto fail;
    }
    struct stat sb;
    if (stat(root, &sb) != 0) {
        rc = -errno;
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode))
        goto fail;

    kr_static_t *st = kr_calloc(1, sizeof(*st));
    size_t n = strlen(url_prefix);
    while (n > 1 && url_prefix[n - 1] == '/')
        n--;
    st->prefix = kr_strndup(url_prefix, n);
    st->match_len = n == 1 ? 0 : n;
    st->root = kr_strdup(root);
    st->root_len = strlen(root);
    st->index_file = opts->index_file ? kr_strdup(opts->index_file) : NULL;
    st->max_age_s = opts->max_age_s < 0 ? -1 : opts->max_age_s;
    return st;

fail:
    if (err != NULL)
        *err = rc;
    return NULL;
}

void kr_static_free(kr_static_t *st)
{
    if (st == NULL)
        return;
    kr_free(st->prefix);
    kr_free(st->root);
    kr_free(st->index_file);
    kr_free(st);
}

const char *kr_static_prefix(const kr_static_t *st)
{
    return st->prefix;
}

const char *kr_static_root(const kr_static_t *st)
{
    return st->root;
}

/* ---- opening files --------------------------------------------------------------------- */

static int inside_root(const kr_static_t *st, const char *real)
{
    if (st->root_len == 1) /* the root is "/" */
        return real[0] == '/';
    return strncmp(real, st->root, st->root_len) == 0 &&
           (real[st->root_len] == '/' || real[st->root_len] == '\0');
}

static int open_error(int e)
{
    return e == EACCES || e == EPERM ? UV_EACCES : KR_ENOENT;
}

/* Resolves path and checks that it stays inside the mount. A directory gives 0 with
 * *fd == -1; a regular file gives 0 with *fd open. Anything else is KR_ENOENT (missing,
 * outside the mount, special file), or UV_EACCES when the process may not read it. */
static int open_under_root(const kr_static_t *st, const char *path, int *fd, struct stat *sb)
{
    char real[PATH_MAX];
    *fd = -1;
    if (realpath(path, real) == NULL)
        return open_error(errno);
    if (!inside_root(st, real))
        return KR_ENOENT;
    if (stat(real, sb) != 0)
        return open_error(errno);
    if (S_ISDIR(sb->st_mode))
        return 0;
    if (!S_ISREG(sb->st_mode))
        return KR_ENOENT;
    /* O_NONBLOCK: should the file have been swapped for a FIFO since the stat, open() must
     * not wait for a writer. O_NOFOLLOW: nor for a symlink (the resolved path has none). */
    int f = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (f < 0)
        return open_error(errno);
    if (fstat(f, sb) != 0 || !S_ISREG(sb->st_mode)) {
        close(f);
        return KR_ENOENT;
    }
    *fd = f;
    return 0;
}

/* Reads up to len bytes at off; *got < len only at end of file. Returns 0 or -errno. */
static int read_at(int fd, char *p, size_t len, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *got = done;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

/* ---- responses ------------------------------------------------------------------------- */

#define MAX_HEADERS 8

static void add_header(kr_http_header_t *h, unsigned *n, const char *name, const char *value)
{
    KR_ASSERT(*n < MAX_HEADERS);
    h[*n].name = name;
    h[*n].value = value;
    h[*n].name_len = strlen(name);
    h[*n].value_len = strlen(value);
    (*n)++;
}

/* A short text/plain answer (403, 405, 500). extra_name may be NULL. Returns 1 (answered). */
static int respond_plain(kr_http_req_t *req, int status, const char *text, const char *extra_name,
                         const char *extra_value)
{
    kr_http_header_t h[MAX_HEADERS];
    unsigned n = 0;
    add_header(h, &n, "Content-Type", "text/plain; charset=utf-8");
    if (extra_name != NULL)
        add_header(h, &n, extra_name, extra_value);
    /* KR_ECLOSED only means the client left; the request is answered either way. */
    (void)kr_http_respond(req, status, h, n, kr_buf_from(text, strlen(text)));
    return 1;
}

static int respond_not_allowed(kr_http_req_t *req)
{
    return respond_plain(req, 405, "Method Not Allowed\n", "Allow", "GET, HEAD");
}

static int uri_char_ok(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("-._~!$&'()*+,;=:@/", c) != NULL;
}

/* 301 to the request path plus "/", re-encoded from the decoded path so the Location is
 * always well formed. Leading slashes are collapsed to one: "//host/" would be a
 * protocol-relative URL, an open redirect to another site. */
static int respond_add_slash(kr_http_req_t *req)
{
    static const char hex[] = "0123456789ABCDEF";
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, req->path_len + 16);
    const char *p = req->path;
    size_t n = req->path_len;
    while (n > 1 && p[0] == '/' && p[1] == '/') {
        p++;
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (uri_char_ok(c)) {
            kr_sbuf_putc(&sb, (char)c);
        } else {
            kr_sbuf_putc(&sb, '%');
            kr_sbuf_putc(&sb, hex[c >> 4]);
            kr_sbuf_putc(&sb, hex[c & 15]);
        }
    }
    kr_sbuf_putc(&sb, '/');
    /* The query is copied raw; one holding a control byte (never valid) is dropped. */
    const char *q = req->query;
    int query_ok = q != NULL && q[0] != '\0';
    for (const char *c = q; query_ok && *c != '\0'; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
            query_ok = 0;
    if (query_ok) {
        kr_sbuf_putc(&sb, '?');
        kr_sbuf_puts(&sb, q);
    }
    kr_sbuf_putc(&sb, '\0');
    kr_http_header_t h[MAX_HEADERS];
    unsigned hn = 0;
    add_header(h, &hn, "Location", kr_sbuf_data(&sb));
    (void)kr_http_respond(req, 301, h, hn, NULL); /* KR_ECLOSED: nobody to tell */
    kr_sbuf_dispose(&sb);
    return 1;
}

/* If-None-Match, else If-Modified-Since (RFC 9110 13.2.2): 1 when the client's copy is
 * current. */
static int not_modified(kr_http_req_t *req, const char *etag, time_t mtime)
{
    size_t len;
    const char *v = kr_http_req_header(req, "if-none-match", &len);
    if (v != NULL)
        return kr_static_etag_match(v, len, etag);
    v = kr_http_req_header(req, "if-modified-since", &len);
    if (v == NULL)
        return 0;
    trim_ows(&v, &len);
    time_t since;
    return kr_time_parse_http_date(v, len, &since) == 0 && mtime <= since;
}

/* If-Range (RFC 9110 13.1.5): the Range applies only when the validator matches exactly,
 * strongly for an ETag, to the second for a date. */
static int if_range_matches(kr_http_req_t *req, const char *etag, time_t mtime)
{
    size_t len;
    const char *v = kr_http_req_header(req, "if-range", &len);
    if (v == NULL)
        return 1;
    trim_ows(&v, &len);
    if (len > 0 && v[0] == '"')
        return len == strlen(etag) && memcmp(v, etag, len) == 0;
    time_t t;
    return kr_time_parse_http_date(v, len, &t) == 0 && t == mtime;
}

/* ---- streaming ------------------------------------------------------------------------- */

static void transfer_pump(transfer_t *t);

static void transfer_finish(transfer_t *t, int end)
{
    if (end)
        (void)kr_http_respond_end(t->req); /* KR_ECLOSED: the client left, nothing to do */
    close(t->fd);
    kr_http_req_unref(t->req);
    kr_free(t);
}

static void on_drain(kr_http_req_t *req, void *ud)
{
    transfer_t *t = ud;
    KR_ASSERT(t->req == req);
    if (req->conn == NULL)
        transfer_finish(t, 0);
    else
        transfer_pump(t);
}

/* Pushes chunks until the body is done or the connection holds STREAM_BUDGET, then waits
 * for a drain. A read error or a file that shrank ends the response short; kr_http closes
 * a connection whose fixed-length body was not completed. */
static void transfer_pump(transfer_t *t)
{
    kr_http_req_t *req = t->req;
    while (t->remaining > 0) {
        if (req->conn == NULL) {
            transfer_finish(t, 0);
            return;
        }
        if (kr_http_req_queued(req) >= STREAM_BUDGET) {
            if (kr_http_req_on_drain(req, on_drain, t) != 0)
                transfer_finish(t, 0); /* closed meanwhile: no callback will come */
            return;
        }
        size_t want = t->remaining < STREAM_CHUNK ? (size_t)t->remaining : STREAM_CHUNK;
        kr_buf_t *b = kr_buf_new(want);
        size_t got;
        if (read_at(t->fd, b->data, want, t->off, &got) != 0 || got == 0) {
            kr_buf_unref(b);
            break;
        }
        b->len = got;
        t->off += got;
        t->remaining -= got;
        if (kr_http_respond_body(req, b) != 0) {
            transfer_finish(t, 0);
            return;
        }
    }
    transfer_finish(t, 1);
}

/* ---- serving --------------------------------------------------------------------------- */

/* Answers GET/HEAD for the open regular file fd (taken: closed on every path). name is the
 * requested file name, for the content type. Returns 1. */
static int serve_file(kr_static_t *st, kr_http_req_t *req, int fd, const struct stat *sb,
                      const char *name)
{
    uint64_t size = (uint64_t)sb->st_size;
    int64_t mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
    time_t mtime = sb->st_mtim.tv_sec;
    char etag[KR_STATIC_ETAG_LEN], last_modified[KR_HTTP_DATE_LEN + 1], cache[32], range[80];
    kr_static_etag(size, mtime_ns, etag, sizeof(etag));
    kr_time_http_date(mtime, last_modified);

    kr_http_header_t h[MAX_HEADERS];
    unsigned n = 0;
    add_header(h, &n, "ETag", etag);
    add_header(h, &n, "Last-Modified", last_modified);
    if (st->max_age_s >= 0) {
        snprintf(cache, sizeof(cache), "max-age=%d", st->max_age_s);
        add_header(h, &n, "Cache-Control", cache);
    }
    if (not_modified(req, etag, mtime)) {
        close(fd);
        (void)kr_http_respond(req, 304, h, n, NULL); /* KR_ECLOSED: nobody to tell */
        return 1;
    }
    add_header(h, &n, "Content-Type", kr_static_content_type(name));
    add_header(h, &n, "Accept-Ranges", "bytes");

    int status = 200;
    uint64_t start = 0, len = size;
    size_t rlen;
    const char *rv = kr_http_req_header(req, "range", &rlen);
    /* Range is defined for GET only (RFC 9110 14.2): HEAD describes the whole file. */
    if (rv != NULL && req->method == KR_M_GET && if_range_matches(req, etag, mtime)) {
        uint64_t a, b;
        int r = kr_static_parse_range(rv, rlen, size, &a, &b);
        if (r < 0) {
            close(fd);
            snprintf(range, sizeof(range), "bytes */%" PRIu64, size);
            kr_http_header_t h416[MAX_HEADERS];
            unsigned n416 = 0;
            add_header(h416, &n416, "Content-Range", range);
            (void)kr_http_respond(req, 416, h416, n416, NULL); /* KR_ECLOSED: as above */
            return 1;
        }
        if (r > 0) {
            status = 206;
            start = a;
            len = b - a + 1;
            snprintf(range, sizeof(range), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, a, b, size);
            add_header(h, &n, "Content-Range", range);
        }
    }

    if (req->method == KR_M_HEAD) {
        close(fd);
        if (kr_http_respond_start(req, status, h, n, (int64_t)len) == 0)
            (void)kr_http_respond_end(req);
        return 1;
    }

    if (len <= SMALL_BODY_MAX) {
        kr_buf_t *body = kr_buf_new((size_t)len);
        size_t got;
        int rc = read_at(fd, body->data, (size_t)len, start, &got);
        close(fd);
        if (rc != 0 || got != len) {
            /* A read error, or the file shrank since fstat: the headers would lie. */
            kr_buf_unref(body);
            return respond_plain(req, 500, "Internal Server Error\n", NULL, NULL);
        }
        (void)kr_http_respond(req, status, h, n, body); /* KR_ECLOSED: body released */
        return 1;
    }

    if (kr_http_respond_start(req, status, h, n, (int64_t)len) != 0) {
        close(fd);
        return 1;
    }
    transfer_t *t = kr_malloc(sizeof(*t));
    t->req = req;
    t->fd = fd;
    t->off = start;
    t->remaining = len;
    kr_http_req_ref(req);
    transfer_pump(t);
    return 1;
}

int kr_static_serve(kr_static_t *st, kr_http_req_t *req)
{
    const char *path = req->path;
    size_t path_len = req->path_len;
    if (path == NULL || path_len < st->match_len || memcmp(path, st->prefix, st->match_len) != 0)
        return 0;
    if (path_len > st->match_len && path[st->match_len] != '/')
        return 0; /* "/statics" is not under "/static" */
    const char *rel = path + st->match_len;
    size_t rel_len = path_len - st->match_len;
    int trailing_slash = rel_len > 0 && rel[rel_len - 1] == '/';

    /* Unsafe paths are "not found" rather than 400: nothing here is served by that name. */
    char rel_path[PATH_MAX];
    if (kr_static_safe_path(rel, rel_len, rel_path, sizeof(rel_path)) != 0 ||
        kr_static_check_target(req->target) != 0)
        return 0;
    char full[PATH_MAX];
    int len = snprintf(full, sizeof(full), "%s%s%s", st->root, rel_path[0] ? "/" : "", rel_path);
    if (len < 0 || (size_t)len >= sizeof(full))
        return 0;

    int fd;
    struct stat sb;
    int rc = open_under_root(st, full, &fd, &sb);
    if (rc == UV_EACCES)
        return respond_plain(req, 403, "Forbidden\n", NULL, NULL);
    if (rc != 0)
        return 0;
    int is_get = req->method == KR_M_GET || req->method == KR_M_HEAD;

    if (fd < 0) { /* a directory: its index, if any */
        if (st->index_file == NULL)
            return 0;
        int n = snprintf(full + len, sizeof(full) - (size_t)len, "/%s", st->index_file);
        if (n < 0 || (size_t)n >= sizeof(full) - (size_t)len)
            return 0;
        rc = open_under_root(st, full, &fd, &sb);
        if (rc == UV_EACCES)
            return respond_plain(req, 403, "Forbidden\n", NULL, NULL);
        if (rc != 0 || fd < 0)
            return 0;
        if (!trailing_slash) {
            /* nginx's answer: relative links in the index resolve against the directory. */
            close(fd);
            return is_get ? respond_add_slash(req) : respond_not_allowed(req);
        }
    } else if (trailing_slash) {
        close(fd); /* "file.css/" names a directory that is not there */
        return 0;
    }

    if (!is_get) {
        close(fd);
        return respond_not_allowed(req);
    }
    return serve_file(st, req, fd, &sb, full);
}
