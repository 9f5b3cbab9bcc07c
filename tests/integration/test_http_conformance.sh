#!/usr/bin/env bash
# test_http_conformance.sh - the real http-worker on loopback, driven by
# curl and by raw bytes through socat: every status code it promises,
# HEAD without body, 304, ranges, pipelining in one write, keep-alive reuse
# (curl and the worker's own counters), HTTP/1.0 with and without
# keep-alive, the access log, the notify messages, the embedded page, and
# its command-line errors.
source "$(dirname "$0")/http_lib.sh"

# the status codes of all responses in a raw exchange, in order
statuses() { echo "$1" | grep -o 'HTTP/1\.1 [0-9][0-9][0-9]' | cut -d' ' -f2 | tr '\n' ' '; }

make_www
start_worker w --access-log "$T/access.log" "$WWW"

# ---- 200 and its headers -----------------------------------------------------
curl -sD "$T/h" -o "$T/body" "$(URL /a.txt)"
[ "$(cat "$T/body")" = hello ] || fail "body of /a.txt"
grep -q $'^HTTP/1.1 200 OK\r$' "$T/h" || fail "status line: $(head -1 "$T/h")"
grep -q $'^Content-Length: 5\r$' "$T/h" || fail "Content-Length"
grep -q $'^Content-Type: text/plain; charset=utf-8\r$' "$T/h" || fail "Content-Type"
grep -q $'^Server: portshare\r$' "$T/h" || fail "Server"
grep -q '^Date: ' "$T/h" || fail "Date"
LM=$(sed -n 's/^Last-Modified: \(.*\)\r$/\1/p' "$T/h")
[ -n "$LM" ] || fail "Last-Modified"
[ "$(curl -s -o /dev/null -w '%{content_type}' "$(URL /data.json)")" = application/json ] ||
    fail "json content type"
curl -s "$(URL /big.bin)" | cmp -s - "$WWW/big.bin" || fail "big file (sendfile) differs"
ok "200 with Content-Length, Content-Type, Last-Modified, Date, Server; sendfile body"

# ---- HEAD ------------------------------------------------------------------------
raw 'HEAD /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >"$T/head.out"
grep -q $'^Content-Length: 5\r$' "$T/head.out" || fail "HEAD Content-Length"
[ "$(tail -c 4 "$T/head.out" | od -An -c | tr -d ' ')" = '\r\n\r\n' ] ||
    fail "HEAD sent a body: $(cat "$T/head.out")"
ok "HEAD: headers of GET, no body"

# ---- 304, ranges ---------------------------------------------------------------
expect_status 304 /a.txt -H "If-Modified-Since: $LM"
[ -z "$(curl -s -H "If-Modified-Since: $LM" "$(URL /a.txt)")" ] || fail "304 with a body"
expect_status 200 /a.txt -H "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"
[ "$(curl -s -r 1-3 "$(URL /a.txt)")" = ell ] || fail "range 1-3"
expect_status 206 /a.txt -r 1-3
curl -sD "$T/h" -o /dev/null -r 1-3 "$(URL /a.txt)"
grep -q $'^Content-Range: bytes 1-3/5\r$' "$T/h" || fail "Content-Range"
[ "$(curl -s -r -2 "$(URL /a.txt)")" = lo ] || fail "suffix range"
curl -s -r 1000-1999 "$(URL /big.bin)" | cmp -s - <(tail -c +1001 "$WWW/big.bin" | head -c 1000) ||
    fail "range of the big file"
expect_status 416 /a.txt -r 5-
curl -sD "$T/h" -o /dev/null -r 9- "$(URL /a.txt)"
grep -q $'^Content-Range: bytes \*/5\r$' "$T/h" || fail "416 Content-Range"
[ "$(curl -s -r 0-0,2-3 "$(URL /a.txt)")" = hello ] || fail "multi-range is the whole file"
ok "304 on If-Modified-Since, 206 single ranges, 416, multi-range answered 200"

# RFC 9110 14.1.1: on an empty file a non-zero suffix range is satisfiable,
# answered with the whole (empty) file; a first-pos range is not (416)
: >"$WWW/empty.txt"
curl -sD "$T/h" -o /dev/null -r -5 "$(URL /empty.txt)"
grep -q $'^HTTP/1.1 200 OK\r$' "$T/h" || fail "bytes=-5 of an empty file: $(head -1 "$T/h")"
grep -q $'^Content-Length: 0\r$' "$T/h" || fail "bytes=-5 of an empty file: no Content-Length 0"
expect_status 416 /empty.txt -r 0-
ok "empty file: Range bytes=-5 is 200 with the empty body, bytes=0- 416"

