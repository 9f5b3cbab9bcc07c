#!/usr/bin/env bash
# Issue 4, test 8: the control socket is mode 0600 and refuses peers that
# are neither its owner nor root; --user workers run with that uid while the
# sockets were bound by root; a process of another uid cannot bind into the
# reuseport group.
. "$(dirname "$0")/sup_lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (to run a process as another uid)"
id nobody >/dev/null 2>&1 || skip "no user 'nobody'"
NOBODY=$(id -u nobody)
as_nobody() { setpriv --reuid="$NOBODY" --regid="$(id -g nobody)" --clear-groups "$@"; }

# the control socket lives in a directory anyone may enter, so the peer
# credential check itself is what refuses the other uid
chmod 0755 "$T"
public_bins # the binaries too
cat >"$T/dumper.sh" <<EOS
#!/bin/sh
exec "$T/pub/testworker" --dump "$T/pub/dump.\$PORTSHARE_SLOT"
EOS
chmod 0755 "$T/dumper.sh"
chmod 0777 "$T/pub"
"$PORTSHARE" run --name sec --control "$T/pub/sec.sock" -l 127.0.0.1:0 -w 2 --user nobody \
    -- "$T/dumper.sh" 2>"$T/sec.log" &
SUP_PID=$!; SUP_PIDS+=("$SUP_PID")
wait_until 20 grep -q 'ready: all' "$T/sec.log" || { cat "$T/sec.log"; fail "not ready"; }
PORT=$(grep -o 'listening on tcp://[^ ]*' "$T/sec.log" | head -1 | sed 's/.*://')

mode=$(stat -c %a "$T/pub/sec.sock")
[ "$mode" = 600 ] || fail "control socket mode is $mode, expected 600"
# another uid: even with the file opened up, the supervisor checks SO_PEERCRED
chmod 0666 "$T/pub/sec.sock"
rc=0; out=$(as_nobody "$T/pub/portshare" status --control "$T/pub/sec.sock" 2>&1) || rc=$?
[ "$rc" = 4 ] || fail "another uid got exit $rc from the control socket: $out"
echo "$out" | grep -q "permission denied" || fail "refusal does not say why: $out"
grep -q control_refused "$T/sec.log" || fail "refusal not logged"
"$PORTSHARE" status --control "$T/pub/sec.sock" >/dev/null || fail "root was refused"
echo "PASS: control socket 0600; uid $NOBODY refused ($out)"

# workers run as nobody, the supervisor stays root (it adds group sockets on scale-up)
wait_until 5 test -s "$T/pub/dump.1"
for s in 0 1; do
    uid=$(grep '^uid=' "$T/pub/dump.$s" | cut -d= -f2)
    [ "$uid" = "$NOBODY" ] || fail "worker of slot $s runs as uid $uid, expected $NOBODY"
done
[ "$(stat -c %u /proc/$SUP_PID)" = 0 ] || fail "supervisor is not root"
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "--user workers do not serve"
echo "PASS: --user nobody: workers run as uid $NOBODY and serve"

# another uid cannot join the group (the kernel checks the effective uid)
rc=0; err=$(as_nobody timeout 3 socat -u TCP-LISTEN:$PORT,bind=127.0.0.1,reuseport,reuseaddr - 2>&1) || rc=$?
echo "$err" | grep -qi "address already in use" || fail "uid $NOBODY could bind into the group (rc $rc): $err"
# a process of our own uid that joins with SO_REUSEPORT is also refused at start:
# a second supervisor on the same port fails with exit 3 and names the holder
rc=0; out=$("$PORTSHARE" run --name sec2 --control "$T/sec2.sock" -l 127.0.0.1:$PORT -w 1 -- "$TESTWORKER" 2>&1) || rc=$?
[ "$rc" = 3 ] || fail "second supervisor on the same port exited $rc: $out"
echo "$out" | grep -q "pid $SUP_PID" || fail "the error does not name the holder: $out"
echo "PASS: uid $NOBODY cannot bind into the group; a second supervisor is refused ($out)"
