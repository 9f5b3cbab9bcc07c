#!/usr/bin/env bash
# Issue 10: the supervisor stays right under any interleaving of operations.
#
# A seeded random sequence of reloads (control, in the background, and
# SIGHUP), scales (control scale N, SIGTTIN, SIGTTOU), SIGKILLs of workers,
# SIGSTOP/SIGCONT of workers and in-place upgrades (control and SIGUSR2),
# under connection-close load.  Then, once it settles:
#   - the slot count is the last one asked for, and every slot runs a ready
#     worker of the serving generation, which is the newest one a reload
#     reported serving (none reported rolled back is serving);
#   - no process of any worker's tree is left but the slots' workers (every
#     process whose environment names this supervisor's notify socket);
#   - failed requests <= the connections the SIGKILLed workers held (counted
#     while frozen, as test_run_kill.sh does), none refused, none timed out;
#   - the supervisor holds no more descriptors than at the start (beyond
#     one listening socket per slot).
#
# The seed is printed first; PS_SEED=N replays the same sequence of
# operations (the timing of the machine is not replayed).  A failure prints
# the seed and the log of operations.
#
# What may legitimately fail, and why the checks hold anyway:
#   - a SIGKILLed worker's accepted connections: counted, that is the budget;
#   - a SIGSTOPped worker's connections wait, they do not fail: it is frozen
#     for at most STOP_MAX_MS, far below the load's 15 s request timeout and
#     below the drain timeout (a stopped worker being drained is never
#     escalated to SIGKILL by the supervisor; the test checks the log);
#   - a reload whose new worker was SIGKILLed is rolled back (that is its
#     outcome, checked against what serves);
#   - a scale queued behind an upgrade is answered "ask again": it is asked
#     again, as its user would.
#
# As root it runs in a network namespace of its own: its ~200k short
# connections leave as many TIME_WAIT entries, which would fill the table
# the rest of the machine shares (test_run_restart needs some of its own).
. "$(dirname "$0")/common.sh"
in_private_netns || true
. "$(dirname "$0")/sup_lib.sh"
need jq

SEED=${PS_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000 ))}
echo "# seed $SEED (PS_SEED=$SEED reproduces the sequence)"
RANDOM=$SEED
NOPS=${PS_INTERLEAVE_OPS:-70}
STOP_MAX_MS=900
DRAIN=4s

OPLOG=()
t0=$(now_ms)
op() { OPLOG+=("$(printf '%6d ms  %s' $(( $(now_ms) - t0 )) "$*")"); }
fail() {
    echo "FAIL: $*" >&2
    echo "# seed $SEED (rerun: PS_SEED=$SEED)" >&2
    echo "# operations:" >&2
    printf '#   %s\n' "${OPLOG[@]}" >&2
    [ -z "${SUP_PID:-}" ] || echo "# last status: $(status_json il 2>/dev/null | jq -c '{generation, workers, reloading, queued_operations, slots: [.slots[] | {slot, state, pid, generation}], other: [.other_workers[] | {pid, slot, generation, state}]}' 2>/dev/null)" >&2
    echo "# supervisor log (last 60 lines):" >&2
    tail -60 "$T/il.log" >&2 2>/dev/null || true
    exit 1
}

sup_start il -l 127.0.0.1:0 -w 2 --drain-timeout $DRAIN --ready-timeout 20s -- "$TESTWORKER"
op "started: -w 2, supervisor pid $SUP_PID, port $PORT"

# one upgrade first: descriptors inherited from whoever started the test
# (ctest's, a CI runner's) are close-on-exec in the supervisor and go with
# it, and must not hide a leak of the same number at the end
ctl il upgrade >/dev/null || fail "the first upgrade failed"

# descriptors that are not listening sockets (those grow with the slots)
other_fds() {
    local total listeners
    total=$(ls /proc/$SUP_PID/fd | wc -l)
    listeners=$(status_json il | jq '[.listeners[].sockets[]] | length')
    echo $((total - listeners))
}
fds_start=$(other_fds)

