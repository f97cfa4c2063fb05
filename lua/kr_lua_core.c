/* kr_lua_core.c: the `kr` base library: time, fibers, timers, logging, JSON, server setup
 * (kr.listen, kr.limits) and kr.metrics.
 *
 * Error convention (architecture B6.5): wrong types and calls in the wrong place raise;
 * operational failures return nil, err.
 */
#include "kr_cron.h"
#include "kr_fiber.h"
#include "kr_log.h"
#include "kr_lua.h"
#include "kr_lua_json.h"
#include "kr_tls.h"

#include <lauxlib.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* Raises unless called from a fiber's own coroutine (never at load time or inside a plain
 * coroutine, where a yield would go to the wrong resumer). */
static kr_fiber_t *check_fiber(lua_State *L, const char *fname)
{
    kr_fiber_t *f = kr_fiber_current(L);
    if (f == NULL)
        luaL_error(L,
                   "%s: cannot wait here: it may only be called from a route handler, timer or "
                   "kr.spawn fiber (not at load time, and not inside a plain coroutine)",
                   fname);
    return f;
}

/* ---- time and fibers -------------------------------------------------------------------- */

static int l_kr_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0 && ms < 1e12, 1, "duration out of range");
    kr_fiber_t *f = check_fiber(L, "kr.sleep");
    kr_fiber_wait_sleep(f, (uint64_t)ms);
    return lua_yield(L, 0);
}

static int l_kr_yield(lua_State *L)
{
    check_fiber(L, "kr.yield");
    return lua_yield(L, 0);
}

static int l_kr_now(lua_State *L)
{
    char ts[KR_ISO_TS_LEN + 1];
    kr_time_iso(kr_time_wall_ms(), ts);
    lua_pushlstring(L, ts, KR_ISO_TS_LEN);
    return 1;
}

/* Wall clock in microseconds since the epoch, as an integer: for latency measurements and
 * timestamps finer than kr.now()'s milliseconds. */
static int l_kr_clock_us(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    return 1;
}

static void log_fiber_error(kr_fiber_t *f, kr_fiber_status_e status)
{
    if (status == KR_FIBER_ERROR)
        KR_LOG(KR_LOG_ERROR, "lua", "%s failed: %s", f->name, f->error);
}

static void spawn_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    KR_UNUSED(ud);
    log_fiber_error(f, status);
}

static int l_kr_spawn(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    if (vm->app->stopping) {
        luaL_pushfail(L);
        lua_pushliteral(L, "server stopping");
        return 2;
    }
    kr_fiber_t *f = kr_fiber_new(vm, "kr.spawn fiber", spawn_done, NULL);
    if (f)
        f->background = 1;
    if (f == NULL) {
        luaL_pushfail(L);
        lua_pushliteral(L, "too many fibers");
        return 2;
    }
    lua_xmove(L, f->co, nargs + 1);
    f->nargs = nargs;
    kr_fiber_start(f);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- timers ----------------------------------------------------------------------------- */

typedef struct timer_box_s timer_box_t;

typedef struct kr_timer_s {
    uv_timer_t h;
    kr_vm_t *vm;
    int fnref;
    int repeat;
    int stopped;
    uint32_t refs; /* armed (until closed) + a running tick fiber */
    uint64_t ms;
    kr_fiber_t *running;
    timer_box_t *box;
    kr_list_t link; /* vm->timers */
    int is_cron;    /* kr.cron: re-armed for the next matching second after each fire */
    kr_cron_t cron;
    int64_t cron_next; /* Unix second of the pending fire */
    char *cron_expr;   /* for tostring */
} kr_timer_t;

struct timer_box_s {
    kr_timer_t *t; /* NULL once the timer is gone */
};

#define TIMER_MT "kr.Timer"

static void timer_unref(kr_timer_t *t)
{
    if (--t->refs > 0)
        return;
    if (t->box)
        t->box->t = NULL;
    kr_vm_t *vm = t->vm;
    kr_free(t->cron_expr);
    kr_free(t);
    kr_vm_unref(vm);
}

static void on_timer_closed(uv_handle_t *h)
{
    timer_unref(kr_container_of(h, kr_timer_t, h));
}

static void timer_stop(kr_timer_t *t)
{
    if (t->stopped)
        return;
    t->stopped = 1;
    uv_timer_stop(&t->h);
    kr_list_remove(&t->link);
    t->vm->ntimers--;
    luaL_unref(t->vm->L, LUA_REGISTRYINDEX, t->fnref);
    t->fnref = LUA_NOREF;
    uv_close((uv_handle_t *)&t->h, on_timer_closed);
}

void kr__lua_stop_timers(kr_vm_t *vm)
{
    while (!kr_list_empty(&vm->timers))
        timer_stop(kr_container_of(vm->timers.next, kr_timer_t, link));
}

static void tick_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    kr_timer_t *t = ud;
    log_fiber_error(f, status);
    t->running = NULL;
    timer_unref(t);
}

