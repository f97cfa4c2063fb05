/* kr_sr_msg.h: one parsed SignalR hub message, whichever hub protocol carried it.
 *
 * The JSON codec (kr_sr_json) and the MessagePack codec (kr_sr_msgpack) both parse into a
 * kr_sr_msg_t. Names and ids are NUL-terminated C strings; values (arguments, stream items,
 * results) stay in the protocol's own tree: cJSON nodes for JSON, msgpack_object for
 * MessagePack, so no value is converted twice. `protocol` says which set of fields is used.
 * The accessors below answer the questions the hub core asks without caring which it is.
 * Everything the pointers reach is owned by the message: kr_sr_msg_dispose frees it, and
 * moving the struct (a shallow copy, then clearing the source) moves the ownership.
 */
#ifndef KR_SR_MSG_H
#define KR_SR_MSG_H

#include "kr_common.h"

#include <cjson/cJSON.h>

struct msgpack_object;
struct msgpack_zone;

enum { KR_SR_PROTO_JSON = 1, KR_SR_PROTO_MSGPACK = 2 };

typedef enum kr_sr_msg_type_e {
    KR_SR_INVOCATION = 1,
    KR_SR_STREAM_ITEM = 2,
    KR_SR_COMPLETION = 3,
    KR_SR_STREAM_INVOCATION = 4,
    KR_SR_CANCEL_INVOCATION = 5,
    KR_SR_PING = 6,
    KR_SR_CLOSE = 7,
    KR_SR_ACK = 8,
    KR_SR_SEQUENCE = 9
} kr_sr_msg_type_e;

typedef struct kr_sr_msg_s {
    int type;                  /* a kr_sr_msg_type_e, or another number (ignored by callers) */
    int protocol;              /* KR_SR_PROTO_JSON or KR_SR_PROTO_MSGPACK */
    const char *invocation_id; /* NULL when absent (an empty string counts as absent) */
    const char *target;        /* Invocation / StreamInvocation: a non-empty string */
    const char *error;         /* Completion / Close: NULL when absent */
    int allow_reconnect;       /* Close: 1 for allowReconnect true */
    int has_result;            /* Completion: a result value is present (it may be null) */
    int64_t sequence_id;       /* Ack / Sequence */
    /* Stream ids of an Invocation / StreamInvocation, both protocols. */
    const char **stream_ids;
    unsigned nstream_ids;
    /* JSON values (protocol == KR_SR_PROTO_JSON) */
    const cJSON *arguments; /* JSON array (required for types 1 and 4) */
    const cJSON *item;      /* StreamItem: the item (a cJSON null node for "item": null) */
    const cJSON *result;    /* Completion: NULL when absent (a null node for "result":null) */
    /* MessagePack values (protocol == KR_SR_PROTO_MSGPACK); all live in _zone */
    const struct msgpack_object *mp_arguments; /* an array */
    const struct msgpack_object *mp_item;
    const struct msgpack_object *mp_result;    /* NULL when absent */
    /* owners */
    cJSON *_root;
    struct msgpack_zone *_zone;
    void *_strings; /* kr_malloc'd block holding stream_ids (JSON) */
} kr_sr_msg_t;

/* Frees what the message owns and clears *m. Safe on a cleared or already disposed message. */
void kr_sr_msg_dispose(kr_sr_msg_t *m);
/* Moves the message: *dst takes everything, *src is cleared. */
void kr_sr_msg_move(kr_sr_msg_t *dst, kr_sr_msg_t *src);
/* Number of arguments of an Invocation / StreamInvocation (0 when none). */
unsigned kr_sr_msg_argc(const kr_sr_msg_t *m);
/* Argument i when it is a string: sets *s (not NUL-terminated) and *len and returns 1, else 0. */
int kr_sr_msg_arg_string(const kr_sr_msg_t *m, unsigned i, const char **s, size_t *len);

#endif
