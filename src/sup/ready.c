/*
 * ready.c - "is it serving yet?", asked of the kernel (--ready auto).
 *
 * A worker that never sends READY=1 is ready once it waits for connections
 * on the listening sockets it was given.  The kernel shows that in /proc,
 * for a process of our own (we are its parent or subreaper, so the ptrace
 * access checks behind fdinfo, syscall and process_vm_readv pass):
 *
 *   - an epoll set holding a listener: /proc/P/fdinfo/N of an
 *     anon_inode:[eventpoll] descriptor has one "tfd: FD ... ino:HEX" line
 *     per watched file.  The inode is the socket's own, the same as that of
 *     the copy the supervisor holds (one open file description), whatever
 *     fd number the worker dup'ed it to (Go's net.FileListener dups).  An
 *     older kernel without "ino:" gives the fd number, resolved through
 *     /proc/P/fd/FD.  An epoll set is what event loops register once and
 *     keep (lighttpd, Go, libuv, nginx, portshare serve), so it is seen
 *     even between two epoll_wait calls;
 *   - a thread blocked in accept/accept4 on one: /proc/P/task/T/syscall
 *     is "NR ARG0 ...", the first argument the fd (thread-per-accept
 *     servers, python's socket.accept());
 *   - a thread blocked in poll/ppoll/select/pselect6 with a listener in
 *     its set: the set itself lives in the process's memory, read with
 *     process_vm_readv (python's socketserver polls its socket).
 *
 * /proc/P/wchan (inet_csk_accept) was not used: it does not say which
 * socket, and it names a kernel function that changes between versions.
 * The syscall file is exact but only shows a thread that sleeps in the call
 * at the moment we look; a thread between two calls is seen on a later
 * probe.  What cannot be read (a process already gone, EACCES) counts as
 * "not yet": the --ready-delay fallback is behind it.  When the kernel
 * refuses to show a worker at all (the supervisor is root without
 * CAP_SYS_PTRACE, as in Docker, and the worker another user; /proc
 * mounted with hidepid=), the readiness view is said to be degraded, once
 * (capability.c): every such worker waits for the delay.
 *
 * Cost: at most MAX_FDS descriptors and MAX_TASKS threads per process
 * looked at, each a readlink or a small read.  Finding a worker's
 * descendants takes a pass over /proc (ps__tree_members), made at most once
 * a second for all starting workers together.
 */
#include "sup_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS   1024 /* descriptors looked at per process */
#define MAX_TASKS 256  /* threads looked at per process */
#define MAX_POLL  64   /* pollfd entries read from a poll set */
#define MAX_TREE  64   /* processes of a worker's tree */

struct targets {
    ino_t ino[PS_SUP_MAX_LISTENERS];
    int n;
};

static int is_target(const struct targets *t, unsigned long long ino)
{
    int i;

    for (i = 0; i < t->n; i++)
        if ((unsigned long long)t->ino[i] == ino)
            return 1;
    return 0;
}

/* The socket inode behind descriptor fd of process pid, or 0. */
static unsigned long long socket_ino(pid_t pid, long fd)
{
    char path[64], link[64];
    unsigned long long ino = 0;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%ld/fd/%ld", (long)pid, fd);
    n = readlink(path, link, sizeof(link) - 1);
    if (n <= 0)
        return 0;
    link[n] = '\0';
    if (sscanf(link, "socket:[%llu]", &ino) != 1)
        return 0;
    return ino;
}

/* An epoll descriptor's fdinfo: one "tfd:" line per watched file. */
static int epoll_watches(pid_t pid, const char *fd, const struct targets *t)
{
    char path[64], buf[8192], *line;
    ssize_t n;
    int f;

    snprintf(path, sizeof(path), "/proc/%ld/fdinfo/%s", (long)pid, fd);
    f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 0;
    n = read(f, buf, sizeof(buf) - 1);
    close(f);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (line = strstr(buf, "tfd:"); line; line = strstr(line + 4, "tfd:")) {
        unsigned long long ino;
        char *ip = strstr(line, "ino:"), *eol = strchr(line, '\n');
        long tfd = strtol(line + 4, NULL, 10);
        if (ip && (!eol || ip < eol) && sscanf(ip + 4, "%llx", &ino) == 1) {
            if (is_target(t, ino))
                return 1;
        } else if (is_target(t, socket_ino(pid, tfd))) {
            return 1;
        }
    }
    return 0;
}

