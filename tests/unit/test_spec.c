/*
 * test_spec.c - listen specs: every accepted form, every kind of mistake
 * (with the errno and the part named in the error line), formatting.
 */
#include "ps_test.h"

#include <stddef.h>

#include "core.h"
#include "portshare.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

static struct ps_spec spec;
static char err[256];

static void parse_ok(const char *text)
{
    int r;

    err[0] = '\0';
    r = ps_spec_parse(text, &spec, err, sizeof(err));
    if (r != 0)
        fail_msg("'%s' should parse, got %s: %s", text, ps_errno_name(r), err);
}

static void expect_format(const char *want)
{
    char buf[PS_SPEC_TEXT_MAX];

    assert_int_equal(ps_spec_format(&spec, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
}

static const struct sockaddr_in *sin4(void)
{
    return (const struct sockaddr_in *)&spec.addr;
}

static const struct sockaddr_in6 *sin6(void)
{
    return (const struct sockaddr_in6 *)&spec.addr;
}

static void test_tcp_full_form(void **state)
{
    (void)state;
    parse_ok("tcp://127.0.0.1:8080");
    assert_string_equal(spec.text, "tcp://127.0.0.1:8080");
    assert_string_equal(spec.name, "");
    assert_int_equal(spec.proto, PS_PROTO_TCP);
    assert_string_equal(spec.host, "127.0.0.1");
    assert_int_equal(spec.port, 8080);
    assert_int_equal(spec.backlog, 4096);
    assert_int_equal(spec.v6only, 0);
    assert_int_equal(spec.reuse, PS_REUSE_PORT);
    assert_int_equal(spec.unix_mode, 0);
    assert_int_equal(spec.addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(sin4()->sin_family, AF_INET);
    assert_int_equal(ntohs(sin4()->sin_port), 8080);
    assert_int_equal(ntohl(sin4()->sin_addr.s_addr), INADDR_LOOPBACK);
    expect_format("tcp://127.0.0.1:8080");
}

static void test_udp_ipv6(void **state)
{
    (void)state;
    parse_ok("udp://[::1]:53");
    assert_int_equal(spec.proto, PS_PROTO_UDP);
    assert_string_equal(spec.host, "::1");
    assert_int_equal(spec.addrlen, sizeof(struct sockaddr_in6));
    assert_int_equal(sin6()->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6()->sin6_port), 53);
    assert_true(IN6_IS_ADDR_LOOPBACK(&sin6()->sin6_addr));
    expect_format("udp://[::1]:53");
}

static void test_shorthand(void **state)
{
    (void)state;
    parse_ok(":8080");
    assert_int_equal(spec.proto, PS_PROTO_TCP);
    assert_string_equal(spec.host, "");
    assert_int_equal(sin4()->sin_addr.s_addr, htonl(INADDR_ANY));
    expect_format("tcp://0.0.0.0:8080");

    parse_ok("127.0.0.2:0");
    assert_int_equal(spec.proto, PS_PROTO_TCP);
    assert_int_equal(spec.port, 0);
    expect_format("tcp://127.0.0.2:0");

    parse_ok("*:81");
    expect_format("tcp://0.0.0.0:81");

    parse_ok("[::]:82");
    assert_int_equal(spec.proto, PS_PROTO_TCP);
    assert_true(IN6_IS_ADDR_UNSPECIFIED(&sin6()->sin6_addr));
    expect_format("tcp://[::]:82");

    parse_ok("tcp://:83");
    expect_format("tcp://0.0.0.0:83");
}

static void test_names(void **state)
{
    (void)state;
    parse_ok("web=tcp://0.0.0.0:80");
    assert_string_equal(spec.name, "web");
    assert_string_equal(spec.host, "0.0.0.0");
    expect_format("tcp://0.0.0.0:80");

    parse_ok("a.b-c_9=:80");
    assert_string_equal(spec.name, "a.b-c_9");

    parse_ok("v6=[::1]:80");
    assert_string_equal(spec.name, "v6");
    assert_string_equal(spec.host, "::1");

    parse_ok("sock=unix:/run/x.sock");
    assert_string_equal(spec.name, "sock");
    assert_int_equal(spec.proto, PS_PROTO_UNIX);

    /* an '=' after the address starts is an option, not a name */
    parse_ok("tcp://127.0.0.1:80?backlog=5");
    assert_string_equal(spec.name, "");
    assert_int_equal(spec.backlog, 5);
}

static void test_options(void **state)
{
    (void)state;
    parse_ok("tcp://[::]:80?v6only=on&backlog=512&reuse=shared");
    assert_int_equal(spec.v6only, 1);
    assert_int_equal(spec.backlog, 512);
    assert_int_equal(spec.reuse, PS_REUSE_SHARED);

    parse_ok("[::]:80?v6only=off&reuse=port");
    assert_int_equal(spec.v6only, 0);
    assert_int_equal(spec.reuse, PS_REUSE_PORT);

    parse_ok("[::]:80?v6only=1");
    assert_int_equal(spec.v6only, 1);
    parse_ok("[::]:80?v6only=true&v6only=false");
    assert_int_equal(spec.v6only, 0); /* the last one wins */

    parse_ok("udp://127.0.0.1:5353?reuse=shared");
    assert_int_equal(spec.reuse, PS_REUSE_SHARED);

    parse_ok("unix:/tmp/x.sock?mode=0660&backlog=16");
    assert_int_equal(spec.unix_mode, 0660);
    assert_int_equal(spec.backlog, 16);

    parse_ok("tcp://127.0.0.1:80?defer=5");
    assert_int_equal(spec.defer_accept, 5);
    parse_ok("tcp://127.0.0.1:80?defer=0");
    assert_int_equal(spec.defer_accept, 0); /* given: off, even for serve */
    parse_ok("tcp://127.0.0.1:80");
    assert_int_equal(spec.defer_accept, -1); /* not given */

    parse_ok("unix:/tmp/x.sock?mode=600");
    assert_int_equal(spec.unix_mode, 0600);

    /* empty option lists and empty items are harmless */
    parse_ok("tcp://127.0.0.1:80?");
    parse_ok("tcp://127.0.0.1:80?&&backlog=1&");
    assert_int_equal(spec.backlog, 1);
}

static void test_unix(void **state)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&spec.addr;

    (void)state;
    parse_ok("unix:/tmp/ps.sock");
    assert_int_equal(spec.proto, PS_PROTO_UNIX);
    assert_int_equal(spec.reuse, PS_REUSE_SHARED); /* unix sockets are always shared */
    assert_string_equal(spec.host, "/tmp/ps.sock");
    assert_int_equal(sun->sun_family, AF_UNIX);
    assert_string_equal(sun->sun_path, "/tmp/ps.sock");
    expect_format("unix:/tmp/ps.sock");

    parse_ok("unix:@ps-abstract");
    assert_int_equal(sun->sun_path[0], '\0');
    assert_memory_equal(sun->sun_path + 1, "ps-abstract", 11);
    /* the abstract name is exactly its bytes: no trailing NUL counted */
    assert_int_equal(spec.addrlen, offsetof(struct sockaddr_un, sun_path) + 12);
    expect_format("unix:@ps-abstract");

    parse_ok("unix://tmp/ps.sock"); /* URL-ish form: one '/' is the path's */
    assert_string_equal(spec.host, "/tmp/ps.sock");

    parse_ok("unix:./rel.sock");
    expect_format("unix:./rel.sock");
}

static void test_localhost_resolves(void **state)
{
    (void)state;
    parse_ok("tcp://localhost:8080");
    assert_string_equal(spec.host, "localhost");
    if (spec.addr.ss_family == AF_INET) {
        assert_int_equal(ntohl(sin4()->sin_addr.s_addr) >> 24, 127);
        assert_int_equal(ntohs(sin4()->sin_port), 8080);
    } else {
        assert_int_equal(spec.addr.ss_family, AF_INET6);
        assert_true(IN6_IS_ADDR_LOOPBACK(&sin6()->sin6_addr));
        assert_int_equal(ntohs(sin6()->sin6_port), 8080);
    }
    parse_ok("udp://localhost:53");
    assert_int_equal(spec.proto, PS_PROTO_UDP);
}

static void test_numeric_flag_never_resolves(void **state)
{
    (void)state;
    /* the fuzzer's mode: a name is refused rather than looked up */
    assert_int_equal(
        ps__spec_parse("tcp://localhost:80", &spec, PS__SPEC_NUMERIC, err, sizeof(err)),
        -EADDRNOTAVAIL);
    assert_non_null(strstr(err, "cannot resolve host 'localhost'"));
    assert_int_equal(ps__spec_parse("tcp://[::1]:80", &spec, PS__SPEC_NUMERIC, err, sizeof(err)),
                     0);
    assert_int_equal(ps__spec_parse("tcp://10.0.0.1:80", &spec, PS__SPEC_NUMERIC, err, sizeof(err)),
                     0);
}

struct bad_spec {
    const char *text;
    int err;
    const char *says; /* must appear in the error line */
};

static void test_bad_specs(void **state)
{
    static const struct bad_spec cases[] = {
        {"", -EINVAL, "empty listen spec"},
        {"bad name!=:80", -EINVAL, "bad name 'bad name!'"},
        {"=:80", -EINVAL, "bad name ''"},
        {"http://127.0.0.1:80", -EINVAL, "unknown scheme in 'http://127.0.0.1:80'"},
        {"tcp://127.0.0.1", -EINVAL, "missing ':PORT' in '127.0.0.1'"},
        {"8080", -EINVAL, "missing ':PORT' in '8080'"},
        {"tcp://127.0.0.1:", -EINVAL, "bad port ''"},
        {"tcp://127.0.0.1:65536", -EINVAL, "bad port '65536'"},
        {"tcp://127.0.0.1:-1", -EINVAL, "bad port '-1'"},
        {"tcp://127.0.0.1:80x", -EINVAL, "bad port '80x'"},
        {"tcp://127.0.0.1: 80", -EINVAL, "bad port ' 80'"},
        {"tcp://127.0.0.1:+80", -EINVAL, "bad port '+80'"},
        {"udp://127.0.0.1:99999999999999999999", -EINVAL, "bad port '9999"},
        {"tcp://::1:80", -EINVAL, "IPv6 address '::1' must be written in brackets"},
        {"tcp://[::1:80", -EINVAL, "missing ']'"},
        {"tcp://[::1]80", -EINVAL, "missing ':PORT' after '[::1]'"},
        {"tcp://[]:80", -EINVAL, "'[]' is not an IPv6 address"},
        {"tcp://[127.0.0.1]:80", -EINVAL, "'[127.0.0.1]' is not an IPv6 address"},
        {"tcp://127.0.0.1:80?backlog", -EINVAL, "option 'backlog' has no value"},
        {"tcp://127.0.0.1:80?backlog=0", -EINVAL, "bad value '0' for option 'backlog'"},
        {"tcp://127.0.0.1:80?backlog=12k", -EINVAL, "bad value '12k' for option 'backlog'"},
        {"[::]:80?v6only=maybe", -EINVAL, "bad value 'maybe' for option 'v6only'"},
        {":80?reuse=sometimes", -EINVAL, "bad value 'sometimes' for option 'reuse'"},
        {":80?color=red", -EINVAL, "unknown option 'color'"},
        {":80?mode=0600", -EINVAL, "option 'mode' applies to unix sockets only"},
        {":80?defer=soon", -EINVAL, "bad value 'soon' for option 'defer'"},
        {":80?defer=-1", -EINVAL, "bad value '-1' for option 'defer'"},
        {":80?defer=3601", -EINVAL, "bad value '3601' for option 'defer'"},
        {"udp://127.0.0.1:53?defer=1", -EINVAL, "option 'defer' applies to TCP sockets only"},
        {"unix:/tmp/x?defer=1", -EINVAL, "option 'defer' applies to TCP sockets only"},
        {"unix:/tmp/x?mode=0999", -EINVAL, "bad value '0999' for option 'mode'"},
        {"unix:/tmp/x?mode=-1", -EINVAL, "bad value '-1' for option 'mode'"},
        {"unix:/tmp/x?mode=+7", -EINVAL, "bad value '+7' for option 'mode'"},
        {"unix:/tmp/x?mode=", -EINVAL, "bad value '' for option 'mode'"},
        {"unix:/tmp/x?reuse=port", -EINVAL, "reuse=port is not possible for unix sockets"},
        {"unix:relative.sock", -EINVAL, "unix socket 'relative.sock' must be an absolute"},
        {"unix:", -EINVAL, "unix socket '' must be an absolute"},
        {"unix:@", -EINVAL, "empty unix socket name '@'"},
    };
    size_t i;
    int r;

    (void)state;
    for (i = 0; i < PS__ARRAY_LEN(cases); i++) {
        err[0] = '\0';
        r = ps_spec_parse(cases[i].text, &spec, err, sizeof(err));
        if (r != cases[i].err || !strstr(err, cases[i].says))
            fail_msg("'%s': want %s \"%s\", got %s \"%s\"", cases[i].text,
                     ps_errno_name(cases[i].err), cases[i].says, ps_errno_name(r), err);
    }
}

static void test_too_long(void **state)
{
    char text[700], path[200];

    (void)state;
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    assert_int_equal(ps_spec_parse(text, &spec, err, sizeof(err)), -ENAMETOOLONG);
    assert_non_null(strstr(err, "longer than 511 bytes"));

    /* a name one byte over the limit */
    memset(text, 'n', PS_SPEC_NAME_MAX);
    strcpy(text + PS_SPEC_NAME_MAX, "=:80");
    assert_int_equal(ps_spec_parse(text, &spec, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "at most 63 characters"));
    /* and one that just fits */
    strcpy(text + PS_SPEC_NAME_MAX - 1, "=:80");
    parse_ok(text);
    assert_int_equal(strlen(spec.name), PS_SPEC_NAME_MAX - 1);

    /* sun_path holds 107 bytes and the NUL */
    memset(path, 'p', sizeof(path));
    memcpy(text, "unix:/", 6);
    memcpy(text + 6, path, 107);
    text[6 + 107] = '\0';
    assert_int_equal(ps_spec_parse(text, &spec, err, sizeof(err)), -ENAMETOOLONG);
    assert_non_null(strstr(err, "unix socket path too long (at most 107 bytes)"));
    text[6 + 106] = '\0';
    parse_ok(text);
}

static void test_null_and_tiny_error_buffers(void **state)
{
    char tiny[8];

    (void)state;
    assert_int_equal(ps_spec_parse(NULL, &spec, err, sizeof(err)), -EINVAL);
    /* a NULL error buffer is allowed, and a short one is cut, not overrun */
    assert_int_equal(ps_spec_parse("tcp://x", &spec, NULL, 0), -EINVAL);
    memset(tiny, 'X', sizeof(tiny));
    assert_int_equal(ps_spec_parse("tcp://127.0.0.1:99999", &spec, tiny, sizeof(tiny)), -EINVAL);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

static void test_format(void **state)
{
    struct sockaddr_in6 a6;
    struct sockaddr_un un;
    struct sockaddr sa;
    char buf[64];

    (void)state;
    parse_ok("tcp://127.0.0.1:8080");
    /* exactly fits vs one byte short */
    assert_int_equal(ps_spec_format(&spec, buf, strlen("tcp://127.0.0.1:8080") + 1), 0);
    assert_int_equal(ps_spec_format(&spec, buf, strlen("tcp://127.0.0.1:8080")), -ENAMETOOLONG);

    /* a link-local address keeps its interface, or it means another one */
    parse_ok("tcp://[fe80::1%1]:80");
    assert_int_equal(sin6()->sin6_scope_id, 1);
    expect_format("tcp://[fe80::1%1]:80");

    memset(&a6, 0, sizeof(a6));
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons(443);
    inet_pton(AF_INET6, "2001:db8::7", &a6.sin6_addr);
    assert_int_equal(
        ps_sockaddr_format((struct sockaddr *)&a6, sizeof(a6), SOCK_STREAM, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "tcp://[2001:db8::7]:443");
    assert_int_equal(
        ps_sockaddr_format((struct sockaddr *)&a6, sizeof(a6), SOCK_DGRAM, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "udp://[2001:db8::7]:443");

    /* a unix address as getsockname() returns it: the length decides */
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, "\0abc", 4);
    assert_int_equal(ps_sockaddr_format((struct sockaddr *)&un,
                                        offsetof(struct sockaddr_un, sun_path) + 4, SOCK_STREAM,
                                        buf, sizeof(buf)),
                     0);
    assert_string_equal(buf, "unix:@abc");
    /* an unnamed unix socket (socketpair) */
    assert_int_equal(ps_sockaddr_format((struct sockaddr *)&un, sizeof(sa_family_t), SOCK_STREAM,
                                        buf, sizeof(buf)),
                     0);
    assert_string_equal(buf, "unix:");

    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_APPLETALK;
    assert_int_equal(ps_sockaddr_format(&sa, sizeof(sa), SOCK_STREAM, buf, sizeof(buf)),
                     -EAFNOSUPPORT);
}

/* Formatting a parsed spec and parsing that again gives the same address. */
static void test_round_trip(void **state)
{
    static const char *const texts[] = {
        "tcp://10.1.2.3:1",
        "udp://[fe80::1]:65535",
        ":0",
        "x=[::ffff:1.2.3.4]:9",
        "unix:/a/b?mode=0600",
        "unix:@n",
        "*:7",
        "[::]:8?v6only=on",
        "tcp://[::1]:80?backlog=1",
    };
    struct ps_spec again;
    char buf[PS_SPEC_TEXT_MAX];
    size_t i;

    (void)state;
    for (i = 0; i < PS__ARRAY_LEN(texts); i++) {
        parse_ok(texts[i]);
        assert_int_equal(ps_spec_format(&spec, buf, sizeof(buf)), 0);
        assert_int_equal(ps_spec_parse(buf, &again, err, sizeof(err)), 0);
        assert_int_equal(again.proto, spec.proto);
        assert_int_equal(again.addrlen, spec.addrlen);
        assert_memory_equal(&again.addr, &spec.addr, spec.addrlen);
    }
}

static void test_errno_names(void **state)
{
    (void)state;
    assert_string_equal(ps_errno_name(-EADDRINUSE), "EADDRINUSE");
    assert_string_equal(ps_errno_name(EACCES), "EACCES");
    assert_string_equal(ps_errno_name(-4000), "E4000");
    assert_string_equal(ps_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(ps_strerror(ENOENT), strerror(ENOENT));
}

/* The reserved bytes: zero after a parse, even over a dirty struct, and
 * after the last field (the fields keep the offsets programs were built
 * with: defer_accept was the last one in 0.1.0). */
static void test_reserved_room(void **state)
{
    struct ps_spec sp;
    size_t i;

    (void)state;
    memset(&sp, 0xa5, sizeof(sp));
    assert_int_equal(ps_spec_parse("tcp://127.0.0.1:80?defer=3", &sp, NULL, 0), 0);
    for (i = 0; i < sizeof(sp.reserved); i++)
        assert_int_equal(sp.reserved[i], 0);
    assert_int_equal(offsetof(struct ps_spec, reserved) + sizeof(sp.reserved),
                     offsetof(struct ps_spec, defer_accept) + sizeof(int) + 120);
    assert_int_equal(offsetof(struct ps_spec, flows),
                     offsetof(struct ps_spec, defer_accept) + sizeof(int));
    assert_true(sizeof(sp.reserved) >= 64);
}

/* flows and flow_idle: UDP only, positive, a duration */
static void test_flow_options(void **state)
{
    struct ps_spec sp;

    (void)state;
    assert_int_equal(
        ps_spec_parse("udp://127.0.0.1:53?flows=1000&flow_idle=45s", &sp, err, sizeof(err)), 0);
    assert_int_equal(sp.flows, 1000);
    assert_int_equal(sp.flow_idle_ms, 45000);
    assert_int_equal(ps_spec_parse("udp://127.0.0.1:53", &sp, err, sizeof(err)), 0);
    assert_int_equal(sp.flows, 0);
    assert_int_equal(sp.flow_idle_ms, 0);
    assert_int_equal(ps_spec_parse("udp://127.0.0.1:53?flow_idle=500ms", &sp, err, sizeof(err)), 0);
    assert_int_equal(sp.flow_idle_ms, 500);
    assert_int_equal(ps_spec_parse("tcp://127.0.0.1:80?flows=10", &sp, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "UDP sockets only"));
    assert_int_equal(ps_spec_parse("udp://127.0.0.1:53?flows=0", &sp, err, sizeof(err)), -EINVAL);
    assert_int_equal(ps_spec_parse("udp://127.0.0.1:53?flow_idle=0", &sp, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(ps_spec_parse("udp://127.0.0.1:53?flow_idle=3x", &sp, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "flow_idle"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_full_form),
        cmocka_unit_test(test_udp_ipv6),
        cmocka_unit_test(test_shorthand),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_unix),
        cmocka_unit_test(test_localhost_resolves),
        cmocka_unit_test(test_numeric_flag_never_resolves),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_null_and_tiny_error_buffers),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_errno_names),
        cmocka_unit_test(test_reserved_room),
        cmocka_unit_test(test_flow_options),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
