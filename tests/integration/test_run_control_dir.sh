#!/usr/bin/env bash
# The control socket checked both ways.  Without
# XDG_RUNTIME_DIR the default directory is /tmp/portshare-UID: one that is
# another user's, mode 0777 or a symlink is refused (another local user who
# made it first could swap the socket); one that is not there is made 0700.
# And the client refuses a server of another uid, which could otherwise
# answer "stopped" to `portshare stop` while the real supervisor runs on.
# Run as uid nobody, in a private mount namespace whose /tmp is the test's
# own directory: the machine's /tmp is never touched.  Then, as root with
# a read-only /run (a container's read-only root): the fallback to the next
# default place, running without a control socket, and no socket file left
# after an upgrade (details below).
. "$(dirname "$0")/sup_lib.sh"
need python3 setpriv

# ---- the default directory under /tmp, and the client's check ----
[ "$(id -u)" = 0 ] || skip "needs root (a process of another uid, a /tmp of the test's own)"
id nobody >/dev/null 2>&1 || skip "no user 'nobody'"
command -v unshare >/dev/null && unshare -m true 2>/dev/null || skip "no private mount namespace (unshare -m) for a /tmp of the test's own"
NOBODY=$(id -u nobody); NOGROUP=$(id -g nobody)
# a /tmp of the test's own: $T/tmp bound over /tmp in a private mount
# namespace, so that /tmp/portshare-UID is the test's and no one else's
mkdir -p "$T/tmp/bin" && chmod 1777 "$T/tmp"
install -m 0755 "$PORTSHARE" "$T/tmp/bin/portshare"
install -m 0755 "$TESTWORKER" "$T/tmp/bin/testworker"
cat >"$T/tmp/ns.sh" <<'EOS'
set -u
NOBODY=$1 NOGROUP=$2
fail() { echo "FAIL: $*"; exit 1; }
nob() { setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups env -u XDG_RUNTIME_DIR "$@"; }
D=/tmp/portshare-$NOBODY
[ ! -e "$D" ] || fail "$D exists in the test's own /tmp"
refused() { # refused WHAT PATTERN
    local rc=0 out
    out=$(nob timeout 10 /tmp/bin/portshare run --name t -l 127.0.0.1:0 -- /tmp/bin/testworker 2>&1) || rc=$?
    [ "$rc" = 4 ] || fail "$1: run exited $rc, expected 4: $out"
    grep -q "$2" <<<"$out" || fail "$1: '$out' does not say '$2'"
    echo "ok - $1: $out"
}
mkdir -m 0700 "$D"                                   # root's
refused "a directory of another user" "refusing control directory $D: owned by uid 0"
chown "$NOBODY:$NOGROUP" "$D"; chmod 0777 "$D"
refused "mode 0777" "refusing control directory $D: .* mode 777"
rmdir "$D"; mkdir -m 0700 /tmp/elsewhere; chown "$NOBODY:$NOGROUP" /tmp/elsewhere; ln -s /tmp/elsewhere "$D"
refused "a symlink" "refusing control directory $D: it is a symlink"
rm "$D"
# none there: made 0700, and it works
setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups env -u XDG_RUNTIME_DIR \
    /tmp/bin/portshare run --name t -l 127.0.0.1:0 -- /tmp/bin/testworker >/dev/null 2>/tmp/t.log &
sup=$!   # (setpriv and env exec: this is the supervisor)
trap 'kill -KILL $sup 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q 'ready: all' /tmp/t.log && break; sleep 0.1; done
grep -q 'ready: all' /tmp/t.log || fail "a supervisor of uid nobody did not start: $(cat /tmp/t.log)"
[ "$(stat -c '%u %a' "$D")" = "$NOBODY 700" ] || fail "$D is $(stat -c '%u %a' "$D"), expected $NOBODY 700"
nob /tmp/bin/portshare status --name t >/dev/null || fail "status of uid nobody's own supervisor failed"
nob /tmp/bin/portshare stop --name t >/dev/null || fail "stop failed"
wait $sup
echo "ok - none there: made $D 0700, status and stop work"
# a server of another uid is refused by the client: it could say "stopped"
setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups timeout 30 python3 -c "
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind('/tmp/elsewhere/fake.sock'); s.listen(4)
open('/tmp/elsewhere/fake.up', 'w').close()
for _ in range(2):
    c, _ = s.accept()
    try:
        c.recv(100); c.sendall(b'ok\nstopped\n')
    except OSError:
        pass  # the client hung up first
    c.close()
" >/dev/null 2>&1 &
fake=$!
for _ in $(seq 50); do [ -e /tmp/elsewhere/fake.up ] && break; sleep 0.1; done
for cmd in stop status; do
    rc=0; out=$(timeout 10 /tmp/bin/portshare $cmd --control /tmp/elsewhere/fake.sock 2>&1) || rc=$?
    [ "$rc" = 4 ] || fail "root's '$cmd' to a server of uid $NOBODY exited $rc: $out"
    grep -qi "not allowed\\|permission" <<<"$out" || fail "the refusal does not say why: $out"
    echo "ok - $cmd to a server of uid $NOBODY: $out"
