#!/usr/bin/env bash
# --watchdog: workers get WATCHDOG_USEC/WATCHDOG_PID (sd_watchdog_enabled(3));
# a ready worker that keeps sending WATCHDOG=1 is left alone, one that goes
# silent gets SIGABRT and its slot restarts, and WATCHDOG=trigger fails at once.
. "$(dirname "$0")/sup_lib.sh"
command -v python3 >/dev/null || skip "python3 is not installed"

# a worker speaking sd_notify from its own pid (the supervisor trusts only that)
cat >"$T/wd.py" <<'EOS'
import os, socket, sys, threading, time
mode = sys.argv[1]
listener = socket.socket(fileno=3)
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def notify(msg): note.sendto(msg.encode(), addr)
notify("READY=1")
def pinger():
    while True:
        time.sleep(0.2)
        notify("WATCHDOG=1")
if mode == "ping":
    threading.Thread(target=pinger, daemon=True).start()
elif mode == "trigger":
    time.sleep(0.3)
    notify("WATCHDOG=trigger")
while True:
    c, _ = listener.accept()
    c.recv(4096)
    body = "usec=%s pid=%s self=%d\n" % (os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID"), os.getpid())
    c.sendall(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)).encode())
    c.close()
EOS

restarts() { status_json "$1" | jq '[.slots[].restarts] | add'; }

# pinging workers survive
sup_start ping -l 127.0.0.1:0 -w 2 --watchdog 1s -- python3 "$T/wd.py" ping
body=$(curl -sf "http://127.0.0.1:$PORT/") || fail "no answer"
echo "$body" | grep -q "^usec=1000000 " || fail "WATCHDOG_USEC not passed: $body"
[ "$(echo "$body" | sed 's/.* pid=\([0-9]*\) self=\([0-9]*\)/\1 \2/' | awk '{print ($1 == $2)}')" = 1 ] ||
    fail "WATCHDOG_PID is not the worker's pid: $body"
before=$(sup_worker_pids ping | tr '\n' ' ')
sleep 3
[ "$(restarts ping)" = 0 ] || fail "pinging workers were restarted: $(status_json ping | jq -c .slots)"
[ "$(sup_worker_pids ping | tr '\n' ' ')" = "$before" ] || fail "pinging workers changed"
echo "PASS: workers that send WATCHDOG=1 every 200 ms run on for 3 s with --watchdog 1s"

# silent workers are aborted and restarted
sup_start silent -l 127.0.0.1:0 -w 1 --watchdog 1s -- python3 "$T/wd.py" silent
wait_until 10 bash -c "[ \$('$PORTSHARE' status --json --control '$T/silent.sock' | jq '.slots[0].restarts') -ge 2 ]" ||
    fail "a silent worker was not restarted: $(status_json silent | jq -c .slots)"
grep -q 'watchdog: worker .* sent no WATCHDOG=1 for 1000 ms: SIGABRT' "$T/silent.log" || fail "no watchdog log line"
grep -q 'exited with signal 6' "$T/silent.log" || fail "the silent worker did not die of SIGABRT"
echo "PASS: a worker silent for 1 s got SIGABRT and was restarted"

# WATCHDOG=trigger
sup_start trig -l 127.0.0.1:0 -w 1 --watchdog 30s -- python3 "$T/wd.py" trigger
wait_until 5 grep -q 'watchdog: worker' "$T/trig.log" || fail "WATCHDOG=trigger did not fail the worker"
echo "PASS: WATCHDOG=trigger fails the worker at once"
