#!/usr/bin/env bash
# test_deb.sh - the Debian packages, installed into this machine as a user
# would: dpkg -i gives `man portshare`, the bash completion, example units
# that systemd accepts, pkg-config, a program that compiles, links and runs
# against the installed library without LD_LIBRARY_PATH (ldconfig ran), and
# /usr/bin/portshare; dpkg --purge then leaves nothing behind.
#
# First, without root: debian/ agrees with the program (changelog version,
# the symbols file against portshare.h).
#
# The packages are built here from the work tree (dpkg-buildpackage -b in a
# copy, about 15 s on 2 cores), once per content of the tree: the second
# build configuration's run (ASan) reuses them from build/deb-test/.  What is
# tested is the package build, not this build directory.
#
# Root, on the same machine as everything else: so it touches nothing it did
# not put there.  It skips when any portshare package or /usr/bin/portshare is
# already installed, holds a lock so that two runs (two work trees) never
# install at once, and purges in its EXIT trap whatever happens.  The
# packages are installed for a few seconds; other tests use $PORTSHARE and
# their own build's library, never /usr/bin or the system's libportshare.
. "$(dirname "$0")/common.sh"

bin=${PORTSHARE:?PORTSHARE not set}
srcdir=${PS_SOURCE_DIR:?PS_SOURCE_DIR not set}
packages=(portshare libportshare0 libportshare-dev)

# ---- debian/ agrees with the program ------------------------------------------
version=$(sed -n '1s/^portshare (\([^)]*\)).*/\1/p' "$srcdir/debian/changelog")
[ -n "$version" ] || fail "no version in debian/changelog"
[ "$("$bin" --version)" = "portshare $version" ] ||
    fail "debian/changelog says $version, the binary '$("$bin" --version)'"
declared=$(sed -n 's/^PS_EXTERN [^(]*[ *]\(ps_[a-z0-9_]*\)(.*/\1/p' "$srcdir/include/portshare.h" | sort)
symbols=$(sed -n 's/^ \(ps_[a-z0-9_]*\)@Base .*/\1/p' "$srcdir/debian/libportshare0.symbols" | sort)
[ -n "$declared" ] || fail "no PS_EXTERN functions in portshare.h"
[ "$declared" = "$symbols" ] ||
    fail "debian/libportshare0.symbols differs from portshare.h: $(diff <(echo "$declared") <(echo "$symbols") | grep '^[<>]' | tr '\n' ' ')"
for p in "${packages[@]}"; do
    grep -qx "Package: $p" "$srcdir/debian/control" || fail "debian/control has no package $p"
done
ok "debian/: version $version, $(echo "$symbols" | wc -l) symbols, packages ${packages[*]}"

# ---- build, install, use, purge ------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "installing packages with dpkg -i needs root"
need dpkg-buildpackage dh dpkg-deb git scdoc cmake pkg-config cc
git -C "$srcdir" rev-parse --git-dir >/dev/null 2>&1 || skip "$srcdir is not a git work tree (the package is built from its files)"

exec 9>/run/lock/portshare-test-deb.lock
flock -w 600 9 || fail "another test_deb run held the lock for 10 minutes"
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ -z "$status" ] || [ "$status" = not-installed ] ||
        skip "package $p is already on this machine ($status): not touching it"
done
[ ! -e /usr/bin/portshare ] || skip "/usr/bin/portshare exists (not from a package of ours): not touching it"

