/* test_cron.c: unit tests for core/kr_cron.c: parsing 6-field cron expressions (every field
 * form, names, the day-field rule, error texts) and the next fire time, in UTC (TZ=UTC set by
 * the tests, so no DST) and across DST changes with a POSIX TZ rule (no tzdata needed).
 */
#include "kr_common.h"
#include "kr_cron.h"

#include "kr_test.h"

#include <time.h>

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

/* "YYYY-MM-DD HH:MM:SS" in local time -> Unix seconds (isdst as mktime decides). */
static int64_t at(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    ASSERT_EQ(sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec),
              6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm);
}

static const char *fmt(int64_t t)
{
    static char buf[8][40];
    static int i;
    char *out = buf[i++ % 8];
    if (t < 0)
        return "never";
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(out, 40, "%Y-%m-%d %H:%M:%S %a", &tm);
    return out;
}

static kr_cron_t parse_ok(const char *expr)
{
    kr_cron_t c;
    char err[KR_CRON_ERR_LEN];
    int rc = kr_cron_parse(&c, expr, err, sizeof(err));
    if (rc != 0)
        KR_TEST_FAIL("'%s' did not parse: %s", expr, err);
    return c;
}

static const char *next_of(const char *expr, const char *from)
{
    kr_cron_t c = parse_ok(expr);
    return fmt(kr_cron_next(&c, at(from)));
}

#define ASSERT_NEXT(expr, from, want) ASSERT_STR_EQ(next_of((expr), (from)), (want))

static void assert_bad(const char *expr, const char *want)
{
    kr_cron_t c;
    char err[KR_CRON_ERR_LEN];
    int rc = kr_cron_parse(&c, expr, err, sizeof(err));
    if (rc != KR_EINVAL)
        KR_TEST_FAIL("'%s' parsed (rc %d), expected error \"%s\"", expr, rc, want);
    if (strcmp(err, want) != 0)
        KR_TEST_FAIL("'%s': error \"%s\", expected \"%s\"", expr, err, want);
}

TEST(every_second_and_steps)
{
    set_tz("UTC");
    ASSERT_NEXT("* * * * * *", "2024-01-01 00:00:00", "2024-01-01 00:00:01 Mon");
    ASSERT_NEXT("* * * * * *", "2024-12-31 23:59:59", "2025-01-01 00:00:00 Wed");
    ASSERT_NEXT("*/30 * * * * *", "2024-01-01 00:00:00", "2024-01-01 00:00:30 Mon");
    ASSERT_NEXT("*/30 * * * * *", "2024-01-01 00:00:29", "2024-01-01 00:00:30 Mon");
    ASSERT_NEXT("*/30 * * * * *", "2024-01-01 00:00:30", "2024-01-01 00:01:00 Mon");
    ASSERT_NEXT("*/2 * * * * *", "2024-01-01 00:00:01", "2024-01-01 00:00:02 Mon");
    ASSERT_NEXT("*/2 * * * * *", "2024-01-01 00:00:02", "2024-01-01 00:00:04 Mon");
    ASSERT_NEXT("0 * * * * *", "2024-01-01 12:34:56", "2024-01-01 12:35:00 Mon");
    ASSERT_NEXT("0 * * * * *", "2024-01-01 12:35:00", "2024-01-01 12:36:00 Mon");
    /* a/n runs from a to the end of the field */
    ASSERT_NEXT("10/20 * * * * *", "2024-01-01 00:00:00", "2024-01-01 00:00:10 Mon");
    ASSERT_NEXT("10/20 * * * * *", "2024-01-01 00:00:30", "2024-01-01 00:00:50 Mon");
    ASSERT_NEXT("10/20 * * * * *", "2024-01-01 00:00:50", "2024-01-01 00:01:10 Mon");
    /* a-b/n */
    ASSERT_NEXT("0 0 8-18/4 * * *", "2024-01-01 08:00:00", "2024-01-01 12:00:00 Mon");
    ASSERT_NEXT("0 0 8-18/4 * * *", "2024-01-01 16:00:00", "2024-01-02 08:00:00 Tue");
    /* a step larger than the field: only the start */
    ASSERT_NEXT("*/90 * * * * *", "2024-01-01 00:00:00", "2024-01-01 00:01:00 Mon");
    ASSERT_NEXT("0 0 0 1 */3 *", "2024-01-01 00:00:00", "2024-04-01 00:00:00 Mon");
    ASSERT_NEXT("0 0 0 1 */3 *", "2024-10-01 00:00:00", "2025-01-01 00:00:00 Wed");
}

