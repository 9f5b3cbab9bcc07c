/*
 * probe_internal.h - what the probe's modules share among themselves: the
 * experiment list (cases.c), socket helpers (sockets.c), the other-UID
 * helper process (helper.c), features and spread (features.c).  Only
 * src/probe includes it (and its unit tests).
 */
#ifndef PS_PROBE_INTERNAL_H
#define PS_PROBE_INTERNAL_H

#include "core.h"
#include "probe.h"

#include <sys/types.h>

/* Fill cases[0..] with every experiment to run, without results; returns the
 * count (at most cap).  With other_uid, also the other-UID cases.  Pure. */
int ps__probe_enumerate(struct ps_probe_case *cases, int cap, int other_uid);

/* Open a socket of addr's family for proto with opts and IPV6_V6ONLY as the
 * address says, and 1 s send/receive timeouts.  fd or -errno. */
int ps__probe_socket(int proto, enum ps_probe_addr a, int opts);

/* Build the sockaddr for a:port; returns its length. */
int ps__probe_sockaddr(enum ps_probe_addr a, unsigned port, void *ss);

/* The second socket of an experiment: socket, bind to a:port, listen (TCP),
 * close; the errnos land in *bind_err / *listen_err.  -errno only when the
 * socket itself could not be made (the experiment is then dropped). */
int ps__probe_try(int proto, enum ps_probe_addr a, int opts, unsigned port, short *bind_err,
                  short *listen_err);

/* setsockopt() of one int: 0 or -errno. */
int ps__probe_set_int(int fd, int level, int name, int value);

/* bind() fd to a:port: 0 or -errno. */
int ps__probe_bind(int fd, enum ps_probe_addr a, unsigned port);

/* The local port fd is bound to, or -errno. */
int ps__probe_local_port(int fd);

/* Read until the peer's FIN (after it, a socket that already sent its own
 * FIN is in TIME_WAIT); bounded by the socket's receive timeout.  0, or
 * -ETIMEDOUT / -errno. */
int ps__probe_wait_eof(int fd);

/* A port no socket of any address holds, for proto: 0 or -errno. */
int ps__probe_free_port(int proto, unsigned *port);

/* connect() that waits out EINTR; the socket's send timeout bounds it. */
int ps__probe_connect(int fd, enum ps_probe_addr a, unsigned port);

/* accept4() the connection from peer_port (others are aborted); bounded by
 * the listener's receive timeout.  fd or -errno. */
int ps__probe_accept(int lfd, unsigned peer_port);

/* Close with a reset (SO_LINGER 0): nothing left in TIME_WAIT.  fd < 0 is ok. */
void ps__probe_abort(int fd);

/* migrate.c: the SELECT_OR_MIGRATE feature and its measurement (q
 * connections each way); run after ps__probe_spread, which may have left
 * tcp_migrate_req at 1 in our own namespace (netns: we may set it back). */
void ps__probe_ebpf_migrate(int q, int netns, struct ps_probe_result *res);

struct ps__probe_env {
    int server4, server6; /* TCP listeners client sockets connect to, or -1 */
    unsigned port4, port6;
    int helper; /* SOCK_SEQPACKET to the other-UID helper, or -1 */
};

/* Run one experiment: make a fresh port, put the first socket in its state,
 * let the second bind (here, or in the other-UID helper), clean up.  0, or
 * -errno when the first socket could not be put in its state. */
int ps__probe_case_run(const struct ps__probe_env *env, struct ps_probe_case *c);

/* Run sequence s on a fresh port. */
void ps__probe_seq_run(const struct ps_probe_seq *s, struct ps_probe_seq_result *r);

/* Fork the other-UID helper (helper.c): a child running as uid (and the
 * group of the same number) that runs ps__probe_try() on request.  Returns
 * our end of its socket, and its pid in *pid; -EPERM when it could not drop. */
int ps__probe_helper_start(int uid, pid_t *pid);

/* Ask the other-UID helper to run ps__probe_try(); 0 or -errno. */
int ps__probe_helper_try(int helper, int proto, enum ps_probe_addr a, int opts, unsigned port,
                         short *bind_err, short *listen_err);

/* Features, spread and the close experiments (features.c).  The
 * spread comes first: some feature lines quote its measurements.  With
 * can_set_migrate (our own namespace) tcp_migrate_req is tried at 0 and 1. */
void ps__probe_features(const struct ps__probe_env *env, struct ps_probe_result *res);
void ps__probe_spread(const struct ps_probe_opts *opts, int can_set_migrate,
                      struct ps_probe_result *res);

#endif
