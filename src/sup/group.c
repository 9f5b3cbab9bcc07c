/*
 * group.c - the listeners a supervisor owns for one listen spec.
 *
 * reuseport mode: one socket per worker slot, all in one SO_REUSEPORT group;
 * slot i of every generation gets socket i.  shared mode: one socket that
 * every slot gets.
 *
 * Steering.  Closing a reuseport listener resets the connections queued in
 * it (Linux, unless net.ipv4.tcp_migrate_req=1), and a slot whose worker is
 * restarting would let new connections wait in its queue.  So for TCP groups
 * the supervisor attaches a classic BPF program (SO_ATTACH_REUSEPORT_CBPF)
 * that picks, at random, one of the sockets whose slot has a ready worker.
 * The kernel numbers the sockets of a group in listen() order and, when one
 * closes, moves the last into its place (man 7 socket); sockets are only
 * ever added at the end and removed from the end, so socket index == slot.
 * The pick happens once per connection (on the SYN), so random is as good
 * as a hash for TCP; a SYN-cookie ACK may be looked up again, and any
 * listener of the group validates a cookie.
 *
 * Where it loads (root or CAP_BPF, Linux >= 5.14, BPF not disabled) an
 * eBPF program replaces the classic one (src/core/reuseport_bpf.c): the
 * same policy from maps the supervisor updates, plus SELECT_OR_MIGRATE: a
 * socket that is closed or shut down hands what it has queued and its
 * handshakes in flight to the serving sockets instead of resetting them,
 * so a retiring slot needs no grace and a stalled slot's queue can be
 * rescued.  The choice is made once per group, when it is bound (or first
 * steered after an upgrade), and shown in status.  UDP groups are not
 * steered: the kernel's hash spreads datagrams, and a UDP socket has no
 * queue to hand over.
 */
#include "sup_internal.h"

#include <dirent.h>
#include <limits.h>
#include <linux/filter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int ps__group_fd(const struct ps_group *g, int slot)
{
    if (g->shared)
        return g->fds[0];
    return slot < g->nfds ? g->fds[slot] : -1;
}

long ps__slot_queued(const struct ps_sup *sup, int slot, int steered_only)
{
    long sum = -1;
    int g;

    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        unsigned queued = 0, limit = 0;
        if (gr->shared || slot >= gr->nfds)
            continue;
        if (steered_only && gr->steer != PS_STEER_CBPF && gr->steer != PS_STEER_EBPF)
            continue;
        if (ps_listen_queue(gr->fds[slot], &queued, &limit) == 0)
            sum = (sum < 0 ? 0 : sum) + (long)queued;
    }
    return sum;
}

/* ---- the open-file limit ---------------------------------------------------- */

/*
 * What the supervisor holds besides its listeners: its signalfd, notify and
 * control sockets (and --watch's inotify descriptor, an endpoint's listener);
 * a spawn needs a pipe for a moment and a control client one descriptor.
 * Beyond that minimum, every control client and endpoint connection the
 * tables hold, and an eBPF program with its three maps per steered group,
 * are what it takes to never run out.
 */
#define NOFILE_OWN     3
#define NOFILE_RESERVE 3
#define NOFILE_EBPF    4

/* Descriptors open in this process now; -1 when /proc cannot tell. */
static long open_fds(void)
{
    struct dirent *de;
    DIR *d = opendir("/proc/self/fd");
    long n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static int nendpoints(const struct ps_sup_config *cfg)
{
    return (cfg->metrics.text[0] != '\0') + (cfg->agent.text[0] != '\0');
}

/* The soft and hard RLIMIT_NOFILE as longs (RLIM_INFINITY: LONG_MAX). */
static void nofile_limits(long *soft, long *hard)
{
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};

    getrlimit(RLIMIT_NOFILE, &rl);
    *soft = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
    *hard = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > LONG_MAX ? LONG_MAX : (long)rl.rlim_max;
}

/* "the limit is N (hard M): about X needed, Y with room for every
 * connection; raise ..." appended to what went before in err */
