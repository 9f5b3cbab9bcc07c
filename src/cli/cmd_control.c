/*
 * cmd_control.c - `portshare status|reload|scale N|stop|upgrade|metrics`: talk to a
 * running supervisor over its control socket.
 */
#include "cli.h"
#include "run_options.h"
#include "supervisor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char control_usage[] =
    "usage: portshare status [--json] [--name NAME | --control PATH]\n"
    "       portshare reload  [--json] [--timeout DUR] [--name NAME | --control PATH]\n"
    "       portshare scale N [--json] [--name NAME | --control PATH]\n"
    "       portshare stop    [--lameduck DUR] [--json] [--timeout DUR] [--name NAME | --control "
    "PATH]\n"
    "       portshare upgrade [--json] [--name NAME | --control PATH]\n"
    "       portshare metrics [--name NAME | --control PATH]\n"
    "\n"
    "  status   supervisor pid, generation, per slot the worker pid, state, uptime,\n"
    "           restarts and counters; per listener each socket's accept queue/backlog\n"
    "  reload   start a new generation on the same sockets; waits for the outcome and\n"
    "           exits 1 when it was rolled back (the old generation keeps serving)\n"
    "  scale N  run N workers (adding or retiring slots without losing connections)\n"
    "  stop     drain every worker and stop; waits until the supervisor is gone\n"
    "  upgrade  re-execute the supervisor's binary in place (same pid, workers kept)\n"
    "  metrics  the Prometheus text that --metrics serves on GET /metrics\n"
    "\n"
    "  --name NAME      the supervisor's --name (default: default)\n"
    "  --control PATH   its control socket, when it was started with --control\n"
    "  --timeout DUR    how long to wait for an answer (default: 10 min for reload and\n"
    "                   stop, 10s otherwise)\n"
    "  --json           status as JSON; for reload, scale, stop and upgrade the outcome\n"
    "                   as one object on stdout: ok, command, generation, workers, pid,\n"
    "                   message (the exit code says the same as without --json)\n"
    "  --lameduck DUR   stop: first report unhealthy to load balancers (agent \"drain\",\n"
    "                   /healthz 503) and keep serving for DUR, then drain\n"
    "exit codes: 0 done, 1 the supervisor reported failure, 2 usage, 4 no supervisor\n"
    "answers at the control socket (or it refused us).\n";

/* What the command line of a control subcommand asks. */
struct control_args {
    const char *verb, *name, *path_opt;
    unsigned timeout, lameduck;
    int have_lameduck, json, scale;
};

/* One argument at argv[*i]: 0, -1 for --help (printed), or an exit code
 * already said (ps_cli_fatal's). */
static int control_arg(struct control_args *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i];

    if (!strcmp(a, "-h") || !strcmp(a, "--help"))
        return fputs(control_usage, stdout), -1;
    if (!strcmp(a, "--json")) {
        c->json = 1;
    } else if (!strcmp(c->verb, "stop") &&
               (!strcmp(a, "--lameduck") || !strncmp(a, "--lameduck=", 11))) {
        const char *v = a[10] == '=' ? a + 11 : *i + 1 < argc ? argv[++*i] : NULL;
        if (!v || run_parse_duration(v, &c->lameduck) < 0)
            return ps_cli_fatal(PS_EXIT_USAGE, "bad --lameduck '%s' (like 5s, 500ms)", v ? v : "");
        c->have_lameduck = 1;
    } else if ((!strcmp(a, "--name") || !strcmp(a, "--control") || !strcmp(a, "--timeout")) &&
               *i + 1 < argc) {
        const char *v = argv[++*i];
        if (!strcmp(a, "--name"))
            c->name = v;
        else if (!strcmp(a, "--control"))
            c->path_opt = v;
        else if (run_parse_duration(v, &c->timeout) < 0 || c->timeout == 0)
            return ps_cli_fatal(PS_EXIT_USAGE, "bad --timeout '%s'", v);
    } else if (!strncmp(a, "--name=", 7)) {
        c->name = a + 7;
    } else if (!strncmp(a, "--control=", 10)) {
        c->path_opt = a + 10;
    } else if (!strcmp(c->verb, "scale") && c->scale < 0 && a[0] != '-') {
        char *end;
        long n = strtol(a, &end, 10);
        if (*end || n < 1 || n > PS_SUP_MAX_WORKERS)
            return ps_cli_fatal(PS_EXIT_USAGE, "bad worker count '%s' (1-%d)", a,
                                PS_SUP_MAX_WORKERS);
        c->scale = (int)n;
    } else {
        return ps_cli_fatal(PS_EXIT_USAGE, "unknown argument '%s' (see 'portshare %s --help')", a,
                            c->verb);
    }
    return 0;
}

