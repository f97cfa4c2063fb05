/* kr_lua_log.h: kr.logger{} and its SignalR sink (kr_lua_log.c). */
#ifndef KR_LUA_LOG_H
#define KR_LUA_LOG_H

#include "kr_lua.h"

/* Installs kr.logger into the kr table at the top of L. */
void kr__lua_open_log(lua_State *L, kr_vm_t *vm);
/* The generation is adopted: its kr.logger configuration replaces the log's, or, when it has
 * none, the log goes back to the command-line configuration. */
void kr__lua_log_adopt(kr_app_t *app, kr_vm_t *vm);
/* The app is going away: removes the sink and drops the lines still waiting for it. */
void kr__lua_log_free(kr_app_t *app);

#endif
