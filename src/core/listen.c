/*
 * listen.c - listening sockets: one socket, or a SO_REUSEPORT group of them.
 *
 * Option order matters: SO_REUSEADDR and SO_REUSEPORT must be set before
 * bind(2) (man 7 socket), IPV6_V6ONLY too (man 7 ipv6), and all sockets of a
 * reuseport group must belong to the same effective UID, so groups are
 * created before any privilege drop.
 */
#include "core.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int setopt_int(int fd, int level, int name, int value)
{
    if (setsockopt(fd, level, name, &value, sizeof(value)) < 0)
        return ps__neg_errno();
    return 0;
}

/* A path that is a socket with no listener behind it is left over from a
 * process that died; remove it so bind() can succeed.  A live one stays and
 * bind() reports EADDRINUSE. */
static void remove_stale_unix(const struct ps_spec *spec)
{
    struct stat st;
    int probe;

    if (spec->host[0] == '@' || lstat(spec->host, &st) < 0 || !S_ISSOCK(st.st_mode))
        return;
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return;
    if (connect(probe, (const struct sockaddr *)&spec->addr, spec->addrlen) < 0 &&
        errno == ECONNREFUSED)
        unlink(spec->host);
    ps__close(probe);
}

static int socket_type(const struct ps_spec *spec)
{
    return spec->proto == PS_PROTO_UDP ? SOCK_DGRAM : SOCK_STREAM;
}

static int configure(int fd, const struct ps_spec *spec, int flags)
{
    int family = spec->addr.ss_family;
    int r;

    if (family == AF_UNIX)
        return 0;
    if (spec->proto == PS_PROTO_TCP) {
        /* restart while old connections sit in TIME_WAIT */
        r = setopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (r < 0)
            return r;
    }
    if (spec->proto == PS_PROTO_TCP && spec->defer_accept > 0) {
        /* the kernel keeps a handshake out of the accept queue until data
         * arrives (or about this many seconds of SYN-ACK retransmits) */
        r = setopt_int(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, spec->defer_accept);
        if (r < 0)
            return r;
    }
    if (spec->reuse == PS_REUSE_PORT && !(flags & PS_LISTEN_NO_REUSEPORT)) {
        r = ps__os_set_reuseport(fd);
        if (r < 0)
            return r;
    }
    if (family == AF_INET6) {
        r = setopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, spec->v6only ? 1 : 0);
        if (r < 0)
            return r;
    }
    return 0;
}

/*
 * A unix socket's mode=, set on its path between bind(2) and listen(2):
 * nobody can connect before it listens, and connect(2) checks the mode the
 * path has then, so nobody ever connects under another one.  umask(2)
 * around bind() did the same by changing the whole process's umask for a
 * moment, under an embedder's other threads creating files.  The path is
 * changed without following a symlink (glibc does that through the
 * descriptor of the node itself) and only while it is a socket.
 */
static int set_unix_mode(const struct ps_spec *spec)
{
    struct stat st;

    if (!spec->unix_mode || spec->host[0] == '@')
        return 0;
    if (fchmodat(AT_FDCWD, spec->host, spec->unix_mode & 07777, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    if (errno != ENOTSUP && errno != EOPNOTSUPP)
        return ps__neg_errno();
    /* a symlink, or no /proc for glibc to go through: only a socket */
    if (lstat(spec->host, &st) < 0)
        return ps__neg_errno();
    if (!S_ISSOCK(st.st_mode))
        return -ENOTSOCK;
    return chmod(spec->host, spec->unix_mode & 07777) < 0 ? ps__neg_errno() : 0;
}

int ps_listen_open(const struct ps_spec *spec, int flags)
{
    int type = socket_type(spec) | SOCK_CLOEXEC;
    int fd, r;

    if (flags & PS_LISTEN_NONBLOCK)
        type |= SOCK_NONBLOCK;
    fd = socket(spec->addr.ss_family, type, 0);
    if (fd < 0)
        return ps__neg_errno();
    r = configure(fd, spec, flags);
    if (r < 0)
        goto error;
    if (spec->proto == PS_PROTO_UNIX)
        remove_stale_unix(spec);
    if (bind(fd, (const struct sockaddr *)&spec->addr, spec->addrlen) < 0) {
        r = ps__neg_errno();
        goto error;
    }
    if (spec->proto == PS_PROTO_UNIX) {
        /* on failure the path stays: not listening, it is stale for the
         * next bind, and it may no longer be ours to remove */
        r = set_unix_mode(spec);
        if (r < 0)
            goto error;
    }
    if (spec->proto != PS_PROTO_UDP && listen(fd, spec->backlog) < 0) {
        r = ps__neg_errno();
        goto error;
    }
    return fd;

error:
    ps__close(fd);
    return r;
}

int ps_listen_queue(int fd, unsigned *queued, unsigned *limit)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return errno == ENOPROTOOPT || errno == EOPNOTSUPP ? -EOPNOTSUPP : ps__neg_errno();
    if (ti.tcpi_state != TCP_LISTEN)
        return -EOPNOTSUPP;
    /* For listeners, tcp_get_info() reports the accept queue in
     * tcpi_unacked and the backlog in tcpi_sacked (since Linux 2.6.x). */
    *queued = ti.tcpi_unacked;
    *limit = ti.tcpi_sacked;
    return 0;
}
