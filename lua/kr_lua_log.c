/* kr_lua_log.c: kr.logger{ level, console, file, format, signalr } and the SignalR log sink
 * (Kestrun's missing Add-KrSinkSignalR).
 *
 * kr.logger runs while the scripts load: it checks the options and opens the file (an
 * unwritable path fails the load), and keeps the result in the generation's registry. When
 * the generation is adopted the configuration goes to kr_log; a generation without kr.logger
 * puts the command-line configuration back. Every generation opens the file anew, so a reload
 * (SIGHUP, --watch) reopens it: logrotate's rename-then-reload works.
 *
 * The SignalR sink: kr_log hands every line at or above the level to sink(), which copies it
 * to a bounded queue; a zero-delay timer broadcasts the queue on the next loop turn as
 * ReceiveLog({level, message, timestamp}) to every client of the current default hub, each
 * line encoded once per wire format by the hub's broadcast. Deferring matters: a line can be
 * logged from anywhere in C, in the middle of the hub's own bookkeeping (a broadcast that
 * closes a slow consumer), where sending to that hub again would not be safe. No feedback
 * loop: the flush runs with the sink held, so whatever the broadcast logs (a slow consumer,
 * a failed send, the dropped-lines warning) is written to the console and file only.
 */
#include "kr_lua_log.h"
#include "kr_log.h"
#include "kr_sr_json.h"
#include "kr_sr_msgpack.h"
#include "kr_json.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <unistd.h>

#define VM_UPVALUE(L) ((kr_vm_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define CFG_MT "kr.LoggerConfig"
#define MAX_PENDING 1024 /* lines waiting for the next flush; more are dropped (and counted) */

static const char config_key = 'g'; /* registry: this generation's logger_cfg_t */

typedef struct logger_cfg_s {
    kr_log_config_t log; /* log.fd: owned here until adopted */
    int signalr;
} logger_cfg_t;

/* ---- the SignalR sink ------------------------------------------------------------------- */

typedef struct pending_line_s {
    struct pending_line_s *next;
    kr_log_level_e level;
    int64_t ts_ms;
    size_t len;
    char msg[];
} pending_line_t;

/* One per process, as the log itself is. */
static struct {
    kr_app_t *app;
    uv_timer_t timer;
    int timer_ready;
    pending_line_t *head, **tail;
    unsigned n, dropped;
} br;

static void drop_pending(void)
{
    while (br.head) {
        pending_line_t *l = br.head;
        br.head = l->next;
        kr_free(l);
    }
    br.tail = &br.head;
    br.n = 0;
}

static int encode_receive_log(void *ud, int protocol, kr_sbuf_t *sb)
{
    const pending_line_t *l = ud;
    const char *level = kr_log_level_name(l->level);
    if (protocol == KR_SR_PROTO_MSGPACK) {
        size_t start = kr_sr_mp_write_invocation_head(sb, NULL, "ReceiveLog");
        kr_mp_put_array(sb, 1);
        kr_mp_put_map(sb, 3);
        kr_mp_put_str(sb, "level", 5);
        kr_mp_put_str(sb, level, strlen(level));
        kr_mp_put_str(sb, "message", 7);
        kr_mp_put_str(sb, l->msg, l->len);
        kr_mp_put_str(sb, "timestamp", 9);
        kr_mp_put_timestamp_ms(sb, l->ts_ms);
        kr_sr_mp_write_invocation_tail(sb, start);
        return 0;
    }
    char ts[KR_ISO_TS_LEN + 1];
    kr_time_iso(l->ts_ms, ts);
    kr_sr_json_write_invocation_head(sb, NULL, "ReceiveLog");
    kr_sbuf_printf(sb, "[{\"level\":\"%s\",\"message\":", level);
    kr_json_write_string(sb, l->msg, l->len);
    kr_sbuf_printf(sb, ",\"timestamp\":\"%s\"}]", ts);
    kr_sr_json_write_tail(sb);
    return 0;
}

static void on_flush(uv_timer_t *t)
{
    KR_UNUSED(t);
    pending_line_t *list = br.head;
    br.head = NULL;
    br.tail = &br.head;
    br.n = 0;
    kr_app_t *app = br.app;
    kr_hub_t *hub = app && app->vm && !app->stopping_hard ? app->vm->default_hub : NULL;
    kr_log_sink_hold();
    while (list) {
        pending_line_t *l = list;
        list = l->next;
        if (hub) {
            kr_sr_payload_t p = {encode_receive_log, l};
            (void)kr_hub_send_all(hub, &p, NULL); /* nowhere to report to without a loop */
        }
        kr_free(l);
    }
    if (br.dropped) {
        KR_LOG(KR_LOG_WARN, "logger", "%u log line(s) not sent to SignalR clients (more than %d "
               "waiting)", br.dropped, MAX_PENDING);
        br.dropped = 0;
    }
    kr_log_sink_release();
}

static void sink(const kr_log_line_t *line, void *ud)
{
    KR_UNUSED(ud);
    if (br.n >= MAX_PENDING) {
        br.dropped++;
        return;
    }
    /* The message clients see: a script's kr.log text as written, other lines prefixed with
     * their source as in the text format; kr.log fields follow as a JSON object. */
    int script = strcmp(line->source, "script") == 0;
    size_t srclen = script ? 0 : strlen(line->source) + 2;
    size_t flen = line->fields_json && *line->fields_json ? strlen(line->fields_json) + 3 : 0;
    size_t len = srclen + line->message_len + flen;
    pending_line_t *l = kr_malloc(sizeof(*l) + len + 1);
    l->next = NULL;
    l->level = line->level;
    l->ts_ms = line->ts_ms;
    l->len = len;
    char *p = l->msg;
    if (!script) {
        memcpy(p, line->source, srclen - 2);
        memcpy(p + srclen - 2, ": ", 2);
        p += srclen;
    }
    memcpy(p, line->message, line->message_len);
    p += line->message_len;
    if (flen) {
        *p++ = ' ';
        *p++ = '{';
        memcpy(p, line->fields_json, flen - 3);
        p += flen - 3;
        *p++ = '}';
    }
    *p = '\0';
    *br.tail = l;
    br.tail = &l->next;
    br.n++;
    if (br.timer_ready && !uv_is_active((uv_handle_t *)&br.timer))
        uv_timer_start(&br.timer, on_flush, 0, 0);
}

