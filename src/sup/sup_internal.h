/*
 * sup_internal.h - the supervisor's state, shared by supervisor.c (the event
 * loop and the state machine), group.c (listeners), control.c (the control
 * socket), status.c, log.c and upgrade.c (carrying the state across exec).
 * Only src/sup includes it.
 */
#ifndef PS_SUP_INTERNAL_H
#define PS_SUP_INTERNAL_H

#include "core.h"
#include "supervisor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>

/* ---- listener groups (group.c) ---------------------------------------- */

struct ps_group {
    struct ps_spec spec;
    int shared;    /* one socket for every slot */
    int inherited; /* received from systemd (LISTEN_FDS): never re-bound */
    int nfds;
    int fds[PS_SUP_MAX_WORKERS];
};

/* Bind g's sockets: nslots of them (one when shared), refusing a port where
 * a foreign socket already listens with SO_REUSEPORT.  0, or -errno with err
 * naming the address (and its holder when visible); nothing stays open. */
int ps__group_open(struct ps_group *g, int nslots, char *err, size_t errlen);

/* Add sockets at the end until g has nslots (no-op when shared). */
int ps__group_grow(struct ps_group *g, int nslots, char *err, size_t errlen);

/* Close the last socket (scale-down); the kernel's group index of every
 * other socket stays what it was. */
void ps__group_close_last(struct ps_group *g);

/* Close every socket of g. */
void ps__group_close(struct ps_group *g);

/* The socket slot gets (the shared one when shared), or -1. */
int ps__group_fd(const struct ps_group *g, int slot);

/* 1 when g is a TCP reuseport group a steering program can be attached to. */
int ps__group_can_steer(const struct ps_group *g);

/* Attach a program sending new connections only to sockets whose serving[]
 * flag is set (to all when none is); 0 or -errno.  O(nfds). */
int ps__group_steer(struct ps_group *g, const unsigned char *serving);

/* ---- workers and slots ------------------------------------------------- */

enum ps_worker_state {
    W_STARTING, /* running, not ready yet */
    W_READY,    /* serving */
    W_DRAINING, /* got SIGTERM, finishing what it has */
};

struct ps_worker {
    pid_t pid;
    int slot;
    unsigned generation;
    enum ps_worker_state state;
    uint64_t started_ms;  /* CLOCK_MONOTONIC */
    uint64_t ready_ms;    /* when it became ready, 0 before */
    uint64_t ping_ms;     /* last WATCHDOG=1 (or readiness) */
    uint64_t deadline_ms; /* STARTING: ready timeout; DRAINING: SIGKILL time */
    int killed;           /* SIGKILL sent */
    int notified;         /* sent anything on NOTIFY_SOCKET */
    int hinted;           /* logged the "never sent READY=1" hint */
    char status[128];     /* last STATUS= */
    char stats[128];      /* last X_PORTSHARE_STATS= */
};

enum ps_slot_state {
    S_ACTIVE,   /* has (or is starting) a worker */
    S_BACKOFF,  /* its worker died; waiting before the next start */
    S_RETIRING, /* scale-down: steered away, worker finishing its queue */
};

struct ps_slot {
    enum ps_slot_state state;
    int current;            /* index into sup->workers, or -1 */
    int next;               /* the reload generation's worker, or -1 */
    unsigned restarts;      /* exits outside a reload, all time */
    unsigned crashes;       /* consecutive quick exits: drives the back-off */
    uint64_t backoff_until; /* S_BACKOFF: next start */
    uint64_t retire_since;  /* S_RETIRING: when it was steered away */
    int last_exit;          /* wait status of the last exit, for status */
};

/* a control client waiting for an answer (reload, stop) */
struct ps_waiter {
    int fd;
    int what; /* 'r' reload, 's' stop */
};

#define PS_SUP_MAX_WAITERS 32
#define PS_SUP_MAX_CLIENTS 16

