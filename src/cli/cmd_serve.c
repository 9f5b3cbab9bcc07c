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
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_LISTEN "127.0.0.1:8080"

static const char serve_usage[] =
    "usage: portshare serve [DIR] [OPTIONS]\n"
    "\n"
    "Serve the static files under DIR over HTTP/1.1 with supervised workers (one per\n"
    "CPU by default), on " DEFAULT_LISTEN " unless -l says otherwise.  Without DIR it serves\n"
    "a built-in page that shows which worker, slot and generation answered.\n"
    "\n"
    "HTTP options:\n"
    "      --access-log FILE|-      common log format access log (default: off)\n"
    "      --header-timeout SECONDS drop a client whose request headers are not\n"
    "                               complete after this long (default 10)\n"
    "      --idle-timeout SECONDS   close an idle keep-alive connection (default 5)\n"
    "      --max-connections N      per worker (default 10000)\n"
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

static int check_access_log(const char *path)
{
    int fd;

    if (!strcmp(path, "-"))
        return 0;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "--access-log %s: %s", path, strerror(errno));
    close(fd);
    return 0;
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
    if (k == 0 && check_access_log(value))
        return -1;
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
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(serve_usage, stdout);
            return PS_EXIT_OK;
        }
        r = run_option_parse(&o, argc, argv, &i);
        if (r == 0)
            r = http_option_parse(&h, argc, argv, &i);
        if (r < 0)
            return PS_EXIT_USAGE;
        if (r > 0)
            continue;
        if (argv[i][0] == '-')
            return ps_cli_fatal(PS_EXIT_USAGE, "unknown option '%s' (see 'portshare serve --help')",
                                argv[i]);
        if (dir)
            return ps_cli_fatal(PS_EXIT_USAGE, "more than one DIR given ('%s' and '%s')", dir,
                                argv[i]);
        dir = argv[i];
    }
    if (dir) {
        if (stat(dir, &st) < 0)
            return ps_cli_fatal(PS_EXIT_USAGE, "DIR %s: %s", dir, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return ps_cli_fatal(PS_EXIT_USAGE, "DIR %s is not a directory", dir);
        if (!realpath(dir, root))
            return ps_cli_fatal(PS_EXIT_USAGE, "DIR %s: %s", dir, strerror(errno));
    }
    if (o.cfg.nspecs == 0 && !getenv("LISTEN_FDS")) {
        char *def[] = {"-l", DEFAULT_LISTEN};
        int j = 0;
        if (run_option_parse(&o, 2, def, &j) <= 0)
            return PS_EXIT_USAGE;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return ps_cli_fatal(PS_EXIT_SYSTEM, "cannot find our own binary: %s", strerror(errno));
    self[n] = '\0';
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
