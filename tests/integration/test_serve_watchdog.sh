#!/usr/bin/env bash
# Issue 11.2: `serve --watchdog DUR`: the HTTP worker sends WATCHDOG=1 from
# its event loop (every WATCHDOG_USEC/2), so healthy workers are left alone
# (before: every worker was aborted each DUR), and a worker whose loop is
# stuck (SIGSTOP) is the one that is caught and replaced.
. "$(dirname "$0")/sup_lib.sh"

SUP_SUBCMD=serve sup_start wd -l 127.0.0.1:0 -w 2 --watchdog 1s
before=$(sup_worker_pids wd | tr '\n' ' ')
# 3.5 watchdog periods; each request is answered
for i in $(seq 1 7); do
    curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "request $i failed"
    sleep 0.5
done
[ "$(status_json wd | jq '[.slots[].restarts] | add')" = 0 ] || fail "healthy workers were restarted: $(status_json wd | jq -c .slots)"
[ "$(sup_worker_pids wd | tr '\n' ' ')" = "$before" ] || fail "healthy workers were replaced"
! grep -q 'sent no WATCHDOG=1' "$T/wd.log" || fail "the watchdog fired on a healthy worker"
ok "2 workers with --watchdog 1s ran 3.5 s untouched"

# a stuck loop: stop one worker; the watchdog must replace it
victim=$(status_json wd | jq -r '.slots[0].pid')
kill -STOP "$victim"
wait_until 10 bash -c "[ \"\$('$PORTSHARE' status --json --control '$T/wd.sock' | jq '.slots[0].restarts')\" -ge 1 ]" ||
    { kill -CONT "$victim" 2>/dev/null; fail "a stopped worker was not caught: $(status_json wd | jq -c .slots)"; }
grep -q "watchdog: worker $victim of slot 0 sent no WATCHDOG=1" "$T/wd.log" || fail "no watchdog line for $victim"
wait_until 10 all_ready wd 2 || fail "slot 0 not ready again"
[ "$(status_json wd | jq '.slots[1].restarts')" = 0 ] || fail "the healthy worker was restarted too"
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "not serving after the restart"
ok "a stopped worker ($victim) was caught by the watchdog and replaced; the other ran on"
