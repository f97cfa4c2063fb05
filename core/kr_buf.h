/* kr_buf.h: byte buffers and the per-connection output queue.
 *
 * kr_buf_t   refcounted bytes in one allocation (h2o_mem_alloc_shared layout). A buffer is
 *            immutable once it has been queued or has more than one reference: that is how a
 *            broadcast is encoded once and shared by every recipient (architecture rule 2).
 * kr_sbuf_t  a growable builder whose storage *is* a kr_buf_t, so kr_sbuf_finish() hands the
 *            bytes over without a copy.
 * kr_outq_t  a FIFO of buffer references with byte accounting. Producers only push; the
 *            connection flushes the whole queue with one writev-style call per loop turn
 *            (architecture rule 3) and consumes what the kernel took.
 * Single-threaded: refcounts are plain integers.
 */
#ifndef KR_BUF_H
#define KR_BUF_H

#include "kr_common.h"

typedef struct kr_buf_s {
    uint32_t refcnt;
    uint32_t flags;
    size_t len;
    char data[];
} kr_buf_t;

/* A new buffer with room for len bytes and len set to len; refcnt 1, owned by the caller. */
kr_buf_t *kr_buf_new(size_t len);
/* A new buffer holding a copy of p[0..len). */
kr_buf_t *kr_buf_from(const void *p, size_t len);
static inline kr_buf_t *kr_buf_ref(kr_buf_t *b)
{
    b->refcnt++;
    return b;
}
/* Drops one reference; frees at zero. NULL is ignored. */
void kr_buf_unref(kr_buf_t *b);

typedef struct kr_sbuf_s {
    kr_buf_t *buf; /* buf->len is the length written so far */
    size_t cap;    /* bytes available in buf->data */
} kr_sbuf_t;

void kr_sbuf_init(kr_sbuf_t *sb, size_t hint);
/* Frees what was built (no-op after kr_sbuf_finish). */
void kr_sbuf_dispose(kr_sbuf_t *sb);
/* Makes room for n more bytes and returns where they go (commit them with kr_sbuf_commit). */
char *kr_sbuf_reserve(kr_sbuf_t *sb, size_t n);
static inline void kr_sbuf_commit(kr_sbuf_t *sb, size_t n)
{
    sb->buf->len += n;
}
void kr_sbuf_append(kr_sbuf_t *sb, const void *p, size_t n);
static inline void kr_sbuf_puts(kr_sbuf_t *sb, const char *s)
{
    kr_sbuf_append(sb, s, strlen(s));
}
static inline void kr_sbuf_putc(kr_sbuf_t *sb, char c)
{
    *kr_sbuf_reserve(sb, 1) = c;
    sb->buf->len++;
}
void kr_sbuf_printf(kr_sbuf_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline size_t kr_sbuf_len(const kr_sbuf_t *sb)
{
    return sb->buf->len;
}
static inline char *kr_sbuf_data(const kr_sbuf_t *sb)
{
    return sb->buf->data;
}
static inline void kr_sbuf_reset(kr_sbuf_t *sb)
{
    sb->buf->len = 0;
}
/* Hands the bytes over as a kr_buf_t (refcnt 1, caller owns it); the builder is left empty
 * and must be re-initialised before reuse. */
kr_buf_t *kr_sbuf_finish(kr_sbuf_t *sb);

/* ---- output queue --------------------------------------------------------------------- */

typedef struct kr_outq_item_s {
    kr_buf_t *buf;
    size_t off; /* bytes of buf already written */
} kr_outq_item_t;

typedef struct kr_outq_s {
    kr_outq_item_t *items; /* ring */
    uint32_t cap, head, count;
    size_t bytes; /* bytes queued and not yet consumed */
} kr_outq_t;

void kr_outq_init(kr_outq_t *q);
/* Drops every queued reference and frees the ring. */
void kr_outq_dispose(kr_outq_t *q);
/* Takes the caller's reference to buf (ownership moves into the queue). Empty buffers are
 * dropped at once. */
void kr_outq_push(kr_outq_t *q, kr_buf_t *buf);
/* Copies p[0..n) into the queue, appending to the tail buffer when it is private and has room
 * (many small writes become one), else in a new buffer. */
void kr_outq_push_copy(kr_outq_t *q, const void *p, size_t n);
/* Fills up to max iovecs (uv_buf_t) from the head of the queue; returns how many. */
unsigned kr_outq_peek(const kr_outq_t *q, uv_buf_t *bufs, unsigned max);
/* Marks n bytes at the head as written, dropping the buffers that were fully written. */
void kr_outq_consume(kr_outq_t *q, size_t n);
static inline int kr_outq_empty(const kr_outq_t *q)
{
    return q->count == 0;
}

#endif
