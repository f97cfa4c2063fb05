/* kr_time.h: clocks and timestamps.
 *
 * Wall-clock UTC timestamps in the ISO-8601 form the product uses everywhere
 * (`2025-10-11T21:30:00.123Z`, what kr.now() returns), the HTTP `Date` form (RFC 9110
 * IMF-fixdate), and parsing of that form for If-Modified-Since. Owns nothing.
 */
#ifndef KR_TIME_H
#define KR_TIME_H

#include "kr_common.h"
#include <time.h>

#define KR_ISO_TS_LEN 24  /* "2025-10-11T21:30:00.123Z" */
#define KR_HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* Milliseconds since the Unix epoch, wall clock. */
int64_t kr_time_wall_ms(void);
/* Writes the ISO-8601 UTC form of ms (24 chars + NUL) into out. */
void kr_time_iso(int64_t ms, char out[KR_ISO_TS_LEN + 1]);
/* Writes the IMF-fixdate of t (29 chars + NUL) into out. */
void kr_time_http_date(time_t t, char out[KR_HTTP_DATE_LEN + 1]);
/* Parses an IMF-fixdate; returns 0 and sets *t, or KR_EINVAL. */
int kr_time_parse_http_date(const char *s, size_t len, time_t *t);

#endif
