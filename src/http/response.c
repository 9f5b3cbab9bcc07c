/*
 * response.c - a parsed request in, the bytes of its response out; no
 * sockets.  Writes the status line and headers, and a small body, into the
 * caller's buffer (one send for the common case); a large body is returned
 * as a file range for sendfile().  The hot path is a cache hit: a few
 * memcpy of precomputed lines and the body.
 */
#include "http_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- writing a response ---------------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (n > o->cap - o->len)
        n = o->cap - o->len; /* cannot happen with cap >= PS_HTTP_RESP_MAX */
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

#define PUT_LITERAL(o, s) put((o), (s), sizeof(s) - 1)

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < o->cap - o->len ? (size_t)n : o->cap - o->len - 1;
}

/* Status line, Server and Date. */
static void put_start(struct out *o, const struct ps_http_ctx *ctx, int status)
{
    if (status == 200)
        PUT_LITERAL(o, "HTTP/1.1 200 OK\r\n");
    else
        putf(o, "HTTP/1.1 %d %s\r\n", status, ps__http_reason(status));
    PUT_LITERAL(o, "Server: portshare\r\n");
    put(o, ctx->date_line, ctx->date_line_len);
}

/* Connection header (when one is needed) and the blank line. */
static void put_end(struct out *o, const struct ps_http_req *req, int keep_alive)
{
    if (!keep_alive)
        PUT_LITERAL(o, "Connection: close\r\n\r\n");
    else if (req->http_minor == 0)
        PUT_LITERAL(o, "Connection: keep-alive\r\n\r\n"); /* 1.0 asked for it */
    else
        PUT_LITERAL(o, "\r\n");
}

static int is_head(const struct ps_http_req *req)
{
    return req->started && req->method == PS_HTTP_HEAD;
}

/* A short HTML body saying what went wrong; extra is one more header. */
static void simple_response(const struct ps_http_ctx *ctx, const struct ps_http_req *req,
                            int status, const char *extra, struct out *o, struct ps_http_resp *resp)
{
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "<!DOCTYPE html>\n<html><head><title>%d %s</title></head>"
                     "<body><h1>%d %s</h1><hr>portshare</body></html>\n",
                     status, ps__http_reason(status), status, ps__http_reason(status));

    resp->status = status;
    put_start(o, ctx, status);
    putf(o, "Content-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n", n);
    if (extra)
        put(o, extra, strlen(extra));
    put_end(o, req, resp->keep_alive);
    if (!is_head(req)) {
        put(o, body, (size_t)n);
        resp->body_len = (size_t)n;
    }
}

/* ---- the embedded page ----------------------------------------------------- */

static int page_body(const struct ps_http_ctx *ctx, char *buf, size_t cap)
{
    static const struct ps_http_counters none;
    const struct ps_http_counters *c = ctx->counters ? ctx->counters : &none;
    char slot[24] = "-", gen[24] = "-";
    int n;

    if (ctx->slot >= 0)
        snprintf(slot, sizeof(slot), "%ld", ctx->slot);
    if (ctx->generation >= 0)
        snprintf(gen, sizeof(gen), "%ld", ctx->generation);
    n = snprintf(buf, cap,
                 "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<title>portshare</title><style>body{font:16px/1.5 sans-serif;max-width:42em;"
                 "margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse}"
                 "td{padding:.2em 1em .2em 0}td+td{font-family:monospace}</style></head><body>\n"
                 "<h1>portshare is running</h1>\n"
                 "<p>This page was served by one worker process of <b>portshare</b>, a supervisor "
                 "that runs several workers on one port. Each worker holds its own listening "
                 "socket of an SO_REUSEPORT group, so the kernel spreads new connections over "
                 "the workers, and a worker can crash, be reloaded or upgraded without a single "
                 "refused or reset connection. Reload a few times: other workers answer.</p>\n"
                 "<table>\n<tr><td>worker pid</td><td>%ld</td></tr>\n"
                 "<tr><td>slot</td><td>%s</td></tr>\n<tr><td>generation</td><td>%s</td></tr>\n"
                 "<tr><td>connections accepted</td><td>%llu</td></tr>\n"
                 "<tr><td>requests answered</td><td>%llu</td></tr>\n"
                 "<tr><td>connections open</td><td>%llu</td></tr>\n"
                 "<tr><td>version</td><td>%s</td></tr>\n</table>\n"
                 "<p>Serve a directory instead: <code>portshare serve DIR</code>. "
                 "See the workers: <code>portshare status</code>.</p>\n</body></html>\n",
                 ctx->pid, slot, gen, (unsigned long long)c->accepted,
                 (unsigned long long)c->requests, (unsigned long long)c->active, PS_VERSION);
    return n < 0 || (size_t)n >= cap ? -ENOBUFS : n;
}

