/*
 * files.c - from a request path to a file under DIR, and a small
 * cache of the files found.
 *
 * Confinement is done twice over: the path is normalised lexically first
 * (decoded, "." and ".." applied, so it can never name anything above the
 * root), then opened relative to a descriptor of DIR with openat2(2)
 * RESOLVE_BENEATH, so that a symlink leading out of DIR fails (EXDEV)
 * instead of being followed.  Kernels without openat2 (< 5.6) get openat()
 * and a check of the opened file's real path against DIR's.
 *
 * The cache is direct-mapped (a path hashes to one slot; a collision
 * replaces the older file): bounded in entries, descriptors and bytes, and
 * a hit costs a hash and a string compare.  Every entry is compared with
 * the file system at most once a second (one fstatat), which bounds how
 * long a changed file can be served stale.
 */
#include "http_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CACHE_SLOTS 1024 /* entries; each holds an fd or <= PS_HTTP_MEM_MAX bytes */
#define RECHECK_MS  1000 /* a cached file is compared with the disk this often */

struct ps_http_files {
    int root_fd;
    int use_openat2; /* cleared when the kernel says ENOSYS */
    char *root_real; /* realpath of DIR, for the fallback check */
    size_t root_real_len;
    struct ps_http_file *slot[CACHE_SLOTS];
};

/* ---- names and dates ---------------------------------------------------- */

const char *ps__http_mime_type(const char *path, size_t len)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"txt", "text/plain; charset=utf-8"},
        {"md", "text/markdown; charset=utf-8"},
        {"csv", "text/csv; charset=utf-8"},
        {"xml", "application/xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"svg", "image/svg+xml"},
        {"ico", "image/x-icon"},
        {"webp", "image/webp"},
        {"avif", "image/avif"},
        {"wasm", "application/wasm"},
        {"pdf", "application/pdf"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"ttf", "font/ttf"},
        {"otf", "font/otf"},
        {"mp4", "video/mp4"},
        {"webm", "video/webm"},
        {"mp3", "audio/mpeg"},
        {"ogg", "audio/ogg"},
        {"wav", "audio/wav"},
        {"zip", "application/zip"},
        {"gz", "application/gzip"},
        {"tar", "application/x-tar"},
        {"map", "application/json"},
        {"txz", "application/x-xz"},
    };
    size_t i, n = len;

    /* the extension is what follows the last '.' of the last segment */
    while (n > 0 && path[n - 1] != '.' && path[n - 1] != '/')
        n--;
    if (n == 0 || path[n - 1] != '.')
        return "application/octet-stream";
    for (i = 0; i < PS__ARRAY_LEN(types); i++)
        if (strlen(types[i].ext) == len - n && !strncasecmp(path + n, types[i].ext, len - n))
            return types[i].type;
    return "application/octet-stream";
}

static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void ps__http_format_date(time_t t, char *out)
{
    char tmp[80];
    struct tm tm;

    gmtime_r(&t, &tm);
    /* by hand: strftime's %a and %b follow the locale, HTTP's do not */
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday % 7],
             tm.tm_mday, month_names[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
    memcpy(out, tmp, 29); /* years 0..9999: always 29 characters */
    out[29] = '\0';
}

int ps__http_parse_date(const char *s, size_t len, time_t *out)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate, the one to send */
        "%A, %d-%b-%y %H:%M:%S GMT", /* obsolete RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* obsolete asctime() */
    };
    char tmp[64];
    size_t i;

    if (len == 0 || len >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    for (i = 0; i < PS__ARRAY_LEN(formats); i++) {
        struct tm tm;
        const char *end;
        memset(&tm, 0, sizeof(tm));
        end = strptime(tmp, formats[i], &tm);
        if (end && *end == '\0') {
            *out = timegm(&tm);
            return 0;
        }
    }
    return -EINVAL;
}

/* ---- paths ---------------------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int ps__http_path_normalize(const char *raw, size_t len, char *out, size_t cap)
{
    size_t i = 0, o = 0;

    if (cap < 2 || len == 0 || raw[0] != '/')
        return len == 0 || raw[0] != '/' ? -EINVAL : -ENAMETOOLONG;
    out[o++] = '/';
    /* out always ends in '/' between segments; a segment is copied, then
     * judged: "" and "." vanish, ".." removes the segment before it */
    while (i < len) {
        size_t seg = o;
        int slash = 0; /* the segment ended at a slash, written or encoded */
        while (i < len) {
            char c = raw[i++];
            if (c == '%') {
                int hi = i + 1 < len ? hex_value(raw[i]) : -1;
                int lo = i + 1 < len ? hex_value(raw[i + 1]) : -1;
                if (hi < 0 || lo < 0)
                    return -EINVAL;
                c = (char)(hi << 4 | lo);
                i += 2;
                if (c == '\0')
                    return -EINVAL;
            } else if (c == '\0') {
                return -EINVAL;
            }
            if (c == '/') {
                slash = 1;
                break;
            }
            if (o + 2 >= cap)
                return -ENAMETOOLONG;
            out[o++] = c;
        }
        if (o - seg == 0 || (o - seg == 1 && out[seg] == '.')) {
            o = seg;
        } else if (o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1)
                return -EINVAL; /* above the root */
            o = seg - 1;
            while (out[o - 1] != '/')
                o--;
        } else if (slash) {
            /* the decoded path is what is served: "/a.txt%2f" is
             * "/a.txt/" (404 for a file), never "/a.txt", which a front
             * end matching the raw target would not have taken it for */
            out[o++] = '/';
        }
    }
    /* a trailing "." or ".." names a directory: keep the slash form */
    out[o] = '\0';
    return (int)o;
}