static void nofile_say(char *err, size_t errlen, long need, long want)
{
    char head[300];
    long soft, hard;

    nofile_limits(&soft, &hard);
    snprintf(head, sizeof(head), "%s", err ? err : "");
    ps__set_error(err, errlen,
                  "%s: that takes about %ld open files (%ld with room for every control and "
                  "endpoint connection), and the open-file limit is %ld (hard %ld); raise it "
                  "(LimitNOFILE= in the unit, ulimit -n) or use fewer workers",
                  head, need, want, soft, hard);
}

/* Room for every connection the tables hold, beyond need. */
static long nofile_extra(const struct ps_sup_config *cfg, int steered)
{
    return PS_SUP_MAX_CLIENTS + (long)nendpoints(cfg) * PS_EP_MAX_CONNS +
           (long)steered * NOFILE_EBPF;
}

/* "...: the open-file limit is N (hard M)" for an EMFILE/ENFILE in err */
static void nofile_limit_said(char *err, size_t errlen)
{
    char head[300];
    long soft, hard;

    nofile_limits(&soft, &hard);
    snprintf(head, sizeof(head), "%s", err ? err : "");
    ps__set_error(err, errlen, "%s (the open-file limit is %ld, hard %ld)", head, soft, hard);
}

/* Refuse a scale to nslots whose new sockets cannot fit under the soft
 * limit, before opening any.  O(open descriptors). */
static int nofile_fits(struct ps_sup *sup, int nslots, char *err, size_t errlen)
{
    long open = open_fds(), soft, hard, more = 0, need;
    int g;

    for (g = 0; g < sup->ngroups; g++)
        if (!sup->groups[g].shared && sup->groups[g].nfds < nslots)
            more += nslots - sup->groups[g].nfds;
    nofile_limits(&soft, &hard);
    need = open + more + NOFILE_RESERVE;
    if (open < 0 || more == 0 || need <= soft)
        return 0;
    ps__set_error(err, errlen, "%d workers need %ld more sockets", nslots, more);
    nofile_say(err, errlen, need, need + nofile_extra(sup->cfg, 0));
    return -EMFILE;
}

int ps_sup_nofile_check(const struct ps_sup_config *cfg, char *err, size_t errlen)
{
    long open = open_fds(), soft, hard, sockets = 0, need;
    int i, steered = 0;

    for (i = 0; i < cfg->nspecs; i++) {
        int shared = cfg->mode == PS_REUSE_SHARED || cfg->specs[i].reuse != PS_REUSE_PORT ||
                     cfg->specs[i].proto == PS_PROTO_UNIX;
        sockets += shared ? 1 : cfg->workers;
        steered += !shared && cfg->specs[i].proto == PS_PROTO_TCP;
    }
    nofile_limits(&soft, &hard);
    need = open + sockets + NOFILE_OWN + NOFILE_RESERVE + nendpoints(cfg) + (cfg->nwatch > 0);
    if (open < 0 || need <= soft)
        return 0;
    ps__set_error(err, errlen, "cannot start %d worker%s on %d listener%s", cfg->workers,
                  cfg->workers == 1 ? "" : "s", cfg->nspecs, cfg->nspecs == 1 ? "" : "s");
    nofile_say(err, errlen, need, need + nofile_extra(cfg, steered));
    return -EMFILE;
}

int ps_sup_nofile_raise(long *from, long *to)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return ps__neg_errno();
    *from = *to = rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
    if (rl.rlim_cur == rl.rlim_max)
        return 0;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return ps__neg_errno();
    *to = rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
    return 1;
}

/* ---- sockets ------------------------------------------------------------------ */

