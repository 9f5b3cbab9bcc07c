/*
 * health.c - the held listeners tell the supervisor when to look at them.
 *
 * Two things are watched on every socket the supervisor holds: does it
 * still listen (a worker may call shutdown(2) on its copy, which stops it
 * for every holder), and, for stall detection (stall.c), has a connection
 * been queued in it.  Asking each socket (getsockopt) on a timer costs
 * O(slots x listeners) system calls per look whatever happens: 11,000 a
 * second at 256 slots x 4 listeners with nothing going on.
 *
 * Instead each reuseport TCP socket sits in one epoll set with
 * EPOLLONESHOT: tcp_poll() reports a listener readable when its accept
 * queue becomes non-empty, and EPOLLHUP once it no longer listens
 * (tcp_disconnect() after shutdown(2) moves it to TCP_CLOSE and wakes its
 * waiters).  The supervisor's entry is a non-exclusive waiter: a worker
 * blocked in accept(2) or in an EPOLLEXCLUSIVE set still gets its own
 * wake-up, ours is an extra one.  A readable socket marks its slot busy
 * (ps_slot.stall_busy); stall.c then looks at the slot's queues every
 * tick, as before, until it sees them empty and clears the flag; only
 * then is the socket armed again, so a busy socket costs at most one
 * wake-up per stall tick however many connections arrive.  EPOLLHUP
 * revives the socket at once.  Idle, nothing wakes and nothing is asked.
 *
 * During a lame duck every such socket is also armed with EPOLLIN, for
 * the evidence that the balancer has moved away (life.c, LIFE_QUIET): a
 * readable socket means a new connection came.  It is armed again
 * REARM_MS later, not at once (a connection still queued would wake the
 * loop again and again), and `quiet` says since when every listener has
 * been watched with nothing new: UINT64_MAX while one is not (just fired,
 * busy for stall.c, or one epoll cannot watch: a shared or unix socket).
 *
 * What epoll does not cover is looked at once a second, as before: shared
 * and unix sockets (one per listener, not per slot), a socket that is not
 * armed (its slot busy, or shut down on purpose), and every socket when
 * the epoll set could not be had.  Registrations are kept in step with
 * the groups by ps__health_check: a socket that changed (scale, a stalled
 * slot's fresh socket) is noticed by its descriptor number or, when that
 * was reused, by its inode, looked at once whenever a slot's worker
 * changes (a socket is only replaced together with its worker).
 */
#include "sup_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#define SWEEP_EVERY_MS 1000 /* what epoll does not cover: looked at this often */
#define MAX_EVENTS     64
#define REARM_MS       50 /* lame duck: a socket that fired is watched again after this */

struct reg {
    int fd;              /* the descriptor registered, -1 when none */
    unsigned char in;    /* registered with EPOLLIN (stall detection) */
    unsigned char armed; /* can still report: no event since it was (re)armed */
    unsigned char dead;  /* could not listen again: left to the sweep */
    ino_t ino;           /* its inode when registered */
};

struct ps_health {
    int epfd;                       /* -1: none (the sweep covers everything) */
    int ready;                      /* the loop saw epfd readable */
    int warned;                     /* said that the epoll set could not be had */
    pid_t seen[PS_SUP_MAX_WORKERS]; /* slot's worker when its sockets were verified */
    uint64_t quiet;                 /* lame duck: all watched since, nothing new; else UINT64_MAX */
    uint64_t fired;                 /* lame duck: a new connection was last seen then */
    int rearm;                      /* lame duck: a socket waits for fired + REARM_MS */
    struct reg r[PS_SUP_MAX_LISTENERS][PS_SUP_MAX_WORKERS];
};

static void clear_regs(struct ps_health *h)
{
    int g, i;

    for (g = 0; g < PS_SUP_MAX_LISTENERS; g++)
        for (i = 0; i < PS_SUP_MAX_WORKERS; i++)
            h->r[g][i] = (struct reg){.fd = -1};
    memset(h->seen, 0, sizeof(h->seen));
    h->quiet = UINT64_MAX;
    h->fired = 0;
    h->rearm = 0;
}

