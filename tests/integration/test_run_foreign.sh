#!/usr/bin/env bash
# A socket of the supervisor's own uid that joins a listener's reuseport
# group after start (socat with so-reuseport) never gets a connection, and
# is reported (a warning in the log, "foreign" in status) while it is there:
#  - eBPF steering, no slot ready: the program picks one of our sockets,
#    where the connection waits for the next worker (it used to let the
#    kernel hash over every socket of the group, the foreign one too);
#  - classic BPF, after a scale-up: the program's socket indexes count the
#    foreign member (the kernel numbers the group's sockets in join order,
#    and the new slot's socket came after it: the foreign socket got the
#    new slot's share).
. "$(dirname "$0")/sup_lib.sh"
need socat
[ "$(id -u)" = 0 ] || skip "needs root (eBPF steering, and a foreign socket of the same uid); running as uid $(id -u)"

# foreign NAME: socat joins 127.0.0.1:$PORT's group and writes whatever it
# gets to $T/NAME.got (each connection is answered nothing and closed)
foreign() {
    : >"$T/$1.got"
    socat -u "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseport,reuseaddr,fork" "OPEN:$T/$1.got,append" 2>"$T/$1.err" &
    FOREIGN_PID=$!
    SUP_PIDS+=("$FOREIGN_PID")
    wait_until 5 bash -c "ss -Hltn 'sport = :$PORT' | grep -q ." || fail "socat did not listen"
}
foreign_count() { status_json "$1" | jq '.listeners[0].foreign'; }

# ---- eBPF, no slot ready ----
if (need_ebpf) >/dev/null 2>&1; then
    "$PORTSHARE" run --name fe --control "$T/fe.sock" -l 127.0.0.1:0 -w 2 --steering ebpf \
        --ready notify -- "$TESTWORKER" --never-ready 2>"$T/fe.log" &
    SUP_PID=$!
    SUP_PIDS+=("$SUP_PID")
    wait_until 10 grep -q 'listening on tcp://' "$T/fe.log" || fail "no listener: $(cat "$T/fe.log")"
    PORT=$(grep -o 'listening on tcp://[^ ]*' "$T/fe.log" | head -1 | sed 's/.*://')
    wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/fe.sock' | jq -e '[.slots[] | select(.pid > 0)] | length == 2'" ||
        fail "workers did not start"
    foreign fe
    wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/fe.sock' | jq -e '.listeners[0].foreign == 1'" ||
        fail "the foreign member is not in status: $(status_json fe | jq -c .listeners)"
    grep -q ' warn foreign_member: .*socat' "$T/fe.log" || fail "no warning naming socat: $(grep foreign "$T/fe.log")"
    # no slot is ready: every connection must wait in one of our queues
    "$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 40 --requests 40 --timeout 3000 --json \
        >"$T/fe.json" 2>/dev/null || true
    got=$(grep -c 'GET' "$T/fe.got" || true)
    note "eBPF, no slot ready: $(jq -c '{sent, ok, failed}' "$T/fe.json"), the foreign socket got $got"
    [ "$got" = 0 ] || fail "the foreign socket got $got of 40 connections while no slot was ready (eBPF)"
    kill "$FOREIGN_PID"; wait "$FOREIGN_PID" 2>/dev/null || true
    wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/fe.sock' | jq -e '.listeners[0].foreign == 0'" ||
        fail "the foreign member is still reported after it left: $(status_json fe | jq -c .listeners)"
    grep -q 'foreign_member_gone' "$T/fe.log" || fail "its leaving is not logged"
    ctl fe stop >/dev/null
    echo "PASS: eBPF, no slot ready: 0 of 40 connections to a foreign member; reported while it was there"
else
    note "no eBPF steering here: that half is skipped"
fi

# ---- classic BPF, scale-up after the foreign member joined ----
sup_start fc -l 127.0.0.1:0 -w 2 --steering cbpf -- "$TESTWORKER"
foreign fc
wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/fc.sock' | jq -e '.listeners[0].foreign == 1'" ||
    fail "the foreign member is not in status: $(status_json fc | jq -c .listeners)"
ctl fc status | grep -q 'foreign' || fail "status text does not show it: $(ctl fc status)"
out=$(ctl fc scale 3) || fail "scale 3: $out"
wait_until 15 all_ready fc 3 || fail "not 3 ready: $(status_json fc | jq -c .slots)"
"$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 10 --requests 150 --timeout 3000 --json \
    >"$T/fc.json" 2>/dev/null || true
got=$(grep -c 'GET' "$T/fc.got" || true)
note "cbpf after scale 2->3: $(jq -c '{sent, ok, failed, by_pid}' "$T/fc.json"), the foreign socket got $got"
[ "$got" = 0 ] || fail "the foreign socket got $got of 150 connections after a scale-up (cbpf)"
[ "$(jq '.by_pid | keys | length' "$T/fc.json")" = 3 ] || fail "not every slot answered: $(jq -c .by_pid "$T/fc.json")"
echo "PASS: classic BPF, scale-up with a foreign member: 0 of 150 connections to it, every slot served"

# it leaves: the last socket of the group (the new slot's) moves into its
# index; a scale-up after that still reaches every slot
kill "$FOREIGN_PID"; wait "$FOREIGN_PID" 2>/dev/null || true
wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/fc.sock' | jq -e '.listeners[0].foreign == 0'" ||
    fail "the foreign member is still reported after it left: $(status_json fc | jq -c .listeners)"
out=$(ctl fc scale 4) || fail "scale 4: $out"
wait_until 15 all_ready fc 4 || fail "not 4 ready: $(status_json fc | jq -c .slots)"
"$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 10 --requests 200 --timeout 3000 --json \
    >"$T/fc2.json" 2>/dev/null || fail "requests failed after the foreign member left: $(cat "$T/fc2.json")"
note "cbpf, foreign member gone, scale 3->4: $(jq -c '{sent, ok, failed, by_pid}' "$T/fc2.json")"
[ "$(jq '.by_pid | keys | length' "$T/fc2.json")" = 4 ] || fail "not every slot answered: $(jq -c .by_pid "$T/fc2.json")"
echo "PASS: classic BPF, after the foreign member left: scale 3->4, every slot served, 0 failed"
