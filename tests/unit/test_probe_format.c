/*
 * test_probe_format.c - how `portshare probe` shows results: table cells,
 * the JSON document, the order of the text sections.  Includes the CLI's
 * source to reach its static functions, with a synthetic result.
 */
#include "ps_test.h"

#include "../../src/cli/cmd_probe.c"

/* cmd_probe.c calls these from main.c */
int ps_cli_fatal(int code, const char *fmt, ...)
{
    (void)fmt;
    return code;
}

void ps_cli_warn(const char *fmt, ...)
{
    (void)fmt;
}

static struct ps_probe_result res;

static void add_case(int proto, int state, int a1, int o1, int a2, int o2, int other, short bind,
                     short listen)
{
    struct ps_probe_case *c = &res.cases[res.ncases++];

    memset(c, 0, sizeof(*c));
    c->proto = (unsigned char)proto;
    c->state = (unsigned char)state;
    c->first_addr = (unsigned char)a1;
    c->first_opts = (unsigned char)o1;
    c->second_addr = (unsigned char)a2;
    c->second_opts = (unsigned char)o2;
    c->other_uid = (unsigned char)other;
    c->bind_err = bind;
    c->listen_err = listen;
    ps_probe_expect(c);
}

/* A small result: a TCP listening row with one cell missing, one
 * disagreement (TIME_WAIT, other UID), a UDP case. */
static void make_result(void)
{
    int o1, o2;

    memset(&res, 0, sizeof(res));
    snprintf(res.kernel, sizeof(res.kernel), "Linux 9.9 \"test\"");
    res.euid = 0;
    res.netns = 1;
    res.other_uid = 65534;
    res.host_migrate_req = 0;
    for (o1 = 0; o1 < 4; o1++)
        for (o2 = 0; o2 < 4; o2++)
            if (!(o1 == 3 && o2 == 3)) /* dropped: shows as -- */
                add_case(PS_PROBE_TCP, PS_PROBE_LISTENING, PS_PA_LO, o1, PS_PA_LO, o2, 0,
                         (o1 & 2) && (o2 & 2) ? 0 : EADDRINUSE,
                         (o1 & 2) && (o2 & 2) ? 0 : PS_PROBE_NA);
    add_case(PS_PROBE_TCP, PS_PROBE_TIME_WAIT, PS_PA_LO, 2, PS_PA_LO, 2, 1, 0, 0);
    add_case(PS_PROBE_UDP, PS_PROBE_BOUND, PS_PA_ANY6_V6ONLY, 3, PS_PA_MCAST, 1, 0, 0, PS_PROBE_NA);
    res.spread.listeners = 2;
    res.spread.connections = 10;
    res.spread.accepted[0] = 6;
    res.spread.accepted[1] = 4;
    res.spread.nclose = 1;
    res.spread.close[0] = (struct ps_probe_close){0, 1, 8, 8, 0, 0, 0};
    res.features[PS_PF_REUSEPORT] = (struct ps_probe_feature){1, 0, "works"};
    res.features[PS_PF_REUSEPORT_LB] = (struct ps_probe_feature){0, ENOPROTOOPT, "no"};
    res.features[PS_PF_REUSEPORT_EBPF] = (struct ps_probe_feature){-1, EPERM, "can't tell"};
    res.nseqs = 1;
    res.seqs[0].err[0] = 0; /* sequence 0 measured as the rules say, except the last step */
    res.seqs[0].err[1] = 0;
    res.seqs[0].err[2] = 0;
    res.seqs[0].err[3] = EADDRINUSE;
}

/* Run a printer into a string (freed by the caller). */
static char *capture(void (*print)(FILE *, const struct ps_probe_result *))
{
    /* static: open_memstream() keeps their addresses until fclose() */
    static char *buf;
    static size_t len;
    FILE *f;

    buf = NULL;
    f = open_memstream(&buf, &len);

    assert_non_null(f);
    print(f, &res);
    fclose(f);
    return buf;
}

static void must_contain(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("output lacks '%s':\n%s", part, text);
}

static void test_cell_codes(void **state)
{
    (void)state;
    assert_string_equal(cell_code(0, 0), "ok");
    assert_string_equal(cell_code(0, PS_PROBE_NA), "ok"); /* UDP */
    assert_string_equal(cell_code(EADDRINUSE, PS_PROBE_NA), "IU");
    assert_string_equal(cell_code(0, EADDRINUSE), "LI");
    assert_string_equal(cell_code(EINVAL, PS_PROBE_NA), "IV");
    assert_string_equal(cell_code(EADDRNOTAVAIL, PS_PROBE_NA), "NA");
    assert_string_equal(cell_code(ENOBUFS, PS_PROBE_NA), "??");
    assert_null(result_name(PS_PROBE_NA));
    assert_string_equal(result_name(0), "ok");
    assert_string_equal(result_name(EADDRINUSE), "EADDRINUSE");
}

