/*
 * fdpass.c - SCM_RIGHTS: send and receive a set of descriptors over a unix
 * socket.  The receiver insists on exactly the number it expects and never
 * leaks a surplus descriptor (as skalibs' ancil functions do).
 */
#include "core.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

int ps_fd_send(int sock, const int *fds, int n, const void *data, size_t len)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * PS_FDPASS_MAX)];
    } control;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr msg;
    ssize_t r;

    if (n < 0 || n > PS_FDPASS_MAX || len == 0 || !data)
        return -EINVAL;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (n > 0) {
        struct cmsghdr *c;
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
        c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
    }
    do
        r = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return ps__neg_errno();
    if ((size_t)r != len)
        return -EMSGSIZE; /* stream socket sent part: the peer cannot frame it */
    return 0;
}

/* Close every descriptor carried by the message's SCM_RIGHTS headers. */
static void close_all_rights(struct msghdr *msg)
{
    struct cmsghdr *c;

    for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        size_t i, k;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            ps__close(fd);
        }
    }
}

ssize_t ps_fd_recv(int sock, int *fds, int expected, void *data, size_t cap)
{
    /* room for credentials too: with SO_PASSCRED on the socket they come
     * first and would otherwise crowd out (truncate) the descriptors */
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * PS_FDPASS_MAX)];
    } control;
    struct iovec iov = {.iov_base = data, .iov_len = cap};
    struct msghdr msg;
    struct cmsghdr *c;
    int got = 0;
    ssize_t r;

    if (expected < 0 || expected > PS_FDPASS_MAX || cap == 0)
        return -EINVAL;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    do
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return ps__neg_errno();
    if (r == 0) {
        /* ps_fd_send() never sends an empty message: this is end of file
         * (or a foreign empty datagram, whose descriptors we do not keep) */
        close_all_rights(&msg);
        return 0;
    }
    if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))
        goto bad;
    for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        size_t k;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (got + (int)k > expected)
            goto bad;
        memcpy(fds + got, CMSG_DATA(c), k * sizeof(int));
        got += (int)k;
    }
    if (got != expected)
        goto bad;
    return r;

bad:
    close_all_rights(&msg);
    return -EBADMSG;
}
