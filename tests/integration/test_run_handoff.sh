#!/usr/bin/env bash
# Issue 4, test 1: each worker receives exactly its sockets at fd 3.. with
# LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES / PORTSHARE_SLOT /
# PORTSHARE_GENERATION / NOTIFY_SOCKET, and no other descriptor of the
# supervisor's; socket i is distinct per slot in reuseport mode, and the
# same for every slot in shared mode; slot i of the next generation gets
# a TCP socket of its own on the same address under eBPF steering (the
# same socket i under classic BPF), and a UDP socket of its own where the
# flow table steers (else the same one).  lighttpd from Debian runs unchanged as a worker.
. "$(dirname "$0")/sup_lib.sh"

cat >"$T/dumper.sh" <<EOS
#!/bin/sh
exec "$TESTWORKER" --dump "$T/dump.\$PORTSHARE_SLOT.\$PORTSHARE_GENERATION"
EOS
chmod +x "$T/dumper.sh"

val() { grep "^$2=" "$1" | head -1 | cut -d= -f2-; }

check_dump() { # check_dump FILE SLOT GEN
    local f=$1
    [ -s "$f" ] || fail "no dump $f"
    [ "$(val "$f" fds)" = "0 1 2 3 4" ] || fail "$f: worker holds descriptors '$(val "$f" fds)', expected exactly 0 1 2 3 4"
    [ "$(val "$f" env.LISTEN_FDS)" = 2 ] || fail "$f: LISTEN_FDS=$(val "$f" env.LISTEN_FDS)"
    [ "$(val "$f" env.LISTEN_PID)" = "$(val "$f" pid)" ] || fail "$f: LISTEN_PID is not the worker's own pid"
    [ "$(val "$f" env.LISTEN_FDNAMES)" = "web:dns" ] || fail "$f: LISTEN_FDNAMES=$(val "$f" env.LISTEN_FDNAMES)"
    [ "$(val "$f" env.PORTSHARE_SLOT)" = "$2" ] || fail "$f: PORTSHARE_SLOT=$(val "$f" env.PORTSHARE_SLOT)"
    [ "$(val "$f" env.PORTSHARE_GENERATION)" = "$3" ] || fail "$f: PORTSHARE_GENERATION wrong"
    val "$f" env.NOTIFY_SOCKET | grep -q '^@portshare/' || fail "$f: NOTIFY_SOCKET=$(val "$f" env.NOTIFY_SOCKET)"
    [ "$(val "$f" fd.3.type)" = stream ] && [ "$(val "$f" fd.3.listening)" = 1 ] || fail "$f: fd 3 is not a listening stream socket"
    [ "$(val "$f" fd.3.addr)" = "tcp://127.0.0.1:$PORT" ] || fail "$f: fd 3 is $(val "$f" fd.3.addr)"
    [ "$(val "$f" fd.4.type)" = dgram ] || fail "$f: fd 4 is not the UDP socket"
    [ "$(val "$f" listen_fds)" = 2 ] || fail "$f: ps_listen_fds() returned $(val "$f" listen_fds)"
    [ "$(val "$f" ppid)" = "$SUP_PID" ] || fail "$f: parent is not the supervisor"
}

# ---- reuseport mode ----
sup_start ho -l web=tcp://127.0.0.1:0 -l dns=udp://127.0.0.1:0 -w 2 -- "$T/dumper.sh"
wait_until 5 test -s "$T/dump.1.1"
check_dump "$T/dump.0.1" 0 1
check_dump "$T/dump.1.1" 1 1
[ "$(val "$T/dump.0.1" fd.3.reuseport)" = 1 ] || fail "reuseport mode: SO_REUSEPORT not set on the worker's socket"
s0=$(val "$T/dump.0.1" fd.3); s1=$(val "$T/dump.1.1" fd.3)
[ "$s0" != "$s1" ] || fail "reuseport mode: slots 0 and 1 share one socket ($s0)"
ctl ho reload >/dev/null || fail "reload failed"
wait_until 5 test -s "$T/dump.0.2"
check_dump "$T/dump.0.2" 0 2
# with eBPF steering a generation has TCP sockets of its own (the old one
# is never steered to again once the new one serves); with classic BPF,
# nothing can move a queue, and the next generation gets the same socket
s0n=$(val "$T/dump.0.2" fd.3)
[ "$(val "$T/dump.0.2" fd.3.addr)" = "tcp://127.0.0.1:$PORT" ] || fail "generation 2's fd 3 is $(val "$T/dump.0.2" fd.3.addr)"
if [ "$(status_json ho | jq -r .steering)" = ebpf ]; then
    [ "$s0n" != "$s0" ] || fail "eBPF steering: generation 2 of slot 0 got generation 1's socket ($s0)"
    own="own socket"
