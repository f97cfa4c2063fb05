/* kr_lua_http.c: Lua routes: kr.map_route, kr.static, the request handler that runs each
 * route in its own fiber, and the `req` / `res` objects (docs/lua-api.md section 3).
 *
 * req and res are userdata boxes holding the C request. The boxes are anchored in the
 * registry while the handler's fiber lives; when it ends the boxes are emptied, so a script
 * that kept them gets a clear error instead of touching freed memory. req caches what it
 * computes (headers, query, ...) in its user value table; res keeps its headers in a Lua
 * table, so neither owns C memory that a Lua error could leak.
 */
#include "kr_fiber.h"
#include "kr_http.h"
#include "kr_log.h"
#include "kr_lua.h"
#include "kr_lua_auth.h"
#include "kr_lua_cors.h"
#include "kr_lua_json.h"

#include <lauxlib.h>
#include <stdio.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define REQ_MT "kr.Request"
#define RES_MT "kr.Response"
#define MAX_RESPONSE_HEADERS 100

typedef struct req_box_s {
    kr_http_req_t *req; /* NULL once the handler finished */
    const kr_route_match_t *match;
} req_box_t;

typedef struct res_box_s {
    kr_http_req_t *req;
    int status;     /* set by res:status (0: not set) */
    int sent;
    int nheaders;
} res_box_t;

/* One running route handler. */
typedef struct route_call_s {
    kr_http_req_t *req;
    req_box_t *rq;
    res_box_t *rs;
    kr_route_match_t match;
} route_call_t;

/* ---- URL-encoded text ------------------------------------------------------------------- */

/* Pushes the form-decoded ('+' is a space) string s[0..n). Bad escapes stay as they are. */
void kr__lua_push_form_decoded(lua_State *L, const char *s, size_t n)
{
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n);
    luaL_pushresultsize(&b, kr_http_form_decode(s, n, out));
}


/* Calls fn(L, key, value) for each pair of an application/x-www-form-urlencoded string,
 * with the decoded key and value pushed (fn pops them). */
static void parse_urlencoded(lua_State *L, const char *s, size_t n, int only_key_idx,
                             int collect_idx, int list_mode)
{
    size_t i = 0;
    lua_Integer count = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && s[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(s + i, '=', end - i);
            size_t klen = eq ? (size_t)(eq - (s + i)) : end - i;
            kr__lua_push_form_decoded(L, s + i, klen);
            if (eq)
                kr__lua_push_form_decoded(L, eq + 1, (size_t)(s + end - eq - 1));
            else
                lua_pushliteral(L, "");
            /* stack: key value */
            if (list_mode) {
                if (lua_rawequal(L, -2, only_key_idx)) {
                    lua_rawseti(L, collect_idx, ++count);
                    lua_pop(L, 1);
                } else {
                    lua_pop(L, 2);
                }
            } else {
                lua_rawset(L, collect_idx); /* a repeated key keeps its last value */
            }
        }
        i = end + 1;
    }
}

/* ---- req -------------------------------------------------------------------------------- */

static kr_http_req_t *check_req(lua_State *L, req_box_t **boxp)
{
    req_box_t *box = luaL_checkudata(L, 1, REQ_MT);
    if (box->req == NULL)
        luaL_error(L, "req used after its handler finished");
    if (boxp)
        *boxp = box;
    return box->req;
}

static void push_params(lua_State *L, const kr_route_match_t *m)
{
    lua_createtable(L, 0, (int)m->nparams);
    for (unsigned i = 0; i < m->nparams; i++) {
        const kr_route_param_t *p = &m->params[i];
        if (p->is_int)
            lua_pushinteger(L, (lua_Integer)p->int_value);
        else
            lua_pushlstring(L, p->value, p->value_len);
        lua_setfield(L, -2, p->name);
    }
}

