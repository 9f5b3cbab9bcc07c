/*
 * cmd_probe.c - `portshare probe`: run the experiments of the library's
 * probe module and show them: disagreements with the documented rules
 * first, then features, the spread and resets on close, then one grid per
 * protocol and state of the first socket (--json: one document).
 */
#include "cli.h"
#include "core.h"
#include "portshare.h"
#include "probe.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[PS_PROBE_NSTATES] = {
    "bound", "listening", "connected", "time_wait", "accepted_time_wait", "accepted_established",
};

static const char *const opt_codes[PS_PROBE_NOPTS] = {"-", "A", "P", "AP"};

static void probe_usage(FILE *out)
{
    fprintf(out,
            "usage: portshare probe [OPTIONS]\n\n"
            "Run real experiments on pairs of sockets and show what this kernel does with\n"
            "SO_REUSEADDR and SO_REUSEPORT: a first socket is bound, listening, connected,\n"
            "in TIME_WAIT...; a second one binds the same port (and, for TCP, listens).\n"
            "Next to each result: what the documented rules (socket(7), ip(7), ipv6(7))\n"
            "predict, why, and every disagreement, listed first.  Also: related kernel\n"
            "features, how connections spread over a reuseport group, and how many queued\n"
            "connections are reset when one of its listeners closes.  As root, everything\n"
            "runs in a private network namespace, so no real service is disturbed.\n\n"
            "options:\n"
            "  --json             print one JSON document instead of tables\n"
            "  --listeners K      reuseport listeners the connections spread over\n"
            "                     (1-%d, default 4)\n"
            "  --connections M    connections made to them, each from its own source\n"
            "                     port (1-16000, default 1000)\n"
            "  --queued Q         connections left queued in the listener that is then\n"
            "                     closed, to count resets and migrations (1-1000, default 64)\n"
            "  --no-netns         as root, run on this host's loopback (on free ports)\n"
            "                     instead of in a private network namespace; this also\n"
            "                     leaves net.ipv4.tcp_migrate_req alone, so only its\n"
            "                     current value is measured.  (On the host, as for a\n"
            "                     non-root user, the TIME_WAIT experiments leave a few\n"
            "                     hundred loopback sockets in TIME_WAIT for a minute.)\n"
            "  --other-uid UID    as root, the user owning the second socket in the\n"
            "                     other-UID experiments (default 65534)\n"
            "  --no-other-uid     skip the other-UID experiments (as a non-root user they\n"
            "                     are always skipped, and the output says so)\n"
            "  -h, --help         show this text\n\n"
            "table cells: ok = bind (and listen) succeeded, IU = bind failed with\n"
            "EADDRINUSE, LI = bind succeeded but listen failed with EADDRINUSE, other\n"
            "codes are other errors; '!' marks a disagreement with the documented rules.\n\n"
            "exit codes: 0 it ran (disagreements are findings, not failures), 2 bad\n"
            "usage, 6 a system error stopped it\n",
            PS_PROBE_MAX_LISTENERS);
}

/* ---- small formatting helpers (also used by the unit tests) ------------------- */

/* The two-letter code of a table cell. */
static const char *cell_code(short bind_err, short listen_err)
{
    if (bind_err > 0) {
        switch (bind_err) {
        case EADDRINUSE:
            return "IU";
        case EINVAL:
            return "IV";
        case EADDRNOTAVAIL:
            return "NA";
        case EACCES:
            return "AC";
        case EPERM:
            return "PE";
        default:
            return "??";
        }
    }
    if (listen_err > 0)
        return listen_err == EADDRINUSE ? "LI" : "L?";
    return "ok";
}

/* "ok", an errno name, or NULL for "not attempted". */
static const char *result_name(short err)
{
    if (err == PS_PROBE_NA)
        return NULL;
    return err == 0 ? "ok" : ps_errno_name(err);
}

/* "bind ok, listen EADDRINUSE" / "bind EADDRINUSE" */
static void outcome_text(char *buf, size_t len, short bind_err, short listen_err)
{
    if (bind_err != 0 || listen_err == PS_PROBE_NA)
        snprintf(buf, len, "bind %s", result_name(bind_err));
    else
        snprintf(buf, len, "bind ok, listen %s", result_name(listen_err));
}

