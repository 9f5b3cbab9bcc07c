/*
 * spec.c - listen specs: "web=tcp://[::1]:8080?backlog=512" and friends.
 *
 * The parser works on a private copy of the text, allocates nothing, and
 * names the part of the spec that is wrong in its error line.
 */
#include "core.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define DEFAULT_BACKLOG 4096

/* struct ps_spec grows into its reserved bytes, never past them: the
 * fields before keep the offsets programs were built with */
#define PS_SPEC_ROOM_0_1 120 /* the bytes after defer_accept in 0.1.0, reserved[] then */
_Static_assert(offsetof(struct ps_spec, flows) ==
                       offsetof(struct ps_spec, defer_accept) + sizeof(int) &&
                   offsetof(struct ps_spec, reserved) + sizeof(((struct ps_spec *)0)->reserved) ==
                       offsetof(struct ps_spec, defer_accept) + sizeof(int) + PS_SPEC_ROOM_0_1,
               "a new field of struct ps_spec goes into reserved[], not before it");

static int valid_name(const char *name)
{
    const char *p;

    if (!*name)
        return 0;
    for (p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.-", *p))
            return 0;
    return 1;
}

/* "NAME=" prefix: an '=' that comes before anything that can start an address */
static char *split_name(char *text, struct ps_spec *spec, char *err, size_t errlen)
{
    size_t lead = strcspn(text, ":/?@[=");

    if (text[lead] != '=')
        return text;
    text[lead] = '\0';
    if (!valid_name(text) || lead >= sizeof(spec->name)) {
        ps__set_error(err, errlen,
                      "bad name '%s' (letters, digits, '_', '.', '-'; at most %zu characters)",
                      text, sizeof(spec->name) - 1);
        return NULL;
    }
    memcpy(spec->name, text, lead + 1);
    return text + lead + 1;
}

static int parse_option(char *opt, struct ps_spec *spec, char *err, size_t errlen)
{
    char *eq = strchr(opt, '=');
    char *val;
    long v;

    if (!eq) {
        ps__set_error(err, errlen, "option '%s' has no value (expected KEY=VALUE)", opt);
        return -EINVAL;
    }
    *eq = '\0';
    val = eq + 1;
    if (!strcmp(opt, "backlog")) {
        if (ps__parse_long(val, 1, 1 << 30, &v) < 0)
            goto bad_value;
        spec->backlog = (int)v;
    } else if (!strcmp(opt, "v6only")) {
        if (!strcmp(val, "on") || !strcmp(val, "1") || !strcmp(val, "true"))
            spec->v6only = 1;
        else if (!strcmp(val, "off") || !strcmp(val, "0") || !strcmp(val, "false"))
            spec->v6only = 0;
        else
            goto bad_value;
    } else if (!strcmp(opt, "reuse")) {
        if (!strcmp(val, "port"))
            spec->reuse = PS_REUSE_PORT;
        else if (!strcmp(val, "shared"))
            spec->reuse = PS_REUSE_SHARED;
        else
            goto bad_value;
    } else if (!strcmp(opt, "defer")) {
        if (ps__parse_long(val, 0, 3600, &v) < 0)
            goto bad_value;
        spec->defer_accept = (int)v;
    } else if (!strcmp(opt, "mode")) {
        /* octal digits only: strtoul would also take "-1", " 7" and "+7" */
        if (!*val || val[strspn(val, "01234567")] || strlen(val) > 4)
            goto bad_value;
        spec->unix_mode = (unsigned)strtoul(val, NULL, 8);
        if (spec->unix_mode > 0777)
            goto bad_value;
    } else if (!strcmp(opt, "flows")) {
        if (ps__parse_long(val, 1, 1 << 24, &v) < 0)
            goto bad_value;
        spec->flows = (unsigned)v;
    } else if (!strcmp(opt, "flow_idle")) {
        unsigned ms;
        if (ps__parse_duration_ms(val, &ms) < 0 || ms == 0)
            goto bad_value;
        spec->flow_idle_ms = ms;
    } else {
        ps__set_error(err, errlen,
                      "unknown option '%s' (known: backlog, v6only, reuse, defer, mode, flows, "
                      "flow_idle)",
                      opt);
        return -EINVAL;
    }
    return 0;

bad_value:
    ps__set_error(err, errlen, "bad value '%s' for option '%s'", val, opt);
    return -EINVAL;
}

static int parse_options(char *opts, struct ps_spec *spec, char *err, size_t errlen)
{
    char *save = NULL, *opt;
    int r;

    for (opt = strtok_r(opts, "&", &save); opt; opt = strtok_r(NULL, "&", &save)) {
        r = parse_option(opt, spec, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Split "HOST:PORT" / "[V6]:PORT" in place. */
static int split_host_port(char *hp, char **host, char **port, char *err, size_t errlen)
{
    char *colon;

    if (hp[0] == '[') {
        char *close = strchr(hp, ']');
        if (!close) {
            ps__set_error(err, errlen, "missing ']' after IPv6 address '%s'", hp);
            return -EINVAL;
        }
        *close = '\0';
        *host = hp + 1;
        if (!strchr(*host, ':')) {
            /* "[]" would silently mean 0.0.0.0, "[1.2.3.4]" is a typo */
            ps__set_error(err, errlen, "'[%s]' is not an IPv6 address (brackets are for IPv6)",
                          *host);
            return -EINVAL;
        }
        if (close[1] != ':') {
            ps__set_error(err, errlen, "missing ':PORT' after '[%s]'", *host);
            return -EINVAL;
        }
        *port = close + 2;
        return 0;
    }
    colon = strrchr(hp, ':');
    if (!colon) {
        ps__set_error(err, errlen, "missing ':PORT' in '%s'", hp);
        return -EINVAL;
    }
    *colon = '\0';
    if (strchr(hp, ':')) {
        ps__set_error(err, errlen, "IPv6 address '%s' must be written in brackets, as [%s]", hp,
                      hp);
        return -EINVAL;
    }
    *host = hp;
    *port = colon + 1;
    return 0;
}

static int resolve(struct ps_spec *spec, int flags, char *err, size_t errlen)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&spec->addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&spec->addr;
    struct addrinfo hints, *res = NULL;
    int r;

    memset(&spec->addr, 0, sizeof(spec->addr));
    if (spec->host[0] == '\0' || !strcmp(spec->host, "*")) {
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)spec->port);
        spec->addrlen = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET, spec->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)spec->port);
        spec->addrlen = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, spec->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)spec->port);
        spec->addrlen = sizeof(*sin6);
        return 0;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = spec->proto == PS_PROTO_UDP ? SOCK_DGRAM : SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | (flags & PS__SPEC_NUMERIC ? AI_NUMERICHOST : 0);
    r = getaddrinfo(spec->host, NULL, &hints, &res);
    if (r != 0 || !res) {
        ps__set_error(err, errlen, "cannot resolve host '%s': %s", spec->host, gai_strerror(r));
        if (res)
            freeaddrinfo(res);
        return -EADDRNOTAVAIL;
    }
    memcpy(&spec->addr, res->ai_addr, res->ai_addrlen);
    spec->addrlen = res->ai_addrlen;
    if (res->ai_family == AF_INET)
        sin->sin_port = htons((uint16_t)spec->port);
    else
        sin6->sin6_port = htons((uint16_t)spec->port);
    freeaddrinfo(res);
    return 0;
}

