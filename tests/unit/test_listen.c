/*
 * test_listen.c - listeners and reuseport groups on loopback, checked with
 * getsockopt/fcntl/getsockname against what the kernel really set.
 */
#include "ps_test.h"

#include "core.h"
#include "portshare.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

static char err[256];

static void parse(const char *text, struct ps_spec *spec)
{
    int r = ps_spec_parse(text, spec, err, sizeof(err));

    if (r != 0)
        fail_msg("'%s': %s", text, err);
}

static int sockopt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

static unsigned bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* A blocking TCP client connected to 127.0.0.1:port (or ::1 when v6). */
static int connect_to(int family, unsigned port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_addr = in6addr_loopback;
        len = sizeof(*sin6);
    }
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
    return fd;
}

static int have_ipv6(void)
{
    struct sockaddr_in6 a;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

    if (fd < 0)
        return 0;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void test_tcp_single(void **state)
{
    struct ps_spec spec;
    int fd;

    (void)state;
    parse("tcp://127.0.0.1:0?backlog=32", &spec);
    fd = ps_listen_open(&spec, 0);
    assert_true(fd >= 0);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEADDR), 1);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEPORT), 1);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_ACCEPTCONN), 1);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_TYPE), SOCK_STREAM);
    assert_true(is_cloexec(fd));
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    assert_int_equal(ps_is_socket(fd, AF_INET, SOCK_STREAM, 1), 1);
    close(fd);

    fd = ps_listen_open(&spec, PS_LISTEN_NONBLOCK | PS_LISTEN_NO_REUSEPORT);
    assert_true(fd >= 0);
    assert_int_not_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEPORT), 0);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEADDR), 1);
    close(fd);
}

/* defer=N: the kernel keeps a connected client out of the accept queue
 * until it sends; without it the connection is accepted at once. */
static void test_tcp_defer_accept(void **state)
{
    struct ps_spec spec;
    int fd, c, a;

    (void)state;
    parse("tcp://127.0.0.1:0", &spec);
    assert_int_equal(spec.defer_accept, -1); /* not given */
    fd = ps_listen_open(&spec, PS_LISTEN_NONBLOCK);
    assert_true(fd >= 0);
    assert_int_equal(sockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT), 0);
    c = connect_to(AF_INET, bound_port(fd));
    a = accept(fd, NULL, NULL);
    assert_true(a >= 0); /* the handshake alone queues it */
    close(a);
    close(c);
    close(fd);

    parse("tcp://127.0.0.1:0?defer=2", &spec);
    assert_int_equal(spec.defer_accept, 2);
    fd = ps_listen_open(&spec, PS_LISTEN_NONBLOCK);
    assert_true(fd >= 0);
    /* the kernel stores SYN-ACK retransmits and reports them as seconds */
    assert_true(sockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT) >= 2);
    c = connect_to(AF_INET, bound_port(fd)); /* connect() returns: handshake done */
    assert_int_equal(accept(fd, NULL, NULL), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(send(c, "x", 1, 0), 1);
    {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
    }
    a = accept(fd, NULL, NULL);
    assert_true(a >= 0);
    close(a);
    close(c);
    close(fd);
}

