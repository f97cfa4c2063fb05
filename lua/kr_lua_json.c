/* kr_lua_json.c: Lua <-> JSON (see kr_lua_json.h for the rules scripts rely on).
 *
 * Encode: a recursive walk over the Lua value that appends to a kr_sbuf_t. It uses only Lua
 * calls that cannot raise (lua_type, lua_next, lua_rawgeti, lua_rawlen, lua_tolstring on
 * strings, lua_checkstack) and formats numbers itself, because lua_tolstring on a number
 * allocates and would also corrupt a lua_next traversal when applied to a key.
 * Decode: cJSON builds a tree (malloc'd, outside the VM's memory cap), then a C function run
 * under lua_pcall turns it into Lua values; whatever happens in there, the tree is freed after.
 */
#include "kr_lua_json.h"
#include "kr_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>

/* Registry keys: the addresses are the keys (lua_rawgetp never allocates, so encode can look the
 * marker up without any risk of raising). */
static const char array_mt_key = 'a';   /* "kr.json.array_mt" */
static const char empty_array_key = 'e'; /* the light userdata behind kr.json.empty_array */

static const char msg_nomem[] = "not enough memory";

static int opts_depth(const kr_json_opts_t *opts)
{
    int d = opts && opts->max_depth > 0 ? opts->max_depth : KR_JSON_DEFAULT_MAX_DEPTH;
    return d > KR_JSON_DEPTH_LIMIT ? KR_JSON_DEPTH_LIMIT : d;
}

/* ---- sentinels and the array marker ---------------------------------------------------- */

void kr_json_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

int kr_json_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

void kr_json_push_empty_array(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&empty_array_key);
}

void kr_json_push_array_mt(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    /* __name makes tostring() show "kr.json.array: 0x..." when debugging scripts. */
    lua_pushliteral(L, "kr.json.array");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
}

int kr_json_is_marked_array(lua_State *L, int idx)
{
    int marked;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || !lua_checkstack(L, 2) || !lua_getmetatable(L, idx))
        return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return marked;
}

/* ---- encode ---------------------------------------------------------------------------- */

typedef struct enc_s {
    lua_State *L;
    kr_sbuf_t *sb;
    int max_depth;
    int mt_idx;         /* stack slot holding the array marker (or nil if never created) */
    const void **path;  /* tables being encoded, outermost first: the cycle check */
    const char *err;
} enc_t;

static int enc_fail(enc_t *e, int rc, const char *msg)
{
    e->err = msg;
    return rc;
}

static void put_int(kr_sbuf_t *sb, lua_Integer v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    /* Negate in unsigned arithmetic so LUA_MININTEGER does not overflow. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    kr_sbuf_append(sb, p, (size_t)(tmp + sizeof(tmp) - p));
}

static int put_float(enc_t *e, double d)
{
    char tmp[40];
    int n = 0;
    if (!isfinite(d))
        return enc_fail(e, KR_EINVAL, "cannot encode NaN or infinity");
    /* Shortest precision that reads back exactly; 17 significant digits always do. */
    for (int prec = 14; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (prec == 17 || strtod(tmp, NULL) == d)
            break;
    }
    /* A script may have called os.setlocale(): printf and strtod then agree on a decimal comma,
     * which JSON does not allow. Anything that is not a digit, sign or exponent is the point. */
    for (int i = 0; i < n; i++) {
        char c = tmp[i];
        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' || c == 'E'))
            tmp[i] = '.';
    }
    kr_sbuf_append(e->sb, tmp, (size_t)n);
    return 0;
}


static int encode_value(enc_t *e, int idx, int depth);

/* Keys 1..n and nothing else, checked in one lua_next pass that stops at the first other key
 * (objects with string keys, the common message shape, stop at once). */
static int is_sequence(lua_State *L, int idx, lua_Unsigned n)
{
    lua_Unsigned count = 0;
    if (n == 0)
        return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_Integer k;
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || (lua_Unsigned)k > n) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    /* n distinct integer keys all within 1..n are exactly 1..n. */
    return count == n;
}

