#!/usr/bin/env bash
# Issue 13, item 1: zero-config readiness (--ready auto, the default).
# Real programs that send no READY=1, given no readiness flag, are ready as
# soon as the kernel shows them waiting on their listeners, well before the
# 2 s --ready-delay fallback: lighttpd and prometheus-node-exporter (epoll
# sets), python workers blocked in poll() (socketserver) and in accept(),
# and a python server that is a child of a shell (its tree).  0 restarts;
# 10 reloads under load: 0 failed requests with lighttpd, 0 refused with
# node-exporter.  A program that never waits on its listeners is ready
# after --ready-delay, not before; one that sent STATUS= only (it speaks
# sd_notify) stays starting; --ready notify keeps it starting;
# --ready delay counts it ready after the delay; bad values exit 2.
. "$(dirname "$0")/sup_lib.sh"
need lighttpd python3

# ready_ms NAME: the longest time from a worker's start to its ready line
# in NAME's log (ms), over the workers of generation 1
ready_ms() {
    python3 - "$T/$1.log" <<'EOS'
import re, sys, datetime
def t(line):
    return datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp() * 1000
start, worst = {}, 0
for line in open(sys.argv[1]):
    m = re.search(r"worker (\d+) started in slot \d+ \(generation 1\)", line)
    if m: start[m.group(1)] = t(line)
    m = re.search(r"worker (\d+) \(slot \d+, generation 1\) ready", line)
    if m and m.group(1) in start: worst = max(worst, t(line) - start[m.group(1)])
print(int(worst))
EOS
}

# reasons NAME: the distinct ready reasons of NAME's log, without pids
reasons() { grep -o 'ready (.*)$' "$T/$1.log" | sed 's/[0-9]\+/N/g' | sort -u; }

restarts() { status_json "$1" | jq '[.slots[].restarts] | add'; }

# ---- lighttpd: epoll, 10 reloads under load, 0 failed ----
lighttpd_site
sup_start lt -l 127.0.0.1:0 -w 2 --drain-signal INT -- lighttpd -D -f "$T/lighttpd.conf"
ms=$(ready_ms lt)
reasons lt | grep -q 'epoll' || fail "lighttpd not ready through its epoll set: $(reasons lt)"
! grep -q 'ready (alive for --ready-delay)' "$T/lt.log" || fail "a lighttpd worker was ready only by the delay"
[ "$ms" -lt 2000 ] || fail "lighttpd took $ms ms to be ready"
curl -sf "http://127.0.0.1:$PORT/" | grep -q "served by lighttpd" || fail "lighttpd does not serve"
load_start lt --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 120
for i in $(seq 10); do ctl lt reload >/dev/null || fail "reload $i of lighttpd failed: $(tail -5 "$T/lt.log")"; done
load_stop lt
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests to lighttpd failed across 10 reloads: $RES"
[ "$(jq .ok <<<"$RES")" -gt 0 ] || fail "no request succeeded: $RES"
[ "$(restarts lt)" = 0 ] || fail "lighttpd workers restarted: $(status_json lt)"
status_json lt | jq -e '.generation == 11' >/dev/null || fail "not at generation 11: $(status_json lt)"
ok "lighttpd: ready in $ms ms ($(reasons lt | head -1)), 10 reloads under load, $(jq .sent <<<"$RES") requests, 0 failed, 0 restarts"
ctl lt stop >/dev/null

