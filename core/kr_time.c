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
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* strftime bounds every field, so the fixed width is guaranteed (no truncation). */
    size_t n = strftime(out, KR_ISO_TS_LEN + 1, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned frac = (unsigned)(ms % 1000);
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

int kr_time_parse_http_date(const char *s, size_t len, time_t *t)
{
    char buf[KR_HTTP_DATE_LEN + 1];
    if (len != KR_HTTP_DATE_LEN)
        return KR_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char wd[4], mon[4];
    struct tm tm = {0};
    if (sscanf(buf, "%3s, %2d %3s %4d %2d:%2d:%2d GMT", wd, &tm.tm_mday, mon, &tm.tm_year,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 7)
        return KR_EINVAL;
    int m = -1;
    for (int i = 0; i < 12; i++)
        if (strcmp(mon, month_names[i]) == 0)
            m = i;
    if (m < 0)
        return KR_EINVAL;
    tm.tm_mon = m;
    tm.tm_year -= 1900;
    *t = timegm(&tm);
    return 0;
}