static int open_one(struct ps_group *g, char *err, size_t errlen)
{
    char addr[160];
    struct stat st;
    int fd;

    fd = ps_listen_open(&g->spec, g->shared ? PS_LISTEN_NO_REUSEPORT : 0);
    if (fd < 0) {
        pid_t pid = 0;
        char comm[64] = "";
        ps_spec_format(&g->spec, addr, sizeof(addr));
        if (fd == -EADDRINUSE && ps_port_owner(&g->spec, &pid, comm, sizeof(comm)) == 0)
            ps__set_error(err, errlen, "cannot bind %s: %s (held by pid %ld, %s)", addr,
                          ps_strerror(fd), (long)pid, comm);
        else
            ps__set_error(err, errlen, "cannot bind %s: %s", addr, ps_strerror(fd));
        if (fd == -EMFILE || fd == -ENFILE)
            nofile_limit_said(err, errlen);
        return fd;
    }
    if (g->nfds == 0 && g->spec.proto != PS_PROTO_UNIX && g->spec.port == 0) {
        /* port 0: the kernel chose; every later socket of the group binds it */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
            memcpy(&g->spec.addr, &ss, len);
            g->spec.addrlen = len;
            g->spec.port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        if (!g->shared && g->spec.port) {
            /* a socket bound to port 0 does not keep its port once it stops
             * listening; one bound to the port by number does (ps__group_revive
             * relies on that): take the port with a second socket, drop the first */
            int again = ps_listen_open(&g->spec, 0);
            if (again >= 0) {
                ps__close(fd);
                fd = again;
            }
        } else if (g->spec.port) {
            /* the same for a shared socket, which cannot share the port with
             * a second one: let the port go and bind it by number at once
             * (SO_REUSEADDR; a closed listener leaves no TIME_WAIT).  Without
             * this a worker's shutdown() left it listening on another port
             * (test_run_listener_lost.sh) */
            ps__close(fd);
            fd = ps_listen_open(&g->spec, PS_LISTEN_NO_REUSEPORT);
            if (fd < 0) {
                ps_spec_format(&g->spec, addr, sizeof(addr));
                ps__set_error(err, errlen, "cannot bind %s again by number: %s", addr,
                              ps_strerror(fd));
                return fd;
            }
        }
    }
    /* listen() put it at the end of the kernel's group */
    g->order[g->nfds] = g->nfds;
    g->ino[g->nfds] = fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : 0;
    g->fds[g->nfds++] = fd;
    return 0;
}

/* ---- the kernel's order of the group's sockets ------------------------------ */

/* Members of the kernel's group we know of: ours and the tracked foreign. */
static int kernel_len(const struct ps_group *g)
{
    return g->nfds + g->ntracked;
}

/* The tracked foreign member at kernel index p, or -1. */
static int foreign_at(const struct ps_group *g, int p)
{
    int j;

    for (j = 0; j < g->ntracked; j++)
        if (g->fpos[j] == p)
            return j;
    return -1;
}

/* kidx[k]: the kernel's index of our k-th socket (order[k]): the k-th
 * index that no foreign member holds.  O(nfds + foreign). */
static void kernel_indexes(const struct ps_group *g, int *kidx)
{
    unsigned char taken[PS_SUP_MAX_WORKERS + PS_GROUP_FOREIGN_MAX];
    int len = kernel_len(g), p, j, k = 0;

    memset(taken, 0, sizeof(taken));
    for (j = 0; j < g->ntracked; j++)
        if (g->fpos[j] < len)
            taken[g->fpos[j]] = 1;
    for (p = 0; p < len && k < g->nfds; p++)
        if (!taken[p])
            kidx[k++] = p;
}

/* Our socket `slot` leaves the kernel's group: the last member moves into
 * its place (reuseport_detach_sock).  order[] then holds nfds - 1 entries:
 * the caller drops the last or appends the socket again. */
static void order_leave(struct ps_group *g, int slot)
{
    int kidx[PS_SUP_MAX_WORKERS], n = g->nfds, k, j;

    for (k = 0; k < n && g->order[k] != slot; k++)
        ;
    if (k == n)
        return;
    j = foreign_at(g, kernel_len(g) - 1);
    if (j < 0) {
        g->order[k] = g->order[n - 1]; /* our last one takes its place */
        return;
    }
    /* a foreign member takes its place; ours keep their order */
    kernel_indexes(g, kidx);
    g->fpos[j] = kidx[k];
    memmove(&g->order[k], &g->order[k + 1], (size_t)(n - k - 1) * sizeof(g->order[0]));
}

/* Tracked foreign member j left the kernel's group: the last member moves
 * into its place. */
static void foreign_leave(struct ps_group *g, int j)
{
    int p = g->fpos[j], last = kernel_len(g) - 1, i, r, slot;

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
    if (r < 0 || r >= g->nfds)
        return;
    slot = g->order[g->nfds - 1];
    memmove(&g->order[r + 1], &g->order[r], (size_t)(g->nfds - 1 - r) * sizeof(g->order[0]));
    g->order[r] = slot;
}

