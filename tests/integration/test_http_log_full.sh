#!/usr/bin/env bash
# test_http_log_full.sh - the access log on a full disk.  A write that
# fails or is short never leaves half a line followed by the next one: the
# rest of a line goes out first once there is room, lines that find no room
# are dropped whole, counted (log_dropped= in the worker's stats) and said
# on stderr with their number.  A small tmpfs in a mount namespace of the
# test's own when root; /dev/full (every write fails) in any case.
if [ -z "${PS_MNTNS:-}" ] && [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    PS_MNTNS=1 exec unshare -m --propagation private -- bash "$0" "$@"
fi
source "$(dirname "$0")/http_lib.sh"

make_www
LINE_RE='^127\.0\.0\.1 - - \[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9:]{8} \+0000\] "GET /[^" ]* HTTP/1\.1" [0-9]{3} ([0-9]+|-)$'
LONG=$(head -c 900 /dev/zero | tr '\0' x)
# get N TAG: N requests of ~970-byte log lines on one keep-alive connection
get() {
    local urls=() i
    for i in $(seq "$1"); do urls+=("$(URL "/$2-$i-$LONG")"); done
    curl -s "${urls[@]}" >/dev/null
}

# ---- every write fails: lines kept while they fit, then dropped and counted
start_worker dfull --access-log /dev/full "$WWW"
get 100 d
wait_until 5 grep -q 'access log: dropping lines until it can be written: No space left on device' \
    "$T/dfull.err" || fail "no word on stderr while dropping: $(cat "$T/dfull.err")"
stop_worker
grep -q 'access log: 100 lines dropped: No space left on device' "$T/dfull.err" ||
    fail "exit did not say how many lines were dropped: $(cat "$T/dfull.err")"
[ "$(stat_field dfull log_dropped)" = 100 ] ||
    fail "stats: log_dropped=$(stat_field dfull log_dropped), expected 100"
ok "/dev/full: 'dropping lines' said once, '100 lines dropped' at exit, log_dropped=100 in the stats"

[ -n "${PS_MNTNS:-}" ] || skip "not root or no private mount namespace (unshare -m): the full tmpfs part did not run"

# ---- a disk that fills up and frees again
mkdir "$T/disk"
mount -t tmpfs -o size=512k tmpfs "$T/disk" || skip "cannot mount a tmpfs"
trap 'umount "$T/disk"; cleanup' EXIT
start_worker full --access-log "$T/disk/access.log" "$WWW"
get 3 before
log_has() { [ "$(wc -l <"$T/disk/access.log")" = "$1" ]; }
wait_until 5 log_has 3 || fail "first lines not written"
# the log's last page has room left (and whatever the worker reserved
# past its end), the rest of the disk none: the next writes of the log run
# out of room inside a line; 250 lines are more than that room and the
# worker's buffer together
dd if=/dev/zero of="$T/disk/filler" bs=4k 2>/dev/null || true
get 250 full
wait_until 5 grep -q 'dropping lines until it can be written' "$T/full.err" ||
    fail "no word on stderr while dropping: $(cat "$T/full.err")"
rm "$T/disk/filler"
wait_until 5 grep -q 'access log: [0-9]* lines dropped: No space left on device' "$T/full.err" ||
    fail "recovery did not say how many lines were dropped: $(cat "$T/full.err")"
get 1 after
wait_until 5 grep -q '/after-1-' "$T/disk/access.log" || fail "a line after the disk freed up is missing"
stop_worker
bad=$(grep -Ev "$LINE_RE" "$T/disk/access.log" | head -c 300 || true)
[ -z "$bad" ] || fail "a cut or glued line in the log: $bad"
said=$(sed -n 's/.*access log: \([0-9]*\) lines dropped.*/\1/p' "$T/full.err" | head -1)
dropped=$(stat_field full log_dropped)
logged=$(wc -l <"$T/disk/access.log")
[ "$said" = "$dropped" ] || fail "stderr said $said lines dropped, the stats $dropped"
[ $((logged + dropped)) = 254 ] || fail "$logged lines logged + $dropped dropped != 254 requests"
[ "$dropped" -gt 0 ] || fail "nothing was dropped: the test did not fill the disk"
ok "full tmpfs: $logged whole lines logged, $dropped dropped whole and counted (stderr, stats), none cut"
