/*
 * features.c - what this kernel offers around SO_REUSEPORT, each
 * tried for real: the spread of connections over a reuseport group, what
 * closing one listener does to the connections queued in it (reset, or
 * migrated with net.ipv4.tcp_migrate_req), reuseport BPF, SO_INCOMING_CPU,
 * EPOLLEXCLUSIVE and IP_BIND_ADDRESS_NO_PORT.
 */
#include "probe_internal.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT /* glibc's netinet/in.h may lack it (Linux 4.2) */
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MIGRATE_SYSCTL "/proc/sys/net/ipv4/tcp_migrate_req"
#define SPREAD_BATCH   256 /* connections made before draining the listeners */

/* ---- small helpers ------------------------------------------------------------ */

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? ps__neg_errno() : 0;
}

/* A reuseport TCP listener (SO_REUSEADDR too, as portshare makes them) on
 * 127.0.0.1:port, non-blocking. */
static int group_listener(unsigned port, int backlog)
{
    struct sockaddr_storage ss;
    int fd, len, r;

    fd = ps__probe_socket(PS_PROBE_TCP, PS_PA_LO, PS_PROBE_REUSEADDR | PS_PROBE_REUSEPORT);
    if (fd < 0)
        return fd;
    len = ps__probe_sockaddr(PS_PA_LO, port, &ss);
    if (bind(fd, (struct sockaddr *)&ss, (socklen_t)len) < 0 || listen(fd, backlog) < 0) {
        r = ps__neg_errno();
        ps__close(fd);
        return r;
    }
    r = set_nonblock(fd);
    if (r < 0) {
        ps__close(fd);
        return r;
    }
    return fd;
}

static int client_to(unsigned port)
{
    int fd = ps__probe_socket(PS_PROBE_TCP, PS_PA_LO, 0), r;

    if (fd < 0)
        return fd;
    r = ps__probe_connect(fd, PS_PA_LO, port);
    if (r < 0) {
        ps__close(fd);
        return r;
    }
    return fd;
}

static int raise_nofile(rlim_t need)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return ps__neg_errno();
    if (rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max < need)
        return -EMFILE;
    rl.rlim_cur = need;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? ps__neg_errno() : 0;
}

static int write_migrate(int value)
{
    char c = value ? '1' : '0';
    int fd = open(MIGRATE_SYSCTL, O_WRONLY | O_CLOEXEC), r = 0;

    if (fd < 0)
        return ps__neg_errno();
    if (write(fd, &c, 1) != 1)
        r = ps__neg_errno();
    ps__close(fd);
    return r;
}

static int read_migrate(void)
{
    char c = 0;
    int fd = open(MIGRATE_SYSCTL, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    if (read(fd, &c, 1) != 1)
        c = 0;
    ps__close(fd);
    return c == '1';
}

/* Every new connection to the group goes to socket 0 (the first to listen). */
static int attach_cbpf_zero(int fd)
{
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_fprog prog = {1, code};

    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0)
        return ps__neg_errno();
    return 0;
}

/* ---- the spread ------------------------------------------------------------------ */

/* Accept (and close) until `want` connections arrived; 1 s without progress
 * ends it.  Counts per listener. */
