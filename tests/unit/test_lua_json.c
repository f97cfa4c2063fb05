/* test_lua_json.c: Lua <-> JSON conversion (lua/kr_lua_json.c).
 *
 * Most cases run small Lua chunks against the module installed as the global `json`; the C API
 * is called directly for stack balance, unterminated input and the memory-cap cases. Each test
 * closes its states and, under ASan, runs LeakSanitizer itself: tests run in a forked child
 * that leaves with _exit(), which skips the at-exit leak check.
 */
#include "kr_common.h"
#include "kr_buf.h"
#include "kr_lua_json.h"
#include "kr_test.h"
#include "lua_capped.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lualib.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_leak_check()
#else
#define LEAK_CHECK() ((void)0)
#endif

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    ASSERT_NOT_NULL(L);
    luaL_openlibs(L);
    kr_lua_json_push_module(L);
    lua_setglobal(L, "json");
    return L;
}

static void finish(lua_State *L)
{
    lua_close(L);
    LEAK_CHECK();
}

/* Runs a chunk whose asserts carry the checks. */
static void run(lua_State *L, const char *chunk)
{
    if (luaL_dostring(L, chunk) != LUA_OK)
        KR_TEST_FAIL("lua error: %s\n  in: %s", lua_tostring(L, -1), chunk);
    lua_settop(L, 0);
}

/* Runs `return <expr>` and returns its string result (copied; valid until the next call). */
static const char *eval(lua_State *L, const char *expr)
{
    static char out[8192];
    char chunk[4096];
    snprintf(chunk, sizeof(chunk), "return %s", expr);
    if (luaL_dostring(L, chunk) != LUA_OK)
        KR_TEST_FAIL("lua error: %s\n  in: %s", lua_tostring(L, -1), chunk);
    if (lua_type(L, -1) != LUA_TSTRING)
        KR_TEST_FAIL("%s: not a string but %s", expr, luaL_typename(L, -1));
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    ASSERT(len < sizeof(out));
    memcpy(out, s, len + 1);
    lua_settop(L, 0);
    return out;
}

/* Encodes the value at the top of the stack with the C API; returns the text or NULL + err. */
static const char *c_encode(lua_State *L, int max_depth, const char **err, int *rc)
{
    static char out[16384];
    kr_sbuf_t sb;
    kr_json_opts_t opts = {.max_depth = max_depth};
    int top = lua_gettop(L);
    kr_sbuf_init(&sb, 0);
    *rc = kr_json_encode(L, -1, &sb, &opts, err);
    ASSERT_EQ(lua_gettop(L), top);
    const char *res = NULL;
    if (*rc == 0) {
        ASSERT(kr_sbuf_len(&sb) < sizeof(out));
        memcpy(out, kr_sbuf_data(&sb), kr_sbuf_len(&sb));
        out[kr_sbuf_len(&sb)] = '\0';
        res = out;
    }
    kr_sbuf_dispose(&sb);
    return res;
}

TEST(encode_scalars)
{
    lua_State *L = new_state();
    ASSERT_STR_EQ(eval(L, "json.encode(nil)"), "null");
    ASSERT_STR_EQ(eval(L, "json.encode(json.null)"), "null");
    ASSERT_STR_EQ(eval(L, "json.encode(true)"), "true");
    ASSERT_STR_EQ(eval(L, "json.encode(false)"), "false");
    ASSERT_STR_EQ(eval(L, "json.encode(0)"), "0");
    ASSERT_STR_EQ(eval(L, "json.encode(-5)"), "-5");
    ASSERT_STR_EQ(eval(L, "json.encode(math.maxinteger)"), "9223372036854775807");
    ASSERT_STR_EQ(eval(L, "json.encode(math.mininteger)"), "-9223372036854775808");
    ASSERT_STR_EQ(eval(L, "json.encode('hello')"), "\"hello\"");
    ASSERT_STR_EQ(eval(L, "json.encode('')"), "\"\"");
    ASSERT_STR_EQ(eval(L, "json.encode(json.empty_array)"), "[]");
    finish(L);
}

