/*
 * migrate.c - does closing a listener under portshare's eBPF program move
 * its connections (SELECT_OR_MIGRATE, Linux >= 5.14), and how many?
 *
 * Two listeners of one reuseport group on 127.0.0.1; the program (the very
 * one the supervisor loads, src/bpf/reuseport_bpf.c) sends every
 * connection to the first.  Then it is told to serve only the second, and
 * the first is closed:
 *   - queued: q connections wait in the first's accept queue;
 *   - in handshake: the first has TCP_DEFER_ACCEPT, the q clients have sent
 *     nothing, so each connection is still a request in its handshake; they
 *     send their first byte after the close, which completes the handshake.
 * Counted: connections accepted from the second listener (migrated) and
 * clients that see a reset.  With tcp_migrate_req=1 the kernel would
 * migrate by itself, so the measurement runs with it at 0 (set in our own
 * network namespace; outside one, the host's value is reported).
 */
#include "probe_internal.h"
#include "reuseport_bpf.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MIGRATE_SYSCTL "/proc/sys/net/ipv4/tcp_migrate_req"

static int sysctl_migrate(int set)
{
    char buf[16] = "";
    int fd = open(MIGRATE_SYSCTL, set >= 0 ? O_WRONLY | O_CLOEXEC : O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -1;
    if (set >= 0) {
        n = write(fd, set ? "1\n" : "0\n", 2);
        close(fd);
        return n == 2 ? set : -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    return n > 0 ? atoi(buf) : -1;
}

static int listener(unsigned port, int backlog, int defer)
{
    struct sockaddr_storage ss;
    int fd, len, r, secs = 10;

    fd = ps__probe_socket(PS_PROBE_TCP, PS_PA_LO, PS_PROBE_REUSEADDR | PS_PROBE_REUSEPORT);
    if (fd < 0)
        return fd;
    len = ps__probe_sockaddr(PS_PA_LO, port, &ss);
    if ((defer && setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) < 0) ||
        bind(fd, (struct sockaddr *)&ss, (socklen_t)len) < 0 || listen(fd, backlog) < 0 ||
        fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        r = ps__neg_errno();
        ps__close(fd);
        return r;
    }
    return fd;
}

static unsigned queue_of(int fd)
{
    unsigned q = 0, lim = 0;

    ps_listen_queue(fd, &q, &lim);
    return q;
}

/* After the close: accept from l1 and look for resets among the clients,
 * until all q are accounted for or 1 s passes without news. */
static void fates(int l1, const int *cfd, int q, int *migrated, int *reset)
{
    struct pollfd *pfd = calloc((size_t)q + 1, sizeof(*pfd));
    int i, fd, ready;
    char b;

    *migrated = *reset = 0;
    if (!pfd)
        return;
    for (i = 0; i < q; i++)
        pfd[i] = (struct pollfd){cfd[i], POLLIN, 0};
    pfd[q] = (struct pollfd){l1, POLLIN, 0};
    while (*migrated + *reset < q) {
        ready = poll(pfd, (nfds_t)q + 1, 1000);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            break;
        for (i = 0; i < q; i++)
            if (pfd[i].fd >= 0 && pfd[i].revents &&
                recv(cfd[i], &b, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == ECONNRESET) {
                (*reset)++;
                pfd[i].fd = -1;
            }
        while ((fd = accept4(l1, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            (*migrated)++;
            ps__probe_abort(fd);
        }
    }
    free(pfd);
}

/* One close under the program: 0 or -errno; *waiting: connections queued
 * (or, handshake, still in their handshake) in l0 when it closed. */
static int one_close(int handshake, int q, int *waiting, int *migrated, int *reset)
{
    static struct ps__rp_bpf b;
    char err[200];
    int l0 = -1, l1 = -1, *cfd, fds[2], i, made = 0, r, tries;
    unsigned port;

    *waiting = *migrated = *reset = 0;
    cfd = calloc((size_t)q, sizeof(*cfd));
    if (!cfd)
        return -ENOMEM;
    r = ps__rp_bpf_open(&b, err, sizeof(err));
    if (r == 0)
        r = ps__probe_free_port(PS_PROBE_TCP, &port);
    if (r == 0)
        r = l0 = listener(port, q + 16, handshake);
    if (r >= 0)
        r = l1 = listener(port, q + 16, 0);
    if (r >= 0)
        r = ps__rp_bpf_attach(&b, l0);
    fds[0] = l0, fds[1] = -1; /* only l0 serves */
    if (r >= 0)
        r = ps__rp_bpf_set(&b, fds, 2);
    for (made = 0; r >= 0 && made < q; made++) {
        r = cfd[made] = ps__probe_socket(PS_PROBE_TCP, PS_PA_LO, 0);
        if (r >= 0 && (r = ps__probe_connect(cfd[made], PS_PA_LO, port)) < 0)
            ps__close(cfd[made]);
    }
    if (r >= 0) {
        /* loopback handshakes are done within microseconds; give them 200 ms */
        for (tries = 0; tries < 200 && !handshake && (int)queue_of(l0) < q; tries++)
            poll(NULL, 0, 1);
        if (handshake)
            poll(NULL, 0, 50);
        *waiting = handshake ? q - (int)queue_of(l0) - (int)queue_of(l1) : (int)queue_of(l0);
        fds[0] = -1, fds[1] = l1; /* as the supervisor does: steer away, then close */
        r = ps__rp_bpf_set(&b, fds, 2);
    }
    if (r >= 0) {
        ps__close(l0);
        l0 = -1;
        for (i = 0; handshake && i < made; i++)
            if (send(cfd[i], "x", 1, MSG_NOSIGNAL) < 0)
                (*reset)++;
        fates(l1, cfd, made, migrated, reset);
    }
    for (i = 0; i < made; i++)
        ps__probe_abort(cfd[i]);
    ps__close(l0);
    ps__close(l1);
    ps__rp_bpf_close(&b);
    free(cfd);
    return r < 0 ? r : 0;
}

void ps__probe_ebpf_migrate(int q, int netns, struct ps_probe_result *res)
{
    struct ps_probe_feature *f = &res->features[PS_PF_SELECT_OR_MIGRATE];
    struct ps_probe_ebpf_migrate *m = &res->ebpf_migrate;
    static struct ps__rp_bpf b;
    char err[200];
    int r;

    memset(m, 0, sizeof(*m));
    r = ps__rp_bpf_open(&b, err, sizeof(err));
    ps__rp_bpf_close(&b);
    if (r < 0) {
        m->err = -r;
        f->supported = r == -EPERM || r == -EACCES ? -1 : 0;
        f->err = -r;
        snprintf(f->detail, sizeof(f->detail), "portshare's eBPF program does not load: %.150s%s",
                 err, r == -EPERM ? " (not allowed: unknown)" : "");
        return;
    }
    m->migrate_req = netns ? sysctl_migrate(0) : sysctl_migrate(-1);
    r = one_close(0, q, &m->queued, &m->queued_migrated, &m->queued_reset);
    if (r == 0)
        r = one_close(1, q, &m->handshakes, &m->handshakes_migrated, &m->handshakes_reset);
    if (r < 0) {
        m->err = -r;
        f->supported = -1;
        f->err = -r;
        snprintf(f->detail, sizeof(f->detail), "the program loads; the measurement failed: %s",
                 ps_strerror(r));
        return;
    }
    f->supported = m->queued_migrated > 0 && m->queued_reset == 0;
    f->err = 0;
    snprintf(f->detail, sizeof(f->detail),
             "closing a listener under portshare's eBPF program (tcp_migrate_req=%d): "
             "%d queued: %d migrated, %d reset; %d in handshake (TCP_DEFER_ACCEPT): %d "
             "migrated, %d reset",
             m->migrate_req, m->queued, m->queued_migrated, m->queued_reset, m->handshakes,
             m->handshakes_migrated, m->handshakes_reset);
}
