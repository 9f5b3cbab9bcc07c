#!/usr/bin/env bash
# examples/c/hello.c (libportshare: ps_listen_fds, ps_notify READY=1; stops
# accepting on SIGTERM after the request it answers), built by CMake as
# example_hello, runs under portshare run with no option and loses nothing
# in 5 reloads under connection-close load.  (It answers HTTP/1.0 and closes:
# no keep-alive run.)
. "$(dirname "$0")/examples_lib.sh"
need curl jq
: "${PS_BUILD_DIR:?PS_BUILD_DIR must name the build tree}"
HELLO=$PS_BUILD_DIR/example_hello
[ -x "$HELLO" ] || fail "$HELLO is missing: CMake builds it with the tests (BUILD_TESTING)"

# --ready notify: ready by READY=1 only, whatever the load (not by /proc or the delay)
sup_start c -l 127.0.0.1:0 -w 2 --ready notify -- "$HELLO"
grep -q 'ready (READY=1)' "$T/c.log" || fail "the C example did not say READY=1: $(grep worker_ready "$T/c.log")"
answers 1 c
reloads_under_load c c 5
answers 6 c
