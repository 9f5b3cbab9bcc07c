/*
 * capability.c - what this host lets the supervisor do, said once.
 *
 * Several things fall back quietly to something weaker where the kernel or
 * the container does not allow the better way: eBPF steering to classic
 * BPF, queue migration to nothing, the sock_diag listener check to reading
 * /proc/net/tcp, --ready auto's view of a worker's /proc to --ready-delay.
 * Each is a row of one small registry (name, state, how, why).  A row that
 * becomes degraded or off is logged once, at warning level, with why and
 * what to do; status (text and JSON) and the metrics show every row.  The
 * rows said so far travel across an upgrade (caps_said, upgrade.c), so a
 * re-executed supervisor that finds the same fallback does not say it
 * again.
 */
#include "sup_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CAP_SYS_PTRACE_BIT 19 /* linux/capability.h */

static const char *const cap_names[PS_CAP_COUNT] = {
    [PS_CAP_STEERING] = "steering",
    [PS_CAP_MIGRATION] = "migration",
    [PS_CAP_LISTENER_CHECK] = "listener_check",
    [PS_CAP_READY_VIEW] = "ready_view",
    [PS_CAP_UDP_FLOWS] = "udp_flows",
};

static const char *const state_names[PS_CAP_STATE_COUNT] = {
    [PS_CAP_UNKNOWN] = "unknown",
    [PS_CAP_OK] = "ok",
    [PS_CAP_DEGRADED] = "degraded",
    [PS_CAP_OFF] = "off",
};

const char *ps__cap_name(enum ps_cap cap)
{
    return cap < PS_CAP_COUNT ? cap_names[cap] : "?";
}

const char *ps__cap_state_name(enum ps_cap_state st)
{
    return st < PS_CAP_STATE_COUNT ? state_names[st] : "?";
}

void ps__cap_set(struct ps_sup *sup, enum ps_cap cap, enum ps_cap_state st, const char *how,
                 const char *fmt, ...)
{
    struct ps_cap_row *c = &sup->caps.rows[cap];
    unsigned bit = 1u << cap;
    va_list ap;

    if (c->state == st && !strcmp(c->how, how))
        return;
    c->state = st;
    snprintf(c->how, sizeof(c->how), "%s", how);
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    if (st == PS_CAP_OK) {
        ps__sup_log(sup, PS_LOG_INFO, "capability", "%s: %s (%s)", cap_names[cap], how, c->why);
    } else if (!(sup->caps.said & bit)) {
        sup->caps.said |= bit;
        ps__sup_log(sup, PS_LOG_WARN, "capability", "%s %s (%s): %s", cap_names[cap],
                    state_names[st], how, c->why);
    }
}

/* Steering, as the groups decided it (the weakest one counts). */
static void steering(struct ps_sup *sup, int *ebpf)
{
    const char *why;
    enum ps_steer st = ps__sup_steering(sup, &why);

    *ebpf = st == PS_STEER_EBPF;
    if (st == PS_STEER_EBPF)
        ps__cap_set(sup, PS_CAP_STEERING, PS_CAP_OK, "ebpf",
                    "new connections go to ready slots only; a closed or shut-down socket hands "
                    "its queue to the serving ones");
    else if (st == PS_STEER_CBPF)
        ps__cap_set(sup, PS_CAP_STEERING, PS_CAP_DEGRADED, "cbpf",
                    "classic BPF steering, no migration (eBPF not used: %s): steering follows the "
                    "kernel's socket numbering",
                    why);
}

static int read_int(const char *path, int dflt)
{
    FILE *f = fopen(path, "re");
    int v = dflt;

    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = dflt;
        fclose(f);
    }
    return v;
}

static void migration(struct ps_sup *sup, int ebpf)
{
    if (ebpf)
        ps__cap_set(sup, PS_CAP_MIGRATION, PS_CAP_OK, "ebpf",
                    "SELECT_OR_MIGRATE moves a closed socket's queue and handshakes to a ready "
                    "slot");
    else if (read_int("/proc/sys/net/ipv4/tcp_migrate_req", 0) == 1)
        ps__cap_set(sup, PS_CAP_MIGRATION, PS_CAP_DEGRADED, "tcp_migrate_req",
                    "without eBPF the kernel moves a closed socket's queue to a socket of the "
                    "group chosen by hash, ready or not");
    else
        ps__cap_set(sup, PS_CAP_MIGRATION, PS_CAP_OFF, "none",
                    "without eBPF (and net.ipv4.tcp_migrate_req=0) nothing moves a socket's "
                    "queue: a retiring socket is kept until it empties, a stalled worker's queue "
                    "waits for its fresh worker");
}

