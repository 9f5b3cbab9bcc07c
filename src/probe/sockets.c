/*
 * sockets.c - the probe's socket helpers: addresses of the experiment
 * families, sockets with the options under test, a port nobody holds, and
 * connect/accept/abort bounded by the sockets' own timeouts.
 */
#include "probe_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int ps__probe_sockaddr(enum ps_probe_addr a, unsigned port, void *ss)
{
    const struct ps_probe_addr_info *ai = ps_probe_addr_info(a);

    memset(ss, 0, sizeof(struct sockaddr_storage));
    if (ai->family == AF_INET) {
        struct sockaddr_in *sin = ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)port);
        inet_pton(AF_INET, ai->text, &sin->sin_addr);
        return (int)sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)port);
        inet_pton(AF_INET6, ai->text, &sin6->sin6_addr);
        return (int)sizeof(*sin6);
    }
}

int ps__probe_set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? ps__neg_errno() : 0;
}

int ps__probe_socket(int proto, enum ps_probe_addr a, int opts)
{
    const struct ps_probe_addr_info *ai = ps_probe_addr_info(a);
    int type = (proto == PS_PROBE_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC;
    struct timeval tv = {1, 0}; /* every blocking call below is bounded */
    int fd, r = 0;

    fd = socket(ai->family, type, 0);
    if (fd < 0)
        return ps__neg_errno();
    if (opts & PS_PROBE_REUSEADDR)
        r = ps__probe_set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (r == 0 && (opts & PS_PROBE_REUSEPORT))
        r = ps__probe_set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (r == 0 && ai->v6only >= 0)
        r = ps__probe_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, ai->v6only);
    if (r == 0 && (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
                   setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0))
        r = ps__neg_errno();
    if (r < 0)
        goto fail;
    return fd;
fail:
    ps__close(fd);
    return r;
}

int ps__probe_bind(int fd, enum ps_probe_addr a, unsigned port)
{
    struct sockaddr_storage ss;
    int len = ps__probe_sockaddr(a, port, &ss);

    return bind(fd, (struct sockaddr *)&ss, (socklen_t)len) < 0 ? ps__neg_errno() : 0;
}

int ps__probe_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return ps__neg_errno();
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int ps__probe_free_port(int proto, unsigned *port)
{
    enum ps_probe_addr wild = PS_PA_ANY6;
    int fd, r;

    fd = ps__probe_socket(proto, wild, 0);
    if (fd == -EAFNOSUPPORT) { /* no IPv6: the IPv4 wildcard is all there is */
        wild = PS_PA_ANY4;
        fd = ps__probe_socket(proto, wild, 0);
    }
    if (fd < 0)
        return fd;
    r = ps__probe_bind(fd, wild, 0);
    if (r == 0)
        r = ps__probe_local_port(fd);
    ps__close(fd);
    if (r < 0)
        return r;
    *port = (unsigned)r;
    return 0;
}

int ps__probe_try(int proto, enum ps_probe_addr a, int opts, unsigned port, short *bind_err,
                  short *listen_err)
{
    int fd = ps__probe_socket(proto, a, opts), r;

    if (fd < 0)
        return fd;
    r = ps__probe_bind(fd, a, port);
    *bind_err = (short)-r;
    *listen_err = PS_PROBE_NA;
    if (r == 0 && proto == PS_PROBE_TCP)
        *listen_err = listen(fd, 16) < 0 ? (short)errno : 0;
    ps__close(fd);
    return 0;
}

/* ---- connections ------------------------------------------------------------- */

int ps__probe_connect(int fd, enum ps_probe_addr a, unsigned port)
{
    struct sockaddr_storage ss;
    int len = ps__probe_sockaddr(a, port, &ss), err = 0;
    socklen_t elen = sizeof(err);
    struct pollfd pfd = {fd, POLLOUT, 0};

    if (connect(fd, (struct sockaddr *)&ss, (socklen_t)len) == 0)
        return 0;
    if (errno != EINTR && errno != EINPROGRESS)
        return ps__neg_errno();
    /* interrupted: the handshake goes on, wait for its outcome */
    while (poll(&pfd, 1, 1000) < 0)
        if (errno != EINTR)
            return ps__neg_errno();
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
        return ps__neg_errno();
    return err ? -err : 0;
}

/* Accept the connection whose client has local port peer_port; others that
 * may be queued (left by a failed experiment) are aborted. */
int ps__probe_accept(int lfd, unsigned peer_port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, p;

    for (;;) {
        len = sizeof(ss);
        fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0)
            return errno == EAGAIN ? -ETIMEDOUT : ps__neg_errno();
        p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if ((unsigned)p == peer_port)
            return fd;
        ps__probe_abort(fd);
    }
}

/* Read until the peer's FIN: after it, a socket that already sent its own
 * FIN is in TIME_WAIT.  Bounded by the socket's 1 s receive timeout. */
int ps__probe_wait_eof(int fd)
{
    char buf[64];
    ssize_t n;

    for (;;) {
        n = read(fd, buf, sizeof(buf));
        if (n == 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return errno == EAGAIN ? -ETIMEDOUT : ps__neg_errno();
    }
}

/* Close with a reset instead of a FIN: no TIME_WAIT left behind. */
void ps__probe_abort(int fd)
{
    struct linger lg = {1, 0};

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    ps__close(fd);
}
