/* test_buf.c: unit tests for core/kr_buf.c: kr_buf refcounting, the kr_sbuf builder (append,
 * printf past the initial capacity, finish without a copy) and the kr_outq output queue (push,
 * peek, partial consumes across buffer boundaries, push_copy coalescing that never touches
 * shared buffers, byte accounting, ring growth with wraparound, dispose releasing references).
 */
#include "kr_buf.h"

#include "kr_test.h"

/* Concatenates everything kr_outq_peek returns into out (NUL-terminated); returns the length
 * and sets *niov to the number of iovecs. */
static size_t outq_text(const kr_outq_t *q, char *out, size_t cap, unsigned *niov)
{
    uv_buf_t iov[128];
    unsigned n = kr_outq_peek(q, iov, 128);
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        ASSERT(len + iov[i].len < cap);
        memcpy(out + len, iov[i].base, iov[i].len);
        len += iov[i].len;
    }
    out[len] = '\0';
    if (niov)
        *niov = n;
    return len;
}

#define ASSERT_OUTQ(q, want)                                                                       \
    do {                                                                                           \
        char text_[4096];                                                                          \
        size_t len_ = outq_text((q), text_, sizeof(text_), NULL);                                  \
        ASSERT_MEM_EQ(text_, len_, (want), strlen(want));                                          \
        ASSERT_EQ((q)->bytes, strlen(want));                                                       \
    } while (0)

/* ---- kr_buf ----------------------------------------------------------------------------- */

TEST(buf_new_and_refcount)
{
    kr_buf_t *b = kr_buf_new(10);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ(b->refcnt, 1);
    ASSERT_EQ(b->len, 10);
    memset(b->data, 'a', 10); /* room for len bytes */

    ASSERT(kr_buf_ref(b) == b);
    ASSERT_EQ(b->refcnt, 2);
    kr_buf_ref(b);
    ASSERT_EQ(b->refcnt, 3);
    kr_buf_unref(b);
    ASSERT_EQ(b->refcnt, 2);
    kr_buf_unref(b);
    ASSERT_EQ(b->refcnt, 1);
    kr_buf_unref(b); /* freed: ASan reports a leak or a double free otherwise */

    kr_buf_unref(NULL); /* ignored */

    kr_buf_t *z = kr_buf_new(0);
    ASSERT_EQ(z->len, 0);
    ASSERT_EQ(z->refcnt, 1);
    kr_buf_unref(z);
}

TEST(buf_from)
{
    kr_buf_t *b = kr_buf_from("hello", 5);
    ASSERT_EQ(b->refcnt, 1);
    ASSERT_MEM_EQ(b->data, b->len, "hello", 5);
    kr_buf_unref(b);

    kr_buf_t *e = kr_buf_from(NULL, 0);
    ASSERT_EQ(e->len, 0);
    kr_buf_unref(e);
}

/* ---- kr_sbuf ---------------------------------------------------------------------------- */

TEST(sbuf_append)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 0);
    ASSERT(sb.cap >= 64);
    ASSERT_EQ(kr_sbuf_len(&sb), 0);

    kr_sbuf_append(&sb, "abc", 3);
    kr_sbuf_puts(&sb, "def");
    kr_sbuf_putc(&sb, 'g');
    kr_sbuf_append(&sb, "zzz", 0); /* nothing */
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), "abcdefg", 7);

    /* Grow well past the initial capacity, byte by byte and in blocks. */
    char expect[5000];
    memcpy(expect, "abcdefg", 7);
    size_t n = 7;
    for (int i = 0; i < 300; i++) {
        char c = (char)('a' + i % 26);
        kr_sbuf_putc(&sb, c);
        expect[n++] = c;
    }
    char block[1000];
    memset(block, 'Q', sizeof(block));
    kr_sbuf_append(&sb, block, sizeof(block));
    memcpy(expect + n, block, sizeof(block));
    n += sizeof(block);
    ASSERT(sb.cap >= n);
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), expect, n);

    /* reserve + commit */
    char *dst = kr_sbuf_reserve(&sb, 4);
    memcpy(dst, "WXYZ", 4);
    kr_sbuf_commit(&sb, 4);
    memcpy(expect + n, "WXYZ", 4);
    n += 4;
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), expect, n);

    kr_sbuf_reset(&sb);
    ASSERT_EQ(kr_sbuf_len(&sb), 0);
    kr_sbuf_puts(&sb, "again");
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), "again", 5);
    kr_sbuf_dispose(&sb);
    ASSERT_NULL(sb.buf);
    ASSERT_EQ(sb.cap, 0);
}

