#!/usr/bin/env bash
# Issue 12: scale 4 -> 1 under connection-close load with the eBPF
# SELECT_OR_MIGRATE program: the retired sockets, whose frozen workers take
# nothing of what is queued in them, are shut down and what they hold
# moves to slot 0.  To prove the move (not just empty
# queues), the workers of slots 1-3 are frozen first so that connections
# pile up in their queues: under CBPF steering those would wait for the
# retire grace and the queue to empty (never, while frozen) and then be
# reset; here the slots whose queues do not go down hand over while their
# workers are still frozen, and no request fails.  Then back up to 3 (the shut-down sockets listen
# again) and down to 1 once more, unfrozen.
. "$(dirname "$0")/sup_lib.sh"

need_ebpf

sup_start m -l 127.0.0.1:0 -w 4 --steering ebpf --drain-timeout 30s -- "$TESTWORKER"
[ "$(status_json m | jq -r .steering)" = ebpf ] || fail "status does not say ebpf: $(status_json m | jq -c '{steering, steering_reason}')"
ctl m status | grep -q '^steering    ebpf' || fail "status text does not show the steering: $(ctl m status)"
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --timeout 20000 --duration 120

frozen=()
for s in 1 2 3; do
    frozen+=("$(status_json m | jq -r ".slots[$s].pid")")
done
kill -STOP "${frozen[@]}"
queued() { status_json m | jq '[.listeners[0].sockets[1:][] | .queued // 0] | add'; }
wait_until 15 bash -c "[ \$('$PORTSHARE' status --json --control '$T/m.sock' | jq '[.listeners[0].sockets[1:][] | .queued // 0] | add') -ge 3 ]" ||
    fail "connections did not queue behind the frozen workers: $(status_json m | jq -c .listeners)"
before=$(queued)
out=$(ctl m scale 1) || fail "scale 1 failed: $out"
# handed over while their workers are still frozen (their queues do not go
# down), not after the drain timeout: nothing stays queued in slots 1-3
# (a slot with nothing queued needs no hand-over: its socket closes when
# its worker is gone)
wait_until 10 bash -c "[ \$('$PORTSHARE' status --json --control '$T/m.sock' | jq '[.listeners[0].sockets[1:][] | .queued // 0] | add') = 0 ] && grep -q slot_handover '$T/m.log'" ||
    fail "the retired slots did not hand their queues over: $(status_json m | jq -c .listeners); $(grep -E 'slot_|retire' "$T/m.log" | tail -5)"
moved=$(grep slot_handover "$T/m.log" | grep -o '[0-9]* queued' | awk '{s += $1} END {print s + 0}')
[ "$moved" -ge 1 ] || fail "the handover moved nothing (queued before: $before)"
st=$(status_json m)
[ "$(jq '[.slots[1:][] | select(.state == "closing")] | length' <<<"$st")" = 3 ] ||
    fail "slots 1-3 not closing: $(jq -c '[.slots[] | {slot, state}]' <<<"$st")"
note "$before queued behind frozen workers; scale 4->1 moved $moved of them"
sleep 1
kill -CONT "${frozen[@]}"

settle() { # settle N: N slots, all ready, N sockets
    wait_until 30 bash -c "'$PORTSHARE' status --json --control '$T/m.sock' | jq -e '(.slots | length) == $1 and ([.slots[] | select(.state == \"ready\")] | length) == $1 and (.listeners[0].sockets | length) == $1'" ||
        fail "did not settle at $1 workers: $(status_json m | jq -c '{slots: [.slots[] | {slot, state}], sockets: .listeners[0].sockets}')"
}
settle 1
out=$(ctl m scale 3) || fail "scale 3 failed: $out"
settle 3
sleep 0.5
out=$(ctl m scale 1) || fail "scale 1 failed: $out"
settle 1
sleep 0.5
load_stop load
note "scale under load with migration: $RES"
for k in failed refused reset eof timeout connect_error; do
    [ "$(jq .$k <<<"$RES")" = 0 ] || fail "$k is not 0 while scaling down with migration: $RES"
done
[ "$(jq .ok <<<"$RES")" -gt 100 ] || fail "too little load to mean anything: $RES"
! grep -q retire_reset "$T/m.log" || fail "a retired socket reset its queue: $(grep retire_reset "$T/m.log")"
echo "PASS: scale 4->1 with $before connections queued behind frozen workers: handed over at once ($moved moved), $(jq .sent <<<"$RES") requests, 0 failed"
