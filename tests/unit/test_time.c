/* test_time.c: unit tests for core/kr_time.c: the ISO-8601 UTC form (kr_time_iso), the HTTP
 * IMF-fixdate (kr_time_http_date), parsing it back (kr_time_parse_http_date) and the wall
 * clock.
 */
#include "kr_time.h"

#include "kr_test.h"

TEST(iso_known_instants)
{
    char out[KR_ISO_TS_LEN + 1];

    kr_time_iso(0, out);
    ASSERT_STR_EQ(out, "1970-01-01T00:00:00.000Z");
    ASSERT_EQ(strlen(out), KR_ISO_TS_LEN);

    kr_time_iso(1760218200123LL, out);
    ASSERT_STR_EQ(out, "2025-10-11T21:30:00.123Z");

    /* Each digit of the fraction lands in its place. */
    kr_time_iso(1760218200007LL, out);
    ASSERT_STR_EQ(out, "2025-10-11T21:30:00.007Z");
    kr_time_iso(1760218200050LL, out);
    ASSERT_STR_EQ(out, "2025-10-11T21:30:00.050Z");
    kr_time_iso(1760218200999LL, out);
    ASSERT_STR_EQ(out, "2025-10-11T21:30:00.999Z");

    /* 784111777 s is the RFC 9110 example instant. */
    kr_time_iso(784111777000LL, out);
    ASSERT_STR_EQ(out, "1994-11-06T08:49:37.000Z");

    /* A leap day and the last millisecond of a year. */
    kr_time_iso(951782400001LL, out);
    ASSERT_STR_EQ(out, "2000-02-29T00:00:00.001Z");
    kr_time_iso(1704067199999LL, out);
    ASSERT_STR_EQ(out, "2023-12-31T23:59:59.999Z");
}

TEST(http_date_known_instants)
{
    char out[KR_HTTP_DATE_LEN + 1];

    kr_time_http_date(784111777, out);
    ASSERT_STR_EQ(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    ASSERT_EQ(strlen(out), KR_HTTP_DATE_LEN);

    kr_time_http_date(0, out);
    ASSERT_STR_EQ(out, "Thu, 01 Jan 1970 00:00:00 GMT");

    kr_time_http_date(1760218200, out);
    ASSERT_STR_EQ(out, "Sat, 11 Oct 2025 21:30:00 GMT");

    kr_time_http_date(951782400, out);
    ASSERT_STR_EQ(out, "Tue, 29 Feb 2000 00:00:00 GMT");
}

TEST(http_date_every_weekday_and_month)
{
    /* Day and month names are fixed English whatever the locale. */
    static const char *const days[7] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
    static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char out[KR_HTTP_DATE_LEN + 1];
    for (int d = 0; d < 7; d++) {
        kr_time_http_date((time_t)d * 86400, out);
        ASSERT_MEM_EQ(out, 3, days[d], 3);
    }
    /* The 15th of each month of 2025 at noon. */
    for (int m = 0; m < 12; m++) {
        struct tm tm = {0};
        tm.tm_year = 2025 - 1900;
        tm.tm_mon = m;
        tm.tm_mday = 15;
        tm.tm_hour = 12;
        time_t t = timegm(&tm);
        kr_time_http_date(t, out);
        ASSERT_MEM_EQ(out + 5, 2, "15", 2);
        ASSERT_MEM_EQ(out + 8, 3, months[m], 3);
        ASSERT_MEM_EQ(out + 11, 18, " 2025 12:00:00 GMT", 18);
    }
}

TEST(parse_round_trip)
{
    time_t t = 0;
    ASSERT_OK(kr_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", 29, &t));
    ASSERT_EQ(t, 784111777);

    static const time_t samples[] = {0,          784111777,  951782400, 1704067199,
                                     1760218200, 2147483647, 4102444800};
    char out[KR_HTTP_DATE_LEN + 1];
    for (size_t i = 0; i < KR_ARRAY_SIZE(samples); i++) {
        kr_time_http_date(samples[i], out);
        time_t back = -1;
        ASSERT_OK(kr_time_parse_http_date(out, strlen(out), &back));
        ASSERT_EQ(back, samples[i]);
    }
    /* Only len bytes are read: trailing bytes after them are ignored. */
    ASSERT_OK(kr_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMTxyz", 29, &t));
    ASSERT_EQ(t, 784111777);
}

TEST(parse_rejects_garbage)
{
    time_t t = 12345;
    /* Wrong lengths. */
    ASSERT_EQ(kr_time_parse_http_date("", 0, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GM", 28, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT ", 30, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 6 Nov 1994 08:49:37 GMT", 28, &t), KR_EINVAL);
    /* The other two date forms of RFC 9110 are not IMF-fixdate. */
    ASSERT_EQ(kr_time_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", 30, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun Nov  6 08:49:37 1994", 24, &t), KR_EINVAL);
    /* Right length, wrong content. */
    ASSERT_EQ(kr_time_parse_http_date("xxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 nov 1994 08:49:37 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, xx Nov 1994 08:49:37 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Nov 1994 08-49-37 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun; 06 Nov 1994 08:49:37 GMT", 29, &t), KR_EINVAL);
    /* A failed parse leaves *t alone. */
    ASSERT_EQ(t, 12345);
}

/* Strings of the right length whose fields are not an IMF-fixdate: a zone other than GMT and
 * out-of-range fields (which timegm would otherwise normalise into another instant). */
TEST(parse_rejects_malformed_fields)
{
    time_t t = 12345;
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 XYZ", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 99 Nov 1994 08:49:37 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, 06 Nov 1994 99:99:99 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(kr_time_parse_http_date("Sun, -6 Nov 1994 08:49:37 GMT", 29, &t), KR_EINVAL);
    ASSERT_EQ(t, 12345);
}

TEST(wall_clock)
{
    int64_t ms = kr_time_wall_ms();
    time_t now = time(NULL);
    /* Same clock, millisecond unit. */
    ASSERT(ms / 1000 >= (int64_t)now - 2 && ms / 1000 <= (int64_t)now + 2);
    ASSERT(ms > 1704067200000LL); /* after 2024-01-01 */
    int64_t later = kr_time_wall_ms();
    ASSERT(later >= ms);
    char out[KR_ISO_TS_LEN + 1];
    kr_time_iso(ms, out);
    ASSERT_EQ(strlen(out), KR_ISO_TS_LEN);
    ASSERT_EQ(out[10], 'T');
    ASSERT_EQ(out[23], 'Z');
}

KR_TEST_MAIN(KR_TEST_ENTRY(iso_known_instants), KR_TEST_ENTRY(http_date_known_instants),
             KR_TEST_ENTRY(http_date_every_weekday_and_month), KR_TEST_ENTRY(parse_round_trip),
             KR_TEST_ENTRY(parse_rejects_garbage), KR_TEST_ENTRY(parse_rejects_malformed_fields),
             KR_TEST_ENTRY(wall_clock))