TEST(sbuf_printf)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 16); /* rounded up to 64 */
    size_t cap0 = sb.cap;

    kr_sbuf_printf(&sb, "%d-%s", 42, "x");
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), "42-x", 4);

    /* Output longer than the initial capacity and than the 64-byte first try. */
    char big[700];
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = (char)('A' + i % 26);
    big[sizeof(big) - 1] = '\0';
    kr_sbuf_printf(&sb, "[%s]", big);
    ASSERT(sb.cap > cap0);
    size_t want_len = 4 + 1 + strlen(big) + 1;
    ASSERT_EQ(kr_sbuf_len(&sb), want_len);
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), 5, "42-x[", 5);
    ASSERT_MEM_EQ(kr_sbuf_data(&sb) + 5, strlen(big), big, strlen(big));
    ASSERT_EQ(kr_sbuf_data(&sb)[want_len - 1], ']');

    /* At the boundary: room - 1 characters fit (with the NUL) without growing; room
     * characters take the second vsnprintf after growing. */
    kr_sbuf_reset(&sb);
    size_t room = sb.cap;
    char fill[8192];
    ASSERT(room + 1 < sizeof(fill));
    memset(fill, 'f', room - 1);
    fill[room - 1] = '\0';
    kr_sbuf_printf(&sb, "%s", fill);
    ASSERT_EQ(kr_sbuf_len(&sb), room - 1);
    ASSERT_EQ(sb.cap, room);
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), fill, room - 1);
    kr_sbuf_reset(&sb);
    memset(fill, 'g', room);
    fill[room] = '\0';
    kr_sbuf_printf(&sb, "%s", fill);
    ASSERT_EQ(kr_sbuf_len(&sb), room);
    ASSERT(sb.cap > room);
    ASSERT_MEM_EQ(kr_sbuf_data(&sb), kr_sbuf_len(&sb), fill, room);
    kr_sbuf_printf(&sb, "%s", "hi");
    ASSERT_MEM_EQ(kr_sbuf_data(&sb) + room - 1, 3, "ghi", 3);

    /* An empty format adds nothing. */
    size_t before = kr_sbuf_len(&sb);
    kr_sbuf_printf(&sb, "%s", "");
    ASSERT_EQ(kr_sbuf_len(&sb), before);
    kr_sbuf_dispose(&sb);
}

TEST(sbuf_finish_no_copy)
{
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 256);
    kr_sbuf_puts(&sb, "payload");
    char *data = kr_sbuf_data(&sb);
    kr_buf_t *inner = sb.buf;
    kr_buf_t *b = kr_sbuf_finish(&sb);
    ASSERT(b == inner);
    ASSERT(b->data == data); /* no copy, no move */
    ASSERT_EQ(b->refcnt, 1);
    ASSERT_MEM_EQ(b->data, b->len, "payload", 7);
    ASSERT_NULL(sb.buf);
    ASSERT_EQ(sb.cap, 0);
    kr_sbuf_dispose(&sb); /* no-op after finish */
    kr_buf_unref(b);

    /* A large mostly-empty builder is shrunk; the bytes survive. */
    kr_sbuf_init(&sb, 64 * 1024);
    kr_sbuf_puts(&sb, "small");
    b = kr_sbuf_finish(&sb);
    ASSERT_MEM_EQ(b->data, b->len, "small", 5);
    ASSERT_EQ(b->refcnt, 1);
    kr_buf_unref(b);

    /* A large builder that is more than half full is not reallocated. */
    kr_sbuf_init(&sb, 8192);
    char fill[6000];
    memset(fill, 'x', sizeof(fill));
    kr_sbuf_append(&sb, fill, sizeof(fill));
    data = kr_sbuf_data(&sb);
    b = kr_sbuf_finish(&sb);
    ASSERT(b->data == data);
    ASSERT_EQ(b->len, sizeof(fill));
    kr_buf_unref(b);

    /* Finishing an empty builder gives an empty buffer. */
    kr_sbuf_init(&sb, 0);
    b = kr_sbuf_finish(&sb);
    ASSERT_EQ(b->len, 0);
    kr_buf_unref(b);
}

/* ---- kr_outq ---------------------------------------------------------------------------- */

