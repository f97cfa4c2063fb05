/* test_lua_msgpack.c: Lua <-> MessagePack conversion (lua/kr_lua_msgpack.c).
 *
 * Most cases run Lua chunks against three helpers installed as the global `mp`: mp.encode(v)
 * returns the encoding as hex (or raises the encoder's message), mp.decode(hex) decodes with
 * msgpack-c and kr_mp_push (value, or nil + message), mp.rt(v) does both. The C API is called
 * directly for stack balance and the memory cap. As in test_lua_json.c, each test closes its
 * states and runs LeakSanitizer itself (tests leave their forked child with _exit()).
 */
#include "kr_buf.h"
#include "kr_common.h"
#include "kr_lua_json.h"
#include "kr_lua_msgpack.h"
#include "kr_sr_msgpack.h"
#include "kr_test.h"
#include "lua_capped.h"
#include "unhex.h"

#include <lauxlib.h>
#include <lualib.h>
#include <msgpack.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_leak_check()
#else
#define LEAK_CHECK() ((void)0)
#endif

/* ---- helpers --------------------------------------------------------------------------------- */

/* unhex: unhex.h */

static void push_hex(lua_State *L, const char *p, size_t len)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        char two[3];
        snprintf(two, sizeof(two), "%02x", (uint8_t)p[i]);
        luaL_addlstring(&b, two, 2);
    }
    luaL_pushresult(&b);
}

static int max_depth_of(lua_State *L, int idx)
{
    return (int)luaL_optinteger(L, idx, 0);
}

/* mp.encode(v [, max_depth]) -> hex; raises the encoder's message. */
static int l_encode(lua_State *L)
{
    kr_sbuf_t sb;
    const char *err = NULL;
    kr_json_opts_t opts = {.max_depth = max_depth_of(L, 2)};
    int top, rc;

    lua_settop(L, 2);
    lua_pushvalue(L, 1);
    top = lua_gettop(L);
    kr_sbuf_init(&sb, 0);
    rc = kr_mp_encode(L, -1, &sb, &opts, &err);
    ASSERT_EQ(lua_gettop(L), top); /* the stack is as it was, error or not */
    if (rc != 0) {
        kr_sbuf_dispose(&sb);
        ASSERT(rc < 0);
        ASSERT_NOT_NULL(err);
        return luaL_error(L, "%s", err);
    }
    ASSERT_NULL(err);
    push_hex(L, kr_sbuf_data(&sb), kr_sbuf_len(&sb));
    kr_sbuf_dispose(&sb);
    return 1;
}

/* Decodes bytes with msgpack-c (prescanned) and pushes the value: 1 value or nil + message. */
static int decode_bytes(lua_State *L, const char *p, size_t len, int max_depth)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    kr_json_opts_t opts = {.max_depth = max_depth};
    const char *perr;
    char errbuf[128];
    size_t off = 0;
    int top = lua_gettop(L), rc;

    ASSERT_OK(kr_sr_mp_prescan(p, len, KR_SR_MP_DEPTH_LIMIT, &perr));
    ASSERT_EQ(msgpack_unpack(p, len, &off, zone, &o), MSGPACK_UNPACK_SUCCESS);
    rc = kr_mp_push(L, &o, &opts, errbuf, sizeof(errbuf));
    msgpack_zone_free(zone);
    if (rc != 0) {
        ASSERT_EQ(lua_gettop(L), top);
        lua_pushnil(L);
        lua_pushstring(L, errbuf);
        return 2;
    }
    ASSERT_EQ(lua_gettop(L), top + 1);
    return 1;
}

/* mp.decode(hex [, max_depth]) -> value | nil, err */
static int l_decode(lua_State *L)
{
    size_t len;
    char *bytes = unhex(luaL_checkstring(L, 1), &len);
    int max_depth = max_depth_of(L, 2);
    lua_settop(L, 0);
    int n = decode_bytes(L, bytes, len, max_depth);
    free(bytes);
    return n;
}

/* mp.rt(v) -> decode(encode(v)) */
static int l_rt(lua_State *L)
{
    kr_sbuf_t sb;
    const char *err = NULL;
    int n;
    lua_settop(L, 1);
    kr_sbuf_init(&sb, 0);
    if (kr_mp_encode(L, 1, &sb, NULL, &err) != 0) {
        kr_sbuf_dispose(&sb);
        return luaL_error(L, "%s", err);
    }
    n = decode_bytes(L, kr_sbuf_data(&sb), kr_sbuf_len(&sb), 0);
    kr_sbuf_dispose(&sb);
    return n;
}

