/* loadgen_msgpack.h: the little MessagePack reading the fan-out load generator needs (loadgen.c).
 *
 * SignalR's MessagePack hub protocol frames each record as VarInt(length) + one msgpack array;
 * an Invocation is [1, headers, id|nil, target, [args...], [streamIds]?]. The load generator only
 * counts Invocation records and takes the publish time "t" out of the first argument: either the
 * argument itself (a number) or the integer under the key "t" of that map or of its "data" map
 * (kr.send_event("tick", {n = i, t = µs}) arrives as {eventName, data = {n, t}, timestamp}).
 *
 * Header-only, no state: every function reads from a bounded cursor and fails (returns -1) on
 * anything truncated or malformed; nesting is bounded (MP_MAX_DEPTH).
 */
#ifndef LOADGEN_MSGPACK_H
#define LOADGEN_MSGPACK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MP_MAX_DEPTH 16

typedef struct {
    const unsigned char *p, *end;
} mp_rd;

/* The SignalR VarInt length prefix: 7 bits per byte, lowest first, at most 5 bytes.
 * Returns the prefix size (> 0), 0 when more bytes are needed, -1 when malformed. */
static int mp_varint(const unsigned char *p, size_t n, uint32_t *len)
{
    uint32_t v = 0;
    for (int i = 0; i < 5; i++) {
        if ((size_t)i >= n)
            return 0;
        if (i == 4 && p[i] > 7)
            return -1; /* more than 2^31 - 1 */
        v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *len = v;
            return i + 1;
        }
    }
    return -1;
}

static int mp_need(const mp_rd *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n ? 0 : -1;
}

static uint64_t mp_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads an integer of any width (positive/negative fixint, uint8..64, int8..64). */
static int mp_read_int(mp_rd *r, int64_t *v)
{
    if (mp_need(r, 1) < 0)
        return -1;
    unsigned char b = *r->p;
    if (b <= 0x7f || b >= 0xe0) {
        *v = (int8_t)b;
        r->p++;
        return 0;
    }
    int w = b == 0xcc || b == 0xd0 ? 1 : b == 0xcd || b == 0xd1 ? 2 : b == 0xce || b == 0xd2 ? 4
          : b == 0xcf || b == 0xd3                             ? 8
                                                               : 0;
    if (w == 0 || mp_need(r, 1 + (size_t)w) < 0)
        return -1;
    uint64_t u = mp_be(r->p + 1, w);
    if (b >= 0xd0) /* signed */
        *v = w == 1 ? (int8_t)u : w == 2 ? (int16_t)u : w == 4 ? (int32_t)u : (int64_t)u;
    else
        *v = (int64_t)u; /* a uint64 above INT64_MAX wraps: not a time */
    r->p += 1 + w;
    return 0;
}

/* Array or map header: *n elements (a map's n counts pairs). kind: 0x90 array, 0x80 map. */
static int mp_read_container(mp_rd *r, unsigned kind, uint32_t *n)
{
    if (mp_need(r, 1) < 0)
        return -1;
    unsigned char b = *r->p;
    unsigned c16 = kind == 0x90 ? 0xdc : 0xde;
    if ((b & 0xf0) == kind) {
        *n = b & 0x0f;
        r->p++;
    } else if (b == c16 || b == c16 + 1) {
        int w = b == c16 ? 2 : 4;
        if (mp_need(r, 1 + (size_t)w) < 0)
            return -1;
        *n = (uint32_t)mp_be(r->p + 1, w);
        r->p += 1 + w;
    } else {
        return -1;
    }
    /* every element takes at least one byte (two for a map pair) */
    return (size_t)(r->end - r->p) >= (size_t)*n * (kind == 0x80 ? 2 : 1) ? 0 : -1;
}

/* A str (fixstr, str8/16/32): *s points into the buffer, not NUL-terminated. */
static int mp_read_str(mp_rd *r, const char **s, uint32_t *len)
{
    if (mp_need(r, 1) < 0)
        return -1;
    unsigned char b = *r->p;
    size_t hl;
    if ((b & 0xe0) == 0xa0) {
        *len = b & 0x1f;
        hl = 1;
    } else if (b >= 0xd9 && b <= 0xdb) {
        int w = 1 << (b - 0xd9);
        if (mp_need(r, 1 + (size_t)w) < 0)
            return -1;
        *len = (uint32_t)mp_be(r->p + 1, w);
        hl = 1 + (size_t)w;
    } else {
        return -1;
    }
    if (mp_need(r, hl + *len) < 0)
        return -1;
    *s = (const char *)r->p + hl;
    r->p += hl + *len;
    return 0;
}

