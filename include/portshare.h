/*
 * portshare.h - the public API of libportshare.
 *
 * Listen specs, listeners (single sockets and SO_REUSEPORT groups), the
 * systemd socket-activation hand-off on both sides, SCM_RIGHTS descriptor
 * passing, and sd_notify-style readiness messages.
 *
 * Conventions: every function returns 0 (or a descriptor / a count) on
 * success and a negative errno value on failure.  Nothing here prints or
 * exits; where a caller needs more than an errno to explain a failure, the
 * function fills a caller-supplied error buffer.  Every descriptor the
 * library opens is close-on-exec.  EINTR is retried inside.
 */
#ifndef PORTSHARE_H
#define PORTSHARE_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PS_VERSION "0.1.0"

/* Marks the library's API: libportshare.so is built with
 * -fvisibility=hidden and exports exactly the functions marked so. */
#if defined(__GNUC__) && defined(PS_BUILDING_LIBRARY)
#define PS_EXTERN __attribute__((visibility("default")))
#else
#define PS_EXTERN
#endif

/* ------------------------------------------------------------------------
 * Listen specs
 *
 *   [NAME=]tcp://HOST:PORT[?OPTS]     TCP; HOST may be a name, an IPv4
 *   [NAME=]udp://HOST:PORT[?OPTS]     address, [IPv6] in brackets, or empty
 *   [NAME=]unix:/path[?OPTS]          / "*" for the IPv4 wildcard
 *   [NAME=]unix:@abstract[?OPTS]      (Linux abstract namespace)
 *   [NAME=]:PORT  [NAME=]HOST:PORT    shorthand for tcp://
 *
 * OPTS is a '&'-separated list of
 *   backlog=N           listen(2) backlog (default 4096, capped by somaxconn)
 *   v6only=on|off       IPV6_V6ONLY for IPv6 sockets (default: off, so that
 *                       [::] is dual-stack; stated explicitly, never left to
 *                       net.ipv6.bindv6only)
 *   reuse=port|shared   one socket per worker (SO_REUSEPORT group) or one
 *                       socket shared by all workers (default: port, except
 *                       unix sockets which are always shared)
 *   mode=0600           permissions of a unix socket path
 * ---------------------------------------------------------------------- */

#define PS_SPEC_NAME_MAX 64 /* systemd's FDNAME limit is 255; ours is smaller */
#define PS_SPEC_HOST_MAX 256
#define PS_SPEC_TEXT_MAX 512

enum ps_proto { PS_PROTO_TCP = 1, PS_PROTO_UDP, PS_PROTO_UNIX };
enum ps_reuse { PS_REUSE_DEFAULT = 0, PS_REUSE_PORT, PS_REUSE_SHARED };

struct ps_spec {
    /* public, read-only after ps_spec_parse() */
    char text[PS_SPEC_TEXT_MAX]; /* the spec as given */
    char name[PS_SPEC_NAME_MAX]; /* LISTEN_FDNAMES entry; "" when unnamed */
    enum ps_proto proto;
    char host[PS_SPEC_HOST_MAX]; /* host as written, no brackets; "" = any */
    unsigned port;               /* host byte order; 0 = kernel picks */
    int backlog;                 /* listen(2) backlog */
    int v6only;                  /* 0 or 1; only meaningful for AF_INET6 */
    enum ps_reuse reuse;         /* never PS_REUSE_DEFAULT after parsing */
    unsigned unix_mode;          /* 0 = leave the umask's choice */
    /* the resolved address; ps_listen_group_open() writes the real port back
     * when the spec asked for port 0, so that later sockets join the group */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    /* TCP_DEFER_ACCEPT in seconds (option defer=N): accept(2) returns a
     * connection once its first data arrived; 0 = off; -1 = not given (off
     * for ps_listen_open; `portshare serve` then takes 1, as nginx's
     * `deferred`).  At the end, so the fields above keep their offsets. */
    int defer_accept;
    /* UDP reuseport groups steered by the supervisor's flow table: its
     * capacity in flows (option flows=N) and how long a flow may be silent
     * before it counts as ended (option flow_idle=DUR, in ms); 0 = the
     * supervisor's defaults.  Taken from the room below (120 -> 112). */
    unsigned flows;
    unsigned flow_idle_ms;
    /* Room to grow: options added before 1.0 take these bytes, so the
     * struct's size and every field's offset stay as they are now, and a
     * program built against this header works with a newer library.  Zero
     * after ps_spec_parse(); never written by the library otherwise. */
    unsigned char reserved[112];
};

