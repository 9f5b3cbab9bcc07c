/*
 * core.h - the core's private header: helpers shared by libportshare's
 * modules and by the layers built on it (supervisor, HTTP worker, probe).
 * Not installed.  Internal non-static names carry the ps__ prefix; they are
 * hidden in libportshare.so (-fvisibility=hidden) and reach the layers above
 * only through the static archive the portshare binary links.
 */
#ifndef PS_CORE_H
#define PS_CORE_H

#include "portshare.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define PS__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* -errno of the last failed call, never 0 (so a caller can always return it). */
static inline int ps__neg_errno(void)
{
    return errno > 0 ? -errno : -EIO;
}

/* snprintf into an error buffer that may be NULL; always NUL-terminates. */
void ps__set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* close() that keeps errno and ignores EINTR (Linux always frees the fd). */
void ps__close(int fd);

/* CLOCK_MONOTONIC in milliseconds: the one clock every timer uses. */
uint64_t ps__now_ms(void);

/* Parse a decimal integer in [min, max]; the whole string must be a number. */
int ps__parse_long(const char *s, long min, long max, long *out);

/* A duration: a number with ms, s (or none), m or min; at most a day.
 * 0 and *ms, or -EINVAL / -ERANGE. */
int ps__parse_duration_ms(const char *text, unsigned *ms);

/*
 * ps_spec_parse() with flags.  PS__SPEC_NUMERIC refuses host names with
 * -EADDRNOTAVAIL instead of resolving them (AI_NUMERICHOST), so that the
 * fuzzer never reaches the resolver or the network.
 */
#define PS__SPEC_NUMERIC 0x1
int ps__spec_parse(const char *text, struct ps_spec *spec, int flags, char *err, size_t errlen);

/*
 * What spec a socket answers to: its address (getsockname), proto (family
 * and SO_TYPE), host and port as a spec writes them, reuse (SO_REUSEPORT),
 * v6only, backlog (a TCP listener's TCP_INFO; else the default) and text
 * (ps_spec_format); name empty, defer_accept 0.  0, or -errno
 * (-EAFNOSUPPORT: not an inet or unix socket).  A few syscalls.
 */
int ps__spec_of_fd(int fd, struct ps_spec *spec);

/* Fill a sockaddr_un from "path" or "@abstract" and its length into *len.
 * Returns 0, -EINVAL (empty, or "@" alone) or -ENAMETOOLONG. */
int ps__unix_addr(const char *address, struct sockaddr_storage *ss, socklen_t *len);

/* One socket as /proc/net/{tcp,udp}[6] shows it (sock_diag answers are put so too). */
struct ps__proc_sock {
    char hexaddr[40];    /* local address: raw 32-bit words, host order, in hex */
    unsigned port;       /* local port */
    unsigned state;      /* TCP state (0x0A = LISTEN) */
    unsigned long inode; /* the socket's inode, as in /proc/PID/fd links */
};

/*
 * Call fn for every socket of proto (TCP: listening only) on local port,
 * IPv4 then IPv6, until fn returns non-zero; returns that value, or 0.  One
 * sock_diag dump per family (listening sockets only, for TCP), or where the
 * kernel has none one read of /proc/net/PROTO and /proc/net/PROTO6.
 */
int ps__proc_net_each(enum ps_proto proto, unsigned port,
                      int (*fn)(const struct ps__proc_sock *sock, void *ctx), void *ctx);

/* 0 when the kernel's sock_diag dump can be had (what ps__proc_net_each
 * reads first), else -errno: ps__proc_net_each then reads /proc/net
 * instead (slow with many sockets).  One dump of the listening sockets. */
int ps__proc_net_diag(void);

/* An address as /proc/net prints it (see struct ps__proc_sock). */
void ps__proc_net_hex(const struct sockaddr_storage *ss, char *out, size_t len);

/* The first process (lowest pid) holding socket inode in its descriptor
 * table, and its command name.  -ENOENT when none is visible.  O(processes x
 * descriptors). */
int ps__inode_owner(unsigned long inode, pid_t *pid, char *comm, size_t commlen);

/* The most sockets one reuseport group can have (one per worker slot). */
#define PS__GROUP_MAX 1024

