/* kr_lua_msgpack.h: conversion between Lua values and MessagePack (the SignalR MessagePack
 * hub protocol's arguments, stream items and results).
 *
 * The same rules as kr_lua_json.h wherever both formats have the notion (array detection and
 * the array marker, kr.json.null and kr.json.empty_array, raw access, depth and cycles), so
 * a hub method behaves the same whichever protocol the client chose. Where MessagePack differs:
 * - Lua integers are msgpack integers (smallest width), floats are float64 (NaN and infinities
 *   are allowed: msgpack has them).
 * - A Lua string is a msgpack str when it is valid UTF-8 and a bin otherwise (Lua strings are
 *   byte strings; a .NET byte[] or a JS Uint8Array arrives as bin and becomes a Lua string).
 * - Decoding: nil -> nil at the top level and kr.json.null inside containers; bin -> string;
 *   float32/64 -> float; positive integers above INT64_MAX -> float; the timestamp extension
 *   (type -1, a .NET DateTime or a JS Date) -> the ISO-8601 UTC string kr.now() writes
 *   ("2025-10-11T21:30:00.123Z"); any other extension -> an error. Map keys may be strings
 *   (str or bin) or integers; other key types are an error. Arrays get the array marker.
 * - Encoding table keys: strings follow the string rule above; integer keys are written as
 *   decimal strings, as kr.json writes them, so a table reaches a client the same way in
 *   both protocols (and decodes back with string keys in both).
 * Encoding never raises and leaves the stack as it found it; decoding never raises either
 * (conversion runs under lua_pcall, like kr_json_push_cjson).
 */
#ifndef KR_LUA_MSGPACK_H
#define KR_LUA_MSGPACK_H

#include "kr_buf.h"
#include "kr_common.h"
#include "kr_lua_json.h"

#include <lua.h>

struct msgpack_object;

/* Appends the msgpack encoding of the Lua value at idx (nil -> nil). Returns 0, or a negative
 * KR_E* code with *err a static message (the messages of kr_json_encode). On error sb may hold
 * partial output. */
int kr_mp_encode(lua_State *L, int idx, kr_sbuf_t *sb, const kr_json_opts_t *opts,
                 const char **err);

/* Pushes the Lua value of a decoded msgpack object. Returns 0, or an error (nothing pushed)
 * with a message in errbuf; never raises. */
int kr_mp_push(lua_State *L, const struct msgpack_object *o, const kr_json_opts_t *opts,
               char *errbuf, size_t errlen);

#endif
