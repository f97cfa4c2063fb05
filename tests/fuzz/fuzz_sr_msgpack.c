/* fuzz_sr_msgpack.c: libFuzzer target for the SignalR MessagePack hub protocol codec
 * (core/kr_sr_msgpack.c) and the msgpack -> Lua -> msgpack bridge (lua/kr_lua_msgpack.c).
 *
 * The input is a received byte stream: it is split with kr_sr_mp_next_record and every record
 * body is prescanned and parsed from an exact-size heap block (ASan catches a read past its
 * end), which is freed before the message is used (so is anything still pointing into it).
 * What a parse accepts is written again with the record encoders and must parse back to the
 * same fields; values are re-encoded with kr_mp_put_object, whose output must be canonical
 * (encoding the parsed-back values gives the same bytes). Invocation arguments also go through
 * kr_mp_push and kr_mp_encode, whose output must pass the prescan.
 * Run with -malloc_limit_mb: an allocation sized from a declared length would exceed it.
 */
#include "kr_lua_msgpack.h"
#include "kr_sr_msgpack.h"

#include <lauxlib.h>
#include <msgpack.h>
#include <stdlib.h>

static void check(int cond)
{
    if (!cond)
        abort();
}

static int same(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* The canonical encoding of o, in its own buffer. */
static void encode_object(kr_sbuf_t *sb, const msgpack_object *o)
{
    kr_sbuf_init(sb, 64);
    kr_mp_put_object(sb, o);
}

/* Whether a and b have the same canonical encoding. */
static int same_object(const msgpack_object *a, const msgpack_object *b)
{
    kr_sbuf_t x, y;
    int eq;
    if (a == NULL || b == NULL)
        return a == b;
    encode_object(&x, a);
    encode_object(&y, b);
    eq = kr_sbuf_len(&x) == kr_sbuf_len(&y) &&
         memcmp(kr_sbuf_data(&x), kr_sbuf_data(&y), kr_sbuf_len(&x)) == 0;
    kr_sbuf_dispose(&x);
    kr_sbuf_dispose(&y);
    return eq;
}

/* sb holds exactly one record: parse its body (from an exact-size copy). */
static void parse_back(const kr_sbuf_t *sb, kr_sr_msg_t *back)
{
    size_t off = 0, blen = 0;
    const char *err = NULL;
    char *body;
    check(kr_sr_mp_next_record(kr_sbuf_data(sb), kr_sbuf_len(sb), &off, &blen) ==
          (long)kr_sbuf_len(sb));
    body = malloc(blen ? blen : 1);
    memcpy(body, kr_sbuf_data(sb) + off, blen);
    check(kr_sr_mp_parse(body, blen, back, &err) == 0);
    free(body);
}

/* A StreamInvocation, which the server never sends, written by hand. */
static void write_stream_invocation(kr_sbuf_t *sb, const kr_sr_msg_t *m)
{
    size_t start = kr_sr_mp_begin(sb);
    kr_mp_put_array(sb, 6);
    kr_mp_put_uint(sb, KR_SR_STREAM_INVOCATION);
    kr_mp_put_map(sb, 0);
    kr_mp_put_str(sb, m->invocation_id, strlen(m->invocation_id));
    kr_mp_put_str(sb, m->target, strlen(m->target));
    kr_mp_put_object(sb, m->mp_arguments);
    kr_mp_put_array(sb, m->nstream_ids);
    for (unsigned i = 0; i < m->nstream_ids; i++)
        kr_mp_put_str(sb, m->stream_ids[i], strlen(m->stream_ids[i]));
    kr_sr_mp_end(sb, start);
}

/* Writes m again with the encoders; returns 0 when there is nothing to compare. */
static int write_again(kr_sbuf_t *sb, const kr_sr_msg_t *m)
{
    kr_sbuf_t result;
    size_t start;

    switch (m->type) {
    case KR_SR_INVOCATION:
        start = kr_sr_mp_write_invocation_head(sb, m->invocation_id, m->target);
        kr_mp_put_object(sb, m->mp_arguments);
        kr_sr_mp_write_invocation_tail(sb, start);
        return 1;
    case KR_SR_STREAM_INVOCATION:
        write_stream_invocation(sb, m);
        return 1;
    case KR_SR_STREAM_ITEM:
        start = kr_sr_mp_write_stream_item_head(sb, m->invocation_id);
        kr_mp_put_object(sb, m->mp_item);
        kr_sr_mp_end(sb, start);
        return 1;
    case KR_SR_COMPLETION:
        if (m->has_result) {
            encode_object(&result, m->mp_result);
            kr_sr_mp_write_completion(sb, m->invocation_id, kr_sbuf_data(&result),
                                      kr_sbuf_len(&result), NULL);
            kr_sbuf_dispose(&result);
        } else if (m->error != NULL) {
            kr_sr_mp_write_completion(sb, m->invocation_id, NULL, 0, m->error);
        } else {
            kr_sr_mp_write_completion_empty(sb, m->invocation_id);
        }
        return 1;
    case KR_SR_PING:
        kr_sr_mp_write_ping(sb);
        return 1;
    case KR_SR_CLOSE:
        kr_sr_mp_write_close(sb, m->error, m->allow_reconnect);
        return 1;
    case KR_SR_ACK:
        kr_sr_mp_write_ack(sb, m->sequence_id);
        return 1;
    case KR_SR_SEQUENCE:
        kr_sr_mp_write_sequence(sb, m->sequence_id);
        return 1;
    default:
        return 0; /* CancelInvocation has no encoder; unknown types carry nothing */
    }
}

/* Ids and names are C strings: a NUL inside the received string ends them early, so compare
 * only when the copy is whole. */
static void round_trip(const kr_sr_msg_t *m)
{
    kr_sbuf_t sb;
    kr_sr_msg_t back;

    kr_sbuf_init(&sb, 128);
    if (!write_again(&sb, m)) {
        kr_sbuf_dispose(&sb);
        return;
    }
    parse_back(&sb, &back);
    check(back.type == m->type);
    check(same(back.invocation_id, m->invocation_id));
    check(same(back.target, m->target));
    check(same(back.error, m->error));
    check(back.allow_reconnect == m->allow_reconnect);
    check(back.sequence_id == m->sequence_id);
    check(back.has_result == m->has_result);
    check(same_object(back.mp_arguments, m->mp_arguments));
    check(same_object(back.mp_item, m->mp_item));
    check(same_object(back.mp_result, m->mp_result));
    if (m->type == KR_SR_STREAM_INVOCATION) {
        check(back.nstream_ids == m->nstream_ids);
        for (unsigned i = 0; i < m->nstream_ids; i++)
            check(strcmp(back.stream_ids[i], m->stream_ids[i]) == 0);
    }
    kr_sr_msg_dispose(&back);
    kr_sbuf_dispose(&sb);
}

static lua_State *lua_state(void)
{
    static lua_State *L;
    if (L == NULL) {
        L = luaL_newstate();
        check(L != NULL);
        kr_json_push_array_mt(L); /* what kr_lua_json_push_module sets up */
        lua_pop(L, 1);
    }
    return L;
}

/* Arguments -> Lua -> msgpack: never raises, leaves the stack alone, writes valid msgpack. */
static void through_lua(const msgpack_object *args)
{
    lua_State *L = lua_state();
    char errbuf[128];
    const char *err = NULL, *perr = NULL;
    kr_sbuf_t sb;

    check(lua_gettop(L) == 0);
    if (kr_mp_push(L, args, NULL, errbuf, sizeof(errbuf)) != 0) {
        check(lua_gettop(L) == 0 && errbuf[0] != '\0');
        return;
    }
    check(lua_gettop(L) == 1);
    kr_sbuf_init(&sb, 128);
    if (kr_mp_encode(L, 1, &sb, NULL, &err) == 0)
        check(kr_sr_mp_prescan(kr_sbuf_data(&sb), kr_sbuf_len(&sb), KR_SR_MP_DEPTH_LIMIT, &perr) ==
              0);
    else
        check(err != NULL); /* e.g. a float map key (a uint64 above INT64_MAX) */
    check(lua_gettop(L) == 1);
    kr_sbuf_dispose(&sb);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
}

static void one_record(const char *p, size_t len)
{
    char *body = malloc(len ? len : 1);
    const char *err = NULL, *perr = NULL;
    int scanned;
    kr_sr_msg_t m;

    memcpy(body, p, len);
    scanned = kr_sr_mp_prescan(body, len, KR_SR_MP_MAX_DEPTH, &perr);
    check(scanned == 0 ? perr == NULL : perr != NULL);
    if (kr_sr_mp_parse(body, len, &m, &err) != 0) {
        check(err != NULL && m._zone == NULL && m.type == 0);
        if (scanned != 0)
            check(strcmp(err, perr) == 0);
        free(body);
        return;
    }
    free(body); /* the message must own everything it points to */
    check(scanned == 0 && err == NULL);
    check(m.protocol == KR_SR_PROTO_MSGPACK && m._strings == NULL && m._root == NULL);
    check((m._zone != NULL) == (m.type <= KR_SR_SEQUENCE));
    if (m.type == KR_SR_INVOCATION || m.type == KR_SR_STREAM_INVOCATION) {
        check(m.target != NULL && m.target[0] != '\0');
        check(m.mp_arguments != NULL && m.mp_arguments->type == MSGPACK_OBJECT_ARRAY);
        check(m.invocation_id == NULL || m.invocation_id[0] != '\0');
        check((m.stream_ids == NULL) == (m.nstream_ids == 0));
        through_lua(m.mp_arguments);
    }
    round_trip(&m);
    kr_sr_msg_dispose(&m);
    check(m._zone == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t left = size, off = 0, blen = 0;
    long n;

    while ((n = kr_sr_mp_next_record(p, left, &off, &blen)) > 0) {
        check((size_t)n == off + blen && (size_t)n <= left && off >= 1 && off <= 5);
        if (blen > 0)
            one_record(p + off, blen);
        p += n;
        left -= (size_t)n;
    }
    check(n == 0 || n == -1);
    check(left <= size);
    return 0;
}