void ps__health_reset(struct ps_sup *sup)
{
    struct ps_health *h = sup->health;

    if (!h)
        return;
    if (h->epfd >= 0)
        close(h->epfd);
    h->epfd = -1;
    h->ready = h->warned = 0;
    clear_regs(h);
}

void ps__health_close(struct ps_sup *sup)
{
    ps__health_reset(sup);
    free(sup->health);
    sup->health = NULL;
}

int ps__health_fd(const struct ps_sup *sup)
{
    return sup->health ? sup->health->epfd : -1;
}

/* A socket whose count grows with the slots: one per slot, TCP.  Shared
 * and unix sockets are one per listener: the sweep asks them directly. */
static int epolled(const struct ps_group *gr)
{
    return !gr->shared && gr->spec.proto == PS_PROTO_TCP;
}

/* Does stall detection want to hear of connections queued in socket i? */
static int stall_wants(const struct ps_sup *sup, const struct ps_group *gr)
{
    return sup->cfg->stall_timeout_ms && (gr->steer == PS_STEER_CBPF || gr->steer == PS_STEER_EBPF);
}

static void warn_blind(struct ps_sup *sup, const char *what, int err)
{
    if (sup->health->warned++)
        return;
    ps__sup_log(sup, PS_LOG_WARN, "health_poll",
                "cannot watch the held sockets with epoll (%s: %s): each is asked once a second "
                "and, for stalls, every tick instead",
                what, ps_strerror(-err));
}

/* r is socket i of group g: the same number may be another socket since
 * (closed by a scale-down, opened by a scale-up in the same turn), which
 * epoll does not know; the group knows each socket's inode. */
static int known(const struct reg *r, const struct ps_group *gr, int i)
{
    return r->fd == gr->fds[i] && (!gr->ino[i] || (unsigned long)r->ino == gr->ino[i]);
}

/* (Re)arm socket i of group g, registering it when epoll does not know it
 * (a new socket, or a new one under a reused number).  0 or -errno. */
static int arm(struct ps_sup *sup, int g, int i, int in)
{
    struct ps_health *h = sup->health;
    struct reg *r = &h->r[g][i];
    int fd = sup->groups[g].fds[i];
    struct epoll_event ev = {.events = EPOLLONESHOT | (in ? EPOLLIN : 0u),
                             .data.u64 =
                                 (uint64_t)(unsigned)fd << 32 | (unsigned)g << 16 | (unsigned)i};
    struct stat st;
    int rc;

    if (h->epfd < 0)
        return -EBADF;
    rc = known(r, &sup->groups[g], i) ? epoll_ctl(h->epfd, EPOLL_CTL_MOD, fd, &ev) : -1;
    if (rc < 0 && (!known(r, &sup->groups[g], i) || errno == ENOENT)) {
        rc = epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev);
        if (rc < 0 && errno == EEXIST) /* ours already, under this number */
            rc = epoll_ctl(h->epfd, EPOLL_CTL_MOD, fd, &ev);
        if (rc == 0)
            r->ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
    }
    if (rc < 0) {
        rc = ps__neg_errno();
        warn_blind(sup, "epoll_ctl", rc);
        r->armed = 0;
        return rc;
    }
    r->fd = fd;
    r->in = (unsigned char)in;
    r->armed = 1;
    return 0;
}

/* Slot i's worker changed: a socket of its may have been replaced under
 * the same descriptor number (a stalled slot's fresh socket).  O(groups). */
static void verify_slot(struct ps_sup *sup, int i)
{
    struct ps_health *h = sup->health;
    const struct ps_slot *sl = &sup->slots[i];
    pid_t pid = sl->current >= 0 ? sup->workers[sl->current].pid : 0;
    struct stat st;
    int g;

    if (h->seen[i] == pid)
        return;
    h->seen[i] = pid;
    for (g = 0; g < sup->ngroups; g++) {
        struct reg *r = &h->r[g][i];
        const struct ps_group *gr = &sup->groups[g];
        if (epolled(gr) && i < gr->nfds && r->fd == gr->fds[i] &&
            (fstat(r->fd, &st) < 0 || st.st_ino != r->ino))
            r->fd = -1, r->armed = 0; /* registered again below */
    }
}

