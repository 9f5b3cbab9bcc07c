/*
 * http_request.h - our strict RFC 9112 request parser (http_request.c):
 * bytes in, HTTP/1.x requests out, no sockets, no allocation beyond the
 * request's own head.  A layer of its own below the HTTP worker
 * (src/http) and the supervisor's HTTP endpoints (src/sup), so that both
 * read requests the same strict way; it uses nothing but libc.
 */
#ifndef PS_HTTP_REQUEST_H
#define PS_HTTP_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define PS_HTTP_URL_MAX     8192  /* request target, bytes (414 above) */
#define PS_HTTP_HEADERS_MAX 16384 /* header names + values, bytes (431 above) */
#define PS_HTTP_BODY_MAX    65536 /* ignored GET/HEAD body, bytes (413 above) */

enum ps_http_state {
    PS_HTTP_NEED_MORE = 0, /* feed more bytes */
    PS_HTTP_READY,         /* a whole request: respond, then ps__http_req_next */
    PS_HTTP_ERROR,         /* a framing error: respond (status set), then close */
};

/* What a request holds while it is read and answered: allocated at its
 * first byte, grown with its target, freed by ps__http_req_release when
 * the connection waits for the next one.  An idle connection holds none. */
struct ps_http_head {
    unsigned char method_len;
    char method[16]; /* the method token, NUL-terminated once read */
    size_t name_len; /* of the header name being read (private) */
    char name[24];
    size_t tok_len; /* of the Connection token being read (private) */
    char tok[12];
    unsigned char lit_len; /* of Host's IP-literal being read (private) */
    char lit[48];          /* an IPv6 address is at most 45 bytes */
    size_t ims_len, range_len, if_range_len;
    char ims[64];    /* If-Modified-Since */
    char range[128]; /* Range; longer values are ignored */
    char if_range[64];
    size_t inm_len;
    char inm[128]; /* If-None-Match; longer values are ignored */
    size_t url_len, url_cap;
    char url[]; /* url_cap bytes, at most PS_HTTP_URL_MAX */
};

/* The parse state of one connection: small and fixed; what grows with a
 * request is in head. */
enum ps_http_method { PS_HTTP_OTHER, PS_HTTP_GET, PS_HTTP_HEAD };

/* What the head said about the connection and the body (req->flags). */
#define PS_HTTP_F_CLOSE              0x01 /* Connection: close */
#define PS_HTTP_F_KEEP_ALIVE         0x02 /* Connection: keep-alive */
#define PS_HTTP_F_CONNECTION_UPGRADE 0x04 /* Connection: upgrade */
#define PS_HTTP_F_UPGRADE            0x08 /* an Upgrade field */
#define PS_HTTP_F_CONTENT_LENGTH     0x10
#define PS_HTTP_F_TRANSFER_ENCODING  0x20

/* The parse state of one connection: small and fixed; what grows with a
 * request is in head. */
struct ps_http_req {
    enum ps_http_state state;
    int status;  /* the error status when state is PS_HTTP_ERROR */
    int started; /* the first byte of a request line has been seen */
    int has_host;
    int continue_due;         /* Expect: 100-continue and a body to come: the caller
                               * sends "100 Continue" before waiting for it, then
                               * clears this */
    unsigned char method;     /* enum ps_http_method, once the method is read */
    unsigned char http_major; /* the version, once read */
    unsigned char http_minor;
    unsigned char pstate;      /* where in the message the parser is (private) */
    unsigned char header;      /* which field's value is being read (private) */
    unsigned char vpos;        /* bytes of "HTTP/D.D" read (private) */
    unsigned char cl_state;    /* how far Content-Length's value is (private) */
    unsigned char blank;       /* empty lines before the request line (private) */
    unsigned char host_state;  /* how far Host's value is (private) */
    unsigned flags;            /* PS_HTTP_F_* */
    size_t expect;             /* bytes of "100-continue" matched (private) */
    size_t header_bytes;       /* of field names and values so far */
    size_t value_from;         /* where this copied field's value began (private) */
    uint64_t content_length;   /* the body's; while it is skipped, what is left */
    struct ps_http_head *head; /* NULL until the first byte, and after
                                * ps__http_req_release; also NULL in an
                                * ERROR state with status 503 (no memory) */
};

/* Start a connection's parser (holds no memory yet). */
void ps__http_req_init(struct ps_http_req *req);

/*
 * Feed bytes.  Returns how many were consumed; parsing stops right after
 * a complete request (state PS_HTTP_READY) so that the rest is handed back
 * for the next one, and at an error (PS_HTTP_ERROR).  Never called with
 * len == 0.  Allocates req->head when there is none (a few hundred bytes,
 * doubled while the target grows, up to PS_HTTP_URL_MAX); out of memory is
 * an ERROR with status 503.
 */
size_t ps__http_parse(struct ps_http_req *req, const char *buf, size_t len);

/* After the response to a READY request: get ready for the next one
 * (keeps req->head for it). */
void ps__http_req_next(struct ps_http_req *req);

/* Free req->head: for a connection waiting between requests (no request
 * started) and one that closes.  The parser state is kept.  O(1). */
void ps__http_req_release(struct ps_http_req *req);

/* Whether the connection may carry another request after this READY one
 * (RFC 9112 9.3: 1.1 unless "close", 1.0 only with "keep-alive"; never
 * after an upgrade request). */
int ps__http_keep_alive(const struct ps_http_req *req);

/* The request's method for the access log, "-" before one was read. */
const char *ps__http_method_name(const struct ps_http_req *req);

/* The reason phrase of a status this project answers with (RFC 9110 15),
 * "Internal Server Error" for any other.  Shared by the HTTP worker and the
 * supervisor's endpoints. */
const char *ps__http_reason(int status);

#endif
