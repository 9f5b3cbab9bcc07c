#!/usr/bin/env bash
# test_run_stall.sh with classic BPF steering forced (--steering cbpf): a
# stalled slot is steered away from and gets a fresh worker; its queue cannot
# move and waits for that worker in the same socket.
PS_STEERING=cbpf exec bash "$(dirname "$0")/test_run_stall.sh"