/*
 * Parse and resolve one listen spec.  Host names are resolved with
 * getaddrinfo(AI_PASSIVE); the first address returned is used (so
 * "localhost" may give ::1 or 127.0.0.1, as /etc/gai.conf orders them).  On failure
 * returns -EINVAL (syntax), -ENAMETOOLONG, or -EADDRNOTAVAIL (name did not
 * resolve) and writes one line naming the wrong part into err.
 */
PS_EXTERN int ps_spec_parse(const char *text, struct ps_spec *spec, char *err, size_t errlen);

/* Format the (resolved) address of a spec as a canonical spec string such as
 * "tcp://127.0.0.1:8080", "udp://[::1]:53" or "unix:/run/x.sock". */
PS_EXTERN int ps_spec_format(const struct ps_spec *spec, char *buf, size_t len);

/* Format any socket address the same way ("tcp://[::1]:80"). */
PS_EXTERN int ps_sockaddr_format(const struct sockaddr *sa, socklen_t salen, int socktype,
                                 char *buf, size_t len);

/* ------------------------------------------------------------------------
 * Listeners
 * ---------------------------------------------------------------------- */

#define PS_LISTEN_NONBLOCK     0x1 /* O_NONBLOCK on the new sockets */
#define PS_LISTEN_NO_REUSEPORT 0x2 /* do not set SO_REUSEPORT (shared socket) */

/*
 * Open, configure, bind and (for TCP/unix stream) listen one socket for
 * spec: SO_REUSEADDR on every TCP socket, SO_REUSEPORT unless the spec is
 * shared or flags has PS_LISTEN_NO_REUSEPORT, IPV6_V6ONLY as the spec says,
 * close-on-exec.  Returns the descriptor or -errno.  A unix socket path that
 * exists and is a socket nobody listens on is removed first (stale); a
 * mode= is set on the new path before it listens (chmod, not the umask:
 * nothing process-wide changes), so nobody connects under another mode.
 */
PS_EXTERN int ps_listen_open(const struct ps_spec *spec, int flags);

/*
 * Open the n sockets of a reuseport group (1 <= n <= 1024) into
 * fds[0..n-1].  When the spec's port is 0 the first socket's kernel-chosen
 * port is written back into spec so that the others (and later additions)
 * join the same group; the first socket is bound to it by number, so that
 * it keeps the port if it stops listening.  A port where a socket of
 * another process already listens with SO_REUSEPORT is refused with
 * -EADDRINUSE: it would get a share of the group's connections.  On
 * failure nothing stays open and -errno is returned.  One sock_diag dump
 * (or a read of /proc/net) and n sockets; allocates about 17 KiB for the
 * call.
 */
PS_EXTERN int ps_listen_group_open(struct ps_spec *spec, int n, int *fds, int flags);

/*
 * Who holds a local address: scans /proc/net/{tcp,tcp6,udp,udp6} for a socket
 * bound to the spec's address and port, then /proc/PID/fd for its inode, as
 * ss -p does.  Returns 0 and fills pid and comm, -ENOENT when no visible
 * process holds it (another user's process without privileges, or
 * TIME_WAIT).  O(processes x descriptors).
 */
PS_EXTERN int ps_port_owner(const struct ps_spec *spec, pid_t *pid, char *comm, size_t commlen);

/*
 * The accept-queue length and its limit of a listening TCP socket, read
 * with TCP_INFO (tcpi_unacked / tcpi_sacked mean exactly that on a
 * listener).  Returns -EOPNOTSUPP for sockets that are not TCP listeners.
 */
PS_EXTERN int ps_listen_queue(int fd, unsigned *queued, unsigned *limit);

/* ------------------------------------------------------------------------
 * Socket activation: the systemd LISTEN_FDS protocol (sd_listen_fds(3))
 * ---------------------------------------------------------------------- */

#define PS_LISTEN_FDS_START 3

