#!/usr/bin/env bash
# shellcheck disable=SC2015 # "A && B || fail" is meant: fail unless all of them hold
# Stateful UDP flows survive reloads and scaling.  A worker that keeps
# per-flow state and exits at once on SIGTERM (testworker --udp-state, as
# almost every UDP server does), 96 flows sending every 50 ms (udpflows)
# across 3 reloads, an in-place upgrade and a scale 4 -> 2 -> 4:
#  A. with the eBPF flow table: no flow loses its state (nor do 32 flows
#     started after the reloads, on the slots the scale removes), <= 0.1 %
#     of the datagrams go unanswered, the old generations' workers linger
#     while their flows live and are drained once the flows are idle, and
#     new flows are answered by the newest generation only;
#  B. with classic BPF (no flow table; the supervisor says UDP flows are
#     not kept): flows do lose their state -- the test can see it.
# A portshare without the flow table options (?flow_idle, --flow-linger)
# runs both with what it has, prints the figures and skips.
. "$(dirname "$0")/sup_lib.sh"

need_ebpf
need jq
UDPFLOWS=$PS_TOOLS/udpflows
FLOWS=96

# the flow table's options, where this portshare has them
FLOW_TABLE=0
help=$("$PORTSHARE" run --help 2>&1 || true)
if grep -q -- '--flow-linger' <<<"$help"; then
    FLOW_TABLE=1
fi
LISTEN=udp://127.0.0.1:0
LINGER=()
if [ "$FLOW_TABLE" = 1 ]; then
    LISTEN='udp://127.0.0.1:0?flow_idle=3s'
    LINGER=(--flow-linger 30s)
fi

# flows_start NAME FLOWS: udpflows in the background until $T/NAME.stop
# (60 s at most)
flows_start() {
    rm -f "$T/$1.stop"
    "$UDPFLOWS" --connect "127.0.0.1:$PORT" --flows "$2" --interval 50 --duration 60 \
        --until-file "$T/$1.stop" --json >"$T/$1.json" 2>"$T/$1.log" &
    echo $! >"$T/$1.pid"
    # ended by sup_lib's cleanup too, should the test fail midway (SIGTERM:
    # it stops sending, and waits at most --timeout for its answers)
    SUP_PIDS+=($!)
}

# flows_stop NAME: sets RES to its JSON line
flows_stop() {
    touch "$T/$1.stop"
    wait "$(cat "$T/$1.pid")" || true
    RES=$(cat "$T/$1.json")
    [ -n "$RES" ] || { cat "$T/$1.log" >&2; fail "udpflows $1 printed no result"; }
}

lingering() { # lingering NAME: how many old workers linger for their flows
    status_json "$1" | jq '[.other_workers[] | select(.state == "lingering")] | length'
}

settle() { # settle NAME N: N slots, all ready
    wait_until 15 bash -c "'$PORTSHARE' status --json --control '$T/$1.sock' | jq -e '(.slots | length) == $2 and ([.slots[] | select(.state == \"ready\")] | length) == $2'" ||
        fail "$1 did not settle at $2 workers: $(status_json "$1" | jq -c '[.slots[] | {slot, state}]')"
}

# scenario NAME [run options...]: the flows across 3 reloads, an in-place
# upgrade and a scale 4 -> 2 -> 4, one second apart.  Sets RES (the 96
# flows), MID (32 flows started after the reloads, on the newest
# generation when the scale removes slots), LINGERED (the most workers seen lingering) and UDPCAP
# (the udp_flows capability status shows).
scenario() {
    local name=$1 i out n l
    shift
    sup_start "$name" -l "$LISTEN" -w 4 --drain-timeout 5s "${LINGER[@]}" "$@" -- "$TESTWORKER" --udp-state
    UDPCAP=$(status_json "$name" | jq -r '.capabilities[] | select(.name == "udp_flows") | .state')
    note "$name: steering $(status_json "$name" | jq -r .steering), udp_flows $UDPCAP"
    flows_start "$name-flows" $FLOWS
    LINGERED=0
    sleep 1
    for i in 1 2 3; do
        out=$(ctl "$name" reload) || fail "$name: reload $i failed: $out"
        grep -q "generation $((i + 1)) is serving" <<<"$out" || fail "$name: reload $i: unexpected answer '$out'"
        sleep 1
        l=$(lingering "$name")
        [ "$l" -le "$LINGERED" ] || LINGERED=$l
    done
    # the supervisor re-executes itself while old workers linger: the flow
    # table (and which worker holds which socket) must cross the exec
    out=$(ctl "$name" upgrade) || fail "$name: upgrade failed: $out"
    flows_start "$name-mid" 32
    for n in 2 4; do
        sleep 1
        out=$(ctl "$name" scale $n) || fail "$name: scale $n failed: $out"
        settle "$name" $n
        l=$(lingering "$name")
        [ "$l" -le "$LINGERED" ] || LINGERED=$l
    done
    sleep 1
    flows_stop "$name-mid"
    MID=$RES
    flows_stop "$name-flows"
}

# ---- the client counts what A asserts is zero ----
# nobody there: every datagram unanswered
r=$("$UDPFLOWS" --connect 127.0.0.1:9 --flows 2 --interval 50 --duration 0.3 --timeout 100 --json 2>/dev/null)
jq -e '.sent > 0 and .unanswered == .sent and .answered == 0' <<<"$r" >/dev/null ||
    fail "udpflows did not count datagrams sent to a closed port as unanswered: $r"
