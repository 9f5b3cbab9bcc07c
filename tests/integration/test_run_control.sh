#!/usr/bin/env bash
# The control socket is an ordinary event source of
# the loop, never blocking it, and checked both ways.
#  5. A client that asks for a status larger than the socket buffer and does
#     not read it does not stop the loop: another status is answered, a
#     killed worker is restarted, and the slow client gets the whole reply
#     when it reads at last (the old code sent it with a blocking send()).
#  6. A command that arrives in pieces ("stat", a pause, "us\n") is one
#     command; 70 idle connections (more than the table holds) do not lock
#     out status/reload; idle clients are timed out (the old code read one
#     recv(), never timed idle clients out, and 16 of them made everything
#     answer "busy").
#  7. Out of descriptors (ulimit -n 32, 16 workers, 8 idle control
#     connections) the supervisor pauses accepting instead of spinning
#     (the old code used ~300 CPU ticks in 3 s), and answers again once
#     descriptors are free.
#  8. 40 control clients under ulimit -n 64 with both endpoints do not stop
#     the supervisor (only descriptors in use are polled); a poll(2) that
#     fails (injected) stops it with exit 6 and a reason, never 0, except
#     EINVAL/ENOMEM, tried again.
#  (the control directory and the client's check: test_run_control_dir.sh)
. "$(dirname "$0")/sup_lib.sh"
need python3

# ctl_py SOCKET SCRIPT...: python with `sock` connected to the control socket
cat >"$T/ctl.py" <<'EOS'
import socket, sys, time
def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
def read_all(s, timeout=20):
    s.settimeout(timeout)
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            return out
        out += b
EOS

# ---- 5. a big status to a client that does not read ----
# 360 slots whose workers (socat, their main process, so that the
# supervisor believes them) sent long STATUS / X_PORTSHARE_STATS /
# X_PORTSHARE_CLOSES: a status of ~300 KB, well above the ~210 KB a unix
# socket buffers, from light processes (socat and sleep)
need socat
long=$(printf 'x%.0s' $(seq 120))
stats=$(for i in $(seq 6); do printf 'counter_%c=%d ' "$(printf "\\$(printf %o $((96 + i)))")" $((1000000 + i)); done)
closes=$(for i in $(seq 12); do printf 'reason_%c=%d ' "$(printf "\\$(printf %o $((96 + i)))")" $((100000 + i)); done)
cat >"$T/emit.sh" <<EOS
#!/bin/sh
printf 'READY=1\nSTATUS=$long\nX_PORTSHARE_STATS=$stats\nX_PORTSHARE_CLOSES=$closes'
exec sleep 1000
EOS
cat >"$T/big.sh" <<EOS
#!/bin/sh
exec socat -u -b 65536 SYSTEM:$T/emit.sh "ABSTRACT-SENDTO:\${NOTIFY_SOCKET#@}"
EOS
chmod +x "$T/emit.sh" "$T/big.sh"
sup_start big -l 127.0.0.1:0 -w 360 --ready-timeout 60s -- "$T/big.sh"
size=$(status_json big | wc -c)
[ "$size" -gt 260000 ] || fail "status --json is only $size bytes: not more than a socket buffer holds"
status_json big | jq -e '(.slots | length) == 360' >/dev/null || fail "the CLI did not get the whole $size-byte status"
python3 -c "
import sys, time
exec(open('$T/ctl.py').read())
s = connect('$T/big.sock')
s.sendall(b'status json\n')
open('$T/slow.started', 'w').close()
time.sleep(4)                 # not reading: the reply waits in the socket
open('$T/slow.out', 'wb').write(read_all(s))
" &
slow=$!
wait_until 30 test -e "$T/slow.started" || fail "the slow client did not start"
sleep 0.5
start=$(now_ms)
timeout 5 "$PORTSHARE" status --control "$T/big.sock" >/dev/null || fail "a second status got no answer while a client does not read its reply"
took=$(( $(now_ms) - start ))
victim=$(status_json big | jq -r '.slots[7].pid')
kill -KILL "$victim"
wait_until 3 bash -c "'$PORTSHARE' status --json --control '$T/big.sock' | jq -e '.slots[7].pid != $victim and .slots[7].pid > 0'" ||
    fail "a killed worker was not restarted while a client does not read its reply"
