/* kr_lua_hub.c: SignalR hubs from Lua: kr.hub, hub methods and connection callbacks in
 * fibers, the ctx object, and the broadcaster (kr.send_log, kr.send_event, kr.group_send,
 * kr.send_all, kr.send_to, kr.send_user, kr.connections and the same on hub objects).
 *
 * Hubs are C objects owned by the app: they, their connections and groups survive a reload.
 * Their Lua handlers belong to a generation: each generation keeps, in its registry, a table
 * per hub { methods = { lower-cased name = fn }, connected = fn, disconnected = fn }, and the
 * hub's callbacks always look in the current generation's table.
 *
 * Broadcast arguments are encoded once per wire format, straight from the Lua stack into the
 * outgoing buffer (kr_hub_send_* call back into payload_encode while the values are on the
 * stack). Encoding failures are reported after the hub has released everything.
 * Every broadcast goes through the app's bus (kr_bus_send): the hub's own fan-out, or with the
 * Redis backplane one JSON and one MessagePack record delivered here and published once for the
 * other servers (core/kr_bus.h).
 */
#include "kr_fiber.h"
#include "kr_json.h"
#include "kr_log.h"
#include "kr_lua.h"
#include "kr_lua_backplane.h"
#include "kr_lua_auth.h"
#include "kr_lua_cors.h"
#include "kr_lua_hub_int.h"
#include "kr_lua_json.h"
#include "kr_lua_msgpack.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <msgpack.h>
#include <stdio.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define HUB_MT "kr.Hub"
#define CTX_MT "kr.HubContext"

typedef struct hub_box_s {
    kr_hub_t *hub; /* hubs live as long as the app */
} hub_box_t;

typedef struct ctx_box_s {
    kr_sr_conn_t *c; /* holds a reference until collected */
} ctx_box_t;

static const char handlers_key = 'h'; /* registry: { [hub lightuserdata] = handler table } */

/* ---- handler tables --------------------------------------------------------------------- */

/* Pushes the current generation's handler table for hub, or returns 0 (nothing pushed). */
static int push_handlers(lua_State *L, kr_hub_t *hub)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &handlers_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_rawgetp(L, -1, hub) != LUA_TTABLE) {
        lua_pop(L, 2);
        return 0;
    }
    lua_remove(L, -2);
    return 1;
}

/* Pushes handler `field` (or field[name], name compared case-insensitively, when name is
 * given); returns 0 if absent. */
static int push_handler(lua_State *L, kr_hub_t *hub, const char *field, const char *name)
{
    if (!push_handlers(L, hub))
        return 0;
    lua_getfield(L, -1, field);
    if (name != NULL) {
        if (!lua_istable(L, -1)) {
            lua_pop(L, 2);
            return 0;
        }
        char lower[256];
        size_t n = strlen(name);
        if (n >= sizeof(lower)) {
            lua_pop(L, 2);
            return 0;
        }
        for (size_t i = 0; i <= n; i++)
            lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
        lua_getfield(L, -1, lower);
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

/* ---- ctx -------------------------------------------------------------------------------- */

void kr__lua_push_ctx(lua_State *L, kr_sr_conn_t *c)
{
    ctx_box_t *box = lua_newuserdatauv(L, sizeof(*box), 1); /* user value: ctx.user */
    box->c = c;
    kr_sr_conn_ref(c);
    luaL_setmetatable(L, CTX_MT);
}

static void push_ctx(lua_State *L, kr_sr_conn_t *c)
{
    kr__lua_push_ctx(L, c);
}

kr_sr_conn_t *kr__lua_check_ctx(lua_State *L, int idx)
{
    ctx_box_t *box = luaL_checkudata(L, idx, CTX_MT);
    return box->c;
}

static kr_sr_conn_t *check_ctx(lua_State *L)
{
    return kr__lua_check_ctx(L, 1);
}

static int l_ctx_gc(lua_State *L)
{
    ctx_box_t *box = luaL_checkudata(L, 1, CTX_MT);
    if (box->c)
        kr_sr_conn_unref(box->c);
    box->c = NULL;
    return 0;
}

/* ctx.user: the claims the connection was authenticated with (a table, decoded once per ctx
 * and cached in its user value), or nil when anonymous. */
static int push_ctx_user(lua_State *L, kr_sr_conn_t *c)
{
    if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE)
        return 1;
    lua_pop(L, 1);
    const char *claims = kr_sr_conn_claims(c);
    const char *name = kr_sr_conn_user(c);
    char err[96];
    if (claims == NULL || kr_json_decode(L, claims, strlen(claims), NULL, err, sizeof(err)) != 0 ||
        !lua_istable(L, -1)) {
        if (claims != NULL)
            lua_pop(L, 1);
        if (name == NULL)
            return 0;
        lua_createtable(L, 0, 1);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
    }
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
    return 1;
}

static int l_ctx_index(lua_State *L)
{
    kr_sr_conn_t *c = check_ctx(L);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "connection_id") == 0) {
        lua_pushstring(L, kr_sr_conn_id(c));
        return 1;
    }
    if (strcmp(k, "user") == 0)
        return push_ctx_user(L, c);
    if (strcmp(k, "hub") == 0) {
        lua_pushstring(L, kr_hub_path(kr_sr_conn_hub(c)));
        return 1;
    }
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, k);
    return 1;
}

static int group_result(lua_State *L, int err)
{
    if (err == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, err == KR_ELIMIT ? "group name too long" : "connection closed");
    return 2;
}

static int l_ctx_join(lua_State *L)
{
    kr_sr_conn_t *c = check_ctx(L);
    size_t len;
    const char *g = luaL_checklstring(L, 2, &len);
    return group_result(L, kr_hub_group_add(kr_sr_conn_hub(c), c, g, len));
}

static int l_ctx_leave(lua_State *L)
{
    kr_sr_conn_t *c = check_ctx(L);
    size_t len;
    const char *g = luaL_checklstring(L, 2, &len);
    return group_result(L, kr_hub_group_remove(kr_sr_conn_hub(c), c, g, len));
}

