/*
 * hello.c - a minimal HTTP/1.0 server for `portshare run`, with libportshare.
 *
 *   cc -o hello hello.c $(pkg-config --cflags --libs portshare)
 *   portshare run -l :8080 -w 4 -- ./hello
 *
 * It serves on the listening sockets it is handed (fd 3, 4, ...: the systemd
 * hand-off, ps_listen_fds()), says READY=1 once it can serve, and on SIGTERM
 * (portshare's drain signal) stops accepting and exits after the request it
 * is answering: what waits in the socket's queue is the next worker's, since
 * the supervisor keeps the socket open.  One connection at a time, to stay
 * short: a real server multiplexes (epoll) and bounds each client's time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ppoll, accept4 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <portshare.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_LISTENERS 16

static volatile sig_atomic_t draining;

static void on_term(int sig)
{
    (void)sig;
    draining = 1;
}

/* Read the request head (up to the blank line), answer, close.  A client
 * gets 5 s to send its head, so one that sends nothing cannot hold up the
 * drain for longer. */
static void serve(int c)
{
    static const struct timeval limit = {.tv_sec = 5};
    char req[4096], resp[256], body[128];
    size_t got = 0;
    ssize_t n;
    int len;

    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
    while (got < sizeof(req) - 1) {
        n = read(c, req + got, sizeof(req) - 1 - got);
        if (n <= 0)
            return; /* EOF, error or timeout: nothing to answer */
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    len = snprintf(body, sizeof(body), "hello from c pid=%d slot=%s gen=%s\n", (int)getpid(),
                   getenv("PORTSHARE_SLOT") ? getenv("PORTSHARE_SLOT") : "-",
                   getenv("PORTSHARE_GENERATION") ? getenv("PORTSHARE_GENERATION") : "-");
    len = snprintf(resp, sizeof(resp),
                   "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                   "Connection: close\r\n\r\n%s",
                   len, body);
    /* MSG_NOSIGNAL: a client that left must not kill the server (SIGPIPE) */
    (void)send(c, resp, (size_t)len, MSG_NOSIGNAL);
}

int main(void)
{
    struct pollfd pfd[MAX_LISTENERS];
    struct sigaction sa = {.sa_handler = on_term};
    sigset_t term, during_poll;
    int n, i, c;

    n = ps_listen_fds(1, NULL);
    if (n <= 0) {
        fprintf(stderr, "hello: no listening sockets: %s\n",
                n < 0 ? ps_strerror(n) : "run me under portshare run (or systemd)");
        return 1;
    }
    if (n > MAX_LISTENERS)
        n = MAX_LISTENERS;
    for (i = 0; i < n; i++) {
        /* non-blocking: the next generation takes from the same queue, so
         * a connection poll() announced may be gone when we accept */
        fcntl(PS_LISTEN_FDS_START + i, F_SETFL,
              fcntl(PS_LISTEN_FDS_START + i, F_GETFL) | O_NONBLOCK);
        pfd[i] = (struct pollfd){.fd = PS_LISTEN_FDS_START + i, .events = POLLIN};
    }

    /* SIGTERM is blocked except inside ppoll(): it can only interrupt the
     * wait for a connection, never a request being answered, and it cannot
     * slip in between the check of `draining` and the wait. */
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &during_poll);
    sigdelset(&during_poll, SIGTERM);
    sigaction(SIGTERM, &sa, NULL);

    ps_notify("READY=1");
    while (!draining) {
        if (ppoll(pfd, (nfds_t)n, NULL, &during_poll) < 0) {
            if (errno == EINTR)
                continue;
            perror("hello: ppoll");
            return 1;
        }
        for (i = 0; i < n; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            /* one at a time, back to ppoll() in between: a SIGTERM
             * waits for one request, not for the queue to be empty */
            c = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                serve(c);
                close(c);
            }
        }
    }
    return 0;
}
