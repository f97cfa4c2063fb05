/* kr_json.h: JSON writing helpers for core code (no Lua).
 *
 * The string writer every JSON encoder in kestrun uses (the SignalR codec, kr.json.encode):
 * it escapes what JSON requires and replaces bytes that are not well-formed UTF-8 with
 * \ufffd, so what it writes is always valid JSON and valid UTF-8 (a browser drops a WebSocket
 * whose text frame is not). kr_utf8_valid is the same well-formedness check on its own, and
 * kr_utf8_feed the incremental form of it (WebSocket text split across fragments): the rules
 * live in kr_utf8_feed alone.
 * Owns nothing; appends to the caller's kr_sbuf_t. Calls only kr_buf.
 */
#ifndef KR_JSON_H
#define KR_JSON_H

#include "kr_common.h"
#include "kr_buf.h"

/* Appends s[0..len) as a JSON string literal (quotes included): escapes '"', '\\' and the
 * control characters (\b \f \n \r \t by name, others as \u00XX); copies well-formed UTF-8
 * sequences as they are; every byte that does not start a well-formed sequence (stray
 * continuation bytes, overlong forms, surrogates, code points above U+10FFFF, sequences cut
 * short) becomes \ufffd. s may be NULL when len is 0. */
void kr_json_write_string(kr_sbuf_t *sb, const char *s, size_t len);

/* Whether s[0..len) is well-formed UTF-8 (Unicode table 3-7: no overlong forms, no
 * surrogates, nothing above U+10FFFF). NUL bytes are valid. For WebSocket text frames and
 * the like. */
int kr_utf8_valid(const char *s, size_t len);

/* Incremental check: feed the bytes of one text in any number of pieces; the text is valid
 * when every feed returned 1 and, at the end, state.need is 0 (no code point cut short). */
typedef struct kr_utf8_state_s {
    uint8_t need;   /* continuation bytes the last code point still needs */
    uint8_t lo, hi; /* ... and the range the next one must be in */
} kr_utf8_state_t;

#define KR_UTF8_STATE_INIT {0, 0x80, 0xbf}

/* Returns 0 at the first byte no valid text can contain (so a bad text fails fast, whatever
 * the piece boundaries), 1 otherwise. */
int kr_utf8_feed(kr_utf8_state_t *st, const void *s, size_t n);

/* Embedded NULs. cJSON keeps strings NUL-terminated, so a "\u0000" escape would cut a string
 * there. Before parsing, kr_json_nul_protect rewrites each such escape inside a string into the
 * two bytes C0 80 (the "modified UTF-8" form of U+0000), which cJSON copies as they are and
 * which valid UTF-8 text never contains; whoever takes a string out of the tree turns them
 * back into NUL with kr_json_nul_restore. Returns NULL when there is nothing to do (the bytes
 * \u0000 appear nowhere, or the text is not valid UTF-8, where C0 80 could be the peer's own
 * bytes); else a kr_malloc'd copy of *len bytes (updated), possibly unchanged. */
char *kr_json_nul_protect(const char *s, size_t *len);
/* Turns every C0 80 pair of s[0..len) back into one NUL byte, in place; returns the new
 * length. A string without 0xC0 is untouched (memchr: cheap for the common case). */
size_t kr_json_nul_restore(char *s, size_t len);

#endif
