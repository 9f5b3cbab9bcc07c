/*
 * fuzz_spec.c - libFuzzer target for the listen-spec parser.
 *
 * Every input is parsed in numeric-only mode (PS__SPEC_NUMERIC: a host name
 * is refused instead of resolved, so the fuzzer never reaches the resolver
 * or the network).  A refusal must be one of the documented errnos with a
 * non-empty error line; an accepted spec must satisfy the header's
 * invariants, and formatting it and parsing the result again must give the
 * same address (the round trip the supervisor relies on when it prints a
 * spec into status output and reads it back).
 */
#include "core.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_spec: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_refusal(int r, const char *err)
{
    CHECK(r == -EINVAL || r == -ENAMETOOLONG || r == -EADDRNOTAVAIL);
    CHECK(err[0] != '\0');
    CHECK(memchr(err, '\0', 256) != NULL);
}

static void check_invariants(const struct ps_spec *spec)
{
    int family = spec->addr.ss_family;

    CHECK(spec->proto == PS_PROTO_TCP || spec->proto == PS_PROTO_UDP ||
          spec->proto == PS_PROTO_UNIX);
    CHECK(spec->reuse == PS_REUSE_PORT || spec->reuse == PS_REUSE_SHARED);
    CHECK(spec->port <= 65535);
    CHECK(spec->backlog >= 1);
    CHECK(spec->v6only == 0 || spec->v6only == 1);
    CHECK(spec->unix_mode <= 0777);
    CHECK(memchr(spec->name, '\0', sizeof(spec->name)) != NULL);
    CHECK(strchr(spec->name, ':') == NULL); /* it goes into LISTEN_FDNAMES */
    CHECK(spec->addrlen > 0 && spec->addrlen <= sizeof(spec->addr));
    if (spec->proto == PS_PROTO_UNIX) {
        CHECK(family == AF_UNIX);
        CHECK(spec->reuse == PS_REUSE_SHARED);
    } else {
        CHECK(family == AF_INET || family == AF_INET6);
        CHECK(spec->unix_mode == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[PS_SPEC_TEXT_MAX + 64], err[256], out[PS_SPEC_TEXT_MAX], out2[PS_SPEC_TEXT_MAX];
    struct ps_spec spec, again;
    int r;

    if (size >= sizeof(text))
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    err[0] = '\0';
    r = ps__spec_parse(text, &spec, PS__SPEC_NUMERIC, err, sizeof(err));
    if (r < 0) {
        check_refusal(r, err);
        return 0;
    }
    CHECK(r == 0);
    check_invariants(&spec);

    CHECK(ps_spec_format(&spec, out, sizeof(out)) == 0);
    err[0] = '\0';
    r = ps__spec_parse(out, &again, PS__SPEC_NUMERIC, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "fuzz_spec: '%s' formats as '%s', which does not parse: %s\n", text, out,
                err);
        abort();
    }
    CHECK(again.proto == spec.proto);
    CHECK(again.addrlen == spec.addrlen);
    CHECK(memcmp(&again.addr, &spec.addr, spec.addrlen) == 0);
    CHECK(ps_spec_format(&again, out2, sizeof(out2)) == 0);
    CHECK(strcmp(out, out2) == 0);
    return 0;
}
