#!/usr/bin/env bash
# gunicorn from Debian runs unchanged under portshare run: it takes its
# sockets from LISTEN_FDS and sends READY=1 itself; 5 reloads under load
# lose nothing.
. "$(dirname "$0")/sup_lib.sh"
command -v gunicorn >/dev/null || skip "gunicorn is not installed (Debian package gunicorn)"

cat >"$T/app.py" <<'EOS'
import os
def app(environ, start_response):
    body = ("pid=%d slot=%s gen=%s\n" % (os.getpid(), os.environ.get("PORTSHARE_SLOT"),
                                          os.environ.get("PORTSHARE_GENERATION"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
EOS
# --ready notify: ready by READY=1 only, never by /proc or --ready-delay
# (under load gunicorn's start can take longer than the delay, and which
# came first would decide the test)
sup_start gu -l 127.0.0.1:0 -w 2 --ready notify --drain-timeout 10s -- gunicorn --workers 1 --chdir "$T" app:app
[ "$(grep -c 'ready (READY=1)' "$T/gu.log")" = 2 ] || fail "gunicorn did not report READY=1 itself"
curl -sf "http://127.0.0.1:$PORT/" | grep -q "gen=1" || fail "gunicorn does not serve through portshare"
load_start load --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 120
for i in 1 2 3 4 5; do ctl gu reload >/dev/null || fail "reload $i of gunicorn failed"; done
load_stop load
[ "$(jq .failed <<<"$RES")" = 0 ] || fail "requests to gunicorn failed across reloads: $RES"
curl -sf "http://127.0.0.1:$PORT/" | grep -q "gen=6" || fail "generation 6 does not answer"
echo "PASS: gunicorn (READY=1 by itself) under portshare run; 5 reloads under load, $(jq .sent <<<"$RES") requests, 0 failed"