static void install(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"encode", l_encode}, {"decode", l_decode}, {"rt", l_rt}, {NULL, NULL}};
    luaL_openlibs(L);
    kr_lua_json_push_module(L);
    lua_setglobal(L, "json");
    luaL_newlib(L, fns);
    lua_setglobal(L, "mp");
}

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    ASSERT_NOT_NULL(L);
    install(L);
    return L;
}

static void finish(lua_State *L)
{
    lua_close(L);
    LEAK_CHECK();
}

static void run(lua_State *L, const char *chunk)
{
    if (luaL_dostring(L, chunk) != LUA_OK)
        KR_TEST_FAIL("lua error: %s\n  in: %s", lua_tostring(L, -1), chunk);
    lua_settop(L, 0);
}

/* ---- encode ---------------------------------------------------------------------------------- */

TEST(encode_scalars)
{
    lua_State *L = new_state();
    run(L, "assert(mp.encode(nil) == 'c0')\n"
           "assert(mp.encode(true) == 'c3' and mp.encode(false) == 'c2')\n"
           "assert(mp.encode(json.null) == 'c0')\n"
           "assert(mp.encode(json.empty_array) == '90')\n");
    finish(L);
}

TEST(encode_integers)
{
    lua_State *L = new_state();
    /* smallest width for each */
    run(L, "local cases = {\n"
           "  [0] = '00', [127] = '7f', [128] = 'cc80', [255] = 'ccff', [256] = 'cd0100',\n"
           "  [65535] = 'cdffff', [65536] = 'ce00010000', [4294967295] = 'ceffffffff',\n"
           "  [4294967296] = 'cf0000000100000000', [-1] = 'ff', [-32] = 'e0', [-33] = 'd0df',\n"
           "  [-128] = 'd080', [-129] = 'd1ff7f', [-32768] = 'd18000', [-32769] = 'd2ffff7fff',\n"
           "  [-2147483648] = 'd280000000', [-2147483649] = 'd3ffffffff7fffffff',\n"
           "  [math.maxinteger] = 'cf7fffffffffffffff', [math.mininteger] = 'd38000000000000000',\n"
           "}\n"
           "for v, hex in pairs(cases) do\n"
           "  assert(mp.encode(v) == hex, v .. ': ' .. mp.encode(v))\n"
           "end\n");
    finish(L);
}

TEST(encode_floats)
{
    lua_State *L = new_state();
    /* floats are float64 always, 2.0 included; NaN and infinities are allowed */
    run(L, "assert(mp.encode(1.5) == 'cb3ff8000000000000')\n"
           "assert(mp.encode(2.0) == 'cb4000000000000000')\n"
           "assert(mp.encode(-0.0) == 'cb8000000000000000')\n"
           "assert(mp.encode(math.huge) == 'cb7ff0000000000000')\n"
           "assert(mp.encode(-math.huge) == 'cbfff0000000000000')\n"
           "local nan = mp.encode(0/0)\n"
           "assert(#nan == 18 and nan:sub(1, 2) == 'cb')\n");
    finish(L);
}

TEST(encode_strings)
{
    lua_State *L = new_state();
    run(L, "assert(mp.encode('') == 'a0')\n"
           "assert(mp.encode('abc') == 'a3616263')\n"
           "assert(mp.encode('\\xc3\\xa9') == 'a2c3a9')\n" /* é */
           "assert(mp.encode(('x'):rep(31)):sub(1, 2) == 'bf')\n"
           "assert(mp.encode(('x'):rep(32)):sub(1, 4) == 'd920')\n"
           "assert(mp.encode(('x'):rep(256)):sub(1, 6) == 'da0100')\n"
           "assert(mp.encode(('x'):rep(65536)):sub(1, 10) == 'db00010000')\n"
           "assert(mp.encode('a\\0b') == 'a3610062')\n" /* NUL is valid UTF-8 */
           /* not UTF-8: bin */
           "assert(mp.encode('\\xff') == 'c401ff')\n"
           "assert(mp.encode('\\xc3') == 'c401c3')\n"               /* cut short */
           "assert(mp.encode('\\xed\\xa0\\x80') == 'c403eda080')\n" /* a surrogate */
           "assert(mp.encode(('\\xff'):rep(256)):sub(1, 6) == 'c50100')\n");
    finish(L);
}

