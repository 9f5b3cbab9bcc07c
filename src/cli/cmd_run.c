/*
 * cmd_run.c - `portshare run [OPTIONS] -- PROGRAM [ARGS...]`: the supervisor.
 *
 * Also the option parser that `portshare serve` shares: every run option is
 * valid there too, before or after DIR.
 */
#include "core.h"
#include "cli.h"
#include "known_programs.h"
#include "run_options.h"
#include "supervisor.h"

#include <errno.h>
#include <stddef.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char run_usage[] =
    "usage: portshare run [OPTIONS] -- PROGRAM [ARGS...]\n"
    "\n"
    "Bind the listen addresses, start one worker per slot running PROGRAM with its\n"
    "sockets at fd 3.. (systemd's LISTEN_FDS protocol), restart workers that exit,\n"
    "and replace them without dropping a connection on reload.\n"
    "\n" RUN_OPTIONS_HELP "\n"
    "signals: HUP reload, TERM/INT stop gracefully (TERM after a --lameduck first),\n"
    "USR2 upgrade the supervisor in place, TTIN/TTOU one worker more/less.\n"
    "control: portshare status|reload|scale N|stop|upgrade|metrics [--name NAME | --control PATH]\n"
    "workers get LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, PORTSHARE_SLOT,\n"
    "PORTSHARE_GENERATION and NOTIFY_SOCKET.\n";

/* ---- durations and numbers ---------------------------------------------- */

int run_parse_duration(const char *text, unsigned *ms)
{
    return ps__parse_duration_ms(text, ms) < 0 ? -1 : 0;
}

static int parse_count(const char *text, long min, long max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_user(struct ps_sup_config *cfg, const char *text)
{
    char user[128], *colon;
    struct passwd *pw;

    snprintf(user, sizeof(user), "%s", text);
    colon = strchr(user, ':');
    if (colon)
        *colon++ = '\0';
    pw = getpwnam(user);
    if (!pw) {
        char *end;
        long uid = strtol(user, &end, 10);
        if (!*user || *end || uid < 0)
            return ps_cli_fatal(PS_EXIT_USAGE, "--user: no such user '%s'", user);
        cfg->uid = (uid_t)uid;
        cfg->gid = (gid_t)uid;
        cfg->user[0] = '\0';
    } else {
        cfg->uid = pw->pw_uid;
        cfg->gid = pw->pw_gid;
        snprintf(cfg->user, sizeof(cfg->user), "%s", pw->pw_name);
    }
    if (colon && *colon) {
        struct group *gr = getgrnam(colon);
        char *end;
        long gid;
        if (gr) {
            cfg->gid = gr->gr_gid;
        } else {
            gid = strtol(colon, &end, 10);
            if (*end || gid < 0)
                return ps_cli_fatal(PS_EXIT_USAGE, "--user: no such group '%s'", colon);
            cfg->gid = (gid_t)gid;
        }
    }
    if (geteuid() != 0 && cfg->uid != geteuid())
        return ps_cli_fatal(PS_EXIT_USAGE, "--user %s needs root (running as uid %lu)", text,
                            (unsigned long)geteuid());
    cfg->drop_privileges = 1;
    return 0;
}

/* "TERM", "SIGTERM" or "15" */
static int parse_signal(const char *text)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"TERM", SIGTERM}, {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"HUP", SIGHUP},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"WINCH", SIGWINCH}, {"KILL", SIGKILL}};
    size_t i;
    int n;

    if (!strncmp(text, "SIG", 3))
        text += 3;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(text, names[i].name))
            return names[i].sig;
    if (parse_count(text, 1, 64, &n) == 0)
        return n;
    return -1;
}

/* "systemd", "einhorn,server-starter", "all" */
static int parse_handoff(struct ps_sup_config *cfg, const char *text)
{
    static const struct {
        const char *name;
        unsigned bits;
    } names[] = {{"systemd", PS_HANDOFF_SYSTEMD},
                 {"einhorn", PS_HANDOFF_EINHORN},
                 {"server-starter", PS_HANDOFF_SERVER_STARTER},
                 {"all", PS_HANDOFF_SYSTEMD | PS_HANDOFF_EINHORN | PS_HANDOFF_SERVER_STARTER}};
    const char *p = text;
    unsigned bits = 0;
    size_t i, n;

    do {
        n = strcspn(p, ",");
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strlen(names[i].name) == n && !strncmp(p, names[i].name, n))
                break;
        if (i == sizeof(names) / sizeof(names[0]))
            return ps_cli_fatal(PS_EXIT_USAGE,
                                "bad --handoff '%s': '%.*s' is not one of systemd, einhorn, "
                                "server-starter, all (comma-separated)",
                                text, (int)n, p);
        bits |= names[i].bits;
        p += n;
    } while (*p++ == ',');
    cfg->handoff = bits;
    return 0;
}

