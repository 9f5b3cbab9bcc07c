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

stop_worker
[ "$WSTATUS" = 0 ] || fail "worker exit status $WSTATUS"