TEST(encode_tables)
{
    lua_State *L = new_state();
    run(L, "assert(mp.encode({1, 2, 3}) == '93010203')\n"
           "assert(mp.encode({'a', {true}}) == '92a16191c3')\n"
           "assert(mp.encode({a = 1}) == '81a16101')\n"
           /* integer keys become decimal strings, as in kr.json */
           "assert(mp.encode({[10] = 'x'}) == '81a23130a178')\n"
           "assert(mp.encode({[-1] = 'x'}) == '81a22d31a178')\n"
           /* holes and extra keys make a map */
           "local h = mp.encode({1, nil, 3})\n"
           "assert(h == '82a13101a13303' or h == '82a13303a13101', h)\n"
           "local t = {1, 2}; t.x = true\n"
           "assert(mp.encode(t):sub(1, 2) == '83')\n"
           /* json.null inside containers */
           "assert(mp.encode({json.null, 1}) == '92c001')\n"
           /* a string key that is not UTF-8 follows the string rule */
           "assert(mp.encode({['\\xff'] = 1}) == '81c401ff01')\n"
           /* 16 elements: array16 */
           "local big = {} for i = 1, 16 do big[i] = i end\n"
           "assert(mp.encode(big):sub(1, 6) == 'dc0010')\n"
           "local m = {} for i = 1, 16 do m['k' .. i] = i end\n"
           "assert(mp.encode(m):sub(1, 6) == 'de0010')\n");
    finish(L);
}

TEST(encode_empty_tables)
{
    lua_State *L = new_state();
    run(L, "assert(mp.encode({}) == '80')\n"
           "assert(mp.encode(json.array({})) == '90')\n"
           "assert(mp.encode({json.empty_array}) == '9190')\n"
           /* a marked table encodes 1..#t and ignores other keys */
           "local t = json.array({1, 2}); t.x = 5\n"
           "assert(mp.encode(t) == '920102')\n"
           /* arrays that came from decoding keep their marker */
           "assert(mp.encode(mp.decode('90')) == '90')\n");
    finish(L);
}

TEST(encode_errors)
{
    lua_State *L = new_state();
    run(L, "local function fails(v, msg)\n"
           "  local ok, err = pcall(mp.encode, v)\n"
           "  assert(not ok and err:find(msg, 1, true), tostring(err))\n"
           "end\n"
           "fails(print, 'cannot encode a function')\n"
           "fails({f = print}, 'cannot encode a function')\n"
           "fails(coroutine.create(print), 'cannot encode a thread')\n"
           "fails(io.stdout, 'cannot encode a userdata')\n"
           "fails({[1.5] = 1}, 'table key must be a string or an integer')\n"
           "fails({[true] = 1}, 'table key must be a string or an integer')\n");
    finish(L);
}

TEST(encode_cycles_and_depth)
{
    lua_State *L = new_state();
    run(L, "local function fails(v, msg, depth)\n"
           "  local ok, err = pcall(mp.encode, v, depth)\n"
           "  assert(not ok and err:find(msg, 1, true), tostring(err))\n"
           "end\n"
           "local t = {} t.self = t\n"
           "fails(t, 'circular reference')\n"
           "local a = {{}} a[1][1] = a\n"
           "fails(a, 'circular reference')\n"
           /* the same table twice, not nested in itself, is fine */
           "local s = {1}\n"
           "assert(mp.encode({s, s}) == '92910191' .. '01')\n"
           /* depth: 3 nested tables pass with max_depth 3, 4 do not */
           "assert(mp.encode({{{}}}, 3) == '919180')\n"
           "fails({{{{}}}}, 'nesting too deep', 3)\n"
           /* the default is 64 */
           "local deep = {} local cur = deep\n"
           "for i = 1, 63 do cur[1] = {} cur = cur[1] end\n"
           "assert(#mp.encode(deep) == 128)\n"
           "cur[1] = {}\n"
           "fails(deep, 'nesting too deep')\n"
           /* a larger max_depth allocates its cycle path */
           "assert(#mp.encode(deep, 100) == 130)\n");
    finish(L);
}

