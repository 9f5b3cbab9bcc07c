/*
 * listen_group.c - a listener group: the sockets bound for one spec, and
 * the kernel's order of its reuseport group.
 *
 * The kernel numbers the members of a reuseport group in the order they
 * started listening; when one leaves (closed, shut down) the last takes its
 * place (reuseport_detach_sock, net/core/sock_reuseport.c).  A classic BPF
 * program returns such an index, so the group mirrors that order: ours in
 * order[], and the foreign members (another process of our uid that joined
 * the port) at the indexes fpos[] says.  A foreign member is seen by a
 * sock_diag look (ps__lgroup_foreign_sync), made before each change of our
 * own when the group is steered by index: one that joined in between is
 * then known to sit at the end.
 */
#include "core.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ps__lgroup_init(struct ps__lgroup *g, const struct ps_spec *spec, int shared)
{
    int i;

    memset(g, 0, sizeof(*g));
    g->spec = *spec;
    g->shared = shared;
    for (i = 0; i < PS__GROUP_MAX; i++)
        g->fds[i] = g->nextfds[i] = -1;
}

/* ---- the kernel's order ------------------------------------------------------ */

/*
 * order[0..nfds-1] holds every slot once: first the listening ones in the
 * kernel's order, then the ones shut down (down[], out of the kernel's
 * group) in no particular order.
 */

/* Our sockets in the kernel's group: the listening ones. */
static int nup(const struct ps__lgroup *g)
{
    int i, n = 0;

    for (i = 0; i < g->nfds; i++)
        n += !g->down[i];
    return n;
}

/* Members of the kernel's group we know of: ours and the tracked foreign. */
static int kernel_len(const struct ps__lgroup *g)
{
    return nup(g) + g->ntracked;
}

/* The tracked foreign member at kernel index p, or -1. */
static int foreign_at(const struct ps__lgroup *g, int p)
{
    int j;

    for (j = 0; j < g->ntracked; j++)
        if (g->fpos[j] == p)
            return j;
    return -1;
}

static int position(const struct ps__lgroup *g, int slot)
{
    int k;

    for (k = 0; k < g->nfds && g->order[k] != slot; k++)
        ;
    return k;
}

int ps__lgroup_listening(const struct ps__lgroup *g)
{
    return nup(g);
}

void ps__lgroup_kernel_indexes(const struct ps__lgroup *g, int *kidx)
{
    unsigned char taken[PS__GROUP_MAX + PS__FOREIGN_MAX];
    int len = kernel_len(g), up = nup(g), p, j, k = 0;

    memset(taken, 0, sizeof(taken));
    for (j = 0; j < g->ntracked; j++)
        if (g->fpos[j] < len)
            taken[g->fpos[j]] = 1;
    for (p = 0; p < len && k < up; p++)
        if (!taken[p])
            kidx[k++] = p;
}

/* Our listening socket `slot` leaves the kernel's group: the last member
 * moves into its place, and slot goes to order[nup - 1], the first place
 * of the ones that are down (the caller marks it down, closes it, or lets
 * it join again at the end: the same place). */
static void order_leave(struct ps__lgroup *g, int slot)
{
    int kidx[PS__GROUP_MAX], up = nup(g), k = position(g, slot), j;

    if (k >= up)
        return;
    j = foreign_at(g, kernel_len(g) - 1);
    if (j < 0) {
        g->order[k] = g->order[up - 1]; /* our last one takes its place */
    } else {
        /* a foreign member takes its place; ours keep their order */
        ps__lgroup_kernel_indexes(g, kidx);
        g->fpos[j] = kidx[k];
        memmove(&g->order[k], &g->order[k + 1], (size_t)(up - k - 1) * sizeof(g->order[0]));
    }
    g->order[up - 1] = slot;
}

/* Our socket `slot`, down, joins the kernel's group again: at the end. */
static void order_join(struct ps__lgroup *g, int slot)
{
    int up = nup(g), k = position(g, slot);

    if (k < up || k >= g->nfds)
        return;
    g->order[k] = g->order[up];
    g->order[up] = slot;
}

