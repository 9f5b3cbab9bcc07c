# examples_lib.sh - shared by the tests of examples/ (sourced): each runs
# one example app, as a user would copy it, under `portshare run -w 2` and
# reloads it under load.
. "$(dirname "${BASH_SOURCE[0]}")/sup_lib.sh"

: "${PS_SOURCE_DIR:?PS_SOURCE_DIR must name the source tree}"
EX=$PS_SOURCE_DIR/examples

# answers GEN WHAT: the example on $PORT answers "hello from WHAT ... gen=GEN"
# (asked again for up to 5 s: right after a reload, an old worker that has
# its drain signal but has not yet handled it may still take a connection)
answers() {
    local got= end=$(($(now_ms) + 5000))
    while :; do
        got=$(curl -sf --max-time 5 "http://127.0.0.1:$PORT/") || got="(no answer)"
        grep -q "^hello from $2 .*gen=$1\$" <<<"$got" && return 0
        [ "$(now_ms)" -lt $end ] || fail "$2 example answered '$got', not generation $1"
        sleep 0.1
    done
}

# reloads_under_load NAME WHAT COUNT [LOADGEN OPTIONS]: COUNT reloads of
# supervisor NAME while loadgen keeps 4 clients busy (a new connection per
# request unless the options say --keepalive); every request must succeed.
# Sets RES; prints one line of figures.
reloads_under_load() {
    local name=$1 what=$2 count=$3 i t0 mode=close
    shift 3
    [[ " $* " = *" --keepalive "* ]] && mode=keep-alive
    load_start "load_$name" --connect "127.0.0.1:$PORT" --threads 1 --concurrency 4 --duration 120 "$@"
    t0=$(now_ms)
    for i in $(seq "$count"); do
        ctl "$name" reload >/dev/null || fail "reload $i of the $what example failed: $(tail -5 "$T/$name.log")"
    done
    t0=$(($(now_ms) - t0))
    load_stop "load_$name"
    [ "$(jq .failed <<<"$RES")" = 0 ] ||
        fail "$what example, $mode load: requests failed across $count reloads: $RES $(head -5 "$T/load_$name.err")"
    echo "ok - $what example: $count reloads in ${t0} ms under $mode load, $(jq .sent <<<"$RES") requests, 0 failed (p99 $(jq .latency_ms.p99 <<<"$RES") ms)"
}
