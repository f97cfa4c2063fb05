/* kr_sr_msgpack.c: the SignalR MessagePack hub protocol codec (see kr_sr_msgpack.h).
 *
 * Decode runs in three steps. kr_sr_mp_prescan walks the bytes by hand and refuses anything
 * whose declared sizes do not fit in the input, because msgpack-c reserves memory from a
 * declared array or map count before it has seen the elements: 5 bytes declaring 2^32-1
 * elements would otherwise ask for 96 GB. Then the body is copied into a zone the message
 * owns and msgpack-c decodes that copy (its strings point into the bytes it decoded, so the
 * bytes must live as long as the message). Last, the layout of section 5 is checked and the
 * names the hub needs as C strings are copied, NUL-terminated, into the same zone.
 * Encode appends to a kr_sbuf_t with the smallest MessagePack encoding of each value; a
 * record reserves the longest VarInt prefix (5 bytes) and closes the gap when it ends.
 */
#include "kr_sr_msgpack.h"

#include <limits.h>
#include <msgpack.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE, the unpacker's nesting limit */

_Static_assert(KR_SR_MP_MAX_DEPTH <= MSGPACK_EMBED_STACK_SIZE,
               "msgpack-c cannot decode what the prescan lets through");

#define VARINT_MAX 5
#define RECORD_MAX 0x7fffffffu        /* 2^31-1: the largest length the clients accept */
#define STREAM_IDS_MAX 1024           /* as the JSON codec: more is not a real client */
#define TS_EXT_TYPE (-1)              /* the timestamp extension */
#define TS64_MAX_SECONDS (1ull << 34) /* timestamp 64 keeps seconds in 34 bits */

/* ---- framing --------------------------------------------------------------------------------- */

long kr_sr_mp_next_record(const char *data, size_t len, size_t *body_off, size_t *body_len)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; i < VARINT_MAX; i++) {
        uint8_t b;
        if (i >= len)
            return 0;
        b = (uint8_t)data[i];
        if (i == VARINT_MAX - 1 && b > 7)
            return -1;
        n |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0)
            break;
    }
    if (n > RECORD_MAX) /* unreachable with the 5th byte <= 7; kept as the rule itself */
        return -1;
    i++; /* prefix length */
    *body_off = i;
    *body_len = (size_t)n; /* set even when the body is incomplete: see the header */
    if (len - i < n)
        return 0;
    return (long)(i + n);
}

/* ---- prescan --------------------------------------------------------------------------------- */

static uint64_t read_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* How one value starts: the bytes of its header, then either a payload to skip or a number
 * of child values (a map counts keys and values). */
typedef struct head_s {
    size_t header;     /* type byte and length/count fields */
    uint64_t payload;  /* bytes after the header (str, bin, ext data, scalars) */
    uint64_t children; /* values that follow (arrays and maps) */
    int container;
} head_t;

enum { SCALAR, BYTES, EXT, ARRAY, MAP };

/* First bytes 0xc4..0xdf: the width of the big-endian length or count after the type byte
 * and what it counts, or the fixed payload of a scalar. The other first bytes are fix forms
 * (fixint, fixstr, fixarray, fixmap), nil, the booleans and the reserved 0xc1. */
static const struct {
    uint8_t field;
    uint8_t kind;
    uint8_t payload;
} head_rules[0xe0] = {
    /* clang-format off */
    [0xc4] = {1, BYTES, 0}, /* bin 8/16/32 */
    [0xc5] = {2, BYTES, 0},
    [0xc6] = {4, BYTES, 0},
    [0xc7] = {1, EXT, 0}, /* ext 8/16/32 */
    [0xc8] = {2, EXT, 0},
    [0xc9] = {4, EXT, 0},
    [0xca] = {0, SCALAR, 4}, /* float 32/64 */
    [0xcb] = {0, SCALAR, 8},
    [0xcc] = {0, SCALAR, 1}, /* uint 8/16/32/64 */
    [0xcd] = {0, SCALAR, 2},
    [0xce] = {0, SCALAR, 4},
    [0xcf] = {0, SCALAR, 8},
    [0xd0] = {0, SCALAR, 1}, /* int 8/16/32/64 */
    [0xd1] = {0, SCALAR, 2},
    [0xd2] = {0, SCALAR, 4},
    [0xd3] = {0, SCALAR, 8},
    [0xd4] = {0, SCALAR, 2}, /* fixext 1/2/4/8/16: the type byte and the data */
    [0xd5] = {0, SCALAR, 3},
    [0xd6] = {0, SCALAR, 5},
    [0xd7] = {0, SCALAR, 9},
    [0xd8] = {0, SCALAR, 17},
    [0xd9] = {1, BYTES, 0}, /* str 8/16/32 */
    [0xda] = {2, BYTES, 0},
    [0xdb] = {4, BYTES, 0},
    [0xdc] = {2, ARRAY, 0}, /* array 16/32 */
    [0xdd] = {4, ARRAY, 0},
    [0xde] = {2, MAP, 0}, /* map 16/32 */
    [0xdf] = {4, MAP, 0},
    /* clang-format on */
};

