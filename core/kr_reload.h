/* kr_reload.h: watches the loaded script files and asks for a reload when one changes.
 *
 * One uv_fs_event per directory that holds a watched file (watching the directory, not the
 * file, sees editors that save by writing a new file and renaming it over the old one: vim's
 * backup-rename, `sed -i`, a file moved in from another directory). Events for other files in
 * those directories are ignored. A burst of events (an editor writes, then renames, then
 * touches) becomes one reload after a quiet period (debounce). Files can be added later (the
 * modules a generation pulled in with require/dofile); they are never removed: a stale entry
 * costs at most a needless reload. Owns its handles; calls back through a function pointer.
 */
#ifndef KR_RELOAD_H
#define KR_RELOAD_H

#include "kr_common.h"

typedef void (*kr_watch_cb)(void *ud);
typedef struct kr_watch_s kr_watch_t;

/* Starts watching paths. Returns NULL (and logs why) when nothing could be watched. */
kr_watch_t *kr_watch_new(uv_loop_t *loop, char **paths, unsigned n, uint64_t debounce_ms,
                         kr_watch_cb cb, void *ud);
/* Watches one more file (no-op if it already is). Returns 0, or a libuv error (logged at
 * Warning unless the file does not exist). */
int kr_watch_add(kr_watch_t *w, const char *path);
/* Stops watching; the memory goes once libuv has closed the handles. */
void kr_watch_free(kr_watch_t *w);

#endif
