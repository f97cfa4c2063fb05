/* kr_lua_msgpack.c: Lua <-> MessagePack (see kr_lua_msgpack.h for the rules).
 *
 * Encode: a recursive walk over the Lua value that appends to a kr_sbuf_t with the writers of
 * kr_sr_msgpack.h. Like kr_json_encode it uses only Lua calls that cannot raise (lua_type,
 * lua_next, lua_rawgeti, lua_rawlen, lua_tolstring on strings, lua_checkstack), so it is safe
 * from unprotected C. MessagePack announces a container's size before its elements, so a table
 * is walked once to count its entries (which also tells an array from a map) and once to write.
 * Decode: the msgpack_object tree already lives in the message's zone; a C function run under
 * lua_pcall builds the Lua value from it, so a memory error raised by the capped VM allocator
 * unwinds to us and nothing leaks (the tree is not ours to free).
 */
#include "kr_lua_msgpack.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <time.h>

#include <lauxlib.h>
#include <msgpack.h>

#include "kr_json.h"
#include "kr_sr_msgpack.h"
#include "kr_time.h"

#define TS_EXT_TYPE (-1) /* the timestamp extension */
/* The ISO form has four year digits: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, which is
 * also .NET's DateTime range. */
#define TS_MIN_SECONDS INT64_C(-62135596800)
#define TS_MAX_SECONDS INT64_C(253402300799)

static const char msg_nomem[] = "not enough memory";

static int opts_depth(const kr_json_opts_t *opts)
{
    int d = opts && opts->max_depth > 0 ? opts->max_depth : KR_JSON_DEFAULT_MAX_DEPTH;
    return d > KR_JSON_DEPTH_LIMIT ? KR_JSON_DEPTH_LIMIT : d;
}

/* ---- encode ---------------------------------------------------------------------------------- */

typedef struct enc_s {
    lua_State *L;
    kr_sbuf_t *sb;
    int max_depth;
    const void *empty_array; /* the kr.json.empty_array sentinel */
    const void **path;       /* tables being encoded, outermost first: the cycle check */
    const char *err;
} enc_t;

static int enc_fail(enc_t *e, int rc, const char *msg)
{
    e->err = msg;
    return rc;
}

/* A Lua string: str when it is valid UTF-8, else bin (Lua strings are byte strings). */
static void put_lua_string(kr_sbuf_t *sb, const char *s, size_t len)
{
    if (kr_utf8_valid(s, len))
        kr_mp_put_str(sb, s, len);
    else
        kr_mp_put_bin(sb, s, len);
}

/* Counts the entries of the table at idx and tells whether its keys are exactly 1..n, n being
 * its raw length (n >= 1): then it is an array. One lua_next pass. */
static lua_Unsigned count_entries(lua_State *L, int idx, lua_Unsigned n, int *sequence)
{
    lua_Unsigned count = 0;
    int in_range = n > 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_Integer k;
        lua_pop(L, 1);
        if (in_range &&
            (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || (lua_Unsigned)k > n))
            in_range = 0;
        count++;
    }
    /* n distinct integer keys all within 1..n are exactly 1..n. */
    *sequence = in_range && count == n;
    return count;
}

static int encode_value(enc_t *e, int idx, int depth);

static int encode_array(enc_t *e, int idx, lua_Unsigned n, int depth)
{
    lua_State *L = e->L;
    if (n > UINT32_MAX)
        return enc_fail(e, KR_ELIMIT, "table too large");
    kr_mp_put_array(e->sb, (uint32_t)n);
    for (lua_Unsigned i = 1; i <= n; i++) {
        int rc;
        lua_rawgeti(L, idx, (lua_Integer)i);
        rc = encode_value(e, lua_gettop(L), depth);
        if (rc != 0)
            return rc; /* kr_mp_encode restores the stack */
        lua_pop(L, 1);
    }
    return 0;
}

/* Keys as kr.json writes them: strings, and integers as decimal strings. */
static int encode_key(enc_t *e, int idx)
{
    lua_State *L = e->L;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t klen;
        const char *k = lua_tolstring(L, idx, &klen);
        put_lua_string(e->sb, k, klen);
        return 0;
    }
    if (lua_isinteger(L, idx)) {
        /* Formatted here: lua_tolstring on a number key would corrupt the lua_next walk. */
        char tmp[24];
        int len = snprintf(tmp, sizeof(tmp), "%" PRId64, (int64_t)lua_tointeger(L, idx));
        kr_mp_put_str(e->sb, tmp, (size_t)len);
        return 0;
    }
    return enc_fail(e, KR_EINVAL, "table key must be a string or an integer");
}

