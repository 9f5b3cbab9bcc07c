/*
 * run_options.h - the options `portshare run` and `portshare serve` share.
 */
#ifndef PS_RUN_OPTIONS_H
#define PS_RUN_OPTIONS_H

#include "supervisor.h"

struct run_options {
    struct ps_sup_config cfg;
    int log_json;
    int ready_delay_given;  /* --ready-delay was on the command line */
    int drain_signal_given; /* --drain-signal was: no default by program name */
    int journal;            /* stderr is journald's stream: sd-daemon level prefixes */
};

#define RUN_OPTIONS_HELP                                                                           \
    "options:\n"                                                                                   \
    "  -l, --listen SPEC        listen address (repeatable): tcp://HOST:PORT, HOST:PORT, :PORT,\n" \
    "                           udp://HOST:PORT, unix:/path, unix:@abstract, [IPv6]:PORT;\n"       \
    "                           NAME=SPEC names it (LISTEN_FDNAMES); SPEC?backlog=N&v6only=on\n"   \
    "                           &reuse=port|shared&mode=0660 sets options\n"                       \
    "  -w, --workers N          worker slots (default: number of CPUs)\n"                          \
    "      --mode MODE          reuseport: one SO_REUSEPORT socket per slot (default);\n"          \
    "                           shared: one socket for all workers (unix: always shared)\n"        \
    "      --steering HOW       auto: eBPF where it loads (root, Linux >= 5.14), else classic\n"   \
    "                           BPF (default); ebpf: refuse to start without it; cbpf: never\n"    \
    "                           eBPF (no queue migration: retiring sockets wait to empty)\n"       \
    "      --cpu-affinity       pin slot i's worker to CPU i mod N (of the CPUs we may use)\n"     \
    "                           and steer each new connection to the slot of the CPU\n"            \
    "                           that received it, while that slot is ready\n"                      \
    "      --user USER[:GROUP]  run workers as USER (sockets are bound first, as root)\n"          \
    "      --ready-timeout DUR  a new worker must be ready within DUR (default 60s)\n"             \
    "      --ready MODE         when a new worker counts as ready: auto (default): READY=1,\n"     \
    "                           or, for a worker that sends nothing on NOTIFY_SOCKET, as soon\n"   \
    "                           as it waits on its listeners (epoll, accept, poll, select),\n"     \
    "                           else after --ready-delay; notify: READY=1 only; delay:\n"          \
    "                           READY=1 or alive for --ready-delay\n"                              \
    "      --ready-delay DUR    the alive-for fallback of --ready auto and delay (default 2s)\n"   \
    "      --watch PATH         reload when PATH changes (repeatable; a directory with all\n"      \
    "                           below it, dotfiles and *~ ignored; after 300 ms of quiet)\n"       \
    "      --handoff LIST       how workers learn their sockets, comma-separated: systemd\n"       \
    "                           (LISTEN_FDS..., the default), einhorn (EINHORN_FD_COUNT,\n"        \
    "                           EINHORN_FD_n), server-starter (SERVER_STARTER_PORT), all\n"        \
    "      --drain-signal SIG   what asks a worker to finish and exit (default: the program's\n"   \
    "                           graceful stop when it is a known server, INT for lighttpd,\n"      \
    "                           QUIT for nginx, starman, unicorn...; else TERM)\n"                 \
    "      --drain-timeout DUR  SIGKILL a worker DUR after its drain signal (default 30s)\n"       \
    "      --flow-linger DUR    a replaced worker holding UDP flows gets its drain signal\n"       \
    "                           once they are idle (flow_idle), at most DUR later (10m)\n"         \
    "      --watchdog DUR       a ready worker must send WATCHDOG=1 at least every DUR\n"          \
    "                           (it gets WATCHDOG_USEC); else SIGABRT and a restart\n"             \
    "      --stall-timeout DUR  a slot whose queue holds connections and does not go down\n"       \
    "                           for DUR is stalled: steered away from, and if still so\n"          \
    "                           DUR/2 later its queue moves on (eBPF) and its worker is\n"         \
    "                           killed and replaced (default 1s; 0: off)\n"                        \
    "      --name NAME          supervisor name for the control socket (default: default)\n"       \
    "      --control PATH       control socket path (default: /run/portshare/NAME.sock as\n"       \
    "                           root, else $XDG_RUNTIME_DIR/portshare/NAME.sock or\n"              \
    "                           /tmp/portshare-UID/NAME.sock)\n"                                   \
    "      --log-format FMT     text (default) or json, on stderr\n"                               \
    "      --metrics HOST:PORT  serve GET /metrics (Prometheus text) and GET /healthz (200 "       \
    "while\n"                                                                                      \
    "                           a worker is ready, 503 in lame duck) over HTTP on HOST:PORT\n"     \
    "      --agent HOST:PORT    answer HAProxy's agent-check on HOST:PORT (\"up ready N%\" from\n" \
    "                           the share of ready workers, \"drain\" in lame duck)\n"             \
    "      --lameduck DUR       on SIGTERM, report unhealthy (drain, 503) and keep serving for\n"  \
    "                           DUR before draining the workers (default 0: drain at once)\n"      \
    "  DUR is a number with ms, s (default) or m, like 500ms, 2s, 1m.\n"

void run_options_init(struct run_options *o);

/*
 * Parse the run option at argv[*i] (advancing *i past its value).  Returns 1
 * when consumed, 0 when argv[*i] is not a run option, -1 after printing an
 * error line (exit code PS_EXIT_USAGE).
 */
int run_option_parse(struct run_options *o, int argc, char **argv, int *i);

int run_parse_duration(const char *text, unsigned *ms);

/* Run the supervisor with o->cfg (argv set); returns the exit code. */
int run_supervisor(struct run_options *o);

#endif