static void test_group_shares_one_port(void **state)
{
    struct ps_spec spec;
    int fds[4], i, c, a;
    unsigned port;

    (void)state;
    parse("tcp://127.0.0.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 4, fds, PS_LISTEN_NONBLOCK), 0);
    port = bound_port(fds[0]);
    assert_true(port > 0);
    assert_int_equal(spec.port, port); /* written back for later additions */
    assert_int_equal(ntohs(((struct sockaddr_in *)&spec.addr)->sin_port), port);
    for (i = 0; i < 4; i++) {
        assert_int_equal(bound_port(fds[i]), port);
        assert_int_equal(sockopt(fds[i], SOL_SOCKET, SO_REUSEPORT), 1);
        assert_int_equal(sockopt(fds[i], SOL_SOCKET, SO_REUSEADDR), 1);
        assert_true(is_cloexec(fds[i]));
        assert_int_not_equal(fcntl(fds[i], F_GETFL) & O_NONBLOCK, 0);
    }
    /* a fifth member joins later with the learned port */
    a = ps_listen_open(&spec, 0);
    assert_true(a >= 0);
    assert_int_equal(bound_port(a), port);
    close(a);

    /* the group really serves: a client lands on one of the four */
    c = connect_to(AF_INET, port);
    {
        struct pollfd p[4];
        for (i = 0; i < 4; i++) {
            p[i].fd = fds[i];
            p[i].events = POLLIN;
        }
        assert_int_equal(poll(p, 4, 2000), 1);
    }
    close(c);
    for (i = 0; i < 4; i++)
        close(fds[i]);
}

/* Child: room for exactly one more descriptor, so the group's second socket
 * fails with EMFILE after the first was bound; nothing may stay open. */
static void fail_halfway(void *arg)
{
    struct rlimit rl;
    struct ps_spec spec;
    int fds[3], before, probe;

    (void)arg;
    CHILD_CHECK(ps_spec_parse("tcp://127.0.0.1:0", &spec, NULL, 0) == 0);
    before = count_open_fds();
    /* descriptors are allocated lowest-first: the lowest free one plus one
     * is a limit that leaves exactly one descriptor to open */
    probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(probe >= 0);
    close(probe);
    rl.rlim_cur = rl.rlim_max = (rlim_t)probe + 1;
    CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    CHILD_CHECK(ps_listen_group_open(&spec, 3, fds, 0) == -EMFILE);
    CHILD_CHECK(fds[0] == -1 && fds[1] == -1 && fds[2] == -1);
    CHILD_CHECK(count_open_fds() == before);
}

static void test_group_errors(void **state)
{
    struct ps_spec spec;
    int fds[2] = {-7, -7}, before = count_open_fds();

    (void)state;
    parse("tcp://127.0.0.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 0, fds, 0), -EINVAL);
    parse("tcp://127.0.0.1:0?reuse=shared", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 2, fds, 0), -EINVAL);
    parse("unix:@ps-unit-group", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 2, fds, 0), -EINVAL);
    /* 192.0.2.1 (TEST-NET) is no local address */
    parse("tcp://192.0.2.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 2, fds, 0), -EADDRNOTAVAIL);
    assert_int_equal(fds[0], -1);
    assert_int_equal(fds[1], -1);
    assert_int_equal(count_open_fds(), before);
    run_in_child(fail_halfway, NULL);
}

static void test_second_bind_without_reuseport_fails(void **state)
{
    struct ps_spec spec, other;
    int fd, fd2;

    (void)state;
    parse("tcp://127.0.0.1:0?reuse=shared", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEPORT), 0);
    assert_int_equal(ps_listen_open(&spec, 0), -EADDRINUSE);
    close(fd);

    /* a reuseport group does not let a socket without SO_REUSEPORT in */
    parse("tcp://127.0.0.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    assert_int_equal(ps_listen_open(&spec, PS_LISTEN_NO_REUSEPORT), -EADDRINUSE);
    /* ...nor a dual-stack wildcard on the same port */
    if (have_ipv6()) {
        char text[64];
        snprintf(text, sizeof(text), "tcp://[::]:%u?reuse=shared", spec.port);
        parse(text, &other);
        fd2 = ps_listen_open(&other, 0);
        assert_int_equal(fd2, -EADDRINUSE);
    }
    close(fd);
}

static void test_udp(void **state)
{
    struct ps_spec spec;
    int fds[2];

    (void)state;
    parse("udp://127.0.0.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 2, fds, 0), 0);
    assert_int_equal(bound_port(fds[0]), bound_port(fds[1]));
    assert_int_equal(sockopt(fds[0], SOL_SOCKET, SO_TYPE), SOCK_DGRAM);
    assert_int_equal(sockopt(fds[0], SOL_SOCKET, SO_REUSEPORT), 1);
    assert_int_equal(sockopt(fds[0], SOL_SOCKET, SO_REUSEADDR), 0); /* TCP only */
    assert_int_equal(ps_is_socket(fds[1], AF_INET, SOCK_DGRAM, 0), 1);
    close(fds[0]);
    close(fds[1]);
}

static void test_ipv6_v6only(void **state)
{
    struct ps_spec spec;
    int fd, c;

    (void)state;
    if (!have_ipv6())
        skip();
    parse("tcp://[::1]:0?v6only=on", &spec);
    fd = ps_listen_open(&spec, 0);
    assert_true(fd >= 0);
    assert_int_equal(sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY), 1);
    assert_int_equal(ps_is_socket(fd, AF_INET6, SOCK_STREAM, 1), 1);
    close(fd);

    /* [::] with v6only off really is dual-stack: an IPv4 client gets in */
    parse("tcp://[::]:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    assert_int_equal(sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY), 0);
    c = connect_to(AF_INET, spec.port);
    close(c);
    c = connect_to(AF_INET6, spec.port);
    close(c);
    close(fd);

    /* with v6only on, the IPv4 side of the port stays free */
    parse("tcp://[::]:0?v6only=on", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    {
        struct ps_spec v4;
        char text[64];
        int fd4;
        snprintf(text, sizeof(text), "tcp://0.0.0.0:%u?reuse=shared", spec.port);
        parse(text, &v4);
        fd4 = ps_listen_open(&v4, 0);
        assert_true(fd4 >= 0);
        close(fd4);
    }
    close(fd);
}

static void test_port_owner(void **state)
{
    struct ps_spec spec;
    char comm[64], want[64];
    pid_t pid = 0;
    int fd;
    FILE *f;

    (void)state;
    f = fopen("/proc/self/comm", "r");
    assert_non_null(f);
    assert_non_null(fgets(want, sizeof(want), f));
    fclose(f);
    want[strcspn(want, "\n")] = '\0';

    parse("tcp://127.0.0.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    assert_int_equal(ps_port_owner(&spec, &pid, comm, sizeof(comm)), 0);
    assert_int_equal(pid, getpid());
    assert_string_equal(comm, want);
    close(fd);
    /* released: nobody holds it any more */
    assert_int_equal(ps_port_owner(&spec, &pid, comm, sizeof(comm)), -ENOENT);

    parse("udp://127.0.0.1:0", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    pid = 0;
    assert_int_equal(ps_port_owner(&spec, &pid, NULL, 0), 0);
    assert_int_equal(pid, getpid());
    close(fd);

    parse("unix:@ps-unit-owner", &spec);
    assert_int_equal(ps_port_owner(&spec, &pid, comm, sizeof(comm)), -ENOENT);
}

/* Across address families only real conflicts name a holder. */
static void test_port_owner_families(void **state)
{
    struct ps_spec held, asked;
    char text[64];
    pid_t pid = 0;
    int fd;

    (void)state;
    if (!have_ipv6())
        skip();
    /* 0.0.0.0:P does not stop [::1]:P from binding: nobody to blame */
    parse("tcp://0.0.0.0:0", &held);
    assert_int_equal(ps_listen_group_open(&held, 1, &fd, 0), 0);
    snprintf(text, sizeof(text), "tcp://[::1]:%u?reuse=shared", held.port);
    parse(text, &asked);
    assert_int_equal(ps_port_owner(&asked, &pid, NULL, 0), -ENOENT);
    /* ...but it does stop the dual-stack [::]:P */
    snprintf(text, sizeof(text), "tcp://[::]:%u", held.port);
    parse(text, &asked);
    assert_int_equal(ps_port_owner(&asked, &pid, NULL, 0), 0);
    assert_int_equal(pid, getpid());
    close(fd);

    /* an IPv6 socket on ::ffff:127.0.0.1 holds 127.0.0.1:P */
    parse("tcp://[::ffff:127.0.0.1]:0", &held);
    assert_int_equal(ps_listen_group_open(&held, 1, &fd, 0), 0);
    snprintf(text, sizeof(text), "tcp://127.0.0.1:%u", held.port);
    parse(text, &asked);
    pid = 0;
    assert_int_equal(ps_port_owner(&asked, &pid, NULL, 0), 0);
    assert_int_equal(pid, getpid());
    close(fd);
}

/* Wait (bounded) until the listener's queue holds want connections. */
static unsigned wait_queued(int fd, unsigned want, unsigned *limit)
{
    struct timespec ts = {0, 5 * 1000 * 1000};
    unsigned queued = 0;
    int i;

    for (i = 0; i < 200; i++) {
        assert_int_equal(ps_listen_queue(fd, &queued, limit), 0);
        if (queued == want)
            break;
        nanosleep(&ts, NULL);
    }
    return queued;
}

static void test_listen_queue(void **state)
{
    struct ps_spec spec;
    unsigned queued = 99, limit = 0;
    int fd, c[3], i, a, other;

    (void)state;
    parse("tcp://127.0.0.1:0?backlog=7", &spec);
    assert_int_equal(ps_listen_group_open(&spec, 1, &fd, 0), 0);
    assert_int_equal(ps_listen_queue(fd, &queued, &limit), 0);
    assert_int_equal(queued, 0);
    assert_int_equal(limit, 7);
    for (i = 0; i < 3; i++)
        c[i] = connect_to(AF_INET, spec.port);
    assert_int_equal(wait_queued(fd, 3, &limit), 3);
    a = accept(fd, NULL, NULL);
    assert_true(a >= 0);
    assert_int_equal(wait_queued(fd, 2, &limit), 2);
    close(a);
    for (i = 0; i < 3; i++)
        close(c[i]);
    close(fd);

    /* not a TCP listener */
    parse("udp://127.0.0.1:0", &spec);
    other = ps_listen_open(&spec, 0);
    assert_int_equal(ps_listen_queue(other, &queued, &limit), -EOPNOTSUPP);
    close(other);
    other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(ps_listen_queue(other, &queued, &limit), -EOPNOTSUPP);
    close(other);
    parse("unix:@ps-unit-queue", &spec);
    other = ps_listen_open(&spec, 0);
    assert_true(other >= 0);
    assert_int_equal(ps_listen_queue(other, &queued, &limit), -EOPNOTSUPP);
    close(other);
    assert_int_equal(ps_listen_queue(-1, &queued, &limit), -EBADF);
}

static void test_unix_path(void **state)
{
    char dir[64], text[200], path[128];
    struct ps_spec spec;
    struct stat st;
    int fd, fd2, c;
    struct sockaddr_un un;

    (void)state;
    make_temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/s.sock", dir);
    snprintf(text, sizeof(text), "unix:%s?mode=0600", path);
    parse(text, &spec);
    fd = ps_listen_open(&spec, 0);
    assert_true(fd >= 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(ps_is_socket(fd, AF_UNIX, SOCK_STREAM, 1), 1);
    assert_true(is_cloexec(fd));

    /* a live listener is not "stale": the second bind fails, the path stays */
    assert_int_equal(ps_listen_open(&spec, 0), -EADDRINUSE);
    assert_int_equal(stat(path, &st), 0);
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, path);
    c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&un, sizeof(un)), 0);
    close(c);

    /* closed without unlink: the path is stale and is replaced */
    close(fd);
    fd2 = ps_listen_open(&spec, 0);
    assert_true(fd2 >= 0);
    close(fd2);

    /* a regular file at the path is never removed */
    unlink(path);
    close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    assert_int_equal(ps_listen_open(&spec, 0), -EADDRINUSE);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    rm_tree(dir);
}

static void test_unix_abstract(void **state)
{
    struct ps_spec spec;
    char text[64];
    int fd;

    (void)state;
    snprintf(text, sizeof(text), "unix:@ps-unit-%ld", (long)getpid());
    parse(text, &spec);
    fd = ps_listen_open(&spec, 0);
    assert_true(fd >= 0);
    assert_int_equal(ps_is_socket(fd, AF_UNIX, SOCK_STREAM, 1), 1);
    assert_int_equal(ps_listen_open(&spec, 0), -EADDRINUSE);
    close(fd);
}

/* Thread: files created while unix sockets with mode= are bound get this
 * process's umask (022), never the socket's: counts the ones that did not. */
static void *create_files(void *arg)
{
    const char *dir = arg;
    char path[160];
    struct stat st;
    long wrong = 0;
    int i, fd;

    for (i = 0; i < 3000; i++) {
        snprintf(path, sizeof(path), "%s/f", dir);
        fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 0777) != 0644)
            wrong++;
        if (fd >= 0)
            close(fd);
        unlink(path);
    }
    return (void *)wrong;
}

/* mode= changes nothing process-wide: another thread's files keep the
 * umask (it was set around bind(2), and a file created meanwhile got the
 * socket's mode). */
static void test_unix_mode_leaves_umask(void **state)
{
    char dir[64], text[200];
    struct ps_spec spec;
    struct stat st;
    pthread_t t;
    void *wrong;
    mode_t old = umask(022);
    int i, fd;

    (void)state;
    make_temp_dir(dir, sizeof(dir));
    snprintf(text, sizeof(text), "unix:%s/m.sock?mode=0600", dir);
    parse(text, &spec);
    assert_int_equal(pthread_create(&t, NULL, create_files, dir), 0);
    for (i = 0; i < 3000; i++) {
        fd = ps_listen_open(&spec, 0);
        assert_true(fd >= 0);
        assert_int_equal(stat(spec.host, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        close(fd);
        unlink(spec.host);
    }
    assert_int_equal(pthread_join(t, &wrong), 0);
    assert_int_equal((long)wrong, 0);
    assert_int_equal(umask(old), 022);
    rm_tree(dir);
}

/* ---- the core's listener group ------------------------------------------------ */

/* Which of fds[0..n-1] holds the connection just made (-1: none). */
static int landed(const int *fds, int n)
{
    struct pollfd p[8];
    int i;

    for (i = 0; i < n; i++)
        p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    if (poll(p, (nfds_t)n, 2000) != 1)
        return -1;
    for (i = 0; i < n; i++)
        if (p[i].revents) {
            int c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0)
                close(c);
            return i;
        }
    return -1;
}

/* A classic BPF program that returns the kernel's index idx, then one
 * client: the socket it lands on is the kernel's member idx. */
static int member_at(const struct ps__lgroup *g, unsigned idx, const int *all, int nall)
{
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, idx)};
    struct sock_fprog prog = {1, code};
    int c;

    assert_int_equal(
        setsockopt(g->fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)), 0);
    c = connect_to(AF_INET, g->spec.port);
    idx = (unsigned)landed(all, nall);
    close(c);
    return (int)idx;
}