static int tracked(const struct ps_group *g, unsigned long inode)
{
    int j;

    for (j = 0; j < g->ntracked; j++)
        if (g->foreign[j] == inode)
            return 1;
    return 0;
}

int ps__group_foreign_sync(struct ps_group *g)
{
    unsigned long now[PS_GROUP_FOREIGN_MAX];
    int n, m, i, j, changed = 0;
    struct stat st;

    if (g->shared || g->nfds == 0 || g->spec.proto == PS_PROTO_UNIX)
        return 0;
    for (i = 0; i < g->nfds; i++)
        if (!g->ino[i] && fstat(g->fds[i], &st) == 0)
            g->ino[i] = (unsigned long)st.st_ino; /* adopted, or carried over an upgrade */
    n = ps__reuseport_members(&g->spec, g->ino, g->nfds, now, PS_GROUP_FOREIGN_MAX);
    if (n < 0)
        return 0;
    m = n < PS_GROUP_FOREIGN_MAX ? n : PS_GROUP_FOREIGN_MAX;
    for (j = g->ntracked - 1; j >= 0; j--) {
        for (i = 0; i < m && now[i] != g->foreign[j]; i++)
            ;
        if (i == m) {
            foreign_leave(g, j);
            changed = 1;
        }
    }
    /* one that joined since the last look sits at the end */
    for (i = 0; i < m && g->ntracked < PS_GROUP_FOREIGN_MAX; i++)
        if (!tracked(g, now[i])) {
            g->foreign[g->ntracked] = now[i];
            g->fpos[g->ntracked] = kernel_len(g);
            g->ntracked++;
            changed = 1;
        }
    changed |= n != g->nforeign;
    g->nforeign = n;
    g->order_changed |= changed;
    return changed;
}

/* Before a change of our own to a group steered by socket index, the
 * foreign members that came or went since the last look: the change then
 * lands where the kernel puts it. */
static void sync_before_change(struct ps_group *g)
{
    if (g->steer == PS_STEER_CBPF)
        ps__group_foreign_sync(g);
}

int ps__group_open(struct ps_group *g, int nslots, char *err, size_t errlen)
{
    char addr[160];
    int want = g->shared ? 1 : nslots, r = 0;
    unsigned long inode = 0;

    g->nfds = 0;
    while (g->nfds < want) {
        r = open_one(g, err, errlen);
        if (r < 0)
            goto error;
    }
    if (!g->shared && ps__reuseport_foreign(&g->spec, g->fds, g->nfds, &inode) > 0) {
        pid_t pid = 0;
        char comm[64] = "";
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
        r = -EADDRINUSE;
        goto error;
    }
    return 0;

error:
    ps__group_close(g);
    return r;
}

