/* kr_router.c: the route table (see kr_router.h).
 *
 * A pattern is parsed into segments and inserted into a segment trie. A trie node is one
 * "shape" position: literal children are keyed by their lower-cased text in a small
 * open-addressing hash table, parameter children sit in a short list ordered by precedence
 * (constrained parameter, plain parameter, constrained catch-all, plain catch-all; routes of
 * equal rank keep registration order). Parameter names are not part of the shape, so
 * `/u/{id}` and `/u/{uid}` share a node and each route record keeps its own names.
 *
 * Every node can be an endpoint: it holds one route pointer per method. An optional last
 * parameter `{x?}` registers the same route record at the parameter node and at its parent.
 *
 * Matching walks the path depth first: literal child, then the parameter children in order,
 * backtracking when a branch fails deeper down. A trie node sits at one depth, so it is
 * visited at most once per lookup and the worst case is linear in the size of the trie, never
 * exponential. Endpoints whose shape matches but whose method slot is empty add their methods
 * to an allow mask and the walk goes on, so 405 is only reported when no matching shape has
 * the method. The walk allocates nothing: parameter values point into the caller's path and
 * the match struct doubles as the parameter stack.
 */
#include "kr_router.h"

#include <stdio.h>

#define NMETHODS 7
#define GET_INDEX 0
/* Bounds the recursion of the walk and of kr_router_free (patterns come from scripts). */
#define MAX_SEGMENTS 128
#define MAX_CONSTRAINTS 8

typedef enum cons_kind_e {
    C_INT,   /* long: any signed 64-bit integer */
    C_INT32, /* int: 32-bit, as ASP.NET Core's int constraint */
    C_BOOL,
    C_ALPHA,
    C_GUID,
    C_MINLENGTH,
    C_MAXLENGTH,
    C_LENGTH, /* length(n) is stored as length(n,n) */
    C_MIN,
    C_MAX,
    C_RANGE,
} cons_kind_e;

typedef struct cons_s {
    cons_kind_e kind;
    int64_t a, b;
} cons_t;

typedef enum seg_kind_e {
    SEG_LITERAL,
    SEG_PARAM,
    SEG_CATCHALL,
} seg_kind_e;

/* One parsed pattern segment; text points into the pattern. */
typedef struct seg_s {
    seg_kind_e kind;
    const char *text; /* literal text or parameter name */
    size_t len;
    bool optional;
    unsigned ncons;
    cons_t cons[MAX_CONSTRAINTS];
} seg_t;

typedef struct route_s {
    char *pattern;
    void *data;
    unsigned nnames;
    char *names[KR_ROUTE_MAX_PARAMS];
} route_t;

typedef struct node_s node_t;

struct node_s {
    seg_kind_e kind; /* how this node is reached from its parent (root: SEG_LITERAL) */
    char *lit;       /* literal nodes: lower-cased text */
    size_t lit_len;
    uint32_t hash;
    bool is_int; /* parameter nodes: a constraint makes the value an integer */
    unsigned ncons;
    cons_t cons[MAX_CONSTRAINTS];

    node_t **lits; /* open addressing, capacity a power of two, at most half full */
    uint32_t nlits;
    uint32_t lit_cap;
    node_t **params; /* ordered by param_rank() */
    uint32_t nparams;

    const route_t *slots[NMETHODS];
};

struct kr_router_s {
    node_t *root;
    route_t **routes; /* registration order, for kr_router_foreach and teardown */
    size_t nroutes;
    size_t routes_cap;
};

static const char *const method_names[NMETHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
};

unsigned kr_router_method_bit(const char *name, size_t n)
{
    for (unsigned i = 0; i < NMETHODS; i++) {
        if (strlen(method_names[i]) == n && kr_strncasecmp(name, method_names[i], n) == 0)
            return 1u << i;
    }
    return 0;
}

