/*
 * cmd_http_worker.c - `portshare http-worker`: the HTTP worker process that
 * `portshare serve` runs on each slot (also usable under systemd or
 * systemd-socket-activate).  Parses its options, takes its listeners from
 * LISTEN_FDS, and runs the library's HTTP loop until drained.
 */
#include "cli.h"
#include "core.h"
#include "http.h"
#include "portshare.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_HEADER_TIMEOUT_MS 10000 /* a whole request head, from its first byte */
#define DEFAULT_IDLE_TIMEOUT_MS   5000  /* keep-alive wait for the next request */
#define DEFAULT_MAX_CONNECTIONS   10000

static void usage(FILE *out)
{
    fprintf(out, "usage: portshare http-worker [OPTIONS] [DIR]\n\n"
                 "The HTTP worker process of 'portshare serve'.  Serves GET/HEAD of the files\n"
                 "under DIR (or, without DIR, a page describing itself) on the listening\n"
                 "sockets it receives by the systemd protocol (LISTEN_FDS).\n\n"
                 "  --access-log FILE|-     common log format, appended to FILE or stdout (off);\n"
                 "                          reopened on SIGUSR1\n"
                 "  --header-timeout SECS   a request head must arrive within (default 10)\n"
                 "  --idle-timeout SECS     keep-alive connection without a request (default 5)\n"
                 "  --max-connections N     open connections at most (default 10000)\n");
}

/* Seconds (decimals allowed) to milliseconds, 1 ms .. 1 day. */
static int parse_seconds(const char *opt, const char *s, int *ms)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0.001 || v > 86400)
        return ps_cli_fatal(PS_EXIT_USAGE, "%s: '%s' is not a number of seconds in 0.001..86400",
                            opt, s);
    *ms = (int)(v * 1000 + 0.5);
    return 0;
}

/* The access log: stdout for "-"; else the descriptor the supervisor
 * opened for us (PORTSHARE_ACCESS_LOG_FD, `portshare serve`), else opened
 * here (run by systemd or by hand). */
static int open_log(const char *path, struct ps_http_server_config *cfg)
{
    const char *env = getenv("PORTSHARE_ACCESS_LOG_FD");
    long n;

    cfg->access_log_path = NULL;
    if (!strcmp(path, "-")) {
        cfg->access_log_fd = STDOUT_FILENO;
        return 0;
    }
    cfg->access_log_path = path;
    if (env) {
        if (ps__parse_long(env, 3, 0x7fffffff, &n) < 0 || fcntl((int)n, F_SETFD, FD_CLOEXEC) < 0)
            return ps_cli_fatal(PS_EXIT_USAGE, "PORTSHARE_ACCESS_LOG_FD='%s' is no open descriptor",
                                env);
        unsetenv("PORTSHARE_ACCESS_LOG_FD");
        cfg->access_log_fd = (int)n;
        return 0;
    }
    cfg->access_log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (cfg->access_log_fd < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "--access-log: cannot open %s: %s", path,
                            strerror(errno));
    return 0;
}

/* sd_watchdog_enabled(3): WATCHDOG_USEC, for us when WATCHDOG_PID is
 * unset or our pid.  Returns the interval to send WATCHDOG=1 at (half the
 * timeout, as sd_watchdog_enabled advises), 0 when off. */
static int watchdog_interval_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    long us, p;

    if (!usec)
        return 0;
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    if (ps__parse_long(usec, 1, 0x7fffffff, &us) < 0) {
        ps_cli_warn("WATCHDOG_USEC='%s' is not a number; no watchdog", usec);
        return 0;
    }
    if (pid && (ps__parse_long(pid, 1, 0x7fffffff, &p) < 0 || p != (long)getpid()))
        return 0;
    return us / 2000 > 0 ? (int)(us / 2000) : 1;
}

