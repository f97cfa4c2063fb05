/* kr_lua_auth.c: authentication and authorization from Lua (docs/lua-api.md section 7).
 *
 *   kr.auth.jwt{...}, kr.auth.api_key{...}, kr.auth.basic{...}  declare schemes, in order
 *   kr.policy(name, spec)                                         a named policy
 *   authorize = true | "Policy"  on kr.map_route, kr.hub and hub:on
 *
 * A request is authenticated by the first scheme, in declaration order, that finds
 * credentials in it (a bearer token, the api key header or query, Basic credentials); if that
 * scheme rejects them the request is anonymous (later schemes are not tried). A resource with
 * authorize answers 401 (with WWW-Authenticate) to an anonymous request, 403 when the policy
 * fails, and otherwise runs with the user: req.user on routes, ctx.user in hub methods.
 *
 * Split: C extracts the credentials from the request (cred table: bearer, access_token on hub
 * requests, Basic user/password, the api key headers and queries, secure), verifies JWTs
 * (core/kr_jwt.c) and compares keys in constant time; the flow (schemes in order, validators,
 * policies, challenges) is a small embedded Lua chunk, so validators and policy functions run
 * in the request's fiber and may yield. Per generation: the schemes, policies and authorize
 * options live in the generation's registry, a reload replaces them. A hub connection keeps
 * its user (name, claims as JSON) in the core, so it survives reloads.
 *
 * Nothing here logs a credential: failures are logged with the verifier's static texts only.
 */
#include "kr_lua_auth.h"

#include "kr_fiber.h"
#include "kr_jwt.h"
#include "kr_log.h"
#include "kr_lua_json.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define JWT_MT "kr.JwtScheme"
#define MAX_JWT_KEYS 8
#define MAX_AUDIENCES 16
#define MAX_LEEWAY_S 300
#define DENY_MARKER "\001kr.auth: unauthorized"

static const char auth_key = 'a'; /* registry: { schemes, policies, routes, hubs, A } */

typedef struct jwt_scheme_s {
    kr_jwt_key_t *keys[MAX_JWT_KEYS];
    unsigned nkeys;
    char *issuer;
    char *aud[MAX_AUDIENCES];
    unsigned naud;
    int64_t leeway_s;
    size_t max_bytes;
    int require_exp;
} jwt_scheme_t;

/* ---- the flow, in Lua ----------------------------------------------------------------- */

