#!/usr/bin/env bash
# test_manpage.sh - the man pages cannot drift from the program:
#   - every long option that `portshare --help` or `portshare COMMAND --help`
#     lists (for every COMMAND that --help lists, and the hidden http-worker)
#     is documented in man/portshare.1.scd as *--option*, and every option
#     documented there is one that some --help still lists;
#   - every command has its section (## COMMAND), every exit code of --help
#     its entry, every environment variable the code reads or sets (getenv,
#     setenv in src/) is named, and so are the control socket's paths;
#   - every PS_EXTERN function of include/portshare.h is described in
#     man/libportshare.3.scd, and nothing else is;
#   - the pages are valid scdoc and the built ones render without groff
#     warnings.
# The options are read from the help text, not listed here, so an option
# added to the program fails this test until the man page documents it.
. "$(dirname "$0")/common.sh"

bin=${PORTSHARE:?PORTSHARE not set}
srcdir=${PS_SOURCE_DIR:?PS_SOURCE_DIR not set}
page=$srcdir/man/portshare.1.scd
libpage=$srcdir/man/libportshare.3.scd
[ -f "$page" ] || fail "no $page"
[ -f "$libpage" ] || fail "no $libpage"

tmp=$(mktemp -d /tmp/ps-manpage-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# long options anywhere in a help text: "--name", "[--json]", "-l, --listen"
long_options() {
    { grep -oE -- '(^|[^[:alnum:]-])--[[:alnum:]][[:alnum:]-]*' || true; } | sed 's/^[^-]*//' | sort -u
}

"$bin" --help >"$tmp/help" || fail "portshare --help exited $?"
# the commands: the lines under "commands:" up to the first blank line
commands=$(sed -n '/^commands:$/,/^$/{s/^  \([a-z][a-z0-9-]*\) .*/\1/p}' "$tmp/help")
[ "$(echo "$commands" | wc -w)" -ge 5 ] || fail "found no command list in portshare --help: '$commands'"
echo "$commands" | grep -qx run || fail "portshare --help lists no 'run' command"

missing=()
long_options <"$tmp/help" >"$tmp/all"
while read -r opt; do
    grep -qF -- "*$opt*" "$page" || missing+=("$opt (portshare --help)")
done <"$tmp/all"
for cmd in $commands http-worker; do
    "$bin" "$cmd" --help >"$tmp/help.$cmd" || fail "portshare $cmd --help exited $?"
    long_options <"$tmp/help.$cmd" | tee -a "$tmp/all" | while read -r opt; do
        grep -qF -- "*$opt*" "$page" || echo "$opt (portshare $cmd --help)"
    done >>"$tmp/missing"
    grep -qx "## $cmd" "$page" || missing+=("a '## $cmd' section")
done
[ -s "$tmp/missing" ] && mapfile -t -O ${#missing[@]} missing <"$tmp/missing"
[ ${#missing[@]} -eq 0 ] ||
    fail "man/portshare.1.scd does not document: $(printf '\n    %s' "${missing[@]}")"
count=$(sort -u "$tmp/all" | wc -l)
[ "$count" -ge 20 ] || fail "only $count long options found in the help texts: is the extraction broken?"
ok "all $count long options of --help and of $(echo $commands http-worker | wc -w) commands' --help are in the man page"

# the other way round: nothing documented that the program no longer has
stale=$(grep -oE -- '\*--[[:alnum:]][[:alnum:]-]*\*' "$page" | tr -d '*' | sort -u |
    grep -vxF -f <(sort -u "$tmp/all"; printf '%s\n' --help --version) || true)
[ -z "$stale" ] || fail "man/portshare.1.scd documents options no --help lists: $(echo $stale)"
ok "every option the man page documents is in some --help"

for section in NAME SYNOPSIS DESCRIPTION COMMANDS 'EXIT STATUS' ENVIRONMENT FILES EXAMPLES 'SEE ALSO'; do
    grep -qx "# $section" "$page" || fail "man/portshare.1.scd has no '# $section' section"
done
# exit codes: "  3  a listen address could not be bound" in --help
codes=$(sed -n '/^exit codes:$/,/^$/{s/^  \([0-9]\{1,3\}\)  .*/\1/p}' "$tmp/help")
[ -n "$codes" ] || fail "found no exit codes in portshare --help"
exits=$(sed -n '/^# EXIT STATUS$/,/^# /p' "$page")
for code in $codes; do
    grep -qx "\*$code\*" <<<"$exits" || fail "exit code $code of --help is not in EXIT STATUS"
done
ok "sections, and exit codes $(echo $codes)"

# every environment variable the program reads or sets
vars=$(grep -rhoE '(getenv|setenv|unsetenv)\("[A-Z_]+"' "$srcdir/src" | sed 's/.*("//; s/"$//' | sort -u)
[ "$(echo "$vars" | wc -w)" -ge 5 ] || fail "found only '$vars' as environment variables in src/"
env_section=$(sed -n '/^# ENVIRONMENT$/,/^# /p' "$page")
for v in $vars; do
    grep -qw -- "$v" <<<"$env_section" || fail "ENVIRONMENT does not mention $v (used in src/)"
done
for path in /run/portshare/NAME.sock '$XDG_RUNTIME_DIR/portshare/NAME.sock' '/tmp/portshare-UID/NAME.sock'; do
    grep -qF -- "_${path}_" "$page" || fail "FILES does not name $path"
done
ok "environment ($(echo $vars)) and control socket paths"

# the library page: one entry per exported function, "*ps_name*(" at the
# start of a line, with its parameters
declared=$(sed -n 's/^PS_EXTERN [^(]*[ *]\(ps_[a-z0-9_]*\)(.*/\1/p' "$srcdir/include/portshare.h" | sort)
described=$(sed -n 's/^\*\(ps_[a-z0-9_]*\)\*([^)].*/\1/p' "$libpage" | sort)
[ "$(echo "$declared" | wc -l)" -ge 10 ] || fail "found only $(echo $declared) in portshare.h"
[ "$declared" = "$described" ] ||
    fail "libportshare.3.scd and portshare.h differ: $(diff <(echo "$declared") <(echo "$described") | grep '^[<>]' | tr '\n' ' ') (< only in the header, > only in the page)"
ok "libportshare(3) describes the $(echo "$declared" | wc -l) functions of portshare.h"

# syntax, and what groff makes of the built pages
if command -v scdoc >/dev/null; then
    for f in "$page" "$libpage"; do
        scdoc <"$f" >"$tmp/page" 2>"$tmp/err" || fail "scdoc $(basename "$f"): $(cat "$tmp/err")"
    done
    ok "scdoc accepts both pages"
else
    note "scdoc is not installed: syntax not checked"
fi
built=0
for f in "${PS_BUILD_DIR:-/nonexistent}"/man/portshare.1 "${PS_BUILD_DIR:-/nonexistent}"/man/libportshare.3; do
    [ -f "$f" ] || continue
    built=$((built + 1))
    groff -man -ww -z "$f" 2>"$tmp/err" || fail "groff failed on $f"
    [ ! -s "$tmp/err" ] || fail "groff warns about $f: $(head -5 "$tmp/err")"
    if command -v man >/dev/null; then
        MANWIDTH=80 man -l "$f" 2>/dev/null >"$tmp/rendered" || fail "man -l $f failed"
        grep -q 'SEE ALSO' "$tmp/rendered" || fail "man -l $f rendered no SEE ALSO"
    fi
done
if [ "$built" -eq 2 ]; then
    ok "the built pages render without warnings"
else
    note "this build has no man pages (no scdoc when it was configured): rendering not checked"
fi
echo "PASS: the man pages match the program's --help, environment and library"
