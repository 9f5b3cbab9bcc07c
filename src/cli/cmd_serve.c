/*
 * cmd_serve.c - `portshare serve [DIR] [OPTIONS]`: the supervisor running
 * this same binary's HTTP worker (`portshare http-worker`) in every slot.
 *
 * The worker is exec'd from our own path, so a reload or an upgrade after
 * the binary was replaced runs the new code.  Every `portshare run` option
 * applies, before or after DIR; the HTTP options are checked here (so a bad
 * value is one line at start, not a crash loop) and passed to the workers.
 */
#include "cli.h"
#include "run_options.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_USER   "nobody" /* the workers' user when started as root */

static const char serve_usage[] =
    "usage: portshare serve [DIR] [OPTIONS]\n"
    "\n"
    "Serve the static files under DIR over HTTP/1.1 with supervised workers (one per\n"
    "CPU by default), on " DEFAULT_LISTEN " unless -l says otherwise.  Without DIR it serves\n"
    "a built-in page that shows which worker, slot and generation answered.\n"
    "\n"
    "HTTP options:\n"
    "      --access-log FILE|-      common log format access log (default: off); opened by\n"
    "                               the supervisor, reopened on SIGUSR1 (logrotate)\n"
    "      --header-timeout SECONDS drop a client whose request headers are not\n"
    "                               complete after this long (default 10)\n"
    "      --idle-timeout SECONDS   close an idle keep-alive connection (default 5)\n"
    "      --max-connections N      per worker (default 10000)\n"
    "As root, the workers run as user " DEFAULT_USER " unless --user says otherwise.\n"
    "\n" RUN_OPTIONS_HELP;

struct http_options {
    char *argv[16]; /* forwarded to `portshare http-worker` */
    int argc;
};

static int positive_number(const char *text, double max)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    return !errno && end != text && !*end && v > 0 && v <= max;
}

/* The access log is opened here, by the supervisor, before any privilege
 * drop, and handed to every worker (as nginx's master does): a worker of
 * --user cannot open a file only root may write.  SIGUSR1 reopens it. */
struct access_log {
    const char *path; /* NULL: none, or "-" (stdout, inherited as is) */
    int fd;
    uid_t uid; /* the workers' user, who must be able to reopen it */
    gid_t gid;
    int chown; /* workers run as another user */
};

static struct access_log access_log = {.fd = -1};

static int open_access_log(struct access_log *l)
{
    int fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0)
        return -errno;
    if (l->fd < 0) {
        l->fd = fd;
        return 0;
    }
    /* same number: workers started from now on get the new file */
    if (dup3(fd, l->fd, O_CLOEXEC) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    close(fd);
    return 0;
}

/* SIGUSR1 in the supervisor (after logrotate moved the file away): open the
 * path again, creating it, and give it to the workers' user, since each
 * worker then reopens it by path itself (nginx does the same). */
static int reopen_access_log(void *ctx, char *err, size_t errlen)
{
    struct access_log *l = ctx;
    struct stat st;
    int r = open_access_log(l);

    if (r == 0 && l->chown && fstat(l->fd, &st) == 0 &&
        (st.st_uid != l->uid || st.st_gid != l->gid) && fchown(l->fd, l->uid, l->gid) < 0)
        r = -errno;
    if (r < 0)
        snprintf(err, errlen, "--access-log %s: cannot reopen: %s", l->path, strerror(-r));
    return r;
}

/* Returns 1 when argv[*i] was an HTTP option (copied into h), 0 when not,
 * -1 after printing an error. */
