/* kr_reload.c: script file watching with a debounce (see kr_reload.h). */
#include "kr_reload.h"
#include "kr_log.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>

/* Allocated one by one: the uv handle inside must not move when more directories come. */
typedef struct dir_watch_s {
    uv_fs_event_t ev;
    struct kr_watch_s *owner;
    char dir[PATH_MAX];
} dir_watch_t;

struct kr_watch_s {
    uv_loop_t *loop;
    uv_timer_t debounce;
    uint64_t debounce_ms;
    kr_watch_cb cb;
    void *ud;
    char **files; /* real paths of the watched files */
    unsigned nfiles;
    dir_watch_t **dirs; /* started watchers */
    unsigned ndirs;
    unsigned open_handles; /* freed when the last close callback ran */
};

static void on_debounced(uv_timer_t *t)
{
    kr_watch_t *w = t->data;
    w->cb(w->ud);
}

static int is_watched(const kr_watch_t *w, const char *dir, const char *name)
{
    size_t dlen = strlen(dir);
    for (unsigned i = 0; i < w->nfiles; i++) {
        const char *f = w->files[i];
        size_t skip = dlen == 1 ? 0 : dlen; /* a file in "/" is "/name", not "//name" */
        if (strncmp(f, dir, dlen) == 0 && f[skip] == '/' && strcmp(f + skip + 1, name) == 0)
            return 1;
    }
    return 0;
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
    /* No name (the kernel's queue overflowed, or a platform without names): reload. A rename
     * over the file reports the file's own name (the target), so it matches. */
    if (filename != NULL && !is_watched(w, d->dir, filename))
        return;
    KR_LOG(KR_LOG_DEBUG, "reload", "%s/%s changed", d->dir, filename ? filename : "?");
    /* Every event restarts the quiet period: one reload per burst, after the last write. */
    uv_timer_start(&w->debounce, on_debounced, w->debounce_ms, 0);
}

static void on_closed(uv_handle_t *h)
{
    kr_watch_t *w = h->data;
    if (h->type == UV_FS_EVENT) {
        dir_watch_t *d = h->data;
        w = d->owner;
        kr_free(d);
    }
    if (--w->open_handles > 0)
        return;
    for (unsigned i = 0; i < w->nfiles; i++)
        kr_free(w->files[i]);
    kr_free(w->files);
    kr_free(w->dirs);
    kr_free(w);
}

static int dir_watched(const kr_watch_t *w, const char *dir)
{
    for (unsigned i = 0; i < w->ndirs; i++)
        if (strcmp(w->dirs[i]->dir, dir) == 0)
            return 1;
    return 0;
}

static int watch_dir(kr_watch_t *w, const char *dir)
{
    dir_watch_t *d = kr_calloc(1, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "%s", dir);
    d->owner = w;
    uv_fs_event_init(w->loop, &d->ev);
    d->ev.data = d;
    w->open_handles++;
    int err = uv_fs_event_start(&d->ev, on_fs_event, d->dir, 0);
    if (err != 0) {
        KR_LOG(KR_LOG_WARN, "reload", "cannot watch %s: %s", d->dir, uv_strerror(err));
        uv_close((uv_handle_t *)&d->ev, on_closed);
        return err;
    }
    w->dirs = kr_realloc(w->dirs, sizeof(*w->dirs) * (w->ndirs + 1));
    w->dirs[w->ndirs++] = d;
    return 0;
}

int kr_watch_add(kr_watch_t *w, const char *path)
{
    char real[PATH_MAX];
    if (realpath(path, real) == NULL) {
        int err = uv_translate_sys_error(errno);
        if (err != UV_ENOENT)
            KR_LOG(KR_LOG_WARN, "reload", "cannot watch %s: %s", path, uv_strerror(err));
        return err;
    }
    for (unsigned i = 0; i < w->nfiles; i++)
        if (strcmp(w->files[i], real) == 0)
            return 0;
    char copy[PATH_MAX];
    strcpy(copy, real);
    const char *dir = dirname(copy);
    if (!dir_watched(w, dir)) {
        int err = watch_dir(w, dir);
        if (err != 0)
            return err;
    }
    w->files = kr_realloc(w->files, sizeof(*w->files) * (w->nfiles + 1));
    w->files[w->nfiles++] = kr_strdup(real);
    KR_LOG(KR_LOG_DEBUG, "reload", "watching %s", real);
    return 0;
}

kr_watch_t *kr_watch_new(uv_loop_t *loop, char **paths, unsigned n, uint64_t debounce_ms,
                         kr_watch_cb cb, void *ud)
{
    kr_watch_t *w = kr_calloc(1, sizeof(*w));
    w->loop = loop;
    w->debounce_ms = debounce_ms;
    w->cb = cb;
    w->ud = ud;
    uv_timer_init(loop, &w->debounce);
    w->debounce.data = w;
    w->open_handles = 1;
    for (unsigned i = 0; i < n; i++)
        (void)kr_watch_add(w, paths[i]);
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
        uv_close((uv_handle_t *)&w->dirs[i]->ev, on_closed);
    w->ndirs = 0;
    uv_close((uv_handle_t *)&w->debounce, on_closed);
}
