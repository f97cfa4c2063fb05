/* test_json_write.c: unit tests for the JSON string writer and the UTF-8 check (core/kr_json.c). */
#include "kr_json.h"

#include <cjson/cJSON.h>

#include "kr_test.h"

/* Writes s[0..len) and compares the output with want (a C string). */
static void check_write(const char *s, size_t len, const char *want)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_json_write_string(&sb, s, len);
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), want, strlen(want));
    /* Whatever the input, the output is valid UTF-8. */
    ASSERT(kr_utf8_valid(kr_sbuf_data(&sb), kr_sbuf_len(&sb)));
    kr_sbuf_dispose(&sb);
}

#define CHECK(lit, want) check_write((lit), sizeof(lit) - 1, (want))

TEST(plain)
{
    CHECK("", "\"\"");
    CHECK("hello world", "\"hello world\"");
    CHECK("a/b", "\"a/b\""); /* '/' needs no escape */
    check_write(NULL, 0, "\"\"");
    check_write("abcdef", 3, "\"abc\""); /* only len bytes are read */
}

TEST(quotes_and_backslash)
{
    CHECK("say \"hi\"", "\"say \\\"hi\\\"\"");
    CHECK("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    CHECK("\"", "\"\\\"\"");
    CHECK("\\", "\"\\\\\"");
}

