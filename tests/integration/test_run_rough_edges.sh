#!/usr/bin/env bash
# Issue 13, item 7 (a-c): `status` answers as soon as the port accepts (the
# control socket is created before anything listens); reload, scale,
# upgrade and stop answer one JSON object with --json; under journald
# (JOURNAL_STREAM names our stderr) every log line carries its sd-daemon
# priority prefix, and none does when it names another stream.
. "$(dirname "$0")/sup_lib.sh"

cat >"$T/worker.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" \$(cat "$T/mode")
EOS
chmod +x "$T/worker.sh"; : >"$T/mode"

# ---- (a) status as soon as the port accepts, 6 times ----
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for i in 1 2 3 4 5 6; do
    port=$(free_port)
    "$PORTSHARE" run --control "$T/early.sock" -l "127.0.0.1:$port" -w 2 -- "$T/worker.sh" 2>"$T/early.$i.log" &
    pid=$!; SUP_PIDS+=("$pid")
    end=$(( $(now_ms) + 10000 ))
    until accepts "$port"; do
        [ "$(now_ms)" -lt $end ] || fail "port $port never accepted: $(cat "$T/early.$i.log")"
        sleep 0.002
    done
    rc=0; "$PORTSHARE" status --control "$T/early.sock" >"$T/early.out" 2>&1 || rc=$?
    [ $rc = 0 ] || fail "try $i: status right after the port accepted: exit $rc: $(cat "$T/early.out")"
    kill -TERM "$pid"; wait "$pid" || true
done
ok "status succeeded 6 of 6 times at the first moment the port accepted"

# ---- (b) --json outcomes ----
sup_start js -l 127.0.0.1:0 -w 2 --ready-timeout 3s -- "$T/worker.sh"
out=$(ctl js reload --json) || fail "reload --json failed: $out"
jq -e '.ok == true and .command == "reload" and .generation == 2 and .workers == 2 and (.message | test("generation 2"))' <<<"$out" >/dev/null ||
    fail "reload --json: $out"
echo --crash-on-start >"$T/mode"
rc=0; out=$(ctl js reload --json) || rc=$?
[ $rc = 1 ] || fail "a rolled back reload --json exits $rc, want 1"
jq -e '.ok == false and .command == "reload" and .generation == 2 and (.message | test("rolled back"))' <<<"$out" >/dev/null ||
    fail "rolled back reload --json: $out"
: >"$T/mode"
out=$(ctl js scale 3 --json) || fail "scale --json failed: $out"
jq -e '.ok == true and .command == "scale" and .workers == 3' <<<"$out" >/dev/null || fail "scale --json: $out"
rc=0; ctl js scale 0 --json >/dev/null 2>"$T/err" || rc=$?
[ $rc = 2 ] || fail "scale 0 --json exits $rc, want 2 (usage)"
out=$(ctl js upgrade --json) || fail "upgrade --json failed: $out"
jq -e ".ok == true and .command == \"upgrade\" and .pid == $SUP_PID and .generation == 2" <<<"$out" >/dev/null ||
    fail "upgrade --json: $out"
out=$(ctl js stop --json) || fail "stop --json failed: $out"
jq -e '.ok == true and .command == "stop" and .message == "stopped"' <<<"$out" >/dev/null || fail "stop --json: $out"
rc=0; ctl js reload --json >/dev/null 2>&1 || rc=$?
[ $rc = 4 ] || fail "reload --json with no supervisor exits $rc, want 4"
ok "--json: reload (ok and rolled back, exit 1), scale, upgrade (same pid), stop answer one JSON object each"

# ---- (c) journald priority prefixes ----
: >"$T/jr.log"
stream=$(stat -c '%d:%i' "$T/jr.log")
JOURNAL_STREAM=$stream "$PORTSHARE" run --control "$T/jr.sock" -l 127.0.0.1:0 -w 1 --ready-timeout 3s -- "$T/worker.sh" 2>>"$T/jr.log" &
pid=$!; SUP_PIDS+=("$pid")
wait_until 20 grep -q 'ready: all' "$T/jr.log" || fail "not ready: $(cat "$T/jr.log")"
echo --crash-on-start >"$T/mode"
"$PORTSHARE" reload --control "$T/jr.sock" >/dev/null 2>&1 && fail "reload of a crashing program succeeded"
: >"$T/mode"
kill -TERM "$pid"; wait "$pid" || true
grep -v '^<[0-7]>' "$T/jr.log" | grep -v '^testworker' | grep . && fail "lines without a priority prefix under journald (above)"
grep -q '^<6>.* info listening: ' "$T/jr.log" || fail "info lines are not <6>: $(head -3 "$T/jr.log")"
grep -q '^<3>.* error reload_rolled_back: ' "$T/jr.log" || fail "the rollback is not logged at <3>: $(cat "$T/jr.log")"
# JSON log lines too; and nothing when JOURNAL_STREAM names another file
: >"$T/jr2.log"
JOURNAL_STREAM=$stream "$PORTSHARE" run --control "$T/jr2.sock" --log-format json -l 127.0.0.1:0 -w 1 -- "$T/worker.sh" 2>>"$T/jr2.log" &
pid=$!; SUP_PIDS+=("$pid")
wait_until 20 grep -q '"event":"ready"' "$T/jr2.log" || fail "not ready: $(cat "$T/jr2.log")"
kill -TERM "$pid"; wait "$pid" || true
grep -q '"event":"ready"' "$T/jr2.log" && ! grep -q '^<' "$T/jr2.log" ||
    fail "a prefix although JOURNAL_STREAM names another stream: $(head -2 "$T/jr2.log")"
: >"$T/jr3.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$T/jr3.log") "$PORTSHARE" run --control "$T/jr3.sock" --log-format json -l 127.0.0.1:0 -w 1 -- "$T/worker.sh" 2>>"$T/jr3.log" &
pid=$!; SUP_PIDS+=("$pid")
wait_until 20 grep -q '"event":"ready"' "$T/jr3.log" || fail "not ready: $(cat "$T/jr3.log")"
kill -TERM "$pid"; wait "$pid" || true
grep '"event"' "$T/jr3.log" | grep -qv '^<6>{' && fail "json lines without <6>: $(head -3 "$T/jr3.log")"
# the CLI's own fatal line too
: >"$T/jr4.log"
rc=0; JOURNAL_STREAM=$(stat -c '%d:%i' "$T/jr4.log") "$PORTSHARE" run --bogus 2>>"$T/jr4.log" || rc=$?
[ $rc = 2 ] && grep -q '^<3>portshare: fatal: unknown option' "$T/jr4.log" || fail "fatal line under journald: exit $rc, $(cat "$T/jr4.log")"
ok "journald: <6> info, <3> error, text and JSON lines; no prefix when JOURNAL_STREAM is another stream"
echo "PASS: rough edges (a) early status, (b) --json outcomes, (c) journald priorities"
