/*
 * model.c - what the documentation says the kernel will do when a
 * second socket binds next to a first one: the "expected" column of
 * `portshare probe`.
 *
 * The rules come from socket(7), ip(7) and ipv6(7), plus the rules every
 * Linux network programmer learns (SO_REUSEADDR must be on both sockets,
 * a listening socket blocks SO_REUSEADDR).  They are deliberately NOT a copy
 * of the kernel's inet_bind_conflict(): the point of the probe is to find
 * where the kernel goes beyond what is written.  Where it does, and we know
 * why, ps_probe_finding() says so.
 */
#include "probe_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/*
 * Each address, and which IPv4 / IPv6 addresses it claims: "" none, "*" all
 * of that family, else the one address.  ipv6(7): a dual-stack socket also
 * receives IPv4 (as v4-mapped addresses), a v4-mapped address is the IPv4
 * address, and IPV6_V6ONLY restricts a socket to IPv6.
 */
static const struct addr_row {
    struct ps_probe_addr_info info;
    const char *v4, *v6;
} addrs[PS_PA_COUNT] = {
    [PS_PA_LO] = {{"127.0.0.1", "127.0.0.1", AF_INET, -1}, "127.0.0.1", ""},
    [PS_PA_LO2] = {{"127.0.0.2", "127.0.0.2", AF_INET, -1}, "127.0.0.2", ""},
    [PS_PA_ANY4] = {{"0.0.0.0", "0.0.0.0", AF_INET, -1}, "*", ""},
    [PS_PA_ANY6] = {{"::", "[::]", AF_INET6, 0}, "*", "*"},
    [PS_PA_ANY6_V6ONLY] = {{"::", "[::]v6only", AF_INET6, 1}, "", "*"},
    [PS_PA_LO6] = {{"::1", "[::1]", AF_INET6, 0}, "", "::1"},
    [PS_PA_MAPPED] = {{"::ffff:127.0.0.1", "[::ffff:127.0.0.1]", AF_INET6, 0}, "127.0.0.1", ""},
    [PS_PA_MCAST] = {{"239.255.0.1", "239.255.0.1", AF_INET, -1}, "239.255.0.1", ""},
    [PS_PA_BCAST] = {{"255.255.255.255", "255.255.255.255", AF_INET, -1}, "255.255.255.255", ""},
};

const struct ps_probe_addr_info *ps_probe_addr_info(enum ps_probe_addr a)
{
    return &addrs[a].info;
}

static int claims_meet(const char *x, const char *y)
{
    if (!*x || !*y)
        return 0;
    return !strcmp(x, "*") || !strcmp(y, "*") || !strcmp(x, y);
}

int ps_probe_overlap(enum ps_probe_addr a, enum ps_probe_addr b)
{
    return claims_meet(addrs[a].v4, addrs[b].v4) || claims_meet(addrs[a].v6, addrs[b].v6);
}

/* ---- the rules, tried in order; the first that applies decides ---------- */

static int both(const struct ps_probe_case *c, int opt)
{
    return (c->first_opts & opt) && (c->second_opts & opt);
}

static int in_time_wait(const struct ps_probe_case *c)
{
    return c->state == PS_PROBE_TIME_WAIT || c->state == PS_PROBE_ACCEPTED_TIME_WAIT;
}

static int disjoint(const struct ps_probe_case *c)
{
    return !ps_probe_overlap(c->first_addr, c->second_addr);
}

static int reuseport_same_uid(const struct ps_probe_case *c)
{
    return both(c, PS_PROBE_REUSEPORT) && !c->other_uid;
}

static int listening_port_other_uid(const struct ps_probe_case *c)
{
    return c->state == PS_PROBE_LISTENING && both(c, PS_PROBE_REUSEPORT);
}

static int listening(const struct ps_probe_case *c)
{
    return c->state == PS_PROBE_LISTENING;
}

static int time_wait_reuseaddr(const struct ps_probe_case *c)
{
    return in_time_wait(c) && both(c, PS_PROBE_REUSEADDR);
}

static int udp_reuseaddr(const struct ps_probe_case *c)
{
    return c->proto == PS_PROBE_UDP && both(c, PS_PROBE_REUSEADDR);
}

static int tcp_reuseaddr(const struct ps_probe_case *c)
{
    return both(c, PS_PROBE_REUSEADDR);
}

static int reuseport_other_uid(const struct ps_probe_case *c)
{
    return both(c, PS_PROBE_REUSEPORT);
}

static int one_sided(const struct ps_probe_case *c)
{
    return c->first_opts || c->second_opts;
}

static int always(const struct ps_probe_case *c)
{
    (void)c;
    return 1;
}

