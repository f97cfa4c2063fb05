/* kr_lua_backplane.h: the app's bus (kr_bus) and its Lua side: kr.backplane{}, the cluster
 * connection count behind kr.connections{ global = true }, and the backplane counters added to
 * kr.metrics(). The bus belongs to the app (it survives reloads, like the hubs); kr_lua.c
 * creates, stops and frees it, kr_lua_hub.c sends through it.
 */
#ifndef KR_LUA_BACKPLANE_H
#define KR_LUA_BACKPLANE_H

#include "kr_bus.h"
#include "kr_lua.h"

/* The app's bus (local until configured), with the app's hubs behind its ops. */
kr_bus_t *kr__lua_backplane_new(kr_app_t *app);
/* kr.backplane, and the kr.metrics wrapper (after kr__lua_open_core). Stack: kr. */
void kr__lua_open_backplane(lua_State *L, kr_vm_t *vm);
/* kr.connections{ global = true } for hub: returns through lua_yield when it has to ask Redis
 * (the fiber resumes with the count, or nil, err). */
int kr__lua_connections_global(lua_State *L, kr_hub_t *hub);

#endif
