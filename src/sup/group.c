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

int ps__group_fd_of(const struct ps_group *g, int slot, int next)
{
    if (next && !g->shared && slot >= 0 && slot < g->nfds && g->nextfds[slot] >= 0)
        return g->nextfds[slot];
    return ps__group_fd(g, slot);
}

int ps__group_per_generation(const struct ps_group *g)
{
    return g->steer == PS_STEER_EBPF || g->steer == PS_STEER_FLOW;
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
 * a spawn needs, in the child for a moment, a copy of each listener (lifted
 * above the 3.. range before they are placed), the program's file and the
 * passed descriptor, and a control client one descriptor.
 * Beyond that minimum, every control client and endpoint connection the
 * tables hold, and an eBPF program with its three maps per steered group,
 * are what it takes to never run out.
 */
#define NOFILE_OWN 3
/* the spawn's and a control client's descriptors, with nlisteners listeners */
#define NOFILE_RESERVE(nlisteners) ((long)(nlisteners) + 3)
#define NOFILE_EBPF                4

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
static void nofile_limit_said(char *err, size_t errlen, long more)
{
    char head[300];
    long soft, hard, open = open_fds();

    nofile_limits(&soft, &hard);
    snprintf(head, sizeof(head), "%s", err ? err : "");
    ps__set_error(err, errlen,
                  "%s (the open-file limit is %ld, hard %ld; %ld open, about %ld needed: raise "
                  "LimitNOFILE= or ulimit -n)",
                  head, soft, hard, open, open + more + NOFILE_RESERVE(0));
}

/* The sockets growing sup's groups to nslots adds. */
static long more_sockets(const struct ps_sup *sup, int nslots)
{
    long more = 0;
    int g;

    for (g = 0; g < sup->ngroups; g++)
        if (!sup->groups[g].shared && sup->groups[g].nfds < nslots)
            more += nslots - sup->groups[g].nfds;
    return more;
}

/* Refuse a scale to nslots whose new sockets cannot fit under the soft
 * limit, before opening any.  O(open descriptors). */
static int nofile_fits(struct ps_sup *sup, int nslots, char *err, size_t errlen)
{
    long open = open_fds(), soft, hard, more = more_sockets(sup, nslots), need;

    nofile_limits(&soft, &hard);
    need = open + more + NOFILE_RESERVE(sup->ngroups);
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
    need = open + sockets + NOFILE_OWN + NOFILE_RESERVE(cfg->nspecs) + nendpoints(cfg) +
           (cfg->nwatch > 0);
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

/* ---- sockets: the core's listener group ------------------------------------- */

int ps__group_open(struct ps_group *g, int nslots, char *err, size_t errlen)
{
    struct ps_spec spec = g->spec; /* g->lg.spec is the same memory */
    int shared = g->shared, r;

    ps__lgroup_init(&g->lg, &spec, shared);
    r = ps__lgroup_open(&g->lg, nslots, 1, err, errlen);
    if (r == -EMFILE || r == -ENFILE)
        nofile_limit_said(err, errlen, shared ? 1 : nslots);
    return r;
}

int ps__group_foreign_sync(struct ps_group *g)
{
    int changed = ps__lgroup_foreign_sync(&g->lg);

    g->order_changed |= changed;
    return changed;
}

int ps__groups_grow(struct ps_sup *sup, int nslots, char *err, size_t errlen)
{
    int before[PS_SUP_MAX_LISTENERS], g, r;
    long more = more_sockets(sup, nslots);

    r = nofile_fits(sup, nslots, err, errlen);
    if (r < 0)
        return r;
    for (g = 0; g < sup->ngroups; g++)
        before[g] = sup->groups[g].nfds;
    for (g = 0; g < sup->ngroups && r == 0; g++)
        r = ps__group_grow(&sup->groups[g], nslots, err, errlen);
    if (r == 0)
        return 0;
    /* the failed group closed its own; newest first in the others, so the
     * kernel's order is as it was */
    for (g = 0; g < sup->ngroups; g++)
        while (sup->groups[g].nfds > before[g])
            ps__group_close_last(&sup->groups[g]);
    if (r == -EMFILE || r == -ENFILE)
        nofile_limit_said(err, errlen, more);
    return r;
}

int ps__group_grow(struct ps_group *g, int nslots, char *err, size_t errlen)
{
    return ps__lgroup_grow(&g->lg, nslots, err, errlen);
}

void ps__group_close_last(struct ps_group *g)
{
    if (g->shared || g->nfds <= 1)
        return;
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, g->nfds - 1);
    ps__lgroup_close_last(&g->lg);
}

void ps__group_close(struct ps_group *g)
{
    ps__lgroup_close(&g->lg);
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_close(&g->bpf);
    if (g->steer == PS_STEER_FLOW)
        ps__flow_close(g);
    g->steer = PS_STEER_UNSET;
}

int ps__group_shutdown(struct ps_group *g, int i, unsigned *queued)
{
    if (g->steer == PS_STEER_EBPF && i < g->nfds && !g->shared)
        ps__rp_bpf_forget(&g->bpf, i);
    return ps__lgroup_shutdown(&g->lg, i, queued);
}

/* listen(2) again on socket i if it stopped; it left the eBPF sockarray
 * when it stopped listening */
static int relisten(struct ps_group *g, int i)
{
    int r = ps__lgroup_relisten(&g->lg, i);

    if (r > 0 && g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    return r;
}

int ps__group_replace(struct ps_group *g, int i)
{
    int r = ps__lgroup_replace(&g->lg, i);

    if (r == 0 && g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    return r;
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

/* ---- steering ------------------------------------------------------------------ */

int ps__group_can_steer(const struct ps_group *g)
{
    return !g->shared && g->spec.proto == PS_PROTO_TCP;
}

int ps__group_steer_init(struct ps_group *g, int want)
{
    char why[200];
    int r;

    g->steer_why[0] = '\0';
    if (ps__flow_can_steer(g) && g->nfds > 0)
        return ps__flow_steer_init(g, want);
    if (!ps__group_can_steer(g) || g->nfds == 0) {
        g->steer = PS_STEER_NONE;
        return 0;
    }
    if (want == PS_STEERING_CBPF) {
        snprintf(g->steer_why, sizeof(g->steer_why), "--steering cbpf");
        g->steer = PS_STEER_CBPF;
        g->by_index = 1; /* the program selects by the kernel's index */
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
    g->by_index = 1;
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
    int n = 0, k, i, len = 0, up;

    if (g->steer == PS_STEER_FLOW)
        return ps__flow_steer(g, serving);
    if (!ps__group_can_steer(g) || g->nfds == 0)
        return 0;
    g->order_changed = 0;
    if (g->steer == PS_STEER_EBPF)
        return steer_ebpf(g, serving, cpu_slot, ncpu);
    /* the program returns the kernel's index of a socket, not our slot;
     * the indexes foreign members hold are never among them */
    up = ps__lgroup_listening(&g->lg);
    if (up == 0)
        return 0;
    ps__lgroup_kernel_indexes(&g->lg, kidx);
    for (k = 0; k < up; k++)
        if (serving[g->order[k]])
            idx[n++] = kidx[k];
    if (n == 0)
        for (k = 0; k < up; k++)
            idx[n++] = kidx[k];
    /* --cpu-affinity: if (cpu == c) return the index of c's slot */
    if (cpu_slot && ncpu > 0) {
        code[len++] =
            (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_CPU);
        for (i = 0; i < ncpu && len < 2 * PS_SUP_MAX_WORKERS; i++) {
            if (cpu_slot[i] < 0 || cpu_slot[i] >= g->nfds || !serving[cpu_slot[i]])
                continue;
            for (k = 0; k < up && g->order[k] != cpu_slot[i]; k++)
                ;
            if (k == up)
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

int ps__group_renew(struct ps_group *g, int i, int at_once, unsigned *queued)
{
    int r;

    *queued = 0;
    if (!ps__group_per_generation(g))
        return -EINVAL;
    r = ps__lgroup_renew(&g->lg, i, at_once, queued);
    /* at once, the old socket left the map's list with its listening;
     * else the map keeps sending the slot's share to it until the next
     * steering update (its holder still accepts): forgetting it now would
     * leave the slot in the list with no socket, and the kernel would hash
     * that share over every listener, the fresh one too, which nobody
     * accepts from yet */
    if (r == 0 && at_once && g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    return r;
}

enum ps_steer ps__sup_steering(const struct ps_sup *sup, const char **why)
{
    enum ps_steer st = PS_STEER_NONE;
    int g;

    *why = "";
    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        if (gr->steer == PS_STEER_CBPF) {
            *why = gr->steer_why;
            return PS_STEER_CBPF; /* the weakest one */
        }
        if (gr->steer == PS_STEER_EBPF)
            st = PS_STEER_EBPF;
    }
    return st;
}

int ps__sup_migrates(const struct ps_sup *sup)
{
    const char *why;

    return ps__sup_steering(sup, &why) == PS_STEER_EBPF;
}