static const char flow_lua[] =
    "local H, schemes, policies = ...\n"
    "local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error\n"
    "local INSECURE = 'Basic authentication requires a TLS connection (kr.auth.basic: '..\n"
    "  'allow_insecure = true accepts it over plain HTTP)'\n"
    "local A = {}\n"
    "local function copy(t) local u = {} for k, v in pairs(t) do u[k] = v end return u end\n"
    /* a validator's answer: claims table, a name, true, or nil/false */
    "local function from_result(r, name, what)\n"
    "  if r == nil or r == false then return nil end\n"
    "  if r == true then return { name = name } end\n"
    "  if type(r) == 'string' then return { name = r } end\n"
    "  if type(r) ~= 'table' then\n"
    "    error(what .. ': validate must return a claims table, a name, true or nil', 0)\n"
    "  end\n"
    "  local u = copy(r)\n"
    "  if u.name == nil then u.name = name end\n"
    "  return u\n"
    "end\n"
    "local function jwt(s, cred)\n"
    "  local tok = cred.bearer or cred.access_token\n"
    "  if tok == nil then return false end\n"
    "  local claims, err = H.jwt_verify(s.key, tok)\n"
    "  if claims == nil then\n"
    /* a token for another jwt scheme (its algorithm or kid): the next one may take it */
    "    if err == 'algorithm not accepted' or err == 'no key matches kid' then\n"
    "      return 'skip', nil, err\n"
    "    end\n"
    "    return true, nil, err\n"
    "  end\n"
    "  local u = copy(claims)\n"
    "  local n = claims[s.user_claim]\n"
    "  if n ~= nil and type(n) ~= 'table' and type(n) ~= 'userdata' then u.name = tostring(n) end\n"
    "  local close_at = nil\n"
    "  if s.close_on_expiration and type(claims.exp) == 'number' then\n"
    "    close_at = claims.exp * 1000\n"
    "  end\n"
    "  return true, u, nil, close_at\n"
    "end\n"
    "local function api_key(s, cred)\n"
    "  local key = cred.headers[s.header]\n"
    "  if key == nil and s.query then key = cred.query[s.query] end\n"
    "  if key == nil then return false end\n"
    "  if s.validate then\n"
    "    local u = from_result(s.validate(key), nil, 'kr.auth.api_key')\n"
    "    return true, u, u == nil and 'invalid api key' or nil\n"
    "  end\n"
    "  local hit = nil\n"
    "  for k, v in pairs(s.keys) do\n" /* every key is compared: no early exit */
    "    local cand = type(k) == 'number' and v or k\n"
    "    if H.ct_equal(cand, key) and hit == nil then\n"
    "      if type(k) == 'number' then hit = {} else hit = from_result(v, nil, 'kr.auth.api_key') end\n"
    "    end\n"
    "  end\n"
    "  return true, hit, hit == nil and 'invalid api key' or nil\n"
    "end\n"
    "local function basic(s, cred)\n"
    "  if cred.basic_user == nil then return false end\n"
    "  if cred.basic_user == false then return true, nil, 'malformed Basic credentials' end\n"
    "  if not cred.secure and not s.allow_insecure then return true, nil, 'insecure' end\n"
    "  local u = from_result(s.validate(cred.basic_user, cred.basic_password), cred.basic_user,\n"
    "                        'kr.auth.basic')\n"
    "  return true, u, u == nil and 'invalid user name or password' or nil\n"
    "end\n"
    "local kinds = { jwt = jwt, api_key = api_key, basic = basic }\n"
    "local function challenge(s, err)\n"
    "  if s.kind == 'jwt' then\n"
    "    if err then return 'Bearer error=\"invalid_token\", error_description=\"' .. err .. '\"' end\n"
    "    return 'Bearer'\n"
    "  elseif s.kind == 'basic' then return 'Basic realm=\"' .. s.realm .. '\", charset=\"UTF-8\"'\n"
    "  end\n"
    "  return 'ApiKey'\n"
    "end\n"
    "local function challenges()\n"
    "  local t = {}\n"
    "  for _, s in ipairs(schemes) do t[#t + 1] = challenge(s) end\n"
    "  return table.concat(t, ', ')\n"
    "end\n"
    "local function has(v, want, split)\n"
    "  if type(v) == 'table' then\n"
    "    for _, x in ipairs(v) do if has(x, want, split) then return true end end\n"
    "    return false\n"
    "  end\n"
    "  if v == nil or type(v) == 'userdata' then return false end\n"
    "  v = tostring(v)\n"
    "  if v == want then return true end\n"
    "  if split then for w in v:gmatch('%S+') do if w == want then return true end end end\n"
    "  return false\n"
    "end\n"
    "local function any_of(v, allowed, split)\n"
    "  if type(allowed) ~= 'table' then return has(v, tostring(allowed), split) end\n"
    "  for _, a in ipairs(allowed) do if has(v, tostring(a), split) then return true end end\n"
    "  return false\n"
    "end\n"
    "local function allowed(p, user)\n"
    "  if type(p) == 'function' then return p(user) == true end\n"
    "  if p.role ~= nil and not (any_of(user.role, p.role) or any_of(user.roles, p.role)) then\n"
    "    return false\n"
    "  end\n"
    "  if p.claims ~= nil then\n"
    "    for c, vals in pairs(p.claims) do\n"
    "      if vals == true then\n"
    "        if user[c] == nil then return false end\n"
    "      elseif not any_of(user[c], vals, c == 'scope' or c == 'scp') then return false end\n"
    "    end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local function policy_allows(authorize, user)\n"
    "  if authorize == true then return true end\n"
    "  local p = policies[authorize]\n"
    "  if p == nil then error(\"kr.auth: unknown policy '\" .. tostring(authorize) .. \"'\", 0) end\n"
    "  return allowed(p, user)\n"
    "end\n"
    /* status (0, 401, 403), user or nil, challenge / message, close_at (ms) */
    "function A.check(cred, authorize, what)\n"
    "  local scheme, user, err, close_at, skipped\n"
    "  for _, s in ipairs(schemes) do\n"
    "    local found\n"
    "    found, user, err, close_at = kinds[s.kind](s, cred)\n"
    "    if found == 'skip' then skipped = skipped or { s, err }\n"
    "    elseif found then scheme = s break end\n"
    "  end\n"
    "  if scheme == nil and skipped then scheme, user, err = skipped[1], nil, skipped[2] end\n"
    "  if scheme and user == nil then\n"
    "    H.log(scheme.kind .. ' authentication failed for ' .. what .. ': ' .. err)\n"
    "  end\n"
    "  if not authorize then return 0, user, nil, close_at end\n"
    "  if user == nil then\n"
    "    if err == 'insecure' then return 403, nil, INSECURE end\n"
    "    return 401, nil, scheme and challenge(scheme, err) or challenges()\n"
    "  end\n"
    "  if policy_allows(authorize, user) then return 0, user, nil, close_at end\n"
    "  return 403, user, nil\n"
    "end\n"
    "function A.route(handler, authorize, cred, req, res)\n"
    "  local status, user, extra = A.check(cred, authorize, req.method .. ' ' .. req.path)\n"
    "  if user ~= nil then H.set_user(req, user) end\n"
    "  if status == 0 then return handler(req, res) end\n"
    "  if status == 401 and extra ~= '' then res:header('WWW-Authenticate', extra) end\n"
    "  if extra and status == 403 then return res:text(extra, 403) end\n"
    "  res:send(nil, status)\n"
    "end\n"
    "function A.method(policy, method, ctx, ...)\n"
    "  local user = ctx.user\n"
    "  if user == nil or not policy_allows(policy, user) then error(H.deny, 0) end\n"
    "  return method(ctx, ...)\n"
    "end\n"
    "return A\n";

