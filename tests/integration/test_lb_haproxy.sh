#!/usr/bin/env bash
# test_lb_haproxy.sh - portshare behind a load balancer, as a user who
# outgrew one machine runs it: two "hosts" (network namespaces created here,
# each joined to this namespace by a veth pair), each running `portshare
# serve` on its own address with --metrics and --agent, and Debian's HAProxy
# in front (in this namespace) with `agent-check agent-inter 200ms`,
# `retries 0` and no `option redispatch`: a request sent to a host that
# cannot answer it fails, nothing hides it.  Under continuous load through
# HAProxy (loadgen, one connection per request, every failure counted):
#   1. a rolling reload: `portshare reload` on host 1, then host 2;
#   2. an in-place upgrade of each host's supervisor (`portshare upgrade`);
#   3. each whole host in turn: `portshare stop --lameduck 8s`; the agent
#      says "drain", HAProxy shows the server DRAIN and sends it no new
#      session while it still serves; the lame duck ends by itself, well
#      before its 8 s, once no new connection comes (HAProxy's `check` goes
#      to the metrics port, not the served one); then it drains and exits;
#      it is started again and HAProxy takes it back (UP) before the other
#      host goes.  While host 0 is a lame duck a client of its own keeps
#      connecting to it straight for 2 s (a balancer that has not moved
#      away yet): none of its connections is refused or reset, and the lame
#      duck lasts until that client stops, then ends by itself.
# 0 failed requests, and the count is printed.  Skipped (exit 77, with the
# reason) without root, without haproxy, or where a network namespace cannot
# be created.  Traffic only on loopback and on the veth pairs made here; every
# process started here and both namespaces go on exit, by pid and by name.
. "$(dirname "$0")/sup_lib.sh"

# a directory of its own: haproxy's stats socket and the hosts' control
# sockets live there for the whole test
rmdir "$T" && T=$(mktemp -d /tmp/ps-lb.XXXXXX)

need haproxy socat jq curl ip
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces (ip netns add)"

NS=(ps-lb$$-1 ps-lb$$-2)
VETH=(psl$$a psl$$b) # the namespace ends are these with a trailing "n"
# two /24s that no route of this machine uses yet
for base in $(seq $(( ($$ % 60) * 4 + 10 )) 2 250) $(seq 10 2 250); do
    if [ -z "$(ip route show "10.213.$base.0/24")$(ip route show "10.213.$((base + 1)).0/24")" ]; then
        break
    fi
done
ADDR=(10.213.$base.2 10.213.$((base + 1)).2)
GW=(10.213.$base.1 10.213.$((base + 1)).1)
HAP_PID=
LOAD_PID=
DIRECT_PID=
HOST_PID=("" "")

lb_cleanup() {
    local p
    for p in "$LOAD_PID" "$DIRECT_PID" "$HAP_PID" "${HOST_PID[@]}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "$LOAD_PID" "$DIRECT_PID" "$HAP_PID" "${HOST_PID[@]}"; do
        [ -n "$p" ] || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    for p in 0 1; do
        ip netns del "${NS[p]}" 2>/dev/null || true
        ip link del "${VETH[p]}" 2>/dev/null || true
    done
}
# set +e: under errexit the "(exit $rc)" that hands rc to cleanup would end the trap
trap 'rc=$?; set +e; lb_cleanup; (exit $rc); cleanup' EXIT

for i in 0 1; do
    ip netns add "${NS[i]}" 2>"$T/netns.err" || skip "cannot create a network namespace: $(cat "$T/netns.err")"
    ip -n "${NS[i]}" link set lo up
    ip link add "${VETH[i]}" type veth peer name "${VETH[i]}n" netns "${NS[i]}" ||
        skip "cannot create a veth pair"
    ip addr add "${GW[i]}/24" dev "${VETH[i]}"
    ip link set "${VETH[i]}" up
    ip -n "${NS[i]}" addr add "${ADDR[i]}/24" dev "${VETH[i]}n"
    ip -n "${NS[i]}" link set "${VETH[i]}n" up
done

