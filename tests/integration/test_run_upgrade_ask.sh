#!/usr/bin/env bash
# An upgrade asks the new binary --version and --upgrade-state-format
# without stopping the supervisor's loop:
#   - a new binary slow to answer: status, /healthz and /metrics answer
#     while it is asked, and the upgrade then succeeds and says so;
#   - one that never answers: the upgrade fails after 5 s with a clear
#     error, the questions are killed, and nothing is left behind;
#   - an upgrade that cannot even ask (no descriptor left: prlimit on the
#     running supervisor) fails cleanly: descriptors, workers and
#     generation as before, and the next upgrade succeeds once the limit is
#     raised;
#   - after an upgrade, the default control socket is removed at exit.
. "$(dirname "$0")/sup_lib.sh"
need curl jq prlimit

cp "$PORTSHARE" "$T/portshare"
SUP_BIN=$T/portshare
sup_start ua -l 127.0.0.1:0 -w 2 --metrics 127.0.0.1:0 -- "$TESTWORKER"
pid=$SUP_PID
M=http://127.0.0.1:$(grep -o 'metrics endpoint on tcp://[^ ]*' "$T/ua.log" | sed 's/.*://')
workers=$(sup_worker_pids ua | sort | tr '\n' ' ')
fds() { ls /proc/"$pid"/fd | wc -l; }
gen0=$(status_json ua | jq .generation)

# install_self FILE: FILE becomes the binary the supervisor re-executes
# (the one it runs: after an upgrade through a script below, the real
# binary that script ran)
install_self() {
    local cur
    cur=$(readlink /proc/"$pid"/exe)
    cur=${cur% (deleted)}
    cp "$1" "$cur.new" && chmod +x "$cur.new" && mv "$cur.new" "$cur"
    INSTALLED=$cur
}
# as_slow: the binary the supervisor re-executes answers both questions
# only once $T/go exists (then it is a fresh copy of the real one)
as_slow() {
    local real=$T/real.$RANDOM
    cp "$PORTSHARE" "$real"
    cat >"$T/slow" <<EOS
#!/bin/sh
case "\$1" in
--version|--upgrade-state-format) while [ ! -e "$T/go" ]; do sleep 0.05; done ;;
esac
exec "$real" "\$@"
EOS
    install_self "$T/slow"
}
logged() { grep -c "$1" "$T/ua.log" || true; }
# answers_while_asked CLI-PID: status, /healthz and /metrics answer while
# the upgrade (asked by CLI-PID) still waits for the new binary
answers_while_asked() {
    local upid=$1
    wait_until 10 pgrep -f -- "^/bin/sh $INSTALLED --version" ||
        fail "the upgrade did not ask --version: $(tail -3 "$T/ua.log")"
    status_json ua | jq -e ".pid == $pid" >/dev/null || fail "status did not answer during the upgrade"
    curl -sf "$M/healthz" >/dev/null || fail "/healthz did not answer during the upgrade"
    curl -sf "$M/metrics" >"$T/metrics.txt" && grep -q '^portshare_' "$T/metrics.txt" || fail "/metrics did not answer during the upgrade"
    kill -0 "$upid" 2>/dev/null && [ "$(logged upgrade_failed)" = "$failed0" ] ||
        fail "status answered only after the upgrade ended: $(tail -3 "$T/ua.log")"
}

# 1. slow to answer: the loop goes on, then the upgrade succeeds
rm -f "$T/go"
as_slow
failed0=$(logged upgrade_failed)
upgraded0=$(logged 'upgraded:')
ctl ua upgrade >"$T/up1.out" 2>&1 &
upid=$!
answers_while_asked "$upid"
touch "$T/go"
wait "$upid" || fail "the upgrade to a slow binary failed: $(cat "$T/up1.out")"
grep -q "upgraded in place: pid $pid" "$T/up1.out" || fail "unclear outcome: $(cat "$T/up1.out")"
[ "$(logged 'upgraded:')" -gt "$upgraded0" ] || fail "no upgraded line in the log"
ok "a binary slow to answer: status, /healthz and /metrics answered meanwhile; then '$(cat "$T/up1.out")'"