/* ---- helpers for the chunk ------------------------------------------------------------ */

static int push_state(lua_State *L, const char *field)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &auth_key);
    int t = lua_getfield(L, -1, field);
    lua_remove(L, -2);
    return t;
}

static int l_jwt_verify(lua_State *L)
{
    jwt_scheme_t *s = luaL_checkudata(L, 1, JWT_MT);
    size_t len;
    const char *tok = luaL_checklstring(L, 2, &len);
    kr_jwt_opts_t o = {
        .keys = s->keys,
        .nkeys = s->nkeys,
        .issuer = s->issuer,
        .audiences = (const char *const *)s->aud,
        .naudiences = s->naud,
        .leeway_s = s->leeway_s,
        .max_token_bytes = s->max_bytes,
        .require_exp = s->require_exp,
    };
    cJSON *claims = NULL;
    const char *err = NULL;
    if (kr_jwt_verify(tok, len, &o, &claims, &err) != 0 || !cJSON_IsObject(claims)) {
        cJSON_Delete(claims);
        luaL_pushfail(L);
        lua_pushstring(L, err ? err : "bad claims");
        return 2;
    }
    char ebuf[96];
    int rc = kr_json_push_cjson(L, claims, NULL, ebuf, sizeof(ebuf));
    cJSON_Delete(claims);
    if (rc != 0) {
        luaL_pushfail(L);
        lua_pushliteral(L, "bad claims");
        return 2;
    }
    return 1;
}

static int l_ct_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = lua_tolstring(L, 1, &alen);
    const char *b = lua_tolstring(L, 2, &blen);
    lua_pushboolean(L, a && b && alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
    return 1;
}

static int l_log(lua_State *L)
{
    KR_LOG(KR_LOG_INFO, "auth", "%s", luaL_checkstring(L, 1));
    return 0;
}

static int jwt_gc(lua_State *L)
{
    jwt_scheme_t *s = luaL_checkudata(L, 1, JWT_MT);
    for (unsigned i = 0; i < s->nkeys; i++)
        kr_jwt_key_free(s->keys[i]);
    for (unsigned i = 0; i < s->naud; i++)
        kr_free(s->aud[i]);
    kr_free(s->issuer);
    memset(s, 0, sizeof(*s));
    return 0;
}

/* ---- credentials from a request ------------------------------------------------------- */

/* Pushes the percent-decoded value of query parameter key (exact name), or returns 0. */
static int push_query_param(lua_State *L, const char *query, const char *key)
{
    const char *val;
    size_t len;
    if (!kr_http_query_find(query, key, 0, &val, &len))
        return 0;
    kr__lua_push_form_decoded(L, val, len);
    return 1;
}

/* Basic credentials: base64(user ":" password). Sets basic_user/basic_password, or
 * basic_user = false when malformed. */
static void set_basic(lua_State *L, int cred, const char *b64, size_t len)
{
    while (len > 0 && (b64[len - 1] == ' ' || b64[len - 1] == '\t'))
        len--;
    size_t n = len;
    while (n > 0 && len - n < 2 && b64[n - 1] == '=')
        n--;
    char *tmp = kr_malloc(n + 1);
    unsigned char *out = kr_malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        tmp[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i] == '-' || b64[i] == '_' ? '!' : b64[i];
    long dl = n > 0 && (n + (len - n)) % 4 == 0 ? kr_base64url_decode(tmp, n, out) : -1;
    const unsigned char *colon = dl > 0 ? memchr(out, ':', (size_t)dl) : NULL;
    if (colon == NULL) {
        lua_pushboolean(L, 0);
        lua_setfield(L, cred, "basic_user");
    } else {
        lua_pushlstring(L, (const char *)out, (size_t)(colon - out));
        lua_setfield(L, cred, "basic_user");
        lua_pushlstring(L, (const char *)colon + 1, (size_t)(out + dl - colon - 1));
        lua_setfield(L, cred, "basic_password");
    }
    OPENSSL_cleanse(out, n + 1);
    kr_free(out);
    kr_free(tmp);
}

