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
 * The walk of a tree keeps the directories still to read in a queue on the
 * heap, not on the stack, so the depth of a tree (10,000 levels moved in at
 * once) costs no stack; at most MAX_WATCHES directories are watched, and
 * past that a new directory is refused with one warning.  A directory that
 * is deleted or moved away is forgotten (IN_IGNORED, IN_MOVED_FROM), so
 * directories that come and go forever never use the room up.
 *
 * A change arms a debounce: the reload is asked for once nothing changed
 * for QUIET_MS, at most MAX_WAIT_MS after the first change, through
 * ps__op_request like SIGHUP (so it queues behind, or merges into, a reload
 * in flight, and a broken change is rolled back like any failed reload).
 */
#include "sup_internal.h"

#include <dirent.h>
#include <limits.h>
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

/* The supervisor's --watch state (sup->watch; none without --watch). */
struct ps_watcher {
    int fd;                /* inotify, or -1 */
    struct ps_watch *dirs; /* one entry a watched directory */
    int ndirs;
    uint64_t first, last; /* a change is pending since / last seen */
    unsigned changes;
    char what[256]; /* the first changed path, for the log */
    int full_said;  /* warned that a new directory is past the limit */
};

static int ignored(const char *name)
{
    size_t n = strlen(name);

    return name[0] == '.' || (n && name[n - 1] == '~') || !strcmp(name, "4913") ||
           !strcmp(name, "__pycache__");
}

static int same_only(const struct ps_watch *w, const char *only)
{
    return w->only && only ? !strcmp(w->only, only) : w->only == only;
}

/* Record that wd watches dir (for only, or the tree): 1 when it was
 * recorded already (the kernel returns the same wd for a directory seen
 * again: a bind mount loop, or a directory walked before its creation
 * event is read), 0 when added, -ENOSPC beyond MAX_WATCHES, -ENOMEM. */
static int add_entry(struct ps_sup *sup, int wd, const char *dir, const char *only)
{
    struct ps_watch *w;
    int i;

    for (i = 0; i < sup->watch->ndirs; i++)
        if (sup->watch->dirs[i].wd == wd && same_only(&sup->watch->dirs[i], only))
            return 1;
    if (sup->watch->ndirs >= MAX_WATCHES)
        return -ENOSPC;
    /* room doubles at each power of two: a walk of n directories copies
     * O(n) entries, not O(n^2) (it keeps room for more than nwatches
     * whatever entries were dropped since) */
    if (sup->watch->ndirs < 8 || !(sup->watch->ndirs & (sup->watch->ndirs - 1))) {
        int room = sup->watch->ndirs < 8 ? 8 : 2 * sup->watch->ndirs;
        w = realloc(sup->watch->dirs, (size_t)room * sizeof(*w));
        if (!w)
            return -ENOMEM;
        sup->watch->dirs = w;
    }
    w = &sup->watch->dirs[sup->watch->ndirs];
    w->wd = wd;
    w->dir = strdup(dir);
    w->only = only ? strdup(only) : NULL;
    if (!w->dir || (only && !w->only)) {
        free(w->dir);
        free(w->only);
        return -ENOMEM;
    }
    sup->watch->ndirs++;
    return 0;
}

/* Entry i is gone: freed, the last one takes its place. */
static void drop_entry(struct ps_sup *sup, int i)
{
    free(sup->watch->dirs[i].dir);
    free(sup->watch->dirs[i].only);
    sup->watch->dirs[i] = sup->watch->dirs[--sup->watch->ndirs];
    sup->watch->full_said = 0; /* there is room again: a refusal is news */
}

/* The kernel dropped watch wd (IN_IGNORED: its directory was deleted, or
 * we removed it): forget every entry of it, so that a tree where
 * directories come and go forever never runs into MAX_WATCHES.  O(entries). */
static void forget_wd(struct ps_sup *sup, int wd)
{
    int i;

    for (i = sup->watch->ndirs - 1; i >= 0; i--)
        if (sup->watch->dirs[i].wd == wd)
            drop_entry(sup, i);
}