static int encode_array(enc_t *e, int idx, lua_Unsigned n, int depth)
{
    lua_State *L = e->L;
    kr_sbuf_putc(e->sb, '[');
    for (lua_Unsigned i = 1; i <= n; i++) {
        int rc;
        if (i > 1)
            kr_sbuf_putc(e->sb, ',');
        lua_rawgeti(L, idx, (lua_Integer)i);
        rc = encode_value(e, lua_gettop(L), depth);
        if (rc != 0)
            return rc; /* kr_json_encode restores the stack */
        lua_pop(L, 1);
    }
    kr_sbuf_putc(e->sb, ']');
    return 0;
}

static int encode_object(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    int first = 1;
    kr_sbuf_putc(e->sb, '{');
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int rc;
        if (!first)
            kr_sbuf_putc(e->sb, ',');
        first = 0;
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            kr_json_write_string(e->sb, k, klen);
        } else if (lua_isinteger(L, -2)) {
            kr_sbuf_putc(e->sb, '"');
            put_int(e->sb, lua_tointeger(L, -2));
            kr_sbuf_putc(e->sb, '"');
        } else {
            return enc_fail(e, KR_EINVAL, "table key must be a string or an integer");
        }
        kr_sbuf_putc(e->sb, ':');
        rc = encode_value(e, lua_gettop(L), depth);
        if (rc != 0)
            return rc;
        lua_pop(L, 1);
    }
    kr_sbuf_putc(e->sb, '}');
    return 0;
}

/* depth is the number of tables already open around this one. */
static int encode_table(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    const void *p = lua_topointer(L, idx);
    int marked = 0;

    if (depth >= e->max_depth)
        return enc_fail(e, KR_ELIMIT, "nesting too deep");
    for (int i = 0; i < depth; i++) {
        if (e->path[i] == p)
            return enc_fail(e, KR_EINVAL, "circular reference");
    }
    e->path[depth] = p;
    /* This level holds a key and a value; the checks below use two more slots briefly. */
    if (!lua_checkstack(L, 4))
        return enc_fail(e, KR_ENOMEM, msg_nomem);

    if (lua_getmetatable(L, idx)) {
        marked = lua_rawequal(L, -1, e->mt_idx);
        lua_pop(L, 1);
    }
    if (marked)
        return encode_array(e, idx, lua_rawlen(L, idx), depth + 1);
    lua_Unsigned n = lua_rawlen(L, idx);
    if (is_sequence(L, idx, n))
        return encode_array(e, idx, n, depth + 1);
    return encode_object(e, idx, depth + 1);
}

static int encode_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        kr_sbuf_append(e->sb, "null", 4);
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            kr_sbuf_append(e->sb, "true", 4);
        else
            kr_sbuf_append(e->sb, "false", 5);
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            put_int(e->sb, lua_tointeger(L, idx));
            return 0;
        }
        return put_float(e, (double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        kr_json_write_string(e->sb, s, len);
        return 0;
    }
    case LUA_TTABLE:
        return encode_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA: {
        const void *p = lua_touserdata(L, idx);
        if (p == NULL) {
            kr_sbuf_append(e->sb, "null", 4);
            return 0;
        }
        if (p == &empty_array_key) {
            kr_sbuf_append(e->sb, "[]", 2);
            return 0;
        }
        return enc_fail(e, KR_EINVAL, "cannot encode a userdata");
    }
    case LUA_TFUNCTION:
        return enc_fail(e, KR_EINVAL, "cannot encode a function");
    case LUA_TTHREAD:
        return enc_fail(e, KR_EINVAL, "cannot encode a thread");
    default:
        return enc_fail(e, KR_EINVAL, "cannot encode a userdata");
    }
}

