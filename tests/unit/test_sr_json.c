/* test_sr_json.c: unit tests for the SignalR JSON hub protocol codec (core/kr_sr_json.c). */
#include "kr_sr_json.h"

#include <stdlib.h>

#include "kr_test.h"

/* cJSON allocations are counted so every test can check the trees were all freed. */
static long cjson_live;

static void *count_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        cjson_live++;
    return p;
}

static void count_free(void *p)
{
    if (p)
        cjson_live--;
    free(p);
}

static void hooks(void)
{
    cJSON_Hooks h = {count_malloc, count_free};
    cJSON_InitHooks(&h);
}

/* Parses a C string that must be accepted. The text is copied into an exact-size heap block
 * so ASan sees any read past len. */
static void parse_ok(const char *json, kr_sr_msg_t *m)
{
    size_t len = strlen(json);
    char *copy = malloc(len ? len : 1);
    const char *err = "unset";
    int rc;
    memcpy(copy, json, len);
    rc = kr_sr_json_parse(copy, len, m, &err);
    free(copy);
    if (rc != 0)
        KR_TEST_FAIL("parsing %s: %d (%s)", json, rc, err ? err : "no message");
    ASSERT_NULL(err);
    ASSERT_NOT_NULL(m->_root);
}

/* Parses data[0..len) that must be rejected; returns the message. */
static const char *parse_err_n(const char *data, size_t len)
{
    kr_sr_msg_t m;
    const char *err = NULL;
    char *copy = malloc(len ? len : 1);
    int rc;
    memcpy(copy, data, len);
    rc = kr_sr_json_parse(copy, len, &m, &err);
    free(copy);
    if (rc != KR_EPROTO)
        KR_TEST_FAIL("parsing %.*s: expected KR_EPROTO, got %d", (int)len, data, rc);
    ASSERT_NOT_NULL(err);
    ASSERT_NULL(m._root);
    ASSERT_NULL(m.invocation_id);
    ASSERT_EQ(m.type, 0);
    kr_sr_msg_dispose(&m); /* safe after a failure */
    return err;
}

static const char *parse_err(const char *json)
{
    return parse_err_n(json, strlen(json));
}

#define ASSERT_ERR(json, want) ASSERT_STR_EQ(parse_err(json), (want))

/* ---- parsing: every message type ------------------------------------------------------ */

TEST(invocation)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok(
        "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Send\",\"arguments\":[\"bob\",\"hi\"]}",
        &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "0");
    ASSERT_STR_EQ(m.target, "Send");
    ASSERT(cJSON_IsArray(m.arguments));
    ASSERT_EQ(cJSON_GetArraySize(m.arguments), 2);
    ASSERT_STR_EQ(cJSON_GetArrayItem(m.arguments, 0)->valuestring, "bob");
    ASSERT_STR_EQ(cJSON_GetArrayItem(m.arguments, 1)->valuestring, "hi");
    ASSERT_NULL(m.stream_ids);
    ASSERT_NULL(m.item);
    ASSERT_NULL(m.result);
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);
    ASSERT_NULL(m._root);
    kr_sr_msg_dispose(&m); /* twice is harmless */
    ASSERT_EQ(cjson_live, 0);
}

