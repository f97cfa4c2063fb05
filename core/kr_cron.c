/* kr_cron.c: 6-field cron expressions and their next fire time (see kr_cron.h).
 *
 * Parsing turns each field into a bit set. The search walks forward from the given second in
 * local time: a wrong month jumps to the first of the next month, a wrong day to the next
 * midnight (both through mktime, so DST changes are the C library's business), a wrong hour,
 * minute or second forward on the epoch axis to the next candidate; every jump is followed by
 * a fresh localtime_r, so the clock is always read as it really shows.
 */
#include "kr_cron.h"
#include "kr_common.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct field_spec_s {
    const char *name;
    int min, max;
    const char *const *names; /* names[i] is value names_base + i */
    int names_base;
    int day; /* '?' allowed */
} field_spec_t;

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                          "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const dow_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

static const field_spec_t fields[6] = {
    {"second", 0, 59, NULL, 0, 0},       {"minute", 0, 59, NULL, 0, 0},
    {"hour", 0, 23, NULL, 0, 0},         {"day-of-month", 1, 31, NULL, 0, 1},
    {"month", 1, 12, month_names, 1, 0}, {"day-of-week", 0, 7, dow_names, 0, 1},
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KR_EINVAL;
}

/* Reads a number or a name at *p (up to end). Returns 0 and sets *v and advances *p. */
static int read_value(const field_spec_t *fs, const char **p, const char *end, int *v, char *err,
                      size_t errlen)
{
    const char *s = *p;
    const char *q = s;
    if (q < end && isdigit((unsigned char)*q)) {
        long n = 0;
        while (q < end && isdigit((unsigned char)*q)) {
            n = n * 10 + (*q - '0');
            if (n > 1000)
                n = 1000; /* reported as out of range below */
            q++;
        }
        if (n < fs->min || n > fs->max)
            return fail(err, errlen, "%s: %.*s is out of range %d-%d", fs->name, (int)(q - s), s,
                        fs->min, fs->max);
        *v = (int)n;
        *p = q;
        return 0;
    }
    while (q < end && isalpha((unsigned char)*q))
        q++;
    if (q == s) {
        if (s == end)
            return fail(err, errlen, "%s: a value is missing", fs->name);
        return fail(err, errlen, "%s: unexpected '%c'", fs->name, *s);
    }
    if (fs->names != NULL && q - s == 3) {
        for (int i = 0; fs->names[i]; i++) {
            if (kr_strncasecmp(s, fs->names[i], 3) == 0) {
                *v = fs->names_base + i;
                *p = q;
                return 0;
            }
        }
    }
    if (fs->names != NULL)
        return fail(err, errlen, "%s: unknown name '%.*s' (use %s..%s or numbers)", fs->name,
                    (int)(q - s), s, fs->names[0], fs->day ? "SAT" : "DEC");
    return fail(err, errlen, "%s: '%.*s' is not a number", fs->name, (int)(q - s), s);
}

/* Parses one comma-separated item s[0..len) into *bits. */
static int parse_item(const field_spec_t *fs, const char *s, size_t len, uint64_t *bits, char *err,
                      size_t errlen)
{
    const char *p = s, *end = s + len;
    int lo, hi, step = 1;
    if (len == 0)
        return fail(err, errlen, "%s: empty list item", fs->name);
    if (*p == '*') {
        lo = fs->min;
        hi = fs->max;
        p++;
    } else {
        if (read_value(fs, &p, end, &lo, err, errlen) != 0)
            return KR_EINVAL;
        hi = lo;
        if (p < end && *p == '-') {
            p++;
            if (read_value(fs, &p, end, &hi, err, errlen) != 0)
                return KR_EINVAL;
            if (hi < lo)
                return fail(err, errlen, "%s: range %d-%d goes backwards", fs->name, lo, hi);
        } else if (p < end && *p == '/') {
            hi = fs->max; /* a/n: from a to the end */
        }
    }
    if (p < end && *p == '/') {
        p++;
        const char *q = p;
        long n = 0;
        while (q < end && isdigit((unsigned char)*q)) {
            n = n * 10 + (*q - '0');
            if (n > 1000)
                n = 1000;
            q++;
        }
        if (q == p)
            return fail(err, errlen, "%s: a step needs a number after '/'", fs->name);
        if (n < 1)
            return fail(err, errlen, "%s: step must be at least 1", fs->name);
        step = (int)n;
        p = q;
    }
    if (p != end)
        return fail(err, errlen, "%s: unexpected '%c' in '%.*s'", fs->name, *p, (int)len, s);
    for (int v = lo; v <= hi; v += step)
        *bits |= 1ull << v;
    return 0;
}

