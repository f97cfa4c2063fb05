/* kr_test.h: the unit-test harness (modelled on libuv's task.h and runner).
 *
 * A test file defines TEST(name) functions and lists them in a KR_TEST_LIST table; main()
 * comes from KR_TEST_MAIN. Each test runs in a forked child with a timeout, so a crash or a
 * hang fails that test alone. ASSERT_* print both sides and the location. Run one test by
 * giving its name as the first argument.
 */
#ifndef KR_TEST_H
#define KR_TEST_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST(name) static void test_##name(void)
#define KR_TEST_ENTRY(name) {#name, test_##name}

typedef struct kr_test_s {
    const char *name;
    void (*fn)(void);
} kr_test_t;

#define KR_TEST_FAIL(...)                                                                          \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        fflush(stderr);                                                                            \
        abort();                                                                                   \
    } while (0)

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c))                                                                                  \
            KR_TEST_FAIL("assertion failed: %s", #c);                                              \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                              \
        if (a_ != b_)                                                                              \
            KR_TEST_FAIL("%s == %s: %" PRId64 " != %" PRId64, #a, #b, a_, b_);                     \
    } while (0)

#define ASSERT_NE(a, b)                                                                            \
    do {                                                                                           \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                              \
        if (a_ == b_)                                                                              \
            KR_TEST_FAIL("%s != %s: both %" PRId64, #a, #b, a_);                                   \
    } while (0)

#define ASSERT_OK(a) ASSERT_EQ((a), 0)
#define ASSERT_NULL(a) ASSERT((a) == NULL)
#define ASSERT_NOT_NULL(a) ASSERT((a) != NULL)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            KR_TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",                 \
                         b_ ? b_ : "(null)");                                                      \
    } while (0)

#define ASSERT_MEM_EQ(a, alen, b, blen)                                                            \
    do {                                                                                           \
        size_t al_ = (alen), bl_ = (blen);                                                         \
        if (al_ != bl_ || memcmp((a), (b), al_) != 0)                                              \
            KR_TEST_FAIL("%s == %s: \"%.*s\" != \"%.*s\"", #a, #b, (int)al_, (const char *)(a),    \
                         (int)bl_, (const char *)(b));                                             \
    } while (0)

/* Close every handle of a test loop and check that nothing is left (MAKE_VALGRIND_HAPPY). */
#define KR_TEST_LOOP_CLOSE(loop)                                                                   \
    do {                                                                                           \
        uv_walk((loop), kr_test_close_walk, NULL);                                                 \
        uv_run((loop), UV_RUN_DEFAULT);                                                            \
        ASSERT_EQ(uv_loop_close(loop), 0);                                                         \
    } while (0)

static inline void kr_test_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

#ifndef KR_TEST_TIMEOUT_S
#define KR_TEST_TIMEOUT_S 30
#endif

static inline int kr_test_run(const kr_test_t *tests, size_t n, int argc, char **argv)
{
    int failed = 0, ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        ran++;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(KR_TEST_TIMEOUT_S);
            tests[i].fn();
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok) {
            failed++;
            if (WIFSIGNALED(status))
                printf("not ok %d - %s (signal %d%s)\n", ran, tests[i].name, WTERMSIG(status),
                       WTERMSIG(status) == SIGALRM ? ", timeout" : "");
            else
                printf("not ok %d - %s (exit %d)\n", ran, tests[i].name, WEXITSTATUS(status));
        } else {
            printf("ok %d - %s\n", ran, tests[i].name);
        }
    }
    printf("%d passed, %d failed\n", ran - failed, failed);
    return failed ? 1 : (ran ? 0 : 1);
}

#define KR_TEST_MAIN(...)                                                                          \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const kr_test_t tests_[] = {__VA_ARGS__};                                           \
        return kr_test_run(tests_, sizeof(tests_) / sizeof(tests_[0]), argc, argv);                \
    }

#endif