static int encode_map(enc_t *e, int idx, lua_Unsigned count, int depth)
{
    lua_State *L = e->L;
    if (count > UINT32_MAX)
        return enc_fail(e, KR_ELIMIT, "table too large");
    kr_mp_put_map(e->sb, (uint32_t)count);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int rc = encode_key(e, lua_gettop(L) - 1);
        if (rc == 0)
            rc = encode_value(e, lua_gettop(L), depth);
        if (rc != 0)
            return rc;
        lua_pop(L, 1);
    }
    return 0;
}

/* depth is the number of tables already open around this one. */
static int encode_table(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    const void *p = lua_topointer(L, idx);
    lua_Unsigned n, count;
    int sequence;

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
    n = lua_rawlen(L, idx);
    if (kr_json_is_marked_array(L, idx))
        return encode_array(e, idx, n, depth + 1);
    count = count_entries(L, idx, n, &sequence);
    if (sequence)
        return encode_array(e, idx, n, depth + 1);
    return encode_map(e, idx, count, depth + 1);
}

static int encode_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        kr_mp_put_nil(e->sb);
        return 0;
    case LUA_TBOOLEAN:
        kr_mp_put_bool(e->sb, lua_toboolean(L, idx));
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            kr_mp_put_int(e->sb, (int64_t)lua_tointeger(L, idx));
        else
            kr_mp_put_double(e->sb, (double)lua_tonumber(L, idx));
        return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_lua_string(e->sb, s, len);
        return 0;
    }
    case LUA_TTABLE:
        return encode_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA: {
        const void *p = lua_touserdata(L, idx);
        if (p == NULL) { /* kr.json.null */
            kr_mp_put_nil(e->sb);
            return 0;
        }
        if (p == e->empty_array) {
            kr_mp_put_array(e->sb, 0);
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

int kr_mp_encode(lua_State *L, int idx, kr_sbuf_t *sb, const kr_json_opts_t *opts, const char **err)
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
        goto done;
    }
    kr_json_push_empty_array(L); /* a light userdata: pushing it cannot raise */
    e.empty_array = lua_touserdata(L, -1);
    lua_pop(L, 1);
    rc = encode_value(&e, idx, 0);

done:
    lua_settop(L, top);
    if (e.path != path_local)
        kr_free(e.path);
    if (rc != 0)
        *err = e.err;
    return rc;
}

/* ---- decode ---------------------------------------------------------------------------------- */

typedef struct dec_s {
    const msgpack_object *root;
    int max_depth;
    int rc; /* set when conversion stops on its own (not a Lua error) */
    char err[64];
} dec_t;