# ---- prometheus-node-exporter (Go): epoll on a dup of its listener ----
if command -v prometheus-node-exporter >/dev/null; then
    sup_start ne -l 127.0.0.1:0 -w 2 -- prometheus-node-exporter --web.systemd-socket \
        --collector.disable-defaults --collector.loadavg
    ms=$(ready_ms ne)
    reasons ne | grep -q 'epoll' || fail "node-exporter not ready through epoll: $(reasons ne)"
    ! grep -q 'ready (alive for --ready-delay)' "$T/ne.log" || fail "a node-exporter worker was ready only by the delay"
    [ "$ms" -lt 2000 ] || fail "node-exporter took $ms ms to be ready"
    grep -q '^node_load1 ' <<<"$(curl -sf "http://127.0.0.1:$PORT/metrics")" || fail "node-exporter does not serve /metrics"
    load_start ne --connect 127.0.0.1:$PORT --path /metrics --threads 1 --concurrency 4 --duration 120
    for i in $(seq 10); do ctl ne reload >/dev/null || fail "reload $i of node-exporter failed: $(tail -5 "$T/ne.log")"; done
    load_stop ne
    # node_exporter has no graceful shutdown: Go's default SIGTERM exits at
    # once, losing what that process had accepted and not yet answered (at
    # most its share of the 4 connections in flight per reload).  What
    # portshare owes it: no connection refused, the queue kept.
    [ "$(jq .refused <<<"$RES")" = 0 ] || fail "connections to node-exporter refused across reloads: $RES"
    [ "$(jq .failed <<<"$RES")" -le 40 ] || fail "more failures than requests in flight across 10 reloads: $RES"
    [ "$(restarts ne)" = 0 ] || fail "node-exporter workers restarted: $(status_json ne)"
    ok "prometheus-node-exporter: ready in $ms ms, 10 reloads under load, $(jq .sent <<<"$RES") requests, 0 refused, $(jq .failed <<<"$RES") lost in flight (Go exits at once on SIGTERM), 0 restarts"
    ctl ne stop >/dev/null
else
    note "prometheus-node-exporter is not installed (Debian package prometheus-node-exporter): skipping that part"
fi

# ---- python: poll() (socketserver), accept(), and a child of a shell ----
cat >"$T/poller.py" <<'EOS'
import http.server, os, socket, time
time.sleep(float(os.environ.get("SLOW", "0")))   # imports, config...
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("pid=%d gen=%s\n" % (os.getpid(), os.environ["PORTSHARE_GENERATION"])).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.socket.setblocking(True)
srv.serve_forever()          # a poll() with a 0.5 s timeout, then accept
EOS
cat >"$T/acceptor.py" <<'EOS'
import os, socket
s = socket.socket(fileno=3)
s.setblocking(True)
while True:
    c, _ = s.accept()        # blocks in accept4() on fd 3
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    c.close()
EOS
# (python's start-up alone can take seconds on a loaded machine: a long
# --ready-delay keeps the fallback out of the way, the reason is the proof)
for kind in poller acceptor; do
    sup_start "$kind" -l 127.0.0.1:0 -w 2 --ready-delay 20s -- python3 "$T/$kind.py"
    ms=$(ready_ms "$kind")
    want=$([ $kind = poller ] && echo 'polls its listener' || echo 'blocked in accept on its listener')
    reasons "$kind" | grep -q "$want" || fail "$kind: not ready by '$want': $(reasons "$kind")"
    curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "$kind does not serve"
    ok "python $kind: ready in $ms ms ($want)"
    ctl "$kind" stop >/dev/null
done

# the server is a child of the worker (a shell that does not exec): its tree
cat >"$T/wrapper.sh" <<EOS
#!/bin/sh
SLOW=0.3 python3 "$T/poller.py" &
wait
EOS
chmod +x "$T/wrapper.sh"
sup_start tree -l 127.0.0.1:0 -w 1 --ready-delay 20s --drain-timeout 2s -- "$T/wrapper.sh"
main=$(status_json tree | jq -r '.slots[0].pid')
line=$(grep 'ready (' "$T/tree.log" | head -1)
grep -q "polls its listener" <<<"$line" || fail "wrapped poller: $line"
! grep -q "process $main " <<<"$line" || fail "the readiness was seen on the shell itself: $line"
ms=$(ready_ms tree)
[ "$ms" -ge 300 ] || fail "ready after $ms ms, before the child (0.3 s of start-up) could listen"
ok "python server under a shell: ready in $ms ms, seen on the child ($line)"
ctl tree stop >/dev/null

