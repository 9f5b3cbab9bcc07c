#!/usr/bin/env bash
# Scaling up against the open-file limit.  A scale that cannot get every
# socket it needs changes nothing: the supervisor holds the same
# descriptors, slots and sockets per listener as before, and once the limit
# is raised the same scale and a reload succeed (a scale that failed half
# way used to keep the sockets it had opened: every later reload was
# rolled back for want of descriptors).
. "$(dirname "$0")/sup_lib.sh"
need prlimit

L=(-l 127.0.0.1:0 -l 127.0.0.1:0 -l 127.0.0.1:0 -l 127.0.0.1:0)
sup_start slim "${L[@]}" -w 8 -- "$TESTWORKER"

nfd() { ls "/proc/$SUP_PID/fd" | wc -l; }
# slots, and sockets per listener
shape() { status_json slim | jq -c '[(.slots | length), [.listeners[] | (.sockets | length)]]'; }

fds0=$(nfd)
shape0=$(shape)
[ "$shape0" = '[8,[8,8,8,8]]' ] || fail "unexpected start: $shape0"
# room for a few more sockets, not for 4 x 22 more
lim=$((fds0 + 12))
# the soft limit only: raising a hard limit again takes CAP_SYS_RESOURCE
hard=$(awk '/^Max open files/ { print $5 }' "/proc/$SUP_PID/limits")
[ "$hard" = unlimited ] || [ "$hard" -ge 1024 ] || skip "the hard open-file limit is $hard (< 1024)"
prlimit --pid "$SUP_PID" --nofile=$lim: || fail "prlimit failed"
if out=$(ctl slim scale 30 2>&1); then
    fail "scale 30 succeeded under a limit of $lim descriptors ($fds0 open): $out"
fi
note "scale 30 under a limit of $lim ($fds0 open): $out"
fds1=$(nfd)
shape1=$(shape)
[ "$fds1" = "$fds0" ] || fail "a failed scale left descriptors behind: $fds0 before, $fds1 after"
[ "$shape1" = "$shape0" ] || fail "a failed scale changed slots or sockets: $shape0 before, $shape1 after"
echo "PASS: a scale that did not fit left $fds1 descriptors ($fds0 before) and slots/sockets $shape1"

prlimit --pid "$SUP_PID" --nofile=1024: || fail "prlimit failed"
out=$(ctl slim scale 30 2>&1) || fail "scale 30 failed once the limit was raised: $out"
wait_until 30 bash -c "'$PORTSHARE' status --json --control '$T/slim.sock' | jq -e '[(.slots | length), [.listeners[] | (.sockets | length)]] == [30,[30,30,30,30]] and ([.slots[] | select(.state == \"ready\")] | length) == 30'" ||
    fail "did not settle at 30 workers: $(shape)"
out=$(ctl slim reload 2>&1) || fail "reload after the scale failed: $out"
note "after raising the limit: scale 30 and reload succeeded, $(nfd) descriptors open ($fds0 with 8 slots)"
ctl slim stop >/dev/null
echo "PASS: with the limit raised the same scale and a reload succeeded"
