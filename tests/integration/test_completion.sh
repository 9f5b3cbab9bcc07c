#!/usr/bin/env bash
# test_completion.sh - completions/portshare.bash, sourced in a plain bash
# (and once under bash-completion), with COMP_WORDS/COMP_CWORD set as bash
# sets them: subcommands, the options of each subcommand (as their --help
# lists them), option values, PROGRAM and its arguments after `run`, serve's
# DIR, and the --name of a running supervisor (and of no stopped one).
. "$(dirname "$0")/common.sh"

bin=${PORTSHARE:?PORTSHARE not set}
srcdir=${PS_SOURCE_DIR:?PS_SOURCE_DIR not set}
need setpriv python3

tmp=$(mktemp -d /tmp/ps-completion-XXXXXX)
sup=
cleanup() {
    [ -n "$sup" ] && kill "$sup" 2>/dev/null && wait "$sup" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
chmod 755 "$tmp" # the --name check also runs as nobody
cp "$srcdir/completions/portshare.bash" "$tmp/"
# the completion runs `portshare ...` as the user typed it: put ours on PATH
mkdir "$tmp/bin" && ln -s "$(readlink -f "$bin")" "$tmp/bin/portshare"

# complete LINE: COMPREPLY, one per line, sorted, with the cursor at the end
# of the command line LINE (a trailing space: on a new, empty word).  LINE
# is split into COMP_WORDS as bash splits it: at whitespace, and around
# the ':' and '=' of COMP_WORDBREAKS (":80" -> ":" "80").  In a fresh bash
# with set -u, like an interactive shell that sourced the completion file.
complete_line() {
    PATH=$tmp/bin:$PATH bash --norc --noprofile -c '
        set -u
        [ -n "${PS_BASH_COMPLETION-}" ] && . "$PS_BASH_COMPLETION"
        . "$0"
        COMP_LINE=$1 COMP_POINT=${#1} COMP_WORDBREAKS=$'"'"' \t\n"\x27><=;|&(:'"'"'
        COMP_WORDS=()
        read -r -a ws <<<"$1"
        for w in "${ws[@]}"; do
            while [[ $w =~ ^([:=]+|[^:=]+)(.*)$ ]]; do
                COMP_WORDS+=("${BASH_REMATCH[1]}")
                w=${BASH_REMATCH[2]}
            done
        done
        [[ $1 == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        _portshare
        printf "%s\n" "${COMPREPLY[@]}"' "$tmp/portshare.bash" "$1" | sed '/^$/d' | sort
}
# expect LINE EXPECTED: the completion is exactly the words EXPECTED
expect() {
    local got want
    got=$(complete_line "$1")
    want=$(printf '%s\n' $2 | sort)
    [ "$got" = "$want" ] || fail "completing '$1': got '$(echo $got)', want '$(echo $want)'"
}
# offers LINE WORD...: the completion includes every WORD
offers() {
    local got w line=$1
    got=$(complete_line "$line")
    shift
    for w in "$@"; do
        grep -qxF -- "$w" <<<"$got" || fail "completing '$line' does not offer $w (got: $(echo $got | cut -c1-300))"
    done
}

cd "$tmp"

# subcommands: those of --help, not the hidden http-worker
commands=$("$bin" --help | sed -n '/^commands:$/,/^$/{s/^  \([a-z][a-z0-9-]*\) .*/\1/p}')
[ -n "$commands" ] || fail "no command list in portshare --help"
expect "portshare " "$commands --help --version"
expect "portshare s" "$(grep '^s' <<<"$commands")"
expect "portshare http" ""
ok "subcommands: $(echo $commands)"

# options: every long option of a command's option lines, nothing that is
# not in its --help
for cmd in $commands; do
    got=$(complete_line "portshare $cmd --")
    help=$("$bin" "$cmd" --help)
    listed=$(grep -oE -- '^ +(-[[:alnum:]], )?--[[:alnum:]][[:alnum:]-]*' <<<"$help" | grep -oE -- '--[[:alnum:]-]+$' || true)
    for opt in $listed; do
        grep -qxF -- "$opt" <<<"$got" || fail "'portshare $cmd --<TAB>' does not offer $opt"
    done
    for opt in $got; do
        [ "$opt" = --help ] || grep -qF -- "$opt" <<<"$help" || fail "'portshare $cmd --<TAB>' offers $opt, which its --help does not list"
    done
done
offers "portshare run --" --listen --workers --mode --user --drain-signal --watchdog --name --control --log-format --ready --handoff --watch
offers "portshare serve --" --listen --workers --access-log --header-timeout --idle-timeout --max-connections
offers "portshare probe --" --json --no-netns --other-uid --listeners
offers "portshare status --" --json --name --control
expect "portshare serve --he" "--help --header-timeout"
expect "portshare stop --j" "--json"
expect "portshare stop --t" "--timeout"
ok "options per subcommand"

# option values
expect "portshare run --mode " "reuseport shared"
expect "portshare run --mode=" "reuseport shared"
expect "portshare run --mode=s" "shared"
expect "portshare serve --log-format j" "json"
expect "portshare run --drain-signal Q" "QUIT"
expect "portshare run --user roo" "root"
expect "portshare run --user root:roo" "root" # readline replaces what follows ':'
offers "portshare run --user root:" root nogroup
expect "portshare run --user=root:roo" "root"
expect "portshare run --ready " "auto notify delay"
expect "portshare run --ready=n" "notify"
expect "portshare run --handoff " "systemd einhorn server-starter all"
expect "portshare run --handoff einhorn,s" "einhorn,systemd einhorn,server-starter"
expect "portshare run -l " ""
expect "portshare serve --workers " ""
mkdir www && touch page.html
expect "portshare serve w" "www"
expect "portshare serve p" ""
expect "portshare serve --access-log pa" "page.html"
ok "option values, serve's DIR"

# run: PROGRAM, then PROGRAM's arguments
offers "portshare run -l :80 -w 2 slee" sleep
offers "portshare run --listen=:80 -- slee" sleep
offers "portshare run --mode=shared slee" sleep
offers "portshare run --user root:root -l [::1]:8080 slee" sleep
expect "portshare run -l :80 sleep pa" "page.html"
expect "portshare run -l :80 -- sleep --l" ""
if [ -f /usr/share/bash-completion/bash_completion ]; then
    # under bash-completion, PROGRAM's own completion takes over
    got=$(PS_BASH_COMPLETION=/usr/share/bash-completion/bash_completion complete_line "portshare run -l :80 -- ls --al")
    grep -qx -- --all <<<"$got" || fail "under bash-completion, 'portshare run -- ls --al' gave '$got', not ls's --all"
    got=$(PS_BASH_COMPLETION=/usr/share/bash-completion/bash_completion complete_line "portshare run --mode ")
    [ "$(echo $got)" = "reuseport shared" ] || fail "under bash-completion, --mode gave '$got'"
    ok "run: PROGRAM and its arguments (also through bash-completion)"
else
    note "bash-completion is not installed: its hand-over to PROGRAM's completion not checked"
    ok "run: PROGRAM and its arguments"
fi

# --name: the supervisors running now, found where `portshare status` looks
name=comp-test-$$
"$bin" run --name "$name" -l 127.0.0.1:0 -w 1 -- sleep 600 >"$tmp/sup.log" 2>&1 &
sup=$!
wait_until 10 "$bin" status --name "$name" || { cat "$tmp/sup.log" >&2; fail "the supervisor did not answer"; }
offers "portshare stop --name comp-test-" "$name"
offers "portshare status --name=comp-test-" "$name"
"$bin" stop --name "$name" >/dev/null || fail "portshare stop failed"
wait "$sup" || fail "the supervisor exited $?"
sup=
got=$(complete_line "portshare stop --name comp-test-")
grep -qxF -- "$name" <<<"$got" && fail "the stopped supervisor $name is still offered"
sanitizer_report "$tmp" && exit 1
ok "--name offers a running supervisor, and not once it stopped"

# the directory rule for another user: XDG_RUNTIME_DIR, else /tmp/portshare-UID;
# only sockets named *.sock count
mkdir -p "$tmp/xdg/portshare"
for f in a.sock c.txt; do
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$tmp/xdg/portshare/$f"
done
touch "$tmp/xdg/portshare/b.sock" # a plain file, not a socket
chmod -R a+rX "$tmp/xdg"
as_other=()
[ "$(id -u)" -eq 0 ] && as_other=(setpriv --reuid=65534 --regid=65534 --clear-groups)
got=$("${as_other[@]}" env XDG_RUNTIME_DIR="$tmp/xdg" bash --norc -c '. "$0"; _portshare_names' "$tmp/portshare.bash")
[ "$got" = a ] || fail "with XDG_RUNTIME_DIR, --name offers '$(echo $got)', want 'a'"
got=$("${as_other[@]}" env -u XDG_RUNTIME_DIR bash --norc -c '. "$0"; _portshare_control_dir' "$tmp/portshare.bash")
[ "$got" = "/tmp/portshare-$("${as_other[@]}" id -u)" ] || fail "without XDG_RUNTIME_DIR, the directory is '$got'"
ok "--name for another user: \$XDG_RUNTIME_DIR/portshare, else /tmp/portshare-UID"

echo "PASS: bash completion of commands, options, values, PROGRAM and supervisor names"