static void push_headers(lua_State *L, const kr_http_req_t *req)
{
    lua_createtable(L, 0, (int)req->nheaders);
    for (unsigned i = 0; i < req->nheaders; i++) {
        const kr_http_header_t *h = &req->headers[i];
        lua_pushlstring(L, h->name, h->name_len);
        if (lua_rawget(L, -2) == LUA_TSTRING) {
            /* A repeated header: join with ", " as RFC 9110 allows (Set-Cookie never comes
             * in a request). */
            lua_pushlstring(L, h->name, h->name_len);
            lua_insert(L, -2);
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->name, h->name_len);
            lua_pushlstring(L, h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
}

static void push_query(lua_State *L, const kr_http_req_t *req)
{
    lua_newtable(L);
    parse_urlencoded(L, req->query, strlen(req->query), 0, lua_gettop(L), 0);
}

/* Pushes the field cache of the req at index 1 (its user value), made on first use: a handler
 * that reads no field costs no table. */
static void push_field_cache(lua_State *L)
{
    if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 4);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 1);
    }
}

/* __index: methods first, then the fields, computed once and cached in the user value. */
static int l_req_index(lua_State *L)
{
    req_box_t *box;
    kr_http_req_t *req = check_req(L, &box);
    const char *k = luaL_checkstring(L, 2);
    lua_getmetatable(L, 1);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL && k[0] != '_')
        return 1; /* a method */
    lua_pop(L, 2);
    push_field_cache(L);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    /* stack: req key cache */
    if (strcmp(k, "method") == 0)
        lua_pushstring(L, req->method_name);
    else if (strcmp(k, "path") == 0)
        lua_pushlstring(L, req->path, req->path_len);
    else if (strcmp(k, "raw_query") == 0)
        lua_pushstring(L, req->query);
    else if (strcmp(k, "target") == 0)
        lua_pushstring(L, req->target);
    else if (strcmp(k, "remote_addr") == 0)
        lua_pushstring(L, req->remote_addr);
    else if (strcmp(k, "params") == 0)
        push_params(L, box->match);
    else if (strcmp(k, "headers") == 0)
        push_headers(L, req);
    else if (strcmp(k, "query") == 0)
        push_query(L, req);
    else if (strcmp(k, "body") == 0) {
        if (req->body && req->body->len)
            lua_pushlstring(L, req->body->data, req->body->len);
        else
            return 0;
    } else
        return 0; /* anything unknown, and user when nobody is authenticated: nil */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    return 1;
}

/* req.user: the auth runner stores the claims table in the field cache (kr_lua_auth.c). */
int kr__lua_req_set_user(lua_State *L)
{
    check_req(L, NULL);
    luaL_checktype(L, 2, LUA_TTABLE);
    push_field_cache(L);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "user");
    return 0;
}

static int l_req_newindex(lua_State *L)
{
    return luaL_error(L, "req is read-only");
}

static int l_req_query_all(lua_State *L)
{
    kr_http_req_t *req = check_req(L, NULL);
    luaL_checkstring(L, 2);
    lua_newtable(L);
    parse_urlencoded(L, req->query, strlen(req->query), 2, lua_gettop(L), 1);
    kr_json_push_array_mt(L); /* a list, even when empty: encodes as [] */
    lua_setmetatable(L, -2);
    return 1;
}

static int l_req_cookie(lua_State *L)
{
    kr_http_req_t *req = check_req(L, NULL);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    size_t len;
    const char *v = kr_http_req_header(req, "cookie", &len);
    if (v == NULL)
        return 0;
    /* cookie-string = pair *( ";" SP pair ), pair = name "=" value (RFC 6265 5.4) */
    const char *p = v, *end = v + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
            const char *val = eq + 1;
            size_t vlen = (size_t)(stop - val);
            while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
                vlen--;
            if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
                val++;
                vlen -= 2;
            }
            lua_pushlstring(L, val, vlen);
            return 1;
        }
        p = stop + 1;
    }
    return 0;
}

