/* kr_ws.h: WebSocket (RFC 6455) connections on top of kr_conn.
 *
 * The upgrade: kr_ws_check_upgrade validates an HTTP request, kr_ws_accept writes the 101
 * and takes the connection over from kr_http (kr_http_take_over). From then on the
 * connection's protocol ops are this module's.
 *
 * Inbound, our own strict server-side parser (kr_ws.c) reads the frames where they lie in the
 * connection's read buffer: a complete frame is unmasked in place and a whole message is
 * handed to on_message without a copy; only a fragmented message (or a single frame too big
 * for the read buffer) is reassembled, in a buffer that exists only while that message is in
 * progress, so an idle WebSocket owns nothing but its kr_ws_t. It fails the connection with
 * 1002 for a broken frame (unmasked, RSV bits, unknown opcode, fragmented or oversized control
 * frame, non-minimal length, a continuation out of place, a bad close code), 1007 for text or
 * a close reason that is not UTF-8 (checked as each fragment arrives) and 1009 for a message
 * over max_message or max_fragments (decided by the frame header, before its payload). It
 * answers every ping with a pong and the peer's close with the same code and reason.
 * Outbound frames (data, pong, close) are encoded by kr_ws_frame_new and appended to the
 * connection's output queue at once. Server frames are unmasked, so one encoded frame can be
 * queued on any number of connections (a broadcast). RFC 6455 allows control frames anywhere
 * between frames, so a pong may follow data frames that a message handler queued first.
 *
 * Closing: on_close is called exactly once per WebSocket, when the close handshake is over
 * (the peer's close frame answered, or our close answered), when we fail the connection on
 * a protocol error (close 1002, 1007, 1009 sent), or when the TCP connection goes (EOF, error,
 * slow consumer, server shutdown, close timeout). The TCP connection is closed after the
 * last close frame has been written; the server closes first, as RFC 6455 section 7.1.1 asks.
 *
 * Owns: the kr_ws_t and its reassembly buffer (freed once the connection has closed and no
 * call of ours is on the stack). Calls: kr_conn, kr_http (upgrade only), kr_json (UTF-8
 * check), OpenSSL (SHA-1 and base64 for Sec-WebSocket-Accept). Calls up only through
 * kr_ws_handler_t.
 */
#ifndef KR_WS_H
#define KR_WS_H

#include "kr_buf.h"
#include "kr_common.h"

typedef struct kr_conn_s kr_conn_t;
typedef struct kr_http_req_s kr_http_req_t;
typedef struct kr_ws_s kr_ws_t;

/* Opcodes (RFC 6455 section 5.2). */
#define KR_WS_OP_CONT 0x0
#define KR_WS_OP_TEXT 0x1
#define KR_WS_OP_BINARY 0x2
#define KR_WS_OP_CLOSE 0x8
#define KR_WS_OP_PING 0x9
#define KR_WS_OP_PONG 0xa

/* Close codes we send or report (RFC 6455 section 7.4.1). */
#define KR_WS_CLOSE_NORMAL 1000
#define KR_WS_CLOSE_GOING_AWAY 1001
#define KR_WS_CLOSE_PROTOCOL_ERROR 1002
#define KR_WS_CLOSE_NO_STATUS 1005 /* reported: the peer's close frame had no code */
#define KR_WS_CLOSE_ABNORMAL 1006  /* reported: the TCP connection ended without a close */
#define KR_WS_CLOSE_INVALID_DATA 1007
#define KR_WS_CLOSE_TOO_BIG 1009
#define KR_WS_CLOSE_INTERNAL_ERROR 1011

/* Longest close reason: a control frame carries at most 125 bytes, 2 of them the code. */
#define KR_WS_MAX_REASON 123

typedef struct kr_ws_handler_s {
    /* A complete message (fragments reassembled; text already validated as UTF-8). data is
     * only valid during the call. Not called once a close frame was sent or received. */
    void (*on_message)(kr_ws_t *ws, int binary, const char *data, size_t len, void *ud);
    /* The WebSocket ended; called exactly once, before the kr_ws_t goes (it is freed right
     * after, so drop every pointer to it here). code: the peer's close code if it sent a
     * valid close frame (1005 if the frame had no code); otherwise the code of the close
     * frame we sent: 1002, 1007 or 1009 when we failed the connection (a malformed close
     * frame from the peer included), the code given to kr_ws_close if the peer never
     * answered; 1006 if no close frame went either way (EOF, TCP error, slow consumer).
     * Sends from inside on_close return KR_ECLOSED. */
    void (*on_close)(kr_ws_t *ws, int code, void *ud);
    /* Optional: everything queued has been written (a producer that stopped above its
     * budget, kr_ws_queued, resumes here). */
    void (*on_drain)(kr_ws_t *ws, void *ud);
} kr_ws_handler_t;

