/* kr_lua_backplane.c: kr.backplane{}, kr.connections{ global = true } and the backplane
 * counters of kr.metrics() (see kr_lua_backplane.h and core/kr_bus.h). */
#include "kr_lua_backplane.h"
#include "kr_fiber.h"
#include "kr_log.h"

#include <lauxlib.h>
#include <stdio.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* ---- the bus's view of the app ----------------------------------------------------------- */

static kr_hub_t *find_hub(void *ud, const char *path, size_t len)
{
    kr_app_t *app = ud;
    for (unsigned i = 0; i < app->nhubs; i++) {
        const char *p = kr_hub_path(app->hubs[i]);
        if (strlen(p) == len && memcmp(p, path, len) == 0)
            return app->hubs[i];
    }
    return NULL;
}

static kr_hub_t *const *app_hubs(void *ud, unsigned *n)
{
    kr_app_t *app = ud;
    *n = app->nhubs;
    return app->hubs;
}

kr_bus_t *kr__lua_backplane_new(kr_app_t *app)
{
    static const kr_bus_ops_t ops = {find_hub, app_hubs};
    return kr_bus_new(app->server, &ops, app);
}

/* ---- kr.backplane{ redis = URL, password = ..., prefix = "kestrun" } --------------------- */

static const char *opt_string(lua_State *L, const char *key)
{
    int t = lua_getfield(L, 1, key);
    const char *s = NULL;
    if (t != LUA_TNIL) {
        if (t != LUA_TSTRING)
            luaL_error(L, "kr.backplane: %s must be a string", key);
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

static int l_backplane(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    if (!vm->loading)
        return luaL_error(L, "kr.backplane may only be called while the scripts load");
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
        if (strcmp(k, "redis") != 0 && strcmp(k, "password") != 0 && strcmp(k, "prefix") != 0)
            return luaL_error(L, "kr.backplane: unknown option '%s' (redis, password, prefix)",
                              k);
    }
    const char *url = opt_string(L, "redis");
    const char *password = opt_string(L, "password");
    const char *prefix = opt_string(L, "prefix");
    kr_bus_t *bus = vm->app->bus;
    if (kr_bus_started(bus)) {
        /* A reload: the connection is the process's, set up once. */
        if (!kr_bus_same_config(bus, url, password, prefix))
            KR_LOG(KR_LOG_WARN, "reload", "kr.backplane changed: it changes on restart only");
        lua_pushboolean(L, 1);
        return 1;
    }
    char err[200];
    if (vm->app->vm != NULL) {
        /* A reload that adds a backplane the running server was started without. */
        KR_LOG(KR_LOG_WARN, "reload", "kr.backplane added: it takes effect at the next restart");
        lua_pushboolean(L, 1);
        return 1;
    }
    if (kr_bus_configure(bus, url, password, prefix, 0, err, sizeof(err)) != 0)
        return luaL_error(L, "kr.backplane: %s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- kr.connections{ global = true } ---------------------------------------------------- */

typedef struct count_wait_s {
    kr_fiber_t *f;
    kr_bus_query_t *q;
    int in_call;  /* inside kr_bus_count */
    int finished; /* the answer came */
} count_wait_t;

static void count_done(void *ud, int err, uint64_t count)
{
    count_wait_t *w = ud;
    lua_State *co = w->f->co;
    if (err == 0) {
        lua_pushinteger(co, (lua_Integer)count);
        kr_fiber_wake(w->f, 1);
    } else {
        luaL_pushfail(co);
        lua_pushstring(co, "backplane unavailable");
        kr_fiber_wake(w->f, 2);
    }
    w->finished = 1;
    if (!w->in_call)
        kr_free(w);
}

static void count_unwait(kr_fiber_t *f, void *ud)
{
    KR_UNUSED(f);
    count_wait_t *w = ud;
    kr_bus_query_cancel(w->q);
    kr_free(w);
}

int kr__lua_connections_global(lua_State *L, kr_hub_t *hub)
{
    kr_bus_t *bus = kr_vm_from_lua(L)->app->bus;
    if (hub == NULL) {
        lua_pushinteger(L, 0);
        return 1;
    }
    if (!kr_bus_is_redis(bus)) {
        /* One server: the cluster is this server. */
        lua_pushinteger(L, (lua_Integer)kr_hub_connection_count(hub));
        return 1;
    }
    if (!kr_bus_is_up(bus)) {
        luaL_pushfail(L);
        lua_pushstring(L, "backplane unavailable");
        return 2;
    }
    kr_fiber_t *f = kr_fiber_current(L);
    if (f == NULL)
        return luaL_error(L, "kr.connections{ global = true } waits for Redis: call it from a "
                             "route, hub method, timer or kr.spawn");
    if (!lua_checkstack(L, 4))
        return luaL_error(L, "stack overflow");
    count_wait_t *w = kr_calloc(1, sizeof(*w));
    w->f = f;
    kr_fiber_wait_event(f, count_unwait, w);
    w->in_call = 1;
    w->q = kr_bus_count(bus, hub, count_done, w);
    w->in_call = 0;
    if (w->finished)
        kr_free(w); /* answered at once: the fiber is queued with the values */
    return lua_yield(L, 0);
}

/* ---- kr.metrics(): the backplane counters ---------------------------------------------- */

static int l_metrics(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(2)); /* the core's kr.metrics */
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    if (lua_gettop(L) >= 1 && lua_istable(L, 1)) {
        kr_bus_t *bus = VM_UPVALUE(L)->app->bus;
        const kr_bus_stats_t *s = kr_bus_stats(bus);
        lua_pushboolean(L, kr_bus_is_up(bus));
        lua_setfield(L, 1, "backplane_connected");
        lua_pushinteger(L, (lua_Integer)s->published);
        lua_setfield(L, 1, "backplane_published");
        lua_pushinteger(L, (lua_Integer)s->received);
        lua_setfield(L, 1, "backplane_received");
        lua_pushinteger(L, (lua_Integer)s->dropped);
        lua_setfield(L, 1, "backplane_dropped");
        lua_pushinteger(L, (lua_Integer)s->invalid);
        lua_setfield(L, 1, "backplane_invalid");
    }
    return lua_gettop(L);
}

void kr__lua_open_backplane(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_backplane, 1);
    lua_setfield(L, -2, "backplane");
    if (lua_getfield(L, -1, "metrics") == LUA_TFUNCTION) {
        lua_pushlightuserdata(L, vm);
        lua_insert(L, -2);
        lua_pushcclosure(L, l_metrics, 2);
        lua_setfield(L, -2, "metrics");
    } else {
        lua_pop(L, 1);
    }
}
