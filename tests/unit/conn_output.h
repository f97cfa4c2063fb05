/* conn_output.h: what a detached connection queued, for the unit tests (test_http.c, test_hub.c,
 * test_ws.c). Static inline functions in a header, as in kr_test.h; include it after kr_conn.h
 * and kr_test.h.
 */
#ifndef KR_TEST_CONN_OUTPUT_H
#define KR_TEST_CONN_OUTPUT_H

/* Everything queued on c (not consumed), copied into out and NUL-terminated; returns the length.
 * The copy must fit in outsz - 1 bytes, and the iovecs must add up to c->outq.bytes. */
static inline size_t conn_output(kr_conn_t *c, void *out, size_t outsz)
{
    char *o = out;
    unsigned cnt = c->outq.count;
    uv_buf_t *iov = kr_calloc(cnt ? cnt : 1, sizeof(*iov));
    unsigned n = kr_outq_peek(&c->outq, iov, cnt);
    ASSERT_EQ(n, cnt);
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        ASSERT(len + iov[i].len < outsz);
        memcpy(o + len, iov[i].base, iov[i].len);
        len += iov[i].len;
    }
    kr_free(iov);
    ASSERT_EQ(len, c->outq.bytes);
    o[len] = '\0';
    return len;
}

#endif
