/*
 * sup_internal.h - the supervisor's state, shared by its modules.  Only
 * src/sup includes it.
 *
 *   supervisor.c  the event loop: signals, notify messages, timers, reaping
 *   start.c       start (bind or adopt, first workers) and the end (shutdown)
 *   slots.c       the slot life cycle: one state x event table and its actions
 *   ops.c         operations (reload, scale, stop, upgrade): queued and merged
 *                 by rule, each requester answered with its own outcome
 *   spawn.c       fork/exec of one worker
 *   tree.c        a worker is its process tree: subreaper, strays, killing
 *   group.c       the listening sockets of one spec, steering, dead listeners
 *   connsrv.c     one connection server for the control socket, /metrics,
 *                 /healthz and the agent: states, deadlines, closes by reason
 *   control.c     the control socket: its place, its line commands
 *   client.c      the control socket's client side (the CLI)
 *   ready.c       --ready auto: is a starting worker waiting on its listeners?
 *   health.c      the held listeners' epoll set: revived when shut down,
 *                 queues looked at (stall.c) only once something is queued
 *   watch.c       --watch: inotify, debounced reloads
 *   endpoint.c    --metrics (HTTP /metrics, /healthz) and --agent (HAProxy
 *                 agent-check): their sockets and protocols
 *   metrics.c     the Prometheus text, /healthz's verdict, the agent's reply
 *   status.c      status text / JSON;  upgrade.c  re-exec in place;  log.c
 */
#ifndef PS_SUP_INTERNAL_H
#define PS_SUP_INTERNAL_H

#include "core.h"
#include "http_request.h"
#include "reuseport_bpf.h"
#include "supervisor.h"
#include "udp_flow.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>

struct ps_sup;
struct ps_conns;
struct ps_health;
struct ps_worker;

/* ---- listener groups (group.c) ---------------------------------------- */

/* What steers a group's new connections (decided once per group). */
enum ps_steer {
    PS_STEER_UNSET, /* not decided yet */
    PS_STEER_NONE,  /* nothing to steer: shared, UDP or unix */
    PS_STEER_CBPF,  /* classic BPF by the kernel's socket index; no migration */
    PS_STEER_EBPF,  /* eBPF SELECT_OR_MIGRATE: a closed socket's queue moves */
    PS_STEER_FLOW,  /* UDP, eBPF flow table: a flow stays on its socket (flows.c) */
    PS_STEER_COUNT
};

struct ps_group {
    /* The sockets: a core listener group (src/core/listen_group.c), whose
     * fields the modules here read as the group's own (g->fds, g->nfds,
     * g->spec...); only the ps__group_* functions below change them. */
    union {
        struct ps__lgroup lg;
        struct {
            PS__LGROUP_FIELDS
        };
    };
    int inherited;      /* received from systemd (LISTEN_FDS): never re-bound */
    unsigned relistens; /* times a dead socket of this group was revived */
    enum ps_steer steer;
    char steer_why[256];   /* why this steering (the eBPF error, for cbpf) */
    struct ps__rp_bpf bpf; /* PS_STEER_EBPF: its program and maps */
    unsigned steer_busy;   /* map updates refused with EBUSY in a row */
    /* PS_STEER_FLOW: the flow table (flows.c), the id it knows fds[i] by
     * (-1: not given one yet) and that socket's inode */
    struct ps__udp_flow *flow;
    int flow_id[PS__GROUP_MAX];
    unsigned long flow_ino[PS__GROUP_MAX];
    /* after an upgrade, until the steering is decided: the old image's
     * table (its maps' descriptors), to be taken over rather than opened */
    int flow_maps[PS__FLOW_NMAPS];
    int nflow_maps;
    char flow_note[384]; /* why they could not be taken over: logged once */
    /* foreign members (nforeign: status, metrics; not 0 is a warning) */
    int foreign_said;  /* nforeign when the log last said it */
    int order_changed; /* a foreign member came or went: steer again */
};

/* Bind g's sockets: nslots of them (one when shared), refusing a port where
 * a foreign socket already listens with SO_REUSEPORT.  0, or -errno with err
 * naming the address (and its holder when visible); nothing stays open. */
int ps__group_open(struct ps_group *g, int nslots, char *err, size_t errlen);

/* Add sockets at the end until g has nslots (no-op when shared). */
int ps__group_grow(struct ps_group *g, int nslots, char *err, size_t errlen);

/* ps__group_grow for every group of sup, all or nothing: refused before
 * anything is opened (-EMFILE, err naming the open-file limit and what it
 * takes) when the new sockets cannot fit under the soft RLIMIT_NOFILE; when
 * one group still cannot grow, the sockets this call opened in every group
 * are closed again (newest first, so the kernel's order is as before) and
 * err says why.  0 or -errno.  O(open descriptors + new sockets). */
int ps__groups_grow(struct ps_sup *sup, int nslots, char *err, size_t errlen);

/* Look at who else listens in g's reuseport group (one sock_diag dump):
 * update nforeign and the kernel's order; 1 when that changed, else 0. */
int ps__group_foreign_sync(struct ps_group *g);

/* Close the last socket (scale-down). */
void ps__group_close_last(struct ps_group *g);

/* Close every socket of g. */
void ps__group_close(struct ps_group *g);

/* The socket slot gets (the shared one when shared), or -1. */
int ps__group_fd(const struct ps_group *g, int slot);

/* The socket slot's worker of the next generation gets (next: its own,
 * when ps__slot_prepare_sockets gave it one), else ps__group_fd. */
int ps__group_fd_of(const struct ps_group *g, int slot, int next);

/* 1 when a new generation gets sockets of its own in g (eBPF steering:
 * the old generation's are never steered to again once the new one
 * serves, and what they queued moves when its workers let them go). */
int ps__group_per_generation(const struct ps_group *g);

/* What waits in slot's own socket of each group (a shared socket is not
 * the slot's), summed; with steered_only, of the groups a steering program
 * chooses in only.  -1 when the slot has no such socket. */
long ps__slot_queued(const struct ps_sup *sup, int slot, int steered_only);

/* 1 when g is a TCP reuseport group a steering program can be attached to. */
int ps__group_can_steer(const struct ps_group *g);

/* Decide how g is steered (want: a PS_STEERING_* of the configuration):
 * eBPF when it can be loaded and attached and want allows it, else CBPF
 * (steer_why says why); NONE for groups that are not steered.  0, or
 * -errno with why when want is PS_STEERING_EBPF and eBPF cannot be had. */
int ps__group_steer_init(struct ps_group *g, int want);

/* Send new connections only to the sockets whose serving[] flag is set (to
 * all when none is): the eBPF maps, or a new CBPF program.  With cpu_slot
 * (--cpu-affinity; ncpu entries, CPU number -> a serving slot or -1) a
 * connection received on a CPU goes to that CPU's slot first.  0 or -errno
 * (-EBUSY from eBPF: try again soon).  O(nfds + ncpu). */
int ps__group_steer(struct ps_group *g, const unsigned char *serving, const int *cpu_slot,
                    int ncpu);

/* 1 when a closed or shut-down socket of g hands its queue and handshakes
 * over to the serving sockets (eBPF SELECT_OR_MIGRATE attached). */
int ps__group_migrates(const struct ps_group *g);

/* Stop socket i listening (shutdown(2)), with eBPF attached so that what
 * it has queued or in its handshake moves to the serving sockets; *queued
 * gets what was queued.  Every holder's copy stops with it.  0 or -errno. */
int ps__group_shutdown(struct ps_group *g, int i, unsigned *queued);

/* Socket i, shut down (ps__group_shutdown), is replaced by a new socket
 * bound to the same address, joining the group: copies of the old one
 * (a stalled worker's) never see a connection again.  0 or -errno (then
 * socket i listens again in place, if it can). */
int ps__group_replace(struct ps_group *g, int i);

