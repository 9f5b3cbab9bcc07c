/*
 * probe.h - `portshare probe`: real bind/listen experiments on pairs of
 * sockets, the documented rules they are compared with, and the features of
 * this kernel around SO_REUSEPORT.  The probe layer's interface to the CLI;
 * its modules share probe_internal.h.
 *
 * Layout: probe.c runs everything (in a forked child, as root inside a
 * private network namespace), cases.c enumerates and performs the
 * two-socket experiments and the multi-step sequences, model.c holds the
 * documented rules (and the sequences' expected results), features.c the
 * feature checks, the spread and the reset-on-close measurement, sockets.c
 * the socket helpers they share, helper.c the other-UID helper process.
 * Nothing here prints: results are plain structures the CLI formats.
 */
#ifndef PS_PROBE_H
#define PS_PROBE_H

#include <stddef.h>

enum ps_probe_proto { PS_PROBE_TCP, PS_PROBE_UDP };

/* The state the first socket is in when the second one binds. */
enum ps_probe_state {
    PS_PROBE_BOUND,
    PS_PROBE_LISTENING,            /* TCP */
    PS_PROBE_CONNECTED,            /* TCP client, or connected UDP */
    PS_PROBE_TIME_WAIT,            /* TCP client that closed first */
    PS_PROBE_ACCEPTED_TIME_WAIT,   /* server side closed first, listener gone */
    PS_PROBE_ACCEPTED_ESTABLISHED, /* accepted connection, listener gone */
    PS_PROBE_NSTATES
};

/* Options on one socket: a bit set, so 0..3 is none, A, P, both. */
#define PS_PROBE_REUSEADDR 0x1
#define PS_PROBE_REUSEPORT 0x2
#define PS_PROBE_NOPTS     4

/* The addresses the experiments bind to. */
enum ps_probe_addr {
    PS_PA_LO,          /* 127.0.0.1 */
    PS_PA_LO2,         /* 127.0.0.2: another specific address */
    PS_PA_ANY4,        /* 0.0.0.0 */
    PS_PA_ANY6,        /* [::], IPV6_V6ONLY off: dual-stack */
    PS_PA_ANY6_V6ONLY, /* [::], IPV6_V6ONLY on */
    PS_PA_LO6,         /* [::1] */
    PS_PA_MAPPED,      /* [::ffff:127.0.0.1] */
    PS_PA_MCAST,       /* 239.255.0.1 (UDP) */
    PS_PA_BCAST,       /* 255.255.255.255 (UDP) */
    PS_PA_COUNT
};

struct ps_probe_addr_info {
    const char *text;  /* as JSON shows it: "127.0.0.1", "::" */
    const char *label; /* short, for the table: "[::]v6only" */
    int family;        /* AF_INET or AF_INET6 */
    int v6only;        /* IPV6_V6ONLY set before bind; -1 for IPv4 */
};

/* The description of an address; a is always valid (< PS_PA_COUNT). */
const struct ps_probe_addr_info *ps_probe_addr_info(enum ps_probe_addr a);

/* A result: 0 = ok, a positive errno, or PS_PROBE_NA (not attempted). */
#define PS_PROBE_NA (-1)

struct ps_probe_case {
    /* what the experiment is */
    unsigned char proto;       /* enum ps_probe_proto */
    unsigned char state;       /* enum ps_probe_state of the first socket */
    unsigned char first_addr;  /* enum ps_probe_addr */
    unsigned char second_addr; /* enum ps_probe_addr */
    unsigned char first_opts;  /* PS_PROBE_REUSE* bits */
    unsigned char second_opts;
    unsigned char other_uid; /* 1: the second socket belongs to another UID */
    /* what the kernel did */
    short bind_err;   /* 0 or errno */
    short listen_err; /* 0, errno, or PS_PROBE_NA (UDP, bind failed) */
    /* what the documented rules predict (filled by ps_probe_expect) */
    short expect_bind;
    short expect_listen;
    unsigned char rule; /* which rule decided: ps_probe_why() */
};

/* ---- the documented rules (model.c, pure logic) ------------------ */

/* 1 when a socket bound to a and one bound to b (same port) claim an address
 * in common by the documented rules: a wildcard covers its family, [::]
 * dual-stack also covers IPv4, v4-mapped means the IPv4 address. */
int ps_probe_overlap(enum ps_probe_addr a, enum ps_probe_addr b);

/* Fill expect_bind, expect_listen and rule of c from its dimensions. */
void ps_probe_expect(struct ps_probe_case *c);

/* One sentence: why the rules predict what they predict for c. */
const char *ps_probe_why(const struct ps_probe_case *c);

/* 1 when what the kernel did is what the rules predicted. */
int ps_probe_agrees(const struct ps_probe_case *c);

/* For a disagreement: what this kernel does that the documentation does not
 * say (one sentence), or NULL when no known kernel rule explains it. */
const char *ps_probe_finding(const struct ps_probe_case *c);

/* ---- sequences: what a pair of sockets cannot show ----------------------- */

/*
 * A few fixed experiments of two or three sockets and several steps, each
 * step with what the documented rules predict: an option set after bind(),
 * a conflict that only listen() notices, a conflict hidden by the order in
 * which sockets were bound.
 */
enum ps_probe_seq_op { PS_SEQ_BIND, PS_SEQ_LISTEN, PS_SEQ_SET_REUSEPORT };

#define PS_PROBE_SEQ_STEPS 6
#define PS_PROBE_SEQ_SOCKS 3

struct ps_probe_seq_step {
    unsigned char sock; /* 0 .. PS_PROBE_SEQ_SOCKS-1 */
    unsigned char op;   /* enum ps_probe_seq_op */
    unsigned char addr; /* enum ps_probe_addr, for PS_SEQ_BIND */
    short expect;       /* 0, errno, or PS_PROBE_NA (skipped: its bind failed) */
};

