#!/usr/bin/env bash
# Issue 11.3: the real http-worker on loopback refuses the request shapes a
# front end may frame differently (RFC 9112 5.1 whitespace before the colon,
# two Host fields) and answers Expect: 100-continue with "100 Continue"
# before it waits for the body (curl sends the body only then).
source "$(dirname "$0")/http_lib.sh"

make_www
start_worker w "$WWW"

# the status codes of all responses in a raw exchange, in order
statuses() { grep -ao 'HTTP/1\.1 [0-9][0-9][0-9]' <<<"$1" | cut -d' ' -f2 | tr '\n' ' '; }

# "Content-Length : 3" was taken as a length: abc the body, then a second
# request.  Now it is one 400 and the connection closes.
out=$(raw 'GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabcGET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n')
[ "$(statuses "$out")" = "400 " ] || fail "Content-Length with a space before the colon: $(statuses "$out")"
out=$(raw 'GET /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\nGET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n')
[ "$(statuses "$out")" = "400 " ] || fail "Transfer-Encoding with a tab before the colon: $(statuses "$out")"
ok "whitespace between a field name and its colon: 400, nothing after it is served"

out=$(raw 'GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')
[ "$(statuses "$out")" = "400 " ] || fail "two Host fields: $(statuses "$out")"
expect_status 200 /a.txt
ok "two Host fields: 400"

# curl waits up to --expect100-timeout for the 100 before sending the body;
# a server that never sends it costs the whole wait (and, here, a request
# head timeout of 10 s).  With 100 Continue the request is quick.
head -c 2000 /dev/urandom >"$T/body"
start=$(now_ms)
code=$(curl -s -o /dev/null -w '%{http_code}' --expect100-timeout 5 -H 'Expect: 100-continue' \
    -X GET --data-binary @"$T/body" "$(URL /a.txt)")
took=$(( $(now_ms) - start ))
[ "$code" = 200 ] || fail "GET with Expect: 100-continue and a body: status $code"
[ "$took" -lt 4000 ] || fail "the 100 Continue did not come: curl waited ${took} ms"
# and it was really sent, before the final response, on the wire
{ printf 'GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n'
  sleep 0.5; printf abc; } | socat -t 3 -T 5 - "TCP:127.0.0.1:$PORT" >"$T/cont.out"
[ "$(statuses "$(cat "$T/cont.out")")" = "100 200 " ] || fail "100 Continue then 200 expected: $(cat -A "$T/cont.out" | head -3)"
# without a body there is nothing to wait for: the answer comes at once, no 100
out=$(raw 'GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
[ "$(statuses "$out")" = "200 " ] || fail "Expect without a body: $(statuses "$out")"
ok "Expect: 100-continue: 100 before the body (curl took ${took} ms), none without a body"

stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exited $WSTATUS"
