/*
 * metrics.c - what the operations endpoints say: the Prometheus text of
 * `GET /metrics` and `portshare metrics`, the verdict of `GET /healthz`, and
 * the line HAProxy's agent-check reads.
 *
 * Everything is computed at the time of the request from the supervisor's
 * own state and from the listening sockets it holds (TCP_INFO for the
 * accept queue, SO_MEMINFO for the drops), so a scrape costs one getsockopt
 * pair per held socket and nothing while nobody asks.
 *
 * The text follows the exposition format 0.0.4: each family once, its
 * "# HELP" and "# TYPE" lines first, then its samples; label values escape
 * '\\', '"' and newline.  Counters end in _total.
 */
#include "sup_internal.h"

#include <linux/sock_diag.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define put ps__buf_printf

static void family(struct ps_buf *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* a label value: \\ \" \n escaped, everything else as it is */
static void label_value(struct ps_buf *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *s);
    }
}

static void listener_label(struct ps_buf *o, const struct ps_group *g)
{
    char addr[160];

    if (ps_spec_format(&g->spec, addr, sizeof(addr)) < 0)
        snprintf(addr, sizeof(addr), "%s", g->spec.text);
    put(o, "listener=\"");
    label_value(o, addr);
    put(o, "\"");
}

/* socket i of g as a slot label: its slot, or "shared" */
static void slot_label(struct ps_buf *o, const struct ps_group *g, int i)
{
    if (g->shared)
        put(o, ",slot=\"shared\"");
    else
        put(o, ",slot=\"%d\"", i);
}

/* The kernel's drop count of a socket: for a TCP listener, the SYNs and
 * handshakes it refused because its accept queue was full (tcp_listendrop:
 * what ListenDrops of /proc/net/netstat sums over all sockets), SYN
 * retransmits included; for UDP, datagrams the receive buffer had no room for.
 * With TCP_DEFER_ACCEPT it also counts every handshake ACK the kernel
 * discards while it waits for the request (tcp_v4_rcv's discard_and_relse
 * after tcp_check_req: TcpExt TCPDeferAcceptDrop), about one a connection:
 * there only netstat_value("ListenOverflows") tells overflows apart. */
static int socket_drops(int fd, unsigned *drops)
{
    __u32 mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);

    memset(mem, 0, sizeof(mem));
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0)
        return ps__neg_errno();
    if (len <= SK_MEMINFO_DROPS * sizeof(mem[0]))
        return -EOPNOTSUPP; /* before Linux 4.7 */
    *drops = mem[SK_MEMINFO_DROPS];
    return 0;
}

/* The value of NAME=DIGITS in a worker's "a=1 b=2" counters text. */
/* The first well-formed NAME=DIGITS of a worker's counters (a later
 * repeat of the name is ignored, as in the closes). */
static int counter_of(const char *text, const char *name, unsigned long long *v)
{
    char key[32];

    while (ps__stats_next(&text, key, sizeof(key), v))
        if (!strcmp(key, name))
            return 0;
    return -ENOENT;
}

/* 1 when the pair that ends at end is the first of its name in text: a
 * worker that repeats a reason gets one series, not two with one label set
 * (which Prometheus rejects). */
static int first_of(const char *text, const char *end, const char *name)
{
    unsigned long long v;
    char key[32];

    while (ps__stats_next(&text, key, sizeof(key), &v) && text < end)
        if (!strcmp(key, name))
            return 0;
    return 1;
}

static const struct ps_worker *slot_worker(const struct ps_sup *sup, int s)
{
    int cur = sup->slots[s].current;

    return cur >= 0 && sup->workers[cur].pid ? &sup->workers[cur] : NULL;
}

static int lingering(const struct ps_sup *sup)
{
    int i, n = 0;

    for (i = 0; i < sup->nworkers; i++)
        n += sup->workers[i].pid && sup->workers[i].state == W_LINGERING;
    return n;
}

