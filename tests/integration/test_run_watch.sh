#!/usr/bin/env bash
# Issue 13, item 5: --watch PATH reloads on change (dev mode).  The worker
# is a python3 HTTP server whose answer is a constant in its own source;
# under continuous load:
#   - an edit of the watched source: the new generation serves the new text;
#   - a broken edit (a syntax error): the new generation exits, the reload is
#     rolled back, the old generation keeps serving, nothing is refused;
#   - a burst of writes is one reload (debounce), a directory created
#     after the start is watched too, dotfiles are ignored, a watched single
#     file replaced by rename (an editor's save) is seen;
# 0 requests fail over all of it.  A missing path exits 2.
. "$(dirname "$0")/sup_lib.sh"
need python3 curl

mkdir -p "$T/app"
write_app() { # write_app TEXT [BROKEN]: the server, written as an editor would (new file, rename)
    cat >"$T/app/.server.py.tmp" <<EOS
import http.server, os, signal, socket, threading
from extra import EXTRA
TEXT = "$1"
${2:-}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s%s gen=%s\n" % (TEXT, EXTRA, os.environ["PORTSHARE_GENERATION"])).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.socket.setblocking(True)
srv.daemon_threads = False
$PY_SERVE
EOS
    mv "$T/app/.server.py.tmp" "$T/app/server.py"
}
echo 'EXTRA = ""' >"$T/app/extra.py"
write_app "version one"
echo "debug = 0" >"$T/settings.ini"

reloads() { status_json w | jq '.reloads.done + .reloads.rolled_back'; }
# settled N: N reloads have ended and none is in flight
settled() { status_json w | jq -e ".reloads.done + .reloads.rolled_back == $1 and .reloading == false" >/dev/null; }
body() { curl -sf "http://127.0.0.1:$PORT/"; }
serves() { body | grep -q "^$1"; }

# the worker's drain (sup_lib.sh's PY_SERVE) survives a SIGTERM that lands
# while its main thread holds threading's lock, as it does around each
# accepted connection; the old "SIGTERM handler starts a shutdown thread"
# hung there for good, with the connection it had just accepted (one
# request in 15 000 timed out, the worker was SIGKILLed after the drain
# timeout)
py_drain_check || fail "the python worker does not drain when SIGTERM meets threading's lock"
ok "the worker drains when SIGTERM meets threading's lock"

cd "$T/app"
# Debian's python3: a python3 first on PATH may be a shim that takes
# seconds to start under load, and a broken edit that has not reached its
# syntax error when the ready delay is over is taken as ready (the server
# polls with a timeout, so the kernel's view rarely catches it waiting)
sup_start w -l 127.0.0.1:0 -w 2 --ready-timeout 10s --ready-delay 3s --drain-timeout 5s \
    --watch "$T/app" --watch "$T/settings.ini" -- /usr/bin/python3 "$T/app/server.py"
grep -q 'watching 2 path(s)' "$T/w.log" || fail "no watching line: $(cat "$T/w.log")"
serves "version one" || fail "generation 1 does not serve: $(body)"
load_start load --connect 127.0.0.1:$PORT --threads 1 --concurrency 4 --duration 180

# 1. an edit reloads; the new generation serves it
write_app "version two"
wait_until 20 serves "version two" || fail "the edit was not picked up: $(body); $(tail -5 "$T/w.log")"
wait_until 20 settled 1 || fail "one edit, $(reloads) reloads"
ok "an edit of server.py: generation $(status_json w | jq .generation) serves it"

# 2. a broken edit: rolled back, the old generation keeps serving
write_app "version three" "this is not python"
wait_until 30 bash -c "'$PORTSHARE' status --json --control '$T/w.sock' | jq -e '.reloads.rolled_back == 1'" ||
    fail "the broken edit was not rolled back: $(status_json w)"
serves "version two" || fail "after the rollback: $(body)"
status_json w | jq -e '.last_reload_error | test("exited")' >/dev/null || fail "no reload error: $(status_json w)"
ok "a broken edit: rolled back ($(status_json w | jq -r .last_reload_error | cut -c1-80)...), version two still serves"

# 3. the fix, written in a burst of 5 writes within 0.2 s: one reload
before=$(reloads)
for i in 1 2 3 4 5; do write_app "version four"; sleep 0.04; done
wait_until 20 serves "version four" || fail "the fix was not picked up: $(body)"
wait_until 20 settled $((before + 1)) || fail "the fix did not settle: $(status_json w)"
sleep 1
[ "$(( $(reloads) - before ))" = 1 ] || fail "a burst of 5 writes made $(( $(reloads) - before )) reloads"
ok "a burst of 5 writes: 1 reload"

# 4. dotfiles are ignored; a directory created after the start is watched
before=$(reloads)
echo x >"$T/app/.server.py.swp"; mkdir -p "$T/app/.git"; echo x >"$T/app/.git/index"; echo x >"$T/app/server.py~"
sleep 1.5
[ "$(reloads)" = "$before" ] || fail "dotfiles or backups reloaded"
mkdir -p "$T/app/pkg/sub"
wait_until 20 settled $((before + 1)) || fail "creating a directory did not reload once: $(status_json w)"
echo 'EXTRA = " +pkg"' >"$T/app/pkg/sub/data.py"
echo 'from pkg.sub.data import EXTRA' >"$T/app/extra.py"
touch "$T/app/pkg/__init__.py" "$T/app/pkg/sub/__init__.py"
wait_until 20 serves "version four +pkg" || fail "a change below a new directory was not picked up: $(body)"
wait_until 20 settled $((before + 2)) || fail "not settled: $(status_json w)"
echo 'EXTRA = " +deep"' >"$T/app/pkg/sub/data.py"
wait_until 20 serves "version four +deep" || fail "a change two directories deep was not picked up: $(body)"
ok "dotfiles and *~ ignored; directories created later are watched, down to pkg/sub"

# 5. a watched single file, replaced by rename
before=$(reloads)
echo "debug = 1" >"$T/settings.new"; mv "$T/settings.new" "$T/settings.ini"
wait_until 20 bash -c "[ \$('$PORTSHARE' status --json --control '$T/w.sock' | jq '.reloads.done + .reloads.rolled_back') -gt $before ]" ||
    fail "replacing the watched file did not reload"
ok "a watched file replaced by rename reloads"

load_stop load
[ "$(jq .refused <<<"$RES")" = 0 ] && [ "$(jq .failed <<<"$RES")" = 0 ] ||
    fail "requests failed or were refused while watching: $RES"
ok "under load through all of it: $(jq .sent <<<"$RES") requests, 0 failed, 0 refused; $(reloads) reloads, $(status_json w | jq .reloads.rolled_back) rolled back"
ctl w stop >/dev/null
cd /

# bad input
rc=0; out=$("$PORTSHARE" run -l 127.0.0.1:0 --watch "$T/nonexistent" -- true 2>&1) || rc=$?
[ $rc = 2 ] || fail "--watch of a missing path: exit $rc, want 2"
grep -q -- "--watch $T/nonexistent: No such file or directory" <<<"$out" || fail "unclear: $out"
ok "--watch of a missing path: exit 2, '$out'"
echo "PASS: --watch"
