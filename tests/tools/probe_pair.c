/*
 * probe_pair.c - bind two sockets and print what the kernel said, so that
 * tests check `portshare probe` against the kernel itself.  Deliberately
 * written without any of the probe's code: plain socket calls.
 *
 *   probe_pair PROTO STATE ADDR1 OPTS1 ADDR2 OPTS2 [UID2]
 *
 *   PROTO   tcp | udp
 *   STATE   bound | listening | time_wait (tcp: a client that closed first)
 *   ADDR    an IPv4 or IPv6 address; "::/v6only" sets IPV6_V6ONLY (IPv6
 *           sockets get IPV6_V6ONLY off otherwise)
 *   OPTS    - | A | P | AP   (SO_REUSEADDR, SO_REUSEPORT)
 *   UID2    make the second socket in a child running as this uid (root)
 *
 * Prints "bind=ok listen=ok", "bind=EADDRINUSE listen=-" ... and exits 0;
 * exits 2 on bad usage, 1 when the first socket could not be set up.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

struct addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int v6only; /* -1 for IPv4 */
};

static void die(const char *what)
{
    fprintf(stderr, "probe_pair: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int parse_addr(const char *text, struct addr *a)
{
    char buf[64];
    char *slash;
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

    snprintf(buf, sizeof(buf), "%s", text);
    slash = strchr(buf, '/');
    if (slash)
        *slash++ = '\0';
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        a->len = sizeof(*sin);
        a->v6only = -1;
        return slash ? -1 : 0;
    }
    if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        a->len = sizeof(*sin6);
        a->v6only = slash && !strcmp(slash, "v6only");
        return slash && !a->v6only ? -1 : 0;
    }
    return -1;
}

static void set_port(struct addr *a, unsigned port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((unsigned short)port);
    else
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((unsigned short)port);
}

static unsigned get_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die("getsockname");
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int make_socket(int type, const struct addr *a, const char *opts)
{
    int fd = socket(a->ss.ss_family, type | SOCK_CLOEXEC, 0), one = 1;
    struct timeval tv = {2, 0};

    if (fd < 0)
        die("socket");
    if (strchr(opts, 'A') && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        die("SO_REUSEADDR");
    if (strchr(opts, 'P') && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        die("SO_REUSEPORT");
    if (a->v6only >= 0 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &a->v6only, sizeof(a->v6only)) < 0)
        die("IPV6_V6ONLY");
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* A port that no socket holds on any address: ask the dual-stack wildcard. */
static unsigned free_port(int type)
{
    struct addr any;
    unsigned port;
    int fd;

    parse_addr("::", &any);
    fd = make_socket(type, &any, "-");
    if (bind(fd, (struct sockaddr *)&any.ss, any.len) < 0)
        die("bind [::]:0");
    port = get_port(fd);
    close(fd);
    return port;
}

static void read_eof(int fd)
{
    char b[16];
    ssize_t n;

    while ((n = read(fd, b, sizeof(b))) > 0)
        ;
    if (n < 0)
        die("waiting for FIN");
}

/* A client bound to a:port that closes first: a:port ends in TIME_WAIT. */
static void time_wait(struct addr *a, const char *opts)
{
    struct addr srv;
    int l, c, s;

    parse_addr(a->ss.ss_family == AF_INET ? "127.0.0.1" : "::1", &srv);
    l = make_socket(SOCK_STREAM, &srv, "-");
    if (bind(l, (struct sockaddr *)&srv.ss, srv.len) < 0 || listen(l, 4) < 0)
        die("server");
    set_port(&srv, get_port(l));
    c = make_socket(SOCK_STREAM, a, opts);
    if (bind(c, (struct sockaddr *)&a->ss, a->len) < 0)
        die("bind client");
    if (connect(c, (struct sockaddr *)&srv.ss, srv.len) < 0)
        die("connect");
    s = accept(l, NULL, NULL);
    if (s < 0)
        die("accept");
    shutdown(c, SHUT_WR);
    read_eof(s);
    close(s);
    read_eof(c); /* the server's FIN: the client is in TIME_WAIT now */
    close(c);
    close(l);
}

static void second(int type, struct addr *a, const char *opts)
{
    int fd = make_socket(type, a, opts);

    if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0) {
        printf("bind=%s listen=-\n", strerrorname_np(errno));
    } else if (type == SOCK_STREAM) {
        printf("bind=ok listen=%s\n", listen(fd, 4) < 0 ? strerrorname_np(errno) : "ok");
    } else {
        printf("bind=ok listen=-\n");
    }
    fflush(stdout);
    close(fd);
}

int main(int argc, char **argv)
{
    struct addr a1, a2;
    unsigned port;
    int type, first = -1, status;
    pid_t pid;

    if (argc < 7 || argc > 8 || parse_addr(argv[3], &a1) < 0 || parse_addr(argv[5], &a2) < 0) {
        fprintf(stderr, "usage: probe_pair tcp|udp bound|listening|time_wait ADDR1 OPTS1 ADDR2 "
                        "OPTS2 [UID2]\n");
        return 2;
    }
    type = !strcmp(argv[1], "udp") ? SOCK_DGRAM : SOCK_STREAM;
    port = free_port(type);
    set_port(&a1, port);
    set_port(&a2, port);
    if (!strcmp(argv[2], "time_wait")) {
        time_wait(&a1, argv[4]);
    } else {
        first = make_socket(type, &a1, argv[4]);
        if (bind(first, (struct sockaddr *)&a1.ss, a1.len) < 0)
            die("bind first");
        if (!strcmp(argv[2], "listening") && listen(first, 4) < 0)
            die("listen first");
    }
    if (argc == 7) {
        second(type, &a2, argv[6]);
        return 0;
    }
    pid = fork();
    if (pid == 0) {
        uid_t uid = (uid_t)atoi(argv[7]);

        if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
            die("setresuid");
        second(type, &a2, argv[6]);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
        die("child");
    close(first);
    return 0;
}
