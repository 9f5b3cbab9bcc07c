#!/usr/bin/env bash
# test_activation_lighttpd.sh - OUR hand-off (ps_activation_apply, through
# tests/tools/handoff) gives sockets to Debian's lighttpd, which was written
# for systemd (server.systemd-socket-activation = "enable"), and it serves
# files on them: over TCP on 127.0.0.1:<port 0 -> real port> and over a unix
# socket, fetched with curl.
#
# lighttpd binds whatever server.bind/server.port names unless an inherited
# socket matches it, so the configuration names our unix socket: then the
# only sockets lighttpd has are the two we handed over, and it has no port
# of its own that could clash with anything.
set -euo pipefail

for tool in lighttpd curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool not found (Debian package '$tool')"
        exit 77
    fi
done
LIGHTTPD=$(command -v lighttpd)
HANDOFF=${PS_TOOLS:?PS_TOOLS not set}/handoff
[ -x "$HANDOFF" ] || { echo "FAIL: $HANDOFF is not built"; exit 1; }

tmp=$(mktemp -d /tmp/ps-lighttpd-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    local f
    echo "FAIL: $*"
    for f in "$tmp"/handoff.out "$tmp"/handoff.err "$tmp"/error.log; do
        [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
    done
    exit 1
}

mkdir "$tmp/www"
token="portshare-handoff-$$-$RANDOM"
echo "$token" >"$tmp/www/index.html"
printf 'plain %s\n' "$token" >"$tmp/www/hello.txt"
cat >"$tmp/lighttpd.conf" <<EOF
server.document-root = "$tmp/www"
server.errorlog = "$tmp/error.log"
server.pid-file = "$tmp/lighttpd.pid"
server.systemd-socket-activation = "enable"
server.bind = "$tmp/lt.sock"
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html", ".txt" => "text/plain" )
EOF
"$LIGHTTPD" -tt -f "$tmp/lighttpd.conf" >/dev/null 2>&1 || fail "lighttpd rejects the test configuration"

"$HANDOFF" web=tcp://127.0.0.1:0 local=unix:"$tmp/lt.sock" -- "$LIGHTTPD" -D -f "$tmp/lighttpd.conf" \
    >"$tmp/handoff.out" 2>"$tmp/handoff.err" &
pid=$!
for _ in $(seq 100); do
    grep -q '^pid ' "$tmp/handoff.out" && break
    kill -0 "$pid" 2>/dev/null || fail "handoff exited early"
    sleep 0.05
done
grep -q '^pid ' "$tmp/handoff.out" || fail "handoff did not start lighttpd within 5 s"
lpid=$(sed -n 's/^pid //p' "$tmp/handoff.out")
addr=$(sed -n 's/^listen web //p' "$tmp/handoff.out")
port=${addr##*:}
[[ $addr == tcp://127.0.0.1:* && $port =~ ^[0-9]+$ && $port -gt 0 ]] || fail "bad address line '$addr'"
grep -qxF "listen local unix:$tmp/lt.sock" "$tmp/handoff.out" || fail "no unix listen line"

# The sockets listen since before lighttpd started: curl's connection waits in
# the accept queue until lighttpd takes over, no polling for readiness needed.
body=$(curl -sS -m 10 -D "$tmp/headers" "http://127.0.0.1:$port/") || fail "curl over TCP failed"
[ "$body" = "$token" ] || fail "TCP: got '$body', expected '$token'"
grep -qi '^content-type: text/html' "$tmp/headers" || fail "TCP: no text/html content type"
grep -qi '^server: lighttpd' "$tmp/headers" || fail "TCP: not answered by lighttpd"

body=$(curl -sS -m 10 --unix-socket "$tmp/lt.sock" "http://localhost/hello.txt") ||
    fail "curl over the unix socket failed"
[ "$body" = "plain $token" ] || fail "unix: got '$body'"
code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/missing") || true
[ "$code" = 404 ] || fail "missing file: HTTP $code, expected 404"

# lighttpd holds exactly our two sockets, at 3 and 4, and bound nothing itself
[ "$(readlink "/proc/$lpid/exe")" = "$(readlink -f "$LIGHTTPD")" ] || fail "pid $lpid is not lighttpd"
for fd in 3 4; do
    [[ $(readlink "/proc/$lpid/fd/$fd") == socket:* ]] || fail "lighttpd fd $fd is not a socket"
done
nsock=$(for f in /proc/"$lpid"/fd/*; do readlink "$f"; done | grep -c '^socket:' || true)
[ "$nsock" -ge 2 ] || fail "lighttpd has $nsock sockets"
if command -v ss >/dev/null; then
    listening=$(ss -Hlnp 2>/dev/null | grep -c "pid=$lpid," || true)
    [ "$listening" = 2 ] || fail "lighttpd listens on $listening sockets, expected our 2: $(ss -lnp | grep "pid=$lpid,")"
fi

# SIGTERM through the launcher: lighttpd stops cleanly, handoff returns its status
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || fail "handoff/lighttpd exited with status $status after SIGTERM"
grep -q 'server stopped' "$tmp/error.log" || fail "lighttpd did not log a clean stop"

echo "PASS: lighttpd served $token over our TCP (port $port) and unix sockets"