void kr_router_allow_string(unsigned methods, char *out, size_t outlen)
{
    size_t len = 0;

    if (outlen == 0)
        return;
    out[0] = '\0';
    for (unsigned i = 0; i < NMETHODS; i++) {
        if (!(methods & (1u << i)))
            continue;
        const char *sep = len ? ", " : "";
        size_t need = strlen(sep) + strlen(method_names[i]);
        /* Drop what does not fit whole rather than emit half a method name. */
        if (len + need >= outlen)
            break;
        len += (size_t)snprintf(out + len, outlen - len, "%s%s", sep, method_names[i]);
    }
}

/* Index of a single method bit, -1 for 0, several bits or unknown bits. */
static int method_index(unsigned method)
{
    if (method == 0 || (method & (method - 1)) != 0 || (method & ~(unsigned)KR_M_ALL) != 0)
        return -1;
    return __builtin_ctz(method);
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static inline bool is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool is_hex(unsigned char c)
{
    return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'f');
}

/* FNV-1a over the lower-cased bytes, so the hash agrees with the case-insensitive compare. */
static uint32_t hash_ci(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= lower((unsigned char)s[i]);
        h *= 16777619u;
    }
    return h;
}

/* Signed decimal with an optional sign (as .NET's long.TryParse); false on overflow. */
static bool parse_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    uint64_t v = 0;

    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n)
        return false;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_digit(c))
            return false;
        unsigned d = c - '0';
        if (v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return true;
}

/* Length constraints count characters like ASP.NET, not bytes: here UTF-8 code points. */
static size_t utf8_length(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    }
    return count;
}

static bool is_guid(const char *s, size_t n)
{
    static const size_t groups[] = {8, 4, 4, 4, 12};
    size_t pos = 0;

    if (n != 36)
        return false;
    for (size_t g = 0; g < KR_ARRAY_SIZE(groups); g++) {
        if (g > 0 && s[pos++] != '-')
            return false;
        for (size_t i = 0; i < groups[g]; i++) {
            if (!is_hex((unsigned char)s[pos++]))
                return false;
        }
    }
    return true;
}

/* ---- pattern parsing ---- */

static bool cons_implies_int(cons_kind_e k)
{
    return k == C_INT || k == C_INT32 || k == C_MIN || k == C_MAX || k == C_RANGE;
}

/* Parses "n" or "a,b" (spaces allowed around numbers) into args; returns their count or -1. */
static int parse_args(const char *s, size_t n, int64_t args[2])
{
    int count = 0;
    size_t i = 0;

    for (;;) {
        while (i < n && s[i] == ' ')
            i++;
        size_t start = i;
        while (i < n && s[i] != ',' && s[i] != ' ')
            i++;
        if (count == 2 || !parse_int64(s + start, i - start, &args[count]))
            return -1;
        count++;
        while (i < n && s[i] == ' ')
            i++;
        if (i == n)
            return count;
        if (s[i] != ',')
            return -1;
        i++;
    }
}

/* Parses one constraint name with its optional "(args)" from s[0..n). */
static int parse_constraint(const char *name, size_t nlen, const char *args, size_t alen,
                            bool has_args, cons_t *c, const char **err)
{
    static const struct {
        const char *name;
        cons_kind_e kind;
        int nargs; /* 0, 1, 2, or 3 for "1 or 2" */
    } table[] = {
        {"int", C_INT32, 0},
        {"long", C_INT, 0},
        {"bool", C_BOOL, 0},
        {"alpha", C_ALPHA, 0},
        {"guid", C_GUID, 0},
        {"minlength", C_MINLENGTH, 1},
        {"maxlength", C_MAXLENGTH, 1},
        {"length", C_LENGTH, 3},
        {"min", C_MIN, 1},
        {"max", C_MAX, 1},
        {"range", C_RANGE, 2},
    };
    int64_t v[2] = {0, 0};

    for (size_t i = 0; i < KR_ARRAY_SIZE(table); i++) {
        if (strlen(table[i].name) != nlen || kr_strncasecmp(name, table[i].name, nlen) != 0)
            continue;
        int got = has_args ? parse_args(args, alen, v) : 0;
        int want = table[i].nargs;
        if (got < 0 || (want == 3 ? (got != 1 && got != 2) : got != want)) {
            *err = "invalid route constraint arguments";
            return KR_EINVAL;
        }
        c->kind = table[i].kind;
        c->a = v[0];
        c->b = got == 2 ? v[1] : v[0];
        bool is_length = c->kind == C_MINLENGTH || c->kind == C_MAXLENGTH || c->kind == C_LENGTH;
        if ((is_length && c->a < 0) || c->a > c->b) {
            *err = "invalid route constraint arguments";
            return KR_EINVAL;
        }
        return 0;
    }
    *err = "unknown route constraint";
    return KR_EINVAL;
}