static int l_req_json(lua_State *L)
{
    kr_http_req_t *req = check_req(L, NULL);
    if (req->body == NULL || req->body->len == 0) {
        luaL_pushfail(L);
        lua_pushliteral(L, "request has no body");
        return 2;
    }
    char err[128];
    if (kr_json_decode(L, req->body->data, req->body->len, NULL, err, sizeof(err)) != 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static int l_req_form(lua_State *L)
{
    kr_http_req_t *req = check_req(L, NULL);
    lua_newtable(L);
    if (req->body)
        parse_urlencoded(L, req->body->data, req->body->len, 0, lua_gettop(L), 0);
    return 1;
}

/* req:header(name): like req.headers[name:lower()] (repeated headers joined with ", "). */
static int l_req_header(lua_State *L)
{
    check_req(L, NULL);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    luaL_Buffer b;
    char *lower = luaL_buffinitsize(L, &b, len);
    for (size_t i = 0; i < len; i++)
        lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    luaL_pushresultsize(&b, len);
    lua_getfield(L, 1, "headers");
    lua_insert(L, -2);
    lua_rawget(L, -2);
    return 1;
}

static int l_req_tostring(lua_State *L)
{
    req_box_t *box = luaL_checkudata(L, 1, REQ_MT);
    if (box->req)
        lua_pushfstring(L, "kr.Request (%s %s)", box->req->method_name, box->req->target);
    else
        lua_pushliteral(L, "kr.Request (finished)");
    return 1;
}

/* ---- res -------------------------------------------------------------------------------- */

static res_box_t *check_res(lua_State *L)
{
    res_box_t *box = luaL_checkudata(L, 1, RES_MT);
    if (box->req == NULL)
        luaL_error(L, "res used after its handler finished");
    return box;
}

static int check_status(lua_State *L, int idx)
{
    lua_Integer st = luaL_checkinteger(L, idx);
    luaL_argcheck(L, st >= 100 && st <= 599, idx, "status must be 100..599");
    return (int)st;
}

static int l_res_status(lua_State *L)
{
    res_box_t *box = check_res(L);
    box->status = check_status(L, 2);
    lua_settop(L, 1);
    return 1;
}

static int valid_token(const char *s, size_t n)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              strchr(tchar, c)))
            return 0;
    }
    return 1;
}

static int l_res_header(lua_State *L)
{
    res_box_t *box = check_res(L);
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    const char *value = luaL_tolstring(L, 3, &vlen);
    luaL_argcheck(L, valid_token(name, nlen), 2, "invalid header name");
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            luaL_argerror(L, 3, "header value contains CR, LF or NUL");
    if (box->sent)
        return luaL_error(L, "res:header: the response was already sent");
    if (box->nheaders >= MAX_RESPONSE_HEADERS)
        return luaL_error(L, "res:header: more than %d headers", MAX_RESPONSE_HEADERS);
    /* stack: res name value tostring(value) */
    /* headers live in the user value: { name1, value1, name2, value2, ... } */
    if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 8, 0);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 1);
    }
    /* Setting a header again replaces it (names compare case-insensitively). */
    int slot = box->nheaders;
    for (int i = 0; i < box->nheaders; i++) {
        lua_rawgeti(L, -1, 2 * i + 1);
        size_t olen;
        const char *old = lua_tolstring(L, -1, &olen);
        int same = olen == nlen && kr_strncasecmp(old, name, nlen) == 0;
        lua_pop(L, 1);
        if (same) {
            slot = i;
            break;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2 * slot + 1);
    lua_pushvalue(L, -2); /* the tostring'd value */
    lua_rawseti(L, -2, 2 * slot + 2);
    if (slot == box->nheaders)
        box->nheaders++;
    lua_settop(L, 1);
    return 1;
}

/* Sends the response: the script's headers plus content_type unless the script set one. The
 * body is taken. Raises when a response was already sent (after releasing the body). */