# host_start I: the supervisor of host I, in its namespace; waits until both
# of its workers are ready
host_start() {
    local i=$1 n=h$1
    ip netns exec "${NS[i]}" "$PORTSHARE" serve --name "$n" --control "$T/$n.sock" \
        -l "${ADDR[i]}:8080" -w 2 --metrics "${ADDR[i]}:9100" --agent "${ADDR[i]}:9101" \
        --drain-timeout 10s 2>>"$T/$n.log" &
    HOST_PID[i]=$!
    wait_until 30 all_ready "$n" 2 || { tail -20 "$T/$n.log" >&2; fail "host $i did not get ready"; }
}

# haproxy's view of server hI: UP, DRAIN, DOWN, MAINT... and its sessions
hap() { echo "show stat" | socat -t5 - "UNIX-CONNECT:$T/haproxy.sock"; }
srv_status() { hap | awk -F, -v s="h$1" '$1 == "be" && $2 == s { print $18 }'; }
srv_sessions() { hap | awk -F, -v s="h$1" '$1 == "be" && $2 == s { print $8 }'; }
srv_is() { [[ "$(srv_status "$1")" == "$2"* ]]; } # "DRAIN (agent)"

host_start 0
host_start 1
for i in 0 1; do
    ip netns exec "${NS[i]}" curl -sf "http://${ADDR[i]}:9100/healthz" >/dev/null || fail "host $i: /healthz"
done

LBPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$T/haproxy.cfg" <<EOF
global
    maxconn 1000
    nbthread 1
    stats socket $T/haproxy.sock mode 600 level admin
defaults
    mode http
    option http-server-close
    retries 0
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$LBPORT
    default_backend be
backend be
    balance roundrobin
    server h0 ${ADDR[0]}:8080 check port 9100 inter 200ms fall 2 rise 1 agent-check agent-port 9101 agent-inter 200ms
    server h1 ${ADDR[1]}:8080 check port 9100 inter 200ms fall 2 rise 1 agent-check agent-port 9101 agent-inter 200ms
EOF
haproxy -c -f "$T/haproxy.cfg" >"$T/haproxy.check" 2>&1 || fail "haproxy -c: $(cat "$T/haproxy.check")"
haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
HAP_PID=$!
wait_until 20 srv_is 0 UP && wait_until 20 srv_is 1 UP ||
    fail "haproxy does not see both hosts UP: $(hap | cut -d, -f1,2,18) $(cat "$T/haproxy.log")"
curl -sf "http://127.0.0.1:$LBPORT/" >/dev/null || fail "no answer through haproxy"
ok "two hosts in network namespaces ${NS[*]}, haproxy on 127.0.0.1:$LBPORT sees both UP"

# continuous load through haproxy: bounded (120 s at most), every outcome counted
rm -f "$T/load.stop"
"$LOADGEN" --json --until-file "$T/load.stop" --connect "127.0.0.1:$LBPORT" --threads 1 \
    --concurrency 8 --duration 150 --timeout 20000 >"$T/load.json" 2>"$T/load.err" &
LOAD_PID=$!
sleep 1

# 1. rolling reload
for i in 0 1; do
    ctl "h$i" reload >/dev/null || fail "reload of host $i failed"
    sleep 0.5
done
ok "rolling reload of both hosts"

# 2. in-place upgrade of each supervisor
for i in 0 1; do
    pid=${HOST_PID[i]}
    ctl "h$i" upgrade >/dev/null || fail "upgrade of host $i failed"
    wait_until 10 all_ready "h$i" 2 || fail "host $i not ready after the upgrade"
    [ "$(status_json "h$i" | jq -r .pid)" = "$pid" ] || fail "host $i: another pid after the upgrade"
    sleep 0.5
done
ok "in-place upgrade of both supervisors"