static bool is_name_char(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '_' || c == '-' || c == '.';
}

/* Parses the inside of "{...}": [*|**]name[:constraint[(args)]]...[?]. */
static int parse_param(const char *s, size_t n, seg_t *seg, const char **err)
{
    size_t i = 0;

    seg->kind = SEG_PARAM;
    if (i < n && s[i] == '*') {
        seg->kind = SEG_CATCHALL;
        i++;
        if (i < n && s[i] == '*') /* {**x} only differs from {*x} when generating URLs */
            i++;
    }
    size_t start = i;
    while (i < n && is_name_char((unsigned char)s[i]))
        i++;
    seg->text = s + start;
    seg->len = i - start;
    if (seg->len == 0) {
        *err = "empty route parameter name";
        return KR_EINVAL;
    }
    while (i < n && s[i] == ':') {
        size_t cstart = ++i;
        while (i < n && is_alpha((unsigned char)s[i]))
            i++;
        size_t cend = i, astart = 0, alen = 0;
        bool has_args = false;
        if (i < n && s[i] == '(') {
            astart = ++i;
            while (i < n && s[i] != ')')
                i++;
            if (i == n) {
                *err = "unclosed '(' in route constraint";
                return KR_EINVAL;
            }
            alen = i - astart;
            has_args = true;
            i++;
        }
        if (cend == cstart) {
            *err = "empty route constraint";
            return KR_EINVAL;
        }
        if (seg->ncons == MAX_CONSTRAINTS) {
            *err = "too many route constraints";
            return KR_EINVAL;
        }
        int rc = parse_constraint(s + cstart, cend - cstart, s + astart, alen, has_args,
                                  &seg->cons[seg->ncons], err);
        if (rc < 0)
            return rc;
        seg->ncons++;
    }
    if (i < n && s[i] == '?') {
        if (seg->kind == SEG_CATCHALL) {
            *err = "a catch-all parameter cannot be optional";
            return KR_EINVAL;
        }
        seg->optional = true;
        i++;
    }
    if (i < n) {
        *err = s[i] == '=' ? "route parameter default values are not supported"
                           : "invalid character in route parameter";
        return KR_EINVAL;
    }
    return 0;
}

static int parse_segment(const char *s, size_t n, seg_t *seg, const char **err)
{
    const char *open = memchr(s, '{', n);
    const char *close = memchr(s, '}', n);

    memset(seg, 0, sizeof(*seg));
    if (open == NULL && close == NULL) {
        if (memchr(s, '?', n) != NULL || memchr(s, '#', n) != NULL) {
            *err = "'?' and '#' are not allowed in a route pattern";
            return KR_EINVAL;
        }
        seg->kind = SEG_LITERAL;
        seg->text = s;
        seg->len = n;
        return 0;
    }
    if (close == NULL) {
        *err = "unclosed '{' in route pattern";
        return KR_EINVAL;
    }
    if (open == NULL) {
        *err = "unmatched '}' in route pattern";
        return KR_EINVAL;
    }
    /* ASP.NET allows "{a}.{b}" or "file{x}"; we keep one parameter per segment. */
    if (open != s || close != s + n - 1 || memchr(s + 1, '{', n - 1) != NULL) {
        *err = "a route parameter must be a whole segment";
        return KR_EINVAL;
    }
    return parse_param(s + 1, n - 2, seg, err);
}

