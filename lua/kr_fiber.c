/* kr_fiber.c: the fiber scheduler (see kr_fiber.h).
 *
 * kr_fiber_resume is the one place that interprets lua_resume: a yield with a wait armed
 * leaves the fiber suspended, a bare yield (coroutine.yield at top level) requeues it, a
 * return or an error ends it and calls its done callback once.
 */
#include "kr_fiber.h"
#include "kr_log.h"

#include <lauxlib.h>

kr_fiber_t *kr_fiber_current(lua_State *L)
{
    return *(kr_fiber_t **)lua_getextraspace(L);
}

static void on_timer_closed(uv_handle_t *h)
{
    kr_fiber_t *f = kr_container_of(h, kr_fiber_t, timer);
    kr_free(f);
}

kr_fiber_t *kr_fiber_new(kr_vm_t *vm, const char *name, kr_fiber_done_cb cb, void *ud)
{
    kr_app_t *app = vm->app;
    if (app->nfibers >= vm->lua_limits.max_fibers)
        return NULL;
    lua_State *L = vm->L;
    kr_fiber_t *f;
    if (vm->npool > 0) {
        /* A finished fiber of this generation: its coroutine (reset) and timer are reused,
         * which saves a thread, a registry slot and a handle close per request. */
        f = vm->pool[--vm->npool];
        lua_State *co = f->co;
        int ref = f->ref;
        uv_timer_t timer = f->timer;
        memset(f, 0, sizeof(*f));
        f->co = co;
        f->ref = ref;
        f->timer = timer;
    } else {
        f = kr_calloc(1, sizeof(*f));
        /* Outside a resume the VM's memory cap is not enforced (kr_lua.c allocator), so these
         * calls cannot raise here; only a real out-of-memory would, and that aborts anyway. */
        f->co = lua_newthread(L);
        f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        uv_timer_init(app->server->loop, &f->timer);
    }
    *(kr_fiber_t **)lua_getextraspace(f->co) = f;
    f->vm = vm;
    kr_vm_ref(vm);
    f->name = name;
    f->done_cb = cb;
    f->done_ud = ud;
    kr_list_init(&f->qlink);
    kr_list_insert_tail(&app->fibers, &f->link);
    app->nfibers++;
    return f;
}

/* Ends a fiber: unanchor the coroutine, drop the generation, free once the timer closed. */
static void finish(kr_fiber_t *f, kr_fiber_status_e status)
{
    kr_app_t *app = f->vm->app;
    f->done = 1;
    kr_list_remove(&f->qlink);
    kr_list_remove(&f->link);
    app->nfibers--;
    if (f->done_cb)
        f->done_cb(f, status, f->done_ud);
    /* Close the coroutine so pending to-be-closed variables run (lua_closethread is 5.4.6;
     * Debian's 5.4.4 has lua_resetthread with the same effect). */
    *(kr_fiber_t **)lua_getextraspace(f->co) = NULL;
    lua_resetthread(f->co);
    lua_settop(f->co, 0); /* after an error the reset leaves the error object on the stack */
    kr_free(f->error);
    f->error = NULL;
    kr_vm_t *vm = f->vm;
    /* Only a coroutine that returned normally is reused: one that died of an error (a hook
     * error above all) may be left with hooks disabled, which lua_resetthread does not undo. */
    if (status == KR_FIBER_OK && vm->npool < KR_FIBER_POOL &&
        !uv_is_active((uv_handle_t *)&f->timer)) {
        vm->pool[vm->npool++] = f; /* reused by the next kr_fiber_new of this generation */
    } else {
        luaL_unref(vm->L, LUA_REGISTRYINDEX, f->ref);
        uv_close((uv_handle_t *)&f->timer, on_timer_closed);
    }
    kr_vm_unref(vm);
}

void kr_fiber_pool_drain(kr_vm_t *vm)
{
    /* The coroutines go with the Lua state; the timers need a close. */
    while (vm->npool > 0)
        uv_close((uv_handle_t *)&vm->pool[--vm->npool]->timer, on_timer_closed);
}