/* Per-generation groups (eBPF, the UDP flow table: a UDP socket's flows
 * stay with the old one while a holder keeps it): socket i, listening, is replaced by a fresh
 * socket bound to the same address, which joins the group first, and we close our copy of the old
 * one (the next ps__group_steer takes it out of the steering).  With at_once it is shut down first:
 * every holder's copy stops listening and what it held (queue, handshakes) moves now to the serving
 * sockets, or by the kernel's hash to any listening one (the fresh one included) when none serves.
 * Without, the copies others hold keep listening, never chosen by the steering (unless no slot
 * serves), and the queue moves when the last of them is closed. *queued gets what was queued.  0 or
 * -errno (-EINVAL: not such a group, or socket i is down; socket i is then unchanged).  A bind and
 * a few syscalls. */
int ps__group_renew(struct ps_group *g, int i, int at_once, unsigned *queued);

/* listen(2) again on socket i after ps__group_shutdown (scale back up):
 * 1 when it listens again, 0 when it was listening, or -errno. */
int ps__group_listen_again(struct ps_group *g, int i);

/* Socket i of g no longer listens (a holder called shutdown(2) on it, which
 * Linux allows on a shared listener): listen(2) on it again, in place, so
 * every copy works again.  Returns 1 when revived, 0 when it was listening,
 * -errno when it cannot be revived (the caller then reports it). */
int ps__group_revive(struct ps_group *g, int i);

/* ---- UDP flows (flows.c) ------------------------------------------------- */

/* The listener's flow_idle and flows (the defaults when not given). */
unsigned ps__flow_idle_ms(const struct ps_group *g);
unsigned ps__flow_capacity(const struct ps_group *g);

/* 1 when g is a UDP reuseport group the flow table can steer. */
int ps__flow_can_steer(const struct ps_group *g);

/* Decide how UDP group g is steered: PS_STEER_FLOW when the flow table
 * loads and attaches and want allows it, else PS_STEER_NONE (steer_why
 * says why).  0, or -errno when want is PS_STEERING_EBPF and it cannot be
 * had.  Loads a program: a few ms. */
int ps__flow_steer_init(struct ps_group *g, int want);

/* New flows go to the sockets whose serving[] flag is set (all of ours
 * when none is); every socket of g gets its id in the table first.  0 or
 * -errno (-EBUSY: a socket is still in the previous image's table).
 * O(nfds) map updates at most, none for a socket that has its id. */
int ps__flow_steer(struct ps_group *g, const unsigned char *serving);

/* Close g's table (a group it is attached to keeps the program). */
void ps__flow_close(struct ps_group *g);

/* Slot s's worker w is about to lose the slot's sockets (a reload
 * commits, the slot retires): remember the ids of the ones it holds. */
void ps__flow_keep(struct ps_sup *sup, int s, struct ps_worker *w);

/* w is replaced: it lingers while one of the sockets ps__flow_keep noted
 * still gets datagrams (WE_LINGER, --flow-linger its bound), else drains
 * now.  A few syscalls per flow-steered group. */
void ps__flow_retire(struct ps_sup *sup, struct ps_worker *w, const char *why);

/* A lingering worker, each tick: drained once its flows are idle or
 * --flow-linger is over. */
void ps__flow_linger_check(struct ps_sup *sup, struct ps_worker *w, uint64_t now);

/* What a flow-steered group's table holds (status, metrics): the group's
 * counters, and per generation the flows of its sockets (the serving one
 * first as found, then those lingering).  0, or -errno (-EINVAL: g is not
 * flow-steered).  Walks the table: ~5 ms per 32k flows, call it when asked
 * (a status, a scrape), not on a timer. */
#define PS_FLOW_REPORT_GENS 16
struct ps_flow_report {
    struct ps__udp_flow_stats group;
    uint64_t capacity; /* flows */
    unsigned idle_ms;
    int ngens;
    struct {
        unsigned generation; /* 0: sockets no worker holds now */
        uint64_t flows, new_flows, datagrams;
    } gens[PS_FLOW_REPORT_GENS];
};
int ps__flow_report(struct ps_sup *sup, int g, struct ps_flow_report *r);

/* Why lingering worker w is still there, one line into buf (status). */
int ps__flow_linger_why(const struct ps_sup *sup, const struct ps_worker *w, char *buf, size_t len);

/* ---- steering (steer.c) -------------------------------------------------- */

/* Update every group's steering to the slots that serve now (and decide a
 * group's steering first if it is not decided yet); keeps steer_dirty set
 * when it must be tried again. */
void ps__sup_steer(struct ps_sup *sup);

/* ps__sup_steer now, when every group's steering is decided (else the
 * loop's next update decides it): for a change that must be steered to
 * before what follows it in the same event (a reload's commit). */
void ps__sup_steer_decided(struct ps_sup *sup);

/* Look for foreign members in the next group, round robin (one sock_diag
 * dump): log one that came (warning) or went, and steer again when the
 * kernel's numbering changed.  Called every second (health.c's sweep), so
 * each group is looked at every N seconds for N groups; a group is also
 * looked at right before each change of our own to it. */
void ps__sup_check_foreign(struct ps_sup *sup);

/* group.c: the steering of the supervisor's groups as one word: cbpf if any group
 * has it (why: the reason), else ebpf if any, else none. */
enum ps_steer ps__sup_steering(const struct ps_sup *sup, const char **why);

/* group.c: 1 when every steered group migrates (eBPF): retiring needs no grace. */
int ps__sup_migrates(const struct ps_sup *sup);

/* stall.c: look at the queues of the stalled slots and of the ready ones
 * something was queued in (stall_busy, from health.c), every tenth of
 * --stall-timeout, and feed EV_STALL / EV_RESUME.  O(slots) of memory,
 * and one getsockopt per group for each slot looked at: none when idle. */
void ps__sup_check_stalls(struct ps_sup *sup, uint64_t now);

/* When ps__sup_check_stalls wants to run next, or UINT64_MAX (off, or
 * no slot to look at).  O(slots). */
uint64_t ps__stall_next(const struct ps_sup *sup);

/* --cpu-affinity: the CPUs we may run on (sched_getaffinity), at most max of
 * them, in order; 0 when unknown. */
int ps__cpu_list(int *cpus, int max);

/* The CPU of slot s: the (s mod N)-th CPU of the list, or -1. */
int ps__slot_cpu(int s);

/* In a worker's child process: run only on its slot's CPU. */
void ps__pin_to_slot_cpu(int s);

/* Group g's steering was decided: the capability registry says what the
 * supervisor's steering is now (once; at warning when it falls back). */
void ps__sup_steer_said(struct ps_sup *sup, struct ps_group *g);

const char *ps__steer_name(enum ps_steer st);

/* ---- capabilities (capability.c) ------------------------------------------ */

/* What the host lets the supervisor do; each row said once when it falls back. */
enum ps_cap {
    PS_CAP_STEERING,       /* ebpf (ok) / cbpf (degraded) */
    PS_CAP_MIGRATION,      /* ebpf (ok) / tcp_migrate_req (degraded) / none (off) */
    PS_CAP_LISTENER_CHECK, /* sock_diag (ok) / /proc/net (degraded) */
    PS_CAP_READY_VIEW,     /* --ready auto: /proc (ok) / --ready-delay (degraded) */
    PS_CAP_UDP_FLOWS,      /* kept across reloads (ok) / same-socket (off) */
    PS_CAP_COUNT
};

enum ps_cap_state { PS_CAP_UNKNOWN, PS_CAP_OK, PS_CAP_DEGRADED, PS_CAP_OFF, PS_CAP_STATE_COUNT };

struct ps_cap_row {
    enum ps_cap_state state; /* PS_CAP_UNKNOWN: not looked at (not shown) */
    char how[32];            /* the mechanism in use: "ebpf", "/proc/net" */
    char why[512];           /* what it means, and what to do */
};

