/*
 * cases.c - the two-socket experiments of `portshare probe`: which
 * ones to run, and how to put the first socket into each state for real
 * (a listener, a connection, TIME_WAIT from an active close...).
 *
 * Every experiment starts on a port nobody uses: the kernel picks it for a
 * throw-away dual-stack wildcard socket, which it only does for a port no
 * socket of any address holds, TIME_WAIT leftovers of earlier experiments
 * included.  So experiments never see each other.
 */
#include "probe_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- which experiments -------------------------------------------------- */

struct pair {
    unsigned char first, second;
};

/* Bound and listening first sockets: every address relation that matters. */
static const struct pair wide_pairs[] = {
    /* IPv4: the first five are also the other-UID set */
    {PS_PA_LO, PS_PA_LO},
    {PS_PA_LO, PS_PA_LO2},
    {PS_PA_ANY4, PS_PA_LO},
    {PS_PA_LO, PS_PA_ANY4},
    {PS_PA_ANY4, PS_PA_ANY4},
    /* IPv6 against IPv4 */
    {PS_PA_ANY6, PS_PA_ANY4},
    {PS_PA_ANY4, PS_PA_ANY6},
    {PS_PA_ANY6_V6ONLY, PS_PA_ANY4},
    {PS_PA_ANY4, PS_PA_ANY6_V6ONLY},
    {PS_PA_ANY6, PS_PA_LO},
    {PS_PA_LO, PS_PA_ANY6},
    {PS_PA_ANY6_V6ONLY, PS_PA_LO},
    {PS_PA_LO, PS_PA_ANY6_V6ONLY},
    {PS_PA_LO6, PS_PA_LO},
    {PS_PA_LO, PS_PA_LO6},
    {PS_PA_LO6, PS_PA_ANY4},
    {PS_PA_ANY4, PS_PA_LO6},
    {PS_PA_MAPPED, PS_PA_LO},
    {PS_PA_LO, PS_PA_MAPPED},
    /* IPv6 against IPv6, and v4-mapped against the IPv6 wildcards */
    {PS_PA_LO6, PS_PA_LO6},
    {PS_PA_ANY6, PS_PA_LO6},
    {PS_PA_LO6, PS_PA_ANY6},
    {PS_PA_ANY6, PS_PA_ANY6_V6ONLY},
    {PS_PA_ANY6_V6ONLY, PS_PA_ANY6},
    {PS_PA_ANY6, PS_PA_MAPPED},
    {PS_PA_MAPPED, PS_PA_ANY6_V6ONLY},
    {PS_PA_ANY6_V6ONLY, PS_PA_MAPPED},
};
#define V4_PAIRS 5

/* UDP only: multicast and broadcast receivers. */
static const struct pair cast_pairs[] = {
    {PS_PA_MCAST, PS_PA_MCAST}, {PS_PA_ANY4, PS_PA_MCAST}, {PS_PA_MCAST, PS_PA_ANY4},
    {PS_PA_BCAST, PS_PA_BCAST}, {PS_PA_ANY4, PS_PA_BCAST},
};

/* Connected first sockets have a specific local address. */
static const struct pair narrow_pairs[] = {
    /* the first three are also the other-UID set */
    {PS_PA_LO, PS_PA_LO},   {PS_PA_LO, PS_PA_LO2},   {PS_PA_LO, PS_PA_ANY4},
    {PS_PA_LO, PS_PA_ANY6}, {PS_PA_LO6, PS_PA_ANY6},
};
#define NARROW_V4_PAIRS 3

#define LEN(a) (int)(sizeof(a) / sizeof((a)[0]))

static const struct plan {
    unsigned char proto, state, other_uid;
    const struct pair *pairs;
    int npairs;
} plans[] = {
    {PS_PROBE_TCP, PS_PROBE_BOUND, 0, wide_pairs, LEN(wide_pairs)},
    {PS_PROBE_TCP, PS_PROBE_LISTENING, 0, wide_pairs, LEN(wide_pairs)},
    {PS_PROBE_TCP, PS_PROBE_CONNECTED, 0, narrow_pairs, LEN(narrow_pairs)},
    {PS_PROBE_TCP, PS_PROBE_TIME_WAIT, 0, narrow_pairs, LEN(narrow_pairs)},
    {PS_PROBE_TCP, PS_PROBE_ACCEPTED_TIME_WAIT, 0, narrow_pairs, LEN(narrow_pairs)},
    {PS_PROBE_TCP, PS_PROBE_ACCEPTED_ESTABLISHED, 0, narrow_pairs, LEN(narrow_pairs)},
    {PS_PROBE_UDP, PS_PROBE_BOUND, 0, wide_pairs, LEN(wide_pairs)},
    {PS_PROBE_UDP, PS_PROBE_BOUND, 0, cast_pairs, LEN(cast_pairs)},
    {PS_PROBE_UDP, PS_PROBE_CONNECTED, 0, narrow_pairs, LEN(narrow_pairs)},
    /* another UID is orthogonal to the address rules: IPv4 pairs suffice */
    {PS_PROBE_TCP, PS_PROBE_BOUND, 1, wide_pairs, V4_PAIRS},
    {PS_PROBE_TCP, PS_PROBE_LISTENING, 1, wide_pairs, V4_PAIRS},
    {PS_PROBE_TCP, PS_PROBE_CONNECTED, 1, narrow_pairs, NARROW_V4_PAIRS},
    {PS_PROBE_TCP, PS_PROBE_TIME_WAIT, 1, narrow_pairs, NARROW_V4_PAIRS},
    {PS_PROBE_TCP, PS_PROBE_ACCEPTED_TIME_WAIT, 1, narrow_pairs, NARROW_V4_PAIRS},
    {PS_PROBE_TCP, PS_PROBE_ACCEPTED_ESTABLISHED, 1, narrow_pairs, NARROW_V4_PAIRS},
    {PS_PROBE_UDP, PS_PROBE_BOUND, 1, wide_pairs, V4_PAIRS},
    {PS_PROBE_UDP, PS_PROBE_BOUND, 1, cast_pairs, LEN(cast_pairs)},
    {PS_PROBE_UDP, PS_PROBE_CONNECTED, 1, narrow_pairs, NARROW_V4_PAIRS},
};

