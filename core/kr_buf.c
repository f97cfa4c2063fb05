/* kr_buf.c: refcounted buffers, the string builder and the output queue (see kr_buf.h). */
#include "kr_buf.h"

#include <stdarg.h>
#include <stdio.h>

/* Set on a buffer that is private to one producer and may still grow in place. */
#define KR_BUF_F_APPENDABLE 1u

static kr_buf_t *buf_alloc(size_t cap)
{
    kr_buf_t *b = kr_malloc(sizeof(kr_buf_t) + cap);
    b->refcnt = 1;
    b->flags = 0;
    b->len = 0;
    return b;
}

kr_buf_t *kr_buf_new(size_t len)
{
    kr_buf_t *b = buf_alloc(len);
    b->len = len;
    return b;
}

kr_buf_t *kr_buf_from(const void *p, size_t len)
{
    kr_buf_t *b = kr_buf_new(len);
    if (len)
        memcpy(b->data, p, len);
    return b;
}

void kr_buf_unref(kr_buf_t *b)
{
    if (b == NULL)
        return;
    KR_ASSERT(b->refcnt > 0);
    if (--b->refcnt == 0)
        kr_free(b);
}

/* ---- builder --------------------------------------------------------------------------- */

void kr_sbuf_init(kr_sbuf_t *sb, size_t hint)
{
    sb->cap = hint < 64 ? 64 : hint;
    sb->buf = buf_alloc(sb->cap);
}

void kr_sbuf_dispose(kr_sbuf_t *sb)
{
    kr_free(sb->buf);
    sb->buf = NULL;
    sb->cap = 0;
}

char *kr_sbuf_reserve(kr_sbuf_t *sb, size_t n)
{
    size_t need = sb->buf->len + n;
    if (need > sb->cap) {
        size_t cap = sb->cap * 2;
        while (cap < need)
            cap *= 2;
        sb->buf = kr_realloc(sb->buf, sizeof(kr_buf_t) + cap);
        sb->cap = cap;
    }
    return sb->buf->data + sb->buf->len;
}

void kr_sbuf_append(kr_sbuf_t *sb, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(kr_sbuf_reserve(sb, n), p, n);
    sb->buf->len += n;
}

void kr_sbuf_printf(kr_sbuf_t *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = kr_sbuf_reserve(sb, 64);
    size_t room = sb->cap - sb->buf->len;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= room) {
        dst = kr_sbuf_reserve(sb, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(dst, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    sb->buf->len += (size_t)n;
}

kr_buf_t *kr_sbuf_finish(kr_sbuf_t *sb)
{
    kr_buf_t *b = sb->buf;
    /* Give back a large unused tail: finished buffers can live long in output queues. */
    if (sb->cap > 4096 && b->len < sb->cap / 2)
        b = kr_realloc(b, sizeof(kr_buf_t) + (b->len ? b->len : 1));
    sb->buf = NULL;
    sb->cap = 0;
    return b;
}

/* ---- output queue ---------------------------------------------------------------------- */

void kr_outq_init(kr_outq_t *q)
{
    memset(q, 0, sizeof(*q));
}

void kr_outq_dispose(kr_outq_t *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        kr_buf_unref(q->items[(q->head + i) % q->cap].buf);
    kr_free(q->items);
    memset(q, 0, sizeof(*q));
}

static void grow(kr_outq_t *q)
{
    uint32_t cap = q->cap ? q->cap * 2 : 8;
    kr_outq_item_t *items = kr_malloc(sizeof(*items) * cap);
    for (uint32_t i = 0; i < q->count; i++)
        items[i] = q->items[(q->head + i) % q->cap];
    kr_free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
}

void kr_outq_push(kr_outq_t *q, kr_buf_t *buf)
{
    if (buf->len == 0) {
        kr_buf_unref(buf);
        return;
    }
    if (q->count == q->cap)
        grow(q);
    buf->flags &= ~KR_BUF_F_APPENDABLE; /* queued buffers are immutable */
    q->items[(q->head + q->count) % q->cap] = (kr_outq_item_t){buf, 0};
    q->count++;
    q->bytes += buf->len;
}

#define COPY_CHUNK 16384

void kr_outq_push_copy(kr_outq_t *q, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (q->count > 0) {
        kr_outq_item_t *tail = &q->items[(q->head + q->count - 1) % q->cap];
        kr_buf_t *b = tail->buf;
        /* Capacity of an appendable buffer is recorded in the flags' upper bits. */
        size_t cap = b->flags >> 1;
        if ((b->flags & KR_BUF_F_APPENDABLE) && b->refcnt == 1 && b->len + n <= cap) {
            memcpy(b->data + b->len, p, n);
            b->len += n;
            q->bytes += n;
            return;
        }
    }
    size_t cap = n > COPY_CHUNK ? n : COPY_CHUNK;
    kr_buf_t *b = buf_alloc(cap);
    memcpy(b->data, p, n);
    b->len = n;
    kr_outq_push(q, b);
    b->flags = ((uint32_t)cap << 1) | KR_BUF_F_APPENDABLE;
}

unsigned kr_outq_peek(const kr_outq_t *q, uv_buf_t *bufs, unsigned max)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < q->count && n < max; i++, n++) {
        const kr_outq_item_t *it = &q->items[(q->head + i) % q->cap];
        bufs[n] = uv_buf_init(it->buf->data + it->off, (unsigned)(it->buf->len - it->off));
    }
    return n;
}

void kr_outq_consume(kr_outq_t *q, size_t n)
{
    KR_ASSERT(n <= q->bytes);
    q->bytes -= n;
    while (n > 0) {
        kr_outq_item_t *it = &q->items[q->head];
        size_t left = it->buf->len - it->off;
        if (n < left) {
            it->off += n;
            return;
        }
        n -= left;
        kr_buf_unref(it->buf);
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
}
