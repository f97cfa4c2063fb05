/* kr_log.c: formats and writes log lines (see kr_log.h). */
#include "kr_log.h"
#include "kr_buf.h"
#include "kr_json.h"
#include "kr_time.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

kr_log_level_e kr_log_min_level = KR_LOG_INFO;

static const char *const level_names[] = {"Verbose", "Debug", "Information",
                                          "Warning", "Error", "Fatal"};

/* The base configuration (command line) and what is in force now. */
static struct {
    kr_log_level_e base_level;
    kr_log_format_e base_format;
    int cli_level, cli_format; /* given explicitly on the command line */
    kr_log_level_e level;      /* console and file */
    kr_log_level_e script_level;
    kr_log_format_e format;
    int console;
    int fd;
    kr_log_sink_cb sink;
    void *sink_ud;
    kr_log_level_e sink_level;
    unsigned sink_held; /* > 0: inside the sink, or held by its owner */
} lg = {KR_LOG_INFO, KR_LOG_TEXT, 0, 0, KR_LOG_INFO, KR_LOG_INFO, KR_LOG_TEXT, 1, -1,
        NULL,        NULL,        KR_LOG_OFF, 0};

static void update_gate(void)
{
    kr_log_level_e gate = (lg.console || lg.fd >= 0) ? lg.level : KR_LOG_OFF;
    if (lg.sink != NULL && lg.sink_level < gate)
        gate = lg.sink_level;
    kr_log_min_level = gate;
}

void kr_log_set_level(kr_log_level_e level)
{
    lg.base_level = level;
    lg.cli_level = 1;
    lg.level = level;
    update_gate();
}

void kr_log_set_format(kr_log_format_e fmt)
{
    lg.base_format = fmt;
    lg.cli_format = 1;
    lg.format = fmt;
}

const char *kr_log_level_name(kr_log_level_e level)
{
    return level <= KR_LOG_FATAL ? level_names[level] : "Information";
}

int kr_log_level_parse(const char *name, kr_log_level_e *out)
{
    for (int i = 0; i <= KR_LOG_FATAL; i++) {
        if (kr_strncasecmp(name, level_names[i], strlen(level_names[i]) + 1) == 0) {
            *out = (kr_log_level_e)i;
            return 0;
        }
    }
    return KR_EINVAL;
}

int kr_log_format_parse(const char *name, kr_log_format_e *out)
{
    if (strcmp(name, "text") == 0)
        *out = KR_LOG_TEXT;
    else if (strcmp(name, "json") == 0)
        *out = KR_LOG_JSON;
    else
        return KR_EINVAL;
    return 0;
}

/* ---- configuration ---------------------------------------------------------------------- */

int kr_log_open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd >= 0 ? fd : -errno;
}

static void set_fd(int fd)
{
    if (lg.fd >= 0 && lg.fd != fd)
        close(lg.fd);
    lg.fd = fd;
}

void kr_log_configure(const kr_log_config_t *cfg)
{
    lg.script_level = cfg->has_level ? cfg->level : lg.base_level;
    lg.level = lg.cli_level || !cfg->has_level ? lg.base_level : cfg->level;
    lg.format = lg.cli_format || !cfg->has_format ? lg.base_format : cfg->format;
    lg.console = cfg->console;
    set_fd(cfg->fd);
    update_gate();
}

void kr_log_reset(void)
{
    lg.level = lg.script_level = lg.base_level;
    lg.format = lg.base_format;
    lg.console = 1;
    set_fd(-1);
    update_gate();
}

kr_log_level_e kr_log_script_level(void)
{
    return lg.script_level;
}

void kr_log_set_sink(kr_log_sink_cb cb, void *ud, kr_log_level_e min_level)
{
    lg.sink = cb;
    lg.sink_ud = ud;
    lg.sink_level = cb ? min_level : KR_LOG_OFF;
    update_gate();
}

void kr_log_sink_hold(void)
{
    lg.sink_held++;
}

void kr_log_sink_release(void)
{
    KR_ASSERT(lg.sink_held > 0);
    lg.sink_held--;
}

/* ---- writing ---------------------------------------------------------------------------- */

