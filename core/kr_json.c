/* kr_json.c: the JSON string writer and the UTF-8 check (see kr_json.h).
 *
 * The writer reserves room for a chunk of input at the worst-case expansion (6 output bytes
 * per input byte, "\u00XX" or "\ufffd") and fills it with plain stores, so the builder is
 * touched once per chunk rather than once per byte.
 */
#include "kr_json.h"

int kr_utf8_feed(kr_utf8_state_t *st, const void *data, size_t n)
{
    const unsigned char *s = data;
    unsigned need = st->need, lo = st->lo, hi = st->hi;
    size_t i = 0;
    while (i < n) {
        if (need == 0) {
            while (n - i >= 8) { /* ASCII runs, eight bytes at a time */
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            unsigned b = s[i++];
            lo = 0x80;
            hi = 0xbf;
            if (b < 0x80)
                continue;
            /* Unicode table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF. */
            if (b >= 0xc2 && b <= 0xdf) {
                need = 1;
            } else if (b >= 0xe0 && b <= 0xef) {
                need = 2;
                if (b == 0xe0)
                    lo = 0xa0; /* overlong */
                else if (b == 0xed)
                    hi = 0x9f; /* surrogates */
            } else if (b >= 0xf0 && b <= 0xf4) {
                need = 3;
                if (b == 0xf0)
                    lo = 0x90; /* overlong */
                else if (b == 0xf4)
                    hi = 0x8f; /* above U+10FFFF */
            } else {
                return 0;
            }
        } else {
            unsigned b = s[i++];
            if (b < lo || b > hi)
                return 0;
            need--;
            lo = 0x80;
            hi = 0xbf;
        }
    }
    st->need = (uint8_t)need;
    st->lo = (uint8_t)lo;
    st->hi = (uint8_t)hi;
    return 1;
}

int kr_utf8_valid(const char *str, size_t len)
{
    kr_utf8_state_t st = KR_UTF8_STATE_INIT;
    return kr_utf8_feed(&st, str, len) && st.need == 0;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available) or 0. Only called for
 * bytes >= 0x80, by the string writer, which replaces what is not well-formed. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    kr_utf8_state_t st = KR_UTF8_STATE_INIT;
    size_t max = n < 4 ? n : 4;
    for (size_t i = 0; i < max; i++) {
        if (!kr_utf8_feed(&st, s + i, 1))
            return 0;
        if (st.need == 0)
            return i + 1;
    }
    return 0; /* cut short */
}

/* 1 for bytes that cannot be copied as they are: controls, '"', '\\' and non-ASCII. */
static const unsigned char needs_care[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50 '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x70 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80: UTF-8 from here on */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x90 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xA0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xB0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xC0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xD0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xE0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xF0 */
};

/* Input bytes handled per reservation: each makes at most 6 output bytes. */
#define STR_CHUNK 1024

void kr_json_write_string(kr_sbuf_t *sb, const char *str, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    kr_sbuf_putc(sb, '"');
    while (i < len) {
        size_t end = len - i < STR_CHUNK ? len : i + STR_CHUNK;
        /* Every step below starts before end and writes at most 6 bytes (a valid sequence may
         * run past end, but writes no more bytes than it consumes). */
        char *out = kr_sbuf_reserve(sb, (end - i) * 6);
        char *o = out;
        while (i < end) {
            unsigned c = s[i];
            if (!needs_care[c]) {
                *o++ = (char)c;
                i++;
                continue;
            }
            if (c >= 0x80) {
                size_t n = utf8_len(s + i, len - i);
                if (n) {
                    memcpy(o, s + i, n);
                    o += n;
                    i += n;
                } else {
                    memcpy(o, "\\ufffd", 6);
                    o += 6;
                    i++;
                }
                continue;
            }
            *o++ = '\\';
            switch (c) {
            case '"':
            case '\\':
                *o++ = (char)c;
                break;
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            default:
                memcpy(o, "u00", 3);
                o[3] = hex[c >> 4];
                o[4] = hex[c & 15];
                o += 5;
                break;
            }
            i++;
        }
        kr_sbuf_commit(sb, (size_t)(o - out));
    }
    kr_sbuf_putc(sb, '"');
}

char *kr_json_nul_protect(const char *s, size_t *len)
{
    size_t n = *len;
    if (n < 6 || memmem(s, n, "\\u0000", 6) == NULL || !kr_utf8_valid(s, n))
        return NULL;
    char *out = kr_malloc(n);
    size_t o = 0;
    int in_string = 0;
    for (size_t i = 0; i < n;) {
        char ch = s[i];
        if (!in_string) {
            in_string = ch == '"';
            out[o++] = s[i++];
            continue;
        }
        if (ch == '"') {
            in_string = 0;
            out[o++] = s[i++];
        } else if (ch == '\\' && n - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
            out[o++] = (char)0xC0;
            out[o++] = (char)0x80;
            i += 6;
        } else if (ch == '\\' && i + 1 < n) {
            out[o++] = s[i++]; /* an escape: its second character never ends the string */
            out[o++] = s[i++];
        } else {
            out[o++] = s[i++];
        }
    }
    *len = o;
    return out;
}

size_t kr_json_nul_restore(char *s, size_t len)
{
    char *p = memchr(s, 0xC0, len);
    if (p == NULL)
        return len;
    size_t o = (size_t)(p - s);
    for (size_t i = o; i < len; i++) {
        if ((unsigned char)s[i] == 0xC0 && i + 1 < len && (unsigned char)s[i + 1] == 0x80) {
            s[o++] = '\0';
            i++;
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}