int kr_json_encode(lua_State *L, int idx, kr_sbuf_t *sb, const kr_json_opts_t *opts,
                   const char **err)
{
    const void *path_local[KR_JSON_DEFAULT_MAX_DEPTH];
    int top = lua_gettop(L);
    enc_t e = {.L = L, .sb = sb, .max_depth = opts_depth(opts), .path = path_local};
    int rc;

    idx = lua_absindex(L, idx);
    *err = NULL;
    if (e.max_depth > (int)KR_ARRAY_SIZE(path_local))
        e.path = kr_malloc(sizeof(*e.path) * (size_t)e.max_depth);
    if (!lua_checkstack(L, 2)) {
        rc = enc_fail(&e, KR_ENOMEM, msg_nomem);
        goto fail;
    }
    /* Fetch the marker once per call; nil when no array was ever marked in this state. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    e.mt_idx = lua_gettop(L);
    rc = encode_value(&e, idx, 0);
    if (rc != 0)
        goto fail;
    lua_settop(L, top);
    if (e.path != path_local)
        kr_free(e.path);
    return 0;

fail:
    lua_settop(L, top);
    if (e.path != path_local)
        kr_free(e.path);
    *err = e.err;
    return rc;
}

/* ---- decode ---------------------------------------------------------------------------- */

typedef struct dec_s {
    const cJSON *root;
    const char *src; /* the JSON text, rescanned for number tokens */
    size_t len;
    size_t pos;      /* where the next number token search starts */
    int max_depth;
    int rc;          /* set when conversion stops on its own (not a Lua error) */
    const char *err;
} dec_t;

/* The text of the next number token. cJSON keeps only a double, which cannot tell 1 from 1.0
 * or hold 2^63-1; the tree is visited in document order, so number items meet their tokens in
 * order. Strings (keys included) are skipped: a '-' or digit elsewhere starts a number. */
static void next_number(dec_t *d, const char **tok, size_t *toklen)
{
    const char *s = d->src;
    size_t i = d->pos, n = d->len, start;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if (s[i] == '\\')
                    i++;
            }
            i++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9'))
            break;
        i++;
    }
    /* The characters cJSON hands to strtod; a successful parse consumed all of them. */
    for (start = i; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'))
            break;
    }
    d->pos = i;
    *tok = s + start;
    *toklen = i - start;
}

static void push_number(lua_State *L, dec_t *d, const cJSON *item)
{
    const char *tok;
    size_t len;
    char buf[32];
    if (d->src == NULL) {
        /* No source text (kr_json_push_cjson): an integral value that a double holds exactly
         * becomes an integer. */
        double v = item->valuedouble;
        if (v == (double)(int64_t)v && v >= -9007199254740992.0 && v <= 9007199254740992.0) {
            lua_pushinteger(L, (lua_Integer)v);
            return;
        }
        lua_pushnumber(L, (lua_Number)v);
        return;
    }
    next_number(d, &tok, &len);
    if (len > 0 && len < sizeof(buf) && !memchr(tok, '.', len) && !memchr(tok, 'e', len)
        && !memchr(tok, 'E', len)) {
        char *end;
        long long v;
        memcpy(buf, tok, len);
        buf[len] = '\0';
        errno = 0;
        v = strtoll(buf, &end, 10);
        if (errno == 0 && *end == '\0') {
            lua_pushinteger(L, (lua_Integer)v);
            return;
        }
    }
    lua_pushnumber(L, (lua_Number)item->valuedouble);
}

static int count_children(const cJSON *item)
{
    int n = 0;
    for (const cJSON *c = item->child; c; c = c->next)
        n++;
    return n;
}

/* depth is the number of containers already open around item. May raise (memory). */
/* A string of the tree; "\u0000" escapes were kept as C0 80 (kr_json_nul_protect). Runs
 * under lua_pcall (convert), so the buffer is Lua's own and a memory error leaks nothing. */
static void push_string(lua_State *L, const char *s)
{
    if (s == NULL) {
        lua_pushliteral(L, "");
        return;
    }
    size_t len = strlen(s);
    if (memchr(s, 0xC0, len) == NULL) {
        lua_pushlstring(L, s, len);
        return;
    }
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len);
    memcpy(p, s, len);
    luaL_pushresultsize(&b, kr_json_nul_restore(p, len));
}

