/*
 * test_sup_metrics.c - what the operations endpoints say (metrics.c),
 * driven without processes: a supervisor's tables filled by hand.
 *
 *   - the agent's line for every share of ready slots, in lame duck, while
 *     stopping, and with no slot ready; /healthz's verdict and its reason;
 *   - the Prometheus text: label values with '"', '\' and a newline come
 *     out escaped; the workers' counters and close reasons become samples;
 *     every family has HELP then TYPE, once, before its samples;
 *   - capabilities: a fallback is logged once at warning, however often it
 *     is set again, also after a re-exec that carried what was said
 *     (caps_said); each capability looked at is one series per state,
 *     1 for the one it is in; one never looked at has no series.
 */
#include "ps_test.h"
#include "sup_internal.h"

static struct ps_sup_config cfg;
static struct ps_sup sup;

static void setup_sup(int nslots, int ready)
{
    int s;

    memset(&cfg, 0, sizeof(cfg));
    cfg.workers = nslots;
    ps__sup_init(&sup, &cfg, &ps__sup_sys_real);
    sup.nslots = nslots;
    sup.generation = 3;
    for (s = 0; s < nslots; s++) {
        sup.slots[s].state = s < ready ? SL_READY : SL_STARTING;
        sup.slots[s].current = s;
        sup.slots[s].next = -1;
        sup.workers[s].pid = 1000 + s;
        sup.workers[s].slot = s;
        sup.workers[s].state = s < ready ? W_READY : W_STARTING;
    }
    sup.nworkers = nslots;
}

static void test_agent_lines(void **state)
{
    char line[64];
    const char *why;

    (void)state;
    setup_sup(4, 4);
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "up ready 100%\n");
    assert_int_equal(ps__sup_healthy(&sup, &why), 1);
    assert_string_equal(why, "ok");

    setup_sup(4, 3);
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "up ready 75%\n");

    setup_sup(3, 1); /* 33.3%: rounded down, never 0 while one serves */
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "up ready 33%\n");
    setup_sup(1000, 1);
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "up ready 1%\n");

    setup_sup(2, 0);
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "down #no worker ready\n");
    assert_int_equal(ps__sup_healthy(&sup, &why), 0);
    assert_string_equal(why, "no worker ready");

    setup_sup(2, 2);
    sup.life.state = PS_LIFE_LAMEDUCK;
    sup.life.lameduck_ms = 1000;
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "drain\n");
    assert_int_equal(ps__sup_healthy(&sup, &why), 0);
    assert_string_equal(why, "lame duck");

    setup_sup(2, 2);
    sup.life.state = PS_LIFE_STOPPING;
    ps__agent_text(&sup, line, sizeof(line));
    assert_string_equal(line, "drain\n");
    assert_int_equal(ps__sup_healthy(&sup, &why), 0);
    assert_string_equal(why, "stopping");
}

static char *metrics_of(struct ps_sup *s)
{
    struct ps_buf b = {0};

    ps__metrics_text(s, &b);
    assert_false(b.failed);
    assert_non_null(b.data);
    return b.data;
}

static void test_label_escaping(void **state)
{
    struct ps_group *g = &sup.groups[0];
    char *text;

    (void)state;
    setup_sup(1, 1);
    memset(g, 0, sizeof(*g));
    ps__lgroup_init(&g->lg, &g->spec, 1);
    assert_int_equal(ps_spec_parse("web=unix:/tmp/a\"b\\c\nd", &g->spec, NULL, 0), 0);
    g->shared = 1;
    g->nfds = 1;
    g->fds[0] = -1; /* no socket: no queue, backlog or drops samples */
    sup.ngroups = 1;
    text = metrics_of(&sup);
    assert_non_null(strstr(text, "portshare_listener_info{listener=\"unix:/tmp/a\\\"b\\\\c\\nd\","
                                 "name=\"web\",proto=\"unix\",mode=\"shared\",sockets=\"1\"} 1\n"));
    assert_null(strstr(text, "portshare_listener_queue_length{"));
    free(text);
}

