/* lua_capped.h: a lua_Alloc with a byte limit, for the memory-cap tests of the Lua converters
 * (test_lua_json.c, test_lua_msgpack.c). Static inline functions in a header, as in kr_test.h.
 */
#ifndef KR_TEST_LUA_CAPPED_H
#define KR_TEST_LUA_CAPPED_H

#include <stdlib.h>

typedef struct capped_s {
    size_t used, limit;
} capped_t;

/* lua_newstate(capped_alloc, &cap): fails any growth past cap.limit, counts cap.used. */
static inline void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    capped_t *c = ud;
    if (ptr == NULL)
        osize = 0; /* osize is then the object type, not a size */
    if (nsize == 0) {
        free(ptr);
        c->used -= osize;
        return NULL;
    }
    if (nsize > osize && c->used - osize + nsize > c->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        c->used = c->used - osize + nsize;
    return p;
}

#endif
