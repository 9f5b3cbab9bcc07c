#!/usr/bin/env bash
# test_bench_tools.sh - the benchmark's own programs do what bench/run
# relies on: bench_limit answers keep-alive, connection-close, pipelined and
# HTTP/1.0 requests and drains on SIGTERM; bench_client counts answers and
# each kind of failure it reports (refused, EOF, timeout, non-2xx) and holds
# its rate; bench_distribution counts every connection.  The bench targets
# are not part of `all`, so this builds them in the current build directory
# (under ASan+UBSan in the sanitizer build).
. "$(dirname "$0")/common.sh"

: "${PS_BUILD_DIR:?PS_BUILD_DIR must name the build directory}"
need curl socat

T=$(mktemp -d /tmp/ps-benchtools.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$T"
}
trap cleanup EXIT

cmake --build "$PS_BUILD_DIR" --target bench_limit bench_client bench_distribution \
    >"$T/build.log" 2>&1 || { tail -20 "$T/build.log" >&2; fail "building the bench tools"; }
B=$PS_BUILD_DIR/bench

json() { grep -o "\"$1\":[0-9.]*" "$2" | head -1 | cut -d: -f2; }

# start_limit WORKERS [OPTION]: sets PORT and LPID
start_limit() {
    "$B/bench_limit" -l 127.0.0.1:0 -w "$1" ${2:-} >"$T/limit.out" 2>&1 &
    LPID=$!
    PIDS+=("$LPID")
    for _ in $(seq 100); do
        PORT=$(sed -n 's/.*listening on tcp:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$T/limit.out" 2>/dev/null || true)
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    fail "bench_limit did not say where it listens: $(cat "$T/limit.out")"
}

start_limit 2
URL=http://127.0.0.1:$PORT/

# keep-alive: two requests on one connection
curl -sv --max-time 5 "$URL" "$URL" >"$T/ka.body" 2>"$T/ka.err"
[ "$(cat "$T/ka.body")" = hellohello ] || fail "keep-alive bodies: $(cat "$T/ka.body")"
grep -q "Re-using existing connection" "$T/ka.err" || fail "the connection was not kept alive"
ok "keep-alive: two answers on one connection"

# connection-close: the header comes back and the server closes
curl -si --max-time 5 -H "Connection: close" "$URL" >"$T/close.txt"
grep -qi "^Connection: close" "$T/close.txt" || fail "no Connection: close in $(cat "$T/close.txt")"
ok "connection-close answered with Connection: close"

# pipelined: three requests in one write, the last asks to close; socat
# returning before its 5 s timeout shows the server closed
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    timeout 10 socat -t 5 -T 5 - "TCP:127.0.0.1:$PORT" >"$T/pipe.txt"
[ "$(grep -o 'HTTP/1.1 200 OK' "$T/pipe.txt" | wc -l)" = 3 ] || fail "pipelined: $(cat "$T/pipe.txt")"
ok "three pipelined requests answered in one go, then closed"

# HTTP/1.0 without keep-alive: closed after the answer
printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 socat -t 5 -T 5 - "TCP:127.0.0.1:$PORT" >"$T/h10.txt"
grep -q "^Connection: close" "$T/h10.txt" || fail "HTTP/1.0: $(cat "$T/h10.txt")"
ok "HTTP/1.0 request answered and closed"

# TCP_DEFER_ACCEPT (-d): the same answers, the request arrives with the accept
saved_port=$PORT saved_pid=$LPID
start_limit 1 -d
[ "$(curl -s --max-time 5 -H "Connection: close" "http://127.0.0.1:$PORT/")" = hello ] ||
    fail "bench_limit -d did not answer"
kill -TERM "$LPID"
wait "$LPID" 2>/dev/null || true
PORT=$saved_port LPID=$saved_pid
ok "bench_limit -d (TCP_DEFER_ACCEPT) answers"

# the client against a server that answers everything
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 1 --connections 4 >"$T/c1.json"
[ "$(json ok "$T/c1.json")" -gt 0 ] && [ "$(json failed "$T/c1.json")" = 0 ] ||
    fail "keep-alive load: $(cat "$T/c1.json")"
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 1 --connections 4 --close >"$T/c2.json"
[ "$(json ok "$T/c2.json")" -gt 0 ] && [ "$(json failed "$T/c2.json")" = 0 ] ||
    fail "close load: $(cat "$T/c2.json")"
ok "bench_client: $(json ok "$T/c1.json") keep-alive and $(json ok "$T/c2.json") close requests, none failed"

# constant rate: 1000/s for 1 s schedules 1000 requests; a late one is sent
# at once (open loop), so the count holds even on a busy machine
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 1 --connections 8 --rate 1000 >"$T/c3.json"
n=$(json requests "$T/c3.json")
[ "$n" -ge 900 ] && [ "$n" -le 1001 ] && [ "$(json failed "$T/c3.json")" = 0 ] ||
    fail "rate 1000/s for 1 s: $(cat "$T/c3.json")"
ok "bench_client --rate 1000 sent $n requests in 1 s"

# drain: SIGTERM with an idle keep-alive connection open; the process exits
exec 7<>"/dev/tcp/127.0.0.1/$PORT"
kill -TERM "$LPID"
for _ in $(seq 100); do
    kill -0 "$LPID" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$LPID" 2>/dev/null && fail "bench_limit still running 5 s after SIGTERM"
wait "$LPID" 2>/dev/null || true
exec 7>&-
ok "bench_limit exits on SIGTERM"

# failures, each of its kind.  Nothing listens on PORT now: refused.
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 0.3 --connections 2 --close >"$T/f1.json"
[ "$(json connect_errors "$T/f1.json")" -gt 0 ] && [ "$(json ok "$T/f1.json")" = 0 ] ||
    fail "refused: $(cat "$T/f1.json")"
ok "refused connections counted as connect errors"

# a server that closes without answering: EOF; one that answers 503: non-2xx;
# one that never answers: timeouts
serve_with() { # serve_with COMMAND: socat runs COMMAND for each connection on PORT
    socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork" "SYSTEM:$1" 2>/dev/null &
    PIDS+=($!)
    SPID=$!
    for _ in $(seq 100); do
        [ -n "$(ss -Htln "sport = :$PORT")" ] && return 0
        sleep 0.05
    done
    fail "socat did not listen on $PORT"
}
stop_socat() { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }

serve_with "true"
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 0.3 --connections 2 --close >"$T/f2.json"
stop_socat
[ "$(json eof "$T/f2.json")" -gt 0 ] && [ "$(json ok "$T/f2.json")" = 0 ] || fail "EOF: $(cat "$T/f2.json")"
ok "connections closed before an answer counted as EOF"

printf 'HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' >"$T/503"
serve_with "cat $T/503"
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 0.3 --connections 2 --close >"$T/f3.json"
stop_socat
[ "$(json non2xx "$T/f3.json")" -gt 0 ] && [ "$(json ok "$T/f3.json")" = 0 ] || fail "503: $(cat "$T/f3.json")"
ok "503 answers counted as non-2xx"

serve_with "sleep 1"
"$B/bench_client" --connect "127.0.0.1:$PORT" --duration 0.6 --connections 2 --close \
    --timeout-ms 100 >"$T/f4.json"
stop_socat
[ "$(json timeouts "$T/f4.json")" -gt 0 ] && [ "$(json ok "$T/f4.json")" = 0 ] ||
    fail "timeouts: $(cat "$T/f4.json")"
ok "unanswered requests counted as timeouts"

# distribution: every connection accepted and counted once, in every mode;
# reuseport hashing spreads 400 connections over 4 workers roughly evenly
"$B/bench_distribution" -w 4 -n 400 -c 2 >"$T/dist.txt"
[ "$(grep -c 'accepted=400 failed=0 ' "$T/dist.txt")" = 3 ] || fail "distribution: $(cat "$T/dist.txt")"
awk '{for (i = 1; i <= NF; i++) if ($i ~ /^counts=/) {n = split(substr($i, 8), c, ","); s = 0
      for (j = 1; j <= n; j++) s += c[j]; if (s != 400) exit 1}}' "$T/dist.txt" ||
    fail "per-worker counts do not add up: $(cat "$T/dist.txt")"
jain=$(sed -n 's/^mode=reuseport .* jain=\([0-9.]*\) .*/\1/p' "$T/dist.txt")
awk -v j="$jain" 'BEGIN {exit !(j >= 0.8)}' || fail "reuseport spread: $(cat "$T/dist.txt")"
ok "bench_distribution: 400 connections counted in all three modes (reuseport Jain $jain)"
