/*
 * http.h - the built-in static HTTP/1.x worker (`portshare http-worker`),
 * as the CLI sees it: one call that serves inherited listeners until
 * drained.  The modules behind it share http_internal.h.
 */
#ifndef PS_HTTP_H
#define PS_HTTP_H

struct ps_http_server_config {
    const int *listen_fds; /* listening stream sockets (not closed by us
                            * before draining; never shut down) */
    int n_listen;
    const char *root;      /* DIR, or NULL for the embedded page */
    int header_timeout_ms; /* whole request head must arrive within */
    int idle_timeout_ms;   /* keep-alive connection without a request */
    int max_connections;
    int access_log_fd;             /* -1: no access log */
    long slot, generation;         /* for the page; -1 when unknown */
    const char *access_log_path;   /* reopened onto access_log_fd on SIGUSR1;
                                    * NULL: SIGUSR1 only flushes */
    int watchdog_ms;               /* > 0: send WATCHDOG=1 this often */
    void (*warn)(const char *msg); /* one line for the operator (stderr);
                                    * NULL: say nothing */
};

/*
 * Serve until SIGTERM or SIGINT, then drain: close the listeners, finish
 * the responses in flight, close idle connections, return 0 when none is
 * left.  Blocks SIGTERM, SIGINT and SIGUSR1 (reopen the access log) in the
 * calling thread and reads them from a signalfd; the caller should ignore
 * SIGPIPE.  Sends READY=1, STOPPING=1, WATCHDOG=1 from the event loop every
 * watchdog_ms (so a stuck loop is what a watchdog catches), "STATUS=..."
 * when the log cannot be reopened, and, at most once a second when they
 * changed, "X_PORTSHARE_STATS=accepted=N requests=N active=N" to
 * $NOTIFY_SOCKET.
 * Returns 0, or -errno when it could not start (root not a directory...).
 */
int ps_http_serve(const struct ps_http_server_config *cfg);

#endif
