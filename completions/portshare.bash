# bash completion for portshare(1)                          -*- shell-script -*-
#
# Installed as /usr/share/bash-completion/completions/portshare (loaded on
# demand by bash-completion); it also works sourced on its own in a plain
# bash, without bash-completion's helpers.
#
# Subcommands and their options are read from the binary's own help
# (`portshare --help`, `portshare CMD --help`), once per shell and binary, so
# the completion offers exactly the options of the portshare being run, also
# when options are added.  --name completes the names of the supervisors whose
# control sockets exist where `portshare status --name` would look for them.

# the directory of this user's control sockets: the same rule as the
# supervisor's (src/sup/client.c, ps_sup_control_path)
_portshare_control_dir()
{
    if [[ $EUID -eq 0 ]]; then
        printf '%s\n' /run/portshare
    elif [[ $XDG_RUNTIME_DIR == /* ]]; then
        printf '%s\n' "$XDG_RUNTIME_DIR/portshare"
    else
        printf '%s\n' "/tmp/portshare-$EUID"
    fi
}

# names of the supervisors whose control sockets exist (NAME.sock)
_portshare_names()
{
    local dir sock name
    dir=$(_portshare_control_dir)
    for sock in "$dir"/*.sock; do
        [[ -S $sock ]] || continue
        name=${sock##*/}
        printf '%s\n' "${name%.sock}"
    done
}

declare -gA _portshare_help_cache 2>/dev/null || declare -A _portshare_help_cache

# _portshare_help BIN [CMD]: the help text, cached per binary and command
_portshare_help()
{
    local key="$1 ${2-}"
    if [[ -z ${_portshare_help_cache[$key]+set} ]]; then
        _portshare_help_cache[$key]=$(LC_ALL=C "$1" ${2:+"$2"} --help 2>/dev/null)
    fi
    printf '%s\n' "${_portshare_help_cache[$key]}"
}

# the commands listed under "commands:" in `portshare --help`
_portshare_commands()
{
    local line in=0
    while IFS= read -r line; do
        if [[ $line == commands: ]]; then
            in=1
        elif ((in)); then
            [[ $line =~ ^\ +([a-z][a-z0-9-]*)\  ]] || break
            printf '%s\n' "${BASH_REMATCH[1]}"
        fi
    done < <(_portshare_help "$1")
}

# _portshare_options BIN CMD [WITH_ARG]: the long options of CMD, from the
# option lines of `portshare CMD --help` ("  -l, --listen SPEC   ...",
# "      --json   ...") and from its usage line ("usage: portshare status
# [--json] ..."), and --help; with WITH_ARG those that take a value, and
# their short forms
_portshare_options()
{
    local line opt re='^ +(-([[:alnum:]]), )?(--[[:alnum:]][[:alnum:]-]*)( [^ ]+)?( |$)'
    local usage="^(usage:)? +portshare $2( |\$)" words='(--[[:alnum:]][[:alnum:]-]*)(.*)'
    [[ -z ${3-} ]] && printf '%s\n' --help
    while IFS= read -r line; do
        if [[ -z ${3-} && $line =~ $usage ]]; then
            while [[ $line =~ $words ]]; do
                printf '%s\n' "${BASH_REMATCH[1]}"
                line=${BASH_REMATCH[2]}
            done
        elif [[ $line =~ $re ]]; then
            if [[ -z ${3-} ]]; then
                printf '%s\n' "${BASH_REMATCH[3]}"
            elif [[ -n ${BASH_REMATCH[4]} ]]; then
                printf '%s\n' "${BASH_REMATCH[3]}"
                [[ -n ${BASH_REMATCH[2]} ]] && printf -- '-%s\n' "${BASH_REMATCH[2]}"
            fi
        fi
    done < <(_portshare_help "$1" "$2")
}

# _portshare_in LIST WORD: whether WORD is a line of LIST
_portshare_in()
{
    [[ $'\n'$1$'\n' == *$'\n'"$2"$'\n'* ]]
}

# COMPREPLY from WORDS (newline-separated) that start with CUR, each once
_portshare_reply()
{
    local w seen=$'\n'
    COMPREPLY=()
    while IFS= read -r w; do
        [[ -n $w && $w == "$2"* && $seen != *$'\n'"$w"$'\n'* ]] || continue
        COMPREPLY+=("$w")
        seen+=$w$'\n'
    done <<<"$1"
}

_portshare()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev='' bin=${COMP_WORDS[0]} cmd='' i word
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    bin=${bin/#\~/$HOME}
    COMPREPLY=()

    # bash splits "--opt=value" at '=' (COMP_WORDBREAKS): complete the value
    if [[ $cur == = ]]; then
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        cur=''
    elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
        prev=${COMP_WORDS[COMP_CWORD - 2]}
    fi

    # the subcommand: the first word after the binary
    if ((COMP_CWORD == 1)); then
        _portshare_reply "$(_portshare_commands "$bin")"$'\n--help\n--version' "$cur"
        return 0
    fi
    cmd=${COMP_WORDS[1]}

    # run: PROGRAM starts after "--", or at the first word that is neither
    # an option nor an option's value; its arguments go to PROGRAM's own
    # completion when bash-completion is loaded
    if [[ $cmd == run ]]; then
        local with_arg p=0
        with_arg=$(_portshare_options "$bin" run 1)
        for ((i = 2; i < COMP_CWORD; i++)); do
            word=${COMP_WORDS[i]}
            if [[ $word == -- ]]; then
                p=$((i + 1))
                break
            elif [[ $word == -* ]]; then
                if [[ ${COMP_WORDS[i + 1]-} == = ]]; then
                    ((i += 2)) # --opt=value, split by bash
                elif _portshare_in "$with_arg" "$word"; then
                    ((i += 1)) # --opt value
                fi
            else
                p=$i
                break
            fi
        done
        if ((p == COMP_CWORD)); then
            _portshare_reply "$(compgen -c -- "$cur")" "$cur"
            return 0
        elif ((p)); then
            if declare -F _command_offset >/dev/null; then
                _command_offset "$p"
            else
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            fi
            return 0
        fi
    fi

    # the value of the option before the cursor
    case $prev in
    --mode)
        _portshare_reply $'reuseport\nshared' "$cur"
        return 0
        ;;
    --log-format)
        _portshare_reply $'text\njson' "$cur"
        return 0
        ;;
    --drain-signal)
        _portshare_reply $'TERM\nINT\nQUIT\nHUP\nUSR1\nUSR2\nWINCH\nKILL' "$cur"
        return 0
        ;;
    --user)
        if [[ $cur == *:* ]]; then
            mapfile -t COMPREPLY < <(compgen -P "${cur%%:*}:" -g -- "${cur#*:}")
        else
            mapfile -t COMPREPLY < <(compgen -u -- "$cur")
        fi
        return 0
        ;;
    --name)
        _portshare_reply "$(_portshare_names)" "$cur"
        return 0
        ;;
    --control | --access-log)
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        [[ $prev == --access-log && $cur == '' ]] && COMPREPLY+=(-)
        return 0
        ;;
    -*)
        # any other option that takes a value (a spec, a number, a duration):
        # nothing sensible to offer
        _portshare_in "$(_portshare_options "$bin" "$cmd" 1)" "$prev" && return 0
        ;;
    esac

    if [[ $cur == -* ]]; then
        _portshare_reply "$(_portshare_options "$bin" "$cmd")" "$cur"
        return 0
    fi
    case $cmd in
    serve)
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        ;;
    run)
        _portshare_reply "$(compgen -c -- "$cur")" "$cur"
        ;;
    esac
    return 0
} &&
    complete -F _portshare portshare
