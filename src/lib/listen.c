/*
 * listen.c - listening sockets: one socket, or a SO_REUSEPORT group of them.
 *
 * Option order matters: SO_REUSEADDR and SO_REUSEPORT must be set before
 * bind(2) (man 7 socket), IPV6_V6ONLY too (man 7 ipv6), and all sockets of a
 * reuseport group must belong to the same effective UID, so groups are
 * created before any privilege drop.
 */
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int setopt_int(int fd, int level, int name, int value)
{
    if (setsockopt(fd, level, name, &value, sizeof(value)) < 0)
        return ps__neg_errno();
    return 0;
}

/* A path that is a socket with no listener behind it is left over from a
 * process that died; remove it so bind() can succeed.  A live one stays and
 * bind() reports EADDRINUSE. */
static void remove_stale_unix(const struct ps_spec *spec)
{
    struct stat st;
    int probe;

    if (spec->host[0] == '@' || lstat(spec->host, &st) < 0 || !S_ISSOCK(st.st_mode))
        return;
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return;
    if (connect(probe, (const struct sockaddr *)&spec->addr, spec->addrlen) < 0 &&
        errno == ECONNREFUSED)
        unlink(spec->host);
    ps__close(probe);
}

static int socket_type(const struct ps_spec *spec)
{
    return spec->proto == PS_PROTO_UDP ? SOCK_DGRAM : SOCK_STREAM;
}

static int configure(int fd, const struct ps_spec *spec, int flags)
{
    int family = spec->addr.ss_family;
    int r;

    if (family == AF_UNIX)
        return 0;
    if (spec->proto == PS_PROTO_TCP) {
        /* restart while old connections sit in TIME_WAIT */
        r = setopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (r < 0)
            return r;
    }
    if (spec->reuse == PS_REUSE_PORT && !(flags & PS_LISTEN_NO_REUSEPORT)) {
        r = ps__os_set_reuseport(fd);
        if (r < 0)
            return r;
    }
    if (family == AF_INET6) {
        r = setopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, spec->v6only ? 1 : 0);
        if (r < 0)
            return r;
    }
    return 0;
}

int ps_listen_open(const struct ps_spec *spec, int flags)
{
    int type = socket_type(spec) | SOCK_CLOEXEC;
    mode_t old_umask = 0;
    int fd, r;

    if (flags & PS_LISTEN_NONBLOCK)
        type |= SOCK_NONBLOCK;
    fd = socket(spec->addr.ss_family, type, 0);
    if (fd < 0)
        return ps__neg_errno();
    r = configure(fd, spec, flags);
    if (r < 0)
        goto error;
    if (spec->proto == PS_PROTO_UNIX) {
        remove_stale_unix(spec);
        if (spec->unix_mode)
            old_umask = umask(0777 & ~spec->unix_mode);
    }
    r = bind(fd, (const struct sockaddr *)&spec->addr, spec->addrlen);
    if (spec->proto == PS_PROTO_UNIX && spec->unix_mode)
        umask(old_umask);
    if (r < 0) {
        r = ps__neg_errno();
        goto error;
    }
    if (spec->proto != PS_PROTO_UDP && listen(fd, spec->backlog) < 0) {
        r = ps__neg_errno();
        goto error;
    }
    return fd;

error:
    ps__close(fd);
    return r;
}

/* Write the port the kernel picked back into the spec. */
static int learn_port(int fd, struct ps_spec *spec)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return ps__neg_errno();
    if (ss.ss_family == AF_INET) {
        ((struct sockaddr_in *)&spec->addr)->sin_port = ((struct sockaddr_in *)&ss)->sin_port;
        spec->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)&spec->addr)->sin6_port = ((struct sockaddr_in6 *)&ss)->sin6_port;
        spec->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return 0;
}

int ps_listen_group_open(struct ps_spec *spec, int n, int *fds, int flags)
{
    int i, r;

    if (n < 1)
        return -EINVAL;
    if (n > 1 && spec->reuse != PS_REUSE_PORT)
        return -EINVAL;
    for (i = 0; i < n; i++)
        fds[i] = -1;
    for (i = 0; i < n; i++) {
        fds[i] = ps_listen_open(spec, flags);
        if (fds[i] < 0) {
            r = fds[i];
            goto error;
        }
        if (i == 0 && spec->proto != PS_PROTO_UNIX && spec->port == 0) {
            r = learn_port(fds[0], spec);
            if (r < 0)
                goto error;
        }
    }
    return 0;

error:
    for (i = 0; i < n; i++) {
        ps__close(fds[i]);
        fds[i] = -1;
    }
    return r;
}

int ps_listen_queue(int fd, unsigned *queued, unsigned *limit)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return errno == ENOPROTOOPT || errno == EOPNOTSUPP ? -EOPNOTSUPP : ps__neg_errno();
    if (ti.tcpi_state != TCP_LISTEN)
        return -EOPNOTSUPP;
    /* For listeners, tcp_get_info() reports the accept queue in
     * tcpi_unacked and the backlog in tcpi_sacked (since Linux 2.6.x). */
    *queued = ti.tcpi_unacked;
    *limit = ti.tcpi_sacked;
    return 0;
}

/* --- who holds a port: /proc/net/{tcp,udp}[6], then /proc/PID/fd, like ss -p --- */

