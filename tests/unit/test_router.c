/* test_router.c: unit tests for the route table (core/kr_router.c). */
#include "kr_router.h"

#include "kr_test.h"

/* Distinct data pointers to tell routes apart. */
static int d1, d2, d3, d4, d5, d6;

static void add_ok(kr_router_t *r, unsigned methods, const char *pattern, void *data)
{
    const char *err = NULL;
    int rc = kr_router_add(r, methods, pattern, data, &err);
    if (rc != 0)
        KR_TEST_FAIL("adding %s: %d (%s)", pattern, rc, err ? err : "no message");
}

static const char *add_err(kr_router_t *r, unsigned methods, const char *pattern)
{
    const char *err = NULL;
    ASSERT_EQ(kr_router_add(r, methods, pattern, &d1, &err), KR_EINVAL);
    ASSERT_NOT_NULL(err);
    return err;
}

static kr_route_result_e match(const kr_router_t *r, unsigned method, const char *path,
                               kr_route_match_t *m)
{
    return kr_router_match(r, method, path, strlen(path), m);
}

/* Expects FOUND with the given data and returns the match for further checks. */
#define ASSERT_ROUTE(r, method, path, want, m)                                                     \
    do {                                                                                           \
        ASSERT_EQ(match((r), (method), (path), (m)), KR_ROUTE_FOUND);                              \
        ASSERT((m)->data == (void *)(want));                                                       \
    } while (0)

#define ASSERT_PARAM(m, i, pname, pvalue)                                                          \
    do {                                                                                           \
        ASSERT((i) < (m)->nparams);                                                                \
        ASSERT_STR_EQ((m)->params[i].name, (pname));                                               \
        ASSERT_MEM_EQ((m)->params[i].value, (m)->params[i].value_len, (pvalue), strlen(pvalue));   \
    } while (0)

TEST(method_bits)
{
    ASSERT_EQ(kr_router_method_bit("get", 3), KR_M_GET);
    ASSERT_EQ(kr_router_method_bit("HEAD", 4), KR_M_HEAD);
    ASSERT_EQ(kr_router_method_bit("Post", 4), KR_M_POST);
    ASSERT_EQ(kr_router_method_bit("PUT", 3), KR_M_PUT);
    ASSERT_EQ(kr_router_method_bit("delete", 6), KR_M_DELETE);
    ASSERT_EQ(kr_router_method_bit("PATCH", 5), KR_M_PATCH);
    ASSERT_EQ(kr_router_method_bit("options", 7), KR_M_OPTIONS);
    ASSERT_EQ(kr_router_method_bit("GETX", 3), KR_M_GET); /* only n bytes are read */
    ASSERT_EQ(kr_router_method_bit("GE", 2), 0);
    ASSERT_EQ(kr_router_method_bit("GETS", 4), 0);
    ASSERT_EQ(kr_router_method_bit("TRACE", 5), 0);
    ASSERT_EQ(kr_router_method_bit("", 0), 0);
}