TEST(outq_push_peek_consume)
{
    kr_outq_t q;
    kr_outq_init(&q);
    ASSERT(kr_outq_empty(&q));
    ASSERT_EQ(q.bytes, 0);
    uv_buf_t iov[4];
    ASSERT_EQ(kr_outq_peek(&q, iov, 4), 0);

    kr_outq_push(&q, kr_buf_from("abc", 3));
    kr_outq_push(&q, kr_buf_from("defgh", 5));
    kr_outq_push(&q, kr_buf_from("ij", 2));
    ASSERT(!kr_outq_empty(&q));
    ASSERT_EQ(q.count, 3);
    ASSERT_EQ(q.bytes, 10);

    unsigned n = kr_outq_peek(&q, iov, 4);
    ASSERT_EQ(n, 3);
    ASSERT_MEM_EQ(iov[0].base, iov[0].len, "abc", 3);
    ASSERT_MEM_EQ(iov[1].base, iov[1].len, "defgh", 5);
    ASSERT_MEM_EQ(iov[2].base, iov[2].len, "ij", 2);
    /* max limits the count */
    ASSERT_EQ(kr_outq_peek(&q, iov, 2), 2);
    ASSERT_EQ(kr_outq_peek(&q, iov, 0), 0);

    /* Partial consume inside the first buffer. */
    kr_outq_consume(&q, 2);
    ASSERT_EQ(q.count, 3);
    ASSERT_OUTQ(&q, "cdefghij");
    n = kr_outq_peek(&q, iov, 4);
    ASSERT_MEM_EQ(iov[0].base, iov[0].len, "c", 1);

    /* Across a boundary: the rest of buffer 1 and part of buffer 2. */
    kr_outq_consume(&q, 3);
    ASSERT_EQ(q.count, 2);
    ASSERT_OUTQ(&q, "fghij");
    n = kr_outq_peek(&q, iov, 4);
    ASSERT_EQ(n, 2);
    ASSERT_MEM_EQ(iov[0].base, iov[0].len, "fgh", 3);

    /* Exactly to the end of a buffer. */
    kr_outq_consume(&q, 3);
    ASSERT_EQ(q.count, 1);
    ASSERT_OUTQ(&q, "ij");

    /* Consuming nothing is fine. */
    kr_outq_consume(&q, 0);
    ASSERT_EQ(q.count, 1);

    kr_outq_consume(&q, 2);
    ASSERT(kr_outq_empty(&q));
    ASSERT_EQ(q.bytes, 0);

    /* Across several buffers at once. */
    kr_outq_push(&q, kr_buf_from("12", 2));
    kr_outq_push(&q, kr_buf_from("34", 2));
    kr_outq_push(&q, kr_buf_from("56", 2));
    kr_outq_push(&q, kr_buf_from("78", 2));
    kr_outq_consume(&q, 7);
    ASSERT_EQ(q.count, 1);
    ASSERT_OUTQ(&q, "8");
    kr_outq_dispose(&q);
    ASSERT_EQ(q.count, 0);
    ASSERT_NULL(q.items);
}

TEST(outq_push_empty_is_dropped)
{
    kr_outq_t q;
    kr_outq_init(&q);
    kr_buf_t *e = kr_buf_new(0);
    kr_buf_ref(e); /* keep it alive to see the queue drop its reference */
    kr_outq_push(&q, e);
    ASSERT(kr_outq_empty(&q));
    ASSERT_EQ(q.bytes, 0);
    ASSERT_EQ(e->refcnt, 1);
    kr_buf_unref(e);
    kr_outq_push_copy(&q, "x", 0);
    ASSERT(kr_outq_empty(&q));
    kr_outq_dispose(&q);
}

TEST(outq_push_copy_coalesces)
{
    kr_outq_t q;
    kr_outq_init(&q);
    kr_outq_push_copy(&q, "GET ", 4);
    kr_outq_push_copy(&q, "/ ", 2);
    kr_outq_push_copy(&q, "HTTP/1.1", 8);
    kr_outq_push_copy(&q, "\r\n", 2);
    ASSERT_EQ(q.count, 1);
    ASSERT_EQ(q.bytes, 16);
    char text[256];
    unsigned niov = 0;
    size_t len = outq_text(&q, text, sizeof(text), &niov);
    ASSERT_EQ(niov, 1);
    ASSERT_MEM_EQ(text, len, "GET / HTTP/1.1\r\n", 16);

    /* A partially consumed tail keeps taking copies. */
    kr_outq_consume(&q, 4);
    kr_outq_push_copy(&q, "more", 4);
    ASSERT_EQ(q.count, 1);
    ASSERT_OUTQ(&q, "/ HTTP/1.1\r\nmore");

    /* A copy that does not fit the tail's room goes into a new buffer. */
    char big[20000];
    memset(big, 'b', sizeof(big));
    kr_outq_push_copy(&q, big, sizeof(big));
    ASSERT_EQ(q.count, 2);
    ASSERT_EQ(q.bytes, 16 + sizeof(big));
    /* That big buffer was sized for exactly its bytes: the next copy starts another. */
    kr_outq_push_copy(&q, "z", 1);
    ASSERT_EQ(q.count, 3);
    ASSERT_EQ(q.bytes, 17 + sizeof(big));
    kr_outq_consume(&q, 16 + sizeof(big));
    ASSERT_OUTQ(&q, "z");
    kr_outq_dispose(&q);
}