static void on_timer(uv_timer_t *h);

/* Arms a kr.cron timer for the first matching second after the pending one (or after now, if
 * the wall clock has moved past it: missed fires are not caught up). */
static void cron_arm(kr_timer_t *t)
{
    uv_update_time(t->h.loop); /* the delay counts from now, not from the loop's cached time */
    int64_t now_ms = kr_time_wall_ms();
    int64_t base = now_ms / 1000 > t->cron_next ? now_ms / 1000 : t->cron_next;
    int64_t next = kr_cron_next(&t->cron, base);
    if (next < 0) {
        KR_LOG(KR_LOG_WARN, "timer", "kr.cron '%s': no fire time within 50 years", t->cron_expr);
        return;
    }
    t->cron_next = next;
    int64_t delay = next * 1000 - now_ms;
    uv_timer_start(&t->h, on_timer, delay > 0 ? (uint64_t)delay : 0, 0);
}

static void on_timer(uv_timer_t *h)
{
    kr_timer_t *t = kr_container_of(h, kr_timer_t, h);
    if (t->is_cron) {
        /* The loop's clock and the wall clock differ a little (or the wall clock was set
         * back): never run before the second it is due. */
        int64_t early_ms = t->cron_next * 1000 - kr_time_wall_ms();
        if (early_ms > 0) {
            uv_timer_start(&t->h, on_timer, (uint64_t)early_ms, 0);
            return;
        }
        cron_arm(t);
    }
    if (t->running != NULL) {
        /* kr.every skips a tick while the previous run is still going (architecture). */
        KR_LOG(KR_LOG_DEBUG, "timer", "tick skipped: the previous run is still going");
        return;
    }
    kr_fiber_t *f = kr_fiber_new(t->vm,
                                 t->is_cron  ? "kr.cron tick"
                                 : t->repeat ? "kr.every tick"
                                             : "kr.after callback",
                                 tick_done, t);
    if (f)
        f->background = 1;
    if (f == NULL) {
        KR_LOG(KR_LOG_WARN, "timer", "tick skipped: too many fibers");
    } else {
        lua_rawgeti(t->vm->L, LUA_REGISTRYINDEX, t->fnref);
        lua_xmove(t->vm->L, f->co, 1);
        t->running = f;
        t->refs++;
    }
    if (!t->repeat)
        timer_stop(t); /* before the fiber runs: timer:stop() inside it is then a no-op */
    if (f != NULL)
        kr_fiber_start(f);
}

/* Pushes fail, message when no timer may be created now; returns 2 then, else 0. */
static int timer_refused(lua_State *L, kr_vm_t *vm)
{
    if (vm->app->stopping) {
        luaL_pushfail(L);
        lua_pushliteral(L, "server stopping");
        return 2;
    }
    if (vm->ntimers >= vm->lua_limits.max_timers) {
        luaL_pushfail(L);
        lua_pushliteral(L, "too many pending timers");
        return 2;
    }
    return 0;
}

/* Creates a timer running the function at index 2 and pushes its handle; not armed yet. */
static kr_timer_t *timer_make(lua_State *L, kr_vm_t *vm, int repeat, uint64_t ms)
{
    /* The box is Lua-owned and made first: nothing C-owned exists if it raises. */
    timer_box_t *box = lua_newuserdatauv(L, sizeof(*box), 0);
    box->t = NULL;
    luaL_setmetatable(L, TIMER_MT);
    kr_timer_t *t = kr_calloc(1, sizeof(*t));
    t->vm = vm;
    kr_vm_ref(vm);
    t->repeat = repeat;
    t->ms = ms;
    t->refs = 1;
    lua_pushvalue(L, 2);
    t->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->box = box;
    box->t = t;
    kr_list_insert_tail(&vm->timers, &t->link);
    vm->ntimers++;
    uv_timer_init(vm->app->server->loop, &t->h);
    return t;
}

