#!/usr/bin/env bash
# --watch on trees that are deep, wide, or come and go, with the supervisor
# on a 1 MiB stack (ulimit -s 1024):
#   - a 10,000-level tree moved into the watched directory: the supervisor
#     (and its workers) live on, the tree is watched as deep as a path can
#     name (one warning for the rest), a change 1,000 levels down reloads;
#   - 9,000 directories created in the tree: 8,192 are watched, one warning
#     for the rest, the supervisor lives on;
#   - moving a tree away, or deleting it, frees their watches (the kernel's, counted in the
#     inotify descriptor's fdinfo, and the supervisor's own), so that
#     directories created and deleted beyond the 8,192 of room are still
#     watched: a change in a directory created last reloads.
. "$(dirname "$0")/sup_lib.sh"
need python3

mkdir -p "$T/src"
# the supervisor on a small stack: a walk that recurses dies here
cat >"$T/small-stack" <<EOS
#!/bin/sh
ulimit -s 1024 || exit 99
exec "$PORTSHARE" "\$@"
EOS
chmod +x "$T/small-stack"
SUP_BIN=$T/small-stack
sup_start wt -l 127.0.0.1:0 -w 2 --watch "$T/src" -- "$TESTWORKER"
pid=$SUP_PID
workers=$(sup_worker_pids wt | sort | tr '\n' ' ')
[ "$(awk '/Max stack size/ {print $4}' /proc/$pid/limits)" = 1048576 ] || fail "the stack limit did not apply"

# watches: what the kernel holds for the supervisor's inotify descriptor
watches() {
    local f
    for f in /proc/$pid/fd/*; do
        if [ "$(readlink "$f" 2>/dev/null)" = anon_inode:inotify ]; then
            grep -c '^inotify wd:' "/proc/$pid/fdinfo/${f##*/}" || true
            return
        fi
    done
    echo none
}
watches_are() { [ "$(watches)" = "$1" ]; }
alive() { kill -0 "$pid" 2>/dev/null || fail "the supervisor died: $(tail -5 "$T/wt.log")"; }
# reloaded_for PATH: a debounced reload whose first change was PATH
reloaded_for() { grep -q "watch_reload.*first $1: reload" "$T/wt.log"; }
[ "$(watches)" = 1 ] || fail "watching $(watches) directories at the start, want 1"

# 1. deep: 10,000 levels, built outside and moved in at once
python3 - "$T/deep" <<'EOS'
import os, sys
os.mkdir(sys.argv[1]); os.chdir(sys.argv[1])
for i in range(10000):
    os.mkdir("d"); os.chdir("d")
EOS
mv "$T/deep/d" "$T/src/deep"
wait_until 60 grep -q 'watch_toolong.*not watched: path longer than' "$T/wt.log" ||
    { alive; fail "no warning for the part of the tree too deep to name: $(tail -3 "$T/wt.log")"; }
alive
n=$(watches)
[ "$n" -gt 1000 ] || fail "only $n directories of the deep tree are watched"
[ "$(grep -c watch_toolong "$T/wt.log")" = 1 ] || fail "more than one warning: $(grep watch_toolong "$T/wt.log")"
deep1000=$T/src/deep$(printf '/d%.0s' $(seq 999))
wait_until 10 reloaded_for "$T/src/deep" || fail "moving the tree in did not reload"
# (the log cuts a path this long: the reloads are counted)
reloads_logged() { grep -c 'watch_reload' "$T/wt.log"; }
more_reloads() { [ "$(reloads_logged)" -gt "$1" ]; }
n0=$(reloads_logged)
echo x >"$deep1000/f"
wait_until 10 more_reloads "$n0" || fail "a change 1,000 levels down did not reload"
ok "a 10,000-level tree on a 1 MiB stack: alive, $n directories watched, one warning for the rest, a change 1,000 levels down reloads"
mv "$T/src/deep" "$T/deep/gone"
wait_until 60 watches_are 1 || fail "the deep tree moved away, still $(watches) watches"
ok "the deep tree moved away: its watches are freed"

# 2. wide: 9,000 directories created in the tree (each watched as its
# creation is read): past 8,192 one warning; then all deleted
python3 -c "import os, sys; [os.mkdir('%s/w%d' % (sys.argv[1], i)) for i in range(9000)]" "$T/src"
wait_until 60 grep -q 'watch_full.*more than 8192 directories' "$T/wt.log" ||
    { alive; fail "no warning past 8192 directories: $(tail -3 "$T/wt.log")"; }
wait_until 60 watches_are 8192 || fail "watching $(watches) directories, want 8192"
alive
[ "$(grep -c watch_full "$T/wt.log")" = 1 ] || fail "more than one warning: $(grep -c watch_full "$T/wt.log")"
ok "9,000 directories created: 8192 watched, one warning, alive"
find "$T/src" -mindepth 1 -maxdepth 1 -name 'w*' -delete
wait_until 60 watches_are 1 || fail "9,000 directories deleted, still $(watches) watches"
ok "9,000 directories deleted: their watches are freed"

# 3. a directory created after 9,000 others came and went is watched.
# First the deletion's own reload is let through: quiet means no new
# watch_reload line for a second (the debounce fires 300 ms after the last
# change), so that "last" is the first change of the next one
quiet() { local n; n=$(reloads_logged); sleep 1; [ "$(reloads_logged)" = "$n" ]; }
wait_until 60 quiet || fail "reloads go on after the deletion"
mkdir "$T/src/last"
wait_until 10 reloaded_for "$T/src/last" || fail "creating a directory after the churn did not reload"
echo x >"$T/src/last/f"
wait_until 10 reloaded_for "$T/src/last/f" ||
    fail "a change in a directory created after 9,000 others came and went did not reload: $(tail -3 "$T/wt.log")"
alive
[ "$(sup_worker_pids wt | wc -l)" = 2 ] || fail "workers missing: $(status_json wt)"
ok "after 9,000 directories came and went: a change in a new one still reloads"
echo "PASS: --watch on deep, wide and changing trees"
