#!/usr/bin/env bash
# A worker that calls listen(fd, 1) on its copy sets the backlog of the
# slot's socket itself; the next worker of the slot gets the configured
# backlog back (?backlog=N, 4096 by default), not what its predecessor left.
. "$(dirname "$0")/sup_lib.sh"
need ss

cat >"$T/shrink.py" <<EOS
import os, socket, sys
ls = socket.socket(fileno=3)
if not os.path.exists("$T/shrunk"):
    open("$T/shrunk", "w").close()
    ls.listen(1)          # the backlog of the socket the supervisor holds
    sys.exit(3)           # and gone: the slot restarts
while True:
    ls.accept()[0].close()
EOS
backlog_of() { ss -Hltn "sport = :$PORT" | awk '{print $3}' | head -1; }
sup_start bl -l "127.0.0.1:0?backlog=777" -w 1 --ready-delay 300ms -- /usr/bin/python3 "$T/shrink.py"
wait_until 10 test -e "$T/shrunk" || fail "the first worker did not run"
wait_until 10 bash -c "'$PORTSHARE' status --json --control '$T/bl.sock' | jq -e '.slots[0].restarts >= 1 and .slots[0].state == \"ready\"'" ||
    fail "the slot did not restart: $(status_json bl | jq -c '.slots[0]')"
[ "$(backlog_of)" = 777 ] || fail "the next worker's socket has backlog $(backlog_of), want 777 (ss: $(ss -Hltn "sport = :$PORT"))"
ok "a worker's listen(fd, 1) does not outlive it: the next worker's socket has the configured backlog 777"
