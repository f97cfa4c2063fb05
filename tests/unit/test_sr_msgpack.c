/* test_sr_msgpack.c: unit tests for the SignalR MessagePack hub protocol codec
 * (core/kr_sr_msgpack.c).
 *
 * Input is written as hex. The "JS" records were produced by the real client's encoder
 * (@microsoft/signalr-protocol-msgpack 10.0.11 with @msgpack/msgpack, MessagePackHubProtocol
 * .writeMessage), the ".NET" ones by hand from the layouts .NET writes (docs/signalr-protocol.md
 * section 5). Every parse reads from an exact-size heap copy that is freed before the message
 * is inspected, so ASan catches a read past the input or a message that still points into it.
 */
#include "kr_sr_msgpack.h"

#include <msgpack.h>
#include <stdlib.h>

#include "kr_test.h"
#include "unhex.h"

/* ---- helpers --------------------------------------------------------------------------------- */

/* unhex: unhex.h */

static char *to_hex(const char *p, size_t len)
{
    static char out[8192];
    ASSERT(len * 2 < sizeof(out));
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", (uint8_t)p[i]);
    out[2 * len] = '\0';
    return out;
}

#define ASSERT_HEX(sb, hex)                                                                        \
    do {                                                                                           \
        size_t want_len_;                                                                          \
        char *want_ = unhex((hex), &want_len_);                                                    \
        if (kr_sbuf_len(sb) != want_len_ || memcmp(kr_sbuf_data(sb), want_, want_len_) != 0)       \
            KR_TEST_FAIL("wrote %s, want %s", to_hex(kr_sbuf_data(sb), kr_sbuf_len(sb)), (hex));   \
        free(want_);                                                                               \
    } while (0)

/* Parses a body (no prefix) that must be accepted. */
static void body_ok(const char *hex, kr_sr_msg_t *m)
{
    size_t len;
    char *body = unhex(hex, &len);
    const char *err = "unset";
    int rc = kr_sr_mp_parse(body, len, m, &err);
    memset(body, 0xee, len); /* the message must not point into the input */
    free(body);
    if (rc != 0)
        KR_TEST_FAIL("parsing %s: %d (%s)", hex, rc, err ? err : "no message");
    ASSERT_NULL(err);
}

/* Parses one framed record (VarInt prefix + body) that must be accepted. */
static void record_ok(const char *hex, kr_sr_msg_t *m)
{
    size_t len, off = 0, blen = 0;
    char *rec = unhex(hex, &len);
    ASSERT_EQ(kr_sr_mp_next_record(rec, len, &off, &blen), (long)len);
    char *body = malloc(blen ? blen : 1);
    memcpy(body, rec + off, blen);
    free(rec);
    const char *err = "unset";
    int rc = kr_sr_mp_parse(body, blen, m, &err);
    free(body);
    if (rc != 0)
        KR_TEST_FAIL("parsing %s: %d (%s)", hex, rc, err ? err : "no message");
    ASSERT_NULL(err);
    ASSERT_EQ(m->protocol, KR_SR_PROTO_MSGPACK);
    ASSERT_NULL(m->_strings);
}

/* Parses a body that must be rejected; returns the message. */
static const char *body_err(const char *hex)
{
    size_t len;
    char *body = unhex(hex, &len);
    kr_sr_msg_t m;
    const char *err = NULL;
    int rc = kr_sr_mp_parse(body, len, &m, &err);
    free(body);
    if (rc != KR_EPROTO)
        KR_TEST_FAIL("parsing %s: expected KR_EPROTO, got %d", hex, rc);
    ASSERT_NOT_NULL(err);
    ASSERT_EQ(m.type, 0);
    ASSERT_NULL(m._zone);
    ASSERT_NULL(m.invocation_id);
    kr_sr_msg_dispose(&m); /* safe after a failure */
    return err;
}

#define ASSERT_ERR(hex, want) ASSERT_STR_EQ(body_err(hex), (want))

/* Prescan of hex with a depth limit: NULL when accepted, else the message. */
static const char *prescan(const char *hex, int max_depth)
{
    size_t len;
    char *body = unhex(hex, &len);
    const char *err = "unset";
    int rc = kr_sr_mp_prescan(body, len, max_depth, &err);
    free(body);
    if (rc == 0) {
        ASSERT_NULL(err);
        return NULL;
    }
    ASSERT_EQ(rc, KR_EPROTO);
    ASSERT_NOT_NULL(err);
    return err;
}

static int str_is(const msgpack_object *o, const char *s)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* ---- framing --------------------------------------------------------------------------------- */

static long next(const char *hex, size_t *off, size_t *blen)
{
    size_t len;
    char *data = unhex(hex, &len);
    long n = kr_sr_mp_next_record(data, len, off, blen);
    free(data);
    return n;
}

TEST(framing)
{
    size_t off = 99, blen = 99;
    char big[16384 + 3];

    ASSERT_EQ(next("", &off, &blen), 0);
    ASSERT_EQ(next("80", &off, &blen), 0); /* prefix incomplete: nothing reported */
    ASSERT_EQ(off, 99);
    ASSERT_EQ(blen, 99);
    /* body incomplete: the declared length is reported, so a caller can refuse it early */
    ASSERT_EQ(next("ff ff ff ff 07", &off, &blen), 0);
    ASSERT_EQ(off, 5);
    ASSERT_EQ(blen, 0x7fffffff);
    ASSERT_EQ(next("02 91", &off, &blen), 0);
    ASSERT_EQ(off, 1);
    ASSERT_EQ(blen, 2);
    ASSERT_EQ(next("02 91 06", &off, &blen), 3);
    ASSERT_EQ(off, 1);
    ASSERT_EQ(blen, 2);
    /* Two records: only the first is reported. */
    ASSERT_EQ(next("02 91 06 03 92 08 01", &off, &blen), 3);
    /* A zero-length body is a record. */
    ASSERT_EQ(next("00 02", &off, &blen), 1);
    ASSERT_EQ(blen, 0);
    /* An overlong prefix for 0 (JS reads it too). */
    ASSERT_EQ(next("80 00", &off, &blen), 2);
    ASSERT_EQ(off, 2);
    ASSERT_EQ(blen, 0);

    /* 128 = 80 01, 16383 = ff 7f (the digest's examples). */
    memset(big, 0xc0, sizeof(big));
    big[0] = (char)0x80;
    big[1] = 0x01;
    ASSERT_EQ(kr_sr_mp_next_record(big, 2 + 127, &off, &blen), 0);
    ASSERT_EQ(kr_sr_mp_next_record(big, 2 + 128, &off, &blen), 130);
    ASSERT_EQ(off, 2);
    ASSERT_EQ(blen, 128);
    big[0] = (char)0xff;
    big[1] = 0x7f;
    ASSERT_EQ(kr_sr_mp_next_record(big, 2 + 16383, &off, &blen), 2 + 16383);
    ASSERT_EQ(blen, 16383);
    big[0] = (char)0x80;
    big[1] = (char)0x80;
    big[2] = 0x01;
    ASSERT_EQ(kr_sr_mp_next_record(big, sizeof(big), &off, &blen), 3 + 16384);

    /* Prefix bytes still to come. */
    ASSERT_EQ(next("80", &off, &blen), 0);
    ASSERT_EQ(next("ff ff ff ff", &off, &blen), 0);
    /* 5 bytes: the 5th at most 7, so at most 2^31-1 (then the body is still missing). */
    ASSERT_EQ(next("ff ff ff ff 07", &off, &blen), 0);
    ASSERT_EQ(next("80 80 80 80 00", &off, &blen), 5);
    ASSERT_EQ(off, 5);
    ASSERT_EQ(next("ff ff ff ff 08", &off, &blen), -1);
    ASSERT_EQ(next("80 80 80 80 08", &off, &blen), -1);
    ASSERT_EQ(next("ff ff ff ff 87 00", &off, &blen), -1); /* a 6th byte announced */
    ASSERT_EQ(next("ff ff ff ff ff", &off, &blen), -1);
}

