/* fuzz_json.c: libFuzzer target for JSON decoding into Lua (req:json(), kr.json.decode):
 * decode, and when that succeeds encode the value again and decode the result, which must
 * succeed too (round trip). A small VM memory cap makes allocation failures reachable. */
#include "kr_buf.h"
#include "kr_lua_json.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

typedef struct {
    size_t used, limit;
} cap_t;

static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    cap_t *cap = ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        cap->used -= osize;
        return NULL;
    }
    if (nsize > osize && cap->used + nsize - osize > cap->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        cap->used += nsize - osize;
    return p;
}

static int run(lua_State *L)
{
    const char *data = lua_touserdata(L, 1);
    size_t size = (size_t)lua_tointeger(L, 2);
    char err[128];
    if (kr_json_decode(L, data, size, NULL, err, sizeof(err)) != 0)
        return 0;
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    const char *eerr = NULL;
    int rc = kr_json_encode(L, -1, &sb, NULL, &eerr);
    if (rc == 0 && kr_json_decode(L, kr_sbuf_data(&sb), kr_sbuf_len(&sb), NULL, err,
                                  sizeof(err)) != 0 &&
        strstr(err, "memory") == NULL && strstr(err, "deep") == NULL)
        abort(); /* what we encode must decode */
    kr_sbuf_dispose(&sb);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cap_t cap = {0, 8u << 20};
    lua_State *L = lua_newstate(cap_alloc, &cap);
    if (L == NULL)
        return 0;
    luaL_openlibs(L);
    lua_pushcfunction(L, run);
    lua_pushlightuserdata(L, (void *)data);
    lua_pushinteger(L, (lua_Integer)size);
    (void)lua_pcall(L, 2, 0, 0); /* memory errors are an expected outcome here */
    lua_close(L);
    return 0;
}