# ---- ETag ------------------------------------------------------------------------
curl -sD "$T/h" -o /dev/null "$(URL /a.txt)"
ETAG=$(sed -n 's/^ETag: \(.*\)\r$/\1/p' "$T/h")
[[ "$ETAG" =~ ^\"[0-9a-f-]+\"$ ]] || fail "no strong ETag: '$ETAG'"
expect_status 304 /a.txt -H "If-None-Match: $ETAG"
expect_status 304 /a.txt -H "If-None-Match: \"x\", W/$ETAG"
expect_status 200 /a.txt -H 'If-None-Match: "x"' -H "If-Modified-Since: $LM"
[ "$(curl -s -r 1-3 -H "If-Range: $ETAG" "$(URL /a.txt)")" = ell ] || fail "If-Range with our ETag"
[ "$(curl -s -r 1-3 -H 'If-Range: "x"' "$(URL /a.txt)")" = hello ] || fail "If-Range with another ETag"
printf 'one' >"$WWW/e.txt"
E1=$(curl -s -o /dev/null -w '%header{etag}' "$(URL /e.txt)")
expect_status 304 /e.txt -H "If-None-Match: $E1"
sleep 1.1 # cached entries are compared with the disk at most a second after the last check
printf 'two' >"$WWW/e.txt"
touch -d '+1 min' "$WWW/e.txt"
expect_status 200 /e.txt -H "If-None-Match: $E1"
[ "$(curl -s -H "If-None-Match: $E1" "$(URL /e.txt)")" = two ] || fail "the changed file's body"
ok "ETag; If-None-Match 304 (lists, weak), over If-Modified-Since; If-Range by ETag; a changed file is 200"

# ---- the error statuses --------------------------------------------------------
expect_status 404 /nope
expect_status 403 /noindex/
expect_status 403 /out
expect_status 301 /sub
[ "$(curl -s -o /dev/null -w '%{redirect_url}' "$(URL /sub)")" = "$(URL /sub/)" ] ||
    fail "301 Location"
[ "$(curl -sL "$(URL /sub)")" = sub ] || fail "following the redirect"
expect_status 405 /a.txt -X POST -d x
curl -s -D "$T/h" -o /dev/null -X DELETE "$(URL /a.txt)"
grep -q $'^Allow: GET, HEAD\r$' "$T/h" || fail "405 without Allow"
expect_status 400 /a.txt -H "Host:" # HTTP/1.1 without Host
expect_status 400 /../secret
expect_status 414 "/$(head -c 9000 /dev/zero | tr '\0' x)"
expect_status 431 /a.txt -H "X-Big: $(head -c 17000 /dev/zero | tr '\0' y)"
expect_status 413 /a.txt -X GET -H "Content-Length: 100000"
expect_status 411 /a.txt -X GET -H "Transfer-Encoding: chunked" -d x
out=$(raw 'GARBAGE\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n')
echo "$out" | head -1 | grep -q '^HTTP/1.1 400 ' || fail "garbage: $out"
[ "$(statuses "$out")" = "400 " ] || fail "answered after a framing error: $out"
echo "$out" | grep -q $'^Connection: close\r$' || fail "400 does not say close"
ok "301 400 403 404 405(+Allow) 411 413 414 431; connection closed after a framing error"

# Host must be uri-host[:port] (RFC 9110 7.2): every valid form answered
for h in example.com a-b_c~d.example %41b x:8080 127.0.0.1:80 '[::1]' '[::1]:8080' '[v1.x]'; do
    expect_status 200 /a.txt -H "Host: $h"
done
for h in 'x y' 'a b:80' 'x:80x' '[::1' '::1' 'a/b' 'a@b' '[fe80::1%25lo]'; do
    expect_status 400 /a.txt -H "Host: $h"
done
ok "Host: names, IPv4, [IPv6], ports, %XX taken; 'x y', bad ports, brackets, '/' '@' 400"

# ---- pipelining and keep-alive -------------------------------------------------------
out=$(raw 'GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /data.json HTTP/1.1\r\nHost: t\r\n\r\nHEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /sub/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
[ "$(statuses "$out")" = "200 404 200 200 200 " ] || fail "pipelined statuses: $(statuses "$out")"
echo "$out" | grep -q '^helloHTTP/1.1 404' || fail "pipelined body 1"
echo "$out" | grep -q '{"k":1}' || fail "pipelined body 3 out of order"
[ "$(echo "$out" | tail -1)" = sub ] || fail "pipelined last body"
ok "5 pipelined requests in one write answered in order"

before=$(grep -c '' "$T/access.log" 2>/dev/null || true)
curl -sv "$(URL /a.txt)" "$(URL /a.txt)" "$(URL /sub/)" -o /dev/null -o /dev/null -o /dev/null 2>"$T/v"
grep -q 'Re-using existing connection' "$T/v" || fail "curl did not reuse the connection"
# the worker's counters agree: 3 requests, 1 connection more
sleep 1.2
a1=$(stat_field w accepted); r1=$(stat_field w requests)
curl -s "$(URL /a.txt)" "$(URL /a.txt)" "$(URL /a.txt)" "$(URL /a.txt)" >/dev/null
requests_reach() { [ "$(stat_field w requests)" -ge "$1" ]; }
wait_until 3 requests_reach $(( r1 + 4 )) || fail "stats did not move"
a2=$(stat_field w accepted); r2=$(stat_field w requests)
[ $(( a2 - a1 )) = 1 ] && [ $(( r2 - r1 )) = 4 ] ||
    fail "4 keep-alive requests: accepted +$(( a2 - a1 )), requests +$(( r2 - r1 ))"
ok "keep-alive: curl reuses the connection; stats: 4 requests on 1 accepted connection"

out=$(raw 'GET /a.txt HTTP/1.0\r\n\r\nGET /a.txt HTTP/1.0\r\n\r\n')
[ "$(statuses "$out")" = "200 " ] || fail "HTTP/1.0 without keep-alive: $out"
echo "$out" | grep -q $'^Connection: close\r$' || fail "HTTP/1.0 close header"
out=$(raw 'GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /a.txt HTTP/1.0\r\n\r\n')
[ "$(statuses "$out")" = "200 200 " ] || fail "HTTP/1.0 keep-alive: $out"
echo "$out" | grep -q $'^Connection: keep-alive\r$' || fail "HTTP/1.0 keep-alive header"
[ "$(curl -s --http1.0 "$(URL /a.txt)")" = hello ] || fail "curl --http1.0"
ok "HTTP/1.0: closes by default, keeps alive when asked"

# ---- drain, access log, notify messages ---------------------------------------------
stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exit status $WSTATUS"
grep -q 'STOPPING=1' "$T/w.notify" || fail "no STOPPING=1"
grep -Eq '^127\.0\.0\.1 - - \[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9:]{8} \+0000\] "GET /a\.txt HTTP/1\.1" 200 5$' \
    "$T/access.log" || fail "access log line: $(head -2 "$T/access.log")"
grep -q '"HEAD /a.txt HTTP/1.1" 200 -$' "$T/access.log" || fail "HEAD logged with a body size"
grep -q '"GET /nope HTTP/1.1" 404 ' "$T/access.log" || fail "404 not logged"
ok "access log in common log format, flushed on exit; READY, X_PORTSHARE_STATS, STOPPING sent"

# ---- no DIR: the embedded page --------------------------------------------------------
start_worker page --access-log -
body=$(curl -s "$(URL /)")
echo "$body" | grep -q 'portshare is running' || fail "embedded page: $body"
echo "$body" | grep -q "<td>$WPID</td>" || fail "embedded page lacks the pid"
echo "$body" | grep -q '<td>slot</td><td>0</td>' || fail "embedded page lacks the slot"
echo "$body" | grep -q '<td>generation</td><td>1</td>' || fail "embedded page lacks the generation"
expect_status 404 /a.txt
stop_worker
[ "$WSTATUS" = 0 ] || fail "page worker exit status $WSTATUS"
grep -q '"GET / HTTP/1.1" 200 ' "$T/page.out" || fail "--access-log - wrote nothing to stdout"
ok "without DIR: the embedded page with pid, slot, generation; --access-log - to stdout"

# ---- command line errors ----------------------------------------------------------------
check_usage() { # check_usage EXPECTED-TEXT ARGS...
    local want=$1 rc=0; shift
    "$PORTSHARE" http-worker "$@" >"$T/o" 2>"$T/e" || rc=$?
    [ $rc = 2 ] || fail "http-worker $*: exit $rc, expected 2"
    [ "$(wc -l <"$T/e")" = 1 ] && grep -q "^portshare: fatal: .*$want" "$T/e" ||
        fail "http-worker $*: $(cat "$T/e")"
}
check_usage 'not a directory' "$WWW/a.txt"
check_usage 'No such file' "$T/missing"
check_usage 'header-timeout' --header-timeout abc "$WWW"
check_usage 'idle-timeout' --idle-timeout 0 "$WWW"
check_usage 'max-connections' --max-connections 0 "$WWW"
check_usage 'unknown option' --bogus "$WWW"
check_usage 'no listening sockets' "$WWW"
ok "bad options, bad DIR, no LISTEN_FDS: one line, exit 2"