/* Set row cap: a change of state or mechanism is logged, a fall back
 * (degraded, off) at warning level and only once per row for the
 * supervisor's life, upgrades included (caps_said). */
void ps__cap_set(struct ps_sup *sup, enum ps_cap cap, enum ps_cap_state st, const char *how,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Steering has been decided for a group (ps__sup_steer_said): update the
 * steering, migration and UDP rows from the groups, and the listener
 * check's (asked of the kernel once: a sock_diag dump). */
void ps__cap_steering(struct ps_sup *sup);

/* --ready auto looked at worker pid's /proc: err 0 (it can see) or the
 * -errno of ps__ready_visible.  Degraded stays degraded. */
void ps__cap_ready_view(struct ps_sup *sup, pid_t pid, int err);

const char *ps__cap_name(enum ps_cap cap);
const char *ps__cap_state_name(enum ps_cap_state st);

/* ---- workers ----------------------------------------------------------- */

enum ps_worker_state {
    W_STARTING,  /* running, not ready yet */
    W_READY,     /* serving */
    W_LINGERING, /* replaced (a reload, a retired slot) but holds UDP flows: not
                    steered to, no drain signal until they are idle (flows.c) */
    W_DRAINING,  /* asked to finish (drain signal, or said STOPPING=1) */
    W_KILLED,    /* SIGKILL sent to its process group; waiting for the exit */
    W_STATE_COUNT
};

/* What happens to a worker (worker.c's table). */
enum ps_worker_event {
    WE_READY,    /* it said READY=1, or --ready auto / --ready-delay say so */
    WE_STOPPING, /* it said STOPPING=1: it leaves by itself */
    WE_DRAIN,    /* we send it the drain signal */
    WE_ABORT,    /* it missed its watchdog: SIGABRT, SIGKILL later */
    WE_KILL,     /* SIGKILL to its process tree (again later if it stays) */
    WE_LINGER,   /* replaced while it holds UDP flows: left alone while they live */
    WE_COUNT
};

struct ps_worker {
    pid_t pid; /* 0: entry free */
    int slot;
    unsigned generation;
    enum ps_worker_state state;
    uint64_t started_ms;  /* CLOCK_MONOTONIC */
    uint64_t ready_ms;    /* when it became ready, 0 before */
    uint64_t ping_ms;     /* last WATCHDOG=1 (or readiness) */
    uint64_t deadline_ms; /* STARTING: ready timeout; DRAINING/KILLED: next escalation */
    int notified;         /* sent anything on NOTIFY_SOCKET */
    int hinted;           /* logged the "never sent READY=1" hint */
    /* ready by --ready-delay alone, and not yet seen taking a connection
     * (stall.c): 1; 2 once the log said its stall is not rescued */
    int ready_guessed;
    uint64_t probe_ms; /* STARTING, --ready auto: next look at the kernel's view */
    unsigned probes;   /* looks so far (every TREE_EVERY-th one takes in its tree) */
    /* W_LINGERING: the flow table's id of its socket in each group (-1:
     * none), as they were when it was replaced */
    short flow_refs[PS_SUP_MAX_LISTENERS]; /* id + 1, so that 0 (a fresh entry) is none */
    char status[128];                      /* last STATUS= */
    char stats[128];                       /* last X_PORTSHARE_STATS= */
    char closes[256];                      /* last X_PORTSHARE_CLOSES= (closes per reason) */
    char ready_by[64]; /* how it became ready ("READY=1", what /proc showed, the delay) */
};

/* ---- the slot state machine (slots.c) ----------------------------------- */

/*
 * A slot is one position of the worker table: socket i of every listener,
 * PORTSHARE_SLOT=i.  Its state is the only truth status shows; every change
 * of it goes through ps__slot_event() and the table in slots.c.
 */
enum ps_slot_state {
    SL_BACKOFF,  /* no worker; the next one starts at backoff_until (maybe now) */
    SL_STARTING, /* its worker runs, not ready yet: not steered to */
    SL_READY,    /* its worker serves: steered to */
    SL_RETIRING, /* scale-down: steered away, its worker empties the queue */
    SL_CLOSING,  /* retired: worker draining; the socket closes when it is gone */
    SL_STOPPING, /* the supervisor stops: worker draining */
    SL_CLOSED,   /* gone (beyond nslots), or stopped */
    SL_STALLED,  /* its socket's queue stopped draining: steered away (stall.c) */
    SL_STATE_COUNT
};

enum ps_slot_event {
    EV_START,         /* the back-off is over: start a worker */
    EV_READY,         /* its worker is ready (READY=1, or --ready-delay) */
    EV_STOPPING,      /* its worker said STOPPING=1: it is leaving by itself */
    EV_EXIT,          /* its worker exited */
    EV_READY_LATE,    /* its worker missed the ready deadline */
    EV_WATCHDOG,      /* its ready worker missed a WATCHDOG=1 */
    EV_RETIRE,        /* scale-down removes the slot */
    EV_KEEP,          /* scale-up keeps a slot that was being removed */
    EV_QUEUE_EMPTY,   /* retiring: its queue is empty (or the grace is over) */
    EV_REPLACE,       /* a reload committed: the slot's next worker takes over */
    EV_STOP,          /* the supervisor stops */
    EV_LISTENER_LOST, /* its socket stopped listening (a worker's shutdown(2)) */
    EV_STALL,         /* its queue has not drained for --stall-timeout (again: rescue) */
    EV_RESUME,        /* stalled, its queue drains again */
    EV_OPEN,          /* it comes into existence (start, scale-up) */
    EV_CLOSE,         /* retired and without workers, the last slot: its socket closes */
    EV_COUNT
};

/* The actions of the table: each is one small function of slots.c that
 * does what the change means and picks one of its row's targets (the first,
 * unless it names an alternative: a start that fails backs off). */
enum ps_slot_action {
    A_NONE,     /* no row: the event means nothing in this state */
    A_IGNORE,   /* a row that only moves the slot (or keeps it where it is) */
    A_SPAWN,    /* start a worker of the serving generation (fails: back-off) */
    A_READY,    /* steer to it; maybe tell systemd everything is ready */
    A_RELEASE,  /* it leaves by itself: steer away, fresh socket, successor (a
                   quick one counts as a crash) */
    A_CRASH,    /* count the exit, schedule the restart with back-off */
    A_LATE,     /* drain it (not ready in time), count as a crash */
    A_ABORT,    /* SIGABRT (watchdog), count as a crash */
    A_RETIRE,   /* steer away; wait for its queue */
    A_KEEP,     /* back to serving: its own worker (ready, or starting), or a
                   worker of an older generation replaced (alternatives) */
    A_DRAIN,    /* drain signal to its worker */
    A_HANDOVER, /* retired: under eBPF shut its sockets down (the queue moves), drain */
    A_LOSE,     /* its worker is gone while retiring: close when idle (or, with
                   connections still queued in its socket, a new worker empties
                   it first and the slot stays retiring: the alternative) */
    A_SWAP,     /* drain the old worker, the next one becomes the slot's */
    A_REVIVE,   /* listen() again on its socket, log it */
    A_STALL,    /* steer away from it, count the stall */
    A_RESUME,   /* steer to it again */
    A_RESCUE,   /* still stalled: queue moves (eBPF), fresh socket, worker drained */
    A_OPEN,     /* a fresh slot: no worker, counters zero, its start due at once */
    A_CLOSE,    /* close its socket in every group (the last one), one slot less */
    A_COUNT
};

/* One row: the action, the state it moves to, and the alternatives the
 * action may pick instead (SL_STATE_COUNT: none). */
struct ps_slot_transition {
    enum ps_slot_action action;
    enum ps_slot_state next;
    enum ps_slot_state alt, alt2;
    /* NULL, or when the row applies: while it says 0 the event means
     * nothing (the slot stays, nothing is done) */
    int (*guard)(const struct ps_sup *sup, int s);
};

/* The table itself (slots.c). */
extern const struct ps_slot_transition ps__slot_table[SL_STATE_COUNT][EV_COUNT];

struct ps_slot {
    enum ps_slot_state state;
    int current;            /* index into sup->workers, or -1 */
    int next;               /* the reloading generation's worker, or -1 */
    unsigned restarts;      /* exits of its worker outside a reload, all time */
    unsigned crashes;       /* consecutive quick exits: drives the back-off */
    uint64_t backoff_until; /* SL_BACKOFF: next start */
    uint64_t retire_since;  /* SL_RETIRING: when it was steered away */
    int last_exit;          /* wait status of the last exit, for status */
    unsigned lost;          /* times its socket was found not listening */
    unsigned stalls;        /* times it was found stalled */
    unsigned rescues;       /* times a stalled worker was replaced */
    /* stall detection (stall.c): the queue length last seen, since when it
     * has not gone down (0: empty or draining), when it was steered away */
    unsigned stall_q;
    uint64_t stall_since, stalled_at;
    int stall_reload_said; /* the "not rescued during a reload" line was logged */
    /* SL_CLOSING (ps__slot_handover_check): what its sockets held at the
     * last look, and since when that has not gone down (0: not looked yet) */
    unsigned handover_q;
    uint64_t handover_since;
    /* a connection was queued in one of its sockets since it was last seen
     * empty (health.c's epoll set said so): stall.c looks at it every tick
     * until it is empty again, then health.c arms its sockets again */
    int stall_busy;
    /* the worker that left the slot while holding its socket (it said
     * STOPPING=1, or a stall rescue drains it) and still runs, or -1; and
     * whether it still shares the slot's socket (classic BPF, or a fresh
     * socket could not be had): the slot is then not steered to */
    int leaving;
    int leaving_shares;
};

/* Feed one event to slot s; why says what caused it (for the log), status is
 * the wait status for EV_EXIT.  Runs the table's action and sets the state.
 * Returns the new state. */
enum ps_slot_state ps__slot_event(struct ps_sup *sup, int s, enum ps_slot_event ev, int status,
                                  const char *why);

/* 1 when event ev would do something to slot s now: its state has a row
 * for it and the row's guard lets it through (the loop asks before it
 * waits for a back-off to end).  O(1). */
int ps__slot_can(const struct ps_sup *sup, int s, enum ps_slot_event ev);

/* Slot s, closed, comes into existence (start, scale-up): its EV_OPEN, to
 * SL_BACKOFF with no worker and its first start due at once. */
void ps__slot_open(struct ps_sup *sup, int s);

/* A wait status as words: "exit code 3", "signal 6 (Aborted)". */
const char *ps__exit_text(int status, char *buf, size_t len);

/* Names, as status shows them. */
const char *ps__slot_state_name(enum ps_slot_state st);
const char *ps__slot_event_name(enum ps_slot_event ev);
const char *ps__worker_state_name(enum ps_worker_state st);

/* worker.c: feed event ev to worker w (why: for the log): the row of its
 * state does what the event means and sets the worker's next state.
 * Returns 1, or 0 when the event means nothing in its state (or the entry
 * is free).  O(1). */
int ps__worker_step(struct ps_sup *sup, struct ps_worker *w, enum ps_worker_event ev,
                    const char *why);

/* 1 when ev would do something to worker w now. */
int ps__worker_can(const struct ps_worker *w, enum ps_worker_event ev);

/* Send the drain signal to worker w (no-op unless starting or ready). */
void ps__worker_drain(struct ps_sup *sup, struct ps_worker *w, const char *why);

/* SIGABRT (a watchdog miss: a core dump of the hang, as systemd does),
 * then SIGKILL if it is still there WATCHDOG_KILL_MS later. */
void ps__worker_abort(struct ps_sup *sup, struct ps_worker *w);

/* SIGKILL the worker's process tree now, and again if it is still there
 * a while later. */
void ps__worker_kill(struct ps_sup *sup, struct ps_worker *w);

/* 1 when slot s gets new connections: its worker is ready, and no leaving
 * worker shares its socket. */
int ps__slot_serving(const struct ps_sup *sup, int s);

/* Slot s's socket in every per-generation group is replaced by a fresh one
 * (ps__group_renew, at_once as there): a worker holding a copy of the old
 * one is never steered to again, and what the old one holds moves to the
 * serving sockets, at once or when its last holder lets it go.  Returns
 * what was queued in the old ones, or -1 when a socket of the slot stays
 * as it was (classic BPF: nothing can move; or no fresh socket could be
 * had).  O(groups). */
long ps__slot_renew_sockets(struct ps_sup *sup, int s, int at_once);

/* A reload's next generation gets sockets of its own in every
 * per-generation group (ps__group_per_generation): prepare binds slot s's
 * (0, or -errno with err saying which address failed; what this call
 * bound stays prepared, for discard), commit makes them the slot's when
 * the generation takes over (the old ones are let go: never steered to
 * again, what they queued moves when the old workers let them go), and
 * discard closes them on a rollback.  O(groups) each. */
int ps__slot_prepare_sockets(struct ps_sup *sup, int s, char *err, size_t errlen);
void ps__slot_commit_sockets(struct ps_sup *sup, int s);
void ps__slot_discard_sockets(struct ps_sup *sup, int s);

/* Slot s, retired (closing) under the migrate program: when what is
 * queued in its sockets has not gone down for a while (its worker does not
 * take it), shut them down so that it moves to the serving slots now.  Its
 * handover_q / handover_since track that queue.  One getsockopt per group. */
void ps__slot_handover_check(struct ps_sup *sup, int s, uint64_t now);

/* Worker w was reaped: when it was a slot's leaving worker, that slot's
 * socket is its successor's alone again. */
void ps__slot_leaver_gone(struct ps_sup *sup, const struct ps_worker *w);

/* ---- operations (ops.c) -------------------------------------------------- */

enum ps_op_kind { OP_RELOAD, OP_SCALE, OP_UPGRADE };

#define PS_OP_MAX_WAITERS 32
#define PS_OP_QUEUE_MAX   16

/* A control client waiting for an operation's outcome: client index and
 * the serial it had when it asked (a reused index is another client). */
struct ps_waiter {
    int client;
    unsigned serial;
};

struct ps_op {
    enum ps_op_kind kind;
    int n; /* OP_SCALE: the worker count */
    unsigned id;
    int nwaiters;
    struct ps_waiter waiters[PS_OP_MAX_WAITERS];
};

/* Ask for an operation; w (may be NULL: a signal asked) is answered with its
 * outcome.  Runs at once when nothing is in flight, else queued: a request
 * of the same kind as the last queued one merges into it (reloads become
 * one; a scale replaces that one's count; both requesters get the outcome);
 * otherwise it is queued behind (upgrades never merge).  Returns 0, or
 * -errno with err when refused outright (bad count, stopping, queue full). */
int ps__op_request(struct ps_sup *sup, enum ps_op_kind kind, int n, const struct ps_waiter *w,
                   char *err, size_t errlen);

/* Reload events of the next generation's worker of slot s. */
void ps__reload_next_ready(struct ps_sup *sup, int s);
void ps__reload_next_failed(struct ps_sup *sup, int s, const char *why);

/* Run what is queued, if nothing is in flight; called by the loop. */
void ps__op_run_queue(struct ps_sup *sup);

/* The supervisor is on its way out: roll back the reload in flight (systemd
 * is not told READY=1) and answer everything queued with why. */
void ps__op_cancel_all(struct ps_sup *sup, const char *why);

/* An upgrade does not happen: of what is queued, keep what no client
 * waits for (asked by a signal; an upgrade is dropped), as the state
 * carried across the exec holds it. */
void ps__op_keep_unwaited(struct ps_sup *sup);

/* Queue op as carried across an upgrade (no waiters: they are answered
 * before the exec); 0, or -EINVAL when it cannot be (queue full, a bad
 * kind or count). */
int ps__op_restore(struct ps_sup *sup, const struct ps_op *op);

/* ---- life.c: the supervisor's own life --------------------------------------- */

/* A reload in flight (ops.c's own small table). */
enum ps_reload_state { PS_RELOAD_IDLE, PS_RELOAD_STARTING, PS_RELOAD_COUNT };

enum ps_life {
    PS_LIFE_SERVING,  /* operations are taken */
    PS_LIFE_LAMEDUCK, /* serving, reported unhealthy; nothing new is taken */
    PS_LIFE_STOPPING, /* every worker drains; the loop ends with the last */
    PS_LIFE_COUNT
};

enum ps_life_event {
    LIFE_LAMEDUCK,      /* asked (`stop --lameduck MS`, SIGTERM with --lameduck) */
    LIFE_LAMEDUCK_OVER, /* its time is up */
    LIFE_QUIET,         /* the balancer has moved away (ps__life_quiet_due) */
    LIFE_STOP,          /* asked (`stop`, SIGINT, SIGQUIT, SIGTERM) */
    LIFE_DRAIN_TIMEOUT, /* the drain took longer than --drain-timeout */
    LIFE_EVENT_COUNT
};

/* Run ev's row.  LIFE_LAMEDUCK: /healthz says 503 and the agent "drain" at
 * once, the workers keep serving until LIFE_QUIET (the balancer has moved
 * away) or for ms at most (0: a plain stop), then drain.
 * LIFE_STOP: roll back a reload in flight, answer what is queued, drain
 * everything; asked again while stopping: SIGKILL every worker tree at
 * once.  w (or NULL) is answered when the supervisor is gone; asked while
 * already on the way out it only joins (the earlier deadline stands).
 * 1 when a row ran, 0 when the event means nothing now. */
int ps__life_event(struct ps_sup *sup, enum ps_life_event ev, unsigned ms,
                   const struct ps_waiter *w);

/* /healthz or the agent has just answered a balancer (503, "drain"): the
 * first two answers of a lame duck are kept, their interval sets the quiet
 * period.  O(1). */
void ps__life_told(struct ps_sup *sup);

/* When the lame duck may end because the balancer has moved away: told
 * twice (told[0], told[1]), and every held listener watched since `since`
 * (UINT64_MAX: not watched) with no new connection for three intervals
 * told[1] - told[0] (at least 1 s) from the later of since and told[0].
 * UINT64_MAX: no evidence.  Pure, O(1). */
uint64_t ps__life_quiet_due(const uint64_t told[2], uint64_t since);

/* The lame duck's end and the drain's deadline, when due at now. */
void ps__life_timers(struct ps_sup *sup, uint64_t now);

/* When ps__life_timers has something to do next, or UINT64_MAX. */
uint64_t ps__life_deadline(const struct ps_sup *sup);

/* The supervisor is gone: cancel what is in flight or queued, answer the
 * stop's waiters "stopped". */
void ps__life_finish(struct ps_sup *sup);

const char *ps__life_name(enum ps_life l);

/* ---- the supervisor ------------------------------------------------------- */

/* What the state machine does to the world (fork/exec, signals, the clock,
 * systemd, the clients waiting for an answer), behind one seam so that the
 * tables can be driven without processes, sockets or time passing. */
struct ps_sup_sys {
    /* start a worker: its index in sup->workers, or -errno */
    int (*spawn)(struct ps_sup *sup, int slot, unsigned gen);
    /* send sig to the worker's main process */
    void (*signal)(struct ps_sup *sup, struct ps_worker *w, int sig);
    /* SIGKILL the worker's whole process tree */
    void (*kill_tree)(struct ps_sup *sup, struct ps_worker *w);
    /* the monotonic clock, in ms: every deadline of the supervisor */
    uint64_t (*now)(void);
    /* tell systemd (when it started us) READY=1, RELOADING=1, STOPPING=1... */
    void (*notify)(struct ps_sup *sup, const char *state);
    /* answer a client waiting for an operation's outcome (the control socket) */
    void (*answer)(struct ps_sup *sup, const struct ps_waiter *w, int ok, const char *body);
    /* start an upgrade (ask the new binary, then exec it); w waits for it */
    int (*upgrade)(struct ps_sup *sup, const struct ps_waiter *w, char *err, size_t errlen);
};

/* A question to the new binary before an upgrade (upgrade.c). */
struct ps_upgrade_ask {
    pid_t pid;
    int running; /* not reaped yet */
    int fd;      /* its stdout, -1 once read to the end */
    int status;  /* its wait status, once reaped */
    size_t len;
    char out[128];
};

/* ops.c: the operations asked for, one in flight (the reload's table). */
struct ps_ops {
    enum ps_reload_state reload; /* a reload generation is starting */
    struct ps_op running;        /* the reload in flight, when starting */
    struct ps_op queue[PS_OP_QUEUE_MAX];
    int nqueued;
    unsigned ids;
    unsigned reloads_ok, reloads_failed;
    char reload_error[256];
};

/* life.c: the supervisor's own life (its table). */
struct ps_life_state {
    enum ps_life state;
    uint64_t stop_deadline;                      /* stopping: every worker is killed then */
    struct ps_waiter waiters[PS_OP_MAX_WAITERS]; /* answered when we are gone */
    int nwaiters;
    /* lame duck: reported unhealthy / "drain" while still serving, then stop */
    unsigned lameduck_ms;      /* how long it was asked for; 0: never entered */
    uint64_t lameduck_until;   /* the drain starts then at the latest; 0 once it has */
    uint64_t lameduck_told[2]; /* its first two "drain" / 503 answers; 0: not yet */
};

/* upgrade.c: an upgrade asking the new binary before the exec, and the
 * client that asked, as carried across the exec. */
struct ps_upgrade_state {
    int client; /* the client that asked for the upgrade, across the exec */
    int json;   /* ... and whether it asked for JSON */
    int asking;
    uint64_t deadline;
    struct ps_upgrade_ask asks[2]; /* --version, --upgrade-state-format */
    int has_waiter;
    struct ps_waiter waiter;
};

/* steer.c: the steering programs' state. */
struct ps_steer_state {
    int dirty;           /* a map update to make (again) */
    int warned;          /* the steering program could not be attached */
    int affinity_warned; /* said that --cpu-affinity has more slots than CPUs */
};

/* capability.c: the registry. */
struct ps_caps {
    struct ps_cap_row rows[PS_CAP_COUNT];
    unsigned said; /* rows said at warning (bit 1 << cap) */
};

struct ps_watcher; /* watch.c's own: the --watch inotify state */

struct ps_sup {
    struct ps_sup_config *cfg;
    const struct ps_sup_sys *sys;
    struct ps_group groups[PS_SUP_MAX_LISTENERS];
    int ngroups;
    struct ps_slot slots[PS_SUP_MAX_WORKERS];
    int nslots; /* slots that exist (not closed); the highest are retiring */
    int target; /* the number of workers asked for */
    struct ps_worker workers[2 * PS_SUP_MAX_WORKERS + 64];
    int nworkers;             /* entries in use are below this */
    unsigned generation;      /* the serving generation */
    unsigned next_generation; /* the last generation number handed out */
    /* the modules that own their state */
    struct ps_ops ops;
    struct ps_life_state life;
    struct ps_upgrade_state upgrade;
    struct ps_steer_state steer;
    struct ps_caps caps;
    struct ps_watcher *watch; /* NULL without --watch */
    struct ps_health *health; /* the held sockets' epoll set */
    struct ps_conns *conns;   /* the control socket's and the endpoints' connections */
    /* clocks and descriptors */
    uint64_t started_ms; /* monotonic, for uptime */
    time_t started_wall;
    uint64_t checked_ms;              /* last sweep of the held sockets (health.c) */
    uint64_t stall_checked_ms;        /* last look at the queues for stalls */
    int sigfd, notify_fd, control_fd; /* control_fd: -1 when there is none */
    int metrics_fd, agent_fd;         /* operations endpoints; -1 when off */
    char notify_addr[108];
    char systemd_notify[108]; /* our own NOTIFY_SOCKET from systemd, if any */
    int told_ready;           /* READY=1 sent to systemd after the first start */
    unsigned strays_killed;
    int spawn_error; /* -errno of the last worker that could not be started */
};

/* The real world: fork/exec, kill(2). */
extern const struct ps_sup_sys ps__sup_sys_real;

/* Something the steering depends on changed (which slots serve, a
 * socket): the loop steers again (steer.c) before it sleeps. */
static inline void ps__steer_later(struct ps_sup *sup)
{
    sup->steer.dirty = 1;
}

/* Stopping: every worker drains (life.c). */
static inline int ps__stopping(const struct ps_sup *sup)
{
    return sup->life.state == PS_LIFE_STOPPING;
}

/* A lame duck was entered: it stays so while stopping (/healthz, metrics). */
static inline int ps__lameduck(const struct ps_sup *sup)
{
    return sup->life.lameduck_ms != 0;
}

/* The supervisor's clock (the seam's). */
static inline uint64_t ps__sup_now(const struct ps_sup *sup)
{
    return sup->sys->now();
}

/* start.c: start sup's bookkeeping for cfg (no sockets, no processes), acting
 * on the world through sys (ps__sup_sys_real, or a test's fake). */
void ps__sup_init(struct ps_sup *sup, struct ps_sup_config *cfg, const struct ps_sup_sys *sys);

/* supervisor.c: the event loop, until the supervisor stops and its last
 * worker is gone (or poll fails). */
int ps__sup_loop(struct ps_sup *sup);

/* sdnotify.c: tell systemd (when we run under it) READY=1, RELOADING=1
 * (with the MONOTONIC_USEC that Type=notify-reload wants), STOPPING=1. */
void ps__sup_notify_systemd(struct ps_sup *sup, const char *state);

/* Close slots at the end that are closing and have no worker left (their
 * EV_CLOSE). */
void ps__sup_close_retired(struct ps_sup *sup);

/* ps__tree_reap_strays, keeping the upgrade's questions. */
void ps__sup_reap_strays(struct ps_sup *sup, int all);

/* worker.c: workers alive (entries with a pid). */
int ps__sup_live_workers(const struct ps_sup *sup);

/*
 * The loop's handlers (supervisor.c): what a worker told us or the clock
 * says, turned into its W_* state and then into an event of its slot
 * (current worker), of the reload (next worker) or a log line (any other).
 * They reach processes only through sup->sys (the held sockets they use
 * directly), so the unit test of the state machine
 * (tests/unit/test_sup_machine.c) drives them without any process.
 */
/* It said READY=1 (or was alive for --ready-delay); no-op unless starting. */
void ps__worker_ready(struct ps_sup *sup, struct ps_worker *w, const char *how);
/* It said STOPPING=1; no-op unless starting or ready. */
void ps__worker_stopping(struct ps_sup *sup, struct ps_worker *w);
/* It was reaped with wait status `status`: its entry is freed.  What is
 * left of its process group is the reaper's to kill. */
void ps__worker_exited(struct ps_sup *sup, struct ps_worker *w, int status);
/* Everything that is due at ps__sup_now(): ready, drain and kill deadlines,
 * watchdogs, back-offs, retiring queues, the held sockets' health (once a
 * second), closing retired slots. */
void ps__sup_run_timers(struct ps_sup *sup);

/* spawn.c: start a worker for slot in generation gen.  Returns its index in
 * sup->workers (state W_STARTING, ready deadline set), or -errno when it
 * could not be forked or its program not executed. */
int ps__sup_spawn(struct ps_sup *sup, int slot, unsigned gen);
/* What ps__sup_spawn's -errno err means, in one line into buf: "cannot
 * execute PROG: ..." (returns 1: the program cannot be run), or "cannot
 * start a worker: ..." naming the open-file limit when descriptors ran out
 * (returns 0: the system refused). */
int ps__sup_spawn_said(const struct ps_sup *sup, int err, char *buf, size_t len);

/* tree.c: make us the subreaper of everything our workers start. */
int ps__tree_init(void);

/* tree.c: SIGKILL worker w's process group (its tree, unless a process left it). */
void ps__tree_kill(struct ps_sup *sup, struct ps_worker *w);

/* tree.c: end every process that was reparented to us and does not belong to
 * a live worker (a daemonised grandchild of a worker that is gone); with all,
 * every process reparented to us; never one of keep.  O(processes). */
void ps__tree_reap_strays(struct ps_sup *sup, int all, const pid_t *keep, int nkeep);

/* tree.c: worker root and its descendants (by parent pid), root first, at
 * most cap of them; how many.  O(processes): a pass over /proc, made at
 * most once a second (the last pass is used in between). */
int ps__tree_members(pid_t root, pid_t *out, int cap);

/* ready.c: 1 when process pid (or, with tree, a process of its tree) is
 * seen by the kernel waiting on one of slot's listening sockets (next: the next generation's own,
 * ps__group_fd_of): an epoll set holding one, or a thread blocked in accept/poll/select on one; how
 * says which (for the log).  0 when not (yet), never an error: what /proc
 * does not show is "not yet".  O(descriptors + threads) of each process
 * looked at, bounded (see ready.c).  With tree, pid's descendants are
 * looked at instead of pid itself (see ps__tree_members for the cost). */
int ps__ready_probe(struct ps_sup *sup, pid_t pid, int slot, int next, int tree, char *how,
                    size_t len);

/* ready.c: 0 when /proc shows us what process pid waits on (or it is gone:
 * nothing to see), -EACCES / -EPERM when the kernel refuses (ptrace access
 * mode: another user without CAP_SYS_PTRACE, not dumpable), -ENOENT when
 * /proc hides it (hidepid=) while it runs.  A readlink, and a stat. */
int ps__ready_visible(pid_t pid);

/* ready.c, before status or metrics: the readiness view's capability row,
 * when it could not be looked at yet (after an upgrade: no worker was
 * starting), is looked at now, on a running worker.  O(workers). */
void ps__ready_view_refresh(struct ps_sup *sup);

/* log.c: one log line through cfg->log (nothing when unset). */
void ps__sup_log(struct ps_sup *sup, enum ps_log_level level, const char *event, const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* ---- connsrv.c: one connection server for the control socket and endpoints --- */

/*
 * The control socket, --metrics (/metrics, /healthz) and --agent are three
 * listeners of one server: one table of connections, one state table, one
 * deadline scheme, one EMFILE pause, one close with a reason.  What each
 * listener speaks is a struct ps_conn_proto (control.c, endpoint.c).  See
 * docs/design/connection-server.md.
 */
enum ps_conn_listener { PS_LS_CONTROL, PS_LS_METRICS, PS_LS_AGENT, PS_LS_COUNT };

#define PS_SUP_MAX_CLIENTS 64 /* control connections; a waiter's index is below this */
#define PS_EP_MAX_CONNS    64 /* per endpoint */
#define PS_CONN_MAX        (PS_SUP_MAX_CLIENTS + 2 * PS_EP_MAX_CONNS)
#define PS_CONN_POLL_MAX   (PS_LS_COUNT + PS_CONN_MAX) /* what ps__conns_poll_fill may add */

enum ps_conn_state {
    CS_FREE,    /* no connection */
    CS_READING, /* its request is being read; idle ones make room when full */
    CS_WAITING, /* control: its command runs, the outcome is not known yet */
    CS_WRITING, /* its answer is being written */
    CS_LINGER,  /* answered, our side shut: reading until the peer's EOF */
    CS_COUNT
};

/* Why a connection was closed (counted per listener; metric labels). */
enum ps_conn_close {
    PS_CONN_DONE,        /* answered */
    PS_CONN_CLIENT,      /* the peer closed or reset it before its answer */
    PS_CONN_TIMEOUT,     /* no request in time, or its answer not read in time */
    PS_CONN_BAD_REQUEST, /* answered with an error for a malformed request */
    PS_CONN_REFUSED,     /* a peer that may not use the control socket */
    PS_CONN_BUSY,        /* the table was full of connections none of which could go */
    PS_CONN_EVICTED,     /* the oldest idle one, to make room for a new one */
    PS_CONN_SHUTDOWN,    /* the supervisor closed its server (stop, exec) */
    PS_CONN_ERROR,       /* a system call failed, out of memory */
    PS_CONN_CLOSE_COUNT
};

extern const char *const ps__conn_close_names[PS_CONN_CLOSE_COUNT];

struct ps_conn {
    int fd;
    enum ps_conn_state state;
    unsigned char listener; /* enum ps_conn_listener */
    unsigned char why;      /* enum ps_conn_close: its reason once answered */
    unsigned serial;        /* tells a reused entry from the connection it was */
    int prev, next;         /* its place in its listener's list for its state */
    uint64_t since;         /* accepted */
    uint64_t deadline;      /* of its state; UINT64_MAX: none */
    char *out;              /* the answer (malloc'ed) */
    size_t outlen, outoff;
    union {
        struct {
            size_t len;
            char in[256];     /* the command line so far */
            int json;         /* "COMMAND json": the outcome as one JSON object */
            char command[16]; /* its verb, for that object */
        } ctl;
        struct {
            struct ps_http_req req;
            size_t got; /* request bytes so far */
        } http;
    } u;
};

/* What a listener speaks: hooks of the server, called from its loop. */
struct ps_conn_proto {
    const char *name;              /* "control", "metrics", "agent" */
    const char *paused_event;      /* the log event of an EMFILE pause */
    unsigned timeout_ms[CS_COUNT]; /* how long a connection may stay in a state; 0: no limit */
    /* sent to a connection that finds the table full and none of it able
     * to go; NULL: it waits in the backlog instead */
    const char *busy;
    /* a new connection (may answer at once: the agent) */
    void (*accepted)(struct ps_sup *sup, struct ps_conn *c, uint64_t now);
    /* bytes of a CS_READING connection's request */
    void (*input)(struct ps_sup *sup, struct ps_conn *c, const char *buf, size_t len, uint64_t now);
    /* before an exec: answer a CS_READING connection now (why: what to say) */
    void (*last_call)(struct ps_sup *sup, struct ps_conn *c, const char *why, uint64_t now);
    /* free what input allocated (called by every close) */
    void (*release)(struct ps_conn *c);
};

/* Take listener ls (its socket in sup->control_fd / metrics_fd / agent_fd)
 * with proto; allocates the table the first time.  0 or -ENOMEM. */
int ps__conns_init(struct ps_sup *sup, enum ps_conn_listener ls, const struct ps_conn_proto *proto);

/* Poll entries for the listeners that may accept and each open connection
 * (at most PS_CONN_POLL_MAX, only descriptors in use: poll(2) refuses more
 * entries than RLIMIT_NOFILE); how many were added.  O(open connections). */
int ps__conns_poll_fill(struct ps_sup *sup, struct pollfd *pfd, uint64_t now);

/* Handle the results of those n entries (0: poll woke for something else
 * or timed out), then the deadlines that are due. */
void ps__conns_poll_done(struct ps_sup *sup, const struct pollfd *pfd, int n, uint64_t now);

/* The nearest deadline (connections, EMFILE pause, a full table's room), or
 * UINT64_MAX.  O(listeners x states): the lists are kept in deadline order. */
uint64_t ps__conns_next_deadline(const struct ps_sup *sup);

/* Queue out (malloc'ed, taken over; NULL: out of memory, the connection is
 * closed) as c's answer, why its close reason once written; written as
 * the socket takes it, then our side is shut and c lingers for the EOF. */
void ps__conn_answer(struct ps_sup *sup, struct ps_conn *c, char *out, size_t len,
                     enum ps_conn_close why, uint64_t now);

/* c's request is taken: it waits for its answer without a deadline. */
void ps__conn_wait(struct ps_sup *sup, struct ps_conn *c, uint64_t now);

/* The one way a connection ends: close it and count why. */
void ps__conn_close(struct ps_sup *sup, struct ps_conn *c, enum ps_conn_close why);

/* Entry i of listener ls if it still is the connection of that serial (and
 * not free), else NULL. */
struct ps_conn *ps__conn_get(struct ps_sup *sup, enum ps_conn_listener ls, int i, unsigned serial);

/* c's index within its listener's table (what ps__conn_get takes). */
int ps__conn_index(const struct ps_sup *sup, const struct ps_conn *c);

/* Take a connected descriptor (carried over an upgrade) as a connection of
 * ls in CS_WAITING; NULL (fd closed) when the table has no room. */
struct ps_conn *ps__conns_adopt(struct ps_sup *sup, enum ps_conn_listener ls, int fd, uint64_t now);

/* Before an exec: every connection whose request is not answered yet gets
 * its listener's last call (why: what the control socket says). */
void ps__conns_last_call(struct ps_sup *sup, const char *why);

/* Write what is queued, blocking for at most timeout_ms in all (before an
 * exec or an exit, so that answers are not lost); requests that arrive
 * meanwhile on open connections are answered too. */
void ps__conns_flush(struct ps_sup *sup, unsigned timeout_ms);

/* Close every connection of ls (PS_CONN_SHUTDOWN); the listening socket is
 * its owner's to close. */
void ps__conns_close_listener(struct ps_sup *sup, enum ps_conn_listener ls);

/* The connections closed per listener and reason, as Prometheus text
 * (portshare_supervisor_connections_closed_total{server,reason}). */
struct ps_buf;
void ps__conns_metrics_text(const struct ps_sup *sup, struct ps_buf *out);

/* ---- control.c: the control socket ---------------------------------------- */

/* Create the control socket (directory owned by us and 0700, socket 0600);
 * refuses when a live supervisor answers there.  A default place that
 * cannot be written (read-only file system, no permission) falls back to
 * the next one of ps_sup_control_candidate; when none can, the supervisor
 * runs without one (control_fd -1, logged at warning).  0, or -errno with
 * err. */
int ps__control_open(struct ps_sup *sup, char *err, size_t errlen);

/* Take the control listener in the connection server (also after an upgrade). */
int ps__control_init(struct ps_sup *sup);

/* Queue the answer to waiter w ("ok"/"error" line, then body) and close
 * the client once it is written.  A waiter whose client is gone is skipped. */
void ps__control_answer(struct ps_sup *sup, const struct ps_waiter *w, int ok, const char *body);

/* Write what is queued, blocking for at most timeout_ms in all (before an
 * exec or an exit, so that answers are not lost): ps__conns_flush. */
void ps__control_flush(struct ps_sup *sup, unsigned timeout_ms);

/* Before an exec: every control client whose command has not been read
 * yet gets why as an error (its input read first, so that closing it at
 * the exec does not reset it); every endpoint request already sent is
 * answered (a complete one as usual, a partial one 503). */
void ps__control_refuse_unread(struct ps_sup *sup, const char *why);

/* Close the control socket, every client, unlink the path (the one it was
 * bound to, also when an upgrade carried it). */
void ps__control_close(struct ps_sup *sup);

/* Descriptor of a waiting client (for carrying it across an upgrade), or -1. */
int ps__control_client_fd(struct ps_sup *sup, const struct ps_waiter *w);

/* 1 when waiter w asked for its outcome as JSON. */
int ps__control_client_json(struct ps_sup *sup, const struct ps_waiter *w);

/* Adopt a carried client descriptor after an upgrade (json: it asked for
 * JSON, command: its verb); returns its waiter. */
struct ps_waiter ps__control_adopt(struct ps_sup *sup, int fd, int json, const char *command);

/* worker_text.c: what a worker sends about itself, made safe to show.
 * ps__text_clean replaces control bytes (ESC, C1) and malformed UTF-8 in
 * s with '?', in place.  ps__stats_next reads the next well-formed
 * NAME=DIGITS pair of a worker's counters at *text (NAME of [a-z_], shorter
 * than cap; at most 19 digits: no sign, no wrap), skipping malformed ones:
 * 1 with name and *v set and *text moved past it, 0 at the end.  O(length). */
void ps__text_clean(char *s);
int ps__stats_next(const char **text, char *name, size_t cap, unsigned long long *v);

/* buf.c: a growing text buffer (status, metrics, answers). */
struct ps_buf {
    char *data;
    size_t len, cap;
    int failed; /* out of memory: the text is cut */
};
void ps__buf_printf(struct ps_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ps__buf_free(struct ps_buf *b);
/* s as a JSON string, quotes included */
void ps__buf_json_string(struct ps_buf *b, const char *s);
/* status.c: status as text or JSON, appended to out. */
void ps__status_text(struct ps_sup *sup, struct ps_buf *out);
void ps__status_json(struct ps_sup *sup, struct ps_buf *out);

/* ---- watch.c: --watch, reload on change ---------------------------------- */

/* Start watching cfg->watch (no-op without); 0, or -errno with err naming
 * the path.  O(directories below the watched ones). */
int ps__watch_open(struct ps_sup *sup, char *err, size_t errlen);

/* The inotify descriptor for the loop's poll, or -1 (no --watch). */
int ps__watch_fd(const struct ps_sup *sup);

/* Read what inotify has (the loop saw ps__watch_fd readable). */
void ps__watch_read(struct ps_sup *sup);

/* When the debounced reload is due, or UINT64_MAX. */
uint64_t ps__watch_deadline(const struct ps_sup *sup);

/* Ask for the reload when it is due. */
void ps__watch_timer(struct ps_sup *sup, uint64_t now);

/* Stop watching, free what --watch held (no-op without). */
void ps__watch_close(struct ps_sup *sup);

/* ---- health.c: the held listeners' epoll set ----------------------------------- */

/* Everything due about the held sockets' health (called by the loop's
 * timers): keep the epoll set in step with the groups, act on what it
 * reported (a socket no longer listening is revived and its slots told;
 * a queue that filled marks its slot busy for stall.c), and once a second
 * ask what epoll does not cover (shared and unix sockets, sockets not
 * armed).  Idle: no system call but one epoll_wait a second.  O(sockets)
 * of memory per call; system calls only for what changed. */
void ps__health_check(struct ps_sup *sup, uint64_t now);

/* The epoll descriptor for the loop to poll (readable: call
 * ps__health_read), or -1. */
int ps__health_fd(const struct ps_sup *sup);

/* Lame duck: since when every held listener has been watched with no new
 * connection coming, or UINT64_MAX (one just came, or one cannot be
 * watched: a shared or unix socket, no epoll set).  O(1). */
uint64_t ps__health_quiet_since(const struct ps_sup *sup);

/* When ps__health_check has a socket to watch again, or UINT64_MAX. */
uint64_t ps__health_next(const struct ps_sup *sup);

/* The loop saw ps__health_fd readable: the next ps__health_check reads it. */
void ps__health_read(struct ps_sup *sup);

/* 1 when queued connections are reported (the epoll set works); else
 * stall.c must ask every watched slot every tick. */
int ps__health_sees_queues(const struct ps_sup *sup);

/* Forget every registration and close the set (ps__sup_init: a fresh
 * supervisor state); ps__health_close also frees it. */
void ps__health_reset(struct ps_sup *sup);
void ps__health_close(struct ps_sup *sup);

/* ---- metrics.c: what the operations endpoints say -------------------------- */

/* The Prometheus text exposition (format 0.0.4) of sup, appended to out.
 * Reads every held listener (TCP_INFO, SO_MEMINFO): O(sockets + slots). */
void ps__metrics_text(struct ps_sup *sup, struct ps_buf *out);

/* 1 when /healthz says 200: a slot is ready and we are neither in lame duck
 * nor stopping.  why (may be NULL) gets the reason either way. */
int ps__sup_healthy(const struct ps_sup *sup, const char **why);

/* The agent-check reply line: "up ready 75%", "drain" or "down #why", and a newline. */
void ps__agent_text(const struct ps_sup *sup, char *buf, size_t len);

/* ---- endpoint.c: the --metrics and --agent listeners ----------------------- */

/* Take the endpoints' listeners in the connection server (also after an upgrade). */
int ps__endpoints_init(struct ps_sup *sup);

/* Bind the configured endpoints that have no socket yet (a fresh start; an
 * upgrade adopts the carried ones); an empty host is every address, IPv6
 * and IPv4 ([::] dual-stack, 0.0.0.0 where there is no IPv6).  0, or
 * -errno with err naming the address (the CLI exits 3). */
int ps__endpoints_open(struct ps_sup *sup, char *err, size_t errlen);

/* Close both endpoints and their connections. */
void ps__endpoints_close(struct ps_sup *sup);

/* ---- upgrade.c ------------------------------------------------------------ */

/* Start an upgrade: re-execute our binary in place, carrying sockets and
 * the slot table.  First the new binary is asked --version and
 * --upgrade-state-format by child processes whose pipes the loop polls
 * (below), so that status, /metrics and /healthz answer meanwhile; when
 * both answers are in, the exec (the new image answers w), or the failure
 * (logged, w answered, the old image as it was).  0 when the questions are
 * asked; -errno with err when they cannot be (nothing left open). */
int ps__upgrade_start(struct ps_sup *sup, const struct ps_waiter *w, char *err, size_t errlen);

/* While sup->upgrade_asking: the poll entries of the questions (at most
 * PS_UPGRADE_POLL_MAX), their results, the deadline (UINT64_MAX when
 * none); the same contract as the control socket's.  poll_fill ends the
 * upgrade when the supervisor is stopping; poll_done may exec. */
#define PS_UPGRADE_POLL_MAX 2
int ps__upgrade_poll_fill(struct ps_sup *sup, struct pollfd *pfd);
void ps__upgrade_poll_done(struct ps_sup *sup, const struct pollfd *pfd, int n);
uint64_t ps__upgrade_deadline(const struct ps_sup *sup);

/* The loop reaped pid: 1 when it was a question of the upgrade (its
 * status is kept), 0 when it is not ours. */
int ps__upgrade_reaped(struct ps_sup *sup, pid_t pid, int status);

/* The questions of the upgrade still running (not strays), into out (room
 * for 2); how many. */
int ps__upgrade_children(const struct ps_sup *sup, pid_t *out);

/* In the new image: rebuild sup from the PORTSHARE_UPGRADE_STATE text. */
int ps__upgrade_restore(struct ps_sup *sup, const char *state, char *err, size_t errlen);

/* The state text for sup (malloc'ed): what ps__upgrade_restore reads. */
char *ps__upgrade_serialize(struct ps_sup *sup);

/* upgrade.c: a fingerprint of the upgrade state's field tables (names,
 * types, string sizes, enum bounds), and the one it has for the state
 * format this binary writes (ps_sup_upgrade_state_format).  A change to a
 * table changes the first; tests/unit/test_sup_upgrade.c then fails until
 * the format gets a new name and this constant the new fingerprint. */
uint32_t ps__upgrade_tables_hash(void);
#define PS__UPGRADE_TABLES_HASH 0x9ce9e070u /* of "portshare-upgrade-4" */

#endif
