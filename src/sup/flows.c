/*
 * flows.c - UDP flows kept across reloads and scaling: the flow table of
 * each UDP reuseport group (src/bpf/udp_flow.h), and the workers that
 * linger for their flows.
 *
 * QUIC, WireGuard, SIP, DTLS and game servers keep per-flow state in the
 * process.  The kernel's own reuseport hash moves a flow whenever the set
 * of sockets changes, and two generations reading one socket split a flow
 * between them.  So a UDP group steered here (PS_STEER_FLOW):
 *   - gives each generation sockets of its own (ps__group_per_generation:
 *     a reload binds them, slots.c), and each socket an id in the table;
 *   - sends new flows to the serving slots' sockets only; a flow stays
 *     with the socket that got its first datagram while that socket lives
 *     and the flow is not idle (the listener's flow_idle);
 *   - lets a worker that is replaced (a reload, a retired slot) while its
 *     sockets still get datagrams linger (W_LINGERING): no drain signal,
 *     which almost every UDP server takes as "exit now", until none of its
 *     sockets has had a datagram for flow_idle, or --flow-linger is over.
 *     One that says STOPPING=1 goes by itself, as always.
 * Classic BPF (--steering cbpf) or no eBPF: the kernel's hash, the same
 * sockets for every generation, and the capability row says flows are
 * not kept.
 */
#include "sup_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define FLOWS_DEFAULT        32768 /* about 4 MiB of kernel memory a listener */
#define FLOW_IDLE_DEFAULT_MS 60000 /* above QUIC's usual 30 s idle timeout */