TEST(c_encode_stack_and_appends)
{
    lua_State *L = new_state();
    kr_sbuf_t sb;
    const char *err = NULL;
    kr_sbuf_init(&sb, 0);
    kr_sbuf_append(&sb, "\x92", 1);
    lua_pushinteger(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_rt);
    lua_setfield(L, -2, "f");
    /* error: the stack is as it was, the partial output is the caller's to reset */
    ASSERT_EQ(kr_mp_encode(L, -1, &sb, NULL, &err), KR_EINVAL);
    ASSERT_STR_EQ(err, "cannot encode a function");
    ASSERT_EQ(lua_gettop(L), 2);
    kr_sbuf_reset(&sb);
    kr_sbuf_append(&sb, "\x92", 1);
    ASSERT_OK(kr_mp_encode(L, 1, &sb, NULL, &err));
    ASSERT_NULL(err);
    lua_pushstring(L, "x");
    ASSERT_OK(kr_mp_encode(L, -1, &sb, NULL, &err));
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), "\x92\x01\xa1x", 4);
    ASSERT_EQ(lua_gettop(L), 3);
    kr_sbuf_dispose(&sb);
    finish(L);
}

/* ---- decode ---------------------------------------------------------------------------------- */

TEST(decode_values)
{
    lua_State *L = new_state();
    run(L, "assert(mp.decode('c0') == nil)\n"
           "assert(select('#', mp.decode('c0')) == 1)\n"
           "assert(mp.decode('c3') == true and mp.decode('c2') == false)\n"
           "assert(mp.decode('a3616263') == 'abc')\n"
           "assert(mp.decode('d90161') == 'a')\n"
           /* bin becomes a string */
           "assert(mp.decode('c40300ff01') == '\\0\\xff\\1')\n"
           "assert(mp.decode('c400') == '')\n"
           /* nil inside containers is json.null */
           "local t = mp.decode('92c001')\n"
           "assert(t[1] == json.null and t[2] == 1 and #t == 2)\n"
           "local m = mp.decode('81a161c0')\n"
           "assert(m.a == json.null)\n"
           /* arrays carry the marker, maps do not */
           "assert(getmetatable(mp.decode('90')) == getmetatable(json.array({})))\n"
           "assert(getmetatable(mp.decode('80')) == nil)\n"
           "assert(json.encode(mp.decode('90')) == '[]')\n"
           "assert(json.encode(mp.decode('80')) == '{}')\n"
           /* the JS client's map from the Echo arguments */
           "local o = mp.decode('82a16193c3c2c0a2c3a9a2c3bc')\n"
           "assert(o.a[1] == true and o.a[2] == false and o.a[3] == json.null)\n"
           "assert(o['\\xc3\\xa9'] == '\\xc3\\xbc')\n");
    finish(L);
}

TEST(decode_numbers)
{
    lua_State *L = new_state();
    run(L, "local function int(hex, v)\n"
           "  local got = mp.decode(hex)\n"
           "  assert(math.type(got) == 'integer' and got == v, hex .. ': ' .. tostring(got))\n"
           "end\n"
           "int('00', 0) int('7f', 127) int('ff', -1) int('e0', -32)\n"
           "int('cc80', 128) int('cd0100', 256) int('ce00010000', 65536)\n"
           "int('cf7fffffffffffffff', math.maxinteger)\n"
           "int('d080', -128) int('d1ff7f', -129) int('d280000000', -2147483648)\n"
           "int('d38000000000000000', math.mininteger)\n"
           "int('d005', 5) int('d3000000000000002a', 42)\n"
           /* above INT64_MAX: a float */
           "local u = mp.decode('cf8000000000000000')\n"
           "assert(math.type(u) == 'float' and u == 2^63)\n"
           "u = mp.decode('cfffffffffffffffff')\n"
           "assert(math.type(u) == 'float' and u == 2^64)\n"
           /* floats stay floats, whole or not */
           "local f = mp.decode('cb4000000000000000')\n"
           "assert(math.type(f) == 'float' and f == 2.0)\n"
           "assert(mp.decode('ca3fc00000') == 1.5)\n"
           "assert(math.type(mp.decode('ca3f800000')) == 'float')\n"
           "local nan = mp.decode('cb7ff8000000000000')\n"
           "assert(nan ~= nan)\n"
           "assert(mp.decode('cbfff0000000000000') == -math.huge)\n");
    finish(L);
}

