#!/usr/bin/env bash
# Issue 10, item 3: a worker that calls shutdown(SHUT_RDWR) on its fd 3
# stops the listening socket the supervisor holds (Linux allows that on a
# shared file description).  The supervisor notices (the socket no longer
# listens), listens on it again, says so in the log and in status, and
# clients are served again; the old code left every client refused for
# good and showed "- -" for the queues.  Reuseport mode (the slot's own
# socket) and shared mode (every slot's).  Each worker shuts it down
# twice, as two holders of a shared socket do: the second leaves the
# socket's shutdown flags set, which accepted connections inherit.
. "$(dirname "$0")/sup_lib.sh"
need python3

# A worker that, when $T/mode says so, shuts its listener down before it
# says READY=1, then keeps accepting (accept fails until the socket listens
# again).  HTTP/1.0-style: one response, close.
cat >"$T/worker.py" <<'EOS'
import os, socket, sys, time
listener = socket.socket(fileno=3)
if open(sys.argv[1]).read().strip() == "shutdown":
    # twice: the second, on the closed socket (as another slot's worker of a
    # shared socket does), leaves its shutdown flags set
    for _ in range(2):
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected: it is closed already
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
body = ("pid=%d gen=%s\n" % (os.getpid(), os.environ.get("PORTSHARE_GENERATION"))).encode()
while True:
    try:
        c, _ = listener.accept()
    except OSError:
        time.sleep(0.05)
        continue
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    c.close()
EOS
: >"$T/mode"

served() { curl -sf --max-time 3 "http://127.0.0.1:$PORT/" >/dev/null; }

check() { # check NAME WORKERS [--mode shared]
    local name=$1 n=$2; shift 2
    : >"$T/mode"
    sup_start "$name" -l 127.0.0.1:0 -w "$n" "$@" --drain-timeout 3s -- python3 "$T/worker.py" "$T/mode"
    served || fail "$name: not serving at the start"
    echo shutdown >"$T/mode"
    out=$(ctl "$name" reload) || fail "$name: reload to the shutting-down worker failed: $out"
    # checked once a second: well within 10 s it listens again
    wait_until 10 grep -q ' listener_revived: ' "$T/$name.log" ||
        fail "$name: the dead listener was not revived: $(ctl "$name" status)"
    grep ' listener_revived: ' "$T/$name.log" | head -1 | grep -q 'stopped listening' ||
        fail "$name: the log does not say what happened: $(grep listener_revived "$T/$name.log" | head -1)"
    wait_until 10 served || fail "$name: clients are not served after the revival: $(ctl "$name" status)"
    for i in $(seq 20); do served || fail "$name: request $i after the revival failed"; done
    s=$(status_json "$name")
    jq -e '.listeners[0].revived >= 1 and ([.slots[].listener_lost] | add) >= 1 and
           ([.listeners[0].sockets[] | select(.queued == null)] | length) == 0' <<<"$s" >/dev/null ||
        fail "$name: status does not show the revival: $(jq -c '{listeners, lost: [.slots[].listener_lost]}' <<<"$s")"
    ctl "$name" status | grep -q 'socket stopped listening' || fail "$name: text status does not say it: $(ctl "$name" status)"
    ! ctl "$name" status | grep -q 'NOT-LISTENING' || fail "$name: a socket still does not listen: $(ctl "$name" status)"
    # and a healthy program after it serves too
    : >"$T/mode"
    out=$(ctl "$name" reload) || fail "$name: reload to a healthy worker failed: $out"
    for i in $(seq 20); do served || fail "$name: request $i after the healthy reload failed"; done
    ctl "$name" stop >/dev/null
    echo "PASS: $name: a worker's shutdown() of its listener was noticed, revived, logged, shown in status; clients served again"
}
check reuseport 1
check shared 2 --mode shared