done
kill "$fake" 2>/dev/null || true   # it quits after two clients
exit 0
EOS
out=$(unshare -m -- bash -c 'mount --bind "$1" /tmp && exec bash /tmp/ns.sh "$2" "$3"' bash "$T/tmp" "$NOBODY" "$NOGROUP" 2>&1) ||
    fail "control directory checks: $out"
echo "$out"
echo "PASS: /tmp/portshare-$NOBODY of another user, 0777 or a symlink refused; made 0700 when absent; a server of another uid refused by the client"
# ---- a read-only root: the control socket falls back, or is done without ----
# As root in a private mount namespace: /run a read-only tmpfs (a container
# with a read-only root), /tmp the test's own.  The supervisor starts with
# its control socket in the next default place, /tmp/portshare-0, and the
# client finds it there; with /tmp read-only too it runs without one
# (status exits 4, SIGHUP reloads, SIGTERM stops with exit 0).  And the
# socket of a default place is removed at exit after an upgrade (the new
# image does not know which place the old one chose).
mkdir -p "$T/ro" && chmod 0755 "$T/ro"
cat >"$T/ro/ns.sh" <<'EOS'
set -u
PS=$1 TW=$2 D=$3
fail() { echo "FAIL: $*"; exit 1; }
wait_for() { local i; for i in $(seq 200); do grep -q "$1" "$2" && return 0; sleep 0.1; done; return 1; }
unset XDG_RUNTIME_DIR
# the logs stay reachable through their descriptors once /tmp (where $D
# may be) is covered
exec 3>"$D/ro1.log" 4>"$D/ro2.log" 5>"$D/up.log"
L1=/proc/$$/fd/3 L2=/proc/$$/fd/4 L3=/proc/$$/fd/5
mount -t tmpfs -o mode=0755 tmpfs /run && mount -o remount,ro /run || fail "cannot make /run a read-only tmpfs"
mount --bind "$D/tmp" /tmp || fail "cannot bind a /tmp of our own"
"$PS" run --name ro -l 127.0.0.1:0 -- "$TW" 2>&3 &
sup=$!
wait_for 'ready: all' "$L1" || fail "no start with a read-only /run: $(cat "$L1")"
grep -q "warn control_fallback: cannot create the directory of /run/portshare/ro.sock: Read-only file system; the control socket is /tmp/portshare-0/ro.sock instead" "$L1" ||
    fail "the fallback is not said at warning: $(grep control "$L1")"
"$PS" status --name ro >/dev/null || fail "status does not find the supervisor at /tmp/portshare-0"
"$PS" stop --name ro >/dev/null || fail "stop does not find the supervisor at /tmp/portshare-0"
wait $sup || fail "exit $? after stop"
[ ! -e /tmp/portshare-0/ro.sock ] || fail "/tmp/portshare-0/ro.sock left behind"
echo "ok - read-only /run: the control socket is /tmp/portshare-0/ro.sock, said at warning; status and stop find it"
mount -o remount,ro,bind /tmp || fail "cannot make /tmp read-only"
"$PS" run --name ro -l 127.0.0.1:0 -- "$TW" 2>&4 &
sup=$!
wait_for 'ready: all' "$L2" || fail "no start with a read-only /run and /tmp: $(cat "$L2")"
grep -q "warn control_none: .*running without a control socket" "$L2" || fail "no control_none warning: $(grep control "$L2")"
rc=0; "$PS" status --name ro >/dev/null 2>&1 || rc=$?
[ "$rc" = 4 ] || fail "status without a control socket: exit $rc, want 4"
kill -HUP $sup
wait_for 'generation 2 is serving' "$L2" || fail "SIGHUP did not reload: $(tail -3 "$L2")"
kill -TERM $sup
rc=0; wait $sup || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM without a control socket: exit $rc"
echo "ok - read-only /run and /tmp: runs without a control socket (said at warning), status exits 4, HUP reloads, TERM stops"
mount -o remount,rw,bind /tmp && mount -o remount,rw /run || fail "cannot make /run writable again"
"$PS" run --name up -l 127.0.0.1:0 -- "$TW" 2>&5 &
sup=$!
wait_for 'ready: all' "$L3" || fail "no start: $(cat "$L3")"
[ -S /run/portshare/up.sock ] || fail "no /run/portshare/up.sock"
"$PS" upgrade --name up >/dev/null || fail "upgrade failed"
"$PS" stop --name up >/dev/null || fail "stop after upgrade failed"
wait $sup || fail "exit $? after upgrade and stop"
[ ! -e /run/portshare/up.sock ] || fail "/run/portshare/up.sock left behind after an upgrade and a stop"
echo "ok - the control socket of a default place is removed at exit after an upgrade"
EOS
mkdir -p "$T/ro/tmp/bin" && chmod 1777 "$T/ro/tmp"
install -m 0755 "$PORTSHARE" "$T/ro/tmp/bin/portshare"   # reachable under the bound /tmp
install -m 0755 "$TESTWORKER" "$T/ro/tmp/bin/testworker"
out=$(unshare -m -- bash "$T/ro/ns.sh" /tmp/bin/portshare /tmp/bin/testworker "$T/ro" 2>&1) || fail "read-only root: $out"
echo "$out"
echo "PASS: a read-only /run falls back to /tmp/portshare-0, a read-only /tmp too runs without a control socket; no socket left after an upgrade"