/* Reads the header of the value at p (left >= 1 bytes) and checks that what it declares fits
 * in the bytes left. */
static const char *read_head(const uint8_t *p, size_t left, head_t *h)
{
    uint8_t b = p[0];
    int kind = SCALAR;
    uint64_t n = 0;

    memset(h, 0, sizeof(*h));
    h->header = 1;
    if (b == 0xc1)
        return "reserved byte 0xc1";
    if (b >= 0x80 && b <= 0x8f) {
        kind = MAP;
        n = b & 0x0f;
    } else if (b >= 0x90 && b <= 0x9f) {
        kind = ARRAY;
        n = b & 0x0f;
    } else if (b >= 0xa0 && b <= 0xbf) {
        kind = BYTES;
        n = b & 0x1f;
    } else if (b >= 0xc4 && b <= 0xdf) {
        size_t field = head_rules[b].field;
        kind = head_rules[b].kind;
        h->payload = head_rules[b].payload;
        if (left - 1 < field)
            return "truncated value";
        n = read_be(p + 1, field);
        h->header += field;
    }
    switch (kind) {
    case BYTES:
        h->payload = n;
        break;
    case EXT:
        h->payload = n + 1; /* the extension type byte */
        break;
    case ARRAY:
    case MAP:
        h->container = 1;
        h->children = kind == MAP ? n * 2 : n;
        break;
    default:
        break;
    }
    if (h->payload > left - h->header)
        return kind == SCALAR ? "truncated value" : "declared length exceeds the message";
    /* Every element takes at least one byte. */
    if (h->children > left - h->header)
        return "declared count exceeds the message";
    return NULL;
}