# every process started for this supervisor carries its notify address
notify_tag=$(tr '\0' '\n' </proc/$(sup_worker_pids il | head -1)/environ | grep '^NOTIFY_SOCKET=' | cut -d= -f2)
[ -n "$notify_tag" ] || fail "worker has no NOTIFY_SOCKET"
tree_pids() {
    grep -lzxF "NOTIFY_SOCKET=$notify_tag" /proc/[0-9]*/environ 2>/dev/null |
        sed 's|^/proc/||; s|/environ$||' | sort -n || true
}

# a worker of this supervisor (not a stray, not a reused pid)
is_ours() { [ "$(awk '/^PPid:/ { print $2 }' /proc/$1/status 2>/dev/null)" = "$SUP_PID" ]; }
# stopped by a signal (state T), not merely sent one
is_stopped() { [ "$(awk '/^State:/ { print $2 }' /proc/$1/status 2>/dev/null)" = T ]; }

# signal receipt: standard signals do not queue, so the same signal twice
# must not be sent before the supervisor has read the first from its
# signalfd (it is no longer pending)
sig_num() { kill -l "$1"; }
sig_pending() { # sig_pending SIG: true while SIG is pending for the supervisor
    local mask bit
    mask=$(awk '/^ShdPnd:/ { print $2 }' /proc/$SUP_PID/status)
    bit=$(( $(sig_num "$1") - 1 ))
    (( (16#$mask >> bit) & 1 ))
}
send_sig() { # send_sig SIG: to the supervisor, and wait until it is read
    kill -"$1" "$SUP_PID"
    wait_until 20 bash -c "! (( (16#\$(awk '/^ShdPnd:/ { print \$2 }' /proc/$SUP_PID/status) >> $(( $(sig_num "$1") - 1 ))) & 1 ))" ||
        fail "the supervisor did not read SIG$1 within 20 s"
}

# ---- stopped workers: frozen now, thawed by a timer of their own (not by
# the sequence, which may block in a command queued behind a reload that
# waits for that very worker) ----
THAWERS=()
# A thaw takes $T/freeze.lock, which kill_one holds from its SIGSTOP to its
# SIGKILL: a victim thawed in between would accept connections that die
# uncounted with it.
thaw_later() { # thaw_later PID MS
    (sleep "$(awk -v ms="$2" 'BEGIN { printf "%.3f", ms / 1000 }')"
     flock 9
     is_ours "$1" && kill -CONT "$1" 2>/dev/null || true) 9>"$T/freeze.lock" &
    THAWERS+=($!)
}

all_pids() { # every worker the supervisor knows of
    status_json il | jq -r '[.slots[].pid, .slots[].next_pid, .other_workers[].pid] | map(select(. > 0)) | unique | .[]'
}
# pick R WORDS...: the word R picks (R drawn by the caller, so that every
# operation draws the same random numbers whatever the timing)
pick() { local r=$1; shift; local a=("$@"); [ ${#a[@]} -gt 0 ] && echo "${a[r % ${#a[@]}]}"; }

# the listening sockets the supervisor holds: a victim's other sockets are
# its connections
sup_sockets() { ls -l /proc/$SUP_PID/fd 2>/dev/null | grep -o 'socket:\[[0-9]*\]' | sort -u; }
HELD=0
KILLS=0
kill_one() {
    local victim n
    victim=$(pick "$1" $(all_pids)) || { op "kill: no worker to kill"; return; }
    exec 8>"$T/freeze.lock"; flock 8
    kill_frozen "$victim"
    flock -u 8; exec 8>&-
}
kill_frozen() {
    local victim=$1 n
    is_ours "$victim" || { op "kill: $victim is gone already"; return; }
    # it may still go between the look and the signal (a draining worker's
    # last moment, or the supervisor killing its tree)
    kill -STOP "$victim" 2>/dev/null || { op "kill: $victim is gone already"; return; }
    # kill(2) returns before the victim has stopped (on a loaded machine it
    # may be waiting for a CPU, or finishing an accept): count only once its
    # state says stopped
    wait_until 5 is_stopped "$victim" || { is_ours "$victim" || { op "kill: $victim went by itself"; return; }; }
    # frozen, it accepts nothing more: what it holds now is what dies with it
    n=$( (ls -l /proc/$victim/fd 2>/dev/null || true) | grep -o 'socket:\[[0-9]*\]' | sort -u |
        comm -23 - <(sup_sockets) | wc -l)
    kill -KILL "$victim" 2>/dev/null || { op "kill: $victim went by itself"; return; }
    HELD=$((HELD + n))
    KILLS=$((KILLS + 1))
    op "SIGKILL $victim (held $n connection(s))"
}

stop_one() { # stop_one R1 R2
    local victim ms=$((300 + $2 % (STOP_MAX_MS - 300)))
    victim=$(pick "$1" $(all_pids)) || return 0
    is_ours "$victim" || return 0
    # (stopping a stopped one again only gives it a second thaw)
    kill -STOP "$victim" 2>/dev/null || return 0
    thaw_later "$victim" "$ms"
    op "SIGSTOP $victim for $ms ms"
}

# ---- operations ----
EXPECT=2   # the slot count last asked for
BG=()      # background control commands: pid, and their output in $T/bg.N
nbg=0
reload_bg() {
    nbg=$((nbg + 1))
    (rc=0; out=$(ctl il reload --timeout 120s 2>&1) || rc=$?; echo "rc=$rc $out") >"$T/bg.$nbg" &
    BG+=($!)
    op "reload (control, background #$nbg)"
}
scale_to() { # scale_to N: in the foreground; asked again when an upgrade dropped it
    local n=$1 out rc try
    for try in 1 2 3 4 5; do
        rc=0; out=$(ctl il scale "$n" 2>&1) || rc=$?
        if [ $rc = 0 ]; then op "scale $n: $out"; EXPECT=$n; return; fi
        op "scale $n: exit $rc: $out"
        grep -q "ask again" <<<"$out" || fail "scale $n refused: $out"
    done
    fail "scale $n: asked 5 times, never ran"
}
upgrade_fg() {
    local out rc=0
    out=$(ctl il upgrade --timeout 120s 2>&1) || rc=$?
    op "upgrade (control): exit $rc: $out"
    [ $rc = 0 ] || grep -q "ask again" <<<"$out" || fail "upgrade failed: $out"
    [ $rc = 0 ] || return 0
    grep -q "pid $SUP_PID" <<<"$out" || fail "upgrade answered '$out'"
}

load_start load --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 150 --timeout 15000

for i in $(seq 1 "$NOPS"); do
    r=$((RANDOM % 100)) r1=$RANDOM r2=$RANDOM gap=$((RANDOM % 60))
    if [ $r -lt 16 ]; then
        reload_bg
    elif [ $r -lt 22 ]; then
        send_sig HUP; op "SIGHUP (reload)"
    elif [ $r -lt 34 ]; then
        scale_to $((1 + r1 % 4))
    elif [ $r -lt 42 ]; then
        if [ $EXPECT -lt 5 ]; then send_sig TTIN; EXPECT=$((EXPECT + 1)); op "SIGTTIN -> $EXPECT"; fi
    elif [ $r -lt 50 ]; then
        if [ $EXPECT -gt 1 ]; then send_sig TTOU; EXPECT=$((EXPECT - 1)); op "SIGTTOU -> $EXPECT"; fi
    elif [ $r -lt 64 ]; then
        kill_one "$r1"
    elif [ $r -lt 80 ]; then
        stop_one "$r1" "$r2"
    elif [ $r -lt 88 ]; then
        upgrade_fg
    else
        send_sig USR2; op "SIGUSR2 (upgrade)"
    fi
    sleep "$(printf '0.%02d' $gap)"
done
op "sequence done: $i operations; waiting for the background commands"
for p in "${THAWERS[@]:-}" "${BG[@]:-}"; do [ -z "$p" ] || wait "$p" || true; done

# ---- settle ----
settled() {
    status_json il | jq -e --argjson n "$EXPECT" '.generation as $gen |
        .reloading == false and .queued_operations == 0 and .workers == $n and
        (.slots | length) == $n and (.listeners[0].sockets | length) == $n and
        ([.slots[] | select(.state == "ready" and .generation == $gen and .pid > 0)] | length) == $n and
        (.other_workers | length) == 0' >/dev/null
}
wait_until 60 settled || fail "did not settle at $EXPECT ready workers of one generation within 60 s"
op "settled"
s=$(status_json il)
gen=$(jq .generation <<<"$s")

# what the reloads reported against what serves
served_max=1
for f in "$T"/bg.*; do
    [ -e "$f" ] || continue
    line=$(tr '\n' ' ' <"$f")
    op "reload #${f##*.}: $line"
    if g=$(grep -o 'generation [0-9]* is serving' <<<"$line" | grep -o '[0-9]*'); then
        [[ $line == rc=0* ]] || fail "reload #${f##*.} says generation $g serves but exited non-zero: $line"
        [ "$g" -gt "$served_max" ] && served_max=$g
    elif g=$(grep -o 'reload to generation [0-9]* rolled back' <<<"$line" | grep -o '[0-9]*'); then
        [[ $line == rc=1* ]] || fail "reload #${f##*.} was rolled back but did not exit 1: $line"
        [ "$g" != "$gen" ] || fail "reload #${f##*.} said generation $g was rolled back, and it serves"
    elif ! grep -q 'ask again' <<<"$line"; then
        fail "reload #${f##*.}: unexpected answer: $line"
    fi
done
[ "$gen" -ge "$served_max" ] || fail "generation $gen serves, but a reload reported generation $served_max serving"

# nothing of any worker's tree is left but the slots' workers
want=$(jq -r '.slots[].pid' <<<"$s" | sort -n | tr '\n' ' ')
tree_is() { [ "$(tree_pids | tr '\n' ' ')" = "$1" ]; }
wait_until 10 tree_is "$want" ||
    fail "processes of the workers' trees: '$(tree_pids | tr '\n' ' ')', expected only the slots' workers '$want'"
desc=$(descendants "$SUP_PID" | sort -n | tr '\n' ' ')
[ "$desc" = "$want" ] || fail "the supervisor's descendants are '$desc', expected '$want'"

# the load: every failure was a connection a killed worker held
curl -sf --max-time 10 "http://127.0.0.1:$PORT/" | grep -q "gen=$gen" || fail "generation $gen does not answer"
load_stop load; res=$RES
sent=$(jq .sent <<<"$res"); failed=$(jq .failed <<<"$res")
! grep -q ' worker_killed: ' "$T/il.log" ||
    fail "the supervisor had to SIGKILL a worker (its connections were not counted): $(grep ' worker_killed: ' "$T/il.log" | head -3)"
! grep -q ' retire_reset: ' "$T/il.log" || fail "a retired socket was closed with connections queued: $(grep ' retire_reset: ' "$T/il.log")"
for k in refused timeout connect_error bad_status bad_response; do
    [ "$(jq .$k <<<"$res")" = 0 ] || fail "$k is $(jq .$k <<<"$res"), expected 0: $res"
done
[ "$failed" -le "$HELD" ] || fail "$failed requests failed, more than the $HELD connections the $KILLS killed workers held: $res"
[ "$sent" -gt 100 ] || fail "too little load to mean anything: $res"

# no descriptor leaked across all of it
fds_end=$(other_fds)
[ "$fds_end" -le "$fds_start" ] || fail "the supervisor holds $fds_end descriptors besides its listeners, $fds_start at the start: $(ls -l /proc/$SUP_PID/fd)"

elapsed=$(( ($(now_ms) - t0) / 1000 ))
printf '# %s\n' "${OPLOG[@]}" >&2
echo "PASS: seed $SEED: ${#OPLOG[@]} log entries from $NOPS operations ($KILLS kills), settled at $EXPECT workers of generation $gen; $sent requests, $failed failed (killed workers held $HELD), 0 refused, 0 timed out; descriptors $fds_start -> $fds_end; ${elapsed} s"