static int send_response(lua_State *L, res_box_t *box, int status, const char *content_type,
                         kr_buf_t *body)
{
    if (box->sent) {
        kr_buf_unref(body);
        return luaL_error(L, "the response was already sent");
    }
    kr_http_header_t hdrs[MAX_RESPONSE_HEADERS + 1];
    unsigned n = 0;
    int has_ct = 0;
    if (box->nheaders > 0 && lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
        for (int i = 0; i < box->nheaders; i++) {
            lua_rawgeti(L, -1, 2 * i + 1);
            lua_rawgeti(L, -2, 2 * i + 2);
            kr_http_header_t *h = &hdrs[n++];
            /* The strings stay referenced by the user value table until we return. */
            h->name = lua_tolstring(L, -2, &h->name_len);
            h->value = lua_tolstring(L, -1, &h->value_len);
            lua_pop(L, 2);
            if (h->name_len == 12 && kr_strncasecmp(h->name, "content-type", 12) == 0)
                has_ct = 1;
        }
    }
    if (content_type && !has_ct && body != NULL)
        hdrs[n++] = (kr_http_header_t){"Content-Type", content_type, 12, strlen(content_type)};
    box->sent = 1;
    kr_http_respond(box->req, status, hdrs, n, body);
    lua_settop(L, 1);
    return 1;
}

static int body_status(lua_State *L, res_box_t *box, int idx, int dflt)
{
    if (!lua_isnoneornil(L, idx))
        return check_status(L, idx);
    return box->status ? box->status : dflt;
}

static int respond_string(lua_State *L, const char *content_type)
{
    res_box_t *box = check_res(L);
    int status = body_status(L, box, 3, 200);
    lua_settop(L, 2);
    size_t len;
    const char *s = luaL_tolstring(L, 2, &len); /* stays on the stack while it is copied */
    return send_response(L, box, status, content_type, kr_buf_from(s, len));
}

static int l_res_text(lua_State *L)
{
    return respond_string(L, "text/plain; charset=utf-8");
}

static int l_res_html(lua_State *L)
{
    return respond_string(L, "text/html; charset=utf-8");
}

static int l_res_send(lua_State *L)
{
    res_box_t *box = check_res(L);
    size_t len = 0;
    const char *s = lua_isnoneornil(L, 2) ? "" : luaL_checklstring(L, 2, &len);
    int status = body_status(L, box, 3, 200);
    const char *ct = luaL_optstring(L, 4, "application/octet-stream");
    for (const char *p = ct; *p; p++)
        luaL_argcheck(L, *p != '\r' && *p != '\n', 4, "content type contains CR or LF");
    return send_response(L, box, status, ct, len ? kr_buf_from(s, len) : NULL);
}

static int l_res_json(lua_State *L)
{
    res_box_t *box = check_res(L);
    int status = body_status(L, box, 3, 200);
    if (box->sent)
        return luaL_error(L, "the response was already sent");
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    const char *err = NULL;
    if (kr_json_encode(L, 2, &sb, NULL, &err) != 0) {
        kr_sbuf_dispose(&sb); /* nothing C-owned is left when we raise */
        return luaL_error(L, "res:json: %s", err);
    }
    return send_response(L, box, status, "application/json", kr_sbuf_finish(&sb));
}

static int l_res_redirect(lua_State *L)
{
    res_box_t *box = check_res(L);
    size_t len;
    const char *url = luaL_checklstring(L, 2, &len);
    for (size_t i = 0; i < len; i++)
        luaL_argcheck(L, url[i] != '\r' && url[i] != '\n', 2, "URL contains CR or LF");
    int status = (int)luaL_optinteger(L, 3, 302);
    luaL_argcheck(L, status >= 300 && status <= 399, 3, "redirect status must be 3xx");
    lua_settop(L, 2);
    lua_pushcfunction(L, l_res_header);
    lua_pushvalue(L, 1);
    lua_pushliteral(L, "Location");
    lua_pushvalue(L, 2);
    lua_call(L, 3, 0);
    return send_response(L, box, status, NULL, NULL);
}