# ---- a program that never waits on its listeners: --ready-delay ----
"$PORTSHARE" run --name sl --control "$T/sl.sock" -l 127.0.0.1:0 -w 2 --ready-delay 6s -- sleep 600 2>"$T/sl.log" &
SUP_PIDS+=($!); sl=$!
started_both() { [ "$(grep -c worker_started "$T/sl.log")" = 2 ]; }
wait_until 20 started_both || fail "workers not started: $(cat "$T/sl.log")"
a=$(cpu_ticks $sl); sleep 2; b=$(cpu_ticks $sl)
# probing two starting workers every 50 ms for 2 s: a few ticks at most
[ $((b - a)) -le 20 ] || fail "supervisor used $((b - a)) ticks of CPU in 2 s probing two workers"
status_json sl | jq -e '[.slots[] | select(.state == "starting")] | length == 2' >/dev/null ||
    fail "sleep counted ready before --ready-delay: $(status_json sl)"
wait_until 20 all_ready sl 2 || fail "sleep not ready after --ready-delay 6s: $(status_json sl)"
grep -q 'ready (alive for --ready-delay)' "$T/sl.log" || fail "no ready-by-delay line"
ms=$(ready_ms sl)
[ "$ms" -ge 6000 ] || fail "ready after $ms ms, before the 6 s delay"
ok "a program that never listens: starting for 6 s ($((b - a)) CPU ticks over 2 s of probing), ready by the delay after $ms ms"
ctl sl stop >/dev/null

# ---- a worker that speaks sd_notify waits for its READY=1 under auto ----
# testworker --never-ready sends STATUS= and then waits in epoll on its
# listeners.  Its datagram may come in while the supervisor starts the next
# slot, and still be queued when the first probe sees the epoll set: read
# only on the next poll, slot 0 was called ready (1 start in 50 with -w 2).
started2() { [ "$(grep -c 'started in slot' "$T/sp.log")" -ge 2 ]; }
for i in $(seq 10); do
    "$PORTSHARE" run --name sp --control "$T/sp.sock" -l 127.0.0.1:0 -w 2 --ready-delay 0 -- "$TESTWORKER" --never-ready 2>"$T/sp.log" &
    SUP_PIDS+=($!)
    wait_until 20 started2 || fail "2 workers did not start: $(cat "$T/sp.log")"
    sleep 0.3
    ! grep -q worker_ready "$T/sp.log" || fail "--ready auto, start $i: a worker that sent STATUS= only is ready: $(grep worker_ready "$T/sp.log")"
    [ "$(status_json sp | jq '[.slots[] | select(.state == "starting")] | length')" = 2 ] ||
        fail "--ready auto, start $i: not both STATUS=-only workers are starting: $(status_json sp | jq -c '[.slots[].state]')"
    ctl sp stop >/dev/null
    wait "${SUP_PIDS[-1]}" || fail "supervisor of start $i: exit $?"
done
ok "--ready auto: workers that sent STATUS= and wait in epoll stay starting (10 starts of 2)"

# ---- --ready notify: READY=1 only; --ready delay: the delay ----
"$PORTSHARE" run --name nt --control "$T/nt.sock" -l 127.0.0.1:0 -w 1 --ready notify -- python3 "$T/acceptor.py" 2>"$T/nt.log" &
SUP_PIDS+=($!)
wait_until 20 test -S "$T/nt.sock" || fail "no control socket"
sleep 2.5
status_json nt | jq -e '.slots[0].state == "starting"' >/dev/null ||
    fail "--ready notify: a worker without READY=1 is $(status_json nt | jq -r '.slots[0].state')"
ctl nt stop >/dev/null
ok "--ready notify: a worker that never sends READY=1 stays starting"

sup_start dl -l 127.0.0.1:0 -w 1 --ready delay --ready-delay 700ms -- python3 "$T/acceptor.py"
grep -q 'ready (alive for --ready-delay)' "$T/dl.log" || fail "--ready delay: $(reasons dl)"
ms=$(ready_ms dl)
[ "$ms" -ge 700 ] || fail "--ready delay: ready after $ms ms, before the delay"
ok "--ready delay: ready after $ms ms by the delay, though it waited in accept before"
ctl dl stop >/dev/null

# ---- no view of the workers' /proc: said once, at warning, and shown ----
# Root without CAP_SYS_PTRACE (Docker's default) and workers of another
# user (--user): the kernel refuses the supervisor their /proc, so a worker
# blocked in accept() is ready only after --ready-delay.  That is said once
# at warning, with why, whatever the number of workers, reloads and
# upgrades; status --json and /metrics show it, and each slot how its
# worker became ready.  Without the user switch the same worker is seen.
if [ "$(id -u)" != 0 ] || ! command -v capsh >/dev/null || ! id nobody >/dev/null 2>&1; then
    note "not root, or no capsh or user nobody: the CAP_SYS_PTRACE case is not run"
