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

#include <linux/filter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int open_one(struct ps_group *g, char *err, size_t errlen)
{
    char addr[160];
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
    g->fds[g->nfds++] = fd;
    return 0;
}

/* The kernel's bookkeeping when socket `slot` leaves the group: the last
 * one moves into its place (reuseport_detach_sock). */
static void order_leave(struct ps_group *g, int n, int slot)
{
    int k;

    for (k = 0; k < n; k++)
        if (g->order[k] == slot) {
            g->order[k] = g->order[n - 1];
            return;
        }
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
    while (g->nfds < nslots) {
        r = open_one(g, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

void ps__group_close_last(struct ps_group *g)
{
    if (g->shared || g->nfds <= 1)
        return;
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, g->nfds - 1);
    order_leave(g, g->nfds, g->nfds - 1);
    ps__close(g->fds[--g->nfds]);
    g->fds[g->nfds] = -1;
    g->down[g->nfds] = 0;
}

void ps__group_close(struct ps_group *g)
{
    int i;

    for (i = 0; i < g->nfds; i++) {
        ps__close(g->fds[i]);
        g->fds[i] = -1;
        g->down[i] = 0;
    }
    g->nfds = 0;
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
    int slotfds[PS_SUP_MAX_WORKERS], s, c, r;

    for (s = 0; s < g->nfds; s++)
        slotfds[s] = serving[s] ? g->fds[s] : -1;
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
    int idx[PS_SUP_MAX_WORKERS];
    int n = 0, k, i, len = 0;

    if (!ps__group_can_steer(g) || g->nfds == 0)
        return 0;
    if (g->steer == PS_STEER_EBPF)
        return steer_ebpf(g, serving, cpu_slot, ncpu);
    /* the program returns the kernel's index of a socket, not our slot */
    for (k = 0; k < g->nfds; k++)
        if (serving[g->order[k]])
            idx[n++] = k;
    if (n == 0)
        for (k = 0; k < g->nfds; k++)
            idx[n++] = k;
    /* --cpu-affinity: if (cpu == c) return the index of c's slot */
    if (cpu_slot && ncpu > 0) {
        code[len++] =
            (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_CPU);
        for (i = 0; i < ncpu && len < 2 * PS_SUP_MAX_WORKERS; i++) {
            if (cpu_slot[i] < 0 || cpu_slot[i] >= g->nfds || !serving[cpu_slot[i]])
                continue;
            for (k = 0; k < g->nfds && g->order[k] != cpu_slot[i]; k++)
                ;
            code[len++] =
                (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)i, 0, 1);
            code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (unsigned)k);
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
        order_leave(g, g->nfds, i);
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
    int fd;

    if (g->shared || i >= g->nfds)
        return -EINVAL;
    fd = ps_listen_open(&g->spec, 0);
    if (fd < 0) {
        relisten(g, i);
        return fd;
    }
    /* the old one left the kernel's group when it was shut down; the new
     * one joined at the end */
    order_leave(g, g->nfds, i);
    g->order[g->nfds - 1] = i;
    if (g->steer == PS_STEER_EBPF)
        ps__rp_bpf_forget(&g->bpf, i);
    ps__close(g->fds[i]);
    g->fds[i] = fd;
    g->down[i] = 0;
    return 0;
}

int ps__group_renew(struct ps_group *g, int i, int at_once, unsigned *queued)
{
    unsigned limit = 0;
    int fd;

    *queued = 0;
    if (g->shared || i >= g->nfds || g->down[i] || g->steer != PS_STEER_EBPF)
        return -EINVAL;
    /* the fresh one first: it joins the kernel's group at the end, so that
     * what the old one hands over always has a listener to go to */
    fd = ps_listen_open(&g->spec, 0);
    if (fd < 0)
        return fd;
    ps_listen_queue(g->fds[i], queued, &limit);
    /* at once: every holder's copy stops listening now and the queue moves
     * (the old one leaves and the fresh one takes its index in the group).
     * Else only our copy goes: the old socket leaves when its last holder
     * closes it, and its queue moves then; until the next steering update
     * the map still sends the slot's share to it, whose holder still
     * accepts (forgetting it now would leave the slot in the map's list
     * with no socket, and the kernel would hash that share over every
     * listener, the fresh one too, which nobody accepts from yet) */
    if (at_once) {
        ps__rp_bpf_forget(&g->bpf, i);
        if (shutdown(g->fds[i], SHUT_RD) < 0 && errno != ENOTCONN) {
            int r = ps__neg_errno();
            ps__close(fd);
            return r;
        }
    }
    ps__close(g->fds[i]);
    g->fds[i] = fd;
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
