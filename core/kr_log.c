/* kr_log.c: formats and writes log lines (see kr_log.h). */
#include "kr_log.h"
#include "kr_buf.h"
#include "kr_json.h"
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
        kr_json_write_string(&sb, source, strlen(source));
        kr_sbuf_puts(&sb, ",\"message\":");
        kr_json_write_string(&sb, msg, strlen(msg));
        if (fields_json && *fields_json) {
            /* Under their own key: a field named "message" cannot clash with ours. */
            kr_sbuf_puts(&sb, ",\"fields\":{");
            kr_sbuf_puts(&sb, fields_json);
            kr_sbuf_putc(&sb, '}');
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
