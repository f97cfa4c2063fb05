/* kr_map.h: a string-keyed hash map (open addressing, linear probing, tombstones).
 *
 * Used for connection ids and tokens, group and user names. Keys are copied and owned by the
 * map; values are borrowed pointers. Optional ASCII case-insensitive keys (hub method names).
 * Not thread-safe; no iteration order. Calls nothing but kr_common.
 */
#ifndef KR_MAP_H
#define KR_MAP_H

#include "kr_common.h"

typedef struct kr_map_entry_s {
    char *key; /* NULL: empty; KR_MAP_TOMBSTONE: deleted */
    size_t key_len;
    uint64_t hash;
    void *value;
} kr_map_entry_t;

typedef struct kr_map_s {
    kr_map_entry_t *entries;
    size_t cap, count, used; /* used counts tombstones too */
    int nocase;
} kr_map_t;

void kr_map_init(kr_map_t *m, int nocase);
/* Frees the keys and the table (values are the caller's). */
void kr_map_dispose(kr_map_t *m);
void *kr_map_get(const kr_map_t *m, const char *key, size_t len);
/* Inserts or replaces; returns the previous value or NULL. */
void *kr_map_put(kr_map_t *m, const char *key, size_t len, void *value);
/* Removes; returns the removed value or NULL. */
void *kr_map_del(kr_map_t *m, const char *key, size_t len);
static inline size_t kr_map_count(const kr_map_t *m)
{
    return m->count;
}
/* Calls fn for every entry (the map must not change during the walk). */
void kr_map_foreach(const kr_map_t *m, void (*fn)(const char *key, void *value, void *ud), void *ud);

#endif