struct ps_probe_seq {
    const char *name;  /* identifier, for JSON */
    const char *title; /* one line, for people */
    unsigned char proto;
    unsigned char opts[PS_PROBE_SEQ_SOCKS]; /* options each socket is made with */
    int nsteps;
    struct ps_probe_seq_step steps[PS_PROBE_SEQ_STEPS];
    const char *why;     /* why the rules predict these results */
    const char *finding; /* what this kernel does instead, if it disagrees */
};

struct ps_probe_seq_result {
    int setup_err;                 /* errno when it could not run at all, else 0 */
    short err[PS_PROBE_SEQ_STEPS]; /* 0, errno, or PS_PROBE_NA */
};

/* The sequences (a fixed table); i < ps_probe_nseqs(). */
int ps_probe_nseqs(void);
const struct ps_probe_seq *ps_probe_seq(int i);

/* 1 when every step did what the rules predicted. */
int ps_probe_seq_agrees(const struct ps_probe_seq *s, const struct ps_probe_seq_result *r);

/* "bind", "listen", "setsockopt(SO_REUSEPORT)" */
const char *ps_probe_seq_op_name(int op);

/* ---- features, spread, resets on close --------------------------------- */

enum ps_probe_feature_id {
    PS_PF_REUSEPORT,
    PS_PF_REUSEPORT_LB,
    PS_PF_MIGRATE_REQ,
    PS_PF_REUSEPORT_CBPF,
    PS_PF_REUSEPORT_EBPF,
    PS_PF_INCOMING_CPU,
    PS_PF_EPOLLEXCLUSIVE,
    PS_PF_BIND_NO_PORT,
    PS_PF_SELECT_OR_MIGRATE, /* eBPF SK_REUSEPORT_SELECT_OR_MIGRATE: measured (migrate.c) */
    PS_PF_COUNT
};

struct ps_probe_feature {
    int supported; /* 1 yes, 0 no, -1 could not tell */
    int err;       /* errno of the call that decided "no", else 0 */
    char detail[240];
};

/* "SO_REUSEPORT", "tcp_migrate_req"...: the name the JSON uses. */
const char *ps_probe_feature_name(enum ps_probe_feature_id id);

#define PS_PROBE_MAX_LISTENERS 64

/* One close experiment: a listener holding queued connections is closed. */
struct ps_probe_close {
    int migrate_req; /* net.ipv4.tcp_migrate_req during the experiment */
    int steered;     /* 1 when a CBPF program put every connection in it */
    int queued;      /* connections waiting in its queue (TCP_INFO) */
    int reset;       /* clients that then saw a reset */
    int migrated;    /* connections accepted from the remaining listener */
    int unaccounted; /* neither, when the wait ran out */
    int err;         /* errno when the experiment could not run, else 0 */
};

struct ps_probe_spread {
    int err;         /* errno when the spread could not be measured */
    int listeners;   /* K */
    int connections; /* M made */
    int accepted[PS_PROBE_MAX_LISTENERS];
    int nclose;
    struct ps_probe_close close[2]; /* tcp_migrate_req 0 and 1 */
};

/* Closing a listener under portshare's eBPF SELECT_OR_MIGRATE program
 * (tcp_migrate_req 0): what it had queued, and what it had in its handshake
 * (TCP_DEFER_ACCEPT: the handshake ends with the client's first data, sent
 * after the close). */
struct ps_probe_ebpf_migrate {
    int err;         /* errno when the experiment could not run, else 0 */
    int migrate_req; /* net.ipv4.tcp_migrate_req during it */
    int queued, queued_migrated, queued_reset;
    int handshakes, handshakes_migrated, handshakes_reset;
};

/* ---- running it ---------------------------------------------------------- */

#define PS_PROBE_MAX_CASES 4096
#define PS_PROBE_MAX_SEQS  16

struct ps_probe_opts {
    int listeners;   /* K reuseport listeners for the spread (1..64) */
    int connections; /* M connections spread over them */
    int queued;      /* connections queued in the listener that is closed */
    int netns;       /* as root, run in a private network namespace */
    int other_uid;   /* as root, the UID of the other-UID sockets; -1: none */
};

struct ps_probe_result {
    char kernel[160]; /* "Linux 6.1.0-..." */
    unsigned euid;
    int netns;            /* 1 when the experiments ran in a private netns */
    char netns_note[160]; /* why not, when they did not */
    int other_uid;        /* the UID used, or -1 when those cases were skipped */
    char other_uid_note[160];
    int host_migrate_req; /* net.ipv4.tcp_migrate_req outside, -1 if absent */
    long elapsed_ms;
    struct ps_probe_feature features[PS_PF_COUNT];
    struct ps_probe_spread spread;
    struct ps_probe_ebpf_migrate ebpf_migrate;
    int setup_failures; /* cases dropped: the first socket could not be made */
    char setup_note[160];
    int ncases;
    struct ps_probe_case cases[PS_PROBE_MAX_CASES];
    int nseqs; /* == ps_probe_nseqs(); seqs[i] is the result of ps_probe_seq(i) */
    struct ps_probe_seq_result seqs[PS_PROBE_MAX_SEQS];
};

/*
 * Run every experiment and fill res (which the caller allocates: it is a few
 * hundred kilobytes).  Works in a forked child so that the private network
 * namespace, the other-UID helper and any sysctl written in that namespace
 * never touch the caller.  Takes about a second; bounded by an alarm in the
 * child.  Returns 0 or -errno (fork/pipe failure, the child died).
 */
int ps_probe_run(const struct ps_probe_opts *opts, struct ps_probe_result *res);

#endif