static const struct rule {
    int (*applies)(const struct ps_probe_case *c);
    short bind; /* 0 or the errno bind() should fail with */
    const char *why;
} rules[] = {
    {disjoint, 0,
     "the two addresses do not overlap (different specific addresses, or IPv4 against an "
     "IPv6-only socket), so they never conflict (ip(7), ipv6(7))"},
    {reuseport_same_uid, 0,
     "both sockets set SO_REUSEPORT and have the same effective UID, which lets them bind the "
     "same address (socket(7))"},
    {listening_port_other_uid, EADDRINUSE,
     "SO_REUSEPORT needs the same effective UID on both sockets (socket(7)), and SO_REUSEADDR "
     "never binds over a listening socket"},
    {listening, EADDRINUSE,
     "the first socket listens on an overlapping address: SO_REUSEADDR does not bind over a "
     "listening socket (socket(7)), only SO_REUSEPORT on both sockets does"},
    {time_wait_reuseaddr, 0,
     "the first socket's address is in TIME_WAIT and both set SO_REUSEADDR, which makes it "
     "available again (ip(7))"},
    {udp_reuseaddr, 0,
     "UDP sockets that both set SO_REUSEADDR may share an address; that is how several "
     "multicast or broadcast receivers share a port (socket(7))"},
    {tcp_reuseaddr, 0,
     "both set SO_REUSEADDR and the first socket is not listening, so the bind is allowed "
     "(socket(7))"},
    {reuseport_other_uid, EADDRINUSE,
     "both set SO_REUSEPORT, but only sockets of the same effective UID may share an address, "
     "to prevent port hijacking (socket(7))"},
    {in_time_wait, EADDRINUSE,
     "the address is in TIME_WAIT, which keeps it unavailable unless both sockets set "
     "SO_REUSEADDR (ip(7)) or both SO_REUSEPORT"},
    {one_sided, EADDRINUSE,
     "an option on only one of the two sockets does nothing: SO_REUSEPORT must be set on each "
     "socket, including the first (socket(7)), and SO_REUSEADDR likewise"},
    {always, EADDRINUSE,
     "the address is in use and neither socket sets SO_REUSEADDR or SO_REUSEPORT"},
};

void ps_probe_expect(struct ps_probe_case *c)
{
    size_t i;

    for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (rules[i].applies(c))
            break; /* `always` guarantees a match */
    c->rule = (unsigned char)i;
    c->expect_bind = rules[i].bind;
    /* The documentation speaks of bind() only: a TCP socket that may bind
     * is expected to listen as well. */
    c->expect_listen = c->proto == PS_PROBE_TCP && rules[i].bind == 0 ? 0 : PS_PROBE_NA;
}

const char *ps_probe_why(const struct ps_probe_case *c)
{
    return rules[c->rule].why;
}

int ps_probe_agrees(const struct ps_probe_case *c)
{
    return c->bind_err == c->expect_bind && c->listen_err == c->expect_listen;
}

/* ---- what the kernel does beyond the documentation ------------------------ */

static const char *finding_time_wait_uid(const struct ps_probe_case *c)
{
    if (in_time_wait(c) && both(c, PS_PROBE_REUSEPORT) && c->other_uid && c->bind_err == 0)
        return "the kernel skips the same-UID check of SO_REUSEPORT against a socket in "
               "TIME_WAIT: another user may bind over it (inet_bind_conflict())";
    return NULL;
}

const char *ps_probe_finding(const struct ps_probe_case *c)
{
    static const char *(*const known[])(const struct ps_probe_case *) = {
        finding_time_wait_uid,
    };
    const char *s;
    size_t i;

    if (ps_probe_agrees(c))
        return NULL;
    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if ((s = known[i](c)))
            return s;
    return NULL;
}

/* ---- sequences ------------------------------------------------------------- */

#define A   PS_PROBE_REUSEADDR
#define P   PS_PROBE_REUSEPORT
#define NA  PS_PROBE_NA
#define IU  EADDRINUSE
#define B   PS_SEQ_BIND
#define L   PS_SEQ_LISTEN
#define SRP PS_SEQ_SET_REUSEPORT