static int dec_fail(dec_t *d, int rc, const char *msg)
{
    d->rc = rc;
    snprintf(d->err, sizeof(d->err), "%s", msg);
    return -1;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ", the form kr.now() writes. Formatted here rather than with
 * kr_time_iso, whose strftime("%Y") does not pad years below 1000 (DateTime.MinValue is year
 * 1). sec is within TS_MIN_SECONDS..TS_MAX_SECONDS. */
static void format_iso(int64_t sec, unsigned ms, char out[KR_ISO_TS_LEN + 1])
{
    time_t t = (time_t)sec;
    struct tm tm;
    char tmp[80]; /* room for any int fields, so the compiler sees no truncation */
    gmtime_r(&t, &tm);
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
    memcpy(out, tmp, KR_ISO_TS_LEN);
    out[KR_ISO_TS_LEN] = '\0';
}

static uint64_t read_be(const char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | (uint8_t)p[i];
    return v;
}

/* The timestamp extension (32, 64 or 96 bits) as an ISO string. May raise (memory). */
static int push_timestamp(lua_State *L, dec_t *d, const msgpack_object_ext *x)
{
    char iso[KR_ISO_TS_LEN + 1];
    int64_t sec;
    uint64_t nsec;

    if (x->size == 4) {
        sec = (int64_t)read_be(x->ptr, 4);
        nsec = 0;
    } else if (x->size == 8) {
        uint64_t v = read_be(x->ptr, 8);
        nsec = v >> 34;
        sec = (int64_t)(v & ((UINT64_C(1) << 34) - 1));
    } else if (x->size == 12) {
        nsec = read_be(x->ptr, 4);
        sec = (int64_t)read_be(x->ptr + 4, 8);
    } else {
        return dec_fail(d, KR_EINVAL, "invalid timestamp");
    }
    if (nsec > 999999999)
        return dec_fail(d, KR_EINVAL, "invalid timestamp");
    if (sec < TS_MIN_SECONDS || sec > TS_MAX_SECONDS)
        return dec_fail(d, KR_EINVAL, "timestamp out of range");
    format_iso(sec, (unsigned)(nsec / 1000000), iso);
    lua_pushlstring(L, iso, KR_ISO_TS_LEN);
    return 0;
}

/* A map key: strings (str or bin) and integers. May raise (memory). */
static int push_key(lua_State *L, dec_t *d, const msgpack_object *k)
{
    switch (k->type) {
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, k->via.str.ptr, k->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, k->via.bin.ptr, k->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (k->via.u64 > INT64_MAX)
            lua_pushnumber(L, (lua_Number)k->via.u64);
        else
            lua_pushinteger(L, (lua_Integer)k->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, (lua_Integer)k->via.i64);
        return 0;
    default:
        return dec_fail(d, KR_EINVAL, "map key must be a string or an integer");
    }
}

/* depth is the number of containers already open around o. May raise (memory). */
static int push_object(lua_State *L, dec_t *d, const msgpack_object *o, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        if (depth == 0)
            lua_pushnil(L);
        else
            kr_json_push_null(L);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            lua_pushnumber(L, (lua_Number)o->via.u64);
        else
            lua_pushinteger(L, (lua_Integer)o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, (lua_Integer)o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        lua_pushnumber(L, (lua_Number)o->via.f64);
        return 0;
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, o->via.str.ptr, o->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_EXT:
        if (o->via.ext.type == TS_EXT_TYPE)
            return push_timestamp(L, d, &o->via.ext);
        d->rc = KR_EINVAL;
        snprintf(d->err, sizeof(d->err), "unsupported extension type %d", o->via.ext.type);
        return -1;
    case MSGPACK_OBJECT_ARRAY:
        if (depth >= d->max_depth)
            return dec_fail(d, KR_ELIMIT, "nesting too deep");
        luaL_checkstack(L, 3, "MessagePack nesting");
        lua_createtable(L, (int)(o->via.array.size > INT_MAX ? INT_MAX : o->via.array.size), 0);
        lua_pushvalue(L, 1); /* the array marker, see convert() */
        lua_setmetatable(L, -2);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (push_object(L, d, &o->via.array.ptr[i], depth + 1) != 0)
                return -1;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 0;
    case MSGPACK_OBJECT_MAP:
        if (depth >= d->max_depth)
            return dec_fail(d, KR_ELIMIT, "nesting too deep");
        luaL_checkstack(L, 3, "MessagePack nesting");
        lua_createtable(L, 0, (int)(o->via.map.size > INT_MAX ? INT_MAX : o->via.map.size));
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (push_key(L, d, &o->via.map.ptr[i].key) != 0 ||
                push_object(L, d, &o->via.map.ptr[i].val, depth + 1) != 0)
                return -1;
            lua_rawset(L, -3);
        }
        return 0;
    default:
        return dec_fail(d, KR_EINVAL, "unexpected MessagePack value");
    }
}

/* Runs under lua_pcall: every Lua allocation it makes may raise. */
static int convert(lua_State *L)
{
    dec_t *d = lua_touserdata(L, 1);
    lua_settop(L, 0);
    kr_json_push_array_mt(L); /* slot 1 for the whole conversion */
    if (push_object(L, d, d->root, 0) != 0)
        return 0;
    return 1;
}

int kr_mp_push(lua_State *L, const msgpack_object *o, const kr_json_opts_t *opts, char *errbuf,
               size_t errlen)
{
    dec_t d = {.root = o, .max_depth = opts_depth(opts)};
    int status;

    if (errlen)
        errbuf[0] = '\0';
    if (!lua_checkstack(L, 3)) {
        snprintf(errbuf, errlen, "%s", msg_nomem);
        return KR_ENOMEM;
    }
    lua_pushcfunction(L, convert);
    lua_pushlightuserdata(L, &d);
    status = lua_pcall(L, 1, 1, 0);
    if (status != LUA_OK) {
        /* lua_tostring only on a string: converting anything else could raise. */
        snprintf(errbuf, errlen, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                : "error in MessagePack decode");
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
