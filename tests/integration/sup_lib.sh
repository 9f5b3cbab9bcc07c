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
debian_python "$T/bin"
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

# PY_SERVE: the last lines of a python3 worker built on socketserver (its
# server object named srv; signal and threading imported): serve until
# SIGTERM, then drain -- stop accepting, finish what is in flight, exit.
# SIGTERM is taken by a thread of its own (blocked everywhere, sigwait), not
# by a Python handler: a handler runs in the main thread between two
# bytecodes, possibly while that thread holds one of threading's internal
# locks, which it does around every connection it accepts: socketserver
# reaps the finished request threads there (Thread.is_alive -> _stop, under
# the plain lock _shutdown_locks_lock).  A handler that starts a thread
# there waits for it forever (the new thread needs that lock before it
# counts as started), and the worker hangs with the connection it has just
# accepted until the drain timeout's SIGKILL: test_run_watch.sh's one
# request in 15 000 that timed out (py_drain_check below).
PY_SERVE=$(
    cat <<'EOS'
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # this thread and those it starts
def drain_on_term():
    signal.sigwait({signal.SIGTERM})
    srv.shutdown()
threading.Thread(target=drain_on_term, daemon=True).start()
srv.serve_forever()
srv.server_close()
EOS
)

# py_drain_check [SERVE-CODE]: a socketserver ending in SERVE-CODE (default
# PY_SERVE) gets SIGTERM while it serves and its main thread holds the lock
# that reaping request threads takes -- the interleaving that hung the
# workers, made deterministic -- and must still exit 0 within 5 s.  (Python
# 3.13 reaps without that lock; there the check holds an unrelated one.)
py_drain_check() {
    local serve=${1:-$PY_SERVE} rc=0
    timeout -s KILL 5 python3 - <<EOS || rc=$?
import os, signal, socketserver, threading
class S(socketserver.ThreadingTCPServer):
    fired = False
    def service_actions(self):  # the main thread, inside serve_forever
        if not self.fired:
            self.fired = True
            with getattr(threading, "_shutdown_locks_lock", threading.Lock()):  # as _stop()
                os.kill(os.getpid(), signal.SIGTERM)  # a Python handler runs in here
                for i in range(1000): pass
srv = S(("127.0.0.1", 0), socketserver.BaseRequestHandler)
$serve
EOS
    return $rc
}

# public_bins: copies of portshare and testworker in $T/pub, a directory
# any uid may enter ($PUB_PORTSHARE, $PUB_TESTWORKER), for the parts of a
# test that run them as another user: the build tree may sit under a
# directory that uid cannot enter (a 0700 mktemp clone, /root)
public_bins() {
    mkdir -p "$T/pub" && chmod 0755 "$T/pub" && chmod o+x "$T"
    install -m 0755 "$PORTSHARE" "$T/pub/portshare"
    install -m 0755 "$TESTWORKER" "$T/pub/testworker"
    PUB_PORTSHARE=$T/pub/portshare PUB_TESTWORKER=$T/pub/testworker
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
# named NAME in the background; sets SUP_PID and PORT (of the first TCP or
# UDP listener); waits until every worker is ready.
sup_start() {
    local name=$1; shift
    "${SUP_BIN:-$PORTSHARE}" "${SUP_SUBCMD:-run}" --name "$name" --control "$T/$name.sock" "$@" 2>"$T/$name.log" &
    SUP_PID=$!
    SUP_PIDS+=("$SUP_PID")
    wait_until 20 grep -qE 'ready: all|"event":"ready"' "$T/$name.log" ||
        { cat "$T/$name.log" >&2; fail "supervisor $name did not get ready"; }
    PORT=$(grep -oE 'listening on (tcp|udp)://[^ ]*' "$T/$name.log" | head -1 | sed 's/.*://')
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