else
    ACC='import socket
s = socket.socket(fileno=3)
while True:
    s.accept()[0].close()'
    capsh --drop=cap_sys_ptrace -- -c 'exec "$0" "$@"' "$PORTSHARE" run --name np --control "$T/np.sock" \
        -l 127.0.0.1:0 -w 2 --user nobody --ready-delay 500ms --metrics 127.0.0.1:0 -- python3 -c "$ACC" 2>"$T/np.log" &
    SUP_PIDS+=($!)
    wait_until 20 grep -q 'ready: all' "$T/np.log" || fail "np did not get ready: $(cat "$T/np.log")"
    ctl np reload >/dev/null || fail "reload of np failed"
    ctl np upgrade >/dev/null || fail "upgrade of np failed"
    ctl np reload >/dev/null || fail "reload of np after the upgrade failed"
    n=$(grep -c 'warn capability: ready_view degraded' "$T/np.log")
    [ "$n" = 1 ] || fail "the readiness view's fallback was said $n times: $(grep capability "$T/np.log")"
    grep 'warn capability: ready_view degraded' "$T/np.log" | grep -q 'without CAP_SYS_PTRACE' ||
        fail "the fallback does not say why: $(grep ready_view "$T/np.log")"
    j=$(status_json np)
    jq -e '.capabilities[] | select(.name == "ready_view") | .state == "degraded"' <<<"$j" >/dev/null ||
        fail "status --json: $(jq -c .capabilities <<<"$j")"
    jq -e '[.slots[].ready_by] | all(. == "alive for --ready-delay")' <<<"$j" >/dev/null ||
        fail "status --json ready_by: $(jq -c '[.slots[].ready_by]' <<<"$j")"
    ctl np status | grep -q '^capability  ready_view degraded' || fail "status text: $(ctl np status | head)"
    mport=$(grep -o 'metrics endpoint on tcp://[^ ]*' "$T/np.log" | tail -1 | sed 's/.*://')
    # the text first: grep -q stops reading at its match, and curl's SIGPIPE
    # would fail the pipeline (pipefail)
    mtext=$(curl -sf "http://127.0.0.1:$mport/metrics")
    grep -qx 'portshare_capability{name="ready_view",state="degraded"} 1' <<<"$mtext" ||
        fail "/metrics: $(grep capability <<<"$mtext")"
    ctl np stop >/dev/null
    sup_start vis -l 127.0.0.1:0 -w 1 --ready-delay 15s -- python3 -c "$ACC"
    status_json vis | jq -e '(.capabilities[] | select(.name == "ready_view") | .state == "ok") and
        (.slots[0].ready_by | test("accept"))' >/dev/null || fail "seen worker: $(status_json vis | jq -c '.capabilities, .slots[0].ready_by')"
    ! grep -q 'warn capability' "$T/vis.log" || fail "a fallback was said with the view: $(grep capability "$T/vis.log")"
    ctl vis stop >/dev/null
    ok "root without CAP_SYS_PTRACE, --user workers: ready by the delay, said once at warning (2 reloads, an upgrade), in status and /metrics; with the view: ready by accept, ok"
fi

# ---- bad input ----
rc=0; out=$("$PORTSHARE" run -l 127.0.0.1:0 --ready sometimes -- true 2>&1) || rc=$?
[ $rc -eq 2 ] || fail "--ready sometimes: exit $rc, want 2"
grep -q "bad --ready 'sometimes'" <<<"$out" || fail "unclear error: $out"
rc=0; out=$("$PORTSHARE" run -l 127.0.0.1:0 --ready notify --ready-delay 1s -- true 2>&1) || rc=$?
[ $rc -eq 2 ] || fail "--ready notify --ready-delay: exit $rc, want 2"
grep -q -- "--ready-delay has no effect with --ready notify" <<<"$out" || fail "unclear error: $out"
ok "bad --ready values: one line, exit 2"
echo "PASS: --ready auto, notify, delay"
