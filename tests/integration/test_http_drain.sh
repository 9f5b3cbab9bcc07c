#!/usr/bin/env bash
# test_http_drain.sh - SIGTERM drains the worker: a slow download in
# flight completes byte for byte; idle keep-alive connections and ones
# that have not sent a request yet get a short grace (1 s) in which a
# request is still answered, with "Connection: close", and are closed
# after it; STOPPING=1 is sent; the worker exits 0 once the download is
# done.  The listener stays open in the launcher (as in the supervisor),
# so the worker must close its copy, never shut it down: a client that
# connects during the drain is still queued, not refused.
source "$(dirname "$0")/http_lib.sh"

make_www
truncate -s 24M "$WWW/large.bin"
start_worker w "$WWW"

# a slow download: 24 MiB at 4 MB/s, 6 s.  (Larger than what loopback socket
# buffers hold: a body that fits in them is read at once whatever the rate.)
# It must outlast the grace checks and the late connect below: once it is
# done the worker exits, the launcher with it, and its listener is gone (at
# 8 MB/s a loaded machine got there first: "connection refused").
curl -s --limit-rate 4M -o "$T/large.out" -w '%{http_code} %{size_download}\n' \
    "$(URL /large.bin)" >"$T/curl.result" &
CURL=$!
wait_until 5 test -s "$T/large.out" || fail "the download did not start"

# two idle keep-alive connections (one request answered each) and a silent one
open_idle() { # open_idle NAME: sets the variable NAME to the descriptor
    local fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n' >&$fd
    ( cat <&$fd >"$T/$1.out"; now_ms >"$T/$1.closed" ) &
    printf -v "$1" %d "$fd"
}
open_idle idle
open_idle asks
exec {fresh}<>"/dev/tcp/127.0.0.1/$PORT"
( cat <&$fresh >"$T/fresh.out"; now_ms >"$T/fresh.closed" ) &
wait_until 3 grep -q hello "$T/idle.out" || fail "the idle connection's first response"
wait_until 3 grep -q hello "$T/asks.out" || fail "the other idle connection's first response"
sleep 0.2

kill -0 $CURL 2>/dev/null || fail "the download was over before SIGTERM (too fast to test)"
t_term=$(now_ms)
kill -TERM "$WPID"
sleep 0.1
# a request racing the SIGTERM on a kept-alive connection is still answered
printf 'GET /data.json HTTP/1.1\r\nHost: t\r\n\r\n' >&$asks
wait_until 3 test -s "$T/asks.closed" || fail "the connection that asked was not closed"
grep -q '{"k":1}' "$T/asks.out" || fail "the request during the drain was not answered"
grep -q $'^Connection: close\r$' "$T/asks.out" || fail "the answer during the drain does not close"
d_asks=$(( $(cat "$T/asks.closed") - t_term ))
wait_until 3 test -s "$T/idle.closed" || fail "the idle keep-alive connection was not closed"
d_idle=$(( $(cat "$T/idle.closed") - t_term ))
[ $d_idle -le 2000 ] || fail "idle connection closed $d_idle ms after SIGTERM"
wait_until 3 test -s "$T/fresh.closed" || fail "the silent connection was not closed"
d_fresh=$(( $(cat "$T/fresh.closed") - t_term ))
[ $d_fresh -le 2000 ] || fail "silent connection closed $d_fresh ms after SIGTERM"
grep -q STOPPING=1 "$T/w.notify" || fail "no STOPPING=1"

# a client arriving now is queued on the launcher's listener, not refused
kill -0 $CURL 2>/dev/null || fail "the download was over before the late connect (too fast to test)"
exec {late}<>"/dev/tcp/127.0.0.1/$PORT" || fail "connection refused during the drain"

wait $CURL || fail "the download failed during the drain"
t_done=$(now_ms)
[ "$(cat "$T/curl.result")" = "200 25165824" ] || fail "download: $(cat "$T/curl.result")"
cmp -s "$T/large.out" "$WWW/large.bin" || fail "the drained download differs"
WSTATUS=0
wait "$LPID" || WSTATUS=$?
[ "$WSTATUS" = 0 ] || fail "worker exit status $WSTATUS after the drain"
ok "SIGTERM: a request on a kept-alive connection answered with close ($d_asks ms)," \
   "idle keep-alive closed after $d_idle ms, silent connection after $d_fresh ms," \
   "24 MiB download in flight completed $(( t_done - t_term )) ms later, STOPPING=1, exit 0"
exec {idle}>&- {asks}>&- {fresh}>&- {late}>&-