/* Splits and validates the pattern; *segs is kr_malloc'ed (NULL when there are none). */
static int parse_pattern(const char *pattern, seg_t **segs, size_t *nsegs, const char **err)
{
    size_t len = strlen(pattern), count = 0;

    *segs = NULL;
    *nsegs = 0;
    if (len == 0 || pattern[0] != '/') {
        *err = "route pattern must start with '/'";
        return KR_EINVAL;
    }
    const char *rest = pattern + 1;
    size_t rlen = len - 1;
    /* A trailing slash is ignored, as requests ignore theirs; "//" is left alone so that it
     * fails below as an empty segment. */
    if (rlen > 1 && rest[rlen - 1] == '/')
        rlen--;
    if (rlen == 0)
        return 0;
    for (size_t i = 0; i < rlen; i++)
        count += rest[i] == '/';
    count++;
    if (count > MAX_SEGMENTS) {
        *err = "route pattern has too many segments";
        return KR_EINVAL;
    }

    seg_t *out = kr_malloc(count * sizeof(seg_t));
    size_t nparams = 0, pos = 0;
    int rc = 0;
    for (size_t k = 0; k < count; k++) {
        const char *slash = memchr(rest + pos, '/', rlen - pos);
        size_t slen = slash ? (size_t)(slash - (rest + pos)) : rlen - pos;
        if (slen == 0) {
            *err = "empty segment in route pattern";
            rc = KR_EINVAL;
            break;
        }
        rc = parse_segment(rest + pos, slen, &out[k], err);
        if (rc < 0)
            break;
        pos += slen + 1;
        if (out[k].kind == SEG_LITERAL)
            continue;
        if (out[k].kind == SEG_CATCHALL && k + 1 != count) {
            *err = "a catch-all parameter must be the last segment";
            rc = KR_EINVAL;
            break;
        }
        if (out[k].optional && k + 1 != count) {
            *err = "an optional parameter must be the last segment";
            rc = KR_EINVAL;
            break;
        }
        if (nparams == KR_ROUTE_MAX_PARAMS) {
            *err = "too many route parameters";
            rc = KR_EINVAL;
            break;
        }
        /* ASP.NET compares parameter names case-insensitively too. */
        for (size_t j = 0; j < k; j++) {
            if (out[j].kind != SEG_LITERAL && out[j].len == out[k].len &&
                kr_strncasecmp(out[j].text, out[k].text, out[k].len) == 0) {
                *err = "duplicate route parameter name";
                rc = KR_EINVAL;
                break;
            }
        }
        if (rc < 0)
            break;
        nparams++;
    }
    if (rc < 0) {
        kr_free(out);
        return rc;
    }
    *segs = out;
    *nsegs = count;
    return 0;
}

/* ---- the trie ---- */

/* Lower rank is tried first. */
static int param_rank(seg_kind_e kind, unsigned ncons)
{
    return (kind == SEG_CATCHALL ? 2 : 0) + (ncons == 0 ? 1 : 0);
}

static node_t *node_new(seg_kind_e kind)
{
    node_t *n = kr_calloc(1, sizeof(node_t));
    n->kind = kind;
    return n;
}

static void node_free(node_t *n)
{
    for (uint32_t i = 0; i < n->lit_cap; i++) {
        if (n->lits[i] != NULL)
            node_free(n->lits[i]);
    }
    for (uint32_t i = 0; i < n->nparams; i++)
        node_free(n->params[i]);
    kr_free(n->lits);
    kr_free(n->params);
    kr_free(n->lit);
    kr_free(n);
}

static node_t *lit_find(const node_t *n, const char *s, size_t len, uint32_t hash)
{
    if (n->nlits == 0)
        return NULL;
    uint32_t mask = n->lit_cap - 1;
    for (uint32_t i = hash & mask;; i = (i + 1) & mask) {
        node_t *c = n->lits[i];
        if (c == NULL)
            return NULL;
        if (c->hash == hash && c->lit_len == len && kr_strncasecmp(c->lit, s, len) == 0)
            return c;
    }
}

static void lit_put(node_t **table, uint32_t cap, node_t *c)
{
    uint32_t mask = cap - 1;
    uint32_t i = c->hash & mask;
    while (table[i] != NULL)
        i = (i + 1) & mask;
    table[i] = c;
}