/* slot's kernel index as the group models it */
static unsigned kindex(const struct ps__lgroup *g, int slot)
{
    int kidx[PS__GROUP_MAX], k;

    ps__lgroup_kernel_indexes(g, kidx);
    for (k = 0; k < ps__lgroup_listening(g) && g->order[k] != slot; k++)
        ;
    assert_true(k < ps__lgroup_listening(g));
    return (unsigned)kidx[k];
}

static void test_lgroup_foreign_order(void **state)
{
    static struct ps__lgroup g;
    struct ps_spec spec;
    int all[8], foreign, i;

    (void)state;
    parse("tcp://127.0.0.1:0", &spec);
    ps__lgroup_init(&g, &spec, 0);
    g.by_index = 1;
    assert_int_equal(ps__lgroup_open(&g, 2, 1, err, sizeof(err)), 0);
    /* another socket joins the port (ours here, but not the group's) */
    foreign = ps_listen_open(&g.spec, 0);
    assert_true(foreign >= 0);
    assert_int_equal(ps__lgroup_foreign_sync(&g), 1);
    assert_int_equal(g.nforeign, 1);
    /* a new slot's socket joins after it: index 3, not 2 */
    assert_int_equal(ps__lgroup_grow(&g, 3, err, sizeof(err)), 0);
    for (i = 0; i < 3; i++)
        all[i] = g.fds[i];
    all[3] = foreign;
    assert_int_equal(kindex(&g, 2), 3);
    assert_int_equal(member_at(&g, kindex(&g, 2), all, 4), 2);
    assert_int_equal(member_at(&g, kindex(&g, 0), all, 4), 0);
    /* it leaves: the last member (slot 2) takes its index */
    close(foreign);
    assert_int_equal(ps__lgroup_foreign_sync(&g), 1);
    assert_int_equal(g.nforeign, 0);
    assert_int_equal(kindex(&g, 2), 2);
    assert_int_equal(member_at(&g, 2, all, 3), 2);
    /* one of ours shut down and listening again: it left, the last took
     * its place, and it joined again at the end */
    {
        unsigned queued;
        assert_int_equal(ps__lgroup_shutdown(&g, 0, &queued), 0);
        assert_int_equal(ps__lgroup_listening(&g), 2);
        assert_int_equal(ps__lgroup_relisten(&g, 0), 1);
    }
    assert_int_equal(kindex(&g, 0), 2);
    assert_int_equal(member_at(&g, kindex(&g, 0), all, 3), 0);
    assert_int_equal(member_at(&g, kindex(&g, 2), all, 3), 2);
    ps__lgroup_close(&g);
}