/* ---- prescan --------------------------------------------------------------------------------- */

TEST(prescan_accepts_every_type)
{
    /* nil false true fixint -fixint u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 */
    ASSERT_NULL(prescan("9f c0 c2 c3 7f e0 cc ff cd ffff ce ffffffff cf ffffffffffffffff d0 80 "
                        "d1 8000 d2 80000000 d3 8000000000000000 ca 3fc00000 cb 3ff8000000000000",
                        8));
    /* fixstr str8 str16 str32 bin8 bin16 bin32 (empty and not) */
    ASSERT_NULL(prescan("98 a0 a3 616263 d9 01 61 da 0000 db 00000001 62 c4 00 c5 0001 63 "
                        "c6 00000000",
                        8));
    /* fixext 1/2/4/8/16, ext8/16/32 (ext8 of length 0 included) */
    ASSERT_NULL(prescan("98 d4 01 00 d5 01 0000 d6 ff 00000000 d7 ff 0000000000000000 "
                        "d8 05 00000000000000000000000000000000 c7 00 05 c8 0001 05 00 "
                        "c9 00000002 05 0000",
                        8));
    /* arrays and maps in every width, empty ones included */
    ASSERT_NULL(prescan("96 90 80 dc 0000 de 0000 dd 00000001 c0 df 00000001 a1 6b c0", 8));
    ASSERT_NULL(prescan("c0", 0)); /* a scalar needs no depth */
}

TEST(prescan_rejects_declared_sizes)
{
    /* str32 declaring 4 GB in a 10-byte input */
    ASSERT_STR_EQ(prescan("db ffffffff 0000000000", 64), "declared length exceeds the message");
    /* array32 declaring 2^32-1 elements, and a large count inside a small message */
    ASSERT_STR_EQ(prescan("dd ffffffff", 64), "declared count exceeds the message");
    ASSERT_STR_EQ(prescan("92 01 dd ffffffff c0 c0", 64), "declared count exceeds the message");
    /* map32 of 2^31 pairs: the count times two overflows 32 bits */
    ASSERT_STR_EQ(prescan("df 80000000 c0c0c0c0", 64), "declared count exceeds the message");
    /* a map of 3 pairs needs at least 6 more bytes */
    ASSERT_STR_EQ(prescan("83 c0 c0 c0 c0 c0", 64), "declared count exceeds the message");
    ASSERT_NULL(prescan("83 c0 c0 c0 c0 c0 c0", 64));
    ASSERT_STR_EQ(prescan("de 0003 c0c0c0c0c0", 64), "declared count exceeds the message");
    /* an array of 3 needs 3 bytes; 2 given */
    ASSERT_STR_EQ(prescan("93 c0 c0", 64), "declared count exceeds the message");
    /* str / bin / ext lengths */
    ASSERT_STR_EQ(prescan("a5 61 62", 64), "declared length exceeds the message");
    ASSERT_STR_EQ(prescan("d9 05 616263", 64), "declared length exceeds the message");
    ASSERT_STR_EQ(prescan("da 0100 61", 64), "declared length exceeds the message");
    ASSERT_STR_EQ(prescan("c4 03 0000", 64), "declared length exceeds the message");
    ASSERT_STR_EQ(prescan("c6 ffffffff 00", 64), "declared length exceeds the message");
    ASSERT_STR_EQ(prescan("c7 02 05 00", 64), "declared length exceeds the message");
    ASSERT_STR_EQ(prescan("c9 ffffffff 05", 64), "declared length exceeds the message");
    /* the type byte of an ext counts */
    ASSERT_STR_EQ(prescan("c7 00", 64), "declared length exceeds the message");
}

TEST(prescan_rejects_malformed)
{
    ASSERT_STR_EQ(prescan("", 64), "empty message");
    ASSERT_STR_EQ(prescan("c1", 64), "reserved byte 0xc1");
    ASSERT_STR_EQ(prescan("92 01 c1", 64), "reserved byte 0xc1");
    ASSERT_STR_EQ(prescan("91 06 c0", 64), "trailing bytes after the message");
    ASSERT_STR_EQ(prescan("c0 c0", 64), "trailing bytes after the message");
    /* truncated scalars and headers */
    ASSERT_STR_EQ(prescan("cd 01", 64), "truncated value");
    ASSERT_STR_EQ(prescan("cf 00000000", 64), "truncated value");
    ASSERT_STR_EQ(prescan("cb 3ff8", 64), "truncated value");
    ASSERT_STR_EQ(prescan("d9", 64), "truncated value");
    ASSERT_STR_EQ(prescan("db 0000", 64), "truncated value");
    ASSERT_STR_EQ(prescan("dd 0000", 64), "truncated value");
    ASSERT_STR_EQ(prescan("df", 64), "truncated value");
    ASSERT_STR_EQ(prescan("c8 00", 64), "truncated value");
    ASSERT_STR_EQ(prescan("d6 ff 0000", 64), "truncated value");
    ASSERT_STR_EQ(prescan("d8 ff", 64), "truncated value");
    /* a container whose elements are cut short (the count itself fits) */
    ASSERT_STR_EQ(prescan("92 cd 01 02", 64), "truncated value");
    ASSERT_STR_EQ(prescan("92 92 01", 64), "declared count exceeds the message");
}

/* n nested arrays around nil: 91 91 ... c0 */
static char *nested(int n, const char *leaf)
{
    static char hex[4096];
    size_t pos = 0;
    ASSERT(n * 3 + strlen(leaf) + 1 < sizeof(hex));
    for (int i = 0; i < n; i++) {
        memcpy(hex + pos, "91 ", 3);
        pos += 3;
    }
    strcpy(hex + pos, leaf);
    return hex;
}

