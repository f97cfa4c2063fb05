/* test_log.c: unit tests for core/kr_log.c: level names, the text and JSON line formats, the
 * console/file destinations and their levels, the command line winning over a script's
 * configuration, going back to it, the sink (its level, the re-entrancy guard, hold/release),
 * and kr_server's CPU sampler before its first window.
 */
#include "kr_log.h"
#include "kr_server.h"

#include "kr_test.h"

#include <fcntl.h>
#include <stdarg.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static char tmp_path[64];

static int tmp_file(void)
{
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/kr-test-log-XXXXXX");
    int fd = mkstemp(tmp_path);
    ASSERT(fd >= 0);
    close(fd);
    fd = kr_log_open_file(tmp_path);
    ASSERT(fd >= 0);
    return fd;
}

static char *slurp(const char *path)
{
    static char buf[16384];
    int fd = open(path, O_RDONLY);
    ASSERT(fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    ASSERT(n >= 0);
    buf[n] = '\0';
    close(fd);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Sends stderr to a file for the rest of the test (each test is its own process). */
static const char *capture_stderr(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/kr-test-stderr-XXXXXX");
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
    return path;
}

static kr_log_config_t config(int console, int fd)
{
    kr_log_config_t c = {KR_LOG_INFO, KR_LOG_TEXT, 0, 0, console, fd};
    return c;
}

/* ---- names and formats ------------------------------------------------------------------ */

TEST(level_names)
{
    static const char *const names[] = {"Verbose", "Debug", "Information",
                                        "Warning", "Error", "Fatal"};
    for (int i = 0; i <= KR_LOG_FATAL; i++) {
        kr_log_level_e lv = KR_LOG_FATAL;
        ASSERT_OK(kr_log_level_parse(names[i], &lv));
        ASSERT_EQ(lv, i);
        ASSERT_STR_EQ(kr_log_level_name((kr_log_level_e)i), names[i]);
    }
    kr_log_level_e lv;
    ASSERT_OK(kr_log_level_parse("wARNING", &lv));
    ASSERT_EQ(lv, KR_LOG_WARN);
    ASSERT_EQ(kr_log_level_parse("Warn", &lv), KR_EINVAL);
    ASSERT_EQ(kr_log_level_parse("Warnings", &lv), KR_EINVAL);
    ASSERT_EQ(kr_log_level_parse("", &lv), KR_EINVAL);
    kr_log_format_e f;
    ASSERT_OK(kr_log_format_parse("json", &f));
    ASSERT_EQ(f, KR_LOG_JSON);
    ASSERT_OK(kr_log_format_parse("text", &f));
    ASSERT_EQ(f, KR_LOG_TEXT);
    ASSERT_EQ(kr_log_format_parse("JSON", &f), KR_EINVAL);
}

TEST(format_text)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 64);
    kr_log_format_line(&sb, KR_LOG_TEXT, 1760218200123LL, KR_LOG_WARN, "script", NULL,
                       "low stock", 9);
    kr_sbuf_putc(&sb, '\0');
    ASSERT_STR_EQ(kr_sbuf_data(&sb), "2025-10-11T21:30:00.123Z [Warning] script: low stock\n");
    kr_sbuf_reset(&sb);
    /* msg_len is honoured; fields follow in braces */
    kr_log_format_line(&sb, KR_LOG_TEXT, 0, KR_LOG_ERROR, "hub", "\"item\":7", "abcdef", 3);
    kr_sbuf_putc(&sb, '\0');
    ASSERT_STR_EQ(kr_sbuf_data(&sb), "1970-01-01T00:00:00.000Z [Error] hub: abc {\"item\":7}\n");
    kr_sbuf_dispose(&sb);
}

TEST(format_json)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 64);
    const char *msg = "a \"q\"\n\tb";
    kr_log_format_line(&sb, KR_LOG_JSON, 1760218200123LL, KR_LOG_INFO, "ht\"tp", "\"message\":1",
                       msg, strlen(msg));
    kr_sbuf_putc(&sb, '\0');
    ASSERT_STR_EQ(kr_sbuf_data(&sb),
                  "{\"timestamp\":\"2025-10-11T21:30:00.123Z\",\"level\":\"Information\","
                  "\"source\":\"ht\\\"tp\",\"message\":\"a \\\"q\\\"\\n\\tb\","
                  "\"fields\":{\"message\":1}}\n");
    kr_sbuf_dispose(&sb);
}

/* ---- destinations and levels ------------------------------------------------------------ */

