#!/usr/bin/env bash
# Issue 10, item 9: the smaller ones.
#  1. `run --ready-timeout 1s -- sleep 100`: the log says the worker was not
#     ready in time and is being drained; it never says "exited with exit
#     code 0" about a worker that is still alive (the old code did, then
#     "draining: not ready in time").
#  2. An upgrade keeps the slots' crash-loop state and counters (restarts,
#     consecutive_exits, crash_loop) and the workers' STATUS (the old code
#     carried two hand-kept field lists that had drifted).
#  3. The same -l twice exits 2 saying so, not blaming "another process"
#     (the old code named itself as the holder).
. "$(dirname "$0")/sup_lib.sh"

# ---- 1. not ready in time ----
"$PORTSHARE" run --name rt --control "$T/rt.sock" -l 127.0.0.1:0 -w 1 --ready-timeout 1s \
    --drain-timeout 5s -- sleep 100 2>"$T/rt.log" &
SUP_PID=$!; SUP_PIDS+=("$SUP_PID")
wait_until 10 grep -q 'was not ready within 1000 ms' "$T/rt.log" || fail "no 'not ready' line: $(cat "$T/rt.log")"
line=$(grep -m1 'was not ready within 1000 ms' "$T/rt.log")
pid=$(grep -m1 -o 'worker [0-9]* started' "$T/rt.log" | awk '{ print $2 }')
grep -q "worker $pid " <<<"$line" || fail "the line does not name worker $pid: $line"
grep -q 'still running: draining it' <<<"$line" || fail "the line does not say it is drained: $line"
wait_until 10 grep -q "worker $pid .*exited with signal 15" "$T/rt.log" || fail "worker $pid was not drained: $(cat "$T/rt.log")"
! grep -q 'exited with exit code 0' "$T/rt.log" || fail "the log says a worker exited with exit code 0: $(grep 'exit code 0' "$T/rt.log")"
kill -TERM "$SUP_PID"; wait "$SUP_PID" || true
echo "PASS: a worker not ready in time: '$(sed 's/.*warn //; s/.*error //' <<<"$line")', then its exit by SIGTERM; never 'exited with exit code 0'"

# ---- 2. an upgrade keeps crash-loop state and counters ----
cat >"$T/worker.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" \$(cat "$T/mode.\$PORTSHARE_SLOT")
EOS
chmod +x "$T/worker.sh"
: >"$T/mode.0"; echo "--status kept-across-upgrade" >"$T/mode.1"
sup_start up -l 127.0.0.1:0 -w 2 -- "$T/worker.sh"
echo "--exit-after 100 3" >"$T/mode.0"
kill -KILL "$(status_json up | jq -r '.slots[0].pid')"
wait_until 15 bash -c "'$PORTSHARE' status --json --control '$T/up.sock' | jq -e '.slots[0].consecutive_exits >= 5'" ||
    fail "no crash loop in slot 0: $(status_json up | jq -c .slots[0])"
wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/up.sock' | jq -e '.slots[1].status == \"kept-across-upgrade\"'" ||
    fail "slot 1's STATUS= did not arrive"
before=$(status_json up)
out=$(ctl up upgrade) || fail "upgrade failed: $out"
after=$(status_json up)
note "before: $(jq -c '[.slots[] | {slot, pid, restarts, consecutive_exits, crash_loop, status}]' <<<"$before")"
note "after:  $(jq -c '[.slots[] | {slot, pid, restarts, consecutive_exits, crash_loop, status}]' <<<"$after")"
jq -e --argjson b "$before" '
    .slots[0].restarts >= $b.slots[0].restarts and
    .slots[0].consecutive_exits >= $b.slots[0].consecutive_exits and
    .slots[0].crash_loop == true and
    .slots[1].pid == $b.slots[1].pid and .slots[1].restarts == $b.slots[1].restarts and
    .slots[1].status == "kept-across-upgrade" and .slots[1].uptime_s >= $b.slots[1].uptime_s and
    .reloads == $b.reloads and .generation == $b.generation and .started == $b.started' <<<"$after" >/dev/null ||
    fail "the upgrade lost state: before $(jq -c '{reloads, generation, started, slots: [.slots[] | {pid, restarts, consecutive_exits, crash_loop, status, uptime_s}]}' <<<"$before"), after $(jq -c '{reloads, generation, started, slots: [.slots[] | {pid, restarts, consecutive_exits, crash_loop, status, uptime_s}]}' <<<"$after")"
ctl up status | grep -q 'CRASH LOOP' || fail "text status after the upgrade shows no crash loop: $(ctl up status)"
ctl up stop >/dev/null
echo "PASS: an upgrade kept slot 0's crash loop ($(jq -c '.slots[0] | {restarts, consecutive_exits, crash_loop}' <<<"$after")) and slot 1's worker, restarts and STATUS"

# ---- 3. the same -l twice ----
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for pair in "127.0.0.1:$port 127.0.0.1:$port" "tcp://127.0.0.1:$port 127.0.0.1:$port"; do
    set -- $pair
    rc=0; out=$(timeout 10 "$PORTSHARE" run --name dup --control "$T/dup.sock" -l "$1" -l "$2" -- "$TESTWORKER" 2>&1) || rc=$?
    [ "$rc" = 2 ] || fail "-l $1 -l $2 exited $rc: $out"
    grep -q "given twice" <<<"$out" || fail "-l $1 -l $2 does not say it is given twice: $out"
    ! grep -qi "another process" <<<"$out" || fail "-l $1 -l $2 blames another process: $out"
    echo "ok - -l $1 -l $2: exit 2: $out"
done
echo "PASS: the same listen address twice is a usage error that says so"
