#!/usr/bin/env bash
# test_install_system.sh - the README's install line, for real: as root,
# `cmake --install BUILD --prefix /usr/local` without DESTDIR runs ldconfig,
# so that a program built with `pkg-config --cflags --libs portshare` (the
# default search path, nothing set) runs without LD_LIBRARY_PATH, and
# `man portshare` finds the page.  Then every installed file is removed again
# (the files a DESTDIR install makes) and the linker cache refreshed, also
# on failure.
#
# Root, on the machine everything else runs on: it skips when anything of
# portshare is already under /usr/local, and shares test_deb.sh's lock.  For
# the few seconds it takes, /usr/local/bin/portshare exists; other tests run
# $PORTSHARE and link their own build's library, never /usr/local's.
. "$(dirname "$0")/common.sh"

build=${PS_BUILD_DIR:?PS_BUILD_DIR not set}
prefix=/usr/local
[ "$(id -u)" -eq 0 ] || skip "installing into $prefix needs root"
need cmake pkg-config ldconfig

cache() { # the value of a CMake cache variable of this build
    sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"
}
libdir=$prefix/$(cache CMAKE_INSTALL_LIBDIR)

exec 9>/run/lock/portshare-test-deb.lock
flock -w 600 9 || fail "another packaging test held the lock for 10 minutes"
for f in "$prefix/bin/portshare" "$prefix/include/portshare.h" "$libdir"/libportshare.* "$libdir/pkgconfig/portshare.pc"; do
    [ -e "$f" ] && skip "$f exists already: not touching it"
done
grep -q libportshare <<<"$(ldconfig -p)" && skip "the dynamic linker already knows a libportshare: $(ldconfig -p | grep libportshare | head -1)"

tmp=$(mktemp -d /tmp/ps-sysinstall-XXXXXX)
installed=0
uninstall() {
    local f d
    while read -r f; do rm -f "$f"; done <"$tmp/manifest"
    # directories the install created, deepest first (and only if empty)
    sort -r "$tmp/newdirs" 2>/dev/null | while read -r d; do rmdir "$d" 2>/dev/null || true; done
    ldconfig
}
cleanup() {
    [ "$installed" = 1 ] && uninstall
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

# what the install will create (to remove it again), from a DESTDIR install
DESTDIR=$tmp/dry cmake --install "$build" --prefix "$prefix" >/dev/null 2>&1 || fail "cmake --install into DESTDIR failed"
(cd "$tmp/dry" && find . ! -type d) | sed 's|^\.||' >"$tmp/manifest"
(cd "$tmp/dry" && find . -type d) | sed 's|^\.||' | grep -v '^$' | while read -r d; do
    [ -e "$d" ] || echo "$d"
done >"$tmp/newdirs"
rm -rf "$tmp/dry"
while read -r f; do
    [ -e "$f" ] && skip "$f exists already: not touching it"
done <"$tmp/manifest"

installed=1
env -u DESTDIR cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    fail "cmake --install --prefix $prefix failed: $(tail -5 "$tmp/install.log")"
cmp -s <(sort "$tmp/manifest") <(sed '$a\' "$build/install_manifest.txt" | sort) ||
    fail "the install wrote other files than into DESTDIR: $(diff <(sort "$tmp/manifest") <(sort "$build/install_manifest.txt") | grep '^[<>]')"
grep -q 'Running: ldconfig' "$tmp/install.log" || fail "cmake --install did not run ldconfig: $(cat "$tmp/install.log")"
grep -q 'Note: ' "$tmp/install.log" && fail "cmake --install says: $(grep 'Note: ' "$tmp/install.log")"
grep -q "libportshare.so.0 .*=> $libdir/libportshare.so.0$" <<<"$(ldconfig -p)" ||
    fail "after the install the linker cache has no $libdir/libportshare.so.0"
ok "cmake --install --prefix $prefix ran ldconfig"

cat >"$tmp/prog.c" <<'EOF'
#include <portshare.h>
#include <stdio.h>

int main(void)
{
    char text[PS_SPEC_TEXT_MAX];
    struct ps_spec spec;
    char err[256];

    if (ps_spec_parse(":8080", &spec, err, sizeof(err)) < 0)
        return printf("error: %s\n", err), 1;
    ps_spec_format(&spec, text, sizeof(text));
    printf("%s %s\n", text, ps_errno_name(-98));
    return 0;
}
EOF
# this build's compiler, and its sanitizer runtime when the library has it
cc=$(cache CMAKE_C_COMPILER)
flags=(-Wall -Werror)
[ "$(cache PS_SANITIZE)" = ON ] && flags+=("-fsanitize=address,undefined")
pcout=$(env -u PKG_CONFIG_PATH -u PKG_CONFIG_LIBDIR pkg-config --cflags --libs portshare) ||
    fail "pkg-config does not find portshare under $prefix"
read -r -a pc <<<"$pcout"
"$cc" "${flags[@]}" "$tmp/prog.c" -o "$tmp/prog" "${pc[@]}" >"$tmp/cc.log" 2>&1 ||
    fail "compiling against the installed library: $(cat "$tmp/cc.log")"
out=$(env -u LD_LIBRARY_PATH "$tmp/prog" 2>&1) || fail "the program did not run: $out"
[ "$out" = "tcp://0.0.0.0:8080 EADDRINUSE" ] || fail "the program printed '$out'"
grep -q "libportshare.so.0 => $libdir/libportshare.so.0 " <<<"$(env -u LD_LIBRARY_PATH ldd "$tmp/prog")" ||
    fail "the program is not linked to $libdir/libportshare.so.0: $(ldd "$tmp/prog")"
ok "a program built with pkg-config runs against $libdir/libportshare.so.0, no LD_LIBRARY_PATH"

if [ -f "$build/man/portshare.1" ] && command -v man >/dev/null; then
    # (Debian's /usr/local/man is a symbolic link to share/man)
    page=$(man -w portshare) || fail "man -w portshare finds nothing"
    [ "$(readlink -f "$page")" = "$prefix/share/man/man1/portshare.1" ] || fail "man -w portshare: $page"
    ok "man portshare finds $prefix/share/man/man1/portshare.1"
fi

uninstall
installed=0
left=$(while read -r f; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done <"$tmp/manifest" || true)
[ -z "$left" ] || fail "left behind: $left"
grep -q libportshare <<<"$(ldconfig -p)" && fail "the linker cache still knows libportshare after the uninstall"
ok "removed the $(wc -l <"$tmp/manifest") installed files again"
echo "PASS: the README's install line works for a program linking the library"
