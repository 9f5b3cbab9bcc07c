/*
 * fuzz_http.c - libFuzzer target for the HTTP worker's request handling:
 * bytes in, responses out, through exactly the calls the server makes
 * (ps__http_parse / ps__http_respond / ps__http_req_next), over a small
 * document root created once in a temporary directory.
 *
 * The first input byte chooses the mode (bit 0: the embedded page instead
 * of the directory) and how the rest is cut into network reads (bits 1-3),
 * so that every split point of the streaming parser is reached.  Each
 * response must be well-formed: a status line that agrees with the status,
 * one header block, a Content-Length that matches the body produced, a file
 * range inside the file, "Connection: close" and no keep-alive after a
 * framing error, and never a byte of the file outside the root.
 */
#include "http_internal.h"

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define SECRET "SECRET-OUTSIDE-ROOT"

static char top[64];
static struct ps_http_files *files;
static struct ps_http_req req;
static char out[PS_HTTP_RESP_MAX];
static struct ps_http_counters counters;

static void put_file(const char *name, const char *text, size_t len)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", top, name);
    f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(text, 1, len, f) == len);
    fclose(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    ps__http_files_close(files);
    nftw(top, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* top/secret is outside the root top/www; top/www/out leads to it. */
static void init(void)
{
    static char big[PS_HTTP_MEM_MAX + 4000];
    char path[256];

    snprintf(top, sizeof(top), "/tmp/ps-fuzz-http-XXXXXX");
    CHECK(mkdtemp(top));
    put_file("secret", SECRET, strlen(SECRET));
    snprintf(path, sizeof(path), "%s/www", top);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/www/sub", top);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/www/noindex", top);
    CHECK(mkdir(path, 0755) == 0);
    put_file("www/index.html", "<p>root</p>\n", 12);
    put_file("www/a.txt", "hello", 5);
    put_file("www/empty", "", 0);
    put_file("www/sub/index.html", "sub\n", 4);
    memset(big, 'b', sizeof(big));
    put_file("www/big.bin", big, sizeof(big)); /* served by sendfile */
    snprintf(path, sizeof(path), "%s/www/out", top);
    CHECK(symlink("../secret", path) == 0);
    snprintf(path, sizeof(path), "%s/www/updir", top);
    CHECK(symlink("..", path) == 0);
    snprintf(path, sizeof(path), "%s/www", top);
    CHECK(ps__http_files_open(path, &files) == 0);
    atexit(cleanup);
}

static int known_status(int s)
{
    static const int known[] = {200, 206, 301, 304, 400, 403, 404, 405,
                                411, 413, 414, 416, 431, 500, 503, 505};
    size_t i;

    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i] == s)
            return 1;
    return 0;
}

/* Content-Length of a header block, or -1 when there is none. */
static long content_length(const char *head, size_t len)
{
    const char *p = memmem(head, len, "\r\nContent-Length: ", 18);

    return p ? strtol(p + 18, NULL, 10) : -1;
}

static void check_response(const struct ps_http_req *r, const struct ps_http_resp *resp, int error,
                           int echo_ok)
{
    char line[16];
    const char *end;
    size_t head, body;
    long clen;

    CHECK(known_status(resp->status));
    CHECK(resp->len >= 17 && resp->len <= sizeof(out));
    snprintf(line, sizeof(line), "HTTP/1.1 %d ", resp->status);
    CHECK(memcmp(out, line, strlen(line)) == 0);
    end = memmem(out, resp->len, "\r\n\r\n", 4);
    CHECK(end);
    head = (size_t)(end - out) + 4;
    body = resp->len - head;
    /* (a redirect echoes the query: the marker may come from the input) */
    CHECK(echo_ok || memmem(out, resp->len, SECRET, strlen(SECRET)) == NULL);
    clen = content_length(out, head);
    if (error) {
        CHECK(!resp->keep_alive);
        CHECK(memmem(out, head, "\r\nConnection: close\r\n", 21));
    }
    if (resp->file) {
        CHECK(body == 0);
        CHECK(resp->file->fd >= 0);
        CHECK(resp->file_len > 0);
        CHECK(resp->file_off >= 0 && resp->file_off + (off_t)resp->file_len <= resp->file->size);
        CHECK(clen == (long)resp->file_len);
    } else if (r->started && r->method == PS_HTTP_HEAD) {
        CHECK(body == 0);
    } else if (resp->status == 304) {
        CHECK(body == 0 && clen == -1);
    } else {
        CHECK(clen == (long)body);
    }
    CHECK(resp->body_len == (resp->file ? resp->file_len : body));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t steps[8] = {0, 1, 2, 3, 7, 16, 64, 1000};
    struct ps_http_ctx ctx;
    size_t off = 1, step;
    int answered = 0, echo_ok;

    if (!files)
        init();
    if (size < 1)
        return 0;
    memset(&ctx, 0, sizeof(ctx));
    ctx.files = (data[0] & 1) ? NULL : files;
    ctx.counters = &counters;
    ctx.pid = 1;
    ctx.slot = ctx.generation = -1;
    ctx.draining = (data[0] & 0x80) != 0;
    ps__http_ctx_tick(&ctx, 1000 + size * 300); /* cached entries age across inputs */
    step = steps[(data[0] >> 1) & 7];
    echo_ok = memmem(data, size, SECRET, strlen(SECRET)) != NULL;
    ps__http_req_init(&req);
    while (answered < 64) {
        struct ps_http_resp resp;
        if (req.state == PS_HTTP_NEED_MORE) {
            size_t chunk = step && step < size - off ? step : size - off;
            size_t used;
            if (chunk == 0)
                break;
            used = ps__http_parse(&req, (const char *)data + off, chunk);
            CHECK(used <= chunk);
            off += used;
            if (req.state == PS_HTTP_NEED_MORE) {
                CHECK(used == chunk); /* nothing is left behind unparsed */
                continue;
            }
        }
        CHECK(!req.head || req.head->url_len <= req.head->url_cap);
        CHECK(!req.head || req.head->url_cap <= PS_HTTP_URL_MAX);
        CHECK(ps__http_respond(&ctx, &req, out, sizeof(out), &resp) == 0);
        check_response(&req, &resp, req.state == PS_HTTP_ERROR, echo_ok);
        ps__http_resp_done(&resp);
        answered++;
        if (!resp.keep_alive)
            break;
        ps__http_req_next(&req);
    }
    ps__http_req_release(&req);
    CHECK(!req.head);
    return 0;
}