static void lit_insert(node_t *n, node_t *c)
{
    if ((n->nlits + 1) * 2 > n->lit_cap) {
        uint32_t cap = n->lit_cap ? n->lit_cap * 2 : 4;
        node_t **table = kr_calloc(cap, sizeof(node_t *));
        for (uint32_t i = 0; i < n->lit_cap; i++) {
            if (n->lits[i] != NULL)
                lit_put(table, cap, n->lits[i]);
        }
        kr_free(n->lits);
        n->lits = table;
        n->lit_cap = cap;
    }
    lit_put(n->lits, n->lit_cap, c);
    n->nlits++;
}

static bool same_constraints(const node_t *n, const seg_t *seg)
{
    if (n->ncons != seg->ncons)
        return false;
    for (unsigned i = 0; i < n->ncons; i++) {
        if (n->cons[i].kind != seg->cons[i].kind || n->cons[i].a != seg->cons[i].a ||
            n->cons[i].b != seg->cons[i].b)
            return false;
    }
    return true;
}

/* The child of n for seg, created when create is set; NULL if absent and !create. */
static node_t *child_for(node_t *n, const seg_t *seg, bool create)
{
    if (seg->kind == SEG_LITERAL) {
        uint32_t hash = hash_ci(seg->text, seg->len);
        node_t *c = lit_find(n, seg->text, seg->len, hash);
        if (c != NULL || !create)
            return c;
        c = node_new(SEG_LITERAL);
        c->lit = kr_strndup(seg->text, seg->len);
        for (size_t i = 0; i < seg->len; i++)
            c->lit[i] = (char)lower((unsigned char)c->lit[i]);
        c->lit_len = seg->len;
        c->hash = hash;
        lit_insert(n, c);
        return c;
    }

    for (uint32_t i = 0; i < n->nparams; i++) {
        if (n->params[i]->kind == seg->kind && same_constraints(n->params[i], seg))
            return n->params[i];
    }
    if (!create)
        return NULL;
    node_t *c = node_new(seg->kind);
    c->ncons = seg->ncons;
    memcpy(c->cons, seg->cons, sizeof(c->cons));
    for (unsigned i = 0; i < c->ncons; i++)
        c->is_int = c->is_int || cons_implies_int(c->cons[i].kind);

    int rank = param_rank(c->kind, c->ncons);
    uint32_t at = 0;
    while (at < n->nparams && param_rank(n->params[at]->kind, n->params[at]->ncons) <= rank)
        at++;
    n->params = kr_realloc(n->params, (n->nparams + 1) * sizeof(node_t *));
    memmove(&n->params[at + 1], &n->params[at], (n->nparams - at) * sizeof(node_t *));
    n->params[at] = c;
    n->nparams++;
    return c;
}

/* Walks segs[0..nsegs) from the root; NULL when a node is missing and !create. */
static node_t *path_for(kr_router_t *r, const seg_t *segs, size_t nsegs, bool create)
{
    node_t *n = r->root;
    for (size_t i = 0; i < nsegs && n != NULL; i++)
        n = child_for(n, &segs[i], create);
    return n;
}

static bool slots_taken(const node_t *n, unsigned methods)
{
    if (n == NULL)
        return false;
    for (unsigned i = 0; i < NMETHODS; i++) {
        if ((methods & (1u << i)) && n->slots[i] != NULL)
            return true;
    }
    return false;
}

static void slots_set(node_t *n, unsigned methods, const route_t *route)
{
    for (unsigned i = 0; i < NMETHODS; i++) {
        if (methods & (1u << i))
            n->slots[i] = route;
    }
}

kr_router_t *kr_router_new(void)
{
    kr_router_t *r = kr_calloc(1, sizeof(kr_router_t));
    r->root = node_new(SEG_LITERAL);
    return r;
}

void kr_router_free(kr_router_t *r)
{
    if (r == NULL)
        return;
    node_free(r->root);
    for (size_t i = 0; i < r->nroutes; i++) {
        route_t *route = r->routes[i];
        for (unsigned j = 0; j < route->nnames; j++)
            kr_free(route->names[j]);
        kr_free(route->pattern);
        kr_free(route);
    }
    kr_free(r->routes);
    kr_free(r);
}

