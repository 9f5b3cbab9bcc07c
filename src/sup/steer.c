/*
 * steer.c - which slots get new connections, and how that is enforced.
 *
 * A slot gets new connections while its state is SL_READY (slots.c).  Each
 * TCP reuseport group is steered by an eBPF SELECT_OR_MIGRATE program where
 * one loads, else by a classic BPF program (group.c); the choice is made
 * once per group and said once in the log, and status shows it.  With eBPF
 * a socket that stops listening hands its queue over to the serving ones,
 * which is what lets a retiring slot close at once.
 *
 * A socket of another process of our uid may join a reuseport group after
 * we bound it (the kernel allows that, and refusing it at start is all we
 * can do).  Neither program ever selects it: the eBPF one always picks one
 * of our sockets, the classic one counts it in the kernel's numbering
 * (group.c).  It is looked for every second, said at warning level when it
 * comes, and shown in status for as long as it is there.
 */
#include "sup_internal.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>

static const char *const steer_names[PS_STEER_COUNT] = {
    [PS_STEER_UNSET] = "unset", [PS_STEER_NONE] = "none", [PS_STEER_CBPF] = "cbpf",
    [PS_STEER_EBPF] = "ebpf",   [PS_STEER_FLOW] = "flow",
};

const char *ps__steer_name(enum ps_steer st)
{
    return st < PS_STEER_COUNT ? steer_names[st] : "?";
}

void ps__sup_steer_said(struct ps_sup *sup, struct ps_group *g)
{
    char addr[160];

    if (g->flow_note[0]) { /* after an upgrade: its flow table was not kept */
        ps_spec_format(&g->spec, addr, sizeof(addr));
        ps__sup_log(sup, PS_LOG_WARN, "udp_flows_new_table", "%s: %s", addr, g->flow_note);
        g->flow_note[0] = '\0';
    }
    ps__cap_steering(sup); /* said once for all groups, at warning when it falls back */
}

