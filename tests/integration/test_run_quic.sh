#!/usr/bin/env bash
# A real QUIC stack across a reload: Debian's ngtcp2 example server
# (gtlsserver, unmodified: tests/tools/inherit_udp_shim.so hands it the
# socket portshare gave its generation when it binds its own) as the worker
# of `portshare run -l udp://...`, 2 workers.  8 connections complete their
# handshake with generation 1, hold their request back (gtlsclient
# --delay-stream) while the supervisor reloads, then send it:
#  A. with the eBPF flow table each is answered by generation 1 (every
#     generation serves its own htdocs, a file naming it), the old workers
#     linger while those flows live and are drained once they are idle for
#     flow_idle, and 8 new connections are answered by generation 2;
#  B. with classic BPF (no flow table) the old workers get their drain
#     signal (gtlsserver exits on SIGTERM) and the new ones know nothing of
#     those connections: some (in practice all) fail -- the test can see it.
. "$(dirname "$0")/sup_lib.sh"

need_ebpf
need jq openssl
export PATH=$PATH:/usr/sbin # gtlsserver
command -v gtlsserver >/dev/null && command -v gtlsclient >/dev/null ||
    skip "ngtcp2's example programs are not installed (Debian: ngtcp2-server, ngtcp2-client)"
SHIM=$PS_TOOLS/inherit_udp_shim.so
[ -f "$SHIM" ] || fail "$SHIM was not built"
N=8
# a connection holds its request back DELAY s after its handshake, under
# both idle timeouts: the client's (IDLE s) and the listener's flow_idle
DELAY=4 IDLE=8

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$T/key.pem" -out "$T/cert.pem" 2>"$T/openssl.log" ||
    fail "openssl could not make a certificate: $(cat "$T/openssl.log")"
for g in 1 2 3; do
    mkdir -p "$T/htdocs$g"
    echo "generation $g" >"$T/htdocs$g/gen"
done

# clients_start TAG DELAY: N gtlsclients on $PORT in the background, each
# fetching /gen into $T/TAG.I/ once DELAY s have passed after its handshake
clients_start() {
    local i
    CLIENT_PIDS=()
    for i in $(seq $N); do
        mkdir -p "$T/$1.$i"
        # no -q: the log says when the handshake is confirmed
        timeout 30 gtlsclient --no-quic-dump --no-http-dump --timeout=${IDLE}s --delay-stream="$2s" \
            --exit-on-all-streams-close --download="$T/$1.$i" \
            127.0.0.1 "$PORT" "https://127.0.0.1:$PORT/gen" >"$T/$1.$i.out" 2>&1 &
        CLIENT_PIDS+=($!)
    done
}

confirmed() { # confirmed TAG: every client of TAG has its handshake confirmed
    [ "$(grep -l 'handshake has been confirmed' "$T/$1".*.out 2>/dev/null | wc -l)" = $N ]
}

# clients_wait TAG GEN: waits for them; ANSWERED: how many got generation
# GEN's file, OTHER: the answers of the others (by count)
clients_wait() {
    local p i got
    for p in "${CLIENT_PIDS[@]}"; do wait "$p" || true; done
    ANSWERED=0
    : >"$T/$1.other"
    for i in $(seq $N); do
        got=$(cat "$T/$1.$i/gen" 2>/dev/null || true)
        if [ "$got" = "generation $2" ]; then
            ANSWERED=$((ANSWERED + 1))
        else # what it got, or how the client ended (gtlsclient exits 0 either way)
            echo "${got:-$(tail -1 "$T/$1.$i.out")}" >>"$T/$1.other"
        fi
    done
    OTHER=$(sort "$T/$1.other" | uniq -c | sed 's/^ *//' | paste -sd ';')
}

lingering() { # lingering NAME: old workers lingering for their flows
    status_json "$1" | jq '[.other_workers[] | select(.state == "lingering")] | length'
}

