/* kr_reload.c: script file watching with a debounce (see kr_reload.h). */
#include "kr_reload.h"
#include "kr_log.h"

#include <libgen.h>
#include <limits.h>
#include <stdlib.h>

typedef struct dir_watch_s {
    uv_fs_event_t ev;
    struct kr_watch_s *owner;
    char dir[PATH_MAX];
} dir_watch_t;

struct kr_watch_s {
    uv_timer_t debounce;
    uint64_t debounce_ms;
    kr_watch_cb cb;
    void *ud;
    char **names; /* base names of the watched files */
    unsigned nnames;
    dir_watch_t *dirs;
    unsigned ndirs;
    unsigned open_handles; /* freed when the last close callback ran */
};

static void on_debounced(uv_timer_t *t)
{
    kr_watch_t *w = t->data;
    w->cb(w->ud);
}

static void on_fs_event(uv_fs_event_t *ev, const char *filename, int events, int status)
{
    dir_watch_t *d = ev->data;
    kr_watch_t *w = d->owner;
    KR_UNUSED(events);
    if (status != 0) {
        KR_LOG(KR_LOG_WARN, "reload", "watching %s: %s", d->dir, uv_strerror(status));
        return;
    }
    int ours = filename == NULL; /* no name: be safe and reload */
    for (unsigned i = 0; !ours && i < w->nnames; i++)
        ours = strcmp(filename, w->names[i]) == 0;
    if (!ours)
        return;
    KR_LOG(KR_LOG_DEBUG, "reload", "%s/%s changed", d->dir, filename ? filename : "?");
    uv_timer_start(&w->debounce, on_debounced, w->debounce_ms, 0);
}

static void on_closed(uv_handle_t *h)
{
    kr_watch_t *w = h->data;
    if (h->type == UV_FS_EVENT)
        w = ((dir_watch_t *)h->data)->owner;
    if (--w->open_handles > 0)
        return;
    for (unsigned i = 0; i < w->nnames; i++)
        kr_free(w->names[i]);
    kr_free(w->names);
    kr_free(w->dirs);
    kr_free(w);
}

kr_watch_t *kr_watch_new(uv_loop_t *loop, char **paths, unsigned n, uint64_t debounce_ms,
                         kr_watch_cb cb, void *ud)
{
    kr_watch_t *w = kr_calloc(1, sizeof(*w));
    w->debounce_ms = debounce_ms;
    w->cb = cb;
    w->ud = ud;
    w->names = kr_calloc(n, sizeof(char *));
    w->dirs = kr_calloc(n, sizeof(dir_watch_t));
    uv_timer_init(loop, &w->debounce);
    w->debounce.data = w;
    w->open_handles = 1;
    for (unsigned i = 0; i < n; i++) {
        char real[PATH_MAX];
        if (realpath(paths[i], real) == NULL)
            continue;
        char copy1[PATH_MAX], copy2[PATH_MAX];
        strcpy(copy1, real);
        strcpy(copy2, real);
        const char *dir = dirname(copy1);
        w->names[w->nnames++] = kr_strdup(basename(copy2));
        int seen = 0;
        for (unsigned j = 0; j < w->ndirs && !seen; j++)
            seen = strcmp(w->dirs[j].dir, dir) == 0;
        if (seen)
            continue;
        dir_watch_t *d = &w->dirs[w->ndirs];
        snprintf(d->dir, sizeof(d->dir), "%s", dir);
        d->owner = w;
        uv_fs_event_init(loop, &d->ev);
        d->ev.data = d;
        int err = uv_fs_event_start(&d->ev, on_fs_event, d->dir, 0);
        w->open_handles++;
        if (err != 0) {
            KR_LOG(KR_LOG_WARN, "reload", "cannot watch %s: %s", d->dir, uv_strerror(err));
            uv_close((uv_handle_t *)&d->ev, on_closed);
            continue;
        }
        w->ndirs++;
    }
    if (w->ndirs == 0) {
        KR_LOG(KR_LOG_WARN, "reload", "no script can be watched: SIGHUP still reloads");
        kr_watch_free(w);
        return NULL;
    }
    return w;
}

void kr_watch_free(kr_watch_t *w)
{
    if (w == NULL)
        return;
    for (unsigned i = 0; i < w->ndirs; i++)
        uv_close((uv_handle_t *)&w->dirs[i].ev, on_closed);
    w->ndirs = 0;
    uv_close((uv_handle_t *)&w->debounce, on_closed);
}