/*
 * Child side of a hand-off, between fork() and exec(): move fds[0..n-1] to
 * descriptors 3..3+n-1 (without close-on-exec) and set LISTEN_FDS,
 * LISTEN_PID=getpid() and, when names is not NULL, LISTEN_FDNAMES (names
 * joined with ':'; a NULL or empty name becomes "unknown", a name containing
 * ':' is -EINVAL).  Every other descriptor the process holds should be
 * close-on-exec already.  Uses setenv(), so call it only in a child of a
 * single-threaded parent.
 */
PS_EXTERN int ps_activation_apply(const int *fds, int n, const char *const *names);

/*
 * Receiving side, compatible with sd_listen_fds(): returns how many
 * descriptors were passed (0 when LISTEN_FDS is unset or LISTEN_PID names
 * another process), marks them close-on-exec, and when unset_env is true
 * removes LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES from the environment.
 * -EBADF when a promised descriptor is not open, -EINVAL for malformed
 * variables.  When names is not NULL it receives a NULL-terminated array of
 * names (free with ps_listen_names_free); entries without a name are
 * "unknown" (systemd says "unknown" when LISTEN_FDNAMES is unset, and
 * refuses a count that does not match; we accept it and fill in).
 */
PS_EXTERN int ps_listen_fds(int unset_env, char ***names);
PS_EXTERN void ps_listen_names_free(char **names);

/*
 * Check that fd is a socket of the given family (AF_UNSPEC: any), type
 * (0: any) and, when listening >= 0, whether it listens.  Returns 1 when it
 * matches, 0 when not, -errno on error (like sd_is_socket()).
 */
PS_EXTERN int ps_is_socket(int fd, int family, int type, int listening);

/* ------------------------------------------------------------------------
 * Descriptor passing (SCM_RIGHTS)
 * ---------------------------------------------------------------------- */

#define PS_FDPASS_MAX 253 /* SCM_MAX_FD */

/* Send n descriptors with len bytes of data (len >= 1) in one message. */
PS_EXTERN int ps_fd_send(int sock, const int *fds, int n, const void *data, size_t len);

/*
 * Receive one message that must carry exactly expected descriptors (stored
 * close-on-exec into fds) and up to cap bytes of data.  Returns the data
 * length.  Any other number of descriptors, or a truncated message, is
 * -EBADMSG and every descriptor that did arrive is closed.  0 means the
 * peer closed the connection.
 */
PS_EXTERN ssize_t ps_fd_recv(int sock, int *fds, int expected, void *data, size_t cap);

/* ------------------------------------------------------------------------
 * Readiness: the sd_notify protocol
 * ---------------------------------------------------------------------- */

/*
 * Send state ("READY=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1", several
 * separated by '\n') to $NOTIFY_SOCKET (a path, or @name for the abstract
 * namespace).  Returns 1 when sent, 0 when NOTIFY_SOCKET is not set, -errno
 * otherwise.
 */
PS_EXTERN int ps_notify(const char *state);

/* Like ps_notify() but to an explicit address instead of $NOTIFY_SOCKET. */
PS_EXTERN int ps_notify_to(const char *address, const char *state);

/*
 * Open the receiving end: a unix datagram socket bound to address (path, or
 * @name), with SO_PASSCRED so each message carries its sender's
 * credentials.  Returns the descriptor (close-on-exec, non-blocking).
 */
PS_EXTERN int ps_notify_listen(const char *address);

struct ps_notify_msg {
    pid_t pid; /* the sender, as the kernel vouches for it */
    uid_t uid;
    gid_t gid;
    size_t len;
    char text[4096]; /* NUL-terminated */
};

/* Receive one message.  -EAGAIN when none is waiting; -EBADMSG when it came
 * without credentials (never trusted) or was truncated. */
PS_EXTERN int ps_notify_recv(int fd, struct ps_notify_msg *msg);

/*
 * Find KEY=value in a message (one assignment per line).  Copies the value
 * into val and returns its length, or -ENOENT.
 */
PS_EXTERN int ps_notify_field(const char *text, const char *key, char *val, size_t cap);

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

/* strerror() of a negative errno, and the symbolic name ("EADDRINUSE"). */
PS_EXTERN const char *ps_strerror(int negative_errno);
PS_EXTERN const char *ps_errno_name(int err);

#ifdef __cplusplus
}
#endif
#endif
