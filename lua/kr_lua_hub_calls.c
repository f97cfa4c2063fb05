/* kr_lua_hub_calls.c: the hub features that wait in the middle of a Lua method: server
 * streams (hub:stream methods and their emit function), client-to-server upload streams (the
 * iterators a method reads with `for item in stream do`), and client results (ctx:invoke).
 *
 * Each runs in the method's fiber and suspends it with kr_fiber_wait_event until the core
 * (kr_sr_calls.c) reports: an upload item or the stream's end, the client's Completion. A
 * fiber cancelled while it waits (the client cancelled the stream, a shutdown) drops its
 * registration through the unwait callback, so the core never calls back into a dead fiber.
 * Values cross in the connection's protocol (kr__lua_hub_encode_value / push_value).
 */
#include "kr_fiber.h"
#include "kr_log.h"
#include "kr_lua_auth.h"
#include "kr_lua_hub_int.h"
#include "kr_lua_json.h"

#include <lauxlib.h>
#include <stdio.h>

#define EMIT_MT "kr.HubStreamEmitter"
#define UPLOAD_MT "kr.HubUploadStream"

/* ---- server-to-client streams ------------------------------------------------------------ */

/* One running stream: a Lua userdata (the emit function's self) anchored in the registry
 * while the fiber runs. */
typedef struct stream_s {
    kr_sr_conn_t *c;  /* a reference while the stream runs */
    kr_fiber_t *f;
    char *id;
    char *method;
    char **uploads;
    unsigned nuploads;
    int anchor;       /* registry reference of this userdata */
    int over;         /* the fiber ended: emit does nothing */
    int cancelled;    /* the client cancelled it (or the connection ended) */
} stream_t;

static void stream_cancel(kr_sr_conn_t *c, void *ud)
{
    stream_t *st = ud;
    KR_UNUSED(c);
    st->cancelled = 1;
    if (!st->over && st->f->vm->app->running != st->f)
        kr_fiber_cancel(st->f); /* the done callback cleans up */
}

static void stream_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    stream_t *st = ud;
    kr_sr_conn_t *c = st->c;
    st->over = 1;
    kr_sr_stream_end(c, st->id);
    kr__lua_hub_close_uploads(c, st->uploads, st->nuploads);
    st->uploads = NULL;
    if (status == KR_FIBER_ERROR && kr__lua_auth_is_denial(f->error)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Failed to invoke '%s' because user is unauthorized",
                 st->method);
        kr_sr_conn_end_stream(c, st->id, msg);
    } else if (status == KR_FIBER_ERROR) {
        KR_LOG(KR_LOG_ERROR, "hub", "%s: stream '%s' failed: %s", kr_hub_path(kr_sr_conn_hub(c)),
               st->method, f->error);
        char msg[600];
        kr__lua_hub_error_text(msg, sizeof(msg),
                               "An error occurred on the server while streaming results.",
                               kr_hub_opts(kr_sr_conn_hub(c))->detailed_errors, f->error);
        kr_sr_conn_end_stream(c, st->id, msg);
    } else {
        /* Also after a cancellation: the client ignores it, some servers' clients expect it. */
        kr_sr_conn_end_stream(c, st->id, NULL);
    }
    kr_free(st->id);
    kr_free(st->method);
    st->id = st->method = NULL;
    st->c = NULL;
    kr_sr_conn_unref(c);
    lua_State *L = f->vm->L;
    luaL_unref(L, LUA_REGISTRYINDEX, st->anchor); /* the emitter may now be collected */
}

/* emit(item): one StreamItem to the client. Returns true, or false once the stream is over
 * (cancelled, connection gone). Values that cannot be encoded raise. */
