/* kr_fiber.h: fibers: Lua coroutines driven by the event loop.
 *
 * Every Lua entry point (route handler, timer tick, kr.spawn) runs in a fiber, so a yielding
 * call such as kr.sleep suspends only that fiber (architecture B6.2). A fiber is anchored in
 * its generation's registry while alive and holds a reference on the generation. Resumes
 * happen only at loop level, never nested: a fiber started while another one is running goes
 * on the app's run queue, drained from the server's check hook.
 *
 * A yielding C function has one shape (l_kr_sleep is the template): validate its arguments
 * (may raise, owns nothing), find the fiber with kr_fiber_current (NULL: raise "not in a
 * fiber"), arm the wait with kr_fiber_wait_*, then `return lua_yield(L, 0)`.
 *
 * Owns: the coroutine anchor, the sleep timer. Calls: kr_lua (generation refs), kr_log.
 */
#ifndef KR_FIBER_H
#define KR_FIBER_H

#include "kr_lua.h"

typedef enum kr_fiber_status_e {
    KR_FIBER_OK = 0,       /* the function returned; its results are on f->co */
    KR_FIBER_ERROR,        /* it raised; f->error holds the message and traceback */
    KR_FIBER_CANCELLED,    /* cancelled (shutdown) */
} kr_fiber_status_e;

/* Called once when the fiber ends. The fiber is freed after it returns. */
typedef void (*kr_fiber_done_cb)(kr_fiber_t *f, kr_fiber_status_e status, void *ud);
/* Called when a fiber waiting for an event is cancelled, so the waiter's registration goes. */
typedef void (*kr_fiber_unwait_cb)(kr_fiber_t *f, void *ud);

struct kr_fiber_s {
    kr_vm_t *vm;
    lua_State *co;
    int ref;            /* registry anchor of the coroutine */
    int nargs;          /* values to pass to the next resume */
    int waiting;        /* suspended on an operation (sleep) */
    int done;
    int background;     /* kr.spawn or a timer tick: cancelled when its generation is replaced */
    const char *name;   /* what runs, for logs ("GET /x", "timer") */
    char *error;        /* message + traceback after an error (owned) */
    kr_fiber_done_cb done_cb;
    void *done_ud;
    kr_fiber_unwait_cb unwait; /* an event wait is armed (kr_fiber_wait_event) */
    void *unwait_ud;
    uv_timer_t timer;   /* kr.sleep */
    kr_list_t link;     /* app->fibers */
    kr_list_t qlink;    /* app->runq */
};

/* Creates a fiber on the generation; push the function and its arguments on f->co, set
 * f->nargs, then kr_fiber_start. Returns NULL when the fiber limit is reached. */
kr_fiber_t *kr_fiber_new(kr_vm_t *vm, const char *name, kr_fiber_done_cb cb, void *ud);
/* Runs the fiber now if no fiber is running, otherwise queues it. The fiber may finish (and
 * be freed) before this returns. */
void kr_fiber_start(kr_fiber_t *f);
/* The fiber whose own coroutine is L, or NULL (main thread, a plain coroutine). */
kr_fiber_t *kr_fiber_current(lua_State *L);
/* Arms a sleep; the caller then returns lua_yield(L, 0). */
void kr_fiber_wait_sleep(kr_fiber_t *f, uint64_t ms);
/* Arms a wait for an event from outside the fiber (a client result, a stream item); the
 * caller then returns lua_yield(L, 0). kr_fiber_wake ends it; if the fiber is cancelled
 * first, unwait(f, ud) runs so the waiter can drop its registration. */
void kr_fiber_wait_event(kr_fiber_t *f, kr_fiber_unwait_cb unwait, void *ud);
/* Ends an event wait: the nargs values the caller pushed on f->co become the results of the
 * yielding call. The fiber resumes from the run queue (never inside the caller's stack). */
void kr_fiber_wake(kr_fiber_t *f, int nargs);
/* Cancels a fiber (stops its wait, closes the coroutine, calls done with CANCELLED). */
void kr_fiber_cancel(kr_fiber_t *f);
/* Closes the pooled fibers of a generation that is being freed. */
void kr_fiber_pool_drain(kr_vm_t *vm);
/* Drains the run queue (server check hook). */
void kr_fiber_run_queue(kr_app_t *app);

#endif
