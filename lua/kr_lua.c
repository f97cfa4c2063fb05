/* kr_lua.c: script generations, the memory cap, the CPU-slice hook, loading and reload
 * (see kr_lua.h). */
#include "kr_lua.h"
#include "kr_fiber.h"
#include "kr_log.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

void kr_lua_limits_default(kr_lua_limits_t *l)
{
    l->max_slice_ms = 1000;
    l->load_budget_ms = 10000;
    l->max_memory = 256u * 1024 * 1024;
    l->max_fibers = 100000;
    l->max_timers = 10000;
}

/* ---- memory cap ------------------------------------------------------------------------- */

/* The cap is enforced only while Lua code runs (a fiber, or the scripts loading): there a
 * refused allocation becomes a catchable "not enough memory" error. Our own glue at loop level
 * (creating a fiber, pushing a request) may go past it: an error there could not be caught
 * without a protected call around every API use (Redis makes the same distinction). */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    kr_vm_t *vm = ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        vm->mem_used -= osize;
        return NULL;
    }
    if (nsize > osize && vm->mem_used + (nsize - osize) > vm->mem_limit &&
        (vm->loading || (vm->app && vm->app->running && vm->app->running->vm == vm))) {
        vm->mem_failed = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL)
        return NULL;
    vm->mem_used += nsize - osize;
    return p;
}

static int on_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    KR_LOG(KR_LOG_FATAL, "lua", "unprotected Lua error: %s", msg ? msg : "?");
    abort();
}

/* The slice is CPU time of this thread: what the script itself burns, not what other
 * processes on a busy machine take from it (a wall-clock slice would stop innocent handlers
 * under load). One process thread runs the loop, so this is also how long the loop is held. */
uint64_t kr_lua_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- CPU slice -------------------------------------------------------------------------- */

#define HOOK_COUNT 10000

/* Runs every HOOK_COUNT instructions in every thread of the VM. Past the slice it raises, and
 * re-arms itself to fire on every instruction so a pcall that catches the error gets it again
 * at once (Redis luaMaskCountHook). resume() in kr_fiber.c clears the trip and puts the
 * normal hook back on the fiber it resumes. */
static void slice_hook(lua_State *L, lua_Debug *ar)
{
    KR_UNUSED(ar);
    kr_vm_t *vm = kr_vm_from_lua(L);
    kr_app_t *app = vm->app;
    if (!app->slice_tripped) {
        uint64_t deadline = app->slice_deadline_ns;
        if (deadline == 0 || kr_lua_cpu_ns() < deadline)
            return;
        /* Tripped: every thread of this run raises from now on (a plain coroutine that dies
         * of it cannot hand control back to a fiber that would carry on). */
        app->slice_tripped = 1;
        /* The thread that runs the whole thing (the fiber, or the main thread while loading)
         * raises at its next instruction too, not after another 10k. lua_sethook is safe on a
         * thread that is not running (lua.c calls it from a signal handler). */
        lua_State *top = app->running ? app->running->co : vm->L;
        if (top != L)
            lua_sethook(top, slice_hook, LUA_MASKCOUNT, 1);
    }
    lua_sethook(L, slice_hook, LUA_MASKCOUNT, 1);
    uint64_t budget = vm->loading ? vm->lua_limits.load_budget_ms : vm->lua_limits.max_slice_ms;
    luaL_error(L, "script ran for more than %I ms without yielding (CPU slice exceeded)",
               (lua_Integer)budget);
}

void kr__lua_reset_hook(lua_State *L)
{
    lua_sethook(L, slice_hook, LUA_MASKCOUNT, HOOK_COUNT);
}

/* ---- generations ------------------------------------------------------------------------ */

static const char vm_key = 'v'; /* registry key: the kr_vm_t of this state */

kr_vm_t *kr_vm_from_lua(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &vm_key);
    kr_vm_t *vm = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return vm;
}

static void release_route(void *data, void *ud)
{
    kr_vm_t *vm = ud;
    luaL_unref(vm->L, LUA_REGISTRYINDEX, (int)(intptr_t)data);
}

static void vm_free(kr_vm_t *vm)
{
    if (vm->router) {
        kr_router_foreach(vm->router, release_route, vm);
        kr_router_free(vm->router);
    }
    for (unsigned i = 0; i < vm->nstatics; i++)
        kr_static_free(vm->statics[i]);
    kr_free(vm->statics);
    kr_free(vm->hubs);
    kr_fiber_pool_drain(vm);
    if (vm->L)
        lua_close(vm->L);
    KR_LOG(KR_LOG_DEBUG, "lua", "generation %u released", vm->generation);
    kr_free(vm);
}

void kr_vm_ref(kr_vm_t *vm)
{
    vm->refs++;
}

void kr_vm_unref(kr_vm_t *vm)
{
    KR_ASSERT(vm->refs > 0);
    if (--vm->refs == 0)
        vm_free(vm);
}