static int l_emit(lua_State *L)
{
    stream_t *st = luaL_checkudata(L, 1, EMIT_MT);
    if (st->over || st->cancelled || st->c == NULL || !kr_sr_conn_is_open(st->c)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    kr_sr_conn_t *c = st->c;
    int protocol = kr_sr_conn_protocol(c);
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    const char *err = NULL;
    int rc;
    if (protocol == KR_SR_PROTO_MSGPACK) {
        size_t start = kr_sr_mp_write_stream_item_head(&sb, st->id);
        rc = kr__lua_hub_encode_value(L, 2, protocol, &sb, &err);
        kr_sr_mp_end(&sb, start);
    } else {
        kr_sr_json_write_stream_item_head(&sb, st->id);
        rc = kr__lua_hub_encode_value(L, 2, protocol, &sb, &err);
        kr_sr_json_write_tail(&sb);
    }
    if (rc != 0) {
        kr_sbuf_dispose(&sb);
        return luaL_error(L, "emit: cannot encode the item: %s", err ? err : kr_strerror(rc));
    }
    lua_pushboolean(L, kr_sr_conn_send_encoded(c, &sb, 1) == 0);
    return 1;
}

int kr__lua_hub_start_stream(kr_vm_t *vm, kr_sr_conn_t *c, const kr_sr_msg_t *m, int base,
                             int nargs, int pre)
{
    lua_State *L = vm->L;
    stream_t *st = lua_newuserdatauv(L, sizeof(*st), 0);
    memset(st, 0, sizeof(*st));
    luaL_setmetatable(L, EMIT_MT);
    lua_replace(L, base + 2); /* the emit placeholder */
    int rc = kr_sr_stream_begin(c, m->invocation_id, stream_cancel, st);
    if (rc != 0) {
        lua_settop(L, base - 1 - pre);
        char msg[300];
        if (rc == KR_EEXIST)
            snprintf(msg, sizeof(msg), "Invocation ID '%.200s' is already in use.",
                     m->invocation_id);
        else
            snprintf(msg, sizeof(msg),
                     "An unexpected error occurred invoking '%.200s' on the server.", m->target);
        kr_sr_uploads_close(c, m);
        kr_sr_conn_end_stream(c, m->invocation_id, msg);
        return 0;
    }
    kr_fiber_t *f = kr_fiber_new(vm, "hub stream", stream_done, st);
    if (f == NULL) {
        kr_sr_stream_end(c, m->invocation_id);
        lua_settop(L, base - 1 - pre);
        KR_LOG(KR_LOG_WARN, "hub", "%s: stream '%s' refused: too many fibers",
               kr_hub_path(kr_sr_conn_hub(c)), m->target);
        kr_sr_uploads_close(c, m);
        char msg[300];
        snprintf(msg, sizeof(msg), "An error occurred on the server while streaming results.");
        kr_sr_conn_end_stream(c, m->invocation_id, msg);
        return 0;
    }
    st->c = c;
    kr_sr_conn_ref(c);
    st->f = f;
    st->id = kr_strdup(m->invocation_id);
    st->method = kr_strdup(m->target);
    st->uploads = kr__lua_hub_copy_stream_ids(m);
    st->nuploads = m->nstream_ids;
    lua_pushvalue(L, base + 2);
    st->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, f->co, nargs + 1 + pre); /* [runner policy] fn ctx emit args... uploads... */
    f->nargs = nargs + pre;
    kr_fiber_start(f);
    return 0;
}

/* ---- upload streams: iterators ------------------------------------------------------------ */

typedef struct upload_box_s {
    kr_sr_conn_t *c; /* a reference until collected */
    char *id;
    kr_fiber_t *waiter;
} upload_box_t;

void kr__lua_push_upload(lua_State *L, kr_sr_conn_t *c, const char *stream_id)
{
    upload_box_t *b = lua_newuserdatauv(L, sizeof(*b), 0);
    b->c = c;
    b->id = kr_strdup(stream_id);
    b->waiter = NULL;
    kr_sr_conn_ref(c);
    luaL_setmetatable(L, UPLOAD_MT);
}

static int l_upload_gc(lua_State *L)
{
    upload_box_t *b = luaL_checkudata(L, 1, UPLOAD_MT);
    if (b->c != NULL)
        kr_sr_conn_unref(b->c);
    kr_free(b->id);
    b->c = NULL;
    b->id = NULL;
    return 0;
}

static void upload_ready(void *ud)
{
    upload_box_t *b = ud;
    kr_fiber_t *f = b->waiter;
    b->waiter = NULL;
    if (f != NULL)
        kr_fiber_wake(f, 0);
}

static void upload_unwait(kr_fiber_t *f, void *ud)
{
    upload_box_t *b = ud;
    KR_UNUSED(f);
    b->waiter = NULL;
    kr_sr_upload_t *u = b->c && b->id ? kr_sr_upload_find(b->c, b->id) : NULL;
    if (u != NULL)
        kr_sr_upload_wait(u, NULL, NULL);
}

/* The next item: the value (null items are kr.json.null, so a loop does not stop at them),
 * nil at the end; raises the client's error when it ended the stream with one. Suspends the
 * fiber while nothing is buffered. */
static int upload_next(lua_State *L, int status, lua_KContext kctx)
{
    KR_UNUSED(status);
    KR_UNUSED(kctx);
    upload_box_t *b = luaL_checkudata(L, 1, UPLOAD_MT);
    kr_sr_upload_t *u = b->c && b->id ? kr_sr_upload_find(b->c, b->id) : NULL;
    if (u == NULL)
        return 0; /* the method is over: the stream was closed */
    kr_sr_msg_t item;
    const char *error = NULL;
    int rc = kr_sr_upload_next(u, &item, &error);
    if (rc == 1) {
        char err[96];
        const void *node = item.protocol == KR_SR_PROTO_MSGPACK ? (const void *)item.mp_item
                                                                 : (const void *)item.item;
        int prc = kr__lua_hub_push_value(L, &item, node, err, sizeof(err));
        kr_sr_msg_dispose(&item);
        if (prc != 0)
            return luaL_error(L, "stream item: %s", err);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            kr_json_push_null(L);
        }
        return 1;
    }
    if (rc < 0) {
        if (error != NULL) {
            /* The client's text as is (no Lua position prefix: it did not happen here). */
            lua_pushstring(L, error);
            return lua_error(L);
        }
        return 0;
    }
    kr_fiber_t *f = kr_fiber_current(L);
    if (f == NULL)
        return luaL_error(L, "an upload stream can only be read from a fiber (the hub method, or one it spawned)");
    b->waiter = f;
    kr_sr_upload_wait(u, upload_ready, b);
    kr_fiber_wait_event(f, upload_unwait, b);
    return lua_yieldk(L, 0, 0, upload_next);
}

