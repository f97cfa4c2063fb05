/* kr_lua_cors.c: CORS policies, kr.cors / kr.cors.policy, and the per-request CORS step
 * (see kr_lua_cors.h; the rules are the Fetch standard's CORS protocol).
 *
 * Per generation, a cors_state_t (a userdata anchored in the generation's registry, freed by
 * its __gc when the lua_State closes) owns every policy the scripts made and maps routes (by
 * the data pointer they gave kr_router_add) and hubs to their policy. The request step must
 * not run Lua, so the states are also linked in a process-wide list looked up by generation
 * (one or two entries while a reload overlaps).
 */
#include "kr_lua_cors.h"
#include "kr_http.h"
#include "kr_log.h"

#include <lauxlib.h>
#include <stdio.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define POLICY_MT "kr.CorsPolicy"
#define STATE_MT "kr.CorsState"

typedef struct strlist_s {
    char **v;
    unsigned n;
} strlist_t;

struct kr_cors_s {
    int any_origin, any_method, any_header;
    strlist_t origins; /* lower-cased "scheme://host[:port]"; a host "*.x" matches subdomains */
    strlist_t methods; /* as written, compared case-insensitively */
    strlist_t headers; /* lower-cased */
    char *expose;      /* ", "-joined, or NULL */
    int credentials;
    long max_age; /* seconds, -1: no Access-Control-Max-Age */
};

const kr_cors_t kr__lua_cors_off;

typedef struct bind_s {
    const void *key;
    const kr_cors_t *policy;
} bind_t;

typedef struct cors_state_s {
    kr_vm_t *vm;
    struct cors_state_s *next;
    const kr_cors_t *dflt;
    kr_cors_t **owned;
    unsigned nowned;
    bind_t *routes;
    unsigned nroutes;
    bind_t *hubs;
    unsigned nhubs;
} cors_state_t;

typedef struct policy_box_s {
    kr_cors_t *p; /* owned by the generation's cors_state_t */
} policy_box_t;

static const char state_key = 'c'; /* registry: the generation's cors_state_t userdata */
static cors_state_t *states;       /* every generation's state (request-time lookup) */

/* ---- state ------------------------------------------------------------------------------ */

static void strlist_free(strlist_t *l)
{
    for (unsigned i = 0; i < l->n; i++)
        kr_free(l->v[i]);
    kr_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void policy_free(kr_cors_t *p)
{
    strlist_free(&p->origins);
    strlist_free(&p->methods);
    strlist_free(&p->headers);
    kr_free(p->expose);
    kr_free(p);
}

static int l_state_gc(lua_State *L)
{
    cors_state_t *st = lua_touserdata(L, 1);
    for (cors_state_t **pp = &states; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    for (unsigned i = 0; i < st->nowned; i++)
        policy_free(st->owned[i]);
    kr_free(st->owned);
    kr_free(st->routes);
    kr_free(st->hubs);
    memset(st, 0, sizeof(*st));
    return 0;
}

/* The generation's state, made on first use (at load time). */
static cors_state_t *state_of(lua_State *L, kr_vm_t *vm)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) == LUA_TUSERDATA) {
        cors_state_t *st = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return st;
    }
    lua_pop(L, 1);
    cors_state_t *st = lua_newuserdatauv(L, sizeof(*st), 0);
    memset(st, 0, sizeof(*st));
    luaL_setmetatable(L, STATE_MT);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
    st->vm = vm;
    st->next = states;
    states = st;
    return st;
}

static cors_state_t *find_state(const kr_vm_t *vm)
{
    for (cors_state_t *st = states; st; st = st->next)
        if (st->vm == vm)
            return st;
    return NULL;
}

static const kr_cors_t *find_bind(const bind_t *b, unsigned n, const void *key)
{
    for (unsigned i = 0; i < n; i++)
        if (b[i].key == key)
            return b[i].policy;
    return NULL;
}

static void add_bind(bind_t **b, unsigned *n, const void *key, const kr_cors_t *policy)
{
    *b = kr_realloc(*b, sizeof(**b) * (*n + 1));
    (*b)[(*n)++] = (bind_t){key, policy};
}

/* ---- policies: parsing ------------------------------------------------------------------ */

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

