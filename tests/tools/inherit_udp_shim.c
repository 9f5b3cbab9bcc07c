/*
 * inherit_udp_shim.c - test-only LD_PRELOAD shim: an unmodified UDP server
 * that binds its own socket serves on the one portshare hands it.
 *
 * Programs such as ngtcp2's example server (gtlsserver) create, configure
 * and bind their UDP socket themselves and know nothing of LISTEN_FDS.
 * Under portshare every generation must serve on the sockets it was given
 * (they are the ones the reuseport program steers flows to), so when such
 * a program binds a UDP socket to the address of an inherited one, this
 * shim puts the inherited socket in its place (dup3 onto the program's fd)
 * and replays on it the options the program set before bind (IP_PKTINFO and
 * the like, which the program relies on when it reads).  A bind to port 0
 * of that address gets it too: the program may be told port 0 when the
 * port is the kernel's choice.  Every other socket, and every bind to
 * another address, is left to libc.
 *
 * Inherited sockets: fds 3 .. 3+LISTEN_FDS-1 (systemd's protocol), taken
 * only when LISTEN_PID is this process.  PS_SHIM_LOG=1 says on stderr what
 * was replaced.  Build: a shared object (tests/CMakeLists.txt); use:
 * LD_PRELOAD=/path/inherit_udp_shim.so program ...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dup3, RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_OPTS   32
#define MAX_OPTLEN 64

/* the options set on a not yet bound UDP socket, replayed on the inherited
 * one; a handful per socket in practice, so one small table for all */
struct opt {
    int fd, level, name;
    socklen_t len;
    unsigned char val[MAX_OPTLEN];
};
static struct opt opts[MAX_OPTS];
static int nopts;

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);
typedef int (*close_fn)(int);

static void *next_sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static int is_udp(int fd)
{
    int type = 0;
    socklen_t len = sizeof(type);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return 0;
    return type == SOCK_DGRAM;
}

static void forget(int fd)
{
    int i, j = 0;

    for (i = 0; i < nopts; i++)
        if (opts[i].fd != fd)
            opts[j++] = opts[i];
    nopts = j;
}

/* same family and address (IPv4 or IPv6), and same port or port 0: the
 * program may not know the port portshare bound (`-l udp://HOST:0`) */
static int same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return (x->sin_port == 0 || x->sin_port == y->sin_port) &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return (x->sin6_port == 0 || x->sin6_port == y->sin6_port) &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

/* the inherited UDP socket bound to ADDR, or -1 */
static int inherited_for(const struct sockaddr *addr)
{
    const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
    int fd, count;

    if (pid == NULL || n == NULL || atoi(pid) != (int)getpid())
        return -1;
    count = atoi(n);
    for (fd = 3; fd < 3 + count; fd++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        if (!is_udp(fd) || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            continue;
        if (same_addr(addr, &ss))
            return fd;
    }
    return -1;
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    static setsockopt_fn real;
    int rc;

    if (real == NULL)
        real = (setsockopt_fn)next_sym("setsockopt");
    rc = real(fd, level, name, val, len);
    /* remembered only for UDP sockets that bind may still replace */
    if (rc == 0 && nopts < MAX_OPTS && len <= MAX_OPTLEN && is_udp(fd)) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
            ((ss.ss_family == AF_INET && ((struct sockaddr_in *)&ss)->sin_port == 0) ||
             (ss.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&ss)->sin6_port == 0))) {
            struct opt *o = &opts[nopts++];

            o->fd = fd, o->level = level, o->name = name, o->len = len;
            memcpy(o->val, val, len);
        }
    }
    return rc;
}

/* puts INHERITED in FD's place, keeping FD's close-on-exec and non-blocking
 * flags, and replays the options FD had; 0 or -1 with errno */
static int replace(int fd, int inherited)
{
    static setsockopt_fn real_setsockopt;
    int fdflags = fcntl(fd, F_GETFD), flflags = fcntl(fd, F_GETFL), i;

    if (real_setsockopt == NULL)
        real_setsockopt = (setsockopt_fn)next_sym("setsockopt");
    if (fdflags < 0 || flflags < 0)
        return -1;
    if (dup3(inherited, fd, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
        return -1;
    /* the status flags belong to the open file, shared with INHERITED */
    if ((flflags & O_NONBLOCK) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        return -1;
    for (i = 0; i < nopts; i++) {
        if (opts[i].fd != fd)
            continue;
        if (real_setsockopt(fd, opts[i].level, opts[i].name, opts[i].val, opts[i].len) < 0)
            return -1;
    }
    forget(fd);
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static bind_fn real;
    int inherited;

    if (real == NULL)
        real = (bind_fn)next_sym("bind");
    if (addr == NULL || len < sizeof(sa_family_t) || !is_udp(fd))
        return real(fd, addr, len);
    inherited = inherited_for(addr);
    if (inherited < 0 || inherited == fd)
        return real(fd, addr, len);
    if (replace(fd, inherited) < 0)
        return -1;
    if (getenv("PS_SHIM_LOG") != NULL)
        fprintf(stderr, "inherit_udp_shim: fd %d is now inherited fd %d\n", fd, inherited);
    return 0;
}

int close(int fd)
{
    static close_fn real;

    if (real == NULL)
        real = (close_fn)next_sym("close");
    forget(fd);
    return real(fd);
}
