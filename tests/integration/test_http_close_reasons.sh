#!/usr/bin/env bash
# Every connection close goes through one function that takes a reason;
# the worker reports the counts per reason (X_PORTSHARE_CLOSES= next to its
# stats).  Each reason is provoked here with a real client and counted
# exactly once.
source "$(dirname "$0")/http_lib.sh"

make_www
start_worker w --header-timeout 1 --idle-timeout 1.5 "$WWW"

# wait until the counters say: done=A client=B timeout=C bad_request=D drain=E limit=F error=G
expect_closes() {
    local want=$1
    wait_until 5 bash -c "grep -o 'X_PORTSHARE_CLOSES=[^X]*' '$T/w.notify' | tail -1 | grep -q 'CLOSES=$want *\$'" ||
        fail "closes: want '$want', last report: $(grep -o 'X_PORTSHARE_CLOSES=[^X]*' "$T/w.notify" | tail -1)"
}

raw 'GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >/dev/null
expect_closes 'done=1 client=0 timeout=0 bad_request=0 drain=0 limit=0 error=0'
ok "Connection: close -> done"

# curl keeps the connection alive and then goes away: the client closed it
curl -sf "$(URL /a.txt)" >/dev/null
expect_closes 'done=1 client=1 timeout=0 bad_request=0 drain=0 limit=0 error=0'
ok "client went away -> client"

# a request, then silence past the idle timeout
{ printf 'GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n'; sleep 3; } | socat -t 3 - "TCP:127.0.0.1:$PORT" >/dev/null
expect_closes 'done=1 client=1 timeout=1 bad_request=0 drain=0 limit=0 error=0'
ok "idle past --idle-timeout -> timeout"

raw 'BREW / HTCPCP/1.0\r\n\r\n' >/dev/null
expect_closes 'done=1 client=1 timeout=1 bad_request=1 drain=0 limit=0 error=0'
ok "framing error -> bad_request (after its 400 and a lingering close)"

# after an error the worker reads and drops at most 256 KiB more
{ printf 'BREW / HTCPCP/1.0\r\n\r\n'; head -c 600000 /dev/zero; sleep 1; } |
    socat -t 3 - "TCP:127.0.0.1:$PORT" >/dev/null 2>&1 || true
expect_closes 'done=1 client=1 timeout=1 bad_request=1 drain=0 limit=1 error=0'
ok "a client that keeps sending after an error -> limit"

stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exited $WSTATUS"

# an idle keep-alive connection when the worker drains (a worker whose idle
# timeout cannot come first)
start_worker d --idle-timeout 60 "$WWW"
mkfifo "$T/hold"
socat -t 5 - "TCP:127.0.0.1:$PORT" <"$T/hold" >"$T/held.out" &
SPID=$!
exec 7>"$T/hold"
printf 'GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n' >&7
wait_until 5 grep -q hello "$T/held.out" || fail "held connection not answered"
stop_worker
exec 7>&-
wait "$SPID" || true
[ "$WSTATUS" = 0 ] || fail "worker exited $WSTATUS"
# the final report goes out as the worker exits
grep -o 'X_PORTSHARE_CLOSES=[^X]*' "$T/d.notify" | tail -1 | grep -q 'CLOSES=done=0 client=0 timeout=0 bad_request=0 drain=1 limit=0 error=0 *$' ||
    fail "drain not counted: $(grep -o 'X_PORTSHARE_CLOSES=[^X]*' "$T/d.notify" | tail -1)"
ok "idle connection at drain -> drain"
