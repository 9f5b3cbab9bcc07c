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