static void set_authorization(lua_State *L, int cred, const kr_http_req_t *req)
{
    size_t len;
    const char *v = kr_http_req_header(req, "authorization", &len);
    if (v == NULL)
        return;
    if (len > 7 && kr_strncasecmp(v, "Bearer ", 7) == 0) {
        const char *t = v + 7;
        size_t tl = len - 7;
        while (tl > 0 && *t == ' ')
            t++, tl--;
        while (tl > 0 && (t[tl - 1] == ' ' || t[tl - 1] == '\t'))
            tl--;
        if (tl > 0) {
            lua_pushlstring(L, t, tl);
            lua_setfield(L, cred, "bearer");
        }
    } else if (len > 6 && kr_strncasecmp(v, "Basic ", 6) == 0) {
        set_basic(L, cred, v + 6, len - 6);
    }
}

/* The api key headers and query parameters the schemes name. */
static void set_api_keys(lua_State *L, int cred, const kr_http_req_t *req)
{
    lua_newtable(L);
    int headers = lua_gettop(L);
    lua_newtable(L);
    int query = lua_gettop(L);
    push_state(L, "schemes");
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_getfield(L, -1, "header") == LUA_TSTRING) {
            const char *h = kr_http_req_header(req, lua_tostring(L, -1), NULL);
            if (h != NULL) {
                lua_pushstring(L, h);
                lua_setfield(L, headers, lua_tostring(L, -2));
            }
        }
        lua_pop(L, 1);
        if (lua_getfield(L, -1, "query") == LUA_TSTRING &&
            push_query_param(L, req->query, lua_tostring(L, -1)))
            lua_setfield(L, query, lua_tostring(L, -2));
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    lua_setfield(L, cred, "query");
    lua_setfield(L, cred, "headers");
}

/* Pushes the cred table of req. ?access_token= is read on hub requests only (browsers cannot
 * set headers on WebSocket and EventSource requests; elsewhere a token in a URL is refused). */
static void push_cred(lua_State *L, const kr_http_req_t *req, int is_hub)
{
    lua_createtable(L, 0, 6);
    int cred = lua_gettop(L);
    set_authorization(L, cred, req);
    if (is_hub && lua_getfield(L, cred, "bearer") == LUA_TNIL) {
        if (push_query_param(L, req->query, "access_token"))
            lua_setfield(L, cred, "access_token");
    }
    if (is_hub)
        lua_pop(L, 1);
    lua_pushboolean(L, req->conn != NULL && req->conn->secure);
    lua_setfield(L, cred, "secure");
    set_api_keys(L, cred, req);
}

/* ---- routes ----------------------------------------------------------------------------- */

void kr__lua_auth_check_option(lua_State *L, int idx, const char *fname)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNIL || (t == LUA_TBOOLEAN && lua_toboolean(L, idx)))
        return;
    if (t == LUA_TSTRING && lua_rawlen(L, idx) > 0)
        return;
    luaL_error(L, "%s: authorize must be true or a policy name", fname);
}

void kr__lua_auth_set_route(lua_State *L, int ref, int idx)
{
    idx = lua_absindex(L, idx);
    kr__lua_auth_check_option(L, idx, "kr.map_route");
    if (lua_isnil(L, idx))
        return;
    push_state(L, "routes");
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, ref);
    lua_pop(L, 1);
}

static int schemes_count(lua_State *L)
{
    push_state(L, "schemes");
    int n = (int)lua_rawlen(L, -1);
    lua_pop(L, 1);
    return n;
}

int kr__lua_auth_push_route(lua_State *co, kr_http_req_t *req, int ref)
{
    push_state(co, "routes");
    lua_rawgeti(co, -1, ref);
    lua_remove(co, -2);
    if (lua_isnil(co, -1) && schemes_count(co) == 0) {
        lua_pop(co, 1);
        lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
        return 0;
    }
    /* stack: authorize */
    push_state(co, "A");
    lua_getfield(co, -1, "route");
    lua_remove(co, -2);
    lua_insert(co, -2);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
    lua_insert(co, -2);
    push_cred(co, req, 0);
    return 3; /* runner handler authorize cred (runner is the function) */
}

/* ---- hubs ------------------------------------------------------------------------------- */

void kr__lua_auth_set_hub(lua_State *L, kr_hub_t *hub, int idx)
{
    idx = lua_absindex(L, idx);
    push_state(L, "hubs");
    lua_pushvalue(L, idx);
    lua_rawsetp(L, -2, hub);
    lua_pop(L, 1);
}

typedef struct hub_auth_s {
    kr_hub_t *hub;
    kr_http_req_t *req;
} hub_auth_t;

static void respond(kr_http_req_t *req, int status, const char *challenge, const char *text)
{
    kr_http_header_t h = {"WWW-Authenticate", challenge, 16, challenge ? strlen(challenge) : 0};
    if (text != NULL)
        kr_http_respond_text(req, status, "text/plain; charset=utf-8", text, strlen(text));
    else
        kr_http_respond(req, status, &h, challenge && *challenge ? 1 : 0, NULL);
}