TEST(encode_numbers)
{
    lua_State *L = new_state();
    ASSERT_STR_EQ(eval(L, "json.encode(1)"), "1");
    ASSERT_STR_EQ(eval(L, "json.encode(1.5)"), "1.5");
    ASSERT_STR_EQ(eval(L, "json.encode(2.0)"), "2"); /* %.14g rule: integral floats lose .0 */
    ASSERT_STR_EQ(eval(L, "json.encode(-0.0)"), "-0");
    ASSERT_STR_EQ(eval(L, "json.encode(0.1)"), "0.1");
    ASSERT_STR_EQ(eval(L, "json.encode(0.1 + 0.2)"), "0.30000000000000004");
    ASSERT_STR_EQ(eval(L, "json.encode(1/3)"), "0.3333333333333333");
    ASSERT_STR_EQ(eval(L, "json.encode(2^53)"), "9007199254740992");
    ASSERT_STR_EQ(eval(L, "json.encode(1 << 53)"), "9007199254740992");
    ASSERT_STR_EQ(eval(L, "json.encode(1e300)"), "1e+300");
    ASSERT_STR_EQ(eval(L, "json.encode(-1.25e-7)"), "-1.25e-07");
    /* Every float reads back to itself. */
    run(L, "math.randomseed(42)\n"
           "for i = 1, 2000 do\n"
           "  local x = (math.random() - 0.5) * 10 ^ math.random(-300, 300)\n"
           "  local y = json.decode(json.encode(x))\n"
           "  assert(x == y, string.format('%.17g -> %s', x, json.encode(x)))\n"
           "end");
    run(L, "for _, v in ipairs({0/0, 1/0, -1/0}) do\n"
           "  local ok, err = pcall(json.encode, {x = v})\n"
           "  assert(not ok and err:find('cannot encode NaN or infinity', 1, true), err)\n"
           "end");
    finish(L);
}

TEST(encode_numbers_locale_independent)
{
    lua_State *L = new_state();
    /* With a decimal-comma locale (if installed) printf writes 1,5: JSON must still say 1.5. */
    run(L, "local ok = os.setlocale('de_DE.UTF-8', 'numeric') or os.setlocale('fr_FR.UTF-8', "
           "'numeric')\n"
           "assert(json.encode(1.5) == '1.5', json.encode(1.5))\n"
           "assert(json.encode({0.25}) == '[0.25]')\n"
           "os.setlocale('C', 'numeric')");
    finish(L);
}

TEST(encode_strings)
{
    lua_State *L = new_state();
    ASSERT_STR_EQ(eval(L, "json.encode('a\"b\\\\c/d')"), "\"a\\\"b\\\\c/d\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\b\\f\\n\\r\\t')"), "\"\\b\\f\\n\\r\\t\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\0\\1\\31\\127')"), "\"\\u0000\\u0001\\u001f\x7f\"");
    /* Unicode passes through unchanged, including 4-byte sequences and U+2028. */
    ASSERT_STR_EQ(eval(L, "json.encode('h\\u{e9}llo \\u{2713} \\u{1F600} \\u{2028}')"),
                  "\"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \xe2\x80\xa8\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\u{10FFFF}')"), "\"\xf4\x8f\xbf\xbf\"");
    /* A long string crosses the chunked reservation with multibyte sequences at the seams. */
    run(L, "local s = string.rep('a\\u{20AC}\"\\1', 3000)\n"
           "assert(json.decode(json.encode(s)) == s)");
    finish(L);
}

TEST(encode_invalid_utf8)
{
    lua_State *L = new_state();
    ASSERT_STR_EQ(eval(L, "json.encode('a\\xffb')"), "\"a\\ufffdb\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\x80')"), "\"\\ufffd\""); /* stray continuation */
    ASSERT_STR_EQ(eval(L, "json.encode('a\\xc3')"), "\"a\\ufffd\""); /* truncated */
    ASSERT_STR_EQ(eval(L, "json.encode('\\xe2\\x9c')"), "\"\\ufffd\\ufffd\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\xc0\\xaf')"), "\"\\ufffd\\ufffd\""); /* overlong */
    ASSERT_STR_EQ(eval(L, "json.encode('\\xe0\\x80\\xaf')"), "\"\\ufffd\\ufffd\\ufffd\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\xed\\xa0\\x80')"), "\"\\ufffd\\ufffd\\ufffd\"");
    ASSERT_STR_EQ(eval(L, "json.encode('\\xf4\\x90\\x80\\x80')"),
                  "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* above U+10FFFF */
    ASSERT_STR_EQ(eval(L, "json.encode('\\xc3\\xa9\\xff\\xc3\\xa9')"),
                  "\"\xc3\xa9\\ufffd\xc3\xa9\"");
    /* Keys are cleaned the same way, and the result always decodes. */
    ASSERT_STR_EQ(eval(L, "json.encode({['k\\xfe'] = 1})"), "{\"k\\ufffd\":1}");
    run(L, "assert(json.decode(json.encode('\\xff\\xfe')) == '\\u{FFFD}\\u{FFFD}')");
    finish(L);
}