/* dir left the watched tree (moved away, or renamed inside it: the new name
 * is walked as new): stop watching it and what is below it.  The kernel's
 * watch goes too unless a --watch FILE entry shares it.  O(entries^2) at
 * worst, for a subtree of every entry. */
static void forget_tree(struct ps_sup *sup, const char *dir)
{
    size_t n = strlen(dir);
    int i, k, shared;

    for (i = sup->watch->ndirs - 1; i >= 0; i--) {
        const struct ps_watch *w = &sup->watch->dirs[i];
        if (w->only || strncmp(w->dir, dir, n) || (w->dir[n] && w->dir[n] != '/'))
            continue;
        for (shared = 0, k = 0; k < sup->watch->ndirs && !shared; k++)
            shared = k != i && sup->watch->dirs[k].wd == w->wd;
        if (!shared)
            inotify_rm_watch(sup->watch->fd, w->wd);
        drop_entry(sup, i); /* what moves into i was looked at already */
    }
}

/* The directories a walk still has to read, in order: a queue on the heap
 * (a recursion of a page of stack per level overflowed the stack on a deep
 * tree).  Never longer than the entries the walk added, so MAX_WATCHES
 * bounds it too. */
struct walk {
    char **q;
    int head, n, cap;
    unsigned toolong; /* directories left out: their path is over PATH_MAX */
};

static int walk_push(struct walk *wk, const char *dir)
{
    if (wk->n == wk->cap) {
        int cap = wk->cap ? 2 * wk->cap : 64;
        char **q = realloc(wk->q, (size_t)cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        wk->q = q;
        wk->cap = cap;
    }
    wk->q[wk->n] = strdup(dir);
    return wk->q[wk->n] ? (wk->n++, 0) : -ENOMEM;
}

static void walk_free(struct walk *wk)
{
    while (wk->head < wk->n)
        free(wk->q[wk->head++]);
    free(wk->q);
}

/* Watch dir (for only, or as part of a tree); a new tree directory is
 * queued to be read.  0, or -errno (-ENOENT: it is gone already). */
static int watch_one(struct ps_sup *sup, struct walk *wk, const char *dir, const char *only)
{
    int wd, r;

    wd = inotify_add_watch(sup->watch->fd, dir, DIR_EVENTS | IN_ONLYDIR);
    if (wd < 0)
        return ps__neg_errno();
    r = add_entry(sup, wd, dir, only);
    if (r == 0 && !only)
        r = walk_push(wk, dir);
    if (r == -ENOSPC) /* the kernel's watch without an entry would only leak */
        inotify_rm_watch(sup->watch->fd, wd);
    return r < 0 ? r : 0;
}

/* Watch the directories in dir that are not ignored (not through symbolic
 * links).  0, or -errno of the first one that could not be watched. */
static int walk_dir(struct ps_sup *sup, struct walk *wk, const char *dir)
{
    char sub[PATH_MAX];
    struct dirent *de;
    DIR *d = opendir(dir);
    int r = 0;

    if (!d)
        return 0; /* gone already: its parent's events tell */
    while (r == 0 && (de = readdir(d))) {
        if (ignored(de->d_name) || (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN))
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) >= sizeof(sub)) {
            wk->toolong++;
            continue;
        }
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode))
                continue;
        }
        r = watch_one(sup, wk, sub, NULL);
        if (r == -ENOENT) /* deleted since readdir: nothing to watch */
            r = 0;
    }
    closedir(d);
    return r;
}

/* Watch dir and, unless only is set, every directory below it, breadth
 * first (what is left out at the limit is the deepest).  A path too long
 * to name is left out with a warning.  0, or -errno: -ENOSPC past
 * MAX_WATCHES or fs.inotify.max_user_watches (what was watched stays).
 * O(directories below); memory O(their paths), no recursion. */