static int l_res_file(lua_State *L)
{
    res_box_t *box = check_res(L);
    const char *path = luaL_checkstring(L, 2);
    int status = body_status(L, box, 3, 200);
    if (box->sent)
        return luaL_error(L, "the response was already sent");
    /* Small files for now: read whole. Large downloads belong to kr.static, which streams. */
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        KR_LOG(KR_LOG_WARN, "http", "res:file: cannot open %s", path);
        return send_response(L, box, 404, "text/plain; charset=utf-8",
                             kr_buf_from("Not Found", 9));
    }
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16384);
    size_t n;
    do {
        char *dst = kr_sbuf_reserve(&sb, 16384);
        n = fread(dst, 1, 16384, f);
        kr_sbuf_commit(&sb, n);
    } while (n > 0);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        kr_sbuf_dispose(&sb);
        return luaL_error(L, "res:file: error reading %s", path);
    }
    return send_response(L, box, status, kr_static_content_type(path), kr_sbuf_finish(&sb));
}

static int l_res_tostring(lua_State *L)
{
    res_box_t *box = luaL_checkudata(L, 1, RES_MT);
    lua_pushfstring(L, "kr.Response (%s)", box->req ? (box->sent ? "sent" : "open") : "finished");
    return 1;
}

/* ---- dispatch --------------------------------------------------------------------------- */

static void route_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    route_call_t *call = ud;
    kr_vm_t *vm = f->vm;
    kr_app_t *app = vm->app;
    kr_http_req_t *req = call->req;
    app->active_requests--;
    char safe[512]; /* the target with its secrets redacted (access_token, ...) */
    if (status == KR_FIBER_ERROR) {
        KR_LOG(KR_LOG_ERROR, "route", "%s %s: handler failed: %s", req->method_name,
               kr_log_redact_target(req->target, safe, sizeof(safe)), f->error);
        if (!call->rs->sent)
            kr_http_respond_text(req, 500, "application/json",
                                 "{\"error\":\"Internal Server Error\"}", 33);
    } else if (status == KR_FIBER_OK && !call->rs->sent) {
        /* Nothing written: 204, or the status the handler set. */
        res_box_t *rs = call->rs;
        int st = rs->status ? rs->status : 204;
        rs->sent = 1;
        lua_State *L = f->co;
        lua_pushcfunction(L, l_res_send);
        lua_pushvalue(L, 2); /* res, kept at the bottom of the coroutine */
        rs->sent = 0;
        lua_pushnil(L);
        lua_pushinteger(L, st);
        if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
            KR_LOG(KR_LOG_ERROR, "route", "%s: %s",
                   kr_log_redact_target(req->target, safe, sizeof(safe)), lua_tostring(L, -1));
            lua_pop(L, 1);
            kr_http_respond_text(req, 500, "application/json",
                                 "{\"error\":\"Internal Server Error\"}", 33);
        }
    } else if (!call->rs->sent && req->conn != NULL) {
        kr_http_respond_text(req, 503, "text/plain; charset=utf-8", "Service Unavailable", 19);
    }
    call->rq->req = NULL;
    call->rs->req = NULL;
    kr_http_req_unref(req);
    kr_free(call);
}

static void respond_empty(kr_http_req_t *req, int status, const kr_http_header_t *h, unsigned n)
{
    kr_http_respond(req, status, h, n, NULL);
}

