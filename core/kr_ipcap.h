/* kr_ipcap.h: open connections counted per client address (the per-IP connection cap).
 *
 * A small open-addressing hash table from a client key to the number of connections open
 * from it. The server adds a key when it accepts a connection and releases it when the
 * connection closes; an entry whose count drops to 0 is removed, so the table holds at most
 * one entry per open connection (bounded by max_connections).
 *
 * What counts as one client: an IPv4 address; an IPv6 /64 prefix (one end site's subnet: a
 * single host can pick any of its 2^64 addresses, so counting /128s would make the cap
 * useless against IPv6 clients); an IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack
 * listener) counts as its IPv4 address. The hash is seeded at random per table, so a client
 * that chooses its addresses (many /64s of a /48) cannot aim at one probe chain.
 */
#ifndef KR_IPCAP_H
#define KR_IPCAP_H

#include "kr_common.h"

struct sockaddr;

typedef struct kr_ipkey_s {
    uint8_t family; /* 0: none (no address known; never counted), 4, 6 */
    uint8_t bytes[8]; /* IPv4: the first 4 bytes; IPv6: the /64 prefix */
} kr_ipkey_t;

typedef struct kr_ipcap_entry_s {
    kr_ipkey_t key;
    uint32_t count; /* 0: empty slot */
} kr_ipcap_entry_t;

typedef struct kr_ipcap_s {
    kr_ipcap_entry_t *slots;
    uint32_t nslots; /* a power of two, or 0 before the first add */
    uint32_t used;   /* entries with count > 0 */
    uint64_t seed;
} kr_ipcap_t;

void kr_ipcap_init(kr_ipcap_t *t);
void kr_ipcap_dispose(kr_ipcap_t *t);

/* The client key of an address (AF_INET / AF_INET6). Returns 0, or KR_EINVAL for any other
 * family (key->family is then 0). */
int kr_ipcap_key(const struct sockaddr *sa, kr_ipkey_t *key);
/* Text of a key for logs: "192.0.2.7" or "2001:db8:0:1::/64". */
void kr_ipcap_key_str(const kr_ipkey_t *key, char *out, size_t n);

/* Counts one more connection from key; returns the new count (0 for a key without family). */
uint32_t kr_ipcap_add(kr_ipcap_t *t, const kr_ipkey_t *key);
/* Counts one connection less (a key that is not there is ignored); returns the new count. */
uint32_t kr_ipcap_release(kr_ipcap_t *t, const kr_ipkey_t *key);
/* Connections counted for key now. */
uint32_t kr_ipcap_count(const kr_ipcap_t *t, const kr_ipkey_t *key);

#endif