struct ps_sup {
    struct ps_sup_config *cfg;
    struct ps_group groups[PS_SUP_MAX_LISTENERS];
    int ngroups;
    struct ps_slot slots[PS_SUP_MAX_WORKERS];
    int nslots; /* slots that exist (active + retiring) */
    int target; /* the number of workers asked for */
    struct ps_worker workers[2 * PS_SUP_MAX_WORKERS + 64];
    int nworkers;
    unsigned generation;      /* the serving generation */
    unsigned next_generation; /* the last generation number handed out */
    int reloading;            /* a reload generation is starting */
    uint64_t reload_deadline;
    int reload_queued;
    char reload_error[256];
    int stopping;
    uint64_t stop_deadline;
    uint64_t started_ms; /* monotonic, for uptime */
    time_t started_wall;
    int sigfd, notify_fd, control_fd;
    char notify_addr[108];
    char systemd_notify[108]; /* our own NOTIFY_SOCKET from systemd, if any */
    int clients[PS_SUP_MAX_CLIENTS];
    struct ps_waiter waiters[PS_SUP_MAX_WAITERS];
    int nwaiters;
    int upgrade_requested;
    int upgrade_client; /* control client that asked for the upgrade, or -1 */
    int steer_dirty;
    int steer_warned; /* the steering program could not be attached */
    int told_ready;   /* READY=1 sent to systemd after the first start */
};

/* spawn.c: start a worker for slot in generation gen.  Returns its index in
 * sup->workers (state W_STARTING, ready deadline set), or -errno when it
 * could not be forked or its program not executed. */
int ps__sup_spawn(struct ps_sup *sup, int slot, unsigned gen);

/* log.c: one log line through cfg->log (nothing when unset). */
void ps__sup_log(struct ps_sup *sup, enum ps_log_level level, const char *event, const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* ---- control.c: the server side of the control socket ------------------ */

/* Create the control socket (directory 0700, socket 0600); refuses when a
 * live supervisor answers there.  0, or -errno with err. */
int ps__control_open(struct ps_sup *sup, char *err, size_t errlen);

/* Accept every waiting control connection. */
void ps__control_accept(struct ps_sup *sup);

/* Client idx sent something: read its command and run it. */
void ps__control_client_ready(struct ps_sup *sup, int idx);

/* Send "ok"/"error", then body, to a control client. */
void ps__control_reply(int fd, int ok, const char *body);

/* Close the control socket, every client and waiter, unlink the path. */
void ps__control_close(struct ps_sup *sup);

/* status.c: status as text or JSON into buf (truncated to cap). */
void ps__status_text(struct ps_sup *sup, char *buf, size_t cap);
void ps__status_json(struct ps_sup *sup, char *buf, size_t cap);

/* ---- supervisor.c: actions the control socket can ask for -------------- */

/* Start a reload, or queue one behind the reload in progress. */
void ps__sup_request_reload(struct ps_sup *sup);

/* Scale to n slots; 0, or -errno with err (bad n, stopping, bind failure). */
int ps__sup_request_scale(struct ps_sup *sup, int n, char *err, size_t errlen);

/* Drain every worker and stop; asked twice, SIGKILL them at once. */
void ps__sup_request_stop(struct ps_sup *sup);

/* Keep fd open until the operation what ('r' reload, 's' stop) ends, then
 * answer it with the outcome. */
void ps__sup_add_waiter(struct ps_sup *sup, int fd, int what);

/* ---- upgrade.c ------------------------------------------------------------ */

/* Re-execute our binary in place, carrying sockets and the slot table;
 * returns only on failure (-errno with err), the old image still running. */
int ps__upgrade_exec(struct ps_sup *sup, char *err, size_t errlen);

/* In the new image: rebuild sup from the PORTSHARE_UPGRADE_STATE text. */
int ps__upgrade_restore(struct ps_sup *sup, const char *state, char *err, size_t errlen);

#endif
