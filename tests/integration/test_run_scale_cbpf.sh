#!/usr/bin/env bash
# test_run_scale.sh with the classic BPF steering forced (--steering cbpf):
# the fallback where eBPF cannot load (not root, Linux < 5.14, BPF
# disabled) must keep passing it.
PS_STEERING=cbpf exec bash "$(dirname "$0")/test_run_scale.sh"
