#!/usr/bin/env bash
# Under systemd: the supervisor takes the sockets systemd passes it
# (LISTEN_FDS, here from Debian's systemd-socket-activate) instead of
# binding, shares them with its workers, and reports READY=1, RELOADING=1
# and STOPPING=1 to its own NOTIFY_SOCKET.
. "$(dirname "$0")/sup_lib.sh"
command -v systemd-socket-activate >/dev/null || skip "systemd-socket-activate is not installed"

socat -u UNIX-RECV:"$T/notify.sock" - >"$T/notify.log" 2>/dev/null &
SUP_PIDS+=($!)
wait_until 5 test -S "$T/notify.sock"

# a port below the ephemeral range (net.ipv4.ip_local_port_range): one in
# it may be the local port of any of the thousands of client connections
# the other tests hold open meanwhile, and a connected socket's port is
# refused to a listener's bind, SO_REUSEADDR or not -- five tries in a row
# were once, under both builds' suites side by side
low=$(awk '{ print $1 - 1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32767)
[ "$low" -gt 20000 ] || low=32767
for try in 1 2 3 4 5; do
    PORT=$(shuf -i "20000-$low" -n 1)
    systemd-socket-activate -l 127.0.0.1:$PORT --fdname=web -E NOTIFY_SOCKET="$T/notify.sock" \
        "$PORTSHARE" run -w 2 --name sd --control "$T/sd.sock" -- "$TESTWORKER" 2>"$T/sd.log" &
    SUP_PID=$!; SUP_PIDS+=("$SUP_PID")
    # systemd-socket-activate execs its program on the first connection,
    # which then waits in the queue until a worker accepts it
    if wait_until 5 grep -q "Listening on" "$T/sd.log"; then
        first=$(curl -sf --max-time 20 "http://127.0.0.1:$PORT/first") || fail "first connection not served"
        break
    fi
    kill $SUP_PID 2>/dev/null || true
    grep -q "Address already in use" "$T/sd.log" || { cat "$T/sd.log"; fail "supervisor under systemd-socket-activate did not start"; }
done
echo "$first" | grep -q "^pid=" || fail "first connection got '$first'"
wait_until 10 grep -q 'ready: all' "$T/sd.log" || fail "workers not ready: $(cat "$T/sd.log")"
grep -q "listening on tcp://127.0.0.1:$PORT (1 socket, from systemd" "$T/sd.log" || fail "did not adopt the socket: $(cat "$T/sd.log")"
status_json sd | jq -e '.listeners[0].inherited == true and .listeners[0].name == "web"' >/dev/null ||
    fail "status does not show the inherited socket: $(status_json sd | jq -c .listeners)"
body=$(curl -sf "http://127.0.0.1:$PORT/") || fail "workers do not serve the systemd socket"
echo "$body" | grep -q "names=web" || fail "LISTEN_FDNAMES did not reach the worker: $body"
wait_until 5 grep -q READY=1 "$T/notify.log" || fail "no READY=1 to systemd"
ctl sd reload >/dev/null || fail "reload failed"
wait_until 5 grep -q RELOADING=1 "$T/notify.log" || fail "no RELOADING=1 to systemd"
grep -q MONOTONIC_USEC= "$T/notify.log" || fail "RELOADING=1 without MONOTONIC_USEC"
[ "$(grep -c READY=1 "$T/notify.log")" -ge 2 ] || fail "no READY=1 after the reload"
ctl sd stop >/dev/null || fail "stop failed"
wait_until 5 grep -q STOPPING=1 "$T/notify.log" || fail "no STOPPING=1 to systemd"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "supervisor still running after stop"
echo "PASS: adopted systemd's socket, shared it with workers, told systemd READY/RELOADING/STOPPING: $(tr '\n' ' ' <"$T/notify.log" | cut -c1-200)"
