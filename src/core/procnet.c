/*
 * procnet.c - what /proc says about sockets: who holds a port (as ss -p
 * finds it: /proc/net/{tcp,udp}[6], then every /proc/PID/fd), and which
 * sockets besides ours listen in a reuseport group.
 *
 * Everything here reads /proc and costs O(sockets) or O(processes x
 * descriptors): for error messages and start-up checks, never a hot path.
 */
#include "core.h"

#include <dirent.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* --- reuseport group members that are not ours --------------------------- */

struct member_search {
    char want[40];                     /* our address, as /proc/net prints it */
    unsigned long ours[PS__GROUP_MAX]; /* inodes of our own sockets */
    int nours;
    int foreign;
    unsigned long first; /* the first foreign inode */
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
    if (!m->foreign++)
        m->first = sock->inode;
    return 0;
}

int ps__reuseport_foreign(const struct ps_spec *spec, const int *fds, int n, unsigned long *first)
{
    struct member_search m; /* 8 KiB: fine on a stack, and thread-safe */
    int k;

    *first = 0;
    if (spec->proto == PS_PROTO_UNIX)
        return 0;
    if (n > (int)PS__ARRAY_LEN(m.ours))
        return -E2BIG;
    memset(&m, 0, sizeof(m));
    ps__proc_net_hex(&spec->addr, m.want, sizeof(m.want));
    for (k = 0; k < n; k++) {
        struct stat st;
        if (fstat(fds[k], &st) == 0)
            m.ours[m.nours++] = (unsigned long)st.st_ino;
    }
    ps__proc_net_each(spec->proto, spec->port, count_foreign, &m);
    *first = m.first;
    return m.foreign;
}