# a worker frozen for 0.6 s: answered late, from its queue, with its state
sup_start ul -l udp://127.0.0.1:0 -w 1 -- "$TESTWORKER" --udp-state
"$UDPFLOWS" --connect "127.0.0.1:$PORT" --flows 4 --interval 50 --duration 1.5 --timeout 200 --json \
    >"$T/ul.json" 2>"$T/ul-flows.log" &
upid=$!
sleep 0.4
frozen=$(status_json ul | jq -r '.slots[0].pid')
kill -STOP "$frozen"
sleep 0.6
kill -CONT "$frozen"
wait "$upid" || fail "udpflows failed: $(cat "$T/ul-flows.log")"
r=$(cat "$T/ul.json")
jq -e '.late > 0 and .unanswered >= .late and .answered + .unanswered == .sent and .state_breaks == 0 and .pid_changes == 0' \
    <<<"$r" >/dev/null || fail "udpflows did not count the answers of a frozen worker as late (and its flows as kept): $r"
ctl ul stop >/dev/null || true
note "a worker frozen for 0.6 s: $r"

# ---- A: the flow table ----
scenario uf
a=$RES a_mid=$MID a_lingered=$LINGERED a_cap=$UDPCAP
stopped=$(now_ms)
note "A (flow table): $a"
note "A, flows started after the reloads: $a_mid"
gen=$(status_json uf | jq -r .generation)
# from 127.0.0.2: a source port of the flows above, reused from 127.0.0.1,
# would be their 4-tuple, which the flow table still keeps on its old worker
"$UDPFLOWS" --connect "127.0.0.1:$PORT" --flows 32 --interval 50 --duration 2 --source 127.0.0.2 --json \
    >"$T/uf-new.json" 2>"$T/uf-new.log" || fail "udpflows (new flows) failed: $(cat "$T/uf-new.log")"
a_new=$(cat "$T/uf-new.json")
note "A, new flows once generation $gen serves: $a_new"
if [ "$FLOW_TABLE" = 1 ]; then
    # old workers drained once their flows are idle for flow_idle (3 s)
    no_lingering() { [ "$(lingering uf)" = 0 ]; }
    wait_until $((15 - ($(now_ms) - stopped) / 1000)) no_lingering ||
        fail "A: old workers still lingering 15 s after their flows stopped: $(status_json uf | jq -c .other_workers)"
    drain_s=$(( ($(now_ms) - stopped) / 100 ))
fi
ctl uf stop >/dev/null || true

# ---- B: classic BPF, no flow table: the test can fail ----
scenario ub --steering cbpf
b=$RES
note "B (classic BPF): $b"
note "B, flows started after the reloads: $MID"
ctl ub stop >/dev/null || true
[ "$UDPCAP" = off ] && grep -q 'udp_flows off' "$T/ub.log" ||
    fail "B: the supervisor did not say (status and log) that UDP flows are not kept under classic BPF: $UDPCAP; $(grep capability "$T/ub.log")"
[ "$(jq .state_breaks <<<"$b")" -gt 0 ] ||
    fail "B: no flow lost its state under classic BPF across 3 reloads and a scale: the test cannot see a failure: $b"

summary="B (classic BPF): $(jq -r '"\(.state_breaks) state breaks in \(.flows_broken)/\(.flows) flows, \(.unanswered)/\(.sent) unanswered"' <<<"$b")"
if [ "$FLOW_TABLE" = 0 ]; then
    skip "this portshare has no UDP flow table (no --flow-linger, ?flow_idle): A measured $(jq -r '"\(.state_breaks) state breaks in \(.flows_broken)/\(.flows) flows, \(.unanswered)/\(.sent) unanswered"' <<<"$a") (after the reloads, $(jq -r '"\(.flows_broken)/\(.flows) flows broke on the scale"' <<<"$a_mid")); $summary"
fi

# ---- A's assertions ----
for r in "$a" "$a_mid"; do
    [ "$(jq .state_breaks <<<"$r")" = 0 ] && [ "$(jq .flows_broken <<<"$r")" = 0 ] ||
        fail "A: flows lost their state across reloads and scaling with the flow table: $r"
    jq -e '.sent > 1000 and .unanswered * 1000 <= .sent' <<<"$r" >/dev/null ||
        fail "A: more than 0.1 % of the datagrams went unanswered (or too few sent to tell): $r"
done
jq -e --arg g "$gen" '.answered > 0 and (.gens | keys) == [$g] and .state_breaks == 0 and .first_n_not_1 == 0 and .unanswered * 1000 <= .sent' \
    <<<"$a_new" >/dev/null ||
    fail "A: new flows were not all answered by the serving generation $gen: $a_new"
[ "$a_lingered" -ge 1 ] || fail "A: no old worker was seen lingering while its flows lived"
[ "$a_cap" != off ] || fail "A: status says udp_flows off under eBPF steering: $(grep capability "$T/uf.log")"
echo "PASS: A (flow table): 0 state breaks in $FLOWS+32 flows across 3 reloads, an upgrade and a scale 4->2->4, $(jq -r '"\(.unanswered)/\(.sent)"' <<<"$a") unanswered, up to $a_lingered workers lingering, drained $((drain_s / 10)).$((drain_s % 10)) s after the flows stopped, 32 new flows all on generation $gen; $summary"
