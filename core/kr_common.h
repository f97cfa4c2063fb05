/* kr_common.h: included first by every kestrun C file.
 *
 * Feature macros, the few helper macros every module uses (KR_ASSERT, KR_UNUSED,
 * kr_container_of, KR_ARRAY_SIZE), the error codes shared by all modules and the
 * allocation wrappers. Error codes follow libuv: 0 is success, a negative value is an
 * error; KR_E* alias UV_E* (negative errno) and add a few of our own below UV_ERRNO_MAX.
 * Allocation failure aborts after logging the size (Redis zmalloc, h2o_mem_alloc): code
 * that sizes an allocation from peer input checks it against a configured limit first.
 */
#ifndef KR_COMMON_H
#define KR_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <uv.h>

#define KR_VERSION "0.1.0"

#define KR_UNUSED(x) ((void)(x))
#define KR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define kr_container_of(ptr, type, member)                                                         \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define kr_likely(x) __builtin_expect(!!(x), 1)
#define kr_unlikely(x) __builtin_expect(!!(x), 0)

/* Always compiled in: cheap invariants only. Peer misbehaviour is never an assertion. */
#define KR_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (kr_unlikely(!(cond)))                                                                  \
            kr_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

_Noreturn void kr_assert_fail(const char *expr, const char *file, int line);

/* Error codes. UV_E* are negative errno values; ours live below -4096 (UV_ERRNO_MAX). */
#define KR_ENOMEM UV_ENOMEM
#define KR_EINVAL UV_EINVAL
#define KR_ENOENT UV_ENOENT
#define KR_ECANCELED UV_ECANCELED
#define KR_ETIMEDOUT UV_ETIMEDOUT
#define KR_EEXIST UV_EEXIST
#define KR_ECLOSED (-5001)  /* the connection or object is closing or closed */
#define KR_ELIMIT (-5002)   /* a configured limit was reached */
#define KR_EPROTO (-5003)   /* the peer broke the protocol */
#define KR_ESCRIPT (-5004)  /* a script failed to load or run */

/* Like uv_strerror, extended with our own codes. */
const char *kr_strerror(int err);

/* Allocation: abort on failure (after a log line naming the size). */
void *kr_malloc(size_t n);
void *kr_calloc(size_t count, size_t size);
void *kr_realloc(void *p, size_t n);
char *kr_strdup(const char *s);
char *kr_strndup(const char *s, size_t n);
void kr_free(void *p);

/* The value of one hex digit, or -1 (percent-decoding in URLs, queries and forms). */
static inline int kr_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ASCII case-insensitive comparison of n bytes (HTTP header names, hub method names). */
int kr_strncasecmp(const char *a, const char *b, size_t n);

#endif
