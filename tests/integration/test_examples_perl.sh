#!/usr/bin/env bash
# examples/perl/app.psgi under starman, handed its socket the
# Server::Starter way (--handoff server-starter), is drained with QUIT,
# chosen by the program's name (the log says so), and loses nothing in 5
# reloads under connection-close load, and in 2 more under keep-alive load.
. "$(dirname "$0")/examples_lib.sh"
need curl jq
command -v starman >/dev/null || skip "starman is not installed (Debian package starman)"
perl -MNet::Server::SS::PreFork -e 1 2>/dev/null ||
    skip "Net::Server::SS::PreFork is not installed (Debian package libnet-server-ss-prefork-perl)"

sup_start pl --handoff server-starter -l 127.0.0.1:0 -w 2 -- starman --workers 2 "$EX/perl/app.psgi"
grep -q 'drain_signal: the program is starman: drain signal QUIT' "$T/pl.log" ||
    fail "the log does not say starman is drained with QUIT: $(grep -m1 drain_signal "$T/pl.log" || echo 'no drain_signal line')"
answers 1 starman
reloads_under_load pl starman 5
answers 6 starman
grep -q 'Received QUIT. Running a graceful shutdown' "$T/pl.log" || fail "starman never got its graceful QUIT"
reloads_under_load pl starman 2 --keepalive
answers 8 starman