static void supervisor_metrics(struct ps_buf *o, struct ps_sup *sup)
{
    unsigned count[SL_STATE_COUNT] = {0};
    const char *why;
    int s, st;

    family(o, "portshare_generation", "gauge", "The generation of workers serving now.");
    put(o, "portshare_generation %u\n", sup->generation);
    family(o, "portshare_workers_target", "gauge", "The number of workers asked for.");
    put(o, "portshare_workers_target %d\n", sup->target);
    for (s = 0; s < sup->nslots; s++)
        count[sup->slots[s].state]++;
    family(o, "portshare_workers", "gauge", "Worker slots by state.");
    for (st = 0; st < SL_STATE_COUNT; st++)
        if (st != SL_CLOSED)
            put(o, "portshare_workers{state=\"%s\"} %u\n", ps__slot_state_name(st), count[st]);
    family(o, "portshare_workers_lingering", "gauge",
           "Workers replaced (a reload, a retired slot) that still hold live UDP flows: no "
           "drain signal until they are idle (flow_idle) or --flow-linger is over.");
    put(o, "portshare_workers_lingering %d\n", lingering(sup));
    family(o, "portshare_reloads_total", "counter", "Reloads by outcome.");
    put(o, "portshare_reloads_total{result=\"done\"} %u\n", sup->ops.reloads_ok);
    put(o, "portshare_reloads_total{result=\"rolled_back\"} %u\n", sup->ops.reloads_failed);
    family(o, "portshare_healthy", "gauge",
           "1 while /healthz says 200 (a worker is ready, not in lame duck, not stopping).");
    put(o, "portshare_healthy %d\n", ps__sup_healthy(sup, &why));
    family(o, "portshare_lameduck", "gauge", "1 from the start of a lame duck until the exit.");
    put(o, "portshare_lameduck %d\n", ps__lameduck(sup));
    family(o, "portshare_start_time_seconds", "gauge", "When the supervisor started (Unix time).");
    put(o, "portshare_start_time_seconds %lld\n", (long long)sup->started_wall);
    family(o, "portshare_strays_killed_total", "counter",
           "Processes that outlived their worker and were killed.");
    put(o, "portshare_strays_killed_total %u\n", sup->strays_killed);
}

static void slot_metrics(struct ps_buf *o, struct ps_sup *sup)
{
    int s;

    family(o, "portshare_worker_restarts_total", "counter",
           "Exits of a slot's worker outside a reload (crashes, kills, watchdog).");
    for (s = 0; s < sup->nslots; s++)
        put(o, "portshare_worker_restarts_total{slot=\"%d\"} %u\n", s, sup->slots[s].restarts);
    family(o, "portshare_worker_consecutive_exits", "gauge",
           "Quick exits in a row of a slot's worker (3 or more: a crash loop).");
    for (s = 0; s < sup->nslots; s++)
        put(o, "portshare_worker_consecutive_exits{slot=\"%d\"} %u\n", s, sup->slots[s].crashes);
    family(o, "portshare_stalls_total", "counter",
           "Times a slot's worker was found stalled: its queue held connections and did not "
           "go down for --stall-timeout.");
    for (s = 0; s < sup->nslots; s++)
        put(o, "portshare_stalls_total{slot=\"%d\"} %u\n", s, sup->slots[s].stalls);
    family(o, "portshare_stall_rescues_total", "counter",
           "Times a stalled worker was replaced by a fresh one, its queue moved to the other "
           "slots.");
    for (s = 0; s < sup->nslots; s++)
        put(o, "portshare_stall_rescues_total{slot=\"%d\"} %u\n", s, sup->slots[s].rescues);
}

/* A TcpExt counter of /proc/net/netstat (this network namespace's): a line
 * of names, then a line of values, in the same order. */
static int netstat_value(const char *name, unsigned long long *value)
{
    char names[4096], values[4096], *ns, *vs, *n, *v;
    FILE *f = fopen("/proc/net/netstat", "re");
    int r = -ENOENT;

    if (!f)
        return ps__neg_errno();
    while (fgets(names, sizeof(names), f) && fgets(values, sizeof(values), f)) {
        if (strncmp(names, "TcpExt:", 7) || strncmp(values, "TcpExt:", 7))
            continue;
        n = strtok_r(names + 7, " \n", &ns);
        v = strtok_r(values + 7, " \n", &vs);
        for (; n && v; n = strtok_r(NULL, " \n", &ns), v = strtok_r(NULL, " \n", &vs))
            if (!strcmp(n, name)) {
                *value = strtoull(v, NULL, 10);
                r = 0;
                break;
            }
        break;
    }
    fclose(f);
    return r;
}

