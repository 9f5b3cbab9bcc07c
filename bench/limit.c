/*
 * limit.c - the ceiling: the least an HTTP server can do per request here.
 *
 * No parsing: every "\r\n\r\n"-terminated request on a connection is
 * answered with the same 200 response with a 5-byte body.  A request that
 * mentions "connection: close" (any case) or is HTTP/1.0 is answered with
 * Connection: close and the connection is closed, so wrk's keep-alive and
 * connection-close modes both work.  One epoll loop per process over its
 * SO_REUSEPORT listener(s), batched non-blocking accept4.  Whatever a real
 * server spends above this, per request, is parsing, files and headers.
 *
 *   bench_limit [-l HOST:PORT] [-w N] [-d]
 *
 * Without LISTEN_FDS it binds HOST:PORT itself (default 127.0.0.1:8080; port
 * 0 lets the kernel choose, and the first line on stdout names the address):
 * one SO_REUSEPORT socket per worker, N worker processes (default 1; with
 * N = 1 the process serves directly).  The parent closes its copies, so a
 * second bench_limit on the same port is exactly the "naive" two-process
 * reload: when one stops, its own queue goes with it.
 *
 * With LISTEN_FDS (under `portshare run`, systemd...) it serves the
 * inherited sockets in this one process and sends READY=1.
 *
 * -d sets TCP_DEFER_ACCEPT on the sockets it binds (h2o does): accept only
 * returns once the request has arrived, which saves a wakeup per connection
 * (an experiment for connection-close mode; bench/run does not use it).
 *
 * SIGTERM/SIGINT: close the listeners, close idle keep-alive connections,
 * answer what is in flight (a new connection's first request included) for
 * up to one second, exit.
 */
#include "portshare.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTENERS 64
#define INBUF         4096
#define OUTBUF        8192
#define DRAIN_MS      1000

static const char RESP_KEEP[] = "HTTP/1.1 200 OK\r\n"
                                "Server: limit\r\n"
                                "Content-Type: text/plain\r\n"
                                "Content-Length: 5\r\n"
                                "\r\n"
                                "hello";
static const char RESP_CLOSE[] = "HTTP/1.1 200 OK\r\n"
                                 "Server: limit\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 5\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "hello";

struct conn {
    size_t in;       /* bytes in ibuf */
    size_t out;      /* bytes in obuf not yet written */
    size_t out_off;  /* where the unwritten part starts */
    int close_after; /* close once obuf is written */
    int want_out;    /* registered for EPOLLOUT */
    long served;     /* responses queued so far */
    int registered;  /* in the epoll set yet */
    struct conn *next_free;
    char ibuf[INBUF + 1];
    char obuf[OUTBUF];
};

struct loop {
    int ep;
    int sfd; /* signalfd: SIGTERM, SIGINT */
    int lfds[MAX_LISTENERS];
    int nl;
    struct conn **conns; /* indexed by fd */
    int cap;
    int nconns;
    struct conn *free_list; /* closed connections' memory, reused: no
                             * allocation per connection in close mode */
    int draining;
    struct timespec drain_end;
};