static void sink_start(kr_app_t *app)
{
    if (!br.timer_ready) {
        br.tail = &br.head;
        uv_timer_init(app->server->loop, &br.timer);
        uv_unref((uv_handle_t *)&br.timer); /* never what keeps the loop running */
        br.timer_ready = 1;
    }
    br.app = app;
    kr_log_set_sink(sink, NULL, kr_log_script_level());
}

static void sink_stop(void)
{
    kr_log_set_sink(NULL, NULL, KR_LOG_OFF);
    drop_pending();
    br.dropped = 0;
    if (br.timer_ready)
        uv_timer_stop(&br.timer);
}

void kr__lua_log_adopt(kr_app_t *app, kr_vm_t *vm)
{
    lua_State *L = vm->L;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &config_key);
    logger_cfg_t *cfg = luaL_testudata(L, -1, CFG_MT);
    if (cfg == NULL) {
        kr_log_reset();
        sink_stop();
    } else {
        kr_log_configure(&cfg->log);
        cfg->log.fd = -1; /* the log owns it now */
        if (cfg->signalr)
            sink_start(app);
        else
            sink_stop();
    }
    lua_pop(L, 1);
}

void kr__lua_log_free(kr_app_t *app)
{
    KR_UNUSED(app);
    sink_stop();
    br.app = NULL;
    if (br.timer_ready) {
        uv_close((uv_handle_t *)&br.timer, NULL);
        br.timer_ready = 0;
    }
}

/* ---- kr.logger -------------------------------------------------------------------------- */

static int l_cfg_gc(lua_State *L)
{
    logger_cfg_t *cfg = luaL_checkudata(L, 1, CFG_MT);
    if (cfg->log.fd >= 0)
        close(cfg->log.fd);
    cfg->log.fd = -1;
    return 0;
}

static const char *const logger_keys[] = {"level", "console", "file", "format", "signalr", NULL};

static int opt_boolean(lua_State *L, const char *key, int dflt)
{
    int t = lua_getfield(L, 1, key);
    int v = dflt;
    if (t == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "kr.logger: %s must be a boolean", key);
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, const char *key)
{
    int t = lua_getfield(L, 1, key);
    const char *v = NULL;
    if (t == LUA_TSTRING)
        v = lua_tostring(L, -1); /* kept alive by the table */
    else if (t != LUA_TNIL)
        luaL_error(L, "kr.logger: %s must be a string", key);
    lua_pop(L, 1);
    return v;
}

static int l_kr_logger(lua_State *L)
{
    kr_vm_t *vm = VM_UPVALUE(L);
    if (!vm->loading)
        return luaL_error(L, "kr.logger may only be called while the scripts load");
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int known = 0;
        for (int i = 0; k && logger_keys[i]; i++)
            known |= strcmp(k, logger_keys[i]) == 0;
        if (!known)
            return luaL_error(L, "kr.logger: unknown option '%s'", k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    logger_cfg_t c = {{KR_LOG_INFO, KR_LOG_TEXT, 0, 0, 1, -1}, 0};
    const char *level = opt_string(L, "level");
    if (level) {
        if (kr_log_level_parse(level, &c.log.level) != 0)
            return luaL_error(L, "kr.logger: level must be Verbose, Debug, Information, Warning, "
                                 "Error or Fatal, not '%s'", level);
        c.log.has_level = 1;
    }
    const char *format = opt_string(L, "format");
    if (format) {
        if (kr_log_format_parse(format, &c.log.format) != 0)
            return luaL_error(L, "kr.logger: format must be \"text\" or \"json\", not '%s'",
                              format);
        c.log.has_format = 1;
    }
    c.log.console = opt_boolean(L, "console", 1);
    c.signalr = opt_boolean(L, "signalr", 0);
    const char *file = opt_string(L, "file");
    if (file && *file == '\0')
        return luaL_error(L, "kr.logger: file must not be empty");
    /* The userdata exists before the file is opened: the fd never leaks on an error. */
    logger_cfg_t *cfg = lua_newuserdatauv(L, sizeof(*cfg), 0);
    *cfg = c;
    luaL_setmetatable(L, CFG_MT);
    if (file) {
        int fd = kr_log_open_file(file);
        if (fd < 0)
            return luaL_error(L, "kr.logger: cannot open log file '%s': %s", file,
                              uv_strerror(fd));
        cfg->log.fd = fd;
    }
    /* A second call in the same scripts replaces the first; its file closes at once. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &config_key);
    logger_cfg_t *old = luaL_testudata(L, -1, CFG_MT);
    if (old && old->log.fd >= 0) {
        close(old->log.fd);
        old->log.fd = -1;
    }
    lua_pop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &config_key);
    return 0;
}

void kr__lua_open_log(lua_State *L, kr_vm_t *vm)
{
    /* stack: kr */
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_kr_logger, 1);
    lua_setfield(L, -2, "logger");
    luaL_newmetatable(L, CFG_MT);
    lua_pushcfunction(L, l_cfg_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
