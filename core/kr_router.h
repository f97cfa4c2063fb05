/* kr_router.h: verb + template route table.
 *
 * Patterns are ASP.NET-style templates: literal segments (matched ASCII case-insensitively),
 * `{name}`, `{name:constraint}`, an optional last parameter `{name?}` / `{name:int?}` (the
 * route also matches without that segment) and a final catch-all `{*name}` (the rest of the
 * path, slashes included, possibly empty). A parameter is always a whole segment.
 * Constraints, chainable as `{id:int:min(1)}`: int, long (signed decimal 64-bit), bool,
 * alpha, guid (8-4-4-4-12 hex), minlength(n), maxlength(n), length(n), length(a,b), min(n),
 * max(n), range(a,b); lengths count UTF-8 code points, min/max/range imply an integer.
 * One trailing slash is ignored in patterns and in request paths; an empty path segment
 * (`//`) never matches a parameter. The table is a segment trie, so a lookup walks the path
 * once instead of scanning every route; at each level a literal child beats a constrained
 * parameter, which beats a plain parameter, which beats a catch-all (with backtracking when a
 * preferred branch fails deeper down).
 * The router owns its patterns and nodes; the `data` pointer of each route is opaque and
 * borrowed (the Lua layer stores its handler reference there). A router is built once per
 * script generation and never changes while requests use it; hot reload builds a new one.
 * Calls nothing but kr_common.
 */
#ifndef KR_ROUTER_H
#define KR_ROUTER_H

#include "kr_common.h"

/* Method bits. HEAD is answered by GET routes unless a route claims HEAD itself. */
enum {
    KR_M_GET = 1 << 0,
    KR_M_HEAD = 1 << 1,
    KR_M_POST = 1 << 2,
    KR_M_PUT = 1 << 3,
    KR_M_DELETE = 1 << 4,
    KR_M_PATCH = 1 << 5,
    KR_M_OPTIONS = 1 << 6,
    KR_M_ALL = (1 << 7) - 1,
};

/* Parses one verb name (case-insensitive, n bytes); returns its bit or 0 if unknown. */
unsigned kr_router_method_bit(const char *name, size_t n);
/* Writes "GET, HEAD, POST" style text for an Allow header into out (NUL-terminated), in the
 * order GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS; names that do not fit are left out
 * whole. KR_ROUTER_ALLOW_MAX bytes always fit everything. */
#define KR_ROUTER_ALLOW_MAX 48
void kr_router_allow_string(unsigned methods, char *out, size_t outlen);

typedef struct kr_router_s kr_router_t;

#define KR_ROUTE_MAX_PARAMS 16

typedef struct kr_route_param_s {
    const char *name; /* borrowed from the router, NUL-terminated */
    const char *value; /* points into the path given to kr_router_match (not terminated) */
    size_t value_len;
    int is_int;        /* the parameter had :int, :long, :min, :max or :range */
    int64_t int_value; /* its value when is_int */
} kr_route_param_t;

typedef enum kr_route_result_e {
    KR_ROUTE_FOUND = 0,
    KR_ROUTE_NOT_FOUND,
    KR_ROUTE_METHOD_NOT_ALLOWED,
} kr_route_result_e;

typedef struct kr_route_match_s {
    void *data;          /* the matched route's data (FOUND) */
    const char *pattern; /* the matched route's pattern (FOUND) */
    unsigned allow;      /* methods the path answers to (METHOD_NOT_ALLOWED), HEAD included
                            when GET is there */
    unsigned nparams;
    kr_route_param_t params[KR_ROUTE_MAX_PARAMS];
} kr_route_match_t;

kr_router_t *kr_router_new(void);
void kr_router_free(kr_router_t *r);

/* Adds a route. methods is a mask of KR_M_* bits. Returns 0, or KR_EINVAL with *err set
 * to a static message (bad pattern, unknown constraint, catch-all not last, duplicate
 * parameter name, too many parameters) or KR_EEXIST-like KR_EINVAL with "duplicate route"
 * when the same pattern shape and a shared method were already registered. The shape is
 * the literals (case-insensitive) plus the kind and constraints of each parameter, not
 * the parameter names; a route with an optional last parameter also occupies the shape
 * without it. err may be NULL. A refused route leaves the router unchanged. */
int kr_router_add(kr_router_t *r, unsigned methods, const char *pattern, void *data,
                  const char **err);

/* Matches a decoded path (no query string) of len bytes for one method bit. FOUND fills
 * data, pattern and params (in path order; an absent optional parameter is not listed).
 * HEAD uses the GET route of a shape that has no HEAD route. METHOD_NOT_ALLOWED means no
 * matching shape has the method; allow then collects the methods of every matching shape.
 * A method of 0 (a verb the router does not know) gets 405 wherever the path exists. */
kr_route_result_e kr_router_match(const kr_router_t *r, unsigned method, const char *path,
                                  size_t len, kr_route_match_t *out);

/* Calls fn(data, ud) once per successful kr_router_add, in registration order, however
 * many method slots or shapes that route fills (to release the handlers on teardown). */
void kr_router_foreach(const kr_router_t *r, void (*fn)(void *data, void *ud), void *ud);

#endif