int ps__cpu_list(int *cpus, int max)
{
    cpu_set_t set;
    int c, n = 0;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 0;
    for (c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    return n;
}

int ps__slot_cpu(int s)
{
    int cpus[CPU_SETSIZE], n = ps__cpu_list(cpus, CPU_SETSIZE);

    return n > 0 && s >= 0 ? cpus[s % n] : -1;
}

void ps__pin_to_slot_cpu(int s)
{
    int c = ps__slot_cpu(s);
    cpu_set_t set;

    if (c < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(c, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

/* CPU number -> the first serving slot pinned to it (slots k, k + N, ... run
 * on the k-th of our N CPUs), or -1; returns the table's length (highest CPU
 * + 1), 0 when --cpu-affinity is off. */
static int cpu_slots(struct ps_sup *sup, const unsigned char *serving, int *cpu_slot, int max)
{
    int cpus[CPU_SETSIZE], n, k, s, len = 0;

    if (!sup->cfg->cpu_affinity)
        return 0;
    n = ps__cpu_list(cpus, CPU_SETSIZE);
    if (n > 0 && sup->nslots > n && !sup->steer.affinity_warned) {
        sup->steer.affinity_warned = 1;
        ps__sup_log(sup, PS_LOG_WARN, "cpu_affinity",
                    "--cpu-affinity with %d slots on %d CPUs: each CPU's connections go to the "
                    "first ready slot pinned to it; slots %d and up get connections only while "
                    "that slot is not ready (use at most %d workers)",
                    sup->nslots, n, n, n);
    }
    for (k = 0; k < n && cpus[k] < max; k++) {
        for (s = k; s < sup->nslots; s += n)
            if (serving[s]) {
                cpu_slot[cpus[k]] = s;
                break;
            }
        len = cpus[k] + 1;
    }
    return len;
}

void ps__sup_steer_decided(struct ps_sup *sup)
{
    int g;

    for (g = 0; g < sup->ngroups; g++)
        if (sup->groups[g].steer == PS_STEER_UNSET)
            return;
    ps__sup_steer(sup);
}

void ps__sup_steer(struct ps_sup *sup)
{
    unsigned char serving[PS_SUP_MAX_WORKERS];
    static int cpu_slot[PS__RP_BPF_CPUS];
    int s, g, r, ncpu;

    sup->steer.dirty = 0;
    memset(serving, 0, sizeof(serving));
    for (s = 0; s < sup->nslots; s++)
        serving[s] = (unsigned char)ps__slot_serving(sup, s);
    for (s = 0; s < PS__RP_BPF_CPUS; s++)
        cpu_slot[s] = -1; /* also the CPUs we may not run on */
    ncpu = cpu_slots(sup, serving, cpu_slot, PS__RP_BPF_CPUS);
    for (g = 0; g < sup->ngroups; g++) {
        struct ps_group *gr = &sup->groups[g];
        if (gr->steer == PS_STEER_UNSET) {
            /* after an upgrade: the new image loads its own program; one
             * that insists on eBPF and cannot have it settles for CBPF
             * rather than stop serving */
            if (ps__group_steer_init(gr, sup->cfg->steering) < 0)
                ps__group_steer_init(gr, PS_STEERING_AUTO);
            ps__sup_steer_said(sup, gr);
        }
        r = ps__group_steer(gr, serving, ncpu ? cpu_slot : NULL, ncpu);
        if (r == -EBUSY) {
            /* the previous image's sockarray still holds our sockets until
             * the kernel frees it: again soon (next_timeout) */
            sup->steer.dirty = 1;
            if (!gr->steer_busy++)
                ps__sup_log(
                    sup, PS_LOG_DEBUG, "steer_busy",
                    "eBPF maps: a socket is still in the previous program's map; again soon");
            continue;
        }
        if (r == 0 && gr->steer_busy) {
            ps__sup_log(sup, PS_LOG_DEBUG, "steer_busy", "eBPF maps set after %u attempt(s)",
                        gr->steer_busy + 1);
            gr->steer_busy = 0;
        }
        if (r < 0 && !sup->steer.warned++)
            ps__sup_log(sup, PS_LOG_WARN, "steer_failed",
                        "cannot set the reuseport steering (%s): %s; connections may queue on a "
                        "socket whose worker is restarting",
                        ps__steer_name(gr->steer), ps_strerror(r));
    }
}

/* "pid 123, socat" for g's first foreign member, or "" when not visible. */
static void foreign_holder(const struct ps_group *g, char *out, size_t len)
{
    char comm[64] = "";
    pid_t pid = 0;

    out[0] = '\0';
    if (g->ntracked && ps__inode_owner(g->foreign[0], &pid, comm, sizeof(comm)) == 0)
        snprintf(out, len, " (pid %ld, %s)", (long)pid, comm);
}

void ps__sup_check_foreign(struct ps_sup *sup)
{
    /* one group a call: an idle supervisor makes a few system calls a
     * second whatever its number of listeners (health.c) */
    static int next;
    char addr[160], who[100];
    int g;

    if (sup->ngroups == 0)
        return;
    next = (next + 1) % sup->ngroups;
    for (g = next; g == next; g++) {
        struct ps_group *gr = &sup->groups[g];
        ps__group_foreign_sync(gr);
        if (gr->order_changed)
            sup->steer.dirty = 1;
        if (gr->nforeign == gr->foreign_said)
            continue;
        ps_spec_format(&gr->spec, addr, sizeof(addr));
        if (gr->nforeign) {
            foreign_holder(gr, who, sizeof(who));
            ps__sup_log(sup, PS_LOG_WARN, "foreign_member",
                        "%s: %d socket(s) of another process joined our reuseport group%s; we "
                        "steer no connection to it, but the kernel may hand it one that no "
                        "steering program places: stop it",
                        addr, gr->nforeign, who);
        } else {
            ps__sup_log(sup, PS_LOG_INFO, "foreign_member_gone",
                        "%s: no foreign socket in our reuseport group any more", addr);
        }
        gr->foreign_said = gr->nforeign;
    }
}