/*
 * A listener group: the sockets bound for one spec, one per slot in a
 * SO_REUSEPORT group, or one shared socket; what ps_listen_group_open and
 * the supervisor build on.  It knows the kernel's order of the group's
 * members (a classic BPF program selects by that index): a socket joins at
 * the end, and one that leaves is replaced by the last
 * (net/core/sock_reuseport.c); members of another process (foreign: the
 * kernel lets a socket of the same uid join) are tracked there too.
 *
 * The fields are a macro so that the supervisor's group can hold them as
 * its own members (an anonymous struct in a union with the named one):
 * its modules read g->fds, g->nfds... while only the functions below
 * change them.
 */
#define PS__FOREIGN_MAX 16
#define PS__LGROUP_FIELDS                                                                          \
    struct ps_spec spec; /* its port is the kernel's pick once a port-0 spec is open */            \
    int shared;          /* one socket without SO_REUSEPORT, for every slot */                     \
    int flags;           /* PS_LISTEN_* for every socket it opens */                               \
    int by_index;        /* steered by kernel index: look for foreign members before a change */   \
    int nfds;                                                                                      \
    int fds[PS__GROUP_MAX];                                                                        \
    unsigned long ino[PS__GROUP_MAX];  /* fds[i]'s inode; 0: not looked up yet */                  \
    unsigned char down[PS__GROUP_MAX]; /* shut down by ps__lgroup_shutdown, not listening */       \
    /* order[]: our slots, the listening ones first, in the kernel's order */                      \
    int order[PS__GROUP_MAX];                                                                      \
    int nforeign; /* foreign members now (the first PS__FOREIGN_MAX tracked) */                    \
    int ntracked;                                                                                  \
    unsigned long foreign[PS__FOREIGN_MAX]; /* their inodes, in join order */                      \
    int fpos[PS__FOREIGN_MAX];              /* their index in the kernel's group */                \
    /* sockets we let go while a worker still holds them (ps__lgroup_renew,                        \
     * ps__lgroup_commit): still members of the kernel's group, but ours,                          \
     * never foreign; a ring as large as the group, so that a whole                                \
     * generation let go at once is remembered */                                                  \
    unsigned long retired[PS__GROUP_MAX];                                                          \
    int nretired; /* entries used in retired[], a ring once full */                                \
    /* the next generation's socket of each slot (ps__lgroup_prepare), -1:                         \
     * none; a member of the kernel's group, given to no one but that                              \
     * generation's worker until ps__lgroup_commit */                                              \
    int nextfds[PS__GROUP_MAX];
struct ps__lgroup {
    PS__LGROUP_FIELDS
};

/* An empty group for spec (shared: one socket, no SO_REUSEPORT). */
void ps__lgroup_init(struct ps__lgroup *g, const struct ps_spec *spec, int shared);

/*
 * Bind n sockets (1 when shared).  A port-0 spec gets the kernel's port,
 * pinned: the first socket is bound again by number, so that it keeps the
 * port when it stops listening (ps__lgroup_relisten relies on that).  With
 * refuse_foreign, a port where another process already listens in the
 * reuseport group is refused (-EADDRINUSE, err naming it when visible).
 * 0, or -errno with err naming the address; nothing stays open.
 * O(n) sockets, plus one sock_diag dump with refuse_foreign.
 */
int ps__lgroup_open(struct ps__lgroup *g, int n, int refuse_foreign, char *err, size_t errlen);

/* Add sockets at the end until g has n (no-op when shared); all or
 * nothing: on failure what this call opened is closed again and err says
 * why.  0 or -errno. */
int ps__lgroup_grow(struct ps__lgroup *g, int n, char *err, size_t errlen);

/* Close the last socket (never the only one); ps__lgroup_shrink: until
 * g has n. */
void ps__lgroup_close_last(struct ps__lgroup *g);
void ps__lgroup_shrink(struct ps__lgroup *g, int n);

/* Close every socket. */
void ps__lgroup_close(struct ps__lgroup *g);

/* shutdown(2) socket i: it stops listening for every holder (what it had
 * queued is reset, or migrated by an eBPF program); *queued gets what was
 * queued.  0 or -errno. */