# scenario NAME [run options...]: N connections across a reload, then N new
# ones.  Sets OLD_OK (answered by generation 1), OLD_OTHER, NEW_OK
# (answered by generation 2), NEW_OTHER, LINGERED
scenario() {
    local name=$1 t0 out took
    shift
    # port 0: the shim gives a bind to the listener's address, any port,
    # the inherited socket (the kernel picked the port)
    sup_start "$name" -l 'udp://127.0.0.1:0?flow_idle=6s' -w 2 --flow-linger 60s \
        --ready delay --ready-delay 1s "$@" -- \
        sh -c "exec env LD_PRELOAD='$SHIM' gtlsserver -q -d '$T'/htdocs\$PORTSHARE_GENERATION 127.0.0.1 0 '$T/key.pem' '$T/cert.pem'"
    UDPCAP=$(status_json "$name" | jq -r '.capabilities[] | select(.name == "udp_flows") | .state')
    note "$name: steering $(status_json "$name" | jq -r '.listeners[0].steering'), udp_flows $UDPCAP, on udp port $PORT"
    clients_start "$name-old" $DELAY
    wait_until 10 confirmed "$name-old" ||
        fail "$name: not every QUIC handshake completed with generation 1: $(grep -L 'handshake has been confirmed' "$T/$name-old".*.out | head -1 | xargs tail -5)"
    t0=$(now_ms)
    out=$(ctl "$name" reload) || fail "$name: reload failed: $out"
    grep -q 'generation 2 is serving' <<<"$out" || fail "$name: unexpected reload answer '$out'"
    took=$(($(now_ms) - t0))
    # the requests must leave after the reload, or the test proves nothing
    [ $took -lt $(((DELAY - 1) * 1000)) ] ||
        fail "$name: the reload took $took ms, longer than the connections hold their request back"
    LINGERED=$(lingering "$name")
    clients_wait "$name-old" 1
    OLD_OK=$ANSWERED OLD_OTHER=$OTHER
    clients_start "$name-new" 0
    clients_wait "$name-new" 2
    NEW_OK=$ANSWERED NEW_OTHER=$OTHER
}

# ---- A: the flow table ----
scenario quicft
note "A (flow table): $OLD_OK/$N connections opened before the reload answered by generation 1${OLD_OTHER:+ (others: $OLD_OTHER)}; $NEW_OK/$N new ones by generation 2${NEW_OTHER:+ (others: $NEW_OTHER)}; $LINGERED old workers lingering"
a_old=$OLD_OK a_old_other=$OLD_OTHER a_new=$NEW_OK a_new_other=$NEW_OTHER a_lingered=$LINGERED a_cap=$UDPCAP
no_lingering() { [ "$(lingering quicft)" = 0 ]; }
wait_until 15 no_lingering ||
    fail "A: old workers still lingering 15 s after their connections closed: $(status_json quicft | jq -c .other_workers)"
ctl quicft stop >/dev/null || true

# ---- B: classic BPF, no flow table ----
scenario quiccb --steering cbpf
note "B (classic BPF): $OLD_OK/$N connections opened before the reload answered by generation 1${OLD_OTHER:+ (others: $OLD_OTHER)}; $NEW_OK/$N new ones by generation 2${NEW_OTHER:+ (others: $NEW_OTHER)}"
ctl quiccb stop >/dev/null || true

[ "$a_cap" != off ] || fail "A: status says udp_flows off under eBPF steering"
[ "$UDPCAP" = off ] || fail "B: status does not say udp_flows off under classic BPF: $UDPCAP"
[ "$a_old" = $N ] ||
    fail "A: only $a_old of $N QUIC connections opened before the reload got their answer from generation 1 (others: $a_old_other)"
[ "$a_new" = $N ] ||
    fail "A: only $a_new of $N new QUIC connections were answered by generation 2 (others: $a_new_other)"
[ "$a_lingered" -ge 1 ] || fail "A: no old worker lingered for its QUIC connections"
[ "$OLD_OK" -lt $N ] ||
    fail "B: every QUIC connection spanning the reload was answered under classic BPF too: the test cannot see a failure"
[ "$NEW_OK" = $N ] ||
    fail "B: only $NEW_OK of $N new QUIC connections were answered by generation 2 under classic BPF (others: $NEW_OTHER)"
echo "PASS: A (flow table): $a_old/$N QUIC connections spanning a reload answered by generation 1, $a_new/$N new ones by generation 2, old workers lingered then drained; B (classic BPF): $OLD_OK/$N spanning the reload answered${OLD_OTHER:+ (others: $OLD_OTHER)}, $NEW_OK/$N new ones"