TEST(encode_tables)
{
    lua_State *L = new_state();
    ASSERT_STR_EQ(eval(L, "json.encode({1, 2, 3})"), "[1,2,3]");
    ASSERT_STR_EQ(eval(L, "json.encode({'a', {true, false}, {x = 1}})"),
                  "[\"a\",[true,false],{\"x\":1}]");
    ASSERT_STR_EQ(eval(L, "json.encode({a = {b = {c = 'd'}}})"), "{\"a\":{\"b\":{\"c\":\"d\"}}}");
    ASSERT_STR_EQ(eval(L, "json.encode({Name = 1})"), "{\"Name\":1}"); /* case kept */
    ASSERT_STR_EQ(eval(L, "json.encode({['a\"b'] = 1})"), "{\"a\\\"b\":1}");
    ASSERT_STR_EQ(eval(L, "json.encode({[10] = 'x'})"), "{\"10\":\"x\"}");
    ASSERT_STR_EQ(eval(L, "json.encode({[-1] = 'x'})"), "{\"-1\":\"x\"}");
    ASSERT_STR_EQ(eval(L, "json.encode({[2] = 'x'})"), "{\"2\":\"x\"}");
    /* Float keys with an integral value are integer keys in Lua. */
    ASSERT_STR_EQ(eval(L, "json.encode({[1.0] = 'x'})"), "[\"x\"]");
    /* Mixed and sparse tables are objects; compare through decode (key order is lua_next's). */
    run(L, "local t = json.decode(json.encode({1, 2, x = 3}))\n"
           "assert(t['1'] == 1 and t['2'] == 2 and t.x == 3 and t[1] == nil)\n"
           "local s = json.decode(json.encode({[1] = 'a', [3] = 'c'}))\n"
           "assert(s['1'] == 'a' and s['3'] == 'c' and s['2'] == nil)\n"
           "assert(getmetatable(s) == nil)");
    /* A table with holes whose border still equals its key count is not an array. */
    run(L, "local t = {}\n t[1] = 1 t[2] = 2 t[3] = 3 t[4] = 4\n t[2] = nil t.x = 5\n"
           "local d = json.decode(json.encode(t))\n"
           "assert(d.x == 5 and d['1'] == 1 and d['4'] == 4 and d['2'] == nil)");
    /* nil inside a table literal is a hole; a json.null slot is kept. */
    ASSERT_STR_EQ(eval(L, "json.encode({1, json.null, 3})"), "[1,null,3]");
    ASSERT_STR_EQ(eval(L, "json.encode({a = json.null})"), "{\"a\":null}");
    /* Metamethods are ignored. */
    ASSERT_STR_EQ(eval(L, "json.encode(setmetatable({}, {__index = {a = 1}, __len = "
                          "function() return 3 end}))"),
                  "{}");
    finish(L);
}

TEST(encode_empty_tables)
{
    lua_State *L = new_state();
    ASSERT_STR_EQ(eval(L, "json.encode({})"), "{}");
    ASSERT_STR_EQ(eval(L, "json.encode(json.array({}))"), "[]");
    ASSERT_STR_EQ(eval(L, "json.encode(json.empty_array)"), "[]");
    ASSERT_STR_EQ(eval(L, "json.encode({list = json.empty_array})"), "{\"list\":[]}");
    ASSERT_STR_EQ(eval(L, "json.encode({list = json.array({})})"), "{\"list\":[]}");
    ASSERT_STR_EQ(eval(L, "json.encode({{}, json.array({})})"), "[{},[]]");
    /* A marked table encodes 1..#t and ignores other keys. */
    ASSERT_STR_EQ(eval(L, "json.encode(json.array({1, 2, x = 3}))"), "[1,2]");
    run(L, "local t = {1}\n assert(json.array(t) == t)\n assert(json.array(t) == t)\n"
           "assert(tostring(t):find('^kr.json.array'))\n"
           "local ok, err = pcall(json.array, setmetatable({}, {}))\n"
           "assert(not ok and err:find('already has a metatable'), err)\n"
           "assert(not pcall(json.array, 1))\n"
           "assert(json.empty_array ~= json.null)");
    /* Decoded arrays keep the marker, so [] survives a round trip; {} stays an object. */
    ASSERT_STR_EQ(eval(L, "json.encode(json.decode('{\"a\":[],\"b\":{},\"c\":[[]]}').a)"), "[]");
    ASSERT_STR_EQ(eval(L, "json.encode(json.decode('{\"b\":{}}').b)"), "{}");
    ASSERT_STR_EQ(eval(L, "json.encode(json.decode('[[]]'))"), "[[]]");
    finish(L);
}

TEST(encode_errors)
{
    lua_State *L = new_state();
    run(L, "local function fails(v, msg)\n"
           "  local ok, err = pcall(json.encode, v)\n"
           "  assert(not ok, 'expected an error: ' .. msg)\n"
           "  assert(err:find(msg, 1, true), err)\n"
           "end\n"
           "fails(print, 'cannot encode a function')\n"
           "fails({f = function() end}, 'cannot encode a function')\n"
           "fails({coroutine.create(print)}, 'cannot encode a thread')\n"
           "fails(io.stdout, 'cannot encode a userdata')\n"
           "fails({[1.5] = 1}, 'table key must be a string or an integer')\n"
           "fails({[true] = 1}, 'table key must be a string or an integer')\n"
           "fails({[{}] = 1}, 'table key must be a string or an integer')\n"
           "fails({a = {[print] = 1}}, 'table key must be a string or an integer')\n"
           "assert(not pcall(json.encode))");
    finish(L);
}

