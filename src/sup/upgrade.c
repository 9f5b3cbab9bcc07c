/*
 * upgrade.c - re-executing the supervisor's own binary in place.
 *
 * The pid stays the same, so workers stay our children and a systemd
 * Type=notify unit never notices.  What must survive the exec survives as
 * descriptors without close-on-exec (listeners, the notify socket, the
 * control socket, the client that asked) plus a text description of the
 * rest in PORTSHARE_UPGRADE_STATE; the new image replays the same command
 * line, finds that variable and adopts instead of binding.  The blocked
 * signal mask and pending signals survive execve(2), so no SIGCHLD is lost.
 */
#include "sup_internal.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATE_MAGIC "portshare-upgrade-1"

/* Run the new binary with --version first: a missing, truncated or foreign
 * binary is refused while the old supervisor still runs. */
static int preflight(const char *exe, char *err, size_t errlen)
{
    int status = 0, i;
    pid_t pid = fork();

    if (pid < 0)
        return ps__neg_errno();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (null >= 0)
            dup2(null, 1);
        execl(exe, exe, "--version", (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 100; i++) { /* 5 s */
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        poll(NULL, 0, 50);
    }
    if (i == 100) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        ps__set_error(err, errlen, "%s --version did not answer within 5 s", exe);
        return -ETIMEDOUT;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ps__set_error(err, errlen,
                      "%s does not run (--version failed); still running the old binary", exe);
        return -ENOEXEC;
    }
    return 0;
}

static int set_cloexec(int fd, int on)
{
    int flags = fcntl(fd, F_GETFD);

    if (flags < 0)
        return ps__neg_errno();
    flags = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
    return fcntl(fd, F_SETFD, flags) < 0 ? ps__neg_errno() : 0;
}

static void carry_fds(struct ps_sup *sup, int carry)
{
    int g, i;

    for (g = 0; g < sup->ngroups; g++)
        for (i = 0; i < sup->groups[g].nfds; i++)
            set_cloexec(sup->groups[g].fds[i], !carry);
    set_cloexec(sup->notify_fd, !carry);
    set_cloexec(sup->control_fd, !carry);
    if (sup->upgrade_client >= 0)
        set_cloexec(sup->upgrade_client, !carry);
}

static char *serialize(struct ps_sup *sup)
{
    size_t cap = 4096 + (size_t)sup->ngroups * PS_SUP_MAX_WORKERS * 12 +
                 (size_t)(sup->nslots + sup->nworkers) * 160;
    char *buf = malloc(cap);
    size_t len = 0;
    int g, i;

#define OUT(...) len += (size_t)snprintf(buf + len, len < cap ? cap - len : 0, __VA_ARGS__)
    if (!buf)
        return NULL;
    OUT("%s\n", STATE_MAGIC);
    OUT("sup %u %u %d %d %llu %ld %d %d %d %s\n", sup->generation, sup->next_generation,
        sup->target, sup->nslots, (unsigned long long)sup->started_ms, (long)sup->started_wall,
        sup->notify_fd, sup->control_fd, sup->upgrade_client, sup->notify_addr);
    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        OUT("group %d %d %d", gr->shared, gr->inherited, gr->nfds);
        for (i = 0; i < gr->nfds; i++)
            OUT(" %d", gr->fds[i]);
        OUT(" %s\n", gr->spec.name[0] ? gr->spec.name : "-");
    }
    for (i = 0; i < sup->nslots; i++) {
        const struct ps_slot *sl = &sup->slots[i];
        OUT("slot %d %d %d %u %u %llu %llu %d\n", (int)sl->state, sl->current, sl->next,
            sl->restarts, sl->crashes, (unsigned long long)sl->backoff_until,
            (unsigned long long)sl->retire_since, sl->last_exit);
    }
    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        OUT("worker %d %ld %d %u %d %llu %llu %d %d\n", i, (long)w->pid, w->slot, w->generation,
            (int)w->state, (unsigned long long)w->started_ms, (unsigned long long)w->deadline_ms,
            w->killed, w->notified);
    }
