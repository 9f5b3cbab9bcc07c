#!/usr/bin/env bash
# Issue 12: which steering a supervisor gets, and the fallback stated.
#   - as root, the default picks eBPF (where this kernel has it) and says so;
#   - --steering cbpf forces classic BPF, status says so with the reason;
#   - unprivileged, the default falls back to classic BPF, the log says once
#     why (bpf(2) refused), status shows it; --steering ebpf then refuses to
#     start: exit 6, one line.
. "$(dirname "$0")/sup_lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (to compare with an unprivileged supervisor); running as uid $(id -u)"

sup_start a -l 127.0.0.1:0 -w 2 -- "$TESTWORKER"
st=$(status_json a)
case $(jq -r .steering <<<"$st") in
ebpf) ok "root, default: ebpf" ;;
cbpf) note "this kernel cannot load the eBPF program: $(jq -r .steering_reason <<<"$st")"
      grep -q 'warn capability: steering degraded (cbpf): classic BPF steering, no migration (eBPF not used: ' "$T/a.log" || fail "the fallback was not logged: $(cat "$T/a.log")" ;;
*) fail "unexpected steering: $(jq -c '{steering, steering_reason}' <<<"$st")" ;;
esac
[ "$(jq -r '.listeners[0].steering' <<<"$st")" = "$(jq -r .steering <<<"$st")" ] || fail "listener steering differs: $st"
[ "$(grep -c 'capability: steering' "$T/a.log")" = 1 ] || fail "the steering is not logged exactly once: $(grep steering "$T/a.log")"

sup_start c -l 127.0.0.1:0 -w 2 --steering cbpf -- "$TESTWORKER"
st=$(status_json c)
[ "$(jq -r .steering <<<"$st")" = cbpf ] || fail "--steering cbpf: $(jq -c '{steering, steering_reason}' <<<"$st")"
[ "$(jq -r .steering_reason <<<"$st")" = "--steering cbpf" ] || fail "reason: $(jq -r .steering_reason <<<"$st")"
ctl c status | grep -q '^steering    cbpf (no migration: --steering cbpf)' || fail "status text: $(ctl c status | head -5)"
"$LOADGEN" --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --requests 200 --json >"$T/c.json" 2>/dev/null ||
    fail "cbpf supervisor does not serve: $(cat "$T/c.json")"
ok "--steering cbpf: status and text say so, it serves"

# a shared-mode group is not steered
sup_start s -l 127.0.0.1:0 -w 2 --mode shared -- "$TESTWORKER"
[ "$(status_json s | jq -r .steering)" = none ] || fail "shared mode: $(status_json s | jq -c '{steering}')"
ok "shared mode: steering none"

# unprivileged: nobody, with a control directory of its own
# (inside $T, which it may only traverse; cleanup removes it with $T)
chmod 0711 "$T"
U=$T/u
mkdir "$U"
chown 65534 "$U"
chmod 0700 "$U"
public_bins
setpriv --reuid=65534 --regid=65534 --clear-groups "$PUB_PORTSHARE" run --name u --control "$U/u.sock" \
    -l 127.0.0.1:0 -w 2 -- "$PUB_TESTWORKER" 2>"$T/u.log" &
SUP_PIDS+=("$!")
wait_until 20 grep -q 'ready: all' "$T/u.log" || fail "unprivileged supervisor did not start: $(cat "$T/u.log")"
grep -q 'classic BPF steering, no migration (eBPF not used: bpf(' "$T/u.log" ||
    fail "the unprivileged fallback does not say why: $(grep steering "$T/u.log")"
st=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$PUB_PORTSHARE" status --json --control "$U/u.sock")
[ "$(jq -r .steering <<<"$st")" = cbpf ] || fail "unprivileged: $(jq -c '{steering, steering_reason}' <<<"$st")"
ok "unprivileged: cbpf, because: $(jq -r .steering_reason <<<"$st")"

rc=0
timeout 10 setpriv --reuid=65534 --regid=65534 --clear-groups "$PUB_PORTSHARE" run --steering ebpf --name v \
    --control "$U/v.sock" -l 127.0.0.1:0 -- "$PUB_TESTWORKER" >/dev/null 2>"$T/v.err" || rc=$?
[ "$rc" = 6 ] || fail "--steering ebpf unprivileged exited $rc, expected 6: $(cat "$T/v.err")"
[ "$(wc -l <"$T/v.err")" = 1 ] && grep -q '^portshare: fatal: --steering ebpf: cannot load the eBPF program: ' "$T/v.err" ||
    fail "not one clear line: $(cat "$T/v.err")"
ok "--steering ebpf unprivileged: exit 6, $(cat "$T/v.err")"
echo "PASS: steering chosen, forced, fallen back and refused as documented"