/* The hub request's check ended: results on co are status, user, extra, close_at. */
static void hub_auth_finish(hub_auth_t *ha, lua_State *co)
{
    kr_http_req_t *req = ha->req;
    int status = (int)lua_tointeger(co, 1);
    if (status == 401 || status == 403) {
        respond(req, status, status == 401 ? lua_tostring(co, 3) : NULL,
                status == 403 ? lua_tostring(co, 3) : NULL);
        return;
    }
    if (!lua_istable(co, 2)) {
        kr_hub_http_continue(ha->hub, req, NULL);
        return;
    }
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    const char *err = NULL;
    if (kr_json_encode(co, 2, &sb, NULL, &err) != 0) {
        KR_LOG(KR_LOG_ERROR, "auth", "%s: the user's claims cannot be encoded: %s",
               kr_hub_path(ha->hub), err);
        kr_sbuf_dispose(&sb);
        respond(req, 500, NULL, "Internal Server Error");
        return;
    }
    kr_sbuf_putc(&sb, '\0');
    lua_getfield(co, 2, "name");
    kr_hub_principal_t p = {
        .name = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL,
        .claims_json = kr_sbuf_data(&sb),
        .close_at_ms = lua_isnumber(co, 4) ? (int64_t)lua_tonumber(co, 4) : 0,
    };
    kr_hub_http_continue(ha->hub, req, &p);
    lua_pop(co, 1);
    kr_sbuf_dispose(&sb);
}

static void hub_auth_done(kr_fiber_t *f, kr_fiber_status_e status, void *ud)
{
    hub_auth_t *ha = ud;
    kr_http_req_t *req = ha->req;
    if (req->conn != NULL && !req->head_sent) {
        if (status == KR_FIBER_OK) {
            hub_auth_finish(ha, f->co);
        } else {
            if (status == KR_FIBER_ERROR)
                KR_LOG(KR_LOG_ERROR, "auth", "%s: authorization failed: %s",
                       kr_hub_path(ha->hub), f->error);
            respond(req, status == KR_FIBER_ERROR ? 500 : 503, NULL,
                    status == KR_FIBER_ERROR ? "Internal Server Error" : "Service Unavailable");
        }
    }
    kr_http_req_unref(req);
    kr_free(ha);
}

void kr__lua_auth_hub(kr_hub_t *hub, kr_http_req_t *req, void *ud)
{
    kr_app_t *app = ud;
    kr_vm_t *vm = app->vm;
    if (vm == NULL) {
        respond(req, 503, NULL, "Service Unavailable");
        return;
    }
    lua_State *L = vm->L;
    push_state(L, "hubs");
    lua_rawgetp(L, -1, hub);
    lua_remove(L, -2);
    if (lua_isnil(L, -1) && schemes_count(L) == 0) {
        lua_pop(L, 1);
        kr_hub_http_continue(hub, req, NULL); /* nothing to check: no fiber */
        return;
    }
    hub_auth_t *ha = kr_calloc(1, sizeof(*ha));
    kr_fiber_t *f = kr_fiber_new(vm, "hub authorization", hub_auth_done, ha);
    if (f == NULL) {
        lua_pop(L, 1);
        kr_free(ha);
        KR_LOG(KR_LOG_WARN, "auth", "%s: 503, too many fibers", kr_hub_path(hub));
        respond(req, 503, NULL, "Service Unavailable");
        return;
    }
    ha->hub = hub;
    ha->req = req;
    kr_http_req_ref(req);
    lua_State *co = f->co;
    push_state(co, "A");
    lua_getfield(co, -1, "check");
    lua_remove(co, -2);
    push_cred(co, req, 1);
    lua_xmove(L, co, 1); /* authorize */
    lua_pushfstring(co, "%s %s", req->method_name, kr_hub_path(hub));
    f->nargs = 3;
    kr_fiber_start(f);
}

void kr__lua_auth_push_method_runner(lua_State *L)
{
    push_state(L, "A");
    lua_getfield(L, -1, "method");
    lua_remove(L, -2);
}

int kr__lua_auth_is_denial(const char *error)
{
    return error != NULL && strncmp(error, DENY_MARKER, sizeof(DENY_MARKER) - 1) == 0;
}

/* ---- kr.auth.* and kr.policy ------------------------------------------------------------ */

static void check_loading(lua_State *L, const char *fname)
{
    if (!VM_UPVALUE(L)->loading)
        luaL_error(L, "%s may only be called while the scripts load", fname);
}

/* Raises on option names not in known (a typo must not silently weaken a check). */
static void check_known(lua_State *L, int t, const char *fname, const char *const *known)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int ok = 0;
        for (int i = 0; k && known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok)
            luaL_error(L, "%s: unknown option '%s'", fname, k ? k : luaL_typename(L, -1));
    }
}

