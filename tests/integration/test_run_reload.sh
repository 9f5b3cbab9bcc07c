#!/usr/bin/env bash
# Under continuous load from a counting client, 20 reloads: zero failed
# requests, zero resets or refusals.  Then an old generation that ignores
# its drain signal and keeps accepting: under eBPF steering the new
# generation has sockets of its own, so the old one gets no new connection
# once the new one serves.
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
ctl r stop >/dev/null

# ---- an old generation that keeps accepting after its drain signal ----
sup_start ri -l 127.0.0.1:0 -w 2 --drain-timeout 30s -- "$TESTWORKER" --ignore-term
if [ "$(status_json ri | jq -r .steering)" != ebpf ]; then
    echo "SKIP (part): steering is $(status_json ri | jq -r .steering), not ebpf: the next generation shares the old one's sockets"
    exit 0
fi
out=$(ctl ri reload) || fail "reload failed: $out"
old=$(status_json ri | jq '[.other_workers[] | select(.generation == 1)] | length')
[ "$old" = 2 ] || fail "expected both generation-1 workers still running (they ignore SIGTERM), found $old"
gens=$(for i in $(seq 1 200); do curl -s --max-time 5 "http://127.0.0.1:$PORT/" | grep -o 'gen=[0-9]*'; done | sort | uniq -c | tr -s ' ' | tr '\n' ';')
[ "$gens" = " 200 gen=2;" ] || fail "200 new connections after the reload were answered by: $gens (expected all by generation 2)"
echo "PASS: an old generation that keeps accepting after its drain signal got none of 200 new connections"

