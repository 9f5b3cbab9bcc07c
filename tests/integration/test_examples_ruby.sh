#!/usr/bin/env bash
# examples/ruby/config.ru under puma, which takes LISTEN_FDS itself
# (--bind-to-activated-sockets=only: that socket and no bind of its own),
# says READY=1 as puma loads it, runs under portshare run --ready notify
# and loses nothing in 5 reloads under connection-close load, and in 2 more
# under keep-alive load.
. "$(dirname "$0")/examples_lib.sh"
need curl jq
command -v puma >/dev/null || skip "puma is not installed (Debian package puma)"

run=(puma --bind-to-activated-sockets=only "$EX/ruby/config.ru")
# the sd_notify gem 0.1.1 (Debian's ruby-sd-notify) cannot write to an
# abstract NOTIFY_SOCKET (@name, which portshare gives): with it, puma
# fails as it boots.  Without the gem, puma leaves NOTIFY_SOCKET alone.
ruby -e 'require "sd_notify"' 2>/dev/null &&
    skip "the sd_notify gem is installed: puma would write READY=1 itself and fail to reach portshare's abstract NOTIFY_SOCKET (see README, Examples)"
# ?defer=1: puma is handed a connection once its request is there; on its
# drain signal it closes connections accepted but not read yet (1 EOF in
# 11,621 requests over 5 reloads without it, as in the README)
sup_start rb -l "127.0.0.1:0?defer=1" -w 2 --ready notify -- "${run[@]}"
grep -q 'ready (READY=1)' "$T/rb.log" || fail "the puma example did not say READY=1: $(grep worker_ready "$T/rb.log")"
# without the flag, puma binds its default 0.0.0.0:9292 and closes the
# socket it was handed: it would not answer here
answers 1 puma
# and, once it answers, the only socket its workers listen on is that one
pids=$(sup_worker_pids rb | paste -sd'|')
own=$(ss -Hltnp | grep -E "pid=($pids)," | grep -v "127.0.0.1:$PORT " || true)
[ -z "$own" ] || fail "puma listens on a socket of its own: $own"
reloads_under_load rb puma 5
answers 6 puma
reloads_under_load rb puma 2 --keepalive
answers 8 puma