/* Child: a grow that runs out of descriptors half way closes what it
 * opened; with the soft limit raised the same grow succeeds. */
static void grow_halfway(void *arg)
{
    static struct ps__lgroup g;
    struct ps_spec spec;
    struct rlimit rl;
    int before, probe;

    (void)arg;
    CHILD_CHECK(ps_spec_parse("tcp://127.0.0.1:0", &spec, NULL, 0) == 0);
    ps__lgroup_init(&g, &spec, 0);
    CHILD_CHECK(ps__lgroup_open(&g, 2, 0, NULL, 0) == 0);
    before = count_open_fds();
    probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(probe >= 0);
    close(probe);
    CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rl.rlim_cur = (rlim_t)probe + 2; /* two more, not four */
    CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    CHILD_CHECK(ps__lgroup_grow(&g, 6, NULL, 0) == -EMFILE);
    CHILD_CHECK(g.nfds == 2 && g.order[0] == 0 && g.order[1] == 1);
    CHILD_CHECK(count_open_fds() == before);
    rl.rlim_cur = rl.rlim_max;
    CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    CHILD_CHECK(ps__lgroup_grow(&g, 6, NULL, 0) == 0 && g.nfds == 6);
    ps__lgroup_close(&g);
}

static void test_lgroup_grow_all_or_nothing(void **state)
{
    (void)state;
    run_in_child(grow_halfway, NULL);
}

