#!/usr/bin/env bash
# test_http_traversal.sh - attempts to read outside DIR through the real
# worker: "..", encoded "..", encoded slashes, NUL, symlinks leading out
# (relative, absolute, a directory symlink); none may return a byte of the
# file outside, each gets the status the worker documents.
source "$(dirname "$0")/http_lib.sh"

make_www
start_worker w "$WWW"

check() { # check STATUS RAW-TARGET
    local want=$1 target=$2 out
    out=$(raw "GET $target HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    echo "$out" | grep -q SECRET-OUTSIDE-DIR && fail "$target leaked the file outside DIR"
    [ "$(echo "$out" | head -1 | cut -d' ' -f2)" = "$want" ] ||
        fail "$target: $(echo "$out" | head -1), expected $want"
}

check 400 '/../secret'
check 400 '/sub/../../secret'
check 400 '/%2e%2e/secret'
check 400 '/%2E%2E%2fsecret'
check 400 '/..%2fsecret'
check 400 '/sub/%2e%2e/%2e%2e/secret'
check 400 '/a.txt%00'
check 400 '/a.txt%00.html'
check 400 '/%'
check 400 '../secret'
check 400 'http://x/../secret'
check 403 '/out'
check 403 '/abs'
check 403 '/updir/secret'
check 403 '/updir/www/a.txt'
check 200 '/sub/..//./a.txt'
check 200 '/sub/%2e%2e/a.txt'
ok "no traversal escapes DIR: .. (plain, encoded, via %2f), NUL, symlinks out (400/403)"

# curl normalises by default; --path-as-is sends the dots as written
[ "$(status_of /../../../../etc/passwd)" = 400 ] || fail "/../../../../etc/passwd"
curl -s --path-as-is "$(URL /../../../../etc/passwd)" | grep -q root: && fail "/etc/passwd leaked"
ok "curl --path-as-is /../../../../etc/passwd: 400, nothing leaked"

# An encoded slash is a slash of the decoded path, never dropped: a front
# end that blocks /a.txt by its raw target must not be walked around by
# /a.txt%2f (nginx and h2o: 404; %00 is 400 as nginx answers).
for p in /a.txt%2f /a.txt%2F /a.txt%2f. /a.txt/ /a.txt%5c /a.txt%5C /sub%5cindex.html; do
    [ "$(status_of "$p")" = 404 ] || fail "curl --path-as-is $p: $(status_of "$p"), expected 404"
    curl -s --path-as-is "$(URL "$p")" | grep -q hello && fail "$p served /a.txt"
done
[ "$(status_of /a.txt%00)" = 400 ] || fail "/a.txt%00: $(status_of /a.txt%00), expected 400"
[ "$(status_of /sub%2findex.html)" = 200 ] || fail "/sub%2findex.html: not the decoded /sub/index.html"
ok "encoded slashes: /a.txt%2f, %2F, %5c are 404 (not /a.txt), %00 400, /sub%2findex.html 200"

stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exit status $WSTATUS"