static int drain(const int *lfd, int k, int want, int *accepted, int *got)
{
    struct pollfd pfd[PS_PROBE_MAX_LISTENERS];
    int i, fd, n;

    for (i = 0; i < k; i++)
        pfd[i] = (struct pollfd){lfd[i], POLLIN, 0};
    while (*got < want) {
        n = poll(pfd, (nfds_t)k, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? ps__neg_errno() : -ETIMEDOUT;
        for (i = 0; i < k; i++)
            while ((fd = accept4(lfd[i], NULL, NULL, SOCK_CLOEXEC)) >= 0) {
                accepted[i]++;
                (*got)++;
                ps__close(fd);
            }
    }
    return 0;
}

/* M clients stay open until the end, so each keeps its own source port:
 * M connections from M distinct source ports. */
static int measure_spread(int k, int m, struct ps_probe_spread *s)
{
    int lfd[PS_PROBE_MAX_LISTENERS], *cfd, i, r = 0, got = 0, batch;
    unsigned port;

    for (i = 0; i < k; i++)
        lfd[i] = -1;
    cfd = calloc((size_t)m, sizeof(*cfd));
    if (!cfd)
        return -ENOMEM;
    r = raise_nofile((rlim_t)m + (rlim_t)k + 64);
    if (r == 0)
        r = ps__probe_free_port(PS_PROBE_TCP, &port);
    for (i = 0; r >= 0 && i < k; i++)
        r = lfd[i] = group_listener(port, 2 * SPREAD_BATCH);
    while (r >= 0 && s->connections < m) {
        batch = m - s->connections < SPREAD_BATCH ? m - s->connections : SPREAD_BATCH;
        for (i = 0; i < batch && r >= 0; i++) {
            r = cfd[s->connections] = client_to(port);
            if (r >= 0)
                s->connections++;
        }
        if (r >= 0)
            r = drain(lfd, k, s->connections, s->accepted, &got);
    }
    for (i = 0; i < s->connections; i++)
        ps__probe_abort(cfd[i]);
    for (i = 0; i < k; i++)
        ps__close(lfd[i]);
    free(cfd);
    return r < 0 ? r : 0;
}

/* ---- closing a listener that holds queued connections ------------------------------ */

/* Wait (briefly, 1 ms steps, at most ~200 ms) until the handshakes of n
 * connections have reached the accept queues of l0 and l1. */
static void wait_queued(int l0, int l1, int n)
{
    unsigned q0 = 0, q1 = 0, lim;
    int tries;

    for (tries = 0; tries < 200; tries++) {
        if (ps_listen_queue(l0, &q0, &lim) < 0 || ps_listen_queue(l1, &q1, &lim) < 0)
            return;
        if ((int)(q0 + q1) >= n)
            return;
        poll(NULL, 0, 1);
    }
}

/* After closing l0: clients that see a reset, and connections that show up
 * in l1 beyond the `before` it already held; until all are accounted for or
 * 1 s passes without news. */
static void count_fates(int l1, int *cfd, int n, int before, struct ps_probe_close *out)
{
    struct pollfd *pfd = calloc((size_t)n + 1, sizeof(*pfd));
    int i, fd, in_l1 = 0, ready;
    char b;

    if (!pfd) {
        out->err = ENOMEM;
        return;
    }
    for (i = 0; i < n; i++)
        pfd[i] = (struct pollfd){cfd[i], POLLIN, 0};
    pfd[n] = (struct pollfd){l1, POLLIN, 0};
    while (out->reset + (in_l1 - before) < out->queued) {
        ready = poll(pfd, (nfds_t)n + 1, 1000);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            break;
        for (i = 0; i < n; i++)
            if (pfd[i].fd >= 0 && pfd[i].revents &&
                recv(cfd[i], &b, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == ECONNRESET) {
                out->reset++;
                pfd[i].fd = -1; /* counted: stop polling it */
            }
        while ((fd = accept4(l1, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            in_l1++;
            ps__probe_abort(fd);
        }
    }
    out->migrated = in_l1 - before > 0 ? in_l1 - before : 0;
    out->unaccounted = out->queued - out->reset - out->migrated;
    free(pfd);
}

static void close_experiment(int migrate, int can_set, int q, struct ps_probe_close *out)
{
    int l0 = -1, l1 = -1, *cfd, i, r = 0, made = 0;
    unsigned port, q0 = 0, q1 = 0, lim;

    cfd = calloc((size_t)q, sizeof(*cfd));
    if (!cfd) {
        out->err = ENOMEM;
        return;
    }
    if (can_set)
        r = write_migrate(migrate);
    out->migrate_req = read_migrate();
    if (r == 0)
        r = ps__probe_free_port(PS_PROBE_TCP, &port);
    if (r == 0)
        r = l0 = group_listener(port, q + 16); /* listens first: socket 0 */
    if (r >= 0)
        r = l1 = group_listener(port, q + 16);
    if (r >= 0)
        out->steered = attach_cbpf_zero(l0) == 0;
    for (made = 0; r >= 0 && made < q; made++)
        r = cfd[made] = client_to(port);
    if (r >= 0) {
        wait_queued(l0, l1, q);
        if (ps_listen_queue(l0, &q0, &lim) < 0 || ps_listen_queue(l1, &q1, &lim) < 0)
            r = -EOPNOTSUPP;
    }
    if (r >= 0) {
        out->queued = (int)q0;
        ps__close(l0);
        l0 = -1;
        count_fates(l1, cfd, made, (int)q1, out);
    }
    if (r < 0)
        out->err = -r;
    for (i = 0; i < made; i++)
        ps__probe_abort(cfd[i]);
    ps__close(l0);
    ps__close(l1);
    free(cfd);
}

void ps__probe_spread(const struct ps_probe_opts *opts, int can_set_migrate,
                      struct ps_probe_result *res)
{
    struct ps_probe_spread *s = &res->spread;
    int r;

    s->listeners = opts->listeners;
    r = measure_spread(opts->listeners, opts->connections, s);
    if (r < 0)
        s->err = -r;
    if (can_set_migrate && res->host_migrate_req >= 0) {
        /* in our own namespace: measure both settings */
        close_experiment(0, 1, opts->queued, &s->close[s->nclose++]);
        close_experiment(1, 1, opts->queued, &s->close[s->nclose++]);
    } else {
        close_experiment(0, 0, opts->queued, &s->close[s->nclose++]);
    }
}

/* ---- the features ----------------------------------------------------------------- */

static void feat(struct ps_probe_feature *f, int supported, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void feat(struct ps_probe_feature *f, int supported, int err, const char *fmt, ...)
{
    va_list ap;

    f->supported = supported;
    f->err = err;
    va_start(ap, fmt);
    vsnprintf(f->detail, sizeof(f->detail), fmt, ap);
    va_end(ap);
}

static void feat_reuseport(struct ps_probe_feature *f, const struct ps_probe_spread *s)
{
    int i, lo = s->connections, hi = 0;

    if (s->err) {
        feat(f, s->err == EMFILE ? -1 : 0, s->err, "the spread experiment failed: %s",
             ps_strerror(s->err));
        return;
    }
    for (i = 0; i < s->listeners; i++) {
        lo = s->accepted[i] < lo ? s->accepted[i] : lo;
        hi = s->accepted[i] > hi ? s->accepted[i] : hi;
    }
    feat(f, 1, 0,
         "%d listeners on one address:port; the kernel gave each %d to %d of %d connections",
         s->listeners, lo, hi, s->connections);
}

static void feat_reuseport_lb(struct ps_probe_feature *f)
{
#ifdef SO_REUSEPORT_LB
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, r;

    r = fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT_LB, &one, sizeof(one)) < 0 ? errno : 0;
    ps__close(fd);
    feat(f, r == 0, r, r ? "setsockopt failed" : "setsockopt accepted");
#else
    feat(f, 0, ENOPROTOOPT,
         "no such option on Linux: here SO_REUSEPORT itself balances (FreeBSD needs the _LB "
         "variant for that)");
#endif
}

static void feat_migrate(struct ps_probe_feature *f, const struct ps_probe_result *res)
{
    const struct ps_probe_spread *s = &res->spread;
    int i;

    if (res->host_migrate_req < 0) {
        feat(f, 0, ENOENT, "no " MIGRATE_SYSCTL " (needs Linux 5.14)");
        return;
    }
    for (i = 0; i < s->nclose; i++)
        if (s->close[i].migrate_req == 1 && !s->close[i].err) {
            feat(f, s->close[i].migrated > 0, 0,
                 "host value %d; set to 1, %d of %d queued connections moved to the other "
                 "listener when theirs closed, %d were reset",
                 res->host_migrate_req, s->close[i].migrated, s->close[i].queued,
                 s->close[i].reset);
            return;
        }
    feat(f, 1, 0,
         "host value %d; not tried with 1 (that needs root and a private network namespace)",
         res->host_migrate_req);
}

static void feat_cbpf(struct ps_probe_feature *f, const struct ps_probe_spread *s)
{
    const struct ps_probe_close *c = &s->close[0];

    if (s->nclose == 0 || c->err) {
        feat(f, -1, c->err, "not tried: the close experiment failed");
        return;
    }
    if (!c->steered) {
        feat(f, 0, 0, "setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed");
        return;
    }
    feat(f, 1, 0, "a one-instruction program (return 0) put %d of %d connections in socket 0",
         c->queued, c->queued);
}

static int bpf_load(int type, int expected, int ret)
{
    struct bpf_insn insns[2];
    union bpf_attr attr;

    memset(insns, 0, sizeof(insns));
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = ret */
    insns[0].dst_reg = BPF_REG_0;
    insns[0].imm = ret;
    insns[1].code = BPF_JMP | BPF_EXIT;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = (unsigned)type;
    attr.expected_attach_type = (unsigned)expected;
    attr.insn_cnt = 2;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.license = (uint64_t)(uintptr_t) "GPL";
    /* bpf(2) program descriptors are always close-on-exec */
    return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
}

static const char *load_result(int fd)
{
    return fd >= 0 ? "loads" : ps_errno_name(errno);
}

/* Load (and for SK_REUSEPORT attach) tiny programs of each type that
 * reuseport can use; EPERM means this user may not load them: we can't tell. */
static void feat_ebpf(struct ps_probe_feature *f)
{
    char sf_res[24], mig_res[24];
    int sf, sel, mig, lfd = -1, attach = -1, err;
    unsigned port;

    sf = bpf_load(BPF_PROG_TYPE_SOCKET_FILTER, 0, 0);
    snprintf(sf_res, sizeof(sf_res), "%s", load_result(sf));
    mig = bpf_load(BPF_PROG_TYPE_SK_REUSEPORT, BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, SK_PASS);
    snprintf(mig_res, sizeof(mig_res), "%s", load_result(mig));
    sel = bpf_load(BPF_PROG_TYPE_SK_REUSEPORT, BPF_SK_REUSEPORT_SELECT, SK_PASS);
    err = sel < 0 ? errno : 0;
    if (sel >= 0 && ps__probe_free_port(PS_PROBE_TCP, &port) == 0 &&
        (lfd = group_listener(port, 16)) >= 0)
        attach = setsockopt(lfd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &sel, sizeof(sel)) < 0
                     ? errno
                     : 0;
    if (sel < 0)
        feat(f, err == EPERM || err == EACCES ? -1 : 0, err,
             "bpf(BPF_PROG_LOAD) of SK_REUSEPORT: %s%s; SOCKET_FILTER: %s", ps_errno_name(err),
             err == EPERM ? " (not allowed for this user, so unknown)" : "", sf_res);
    else
        feat(f, attach == 0, attach > 0 ? attach : 0,
             "an SK_REUSEPORT program loads and attaches: %s; SELECT_OR_MIGRATE program: %s; "
             "SOCKET_FILTER program: %s",
             attach == 0 ? "ok" : ps_errno_name(attach), mig_res, sf_res);
    ps__close(lfd);
    ps__close(sf);
    ps__close(sel);
    ps__close(mig);
}

static int port_of(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
        return ps__neg_errno();
    return ntohs(sin.sin_port);
}

static void feat_incoming_cpu(struct ps_probe_feature *f, const struct ps__probe_env *env)
{
    int c = -1, s = -1, cpu = -1, r;
    socklen_t len = sizeof(cpu);

    r = setsockopt(env->server4, SOL_SOCKET, SO_INCOMING_CPU, &(int){0}, sizeof(int));
    if (r < 0) {
        feat(f, 0, errno, "setsockopt on a listener: %s", ps_errno_name(errno));
        return;
    }
    r = c = client_to(env->port4);
    if (r >= 0)
        r = port_of(c);
    if (r >= 0)
        r = s = ps__probe_accept(env->server4, (unsigned)r);
    if (r >= 0 && getsockopt(s, SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) < 0)
        r = ps__neg_errno();
    if (r < 0)
        feat(f, -1, -r, "setsockopt accepted; reading it back failed: %s", ps_strerror(r));
    else
        feat(f, 1, 0, "setsockopt on a listener accepted; an accepted socket reports CPU %d", cpu);
    ps__probe_abort(c);
    ps__probe_abort(s);
}

static void feat_epollexclusive(struct ps_probe_feature *f, const struct ps__probe_env *env)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE};
    int ep = epoll_create1(EPOLL_CLOEXEC), add, mod;

    if (ep < 0) {
        feat(f, -1, errno, "epoll_create1: %s", ps_errno_name(errno));
        return;
    }
    add = epoll_ctl(ep, EPOLL_CTL_ADD, env->server4, &ev) < 0 ? errno : 0;
    /* epoll_ctl(2): EPOLLEXCLUSIVE is refused on EPOLL_CTL_MOD with EINVAL */
    mod = add ? -1 : epoll_ctl(ep, EPOLL_CTL_MOD, env->server4, &ev) < 0 ? errno : 0;
    if (add)
        feat(f, 0, add, "epoll_ctl(EPOLL_CTL_ADD, EPOLLEXCLUSIVE): %s", ps_errno_name(add));
    else
        feat(f, 1, 0, "accepted by EPOLL_CTL_ADD on a listener; EPOLL_CTL_MOD with it: %s",
             mod ? ps_errno_name(mod) : "ok");
    ps__close(ep);
}

static void feat_bind_no_port(struct ps_probe_feature *f, const struct ps__probe_env *env)
{
    struct sockaddr_storage ss;
    int fd, r, before = -1, after = -1, s = -1;

    fd = ps__probe_socket(PS_PROBE_TCP, PS_PA_LO, 0);
    r = fd < 0 ? fd : 0;
    if (r == 0 && setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &(int){1}, sizeof(int)) < 0)
        r = ps__neg_errno();
    if (r == 0) {
        int len = ps__probe_sockaddr(PS_PA_LO, 0, &ss);

        if (bind(fd, (struct sockaddr *)&ss, (socklen_t)len) < 0)
            r = ps__neg_errno();
    }
    if (r == 0)
        r = before = port_of(fd);
    if (r >= 0)
        r = ps__probe_connect(fd, PS_PA_LO, env->port4);
    if (r == 0)
        r = after = port_of(fd);
    if (r >= 0)
        s = ps__probe_accept(env->server4, (unsigned)after);
    if (r < 0)
        feat(f, 0, -r, "%s", ps_strerror(r));
    else
        feat(f, before == 0, 0, "bind(127.0.0.1:0) left the port at %d; connect() then chose %d",
             before, after);
    ps__probe_abort(fd);
    ps__probe_abort(s);
}

void ps__probe_features(const struct ps__probe_env *env, struct ps_probe_result *res)
{
    struct ps_probe_feature *f = res->features;

    feat_reuseport(&f[PS_PF_REUSEPORT], &res->spread);
    feat_reuseport_lb(&f[PS_PF_REUSEPORT_LB]);
    feat_migrate(&f[PS_PF_MIGRATE_REQ], res);
    feat_cbpf(&f[PS_PF_REUSEPORT_CBPF], &res->spread);
    feat_ebpf(&f[PS_PF_REUSEPORT_EBPF]);
    feat_incoming_cpu(&f[PS_PF_INCOMING_CPU], env);
    feat_epollexclusive(&f[PS_PF_EPOLLEXCLUSIVE], env);
    feat_bind_no_port(&f[PS_PF_BIND_NO_PORT], env);
}
