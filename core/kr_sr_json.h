/* kr_sr_json.h: the SignalR JSON hub protocol codec (framing, handshake, hub messages).
 *
 * Wire format: docs/signalr-protocol.md sections 3 and 4. Every message is one JSON object
 * followed by the record separator 0x1E.
 * Decode: kr_sr_json_next_record finds record boundaries in received bytes; kr_sr_json_parse
 * turns one record into a kr_sr_msg_t (kr_sr_msg.h) whose values live in a cJSON tree the
 * message owns (kr_sr_msg_dispose frees it); kr_sr_handshake_parse reads the client's handshake request.
 * Encode: kr_sr_json_write_* append one complete record (separator included) to a kr_sbuf_t;
 * strings go through kr_json_write_string, so output is valid UTF-8 whatever the input.
 * Sizes are not checked here: the caller enforces MaximumReceiveMessageSize before parsing.
 * Calls cJSON, kr_json and kr_buf; never Lua. Allocates nothing beyond cJSON's tree.
 */
#ifndef KR_SR_JSON_H
#define KR_SR_JSON_H

#include "kr_common.h"
#include "kr_buf.h"
#include "kr_sr_msg.h"

#include <cjson/cJSON.h>

#define KR_SR_RS 0x1e

/* Finds the next record: if data[0..len) contains 0x1E, sets *rec_len to the record length
 * WITHOUT the separator and returns the bytes to consume (rec_len + 1); else returns 0
 * (incomplete; *rec_len untouched). Empty records (two separators in a row) give rec_len 0. */
size_t kr_sr_json_next_record(const char *data, size_t len, size_t *rec_len);

/* Parses one record (no separator). Returns 0 with *out filled, or KR_EPROTO with *err a
 * static message naming what is wrong and *out empty. Either way kr_sr_msg_dispose(out) is
 * safe afterwards, and required after success.
 * Rules (.NET JsonHubProtocol): property names are case-sensitive and in any order; unknown
 * properties are ignored; "type" must be an integral number (1.0 counts); an unknown type
 * number returns 0 with only type set (callers ignore such messages). Known properties are
 * type-checked whatever the message type: invocationId, target and error are strings (JSON
 * null counts as absent), allowReconnect a boolean, streamIds an array of strings, headers an
 * object of strings (accepted and ignored), sequenceId an integer within +-2^53.
 * Per type: 1 needs target (non-empty) and arguments (array), invocationId optional;
 * 4 needs invocationId, target and arguments; 2 needs invocationId and the "item" key;
 * 3 needs invocationId and not both "result" and a non-null "error"; 5 needs invocationId;
 * 8 and 9 need sequenceId. A field is filled whenever its property is present and valid, so
 * read only the fields of the message's type. Strings are cJSON's: a \u0000 escape ends them
 * early. With duplicate keys the first one counts. */
int kr_sr_json_parse(const char *data, size_t len, kr_sr_msg_t *out, const char **err);

/* Handshake request: {"protocol":"json","version":1} (one record, no separator). Returns 0
 * with the protocol name copied into protocol (NUL-terminated, truncated to protocol_len-1:
 * pass a buffer longer than any supported name so a truncated name never matches one) and
 * *version; or KR_EPROTO with *err (not JSON, not an object, missing or non-string protocol,
 * missing version, version not an integer in int range). Unknown properties are ignored.
 * Checking the name and version is the caller's job. */
int kr_sr_handshake_parse(const char *data, size_t len, char *protocol, size_t protocol_len,
                          int *version, const char **err);

/* ---- encoders: each appends one complete record INCLUDING the trailing 0x1E ------------ */

/* {}\x1e */
void kr_sr_json_write_handshake_ok(kr_sbuf_t *sb);
/* {"error":"..."}\x1e */
void kr_sr_json_write_handshake_error(kr_sbuf_t *sb, const char *error);
/* {"type":6}\x1e */
void kr_sr_json_write_ping(kr_sbuf_t *sb);
/* {"type":7} plus "error" when error is non-NULL and "allowReconnect":true only when
 * allow_reconnect is non-zero (as .NET writes it). */
void kr_sr_json_write_close(kr_sbuf_t *sb, const char *error, int allow_reconnect);
/* Completion. With error non-NULL: {"type":3,"invocationId":"x","error":"..."}. Otherwise
 * "result" is result_json[0..result_len), raw JSON text written as-is (the caller vouches for
 * it); NULL or result_len 0 writes "result":null. */
void kr_sr_json_write_completion(kr_sbuf_t *sb, const char *invocation_id, const char *result_json,
                                 size_t result_len, const char *error);
/* {"type":3,"invocationId":"x","result":null}: what .NET sends for a void method. */
void kr_sr_json_write_completion_void(kr_sbuf_t *sb, const char *invocation_id);
/* {"type":3,"invocationId":"x"}: the end of a server stream, which must carry no result. */
void kr_sr_json_write_completion_empty(kr_sbuf_t *sb, const char *invocation_id);
/* Invocation in two steps, so callers encode arguments straight into the buffer: head writes
 * {"type":1,["invocationId":"id",]"target":"T","arguments": (the id only when non-NULL and
 * non-empty); the caller appends a JSON array; kr_sr_json_write_tail closes the record. */
void kr_sr_json_write_invocation_head(kr_sbuf_t *sb, const char *invocation_id, const char *target);
/* {"type":2,"invocationId":"x","item": ; the caller appends the item, then the tail. */
void kr_sr_json_write_stream_item_head(kr_sbuf_t *sb, const char *invocation_id);
/* }\x1e */
void kr_sr_json_write_tail(kr_sbuf_t *sb);
/* {"type":8,"sequenceId":N}\x1e */
void kr_sr_json_write_ack(kr_sbuf_t *sb, int64_t seq);
/* {"type":9,"sequenceId":N}\x1e */
void kr_sr_json_write_sequence(kr_sbuf_t *sb, int64_t seq);

#endif
