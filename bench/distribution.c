/*
 * distribution.c - how evenly new connections spread over worker processes.
 *
 *   bench_distribution [-m reuseport|shared|exclusive|all] [-w WORKERS]
 *                      [-n CONNECTIONS] [-c CLIENT_THREADS] [-l HOST:PORT]
 *
 * W worker processes (default 8) accept N new connections (default 20000)
 * made by C client threads (default 4) on loopback, each connection one
 * short exchange (the worker writes 5 bytes and closes).  Three ways to
 * share the port:
 *
 *   reuseport   one SO_REUSEPORT socket per worker (portshare's default):
 *               the kernel hashes each connection to one socket
 *   shared      one socket in every worker's epoll set: every worker is
 *               woken, the first to accept wins
 *   exclusive   one shared socket added with EPOLLEXCLUSIVE: the kernel
 *               wakes one waiter (or a few)
 *
 * Workers accept in batches until EAGAIN, as portshare serve does, and count
 * in shared memory.  For each mode one line:
 *
 *   mode=reuseport workers=8 connections=20000 accepted=20000 failed=0
 *       jain=0.9991 maxmin=1.09 counts=2510,2490,...
 *
 * Jain's index = (sum x)^2 / (W * sum x^2): 1 is perfectly even, 1/W is one
 * worker taking everything.
 */
#include "portshare.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64

enum mode { MODE_REUSEPORT, MODE_SHARED, MODE_EXCLUSIVE };
static const char *const mode_names[] = {"reuseport", "shared", "exclusive"};

struct client {
    pthread_t tid;
    const struct ps_spec *spec;
    long n;
    long failed;
};

static volatile sig_atomic_t stop_flag;

static void on_term(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* One worker: wait on its listener, accept until EAGAIN, answer, close. */
static void worker(int lfd, int exclusive, volatile long *count)
{
    struct epoll_event ev = {.events = EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0), .data.fd = lfd};
    struct sigaction sa = {.sa_handler = on_term};
    int ep = epoll_create1(EPOLL_CLOEXEC);

    sigaction(SIGTERM, &sa, NULL);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        _exit(1);
    while (!stop_flag) {
        struct epoll_event out;
        if (epoll_wait(ep, &out, 1, 100) <= 0)
            continue;
        for (;;) {
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                break;
            (*count)++;
            if (write(fd, "hello", 5) < 0) {
                /* the client went away: it counts that itself */
            }
            close(fd);
        }
    }
    _exit(0);
}

