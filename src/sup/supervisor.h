/*
 * supervisor.h - the supervisor behind `portshare run` (private API).
 *
 * The supervisor owns every listening socket for its whole life and hands
 * copies to workers (docs/DESIGN.md, "Who owns a socket").  It is one single-threaded event loop
 * over a signalfd, the notify socket, the control socket and timers.
 */
#ifndef PS_SUPERVISOR_H
#define PS_SUPERVISOR_H

#include "portshare.h"

#include <stdint.h>
#include <sys/types.h>

#define PS_SUP_MAX_LISTENERS 32
#define PS_SUP_MAX_WORKERS   1024

/* --steering: what may steer new connections of TCP reuseport groups */
enum ps_sup_steering {
    PS_STEERING_AUTO, /* eBPF SELECT_OR_MIGRATE where it loads, else CBPF */
    PS_STEERING_CBPF, /* classic BPF only (and a retire grace) */
    PS_STEERING_EBPF  /* eBPF or refuse to start */
};

enum ps_log_level { PS_LOG_DEBUG, PS_LOG_INFO, PS_LOG_WARN, PS_LOG_ERROR };

/* Where the supervisor's log lines go: event is a short snake_case tag
 * ("worker_ready"), msg a human sentence.  The library never prints. */
typedef void (*ps_sup_log_fn)(void *ctx, enum ps_log_level level, const char *event,
                              const char *msg);

struct ps_sup_config {
    struct ps_spec specs[PS_SUP_MAX_LISTENERS]; /* from -l; ports resolved by start */
    int nspecs;
    int workers;         /* slots */
    enum ps_reuse mode;  /* PS_REUSE_PORT or PS_REUSE_SHARED */
    int drop_privileges; /* run workers as uid/gid */
    uid_t uid;
    gid_t gid;
    char user[64];             /* for initgroups() */
    unsigned ready_timeout_ms; /* a starting worker must be ready by then */
    enum ps_ready_mode {
        PS_READY_NOTIFY, /* READY=1 only */
        PS_READY_DELAY,  /* READY=1, or alive for ready_delay_ms (0: at once) */
        PS_READY_AUTO    /* READY=1; else, for a worker that never notified anything, the
                          * kernel shows it waiting on its listeners, or it is alive for
                          * ready_delay_ms (0: no delay fallback) */
    } ready_mode;
    unsigned ready_delay_ms; /* see ready_mode */
    /* How workers learn their descriptors (3..): a set of these; 0 means
     * PS_HANDOFF_SYSTEMD.  Without SYSTEMD, LISTEN_* are not set. */
#define PS_HANDOFF_SYSTEMD        1u /* LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES */
#define PS_HANDOFF_EINHORN        2u /* EINHORN_FD_COUNT, EINHORN_FD_n, EINHORN_MASTER_PID */
#define PS_HANDOFF_SERVER_STARTER 4u /* SERVER_STARTER_PORT, SERVER_STARTER_GENERATION */
    unsigned handoff;
#define PS_SUP_MAX_WATCH 32
    const char *watch[PS_SUP_MAX_WATCH]; /* --watch: a change below one reloads */
    int nwatch;
    unsigned drain_timeout_ms; /* drain signal, then SIGKILL after this */
    /* a worker of an old generation (or a retired slot) that holds UDP
     * flows gets its drain signal once they are idle, or after this */
    unsigned flow_linger_ms;
    unsigned watchdog_ms; /* 0: off; else a ready worker sends WATCHDOG=1 this often */
    int drain_signal;     /* what asks a worker to drain (SIGTERM) */
    enum ps_sup_steering steering;
    unsigned stall_timeout_ms; /* 0: off; a queue not draining this long is a stall */
    int cpu_affinity;          /* slot i's worker on CPU i mod N, its connections too */
    char name[64];
    char control_path[108];
    char **argv;          /* PROGRAM ARGS..., NULL-terminated */
    const char *self_exe; /* our binary, re-executed by upgrade */
    char **self_argv;     /* our command line, replayed by upgrade */
    ps_sup_log_fn log;
    void *log_ctx;
    /* What `portshare serve` adds.  All off when zero. */
    const char *exec_path;   /* NULL: execvp(argv[0]); else this file is opened
                              * in the child before privileges are dropped
                              * and run through the descriptor (fexecve), so
                              * the worker's user needs no search permission
                              * on its path; argv[0] is then only its name */
    const char *pass_fd_env; /* non-NULL: every worker also gets pass_fd, as
                              * descriptor 3 + LISTEN_FDS (right after its
                              * listeners), that number in this variable */
    int pass_fd;
    /* SIGUSR1 ("reopen your files"): NULL ignores it; else it is called
     * (a negative errno and err are logged) and SIGUSR1 is then sent to
     * every live worker.  Workers start with SIGUSR1 blocked, so one that
     * is still starting sees it pending once it reads its signals. */
    int (*on_reopen)(void *ctx, char *err, size_t errlen);
    void *reopen_ctx;
    /* Operations endpoints (--metrics, --agent).  Off when the spec's text is empty. */
    struct ps_spec metrics; /* --metrics: GET /metrics, GET /healthz (HTTP) */
    struct ps_spec agent;   /* --agent: HAProxy agent-check */
    unsigned lameduck_ms;   /* SIGTERM: lame duck this long before draining (0: off) */
};