TEST(lists_ranges_and_names)
{
    set_tz("UTC");
    ASSERT_NEXT("0 15,45 * * * *", "2024-01-01 10:15:00", "2024-01-01 10:45:00 Mon");
    ASSERT_NEXT("0 15,45 * * * *", "2024-01-01 10:45:00", "2024-01-01 11:15:00 Mon");
    ASSERT_NEXT("0 0,30 9-10,14 * * *", "2024-01-01 10:30:00", "2024-01-01 14:00:00 Mon");
    ASSERT_NEXT("0 0,30 9-10,14 * * *", "2024-01-01 14:30:00", "2024-01-02 09:00:00 Tue");
    ASSERT_NEXT("5,1-3 0 0 * * *", "2024-01-01 00:00:03", "2024-01-01 00:00:05 Mon");
    /* 2024-01-05 is a Friday: the next weekday 09:00 is Monday the 8th */
    ASSERT_NEXT("0 0 9 * * MON-FRI", "2024-01-05 09:00:00", "2024-01-08 09:00:00 Mon");
    ASSERT_NEXT("0 0 9 * * MON-FRI", "2024-01-05 08:59:59", "2024-01-05 09:00:00 Fri");
    ASSERT_NEXT("0 0 9 * * 1-5", "2024-01-06 12:00:00", "2024-01-08 09:00:00 Mon");
    ASSERT_NEXT("0 0 9 * * mon-fri", "2024-01-06 12:00:00", "2024-01-08 09:00:00 Mon");
    /* 0 and 7 are both Sunday; names are case-insensitive */
    ASSERT_NEXT("0 0 0 * * 0", "2024-01-01 00:00:00", "2024-01-07 00:00:00 Sun");
    ASSERT_NEXT("0 0 0 * * 7", "2024-01-01 00:00:00", "2024-01-07 00:00:00 Sun");
    ASSERT_NEXT("0 0 0 * * Sun", "2024-01-01 00:00:00", "2024-01-07 00:00:00 Sun");
    ASSERT_NEXT("0 0 0 * * FRI-7", "2024-01-01 00:00:00", "2024-01-05 00:00:00 Fri");
    ASSERT_NEXT("0 0 0 * * 5-7", "2024-01-06 00:00:00", "2024-01-07 00:00:00 Sun");
    ASSERT_NEXT("0 0 0 * * 5-7", "2024-01-07 00:00:00", "2024-01-12 00:00:00 Fri");
    ASSERT_NEXT("0 0 0 1 jan,Jul *", "2024-01-01 00:00:00", "2024-07-01 00:00:00 Mon");
    ASSERT_NEXT("0 0 0 1 JUL-AUG *", "2024-07-01 00:00:00", "2024-08-01 00:00:00 Thu");
    ASSERT_NEXT("0 0 0 1 JAN *", "2024-06-15 10:00:00", "2025-01-01 00:00:00 Wed");
    /* '?' is '*' in the day fields (Quartz/Cronos spelling) */
    ASSERT_NEXT("0 0 12 ? * WED", "2024-01-01 00:00:00", "2024-01-03 12:00:00 Wed");
    ASSERT_NEXT("0 0 12 15 * ?", "2024-01-01 00:00:00", "2024-01-15 12:00:00 Mon");
    /* blanks: tabs, runs of spaces, leading and trailing */
    ASSERT_NEXT("  0\t0  12 * *   *  ", "2024-01-01 00:00:00", "2024-01-01 12:00:00 Mon");
}

