#!/usr/bin/env bash
# test_run_drain_signal.sh - without --drain-signal, a known server gets its
# own graceful stop signal, chosen by the program's name:
#   1. a worker program named nginx (found through `env NAME=VALUE`) gets
#      SIGQUIT when a reload replaces it, and the log says why, once;
#      --drain-signal TERM overrides it; an unknown name gets SIGTERM;
#      workers start with every signal at its default action;
#   2. Debian's real lighttpd (graceful on SIGINT, immediate on SIGTERM),
#      run with no option: a download in flight when a reload replaces
#      it completes whole.  With SIGTERM, lighttpd cuts it.
set -euo pipefail
. "$(dirname "$0")/sup_lib.sh"
need curl python3
[ -x /usr/bin/python3 ] || skip "Debian's /usr/bin/python3 is missing (package python3)"

# A worker that records the signal that asked it to stop, then exits 0.
mkdir -p "$T/bin"
cat >"$T/bin/sigworker" <<'EOS'
#!/usr/bin/python3
import os, signal, socket, sys, time
out = sys.argv[1]
ls = socket.socket(fileno=3)
def stop(sig, frame):
    with open(out, "a") as f:
        f.write("%d %s\n" % (os.getpid(), signal.Signals(sig).name))
    os._exit(0)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
    signal.signal(s, stop)
while True:
    c, _ = ls.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    c.close()
EOS
chmod +x "$T/bin/sigworker"
cp "$T/bin/sigworker" "$T/bin/nginx"

# signal_after_reload NAME RUN-ARGS...: start, reload once, set SIG to the
# signal the first generation's worker got (not in a subshell: the
# supervisor must be this shell's child, for cleanup)
signal_after_reload() {
    local name=$1; shift
    sup_start "$name" -l 127.0.0.1:0 -w 1 "$@"
    ctl "$name" reload >/dev/null || fail "$name: reload failed: $(cat "$T/$name.log")"
    wait_until 10 test -s "$T/$name.sig" ||
        fail "$name: the old worker recorded no signal: $(cat "$T/$name.log")"
    SIG=$(cut -d' ' -f2 "$T/$name.sig")
}

signal_after_reload known -- env PS_X=1 "$T/bin/nginx" "$T/known.sig"
[ "$SIG" = SIGQUIT ] || fail "a program named nginx got $SIG, want SIGQUIT (nginx's graceful stop)"
[ "$(grep -c 'drain_signal' "$T/known.log")" = 1 ] ||
    fail "the log should say once why the drain signal is QUIT: $(cat "$T/known.log")"
grep -q 'the program is nginx: drain signal QUIT' "$T/known.log" || fail "no drain_signal line naming nginx"
ok "a program named nginx (through env) is drained with SIGQUIT, said once in the log"

signal_after_reload given --drain-signal TERM -- "$T/bin/nginx" "$T/given.sig"
[ "$SIG" = SIGTERM ] || fail "--drain-signal TERM should override the name: got $SIG"
! grep -q drain_signal "$T/given.log" || fail "with --drain-signal no default is chosen or said"
ok "--drain-signal TERM overrides the program's name"

signal_after_reload plain -- "$T/bin/sigworker" "$T/plain.sig"
[ "$SIG" = SIGTERM ] || fail "an unknown program got $SIG, want SIGTERM"
ok "an unknown program is drained with SIGTERM"

# A supervisor started in the background of a shell (as here) has SIGINT
# and SIGQUIT ignored; its workers must not inherit that, or a worker
# drained with INT or QUIT never hears it.
cat >"$T/bin/ign" <<EOS
#!/bin/sh
grep SigIgn /proc/self/status >"$T/ign.txt"
exec $TESTWORKER
EOS
chmod +x "$T/bin/ign"
sup_start ign -l 127.0.0.1:0 -w 1 -- "$T/bin/ign"
grep -q 'SigIgn:[[:space:]]*0*$' "$T/ign.txt" ||
    fail "a worker inherited ignored signals: $(cat "$T/ign.txt") (the supervisor: $(grep SigIgn /proc/$SUP_PID/status))"
ok "workers start with every signal at its default action"

# 2. lighttpd, no option: a slow download in flight across a reload
if ! command -v lighttpd >/dev/null; then
    skip "lighttpd not found (Debian package 'lighttpd'); part 1 passed"
fi
lighttpd_site
# larger than what the kernel buffers between the two ends (tcp_wmem +
# tcp_rmem, up to 10 MB): lighttpd must still be sending at the reload
head -c 24000000 /dev/urandom >"$T/www/big.bin"
sup_start lt -l 127.0.0.1:0 -w 1 -- lighttpd -D -f "$T/lighttpd.conf"
grep -q 'the program is lighttpd: drain signal INT' "$T/lt.log" || fail "lighttpd should be drained with INT"
# 24 MB at 4 MB/s: the reload comes a second into it
curl -sS --max-time 30 --limit-rate 4000K -o "$T/got.bin" -w '%{http_code} %{size_download}\n' \
    "http://127.0.0.1:$PORT/big.bin" >"$T/curl.out" 2>"$T/curl.err" &
cpid=$!
sleep 1
ctl lt reload >/dev/null || fail "lighttpd reload failed: $(cat "$T/lt.log")"
wait "$cpid" || fail "the download in flight failed across the reload: $(cat "$T/curl.err")"
cmp -s "$T/got.bin" "$T/www/big.bin" || fail "the download in flight is not whole: $(cat "$T/curl.out")"
grep -q 'generation 1) exited with exit code 0' "$T/lt.log" ||
    fail "the old lighttpd did not exit 0 after its drain: $(grep worker_ "$T/lt.log")"
ok "lighttpd without options finishes a download in flight across a reload (drained with INT)"
