/*
 * cli.h - what the subcommands of the portshare binary share: exit codes,
 * the one-line error format, and the entry point of each subcommand.
 */
#ifndef PS_CLI_H
#define PS_CLI_H

#include <stdio.h>

/* Exit codes, documented in README.md and in `portshare --help`. */
enum ps_exit {
    PS_EXIT_OK = 0,      /* done */
    PS_EXIT_FAILURE = 1, /* ran, and the operation failed (reload rolled back...) */
    PS_EXIT_USAGE = 2,   /* bad command line: unknown option, bad spec or value */
    PS_EXIT_BIND = 3,    /* a listen address could not be bound or listened on */
    PS_EXIT_CONTROL = 4, /* no supervisor answers at the control socket, or refused */
    PS_EXIT_EXEC = 5,    /* the worker program cannot be found or executed */
    PS_EXIT_SYSTEM = 6,  /* unexpected system error (fork, out of descriptors...) */
};

/* Print "portshare: fatal: MESSAGE" on stderr and return code. */
/* systemd sets JOURNAL_STREAM=DEV:INODE to the stream it connected stderr
 * to; while stderr still is that stream, journald reads a "<N>" prefix
 * (sd-daemon(3)) as the line's priority: 1 then. */
int ps_cli_stderr_is_journal(void);

int ps_cli_fatal(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "portshare: warning: MESSAGE" on stderr. */
void ps_cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The whole command line of this process, for the supervisor's in-place
 * upgrade, which replays it. */
extern char **ps_cli_argv;

/* Each subcommand: argv[0] is the subcommand's name. */
typedef int (*ps_cmd_fn)(int argc, char **argv);

int cmd_run(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_http_worker(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_control(int argc, char **argv); /* status, reload, scale, stop, upgrade, metrics */

#endif