/* "tcp time_wait 127.0.0.1 {A} -> 127.0.0.1 {AP}, other UID" */
static void case_text(char *buf, size_t len, const struct ps_probe_case *c)
{
    snprintf(buf, len, "%s %s %s {%s} -> %s {%s}%s", c->proto == PS_PROBE_TCP ? "tcp" : "udp",
             state_names[c->state], ps_probe_addr_info(c->first_addr)->label,
             opt_codes[c->first_opts], ps_probe_addr_info(c->second_addr)->label,
             opt_codes[c->second_opts], c->other_uid ? ", other UID" : "");
}

static int count_disagreements(const struct ps_probe_result *res)
{
    int i, n = 0;

    for (i = 0; i < res->ncases; i++)
        n += !ps_probe_agrees(&res->cases[i]);
    return n;
}

static int count_seq_disagreements(const struct ps_probe_result *res)
{
    int i, n = 0;

    for (i = 0; i < res->nseqs; i++)
        n += !ps_probe_seq_agrees(ps_probe_seq(i), &res->seqs[i]);
    return n;
}

/* "0: bind 127.0.0.1 ok" for step i of a sequence; expected shown when different */
static void seq_step_text(char *buf, size_t len, const struct ps_probe_seq *s,
                          const struct ps_probe_seq_result *r, int i)
{
    const struct ps_probe_seq_step *st = &s->steps[i];
    const char *got = result_name(r->err[i]), *want = result_name(st->expect);
    char addr[40] = "";

    if (st->op == PS_SEQ_BIND)
        snprintf(addr, sizeof(addr), " %s {%s}", ps_probe_addr_info(st->addr)->label,
                 opt_codes[s->opts[st->sock]]);
    snprintf(buf, len, "#%d %s%s: %s", st->sock + 1, ps_probe_seq_op_name(st->op), addr,
             got ? got : "not run");
    if (r->err[i] != st->expect)
        snprintf(buf + strlen(buf), len - strlen(buf), " (rules: %s)!", want ? want : "not run");
}

/* ---- JSON ---------------------------------------------------------------------- */