/* ---- options ------------------------------------------------------------------ */

void run_options_init(struct run_options *o)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    memset(o, 0, sizeof(*o));
    o->cfg.workers = cpus > 0 ? (int)cpus : 1;
    o->cfg.mode = PS_REUSE_PORT;
    o->cfg.ready_timeout_ms = 60000;
    o->cfg.ready_mode = PS_READY_AUTO;
    o->cfg.ready_delay_ms = 2000;
    o->cfg.drain_timeout_ms = 30000;
    o->cfg.flow_linger_ms = 600000;
    o->cfg.drain_signal = SIGTERM;
    o->cfg.stall_timeout_ms = 1000;
    snprintf(o->cfg.name, sizeof(o->cfg.name), "default");
}

/* "--opt=value" or "--opt value" / "-x value" / "-xvalue" */
static const char *option_value(const char *name, int argc, char **argv, int *i, int *bad)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);

    if (!strncmp(arg, name, n) && arg[n] == '=')
        return arg + n + 1;
    if (!strcmp(arg, name)) {
        if (*i + 1 >= argc) {
            ps_cli_fatal(PS_EXIT_USAGE, "option %s needs a value", name);
            *bad = 1;
            return NULL;
        }
        return argv[++*i];
    }
    if (n == 2 && name[0] == '-' && name[1] != '-' && !strncmp(arg, name, 2) && arg[2])
        return arg + 2;
    return NULL;
}

