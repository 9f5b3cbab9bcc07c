#!/usr/bin/env bash
# Issue 4, tests 4 and 7: a new generation that exits, or never gets ready,
# is rolled back while the old one keeps serving under load with zero
# failed requests; `portshare reload` says so and exits 1.  A crash-looping
# slot backs off more and more, is reported in status, and a fixed program
# is picked up by reload.
. "$(dirname "$0")/sup_lib.sh"

# The worker's behaviour comes from a file, so that a reload can change it.
cat >"$T/worker.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" \$(cat "$T/mode")
EOS
chmod +x "$T/worker.sh"
: >"$T/mode"

sup_start rb -l 127.0.0.1:0 -w 2 --ready-timeout 2s --drain-timeout 3s -- "$T/worker.sh"
old=$(sup_worker_pids rb | sort | tr '\n' ' ')
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 4 --duration 120

# 1. the new generation crashes at start
echo --crash-on-start >"$T/mode"
if out=$(ctl rb reload 2>&1); then fail "reload of a crashing program reported success: $out"; fi
echo "$out" | grep -q "rolled back" || fail "reload error does not say rolled back: $out"
note "crashing generation: $out"

# 2. the new generation never becomes ready
echo --never-ready >"$T/mode"
start=$(date +%s)
if out=$(ctl rb reload 2>&1); then fail "reload of a never-ready program reported success: $out"; fi
echo "$out" | grep -q "not ready within" || fail "reload error does not name the timeout: $out"
note "never-ready generation: $out"

now=$(sup_worker_pids rb | sort | tr '\n' ' ')
[ "$now" = "$old" ] || fail "serving workers changed after rollbacks: '$old' -> '$now'"
status_json rb | jq -e '.generation == 1 and (.last_reload_error | length > 0)' >/dev/null ||
    fail "status does not show generation 1 with the reload error: $(status_json rb)"
load_stop load
note "load during two rollbacks: $RES"
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed during rollbacks: $RES"
[ "$(jq .sent <<<"$RES")" -gt 100 ] || fail "too little load: $RES"
echo "PASS: two rolled-back reloads, $(jq .sent <<<"$RES") requests, 0 failed, old generation kept"

# 3. crash loop: workers die 100 ms after they start
echo "--exit-after 100 3" >"$T/mode"
kill -KILL $(sup_worker_pids rb | awk '$1 > 0')   # the current workers go; their replacements crash
wait_until 15 bash -c "'$PORTSHARE' status --json --control '$T/rb.sock' | jq -e '.slots[0].consecutive_exits >= 4'" ||
    fail "no crash loop visible: $(status_json rb)"
s=$(status_json rb)
# (the wait above already saw 4 exits in a row: status must call that a crash loop)
jq -e '.slots[0].crash_loop == true' <<<"$s" >/dev/null ||
    fail "crash loop not reported: $s"
# the text says so by the same rule as the JSON (3 exits in a row), whether
# the slot is backing off or its next worker is already starting: nothing
# resets the count here (no worker lives long enough, no reload)
text=$(ctl rb status)
grep -q "CRASH LOOP" <<<"$text" || fail "text status shows no crash loop: $text"
grep -q 'crash_loop' "$T/rb.log" || fail "no crash_loop line in the log"
# the back-off grows: the restart delays in the log increase
delays=$(grep '(slot 0,' "$T/rb.log" | grep -o 'restarting in [0-9]* ms' | awk '{print $3}' | tail -4 | tr '\n' ' ')
note "restart delays: $delays"
awk -v d="$delays" 'BEGIN { n = split(d, a, " "); for (i = 2; i <= n; i++) if (a[i] + 0 <= a[i-1] + 0 && a[i] + 0 < 30000) exit 1 }' ||
    fail "back-off does not grow: $delays"

# 4. fix the program; a reload picks it up and the slots serve again
: >"$T/mode"
out=$(ctl rb reload) || fail "reload with the fixed program failed: $out"
wait_until 10 all_ready rb 2 ||
    fail "fixed program not serving: $(status_json rb)"
curl -sf "http://127.0.0.1:$PORT/" | grep -q "gen=" || fail "no answer after the fix"
echo "PASS: crash loop backed off ($delays ms) and was reported; reload picked up the fixed program"