#undef OUT
    if (len >= cap) {
        free(buf);
        return NULL;
    }
    return buf;
}

int ps__upgrade_exec(struct ps_sup *sup, char *err, size_t errlen)
{
    const char *exe = sup->cfg->self_exe;
    char *state;
    int r;

    if (!exe || !sup->cfg->self_argv) {
        ps__set_error(err, errlen, "this supervisor does not know its own binary");
        return -ENOEXEC;
    }
    r = preflight(exe, err, errlen);
    if (r < 0)
        return r;
    state = serialize(sup);
    if (!state) {
        ps__set_error(err, errlen, "cannot describe the supervisor's state");
        return -ENOMEM;
    }
    ps__sup_log(sup, PS_LOG_INFO, "upgrading", "re-executing %s in place", exe);
    carry_fds(sup, 1);
    setenv("PORTSHARE_UPGRADE_STATE", state, 1);
    if (sup->systemd_notify[0])
        setenv("NOTIFY_SOCKET", sup->systemd_notify, 1);
    free(state);
    execv(exe, sup->cfg->self_argv);
    /* still here: the old image goes on as if nothing happened */
    r = ps__neg_errno();
    unsetenv("PORTSHARE_UPGRADE_STATE");
    unsetenv("NOTIFY_SOCKET");
    carry_fds(sup, 0);
    ps__set_error(err, errlen, "cannot execute %s: %s; still running the old binary", exe,
                  ps_strerror(r));
    return r;
}

/* ---- the new image ----------------------------------------------------------- */

static int restore_group(struct ps_sup *sup, char *line, int *next_spec)
{
    struct ps_group *g;
    char *tok, *save = NULL;
    int i;

    if (sup->ngroups >= PS_SUP_MAX_LISTENERS)
        return -EINVAL;
    g = &sup->groups[sup->ngroups];
    memset(g, 0, sizeof(*g));
    tok = strtok_r(line, " ", &save); /* "group" */
    g->shared = atoi(strtok_r(NULL, " ", &save) ?: "0");
    g->inherited = atoi(strtok_r(NULL, " ", &save) ?: "0");
    g->nfds = atoi(strtok_r(NULL, " ", &save) ?: "0");
    if (g->nfds < 1 || g->nfds > PS_SUP_MAX_WORKERS)
        return -EINVAL;
    for (i = 0; i < g->nfds; i++) {
        tok = strtok_r(NULL, " ", &save);
        if (!tok)
            return -EINVAL;
        g->fds[i] = atoi(tok);
        set_cloexec(g->fds[i], 1);
    }
    tok = strtok_r(NULL, " \n", &save);
    if (!g->inherited && *next_spec < sup->cfg->nspecs)
        g->spec = sup->cfg->specs[(*next_spec)++];
    else if (tok && strcmp(tok, "-"))
        snprintf(g->spec.name, sizeof(g->spec.name), "%s", tok);
    /* the real address (a port 0 spec got its port at the first start) */
    g->spec.addrlen = sizeof(g->spec.addr);
    if (getsockname(g->fds[0], (struct sockaddr *)&g->spec.addr, &g->spec.addrlen) < 0)
        return ps__neg_errno();
    if (g->inherited) {
        int type = 0;
        socklen_t len = sizeof(type);
        getsockopt(g->fds[0], SOL_SOCKET, SO_TYPE, &type, &len);
        g->spec.proto = g->spec.addr.ss_family == AF_UNIX ? PS_PROTO_UNIX
                        : type == SOCK_DGRAM              ? PS_PROTO_UDP
                                                          : PS_PROTO_TCP;
        g->spec.reuse = PS_REUSE_SHARED;
    }
    if (g->spec.addr.ss_family == AF_INET)
        g->spec.port = ntohs(((struct sockaddr_in *)&g->spec.addr)->sin_port);
    else if (g->spec.addr.ss_family == AF_INET6)
        g->spec.port = ntohs(((struct sockaddr_in6 *)&g->spec.addr)->sin6_port);
    sup->ngroups++;
    return 0;
}