TEST(prescan_depth)
{
    ASSERT_NULL(prescan(nested(3, "c0"), 3));
    ASSERT_STR_EQ(prescan(nested(4, "c0"), 3), "nesting too deep");
    /* Empty containers count as a level, maps too. */
    ASSERT_NULL(prescan(nested(2, "90"), 3));
    ASSERT_STR_EQ(prescan(nested(3, "90"), 3), "nesting too deep");
    ASSERT_STR_EQ(prescan(nested(3, "80"), 3), "nesting too deep");
    ASSERT_STR_EQ(prescan("81 a1 6b 81 a1 6b 81 a1 6b 90", 3), "nesting too deep");
    /* Siblings do not add up: depth drops when a container completes. */
    ASSERT_NULL(prescan("93 91 91 c0 91 91 c0 92 91 c0 91 c0", 3));
    /* max_depth is clamped to KR_SR_MP_DEPTH_LIMIT. */
    ASSERT_NULL(prescan(nested(KR_SR_MP_DEPTH_LIMIT, "c0"), 100000));
    ASSERT_STR_EQ(prescan(nested(KR_SR_MP_DEPTH_LIMIT + 1, "c0"), 100000), "nesting too deep");
    ASSERT_STR_EQ(prescan(nested(1000, "c0"), 100000), "nesting too deep");
}

/* ---- parse: the JS client's records ---------------------------------------------------------- */

