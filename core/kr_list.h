/* kr_list.h: intrusive circular doubly linked list (header-only, uv__queue style).
 *
 * A kr_list_t is embedded in the object it links; kr_container_of gets the object back.
 * An unlinked node points to itself, so kr_list_remove is idempotent and kr_list_linked
 * tells whether a node is on a list. Owns nothing.
 */
#ifndef KR_LIST_H
#define KR_LIST_H

#include "kr_common.h"

typedef struct kr_list_s {
    struct kr_list_s *next, *prev;
} kr_list_t;

static inline void kr_list_init(kr_list_t *l)
{
    l->next = l->prev = l;
}

static inline int kr_list_empty(const kr_list_t *l)
{
    return l->next == l;
}

static inline int kr_list_linked(const kr_list_t *n)
{
    return n->next != n;
}

static inline void kr_list_insert_tail(kr_list_t *head, kr_list_t *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void kr_list_remove(kr_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

/* Moves every node of src to the end of dst, leaving src empty. */
static inline void kr_list_move_all(kr_list_t *src, kr_list_t *dst)
{
    if (kr_list_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    kr_list_init(src);
}

#define kr_list_foreach(it, head) for ((it) = (head)->next; (it) != (head); (it) = (it)->next)

#endif
