#!/usr/bin/env bash
# test_http_timeouts.sh - the worker's limits against real slow clients:
# a slow-loris client (one byte every 0.2 s), a connection that never
# sends, and an idle keep-alive connection are each dropped on time while
# other clients are served meanwhile; --max-connections makes a client
# wait in the accept queue until a slot frees; out of descriptors (EMFILE)
# the worker pauses accepting instead of spinning, and recovers.
source "$(dirname "$0")/http_lib.sh"

make_www
start_worker w --header-timeout 2 --idle-timeout 1 "$WWW"

# watch FD NAME: in the background, copy what the server sends on FD to
# $T/NAME.out and write the time it closed the connection to $T/NAME.closed
watch() {
    ( cat <&"$1" >"$T/$2.out"; now_ms >"$T/$2.closed" ) &
}
closed_after() { # closed_after NAME START-MS: ms between START and the close
    echo $(( $(cat "$T/$1.closed") - $2 ))
}
within() { # within NAME START LOW HIGH
    local d; d=$(closed_after "$1" "$2")
    [ "$d" -ge "$3" ] && [ "$d" -le "$4" ] || fail "$1 closed after $d ms, expected $3..$4"
    echo "$d"
}

t0=$(now_ms)
exec {loris}<>"/dev/tcp/127.0.0.1/$PORT"
exec {fresh}<>"/dev/tcp/127.0.0.1/$PORT"
exec {idle}<>"/dev/tcp/127.0.0.1/$PORT"
watch $loris loris
watch $fresh fresh
printf 'GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n' >&$idle
t_idle=$(now_ms)
watch $idle idle
# the slow loris: a valid request head, one byte at a time, never finished in time
( trap '' PIPE
  req=$'GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Slow: '$(head -c 60 /dev/zero | tr '\0' s)$'\r\n\r\n'
  for (( i = 0; i < ${#req}; i++ )); do
      printf '%s' "${req:i:1}" >&$loris 2>/dev/null || exit 0
      sleep 0.2
  done ) &
WRITER=$!

# meanwhile the worker serves others, promptly
for i in 1 2 3 4 5; do
    [ "$(curl -s -m 1 "$(URL /a.txt)")" = hello ] || fail "request $i during the slow clients"
    sleep 0.4
done
wait_until 5 test -s "$T/loris.closed" || fail "slow loris never dropped"
wait_until 5 test -s "$T/fresh.closed" || fail "silent connection never dropped"
wait_until 5 test -s "$T/idle.closed" || fail "idle keep-alive connection never dropped"
kill "$WRITER" 2>/dev/null || true
d1=$(within loris "$t0" 1900 3500)
[ ! -s "$T/loris.out" ] || fail "the slow loris got a response: $(head -1 "$T/loris.out")"
d2=$(within fresh "$t0" 1900 3500)
d3=$(within idle "$t_idle" 900 2500)
grep -q '^hello' <(tail -c 5 "$T/idle.out") || fail "the idle client's response: $(cat "$T/idle.out")"
exec {loris}>&- {fresh}>&- {idle}>&-
ok "header timeout 2 s: slow loris dropped after $d1 ms, silent connection after $d2 ms;" \
   "idle timeout 1 s: keep-alive dropped $d3 ms after its response; 5 others served meanwhile"
stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exit status $WSTATUS"

# ---- --max-connections: the third client waits for a free slot -----------------
start_worker max --max-connections 2 "$WWW"
exec {c1}<>"/dev/tcp/127.0.0.1/$PORT"
exec {c2}<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.3
t0=$(now_ms)
curl -s -m 5 -o "$T/max.out" "$(URL /a.txt)" {c1}>&- {c2}>&- &  # (curl must not hold them)
CURL=$!
sleep 1
[ ! -s "$T/max.out" ] || fail "a third connection was served while 2 were open (--max-connections 2)"
exec {c1}>&-
wait $CURL || fail "the third client failed"
waited=$(( $(now_ms) - t0 ))
[ "$(cat "$T/max.out")" = hello ] || fail "the third client's response"
exec {c2}>&-
ok "--max-connections 2: a third client waited ${waited} ms in the queue, served once one closed"
stop_worker

# ---- EMFILE: pause accepting, do not spin ------------------------------------------
command -v prlimit >/dev/null || skip "prlimit (util-linux) is not installed"
WRAP=(prlimit --nofile=24:24)
start_worker emfile "$WWW"
WRAP=()
conns=()
for i in $(seq 30); do
    exec {c}<>"/dev/tcp/127.0.0.1/$PORT"
    conns+=("$c")
done
sleep 0.5
# at its limit: some of the 30 connections still wait in the accept queue
socks=$(ls -l "/proc/$WPID/fd" | grep -c 'socket:')
[ "$socks" -lt 30 ] || fail "the worker accepted all 30 connections with 24 descriptors"
c0=$(cpu_ticks "$WPID"); sleep 1; c1=$(cpu_ticks "$WPID")
[ $(( c1 - c0 )) -le 20 ] || fail "out of descriptors the worker used $(( c1 - c0 )) ticks in 1 s: spinning"
for c in "${conns[@]}"; do exec {c}>&-; done
[ "$(curl -s -m 3 "$(URL /a.txt)")" = hello ] || fail "no recovery after EMFILE"
ok "EMFILE: at its descriptor limit ($socks sockets) the worker used $(( c1 - c0 )) ticks in 1 s, and recovered"
stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exit status $WSTATUS"