static int add_listen(struct run_options *o, const char *text)
{
    char err[256];

    if (o->cfg.nspecs >= PS_SUP_MAX_LISTENERS)
        return ps_cli_fatal(PS_EXIT_USAGE, "too many listen addresses (at most %d)",
                            PS_SUP_MAX_LISTENERS);
    if (ps_spec_parse(text, &o->cfg.specs[o->cfg.nspecs], err, sizeof(err)) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad listen spec '%s': %s", text, err);
    o->cfg.nspecs++;
    return 0;
}

/* --metrics / --agent HOST:PORT: a TCP address of our own (no reuseport) */
static int parse_endpoint(struct ps_spec *spec, const char *opt, const char *text)
{
    char err[256];

    if (ps_spec_parse(text, spec, err, sizeof(err)) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad %s '%s': %s", opt, text, err);
    if (spec->proto != PS_PROTO_TCP || spec->name[0] || strchr(text, '?')) {
        memset(spec, 0, sizeof(*spec));
        return ps_cli_fatal(PS_EXIT_USAGE,
                            "bad %s '%s': want a TCP HOST:PORT (like 127.0.0.1:9100)", opt, text);
    }
    return 0;
}

/* A keyword option's value: the number of the matching word, or -1. */
struct keyword {
    const char *word;
    int value;
};

static int keyword_of(const struct keyword *words, size_t n, const char *v)
{
    size_t k;

    for (k = 0; k < n; k++)
        if (!strcmp(v, words[k].word))
            return words[k].value;
    return -1;
}

/* Each option's handler: 0, or -1 once it said what is wrong. */
typedef int (*option_fn)(struct run_options *o, const char *opt, const char *v);

static int opt_listen(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    return add_listen(o, v) ? -1 : 0;
}

static int opt_workers(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    if (parse_count(v, 1, PS_SUP_MAX_WORKERS, &o->cfg.workers) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --workers '%s' (1-%d)", v, PS_SUP_MAX_WORKERS), -1;
    return 0;
}

static int opt_mode(struct run_options *o, const char *opt, const char *v)
{
    static const struct keyword words[] = {{"reuseport", PS_REUSE_PORT},
                                           {"shared", PS_REUSE_SHARED}};
    int m = keyword_of(words, sizeof(words) / sizeof(words[0]), v);

    (void)opt;
    if (m < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --mode '%s' (reuseport or shared)", v), -1;
    o->cfg.mode = m;
    return 0;
}

static int opt_endpoint(struct run_options *o, const char *opt, const char *v)
{
    struct ps_spec *spec = !strcmp(opt, "--metrics") ? &o->cfg.metrics : &o->cfg.agent;

    return parse_endpoint(spec, opt, v) ? -1 : 0;
}

static int opt_steering(struct run_options *o, const char *opt, const char *v)
{
    static const struct keyword words[] = {
        {"auto", PS_STEERING_AUTO}, {"ebpf", PS_STEERING_EBPF}, {"cbpf", PS_STEERING_CBPF}};
    int m = keyword_of(words, sizeof(words) / sizeof(words[0]), v);

    (void)opt;
    if (m < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --steering '%s' (auto, ebpf or cbpf)", v), -1;
    o->cfg.steering = m;
    return 0;
}

static int opt_user(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    return parse_user(&o->cfg, v) ? -1 : 0;
}

static int opt_duration(struct run_options *o, const char *opt, const char *v)
{
    static const struct {
        const char *name;
        size_t offset;
    } durations[] = {
        {"--ready-timeout", offsetof(struct ps_sup_config, ready_timeout_ms)},
        {"--ready-delay", offsetof(struct ps_sup_config, ready_delay_ms)},
        {"--drain-timeout", offsetof(struct ps_sup_config, drain_timeout_ms)},
        {"--flow-linger", offsetof(struct ps_sup_config, flow_linger_ms)},
        {"--watchdog", offsetof(struct ps_sup_config, watchdog_ms)},
        {"--lameduck", offsetof(struct ps_sup_config, lameduck_ms)},
        {"--stall-timeout", offsetof(struct ps_sup_config, stall_timeout_ms)},
    };
    unsigned *dst = NULL;
    size_t k;

    for (k = 0; k < sizeof(durations) / sizeof(durations[0]); k++)
        if (!strcmp(opt, durations[k].name))
            dst = (unsigned *)((char *)&o->cfg + durations[k].offset);
    if (!dst || run_parse_duration(v, dst) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad duration '%s' for %s (like 500ms, 2s, 1m)", v, opt),
               -1;
    if (dst == &o->cfg.ready_timeout_ms && *dst == 0)
        *dst = 1;
    if (dst == &o->cfg.ready_delay_ms)
        o->ready_delay_given = 1;
    return 0;
}

static int opt_watch(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    if (!*v)
        return ps_cli_fatal(PS_EXIT_USAGE, "--watch needs a file or directory"), -1;
    if (o->cfg.nwatch >= PS_SUP_MAX_WATCH)
        return ps_cli_fatal(PS_EXIT_USAGE, "too many --watch paths (at most %d)", PS_SUP_MAX_WATCH),
               -1;
    o->cfg.watch[o->cfg.nwatch++] = v;
    return 0;
}

static int opt_handoff(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    return parse_handoff(&o->cfg, v) ? -1 : 0;
}

static int opt_ready(struct run_options *o, const char *opt, const char *v)
{
    static const struct keyword words[] = {
        {"auto", PS_READY_AUTO}, {"notify", PS_READY_NOTIFY}, {"delay", PS_READY_DELAY}};
    int m = keyword_of(words, sizeof(words) / sizeof(words[0]), v);

    (void)opt;
    if (m < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --ready '%s' (auto, notify or delay)", v), -1;
    o->cfg.ready_mode = m;
    return 0;
}

static int opt_drain_signal(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    o->cfg.drain_signal = parse_signal(v);
    o->drain_signal_given = 1;
    if (o->cfg.drain_signal <= 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --drain-signal '%s' (like TERM, INT, QUIT)", v), -1;
    return 0;
}

static int opt_name(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    if (!*v || strchr(v, '/') || strlen(v) >= sizeof(o->cfg.name))
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --name '%s' (no '/', at most %zu bytes)", v,
                            sizeof(o->cfg.name) - 1),
               -1;
    snprintf(o->cfg.name, sizeof(o->cfg.name), "%s", v);
    return 0;
}

static int opt_control(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    if (strlen(v) >= sizeof(o->cfg.control_path))
        return ps_cli_fatal(PS_EXIT_USAGE, "--control path too long"), -1;
    snprintf(o->cfg.control_path, sizeof(o->cfg.control_path), "%s", v);
    return 0;
}

static int opt_log_format(struct run_options *o, const char *opt, const char *v)
{
    (void)opt;
    if (strcmp(v, "text") && strcmp(v, "json"))
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --log-format '%s' (text or json)", v), -1;
    o->log_json = !strcmp(v, "json");
    return 0;
}

/* The options that take a value, each with its handler (and short name). */
static const struct {
    const char *name, *short_name;
    option_fn fn;
} run_value_options[] = {
    {"--listen", "-l", opt_listen},
    {"--workers", "-w", opt_workers},
    {"--mode", NULL, opt_mode},
    {"--metrics", NULL, opt_endpoint},
    {"--agent", NULL, opt_endpoint},
    {"--steering", NULL, opt_steering},
    {"--user", NULL, opt_user},
    {"--ready-timeout", NULL, opt_duration},
    {"--ready-delay", NULL, opt_duration},
    {"--drain-timeout", NULL, opt_duration},
    {"--flow-linger", NULL, opt_duration},
    {"--watchdog", NULL, opt_duration},
    {"--lameduck", NULL, opt_duration},
    {"--stall-timeout", NULL, opt_duration},
    {"--watch", NULL, opt_watch},
    {"--handoff", NULL, opt_handoff},
    {"--ready", NULL, opt_ready},
    {"--drain-signal", NULL, opt_drain_signal},
    {"--name", NULL, opt_name},
    {"--control", NULL, opt_control},
    {"--log-format", NULL, opt_log_format},
};

int run_option_parse(struct run_options *o, int argc, char **argv, int *i)
{
    const char *v;
    size_t k;
    int bad = 0;

    if (!strcmp(argv[*i], "--cpu-affinity")) {
        o->cfg.cpu_affinity = 1;
        return 1;
    }
    for (k = 0; k < sizeof(run_value_options) / sizeof(run_value_options[0]); k++) {
        const char *name = run_value_options[k].name;

        v = option_value(name, argc, argv, i, &bad);
        if (!v && !bad && run_value_options[k].short_name)
            v = option_value(run_value_options[k].short_name, argc, argv, i, &bad);
        if (bad)
            return -1;
        if (v)
            return run_value_options[k].fn(o, name, v) < 0 ? -1 : 1;
    }
    return 0;
}

/* ---- logging ---------------------------------------------------------------- */

static void log_line(void *ctx, enum ps_log_level level, const char *event, const char *msg)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    /* LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR */
    static const char *prefixes[] = {"<7>", "<6>", "<4>", "<3>"};
    struct run_options *o = ctx;
    struct timespec ts;
    struct tm tm;
    char when[40];
    const char *p;

    /* the slot state machine's every transition: only when asked for */
    if (level == PS_LOG_DEBUG && !getenv("PORTSHARE_DEBUG"))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    if (o->journal)
        fputs(prefixes[level], stderr);
    if (!o->log_json) {
        fprintf(stderr, "%s.%03ldZ portshare[%ld] %s %s: %s\n", when, ts.tv_nsec / 1000000,
                (long)getpid(), names[level], event, msg);
        return;
    }
    fprintf(stderr,
            "{\"time\":\"%s.%03ldZ\",\"pid\":%ld,\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"",
            when, ts.tv_nsec / 1000000, (long)getpid(), names[level], event);
    for (p = msg; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(stderr, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            fprintf(stderr, "\\u%04x", (unsigned char)*p);
        else
            fputc(*p, stderr);
    }
    fputs("\"}\n", stderr);
}

/* ---- running ------------------------------------------------------------------ */

/* execvp() semantics, checked before anything is bound: exit 5 at once. */
static int check_program(const char *prog)
{
    char path[PATH_MAX];
    const char *env = getenv("PATH"), *p;

    if (strchr(prog, '/')) {
        if (access(prog, X_OK) < 0)
            return ps_cli_fatal(PS_EXIT_EXEC, "cannot execute %s: %s", prog, strerror(errno));
        return 0;
    }
    for (p = env ? env : "/usr/local/bin:/usr/bin:/bin"; p && *p;) {
        size_t n = strcspn(p, ":");
        struct stat st;
        snprintf(path, sizeof(path), "%.*s/%s", (int)n, n ? p : ".", prog);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
            return 0;
        p = p[n] ? p + n + 1 : NULL;
    }
    return ps_cli_fatal(PS_EXIT_EXEC, "program '%s' not found in PATH", prog);
}

/* Without --drain-signal, a known server gets its graceful stop instead of
 * TERM (known_programs.c); said once, at the start (not again after an
 * upgrade, which replays this command line). */
static void default_drain_signal(struct run_options *o)
{
    const struct known_program *k;
    char msg[256];

    if (o->drain_signal_given || !(k = ps_cli_known_program(o->cfg.argv)))
        return;
    o->cfg.drain_signal = k->drain_signal;
    if (getenv("PORTSHARE_UPGRADE_STATE"))
        return;
    snprintf(msg, sizeof(msg), "the program is %s: drain signal %s (%s; --drain-signal overrides)",
             k->name, k->sig_name, k->why);
    log_line(o, PS_LOG_INFO, "drain_signal", msg);
}

/* The supervisor holds slots x listeners sockets, more than the 1024 most
 * sessions and services start with: the soft open-file limit goes up to
 * the hard one (said once; an upgraded image finds it raised already), and
 * a configuration that still cannot fit is refused before anything is
 * bound.  Workers inherit the raised limit, as under LimitNOFILE=. */
static int nofile_setup(struct run_options *o)
{
    char msg[600];
    long from = 0, to = 0;
    int r = ps_sup_nofile_raise(&from, &to);

    if (r > 0) {
        snprintf(msg, sizeof(msg), "open-file limit raised from %ld to %ld (the hard limit)", from,
                 to);
        log_line(o, PS_LOG_INFO, "nofile", msg);
    } else if (r < 0) {
        snprintf(msg, sizeof(msg), "cannot raise the open-file limit from %ld: %s", from,
                 strerror(-r));
        log_line(o, PS_LOG_WARN, "nofile", msg);
    }
    if (ps_sup_nofile_check(&o->cfg, msg, sizeof(msg)) < 0)
        return ps_cli_fatal(PS_EXIT_SYSTEM, "%s", msg);
    return 0;
}

int run_supervisor(struct run_options *o)
{
    static char self[PATH_MAX];
    enum ps_sup_stage stage;
    char err[512];
    ssize_t n;
    int r;

    if (o->cfg.ready_mode == PS_READY_NOTIFY && o->ready_delay_given)
        return ps_cli_fatal(PS_EXIT_USAGE, "--ready-delay has no effect with --ready notify "
                                           "(READY=1 only); drop one of them");
    if (!getenv("PORTSHARE_UPGRADE_STATE") && check_program(o->cfg.argv[0]))
        return PS_EXIT_EXEC;
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        o->cfg.self_exe = self;
    }
    o->cfg.self_argv = ps_cli_argv;
    o->cfg.log = log_line;
    o->cfg.log_ctx = o;
    o->journal = ps_cli_stderr_is_journal();
    default_drain_signal(o);
    if (!getenv("PORTSHARE_UPGRADE_STATE") && nofile_setup(o))
        return PS_EXIT_SYSTEM;
    r = ps_sup_run(&o->cfg, err, sizeof(err), &stage);
    if (r == 0)
        return PS_EXIT_OK;
    switch (stage) {
    case PS_SUP_STAGE_BIND:
        return ps_cli_fatal(PS_EXIT_BIND, "%s", err);
    case PS_SUP_STAGE_EXEC:
        return ps_cli_fatal(PS_EXIT_EXEC, "%s", err);
    case PS_SUP_STAGE_CONFIG:
        return ps_cli_fatal(PS_EXIT_USAGE, "%s", err);
    case PS_SUP_STAGE_CONTROL:
        return ps_cli_fatal(PS_EXIT_CONTROL, "%s", err);
    default:
        return ps_cli_fatal(PS_EXIT_SYSTEM, "%s", err);
    }
}

int cmd_run(int argc, char **argv)
{
    struct run_options o;
    int i, r;

    run_options_init(&o);
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(run_usage, stdout);
            return PS_EXIT_OK;
        }
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        r = run_option_parse(&o, argc, argv, &i);
        if (r < 0)
            return PS_EXIT_USAGE;
        if (r == 0) {
            if (argv[i][0] == '-')
                return ps_cli_fatal(PS_EXIT_USAGE,
                                    "unknown option '%s' (see 'portshare run --help')", argv[i]);
            break; /* PROGRAM without "--" */
        }
    }
    if (i >= argc)
        return ps_cli_fatal(PS_EXIT_USAGE, "no PROGRAM given (usage: portshare run [OPTIONS] -- "
                                           "PROGRAM [ARGS...])");
    o.cfg.argv = argv + i;
    if (o.cfg.nspecs == 0 && !getenv("LISTEN_FDS") && !getenv("PORTSHARE_UPGRADE_STATE"))
        return ps_cli_fatal(PS_EXIT_USAGE, "nothing to listen on: give -l SPEC (or run under "
                                           "systemd socket activation)");
    return run_supervisor(&o);
}
