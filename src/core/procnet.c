/*
 * procnet.c - what the kernel says about sockets: who holds a port (as ss -p
 * finds it: the sock_diag dump, or /proc/net/{tcp,udp}[6], then every
 * /proc/PID/fd), and which sockets besides ours listen in a reuseport group.
 *
 * The listener check costs O(listening sockets) (O(sockets) from /proc);
 * finding a holder O(processes x descriptors): for error messages and
 * start-up checks, never a hot path.
 */
#include "core.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define TCP_STATE_LISTEN 10 /* include/net/tcp_states.h; 0x0A in /proc/net/tcp */

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

/* The sockets of one family from /proc/net/{tcp,udp}[6]: every socket of
 * the namespace is printed, so the time is that of all its connections. */
static int proc_each(const char *file, int tcp, unsigned port,
                     int (*fn)(const struct ps__proc_sock *sock, void *ctx), void *ctx)
{
    struct ps__proc_sock sock;
    char line[512], local[64], *colon;
    FILE *f = fopen(file, "re");
    int r = 0;

    if (!f)
        return 0;
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
        if (tcp && sock.state != TCP_STATE_LISTEN) /* other states hold no port */
            continue;
        strcpy(sock.hexaddr, local);
        r = fn(&sock, ctx);
    }
    fclose(f);
    return r;
}

/*
 * The same from the kernel's sock_diag netlink dump, as ss lists sockets.
 * Asked for TCP_LISTEN only, the kernel walks its listening hash and skips
 * the established one (TIME_WAIT included): on this machine, with 52,000
 * sockets of other tests in the namespace, a read of /proc/net/tcp took
 * 230 ms, and start-up makes one per listener.  The port is compared here,
 * not handed to the kernel as a filter.  Returns fn's value or 0 in *r, and
 * 0; or -errno when the dump cannot be had (no inet_diag in the kernel, a
 * netlink we may not open): then /proc is read instead, and fn may see a
 * socket twice if the dump broke off midway (its callers count "any", and
 * keep the first).
 */
static int diag_each(int family, int tcp, unsigned port,
                     int (*fn)(const struct ps__proc_sock *sock, void *ctx), void *ctx, int *r)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } q;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    long buf[8192 / sizeof(long)]; /* aligned for nlmsghdr */
    int fd, err = 0;

    fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return -errno;
    memset(&q, 0, sizeof(q));
    q.nlh.nlmsg_len = sizeof(q);
    q.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    q.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    q.nlh.nlmsg_seq = 1;
    q.req.sdiag_family = (unsigned char)family;
    q.req.sdiag_protocol = tcp ? IPPROTO_TCP : IPPROTO_UDP;
    q.req.idiag_states = tcp ? 1u << TCP_STATE_LISTEN : ~0u;
    if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        err = -errno;
        goto out;
    }
    *r = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        struct nlmsghdr *h;

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : -EIO;
            goto out;
        }
        for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            struct sockaddr_storage ss;
            struct ps__proc_sock sock;

            if (h->nlmsg_type == NLMSG_DONE) {
                /* a dump that failed says so in its DONE's payload */
                if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)) && *(const int *)NLMSG_DATA(h) < 0)
                    err = *(const int *)NLMSG_DATA(h);
                goto out;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                err = h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error ? e->error : -EIO;
                goto out;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
                continue;
            if (m->idiag_family != family || ntohs(m->id.idiag_sport) != port || !m->idiag_inode)
                continue;
            if (tcp && m->idiag_state != TCP_STATE_LISTEN)
                continue;
            memset(&ss, 0, sizeof(ss));
            ss.ss_family = (sa_family_t)family;
            if (family == AF_INET6)
                memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, m->id.idiag_src, 16);
            else
                memcpy(&((struct sockaddr_in *)&ss)->sin_addr, m->id.idiag_src, 4);
            ps__proc_net_hex(&ss, sock.hexaddr, sizeof(sock.hexaddr));
            sock.port = port;
            sock.state = m->idiag_state;
            sock.inode = m->idiag_inode;
            *r = fn(&sock, ctx);
            if (*r)
                goto out; /* fn has what it wanted: the rest of the dump is not read */
        }
    }
out:
    close(fd);
    return err;
}

int ps__proc_net_each(enum ps_proto proto, unsigned port,
                      int (*fn)(const struct ps__proc_sock *sock, void *ctx), void *ctx)
{
    static const int families[2] = {AF_INET, AF_INET6};
    int tcp = proto == PS_PROTO_TCP, r = 0;
    size_t i;

    for (i = 0; i < 2 && !r; i++) {
        const char *file = i == 0 ? (tcp ? "/proc/net/tcp" : "/proc/net/udp")
                                  : (tcp ? "/proc/net/tcp6" : "/proc/net/udp6");
        if (diag_each(families[i], tcp, port, fn, ctx, &r) < 0)
            r = proc_each(file, tcp, port, fn, ctx);
    }
    return r;
}

static int count_none(const struct ps__proc_sock *sock, void *ctx)
{
    (void)sock;
    (void)ctx;
    return 0;
}

int ps__proc_net_diag(void)
{
    int r = 0;

    /* port 0: no listener matches; the dump itself is the question */
    return diag_each(AF_INET, 1, 0, count_none, NULL, &r);
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

/* --- reuseport group members that are not ours --------------------------- */

struct member_search {
    char want[40];             /* our address, as /proc/net prints it */
    const unsigned long *ours; /* inodes of our own sockets */
    int nours;
    int foreign;
    unsigned long *found; /* the first max foreign inodes */
    int max;
};

static int count_foreign(const struct ps__proc_sock *sock, void *ctx)
{
    struct member_search *m = ctx;
    int k;

    /* only an exact address match joins a reuseport group */
    if (strcmp(sock->hexaddr, m->want) != 0)
        return 0;
    for (k = 0; k < m->nours; k++)
        if (m->ours[k] == sock->inode)
            return 0;
    /* a dump that broke off and was read again from /proc may show a
     * socket twice: count it once */
    for (k = 0; k < m->foreign && k < m->max; k++)
        if (m->found[k] == sock->inode)
            return 0;
    if (m->foreign < m->max)
        m->found[m->foreign] = sock->inode;
    m->foreign++;
    return 0;
}

int ps__reuseport_members(const struct ps_spec *spec, const unsigned long *ours, int nours,
                          unsigned long *foreign, int max)
{
    struct member_search m;

    if (spec->proto == PS_PROTO_UNIX)
        return 0;
    memset(&m, 0, sizeof(m));
    ps__proc_net_hex(&spec->addr, m.want, sizeof(m.want));
    m.ours = ours;
    m.nours = nours;
    m.found = foreign;
    m.max = max;
    ps__proc_net_each(spec->proto, spec->port, count_foreign, &m);
    return m.foreign;
}

int ps__reuseport_foreign(const struct ps_spec *spec, const int *fds, int n, unsigned long *first)
{
    unsigned long ours[PS__GROUP_MAX]; /* 8 KiB: fine on a stack, and thread-safe */
    int k, nours = 0;

    *first = 0;
    if (n > (int)PS__ARRAY_LEN(ours))
        return -E2BIG;
    for (k = 0; k < n; k++) {
        struct stat st;
        if (fstat(fds[k], &st) == 0)
            ours[nours++] = (unsigned long)st.st_ino;
    }
    return ps__reuseport_members(spec, ours, nours, first, 1);
}
