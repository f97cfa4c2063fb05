/* test_fiber.c: unit tests for the Lua runtime (lua/kr_fiber.c, lua/kr_lua.c, the fiber and
 * timer parts of lua/kr_lua_core.c) on a real loop.
 *
 * Each test writes a script to a temporary directory, loads it into an app on a server that
 * is started (signal handlers, sweep, and the check hook that drains the fiber run queue) but
 * has no listener, and runs the loop until the script sets the global `done` (or a time
 * limit passes); then kr_server_shutdown ends the loop and the test reads the globals the
 * script left in the generation's lua_State. Orderings are checked through loop-time
 * deadlines set in the same loop turn, so the tests do not depend on the machine's speed.
 * Covered: kr.sleep ordering, kr.yield, fibers spawned at load time, kr.every (ticks, stop,
 * skipping while a tick still runs), kr.after, kr.spawn arguments and error isolation, waiting
 * at load time or inside a plain coroutine, the CPU-slice hook, the memory cap, to-be-closed
 * variables on error and cancel, the load budget, and reload.
 */
#include "kr_fiber.h"
#include "kr_lua.h"
#include "kr_server.h"

#include "kr_test.h"

#include <lauxlib.h>

/* ---- fixture ---------------------------------------------------------------------------- */

typedef struct lx_s {
    uv_loop_t loop;
    kr_server_t s;
    kr_app_t *app;
    char dir[64];
    char path[128];
    char *scripts[1];
    uv_timer_t poll;
    uint64_t t0, max_ms;
    int poll_done;   /* the script's `done` was seen (not the time limit) */
    uint64_t ran_ms; /* loop time from the start to the shutdown */
} lx_t;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fwrite(text, 1, strlen(text), f), strlen(text));
    ASSERT_OK(fclose(f));
}