int ps__lgroup_shutdown(struct ps__lgroup *g, int i, unsigned *queued);

/* listen(2) again, in place, on socket i if it stopped (ours, or a holder
 * called shutdown(2) on its copy): 1 when it listens again, 0 when it was
 * listening (or is not a TCP socket), -errno when it cannot; a socket that
 * lost its port is left as it is (-EADDRNOTAVAIL), never listening on
 * another one. */
int ps__lgroup_relisten(struct ps__lgroup *g, int i);

/* Socket i, shut down, is replaced by a new one bound to the same address
 * (copies of the old one never see a connection again).  0, or -errno and
 * socket i listens again in place if it can. */
int ps__lgroup_replace(struct ps__lgroup *g, int i);

/* Socket i, still listening, gets a fresh socket that joins the group
 * first (so that what the old one hands over has a listener to go to);
 * *queued gets what waited in the old one.  With at_once the old one is
 * shut down now (every holder's copy stops, its queue moves where a
 * migrating program sends it); else only our descriptor is closed, and the
 * old socket stays a member of the kernel's group until its last holder (a
 * leaving worker) closes it: it is remembered as ours, never reported as
 * foreign.  0 or -errno (nothing changed). */
int ps__lgroup_renew(struct ps__lgroup *g, int i, int at_once, unsigned *queued);

/*
 * A generation of its own sockets: ps__lgroup_prepare binds socket i's
 * successor (nextfds[i]: the same address, joining the kernel's group at the
 * end, given to the next generation's worker only); ps__lgroup_commit makes
 * it socket i and lets the old one go as ps__lgroup_renew does without
 * at_once (our copy closed, remembered as ours while a worker holds it);
 * ps__lgroup_discard closes it again (a rollback: what it had queued moves
 * where a migrating program sends it).  Not for a shared group.  prepare:
 * 0 (also when one is prepared already) or -errno; a bind and a listen.
 */
int ps__lgroup_prepare(struct ps__lgroup *g, int i);
void ps__lgroup_commit(struct ps__lgroup *g, int i);
void ps__lgroup_discard(struct ps__lgroup *g, int i);

/* Look at who else listens in a TCP reuseport group (one sock_diag dump):
 * nforeign and the kernel's order updated; 1 when they changed, else 0.
 * O(listeners on the port x nfds). */
int ps__lgroup_foreign_sync(struct ps__lgroup *g);

/* Our sockets in the kernel's group (the listening ones): order[0..n-1];
 * kidx[k] gets the kernel's index of order[k], foreign members counted.
 * O(nfds + foreign). */
int ps__lgroup_listening(const struct ps__lgroup *g);
void ps__lgroup_kernel_indexes(const struct ps__lgroup *g, int *kidx);

/*
 * How many TCP/UDP sockets bound to exactly spec's address and port are not
 * among fds[0..n-1] (a reuseport group's own sockets): another process of
 * the same uid that joined the group would silently get a share of its
 * connections.  *first gets the first such socket's inode (for
 * ps__inode_owner).  0 for unix specs; -E2BIG when n > PS__GROUP_MAX.
 * One read of /proc/net/PROTO{,6}.
 */
int ps__reuseport_foreign(const struct ps_spec *spec, const int *fds, int n, unsigned long *first);

/*
 * The same from our sockets' inodes (ours[0..nours-1]): how many sockets
 * bound to exactly spec's address and port are not ours; the first max of
 * their inodes go to foreign[].  One sock_diag dump per family (or a read
 * of /proc/net/PROTO{,6}); O(listeners on the port x nours).
 */
int ps__reuseport_members(const struct ps_spec *spec, const unsigned long *ours, int nours,
                          unsigned long *foreign, int max);

/*
 * Platform layer (os_linux.c): the few places where what a socket option
 * does differs by operating system.  Returns 0 or -errno.
 */
/* Set the option that makes a load-balancing reuseport group here
 * (SO_REUSEPORT on Linux, SO_REUSEPORT_LB on FreeBSD). */
int ps__os_set_reuseport(int fd);

/* 1 if a reuseport group balances new connections on this OS, else 0
 * (macOS, OpenBSD: the last socket gets them all; use shared mode). */
int ps__os_reuseport_balances(void);

#endif