TEST(invocation_without_id)
{
    kr_sr_msg_t m;
    hooks();
    /* The push example from the spec: send() has no invocationId. */
    parse_ok("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"bob\",\"hi\"]}", &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_NULL(m.invocation_id);
    ASSERT_STR_EQ(m.target, "ReceiveMessage");
    kr_sr_msg_dispose(&m);
    /* null and "" count as absent: nothing to answer. */
    parse_ok("{\"type\":1,\"invocationId\":null,\"target\":\"T\",\"arguments\":[]}", &m);
    ASSERT_NULL(m.invocation_id);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":1,\"invocationId\":\"\",\"target\":\"T\",\"arguments\":[]}", &m);
    ASSERT_NULL(m.invocation_id);
    ASSERT_EQ(cJSON_GetArraySize(m.arguments), 0);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(invocation_any_order_and_extras)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"arguments\":[1,{\"a\":[true,null]}],\"extra\":{\"x\":[1,2]},\"target\":\"Add\","
             "\"invocationId\":\"7\",\"headers\":{\"k\":\"v\",\"k2\":\"\"},\"type\":1}",
             &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "7");
    ASSERT_STR_EQ(m.target, "Add");
    ASSERT_EQ(cJSON_GetArraySize(m.arguments), 2);
    ASSERT(cJSON_IsObject(cJSON_GetArrayItem(m.arguments, 1)));
    kr_sr_msg_dispose(&m);
    /* Whitespace around and inside the object. */
    parse_ok(" \r\n\t{ \"type\" : 1 , \"target\" : \"T\" , \"arguments\" : [ ] } \n", &m);
    ASSERT_STR_EQ(m.target, "T");
    kr_sr_msg_dispose(&m);
    /* Empty headers object; integral type written as 1.0. */
    parse_ok("{\"type\":1.0,\"target\":\"T\",\"arguments\":[],\"headers\":{}}", &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(invocation_stream_ids)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":1,\"invocationId\":\"0\",\"target\":\"Sum\",\"arguments\":[],"
             "\"streamIds\":[\"1\",\"2\"]}",
             &m);
    ASSERT_NOT_NULL(m.stream_ids);
    ASSERT_EQ(m.nstream_ids, 2);
    ASSERT_STR_EQ(m.stream_ids[1], "2");
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":1,\"target\":\"Sum\",\"arguments\":[],\"streamIds\":null}", &m);
    ASSERT_NULL(m.stream_ids);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":1,\"target\":\"Sum\",\"arguments\":[],\"streamIds\":[]}", &m);
    ASSERT_NULL(m.stream_ids); /* an empty list is no list */
    ASSERT_EQ(m.nstream_ids, 0);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(stream_invocation)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":4,\"invocationId\":\"1\",\"target\":\"Counter\",\"arguments\":[10]}", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "1");
    ASSERT_STR_EQ(m.target, "Counter");
    ASSERT_EQ(cJSON_GetArrayItem(m.arguments, 0)->valuedouble, 10);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"arguments\":[],\"streamIds\":[\"3\"],\"target\":\"S\",\"type\":4,"
             "\"invocationId\":\"2\"}",
             &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_INVOCATION);
    ASSERT_EQ(m.nstream_ids, 1);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(stream_item)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":2,\"invocationId\":\"1\",\"item\":0}", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_ITEM);
    ASSERT_STR_EQ(m.invocation_id, "1");
    ASSERT(cJSON_IsNumber(m.item));
    ASSERT_EQ(m.item->valuedouble, 0);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"item\":null,\"type\":2,\"invocationId\":\"1\"}", &m);
    ASSERT_NOT_NULL(m.item);
    ASSERT(cJSON_IsNull(m.item));
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":2,\"invocationId\":\"1\",\"item\":{\"a\":[1]},\"headers\":{\"h\":\"v\"}}",
             &m);
    ASSERT(cJSON_IsObject(m.item));
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(completion)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":3,\"invocationId\":\"0\",\"result\":42}", &m);
    ASSERT_EQ(m.type, KR_SR_COMPLETION);
    ASSERT_STR_EQ(m.invocation_id, "0");
    ASSERT_NOT_NULL(m.result);
    ASSERT_EQ(m.result->valuedouble, 42);
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);

    parse_ok("{\"type\":3,\"invocationId\":\"0\",\"error\":\"boom\"}", &m);
    ASSERT_NULL(m.result);
    ASSERT_STR_EQ(m.error, "boom");
    kr_sr_msg_dispose(&m);

    /* Neither: the end of an upload stream. */
    parse_ok("{\"type\":3,\"invocationId\":\"1\"}", &m);
    ASSERT_NULL(m.result);
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);

    /* result null is present (a null node); error null is absent, so both may appear. */
    parse_ok("{\"type\":3,\"invocationId\":\"0\",\"result\":null}", &m);
    ASSERT_NOT_NULL(m.result);
    ASSERT(cJSON_IsNull(m.result));
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":3,\"invocationId\":\"0\",\"result\":[1],\"error\":null}", &m);
    ASSERT(cJSON_IsArray(m.result));
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(cancel_ping_close)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":5,\"invocationId\":\"3\"}", &m);
    ASSERT_EQ(m.type, KR_SR_CANCEL_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "3");
    kr_sr_msg_dispose(&m);

    parse_ok("{\"type\":6}", &m);
    ASSERT_EQ(m.type, KR_SR_PING);
    kr_sr_msg_dispose(&m);

    parse_ok("{\"type\":7}", &m);
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    ASSERT_NULL(m.error);
    ASSERT_EQ(m.allow_reconnect, 0);
    kr_sr_msg_dispose(&m);

    parse_ok("{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}",
             &m);
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    ASSERT_STR_EQ(m.error, "Connection closed with an error.");
    ASSERT_EQ(m.allow_reconnect, 1);
    kr_sr_msg_dispose(&m);

    parse_ok("{\"allowReconnect\":false,\"type\":7}", &m);
    ASSERT_EQ(m.allow_reconnect, 0);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(ack_sequence)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":8,\"sequenceId\":1394}", &m);
    ASSERT_EQ(m.type, KR_SR_ACK);
    ASSERT_EQ(m.sequence_id, 1394);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"sequenceId\":0,\"type\":9}", &m);
    ASSERT_EQ(m.type, KR_SR_SEQUENCE);
    ASSERT_EQ(m.sequence_id, 0);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":9,\"sequenceId\":9007199254740992}", &m); /* 2^53 */
    ASSERT_EQ(m.sequence_id, INT64_C(9007199254740992));
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":8,\"sequenceId\":2.0}", &m);
    ASSERT_EQ(m.sequence_id, 2);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

