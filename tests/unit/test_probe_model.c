/*
 * test_probe_model.c - the probe's model of the documented rules, its list
 * of experiments and its sequences: pure logic, no sockets.
 */
#include "ps_test.h"

#include "probe_internal.h"

#include <errno.h>

static struct ps_probe_case mk(int proto, int state, int a1, int o1, int a2, int o2, int other)
{
    struct ps_probe_case c;

    memset(&c, 0, sizeof(c));
    c.proto = (unsigned char)proto;
    c.state = (unsigned char)state;
    c.first_addr = (unsigned char)a1;
    c.first_opts = (unsigned char)o1;
    c.second_addr = (unsigned char)a2;
    c.second_opts = (unsigned char)o2;
    c.other_uid = (unsigned char)other;
    ps_probe_expect(&c);
    return c;
}

#define A  PS_PROBE_REUSEADDR
#define P  PS_PROBE_REUSEPORT
#define AP (PS_PROBE_REUSEADDR | PS_PROBE_REUSEPORT)

static void test_overlap(void **state)
{
    static const struct {
        int a, b, want;
    } t[] = {
        {PS_PA_LO, PS_PA_LO, 1},
        {PS_PA_LO, PS_PA_LO2, 0},
        {PS_PA_ANY4, PS_PA_LO, 1},
        {PS_PA_ANY4, PS_PA_ANY6_V6ONLY, 0},
        {PS_PA_ANY6, PS_PA_LO, 1},
        {PS_PA_ANY6, PS_PA_ANY4, 1},
        {PS_PA_ANY6_V6ONLY, PS_PA_LO, 0},
        {PS_PA_LO6, PS_PA_LO, 0},
        {PS_PA_LO6, PS_PA_ANY4, 0},
        {PS_PA_LO6, PS_PA_ANY6_V6ONLY, 1},
        {PS_PA_MAPPED, PS_PA_LO, 1},
        {PS_PA_MAPPED, PS_PA_LO2, 0},
        {PS_PA_MAPPED, PS_PA_ANY6, 1},
        {PS_PA_MAPPED, PS_PA_ANY6_V6ONLY, 0},
        {PS_PA_ANY6, PS_PA_ANY6_V6ONLY, 1},
        {PS_PA_MCAST, PS_PA_ANY4, 1},
        {PS_PA_MCAST, PS_PA_BCAST, 0},
        {PS_PA_BCAST, PS_PA_BCAST, 1},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (ps_probe_overlap(t[i].a, t[i].b) != t[i].want ||
            ps_probe_overlap(t[i].b, t[i].a) != t[i].want)
            fail_msg("overlap(%s, %s) should be %d", ps_probe_addr_info(t[i].a)->label,
                     ps_probe_addr_info(t[i].b)->label, t[i].want);
    }
}

static void expect(struct ps_probe_case c, int bind, int listen, const char *why_part)
{
    assert_int_equal(c.expect_bind, bind);
    assert_int_equal(c.expect_listen, listen);
    if (!strstr(ps_probe_why(&c), why_part))
        fail_msg("why '%s' should mention '%s'", ps_probe_why(&c), why_part);
}

