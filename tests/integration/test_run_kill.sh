#!/usr/bin/env bash
# Issue 4, test 3: SIGKILL a random worker 20 times under load.  No
# connection is refused or times out (nothing queued is lost: the socket
# stays open in the supervisor and the next worker of the slot accepts what
# waits); only connections the killed worker had already accepted may fail.
# Then the sharp case: connections queued behind a stopped worker are all
# served after it is killed and replaced.
. "$(dirname "$0")/sup_lib.sh"

sup_start k -l 127.0.0.1:0 -w 2 "${STEER[@]}" -- "$TESTWORKER"
check_steering k
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --duration 120

kill_workers k 20
inflight=$INFLIGHT
load_stop load; res=$RES
note "kill under load: $res (accepted by killed workers when killed: <= $inflight)"
restarts=$(status_json k | jq '[.slots[].restarts] | add')
[ "$restarts" = 20 ] || fail "status counts $restarts restarts, expected 20"
sent=$(jq .sent <<<"$res"); failed=$(jq .failed <<<"$res")
for k in refused timeout connect_error bad_status; do
    [ "$(jq .$k <<<"$res")" = 0 ] || fail "$k is not 0: a queued or new connection was lost: $res"
done
[ "$failed" -le "$inflight" ] || fail "$failed failures, more than the $inflight connections the killed workers held"
echo "PASS: 20 kills, $sent requests, $failed failed (killed workers held <= $inflight), 0 refused, 0 timed out"

# Queued connections survive their worker: freeze slot 0's worker, queue
# connections behind it, kill it; every queued client must get its answer.
victim=$(status_json k | jq -r '.slots[0].pid')
kill -STOP "$victim"
"$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 40 --requests 40 --timeout 15000 --json \
    >"$T/queued.json" 2>/dev/null &
qpid=$!
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/k.sock' | jq -e '.listeners[0].sockets[0].queued > 0'" ||
    fail "no connection queued behind the stopped worker"
queued=$(status_json k | jq '.listeners[0].sockets[0].queued')
kill -KILL "$victim"
wait "$qpid" || true
q=$(cat "$T/queued.json")
[ "$(jq .ok <<<"$q")" = 40 ] || fail "connections queued behind a killed worker were lost: $q"
echo "PASS: $queued connections queued behind a frozen worker were all served after it was killed"
