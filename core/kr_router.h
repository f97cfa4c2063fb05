/* kr_router.h: verb + template route table.
 *
 * Patterns are ASP.NET-style templates: literal segments, `{name}`, `{name:int}` (and the
 * other constraints documented in docs/lua-api.md) and a final catch-all `{*name}`. The table
 * is a segment trie, so a lookup walks the path once instead of scanning every route; at each
 * level a literal child beats a constrained parameter, which beats a plain parameter, which
 * beats a catch-all (with backtracking when a preferred branch fails deeper down).
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
/* Writes "GET, HEAD, POST" style text for an Allow header into out (NUL-terminated). */
void kr_router_allow_string(unsigned methods, char *out, size_t outlen);

typedef struct kr_router_s kr_router_t;

#define KR_ROUTE_MAX_PARAMS 16

typedef struct kr_route_param_s {
    const char *name; /* borrowed from the router, NUL-terminated */
    const char *value; /* points into the path given to kr_router_match (not terminated) */
    size_t value_len;
    int is_int;        /* the parameter had the :int / :long constraint */
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
 * when the same pattern shape and a shared method were already registered. */
int kr_router_add(kr_router_t *r, unsigned methods, const char *pattern, void *data,
                  const char **err);

/* Matches a decoded path (no query string) of len bytes for one method bit. */
kr_route_result_e kr_router_match(const kr_router_t *r, unsigned method, const char *path,
                                  size_t len, kr_route_match_t *out);

/* Calls fn(data, ud) once for every route (to release the handlers on teardown). */
void kr_router_foreach(const kr_router_t *r, void (*fn)(void *data, void *ud), void *ud);

#endif
