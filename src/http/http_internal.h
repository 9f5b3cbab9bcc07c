/*
 * http_internal.h - what the HTTP worker's modules share.
 *
 * Four modules, one direction of use:
 *   files.c        request path -> file under DIR: percent-decoding,
 *                  normalisation, confinement (openat2 RESOLVE_BENEATH),
 *                  Content-Type, and a small cache of open files and of
 *                  small files' bytes (revalidated at most once a second).
 *   src/proto/http_request.c  bytes -> request (our own strict RFC 9112
 *                  parser, shared with the supervisor's endpoints).
 *   response.c     request -> response (status line, headers, and what body
 *                  to send).  The parser and response.c use no sockets: unit
 *                  tests and the fuzzer drive exactly the code the server runs.
 *   server.c       the epoll loop: listeners, connections, timers, drain,
 *                  counters, access log.
 *
 * Choices a client can observe (documented for users in the README):
 *   - request target at most PS_HTTP_URL_MAX bytes (else 414), header
 *     fields and values at most PS_HTTP_HEADERS_MAX bytes in all (else 431);
 *   - GET/HEAD only (405 with "Allow: GET, HEAD"); unknown method tokens and
 *     malformed requests are 400; HTTP/1.1 without Host, two Host fields,
 *     a Host that is not uri-host[:port] (RFC 9110 7.2),
 *     a field name with anything but token characters (whitespace before
 *     the colon: RFC 9112 5.1), an obs-fold line, a control byte in a
 *     value, a CR without its LF, two Content-Length fields, and
 *     Content-Length with Transfer-Encoding are 400 (http_request.c says why);
 *   - "Expect: 100-continue" on an HTTP/1.1 request with a body gets
 *     "100 Continue" before the body is read;
 *   - a body on GET/HEAD with Content-Length up to PS_HTTP_BODY_MAX is read
 *     and ignored, a larger one is 413; Transfer-Encoding on a request
 *     (chunked bodies) is 411: send a Content-Length;
 *   - a single byte range is 206 (416 when unsatisfiable), several ranges
 *     are answered 200 with the whole file (allowed by RFC 9110 14.2), a
 *     non-zero suffix range of an empty file 200 with it (14.1.1);
 *     If-Range is honoured for an ETag equal to ours (strong comparison)
 *     or a date equal to Last-Modified;
 *   - files have a strong ETag (modification time to the nanosecond and
 *     size); If-None-Match (weak comparison, or "*") is 304 and then
 *     If-Modified-Since is not looked at (RFC 9110 13.2.2); an
 *     If-None-Match too long to keep is ignored (200);
 *   - a directory without its trailing slash is 301 to the slash form; a
 *     directory without index.html is 403; a symlink that leads out of DIR
 *     is 403; ".." above the root is 400;
 *   - after any 4xx caused by the request framing the connection is closed.
 */
#ifndef PS_HTTP_INTERNAL_H
#define PS_HTTP_INTERNAL_H

#include "core.h"
#include "http.h"
#include "http_request.h"

#include <stdint.h>
#include <sys/types.h>

#define PS_HTTP_MEM_MAX  16384 /* files up to this size are kept in memory */
#define PS_HTTP_RESP_MAX 32768 /* buffer ps__http_respond() needs at least */

/* ---- counters a worker shows on its page and reports to the supervisor -- */

/* Why a connection was closed: every close goes through one function
 * (server.c conn_close) that takes one of these and counts it. */
enum ps_http_close {
    PS_HTTP_CLOSE_DONE,        /* after a response that said Connection: close */
    PS_HTTP_CLOSE_CLIENT,      /* the client closed or reset it */
    PS_HTTP_CLOSE_TIMEOUT,     /* request head, keep-alive idle or blocked send */
    PS_HTTP_CLOSE_BAD_REQUEST, /* after a 4xx/5xx for the request's framing */
    PS_HTTP_CLOSE_DRAIN,       /* the worker is draining */
    PS_HTTP_CLOSE_LIMIT,       /* a client that kept sending after an error */
    PS_HTTP_CLOSE_ERROR,       /* a system call failed, out of memory */
    PS_HTTP_CLOSE_COUNT
};

/* "done", "client", ... : the names in X_PORTSHARE_CLOSES= */
extern const char *const ps__http_close_names[PS_HTTP_CLOSE_COUNT];

struct ps_http_counters {
    uint64_t accepted;                    /* connections accepted */
    uint64_t requests;                    /* responses produced */
    uint64_t active;                      /* connections open now */
    uint64_t closed[PS_HTTP_CLOSE_COUNT]; /* connections closed, by reason */
    uint64_t log_dropped;                 /* access log lines dropped (full disk...) */
};

/* ---- files.c ----------------------------------------------------- */

/* One file of the cache.  Reference counted: the cache holds one
 * reference, every response that sends from it holds one. */