static void test_rules_tcp(void **state)
{
    (void)state;
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, 0, PS_PA_LO, 0, 0), EADDRINUSE,
           PS_PROBE_NA, "listens");
    expect(mk(PS_PROBE_TCP, PS_PROBE_BOUND, PS_PA_LO, 0, PS_PA_LO, 0, 0), EADDRINUSE, PS_PROBE_NA,
           "neither");
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, A, PS_PA_LO, A, 0), EADDRINUSE,
           PS_PROBE_NA, "listens");
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, P, PS_PA_LO, P, 0), 0, 0,
           "same effective UID");
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, P, PS_PA_LO, P, 1), EADDRINUSE,
           PS_PROBE_NA, "same effective UID");
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, 0, PS_PA_LO2, 0, 0), 0, 0,
           "do not overlap");
    expect(mk(PS_PROBE_TCP, PS_PROBE_BOUND, PS_PA_LO, A, PS_PA_LO, A, 1), 0, 0, "not listening");
    expect(mk(PS_PROBE_TCP, PS_PROBE_BOUND, PS_PA_LO, A, PS_PA_LO, 0, 0), EADDRINUSE, PS_PROBE_NA,
           "only one");
    expect(mk(PS_PROBE_TCP, PS_PROBE_TIME_WAIT, PS_PA_LO, A, PS_PA_LO, A, 0), 0, 0, "TIME_WAIT");
    expect(mk(PS_PROBE_TCP, PS_PROBE_ACCEPTED_TIME_WAIT, PS_PA_LO, 0, PS_PA_ANY4, 0, 0), EADDRINUSE,
           PS_PROBE_NA, "TIME_WAIT");
    expect(mk(PS_PROBE_TCP, PS_PROBE_TIME_WAIT, PS_PA_LO, P, PS_PA_LO, P, 1), EADDRINUSE,
           PS_PROBE_NA, "same effective UID");
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_ANY6_V6ONLY, 0, PS_PA_ANY4, 0, 0), 0, 0,
           "do not overlap");
    expect(mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, 0, PS_PA_MAPPED, 0, 0), EADDRINUSE,
           PS_PROBE_NA, "listens");
}

static void test_rules_udp(void **state)
{
    (void)state;
    /* UDP never listens: no listen expected even when the bind is */
    expect(mk(PS_PROBE_UDP, PS_PROBE_BOUND, PS_PA_MCAST, A, PS_PA_MCAST, A, 0), 0, PS_PROBE_NA,
           "multicast");
    expect(mk(PS_PROBE_UDP, PS_PROBE_BOUND, PS_PA_LO, A, PS_PA_LO, A, 1), 0, PS_PROBE_NA, "UDP");
    expect(mk(PS_PROBE_UDP, PS_PROBE_CONNECTED, PS_PA_LO, P, PS_PA_LO, P, 1), EADDRINUSE,
           PS_PROBE_NA, "same effective UID");
    expect(mk(PS_PROBE_UDP, PS_PROBE_BOUND, PS_PA_LO, P, PS_PA_ANY4, 0, 0), EADDRINUSE, PS_PROBE_NA,
           "including the first");
}

static void test_agreement_and_findings(void **state)
{
    struct ps_probe_case c = mk(PS_PROBE_TCP, PS_PROBE_TIME_WAIT, PS_PA_LO, P, PS_PA_LO, P, 1);

    (void)state;
    c.bind_err = EADDRINUSE;
    c.listen_err = PS_PROBE_NA;
    assert_true(ps_probe_agrees(&c));
    assert_null(ps_probe_finding(&c)); /* no disagreement, nothing to explain */
    /* what this kernel does: the UID check is skipped against TIME_WAIT */
    c.bind_err = 0;
    c.listen_err = 0;
    assert_false(ps_probe_agrees(&c));
    assert_non_null(ps_probe_finding(&c));
    assert_non_null(strstr(ps_probe_finding(&c), "TIME_WAIT"));
    /* a disagreement nobody explained stays unexplained */
    c = mk(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, 0, PS_PA_LO, 0, 0);
    c.bind_err = 0;
    c.listen_err = 0;
    assert_false(ps_probe_agrees(&c));
    assert_null(ps_probe_finding(&c));
    /* bind ok but listen failing is a disagreement too */
    c = mk(PS_PROBE_TCP, PS_PROBE_BOUND, PS_PA_LO, A, PS_PA_LO, A, 0);
    c.bind_err = 0;
    c.listen_err = EADDRINUSE;
    assert_false(ps_probe_agrees(&c));
}

static struct ps_probe_case cases[PS_PROBE_MAX_CASES];

