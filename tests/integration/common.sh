# common.sh - what every integration test script shares (sourced by the
# *_lib.sh helpers and by tests that stand alone).
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
ok() { echo "ok - $*"; }
note() { echo "# $*" >&2; }

# need TOOL...: skip (exit 77, saying which) unless every TOOL is installed
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || skip "$tool is not installed"
    done
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# debian_python DIR: "python3" is Debian's /usr/bin/python3 for this test
# (a link in DIR, first on PATH).  A python3 earlier on PATH that is a
# version manager's shim (pyenv) takes seconds to start under load, and a
# Python worker was then taken for slow or hung: the test is about the
# worker, not the shim.
debian_python() {
    [ -x /usr/bin/python3 ] || return 0
    mkdir -p "$1"
    ln -sf /usr/bin/python3 "$1/python3"
    PATH="$1:$PATH"
}

# wait_until SECONDS COMMAND...: poll until COMMAND succeeds
wait_until() {
    local end=$(( $(now_ms) + $1 * 1000 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt $end ] || return 1
        sleep 0.02
    done
}

# sanitizer_report DIR: true, after printing it, when a *.log in DIR holds a
# report from ASan, LSan or UBSan (of a supervisor, a worker or a tool)
sanitizer_report() {
    grep -l -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' "$1"/*.log 2>/dev/null || return 1
    grep -h -A30 -E 'Sanitizer|runtime error:' "$1"/*.log | head -60 >&2
    echo "FAIL: sanitizer report (above)" >&2
}

# in_private_netns ARGS...: re-run this script (with ARGS) in a network
# namespace of its own, loopback up, so that its connections and their
# TIME_WAIT entries are its own: the kernel's TIME_WAIT table is shared by
# every test and load on the machine and, once full (tcp_max_tw_buckets),
# no TIME_WAIT is created at all.  Needs root and unshare(1); false (and
# nothing done) otherwise.  Call it before sourcing sup_lib.sh.
in_private_netns() {
    [ -z "${PS_NETNS:-}" ] || return 0
    [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null || return 1
    unshare -n true 2>/dev/null || return 1
    PS_NETNS=1 exec unshare -n -- bash -c 'ip link set lo up && exec bash "$@"' bash "$0" "$@"
}

# cpu_ticks PID: user+system clock ticks of a process so far (fields 14 and
# 15 of /proc/PID/stat, counted after the command name's closing paren)
cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra f <<<"$rest"
    echo $(( f[11] + f[12] ))
}

# assert_sleeping PID WHAT: the process used at most 20 ticks (10 %) of CPU
# over 2 s; a sleeping supervisor wakes at most a few times a second
assert_sleeping() {
    local a b
    a=$(cpu_ticks "$1"); sleep 2; b=$(cpu_ticks "$1")
    [ $((b - a)) -le 20 ] || fail "supervisor used $((b - a)) ticks of CPU in 2 s $2"
    note "supervisor CPU over 2 s $2: $((b - a)) ticks"
}