static const char *opt_string(lua_State *L, int t, const char *key, const char *fname)
{
    int ty = lua_getfield(L, t, key);
    lua_pop(L, 1); /* the table keeps the string alive */
    if (ty == LUA_TNIL)
        return NULL;
    if (ty != LUA_TSTRING)
        luaL_error(L, "%s: %s must be a string", fname, key);
    lua_getfield(L, t, key);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);
    return s;
}

/* Appends the scheme table at the top to the schemes list (and pops it). */
static void add_scheme(lua_State *L)
{
    push_state(L, "schemes");
    lua_insert(L, -2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

static char *read_file(lua_State *L, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        luaL_error(L, "kr.auth.jwt: cannot open public_key_file '%s'", path);
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 4096);
    size_t n;
    do {
        char *dst = kr_sbuf_reserve(&sb, 4096);
        n = fread(dst, 1, 4096, f);
        kr_sbuf_commit(&sb, n);
    } while (n > 0 && kr_sbuf_len(&sb) < 1024 * 1024);
    fclose(f);
    *len = kr_sbuf_len(&sb);
    char *s = kr_malloc(*len + 1);
    memcpy(s, kr_sbuf_data(&sb), *len);
    s[*len] = '\0';
    kr_sbuf_dispose(&sb);
    return s;
}

/* One key per algorithm, all from the same secret or public key. */
static void jwt_keys(lua_State *L, int t, jwt_scheme_t *s, const char *secret, size_t slen,
                     const char *pem, size_t plen)
{
    int ty = lua_getfield(L, t, "algorithms");
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        lua_createtable(L, 1, 0);
        lua_pushstring(L, secret ? "HS256" : "RS256");
        lua_rawseti(L, -2, 1);
    } else if (ty != LUA_TTABLE) {
        luaL_error(L, "kr.auth.jwt: algorithms must be a list such as {\"HS256\"}");
    }
    lua_Integer n = luaL_len(L, -1);
    if (n < 1 || n > MAX_JWT_KEYS)
        luaL_error(L, "kr.auth.jwt: algorithms must list 1 to %d names", MAX_JWT_KEYS);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *alg = lua_tostring(L, -1);
        if (alg == NULL || !kr_jwt_alg_supported(alg))
            luaL_error(L, "kr.auth.jwt: unsupported algorithm '%s'", alg ? alg : "?");
        int is_hs = alg[0] == 'H';
        if (is_hs != (secret != NULL))
            luaL_error(L, "kr.auth.jwt: %s needs %s", alg,
                       is_hs ? "a secret" : "public_key or public_key_file");
        char err[160];
        int rc = is_hs ? kr_jwt_key_hmac(&s->keys[s->nkeys], alg, secret, slen, err, sizeof(err))
                       : kr_jwt_key_pem(&s->keys[s->nkeys], alg, pem, plen, err, sizeof(err));
        if (rc != 0)
            luaL_error(L, "kr.auth.jwt: %s", err);
        s->nkeys++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void jwt_audiences(lua_State *L, int t, jwt_scheme_t *s)
{
    int ty = lua_getfield(L, t, "audience");
    if (ty == LUA_TSTRING) {
        s->aud[s->naud++] = kr_strdup(lua_tostring(L, -1));
    } else if (ty == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, -1);
        if (n > MAX_AUDIENCES)
            luaL_error(L, "kr.auth.jwt: at most %d audiences", MAX_AUDIENCES);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "kr.auth.jwt: audience must be a string or a list of strings");
            s->aud[s->naud++] = kr_strdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (ty != LUA_TNIL) {
        luaL_error(L, "kr.auth.jwt: audience must be a string or a list of strings");
    }
    lua_pop(L, 1);
}

static int64_t opt_int(lua_State *L, int t, const char *key, int64_t dflt, int64_t lo,
                       int64_t hi, const char *fname)
{
    int64_t v = dflt;
    if (lua_getfield(L, t, key) != LUA_TNIL) {
        int isnum;
        lua_Integer i = lua_tointegerx(L, -1, &isnum);
        if (!isnum || i < lo || i > hi)
            luaL_error(L, "%s: %s must be an integer in %d..%d", fname, key, (int)lo, (int)hi);
        v = i;
    }
    lua_pop(L, 1);
    return v;
}