else
    [ "$s0n" = "$s0" ] || fail "generation 2 of slot 0 got another socket than generation 1"
    own="same socket"
fi
# UDP: with the flow table a generation has sockets of its own too (its
# flows stay with the old one's while that lives)
if [ "$(status_json ho | jq -r '.listeners[1].steering')" = flow ]; then
    [ "$(val "$T/dump.0.2" fd.4)" != "$(val "$T/dump.0.1" fd.4)" ] || fail "flow table: generation 2 of slot 0 got generation 1's UDP socket"
    [ "$(val "$T/dump.0.2" fd.4.addr)" = "$(val "$T/dump.0.1" fd.4.addr)" ] || fail "generation 2's UDP socket is on $(val "$T/dump.0.2" fd.4.addr)"
    own="$own, UDP: own socket"
else
    [ "$(val "$T/dump.0.2" fd.4)" = "$(val "$T/dump.0.1" fd.4)" ] || fail "UDP socket of slot 0 changed across the reload"
fi
# the supervisor itself holds every socket the serving workers hold
wait_until 5 test -s "$T/dump.1.2"
for s in "$s0n" "$(val "$T/dump.1.2" fd.3)"; do
    ls -l /proc/$SUP_PID/fd | grep -qF "$s" || fail "the supervisor does not hold $s"
done
echo "hello" | socat -t 2 - UDP:127.0.0.1:$(val "$T/dump.0.1" fd.4.addr | sed 's/.*://') | grep -q "^pid=" ||
    fail "no UDP echo from a worker"
ctl ho stop >/dev/null
echo "PASS: reuseport mode: exactly fds 0-4, env right, distinct sockets per slot, TCP: $own for generation 2"

# ---- shared mode ----
rm -f "$T"/dump.*
sup_start sh -l web=tcp://127.0.0.1:0 -l dns=udp://127.0.0.1:0 -w 2 --mode shared -- "$T/dumper.sh"
wait_until 5 test -s "$T/dump.1.1"
check_dump "$T/dump.0.1" 0 1
check_dump "$T/dump.1.1" 1 1
[ "$(val "$T/dump.0.1" fd.3)" = "$(val "$T/dump.1.1" fd.3)" ] || fail "shared mode: slots got different sockets"
[ "$(val "$T/dump.0.1" fd.3.reuseport)" = 0 ] || fail "shared mode: SO_REUSEPORT set on a shared socket"
ctl sh stop >/dev/null
echo "PASS: shared mode: one socket for every slot"

# ---- lighttpd, unchanged, as the worker ----
command -v lighttpd >/dev/null || skip "lighttpd is not installed"
lighttpd_site
sup_start lt -l 127.0.0.1:0 -w 2 --ready-delay 300ms --drain-signal INT -- lighttpd -D -f "$T/lighttpd.conf"
[ "$(curl -sf "http://127.0.0.1:$PORT/")" = "served by lighttpd" ] || fail "lighttpd does not serve through portshare"
load_start load --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 60
for i in 1 2 3; do ctl lt reload >/dev/null || fail "reload of lighttpd failed"; done
load_stop load
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests to lighttpd failed across reloads: $RES"
ctl lt stop >/dev/null
echo "PASS: lighttpd serves as a worker; 3 reloads under load, $(jq .sent <<<"$RES") requests, 0 failed"