static void page_response(const struct ps_http_ctx *ctx, const struct ps_http_req *req,
                          struct out *o, struct ps_http_resp *resp)
{
    char body[4096];
    int n = page_body(ctx, body, sizeof(body));

    if (n < 0) {
        simple_response(ctx, req, 500, NULL, o, resp);
        return;
    }
    resp->status = 200;
    put_start(o, ctx, 200);
    putf(o,
         "Content-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
         "Cache-Control: no-store\r\n",
         n);
    put_end(o, req, resp->keep_alive);
    if (!is_head(req)) {
        put(o, body, (size_t)n);
        resp->body_len = (size_t)n;
    }
}

/* ---- files ----------------------------------------------------------------- */

static int parse_number(const char *s, size_t len, size_t *i, unsigned long long *v)
{
    size_t start = *i;

    *v = 0;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        if (*v > (~0ULL - 9) / 10)
            return -1;
        *v = *v * 10 + (unsigned)(s[*i] - '0');
        (*i)++;
    }
    return *i > start ? 0 : -1;
}

/*
 * Range header against a file of size bytes: 1 with [*first, *last] for
 * one satisfiable range, -1 when unsatisfiable (416), 0 to ignore it
 * (malformed, another unit, or several ranges: answered with the whole file).
 */
static int parse_range(const char *s, size_t len, off_t size, off_t *first, off_t *last)
{
    unsigned long long a, b;
    size_t i = 6;

    if (len < 7 || strncasecmp(s, "bytes=", 6) != 0 || memchr(s, ',', len))
        return 0;
    if (s[i] == '-') { /* suffix: the last b bytes */
        i++;
        if (parse_number(s, len, &i, &b) < 0 || i != len)
            return 0;
        if (b == 0)
            return -1;
        /* RFC 9110 14.1.1: on an empty representation a non-zero suffix is
         * the one satisfiable range, and "the entire representation is
         * used"; a 206 cannot name zero bytes (Content-Range first-last),
         * so the answer is the 200 with it, as nginx sends */
        if (size == 0)
            return 0;
        *first = (unsigned long long)size > b ? size - (off_t)b : 0;
        *last = size - 1;
        return 1;
    }
    if (parse_number(s, len, &i, &a) < 0 || i >= len || s[i++] != '-')
        return 0;
    if (i == len) {
        b = ~0ULL;
    } else if (parse_number(s, len, &i, &b) < 0 || i != len || b < a) {
        return 0;
    }
    if (a >= (unsigned long long)size)
        return -1;
    *first = (off_t)a;
    *last = b >= (unsigned long long)size ? size - 1 : (off_t)b;
    return 1;
}

/* Does an If-None-Match list name our tag?  Weak comparison (RFC 9110
 * 8.8.3.2: "W/" ignored on both sides), "*" matches any file.  A list we
 * cannot read matches nothing: the full response is always safe. */
static int etag_listed(const char *v, size_t len, const char *etag)
{
    size_t i = 0, n = strlen(etag), end;

    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        if (i == len)
            break;
        if (v[i] == '*')
            return 1;
        if (len - i >= 2 && v[i] == 'W' && v[i + 1] == '/')
            i += 2;
        if (i == len || v[i] != '"')
            return 0;
        for (end = i + 1; end < len && v[end] != '"'; end++)
            ;
        if (end == len)
            return 0;
        if (end + 1 - i == n && !memcmp(v + i, etag, n))
            return 1;
        i = end + 1;
    }
    return 0;
}

/* RFC 9110 13.2.2: If-None-Match when present (If-Modified-Since is then
 * not looked at), else If-Modified-Since.  A date in the future says the
 * client's clock is off, not that it has the file: ignored (13.1.3). */
static int not_modified(const struct ps_http_ctx *ctx, const struct ps_http_req *req,
                        const struct ps_http_file *file)
{
    const struct ps_http_head *h = req->head;
    time_t since;

    if (h->inm_len > 0)
        return h->inm_len <= sizeof(h->inm) && etag_listed(h->inm, h->inm_len, file->etag);
    return h->ims_len > 0 && h->ims_len <= sizeof(h->ims) &&
           ps__http_parse_date(h->ims, h->ims_len, &since) == 0 && file->mtime <= since &&
           since <= ctx->now_sec;
}