/* An allow-list origin: scheme://host[:port] (an optional "/" at the end is dropped), host
 * a DNS name, an IPv4 address, [IPv6], or *.name for any subdomain of name. Returns the
 * lower-cased copy (kr_malloc), or NULL if s is not of that form. */
static char *normalize_origin(const char *s, size_t n)
{
    if (n > 0 && s[n - 1] == '/')
        n--;
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < n; i++)
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            sep = s + i;
            break;
        }
    if (sep == NULL || sep == s)
        return NULL;
    for (const char *p = s; p < sep; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (p > s && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))))
            return NULL;
    const char *h = sep + 3, *end = s + n;
    if (end - h >= 2 && h[0] == '*' && h[1] == '.')
        h += 2; /* a subdomain wildcard: the rest is an ordinary host */
    const char *p = h;
    if (p < end && *p == '[') {
        while (p < end && *p != ']') {
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                  (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.' || *p == '['))
                return NULL;
            p++;
        }
        if (p == end)
            return NULL;
        p++;
    } else {
        while (p < end && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                           (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '.'))
            p++;
    }
    if (p == h)
        return NULL;
    if (p < end && *p == ':') {
        const char *d = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == d || p - d > 5)
            return NULL;
    }
    if (p != end)
        return NULL;
    char *out = kr_malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        out[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
    out[n] = '\0';
    return out;
}

/* Calls add(L, p, item, len) for each entry of the field at the top of the stack: a list of
 * strings (each one entry), or one string of entries separated by commas and spaces. */
typedef void (*add_fn)(lua_State *L, kr_cors_t *p, const char *s, size_t n);

static void add_entry_from(lua_State *L, kr_cors_t *p, const char *s, size_t n, add_fn add)
{
    const char *q = s, *end = s + n;
    while (q < end) {
        while (q < end && (*q == ',' || *q == ' ' || *q == '\t'))
            q++;
        const char *e = q;
        while (e < end && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if (e > q)
            add(L, p, q, (size_t)(e - q));
        q = e;
    }
}

static void read_list(lua_State *L, kr_cors_t *p, const char *key, add_fn add)
{
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        add_entry_from(L, p, s, n, add);
        return;
    }
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "kr.cors: %s must be a list of strings or a string (got a %s)", key,
                   luaL_typename(L, -1));
    lua_Integer len = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "kr.cors: %s[%d] must be a string", key, (int)i);
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        add(L, p, s, n); /* a list entry is one name, taken whole */
        lua_pop(L, 1);
    }
}

static void strlist_push(strlist_t *l, char *s)
{
    l->v = kr_realloc(l->v, sizeof(*l->v) * (l->n + 1));
    l->v[l->n++] = s;
}

