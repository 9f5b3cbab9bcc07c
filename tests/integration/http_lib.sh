# http_lib.sh - shared by the HTTP worker's integration tests (sourced).
#
# Starts the real `portshare http-worker` under tests/tools/http_launch
# (a stand-in supervisor: 127.0.0.1:0 passed as fd 3 by the systemd
# protocol, sd_notify messages logged), builds a small document root, and
# cleans up by process id on exit.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${PORTSHARE:?PORTSHARE must name the portshare binary}"
: "${PS_TOOLS:?PS_TOOLS must name the test tools directory}"
T=$(mktemp -d /tmp/ps-http.XXXXXX)
debian_python "$T/bin"
WWW=$T/www
LAUNCH_PIDS=()

need curl socat

cleanup() {
    local p
    for p in "${LAUNCH_PIDS[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    [ -n "${WPID:-}" ] && kill -KILL "$WPID" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

# A document root: files, a directory with and without index.html, a
# symlink out of it (to $T/secret), a big file for slow downloads.
make_www() {
    mkdir -p "$WWW/sub" "$WWW/noindex"
    printf 'hello' >"$WWW/a.txt"
    printf '<h1>root</h1>\n' >"$WWW/index.html"
    printf 'sub\n' >"$WWW/sub/index.html"
    printf '{"k":1}' >"$WWW/data.json"
    echo SECRET-OUTSIDE-DIR >"$T/secret"
    ln -s ../secret "$WWW/out"
    ln -s "$T/secret" "$WWW/abs"
    ln -s .. "$WWW/updir"
    head -c 300000 /dev/urandom >"$WWW/big.bin"
}

# start_worker NAME [http-worker args...]: sets PORT, WPID (the worker),
# LPID (the launcher); waits for READY=1.  NAME.out/.err/.notify in $T.
# WRAP=(cmd args) runs the worker through cmd (e.g. prlimit), same pid.
WRAP=()
start_worker() {
    local name=$1; shift
    rm -f "$T/$name.info"
    "$PS_TOOLS/http_launch" --notify-log "$T/$name.notify" "$T/$name.info" -- \
        "${WRAP[@]}" "$PORTSHARE" http-worker "$@" >"$T/$name.out" 2>"$T/$name.err" &
    LPID=$!
    LAUNCH_PIDS+=("$LPID")
    wait_until 10 test -s "$T/$name.info" || fail "$name: launcher did not start"
    read -r PORT WPID <"$T/$name.info"
    wait_until 10 grep -q 'READY=1' "$T/$name.notify" ||
        { cat "$T/$name.err" >&2; fail "$name: worker never sent READY=1"; }
}

# stop_worker: SIGTERM to the worker; sets WSTATUS to its exit status.
stop_worker() {
    kill -TERM "$WPID"
    WSTATUS=0
    wait "$LPID" || WSTATUS=$?
}

URL() { echo "http://127.0.0.1:$PORT$1"; }

# status_of PATH [curl args...]: the status code curl sees
status_of() {
    local path=$1; shift
    curl -s -o /dev/null -w '%{http_code}' --path-as-is "$@" "$(URL "$path")"
}

expect_status() { # expect_status CODE PATH [curl args...]
    local want=$1 got; shift
    got=$(status_of "$@")
    [ "$got" = "$want" ] || fail "GET $1 ${*:2}: status $got, expected $want"
}

# raw BYTES: send printf-formatted bytes on one connection (one write),
# half-close, print everything the server sends back.
raw() {
    printf %b "$1" | socat -t 3 -T 5 - "TCP:127.0.0.1:$PORT"
}

# last STATS line the worker reported: "accepted=N requests=N active=N"
last_stats() {
    grep -o 'X_PORTSHARE_STATS=.*' "$T/$1.notify" | tail -1 | sed 's/X_PORTSHARE_STATS=//'
}
stat_field() { last_stats "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
