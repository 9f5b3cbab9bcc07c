#!/usr/bin/env bash
# Issue 12: --cpu-affinity.  Slot i's worker runs on CPU i mod N of the CPUs
# the supervisor may use, and a new connection goes to the slot of the CPU
# that received it: on loopback that is the client's CPU, so a client pinned
# to one CPU is served by that CPU's worker only (without the option the
# kernel's hash spreads it).  While that slot is not ready its connections
# fall back to the others.  Both steerings (eBPF map, classic BPF with
# SKF_AD_CPU).
. "$(dirname "$0")/sup_lib.sh"
need taskset

cpus=($(taskset -pc $$ | sed 's/.*: //' | tr ',' '\n' | while IFS=- read a b; do seq "$a" "${b:-$a}"; done))
[ ${#cpus[@]} -ge 2 ] || skip "needs 2 CPUs, this shell may use ${#cpus[@]}"

pinned_pids() { # pinned_pids NAME CPU: ok responses by pid of a client on CPU
    taskset -c "$2" "$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --requests 400 \
        --timeout 10000 --json 2>/dev/null | jq -c .by_pid
}

for steering in ebpf cbpf; do
    [ "$steering" = ebpf ] && [ "$(id -u)" != 0 ] && { note "eBPF needs root: cbpf only"; continue; }
    name=a$steering
    sup_start $name -l 127.0.0.1:0 -w 2 --steering $steering --cpu-affinity -- "$TESTWORKER"
    for s in 0 1; do
        pid=$(status_json $name | jq -r ".slots[$s].pid")
        got=$(grep Cpus_allowed_list /proc/$pid/status | awk '{print $2}')
        [ "$got" = "${cpus[$s]}" ] || fail "$steering: slot $s's worker runs on CPUs $got, not ${cpus[$s]}"
        by=$(pinned_pids $name "${cpus[$s]}")
        [ "$(jq -r 'keys | join(" ")' <<<"$by")" = "$pid" ] ||
            fail "$steering: a client on CPU ${cpus[$s]} was not served by slot $s's worker $pid only: $by"
    done
    ok "$steering: slot i on CPU ${cpus[0]}/${cpus[1]}, its CPU's connections go to it"
done

# without the option a pinned client is spread by the hash
sup_start h -l 127.0.0.1:0 -w 2 -- "$TESTWORKER"
by=$(pinned_pids h "${cpus[0]}")
[ "$(jq 'keys | length' <<<"$by")" = 2 ] || fail "without --cpu-affinity one worker got everything: $by"
ok "without --cpu-affinity a pinned client is spread over both: $by"

# slot 0 never gets ready: CPU 0's connections fall back to slot 1
cat >"$T/w.sh" <<EOS
#!/bin/sh
[ "\$PORTSHARE_SLOT" = 0 ] && exec "$TESTWORKER" --never-ready
exec "$TESTWORKER"
EOS
chmod +x "$T/w.sh"
"$PORTSHARE" run --name f --control "$T/f.sock" -l 127.0.0.1:0 -w 2 --cpu-affinity "${STEER[@]}" -- "$T/w.sh" 2>"$T/f.log" &
SUP_PIDS+=("$!")
wait_until 20 grep -q 'worker_ready.*slot 1' "$T/f.log" || fail "slot 1 not ready: $(cat "$T/f.log")"
PORT=$(grep -o 'listening on tcp://[^ ]*' "$T/f.log" | head -1 | sed 's/.*://')
one=$(status_json f | jq -r '.slots[1].pid')
by=$(pinned_pids f "${cpus[0]}")
[ "$(jq -r 'keys | join(" ")' <<<"$by")" = "$one" ] || fail "CPU ${cpus[0]}'s slot is not ready: its connections should go to slot 1 ($one): $by"
ok "slot 0 not ready: a client on CPU ${cpus[0]} is served by slot 1"
# more slots than CPUs: said once, in the log
n=$((${#cpus[@]} + 1))
sup_start m -l 127.0.0.1:0 -w $n --cpu-affinity -- "$TESTWORKER"
[ "$(grep -c "warn cpu_affinity: --cpu-affinity with $n slots on ${#cpus[@]} CPUs" "$T/m.log")" = 1 ] ||
    fail "no (or more than one) warning for $n slots on ${#cpus[@]} CPUs: $(grep cpu_affinity "$T/m.log")"
ok "$n slots on ${#cpus[@]} CPUs: warned once"
echo "PASS: --cpu-affinity pins workers and steers by the receiving CPU, falling back to the hash"
