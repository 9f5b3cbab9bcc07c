#!/usr/bin/env bash
# Issue 12: TCP_DEFER_ACCEPT listeners are safe to scale down with the eBPF
# migrate program.  With TCP_DEFER_ACCEPT a client that has connected but
# sent nothing is still in its handshake: the listener's accept queue is
# empty, so waiting for it to empty (CBPF's retire) protects nothing, and
# closing the listener used to drop those handshakes.  Here 40 clients
# connect to 4 slots and wait; the supervisor scales to 1 (the retired
# sockets close once their workers are gone); only then do the clients
# send their requests, and every one must be answered by slot 0's worker.
. "$(dirname "$0")/sup_lib.sh"
need python3

need_ebpf

sup_start d -l 127.0.0.1:0 -w 4 --steering ebpf -- "$TESTWORKER" --defer-accept 30
cat >"$T/clients.py" <<'EOS'
import os, socket, sys, time
port, n, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
open(go + ".connected", "w").close()
deadline = time.time() + 30
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("never told to go")
    time.sleep(0.02)
ok, slots = 0, {}
for s in socks:
    s.settimeout(15)
    try:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"):
            ok += 1
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"x-worker-slot:"):
                    k = line.split(b":")[1].strip().decode()
                    slots[k] = slots.get(k, 0) + 1
    except OSError as e:
        print("error:", e, file=sys.stderr)
print(ok, " ".join("%s=%d" % kv for kv in sorted(slots.items())))
EOS
python3 "$T/clients.py" "$PORT" 40 "$T/go" >"$T/clients.out" 2>"$T/clients.err" &
cpid=$!
wait_until 10 test -e "$T/go.connected" || fail "the clients did not connect: $(cat "$T/clients.err")"
sleep 0.3
st=$(status_json d)
[ "$(jq '[.listeners[0].sockets[].queued] | add' <<<"$st")" = 0 ] ||
    fail "connections reached an accept queue before sending anything (no TCP_DEFER_ACCEPT?): $(jq -c .listeners <<<"$st")"
out=$(ctl d scale 1) || fail "scale 1 failed: $out"
wait_until 20 bash -c "'$PORTSHARE' status --json --control '$T/d.sock' | jq -e '(.slots | length) == 1 and (.listeners[0].sockets | length) == 1'" ||
    fail "did not settle at 1 slot: $(status_json d | jq -c '[.slots[] | {slot, state}]')"
touch "$T/go"
wait "$cpid" || fail "clients failed: $(cat "$T/clients.err")"
read -r ok slots <"$T/clients.out"
note "40 deferred handshakes across a scale 4->1: $ok answered ($slots)"
[ "$ok" = 40 ] || fail "only $ok of 40 deferred connections were answered after the scale-down: $(cat "$T/clients.err")"
[ "$slots" = "0=40" ] || fail "answered by other slots than 0: $slots"
echo "PASS: 40 connections in their TCP_DEFER_ACCEPT handshake survived scale 4->1 (closed sockets) and were served by slot 0"