int ps__group_grow(struct ps_group *g, int nslots, char *err, size_t errlen)
{
    int r;

    if (g->shared)
        return 0;
    if (g->nfds < nslots)
        sync_before_change(g);
    while (g->nfds < nslots) {
        r = open_one(g, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

int ps__groups_grow(struct ps_sup *sup, int nslots, char *err, size_t errlen)
{
    int before[PS_SUP_MAX_LISTENERS], g, r;

    r = nofile_fits(sup, nslots, err, errlen);
    if (r < 0)
        return r;
    for (g = 0; g < sup->ngroups; g++)
        before[g] = sup->groups[g].nfds;
    for (g = 0; g < sup->ngroups && r == 0; g++)
        r = ps__group_grow(&sup->groups[g], nslots, err, errlen);
    if (r == 0)
        return 0;
    /* newest first: each is the last of the kernel's group when it leaves,
     * so nothing moves and order[] is what it was */
    for (g = 0; g < sup->ngroups; g++)
        while (sup->groups[g].nfds > before[g])
            ps__group_close_last(&sup->groups[g]);
    return r;
}

void ps__group_close_last(struct ps_group *g)
{
    if (g->shared || g->nfds <= 1)
        return;
    sync_before_change(g);
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, g->nfds - 1);
    order_leave(g, g->nfds - 1);
    ps__close(g->fds[--g->nfds]);
    g->fds[g->nfds] = -1;
    g->ino[g->nfds] = 0;
    g->down[g->nfds] = 0;
}

void ps__group_close(struct ps_group *g)
{
    int i;

    for (i = 0; i < g->nfds; i++) {
        ps__close(g->fds[i]);
        g->fds[i] = -1;
        g->ino[i] = 0;
        g->down[i] = 0;
    }
    g->nfds = 0;
    g->nforeign = g->ntracked = 0;
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_close(&g->bpf);
    g->steer = PS_STEER_UNSET;
}

int ps__group_can_steer(const struct ps_group *g)
{
    return !g->shared && g->spec.proto == PS_PROTO_TCP;
}

int ps__group_steer_init(struct ps_group *g, int want)
{
    char why[200];
    int r;

    g->steer_why[0] = '\0';
    if (!ps__group_can_steer(g) || g->nfds == 0) {
        g->steer = PS_STEER_NONE;
        return 0;
    }
    if (want == PS_STEERING_CBPF) {
        snprintf(g->steer_why, sizeof(g->steer_why), "--steering cbpf");
        g->steer = PS_STEER_CBPF;
        return 0;
    }
    r = ps__rp_bpf_open(&g->bpf, why, sizeof(why));
    if (r == 0) {
        r = ps__rp_bpf_attach(&g->bpf, g->fds[0]);
        if (r < 0) {
            snprintf(why, sizeof(why), "setsockopt(SO_ATTACH_REUSEPORT_EBPF): %s", ps_strerror(r));
            ps__rp_bpf_close(&g->bpf);
        }
    }
    if (r == 0) {
        g->steer = PS_STEER_EBPF;
        return 0;
    }
    snprintf(g->steer_why, sizeof(g->steer_why), "%s", why);
    if (want == PS_STEERING_EBPF)
        return r;
    g->steer = PS_STEER_CBPF;
    return 0;
}

int ps__group_migrates(const struct ps_group *g)
{
    return g->steer == PS_STEER_EBPF;
}

/* the maps: slot s serves through its socket, or not at all; each CPU's
 * slot (after the list, so that a slot is in socks before a CPU names it) */
static int steer_ebpf(struct ps_group *g, const unsigned char *serving, const int *cpu_slot,
                      int ncpu)
{
    int slotfds[PS_SUP_MAX_WORKERS], s, c, r, n = 0;

    for (s = 0; s < g->nfds; s++)
        n += (slotfds[s] = serving[s] ? g->fds[s] : -1) >= 0;
    /* no slot serves: still one of ours, where the connection waits for
     * the next worker; an empty list would let the kernel hash over every
     * member of the group, a foreign one too */
    for (s = 0; n == 0 && s < g->nfds; s++)
        slotfds[s] = g->down[s] ? -1 : g->fds[s];
    r = ps__rp_bpf_set(&g->bpf, slotfds, g->nfds);
    for (c = 0; r == 0 && cpu_slot && c < ncpu && c < PS__RP_BPF_CPUS; c++)
        r = ps__rp_bpf_set_cpu(&g->bpf, (unsigned)c, cpu_slot[c] < g->nfds ? cpu_slot[c] : -1);
    return r;
}

/*
 * CBPF: attach a program that sends each new connection, at random, to one
 * of the sockets whose serving[] flag is set.  With none set every socket is
 * a candidate (connections then wait in the queues rather than go nowhere).
 * O(nfds) instructions; the kernel allows 4096, we have at most 1024 slots.
 */
int ps__group_steer(struct ps_group *g, const unsigned char *serving, const int *cpu_slot, int ncpu)
{
    struct sock_filter code[4 + 4 * PS_SUP_MAX_WORKERS];
    struct sock_fprog prog;
    int idx[PS_SUP_MAX_WORKERS], kidx[PS_SUP_MAX_WORKERS];
    int n = 0, k, i, len = 0;

    if (!ps__group_can_steer(g) || g->nfds == 0)
        return 0;
    g->order_changed = 0;
    if (g->steer == PS_STEER_EBPF)
        return steer_ebpf(g, serving, cpu_slot, ncpu);
    /* the program returns the kernel's index of a socket, not our slot;
     * the indexes foreign members hold are never among them */
    kernel_indexes(g, kidx);
    for (k = 0; k < g->nfds; k++)
        if (serving[g->order[k]])
            idx[n++] = kidx[k];
    if (n == 0)
        for (k = 0; k < g->nfds; k++)
            idx[n++] = kidx[k];
    /* --cpu-affinity: if (cpu == c) return the index of c's slot */
    if (cpu_slot && ncpu > 0) {
        code[len++] =
            (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_CPU);
        for (i = 0; i < ncpu && len < 2 * PS_SUP_MAX_WORKERS; i++) {
            if (cpu_slot[i] < 0 || cpu_slot[i] >= g->nfds || !serving[cpu_slot[i]])
                continue;
            for (k = 0; k < g->nfds && g->order[k] != cpu_slot[i]; k++)
                ;
            if (k == g->nfds)
                continue;
            code[len++] =
                (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)i, 0, 1);
            code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (unsigned)kidx[k]);
        }
    }
    code[len++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_RANDOM);
    code[len++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (unsigned)n);
    for (i = 0; i < n; i++) {
        /* if (A == i) return idx[i]; */
        code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)i, 0, 1);
        code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (unsigned)idx[i]);
    }
    code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (unsigned)idx[0]);
    prog.len = (unsigned short)len;
    prog.filter = code;
    if (setsockopt(g->fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0)
        return ps__neg_errno();
    return 0;
}