static char *copy_lower(const char *s, size_t n, int lower)
{
    char *out = kr_malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(lower && s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[n] = '\0';
    return out;
}

static void add_origin(lua_State *L, kr_cors_t *p, const char *s, size_t n)
{
    if (n == 1 && s[0] == '*') {
        p->any_origin = 1;
        return;
    }
    char *o = normalize_origin(s, n);
    if (o == NULL)
        luaL_error(L, "kr.cors: origin '%s' is not scheme://host[:port] (or \"*\")",
                   lua_pushlstring(L, s, n));
    strlist_push(&p->origins, o);
}

static void add_method(lua_State *L, kr_cors_t *p, const char *s, size_t n)
{
    if (n == 1 && s[0] == '*') {
        p->any_method = 1;
        return;
    }
    if (!is_token(s, n))
        luaL_error(L, "kr.cors: method '%s' is not a valid HTTP method name",
                   lua_pushlstring(L, s, n));
    strlist_push(&p->methods, copy_lower(s, n, 0));
}

static void add_header(lua_State *L, kr_cors_t *p, const char *s, size_t n)
{
    if (n == 1 && s[0] == '*') {
        p->any_header = 1;
        return;
    }
    if (!is_token(s, n))
        luaL_error(L, "kr.cors: header '%s' is not a valid header name", lua_pushlstring(L, s, n));
    strlist_push(&p->headers, copy_lower(s, n, 1));
}

static void add_expose(lua_State *L, kr_cors_t *p, const char *s, size_t n)
{
    if (!is_token(s, n))
        luaL_error(L, "kr.cors: expose entry '%s' is not a valid header name",
                   lua_pushlstring(L, s, n));
    size_t old = p->expose ? strlen(p->expose) : 0;
    p->expose = kr_realloc(p->expose, old + (old ? 2 : 0) + n + 1);
    char *dst = p->expose + old;
    if (old) {
        memcpy(dst, ", ", 2);
        dst += 2;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* What SignalR's browser client sends on negotiate, polls, sends and DELETE
 * (signalr-protocol.md section 1), plus the usual API headers. */
static const char *const default_headers[] = {"x-requested-with", "x-signalr-user-agent",
                                              "authorization", "content-type"};
static const char *const default_methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};

/* Builds a policy from the spec table at idx. The policy is registered with the generation
 * before it is filled, so a Lua error half-way leaks nothing. */
static kr_cors_t *new_policy(lua_State *L, kr_vm_t *vm, int idx)
{
    static const char *const known[] = {"origins",     "methods", "headers", "expose",
                                        "credentials", "max_age", NULL};
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "kr.cors: option names are strings (got a %s)", luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok)
            luaL_error(L, "kr.cors: unknown option '%s'", k);
    }
    cors_state_t *st = state_of(L, vm);
    kr_cors_t *p = kr_calloc(1, sizeof(*p));
    p->max_age = -1;
    st->owned = kr_realloc(st->owned, sizeof(*st->owned) * (st->nowned + 1));
    st->owned[st->nowned++] = p;

    if (lua_getfield(L, idx, "origins") == LUA_TNIL)
        luaL_error(L, "kr.cors: origins is required (a list of scheme://host[:port], or \"*\")");
    read_list(L, p, "origins", add_origin);
    lua_pop(L, 1);
    if (!p->any_origin && p->origins.n == 0)
        luaL_error(L, "kr.cors: origins must not be empty");

    if (lua_getfield(L, idx, "methods") == LUA_TNIL)
        for (size_t i = 0; i < KR_ARRAY_SIZE(default_methods); i++)
            add_method(L, p, default_methods[i], strlen(default_methods[i]));
    else
        read_list(L, p, "methods", add_method);
    lua_pop(L, 1);

    if (lua_getfield(L, idx, "headers") == LUA_TNIL)
        for (size_t i = 0; i < KR_ARRAY_SIZE(default_headers); i++)
            add_header(L, p, default_headers[i], strlen(default_headers[i]));
    else
        read_list(L, p, "headers", add_header);
    lua_pop(L, 1);

    if (lua_getfield(L, idx, "expose") != LUA_TNIL)
        read_list(L, p, "expose", add_expose);
    lua_pop(L, 1);

    int t = lua_getfield(L, idx, "credentials");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        luaL_error(L, "kr.cors: credentials must be a boolean");
    p->credentials = lua_toboolean(L, -1);
    lua_pop(L, 1);

    if (lua_getfield(L, idx, "max_age") != LUA_TNIL) {
        int isnum;
        lua_Integer v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || v < 0 || v > 86400 * 365)
            luaL_error(L, "kr.cors: max_age must be a number of seconds (0 or more)");
        p->max_age = (long)v;
    }
    lua_pop(L, 1);

    if (p->any_origin && p->credentials)
        luaL_error(L, "kr.cors: origins \"*\" cannot be used with credentials = true (the "
                      "Fetch standard forbids it)");
    return p;
}

static void push_policy(lua_State *L, kr_cors_t *p)
{
    policy_box_t *box = lua_newuserdatauv(L, sizeof(*box), 0);
    box->p = p;
    luaL_setmetatable(L, POLICY_MT);
}

static void check_loading(lua_State *L, kr_vm_t *vm, const char *fname)
{
    if (!vm->loading)
        luaL_error(L, "%s may only be called while the scripts load", fname);
}

/* kr.cors.policy{...} -> policy: for routes and hubs, not the default. */
static int l_cors_policy(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    check_loading(L, vm, "kr.cors.policy");
    push_policy(L, new_policy(L, vm, 1));
    return 1;
}