/* ---- payload encoding ------------------------------------------------------------------- */

typedef enum { ARGS_PLAIN, ARGS_LOG, ARGS_EVENT } args_kind_e;

typedef struct lua_payload_s {
    lua_State *L;
    const char *target;
    const char *id;    /* the invocation id (client results), or NULL */
    int first, n;      /* arguments on the stack */
    args_kind_e kind;  /* log / event: one envelope object */
    const char *err;   /* the encoder's message when encoding failed */
} lua_payload_t;

int kr__lua_hub_encode_value(lua_State *L, int idx, int protocol, kr_sbuf_t *sb,
                             const char **err)
{
    if (protocol == KR_SR_PROTO_MSGPACK)
        return kr_mp_encode(L, idx, sb, NULL, err);
    if (lua_isnoneornil(L, idx)) {
        kr_sbuf_puts(sb, "null");
        return 0;
    }
    return kr_json_encode(L, idx, sb, NULL, err);
}

int kr__lua_hub_push_value(lua_State *L, const kr_sr_msg_t *m, const void *node, char *err,
                           size_t errlen)
{
    if (m->protocol == KR_SR_PROTO_MSGPACK) {
        const msgpack_object *o = node;
        if (o == NULL || o->type == MSGPACK_OBJECT_NIL) {
            lua_pushnil(L);
            return 0;
        }
        return kr_mp_push(L, o, NULL, err, errlen);
    }
    const cJSON *j = node;
    if (j == NULL || cJSON_IsNull(j)) {
        lua_pushnil(L);
        return 0;
    }
    return kr_json_push_cjson(L, j, NULL, err, errlen);
}

static int encode_arg(lua_payload_t *p, int protocol, int idx, kr_sbuf_t *sb)
{
    return kr__lua_hub_encode_value(p->L, idx, protocol, sb, &p->err);
}

/* The ReceiveLog / ReceiveEvent envelope as one MessagePack map; the timestamp is a timestamp
 * extension, what .NET writes for a DateTime. */
static int envelope_msgpack(lua_payload_t *p, kr_sbuf_t *sb, int64_t now_ms)
{
    size_t len;
    const char *a = lua_tolstring(p->L, p->first, &len);
    kr_mp_put_map(sb, 3);
    kr_mp_put_str(sb, p->kind == ARGS_LOG ? "level" : "eventName", p->kind == ARGS_LOG ? 5 : 9);
    kr_mp_put_str(sb, a, len);
    int rc = 0;
    if (p->kind == ARGS_LOG) {
        const char *m = lua_tolstring(p->L, p->first + 1, &len);
        kr_mp_put_str(sb, "message", 7);
        kr_mp_put_str(sb, m, len);
    } else {
        kr_mp_put_str(sb, "data", 4);
        rc = encode_arg(p, KR_SR_PROTO_MSGPACK, p->first + 1, sb);
    }
    kr_mp_put_str(sb, "timestamp", 9);
    kr_mp_put_timestamp_ms(sb, now_ms);
    return rc;
}

static int payload_encode_msgpack(lua_payload_t *p, kr_sbuf_t *sb)
{
    size_t start = kr_sr_mp_write_invocation_head(sb, p->id, p->target);
    int rc = 0;
    if (p->kind == ARGS_PLAIN) {
        kr_mp_put_array(sb, (uint32_t)p->n);
        for (int i = 0; i < p->n && rc == 0; i++)
            rc = encode_arg(p, KR_SR_PROTO_MSGPACK, p->first + i, sb);
    } else {
        kr_mp_put_array(sb, 1);
        rc = envelope_msgpack(p, sb, (int64_t)kr_time_wall_ms());
    }
    kr_sr_mp_write_invocation_tail(sb, start);
    return rc;
}

static int payload_encode(void *ud, int protocol, kr_sbuf_t *sb)
{
    lua_payload_t *p = ud;
    if (protocol == KR_SR_PROTO_MSGPACK)
        return payload_encode_msgpack(p, sb);
    kr_sr_json_write_invocation_head(sb, p->id, p->target);
    kr_sbuf_putc(sb, '[');
    int rc = 0;
    if (p->kind == ARGS_PLAIN) {
        for (int i = 0; i < p->n && rc == 0; i++) {
            if (i)
                kr_sbuf_putc(sb, ',');
            rc = encode_arg(p, KR_SR_PROTO_JSON, p->first + i, sb);
        }
    } else {
        /* Envelopes: ReceiveLog({level, message, timestamp}) and
         * ReceiveEvent({eventName, data, timestamp}); args are (a, b) at first, first+1. */
        char ts[KR_ISO_TS_LEN + 1];
        kr_time_iso(kr_time_wall_ms(), ts);
        size_t len;
        const char *a = lua_tolstring(p->L, p->first, &len);
        kr_sbuf_puts(sb, p->kind == ARGS_LOG ? "{\"level\":" : "{\"eventName\":");
        kr_json_write_string(sb, a, len);
        kr_sbuf_puts(sb, p->kind == ARGS_LOG ? ",\"message\":" : ",\"data\":");
        if (p->kind == ARGS_LOG) {
            const char *m = lua_tolstring(p->L, p->first + 1, &len);
            kr_json_write_string(sb, m, len);
        } else {
            rc = encode_arg(p, KR_SR_PROTO_JSON, p->first + 1, sb);
        }
        kr_sbuf_printf(sb, ",\"timestamp\":\"%s\"}", ts);
    }
    kr_sbuf_putc(sb, ']');
    kr_sr_json_write_tail(sb);
    return rc;
}

/* ---- broadcasting ----------------------------------------------------------------------- */

/* The hub a broadcast function targets: the hub object at index 1 (hub:send_all) or the
 * default hub of the current generation (kr.send_all). *base is the first argument after it. */
