/*
 * http_launch.c - a minimal stand-in for the supervisor, for the HTTP
 * worker's integration tests.
 *
 *   http_launch [--notify-log FILE] INFOFILE -- PROGRAM [ARGS...]
 *
 * Binds 127.0.0.1:0 (the kernel picks a free port, so tests never guess),
 * starts PROGRAM with that listener as fd 3 by the systemd protocol
 * (LISTEN_FDS=1, LISTEN_FDNAMES=http, PORTSHARE_SLOT=0,
 * PORTSHARE_GENERATION=1), writes "PORT PID" to INFOFILE (atomically, so a
 * test can poll for it), and keeps its own copy of the listener open the
 * whole time, as the supervisor does.  With --notify-log it also receives
 * the worker's sd_notify messages and appends each as one line (newlines
 * turned into spaces) to FILE.  SIGTERM/SIGINT are passed on to the
 * worker.  Exits with the worker's exit status (128+N when killed by N).
 */
#include "portshare.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t pending_signal;

static void on_signal(int sig)
{
    pending_signal = sig;
}

static int die(const char *what, int err)
{
    fprintf(stderr, "http_launch: %s: %s\n", what, strerror(err < 0 ? -err : err));
    return 1;
}

static void log_notify(int nfd, const char *log)
{
    struct ps_notify_msg msg;

    while (ps_notify_recv(nfd, &msg) == 0) {
        char line[sizeof(msg.text) + 32];
        size_t i;
        int fd, n;
        for (i = 0; i < msg.len; i++)
            if (msg.text[i] == '\n')
                msg.text[i] = ' ';
        n = snprintf(line, sizeof(line), "%ld %s\n", (long)msg.pid, msg.text);
        fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line, (size_t)n) < 0)
                perror("http_launch: notify log");
            close(fd);
        }
    }
}

static int write_info(const char *path, unsigned port, pid_t pid)
{
    char tmp[4096];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "%u %ld\n", port, (long)pid);
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        return -errno;
    return 0;
}

static void child(int lfd, const char *notify_path, char **argv)
{
    const char *names[] = {"http"};

    if (ps_activation_apply(&lfd, 1, names) < 0)
        _exit(126);
    if (notify_path)
        setenv("NOTIFY_SOCKET", notify_path, 1);
    setenv("PORTSHARE_SLOT", "0", 1);
    setenv("PORTSHARE_GENERATION", "1", 1);
    execvp(argv[0], argv);
    perror(argv[0]);
    _exit(127);
}

int main(int argc, char **argv)
{
    const char *notify_log = NULL, *info;
    char notify_path[4096], err[256];
    struct ps_spec spec;
    struct sigaction sa;
    int argi = 1, lfd, nfd = -1, status;
    pid_t pid;

    if (argi + 1 < argc && !strcmp(argv[argi], "--notify-log")) {
        notify_log = argv[argi + 1];
        argi += 2;
    }
    if (argi + 2 >= argc || strcmp(argv[argi + 1], "--")) {
        fprintf(stderr, "usage: http_launch [--notify-log FILE] INFOFILE -- PROGRAM [ARGS...]\n");
        return 2;
    }
    info = argv[argi];
    if (ps_spec_parse("127.0.0.1:0", &spec, err, sizeof(err)) < 0)
        return die(err, EINVAL);
    lfd = ps_listen_open(&spec, 0);
    if (lfd < 0)
        return die("listen on 127.0.0.1:0", lfd);
    {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(lfd, (struct sockaddr *)&ss, &len);
        spec.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(notify_path, sizeof(notify_path), "%s.notify", info);
    if (notify_log && (nfd = ps_notify_listen(notify_path)) < 0)
        return die("notify socket", nfd);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pid = fork();
    if (pid < 0)
        return die("fork", errno);
    if (pid == 0)
        child(lfd, notify_log ? notify_path : NULL, argv + argi + 2);
    if (write_info(info, spec.port, pid) < 0)
        return die(info, errno);
    for (;;) {
        struct pollfd p = {.fd = nfd, .events = POLLIN};
        poll(&p, nfd >= 0 ? 1 : 0, 50);
        if (pending_signal) {
            kill(pid, pending_signal);
            pending_signal = 0;
        }
        if (nfd >= 0)
            log_notify(nfd, notify_log);
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
    }
    if (nfd >= 0) {
        log_notify(nfd, notify_log);
        unlink(notify_path);
    }
    close(lfd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