TEST(unknown_type)
{
    kr_sr_msg_t m;
    hooks();
    parse_ok("{\"type\":99,\"whatever\":[1,2,3],\"invocationId\":\"5\",\"target\":\"X\"}", &m);
    ASSERT_EQ(m.type, 99);
    ASSERT_NULL(m.invocation_id); /* only the type is filled in */
    ASSERT_NULL(m.target);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":0}", &m);
    ASSERT_EQ(m.type, 0);
    kr_sr_msg_dispose(&m);
    parse_ok("{\"type\":-3}", &m);
    ASSERT_EQ(m.type, -3);
    kr_sr_msg_dispose(&m);
    ASSERT_EQ(cjson_live, 0);
}

/* ---- parsing: errors ------------------------------------------------------------------- */

TEST(errors_not_json)
{
    hooks();
    ASSERT_ERR("", "message is not valid JSON");
    ASSERT_ERR("   ", "message is not valid JSON");
    ASSERT_ERR("{", "message is not valid JSON");
    ASSERT_ERR("{\"type\":1", "message is not valid JSON");
    ASSERT_ERR("{\"type\":6}x", "message is not valid JSON"); /* trailing garbage */
    ASSERT_ERR("{\"type\":6}{\"type\":6}", "message is not valid JSON");
    ASSERT_ERR("{'type':6}", "message is not valid JSON");
    ASSERT_ERR("{\"type\":6,}", "message is not valid JSON");
    ASSERT_STR_EQ(parse_err_n("{\"type\":6}\0", 11), "message is not valid JSON");
    ASSERT_STR_EQ(parse_err_n("{\"type\":6", 9), "message is not valid JSON");
    /* A record cut inside a string or a number (no NUL follows in memory). */
    ASSERT_STR_EQ(parse_err_n("{\"type\":6,\"a\":\"abc\"}", 17), "message is not valid JSON");
    ASSERT_STR_EQ(parse_err_n("{\"type\":6,\"a\":\"ab\\\"}", 18), "message is not valid JSON");
    ASSERT_STR_EQ(parse_err_n("{\"type\":123", 11), "message is not valid JSON");
    ASSERT_EQ(cjson_live, 0);
}

TEST(errors_not_object)
{
    hooks();
    ASSERT_ERR("[]", "message is not a JSON object");
    ASSERT_ERR("[{\"type\":6}]", "message is not a JSON object");
    ASSERT_ERR("6", "message is not a JSON object");
    ASSERT_ERR("\"type\"", "message is not a JSON object");
    ASSERT_ERR("null", "message is not a JSON object");
    ASSERT_ERR("true", "message is not a JSON object");
    ASSERT_EQ(cjson_live, 0);
}

TEST(errors_type)
{
    hooks();
    ASSERT_ERR("{}", "missing \"type\"");
    ASSERT_ERR("{\"Type\":1}", "missing \"type\""); /* names are case-sensitive */
    ASSERT_ERR("{\"type\":\"1\"}", "\"type\" is not an integer");
    ASSERT_ERR("{\"type\":null}", "\"type\" is not an integer");
    ASSERT_ERR("{\"type\":true}", "\"type\" is not an integer");
    ASSERT_ERR("{\"type\":1.5}", "\"type\" is not an integer");
    ASSERT_ERR("{\"type\":[1]}", "\"type\" is not an integer");
    ASSERT_ERR("{\"type\":1e10}", "\"type\" is not an integer");
    ASSERT_ERR("{\"type\":1e400}", "\"type\" is not an integer");
    ASSERT_EQ(cjson_live, 0);
}

