/*
 * test_udp_flow.c - the UDP flow program against the real kernel: real
 * reuseport groups of UDP sockets on loopback, the program attached, real
 * datagrams from one client socket per flow; where each datagram lands is
 * read back with recvfrom on each socket of the group.  Needs root (or
 * CAP_BPF and CAP_NET_ADMIN): skipped otherwise, saying so.
 */
#include "ps_test.h"
#include "udp_flow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define NSOCK  8
#define NFLOWS 200

struct group {
    struct ps__udp_flow *f;
    int family, n, port;
    int fd[NSOCK], id[NSOCK];
    long got[NSOCK]; /* datagrams received per socket, all rounds */
};

struct flows {
    int n;
    int fd[NFLOWS];
    int where[NFLOWS]; /* the socket (index in the group) of the last datagram */
};

static struct ps__udp_flow *open_or_skip(unsigned max_flows, unsigned idle_ms)
{
    struct ps__udp_flow *f = NULL;
    char err[1024] = "";
    int r;

    if (geteuid() != 0) {
        print_message("skipped: loading an eBPF program needs root\n");
        skip();
    }
    r = ps__udp_flow_open(&f, max_flows, idle_ms, err, sizeof(err));
    if (r == -EPERM) {
        print_message("skipped: %s\n", err);
        skip();
    }
    if (r != 0)
        print_message("ps__udp_flow_open: %s\n", err);
    assert_int_equal(r, 0);
    return f;
}

static socklen_t loopback(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;

        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof(*a);
    }
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    a6->sin6_addr = in6addr_loopback;
    return sizeof(*a6);
}

static int udp_socket(int family, int port, int reuse)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;

    assert_true(fd >= 0);
    if (reuse)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    if (family == AF_INET6)
        assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)), 0);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -errno;
    }
    return fd;
}

/* n sockets in one group on loopback, the program attached, all added */
static int group_open(struct group *g, struct ps__udp_flow *f, int family, int n)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int i;

    memset(g, 0, sizeof(*g));
    g->f = f;
    g->family = family;
    g->n = n;
    g->fd[0] = udp_socket(family, 0, 1);
    if (g->fd[0] < 0)
        return g->fd[0];
    assert_int_equal(getsockname(g->fd[0], (struct sockaddr *)&ss, &len), 0);
    g->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
    assert_int_equal(ps__udp_flow_attach(f, g->fd[0]), 0);
    for (i = 1; i < n; i++) {
        g->fd[i] = udp_socket(family, g->port, 1);
        assert_true(g->fd[i] >= 0);
    }
    for (i = 0; i < n; i++) {
        int big = 1 << 20; /* a round's datagrams all fit, whatever rmem_default says */

        (void)setsockopt(g->fd[i], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
        g->id[i] = ps__udp_flow_add(f, g->fd[i]);
        assert_true(g->id[i] >= 0);
        assert_int_equal(ps__udp_flow_alive(f, g->id[i]), 1);
    }
    return 0;
}

static void group_close(struct group *g)
{
    int i;

    for (i = 0; i < g->n; i++)
        if (g->fd[i] >= 0)
            close(g->fd[i]);
    ps__udp_flow_close(g->f);
}

/* new flows go to the group's sockets first..first+count-1 */
static void serve(struct group *g, int first, int count)
{
    int ids[NSOCK], i;

    for (i = 0; i < count; i++)
        ids[i] = g->id[first + i];
    assert_int_equal(ps__udp_flow_serve(g->f, ids, count), 0);
}

static void flows_open(struct flows *c, int family, int n)
{
    int i;

    c->n = n;
    for (i = 0; i < n; i++) {
        c->fd[i] = udp_socket(family, 0, 0);
        assert_true(c->fd[i] >= 0);
        c->where[i] = -1;
    }
}