TEST(decode_map_keys)
{
    lua_State *L = new_state();
    run(L, "local m = mp.decode('84 a161 01 05 02 ff 03 c40162 04')\n"
           "assert(m.a == 1 and m[5] == 2 and m[-1] == 3 and m.b == 4)\n"
           "local big = mp.decode('81 cfffffffffffffffff 01')\n"
           "assert(big[2^64] == 1)\n"
           "local function fails(hex, msg)\n"
           "  local v, err = mp.decode(hex)\n"
           "  assert(v == nil and err == msg, tostring(err))\n"
           "end\n"
           "fails('81 c0 01', 'map key must be a string or an integer')\n"
           "fails('81 c3 01', 'map key must be a string or an integer')\n"
           "fails('81 cb3ff8000000000000 01', 'map key must be a string or an integer')\n"
           "fails('81 90 01', 'map key must be a string or an integer')\n"
           "fails('81 80 01', 'map key must be a string or an integer')\n"
           "fails('91 81 d6ff00000000 01', 'map key must be a string or an integer')\n");
    finish(L);
}

TEST(decode_timestamps)
{
    lua_State *L = new_state();
    run(L, "local function ts(hex, iso)\n"
           "  local got, err = mp.decode(hex)\n"
           "  assert(got == iso, hex .. ': ' .. tostring(got) .. ' ' .. tostring(err))\n"
           "end\n"
           /* from the JS client: new Date(Date.UTC(2025, 9, 11, 21, 30, 0, 123)), Date(0),
            * Date.UTC(2200, 0, 1) */
           "ts('d7ff1d53530068eacc58', '2025-10-11T21:30:00.123Z')\n"
           "ts('d6ff00000000', '1970-01-01T00:00:00.000Z')\n"
           "ts('d7ff00000001b09e1900', '2200-01-01T00:00:00.000Z')\n"
           /* timestamp 32: whole seconds */
           "ts('d6ff68eacc58', '2025-10-11T21:30:00.000Z')\n"
           "ts('d6ffffffffff', '2106-02-07T06:28:15.000Z')\n"
           /* timestamp 96: before 1970, DateTime.MinValue and MaxValue */
           "ts('c70cff 3b8b87c0 ffffffffffffffff', '1969-12-31T23:59:59.999Z')\n"
           "ts('c70cff 00000000 fffffff1886e0900', '0001-01-01T00:00:00.000Z')\n"
           "ts('c70cff 3b9ac9ff 0000003afff4417f', '9999-12-31T23:59:59.999Z')\n"
           /* nanoseconds below a millisecond are dropped */
           "ts('c70cff 000f423f 0000000000000000', '1970-01-01T00:00:00.000Z')\n"
           "ts('c70cff 000f4240 0000000000000000', '1970-01-01T00:00:00.001Z')\n"
           /* inside containers, as a hub argument */
           "local a = mp.decode('92 d6ff00000000 01')\n"
           "assert(a[1] == '1970-01-01T00:00:00.000Z' and a[2] == 1)\n");
    run(L, "local function fails(hex, msg)\n"
           "  local v, err = mp.decode(hex)\n"
           "  assert(v == nil and err == msg, hex .. ': ' .. tostring(err))\n"
           "end\n"
           /* nanoseconds above 999999999 */
           "fails('c70cff 3b9aca00 0000000000000000', 'invalid timestamp')\n"
           "fails('d7ff ffffffff00000000', 'invalid timestamp')\n"
           /* other sizes */
           "fails('d5ff 0000', 'invalid timestamp')\n"
           "fails('c700ff', 'invalid timestamp')\n"
           "fails('d8ff 00000000000000000000000000000000', 'invalid timestamp')\n"
           /* outside years 1..9999 */
           "fails('c70cff 00000000 fffffff1886e08ff', 'timestamp out of range')\n"
           "fails('c70cff 00000000 0000003afff44180', 'timestamp out of range')\n"
           "fails('c70cff 00000000 8000000000000000', 'timestamp out of range')\n"
           "fails('c70cff 00000000 7fffffffffffffff', 'timestamp out of range')\n"
           /* any other extension */
           "fails('d401 00', 'unsupported extension type 1')\n"
           "fails('c70380 010203', 'unsupported extension type -128')\n"
           "fails('92 01 d6fe00000000', 'unsupported extension type -2')\n");
    finish(L);
}

