#!/usr/bin/env bash
# Issue 12: a stalled worker never stalls its clients.  Under
# connection-close load, SIGSTOP one of two workers for 6 s with the default
# settings (--stall-timeout 1s): its queue stops draining, the slot is
# steered away from, and half a timeout later (with eBPF) its queue moves to
# the other slot, the slot gets a fresh socket and a fresh worker; the
# frozen one is drained.  No request fails, and at most a handful (those the
# frozen worker had already accepted) take longer than 2 s.  Then a worker
# that resumes within the grace simply gets traffic again.
. "$(dirname "$0")/sup_lib.sh"

sup_start st -l 127.0.0.1:0 -w 2 "${STEER[@]}" -- "$TESTWORKER"
check_steering st
steering=$(status_json st | jq -r .steering)
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --timeout 20000 --duration 120

victim=$(status_json st | jq -r '.slots[1].pid')
kill -STOP "$victim"
# the connections it had accepted when it froze: those wait out the freeze
held=$(ss -Htnp state established "( sport = :$PORT )" 2>/dev/null | grep -c "pid=$victim," || true)
wait_until 10 grep -q 'warn stall: slot 1 stalled' "$T/st.log" ||
    fail "slot 1 was not found stalled: $(status_json st | jq -c '[.slots[] | {slot, state}], .listeners')"
wait_until 10 grep -q 'stall_rescue: slot 1' "$T/st.log" ||
    fail "slot 1 was not rescued: $(tail -5 "$T/st.log")"
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/st.sock' | jq -e '.slots[1].state == \"ready\" and .slots[1].pid != $victim'" ||
    fail "slot 1 has no fresh ready worker: $(status_json st | jq -c '.slots[1]')"
sleep 4.5 # the 6 s of the freeze
kill -CONT "$victim"
wait_until 40 bash -c "! kill -0 $victim" || fail "the stalled worker $victim is still there"
sleep 0.5
load_stop load
st=$(status_json st)
note "SIGSTOP 6 s ($steering): $RES"
note "$(grep -E 'stall|worker_draining' "$T/st.log" | cut -d' ' -f3- | head -6)"
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed while a worker was stopped: $RES"
# Only connections the frozen worker held or had queued may be slow: those
# it had accepted wait out the freeze; the queued ones wait for the rescue
# (under eBPF they move then).  Without a rescue every connection hashed to
# it waits out the 6 s, more than these.  (How many, and how slow, is a
# figure for bench/run's scenario 10, not a bound of this test.)
slow=$(jq .slower_2s <<<"$RES")
# queued: what the stall line and the rescue line report, the larger
queued=$(grep -E 'warn stall: slot 1|stall_rescue: slot 1|draining: still' "$T/st.log" | grep -oE '[0-9]+ (queued|connection)' | cut -d' ' -f1 | sort -n | tail -1)
caught=$(( held + ${queued:-0} ))
note "slower than 2 s: $slow; held by the frozen worker $held, queued behind it at the rescue $((caught - held))"
[ "$slow" -le "$caught" ] || fail "$slow requests took longer than 2 s, more than the $caught the frozen worker held or had queued: $RES"
[ "$(jq '.slots[1].stalls' <<<"$st")" -ge 1 ] || fail "status does not count the stall: $(jq -c '.slots[1]' <<<"$st")"
[ "$(jq '.slots[1].stall_rescues' <<<"$st")" -ge 1 ] || fail "status does not count the rescue: $(jq -c '.slots[1]' <<<"$st")"
ctl st status | grep -q 'stalled 1 time(s), 1 rescued' || fail "status text does not show the stall: $(ctl st status)"
if [ "$steering" = ebpf ]; then
    moved=$(grep 'stall_rescue: slot 1' "$T/st.log" | grep -o '[0-9]* queued' | head -1 | cut -d' ' -f1)
    [ "${moved:-0}" -ge 1 ] || fail "nothing moved from the stalled queue: $(grep stall_rescue "$T/st.log")"
fi
echo "PASS: a worker stopped for 6 s: stalled, rescued, $(jq .sent <<<"$RES") requests, 0 failed, $slow slower than 2 s (p99 $(jq .latency_ms.p99 <<<"$RES") ms)"

# a worker that resumes before the grace is over gets traffic again
sup_start r -l 127.0.0.1:0 -w 2 "${STEER[@]}" --stall-timeout 4s -- "$TESTWORKER"
load_start load2 --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --timeout 20000 --duration 120
victim=$(status_json r | jq -r '.slots[1].pid')
kill -STOP "$victim"
wait_until 10 grep -q 'warn stall: slot 1 stalled' "$T/r.log" || fail "slot 1 was not found stalled"
kill -CONT "$victim"
wait_until 10 grep -q 'stall_resumed: slot 1' "$T/r.log" || fail "slot 1 did not resume: $(tail -3 "$T/r.log")"
! grep -q 'stall_rescue' "$T/r.log" || fail "a worker that resumed was replaced anyway"
[ "$(status_json r | jq -r '.slots[1].pid')" = "$victim" ] || fail "the resumed worker was replaced"
sleep 1
load_stop load2
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed around a resumed stall: $RES"
[ "$(jq ".by_pid[\"$victim\"] // 0" <<<"$RES")" -gt 0 ] || fail "the resumed worker served nothing"
echo "PASS: a worker that resumed within the grace kept its slot and got traffic again"

# one slot only: no other slot serves; the queue moves to the slot's fresh
# socket, which joins the group before the old one is shut down (eBPF), or
# stays in the shared socket (CBPF), and the fresh worker serves it.  The worker is frozen before the load
# starts: frozen under load, it may hold every one of the client's 8
# connections, so that none waits in the queue and there is nothing to see
# (a stall is a queue that does not go down).
sup_start one -l 127.0.0.1:0 -w 1 "${STEER[@]}" -- "$TESTWORKER"
victim=$(status_json one | jq -r '.slots[0].pid')
kill -STOP "$victim"
load_start load3 --connect 127.0.0.1:$PORT --threads 1 --concurrency 8 --timeout 20000 --duration 120
wait_until 10 grep -q 'stall_rescue: slot 0' "$T/one.log" || fail "the only slot was not rescued: $(tail -3 "$T/one.log")"
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/one.sock' | jq -e '.slots[0].state == \"ready\" and .slots[0].pid != $victim'" ||
    fail "no fresh worker in the only slot"
sleep 1
kill -CONT "$victim"
sleep 0.5
load_stop load3
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed when the only worker stalled: $RES"
echo "PASS: the only worker stalled: its queue waited for the fresh worker, 0 failed of $(jq .sent <<<"$RES")"
