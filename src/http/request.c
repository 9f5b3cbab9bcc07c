/*
 * request.c - bytes in, HTTP/1.x requests out; no sockets.
 *
 * Parsing is Debian's http_parser, driven by callbacks that copy the few
 * things we need (target, Host seen, If-Modified-Since, Range, If-Range)
 * into the request's head (allocated at its first byte, freed while the
 * connection is idle) and are paused at the end of each message:
 * whatever follows is the next pipelined request, handed back unparsed so
 * that responses go out in request order.  Limits are checked in the
 * callbacks, so nothing grows with the input.
 */
#include "http_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum header_kind { H_NONE, H_NAME, H_OTHER, H_HOST, H_IMS, H_RANGE, H_IF_RANGE, H_EXPECT, H_INM };

static const char continue_token[] = "100-continue";

/* ---- parser callbacks ------------------------------------------------------ */

static struct ps_http_req *req_of(http_parser *p)
{
    return (struct ps_http_req *)p->data;
}

/* Stop the parser with a status; the caller sees state PS_HTTP_ERROR. */
static int fail(struct ps_http_req *r, int status)
{
    r->status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    struct ps_http_req *r = req_of(p);

    r->started = 1;
    r->has_host = 0;
    r->expect = 0;
    r->continue_due = 0;
    r->header = H_NONE;
    r->header_bytes = 0;
    r->head->url_len = r->head->name_len = 0;
    r->head->ims_len = r->head->range_len = r->head->if_range_len = r->head->inm_len = 0;
    return 0;
}

/* Room for need bytes of target: double the head's buffer, at most
 * PS_HTTP_URL_MAX. */
static int grow_url(struct ps_http_req *r, size_t need)
{
    size_t cap = r->head->url_cap;
    struct ps_http_head *h;

    while (cap < need)
        cap = cap * 2 < PS_HTTP_URL_MAX ? cap * 2 : PS_HTTP_URL_MAX;
    h = realloc(r->head, sizeof(*h) + cap);
    if (!h)
        return fail(r, 503);
    h->url_cap = cap;
    r->head = h;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct ps_http_req *r = req_of(p);
    struct ps_http_head *h = r->head;

    if (len > PS_HTTP_URL_MAX - h->url_len)
        return fail(r, 414);
    if (h->url_len + len > h->url_cap && grow_url(r, h->url_len + len) < 0)
        return -1;
    h = r->head;
    memcpy(h->url + h->url_len, at, len);
    h->url_len += len;
    return 0;
}

static int count_header(struct ps_http_req *r, size_t len)
{
    r->header_bytes += len;
    return r->header_bytes > PS_HTTP_HEADERS_MAX ? fail(r, 431) : 0;
}

/* RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
 * "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct ps_http_req *r = req_of(p);
    struct ps_http_head *h = r->head;
    size_t room, i;

    if (count_header(r, len) < 0)
        return -1;
    /* http_parser (not built strict) lets a space into a name and then
     * still matches "Content-Length " as Content-Length: a framing header
     * a front end in the path may read differently.  RFC 9112 5.1: no
     * whitespace between name and colon, answer 400. */
    for (i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return fail(r, 400);
    if (r->header != H_NAME) { /* a new name begins */
        r->header = H_NAME;
        h->name_len = 0;
    }
    /* names longer than any we look for just stop matching */
    room = sizeof(h->name) - h->name_len;
    memcpy(h->name + h->name_len, at, len < room ? len : room);
    h->name_len += len < room ? len : room;
    return 0;
}

static enum header_kind classify(const struct ps_http_head *h)
{
    static const struct {
        const char *name;
        enum header_kind kind;
    } wanted[] = {
        {"host", H_HOST},         {"if-modified-since", H_IMS}, {"range", H_RANGE},
        {"if-range", H_IF_RANGE}, {"expect", H_EXPECT},         {"if-none-match", H_INM},
    };
    size_t i;

    for (i = 0; i < PS__ARRAY_LEN(wanted); i++)
        if (h->name_len == strlen(wanted[i].name) &&
            !strncasecmp(h->name, wanted[i].name, h->name_len))
            return wanted[i].kind;
    return H_OTHER;
}

/* Append a value piece; a value that does not fit is marked unusable
 * (length past the buffer) rather than cut. */
static void append_value(char *buf, size_t cap, size_t *len, const char *at, size_t n)
{
    if (*len > cap || n > cap - *len) {
        *len = cap + 1;
        return;
    }
    memcpy(buf + *len, at, n);
    *len += n;
}

