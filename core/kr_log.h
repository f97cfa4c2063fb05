/* kr_log.h: the server log.
 *
 * Levels are Kestrun's (Verbose .. Fatal). KR_LOG checks the level before evaluating its
 * arguments. Lines go to stderr as text (`2026-05-01T12:00:00.123Z [Information] http: msg`)
 * or JSON (one object per line: timestamp, level, source, message, extra fields). A sink
 * callback lets an upper layer (kr.logger{ signalr = true }) see every line without this
 * module knowing about it. Process-wide: the log is the one piece of global state, since
 * every loop writes to the same stderr.
 */
#ifndef KR_LOG_H
#define KR_LOG_H

#include "kr_common.h"

typedef enum kr_log_level_e {
    KR_LOG_VERBOSE = 0,
    KR_LOG_DEBUG,
    KR_LOG_INFO,
    KR_LOG_WARN,
    KR_LOG_ERROR,
    KR_LOG_FATAL,
} kr_log_level_e;

typedef enum kr_log_format_e { KR_LOG_TEXT = 0, KR_LOG_JSON } kr_log_format_e;

extern kr_log_level_e kr_log_min_level;

void kr_log_set_level(kr_log_level_e level);
void kr_log_set_format(kr_log_format_e fmt);
/* Parses "Verbose".."Fatal" (case-insensitive); returns 0 or KR_EINVAL. */
int kr_log_level_parse(const char *name, kr_log_level_e *out);
const char *kr_log_level_name(kr_log_level_e level);

/* Writes one line. fields_json, when not NULL, is a JSON object's members without braces
 * (`"a":1,"b":"x"`) added to the JSON form and shown as `{...}` in the text form. */
void kr_log_write(kr_log_level_e level, const char *source, const char *fields_json,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define KR_LOG(level, source, ...)                                                                 \
    do {                                                                                           \
        if ((level) >= kr_log_min_level)                                                           \
            kr_log_write((level), (source), NULL, __VA_ARGS__);                                    \
    } while (0)

#endif
