/* kr_lua_task.c: background tasks (Kestrun's New-KrTask / Get-KrTask / Stop-KrTask):
 * kr.task(fn, args [, opts]) -> id, task:progress(percent, status), kr.task_status(id),
 * kr.task_stop(id).
 *
 * A task is a fiber running fn(task, args) plus a record in the app's task registry (C side,
 * so it outlives the generation that started it: after a reload the task keeps running on
 * its own generation, like a request, and any generation can query or stop it). Task fibers
 * are not background fibers, so a reload does not cancel them; shutdown does (Stopped). The
 * record keeps what a status query shows; the result is kept as JSON text, decoded into the
 * asking generation. The registry is bounded: finished tasks go after task_retention_s, and
 * when max_tasks records exist the oldest finished one makes room (kr.limits).
 *
 * Owns: the registry and its records. Calls: kr_fiber, kr_lua_json, kr_map, kr_log.
 */
#include "kr_fiber.h"
#include "kr_log.h"
#include "kr_lua.h"
#include "kr_lua_json.h"
#include "kr_map.h"

#include <lauxlib.h>
#include <math.h>
#include <openssl/rand.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define TASK_MT "kr.Task"
#define TASK_ID_LEN 36 /* a GUID, as Kestrun's default task ids: 8-4-4-4-12 hex */

typedef enum task_state_e {
    TASK_NOT_STARTED = 0,
    TASK_RUNNING,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STOPPED,
} task_state_e;

static const char *const state_names[] = {"NotStarted", "Running", "Completed", "Failed",
                                          "Stopped"};

typedef struct task_box_s task_box_t;

typedef struct kr_task_s {
    char id[TASK_ID_LEN + 1];
    char *name;
    task_state_e state;
    int progress;       /* 0..100 */
    char *status;       /* the last status message, or NULL */
    int64_t started_ms; /* wall clock; 0: not yet */
    int64_t completed_ms;
    char *result_json; /* Completed: the JSON text of the first return value (NULL: nil) */
    char *error;       /* Failed: the first line of the error */
    kr_fiber_t *fiber; /* NotStarted or Running */
    task_box_t *box;   /* the task object handed to fn, while it lives */
    kr_task_reg_t *reg;
    kr_list_t link; /* reg->active or reg->finished */
} kr_task_t;

struct kr_task_reg_s {
    kr_map_t by_id;
    kr_list_t active;   /* NotStarted and Running, in start order */
    kr_list_t finished; /* in completion order: the oldest goes first */
    unsigned count;
};

struct task_box_s {
    kr_task_t *t; /* NULL once the record is gone */
};

/* ---- the registry ----------------------------------------------------------------------- */

static kr_task_reg_t *registry(kr_vm_t *vm)
{
    kr_app_t *app = vm->app;
    if (app->tasks == NULL) {
        app->tasks = kr_calloc(1, sizeof(*app->tasks));
        kr_map_init(&app->tasks->by_id, 0);
        kr_list_init(&app->tasks->active);
        kr_list_init(&app->tasks->finished);
    }
    return app->tasks;
}

static void task_free(kr_task_t *t)
{
    kr_map_del(&t->reg->by_id, t->id, TASK_ID_LEN);
    kr_list_remove(&t->link);
    t->reg->count--;
    if (t->box)
        t->box->t = NULL;
    kr_free(t->name);
    kr_free(t->status);
    kr_free(t->result_json);
    kr_free(t->error);
    kr_free(t);
}

/* Drops finished records older than the retention, and with make_room also the oldest
 * finished ones while the registry is full. */
static void prune(kr_task_reg_t *reg, kr_vm_t *vm, int make_room)
{
    int64_t now = kr_time_wall_ms();
    int64_t keep_ms = (int64_t)vm->lua_limits.task_retention_s * 1000;
    while (!kr_list_empty(&reg->finished)) {
        kr_task_t *t = kr_container_of(reg->finished.next, kr_task_t, link);
        if (now - t->completed_ms < keep_ms &&
            !(make_room && reg->count >= vm->lua_limits.max_tasks))
            break;
        task_free(t);
    }
}

void kr__lua_tasks_free(kr_app_t *app)
{
    kr_task_reg_t *reg = app->tasks;
    if (reg == NULL)
        return;
    /* The fibers were cancelled before (kr_app_free), so every record is finished; a task
     * still active here only loses its record (its fiber belongs to the fiber list). */
    while (!kr_list_empty(&reg->finished))
        task_free(kr_container_of(reg->finished.next, kr_task_t, link));
    while (!kr_list_empty(&reg->active)) {
        kr_task_t *t = kr_container_of(reg->active.next, kr_task_t, link);
        if (t->fiber)
            t->fiber->done_ud = NULL;
        task_free(t);
    }
    kr_map_dispose(&reg->by_id);
    kr_free(reg);
    app->tasks = NULL;
}

