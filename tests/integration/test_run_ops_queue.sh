#!/usr/bin/env bash
# Issue 10, items 1 and 2: operations that meet.
#  1. A reload queued behind another reports its own outcome: reload A's
#     workers take 5 s to be ready; meanwhile the program is changed to
#     crash at once and reload B is asked.  A says generation 2 serves
#     (exit 0), B says generation 3 was rolled back (exit 1), and status
#     agrees (the old code answered B with A's "generation 2 is serving").
#  2. `scale 1; reload; scale 3` back to back on -w 2: every slot ends on
#     the new generation, no old worker is left (the old code skipped the
#     retiring slot in the reload and kept its old worker when scaled up).
#  3. A reload and a scale asked by signals (SIGHUP, SIGTTIN) while an
#     upgrade waits behind a reload run after the upgrade (they were dropped
#     at the exec without a word).
. "$(dirname "$0")/sup_lib.sh"

cat >"$T/worker.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" \$(cat "$T/mode")
EOS
chmod +x "$T/worker.sh"
: >"$T/mode"

# the testworker of pid $1 runs with arguments matching $2 (worker.sh read
# the mode file and exec'd)
runs_with() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"; }
next_pids() { status_json "$1" | jq -r '.slots[].next_pid | select(. > 0)'; }

# ---- 1. a queued reload reports its own outcome ----
sup_start q -l 127.0.0.1:0 -w 2 --ready-timeout 10s --drain-timeout 5s -- "$T/worker.sh"
echo "--ready-after 5000" >"$T/mode"
(rc=0; out=$(ctl q reload 2>&1) || rc=$?; echo "rc=$rc $out") >"$T/reload_a" &
a=$!
wait_until 10 bash -c "[ \$('$PORTSHARE' status --json --control '$T/q.sock' | jq '[.slots[].next_pid | select(. > 0)] | length') = 2 ]" ||
    fail "reload A did not start two workers: $(status_json q)"
for p in $(next_pids q); do
    wait_until 5 runs_with "$p" "--ready-after 5000" || fail "worker $p of reload A did not start with --ready-after"
done
status_json q | jq -e '.reloading == true' >/dev/null || fail "reload A is already over: the test cannot queue B behind it"
echo "--crash-on-start" >"$T/mode"
rc=0; out_b=$(ctl q reload 2>&1) || rc=$?
wait "$a" || true
out_a=$(cat "$T/reload_a")
note "reload A: $out_a"
note "reload B (queued behind A): exit $rc: $out_b"
[[ $out_a == "rc=0 generation 2 is serving"* ]] || fail "reload A: '$out_a', expected 'generation 2 is serving' and exit 0"
[ "$rc" = 1 ] || fail "reload B exited $rc (its generation crashed at once): $out_b"
grep -q "generation 3 rolled back" <<<"$out_b" || fail "reload B does not say generation 3 was rolled back: $out_b"
! grep -q "is serving" <<<"$out_b" || fail "reload B reports another operation's outcome: $out_b"
grep -q "op_queued: reload queued" "$T/q.log" || fail "reload B was not queued behind A (the test did not test that)"
s=$(status_json q)
jq -e '.generation == 2 and .reloads.done == 1 and .reloads.rolled_back == 1 and (.last_reload_error | length > 0)' <<<"$s" >/dev/null ||
    fail "status does not agree: $(jq -c '{generation, reloads, last_reload_error}' <<<"$s")"
wait_until 10 all_ready q 2 || fail "generation 2 is not serving in both slots: $(status_json q | jq -c .slots)"
ctl q stop >/dev/null
echo "PASS: a reload queued behind another got its own outcome ($out_b)"

# ---- 2. scale 1; reload; scale 3 back to back ----
: >"$T/mode"
# classic BPF: with the eBPF program a retiring slot hands its queue over
# and closes at once, so it cannot be held retiring (test_run_migrate)
sup_start sr -l 127.0.0.1:0 -w 2 --drain-timeout 10s --steering cbpf -- "$T/worker.sh"
# slot 1 must still be retiring when the reload starts and when it is
# scaled back up: its worker is frozen with connections queued, so its
# queue cannot empty (the retire waits up to the drain timeout)
victim=$(status_json sr | jq -r '.slots[1].pid')
kill -STOP "$victim"
"$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 30 --requests 30 --timeout 30000 --json \
    >"$T/sr.json" 2>/dev/null &
lpid=$!
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/sr.sock' | jq -e '.listeners[0].sockets[1].queued > 0'" ||
    { kill -CONT "$victim"; fail "no connection queued behind the stopped worker of slot 1"; }