/* Skips one value of any type. */
static int mp_skip(mp_rd *r, int depth)
{
    if (depth > MP_MAX_DEPTH || mp_need(r, 1) < 0)
        return -1;
    unsigned char b = *r->p;
    uint32_t n;
    size_t skip; /* bytes after the type byte, for the flat types */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        skip = 0;
    } else if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb)) {
        const char *s;
        return mp_read_str(r, &s, &n);
    } else if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd || (b & 0xf0) == 0x80 || b == 0xde ||
               b == 0xdf) {
        int is_map = (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
        if (mp_read_container(r, is_map ? 0x80 : 0x90, &n) < 0)
            return -1;
        for (uint64_t i = 0; i < (uint64_t)n * (is_map ? 2 : 1); i++)
            if (mp_skip(r, depth + 1) < 0)
                return -1;
        return 0;
    } else if (b >= 0xc4 && b <= 0xc6) { /* bin 8/16/32 */
        int w = 1 << (b - 0xc4);
        if (mp_need(r, 1 + (size_t)w) < 0)
            return -1;
        skip = (size_t)w + mp_be(r->p + 1, w);
    } else if (b >= 0xc7 && b <= 0xc9) { /* ext 8/16/32: length, type, data */
        int w = 1 << (b - 0xc7);
        if (mp_need(r, 1 + (size_t)w) < 0)
            return -1;
        skip = (size_t)w + 1 + mp_be(r->p + 1, w);
    } else if (b >= 0xd4 && b <= 0xd8) { /* fixext 1..16: type, data */
        skip = 1 + ((size_t)1 << (b - 0xd4));
    } else if (b == 0xca || b == 0xcb) {
        skip = b == 0xca ? 4 : 8;
    } else if (b >= 0xcc && b <= 0xd3) {
        int64_t v;
        return mp_read_int(r, &v);
    } else {
        return -1; /* 0xc1: never used */
    }
    if (mp_need(r, 1 + skip) < 0)
        return -1;
    r->p += 1 + skip;
    return 0;
}

/* The publish time in v: v itself when it is an integer, else the integer under the key "t" of
 * the map v, or of its "data" map. Returns 0 and sets *t when found, else -1. */
static int mp_find_t(mp_rd *r, int depth, int64_t *t)
{
    if (depth > 2 || mp_need(r, 1) < 0)
        return -1;
    unsigned char b = *r->p;
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3))
        return mp_read_int(r, t);
    uint32_t n;
    if (!((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) || mp_read_container(r, 0x80, &n) < 0)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        if (mp_read_str(r, &k, &kl) < 0) { /* a non-string key: skip the pair */
            if (mp_skip(r, depth + 1) < 0 || mp_skip(r, depth + 1) < 0)
                return -1;
            continue;
        }
        if (kl == 1 && k[0] == 't') {
            if (mp_read_int(r, t) == 0)
                return 0;
        } else if (kl == 4 && memcmp(k, "data", 4) == 0) {
            mp_rd sub = *r;
            if (mp_find_t(&sub, depth + 1, t) == 0)
                return 0;
        }
        if (mp_skip(r, depth + 1) < 0)
            return -1;
    }
    return -1;
}

/* One record body (without its VarInt): its message type (-1 when malformed). For an Invocation
 * (type 1), *t gets the publish time of its first argument, or -1 when it has none. */
static int mp_record(const unsigned char *p, size_t n, int64_t *t)
{
    mp_rd r = {p, p + n};
    uint32_t len;
    int64_t type;
    *t = -1;
    if (mp_read_container(&r, 0x90, &len) < 0 || len < 1 || mp_read_int(&r, &type) < 0)
        return -1;
    if (type != 1)
        return (int)(type >= 0 && type < 1000 ? type : -1);
    const char *target;
    uint32_t tl, nargs;
    /* [1, headers, id|nil, target, [args], [streamIds]?] */
    if (len < 5 || mp_skip(&r, 1) < 0 || mp_skip(&r, 1) < 0 || mp_read_str(&r, &target, &tl) < 0 ||
        mp_read_container(&r, 0x90, &nargs) < 0)
        return -1;
    int64_t v;
    if (nargs > 0 && mp_find_t(&r, 0, &v) == 0)
        *t = v;
    return 1;
}

#endif