TEST(encode_cycles)
{
    lua_State *L = new_state();
    run(L, "local t = {} t.self = t\n"
           "local ok, err = pcall(json.encode, t)\n"
           "assert(not ok and err:find('circular reference', 1, true), err)\n"
           "local a, b, c = {}, {}, {}\n a.b = b b.c = c c[1] = a\n"
           "ok, err = pcall(json.encode, {x = a})\n"
           "assert(not ok and err:find('circular reference', 1, true), err)\n"
           "local arr = json.array({}) arr[1] = arr\n"
           "ok, err = pcall(json.encode, arr)\n"
           "assert(not ok and err:find('circular reference', 1, true), err)\n"
           /* Shared, not circular: the same table twice among siblings and at two depths. */
           "local s = {1, 2}\n"
           "assert(json.encode({s, s, {s}}) == '[[1,2],[1,2],[[1,2]]]')");
    finish(L);
}

TEST(encode_depth_limit)
{
    lua_State *L = new_state();
    run(L, "local function nest(n) local t = {} for _ = 2, n do t = {t} end return t end\n"
           "assert(json.encode(nest(64)) == string.rep('[', 63) .. '{}' .. string.rep(']', 63))\n"
           "local ok, err = pcall(json.encode, nest(65))\n"
           "assert(not ok and err:find('nesting too deep', 1, true), err)\n"
           "ok, err = pcall(json.encode, nest(100000))\n"
           "assert(not ok and err:find('nesting too deep', 1, true), err)");

    /* The C API: explicit depth options, stack left as found, error codes. */
    const char *err = NULL;
    int rc;
    run(L, "deep3 = {{{1}}}");
    lua_getglobal(L, "deep3");
    ASSERT_STR_EQ(c_encode(L, 3, &err, &rc), "[[[1]]]");
    ASSERT_NULL(c_encode(L, 2, &err, &rc));
    ASSERT_EQ(rc, KR_ELIMIT);
    ASSERT_STR_EQ(err, "nesting too deep");
    lua_pop(L, 1);
    /* max_depth above the default takes the heap path for the cycle stack. */
    run(L, "deep = {} for _ = 2, 500 do deep = {deep} end");
    lua_getglobal(L, "deep");
    ASSERT_NOT_NULL(c_encode(L, 500, &err, &rc));
    ASSERT_NULL(c_encode(L, 499, &err, &rc));
    ASSERT_EQ(rc, KR_ELIMIT);
    ASSERT_NULL(c_encode(L, 0, &err, &rc)); /* 0 means the default, 64 */
    lua_pop(L, 1);
    run(L, "cyc = {} cyc[1] = {cyc}");
    lua_getglobal(L, "cyc");
    ASSERT_NULL(c_encode(L, 0, &err, &rc));
    ASSERT_EQ(rc, KR_EINVAL);
    ASSERT_STR_EQ(err, "circular reference");
    lua_pop(L, 1);
    lua_pushcfunction(L, luaopen_base);
    ASSERT_NULL(c_encode(L, 0, &err, &rc));
    ASSERT_STR_EQ(err, "cannot encode a function");
    lua_pop(L, 1);
    ASSERT_EQ(lua_gettop(L), 0);
    finish(L);
}

TEST(c_encode_appends)
{
    lua_State *L = new_state();
    kr_sbuf_t sb;
    const char *err;
    kr_sbuf_init(&sb, 0);
    kr_sbuf_puts(&sb, "prefix:");
    lua_pushinteger(L, 42);
    lua_pushstring(L, "x");
    ASSERT_OK(kr_json_encode(L, -2, &sb, NULL, &err)); /* relative index */
    ASSERT_OK(kr_json_encode(L, 2, &sb, NULL, &err));
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), "prefix:42\"x\"", 12);
    ASSERT_EQ(lua_gettop(L), 2);
    kr_sbuf_dispose(&sb);
    finish(L);
}