TEST(decode_depth_limit)
{
    lua_State *L = new_state();
    run(L, "local v = mp.decode('919190', 3)\n"
           "assert(#v[1][1] == 0)\n"
           "local v2, err = mp.decode('91919190', 3)\n"
           "assert(v2 == nil and err == 'nesting too deep')\n"
           "v2, err = mp.decode('919181a16180', 3)\n" /* maps count too */
           "assert(v2 == nil and err == 'nesting too deep')\n");

    /* The default is 64. msgpack-c cannot decode that deep (32 levels), so the tree is built
     * by hand: a chain of one-element arrays around nil. */
    msgpack_object chain[66];
    char errbuf[64];
    for (int i = 0; i < 66; i++) {
        if (i == 65) {
            chain[i].type = MSGPACK_OBJECT_NIL;
        } else {
            chain[i].type = MSGPACK_OBJECT_ARRAY;
            chain[i].via.array.size = 1;
            chain[i].via.array.ptr = &chain[i + 1];
        }
    }
    ASSERT_OK(kr_mp_push(L, &chain[1], NULL, errbuf, sizeof(errbuf))); /* 64 arrays */
    ASSERT_EQ(lua_gettop(L), 1);
    lua_settop(L, 0);
    ASSERT_EQ(kr_mp_push(L, &chain[0], NULL, errbuf, sizeof(errbuf)), KR_ELIMIT);
    ASSERT_STR_EQ(errbuf, "nesting too deep");
    ASSERT_EQ(lua_gettop(L), 0);
    /* and a larger limit reaches it */
    kr_json_opts_t opts = {.max_depth = 65};
    ASSERT_OK(kr_mp_push(L, &chain[0], &opts, errbuf, sizeof(errbuf)));
    lua_settop(L, 0);
    finish(L);
}

/* ---- round trips ----------------------------------------------------------------------------- */

TEST(round_trip)
{
    lua_State *L = new_state();
    run(L, "local function same(a, b)\n"
           "  if type(a) ~= 'table' or type(b) ~= 'table' then\n"
           "    return a == b and math.type(a) == math.type(b)\n"
           "  end\n"
           "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
           "  for k in pairs(b) do if a[k] == nil then return false end end\n"
           "  return true\n"
           "end\n"
           "local values = {\n"
           "  0, 1, -1, 127, 128, -33, 65536, math.maxinteger, math.mininteger,\n"
           "  1.5, 2.0, -0.25, 1e300, math.huge, 'text', '', ('x'):rep(70000),\n"
           "  '\\xff\\xfe binary', true, false,\n"
           "  {1, 2, {3, {4}}}, {a = {b = {c = 'd'}}, list = {1, 'two', false}},\n"
           "  {json.null, 2}, {['\\xff'] = 'bin key'},\n"
           "}\n"
           "for i, v in ipairs(values) do\n"
           "  assert(same(mp.rt(v), v), 'value ' .. i)\n"
           "end\n"
           "assert(mp.rt(nil) == nil)\n"
           "local n = mp.rt(0/0) assert(n ~= n)\n"
           /* integer keys come back as strings, as with kr.json */
           "local t = mp.rt({[1] = 'a', [3] = 'b'})\n"
           "assert(t['1'] == 'a' and t['3'] == 'b' and t[1] == nil)\n"
           /* empty arrays survive, empty tables become maps */
           "assert(mp.encode(mp.rt(json.array({}))) == '90')\n"
           "assert(mp.encode(mp.rt({})) == '80')\n"
           "assert(mp.encode(mp.rt({json.empty_array})) == '9190')\n"
           /* and a decode/encode of the JS client's bytes gives the bytes back (except the
            * timestamps, which become strings) */
           "local js = '9ac4030001ffcb3ff8000000000000ffd1ff38cd9c40cf0000010000000000'\n"
           "  .. '91c3a2c3a992c0a0a0'\n"
           "assert(mp.encode(mp.decode(js)) == js)\n");
    finish(L);
}