static int parse_inet(char *rest, struct ps_spec *spec, int flags, char *err, size_t errlen)
{
    char *host, *port;
    long p;
    int r;

    r = split_host_port(rest, &host, &port, err, errlen);
    if (r < 0)
        return r;
    if (ps__parse_long(port, 0, 65535, &p) < 0) {
        ps__set_error(err, errlen, "bad port '%s' (expected 0-65535)", port);
        return -EINVAL;
    }
    if (strlen(host) >= sizeof(spec->host)) {
        ps__set_error(err, errlen, "host name too long");
        return -ENAMETOOLONG;
    }
    strcpy(spec->host, host);
    spec->port = (unsigned)p;
    return resolve(spec, flags, err, errlen);
}

static int parse_unix(char *path, struct ps_spec *spec, char *err, size_t errlen)
{
    int r;

    if (path[0] != '/' && path[0] != '@' && path[0] != '.') {
        ps__set_error(err, errlen,
                      "unix socket '%s' must be an absolute or ./relative path, or @abstract",
                      path);
        return -EINVAL;
    }
    r = ps__unix_addr(path, &spec->addr, &spec->addrlen);
    if (r == -ENAMETOOLONG)
        ps__set_error(err, errlen, "unix socket path too long (at most %zu bytes)",
                      sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    else if (r < 0)
        ps__set_error(err, errlen, "empty unix socket name '%s'", path);
    if (r < 0)
        return r;
    if (strlen(path) >= sizeof(spec->host))
        return -ENAMETOOLONG;
    strcpy(spec->host, path);
    return 0;
}

int ps__spec_parse(const char *text, struct ps_spec *spec, int flags, char *err, size_t errlen)
{
    char buf[PS_SPEC_TEXT_MAX];
    char *rest, *opts;
    int r;

    memset(spec, 0, sizeof(*spec));
    if (!text || !*text) {
        ps__set_error(err, errlen, "empty listen spec");
        return -EINVAL;
    }
    if (strlen(text) >= sizeof(buf)) {
        ps__set_error(err, errlen, "listen spec longer than %zu bytes", sizeof(buf) - 1);
        return -ENAMETOOLONG;
    }
    strcpy(buf, text);
    strcpy(spec->text, text);
    spec->backlog = DEFAULT_BACKLOG;
    spec->defer_accept = -1;

    rest = split_name(buf, spec, err, errlen);
    if (!rest)
        return -EINVAL;
    opts = strchr(rest, '?');
    if (opts)
        *opts++ = '\0';

    if (!strncmp(rest, "tcp://", 6)) {
        spec->proto = PS_PROTO_TCP;
        r = parse_inet(rest + 6, spec, flags, err, errlen);
    } else if (!strncmp(rest, "udp://", 6)) {
        spec->proto = PS_PROTO_UDP;
        r = parse_inet(rest + 6, spec, flags, err, errlen);
    } else if (!strncmp(rest, "unix:", 5)) {
        spec->proto = PS_PROTO_UNIX;
        r = parse_unix(rest + 5 + (rest[5] == '/' && rest[6] == '/' ? 1 : 0), spec, err, errlen);
    } else if (strstr(rest, "://")) {
        ps__set_error(err, errlen, "unknown scheme in '%s' (expected tcp://, udp:// or unix:)",
                      rest);
        return -EINVAL;
    } else {
        spec->proto = PS_PROTO_TCP;
        r = parse_inet(rest, spec, flags, err, errlen);
    }
    if (r < 0)
        return r;
    if (opts) {
        r = parse_options(opts, spec, err, errlen);
        if (r < 0)
            return r;
    }
    if (spec->proto == PS_PROTO_UNIX) {
        if (spec->reuse == PS_REUSE_PORT) {
            ps__set_error(err, errlen, "reuse=port is not possible for unix sockets");
            return -EINVAL;
        }
        spec->reuse = PS_REUSE_SHARED;
    } else if (spec->unix_mode) {
        ps__set_error(err, errlen, "option 'mode' applies to unix sockets only");
        return -EINVAL;
    }
    if (spec->proto != PS_PROTO_TCP && spec->defer_accept >= 0) {
        ps__set_error(err, errlen, "option 'defer' applies to TCP sockets only");
        return -EINVAL;
    }
    if (spec->proto != PS_PROTO_UDP && (spec->flows || spec->flow_idle_ms)) {
        ps__set_error(err, errlen, "options 'flows' and 'flow_idle' apply to UDP sockets only");
        return -EINVAL;
    }
    if (spec->reuse == PS_REUSE_DEFAULT)
        spec->reuse = ps__os_reuseport_balances() ? PS_REUSE_PORT : PS_REUSE_SHARED;
    return 0;
}

int ps_spec_parse(const char *text, struct ps_spec *spec, char *err, size_t errlen)
{
    return ps__spec_parse(text, spec, 0, err, errlen);
}

int ps_sockaddr_format(const struct sockaddr *sa, socklen_t salen, int socktype, char *buf,
                       size_t len)
{
    const char *scheme = socktype == SOCK_DGRAM ? "udp" : "tcp";
    char host[INET6_ADDRSTRLEN];
    int n;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        n = snprintf(buf, len, "%s://%s:%u", scheme, host, ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        if (sin6->sin6_scope_id) /* link-local: without its interface it is another address */
            n = snprintf(buf, len, "%s://[%s%%%u]:%u", scheme, host, (unsigned)sin6->sin6_scope_id,
                         ntohs(sin6->sin6_port));
        else
            n = snprintf(buf, len, "%s://[%s]:%u", scheme, host, ntohs(sin6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t plen = salen > offsetof(struct sockaddr_un, sun_path)
                          ? salen - offsetof(struct sockaddr_un, sun_path)
                          : 0;
        if (plen > sizeof(sun->sun_path))
            plen = sizeof(sun->sun_path);
        if (plen > 0 && sun->sun_path[0] == '\0')
            n = snprintf(buf, len, "unix:@%.*s", (int)(plen - 1), sun->sun_path + 1);
        else /* "unix://x" reads as "/x", so "//x" needs one more '/' to come back */
            n = snprintf(buf, len, "unix:%s%.*s",
                         sun->sun_path[0] == '/' && sun->sun_path[1] == '/' ? "/" : "",
                         (int)strnlen(sun->sun_path, plen), sun->sun_path);
    } else {
        return -EAFNOSUPPORT;
    }
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

int ps_spec_format(const struct ps_spec *spec, char *buf, size_t len)
{
    return ps_sockaddr_format((const struct sockaddr *)&spec->addr, spec->addrlen,
                              spec->proto == PS_PROTO_UDP ? SOCK_DGRAM : SOCK_STREAM, buf, len);
}

/* The host part of an address as a spec writes it: "127.0.0.1", "::1" (no
 * brackets), "/path" or "@abstract". */
static void host_of(const struct sockaddr_storage *ss, socklen_t len, char *host, size_t cap)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path)
                   : 0;

    host[0] = '\0';
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, host, (socklen_t)cap);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, host, (socklen_t)cap);
    else if (n && un->sun_path[0] == '\0') /* abstract: "@name" */
        snprintf(host, cap, "@%.*s", (int)(n - 1), un->sun_path + 1);
    else if (n)
        snprintf(host, cap, "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
}

/* What a spec would have said for the options the socket has. */
static void options_of(int fd, struct ps_spec *spec)
{
    unsigned queued = 0, limit = 0;
    socklen_t len;
    int on = 0;

    len = sizeof(on);
    spec->reuse = spec->proto != PS_PROTO_UNIX &&
                          getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == 0 && on
                      ? PS_REUSE_PORT
                      : PS_REUSE_SHARED;
    if (spec->addr.ss_family == AF_INET6) {
        len = sizeof(spec->v6only);
        getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &spec->v6only, &len);
    }
    /* a listener's TCP_INFO says its backlog (systemd's Backlog=, say) */
    spec->backlog =
        spec->proto == PS_PROTO_TCP && ps_listen_queue(fd, &queued, &limit) == 0 && limit
            ? (int)limit
            : DEFAULT_BACKLOG;
}