TEST(file_and_console_levels)
{
    const char *err = capture_stderr();
    kr_log_config_t c = config(0, tmp_file());
    c.level = KR_LOG_WARN;
    c.has_level = 1;
    kr_log_configure(&c);
    ASSERT_EQ(kr_log_min_level, KR_LOG_WARN);
    KR_LOG(KR_LOG_INFO, "t", "dropped");
    KR_LOG(KR_LOG_WARN, "t", "kept %d", 1);
    kr_log_write(KR_LOG_DEBUG, "t", NULL, "dropped too");
    kr_log_write(KR_LOG_FATAL, "t", "\"k\":\"v\"", "kept %s", "two");
    const char *f = slurp(tmp_path);
    ASSERT_EQ(count_lines(f), 2);
    ASSERT(strstr(f, "[Warning] t: kept 1\n") != NULL);
    ASSERT(strstr(f, "[Fatal] t: kept two {\"k\":\"v\"}\n") != NULL);
    ASSERT(strstr(f, "dropped") == NULL);
    ASSERT_STR_EQ(slurp(err), ""); /* console = false */

    /* console and file both; json format */
    c = config(1, kr_log_open_file(tmp_path));
    c.format = KR_LOG_JSON;
    c.has_format = 1;
    kr_log_configure(&c);
    ASSERT_EQ(kr_log_min_level, KR_LOG_INFO); /* no level: the base one */
    KR_LOG(KR_LOG_INFO, "t", "both");
    f = slurp(tmp_path);
    ASSERT_EQ(count_lines(f), 3);
    ASSERT(strstr(f, "\"level\":\"Information\",\"source\":\"t\",\"message\":\"both\"}\n"));
    const char *e = slurp(err);
    ASSERT_EQ(count_lines(e), 1);
    ASSERT(strstr(e, "\"message\":\"both\"}\n") != NULL);
    unlink(tmp_path);
    unlink(err);
}

TEST(nothing_to_write_closes_the_gate)
{
    kr_log_config_t c = config(0, -1);
    kr_log_configure(&c);
    ASSERT_EQ(kr_log_min_level, KR_LOG_OFF);
    kr_log_reset();
    ASSERT_EQ(kr_log_min_level, KR_LOG_INFO);
}

TEST(reset_goes_back_to_the_command_line)
{
    const char *err = capture_stderr();
    kr_log_set_level(KR_LOG_ERROR); /* --log-level Error */
    kr_log_config_t c = config(0, tmp_file());
    kr_log_configure(&c);
    KR_LOG(KR_LOG_ERROR, "t", "to the file");
    kr_log_reset();
    ASSERT_EQ(kr_log_min_level, KR_LOG_ERROR);
    KR_LOG(KR_LOG_WARN, "t", "below the command line's level");
    KR_LOG(KR_LOG_ERROR, "t", "to stderr");
    const char *f = slurp(tmp_path);
    ASSERT_EQ(count_lines(f), 1); /* the file is no longer written */
    ASSERT(strstr(f, "to the file") != NULL);
    const char *e = slurp(err);
    ASSERT_EQ(count_lines(e), 1);
    ASSERT(strstr(e, "to stderr") != NULL);
    unlink(tmp_path);
    unlink(err);
}

TEST(command_line_wins_over_the_script)
{
    kr_log_set_level(KR_LOG_DEBUG);  /* --log-level Debug */
    kr_log_set_format(KR_LOG_JSON); /* --log-format json */
    kr_log_config_t c = config(0, tmp_file());
    c.level = KR_LOG_ERROR;
    c.has_level = 1;
    c.format = KR_LOG_TEXT;
    c.has_format = 1;
    kr_log_configure(&c);
    ASSERT_EQ(kr_log_min_level, KR_LOG_DEBUG);
    ASSERT_EQ(kr_log_script_level(), KR_LOG_ERROR); /* the sink's threshold */
    KR_LOG(KR_LOG_DEBUG, "t", "debug");
    const char *f = slurp(tmp_path);
    ASSERT(strstr(f, "\"level\":\"Debug\"") != NULL);
    unlink(tmp_path);
}

TEST(script_level_without_command_line)
{
    kr_log_config_t c = config(0, tmp_file());
    c.level = KR_LOG_ERROR;
    c.has_level = 1;
    kr_log_configure(&c);
    ASSERT_EQ(kr_log_min_level, KR_LOG_ERROR);
    ASSERT_EQ(kr_log_script_level(), KR_LOG_ERROR);
    kr_log_write(KR_LOG_WARN, "t", NULL, "below");
    ASSERT_STR_EQ(slurp(tmp_path), "");
    kr_log_reset();
    ASSERT_EQ(kr_log_script_level(), KR_LOG_INFO);
    unlink(tmp_path);
}

TEST(open_file_errors)
{
    ASSERT_EQ(kr_log_open_file("/nonexistent-kr-dir/x.log"), UV_ENOENT);
    ASSERT(kr_log_open_file("/") < 0); /* a directory */
}

TEST(file_appends)
{
    int fd = tmp_file();
    ASSERT_EQ(write(fd, "before\n", 7), 7);
    close(fd);
    kr_log_config_t c = config(0, kr_log_open_file(tmp_path));
    kr_log_configure(&c);
    KR_LOG(KR_LOG_INFO, "t", "after");
    const char *f = slurp(tmp_path);
    ASSERT(strncmp(f, "before\n", 7) == 0);
    ASSERT(strstr(f, "after\n") != NULL);
    ASSERT_EQ(count_lines(f), 2);
    unlink(tmp_path);
}