/* Tracked foreign member j left: the last member moves into its place. */
static void foreign_leave(struct ps__lgroup *g, int j)
{
    int p = g->fpos[j], last = kernel_len(g) - 1, up = nup(g), i, r, slot;

    memmove(&g->fpos[j], &g->fpos[j + 1], (size_t)(g->ntracked - j - 1) * sizeof(g->fpos[0]));
    memmove(&g->foreign[j], &g->foreign[j + 1],
            (size_t)(g->ntracked - j - 1) * sizeof(g->foreign[0]));
    g->ntracked--;
    if (p == last)
        return;
    i = foreign_at(g, last);
    if (i >= 0) {
        g->fpos[i] = p;
        return;
    }
    /* our last socket moves to p: after the ours that sit before p */
    for (r = p, i = 0; i < g->ntracked; i++)
        if (g->fpos[i] < p)
            r--;
    if (r < 0 || r >= up)
        return;
    slot = g->order[up - 1];
    memmove(&g->order[r + 1], &g->order[r], (size_t)(up - 1 - r) * sizeof(g->order[0]));
    g->order[r] = slot;
}

static int tracked(const struct ps__lgroup *g, unsigned long inode)
{
    int j;

    for (j = 0; j < g->ntracked; j++)
        if (g->foreign[j] == inode)
            return 1;
    return 0;
}

static unsigned long inode_of(int fd);

/* Our members' inodes: the sockets we hold, the next generation's, and
 * those we let go to a leaving worker (still in the kernel's group); how
 * many (at most 3 * PS__GROUP_MAX). */
static int ours_of(const struct ps__lgroup *g, unsigned long *ours)
{
    int n = g->nretired < PS__GROUP_MAX ? g->nretired : PS__GROUP_MAX, i, k = g->nfds;

    memcpy(ours, g->ino, (size_t)g->nfds * sizeof(ours[0]));
    for (i = 0; i < g->nfds; i++)
        if (g->nextfds[i] >= 0)
            ours[k++] = inode_of(g->nextfds[i]);
    memcpy(ours + k, g->retired, (size_t)n * sizeof(ours[0]));
    return k + n;
}

int ps__lgroup_foreign_sync(struct ps__lgroup *g)
{
    static unsigned long ours[3 * PS__GROUP_MAX]; /* 24 KiB: not on the stack */
    unsigned long now[PS__FOREIGN_MAX];
    int n, m, i, j, changed = 0;
    struct stat st;

    /* TCP listeners only: a UDP server may bind sockets of its own to the
     * port (connected ones, one per peer), and nothing steers datagrams */
    if (g->shared || g->nfds == 0 || g->spec.proto != PS_PROTO_TCP)
        return 0;
    for (i = 0; i < g->nfds; i++)
        if (!g->ino[i] && fstat(g->fds[i], &st) == 0)
            g->ino[i] = (unsigned long)st.st_ino; /* adopted, or carried over an upgrade */
    n = ps__reuseport_members(&g->spec, ours, ours_of(g, ours), now, PS__FOREIGN_MAX);
    m = n < PS__FOREIGN_MAX ? n : PS__FOREIGN_MAX;
    for (j = g->ntracked - 1; j >= 0; j--) {
        for (i = 0; i < m && now[i] != g->foreign[j]; i++)
            ;
        if (i == m) {
            foreign_leave(g, j);
            changed = 1;
        }
    }
    /* one that joined since the last look sits at the end */
    for (i = 0; i < m && g->ntracked < PS__FOREIGN_MAX; i++)
        if (!tracked(g, now[i])) {
            g->foreign[g->ntracked] = now[i];
            g->fpos[g->ntracked] = kernel_len(g);
            g->ntracked++;
            changed = 1;
        }
    changed |= n != g->nforeign;
    g->nforeign = n;
    return changed;
}

/* Before a change of our own to a group steered by index, the foreign
 * members that came or went since the last look. */
static void sync_before_change(struct ps__lgroup *g)
{
    if (g->by_index)
        ps__lgroup_foreign_sync(g);
}

/* ---- opening ----------------------------------------------------------------- */