static int restore_line(struct ps_sup *sup, char *line, int *next_spec, int *slot_i)
{
    unsigned long long a, b;
    int st, idx, x, y;
    long pid;

    if (!strncmp(line, "sup ", 4)) {
        if (sscanf(line, "sup %u %u %d %d %llu %ld %d %d %d %107s", &sup->generation,
                   &sup->next_generation, &sup->target, &sup->nslots, &a, &sup->started_wall,
                   &sup->notify_fd, &sup->control_fd, &sup->upgrade_client, sup->notify_addr) != 10)
            return -EINVAL;
        sup->started_ms = a;
        return 0;
    }
    if (!strncmp(line, "group ", 6))
        return restore_group(sup, line, next_spec);
    if (!strncmp(line, "slot ", 5)) {
        struct ps_slot *sl;
        if (*slot_i >= PS_SUP_MAX_WORKERS)
            return -EINVAL;
        sl = &sup->slots[(*slot_i)++];
        if (sscanf(line, "slot %d %d %d %u %u %llu %llu %d", &st, &sl->current, &sl->next,
                   &sl->restarts, &sl->crashes, &a, &b, &sl->last_exit) != 8)
            return -EINVAL;
        sl->state = (enum ps_slot_state)st;
        sl->backoff_until = a;
        sl->retire_since = b;
        return 0;
    }
    if (!strncmp(line, "worker ", 7)) {
        struct ps_worker *w;
        if (sscanf(line, "worker %d %ld", &idx, &pid) != 2 || idx < 0 ||
            idx >= (int)PS__ARRAY_LEN(sup->workers))
            return -EINVAL;
        w = &sup->workers[idx];
        if (sscanf(line, "worker %*d %*d %d %u %d %llu %llu %d %d", &w->slot, &w->generation, &st,
                   &a, &b, &x, &y) != 7)
            return -EINVAL;
        w->pid = (pid_t)pid;
        w->state = (enum ps_worker_state)st;
        w->started_ms = a;
        w->deadline_ms = b;
        w->killed = x;
        w->notified = y;
        w->ping_ms = ps__now_ms(); /* the watchdog period starts anew */
        if (idx >= sup->nworkers)
            sup->nworkers = idx + 1;
        return 0;
    }
    return -EINVAL;
}

int ps__upgrade_restore(struct ps_sup *sup, const char *state, char *err, size_t errlen)
{
    char *copy = strdup(state), *line, *save = NULL;
    int next_spec = 0, slot_i = 0, r = 0;

    if (!copy)
        return -ENOMEM;
    line = strtok_r(copy, "\n", &save);
    if (!line || strcmp(line, STATE_MAGIC)) {
        ps__set_error(err, errlen, "upgrade state from an incompatible version");
        r = -EINVAL;
        goto out;
    }
    while ((line = strtok_r(NULL, "\n", &save))) {
        r = restore_line(sup, line, &next_spec, &slot_i);
        if (r < 0) {
            ps__set_error(err, errlen, "bad upgrade state line '%.60s'", line);
            goto out;
        }
    }
    set_cloexec(sup->notify_fd, 1);
    set_cloexec(sup->control_fd, 1);
    if (sup->upgrade_client >= 0) {
        char body[96];
        set_cloexec(sup->upgrade_client, 1);
        snprintf(body, sizeof(body), "upgraded in place: pid %ld", (long)getpid());
        ps__control_reply(sup->upgrade_client, 1, body);
        ps__close(sup->upgrade_client);
        sup->upgrade_client = -1;
    }
out:
    free(copy);
    return r;
}