out1=$(ctl sr scale 1) || fail "scale 1 failed: $out1"
# the new generation takes a second to be ready, so that scale 3 queues
# behind the reload (and the reload is surely asked before scale 3)
echo "--ready-after 1000" >"$T/mode"
(rc=0; out=$(ctl sr reload 2>&1) || rc=$?; echo "rc=$rc $out") >"$T/reload_sr" &
r=$!
wait_until 10 grep -q 'reload_started: starting generation 2' "$T/sr.log" || fail "the reload did not start"
out3=$(ctl sr scale 3) || fail "scale 3 failed: $out3"
wait "$r" || true
kill -CONT "$victim"
out_r=$(cat "$T/reload_sr")
note "scale 1: $out1 / reload: $out_r / scale 3: $out3"
[[ $out_r == "rc=0 generation 2 is serving"* ]] || fail "reload: '$out_r'"
# the case of the issue happened: slot 1 was retiring with its generation 1
# worker when the reload ran, and was scaled back up
grep -q "op_queued: scale queued behind the reload" "$T/sr.log" || fail "scale 3 was not queued behind the reload"
grep -q "scaling from 1 to 3" "$T/sr.log" || fail "scale 3 did not find 1 slot asked for: $(grep scale "$T/sr.log")"
grep -q "worker $victim (slot 1, generation 1) draining: replaced: scaled back up" "$T/sr.log" ||
    fail "slot 1's old worker was not replaced when scaled back up: $(grep -E "worker $victim|slot 1" "$T/sr.log")"
settled3() {
    status_json sr | jq -e '(.slots | length) == 3 and
        ([.slots[] | select(.state == "ready" and .generation == 2)] | length) == 3 and
        (.other_workers | length) == 0' >/dev/null
}
wait_until 20 settled3 ||
    fail "after 'scale 1; reload; scale 3' not every slot runs generation 2: $(status_json sr | jq -c '{generation, slots: [.slots[] | {slot, state, pid, generation}], other: .other_workers}')"
for p in $(status_json sr | jq -r '.slots[].pid'); do
    g=$(tr '\0' '\n' <"/proc/$p/environ" | grep '^PORTSHARE_GENERATION=' | cut -d= -f2)
    [ "$g" = 2 ] || fail "worker $p runs generation '$g' (from its environment), status said 2"
done
wait "$lpid" || true
q=$(cat "$T/sr.json")
[ "$(jq .ok <<<"$q")" = 30 ] || fail "connections queued in the retiring slot were lost: $q"
echo "PASS: scale 1; reload; scale 3 back to back: all 3 slots on generation 2, no old worker left, the 30 queued connections served"

# ---- 3. what a signal asked, queued behind an upgrade, survives the exec ----
# (found reading ops.c for the interleaving test: reload in flight, then
# SIGUSR2 and SIGTTIN queue behind it; at the exec the scale was dropped
# without a word, as nobody waited for its answer)
: >"$T/mode"
sup_start us -l 127.0.0.1:0 -w 2 --ready-timeout 10s -- "$T/worker.sh"
echo "--ready-after 1500" >"$T/mode"
(ctl us reload >"$T/reload_us" 2>&1 || true) &
r=$!
wait_until 10 grep -q 'reload_started: starting generation 2' "$T/us.log" || fail "the reload did not start"
kill -USR2 "$SUP_PID"
wait_until 5 grep -q 'op_queued: upgrade queued' "$T/us.log" || fail "the upgrade was not queued behind the reload"
kill -TTIN "$SUP_PID"
wait_until 5 grep -q 'op_queued: scale queued' "$T/us.log" || fail "SIGTTIN was not queued behind the reload"
kill -HUP "$SUP_PID"
wait_until 5 bash -c "[ \$(grep -c 'op_queued: reload queued' '$T/us.log') -ge 1 ]" || fail "SIGHUP was not queued"
wait "$r" || true
wait_until 10 grep -q 'upgraded: supervisor re-executed' "$T/us.log" || fail "the queued upgrade did not run"
wait_until 20 bash -c "'$PORTSHARE' status --json --control '$T/us.sock' | jq -e '(.slots | length) == 3 and .workers == 3 and .generation == 3 and ([.slots[] | select(.state == \"ready\" and .generation == 3)] | length) == 3'" ||
    fail "the scale and the reload queued behind the upgrade were lost: $(status_json us | jq -c '{generation, workers, slots: [.slots[] | {slot, state, generation}]}'); $(grep -E 'op_|upgrad|scale|reload' "$T/us.log" | tail -8)"
ctl us stop >/dev/null
echo "PASS: SIGTTIN and SIGHUP queued behind an upgrade queued behind a reload both ran after the exec"