/* A port where another socket already listens with SO_REUSEPORT is
 * refused: it would get a share of the group's connections. */
static void test_group_refuses_foreign(void **state)
{
    struct ps_spec spec;
    int fds[2], other, before;

    (void)state;
    parse("tcp://127.0.0.1:0", &spec);
    other = ps_listen_open(&spec, 0);
    assert_true(other >= 0);
    spec.port = bound_port(other);
    ((struct sockaddr_in *)&spec.addr)->sin_port = htons((uint16_t)spec.port);
    before = count_open_fds();
    assert_int_equal(ps_listen_group_open(&spec, 2, fds, 0), -EADDRINUSE);
    assert_int_equal(count_open_fds(), before);
    close(other);
}

/* What spec a socket answers to, from the socket alone. */
static void test_spec_of_fd(void **state)
{
    struct ps_spec spec, got;
    int fd;

    (void)state;
    parse("tcp://127.0.0.1:0?backlog=77", &spec);
    fd = ps_listen_open(&spec, 0);
    assert_true(fd >= 0);
    assert_int_equal(ps__spec_of_fd(fd, &got), 0);
    assert_int_equal(got.proto, PS_PROTO_TCP);
    assert_string_equal(got.host, "127.0.0.1");
    assert_int_equal(got.port, bound_port(fd));
    assert_int_equal(got.reuse, PS_REUSE_PORT);
    assert_int_equal(got.backlog, 77);
    assert_true(strncmp(got.text, "tcp://127.0.0.1:", 16) == 0);
    close(fd);
    parse("udp://[::1]:0?v6only=on&reuse=shared", &spec);
    fd = ps_listen_open(&spec, 0);
    if (fd >= 0) { /* no IPv6 here: skipped */
        assert_int_equal(ps__spec_of_fd(fd, &got), 0);
        assert_int_equal(got.proto, PS_PROTO_UDP);
        assert_string_equal(got.host, "::1");
        assert_int_equal(got.v6only, 1);
        assert_int_equal(got.reuse, PS_REUSE_SHARED);
        close(fd);
    }
    parse("unix:@ps-unit-specfd", &spec);
    fd = ps_listen_open(&spec, 0);
    assert_true(fd >= 0);
    assert_int_equal(ps__spec_of_fd(fd, &got), 0);
    assert_int_equal(got.proto, PS_PROTO_UNIX);
    assert_string_equal(got.host, "@ps-unit-specfd");
    assert_string_equal(got.text, "unix:@ps-unit-specfd");
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_single),
        cmocka_unit_test(test_tcp_defer_accept),
        cmocka_unit_test(test_group_shares_one_port),
        cmocka_unit_test(test_group_errors),
        cmocka_unit_test(test_second_bind_without_reuseport_fails),
        cmocka_unit_test(test_udp),
        cmocka_unit_test(test_ipv6_v6only),
        cmocka_unit_test(test_port_owner),
        cmocka_unit_test(test_port_owner_families),
        cmocka_unit_test(test_listen_queue),
        cmocka_unit_test(test_unix_path),
        cmocka_unit_test(test_unix_abstract),
        cmocka_unit_test(test_unix_mode_leaves_umask),
        cmocka_unit_test(test_lgroup_foreign_order),
        cmocka_unit_test(test_lgroup_grow_all_or_nothing),
        cmocka_unit_test(test_group_refuses_foreign),
        cmocka_unit_test(test_spec_of_fd),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
