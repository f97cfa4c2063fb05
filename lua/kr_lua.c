/* kr_lua.c: script generations, the memory cap, the CPU-slice hook, loading and reload
 * (see kr_lua.h). */
#include "kr_lua.h"
#include "kr_lua_auth.h"
#include "kr_fiber.h"
#include "kr_log.h"
#include "kr_lua_cors.h"
#include "kr_lua_backplane.h"
#include "kr_lua_log.h"

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
    l->max_tasks = 1000;
    l->task_retention_s = 3600;
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
    kr__lua_open_task(L, vm);
    kr__lua_open_log(L, vm);
    kr__lua_open_cors(L, vm);
    kr__lua_open_backplane(L, vm); /* after kr__lua_open_core: wraps kr.metrics */
    kr__lua_open_auth(L, vm);
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

/* ---- loading: FILE:LINE: message ------------------------------------------------------- */

/* Whether the first line of msg carries a Lua position ("src:12: "), wherever src ends: the
 * error may come from a module the script required, not from the script itself. */
static int has_position(const char *msg)
{
    for (const char *p = msg; *p != '\0' && *p != '\n'; p++) {
        if (p[0] != ':' || p[1] < '0' || p[1] > '9')
            continue;
        const char *q = p + 1;
        while (*q >= '0' && *q <= '9')
            q++;
        if (q[0] == ':' && q[1] == ' ')
            return 1;
    }
    return 0;
}

/* The load-time message handler: like msg_handler, but a load error must read FILE:LINE:
 * message, and Lua adds no position for error(x, 0) or a non-string error object. Those get
 * the line of the innermost Lua function still running (level 1 is what raised: often C). */
static int load_msg_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
        msg = lua_tostring(L, -1);
    else if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_Debug ar;
    for (int level = 1; !has_position(msg) && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
            msg = lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs the chunk on top of L under load_msg_handler and the load budget. */
static int run_loaded_chunk(kr_vm_t *vm)
{
    kr_app_t *app = vm->app;
    lua_State *L = vm->L;
    int base = lua_gettop(L);
    lua_pushcfunction(L, load_msg_handler);
    lua_insert(L, base);
    app->slice_deadline_ns = kr_lua_cpu_ns() + vm->lua_limits.load_budget_ms * 1000000ull;
    app->slice_tripped = 0;
    int st = lua_pcall(L, 0, 0, base);
    app->slice_deadline_ns = 0;
    app->slice_tripped = 0;
    kr__lua_reset_hook(L);
    lua_remove(L, base);
    return st;
}

/* The message part of a load error (what precedes the traceback) as one line: require's
 * "error loading module 'm' from file './m.lua':\n\t./m.lua:2: ..." keeps the inner position
 * on the same line. Returns a new string; *rest points at the traceback (or NULL). */
static char *message_line(const char *path, const char *msg, const char **rest)
{
    const char *tb = strstr(msg, "\nstack traceback:");
    size_t n = tb ? (size_t)(tb - msg) : strlen(msg);
    *rest = tb ? tb + 1 : NULL;
    /* Syntax errors and raised errors carry their position; "cannot open" and an out-of-memory
     * error (Lua runs no message handler for it) get the script's name in front. */
    int bare = !has_position(msg) && strncmp(msg, "cannot open", 11) != 0;
    size_t plen = bare ? strlen(path) + 2 : 0;
    char *line = kr_calloc(1, plen + n + 1);
    char *o = line;
    if (bare)
        o += sprintf(o, "%s: ", path);
    for (size_t i = 0; i < n; i++) {
        if (msg[i] != '\n') {
            *o++ = msg[i];
            continue;
        }
        *o++ = ' ';
        while (i + 1 < n && (msg[i + 1] == '\t' || msg[i + 1] == ' ' || msg[i + 1] == '\n'))
            i++;
    }
    *o = '\0';
    return line;
}

/* Reports the load error on top of L: the FILE:LINE: message line, then the traceback. The
 * first load is the command's own answer (what --check and a failed start print: the bare
 * lines on stderr); a reload goes through the log. Returns the line (caller frees). */
static char *report_load_error(kr_app_t *app, const char *path, lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL)
        msg = "(error object is not a string)";
    const char *rest;
    char *line = message_line(path, msg, &rest);
    if (app->vm == NULL) {
        fprintf(stderr, "%s\n", line);
        if (rest)
            fprintf(stderr, "%s\n", rest);
    } else {
        /* Hub clients hear of a failed reload once, from broadcast_reload_error: not also
         * line by line through kr.logger's SignalR sink. */
        kr_log_sink_hold();
        kr_log_write(KR_LOG_ERROR, "lua", NULL, "%s", line);
        if (rest)
            kr_log_write(KR_LOG_ERROR, "lua", NULL, "%s", rest);
        kr_log_sink_release();
    }
    return line;
}

/* ---- loading: the files a generation reads (what --watch watches) ---------------------- */

static const char files_key = 'f';    /* registry: { [path] = true } files this state loaded */
static const char send_log_key = 's'; /* registry: kr.send_log before any script could touch it */

static void record_file(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        return; /* loadfile() with no name reads stdin */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &files_key);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int pass_results(lua_State *L, int status, lua_KContext base)
{
    KR_UNUSED(status);
    return lua_gettop(L) - (int)base;
}

/* dofile and loadfile, recording the file first. lua_callk keeps dofile yieldable, as the
 * original is (a handler may dofile a chunk that sleeps). */
static int tracked_file_loader(lua_State *L)
{
    record_file(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, pass_results);
    return pass_results(L, LUA_OK, 0);
}