# 2. never answers: fails after 5 s, the questions are killed
rm -f "$T/go"
as_slow
fds0=$(fds)
failed0=$(logged upgrade_failed)
ctl ua upgrade >"$T/up2.out" 2>&1 &
upid=$!
answers_while_asked "$upid"
rc=0; wait "$upid" || rc=$?
[ "$rc" = 1 ] || fail "an upgrade to a binary that never answers exited $rc: $(cat "$T/up2.out")"
grep -q -- "--version did not answer within 5 s" "$T/up2.out" || fail "unclear error: $(cat "$T/up2.out")"
q="$T/real\.[0-9]+ --(version|upgrade-state-format)"
! pgrep -f -- "$q" >/dev/null || fail "the questions still run: $(pgrep -af -- "$q")"
wait_until 5 bash -c "[ \$(ls /proc/$pid/fd | wc -l) = $fds0 ]" || fail "descriptors: $(fds), before $fds0"
[ "$(status_json ua | jq .generation)" = "$gen0" ] || fail "the generation changed"
[ "$(sup_worker_pids ua | sort | tr '\n' ' ')" = "$workers" ] || fail "workers changed"
ok "a binary that never answers: $(cat "$T/up2.out")"

# 3. on a supervisor of its own, with the default control socket (no
# --control) and no --metrics (whose poll entries would go over so low a
# limit): no descriptor left for the questions -- a limit that leaves
# exactly one free descriptor number, which the control connection takes
name=ua-ctl-$$
export XDG_RUNTIME_DIR=$T/xdg # for a non-root run; root's is /run/portshare
mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
"$PORTSHARE" run --name "$name" -l 127.0.0.1:0 -w 2 -- "$TESTWORKER" 2>"$T/ctl.log" &
pid=$!
SUP_PIDS+=("$pid")
wait_until 20 grep -q 'ready: all' "$T/ctl.log" || fail "the default-control supervisor did not start"
PORT=$(grep -o 'listening on tcp://[^ ]*' "$T/ctl.log" | head -1 | sed 's/.*://')
path=$(awk -v n="/$name.sock" 'substr($NF, length($NF) - length(n) + 1) == n {print $NF; exit}' /proc/net/unix)
[ -S "$path" ] || fail "no control socket for $name: '$path'"
nctl() { "$PORTSHARE" "$@" --name "$name"; }
workers=$(nctl status --json | jq -r '.slots[].pid' | sort | tr '\n' ' ')
gen0=$(nctl status --json | jq .generation)
fds0=$(fds)
read -r soft hard < <(awk '/Max open files/ {print $4, $5}' /proc/$pid/limits)
limit=0 free=0
used=" $(ls /proc/$pid/fd | tr '\n' ' ') "
while [ $free -lt 2 ]; do
    [[ $used == *" $limit "* ]] || free=$((free + 1))
    [ $free -lt 2 ] && limit=$((limit + 1))
done
prlimit --pid "$pid" --nofile="$limit:$hard" # the soft one: raising a hard limit needs CAP_SYS_RESOURCE
rc=0; out=$(nctl upgrade 2>&1) || rc=$?
prlimit --pid "$pid" --nofile="$soft:$hard"
[ "$rc" = 1 ] || fail "an upgrade without descriptors exited $rc: $out"
grep -q "Too many open files" <<<"$out" || fail "unclear error: $out"
wait_until 5 bash -c "[ \$(ls /proc/$pid/fd | wc -l) = $fds0 ]" || fail "descriptors: $(fds), before $fds0"
[ "$(nctl status --json | jq .generation)" = "$gen0" ] || fail "the generation changed"
[ "$(nctl status --json | jq -r '.slots[].pid' | sort | tr '\n' ' ')" = "$workers" ] || fail "workers changed"
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "not serving after the failed upgrade"
ok "no descriptor for the questions: '$(sed 's/;.*//' <<<"$out")'... rolled back ($fds0 descriptors, generation $gen0, same workers)"
out=$(nctl upgrade) || fail "the upgrade after the limit was raised failed: $out"
grep -q "pid $pid" <<<"$out" || fail "unclear outcome: $out"
[ "$(nctl status --json | jq -r '.slots[].pid' | sort | tr '\n' ' ')" = "$workers" ] || fail "workers changed across the upgrade"
ok "the limit raised, the next upgrade succeeds: $out"

# 4. the default control socket is removed at exit, also after an upgrade
nctl stop >/dev/null || fail "stop of $name failed"
wait "$pid" || true
[ ! -e "$path" ] || { rm -f "$path"; fail "the control socket $path was left behind after an upgrade"; }
ok "after an upgrade, the default control socket $path is removed at exit"
echo "PASS: an upgrade's questions to the new binary do not stop the loop; a failed upgrade leaves nothing behind"