static long ms_until(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

static void conn_close(struct loop *lp, int fd)
{
    struct conn *c = lp->conns[fd];

    c->next_free = lp->free_list;
    lp->free_list = c;
    lp->conns[fd] = NULL;
    lp->nconns--;
    close(fd); /* also removes it from the epoll set */
}

static struct conn *conn_new(struct loop *lp)
{
    struct conn *c = lp->free_list;

    if (c)
        lp->free_list = c->next_free;
    else if (!(c = malloc(sizeof(*c))))
        return NULL;
    /* the buffers need no clearing: in and out say what is valid */
    c->in = c->out = c->out_off = 0;
    c->close_after = c->want_out = c->registered = 0;
    c->served = 0;
    return c;
}

/* Add the connection to the epoll set, or change what it waits for.  A
 * connection answered and closed at once is never added at all. */
static int set_out_interest(struct loop *lp, int fd, struct conn *c, int want)
{
    /* while output waits, stop reading: a client that pipelines without
     * reading must not make us spin or buffer without bound */
    struct epoll_event ev = {.events = want ? EPOLLOUT : EPOLLIN, .data.fd = fd};
    int op = c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    if (c->registered && c->want_out == want)
        return 0;
    c->want_out = want;
    c->registered = 1;
    return epoll_ctl(lp->ep, op, fd, &ev);
}

/* Write what is pending.  Returns -1 when the connection is gone. */
static int flush_out(struct loop *lp, int fd, struct conn *c)
{
    while (c->out > 0) {
        /* the last response of a closing connection goes out with the FIN,
         * in one segment (MSG_MORE holds it until close) */
        ssize_t n =
            send(fd, c->obuf + c->out_off, c->out, MSG_NOSIGNAL | (c->close_after ? MSG_MORE : 0));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return set_out_interest(lp, fd, c, 1) < 0 ? (conn_close(lp, fd), -1) : 0;
        if (n <= 0) {
            conn_close(lp, fd);
            return -1;
        }
        c->out -= (size_t)n;
        c->out_off += (size_t)n;
    }
    c->out_off = 0;
    if (c->close_after) {
        conn_close(lp, fd);
        return -1;
    }
    return set_out_interest(lp, fd, c, 0) < 0 ? (conn_close(lp, fd), -1) : 0;
}

/* The only look at a request's content: does it ask to close? */
static int wants_close(char *req, size_t len)
{
    char saved = req[len];
    int close_it;

    req[len] = '\0';
    close_it = strcasestr(req, "\nconnection: close") != NULL || strstr(req, " HTTP/1.0\r") != NULL;
    req[len] = saved;
    return close_it;
}

/* Answer every complete request in ibuf (pipelined ones in order). */
static void answer(struct loop *lp, struct conn *c)
{
    char *end;

    c->ibuf[c->in] = '\0';
    while (!c->close_after && (end = strstr(c->ibuf, "\r\n\r\n")) != NULL) {
        size_t reqlen = (size_t)(end - c->ibuf) + 4;
        int close_it = lp->draining || wants_close(c->ibuf, reqlen);
        const char *r = close_it ? RESP_CLOSE : RESP_KEEP;
        size_t rlen = close_it ? sizeof(RESP_CLOSE) - 1 : sizeof(RESP_KEEP) - 1;

        if (c->out_off + c->out + rlen > OUTBUF)
            break; /* the rest waits until the client reads */
        memcpy(c->obuf + c->out_off + c->out, r, rlen);
        c->out += rlen;
        c->served++;
        c->close_after = close_it;
        memmove(c->ibuf, c->ibuf + reqlen, c->in - reqlen + 1);
        c->in -= reqlen;
    }
}

/* Answer and write until the client stops keeping up or nothing complete
 * is left: answer() stops when obuf is full, so a pipelined burst larger
 * than obuf is finished here instead of waiting for more input. */
static void progress(struct loop *lp, int fd, struct conn *c)
{
    for (;;) {
        answer(lp, c);
        if (flush_out(lp, fd, c) < 0 || c->out > 0 || c->close_after)
            return;
        if (!strstr(c->ibuf, "\r\n\r\n"))
            return;
    }
}

static void on_readable(struct loop *lp, int fd, struct conn *c)
{
    ssize_t n;

    if (c->in == INBUF) { /* full of complete requests: answer first */
        progress(lp, fd, c);
        return;
    }
    do
        n = read(fd, c->ibuf + c->in, INBUF - c->in);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        conn_close(lp, fd);
        return;
    }
    c->in += (size_t)n;
    c->ibuf[c->in] = '\0';
    if (c->in == INBUF && !strstr(c->ibuf, "\r\n\r\n")) {
        conn_close(lp, fd); /* no end of headers in 4 KiB: not for us */
        return;
    }
    progress(lp, fd, c);
}

static int grow_conns(struct loop *lp, int fd)
{
    int cap = lp->cap ? lp->cap : 1024;
    struct conn **p;

    while (cap <= fd)
        cap *= 2;
    p = realloc(lp->conns, (size_t)cap * sizeof(*p));
    if (!p)
        return -1;
    memset(p + lp->cap, 0, (size_t)(cap - lp->cap) * sizeof(*p));
    lp->conns = p;
    lp->cap = cap;
    return 0;
}

/* A new connection: its request is usually there already (loopback), so
 * read at once; it joins the epoll set only if it has to wait. */
static void add_conn(struct loop *lp, int fd)
{
    struct conn *c = NULL;

    if (fd >= lp->cap && grow_conns(lp, fd) < 0)
        goto fail;
    c = conn_new(lp);
    if (!c)
        goto fail;
    lp->conns[fd] = c;
    lp->nconns++;
    on_readable(lp, fd, c);
    if (lp->conns[fd] == c && !c->registered && set_out_interest(lp, fd, c, c->out > 0) < 0)
        conn_close(lp, fd);
    return;
fail:
    close(fd);
}

/* Accept in a batch until the queue is empty (or 64, to stay fair to the
 * connections we already have). */
static void on_listener(struct loop *lp, int lfd)
{
    int i;

    for (i = 0; i < 64; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or EMFILE: the next round retries */
        }
        add_conn(lp, fd);
    }
}

static void start_drain(struct loop *lp)
{
    int i, fd;

    lp->draining = 1;
    clock_gettime(CLOCK_MONOTONIC, &lp->drain_end);
    lp->drain_end.tv_sec += DRAIN_MS / 1000;
    for (i = 0; i < lp->nl; i++)
        close(lp->lfds[i]);
    lp->nl = 0;
    for (fd = 0; fd < lp->cap; fd++) {
        struct conn *c = lp->conns[fd];
        /* idle keep-alive: nothing to finish.  A new connection whose first
         * request is still on its way is not idle: it gets its answer. */
        if (c && c->served > 0 && c->in == 0 && c->out == 0)
            conn_close(lp, fd);
    }
}

static int is_listener(const struct loop *lp, int fd)
{
    int i;

    for (i = 0; i < lp->nl; i++)
        if (lp->lfds[i] == fd)
            return 1;
    return 0;
}

