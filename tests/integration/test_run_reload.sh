#!/usr/bin/env bash
# Issue 4, test 2: under continuous load from a counting client, 20 reloads:
# zero failed requests, zero resets or refusals.
. "$(dirname "$0")/sup_lib.sh"

sup_start r -l 127.0.0.1:0 -w 2 --drain-timeout 5s -- "$TESTWORKER"
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --duration 120

for i in $(seq 1 20); do
    out=$(ctl r reload) || fail "reload $i failed: $out"
    echo "$out" | grep -q "generation $((i + 1)) is serving" || fail "reload $i: unexpected answer '$out'"
    sleep 0.1
done
gen=$(status_json r | jq -r .generation)
[ "$gen" = 21 ] || fail "generation is $gen after 20 reloads, expected 21"
# every slot now runs generation 21, and the old workers are gone or draining
status_json r | jq -e '[.slots[] | select(.generation == 21 and .state == "ready")] | length == 2' >/dev/null ||
    fail "slots not all on generation 21: $(status_json r | jq -c .slots)"

load_stop load; res=$RES
note "reload under load: $res"
sent=$(jq .sent <<<"$res"); failed=$(jq .failed <<<"$res")
[ "$sent" -gt 200 ] || fail "load too small to mean anything: $sent requests"
[ "$failed" = 0 ] || fail "$failed of $sent requests failed during 20 reloads: $res"
pids=$(jq -r '.by_pid | keys | length' <<<"$res")
[ "$pids" -gt 2 ] || fail "responses came from only $pids worker pids; reloads did not replace workers"
echo "PASS: 20 reloads, $sent requests, 0 failed, answered by $pids worker processes"