static int watch_dir(struct ps_sup *sup, const char *dir, const char *only)
{
    struct walk wk = {0};
    int r = watch_one(sup, &wk, dir, only);

    while (r == 0 && wk.head < wk.n) {
        char *next = wk.q[wk.head++];
        r = walk_dir(sup, &wk, next);
        free(next);
    }
    if (wk.toolong)
        ps__sup_log(sup, PS_LOG_WARN, "watch_toolong",
                    "%u director%s below %s (and what is below them) not watched: path "
                    "longer than %d bytes",
                    wk.toolong, wk.toolong == 1 ? "y" : "ies", dir, PATH_MAX - 1);
    walk_free(&wk);
    return r;
}

static int watch_path(struct ps_sup *sup, const char *path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
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

/* Every directory forgotten and the inotify descriptor closed: the object
 * stays (for rewatch). */
static void forget_all(struct ps_watcher *wr)
{
    int i;

    for (i = 0; i < wr->ndirs; i++) {
        free(wr->dirs[i].dir);
        free(wr->dirs[i].only);
    }
    free(wr->dirs);
    wr->dirs = NULL;
    wr->ndirs = 0;
    wr->full_said = 0;
    ps__close(wr->fd);
    wr->fd = -1;
}

int ps__watch_open(struct ps_sup *sup, char *err, size_t errlen)
{
    int i, r;

    if (!sup->cfg->nwatch)
        return 0;
    if (!sup->watch && !(sup->watch = calloc(1, sizeof(*sup->watch)))) {
        ps__set_error(err, errlen, "--watch: out of memory");
        return -ENOMEM;
    }
    sup->watch->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (sup->watch->fd < 0) {
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
                sup->watch->ndirs, sup->watch->ndirs == 1 ? "y" : "ies");
    return 0;
}

void ps__watch_close(struct ps_sup *sup)
{
    if (!sup->watch)
        return;
    forget_all(sup->watch);
    free(sup->watch);
    sup->watch = NULL;
}

int ps__watch_fd(const struct ps_sup *sup)
{
    return sup->watch ? sup->watch->fd : -1;
}

/* A directory appeared in (or left) dir, a directory of a watched tree. */
static void tree_changed(struct ps_sup *sup, const char *dir, const struct inotify_event *ev)
{
    char sub[PATH_MAX];
    int r;

    if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, ev->name) >= sizeof(sub)) {
        ps__sup_log(sup, PS_LOG_WARN, "watch_toolong",
                    "a directory in %s not watched: path longer than %d bytes", dir, PATH_MAX - 1);
        return;
    }
    if (ev->mask & IN_MOVED_FROM) {
        forget_tree(sup, sub);
        return;
    }
    r = watch_dir(sup, sub, NULL);
    if (r == -ENOSPC && !sup->watch->full_said) {
        sup->watch->full_said = 1; /* once, until a watch is freed */
        ps__sup_log(sup, PS_LOG_WARN, "watch_full",
                    "cannot watch all of %s: %s (fs.inotify.max_user_watches, or more than %d "
                    "directories); a change in what is not watched does not reload",
                    sub, ps_strerror(r), MAX_WATCHES);
    } else if (r < 0 && r != -ENOSPC && r != -ENOENT) {
        ps__sup_log(sup, PS_LOG_WARN, "watch_failed", "cannot watch %s: %s", sub, ps_strerror(r));
    }
}