static unsigned long inode_of(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

static int bind_failed(const struct ps__lgroup *g, int r, char *err, size_t errlen)
{
    char addr[160], comm[64] = "";
    pid_t pid = 0;

    ps_spec_format(&g->spec, addr, sizeof(addr));
    if (r == -EADDRINUSE && ps_port_owner(&g->spec, &pid, comm, sizeof(comm)) == 0)
        ps__set_error(err, errlen, "cannot bind %s: %s (held by pid %ld, %s)", addr, ps_strerror(r),
                      (long)pid, comm);
    else
        ps__set_error(err, errlen, "cannot bind %s: %s", addr, ps_strerror(r));
    return r;
}

/* The first socket of a port-0 spec: learn the kernel's port and bind it
 * by number, so that the socket keeps it when it stops listening (one
 * bound to port 0 does not).  Returns the descriptor to keep, or -errno. */
static int pin_port(struct ps__lgroup *g, int fd, char *err, size_t errlen)
{
    struct ps_spec real;
    int again;

    if (ps__spec_of_fd(fd, &real) < 0 || real.port == 0)
        return fd;
    g->spec.addr = real.addr;
    g->spec.addrlen = real.addrlen;
    g->spec.port = real.port;
    if (!g->shared) {
        /* take the port with a second socket of the group, drop the first */
        again = ps_listen_open(&g->spec, g->flags);
        if (again >= 0) {
            ps__close(fd);
            fd = again;
        }
        return fd;
    }
    /* a shared socket cannot share the port with a second one: let the
     * port go and bind it by number at once (SO_REUSEADDR; a closed
     * listener leaves no TIME_WAIT).  Without this a worker's shutdown()
     * left it listening on another port (test_run_listener_lost.sh) */
    ps__close(fd);
    fd = ps_listen_open(&g->spec, g->flags | PS_LISTEN_NO_REUSEPORT);
    if (fd < 0) {
        char addr[160];
        ps_spec_format(&g->spec, addr, sizeof(addr));
        ps__set_error(err, errlen, "cannot bind %s again by number: %s", addr, ps_strerror(fd));
    }
    return fd;
}

static int open_one(struct ps__lgroup *g, char *err, size_t errlen)
{
    int fd = ps_listen_open(&g->spec, g->flags | (g->shared ? PS_LISTEN_NO_REUSEPORT : 0)), up;

    if (fd < 0)
        return bind_failed(g, fd, err, errlen);
    if (g->nfds == 0 && g->spec.proto != PS_PROTO_UNIX && g->spec.port == 0) {
        fd = pin_port(g, fd, err, errlen);
        if (fd < 0)
            return fd;
    }
    /* listen() put it at the end of the kernel's group */
    up = nup(g);
    g->order[g->nfds] = g->order[up];
    g->order[up] = g->nfds;
    g->ino[g->nfds] = inode_of(fd);
    g->fds[g->nfds++] = fd;
    return 0;
}

static int refuse_foreign(struct ps__lgroup *g, char *err, size_t errlen)
{
    char addr[160], comm[64] = "";
    unsigned long inode = 0;
    pid_t pid = 0;

    if (g->shared || ps__reuseport_members(&g->spec, g->ino, g->nfds, &inode, 1) <= 0)
        return 0;
    ps_spec_format(&g->spec, addr, sizeof(addr));
    if (ps__inode_owner(inode, &pid, comm, sizeof(comm)) == 0)
        ps__set_error(err, errlen,
                      "cannot bind %s: another process (pid %ld, %s) already listens there "
                      "with SO_REUSEPORT and would share our connections",
                      addr, (long)pid, comm);
    else
        ps__set_error(err, errlen,
                      "cannot bind %s: another socket already listens there with "
                      "SO_REUSEPORT and would share our connections",
                      addr);
    return -EADDRINUSE;
}

int ps__lgroup_open(struct ps__lgroup *g, int n, int refuse, char *err, size_t errlen)
{
    int want = g->shared ? 1 : n, r = 0;

    if (n < 1 || n > PS__GROUP_MAX)
        return -EINVAL;
    while (g->nfds < want && r == 0)
        r = open_one(g, err, errlen);
    if (r == 0 && refuse)
        r = refuse_foreign(g, err, errlen);
    if (r < 0)
        ps__lgroup_close(g);
    return r;
}

int ps__lgroup_grow(struct ps__lgroup *g, int n, char *err, size_t errlen)
{
    int before = g->nfds, r = 0;

    if (g->shared || g->nfds >= n)
        return 0;
    if (n > PS__GROUP_MAX)
        return -EINVAL;
    sync_before_change(g);
    while (g->nfds < n && r == 0)
        r = open_one(g, err, errlen);
    if (r < 0)
        ps__lgroup_shrink(g, before); /* newest first: the order is as before */
    return r;
}

/* ---- closing ----------------------------------------------------------------- */

void ps__lgroup_close_last(struct ps__lgroup *g)
{
    if (g->shared || g->nfds <= 1)
        return;
    sync_before_change(g);
    if (!g->down[g->nfds - 1]) {
        order_leave(g, g->nfds - 1);
        /* a worker may still hold it (one lingering for its UDP flows) */
        g->retired[g->nretired++ % PS__GROUP_MAX] =
            g->ino[g->nfds - 1] ? g->ino[g->nfds - 1] : inode_of(g->fds[g->nfds - 1]);
    }
    /* out of order[]: the last entry takes its place among the down ones */
    g->order[position(g, g->nfds - 1)] = g->order[g->nfds - 1];
    ps__lgroup_discard(g, g->nfds - 1);
    ps__close(g->fds[--g->nfds]);
    g->fds[g->nfds] = -1;
    g->ino[g->nfds] = 0;
    g->down[g->nfds] = 0;
}

void ps__lgroup_shrink(struct ps__lgroup *g, int n)
{
    while (g->nfds > n && g->nfds > 1)
        ps__lgroup_close_last(g);
}

void ps__lgroup_close(struct ps__lgroup *g)
{
    int i;

    for (i = 0; i < g->nfds; i++) {
        ps__lgroup_discard(g, i);
        ps__close(g->fds[i]);
        g->fds[i] = -1;
        g->ino[i] = 0;
        g->down[i] = 0;
    }
    g->nfds = g->nforeign = g->ntracked = 0;
}

/* ---- stopping and listening again -------------------------------------------- */

int ps__lgroup_shutdown(struct ps__lgroup *g, int i, unsigned *queued)
{
    unsigned limit = 0;

    *queued = 0;
    if (i < 0 || i >= g->nfds || g->shared)
        return -EINVAL;
    ps_listen_queue(g->fds[i], queued, &limit);
    if (shutdown(g->fds[i], SHUT_RD) < 0 && errno != ENOTCONN)
        return ps__neg_errno();
    if (!g->down[i])
        order_leave(g, i); /* it left the kernel's group */
    g->down[i] = 1;
    return 0;
}

int ps__lgroup_relisten(struct ps__lgroup *g, int i)
{
    struct ps_spec now;
    unsigned queued, limit;

    if (i < 0 || i >= g->nfds || g->spec.proto != PS_PROTO_TCP)
        return 0;
    if (ps_listen_queue(g->fds[i], &queued, &limit) == 0)
        return 0; /* listening */
    if (ps__spec_of_fd(g->fds[i], &now) < 0 || now.proto != PS_PROTO_TCP)
        return 0;
    /* shutdown(2) on a listener leaves it closed but still bound to our
     * port (an explicit bind locks the port): listen() again works in
     * place.  One that lost its port would listen on another: left as it is */
    if (now.port != g->spec.port)
        return -EADDRNOTAVAIL;
    /* A second shutdown() on the closed socket (another holder of a shared
     * one, or the same worker again) leaves its shutdown flags set, which
     * every accepted connection would inherit (the client gets an empty
     * reply): connect(AF_UNSPEC) clears them (tcp_disconnect) and keeps the
     * port. */
    (void)connect(g->fds[i], &(struct sockaddr){.sa_family = AF_UNSPEC}, sizeof(struct sockaddr));
    sync_before_change(g);
    if (listen(g->fds[i], g->spec.backlog) < 0)
        return ps__neg_errno();
    if (ps_listen_queue(g->fds[i], &queued, &limit) < 0)
        return -EIO;
    /* it joined the kernel's group again, at the end; one a holder shut
     * down left it then, unseen: it leaves the model now */
    if (g->down[i])
        order_join(g, i);
    else if (!g->shared)
        order_leave(g, i);
    g->down[i] = 0;
    return 1;
}

int ps__lgroup_replace(struct ps__lgroup *g, int i)
{
    int fd;

    if (g->shared || i < 0 || i >= g->nfds)
        return -EINVAL;
    sync_before_change(g);
    fd = ps_listen_open(&g->spec, g->flags);
    if (fd < 0) {
        ps__lgroup_relisten(g, i);
        return fd;
    }
    /* the old one left the kernel's group when it was shut down; the new
     * one joined at the end */
    if (g->down[i])
        order_join(g, i);
    else
        order_leave(g, i);
    ps__close(g->fds[i]);
    g->fds[i] = fd;
    g->ino[i] = inode_of(fd);
    g->down[i] = 0;
    return 0;
}

/* fd, fresh and at the end of the kernel's group, becomes socket i: the
 * model has the old one leave (the last takes its place) and the fresh one
 * join at the end; exact for a steering that selects by index only when
 * the old one stopped listening, and by-index groups never renew (no
 * migration). */
static void take(struct ps__lgroup *g, int i, int fd)
{
    if (g->down[i]) { /* not a member any more: only the fresh one joins */
        order_join(g, i);
        g->down[i] = 0;
    } else {
        order_leave(g, i);
    }
    ps__close(g->fds[i]);
    g->fds[i] = fd;
    g->ino[i] = inode_of(fd);
}

int ps__lgroup_renew(struct ps__lgroup *g, int i, int at_once, unsigned *queued)
{
    unsigned limit = 0;
    int fd;

    *queued = 0;
    if (g->shared || i < 0 || i >= g->nfds || g->down[i])
        return -EINVAL;
    sync_before_change(g);
    fd = ps_listen_open(&g->spec, g->flags); /* joins the kernel's group at the end */
    if (fd < 0)
        return fd;
    ps_listen_queue(g->fds[i], queued, &limit);
    if (at_once && shutdown(g->fds[i], SHUT_RD) < 0 && errno != ENOTCONN) {
        int r = ps__neg_errno();
        ps__close(fd);
        return r;
    }
    if (!at_once) /* it stays a member while its holder keeps it */
        g->retired[g->nretired++ % PS__GROUP_MAX] = g->ino[i] ? g->ino[i] : inode_of(g->fds[i]);
    take(g, i, fd);
    return 0;
}

int ps__lgroup_prepare(struct ps__lgroup *g, int i)
{
    int fd;

    if (g->shared || i < 0 || i >= g->nfds)
        return -EINVAL;
    if (g->nextfds[i] >= 0)
        return 0;
    fd = ps_listen_open(&g->spec, g->flags); /* joins the kernel's group at the end */
    if (fd < 0)
        return fd;
    g->nextfds[i] = fd;
    return 0;
}

void ps__lgroup_commit(struct ps__lgroup *g, int i)
{
    int fd;

    if (i < 0 || i >= g->nfds || g->nextfds[i] < 0)
        return;
    fd = g->nextfds[i];
    g->nextfds[i] = -1;
    if (!g->down[i]) /* it stays a member while its holder keeps it */
        g->retired[g->nretired++ % PS__GROUP_MAX] = g->ino[i] ? g->ino[i] : inode_of(g->fds[i]);
    take(g, i, fd);
}

void ps__lgroup_discard(struct ps__lgroup *g, int i)
{
    if (i < 0 || i >= PS__GROUP_MAX || g->nextfds[i] < 0)
        return;
    ps__close(g->nextfds[i]);
    g->nextfds[i] = -1;
}

/* The public face of the group: open n sockets at once (portshare.h). */
int ps_listen_group_open(struct ps_spec *spec, int n, int *fds, int flags)
{
    struct ps__lgroup *g;
    int i, r;

    if (n < 1 || n > PS__GROUP_MAX ||
        (n > 1 && (spec->reuse != PS_REUSE_PORT || (flags & PS_LISTEN_NO_REUSEPORT))))
        return -EINVAL;
    g = malloc(sizeof(*g)); /* 17 KiB: not for an embedder's small stack */
    if (!g)
        return -ENOMEM;
    ps__lgroup_init(g, spec, spec->reuse != PS_REUSE_PORT || (flags & PS_LISTEN_NO_REUSEPORT));
    g->flags = flags & ~PS_LISTEN_NO_REUSEPORT;
    r = ps__lgroup_open(g, n, 1, NULL, 0);
    for (i = 0; i < n; i++)
        fds[i] = r == 0 && i < g->nfds ? g->fds[i] : -1;
    if (r == 0) {
        /* the port the kernel picked, for the caller's later sockets */
        spec->addr = g->spec.addr;
        spec->addrlen = g->spec.addrlen;
        spec->port = g->spec.port;
    }
    free(g);
    return r;
}