TEST(allow_string)
{
    char buf[KR_ROUTER_ALLOW_MAX];

    kr_router_allow_string(KR_M_POST | KR_M_GET | KR_M_HEAD, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "GET, HEAD, POST");
    kr_router_allow_string(KR_M_ALL, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
    kr_router_allow_string(KR_M_OPTIONS | KR_M_DELETE, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "DELETE, OPTIONS");
    kr_router_allow_string(0, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "");

    /* A short buffer keeps whole names only and stays terminated. */
    char small[12];
    memset(small, 'x', sizeof(small));
    kr_router_allow_string(KR_M_GET | KR_M_HEAD | KR_M_POST, small, sizeof(small));
    ASSERT_STR_EQ(small, "GET, HEAD");
    char tiny[3] = "xx";
    kr_router_allow_string(KR_M_GET, tiny, sizeof(tiny));
    ASSERT_STR_EQ(tiny, "");
    kr_router_allow_string(KR_M_GET, tiny, 0); /* must not write */
    ASSERT_STR_EQ(tiny, "");
}

TEST(literal_routes)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/", &d1);
    add_ok(r, KR_M_GET, "/api/items", &d2);
    add_ok(r, KR_M_GET, "/api", &d3);

    ASSERT_ROUTE(r, KR_M_GET, "/", &d1, &m);
    ASSERT_STR_EQ(m.pattern, "/");
    ASSERT_EQ(m.nparams, 0);
    ASSERT_ROUTE(r, KR_M_GET, "/api/items", &d2, &m);
    ASSERT_STR_EQ(m.pattern, "/api/items");
    ASSERT_ROUTE(r, KR_M_GET, "/api", &d3, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/api/item", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/api/items/x", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/apiitems", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "api/items", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_NULL(m.data);
    ASSERT_NULL(m.pattern);
    ASSERT_EQ(m.allow, 0);

    /* The length is what counts, not a terminator. */
    ASSERT_EQ(kr_router_match(r, KR_M_GET, "/api/items/zzz", 10, &m), KR_ROUTE_FOUND);
    ASSERT(m.data == &d2);
    kr_router_free(r);
}

TEST(case_insensitive_literals)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/API/Items", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/api/items", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/API/ITEMS", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/Api/iTeMs", &d1, &m);
    ASSERT_STR_EQ(m.pattern, "/API/Items");
    /* Same shape in another case: a duplicate. */
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/api/ITEMS"), "duplicate route");
    kr_router_free(r);
}

