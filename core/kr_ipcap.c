/* kr_ipcap.c: connections per client address (see kr_ipcap.h).
 *
 * Linear probing, at most half full, with backward-shift deletion (no tombstones: a table
 * that saw a flood of distinct clients goes back to short chains, and shrinks, once they
 * leave). */
#include "kr_ipcap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#define MIN_SLOTS 64u

void kr_ipcap_init(kr_ipcap_t *t)
{
    memset(t, 0, sizeof(*t));
    if (uv_random(NULL, NULL, &t->seed, sizeof(t->seed), 0, NULL) != 0)
        t->seed = (uint64_t)(uintptr_t)t ^ uv_hrtime(); /* no entropy: still not a constant */
    t->seed |= 1;
}

void kr_ipcap_dispose(kr_ipcap_t *t)
{
    kr_free(t->slots);
    t->slots = NULL;
    t->nslots = t->used = 0;
}

int kr_ipcap_key(const struct sockaddr *sa, kr_ipkey_t *key)
{
    memset(key, 0, sizeof(*key));
    if (sa == NULL)
        return KR_EINVAL;
    if (sa->sa_family == AF_INET) {
        /* Copied field by field: the caller's sockaddr may be only 2-byte aligned. */
        key->family = 4;
        memcpy(key->bytes, (const char *)sa + offsetof(struct sockaddr_in, sin_addr), 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = (const uint8_t *)sa + offsetof(struct sockaddr_in6, sin6_addr);
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, sizeof(mapped)) == 0) {
            key->family = 4; /* ::ffff:a.b.c.d on a dual-stack listener: the IPv4 client */
            memcpy(key->bytes, a + 12, 4);
            return 0;
        }
        key->family = 6;
        memcpy(key->bytes, a, 8); /* the /64 */
        return 0;
    }
    return KR_EINVAL;
}

void kr_ipcap_key_str(const kr_ipkey_t *key, char *out, size_t n)
{
    if (n == 0)
        return;
    out[0] = '\0';
    if (key->family == 4) {
        if (inet_ntop(AF_INET, key->bytes, out, (socklen_t)n) == NULL)
            out[0] = '\0';
    } else if (key->family == 6) {
        uint8_t a[16] = {0};
        char tmp[INET6_ADDRSTRLEN];
        memcpy(a, key->bytes, 8);
        if (inet_ntop(AF_INET6, a, tmp, sizeof(tmp)) != NULL)
            snprintf(out, n, "%s/64", tmp);
    }
}

static int key_eq(const kr_ipkey_t *a, const kr_ipkey_t *b)
{
    return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

static uint64_t hash_key(const kr_ipcap_t *t, const kr_ipkey_t *key)
{
    uint64_t k;
    memcpy(&k, key->bytes, sizeof(k));
    /* murmur3's fmix64 over the seeded key, twice: the slot a client lands in depends on the
     * table's secret seed, not on the address alone. */
    uint64_t h = k ^ t->seed ^ ((uint64_t)key->family << 56);
    for (int i = 0; i < 2; i++) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53ull;
        h ^= h >> 33;
        h ^= t->seed;
    }
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static uint32_t find_slot(const kr_ipcap_t *t, const kr_ipkey_t *key)
{
    uint32_t mask = t->nslots - 1;
    uint32_t i = (uint32_t)hash_key(t, key) & mask;
    while (t->slots[i].count != 0 && !key_eq(&t->slots[i].key, key))
        i = (i + 1) & mask;
    return i;
}

static void resize(kr_ipcap_t *t, uint32_t nslots)
{
    kr_ipcap_entry_t *old = t->slots;
    uint32_t nold = t->nslots;
    t->slots = kr_calloc(nslots, sizeof(*t->slots));
    t->nslots = nslots;
    for (uint32_t i = 0; i < nold; i++) {
        if (old[i].count == 0)
            continue;
        t->slots[find_slot(t, &old[i].key)] = old[i];
    }
    kr_free(old);
}

uint32_t kr_ipcap_add(kr_ipcap_t *t, const kr_ipkey_t *key)
{
    if (key->family == 0)
        return 0;
    if (t->nslots == 0)
        resize(t, MIN_SLOTS);
    else if ((t->used + 1) * 2 > t->nslots)
        resize(t, t->nslots * 2);
    kr_ipcap_entry_t *e = &t->slots[find_slot(t, key)];
    if (e->count == 0) {
        e->key = *key;
        t->used++;
    }
    return ++e->count;
}

uint32_t kr_ipcap_count(const kr_ipcap_t *t, const kr_ipkey_t *key)
{
    if (key->family == 0 || t->nslots == 0)
        return 0;
    return t->slots[find_slot(t, key)].count;
}

uint32_t kr_ipcap_release(kr_ipcap_t *t, const kr_ipkey_t *key)
{
    if (key->family == 0 || t->nslots == 0)
        return 0;
    uint32_t mask = t->nslots - 1;
    uint32_t i = find_slot(t, key);
    if (t->slots[i].count == 0)
        return 0;
    if (--t->slots[i].count > 0)
        return t->slots[i].count;
    /* Backward-shift deletion: move later members of the chain into the hole when their home
     * slot does not lie (cyclically) after the hole. */
    t->used--;
    uint32_t hole = i;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (t->slots[j].count == 0)
            break;
        uint32_t home = (uint32_t)hash_key(t, &t->slots[j].key) & mask;
        int movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole].count = 0;
    if (t->nslots > MIN_SLOTS && t->used * 8 < t->nslots)
        resize(t, t->nslots / 2);
    return 0;
}