/* Arm socket i of group g if it may be; 0 when it is watched after this
 * (for the lame duck's evidence), 1 when it is not. */
static int sync_one(struct ps_sup *sup, int g, int i, uint64_t now)
{
    struct ps_health *h = sup->health;
    const struct ps_group *gr = &sup->groups[g];
    struct reg *r = &h->r[g][i];
    struct ps_slot *sl = i < sup->nslots ? &sup->slots[i] : NULL;
    int stall = sl && stall_wants(sup, gr), ld = sup->life.state == PS_LIFE_LAMEDUCK;
    int want_in = stall || ld;

    if (known(r, gr, i) && r->armed && r->in == want_in)
        return 0;
    if (gr->down[i] || r->dead)
        return 0; /* shut down on purpose, or dead: it takes no connection */
    if (stall && sl->stall_busy)
        return 1; /* busy: stall.c looks */
    if (ld && now < h->fired + REARM_MS) {
        h->rearm = 1; /* a connection just came: watched again in a moment */
        return 1;
    }
    if (arm(sup, g, i, want_in) == 0)
        return 0;
    if (stall)
        sl->stall_busy = 1; /* unseen: stall.c asks it every tick */
    return 1;
}

/* Keep the registrations in step with the groups and arm what may be
 * armed.  O(sockets) of memory, a system call only for what changed. */
static void sync_regs(struct ps_sup *sup, uint64_t now)
{
    struct ps_health *h = sup->health;
    int g, i, unwatched = h->epfd < 0;

    h->rearm = 0;
    for (i = 0; i < sup->nslots; i++)
        verify_slot(sup, i);
    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        if (!epolled(gr)) {
            unwatched |= gr->spec.proto != PS_PROTO_UDP; /* new connections unseen */
            continue;
        }
        for (i = 0; i < gr->nfds; i++)
            unwatched |= sync_one(sup, g, i, now);
        for (; i < PS_SUP_MAX_WORKERS && h->r[g][i].fd >= 0; i++)
            h->r[g][i] = (struct reg){.fd = -1}; /* closed: epoll dropped it */
    }
    if (sup->life.state != PS_LIFE_LAMEDUCK || unwatched)
        h->quiet = UINT64_MAX;
    else if (h->quiet == UINT64_MAX)
        h->quiet = now; /* everything watched from now on */
}

/* Socket i of group g: listen again if it stopped, and tell the slot(s).
 * 1 when it listens, 0 when it cannot. */
static int revive(struct ps_sup *sup, int g, int i)
{
    struct ps_group *gr = &sup->groups[g];
    char why[320], addr[160];
    int r, s;

    r = ps__group_revive(gr, i);
    if (r == 0)
        return 1;
    ps_spec_format(&gr->spec, addr, sizeof(addr));
    if (r < 0) {
        ps__sup_log(sup, PS_LOG_ERROR, "listener_dead",
                    "socket %d of %s no longer listens and cannot listen again: %s", i, addr,
                    ps_strerror(r));
        return 0;
    }
    snprintf(why, sizeof(why),
             "socket %d of %s had stopped listening (a worker called shutdown() on it); "
             "listening again",
             i, addr);
    if (gr->shared) {
        for (s = 0; s < sup->nslots; s++)
            ps__slot_event(sup, s, EV_LISTENER_LOST, 0, why);
    } else if (i < sup->nslots) {
        ps__slot_event(sup, i, EV_LISTENER_LOST, 0, why);
    }
    return 1;
}