static void test_worker_counters(void **state)
{
    char *text;

    (void)state;
    setup_sup(2, 2);
    snprintf(sup.workers[0].stats, sizeof(sup.workers[0].stats), "accepted=5 requests=17 active=2");
    snprintf(sup.workers[0].closes, sizeof(sup.workers[0].closes), "done=3 client=1 bogus");
    sup.slots[1].restarts = 4;
    sup.ops.reloads_ok = 2;
    sup.ops.reloads_failed = 1;
    text = metrics_of(&sup);
    assert_non_null(strstr(text, "\nportshare_generation 3\n"));
    assert_non_null(strstr(text, "\nportshare_workers{state=\"ready\"} 2\n"));
    assert_non_null(strstr(text, "\nportshare_worker_requests_total{slot=\"0\"} 17\n"));
    assert_non_null(strstr(text, "\nportshare_worker_connections_accepted_total{slot=\"0\"} 5\n"));
    assert_non_null(strstr(text, "\nportshare_worker_connections_active{slot=\"0\"} 2\n"));
    assert_null(strstr(text, "portshare_worker_requests_total{slot=\"1\"}")); /* sent nothing */
    assert_non_null(strstr(
        text, "\nportshare_worker_connections_closed_total{slot=\"0\",reason=\"done\"} 3\n"));
    assert_non_null(strstr(
        text, "\nportshare_worker_connections_closed_total{slot=\"0\",reason=\"client\"} 1\n"));
    assert_null(strstr(text, "bogus"));
    assert_non_null(strstr(text, "\nportshare_worker_restarts_total{slot=\"1\"} 4\n"));
    assert_non_null(strstr(text, "\nportshare_reloads_total{result=\"done\"} 2\n"));
    assert_non_null(strstr(text, "\nportshare_reloads_total{result=\"rolled_back\"} 1\n"));
    assert_non_null(strstr(text, "\nportshare_stalls_total{slot=\"0\"} 0\n"));
    free(text);
}

/* HELP, then TYPE, then samples of that family only, each family once. */
static void test_families_well_formed(void **state)
{
    char *text, *line, *save = NULL, fam[128] = "", seen[64][128];
    int nseen = 0, i, expect_type = 0;

    (void)state;
    setup_sup(2, 1);
    text = metrics_of(&sup);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# HELP ", 7)) {
            assert_false(expect_type);
            assert_int_equal(sscanf(line + 7, "%127s", fam), 1);
            for (i = 0; i < nseen; i++)
                assert_string_not_equal(seen[i], fam);
            assert_true(nseen < 64);
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", fam);
            expect_type = 1;
        } else if (!strncmp(line, "# TYPE ", 7)) {
            char name[128], type[16];
            assert_true(expect_type);
            assert_int_equal(sscanf(line + 7, "%127s %15s", name, type), 2);
            assert_string_equal(name, fam);
            assert_true(!strcmp(type, "gauge") || !strcmp(type, "counter"));
            expect_type = 0;
        } else {
            size_t n = strlen(fam);
            assert_false(expect_type);
            assert_memory_equal(line, fam, n);
            assert_true(line[n] == '{' || line[n] == ' ');
        }
    }
    assert_true(nseen >= 15);
    free(text);
}

static int warnings;
static char last_warning[1024];

static void count_warnings(void *ctx, enum ps_log_level level, const char *event, const char *msg)
{
    (void)ctx;
    if (level == PS_LOG_WARN && !strcmp(event, "capability")) {
        warnings++;
        snprintf(last_warning, sizeof(last_warning), "%s", msg);
    }
}

static void test_capabilities(void **state)
{
    unsigned said;
    char *text;

    (void)state;
    setup_sup(2, 2);
    cfg.log = count_warnings;
    warnings = 0;
    ps__cap_set(&sup, PS_CAP_STEERING, PS_CAP_DEGRADED, "cbpf", "eBPF not used: %s", "no CAP_BPF");
    ps__cap_set(&sup, PS_CAP_STEERING, PS_CAP_DEGRADED, "cbpf", "eBPF not used: %s", "no CAP_BPF");
    ps__cap_set(&sup, PS_CAP_MIGRATION, PS_CAP_OFF, "none", "nothing moves");
    ps__cap_set(&sup, PS_CAP_MIGRATION, PS_CAP_OK, "ebpf", "moves");
    ps__cap_set(&sup, PS_CAP_MIGRATION, PS_CAP_OFF, "none", "nothing moves");
    assert_int_equal(warnings, 2); /* each row once, however often set */
    assert_string_equal(last_warning, "migration off (none): nothing moves");
    text = metrics_of(&sup);
    assert_non_null(strstr(text, "portshare_capability{name=\"steering\",state=\"degraded\"} 1\n"));
    assert_non_null(strstr(text, "portshare_capability{name=\"steering\",state=\"ok\"} 0\n"));
    assert_non_null(strstr(text, "portshare_capability{name=\"migration\",state=\"off\"} 1\n"));
    assert_null(strstr(text, "name=\"listener_check\"")); /* never looked at */
    free(text);

    /* a re-exec: the new image starts blank but for what was said */
    said = sup.caps.said;
    setup_sup(2, 2);
    cfg.log = count_warnings;
    sup.caps.said = said;
    ps__cap_set(&sup, PS_CAP_STEERING, PS_CAP_DEGRADED, "cbpf", "eBPF not used: no CAP_BPF");
    assert_int_equal(warnings, 2);
    assert_int_equal(sup.caps.rows[PS_CAP_STEERING].state, PS_CAP_DEGRADED); /* still shown */
    ps__cap_set(&sup, PS_CAP_LISTENER_CHECK, PS_CAP_DEGRADED, "/proc/net", "no sock_diag");
    assert_int_equal(warnings, 3);
    cfg.log = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_lines),     cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_worker_counters), cmocka_unit_test(test_families_well_formed),
        cmocka_unit_test(test_capabilities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