typedef struct kr_ws_opts_s {
    size_t max_message;        /* reassembled message limit; larger: close 1009 (1 MiB) */
    unsigned max_fragments;    /* frames per message; more: close 1009 (128) */
    size_t high_water;         /* output queue: stop reading above this (1 MiB) */
    size_t low_water;          /* output queue: resume reading below this (256 KiB) */
    size_t hard_limit;         /* output queue: close as a slow consumer above this (8 MiB) */
    uint64_t close_timeout_ms; /* wait this long for the peer's close reply (5 s) */
} kr_ws_opts_t;

/* Fills in the defaults listed above. */
void kr_ws_opts_default(kr_ws_opts_t *o);

/* Checks that req is a valid RFC 6455 opening handshake: GET, HTTP/1.1, an Upgrade header
 * with the token "websocket" and a Connection header with the token "upgrade" (both
 * case-insensitive, comma lists allowed), Sec-WebSocket-Version: 13 and one
 * Sec-WebSocket-Key that is the base64 form of 16 bytes. Returns 0 if so, else the status
 * to answer with: 426 when the version is missing or not 13 (checked before the key, so a
 * client of an older draft learns which version we speak), 400 otherwise. Origin checks are
 * the caller's (CORS does not cover WebSockets). */
int kr_ws_check_upgrade(const kr_http_req_t *req);

/* Answers a failed check: status with a short text body, plus Sec-WebSocket-Version: 13
 * for 426. */
void kr_ws_reject(kr_http_req_t *req, int status);

/* Performs the upgrade: queues the 101 (Upgrade, Connection, Sec-WebSocket-Accept; no
 * subprotocol or extension) and takes the connection over (kr_http_take_over). Bytes the
 * client sent after its request are read as WebSocket frames from the next loop turn.
 * Returns the kr_ws_t (owned by the connection, freed after on_close), or NULL if the
 * connection was already gone (no handler is ever called then). opts may be NULL (defaults).
 * Meant to follow kr_ws_check_upgrade(req) == 0; a request that fails the check anyway is
 * answered with kr_ws_reject and NULL is returned. */
kr_ws_t *kr_ws_accept(kr_http_req_t *req, const kr_ws_handler_t *h, void *ud,
                      const kr_ws_opts_t *opts);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + the RFC 6455 GUID)), 28 characters and
 * a NUL. Returns 0, or KR_EINVAL for a key longer than 64 bytes. */
int kr_ws_accept_key(const char *key, size_t len, char out[29]);

/* ---- frames we send ----------------------------------------------------------------------
 * Server frames are unmasked and unfragmented (FIN set), so the same bytes are right for
 * every recipient: encode once, then kr_ws_send_frame(ws, kr_buf_ref(frame)) per recipient. */

/* Writes a frame header for payload_len bytes; returns its length (2, 4 or 10). */
size_t kr_ws_frame_header(uint8_t out[10], int opcode, uint64_t payload_len);
/* Header and payload in one new buffer (refcnt 1, caller owns it). */
kr_buf_t *kr_ws_frame_new(int opcode, const void *payload, size_t len);

/* Queues a complete data frame (from kr_ws_frame_new, or built by the caller; a close frame
 * goes through kr_ws_close, which keeps the handshake state) and takes the reference. Returns 0, or
 * KR_ECLOSED (the buffer is released) once a close frame was sent or received or the connection is
 * closing. Never re-enters the caller: a queue over the hard limit closes the connection from the
 * next flush. */
int kr_ws_send_frame(kr_ws_t *ws, kr_buf_t *frame);
/* Convenience: encode and queue. Text must be valid UTF-8 (the caller's promise). */
int kr_ws_send_text(kr_ws_t *ws, const void *data, size_t len);
int kr_ws_send_binary(kr_ws_t *ws, const void *data, size_t len);

/* Starts the closing handshake: sends a close frame with code (0: a close frame without a
 * code) and reason (truncated to KR_WS_MAX_REASON bytes at a UTF-8 boundary; may be NULL),
 * stops delivering messages and refuses further sends. The TCP connection is closed when
 * the peer's close arrives and our queue is written, or after opts.close_timeout_ms. Calls
 * no handler itself, so it is safe from inside on_message. Idempotent. */
void kr_ws_close(kr_ws_t *ws, int code, const char *reason);

kr_conn_t *kr_ws_conn(kr_ws_t *ws);
void *kr_ws_userdata(kr_ws_t *ws);
void kr_ws_set_userdata(kr_ws_t *ws, void *ud);
/* Bytes queued on the connection and not yet written. */
size_t kr_ws_queued(const kr_ws_t *ws);

/* For unit tests and fuzzing: starts a WebSocket directly on a connection (typically
 * detached) that has no protocol state of its own, without an HTTP upgrade. Returns NULL if
 * the connection is closing. */
kr_ws_t *kr__ws_start(kr_conn_t *c, const kr_ws_handler_t *h, void *ud, const kr_ws_opts_t *opts);
/* For unit tests: bytes allocated for the message being reassembled (0 when none is in
 * progress, which is always the case between messages). */
size_t kr__ws_reassembly_bytes(const kr_ws_t *ws);

#endif