static int parse_field(const field_spec_t *fs, const char *s, size_t len, uint64_t *bits, int *any,
                       char *err, size_t errlen)
{
    *bits = 0;
    *any = len > 0 && s[0] == '*';
    if (len == 1 && s[0] == '?') {
        if (!fs->day)
            return fail(err, errlen, "%s: '?' is only allowed in the day fields", fs->name);
        *any = 1;
        for (int v = fs->min; v <= fs->max; v++)
            *bits |= 1ull << v;
        return 0;
    }
    const char *p = s, *end = s + len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        if (parse_item(fs, p, (size_t)(stop - p), bits, err, errlen) != 0)
            return KR_EINVAL;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

static const int days_in_month[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

int kr_cron_parse(kr_cron_t *c, const char *expr, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (expr == NULL)
        return fail(err, errlen, "empty expression");
    const char *start[6];
    size_t len[6];
    int n = 0;
    const char *p = expr;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        const char *s = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
        if (n < 6) {
            start[n] = s;
            len[n] = (size_t)(p - s);
        }
        n++;
    }
    if (n == 0)
        return fail(err, errlen, "empty expression");
    if (n != 6)
        return fail(err, errlen,
                    "expected 6 fields (second minute hour day-of-month month day-of-week), got %d",
                    n);
    uint64_t bits[6];
    int any[6];
    for (int i = 0; i < 6; i++) {
        if (parse_field(&fields[i], start[i], len[i], &bits[i], &any[i], err, errlen) != 0)
            return KR_EINVAL;
    }
    c->sec = bits[0];
    c->min = bits[1];
    c->hour = (uint32_t)bits[2];
    c->dom = (uint32_t)bits[3];
    c->month = (uint16_t)bits[4];
    uint64_t dow = bits[5];
    if (dow & (1ull << 7))
        dow = (dow | 1u) & 0x7f; /* 7 is Sunday too */
    c->dow = (uint8_t)dow;
    c->dom_any = (uint8_t)any[3];
    c->dow_any = (uint8_t)any[5];
    /* When both day fields must match, day-of-month must be possible: some chosen day must
     * exist in some chosen month (Feb counts 29 days: leap years), or the expression never
     * fires. (Every date falls on every weekday over the years, so the weekday cannot make
     * it impossible.) */
    if (c->dom_any || c->dow_any) {
        int possible = 0;
        for (int m = 1; m <= 12 && !possible; m++) {
            if (!(c->month & (1u << m)))
                continue;
            for (int d = 1; d <= days_in_month[m] && !possible; d++)
                possible = (c->dom >> d) & 1;
        }
        if (!possible)
            return fail(err, errlen,
                        "day-of-month: the chosen days never occur in the chosen months");
    }
    return 0;
}

/* ---- the search ----------------------------------------------------------------------------- */

static int day_matches(const kr_cron_t *c, const struct tm *tm)
{
    int d = (int)((c->dom >> tm->tm_mday) & 1);
    int w = (c->dow >> tm->tm_wday) & 1;
    if (c->dom_any || c->dow_any)
        return d && w;
    return d || w; /* both restricted: either may match */
}

/* Local midnight of year/mon/mday (normalized by mktime), or -1. */
static int64_t local_midnight(int year, int mon, int mday)
{
    struct tm n;
    memset(&n, 0, sizeof(n));
    n.tm_year = year;
    n.tm_mon = mon;
    n.tm_mday = mday;
    n.tm_isdst = -1;
    return (int64_t)mktime(&n);
}

/* Lowest set bit of mask at or above from, or -1. */
static int next_bit(uint64_t mask, int from, int max)
{
    for (int i = from; i <= max; i++)
        if ((mask >> i) & 1)
            return i;
    return -1;
}

static int64_t forward(int64_t t, int64_t to)
{
    return to > t ? to : t + 1; /* always progress, whatever mktime made of a DST gap */
}

int64_t kr_cron_next(const kr_cron_t *c, int64_t after)
{
    int64_t t = after + 1;
    int64_t limit = after + 50LL * 366 * 86400;
    struct tm tm;
    while (t <= limit) {
        time_t tt = (time_t)t;
        if (localtime_r(&tt, &tm) == NULL)
            return -1;
        if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
            t = forward(t, local_midnight(tm.tm_year, tm.tm_mon + 1, 1));
            continue;
        }
        if (!day_matches(c, &tm)) {
            t = forward(t, local_midnight(tm.tm_year, tm.tm_mon, tm.tm_mday + 1));
            continue;
        }
        int into_hour = tm.tm_min * 60 + tm.tm_sec;
        if (!((c->hour >> tm.tm_hour) & 1)) {
            t = forward(t, t + 3600 - into_hour);
            continue;
        }
        if (!((c->min >> tm.tm_min) & 1)) {
            int m = next_bit(c->min, tm.tm_min + 1, 59);
            t = forward(t, m < 0 ? t + 3600 - into_hour : t + (m - tm.tm_min) * 60 - tm.tm_sec);
            continue;
        }
        if (tm.tm_sec > 59 || !((c->sec >> tm.tm_sec) & 1)) {
            int s = next_bit(c->sec, tm.tm_sec + 1, 59);
            t = forward(t, s < 0 ? t + 60 - tm.tm_sec : t + (s - tm.tm_sec));
            continue;
        }
        return t;
    }
    return -1;
}
