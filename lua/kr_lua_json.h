/* kr_lua_json.h: conversion between Lua values and JSON text, and the kr.json module.
 *
 * Used by kr.json.encode/decode, res:json(), req:json() and the SignalR JSON hub protocol.
 * Encoding walks the Lua value and writes straight into a kr_sbuf_t (no intermediate tree),
 * because broadcast encoding is a hot path; it never raises a Lua error, so C callers may use
 * it from unprotected code. Decoding parses with cJSON and then builds the Lua value under
 * lua_pcall, so a memory error raised by the capped VM allocator cannot leak the cJSON tree.
 * Owns nothing beyond the call: one array-marker metatable per lua_State lives in the registry.
 *
 * The rules (what kr.json documents to scripts):
 * - Empty-table rule: an empty table encodes as `{}` unless it carries the array marker
 *   (kr.json.array(t), or any array produced by kr.json.decode), in which case it is `[]`.
 *   kr.json.empty_array (an immutable sentinel) always encodes as `[]`.
 * - A table without the marker is an array when its keys are exactly the integers 1..n (n >= 1);
 *   anything else (holes, extra keys) is an object. Object keys are strings, or integers
 *   written as decimal strings; any other key type is an error. A marked table encodes indices
 *   1..#t (raw length) and ignores its other keys.
 * - Object key order is lua_next order (Lua keeps no insertion order): unspecified but stable
 *   for an unmodified table.
 * - Numbers: Lua integers print as integers. Floats print with the shortest of %.14g..%.17g
 *   that reads back to the same double (lua-cjson style): 2.0 prints as `2`, 0.1 as `0.1`.
 *   NaN and infinities are an error. Decoding gives a Lua integer for a number token without
 *   '.', 'e' or 'E' that fits in int64 (so "-0" is integer 0), a float otherwise.
 * - Strings: `"`, `\` and control characters are escaped (\b \f \n \r \t, others \u00XX);
 *   valid UTF-8 passes through unchanged; every byte that is not part of a well-formed UTF-8
 *   sequence (stray continuation, overlong form, surrogate, > U+10FFFF, truncated) is replaced
 *   by \ufffd, so the output is always valid JSON. Decoded strings are cut at a "\u0000"
 *   escape (cJSON keeps C strings).
 * - nil encodes as null; kr.json.null (a NULL light userdata) is null both ways. Functions,
 *   threads and userdata (other than the two sentinels) are an error.
 * - Metamethods are ignored: access is raw (lua_rawlen, lua_next, lua_rawgeti).
 * - Depth: containers nested deeper than max_depth (default 64, at most KR_JSON_DEPTH_LIMIT)
 *   are an error in both directions; a table that contains itself is "circular reference".
 */
#ifndef KR_LUA_JSON_H
#define KR_LUA_JSON_H

#include "kr_common.h"
#include "kr_buf.h"

#include <lua.h>

#define KR_JSON_DEFAULT_MAX_DEPTH 64
/* cJSON refuses to nest deeper than this (CJSON_NESTING_LIMIT); larger max_depth is clamped. */
#define KR_JSON_DEPTH_LIMIT 1000

typedef struct kr_json_opts_s {
    int max_depth; /* default 64 when opts is NULL or max_depth <= 0 */
} kr_json_opts_t;

/* Appends the JSON text of the Lua value at idx to sb. Never raises a Lua error and leaves the
 * Lua stack as it found it. Returns 0, or a negative KR_E* code with *err set to a static
 * message: "cannot encode a function" (also "... a thread", "... a userdata"), "circular
 * reference", "nesting too deep", "cannot encode NaN or infinity", "table key must be a string
 * or an integer", "not enough memory" (Lua stack could not grow). On error sb may hold partial
 * output: the caller resets it. */
int kr_json_encode(lua_State *L, int idx, kr_sbuf_t *sb, const kr_json_opts_t *opts,
                   const char **err);

/* Decodes the JSON text s[0..len) (need not be NUL-terminated) and pushes one Lua value.
 * Returns 0, or a negative code and pushes nothing, with a message in errbuf:
 * KR_EINVAL "invalid JSON at offset N", KR_ELIMIT "nesting too deep", KR_ENOMEM "not enough
 * memory" (the VM allocator refused), KR_ESCRIPT (another Lua error, its message). */
int kr_json_decode(lua_State *L, const char *s, size_t len, const kr_json_opts_t *opts,
                   char *errbuf, size_t errlen);

/* Pushes the Lua value of an already parsed cJSON node (SignalR arguments). Numbers: integral
 * values within +-2^53 become integers (no source text to tell 1 from 1.0). Returns 0, or an
 * error (nothing pushed) with a message in errbuf; never raises. */
struct cJSON;
int kr_json_push_cjson(lua_State *L, const struct cJSON *node, const kr_json_opts_t *opts,
                       char *errbuf, size_t errlen);

/* Pushes the kr.json table: encode(v) -> string (raises on values it cannot encode),
 * decode(s) -> value | nil, err, null, array(t) -> t, empty_array. */
void kr_lua_json_push_module(lua_State *L);

/* kr.json.null: a light userdata NULL (the lua-cjson convention). */
void kr_json_push_null(lua_State *L);
int kr_json_is_null(lua_State *L, int idx);
/* kr.json.empty_array: a light userdata sentinel that encodes as []. */
void kr_json_push_empty_array(lua_State *L);
/* Pushes the array-marker metatable, creating it on first use (may raise a memory error).
 * Other decoders (MessagePack) mark their arrays with it too. */
void kr_json_push_array_mt(lua_State *L);
/* 1 when the table at idx carries the array marker. Never raises. */
int kr_json_is_marked_array(lua_State *L, int idx);

#endif