static int msg_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int kr_lua_pcall_traceback(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msg_handler);
    lua_insert(L, base);
    int st = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return st;
}

static kr_vm_t *vm_new(kr_app_t *app)
{
    kr_vm_t *vm = kr_calloc(1, sizeof(*vm));
    vm->app = app;
    vm->refs = 1;
    vm->generation = ++app->next_generation;
    /* Every generation starts from the app's base limits (the defaults), not from what the
     * previous generation set: a limit removed from the scripts goes back on reload. */
    vm->lua_limits = app->limits;
    kr_http_limits_default(&vm->http_limits);
    vm->shutdown_grace_ms = KR_DEFAULT_SHUTDOWN_GRACE_MS;
    vm->mem_limit = vm->lua_limits.max_memory;
    kr_list_init(&vm->timers);
    vm->router = kr_router_new();
    vm->L = lua_newstate(vm_alloc, vm);
    lua_State *L = vm->L;
    lua_atpanic(L, on_panic);
    *(kr_fiber_t **)lua_getextraspace(L) = NULL; /* new threads copy this: plain coroutines
                                                   are never mistaken for fibers */
    luaL_openlibs(L);
    lua_pushlightuserdata(L, vm);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &vm_key);
    lua_newtable(L); /* the kr module */
    kr__lua_open_core(L, vm);
    kr__lua_open_http(L, vm);
    kr__lua_open_hub(L, vm);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "kr");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "kr"); /* require("kr") works too */
    lua_pop(L, 3);
    kr__lua_reset_hook(L);
    return vm;
}

/* Loads every script into vm. Returns 0 or KR_ESCRIPT after logging FILE:LINE: message. */
static int vm_load_scripts(kr_vm_t *vm)
{
    kr_app_t *app = vm->app;
    lua_State *L = vm->L;
    vm->loading = 1;
    int rc = 0;
    for (unsigned i = 0; i < app->nscripts && rc == 0; i++) {
        const char *path = app->scripts[i];
        int st = luaL_loadfilex(L, path, "t");
        if (st == LUA_OK) {
            app->slice_deadline_ns = kr_lua_cpu_ns() + vm->lua_limits.load_budget_ms * 1000000ull;
            app->slice_tripped = 0;
            st = kr_lua_pcall_traceback(L, 0, 0);
            app->slice_deadline_ns = 0;
            app->slice_tripped = 0;
            kr__lua_reset_hook(L);
        }
        if (st != LUA_OK) {
            const char *msg = lua_tostring(L, -1);
            if (msg == NULL)
                msg = "(error object is not a string)";
            /* luaL_loadfile prefixes "cannot open"/"path:line:" itself; a runtime error carries
             * the position of the raising line. Print the first line plain, the rest after. */
            const char *nl = strchr(msg, '\n');
            int first = nl ? (int)(nl - msg) : (int)strlen(msg);
            int prefixed =
                strncmp(msg, path, strlen(path)) == 0 || strncmp(msg, "cannot open", 11) == 0;
            if (app->vm == NULL) {
                /* The first load is the command's own answer: the bare FILE:LINE: message
                 * line (what --check and a failed start print), then the traceback. */
                fprintf(stderr, "%s%s%.*s\n", prefixed ? "" : path, prefixed ? "" : ": ", first,
                        msg);
                if (nl)
                    fprintf(stderr, "%s\n", nl + 1);
            } else {
                kr_log_write(KR_LOG_ERROR, "lua", NULL, "%s%s%.*s", prefixed ? "" : path,
                             prefixed ? "" : ": ", first, msg);
                if (nl)
                    kr_log_write(KR_LOG_ERROR, "lua", NULL, "%s", nl + 1);
            }
            lua_pop(L, 1);
            rc = KR_ESCRIPT;
        }
    }
    vm->loading = 0;
    return rc;
}

/* ---- the app: server hooks -------------------------------------------------------------- */

static void tick(kr_server_t *s, void *ud)
{
    KR_UNUSED(s);
    kr_fiber_run_queue(ud);
}

static int tick_pending(void *ud)
{
    kr_app_t *app = ud;
    return !kr_list_empty(&app->runq);
}

static int busy(void *ud)
{
    kr_app_t *app = ud;
    return app->active_requests > 0;
}

static void on_reload(kr_server_t *s, void *ud)
{
    KR_UNUSED(s);
    kr_app_reload(ud);
}

static void on_stop(kr_server_t *s, void *ud)
{
    KR_UNUSED(s);
    kr_app_t *app = ud;
    app->stopping = 1;
    kr_watch_free(app->watch);
    app->watch = NULL;
    if (app->vm)
        kr__lua_stop_timers(app->vm);
    kr__lua_hubs_shutdown(app);
}