/* ---- the sink --------------------------------------------------------------------------- */

static int sink_calls;
static char sink_last[256];

static void sink_reenter(const kr_log_line_t *line, void *ud)
{
    ASSERT(ud == &sink_calls);
    sink_calls++;
    snprintf(sink_last, sizeof(sink_last), "%s|%s|%.*s|%s", kr_log_level_name(line->level),
             line->source, (int)line->message_len, line->message,
             line->fields_json ? line->fields_json : "-");
    ASSERT(line->ts_ms > 1704067200000LL);
    /* What the sink logs itself is written but never given back to it. */
    KR_LOG(KR_LOG_FATAL, "sink", "inside the sink");
}

TEST(sink_levels_and_guard)
{
    const char *err = capture_stderr();
    kr_log_config_t c = config(1, -1);
    c.level = KR_LOG_ERROR;
    c.has_level = 1;
    kr_log_configure(&c);
    kr_log_set_sink(sink_reenter, &sink_calls, KR_LOG_WARN);
    ASSERT_EQ(kr_log_min_level, KR_LOG_WARN); /* the lower of the console's and the sink's */
    KR_LOG(KR_LOG_INFO, "t", "below both");
    ASSERT_EQ(sink_calls, 0);
    KR_LOG(KR_LOG_WARN, "t", "sink only %d", 7);
    ASSERT_EQ(sink_calls, 1);
    ASSERT_STR_EQ(sink_last, "Warning|t|sink only 7|-");
    kr_log_write(KR_LOG_ERROR, "script", "\"a\":1", "both");
    ASSERT_EQ(sink_calls, 2);
    ASSERT_STR_EQ(sink_last, "Error|script|both|\"a\":1");
    /* held: nothing reaches the sink, the console still gets it */
    kr_log_sink_hold();
    KR_LOG(KR_LOG_ERROR, "t", "held");
    kr_log_sink_release();
    ASSERT_EQ(sink_calls, 2);
    KR_LOG(KR_LOG_ERROR, "t", "released");
    ASSERT_EQ(sink_calls, 3);
    kr_log_set_sink(NULL, NULL, KR_LOG_OFF);
    ASSERT_EQ(kr_log_min_level, KR_LOG_ERROR);
    KR_LOG(KR_LOG_FATAL, "t", "no sink");
    ASSERT_EQ(sink_calls, 3);
    const char *e = slurp(err);
    /* both, inside x3, held, released, no sink */
    ASSERT_EQ(count_lines(e), 7);
    ASSERT(strstr(e, "sink only") == NULL);
    ASSERT(strstr(e, "[Error] t: held\n") != NULL);
    unlink(err);
}

/* ---- the CPU sampler (kr_server.c) ------------------------------------------------------ */

TEST(cpu_percent_before_the_first_window)
{
    uv_loop_t loop;
    ASSERT_OK(uv_loop_init(&loop));
    kr_server_t s;
    kr_server_init(&s, &loop);
    uint64_t t0 = kr_process_cpu_ns();
    /* burn ~300 ms of CPU */
    volatile uint64_t x = 0;
    while (kr_process_cpu_ns() - t0 < 300000000ull)
        x++;
    uv_update_time(&loop);
    /* On a loaded machine the process gets less than a core: compare with what it got. */
    uint64_t wall_ms = uv_now(&loop) - s.cpu_window_ms;
    ASSERT(wall_ms >= 300);
    double expect = (double)(kr_process_cpu_ns() - s.cpu_window_ns) / 1e4 / (double)wall_ms;
    double busy = kr_server_cpu_percent(&s);
    ASSERT(busy > 0 && busy < 105); /* no lower bound: a loaded machine may give us little */
    ASSERT(busy > expect - 5 && busy < expect + 5);
    usleep(400000); /* idle: the average since start falls */
    uv_update_time(&loop);
    double later = kr_server_cpu_percent(&s);
    ASSERT(later < busy);
    ASSERT(later < busy * (double)wall_ms / (double)(wall_ms + 300) + 5);
    ASSERT_OK(uv_loop_close(&loop));
}

KR_TEST_MAIN(KR_TEST_ENTRY(level_names), KR_TEST_ENTRY(format_text), KR_TEST_ENTRY(format_json),
             KR_TEST_ENTRY(file_and_console_levels), KR_TEST_ENTRY(nothing_to_write_closes_the_gate),
             KR_TEST_ENTRY(reset_goes_back_to_the_command_line),
             KR_TEST_ENTRY(command_line_wins_over_the_script),
             KR_TEST_ENTRY(script_level_without_command_line), KR_TEST_ENTRY(open_file_errors),
             KR_TEST_ENTRY(file_appends), KR_TEST_ENTRY(sink_levels_and_guard),
             KR_TEST_ENTRY(cpu_percent_before_the_first_window))
