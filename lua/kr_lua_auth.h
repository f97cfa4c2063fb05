/* kr_lua_auth.h: authentication and authorization from Lua (kr.auth.jwt, kr.auth.api_key,
 * kr.auth.basic, kr.policy, the authorize options of routes, hubs and hub methods).
 * What kr_lua_http.c, kr_lua_hub.c and kr_lua.c call; see kr_lua_auth.c.
 */
#ifndef KR_LUA_AUTH_H
#define KR_LUA_AUTH_H

#include "kr_hub.h"
#include "kr_lua.h"

#include <lua.h>

/* Installs kr.auth and kr.policy into the kr table at the top of L. */
void kr__lua_open_auth(lua_State *L, kr_vm_t *vm);

/* Routes. kr.map_route calls set_route with the handler's registry ref and the authorize
 * option at idx (nil, true or a policy name; anything else raises). */
void kr__lua_auth_set_route(lua_State *L, int ref, int idx);
/* Pushes the fiber function of a matched route on co: the handler itself (returns 0) when
 * neither the route nor any scheme asks for authentication, else the auth runner followed by
 * its leading arguments (returns how many, the caller then pushes req and res). */
int kr__lua_auth_push_route(lua_State *co, kr_http_req_t *req, int ref);
/* Implemented by kr_lua_http.c: req:_set_user(user), req at 1, the claims table at 2. */
int kr__lua_req_set_user(lua_State *L);
/* Implemented by kr_lua_http.c: pushes s[0..n) form-decoded (query values, form bodies). */
void kr__lua_push_form_decoded(lua_State *L, const char *s, size_t n);

/* Hubs. Checks a hub's or a hub method's authorize option at idx (raises when invalid). */
void kr__lua_auth_check_option(lua_State *L, int idx, const char *fname);
/* Remembers hub's authorize option (the value at idx) for this generation. */
void kr__lua_auth_set_hub(lua_State *L, kr_hub_t *hub, int idx);
/* The hub's kr_hub_app_t.authorize (ud: the kr_app_t). */
void kr__lua_auth_hub(kr_hub_t *hub, kr_http_req_t *req, void *ud);
/* Pushes the function that checks a per-method policy: runner(policy, method, ctx, ...). */
void kr__lua_auth_push_method_runner(lua_State *L);
/* Whether a hub method's fiber error is the runner's refusal (the caller answers "Failed to
 * invoke 'X' because user is unauthorized"). */
int kr__lua_auth_is_denial(const char *error);

#endif
