#!/usr/bin/env bash
# A worker that says STOPPING=1 by itself (and keeps running, keeps
# accepting) is steered away at once, shown as draining, and replaced in its
# slot without counting a restart; no request fails.  Its successor does not
# share its socket: once the successor is ready the leaving worker gets no
# new connection.  One that says it soon after it started counts as a quick
# exit (back-off, crash loop), and a slot keeps one leaving worker.
# The worker is a small python3 program speaking sd_notify's datagram
# protocol the way sd_notify(3) does (the abstract '@' address).
. "$(dirname "$0")/sup_lib.sh"
need python3

cat >"$T/stopper.py" <<'EOS'
import http.server, os, socket, threading, time
T = os.environ["T"]
pid = os.getpid()
if os.path.exists(T + "/slow"):
    time.sleep(4)                # the successor takes its time to come up
def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg.encode(), addr)
    s.close()
log = open("%s/served.%d" % (T, pid), "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        log.write("%.3f\n" % time.time())
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Worker-Pid", str(pid))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
def watch():
    # told to stop (the test writes our pid into $T/stop): say so, keep
    # accepting whatever still reaches us for 1.8 s (our successor takes 4 s
    # to come up: until then the socket of our slot is ours alone), then
    # stop accepting, finish what is in flight and exit 0
    while True:
        try:
            if open(T + "/stop").read().strip() == str(pid):
                break
        except OSError:
            pass
        time.sleep(0.05)
    notify("STOPPING=1\nSTATUS=going away by itself")
    open("%s/stopped.%d" % (T, pid), "w").write("%.3f\n" % time.time())
    time.sleep(1.8)
    srv.shutdown()
    srv.socket.close()
    time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
notify("READY=1")
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.socket.setblocking(True)
srv.serve_forever()
EOS
export T

# --ready notify: a python that takes longer than --ready-delay to import
# (a loaded machine) must not be guessed ready while it cannot answer yet
sup_start st -l 127.0.0.1:0 -w 2 --drain-timeout 10s --ready notify -- python3 "$T/stopper.py"
victim=$(status_json st | jq -r '.slots[0].pid')
load_start load --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 60
touch "$T/slow"
echo "$victim" >"$T/stop"
wait_until 10 test -s "$T/stopped.$victim" || fail "the worker did not say STOPPING=1"
stopped_at=$(cat "$T/stopped.$victim")
# at once: the slot is no longer served by it, the worker drains, a
# successor starts (slowly: 4 s) while the worker still accepts
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/st.sock' | jq -e '.slots[0].pid != $victim'" ||
    fail "slot 0 still has the stopping worker: $(status_json st)"
s=$(status_json st)
jq -e ".other_workers[] | select(.pid == $victim and .state == \"draining\")" <<<"$s" >/dev/null ||
    fail "the stopping worker is not shown as draining: $s"
jq -e '.slots[0].state == "starting" or .slots[0].state == "backing-off"' <<<"$s" >/dev/null ||
    fail "slot 0 is not waiting for its successor: $s"
note "during the hand-over: $(jq -c '{slot0: .slots[0].state, pid0: .slots[0].pid, others: [.other_workers[] | {pid, state}]}' <<<"$s")"
wait_until 10 all_ready st 2 || fail "slot 0 not ready again: $(status_json st)"
wait_until 10 bash -c "! kill -0 $victim" || fail "the stopping worker is still there"
sleep 0.5
load_stop load
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed around STOPPING=1: $RES"
before=$(awk -v t="$stopped_at" '$1 < t' "$T/served.$victim" | wc -l)
# a connection already in its queue or handshake when steering changed may
# still reach it: 0.3 s of grace
after=$(awk -v t="$stopped_at" '$1 > t + 0.3' "$T/served.$victim" | wc -l)
[ "$before" -gt 0 ] || fail "the victim served nothing before STOPPING=1 (the test proves nothing)"
[ "$after" = 0 ] || fail "the stopping worker still got $after requests after STOPPING=1 (steered away?)"
s=$(status_json st)
[ "$(jq '.slots[0].restarts' <<<"$s")" = 0 ] || fail "STOPPING=1 counted as a restart: $s"
[ "$(jq '.generation' <<<"$s")" = 1 ] || fail "generation changed: $s"
grep -q "said STOPPING=1: steered away, replaced" "$T/st.log" || fail "no log line for STOPPING=1"
ok "STOPPING=1: steered away ($before requests before, $after after while it still accepted for 1.8 s), draining, replaced, 0 restarts, $(jq .sent <<<"$RES") requests 0 failed"
echo "PASS: STOPPING=1 honoured"

# a worker that says STOPPING=1 and keeps accepting for as long as it runs:
# once its successor is ready it gets none of 200 new connections (with
# eBPF its successor has a fresh socket; with classic BPF the slot is not
# steered to while the two would share one)
for want in auto cbpf; do
    sup_start sh$want -l 127.0.0.1:0 -w 2 --drain-timeout 5s --steering "$want" -- "$TESTWORKER" --stopping-on-usr2
    steer=$(status_json sh$want | jq -r .steering)
    if [ "$want" = auto ] && [ "$steer" != ebpf ]; then
        note "no eBPF steering here ($steer): the classic-BPF round only"
        continue
    fi
    steer=$want
    victim=$(status_json sh$want | jq -r '.slots[0].pid')
    kill -USR2 "$victim"
    wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/sh$want.sock' | jq -e '.slots[0].state == \"ready\" and .slots[0].pid != $victim'" ||
        fail "$steer: no ready successor in slot 0: $(status_json sh$want)"
    succ=$(status_json sh$want | jq -r '.slots[0].pid')
    RES=$("$LOADGEN" --json --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --requests 200)
    kill -0 "$victim" || fail "$steer: the leaving worker is gone (the test proves nothing)"
    [ "$(jq .failed <<<"$RES")" = 0 ] || fail "$steer: requests failed: $RES"
    got=$(jq ".by_pid[\"$victim\"] // 0" <<<"$RES")
    [ "$got" = 0 ] || fail "$steer: the leaving worker got $got of 200 new connections after its successor was ready: $RES"
    if [ "$steer" = ebpf ]; then
        [ "$(jq ".by_pid[\"$succ\"] // 0" <<<"$RES")" -gt 0 ] || fail "ebpf: the successor got nothing: $RES"
    fi
    ok "$steer: the leaving worker got 0 of 200 once its successor was ready ($(jq -c .by_pid <<<"$RES"))"
done

# says STOPPING=1 at once and exits 300 ms later: a quick exit, backed off
# and counted, the crash-loop line when it loops (not a successor at once,
# again and again, with 0 restarts)
sup_start q -l 127.0.0.1:0 -w 1 -- "$TESTWORKER" --stopping-after 0 --exit-after 300 0
sleep 3
s=$(status_json q)
r=$(jq '.slots[0].restarts' <<<"$s")
started=$(grep -c 'worker_started' "$T/q.log")
[ "$r" -ge 3 ] || fail "STOPPING=1 then exit: $r restarts counted in 3 s: $s"
[ "$started" -le 12 ] || fail "STOPPING=1 then exit: $started workers started in 3 s (not backed off)"
grep -q 'crash_loop' "$T/q.log" || fail "no crash-loop line: $(tail -3 "$T/q.log")"
ok "STOPPING=1 then exit 300 ms later: $r restarts, $started starts in 3 s, crash loop reported"

# says STOPPING=1 at once and keeps running: a slot keeps one leaving worker
# (a worker that said it is not sent the drain signal at stop: it is on its
# way out; the short drain timeout ends it)
sup_start k -l 127.0.0.1:0 -w 1 --drain-timeout 3s -- "$TESTWORKER" --stopping-after 0
most=0
for i in $(seq 1 8); do
    n=$(status_json k | jq '[.slots[].pid, .other_workers[].pid] | map(select(. != null and . != 0)) | length')
    [ "$n" -gt "$most" ] && most=$n
    sleep 0.2
done
[ "$most" -le 3 ] || fail "STOPPING=1 at once, still running: up to $most workers for one slot: $(status_json k)"
[ "$(status_json k | jq '.slots[0].restarts')" -ge 3 ] || fail "STOPPING=1 at once is not counted: $(status_json k)"
grep -q 'a slot keeps one leaving worker' "$T/k.log" || fail "no line about the leaving worker killed"
ok "STOPPING=1 at once and still running: at most $most workers for the slot"
echo "PASS: a leaving worker never shares its socket; STOPPING=1 loops are backed off"