TEST(day_of_month_and_day_of_week_rule)
{
    set_tz("UTC");
    /* both restricted: either matches (Friday or the 13th) */
    ASSERT_NEXT("0 0 0 13 * FRI", "2024-01-01 00:00:00", "2024-01-05 00:00:00 Fri");
    ASSERT_NEXT("0 0 0 13 * FRI", "2024-01-05 00:00:00", "2024-01-12 00:00:00 Fri");
    ASSERT_NEXT("0 0 0 13 * FRI", "2024-01-12 00:00:00", "2024-01-13 00:00:00 Sat");
    ASSERT_NEXT("0 0 0 13 * FRI", "2024-01-13 00:00:00", "2024-01-19 00:00:00 Fri");
    /* a day field starting with '*' is unrestricted for the rule: both must match */
    ASSERT_NEXT("0 0 0 */2 * MON", "2024-01-01 00:00:00", "2024-01-15 00:00:00 Mon");
    ASSERT_NEXT("0 0 0 1-7 * */7", "2024-01-01 00:00:00", "2024-01-07 00:00:00 Sun");
    /* one restricted: it alone decides */
    ASSERT_NEXT("0 0 0 * * SUN", "2024-01-01 00:00:00", "2024-01-07 00:00:00 Sun");
    ASSERT_NEXT("0 0 0 20 * *", "2024-01-01 00:00:00", "2024-01-20 00:00:00 Sat");
    ASSERT_NEXT("0 0 0 20 * ?", "2024-01-01 00:00:00", "2024-01-20 00:00:00 Sat");
    /* 30 February never exists, but with a weekday given the OR rule keeps it valid */
    ASSERT_NEXT("0 0 0 30 2 MON", "2024-01-01 00:00:00", "2024-02-05 00:00:00 Mon");
}

TEST(month_ends_and_leap_years)
{
    set_tz("UTC");
    ASSERT_NEXT("0 0 0 31 * *", "2024-01-31 00:00:00", "2024-03-31 00:00:00 Sun");
    ASSERT_NEXT("0 0 0 31 * *", "2024-03-31 00:00:00", "2024-05-31 00:00:00 Fri");
    ASSERT_NEXT("0 0 0 31 * *", "2024-07-31 00:00:00", "2024-08-31 00:00:00 Sat");
    ASSERT_NEXT("0 0 0 30 * *", "2024-01-30 00:00:00", "2024-03-30 00:00:00 Sat");
    ASSERT_NEXT("59 59 23 31 12 *", "2024-12-31 23:59:59", "2025-12-31 23:59:59 Wed");
    ASSERT_NEXT("59 59 23 31 12 *", "2024-12-31 23:59:58", "2024-12-31 23:59:59 Tue");
    ASSERT_NEXT("0 0 12 * 2 *", "2023-02-28 12:00:00", "2024-02-01 12:00:00 Thu");
    ASSERT_NEXT("0 0 12 * 2 *", "2024-02-28 12:00:00", "2024-02-29 12:00:00 Thu");
    ASSERT_NEXT("0 0 12 * 2 *", "2024-02-29 12:00:00", "2025-02-01 12:00:00 Sat");
    /* 29 February: leap years only; 2100 is not one, 2000 was */
    ASSERT_NEXT("0 0 0 29 2 *", "2023-01-01 00:00:00", "2024-02-29 00:00:00 Thu");
    ASSERT_NEXT("0 0 0 29 2 *", "2024-02-29 00:00:00", "2028-02-29 00:00:00 Tue");
    ASSERT_NEXT("0 0 0 29 2 *", "2096-03-01 00:00:00", "2104-02-29 00:00:00 Fri");
    ASSERT_NEXT("0 0 0 29 2 *", "1999-03-01 00:00:00", "2000-02-29 00:00:00 Tue");
    ASSERT_NEXT("0 0 0 28-31 2 *", "2023-02-28 00:00:00", "2024-02-28 00:00:00 Wed");
    ASSERT_NEXT("0 0 0 28-31 2 *", "2024-02-28 00:00:00", "2024-02-29 00:00:00 Thu");
    ASSERT_NEXT("0 0 0 28-31 2 *", "2024-02-29 00:00:00", "2025-02-28 00:00:00 Fri");
    /* the last day of a month through day 31 or 30 lists */
    ASSERT_NEXT("0 0 0 30,31 4 *", "2024-04-01 00:00:00", "2024-04-30 00:00:00 Tue");
}