static kr_hub_t *target_hub(lua_State *L, int *base)
{
    hub_box_t *box = luaL_testudata(L, 1, HUB_MT);
    if (box) {
        *base = 2;
        return box->hub;
    }
    *base = 1;
    return VM_UPVALUE(L)->default_hub;
}

static int fail(lua_State *L, const char *fname, const char *msg)
{
    KR_LOG(KR_LOG_WARN, "hub", "%s failed: %s", fname, msg);
    lua_pushboolean(L, 0);
    lua_pushstring(L, msg);
    return 2;
}

/* Common end of a broadcast: raise for unencodable values (misuse), else true, count. */
static int finish_send(lua_State *L, const char *fname, lua_payload_t *p, int err, unsigned n)
{
    if (err == 0 && n == 0) {
        /* Nobody to send to, so nothing was encoded: encode once anyway, so that bad arguments
         * raise whether or not a client happens to be connected. */
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 128);
        err = payload_encode(p, KR_SR_PROTO_JSON, &sb);
        kr_sbuf_dispose(&sb);
    }
    if (err != 0 && p->err != NULL)
        return luaL_error(L, "%s: cannot encode the arguments: %s", fname, p->err);
    if (err != 0)
        return fail(L, fname, kr_strerror(err));
    lua_pushboolean(L, 1);
    lua_pushinteger(L, (lua_Integer)n);
    return 2;
}


static int l_send_log(lua_State *L)
{
    int base;
    kr_hub_t *hub = target_hub(L, &base);
    const char *level = luaL_checkstring(L, base);
    luaL_tolstring(L, base + 1, NULL);
    lua_replace(L, base + 1);
    if (hub == NULL)
        return fail(L, "send_log", "no hub is defined (kr.hub)");
    kr_log_level_e lv;
    if (kr_log_level_parse(level, &lv) == 0) {
        /* Any case is accepted, as kr.log does; clients get the canonical name. */
        lua_pushstring(L, kr_log_level_name(lv));
        lua_replace(L, base);
    } else {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "invalid level '%.40s' (Verbose, Debug, Information, Warning, Error, Fatal)",
                 level);
        return fail(L, "send_log", msg);
    }
    lua_payload_t p = {L, "ReceiveLog", NULL, base, 2, ARGS_LOG, NULL};
    kr_sr_payload_t pl = {payload_encode, &p};
    unsigned n = 0;
    int err = kr_bus_send(VM_UPVALUE(L)->app->bus, hub, KR_BUS_ALL, NULL, 0, &pl, &n);
    return finish_send(L, "send_log", &p, err, n);
}

static int l_send_event(lua_State *L)
{
    int base;
    kr_hub_t *hub = target_hub(L, &base);
    luaL_checkstring(L, base);
    lua_settop(L, base + 1);
    if (hub == NULL)
        return fail(L, "send_event", "no hub is defined (kr.hub)");
    lua_payload_t p = {L, "ReceiveEvent", NULL, base, 2, ARGS_EVENT, NULL};
    kr_sr_payload_t pl = {payload_encode, &p};
    unsigned n = 0;
    int err = kr_bus_send(VM_UPVALUE(L)->app->bus, hub, KR_BUS_ALL, NULL, 0, &pl, &n);
    return finish_send(L, "send_event", &p, err, n);
}

typedef enum { TO_ALL, TO_GROUP, TO_CONN, TO_USER } to_e;

static int send_generic(lua_State *L, to_e to, const char *fname)
{
    int base;
    kr_hub_t *hub = target_hub(L, &base);
    size_t nlen = 0;
    const char *name = to == TO_ALL ? NULL : luaL_checklstring(L, base, &nlen);
    int mi = to == TO_ALL ? base : base + 1;
    const char *method = luaL_checkstring(L, mi);
    if (hub == NULL)
        return fail(L, fname, "no hub is defined (kr.hub)");
    lua_payload_t p = {L, method, NULL, mi + 1, lua_gettop(L) - mi, ARGS_PLAIN, NULL};
    kr_sr_payload_t pl = {payload_encode, &p};
    unsigned n = 0;
    /* Through the bus: with a backplane, the other servers deliver to their own clients
     * (groups, users and connection ids span servers); n counts this server's recipients. */
    static const kr_bus_target_e targets[] = {
        [TO_ALL] = KR_BUS_ALL, [TO_GROUP] = KR_BUS_GROUP, [TO_CONN] = KR_BUS_CONN,
        [TO_USER] = KR_BUS_USER};
    int err = kr_bus_send(VM_UPVALUE(L)->app->bus, hub, targets[to], name, nlen, &pl, &n);
    if (to == TO_CONN && err == KR_ENOENT)
        return fail(L, fname, "no such connection");
    if (to == TO_CONN && err == KR_ECLOSED)
        return fail(L, fname, "no such connection here, and the backplane is unavailable");
    return finish_send(L, fname, &p, err, n);
}

static int l_send_all(lua_State *L)
{
    return send_generic(L, TO_ALL, "send_all");
}

static int l_group_send(lua_State *L)
{
    return send_generic(L, TO_GROUP, "group_send");
}

static int l_send_to(lua_State *L)
{
    return send_generic(L, TO_CONN, "send_to");
}

static int l_send_user(lua_State *L)
{
    return send_generic(L, TO_USER, "send_user");
}

static int l_connections(lua_State *L)
{
    int base;
    kr_hub_t *hub = target_hub(L, &base);
    if (!lua_isnoneornil(L, base)) {
        luaL_checktype(L, base, LUA_TTABLE);
        lua_getfield(L, base, "global");
        int global = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (global) /* the cluster's total: may wait for Redis */
            return kr__lua_connections_global(L, hub);
    }
    lua_pushinteger(L, hub ? (lua_Integer)kr_hub_connection_count(hub) : 0);
    return 1;
}

static int l_ctx_send(lua_State *L)
{
    kr_sr_conn_t *c = check_ctx(L);
    const char *method = luaL_checkstring(L, 2);
    lua_payload_t p = {L, method, NULL, 3, lua_gettop(L) - 2, ARGS_PLAIN, NULL};
    kr_sr_payload_t pl = {payload_encode, &p};
    int err = kr_sr_conn_send(c, &pl);
    if (err == KR_ECLOSED)
        return fail(L, "ctx:send", "connection closed");
    return finish_send(L, "ctx:send", &p, err, err == 0);
}