static int http_option_parse(struct http_options *h, int argc, char **argv, int *i)
{
    static const char *const names[] = {"--access-log", "--header-timeout", "--idle-timeout",
                                        "--max-connections"};
    const char *arg = argv[*i], *value = NULL;
    size_t k, n;

    for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        n = strlen(names[k]);
        if (!strncmp(arg, names[k], n) && arg[n] == '=')
            value = arg + n + 1;
        else if (!strcmp(arg, names[k]) && *i + 1 < argc)
            value = argv[++*i];
        else if (!strcmp(arg, names[k]))
            return ps_cli_fatal(PS_EXIT_USAGE, "option %s needs a value", names[k]), -1;
        if (value)
            break;
    }
    if (!value)
        return 0;
    if (k == 0)
        access_log.path = value;
    if ((k == 1 || k == 2) && !positive_number(value, 86400))
        return ps_cli_fatal(PS_EXIT_USAGE, "bad %s '%s' (seconds, more than 0)", names[k], value),
               -1;
    if (k == 3 && !positive_number(value, 1000000))
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --max-connections '%s' (1-1000000)", value), -1;
    if (h->argc + 2 >= (int)(sizeof(h->argv) / sizeof(h->argv[0])))
        return ps_cli_fatal(PS_EXIT_USAGE, "too many HTTP options"), -1;
    h->argv[h->argc++] = (char *)names[k];
    h->argv[h->argc++] = (char *)value;
    return 1;
}

/* As root without --user, the workers run as DEFAULT_USER, never as root
 * (nginx does the same); "--user root" says it on purpose. */
static int default_user(struct run_options *o)
{
    char *arg[] = {"--user", DEFAULT_USER};
    int j = 0;

    if (!getpwnam(DEFAULT_USER))
        return -ps_cli_fatal(PS_EXIT_USAGE,
                             "no user '" DEFAULT_USER "' to run the workers as (serve does not "
                             "run them as root): name one with --user USER");
    return run_option_parse(o, 2, arg, &j) == 1 ? 0 : -1;
}

/* What access(path, mode) says for the workers' user: 0 or an errno.
 * Asked of the kernel, in a child that takes their identity, so that every
 * directory on the way counts. */
static int access_as(const struct ps_sup_config *cfg, const char *path, int mode)
{
    int status;
    pid_t pid = fork();

    if (pid < 0)
        return errno;
    if (pid == 0) {
        if ((cfg->user[0] ? initgroups(cfg->user, cfg->gid) : setgroups(0, NULL)) < 0 ||
            setgid(cfg->gid) < 0 || setuid(cfg->uid) < 0 || access(path, mode) < 0)
            _exit(errno & 0xff);
        _exit(0);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : EIO;
}

static const char *user_name(const struct ps_sup_config *cfg, char *buf, size_t len)
{
    if (cfg->user[0])
        snprintf(buf, len, "user %s", cfg->user);
    else
        snprintf(buf, len, "uid %lu", (unsigned long)cfg->uid);
    return buf;
}

/* A DIR the workers cannot read is refused now, not served as 403s. */
static int check_dir_as(const struct ps_sup_config *cfg, const char *dir)
{
    char who[96];
    int err = access_as(cfg, dir, R_OK | X_OK);

    if (err == 0)
        return 0;
    return -ps_cli_fatal(PS_EXIT_USAGE,
                         "DIR %s cannot be read by %s, who runs the workers (%s): give %s read "
                         "and search permission, or choose the user with --user USER",
                         dir, user_name(cfg, who, sizeof(who)), strerror(err),
                         cfg->user[0] ? cfg->user : "it");
}

/* The workers reopen the access log by its path on SIGUSR1; say at once
 * when they could not reach it. */
static void check_log_dir_as(const struct ps_sup_config *cfg, const char *path)
{
    char dir[PATH_MAX], who[96], *slash;
    int err;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    err = access_as(cfg, dir, X_OK);
    if (err)
        ps_cli_warn("%s cannot reach %s (%s): on SIGUSR1 the workers keep writing to the old "
                    "access log",
                    user_name(cfg, who, sizeof(who)), dir, strerror(err));
}

/* The command line: run's options, ours, and at most one DIR.  Returns 0
 * to go on, -1 after printing the usage (-h: exit 0), or an exit code. */
static int serve_args(int argc, char **argv, struct run_options *o, struct http_options *h,
                      const char **dir)
{
    int i, r;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(serve_usage, stdout);
            return -1;
        }
        r = run_option_parse(o, argc, argv, &i);
        if (r == 0)
            r = http_option_parse(h, argc, argv, &i);
        if (r < 0)
            return PS_EXIT_USAGE;
        if (r > 0)
            continue;
        if (argv[i][0] == '-')
            return ps_cli_fatal(PS_EXIT_USAGE, "unknown option '%s' (see 'portshare serve --help')",
                                argv[i]);
        if (*dir)
            return ps_cli_fatal(PS_EXIT_USAGE, "more than one DIR given ('%s' and '%s')", *dir,
                                argv[i]);
        *dir = argv[i];
    }
    return 0;
}