/* ---- opening, confined ------------------------------------------------------ */

/* The relative name under DIR of a normalised path (index.html for "/x/"). */
static int relative_name(const char *path, size_t len, char *rel, size_t cap)
{
    int n;

    if (len == 1)
        n = snprintf(rel, cap, "index.html");
    else if (path[len - 1] == '/')
        n = snprintf(rel, cap, "%.*sindex.html", (int)(len - 1), path + 1);
    else
        n = snprintf(rel, cap, "%.*s", (int)(len - 1), path + 1);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* openat() plus a check that the real path is DIR or under it. */
static int open_checked(struct ps_http_files *f, const char *rel, int flags)
{
    char link[64], real[PATH_MAX];
    ssize_t n;
    int fd = openat(f->root_fd, rel, flags);

    if (fd < 0)
        return ps__neg_errno();
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, real, sizeof(real));
    if (n < 0 || (size_t)n < f->root_real_len ||
        memcmp(real, f->root_real, f->root_real_len) != 0 ||
        ((size_t)n > f->root_real_len && real[f->root_real_len] != '/' && f->root_real_len > 1)) {
        ps__close(fd); /* outside DIR, or we cannot tell: refuse */
        return -EXDEV;
    }
    return fd;
}

static int open_beneath(struct ps_http_files *f, const char *rel, int flags)
{
    struct open_how how;
    long fd;

    if (!f->use_openat2)
        return open_checked(f, rel, flags);
    memset(&how, 0, sizeof(how));
    how.flags = (unsigned long long)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    do
        fd = syscall(SYS_openat2, f->root_fd, rel, &how, sizeof(how));
    while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    if (fd < 0 && errno == ENOSYS) {
        f->use_openat2 = 0;
        return open_checked(f, rel, flags);
    }
    return fd < 0 ? ps__neg_errno() : (int)fd;
}

/* The -errno a caller maps to a status: ENOENT 404, EACCES 403. */
static int open_error(int r)
{
    switch (-r) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
        return -ENOENT;
    case EXDEV:
    case ELOOP:
    case EACCES:
    case EPERM:
    case ENXIO:
        return -EACCES;
    default:
        return r;
    }
}