void kr_log_format_line(kr_sbuf_t *sb, kr_log_format_e fmt, int64_t ts_ms, kr_log_level_e level,
                        const char *source, const char *fields_json, const char *msg,
                        size_t msg_len)
{
    char ts[KR_ISO_TS_LEN + 1];
    kr_time_iso(ts_ms, ts);
    if (fmt == KR_LOG_JSON) {
        kr_sbuf_printf(sb, "{\"timestamp\":\"%s\",\"level\":\"%s\",\"source\":", ts,
                       kr_log_level_name(level));
        kr_json_write_string(sb, source, strlen(source));
        kr_sbuf_puts(sb, ",\"message\":");
        kr_json_write_string(sb, msg, msg_len);
        if (fields_json && *fields_json) {
            /* Under their own key: a field named "message" cannot clash with ours. */
            kr_sbuf_puts(sb, ",\"fields\":{");
            kr_sbuf_puts(sb, fields_json);
            kr_sbuf_putc(sb, '}');
        }
        kr_sbuf_puts(sb, "}\n");
    } else {
        kr_sbuf_printf(sb, "%s [%s] %s: %.*s", ts, kr_log_level_name(level), source, (int)msg_len,
                       msg);
        if (fields_json && *fields_json)
            kr_sbuf_printf(sb, " {%s}", fields_json);
        kr_sbuf_putc(sb, '\n');
    }
}

void kr_log_write(kr_log_level_e level, const char *source, const char *fields_json,
                  const char *fmt, ...)
{
    int to_out = level >= lg.level && (lg.console || lg.fd >= 0);
    int to_sink = lg.sink != NULL && level >= lg.sink_level && lg.sink_held == 0;
    if (!to_out && !to_sink)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
    int64_t now = (int64_t)kr_time_wall_ms();
    if (to_out) {
        kr_sbuf_t sb;
        kr_sbuf_init(&sb, 256);
        kr_log_format_line(&sb, lg.format, now, level, source, fields_json, msg, len);
        /* One write per line so that lines from a crash or a child never interleave
         * mid-line; a failing destination has nowhere left to report to. */
        if (lg.console) {
            ssize_t w = write(STDERR_FILENO, kr_sbuf_data(&sb), kr_sbuf_len(&sb));
            (void)w;
        }
        if (lg.fd >= 0) {
            ssize_t w = write(lg.fd, kr_sbuf_data(&sb), kr_sbuf_len(&sb));
            (void)w;
        }
        kr_sbuf_dispose(&sb);
    }
    if (to_sink) {
        kr_log_line_t line = {level, now, source, msg, len, fields_json};
        lg.sink_held++; /* whatever the sink logs is not given back to it */
        lg.sink(&line, lg.sink_ud);
        lg.sink_held--;
    }
}

/* ---- redaction ------------------------------------------------------------------------ */

static int sensitive_name(const char *k, size_t n)
{
    static const char *const exact[] = {"access_token", "id", NULL};
    static const char *const parts[] = {"token", "key", "secret", "password", "passwd", "auth",
                                        "sig", "code", NULL};
    for (int i = 0; exact[i]; i++)
        if (strlen(exact[i]) == n && kr_strncasecmp(k, exact[i], n) == 0)
            return 1;
    for (int i = 0; parts[i]; i++) {
        size_t pl = strlen(parts[i]);
        for (size_t j = 0; j + pl <= n; j++)
            if (kr_strncasecmp(k + j, parts[i], pl) == 0)
                return 1;
    }
    return 0;
}

const char *kr_log_redact_target(const char *target, char *buf, size_t buflen)
{
    if (buflen == 0)
        return buf;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 128);
    const char *q = target ? strchr(target, '?') : NULL;
    if (q == NULL) {
        kr_sbuf_puts(&sb, target ? target : "");
    } else {
        kr_sbuf_append(&sb, target, (size_t)(q + 1 - target));
        const char *p = q + 1;
        while (*p) {
            const char *amp = strchr(p, '&');
            const char *end = amp ? amp : p + strlen(p);
            const char *eq = memchr(p, '=', (size_t)(end - p));
            if (eq && sensitive_name(p, (size_t)(eq - p))) {
                kr_sbuf_append(&sb, p, (size_t)(eq + 1 - p));
                kr_sbuf_puts(&sb, "***");
            } else {
                kr_sbuf_append(&sb, p, (size_t)(end - p));
            }
            if (amp)
                kr_sbuf_putc(&sb, '&');
            p = amp ? amp + 1 : end;
        }
    }
    size_t n = kr_sbuf_len(&sb) < buflen - 1 ? kr_sbuf_len(&sb) : buflen - 1;
    memcpy(buf, kr_sbuf_data(&sb), n);
    buf[n] = '\0';
    kr_sbuf_dispose(&sb);
    return buf;
}
