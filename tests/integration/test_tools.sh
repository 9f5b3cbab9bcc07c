#!/usr/bin/env bash
# shellcheck disable=SC2015 # "A && B || fail" is meant: fail unless all of them hold
# test_tools.sh - self-test of the two tools the supervisor tests stand on,
# tests/tools/loadgen and tests/tools/testworker, without the supervisor:
# testworker runs under Debian's systemd-socket-activate (which binds,
# passes LISTEN_FDS and execs it on the first connection), loadgen and
# curl/socat talk to it on loopback.  Every counter the supervisor tests
# rely on is shown able to count (failures, timeouts, bad statuses), not
# only to stay at zero.
. "$(dirname "$0")/common.sh"

: "${PS_TOOLS:?PS_TOOLS must name the test tools directory}"
LOADGEN=$PS_TOOLS/loadgen
WORKER=$PS_TOOLS/testworker
T=$(mktemp -d /tmp/ps-tools.XXXXXX)
PIDS=()

pass() { echo "ok: $*"; }
need systemd-socket-activate curl jq socat

cleanup() {
    local p rc=$?
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    if sanitizer_report "$T"; then
        rc=1
    fi
    rm -rf "$T"
    exit $rc
}
trap cleanup EXIT

# wait_gone PID SECONDS: until PID has exited
wait_gone() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    return 1
}

# start_worker HOST [systemd-socket-activate options] -- [testworker options]:
# sets WPID (the worker's pid: systemd-socket-activate execs it) and WPORT.
# A free port is guessed below the ephemeral range and guessed again when
# taken; the first request (ours) makes systemd-socket-activate exec.
start_worker() {
    local host=$1 ssa=() port i
    shift
    while [ "$1" != "--" ]; do ssa+=("$1"); shift; done
    shift
    for _ in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 12000))
        systemd-socket-activate -l "$host:$port" "${ssa[@]}" "$WORKER" "$@" 2>>"$T/worker.log" &
        WPID=$!
        PIDS+=("$WPID")
        for ((i = 0; i < 100; i++)); do
            kill -0 "$WPID" 2>/dev/null || break # the port was taken: bind failed
            # our own worker answers with its pid, anyone else on the port does not
            if curl -sg --max-time 2 -D - -o /dev/null "http://$host:$port/" 2>/dev/null |
                tr -d '\r' | grep -qx "X-Worker-Pid: $WPID"; then
                WPORT=$port
                return 0
            fi
            sleep 0.05
        done
        kill -KILL "$WPID" 2>/dev/null || true
    done
    fail "testworker did not start under systemd-socket-activate (see below)"
}

# loadgen_json NAME ARGS...: runs loadgen; RES = its JSON, RC = its exit code
loadgen_json() {
    local name=$1
    shift
    RC=0
    "$LOADGEN" --json "$@" >"$T/$name.json" 2>>"$T/loadgen.log" || RC=$?
    RES=$(cat "$T/$name.json")
    [ -n "$RES" ] || fail "loadgen $name printed no JSON: $(tail -3 "$T/loadgen.log")"
    # every request has exactly one outcome
    jq -e '.sent == .ok + .failed and
           .failed == .refused + .reset + .eof + .timeout + .connect_error + .bad_status + .bad_response' \
        <<<"$RES" >/dev/null || fail "loadgen $name: counters do not add up: $RES"
}
j() { jq -r "$1" <<<"$RES"; }

# ---- 1. the hand-off as the worker sees it, and its answer ------------------------
start_worker 127.0.0.1 --fdname=http -E PORTSHARE_SLOT=0 -E PORTSHARE_GENERATION=7 -- \
    --dump "$T/dump"
W1=$WPID P1=$WPORT
body=$(curl -s "http://127.0.0.1:$P1/")
[ "$body" = "pid=$W1 slot=0 gen=7 fds=1 names=http" ] || fail "unexpected body: $body"
d() { sed -n "s/^$1=//p" "$T/dump"; }
[ "$(d pid)" = "$W1" ] || fail "dump: pid $(d pid), expected $W1"
[ "$(d env.LISTEN_PID)" = "$W1" ] && [ "$(d env.LISTEN_FDS)" = 1 ] &&
    [ "$(d env.LISTEN_FDNAMES)" = http ] || fail "dump: LISTEN_* not as passed: $(cat "$T/dump")"