static int new_timer(lua_State *L, int repeat)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0 && ms < 1e12, 1, "interval out of range");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (repeat)
        luaL_argcheck(L, ms >= 1, 1, "interval must be at least 1 ms");
    if (timer_refused(L, vm))
        return 2;
    kr_timer_t *t = timer_make(L, vm, repeat, (uint64_t)ms);
    uv_timer_start(&t->h, on_timer, t->ms, repeat ? t->ms : 0);
    return 1;
}

/* kr.cron(expr, fn): like kr.every (a fiber per fire, a fire skipped while the previous run
 * goes on), at the seconds a 6-field cron expression matches in local time (kr_cron.h). */
static int l_kr_cron(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    const char *expr = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    kr_cron_t cron;
    char err[KR_CRON_ERR_LEN];
    if (kr_cron_parse(&cron, expr, err, sizeof(err)) != 0)
        return luaL_error(L, "kr.cron: bad expression '%s': %s", expr, err);
    if (timer_refused(L, vm))
        return 2;
    kr_timer_t *t = timer_make(L, vm, 1, 0);
    t->is_cron = 1;
    t->cron = cron;
    t->cron_expr = kr_strdup(expr);
    t->cron_next = kr_time_wall_ms() / 1000;
    cron_arm(t);
    return 1;
}

static int l_kr_after(lua_State *L)
{
    return new_timer(L, 0);
}

static int l_kr_every(lua_State *L)
{
    return new_timer(L, 1);
}

static int l_timer_stop(lua_State *L)
{
    timer_box_t *box = luaL_checkudata(L, 1, TIMER_MT);
    int was_active = box->t != NULL && !box->t->stopped;
    if (box->t)
        timer_stop(box->t);
    lua_pushboolean(L, was_active);
    return 1;
}

static int l_timer_gc(lua_State *L)
{
    timer_box_t *box = luaL_checkudata(L, 1, TIMER_MT);
    /* Dropping the handle does not stop the timer (kr.every(...) without keeping the
     * result keeps ticking); the timer only forgets its box. */
    if (box->t)
        box->t->box = NULL;
    box->t = NULL;
    return 0;
}

static int l_timer_tostring(lua_State *L)
{
    timer_box_t *box = luaL_checkudata(L, 1, TIMER_MT);
    if (box->t && !box->t->stopped && box->t->is_cron)
        lua_pushfstring(L, "kr.Timer (cron '%s')", box->t->cron_expr);
    else if (box->t && !box->t->stopped)
        lua_pushfstring(L, "kr.Timer (%s %d ms)", box->t->repeat ? "every" : "after",
                        (int)box->t->ms);
    else
        lua_pushliteral(L, "kr.Timer (stopped)");
    return 1;
}

/* ---- logging ---------------------------------------------------------------------------- */

static kr_log_level_e check_level(lua_State *L, int idx)
{
    const char *name = luaL_checkstring(L, idx);
    kr_log_level_e level;
    if (kr_log_level_parse(name, &level) != 0)
        luaL_argerror(L, idx, "level must be Verbose, Debug, Information, Warning, Error or Fatal");
    return level;
}

static int l_kr_log(lua_State *L)
{
    kr_log_level_e level = check_level(L, 1);
    size_t len;
    const char *msg = luaL_tolstring(L, 2, &len);
    if (level < kr_log_min_level)
        return 0;
    if (lua_istable(L, 3)) {
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 128);
        const char *err = NULL;
        if (kr_json_encode(L, 3, &sb, NULL, &err) != 0 || kr_sbuf_len(&sb) < 2 ||
            kr_sbuf_data(&sb)[0] != '{') {
            kr_sbuf_dispose(&sb);
            return luaL_argerror(L, 3, err ? err : "fields must be a table with string keys");
        }
        /* Strip the braces: the log line embeds the members in its own object. */
        kr_sbuf_data(&sb)[kr_sbuf_len(&sb) - 1] = '\0';
        kr_log_write(level, "script", kr_sbuf_data(&sb) + 1, "%.*s", (int)len, msg);
        kr_sbuf_dispose(&sb);
    } else {
        kr_log_write(level, "script", NULL, "%.*s", (int)len, msg);
    }
    return 0;
}

/* ---- server setup ----------------------------------------------------------------------- */

static void check_loading(lua_State *L, kr_vm_t *vm, const char *fname)
{
    if (!vm->loading)
        luaL_error(L, "%s may only be called while the scripts load", fname);
}