/* ---- invocations, connect and disconnect (the hub's callbacks) -------------------------- */

int kr__lua_hub_encode_invocation(lua_State *L, int protocol, const char *id, const char *target,
                                  int first, int n, kr_sbuf_t *sb, const char **err)
{
    lua_payload_t p = {L, target, id, first, n, ARGS_PLAIN, NULL};
    int rc = payload_encode(&p, protocol, sb);
    *err = p.err;
    return rc;
}

/* Ends the upload streams an invocation was given (the method is over). */
void kr__lua_hub_close_uploads(kr_sr_conn_t *c, char **ids, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        kr_sr_upload_t *u = kr_sr_upload_find(c, ids[i]);
        if (u != NULL)
            kr_sr_upload_close(u);
        kr_free(ids[i]);
    }
    kr_free(ids);
}

char **kr__lua_hub_copy_stream_ids(const kr_sr_msg_t *m)
{
    if (m->nstream_ids == 0)
        return NULL;
    char **ids = kr_malloc(m->nstream_ids * sizeof(*ids));
    for (unsigned i = 0; i < m->nstream_ids; i++)
        ids[i] = kr_strdup(m->stream_ids[i]);
    return ids;
}

typedef struct invocation_s {
    kr_sr_conn_t *c;
    char *id;       /* NULL: fire-and-forget */
    char *method;
    char **uploads; /* stream ids this invocation reads */
    unsigned nuploads;
} invocation_t;

static void invocation_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    invocation_t *inv = ud;
    kr_sr_conn_t *c = inv->c;
    const kr_hub_opts_t *o = kr_hub_opts(kr_sr_conn_hub(c));
    kr__lua_hub_close_uploads(c, inv->uploads, inv->nuploads);
    if (status == KR_FIBER_OK) {
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 64);
        lua_State *co = f->co;
        int nres = lua_gettop(co);
        const char *err = NULL;
        int rc = nres > 0 ? kr__lua_hub_encode_value(co, 1, kr_sr_conn_protocol(c), &sb, &err) : 0;
        if (rc != 0) {
            KR_LOG(KR_LOG_ERROR, "hub", "%s: result of '%s' cannot be encoded: %s",
                   kr_hub_path(kr_sr_conn_hub(c)), inv->method, err);
            char msg[300];
            snprintf(msg, sizeof(msg), "An unexpected error occurred invoking '%s' on the server.",
                     inv->method);
            kr_sr_conn_complete(c, inv->id, NULL, 0, msg);
        } else if (nres > 0) {
            kr_sr_conn_complete(c, inv->id, kr_sbuf_data(&sb), kr_sbuf_len(&sb), NULL);
        } else {
            kr_sr_conn_complete(c, inv->id, NULL, 0, NULL);
        }
        kr_sbuf_dispose(&sb);
    } else if (status == KR_FIBER_ERROR && kr__lua_auth_is_denial(f->error)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Failed to invoke '%s' because user is unauthorized",
                 inv->method);
        kr_sr_conn_complete(c, inv->id, NULL, 0, msg);
    } else {
        char msg[600];
        if (status == KR_FIBER_ERROR) {
            KR_LOG(KR_LOG_ERROR, "hub", "%s: method '%s' failed: %s",
                   kr_hub_path(kr_sr_conn_hub(c)), inv->method, f->error);
        }
        char base[300];
        snprintf(base, sizeof(base), "An unexpected error occurred invoking '%s' on the server.",
                 inv->method);
        kr__lua_hub_error_text(msg, sizeof(msg), base, o->detailed_errors, f->error);
        kr_sr_conn_complete(c, inv->id, NULL, 0, msg);
    }
    kr_sr_conn_unref(c);
    kr_free(inv->id);
    kr_free(inv->method);
    kr_free(inv);
}

void kr__lua_hub_error_text(char *out, size_t outlen, const char *base, int detailed,
                            const char *error)
{
    if (!detailed) {
        snprintf(out, outlen, "%s", base);
        return;
    }
    /* Detailed errors carry the first line of the Lua error (no traceback). */
    const char *detail = error ? error : "cancelled";
    size_t dlen = strcspn(detail, "\n");
    snprintf(out, outlen, "%s %.*s", base, (int)(dlen > 400 ? 400 : dlen), detail);
}

/* Pushes each argument of an invocation; top-level nulls become nil. Returns the count or
 * -1 (nothing left pushed) when conversion failed. */
static int push_arguments(lua_State *co, const kr_sr_msg_t *m)
{
    unsigned n = kr_sr_msg_argc(m);
    const cJSON *a = m->protocol == KR_SR_PROTO_JSON && m->arguments ? m->arguments->child : NULL;
    for (unsigned i = 0; i < n; i++) {
        char err[96];
        const void *node = a;
        if (m->protocol == KR_SR_PROTO_MSGPACK)
            node = &m->mp_arguments->via.array.ptr[i];
        if (!lua_checkstack(co, 4) || kr__lua_hub_push_value(co, m, node, err, sizeof(err)) != 0) {
            lua_pop(co, (int)i);
            return -1;
        }
        if (a)
            a = a->next;
    }
    return (int)n;
}

/* Fails an invocation the app took but cannot run: an error Completion (a streaming one never
 * touches the one-at-a-time slot), its upload streams closed. */
static void refuse(kr_sr_conn_t *c, const kr_sr_msg_t *m, const char *msg)
{
    kr_sr_uploads_close(c, m);
    if (m->type == KR_SR_STREAM_INVOCATION)
        kr_sr_conn_end_stream(c, m->invocation_id, msg);
    else
        kr_sr_conn_complete(c, m->invocation_id, NULL, 0, msg);
}

