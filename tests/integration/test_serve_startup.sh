#!/usr/bin/env bash
# Issue 11.4 and 11.5: what `portshare serve` refuses or decides at start.
#  - `-l udp://...` is refused: exit 2, one line (before: a crash loop);
#  - as root without --user the workers run as nobody, not as root, even
#    when nobody cannot enter the directory of the portshare binary (it is
#    exec'd through a descriptor opened before the drop, which does not
#    leak into the worker); --user root still says it on purpose;
#  - a DIR nobody cannot read is refused at start with one line that names
#    the user and the way out.
. "$(dirname "$0")/sup_lib.sh"

# one_line_exit CODE PATTERN -- CMD...: CMD exits CODE with one stderr line matching PATTERN
one_line_exit() {
    local code=$1 pattern=$2 rc=0 err; shift 3
    err=$(timeout 10 "$@" 2>&1 >/dev/null) || rc=$?
    [ "$rc" = "$code" ] || fail "$*: exit $rc, expected $code: $err"
    [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "$*: more than one line: $err"
    grep -qE "$pattern" <<<"$err" || fail "$*: '$err' does not match '$pattern'"
    echo "$err"
}

msg=$(one_line_exit 2 'serve speaks HTTP over TCP: cannot listen on udp://127.0.0.1:0' -- \
    "$PORTSHARE" serve -l udp://127.0.0.1:0 --name u --control "$T/u.sock")
msg2=$(one_line_exit 2 'udp://' -- "$PORTSHARE" serve -l 127.0.0.1:0 -l udp://127.0.0.1:0 --name u --control "$T/u.sock")
ok "udp listen specs refused at start, exit 2: $msg"

[ "$(id -u)" = 0 ] || skip "the rest needs root (the default worker user)"
id nobody >/dev/null 2>&1 || skip "no user 'nobody'"
NOBODY=$(id -u nobody)
chmod 0755 "$T"
# the binary where nobody cannot go (as a build under /root would be)
mkdir -m 0700 "$T/private"
cp "$PORTSHARE" "$T/private/portshare"
mkdir -p "$T/www"
printf 'hello' >"$T/www/a.txt"
chmod -R a+rX "$T/www"
setpriv --reuid="$NOBODY" --regid="$(id -g nobody)" --clear-groups test -x "$T/private/portshare" &&
    fail "nobody can reach the private binary: the test would prove nothing"

SUP_BIN=$T/private/portshare SUP_SUBCMD=serve sup_start def "$T/www" -l 127.0.0.1:0 -w 2
[ "$(curl -sf "http://127.0.0.1:$PORT/a.txt")" = hello ] || fail "the nobody workers do not serve"
for p in $(sup_worker_pids def); do
    [ "$(awk '/^Uid:/ {print $2 $3 $4 $5}' /proc/$p/status)" = "$NOBODY$NOBODY$NOBODY$NOBODY" ] ||
        fail "worker $p runs as $(grep Uid /proc/$p/status), not nobody"
    ls -l "/proc/$p/fd" | grep -q "$T/private" && fail "worker $p holds a descriptor of the binary: $(ls -l /proc/$p/fd)"
done
[ "$(stat -c %u /proc/$SUP_PID)" = 0 ] || fail "the supervisor is not root"
ok "as root without --user: workers run as nobody (uid $NOBODY) from a binary nobody cannot reach, no descriptor leaked"

# a reload execs again through a new descriptor
ctl def reload >/dev/null || fail "reload failed: $(tail -3 "$T/def.log")"
[ "$(curl -sf "http://127.0.0.1:$PORT/a.txt")" = hello ] || fail "not serving after a reload"
ok "reload: the new generation starts the same way"

SUP_SUBCMD=serve sup_start asroot "$T/www" -l 127.0.0.1:0 -w 1 --user root
p=$(sup_worker_pids asroot)
[ "$(awk '/^Uid:/ {print $2}' /proc/$p/status)" = 0 ] || fail "--user root: worker is not root"
ok "--user root runs root workers on purpose"

mkdir -m 0700 "$T/secret"
printf 'x' >"$T/secret/a.txt"
msg=$(one_line_exit 2 "DIR $T/secret cannot be read by user nobody, who runs the workers \(Permission denied\).*--user USER" -- \
    "$PORTSHARE" serve "$T/secret" -l 127.0.0.1:0 --name s --control "$T/s.sock")
# also when the directory itself is open but a parent is not
mkdir -p "$T/private/www" && chmod 0755 "$T/private/www"
one_line_exit 2 "cannot be read by user nobody" -- \
    "$PORTSHARE" serve "$T/private/www" -l 127.0.0.1:0 --name s --control "$T/s.sock" >/dev/null
ok "a DIR nobody cannot read is refused at start: $msg"
