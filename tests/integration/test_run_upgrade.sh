#!/usr/bin/env bash
# The supervisor re-executes its own binary under load
# (control command and SIGUSR2): zero failed requests, same pid, workers
# kept.  A failed exec leaves the old supervisor running; so does a binary
# that reads another upgrade state format (asked before the exec).
. "$(dirname "$0")/sup_lib.sh"

# run from a copy, so the test can replace the binary on disk
cp "$PORTSHARE" "$T/portshare"
SUP_BIN=$T/portshare
sup_start up -l 127.0.0.1:0 -w 2 -- "$TESTWORKER"
pid=$SUP_PID
workers=$(sup_worker_pids up | sort | tr '\n' ' ')
load_start load --connect 127.0.0.1:$PORT --threads 2 --concurrency 8 --duration 120

for i in 1 2 3; do
    out=$(ctl up upgrade) || fail "upgrade $i failed: $out"
    echo "$out" | grep -q "pid $pid" || fail "upgrade $i: '$out' does not name pid $pid"
done
# SIGUSR2 does the same
n=$(grep -c '"upgraded"\|upgraded: supervisor re-executed' "$T/up.log")
kill -USR2 "$pid"
wait_until 10 bash -c "[ \$(grep -c 'upgraded: supervisor re-executed' '$T/up.log') -gt $n ]" ||
    fail "SIGUSR2 did not upgrade"
# the binary is replaced by a new build (a copy with a different inode)
cp "$PORTSHARE" "$T/portshare.new" && mv "$T/portshare.new" "$T/portshare"
ctl up upgrade >/dev/null || fail "upgrade to the replaced binary failed"

kill -0 "$pid" || fail "supervisor pid $pid is gone"
[ "$(status_json up | jq .pid)" = "$pid" ] || fail "status reports another pid"
now=$(sup_worker_pids up | sort | tr '\n' ' ')
[ "$now" = "$workers" ] || fail "workers changed across upgrades: '$workers' -> '$now'"
load_stop load
note "upgrades under load: $RES"
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed during upgrades: $RES"
echo "PASS: 5 upgrades (control and SIGUSR2), same pid $pid, same workers, $(jq .sent <<<"$RES") requests, 0 failed"

# a control client whose command has not all arrived when the supervisor
# re-executes (here half a line) is told to ask again, not dropped unanswered.
# The upgrade waits until the supervisor has accepted it: one still in the
# control socket's queue is the new image's, which rightly waits for the rest
# of its line (a python slow to start on a loaded machine connected after
# the exec, and got nothing)
fds() { ls /proc/"$pid"/fd | wc -l; }
fds0=$(fds)
python3 - "$T/up.sock" "$T/partial.sent" >"$T/partial.out" <<'EOS' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"stat")
open(sys.argv[2], "w").close()
s.settimeout(10)
data = b""
while True:
    try:
        d = s.recv(4096)
    except socket.timeout:
        break
    if not d:
        break
    data += d
sys.stdout.write(data.decode())
EOS
partial=$!
accepted() { [ -e "$T/partial.sent" ] && [ "$(fds)" -gt "$fds0" ]; }
wait_until 10 accepted || fail "the half-command client was not accepted"
ctl up upgrade >/dev/null || fail "upgrade with a client waiting on half a command failed"
wait "$partial" || fail "the half-command client failed"
grep -q "ask again" "$T/partial.out" || fail "a client whose command had not arrived got no answer: '$(cat "$T/partial.out")'"
echo "PASS: a client caught mid-command by an upgrade is told to ask again"

# a broken binary: the upgrade is refused and the old image keeps running,
# as it was: same descriptors and generation
fdsb=$(fds) genb=$(status_json up | jq .generation)
printf 'not an executable\n' >"$T/portshare.bad" && chmod +x "$T/portshare.bad" && mv "$T/portshare.bad" "$T/portshare"
if out=$(ctl up upgrade 2>&1); then fail "upgrade to a broken binary reported success: $out"; fi
rc=0; ctl up upgrade >/dev/null 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "failed upgrade exited $rc, expected 1"
kill -0 "$pid" || fail "supervisor died on a failed upgrade"
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "not serving after a failed upgrade"
[ "$(sup_worker_pids up | sort | tr '\n' ' ')" = "$workers" ] || fail "workers changed after a failed upgrade"
wait_until 5 bash -c "[ \$(ls /proc/$pid/fd | wc -l) = $fdsb ]" || fail "descriptors after a failed upgrade: $(fds), before $fdsb"
[ "$(status_json up | jq .generation)" = "$genb" ] || fail "the generation changed after a failed upgrade"
echo "PASS: a broken binary is refused ($out); the old supervisor keeps serving, as it was ($fdsb descriptors, generation $genb)"

# a binary that reads another upgrade state format (a later version whose
# field tables changed): refused before the exec, the old one keeps serving
real=$T/portshare.real
cp "$PORTSHARE" "$real"
as_version() { # as_version FORMAT|-: a binary that names FORMAT (-: one too old to know the question)
    cat >"$T/portshare.new" <<EOS
#!/bin/sh
case "\$1" in
--upgrade-state-format) [ "$1" = - ] && { echo "portshare: fatal: unknown command '\$1'" >&2; exit 2; }; echo "$1" ;;
*) exec "$real" "\$@" ;;
esac
EOS
    chmod +x "$T/portshare.new" && mv "$T/portshare.new" "$T/portshare"
}
as_version portshare-upgrade-999
rc=0; out=$(ctl up upgrade 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "upgrade to a binary of another state format exited $rc, expected 1: $out"
grep -q "reads upgrade state 'portshare-upgrade-999', this supervisor writes '$("$real" --upgrade-state-format)'" <<<"$out" ||
    fail "unclear refusal: $out"
kill -0 "$pid" || fail "supervisor died on a refused upgrade"
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "not serving after a refused upgrade"
[ "$(sup_worker_pids up | sort | tr '\n' ' ')" = "$workers" ] || fail "workers changed after a refused upgrade"
echo "PASS: a binary of another upgrade state format is refused ($out)"
# a binary too old to know the question: tried as before, with a warning
# (last: the supervisor's own binary is then portshare.real, which the
# script ran)
as_version -
out=$(ctl up upgrade) || fail "upgrade to a binary that cannot name its format failed: $out"
grep -q 'upgrade_unchecked' "$T/up.log" || fail "no warning for a binary that cannot name its format"
! grep -q "unknown command" "$T/up.log" || fail "the old binary's refusal of the question reached the log"
kill -0 "$pid" && [ "$(status_json up | jq .pid)" = "$pid" ] || fail "supervisor pid changed"
[ "$(sup_worker_pids up | sort | tr '\n' ' ')" = "$workers" ] || fail "workers changed across the unchecked upgrade"
echo "PASS: a binary that cannot name its format is tried, with a warning"