/* Pushes the authorize option of method name (hub:on's options), or returns 0. */
static int push_method_authz(lua_State *L, kr_hub_t *hub, const char *name)
{
    char lower[256];
    size_t n = strlen(name);
    int top = lua_gettop(L);
    if (n >= sizeof(lower) || !push_handlers(L, hub))
        return 0;
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    if (lua_getfield(L, -1, "authz") != LUA_TTABLE || lua_getfield(L, -1, lower) == LUA_TNIL) {
        lua_settop(L, top);
        return 0;
    }
    lua_replace(L, top + 1); /* handlers authz policy -> policy */
    lua_settop(L, top + 1);
    return 1;
}

static int hub_invoke(kr_hub_t *hub, kr_sr_conn_t *c, const kr_sr_msg_t *m, void *ud)
{
    kr_app_t *app = ud;
    kr_vm_t *vm = app->vm;
    if (vm == NULL)
        return KR_ENOENT;
    lua_State *L = vm->L;
    int streaming = m->type == KR_SR_STREAM_INVOCATION;
    char msg[300];
    /* A method exists as a plain one or a stream; being called the other way is an error. */
    if (!push_handler(L, hub, streaming ? "streams" : "methods", m->target)) {
        if (!push_handler(L, hub, streaming ? "methods" : "streams", m->target))
            return KR_ENOENT;
        lua_pop(L, 1);
        snprintf(msg, sizeof(msg),
                 streaming ? "The client attempted to invoke the non-streaming '%s' method with a "
                             "streaming invocation."
                           : "The client attempted to invoke the streaming '%s' method with a "
                             "non-streaming invocation.",
                 m->target);
        refuse(c, m, msg);
        return 0;
    }
    /* The declared parameters (after ctx, and emit for streams) must match the arguments plus
     * the upload streams, as .NET binds by position. */
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">u", &ar);
    int fixed = streaming ? 2 : 1;
    int given = (int)kr_sr_msg_argc(m) + (int)m->nstream_ids;
    if (!ar.isvararg && given != (int)ar.nparams - fixed) {
        lua_pop(L, 1);
        const kr_hub_opts_t *o = kr_hub_opts(hub);
        if (o->detailed_errors)
            snprintf(msg, sizeof(msg),
                     "Failed to invoke '%s' due to an error on the server. InvalidDataException: "
                     "Invocation provides %d argument(s) but target expects %d.",
                     m->target, given, ar.nparams > fixed ? ar.nparams - fixed : 0);
        else
            snprintf(msg, sizeof(msg), "Failed to invoke '%s' due to an error on the server.",
                     m->target);
        refuse(c, m, msg);
        return 0;
    }
    /* A per-method policy (hub:on(name, fn, { authorize = ... })): the fiber runs the auth
     * runner, which checks ctx.user and then calls the method (kr_lua_auth.c). */
    int pre = 0;
    if (push_method_authz(L, hub, m->target)) {
        kr__lua_auth_push_method_runner(L);
        lua_insert(L, -2);     /* method runner policy */
        lua_rotate(L, -3, 2);  /* runner policy method */
        pre = 2;
    }
    /* Arguments are converted before the fiber exists, so a failure has nothing to undo. */
    int base = lua_gettop(L); /* the method */
    push_ctx(L, c);
    if (streaming)
        lua_pushnil(L); /* emit: set by kr__lua_hub_start_stream */
    int n = push_arguments(L, m);
    if (n < 0) {
        lua_settop(L, base - 1 - pre);
        snprintf(msg, sizeof(msg), "Failed to invoke '%s' due to an error on the server.",
                 m->target);
        refuse(c, m, msg);
        return 0;
    }
    for (unsigned i = 0; i < m->nstream_ids; i++)
        kr__lua_push_upload(L, c, m->stream_ids[i]);
    int nargs = lua_gettop(L) - base; /* ctx [emit] args... uploads... */
    if (streaming)
        return kr__lua_hub_start_stream(vm, c, m, base, nargs, pre);
    invocation_t *inv = kr_calloc(1, sizeof(*inv));
    inv->c = c;
    inv->id = m->invocation_id ? kr_strdup(m->invocation_id) : NULL;
    inv->method = kr_strdup(m->target);
    kr_fiber_t *f = kr_fiber_new(vm, "hub method", invocation_done, inv);
    if (f == NULL) {
        lua_settop(L, base - 1 - pre);
        KR_LOG(KR_LOG_WARN, "hub", "%s: '%s' refused: too many fibers", kr_hub_path(hub),
               m->target);
        snprintf(msg, sizeof(msg), "An unexpected error occurred invoking '%s' on the server.",
                 m->target);
        kr_free(inv->id);
        kr_free(inv->method);
        kr_free(inv);
        refuse(c, m, msg);
        return 0;
    }
    inv->uploads = kr__lua_hub_copy_stream_ids(m);
    inv->nuploads = m->nstream_ids;
    kr_sr_conn_ref(c);
    lua_xmove(L, f->co, nargs + 1 + pre); /* [runner policy] method ctx args... */
    f->nargs = nargs + pre;
    kr_fiber_start(f);
    return 0;
}

static void connect_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    kr_sr_conn_t *c = ud;
    if (status == KR_FIBER_ERROR) {
        KR_LOG(KR_LOG_ERROR, "hub", "%s: on_connected failed: %s", kr_hub_path(kr_sr_conn_hub(c)),
               f->error);
        /* As in ASP.NET Core, an exception in OnConnectedAsync ends the connection, and
         * OnDisconnectedAsync does not run for it. */
        kr_sr_conn_abort(c, "Connection closed with an error.");
    }
    kr_sr_conn_unref(c);
}

static void disconnect_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    kr_sr_conn_t *c = ud;
    if (status == KR_FIBER_ERROR)
        KR_LOG(KR_LOG_ERROR, "hub", "%s: on_disconnected failed: %s",
               kr_hub_path(kr_sr_conn_hub(c)), f->error);
    kr_sr_conn_disconnected_done(c); /* groups are released only now */
    kr_sr_conn_unref(c);
}

