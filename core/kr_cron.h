/* kr_cron.h: 6-field cron expressions (seconds first) and their next fire time.
 *
 * Syntax (what kr.cron documents): `sec min hour day-of-month month day-of-week`, fields
 * separated by blanks. Each field is a comma list of items; an item is `*`, a value `a`, a range
 * `a-b`, or either of `*` / `a-b` followed by a step `/n`; `a/n` means `a-max/n`. Months take
 * JAN..DEC, weekdays SUN..SAT (case-insensitive); weekday 0 and 7 are both Sunday. `?` is `*`
 * in the two day fields. Day rule (Vixie cron): when both day-of-month and day-of-week are
 * restricted (neither starts with `*` or is `?`), a day matches if either matches; otherwise
 * both must.
 *
 * Time: expressions are matched against the local clock (TZ) as it reads second by second, so
 * a time the clock skips when DST starts does not fire that day and a time it shows twice
 * when DST ends fires twice. Pure computation: owns nothing, no Lua, no libuv.
 */
#ifndef KR_CRON_H
#define KR_CRON_H

#include <stddef.h>
#include <stdint.h>

typedef struct kr_cron_s {
    uint64_t sec;    /* bit n: second n (0..59) */
    uint64_t min;    /* bit n: minute n (0..59) */
    uint32_t hour;   /* bit n: hour n (0..23) */
    uint32_t dom;    /* bit n: day n of the month (1..31) */
    uint16_t month;  /* bit n: month n (1..12) */
    uint8_t dow;     /* bit n: weekday n (0 = Sunday .. 6) */
    uint8_t dom_any; /* the day-of-month field starts with '*' or is '?' */
    uint8_t dow_any; /* same for day-of-week */
} kr_cron_t;

#define KR_CRON_ERR_LEN 160

/* Parses expr into c. Returns 0, or KR_EINVAL with a message in err (at most errlen bytes,
 * e.g. "minute: 60 is out of range 0-59"). */
int kr_cron_parse(kr_cron_t *c, const char *expr, char *err, size_t errlen);

/* The first second strictly after `after` (Unix seconds) whose local time matches c, or -1
 * if there is none within the next 50 years (cannot happen for an expression that parsed). */
int64_t kr_cron_next(const kr_cron_t *c, int64_t after);

#endif