TEST(errors_invocation)
{
    hooks();
    ASSERT_ERR("{\"type\":1,\"arguments\":[]}", "missing \"target\"");
    ASSERT_ERR("{\"type\":1,\"target\":null,\"arguments\":[]}", "missing \"target\"");
    ASSERT_ERR("{\"type\":1,\"target\":\"\",\"arguments\":[]}", "\"target\" is empty");
    ASSERT_ERR("{\"type\":1,\"target\":5,\"arguments\":[]}", "\"target\" is not a string");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\"}", "missing \"arguments\"");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":{}}", "\"arguments\" is not an array");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":null}", "\"arguments\" is not an array");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":\"a\"}",
               "\"arguments\" is not an array");
    ASSERT_ERR("{\"type\":1,\"invocationId\":1,\"target\":\"T\",\"arguments\":[]}",
               "\"invocationId\" is not a string");
    ASSERT_ERR("{\"type\":1,\"invocationId\":[\"1\"],\"target\":\"T\",\"arguments\":[]}",
               "\"invocationId\" is not a string");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":[],\"streamIds\":[1]}",
               "\"streamIds\" is not an array of strings");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":[],\"streamIds\":\"1\"}",
               "\"streamIds\" is not an array of strings");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":[],\"headers\":{\"a\":1}}",
               "\"headers\" is not an object of strings");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":[],\"headers\":[]}",
               "\"headers\" is not an object of strings");
    ASSERT_ERR("{\"type\":1,\"target\":\"T\",\"arguments\":[],\"headers\":null}",
               "\"headers\" is not an object of strings");
    /* StreamInvocation needs an id as well. */
    ASSERT_ERR("{\"type\":4,\"target\":\"T\",\"arguments\":[]}", "missing \"invocationId\"");
    ASSERT_ERR("{\"type\":4,\"invocationId\":\"\",\"target\":\"T\",\"arguments\":[]}",
               "\"invocationId\" is empty");
    ASSERT_ERR("{\"type\":4,\"invocationId\":\"1\",\"arguments\":[]}", "missing \"target\"");
    ASSERT_ERR("{\"type\":4,\"invocationId\":\"1\",\"target\":\"T\"}", "missing \"arguments\"");
    ASSERT_ERR("{\"type\":4,\"invocationId\":\"1\",\"target\":\"T\",\"arguments\":1}",
               "\"arguments\" is not an array");
    ASSERT_EQ(cjson_live, 0);
}

TEST(errors_other_types)
{
    hooks();
    ASSERT_ERR("{\"type\":2,\"item\":1}", "missing \"invocationId\"");
    ASSERT_ERR("{\"type\":2,\"invocationId\":\"1\"}", "missing \"item\"");
    ASSERT_ERR("{\"type\":2,\"invocationId\":\"1\",\"Item\":1}", "missing \"item\"");
    ASSERT_ERR("{\"type\":3}", "missing \"invocationId\"");
    ASSERT_ERR("{\"type\":3,\"invocationId\":null,\"result\":1}", "missing \"invocationId\"");
    ASSERT_ERR("{\"type\":3,\"invocationId\":\"0\",\"result\":1,\"error\":\"e\"}",
               "completion has both \"result\" and \"error\"");
    ASSERT_ERR("{\"type\":3,\"invocationId\":\"0\",\"result\":null,\"error\":\"e\"}",
               "completion has both \"result\" and \"error\"");
    ASSERT_ERR("{\"type\":3,\"invocationId\":\"0\",\"error\":5}", "\"error\" is not a string");
    ASSERT_ERR("{\"type\":5}", "missing \"invocationId\"");
    ASSERT_ERR("{\"type\":5,\"invocationId\":7}", "\"invocationId\" is not a string");
    ASSERT_ERR("{\"type\":7,\"error\":{}}", "\"error\" is not a string");
    ASSERT_ERR("{\"type\":7,\"allowReconnect\":1}", "\"allowReconnect\" is not a boolean");
    ASSERT_ERR("{\"type\":7,\"allowReconnect\":\"true\"}", "\"allowReconnect\" is not a boolean");
    ASSERT_ERR("{\"type\":8}", "missing \"sequenceId\"");
    ASSERT_ERR("{\"type\":9}", "missing \"sequenceId\"");
    ASSERT_ERR("{\"type\":8,\"sequenceId\":\"1\"}", "\"sequenceId\" is not an integer");
    ASSERT_ERR("{\"type\":8,\"sequenceId\":null}", "\"sequenceId\" is not an integer");
    ASSERT_ERR("{\"type\":9,\"sequenceId\":1.5}", "\"sequenceId\" is not an integer");
    ASSERT_ERR("{\"type\":9,\"sequenceId\":1e400}", "\"sequenceId\" is not an integer");
    ASSERT_ERR("{\"type\":9,\"sequenceId\":9007199254740994}", "\"sequenceId\" is out of range");
    ASSERT_ERR("{\"type\":9,\"sequenceId\":1e300}", "\"sequenceId\" is out of range");
    /* Known properties are checked on every type (as .NET's reader does). */
    ASSERT_ERR("{\"type\":6,\"invocationId\":1}", "\"invocationId\" is not a string");
    ASSERT_ERR("{\"type\":99,\"headers\":5}", "\"headers\" is not an object of strings");
    ASSERT_EQ(cjson_live, 0);
}