TEST(decode_values)
{
    lua_State *L = new_state();
    run(L, "assert(json.decode('null') == json.null)\n"
           "assert(json.decode('true') == true and json.decode('false') == false)\n"
           "assert(json.decode('\"hi\"') == 'hi')\n"
           "assert(json.decode('  \\t\\r\\n 7 \\n ') == 7)\n"
           "local t = json.decode('{\"a\":[1,2,{\"b\":null}],\"C\":\"x\",\"e\":{}}')\n"
           "assert(#t.a == 3 and t.a[1] == 1 and t.a[3].b == json.null and t.C == 'x')\n"
           "assert(next(t.e) == nil and getmetatable(t.e) == nil)\n"
           "local mt = getmetatable(json.array({}))\n"
           "assert(mt ~= nil and getmetatable(t.a) == mt)\n"
           "local n = json.decode('[null, 1, null]')\n"
           "assert(#n == 3 and n[1] == json.null and n[3] == json.null)\n"
           /* duplicate keys: the last one wins, numbers after it still line up */
           "local d = json.decode('{\"k\":1,\"k\":2.5,\"z\":3}')\n"
           "assert(d.k == 2.5 and math.type(d.z) == 'integer')\n"
           /* a number-looking key does not confuse the number scan */
           "local q = json.decode('{\"-1.5e3\":1, \"x\\\\\\\"9\":2.0, \"y\":[3]}')\n"
           "assert(math.type(q['-1.5e3']) == 'integer' and math.type(q['x\"9']) == 'float')\n"
           "assert(math.type(q.y[1]) == 'integer')\n"
           "assert(json.decode('123') == 123)\n"
           "assert(json.decode(123) == 123)  -- a number argument is its string form\n"
           "assert(not pcall(json.decode, {}))\n"
           "assert(not pcall(json.decode))");
    finish(L);
}

TEST(decode_numbers)
{
    lua_State *L = new_state();
    run(L, "local function is(s, typ, v)\n"
           "  local x = json.decode(s)\n"
           "  assert(math.type(x) == typ, s .. ' gave ' .. tostring(math.type(x)))\n"
           "  assert(x == v, s .. ' gave ' .. tostring(x))\n"
           "end\n"
           "is('1', 'integer', 1)\n"
           "is('-17', 'integer', -17)\n"
           "is('1.5', 'float', 1.5)\n"
           "is('1.0', 'float', 1.0)\n"
           "is('1e2', 'float', 100.0)\n"
           "is('1E2', 'float', 100.0)\n"
           "is('9007199254740992', 'integer', 1 << 53)\n"
           "is('9007199254740993', 'integer', (1 << 53) + 1)\n"
           "is('9223372036854775807', 'integer', math.maxinteger)\n"
           "is('-9223372036854775808', 'integer', math.mininteger)\n"
           "is('9223372036854775808', 'float', 2^63)\n"
           "is('-0', 'integer', 0)\n"
           "is('2.5e-3', 'float', 0.0025)\n");
    run(L, "local z = json.decode('-0.0')\n"
           "assert(math.type(z) == 'float' and 1/z == -math.huge)\n"
           "assert(json.encode(json.decode('[1,1.5,-0.0,1e2]')) == '[1,1.5,-0,100]')");
    finish(L);
}

TEST(decode_unicode)
{
    lua_State *L = new_state();
    run(L, "assert(json.decode('\"\\\\u00e9\"') == '\\u{e9}')\n"
           "assert(json.decode('\"\\\\ud83d\\\\ude00\"') == '\\u{1F600}')\n"
           "assert(json.decode('\"\\\\u2713 ok\"') == '\\u{2713} ok')\n"
           "assert(json.decode('\"\\\\\\\"\\\\\\\\\\\\/\\\\b\\\\f\\\\n\\\\r\\\\t\"') == "
           "'\"\\\\/\\b\\f\\n\\r\\t')\n"
           "assert(json.decode('\"h\\u{e9}llo \\u{1F600}\"') == 'h\\u{e9}llo \\u{1F600}')\n"
           /* a lone surrogate is not valid JSON text */
           "local v, err = json.decode('\"\\\\ud83d\"')\n"
           "assert(v == nil and err:find('^invalid JSON at offset'), err)\n"
           /* the BOM is tolerated (cJSON skips it) */
           "assert(json.decode('\\xef\\xbb\\xbf[1]')[1] == 1)");
    finish(L);
}

/* "\u0000" inside strings survives decoding (cJSON alone would cut the string there), in
 * values and keys; an escaped backslash before "u0000" is not an escape; numbers after it are
 * still read from the right text. */
TEST(decode_embedded_nul)
{
    lua_State *L = new_state();
    run(L, "local v = json.decode('\"a\\\\u0000b\"')\n"
           "assert(v == 'a\\0b' and #v == 3, v)\n"
           "local t = json.decode('{\"k\\\\u0000x\": [\"\\\\u0000\", 1, 2.5, \"\\\\\\\\u0000\", 3], \"n\": -0}')\n"
           "assert(t['k\\0x'][1] == '\\0')\n"
           "assert(t['k\\0x'][2] == 1 and math.type(t['k\\0x'][2]) == 'integer')\n"
           "assert(t['k\\0x'][3] == 2.5)\n"
           "assert(t['k\\0x'][4] == '\\\\u0000', t['k\\0x'][4])\n"
           "assert(t['k\\0x'][5] == 3 and math.type(t.n) == 'integer')\n"
           "assert(json.encode(json.decode('\"x\\\\u0000y\"')) == '\"x\\\\u0000y\"')");
    finish(L);
}