static void test_json(void **state)
{
    char *j;
    int depth = 0, in_str = 0;
    const char *p;

    (void)state;
    make_result();
    j = capture(print_json);
    /* strings are escaped, so braces outside strings balance */
    for (p = j; *p; p++) {
        if (*p == '\\' && in_str)
            p++;
        else if (*p == '"')
            in_str = !in_str;
        else if (!in_str && (*p == '{' || *p == '['))
            depth++;
        else if (!in_str && (*p == '}' || *p == ']'))
            depth--;
        assert_true(depth >= 0);
    }
    assert_int_equal(depth, 0);
    assert_false(in_str);
    must_contain(j, "\"kernel\": \"Linux 9.9 \\\"test\\\"\"");
    must_contain(j, "\"euid\": 0");
    must_contain(j,
                 "\"first\": {\"state\": \"listening\", \"addr\": \"127.0.0.1\", "
                 "\"v6only\": null, \"opts\": [\"SO_REUSEADDR\", \"SO_REUSEPORT\"], \"uid\": 0}");
    must_contain(j, "\"bind\": \"EADDRINUSE\", \"listen\": null");
    must_contain(j, "\"second\": {\"addr\": \"127.0.0.1\", \"v6only\": null, "
                    "\"opts\": [\"SO_REUSEPORT\"], \"uid\": 65534}");
    must_contain(j, "\"agrees\": false");
    must_contain(j, "\"finding\": \"the kernel skips");
    must_contain(j, "\"addr\": \"::\", \"v6only\": true, \"opts\": [\"SO_REUSEADDR\", "
                    "\"SO_REUSEPORT\"]");
    must_contain(j, "\"expected\": {\"bind\": \"ok\", \"listen\": null}");
    must_contain(j, "\"accepted\": [6, 4]");
    must_contain(j, "\"SO_REUSEPORT_LB\": {\"supported\": false, \"error\": \"ENOPROTOOPT\"");
    must_contain(j, "\"SO_ATTACH_REUSEPORT_EBPF\": {\"supported\": null");
    must_contain(j, "\"tcp_migrate_req_sysctl\": 0");
    must_contain(j, "\"cases\": 17, \"disagreements\": 1, \"sequences\": 1, "
                    "\"sequence_disagreements\": 1");
    must_contain(j, "\"other_uid\": {\"tested\": true, \"uid\": 65534, \"note\": null}");
    free(j);
}

static void test_text(void **state)
{
    char *t;
    const char *dis, *feat, *grid, *row;

    (void)state;
    make_result();
    t = capture(print_text);
    dis = strstr(t, "DISAGREEMENTS");
    feat = strstr(t, "FEATURES");
    grid = strstr(t, "MEASURED");
    assert_true(dis && feat && grid && dis < feat && feat < grid);
    must_contain(t, "1 of 17 pair cases, 1 of 1 sequences");
    must_contain(t, "tcp time_wait 127.0.0.1 {P} -> 127.0.0.1 {P}, other UID");
    must_contain(t, "#2 listen: EADDRINUSE (rules: ok)!");
    /* the listening row: 15 cells measured, the dropped one shows as -- */
    row = strstr(grid, "127.0.0.1 -> 127.0.0.1 ");
    assert_non_null(row);
    must_contain(row, "IU IU IU IU  IU IU IU IU  IU IU ok ok  IU IU ok --\n");
    /* the disagreeing TIME_WAIT cell is marked */
    must_contain(t, "second socket owned by uid 65534");
    must_contain(grid, "ok!");
    must_contain(t, "accepted per listener: 6 4");
    must_contain(t, "tcp_migrate_req=0: 8 queued (all steered there by CBPF): 8 reset");
    free(t);
}

static void test_not_root_text(void **state)
{
    char *t;

    (void)state;
    make_result();
    res.other_uid = -1;
    snprintf(res.other_uid_note, sizeof(res.other_uid_note), "skipped: only root can");
    res.netns = 0;
    snprintf(res.netns_note, sizeof(res.netns_note), "not root: on loopback");
    t = capture(print_text);
    must_contain(t, "other-UID cases: skipped: only root can");
    must_contain(t, "not root: on loopback");
    free(t);
    t = capture(print_json);
    must_contain(t, "\"other_uid\": {\"tested\": false, \"uid\": null, \"note\": \"skipped");
    must_contain(t, "\"netns\": {\"private\": false, \"note\": \"not root");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cell_codes),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_not_root_text),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
