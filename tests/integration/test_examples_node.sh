#!/usr/bin/env bash
# examples/node/server.js (listen({fd: 3}), drains on SIGTERM) runs under
# portshare run with no option and loses nothing in 5 reloads under
# connection-close load, and in 2 more under keep-alive load.
. "$(dirname "$0")/examples_lib.sh"
need curl jq
command -v node >/dev/null || skip "node is not installed (Debian package nodejs)"

sup_start node -l 127.0.0.1:0 -w 2 -- node "$EX/node/server.js"
answers 1 node
reloads_under_load node node 5
answers 6 node
reloads_under_load node node 2 --keepalive
answers 8 node