/* If-Range keeps the range only while it names this very file: our ETag
 * (strong comparison: a weak tag never matches) or its Last-Modified. */
static int if_range_holds(const struct ps_http_head *h, const struct ps_http_file *file)
{
    time_t t;

    if (h->if_range_len == 0)
        return 1;
    if (h->if_range_len > sizeof(h->if_range))
        return 0;
    if (h->if_range[0] == '"' || h->if_range[0] == 'W')
        return h->if_range_len == strlen(file->etag) &&
               !memcmp(h->if_range, file->etag, h->if_range_len);
    return ps__http_parse_date(h->if_range, h->if_range_len, &t) == 0 && t == file->mtime;
}

/* The Range to honour: 0 none, 1 [first,last], -1 unsatisfiable. */
static int wanted_range(const struct ps_http_req *req, const struct ps_http_file *file,
                        off_t *first, off_t *last)
{
    const struct ps_http_head *h = req->head;

    if (h->range_len == 0 || h->range_len > sizeof(h->range) || !if_range_holds(h, file))
        return 0;
    return parse_range(h->range, h->range_len, file->size, first, last);
}

/* Body bytes [first, last]: copied when in memory, else left to sendfile. */
static void put_body(struct out *o, struct ps_http_file *file, off_t first, off_t last,
                     struct ps_http_resp *resp)
{
    size_t n = (size_t)(last - first + 1);

    resp->body_len = n;
    if (file->data) {
        put(o, file->data + first, n);
        return;
    }
    file->refs++;
    resp->file = file;
    resp->file_off = first;
    resp->file_len = n;
}

static void file_response(const struct ps_http_ctx *ctx, const struct ps_http_req *req,
                          struct ps_http_file *file, struct out *o, struct ps_http_resp *resp)
{
    off_t first = 0, last = file->size - 1;
    int range;

    if (not_modified(ctx, req, file)) {
        resp->status = 304;
        put_start(o, ctx, 304);
        putf(o, "Last-Modified: %s\r\nETag: %s\r\n", file->last_modified, file->etag);
        put_end(o, req, resp->keep_alive);
        return;
    }
    range = wanted_range(req, file, &first, &last);
    if (range < 0) {
        char extra[64];
        snprintf(extra, sizeof(extra), "Content-Range: bytes */%lld\r\n", (long long)file->size);
        simple_response(ctx, req, 416, extra, o, resp);
        return;
    }
    resp->status = range ? 206 : 200;
    put_start(o, ctx, resp->status);
    if (range)
        putf(o,
             "Content-Type: %s\r\nContent-Length: %lld\r\nContent-Range: bytes %lld-%lld/%lld\r\n"
             "Last-Modified: %s\r\nETag: %s\r\nAccept-Ranges: bytes\r\n",
             file->type, (long long)(last - first + 1), (long long)first, (long long)last,
             (long long)file->size, file->last_modified, file->etag);
    else
        put(o, file->head200, file->head200_len);
    put_end(o, req, resp->keep_alive);
    if (file->size > 0 && !is_head(req))
        put_body(o, file, first, last, resp);
}

/* Percent-encode a normalised path for a Location header. */
static int encode_path(const char *path, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (o + 4 > cap)
            return -ENAMETOOLONG;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~/!$&'()*+,;=:@", c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return (int)o;
}

/* 301 from "/dir" to "/dir/", keeping a printable query string. */
static void redirect_response(const struct ps_http_ctx *ctx, const struct ps_http_req *req,
                              const char *path, size_t len, const char *query, size_t qlen,
                              struct out *o, struct ps_http_resp *resp)
{
    char location[PS_HTTP_URL_MAX + 64];
    size_t i;
    int n = encode_path(path, len, location + 10, sizeof(location) - 16 - qlen);

    if (n < 0) {
        simple_response(ctx, req, 414, NULL, o, resp);
        return;
    }
    memcpy(location, "Location: ", 10);
    n += 10;
    location[n++] = '/';
    for (i = 0; i < qlen && query[i] > ' ' && query[i] < 0x7f; i++)
        ;
    if (qlen > 0 && i == qlen) {
        memcpy(location + n, query, qlen);
        n += (int)qlen;
    }
    memcpy(location + n, "\r\n", 3);
    simple_response(ctx, req, 301, location, o, resp);
}

/* Split the target into path and query; absolute-form is reduced to its
 * path (an empty one is "/", RFC 9110 4.2.3).  -1 for a target that has
 * no path ("*", authority-form, a URI without "//authority"). */