static void resume(kr_fiber_t *f)
{
    kr_app_t *app = f->vm->app;
    KR_ASSERT(app->running == NULL);
    int nargs = f->nargs, nres = 0;
    f->nargs = 0;
    /* A fiber started while the scripts load runs inside the load's own budget: save it. */
    uint64_t outer_deadline = app->slice_deadline_ns;
    int outer_tripped = app->slice_tripped;
    app->running = f;
    app->slice_deadline_ns = kr_lua_cpu_ns() + f->vm->lua_limits.max_slice_ms * 1000000ull;
    app->slice_tripped = 0;
    kr__lua_reset_hook(f->co);
    int st = lua_resume(f->co, NULL, nargs, &nres);
    app->running = NULL;
    app->slice_deadline_ns = outer_deadline;
    app->slice_tripped = outer_tripped;
    if (st == LUA_YIELD) {
        if (f->waiting)
            return;
        /* A bare yield at the fiber's top level: give others a turn, then continue. */
        lua_pop(f->co, nres);
        kr_list_insert_tail(&app->runq, &f->qlink);
        kr__server_wake(app->server);
        return;
    }
    if (st == LUA_OK) {
        finish(f, KR_FIBER_OK);
        return;
    }
    /* The coroutine's stack is intact: take the traceback from it before it is closed. */
    const char *msg = lua_tostring(f->co, -1);
    luaL_traceback(f->vm->L, f->co, msg ? msg : "(error object is not a string)", 0);
    f->error = kr_strdup(lua_tostring(f->vm->L, -1));
    lua_pop(f->vm->L, 1);
    finish(f, KR_FIBER_ERROR);
}

void kr_fiber_start(kr_fiber_t *f)
{
    kr_app_t *app = f->vm->app;
    if (app->running != NULL) {
        kr_list_insert_tail(&app->runq, &f->qlink);
        kr__server_wake(app->server);
        return;
    }
    resume(f);
}

void kr_fiber_run_queue(kr_app_t *app)
{
    /* Only the fibers queued before this drain run now; ones queued while it runs wait for
     * the next turn, so a fiber that yields in a loop cannot starve I/O. */
    kr_list_t batch;
    kr_list_init(&batch);
    kr_list_move_all(&app->runq, &batch);
    while (!kr_list_empty(&batch)) {
        kr_fiber_t *f = kr_container_of(batch.next, kr_fiber_t, qlink);
        kr_list_remove(&f->qlink);
        resume(f);
    }
}

static void on_sleep_done(uv_timer_t *t)
{
    kr_fiber_t *f = kr_container_of(t, kr_fiber_t, timer);
    f->waiting = 0;
    kr_fiber_start(f);
}

void kr_fiber_wait_sleep(kr_fiber_t *f, uint64_t ms)
{
    f->waiting = 1;
    uv_timer_start(&f->timer, on_sleep_done, ms, 0);
}

void kr_fiber_wait_event(kr_fiber_t *f, kr_fiber_unwait_cb unwait, void *ud)
{
    f->waiting = 1;
    f->unwait = unwait;
    f->unwait_ud = ud;
}

void kr_fiber_wake(kr_fiber_t *f, int nargs)
{
    kr_app_t *app = f->vm->app;
    f->waiting = 0;
    f->unwait = NULL;
    f->unwait_ud = NULL;
    f->nargs = nargs;
    kr_list_insert_tail(&app->runq, &f->qlink);
    kr__server_wake(app->server);
}

void kr_fiber_cancel(kr_fiber_t *f)
{
    if (f->done)
        return;
    if (f->waiting) {
        uv_timer_stop(&f->timer);
        f->waiting = 0;
        if (f->unwait != NULL) {
            kr_fiber_unwait_cb unwait = f->unwait;
            f->unwait = NULL;
            unwait(f, f->unwait_ud);
        }
    }
    finish(f, KR_FIBER_CANCELLED);
}