static void json_str(FILE *out, const char *s)
{
    if (!s) {
        fputs("null", out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(out, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(out, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, out);
    }
    fputc('"', out);
}

static void json_bool3(FILE *out, int v)
{
    fputs(v < 0 ? "null" : v ? "true" : "false", out);
}

static void json_side(FILE *out, enum ps_probe_addr a, int opts, unsigned uid, const char *state)
{
    const struct ps_probe_addr_info *ai = ps_probe_addr_info(a);

    fputc('{', out);
    if (state)
        fprintf(out, "\"state\": \"%s\", ", state);
    fputs("\"addr\": ", out);
    json_str(out, ai->text);
    fputs(", \"v6only\": ", out);
    json_bool3(out, ai->v6only);
    fprintf(out, ", \"opts\": [%s%s%s], \"uid\": %u}",
            opts & PS_PROBE_REUSEADDR ? "\"SO_REUSEADDR\"" : "",
            opts == (PS_PROBE_REUSEADDR | PS_PROBE_REUSEPORT) ? ", " : "",
            opts & PS_PROBE_REUSEPORT ? "\"SO_REUSEPORT\"" : "", uid);
}

static void json_case(FILE *out, const struct ps_probe_case *c, const struct ps_probe_result *res)
{
    unsigned uid2 = c->other_uid ? (unsigned)res->other_uid : res->euid;

    fprintf(out, "{\"proto\": \"%s\", \"first\": ", c->proto == PS_PROBE_TCP ? "tcp" : "udp");
    json_side(out, c->first_addr, c->first_opts, res->euid, state_names[c->state]);
    fputs(", \"second\": ", out);
    json_side(out, c->second_addr, c->second_opts, uid2, NULL);
    fputs(", \"bind\": ", out);
    json_str(out, result_name(c->bind_err));
    fputs(", \"listen\": ", out);
    json_str(out, result_name(c->listen_err));
    fputs(", \"expected\": {\"bind\": ", out);
    json_str(out, result_name(c->expect_bind));
    fputs(", \"listen\": ", out);
    json_str(out, result_name(c->expect_listen));
    fprintf(out, "}, \"agrees\": %s, \"why\": ", ps_probe_agrees(c) ? "true" : "false");
    json_str(out, ps_probe_why(c));
    if (!ps_probe_agrees(c)) {
        fputs(", \"finding\": ", out);
        json_str(out, ps_probe_finding(c));
    }
    fputc('}', out);
}

static void json_features(FILE *out, const struct ps_probe_result *res)
{
    int i;

    fputs("{", out);
    for (i = 0; i < PS_PF_COUNT; i++) {
        const struct ps_probe_feature *f = &res->features[i];

        fprintf(out, "%s\n    ", i ? "," : "");
        json_str(out, ps_probe_feature_name((enum ps_probe_feature_id)i));
        fputs(": {\"supported\": ", out);
        json_bool3(out, f->supported);
        fputs(", \"error\": ", out);
        json_str(out, f->err ? ps_errno_name(f->err) : NULL);
        fputs(", \"detail\": ", out);
        json_str(out, f->detail);
        fputc('}', out);
        if (i == PS_PF_MIGRATE_REQ)
            fprintf(out, ",\n    \"tcp_migrate_req_sysctl\": %d", res->host_migrate_req);
    }
    fputs("\n  }", out);
}

/* the measurement behind the SELECT_OR_MIGRATE feature */
static void json_ebpf_migrate(FILE *out, const struct ps_probe_ebpf_migrate *m)
{
    fprintf(out,
            ",\n  \"ebpf_migrate\": {\"tcp_migrate_req\": %d, \"queued\": %d, "
            "\"queued_migrated\": %d, \"queued_reset\": %d, \"handshakes\": %d, "
            "\"handshakes_migrated\": %d, \"handshakes_reset\": %d, \"error\": ",
            m->migrate_req, m->queued, m->queued_migrated, m->queued_reset, m->handshakes,
            m->handshakes_migrated, m->handshakes_reset);
    json_str(out, m->err ? ps_errno_name(m->err) : NULL);
    fputs("}", out);
}

static void json_spread(FILE *out, const struct ps_probe_spread *s)
{
    int i;

    fprintf(out, "{\"listeners\": %d, \"connections\": %d, \"accepted\": [", s->listeners,
            s->connections);
    for (i = 0; i < s->listeners; i++)
        fprintf(out, "%s%d", i ? ", " : "", s->accepted[i]);
    fputs("], \"error\": ", out);
    json_str(out, s->err ? ps_errno_name(s->err) : NULL);
    fputs(",\n    \"close\": [", out);
    for (i = 0; i < s->nclose; i++) {
        const struct ps_probe_close *c = &s->close[i];

        fprintf(out,
                "%s{\"tcp_migrate_req\": %d, \"steered_by_cbpf\": %s, \"queued\": %d, "
                "\"reset\": %d, \"migrated\": %d, \"unaccounted\": %d, \"error\": ",
                i ? ", " : "", c->migrate_req, c->steered ? "true" : "false", c->queued, c->reset,
                c->migrated, c->unaccounted);
        json_str(out, c->err ? ps_errno_name(c->err) : NULL);
        fputc('}', out);
    }
    fputs("]}", out);
}

static void json_seq(FILE *out, const struct ps_probe_seq *s, const struct ps_probe_seq_result *r)
{
    int i, agrees = ps_probe_seq_agrees(s, r);

    fprintf(out, "{\"name\": \"%s\", \"proto\": \"%s\", \"title\": ", s->name,
            s->proto == PS_PROBE_TCP ? "tcp" : "udp");
    json_str(out, s->title);
    fputs(", \"steps\": [", out);
    for (i = 0; i < s->nsteps; i++) {
        const struct ps_probe_seq_step *st = &s->steps[i];

        fprintf(out, "%s{\"socket\": %d, \"call\": \"%s\", \"addr\": ", i ? ", " : "", st->sock + 1,
                ps_probe_seq_op_name(st->op));
        json_str(out, st->op == PS_SEQ_BIND ? ps_probe_addr_info(st->addr)->text : NULL);
        fputs(", \"result\": ", out);
        json_str(out, result_name(r->err[i]));
        fputs(", \"expected\": ", out);
        json_str(out, result_name(st->expect));
        fputc('}', out);
    }
    fputs("], \"error\": ", out);
    json_str(out, r->setup_err ? ps_errno_name(r->setup_err) : NULL);
    fprintf(out, ", \"agrees\": %s, \"why\": ", agrees ? "true" : "false");
    json_str(out, s->why);
    fputs(", \"finding\": ", out);
    json_str(out, agrees ? NULL : s->finding);
    fputc('}', out);
}

static void print_json(FILE *out, const struct ps_probe_result *res)
{
    int i;

    fputs("{\"kernel\": ", out);
    json_str(out, res->kernel);
    fprintf(out, ", \"euid\": %u, \"elapsed_ms\": %ld,\n  \"netns\": {\"private\": %s, \"note\": ",
            res->euid, res->elapsed_ms, res->netns ? "true" : "false");
    json_str(out, res->netns ? NULL : res->netns_note);
    fputs("},\n  \"other_uid\": {\"tested\": ", out);
    fputs(res->other_uid >= 0 ? "true" : "false", out);
    fputs(", \"uid\": ", out);
    if (res->other_uid >= 0)
        fprintf(out, "%d", res->other_uid);
    else
        fputs("null", out);
    fputs(", \"note\": ", out);
    json_str(out, res->other_uid >= 0 ? NULL : res->other_uid_note);
    fprintf(out,
            "},\n  \"summary\": {\"cases\": %d, \"disagreements\": %d, \"sequences\": %d, "
            "\"sequence_disagreements\": %d, \"setup_failures\": %d, \"setup_note\": ",
            res->ncases, count_disagreements(res), res->nseqs, count_seq_disagreements(res),
            res->setup_failures);
    json_str(out, res->setup_failures ? res->setup_note : NULL);
    fputs("},\n  \"features\": ", out);
    json_features(out, res);
    fputs(",\n  \"spread\": ", out);
    json_spread(out, &res->spread);
    json_ebpf_migrate(out, &res->ebpf_migrate);
    fputs(",\n  \"sequences\": [", out);
    for (i = 0; i < res->nseqs; i++) {
        fputs(i ? ",\n    " : "\n    ", out);
        json_seq(out, ps_probe_seq(i), &res->seqs[i]);
    }
    fputs("\n  ],\n  \"cases\": [", out);
    for (i = 0; i < res->ncases; i++) {
        fputs(i ? ",\n    " : "\n    ", out);
        json_case(out, &res->cases[i], res);
    }
    fputs("\n  ]\n}\n", out);
}

/* ---- text: disagreements --------------------------------------------------------- */

#define MAX_KINDS 64

/* Disagreements of one kind: same rule, same finding, same outcomes. */
struct kind {
    const struct ps_probe_case *first; /* an example, and the key */
    int count;
    int shown;
};

static int same_kind(const struct ps_probe_case *a, const struct ps_probe_case *b)
{
    return a->rule == b->rule && ps_probe_finding(a) == ps_probe_finding(b) &&
           a->bind_err == b->bind_err && a->listen_err == b->listen_err && a->proto == b->proto;
}

static int group_kinds(const struct ps_probe_result *res, struct kind *kinds)
{
    int i, k, n = 0;

    for (i = 0; i < res->ncases; i++) {
        const struct ps_probe_case *c = &res->cases[i];

        if (ps_probe_agrees(c))
            continue;
        for (k = 0; k < n && !same_kind(kinds[k].first, c); k++)
            ;
        if (k == n && n == MAX_KINDS)
            k = n - 1; /* the last kind collects the rest */
        if (k == n)
            kinds[n++] = (struct kind){c, 0, 0};
        kinds[k].count++;
    }
    return n;
}

static void print_case_disagreements(FILE *out, const struct ps_probe_result *res)
{
    struct kind kinds[MAX_KINDS];
    char got[64], want[64], text[160];
    int n, k, i;

    n = group_kinds(res, kinds);
    for (k = 0; k < n; k++) {
        const struct ps_probe_case *c = kinds[k].first;
        const char *finding = ps_probe_finding(c);

        outcome_text(got, sizeof(got), c->bind_err, c->listen_err);
        outcome_text(want, sizeof(want), c->expect_bind, c->expect_listen);
        fprintf(out, "* kernel: %s; rules: %s (%d case%s), e.g.\n", got, want, kinds[k].count,
                kinds[k].count == 1 ? "" : "s");
        for (i = 0; i < res->ncases && kinds[k].shown < 3; i++)
            if (!ps_probe_agrees(&res->cases[i]) && same_kind(c, &res->cases[i])) {
                case_text(text, sizeof(text), &res->cases[i]);
                fprintf(out, "      %s\n", text);
                kinds[k].shown++;
            }
        fprintf(out, "    rules: %s\n    kernel: %s\n", ps_probe_why(c),
                finding ? finding : "not explained by a known kernel rule: look at this one");
    }
}

static void print_seq(FILE *out, const struct ps_probe_seq *s, const struct ps_probe_seq_result *r)
{
    char step[128];
    int i;

    if (r->setup_err) {
        fprintf(out, "    could not run: %s\n", ps_strerror(r->setup_err));
        return;
    }
    fputs("   ", out);
    for (i = 0; i < s->nsteps; i++) {
        seq_step_text(step, sizeof(step), s, r, i);
        fprintf(out, " %s%s", step, i + 1 < s->nsteps ? ";" : "\n");
    }
}

static void print_disagreements(FILE *out, const struct ps_probe_result *res)
{
    int total = count_disagreements(res), seqs = count_seq_disagreements(res), i;

    fprintf(out,
            "DISAGREEMENTS with the documented rules: %d of %d pair cases, %d of %d "
            "sequences%s\n",
            total, res->ncases, seqs, res->nseqs, total + seqs ? "" : ": none");
    print_case_disagreements(out, res);
    for (i = 0; i < res->nseqs; i++) {
        const struct ps_probe_seq *s = ps_probe_seq(i);

        if (ps_probe_seq_agrees(s, &res->seqs[i]))
            continue;
        fprintf(out, "* sequence: %s\n", s->title);
        print_seq(out, s, &res->seqs[i]);
        fprintf(out, "    rules: %s\n    kernel: %s\n", s->why, s->finding);
    }
    fputc('\n', out);
}

static void print_seqs(FILE *out, const struct ps_probe_result *res)
{
    int i;

    fputs("SEQUENCES (several steps; ! = not what the rules predict)\n", out);
    for (i = 0; i < res->nseqs; i++) {
        fprintf(out, "  %s\n", ps_probe_seq(i)->title);
        print_seq(out, ps_probe_seq(i), &res->seqs[i]);
    }
    fputc('\n', out);
}

/* ---- text: features, spread, resets ------------------------------------------------ */

static void print_features(FILE *out, const struct ps_probe_result *res)
{
    static const char *const yn[] = {"unknown", "no", "yes"};
    int i;

    fputs("FEATURES\n", out);
    for (i = 0; i < PS_PF_COUNT; i++) {
        const struct ps_probe_feature *f = &res->features[i];

        fprintf(out, "  %-25s %-8s %s\n", ps_probe_feature_name((enum ps_probe_feature_id)i),
                yn[f->supported + 1], f->detail);
    }
    fputc('\n', out);
}

static void print_spread(FILE *out, const struct ps_probe_spread *s)
{
    int i, lo, hi;

    if (s->err) {
        fprintf(out, "SPREAD: not measured: %s\n", ps_strerror(s->err));
    } else {
        fprintf(out,
                "SPREAD: %d connections, each from its own source port, over %d reuseport "
                "listeners\n  accepted per listener:",
                s->connections, s->listeners);
        for (i = 0, lo = s->connections, hi = 0; i < s->listeners; i++) {
            fprintf(out, " %d", s->accepted[i]);
            lo = s->accepted[i] < lo ? s->accepted[i] : lo;
            hi = s->accepted[i] > hi ? s->accepted[i] : hi;
        }
        fprintf(out, "   (even share %d; min %d, max %d)\n", s->connections / s->listeners, lo, hi);
    }
    fputs("RESETS ON CLOSE: one listener of a reuseport pair, holding queued connections, "
          "closes\n",
          out);
    for (i = 0; i < s->nclose; i++) {
        const struct ps_probe_close *c = &s->close[i];

        if (c->err)
            fprintf(out, "  tcp_migrate_req=%d: not measured: %s\n", c->migrate_req,
                    ps_strerror(c->err));
        else
            fprintf(out,
                    "  tcp_migrate_req=%d: %d queued%s: %d reset, %d migrated to the other "
                    "listener, %d unaccounted\n",
                    c->migrate_req, c->queued, c->steered ? " (all steered there by CBPF)" : "",
                    c->reset, c->migrated, c->unaccounted);
    }
    fputc('\n', out);
}

/* ---- text: the grids -------------------------------------------------------------- */

#define LABEL_W 36

/* Print a line without its trailing blanks (cells end in a flag column). */
static void put_trimmed(FILE *out, char *line)
{
    size_t n = strlen(line);

    while (n > 0 && line[n - 1] == ' ')
        line[--n] = '\0';
    fprintf(out, "%s\n", line);
}

static void grid_header(FILE *out, const struct ps_probe_case *c, const struct ps_probe_result *res)
{
    char line[256];
    size_t n;
    int o;

    fprintf(out, "%s, first socket %s; ", c->proto == PS_PROBE_TCP ? "TCP" : "UDP",
            state_names[c->state]);
    if (c->other_uid)
        fprintf(out, "second socket owned by uid %d\n", res->other_uid);
    else
        fprintf(out, "both sockets owned by uid %u\n", res->euid);
    /* per option set of the first socket: four 3-character cells and a space */
    n = (size_t)snprintf(line, sizeof(line), "%-*s", LABEL_W, "first socket's options:");
    for (o = 0; o < PS_PROBE_NOPTS; o++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "{%s}%*s", opt_codes[o],
                              13 - 2 - (int)strlen(opt_codes[o]), "");
    put_trimmed(out, line);
    n = (size_t)snprintf(line, sizeof(line), "%-*s", LABEL_W, "first addr -> second addr");
    for (o = 0; o < PS_PROBE_NOPTS; o++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "-  A  P  AP  ");
    put_trimmed(out, line);
}

/* One row: cells[o1][o2] of the cases c[0..n) (one address pair). */
static void grid_row(FILE *out, const struct ps_probe_case *c, int n)
{
    char cells[PS_PROBE_NOPTS][PS_PROBE_NOPTS][4], label[64], line[256];
    size_t len;
    int i, o1, o2;

    for (o1 = 0; o1 < PS_PROBE_NOPTS; o1++)
        for (o2 = 0; o2 < PS_PROBE_NOPTS; o2++)
            strcpy(cells[o1][o2], "-- "); /* dropped: setup failed */
    for (i = 0; i < n; i++)
        snprintf(cells[c[i].first_opts][c[i].second_opts], 4, "%s%c",
                 cell_code(c[i].bind_err, c[i].listen_err), ps_probe_agrees(&c[i]) ? ' ' : '!');
    snprintf(label, sizeof(label), "%s -> %s", ps_probe_addr_info(c->first_addr)->label,
             ps_probe_addr_info(c->second_addr)->label);
    len = (size_t)snprintf(line, sizeof(line), "%-*s", LABEL_W, label);
    for (o1 = 0; o1 < PS_PROBE_NOPTS; o1++) {
        for (o2 = 0; o2 < PS_PROBE_NOPTS; o2++)
            len += (size_t)snprintf(line + len, sizeof(line) - len, "%s", cells[o1][o2]);
        len += (size_t)snprintf(line + len, sizeof(line) - len, " ");
    }
    put_trimmed(out, line);
}

static int same_block(const struct ps_probe_case *a, const struct ps_probe_case *b)
{
    return a->proto == b->proto && a->state == b->state && a->other_uid == b->other_uid;
}

static int same_row(const struct ps_probe_case *a, const struct ps_probe_case *b)
{
    return same_block(a, b) && a->first_addr == b->first_addr && a->second_addr == b->second_addr;
}

static void print_grids(FILE *out, const struct ps_probe_result *res)
{
    const struct ps_probe_case *c = res->cases;
    int i = 0, j;

    fputs("MEASURED, by state of the first socket (rows: addresses; columns: options\n"
          "A = SO_REUSEADDR, P = SO_REUSEPORT; ok / IU bind EADDRINUSE / LI listen\n"
          "EADDRINUSE / IV EINVAL / NA EADDRNOTAVAIL; ! = not what the rules predict)\n",
          out);
    while (i < res->ncases) {
        if (i == 0 || !same_block(&c[i - 1], &c[i])) {
            fputc('\n', out);
            grid_header(out, &c[i], res);
        }
        for (j = i + 1; j < res->ncases && same_row(&c[i], &c[j]); j++)
            ;
        grid_row(out, &c[i], j - i);
        i = j;
    }
}

static void print_text(FILE *out, const struct ps_probe_result *res)
{
    fprintf(out, "portshare probe: %s, euid %u, %d cases in %.1f s, %s\n", res->kernel, res->euid,
            res->ncases, (double)res->elapsed_ms / 1000.0,
            res->netns ? "in a private network namespace" : res->netns_note);
    if (res->other_uid >= 0)
        fprintf(out, "other-UID cases: the second socket is made by uid %d\n", res->other_uid);
    else
        fprintf(out, "other-UID cases: %s\n", res->other_uid_note);
    if (res->setup_failures)
        fprintf(out, "%d cases dropped: their first socket could not be made (%s)\n",
                res->setup_failures, res->setup_note);
    fputc('\n', out);
    print_disagreements(out, res);
    print_features(out, res);
    print_spread(out, &res->spread);
    print_seqs(out, res);
    print_grids(out, res);
}

/* ---- the command ---------------------------------------------------------------------- */

static int parse_int_opt(const char *name, const char *arg, long min, long max, int *out)
{
    long v;
    int r = ps__parse_long(arg, min, max, &v);

    if (r < 0)
        return ps_cli_fatal(PS_EXIT_USAGE, "--%s wants a number from %ld to %ld, not '%s'", name,
                            min, max, arg);
    *out = (int)v;
    return 0;
}

int cmd_probe(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"listeners", required_argument, NULL, 'k'},
        {"connections", required_argument, NULL, 'm'},
        {"queued", required_argument, NULL, 'q'},
        {"no-netns", no_argument, NULL, 'N'},
        {"other-uid", required_argument, NULL, 'u'},
        {"no-other-uid", no_argument, NULL, 'U'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct ps_probe_opts opts = {4, 1000, 64, 1, 65534};
    struct ps_probe_result *res;
    int json = 0, ch, r;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        r = 0;
        switch (ch) {
        case 'j':
            json = 1;
            break;
        case 'k':
            r = parse_int_opt("listeners", optarg, 1, PS_PROBE_MAX_LISTENERS, &opts.listeners);
            break;
        case 'm':
            r = parse_int_opt("connections", optarg, 1, 16000, &opts.connections);
            break;
        case 'q':
            r = parse_int_opt("queued", optarg, 1, 1000, &opts.queued);
            break;
        case 'N':
            opts.netns = 0;
            break;
        case 'u':
            r = parse_int_opt("other-uid", optarg, 1, 2147483646, &opts.other_uid);
            break;
        case 'U':
            opts.other_uid = -1;
            break;
        case 'h':
            probe_usage(stdout);
            return PS_EXIT_OK;
        default:
            return ps_cli_fatal(PS_EXIT_USAGE,
                                "probe: unknown option or missing value: '%s' (see 'portshare "
                                "probe --help')",
                                argv[optind - 1]);
        }
        if (r)
            return r;
    }
    if (optind < argc)
        return ps_cli_fatal(PS_EXIT_USAGE, "probe takes no arguments ('%s')", argv[optind]);
    res = calloc(1, sizeof(*res));
    if (!res)
        return ps_cli_fatal(PS_EXIT_SYSTEM, "probe: out of memory");
    r = ps_probe_run(&opts, res);
    if (r < 0) {
        free(res);
        return ps_cli_fatal(PS_EXIT_SYSTEM, "probe: the experiments could not run: %s",
                            ps_strerror(r));
    }
    if (res->spread.err)
        ps_cli_warn("probe: the spread was not measured: %s", ps_strerror(res->spread.err));
    if (json)
        print_json(stdout, res);
    else
        print_text(stdout, res);
    free(res);
    return fflush(stdout) == 0 ? PS_EXIT_OK : PS_EXIT_SYSTEM;
}