# 3. each whole host: lame duck, stop, start again.  The lame duck may last
# 8 s at most; it ends once the agent has been asked twice and no new
# connection came for three agent intervals (at least 1 s).
LD_MS=8000
for i in 0 1; do
    t0=$(now_ms)
    ctl "h$i" stop --lameduck "${LD_MS}ms" >"$T/stop$i.out" 2>&1 &
    stopper=$!
    DIRECT_PID=
    if [ "$i" = 0 ]; then # a balancer that has not moved away yet: 2 s of its connections
        "$LOADGEN" --json --connect "${ADDR[i]}:8080" --threads 1 --concurrency 2 --duration 2 \
            --timeout 20000 >"$T/direct.json" 2>"$T/direct.err" &
        DIRECT_PID=$!
    fi
    wait_until 3 srv_is "$i" DRAIN || fail "haproxy does not show host $i DRAIN in lame duck: $(hap | cut -d, -f1,2,18)"
    drained_at=$(( $(now_ms) - t0 ))
    sess=$(srv_sessions "$i")
    wait "$stopper" || fail "stop --lameduck of host $i: $(cat "$T/stop$i.out")"
    wait "${HOST_PID[i]}" 2>/dev/null || true
    HOST_PID[i]=
    gone_at=$(( $(now_ms) - t0 ))
    [ "$(srv_sessions "$i")" = "$sess" ] || fail "host $i got new sessions while drained: $sess -> $(srv_sessions "$i")"
    grep -q 'lameduck_quiet' "$T/h$i.log" ||
        fail "host $i: the lame duck did not end by itself once no new connection came (gone after $gone_at ms of at most $LD_MS): $(grep lameduck "$T/h$i.log" | tail -3)"
    [ "$gone_at" -lt "$LD_MS" ] || fail "host $i stopped after $gone_at ms, not before the bound of its lame duck ($LD_MS ms)"
    if [ -n "$DIRECT_PID" ]; then
        wait "$DIRECT_PID" || true; DIRECT_PID=
        d=$(cat "$T/direct.json")
        [ -n "$d" ] || fail "the direct client printed no result: $(cat "$T/direct.err")"
        [ "$(jget "$d" .ok)" -gt 10 ] || fail "the direct client got only $(jget "$d" .ok) answers: the test proves nothing"
        [ "$(jget "$d" .failed)" -eq 0 ] || fail "a client still connecting to host $i in lame duck saw failures (the lame duck ended under it): $d"
        [ "$gone_at" -ge 2000 ] || fail "host $i stopped after $gone_at ms while a client still connected to it for 2 s"
        note "host $i: a client connecting straight to it during the lame duck: $(jget "$d" .ok) answered, 0 failed"
    fi
    note "host $i: DRAIN after ${drained_at} ms of lame duck, $(grep -o 'lame duck over after.*' "$T/h$i.log" | tail -1), gone after ${gone_at} ms"
    wait_until 10 srv_is "$i" DOWN || note "haproxy shows host $i as $(srv_status "$i") once it is gone"
    host_start "$i"
    wait_until 20 srv_is "$i" UP || fail "haproxy did not take host $i back: $(hap | cut -d, -f1,2,18)"
    note "host $i: UP again $(( $(now_ms) - t0 )) ms after the stop"
    sleep 0.5
done
ok "each host stopped with --lameduck (DRAIN, no new session while still serving, over once no new connection came) and started again"

sleep 1
touch "$T/load.stop"
wait "$LOAD_PID" || true
LOAD_PID=
DIRECT_PID=
RES=$(cat "$T/load.json")
[ -n "$RES" ] || fail "loadgen printed no result: $(cat "$T/load.err")"
sent=$(jget "$RES" .sent); failed=$(jget "$RES" .failed); okn=$(jget "$RES" .ok)
note "through haproxy: $sent requests, $okn ok, $failed failed ($(jq -c 'del(.by_pid)' <<<"$RES"))"
note "haproxy sessions per host: h0 $(srv_sessions 0), h1 $(srv_sessions 1) (cumulative)"
[ "$okn" -gt 100 ] || fail "only $okn requests went through: the test proves nothing"
[ "$failed" -eq 0 ] || fail "$failed of $sent requests failed through haproxy: $RES"
echo "PASS: $sent requests through haproxy over rolling reloads, upgrades and a lame-duck stop and restart of each host: 0 failed"
