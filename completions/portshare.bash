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

# bash splits the command line at the characters of COMP_WORDBREAKS, ':' and
# '=' among them, so ":8080" or "root:www-data" reach COMP_WORDS as several
# words.  Join again what the line has without whitespace in between: into
# words[], with cword the cursor's word and orig[] the COMP_WORDS index where
# each word starts (for _command_offset).
_portshare_words()
{
    local line=${COMP_LINE-} i j=-1 w rest
    words=() orig=() cword=0
    if [[ -z $line ]]; then # not called by bash's completion: take the words as they are
        words=("${COMP_WORDS[@]}")
        for i in "${!COMP_WORDS[@]}"; do orig[i]=$i; done
        cword=$COMP_CWORD
        return
    fi
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        rest=${line#"${line%%[![:space:]]*}"}
        if ((j < 0)) || [[ ${#rest} -ne ${#line} ]]; then
            words[++j]=$w
            orig[j]=$i
        else
            words[j]+=$w
        fi
        line=${rest:${#w}}
        ((i == COMP_CWORD)) && cword=$j
    done
    ((${#words[@]})) || words=('')
}

_portshare()
{
    local words orig cword cur prev='' bin cmd='' i word split
    _portshare_words
    cur=${words[cword]}
    ((cword > 0)) && prev=${words[cword - 1]}
    bin=${words[0]/#\~/$HOME}
    COMPREPLY=()

    # "--opt=value": complete the value
    if [[ $cur == --*=* ]]; then
        prev=${cur%%=*}
        cur=${cur#*=}
    fi
    _portshare_complete
    # readline replaces only what follows the last ':' or '=' of the word
    # (when COMP_WORDBREAKS has them): take that part off the candidates
    split=${cur%"${cur##*[:=]}"}
    if [[ -n $split && $COMP_WORDBREAKS == *"${split: -1}"* ]]; then
        COMPREPLY=("${COMPREPLY[@]#"$split"}")
    fi
    return 0
}

# COMPREPLY for the current word cur after prev, from words[] and cword
_portshare_complete()
{
    # the subcommand: the first word after the binary
    if ((cword == 1)); then
        _portshare_reply "$(_portshare_commands "$bin")"$'\n--help\n--version' "$cur"
        return
    fi
    cmd=${words[1]}

    # run: PROGRAM starts after "--", or at the first word that is neither
    # an option nor an option's value; its arguments go to PROGRAM's own
    # completion when bash-completion is loaded
    if [[ $cmd == run ]]; then
        local with_arg p=0
        with_arg=$(_portshare_options "$bin" run 1)
        for ((i = 2; i < cword; i++)); do
            word=${words[i]}
            if [[ $word == -- ]]; then
                p=$((i + 1))
                break
            elif [[ $word == -* ]]; then
                [[ $word != *=* ]] && _portshare_in "$with_arg" "$word" && ((i += 1)) # its value
            else
                p=$i
                break
            fi
        done
        if ((p == cword)); then
            _portshare_reply "$(compgen -c -- "$cur")" "$cur"
            return
        elif ((p)); then
            if declare -F _command_offset >/dev/null; then
                _command_offset "${orig[p]}"
            else
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            fi
            return
        fi
    fi

    # the value of the option before the cursor
    case $prev in
    --mode)
        _portshare_reply $'reuseport\nshared' "$cur"
        return
        ;;
    --steering)
        _portshare_reply $'auto\nebpf\ncbpf' "$cur"
        return
        ;;
    --log-format)
        _portshare_reply $'text\njson' "$cur"
        return
        ;;
    --ready)
        _portshare_reply $'auto\nnotify\ndelay' "$cur"
        return
        ;;
    --handoff)
        # a comma-separated list: complete its last item
        local done=''
        [[ $cur == *,* ]] && done=${cur%,*},
        _portshare_reply "$(printf "$done%s\n" systemd einhorn server-starter all)" "$cur"
        return
        ;;
    --drain-signal)
        _portshare_reply $'TERM\nINT\nQUIT\nHUP\nUSR1\nUSR2\nWINCH\nKILL' "$cur"
        return
        ;;
    --user)
        if [[ $cur == *:* ]]; then # USER:GROUP
            mapfile -t COMPREPLY < <(compgen -P "${cur%%:*}:" -g -- "${cur#*:}")
        else
            mapfile -t COMPREPLY < <(compgen -u -- "$cur")
        fi
        return
        ;;
    --name)
        _portshare_reply "$(_portshare_names)" "$cur"
        return
        ;;
    --control | --access-log | --watch)
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        [[ $prev == --access-log && $cur == '' ]] && COMPREPLY+=(-)
        return
        ;;
    -*)
        # any other option that takes a value (a spec, a number, a duration):
        # nothing sensible to offer
        _portshare_in "$(_portshare_options "$bin" "$cmd" 1)" "$prev" && return
        ;;
    esac

    if [[ $cur == -* ]]; then
        _portshare_reply "$(_portshare_options "$bin" "$cmd")" "$cur"
        return
    fi
    case $cmd in
    serve)
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        ;;
    run)
        _portshare_reply "$(compgen -c -- "$cur")" "$cur"
        ;;
    esac
} &&
    complete -F _portshare portshare