int ps__spec_of_fd(int fd, struct ps_spec *spec)
{
    socklen_t len = sizeof(int);
    int type = 0;

    memset(spec, 0, sizeof(*spec));
    spec->addrlen = sizeof(spec->addr);
    if (getsockname(fd, (struct sockaddr *)&spec->addr, &spec->addrlen) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return ps__neg_errno();
    switch (spec->addr.ss_family) {
    case AF_UNIX:
        spec->proto = PS_PROTO_UNIX;
        break;
    case AF_INET:
        spec->port = ntohs(((const struct sockaddr_in *)&spec->addr)->sin_port);
        spec->proto = type == SOCK_DGRAM ? PS_PROTO_UDP : PS_PROTO_TCP;
        break;
    case AF_INET6:
        spec->port = ntohs(((const struct sockaddr_in6 *)&spec->addr)->sin6_port);
        spec->proto = type == SOCK_DGRAM ? PS_PROTO_UDP : PS_PROTO_TCP;
        break;
    default:
        return -EAFNOSUPPORT;
    }
    if (spec->proto != PS_PROTO_UNIX && type != SOCK_STREAM && type != SOCK_DGRAM)
        return -ESOCKTNOSUPPORT;
    host_of(&spec->addr, spec->addrlen, spec->host, sizeof(spec->host));
    options_of(fd, spec);
    ps_spec_format(spec, spec->text, sizeof(spec->text));
    return 0;
}
