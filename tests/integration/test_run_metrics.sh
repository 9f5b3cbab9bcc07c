#!/usr/bin/env bash
# test_run_metrics.sh - --metrics, --agent, `portshare metrics` and lame
# duck, against the real `portshare serve`:
#   - GET /metrics parses with Debian's python3-prometheus-client
#     (text_string_to_metric_families) and says what the supervisor did:
#     generation, slots by state, restarts after a kill, reloads by result,
#     the workers' own request counters, one family per name with HELP and
#     TYPE first, label values escaped (a unix listener path with '"', '\'
#     and a space comes back exactly); `portshare metrics` prints the same
#     families over the control socket;
#   - the HTTP side: /healthz 200, HEAD, HTTP/1.0, 404, 405 with Allow, 431
#     for a request over the size limit, 400 for garbage, for a request line
#     without its spaces and at once for a NUL; 20 idle connections are
#     timed out and do not lock a scrape out, 2000 of them lock neither
#     /healthz nor the agent out (the oldest idle ones make room); the agent answers "up ready 100%" and then "up ready 50%"
#     while one of two slots restarts (a worker held in SIGSTOP);
#   - bad --metrics/--agent values exit 2, a port in use exits 3, each with
#     one line naming the option;
#   - lame duck (stop --lameduck, and SIGTERM with --lameduck): /healthz 503,
#     agent "drain", status says LAME DUCK, the workers keep serving for the
#     whole time, and only then the supervisor drains and exits;
#   - an upgrade keeps both endpoints on their ports, and a request in
#     flight at the upgrade is answered;
#   - under ulimit -n 32 both endpoints serve (only descriptors in use are
#     polled); --metrics :0 / --agent :0 answer on 127.0.0.1 and [::1];
#   - every fallback is said once at warning and visible: with --steering
#     cbpf and a UDP listener, steering "degraded" and migration and UDP
#     flows "off" are each logged once (not again after an upgrade), listed
#     in status (text and --json capabilities) and as
#     portshare_capability{name,state} 1 in /metrics;
#   - the supervisor stays asleep (no CPU) with the endpoints open, an idle
#     client connected, and in lame duck.
. "$(dirname "$0")/sup_lib.sh"

need curl jq python3 socat
# Debian's package is for Debian's python3, which may not be the first on PATH
PROM_PY=
for py in /usr/bin/python3 python3; do
    "$py" -c 'import prometheus_client' 2>/dev/null && { PROM_PY=$py; break; }
done
[ -n "$PROM_PY" ] || skip "python3-prometheus-client is not installed (apt install python3-prometheus-client)"

# endpoint_port NAME KIND: the port of the metrics/agent endpoint from the log
endpoint_port() {
    grep -o "$2 endpoint on tcp://[^ ]*" "$T/$1.log" | tail -1 | sed 's/.*://'
}

# prom: Prometheus text on stdin -> JSON on stdout, parsed by the real
# client library: {"families": {name: type}, "samples": {"name{k=v,...}": value}}
prom() {
    "$PROM_PY" -c '
import json, sys
from prometheus_client.parser import text_string_to_metric_families
fams, samples = {}, {}
for f in text_string_to_metric_families(sys.stdin.read()):
    if f.name in fams:
        sys.exit("family %s appears twice" % f.name)
    fams[f.name] = f.type
    for s in f.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        samples[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps({"families": fams, "samples": samples}))'
}

# sample JSON KEY: the value of one sample ("null" when absent)
sample() { jq -r --arg k "$2" '.samples[$k]' <<<"$1"; }


# ---- bad input: one line, exit 2 (usage) or 3 (bind) -----------------------
for bad in "--metrics nohost" "--metrics udp://127.0.0.1:1" "--agent unix:/tmp/x" \
    "--metrics 127.0.0.1:99999" "--agent a=127.0.0.1:1"; do
    rc=0
    # shellcheck disable=SC2086
    "$PORTSHARE" serve -l 127.0.0.1:0 -w 1 --control "$T/bad.sock" $bad 2>"$T/bad.err" || rc=$?
    [ $rc -eq 2 ] || fail "$bad: exit $rc, want 2 ($(cat "$T/bad.err"))"
    [ "$(wc -l <"$T/bad.err")" -eq 1 ] || fail "$bad: more than one line: $(cat "$T/bad.err")"
    grep -q -- "${bad%% *}" "$T/bad.err" || fail "$bad: the error does not name the option: $(cat "$T/bad.err")"