TEST(decode_errors)
{
    lua_State *L = new_state();
    run(L, "local function bad(s, off)\n"
           "  local v, err = json.decode(s)\n"
           "  assert(v == nil, 'decoded: ' .. s)\n"
           "  assert(type(err) == 'string' and err:find('^invalid JSON at offset %d+$'), err)\n"
           "  if off then assert(err == 'invalid JSON at offset ' .. off, err) end\n"
           "end\n"
           "bad('', 0)\n"
           "bad('   ')\n"
           "bad('[1] x', 4)\n"
           "bad('1 2', 2)\n"
           "bad('{} {}', 3)\n"
           "bad('[1]\\0', 3)\n"
           "bad('{\"a\":')\n"
           "bad('[1,2')\n"
           "bad('\"abc')\n"
           "bad('[1,]')\n"
           "bad('{a:1}')\n"
           "bad('nul')\n"
           "bad('tru')\n"
           "bad('NaN')\n"
           "bad('-')\n"
           "bad('1.2.3')\n"
           "bad('\"\\\\x\"')\n"
           "bad('\"\\\\u12\"')\n");
    finish(L);
}

TEST(decode_depth_limit)
{
    lua_State *L = new_state();
    run(L, "local function nest(n) return string.rep('[', n) .. string.rep(']', n) end\n"
           "assert(#json.decode(nest(64)) == 1)\n"
           "local v, err = json.decode(nest(65))\n"
           "assert(v == nil and err == 'nesting too deep', err)\n"
           "v, err = json.decode(string.rep('{\"a\":', 65) .. '1' .. string.rep('}', 65))\n"
           "assert(v == nil and err == 'nesting too deep', err)\n"
           /* beyond cJSON's own limit of 1000 the answer is the same */
           "v, err = json.decode(nest(5000))\n"
           "assert(v == nil and err == 'nesting too deep', err)\n"
           "v, err = json.decode(string.rep('[', 100000))\n"
           "assert(v == nil and err == 'nesting too deep', err)");

    /* C API: explicit limits; nothing is pushed on failure. */
    char errbuf[64];
    kr_json_opts_t opts = {.max_depth = 2};
    ASSERT_OK(kr_json_decode(L, "[[1]]", 5, &opts, errbuf, sizeof(errbuf)));
    ASSERT_EQ(lua_gettop(L), 1);
    lua_pop(L, 1);
    ASSERT_EQ(kr_json_decode(L, "[[[1]]]", 7, &opts, errbuf, sizeof(errbuf)), KR_ELIMIT);
    ASSERT_STR_EQ(errbuf, "nesting too deep");
    ASSERT_EQ(lua_gettop(L), 0);
    ASSERT_EQ(kr_json_decode(L, "{\"a\":{\"b\":{}}}", 14, &opts, errbuf, sizeof(errbuf)),
              KR_ELIMIT);
    ASSERT_EQ(lua_gettop(L), 0);
    finish(L);
}

TEST(decode_c_api_unterminated)
{
    lua_State *L = new_state();
    char errbuf[64];
    /* Exact-size heap copies: ASan catches any read past len. */
    static const char *const inputs[] = {"[1,2,{\"a\":\"b\"}]", "123", "-1.5e3", "\"str\"", "true",
                                         "null", "[1", "\"abc", "tru", "{\"a\"", "1e", "  "};
    for (size_t i = 0; i < KR_ARRAY_SIZE(inputs); i++) {
        size_t len = strlen(inputs[i]);
        char *p = kr_malloc(len);
        memcpy(p, inputs[i], len);
        int rc = kr_json_decode(L, p, len, NULL, errbuf, sizeof(errbuf));
        ASSERT_EQ(lua_gettop(L), rc == 0 ? 1 : 0);
        if (i < 6)
            ASSERT_OK(rc);
        else
            ASSERT_EQ(rc, KR_EINVAL);
        lua_settop(L, 0);
        kr_free(p);
    }
    /* A body slice: only the first len bytes count. */
    ASSERT_OK(kr_json_decode(L, "[7]garbage", 3, NULL, errbuf, sizeof(errbuf)));
    lua_rawgeti(L, -1, 1);
    ASSERT_EQ(lua_tointeger(L, -1), 7);
    lua_settop(L, 0);
    /* Error text is cut to the buffer it is given; errlen 0 is allowed. */
    ASSERT_EQ(kr_json_decode(L, "[", 1, NULL, errbuf, 8), KR_EINVAL);
    ASSERT_STR_EQ(errbuf, "invalid");
    ASSERT_EQ(kr_json_decode(L, "[", 1, NULL, NULL, 0), KR_EINVAL);
    ASSERT(kr_json_is_null(L, 1) == 0);
    kr_json_push_null(L);
    ASSERT(kr_json_is_null(L, -1));
    kr_json_push_empty_array(L);
    ASSERT(!kr_json_is_null(L, -1));
    lua_settop(L, 0);
    finish(L);
}

