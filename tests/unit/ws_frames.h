/* ws_frames.h: WebSocket frames for the unit tests that feed a server connection (test_hub.c,
 * test_ws.c): an encoder for client frames (masked, or unmasked to provoke the protocol error)
 * and a decoder for the frames the server queued. Static inline functions in a header, as in
 * kr_test.h; include it after kr_conn.h, kr_ws.h and kr_test.h.
 */
#ifndef KR_TEST_WS_FRAMES_H
#define KR_TEST_WS_FRAMES_H

#include "conn_output.h"

#define FIN 0x80

/* Writes a client frame (first byte b0: FIN | RSV | opcode) to out, masked with ws_mask_key
 * when masked; returns its length. out needs len + 14 bytes. */
static inline size_t ws_client_frame_ex(uint8_t *out, int b0, const void *payload, size_t len,
                                        int masked)
{
    static const uint8_t ws_mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t o = 0;
    out[o++] = (uint8_t)b0;
    uint8_t m = masked ? 0x80 : 0;
    if (len < 126) {
        out[o++] = (uint8_t)(m | len);
    } else if (len <= 0xffff) {
        out[o++] = m | 126;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)len;
    } else {
        out[o++] = m | 127;
        for (int i = 0; i < 8; i++)
            out[o++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    const uint8_t *p = payload;
    if (masked) {
        memcpy(out + o, ws_mask_key, 4);
        o += 4;
        for (size_t i = 0; i < len; i++)
            out[o + i] = p[i] ^ ws_mask_key[i % 4];
    } else if (len) {
        memcpy(out + o, p, len);
    }
    return o + len;
}

/* A masked client frame, as a client must send it. */
static inline size_t ws_client_frame(uint8_t *out, int b0, const void *payload, size_t len)
{
    return ws_client_frame_ex(out, b0, payload, len, 1);
}

/* One server frame; payload points into the buffer that was decoded. */
typedef struct ws_frame_s {
    int fin, rsv, opcode;
    const uint8_t *payload;
    size_t len;
} ws_frame_t;

/* Decodes data[0..len) as server frames, which must be unmasked and complete, into f (at most
 * max of them); returns how many. */
static inline unsigned ws_parse_frames(const void *data, size_t len, ws_frame_t *f, unsigned max)
{
    const uint8_t *p = data;
    unsigned n = 0;
    size_t o = 0;
    while (o < len) {
        ASSERT(n < max);
        ASSERT(len - o >= 2);
        f[n].fin = p[o] >> 7;
        f[n].rsv = (p[o] >> 4) & 7;
        f[n].opcode = p[o] & 0x0f;
        ASSERT_EQ(p[o + 1] & 0x80, 0); /* server frames are never masked */
        uint64_t pl = p[o + 1] & 0x7f;
        o += 2;
        if (pl == 126) {
            ASSERT(len - o >= 2);
            pl = ((uint64_t)p[o] << 8) | p[o + 1];
            o += 2;
        } else if (pl == 127) {
            ASSERT(len - o >= 8);
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = (pl << 8) | p[o + i];
            o += 8;
        }
        ASSERT(len - o >= pl);
        f[n].payload = p + o;
        f[n].len = (size_t)pl;
        o += (size_t)pl;
        n++;
    }
    return n;
}

#endif
