/* unhex.h: hex test input for the unit tests (test_sr_msgpack.c, test_lua_msgpack.c). Static
 * inline functions in a header, as in kr_test.h; include it after kr_common.h (kr_hexval) and
 * kr_test.h.
 */
#ifndef KR_TEST_UNHEX_H
#define KR_TEST_UNHEX_H

#include <stdlib.h>
#include <string.h>

/* Decodes hex (spaces allowed) into a malloc'd exact-size block, so that ASan catches a read
 * past its end; returns it and sets *len. */
static inline char *unhex(const char *hex, size_t *len)
{
    size_t n = 0, cap = strlen(hex) / 2 + 1;
    char *out = malloc(cap);
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        if (*p == ' ')
            continue;
        int v = kr_hexval((unsigned char)*p);
        ASSERT(v >= 0);
        if (hi < 0) {
            hi = v;
        } else {
            out[n++] = (char)(hi << 4 | v);
            hi = -1;
        }
    }
    ASSERT(hi < 0);
    char *exact = malloc(n ? n : 1);
    memcpy(exact, out, n);
    free(out);
    *len = n;
    return exact;
}

#endif