static void flows_close(struct flows *c)
{
    int i;

    for (i = 0; i < c->n; i++)
        close(c->fd[i]);
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Every flow sends one datagram (its index); read them all back from the
 * group's sockets (3 s at most) and note where each landed. */
static void round_trip(struct group *g, struct flows *c)
{
    struct sockaddr_storage to;
    socklen_t len = loopback(g->family, g->port, &to);
    struct pollfd pfd[NSOCK];
    struct timespec t0;
    int i, s, got = 0;

    for (i = 0; i < c->n; i++) {
        c->where[i] = -1;
        assert_int_equal(sendto(c->fd[i], &i, sizeof(i), 0, (struct sockaddr *)&to, len),
                         (ssize_t)sizeof(i));
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got < c->n && ms_since(&t0) < 3000) {
        for (s = 0; s < g->n; s++)
            pfd[s] = (struct pollfd){.fd = g->fd[s], .events = POLLIN};
        if (poll(pfd, (nfds_t)g->n, 100) <= 0)
            continue;
        for (s = 0; s < g->n; s++) {
            int v;

            while (g->fd[s] >= 0 && recv(g->fd[s], &v, sizeof(v), 0) == (ssize_t)sizeof(v)) {
                assert_true(v >= 0 && v < c->n);
                assert_int_equal(c->where[v], -1); /* once */
                c->where[v] = s;
                g->got[s]++;
                got++;
            }
        }
    }
    assert_int_equal(got, c->n);
}

/* how many flows landed on socket s; how many distinct sockets they used */
static int on(const struct flows *c, int s)
{
    int i, n = 0;

    for (i = 0; i < c->n; i++)
        n += c->where[i] == s;
    return n;
}

static void all_within(const struct group *g, const struct flows *c, int first, int count)
{
    int i, s;

    for (i = 0; i < c->n; i++) {
        if (!(c->where[i] >= first && c->where[i] < first + count))
            fprintf(stderr, "flow %d answered on socket %d, expected one of %d..%d\n", i,
                    c->where[i], first, first + count - 1);
        assert_true(c->where[i] >= first && c->where[i] < first + count);
    }
    for (s = first; s < first + count; s++)
        assert_true(on(c, s) > 0); /* spread over all of them */
    (void)g;
}

/* The counters of each socket and of the group say what the rounds did:
 * nflows flows so far, ndgrams datagrams, old of them to old sockets. */
static void check_stats(const struct group *g, const struct flows *a, const struct flows *b,
                        long ndgrams, long old)
{
    struct ps__udp_flow_stats st;
    int s;

    assert_int_equal(ps__udp_flow_walk(g->f), 0);
    for (s = 0; s < g->n; s++) {
        assert_int_equal(ps__udp_flow_stats(g->f, g->id[s], &st), 0);
        assert_int_equal(st.datagrams, g->got[s]);
        assert_int_equal(st.flows, on(a, s) + on(b, s));
        assert_int_equal(st.new_flows, on(a, s) + on(b, s));
        assert_int_equal(st.moved, 0);
        assert_true(ps__udp_flow_idle_ms(g->f, g->id[s]) < 5000);
    }
    assert_int_equal(ps__udp_flow_stats(g->f, -1, &st), 0);
    assert_int_equal(st.flows, a->n + b->n);
    assert_int_equal(st.new_flows, a->n + b->n);
    assert_int_equal(st.datagrams, ndgrams);
    assert_int_equal(st.old_datagrams, old);
    assert_int_equal(st.moved, 0);
    assert_int_equal(st.evicted, 0);
    assert_int_equal(st.unsteered, 0);
}

/* The socket of old flow set a with the most flows: closed (every copy),
 * its flows move to the serving sockets 4..7, spread over more than one;
 * every other old flow stays where it was. */
static void close_one_old(struct group *g, struct flows *a)
{
    struct ps__udp_flow_stats st;
    int before[NFLOWS], k = 0, s, i, moved = 0, used = 0;

    for (s = 1; s < 4; s++)
        if (on(a, s) > on(a, k))
            k = s;
    memcpy(before, a->where, sizeof(before));
    close(g->fd[k]);
    g->fd[k] = -1;
    assert_int_equal(ps__udp_flow_alive(g->f, g->id[k]), 0);
    for (s = 0; s < g->n; s++)
        if (s != k)
            assert_int_equal(ps__udp_flow_alive(g->f, g->id[s]), 1);
    round_trip(g, a);
    for (i = 0; i < a->n; i++) {
        if (before[i] != k) {
            assert_int_equal(a->where[i], before[i]);
            continue;
        }
        assert_true(a->where[i] >= 4 && a->where[i] < 8);
        moved++;
    }
    for (s = 4; s < 8; s++)
        used += on(a, s) > 0;
    assert_true(moved >= 2);
    assert_true(used > 1); /* the salt: not all onto one successor */
    assert_int_equal(ps__udp_flow_walk(g->f), 0);
    assert_int_equal(ps__udp_flow_stats(g->f, -1, &st), 0);
    assert_int_equal(st.moved, moved);
    assert_int_equal(ps__udp_flow_stats(g->f, g->id[k], &st), 0);
    assert_int_equal(st.flows, 0);
}

/* (a) new flows only on the serving half, spread over it; (b) after the
 * serving set changes, every old flow stays on its socket while new flows
 * go to the new half only; (c) an old socket closed: its flows move. */
static void sticky(int family)
{
    struct ps__udp_flow *f = open_or_skip(32768, 60000);
    static struct flows a, b;
    struct group g;
    int first[NFLOWS], i;

    if (group_open(&g, f, family, NSOCK) < 0) {
        ps__udp_flow_close(f);
        print_message("skipped: no %s loopback here\n", family == AF_INET ? "IPv4" : "IPv6");
        skip();
    }
    serve(&g, 0, 4);
    flows_open(&a, family, NFLOWS);
    round_trip(&g, &a);
    all_within(&g, &a, 0, 4);
    memcpy(first, a.where, sizeof(first));

    serve(&g, 4, 4);
    round_trip(&g, &a);
    for (i = 0; i < NFLOWS; i++)
        assert_int_equal(a.where[i], first[i]);
    flows_open(&b, family, NFLOWS);
    round_trip(&g, &b);
    all_within(&g, &b, 4, 4);
    check_stats(&g, &a, &b, 3 * NFLOWS, NFLOWS);

    close_one_old(&g, &a);
    flows_close(&a);
    flows_close(&b);
    group_close(&g);
}

static void test_sticky_ipv4(void **state)
{
    (void)state;
    sticky(AF_INET);
}

static void test_sticky_ipv6(void **state)
{
    (void)state;
    sticky(AF_INET6);
}

/* wait (3 s at most) until the group's first two sockets have had no
 * datagram for ms milliseconds */
static void wait_idle(const struct group *g, int s0, int s1, uint64_t ms)
{
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((ps__udp_flow_idle_ms(g->f, g->id[s0]) < ms ||
            ps__udp_flow_idle_ms(g->f, g->id[s1]) < ms) &&
           ms_since(&t0) < 3000)
        usleep(20 * 1000);
    assert_true(ps__udp_flow_idle_ms(g->f, g->id[s0]) >= ms);
    assert_true(ps__udp_flow_idle_ms(g->f, g->id[s1]) >= ms);
}

/* (d) a flow silent for longer than the idle time leaves an old socket for
 * the serving set; on a serving socket it stays where it is. */
static void test_idle(void **state)
{
    /* idle after 1 s: "not idle" must hold across a loaded machine's
     * pauses between two round trips (200 ms did not, under two suites) */
    struct ps__udp_flow *f = open_or_skip(1024, 1000);
    struct ps__udp_flow_stats st;
    static struct flows a;
    struct group g;
    int before[NFLOWS], i;

    (void)state;
    assert_int_equal(group_open(&g, f, AF_INET, 4), 0);
    assert_int_equal(ps__udp_flow_idle_ms(f, g.id[0]), UINT64_MAX); /* none yet */
    serve(&g, 0, 2);
    flows_open(&a, AF_INET, 40);
    round_trip(&g, &a);
    all_within(&g, &a, 0, 2);
    serve(&g, 2, 2);
    round_trip(&g, &a); /* not idle: they stay */
    all_within(&g, &a, 0, 2);
    wait_idle(&g, 0, 1, 1200); /* 200 ms over: both are known to 100 ms */
    round_trip(&g, &a);        /* idle on old sockets: they move */
    all_within(&g, &a, 2, 2);
    assert_int_equal(ps__udp_flow_stats(f, -1, &st), 0);
    assert_int_equal(st.moved, 40);
    memcpy(before, a.where, sizeof(before));
    wait_idle(&g, 2, 3, 1200);
    round_trip(&g, &a); /* idle on serving sockets: they stay */
    for (i = 0; i < a.n; i++)
        assert_int_equal(a.where[i], before[i]);
    flows_close(&a);
    group_close(&g);
}

/* (f) a table smaller than the flows: every datagram still reaches a
 * socket, and the evictions are counted. */
static void test_table_full(void **state)
{
    struct ps__udp_flow *f = open_or_skip(64, 60000);
    struct ps__udp_flow_stats st;
    static struct flows a;
    struct group g;
    int i;

    (void)state;
    assert_int_equal(group_open(&g, f, AF_INET, 4), 0);
    serve(&g, 0, 2);
    flows_open(&a, AF_INET, NFLOWS);
    round_trip(&g, &a);
    all_within(&g, &a, 0, 2);
    serve(&g, 2, 2);
    /* every datagram received; where, depends on what the LRU kept (sent
     * in the order inserted, each re-inserted flow evicts one not sent
     * yet: likely all of them move) */
    round_trip(&g, &a);
    for (i = 0; i < a.n; i++)
        assert_true(a.where[i] >= 0 && a.where[i] < 4);
    assert_int_equal(ps__udp_flow_walk(f), 0);
    assert_int_equal(ps__udp_flow_stats(f, -1, &st), 0);
    assert_true(st.flows <= 64);
    assert_true(st.evicted >= NFLOWS - 64);
    assert_int_equal(st.datagrams, 2 * NFLOWS);
    assert_int_equal(st.unsteered, 0);
    flows_close(&a);
    group_close(&g);
}

/* The kernel's rules for a sockarray entry: a bound SO_REUSEPORT socket,
 * in one entry of one map only. */
static void test_add_rules(void **state)
{
    struct ps__udp_flow *f = open_or_skip(64, 1000);
    int fd, plain, id;

    (void)state;
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(ps__udp_flow_add(f, fd), -EINVAL); /* not bound */
    close(fd);
    plain = udp_socket(AF_INET, 0, 0);
    assert_int_equal(ps__udp_flow_add(f, plain), -EINVAL); /* no SO_REUSEPORT */
    close(plain);
    fd = udp_socket(AF_INET, 0, 1);
    id = ps__udp_flow_add(f, fd);
    assert_true(id >= 0);
    assert_int_equal(ps__udp_flow_add(f, fd), -EBUSY); /* already in */
    close(fd);
    assert_int_equal(ps__udp_flow_alive(f, id), 0);
    assert_int_equal(ps__udp_flow_serve(f, &(int){PS__FLOW_IDS}, 1), -EINVAL);
    ps__udp_flow_close(f);
}

/* Imports a table must refuse, each with a line saying why, leaving the
 * carried descriptors open (the caller's, to open a fresh table). */
static void carry_refused(int *fds, int n)
{
    struct ps__udp_flow *t = NULL;
    char err[256] = "";
    int i, swap;

    assert_int_equal(ps__udp_flow_import(&t, fds, n, 2048, 500, err, sizeof(err)), -EINVAL);
    assert_null(t);
    print_message("refused: %s\n", err);
    assert_non_null(strstr(err, "map flows has max_entries 1024, 2048 wanted"));
    assert_int_equal(ps__udp_flow_import(&t, fds, n - 1, 1024, 500, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "has 8 maps, this binary's 9"));
    /* ids and last_seen: both arrays of 4096 8-byte values, told apart by
     * their names only */
    swap = fds[1], fds[1] = fds[5], fds[5] = swap;
    assert_int_equal(ps__udp_flow_import(&t, fds, n, 1024, 500, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "map ids is named last_seen"));
    swap = fds[1], fds[1] = fds[5], fds[5] = swap;
    for (i = 0; i < n; i++)
        assert_true(fcntl(fds[i], F_GETFD) >= 0);
}

/* After the import: the table knows each socket's id (find), its counters
 * went on, and a socket added now gets the id after the last one given. */
static void carried_ids(struct group *g, const struct flows *a)
{
    struct ps__udp_flow_stats st;
    int ids[NSOCK + 1], fd[NSOCK + 1], s, id;

    /* first, while the flows are fresh (the table's idle time is 1 s) */
    assert_int_equal(ps__udp_flow_walk(g->f), 0);
    for (s = 0; s < NSOCK; s++) {
        assert_int_equal(ps__udp_flow_stats(g->f, g->id[s], &st), 0);
        assert_int_equal(st.flows, on(a, s)); /* the incarnations read back */
        assert_int_equal(st.datagrams, g->got[s]);
    }
    memcpy(fd, g->fd, sizeof(g->fd));
    fd[NSOCK] = udp_socket(AF_INET, g->port, 1);
    assert_true(fd[NSOCK] >= 0);
    assert_int_equal(ps__udp_flow_find(g->f, fd, NSOCK + 1, ids), NSOCK);
    for (s = 0; s < NSOCK; s++)
        assert_int_equal(ids[s], g->id[s]);
    assert_int_equal(ids[NSOCK], -1);
    id = ps__udp_flow_add(g->f, fd[NSOCK]);
    assert_int_equal(id, g->id[NSOCK - 1] + 1);
    assert_int_equal(ps__udp_flow_find(g->f, fd + NSOCK, 1, ids), 1);
    assert_int_equal(ids[0], id);
    close(fd[NSOCK]);
}

/* The table carried across an exec (upgrade): its maps exported, copies
 * kept and the first table closed (what execve does to it: the group keeps
 * running its program), a second table imported from the copies with
 * another idle time, then attached.  Every flow stays on its socket, the
 * ids and counters go on, new flows go to the serving ids, then to the
 * ones the new table is told, and the new idle time holds. */
static void test_carry(void **state)
{
    int first[NFLOWS], fds[PS__FLOW_NMAPS], i, n, nfd = count_open_fds();
    struct ps__udp_flow *f = open_or_skip(1024, 60000), *f2 = NULL;
    static struct flows a, b, c;
    char err[256] = "";
    struct group g;

    (void)state;
    assert_int_equal(group_open(&g, f, AF_INET, NSOCK), 0);
    serve(&g, 0, 4);
    flows_open(&a, AF_INET, NFLOWS);
    round_trip(&g, &a);
    memcpy(first, a.where, sizeof(first));

    assert_int_equal(ps__udp_flow_export(f, fds, PS__FLOW_NMAPS - 1), -ENOSPC);
    n = ps__udp_flow_export(f, fds, PS__FLOW_NMAPS);
    assert_int_equal(n, PS__FLOW_NMAPS);
    for (i = 0; i < n; i++)
        assert_true((fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0)) >= 0);
    ps__udp_flow_close(f);
    carry_refused(fds, n);
    i = ps__udp_flow_import(&f2, fds, n, 1024, 1000, err, sizeof(err));
    if (i != 0)
        print_message("ps__udp_flow_import: %s\n", err);
    assert_int_equal(i, 0);
    for (i = 0; i < n; i++)
        assert_int_equal(fcntl(fds[i], F_GETFD), -1); /* closed: f2 has its own */
    g.f = f2;
    assert_int_equal(ps__udp_flow_attach(f2, g.fd[0]), 0);
    round_trip(&g, &a);
    for (i = 0; i < NFLOWS; i++)
        assert_int_equal(a.where[i], first[i]);
    carried_ids(&g, &a);

    flows_open(&b, AF_INET, 40);
    round_trip(&g, &b);
    all_within(&g, &b, 0, 4); /* the serving list read back */
    serve(&g, 4, 4);
    /* new flows, opened while b's sockets still hold their ports: a
     * client socket given a port b just let go would be b's flow again,
     * still on its old socket (one run in ten did) */
    flows_open(&c, AF_INET, 40);
    flows_close(&b);
    round_trip(&g, &c);
    all_within(&g, &c, 4, 4);
    /* a socket's last datagram is known to 100 ms, and so is a flow's:
     * 300 ms over the idle time, so that every flow is idle too */
    wait_idle(&g, 0, 1, 1300);
    wait_idle(&g, 2, 3, 1300);
    round_trip(&g, &a); /* idle after 1 s now, not 60 s: they move */
    all_within(&g, &a, 4, 4);
    flows_close(&a);
    flows_close(&c);
    group_close(&g);
    assert_int_equal(count_open_fds(), nfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sticky_ipv4), cmocka_unit_test(test_sticky_ipv6),
        cmocka_unit_test(test_idle),        cmocka_unit_test(test_table_full),
        cmocka_unit_test(test_add_rules),   cmocka_unit_test(test_carry),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
