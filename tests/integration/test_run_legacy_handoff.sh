#!/usr/bin/env bash
# Issue 13, item 6: --handoff einhorn / server-starter / all.  Workers are
# small python3 servers that find their sockets exactly the way the client
# libraries of those supervisors do:
#   einhorn (einhorn/worker.rb, go-einhorn): EINHORN_FD_COUNT, then
#     EINHORN_FD_<i> = a descriptor number; a worker is one whose
#     EINHORN_MASTER_PID is its parent pid (Einhorn::Worker.ensure_worker!);
#   Server::Starter (Server::Starter::server_ports, lestrrat-go's
#     server-starter): SERVER_STARTER_PORT split on ';', each part on the
#     first '=' into ADDRESS and descriptor ("127.0.0.1:8080=3", a unix
#     socket as its path), SERVER_STARTER_GENERATION.
# Each serves through portshare, 3 reloads under load lose nothing, and
# without "systemd" in the list no LISTEN_* variable is set.
. "$(dirname "$0")/sup_lib.sh"
need python3 curl

cat >"$T/legacy.py" <<'EOS'
import http.server, os, signal, socket, sys, threading
kind = sys.argv[1]
if kind == "einhorn":
    if int(os.environ["EINHORN_MASTER_PID"]) != os.getppid():
        sys.exit("EINHORN_MASTER_PID is not my parent")
    fds = [int(os.environ["EINHORN_FD_%d" % i]) for i in range(int(os.environ["EINHORN_FD_COUNT"]))]
    names = ["fd%d" % i for i in range(len(fds))]
else:
    ports = dict(p.split("=", 1) for p in os.environ["SERVER_STARTER_PORT"].split(";"))
    names = list(ports)
    fds = [int(v) for v in ports.values()]
    if os.environ["SERVER_STARTER_GENERATION"] != os.environ["PORTSHARE_GENERATION"]:
        sys.exit("SERVER_STARTER_GENERATION is not the generation")
info = "%s names=%s fds=%s listen_fds=%s\n" % (kind, ",".join(names), ",".join(map(str, fds)),
                                              os.environ.get("LISTEN_FDS", "-"))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = info.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=fds[0])   # the first listener: TCP
srv.socket.setblocking(True)
srv.daemon_threads = False
# drain on SIGTERM (sup_lib.sh's PY_SERVE, appended below): stop accepting,
# finish what is in flight, close() (what is queued stays for the slot's
# next worker)
EOS
echo "$PY_SERVE" >>"$T/legacy.py"

check() { # check NAME HANDOFF KIND EXPECTED-BODY-REGEX
    local name=$1 handoff=$2 kind=$3 want=$4 body
    sup_start "$name" -l 127.0.0.1:0 -l "unix:$T/$name.unix" -w 2 --handoff "$handoff" --drain-timeout 5s -- python3 "$T/legacy.py" "$kind"
    body=$(curl -sf "http://127.0.0.1:$PORT/") || fail "$handoff: no answer: $(tail -5 "$T/$name.log")"
    want=${want//PORT/$PORT}
    want=${want//UNIX/$T/$name.unix}
    grep -qE "^$want\$" <<<"$body" || fail "$handoff: worker saw '$body', want /$want/"
    load_start "$name.load" --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 120
    for i in 1 2 3; do ctl "$name" reload >/dev/null || fail "$handoff: reload $i failed: $(tail -5 "$T/$name.log")"; done
    load_stop "$name.load"
    [ "$(jq .failed <<<"$RES")" = 0 ] || fail "$handoff: requests failed across reloads: $RES"
    curl -sf "http://127.0.0.1:$PORT/" >/dev/null || fail "$handoff: generation 4 does not answer"
    ok "--handoff $handoff: '$body', 3 reloads under load, $(jq .sent <<<"$RES") requests, 0 failed"
    ctl "$name" stop >/dev/null
}

check ei einhorn einhorn 'einhorn names=fd0,fd1 fds=3,4 listen_fds=-'
check ss server-starter starter 'starter names=127.0.0.1:PORT,UNIX fds=3,4 listen_fds=-'
check al all starter 'starter names=127.0.0.1:PORT,UNIX fds=3,4 listen_fds=2'
check es einhorn,systemd einhorn 'einhorn names=fd0,fd1 fds=3,4 listen_fds=2'

# the default is systemd alone: no legacy variable leaks in
cat >"$T/env.sh" <<EOS
#!/bin/sh
env | grep -E '^(EINHORN|SERVER_STARTER|LISTEN_FDS)' | sort >"$T/env.\$PORTSHARE_SLOT"
exec "$TESTWORKER"
EOS
chmod +x "$T/env.sh"
sup_start df -l 127.0.0.1:0 -w 1 -- "$T/env.sh"
[ "$(cat "$T/env.0")" = "LISTEN_FDS=1" ] || fail "default hand-off set: $(cat "$T/env.0")"
ctl df stop >/dev/null
ok "default: LISTEN_FDS only"

for bad in "" "inetd" "systemd," "einhorn,,systemd"; do
    rc=0; out=$("$PORTSHARE" run -l 127.0.0.1:0 --handoff "$bad" -- true 2>&1) || rc=$?
    [ $rc = 2 ] || fail "--handoff '$bad': exit $rc, want 2"
    grep -q "bad --handoff" <<<"$out" || fail "--handoff '$bad': unclear: $out"
done
ok "bad --handoff lists: exit 2 with one line"
echo "PASS: einhorn and Server::Starter hand-offs"