void ps__cap_steering(struct ps_sup *sup)
{
    const struct ps_group *unkept = NULL;
    int g, steered = 0, udp = 0, undecided = 0, ebpf, r;

    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        steered |= gr->steer == PS_STEER_CBPF || gr->steer == PS_STEER_EBPF;
        udp |= gr->spec.proto == PS_PROTO_UDP;
        undecided |= gr->spec.proto == PS_PROTO_UDP && gr->steer == PS_STEER_UNSET;
        if (gr->spec.proto == PS_PROTO_UDP && gr->steer != PS_STEER_FLOW && !unkept)
            unkept = gr;
    }
    if (steered) {
        steering(sup, &ebpf);
        migration(sup, ebpf);
    }
    if (undecided)
        ; /* said once every UDP group's steering is decided */
    else if (unkept)
        ps__cap_set(sup, PS_CAP_UDP_FLOWS, PS_CAP_OFF, "same-socket",
                    "UDP flows are not kept across reloads and scaling on %s (%s): every "
                    "generation reads the same sockets and the kernel's hash moves flows, so a "
                    "stateful UDP server (QUIC, WireGuard, games) loses them",
                    unkept->spec.text,
                    unkept->steer_why[0] ? unkept->steer_why : "one shared socket");
    else if (udp)
        ps__cap_set(sup, PS_CAP_UDP_FLOWS, PS_CAP_OK, "flow-table",
                    "a UDP flow stays with the process that got its first datagram across "
                    "reloads and scaling; replaced workers linger while their flows live");
    if (sup->caps.rows[PS_CAP_LISTENER_CHECK].state != PS_CAP_UNKNOWN)
        return;
    r = ps__proc_net_diag();
    if (r == 0)
        ps__cap_set(sup, PS_CAP_LISTENER_CHECK, PS_CAP_OK, "sock_diag",
                    "foreign listeners on our ports are found from the kernel's socket dump");
    else
        ps__cap_set(sup, PS_CAP_LISTENER_CHECK, PS_CAP_DEGRADED, "/proc/net",
                    "no sock_diag dump (%s: is the inet_diag/tcp_diag module loaded?): "
                    "listeners are found by reading /proc/net/tcp, which takes long with many "
                    "sockets",
                    ps_strerror(r));
}

/* 1 when our effective capabilities hold CAP_SYS_PTRACE. */
static int have_ptrace_cap(void)
{
    char line[256];
    unsigned long long eff = 0;
    FILE *f = fopen("/proc/self/status", "re");

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "CapEff: %llx", &eff) == 1)
            break;
    fclose(f);
    return (int)(eff >> CAP_SYS_PTRACE_BIT & 1);
}

void ps__cap_ready_view(struct ps_sup *sup, pid_t pid, int err)
{
    struct ps_cap_row *c = &sup->caps.rows[PS_CAP_READY_VIEW];
    char path[64], who[64] = "", after[96];
    struct stat st;
    int cap;

    /* one worker unseen is enough to say so; it stays said */
    if (c->state == PS_CAP_DEGRADED)
        return;
    if (!err) {
        if (c->state == PS_CAP_UNKNOWN)
            ps__cap_set(sup, PS_CAP_READY_VIEW, PS_CAP_OK, "/proc",
                        "a worker that sends no READY=1 is ready once /proc shows it waiting on "
                        "its listeners");
        return;
    }
    cap = have_ptrace_cap();
    if (sup->cfg->ready_delay_ms)
        snprintf(after, sizeof(after), "ready only after --ready-delay (%u ms)",
                 sup->cfg->ready_delay_ms);
    else
        snprintf(after, sizeof(after), "never ready (--ready-delay 0)");
    snprintf(path, sizeof(path), "/proc/%ld", (long)pid);
    if (stat(path, &st) == 0)
        snprintf(who, sizeof(who), " (uid %u)", (unsigned)st.st_uid);
    ps__cap_set(sup, PS_CAP_READY_VIEW, PS_CAP_DEGRADED, "--ready-delay",
                "cannot look into worker %ld's /proc%s: %s; %s; a worker that sends no READY=1 is "
                "%s.  Give the supervisor CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE), run "
                "the workers as its own user, have them send READY=1, or say --ready delay",
                (long)pid, who, ps_strerror(err),
                err == -ENOENT ? "/proc is mounted with hidepid= and hides it"
                : geteuid() == 0 && !cap
                    ? "the supervisor runs as root without CAP_SYS_PTRACE (Docker's default) "
                      "and the worker as another user"
                    : "the worker runs as another user or is not dumpable",
                after);
}