int kr_router_add(kr_router_t *r, unsigned methods, const char *pattern, void *data,
                  const char **err)
{
    const char *dummy;
    seg_t *segs;
    size_t nsegs;

    if (err == NULL)
        err = &dummy;
    if (methods == 0 || (methods & ~(unsigned)KR_M_ALL) != 0) {
        *err = "invalid route methods";
        return KR_EINVAL;
    }
    int rc = parse_pattern(pattern, &segs, &nsegs, err);
    if (rc < 0)
        return rc;

    /* Check both endpoints before creating anything, so a refused route leaves no trace. */
    bool optional = nsegs > 0 && segs[nsegs - 1].optional;
    if (slots_taken(path_for(r, segs, nsegs, false), methods) ||
        (optional && slots_taken(path_for(r, segs, nsegs - 1, false), methods))) {
        kr_free(segs);
        *err = "duplicate route";
        return KR_EINVAL;
    }

    route_t *route = kr_calloc(1, sizeof(route_t));
    route->pattern = kr_strdup(pattern);
    route->data = data;
    for (size_t i = 0; i < nsegs; i++) {
        if (segs[i].kind != SEG_LITERAL)
            route->names[route->nnames++] = kr_strndup(segs[i].text, segs[i].len);
    }
    slots_set(path_for(r, segs, nsegs, true), methods, route);
    if (optional)
        slots_set(path_for(r, segs, nsegs - 1, true), methods, route);
    kr_free(segs);

    if (r->nroutes == r->routes_cap) {
        r->routes_cap = r->routes_cap ? r->routes_cap * 2 : 16;
        r->routes = kr_realloc(r->routes, r->routes_cap * sizeof(route_t *));
    }
    r->routes[r->nroutes++] = route;
    return 0;
}

/* ---- matching ---- */

typedef struct walk_s {
    unsigned method;
    int midx;
    unsigned allow;
    kr_route_match_t *out;
    const route_t *found;
} walk_t;

static bool check_constraints(const node_t *n, const char *v, size_t len, int64_t *iv)
{
    int64_t x = 0;
    size_t chars = SIZE_MAX;

    if (n->is_int) {
        if (!parse_int64(v, len, &x))
            return false;
        *iv = x;
    }
    for (unsigned i = 0; i < n->ncons; i++) {
        const cons_t *c = &n->cons[i];
        bool ok = true;
        switch (c->kind) {
        case C_INT:
            break;
        case C_INT32:
            ok = x >= INT32_MIN && x <= INT32_MAX;
            break;
        case C_BOOL:
            ok = (len == 4 && kr_strncasecmp(v, "true", 4) == 0) ||
                 (len == 5 && kr_strncasecmp(v, "false", 5) == 0);
            break;
        case C_ALPHA:
            for (size_t j = 0; j < len && ok; j++)
                ok = is_alpha((unsigned char)v[j]);
            break;
        case C_GUID:
            ok = is_guid(v, len);
            break;
        case C_MINLENGTH:
        case C_MAXLENGTH:
        case C_LENGTH:
            if (chars == SIZE_MAX)
                chars = utf8_length(v, len);
            if (c->kind == C_MINLENGTH)
                ok = (int64_t)chars >= c->a;
            else if (c->kind == C_MAXLENGTH)
                ok = (int64_t)chars <= c->a;
            else
                ok = (int64_t)chars >= c->a && (int64_t)chars <= c->b;
            break;
        case C_MIN:
            ok = x >= c->a;
            break;
        case C_MAX:
            ok = x <= c->a;
            break;
        case C_RANGE:
            ok = x >= c->a && x <= c->b;
            break;
        }
        if (!ok)
            return false;
    }
    return true;
}

/* The path ends at n: take its route for the method, or remember what it would allow. */
static bool endpoint(const node_t *n, walk_t *w)
{
    const route_t *route = w->midx >= 0 ? n->slots[w->midx] : NULL;
    if (route == NULL && w->method == KR_M_HEAD)
        route = n->slots[GET_INDEX];
    if (route != NULL) {
        w->found = route;
        return true;
    }
    for (unsigned i = 0; i < NMETHODS; i++) {
        if (n->slots[i] != NULL)
            w->allow |= 1u << i;
    }
    return false;
}

