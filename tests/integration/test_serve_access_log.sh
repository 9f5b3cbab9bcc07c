#!/usr/bin/env bash
# Issue 11.1: `portshare serve DIR --user nobody --access-log FILE` (FILE not
# there yet): the supervisor opens the log before the workers drop to
# nobody and hands them the descriptor, so they serve and log instead of
# crash-looping on EACCES.  SIGUSR1 to the supervisor (logrotate) reopens:
# the supervisor creates the new file, owned by the workers' user, and
# passes SIGUSR1 on; every worker writes to the new file from then on.
. "$(dirname "$0")/sup_lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (workers of another user)"
id nobody >/dev/null 2>&1 || skip "no user 'nobody'"
chmod 0755 "$T"
mkdir -p "$T/www" "$T/logs"
printf 'hello' >"$T/www/a.txt"
chmod -R a+rX "$T/www"
# root's file in root's directory: nobody can neither create nor open it
LOG=$T/logs/access.log

SUP_SUBCMD=serve sup_start web "$T/www" -l 127.0.0.1:0 -w 2 --user nobody --access-log "$LOG"
for i in 1 2 3 4; do
    curl -sf "http://127.0.0.1:$PORT/a.txt?before=$i" >/dev/null || fail "request $i failed"
done
# lines are written at least once a second
wait_until 5 bash -c "[ \$(grep -c 'before=' '$LOG') = 4 ]" || fail "4 requests, log has: $(cat "$LOG")"
[ "$(status_json web | jq '[.slots[].restarts] | add')" = 0 ] || fail "workers restarted: $(status_json web | jq -c .slots)"
for p in $(sup_worker_pids web); do
    [ "$(awk '/^Uid:/ {print $2}' /proc/$p/status)" = "$(id -u nobody)" ] || fail "worker $p is not nobody"
done
ok "workers run as nobody and write the log root opened for them (4 lines, 0 restarts)"

# logrotate: move the file away, then SIGUSR1 to the supervisor
mv "$LOG" "$LOG.1"
kill -USR1 "$SUP_PID"
wait_until 5 test -e "$LOG" || fail "SIGUSR1: the log was not created again"
[ "$(stat -c %U "$LOG")" = nobody ] || fail "the new log is owned by $(stat -c %U "$LOG"), not the workers' user"
grep -q 'SIGUSR1: reopen' "$T/web.log" || fail "the supervisor did not log the reopen"
# each worker reopens when it reads SIGUSR1; requests spread over both, so
# several, on new connections, reach both workers
for i in $(seq 1 20); do
    curl -sf "http://127.0.0.1:$PORT/a.txt?after=$i" >/dev/null || fail "request after reopen failed"
done
wait_until 5 bash -c "[ \$(grep -c 'after=' '$LOG') = 20 ]" ||
    fail "after SIGUSR1 the new log has $(grep -c 'after=' "$LOG") of 20 lines (old: $(grep -c 'after=' "$LOG.1" || true))"
! grep -q 'after=' "$LOG.1" || fail "a worker still writes to the rotated file"
[ "$(grep -c 'before=' "$LOG.1")" = 4 ] || fail "the rotated file lost lines"
[ "$(status_json web | jq '[.slots[].restarts] | add')" = 0 ] || fail "SIGUSR1 killed workers: $(status_json web | jq -c .slots)"
ok "SIGUSR1: new file owned by nobody, all 20 later lines in it, none in the rotated one, 0 restarts"

# a log directory the workers' user cannot enter: said at start; on
# SIGUSR1 the workers keep the old file and say why in status
mkdir -m 0700 "$T/private"
SUP_SUBCMD=serve sup_start priv "$T/www" -l 127.0.0.1:0 -w 1 --user nobody --access-log "$T/private/access.log"
grep -q "user nobody cannot reach $T/private" "$T/priv.log" || fail "no warning at start: $(cat "$T/priv.log")"
curl -sf "http://127.0.0.1:$PORT/a.txt" >/dev/null || fail "priv: not serving"
mv "$T/private/access.log" "$T/private/access.log.1"
kill -USR1 "$SUP_PID"
wait_until 5 bash -c "'$PORTSHARE' status --control '$T/priv.sock' | grep -q 'cannot reopen the access log'" ||
    fail "status does not say the worker could not reopen: $(ctl priv status)"
curl -sf "http://127.0.0.1:$PORT/a.txt?kept" >/dev/null || fail "priv: not serving after SIGUSR1"
wait_until 5 grep -q 'kept' "$T/private/access.log.1" || fail "the worker lost its log"
ok "log directory nobody cannot enter: warned at start; after SIGUSR1 the worker keeps the old file and status says why"