done
ok "bad --metrics/--agent values: exit 2 with one line naming the option"

# ---- a supervisor with both endpoints ---------------------------------------
weird="$T/we\"ird\\pa th.sock"
# defer=0: without TCP_DEFER_ACCEPT a listener that never overflowed counts 0 drops
SUP_SUBCMD=serve sup_start m -l '127.0.0.1:0?defer=0' -l "unix:$weird" -w 2 --metrics 127.0.0.1:0 \
    --agent 127.0.0.1:0 --drain-timeout 5s
MPORT=$(endpoint_port m metrics)
APORT=$(endpoint_port m agent)
[ -n "$MPORT" ] && [ -n "$APORT" ] || fail "no endpoint ports in the log: $(cat "$T/m.log")"
M=http://127.0.0.1:$MPORT
MPID=$SUP_PID

# a port in use: exit 3, one line
for opt in --metrics --agent; do
    rc=0
    "$PORTSHARE" serve -l 127.0.0.1:0 -w 1 --control "$T/bad.sock" $opt "127.0.0.1:$MPORT" 2>"$T/bad.err" || rc=$?
    [ $rc -eq 3 ] || fail "$opt on a port in use: exit $rc, want 3 ($(cat "$T/bad.err"))"
    [ "$(wc -l <"$T/bad.err")" -eq 1 ] && grep -q -- "cannot bind $opt tcp://127.0.0.1:$MPORT: Address already in use" "$T/bad.err" ||
        fail "$opt on a port in use: $(cat "$T/bad.err")"
done
ok "--metrics/--agent on a port in use: exit 3, '$(cat "$T/bad.err")'"

for i in $(seq 20); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "request $i failed"; done
# the workers send their counters once a second
wait_until 10 bash -c "curl -sf $M/metrics | grep -q '^portshare_worker_requests_total'" ||
    fail "no worker request counters: $(curl -s "$M/metrics")"
sleep 1.2
curl -sf -D "$T/h" "$M/metrics" >"$T/metrics.txt" || fail "GET /metrics failed"
grep -qi '^Content-Type: text/plain; version=0.0.4' "$T/h" || fail "content type: $(cat "$T/h")"
J=$(prom <"$T/metrics.txt") || fail "the Prometheus parser refused the text: $(head -40 "$T/metrics.txt")"
for f in portshare_generation:gauge portshare_workers:gauge portshare_worker_restarts:counter \
    portshare_reloads:counter portshare_listener_queue_length:gauge portshare_listener_backlog:gauge \
    portshare_listener_drops:counter portshare_stalls:counter portshare_worker_requests:counter \
    portshare_worker_connections_closed:counter portshare_listener_info:gauge portshare_lameduck:gauge portshare_listen_overflows:counter; do
    [ "$(jq -r --arg n "${f%%:*}" '.families[$n]' <<<"$J")" = "${f#*:}" ] ||
        fail "family ${f%%:*} is not a ${f#*:}: $(jq -c .families <<<"$J")"
