#!/usr/bin/env bash
# Issue 11.7: `portshare serve` listens with TCP_DEFER_ACCEPT by default (as
# nginx's `listen ... deferred` and h2o): a client that connected but sent
# nothing is not accepted yet (the server side is still SYN-RECV to ss),
# and its request, once sent, is answered.  `?defer=0` turns it off: the
# same silent client is accepted at once (ESTAB).
. "$(dirname "$0")/sup_lib.sh"
need python3 ss

# probe PORT: connect, stay silent 300 ms, print the server side's state as
# ss sees it, then send a request and print the status line
probe() {
    python3 - "$1" <<'PY'
import socket, subprocess, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
me = s.getsockname()[1]
time.sleep(0.3)
def count(state):
    out = subprocess.run(["ss", "-Htn", "state", state, "( sport = :%d and dport = :%d )" % (port, me)],
                         capture_output=True, text=True).stdout
    return len([l for l in out.splitlines() if l.strip()])
print("syn-recv=%d established=%d" % (count("syn-recv"), count("established")))
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(s.recv(4096).split(b"\r\n", 1)[0].decode())
PY
}

SUP_SUBCMD=serve sup_start deferred -l 127.0.0.1:0 -w 1
out=$(probe "$PORT")
echo "# serve (default): $out"
grep -q '^syn-recv=1 established=0$' <<<"$out" || fail "a silent client was accepted without TCP_DEFER_ACCEPT: $out"
grep -q '^HTTP/1.1 200' <<<"$out" || fail "the request after the deferred handshake got no 200: $out"
ok "serve defers accept: a silent client stays SYN-RECV, its request is answered"

SUP_SUBCMD=serve sup_start plain -l '127.0.0.1:0?defer=0' -w 1
out=$(probe "$PORT")
echo "# serve ?defer=0: $out"
grep -q '^syn-recv=0 established=1$' <<<"$out" || fail "?defer=0 still defers: $out"
grep -q '^HTTP/1.1 200' <<<"$out" || fail "no 200 with ?defer=0: $out"
ok "?defer=0: the silent client is accepted at once"
