/* kr_log.h: the server log.
 *
 * Levels are Kestrun's (Verbose .. Fatal). KR_LOG checks the level before evaluating its
 * arguments. Lines are text (`2026-05-01T12:00:00.123Z [Information] http: msg`) or JSON (one
 * object per line: timestamp, level, source, message, extra fields), written with one write()
 * per line to stderr (the console) and/or an append-only file.
 *
 * Two configurations: the base one (the command line: --log-level, --log-format; console on,
 * no file) and, on top of it, the scripts' one (kr.logger{}), which kr_log_configure installs
 * and kr_log_reset removes again. A level or format given explicitly on the command line wins
 * over the script's for the console and the file (the operator has the last word).
 *
 * A sink callback lets an upper layer (kr.logger{ signalr = true }) see every line at or
 * above its own level without this module knowing about it. The sink is never re-entered: a
 * line logged while the sink runs, or while it is held (kr_log_sink_hold, around the sink's
 * own broadcast), is written to the console and the file but not given to the sink.
 * Process-wide: the log is the one piece of global state, since every loop writes to the same
 * stderr.
 */
#ifndef KR_LOG_H
#define KR_LOG_H

#include "kr_buf.h"
#include "kr_common.h"

typedef enum kr_log_level_e {
    KR_LOG_VERBOSE = 0,
    KR_LOG_DEBUG,
    KR_LOG_INFO,
    KR_LOG_WARN,
    KR_LOG_ERROR,
    KR_LOG_FATAL,
} kr_log_level_e;

#define KR_LOG_OFF (KR_LOG_FATAL + 1) /* a threshold nothing reaches */

typedef enum kr_log_format_e { KR_LOG_TEXT = 0, KR_LOG_JSON } kr_log_format_e;

/* The lowest level any destination (console, file, sink) takes: KR_LOG's gate. */
extern kr_log_level_e kr_log_min_level;

/* The command line (--log-level, --log-format): sets the base configuration and marks the
 * value as explicit, so that it wins over a script's. */
void kr_log_set_level(kr_log_level_e level);
void kr_log_set_format(kr_log_format_e fmt);
/* Parses "Verbose".."Fatal" (case-insensitive); returns 0 or KR_EINVAL. */
int kr_log_level_parse(const char *name, kr_log_level_e *out);
const char *kr_log_level_name(kr_log_level_e level);
/* Parses "text" / "json" (exact); returns 0 or KR_EINVAL. */
int kr_log_format_parse(const char *name, kr_log_format_e *out);

/* A script's configuration (kr.logger). has_level / has_format: the script set them (else the
 * base configuration's apply). fd: a file opened with kr_log_open_file, or -1. */
typedef struct kr_log_config_s {
    kr_log_level_e level;
    kr_log_format_e format;
    int has_level, has_format;
    int console; /* write to stderr */
    int fd;
} kr_log_config_t;

/* Opens path for appending (created 0644 if missing, close-on-exec). Returns the fd, or a
 * negative error (uv style: uv_strerror works on it). */
int kr_log_open_file(const char *path);
/* Installs a script configuration, taking ownership of cfg->fd (the previous file, if any, is
 * closed). */
void kr_log_configure(const kr_log_config_t *cfg);
/* Back to the base (command-line) configuration: console on, no file. */
void kr_log_reset(void);
/* The level the script configuration asked for (or the base level): the sink's threshold. */
kr_log_level_e kr_log_script_level(void);

/* One line as the sink sees it. fields_json: see kr_log_write, or NULL. */
typedef struct kr_log_line_s {
    kr_log_level_e level;
    int64_t ts_ms; /* wall clock, ms since the epoch */
    const char *source;
    const char *message;
    size_t message_len;
    const char *fields_json;
} kr_log_line_t;

typedef void (*kr_log_sink_cb)(const kr_log_line_t *line, void *ud);

/* Installs (cb non-NULL) or removes the sink; it gets every line at or above min_level. */
void kr_log_set_sink(kr_log_sink_cb cb, void *ud, kr_log_level_e min_level);
/* While held (nested), no line reaches the sink. */
void kr_log_sink_hold(void);
void kr_log_sink_release(void);

/* Formats one line (with its newline) into sb, as the console and the file get it. */
void kr_log_format_line(kr_sbuf_t *sb, kr_log_format_e fmt, int64_t ts_ms, kr_log_level_e level,
                        const char *source, const char *fields_json, const char *msg,
                        size_t msg_len);

/* Writes one line. fields_json, when not NULL, is a JSON object's members without braces
 * (`"a":1,"b":"x"`) added to the JSON form and shown as `{...}` in the text form. */
void kr_log_write(kr_log_level_e level, const char *source, const char *fields_json,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A request target safe to log: the value of every query parameter that may carry a secret
 * (access_token, id (the connection token), and any name containing token, key, secret,
 * password, passwd, auth, sig or code, case-insensitively) becomes "***". Writes into buf
 * (truncated to buflen, always NUL-terminated) and returns buf. Every log line that shows a
 * URL goes through it (docs/security.md: what is never logged). */
const char *kr_log_redact_target(const char *target, char *buf, size_t buflen);

#define KR_LOG(level, source, ...)                                                                 \
    do {                                                                                           \
        if ((level) >= kr_log_min_level)                                                           \
            kr_log_write((level), (source), NULL, __VA_ARGS__);                                    \
    } while (0)

#endif
