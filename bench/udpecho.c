/*
 * udpecho.c - the least a UDP server can do per datagram: send it back.
 *
 *   bench_udpecho            (under `portshare run -l udp://...`)
 *
 * Serves every datagram socket it inherits (LISTEN_FDS) in this one
 * process: one epoll loop, recvmmsg() a batch of up to 64 datagrams, then
 * sendmmsg() them back to their senders unchanged, so that the server
 * side costs two system calls per batch and the client side, where the
 * loopback delivery and the reuseport program run, is what bounds the
 * rate.  Sends READY=1 once it watches its sockets.
 *
 * SIGTERM/SIGINT: exit at once, as almost every UDP server does.
 *
 * Exit: 0 on a stop signal, 3 when it got no datagram socket (or cannot
 * watch one).
 */
#include "portshare.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH    64
#define DGRAM    2048
#define MAX_FDS  64
#define SIG_DATA (-1)

static char bufs[BATCH][DGRAM];
static struct sockaddr_storage peers[BATCH];
static struct iovec iovs[BATCH];
static struct mmsghdr msgs[BATCH];

/* Echo one batch of what fd holds; returns how many came (0: drained). */
static int echo_batch(int fd)
{
    int i, n, sent = 0, r;

    for (i = 0; i < BATCH; i++) {
        iovs[i] = (struct iovec){.iov_base = bufs[i], .iov_len = DGRAM};
        msgs[i].msg_hdr = (struct msghdr){.msg_name = &peers[i],
                                          .msg_namelen = sizeof(peers[i]),
                                          .msg_iov = &iovs[i],
                                          .msg_iovlen = 1};
    }
    n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return 0;
    for (i = 0; i < n; i++)
        iovs[i].iov_len = msgs[i].msg_len;
    while (sent < n) { /* a datagram that cannot go (a full buffer) is dropped */
        r = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r <= 0)
            break;
        sent += r;
    }
    return n;
}

static void fatal(const char *what)
{
    fprintf(stderr, "bench_udpecho: fatal: %s\n", what);
    exit(3);
}

int main(void)
{
    struct epoll_event ev[MAX_FDS + 1];
    sigset_t set;
    int n, i, k, b, ep, sig;

    n = ps_listen_fds(1, NULL);
    if (n <= 0 || n > MAX_FDS)
        fatal("no datagram sockets in LISTEN_FDS (run me under `portshare run -l udp://...`)");
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    ep = epoll_create1(EPOLL_CLOEXEC);
    sig = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (ep < 0 || sig < 0)
        fatal("cannot set up epoll and signalfd");
    ev[0] = (struct epoll_event){.events = EPOLLIN, .data.fd = SIG_DATA};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sig, &ev[0]) < 0)
        fatal("cannot watch the signalfd");
    for (i = 0; i < n; i++) {
        int fd = PS_LISTEN_FDS_START + i;
        ev[0] = (struct epoll_event){.events = EPOLLIN, .data.fd = fd};
        if (ps_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) != 1 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev[0]) < 0)
            fatal("an inherited descriptor is not a datagram socket I can watch");
    }
    ps_notify("READY=1");
    for (;;) {
        k = epoll_wait(ep, ev, MAX_FDS + 1, -1);
        if (k < 0 && errno != EINTR)
            fatal("epoll_wait failed");
        for (i = 0; i < k; i++) {
            if (ev[i].data.fd == SIG_DATA)
                return 0;
            /* a few batches, then the other sockets get their turn */
            for (b = 0; b < 4 && echo_batch(ev[i].data.fd) == BATCH; b++)
                ;
        }
    }
}