static int epoll_probe(pid_t pid, const struct targets *t, char *how, size_t len)
{
    char path[64], link[64];
    struct dirent *de;
    DIR *d;
    int seen = 0, found = 0;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
    d = opendir(path);
    if (!d)
        return 0;
    while (!found && seen++ < MAX_FDS && (de = readdir(d))) {
        char fdpath[352];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(fdpath, sizeof(fdpath), "%s/%s", path, de->d_name);
        n = readlink(fdpath, link, sizeof(link) - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        if (!strcmp(link, "anon_inode:[eventpoll]") && epoll_watches(pid, de->d_name, t)) {
            snprintf(how, len, "process %ld watches its listener in an epoll set", (long)pid);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

/* Does the poll set at addr (n entries) of process pid wait for input on a
 * listener? */
static int poll_set_probe(pid_t pid, unsigned long addr, unsigned long n, const struct targets *t)
{
    struct pollfd set[MAX_POLL];
    struct iovec local, remote;
    unsigned long i;
    ssize_t got;

    if (n > MAX_POLL)
        n = MAX_POLL;
    local = (struct iovec){.iov_base = set, .iov_len = n * sizeof(set[0])};
    remote = (struct iovec){.iov_base = (void *)addr, .iov_len = local.iov_len};
    got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got < 0)
        return 0;
    for (i = 0; i < (unsigned long)got / sizeof(set[0]); i++)
        if (set[i].fd >= 0 && (set[i].events & POLLIN) && is_target(t, socket_ino(pid, set[i].fd)))
            return 1;
    return 0;
}

/* Does the select read set at addr (nfds bits) of process pid hold a
 * listener? */
static int select_set_probe(pid_t pid, unsigned long nfds, unsigned long addr,
                            const struct targets *t)
{
    unsigned char bits[FD_SETSIZE / 8];
    struct iovec local, remote;
    unsigned long fd;
    ssize_t got;

    if (!addr)
        return 0;
    if (nfds > FD_SETSIZE)
        nfds = FD_SETSIZE;
    local = (struct iovec){.iov_base = bits, .iov_len = (nfds + 7) / 8};
    remote = (struct iovec){.iov_base = (void *)addr, .iov_len = local.iov_len};
    got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got <= 0)
        return 0;
    for (fd = 0; fd < nfds && fd / 8 < (unsigned long)got; fd++)
        if ((bits[fd / 8] >> (fd % 8) & 1) && is_target(t, socket_ino(pid, (long)fd)))
            return 1;
    return 0;
}

/* What thread tid of pid is blocked in, when it is one of ours. */
static const char *task_probe(pid_t pid, const char *tid, const struct targets *t)
{
    char path[352], buf[256];
    unsigned long a[3] = {0, 0, 0};
    ssize_t n;
    long nr;
    int f;

    snprintf(path, sizeof(path), "/proc/%ld/task/%s/syscall", (long)pid, tid);
    f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return NULL;
    n = read(f, buf, sizeof(buf) - 1);
    close(f);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    /* "running", "-1 SP PC" (not in a call), or "NR ARG0 ARG1 ..." */
    if (sscanf(buf, "%ld %lx %lx %lx", &nr, &a[0], &a[1], &a[2]) < 2 || nr < 0)
        return NULL;
    if ((nr == SYS_accept || nr == SYS_accept4) && is_target(t, socket_ino(pid, (long)a[0])))
        return "blocked in accept on its listener";
#ifdef SYS_poll
    if (nr == SYS_poll && poll_set_probe(pid, a[0], a[1], t))
        return "polls its listener";
#endif
    if (nr == SYS_ppoll && poll_set_probe(pid, a[0], a[1], t))
        return "polls its listener";
#ifdef SYS_select
    if (nr == SYS_select && select_set_probe(pid, a[0], a[1], t))
        return "selects on its listener";
#endif
    if (nr == SYS_pselect6 && select_set_probe(pid, a[0], a[1], t))
        return "selects on its listener";
    return NULL;
}

static int tasks_probe(pid_t pid, const struct targets *t, char *how, size_t len)
{
    char path[64];
    const char *what = NULL;
    struct dirent *de;
    int seen = 0;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%ld/task", (long)pid);
    d = opendir(path);
    if (!d)
        return 0;
    while (!what && seen++ < MAX_TASKS && (de = readdir(d)))
        if (de->d_name[0] >= '1' && de->d_name[0] <= '9')
            what = task_probe(pid, de->d_name, t);
    closedir(d);
    if (what)
        snprintf(how, len, "process %ld %s", (long)pid, what);
    return what != NULL;
}

static int process_probe(pid_t pid, const struct targets *t, char *how, size_t len)
{
    return epoll_probe(pid, t, how, len) || tasks_probe(pid, t, how, len);
}

int ps__ready_visible(pid_t pid)
{
    char path[64], link[8];
    struct stat st;
    int err;

    /* the exe link takes the same ptrace access check as the fd links and
     * fdinfo the probes read; a short buffer just cuts the name */
    snprintf(path, sizeof(path), "/proc/%ld/exe", (long)pid);
    if (readlink(path, link, sizeof(link)) >= 0)
        return 0;
    err = -errno;
    if (err == -EACCES || err == -EPERM)
        return err;
    /* a zombie has no exe but its directory; hidepid= hides the directory
     * of a process that kill(2) still reaches */
    snprintf(path, sizeof(path), "/proc/%ld", (long)pid);
    if (stat(path, &st) < 0 && errno == ENOENT && kill(pid, 0) == 0)
        return -ENOENT;
    return 0;
}

int ps__ready_probe(struct ps_sup *sup, pid_t pid, int slot, int next, int tree, char *how,
                    size_t len)
{
    pid_t members[MAX_TREE];
    struct targets t = {.n = 0};
    struct stat st;
    int g, i, n;

    for (g = 0; g < sup->ngroups; g++) {
        int fd = ps__group_fd_of(&sup->groups[g], slot, next);
        if (fd >= 0 && fstat(fd, &st) == 0)
            t.ino[t.n++] = st.st_ino;
    }
    if (t.n == 0)
        return 0;
    if (!tree) {
        int v = ps__ready_visible(pid);
        ps__cap_ready_view(sup, pid, v); /* said once when it cannot see */
        return v == 0 && process_probe(pid, &t, how, len);
    }
    n = ps__tree_members(pid, members, MAX_TREE);
    for (i = 1; i < n; i++) /* members[0] is pid: looked at without tree */
        if (process_probe(members[i], &t, how, len))
            return 1;
    return 0;
}

void ps__ready_view_refresh(struct ps_sup *sup)
{
    int i;

    if (sup->cfg->ready_mode != PS_READY_AUTO || sup->caps.rows[PS_CAP_READY_VIEW].state)
        return;
    /* after an upgrade no worker may be starting: ask about one that runs */
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid && !sup->workers[i].notified) {
            ps__cap_ready_view(sup, sup->workers[i].pid, ps__ready_visible(sup->workers[i].pid));
            return;
        }
}