static void new_id(char out[TASK_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    if (RAND_bytes(raw, 16) != 1)
        KR_ASSERT(uv_random(NULL, NULL, raw, 16, 0, NULL) == 0);
    raw[6] = (unsigned char)((raw[6] & 0x0f) | 0x40); /* version 4 */
    raw[8] = (unsigned char)((raw[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[raw[i] >> 4];
        out[o++] = hex[raw[i] & 15];
    }
    out[o] = '\0';
}

/* ---- running a task --------------------------------------------------------------------- */

static void task_finish(kr_task_t *t, task_state_e state)
{
    t->state = state;
    t->fiber = NULL;
    t->completed_ms = kr_time_wall_ms();
    kr_list_remove(&t->link);
    kr_list_insert_tail(&t->reg->finished, &t->link);
}

static void task_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    kr_task_t *t = ud;
    if (t == NULL)
        return; /* the registry went first (teardown) */
    if (status == KR_FIBER_OK) {
        /* task_entry returned exactly one value: fn's first result. */
        lua_State *co = f->co;
        int idx = lua_gettop(co);
        if (idx > 0 && !lua_isnil(co, idx)) {
            kr_sbuf_t sb;
            kr_sbuf_init(&sb, 64);
            const char *err = NULL;
            if (kr_json_encode(co, idx, &sb, NULL, &err) != 0) {
                kr_sbuf_dispose(&sb);
                size_t n = strlen(err) + 64;
                t->error = kr_calloc(1, n);
                snprintf(t->error, n, "the result cannot be encoded as JSON: %s", err);
                KR_LOG(KR_LOG_ERROR, "lua", "kr.task '%s' (%s) failed: %s", t->name, t->id,
                       t->error);
                task_finish(t, TASK_FAILED);
                return;
            }
            size_t len = kr_sbuf_len(&sb);
            t->result_json = kr_calloc(1, len + 1);
            memcpy(t->result_json, kr_sbuf_data(&sb), len);
            kr_sbuf_dispose(&sb);
        }
        t->progress = 100;
        task_finish(t, TASK_COMPLETED);
        return;
    }
    if (status == KR_FIBER_ERROR) {
        const char *msg = f->error ? f->error : "(unknown error)";
        const char *nl = strchr(msg, '\n');
        size_t n = nl ? (size_t)(nl - msg) : strlen(msg);
        t->error = kr_calloc(1, n + 1);
        memcpy(t->error, msg, n);
        KR_LOG(KR_LOG_ERROR, "lua", "kr.task '%s' (%s) failed: %s", t->name, t->id, msg);
        task_finish(t, TASK_FAILED);
        return;
    }
    task_finish(t, TASK_STOPPED);
}

static int task_entry_k(lua_State *L, int status, lua_KContext ctx)
{
    KR_UNUSED(L);
    KR_UNUSED(status);
    KR_UNUSED(ctx);
    return 1;
}

/* The fiber's function: task_entry(fn, task, args) marks the task Running when the fiber
 * first runs, then returns fn(task, args)'s first result (fn may yield: lua_callk). */
static int task_entry(lua_State *L)
{
    task_box_t *box = lua_touserdata(L, 2);
    if (box != NULL && box->t != NULL) {
        box->t->state = TASK_RUNNING;
        box->t->started_ms = kr_time_wall_ms();
    }
    lua_callk(L, 2, 1, 0, task_entry_k);
    return task_entry_k(L, LUA_OK, 0);
}

/* ---- Lua: kr.task, kr.task_status, kr.task_stop ------------------------------------------- */

static int l_kr_task(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    const char *name = NULL; /* anchored by opts, which stays at index 3 */
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "name") != LUA_TNIL) {
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_argerror(L, 3, "name must be a string");
            name = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
    }
    if (vm->loading)
        return luaL_error(L, "kr.task: cannot start a task while the scripts load (start it "
                             "from a route handler, timer or kr.spawn fiber)");
    if (vm->app->stopping) {
        luaL_pushfail(L);
        lua_pushliteral(L, "server stopping");
        return 2;
    }
    kr_task_reg_t *reg = registry(vm);
    prune(reg, vm, 1);
    if (reg->count >= vm->lua_limits.max_tasks) {
        luaL_pushfail(L);
        lua_pushliteral(L, "too many tasks");
        return 2;
    }
    /* Lua-owned first (may raise): the box, at index 4. */
    lua_settop(L, 3);
    task_box_t *box = lua_newuserdatauv(L, sizeof(*box), 0);
    box->t = NULL;
    luaL_setmetatable(L, TASK_MT);
    kr_fiber_t *f = kr_fiber_new(vm, "kr.task", task_done, NULL);
    if (f == NULL) {
        luaL_pushfail(L);
        lua_pushliteral(L, "too many fibers");
        return 2;
    }
    kr_task_t *t = kr_calloc(1, sizeof(*t));
    do
        new_id(t->id);
    while (kr_map_get(&reg->by_id, t->id, TASK_ID_LEN) != NULL);
    t->name = name ? kr_strdup(name) : kr_strdup(t->id);
    t->state = TASK_NOT_STARTED;
    t->fiber = f;
    t->box = box;
    t->reg = reg;
    box->t = t;
    kr_map_put(&reg->by_id, t->id, TASK_ID_LEN, t);
    kr_list_insert_tail(&reg->active, &t->link);
    reg->count++;
    f->done_ud = t;
    /* stack: fn, args, opts, box -> the fiber runs task_entry(fn, box, args) */
    lua_pushcfunction(f->co, task_entry);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 2);
    lua_xmove(L, f->co, 3);
    f->nargs = 3;
    lua_pushstring(L, t->id);
    kr_fiber_start(f); /* from a fiber it is queued: NotStarted until the caller yields */
    return 1;
}