TEST(outq_push_copy_never_mutates_pushed_buffers)
{
    kr_outq_t q;
    kr_outq_init(&q);

    /* A shared buffer (a broadcast) pushed by reference. */
    kr_buf_t *shared = kr_buf_from("shared", 6);
    kr_outq_push(&q, kr_buf_ref(shared));
    ASSERT_EQ(shared->refcnt, 2);
    kr_outq_push_copy(&q, "+tail", 5);
    ASSERT_EQ(q.count, 2); /* not appended into `shared` */
    ASSERT_EQ(shared->len, 6);
    ASSERT_MEM_EQ(shared->data, shared->len, "shared", 6);
    ASSERT_OUTQ(&q, "shared+tail");

    /* A private buffer with a single reference, pushed by reference: still immutable. */
    kr_buf_t *priv = kr_buf_from("priv", 4);
    kr_outq_push(&q, priv);
    ASSERT_EQ(priv->refcnt, 1);
    kr_outq_push_copy(&q, "!", 1);
    ASSERT_EQ(q.count, 4);
    ASSERT_EQ(priv->len, 4);
    ASSERT_OUTQ(&q, "shared+tailpriv!");

    /* A built buffer (kr_sbuf_finish) with spare capacity is not appended to either. */
    kr_sbuf_t sb;
    kr_sbuf_init(&sb, 1024);
    kr_sbuf_puts(&sb, "built");
    kr_buf_t *built = kr_sbuf_finish(&sb);
    kr_outq_push(&q, built);
    kr_outq_push_copy(&q, "?", 1);
    ASSERT_EQ(q.count, 6);
    ASSERT_EQ(built->len, 5);
    ASSERT_OUTQ(&q, "shared+tailpriv!built?");

    /* The copy buffers themselves still coalesce. */
    kr_outq_push_copy(&q, "??", 2);
    ASSERT_EQ(q.count, 6);

    /* A copy buffer that gained another reference is shared now: no more appends. */
    uv_buf_t iov[8];
    ASSERT_EQ(kr_outq_peek(&q, iov, 8), 6);
    kr_outq_item_t *tail = &q.items[(q.head + q.count - 1) % q.cap];
    kr_buf_t *copybuf = kr_buf_ref(tail->buf);
    size_t copylen = copybuf->len;
    kr_outq_push_copy(&q, "#", 1);
    ASSERT_EQ(q.count, 7);
    ASSERT_EQ(copybuf->len, copylen);
    ASSERT_OUTQ(&q, "shared+tailpriv!built???#");
    kr_buf_unref(copybuf);

    kr_outq_dispose(&q);
    ASSERT_EQ(shared->refcnt, 1);
    ASSERT_MEM_EQ(shared->data, shared->len, "shared", 6);
    kr_buf_unref(shared);
}

TEST(outq_bytes_accounting)
{
    kr_outq_t q;
    kr_outq_init(&q);
    size_t total = 0;
    for (int i = 1; i <= 20; i++) {
        char tmp[32];
        memset(tmp, 'a' + i % 26, (size_t)i);
        if (i % 2)
            kr_outq_push(&q, kr_buf_from(tmp, (size_t)i));
        else
            kr_outq_push_copy(&q, tmp, (size_t)i);
        total += (size_t)i;
        ASSERT_EQ(q.bytes, total);
    }
    /* peek lengths add up to bytes */
    uv_buf_t iov[64];
    unsigned n = kr_outq_peek(&q, iov, 64);
    size_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += iov[i].len;
    ASSERT_EQ(sum, total);
    while (q.bytes > 0) {
        size_t step = q.bytes < 7 ? q.bytes : 7;
        kr_outq_consume(&q, step);
        total -= step;
        ASSERT_EQ(q.bytes, total);
        n = kr_outq_peek(&q, iov, 64);
        sum = 0;
        for (unsigned i = 0; i < n; i++)
            sum += iov[i].len;
        ASSERT_EQ(sum, total);
    }
    ASSERT(kr_outq_empty(&q));
    kr_outq_dispose(&q);
}

