/*
 * known_programs.c - the drain signal of the servers people run, so that
 * `portshare run -- lighttpd ...` drains lighttpd gracefully without the
 * user having to know that lighttpd stops at once on SIGTERM.
 *
 * Only programs whose graceful stop is NOT SIGTERM need a row: SIGTERM is
 * the default for everything else (gunicorn, puma, uvicorn, node...).  Each
 * row says where the fact comes from; README.md has the same table for
 * users.  The program is found by the base name of PROGRAM, or, when
 * PROGRAM is an interpreter or launcher (`perl /usr/bin/starman`, `bundle
 * exec unicorn`, `env X=1 nginx`), of the first argument that is not an
 * option or an assignment.
 */
#include "known_programs.h"

#include <signal.h>
#include <string.h>
#include <strings.h>

static const struct known_program known[] = {
    /* lighttpd's doc/initscripts.txt: "SIGINT - shut down gracefully (serve
     * existing connections, then exit)"; SIGTERM terminates them */
    {"lighttpd", SIGINT, "INT", "its graceful stop; TERM would cut connections"},
    /* nginx's "Controlling nginx": QUIT is the graceful shutdown, TERM and
     * INT the fast one; Debian's nginx.service stops it with QUIT */
    {"nginx", SIGQUIT, "QUIT", "its graceful stop; TERM would cut connections"},
    /* starman(1p), SIGNALS: QUIT "gracefully shuts down the workers" */
    {"starman", SIGQUIT, "QUIT", "its graceful stop"},
    /* unicorn's SIGNALS: QUIT "graceful shutdown, waits for workers to
     * finish their current request"; TERM and INT quick shutdown */
    {"unicorn", SIGQUIT, "QUIT", "its graceful stop; TERM would cut requests"},
    {"unicorn_rails", SIGQUIT, "QUIT", "its graceful stop; TERM would cut requests"},
    /* Mojo::Server::Hypnotoad: QUIT "stop server gracefully" */
    {"hypnotoad", SIGQUIT, "QUIT", "its graceful stop"},
    /* php-fpm(8): SIGQUIT is the graceful stop, SIGTERM/SIGINT immediate */
    {"php-fpm", SIGQUIT, "QUIT", "its graceful stop"},
    /* HAProxy's management guide: SIGUSR1 is the soft stop (finish the
     * sessions, then exit); SIGTERM the hard stop */
    {"haproxy", SIGUSR1, "USR1", "its soft stop"},
    /* uWSGI's "Managing the uWSGI server": SIGTERM brutally *reloads* (it
     * would never exit), SIGINT stops it; there is no graceful stop signal */
    {"uwsgi", SIGINT, "INT", "TERM would only reload it (it has no graceful stop)"},
};

/* Interpreters and launchers: the program is one of their arguments. */
static const char *const launchers[] = {"env",     "exec", "perl",   "ruby",   "python",
                                        "python3", "node", "nodejs", "bundle", "plackup"};

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

static int is_launcher(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++)
        if (!strcmp(name, launchers[i]))
            return 1;
    /* python3.11, perl5.36 */
    return !strncmp(name, "python3.", 8) || !strncmp(name, "perl5.", 6);
}

/* "php-fpm8.2" is php-fpm: a versioned name is the name and digits/dots */
static int same_program(const char *name, const char *known_name)
{
    size_t n = strlen(known_name);

    if (strncasecmp(name, known_name, n)) /* plackup -s Starman */
        return 0;
    return name[n] == '\0' || strspn(name + n, "0123456789.") == strlen(name + n);
}

const struct known_program *ps_cli_known_program(char *const *argv)
{
    size_t i;
    int a;

    for (a = 0; argv[a]; a++) {
        const char *name = base_name(argv[a]);

        if (a > 0 && (argv[a][0] == '-' || strchr(argv[a], '=')))
            continue; /* an interpreter's option, env's NAME=VALUE */
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (same_program(name, known[i].name))
                return &known[i];
        if (!is_launcher(name))
            return NULL;
    }
    return NULL;
}
