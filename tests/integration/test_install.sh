#!/usr/bin/env bash
# test_install.sh - `cmake --install` with DESTDIR puts the binary, the
# static and shared library, the header and portshare.pc where they belong,
# the shared library exports only the names of the public header,
# and a program written against the installed files alone (found through
# `pkg-config --cflags --libs portshare`) compiles, links and parses a spec,
# both against the shared and the static library.
set -euo pipefail

build=${PS_BUILD_DIR:?PS_BUILD_DIR not set}
for tool in pkg-config cmake; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done

tmp=$(mktemp -d /tmp/ps-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*"
    [ -f "$tmp/log" ] && cat "$tmp/log"
    exit 1
}

cache() { # the value of a CMake cache variable of this build
    sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"
}
prefix=$(cache CMAKE_INSTALL_PREFIX)
libdir=$prefix/$(cache CMAKE_INSTALL_LIBDIR)
incdir=$prefix/$(cache CMAKE_INSTALL_INCLUDEDIR)
bindir=$prefix/$(cache CMAKE_INSTALL_BINDIR)
dest=$tmp/root

DESTDIR=$dest cmake --install "$build" >"$tmp/log" 2>&1 || fail "cmake --install failed"

for f in "$bindir/portshare" "$libdir/libportshare.a" "$libdir/libportshare.so" \
    "$incdir/portshare.h" "$libdir/pkgconfig/portshare.pc"; do
    [ -e "$dest$f" ] || fail "not installed: $f"
done
[ -x "$dest$bindir/portshare" ] || fail "portshare is not executable"
# the usual shared-library chain: .so -> .so.MAJOR -> .so.VERSION
soname=$(readlink "$dest$libdir/libportshare.so")
[[ $soname == libportshare.so.* ]] || fail "libportshare.so points to '$soname'"
[ -e "$dest$libdir/$soname" ] || fail "dangling $soname"
"$dest$bindir/portshare" --version | grep -q '^portshare [0-9]' || fail "installed portshare --version"
# the shared library exports exactly the functions of the public header
# (libportshare is built with -fvisibility=hidden): no ps__ internals, no
# supervisor/HTTP/probe layer.
so=$dest$libdir/$soname
exported=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRV]$/ {print $3}' | sort)
declared=$(sed -n 's/^PS_EXTERN [^(]*[ *]\(ps_[a-z0-9_]*\)(.*/\1/p' "$dest$incdir/portshare.h" | sort)
[ -n "$declared" ] || fail "found no PS_EXTERN declarations in the installed portshare.h"
[ "$exported" = "$declared" ] ||
    fail "libportshare.so exports differ from portshare.h: $(diff <(echo "$declared") <(echo "$exported") | grep '^[<>]' | tr '\n' ' ')"
# nothing was written outside DESTDIR's prefix
extra=$(cd "$dest" && { find . -type f | grep -v "^\.$prefix/" || true; })
[ -z "$extra" ] || fail "installed outside $prefix: $extra"

cat >"$tmp/spec.c" <<'EOF'
#include <portshare.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    struct ps_spec spec;
    char err[256], text[PS_SPEC_TEXT_MAX];
    int r;

    if (argc != 2)
        return 2;
    r = ps_spec_parse(argv[1], &spec, err, sizeof(err));
    if (r < 0) {
        printf("error %s: %s\n", ps_errno_name(r), err);
        return 1;
    }
    ps_spec_format(&spec, text, sizeof(text));
    printf("%s %s backlog=%d\n", spec.name, text, spec.backlog);
    return 0;
}
EOF

# Compile like a user of the build would: same compiler, and the sanitizer
# runtime when the library was built with it.
cc=$(cache CMAKE_C_COMPILER)
flags=(-std=c11 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L)
[ "$(cache PS_SANITIZE)" = ON ] && flags+=("-fsanitize=address,undefined")
export PKG_CONFIG_PATH=$dest$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
export PKG_CONFIG_LIBDIR=$dest$libdir/pkgconfig # only ours, not the system's
pkg-config --exists portshare || fail "pkg-config does not find portshare"
[ "$(pkg-config --modversion portshare)" = "$("$dest$bindir/portshare" --version | cut -d' ' -f2)" ] ||
    fail "portshare.pc version differs from the binary's"
read -r -a cflags <<<"$(pkg-config --cflags portshare)"
read -r -a libs <<<"$(pkg-config --libs portshare)"
read -r -a static_libs <<<"$(pkg-config --static --libs-only-l portshare)"

# shared: -lportshare picks the .so
"$cc" "${flags[@]}" "${cflags[@]}" "$tmp/spec.c" -o "$tmp/spec-shared" "${libs[@]}" >"$tmp/log" 2>&1 ||
    fail "compiling against the installed shared library failed"
out=$(LD_LIBRARY_PATH=$dest$libdir "$tmp/spec-shared" "web=127.0.0.1:8080?backlog=9") ||
    fail "spec-shared failed: $out"
[ "$out" = "web tcp://127.0.0.1:8080 backlog=9" ] || fail "spec-shared printed '$out'"
# (not "ldd | grep -q": under pipefail ldd's SIGPIPE, when grep quits early, failed the test)
grep -q "$dest$libdir/libportshare.so" <<<"$(LD_LIBRARY_PATH=$dest$libdir ldd "$tmp/spec-shared")" ||
    fail "spec-shared is not linked to the installed libportshare.so"

# static: the archive plus its private dependencies from Libs.private
static_only=()
for l in "${static_libs[@]}"; do
    [ "$l" = -lportshare ] || static_only+=("$l")
done
"$cc" "${flags[@]}" "${cflags[@]}" "$tmp/spec.c" -o "$tmp/spec-static" \
    "$dest$libdir/libportshare.a" "${static_only[@]}" >"$tmp/log" 2>&1 ||
    fail "compiling against the installed static library failed"
out=$("$tmp/spec-static" "tcp://[::1]:0?backlog=x") && fail "a bad spec was accepted: $out"
[ "$out" = "error EINVAL: bad value 'x' for option 'backlog'" ] || fail "spec-static printed '$out'"

echo "PASS: installed under $prefix (DESTDIR), pkg-config finds it, shared and static links work"