TEST(js_invocation)
{
    kr_sr_msg_t m;
    /* invoke("Send", "bob", "hi"): 5 elements, no streamIds */
    record_ok("12 950180a130a453656e6492a3626f62a26869", &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "0");
    ASSERT_STR_EQ(m.target, "Send");
    ASSERT_NOT_NULL(m.mp_arguments);
    ASSERT_EQ(m.mp_arguments->type, MSGPACK_OBJECT_ARRAY);
    ASSERT_EQ(kr_sr_msg_argc(&m), 2);
    ASSERT(str_is(&m.mp_arguments->via.array.ptr[0], "bob"));
    const char *s;
    size_t len;
    ASSERT(kr_sr_msg_arg_string(&m, 1, &s, &len));
    ASSERT_MEM_EQ(s, len, "hi", 2);
    ASSERT_NULL(m.stream_ids);
    ASSERT_NULL(m.error);
    ASSERT_NULL(m.mp_item);
    ASSERT_NULL(m.mp_result);
    ASSERT_NOT_NULL(m._zone);
    kr_sr_msg_dispose(&m);
    ASSERT_NULL(m._zone);
    kr_sr_msg_dispose(&m); /* twice is harmless */

    /* send("ReceiveMessage", ...): nil id */
    record_ok("1b 950180c0ae526563656976654d65737361676592a3626f62a26869", &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_NULL(m.invocation_id);
    ASSERT_STR_EQ(m.target, "ReceiveMessage");
    kr_sr_msg_dispose(&m);

    /* invoke("Sum", subject): 6 elements with streamIds ["1"] */
    record_ok("0d 960180a130a353756d9091a131", &m);
    ASSERT_STR_EQ(m.target, "Sum");
    ASSERT_EQ(kr_sr_msg_argc(&m), 0);
    ASSERT_EQ(m.nstream_ids, 1);
    ASSERT_STR_EQ(m.stream_ids[0], "1");
    kr_sr_msg_dispose(&m);
}

TEST(js_other_messages)
{
    kr_sr_msg_t m;
    /* stream("Counter", 10) */
    record_ok("0f 950480a132a7436f756e746572910a", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "2");
    ASSERT_STR_EQ(m.target, "Counter");
    ASSERT_EQ(m.mp_arguments->via.array.ptr[0].via.u64, 10);
    kr_sr_msg_dispose(&m);
    /* an upload stream item */
    record_ok("06 940280a13105", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_ITEM);
    ASSERT_STR_EQ(m.invocation_id, "1");
    ASSERT_EQ(m.mp_item->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ASSERT_EQ(m.mp_item->via.u64, 5);
    kr_sr_msg_dispose(&m);
    /* upload complete(): kind 2 (the digest's example bytes) */
    record_ok("06 940380a13102", &m);
    ASSERT_EQ(m.type, KR_SR_COMPLETION);
    ASSERT_STR_EQ(m.invocation_id, "1");
    ASSERT_EQ(m.has_result, 0);
    ASSERT_NULL(m.mp_result);
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);
    /* error(new Error("boom")) */
    record_ok("12 950380a13101ab4572726f723a20626f6f6d", &m);
    ASSERT_STR_EQ(m.error, "Error: boom");
    ASSERT_EQ(m.has_result, 0);
    kr_sr_msg_dispose(&m);
    /* a client result "alice", and null */
    record_ok("0d 950380a2733103a5616c696365", &m);
    ASSERT_STR_EQ(m.invocation_id, "s1");
    ASSERT_EQ(m.has_result, 1);
    ASSERT(str_is(m.mp_result, "alice"));
    kr_sr_msg_dispose(&m);
    record_ok("08 950380a2733103c0", &m);
    ASSERT_EQ(m.has_result, 1);
    ASSERT_EQ(m.mp_result->type, MSGPACK_OBJECT_NIL);
    kr_sr_msg_dispose(&m);
    /* cancel, ping, close */
    record_ok("05 930580a132", &m);
    ASSERT_EQ(m.type, KR_SR_CANCEL_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "2");
    kr_sr_msg_dispose(&m);
    record_ok("02 9106", &m);
    ASSERT_EQ(m.type, KR_SR_PING);
    kr_sr_msg_dispose(&m);
    record_ok("03 9207c0", &m);
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    ASSERT_NULL(m.error);
    ASSERT_EQ(m.allow_reconnect, 0);
    kr_sr_msg_dispose(&m);
    /* ack 1, sequence 70000 (uint32), sequence 2^33 (uint64) */
    record_ok("03 920801", &m);
    ASSERT_EQ(m.type, KR_SR_ACK);
    ASSERT_EQ(m.sequence_id, 1);
    kr_sr_msg_dispose(&m);
    record_ok("07 9209ce00011170", &m);
    ASSERT_EQ(m.type, KR_SR_SEQUENCE);
    ASSERT_EQ(m.sequence_id, 70000);
    kr_sr_msg_dispose(&m);
    record_ok("0b 9209cf0000000200000000", &m);
    ASSERT_EQ(m.sequence_id, INT64_C(8589934592));
    kr_sr_msg_dispose(&m);
}

/* invoke("Echo", Date(2025-10-11T21:30:00.123Z), Uint8Array[0,1,255], 1.5, -1, -200, 40000,
 * 2^40, {a:[true,false,null], "é":"ü"}, Date(0), Date(2200-01-01)) */
static const char js_values[] =
    "50 950180a133a44563686f9ad7ff1d53530068eacc58c4030001ffcb3ff8000000000000ffd1ff38cd9c40cf"
    "000001000000000082a16193c3c2c0a2c3a9a2c3bcd6ff00000000d7ff00000001b09e1900";

TEST(js_values_reencode)
{
    kr_sr_msg_t m;
    kr_sbuf_t sb;
    const msgpack_object *a;

    record_ok(js_values, &m);
    ASSERT_EQ(kr_sr_msg_argc(&m), 10);
    a = m.mp_arguments->via.array.ptr;
    ASSERT_EQ(a[0].type, MSGPACK_OBJECT_EXT);
    ASSERT_EQ(a[0].via.ext.type, -1);
    ASSERT_EQ(a[0].via.ext.size, 8);
    ASSERT_EQ(a[1].type, MSGPACK_OBJECT_BIN);
    ASSERT_EQ(a[1].via.bin.size, 3);
    ASSERT_EQ(a[2].type, MSGPACK_OBJECT_FLOAT64);
    ASSERT(a[2].via.f64 == 1.5);
    ASSERT_EQ(a[3].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    ASSERT_EQ(a[3].via.i64, -1);
    ASSERT_EQ(a[4].via.i64, -200);
    ASSERT_EQ(a[5].via.u64, 40000);
    ASSERT_EQ(a[6].via.u64, INT64_C(1) << 40);
    ASSERT_EQ(a[7].type, MSGPACK_OBJECT_MAP);
    ASSERT(kr_sr_msg_arg_string(&m, 1, &(const char *){NULL}, &(size_t){0}) == 0); /* bin */

    /* put_object writes the smallest forms, as @msgpack/msgpack does: the same bytes. */
    kr_sbuf_init(&sb, 0);
    kr_mp_put_object(&sb, m.mp_arguments);
    ASSERT_HEX(&sb, "9ad7ff1d53530068eacc58c4030001ffcb3ff8000000000000ffd1ff38cd9c40cf00000100000"
                    "0000082a16193c3c2c0a2c3a9a2c3bcd6ff00000000d7ff00000001b09e1900");
    kr_sbuf_dispose(&sb);
    kr_sr_msg_dispose(&m);
}

/* ---- parse: the layouts .NET writes ---------------------------------------------------------- */

TEST(dotnet_layouts)
{
    kr_sr_msg_t m;
    /* [1, {}, "0", "Send", ["bob","hi"], []] */
    body_ok("96 01 80 a130 a453656e64 92a3626f62a26869 90", &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "0");
    ASSERT_EQ(kr_sr_msg_argc(&m), 2);
    ASSERT_NULL(m.stream_ids); /* an empty list is no list */
    ASSERT_EQ(m.nstream_ids, 0);
    kr_sr_msg_dispose(&m);
    /* headers are accepted and ignored; "" id counts as absent */
    body_ok("96 01 82 a16b a176 a0 a0 a0 a154 90 92 a131 a132", &m);
    ASSERT_NULL(m.invocation_id);
    ASSERT_STR_EQ(m.target, "T");
    ASSERT_EQ(m.nstream_ids, 2);
    ASSERT_STR_EQ(m.stream_ids[1], "2");
    kr_sr_msg_dispose(&m);
    /* [4, {}, "1", "Counter", [10], []] */
    body_ok("96 04 80 a131 a7436f756e746572 910a 90", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, "1");
    kr_sr_msg_dispose(&m);
    /* a void method: [3, {}, "0", 3, nil] */
    body_ok("95 03 80 a130 03 c0", &m);
    ASSERT_EQ(m.type, KR_SR_COMPLETION);
    ASSERT_EQ(m.has_result, 1);
    ASSERT_EQ(m.mp_result->type, MSGPACK_OBJECT_NIL);
    kr_sr_msg_dispose(&m);
    /* [3, {}, "0", 1, "boom"] */
    body_ok("95 03 80 a130 01 a4626f6f6d", &m);
    ASSERT_STR_EQ(m.error, "boom");
    ASSERT_NULL(m.mp_result);
    kr_sr_msg_dispose(&m);
    /* [2, {"k":"v"}, "1", {"X":1}] */
    body_ok("94 02 81 a16b a176 a131 81 a158 01", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_ITEM);
    ASSERT_EQ(m.mp_item->type, MSGPACK_OBJECT_MAP);
    kr_sr_msg_dispose(&m);
    /* Close in 3 elements: [7, nil, true], [7, "bye", false] */
    body_ok("93 07 c0 c3", &m);
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    ASSERT_NULL(m.error);
    ASSERT_EQ(m.allow_reconnect, 1);
    kr_sr_msg_dispose(&m);
    body_ok("93 07 a3627965 c2", &m);
    ASSERT_STR_EQ(m.error, "bye");
    ASSERT_EQ(m.allow_reconnect, 0);
    kr_sr_msg_dispose(&m);
}

TEST(sequence_widths)
{
    static const struct {
        const char *hex;
        int64_t want;
    } cases[] = {
        {"92 08 00", 0},
        {"92 08 7f", 127},
        {"92 08 cc ff", 255},
        {"92 08 cd 0100", 256},
        {"92 08 ce 00010000", 65536},
        {"92 08 cf 7fffffffffffffff", INT64_MAX},
        {"92 08 ff", -1},
        {"92 08 d0 80", -128},
        {"92 08 d0 05", 5}, /* a signed form holding a positive value */
        {"92 08 d1 8000", -32768},
        {"92 08 d2 80000000", INT32_MIN},
        {"92 08 d3 8000000000000000", INT64_MIN},
        {"92 09 d3 0000000000000007", 7},
    };
    for (size_t i = 0; i < KR_ARRAY_SIZE(cases); i++) {
        kr_sr_msg_t m;
        body_ok(cases[i].hex, &m);
        ASSERT_EQ(m.sequence_id, cases[i].want);
        kr_sr_msg_dispose(&m);
    }
    ASSERT_ERR("92 08 cf 8000000000000000", "\"sequenceId\" is out of range");
    ASSERT_ERR("92 08 cb 3ff0000000000000", "\"sequenceId\" is not an integer");
    ASSERT_ERR("92 09 c0", "\"sequenceId\" is not an integer");
    ASSERT_ERR("91 08", "Ack message has too few elements");
    ASSERT_ERR("91 09", "Sequence message has too few elements");
}

TEST(extra_elements_ignored)
{
    kr_sr_msg_t m;
    /* a later protocol version may append fields */
    body_ok("97 01 80 a130 a154 90 90 c3", &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    kr_sr_msg_dispose(&m);
    body_ok("95 02 80 a131 05 a178", &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_ITEM);
    kr_sr_msg_dispose(&m);
    body_ok("96 03 80 a131 03 05 c0", &m);
    ASSERT_EQ(m.has_result, 1);
    kr_sr_msg_dispose(&m);
    body_ok("96 03 80 a131 01 a165 c0", &m);
    ASSERT_STR_EQ(m.error, "e");
    kr_sr_msg_dispose(&m);
    body_ok("94 05 80 a131 00", &m);
    ASSERT_EQ(m.type, KR_SR_CANCEL_INVOCATION);
    kr_sr_msg_dispose(&m);
    body_ok("92 06 01", &m);
    ASSERT_EQ(m.type, KR_SR_PING);
    kr_sr_msg_dispose(&m);
    body_ok("94 07 c0 c3 01", &m);
    ASSERT_EQ(m.allow_reconnect, 1);
    kr_sr_msg_dispose(&m);
    body_ok("93 08 01 02", &m);
    ASSERT_EQ(m.sequence_id, 1);
    kr_sr_msg_dispose(&m);
    /* ... but a void Completion has exactly 4 elements */
    ASSERT_ERR("95 03 80 a131 02 c0", "void completion has a result");
}

TEST(unknown_type)
{
    kr_sr_msg_t m;
    body_ok("93 0a 80 a131", &m);
    ASSERT_EQ(m.type, 10);
    ASSERT_NULL(m._zone);
    ASSERT_NULL(m.invocation_id);
    ASSERT_NULL(m.mp_arguments);
    kr_sr_msg_dispose(&m);
    body_ok("91 ce 7fffffff", &m); /* INT_MAX */
    ASSERT_EQ(m.type, 0x7fffffff);
    kr_sr_msg_dispose(&m);
}

/* ---- parse: rejections ----------------------------------------------------------------------- */

TEST(errors_message_shape)
{
    ASSERT_ERR("", "empty message");
    ASSERT_ERR("db ffffffff 0000000000", "declared length exceeds the message");
    ASSERT_ERR("dd ffffffff", "declared count exceeds the message");
    ASSERT_ERR("9106 c0", "trailing bytes after the message");
    ASSERT_ERR("c1", "reserved byte 0xc1");
    ASSERT_ERR("06", "message is not an array");
    ASSERT_ERR("81 a474797065 06", "message is not an array");
    ASSERT_ERR("90", "message is an empty array");
    ASSERT_ERR("91 00", "message type is not a positive integer");
    ASSERT_ERR("91 ff", "message type is not a positive integer");
    ASSERT_ERR("91 a136", "message type is not a positive integer");
    ASSERT_ERR("91 cb 4018000000000000", "message type is not a positive integer");
    ASSERT_ERR("91 ce 80000000", "message type is not a positive integer");
    ASSERT_ERR("91 c0", "message type is not a positive integer");
    /* nesting: the message array counts as one level, msgpack-c stops at 32 */
    char hex[512] = "95 01 80 c0 a154 ";
    for (int i = 0; i < KR_SR_MP_MAX_DEPTH; i++)
        strcat(hex, "91 ");
    strcat(hex, "c0");
    ASSERT_ERR(hex, "nesting too deep");
}

TEST(nesting_at_the_limit)
{
    /* [1, {}, nil, "T", [[...[nil]...]]]: 32 arrays in all, the deepest msgpack-c decodes */
    char hex[512] = "95 01 80 c0 a154 ";
    kr_sr_msg_t m;
    const msgpack_object *o;
    int levels = 0;
    for (int i = 0; i < KR_SR_MP_MAX_DEPTH - 1; i++)
        strcat(hex, "91 ");
    strcat(hex, "c0");
    body_ok(hex, &m);
    for (o = m.mp_arguments; o->type == MSGPACK_OBJECT_ARRAY; o = &o->via.array.ptr[0])
        levels++;
    ASSERT_EQ(levels, KR_SR_MP_MAX_DEPTH - 1);
    kr_sr_msg_dispose(&m);
    /* maps nest the same way */
    body_ok("95 01 80 c0 a154 91 81 a16b 81 a16b 90", &m);
    kr_sr_msg_dispose(&m);
}

TEST(errors_too_few_elements)
{
    ASSERT_ERR("94 01 80 c0 a154", "Invocation message has too few elements");
    ASSERT_ERR("93 02 80 a131", "StreamItem message has too few elements");
    ASSERT_ERR("93 03 80 a131", "Completion message has too few elements");
    ASSERT_ERR("94 03 80 a131 01", "Completion message has too few elements");
    ASSERT_ERR("94 03 80 a131 03", "Completion message has too few elements");
    ASSERT_ERR("94 04 80 a131 a154", "StreamInvocation message has too few elements");
    ASSERT_ERR("92 05 80", "CancelInvocation message has too few elements");
    ASSERT_ERR("91 07", "Close message has too few elements");
}

TEST(errors_headers)
{
    ASSERT_ERR("95 01 c0 c0 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("95 01 90 c0 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("95 01 81 a16b 01 c0 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("95 01 81 01 a176 c0 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("95 01 81 a16b c0 c0 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("95 01 81 a16b c401 76 c0 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("94 02 90 a131 05", "\"headers\" is not a map of strings");
    ASSERT_ERR("94 03 c0 a131 02", "\"headers\" is not a map of strings");
    ASSERT_ERR("95 04 01 a131 a154 90", "\"headers\" is not a map of strings");
    ASSERT_ERR("93 05 a0 a131", "\"headers\" is not a map of strings");
}

TEST(errors_invocation)
{
    ASSERT_ERR("95 01 80 01 a154 90", "\"invocationId\" is not a string");
    ASSERT_ERR("95 01 80 c40130 a154 90", "\"invocationId\" is not a string");
    ASSERT_ERR("95 01 80 c0 c0 90", "\"target\" is not a string");
    ASSERT_ERR("95 01 80 c0 c40154 90", "\"target\" is not a string");
    ASSERT_ERR("95 01 80 c0 a0 90", "\"target\" is empty");
    ASSERT_ERR("95 01 80 c0 a154 c0", "\"arguments\" is not an array");
    ASSERT_ERR("95 01 80 c0 a154 80", "\"arguments\" is not an array");
    ASSERT_ERR("96 01 80 c0 a154 90 c0", "\"streamIds\" is not an array of strings");
    ASSERT_ERR("96 01 80 c0 a154 90 a131", "\"streamIds\" is not an array of strings");
    ASSERT_ERR("96 01 80 c0 a154 90 92 a131 01", "\"streamIds\" is not an array of strings");
    ASSERT_ERR("96 01 80 c0 a154 90 91 c40131", "\"streamIds\" is not an array of strings");
    /* StreamInvocation needs a non-empty id */
    ASSERT_ERR("95 04 80 c0 a154 90", "missing \"invocationId\"");
    ASSERT_ERR("95 04 80 a0 a154 90", "\"invocationId\" is empty");
    ASSERT_ERR("95 04 80 01 a154 90", "\"invocationId\" is not a string");
    ASSERT_ERR("95 04 80 a131 a0 90", "\"target\" is empty");
    /* names are C strings: a NUL ends them, and emptiness is judged on what is left */
    ASSERT_ERR("95 04 80 a100 a154 90", "\"invocationId\" is empty");
    ASSERT_ERR("95 01 80 c0 a20041 90", "\"target\" is empty");
    ASSERT_ERR("93 05 80 a20031", "\"invocationId\" is empty");
}

TEST(nul_bytes_in_names)
{
    kr_sr_msg_t m;
    body_ok("96 01 80 a100 a34100 42 90 91 a2 3100", &m);
    ASSERT_NULL(m.invocation_id); /* "\0" is "" is no id */
    ASSERT_STR_EQ(m.target, "A");
    ASSERT_STR_EQ(m.stream_ids[0], "1");
    kr_sr_msg_dispose(&m);
    body_ok("95 03 80 a131 01 a3 650066", &m);
    ASSERT_STR_EQ(m.error, "e");
    kr_sr_msg_dispose(&m);
}

TEST(stream_ids_limit)
{
    /* 1024 ids are accepted, 1025 are not (the JSON codec's limit). */
    char *hex = malloc(64 + 1025 * 5);
    kr_sr_msg_t m;
    for (int n = 1024; n <= 1025; n++) {
        strcpy(hex, "96 01 80 c0 a154 90 dc ");
        snprintf(hex + strlen(hex), 8, "%04x", n);
        for (int i = 0; i < n; i++)
            strcat(hex, " a131");
        if (n == 1024) {
            body_ok(hex, &m);
            ASSERT_EQ(m.nstream_ids, 1024);
            ASSERT_STR_EQ(m.stream_ids[1023], "1");
            kr_sr_msg_dispose(&m);
        } else {
            ASSERT_STR_EQ(body_err(hex), "\"streamIds\" is too long");
        }
    }
    free(hex);
}

TEST(errors_other_types)
{
    ASSERT_ERR("94 02 80 c0 05", "missing \"invocationId\"");
    ASSERT_ERR("94 02 80 a0 05", "\"invocationId\" is empty");
    ASSERT_ERR("94 02 80 05 05", "\"invocationId\" is not a string");
    ASSERT_ERR("94 03 80 c0 02", "missing \"invocationId\"");
    ASSERT_ERR("94 03 80 c40131 02", "\"invocationId\" is not a string");
    ASSERT_ERR("94 03 80 a131 00", "completion result kind is not 1, 2 or 3");
    ASSERT_ERR("95 03 80 a131 04 c0", "completion result kind is not 1, 2 or 3");
    ASSERT_ERR("95 03 80 a131 ff c0", "completion result kind is not 1, 2 or 3");
    ASSERT_ERR("95 03 80 a131 a133 c0", "completion result kind is not 1, 2 or 3");
    ASSERT_ERR("95 03 80 a131 01 c0", "\"error\" is not a string");
    ASSERT_ERR("95 03 80 a131 01 c40165", "\"error\" is not a string");
    ASSERT_ERR("93 05 80 c0", "missing \"invocationId\"");
    ASSERT_ERR("92 07 01", "\"error\" is not a string");
    ASSERT_ERR("92 07 c40165", "\"error\" is not a string");
    ASSERT_ERR("93 07 c0 01", "\"allowReconnect\" is not a boolean");
    ASSERT_ERR("93 07 c0 c0", "\"allowReconnect\" is not a boolean");
}

/* ---- value writer ---------------------------------------------------------------------------- */

TEST(write_integers)
{
    static const struct {
        int64_t v;
        const char *hex;
    } ints[] = {
        {0, "00"},
        {127, "7f"},
        {128, "cc80"},
        {255, "ccff"},
        {256, "cd0100"},
        {65535, "cdffff"},
        {65536, "ce00010000"},
        {UINT32_MAX, "ceffffffff"},
        {INT64_C(4294967296), "cf0000000100000000"},
        {INT64_MAX, "cf7fffffffffffffff"},
        {-1, "ff"},
        {-32, "e0"},
        {-33, "d0df"},
        {-128, "d080"},
        {-129, "d1ff7f"},
        {-32768, "d18000"},
        {-32769, "d2ffff7fff"},
        {INT32_MIN, "d280000000"},
        {INT64_C(-2147483649), "d3ffffffff7fffffff"},
        {INT64_MIN, "d38000000000000000"},
    };
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 0);
    for (size_t i = 0; i < KR_ARRAY_SIZE(ints); i++) {
        kr_sbuf_reset(&sb);
        kr_mp_put_int(&sb, ints[i].v);
        ASSERT_HEX(&sb, ints[i].hex);
    }
    kr_sbuf_reset(&sb);
    kr_mp_put_uint(&sb, UINT64_MAX);
    ASSERT_HEX(&sb, "cfffffffffffffffff");
    kr_sbuf_reset(&sb);
    kr_mp_put_uint(&sb, 5);
    ASSERT_HEX(&sb, "05");
    kr_sbuf_reset(&sb);
    kr_mp_put_nil(&sb);
    kr_mp_put_bool(&sb, 0);
    kr_mp_put_bool(&sb, 7);
    kr_mp_put_double(&sb, 1.5);
    kr_mp_put_double(&sb, -0.0);
    ASSERT_HEX(&sb, "c0 c2 c3 cb3ff8000000000000 cb8000000000000000");
    kr_sbuf_dispose(&sb);
}

/* The header bytes kr_mp_put_str / put_bin / put_array / put_map write for n. */
static const char *header_of(int kind, uint32_t n)
{
    static char out[32];
    kr_sbuf_t sb;
    char *payload = NULL;
    kr_sbuf_init(&sb, 0);
    if (kind <= 1) {
        payload = calloc(1, n ? n : 1);
        if (kind == 0)
            kr_mp_put_str(&sb, payload, n);
        else
            kr_mp_put_bin(&sb, payload, n);
        ASSERT(kr_sbuf_len(&sb) > n);
        ASSERT(memcmp(kr_sbuf_data(&sb) + kr_sbuf_len(&sb) - n, payload, n) == 0);
        sb.buf->len -= n;
    } else if (kind == 2) {
        kr_mp_put_array(&sb, n);
    } else {
        kr_mp_put_map(&sb, n);
    }
    snprintf(out, sizeof(out), "%s", to_hex(kr_sbuf_data(&sb), kr_sbuf_len(&sb)));
    kr_sbuf_dispose(&sb);
    free(payload);
    return out;
}

TEST(write_lengths)
{
    ASSERT_STR_EQ(header_of(0, 0), "a0");
    ASSERT_STR_EQ(header_of(0, 31), "bf");
    ASSERT_STR_EQ(header_of(0, 32), "d920");
    ASSERT_STR_EQ(header_of(0, 255), "d9ff");
    ASSERT_STR_EQ(header_of(0, 256), "da0100");
    ASSERT_STR_EQ(header_of(0, 65535), "daffff");
    ASSERT_STR_EQ(header_of(0, 65536), "db00010000");
    ASSERT_STR_EQ(header_of(1, 0), "c400");
    ASSERT_STR_EQ(header_of(1, 255), "c4ff");
    ASSERT_STR_EQ(header_of(1, 256), "c50100");
    ASSERT_STR_EQ(header_of(1, 65536), "c600010000");
    ASSERT_STR_EQ(header_of(2, 0), "90");
    ASSERT_STR_EQ(header_of(2, 15), "9f");
    ASSERT_STR_EQ(header_of(2, 16), "dc0010");
    ASSERT_STR_EQ(header_of(2, 65535), "dcffff");
    ASSERT_STR_EQ(header_of(2, 65536), "dd00010000");
    ASSERT_STR_EQ(header_of(2, UINT32_MAX), "ddffffffff");
    ASSERT_STR_EQ(header_of(3, 0), "80");
    ASSERT_STR_EQ(header_of(3, 15), "8f");
    ASSERT_STR_EQ(header_of(3, 16), "de0010");
    ASSERT_STR_EQ(header_of(3, 65536), "df00010000");
}

TEST(write_timestamps)
{
    static const struct {
        int64_t ms;
        const char *hex;
    } ts[] = {
        /* whole seconds within uint32: timestamp 32 (JS: new Date(0)) */
        {0, "d6ff00000000"},
        {INT64_C(1000), "d6ff00000001"},
        {INT64_C(4294967295000), "d6ffffffffff"},
        /* milliseconds, or seconds past uint32: timestamp 64 (both from JS) */
        {INT64_C(1760218200123), "d7ff1d53530068eacc58"},
        {INT64_C(7258118400000), "d7ff00000001b09e1900"},
        {1, "d7ff003d090000000000"},
        {INT64_C(17179869183999), "d7ffee2e1f03ffffffff"}, /* 2^34-1 s + 999 ms */
        /* before 1970 or from 2^34 s on: timestamp 96 */
        {-1, "c70cff 3b8b87c0 ffffffffffffffff"},
        {-1000, "c70cff 00000000 ffffffffffffffff"},
        {INT64_C(17179869184000), "c70cff 00000000 0000000400000000"},
        /* DateTime.MinValue, 0001-01-01T00:00:00Z */
        {INT64_C(-62135596800000), "c70cff 00000000 fffffff1886e0900"},
    };
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 0);
    for (size_t i = 0; i < KR_ARRAY_SIZE(ts); i++) {
        kr_sbuf_reset(&sb);
        kr_mp_put_timestamp_ms(&sb, ts[i].ms);
        ASSERT_HEX(&sb, ts[i].hex);
    }
    kr_sbuf_dispose(&sb);
}

TEST(put_object_every_type)
{
    /* float32 stays float32, ext keeps its size class, maps keep their order */
    const char *hex = "9f c0 c3 ca 3fc00000 cb 3ff8000000000000 ff d3 8000000000000000 "
                      "cf ffffffffffffffff a3 616263 c4 02 0001 d4 05 01 c7 03 05 010203 "
                      "c7 0c ff 000000000000000000000001 82 a16b 01 02 91 c0 90 80";
    kr_sr_msg_t m;
    kr_sbuf_t sb;
    char body[512];
    snprintf(body, sizeof(body), "95 01 80 c0 a154 %s", hex);
    body_ok(body, &m);
    kr_sbuf_init(&sb, 0);
    kr_mp_put_object(&sb, m.mp_arguments);
    ASSERT_HEX(&sb, hex);
    kr_sbuf_dispose(&sb);
    kr_sr_msg_dispose(&m);
}

/* ---- record encoders ------------------------------------------------------------------------- */

TEST(write_records_exact_bytes)
{
    kr_sbuf_t sb;
    size_t start;
    kr_sbuf_init(&sb, 0);

    kr_sr_mp_write_ping(&sb);
    ASSERT_HEX(&sb, "02 91 06");
    kr_sbuf_reset(&sb);
    kr_sr_mp_write_close(&sb, NULL, 1);
    ASSERT_HEX(&sb, "04 93 07 c0 c3");
    kr_sbuf_reset(&sb);
    kr_sr_mp_write_close(&sb, "bye", 0);
    ASSERT_HEX(&sb, "07 93 07 a3627965 c2");
    kr_sbuf_reset(&sb);
    /* end of a server stream: [3, {}, "0", 2] (the digest's example) */
    kr_sr_mp_write_completion_empty(&sb, "0");
    ASSERT_HEX(&sb, "06 94 03 80 a1 30 02");
    kr_sbuf_reset(&sb);
    /* a void method, as .NET answers it: [3, {}, "0", 3, nil] */
    kr_sr_mp_write_completion(&sb, "0", NULL, 0, NULL);
    ASSERT_HEX(&sb, "07 95 03 80 a1 30 03 c0");
    kr_sbuf_reset(&sb);
    kr_sr_mp_write_completion(&sb, "0", "\x2a", 0, NULL); /* length 0 is nil too */
    ASSERT_HEX(&sb, "07 95 03 80 a1 30 03 c0");
    kr_sbuf_reset(&sb);
    kr_sr_mp_write_completion(&sb, "12", "\xcd\x01\x00", 3, NULL);
    ASSERT_HEX(&sb, "0a 95 03 80 a2 3132 03 cd0100");
    kr_sbuf_reset(&sb);
    kr_sr_mp_write_completion(&sb, "0", "\x2a", 1, "boom"); /* an error wins */
    ASSERT_HEX(&sb, "0b 95 03 80 a1 30 01 a4 626f6f6d");
    kr_sbuf_reset(&sb);

    /* a push: [1, {}, nil, "ReceiveMessage", ["bob","hi"], []] */
    start = kr_sr_mp_write_invocation_head(&sb, NULL, "ReceiveMessage");
    kr_mp_put_array(&sb, 2);
    kr_mp_put_str(&sb, "bob", 3);
    kr_mp_put_str(&sb, "hi", 2);
    kr_sr_mp_write_invocation_tail(&sb, start);
    ASSERT_HEX(&sb, "1c 96 01 80 c0 ae526563656976654d657373616765 92 a3626f62 a26869 90");
    kr_sbuf_reset(&sb);
    /* a client-result request with an id; "" is no id */
    start = kr_sr_mp_write_invocation_head(&sb, "s1", "GetName");
    kr_mp_put_array(&sb, 0);
    kr_sr_mp_write_invocation_tail(&sb, start);
    ASSERT_HEX(&sb, "10 96 01 80 a2 7331 a7 4765744e616d65 90 90");
    kr_sbuf_reset(&sb);
    start = kr_sr_mp_write_invocation_head(&sb, "", "T");
    kr_mp_put_array(&sb, 0);
    kr_sr_mp_write_invocation_tail(&sb, start);
    ASSERT_HEX(&sb, "08 96 01 80 c0 a154 90 90");
    kr_sbuf_reset(&sb);

    /* [2, {}, "1", 0] */
    start = kr_sr_mp_write_stream_item_head(&sb, "1");
    kr_mp_put_int(&sb, 0);
    kr_sr_mp_end(&sb, start);
    ASSERT_HEX(&sb, "06 94 02 80 a1 31 00");
    kr_sbuf_reset(&sb);

    kr_sr_mp_write_ack(&sb, 1);
    kr_sr_mp_write_sequence(&sb, 70000);
    kr_sr_mp_write_ack(&sb, -1);
    kr_sr_mp_write_sequence(&sb, INT64_C(8589934592));
    /* the JS encoder's bytes for ack 1, sequence 70000 and sequence 2^33 */
    ASSERT_HEX(&sb, "03 920801 07 9209ce00011170 03 9208ff 0b 9209cf0000000200000000");
    kr_sbuf_dispose(&sb);
}

TEST(records_append_and_prefix_lengths)
{
    kr_sbuf_t sb;
    size_t sizes[] = {0, 1, 127, 128, 16383, 16384, 2097152};
    kr_sbuf_init(&sb, 0);
    kr_sbuf_append(&sb, "xy", 2); /* what was there stays */
    for (size_t i = 0; i < KR_ARRAY_SIZE(sizes); i++) {
        size_t before = kr_sbuf_len(&sb), off = 0, blen = 0;
        size_t start = kr_sr_mp_begin(&sb);
        ASSERT_EQ(start, before);
        char *p = kr_sbuf_reserve(&sb, sizes[i] ? sizes[i] : 1);
        for (size_t j = 0; j < sizes[i]; j++)
            p[j] = (char)j;
        kr_sbuf_commit(&sb, sizes[i]);
        kr_sr_mp_end(&sb, start);
        size_t prefix = sizes[i] < 128 ? 1 : sizes[i] < 16384 ? 2 : sizes[i] < 2097152 ? 3 : 4;
        ASSERT_EQ(kr_sbuf_len(&sb), before + prefix + sizes[i]);
        ASSERT_EQ(kr_sr_mp_next_record(kr_sbuf_data(&sb) + before, kr_sbuf_len(&sb) - before, &off,
                                       &blen),
                  (long)(prefix + sizes[i]));
        ASSERT_EQ(off, prefix);
        ASSERT_EQ(blen, sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            ASSERT_EQ((uint8_t)kr_sbuf_data(&sb)[before + prefix + j], (uint8_t)j);
    }
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), 2, "xy", 2);
    kr_sbuf_dispose(&sb);
}

/* ---- round trips ----------------------------------------------------------------------------- */

/* Parses the single record in sb. */
static void parse_written(const kr_sbuf_t *sb, kr_sr_msg_t *m)
{
    size_t off = 0, blen = 0;
    const char *err = NULL;
    ASSERT_EQ(kr_sr_mp_next_record(kr_sbuf_data(sb), kr_sbuf_len(sb), &off, &blen),
              (long)kr_sbuf_len(sb));
    char *body = malloc(blen);
    memcpy(body, kr_sbuf_data(sb) + off, blen);
    if (kr_sr_mp_parse(body, blen, m, &err) != 0)
        KR_TEST_FAIL("parse back: %s", err);
    free(body);
}

TEST(round_trips)
{
    kr_sbuf_t sb;
    kr_sr_msg_t m;
    size_t start;
    char long_id[300];

    memset(long_id, 'i', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    kr_sbuf_init(&sb, 0);

    start = kr_sr_mp_write_invocation_head(&sb, long_id, "Method");
    kr_mp_put_array(&sb, 3);
    kr_mp_put_timestamp_ms(&sb, INT64_C(-62135596800000));
    kr_mp_put_bin(&sb, "\0\1", 2);
    kr_mp_put_map(&sb, 1);
    kr_mp_put_str(&sb, "k", 1);
    kr_mp_put_double(&sb, 0.25);
    kr_sr_mp_write_invocation_tail(&sb, start);
    parse_written(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_INVOCATION);
    ASSERT_STR_EQ(m.invocation_id, long_id);
    ASSERT_STR_EQ(m.target, "Method");
    ASSERT_EQ(kr_sr_msg_argc(&m), 3);
    ASSERT_EQ(m.mp_arguments->via.array.ptr[0].via.ext.size, 12);
    ASSERT_EQ(m.mp_arguments->via.array.ptr[2].via.map.ptr[0].val.via.f64 * 4, 1);
    ASSERT_NULL(m.stream_ids);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    start = kr_sr_mp_write_stream_item_head(&sb, "7");
    kr_mp_put_str(&sb, "item", 4);
    kr_sr_mp_end(&sb, start);
    parse_written(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_STREAM_ITEM);
    ASSERT(str_is(m.mp_item, "item"));
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_mp_write_completion(&sb, "9", "\x92\x01\x02", 3, NULL);
    parse_written(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_COMPLETION);
    ASSERT_EQ(m.has_result, 1);
    ASSERT_EQ(m.mp_result->via.array.size, 2);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_mp_write_completion(&sb, "9", NULL, 0, "An unexpected error occurred.");
    parse_written(&sb, &m);
    ASSERT_STR_EQ(m.error, "An unexpected error occurred.");
    ASSERT_EQ(m.has_result, 0);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_mp_write_completion_empty(&sb, "9");
    parse_written(&sb, &m);
    ASSERT_EQ(m.has_result, 0);
    ASSERT_NULL(m.error);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_mp_write_close(&sb, "Server is shutting down.", 1);
    parse_written(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_CLOSE);
    ASSERT_STR_EQ(m.error, "Server is shutting down.");
    ASSERT_EQ(m.allow_reconnect, 1);
    kr_sr_msg_dispose(&m);

    kr_sbuf_reset(&sb);
    kr_sr_mp_write_sequence(&sb, INT64_MIN);
    parse_written(&sb, &m);
    ASSERT_EQ(m.type, KR_SR_SEQUENCE);
    ASSERT_EQ(m.sequence_id, INT64_MIN);
    kr_sr_msg_dispose(&m);
    kr_sbuf_dispose(&sb);
}

TEST(message_owns_its_memory)
{
    kr_sr_msg_t m, moved;
    /* the input is overwritten and freed by body_ok before anything is read */
    body_ok("96 04 80 a3616263 a154 92 a3626f62 c403000102 92 a131 a132", &m);
    ASSERT_STR_EQ(m.invocation_id, "abc");
    ASSERT(str_is(&m.mp_arguments->via.array.ptr[0], "bob"));
    ASSERT_EQ(memcmp(m.mp_arguments->via.array.ptr[1].via.bin.ptr, "\0\1\2", 3), 0);
    ASSERT_STR_EQ(m.stream_ids[0], "1");
    ASSERT_NULL(m._strings);
    kr_sr_msg_move(&moved, &m);
    ASSERT_NULL(m._zone);
    ASSERT_STR_EQ(moved.stream_ids[1], "2");
    kr_sr_msg_dispose(&m);
    kr_sr_msg_dispose(&moved);
}

KR_TEST_MAIN(KR_TEST_ENTRY(framing), KR_TEST_ENTRY(prescan_accepts_every_type),
             KR_TEST_ENTRY(prescan_rejects_declared_sizes),
             KR_TEST_ENTRY(prescan_rejects_malformed), KR_TEST_ENTRY(prescan_depth),
             KR_TEST_ENTRY(js_invocation), KR_TEST_ENTRY(js_other_messages),
             KR_TEST_ENTRY(js_values_reencode), KR_TEST_ENTRY(dotnet_layouts),
             KR_TEST_ENTRY(sequence_widths), KR_TEST_ENTRY(extra_elements_ignored),
             KR_TEST_ENTRY(unknown_type), KR_TEST_ENTRY(errors_message_shape),
             KR_TEST_ENTRY(nesting_at_the_limit), KR_TEST_ENTRY(errors_too_few_elements),
             KR_TEST_ENTRY(errors_headers), KR_TEST_ENTRY(errors_invocation),
             KR_TEST_ENTRY(nul_bytes_in_names), KR_TEST_ENTRY(stream_ids_limit),
             KR_TEST_ENTRY(errors_other_types), KR_TEST_ENTRY(write_integers),
             KR_TEST_ENTRY(write_lengths), KR_TEST_ENTRY(write_timestamps),
             KR_TEST_ENTRY(put_object_every_type), KR_TEST_ENTRY(write_records_exact_bytes),
             KR_TEST_ENTRY(records_append_and_prefix_lengths), KR_TEST_ENTRY(round_trips),
             KR_TEST_ENTRY(message_owns_its_memory))