static int opt_flag(lua_State *L, int t, const char *key, int dflt)
{
    int v = dflt;
    if (lua_getfield(L, t, key) != LUA_TNIL)
        v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_auth_jwt(lua_State *L)
{
    static const char *const known[] = {
        "secret", "public_key", "public_key_file", "algorithms", "issuer", "audience",
        "leeway_s", "user_claim", "require_exp", "close_on_expiration", "max_token_bytes",
        NULL};
    check_loading(L, "kr.auth.jwt");
    luaL_checktype(L, 1, LUA_TTABLE);
    check_known(L, 1, "kr.auth.jwt", known);
    size_t slen = 0, plen = 0;
    const char *secret = opt_string(L, 1, "secret", "kr.auth.jwt");
    const char *pem = opt_string(L, 1, "public_key", "kr.auth.jwt");
    const char *file = opt_string(L, 1, "public_key_file", "kr.auth.jwt");
    if ((secret != NULL) + (pem != NULL) + (file != NULL) != 1)
        return luaL_error(L, "kr.auth.jwt: give exactly one of secret, public_key, "
                             "public_key_file");
    lua_createtable(L, 0, 6); /* the scheme: stays on the stack (index 2) */
    jwt_scheme_t *s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    luaL_setmetatable(L, JWT_MT);
    lua_setfield(L, 2, "key");
    if (secret)
        slen = strlen(secret);
    if (pem)
        plen = strlen(pem);
    char *fpem = file ? read_file(L, file, &plen) : NULL;
    if (fpem) {
        /* kept as a Lua string so a raise below leaks nothing */
        lua_pushlstring(L, fpem, plen);
        kr_free(fpem);
        pem = lua_tostring(L, -1);
    }
    jwt_keys(L, 1, s, secret, slen, pem, plen);
    if (fpem)
        lua_pop(L, 1);
    const char *iss = opt_string(L, 1, "issuer", "kr.auth.jwt");
    s->issuer = iss ? kr_strdup(iss) : NULL;
    jwt_audiences(L, 1, s);
    s->leeway_s = opt_int(L, 1, "leeway_s", 60, 0, MAX_LEEWAY_S, "kr.auth.jwt");
    s->max_bytes = (size_t)opt_int(L, 1, "max_token_bytes", KR_JWT_DEFAULT_MAX_BYTES, 256,
                                   65536, "kr.auth.jwt");
    s->require_exp = opt_flag(L, 1, "require_exp", 1);
    const char *claim = opt_string(L, 1, "user_claim", "kr.auth.jwt");
    lua_pushstring(L, claim ? claim : "sub");
    lua_setfield(L, 2, "user_claim");
    lua_pushboolean(L, opt_flag(L, 1, "close_on_expiration", 0));
    lua_setfield(L, 2, "close_on_expiration");
    lua_pushliteral(L, "jwt");
    lua_setfield(L, 2, "kind");
    if (s->issuer == NULL || s->naud == 0)
        KR_LOG(KR_LOG_WARN, "auth", "kr.auth.jwt: no %s configured: tokens from any %s are "
               "accepted (RFC 8725 3.8/3.9)", s->issuer ? "audience" : "issuer",
               s->issuer ? "audience" : "issuer");
    lua_settop(L, 2);
    add_scheme(L);
    return 0;
}

/* keys = { "k1", "k2" } (anonymous claims) or { k1 = claims | name, ... } */
static void check_static_keys(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int key_is_index = lua_type(L, -2) == LUA_TNUMBER;
        int kt = key_is_index ? lua_type(L, -1) : lua_type(L, -2);
        int vt = lua_type(L, -1);
        if (kt != LUA_TSTRING ||
            (!key_is_index && vt != LUA_TTABLE && vt != LUA_TSTRING && vt != LUA_TBOOLEAN))
            luaL_error(L, "kr.auth.api_key: keys must be a list of strings or a map of key to "
                          "claims table or name");
        lua_pop(L, 1);
        n++;
    }
    if (n == 0)
        luaL_error(L, "kr.auth.api_key: keys is empty");
}

static int l_auth_api_key(lua_State *L)
{
    static const char *const known[] = {"header", "query", "keys", "validate", NULL};
    check_loading(L, "kr.auth.api_key");
    luaL_checktype(L, 1, LUA_TTABLE);
    check_known(L, 1, "kr.auth.api_key", known);
    const char *header = opt_string(L, 1, "header", "kr.auth.api_key");
    const char *query = opt_string(L, 1, "query", "kr.auth.api_key");
    int has_keys = lua_getfield(L, 1, "keys") != LUA_TNIL;
    int has_fn = lua_getfield(L, 1, "validate") != LUA_TNIL;
    if (has_keys == has_fn)
        return luaL_error(L, "kr.auth.api_key: give exactly one of keys, validate");
    if (has_fn)
        luaL_checktype(L, -1, LUA_TFUNCTION);
    else
        check_static_keys(L, -2);
    lua_createtable(L, 0, 5);
    lua_insert(L, -3);
    lua_setfield(L, -3, "validate");
    lua_setfield(L, -2, "keys");
    luaL_Buffer b;
    const char *h = header ? header : "X-Api-Key";
    size_t hl = strlen(h);
    char *lower = luaL_buffinitsize(L, &b, hl);
    for (size_t i = 0; i < hl; i++)
        lower[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] + 32 : h[i]);
    luaL_pushresultsize(&b, hl);
    lua_setfield(L, -2, "header");
    if (query) {
        lua_pushstring(L, query);
        lua_setfield(L, -2, "query");
    }
    lua_pushliteral(L, "api_key");
    lua_setfield(L, -2, "kind");
    add_scheme(L);
    return 0;
}