/* kr.cors{...} (or kr.cors(policy)) -> policy: the generation's default policy. */
static int l_cors_call(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    check_loading(L, vm, "kr.cors");
    /* stack: the kr.cors table, spec */
    cors_state_t *st = state_of(L, vm);
    if (st->dflt != NULL)
        return luaL_error(L, "kr.cors: the default policy is already set (one kr.cors per "
                             "script set; kr.cors.policy{...} makes policies for the cors "
                             "option of routes and hubs)");
    kr_cors_t *p;
    policy_box_t *box = luaL_testudata(L, 2, POLICY_MT);
    if (box != NULL)
        p = box->p;
    else
        p = new_policy(L, vm, 2);
    st->dflt = p;
    push_policy(L, p);
    return 1;
}

static int l_policy_tostring(lua_State *L)
{
    policy_box_t *box = luaL_checkudata(L, 1, POLICY_MT);
    if (box->p->any_origin)
        lua_pushliteral(L, "kr.CorsPolicy (*)");
    else
        lua_pushfstring(L, "kr.CorsPolicy (%s%s)", box->p->origins.v[0],
                        box->p->origins.n > 1 ? ", ..." : "");
    return 1;
}

const kr_cors_t *kr__lua_cors_option(lua_State *L, int idx, const char *fname)
{
    kr_vm_t *vm = kr_vm_from_lua(L);
    const kr_cors_t *p = NULL;
    int t = lua_getfield(L, idx, "cors");
    if (t == LUA_TNIL) {
        p = NULL;
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        p = KR_LUA_CORS_OFF;
    } else if (t == LUA_TTABLE) {
        p = new_policy(L, vm, -1);
    } else {
        policy_box_t *box = luaL_testudata(L, -1, POLICY_MT);
        if (box == NULL)
            luaL_error(L,
                       "%s: cors must be a policy (kr.cors.policy{...}), a table with "
                       "its fields, or false",
                       fname);
        p = box->p;
    }
    lua_pop(L, 1);
    if (p != NULL)
        state_of(L, vm); /* binding it later must not raise (kr.hub relies on that) */
    return p;
}

void kr__lua_cors_bind_route(lua_State *L, kr_vm_t *vm, const void *route_data,
                             const kr_cors_t *policy)
{
    if (policy == NULL)
        return;
    cors_state_t *st = state_of(L, vm);
    add_bind(&st->routes, &st->nroutes, route_data, policy);
}

void kr__lua_cors_bind_hub(lua_State *L, kr_vm_t *vm, const kr_hub_t *hub, const kr_cors_t *policy)
{
    if (policy == NULL)
        return;
    cors_state_t *st = state_of(L, vm);
    add_bind(&st->hubs, &st->nhubs, hub, policy);
}

/* ---- the request step ------------------------------------------------------------------- */

static int origin_allowed(const kr_cors_t *p, const char *o, size_t n)
{
    if (p->any_origin)
        return 1;
    for (unsigned i = 0; i < p->origins.n; i++) {
        const char *e = p->origins.v[i];
        size_t elen = strlen(e);
        if (elen == n && kr_strncasecmp(e, o, n) == 0)
            return 1;
        const char *star = strstr(e, "://*.");
        if (star == NULL)
            continue;
        /* A subdomain entry (scheme, "://", "*.name", optional port): the request's host
         * must end in .name with a non-empty, plain label part before it. */
        size_t pre = (size_t)(star - e) + 3, suf = elen - pre - 1; /* "scheme://", ".name" */
        if (n <= pre + suf || kr_strncasecmp(e, o, pre) != 0 ||
            kr_strncasecmp(e + pre + 1, o + n - suf, suf) != 0)
            continue;
        int ok = 1;
        for (size_t k = pre; k < n - suf && ok; k++) {
            char c = o[k];
            ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 c == '-' || c == '.';
        }
        if (ok)
            return 1;
    }
    return 0;
}

/* Origin is the request's own origin: a page served by this server (http or https, as a TLS
 * proxy may sit in front). Browsers send Origin on same-origin WebSocket upgrades too. */
static int same_origin(const kr_http_req_t *req, const char *o, size_t n)
{
    size_t hlen;
    const char *host = kr_http_req_header(req, "host", &hlen);
    if (host == NULL)
        return 0;
    size_t skip = n > 7 && kr_strncasecmp(o, "http://", 7) == 0    ? 7
                  : n > 8 && kr_strncasecmp(o, "https://", 8) == 0 ? 8
                                                                   : 0;
    return skip && n - skip == hlen && kr_strncasecmp(o + skip, host, hlen) == 0;
}