/* The listen addresses: the default one, TCP only, deferred accept. */
static int serve_listeners(struct run_options *o)
{
    int i;

    if (o->cfg.nspecs == 0 && !getenv("LISTEN_FDS")) {
        char *def[] = {"-l", DEFAULT_LISTEN};
        int j = 0;
        if (run_option_parse(o, 2, def, &j) <= 0)
            return PS_EXIT_USAGE;
    }
    for (i = 0; i < o->cfg.nspecs; i++) {
        if (o->cfg.specs[i].proto == PS_PROTO_UDP)
            return ps_cli_fatal(PS_EXIT_USAGE, "serve speaks HTTP over TCP: cannot listen on %s",
                                o->cfg.specs[i].text);
        /* HTTP clients speak first: accept once the request is there (one
         * wakeup and one failed read fewer per connection), as nginx's
         * `listen ... deferred` and h2o do; ?defer=0 turns it off */
        if (o->cfg.specs[i].proto == PS_PROTO_TCP && o->cfg.specs[i].defer_accept < 0)
            o->cfg.specs[i].defer_accept = 1;
    }
    return 0;
}

/* --access-log FILE: opened here, handed to every worker, reopened on
 * SIGUSR1. */
static int serve_access_log(struct run_options *o)
{
    int r;

    if (!access_log.path || !strcmp(access_log.path, "-"))
        return 0;
    if ((r = open_access_log(&access_log)) < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "--access-log %s: %s", access_log.path, strerror(-r));
    access_log.uid = o->cfg.uid;
    access_log.gid = o->cfg.gid;
    access_log.chown = o->cfg.drop_privileges;
    if (o->cfg.drop_privileges)
        check_log_dir_as(&o->cfg, access_log.path);
    o->cfg.pass_fd = access_log.fd;
    o->cfg.pass_fd_env = "PORTSHARE_ACCESS_LOG_FD";
    o->cfg.on_reopen = reopen_access_log;
    o->cfg.reopen_ctx = &access_log;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    static char self[PATH_MAX], root[PATH_MAX];
    static char *worker_argv[24];
    struct http_options h = {.argc = 0};
    struct run_options o;
    const char *dir = NULL;
    struct stat st;
    ssize_t n;
    int i, k = 0, r;

    run_options_init(&o);
    r = serve_args(argc, argv, &o, &h, &dir);
    if (r)
        return r < 0 ? PS_EXIT_OK : r;
    if (dir) {
        if (stat(dir, &st) < 0)
            return ps_cli_fatal(PS_EXIT_USAGE, "DIR %s: %s", dir, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return ps_cli_fatal(PS_EXIT_USAGE, "DIR %s is not a directory", dir);
        if (!realpath(dir, root))
            return ps_cli_fatal(PS_EXIT_USAGE, "DIR %s: %s", dir, strerror(errno));
    }
    if ((r = serve_listeners(&o)) != 0)
        return r;
    if (geteuid() == 0 && !o.cfg.drop_privileges && default_user(&o) < 0)
        return PS_EXIT_USAGE;
    if (dir && o.cfg.drop_privileges && check_dir_as(&o.cfg, root) < 0)
        return PS_EXIT_USAGE;
    if ((r = serve_access_log(&o)) != 0)
        return r;
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return ps_cli_fatal(PS_EXIT_SYSTEM, "cannot find our own binary: %s", strerror(errno));
    self[n] = '\0';
    /* opened by the child before it drops privileges: a worker user that
     * cannot reach our directory (a build under /root) still starts */
    o.cfg.exec_path = self;
    worker_argv[k++] = self;
    worker_argv[k++] = "http-worker";
    for (i = 0; i < h.argc; i++)
        worker_argv[k++] = h.argv[i];
    if (dir)
        worker_argv[k++] = root;
    worker_argv[k] = NULL;
    o.cfg.argv = worker_argv;
    return run_supervisor(&o);
}