TEST(round_trip)
{
    lua_State *L = new_state();
    static const char *const docs[] = {
        "{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hi\",{\"n\":2,\"f\":0.5}]}",
        "[1,-2,3.25,\"x\",true,false,null,[],{},[[]],{\"a\":{\"b\":[null]}}]",
        "\"\\u0001\\u001f\\\"\\\\\"",
        "[9223372036854775807,-9223372036854775808,1e+300,1.5e-07]",
        "{\"\\u00e9\":\"\\u2713\",\"k\":{\"x\":[{},[]]}}",
    };
    run(L, "function eq(a, b)\n"
           "  if type(a) ~= type(b) then return false end\n"
           "  if type(a) ~= 'table' then return a == b and math.type(a) == math.type(b) end\n"
           "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
           "  for k, v in pairs(a) do if not eq(v, b[k]) then return false end end\n"
           "  for k in pairs(b) do if a[k] == nil then return false end end\n"
           "  return true\n"
           "end");
    for (size_t i = 0; i < KR_ARRAY_SIZE(docs); i++) {
        /* decode -> encode -> decode gives the same value; the text may order keys differently
         * (lua_next order), so only its length is compared. */
        lua_pushstring(L, docs[i]);
        lua_setglobal(L, "doc");
        run(L, "local v = json.decode(doc)\n"
               "local text = json.encode(v)\n"
               "assert(#text == #json.encode(json.decode(text)))\n"
               "assert(eq(v, json.decode(text)), text)");
    }
    /* Without multi-key objects the text itself survives. */
    ASSERT_STR_EQ(eval(L, "json.encode(json.decode('[1,-2,3.25,\"x\",true,false,null,[],{}]'))"),
                  "[1,-2,3.25,\"x\",true,false,null,[],{}]");
    ASSERT_STR_EQ(eval(L, "json.encode(json.decode('\"\\\\u0001\\\\u001f\\\\\\\"\"'))"),
                  "\"\\u0001\\u001f\\\"\"");
    /* A larger value built in Lua. */
    run(L, "local v = {users = {}, meta = {count = 100, ratio = 0.25, tags = json.array({})}}\n"
           "for i = 1, 100 do v.users[i] = {id = i, name = 'user' .. i, score = (i + 0.5) / 7,\n"
           "  active = i % 2 == 0, nick = json.null} end\n"
           "local w = json.decode(json.encode(v))\n"
           "setmetatable(w.users, nil) setmetatable(w.meta.tags, nil)\n"
           "setmetatable(v.meta.tags, nil)\n"
           "assert(eq(v, w))\n"
           /* the documented cost of %.14g: an integral float comes back as an integer */
           "assert(math.type(json.decode(json.encode(7 / 7))) == 'integer')");
    finish(L);
}

/* ---- memory cap -------------------------------------------------------------------------- */

/* capped_t, capped_alloc: lua_capped.h */

static lua_State *capped_state(capped_t *c)
{
    c->used = 0;
    c->limit = SIZE_MAX;
    lua_State *L = lua_newstate(capped_alloc, c);
    ASSERT_NOT_NULL(L);
    luaL_openlibs(L);
    kr_lua_json_push_module(L);
    lua_setglobal(L, "json");
    return L;
}

/* cJSON's tree lives outside the VM: count its blocks to prove it is always freed. */
static long cjson_live;

static void *counting_malloc(size_t n)
{
    void *p = malloc(n);
    if (p != NULL)
        cjson_live++;
    return p;
}

static void counting_free(void *p)
{
    if (p != NULL)
        cjson_live--;
    free(p);
}

static char *big_json(size_t n, size_t *len)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, n * 24);
    kr_sbuf_putc(&sb, '[');
    for (size_t i = 0; i < n; i++)
        kr_sbuf_printf(&sb, "%s{\"id\":%zu,\"v\":[%zu.5,\"s%zu\"]}", i ? "," : "", i, i, i);
    kr_sbuf_putc(&sb, ']');
    *len = kr_sbuf_len(&sb);
    char *s = kr_strndup(kr_sbuf_data(&sb), *len);
    kr_sbuf_dispose(&sb);
    return s;
}