static void test_enumerate(void **state)
{
    int n_same, n_all, i, j, rules_used[32] = {0};

    (void)state;
    n_same = ps__probe_enumerate(cases, PS_PROBE_MAX_CASES, 0);
    n_all = ps__probe_enumerate(cases, PS_PROBE_MAX_CASES, 1);
    assert_true(n_same >= 300);
    assert_true(n_all > n_same);
    assert_true(n_all < PS_PROBE_MAX_CASES);
    assert_int_equal(n_all % 16, 0); /* every pair with all 4 x 4 options */
    for (i = 0; i < n_all; i++) {
        struct ps_probe_case *c = &cases[i];

        assert_true(c->first_addr < PS_PA_COUNT && c->second_addr < PS_PA_COUNT);
        assert_true(c->first_opts < PS_PROBE_NOPTS && c->second_opts < PS_PROBE_NOPTS);
        if (c->proto == PS_PROBE_UDP)
            assert_true(c->state == PS_PROBE_BOUND || c->state == PS_PROBE_CONNECTED);
        else
            assert_true(c->first_addr != PS_PA_MCAST && c->first_addr != PS_PA_BCAST);
        if (c->state >= PS_PROBE_CONNECTED) /* a connection has a specific local address */
            assert_true(c->first_addr == PS_PA_LO || c->first_addr == PS_PA_LO6);
        ps_probe_expect(c);
        rules_used[c->rule] = 1;
    }
    /* no case appears twice (quadratic, but only over one plan's neighbours) */
    for (i = 0; i < n_all; i++)
        for (j = i + 1; j < n_all && j < i + 600; j++)
            if (!memcmp(&cases[i], &cases[j], offsetof(struct ps_probe_case, bind_err)))
                fail_msg("case %d and %d are the same experiment", i, j);
    /* every rule of the model decides some case: no dead rules */
    for (i = 0; i < 11; i++)
        if (!rules_used[i])
            fail_msg("rule %d decides no case", i);
    assert_int_equal(ps__probe_enumerate(cases, 10, 1), 10); /* cap respected */
}

static void test_sequences(void **state)
{
    struct ps_probe_seq_result r;
    int i, k, step, made[PS_PROBE_SEQ_SOCKS];

    (void)state;
    assert_true(ps_probe_nseqs() >= 4 && ps_probe_nseqs() <= PS_PROBE_MAX_SEQS);
    for (i = 0; i < ps_probe_nseqs(); i++) {
        const struct ps_probe_seq *s = ps_probe_seq(i);

        assert_true(s->nsteps > 0 && s->nsteps <= PS_PROBE_SEQ_STEPS);
        assert_non_null(s->why);
        assert_non_null(s->finding);
        memset(made, 0, sizeof(made));
        for (step = 0; step < s->nsteps; step++) {
            k = s->steps[step].sock;
            assert_true(k < PS_PROBE_SEQ_SOCKS);
            /* a socket's first step binds it: that is where its family comes from */
            if (!made[k])
                assert_int_equal(s->steps[step].op, PS_SEQ_BIND);
            made[k] = 1;
            if (s->proto == PS_PROBE_UDP)
                assert_int_not_equal(s->steps[step].op, PS_SEQ_LISTEN);
        }
        /* results equal to the expectations agree; one step off does not */
        memset(&r, 0, sizeof(r));
        for (step = 0; step < s->nsteps; step++)
            r.err[step] = s->steps[step].expect;
        assert_true(ps_probe_seq_agrees(s, &r));
        r.err[s->nsteps - 1] = r.err[s->nsteps - 1] == 0 ? EADDRINUSE : 0;
        assert_false(ps_probe_seq_agrees(s, &r));
        r.setup_err = EPERM; /* did not run: no disagreement claimed */
        assert_true(ps_probe_seq_agrees(s, &r));
    }
}

static void test_names(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < PS_PF_COUNT; i++)
        assert_true(strlen(ps_probe_feature_name((enum ps_probe_feature_id)i)) > 3);
    assert_string_equal(ps_probe_feature_name(PS_PF_MIGRATE_REQ), "tcp_migrate_req");
    assert_string_equal(ps_probe_addr_info(PS_PA_ANY6_V6ONLY)->text, "::");
    assert_int_equal(ps_probe_addr_info(PS_PA_ANY6_V6ONLY)->v6only, 1);
    assert_int_equal(ps_probe_addr_info(PS_PA_LO)->v6only, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlap),   cmocka_unit_test(test_rules_tcp),
        cmocka_unit_test(test_rules_udp), cmocka_unit_test(test_agreement_and_findings),
        cmocka_unit_test(test_enumerate), cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