int ps__group_shutdown(struct ps_group *g, int i, unsigned *queued)
{
    unsigned limit = 0;

    *queued = 0;
    if (i >= g->nfds || g->shared)
        return -EINVAL;
    ps_listen_queue(g->fds[i], queued, &limit);
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    if (shutdown(g->fds[i], SHUT_RD) < 0 && errno != ENOTCONN)
        return ps__neg_errno();
    g->down[i] = 1;
    return 0;
}

/* listen(2) again on socket i if it stopped: 1 when it did, 0 when it was
 * listening, -errno when it cannot (see ps__group_revive) */
static int relisten(struct ps_group *g, int i)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    unsigned queued, limit;
    int type = 0, r;
    socklen_t tlen = sizeof(type);

    if (i >= g->nfds || g->spec.proto != PS_PROTO_TCP)
        return 0;
    r = ps_listen_queue(g->fds[i], &queued, &limit);
    if (r == 0)
        return 0; /* listening */
    if (getsockopt(g->fds[i], SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_STREAM)
        return 0;
    /* shutdown(2) on a listener leaves it closed but still bound to our
     * port (an explicit bind locks the port): listen() again works in place.
     * A second shutdown() on the closed socket (another holder of a shared
     * one, or the same worker again) leaves its shutdown flags set, which
     * every accepted connection would inherit (the client gets an empty
     * reply): connect(AF_UNSPEC) clears them (tcp_disconnect) and keeps the
     * port. */
    (void)connect(g->fds[i], &(struct sockaddr){.sa_family = AF_UNSPEC}, sizeof(struct sockaddr));
    sync_before_change(g);
    if (listen(g->fds[i], g->spec.backlog) < 0)
        return ps__neg_errno();
    if (getsockname(g->fds[i], (struct sockaddr *)&ss, &len) < 0 ||
        ps_listen_queue(g->fds[i], &queued, &limit) < 0)
        return -EIO;
    if (ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port) != g->spec.port)
        return -EADDRNOTAVAIL; /* it had lost its port: listening elsewhere now */
    if (!g->shared) {
        /* it left the kernel's group and joined again at the end */
        order_leave(g, i);
        g->order[g->nfds - 1] = i;
    }
    g->down[i] = 0;
    /* and the eBPF sockarray, when it stopped listening */
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    return 1;
}

int ps__group_replace(struct ps_group *g, int i)
{
    struct stat st;
    int fd;

    if (g->shared || i >= g->nfds)
        return -EINVAL;
    sync_before_change(g);
    fd = ps_listen_open(&g->spec, 0);
    if (fd < 0) {
        relisten(g, i);
        return fd;
    }
    /* the old one left the kernel's group when it was shut down; the new
     * one joined at the end */
    order_leave(g, i);
    g->order[g->nfds - 1] = i;
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    ps__close(g->fds[i]);
    g->fds[i] = fd;
    g->ino[i] = fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : 0;
    g->down[i] = 0;
    return 0;
}

int ps__group_listen_again(struct ps_group *g, int i)
{
    return relisten(g, i);
}

int ps__group_revive(struct ps_group *g, int i)
{
    int r = relisten(g, i);

    if (r > 0)
        g->relistens++;
    return r;
}