/* One client thread: n sequential connections, each read to EOF. */
static void *client_main(void *arg)
{
    struct client *cl = arg;
    char buf[64];
    long i;

    for (i = 0; i < cl->n; i++) {
        int fd = socket(cl->spec->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ssize_t r, got = 0;
        if (fd < 0 ||
            connect(fd, (const struct sockaddr *)&cl->spec->addr, cl->spec->addrlen) < 0) {
            cl->failed++;
            if (fd >= 0)
                close(fd);
            continue;
        }
        while ((r = read(fd, buf, sizeof(buf))) > 0 || (r < 0 && errno == EINTR))
            got += r > 0 ? r : 0;
        if (got != 5)
            cl->failed++;
        close(fd);
    }
    return NULL;
}

static long run_clients(const struct ps_spec *spec, long n, int nthreads)
{
    struct client cl[64];
    long failed = 0;
    int i;

    for (i = 0; i < nthreads; i++) {
        cl[i] = (struct client){.spec = spec, .n = n / nthreads + (i < n % nthreads)};
        if (pthread_create(&cl[i].tid, NULL, client_main, &cl[i]) != 0)
            return -1;
    }
    for (i = 0; i < nthreads; i++) {
        pthread_join(cl[i].tid, NULL);
        failed += cl[i].failed;
    }
    return failed;
}

static void report(enum mode m, int w, long n, long failed, const volatile long *counts)
{
    double sum = 0, sq = 0;
    long min = -1, max = 0;
    int i;

    for (i = 0; i < w; i++) {
        sum += (double)counts[i];
        sq += (double)counts[i] * (double)counts[i];
        min = (min < 0 || counts[i] < min) ? counts[i] : min;
        max = counts[i] > max ? counts[i] : max;
    }
    printf("mode=%s workers=%d connections=%ld accepted=%.0f failed=%ld jain=%.4f maxmin=",
           mode_names[m], w, n, sum, failed, sq > 0 ? sum * sum / (w * sq) : 0.0);
    if (min > 0)
        printf("%.2f", (double)max / (double)min);
    else
        printf("inf");
    printf(" counts=");
    for (i = 0; i < w; i++)
        printf("%s%ld", i ? "," : "", counts[i]);
    printf("\n");
    fflush(stdout);
}

/* Open the sockets for mode m: W reuseport sockets, or one shared. */
static int open_listeners(enum mode m, struct ps_spec *spec, int w, int *fds)
{
    int i, fd;

    if (m == MODE_REUSEPORT)
        return ps_listen_group_open(spec, w, fds, PS_LISTEN_NONBLOCK);
    fd = ps_listen_open(spec, PS_LISTEN_NONBLOCK | PS_LISTEN_NO_REUSEPORT);
    if (fd < 0)
        return fd;
    for (i = 0; i < w; i++)
        fds[i] = fd;
    /* port 0: the clients need the port the kernel chose */
    spec->addrlen = sizeof(spec->addr);
    if (getsockname(fd, (struct sockaddr *)&spec->addr, &spec->addrlen) < 0)
        return -errno;
    return 0;
}

static int run_mode(enum mode m, const char *text, int w, long n, int nthreads)
{
    struct ps_spec spec;
    char err[256];
    int fds[MAX_WORKERS], i, r;
    pid_t pids[MAX_WORKERS];
    volatile long *counts;
    long failed;

    if (ps_spec_parse(text, &spec, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_distribution: %s\n", err);
        return 2;
    }
    r = open_listeners(m, &spec, w, fds);
    if (r < 0) {
        fprintf(stderr, "bench_distribution: cannot listen on %s: %s\n", text, ps_strerror(r));
        return 3;
    }
    counts = mmap(NULL, MAX_WORKERS * sizeof(long), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED)
        return 6;
    for (i = 0; i < w; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            worker(fds[i], m == MODE_EXCLUSIVE, &counts[i]);
    }
    usleep(100 * 1000); /* every worker in epoll_wait before the first connection */
    failed = run_clients(&spec, n, nthreads);
    usleep(100 * 1000); /* last accepts counted */
    for (i = 0; i < w; i++)
        kill(pids[i], SIGTERM);
    for (i = 0; i < w; i++)
        waitpid(pids[i], NULL, 0);
    report(m, w, n, failed, counts);
    for (i = 0; i < (m == MODE_REUSEPORT ? w : 1); i++)
        close(fds[i]);
    munmap((void *)counts, MAX_WORKERS * sizeof(long));
    return failed < 0 ? 6 : 0;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *mode = "all";
    int w = 8, nthreads = 4, opt, m, rc = 0;
    long n = 20000;

    while ((opt = getopt(argc, argv, "m:w:n:c:l:h")) != -1) {
        switch (opt) {
        case 'm':
            mode = optarg;
            break;
        case 'w':
            w = atoi(optarg);
            break;
        case 'n':
            n = atol(optarg);
            break;
        case 'c':
            nthreads = atoi(optarg);
            break;
        case 'l':
            listen = optarg;
            break;
        default:
            fprintf(stderr, "usage: bench_distribution [-m reuseport|shared|exclusive|all] "
                            "[-w WORKERS] [-n CONNECTIONS] [-c CLIENT_THREADS] [-l HOST:PORT]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (w < 1 || w > MAX_WORKERS || n < 1 || nthreads < 1 || nthreads > 64) {
        fprintf(stderr, "bench_distribution: workers 1..%d, threads 1..64, connections >= 1\n",
                MAX_WORKERS);
        return 2;
    }
    for (m = MODE_REUSEPORT; m <= MODE_EXCLUSIVE && rc == 0; m++)
        if (!strcmp(mode, "all") || !strcmp(mode, mode_names[m]))
            rc = run_mode((enum mode)m, listen, w, n, nthreads);
    return rc;
}
