/* kr_lua.h: the Lua runtime bound to one server (kr_app_t) and its script generations.
 *
 * A generation (kr_vm_t) is one lua_State built from the scripts: its routes (a kr_router),
 * static mounts, timers and the listeners/limits the scripts asked for. The app serves from
 * the current generation; a reload builds a new one completely and swaps it in only when
 * loading succeeded, so a broken edit never takes the server down (architecture B6.7). A
 * generation is refcounted: the app holds one reference, every live fiber and timer another,
 * so requests already running finish on the state they started on.
 *
 * Guards (architecture "Lua libraries"): a counting allocator caps each VM's memory, and a
 * count hook stops a fiber that runs longer than its CPU slice; once tripped it raises on
 * every instruction so pcall cannot swallow it.
 *
 * Owns: generations, fibers (kr_fiber), the run queue. Calls: kr_server (hooks), kr_http,
 * kr_router, kr_static, kr_log. The core calls back only through kr_server's hooks.
 */
#ifndef KR_LUA_H
#define KR_LUA_H

#include "kr_hub.h"
#include "kr_list.h"
#include "kr_reload.h"
#include "kr_router.h"
#include "kr_server.h"
#include "kr_static.h"

#include <lua.h>

typedef struct kr_app_s kr_app_t;
typedef struct kr_vm_s kr_vm_t;
typedef struct kr_fiber_s kr_fiber_t;
typedef struct kr_task_reg_s kr_task_reg_t;

typedef struct kr_lua_limits_s {
    uint64_t max_slice_ms;  /* CPU time a fiber may run without yielding (default 1000) */
    uint64_t load_budget_ms; /* CPU time for loading the scripts (default 10000) */
    size_t max_memory;      /* bytes per VM (default 256 MiB) */
    unsigned max_fibers;    /* live fibers per app (default 100000) */
    unsigned max_timers;    /* pending timers per VM (default 10000) */
    unsigned max_tasks;     /* task records kept, running and finished (default 1000) */
    /* how long a finished task's record is kept, in seconds (default 3600) */
    uint64_t task_retention_s;
} kr_lua_limits_t;

#define KR_FIBER_POOL 64 /* finished fibers kept per generation for reuse */

/* A hub as one generation declares it: the options apply when the generation is adopted. */
typedef struct kr_vm_hub_s {
    kr_hub_t *hub;
    kr_hub_opts_t opts;
    int created; /* this generation created it (freed again if the generation fails) */
} kr_vm_hub_t;

typedef struct kr_listen_req_s {
    char host[64];
    int port;
    char tls_cert[512]; /* kr.listen{ tls = { cert =, key = } }; "" on a plain listener */
    char tls_key[512];
} kr_listen_req_t;

struct kr_vm_s {
    lua_State *L;
    kr_app_t *app;
    uint32_t refs;
    unsigned generation;
    size_t mem_used, mem_limit;
    int mem_failed;           /* an allocation was refused (reported as "not enough memory") */
    kr_router_t *router;
    kr_static_t **statics;
    unsigned nstatics;
    kr_listen_req_t listens[KR_MAX_LISTENERS];
    unsigned nlistens;
    kr_list_t timers;         /* kr_timer_t.link: armed timers of this generation */
    unsigned ntimers;
    int loading;              /* scripts are being run: server setup calls are allowed */
    kr_hub_t *default_hub;    /* the first kr.hub of this generation */
    kr_vm_hub_t *hubs;        /* hubs declared by this generation (handlers in its registry) */
    unsigned nhubs;
    kr_fiber_t *pool[KR_FIBER_POOL]; /* finished fibers, reused (kr_fiber.c) */
    unsigned npool;
    kr_http_limits_t http_limits;
    kr_lua_limits_t lua_limits;
    uint64_t shutdown_grace_ms;
    /* kr.limits max_connections / max_connections_per_ip; 0: not set (the server's default).
     * The server asks the current generation at every accept (kr_lua_core.c caps hook). */
    kr_conn_caps_t conn_caps;
};