static int l_kr_listen(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    check_loading(L, vm, "kr.listen");
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    lua_getfield(L, 1, "port");
    lua_Integer port = luaL_optinteger(L, -1, 5000);
    luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0..65535");
    luaL_argcheck(L, strlen(host) < sizeof(vm->listens[0].host), 1, "host too long");
    const char *cert = NULL, *key = NULL;
    if (lua_getfield(L, 1, "tls") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_error(L, "kr.listen: tls must be a table { cert = \"cert.pem\", key = "
                                 "\"key.pem\" }");
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (k == NULL || (strcmp(k, "cert") != 0 && strcmp(k, "key") != 0))
                return luaL_error(L, "kr.listen: unknown tls option '%s' (cert, key)",
                                  k ? k : luaL_typename(L, -2));
            lua_pop(L, 1);
        }
        lua_getfield(L, -1, "cert");
        lua_getfield(L, -2, "key");
        cert = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (cert == NULL || key == NULL || cert[0] == '\0' || key[0] == '\0')
            return luaL_error(L, "kr.listen: tls needs cert and key (PEM file paths)");
        if (strlen(cert) >= sizeof(vm->listens[0].tls_cert) ||
            strlen(key) >= sizeof(vm->listens[0].tls_key))
            return luaL_error(L, "kr.listen: tls file path too long");
    }
    if (vm->nlistens == KR_MAX_LISTENERS)
        return luaL_error(L, "kr.listen: at most %d listeners", KR_MAX_LISTENERS);
    if (cert != NULL && vm->app->vm == NULL) {
        /* The first load (a start, --check): a bad file fails it here, with the script line.
         * A reload only records the paths: listeners change at the next start, and SIGHUP
         * reloads the certificate of the running listener (kr_server_reload_tls). */
        char why[600];
        kr_tls_ctx_t *t = kr_tls_ctx_new(cert, key, why, sizeof(why));
        if (t == NULL)
            return luaL_error(L, "kr.listen: %s", why);
        kr_tls_ctx_free(t);
    }
    kr_listen_req_t *lr = &vm->listens[vm->nlistens++];
    snprintf(lr->tls_cert, sizeof(lr->tls_cert), "%s", cert ? cert : "");
    snprintf(lr->tls_key, sizeof(lr->tls_key), "%s", key ? key : "");
    /* Addresses only (no name resolution); "localhost" is the loopback, as with --listen. */
    snprintf(lr->host, sizeof(lr->host), "%s", kr_strncasecmp(host, "localhost", 10) == 0 ? "127.0.0.1" : host);
    lr->port = (int)port;
    return 0;
}

/* Reads an optional positive integer field of the table at index 1. */
static int opt_limit(lua_State *L, const char *key, uint64_t *out, uint64_t scale)
{
    int found = lua_getfield(L, 1, key) != LUA_TNIL;
    if (found) {
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v <= 0)
            luaL_error(L, "kr.limits: %s must be a positive integer", key);
        *out = (uint64_t)v * scale;
    }
    lua_pop(L, 1);
    return found;
}

static const char *const limit_keys[] = {
    "header_timeout_ms", "keepalive_timeout_ms",
    "max_body_bytes",    "max_request_line_bytes",
    "max_header_bytes",  "max_header_count",
    "lua_max_slice_ms",  "lua_max_memory_mb",
    "lua_max_fibers",    "lua_max_timers",
    "shutdown_grace_ms", "max_tasks",
    "task_retention_s",  "max_connections",
    "max_connections_per_ip", NULL,
};

