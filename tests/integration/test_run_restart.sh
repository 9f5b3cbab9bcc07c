#!/usr/bin/env bash
# Supervisor death: workers do not keep serving alone (PR_SET_PDEATHSIG),
# and a new supervisor binds the same port at once, while the old
# connections still sit in TIME_WAIT (SO_REUSEADDR).  Also: JSON logs and
# the text status.
#
# In a network namespace of its own when root: the TIME_WAIT entries this
# test needs are not created once the machine's table is full of other
# loads' (without its own namespace the test found no TIME_WAIT connection to test with).
. "$(dirname "$0")/common.sh"
in_private_netns || NETNS_SHARED=1
. "$(dirname "$0")/sup_lib.sh"

sup_start one -l 127.0.0.1:0 -w 2 --log-format json -- "$TESTWORKER"
workers=$(sup_worker_pids one)
# every log line is one JSON object
jq -e -s 'length > 3 and all(.[]; has("time") and has("level") and has("event") and has("msg"))' "$T/one.log" >/dev/null ||
    fail "log is not JSON lines: $(head -3 "$T/one.log")"
ctl one status | grep -q "^SLOT  PID" || fail "text status has no slot table: $(ctl one status)"
ctl one status | grep -q "tcp://127.0.0.1:$PORT" || fail "text status does not show the listener"
# connections the server closes first leave TIME_WAIT on the server's port:
# each client keeps its side open until the server has closed
for i in $(seq 20); do
    (printf 'GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'; sleep 1) |
        socat -t 2 - TCP:127.0.0.1:$PORT >/dev/null 2>&1 &
done
wait_until 5 bash -c "[ \$(ss -tan state time-wait '( sport = :$PORT )' | tail -n +2 | wc -l) -gt 0 ]" || true
tw=$(ss -tan state time-wait "( sport = :$PORT )" | tail -n +2 | wc -l)
if [ "$tw" = 0 ] && [ -n "${NETNS_SHARED:-}" ] &&
    [ "$(ss -tan state time-wait | tail -n +2 | wc -l)" -ge $(( $(sysctl -n net.ipv4.tcp_max_tw_buckets) * 9 / 10 )) ]; then
    skip "the machine's TIME_WAIT table is full (tcp_max_tw_buckets), and a private network namespace needs root"
fi
[ "$tw" -gt 0 ] || fail "no TIME_WAIT connections on port $PORT to test with"

kill -KILL "$SUP_PID"
for w in $workers; do
    wait_until 5 bash -c "! kill -0 $w 2>/dev/null" || fail "worker $w still running after its supervisor died"
done
tw=$(ss -tan state time-wait "( sport = :$PORT )" | tail -n +2 | wc -l)
old=$PORT
sup_start two -l 127.0.0.1:$old -w 2 -- "$TESTWORKER"
[ "$PORT" = "$old" ] || fail "new supervisor is on port $PORT, not $old"
curl -sf "http://127.0.0.1:$PORT/" | grep -q "^pid=" || fail "new supervisor does not serve"
echo "PASS: workers died with their supervisor; a new one bound port $old at once with $tw connections in TIME_WAIT"
