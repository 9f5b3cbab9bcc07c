#!/usr/bin/env bash
# Issue 11.6: memory per idle keep-alive connection.  The real http-worker
# holds 3000 connections that have each served one request and now wait in
# keep-alive; its VmRSS may grow by at most 1.5 KB per connection (before:
# 8.9 KB struct conn, about 9 KB each; nginx here: about 0.6 KB).
source "$(dirname "$0")/http_lib.sh"
need python3
: "${PS_SOURCE_DIR:?PS_SOURCE_DIR must name the source tree}"
N=3000
LIMIT_BYTES=1536

make_www
# ASan's quarantine keeps freed memory resident; that is not what we measure
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=0"
start_worker w --idle-timeout 120 "$WWW"
expect_status 200 /a.txt
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$WPID/status"; }
before=$(rss)

mkfifo "$T/hold"
python3 "$PS_SOURCE_DIR/bench/idle_conns.py" "$PORT" "$N" /a.txt <"$T/hold" >"$T/idle.out" 2>"$T/idle.err" &
HPID=$!
exec 9>"$T/hold" # holds the client's stdin open; closing it lets the client go
wait_until 60 grep -q "^ready $N" "$T/idle.out" || { cat "$T/idle.err" >&2; fail "client did not open $N connections"; }
wait_until 10 bash -c "[ \$(ls /proc/$WPID/fd | wc -l) -ge $N ]" || fail "worker does not hold $N connections"
after=$(rss)
per=$(( (after - before) * 1024 / N ))
note "VmRSS ${before} kB -> ${after} kB with $N idle keep-alive connections: $per bytes each"
[ "$per" -le "$LIMIT_BYTES" ] || fail "$per bytes per idle connection (limit $LIMIT_BYTES)"
# the connections still work after idling, and are answered
expect_status 200 /a.txt
exec 9>&-
wait "$HPID" || true
ok "idle keep-alive connection: $per bytes of worker RSS (limit $LIMIT_BYTES)"
stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exited $WSTATUS"