struct kr_app_s {
    kr_server_t *server;
    kr_vm_t *vm;              /* the current generation */
    char **scripts;
    unsigned nscripts;
    unsigned next_generation;
    kr_lua_limits_t limits;   /* base limits every generation starts from (kr.limits adds) */
    kr_list_t runq;           /* fibers ready to run */
    kr_list_t fibers;         /* every live fiber */
    unsigned nfibers;
    unsigned active_requests; /* route handler fibers still running */
    kr_fiber_t *running;      /* inside lua_resume, or NULL */
    uint64_t slice_deadline_ns; /* the running fiber's time slice ends here (0: none) */
    int slice_tripped;        /* the slice ran out: every thread raises until the run ends */
    int stopping;
    kr_watch_t *watch;        /* --watch: reload when a script file changes */
    kr_hub_t **hubs;          /* hubs of the generations: C state that survives reloads */
    unsigned nhubs;
    kr_hub_t **retired;       /* hubs no generation declares any more (freed with the app) */
    unsigned nretired;
    int stopping_hard;        /* tearing down: no new connection fibers */
    kr_task_reg_t *tasks;     /* kr.task records: survive reloads (kr_lua_task.c) */
    struct kr_bus_s *bus;     /* every hub send goes through it: local, or the Redis backplane
                                 (kr_lua_backplane.c); survives reloads */
};

void kr_lua_limits_default(kr_lua_limits_t *l);

/* Creates the app on server and installs its hooks (request handler, tick, reload, stop). */
kr_app_t *kr_app_new(kr_server_t *server, char **scripts, unsigned nscripts);
/* Loads the first generation. On failure prints FILE:LINE: message to the log and returns
 * KR_ESCRIPT; nothing is left half-started. */
int kr_app_load(kr_app_t *app);
/* Builds a new generation and swaps it in; on failure logs and keeps the old one. */
int kr_app_reload(kr_app_t *app);
/* Reloads whenever a script file changes (debounced). Returns 0, or KR_ENOENT when nothing
 * could be watched (SIGHUP still works). */
int kr_app_watch(kr_app_t *app);
/* Cancels every fiber, stops timers and releases the generations (after the loop stopped
 * serving). */
void kr_app_free(kr_app_t *app);

/* Generation references. */
void kr_vm_ref(kr_vm_t *vm);
void kr_vm_unref(kr_vm_t *vm);
/* The generation a lua_State belongs to (any thread of it). */
kr_vm_t *kr_vm_from_lua(lua_State *L);

/* Runs fn(...) at the top of L under a traceback handler; on error leaves the message with
 * its traceback on the stack and returns the status. */
int kr_lua_pcall_traceback(lua_State *L, int nargs, int nresults);

/* Installed by kr_lua_core.c / kr_lua_http.c into the kr table at VM creation. */
void kr__lua_open_core(lua_State *L, kr_vm_t *vm);
/* CPU time of the calling thread in nanoseconds (the clock of the slice and load budget). */
uint64_t kr_lua_cpu_ns(void);
/* Puts the normal slice hook (every 10k instructions) on L. */
void kr__lua_reset_hook(lua_State *L);
void kr__lua_open_http(lua_State *L, kr_vm_t *vm);
/* kr_lua_http.c: the server's request handler. */
void kr__lua_handle_request(kr_http_req_t *req, void *ud);
void kr__lua_open_hub(lua_State *L, kr_vm_t *vm);
/* kr_lua_hub.c: the hub for an HTTP request path (negotiate, transports), or 0. */
int kr__lua_hub_http(kr_app_t *app, kr_http_req_t *req);
/* kr_lua_hub.c: graceful shutdown of every hub; freeing them at the end. */
void kr__lua_hubs_shutdown(kr_app_t *app);
void kr__lua_hubs_free(kr_app_t *app);
/* A generation is adopted (its hub options apply, undeclared hubs retire) or discarded (the
 * hubs it created are freed). */
void kr__lua_hubs_adopt(kr_app_t *app, kr_vm_t *vm);
void kr__lua_hubs_discard(kr_app_t *app, kr_vm_t *vm);
/* kr_lua_core.c: stops every timer of a generation (reload, shutdown). */
void kr__lua_stop_timers(kr_vm_t *vm);
/* kr_lua_task.c: kr.task, kr.task_status, kr.task_stop; the app's task registry is freed
 * by kr__lua_tasks_free (after the fibers were cancelled). */
void kr__lua_open_task(lua_State *L, kr_vm_t *vm);
void kr__lua_tasks_free(kr_app_t *app);

#endif