static int push_item(lua_State *L, dec_t *d, const cJSON *item, int depth)
{
    switch (item->type & 0xFF) {
    case cJSON_False:
        lua_pushboolean(L, 0);
        return 0;
    case cJSON_True:
        lua_pushboolean(L, 1);
        return 0;
    case cJSON_NULL:
        lua_pushlightuserdata(L, NULL);
        return 0;
    case cJSON_Number:
        push_number(L, d, item);
        return 0;
    case cJSON_String:
        push_string(L, item->valuestring);
        return 0;
    case cJSON_Array: {
        lua_Integer i = 0;
        if (depth >= d->max_depth)
            goto too_deep;
        luaL_checkstack(L, 3, "JSON nesting");
        lua_createtable(L, count_children(item), 0);
        lua_pushvalue(L, 1); /* the array marker, see convert() */
        lua_setmetatable(L, -2);
        for (const cJSON *c = item->child; c; c = c->next) {
            if (push_item(L, d, c, depth + 1) != 0)
                return -1;
            lua_rawseti(L, -2, ++i);
        }
        return 0;
    }
    case cJSON_Object:
        if (depth >= d->max_depth)
            goto too_deep;
        luaL_checkstack(L, 3, "JSON nesting");
        lua_createtable(L, 0, count_children(item));
        for (const cJSON *c = item->child; c; c = c->next) {
            push_string(L, c->string);
            if (push_item(L, d, c, depth + 1) != 0)
                return -1;
            lua_rawset(L, -3);
        }
        return 0;
    default:
        /* cJSON_Raw and cJSON_Invalid are never produced by the parser. */
        d->rc = KR_EINVAL;
        d->err = "unexpected JSON value";
        return -1;
    }

too_deep:
    d->rc = KR_ELIMIT;
    d->err = "nesting too deep";
    return -1;
}

/* Runs under lua_pcall: every Lua allocation it makes may raise. */
static int convert(lua_State *L)
{
    dec_t *d = lua_touserdata(L, 1);
    lua_settop(L, 0);
    kr_json_push_array_mt(L); /* slot 1 for the whole conversion */
    if (push_item(L, d, d->root, 0) != 0)
        return 0;
    return 1;
}

/* When cJSON fails, tell "too deep" apart from bad syntax: count the containers open at the
 * point of failure (cJSON also stops at its own nesting limit). */
static int too_deep_before(const char *s, size_t n, int max_depth)
{
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if (s[i] == '\\')
                    i++;
            }
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return 1;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

