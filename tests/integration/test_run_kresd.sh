#!/usr/bin/env bash
# knot-resolver (Debian's kresd 5) as the worker of `portshare run`, serving
# DNS over UDP and TCP on one port: the two listeners are handed over as
# fds 3 and 4, which kresd takes with `-S FD` (kresd 5 no longer reads
# LISTEN_FDS), and it says READY=1 itself.  The config answers one zone
# locally (policy.ANSWER) and refuses the rest (policy.DENY), with every
# module that would query the root servers unloaded: nothing leaves
# loopback.  Asserts queries over UDP and TCP are answered before and
# after, and that a kdig loop over each protocol, running through 2 reloads
# and a scale 2 -> 1 -> 2, sees no failure; the old workers, lingering for
# their UDP flows (flow_idle=1s), are drained afterwards.
. "$(dirname "$0")/sup_lib.sh"

[ "$(id -u)" = 0 ] || skip "kresd under portshare is tested as root (the eBPF steering); running as uid $(id -u)"
need jq
export PATH=$PATH:/usr/sbin # kresd
command -v kresd >/dev/null || skip "kresd is not installed (Debian: knot-resolver)"
command -v kdig >/dev/null || skip "kdig is not installed (Debian: knot-dnsutils)"
ANSWER=192.0.2.53

mkdir -p "$T/kres"
cat >"$T/kresd.conf" <<EOF
-- answers from this file only: no root priming, no trust anchor updates
for _, m in ipairs({'priming', 'detect_time_skew', 'detect_time_jump',
                    'ta_signal_query', 'ta_sentinel', 'ta_update'}) do
    pcall(modules.unload, m)
end
trust_anchors.remove('.')
cache.size = 10 * MB
policy.add(policy.suffix(policy.ANSWER({[kres.type.A] = {rdata = kres.str2ip('$ANSWER'), ttl = 5}}),
                         {todname('ps.test.')}))
policy.add(policy.all(policy.DENY))
EOF

# a port free for both UDP and TCP on 127.0.0.1 (port 0 picks one port per
# listener, not one for both)
PORT=$(python3 -c '
import socket
for _ in range(50):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", u.getsockname()[1]))
    except OSError:
        continue
    print(u.getsockname()[1])
    break
')
[ -n "$PORT" ] || fail "found no port free for both UDP and TCP"

query() { # query udp|tcp NAME: the A records kdig gets
    local tcp=()
    [ "$1" = tcp ] && tcp=(+tcp)
    kdig @127.0.0.1 -p "$PORT" "${tcp[@]}" "$2" A +short +timeout=2 +retry=0 2>&1
}

# loop_start PROTO: queries over PROTO, one after the other, until
# $T/loop.stop (60 s, 20 000 queries at most); loop_stop PROTO sets
# OK and BAD and prints the first failures
loop_start() {
    (
        ok=0 bad=0 end=$(($(now_ms) + 60000))
        while [ ! -e "$T/loop.stop" ] && [ "$(now_ms)" -lt $end ] && [ $((ok + bad)) -lt 20000 ]; do
            got=$(query "$1" "q$((ok + bad)).ps.test" || true)
            if [ "$got" = $ANSWER ]; then
                ok=$((ok + 1))
            else
                bad=$((bad + 1))
                echo "query $((ok + bad)): ${got//$'\n'/ }" >>"$T/loop-$1.fail"
            fi
        done
        echo "$ok $bad" >"$T/loop-$1.res"
    ) &
    echo $! >"$T/loop-$1.pid"
}
loop_stop() {
    wait "$(cat "$T/loop-$1.pid")" || true
    read -r OK BAD <"$T/loop-$1.res"
    [ ! -s "$T/loop-$1.fail" ] || head -5 "$T/loop-$1.fail" >&2
}

both_answered() { # both_answered WHEN
    local p got
    for p in udp tcp; do
        got=$(query $p www.ps.test || true)
        [ "$got" = $ANSWER ] || fail "$1: kresd did not answer over $p: $got"
    done
    ok "$1: answered over UDP and TCP"
}

settle() { # settle N: N slots, all ready
    wait_until 15 bash -c "'$PORTSHARE' status --json --control '$T/kres.sock' | jq -e '(.slots | length) == $1 and ([.slots[] | select(.state == \"ready\")] | length) == $1'" ||
        fail "did not settle at $1 workers: $(status_json kres | jq -c '[.slots[] | {slot, state}]')"
}

sup_start kres -l "dns=udp://127.0.0.1:$PORT?flow_idle=1s" -l "dns=tcp://127.0.0.1:$PORT" \
    -w 2 --flow-linger 20s "${STEER[@]}" -- kresd -n -q -c "$T/kresd.conf" -S 3 -S 4 "$T/kres"
note "steering: $(status_json kres | jq -c '[.listeners[] | .steering]'), udp_flows $(status_json kres | jq -r '.capabilities[] | select(.name == "udp_flows") | .state'), port $PORT"
both_answered "before the reloads"

rm -f "$T/loop.stop"
loop_start udp
loop_start tcp
sleep 1
for i in 1 2; do
    out=$(ctl kres reload) || fail "reload $i failed: $out"
    grep -q "generation $((i + 1)) is serving" <<<"$out" || fail "reload $i: unexpected answer '$out'"
    sleep 1
done
for n in 1 2; do
    out=$(ctl kres scale $n) || fail "scale $n failed: $out"
    settle $n
    sleep 1
done
touch "$T/loop.stop"
loop_stop udp
udp_ok=$OK udp_bad=$BAD
loop_stop tcp
tcp_ok=$OK tcp_bad=$BAD
note "through 2 reloads and a scale 2->1->2: UDP $udp_bad failed of $((udp_ok + udp_bad)), TCP $tcp_bad failed of $((tcp_ok + tcp_bad))"
both_answered "after 2 reloads and a scale 2->1->2"

[ "$tcp_ok" -ge 20 ] && [ "$udp_ok" -ge 20 ] || fail "too few queries to tell: UDP $udp_ok, TCP $tcp_ok answered"
[ "$tcp_bad" = 0 ] || fail "$tcp_bad of $((tcp_ok + tcp_bad)) queries over TCP failed through the reloads and the scale"
[ "$udp_bad" = 0 ] || fail "$udp_bad of $((udp_ok + udp_bad)) queries over UDP failed through the reloads and the scale"

# the replaced workers linger for their UDP flows, then go
no_old() { [ "$(status_json kres | jq '.other_workers | length')" = 0 ]; }
if ! wait_until 15 no_old; then
    for p in $(status_json kres | jq -r '.other_workers[].pid'); do
        note "old worker $p: $(ps -o pcpu=,stat= -p "$p" | sed 's/^ *//') (%CPU, state); $(timeout 1 strace -p "$p" 2>&1 | sed -n 2p || true)"
    done
    fail "old kresd workers still there 15 s after the queries stopped: $(status_json kres | jq -c .other_workers)"
fi
ctl kres stop >/dev/null || true
echo "PASS: kresd over UDP and TCP on port $PORT: 0 of $((udp_ok + udp_bad)) UDP and 0 of $((tcp_ok + tcp_bad)) TCP queries failed through 2 reloads and a scale 2->1->2"