static int l_upload_call(lua_State *L)
{
    lua_settop(L, 1); /* the generic for passes (state, control): not needed */
    return upload_next(L, LUA_OK, 0);
}

static int l_upload_tostring(lua_State *L)
{
    upload_box_t *b = luaL_checkudata(L, 1, UPLOAD_MT);
    lua_pushfstring(L, "kr.HubUploadStream (%s)", b->id ? b->id : "closed");
    return 1;
}

/* ---- client results ------------------------------------------------------------------------ */

typedef struct invoke_wait_s {
    kr_sr_conn_t *c;
    kr_fiber_t *f;
    char id[24];
} invoke_wait_t;

static void invoke_result(kr_sr_conn_t *c, const kr_sr_msg_t *m, const char *error, void *ud)
{
    invoke_wait_t *w = ud;
    kr_fiber_t *f = w->f;
    lua_State *co = f->co;
    int n = 2;
    if (!lua_checkstack(co, 3)) {
        n = 0; /* cannot happen with the fiber's stack at a yield; resume with nothing */
    } else if (error != NULL) {
        lua_pushnil(co);
        lua_pushstring(co, error);
    } else {
        char err[96];
        const void *node = NULL;
        if (m->has_result)
            node = m->protocol == KR_SR_PROTO_MSGPACK ? (const void *)m->mp_result
                                                      : (const void *)m->result;
        if (kr__lua_hub_push_value(co, m, node, err, sizeof(err)) != 0) {
            lua_pushnil(co);
            lua_pushfstring(co, "the client's result cannot be converted: %s", err);
        } else {
            lua_pushnil(co);
        }
    }
    kr_sr_conn_unref(c);
    kr_free(w);
    kr_fiber_wake(f, n);
}

static void invoke_unwait(kr_fiber_t *f, void *ud)
{
    invoke_wait_t *w = ud;
    KR_UNUSED(f);
    kr_sr_result_forget(w->c, w->id);
    kr_sr_conn_unref(w->c);
    kr_free(w);
}

/* ctx:invoke(method, ...) -> result | nil, error. Sends method(...) to the caller with an
 * invocation id and suspends the fiber until the client answers, the hub's
 * client_result_timeout_ms passes, or the connection ends. */
int kr__lua_ctx_invoke(lua_State *L)
{
    kr_sr_conn_t *c = kr__lua_check_ctx(L, 1);
    const char *method = luaL_checkstring(L, 2);
    kr_fiber_t *f = kr_fiber_current(L);
    if (f == NULL)
        return luaL_error(L, "ctx:invoke must be called from a fiber (a hub method, a route)");
    if (!kr_sr_conn_is_open(c)) {
        lua_pushnil(L);
        lua_pushliteral(L, "connection closed");
        return 2;
    }
    invoke_wait_t *w = kr_calloc(1, sizeof(*w));
    int rc = kr_sr_result_expect(c, w->id,
                                 kr_hub_opts(kr_sr_conn_hub(c))->client_result_timeout_ms,
                                 invoke_result, w);
    if (rc != 0) {
        kr_free(w);
        lua_pushnil(L);
        lua_pushstring(L, rc == KR_ELIMIT ? "too many calls in flight on this connection"
                                          : "connection closed");
        return 2;
    }
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    const char *err = NULL;
    rc = kr__lua_hub_encode_invocation(L, kr_sr_conn_protocol(c), w->id, method, 3,
                                       lua_gettop(L) - 2, &sb, &err);
    if (rc != 0) {
        kr_sbuf_dispose(&sb);
        kr_sr_result_forget(c, w->id);
        kr_free(w);
        return luaL_error(L, "ctx:invoke: cannot encode the arguments: %s",
                          err ? err : kr_strerror(rc));
    }
    if (kr_sr_conn_send_encoded(c, &sb, 1) != 0) {
        kr_sr_result_forget(c, w->id);
        kr_free(w);
        lua_pushnil(L);
        lua_pushliteral(L, "connection closed");
        return 2;
    }
    w->c = c;
    w->f = f;
    kr_sr_conn_ref(c);
    kr_fiber_wait_event(f, invoke_unwait, w);
    return lua_yield(L, 0);
}

void kr__lua_open_hub_calls(lua_State *L)
{
    luaL_newmetatable(L, EMIT_MT);
    lua_pushcfunction(L, l_emit);
    lua_setfield(L, -2, "__call");
    lua_pushliteral(L, "kr.HubStreamEmitter");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_newmetatable(L, UPLOAD_MT);
    lua_pushcfunction(L, l_upload_call);
    lua_setfield(L, -2, "__call");
    lua_pushcfunction(L, l_upload_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_upload_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