static void on_event(struct ps_sup *sup, const struct epoll_event *ev)
{
    struct ps_health *h = sup->health;
    int fd = (int)(ev->data.u64 >> 32), g = (int)(ev->data.u64 >> 16 & 0xffff),
        i = (int)(ev->data.u64 & 0xffff);
    struct ps_group *gr;

    if (g >= sup->ngroups || i >= sup->groups[g].nfds || sup->groups[g].fds[i] != fd)
        return; /* a socket closed since: epoll drops it with its last copy */
    gr = &sup->groups[g];
    h->r[g][i].armed = 0; /* one-shot: it fired */
    if ((ev->events & EPOLLIN) && i < sup->nslots && stall_wants(sup, gr))
        sup->slots[i].stall_busy = 1;
    if ((ev->events & EPOLLIN) && sup->life.state == PS_LIFE_LAMEDUCK) {
        h->fired = ps__sup_now(sup); /* a new connection: the balancer still sends */
        h->quiet = UINT64_MAX;
    }
    if ((ev->events & (EPOLLHUP | EPOLLERR)) && !gr->down[i] && !revive(sup, g, i))
        h->r[g][i].dead = 1; /* not armed again (it would fire at once): the sweep retries */
}

static void read_events(struct ps_sup *sup)
{
    struct epoll_event ev[MAX_EVENTS];
    int n, k;

    sup->health->ready = 0;
    if (sup->health->epfd < 0)
        return;
    do {
        n = epoll_wait(sup->health->epfd, ev, MAX_EVENTS, 0);
        for (k = 0; k < n; k++)
            on_event(sup, &ev[k]);
    } while (n == MAX_EVENTS);
}

int ps__health_sees_queues(const struct ps_sup *sup)
{
    return sup->health && sup->health->epfd >= 0;
}

void ps__health_read(struct ps_sup *sup)
{
    if (sup->health)
        sup->health->ready = 1;
}

/* Once a second: what epoll does not report.  O(listeners + sockets not
 * armed); every socket when there is no epoll set. */
static void sweep(struct ps_sup *sup)
{
    const struct ps_health *h = sup->health;
    int g, i;

    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        if (gr->spec.proto == PS_PROTO_UDP)
            continue;
        for (i = 0; i < gr->nfds; i++) {
            if (gr->down[i]) /* shut down on purpose, for its queue to move on */
                continue;
            if (h && epolled(gr) && h->r[g][i].armed && known(&h->r[g][i], gr, i))
                continue; /* epoll tells */
            if (revive(sup, g, i) && h)
                sup->health->r[g][i].dead = 0;
        }
    }
}

static int open_set(struct ps_sup *sup)
{
    struct ps_health *h = sup->health;

    if (!h) {
        h = sup->health = malloc(sizeof(*h));
        if (!h)
            return -ENOMEM;
        h->epfd = -1;
        h->ready = h->warned = 0;
        clear_regs(h);
    }
    /* after ps__health_reset too (a fresh supervisor state); once failed,
     * it stays blind rather than try every tick */
    if (h->epfd < 0 && !h->warned) {
        h->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (h->epfd < 0)
            warn_blind(sup, "epoll_create1", ps__neg_errno());
    }
    return 0;
}

void ps__health_check(struct ps_sup *sup, uint64_t now)
{
    int second = now - sup->checked_ms >= SWEEP_EVERY_MS;

    if (open_set(sup) < 0) { /* no memory for the table: ask every socket, as before */
        if (second) {
            sup->checked_ms = now;
            sweep(sup);
        }
        return;
    }
    if (sup->health->ready || second)
        read_events(sup);
    if (second) {
        sup->checked_ms = now;
        sweep(sup);
        ps__sup_check_foreign(sup);
    }
    sync_regs(sup, now);
}

uint64_t ps__health_quiet_since(const struct ps_sup *sup)
{
    /* a report not read yet may be a new connection: not known quiet */
    return sup->health && !sup->health->ready ? sup->health->quiet : UINT64_MAX;
}

uint64_t ps__health_next(const struct ps_sup *sup)
{
    const struct ps_health *h = sup->health;

    return h && h->rearm ? h->fired + REARM_MS : UINT64_MAX;
}