/* Whether s[0..n) is in the list (case-insensitively), or the list allows anything. */
static int list_allows(int any, const strlist_t *l, const char *s, size_t n)
{
    if (any)
        return 1;
    for (unsigned i = 0; i < l->n; i++)
        if (strlen(l->v[i]) == n && kr_strncasecmp(l->v[i], s, n) == 0)
            return 1;
    return 0;
}

/* Access-Control-Request-Headers: every name must be allowed; out gets them lower-cased and
 * comma-joined. Returns NULL when all are allowed, else why not. */
static const char *check_request_headers(const kr_cors_t *p, const char *v, size_t n,
                                         kr_sbuf_t *out)
{
    const char *q = v, *end = v + n;
    while (q < end) {
        while (q < end && (*q == ',' || *q == ' ' || *q == '\t'))
            q++;
        const char *e = q;
        while (e < end && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if (e > q) {
            if (!is_token(q, (size_t)(e - q)))
                return "malformed Access-Control-Request-Headers";
            if (!list_allows(p->any_header, &p->headers, q, (size_t)(e - q)))
                return "header not allowed";
            if (kr_sbuf_len(out))
                kr_sbuf_putc(out, ',');
            for (const char *c = q; c < e; c++)
                kr_sbuf_putc(out, (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
        }
        q = e;
    }
    return NULL;
}

static void add_allow_origin(const kr_cors_t *p, kr_http_req_t *req, const char *origin)
{
    kr_http_req_add_response_header(req, "Access-Control-Allow-Origin",
                                    p->any_origin && !p->credentials ? "*" : origin);
    if (p->credentials)
        kr_http_req_add_response_header(req, "Access-Control-Allow-Credentials", "true");
}

/* A printable copy of s for the log (control bytes become '?'; long text is cut). The path,
 * not the target, is logged: the query may hold connection and access tokens. */
static const char *printable(const char *s, char *out, size_t outlen)
{
    size_t i = 0;
    for (; s[i] && i + 1 < outlen; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    out[i] = '\0';
    return out;
}

static void log_decision(const kr_http_req_t *req, const char *what, const char *method,
                         const char *origin, const char *result)
{
    if (KR_LOG_DEBUG < kr_log_min_level)
        return;
    char path[256], o[256];
    KR_LOG(KR_LOG_DEBUG, "cors", "%s %s %s from %s: %s", what, method,
           printable(req->path, path, sizeof(path)), printable(origin, o, sizeof(o)), result);
}

/* label and method say what was refused: ("preflight", "POST") or ("WebSocket", "GET"). */
static void refuse(kr_http_req_t *req, const char *label, const char *method, const char *why,
                   const char *origin)
{
    char result[96];
    snprintf(result, sizeof(result), "403 (%s)", why);
    log_decision(req, label, method, origin, result);
    char body[96];
    int n = snprintf(body, sizeof(body), "CORS request refused: %s", why);
    kr_http_respond_text(req, 403, "text/plain; charset=utf-8", body, (size_t)n);
}

static void preflight(const kr_cors_t *p, kr_http_req_t *req, const char *origin, size_t olen,
                      const char *acrm)
{
    kr_http_req_add_response_header(
        req, "Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
    size_t mlen = strlen(acrm), hlen = 0;
    const char *acrh = kr_http_req_header(req, "access-control-request-headers", &hlen);
    kr_sbuf_t hdrs;
    kr_sbuf_init(&hdrs, 128);
    const char *why = NULL;
    if (!origin_allowed(p, origin, olen))
        why = "origin not allowed";
    else if (!is_token(acrm, mlen))
        why = "malformed Access-Control-Request-Method";
    else if (!list_allows(p->any_method, &p->methods, acrm, mlen))
        why = "method not allowed";
    else if (acrh != NULL)
        why = check_request_headers(p, acrh, hlen, &hdrs);
    if (why != NULL) {
        kr_sbuf_dispose(&hdrs);
        refuse(req, "preflight", acrm, why, origin);
        return;
    }
    add_allow_origin(p, req, origin);
    kr_http_req_add_response_header(req, "Access-Control-Allow-Methods", acrm);
    if (kr_sbuf_len(&hdrs) > 0) {
        kr_sbuf_putc(&hdrs, '\0');
        kr_http_req_add_response_header(req, "Access-Control-Allow-Headers", kr_sbuf_data(&hdrs));
    }
    kr_sbuf_dispose(&hdrs);
    if (p->max_age >= 0) {
        char age[24];
        snprintf(age, sizeof(age), "%ld", p->max_age);
        kr_http_req_add_response_header(req, "Access-Control-Max-Age", age);
    }
    log_decision(req, "preflight", acrm, origin, "204");
    kr_http_respond(req, 204, NULL, 0, NULL);
}

int kr__lua_cors_request(kr_vm_t *vm, kr_http_req_t *req)
{
    cors_state_t *st = find_state(vm);
    if (st == NULL)
        return 0; /* no CORS configured in this generation */
    size_t olen = 0;
    const char *origin = kr_http_req_header(req, "origin", &olen);
    const char *acrm = origin != NULL && req->method == KR_M_OPTIONS
                           ? kr_http_req_header(req, "access-control-request-method", NULL)
                           : NULL;
    const kr_cors_t *p = st->dflt;
    int hub_ws = 0, is_hub = 0;
    /* A hub's own paths: the hub and hub/negotiate (kr_hub_handle_http). */
    for (unsigned i = 0; i < vm->nhubs && !is_hub; i++) {
        const char *hp = kr_hub_path(vm->hubs[i].hub);
        size_t hl = strlen(hp);
        if (req->path_len < hl || memcmp(req->path, hp, hl) != 0)
            continue;
        if (req->path_len == hl) {
            is_hub = 1;
            hub_ws = req->method == KR_M_GET && kr_http_req_header(req, "upgrade", NULL) != NULL;
        } else if (req->path_len == hl + 10 && memcmp(req->path + hl, "/negotiate", 10) == 0) {
            is_hub = 1;
        }
        if (is_hub) {
            const kr_cors_t *own = find_bind(st->hubs, st->nhubs, vm->hubs[i].hub);
            if (own != NULL)
                p = own;
        }
    }
    if (!is_hub && st->nroutes > 0) {
        /* The route that will answer: for a preflight, the one of the method it announces. */
        unsigned bit = acrm ? kr_router_method_bit(acrm, strlen(acrm))
                            : (req->method ? req->method : KR_M_GET);
        kr_route_match_t m;
        if (bit != 0 &&
            kr_router_match(vm->router, bit, req->path, req->path_len, &m) == KR_ROUTE_FOUND) {
            const kr_cors_t *own = find_bind(st->routes, st->nroutes, m.data);
            if (own != NULL)
                p = own;
        }
    }
    if (p == NULL || p == KR_LUA_CORS_OFF)
        return 0;
    if (hub_ws) {
        /* Browsers do not apply CORS to WebSockets, so the server checks: an origin outside
         * the allow-list is refused; no Origin (a non-browser client) passes. */
        if (origin != NULL && !origin_allowed(p, origin, olen) && !same_origin(req, origin, olen)) {
            refuse(req, "WebSocket", "GET", "origin not allowed", origin);
            return 1;
        }
        return 0;
    }
    if (acrm != NULL) {
        preflight(p, req, origin, olen, acrm);
        return 1;
    }
    kr_http_req_add_response_header(req, "Vary", "Origin");
    if (origin != NULL && origin_allowed(p, origin, olen)) {
        add_allow_origin(p, req, origin);
        if (p->expose != NULL)
            kr_http_req_add_response_header(req, "Access-Control-Expose-Headers", p->expose);
    }
    return 0;
}

/* ---- opening ---------------------------------------------------------------------------- */

void kr__lua_open_cors(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    luaL_newmetatable(L, STATE_MT);
    lua_pushcfunction(L, l_state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, POLICY_MT);
    lua_pushcfunction(L, l_policy_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "kr.CorsPolicy");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    lua_createtable(L, 0, 1); /* kr.cors: callable, with kr.cors.policy */
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_cors_policy, 1);
    lua_setfield(L, -2, "policy");
    lua_createtable(L, 0, 1);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_cors_call, 1);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "cors");
}