/* ---- record splitting ------------------------------------------------------------------ */

TEST(records)
{
    static const char data[] = "{\"type\":6}\x1e{\"type\":7}\x1e\x1e\x1e{\"type\"";
    size_t len = sizeof(data) - 1, off = 0, n, rec = 99;
    kr_sr_msg_t m;
    const char *err;

    hooks();
    n = kr_sr_json_next_record(data + off, len - off, &rec);
    ASSERT_EQ(n, 11);
    ASSERT_EQ(rec, 10);
    ASSERT_OK(kr_sr_json_parse(data + off, rec, &m, &err));
    ASSERT_EQ(m.type, KR_SR_PING);
    kr_sr_msg_dispose(&m);
    off += n;

    n = kr_sr_json_next_record(data + off, len - off, &rec);
    ASSERT_EQ(n, 11);
    ASSERT_EQ(rec, 10);
    ASSERT_OK(kr_sr_json_parse(data + off, rec, &m, &err));
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    kr_sr_msg_dispose(&m);
    off += n;

    /* Two empty records. */
    n = kr_sr_json_next_record(data + off, len - off, &rec);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(rec, 0);
    off += n;
    n = kr_sr_json_next_record(data + off, len - off, &rec);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(rec, 0);
    off += n;

    /* An incomplete trailing record: nothing to consume, rec_len untouched. */
    rec = 12345;
    ASSERT_EQ(kr_sr_json_next_record(data + off, len - off, &rec), 0);
    ASSERT_EQ(rec, 12345);
    ASSERT_EQ(len - off, 7);

    ASSERT_EQ(kr_sr_json_next_record("", 0, &rec), 0);
    ASSERT_EQ(kr_sr_json_next_record(NULL, 0, &rec), 0);
    ASSERT_EQ(kr_sr_json_next_record("\x1e", 1, &rec), 1);
    ASSERT_EQ(rec, 0);
    /* Only len bytes are searched. */
    ASSERT_EQ(kr_sr_json_next_record("ab\x1e", 2, &rec), 0);
    ASSERT_EQ(cjson_live, 0);
}

/* ---- handshake ------------------------------------------------------------------------- */

static const char *hs_err(const char *json)
{
    char proto[32];
    int version = -1;
    const char *err = NULL;
    ASSERT_EQ(kr_sr_handshake_parse(json, strlen(json), proto, sizeof(proto), &version, &err),
              KR_EPROTO);
    ASSERT_NOT_NULL(err);
    return err;
}

