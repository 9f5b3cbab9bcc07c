/*
 * watch.c - --watch PATH: reload when files change (dev mode).
 *
 * One inotify descriptor, polled by the loop like the notify and control
 * sockets.  A directory is watched with everything below it, and a
 * directory created later is added as it appears; a file is watched through
 * its directory, by name, so that an editor's save by rename (write a new
 * file, rename it over the old one) is seen like a write in place.  Inside
 * a watched directory, names starting with '.' (.git, .swp files) and
 * ending in '~' are ignored, as are vim's "4913" probe file and python's
 * __pycache__ (a worker that compiles its modules there would otherwise
 * reload itself forever); a file named by --watch itself never is.
 *
 * A change arms a debounce: the reload is asked for once nothing changed
 * for QUIET_MS, at most MAX_WAIT_MS after the first change, through
 * ps__op_request like SIGHUP (so it queues behind, or merges into, a reload
 * in flight, and a broken change is rolled back like any failed reload).
 */
#include "sup_internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUIET_MS    300
#define MAX_WAIT_MS 3000
#define MAX_WATCHES 8192 /* directories watched in all */

#define DIR_EVENTS                                                                                 \
    (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)

struct ps_watch {
    int wd;
    char *dir;  /* the directory this descriptor watches */
    char *only; /* a --watch FILE: only this name in dir; NULL: the whole tree */
};

static int ignored(const char *name)
{
    size_t n = strlen(name);

    return name[0] == '.' || (n && name[n - 1] == '~') || !strcmp(name, "4913") ||
           !strcmp(name, "__pycache__");
}

static int add_entry(struct ps_sup *sup, int wd, const char *dir, const char *only)
{
    struct ps_watch *w;
    int i;

    for (i = 0; i < sup->nwatches; i++) /* the kernel returns the same wd for a dir again */
        if (sup->watches[i].wd == wd &&
            (sup->watches[i].only && only ? !strcmp(sup->watches[i].only, only)
                                          : sup->watches[i].only == only))
            return 0;
    if (sup->nwatches >= MAX_WATCHES)
        return -ENOSPC;
    w = realloc(sup->watches, (size_t)(sup->nwatches + 1) * sizeof(*w));
    if (!w)
        return -ENOMEM;
    sup->watches = w;
    w = &sup->watches[sup->nwatches];
    w->wd = wd;
    w->dir = strdup(dir);
    w->only = only ? strdup(only) : NULL;
    if (!w->dir || (only && !w->only)) {
        free(w->dir);
        free(w->only);
        return -ENOMEM;
    }
    sup->nwatches++;
    return 0;
}

/* Watch dir and, unless only is set, every directory below it (not the
 * ignored ones).  O(directories below). */
static int watch_dir(struct ps_sup *sup, const char *dir, const char *only)
{
    char sub[4096];
    struct dirent *de;
    DIR *d;
    int wd, r;

    wd = inotify_add_watch(sup->watch_fd, dir, DIR_EVENTS | IN_ONLYDIR);
    if (wd < 0)
        return ps__neg_errno();
    r = add_entry(sup, wd, dir, only);
    if (r < 0 || only)
        return r;
    d = opendir(dir);
    if (!d)
        return 0; /* gone already: its parent's events tell */
    while ((de = readdir(d))) {
        if (ignored(de->d_name) || (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN))
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) >= sizeof(sub))
            continue;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode))
                continue;
        }
        r = watch_dir(sup, sub, NULL);
        if (r < 0 && r != -ENOENT)
            break;
        r = 0;
    }
    closedir(d);
    return r;
}

static int watch_path(struct ps_sup *sup, const char *path, char *err, size_t errlen)
{
    char dir[4096];
    const char *slash;
    struct stat st;
    int r;

    if (stat(path, &st) < 0) {
        r = ps__neg_errno();
        ps__set_error(err, errlen, "--watch %s: %s", path, ps_strerror(r));
        return r;
    }
    if (S_ISDIR(st.st_mode)) {
        r = watch_dir(sup, path, NULL);
    } else {
        slash = strrchr(path, '/');
        if (!slash)
            snprintf(dir, sizeof(dir), ".");
        else
            snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
        r = watch_dir(sup, dir, slash ? slash + 1 : path);
    }
    if (r < 0)
        ps__set_error(err, errlen, "--watch %s: %s%s", path, ps_strerror(r),
                      r == -ENOSPC ? " (fs.inotify.max_user_watches, or more than 8192 "
                                     "directories)"
                                   : "");
    return r;
}