int ps__probe_enumerate(struct ps_probe_case *cases, int cap, int other_uid)
{
    int n = 0, p, i, o1, o2;

    for (p = 0; p < LEN(plans); p++) {
        if (plans[p].other_uid && !other_uid)
            continue;
        for (i = 0; i < plans[p].npairs; i++)
            for (o1 = 0; o1 < PS_PROBE_NOPTS; o1++)
                for (o2 = 0; o2 < PS_PROBE_NOPTS && n < cap; o2++) {
                    struct ps_probe_case *c = &cases[n++];

                    memset(c, 0, sizeof(*c));
                    c->proto = plans[p].proto;
                    c->state = plans[p].state;
                    c->other_uid = plans[p].other_uid;
                    c->first_addr = plans[p].pairs[i].first;
                    c->second_addr = plans[p].pairs[i].second;
                    c->first_opts = (unsigned char)o1;
                    c->second_opts = (unsigned char)o2;
                    c->bind_err = c->listen_err = PS_PROBE_NA;
                }
    }
    return n;
}

/* ---- the first socket, in its state --------------------------------------- */

struct first {
    int fd[2]; /* what stays open while the second socket binds */
};

/* Where a client bound to a connects: the server of its family. */
static void server_for(const struct ps__probe_env *env, enum ps_probe_addr a, int *lfd,
                       enum ps_probe_addr *to, unsigned *port)
{
    if (a == PS_PA_LO6) {
        *lfd = env->server6, *to = PS_PA_LO6, *port = env->port6;
        return;
    }
    /* a v4-mapped client reaches the IPv4 server through its mapped address */
    *lfd = env->server4, *to = a == PS_PA_MAPPED ? PS_PA_MAPPED : PS_PA_LO, *port = env->port4;
}

/* A client bound to a:port with opts, connected; f gets it and the server's end. */
static int client(const struct ps__probe_env *env, const struct ps_probe_case *c, unsigned port,
                  struct first *f)
{
    enum ps_probe_addr to;
    unsigned sport;
    int lfd, r;

    f->fd[0] = ps__probe_socket(c->proto, c->first_addr, c->first_opts);
    if (f->fd[0] < 0)
        return f->fd[0];
    r = ps__probe_bind(f->fd[0], c->first_addr, port);
    server_for(env, c->first_addr, &lfd, &to, &sport);
    if (r == 0 && c->proto == PS_PROBE_UDP) /* no peer needed: the discard port */
        return ps__probe_connect(f->fd[0], to, 9);
    if (r == 0)
        r = ps__probe_connect(f->fd[0], to, sport);
    if (r == 0)
        r = f->fd[1] = ps__probe_accept(lfd, port);
    return r < 0 ? r : 0;
}

/* The client closes first (active close): its address:port goes to TIME_WAIT. */
static int client_time_wait(const struct ps__probe_env *env, const struct ps_probe_case *c,
                            unsigned port, struct first *f)
{
    int r = client(env, c, port, f);

    if (r == 0 && shutdown(f->fd[0], SHUT_WR) < 0)
        r = ps__neg_errno();
    if (r == 0)
        r = ps__probe_wait_eof(f->fd[1]);
    if (r == 0) {
        ps__close(f->fd[1]);
        f->fd[1] = -1;
        r = ps__probe_wait_eof(f->fd[0]); /* the server's FIN arrived: TIME_WAIT now */
    }
    if (r == 0) {
        ps__close(f->fd[0]);
        f->fd[0] = -1;
    }
    return r;
}

/* A listener with the case's options accepts one connection, then closes;
 * the accepted socket (fd[0]) keeps the port. */
