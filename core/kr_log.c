/* kr_log.c: formats and writes log lines (see kr_log.h). */
#include "kr_log.h"
#include "kr_buf.h"
#include "kr_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

kr_log_level_e kr_log_min_level = KR_LOG_INFO;
static kr_log_format_e log_format = KR_LOG_TEXT;

static const char *const level_names[] = {"Verbose", "Debug", "Information",
                                          "Warning", "Error", "Fatal"};

void kr_log_set_level(kr_log_level_e level)
{
    kr_log_min_level = level;
}

void kr_log_set_format(kr_log_format_e fmt)
{
    log_format = fmt;
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

/* JSON string escaping for the json log format. */
static void put_json_string(kr_sbuf_t *sb, const char *s)
{
    kr_sbuf_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            kr_sbuf_puts(sb, "\\\"");
            break;
        case '\\':
            kr_sbuf_puts(sb, "\\\\");
            break;
        case '\n':
            kr_sbuf_puts(sb, "\\n");
            break;
        case '\r':
            kr_sbuf_puts(sb, "\\r");
            break;
        case '\t':
            kr_sbuf_puts(sb, "\\t");
            break;
        default:
            if (*p < 0x20)
                kr_sbuf_printf(sb, "\\u%04x", *p);
            else
                kr_sbuf_putc(sb, (char)*p);
        }
    }
    kr_sbuf_putc(sb, '"');
}

void kr_log_write(kr_log_level_e level, const char *source, const char *fields_json,
                  const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char ts[KR_ISO_TS_LEN + 1];
    kr_time_iso(kr_time_wall_ms(), ts);

    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    if (log_format == KR_LOG_JSON) {
        kr_sbuf_printf(&sb, "{\"timestamp\":\"%s\",\"level\":\"%s\",\"source\":", ts,
                       kr_log_level_name(level));
        put_json_string(&sb, source);
        kr_sbuf_puts(&sb, ",\"message\":");
        put_json_string(&sb, msg);
        if (fields_json && *fields_json) {
            kr_sbuf_putc(&sb, ',');
            kr_sbuf_puts(&sb, fields_json);
        }
        kr_sbuf_puts(&sb, "}\n");
    } else {
        kr_sbuf_printf(&sb, "%s [%s] %s: %s", ts, kr_log_level_name(level), source, msg);
        if (fields_json && *fields_json)
            kr_sbuf_printf(&sb, " {%s}", fields_json);
        kr_sbuf_putc(&sb, '\n');
    }
    /* One write per line so that lines from a crash or a child never interleave mid-line. */
    ssize_t w = write(STDERR_FILENO, kr_sbuf_data(&sb), kr_sbuf_len(&sb));
    (void)w; /* nowhere left to report a failing stderr */
    kr_sbuf_dispose(&sb);
}