static void listener_metrics(struct ps_buf *o, struct ps_sup *sup)
{
    unsigned long long overflows;
    unsigned q, lim, drops;
    int g, i;

    static const char *const protos[] = {
        [PS_PROTO_TCP] = "tcp", [PS_PROTO_UDP] = "udp", [PS_PROTO_UNIX] = "unix"};

    family(o, "portshare_listener_info", "gauge",
           "1 per listener: its address, LISTEN_FDNAMES name, protocol, sockets and mode.");
    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        put(o, "portshare_listener_info{");
        listener_label(o, gr);
        put(o, ",name=\"");
        label_value(o, gr->spec.name);
        put(o, "\",proto=\"%s\",mode=\"%s\",sockets=\"%d\"} 1\n",
            gr->spec.proto <= PS_PROTO_UNIX ? protos[gr->spec.proto] : "?",
            gr->shared ? "shared" : "reuseport", gr->nfds);
    }
    family(o, "portshare_listener_queue_length", "gauge",
           "Connections waiting in a held socket's accept queue.");
    for (g = 0; g < sup->ngroups; g++)
        for (i = 0; i < sup->groups[g].nfds; i++)
            if (ps_listen_queue(sup->groups[g].fds[i], &q, &lim) == 0) {
                put(o, "portshare_listener_queue_length{");
                listener_label(o, &sup->groups[g]);
                slot_label(o, &sup->groups[g], i);
                put(o, "} %u\n", q);
            }
    family(o, "portshare_listener_backlog", "gauge",
           "The accept queue limit of a listener's sockets (listen backlog).");
    for (g = 0; g < sup->ngroups; g++)
        if (sup->groups[g].nfds && ps_listen_queue(sup->groups[g].fds[0], &q, &lim) == 0) {
            put(o, "portshare_listener_backlog{");
            listener_label(o, &sup->groups[g]);
            put(o, "} %u\n", lim);
        }
    family(o, "portshare_listener_drops_total", "counter",
           "SYNs and handshakes a held socket dropped because its accept queue was full "
           "(SO_MEMINFO SK_MEMINFO_DROPS; retransmitted SYNs count again). On a listener "
           "with defer=N (TCP_DEFER_ACCEPT, serve's default) it also counts the handshake "
           "ACK discarded while waiting for each request: see portshare_listen_overflows_total.");
    for (g = 0; g < sup->ngroups; g++) {
        if (sup->groups[g].spec.proto != PS_PROTO_TCP)
            continue;
        for (i = 0; i < sup->groups[g].nfds; i++)
            if (socket_drops(sup->groups[g].fds[i], &drops) == 0) {
                put(o, "portshare_listener_drops_total{");
                listener_label(o, &sup->groups[g]);
                slot_label(o, &sup->groups[g], i);
                put(o, "} %u\n", drops);
            }
    }
    if (netstat_value("ListenOverflows", &overflows) == 0) {
        family(o, "portshare_listen_overflows_total", "counter",
               "Connections refused because an accept queue was full, over every listener "
               "of the supervisor's network namespace (TcpExt ListenOverflows).");
        put(o, "portshare_listen_overflows_total %llu\n", overflows);
    }
}

/* The counters a worker sends (X_PORTSHARE_STATS): those of the slot's
 * current worker process, so they restart from 0 when it is replaced (a
 * counter reset, which rate() handles). */
static void worker_counter(struct ps_buf *o, struct ps_sup *sup, const char *metric,
                           const char *type, const char *key, const char *help)
{
    unsigned long long v;
    int s;

    family(o, metric, type, help);
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_worker *w = slot_worker(sup, s);
        if (w && counter_of(w->stats, key, &v) == 0)
            put(o, "%s{slot=\"%d\"} %llu\n", metric, s, v);
    }
}

static void worker_metrics(struct ps_buf *o, struct ps_sup *sup)
{
    char reason[32];
    unsigned long long v;
    const char *p;
    int s;

    worker_counter(o, sup, "portshare_worker_connections_accepted_total", "counter", "accepted",
                   "Connections the slot's worker accepted (as it reports them).");
    worker_counter(o, sup, "portshare_worker_requests_total", "counter", "requests",
                   "Requests the slot's worker served (as it reports them).");
    worker_counter(o, sup, "portshare_worker_connections_active", "gauge", "active",
                   "Connections the slot's worker has open (as it reports them).");
    family(o, "portshare_worker_connections_closed_total", "counter",
           "Connections the slot's worker closed, by reason (as it reports them).");
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_worker *w = slot_worker(sup, s);
        for (p = w ? w->closes : ""; ps__stats_next(&p, reason, sizeof(reason), &v);)
            if (first_of(w->closes, p, reason))
                put(o,
                    "portshare_worker_connections_closed_total{slot=\"%d\",reason=\"%s\"} %llu\n",
                    s, reason, v);
    }
}

/* One series of a flow-steered listener: name{listener="..."[,generation="G"]} v */
static void flow_series(struct ps_buf *o, const struct ps_group *g, const char *name, long gen,
                        unsigned long long v)
{
    put(o, "%s{", name);
    listener_label(o, g);
    if (gen >= 0)
        put(o, ",generation=\"%ld\"", gen);
    put(o, "} %llu\n", v);
}

