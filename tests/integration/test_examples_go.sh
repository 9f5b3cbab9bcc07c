#!/usr/bin/env bash
# examples/go (net.FileListener on fd 3, READY=1 on NOTIFY_SOCKET, graceful
# http.Server.Shutdown on SIGTERM), built with the local Go toolchain and
# nothing downloaded, runs under portshare run with no option and loses
# nothing in 5 reloads under connection-close load, and in 2 more under
# keep-alive load.
. "$(dirname "$0")/examples_lib.sh"
need curl jq
command -v go >/dev/null || skip "go is not installed (Debian package golang-go)"

# a private cache and GOPATH; the module has no requirements, so nothing
# is fetched (GOPROXY=off makes sure), and no newer toolchain either
(cd "$EX/go" && HOME=$T GOCACHE=$T/gocache GOPATH=$T/gopath GOPROXY=off GOTOOLCHAIN=local GOFLAGS='' \
    go build -o "$T/hello" .) >"$T/gobuild.log" 2>&1 || { cat "$T/gobuild.log" >&2; fail "go build of examples/go failed"; }

# --ready notify: ready by READY=1 only, whatever the load (not by /proc or the delay)
sup_start go -l 127.0.0.1:0 -w 2 --ready notify -- "$T/hello"
grep -q 'ready (READY=1)' "$T/go.log" || fail "the go example did not say READY=1: $(grep worker_ready "$T/go.log")"
answers 1 go
reloads_under_load go go 5
answers 6 go
reloads_under_load go go 2 --keepalive
answers 8 go
