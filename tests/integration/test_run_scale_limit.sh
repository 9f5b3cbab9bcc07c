#!/usr/bin/env bash
# The open-file limit.
#  1. A scale that cannot get every socket it needs changes nothing: the
#     supervisor holds the same descriptors, slots and sockets per listener
#     as before, the refusal names the limit, and once the limit is raised
#     the same scale and a reload succeed (a scale that failed half way
#     used to keep the sockets it had opened: every later reload was rolled
#     back for want of descriptors).
#  2. A reload whose workers cannot get the descriptors they need to
#     start says so, naming the limit; it is rolled back leaving the same
#     descriptors, slots and generation, and a crashed worker is restarted
#     and a reload succeeds once the limit is raised.
#  3. The same at start: exit 6 naming the limit (it said "cannot execute
#     PROGRAM", exit 5).
#  4. At start the soft limit is raised to the hard one: 256 slots x 4
#     listeners start under a soft limit of 1024 (they failed with "Too
#     many open files", exit 3); under a hard limit too low the start is
#     refused before anything is bound, in one line naming the limit, exit 6.
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
grep -q "open-file limit is $lim" <<<"$out" || fail "the refusal does not name the limit ($lim): $out"
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
echo "PASS: with the limit raised the same scale and a reload succeeded"

# ---- 2. a reload that runs out of descriptors starting its workers ----
settled() { status_json slim | jq -e '[.slots[] | select(.state == "ready" and .next_pid == 0)] | length == 30'; }
wait_until 30 settled || fail "the reload did not settle: $(status_json slim | jq -c '[.slots[] | [.state, .next_pid]]')"
fds2=$(nfd)
gen2=$(status_json slim | jq .generation)
# the control connection takes one; a worker needs 4 more to place its listeners
lim=$((fds2 + 2))
prlimit --pid "$SUP_PID" --nofile=$lim: || fail "prlimit failed"
if out=$(ctl slim reload 2>&1); then
    fail "a reload succeeded with $((lim - fds2)) descriptors free: $out"
fi
note "reload with $((lim - fds2)) descriptors free: $out"
grep -q "cannot start a worker: Too many open files (the open-file limit is $lim" <<<"$out" ||
    fail "the rollback does not say the workers ran out of descriptors under $lim: $out"
wait_until 10 settled || fail "the rolled-back reload left slots behind: $(status_json slim | jq -c '[.slots[] | [.state, .next_pid]]')"
[ "$(nfd)" = "$fds2" ] || fail "the rolled-back reload left descriptors behind: $fds2 before, $(nfd) after"
[ "$(status_json slim | jq .generation)" = "$gen2" ] || fail "the generation moved on a rolled-back reload"
prlimit --pid "$SUP_PID" --nofile=1024: || fail "prlimit failed"
victim=$(status_json slim | jq '.slots[0].pid')
kill -9 "$victim"
revived() { status_json slim | jq -e --argjson v "$victim" '.slots[0] | .state == "ready" and .pid != $v'; }
wait_until 10 revived || fail "a crashed worker was not restarted after the rollback: $(status_json slim | jq -c '.slots[0]')"
[ "$(nfd)" = "$fds2" ] || fail "descriptors: $fds2 before, $(nfd) after the restart"
out=$(ctl slim reload 2>&1) || fail "the reload after the rollback failed: $out"
ctl slim stop >/dev/null
echo "PASS: a reload that ran out of descriptors said so, was rolled back leaving $fds2 descriptors, and the next restart and reload succeeded"

# ---- 3. at start, starting the workers ----
# (the limits are set before the first exec: a limit the listeners fit under
# but the workers' start does not, as found by the sockets 8 x 4 took above)
rc=0
prlimit --nofile=$((fds0 - 1)):$((fds0 - 1)) "$PORTSHARE" run --name spawnlim --control "$T/spawnlim.sock" \
    "${L[@]}" -w 8 -- "$TESTWORKER" >"$T/spawnlim.out" 2>"$T/spawnlim.err" || rc=$?
err=$(grep -v ' info ' "$T/spawnlim.err")
[ "$rc" = 6 ] || fail "out of descriptors starting the workers: exit $rc, not 6: $err"
grep -q "cannot start a worker: Too many open files (the open-file limit is $((fds0 - 1))" <<<"$err" ||
    fail "the refusal does not say the workers ran out of descriptors: $err"
note "$err"
echo "PASS: out of descriptors starting the workers: exit 6, naming the limit"

# ---- 4. at start, the limit raised ----
[ "$hard" = unlimited ] || [ "$hard" -ge 1200 ] || skip "the hard open-file limit is $hard (< 1200): no room to raise"
cat >"$T/lim.sh" <<EOS
#!/bin/sh
exec prlimit --nofile=\$NOF "$PORTSHARE" "\$@"
EOS
chmod +x "$T/lim.sh"
L4=(-l 127.0.0.1:0 -l 127.0.0.1:0 -l "[::1]:0" -l 127.0.0.1:0)
ip -6 addr show lo 2>/dev/null | grep -q '::1' || L4=(-l 127.0.0.1:0 -l 127.0.0.1:0 -l 127.0.0.1:0 -l 127.0.0.1:0)
NOF=1024: SUP_BIN=$T/lim.sh sup_start big "${L4[@]}" -w 256 --ready delay --ready-delay 0 -- sleep 1000
grep -q "open-file limit raised from 1024 to $hard" "$T/big.log" || fail "no 'raised' line: $(grep nofile "$T/big.log")"
got=$(status_json big | jq -c '[(.slots | length), [.listeners[] | (.sockets | length)]]')
[ "$got" = '[256,[256,256,256,256]]' ] || fail "256 x 4 did not start as asked: $got"
note "256 slots x 4 listeners under a soft limit of 1024: $(grep -o 'open-file limit raised.*' "$T/big.log"), $(ls /proc/$SUP_PID/fd | wc -l) descriptors open"
ctl big stop >/dev/null
echo "PASS: 256 slots x 4 listeners started under a soft limit of 1024 (raised to $hard)"

rc=0
NOF=512:512 "$T/lim.sh" run --name small --control "$T/small.sock" "${L4[@]}" -w 256 -- sleep 1000 \
    >"$T/small.out" 2>"$T/small.err" || rc=$?
[ "$rc" = 6 ] || fail "256 x 4 under a hard limit of 512: exit $rc, not 6: $(cat "$T/small.err")"
[ "$(wc -l <"$T/small.err")" = 1 ] || fail "not one line: $(cat "$T/small.err")"
grep -q 'open-file limit is 512' "$T/small.err" || fail "the line does not name the limit: $(cat "$T/small.err")"
! grep -q listening "$T/small.err" && [ ! -e "$T/small.sock" ] || fail "something was opened before the refusal"
note "$(cat "$T/small.err")"
echo "PASS: under a hard limit of 512 the start was refused in one line naming the limit (exit 6)"
