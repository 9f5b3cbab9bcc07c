#!/usr/bin/env bash
# A slot stalls while a reload is in flight: slot 0's old worker and its
# new generation's worker are both frozen right after the reload starts
# (the new generation says READY=1 only after 4 s, so the reload waits).
# The slot is steered away from, but not rescued: a rescue would give the
# slot a fresh socket that the new worker, already holding the old one,
# never sees, so after the commit the slot served nobody and stalled (and
# was rescued) a second time, with its clients waiting.  Thawed, the two
# workers take the queue; at the commit generation 2 serves on both slots;
# no rescue at all, no request failed.
. "$(dirname "$0")/sup_lib.sh"

# generation 2 is slow to come up (READY=1 after 4 s), serving all along
cat >"$T/worker.sh" <<EOS
#!/bin/sh
if [ "\$PORTSHARE_GENERATION" = 2 ]; then exec "$TESTWORKER" --ready-after 4000; fi
exec "$TESTWORKER"
EOS
chmod +x "$T/worker.sh"
sup_start sr -l 127.0.0.1:0 -w 2 "${STEER[@]}" --ready-timeout 20s --drain-timeout 10s -- "$T/worker.sh"
check_steering sr
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --timeout 20000 --duration 120

old=$(status_json sr | jq -r '.slots[0].pid')
ctl sr reload >"$T/reload.out" 2>&1 &
reload_pid=$!
wait_until 10 grep -q 'started in slot 0 (generation 2)' "$T/sr.log" || fail "no generation 2 worker for slot 0"
new=$(grep 'started in slot 0 (generation 2)' "$T/sr.log" | grep -o 'worker [0-9]*' | cut -d' ' -f2)
kill -STOP "$old" "$new"
wait_until 10 grep -q 'warn stall: slot 0 stalled' "$T/sr.log" ||
    fail "slot 0 was not found stalled: $(status_json sr | jq -c '{slots: [.slots[] | {slot, state, pid, next_pid}], listeners}'); load: $(cat "$T/load.err" 2>/dev/null | tail -3); log: $(tail -15 "$T/sr.log")"
sleep 1.5 # well past the point where a rescue would come (half a timeout)
kill -CONT "$old" "$new"
wait "$reload_pid" || fail "the reload failed: $(cat "$T/reload.out")"
grep -q 'generation 2' "$T/reload.out" || fail "reload: $(cat "$T/reload.out")"
sleep 1.5 # traffic on the committed generation
load_stop load
st=$(status_json sr)
note "$(grep -E 'stall|reload_done' "$T/sr.log" | cut -d' ' -f3- | cut -c1-160)"
[ "$(jq '[.slots[].stall_rescues] | add' <<<"$st")" = 0 ] ||
    fail "a slot was rescued during or after the reload: $(grep -E 'stall' "$T/sr.log" | cut -d' ' -f3-)"
[ "$(jq -r '[.slots[].generation] | unique | join(",")' <<<"$st")" = 2 ] ||
    fail "generation 2 does not serve both slots: $(jq -c '[.slots[] | {slot, generation, state}]' <<<"$st")"
for s in 0 1; do
    n=$(jq -r ".by_pid[\"$(jq -r ".slots[$s].pid" <<<"$st")\"] // 0" <<<"$RES")
    [ "$n" -gt 0 ] || fail "slot $s's generation 2 worker answered nothing: $RES"
done
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed: $RES"
grep -q 'stall_reload: slot 0' "$T/sr.log" || fail "the log does not say why slot 0 was not rescued"
echo "PASS: a stall during a reload: steered away, not rescued; generation 2 serves both slots; $(jq .sent <<<"$RES") requests, 0 failed"