TEST(handshake)
{
    char proto[32];
    int version = -1;
    const char *err = "unset";

    hooks();
    static const char v1[] = "{\"protocol\":\"json\",\"version\":1}";
    ASSERT_OK(kr_sr_handshake_parse(v1, sizeof(v1) - 1, proto, sizeof(proto), &version, &err));
    ASSERT_STR_EQ(proto, "json");
    ASSERT_EQ(version, 1);
    ASSERT_NULL(err);

    /* Version 2 (stateful reconnect), any order, unknown properties. */
    static const char v2[] =
        "{\"version\":2,\"x\":{\"y\":[]},\"protocol\":\"messagepack\",\"z\":1}";
    ASSERT_OK(kr_sr_handshake_parse(v2, sizeof(v2) - 1, proto, sizeof(proto), &version, &err));
    ASSERT_STR_EQ(proto, "messagepack");
    ASSERT_EQ(version, 2);

    /* Checking the name is the caller's job; so is the version. */
    static const char odd[] = " {\"protocol\":\"\",\"version\":0} ";
    ASSERT_OK(kr_sr_handshake_parse(odd, sizeof(odd) - 1, proto, sizeof(proto), &version, &err));
    ASSERT_STR_EQ(proto, "");
    ASSERT_EQ(version, 0);

    /* Truncated to the buffer. */
    static const char lng[] = "{\"protocol\":\"messagepack\",\"version\":1}";
    char small[5];
    ASSERT_OK(kr_sr_handshake_parse(lng, sizeof(lng) - 1, small, sizeof(small), &version, &err));
    ASSERT_STR_EQ(small, "mess");

    ASSERT_STR_EQ(hs_err(""), "handshake is not valid JSON");
    ASSERT_STR_EQ(hs_err("{\"protocol\":\"json\",\"version\":1"), "handshake is not valid JSON");
    ASSERT_STR_EQ(hs_err("{\"protocol\":\"json\",\"version\":1}}"), "handshake is not valid JSON");
    ASSERT_STR_EQ(hs_err("hello"), "handshake is not valid JSON");
    ASSERT_STR_EQ(hs_err("[\"json\",1]"), "handshake is not a JSON object");
    ASSERT_STR_EQ(hs_err("{\"version\":1}"), "missing \"protocol\"");
    ASSERT_STR_EQ(hs_err("{\"protocol\":null,\"version\":1}"), "missing \"protocol\"");
    ASSERT_STR_EQ(hs_err("{\"protocol\":1,\"version\":1}"), "\"protocol\" is not a string");
    ASSERT_STR_EQ(hs_err("{\"protocol\":\"json\"}"), "missing \"version\"");
    ASSERT_STR_EQ(hs_err("{\"protocol\":\"json\",\"version\":\"1\"}"),
                  "\"version\" is not an integer");
    ASSERT_STR_EQ(hs_err("{\"protocol\":\"json\",\"version\":1.5}"),
                  "\"version\" is not an integer");
    ASSERT_STR_EQ(hs_err("{\"protocol\":\"json\",\"version\":1e20}"),
                  "\"version\" is not an integer");
    ASSERT_EQ(cjson_live, 0);
}

/* ---- encoders -------------------------------------------------------------------------- */

#define ASSERT_SB(sb, lit) ASSERT_MEM_EQ(kr_sbuf_data(sb), kr_sbuf_len(sb), (lit), sizeof(lit) - 1)