/*
 * The default places of a supervisor's control socket, in the order the
 * supervisor tries them (a place it cannot write, such as a read-only
 * /run, falls back to the next) and the client looks: i = 0, 1, ...
 * /run/portshare/NAME.sock (root only), $XDG_RUNTIME_DIR/portshare/NAME.sock
 * (when set), /tmp/portshare-UID/NAME.sock.  0, -ENOENT past the last,
 * -EINVAL for a bad name, -ENAMETOOLONG.
 */
int ps_sup_control_candidate(const char *name, int i, char *buf, size_t len);

/* The first of those places (where a supervisor that can write it is). */
int ps_sup_control_path(const char *name, char *buf, size_t len);

/* Where the client finds supervisor NAME: the first place in that order
 * with a socket, or the first place when none has one.  O(places). */
int ps_sup_control_locate(const char *name, char *buf, size_t len);

/*
 * Bind (or adopt from systemd, or from the previous image after an upgrade),
 * start the workers and run until stopped.  Returns 0 after a clean stop or a
 * negative errno; err describes startup failures in one line, and *stage
 * tells the caller which kind (so the CLI can pick its exit code).
 */
enum ps_sup_stage {
    PS_SUP_STAGE_NONE,
    PS_SUP_STAGE_BIND,
    PS_SUP_STAGE_EXEC,
    PS_SUP_STAGE_CONTROL,
    PS_SUP_STAGE_SYSTEM,
    PS_SUP_STAGE_CONFIG /* the configuration contradicts itself (exit 2) */
};
int ps_sup_run(struct ps_sup_config *cfg, char *err, size_t errlen, enum ps_sup_stage *stage);
/* ps_sup_run blocks the signals it reads, ignores SIGPIPE, takes
 * NOTIFY_SOCKET for itself and becomes a child subreaper; all of that is put
 * back as it was when it returns. */

/*
 * The open-file limit (group.c).  ps_sup_nofile_raise sets the soft
 * RLIMIT_NOFILE to the hard one: 1 when it changed (*from, *to: before and
 * after), 0 when it was already there, -errno.  ps_sup_nofile_check, before
 * anything is bound: 0 when cfg's listeners and the supervisor's own
 * descriptors fit under the soft limit, else -EMFILE and one line in err
 * naming the limit and what it takes.  O(open descriptors).
 */
int ps_sup_nofile_raise(long *from, long *to);
int ps_sup_nofile_check(const struct ps_sup_config *cfg, char *err, size_t errlen);

/*
 * Client side of the control socket: send one command line ("status",
 * "status json", "reload", "scale 4", "stop", "stop lameduck 5000", "upgrade",
 * "metrics") and collect the
 * reply.  Returns 0 and sets *ok (1 when the supervisor reported success)
 * with the reply body in out (NUL-terminated), or -errno (-ENOENT /
 * -ECONNREFUSED: nobody there; -EACCES: not allowed; -EMSGSIZE: the reply
 * does not fit in cap).
 */
int ps_sup_control_call(const char *path, const char *command, int *ok, char *out, size_t cap,
                        unsigned timeout_ms);

/* The name of the upgrade state format this binary writes and reads
 * ("portshare --upgrade-state-format" prints it): an in-place upgrade is
 * refused before the exec when the new binary names another. */
const char *ps_sup_upgrade_state_format(void);

#endif