struct ps_http_file {
    unsigned refs;
    int fd;     /* open read-only; -1 when data holds the bytes */
    char *data; /* the whole file when size <= PS_HTTP_MEM_MAX */
    off_t size;
    time_t mtime; /* seconds, for Last-Modified / If-Modified-Since */
    struct timespec mtim, ctim;
    dev_t dev;
    ino_t ino;
    uint64_t checked_ms; /* when it was last compared with the file system */
    char *key;           /* normalised path it was found by */
    size_t key_len;
    const char *type;       /* Content-Type */
    char last_modified[32]; /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    char etag[64];          /* strong: "mtime-nanoseconds-size" in hex, quoted */
    char head200[256];      /* Content-Type...Accept-Ranges lines of a 200 */
    size_t head200_len;
};

struct ps_http_files;

/*
 * Open DIR (must be a directory; -ENOTDIR otherwise) and an empty cache.
 * The cache keeps at most a fixed number of files (open descriptors and
 * up to PS_HTTP_MEM_MAX bytes each).
 */
int ps__http_files_open(const char *root, struct ps_http_files **out);

/* Close DIR and drop the cache's references (files still sending stay). */
void ps__http_files_close(struct ps_http_files *files);

/*
 * Decode a request target's path (the part before '?', starting with '/')
 * into a normalised path: percent-escapes decoded, "." and empty segments
 * dropped, ".." applied.  Keeps one trailing '/' when the decoded target
 * had one: an encoded slash (%2F) separates segments as a written one does
 * (as nginx and h2o read it), so "/a.txt%2f" is "/a.txt/", not "/a.txt".
 * Returns the length written to out (NUL-terminated), -EINVAL for a bad
 * escape, a NUL byte, ".." above the root or a path not starting with '/'
 * (all 400), -ENAMETOOLONG when it does not fit.  O(len).
 */
int ps__http_path_normalize(const char *raw, size_t len, char *out, size_t cap);

/*
 * Find the file a normalised path names, from the cache or the file
 * system, confined to DIR.  A path ending in '/' names the directory's
 * index.html.  Returns 0 and a referenced file (release with
 * ps__http_file_put), or -ENOENT (404), -EACCES (403: escapes DIR, not a
 * regular file, unreadable, or a directory without index.html), -EISDIR
 * (a directory named without its trailing slash: redirect), -EMFILE /
 * -ENFILE, or another -errno.  A cached file is compared with the file
 * system (one fstatat) when now_ms is 1000 ms or more past its last check,
 * so a changed file is never served stale for longer than a second.
 */
int ps__http_files_get(struct ps_http_files *files, const char *path, size_t len, uint64_t now_ms,
                       struct ps_http_file **out);

/* Drop one reference; the last one closes the file and frees its bytes. */
void ps__http_file_put(struct ps_http_file *file);

/* Tests only: 0 makes the cache use its fallback for kernels without
 * openat2 (openat + a real-path check). */
void ps__http_files_set_openat2(struct ps_http_files *files, int on);

/* Content-Type for a path's extension; "application/octet-stream" when
 * unknown. */
const char *ps__http_mime_type(const char *path, size_t len);

/* "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes + NUL) into out[30+]. */
void ps__http_format_date(time_t t, char *out);

/* Parse an HTTP date (IMF-fixdate, RFC 850 or asctime form); -EINVAL if
 * it is none of them. */
int ps__http_parse_date(const char *s, size_t len, time_t *out);

/* ---- response.c ----------------------------------------------- */

struct ps_http_ctx {
    struct ps_http_files *files; /* NULL: serve the embedded page */
    uint64_t now_ms;             /* monotonic clock, set by the caller */
    time_t now_sec;              /* wall clock, set by ps__http_ctx_tick */
    char date_line[48];          /* "Date: ...\r\n" for now_sec */
    size_t date_line_len;
    int draining; /* every response says Connection: close */
    /* for the embedded page */
    const struct ps_http_counters *counters;
    long pid, slot, generation; /* slot/generation -1 when unknown */
};

/* Set the clocks (monotonic ms; wall clock read here) and rebuild the
 * Date line when the second changed.  Call once per loop iteration. */
void ps__http_ctx_tick(struct ps_http_ctx *ctx, uint64_t now_ms);

struct ps_http_resp {
    int status;
    int keep_alive;            /* 0: close the connection after this one */
    size_t len;                /* bytes written into the caller's buffer */
    struct ps_http_file *file; /* non-NULL: then send file_len bytes of
                                * file->fd from file_off (release with
                                * ps__http_resp_done) */
    off_t file_off;
    size_t file_len;
    size_t body_len; /* body bytes sent, 0 for HEAD (the access log's) */
};

/*
 * Produce the response to the request in req (READY or ERROR): status
 * line, headers and, when small, the body are written to buf (cap must be
 * at least PS_HTTP_RESP_MAX; -ENOBUFS otherwise); a large body is left to
 * the caller as a file range to sendfile().  Returns 0.
 */
int ps__http_respond(struct ps_http_ctx *ctx, struct ps_http_req *req, char *buf, size_t cap,
                     struct ps_http_resp *resp);

/* Release what a response holds (the file reference). */
void ps__http_resp_done(struct ps_http_resp *resp);

/* ---- server.c -------------------------------------------------- */

/* sizeof(struct conn): what an idle keep-alive connection costs in user
 * memory (tests). */
size_t ps__http_conn_size(void);

#endif