void ps__proc_net_hex(const struct sockaddr_storage *ss, char *out, size_t len)
{
    const unsigned char *raw;
    size_t n, i;

    if (ss->ss_family == AF_INET6) {
        raw = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        n = 16;
    } else {
        raw = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
        n = 4;
    }
    out[0] = '\0';
    for (i = 0; i < n && 2 * i + 8 < len; i += 4) {
        uint32_t w;
        memcpy(&w, raw + i, 4);
        snprintf(out + 2 * i, len - 2 * i, "%08X", w);
    }
}

int ps__proc_net_each(enum ps_proto proto, unsigned port,
                      int (*fn)(const struct ps__proc_sock *sock, void *ctx), void *ctx)
{
    const char *files[2];
    int tcp = proto == PS_PROTO_TCP, r = 0;
    size_t i;

    files[0] = tcp ? "/proc/net/tcp" : "/proc/net/udp";
    files[1] = tcp ? "/proc/net/tcp6" : "/proc/net/udp6";
    for (i = 0; i < 2 && !r; i++) {
        struct ps__proc_sock sock;
        char line[512], local[64], *colon;
        FILE *f = fopen(files[i], "re");
        if (!f)
            continue;
        while (!r && fgets(line, sizeof(line), f)) {
            if (sscanf(line, " %*d: %63s %*s %x %*s %*s %*s %*d %*d %lu", local, &sock.state,
                       &sock.inode) != 3)
                continue; /* the header line, or a line we do not understand */
            colon = strchr(local, ':');
            if (!colon || colon - local >= (long)sizeof(sock.hexaddr))
                continue;
            *colon = '\0';
            sock.port = (unsigned)strtoul(colon + 1, NULL, 16);
            if (sock.port != port || sock.inode == 0)
                continue;
            if (tcp && sock.state != 0x0A) /* TCP_LISTEN: other states hold no port */
                continue;
            strcpy(sock.hexaddr, local);
            r = fn(&sock, ctx);
        }
        fclose(f);
    }
    return r;
}

static int hex_is_zero(const char *hex)
{
    return hex[strspn(hex, "0")] == '\0';
}

/* Does a socket bound to hexaddr (as /proc/net prints it: 8 hex digits for
 * IPv4, 32 for IPv6) conflict with the spec's address? */
static int hex_addr_matches(const char *hexaddr, const struct ps_spec *spec)
{
    int v6 = spec->addr.ss_family == AF_INET6;
    char want[40];

    ps__proc_net_hex(&spec->addr, want, sizeof(want));
    /* same family: a wildcard on either side conflicts with anything */
    if ((strlen(hexaddr) == 32) == v6)
        return hex_is_zero(hexaddr) || hex_is_zero(want) || !strcmp(hexaddr, want);
    /* an IPv6 spec meets IPv4 sockets only as a dual-stack wildcard */
    if (v6)
        return hex_is_zero(want) && !spec->v6only;
    /* an IPv4 spec meets IPv6 sockets bound to [::] (dual-stack unless
     * v6only, which /proc does not show) or to ::ffff:a.b.c.d */
    return hex_is_zero(hexaddr) || (!strncmp(hexaddr, "0000000000000000FFFF0000", 24) &&
                                    (hex_is_zero(want) || !strcmp(hexaddr + 24, want)));
}

struct owner_search {
    const struct ps_spec *spec;
    unsigned long inode;
};

static int first_conflicting(const struct ps__proc_sock *sock, void *ctx)
{
    struct owner_search *search = ctx;

    if (!hex_addr_matches(sock->hexaddr, search->spec))
        return 0;
    search->inode = sock->inode;
    return 1;
}

static int pid_holds_inode(const char *pid, unsigned long inode)
{
    char path[300], target[64], want[48];
    struct dirent *de;
    DIR *d;
    int found = 0;

    snprintf(path, sizeof(path), "/proc/%s/fd", pid);
    snprintf(want, sizeof(want), "socket:[%lu]", inode);
    d = opendir(path);
    if (!d)
        return 0;
    while (!found && (de = readdir(d))) {
        char link[600];
        ssize_t n;
        if (de->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
        n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        found = !strcmp(target, want);
    }
    closedir(d);
    return found;
}

int ps__inode_owner(unsigned long inode, pid_t *pid, char *comm, size_t commlen)
{
    struct dirent *de;
    DIR *proc = opendir("/proc");

    if (!proc)
        return ps__neg_errno();
    while ((de = readdir(proc))) {
        char path[300];
        FILE *f;
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        if (!pid_holds_inode(de->d_name, inode))
            continue;
        *pid = (pid_t)atoi(de->d_name);
        snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
        if (comm && commlen) {
            comm[0] = '\0';
            f = fopen(path, "re");
            if (f) {
                if (fgets(comm, (int)commlen, f))
                    comm[strcspn(comm, "\n")] = '\0';
                fclose(f);
            }
        }
        closedir(proc);
        return 0;
    }
    closedir(proc);
    return -ENOENT;
}

int ps_port_owner(const struct ps_spec *spec, pid_t *pid, char *comm, size_t commlen)
{
    struct owner_search search = {spec, 0};

    if (spec->proto == PS_PROTO_UNIX)
        return -ENOENT;
    /* both files: an IPv4 spec can collide with a dual-stack IPv6 socket */
    if (!ps__proc_net_each(spec->proto, spec->port, first_conflicting, &search))
        return -ENOENT;
    return ps__inode_owner(search.inode, pid, comm, commlen);
}