void kr__lua_handle_request(kr_http_req_t *req, void *ud)
{
    kr_app_t *app = ud;
    kr_vm_t *vm = app->vm;
    if (vm == NULL || app->stopping) {
        kr_http_respond_text(req, 503, "text/plain; charset=utf-8", "Service Unavailable", 19);
        return;
    }
    if (kr__lua_cors_request(vm, req))
        return; /* a CORS preflight, or a WebSocket upgrade from a refused origin */
    if (kr__lua_hub_http(app, req))
        return;
    route_call_t *call = kr_malloc(sizeof(*call));
    /* An unknown method is matched as GET to tell 404 from 405. */
    unsigned method = req->method ? req->method : KR_M_GET;
    kr_route_result_e r = kr_router_match(vm->router, method, req->path, req->path_len,
                                          &call->match);
    if (r == KR_ROUTE_FOUND && req->method == 0) {
        r = KR_ROUTE_METHOD_NOT_ALLOWED;
        kr_route_match_t probe;
        unsigned allow = 0;
        for (unsigned bit = 1; bit < KR_M_ALL; bit <<= 1)
            if (kr_router_match(vm->router, bit, req->path, req->path_len, &probe) ==
                KR_ROUTE_FOUND)
                allow |= bit;
        call->match.allow = allow;
    }
    if (r != KR_ROUTE_FOUND) {
        unsigned allow = call->match.allow;
        kr_free(call);
        if (r == KR_ROUTE_NOT_FOUND) {
            for (unsigned i = 0; i < vm->nstatics; i++)
                if (kr_static_serve(vm->statics[i], req))
                    return;
            respond_empty(req, 404, NULL, 0);
            return;
        }
        char allow_text[96];
        kr_router_allow_string(allow, allow_text, sizeof(allow_text));
        kr_http_header_t h = {"Allow", allow_text, 5, strlen(allow_text)};
        respond_empty(req, 405, &h, 1);
        return;
    }
    kr_fiber_t *f = kr_fiber_new(vm, call->match.pattern, route_done, call);
    if (f == NULL) {
        kr_free(call);
        char safe[512];
        KR_LOG(KR_LOG_WARN, "route", "%s %s: 503, too many fibers", req->method_name,
               kr_log_redact_target(req->target, safe, sizeof(safe)));
        kr_http_respond_text(req, 503, "text/plain; charset=utf-8", "Service Unavailable", 19);
        return;
    }
    call->req = req;
    kr_http_req_ref(req);
    app->active_requests++;
    /* stack of co: handler req res */
    lua_State *co = f->co;
    /* stack of co: req res handler req res. The first two stay at the bottom of the coroutine
     * for the fiber's whole life (no registry references); the handler gets the copies. */
    call->rq = lua_newuserdatauv(co, sizeof(req_box_t), 1);
    call->rq->req = req;
    call->rq->match = &call->match;
    luaL_setmetatable(co, REQ_MT);
    call->rs = lua_newuserdatauv(co, sizeof(res_box_t), 1);
    memset(call->rs, 0, sizeof(res_box_t));
    call->rs->req = req;
    luaL_setmetatable(co, RES_MT);
    /* the handler, or the auth runner and its arguments (kr_lua_auth.c) */
    int pre = kr__lua_auth_push_route(co, req, (int)(intptr_t)call->match.data);
    lua_pushvalue(co, 1);
    lua_pushvalue(co, 2);
    f->nargs = 2 + pre;
    kr_fiber_start(f);
}

/* ---- registration ----------------------------------------------------------------------- */

/* Parses "GET", "GET,POST" or {"GET","POST"} into a method mask; raises on unknown verbs. */
static unsigned check_verbs(lua_State *L, int idx)
{
    unsigned mask = 0;
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, idx);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, idx, i);
            size_t len;
            const char *v = luaL_checklstring(L, -1, &len);
            unsigned bit = kr_router_method_bit(v, len);
            if (bit == 0)
                luaL_error(L, "kr.map_route: unknown HTTP method '%s'", v);
            mask |= bit;
            lua_pop(L, 1);
        }
    } else {
        size_t len;
        const char *s = luaL_checklstring(L, idx, &len);
        const char *p = s, *end = s + len;
        while (p < end) {
            while (p < end && (*p == ',' || *p == ' '))
                p++;
            const char *q = p;
            while (q < end && *q != ',' && *q != ' ')
                q++;
            if (q > p) {
                unsigned bit = kr_router_method_bit(p, (size_t)(q - p));
                if (bit == 0)
                    luaL_error(L, "kr.map_route: unknown HTTP method '%s'",
                               lua_pushlstring(L, p, (size_t)(q - p)));
                mask |= bit;
            }
            p = q;
        }
    }
    if (mask == 0)
        luaL_argerror(L, idx, "no HTTP method given");
    return mask;
}

