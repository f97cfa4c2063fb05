/* kr_map.c: open-addressing string map (see kr_map.h). */
#include "kr_map.h"

static char tombstone;
#define TOMBSTONE (&tombstone)

static uint64_t hash_key(const char *s, size_t n, int nocase)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (nocase && c >= 'A' && c <= 'Z')
            c += 32;
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

static int key_eq(const kr_map_t *m, const kr_map_entry_t *e, const char *k, size_t n, uint64_t h)
{
    if (e->hash != h || e->key_len != n)
        return 0;
    return m->nocase ? kr_strncasecmp(e->key, k, n) == 0 : memcmp(e->key, k, n) == 0;
}

void kr_map_init(kr_map_t *m, int nocase)
{
    memset(m, 0, sizeof(*m));
    m->nocase = nocase;
}

void kr_map_dispose(kr_map_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->entries[i].key && m->entries[i].key != TOMBSTONE)
            kr_free(m->entries[i].key);
    kr_free(m->entries);
    m->entries = NULL;
    m->cap = m->count = m->used = 0;
}

static kr_map_entry_t *find(const kr_map_t *m, const char *key, size_t len, uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        kr_map_entry_t *e = &m->entries[i];
        if (e->key == NULL)
            return NULL;
        if (e->key != TOMBSTONE && key_eq(m, e, key, len, h))
            return e;
    }
}

void *kr_map_get(const kr_map_t *m, const char *key, size_t len)
{
    kr_map_entry_t *e = find(m, key, len, hash_key(key, len, m->nocase));
    return e ? e->value : NULL;
}

static void rehash(kr_map_t *m, size_t cap)
{
    kr_map_entry_t *old = m->entries;
    size_t oldcap = m->cap;
    m->entries = kr_calloc(cap, sizeof(*m->entries));
    m->cap = cap;
    m->used = m->count;
    for (size_t i = 0; i < oldcap; i++) {
        kr_map_entry_t *e = &old[i];
        if (e->key == NULL || e->key == TOMBSTONE)
            continue;
        size_t j = e->hash & (cap - 1);
        while (m->entries[j].key != NULL)
            j = (j + 1) & (cap - 1);
        m->entries[j] = *e;
    }
    kr_free(old);
}

void *kr_map_put(kr_map_t *m, const char *key, size_t len, void *value)
{
    uint64_t h = hash_key(key, len, m->nocase);
    kr_map_entry_t *e = find(m, key, len, h);
    if (e) {
        void *prev = e->value;
        e->value = value;
        return prev;
    }
    if ((m->used + 1) * 4 >= m->cap * 3) /* keep the load (tombstones included) under 3/4 */
        rehash(m, m->cap ? (m->count * 2 >= m->cap / 2 ? m->cap * 2 : m->cap) : 16);
    size_t i = h & (m->cap - 1);
    while (m->entries[i].key != NULL && m->entries[i].key != TOMBSTONE)
        i = (i + 1) & (m->cap - 1);
    if (m->entries[i].key == NULL)
        m->used++;
    m->entries[i] = (kr_map_entry_t){kr_strndup(key, len), len, h, value};
    m->count++;
    return NULL;
}

void *kr_map_del(kr_map_t *m, const char *key, size_t len)
{
    kr_map_entry_t *e = find(m, key, len, hash_key(key, len, m->nocase));
    if (e == NULL)
        return NULL;
    void *prev = e->value;
    kr_free(e->key);
    e->key = TOMBSTONE;
    e->value = NULL;
    m->count--;
    return prev;
}

void kr_map_foreach(const kr_map_t *m, void (*fn)(const char *key, void *value, void *ud), void *ud)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->entries[i].key && m->entries[i].key != TOMBSTONE)
            fn(m->entries[i].key, m->entries[i].value, ud);
}
