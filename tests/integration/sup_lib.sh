# sup_lib.sh - shared by the supervisor's integration tests (sourced).
#
# Starts the real `portshare run` on 127.0.0.1:0 with a private control
# socket, learns the port from its "listening on" log line, drives load
# with tests/tools/loadgen, and cleans up everything on exit.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${PORTSHARE:?PORTSHARE must name the portshare binary}"
: "${PS_TOOLS:?PS_TOOLS must name the test tools directory}"
LOADGEN=$PS_TOOLS/loadgen
TESTWORKER=$PS_TOOLS/testworker
T=$(mktemp -d "${PS_TEST_TMP:-/tmp}/ps-test.XXXXXX")
SUP_PIDS=()
# PS_STEERING=cbpf|ebpf runs a test that passes "${STEER[@]}" to sup_start
# with that steering (the *_cbpf.sh variants force the classic BPF fallback)
STEER=(${PS_STEERING:+--steering "$PS_STEERING"})

# check_steering NAME: status shows the steering PS_STEERING asked for
check_steering() {
    [ -z "${PS_STEERING:-}" ] && return 0
    local got
    got=$(status_json "$1" | jq -r .steering)
    [ "$got" = "$PS_STEERING" ] || fail "steering is $got, not $PS_STEERING"
}

# need_ebpf: skip (saying why) unless this machine loads the eBPF steering
# program: it needs root (CAP_BPF), and --steering ebpf refuses to start
# (exit 6, naming the reason) where the kernel will not load it
need_ebpf() {
    [ "$(id -u)" = 0 ] || skip "the eBPF steering program needs root (CAP_BPF); running as uid $(id -u)"
    local rc=0
    timeout -s TERM 3 "$PORTSHARE" run --steering ebpf -l 127.0.0.1:0 --name probe --control "$T/probe.sock" \
        -- "$TESTWORKER" >/dev/null 2>"$T/probe.log" || rc=$?
    if [ "$rc" = 6 ] && grep -q 'steering ebpf' "$T/probe.log"; then
        skip "no eBPF steering here: $(grep -o 'cannot load.*' "$T/probe.log")"
    fi
}

# lighttpd_site: $T/www with an index.html saying "served by lighttpd" and
# $T/lighttpd.conf serving it from the socket it is handed (systemd socket
# activation), as a worker under portshare run
lighttpd_site() {
    mkdir -p "$T/www"
    echo "served by lighttpd" >"$T/www/index.html"
    cat >"$T/lighttpd.conf" <<EOS
server.document-root = "$T/www"
server.systemd-socket-activation = "enable"
server.port = 1
server.errorlog = "$T/lighttpd.err"
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
EOS
}

# descendants PID: every process below PID, by pid (from one snapshot of
# the process table: a pgrep per process is quadratic, minutes for a
# supervisor of a thousand processes)
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            n = split(kids[root], q, " ")
            for (i = 1; i <= n; i++) {
                print q[i]
                m = split(kids[q[i]], more, " ")
                for (j = 1; j <= m; j++) q[++n] = more[j]
            }
        }'
}

cleanup() {
    local p rc=$? left=()
    for p in "${SUP_PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        left+=($(descendants "$p"))
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${SUP_PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    # workers die with their supervisor; whatever did not, goes now
    for p in "${left[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    # a sanitizer report from the supervisor or a worker fails the test
    if sanitizer_report "$T"; then
        rc=1
    fi
    # KEEP_T=1 keeps the logs of a run for a look afterwards
    [ -n "${KEEP_T:-}" ] || rm -rf "$T"
    exit $rc
}
trap cleanup EXIT

# sup_start NAME [run options...] -- PROGRAM ARGS: starts a supervisor
# (the binary $SUP_BIN when set, else $PORTSHARE; `portshare serve` when
# SUP_SUBCMD=serve)
# named NAME in the background; sets SUP_PID and PORT (of the first
# listener); waits until every worker is ready.
sup_start() {
    local name=$1; shift
    "${SUP_BIN:-$PORTSHARE}" "${SUP_SUBCMD:-run}" --name "$name" --control "$T/$name.sock" "$@" 2>"$T/$name.log" &
    SUP_PID=$!
    SUP_PIDS+=("$SUP_PID")
    wait_until 20 grep -qE 'ready: all|"event":"ready"' "$T/$name.log" ||
        { cat "$T/$name.log" >&2; fail "supervisor $name did not get ready"; }
    PORT=$(grep -o 'listening on tcp://[^ ]*' "$T/$name.log" | head -1 | sed 's/.*://')
}

ctl() { # ctl NAME COMMAND...
    local name=$1; shift
    "$PORTSHARE" "$@" --control "$T/$name.sock"
}

status_json() { ctl "$1" status --json; }

# load_start NAME ARGS...: loadgen in the background until $T/NAME.stop
# appears (--duration is only the hard cap).
load_start() {
    local name=$1; shift
    rm -f "$T/$name.stop"
    "$LOADGEN" --json --until-file "$T/$name.stop" "$@" >"$T/$name.json" 2>"$T/$name.err" &
    echo $! >"$T/$name.pid"
    # let it get going before the scenario starts
    sleep 0.5
}

# load_stop NAME: sets RES to loadgen's JSON summary (not in a subshell:
# only this shell can wait for its child)
load_stop() {
    local name=$1
    touch "$T/$name.stop"
    wait "$(cat "$T/$name.pid")" || true
    RES=$(cat "$T/$name.json")
    [ -n "$RES" ] || { cat "$T/$name.err" >&2; fail "loadgen $name printed no result"; }
}

# json_get FILE-OR-STRING KEY
jget() { jq -r "$2" <<<"$1"; }

sup_worker_pids() { status_json "$1" | jq -r '.slots[].pid'; }

# all_ready NAME N: the supervisor NAME has N slots with a ready worker
all_ready() {
    "$PORTSHARE" status --json --control "$T/$1.sock" |
        jq -e "[.slots[] | select(.state == \"ready\")] | length == $2" >/dev/null
}

# kill_workers NAME COUNT: SIGKILL COUNT workers of a 2-slot supervisor,
# alternating the slots and 0.6 s apart (a worker that served for a second
# is not in a crash loop, so its replacement starts at once), each time
# waiting until both slots serve again.  Sets INFLIGHT to the connections
# the victims held when killed (all their sockets but the listener),
# counted while the victim is stopped: the most that may fail with them.
kill_workers() {
    local name=$1 count=$2 i victim n
    INFLIGHT=0
    for i in $(seq 1 "$count"); do
        sleep 0.6
        victim=$(status_json "$name" | jq -r ".slots[$((i % 2))].pid")
        # frozen, it accepts nothing more: what it holds now is exactly
        # what dies with it
        kill -STOP "$victim"
        n=$( (ls -l /proc/$victim/fd 2>/dev/null || true) | grep -c 'socket:' || true)
        INFLIGHT=$((INFLIGHT + (n > 1 ? n - 1 : 0)))
        kill -KILL "$victim"
        wait_until 10 all_ready "$name" 2 || fail "kill $i: slots not back to ready: $(status_json "$name")"
    done
}