static int l_auth_basic(lua_State *L)
{
    static const char *const known[] = {"validate", "allow_insecure", "realm", NULL};
    check_loading(L, "kr.auth.basic");
    luaL_checktype(L, 1, LUA_TTABLE);
    check_known(L, 1, "kr.auth.basic", known);
    const char *realm = opt_string(L, 1, "realm", "kr.auth.basic");
    if (realm && strpbrk(realm, "\"\\\r\n"))
        return luaL_error(L, "kr.auth.basic: realm must not contain quotes, backslashes or "
                             "line breaks");
    lua_createtable(L, 0, 5);
    if (lua_getfield(L, 1, "validate") != LUA_TFUNCTION)
        return luaL_error(L, "kr.auth.basic: validate must be a function(user, password)");
    lua_setfield(L, -2, "validate");
    lua_pushboolean(L, opt_flag(L, 1, "allow_insecure", 0));
    lua_setfield(L, -2, "allow_insecure");
    lua_pushstring(L, realm ? realm : "kestrun");
    lua_setfield(L, -2, "realm");
    lua_pushliteral(L, "basic");
    lua_setfield(L, -2, "kind");
    add_scheme(L);
    return 0;
}

/* kr.policy(name, { role = ..., claims = { c = v | {v...} | true } } | function(user)) */
static int l_policy(lua_State *L)
{
    check_loading(L, "kr.policy");
    size_t len;
    luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0, 1, "policy name must not be empty");
    int t = lua_type(L, 2);
    if (t == LUA_TTABLE) {
        static const char *const known[] = {"role", "claims", NULL};
        check_known(L, 2, "kr.policy", known);
        int rt = lua_getfield(L, 2, "role");
        int ct = lua_getfield(L, 2, "claims");
        if (rt == LUA_TNIL && ct == LUA_TNIL)
            return luaL_error(L, "kr.policy: a policy needs role or claims");
        if (rt != LUA_TNIL && rt != LUA_TSTRING && rt != LUA_TTABLE)
            return luaL_error(L, "kr.policy: role must be a string or a list");
        if (ct != LUA_TNIL && ct != LUA_TTABLE)
            return luaL_error(L, "kr.policy: claims must be a table { claim = value(s) }");
        lua_pop(L, 2);
    } else if (t != LUA_TFUNCTION) {
        return luaL_argerror(L, 2, "a policy is a table { role =, claims = } or a function");
    }
    push_state(L, "policies");
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) != LUA_TNIL)
        return luaL_error(L, "kr.policy: '%s' is defined twice", lua_tostring(L, 1));
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawset(L, -3);
    return 0;
}

/* ---- registration ----------------------------------------------------------------------- */

static const luaL_Reg auth_funcs[] = {
    {"jwt", l_auth_jwt},
    {"api_key", l_auth_api_key},
    {"basic", l_auth_basic},
    {NULL, NULL},
};

static void load_flow(lua_State *L)
{
    /* stack: state */
    if (luaL_loadbuffer(L, flow_lua, sizeof(flow_lua) - 1, "=kr.auth") != LUA_OK)
        lua_error(L); /* a bug in the chunk: fails every VM at once, loudly */
    lua_createtable(L, 0, 6);
    lua_pushcfunction(L, l_jwt_verify);
    lua_setfield(L, -2, "jwt_verify");
    lua_pushcfunction(L, l_ct_equal);
    lua_setfield(L, -2, "ct_equal");
    lua_pushcfunction(L, l_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, kr__lua_req_set_user);
    lua_setfield(L, -2, "set_user");
    lua_pushliteral(L, DENY_MARKER);
    lua_setfield(L, -2, "deny");
    lua_getfield(L, -3, "schemes");
    lua_getfield(L, -4, "policies");
    lua_call(L, 3, 1);
    lua_setfield(L, -2, "A");
}

void kr__lua_open_auth(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    luaL_newmetatable(L, JWT_MT);
    lua_pushcfunction(L, jwt_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "kr.auth");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_createtable(L, 0, 5);
    static const char *const lists[] = {"schemes", "policies", "routes", "hubs"};
    for (int i = 0; i < 4; i++) {
        lua_newtable(L);
        lua_setfield(L, -2, lists[i]);
    }
    load_flow(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &auth_key);
    lua_createtable(L, 0, 3);
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, auth_funcs, 1);
    lua_setfield(L, -2, "auth");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_policy, 1);
    lua_setfield(L, -2, "policy");
}