TEST(params)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/users/{id}/posts/{postId}", &d1);
    const char *path = "/users/alice/posts/42";
    ASSERT_ROUTE(r, KR_M_GET, path, &d1, &m);
    ASSERT_EQ(m.nparams, 2);
    ASSERT_PARAM(&m, 0, "id", "alice");
    ASSERT_PARAM(&m, 1, "postId", "42");
    ASSERT_EQ(m.params[1].is_int, 0);
    /* Values point into the caller's path. */
    ASSERT(m.params[0].value == path + 7);
    ASSERT(m.params[1].value == path + 19);

    ASSERT_EQ(match(r, KR_M_GET, "/users/alice/posts", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/users/alice/posts/42/x", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(m.nparams, 0);
    kr_router_free(r);
}

TEST(literal_beats_param)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    /* Registration order must not matter. */
    add_ok(r, KR_M_GET, "/items/{id}", &d1);
    add_ok(r, KR_M_GET, "/items/new", &d2);
    add_ok(r, KR_M_GET, "/items/{*rest}", &d3);
    add_ok(r, KR_M_GET, "/items/{id:int}", &d4);

    ASSERT_ROUTE(r, KR_M_GET, "/items/new", &d2, &m);
    ASSERT_EQ(m.nparams, 0);
    ASSERT_ROUTE(r, KR_M_GET, "/items/NEW", &d2, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/items/newer", &d1, &m);
    ASSERT_PARAM(&m, 0, "id", "newer");
    ASSERT_ROUTE(r, KR_M_GET, "/items/12", &d4, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/items/a/b", &d3, &m);
    ASSERT_PARAM(&m, 0, "rest", "a/b");
    kr_router_free(r);
}

TEST(backtracking)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/a/{x}/c", &d1);
    add_ok(r, KR_M_GET, "/a/b/d", &d2);
    ASSERT_ROUTE(r, KR_M_GET, "/a/b/c", &d1, &m);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_PARAM(&m, 0, "x", "b");
    ASSERT_ROUTE(r, KR_M_GET, "/a/b/d", &d2, &m);
    ASSERT_EQ(m.nparams, 0);
    ASSERT_ROUTE(r, KR_M_GET, "/a/z/c", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/a/z/d", &m), KR_ROUTE_NOT_FOUND);

    /* Deeper: a constrained branch fails two levels down, the plain one wins, and the
     * parameter stack is unwound (one value, not stale ones). */
    add_ok(r, KR_M_GET, "/p/{n:int}/{m:int}/x", &d3);
    add_ok(r, KR_M_GET, "/p/{s}/{t}/y", &d4);
    add_ok(r, KR_M_GET, "/p/{*rest}", &d5);
    ASSERT_ROUTE(r, KR_M_GET, "/p/1/2/x", &d3, &m);
    ASSERT_EQ(m.params[0].int_value, 1);
    ASSERT_EQ(m.params[1].int_value, 2);
    ASSERT_ROUTE(r, KR_M_GET, "/p/1/2/y", &d4, &m);
    ASSERT_EQ(m.nparams, 2);
    ASSERT_PARAM(&m, 0, "s", "1");
    ASSERT_PARAM(&m, 1, "t", "2");
    ASSERT_EQ(m.params[0].is_int, 0);
    ASSERT_ROUTE(r, KR_M_GET, "/p/1/2/z", &d5, &m);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_PARAM(&m, 0, "rest", "1/2/z");
    kr_router_free(r);
}

TEST(int_constraint)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/n/{id:int}", &d1);
    add_ok(r, KR_M_GET, "/l/{id:long}", &d2);

    ASSERT_ROUTE(r, KR_M_GET, "/n/42", &d1, &m);
    ASSERT_EQ(m.params[0].is_int, 1);
    ASSERT_EQ(m.params[0].int_value, 42);
    ASSERT_ROUTE(r, KR_M_GET, "/n/-17", &d1, &m);
    ASSERT_EQ(m.params[0].int_value, -17);
    ASSERT_ROUTE(r, KR_M_GET, "/n/+8", &d1, &m);
    ASSERT_EQ(m.params[0].int_value, 8);
    /* int is 32-bit (ASP.NET Core's int), long is 64-bit. */
    ASSERT_ROUTE(r, KR_M_GET, "/n/2147483647", &d1, &m);
    ASSERT_EQ(m.params[0].int_value, INT32_MAX);
    ASSERT_ROUTE(r, KR_M_GET, "/n/-2147483648", &d1, &m);
    ASSERT_EQ(m.params[0].int_value, INT32_MIN);
    ASSERT_EQ(match(r, KR_M_GET, "/n/2147483648", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_ROUTE(r, KR_M_GET, "/l/9223372036854775807", &d2, &m);
    ASSERT(m.params[0].int_value == INT64_MAX);
    ASSERT_ROUTE(r, KR_M_GET, "/l/-9223372036854775808", &d2, &m);
    ASSERT(m.params[0].int_value == INT64_MIN);
    ASSERT_EQ(m.params[0].is_int, 1);

    ASSERT_EQ(match(r, KR_M_GET, "/n/abc", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/n/12a", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/n/-", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/n/1.5", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/l/9223372036854775808", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/l/-9223372036854775809", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/n/", &m), KR_ROUTE_NOT_FOUND);

    /* A non-numeric value falls through to a plain parameter. */
    add_ok(r, KR_M_GET, "/n/{name}", &d3);
    ASSERT_ROUTE(r, KR_M_GET, "/n/abc", &d3, &m);
    ASSERT_EQ(m.params[0].is_int, 0);
    ASSERT_PARAM(&m, 0, "name", "abc");
    ASSERT_ROUTE(r, KR_M_GET, "/n/5", &d1, &m);
    ASSERT_PARAM(&m, 0, "id", "5");
    kr_router_free(r);
}

TEST(other_constraints)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/bool/{v:bool}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/bool/true", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/bool/FALSE", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/bool/True", &d1, &m);
    ASSERT_EQ(m.params[0].is_int, 0);
    ASSERT_EQ(match(r, KR_M_GET, "/bool/yes", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/bool/1", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/bool/truex", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/alpha/{v:alpha}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/alpha/abcXYZ", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/alpha/abc1", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/alpha/a-b", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/guid/{v:guid}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/guid/0f8fad5b-d9cb-469f-a165-70867728950e", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/guid/0F8FAD5B-D9CB-469F-A165-70867728950E", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/guid/0f8fad5b-d9cb-469f-a165-70867728950", &m),
              KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/guid/0f8fad5b-d9cb-469f-a165-70867728950g", &m),
              KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/guid/0f8fad5bd-9cb-469f-a165-70867728950e", &m),
              KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/guid/0f8fad5bd9cb469fa16570867728950e", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/minlen/{v:minlength(3)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/minlen/abc", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/minlen/abcdef", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/minlen/ab", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/maxlen/{v:maxlength(3)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/maxlen/abc", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/maxlen/a", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/maxlen/abcd", &m), KR_ROUTE_NOT_FOUND);
    /* Lengths count characters: "héé" is 5 bytes but 3 code points. */
    ASSERT_ROUTE(r, KR_M_GET, "/maxlen/h\xc3\xa9\xc3\xa9", &d1, &m);

    add_ok(r, KR_M_GET, "/len/{v:length(4)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/len/abcd", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/len/abc", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/len/abcde", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/len2/{v:length(2,3)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/len2/ab", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/len2/abc", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/len2/a", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/len2/abcd", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/min/{v:min(10)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/min/10", &d1, &m);
    ASSERT_EQ(m.params[0].is_int, 1);
    ASSERT_EQ(m.params[0].int_value, 10);
    ASSERT_ROUTE(r, KR_M_GET, "/min/1000", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/min/9", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/min/ten", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/max/{v:max(-1)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/max/-1", &d1, &m);
    ASSERT_EQ(m.params[0].int_value, -1);
    ASSERT_EQ(match(r, KR_M_GET, "/max/0", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/max/x", &m), KR_ROUTE_NOT_FOUND);

    add_ok(r, KR_M_GET, "/range/{v:range(1, 10)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/range/1", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/range/10", &d1, &m);
    ASSERT_EQ(m.params[0].int_value, 10);
    ASSERT_EQ(match(r, KR_M_GET, "/range/0", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/range/11", &m), KR_ROUTE_NOT_FOUND);

    /* Chained constraints all apply. */
    add_ok(r, KR_M_GET, "/chain/{v:int:min(1)}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/chain/1", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/chain/0", &m), KR_ROUTE_NOT_FOUND);

    /* Constraint names are case-insensitive. */
    add_ok(r, KR_M_GET, "/upper/{v:INT}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/upper/3", &d1, &m);
    ASSERT_EQ(match(r, KR_M_GET, "/upper/x", &m), KR_ROUTE_NOT_FOUND);
    kr_router_free(r);
}

TEST(different_constraints_are_different_shapes)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/x/{id:int}", &d1);
    add_ok(r, KR_M_GET, "/x/{id:guid}", &d2);
    add_ok(r, KR_M_GET, "/x/{id:range(1,5)}", &d3);
    add_ok(r, KR_M_GET, "/x/{id:range(1,6)}", &d4);
    add_ok(r, KR_M_GET, "/x/{id}", &d5);
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/x/{other:int}"), "duplicate route");
    add_ok(r, KR_M_GET, "/x/{other:long}", &d6); /* long is its own shape now */
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/x/{other:range(1, 005)}"), "duplicate route");

    ASSERT_ROUTE(r, KR_M_GET, "/x/3", &d1, &m); /* equal rank: registration order */
    ASSERT_ROUTE(r, KR_M_GET, "/x/0f8fad5b-d9cb-469f-a165-70867728950e", &d2, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/x/abc", &d5, &m);
    kr_router_free(r);
}

TEST(catch_all)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/files/{*path}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/files/a", &d1, &m);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_PARAM(&m, 0, "path", "a");
    ASSERT_ROUTE(r, KR_M_GET, "/files/a/b/c.txt", &d1, &m);
    ASSERT_PARAM(&m, 0, "path", "a/b/c.txt");
    ASSERT_ROUTE(r, KR_M_GET, "/files", &d1, &m);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_PARAM(&m, 0, "path", "");
    ASSERT_ROUTE(r, KR_M_GET, "/files/", &d1, &m);
    ASSERT_PARAM(&m, 0, "path", "");
    ASSERT_ROUTE(r, KR_M_GET, "/files//x", &d1, &m);
    ASSERT_PARAM(&m, 0, "path", "/x");
    ASSERT_EQ(match(r, KR_M_GET, "/file", &m), KR_ROUTE_NOT_FOUND);

    /* {**name} behaves the same when matching. */
    add_ok(r, KR_M_GET, "/raw/{**rest}", &d2);
    ASSERT_ROUTE(r, KR_M_GET, "/raw/x/y", &d2, &m);
    ASSERT_PARAM(&m, 0, "rest", "x/y");

    /* A catch-all at the root takes everything the other routes do not. */
    add_ok(r, KR_M_GET, "/{*all}", &d3);
    ASSERT_ROUTE(r, KR_M_GET, "/", &d3, &m);
    ASSERT_PARAM(&m, 0, "all", "");
    ASSERT_ROUTE(r, KR_M_GET, "/other/thing", &d3, &m);
    ASSERT_PARAM(&m, 0, "all", "other/thing");
    ASSERT_ROUTE(r, KR_M_GET, "/files/z", &d1, &m);

    /* A constrained catch-all ranks before a plain one. */
    add_ok(r, KR_M_GET, "/c/{*long:minlength(4)}", &d4);
    add_ok(r, KR_M_GET, "/c/{*short}", &d5);
    ASSERT_ROUTE(r, KR_M_GET, "/c/a/bc", &d4, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/c/a/b", &d5, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/c", &d5, &m);
    kr_router_free(r);
}

TEST(optional_param)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/products/{id?}", &d1);
    ASSERT_ROUTE(r, KR_M_GET, "/products/7", &d1, &m);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_PARAM(&m, 0, "id", "7");
    ASSERT_ROUTE(r, KR_M_GET, "/products", &d1, &m);
    ASSERT_EQ(m.nparams, 0);
    ASSERT_STR_EQ(m.pattern, "/products/{id?}");
    ASSERT_ROUTE(r, KR_M_GET, "/products/", &d1, &m);
    ASSERT_EQ(m.nparams, 0);
    ASSERT_EQ(match(r, KR_M_GET, "/products/7/8", &m), KR_ROUTE_NOT_FOUND);

    /* The shape without the segment is taken too. */
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/products"), "duplicate route");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/products/{x}"), "duplicate route");
    add_ok(r, KR_M_POST, "/products", &d2);
    ASSERT_ROUTE(r, KR_M_POST, "/products", &d2, &m);

    /* Optional with a constraint; a previous parameter keeps its name. */
    add_ok(r, KR_M_GET, "/o/{a}/{b:int?}", &d3);
    ASSERT_ROUTE(r, KR_M_GET, "/o/x/5", &d3, &m);
    ASSERT_EQ(m.nparams, 2);
    ASSERT_PARAM(&m, 0, "a", "x");
    ASSERT_PARAM(&m, 1, "b", "5");
    ASSERT_EQ(m.params[1].int_value, 5);
    ASSERT_ROUTE(r, KR_M_GET, "/o/x", &d3, &m);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_PARAM(&m, 0, "a", "x");
    ASSERT_EQ(match(r, KR_M_GET, "/o/x/y", &m), KR_ROUTE_NOT_FOUND);

    /* Optional at the root. */
    add_ok(r, KR_M_PUT, "/{page?}", &d4);
    ASSERT_ROUTE(r, KR_M_PUT, "/", &d4, &m);
    ASSERT_EQ(m.nparams, 0);
    ASSERT_ROUTE(r, KR_M_PUT, "/home", &d4, &m);
    ASSERT_PARAM(&m, 0, "page", "home");
    kr_router_free(r);
}

TEST(trailing_slash)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/a/b", &d1);
    add_ok(r, KR_M_GET, "/c/d/", &d2); /* the pattern's slash is ignored too */
    add_ok(r, KR_M_GET, "/u/{id}", &d3);
    ASSERT_ROUTE(r, KR_M_GET, "/a/b", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/a/b/", &d1, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/c/d", &d2, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/c/d/", &d2, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/u/7/", &d3, &m);
    ASSERT_PARAM(&m, 0, "id", "7");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/b/"), "duplicate route");
    /* Only one slash is dropped. */
    ASSERT_EQ(match(r, KR_M_GET, "/a/b//", &m), KR_ROUTE_NOT_FOUND);
    kr_router_free(r);
}

TEST(empty_segments)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/a/{x}/b", &d1);
    add_ok(r, KR_M_GET, "/e/{x}", &d2);
    ASSERT_EQ(match(r, KR_M_GET, "/a//b", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/e//", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "//a/x/b", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_ROUTE(r, KR_M_GET, "/a/x/b", &d1, &m);
    kr_router_free(r);
}

TEST(method_not_allowed)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;
    char allow[KR_ROUTER_ALLOW_MAX];

    add_ok(r, KR_M_GET | KR_M_POST, "/things", &d1);
    add_ok(r, KR_M_DELETE, "/things/{id}", &d2);

    ASSERT_ROUTE(r, KR_M_POST, "/things", &d1, &m);
    ASSERT_EQ(match(r, KR_M_PUT, "/things", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_GET | KR_M_HEAD | KR_M_POST);
    ASSERT_NULL(m.data);
    ASSERT_EQ(m.nparams, 0);
    kr_router_allow_string(m.allow, allow, sizeof(allow));
    ASSERT_STR_EQ(allow, "GET, HEAD, POST");

    ASSERT_EQ(match(r, KR_M_GET, "/things/1", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_DELETE);
    kr_router_allow_string(m.allow, allow, sizeof(allow));
    ASSERT_STR_EQ(allow, "DELETE");

    /* Unknown verbs (bit 0) get 405 where the path exists, 404 elsewhere. */
    ASSERT_EQ(match(r, 0, "/things", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_GET | KR_M_HEAD | KR_M_POST);
    ASSERT_EQ(match(r, 0, "/nothing", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(m.allow, 0);
    kr_router_free(r);
}

TEST(method_not_allowed_across_shapes)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/items/{id:int}", &d1);
    add_ok(r, KR_M_POST, "/items/{name}", &d2);

    ASSERT_ROUTE(r, KR_M_GET, "/items/5", &d1, &m);
    ASSERT_EQ(m.params[0].is_int, 1);
    /* The preferred shape lacks POST, the plain one has it. */
    ASSERT_ROUTE(r, KR_M_POST, "/items/5", &d2, &m);
    ASSERT_PARAM(&m, 0, "name", "5");
    ASSERT_EQ(m.params[0].is_int, 0);
    ASSERT_EQ(match(r, KR_M_DELETE, "/items/5", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_GET | KR_M_HEAD | KR_M_POST);
    /* A non-numeric id only matches the plain shape. */
    ASSERT_EQ(match(r, KR_M_GET, "/items/x", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_POST);
    kr_router_free(r);
}

TEST(head_falls_back_to_get)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET, "/page", &d1);
    add_ok(r, KR_M_GET, "/both", &d2);
    add_ok(r, KR_M_HEAD, "/both", &d3); /* an explicit HEAD route is not a duplicate */
    add_ok(r, KR_M_POST, "/post", &d4);

    ASSERT_ROUTE(r, KR_M_HEAD, "/page", &d1, &m);
    ASSERT_STR_EQ(m.pattern, "/page");
    ASSERT_ROUTE(r, KR_M_HEAD, "/both", &d3, &m);
    ASSERT_ROUTE(r, KR_M_GET, "/both", &d2, &m);
    ASSERT_EQ(match(r, KR_M_HEAD, "/post", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_POST);

    /* A HEAD-only route does not answer GET. */
    add_ok(r, KR_M_HEAD, "/headonly", &d5);
    ASSERT_EQ(match(r, KR_M_GET, "/headonly", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_EQ(m.allow, KR_M_HEAD);
    kr_router_free(r);
}

TEST(duplicate_route)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    add_ok(r, KR_M_GET | KR_M_POST, "/u/{id}", &d1);
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/u/{id}"), "duplicate route");
    /* Parameter names are not part of the shape. */
    ASSERT_STR_EQ(add_err(r, KR_M_POST | KR_M_PUT, "/u/{other}"), "duplicate route");
    /* A refused route changes nothing: PUT is still free. */
    ASSERT_EQ(match(r, KR_M_PUT, "/u/1", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    add_ok(r, KR_M_PUT, "/u/{uid}", &d2);
    ASSERT_ROUTE(r, KR_M_PUT, "/u/1", &d2, &m);
    ASSERT_PARAM(&m, 0, "uid", "1");
    ASSERT_ROUTE(r, KR_M_GET, "/u/1", &d1, &m);
    ASSERT_PARAM(&m, 0, "id", "1");

    /* Catch-all and plain parameter are different shapes. */
    add_ok(r, KR_M_GET, "/u/{*rest}", &d3);
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/u/{**all}"), "duplicate route");

    /* err may be NULL. */
    ASSERT_EQ(kr_router_add(r, KR_M_GET, "/u/{id}", &d1, NULL), KR_EINVAL);
    kr_router_free(r);
}

TEST(bad_patterns)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;

    ASSERT_STR_EQ(add_err(r, KR_M_GET, ""), "route pattern must start with '/'");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "a/b"), "route pattern must start with '/'");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "{id}"), "route pattern must start with '/'");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id"), "unclosed '{' in route pattern");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id/b}"), "unclosed '{' in route pattern");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/id}"), "unmatched '}' in route pattern");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/x{id}"), "a route parameter must be a whole segment");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id}x"), "a route parameter must be a whole segment");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{a}{b}"), "a route parameter must be a whole segment");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/{*rest}/x"),
                  "a catch-all parameter must be the last segment");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/{id?}/x"),
                  "an optional parameter must be the last segment");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/{*rest?}"), "a catch-all parameter cannot be optional");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:foo}"), "unknown route constraint");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:regex(x)}"), "unknown route constraint");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id}/{ID}"), "duplicate route parameter name");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id}/{*id}"), "duplicate route parameter name");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{}"), "empty route parameter name");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{*}"), "empty route parameter name");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{:int}"), "empty route parameter name");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:}"), "empty route constraint");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id=5}"),
                  "route parameter default values are not supported");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{i d}"), "invalid character in route parameter");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a//b"), "empty segment in route pattern");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "//"), "empty segment in route pattern");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a?x=1"), "'?' and '#' are not allowed in a route pattern");

    /* Constraint arguments. */
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:min}"), "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:min()}"), "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:min(x)}"), "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:int(3)}"), "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:range(1)}"), "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:range(5,1)}"), "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:range(1,2,3)}"),
                  "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:minlength(-1)}"),
                  "invalid route constraint arguments");
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/a/{id:min(1}"), "unclosed '(' in route constraint");

    /* Methods. */
    ASSERT_STR_EQ(add_err(r, 0, "/ok"), "invalid route methods");
    ASSERT_STR_EQ(add_err(r, 1u << 7, "/ok"), "invalid route methods");

    /* Parameter count: KR_ROUTE_MAX_PARAMS is fine, one more is not. */
    char pat[512];
    size_t n = 0;
    for (int i = 0; i < KR_ROUTE_MAX_PARAMS; i++)
        n += (size_t)snprintf(pat + n, sizeof(pat) - n, "/{p%d}", i);
    add_ok(r, KR_M_GET, pat, &d1);
    snprintf(pat + n, sizeof(pat) - n, "/{p%d}", KR_ROUTE_MAX_PARAMS);
    ASSERT_STR_EQ(add_err(r, KR_M_GET, pat), "too many route parameters");

    /* None of the refused patterns left a route behind. */
    ASSERT_EQ(match(r, KR_M_GET, "/a/1", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/a/x1", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/ok", &m), KR_ROUTE_NOT_FOUND);
    kr_router_free(r);
}