/* One event: does it count, and is it a directory that came or went? */
static void watch_event(struct ps_sup *sup, const struct inotify_event *ev, uint64_t now)
{
    char path[PATH_MAX], dir[PATH_MAX] = "";
    int i, counts = 0;

    if (ev->mask & IN_IGNORED) { /* its directory is gone, or we removed it */
        forget_wd(sup, ev->wd);
        return;
    }
    if (ev->mask & IN_Q_OVERFLOW) { /* events were lost: something changed */
        counts = 1;
        snprintf(path, sizeof(path), "(inotify queue overflow)");
    }
    for (i = 0; i < sup->watch->ndirs; i++) {
        const struct ps_watch *w = &sup->watch->dirs[i];
        if (w->wd != ev->wd)
            continue;
        if (w->only ? (ev->len && !strcmp(ev->name, w->only)) : (!ev->len || !ignored(ev->name))) {
            counts = 1;
            snprintf(path, sizeof(path), "%s%s%s", w->dir, ev->len ? "/" : "",
                     ev->len ? ev->name : "");
        }
        if (!w->only)
            snprintf(dir, sizeof(dir), "%s", w->dir);
    }
    /* after the loop: watching or forgetting moves sup->watch->dirs */
    if (dir[0] && ev->len && !ignored(ev->name) && (ev->mask & IN_ISDIR) &&
        (ev->mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM)))
        tree_changed(sup, dir, ev);
    if (!counts)
        return;
    if (!sup->watch->first) {
        sup->watch->first = now;
        snprintf(sup->watch->what, sizeof(sup->watch->what), "%.255s", path);
    }
    sup->watch->changes++;
    sup->watch->last = now;
}

/* Events were lost (IN_Q_OVERFLOW: a mass deletion can lose the
 * IN_IGNORED of thousands of directories, a mass creation their
 * IN_CREATE): what is watched is no longer known, so start over with a new
 * inotify descriptor and every --watch path walked again.  O(directories). */
static void rewatch(struct ps_sup *sup)
{
    char err[PATH_MAX + 128];
    int i, r;

    forget_all(sup->watch);
    sup->watch->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (sup->watch->fd < 0) {
        r = ps__neg_errno();
        ps__sup_log(sup, PS_LOG_WARN, "watch_failed", "--watch: cannot use inotify: %s",
                    ps_strerror(r));
        return;
    }
    for (i = 0; i < sup->cfg->nwatch; i++)
        if (watch_path(sup, sup->cfg->watch[i], err, sizeof(err)) < 0)
            ps__sup_log(sup, PS_LOG_WARN, "watch_failed", "%s", err);
    ps__sup_log(sup, PS_LOG_INFO, "watching", "inotify lost events: watching again, %d director%s",
                sup->watch->ndirs, sup->watch->ndirs == 1 ? "y" : "ies");
}

void ps__watch_read(struct ps_sup *sup)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    uint64_t now = ps__sup_now(sup);
    ssize_t n;
    char *p;

    if (!sup->watch)
        return;
    while ((n = read(sup->watch->fd, buf, sizeof(buf))) > 0)
        for (p = buf; p < buf + n;
             p += sizeof(struct inotify_event) + ((struct inotify_event *)p)->len) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            watch_event(sup, ev, now);
            if (ev->mask & IN_Q_OVERFLOW) {
                rewatch(sup); /* what is left in buf is of the old descriptor */
                return;
            }
        }
}

uint64_t ps__watch_deadline(const struct ps_sup *sup)
{
    uint64_t quiet, cap;

    if (!sup->watch || !sup->watch->first)
        return UINT64_MAX;
    quiet = sup->watch->last + QUIET_MS;
    cap = sup->watch->first + MAX_WAIT_MS;
    return quiet < cap ? quiet : cap;
}

void ps__watch_timer(struct ps_sup *sup, uint64_t now)
{
    char err[256];

    if (!sup->watch || !sup->watch->first || now < ps__watch_deadline(sup))
        return;
    ps__sup_log(sup, PS_LOG_INFO, "watch_reload", "%u change(s), first %s: reload",
                sup->watch->changes, sup->watch->what);
    sup->watch->first = sup->watch->last = 0;
    sup->watch->changes = 0;
    if (ps__stopping(sup))
        return;
    if (ps__op_request(sup, OP_RELOAD, 0, NULL, err, sizeof(err)) < 0)
        ps__sup_log(sup, PS_LOG_WARN, "watch_refused", "reload refused: %s", err);
}