/* Runs a connected/disconnected handler in a fiber; returns 1 when one was started. */
static int run_conn_handler(kr_app_t *app, kr_hub_t *hub, kr_sr_conn_t *c, const char *field,
                            const char *error, kr_fiber_done_cb done)
{
    kr_vm_t *vm = app->vm;
    if (vm == NULL || app->stopping_hard)
        return 0;
    lua_State *L = vm->L;
    if (!push_handler(L, hub, field, NULL))
        return 0;
    kr_fiber_t *f = kr_fiber_new(vm, field, done, c);
    if (f == NULL) {
        lua_pop(L, 1);
        KR_LOG(KR_LOG_WARN, "hub", "%s: %s skipped: too many fibers", kr_hub_path(hub), field);
        return 0;
    }
    kr_sr_conn_ref(c);
    lua_xmove(L, f->co, 1);
    push_ctx(f->co, c);
    if (error)
        lua_pushstring(f->co, error);
    else
        lua_pushnil(f->co);
    f->nargs = 2;
    kr_fiber_start(f);
    return 1;
}

static void hub_connected(kr_hub_t *hub, kr_sr_conn_t *c, void *ud)
{
    run_conn_handler(ud, hub, c, "connected", NULL, connect_done);
}

static int hub_disconnected(kr_hub_t *hub, kr_sr_conn_t *c, const char *error, void *ud)
{
    return run_conn_handler(ud, hub, c, "disconnected", error, disconnect_done);
}

static const kr_hub_app_t lua_hub_app = {
    .authorize = kr__lua_auth_hub,
    .invoke = hub_invoke,
    .connected = hub_connected,
    .disconnected = hub_disconnected,
};

/* ---- kr.hub and hub objects ------------------------------------------------------------- */

static kr_hub_t *check_hub(lua_State *L)
{
    return ((hub_box_t *)luaL_checkudata(L, 1, HUB_MT))->hub;
}

static uint64_t opt_ms(lua_State *L, int t, const char *key, uint64_t dflt)
{
    uint64_t v = dflt;
    if (lua_getfield(L, t, key) != LUA_TNIL) {
        int isnum;
        lua_Integer i = lua_tointegerx(L, -1, &isnum);
        if (!isnum || i <= 0)
            luaL_error(L, "kr.hub: %s must be a positive integer", key);
        v = (uint64_t)i;
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int t, const char *key, int dflt)
{
    int v = dflt;
    if (lua_getfield(L, t, key) != LUA_TNIL)
        v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Reads a list of names (transports / protocols) into a bit mask. */
static unsigned opt_list(lua_State *L, int t, const char *key, unsigned dflt,
                         const char *const *names, const unsigned *bits, unsigned n,
                         unsigned supported)
{
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    luaL_checktype(L, -1, LUA_TTABLE);
    unsigned mask = 0;
    lua_Integer len = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, -1, i);
        const char *s = luaL_checkstring(L, -1);
        unsigned j;
        for (j = 0; j < n; j++)
            if (kr_strncasecmp(s, names[j], strlen(names[j]) + 1) == 0)
                break;
        if (j == n)
            luaL_error(L, "kr.hub: unknown %s entry '%s'", key, s);
        if (!(bits[j] & supported))
            luaL_error(L, "kr.hub: %s '%s' is not supported yet", key, s);
        mask |= bits[j];
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (mask == 0)
        luaL_error(L, "kr.hub: %s must not be empty", key);
    return mask;
}

static void read_opts(lua_State *L, int t, kr_hub_opts_t *o)
{
    static const char *const tnames[] = {"WebSockets", "ServerSentEvents", "LongPolling"};
    static const unsigned tbits[] = {KR_SR_TRANSPORT_WS, KR_SR_TRANSPORT_SSE, KR_SR_TRANSPORT_LP};
    static const char *const pnames[] = {"json", "messagepack"};
    static const unsigned pbits[] = {KR_SR_PROTO_JSON, KR_SR_PROTO_MSGPACK};
    static const char *const known[] = {
        "keepalive_ms", "client_timeout_ms", "handshake_timeout_ms", "disconnect_timeout_ms",
        "max_message_bytes", "transports", "protocols", "stateful_reconnect", "detailed_errors",
        "builtins", "authorize", "max_queued_invocations", "poll_timeout_ms",
        "stream_buffer_capacity", "max_streams", "client_result_timeout_ms",
        "stateful_buffer_bytes", "cors", NULL};
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "kr.hub: option names are strings (got a %s)", luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok)
            luaL_error(L, "kr.hub: unknown option '%s'", k);
    }
    o->keepalive_ms = opt_ms(L, t, "keepalive_ms", o->keepalive_ms);
    o->client_timeout_ms = opt_ms(L, t, "client_timeout_ms", o->client_timeout_ms);
    o->handshake_timeout_ms = opt_ms(L, t, "handshake_timeout_ms", o->handshake_timeout_ms);
    o->disconnect_timeout_ms = opt_ms(L, t, "disconnect_timeout_ms", o->disconnect_timeout_ms);
    o->max_message_bytes = (size_t)opt_ms(L, t, "max_message_bytes", o->max_message_bytes);
    o->max_queued_invocations =
        (unsigned)opt_ms(L, t, "max_queued_invocations", o->max_queued_invocations);
    o->transports = opt_list(L, t, "transports", o->transports, tnames, tbits, 3,
                             KR_SR_TRANSPORT_WS | KR_SR_TRANSPORT_SSE | KR_SR_TRANSPORT_LP);
    o->poll_timeout_ms = opt_ms(L, t, "poll_timeout_ms", o->poll_timeout_ms);
    o->protocols = opt_list(L, t, "protocols", o->protocols, pnames, pbits, 2,
                            KR_SR_PROTO_JSON | KR_SR_PROTO_MSGPACK);
    o->stream_buffer_capacity =
        (unsigned)opt_ms(L, t, "stream_buffer_capacity", o->stream_buffer_capacity);
    if (o->stream_buffer_capacity == 0)
        luaL_error(L, "kr.hub: stream_buffer_capacity must be at least 1");
    o->max_streams = (unsigned)opt_ms(L, t, "max_streams", o->max_streams);
    o->client_result_timeout_ms =
        opt_ms(L, t, "client_result_timeout_ms", o->client_result_timeout_ms);
    o->stateful_buffer_bytes =
        (size_t)opt_ms(L, t, "stateful_buffer_bytes", o->stateful_buffer_bytes);
    o->detailed_errors = opt_bool(L, t, "detailed_errors", o->detailed_errors);
    o->builtins = opt_bool(L, t, "builtins", o->builtins);
    o->stateful_reconnect = opt_bool(L, t, "stateful_reconnect", o->stateful_reconnect);
    lua_getfield(L, t, "authorize");
    kr__lua_auth_check_option(L, -1, "kr.hub");
    lua_pop(L, 1);
}