done
[ "$(sample "$J" portshare_generation)" = 1 ] || fail "generation: $(sample "$J" portshare_generation)"
[ "$(sample "$J" 'portshare_workers{state=ready}')" = 2 ] || fail "workers ready: $J"
[ "$(sample "$J" 'portshare_stalls_total{slot=0}')" = 0 ] || fail "stalls: $J"
req=$(jq '[.samples | to_entries[] | select(.key | startswith("portshare_worker_requests_total")) | .value] | add' <<<"$J")
[ "${req%.*}" -ge 20 ] || fail "the workers' request counters sum to $req, want >= 20"
[ "$(sample "$J" "portshare_listener_backlog{listener=tcp://127.0.0.1:$PORT}")" != null ] || fail "no backlog for the tcp listener: $J"
[ "$(sample "$J" "portshare_listener_drops_total{listener=tcp://127.0.0.1:$PORT,slot=1}")" = 0 ] ||
    fail "drops of an idle listener are not 0: $J"
# the unix path with a quote, a backslash and a space comes back exactly
key="portshare_listener_info{listener=unix:$weird,mode=shared,name=,proto=unix,sockets=1}"
[ "$(sample "$J" "$key")" = 1 ] || fail "label escaping: no sample $key in $(jq -c '.samples | keys' <<<"$J")"
# HELP then TYPE before every family, each once
awk '/^# HELP/{h[$3]++; next} /^# TYPE/{ if (!h[$3]) { print "TYPE before HELP: " $3; exit 1 } if (t[$3]++) { print "twice: " $3; exit 1 } next }
     { n=$1; sub(/[{ ].*/, "", n); f=n; sub(/_total$/, "", f); if (!t[n] && !t[f]) { print "sample before TYPE: " $0; exit 1 } }' \
    "$T/metrics.txt" || fail "exposition format (above)"
ok "GET /metrics parses ($(jq '.samples | length' <<<"$J") samples, $(jq '.families | length' <<<"$J") families), counters match, labels escaped"

# portshare metrics: the same families over the control socket
ctl m metrics >"$T/ctl-metrics.txt" || fail "portshare metrics failed"
J2=$(prom <"$T/ctl-metrics.txt") || fail "portshare metrics: not Prometheus text"
[ "$(jq -c '.families' <<<"$J")" = "$(jq -c '.families' <<<"$J2")" ] || fail "portshare metrics has other families"
ok "portshare metrics prints the same families"

# restarts and reloads are counted
victim=$(status_json m | jq -r '.slots[1].pid')
kill -KILL "$victim"
wait_until 20 all_ready m 2 || fail "slot 1 did not come back"
ctl m reload >/dev/null || fail "reload failed"
J=$(curl -sf "$M/metrics" | prom)
[ "$(sample "$J" 'portshare_worker_restarts_total{slot=1}')" = 1 ] || fail "restarts of slot 1: $(sample "$J" 'portshare_worker_restarts_total{slot=1}')"
[ "$(sample "$J" 'portshare_worker_restarts_total{slot=0}')" = 0 ] || fail "restarts of slot 0: $(sample "$J" "portshare_worker_restarts_total{slot=0}")"
[ "$(sample "$J" 'portshare_reloads_total{result=done}')" = 1 ] || fail "reloads done: $J"
[ "$(sample "$J" portshare_generation)" = 2 ] || fail "generation after reload"
ok "a kill shows in portshare_worker_restarts_total{slot=\"1\"}, a reload in generation and reloads_total"

# ---- the HTTP side -------------------------------------------------------------
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "$M/healthz")" = 200 ] || fail "/healthz not 200"
[ "$(curl -s "$M/healthz")" = ok ] || fail "/healthz body"
[ "$(code -I "$M/metrics")" = 200 ] || fail "HEAD /metrics"
[ "$(code --http1.0 "$M/metrics?x=1")" = 200 ] || fail "HTTP/1.0 /metrics?x=1"
[ "$(code "$M/")" = 404 ] || fail "/ not 404"
[ "$(code -X POST "$M/healthz")" = 405 ] || fail "POST not 405"
curl -s -D - -o /dev/null -X DELETE "$M/metrics" | grep -qi '^Allow: GET, HEAD' || fail "405 without Allow"
[ "$(code -H "X-Big: $(head -c 5000 /dev/zero | tr '\0' a)" "$M/metrics")" = 431 ] || fail "a 5 KB request is not 431"
printf 'hello\r\n\r\n' | socat -t2 - "TCP:127.0.0.1:$MPORT" | head -1 | grep -q '^HTTP/1.1 400' || fail "garbage is not 400"
ok "/healthz 200, HEAD, HTTP/1.0, 404, 405 with Allow, 431 over 4 KiB, 400"

# more idle connections than the cap: timed out, a scrape still gets through
python3 - "$MPORT" >"$T/idle.out" <<'EOF' &
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(20)]
start = time.time()
closed = 0
for s in socks:
    s.settimeout(30)
    try:
        closed += s.recv(1) == b""
    except OSError:
        closed += 1
print(closed, round(time.time() - start, 1))
EOF
idler=$!
sleep 0.5
assert_sleeping "$SUP_PID" "with the endpoints open and 20 idle connections"
t0=$(now_ms)
[ "$(code --max-time 20 "$M/healthz")" = 200 ] || fail "a scrape was locked out by idle connections"
note "a scrape behind 20 idle connections took $(( $(now_ms) - t0 )) ms"
wait "$idler"
read -r closed secs <"$T/idle.out"
[ "$closed" -eq 20 ] || fail "only $closed of 20 idle connections were closed by the idle timeout"
ok "20 idle connections closed by the idle timeout in ${secs}s, a scrape got through"

# ---- strict requests; idle floods -----------------------------------------------
# the request line is read by the strict parser: no space after the method is 400
printf 'GET/healthz HTTP/1.1\r\nHost: a\r\n\r\n' | socat -t2 - "TCP:127.0.0.1:$MPORT" | head -1 |
    grep -q '^HTTP/1.1 400' || fail "'GET/healthz HTTP/1.1' is not 400"
# a NUL in the request: 400 at once, not a place held until the idle timeout
t0=$(now_ms)
out=$(printf 'GET /healthz\0 HTTP/1.1\r\n\r\n' | socat -t8 - "TCP:127.0.0.1:$MPORT" | head -1)
el=$(( $(now_ms) - t0 ))
grep -q '^HTTP/1.1 400' <<<"$out" || fail "a request with a NUL got '$out' after $el ms"
[ "$el" -lt 3000 ] || fail "a request with a NUL was answered after $el ms"
ok "'GET/healthz HTTP/1.1' is 400; a request with a NUL is 400 at once ($el ms)"

# FLOOD idle connections (connected, silent) to an endpoint: the oldest idle
# ones make room, so a scrape and the agent still get through at once
# (goal: within a second; checked at 5 s not to be a benchmark)
FLOOD=2000
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge $((FLOOD + 200)) ] || FLOOD=$(( $(ulimit -Hn) - 200 ))
cat >"$T/idle.py" <<'EOS'
import resource, socket, sys, time
port, n, up = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass  # the handshake completes (or is retried) by itself
    socks.append(s)
open(up, "w").close()
time.sleep(60)
EOS
for ep in metrics agent; do
    port=$MPORT; [ $ep = agent ] && port=$APORT
    rm -f "$T/flood.up"
    python3 "$T/idle.py" "$port" "$FLOOD" "$T/flood.up" &
    flood=$!
    wait_until 30 test -e "$T/flood.up" || fail "the idle connections did not connect"
    t0=$(now_ms)
    if [ $ep = metrics ]; then
        got=$(code --max-time 10 "$M/healthz")
        [ "$got" = 200 ] || fail "/healthz behind $FLOOD idle connections: '$got' after $(( $(now_ms) - t0 )) ms"
    else
        got=$(socat -t10 -T10 - "TCP:127.0.0.1:$APORT" </dev/null)
        [ "$got" = "up ready 100%" ] || fail "the agent behind $FLOOD idle connections: '$got' after $(( $(now_ms) - t0 )) ms"
    fi
    el=$(( $(now_ms) - t0 ))
    kill "$flood"; wait "$flood" 2>/dev/null || true
    [ "$el" -lt 5000 ] || fail "$ep behind $FLOOD idle connections answered after $el ms"
    note "$ep behind $FLOOD idle connections answered in $el ms"
done
evicted=$(curl -sf "$M/metrics" | awk '/^portshare_supervisor_connections_closed_total\{server="metrics",reason="evicted"\}/ { print $2 }')
[ "${evicted:-0}" -gt 0 ] || fail "no evicted connections counted: $(curl -sf "$M/metrics" | grep supervisor_connections)"
ok "$FLOOD idle connections to /healthz and to the agent: both answered, $evicted idle ones made room"

# ---- the agent -------------------------------------------------------------------
agent() { socat -t2 - "TCP:127.0.0.1:$APORT" </dev/null; }
[ "$(agent)" = "up ready 100%" ] || fail "agent with 2 of 2 ready: '$(agent)'"
# HAProxy may send agent-send first: read and ignored
[ "$(printf 'backend/app\n' | socat -t2 - "TCP:127.0.0.1:$APORT")" = "up ready 100%" ] || fail "agent after agent-send"
ok "agent: 'up ready 100%', also after an agent-send line"

# ---- partly and not ready: the agent's weight, /healthz ---------------------------
# a worker never says READY=1 when $T/never.SLOT exists
cat >"$T/worker.sh" <<EOS
#!/bin/sh
[ -e "$T/never.\$PORTSHARE_SLOT" ] && exec "$TESTWORKER" --never-ready
exec "$TESTWORKER"
EOS
chmod +x "$T/worker.sh"
# start_half NAME WORKERS: a supervisor whose slots may not all get ready
# (sup_start waits for all of them); sets SUP_PID, HPORT, HMPORT
start_half() {
    "$PORTSHARE" run --name "$1" --control "$T/$1.sock" -l 127.0.0.1:0 -w "$2" --agent 127.0.0.1:0 \
        --metrics 127.0.0.1:0 --ready-timeout 60s -- "$T/worker.sh" 2>"$T/$1.log" &
    SUP_PID=$!
    SUP_PIDS+=("$SUP_PID")
    wait_until 20 grep -q 'agent endpoint' "$T/$1.log" || fail "$1 did not start: $(cat "$T/$1.log")"
    wait_until 20 grep -q 'worker_started.*slot '"$(($2 - 1))" "$T/$1.log" || fail "$1: no workers: $(cat "$T/$1.log")"
    APORT=$(endpoint_port "$1" agent)
    HMPORT=$(endpoint_port "$1" metrics)
}
touch "$T/never.1"
start_half half 2
wait_until 20 bash -c "socat -t2 - TCP:127.0.0.1:$APORT </dev/null | grep -qx 'up ready 50%'" ||
    fail "agent with 1 of 2 slots ready: '$(agent)' ($(ctl half status))"
[ "$(code "http://127.0.0.1:$HMPORT/healthz")" = 200 ] || fail "/healthz with 1 of 2 ready is not 200"
J=$(curl -sf "http://127.0.0.1:$HMPORT/metrics" | prom)
[ "$(sample "$J" 'portshare_workers{state=starting}')" = 1 ] && [ "$(sample "$J" 'portshare_workers{state=ready}')" = 1 ] ||
    fail "workers by state with 1 of 2 ready: $(jq -c .samples <<<"$J")"
ctl half stop >/dev/null
touch "$T/never.0"
start_half none 1
sleep 0.5
[ "$(agent)" = "down #no worker ready" ] || fail "agent with no slot ready: '$(agent)'"
[ "$(code "http://127.0.0.1:$HMPORT/healthz")" = 503 ] || fail "/healthz with no slot ready is not 503"
[ "$(curl -s "http://127.0.0.1:$HMPORT/healthz")" = "no worker ready" ] || fail "/healthz body with none ready"
ctl none stop >/dev/null
ok "1 of 2 ready: agent 'up ready 50%', /healthz 200, workers{state} 1+1; none ready: 'down #no worker ready', 503"
APORT=$(endpoint_port m agent)
SUP_PID=$MPID

# ---- upgrade keeps the endpoints ------------------------------------------------
# a request in flight at the upgrade is answered, not closed unanswered: its
# first part sent and taken in by the supervisor, the rest after the upgrade
need ss
cat >"$T/partial.py" <<'EOS'
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
open(sys.argv[2] + ".sent", "w").close()
for _ in range(3000):  # at most 60 s
    if os.path.exists(sys.argv[2] + ".go"):
        break
    time.sleep(0.02)
out = b""
try:
    s.sendall(b"\r\n")
except OSError as e:
    out = b"<send: %s>" % str(e).encode()
s.settimeout(10)
try:
    while True:
        b = s.recv(4096)
        if not b:
            break
        out += b
except OSError as e:
    out += b"<recv: %s>" % str(e).encode()
open(sys.argv[2] + ".out", "wb").write(out)
EOS
python3 "$T/partial.py" "$MPORT" "$T/partial" &
partial=$!
wait_until 30 test -e "$T/partial.sent" || fail "the partial request was not sent"
# accepted (out of the backlog, which an upgrade carries): the supervisor's socket
wait_until 5 bash -c "ss -tnpH state established '( sport = :$MPORT )' | grep -q 'pid=$SUP_PID,'" ||
    fail "the supervisor did not take the connection in: $(ss -tnpH state established "( sport = :$MPORT )")"
ctl m upgrade >/dev/null || fail "upgrade failed"
touch "$T/partial.go"
wait "$partial" || fail "the partial request's client failed"
head -1 "$T/partial.out" | grep -qE '^HTTP/1.1 (200|503)' ||
    fail "a request in flight during an upgrade got '$(head -c 200 "$T/partial.out")'"
note "a request in flight during the upgrade was answered: $(head -1 "$T/partial.out" | tr -d '\r')"
[ "$(code "$M/healthz")" = 200 ] || fail "/healthz after upgrade"
[ "$(agent)" = "up ready 100%" ] || fail "agent after upgrade"
curl -sf "$M/metrics" | prom >/dev/null || fail "/metrics after upgrade"
ok "an upgrade keeps /metrics, /healthz and the agent on their ports, and answers a request in flight"

# ---- fallbacks: said once at warning, in status and /metrics, also after an upgrade ----
saved_pid=$SUP_PID saved_port=$PORT
sup_start cap -l 127.0.0.1:0 -l udp://127.0.0.1:0 -w 1 --steering cbpf --metrics 127.0.0.1:0 \
    --ready delay --ready-delay 100ms --drain-timeout 2s -- sleep 600
CM=http://127.0.0.1:$(endpoint_port cap metrics)
check_caps() { # check_caps WHEN
    local j n name want
    j=$(status_json cap)
    for want in steering:degraded migration:off udp_flows:off listener_check:ok; do
        name=${want%%:*}
        jq -e --arg n "$name" --arg s "${want#*:}" '.capabilities[] | select(.name == $n) | .state == $s' \
            <<<"$j" >/dev/null || fail "$1: status --json capability $name is not ${want#*:}: $(jq -c .capabilities <<<"$j")"
        ctl cap status | grep -q "^capability  $name ${want#*:} " ||
            fail "$1: status text has no '$name ${want#*:}': $(ctl cap status | grep capability)"
        [ "$(sample "$(curl -sf "$CM/metrics" | prom)" "portshare_capability{name=$name,state=${want#*:}}")" = 1 ] ||
            fail "$1: no portshare_capability{name=\"$name\",state=\"${want#*:}\"} 1: $(curl -sf "$CM/metrics" | grep capability)"
    done
    for name in steering migration udp_flows; do
        n=$(grep -c "warn capability: $name " "$T/cap.log")
        [ "$n" = 1 ] || fail "$1: the $name fallback was logged $n times at warning: $(grep capability "$T/cap.log")"
    done
    ! grep -q "warn capability: listener_check" "$T/cap.log" || fail "$1: the listener check said degraded"
}
check_caps "at start"
grep -q "warn capability: steering degraded (cbpf): classic BPF steering, no migration (eBPF not used: --steering cbpf)" "$T/cap.log" ||
    fail "the classic BPF fallback does not say why: $(grep capability "$T/cap.log")"
ctl cap upgrade >/dev/null || fail "upgrade of cap failed: $(tail -3 "$T/cap.log")"
check_caps "after an upgrade"
ok "--steering cbpf, a UDP listener: steering degraded, migration and UDP flows off, each logged once at warning (also across an upgrade), in status, status --json and /metrics"
ctl cap stop >/dev/null
SUP_PID=$saved_pid PORT=$saved_port

# ---- lame duck: stop --lameduck -------------------------------------------------
t0=$(now_ms)
ctl m stop --lameduck 3s >"$T/stop.out" 2>&1 &
stopper=$!
wait_until 5 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $M/healthz)\" = 503 ]" || fail "/healthz not 503 in lame duck"
[ "$(curl -s "$M/healthz")" = "lame duck" ] || fail "/healthz body in lame duck"
[ "$(agent)" = drain ] || fail "agent in lame duck: '$(agent)'"
ctl m status | grep -q 'LAME DUCK' || fail "status does not show the lame duck"
[ "$(status_json m | jq -r .lameduck)" = true ] || fail "status --json: no lameduck"
ctl m reload >/dev/null 2>&1 && fail "a reload was accepted in lame duck"
assert_sleeping "$SUP_PID" "in lame duck"
# still serving, all the time: requests until just before the 3 s are up
n=0
while [ $(( $(now_ms) - t0 )) -lt 2500 ]; do
    curl -sf --max-time 5 "http://127.0.0.1:$PORT/" >/dev/null || fail "request $n in lame duck failed"
    n=$((n + 1))
done
kill -0 "$SUP_PID" || fail "the supervisor left before the lame duck was over"
wait "$stopper" || fail "stop --lameduck failed: $(cat "$T/stop.out")"
el=$(( $(now_ms) - t0 ))
[ "$el" -ge 3000 ] || fail "stop --lameduck 3s returned after $el ms"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "supervisor still running after stop --lameduck"
ok "stop --lameduck 3s: 503, drain, LAME DUCK in status, reload refused, $n requests served, stopped after $el ms"

# ---- lame duck: SIGTERM with --lameduck -----------------------------------------
SUP_SUBCMD=serve sup_start t -l 127.0.0.1:0 -w 1 --metrics 127.0.0.1:0 --lameduck 2s
M=http://127.0.0.1:$(endpoint_port t metrics)
t0=$(now_ms)
kill -TERM "$SUP_PID"
wait_until 5 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $M/healthz)\" = 503 ]" || fail "SIGTERM: /healthz not 503"
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "SIGTERM: not serving in lame duck"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "SIGTERM: supervisor still running"
el=$(( $(now_ms) - t0 ))
[ "$el" -ge 2000 ] || fail "SIGTERM with --lameduck 2s: gone after $el ms"
# a second SIGTERM during lame duck stops at once
SUP_SUBCMD=serve sup_start t2 -l 127.0.0.1:0 -w 1 --lameduck 60s
t0=$(now_ms)
kill -TERM "$SUP_PID"; sleep 0.3; kill -TERM "$SUP_PID"
wait_until 10 bash -c "! kill -0 $SUP_PID" || fail "a second SIGTERM did not end the lame duck"
ok "SIGTERM with --lameduck 2s: 503 while serving, gone after $el ms; a second SIGTERM stops at once"

# ---- a small descriptor limit; an empty host is every address -------------------
# poll(2) refuses more entries than RLIMIT_NOFILE: only descriptors in use are
# polled, so both endpoints run under `ulimit -n 32` (the old code stopped at
# its first poll, with exit 0).  --metrics :0 / --agent :0 listen on [::]
# with IPV6_V6ONLY off: IPv4 and IPv6 both reach them.
cat >"$T/lim32.sh" <<EOS
#!/bin/sh
ulimit -n 32
exec "$PORTSHARE" "\$@"
EOS
chmod +x "$T/lim32.sh"
SUP_BIN=$T/lim32.sh SUP_SUBCMD=serve sup_start small -l 127.0.0.1:0 -w 1 --metrics :0 --agent :0
SUP_BIN=
SPORT=$(endpoint_port small metrics)
SAPORT=$(endpoint_port small agent)
grep -q "metrics endpoint on tcp://\[::\]:$SPORT" "$T/small.log" ||
    fail "--metrics :0 does not listen on [::]: $(grep endpoint "$T/small.log")"
for i in $(seq 5); do
    [ "$(code --max-time 5 "http://127.0.0.1:$SPORT/healthz")" = 200 ] || fail "/healthz $i under ulimit -n 32"
    [ "$(socat -t2 - "TCP:127.0.0.1:$SAPORT" </dev/null)" = "up ready 100%" ] || fail "agent $i under ulimit -n 32"
done
kill -0 "$SUP_PID" || fail "the supervisor under ulimit -n 32 is gone: $(tail -3 "$T/small.log")"
! grep -q poll_failed "$T/small.log" || fail "poll failed: $(grep poll_failed "$T/small.log")"
v6="IPv6 loopback not available here: [::1] not tried"
if python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
    [ "$(code --max-time 5 -g "http://[::1]:$SPORT/healthz")" = 200 ] || fail "--metrics :0 does not answer on [::1]"
    [ "$(socat -t2 - "TCP6:[::1]:$SAPORT" </dev/null)" = "up ready 100%" ] || fail "--agent :0 does not answer on [::1]"
    v6="both answer on [::1] and 127.0.0.1"
fi
ctl small stop >/dev/null || fail "stop under ulimit -n 32 failed"
ok "under ulimit -n 32 both endpoints serve; --metrics :0 and --agent :0 listen on [::]: $v6"

echo "PASS: metrics, healthz, agent and lame duck"
