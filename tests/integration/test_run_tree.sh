#!/usr/bin/env bash
# Issue 10, item 4: a worker is its whole process tree, and nothing of it
# outlives the supervisor.
#  1. Workers that ignore SIGTERM die when the supervisor is SIGKILLed (the
#     death signal is SIGKILL), and the next `portshare run` on that port
#     starts (the old code left them serving, reparented to pid 1, and the
#     next run failed with exit 3, "another process already listens").
#  2. A worker's daemonising grandchild (setsid, keeps fd 3) is killed when
#     its worker dies, so restarts do not pile them up, and when the
#     supervisor stops; the next `portshare run` on that port starts.
#  3. If the supervisor itself is SIGKILLed, such a daemon is out of its
#     reach (README): the next run refuses the port, naming the daemon.
. "$(dirname "$0")/sup_lib.sh"

# processes started for supervisor $1: their environment names its notify socket
tagged() {
    grep -lz "^NOTIFY_SOCKET=@portshare/$1/" /proc/[0-9]*/environ 2>/dev/null |
        sed 's|^/proc/||; s|/environ$||' | sort -n | tr '\n' ' ' || true
}
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# ---- 1. workers that ignore SIGTERM, supervisor SIGKILLed ----
sup_start it -l 127.0.0.1:0 -w 2 -- "$TESTWORKER" --ignore-term
workers=$(sup_worker_pids it)
port=$PORT
kill -KILL "$SUP_PID"
for w in $workers; do
    wait_until 5 bash -c "! kill -0 $w 2>/dev/null" || fail "worker $w (ignores SIGTERM) still runs after its supervisor was SIGKILLed"
done
sup_start it2 -l 127.0.0.1:$port -w 2 --drain-timeout 2s -- "$TESTWORKER" --ignore-term
curl -sf "http://127.0.0.1:$port/" >/dev/null || fail "the next supervisor on port $port does not serve: $(cat "$T/it2.log")"
# stop: they ignore the drain signal, so they get SIGKILL at the drain timeout
ctl it2 stop --timeout 60s >/dev/null || fail "stop failed"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "supervisor still running after stop"
[ -z "$(tagged "$SUP_PID")" ] || fail "processes left after stop: $(tagged "$SUP_PID")"
echo "PASS: workers ignoring SIGTERM died with their SIGKILLed supervisor; the next run on port $port serves; stop leaves nothing"

# ---- 2. a daemonising grandchild that keeps fd 3 ----
cat >"$T/daemonise.sh" <<EOS
#!/bin/sh
# the classic daemon: its own session and group, the listener inherited
setsid sleep 1000 &
exec "$TESTWORKER"
EOS
chmod +x "$T/daemonise.sh"
daemons() { # the daemons of supervisor $1: tagged processes that are not its workers
    local w p
    w=" $(sup_worker_pids "$2" | tr '\n' ' ') "
    for p in $(tagged "$1"); do [[ $w == *" $p "* ]] || echo "$p"; done | tr '\n' ' '
}
sup_start dm -l 127.0.0.1:0 -w 2 --drain-timeout 3s -- "$T/daemonise.sh"
port=$PORT
ndaemons() { [ "$(daemons "$SUP_PID" "$1" | wc -w)" = "$2" ]; }
wait_until 5 ndaemons dm 2 || true
first=$(daemons "$SUP_PID" dm)
[ "$(wc -w <<<"$first")" = 2 ] || fail "expected one daemon per worker, found '$first'"
for d in $first; do
    ls -l "/proc/$d/fd/3" | grep -q socket || fail "daemon $d does not hold the listener at fd 3"
    [ "$(ps -o sid= -p "$d" | tr -d ' ')" = "$d" ] || fail "daemon $d did not leave its worker's session"
done
for i in 1 2 3; do
    victim=$(status_json dm | jq -r '.slots[0].pid')
    kill -KILL "$victim"
    wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/dm.sock' | jq -e '.slots[0].pid != $victim and .slots[0].state == \"ready\"'" ||
        fail "slot 0 not back after kill $i"
    sleep 0.3
done
now=$(daemons "$SUP_PID" dm)
note "daemons at the start: $first; after 3 restarts of slot 0: $now"
[ "$(wc -w <<<"$now")" = 2 ] || fail "daemons piled up over 3 restarts: '$first' -> '$now'"
status_json dm | jq -e '.strays_killed >= 3' >/dev/null || fail "status counts $(status_json dm | jq .strays_killed) strays killed, expected >= 3"
grep -q ' stray_killed: ' "$T/dm.log" || fail "no stray_killed line in the log"
all=$(tagged "$SUP_PID")
ctl dm stop >/dev/null || fail "stop failed"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "supervisor still running after stop"
for p in $all; do alive "$p" && fail "process $p of a worker's tree survived stop: $(ps -o pid,ppid,sid,comm -p "$p")"; done
sup_start dm2 -l 127.0.0.1:$port -w 2 -- "$TESTWORKER"
curl -sf "http://127.0.0.1:$port/" >/dev/null || fail "the next supervisor on port $port does not serve"
ctl dm2 stop >/dev/null
echo "PASS: daemonising grandchildren holding fd 3: killed with their worker (3 restarts, still one per worker), all gone at stop; the next run on port $port serves"

# ---- 3. supervisor SIGKILLed: the daemon is out of reach, and named ----
sup_start dk -l 127.0.0.1:0 -w 1 -- "$T/daemonise.sh"
port=$PORT
wait_until 5 ndaemons dk 1 || true
d=$(daemons "$SUP_PID" dk | awk '{ print $1 }')
[ -n "$d" ] || fail "no daemon started"
sup=$SUP_PID
kill -KILL "$sup"
wait_until 5 bash -c "! kill -0 $sup 2>/dev/null"
rc=0; out=$("$PORTSHARE" run --name dk2 --control "$T/dk2.sock" -l 127.0.0.1:$port -w 1 -- "$TESTWORKER" 2>&1) || rc=$?
# ours to clean up: it carries the dead supervisor's tag
tr '\0' '\n' <"/proc/$d/environ" | grep -q "^NOTIFY_SOCKET=@portshare/$sup/" && kill -KILL "$d"
[ "$rc" = 3 ] || fail "a run on the port a leftover daemon holds exited $rc: $out"
grep -q "pid $d" <<<"$out" || fail "the refusal does not name the daemon (pid $d): $out"
echo "PASS: a daemon that left its worker's session before the supervisor was SIGKILLed holds the port, and the next run names it ($out)"
