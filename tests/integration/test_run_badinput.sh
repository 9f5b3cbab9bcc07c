#!/usr/bin/env bash
# Issue 4, test 9: bad input gets one clear line and a documented exit code
# (2 usage, 3 bind, 4 control, 5 exec), and nothing is left running or bound.
. "$(dirname "$0")/sup_lib.sh"

expect() { # expect CODE PATTERN -- COMMAND...: exit code, one stderr line matching PATTERN
    local code=$1 pattern=$2; shift 3
    local rc=0
    timeout 10 "$@" >"$T/out" 2>"$T/err" || rc=$?
    [ "$rc" = "$code" ] || fail "'$*' exited $rc, expected $code: $(cat "$T/err")"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "'$*' printed $(wc -l <"$T/err") lines, expected one: $(cat "$T/err")"
    grep -q "^portshare: fatal: .*$pattern" "$T/err" || fail "'$*': '$(cat "$T/err")' does not match '$pattern'"
    echo "ok $code: $* -> $(cat "$T/err")"
}
P=$PORTSHARE
# every supervisor here gets a control socket of its own, so that a
# supervisor running on this machine under the default name (./dev serve in
# another terminal, a concurrent test) can neither answer nor collide; and
# the worker program is reached through a name of this test's own, so that
# "no worker left running" looks for this test's workers only
C=(--control "$T/ctl.sock")
TW=$T/testworker-badinput
ln -s "$TESTWORKER" "$TW"
expect 2 "unknown option '--bogus'" -- $P run "${C[@]}" --bogus -- true
expect 2 "unknown command" -- $P frobnicate
expect 2 "bad port '99999'" -- $P run "${C[@]}" -l tcp://127.0.0.1:99999 -- true
expect 2 "unknown scheme" -- $P run "${C[@]}" -l sctp://127.0.0.1:80 -- true
expect 2 "must be written in brackets" -- $P run "${C[@]}" -l tcp://::1:80 -- true
expect 2 "unknown option 'bogus'" -- $P run "${C[@]}" -l '127.0.0.1:0?bogus=1' -- true
expect 2 "bad --workers '0'" -- $P run "${C[@]}" -l 127.0.0.1:0 -w 0 -- true
expect 2 "bad duration 'soon'" -- $P run "${C[@]}" -l 127.0.0.1:0 --ready-timeout soon -- true
expect 2 "bad --mode" -- $P run "${C[@]}" -l 127.0.0.1:0 --mode fast -- true
expect 2 "bad --steering" -- $P run "${C[@]}" -l 127.0.0.1:0 --steering fast -- true
expect 2 "bad duration 'later'" -- $P run "${C[@]}" -l 127.0.0.1:0 --stall-timeout later -- true
expect 2 "no such user" -- $P run "${C[@]}" -l 127.0.0.1:0 --user no-such-user-xyz -- true
expect 2 "nothing to listen on" -- $P run "${C[@]}" -- true
expect 2 "no PROGRAM" -- $P run "${C[@]}" -l 127.0.0.1:0
expect 5 "not found in PATH" -- $P run "${C[@]}" -l 127.0.0.1:0 -- no-such-program-xyz
expect 5 "cannot execute /nonexistent/prog" -- $P run "${C[@]}" -l 127.0.0.1:0 -- /nonexistent/prog
expect 4 "no supervisor at" -- $P status --control "$T/nobody-here.sock"
expect 2 "bad worker count" -- $P scale zero --control "$T/nobody-here.sock"
expect 2 "is not a directory" -- $P serve /etc/hostname

# a port held by another process: exit 3, naming the holder
socat -d -d TCP-LISTEN:0,bind=127.0.0.1,fork - 2>"$T/socat.err" </dev/null &
holder=$!
wait_until 5 grep -q 'listening on' "$T/socat.err" || fail "socat did not listen"
hport=$(grep -o 'listening on .*' "$T/socat.err" | grep -o '[0-9]*$')
expect 3 "held by pid $holder, socat" -- $P run "${C[@]}" -l 127.0.0.1:$hport -w 2 -- "$TW"
kill $holder

# a listener of another process with SO_REUSEPORT: the bind succeeds and
# the kernel would share our connections with it; exit 3, naming it (found
# in the kernel's sock_diag dump of listening sockets), on IPv4 and IPv6
sharer() { # sharer ADDR BIND: start socat with SO_REUSEPORT; sets holder and hport
    socat -d -d TCP-LISTEN:0,bind=$2,reuseport,reuseaddr,$1,fork - 2>"$T/socat.err" </dev/null &
    holder=$!
    wait_until 5 grep -q 'listening on' "$T/socat.err" || fail "socat ($2) did not listen: $(cat "$T/socat.err")"
    hport=$(grep -o 'listening on .*' "$T/socat.err" | grep -o '[0-9]*$')
}
sharer pf=ip4 127.0.0.1
expect 3 "another process (pid $holder, socat) already listens there with SO_REUSEPORT" -- $P run "${C[@]}" -l 127.0.0.1:$hport -w 2 -- "$TW"
kill $holder
if [ -e /proc/net/if_inet6 ] && ip -6 addr show lo | grep -q '::1'; then
    sharer pf=ip6 '[::1]'
    expect 3 "another process (pid $holder, socat) already listens there with SO_REUSEPORT" -- $P run "${C[@]}" -l "[::1]:$hport" -w 2 -- "$TW"
    kill $holder
else
    echo "note: no IPv6 loopback: the IPv6 SO_REUSEPORT sharer is not tried"
fi

# nothing left behind: no worker started, no control socket, no listener
sleep 0.2
! pgrep -f "$TW" >/dev/null || fail "a worker was left running: $(pgrep -af "$TW")"
! ss -ltn | grep -q "127.0.0.1:$hport " || fail "port $hport still bound"
[ ! -e "$T/ctl.sock" ] || ! "$P" status --control "$T/ctl.sock" >/dev/null 2>&1 || fail "a supervisor is still answering"
echo "PASS: every bad input gave one line and its exit code; nothing left running"
