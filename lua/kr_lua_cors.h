/* kr_lua_cors.h: CORS (docs/lua-api.md, kr.cors and the `cors` option of routes and hubs).
 *
 * A generation (kr_vm_t) may have a default policy (kr.cors{...}) and per-route / per-hub
 * overrides (a policy, or false for none). Policies are C objects owned by the generation:
 * they are freed with its lua_State, and requests copy what they need into their response
 * headers (kr_http_req_add_response_header), so nothing outlives the generation.
 *
 * Request step (kr__lua_cors_request, before hubs and routes): picks the policy of the
 * request's target (hub, route matched with the method, else the default), answers a
 * preflight itself (204 with the Access-Control-Allow-* headers, or 403 when the origin,
 * method or a header is not allowed), refuses a WebSocket upgrade to a hub from an origin
 * outside the allow-list (403), and otherwise adds Vary: Origin and, for an allowed origin,
 * Access-Control-Allow-Origin / -Credentials / -Expose-Headers to every response of the
 * request, errors included.
 */
#ifndef KR_LUA_CORS_H
#define KR_LUA_CORS_H

#include "kr_lua.h"

typedef struct kr_cors_s kr_cors_t;

/* The `cors = false` of a route or hub: no CORS at all there. */
extern const kr_cors_t kr__lua_cors_off;
#define KR_LUA_CORS_OFF (&kr__lua_cors_off)

/* Installs kr.cors (callable: sets the generation's default policy) and kr.cors.policy (a
 * policy object for routes and hubs only) in the kr table at the top of L. */
void kr__lua_open_cors(lua_State *L, kr_vm_t *vm);

/* Reads the `cors` field of the options table at idx while the scripts load: NULL when absent
 * (the default policy applies), KR_LUA_CORS_OFF for false, or the policy (a kr.cors /
 * kr.cors.policy object, or a table with the fields of kr.cors). Raises on anything else,
 * its messages prefixed with fname. */
const kr_cors_t *kr__lua_cors_option(lua_State *L, int idx, const char *fname);

/* Attaches an option's result to a route (the data given to kr_router_add) or a hub of vm.
 * NULL does nothing. */
void kr__lua_cors_bind_route(lua_State *L, kr_vm_t *vm, const void *route_data,
                             const kr_cors_t *policy);
void kr__lua_cors_bind_hub(lua_State *L, kr_vm_t *vm, const kr_hub_t *hub, const kr_cors_t *policy);

/* The request step described above. Returns 1 when it answered the request. */
int kr__lua_cors_request(kr_vm_t *vm, kr_http_req_t *req);

#endif