[ "$(d fds)" = "0 1 2 3" ] || fail "dump: descriptors '$(d fds)', expected exactly 0 1 2 3"
[[ "$(d fd.3)" == socket:\[* ]] && [ "$(d fd.3.type)" = stream ] &&
    [ "$(d fd.3.listening)" = 1 ] && [ "$(d fd.3.addr)" = "tcp://127.0.0.1:$P1" ] &&
    [ "$(d listen_fds)" = 1 ] && [ "$(d listen_names)" = http ] ||
    fail "dump: fd 3 is not the listening socket: $(cat "$T/dump")"
pass "worker $W1 got fd 3 = listening tcp://127.0.0.1:$P1 and nothing else, and says so"

# ---- 2. load without failures, both modes; exact counts -----------------------------
loadgen_json ka --connect "127.0.0.1:$P1" --keepalive --duration 1
[ "$RC" = 0 ] && [ "$(j .ok)" -gt 0 ] && [ "$(j .failed)" = 0 ] || fail "keep-alive load: $RES"
[ "$(j ".by_pid[\"$W1\"]")" = "$(j .ok)" ] || fail "keep-alive: by_pid does not count $W1: $RES"
[ "$(j .connections)" -le 16 ] || fail "keep-alive did not reuse connections: $RES"
pass "keep-alive: $(j .ok) ok, 0 failed, $(j .connections) connections, $(j .rps) req/s"

loadgen_json close --connect "127.0.0.1:$P1" --duration 1
[ "$RC" = 0 ] && [ "$(j .ok)" -gt 0 ] && [ "$(j .failed)" = 0 ] || fail "close-mode load: $RES"
[ "$(j .connections)" = "$(j .sent)" ] || fail "close mode reused a connection: $RES"
pass "connection-close: $(j .ok) ok, 0 failed, one connection each, $(j .rps) req/s"

loadgen_json count --connect "127.0.0.1:$P1" --requests 301 --threads 3 --concurrency 7
[ "$RC" = 0 ] && [ "$(j .sent)" = 301 ] && [ "$(j .ok)" = 301 ] || fail "--requests 301: $RES"
pass "--requests 301 sends exactly 301"

# ---- 3. the failure counters count ---------------------------------------------------
loadgen_json status --connect "127.0.0.1:$P1" --requests 20 --expect-status 404
[ "$RC" = 1 ] && [ "$(j .bad_status)" = 20 ] && [ "$(j '.status["200"]')" = 20 ] ||
    fail "--expect-status 404 against a 200 server: $RES"
pass "a status other than the expected one is a failure (bad_status 20, exit 1)"

rm -f "$T/stop"
"$LOADGEN" --json --connect "127.0.0.1:$P1" --keepalive --duration 60 --until-file "$T/stop" \
    >"$T/until.json" 2>>"$T/loadgen.log" &
lg=$!
sleep 0.5
touch "$T/stop"
wait_gone "$lg" 10 || fail "loadgen did not stop when --until-file appeared"
wait "$lg" || fail "loadgen --until-file: exit $?: $(cat "$T/until.json")"
RES=$(cat "$T/until.json")
[ "$(j .ok)" -gt 0 ] && [ "$(j '.elapsed_s < 30')" = true ] || fail "--until-file: $RES"
pass "--until-file stops the load (after $(j .elapsed_s) s of a 60 s cap)"

# SIGKILL mid-load, connection-close mode: the listener dies with its only
# holder, so what follows is refused (and what was in flight fails)
"$LOADGEN" --json --connect "127.0.0.1:$P1" --duration 1.2 >"$T/kill.json" 2>>"$T/loadgen.log" &
lg=$!
sleep 0.5
kill -KILL "$W1"
rc=0
wait "$lg" || rc=$?
RES=$(cat "$T/kill.json")
[ "$rc" = 1 ] && [ "$(j .ok)" -gt 0 ] && [ "$(j '.refused + .reset + .eof')" -gt 0 ] &&
    [ "$(j .failed)" -gt 0 ] || fail "SIGKILL under load was not counted: exit $rc, $RES"
pass "SIGKILL mid-load counted: $(j .ok) ok, $(j .failed) failed ($(j .refused) refused, $(j .reset) reset, $(j .eof) eof), exit 1"

# the same in keep-alive mode: a request on a connection the kill closed is
# retried once on a new connection, which is then refused
start_worker 127.0.0.1 -- --delay-response 50
W2=$WPID P2=$WPORT
"$LOADGEN" --json --connect "127.0.0.1:$P2" --keepalive --duration 1.2 >"$T/kill2.json" \
    2>>"$T/loadgen.log" &
lg=$!
sleep 0.5
kill -KILL "$W2"
rc=0
wait "$lg" || rc=$?
RES=$(cat "$T/kill2.json")
[ "$rc" = 1 ] && [ "$(j .ok)" -gt 0 ] && [ "$(j .retried)" -gt 0 ] && [ "$(j .refused)" -gt 0 ] ||
    fail "SIGKILL under keep-alive load: exit $rc, $RES"
pass "SIGKILL under keep-alive load: $(j .retried) in-flight requests retried, $(j .refused) refused"

# timeouts: responses slower than --timeout
start_worker 127.0.0.1 -- --delay-response 600
W3=$WPID P3=$WPORT
loadgen_json timeout --connect "127.0.0.1:$P3" --requests 3 --threads 1 --concurrency 3 --timeout 200
[ "$RC" = 1 ] && [ "$(j .timeout)" = 3 ] && [ "$(j .ok)" = 0 ] || fail "--timeout 200 vs 600 ms: $RES"
pass "responses slower than --timeout count as timeouts"

# ---- 4. draining on SIGTERM ------------------------------------------------------------
# one request in flight (delayed 600 ms), one served keep-alive connection idle
exec 7<>"/dev/tcp/127.0.0.1/$P3"
printf 'GET / HTTP/1.1\r\nHost: t\r\n\r\n' >&7
for _ in 1 2 3 4 5 6 7 8 9; do read -r -t 3 line <&7 || fail "no answer on the idle connection"; done
[[ "$line" == "pid=$W3 "* ]] || fail "keep-alive answer: $line"
curl -s -D "$T/drain.head" "http://127.0.0.1:$P3/" >"$T/drain.body" &
cpid=$!
sleep 0.3
kill -TERM "$W3"
wait_gone "$W3" 5 || fail "worker did not finish its drain"
rc=0
wait "$W3" || rc=$?
[ "$rc" = 0 ] || fail "drained worker exited $rc"
wait "$cpid" || fail "the request in flight during the drain failed"
grep -qi '^Connection: close' "$T/drain.head" && grep -q "^pid=$W3 " "$T/drain.body" ||
    fail "in-flight request not finished with Connection: close: $(cat "$T/drain.head" "$T/drain.body")"
rest=$(timeout 2 cat <&7) || fail "the idle keep-alive connection was not closed"
[ -z "$rest" ] || fail "unexpected bytes on the idle connection: $rest"
exec 7<&-
pass "SIGTERM: in-flight request answered (Connection: close), idle connection closed, exit 0"

# ---- 5. readiness messages ---------------------------------------------------------------
rm -f "$T/notify.sock"
socat -u "UNIX-RECV:$T/notify.sock" - >"$T/notify.out" 2>>"$T/worker.log" &
spid=$!
PIDS+=("$spid")
for _ in $(seq 40); do [ -S "$T/notify.sock" ] && break; sleep 0.05; done
start_worker 127.0.0.1 -E "NOTIFY_SOCKET=$T/notify.sock" -- --ready-after 100 --status "up and serving"
W4=$WPID
for _ in $(seq 40); do grep -q 'up and serving' "$T/notify.out" && break; sleep 0.05; done
kill -TERM "$W4"
wait_gone "$W4" 5 || fail "worker did not stop"
for _ in $(seq 40); do grep -q STOPPING "$T/notify.out" && break; sleep 0.05; done
msgs=$(tr '\n' '|' <"$T/notify.out")
[ "$msgs" = "STATUS=starting (--ready-after)READY=1|STATUS=up and servingSTOPPING=1" ] || fail "notify messages: '$msgs'"
pass "STATUS= at once (it speaks sd_notify), READY=1 with STATUS after --ready-after, STOPPING=1 on SIGTERM"

start_worker 127.0.0.1 -E "NOTIFY_SOCKET=$T/notify.sock" -- --no-notify
kill -TERM "$WPID"
wait_gone "$WPID" 5 || fail "worker did not stop"
[ "$(tr '\n' '|' <"$T/notify.out")" = "$msgs" ] || fail "--no-notify still notified"
kill -TERM "$spid"
pass "--no-notify sends nothing"

# ---- 6. IPv6 and datagrams -------------------------------------------------------------------
if ip -6 addr show dev lo 2>/dev/null | grep -q '::1/128'; then
    start_worker '[::1]' -- --no-notify
    loadgen_json v6 --connect "[::1]:$WPORT" --requests 200
    [ "$RC" = 0 ] && [ "$(j .ok)" = 200 ] || fail "IPv6: $RES"
    kill -TERM "$WPID"
    pass "IPv6 [::1]: 200 of 200 ok"
else
    echo "# no ::1 on lo: IPv6 part not run"
fi

for _ in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 12000))
    systemd-socket-activate --datagram -l "127.0.0.1:$port" "$WORKER" 2>>"$T/worker.log" &
    WPID=$!
    PIDS+=("$WPID")
    sleep 0.2
    kill -0 "$WPID" 2>/dev/null && break