static int l_kr_hub(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    kr_app_t *app = vm->app;
    if (!vm->loading)
        return luaL_error(L, "kr.hub may only be called while the scripts load");
    size_t plen;
    const char *raw = luaL_checklstring(L, 1, &plen);
    luaL_argcheck(L, raw[0] == '/', 1, "hub path must start with '/'");
    luaL_argcheck(L, plen < 512 && memchr(raw, '\0', plen) == NULL, 1, "hub path too long");
    /* "/h/" and "/h" are one hub (the hub matches request paths without the slash). */
    char path[512];
    memcpy(path, raw, plen + 1);
    while (plen > 1 && path[plen - 1] == '/')
        path[--plen] = '\0';
    kr_hub_opts_t o;
    kr_hub_opts_default(&o);
    const kr_cors_t *cors = NULL; /* the cors option (kr_lua_cors.c) */
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        read_opts(L, 2, &o);
        cors = kr__lua_cors_option(L, 2, "kr.hub");
    }
    for (unsigned i = 0; i < vm->nhubs; i++)
        if (strcmp(kr_hub_path(vm->hubs[i].hub), path) == 0)
            return luaL_error(L, "kr.hub: '%s' is declared twice", path);
    /* A hub of an earlier generation keeps its connections: take it over (its options change
     * only if this generation is adopted, see kr__lua_hubs_adopt). */
    kr_hub_t *hub = NULL;
    for (unsigned i = 0; i < app->nhubs && hub == NULL; i++)
        if (strcmp(kr_hub_path(app->hubs[i]), path) == 0)
            hub = app->hubs[i];
    /* The handler table goes in first: nothing below can raise once the hub exists. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &handlers_key);
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    lua_setfield(L, -2, "methods");
    lua_newtable(L);
    lua_setfield(L, -2, "streams");
    hub_box_t *box = lua_newuserdatauv(L, sizeof(*box), 0);
    box->hub = NULL;
    luaL_setmetatable(L, HUB_MT);
    /* stack: handlers handlertable box */
    vm->hubs = kr_realloc(vm->hubs, sizeof(*vm->hubs) * (vm->nhubs + 1));
    int created = hub == NULL;
    if (created) {
        /* New hubs are served only once this generation is adopted: requests are routed to
         * the hubs of the current generation (kr__lua_hub_http). */
        hub = kr_hub_new(app->server, path, &o, &lua_hub_app, app);
        app->hubs = kr_realloc(app->hubs, sizeof(*app->hubs) * (app->nhubs + 1));
        app->hubs[app->nhubs++] = hub;
    }
    vm->hubs[vm->nhubs++] = (kr_vm_hub_t){hub, o, created};
    box->hub = hub;
    kr__lua_cors_bind_hub(L, vm, hub, cors);
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "authorize"); /* checked by read_opts */
        kr__lua_auth_set_hub(L, hub, -1);
        lua_pop(L, 1);
    }
    if (vm->default_hub == NULL)
        vm->default_hub = hub;
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -4, hub); /* handlers[hub] = handlertable */
    return 1;
}

/* hub:on and hub:stream: registers fn under the lower-cased name in handlers[field]. A name
 * is either a plain method or a stream, never both. */
static int define_method(lua_State *L, const char *field, const char *other, const char *fname)
{
    kr_hub_t *hub = check_hub(L);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int has_authz = 0;
    if (!lua_isnoneornil(L, 4)) {
        /* { authorize = true | "Policy" }: checked per invocation (kr_lua_auth.c) */
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 4)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "authorize") != 0)
                return luaL_error(L, "%s: unknown option '%s'", fname, luaL_tolstring(L, -1, NULL));
        }
        lua_getfield(L, 4, "authorize");
        kr__lua_auth_check_option(L, -1, fname);
        has_authz = !lua_isnil(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 4);
    kr_vm_t *vm = VM_UPVALUE(L);
    if (!vm->loading)
        return luaL_error(L, "%s may only be called while the scripts load", fname);
    luaL_argcheck(L, len > 0 && len < 256, 2, "method name must be 1..255 bytes");
    if (!push_handlers(L, hub))
        return luaL_error(L, "%s: this hub belongs to another generation", fname);
    char lower[256];
    for (size_t i = 0; i <= len; i++)
        lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    lua_getfield(L, -1, other);
    if (lua_getfield(L, -1, lower) != LUA_TNIL)
        return luaL_error(L, "%s: method '%s' is defined twice (names are case-insensitive)",
                          fname, name);
    lua_pop(L, 2);
    lua_getfield(L, -1, field);
    if (lua_getfield(L, -1, lower) != LUA_TNIL)
        return luaL_error(L, "%s: method '%s' is defined twice (names are case-insensitive)",
                          fname, name);
    lua_pop(L, 1);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, lower);
    if (has_authz) {
        /* handlers.authz[lower] = the policy */
        lua_pop(L, 1);
        if (lua_getfield(L, -1, "authz") != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setfield(L, -3, "authz");
        }
        lua_getfield(L, 4, "authorize");
        lua_setfield(L, -2, lower);
    }
    lua_settop(L, 1);
    return 1;
}