static bool push_param(const node_t *n, const char *v, size_t len, walk_t *w)
{
    int64_t iv = 0;
    if (!check_constraints(n, v, len, &iv))
        return false;
    kr_route_match_t *out = w->out;
    /* The trie path only holds the parameters of one route, which parse_pattern bounded. */
    KR_ASSERT(out->nparams < KR_ROUTE_MAX_PARAMS);
    kr_route_param_t *p = &out->params[out->nparams++];
    p->name = NULL;
    p->value = v;
    p->value_len = len;
    p->is_int = n->is_int;
    p->int_value = iv;
    return true;
}

/* Tries the catch-all children of n against rest[0..len) (empty at the end of the path). */
static bool catchalls(const node_t *n, const char *rest, size_t len, walk_t *w)
{
    for (uint32_t i = 0; i < n->nparams; i++) {
        const node_t *c = n->params[i];
        if (c->kind != SEG_CATCHALL || !push_param(c, rest, len, w))
            continue;
        if (endpoint(c, w))
            return true;
        w->out->nparams--;
    }
    return false;
}

/* s[0..len) is the rest of the path after a '/'; at_end means no segment is left. */
static bool walk(const node_t *n, const char *s, size_t len, bool at_end, walk_t *w)
{
    if (at_end)
        return endpoint(n, w) || catchalls(n, s, 0, w);

    const char *slash = memchr(s, '/', len);
    size_t seglen = slash ? (size_t)(slash - s) : len;
    const char *next = slash ? slash + 1 : s + len;
    size_t next_len = slash ? len - seglen - 1 : 0;
    bool next_end = slash == NULL;

    if (n->nlits > 0 && seglen > 0) {
        const node_t *c = lit_find(n, s, seglen, hash_ci(s, seglen));
        if (c != NULL && walk(c, next, next_len, next_end, w))
            return true;
    }
    for (uint32_t i = 0; i < n->nparams; i++) {
        const node_t *c = n->params[i];
        if (c->kind == SEG_CATCHALL) {
            /* Catch-alls rank last, so the rest of the list is catch-alls too. */
            return catchalls(n, s, len, w);
        }
        if (seglen == 0 || !push_param(c, s, seglen, w))
            continue;
        if (walk(c, next, next_len, next_end, w))
            return true;
        w->out->nparams--;
    }
    return false;
}

kr_route_result_e kr_router_match(const kr_router_t *r, unsigned method, const char *path,
                                  size_t len, kr_route_match_t *out)
{
    walk_t w = {.method = method, .midx = method_index(method), .out = out};

    out->data = NULL;
    out->pattern = NULL;
    out->allow = 0;
    out->nparams = 0;
    if (len == 0 || path[0] != '/')
        return KR_ROUTE_NOT_FOUND;
    /* ASP.NET ignores one trailing slash: "/a/b/" is "/a/b" (and "/" stays the root). */
    if (len > 1 && path[len - 1] == '/')
        len--;

    if (walk(r->root, path + 1, len - 1, len == 1, &w)) {
        out->data = w.found->data;
        out->pattern = w.found->pattern;
        /* A route reached through its parent (optional parameter absent) has one name
         * more than the path produced values; the names are in path order either way. */
        for (unsigned i = 0; i < out->nparams; i++)
            out->params[i].name = w.found->names[i];
        return KR_ROUTE_FOUND;
    }
    out->nparams = 0;
    if (w.allow == 0)
        return KR_ROUTE_NOT_FOUND;
    if (w.allow & KR_M_GET)
        w.allow |= KR_M_HEAD;
    out->allow = w.allow;
    return KR_ROUTE_METHOD_NOT_ALLOWED;
}

void kr_router_foreach(const kr_router_t *r, void (*fn)(void *data, void *ud), void *ud)
{
    for (size_t i = 0; i < r->nroutes; i++)
        fn(r->routes[i]->data, ud);
}