static unsigned long inode_of(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

unsigned ps__flow_idle_ms(const struct ps_group *g)
{
    return g->spec.flow_idle_ms ? g->spec.flow_idle_ms : FLOW_IDLE_DEFAULT_MS;
}

unsigned ps__flow_capacity(const struct ps_group *g)
{
    return g->spec.flows ? g->spec.flows : FLOWS_DEFAULT;
}

int ps__flow_can_steer(const struct ps_group *g)
{
    return !g->shared && g->spec.proto == PS_PROTO_UDP;
}

/* After an upgrade: the old image's table, with every flow, id and
 * counter, when this binary's program takes its maps (else -errno, the
 * descriptors closed: a fresh table follows, and flows in progress may
 * move once).  The sockets' ids are found in it by their cookies. */
static int take_over(struct ps_group *g)
{
    char err[256];
    int ids[PS__GROUP_MAX], i, n = g->nflow_maps, r;

    g->nflow_maps = 0;
    if (n == 0)
        return -ENOENT;
    r = ps__udp_flow_import(&g->flow, g->flow_maps, n, ps__flow_capacity(g), ps__flow_idle_ms(g),
                            err, sizeof(err));
    if (r < 0) {
        for (i = 0; i < n; i++)
            ps__close(g->flow_maps[i]);
        snprintf(g->flow_note, sizeof(g->flow_note),
                 "the previous image's UDP flow table could not be taken over (%s): a new one, "
                 "flows in progress may move once",
                 err);
        return r;
    }
    if (ps__udp_flow_find(g->flow, g->fds, g->nfds, ids) >= 0)
        for (i = 0; i < g->nfds; i++)
            if ((g->flow_id[i] = ids[i]) >= 0) {
                g->ino[i] = g->ino[i] ? g->ino[i] : inode_of(g->fds[i]);
                g->flow_ino[i] = g->ino[i];
            }
    return 0;
}

int ps__flow_steer_init(struct ps_group *g, int want)
{
    char why[sizeof(g->steer_why) - 64];
    int r, i;

    for (i = 0; i < PS__GROUP_MAX; i++) {
        g->flow_id[i] = -1;
        g->flow_ino[i] = 0;
    }
    g->flow = NULL;
    if (want == PS_STEERING_CBPF) {
        for (i = 0; i < g->nflow_maps; i++) /* an old image's table: not wanted */
            ps__close(g->flow_maps[i]);
        g->nflow_maps = 0;
        snprintf(g->steer_why, sizeof(g->steer_why),
                 "--steering cbpf: the kernel's hash, one socket per slot for every generation");
        g->steer = PS_STEER_NONE;
        return 0;
    }
    r = take_over(g);
    if (r < 0)
        r = ps__udp_flow_open(&g->flow, ps__flow_capacity(g), ps__flow_idle_ms(g), why,
                              sizeof(why));
    if (r == 0 && (r = ps__udp_flow_attach(g->flow, g->fds[0])) < 0)
        snprintf(why, sizeof(why), "setsockopt(SO_ATTACH_REUSEPORT_EBPF): %s", ps_strerror(r));
    if (r == 0) {
        g->steer = PS_STEER_FLOW;
        return 0;
    }
    ps__flow_close(g);
    snprintf(g->steer_why, sizeof(g->steer_why), "no UDP flow table: %s", why);
    g->steer = PS_STEER_NONE;
    return want == PS_STEERING_EBPF ? r : 0;
}

void ps__flow_close(struct ps_group *g)
{
    if (g->flow)
        ps__udp_flow_close(g->flow);
    g->flow = NULL;
}

/* Socket i's id in the table, given now if it has none (a new socket: a
 * reload's, a scale-up's, a revived one's).  -errno when the table would
 * not take it. */
static int id_of(struct ps_group *g, int i)
{
    if (!g->ino[i])
        g->ino[i] = inode_of(g->fds[i]);
    if (g->flow_ino[i] == g->ino[i] && g->flow_id[i] >= 0)
        return g->flow_id[i];
    g->flow_id[i] = ps__udp_flow_add(g->flow, g->fds[i]);
    g->flow_ino[i] = g->flow_id[i] >= 0 ? g->ino[i] : 0;
    return g->flow_id[i];
}

int ps__flow_steer(struct ps_group *g, const unsigned char *serving)
{
    int ids[PS__GROUP_MAX], i, n = 0, r;

    for (i = 0; i < g->nfds; i++) {
        r = id_of(g, i);
        if (r < 0)
            return r;
        if (serving[i])
            ids[n++] = r;
    }
    /* no slot serves: new flows wait in all of ours for the next worker
     * (an empty list would be the kernel's hash over every member) */
    for (i = 0; n == 0 && i < g->nfds; i++)
        ids[n++] = g->flow_id[i];
    return ps__udp_flow_serve(g->flow, ids, n);
}

void ps__flow_keep(struct ps_sup *sup, int s, struct ps_worker *w)
{
    int g;

    for (g = 0; g < sup->ngroups && g < PS_SUP_MAX_LISTENERS; g++) {
        const struct ps_group *gr = &sup->groups[g];
        w->flow_refs[g] = gr->steer == PS_STEER_FLOW && s < gr->nfds && gr->flow_id[s] >= 0
                              ? (short)(gr->flow_id[s] + 1)
                              : 0;
    }
}

/* The most recent datagram to any of w's sockets, as ms ago (UINT64_MAX:
 * none, or none of them lives any more). */
static uint64_t idle_for(const struct ps_sup *sup, const struct ps_worker *w, int *busy_group)
{
    uint64_t least = UINT64_MAX, idle;
    int g, id;

    for (g = 0; g < sup->ngroups && g < PS_SUP_MAX_LISTENERS; g++) {
        const struct ps_group *gr = &sup->groups[g];
        id = w->flow_refs[g] - 1;
        if (id < 0 || gr->steer != PS_STEER_FLOW || ps__udp_flow_alive(gr->flow, id) != 1)
            continue;
        idle = ps__udp_flow_idle_ms(gr->flow, id);
        if (idle < ps__flow_idle_ms(gr) && idle < least) {
            least = idle;
            *busy_group = g;
        }
    }
    return least;
}

void ps__flow_retire(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    int busy = -1;

    if (w->state == W_READY && idle_for(sup, w, &busy) != UINT64_MAX)
        ps__worker_step(sup, w, WE_LINGER, why);
    else
        ps__worker_drain(sup, w, why);
}

void ps__flow_linger_check(struct ps_sup *sup, struct ps_worker *w, uint64_t now)
{
    char why[160];
    int busy = -1;

    if (now >= w->deadline_ms) {
        snprintf(why, sizeof(why), "still held UDP flows after --flow-linger (%u ms)",
                 sup->cfg->flow_linger_ms);
        ps__worker_drain(sup, w, why);
    } else if (idle_for(sup, w, &busy) == UINT64_MAX) {
        ps__worker_drain(sup, w, "its UDP flows are idle");
    }
}

int ps__flow_linger_why(const struct ps_sup *sup, const struct ps_worker *w, char *buf, size_t len)
{
    uint64_t now = ps__sup_now(sup), idle;
    char addr[160];
    int busy = -1;

    idle = idle_for(sup, w, &busy);
    if (busy < 0)
        return snprintf(buf, len, "its UDP flows are idle");
    ps_spec_format(&sup->groups[busy].spec, addr, sizeof(addr));
    return snprintf(buf, len,
                    "holds UDP flows on %s (last datagram %.1f s ago, idle after %.1f s); "
                    "drained in %.0f s at most",
                    addr, (double)idle / 1000.0,
                    (double)ps__flow_idle_ms(&sup->groups[busy]) / 1000.0,
                    w->deadline_ms > now ? (double)(w->deadline_ms - now) / 1000.0 : 0.0);
}

/* The generation of slot s's worker, which reads its sockets (0: none
 * now, a slot backing off); a lingering worker's are counted by it. */
static unsigned slot_generation(const struct ps_sup *sup, int s)
{
    int cur = s < sup->nslots ? sup->slots[s].current : -1;

    return cur >= 0 ? sup->workers[cur].generation : 0;
}

static void add_id(struct ps_flow_report *r, unsigned gen, const struct ps__udp_flow_stats *st)
{
    int k;

    for (k = 0; k < r->ngens && r->gens[k].generation != gen; k++)
        ;
    if (k == r->ngens) {
        if (r->ngens == PS_FLOW_REPORT_GENS)
            return;
        memset(&r->gens[r->ngens++], 0, sizeof(r->gens[0]));
        r->gens[k].generation = gen;
    }
    r->gens[k].flows += st->flows;
    r->gens[k].new_flows += st->new_flows;
    r->gens[k].datagrams += st->datagrams;
}

int ps__flow_report(struct ps_sup *sup, int g, struct ps_flow_report *r)
{
    struct ps_group *gr = &sup->groups[g];
    struct ps__udp_flow_stats st;
    int i, id, r2;

    memset(r, 0, sizeof(*r));
    if (gr->steer != PS_STEER_FLOW || !gr->flow)
        return -EINVAL;
    if ((r2 = ps__udp_flow_walk(gr->flow)) < 0 ||
        (r2 = ps__udp_flow_stats(gr->flow, -1, &r->group)) < 0)
        return r2;
    r->capacity = ps__flow_capacity(gr);
    r->idle_ms = ps__flow_idle_ms(gr);
    /* every id that holds a socket of ours: the slots' and the lingering
     * workers' (a generation gone entirely has no live socket left) */
    for (i = 0; i < gr->nfds; i++)
        if (gr->flow_ino[i] && (id = gr->flow_id[i]) >= 0 &&
            ps__udp_flow_stats(gr->flow, id, &st) == 0)
            add_id(r, slot_generation(sup, i), &st);
    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        id = w->flow_refs[g] - 1;
        if (w->pid && w->state == W_LINGERING && id >= 0 && ps__udp_flow_alive(gr->flow, id) == 1 &&
            ps__udp_flow_stats(gr->flow, id, &st) == 0)
            add_id(r, w->generation, &st);
    }
    return 0;
}