TEST(control_chars)
{
    CHECK("\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"");
    CHECK("\x01\x1f", "\"\\u0001\\u001f\"");
    CHECK("\x1e", "\"\\u001e\""); /* the SignalR record separator never appears raw */
    CHECK("a\0b", "\"a\\u0000b\"");
    CHECK("\x7f", "\"\x7f\""); /* DEL is not a JSON control character */
}

TEST(multibyte_passthrough)
{
    CHECK("\xc3\xa9", "\"\xc3\xa9\"");                 /* é, 2 bytes */
    CHECK("\xe2\x82\xac", "\"\xe2\x82\xac\"");         /* €, 3 bytes */
    CHECK("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""); /* U+1F600, 4 bytes */
    CHECK("\xc2\x80", "\"\xc2\x80\"");                 /* lowest 2-byte */
    CHECK("\xe0\xa0\x80", "\"\xe0\xa0\x80\"");         /* lowest 3-byte */
    CHECK("\xed\x9f\xbf", "\"\xed\x9f\xbf\"");         /* U+D7FF */
    CHECK("\xee\x80\x80", "\"\xee\x80\x80\"");         /* U+E000 */
    CHECK("\xef\xbf\xbf", "\"\xef\xbf\xbf\"");         /* U+FFFF */
    CHECK("\xf0\x90\x80\x80", "\"\xf0\x90\x80\x80\""); /* U+10000 */
    CHECK("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF */
    CHECK("x\xc3\xa9y\xe2\x82\xacz", "\"x\xc3\xa9y\xe2\x82\xacz\"");
}

TEST(invalid_bytes)
{
    CHECK("\x80", "\"\\ufffd\""); /* stray continuation byte */
    CHECK("\xbf", "\"\\ufffd\"");
    CHECK("\xff", "\"\\ufffd\"");
    CHECK("\xfe", "\"\\ufffd\"");
    CHECK("a\xffz", "\"a\\ufffdz\"");
    CHECK("\xc3(", "\"\\ufffd(\""); /* lead byte without continuation */
}

TEST(overlong)
{
    CHECK("\xc0\xaf", "\"\\ufffd\\ufffd\""); /* '/' as 2 bytes */
    CHECK("\xc1\xbf", "\"\\ufffd\\ufffd\"");
    CHECK("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""); /* '/' as 3 bytes */
    CHECK("\xe0\x9f\xbf", "\"\\ufffd\\ufffd\\ufffd\"");
    CHECK("\xf0\x80\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    CHECK("\xf0\x8f\xbf\xbf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

TEST(surrogates_and_beyond)
{
    CHECK("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");            /* U+D800 */
    CHECK("\xed\xbf\xbf", "\"\\ufffd\\ufffd\\ufffd\"");            /* U+DFFF */
    CHECK("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* U+110000 */
    CHECK("\xf5\x80\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

TEST(truncated)
{
    CHECK("\xc3", "\"\\ufffd\"");
    CHECK("\xe2\x82", "\"\\ufffd\\ufffd\"");
    CHECK("\xf0\x9f\x98", "\"\\ufffd\\ufffd\\ufffd\"");
    CHECK("ab\xf0\x9f", "\"ab\\ufffd\\ufffd\"");
    /* Cut short by len even though the bytes follow in memory. */
    check_write("\xe2\x82\xac", 2, "\"\\ufffd\\ufffd\"");
}

/* Long input crosses the writer's chunk boundary: a multibyte sequence straddling it, and the
 * worst-case expansion, must both come out right. */
TEST(long_strings)
{
    enum { N = 5000 };
    static char in[N], want[N * 6 + 3];
    kr_sbuf_t sb;
    size_t w = 0;

    for (size_t i = 0; i < N; i++)
        in[i] = (char)(i % 3 == 2 ? 0xac : i % 3 == 1 ? 0x82 : 0xe2); /* "€" repeated */
    in[N - 1] = 'x';
    in[N - 2] = 'x';
    kr_sbuf_init(&sb, 16);
    kr_json_write_string(&sb, in, N);
    want[w++] = '"';
    memcpy(want + w, in, N);
    w += N;
    want[w++] = '"';
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), want, w);

    memset(in, 1, N);
    kr_sbuf_reset(&sb);
    kr_json_write_string(&sb, in, N);
    w = 0;
    want[w++] = '"';
    for (size_t i = 0; i < N; i++) {
        memcpy(want + w, "\\u0001", 6);
        w += 6;
    }
    want[w++] = '"';
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), want, w);
    kr_sbuf_dispose(&sb);
}

/* The output reads back through cJSON as the same bytes (valid input) or with U+FFFD. */
TEST(reads_back)
{
    static const char in[] = "q\"b\\s/\b\f\n\r\t\x01 \xc3\xa9\xf0\x9f\x98\x80 \xff end";
    kr_sbuf_t sb;
    cJSON *v;

    kr_sbuf_init(&sb, 16);
    kr_json_write_string(&sb, in, sizeof(in) - 1);
    v = cJSON_ParseWithLength(kr_sbuf_data(&sb), kr_sbuf_len(&sb));
    ASSERT_NOT_NULL(v);
    ASSERT(cJSON_IsString(v));
    ASSERT_STR_EQ(v->valuestring,
                  "q\"b\\s/\b\f\n\r\t\x01 \xc3\xa9\xf0\x9f\x98\x80 \xef\xbf\xbd end");
    cJSON_Delete(v);
    kr_sbuf_dispose(&sb);
}

/* Appends after what the builder already holds. */
TEST(appends)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_sbuf_puts(&sb, "[");
    kr_json_write_string(&sb, "a", 1);
    kr_sbuf_puts(&sb, ",");
    kr_json_write_string(&sb, "b", 1);
    kr_sbuf_puts(&sb, "]");
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), "[\"a\",\"b\"]", 9);
    kr_sbuf_dispose(&sb);
}

#define VALID(lit) ASSERT(kr_utf8_valid((lit), sizeof(lit) - 1))
#define INVALID(lit) ASSERT(!kr_utf8_valid((lit), sizeof(lit) - 1))

TEST(utf8_valid)
{
    ASSERT(kr_utf8_valid(NULL, 0));
    VALID("");
    VALID("plain ASCII text that is longer than eight bytes");
    VALID("a\0b"); /* NUL is a valid code point */
    VALID("\x7f");
    VALID("\xc2\x80");
    VALID("\xc3\xa9");
    VALID("\xdf\xbf");
    VALID("\xe0\xa0\x80");
    VALID("\xe2\x82\xac");
    VALID("\xed\x9f\xbf");
    VALID("\xee\x80\x80");
    VALID("\xef\xbf\xbf");
    VALID("\xf0\x90\x80\x80");
    VALID("\xf0\x9f\x98\x80");
    VALID("\xf4\x8f\xbf\xbf");
    VALID("12345678\xc3\xa9"
          "12345678\xe2\x82\xac"
          "12345678");
}

TEST(utf8_invalid)
{
    INVALID("\x80");
    INVALID("\xbf");
    INVALID("\xc0\x80");         /* overlong NUL */
    INVALID("\xc1\xbf");         /* overlong */
    INVALID("\xe0\x80\x80");     /* overlong */
    INVALID("\xe0\x9f\xbf");     /* overlong */
    INVALID("\xf0\x8f\xbf\xbf"); /* overlong */
    INVALID("\xed\xa0\x80");     /* surrogate U+D800 */
    INVALID("\xed\xbf\xbf");     /* surrogate U+DFFF */
    INVALID("\xf4\x90\x80\x80"); /* above U+10FFFF */
    INVALID("\xf5\x80\x80\x80");
    INVALID("\xf8\x88\x80\x80\x80"); /* old 5-byte form */
    INVALID("\xfe");
    INVALID("\xff");
    INVALID("\xc3"); /* truncated */
    INVALID("\xe2\x82");
    INVALID("\xf0\x9f\x98");
    INVALID("\xc3("); /* bad continuation */
    INVALID("\xe2(\xac");
    INVALID("\xf0\x9f(\x80");
    INVALID("12345678123456\xff"); /* after the 8-byte fast path */
    INVALID("1234567\xff"
            "12345678");
    ASSERT(!kr_utf8_valid("\xe2\x82\xac", 2)); /* cut short by len */
    ASSERT(kr_utf8_valid("ab\xff", 2));
}

/* kr_json_nul_protect / kr_json_nul_restore: "\u0000" escapes inside strings become C0 80 and
 * back; nothing else changes; invalid UTF-8 input is left alone. */
TEST(nul_protect_restore)
{
    size_t len = 0;
    const char *none = "{\"a\":\"b\"}";
    len = strlen(none);
    ASSERT_NULL(kr_json_nul_protect(none, &len));
    const char *esc = "[\"\\\\u0000\"]"; /* an escaped backslash, then u0000: no NUL */
    len = strlen(esc);
    char *same = kr_json_nul_protect(esc, &len); /* the bytes look like one: copied unchanged */
    if (same != NULL) {
        ASSERT_EQ(len, strlen(esc));
        ASSERT_EQ(memcmp(same, esc, len), 0);
        kr_free(same);
    }
    const char *bad = "[\"\\u0000\xff\"]"; /* not UTF-8: untouched */
    len = strlen(bad);
    ASSERT_NULL(kr_json_nul_protect(bad, &len));
    const char *in = "{\"k\\u0000\":[\"a\\u0000b\",\"\\\"\\u0000\",\"\\\\\\u0000\"]}";
    len = strlen(in);
    char *out = kr_json_nul_protect(in, &len);
    ASSERT_NOT_NULL(out);
    const char want[] = "{\"k\xc0\x80\":[\"a\xc0\x80" "b\",\"\\\"\xc0\x80\",\"\\\\\xc0\x80\"]}";
    ASSERT_EQ(len, sizeof(want) - 1);
    ASSERT_EQ(memcmp(out, want, len), 0);
    char s[] = "a\xc0\x80" "b\xc0\x80\xc0";
    ASSERT_EQ(kr_json_nul_restore(s, sizeof(s) - 1), 5);
    ASSERT_EQ(memcmp(s, "a\0b\0\xc0", 5), 0);
    kr_free(out);
}

KR_TEST_MAIN(KR_TEST_ENTRY(plain), KR_TEST_ENTRY(quotes_and_backslash),
             KR_TEST_ENTRY(control_chars), KR_TEST_ENTRY(multibyte_passthrough),
             KR_TEST_ENTRY(invalid_bytes), KR_TEST_ENTRY(overlong),
             KR_TEST_ENTRY(surrogates_and_beyond), KR_TEST_ENTRY(truncated),
             KR_TEST_ENTRY(long_strings), KR_TEST_ENTRY(reads_back), KR_TEST_ENTRY(appends),
             KR_TEST_ENTRY(utf8_valid), KR_TEST_ENTRY(utf8_invalid),
             KR_TEST_ENTRY(nul_protect_restore))
