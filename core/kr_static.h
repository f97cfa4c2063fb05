/* kr_static.h: static files for kr.static(url_prefix, dir [, opts]).
 *
 * A mount maps a URL prefix onto a directory that is resolved once with realpath(). A request
 * under the prefix is turned into a safe relative path (no "..", no NUL, no backslash, no
 * encoded slash), joined to the root and resolved again, and must still lie inside the root,
 * so neither the URL nor a symlink can leave the mount. Regular files are answered with
 * Content-Type, Last-Modified, ETag, Accept-Ranges and an optional Cache-Control, honouring
 * If-None-Match / If-Modified-Since (304), Range / If-Range (206, 416) and HEAD. Bodies up to
 * 64 KiB go out in one buffer; larger ones are streamed in 64 KiB reads with backpressure
 * (kr_http_req_queued / kr_http_req_on_drain). Reads are plain pread() on the loop thread:
 * fine for local disks, not meant for network file systems.
 * Owns: the mount (its strings) and, per streamed response, a transfer holding the fd and a
 * reference on the request. Calls: kr_http (response writer), kr_buf, kr_time. Makes no
 * callbacks upward.
 */
#ifndef KR_STATIC_H
#define KR_STATIC_H

#include "kr_common.h"
#include "kr_http.h"

typedef struct kr_static_opts_s {
    const char *index_file; /* "index.html": served for a directory path; NULL disables */
    int max_age_s;          /* Cache-Control: max-age when >= 0; -1 (default) sends none */
} kr_static_opts_t;

/* Fills in the defaults above (index "index.html", no Cache-Control). */
void kr_static_opts_default(kr_static_opts_t *opts);

typedef struct kr_static_s kr_static_t;

/* Creates a mount. url_prefix must start with '/'; trailing slashes are dropped ("/static/" and
 * "/static" are the same mount, "/" mounts the whole URL space). dir must exist and be a
 * directory; it is resolved once with realpath(), so later renames of the configured path do
 * not move the mount. opts may be NULL for the defaults; its strings are copied. index_file
 * must be a plain file name (no '/', not "." or ".."). Returns NULL and sets *err (when err is
 * not NULL): KR_ENOENT if dir does not exist, KR_EINVAL for a bad prefix, a dir that is not a
 * directory or a bad index name, another negative errno (UV_EACCES...) if realpath() fails
 * otherwise. */
kr_static_t *kr_static_new(const char *url_prefix, const char *dir, const kr_static_opts_t *opts,
                           int *err);
void kr_static_free(kr_static_t *st);
/* The normalised prefix ("/static", or "/" for the root mount); borrowed from st. */
const char *kr_static_prefix(const kr_static_t *st);
/* The mount's root directory as realpath() gave it; borrowed from st. */
const char *kr_static_root(const kr_static_t *st);

/* Serves req if req->path is under the mount's prefix and names an existing regular file, or
 * a directory holding the index file. Returns 1 when it has answered (or started answering)
 * the request, 0 when the request is not for this mount, its path is unsafe (see
 * kr_static_safe_path and kr_static_check_target) or nothing servable exists there: the caller
 * goes on, and ends with 404. Answers:
 *   - only GET and HEAD are served; any other method on an existing file or directory gets
 *     405 with Allow: GET, HEAD;
 *   - a file the process may not read (EACCES/EPERM) gets 403; a symlink that resolves outside
 *     the mount, a special file or any other open failure is "not found" (returns 0);
 *   - a directory requested without a trailing slash whose index file exists is redirected
 *     with 301 to the same path plus "/" (query kept), as nginx does; with the slash the index
 *     is served; a directory without an index, or with indexing disabled, is not found;
 *   - a file requested with a trailing slash is not found (as nginx);
 *   - If-None-Match (takes precedence) or If-Modified-Since give 304; Range (GET only, one
 *     range) gives 206 or 416, and is ignored when If-Range does not match;
 *   - HEAD gets the GET headers and Content-Length, and the file is not read.
 * A streamed response holds a reference on req and the open fd until it ends, fails, or the
 * connection closes (drain callback with req->conn == NULL); nothing outlives that. If the file
 * shrinks while streaming, the response is ended short: kr_http must close the connection
 * when a fixed-length response ends with bytes still owed. */
int kr_static_serve(kr_static_t *st, kr_http_req_t *req);

/* ---- pure helpers (exposed for the unit tests) ------------------------------------------- */

/* Content type by file extension, case-insensitive; text types carry "; charset=utf-8".
 * Unknown or missing extensions give "application/octet-stream". Static strings. */
const char *kr_static_content_type(const char *path);

/* Maps a percent-decoded URL path below the prefix (rel[0..len), e.g. "/css/app.css") to a
 * relative file path ("css/app.css"): empty and "." components are dropped, so "/", "" and
 * "./" map to "". Rejects with KR_EINVAL any ".." component, NUL byte or backslash, and a
 * result that does not fit in outlen (NUL included). Returns 0 and writes out. */
int kr_static_safe_path(const char *rel, size_t len, char *out, size_t outlen);

/* Checks the raw request target (req->target): its path part (before '?') must not hold an
 * encoded '/' or '\' (%2F, %5C, any case), which decoding would turn into a separator the
 * client did not write. Returns 0 or KR_EINVAL. */
int kr_static_check_target(const char *target);

/* Parses a Range header value (single range: bytes=a-b, bytes=a-, bytes=-n; unit
 * case-insensitive, surrounding whitespace allowed) for a file of `size` bytes. Returns 1 with
 * *start / *end (inclusive) when satisfiable, 0 when the header is to be ignored (malformed,
 * last < first, another unit, or several ranges: the whole file is sent with 200), -1 when
 * unsatisfiable (a first byte at or beyond size, a zero suffix, any range of an empty file:
 * 416 with Content-Range: bytes * /size). Numbers too large for 64 bits saturate. */
int kr_static_parse_range(const char *value, size_t len, uint64_t size, uint64_t *start,
                          uint64_t *end);

/* Room for the longest ETag: two quotes, 16 + 16 hex digits, '-' and the NUL. */
#define KR_STATIC_ETAG_LEN 40
/* Writes the strong ETag "\"<hex size>-<hex mtime ns>\"" (NUL-terminated, truncated to
 * outlen). */
void kr_static_etag(uint64_t size, int64_t mtime_ns, char *out, size_t outlen);

/* If-None-Match comparison: 1 when the list value[0..len) is "*" or holds etag, comparing
 * weakly (a "W/" prefix is ignored on either side), else 0. */
int kr_static_etag_match(const char *value, size_t len, const char *etag);

#endif
