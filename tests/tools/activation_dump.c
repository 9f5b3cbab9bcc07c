/*
 * activation_dump - the receiving side of socket activation, for tests.
 *
 *   activation_dump [--serve N] [--timeout SECONDS]
 *
 * Takes its sockets with ps_listen_fds(1, &names) exactly as a worker
 * would, prints what it got (one line per fact, for the test to grep), then
 * answers N clients (default 1) on any of them: a stream connection or a
 * datagram gets "hello NAME\n" back.  Exits 0 when all N were served, 1 on
 * any failure; SIGALRM ends it after the timeout (default 10 s) so that a
 * test never hangs.
 *
 * Output:
 *   env-before LISTEN_FDS=3 LISTEN_PID=self LISTEN_FDNAMES=web:local
 *   count 2
 *   env-after cleared
 *   fd 3 name=web socket=1 family=inet type=stream listening=1 cloexec=1 addr=tcp://127.0.0.1:80
 *   ready
 *   served web
 */
#include "portshare.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 64

static const char *family_name(int family)
{
    return family == AF_INET    ? "inet"
           : family == AF_INET6 ? "inet6"
           : family == AF_UNIX  ? "unix"
                                : "other";
}

static const char *type_name(int type)
{
    return type == SOCK_STREAM      ? "stream"
           : type == SOCK_DGRAM     ? "dgram"
           : type == SOCK_SEQPACKET ? "seqpacket"
                                    : "other";
}

static int int_opt(int fd, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    if (getsockopt(fd, SOL_SOCKET, name, &v, &len) < 0)
        return -1;
    return v;
}

static void print_env_before(void)
{
    const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
    const char *names = getenv("LISTEN_FDNAMES");
    char self[32];

    snprintf(self, sizeof(self), "%ld", (long)getpid());
    printf("env-before LISTEN_FDS=%s LISTEN_PID=%s LISTEN_FDNAMES=%s\n", fds ? fds : "(unset)",
           !pid                ? "(unset)"
           : strcmp(pid, self) ? pid
                               : "self",
           names ? names : "(unset)");
}

static void print_env_after(void)
{
    const char *vars[] = {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"};
    int i, left = 0;

    for (i = 0; i < 3; i++)
        if (getenv(vars[i])) {
            printf("env-after %s still set\n", vars[i]);
            left = 1;
        }
    if (!left)
        printf("env-after cleared\n");
}

static void describe(int fd, const char *name)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = int_opt(fd, SO_TYPE);
    char addr[PS_SPEC_TEXT_MAX] = "?";

    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        ps_sockaddr_format((struct sockaddr *)&ss, len, type, addr, sizeof(addr));
    printf("fd %d name=%s socket=%d family=%s type=%s listening=%d cloexec=%d addr=%s\n", fd, name,
           ps_is_socket(fd, AF_UNSPEC, 0, -1), family_name(ss.ss_family), type_name(type),
           int_opt(fd, SO_ACCEPTCONN), (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, addr);
}

/* Answer one client on fd: a connection (stream) or a datagram. */
static int serve_one(int fd, const char *name)
{
    char buf[512], reply[128];
    int n = snprintf(reply, sizeof(reply), "hello %s\n", name);

    if (int_opt(fd, SO_TYPE) == SOCK_DGRAM) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        if (recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen) < 0)
            return -1;
        return sendto(fd, reply, (size_t)n, 0, (struct sockaddr *)&peer, plen) == n ? 0 : -1;
    }
    {
        struct pollfd p;
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC), ok;
        if (c < 0)
            return -1;
        /* the request line is optional: answer after it or after 2 s */
        p.fd = c;
        p.events = POLLIN;
        if (poll(&p, 1, 2000) > 0)
            (void)!read(c, buf, sizeof(buf));
        ok = write(c, reply, (size_t)n) == n;
        close(c);
        return ok ? 0 : -1;
    }
}

int main(int argc, char **argv)
{
    struct pollfd p[MAX_FDS];
    char **names = NULL;
    int serve = 1, timeout = 10, n, i, served = 0;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--serve") && i + 1 < argc)
            serve = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: activation_dump [--serve N] [--timeout SECONDS]\n");
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, SIG_DFL);
    alarm((unsigned)timeout); /* default action: exit, never hang a test */

    print_env_before();
    n = ps_listen_fds(1, &names);
    if (n < 0) {
        printf("error ps_listen_fds: %s\n", ps_errno_name(n));
        return 1;
    }
    printf("count %d\n", n);
    print_env_after();
    if (n > MAX_FDS)
        n = MAX_FDS;
    for (i = 0; i < n; i++) {
        describe(PS_LISTEN_FDS_START + i, names[i]);
        p[i].fd = PS_LISTEN_FDS_START + i;
        p[i].events = POLLIN;
    }
    printf("ready\n");
    while (served < serve && n > 0) {
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        for (i = 0; i < n && served < serve; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            if (serve_one(p[i].fd, names[i]) < 0) {
                printf("error serving %s: %s\n", names[i], strerror(errno));
                return 1;
            }
            printf("served %s\n", names[i]);
            served++;
        }
    }
    ps_listen_names_free(names);
    return 0;
}
