/*
 * handoff - the giving side of socket activation, for tests: a tiny
 * launcher built only from the library's public API.
 *
 *   handoff SPEC... -- PROGRAM [ARGS...]
 *
 * Opens one listener per listen spec (ps_spec_parse + ps_listen_group_open,
 * so port 0 becomes a real port), prints "listen NAME ADDRESS" for each
 * ("-" when unnamed) so that a test learns the port, forks, and in the child
 * calls ps_activation_apply() and execs PROGRAM: the program finds its
 * sockets at 3.. with LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES, as under
 * systemd.  Then prints "pid N" (the program's pid), forwards SIGTERM,
 * SIGINT and SIGHUP to it and exits with its status (128+signal if killed).
 *
 * Exit codes of its own: 2 bad spec or usage, 3 cannot listen, 126 the
 * hand-off failed in the child, 127 PROGRAM could not be executed.
 */
#include "portshare.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SPECS 32

static volatile sig_atomic_t child = -1;

static void forward(int sig)
{
    if (child > 0)
        kill((pid_t)child, sig);
}

static int open_listener(const char *text, struct ps_spec *spec, int *fd)
{
    char err[256], addr[PS_SPEC_TEXT_MAX];
    pid_t owner;
    int r;

    r = ps_spec_parse(text, spec, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "handoff: fatal: bad listen spec '%s': %s\n", text, err);
        return 2;
    }
    r = ps_listen_group_open(spec, 1, fd, 0);
    ps_spec_format(spec, addr, sizeof(addr));
    if (r < 0) {
        char comm[64] = "";
        if (r == -EADDRINUSE && ps_port_owner(spec, &owner, comm, sizeof(comm)) == 0)
            fprintf(stderr, "handoff: fatal: unable to listen on %s: %s (held by pid %ld, %s)\n",
                    addr, ps_strerror(r), (long)owner, comm);
        else
            fprintf(stderr, "handoff: fatal: unable to listen on %s: %s\n", addr, ps_strerror(r));
        return 3;
    }
    printf("listen %s %s\n", spec->name[0] ? spec->name : "-", addr);
    return 0;
}

/* In the child: descriptors to 3.., the environment, then the program. */
static void exec_program(const int *fds, int n, const char *const *names, char **argv)
{
    int r;

    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    r = ps_activation_apply(fds, n, names);
    if (r < 0) {
        fprintf(stderr, "handoff: fatal: hand-off failed: %s\n", ps_strerror(r));
        _exit(126);
    }
    execvp(argv[0], argv);
    fprintf(stderr, "handoff: fatal: cannot execute %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int wait_child(pid_t pid)
{
    int status;

    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
    static struct ps_spec specs[MAX_SPECS];
    const char *names[MAX_SPECS];
    int fds[MAX_SPECS], n = 0, dash, i, r;
    struct sigaction sa;
    pid_t pid;

    for (dash = 1; dash < argc && strcmp(argv[dash], "--"); dash++)
        ;
    if (dash == 1 || dash >= argc - 1 || dash - 1 > MAX_SPECS) {
        fprintf(stderr, "usage: handoff SPEC... -- PROGRAM [ARGS...]  (at most %d specs)\n",
                MAX_SPECS);
        return 2;
    }
    for (i = 1; i < dash; i++, n++) {
        r = open_listener(argv[i], &specs[n], &fds[n]);
        if (r)
            return r;
        names[n] = specs[n].name;
    }
    fflush(stdout);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    pid = fork();
    if (pid < 0) {
        perror("handoff: fatal: fork");
        return 1;
    }
    if (pid == 0)
        exec_program(fds, n, names, argv + dash + 1);
    child = pid;
    /* the program owns the sockets now */
    for (i = 0; i < n; i++)
        close(fds[i]);
    printf("pid %ld\n", (long)pid);
    fflush(stdout);
    return wait_child(pid);
}
