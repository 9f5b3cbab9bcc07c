/*
 * notify.c - readiness messages, the sd_notify(3) protocol.
 *
 * The sender writes "KEY=value\n..." datagrams to $NOTIFY_SOCKET.  The
 * receiver turns SO_PASSCRED on so that every datagram carries the sender's
 * pid/uid/gid as the kernel saw them: a message is attributed to a worker
 * by those credentials, never by anything it says about itself.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

int ps_notify_to(const char *address, const char *state)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ssize_t n;
    int fd, r;

    if (!state || !*state)
        return -EINVAL;
    r = ps__unix_addr(address, &ss, &len);
    if (r < 0)
        return r;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ps__neg_errno();
    do
        n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&ss, len);
    while (n < 0 && errno == EINTR);
    r = n < 0 ? ps__neg_errno() : 1;
    ps__close(fd);
    return r;
}

int ps_notify(const char *state)
{
    const char *address = getenv("NOTIFY_SOCKET");

    if (!address || !*address)
        return 0;
    return ps_notify_to(address, state);
}

int ps_notify_listen(const char *address)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct stat st;
    int fd, one = 1, r;

    r = ps__unix_addr(address, &ss, &len);
    if (r < 0)
        return r;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ps__neg_errno();
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
        goto error;
    /* a datagram socket path left by an earlier receiver blocks bind(); it
     * is removed, but only if it is a socket: never a file given by mistake */
    if (address[0] != '@' && lstat(address, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(address);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        goto error;
    return fd;

error:
    r = ps__neg_errno();
    ps__close(fd);
    return r;
}

int ps_notify_recv(int fd, struct ps_notify_msg *msg)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = {.iov_base = msg->text, .iov_len = sizeof(msg->text) - 1};
    struct msghdr mh;
    struct cmsghdr *c;
    int have_cred = 0;
    ssize_t n;

    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.buf;
    mh.msg_controllen = sizeof(control.buf);
    do
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return ps__neg_errno();
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(c), sizeof(uc));
            msg->pid = uc.pid;
            msg->uid = uc.uid;
            msg->gid = uc.gid;
            have_cred = 1;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            /* nobody may push descriptors into the supervisor this way */
            size_t i, k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (i = 0; i < k; i++) {
                int dropped;
                memcpy(&dropped, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                ps__close(dropped);
            }
        }
    }
    if (!have_cred || (mh.msg_flags & MSG_TRUNC))
        return -EBADMSG;
    msg->len = (size_t)n;
    msg->text[n] = '\0';
    return 0;
}

int ps_notify_field(const char *text, const char *key, char *val, size_t cap)
{
    size_t klen = strlen(key);
    const char *line = text;

    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t llen = end ? (size_t)(end - line) : strlen(line);
        if (llen > klen && !strncmp(line, key, klen) && line[klen] == '=') {
            size_t vlen = llen - klen - 1;
            if (cap == 0)
                return -ENOBUFS;
            if (vlen >= cap)
                vlen = cap - 1;
            memcpy(val, line + klen + 1, vlen);
            val[vlen] = '\0';
            return (int)vlen;
        }
        line = end ? end + 1 : NULL;
    }
    return -ENOENT;
}
