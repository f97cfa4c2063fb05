/* kr_time.c: wall clock, ISO-8601 and HTTP dates (see kr_time.h). */
#include "kr_time.h"

#include <stdio.h>

int64_t kr_time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kr_time_iso(int64_t ms, char out[KR_ISO_TS_LEN + 1])
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000); /* floor */
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* strftime bounds every field, so the fixed width is guaranteed (no truncation). */
    size_t n = strftime(out, KR_ISO_TS_LEN + 1, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned frac = (unsigned)(((ms % 1000) + 1000) % 1000); /* before 1970 too */
    out[n] = '.';
    out[n + 1] = (char)('0' + frac / 100);
    out[n + 2] = (char)('0' + frac / 10 % 10);
    out[n + 3] = (char)('0' + frac % 10);
    out[n + 4] = 'Z';
    out[n + 5] = '\0';
}

static const char wday_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void kr_time_http_date(time_t t, char out[KR_HTTP_DATE_LEN + 1])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Day and month names are fixed English (not the locale's), the rest via strftime. */
    memcpy(out, wday_names[tm.tm_wday], 3);
    out[3] = ',';
    out[4] = ' ';
    strftime(out + 5, 3, "%d", &tm);
    out[7] = ' ';
    memcpy(out + 8, month_names[tm.tm_mon], 3);
    strftime(out + 11, KR_HTTP_DATE_LEN + 1 - 11, " %Y %H:%M:%S GMT", &tm);
}

static int two_digits(const char *s, int *out)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    *out = (s[0] - '0') * 10 + (s[1] - '0');
    return 0;
}

int kr_time_parse_http_date(const char *s, size_t len, time_t *t)
{
    /* IMF-fixdate only, checked field by field: "Sun, 06 Nov 1994 08:49:37 GMT". RFC 9110
     * says an invalid date is ignored, so anything off is an error, never a guess. */
    if (len != KR_HTTP_DATE_LEN || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
        s[16] != ' ' || s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
        return KR_EINVAL;
    int wday = -1, mon = -1;
    for (int i = 0; i < 7; i++)
        if (memcmp(s, wday_names[i], 3) == 0)
            wday = i;
    for (int i = 0; i < 12; i++)
        if (memcmp(s + 8, month_names[i], 3) == 0)
            mon = i;
    struct tm tm = {0};
    int y_hi, y_lo;
    if (wday < 0 || mon < 0 || two_digits(s + 5, &tm.tm_mday) || two_digits(s + 12, &y_hi) ||
        two_digits(s + 14, &y_lo) || two_digits(s + 17, &tm.tm_hour) ||
        two_digits(s + 20, &tm.tm_min) || two_digits(s + 23, &tm.tm_sec))
        return KR_EINVAL;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (tm.tm_mday < 1 || tm.tm_mday > mdays[mon] || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60)
        return KR_EINVAL;
    tm.tm_mon = mon;
    tm.tm_year = y_hi * 100 + y_lo - 1900;
    time_t v = timegm(&tm);
    struct tm back;
    gmtime_r(&v, &back);
    if (back.tm_mday != tm.tm_mday) /* 29 Feb of a common year */
        return KR_EINVAL;
    *t = v;
    return 0;
}