static const struct ps_probe_seq seqs[] = {
    {"reuseaddr_bind_bind_listen_listen",
     "TCP, both SO_REUSEADDR: bind, bind, then listen, listen",
     PS_PROBE_TCP,
     {A, A, 0},
     4,
     {{0, B, PS_PA_LO, 0}, {1, B, PS_PA_LO, 0}, {0, L, 0, 0}, {1, L, 0, 0}},
     "neither socket listens when they bind, so socket(7) allows both binds; it says nothing "
     "about listen(), so both should listen",
     "the kernel looks for a conflicting listener again in listen(): the second listen() fails "
     "with EADDRINUSE although both bind() calls succeeded"},
    {"reuseport_set_after_bind",
     "TCP, SO_REUSEPORT set on the first socket only after its bind()",
     PS_PROBE_TCP,
     {0, P, 0},
     5,
     {{0, B, PS_PA_LO, 0}, {0, SRP, 0, 0}, {0, L, 0, 0}, {1, B, PS_PA_LO, IU}, {1, L, 0, NA}},
     "socket(7): SO_REUSEPORT must be set on each socket, including the first, before bind(); "
     "the first socket set it too late, so the second cannot join",
     "the kernel reads the flag when the next socket binds, not when the first did: set after "
     "bind() it still lets the second socket share the port"},
    {"reuseport_set_after_listen",
     "TCP, SO_REUSEPORT set on the first socket only after its listen()",
     PS_PROBE_TCP,
     {0, P, 0},
     5,
     {{0, B, PS_PA_LO, 0}, {0, L, 0, 0}, {0, SRP, 0, 0}, {1, B, PS_PA_LO, IU}, {1, L, 0, NA}},
     "socket(7): SO_REUSEPORT must be set on each socket before bind(); the first socket set it "
     "after it was already listening",
     "the kernel accepts SO_REUSEPORT on a listening socket and lets a second listener join it"},
    {"udp_reuseport_hides_conflict",
     "UDP: 127.0.0.1 without options, 127.0.0.2 with SO_REUSEPORT, then 0.0.0.0 with "
     "SO_REUSEPORT",
     PS_PROBE_UDP,
     {0, P, P},
     3,
     {{0, B, PS_PA_LO, 0}, {1, B, PS_PA_LO2, 0}, {2, B, PS_PA_ANY4, IU}},
     "0.0.0.0 overlaps 127.0.0.1, which a socket without any option holds, so the third bind "
     "must fail whatever the second socket allows",
     "udp_lib_lport_inuse() declares the port free at the first same-user SO_REUSEPORT socket "
     "it meets (the newest is met first) and never looks at the others"},
    {"udp_reuseport_conflict_other_order",
     "UDP: the same three sockets, the SO_REUSEPORT one on 127.0.0.2 bound first",
     PS_PROBE_UDP,
     {P, 0, P},
     3,
     {{0, B, PS_PA_LO2, 0}, {1, B, PS_PA_LO, 0}, {2, B, PS_PA_ANY4, IU}},
     "0.0.0.0 overlaps 127.0.0.1, which a socket without any option holds, so the third bind "
     "must fail whatever the first socket allows",
     "the result depends on the order the sockets were bound in"},
    {"tcp_reuseport_hides_conflict",
     "TCP: 127.0.0.1 without options, 127.0.0.2 with SO_REUSEPORT, then 0.0.0.0 with "
     "SO_REUSEPORT",
     PS_PROBE_TCP,
     {0, P, P},
     3,
     {{0, B, PS_PA_LO, 0}, {1, B, PS_PA_LO2, 0}, {2, B, PS_PA_ANY4, IU}},
     "0.0.0.0 overlaps 127.0.0.1, which a socket without any option holds, so the third bind "
     "must fail whatever the second socket allows",
     "the kernel's fast path for SO_REUSEPORT buckets let the bind through"},
};

#undef A
#undef P
#undef NA
#undef IU
#undef B
#undef L
#undef SRP

int ps_probe_nseqs(void)
{
    return (int)(sizeof(seqs) / sizeof(seqs[0]));
}

const struct ps_probe_seq *ps_probe_seq(int i)
{
    return &seqs[i];
}

int ps_probe_seq_agrees(const struct ps_probe_seq *s, const struct ps_probe_seq_result *r)
{
    int i;

    if (r->setup_err)
        return 1; /* did not run: nothing to disagree with */
    for (i = 0; i < s->nsteps; i++)
        if (r->err[i] != s->steps[i].expect)
            return 0;
    return 1;
}

const char *ps_probe_seq_op_name(int op)
{
    switch (op) {
    case PS_SEQ_BIND:
        return "bind";
    case PS_SEQ_LISTEN:
        return "listen";
    default:
        return "setsockopt(SO_REUSEPORT)";
    }
}

const char *ps_probe_feature_name(enum ps_probe_feature_id id)
{
    static const char *const names[PS_PF_COUNT] = {
        [PS_PF_REUSEPORT] = "SO_REUSEPORT",
        [PS_PF_REUSEPORT_LB] = "SO_REUSEPORT_LB",
        [PS_PF_MIGRATE_REQ] = "tcp_migrate_req",
        [PS_PF_REUSEPORT_CBPF] = "SO_ATTACH_REUSEPORT_CBPF",
        [PS_PF_REUSEPORT_EBPF] = "SO_ATTACH_REUSEPORT_EBPF",
        [PS_PF_INCOMING_CPU] = "SO_INCOMING_CPU",
        [PS_PF_EPOLLEXCLUSIVE] = "EPOLLEXCLUSIVE",
        [PS_PF_BIND_NO_PORT] = "IP_BIND_ADDRESS_NO_PORT",
        [PS_PF_SELECT_OR_MIGRATE] = "SELECT_OR_MIGRATE",
    };

    return id < PS_PF_COUNT ? names[id] : "?";
}