TEST(write_handshake_ping_close)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_sr_json_write_handshake_ok(&sb);
    ASSERT_SB(&sb, "{}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_handshake_error(&sb, "The protocol 'xml' is not supported.");
    ASSERT_SB(&sb, "{\"error\":\"The protocol 'xml' is not supported.\"}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_ping(&sb);
    ASSERT_SB(&sb, "{\"type\":6}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_close(&sb, NULL, 0);
    ASSERT_SB(&sb, "{\"type\":7}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_close(&sb, "x", 1);
    ASSERT_SB(&sb, "{\"type\":7,\"error\":\"x\",\"allowReconnect\":true}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_close(&sb, "Connection closed with an error.", 0);
    ASSERT_SB(&sb, "{\"type\":7,\"error\":\"Connection closed with an error.\"}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_close(&sb, NULL, 1);
    ASSERT_SB(&sb, "{\"type\":7,\"allowReconnect\":true}\x1e");
    kr_sbuf_dispose(&sb);
}

TEST(write_completion)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_sr_json_write_completion(&sb, "0", "42", 2, NULL);
    ASSERT_SB(&sb, "{\"type\":3,\"invocationId\":\"0\",\"result\":42}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion(&sb, "0", "{\"a\":[1,2]}xyz", 11, NULL); /* only result_len */
    ASSERT_SB(&sb, "{\"type\":3,\"invocationId\":\"0\",\"result\":{\"a\":[1,2]}}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion(&sb, "0", NULL, 0, NULL);
    ASSERT_SB(&sb, "{\"type\":3,\"invocationId\":\"0\",\"result\":null}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion(&sb, "12", "42", 2, "Unknown hub method 'Foo'");
    ASSERT_SB(&sb,
              "{\"type\":3,\"invocationId\":\"12\",\"error\":\"Unknown hub method 'Foo'\"}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion_void(&sb, "x");
    ASSERT_SB(&sb, "{\"type\":3,\"invocationId\":\"x\",\"result\":null}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion_empty(&sb, "1");
    ASSERT_SB(&sb, "{\"type\":3,\"invocationId\":\"1\"}\x1e");
    kr_sbuf_dispose(&sb);
}

TEST(write_invocation_and_items)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_sr_json_write_invocation_head(&sb, NULL, "ReceiveMessage");
    kr_sbuf_puts(&sb, "[\"a\",1]");
    kr_sr_json_write_tail(&sb);
    ASSERT_SB(&sb, "{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"a\",1]}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_invocation_head(&sb, "s1", "GetName");
    kr_sbuf_puts(&sb, "[]");
    kr_sr_json_write_tail(&sb);
    ASSERT_SB(&sb,
              "{\"type\":1,\"invocationId\":\"s1\",\"target\":\"GetName\",\"arguments\":[]}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_invocation_head(&sb, "", "T"); /* an empty id is no id */
    kr_sbuf_puts(&sb, "[]");
    kr_sr_json_write_tail(&sb);
    ASSERT_SB(&sb, "{\"type\":1,\"target\":\"T\",\"arguments\":[]}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_stream_item_head(&sb, "1");
    kr_sbuf_puts(&sb, "0");
    kr_sr_json_write_tail(&sb);
    ASSERT_SB(&sb, "{\"type\":2,\"invocationId\":\"1\",\"item\":0}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_ack(&sb, 1394);
    ASSERT_SB(&sb, "{\"type\":8,\"sequenceId\":1394}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_sequence(&sb, 1);
    ASSERT_SB(&sb, "{\"type\":9,\"sequenceId\":1}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_sequence(&sb, INT64_C(9007199254740992));
    ASSERT_SB(&sb, "{\"type\":9,\"sequenceId\":9007199254740992}\x1e");
    kr_sbuf_dispose(&sb);
}

/* Strings are escaped and made valid UTF-8. */
TEST(write_escapes)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16);
    kr_sr_json_write_close(&sb, "a\"b\\c\n\x1e\xff", 0);
    ASSERT_SB(&sb, "{\"type\":7,\"error\":\"a\\\"b\\\\c\\n\\u001e\\ufffd\"}\x1e");
    kr_sbuf_reset(&sb);
    kr_sr_json_write_invocation_head(&sb, "i\"d", "t\xc3\xa9");
    kr_sbuf_puts(&sb, "[]");
    kr_sr_json_write_tail(&sb);
    ASSERT_SB(&sb, "{\"type\":1,\"invocationId\":\"i\\\"d\",\"target\":\"t\xc3\xa9\","
                   "\"arguments\":[]}\x1e");
    kr_sbuf_dispose(&sb);
}

/* ---- round trips ----------------------------------------------------------------------- */

/* Takes the single record out of sb (checking the separator) and parses it. */
static void parse_sb(const kr_sbuf_t *sb, kr_sr_msg_t *m)
{
    size_t rec = 0;
    const char *err = NULL;
    ASSERT_EQ(kr_sr_json_next_record(kr_sbuf_data(sb), kr_sbuf_len(sb), &rec), kr_sbuf_len(sb));
    if (kr_sr_json_parse(kr_sbuf_data(sb), rec, m, &err) != 0)
        KR_TEST_FAIL("parsing %.*s: %s", (int)rec, kr_sbuf_data(sb), err);
}

TEST(round_trip)
{
    kr_sbuf_t sb;
    kr_sr_msg_t m;

    hooks();
    kr_sbuf_init(&sb, 16);

    kr_sr_json_write_invocation_head(&sb, "17", "Send \"x\"\n\xe2\x82\xac");
    kr_sbuf_puts(&sb, "[\"a\",1,null]");
    kr_sr_json_write_tail(&sb);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "17");
    ASSERT_STR_EQ(m.target, "Send \"x\"\n\xe2\x82\xac");
    ASSERT_EQ(cJSON_GetArraySize(m.arguments), 3);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_invocation_head(&sb, NULL, "Push");
    kr_sbuf_puts(&sb, "[]");
    kr_sr_json_write_tail(&sb);
    parse_sb(&sb, &m);
    ASSERT_NULL(m.invocation_id);
    ASSERT_STR_EQ(m.target, "Push");
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_stream_item_head(&sb, "3");
    kr_sbuf_puts(&sb, "{\"n\":5}");
    kr_sr_json_write_tail(&sb);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_ITEM);
    ASSERT_STR_EQ(m.invocation_id, "3");
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(m.item, "n")->valuedouble, 5);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion(&sb, "0", "[true]", 6, NULL);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_COMPLETION);
    ASSERT_STR_EQ(m.invocation_id, "0");
    ASSERT(cJSON_IsArray(m.result));
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion(&sb, "0", NULL, 0, "An unexpected error occurred.");
    parse_sb(&sb, &m);
    ASSERT_NULL(m.result);
    ASSERT_STR_EQ(m.error, "An unexpected error occurred.");
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion_void(&sb, "4");
    parse_sb(&sb, &m);
    ASSERT(cJSON_IsNull(m.result));
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_completion_empty(&sb, "4");
    parse_sb(&sb, &m);
    ASSERT_NULL(m.result);
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_ping(&sb);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_PING);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_close(&sb, "bye", 1);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    ASSERT_STR_EQ(m.error, "bye");
    ASSERT_EQ(m.allow_reconnect, 1);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_ack(&sb, 77);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_ACK);
    ASSERT_EQ(m.sequence_id, 77);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_json_write_sequence(&sb, 78);
    parse_sb(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_SEQUENCE);
    ASSERT_EQ(m.sequence_id, 78);
    kr_sr_msg_dispose(&m);

    /* Several records in one buffer, as a server sends them in one frame. */
    kr_sbuf_reset(&sb);
    kr_sr_json_write_handshake_ok(&sb);
    kr_sr_json_write_ping(&sb);
    kr_sr_json_write_close(&sb, NULL, 0);
    {
        const char *p = kr_sbuf_data(&sb);
        size_t left = kr_sbuf_len(&sb), rec, n;
        const char *err;
        int types[3], count = 0;
        while ((n = kr_sr_json_next_record(p, left, &rec)) > 0) {
            ASSERT(count < 3);
            if (count == 0) {
                ASSERT_EQ(rec, 2); /* {} is not a hub message */
                ASSERT_STR_EQ(parse_err_n(p, rec), "missing \"type\"");
                types[count++] = 0;
            } else {
                ASSERT_OK(kr_sr_json_parse(p, rec, &m, &err));
                types[count++] = m.type;
                kr_sr_msg_dispose(&m);
            }
            p += n;
            left -= n;
        }
        ASSERT_EQ(left, 0);
        ASSERT_EQ(count, 3);
        ASSERT_EQ(types[1], KR_SR_PING);
        ASSERT_EQ(types[2], KR_SR_CLOSE);
    }

    /* The handshake error reads back as a handshake-shaped object with an error. */
    kr_sbuf_reset(&sb);
    kr_sr_json_write_handshake_error(&sb, "Handshake was canceled.");
    {
        size_t rec;
        cJSON *v;
        ASSERT_EQ(kr_sr_json_next_record(kr_sbuf_data(&sb), kr_sbuf_len(&sb), &rec),
                  kr_sbuf_len(&sb));
        v = cJSON_ParseWithLength(kr_sbuf_data(&sb), rec);
        ASSERT_NOT_NULL(v);
        ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(v, "error")->valuestring,
                      "Handshake was canceled.");
        cJSON_Delete(v);
    }

    kr_sbuf_dispose(&sb);
    ASSERT_EQ(cjson_live, 0);
}

KR_TEST_MAIN(KR_TEST_ENTRY(invocation), KR_TEST_ENTRY(invocation_without_id),
             KR_TEST_ENTRY(invocation_any_order_and_extras), KR_TEST_ENTRY(invocation_stream_ids),
             KR_TEST_ENTRY(stream_invocation), KR_TEST_ENTRY(stream_item),
             KR_TEST_ENTRY(completion), KR_TEST_ENTRY(cancel_ping_close),
             KR_TEST_ENTRY(ack_sequence), KR_TEST_ENTRY(unknown_type),
             KR_TEST_ENTRY(errors_not_json), KR_TEST_ENTRY(errors_not_object),
             KR_TEST_ENTRY(errors_type), KR_TEST_ENTRY(errors_invocation),
             KR_TEST_ENTRY(errors_other_types), KR_TEST_ENTRY(records), KR_TEST_ENTRY(handshake),
             KR_TEST_ENTRY(write_handshake_ping_close), KR_TEST_ENTRY(write_completion),
             KR_TEST_ENTRY(write_invocation_and_items), KR_TEST_ENTRY(write_escapes),
             KR_TEST_ENTRY(round_trip))
