#!/usr/bin/env bash
# test_run_listen_drops.sh - portshare_listener_drops_total counts real
# listen-queue overflows: a `portshare serve` worker frozen with SIGSTOP on
# a socket with backlog 2, then 30 connections on loopback.  The kernel
# queues backlog+1 of them and drops the SYNs of the rest (they retransmit);
# the supervisor reads the count from each held socket (SO_MEMINFO,
# SK_MEMINFO_DROPS) and /metrics must show it rising on the frozen slot's
# socket, and by no more than the system-wide ListenDrops of
# /proc/net/netstat rose meanwhile.  After SIGCONT every one of the 30
# clients is served: a drop delays a client, it loses nothing.  The
# namespace-wide portshare_listen_overflows_total rises with it.
# The socket has defer=0: with TCP_DEFER_ACCEPT (serve's default) the same
# counter also counts each handshake ACK the kernel discards while waiting
# for the request, which the last part shows.
. "$(dirname "$0")/sup_lib.sh"

need curl jq python3

# listen_drops: TcpExt ListenDrops of this network namespace
listen_drops() {
    awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[i] = $i; h = 1 } else for (i = 1; i <= NF; i++) if (n[i] == "ListenDrops") print $i }' /proc/net/netstat
}
# metric NAME-AND-LABELS: its value in /metrics
metric() { curl -sf "$M/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }

SUP_SUBCMD=serve sup_start d -l '127.0.0.1:0?backlog=2&defer=0' -w 1 --metrics 127.0.0.1:0
M=http://127.0.0.1:$(grep -o 'metrics endpoint on tcp://[^ ]*' "$T/d.log" | sed 's/.*://')
L="listener=\"tcp://127.0.0.1:$PORT\""
[ "$(metric "portshare_listener_backlog{$L}")" = 2 ] || fail "backlog is not 2: $(curl -s "$M/metrics" | grep listener_)"
before=$(metric "portshare_listener_drops_total{$L,slot=\"0\"}")
[ "$before" = 0 ] || fail "drops before the test: '$before'"
sys_before=$(listen_drops)
over_before=$(metric portshare_listen_overflows_total)
[ -n "$over_before" ] || fail "no portshare_listen_overflows_total: $(curl -s "$M/metrics" | grep listen_)"

worker=$(status_json d | jq -r '.slots[0].pid')
kill -STOP "$worker"
python3 - "$PORT" "$T/cont" >"$T/clients.out" 2>"$T/clients.err" <<'EOF' &
import os, select, socket, sys, time
port, cont = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(30):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
while not os.path.exists(cont):
    time.sleep(0.05)
served = 0
deadline = time.time() + 60
for s in socks:
    s.setblocking(True)
    s.settimeout(max(1, deadline - time.time()))
    try:
        select.select([], [s], [], max(1, deadline - time.time()))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        served += data.startswith(b"HTTP/1.1 200")
    except OSError as e:
        print("client error:", e, file=sys.stderr)
print(served)
EOF
clients=$!
# the queue fills at once; the drops rise with every (re)transmitted SYN
wait_until 20 bash -c "[ \"\$(curl -sf $M/metrics | awk -v k='portshare_listener_drops_total{$L,slot=\"0\"}' '\$1 == k { print \$2 }')\" -gt 0 ]" ||
    fail "drops did not rise with a frozen worker: $(curl -s "$M/metrics" | grep listener_)"
queued=$(metric "portshare_listener_queue_length{$L,slot=\"0\"}")
drops=$(metric "portshare_listener_drops_total{$L,slot=\"0\"}")
sys_after=$(listen_drops)
[ "$queued" -ge 2 ] || fail "queue length $queued with 30 clients and a frozen worker"
[ $((sys_after - sys_before)) -ge "$drops" ] ||
    fail "the socket counts $drops drops, the whole namespace only $((sys_after - sys_before)) (ListenDrops)"
note "frozen worker, backlog 2, 30 clients: queue $queued, drops_total $drops (ListenDrops of the namespace +$((sys_after - sys_before)))"
kill -CONT "$worker"
touch "$T/cont"
wait "$clients" || fail "clients failed: $(cat "$T/clients.err")"
served=$(cat "$T/clients.out")
[ "$served" = 30 ] || fail "only $served of 30 clients were served after SIGCONT: $(cat "$T/clients.err")"
final=$(metric "portshare_listener_drops_total{$L,slot=\"0\"}")
[ "$final" -ge "$drops" ] || fail "the drops counter went down: $drops -> $final"
over_after=$(metric portshare_listen_overflows_total)
[ "$over_after" -gt "$over_before" ] || fail "portshare_listen_overflows_total did not rise: $over_before -> $over_after"
ok "an overflowing accept queue shows in portshare_listener_drops_total ($drops drops, queue $queued of backlog 2) and portshare_listen_overflows_total (+$((over_after - over_before))), and all 30 clients were served after SIGCONT"

# with TCP_DEFER_ACCEPT the kernel discards the ACK that ends each handshake
# (it waits for the request) and counts that as a drop of the listener too
SUP_SUBCMD=serve sup_start deferred -l 127.0.0.1:0 -w 1 --metrics 127.0.0.1:0
M=http://127.0.0.1:$(grep -o 'metrics endpoint on tcp://[^ ]*' "$T/deferred.log" | sed 's/.*://')
L="listener=\"tcp://127.0.0.1:$PORT\""
for _ in $(seq 10); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" || fail "request failed"; done
ddrops=$(metric "portshare_listener_drops_total{$L,slot=\"0\"}")
[ "$ddrops" -ge 10 ] || fail "10 deferred handshakes, drops_total $ddrops: does this kernel no longer count the discarded ACKs? (then the documentation of the metric is wrong)"
ok "a defer listener counts the discarded handshake ACKs as drops: $ddrops after 10 connections and no overflow"
echo "PASS: drops per socket and overflows per namespace, as documented"
