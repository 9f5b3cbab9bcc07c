/*
 * test_http.c - the HTTP worker's request -> response path without sockets
 * (src/proto/http_request.c, response.c, files.c): status codes, headers, ranges, conditional
 * requests, pipelining, limits, path confinement (openat2 and the
 * fallback), cache revalidation, and a parse right before an unmapped page.
 */
#include "ps_test.h"

#include "http_internal.h"

#include <errno.h>
#include <ftw.h>
#include <sys/mman.h>
#include <time.h>
#include <utime.h>

static char top[64]; /* temp dir: secret file outside www, and www/ */
static char www[96];
static struct ps_http_ctx ctx;
static struct ps_http_req req;
static char out[PS_HTTP_RESP_MAX * 2];

struct result {
    int status, keep_alive;
    char head[4096];
    char body[200000];
    size_t body_len;
    off_t file_off; /* where a sendfile body would start; -1 for memory */
};
static struct result res[8];

static void write_file(const char *name, const void *data, size_t len)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", www, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    static char big[100000];
    char path[256];
    size_t i;

    (void)state;
    make_temp_dir(top, sizeof(top));
    snprintf(www, sizeof(www), "%s/www", top);
    assert_int_equal(mkdir(www, 0755), 0);
    snprintf(path, sizeof(path), "%s/secret", top);
    {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs("SECRET\n", f);
        fclose(f);
    }
    write_file("a.txt", "hello", 5);
    write_file("index.html", "<h1>root</h1>\n", 14);
    write_file("empty.bin", "", 0);
    for (i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    write_file("big.bin", big, sizeof(big));
    snprintf(path, sizeof(path), "%s/sub", www);
    mkdir(path, 0755);
    write_file("sub/index.html", "sub\n", 4);
    write_file("sub/sp ace.txt", "space", 5);
    snprintf(path, sizeof(path), "%s/noindex", www);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/out", www);
    assert_int_equal(symlink("../secret", path), 0);
    snprintf(path, sizeof(path), "%s/abs", www);
    {
        char target[256];
        snprintf(target, sizeof(target), "%s/secret", top);
        assert_int_equal(symlink(target, path), 0);
    }
    snprintf(path, sizeof(path), "%s/in", www);
    assert_int_equal(symlink("a.txt", path), 0);
    snprintf(path, sizeof(path), "%s/updir", www);
    assert_int_equal(symlink("..", path), 0);
    snprintf(path, sizeof(path), "%s/fifo", www);
    assert_int_equal(mkfifo(path, 0644), 0);

    memset(&ctx, 0, sizeof(ctx));
    assert_int_equal(ps__http_files_open(www, &ctx.files), 0);
    ctx.slot = ctx.generation = -1;
    ps__http_ctx_tick(&ctx, 1000000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ps__http_files_close(ctx.files);
    nftw(top, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Capture one response: split head and body, read a file body. */
static void capture(const struct ps_http_resp *resp, struct result *r)
{
    const char *end = memmem(out, resp->len, "\r\n\r\n", 4);
    size_t head_len;

    assert_non_null(end);
    head_len = (size_t)(end - out) + 4;
    assert_true(head_len < sizeof(r->head));
    memcpy(r->head, out, head_len);
    r->head[head_len] = '\0';
    r->status = resp->status;
    r->keep_alive = resp->keep_alive;
    r->body_len = resp->len - head_len;
    memcpy(r->body, out + head_len, r->body_len);
    r->body[r->body_len] = '\0';
    r->file_off = -1;
    if (resp->file) {
        assert_int_equal(r->body_len, 0);
        assert_true(resp->file_len < sizeof(r->body));
        assert_int_equal(pread(resp->file->fd, r->body, resp->file_len, resp->file_off),
                         (ssize_t)resp->file_len);
        r->body_len = resp->file_len;
        r->body[r->body_len] = '\0';
        r->file_off = resp->file_off;
    }
    if (r->body_len) /* what the access log counts is what was sent */
        assert_int_equal(r->body_len, resp->body_len);
}

/*
 * Feed raw to a fresh connection, step bytes at a time (0: all at once),
 * answering each request as the server does.  Returns how many responses;
 * stops after one that closes the connection.
 */
static int exchange_step(const char *raw, size_t len, size_t step)
{
    size_t off = 0;
    int n = 0;

    ps__http_req_init(&req);
    while (n < (int)PS__ARRAY_LEN(res)) {
        struct ps_http_resp resp;
        if (req.state == PS_HTTP_NEED_MORE) {
            size_t chunk = step && step < len - off ? step : len - off;
            if (chunk == 0)
                break;
            off += ps__http_parse(&req, raw + off, chunk);
            if (req.state == PS_HTTP_NEED_MORE)
                continue;
        }
        assert_int_equal(ps__http_respond(&ctx, &req, out, sizeof(out), &resp), 0);
        capture(&resp, &res[n++]);
        ps__http_resp_done(&resp);
        if (!resp.keep_alive)
            break;
        ps__http_req_next(&req);
    }
    ps__http_req_release(&req);
    return n;
}

static int exchange(const char *raw)
{
    return exchange_step(raw, strlen(raw), 0);
}

/* The value of a header in a captured head, or NULL. */
static const char *header(const struct result *r, const char *name)
{
    static char value[512];
    char pattern[80];
    const char *p, *e;

    snprintf(pattern, sizeof(pattern), "\r\n%s: ", name);
    p = strstr(r->head, pattern);
    if (!p)
        return NULL;
    p += strlen(pattern);
    e = strstr(p, "\r\n");
    snprintf(value, sizeof(value), "%.*s", (int)(e - p), p);
    return value;
}

static void expect(const char *raw, int status)
{
    assert_int_equal(exchange(raw), 1);
    if (res[0].status != status)
        fail_msg("%s -> %d, expected %d", raw, res[0].status, status);
    assert_int_equal(atoi(res[0].head + 9), status); /* the status line agrees */
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static void test_get_file(void **state)
{
    (void)state;
    expect(GET("/a.txt"), 200);
    assert_true(!strncmp(res[0].head, "HTTP/1.1 200 OK\r\n", 17));
    assert_string_equal(header(&res[0], "Server"), "portshare");
    assert_string_equal(header(&res[0], "Content-Length"), "5");
    assert_string_equal(header(&res[0], "Content-Type"), "text/plain; charset=utf-8");
    assert_non_null(header(&res[0], "Last-Modified"));
    assert_non_null(header(&res[0], "Date"));
    assert_null(header(&res[0], "Connection"));
    assert_int_equal(res[0].body_len, 5);
    assert_memory_equal(res[0].body, "hello", 5);
    assert_true(res[0].keep_alive);

    expect(GET("/"), 200);
    assert_string_equal(res[0].body, "<h1>root</h1>\n");
    expect(GET("/sub/sp%20ace.txt"), 200);
    assert_memory_equal(res[0].body, "space", 5);
    expect(GET("/empty.bin"), 200);
    assert_string_equal(header(&res[0], "Content-Length"), "0");
    assert_int_equal(res[0].body_len, 0);
    expect("GET http://example.com/a.txt?q=1 HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    assert_memory_equal(res[0].body, "hello", 5);
}

static void test_big_file_is_sendfile(void **state)
{
    (void)state;
    expect(GET("/big.bin"), 200);
    assert_string_equal(header(&res[0], "Content-Length"), "100000");
    assert_int_equal(res[0].file_off, 0);
    assert_int_equal(res[0].body_len, 100000);
    assert_int_equal(res[0].body[99999], 'a' + 99999 % 26);
    assert_string_equal(header(&res[0], "Content-Type"), "application/octet-stream");
}

static void test_head(void **state)
{
    (void)state;
    expect("HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    assert_string_equal(header(&res[0], "Content-Length"), "5");
    assert_int_equal(res[0].body_len, 0);
    expect("HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    assert_int_equal(res[0].body_len, 0);
    assert_int_equal(res[0].file_off, -1);
    expect("HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404);
    assert_int_equal(res[0].body_len, 0);
    assert_non_null(header(&res[0], "Content-Length"));
}

/* Issue 11.3: shapes a front end may read differently are refused. */
static void test_smuggling_shapes(void **state)
{
    (void)state;
    /* whitespace between name and colon (RFC 9112 5.1): 400, and the
     * bytes after the head are never taken for a second request */
    assert_int_equal(exchange("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\n"
                              "abcGET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n"),
                     1);
    assert_int_equal(res[0].status, 400);
    assert_false(res[0].keep_alive);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400);
    expect("GET /a.txt HTTP/1.1\r\nHost : t\r\n\r\n", 400);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nX-A\"b: 1\r\n\r\n", 400);
    /* split anywhere, still refused */
    assert_int_equal(
        exchange_step("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabc", 56, 1), 1);
    assert_int_equal(res[0].status, 400);
    /* RFC 9112 3.2: exactly one Host */
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400);
    expect("GET /a.txt HTTP/1.0\r\nhost: t\r\nHOST: t\r\n\r\n", 400);
    expect("GET /a.txt HTTP/1.1\r\nX-Host: t\r\nHost: t\r\n\r\n", 200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Token: !#$%&'*+-.^_`|~09az\r\n\r\n", 200);
}

/* the parser's strict choices (RFC 9112), each once whole and once a byte
 * at a time: the same answer however the stream is cut. */
static void expect_split(const char *raw, int status)
{
    expect(raw, status);
    assert_int_equal(exchange_step(raw, strlen(raw), 1), 1);
    if (res[0].status != status)
        fail_msg("%s fed a byte at a time -> %d, expected %d", raw, res[0].status, status);
}

/* Host is uri-host[:port] (RFC 9110 7.2, RFC 3986 3.2.2): every valid form
 * is taken, anything else is 400, however the bytes arrive. */
static void test_host(void **state)
{
    static const char *const good[] = {
        "t",
        "",
        "example.com",
        "example.com.",
        "a-b.example",
        "a_b.example",
        "a~b",
        "%41bc",
        "x:8080",
        "x:",
        ":80",
        "127.0.0.1",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:80",
        "[2001:db8::7]",
        "[::ffff:192.0.2.1]:443",
        "[v1.x]",
        "[vF.a:b]",
        "!$&'()*+,;=",
        "t \t",
    };
    static const char *const bad[] = {
        "x y",
        "a b:80",
        "x:80x",
        "x:8 0",
        "[::1",
        "::1",
        "[::1]x",
        "[]",
        "[::g]",
        "a@b",
        "a/b",
        "a%zz",
        "a%4",
        "\xc3\xa9",
        "[fe80::1%25eth0]",
        "a\"b",
        "[v.x]",
        "[v1]",
        "[v1.]",
        "a?b",
        "a#b",
        "[1:2:3:4:5:6:7:8:9]",
        "x:80 x",
    };
    char raw[256];
    size_t i;

    (void)state;
    for (i = 0; i < PS__ARRAY_LEN(good); i++) {
        snprintf(raw, sizeof(raw), "GET /a.txt HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        expect_split(raw, 200);
    }
    for (i = 0; i < PS__ARRAY_LEN(bad); i++) {
        snprintf(raw, sizeof(raw), "GET /a.txt HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        expect_split(raw, 400);
        assert_false(res[0].keep_alive);
    }
    expect_split("GET /a.txt HTTP/1.0\r\nHost: x y\r\n\r\n", 400);
}

static void test_strict_framing(void **state)
{
    (void)state;
    /* obs-fold (5.2), a bare CR (2.2), a control byte in a value (5.5) */
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1\r\n Host: t\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\rX-A: 1\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nX-A: a\x7f\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\n: empty name\r\n\r\n", 400);
    /* obs-text in a value is allowed, and a bare LF ends a line */
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nX-A: caf\xc3\xa9\r\n\r\n", 200);
    expect_split("GET /a.txt HTTP/1.1\nHost: t\nX-A: 1\n\n", 200);
    /* Content-Length: digits once; with Transfer-Encoding it is 400 (6.3) */
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3 4\r\n\r\nabcd", 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999"
                 "\r\n\r\n",
                 413);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 400);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length:  3 \r\n\r\nabc", 200);
    /* the request line: one SP each, HTTP/D.D exactly, a target of a known form */
    expect_split("GET  /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_split("GET /a.txt  HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.1 \r\nHost: t\r\n\r\n", 400);
    expect_split("GET /a.txt http/1.1\r\nHost: t\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/1.10\r\nHost: t\r\n\r\n", 400);
    expect_split("GET /a.txt HTTP/11\r\nHost: t\r\n\r\n", 400);
    expect_split("GET /a.txt\r\n\r\n", 400); /* HTTP/0.9 */
    expect_split("GET /a\x01.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_split("GET 1http://t/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_split("get /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400); /* methods are case-sensitive */
    expect_split("VERYLONGMETHODNAME /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_split("PROPFIND /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 405);
    expect_split("CONNECT t:443 HTTP/1.1\r\nHost: t\r\n\r\n", 405);
    expect_split("GET /a.txt HTTP/0.9\r\nHost: t\r\n\r\n", 505);
    /* absolute-form is served by its path; an empty path is "/" */
    expect_split("GET http://t/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    assert_memory_equal(res[0].body, "hello", 5);
    expect_split("GET http://t HTTP/1.1\r\nHost: t\r\n\r\n", 200); /* the root's index.html */
    expect_split("GET http:/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    /* empty lines before a request line are skipped, a few of them */
    expect_split("\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    expect_split("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    /* Connection is a list of tokens, any case, with OWS */
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: TE , Close\r\n\r\n", 200);
    assert_false(res[0].keep_alive);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: closed\r\n\r\n", 200);
    assert_true(res[0].keep_alive);
    expect_split("GET /a.txt HTTP/1.0\r\nConnection: foo,keep-alive\r\n\r\n", 200);
    assert_true(res[0].keep_alive);
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                 200);
    assert_false(res[0].keep_alive); /* a switch we do not make: the stream ends here */
    /* trailing OWS is not part of a value */
    expect_split("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=1-2 \t\r\n\r\n", 206);
}

/* Issue 11.6: a connection's memory grows only with what it holds.  The
 * parse state is small and fixed; a request's head is allocated at its
 * first byte, grows with the target (up to PS_HTTP_URL_MAX, never past the
 * 414 limit) and is gone after release; an idle struct conn is small. */
static void test_memory_per_request(void **state)
{
    static char big[PS_HTTP_URL_MAX + 64];
    size_t n;

    (void)state;
    assert_true(sizeof(struct ps_http_req) <= 128);
    assert_true(ps__http_conn_size() <= 512);
    ps__http_req_init(&req);
    assert_null(req.head);
    assert_int_equal(ps__http_parse(&req, "GET /a.txt HTTP/1.1\r\nHo", 23), 23);
    assert_non_null(req.head);
    assert_true(sizeof(*req.head) + req.head->url_cap <= 1024);
    ps__http_req_release(&req);
    assert_null(req.head);

    /* a long target grows the head and is still served whole */
    n = (size_t)snprintf(big, sizeof(big), "GET /a.txt?");
    memset(big + n, 'q', PS_HTTP_URL_MAX - n);
    n = PS_HTTP_URL_MAX;
    n += (size_t)snprintf(big + n, sizeof(big) - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(exchange_step(big, n, 100), 1);
    assert_int_equal(res[0].status, 200);
    assert_memory_equal(res[0].body, "hello", 5);
    assert_null(req.head);
}

/* Expect: 100-continue asks for "100 Continue" only when a body follows. */
static void test_expect_continue(void **state)
{
    static const char head[] =
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue \r\nContent-Length: 3\r\n\r\n";
    (void)state;
    ps__http_req_init(&req);
    assert_int_equal(ps__http_parse(&req, head, strlen(head)), strlen(head));
    assert_int_equal(req.state, PS_HTTP_NEED_MORE);
    assert_true(req.continue_due);
    req.continue_due = 0;
    assert_int_equal(ps__http_parse(&req, "abc", 3), 3);
    assert_int_equal(req.state, PS_HTTP_READY);
    assert_false(req.continue_due);
    ps__http_req_release(&req);

    static const char *const none[] = {
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        "GET /a.txt HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continuex\r\nContent-Length: 3\r\n\r\n",
    };
    size_t i;
    for (i = 0; i < PS__ARRAY_LEN(none); i++) {
        ps__http_req_init(&req);
        ps__http_parse(&req, none[i], strlen(none[i]));
        if (req.continue_due)
            fail_msg("continue asked for: %s", none[i]);
        ps__http_req_release(&req);
    }
}

static void test_errors(void **state)
{
    (void)state;
    expect(GET("/nope"), 404);
    assert_true(res[0].keep_alive); /* a 404 is no reason to close */
    expect("POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 405);
    assert_string_equal(header(&res[0], "Allow"), "GET, HEAD");
    assert_false(res[0].keep_alive);
    assert_string_equal(header(&res[0], "Connection"), "close");
    expect("DELETE / HTTP/1.1\r\nHost: t\r\n\r\n", 405);
    expect("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 405);
    expect("FOO / HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect("GET / HTTP/1.1\r\n\r\n", 400);      /* no Host */
    expect("GET /a.txt HTTP/1.0\r\n\r\n", 200); /* 1.0 needs none */
    expect("GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400);
    expect("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400); /* TLS to a plain port */
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n", 413);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
    expect("GET /a.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    expect("GET a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect(GET("/noindex/"), 403);
    expect(GET("/fifo"), 403); /* never opened blocking, never served */
    expect(GET("/a.txt/"), 404);
}

static void test_limits(void **state)
{
    static char raw[80000];
    size_t n;

    (void)state;
    /* a target of exactly the limit is fine, one byte more is 414 */
    n = (size_t)snprintf(raw, sizeof(raw), "GET /a.txt?");
    memset(raw + n, 'x', PS_HTTP_URL_MAX - 7);
    n += PS_HTTP_URL_MAX - 7;
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect(raw, 200);
    /* a path longer than the file system takes is 414 too */
    n = (size_t)snprintf(raw, sizeof(raw), "GET /");
    memset(raw + n, 'x', 5000);
    n += 5000;
    snprintf(raw + n, sizeof(raw) - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect(raw, 414);
    n = (size_t)snprintf(raw, sizeof(raw), "GET /");
    memset(raw + n, 'x', PS_HTTP_URL_MAX);
    n += PS_HTTP_URL_MAX;
    snprintf(raw + n, sizeof(raw) - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect(raw, 414);
    assert_false(res[0].keep_alive);

    /* headers: many small ones adding up past the limit */
    n = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: t\r\n");
    while (n < PS_HTTP_HEADERS_MAX + 2000)
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "X-Filler: %0100d\r\n", 7);
    snprintf(raw + n, sizeof(raw) - n, "\r\n");
    expect(raw, 431);
    /* one huge value, fed in small pieces as the network would */
    n = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: t\r\nCookie: ");
    memset(raw + n, 'c', 40000);
    n += 40000;
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\n\r\n");
    assert_int_equal(exchange_step(raw, n, 1000), 1);
    assert_int_equal(res[0].status, 431);
}

static void test_redirect(void **state)
{
    (void)state;
    expect(GET("/sub"), 301);
    assert_string_equal(header(&res[0], "Location"), "/sub/");
    expect(GET("/sub?a=1&b=2"), 301);
    assert_string_equal(header(&res[0], "Location"), "/sub/?a=1&b=2");
    expect(GET("//sub"), 301); /* never a scheme-relative "//host" redirect */
    assert_string_equal(header(&res[0], "Location"), "/sub/");
    expect(GET("/sub/"), 200);
    assert_string_equal(res[0].body, "sub\n");
    expect(GET("/sub/./../sub/"), 200);
}

static void test_traversal(void **state)
{
    static const char *const bad[] = {
        "/../secret",
        "/%2e%2e/secret",
        "/%2E%2E%2Fsecret",
        "/sub/../../secret",
        "/a.txt%00",
        "/a.txt%00.html",
        "/%",
        "/%zz",
        "/..%2fsecret",
        "/sub/%2e%2e/%2e%2e/secret",
    };
    static const char *const forbidden[] = {"/out", "/abs", "/updir/secret"};
    char raw[256];
    size_t i;
    int pass;

    (void)state;
    for (pass = 0; pass < 2; pass++) {
        /* second pass: the fallback for kernels without openat2 */
        ps__http_files_set_openat2(ctx.files, pass == 0);
        ctx.now_ms += 5000; /* no cached answers */
        ps__http_ctx_tick(&ctx, ctx.now_ms);
        for (i = 0; i < PS__ARRAY_LEN(bad); i++) {
            snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", bad[i]);
            expect(raw, 400);
            assert_null(memmem(res[0].body, res[0].body_len, "SECRET", 6));
        }
        for (i = 0; i < PS__ARRAY_LEN(forbidden); i++) {
            snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", forbidden[i]);
            expect(raw, 403);
            assert_null(memmem(res[0].body, res[0].body_len, "SECRET", 6));
        }
        /* out and back in: openat2 refuses the excursion; the fallback
         * only checks where it ends, which is inside DIR (no leak either way) */
        expect(GET("/updir/www/a.txt"), pass == 0 ? 403 : 200);
        expect(GET("/in"), 200); /* a symlink inside DIR is fine */
        assert_memory_equal(res[0].body, "hello", 5);
    }
    ps__http_files_set_openat2(ctx.files, 1);
}

static void test_normalize(void **state)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"/", "/"},
        {"//", "/"},
        {"/a", "/a"},
        {"/a/", "/a/"},
        {"/a/./b", "/a/b"},
        {"/a/../b", "/b"},
        {"/a/b/..", "/a/"},
        {"/a//b", "/a/b"},
        {"/%61", "/a"},
        {"/a%2Fb", "/a/b"},
        {"/a/.", "/a/"},
        {"/a%20b", "/a b"},
        {"/.hidden", "/.hidden"},
        {"/...", "/..."},
        {"/a/b/../../c", "/c"},
        {"/a%2f", "/a/"},
        {"/a%2F", "/a/"},
        {"/a%2f.", "/a/"},
        {"/a%2f%2e%2e", "/"},
        {"/a%5c", "/a\\"},
        {"/a%5Cb", "/a\\b"},
    };
    static const char *const bad[] = {"", "a", "/..", "/a/../..", "/%00", "/%0", "/%g0", "/.%2e"};
    char buf[64];
    size_t i;

    (void)state;
    for (i = 0; i < PS__ARRAY_LEN(ok); i++) {
        int n = ps__http_path_normalize(ok[i].in, strlen(ok[i].in), buf, sizeof(buf));
        if (n < 0 || strcmp(buf, ok[i].out))
            fail_msg("%s -> %d '%s', expected '%s'", ok[i].in, n, n < 0 ? "" : buf, ok[i].out);
        assert_int_equal((size_t)n, strlen(buf));
    }
    for (i = 0; i < PS__ARRAY_LEN(bad); i++)
        assert_int_equal(ps__http_path_normalize(bad[i], strlen(bad[i]), buf, sizeof(buf)),
                         -EINVAL);
    assert_int_equal(ps__http_path_normalize("/0123456789", 11, buf, 8), -ENAMETOOLONG);
}

/* An encoded slash or backslash never names another file than the
 * decoded path does: "/a.txt%2f" is "/a.txt/" (not a directory: 404, as
 * nginx and h2o answer), so a front end that blocks "/a.txt" by its raw
 * target is not walked around. */
static void test_encoded_slash(void **state)
{
    static const char *const not_found[] = {
        "/a.txt%2f", "/a.txt%2F", "/a.txt%2f.",        "/a.txt/",
        "/a.txt%5c", "/a.txt%5C", "/sub%5cindex.html",
    };
    char raw[256];
    size_t i;

    (void)state;
    for (i = 0; i < PS__ARRAY_LEN(not_found); i++) {
        snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", not_found[i]);
        expect(raw, 404);
        assert_null(memmem(res[0].body, res[0].body_len, "hello", 5));
    }
    expect(GET("/a.txt%00"), 400);
    /* the decoded path is served, as nginx and h2o serve it */
    expect(GET("/sub%2findex.html"), 200);
    assert_string_equal(res[0].body, "sub\n");
    expect(GET("/sub%2F"), 200);
}

static void test_ranges(void **state)
{
    (void)state;
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n", 206);
    assert_string_equal(header(&res[0], "Content-Range"), "bytes 0-1/5");
    assert_string_equal(header(&res[0], "Content-Length"), "2");
    assert_memory_equal(res[0].body, "he", 2);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=-2\r\n\r\n", 206);
    assert_memory_equal(res[0].body, "lo", 2);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=3-\r\n\r\n", 206);
    assert_string_equal(header(&res[0], "Content-Range"), "bytes 3-4/5");
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=1-100\r\n\r\n", 206);
    assert_string_equal(header(&res[0], "Content-Range"), "bytes 1-4/5");
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=-100\r\n\r\n", 206);
    assert_string_equal(header(&res[0], "Content-Range"), "bytes 0-4/5");
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=5-\r\n\r\n", 416);
    assert_string_equal(header(&res[0], "Content-Range"), "bytes */5");
    assert_true(res[0].keep_alive);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=-0\r\n\r\n", 416);
    expect("GET /empty.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-\r\n\r\n", 416);
    assert_string_equal(header(&res[0], "Content-Range"), "bytes */0");
    /* RFC 9110 14.1.1: a non-zero suffix is satisfiable on an empty file,
     * the whole (empty) representation is the answer */
    expect("GET /empty.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-5\r\n\r\n", 200);
    assert_string_equal(header(&res[0], "Content-Length"), "0");
    assert_null(header(&res[0], "Content-Range"));
    assert_int_equal(res[0].body_len, 0);
    expect("GET /empty.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-0\r\n\r\n", 416);
    /* several ranges: the whole file (documented); malformed: ignored */
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0,2-3\r\n\r\n", 200);
    assert_int_equal(res[0].body_len, 5);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=3-1\r\n\r\n", 200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: items=0-1\r\n\r\n", 200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999999999999999999-\r\n\r\n", 200);
    /* a range of a large file is a sendfile range */
    expect("GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=50000-50009\r\n\r\n", 206);
    assert_int_equal(res[0].file_off, 50000);
    assert_int_equal(res[0].body_len, 10);
    assert_int_equal(res[0].body[0], 'a' + 50000 % 26);
    expect("HEAD /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n", 206);
    assert_int_equal(res[0].body_len, 0);
}

static void test_conditional(void **state)
{
    char raw[256], lm[64];

    (void)state;
    expect(GET("/a.txt"), 200);
    snprintf(lm, sizeof(lm), "%s", header(&res[0], "Last-Modified"));
    snprintf(raw, sizeof(raw), "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: %s\r\n\r\n",
             lm);
    expect(raw, 304);
    assert_int_equal(res[0].body_len, 0);
    assert_null(header(&res[0], "Content-Length"));
    assert_string_equal(header(&res[0], "Last-Modified"), lm);
    assert_true(res[0].keep_alive);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 "
           "GMT\r\n\r\n",
           200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: yesterday\r\n\r\n", 200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun, 06 Nov 2094 08:49:37 "
           "GMT\r\n\r\n",
           200); /* in the future: ignored */
    /* If-Range: the range only while the date still matches */
    snprintf(raw, sizeof(raw),
             "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nIf-Range: %s\r\n\r\n", lm);
    expect(raw, 206);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\n"
           "If-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
           200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nIf-Range: \"etag\"\r\n\r\n", 200);
}

/* ETag, If-None-Match (weak comparison, lists, "*", before
 * If-Modified-Since) and If-Range with an entity tag (strong). */
static void test_etag(void **state)
{
    char raw[512], tag[64], weak[70];

    (void)state;
    expect(GET("/a.txt"), 200);
    assert_non_null(header(&res[0], "ETag"));
    snprintf(tag, sizeof(tag), "%s", header(&res[0], "ETag"));
    assert_true(tag[0] == '"' && tag[strlen(tag) - 1] == '"' && strlen(tag) > 4);
    snprintf(weak, sizeof(weak), "W/%s", tag);
    expect(GET("/a.txt/../a.txt"), 200);
    assert_string_equal(header(&res[0], "ETag"), tag); /* stable */
    expect(GET("/sub/index.html"), 200);
    assert_string_not_equal(header(&res[0], "ETag"), tag); /* another file, another tag */

    snprintf(raw, sizeof(raw), "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n", tag);
    expect(raw, 304);
    assert_string_equal(header(&res[0], "ETag"), tag);
    assert_int_equal(res[0].body_len, 0);
    assert_true(res[0].keep_alive);
    snprintf(raw, sizeof(raw), "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n", weak);
    expect(raw, 304); /* weak comparison */
    snprintf(raw, sizeof(raw),
             "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"x\", W/\"y\",%s\r\n\r\n", tag);
    expect(raw, 304); /* in a list */
    snprintf(raw, sizeof(raw),
             "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"x\"\r\nIf-None-Match: %s\r\n\r\n",
             tag);
    expect(raw, 304); /* over two fields */
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\n\r\n", 304);
    expect("GET /nope HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\n\r\n", 404);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\"\r\n\r\n", 200);
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: garbage\r\n\r\n", 200);
    /* a non-matching If-None-Match wins over a matching If-Modified-Since */
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\"\r\n"
           "If-Modified-Since: Sun, 06 Nov 2033 08:49:37 GMT\r\n\r\n",
           200);
    /* If-Range with our tag keeps the range; a weak or other tag does not */
    snprintf(raw, sizeof(raw),
             "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nIf-Range: %s\r\n\r\n", tag);
    expect(raw, 206);
    assert_string_equal(header(&res[0], "ETag"), tag);
    snprintf(raw, sizeof(raw),
             "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nIf-Range: %s\r\n\r\n", weak);
    expect(raw, 200);
    /* an empty field before Host does not swallow the next name */
    expect("GET /a.txt HTTP/1.1\r\nX-Empty:\r\nHost: t\r\n\r\n", 200);
}

static void test_dates(void **state)
{
    static const char *const forms[] = {
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    };
    char buf[40];
    time_t t;
    size_t i;

    (void)state;
    for (i = 0; i < PS__ARRAY_LEN(forms); i++) {
        assert_int_equal(ps__http_parse_date(forms[i], strlen(forms[i]), &t), 0);
        assert_int_equal(t, 784111777);
    }
    ps__http_format_date(784111777, buf);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_int_equal(ps__http_parse_date("Sun, 06 Nov 1994", 16, &t), -EINVAL);
    assert_int_equal(ps__http_parse_date("", 0, &t), -EINVAL);
}

static void test_mime(void **state)
{
    (void)state;
    assert_string_equal(ps__http_mime_type("/x.HTML", 7), "text/html; charset=utf-8");
    assert_string_equal(ps__http_mime_type("/a/b.css", 8), "text/css; charset=utf-8");
    assert_string_equal(ps__http_mime_type("/f.woff2", 8), "font/woff2");
    assert_string_equal(ps__http_mime_type("/f.wasm", 7), "application/wasm");
    assert_string_equal(ps__http_mime_type("/noext", 6), "application/octet-stream");
    assert_string_equal(ps__http_mime_type("/d.html/x", 9), "application/octet-stream");
    assert_string_equal(ps__http_mime_type("/.png", 5), "image/png");
}

static void test_keep_alive_rules(void **state)
{
    (void)state;
    expect("GET /a.txt HTTP/1.0\r\n\r\n", 200);
    assert_false(res[0].keep_alive);
    assert_string_equal(header(&res[0], "Connection"), "close");
    expect("GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200);
    assert_true(res[0].keep_alive);
    assert_string_equal(header(&res[0], "Connection"), "keep-alive");
    expect("GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200);
    assert_false(res[0].keep_alive);
    assert_string_equal(header(&res[0], "Connection"), "close");
    ctx.draining = 1;
    expect(GET("/a.txt"), 200);
    assert_false(res[0].keep_alive);
    ctx.draining = 0;
}

static void test_pipelining(void **state)
{
    static const char raw[] = GET("/a.txt") GET(
        "/nope") "HEAD /sub/ HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody" GET("/a.txt");
    size_t step;

    (void)state;
    for (step = 0; step < 40; step += 7) { /* all at once, and split anywhere */
        assert_int_equal(exchange_step(raw, sizeof(raw) - 1, step), 5);
        assert_int_equal(res[0].status, 200);
        assert_int_equal(res[1].status, 404);
        assert_int_equal(res[2].status, 200);
        assert_int_equal(res[2].body_len, 0);
        assert_int_equal(res[3].status, 200); /* its ignored body did not become a request */
        assert_int_equal(res[4].status, 200);
    }
    /* one byte at a time */
    assert_int_equal(exchange_step(raw, sizeof(raw) - 1, 1), 5);
    /* a framing error ends the connection: nothing after it is answered */
    assert_int_equal(exchange(GET("/a.txt") "BAD\r\n\r\n" GET("/a.txt")), 2);
    assert_int_equal(res[1].status, 400);
    assert_false(res[1].keep_alive);
}

static void test_cache_revalidation(void **state)
{
    struct utimbuf ut = {.actime = 1000000000, .modtime = 1000000000};
    char path[256];

    (void)state;
    write_file("c.txt", "one", 3);
    expect(GET("/c.txt"), 200);
    assert_memory_equal(res[0].body, "one", 3);
    write_file("c.txt", "two", 3); /* same size, maybe same mtime second */
    ctx.now_ms += 1000;            /* a second later the change must show */
    expect(GET("/c.txt"), 200);
    assert_memory_equal(res[0].body, "two", 3);
    snprintf(path, sizeof(path), "%s/c.txt", www);
    assert_int_equal(utime(path, &ut), 0);
    ctx.now_ms += 1000;
    expect(GET("/c.txt"), 200);
    assert_string_equal(header(&res[0], "Last-Modified"), "Sun, 09 Sep 2001 01:46:40 GMT");
    unlink(path);
    ctx.now_ms += 1000;
    expect(GET("/c.txt"), 404);
}

static void test_embedded_page(void **state)
{
    struct ps_http_counters counters = {.accepted = 7, .requests = 9, .active = 2};
    struct ps_http_files *files = ctx.files;
    char pid[32];

    (void)state;
    ctx.files = NULL;
    ctx.counters = &counters;
    ctx.pid = 4242;
    ctx.slot = 3;
    ctx.generation = 5;
    expect(GET("/"), 200);
    res[0].body[res[0].body_len] = '\0';
    assert_string_equal(header(&res[0], "Content-Type"), "text/html; charset=utf-8");
    assert_non_null(strstr(res[0].body, "portshare"));
    snprintf(pid, sizeof(pid), "<td>%d</td>", 4242);
    assert_non_null(strstr(res[0].body, pid));
    assert_non_null(strstr(res[0].body, "<td>slot</td><td>3</td>"));
    assert_non_null(strstr(res[0].body, "<td>generation</td><td>5</td>"));
    assert_non_null(strstr(res[0].body, "<td>requests answered</td><td>9</td>"));
    assert_non_null(strstr(res[0].body, PS_VERSION));
    assert_int_equal(atoi(header(&res[0], "Content-Length")), (int)res[0].body_len);
    expect(GET("/a.txt"), 404);
    ctx.files = files;
    ctx.counters = NULL;
}

/* The parser must not read past what it is given: input ends right
 * before a page that is not mapped, so an over-read faults. */
static void test_no_overread(void **state)
{
    static const char *const inputs[] = {
        GET("/a.txt"), "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-",           "GET /%2",
        "G",           "GET / HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun, 06 Nov",
    };
    long page = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t i;

    (void)state;
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    for (i = 0; i < PS__ARRAY_LEN(inputs); i++) {
        size_t len = strlen(inputs[i]);
        char *at = map + page - len;
        memcpy(at, inputs[i], len);
        ps__http_req_init(&req);
        assert_int_equal(ps__http_parse(&req, at, len), len);
        if (req.state == PS_HTTP_READY) {
            struct ps_http_resp resp;
            assert_int_equal(ps__http_respond(&ctx, &req, out, sizeof(out), &resp), 0);
            ps__http_resp_done(&resp);
        }
        ps__http_req_release(&req);
    }
    munmap(map, (size_t)page * 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_file),
        cmocka_unit_test(test_big_file_is_sendfile),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_smuggling_shapes),
        cmocka_unit_test(test_strict_framing),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_memory_per_request),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_redirect),
        cmocka_unit_test(test_traversal),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_encoded_slash),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_conditional),
        cmocka_unit_test(test_etag),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_mime),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_cache_revalidation),
        cmocka_unit_test(test_embedded_page),
        cmocka_unit_test(test_no_overread),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