/* ---- memory cap ------------------------------------------------------------------------------ */

/* capped_t, capped_alloc: lua_capped.h */

TEST(decode_memory_cap)
{
    capped_t cap = {0, SIZE_MAX};
    lua_State *L = lua_newstate(capped_alloc, &cap);
    kr_sbuf_t sb;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    char errbuf[64];
    size_t off = 0;
    int failed = 0, succeeded = 0;

    ASSERT_NOT_NULL(L);
    install(L);
    /* 2000 maps {"id": i, "v": [i + 0.5, "s<i>"]} */
    kr_sbuf_init(&sb, 0);
    kr_mp_put_array(&sb, 2000);
    for (int i = 0; i < 2000; i++) {
        char s[16];
        int n = snprintf(s, sizeof(s), "s%d", i);
        kr_mp_put_map(&sb, 2);
        kr_mp_put_str(&sb, "id", 2);
        kr_mp_put_int(&sb, i);
        kr_mp_put_str(&sb, "v", 1);
        kr_mp_put_array(&sb, 2);
        kr_mp_put_double(&sb, i + 0.5);
        kr_mp_put_str(&sb, s, (size_t)n);
    }
    ASSERT_EQ(msgpack_unpack(kr_sbuf_data(&sb), kr_sbuf_len(&sb), &off, zone, &o),
              MSGPACK_UNPACK_SUCCESS);

    lua_gc(L, LUA_GCCOLLECT);
    cap.limit = cap.used + 1024;
    ASSERT_EQ(kr_mp_push(L, &o, NULL, errbuf, sizeof(errbuf)), KR_ENOMEM);
    ASSERT_STR_EQ(errbuf, "not enough memory");
    ASSERT_EQ(lua_gettop(L), 0);

    /* Fail at many points part-way through: nothing pushed, the state stays usable. */
    for (size_t extra = 16 * 1024; extra < 2 * 1024 * 1024; extra += 37 * 1024) {
        cap.limit = SIZE_MAX;
        lua_gc(L, LUA_GCCOLLECT);
        cap.limit = cap.used + extra;
        int rc = kr_mp_push(L, &o, NULL, errbuf, sizeof(errbuf));
        if (rc == 0) {
            succeeded++;
            ASSERT_EQ(lua_gettop(L), 1);
            ASSERT_EQ(lua_rawlen(L, 1), 2000);
        } else {
            failed++;
            ASSERT_EQ(rc, KR_ENOMEM);
            ASSERT_EQ(lua_gettop(L), 0);
        }
        lua_settop(L, 0);
    }
    ASSERT(failed > 5);
    ASSERT(succeeded > 0);

    /* The encoder never touches the VM allocator. */
    cap.limit = SIZE_MAX;
    ASSERT_OK(kr_mp_push(L, &o, NULL, errbuf, sizeof(errbuf)));
    lua_gc(L, LUA_GCCOLLECT);
    cap.limit = cap.used;
    const char *err;
    kr_sbuf_reset(&sb);
    ASSERT_OK(kr_mp_encode(L, -1, &sb, NULL, &err));
    cap.limit = SIZE_MAX;
    lua_settop(L, 0);

    msgpack_zone_free(zone);
    kr_sbuf_dispose(&sb);
    lua_close(L);
    ASSERT_EQ(cap.used, 0);
    LEAK_CHECK();
}

KR_TEST_MAIN(KR_TEST_ENTRY(encode_scalars), KR_TEST_ENTRY(encode_integers),
             KR_TEST_ENTRY(encode_floats), KR_TEST_ENTRY(encode_strings),
             KR_TEST_ENTRY(encode_tables), KR_TEST_ENTRY(encode_empty_tables),
             KR_TEST_ENTRY(encode_errors), KR_TEST_ENTRY(encode_cycles_and_depth),
             KR_TEST_ENTRY(c_encode_stack_and_appends), KR_TEST_ENTRY(decode_values),
             KR_TEST_ENTRY(decode_numbers), KR_TEST_ENTRY(decode_map_keys),
             KR_TEST_ENTRY(decode_timestamps), KR_TEST_ENTRY(decode_depth_limit),
             KR_TEST_ENTRY(round_trip), KR_TEST_ENTRY(decode_memory_cap))
