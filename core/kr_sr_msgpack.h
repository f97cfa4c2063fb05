/* kr_sr_msgpack.h: the SignalR MessagePack hub protocol codec (framing, hub messages) and
 * the MessagePack value writer the encoders above it share.
 *
 * Wire format: docs/signalr-protocol.md section 5. Every message is VarInt(length) followed
 * by one msgpack array; the handshake is JSON (kr_sr_json) even on a MessagePack connection.
 * Decode: kr_sr_mp_next_record finds record boundaries in received bytes; kr_sr_mp_parse
 * turns one record into a kr_sr_msg_t (kr_sr_msg.h) with protocol KR_SR_PROTO_MSGPACK whose
 * values are msgpack_object trees in a zone the message owns. Peer bytes reach msgpack-c
 * only after kr_sr_mp_prescan has walked them: msgpack-c reserves memory from the declared
 * sizes, so every declared string/bin/ext length and array/map count must fit in the bytes
 * that remain (each element takes at least one byte), and nesting is bounded.
 * Encode: kr_sr_mp_write_* append one complete framed record to a kr_sbuf_t. Messages whose
 * values the caller encodes (Invocation arguments, a StreamItem, a Completion result) are
 * written in steps: kr_sr_mp_begin reserves the length prefix, the head and the caller's
 * values follow, kr_sr_mp_end fixes the prefix.
 * Calls msgpack-c (decode only) and kr_buf; never Lua.
 */
#ifndef KR_SR_MSGPACK_H
#define KR_SR_MSGPACK_H

#include "kr_buf.h"
#include "kr_common.h"
#include "kr_sr_msg.h"

/* Nesting accepted in a received message, the message array itself included (so arguments may
 * nest 30 deep). msgpack-c's C unpacker cannot go deeper: it keeps a fixed stack of
 * MSGPACK_EMBED_STACK_SIZE (32) open containers and fails beyond it. */
#define KR_SR_MP_MAX_DEPTH 32
/* kr_sr_mp_prescan walks without recursion, with one counter per open container on its own
 * stack: a larger max_depth is clamped to this. */
#define KR_SR_MP_DEPTH_LIMIT 256

/* Framing. If data[0..len) starts with a complete record, sets *body_off to the length of the
 * VarInt prefix and *body_len to the body's length and returns the bytes to consume
 * (prefix + body); returns 0 when more bytes are needed; returns -1 for a malformed prefix
 * (more than 5 bytes, a 5th byte above 7, or a length above 2^31-1). A zero-length body is
 * a record (callers skip it). When it returns 0 with the whole prefix received, *body_off and
 * *body_len are set too, so a caller can refuse a record larger than its receive limit
 * before buffering it; when the prefix itself is incomplete they are untouched. */
long kr_sr_mp_next_record(const char *data, size_t len, size_t *body_off, size_t *body_len);

/* Whether data[0..len) is exactly one well-formed msgpack value whose declared lengths all
 * fit in what remains, nested at most max_depth deep (every array or map is one level, the
 * outermost included; max_depth is clamped to KR_SR_MP_DEPTH_LIMIT). 0 when it is, else
 * KR_EPROTO with *err a static message. Never allocates. */
int kr_sr_mp_prescan(const char *data, size_t len, int max_depth, const char **err);

/* Parses one record body (no prefix): prescan, then msgpack-c, then the layout checks of
 * section 5 (both the 5- and 6-element Invocation, 2- and 3-element Close, headers maps of
 * strings on types 1-5, "" ids as absent for Invocation, result kinds 1/2/3). Returns 0 with
 * *out filled (an unknown type: only `type` and `protocol` set, nothing owned), or KR_EPROTO
 * with *err a static message and *out empty. kr_sr_msg_dispose(out) is safe afterwards either
 * way, required after success. data need not outlive the call: the message owns a copy.
 * Elements after the documented ones are ignored (a later protocol version may add some),
 * except that a void Completion (kind 2) has exactly 4. Ids, target, error and stream ids
 * are NUL-terminated copies: as with kr_sr_json, a NUL byte inside ends them, and "empty"
 * is judged on the copy. */
int kr_sr_mp_parse(const char *data, size_t len, kr_sr_msg_t *out, const char **err);

/* ---- value writer (MessagePack, smallest encoding for each value) ---------------------- */

void kr_mp_put_nil(kr_sbuf_t *sb);
void kr_mp_put_bool(kr_sbuf_t *sb, int v);
void kr_mp_put_int(kr_sbuf_t *sb, int64_t v);
void kr_mp_put_uint(kr_sbuf_t *sb, uint64_t v);
void kr_mp_put_double(kr_sbuf_t *sb, double v); /* float64 */
void kr_mp_put_str(kr_sbuf_t *sb, const char *s, size_t len);
void kr_mp_put_bin(kr_sbuf_t *sb, const void *p, size_t len);
void kr_mp_put_array(kr_sbuf_t *sb, uint32_t n); /* header only */
void kr_mp_put_map(kr_sbuf_t *sb, uint32_t n);   /* header only */
/* Timestamp extension (type -1), what .NET writes for a DateTime: ms since the Unix epoch. */
void kr_mp_put_timestamp_ms(kr_sbuf_t *sb, int64_t ms);
/* Re-encodes a decoded object (Echo sends an argument back as it came). */
void kr_mp_put_object(kr_sbuf_t *sb, const struct msgpack_object *o);

/* ---- record encoders: each appends one complete framed record ---------------------------- */

/* Starts a record: reserves the VarInt prefix. Returns the offset to give kr_sr_mp_end. */
size_t kr_sr_mp_begin(kr_sbuf_t *sb);
/* Ends the record started at start: writes the real prefix and closes the gap. */
void kr_sr_mp_end(kr_sbuf_t *sb, size_t start);

/* [6] */
void kr_sr_mp_write_ping(kr_sbuf_t *sb);
/* [7, error|nil, allowReconnect] (.NET's 3-element form) */
void kr_sr_mp_write_close(kr_sbuf_t *sb, const char *error, int allow_reconnect);
/* Completion with a result already encoded as one msgpack value: [3, {}, id, 3, result];
 * result NULL (or result_len 0) writes nil (what .NET sends for a void method); with error
 * non-NULL: [3, {}, id, 1, error]. */
void kr_sr_mp_write_completion(kr_sbuf_t *sb, const char *invocation_id, const char *result_mp,
                               size_t result_len, const char *error);
/* [3, {}, id, 2]: the end of a server stream (no result). */
void kr_sr_mp_write_completion_empty(kr_sbuf_t *sb, const char *invocation_id);
/* Invocation in steps: begin, head writes [1, {}, id|nil, target, (6 elements; nil when the
 * id is NULL or ""; the caller appends the arguments array next), tail appends the empty
 * streamIds array [] and ends. */
size_t kr_sr_mp_write_invocation_head(kr_sbuf_t *sb, const char *invocation_id,
                                      const char *target);
void kr_sr_mp_write_invocation_tail(kr_sbuf_t *sb, size_t start);
/* StreamItem in steps: head begins and writes [2, {}, id, ; the caller appends the item;
 * kr_sr_mp_end(sb, start) finishes. */
size_t kr_sr_mp_write_stream_item_head(kr_sbuf_t *sb, const char *invocation_id);
/* [8, seq] and [9, seq] */
void kr_sr_mp_write_ack(kr_sbuf_t *sb, int64_t seq);
void kr_sr_mp_write_sequence(kr_sbuf_t *sb, int64_t seq);

#endif