/* Follow the Expect value a piece at a time: r->expect counts the bytes
 * of "100-continue" matched so far (trailing blanks allowed), and is past
 * its length once anything else was seen. */
static void match_expect(struct ps_http_req *r, const char *at, size_t len)
{
    size_t n = sizeof(continue_token) - 1, i;

    for (i = 0; i < len && r->expect <= n; i++) {
        char ch = at[i];
        if (r->expect < n && tolower((unsigned char)ch) == continue_token[r->expect])
            r->expect++;
        else if (r->expect != n || (ch != ' ' && ch != '\t'))
            r->expect = n + 1;
    }
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct ps_http_req *r = req_of(p);
    struct ps_http_head *h = r->head;

    if (count_header(r, len) < 0)
        return -1;
    if (r->header == H_NAME) { /* first piece of this value */
        r->header = classify(h);
        if (r->header == H_HOST && r->has_host)
            return fail(r, 400); /* RFC 9112 3.2: exactly one Host */
        if (r->header == H_HOST)
            r->has_host = 1;
        else if (r->header == H_EXPECT)
            r->expect = 0;
        else if (r->header == H_IMS)
            h->ims_len = 0;
        else if (r->header == H_RANGE)
            h->range_len = 0;
        else if (r->header == H_IF_RANGE)
            h->if_range_len = 0;
        else if (r->header == H_INM && h->inm_len > 0) /* several fields: one list */
            append_value(h->inm, sizeof(h->inm), &h->inm_len, ",", 1);
    }
    if (r->header == H_IMS)
        append_value(h->ims, sizeof(h->ims), &h->ims_len, at, len);
    else if (r->header == H_RANGE)
        append_value(h->range, sizeof(h->range), &h->range_len, at, len);
    else if (r->header == H_IF_RANGE)
        append_value(h->if_range, sizeof(h->if_range), &h->if_range_len, at, len);
    else if (r->header == H_INM)
        append_value(h->inm, sizeof(h->inm), &h->inm_len, at, len);
    else if (r->header == H_EXPECT)
        match_expect(r, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct ps_http_req *r = req_of(p);

    if (p->http_major != 1)
        return fail(r, 505);
    if (p->method != HTTP_GET && p->method != HTTP_HEAD)
        return fail(r, 405);
    if (p->http_minor >= 1 && !r->has_host)
        return fail(r, 400); /* RFC 9112 3.2: a 1.1 request must carry Host */
    if (p->uses_transfer_encoding || (p->flags & F_CHUNKED))
        return fail(r, 411); /* we read no chunked bodies: send a length */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > PS_HTTP_BODY_MAX)
        return fail(r, 413);
    /* RFC 9110 10.1.1: a client waiting for 100 (Continue) sends its body
     * only then; an HTTP/1.0 client's expectation is ignored */
    if (r->expect == sizeof(continue_token) - 1 && p->http_minor >= 1 &&
        (p->flags & F_CONTENTLENGTH) && p->content_length > 0)
        r->continue_due = 1;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct ps_http_req *r = req_of(p);

    r->state = PS_HTTP_READY;
    /* stop right after this message: the rest is the next request */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void ps__http_req_init(struct ps_http_req *req)
{
    memset(req, 0, sizeof(*req));
    http_parser_init(&req->parser, HTTP_REQUEST);
    req->parser.data = req;
}

/* Room for most targets at first, so that one allocation serves. */
#define URL_FIRST 192

size_t ps__http_parse(struct ps_http_req *req, const char *buf, size_t len)
{
    enum http_errno err;
    size_t n;

    if (!req->head) {
        req->head = malloc(sizeof(*req->head) + URL_FIRST);
        if (!req->head) {
            req->state = PS_HTTP_ERROR;
            req->status = 503;
            return len;
        }
        memset(req->head, 0, sizeof(*req->head));
        req->head->url_cap = URL_FIRST;
    }
    n = http_parser_execute(&req->parser, &settings, buf, len);
    err = HTTP_PARSER_ERRNO(&req->parser);

    if (req->state == PS_HTTP_READY || err == HPE_OK)
        return n;
    req->state = PS_HTTP_ERROR;
    if (!req->status)
        req->status = err == HPE_HEADER_OVERFLOW ? 431 : 400;
    return n;
}

void ps__http_req_next(struct ps_http_req *req)
{
    req->state = PS_HTTP_NEED_MORE;
    req->started = 0;
    req->status = 0;
    http_parser_pause(&req->parser, 0);
}

void ps__http_req_release(struct ps_http_req *req)
{
    free(req->head);
    req->head = NULL;
}