static int accepted(const struct ps_probe_case *c, unsigned port, struct first *f)
{
    int lfd, r;

    lfd = ps__probe_socket(PS_PROBE_TCP, c->first_addr, c->first_opts);
    if (lfd < 0)
        return lfd;
    r = ps__probe_bind(lfd, c->first_addr, port);
    if (r == 0 && listen(lfd, 16) < 0)
        r = ps__neg_errno();
    if (r == 0)
        r = f->fd[1] = ps__probe_socket(PS_PROBE_TCP, c->first_addr, 0);
    if (r >= 0)
        r = ps__probe_connect(f->fd[1], c->first_addr, port);
    if (r == 0)
        r = ps__probe_local_port(f->fd[1]);
    if (r >= 0)
        r = f->fd[0] = ps__probe_accept(lfd, (unsigned)r);
    ps__close(lfd);
    return r < 0 ? r : 0;
}

/* The server side closes first: the accepted socket goes to TIME_WAIT. */
static int accepted_time_wait(const struct ps_probe_case *c, unsigned port, struct first *f)
{
    int r = accepted(c, port, f);

    if (r == 0 && shutdown(f->fd[0], SHUT_WR) < 0)
        r = ps__neg_errno();
    if (r == 0)
        r = ps__probe_wait_eof(f->fd[1]);
    if (r == 0) {
        ps__close(f->fd[1]);
        f->fd[1] = -1;
        r = ps__probe_wait_eof(f->fd[0]);
    }
    if (r == 0) {
        ps__close(f->fd[0]);
        f->fd[0] = -1;
    }
    return r;
}

static int make_first(const struct ps__probe_env *env, const struct ps_probe_case *c, unsigned port,
                      struct first *f)
{
    int r;

    switch (c->state) {
    case PS_PROBE_CONNECTED:
        return client(env, c, port, f);
    case PS_PROBE_TIME_WAIT:
        return client_time_wait(env, c, port, f);
    case PS_PROBE_ACCEPTED_ESTABLISHED:
        return accepted(c, port, f);
    case PS_PROBE_ACCEPTED_TIME_WAIT:
        return accepted_time_wait(c, port, f);
    default: /* bound, listening */
        f->fd[0] = ps__probe_socket(c->proto, c->first_addr, c->first_opts);
        if (f->fd[0] < 0)
            return f->fd[0];
        r = ps__probe_bind(f->fd[0], c->first_addr, port);
        if (r == 0 && c->state == PS_PROBE_LISTENING && listen(f->fd[0], 16) < 0)
            r = ps__neg_errno();
        return r;
    }
}

int ps__probe_case_run(const struct ps__probe_env *env, struct ps_probe_case *c)
{
    struct first f = {{-1, -1}};
    unsigned port;
    int r;

    r = ps__probe_free_port(c->proto, &port);
    if (r == 0)
        r = make_first(env, c, port, &f);
    if (r < 0)
        goto out;
    if (c->other_uid)
        r = ps__probe_helper_try(env->helper, c->proto, c->second_addr, c->second_opts, port,
                                 &c->bind_err, &c->listen_err);
    else
        r = ps__probe_try(c->proto, c->second_addr, c->second_opts, port, &c->bind_err,
                          &c->listen_err);
out:
    ps__probe_abort(f.fd[0]);
    ps__probe_abort(f.fd[1]);
    return r;
}

/* ---- sequences ---------------------------------------------------------------- */

static int seq_step(int fd, const struct ps_probe_seq_step *st, unsigned port)
{
    switch (st->op) {
    case PS_SEQ_BIND:
        return ps__probe_bind(fd, st->addr, port);
    case PS_SEQ_LISTEN:
        return listen(fd, 16) < 0 ? ps__neg_errno() : 0;
    default:
        return ps__probe_set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    }
}

void ps__probe_seq_run(const struct ps_probe_seq *s, struct ps_probe_seq_result *out)
{
    int fd[PS_PROBE_SEQ_SOCKS] = {-1, -1, -1}, dead[PS_PROBE_SEQ_SOCKS] = {0}, i, k, r;
    unsigned port;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < PS_PROBE_SEQ_STEPS; i++)
        out->err[i] = PS_PROBE_NA;
    r = ps__probe_free_port(s->proto, &port);
    for (i = 0; r == 0 && i < s->nsteps; i++) {
        const struct ps_probe_seq_step *st = &s->steps[i];

        k = st->sock;
        if (dead[k])
            continue; /* its bind failed: a listen() would only autobind elsewhere */
        if (fd[k] < 0)
            r = fd[k] = ps__probe_socket(s->proto, st->addr, s->opts[k]);
        if (r < 0)
            break;
        r = seq_step(fd[k], st, port);
        out->err[i] = (short)-r;
        dead[k] = r < 0 && st->op == PS_SEQ_BIND;
        r = 0;
    }
    if (r < 0)
        out->setup_err = -r;
    for (k = 0; k < PS_PROBE_SEQ_SOCKS; k++)
        ps__close(fd[k]);
}