/* Writes the script and creates the app (not loaded yet). */
static void lx_init(lx_t *x, const char *script)
{
    memset(x, 0, sizeof(*x));
    snprintf(x->dir, sizeof(x->dir), "/tmp/kr_test_fiber_XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(x->dir));
    snprintf(x->path, sizeof(x->path), "%s/main.lua", x->dir);
    write_file(x->path, script);
    x->scripts[0] = x->path;
    ASSERT_OK(uv_loop_init(&x->loop));
    kr_server_init(&x->s, &x->loop);
    x->app = kr_app_new(&x->s, x->scripts, 1);
    ASSERT_NOT_NULL(x->app);
}

/* Removes the script and its directory (idempotent). */
static void lx_remove_files(lx_t *x)
{
    if (x->path[0])
        unlink(x->path);
    if (x->dir[0])
        rmdir(x->dir);
}

/* lx_init + a load that must succeed. The script file is removed at once (a failing
 * assertion later leaves nothing behind) unless the test rewrites it for a reload. */
static void lx_load_keep(lx_t *x, const char *script)
{
    lx_init(x, script);
    ASSERT_OK(kr_app_load(x->app));
    ASSERT_NOT_NULL(x->app->vm);
}

static void lx_load(lx_t *x, const char *script)
{
    lx_load_keep(x, script);
    lx_remove_files(x);
}

/* Evaluates a Lua expression in the current generation and returns it as a string (tostring
 * semantics: "nil", "true", ...), in a static buffer. Runs at loop level (no fiber). */
static const char *eval(lx_t *x, const char *expr)
{
    static char out[4096];
    lua_State *L = x->app->vm->L;
    char chunk[1024];
    snprintf(chunk, sizeof(chunk), "return %s", expr);
    int top = lua_gettop(L);
    if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        KR_TEST_FAIL("evaluating %s: %s", expr, lua_tostring(L, -1));
    size_t len;
    const char *s = luaL_tolstring(L, -1, &len);
    snprintf(out, sizeof(out), "%.*s", (int)len, s);
    lua_settop(L, top);
    return out;
}

#define ASSERT_LUA(x, expr, want) ASSERT_STR_EQ(eval((x), (expr)), (want))

#define ASSERT_LUA_CONTAINS(x, expr, needle)                                                       \
    do {                                                                                           \
        const char *v_ = eval((x), (expr));                                                        \
        if (strstr(v_, (needle)) == NULL)                                                          \
            KR_TEST_FAIL("%s = \"%s\" does not contain \"%s\"", (expr), v_, (needle));             \
    } while (0)

static long eval_int(lx_t *x, const char *expr)
{
    const char *v = eval(x, expr);
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0')
        KR_TEST_FAIL("%s = \"%s\" is not an integer", expr, v);
    return n;
}

static void on_poll(uv_timer_t *t)
{
    lx_t *x = t->data;
    uint64_t elapsed = uv_now(&x->loop) - x->t0;
    x->poll_done = strcmp(eval(x, "done"), "true") == 0;
    if (!x->poll_done && elapsed < x->max_ms)
        return;
    x->ran_ms = elapsed;
    uv_close((uv_handle_t *)t, NULL);
    kr_server_shutdown(&x->s);
}

/* Starts the server and runs the loop until the script sets `done = true`, or for max_ms;
 * then shuts the server down. uv_run must return by itself: the shutdown stops the timers,
 * cancels the fibers and closes every handle. Returns whether `done` was reached. */
static int lx_run(lx_t *x, uint64_t max_ms)
{
    ASSERT_OK(kr_server_start(&x->s));
    ASSERT_OK(uv_timer_init(&x->loop, &x->poll));
    x->poll.data = x;
    x->max_ms = max_ms;
    uv_update_time(&x->loop);
    x->t0 = uv_now(&x->loop);
    ASSERT_OK(uv_timer_start(&x->poll, on_poll, 2, 2));
    uv_run(&x->loop, UV_RUN_DEFAULT);
    ASSERT(x->s.stopping);
    return x->poll_done;
}

/* lx_run that must end through `done`. */
#define RUN_UNTIL_DONE(x, max_ms)                                                                  \
    do {                                                                                           \
        if (!lx_run((x), (max_ms)))                                                                \
            KR_TEST_FAIL("the script did not set done within %d ms", (int)(max_ms));               \
    } while (0)

/* The same order as main.c: free the app, dispose of the server, close the loop. */
static void lx_done(lx_t *x)
{
    kr_app_free(x->app);
    kr_server_dispose(&x->s);
    ASSERT_EQ(uv_loop_close(&x->loop), 0);
    lx_remove_files(x);
}

/* ---- sleeping, yielding, spawning ------------------------------------------------------- */

TEST(sleep_ordering)
{
    lx_t x;
    lx_load(&x, "order = {}\n"
                "for _, ms in ipairs({30, 10, 20}) do\n"
                "  kr.spawn(function()\n"
                "    kr.sleep(ms)\n"
                "    order[#order + 1] = ms\n"
                "    if #order == 3 then done = true end\n"
                "  end)\n"
                "end\n"
                "kr.spawn(function() kr.sleep(0); zero = true end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "table.concat(order, ',')", "10,20,30");
    ASSERT_LUA(&x, "zero", "true");
    ASSERT_EQ(x.app->nfibers, 0);
    lx_done(&x);
}

TEST(yield_interleaves)
{
    lx_t x;
    lx_load(&x, "seq = {}\n"
                "local function worker(name)\n"
                "  for i = 1, 3 do seq[#seq + 1] = name .. i; kr.yield() end\n"
                "end\n"
                "kr.after(1, function()\n"
                "  kr.spawn(worker, 'a')\n"
                "  kr.spawn(worker, 'b')\n"
                "  kr.spawn(function()\n"
                "    for i = 1, 4 do coroutine.yield() end\n" /* a bare yield requeues too */
                "    done = true\n"
                "  end)\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "table.concat(seq, ',')", "a1,b1,a2,b2,a3,b3");
    lx_done(&x);
}

/* Fibers spawned while the scripts load run at once; one that yields, or that spawns another
 * fiber, goes on the run queue before the server has been started (main.c loads the scripts
 * first, then calls kr_server_start). */
TEST(yield_in_fiber_spawned_at_load)
{
    lx_t x;
    lx_load(&x, "seq = {}\n"
                "kr.spawn(function()\n"
                "  seq[#seq + 1] = 'a1'; kr.yield(); seq[#seq + 1] = 'a2'\n"
                "  done = true\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "table.concat(seq, ',')", "a1,a2");
    lx_done(&x);
}

TEST(spawn_from_fiber_at_load)
{
    lx_t x;
    lx_load(&x, "kr.spawn(function()\n"
                "  kr.spawn(function() done = true end)\n"
                "  outer = true\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "outer", "true");
    lx_done(&x);
}

TEST(spawn_passes_arguments)
{
    lx_t x;
    lx_load(&x, "kr.spawn(function(a, b, c, d)\n"
                "  got = table.concat({a, b, tostring(c), tostring(d)}, ',')\n"
                "end, 'x', 'y', 3, nil)\n"
                "spawn_ret = kr.spawn(function(...) nargs = select('#', ...) end, 1, nil, 3)\n"
                "kr.after(1, function()\n"
                "  kr.spawn(function(t, n) from_timer = t.k .. n; done = true end, {k = 'v'}, 7)\n"
                "end)\n"
                "bad_arg = select(2, pcall(kr.spawn, 42))\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "got", "x,y,3,nil");
    ASSERT_LUA(&x, "nargs", "3");
    ASSERT_LUA(&x, "spawn_ret", "true");
    ASSERT_LUA(&x, "from_timer", "v7");
    ASSERT_LUA_CONTAINS(&x, "bad_arg", "function expected");
    lx_done(&x);
}

TEST(error_in_fiber_does_not_stop_others)
{
    lx_t x;
    lx_load(&x, "log = {}\n"
                "kr.after(1, function()\n"
                "  kr.spawn(function() log[#log + 1] = 'a'; error('boom') end)\n"
                "  kr.spawn(function() kr.sleep(10); log[#log + 1] = 'b' end)\n"
                "  kr.spawn(function()\n"
                "    log[#log + 1] = 'c'\n"
                /* armed in the same loop turn as b's sleep, so it fires after it */
                "    kr.after(40, function() log[#log + 1] = 'd'; done = true end)\n"
                "  end)\n"
                "  kr.spawn(function() kr.sleep(5); error('late boom') end)\n"
                "  error('the timer callback fails too')\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "table.concat(log, ',')", "a,c,b,d");
    ASSERT_EQ(x.app->nfibers, 0);
    lx_done(&x);
}

TEST(sleep_at_load_time_fails)
{
    lx_t x;
    lx_init(&x, "before = true\nkr.sleep(10)\nafter = true\n");
    ASSERT_NE(kr_app_load(x.app), 0);
    ASSERT_NULL(x.app->vm);
    lx_done(&x);

    lx_init(&x, "kr.yield()\n");
    ASSERT_NE(kr_app_load(x.app), 0);
    ASSERT_NULL(x.app->vm);
    lx_done(&x);
}

TEST(sleep_inside_plain_coroutine)
{
    lx_t x;
    lx_load(&x, "kr.spawn(function()\n"
                "  local co = coroutine.wrap(function() kr.sleep(1) end)\n"
                "  local ok, err = pcall(co)\n"
                "  wrap_ok, wrap_err = ok, tostring(err)\n"
                "  local co2 = coroutine.create(function() kr.yield() end)\n"
                "  local ok2, err2 = coroutine.resume(co2)\n"
                "  yield_ok, yield_err = ok2, tostring(err2)\n"
                "  kr.sleep(5)\n" /* the fiber itself still waits normally */
                "  done = true\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "wrap_ok", "false");
    ASSERT_LUA_CONTAINS(&x, "wrap_err", "kr.sleep");
    ASSERT_LUA_CONTAINS(&x, "wrap_err", "coroutine");
    ASSERT_LUA(&x, "yield_ok", "false");
    ASSERT_LUA_CONTAINS(&x, "yield_err", "kr.yield");
    lx_done(&x);
}

/* ---- timers ----------------------------------------------------------------------------- */

TEST(every_ticks_and_stop)
{
    lx_t x;
    lx_load(&x, "ticks = 0\n"
                "local t\n"
                "t = kr.every(10, function()\n"
                "  ticks = ticks + 1\n"
                "  if ticks == 5 then\n"
                "    first_stop = t:stop()\n"
                "    kr.after(50, function()\n" /* room for five more ticks: none may come */
                "      second_stop = t:stop(); after = tostring(t); done = true\n"
                "    end)\n"
                "  end\n"
                "end)\n"
                "before = tostring(t)\n"
                "bad_interval = select(2, pcall(kr.every, 0, function() end))\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "ticks", "5");
    ASSERT_LUA(&x, "first_stop", "true");
    ASSERT_LUA(&x, "second_stop", "false");
    ASSERT_LUA(&x, "before", "kr.Timer (every 10 ms)");
    ASSERT_LUA(&x, "after", "kr.Timer (stopped)");
    ASSERT_LUA_CONTAINS(&x, "bad_interval", "at least 1 ms");
    lx_done(&x);
}

TEST(every_without_handle_keeps_ticking)
{
    lx_t x;
    /* The returned handle is dropped and collected: the timer keeps going. */
    lx_load(&x, "ticks = 0\n"
                "kr.every(5, function()\n"
                "  ticks = ticks + 1; collectgarbage()\n"
                "  if ticks == 5 then done = true end\n"
                "end)\n"
                "collectgarbage()\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT(eval_int(&x, "ticks") >= 5);
    lx_done(&x);
}

TEST(every_skips_while_previous_tick_runs)
{
    lx_t x;
    lx_load(&x, "started, running, max_running, finished = 0, 0, 0, 0\n"
                "kr.every(20, function()\n"
                "  started = started + 1\n"
                "  if started == 3 then done = true end\n"
                "  running = running + 1\n"
                "  if running > max_running then max_running = running end\n"
                "  kr.sleep(70)\n"
                "  running = running - 1\n"
                "  finished = finished + 1\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 3000);
    ASSERT_LUA(&x, "max_running", "1");
    ASSERT_LUA(&x, "started", "3");
    ASSERT(eval_int(&x, "finished") >= 2);
    /* Starts at ~20, ~100 and ~180 ms: intervals that passed while a run slept were
     * skipped (without skipping, the third start would come at ~60 ms). */
    long intervals = (long)(x.ran_ms / 20);
    if (intervals < 6)
        KR_TEST_FAIL("3 ticks started after %ld intervals only: ticks were not skipped", intervals);
    lx_done(&x);
}

TEST(after_runs_once)
{
    lx_t x;
    lx_load(&x, "count = 0\n"
                "local t = kr.after(10, function() count = count + 1 end)\n"
                "kr.after(0, function() zero = true end)\n"
                "local never = kr.after(30, function() never_ran = true end)\n"
                "cancelled = never:stop()\n"
                "kr.after(80, function() stop_after_fire = t:stop(); done = true end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA(&x, "count", "1");
    ASSERT_LUA(&x, "zero", "true");
    ASSERT_LUA(&x, "cancelled", "true");
    ASSERT_LUA(&x, "never_ran", "nil");
    ASSERT_LUA(&x, "stop_after_fire", "false");
    lx_done(&x);
}

/* ---- guards ----------------------------------------------------------------------------- */

TEST(cpu_slice_stops_busy_fiber)
{
    lx_t x;
    lx_load(&x, "kr.limits{ lua_max_slice_ms = 50 }\n"
                "r = {}\n"
                "local function capture(key)\n"
                "  return setmetatable({}, {__close = function(_, e) r[key] = tostring(e) end})\n"
                "end\n"
                "kr.after(1, function()\n"
                "  kr.spawn(function()\n"
                "    local g <close> = capture('busy_err')\n"
                "    r.busy_started = true\n"
                "    while true do end\n"
                "  end)\n"
                "  kr.spawn(function()\n"
                "    r.pcall_started = true\n"
                "    local ok, err = pcall(function() while true do end end)\n"
                "    r.after_pcall = true\n"
                "    r.pcall_err = tostring(err)\n"
                "  end)\n"
                "  kr.spawn(function()\n"
                "    r.later = true\n"
                "    kr.after(5, function()\n"
                "      local s = 0\n"
                "      for i = 1, 5000 do s = s + i end\n" /* a fresh fiber runs normally */
                "      r.much_later = s\n"
                "      done = true\n"
                "    end)\n"
                "  end)\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 3000);
    ASSERT_LUA(&x, "r.busy_started", "true");
    ASSERT(strcmp(eval(&x, "r.busy_err"), "nil") != 0); /* it ended with an error */
    ASSERT_LUA(&x, "r.pcall_started", "true");
    ASSERT_LUA(&x, "r.after_pcall", "nil");
    ASSERT_LUA(&x, "r.pcall_err", "nil");
    ASSERT_LUA(&x, "r.later", "true");
    ASSERT_LUA(&x, "r.much_later", "12502500");
    ASSERT_EQ(x.app->nfibers, 0);
    lx_done(&x);
}

/* The error a stopped fiber ends with says what happened. */
TEST(cpu_slice_error_message)
{
    lx_t x;
    lx_load(&x, "kr.limits{ lua_max_slice_ms = 50 }\n"
                "kr.after(1, function()\n"
                "  kr.spawn(function()\n"
                "    local g <close> = setmetatable({}, {__close = function(_, e)\n"
                "      busy_err = tostring(e)\n"
                "    end})\n"
                "    while true do end\n"
                "  end)\n"
                "  kr.spawn(function() done = true end)\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 3000);
    ASSERT_LUA_CONTAINS(&x, "busy_err", "CPU slice exceeded");
    ASSERT_LUA_CONTAINS(&x, "busy_err", "more than 50 ms");
    lx_done(&x);
}

/* The loop runs inside a plain coroutine of the fiber, and the fiber catches the error
 * (pcall around coroutine.wrap, or coroutine.resume, which never raises): the fiber must
 * still be stopped before it runs more code. */
TEST(cpu_slice_not_swallowed_by_nested_coroutine)
{
    lx_t x;
    lx_load(&x, "kr.limits{ lua_max_slice_ms = 50 }\n"
                "r = {}\n"
                "kr.after(1, function()\n"
                "  kr.spawn(function()\n"
                "    local co = coroutine.wrap(function() while true do end end)\n"
                "    local ok, err = pcall(co)\n"
                "    r.after_wrap = tostring(err)\n"
                "  end)\n"
                "  kr.spawn(function()\n"
                "    local co = coroutine.create(function() while true do end end)\n"
                "    local ok, err = coroutine.resume(co)\n"
                "    r.after_resume = tostring(err)\n"
                "  end)\n"
                "  kr.spawn(function() done = true end)\n"
                "end)\n");
    RUN_UNTIL_DONE(&x, 3000);
    char wrap[512];
    snprintf(wrap, sizeof(wrap), "%s", eval(&x, "r.after_wrap"));
    const char *resume = eval(&x, "r.after_resume");
    if (strcmp(wrap, "nil") != 0 || strcmp(resume, "nil") != 0)
        KR_TEST_FAIL("code after the caught slice error ran: after pcall(coroutine.wrap) = %s; "
                     "after coroutine.resume = %s",
                     wrap, resume);
    lx_done(&x);
}

TEST(memory_cap)
{
    lx_t x;
    lx_load(&x, "kr.limits{ lua_max_memory_mb = 4 }\n"
                "kr.after(1, function()\n"
                "  kr.spawn(function()\n"
                "    local g <close> = setmetatable({}, {__close = function(_, e)\n"
                "      mem_err = tostring(e)\n"
                "    end})\n"
                "    local t, i = {}, 0\n"
                "    while true do i = i + 1; t[i] = string.rep('x', 8192) .. i end\n"
                "    never = true\n"
                "  end)\n"
                "  kr.spawn(function()\n"
                "    local ok, err = pcall(function()\n"
                "      local t, i = {}, 0\n"
                "      while true do i = i + 1; t[i] = string.rep('z', 8192) .. i end\n"
                "    end)\n"
                "    caught = tostring(err)\n" /* memory errors are catchable */
                "  end)\n"
                "  kr.spawn(function()\n"
                "    kr.sleep(5)\n"
                "    local s = {}\n"
                "    for i = 1, 2000 do s[i] = string.rep('y', 512) .. i end\n"
                "    alloc_after = #s\n"
                "    done = true\n"
                "  end)\n"
                "end)\n");
    ASSERT_EQ(x.app->vm->mem_limit, 4u * 1024 * 1024);
    RUN_UNTIL_DONE(&x, 3000);
    ASSERT_LUA_CONTAINS(&x, "mem_err", "not enough memory");
    ASSERT_LUA(&x, "never", "nil");
    ASSERT_LUA_CONTAINS(&x, "caught", "not enough memory");
    ASSERT_LUA(&x, "alloc_after", "2000");
    lx_done(&x);
}

TEST(close_variables_on_error_and_cancel)
{
    lx_t x;
    lx_load(&x, "kr.spawn(function()\n"
                "  local a <close> = setmetatable({}, {__close = function(_, e)\n"
                "    closed_a = tostring(e); done = true\n"
                "  end})\n"
                "  kr.sleep(5)\n"
                "  error('boom after sleep')\n"
                "end)\n"
                "kr.spawn(function()\n"
                "  local b <close> = setmetatable({}, {__close = function(_, e)\n"
                "    closed_b = e == nil and 'clean' or tostring(e)\n"
                "  end})\n"
                "end)\n"
                "kr.spawn(function()\n"
                "  local c <close> = setmetatable({}, {__close = function() closed_c = true end})\n"
                "  kr.sleep(100000)\n" /* cancelled by the shutdown */
                "end)\n");
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT_LUA_CONTAINS(&x, "closed_a", "boom after sleep");
    ASSERT_LUA(&x, "closed_b", "clean");
    ASSERT_LUA(&x, "closed_c", "true");
    ASSERT_EQ(x.app->nfibers, 0);
    lx_done(&x);
}

/* The load budget bounds the time the scripts take to load, also when they spawned a fiber
 * (which runs at once, during the load). */
TEST(load_budget)
{
    lx_t x;
    lx_init(&x, "local t0 = os.clock()\n"
                "while os.clock() - t0 < 0.3 do end\n"
                "loaded = true\n");
    x.app->limits.load_budget_ms = 50;
    ASSERT_EQ(kr_app_load(x.app), KR_ESCRIPT);
    lx_remove_files(&x);
    lx_done(&x);

    lx_init(&x, "kr.spawn(function() end)\n"
                "local t0 = os.clock()\n"
                "while os.clock() - t0 < 0.3 do end\n"
                "loaded = true\n");
    x.app->limits.load_budget_ms = 50;
    int rc = kr_app_load(x.app);
    lx_done(&x);
    if (rc != KR_ESCRIPT)
        KR_TEST_FAIL("a script that spawned a fiber ran past the load budget (load returned %d)",
                     rc);
}

/* ---- reload ----------------------------------------------------------------------------- */

TEST(reload)
{
    lx_t x;
    lx_load_keep(&x, "marker = 'A'\nonly_a = 1\n");
    unsigned gen_a = x.app->vm->generation;
    kr_vm_t *vm_a = x.app->vm;
    ASSERT_LUA(&x, "marker", "A");

    write_file(x.path, "marker = 'B'\nonly_b = 42\n");
    ASSERT_OK(kr_app_reload(x.app));
    ASSERT(x.app->vm != vm_a);
    ASSERT(x.app->vm->generation > gen_a);
    unsigned gen_b = x.app->vm->generation;
    ASSERT_LUA(&x, "marker", "B");
    ASSERT_LUA(&x, "only_b", "42");
    ASSERT_LUA(&x, "only_a", "nil"); /* a fresh state, not the old one patched */

    /* A syntax error keeps the old generation. */
    write_file(x.path, "marker = = 'C'\n");
    ASSERT_NE(kr_app_reload(x.app), 0);
    ASSERT_EQ(x.app->vm->generation, gen_b);
    ASSERT_LUA(&x, "marker", "B");

    /* So does a runtime error while loading, and a wait at load time. */
    write_file(x.path, "marker = 'D'\nerror('broken')\n");
    ASSERT_NE(kr_app_reload(x.app), 0);
    ASSERT_EQ(x.app->vm->generation, gen_b);
    write_file(x.path, "marker = 'E'\nkr.sleep(1)\n");
    ASSERT_NE(kr_app_reload(x.app), 0);
    ASSERT_EQ(x.app->vm->generation, gen_b);
    ASSERT_LUA(&x, "marker", "B");

    /* A good file again: a new generation, newer than the failed attempts. */
    write_file(x.path, "marker = 'F'\n");
    ASSERT_OK(kr_app_reload(x.app));
    ASSERT(x.app->vm->generation > gen_b);
    ASSERT_LUA(&x, "marker", "F");
    lx_done(&x);
}

TEST(reload_stops_old_timers)
{
    lx_t x;
    lx_load_keep(&x, "kr.every(5, function() end)\n");
    kr_vm_t *old = x.app->vm;
    ASSERT_EQ(old->ntimers, 1);
    write_file(x.path, "ticks = 0\n"
                       "kr.every(10, function()\n"
                       "  ticks = ticks + 1\n"
                       "  if ticks == 3 then done = true end\n"
                       "end)\n");
    ASSERT_OK(kr_app_reload(x.app));
    ASSERT_EQ(x.app->vm->ntimers, 1);
    RUN_UNTIL_DONE(&x, 2000);
    ASSERT(eval_int(&x, "ticks") >= 3);
    lx_done(&x);
}

KR_TEST_MAIN(KR_TEST_ENTRY(sleep_ordering), KR_TEST_ENTRY(yield_interleaves),
             KR_TEST_ENTRY(yield_in_fiber_spawned_at_load), KR_TEST_ENTRY(spawn_from_fiber_at_load),
             KR_TEST_ENTRY(spawn_passes_arguments),
             KR_TEST_ENTRY(error_in_fiber_does_not_stop_others),
             KR_TEST_ENTRY(sleep_at_load_time_fails), KR_TEST_ENTRY(sleep_inside_plain_coroutine),
             KR_TEST_ENTRY(every_ticks_and_stop), KR_TEST_ENTRY(every_without_handle_keeps_ticking),
             KR_TEST_ENTRY(every_skips_while_previous_tick_runs), KR_TEST_ENTRY(after_runs_once),
             KR_TEST_ENTRY(cpu_slice_stops_busy_fiber), KR_TEST_ENTRY(cpu_slice_error_message),
             KR_TEST_ENTRY(cpu_slice_not_swallowed_by_nested_coroutine), KR_TEST_ENTRY(memory_cap),
             KR_TEST_ENTRY(close_variables_on_error_and_cancel), KR_TEST_ENTRY(load_budget),
             KR_TEST_ENTRY(reload), KR_TEST_ENTRY(reload_stops_old_timers))
