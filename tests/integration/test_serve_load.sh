#!/usr/bin/env bash
# Issue 5: `portshare serve` under real load.  10 reloads under wrk
# keep-alive load and under connection-close load lose nothing; SIGKILLed
# workers lose only what they had accepted; the embedded page and the
# per-worker counters in status show how the kernel spread the load.
. "$(dirname "$0")/sup_lib.sh"
command -v wrk >/dev/null || skip "wrk is not installed"

mkdir -p "$T/www"
printf 'hello' >"$T/www/five.txt"
# as root the workers run as nobody, who must be able to read the files
chmod 0755 "$T" "$T/www" && chmod 0644 "$T/www/five.txt"
SUP_SUBCMD=serve sup_start web "$T/www" -l 127.0.0.1:0 -w 2 --drain-timeout 5s
curl -sf "http://127.0.0.1:$PORT/five.txt" | grep -qx hello || fail "file not served"

wrk_errors() { # total of wrk's socket errors and non-2xx responses
    awk '/Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } /Non-2xx/ { n += $NF } END { print n + 0 }' "$1"
}
reload_under_wrk() { # reload_under_wrk LABEL WRK-ARGS...
    local label=$1; shift
    wrk -t1 -c16 -d6s "$@" "http://127.0.0.1:$PORT/five.txt" >"$T/wrk.$label" 2>&1 &
    local w=$!
    sleep 1
    for i in $(seq 10); do ctl web reload >/dev/null || fail "reload $i failed"; sleep 0.2; done
    wait $w
    local total errors
    total=$(grep -o '[0-9]* requests in' "$T/wrk.$label" | awk '{print $1}')
    errors=$(wrk_errors "$T/wrk.$label")
    [ "$total" -gt 1000 ] || fail "$label: too few requests: $(cat "$T/wrk.$label")"
    [ "$errors" = 0 ] || fail "$label: $errors errors across 10 reloads: $(cat "$T/wrk.$label")"
    echo "PASS: 10 reloads under wrk $label: $total requests, 0 errors"
}
reload_under_wrk keepalive
reload_under_wrk close -H "Connection: close"

# SIGKILL workers under connection-close load: nothing refused, nothing
# queued lost; only what the killed worker had accepted may fail
load_start load --connect 127.0.0.1:$PORT --path /five.txt --threads 2 --concurrency 8 --duration 60
kill_workers web 6
inflight=$INFLIGHT
load_stop load
for k in refused timeout connect_error bad_status; do
    [ "$(jq .$k <<<"$RES")" = 0 ] || fail "$k is not 0 after killing workers: $RES"
done
[ "$(jq .failed <<<"$RES")" -le "$inflight" ] ||
    fail "more failures than the $inflight connections the killed workers held: $RES"
echo "PASS: 6 worker kills under load: $(jq .sent <<<"$RES") requests, $(jq .failed <<<"$RES") failed (the killed workers held <= $inflight), 0 refused or lost"

# counters per worker reach status within a couple of seconds
wait_until 5 bash -c "'$PORTSHARE' status --json --control '$T/web.sock' | jq -e '[.slots[].counters | select(.requests > 0 and .accepted > 0)] | length == 2'" ||
    fail "per-worker counters missing from status: $(status_json web | jq -c '[.slots[] | .stats]')"
ctl web status | grep -q "accepted=" || fail "text status has no counters"
SUP_SUBCMD=serve sup_start page -l 127.0.0.1:0 -w 1
page=$(curl -sf "http://127.0.0.1:$PORT/")
echo "$page" | grep -q "portshare" && echo "$page" | grep -qi "slot" && echo "$page" | grep -qi "generation" ||
    fail "embedded page does not say what is running: $page"
echo "PASS: counters in status ($(status_json web | jq -c '[.slots[].stats]')), embedded page shows slot and generation"
