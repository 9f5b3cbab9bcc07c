/*
 * os_linux.c - the operating-system specific part of the socket layer.
 *
 * What SO_REUSEPORT means differs by OS, which is why it lives here:
 *  - Linux >= 3.9: SO_REUSEPORT on every socket of a group, same effective
 *    UID, and the kernel hashes each new connection (TCP) or flow (UDP) to
 *    one socket of the group: it balances.
 *  - FreeBSD >= 12: SO_REUSEPORT only allows the bind; balancing needs
 *    SO_REUSEPORT_LB.  A port would set SO_REUSEPORT_LB here.
 *  - macOS / OpenBSD: SO_REUSEPORT allows the bind but the last socket
 *    bound gets every connection, so a group does not balance: callers
 *    must use one shared socket (ps__os_reuseport_balances() says 0).
 */
#include "core.h"

#include <sys/socket.h>

int ps__os_set_reuseport(int fd)
{
#ifdef SO_REUSEPORT
    int one = 1;

    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        return ps__neg_errno();
    return 0;
#else
    (void)fd;
    return -ENOTSUP;
#endif
}

int ps__os_reuseport_balances(void)
{
#if defined(__linux__)
    return 1;
#else
    return 0;
#endif
}