TEST(decode_memory_cap)
{
    cJSON_Hooks hooks = {counting_malloc, counting_free};
    capped_t cap;
    lua_State *L;
    size_t len;
    char *doc = big_json(2000, &len);
    char errbuf[64];
    int failed = 0, succeeded = 0;

    cJSON_InitHooks(&hooks);
    L = capped_state(&cap);
    lua_gc(L, LUA_GCCOLLECT);
    size_t base = cap.used;

    /* Too little for the outer table: fails at once. */
    cap.limit = base + 1024;
    ASSERT_EQ(kr_json_decode(L, doc, len, NULL, errbuf, sizeof(errbuf)), KR_ENOMEM);
    ASSERT_STR_EQ(errbuf, "not enough memory");
    ASSERT_EQ(lua_gettop(L), 0);
    ASSERT_EQ(cjson_live, 0);

    /* Fail at many points part-way through the conversion: never a leak, never a stray value,
     * and the state stays usable. */
    for (size_t extra = 16 * 1024; extra < 2 * 1024 * 1024; extra += 37 * 1024) {
        cap.limit = SIZE_MAX;
        lua_gc(L, LUA_GCCOLLECT);
        cap.limit = cap.used + extra;
        int rc = kr_json_decode(L, doc, len, NULL, errbuf, sizeof(errbuf));
        ASSERT_EQ(cjson_live, 0);
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

    /* From Lua: decode raises (out of memory is not an input error) and pcall catches it. */
    cap.limit = SIZE_MAX;
    lua_pushlstring(L, doc, len);
    lua_setglobal(L, "doc");
    lua_gc(L, LUA_GCCOLLECT);
    cap.limit = cap.used + 64 * 1024;
    luaL_loadstring(L, "local ok, err = pcall(json.decode, doc) return ok, err");
    if (lua_pcall(L, 0, 2, 0) == LUA_OK) {
        ASSERT(!lua_toboolean(L, 1));
    }
    lua_settop(L, 0);
    ASSERT_EQ(cjson_live, 0);

    cap.limit = SIZE_MAX;
    run(L, "assert(#json.decode(doc) == 2000)");
    lua_close(L);
    ASSERT_EQ(cap.used, 0);
    ASSERT_EQ(cjson_live, 0);
    cJSON_InitHooks(NULL);
    kr_free(doc);
    LEAK_CHECK();
}

TEST(encode_memory_cap)
{
    capped_t cap;
    lua_State *L = capped_state(&cap);
    /* The builder lives outside the VM, so encoding succeeds and pushing the result fails:
     * the builder must still be freed (LeakSanitizer checks). */
    run(L, "big = {} for i = 1, 20000 do big[i] = 'item number ' .. i end");
    lua_gc(L, LUA_GCCOLLECT);
    cap.limit = cap.used + 16 * 1024;
    luaL_loadstring(L, "local ok, err = pcall(json.encode, big) return ok, err");
    if (lua_pcall(L, 0, 2, 0) == LUA_OK) {
        ASSERT(!lua_toboolean(L, 1));
        ASSERT_STR_EQ(lua_tostring(L, 2), "not enough memory");
    }
    lua_settop(L, 0);
    cap.limit = SIZE_MAX;
    run(L, "assert(#json.encode(big) > 200000)");

    /* The C API encodes without touching the VM allocator at all. */
    lua_getglobal(L, "big");
    lua_gc(L, LUA_GCCOLLECT);
    cap.limit = cap.used;
    kr_sbuf_t sb;
    const char *err;
    kr_sbuf_init(&sb, 0);
    ASSERT_OK(kr_json_encode(L, -1, &sb, NULL, &err));
    kr_sbuf_dispose(&sb);
    cap.limit = SIZE_MAX;
    lua_settop(L, 0);
    lua_close(L);
    ASSERT_EQ(cap.used, 0);
    LEAK_CHECK();
}

KR_TEST_MAIN(KR_TEST_ENTRY(encode_scalars), KR_TEST_ENTRY(encode_numbers),
             KR_TEST_ENTRY(encode_numbers_locale_independent), KR_TEST_ENTRY(encode_strings),
             KR_TEST_ENTRY(encode_invalid_utf8), KR_TEST_ENTRY(encode_tables),
             KR_TEST_ENTRY(encode_empty_tables), KR_TEST_ENTRY(encode_errors),
             KR_TEST_ENTRY(encode_cycles), KR_TEST_ENTRY(encode_depth_limit),
             KR_TEST_ENTRY(c_encode_appends), KR_TEST_ENTRY(decode_values),
             KR_TEST_ENTRY(decode_numbers), KR_TEST_ENTRY(decode_unicode),
             KR_TEST_ENTRY(decode_embedded_nul),
             KR_TEST_ENTRY(decode_errors), KR_TEST_ENTRY(decode_depth_limit),
             KR_TEST_ENTRY(decode_c_api_unterminated), KR_TEST_ENTRY(round_trip),
             KR_TEST_ENTRY(decode_memory_cap), KR_TEST_ENTRY(encode_memory_cap))