/* The supervisor's answer as an exit code (and what is printed). */
static int control_report(const struct control_args *c, const char *path, int r, int ok,
                          char *reply)
{
    if (r == -ENOENT || r == -ECONNREFUSED)
        return ps_cli_fatal(PS_EXIT_CONTROL,
                            "no supervisor at %s (is it running? --name/--control?)", path);
    if (r == -EACCES || r == -EPERM)
        return ps_cli_fatal(PS_EXIT_CONTROL, "not allowed to use %s: %s", path, ps_strerror(r));
    if (r < 0)
        return ps_cli_fatal(PS_EXIT_CONTROL, "talking to the supervisor at %s: %s", path,
                            ps_strerror(r));
    if (!ok && c->json && reply[0] == '{') { /* the outcome, as asked */
        fputs(reply, stdout);
        return PS_EXIT_FAILURE;
    }
    if (!ok) {
        size_t n = strlen(reply);
        if (n && reply[n - 1] == '\n')
            reply[n - 1] = '\0';
        if (!strncmp(reply, "permission denied", 17))
            return ps_cli_fatal(PS_EXIT_CONTROL, "%s: %s", path, reply);
        return ps_cli_fatal(PS_EXIT_FAILURE, "%s: %s", c->verb, reply);
    }
    fputs(reply, stdout);
    return PS_EXIT_OK;
}

int cmd_control(int argc, char **argv)
{
    /* the largest status: 1024 slots with every notify field full, 32
     * listeners of 1024 sockets: ~3 MB (BSS: only what is used is paged in) */
    static char reply[8 * 1024 * 1024];
    struct control_args c = {.verb = argv[0], .name = "default", .scale = -1};
    char path[108], command[64];
    int i, ok = 0, r;

    for (i = 1; i < argc; i++)
        if ((r = control_arg(&c, argc, argv, &i)) != 0)
            return r < 0 ? PS_EXIT_OK : r;
    if (!strcmp(c.verb, "scale") && c.scale < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "scale needs a worker count: portshare scale N");
    if (c.path_opt) {
        if (strlen(c.path_opt) >= sizeof(path))
            return ps_cli_fatal(PS_EXIT_USAGE, "--control path too long");
        snprintf(path, sizeof(path), "%s", c.path_opt);
    } else if (ps_sup_control_locate(c.name, path, sizeof(path)) < 0) {
        return ps_cli_fatal(PS_EXIT_USAGE, "bad --name '%s'", c.name);
    }
    if (c.scale > 0)
        snprintf(command, sizeof(command), "scale %d%s", c.scale, c.json ? " json" : "");
    else if (c.have_lameduck)
        snprintf(command, sizeof(command), "stop lameduck %u%s", c.lameduck, c.json ? " json" : "");
    else
        snprintf(command, sizeof(command), "%s%s", c.verb, c.json ? " json" : "");
    if (!c.timeout)
        c.timeout = !strcmp(c.verb, "reload") || !strcmp(c.verb, "stop") ? 600000 : 10000;
    r = ps_sup_control_call(path, command, &ok, reply, sizeof(reply), c.timeout);
    return control_report(&c, path, r, ok, reply);
}