static int l_kr_map_route(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    if (!vm->loading)
        return luaL_error(L, "kr.map_route may only be called while the scripts load");
    unsigned mask = check_verbs(L, 1);
    const char *pattern = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    const kr_cors_t *cors = NULL;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 4)) {
            lua_pop(L, 1);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
            if (strcmp(k, "cors") == 0 || strcmp(k, "authorize") == 0)
                continue; /* read below */
            /* Refusing beats ignoring: a route the operator meant to protect must not be
             * served open. */
            return luaL_error(L, "kr.map_route: option '%s' is not supported yet", k);
        }
        cors = kr__lua_cors_option(L, 4, "kr.map_route");
    }
    lua_pushvalue(L, 3);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    const char *err = NULL;
    if (kr_router_add(vm->router, mask, pattern, (void *)(intptr_t)ref, &err) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "kr.map_route: %s: '%s'", err ? err : "invalid route", pattern);
    }
    kr__lua_cors_bind_route(L, vm, (void *)(intptr_t)ref, cors);
    if (!lua_isnoneornil(L, 4)) {
        lua_getfield(L, 4, "authorize");
        kr__lua_auth_set_route(L, ref, -1); /* raises on a bad value */
    }
    return 0;
}

static int l_kr_static(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    if (!vm->loading)
        return luaL_error(L, "kr.static may only be called while the scripts load");
    const char *prefix = luaL_checkstring(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    luaL_argcheck(L, prefix[0] == '/', 1, "URL prefix must start with '/'");
    kr_static_opts_t opts;
    kr_static_opts_default(&opts);
    if (lua_istable(L, 3)) {
        /* index = "name" | true (index.html) | false (none) */
        int t = lua_getfield(L, 3, "index");
        if (t == LUA_TSTRING)
            opts.index_file = lua_tostring(L, -1);
        else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
            opts.index_file = NULL;
        else if (t != LUA_TNIL && t != LUA_TBOOLEAN)
            return luaL_argerror(L, 3, "index must be a file name or a boolean");
        if (lua_getfield(L, 3, "max_age") != LUA_TNIL)
            opts.max_age_s = (int)luaL_checkinteger(L, -1);
    }
    int err = 0;
    kr_static_t *st = kr_static_new(prefix, dir, &opts, &err);
    if (st == NULL)
        return luaL_error(L, "kr.static: cannot serve '%s': %s", dir, kr_strerror(err));
    vm->statics = kr_realloc(vm->statics, sizeof(*vm->statics) * (vm->nstatics + 1));
    vm->statics[vm->nstatics++] = st;
    return 0;
}

static const luaL_Reg http_funcs[] = {
    {"map_route", l_kr_map_route},
    {"static", l_kr_static},
    {NULL, NULL},
};

static const luaL_Reg req_methods[] = {
    {"query_all", l_req_query_all}, {"cookie", l_req_cookie}, {"json", l_req_json},
    {"form", l_req_form},           {"header", l_req_header}, {NULL, NULL},
};

static const luaL_Reg res_methods[] = {
    {"status", l_res_status}, {"header", l_res_header},     {"text", l_res_text},
    {"json", l_res_json},     {"html", l_res_html},         {"file", l_res_file},
    {"send", l_res_send},     {"redirect", l_res_redirect}, {NULL, NULL},
};

void kr__lua_open_http(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, http_funcs, 1);
    /* req: methods live in the metatable itself, fields come from __index */
    luaL_newmetatable(L, REQ_MT);
    luaL_setfuncs(L, req_methods, 0);
    lua_pushcfunction(L, l_req_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_req_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, l_req_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, RES_MT);
    luaL_newlib(L, res_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_res_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