/* Cancels the background fibers (kr.spawn, timer ticks) of one generation: a replaced or
 * failed generation must not keep running loops next to the new one. Requests and hub
 * invocations finish on their own. */
static void cancel_background(kr_app_t *app, kr_vm_t *vm)
{
    kr_list_t *it = app->fibers.next;
    while (it != &app->fibers) {
        kr_fiber_t *f = kr_container_of(it, kr_fiber_t, link);
        it = it->next;
        if (f->vm == vm && f->background) {
            /* The next fiber may be freed by this cancel only if it is f itself; restart the
             * walk to stay safe against done callbacks that end other fibers. */
            kr_fiber_cancel(f);
            it = app->fibers.next;
        }
    }
}

static void cancel_all(kr_app_t *app)
{
    while (!kr_list_empty(&app->fibers)) {
        kr_fiber_t *f = kr_container_of(app->fibers.next, kr_fiber_t, link);
        kr_fiber_cancel(f);
    }
}

static void on_final(kr_server_t *s, void *ud)
{
    KR_UNUSED(s);
    cancel_all(ud);
}

kr_app_t *kr_app_new(kr_server_t *server, char **scripts, unsigned nscripts)
{
    kr_app_t *app = kr_calloc(1, sizeof(*app));
    app->server = server;
    app->scripts = scripts;
    app->nscripts = nscripts;
    kr_lua_limits_default(&app->limits);
    kr_list_init(&app->runq);
    kr_list_init(&app->fibers);
    server->handler = kr__lua_handle_request;
    server->handler_ud = app;
    server->tick = tick;
    server->tick_pending = tick_pending;
    server->tick_ud = app;
    server->on_reload = on_reload;
    server->reload_ud = app;
    server->on_stop = on_stop;
    server->stop_ud = app;
    server->on_final = on_final;
    server->final_ud = app;
    server->busy = busy;
    server->busy_ud = app;
    return app;
}

/* Limits set by kr.limits{} are reloadable: they take effect with the generation. */
static void apply_limits(kr_app_t *app, kr_vm_t *vm)
{
    app->server->limits = vm->http_limits;
    app->server->shutdown_grace_ms = vm->shutdown_grace_ms;
}

int kr_app_load(kr_app_t *app)
{
    kr_vm_t *vm = vm_new(app);
    if (vm_load_scripts(vm) != 0) {
        kr__lua_stop_timers(vm);
        cancel_background(app, vm);
        kr__lua_hubs_discard(app, vm);
        kr_vm_unref(vm);
        return KR_ESCRIPT;
    }
    apply_limits(app, vm);
    kr__lua_hubs_adopt(app, vm);
    app->vm = vm;
    return 0;
}

int kr_app_reload(kr_app_t *app)
{
    if (app->stopping)
        return KR_ECANCELED;
    kr_vm_t *vm = vm_new(app);
    if (vm_load_scripts(vm) != 0) {
        KR_LOG(KR_LOG_ERROR, "reload", "reload failed: generation %u keeps serving",
               app->vm ? app->vm->generation : 0);
        kr__lua_stop_timers(vm);
        cancel_background(app, vm);
        kr__lua_hubs_discard(app, vm);
        kr_vm_unref(vm);
        return KR_ESCRIPT;
    }
    kr_vm_t *old = app->vm;
    if (old) {
        int changed = old->nlistens != vm->nlistens;
        for (unsigned i = 0; !changed && i < vm->nlistens; i++)
            changed = strcmp(old->listens[i].host, vm->listens[i].host) != 0 ||
                      old->listens[i].port != vm->listens[i].port;
        if (changed)
            KR_LOG(KR_LOG_WARN, "reload", "kr.listen changed: listeners change on restart only");
        kr__lua_stop_timers(old);
        cancel_background(app, old);
    }
    apply_limits(app, vm);
    kr__lua_hubs_adopt(app, vm);
    app->vm = vm;
    KR_LOG(KR_LOG_INFO, "reload", "generation %u serving", vm->generation);
    if (old)
        kr_vm_unref(old); /* freed when its last running fiber ends */
    return 0;
}

static void on_file_changed(void *ud)
{
    kr_app_t *app = ud;
    KR_LOG(KR_LOG_INFO, "reload", "a script changed: reloading");
    kr_app_reload(app);
}

int kr_app_watch(kr_app_t *app)
{
    app->watch =
        kr_watch_new(app->server->loop, app->scripts, app->nscripts, 200, on_file_changed, app);
    return app->watch ? 0 : KR_ENOENT;
}

void kr_app_free(kr_app_t *app)
{
    kr_watch_free(app->watch);
    app->watch = NULL;
    cancel_all(app);
    kr__lua_hubs_free(app);
    if (app->vm) {
        kr__lua_stop_timers(app->vm);
        kr_vm_unref(app->vm);
        app->vm = NULL;
    }
    kr_free(app);
}