int kr_sr_mp_prescan(const char *data, size_t len, int max_depth, const char **err)
{
    uint64_t open[KR_SR_MP_DEPTH_LIMIT]; /* values still due in each open container */
    const uint8_t *p = (const uint8_t *)data;
    size_t pos = 0;
    int depth = 0;

    if (max_depth > KR_SR_MP_DEPTH_LIMIT)
        max_depth = KR_SR_MP_DEPTH_LIMIT;
    *err = NULL;
    if (len == 0) {
        *err = "empty message";
        return KR_EPROTO;
    }
    for (;;) {
        head_t h;
        if (pos >= len) {
            *err = "truncated value";
            return KR_EPROTO;
        }
        if ((*err = read_head(p + pos, len - pos, &h)) != NULL)
            return KR_EPROTO;
        pos += h.header + (size_t)h.payload;
        if (h.container) {
            if (depth >= max_depth) {
                *err = "nesting too deep";
                return KR_EPROTO;
            }
            if (h.children > 0) {
                open[depth++] = h.children;
                continue;
            }
        }
        /* One value is complete: close every container it completes. */
        while (depth > 0 && --open[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }
    if (pos != len) {
        *err = "trailing bytes after the message";
        return KR_EPROTO;
    }
    return 0;
}

/* ---- parse ----------------------------------------------------------------------------------- */

/* Zone memory: an allocation failure aborts, as kr_malloc does. */
static void *zone_alloc(msgpack_zone *z, size_t n)
{
    void *p = msgpack_zone_malloc(z, n ? n : 1);
    KR_ASSERT(p != NULL);
    return p;
}

static int is_str(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR;
}

/* A NUL-terminated copy of a str object, in the zone. */
static const char *zone_cstr(msgpack_zone *z, const msgpack_object *o)
{
    char *s = zone_alloc(z, (size_t)o->via.str.size + 1);
    if (o->via.str.size > 0) /* msgpack-c leaves ptr NULL for an empty string */
        memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = '\0';
    return s;
}

static int is_string_map(const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        if (!is_str(&o->via.map.ptr[i].key) || !is_str(&o->via.map.ptr[i].val))
            return 0;
    }
    return 1;
}

/* Fewest elements of each known type: shorter is a protocol error, longer is accepted (a later
 * protocol version may append fields). */
static const struct {
    uint32_t min;
    const char *short_err;
} layouts[] = {
    [KR_SR_INVOCATION] = {5, "Invocation message has too few elements"},
    [KR_SR_STREAM_ITEM] = {4, "StreamItem message has too few elements"},
    [KR_SR_COMPLETION] = {4, "Completion message has too few elements"},
    [KR_SR_STREAM_INVOCATION] = {5, "StreamInvocation message has too few elements"},
    [KR_SR_CANCEL_INVOCATION] = {3, "CancelInvocation message has too few elements"},
    [KR_SR_PING] = {1, "Ping message has too few elements"},
    [KR_SR_CLOSE] = {2, "Close message has too few elements"},
    [KR_SR_ACK] = {2, "Ack message has too few elements"},
    [KR_SR_SEQUENCE] = {2, "Sequence message has too few elements"},
};

/* The parse in progress: the message array, its zone and the message being filled. */
typedef struct rd_s {
    const msgpack_object *a;
    uint32_t n;
    msgpack_zone *zone;
    kr_sr_msg_t *m;
} rd_t;

/* The id of an Invocation: nil or "" means none (fire-and-forget). Emptiness is judged on
 * the C string, as kr_sr_json does: a NUL byte ends it. */
static const char *read_optional_id(rd_t *r)
{
    const msgpack_object *o = &r->a[2];
    const char *id;
    if (o->type == MSGPACK_OBJECT_NIL)
        return NULL;
    if (!is_str(o))
        return "\"invocationId\" is not a string";
    id = zone_cstr(r->zone, o);
    r->m->invocation_id = id[0] != '\0' ? id : NULL;
    return NULL;
}

static const char *read_required_id(rd_t *r)
{
    const msgpack_object *o = &r->a[2];
    if (o->type == MSGPACK_OBJECT_NIL)
        return "missing \"invocationId\"";
    if (!is_str(o))
        return "\"invocationId\" is not a string";
    r->m->invocation_id = zone_cstr(r->zone, o);
    if (r->m->invocation_id[0] == '\0')
        return "\"invocationId\" is empty";
    return NULL;
}

static const char *read_stream_ids(rd_t *r, const msgpack_object *o)
{
    const char **ids;
    uint32_t n;

    if (o->type != MSGPACK_OBJECT_ARRAY)
        return "\"streamIds\" is not an array of strings";
    n = o->via.array.size;
    for (uint32_t i = 0; i < n; i++) {
        if (!is_str(&o->via.array.ptr[i]))
            return "\"streamIds\" is not an array of strings";
    }
    if (n == 0)
        return NULL; /* an empty list is no list */
    if (n > STREAM_IDS_MAX)
        return "\"streamIds\" is too long";
    ids = zone_alloc(r->zone, n * sizeof(*ids));
    for (uint32_t i = 0; i < n; i++)
        ids[i] = zone_cstr(r->zone, &o->via.array.ptr[i]);
    r->m->stream_ids = ids;
    r->m->nstream_ids = n;
    return NULL;
}

/* [1|4, headers, id, target, [args], [streamIds]?]; the id was read by the caller. */
static const char *read_invocation(rd_t *r)
{
    const msgpack_object *target = &r->a[3], *args = &r->a[4];
    if (!is_str(target))
        return "\"target\" is not a string";
    r->m->target = zone_cstr(r->zone, target);
    if (r->m->target[0] == '\0')
        return "\"target\" is empty";
    if (args->type != MSGPACK_OBJECT_ARRAY)
        return "\"arguments\" is not an array";
    r->m->mp_arguments = args;
    return r->n >= 6 ? read_stream_ids(r, &r->a[5]) : NULL;
}

/* [3, headers, id, kind, result?]: 1 = error (a string follows), 2 = void (nothing follows),
 * 3 = a value follows (nil included). */
static const char *read_completion(rd_t *r)
{
    const msgpack_object *kind = &r->a[3];
    if (kind->type != MSGPACK_OBJECT_POSITIVE_INTEGER || kind->via.u64 < 1 || kind->via.u64 > 3)
        return "completion result kind is not 1, 2 or 3";
    if (kind->via.u64 == 2)
        return r->n == 4 ? NULL : "void completion has a result";
    if (r->n < 5)
        return "Completion message has too few elements";
    if (kind->via.u64 == 1) {
        if (!is_str(&r->a[4]))
            return "\"error\" is not a string";
        r->m->error = zone_cstr(r->zone, &r->a[4]);
        return NULL;
    }
    r->m->mp_result = &r->a[4];
    r->m->has_result = 1;
    return NULL;
}

/* [7, error|nil, allowReconnect?] */
static const char *read_close(rd_t *r)
{
    const msgpack_object *error = &r->a[1];
    if (error->type != MSGPACK_OBJECT_NIL) {
        if (!is_str(error))
            return "\"error\" is not a string";
        r->m->error = zone_cstr(r->zone, error);
    }
    if (r->n >= 3) {
        if (r->a[2].type != MSGPACK_OBJECT_BOOLEAN)
            return "\"allowReconnect\" is not a boolean";
        r->m->allow_reconnect = r->a[2].via.boolean ? 1 : 0;
    }
    return NULL;
}

/* [8|9, seq] in any integer width that fits int64. */
static const char *read_sequence_id(rd_t *r)
{
    const msgpack_object *o = &r->a[1];
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        r->m->sequence_id = o->via.i64;
        return NULL;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return "\"sequenceId\" is not an integer";
    if (o->via.u64 > INT64_MAX)
        return "\"sequenceId\" is out of range";
    r->m->sequence_id = (int64_t)o->via.u64;
    return NULL;
}

/* The message type: a positive integer in the first element. */
static const char *read_type(const msgpack_object *root, int *type)
{
    const msgpack_object *t;
    if (root->type != MSGPACK_OBJECT_ARRAY)
        return "message is not an array";
    if (root->via.array.size == 0)
        return "message is an empty array";
    t = &root->via.array.ptr[0];
    if (t->type != MSGPACK_OBJECT_POSITIVE_INTEGER || t->via.u64 < 1 || t->via.u64 > INT_MAX)
        return "message type is not a positive integer";
    *type = (int)t->via.u64;
    return NULL;
}

static const char *read_message(rd_t *r)
{
    kr_sr_msg_t *m = r->m;
    const char *e;

    if (r->n < layouts[m->type].min)
        return layouts[m->type].short_err;
    if (m->type <= KR_SR_CANCEL_INVOCATION && !is_string_map(&r->a[1]))
        return "\"headers\" is not a map of strings";
    switch (m->type) {
    case KR_SR_INVOCATION:
        if ((e = read_optional_id(r)) != NULL)
            return e;
        return read_invocation(r);
    case KR_SR_STREAM_INVOCATION:
        if ((e = read_required_id(r)) != NULL)
            return e;
        return read_invocation(r);
    case KR_SR_STREAM_ITEM:
        m->mp_item = &r->a[3];
        return read_required_id(r);
    case KR_SR_COMPLETION:
        if ((e = read_required_id(r)) != NULL)
            return e;
        return read_completion(r);
    case KR_SR_CANCEL_INVOCATION:
        return read_required_id(r);
    case KR_SR_CLOSE:
        return read_close(r);
    case KR_SR_ACK:
    case KR_SR_SEQUENCE:
        return read_sequence_id(r);
    default: /* KR_SR_PING */
        return NULL;
    }
}

/* Decodes data[0..len) (prescanned) from a copy in zone. */
static const char *decode(msgpack_zone *zone, const char *data, size_t len, msgpack_object *root)
{
    char *copy = zone_alloc(zone, len);
    size_t off = 0;
    memcpy(copy, data, len);
    if (msgpack_unpack(copy, len, &off, zone, root) != MSGPACK_UNPACK_SUCCESS || off != len)
        return "message is not valid MessagePack";
    return NULL;
}

int kr_sr_mp_parse(const char *data, size_t len, kr_sr_msg_t *out, const char **err)
{
    msgpack_object root;
    rd_t r = {.m = out};
    const char *e;
    int type = 0;

    memset(out, 0, sizeof(*out));
    *err = NULL;
    if (kr_sr_mp_prescan(data, len, KR_SR_MP_MAX_DEPTH, &e) != 0) {
        *err = e;
        return KR_EPROTO;
    }
    r.zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    KR_ASSERT(r.zone != NULL);
    out->_zone = r.zone;
    if ((e = decode(r.zone, data, len, &root)) != NULL || (e = read_type(&root, &type)) != NULL)
        goto fail;
    out->type = type;
    if (type > KR_SR_SEQUENCE) {
        /* Unknown type: only the number is meaningful (callers ignore the message). */
        kr_sr_msg_dispose(out);
        out->type = type;
        out->protocol = KR_SR_PROTO_MSGPACK;
        return 0;
    }
    r.a = root.via.array.ptr;
    r.n = root.via.array.size;
    if ((e = read_message(&r)) != NULL)
        goto fail;
    out->protocol = KR_SR_PROTO_MSGPACK;
    return 0;

fail:
    kr_sr_msg_dispose(out);
    *err = e;
    return KR_EPROTO;
}

/* ---- value writer ---------------------------------------------------------------------------- */

/* The n low bytes of v, big-endian. */
static void put_bytes(kr_sbuf_t *sb, uint64_t v, size_t n)
{
    char *p = kr_sbuf_reserve(sb, n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(v >> (8 * (n - 1 - i)));
    kr_sbuf_commit(sb, n);
}

/* A type byte followed by the n low bytes of v. */
static void put_be(kr_sbuf_t *sb, uint8_t type, uint64_t v, size_t n)
{
    kr_sbuf_putc(sb, (char)type);
    put_bytes(sb, v, n);
}

/* A length or count header: the fix form below fix_limit, else the 8/16/32-bit forms
 * (code8 0 when the format has no 8-bit form: arrays and maps). */
static void put_header(kr_sbuf_t *sb, uint32_t n, uint8_t fix, uint32_t fix_limit, uint8_t code8,
                       uint8_t code16, uint8_t code32)
{
    if (n < fix_limit)
        kr_sbuf_putc(sb, (char)(fix | n));
    else if (code8 != 0 && n <= UINT8_MAX)
        put_be(sb, code8, n, 1);
    else if (n <= UINT16_MAX)
        put_be(sb, code16, n, 2);
    else
        put_be(sb, code32, n, 4);
}

void kr_mp_put_nil(kr_sbuf_t *sb)
{
    kr_sbuf_putc(sb, (char)0xc0);
}

void kr_mp_put_bool(kr_sbuf_t *sb, int v)
{
    kr_sbuf_putc(sb, (char)(v ? 0xc3 : 0xc2));
}

void kr_mp_put_uint(kr_sbuf_t *sb, uint64_t v)
{
    if (v <= 0x7f)
        kr_sbuf_putc(sb, (char)v);
    else if (v <= UINT8_MAX)
        put_be(sb, 0xcc, v, 1);
    else if (v <= UINT16_MAX)
        put_be(sb, 0xcd, v, 2);
    else if (v <= UINT32_MAX)
        put_be(sb, 0xce, v, 4);
    else
        put_be(sb, 0xcf, v, 8);
}

void kr_mp_put_int(kr_sbuf_t *sb, int64_t v)
{
    if (v >= 0)
        kr_mp_put_uint(sb, (uint64_t)v);
    else if (v >= -32)
        kr_sbuf_putc(sb, (char)(uint8_t)v); /* negative fixint 0xe0..0xff */
    else if (v >= INT8_MIN)
        put_be(sb, 0xd0, (uint64_t)v, 1);
    else if (v >= INT16_MIN)
        put_be(sb, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN)
        put_be(sb, 0xd2, (uint64_t)v, 4);
    else
        put_be(sb, 0xd3, (uint64_t)v, 8);
}

void kr_mp_put_double(kr_sbuf_t *sb, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    put_be(sb, 0xcb, bits, 8);
}

/* float32, for re-encoding a float32 as it came. */
static void put_float(kr_sbuf_t *sb, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof(bits));
    put_be(sb, 0xca, bits, 4);
}

void kr_mp_put_str(kr_sbuf_t *sb, const char *s, size_t len)
{
    KR_ASSERT(len <= UINT32_MAX);
    put_header(sb, (uint32_t)len, 0xa0, 32, 0xd9, 0xda, 0xdb);
    kr_sbuf_append(sb, s, len);
}

void kr_mp_put_bin(kr_sbuf_t *sb, const void *p, size_t len)
{
    KR_ASSERT(len <= UINT32_MAX);
    put_header(sb, (uint32_t)len, 0xc4, 0, 0xc4, 0xc5, 0xc6);
    kr_sbuf_append(sb, p, len);
}

void kr_mp_put_array(kr_sbuf_t *sb, uint32_t n)
{
    put_header(sb, n, 0x90, 16, 0, 0xdc, 0xdd);
}

void kr_mp_put_map(kr_sbuf_t *sb, uint32_t n)
{
    put_header(sb, n, 0x80, 16, 0, 0xde, 0xdf);
}

/* An extension header: fixext when the size is 1, 2, 4, 8 or 16, else ext 8/16/32. */
static void put_ext_header(kr_sbuf_t *sb, int8_t type, uint32_t size)
{
    static const uint8_t fixext[17] = {[1] = 0xd4, [2] = 0xd5, [4] = 0xd6, [8] = 0xd7, [16] = 0xd8};
    if (size <= 16 && fixext[size] != 0)
        kr_sbuf_putc(sb, (char)fixext[size]);
    else
        put_header(sb, size, 0xc7, 0, 0xc7, 0xc8, 0xc9);
    kr_sbuf_putc(sb, (char)type);
}

void kr_mp_put_timestamp_ms(kr_sbuf_t *sb, int64_t ms)
{
    int64_t sec = ms / 1000, rem = ms % 1000;
    uint32_t nsec;
    if (rem < 0) { /* floor: the nanoseconds field is never negative */
        sec--;
        rem += 1000;
    }
    nsec = (uint32_t)rem * 1000000u;
    if (nsec == 0 && sec >= 0 && sec <= UINT32_MAX) { /* timestamp 32 */
        put_ext_header(sb, TS_EXT_TYPE, 4);
        put_bytes(sb, (uint64_t)sec, 4);
    } else if (sec >= 0 && (uint64_t)sec < TS64_MAX_SECONDS) { /* timestamp 64 */
        put_ext_header(sb, TS_EXT_TYPE, 8);
        put_bytes(sb, (uint64_t)nsec << 34 | (uint64_t)sec, 8);
    } else { /* timestamp 96 */
        put_ext_header(sb, TS_EXT_TYPE, 12);
        put_bytes(sb, nsec, 4);
        put_bytes(sb, (uint64_t)sec, 8);
    }
}

void kr_mp_put_object(kr_sbuf_t *sb, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        kr_mp_put_nil(sb);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        kr_mp_put_bool(sb, o->via.boolean);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        kr_mp_put_uint(sb, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        kr_mp_put_int(sb, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
        put_float(sb, (float)o->via.f64);
        break;
    case MSGPACK_OBJECT_FLOAT64:
        kr_mp_put_double(sb, o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        kr_mp_put_str(sb, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        kr_mp_put_bin(sb, o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_EXT:
        put_ext_header(sb, o->via.ext.type, o->via.ext.size);
        kr_sbuf_append(sb, o->via.ext.ptr, o->via.ext.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        kr_mp_put_array(sb, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            kr_mp_put_object(sb, &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        kr_mp_put_map(sb, o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            kr_mp_put_object(sb, &o->via.map.ptr[i].key);
            kr_mp_put_object(sb, &o->via.map.ptr[i].val);
        }
        break;
    default:
        KR_ASSERT(!"unknown msgpack object type");
    }
}

/* ---- record encoders ------------------------------------------------------------------------- */

size_t kr_sr_mp_begin(kr_sbuf_t *sb)
{
    size_t start = kr_sbuf_len(sb);
    kr_sbuf_reserve(sb, VARINT_MAX);
    kr_sbuf_commit(sb, VARINT_MAX);
    return start;
}

void kr_sr_mp_end(kr_sbuf_t *sb, size_t start)
{
    char *rec = kr_sbuf_data(sb) + start;
    size_t body = kr_sbuf_len(sb) - start - VARINT_MAX, n = 0;
    uint64_t v = body;

    KR_ASSERT(body <= RECORD_MAX);
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        rec[n++] = (char)(v ? b | 0x80 : b);
    } while (v);
    memmove(rec + n, rec + VARINT_MAX, body);
    sb->buf->len -= VARINT_MAX - n;
}

static void put_cstr(kr_sbuf_t *sb, const char *s)
{
    kr_mp_put_str(sb, s, strlen(s));
}

/* [type, {}, id, the first elements of each message with a header map. */
static size_t begin_with_id(kr_sbuf_t *sb, uint32_t nelems, int type, const char *invocation_id)
{
    size_t start = kr_sr_mp_begin(sb);
    kr_mp_put_array(sb, nelems);
    kr_mp_put_uint(sb, (uint64_t)type);
    kr_mp_put_map(sb, 0);
    if (invocation_id != NULL && invocation_id[0] != '\0')
        put_cstr(sb, invocation_id);
    else
        kr_mp_put_nil(sb);
    return start;
}

void kr_sr_mp_write_ping(kr_sbuf_t *sb)
{
    kr_sbuf_append(sb, "\x02\x91\x06", 3);
}

void kr_sr_mp_write_close(kr_sbuf_t *sb, const char *error, int allow_reconnect)
{
    size_t start = kr_sr_mp_begin(sb);
    kr_mp_put_array(sb, 3);
    kr_mp_put_uint(sb, KR_SR_CLOSE);
    if (error != NULL)
        put_cstr(sb, error);
    else
        kr_mp_put_nil(sb);
    kr_mp_put_bool(sb, allow_reconnect);
    kr_sr_mp_end(sb, start);
}

void kr_sr_mp_write_completion(kr_sbuf_t *sb, const char *invocation_id, const char *result_mp,
                               size_t result_len, const char *error)
{
    size_t start;
    KR_ASSERT(invocation_id != NULL);
    start = begin_with_id(sb, 5, KR_SR_COMPLETION, invocation_id);
    if (error != NULL) {
        kr_mp_put_uint(sb, 1);
        put_cstr(sb, error);
    } else {
        kr_mp_put_uint(sb, 3);
        if (result_mp == NULL || result_len == 0)
            kr_mp_put_nil(sb);
        else
            kr_sbuf_append(sb, result_mp, result_len);
    }
    kr_sr_mp_end(sb, start);
}

void kr_sr_mp_write_completion_empty(kr_sbuf_t *sb, const char *invocation_id)
{
    size_t start;
    KR_ASSERT(invocation_id != NULL);
    start = begin_with_id(sb, 4, KR_SR_COMPLETION, invocation_id);
    kr_mp_put_uint(sb, 2);
    kr_sr_mp_end(sb, start);
}

size_t kr_sr_mp_write_invocation_head(kr_sbuf_t *sb, const char *invocation_id, const char *target)
{
    size_t start;
    KR_ASSERT(target != NULL);
    start = begin_with_id(sb, 6, KR_SR_INVOCATION, invocation_id);
    put_cstr(sb, target);
    return start;
}

void kr_sr_mp_write_invocation_tail(kr_sbuf_t *sb, size_t start)
{
    kr_mp_put_array(sb, 0); /* streamIds */
    kr_sr_mp_end(sb, start);
}

size_t kr_sr_mp_write_stream_item_head(kr_sbuf_t *sb, const char *invocation_id)
{
    KR_ASSERT(invocation_id != NULL);
    return begin_with_id(sb, 4, KR_SR_STREAM_ITEM, invocation_id);
}

static void write_sequence_message(kr_sbuf_t *sb, int type, int64_t seq)
{
    size_t start = kr_sr_mp_begin(sb);
    kr_mp_put_array(sb, 2);
    kr_mp_put_uint(sb, (uint64_t)type);
    kr_mp_put_int(sb, seq);
    kr_sr_mp_end(sb, start);
}

void kr_sr_mp_write_ack(kr_sbuf_t *sb, int64_t seq)
{
    write_sequence_message(sb, KR_SR_ACK, seq);
}

void kr_sr_mp_write_sequence(kr_sbuf_t *sb, int64_t seq)
{
    write_sequence_message(sb, KR_SR_SEQUENCE, seq);
}