static int parse_options(int argc, char **argv, struct ps_http_server_config *cfg)
{
    static const struct option longopts[] = {
        {"access-log", required_argument, NULL, 'l'},
        {"header-timeout", required_argument, NULL, 'H'},
        {"idle-timeout", required_argument, NULL, 'I'},
        {"max-connections", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *log_path = NULL;
    long n;
    int c;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            log_path = optarg; /* the last one counts */
            break;
        case 'H':
            if (parse_seconds("--header-timeout", optarg, &cfg->header_timeout_ms))
                return PS_EXIT_USAGE;
            break;
        case 'I':
            if (parse_seconds("--idle-timeout", optarg, &cfg->idle_timeout_ms))
                return PS_EXIT_USAGE;
            break;
        case 'm':
            if (ps__parse_long(optarg, 1, 1000000, &n) < 0)
                return ps_cli_fatal(
                    PS_EXIT_USAGE, "--max-connections: '%s' is not a number in 1..1000000", optarg);
            cfg->max_connections = (int)n;
            break;
        case 'h':
            usage(stdout);
            exit(PS_EXIT_OK);
        default:
            return ps_cli_fatal(PS_EXIT_USAGE, "http-worker: unknown option or missing value: %s",
                                argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return ps_cli_fatal(PS_EXIT_USAGE, "http-worker: one DIR at most (got '%s' and '%s')",
                            argv[optind], argv[optind + 1]);
    cfg->root = optind < argc ? argv[optind] : NULL;
    if (log_path && open_log(log_path, cfg))
        return PS_EXIT_USAGE;
    return 0;
}

static int check_dir(const char *dir)
{
    struct stat st;

    if (stat(dir, &st) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "cannot serve %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ps_cli_fatal(PS_EXIT_USAGE, "cannot serve %s: not a directory", dir);
    if (access(dir, R_OK | X_OK) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "cannot serve %s: %s", dir, strerror(errno));
    return 0;
}

/* Our listeners, from LISTEN_FDS: each must be a listening stream socket. */
static int take_listeners(int **fds)
{
    char **names = NULL;
    int i, n = ps_listen_fds(1, &names);

    if (n < 0)
        return -ps_cli_fatal(PS_EXIT_SYSTEM, "LISTEN_FDS: %s", ps_strerror(n));
    if (n == 0)
        return -ps_cli_fatal(PS_EXIT_USAGE, "no listening sockets passed (LISTEN_FDS unset or "
                                            "for another process): run by 'portshare serve', "
                                            "systemd or systemd-socket-activate");
    *fds = calloc((size_t)n, sizeof(int));
    if (!*fds) {
        ps_listen_names_free(names);
        return -ps_cli_fatal(PS_EXIT_SYSTEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        int fd = PS_LISTEN_FDS_START + i;
        if (ps_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) != 1) {
            ps_cli_fatal(PS_EXIT_USAGE, "descriptor %d (%s) is not a listening stream socket", fd,
                         names && names[i] ? names[i] : "unknown");
            ps_listen_names_free(names);
            free(*fds);
            return -PS_EXIT_USAGE;
        }
        (*fds)[i] = fd;
    }
    ps_listen_names_free(names);
    return n;
}

static long env_number(const char *name)
{
    const char *v = getenv(name);
    long n;

    if (!v)
        return -1;
    if (ps__parse_long(v, 0, 0x7fffffff, &n) < 0) {
        ps_cli_warn("%s='%s' is not a number; ignored", name, v);
        return -1;
    }
    return n;
}

/* Room for every connection plus the file cache's descriptors. */
static void raise_fd_limit(int connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)connections + 2048;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
        ps_cli_warn("descriptor limit %llu is below what %d connections need",
                    (unsigned long long)rl.rlim_cur, connections);
}

static void worker_warn(const char *msg)
{
    ps_cli_warn("%s", msg);
}

int cmd_http_worker(int argc, char **argv)
{
    struct ps_http_server_config cfg = {
        .header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS,
        .idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS,
        .max_connections = DEFAULT_MAX_CONNECTIONS,
        .access_log_fd = -1,
        .warn = worker_warn,
    };
    int *fds = NULL, n, r;

    r = parse_options(argc, argv, &cfg);
    if (r)
        return r;
    if (cfg.root && check_dir(cfg.root))
        return PS_EXIT_USAGE;
    n = take_listeners(&fds);
    if (n < 0)
        return -n;
    cfg.listen_fds = fds;
    cfg.n_listen = n;
    cfg.slot = env_number("PORTSHARE_SLOT");
    cfg.generation = env_number("PORTSHARE_GENERATION");
    cfg.watchdog_ms = watchdog_interval_ms();
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-send is an error return, not a death */
    raise_fd_limit(cfg.max_connections);
    r = ps_http_serve(&cfg);
    free(fds);
    if (r < 0)
        return ps_cli_fatal(PS_EXIT_SYSTEM, "http worker: %s", ps_strerror(r));
    return PS_EXIT_OK;
}