static int l_kr_limits(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    check_loading(L, vm, "kr.limits");
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int known = 0;
        for (int i = 0; k && limit_keys[i]; i++)
            known |= strcmp(k, limit_keys[i]) == 0;
        if (!known)
            return luaL_error(L, "kr.limits: unknown limit '%s'", k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    uint64_t v;
    kr_http_limits_t *h = &vm->http_limits;
    kr_lua_limits_t *l = &vm->lua_limits;
    if (opt_limit(L, "header_timeout_ms", &v, 1))
        h->header_timeout_ms = v;
    if (opt_limit(L, "keepalive_timeout_ms", &v, 1))
        h->keepalive_timeout_ms = v;
    if (opt_limit(L, "max_body_bytes", &v, 1))
        h->max_body_bytes = (size_t)v;
    if (opt_limit(L, "max_request_line_bytes", &v, 1))
        h->max_request_line_bytes = (size_t)v;
    if (opt_limit(L, "max_header_bytes", &v, 1))
        h->max_header_bytes = (size_t)v;
    if (opt_limit(L, "max_header_count", &v, 1))
        h->max_header_count = (unsigned)v;
    if (opt_limit(L, "lua_max_slice_ms", &v, 1))
        l->max_slice_ms = v;
    if (opt_limit(L, "lua_max_memory_mb", &v, 1024 * 1024))
        l->max_memory = vm->mem_limit = (size_t)v;
    if (opt_limit(L, "lua_max_fibers", &v, 1))
        l->max_fibers = (unsigned)v;
    if (opt_limit(L, "lua_max_timers", &v, 1))
        l->max_timers = (unsigned)v;
    if (opt_limit(L, "max_tasks", &v, 1))
        l->max_tasks = (unsigned)(v > 0xffffffffu ? 0xffffffffu : v);
    if (opt_limit(L, "task_retention_s", &v, 1))
        l->task_retention_s = v;
    if (opt_limit(L, "shutdown_grace_ms", &v, 1))
        vm->shutdown_grace_ms = v;
    if (opt_limit(L, "max_connections", &v, 1))
        vm->conn_caps.max_connections = (unsigned)(v > 0xffffffffu ? 0xffffffffu : v);
    if (opt_limit(L, "max_connections_per_ip", &v, 1))
        vm->conn_caps.max_connections_per_ip = (unsigned)(v > 0xffffffffu ? 0xffffffffu : v);
    return 0;
}

/* The server's caps hook: the current generation's kr.limits connection caps over the
 * server's defaults. Asked at every accept, so the caps follow reloads; a key the current
 * scripts do not set is the default again. */
static void conn_caps_hook(void *ud, kr_conn_caps_t *caps)
{
    kr_app_t *app = ud;
    const kr_vm_t *vm = app->vm;
    if (vm == NULL)
        return;
    if (vm->conn_caps.max_connections)
        caps->max_connections = vm->conn_caps.max_connections;
    if (vm->conn_caps.max_connections_per_ip)
        caps->max_connections_per_ip = vm->conn_caps.max_connections_per_ip;
}

/* ---- metrics ---------------------------------------------------------------------------- */

static double rss_mb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static int l_kr_metrics(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    kr_server_t *s = vm->app->server;
    double up_s = (double)(uv_now(s->loop) - s->started_ms) / 1000.0;
    lua_createtable(L, 0, 7);
    /* The current load: CPU use over the server's last completed 1 s window (kr_server.c). */
    lua_pushnumber(L, kr_server_cpu_percent(s));
    lua_setfield(L, -2, "cpu_percent");
    lua_pushnumber(L, rss_mb());
    lua_setfield(L, -2, "memory_mb");
    lua_pushinteger(L, (lua_Integer)s->stats.connections_open);
    lua_setfield(L, -2, "connections");
    lua_pushnumber(L, up_s);
    lua_setfield(L, -2, "uptime_s");
    lua_pushinteger(L, (lua_Integer)s->stats.requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)s->stats.messages_sent);
    lua_setfield(L, -2, "messages_sent");
    lua_pushinteger(L, (lua_Integer)s->stats.slow_consumers);
    lua_setfield(L, -2, "slow_consumers");
    lua_pushinteger(L, (lua_Integer)s->stats.connections_refused);
    lua_setfield(L, -2, "connections_refused");
    return 1;
}

/* ---- registration ----------------------------------------------------------------------- */

static const luaL_Reg kr_core_funcs[] = {
    {"sleep", l_kr_sleep},
    {"yield", l_kr_yield},
    {"now", l_kr_now},
    {"clock_us", l_kr_clock_us},
    {"spawn", l_kr_spawn},
    {"after", l_kr_after},
    {"every", l_kr_every},
    {"cron", l_kr_cron},
    {"log", l_kr_log},
    {"listen", l_kr_listen},
    {"limits", l_kr_limits},
    {"metrics", l_kr_metrics},
    {NULL, NULL},
};

static const luaL_Reg timer_methods[] = {
    {"stop", l_timer_stop},
    {NULL, NULL},
};

void kr__lua_open_core(lua_State *L, kr_vm_t *vm)
{
    /* Every generation opens this; the hook reads whichever is current (app->vm). */
    vm->app->server->caps_hook = conn_caps_hook;
    vm->app->server->caps_ud = vm->app;
    /* stack: kr */
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, kr_core_funcs, 1);
    kr_lua_json_push_module(L);
    lua_setfield(L, -2, "json");
    lua_pushliteral(L, KR_VERSION);
    lua_setfield(L, -2, "version");
    luaL_newmetatable(L, TIMER_MT);
    lua_pushcfunction(L, l_timer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_timer_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, timer_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