/* require's Lua-file searcher: on success it returns the loader and the file name. */
static int tracked_searcher(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, LUA_MULTRET);
    if (lua_gettop(L) >= 2 && lua_isfunction(L, 1))
        record_file(L, 2);
    return lua_gettop(L);
}

static void wrap_global(lua_State *L, const char *name)
{
    lua_getglobal(L, name);
    lua_pushcclosure(L, tracked_file_loader, 1);
    lua_setglobal(L, name);
}

/* Before the scripts run: record every file they pull in (so --watch sees a module change
 * too), and keep the pristine kr.send_log for reporting a failed reload to hub clients. */
static void prepare_load(lua_State *L)
{
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &files_key);
    wrap_global(L, "dofile");
    wrap_global(L, "loadfile");
    int top = lua_gettop(L);
    lua_getglobal(L, "package");
    if (lua_getfield(L, -1, "searchers") == LUA_TTABLE && lua_rawgeti(L, -1, 2) == LUA_TFUNCTION) {
        lua_pushcclosure(L, tracked_searcher, 1);
        lua_rawseti(L, -2, 2);
    }
    lua_settop(L, top);
    lua_getglobal(L, "kr");
    lua_getfield(L, -1, "send_log");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &send_log_key);
    lua_pop(L, 1);
}

/* Adds the files vm loaded (its scripts' modules) to the watcher. */
static void watch_loaded_files(kr_app_t *app, kr_vm_t *vm)
{
    if (app->watch == NULL || vm == NULL)
        return;
    lua_State *L = vm->L;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &files_key);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING)
            (void)kr_watch_add(app->watch, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
}

/* Loads every script into vm. Returns 0, or KR_ESCRIPT after reporting FILE:LINE: message;
 * then *err_line (when not NULL) gets that line (caller frees). */
static int vm_load_scripts(kr_vm_t *vm, char **err_line)
{
    kr_app_t *app = vm->app;
    lua_State *L = vm->L;
    prepare_load(L);
    vm->loading = 1;
    int rc = 0;
    for (unsigned i = 0; i < app->nscripts && rc == 0; i++) {
        const char *path = app->scripts[i];
        int st = luaL_loadfilex(L, path, "t");
        if (st == LUA_OK)
            st = run_loaded_chunk(vm);
        if (st != LUA_OK) {
            char *line = report_load_error(app, path, L);
            if (err_line)
                *err_line = line;
            else
                kr_free(line);
            lua_pop(L, 1);
            rc = KR_ESCRIPT;
        }
    }
    vm->loading = 0;
    return rc;
}

/* Tells the clients of the serving generation's default hub that a reload failed, as
 * ReceiveLog{level = "Error", message = line}: through kr.send_log itself, so it is the same
 * envelope as a script's, encoded once per wire format. Runs at loop level (no fiber), where
 * the memory cap and the CPU slice do not apply. */
static void broadcast_reload_error(kr_vm_t *vm, const char *line)
{
    if (vm == NULL || vm->default_hub == NULL)
        return;
    lua_State *L = vm->L;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &send_log_key);
    lua_pushliteral(L, "Error");
    lua_pushstring(L, line);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        KR_LOG(KR_LOG_WARN, "reload", "cannot tell the hub clients: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
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
    kr_bus_stop(app->bus); /* remove this server's count, disconnect from Redis */
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
    app->bus = kr__lua_backplane_new(app);
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
    if (vm_load_scripts(vm, NULL) != 0) {
        kr__lua_stop_timers(vm);
        cancel_background(app, vm);
        kr__lua_hubs_discard(app, vm);
        kr_vm_unref(vm);
        return KR_ESCRIPT;
    }
    apply_limits(app, vm);
    kr__lua_log_adopt(app, vm); /* kr.logger, or back to the command line */
    kr__lua_hubs_adopt(app, vm);
    app->vm = vm;
    return 0;
}

int kr_app_reload(kr_app_t *app)
{
    if (app->stopping)
        return KR_ECANCELED;
    kr_vm_t *vm = vm_new(app);
    char *err_line = NULL;
    if (vm_load_scripts(vm, &err_line) != 0) {
        kr_log_sink_hold(); /* see report_load_error */
        KR_LOG(KR_LOG_ERROR, "reload", "reload failed: generation %u keeps serving",
               app->vm ? app->vm->generation : 0);
        kr_log_sink_release();
        /* A module the broken version requires for the first time is watched too: fixing it
         * must reload. */
        watch_loaded_files(app, vm);
        kr__lua_stop_timers(vm);
        cancel_background(app, vm);
        kr__lua_hubs_discard(app, vm);
        kr_vm_unref(vm);
        broadcast_reload_error(app->vm, err_line);
        kr_free(err_line);
        return KR_ESCRIPT;
    }
    watch_loaded_files(app, vm);
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
    kr__lua_log_adopt(app, vm); /* kr.logger, or back to the command line */
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
    watch_loaded_files(app, app->vm); /* the modules of the first generation */
    return app->watch ? 0 : KR_ENOENT;
}

void kr_app_free(kr_app_t *app)
{
    kr__lua_log_free(app); /* first: nothing may be broadcast to hubs going away */
    kr_watch_free(app->watch);
    app->watch = NULL;
    cancel_all(app);
    kr_bus_free(app->bus); /* after the fibers: no count query waits any more */
    app->bus = NULL;
    kr__lua_tasks_free(app);
    kr__lua_hubs_free(app);
    if (app->vm) {
        kr__lua_stop_timers(app->vm);
        kr_vm_unref(app->vm);
        app->vm = NULL;
    }
    kr_free(app);
}