static void dispatch(struct loop *lp, const struct epoll_event *ev)
{
    int fd = ev->data.fd;
    struct conn *c;

    if (fd == lp->sfd) {
        struct signalfd_siginfo si;
        if (read(lp->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) && !lp->draining)
            start_drain(lp);
        return;
    }
    if (is_listener(lp, fd)) {
        on_listener(lp, fd);
        return;
    }
    c = fd < lp->cap ? lp->conns[fd] : NULL;
    if (!c)
        return;
    if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(lp, fd, c);
    else if (ev->events & EPOLLOUT)
        progress(lp, fd, c);
}

static int serve(const int *lfds, int nl)
{
    struct loop lp = {.ep = -1, .sfd = -1};
    struct epoll_event evs[256];
    sigset_t set;
    int i, n;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    lp.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    lp.ep = epoll_create1(EPOLL_CLOEXEC);
    if (lp.sfd < 0 || lp.ep < 0)
        return 1;
    memcpy(lp.lfds, lfds, (size_t)nl * sizeof(int));
    lp.nl = nl;
    for (i = 0; i <= nl; i++) {
        int fd = i < nl ? lfds[i] : lp.sfd;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (i < nl)
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (epoll_ctl(lp.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            return 1;
    }
    for (;;) {
        long timeout = -1;
        if (lp.draining) {
            timeout = ms_until(&lp.drain_end);
            if (lp.nconns == 0 || timeout <= 0)
                break;
        }
        n = epoll_wait(lp.ep, evs, 256, (int)timeout);
        for (i = 0; i < n; i++)
            dispatch(&lp, &evs[i]);
    }
    for (i = 0; i < lp.cap; i++) /* the drain time is up: drop the rest */
        if (lp.conns[i])
            conn_close(&lp, i);
    while (lp.free_list) {
        struct conn *c = lp.free_list;
        lp.free_list = c->next_free;
        free(c);
    }
    free(lp.conns);
    close(lp.ep);
    close(lp.sfd);
    return 0;
}

/* Parent of N workers: pass SIGTERM/SIGINT on, wait for all of them. */
static int supervise(const pid_t *pids, int n)
{
    sigset_t set;
    int sig, i, left = n;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    while (left > 0 && sigwait(&set, &sig) == 0) {
        if (sig != SIGCHLD)
            for (i = 0; i < n; i++)
                kill(pids[i], SIGTERM);
        while (waitpid(-1, NULL, WNOHANG) > 0)
            left--;
    }
    return 0;
}

static int bind_and_fork(const char *text, int nworkers, int defer)
{
    struct ps_spec spec;
    char err[256];
    int fds[MAX_LISTENERS];
    pid_t pids[MAX_LISTENERS];
    int i, r;

    if (ps_spec_parse(text, &spec, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_limit: %s\n", err);
        return 2;
    }
    r = ps_listen_group_open(&spec, nworkers, fds, PS_LISTEN_NONBLOCK);
    if (r < 0) {
        fprintf(stderr, "bench_limit: cannot listen on %s: %s\n", text, ps_strerror(r));
        return 3;
    }
    for (i = 0; defer && i < nworkers; i++)
        setsockopt(fds[i], IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
    /* with port 0 the kernel chose: say which, for scripts */
    if (ps_spec_format(&spec, err, sizeof(err)) >= 0) {
        printf("bench_limit: listening on %s (%d socket%s)\n", err, nworkers,
               nworkers > 1 ? "s" : "");
        fflush(stdout);
    }
    if (nworkers == 1)
        return serve(fds, 1);
    for (i = 0; i < nworkers; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 6;
        if (pids[i] == 0)
            _exit(serve(&fds[i], 1));
    }
    /* the workers own the sockets: a dead worker's queue must not linger
     * here, unanswered, the way it would with a supervisor that holds it */
    for (i = 0; i < nworkers; i++)
        close(fds[i]);
    return supervise(pids, nworkers);
}

static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080";
    int nworkers = 1, defer = 0, opt, n, i, fds[MAX_LISTENERS];

    while ((opt = getopt(argc, argv, "l:w:dh")) != -1) {
        switch (opt) {
        case 'l':
            listen = optarg;
            break;
        case 'w':
            nworkers = atoi(optarg);
            break;
        case 'd':
            defer = 1;
            break;
        default:
            fprintf(stderr, "usage: bench_limit [-l HOST:PORT] [-w WORKERS] [-d]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (nworkers < 1 || nworkers > MAX_LISTENERS) {
        fprintf(stderr, "bench_limit: -w must be 1..%d\n", MAX_LISTENERS);
        return 2;
    }
    raise_nofile();
    n = ps_listen_fds(1, NULL);
    if (n < 0) {
        fprintf(stderr, "bench_limit: bad LISTEN_FDS: %s\n", ps_strerror(n));
        return 2;
    }
    if (n == 0)
        return bind_and_fork(listen, nworkers, defer);
    if (n > MAX_LISTENERS)
        n = MAX_LISTENERS;
    for (i = 0; i < n; i++)
        fds[i] = PS_LISTEN_FDS_START + i;
    ps_notify("READY=1");
    return serve(fds, n);
}