TEST(next_is_strictly_after)
{
    set_tz("UTC");
    kr_cron_t c = parse_ok("*/5 * * * * *");
    int64_t t = at("2024-05-05 05:05:05");
    for (int i = 0; i < 100; i++) {
        int64_t n = kr_cron_next(&c, t);
        ASSERT(n > t);
        ASSERT_EQ(n % 5, 0);
        ASSERT(n - t <= 5);
        t = n;
    }
    /* every fire of a daily expression over a year is exactly one day apart (UTC) */
    c = parse_ok("0 30 6 * * *");
    t = at("2024-01-01 00:00:00");
    int64_t prev = kr_cron_next(&c, t);
    for (int i = 0; i < 366; i++) {
        int64_t n = kr_cron_next(&c, prev);
        ASSERT_EQ(n - prev, 86400);
        prev = n;
    }
    ASSERT_STR_EQ(fmt(prev), "2025-01-01 06:30:00 Wed");
}

/* Central European rules: DST starts on the last Sunday of March at 02:00 (clock goes to
 * 03:00) and ends on the last Sunday of October at 03:00 (back to 02:00). */
#define CET_RULE "CET-1CEST,M3.5.0,M10.5.0/3"

TEST(dst_spring_forward)
{
    set_tz(CET_RULE);
    kr_cron_t c = parse_ok("0 30 2 * * *");
    int64_t t = at("2024-03-30 03:00:00");
    int64_t n = kr_cron_next(&c, t);
    ASSERT_STR_EQ(fmt(n), "2024-04-01 02:30:00 Mon");
    /* hourly across the change: 01:00 then 03:00, one real hour apart */
    c = parse_ok("0 0 * * * *");
    t = at("2024-03-31 01:00:00");
    n = kr_cron_next(&c, t);
    ASSERT_STR_EQ(fmt(n), "2024-03-31 03:00:00 Sun");
    ASSERT_EQ(n - t, 3600);
    /* every second keeps going through the change */
    c = parse_ok("* * * * * *");
    t = at("2024-03-31 01:59:59");
    n = kr_cron_next(&c, t);
    ASSERT_EQ(n - t, 1);
    ASSERT_STR_EQ(fmt(n), "2024-03-31 03:00:00 Sun");
}

TEST(dst_fall_back)
{
    set_tz(CET_RULE);
    /* 02:30 shows twice on 2024-10-27: it fires twice, an hour apart */
    kr_cron_t c = parse_ok("0 30 2 * * *");
    int64_t first = kr_cron_next(&c, at("2024-10-27 00:00:00"));
    ASSERT_STR_EQ(fmt(first), "2024-10-27 02:30:00 Sun");
    int64_t second = kr_cron_next(&c, first);
    ASSERT_STR_EQ(fmt(second), "2024-10-27 02:30:00 Sun");
    ASSERT_EQ(second - first, 3600);
    int64_t third = kr_cron_next(&c, second);
    ASSERT_STR_EQ(fmt(third), "2024-10-28 02:30:00 Mon");
    /* hourly: 25 fires in that day, each one real hour apart */
    c = parse_ok("0 0 * * * *");
    int64_t t = kr_cron_next(&c, at("2024-10-26 23:00:00"));
    ASSERT_STR_EQ(fmt(t), "2024-10-27 00:00:00 Sun");
    int count = 1;
    for (;;) {
        int64_t n = kr_cron_next(&c, t);
        ASSERT_EQ(n - t, 3600);
        t = n;
        if (strcmp(fmt(t), "2024-10-28 00:00:00 Mon") == 0)
            break;
        count++;
        ASSERT(count < 30);
    }
    ASSERT_EQ(count, 25);
}