static int l_hub_on(lua_State *L)
{
    return define_method(L, "methods", "streams", "hub:on");
}

static int l_hub_stream(lua_State *L)
{
    return define_method(L, "streams", "methods", "hub:stream");
}

static int set_conn_handler(lua_State *L, const char *field)
{
    kr_hub_t *hub = check_hub(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    kr_vm_t *vm = VM_UPVALUE(L);
    if (!vm->loading)
        return luaL_error(L, "hub:on_%s may only be called while the scripts load", field);
    if (!push_handlers(L, hub))
        return luaL_error(L, "hub: this hub belongs to another generation");
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, field);
    lua_settop(L, 1);
    return 1;
}

static int l_hub_on_connected(lua_State *L)
{
    return set_conn_handler(L, "connected");
}

static int l_hub_on_disconnected(lua_State *L)
{
    return set_conn_handler(L, "disconnected");
}

static int l_hub_tostring(lua_State *L)
{
    lua_pushfstring(L, "kr.Hub (%s)", kr_hub_path(check_hub(L)));
    return 1;
}

static int l_hub_path(lua_State *L)
{
    lua_pushstring(L, kr_hub_path(check_hub(L)));
    return 1;
}

/* ---- app-level ------------------------------------------------------------------------- */

int kr__lua_hub_http(kr_app_t *app, kr_http_req_t *req)
{
    /* Only the hubs the current generation declares are served. */
    kr_vm_t *vm = app->vm;
    for (unsigned i = 0; vm && i < vm->nhubs; i++)
        if (kr_hub_handle_http(vm->hubs[i].hub, req))
            return 1;
    return 0;
}

static void remove_app_hub(kr_app_t *app, kr_hub_t *hub)
{
    for (unsigned i = 0; i < app->nhubs; i++) {
        if (app->hubs[i] == hub) {
            app->hubs[i] = app->hubs[--app->nhubs];
            return;
        }
    }
}

static int vm_declares(const kr_vm_t *vm, const kr_hub_t *hub)
{
    for (unsigned i = 0; i < vm->nhubs; i++)
        if (vm->hubs[i].hub == hub)
            return 1;
    return 0;
}

void kr__lua_hubs_adopt(kr_app_t *app, kr_vm_t *vm)
{
    for (unsigned i = 0; i < vm->nhubs; i++)
        if (!vm->hubs[i].created)
            kr_hub_set_opts(vm->hubs[i].hub, &vm->hubs[i].opts);
    /* A hub the new scripts no longer declare is retired: its clients are told the server is
     * stopping (they may reconnect elsewhere) and it is freed with the app. */
    for (unsigned i = 0; i < app->nhubs;) {
        kr_hub_t *hub = app->hubs[i];
        if (vm_declares(vm, hub)) {
            i++;
            continue;
        }
        KR_LOG(KR_LOG_INFO, "hub", "%s is no longer declared: closing its connections",
               kr_hub_path(hub));
        kr_hub_shutdown(hub);
        remove_app_hub(app, hub);
        app->retired = kr_realloc(app->retired, sizeof(*app->retired) * (app->nretired + 1));
        app->retired[app->nretired++] = hub;
    }
}

void kr__lua_hubs_discard(kr_app_t *app, kr_vm_t *vm)
{
    /* Hubs that only a failed generation declared were never served: free them now. */
    for (unsigned i = 0; i < vm->nhubs; i++) {
        if (!vm->hubs[i].created)
            continue;
        remove_app_hub(app, vm->hubs[i].hub);
        kr_hub_free(vm->hubs[i].hub);
    }
    vm->nhubs = 0;
    vm->default_hub = NULL;
}

void kr__lua_hubs_shutdown(kr_app_t *app)
{
    for (unsigned i = 0; i < app->nhubs; i++)
        kr_hub_shutdown(app->hubs[i]);
}

void kr__lua_hubs_free(kr_app_t *app)
{
    app->stopping_hard = 1; /* no more on_disconnected fibers */
    for (unsigned i = 0; i < app->nhubs; i++)
        kr_hub_free(app->hubs[i]);
    for (unsigned i = 0; i < app->nretired; i++)
        kr_hub_free(app->retired[i]);
    kr_free(app->hubs);
    kr_free(app->retired);
    app->hubs = app->retired = NULL;
    app->nhubs = app->nretired = 0;
}

/* ---- registration ----------------------------------------------------------------------- */

static const luaL_Reg kr_hub_funcs[] = {
    {"hub", l_kr_hub},
    {"send_log", l_send_log},
    {"send_event", l_send_event},
    {"group_send", l_group_send},
    {"send_all", l_send_all},
    {"send_to", l_send_to},
    {"send_user", l_send_user},
    {"connections", l_connections},
    {NULL, NULL},
};

static const luaL_Reg hub_methods[] = {
    {"on", l_hub_on},
    {"stream", l_hub_stream},
    {"on_connected", l_hub_on_connected},
    {"on_disconnected", l_hub_on_disconnected},
    {"send_log", l_send_log},
    {"send_event", l_send_event},
    {"group_send", l_group_send},
    {"send_all", l_send_all},
    {"send_to", l_send_to},
    {"send_user", l_send_user},
    {"connections", l_connections},
    {"path", l_hub_path},
    {NULL, NULL},
};

static const luaL_Reg ctx_methods[] = {
    {"join", l_ctx_join},
    {"leave", l_ctx_leave},
    {"send", l_ctx_send},
    {"invoke", kr__lua_ctx_invoke},
    {NULL, NULL},
};

void kr__lua_open_hub(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, kr_hub_funcs, 1);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &handlers_key);
    luaL_newmetatable(L, HUB_MT);
    lua_newtable(L);
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, hub_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_hub_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CTX_MT);
    luaL_setfuncs(L, ctx_methods, 0);
    lua_pushcfunction(L, l_ctx_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    kr__lua_open_hub_calls(L);
}
