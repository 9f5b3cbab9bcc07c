#!/usr/bin/env bash
# Issue 13, item 7d: under socket activation, an adopted socket that has
# SO_REUSEPORT (a .socket unit with ReusePort=yes) keeps per-worker
# balancing: the supervisor opens the other slots' sockets beside it (same
# address, SO_REUSEPORT), each worker gets its own, the kernel spreads the
# load, and a reload under load loses nothing.  Without SO_REUSEPORT it
# stays one shared socket.  As root, a supervisor of another uid than the
# socket's creator cannot join the group and falls back to shared mode,
# saying so.  systemd-socket-activate cannot set SO_REUSEPORT, so a small
# python3 launcher plays systemd: bind, listen, fd 3, LISTEN_FDS=1,
# LISTEN_PID = its own pid, then exec (the pid stays the same).
. "$(dirname "$0")/sup_lib.sh"
need python3

cat >"$T/activate.py" <<'EOS'
import os, socket, sys
reuseport, portfile, argv = sys.argv[1] == "1", sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if reuseport:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
s.listen(512)
open(portfile, "w").write("%d\n" % s.getsockname()[1])
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)     # fd 3 across the exec, like systemd's
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
os.execve(argv[0], argv, env)  # same pid: LISTEN_PID stays right
EOS

cat >"$T/dumper.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" --dump "$T/dump.\$PORTSHARE_SLOT.\$PORTSHARE_GENERATION"
EOS
chmod +x "$T/dumper.sh"
val() { grep "^$2=" "$1" | head -1 | cut -d= -f2-; }

start_activated() { # start_activated NAME REUSEPORT [run options]
    local name=$1 rp=$2; shift 2
    python3 "$T/activate.py" "$rp" "$T/$name.port" "$PORTSHARE" run --name "$name" --control "$T/$name.sock" "$@" 2>"$T/$name.log" &
    SUP_PID=$!; SUP_PIDS+=("$SUP_PID")
    wait_until 20 grep -q 'ready: all' "$T/$name.log" || { cat "$T/$name.log" >&2; fail "$name: not ready"; }
    PORT=$(cat "$T/$name.port")
}

# ---- ReusePort=yes: 3 slots, 3 sockets in one reuseport group ----
start_activated rp 1 -w 3 -- "$T/dumper.sh"
grep -q "listening on tcp://127.0.0.1:$PORT (3 sockets, from systemd, reuseport)" "$T/rp.log" ||
    fail "did not open sockets beside the adopted one: $(grep listening "$T/rp.log")"
s=$(status_json rp)
jq -e '.listeners[0] | .inherited == true and .shared == false and (.sockets | length) == 3 and .name == "web"' <<<"$s" >/dev/null ||
    fail "status: $(jq -c .listeners <<<"$s")"
jq -e '[.listeners[0].sockets[].backlog] | all(. == 512)' <<<"$s" >/dev/null ||
    fail "the added sockets do not have the adopted socket's backlog: $(jq -c .listeners <<<"$s")"
wait_until 10 test -s "$T/dump.2.1" || fail "no dump of slot 2"
seen=""
for i in 0 1 2; do
    f=$T/dump.$i.1
    [ "$(val "$f" fd.3.addr)" = "tcp://127.0.0.1:$PORT" ] || fail "slot $i: fd 3 is $(val "$f" fd.3.addr)"
    [ "$(val "$f" fd.3.reuseport)" = 1 ] || fail "slot $i: no SO_REUSEPORT"
    seen="$seen $(val "$f" fd.3)"
done
[ "$(tr ' ' '\n' <<<"$seen" | grep . | sort -u | wc -l)" = 3 ] || fail "slots share sockets:$seen"
# the kernel spreads new connections over the three
load_start l1 --connect 127.0.0.1:$PORT --threads 1 --concurrency 6 --duration 60
ctl rp reload >/dev/null || fail "reload failed"
sleep 1
load_stop l1
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests failed across a reload: $RES"
load_start l2 --connect 127.0.0.1:$PORT --threads 1 --concurrency 6 --duration 60
sleep 1.5
load_stop l2
total=$(jq .ok <<<"$RES")
min=$(jq '[.by_pid[]] | min' <<<"$RES"); n=$(jq '.by_pid | length' <<<"$RES")
[ "$n" = 3 ] || fail "load reached $n workers, not 3: $RES"
[ $((min * 10)) -ge "$total" ] || fail "unbalanced: the least loaded worker got $min of $total: $(jq -c .by_pid <<<"$RES")"
ok "ReusePort=yes: 3 sockets beside systemd's, distinct per slot, backlog 512 kept, reload under load 0 failed, spread $(jq -c .by_pid <<<"$RES")"
ctl rp stop >/dev/null

# ---- no SO_REUSEPORT: one shared socket, as before ----
rm -f "$T"/dump.*
start_activated sh 0 -w 2 -- "$T/dumper.sh"
grep -q "listening on tcp://127.0.0.1:$PORT (1 socket, from systemd, shared)" "$T/sh.log" ||
    fail "a socket without SO_REUSEPORT: $(grep listening "$T/sh.log")"
wait_until 10 test -s "$T/dump.1.1" || fail "no dump of slot 1"
[ "$(val "$T/dump.0.1" fd.3)" = "$(val "$T/dump.1.1" fd.3)" ] || fail "shared: slots got different sockets"
ctl sh stop >/dev/null
ok "without SO_REUSEPORT: one shared socket"

# ---- another uid than the socket's creator: shared, with a warning ----
if [ "$(id -u)" != 0 ]; then
    note "SKIP part: the uid-mismatch fallback needs root"
else
    mkdir -p "$T/nobody"; chown nobody "$T/nobody"; chmod 700 "$T/nobody"; chmod o+x "$T"
    cat >"$T/asnobody.py" <<'EOS'
import os, pwd, sys
pw = pwd.getpwnam("nobody")
os.setgroups([]); os.setgid(pw.pw_gid); os.setuid(pw.pw_uid)
os.execv(sys.argv[1], sys.argv[1:])
EOS
    public_bins
    python3 "$T/activate.py" 1 "$T/nb.port" /usr/bin/python3 "$T/asnobody.py" "$PUB_PORTSHARE" run --name nb \
        --control "$T/nobody/nb.sock" -w 2 -- "$PUB_TESTWORKER" 2>"$T/nb.log" &
    nb=$!; SUP_PIDS+=($nb)   # the same pid through both execs
    wait_until 20 grep -q 'ready: all' "$T/nb.log" || { cat "$T/nb.log" >&2; fail "nb: not ready"; }
    grep -q 'adopt_shared: .* has SO_REUSEPORT, but no socket can join it' "$T/nb.log" || fail "no warning: $(cat "$T/nb.log")"
    grep -q "(1 socket, from systemd, shared)" "$T/nb.log" || fail "not shared: $(grep listening "$T/nb.log")"
    curl -sf "http://127.0.0.1:$(cat "$T/nb.port")/" | grep -q '^pid=' || fail "the shared fallback does not serve"
    # (its control socket does not answer root: a client trusts only its own uid or root)
    kill -TERM "$nb"; wait "$nb" || true
    ok "a supervisor of another uid: one shared socket and a warning"
fi
echo "PASS: ReusePort=yes sockets from systemd keep per-worker balancing"