wait "$slow" || fail "the slow client failed"
head -c 3 "$T/slow.out" | grep -q '^ok' || fail "the slow client got no reply: $(head -c 100 "$T/slow.out")"
tail -c +4 "$T/slow.out" | jq -e '(.slots | length) == 360' >/dev/null || fail "the slow client's reply is not the whole status ($(wc -c <"$T/slow.out") bytes)"
ctl big stop >/dev/null
echo "PASS: a $size-byte status to a client that read it 4 s later did not stop the loop (another status in $took ms, a killed worker restarted); it got all of it"

# ---- 6. commands in pieces, many idle clients, idle timeout ----
sup_start c6 -l 127.0.0.1:0 -w 2 -- "$TESTWORKER"
out=$(python3 -c "
import time
exec(open('$T/ctl.py').read())
s = connect('$T/c6.sock')
s.sendall(b'stat'); time.sleep(0.5); s.sendall(b'us\n')
print(read_all(s).decode())
")
head -1 <<<"$out" | grep -q '^ok' || fail "'stat' + 'us\\n' got: $out"
grep -q '^SLOT  PID' <<<"$out" || fail "'stat' + 'us\\n' is not answered with the status: $out"
echo "PASS: 'stat', 0.5 s, 'us\\n' is one status command"
python3 -c "
import time
exec(open('$T/ctl.py').read())
idle = [connect('$T/c6.sock') for _ in range(70)]
open('$T/idle.up', 'w').close()
t0 = time.time(); closed = 0
for s in idle:
    # closed by the supervisor: EOF (timed out, or made room for another),
    # or 'busy' and EOF (the table was full of clients not idle for long)
    s.settimeout(max(0.1, 20 - (time.time() - t0)))
    try:
        s.recv(100)
        closed += 1
    except socket.timeout:
        pass
    except OSError:
        closed += 1
open('$T/idle.result', 'w').write('%d %.1f\n' % (closed, time.time() - t0))
" &
idlepid=$!
wait_until 30 test -e "$T/idle.up" || fail "idle clients did not connect"
sleep 0.3
for cmd in status "status --json" reload status; do
    out=$(timeout 10 "$PORTSHARE" $cmd --control "$T/c6.sock" 2>&1) || fail "'$cmd' failed with 70 idle control connections open: $out"
done
grep -q "generation 2" <<<"$out" || fail "the reload did not happen: $out"
wait "$idlepid" || true
read -r closed secs <"$T/idle.result"
[ "$closed" = 70 ] || fail "only $closed of 70 idle control connections were closed by the supervisor within 20 s"
note "70 idle connections closed within $secs s (idle timeout 10 s; the oldest make room when the table is full)"
ctl c6 stop >/dev/null || fail "stop failed"
echo "PASS: 70 idle control connections did not lock out status/reload/stop, and were timed out ($secs s)"

# ---- 7. EMFILE: pause, do not spin ----
cat >"$T/limited.sh" <<EOS
#!/bin/sh
ulimit -n 32
exec "$PORTSHARE" "\$@"
EOS
chmod +x "$T/limited.sh"
# 16 sockets: with the eBPF steering maps and program the supervisor holds
# about 12 descriptors of its own, so 8 idle clients run it out of them
SUP_BIN=$T/limited.sh sup_start c7 -l 127.0.0.1:0 -w 16 --ready-delay 50ms -- sleep 1000
SUP_BIN=
python3 -c "
import time
exec(open('$T/ctl.py').read())
idle = [connect('$T/c7.sock') for _ in range(8)]
open('$T/emfile.up', 'w').close()
while True:
    try:
        open('$T/emfile.stop').close()
        break
    except OSError:
        time.sleep(0.05)
" &
emfile=$!
wait_until 30 test -e "$T/emfile.up" || fail "idle clients did not connect"
wait_until 5 grep -q ' control_paused: ' "$T/c7.log" || fail "the supervisor did not run out of descriptors (no control_paused): $(ls /proc/$SUP_PID/fd | wc -l) open"
a=$(cpu_ticks "$SUP_PID"); sleep 3; b=$(cpu_ticks "$SUP_PID")
touch "$T/emfile.stop"; wait "$emfile" || true
note "supervisor CPU over 3 s out of descriptors with 8 idle control connections: $((b - a)) ticks"
[ $((b - a)) -lt 50 ] || fail "the supervisor spins out of descriptors: $((b - a)) ticks of CPU in 3 s"
wait_until 10 bash -c "'$PORTSHARE' status --control '$T/c7.sock' >/dev/null" || fail "no status once the idle clients were gone"
ctl c7 stop >/dev/null
echo "PASS: out of descriptors the supervisor paused accepting ($((b - a)) ticks in 3 s) and answered again afterwards"

# ---- poll only what is in use; a failing loop never exits 0 ----
# 40 control clients at once under ulimit -n 64, with both endpoints: the
# old code polled 17 entries per endpoint whether or not a connection was
# open, poll(2) refused more entries than RLIMIT_NOFILE and the supervisor
# stopped, with exit 0
cat >"$T/limited64.sh" <<EOS
#!/bin/sh
ulimit -n 64
exec "$PORTSHARE" "\$@"
EOS
chmod +x "$T/limited64.sh"
SUP_BIN=$T/limited64.sh sup_start c8 -l 127.0.0.1:0 -w 1 --metrics 127.0.0.1:0 --agent 127.0.0.1:0 -- "$TESTWORKER"
SUP_BIN=
python3 -c "
import time
exec(open('$T/ctl.py').read())
idle = [connect('$T/c8.sock') for _ in range(40)]
open('$T/forty.up', 'w').close()
time.sleep(30)
" &
forty=$!
wait_until 30 test -e "$T/forty.up" || fail "the 40 control clients did not connect"
timeout 10 "$PORTSHARE" status --control "$T/c8.sock" >/dev/null || fail "no status with 40 control clients open under ulimit -n 64"
kill "$forty"; wait "$forty" 2>/dev/null || true
kill -0 "$SUP_PID" || fail "the supervisor is gone with 40 control clients under ulimit -n 64: $(tail -3 "$T/c8.log")"
! grep -q poll_failed "$T/c8.log" || fail "poll failed: $(grep poll_failed "$T/c8.log")"
ctl c8 stop >/dev/null || fail "stop failed"
echo "PASS: 40 control clients under ulimit -n 64 with --metrics and --agent: the supervisor serves on"

# poll(2) failing (injected by strace): EINVAL/ENOMEM are tried again, any
# other error stops the supervisor with exit 6 and a reason, never 0
if command -v strace >/dev/null && strace -o /dev/null true 2>/dev/null; then
    # LeakSanitizer (a sanitizer build) cannot run under a tracer
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
    rc=0
    timeout 30 strace -o /dev/null -e trace=poll -e inject=poll:error=EBADF:when=5 \
        "$PORTSHARE" run --name c9 --control "$T/c9.sock" -l 127.0.0.1:0 -w 1 -- "$TESTWORKER" 2>"$T/c9.log" || rc=$?
    [ "$rc" = 6 ] || fail "poll failing with EBADF: exit $rc, want 6: $(tail -3 "$T/c9.log")"
    grep -q 'poll_failed: poll: Bad file descriptor; stopping' "$T/c9.log" && grep -q 'fatal: the event loop failed' "$T/c9.log" ||
        fail "poll failing with EBADF: no reason logged: $(tail -3 "$T/c9.log")"
    timeout 30 strace -o /dev/null -e trace=poll -e inject=poll:error=EINVAL:when=4..6 \
        "$PORTSHARE" run --name c9 --control "$T/c9.sock" -l 127.0.0.1:0 -w 1 -- "$TESTWORKER" 2>"$T/c9b.log" &
    c9=$!
    wait_until 20 grep -q 'trying again' "$T/c9b.log" || fail "poll failing with EINVAL: $(tail -3 "$T/c9b.log")"
    wait_until 20 "$PORTSHARE" status --control "$T/c9.sock" >/dev/null || fail "no status after poll failed with EINVAL"
    "$PORTSHARE" stop --control "$T/c9.sock" >/dev/null || fail "stop after poll failed with EINVAL"
    rc=0; wait "$c9" || rc=$?
    [ "$rc" = 0 ] || fail "stop after poll failed with EINVAL: exit $rc"
    echo "PASS: poll failing with EBADF stops the supervisor with exit 6 and a reason; with EINVAL it goes on"
else
    note "strace cannot trace here: poll failures not injected"
fi