/* A "/dir/" whose index.html is missing: 403 if the directory exists. */
static int missing_index(struct ps_http_files *f, const char *path, size_t len)
{
    char rel[PATH_MAX];
    int fd;

    if (len == 1)
        return -EACCES;
    if (snprintf(rel, sizeof(rel), "%.*s", (int)(len - 1), path + 1) >= (int)sizeof(rel))
        return -ENOENT;
    fd = open_beneath(f, rel, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return open_error(fd);
    ps__close(fd);
    return -EACCES;
}

/* ---- the cache ------------------------------------------------------------ */

static size_t slot_of(const char *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;

    for (i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h % CACHE_SLOTS;
}

void ps__http_file_put(struct ps_http_file *file)
{
    if (!file || --file->refs > 0)
        return;
    ps__close(file->fd);
    free(file->data);
    free(file->key);
    free(file);
}

static int same_file(const struct ps_http_file *file, const struct stat *st)
{
    return file->dev == st->st_dev && file->ino == st->st_ino && file->size == st->st_size &&
           file->mtim.tv_sec == st->st_mtim.tv_sec && file->mtim.tv_nsec == st->st_mtim.tv_nsec &&
           file->ctim.tv_sec == st->st_ctim.tv_sec && file->ctim.tv_nsec == st->st_ctim.tv_nsec;
}

/* Read a small file whole.  A file that changes while read is caught by
 * the next check (its ctime moves). */
static int read_whole(int fd, struct ps_http_file *file)
{
    size_t got = 0;

    file->data = malloc(file->size > 0 ? (size_t)file->size : 1);
    if (!file->data)
        return -ENOMEM;
    while (got < (size_t)file->size) {
        ssize_t n = pread(fd, file->data + got, (size_t)file->size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ps__neg_errno();
        if (n == 0)
            break; /* truncated meanwhile: serve what is there */
        got += (size_t)n;
    }
    file->size = (off_t)got;
    return 0;
}

static void fill_meta(struct ps_http_file *file, const struct stat *st)
{
    file->size = st->st_size;
    file->mtime = st->st_mtim.tv_sec;
    file->mtim = st->st_mtim;
    file->ctim = st->st_ctim;
    file->dev = st->st_dev;
    file->ino = st->st_ino;
    ps__http_format_date(file->mtime, file->last_modified);
    snprintf(file->etag, sizeof(file->etag), "\"%llx-%lx-%llx\"",
             (unsigned long long)st->st_mtim.tv_sec, (long)st->st_mtim.tv_nsec,
             (unsigned long long)st->st_size);
}

static void fill_head(struct ps_http_file *file)
{
    int n = snprintf(file->head200, sizeof(file->head200),
                     "Content-Type: %s\r\nContent-Length: %lld\r\nLast-Modified: %s\r\n"
                     "ETag: %s\r\nAccept-Ranges: bytes\r\n",
                     file->type, (long long)file->size, file->last_modified, file->etag);
    file->head200_len = n > 0 && (size_t)n < sizeof(file->head200) ? (size_t)n : 0;
}

/* Open, check and describe the file a path names; a new entry, refs 1. */
static int load(struct ps_http_files *f, const char *path, size_t len, uint64_t now_ms,
                struct ps_http_file **out)
{
    struct ps_http_file *file = NULL;
    char rel[PATH_MAX];
    struct stat st;
    int fd, r;

    r = relative_name(path, len, rel, sizeof(rel));
    if (r < 0)
        return -ENOENT;
    fd = open_beneath(f, rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        r = open_error(fd);
        if (r == -ENOENT && path[len - 1] == '/')
            r = missing_index(f, path, len);
        goto error;
    }
    if (fstat(fd, &st) < 0) {
        r = ps__neg_errno();
        goto error;
    }
    if (!S_ISREG(st.st_mode)) {
        r = S_ISDIR(st.st_mode) && path[len - 1] != '/' ? -EISDIR : -EACCES;
        goto error;
    }
    file = calloc(1, sizeof(*file));
    if (!file || !(file->key = malloc(len + 1))) {
        r = -ENOMEM;
        goto error;
    }
    memcpy(file->key, path, len + 1);
    file->key_len = len;
    file->refs = 1;
    file->fd = -1;
    file->checked_ms = now_ms;
    file->type = ps__http_mime_type(rel, strlen(rel));
    fill_meta(file, &st);
    if (st.st_size <= PS_HTTP_MEM_MAX) {
        r = read_whole(fd, file);
        if (r < 0)
            goto error;
        ps__close(fd);
    } else {
        file->fd = fd;
    }
    fill_head(file);
    *out = file;
    return 0;

error:
    if (fd >= 0)
        ps__close(fd); /* file->fd is still -1 here */
    ps__http_file_put(file);
    return r;
}

/* Still the same file on disk?  One fstatat per entry per second.  The
 * stat follows the path unconfined, but it only compares: a different
 * answer sends us back through load(), which is confined. */
static int still_fresh(struct ps_http_files *f, struct ps_http_file *file, uint64_t now_ms)
{
    char rel[PATH_MAX];
    struct stat st;

    if (now_ms - file->checked_ms < RECHECK_MS)
        return 1;
    if (relative_name(file->key, file->key_len, rel, sizeof(rel)) < 0 ||
        fstatat(f->root_fd, rel, &st, 0) < 0 || !same_file(file, &st))
        return 0;
    file->checked_ms = now_ms;
    return 1;
}

int ps__http_files_get(struct ps_http_files *f, const char *path, size_t len, uint64_t now_ms,
                       struct ps_http_file **out)
{
    size_t s = slot_of(path, len);
    struct ps_http_file *file = f->slot[s];
    int r;

    if (file && file->key_len == len && !memcmp(file->key, path, len) &&
        still_fresh(f, file, now_ms)) {
        file->refs++;
        *out = file;
        return 0;
    }
    r = load(f, path, len, now_ms, &file);
    if (r < 0)
        return r;
    ps__http_file_put(f->slot[s]);
    f->slot[s] = file;
    file->refs++;
    *out = file;
    return 0;
}

int ps__http_files_open(const char *root, struct ps_http_files **out)
{
    struct ps_http_files *f = calloc(1, sizeof(*f));
    char real[PATH_MAX];
    int r;

    if (!f)
        return -ENOMEM;
    f->use_openat2 = 1;
    f->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->root_fd < 0 || !realpath(root, real) || !(f->root_real = strdup(real))) {
        r = ps__neg_errno();
        goto error;
    }
    f->root_real_len = strlen(f->root_real);
    *out = f;
    return 0;

error:
    ps__http_files_close(f);
    return r;
}

void ps__http_files_close(struct ps_http_files *f)
{
    size_t i;

    if (!f)
        return;
    for (i = 0; i < CACHE_SLOTS; i++)
        ps__http_file_put(f->slot[i]);
    if (f->root_fd >= 0)
        ps__close(f->root_fd);
    free(f->root_real);
    free(f);
}

void ps__http_files_set_openat2(struct ps_http_files *f, int on)
{
    f->use_openat2 = on;
}