static int is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int kr_json_decode(lua_State *L, const char *s, size_t len, const kr_json_opts_t *opts,
                   char *errbuf, size_t errlen)
{
    dec_t d = {.src = s, .len = len, .max_depth = opts_depth(opts)};
    cJSON *root = NULL;
    const char *end = NULL;
    size_t off;
    int rc, status;

    if (errlen)
        errbuf[0] = '\0';
    /* "\u0000" inside strings survives as C0 80 (kr_json_nul_protect); push_string restores
     * it. The number scan (next_number) reads the same protected text, so tokens line up. */
    char *protected_copy = kr_json_nul_protect(s, &len);
    if (protected_copy != NULL)
        s = d.src = protected_copy;
    d.len = len;
    if (len == 0) {
        rc = KR_EINVAL;
        snprintf(errbuf, errlen, "invalid JSON at offset 0");
        goto fail;
    }
    /* require_null_terminated is 0 on purpose: cJSON 1.7.15 then demands a NUL inside the
     * given length, which a request body does not have. The trailing check is done below. */
    root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (root == NULL) {
        off = end ? (size_t)(end - s) : 0;
        rc = KR_EINVAL;
        if (too_deep_before(s, off + 1 <= len ? off + 1 : len, d.max_depth)) {
            rc = KR_ELIMIT;
            snprintf(errbuf, errlen, "nesting too deep");
        } else {
            snprintf(errbuf, errlen, "invalid JSON at offset %zu", off);
        }
        goto fail;
    }
    for (off = (size_t)(end - s); off < len && is_json_space(s[off]); off++)
        ;
    if (off < len) {
        rc = KR_EINVAL;
        snprintf(errbuf, errlen, "invalid JSON at offset %zu", off);
        goto fail;
    }

    d.root = root;
    if (!lua_checkstack(L, 3)) {
        rc = KR_ENOMEM;
        snprintf(errbuf, errlen, "%s", msg_nomem);
        goto fail;
    }
    lua_pushcfunction(L, convert);
    lua_pushlightuserdata(L, &d);
    status = lua_pcall(L, 1, 1, 0);
    if (status != LUA_OK) {
        rc = status == LUA_ERRMEM ? KR_ENOMEM : KR_ESCRIPT;
        /* lua_tostring only on a string: converting anything else could raise. */
        snprintf(errbuf, errlen, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error in JSON decode");
        lua_pop(L, 1);
        goto fail;
    }
    if (d.rc != 0) {
        rc = d.rc;
        snprintf(errbuf, errlen, "%s", d.err);
        lua_pop(L, 1);
        goto fail;
    }
    cJSON_Delete(root);
    kr_free(protected_copy);
    return 0;

fail:
    cJSON_Delete(root);
    kr_free(protected_copy);
    return rc;
}

int kr_json_push_cjson(lua_State *L, const cJSON *node, const kr_json_opts_t *opts,
                       char *errbuf, size_t errlen)
{
    dec_t d = {.root = node, .max_depth = opts_depth(opts)};
    if (errlen)
        errbuf[0] = '\0';
    if (!lua_checkstack(L, 3)) {
        snprintf(errbuf, errlen, "%s", msg_nomem);
        return KR_ENOMEM;
    }
    lua_pushcfunction(L, convert);
    lua_pushlightuserdata(L, &d);
    int status = lua_pcall(L, 1, 1, 0);
    if (status != LUA_OK) {
        snprintf(errbuf, errlen, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error in JSON decode");
        lua_pop(L, 1);
        return status == LUA_ERRMEM ? KR_ENOMEM : KR_ESCRIPT;
    }
    if (d.rc != 0) {
        snprintf(errbuf, errlen, "%s", d.err);
        lua_pop(L, 1);
        return d.rc;
    }
    return 0;
}

/* ---- the kr.json module ---------------------------------------------------------------- */

/* Run under lua_pcall so a memory error cannot skip kr_sbuf_dispose. */
static int push_sbuf(lua_State *L)
{
    const kr_sbuf_t *sb = lua_touserdata(L, 1);
    lua_pushlstring(L, kr_sbuf_data(sb), kr_sbuf_len(sb));
    return 1;
}

/* kr.json.encode(v) -> string; raises when v cannot be encoded (a programming error). */
static int l_encode(lua_State *L)
{
    kr_sbuf_t sb;
    const char *err = NULL;
    int rc, status = LUA_OK;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    kr_sbuf_init(&sb, 256);
    rc = kr_json_encode(L, 1, &sb, NULL, &err);
    if (rc == 0) {
        lua_pushcfunction(L, push_sbuf);
        lua_pushlightuserdata(L, &sb);
        status = lua_pcall(L, 1, 1, 0);
    }
    kr_sbuf_dispose(&sb);
    if (rc != 0)
        return luaL_error(L, "%s", err);
    if (status != LUA_OK)
        return lua_error(L); /* the error object, typically "not enough memory" */
    return 1;
}

/* kr.json.decode(s) -> value, or nil, "invalid JSON at offset N" for bad input. */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[128];
    int rc = kr_json_decode(L, s, len, NULL, err, sizeof(err));
    if (rc == 0)
        return 1;
    /* Out of memory is not the input's fault: raise it like any allocation failure. */
    if (rc == KR_ENOMEM || rc == KR_ESCRIPT)
        return luaL_error(L, "%s", err);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* kr.json.array(t) -> t, marked so it always encodes as a JSON array (even when empty). */
static int l_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
        if (!kr_json_is_marked_array(L, 1))
            return luaL_argerror(L, 1, "table already has a metatable");
        lua_pop(L, 1);
        return 1;
    }
    kr_json_push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

void kr_lua_json_push_module(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"encode", l_encode},
        {"decode", l_decode},
        {"array", l_array},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    kr_json_push_null(L);
    lua_setfield(L, -2, "null");
    kr_json_push_empty_array(L);
    lua_setfield(L, -2, "empty_array");
    kr_json_push_array_mt(L); /* created now so encode never meets an unmarked world later */
    lua_pop(L, 1);
}