tmp=$(mktemp -d /tmp/ps-deb-XXXXXX)
installed=0
# dpkg waits for nobody: retry while another dpkg or apt holds its lock
dpkg_retry() {
    local i
    for i in $(seq 60); do
        dpkg "$@" >"$tmp/dpkg.log" 2>&1 && return 0
        grep -q 'lock' "$tmp/dpkg.log" || { cat "$tmp/dpkg.log" >&2; return 1; }
        sleep 1
    done
    cat "$tmp/dpkg.log" >&2
    return 1
}
cleanup() {
    if [ "$installed" = 1 ]; then
        dpkg_retry --purge "${packages[@]}" || echo "WARNING: dpkg --purge ${packages[*]} failed" >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP # so that the EXIT trap purges then too

# the tree's files (tracked and new, less deleted ones), and their hash
cd "$srcdir"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done >"$tmp/files"
hash=$(xargs -0 sha1sum <"$tmp/files" | sha1sum | cut -c1-16)
cache=$srcdir/build/deb-test/$hash
if [ ! -f "$cache/done" ]; then
    start=$(now_ms)
    rm -rf "$srcdir/build/deb-test"
    mkdir -p "$cache/portshare-$version"
    xargs -0 cp -P --parents -t "$cache/portshare-$version" -- <"$tmp/files"
    # no -dbgsym packages (not installed here), builds on every CPU
    (cd "$cache/portshare-$version" &&
        DEB_BUILD_OPTIONS="noddebs nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b) >"$cache/build.log" 2>&1 ||
        { tail -30 "$cache/build.log" >&2; fail "dpkg-buildpackage failed (log: $cache/build.log)"; }
    rm -rf "$cache/portshare-$version"
    touch "$cache/done"
    note "built the packages in $(( ($(now_ms) - start) / 1000 )) s"
else
    note "reusing the packages built from this tree in $cache"
fi
debs=()
for p in "${packages[@]}"; do
    f=$(ls "$cache/${p}_${version}_"*.deb 2>/dev/null | head -1)
    [ -n "$f" ] || fail "dpkg-buildpackage made no $p package: $(ls "$cache")"
    debs+=("$f")
done
cd "$tmp"

# what the packages will create, and which of it is already there (shared
# directories such as /usr/share/man/man1)
for d in "${debs[@]}"; do
    dpkg-deb --fsys-tarfile "$d" | tar -t | sed 's|^\./|/|; s|/$||' | grep -v '^/\?$'
done | sort -u >"$tmp/paths"
while read -r p; do
    [ -e "$p" ] || [ -L "$p" ] || echo "$p"
done <"$tmp/paths" >"$tmp/new"
[ -s "$tmp/new" ] || fail "the packages would create nothing new"
grep -q libportshare <<<"$(ldconfig -p)" && fail "the dynamic linker already knows a libportshare: $(ldconfig -p | grep libportshare)"

installed=1
dpkg_retry -i "${debs[@]}" || fail "dpkg -i failed"
for p in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p")" = installed ] || fail "$p is not installed after dpkg -i"
done
ok "dpkg -i ${debs[*]##*/}"

[ "$(/usr/bin/portshare --version)" = "portshare $version" ] || fail "/usr/bin/portshare --version: $(/usr/bin/portshare --version)"
[ "$(man -w portshare)" = /usr/share/man/man1/portshare.1.gz ] || fail "man -w portshare: $(man -w portshare 2>&1)"
[ "$(man -w 3 libportshare)" = /usr/share/man/man3/libportshare.3.gz ] || fail "man -w 3 libportshare: $(man -w 3 libportshare 2>&1)"
grep -q -- '--listen SPEC' <<<"$(MANPAGER=cat MANWIDTH=80 man portshare 2>/dev/null)" || fail "man portshare does not show --listen"
for fn in $declared; do # each function's name leads to libportshare(3)
    [ "$(readlink -f "$(man -w 3 "$fn")")" = /usr/share/man/man3/libportshare.3.gz ] || fail "man -w 3 $fn: $(man -w 3 "$fn" 2>&1)"
done
ok "/usr/bin/portshare --version, man portshare, man 3 libportshare and man 3 ps_listen_fds..."

comp=/usr/share/bash-completion/completions/portshare
[ -f "$comp" ] || fail "no $comp"
got=$(bash --norc -c '. "$0"; COMP_LINE="portshare st" COMP_POINT=12 COMP_WORDS=(portshare st) COMP_CWORD=1; _portshare; echo "${COMPREPLY[*]}"' "$comp")
[ "$got" = "status stop" ] || fail "the installed completion of 'portshare st' is '$got'"
if [ -f /usr/share/bash-completion/bash_completion ]; then
    # bash-completion's loader finds it by the command's name
    got=$(bash --norc -c '. /usr/share/bash-completion/bash_completion; __load_completion portshare; complete -p portshare')
    [ "$got" = "complete -F _portshare portshare" ] || fail "bash-completion loads '$got' for portshare"
fi
ok "bash completion in $comp"

ex=/usr/share/doc/portshare/examples
grep -q '^ExecStart=/usr/bin/portshare ' "$ex/portshare-example.service" || fail "the example service does not run /usr/bin/portshare"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$ex/portshare-example.socket" "$ex/portshare-example.service" >"$tmp/verify" 2>&1 ||
        fail "systemd-analyze verify of the example units: $(cat "$tmp/verify")"
fi
ok "example units in $ex"

[ "$(pkg-config --modversion portshare)" = "$version" ] || fail "pkg-config --modversion portshare: $(pkg-config --modversion portshare 2>&1)"
libs=$(pkg-config --libs portshare) || fail "pkg-config --libs portshare failed"
[[ " $libs " == *" -lportshare "* ]] || fail "pkg-config --libs portshare: '$libs'"
cat >"$tmp/prog.c" <<'EOF'
#include <portshare.h>
#include <stdio.h>

int main(void)
{
    struct ps_spec spec;
    char err[256], text[PS_SPEC_TEXT_MAX];

    if (ps_spec_parse("web=[::1]:8080?backlog=9", &spec, err, sizeof(err)) < 0) {
        printf("error: %s\n", err);
        return 1;
    }
    ps_spec_format(&spec, text, sizeof(text));
    printf("%s %s %d %s\n", spec.name, text, spec.backlog, PS_VERSION);
    return 0;
}
EOF
# the system's compiler, as a user of the package would (this build's may be
# a sanitizer build; the installed library is the package's)
/usr/bin/cc -Wall -Werror $(pkg-config --cflags portshare) "$tmp/prog.c" -o "$tmp/prog" $libs >"$tmp/cc.log" 2>&1 ||
    fail "compiling against the installed library: $(cat "$tmp/cc.log")"
out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$tmp/prog") || fail "the program failed: $out"
[ "$out" = "web tcp://[::1]:8080 9 $version" ] || fail "the program printed '$out'"
grep -qE "libportshare.so.0 => (/usr)?/lib/[^ ]*/libportshare.so.0 " <<<"$(env -u LD_LIBRARY_PATH ldd "$tmp/prog")" ||
    fail "the program is not linked to the installed library: $(ldd "$tmp/prog")"
/usr/bin/cc -Wall -Werror -static-libgcc $(pkg-config --cflags portshare) "$tmp/prog.c" -o "$tmp/prog-static" \
    "$(pkg-config --variable=libdir portshare)/libportshare.a" >"$tmp/cc.log" 2>&1 ||
    fail "compiling against the installed static library: $(cat "$tmp/cc.log")"
[ "$("$tmp/prog-static")" = "$out" ] || fail "the static program printed '$("$tmp/prog-static")'"
ok "pkg-config, and a program against the installed shared and static library"

dpkg_retry --purge "${packages[@]}" || fail "dpkg --purge failed"
installed=0
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ -z "$status" ] || [ "$status" = not-installed ] || fail "$p is '$status' after purge"
done
left=$(while read -r p; do [ -e "$p" ] || [ -L "$p" ] && echo "$p"; done <"$tmp/new" || true)
[ -z "$left" ] || fail "left behind after purge: $(echo $left)"
grep -q libportshare <<<"$(ldconfig -p)" && fail "the dynamic linker still knows libportshare after purge"
man -w portshare >/dev/null 2>&1 && fail "man -w portshare still finds a page after purge"
ok "dpkg --purge removed all $(wc -l <"$tmp/new") paths the packages created"

echo "PASS: the Debian packages install, work and purge cleanly"