done
# a first datagram makes systemd-socket-activate exec the worker; once it
# has, the echo comes back at once
echo wake | socat -t 0.1 - "UDP:127.0.0.1:$port" >/dev/null 2>&1 || true
for _ in $(seq 100); do
    [[ "$(readlink "/proc/$WPID/exe" 2>/dev/null)" == */testworker ]] && break
    sleep 0.05
done
echo=$(echo hello | timeout 5 socat -t 1 - "UDP:127.0.0.1:$port") || true
[ "$echo" = "pid=$WPID hello" ] || fail "datagram echo: '$echo'"
kill -TERM "$WPID"
pass "datagram socket: echoed with the worker's pid"

# ---- 7. misbehaviour on request, and bad options -------------------------------------------
start_worker 127.0.0.1 -- --exit-after 300 42
rc=0
wait "$WPID" || rc=$?
[ "$rc" = 42 ] || fail "--exit-after 300 42 exited $rc"
rc=0
"$WORKER" --crash-on-start || rc=$?
[ "$rc" = 1 ] || fail "--crash-on-start exited $rc"
rc=0
env -u LISTEN_FDS -u LISTEN_PID "$WORKER" 2>"$T/nofds.err" || rc=$?
[ "$rc" = 3 ] && [ "$(wc -l <"$T/nofds.err")" = 1 ] || fail "no sockets: exit $rc, $(cat "$T/nofds.err")"
pass "--exit-after MS CODE, --crash-on-start, and no sockets (exit 3) behave"

badopts() { # badopts PROGRAM ARGS...: exit 2 and exactly one line on stderr
    local rc=0
    "$@" >/dev/null 2>"$T/bad.err" || rc=$?
    [ "$rc" = 2 ] && [ "$(wc -l <"$T/bad.err")" = 1 ] ||
        fail "$* -> exit $rc, stderr: $(cat "$T/bad.err")"
}
badopts "$WORKER" --bogus
badopts "$WORKER" --exit-after 10
badopts "$WORKER" --delay-response soon
badopts "$LOADGEN" --requests 5
badopts "$LOADGEN" --connect 127.0.0.1 --requests 5
badopts "$LOADGEN" --connect 127.0.0.1:80
badopts "$LOADGEN" --connect 127.0.0.1:80 --duration 1 --threads 0
pass "bad options: exit 2 with one line, for both tools"
