#!/usr/bin/env bash
# An idle supervisor sleeps: no busy loop once its workers' ready deadlines
# have passed, while a slot backs off during a reload, or while it stops
# with a slot backing off.  Measured as the supervisor's own CPU time
# (utime+stime from /proc/PID/stat) over two seconds.
. "$(dirname "$0")/sup_lib.sh"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
assert_sleeping() { # assert_sleeping PID WHAT
    local a b
    a=$(cpu_ticks "$1"); sleep 2; b=$(cpu_ticks "$1")
    # 2 s = 200 ticks; a sleeping supervisor wakes at most once a second
    [ $((b - a)) -le 20 ] || fail "supervisor used $((b - a)) ticks of CPU in 2 s $2"
    note "supervisor CPU over 2 s $2: $((b - a)) ticks"
}

cat >"$T/worker.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" \$(cat "$T/mode")
EOS
chmod +x "$T/worker.sh"; : >"$T/mode"
sup_start idle -l 127.0.0.1:0 -w 2 --ready-timeout 1s --drain-timeout 4s -- "$T/worker.sh"
sleep 1.5   # past every worker's ready deadline
assert_sleeping "$SUP_PID" "with ready workers"

# slot 1 crash-loops; a reload of a program that never gets ready is pending
echo "--exit-after 50 3" >"$T/mode"
kill -KILL "$(status_json idle | jq -r '.slots[1].pid')"
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/idle.sock' | jq -e '.slots[1].consecutive_exits >= 3'" ||
    fail "no crash loop in slot 1"
echo "--never-ready" >"$T/mode"
ctl idle reload >/dev/null 2>&1 &
reloader=$!
sleep 0.3
assert_sleeping "$SUP_PID" "during a reload with a slot backing off"
wait "$reloader" || true
# stopping while slot 1 backs off and slot 0's worker ignores the drain signal
echo "--ignore-term" >"$T/mode"
ctl idle reload >/dev/null || fail "reload to an --ignore-term worker failed"
echo "--exit-after 50 3" >"$T/mode"
kill -KILL "$(status_json idle | jq -r '.slots[1].pid')"
wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/idle.sock' | jq -e '.slots[1].state == \"backing-off\"'" || true
kill -TERM "$SUP_PID"
sleep 0.3
assert_sleeping "$SUP_PID" "while stopping"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "supervisor did not stop after the drain timeout"
echo "PASS: the supervisor sleeps when idle, during a reload with a slot backing off, and while stopping"
