/*
 * internal.h - helpers shared by libportshare's modules.  Not installed.
 * Internal non-static names carry the ps__ prefix.
 */
#ifndef PS_INTERNAL_H
#define PS_INTERNAL_H

#include "portshare.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>

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

/* Parse a decimal integer in [min, max]; the whole string must be a number. */
int ps__parse_long(const char *s, long min, long max, long *out);

/*
 * ps_spec_parse() with flags.  PS__SPEC_NUMERIC refuses host names with
 * -EADDRNOTAVAIL instead of resolving them (AI_NUMERICHOST), so that the
 * fuzzer never reaches the resolver or the network.
 */
#define PS__SPEC_NUMERIC 0x1
int ps__spec_parse(const char *text, struct ps_spec *spec, int flags, char *err, size_t errlen);

/* Fill a sockaddr_un from "path" or "@abstract" and its length into *len.
 * Returns 0, -EINVAL (empty, or "@" alone) or -ENAMETOOLONG. */
int ps__unix_addr(const char *address, struct sockaddr_storage *ss, socklen_t *len);

/* One socket as /proc/net/{tcp,udp}[6] shows it. */
struct ps__proc_sock {
    char hexaddr[40];    /* local address: raw 32-bit words, host order, in hex */
    unsigned port;       /* local port */
    unsigned state;      /* TCP state (0x0A = LISTEN) */
    unsigned long inode; /* the socket's inode, as in /proc/PID/fd links */
};

/*
 * Call fn for every socket of proto (TCP: listening only) on local port in
 * /proc/net/PROTO and /proc/net/PROTO6, until fn returns non-zero; returns
 * that value, or 0.  One read of each file.
 */
int ps__proc_net_each(enum ps_proto proto, unsigned port,
                      int (*fn)(const struct ps__proc_sock *sock, void *ctx), void *ctx);

/* An address as /proc/net prints it (see struct ps__proc_sock). */
void ps__proc_net_hex(const struct sockaddr_storage *ss, char *out, size_t len);

/* The first process (lowest pid) holding socket inode in its descriptor
 * table, and its command name.  -ENOENT when none is visible.  O(processes x
 * descriptors). */
int ps__inode_owner(unsigned long inode, pid_t *pid, char *comm, size_t commlen);

/*
 * Platform layer (os_linux.c): the few places where what a socket option
 * does differs by operating system.  Returns 0 or -errno.
 */
int ps__os_set_reuseport(int fd);    /* load-balancing reuseport */
int ps__os_reuseport_balances(void); /* 1 if the group balances */

#endif