int ps__watch_open(struct ps_sup *sup, char *err, size_t errlen)
{
    int i, r;

    sup->watch_fd = -1;
    if (!sup->cfg->nwatch)
        return 0;
    sup->watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (sup->watch_fd < 0) {
        r = ps__neg_errno();
        ps__set_error(err, errlen, "--watch: cannot use inotify: %s", ps_strerror(r));
        return r;
    }
    for (i = 0; i < sup->cfg->nwatch; i++) {
        r = watch_path(sup, sup->cfg->watch[i], err, errlen);
        if (r < 0)
            return r;
    }
    ps__sup_log(sup, PS_LOG_INFO, "watching",
                "watching %d path(s) (%d director%s): a change reloads", sup->cfg->nwatch,
                sup->nwatches, sup->nwatches == 1 ? "y" : "ies");
    return 0;
}

void ps__watch_close(struct ps_sup *sup)
{
    int i;

    for (i = 0; i < sup->nwatches; i++) {
        free(sup->watches[i].dir);
        free(sup->watches[i].only);
    }
    free(sup->watches);
    sup->watches = NULL;
    sup->nwatches = 0;
    ps__close(sup->watch_fd);
    sup->watch_fd = -1;
}

/* One event: does it count, and is it a new directory to watch? */
static void watch_event(struct ps_sup *sup, const struct inotify_event *ev, uint64_t now)
{
    char path[4096];
    int i, counts = 0;

    if (ev->mask & IN_IGNORED) /* its directory is gone: the parent said so */
        return;
    if (ev->mask & IN_Q_OVERFLOW) { /* events were lost: something changed */
        counts = 1;
        snprintf(path, sizeof(path), "(inotify queue overflow)");
    }
    for (i = 0; i < sup->nwatches; i++) {
        const struct ps_watch *w = &sup->watches[i];
        if (w->wd != ev->wd)
            continue;
        if (w->only ? (ev->len && !strcmp(ev->name, w->only)) : (!ev->len || !ignored(ev->name))) {
            counts = 1;
            snprintf(path, sizeof(path), "%s%s%s", w->dir, ev->len ? "/" : "",
                     ev->len ? ev->name : "");
        }
        if (!w->only && ev->len && !ignored(ev->name) && (ev->mask & IN_ISDIR) &&
            (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
            char sub[4096];
            if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", w->dir, ev->name) < sizeof(sub) &&
                watch_dir(sup, sub, NULL) < 0)
                ps__sup_log(sup, PS_LOG_WARN, "watch_failed", "cannot watch %s", sub);
            break; /* watch_dir may have moved sup->watches */
        }
    }
    if (!counts)
        return;
    if (!sup->watch_first) {
        sup->watch_first = now;
        snprintf(sup->watch_what, sizeof(sup->watch_what), "%.255s", path);
    }
    sup->watch_changes++;
    sup->watch_last = now;
}

void ps__watch_read(struct ps_sup *sup)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    uint64_t now = ps__now_ms();
    ssize_t n;
    char *p;

    while ((n = read(sup->watch_fd, buf, sizeof(buf))) > 0)
        for (p = buf; p < buf + n;
             p += sizeof(struct inotify_event) + ((struct inotify_event *)p)->len)
            watch_event(sup, (const struct inotify_event *)p, now);
}

uint64_t ps__watch_deadline(const struct ps_sup *sup)
{
    uint64_t quiet, cap;

    if (!sup->watch_first)
        return UINT64_MAX;
    quiet = sup->watch_last + QUIET_MS;
    cap = sup->watch_first + MAX_WAIT_MS;
    return quiet < cap ? quiet : cap;
}

void ps__watch_timer(struct ps_sup *sup, uint64_t now)
{
    char err[256];

    if (!sup->watch_first || now < ps__watch_deadline(sup))
        return;
    ps__sup_log(sup, PS_LOG_INFO, "watch_reload", "%u change(s), first %s: reload",
                sup->watch_changes, sup->watch_what);
    sup->watch_first = sup->watch_last = 0;
    sup->watch_changes = 0;
    if (sup->stopping)
        return;
    if (ps__op_request(sup, OP_RELOAD, 0, NULL, err, sizeof(err)) < 0)
        ps__sup_log(sup, PS_LOG_WARN, "watch_refused", "reload refused: %s", err);
}
