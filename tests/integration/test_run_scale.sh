#!/usr/bin/env bash
# Issue 4, test 6: scale 2 -> 4 -> 1 -> 3 under load, with zero failed
# requests.  Scaling down steers new connections away from the retiring
# sockets first (a reuseport BPF program), lets their workers empty the
# queues, and only then closes them, so nothing queued is reset.
. "$(dirname "$0")/sup_lib.sh"

sup_start sc -l 127.0.0.1:0 -w 2 "${STEER[@]}" -- "$TESTWORKER"
check_steering sc
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --duration 120

settle() { # settle N: N slots, all ready, N sockets
    wait_until 15 bash -c "'$PORTSHARE' status --json --control '$T/sc.sock' | jq -e '(.slots | length) == $1 and ([.slots[] | select(.state == \"ready\")] | length) == $1 and (.listeners[0].sockets | length) == $1'" ||
        fail "did not settle at $1 workers: $(status_json sc | jq -c '{slots: [.slots[] | {slot, state}], sockets: .listeners[0].sockets}')"
}
for n in 4 1 3; do
    out=$(ctl sc scale $n) || fail "scale $n failed: $out"
    settle $n
    sleep 0.5
done
# TTIN / TTOU: one more, one less
kill -TTIN "$SUP_PID"; settle 4
kill -TTOU "$SUP_PID"; settle 3
load_stop load
note "scale under load: $RES"
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed while scaling: $RES"
pids=$(jq '.by_pid | keys | length' <<<"$RES")
[ "$pids" -ge 4 ] || fail "only $pids workers answered; scaling up did not add workers"
! grep -q retire_reset "$T/sc.log" || fail "a retired socket was closed with connections queued: $(grep retire_reset "$T/sc.log")"
echo "PASS: scaled 2->4->1->3->4->3 under load, $(jq .sent <<<"$RES") requests, 0 failed, $pids workers answered"

# A retiring slot whose worker dies with connections still queued in its
# socket (found by test_run_interleave: frozen worker, scale down, SIGKILL):
# closing the socket then would reset them; a new worker empties it first.
# Classic BPF only: with the eBPF program a retiring socket hands its queue
# over at once (test_run_migrate), so the slot never waits retiring.
sup_start rq -l 127.0.0.1:0 -w 2 --drain-timeout 10s --steering cbpf -- "$TESTWORKER"
victim=$(status_json rq | jq -r '.slots[1].pid')
kill -STOP "$victim"
"$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 40 --requests 40 --timeout 20000 --json \
    >"$T/rq.json" 2>/dev/null &
qpid=$!
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/rq.sock' | jq -e '.listeners[0].sockets[1].queued > 0'" ||
    fail "no connection queued behind the stopped worker of slot 1"
queued=$(status_json rq | jq '.listeners[0].sockets[1].queued')
ctl rq scale 1 >/dev/null || fail "scale 1 failed"
wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/rq.sock' | jq -e '.slots[1].state == \"retiring\"'" ||
    fail "slot 1 is not retiring: $(status_json rq | jq -c .slots)"
kill -KILL "$victim"
wait "$qpid" || true
q=$(cat "$T/rq.json")
[ "$(jq .ok <<<"$q")" = 40 ] || fail "connections queued in a retiring slot were lost when its worker died: $q $(grep -E 'retire_reset|retire_refill' "$T/rq.log")"
grep -q retire_refill "$T/rq.log" || fail "no retire_refill line in the log"
wait_until 15 bash -c "'$PORTSHARE' status --json --control '$T/rq.sock' | jq -e '(.slots | length) == 1 and (.listeners[0].sockets | length) == 1'" ||
    fail "slot 1 was never closed after its queue was emptied: $(status_json rq | jq -c .slots)"
echo "PASS: $queued connections queued in a retiring slot whose worker was killed were all served, then the slot closed"
