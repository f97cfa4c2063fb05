/* kr_lua_hub_int.h: what kr_lua_hub.c (hubs, methods, broadcasts) and kr_lua_hub_calls.c
 * (streams, upload iterators, client results) share. Nothing else includes it.
 */
#ifndef KR_LUA_HUB_INT_H
#define KR_LUA_HUB_INT_H

#include "kr_hub.h"
#include "kr_lua.h"

#include <lua.h>

/* kr_lua_hub.c */
void kr__lua_push_ctx(lua_State *L, kr_sr_conn_t *c);
kr_sr_conn_t *kr__lua_check_ctx(lua_State *L, int idx);
/* Encodes the Lua value at idx as one value of the protocol (JSON text or msgpack). */
int kr__lua_hub_encode_value(lua_State *L, int idx, int protocol, kr_sbuf_t *sb,
                             const char **err);
/* Pushes a received value: node is a cJSON node or a msgpack_object of m's protocol (NULL
 * and null push nil). 0, or an error with nothing pushed. */
int kr__lua_hub_push_value(lua_State *L, const kr_sr_msg_t *m, const void *node, char *err,
                           size_t errlen);
/* One Invocation record of target(args at first..first+n-1) with id (NULL: none). */
int kr__lua_hub_encode_invocation(lua_State *L, int protocol, const char *id, const char *target,
                                  int first, int n, kr_sbuf_t *sb, const char **err);
/* The error text of a failed method: base plus, when detailed, the first line of the Lua
 * error. */
void kr__lua_hub_error_text(char *out, size_t outlen, const char *base, int detailed,
                            const char *error);
char **kr__lua_hub_copy_stream_ids(const kr_sr_msg_t *m);
/* Closes the upload streams of a finished method and frees ids (and its strings). */
void kr__lua_hub_close_uploads(kr_sr_conn_t *c, char **ids, unsigned n);

/* kr_lua_hub_calls.c */
/* Starts the stream method at L[base] with nargs values above it (ctx, a nil placeholder for
 * emit, arguments, upload iterators) and pre values below it (a per-method policy's runner
 * and policy, which then call the method). Always returns 0 (the app took the invocation). */
int kr__lua_hub_start_stream(kr_vm_t *vm, kr_sr_conn_t *c, const kr_sr_msg_t *m, int base,
                             int nargs, int pre);
/* Pushes the iterator of upload stream id. */
void kr__lua_push_upload(lua_State *L, kr_sr_conn_t *c, const char *stream_id);
/* ctx:invoke(method, ...) */
int kr__lua_ctx_invoke(lua_State *L);
/* Creates the metatables (stream emitter, upload iterator). */
void kr__lua_open_hub_calls(lua_State *L);

#endif
