/*
 * util.c - small helpers shared by the library's modules, and errno naming.
 */
#include "core.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

void ps__set_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

uint64_t ps__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ps__close(int fd)
{
    int saved = errno;

    if (fd >= 0)
        close(fd); /* on Linux the descriptor is gone even on EINTR */
    errno = saved;
}

int ps__parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    /* strtol alone would take " 80", "+80" and "0x50"'s leading "0": a
     * port, backlog or pid is written as plain digits or not at all */
    if (!s || !*s ||
        !(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno == ERANGE || *end != '\0' || end == s)
        return -EINVAL;
    if (v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

int ps__unix_addr(const char *address, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    size_t n = strlen(address);

    /* "@" alone would be an abstract name of zero bytes: refuse it */
    if (n == 0 || (n == 1 && address[0] == '@'))
        return -EINVAL;
    if (n >= sizeof(sun->sun_path))
        return -ENAMETOOLONG;
    memset(ss, 0, sizeof(*ss));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, address, n);
    if (address[0] == '@') {
        /* abstract: leading NUL, and the length counts exactly the name */
        sun->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

const char *ps_strerror(int negative_errno)
{
    return strerror(negative_errno < 0 ? -negative_errno : negative_errno);
}

const char *ps_errno_name(int err)
{
    static const struct {
        int err;
        const char *name;
    } names[] = {
        {EADDRINUSE, "EADDRINUSE"},
        {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
        {EACCES, "EACCES"},
        {EPERM, "EPERM"},
        {EINVAL, "EINVAL"},
        {EAFNOSUPPORT, "EAFNOSUPPORT"},
        {EOPNOTSUPP, "EOPNOTSUPP"},
        {ENOPROTOOPT, "ENOPROTOOPT"},
        {EISCONN, "EISCONN"},
        {ECONNREFUSED, "ECONNREFUSED"},
        {ECONNRESET, "ECONNRESET"},
        {ETIMEDOUT, "ETIMEDOUT"},
        {ENOENT, "ENOENT"},
        {EBADF, "EBADF"},
        {EAGAIN, "EAGAIN"},
        {EMFILE, "EMFILE"},
        {ENFILE, "ENFILE"},
        {ENOBUFS, "ENOBUFS"},
        {ENOMEM, "ENOMEM"},
        {ENOTSOCK, "ENOTSOCK"},
        {EPROTONOSUPPORT, "EPROTONOSUPPORT"},
        {ENETUNREACH, "ENETUNREACH"},
        {EHOSTUNREACH, "EHOSTUNREACH"},
        {ENODEV, "ENODEV"},
        {EBADMSG, "EBADMSG"},
        {ENAMETOOLONG, "ENAMETOOLONG"},
        {ERANGE, "ERANGE"},
        {ESRCH, "ESRCH"},
        {ECHILD, "ECHILD"},
        {EEXIST, "EEXIST"},
        {ENOTDIR, "ENOTDIR"},
        {EPIPE, "EPIPE"},
        {EINPROGRESS, "EINPROGRESS"},
        {EALREADY, "EALREADY"},
        {EDESTADDRREQ, "EDESTADDRREQ"},
        {ENOTCONN, "ENOTCONN"},
        {ENOSYS, "ENOSYS"},
    };
    static __thread char unknown[24];
    size_t i;

    if (err < 0)
        err = -err;
    for (i = 0; i < PS__ARRAY_LEN(names); i++)
        if (names[i].err == err)
            return names[i].name;
    snprintf(unknown, sizeof(unknown), "E%d", err);
    return unknown;
}

int ps__parse_duration_ms(const char *text, unsigned *ms)
{
    char *end;
    double v;

    if (!text || !*text || !(isdigit((unsigned char)text[0]) || text[0] == '.'))
        return -EINVAL;
    errno = 0;
    v = strtod(text, &end);
    if (errno || end == text || v < 0)
        return -EINVAL;
    if (!strcmp(end, "ms"))
        ;
    else if (!strcmp(end, "s") || !*end)
        v *= 1000;
    else if (!strcmp(end, "m") || !strcmp(end, "min"))
        v *= 60000;
    else
        return -EINVAL;
    if (v > 24.0 * 3600 * 1000)
        return -ERANGE;
    *ms = (unsigned)v;
    return 0;
}