static kr_task_t *find_task(lua_State *L, kr_vm_t *vm, int idx)
{
    size_t len;
    const char *id = luaL_checklstring(L, idx, &len);
    if (vm->app->tasks == NULL || len != TASK_ID_LEN)
        return NULL;
    prune(vm->app->tasks, vm, 0);
    return kr_map_get(&vm->app->tasks->by_id, id, len);
}

static void push_time(lua_State *L, int64_t ms, const char *field)
{
    if (ms == 0)
        return;
    char ts[KR_ISO_TS_LEN + 1];
    kr_time_iso(ms, ts);
    lua_pushlstring(L, ts, KR_ISO_TS_LEN);
    lua_setfield(L, -2, field);
}

static int l_kr_task_status(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    kr_task_t *t = find_task(L, vm, 1);
    if (t == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 9);
    lua_pushstring(L, t->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, t->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, state_names[t->state]);
    lua_setfield(L, -2, "state");
    lua_pushinteger(L, t->progress);
    lua_setfield(L, -2, "progress");
    if (t->status) {
        lua_pushstring(L, t->status);
        lua_setfield(L, -2, "status");
    }
    push_time(L, t->started_ms, "started_at");
    push_time(L, t->completed_ms, "completed_at");
    if (t->result_json) {
        char err[128];
        int rc = kr_json_decode(L, t->result_json, strlen(t->result_json), NULL, err, sizeof(err));
        if (rc != 0)
            return luaL_error(L, "kr.task_status: %s", err);
        lua_setfield(L, -2, "result");
    }
    if (t->error) {
        lua_pushstring(L, t->error);
        lua_setfield(L, -2, "error");
    }
    return 1;
}

static int l_kr_task_stop(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    kr_task_t *t = find_task(L, vm, 1);
    if (t == NULL) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "no such task");
        return 2;
    }
    if (t->fiber == NULL) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "the task is not running (%s)", state_names[t->state]);
        return 2;
    }
    if (vm->app->running == t->fiber) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "a task cannot stop itself (return from its function instead)");
        return 2;
    }
    /* The task's fiber is suspended (one thread): closing it here is what coroutine.close
     * does; its done callback records Stopped. */
    kr_fiber_cancel(t->fiber);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- the task object: task.id, task.name, task:progress(percent [, status]) ------------ */

static int l_task_progress(lua_State *L)
{
    task_box_t *box = luaL_checkudata(L, 1, TASK_MT);
    lua_Number pct = luaL_checknumber(L, 2);
    luaL_argcheck(L, !isnan(pct), 2, "percent is NaN");
    size_t slen = 0;
    const char *status = luaL_optlstring(L, 3, NULL, &slen);
    kr_task_t *t = box->t;
    if (t == NULL || t->fiber == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    t->progress = pct <= 0 ? 0 : pct >= 100 ? 100 : (int)pct;
    if (status != NULL) {
        kr_free(t->status);
        t->status = kr_calloc(1, slen + 1);
        memcpy(t->status, status, slen);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_task_index(lua_State *L)
{
    task_box_t *box = luaL_checkudata(L, 1, TASK_MT);
    const char *k = lua_tostring(L, 2);
    if (k == NULL)
        return 0;
    if (strcmp(k, "progress") == 0) {
        lua_pushcfunction(L, l_task_progress);
        return 1;
    }
    if (box->t == NULL)
        return 0;
    if (strcmp(k, "id") == 0) {
        lua_pushstring(L, box->t->id);
        return 1;
    }
    if (strcmp(k, "name") == 0) {
        lua_pushstring(L, box->t->name);
        return 1;
    }
    return 0;
}

static int l_task_gc(lua_State *L)
{
    task_box_t *box = luaL_checkudata(L, 1, TASK_MT);
    if (box->t)
        box->t->box = NULL;
    box->t = NULL;
    return 0;
}

static int l_task_tostring(lua_State *L)
{
    task_box_t *box = luaL_checkudata(L, 1, TASK_MT);
    if (box->t)
        lua_pushfstring(L, "kr.Task (%s, %s)", box->t->id, state_names[box->t->state]);
    else
        lua_pushliteral(L, "kr.Task (gone)");
    return 1;
}

static const luaL_Reg task_funcs[] = {
    {"task", l_kr_task},
    {"task_status", l_kr_task_status},
    {"task_stop", l_kr_task_stop},
    {NULL, NULL},
};

void kr__lua_open_task(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, task_funcs, 1);
    luaL_newmetatable(L, TASK_MT);
    lua_pushcfunction(L, l_task_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_task_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_task_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
