/*
 * main.c - the portshare binary: dispatch to a subcommand.
 */
#include "cli.h"
#include "portshare.h"
#include "supervisor.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

static int cmd_version(int argc, char **argv);

struct subcommand {
    const char *name;
    ps_cmd_fn fn;
    const char *summary;
    int hidden; /* internal entry points, not listed in --help */
};

/* The options of every command at a glance; each `portshare COMMAND --help`
 * explains them. */
static const char synopsis[] =
    "  portshare run [-l SPEC]... [-w N] [--mode reuseport|shared] [--user USER[:GROUP]]\n"
    "                [--ready auto|notify|delay] [--ready-timeout DUR] [--ready-delay DUR]\n"
    "                [--drain-signal SIG] [--drain-timeout DUR] [--flow-linger DUR]\n"
    "                [--watch PATH]...\n"
    "                [--handoff systemd,einhorn,server-starter|all] [--name NAME]\n"
    "                [--control PATH] [--metrics HOST:PORT] [--agent HOST:PORT]\n"
    "                [--lameduck DUR] [--log-format text|json] -- PROGRAM [ARGS...]\n"
    "  portshare serve [DIR] [run options] [--access-log FILE|-] [--header-timeout S]\n"
    "                [--idle-timeout S] [--max-connections N]\n"
    "  portshare probe [--json] [--listeners K] [--connections M] [--queued Q]\n"
    "                [--no-netns] [--other-uid UID | --no-other-uid]\n"
    "  portshare status [--json] [--name NAME | --control PATH]\n"
    "  portshare reload|stop [--json] [--timeout DUR] [--name NAME | --control PATH]\n"
    "  portshare stop --lameduck DUR [--json] [--timeout DUR] [--name NAME | --control PATH]\n"
    "  portshare scale N | upgrade [--json] [--name NAME | --control PATH]\n"
    "  portshare metrics [--name NAME | --control PATH]\n"
    "  portshare --upgrade-state-format   (the upgrade state this binary reads; asked by\n"
    "                upgrade before it re-executes)\n"
    "  SPEC: [NAME=]tcp://HOST:PORT | HOST:PORT | :PORT | udp://HOST:PORT | unix:/path |\n"
    "        unix:@name, [IPv6]:PORT, options ?backlog=N&v6only=on|off&reuse=port|shared,\n"
    "        udp: &flows=N&flow_idle=DUR\n";

static const struct subcommand commands[] = {
    /* each subcommand adds its line here, in the order --help lists them */
    {"run", cmd_run, "supervise workers of PROGRAM on shared listeners", 0},
    {"serve", cmd_serve, "serve static files (or a built-in page) with supervised workers", 0},
    {"probe", cmd_probe, "measure what this kernel does with SO_REUSEADDR / SO_REUSEPORT", 0},
    {"status", cmd_control, "show a running supervisor's workers and listeners", 0},
    {"reload", cmd_control, "start a new generation of workers, without dropping a connection", 0},
    {"scale", cmd_control, "change the number of workers", 0},
    {"stop", cmd_control, "stop a running supervisor gracefully", 0},
    {"upgrade", cmd_control, "re-execute the supervisor's binary in place", 0},
    {"metrics", cmd_control, "print a running supervisor's Prometheus metrics", 0},
    {"version", cmd_version, "print the version", 0},
    {"http-worker", cmd_http_worker, "the HTTP worker process run by serve", 1},
};

char **ps_cli_argv;

int ps_cli_stderr_is_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (!env || sscanf(env, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int ps_cli_fatal(int code, const char *fmt, ...)
{
    va_list ap;

    fputs(ps_cli_stderr_is_journal() ? "<3>portshare: fatal: " : "portshare: fatal: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

void ps_cli_warn(const char *fmt, ...)
{
    va_list ap;

    fputs(ps_cli_stderr_is_journal() ? "<4>portshare: warning: " : "portshare: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("portshare %s\n", PS_VERSION);
    return PS_EXIT_OK;
}

static void usage(FILE *out)
{
    size_t i;

    fprintf(out, "usage: portshare COMMAND [OPTIONS] [ARGS]\n\n"
                 "Run several worker processes on one port: the kernel spreads connections\n"
                 "over them (SO_REUSEPORT), and workers can crash, be reloaded or upgraded\n"
                 "without a refused or reset connection.\n\ncommands:\n");
    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!commands[i].hidden)
            fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nusage:\n%s\n'portshare COMMAND --help' describes each command's options.\n\n",
            synopsis);
    fprintf(out, "exit codes:\n"
                 "  0  success\n"
                 "  1  the operation ran and failed (e.g. a reload was rolled back)\n"
                 "  2  bad command line: unknown option, bad listen spec or value\n"
                 "  3  a listen address could not be bound\n"
                 "  4  no supervisor answers at the control socket, or it refused us\n"
                 "  5  the worker program cannot be found or executed\n"
                 "  6  unexpected system error\n");
}

int main(int argc, char **argv)
{
    size_t i;

    ps_cli_argv = argv;
    if (argc < 2) {
        usage(stderr);
        return PS_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return PS_EXIT_OK;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("portshare %s\n", PS_VERSION);
        return PS_EXIT_OK;
    }
    if (!strcmp(argv[1], "--upgrade-state-format")) { /* asked by "upgrade" before it re-executes */
        printf("%s\n", ps_sup_upgrade_state_format());
        return PS_EXIT_OK;
    }
    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    return ps_cli_fatal(PS_EXIT_USAGE, "unknown command '%s' (see 'portshare --help')", argv[1]);
}