TEST(outq_ring_growth_wraparound)
{
    kr_outq_t q;
    kr_outq_init(&q);
    char name[8];
    /* Fill 6, consume 4: the head moves to slot 4 of the initial 8-slot ring. */
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof(name), "%c", 'A' + i);
        kr_outq_push(&q, kr_buf_from(name, 1));
    }
    ASSERT_EQ(q.cap, 8);
    kr_outq_consume(&q, 4);
    ASSERT_EQ(q.head, 4);
    ASSERT_EQ(q.count, 2);
    /* Six more wrap around to slots 0..3 and fill the ring. */
    for (int i = 6; i < 12; i++) {
        snprintf(name, sizeof(name), "%c", 'A' + i);
        kr_outq_push(&q, kr_buf_from(name, 1));
    }
    ASSERT_EQ(q.cap, 8);
    ASSERT_EQ(q.count, 8);
    ASSERT_OUTQ(&q, "EFGHIJKL");
    /* One more grows the ring from a wrapped state; order is kept. */
    for (int i = 12; i < 26; i++) {
        snprintf(name, sizeof(name), "%c", 'A' + i);
        kr_outq_push(&q, kr_buf_from(name, 1));
    }
    ASSERT(q.cap >= 22);
    ASSERT_EQ(q.count, 22);
    ASSERT_OUTQ(&q, "EFGHIJKLMNOPQRSTUVWXYZ");
    uv_buf_t iov[32];
    ASSERT_EQ(kr_outq_peek(&q, iov, 32), 22);
    for (unsigned i = 0; i < 22; i++) {
        ASSERT_EQ(iov[i].len, 1);
        ASSERT_EQ(iov[i].base[0], 'E' + (int)i);
    }
    /* Consume around the new ring too. */
    kr_outq_consume(&q, 20);
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "%d", i);
        kr_outq_push(&q, kr_buf_from(name, 1));
    }
    ASSERT_OUTQ(&q, "YZ0123456789");
    kr_outq_dispose(&q);
}

TEST(outq_dispose_releases_references)
{
    kr_outq_t q;
    kr_outq_init(&q);
    kr_buf_t *keep = kr_buf_from("keep", 4);
    kr_outq_push(&q, kr_buf_from("a", 1));
    kr_outq_push(&q, kr_buf_ref(keep));
    kr_outq_push_copy(&q, "copy", 4);
    for (int i = 0; i < 10; i++) /* wrap and grow with `keep` in the middle */
        kr_outq_push(&q, kr_buf_from("x", 1));
    kr_outq_consume(&q, 1);
    ASSERT_EQ(keep->refcnt, 2);
    kr_outq_dispose(&q);
    ASSERT_EQ(keep->refcnt, 1);
    ASSERT_MEM_EQ(keep->data, keep->len, "keep", 4);
    ASSERT(kr_outq_empty(&q));
    ASSERT_EQ(q.bytes, 0);
    /* A disposed queue can be reused and disposed again. */
    kr_outq_push(&q, kr_buf_ref(keep));
    kr_outq_consume(&q, 4); /* fully written: the reference goes */
    ASSERT_EQ(keep->refcnt, 1);
    kr_outq_dispose(&q);
    kr_outq_dispose(&q);
    kr_buf_unref(keep);
}

KR_TEST_MAIN(KR_TEST_ENTRY(buf_new_and_refcount), KR_TEST_ENTRY(buf_from),
             KR_TEST_ENTRY(sbuf_append), KR_TEST_ENTRY(sbuf_printf),
             KR_TEST_ENTRY(sbuf_finish_no_copy), KR_TEST_ENTRY(outq_push_peek_consume),
             KR_TEST_ENTRY(outq_push_empty_is_dropped), KR_TEST_ENTRY(outq_push_copy_coalesces),
             KR_TEST_ENTRY(outq_push_copy_never_mutates_pushed_buffers),
             KR_TEST_ENTRY(outq_bytes_accounting), KR_TEST_ENTRY(outq_ring_growth_wraparound),
             KR_TEST_ENTRY(outq_dispose_releases_references))