/* The per-listener series of a flow table: one value of its report each. */
static const struct {
    const char *name, *type, *help;
    size_t offset; /* of a uint64_t in struct ps_flow_report */
} flow_series_rows[] = {
    {"portshare_udp_flows_capacity", "gauge",
     "Flows a listener's table holds (option flows=N); beyond, the least recent is evicted.",
     offsetof(struct ps_flow_report, capacity)},
    {"portshare_udp_flows_new_total", "counter",
     "Flows a listener's table gave a socket: new ones, and ones moved off a socket that "
     "closed or off an old generation's after flow_idle.",
     offsetof(struct ps_flow_report, group.new_flows)},
    {"portshare_udp_flows_moved_total", "counter",
     "Flows that had to move to another socket (theirs closed, or they were idle on an old "
     "generation's): each is a flow whose process lost it.",
     offsetof(struct ps_flow_report, group.moved)},
    {"portshare_udp_flows_evicted_total", "counter",
     "Flows evicted because the table was full (an estimate: inserted minus present).",
     offsetof(struct ps_flow_report, group.evicted)},
    {"portshare_udp_datagrams_old_generation_total", "counter",
     "Datagrams the flow table steered to a socket of a worker that no longer serves (flows "
     "kept for a lingering worker).",
     offsetof(struct ps_flow_report, group.old_datagrams)},
};

/* The UDP flow tables: one walk of each per scrape (flows.c). */
static void flow_metrics(struct ps_buf *o, struct ps_sup *sup)
{
    static struct ps_flow_report rep[PS_SUP_MAX_LISTENERS];
    int g, k, n = 0, ok[PS_SUP_MAX_LISTENERS];
    size_t m;

    for (g = 0; g < sup->ngroups; g++)
        n += ok[g] = ps__flow_report(sup, g, &rep[g]) == 0;
    if (!n)
        return;
    family(o, "portshare_udp_flows", "gauge",
           "UDP flows in a listener's flow table, by the generation of the worker that holds "
           "them (generation 0: a socket no worker holds now).");
    for (g = 0; g < sup->ngroups; g++)
        for (k = 0; ok[g] && k < rep[g].ngens; k++)
            flow_series(o, &sup->groups[g], "portshare_udp_flows", rep[g].gens[k].generation,
                        rep[g].gens[k].flows);
    for (m = 0; m < PS__ARRAY_LEN(flow_series_rows); m++) {
        family(o, flow_series_rows[m].name, flow_series_rows[m].type, flow_series_rows[m].help);
        for (g = 0; g < sup->ngroups; g++)
            if (ok[g])
                flow_series(
                    o, &sup->groups[g], flow_series_rows[m].name, -1,
                    *(const uint64_t *)((const char *)&rep[g] + flow_series_rows[m].offset));
    }
}

/* Each capability looked at: one series per state, 1 for the one it is in
 * (alert on state!="ok" == 1). */
static void capability_metrics(struct ps_buf *o, struct ps_sup *sup)
{
    int c, st;

    ps__ready_view_refresh(sup);
    family(o, "portshare_capability", "gauge",
           "1 for the state each capability is in: ok, degraded (a weaker fallback), off");
    for (c = 0; c < PS_CAP_COUNT; c++) {
        if (sup->caps.rows[c].state == PS_CAP_UNKNOWN)
            continue;
        for (st = PS_CAP_OK; st < PS_CAP_STATE_COUNT; st++)
            put(o, "portshare_capability{name=\"%s\",state=\"%s\"} %d\n",
                ps__cap_name((enum ps_cap)c), ps__cap_state_name((enum ps_cap_state)st),
                sup->caps.rows[c].state == (enum ps_cap_state)st);
    }
}

void ps__metrics_text(struct ps_sup *sup, struct ps_buf *out)
{
    supervisor_metrics(out, sup);
    capability_metrics(out, sup);
    slot_metrics(out, sup);
    listener_metrics(out, sup);
    flow_metrics(out, sup);
    worker_metrics(out, sup);
}

static int ready_slots(const struct ps_sup *sup)
{
    int s, n = 0;

    for (s = 0; s < sup->nslots; s++)
        n += ps__slot_serving(sup, s);
    return n;
}

int ps__sup_healthy(const struct ps_sup *sup, const char **why)
{
    const char *w = "ok";
    int ok = 0;

    if (ps__stopping(sup))
        w = "stopping";
    else if (ps__lameduck(sup))
        w = "lame duck";
    else if (!ready_slots(sup))
        w = "no worker ready";
    else
        ok = 1;
    if (why)
        *why = w;
    return ok;
}

/* HAProxy 2.6 (agent-check): words separated by spaces, one line.  "up" and
 * "ready" undo an earlier "down" or "drain" (a drained server stays
 * drained until an answer says "ready"); N% scales the configured weight. */
void ps__agent_text(const struct ps_sup *sup, char *buf, size_t len)
{
    int ready = ready_slots(sup), pct;

    if (ps__lameduck(sup) || ps__stopping(sup)) {
        snprintf(buf, len, "drain\n");
        return;
    }
    if (!ready) {
        snprintf(buf, len, "down #no worker ready\n");
        return;
    }
    pct = sup->target > 0 ? ready * 100 / sup->target : 100;
    snprintf(buf, len, "up ready %d%%\n", pct < 1 ? 1 : pct > 100 ? 100 : pct);
}