TEST(max_params)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;
    char pat[512], path[512];
    size_t pn = 0, n = 0;

    for (int i = 0; i < KR_ROUTE_MAX_PARAMS; i++) {
        pn += (size_t)snprintf(pat + pn, sizeof(pat) - pn, "/{p%d:int}", i);
        n += (size_t)snprintf(path + n, sizeof(path) - n, "/%d", i * 10);
    }
    add_ok(r, KR_M_GET, pat, &d1);
    ASSERT_ROUTE(r, KR_M_GET, path, &d1, &m);
    ASSERT_EQ(m.nparams, KR_ROUTE_MAX_PARAMS);
    ASSERT_STR_EQ(m.params[KR_ROUTE_MAX_PARAMS - 1].name, "p15");
    ASSERT_EQ(m.params[KR_ROUTE_MAX_PARAMS - 1].int_value, 150);
    kr_router_free(r);
}

TEST(many_routes)
{
    kr_router_t *r = kr_router_new();
    kr_route_match_t m;
    static int data[1000];
    char buf[64];

    for (int i = 0; i < 1000; i++) {
        snprintf(buf, sizeof(buf), "/r%d/x/{id}", i);
        add_ok(r, KR_M_GET, buf, &data[i]);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(buf, sizeof(buf), "/R%d/X/item%d", i, i);
        ASSERT_ROUTE(r, KR_M_GET, buf, &data[i], &m);
        ASSERT_EQ(m.nparams, 1);
        snprintf(buf, sizeof(buf), "item%d", i);
        ASSERT_PARAM(&m, 0, "id", buf);
        snprintf(buf, sizeof(buf), "/r%d/x/{id}", i);
        ASSERT_STR_EQ(m.pattern, buf);
    }
    ASSERT_EQ(match(r, KR_M_GET, "/r1000/x/1", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/r5/y/1", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_GET, "/r5/x", &m), KR_ROUTE_NOT_FOUND);
    ASSERT_EQ(match(r, KR_M_POST, "/r999/x/1", &m), KR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_STR_EQ(add_err(r, KR_M_GET, "/r500/x/{other}"), "duplicate route");
    kr_router_free(r);
}

static void count_data(void *data, void *ud)
{
    int *counts = ud;
    if (data == &d1)
        counts[0]++;
    else if (data == &d2)
        counts[1]++;
    else if (data == &d3)
        counts[2]++;
    else
        counts[3]++;
}

TEST(foreach)
{
    kr_router_t *r = kr_router_new();
    int counts[4] = {0, 0, 0, 0};

    kr_router_foreach(r, count_data, counts);
    ASSERT_EQ(counts[0] + counts[1] + counts[2] + counts[3], 0);

    /* One call per successful add, whatever the method mask or optional segment. */
    add_ok(r, KR_M_GET | KR_M_POST | KR_M_PUT, "/a", &d1);
    add_ok(r, KR_M_GET, "/b/{x?}", &d2);
    add_ok(r, KR_M_GET, "/c", &d3);
    add_ok(r, KR_M_POST, "/c", &d3);
    add_err(r, KR_M_GET, "/a");      /* refused: not visited */
    add_err(r, KR_M_GET, "/bad/{x"); /* refused: not visited */
    kr_router_foreach(r, count_data, counts);
    ASSERT_EQ(counts[0], 1);
    ASSERT_EQ(counts[1], 1);
    ASSERT_EQ(counts[2], 2);
    ASSERT_EQ(counts[3], 0);
    kr_router_free(r);
}

TEST(free_null)
{
    kr_router_free(NULL);
}

KR_TEST_MAIN(KR_TEST_ENTRY(method_bits), KR_TEST_ENTRY(allow_string), KR_TEST_ENTRY(literal_routes),
             KR_TEST_ENTRY(case_insensitive_literals), KR_TEST_ENTRY(params),
             KR_TEST_ENTRY(literal_beats_param), KR_TEST_ENTRY(backtracking),
             KR_TEST_ENTRY(int_constraint), KR_TEST_ENTRY(other_constraints),
             KR_TEST_ENTRY(different_constraints_are_different_shapes), KR_TEST_ENTRY(catch_all),
             KR_TEST_ENTRY(optional_param), KR_TEST_ENTRY(trailing_slash),
             KR_TEST_ENTRY(empty_segments), KR_TEST_ENTRY(method_not_allowed),
             KR_TEST_ENTRY(method_not_allowed_across_shapes), KR_TEST_ENTRY(head_falls_back_to_get),
             KR_TEST_ENTRY(duplicate_route), KR_TEST_ENTRY(bad_patterns), KR_TEST_ENTRY(max_params),
             KR_TEST_ENTRY(many_routes), KR_TEST_ENTRY(foreach), KR_TEST_ENTRY(free_null))
