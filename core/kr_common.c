/* kr_common.c: assertion failure, error strings and the aborting allocators. */
#include "kr_common.h"

#include <stdio.h>
#include <stdlib.h>

void kr_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "kestrun: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

const char *kr_strerror(int err)
{
    switch (err) {
    case KR_ECLOSED:
        return "connection closed";
    case KR_ELIMIT:
        return "limit reached";
    case KR_EPROTO:
        return "protocol error";
    case KR_ESCRIPT:
        return "script error";
    default:
        return uv_strerror(err);
    }
}

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "kestrun: out of memory allocating %zu bytes\n", n);
    fflush(stderr);
    abort();
}

void *kr_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *kr_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        oom(count * size);
    return p;
}

void *kr_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *kr_strndup(const char *s, size_t n)
{
    char *d = kr_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *kr_strdup(const char *s)
{
    return kr_strndup(s, strlen(s));
}

void kr_free(void *p)
{
    free(p);
}

int kr_strncasecmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = (unsigned char)a[i], cb = (unsigned char)b[i];
        if (ca >= 'A' && ca <= 'Z')
            ca += 32;
        if (cb >= 'A' && cb <= 'Z')
            cb += 32;
        if (ca != cb)
            return ca - cb;
        if (ca == 0)
            return 0;
    }
    return 0;
}
