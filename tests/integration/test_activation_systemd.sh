#!/usr/bin/env bash
# test_activation_systemd.sh - Debian's systemd-socket-activate (the
# reference implementation of the giving side of sd_listen_fds(3)) hands
# sockets to OUR receiving side: tests/tools/activation_dump calls
# ps_listen_fds(), reports what it got, and answers real clients (socat) on
# every socket, which proves the descriptors work.
#
# Runs: three stream sockets (IPv4, unix path, IPv6) with --fdname; one
# datagram socket; and sockets without --fdname ("unknown").
set -euo pipefail

SSA=$(command -v systemd-socket-activate || true)
if [ -z "$SSA" ]; then
    echo "SKIP: systemd-socket-activate not found (Debian package 'systemd')"
    exit 77
fi
if ! command -v socat >/dev/null; then
    echo "SKIP: socat not found (Debian package 'socat')"
    exit 77
fi
DUMP=${PS_TOOLS:?PS_TOOLS not set}/activation_dump
[ -x "$DUMP" ] || { echo "FAIL: $DUMP is not built"; exit 1; }

tmp=$(mktemp -d /tmp/ps-ssa-XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    local f
    echo "FAIL: $*"
    for f in "$tmp"/*.out "$tmp"/*.err; do
        [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
    done
    exit 1
}

# expect RUN LINE: activation_dump's output for RUN has exactly this line
expect() {
    grep -qxF -- "$2" "$tmp/$1.out" || fail "$1: no line '$2'"
}

have_ipv6() {
    [ -r /proc/net/if_inet6 ] && grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6
}

# A port nobody listens on right now (the kernel's choice would be racy too;
# systemd-socket-activate refuses port 0).  Retried by the caller on EADDRINUSE.
random_port() {
    echo $((20000 + RANDOM % 40000))
}

# start RUN NSOCKETS ARGS...: start systemd-socket-activate with ARGS, wait
# until it listens on all NSOCKETS.  Returns 1 when it exited (port taken).
start() {
    local run=$1 want=$2 n
    shift 2
    "$SSA" "$@" >"$tmp/$run.out" 2>"$tmp/$run.err" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        n=$(grep -c '^Listening on' "$tmp/$run.err" || true)
        [ "$n" -ge "$want" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    fail "$run: systemd-socket-activate did not listen within 5 s"
}

# finish RUN: activation_dump served everyone and exited 0
finish() {
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && fail "$1: activation_dump still running after its clients"
    wait "$pid" || fail "$1: activation_dump exited with status $?"
}

# ask RUN SOCAT-ADDRESS WANT [LINGER]: one client, one request, the reply must
# be WANT.  A stream ends when the server closes; a datagram client has no
# end, so it lingers LINGER seconds (socat -t) for the answer.
ask() {
    local reply
    reply=$(printf 'hi\n' | timeout 5 socat -t "${4:-2}" - "$2" 2>"$tmp/$1.socat.err") ||
        fail "$1: socat $2 failed: $(cat "$tmp/$1.socat.err")"
    [ "$reply" = "$3" ] || fail "$1: $2 answered '$reply', expected '$3'"
}

# ---- 1: three stream sockets with names --------------------------------------
started=0
for _ in 1 2 3 4 5; do
    p1=$(random_port)
    p2=$((p1 + 1))
    args=(-l "127.0.0.1:$p1" -l "$tmp/s.sock")
    names=web:local
    nsock=2
    if have_ipv6; then
        args+=(-l "[::1]:$p2")
        names=web:local:v6
        nsock=3
    fi
    rm -f "$tmp/s.sock"
    if start stream "$nsock" "${args[@]}" --fdname="$names" "$DUMP" --serve "$nsock"; then
        started=1
        break
    fi
done
[ $started = 1 ] || fail "stream: could not bind after 5 attempts"

# the first connection makes systemd-socket-activate exec the program; it
# waits in the accept queue meanwhile and must still be answered
ask stream "TCP4:127.0.0.1:$p1" "hello web"
ask stream "UNIX-CONNECT:$tmp/s.sock" "hello local"
[ "$nsock" = 3 ] && ask stream "TCP6:[::1]:$p2" "hello v6"
finish stream

expect stream "env-before LISTEN_FDS=$nsock LISTEN_PID=self LISTEN_FDNAMES=$names"
expect stream "count $nsock"
expect stream "env-after cleared"
expect stream "fd 3 name=web socket=1 family=inet type=stream listening=1 cloexec=1 addr=tcp://127.0.0.1:$p1"
expect stream "fd 4 name=local socket=1 family=unix type=stream listening=1 cloexec=1 addr=unix:$tmp/s.sock"
if [ "$nsock" = 3 ]; then
    expect stream "fd 5 name=v6 socket=1 family=inet6 type=stream listening=1 cloexec=1 addr=tcp://[::1]:$p2"
else
    echo "note: no ::1 on this machine, IPv6 socket not covered"
fi
expect stream "served web"
expect stream "served local"

# ---- 2: a datagram socket ------------------------------------------------------
started=0
for _ in 1 2 3 4 5; do
    p3=$(random_port)
    if start dgram 1 --datagram -l "127.0.0.1:$p3" --fdname=dns "$DUMP" --serve 1; then
        started=1
        break
    fi
done
[ $started = 1 ] || fail "dgram: could not bind after 5 attempts"
ask dgram "UDP4:127.0.0.1:$p3" "hello dns" 0.3
finish dgram
expect dgram "count 1"
expect dgram "env-after cleared"
expect dgram "fd 3 name=dns socket=1 family=inet type=dgram listening=0 cloexec=1 addr=udp://127.0.0.1:$p3"

# ---- 3: no --fdname: every descriptor is "unknown" -------------------------------
rm -f "$tmp/a.sock" "$tmp/b.sock"
start unnamed 2 -l "$tmp/a.sock" -l "$tmp/b.sock" "$DUMP" --serve 1 || fail "unnamed: did not start"
ask unnamed "UNIX-CONNECT:$tmp/b.sock" "hello unknown"
finish unnamed
expect unnamed "env-before LISTEN_FDS=2 LISTEN_PID=self LISTEN_FDNAMES=(unset)"
expect unnamed "fd 3 name=unknown socket=1 family=unix type=stream listening=1 cloexec=1 addr=unix:$tmp/a.sock"
expect unnamed "fd 4 name=unknown socket=1 family=unix type=stream listening=1 cloexec=1 addr=unix:$tmp/b.sock"

echo "PASS: systemd-socket-activate -> ps_listen_fds: stream ($nsock sockets, names), datagram, unnamed"