static int split_target(const struct ps_http_req *req, const char **path, size_t *plen,
                        const char **query, size_t *qlen)
{
    const char *u = req->head->url, *q;
    size_t len = req->head->url_len;

    if (len > 0 && u[0] != '/') {
        /* scheme "://" authority, then path-abempty: http_request.c checked the
         * scheme's characters */
        const char *sep = memchr(u, ':', len), *end = u + len;
        if (!sep || end - sep < 3 || sep[1] != '/' || sep[2] != '/')
            return -1;
        for (q = sep + 3; q < end && *q != '/' && *q != '?' && *q != '#'; q++)
            ;
        if (q == end || *q != '/') {
            *path = "/";
            *plen = 1;
            *query = q < end && *q == '?' ? q : end;
            *qlen = (size_t)(end - *query);
            if (*qlen && memchr(*query, '#', *qlen))
                *qlen = (size_t)((const char *)memchr(*query, '#', *qlen) - *query);
            return 0;
        }
        len = (size_t)(end - q);
        u = q;
    }
    if (len == 0)
        return -1;
    q = memchr(u, '?', len);
    *path = u;
    *plen = q ? (size_t)(q - u) : len;
    *query = q ? q : u + len;
    *qlen = q ? len - *plen : 0;
    q = memchr(u, '#', *plen);
    if (q)
        *plen = (size_t)(q - u);
    if (*qlen && memchr(*query, '#', *qlen))
        *qlen = (size_t)((const char *)memchr(*query, '#', *qlen) - *query);
    return 0;
}

static int status_of_error(int r)
{
    switch (-r) {
    case ENOENT:
        return 404;
    case EACCES:
        return 403;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        return 503;
    default:
        return 500;
    }
}

static void target_response(struct ps_http_ctx *ctx, const struct ps_http_req *req, struct out *o,
                            struct ps_http_resp *resp)
{
    char path[4096];
    const char *raw, *query;
    size_t raw_len, qlen;
    struct ps_http_file *file;
    int n, r;

    if (split_target(req, &raw, &raw_len, &query, &qlen) < 0) {
        simple_response(ctx, req, 400, NULL, o, resp);
        return;
    }
    n = ps__http_path_normalize(raw, raw_len, path, sizeof(path));
    if (n < 0) {
        simple_response(ctx, req, n == -ENAMETOOLONG ? 414 : 400, NULL, o, resp);
        return;
    }
    if (!ctx->files) {
        if (!strcmp(path, "/") || !strcmp(path, "/index.html"))
            page_response(ctx, req, o, resp);
        else
            simple_response(ctx, req, 404, NULL, o, resp);
        return;
    }
    r = ps__http_files_get(ctx->files, path, (size_t)n, ctx->now_ms, &file);
    if (r == -EISDIR) {
        redirect_response(ctx, req, path, (size_t)n, query, qlen, o, resp);
    } else if (r < 0) {
        simple_response(ctx, req, status_of_error(r), NULL, o, resp);
    } else {
        file_response(ctx, req, file, o, resp);
        ps__http_file_put(file);
    }
}

int ps__http_respond(struct ps_http_ctx *ctx, struct ps_http_req *req, char *buf, size_t cap,
                     struct ps_http_resp *resp)
{
    struct out o = {buf, 0, cap};

    memset(resp, 0, sizeof(*resp));
    if (cap < PS_HTTP_RESP_MAX)
        return -ENOBUFS;
    if (req->state == PS_HTTP_ERROR) {
        simple_response(ctx, req, req->status, req->status == 405 ? "Allow: GET, HEAD\r\n" : NULL,
                        &o, resp);
    } else {
        resp->keep_alive = !ctx->draining && ps__http_keep_alive(req);
        target_response(ctx, req, &o, resp);
    }
    resp->len = o.len;
    return 0;
}

void ps__http_resp_done(struct ps_http_resp *resp)
{
    ps__http_file_put(resp->file);
    resp->file = NULL;
}

void ps__http_ctx_tick(struct ps_http_ctx *ctx, uint64_t now_ms)
{
    struct timespec ts;
    char date[32];

    ctx->now_ms = now_ms;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == ctx->now_sec && ctx->date_line_len)
        return;
    ctx->now_sec = ts.tv_sec;
    ps__http_format_date(ts.tv_sec, date);
    ctx->date_line_len =
        (size_t)snprintf(ctx->date_line, sizeof(ctx->date_line), "Date: %s\r\n", date);
}
