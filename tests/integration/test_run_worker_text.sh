#!/usr/bin/env bash
# What a worker sends about itself is made safe before anyone sees it: a
# STATUS= with terminal escape sequences, C1 controls and broken UTF-8
# reaches `portshare status` as '?' (never as bytes a terminal acts on) and
# `status --json` as valid UTF-8; counters with a sign, too many digits or
# a repeated name give no wrapped value and no duplicate /metrics series.
. "$(dirname "$0")/sup_lib.sh"
need python3 curl

cat >"$T/talker.py" <<'EOS'
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
msg = (b"READY=1\nSTATUS=ok \x1b]0;owned\x07 \x1b[2J \xc2\x9b31m bad\xff\xfe utf8 \xc3\xa9t\xc3\xa9\n"
       b"X_PORTSHARE_STATS=requests=-5 requests=7 accepted=99999999999999999999 active=2 x=\n"
       b"X_PORTSHARE_CLOSES=done=1 done=2 client=3\n")
s.sendto(msg, addr)
ls = socket.socket(fileno=3)
while True:
    ls.accept()[0].close()
EOS
sup_start wt -l 127.0.0.1:0 -w 1 --ready notify --metrics 127.0.0.1:0 -- /usr/bin/python3 "$T/talker.py"
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/wt.sock' | grep -q utf8" ||
    fail "the worker's STATUS never arrived: $(status_json wt | jq -c '.slots[0]')"

ctl wt status >"$T/status.txt"
if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$T/status.txt"; then
    fail "status shows control bytes from the worker: $(grep -a utf8 "$T/status.txt" | od -c | head -5)"
fi
grep -q 'ok ?]0;owned? ' "$T/status.txt" || fail "status text: $(grep -a utf8 "$T/status.txt")"
ok "status text: the worker's escape sequences are shown as '?', its UTF-8 kept"

status_json wt >"$T/status.json"
/usr/bin/python3 -c '
import json, sys
raw = open(sys.argv[1], "rb").read()
j = json.loads(raw.decode("utf-8"))   # strict: fails on broken UTF-8
st = j["slots"][0]["status"]
assert "\x1b" not in st and "\x9b" not in st, st
assert "\u00e9t\u00e9" in st, st
c = j["slots"][0]["counters"]
assert c == {"requests": 7, "active": 2}, c
assert j["slots"][0]["closes"] == {"done": 1, "client": 3}, j["slots"][0]["closes"]
' "$T/status.json" || fail "status --json: $(jq -c '.slots[0] | {status, counters, closes}' "$T/status.json")"
ok "status --json: valid UTF-8, counters without the signed, oversized or repeated ones"

mport=$(grep -o 'metrics endpoint on tcp://[^ ]*' "$T/wt.log" | tail -1 | sed 's/.*://')
curl -sf "http://127.0.0.1:$mport/metrics" >"$T/metrics.txt" || fail "no /metrics"
grep -q '^portshare_worker_requests_total{slot="0"} 7$' "$T/metrics.txt" ||
    fail "requests: $(grep worker_requests "$T/metrics.txt")"
! grep -q 'portshare_worker_connections_accepted_total{slot="0"}' "$T/metrics.txt" ||
    fail "a 20-digit counter was shown: $(grep accepted_total "$T/metrics.txt")"
[ "$(grep -c 'portshare_worker_connections_closed_total{slot="0",reason="done"}' "$T/metrics.txt")" = 1 ] ||
    fail "a repeated reason made two series: $(grep closed_total "$T/metrics.txt")"
/usr/bin/python3 -c 'import sys
from prometheus_client.parser import text_string_to_metric_families
list(text_string_to_metric_families(sys.stdin.read()))' <"$T/metrics.txt" ||
    fail "/metrics does not parse"
ok "/metrics: no wrapped value, no duplicate series"