TEST(bad_expressions)
{
    assert_bad("", "empty expression");
    assert_bad("   ", "empty expression");
    assert_bad("* * * * *",
               "expected 6 fields (second minute hour day-of-month month day-of-week), got 5");
    assert_bad("* * * * * * *",
               "expected 6 fields (second minute hour day-of-month month day-of-week), got 7");
    assert_bad("@daily",
               "expected 6 fields (second minute hour day-of-month month day-of-week), got 1");
    assert_bad("60 * * * * *", "second: 60 is out of range 0-59");
    assert_bad("* 60 * * * *", "minute: 60 is out of range 0-59");
    assert_bad("* * 24 * * *", "hour: 24 is out of range 0-23");
    assert_bad("* * * 0 * *", "day-of-month: 0 is out of range 1-31");
    assert_bad("* * * 32 * *", "day-of-month: 32 is out of range 1-31");
    assert_bad("* * * * 0 *", "month: 0 is out of range 1-12");
    assert_bad("* * * * 13 *", "month: 13 is out of range 1-12");
    assert_bad("* * * * * 8", "day-of-week: 8 is out of range 0-7");
    assert_bad("99999999999999999999 * * * * *",
               "second: 99999999999999999999 is out of range 0-59");
    assert_bad("* * * * FOO *", "month: unknown name 'FOO' (use JAN..DEC or numbers)");
    assert_bad("* * * * * MONDAY", "day-of-week: unknown name 'MONDAY' (use SUN..SAT or numbers)");
    assert_bad("MON * * * * *", "second: 'MON' is not a number");
    assert_bad("* * * * JAN-x *", "month: unknown name 'x' (use JAN..DEC or numbers)");
    assert_bad("L * * * * *", "second: 'L' is not a number");
    assert_bad("*/0 * * * * *", "second: step must be at least 1");
    assert_bad("*/ * * * * *", "second: a step needs a number after '/'");
    assert_bad("*/x * * * * *", "second: a step needs a number after '/'");
    assert_bad("5-1 * * * * *", "second: range 5-1 goes backwards");
    assert_bad("* * * * * SAT-SUN", "day-of-week: range 6-0 goes backwards");
    assert_bad("1,,2 * * * * *", "second: empty list item");
    assert_bad("1, * * * * *", "second: empty list item");
    assert_bad(",1 * * * * *", "second: empty list item");
    assert_bad("5- * * * * *", "second: a value is missing");
    assert_bad("-5 * * * * *", "second: unexpected '-'");
    assert_bad("*5 * * * * *", "second: unexpected '5' in '*5'");
    assert_bad("1-5/2/3 * * * * *", "second: unexpected '/' in '1-5/2/3'");
    assert_bad("? * * * * *", "second: '?' is only allowed in the day fields");
    assert_bad("0 0 0 30 2 *", "day-of-month: the chosen days never occur in the chosen months");
    assert_bad("0 0 0 31 4,6,9,11 *",
               "day-of-month: the chosen days never occur in the chosen months");
    assert_bad("0 0 0 31 2 */2", "day-of-month: the chosen days never occur in the chosen months");
    /* a NULL error buffer is allowed */
    kr_cron_t c;
    ASSERT_EQ(kr_cron_parse(&c, "nope", NULL, 0), KR_EINVAL);
    ASSERT_EQ(kr_cron_parse(&c, NULL, NULL, 0), KR_EINVAL);
}

TEST(good_expressions_parse)
{
    static const char *const good[] = {
        "* * * * * *",
        "*/30 * * * * *",
        "0 * * * * *",
        "0 0 9 * * MON-FRI",
        "0 0 0 29 2 *",
        "0 0 0 30 2 MON",
        "0-59/15 0-59/15 0-23/6 1-31/10 1-12/3 0-7/2",
        "1,2,3 4,5 6 7 8 SUN,7",
        "0 0 0 ? * ?",
        "0 0 0 1 DEC SAT",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        kr_cron_t c = parse_ok(good[i]);
        set_tz("UTC");
        ASSERT(kr_cron_next(&c, at("2024-01-01 00:00:00")) > 0);
    }
    kr_cron_t c = parse_ok("0-59/15 0 0 * * 0-7/2");
    ASSERT_EQ(c.sec, (1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45));
    ASSERT_EQ(c.dow, 0x7f & ((1u << 0) | (1u << 2) | (1u << 4) | (1u << 6)));
    ASSERT_EQ(c.dom_any, 1);
    ASSERT_EQ(c.dow, 0x55);
}

KR_TEST_MAIN(KR_TEST_ENTRY(every_second_and_steps), KR_TEST_ENTRY(lists_ranges_and_names),
             KR_TEST_ENTRY(day_of_month_and_day_of_week_rule),
             KR_TEST_ENTRY(month_ends_and_leap_years), KR_TEST_ENTRY(next_is_strictly_after),
             KR_TEST_ENTRY(dst_spring_forward), KR_TEST_ENTRY(dst_fall_back),
             KR_TEST_ENTRY(bad_expressions), KR_TEST_ENTRY(good_expressions_parse))
